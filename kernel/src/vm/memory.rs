//! Reaching a VM's memory from the kernel: every guest pointer a hypercall
//! carries goes through here, checked against the flat space and the page
//! rights, and demand-zero pages are filled on the way as a touch would.

use super::Vm;
use crate::mem::frame::{FRAME_SIZE, FrameAllocator};
use crate::mem::guest::GuestAddr;
use crate::mem::phys;
use crate::mem::space::{MapError, Rights};
use denali_abi::hypercall::Error;

impl Vm {
    /// Maps a zero page for a first touch of a heap or stack address.
    /// Returns false if `addr` is not in a demand-zero region or memory ran
    /// out (then `out_of_memory` says so).
    pub fn populate(&mut self, frames: &mut FrameAllocator, addr: GuestAddr) -> bool {
        if !self.layout.is_demand_zero(addr.as_u64()) {
            return false;
        }
        let Some(space) = self.space.as_mut() else { return false };
        match space.map_zeroed(frames, addr.page(), Rights { write: true, exec: false }) {
            Ok(_) => {
                self.stats.resident_pages += 1;
                true
            }
            Err(e) => {
                self.out_of_memory = e == MapError::OutOfMemory;
                false
            }
        }
    }

    /// The frame behind the page holding `addr` if it is mapped for the VM
    /// (and writable by it, when `write`); never for a VM out of memory.
    fn frame_of(&mut self, addr: GuestAddr, write: bool) -> Option<u64> {
        self.space.as_mut()?.frame_of(addr, write)
    }

    /// Walks the `len` bytes at flat address `addr` page by page, handing
    /// `visit` a kernel pointer to each piece, the offset of the piece in the
    /// range, and its length. A page the VM has not touched, or (for `write`)
    /// a copy-on-write page, is resolved exactly as the VM's own access would
    /// be; anything the VM could not access itself is `BadAddress`.
    fn for_each_page(
        &mut self,
        frames: &mut FrameAllocator,
        addr: GuestAddr,
        len: u64,
        write: bool,
        mut visit: impl FnMut(*mut u8, usize, usize),
    ) -> Result<(), Error> {
        let end = addr.checked_add(len).ok_or(Error::BadAddress)?;
        if end.as_u64() > self.layout.mem_size {
            return Err(Error::BadAddress);
        }
        let mut cursor = addr;
        while cursor < end {
            let frame = match self.frame_of(cursor, write) {
                Some(frame) => frame,
                None => {
                    let present = self.frame_of(cursor, false).is_some();
                    let fault = super::fault::Fault {
                        vector: 14,
                        error_code: u64::from(present) | if write { 2 } else { 0 },
                        rip: self.context.rip,
                        address: Some(cursor),
                    };
                    if !self.resolve_fault(frames, &fault) {
                        return Err(Error::BadAddress);
                    }
                    self.frame_of(cursor, write).ok_or(Error::BadAddress)?
                }
            };
            let offset = cursor.page_offset();
            let chunk = (FRAME_SIZE - offset).min(end.as_u64() - cursor.as_u64());
            visit(phys::to_virt(frame + offset), (cursor.as_u64() - addr.as_u64()) as usize, chunk as usize);
            cursor = GuestAddr::new(cursor.as_u64() + chunk);
        }
        Ok(())
    }

    /// Copies `len` bytes at flat address `addr` out of the VM, page by page,
    /// handing each piece to `sink`.
    pub fn read_guest(
        &mut self,
        frames: &mut FrameAllocator,
        addr: GuestAddr,
        len: u64,
        mut sink: impl FnMut(&[u8]),
    ) -> Result<(), Error> {
        self.for_each_page(frames, addr, len, false, |ptr, _, chunk| {
            // SAFETY: `ptr` points into a frame mapped readable for this VM,
            // reached through the physmap; the piece stays within that frame.
            sink(unsafe { core::slice::from_raw_parts(ptr, chunk) })
        })
    }

    /// Copies `out.len()` bytes at flat address `addr` out of the VM into
    /// `out`.
    pub fn copy_from_guest(
        &mut self,
        frames: &mut FrameAllocator,
        addr: GuestAddr,
        out: &mut [u8],
    ) -> Result<(), Error> {
        self.for_each_page(frames, addr, out.len() as u64, false, |ptr, done, chunk| {
            // SAFETY: `ptr` points into a frame mapped readable for this VM,
            // reached through the physmap; the piece stays within that frame
            // and within `out`.
            unsafe { core::ptr::copy_nonoverlapping(ptr, out[done..].as_mut_ptr(), chunk) }
        })
    }

    /// Copies `bytes` into the VM at flat address `addr`, which must be
    /// writable by the VM (demand-zero pages are filled and copy-on-write
    /// pages copied on the way, as the VM's own write would).
    pub fn write_guest(&mut self, frames: &mut FrameAllocator, addr: GuestAddr, bytes: &[u8]) -> Result<(), Error> {
        self.for_each_page(frames, addr, bytes.len() as u64, true, |ptr, done, chunk| {
            // SAFETY: `ptr` points into a frame mapped writable for this VM,
            // reached through the physmap; the copy stays within that frame.
            unsafe { core::ptr::copy_nonoverlapping(bytes[done..].as_ptr(), ptr, chunk) }
        })
    }
}
