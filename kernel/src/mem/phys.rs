//! The physmap: every physical frame at `PHYS_OFFSET + address`. The only
//! place a physical address becomes a kernel pointer.

use super::frame::{FRAME_SIZE, FrameAllocator};
use alloc::vec::Vec;
use denali_abi::boot::PHYS_OFFSET;
use x86_64::structures::paging::{FrameAllocator as PagingFrameAllocator, PhysFrame, Size4KiB};
use x86_64::{PhysAddr, VirtAddr};

/// Kernel pointer to physical address `phys`.
pub fn to_virt(phys: u64) -> *mut u8 {
    (PHYS_OFFSET + phys) as *mut u8
}

/// The kernel's virtual address for a physical one.
pub fn virt_addr(phys: u64) -> VirtAddr {
    VirtAddr::new(PHYS_OFFSET + phys)
}

/// A zeroed frame, or `None` when memory is exhausted.
pub fn alloc_zeroed(frames: &mut FrameAllocator) -> Option<u64> {
    let frame = frames.alloc()?;
    // SAFETY: the allocator handed out this frame exclusively and the
    // physmap maps all of physical memory, so the page is ours to write.
    unsafe { core::ptr::write_bytes(to_virt(frame), 0, FRAME_SIZE as usize) };
    Some(frame)
}

/// Lets the `x86_64` crate's mapper take page-table frames from us, and
/// writes down each one it takes in `owned`.
pub struct Frames<'a> {
    /// Where frames come from.
    pub frames: &'a mut FrameAllocator,
    /// Every frame handed out, for the address space to free later.
    pub owned: &'a mut Vec<u64>,
}

// SAFETY: every frame returned is unused and exclusively handed out.
unsafe impl PagingFrameAllocator<Size4KiB> for Frames<'_> {
    fn allocate_frame(&mut self) -> Option<PhysFrame<Size4KiB>> {
        let frame = alloc_zeroed(self.frames)?;
        self.owned.push(frame);
        Some(PhysFrame::containing_address(PhysAddr::new(frame)))
    }
}
