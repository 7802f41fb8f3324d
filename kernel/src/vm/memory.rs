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
}
