//! Reaching a VM's memory from the kernel: every guest pointer a hypercall
//! carries goes through here, checked against the flat space and the page
//! rights, and demand-zero pages are filled on the way as a touch would.

use super::Vm;
use crate::mem::frame::{FRAME_SIZE, FrameAllocator};
use crate::mem::phys;
use crate::mem::space::Rights;
use denali_abi::hypercall::Error;

impl Vm {
    /// Maps a zero page for a first touch of a heap or stack address.
    /// Returns false if `addr` is not in a demand-zero region or memory ran out.
    pub fn populate(&mut self, frames: &mut FrameAllocator, addr: u64) -> bool {
        if !self.layout.is_demand_zero(addr) {
            return false;
        }
        let page = addr & !(FRAME_SIZE - 1);
        match self.space.map_zeroed(frames, page, Rights { write: true, exec: false }) {
            Ok(_) => {
                self.stats.resident_pages += 1;
                true
            }
            Err(_) => false,
        }
    }

    /// Copies `len` bytes at flat address `addr` out of the VM, page by page,
    /// handing each piece to `sink`.
    pub fn read_guest(
        &mut self,
        frames: &mut FrameAllocator,
        addr: u64,
        len: u64,
        mut sink: impl FnMut(&[u8]),
    ) -> Result<(), Error> {
        let end = addr.checked_add(len).ok_or(Error::BadAddress)?;
        if end > self.layout.mem_size {
            return Err(Error::BadAddress);
        }
        let mut cursor = addr;
        while cursor < end {
            let frame = match self.space.frame_of(cursor, false) {
                Some(frame) => frame,
                None if self.populate(frames, cursor) => self.space.frame_of(cursor, false).ok_or(Error::BadAddress)?,
                None => return Err(Error::BadAddress),
            };
            let offset = cursor % FRAME_SIZE;
            let chunk = (FRAME_SIZE - offset).min(end - cursor);
            // SAFETY: `frame` is a frame mapped readable for this VM, reached
            // through the physmap; the slice stays within that one frame.
            let bytes = unsafe { core::slice::from_raw_parts(phys::to_virt(frame + offset), chunk as usize) };
            sink(bytes);
            cursor += chunk;
        }
        Ok(())
    }

    /// Copies `bytes` into the VM at flat address `addr`, which must be
    /// writable by the VM (demand-zero pages are filled and copy-on-write
    /// pages copied on the way, as the VM's own write would).
    pub fn write_guest(&mut self, frames: &mut FrameAllocator, addr: u64, bytes: &[u8]) -> Result<(), Error> {
        let end = addr.checked_add(bytes.len() as u64).ok_or(Error::BadAddress)?;
        if end > self.layout.mem_size {
            return Err(Error::BadAddress);
        }
        let mut cursor = addr;
        while cursor < end {
            let frame = match self.space.frame_of(cursor, true) {
                Some(frame) => frame,
                None => {
                    let fault = super::fault::Fault {
                        vector: 14,
                        error_code: if self.space.frame_of(cursor, false).is_some() { 3 } else { 2 },
                        rip: self.context.rip,
                        address: Some(cursor),
                    };
                    if !self.resolve_fault(frames, &fault) {
                        return Err(Error::BadAddress);
                    }
                    self.space.frame_of(cursor, true).ok_or(Error::BadAddress)?
                }
            };
            let offset = cursor % FRAME_SIZE;
            let chunk = (FRAME_SIZE - offset).min(end - cursor) as usize;
            let from = (cursor - addr) as usize;
            // SAFETY: `frame` is mapped writable for this VM and reached
            // through the physmap; the copy stays within that one frame.
            unsafe { core::ptr::copy_nonoverlapping(bytes[from..].as_ptr(), phys::to_virt(frame + offset), chunk) };
            cursor += chunk as u64;
        }
        Ok(())
    }
}
