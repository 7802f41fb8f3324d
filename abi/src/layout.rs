//! Fixed addresses inside a VM's flat address space.
//!
//! ```text
//! 0x0000_0000  page 0: never mapped (null pointers fault)
//! 0x0000_1000  info page: read-only, see [`crate::info::InfoPage`]
//! 0x0010_0000  image segments (the linker script places them here)
//!    ...       heap: from the end of the image to the stack guard
//!              guard page: never mapped (stack overflow faults)
//!              stack: STACK_SIZE bytes ending at mem_size
//! ```

/// Size of a page of the flat address space.
pub const PAGE_SIZE: u64 = 4096;
/// Address of the read-only info page.
pub const INFO_PAGE: u64 = 0x1000;
/// Lowest address an image segment may occupy.
pub const IMAGE_BASE: u64 = 0x10_0000;
/// Smallest flat address space the kernel accepts.
pub const MIN_MEM_SIZE: u64 = 1 << 20;
/// Largest flat address space the kernel accepts (the lower half of one
/// top-level page-table entry).
pub const MAX_MEM_SIZE: u64 = 1 << 36;
/// Default flat address space size when an image does not ask for one.
pub const DEFAULT_MEM_SIZE: u64 = 4 << 20;
/// Default stack size.
pub const DEFAULT_STACK_SIZE: u64 = 256 << 10;

/// Rounds `value` up to a multiple of [`PAGE_SIZE`], or `None` on overflow.
pub const fn page_align_up(value: u64) -> Option<u64> {
    match value.checked_add(PAGE_SIZE - 1) {
        Some(v) => Some(v & !(PAGE_SIZE - 1)),
        None => None,
    }
}
