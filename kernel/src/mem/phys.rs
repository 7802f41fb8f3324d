//! The physmap: every physical frame at a fixed offset in the kernel's
//! address space. The only place a physical address becomes a kernel
//! pointer.
//!
//! On the machine the offset is `PHYS_OFFSET` (the loader maps all memory
//! there). The kernel's host tests give "physical memory" of their own, a
//! buffer of the test process, by moving the offset to it
//! ([`use_host_memory`]); everything above (page tables, VM memory, the
//! frame pool) then runs unchanged.

use super::frame::{FRAME_SIZE, FrameAllocator};
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};
use denali_abi::boot::{KERNEL_BASE, PHYS_OFFSET};
use x86_64::structures::paging::mapper::MapperFlush;
use x86_64::structures::paging::{FrameAllocator as PagingFrameAllocator, PhysFrame, Size4KiB};
use x86_64::{PhysAddr, VirtAddr};

/// Where physical address 0 is in the kernel's address space.
static PHYSMAP: AtomicU64 = AtomicU64::new(PHYS_OFFSET);

/// Host tests: physical address 0 is at `base` from now on.
#[cfg(not(target_os = "none"))]
pub fn use_host_memory(base: *mut u8) {
    PHYSMAP.store(base as u64, Ordering::Relaxed);
}

/// Kernel pointer to physical address `phys`.
pub fn to_virt(phys: u64) -> *mut u8 {
    (PHYSMAP.load(Ordering::Relaxed) + phys) as *mut u8
}

/// The kernel's virtual address for a physical one.
pub fn virt_addr(phys: u64) -> VirtAddr {
    VirtAddr::new(PHYSMAP.load(Ordering::Relaxed) + phys)
}

/// The physical address of a kernel pointer: into the physmap (the heap,
/// frames) or into the kernel image (statics, the kernel stack).
pub fn kernel_virt_to_phys(virt: u64) -> u64 {
    if virt >= KERNEL_BASE { virt - KERNEL_BASE } else { virt - PHYSMAP.load(Ordering::Relaxed) }
}

/// Drops the TLB entry a page-table change made stale (`invlpg`; nothing
/// in host tests, which have no TLB of their own).
pub fn flush_tlb(flush: MapperFlush<Size4KiB>) {
    #[cfg(target_os = "none")]
    flush.flush();
    #[cfg(not(target_os = "none"))]
    flush.ignore();
}

/// Drops the TLB's entry for the page at `vaddr` in the loaded space, if
/// it has one.
pub fn flush_page(vaddr: u64) {
    #[cfg(target_os = "none")]
    x86_64::instructions::tlb::flush(VirtAddr::new_truncate(vaddr));
    #[cfg(not(target_os = "none"))]
    let _ = vaddr;
}

/// Maps device registers at physical `phys..phys + len` (outside RAM) into
/// the physmap, uncached, and returns their kernel address. The page
/// tables it adds live as long as the kernel; every VM's space shares them
/// (the physmap's top-level slot is shared), but they are supervisor-only.
pub fn map_mmio(frames: &mut FrameAllocator, kernel_pml4: u64, phys: u64, len: u64) -> Option<*mut u8> {
    use x86_64::structures::paging::{Mapper, OffsetPageTable, Page, PageTable, PageTableFlags as F};
    // SAFETY: the kernel's PML4 is a frame in the physmap; the kernel is
    // single-threaded and holds no other reference to it here.
    let mut mapper = unsafe { OffsetPageTable::new(&mut *(to_virt(kernel_pml4) as *mut PageTable), virt_addr(0)) };
    let mut kept = Vec::new();
    let mut table_frames = Frames { frames, owned: &mut kept };
    let flags = F::PRESENT | F::WRITABLE | F::NO_CACHE | F::WRITE_THROUGH | F::NO_EXECUTE;
    let first = phys & !(FRAME_SIZE - 1);
    for offset in (0..(phys + len - first)).step_by(FRAME_SIZE as usize) {
        let frame = PhysFrame::<Size4KiB>::containing_address(PhysAddr::new(first + offset));
        let page = Page::<Size4KiB>::containing_address(virt_addr(first + offset));
        // SAFETY: the range is device memory no other mapping aliases, and
        // mapping it changes nothing the kernel already uses.
        match unsafe { mapper.map_to(page, frame, flags, &mut table_frames) } {
            Ok(flush) => flush_tlb(flush),
            // Inside a huge page of the physmap: already reachable.
            Err(x86_64::structures::paging::mapper::MapToError::ParentEntryHugePage) => {}
            Err(_) => return None,
        }
    }
    Some(to_virt(phys))
}

/// A zeroed frame, or `None` when memory is exhausted. A frame known to be
/// zero (the machine's, untouched, or zeroed while the kernel was idle) is
/// not zeroed again.
pub fn alloc_zeroed(frames: &mut FrameAllocator) -> Option<u64> {
    let (frame, zero) = frames.alloc_knowing_zero()?;
    if !zero {
        // SAFETY: the allocator handed out this frame exclusively.
        unsafe { zero_frame(frame) };
    }
    Some(frame)
}

/// Zeroes one free frame ahead of need, if one is not known to be zero and
/// fewer than the allocator's cap are zeroed; false if none was.
pub fn zero_one_free_frame(frames: &mut FrameAllocator) -> bool {
    // SAFETY: the allocator hands over a frame that is free and that no one
    // else can take while it is zeroed.
    frames.zero_one_free(|frame| unsafe { zero_frame(frame) })
}

/// Writes zeroes over the frame at `frame`.
///
/// # Safety
///
/// The frame must be the caller's alone: free, or just handed out.
unsafe fn zero_frame(frame: u64) {
    // SAFETY: the caller owns the frame and the physmap maps all of
    // physical memory, so the page is ours to write.
    unsafe { core::ptr::write_bytes(to_virt(frame), 0, FRAME_SIZE as usize) };
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
