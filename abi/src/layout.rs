//! Fixed addresses inside a VM's flat address space.
//!
//! ```text
//! 0x0000_0000  page 0: never mapped (null pointers fault)
//! 0x0000_1000  info page: read-only, see [`crate::info::InfoPage`]
//! 0x0000_2000  CPU state page: the VM's own saved registers (see below)
//! 0x0000_3000  state-switch code: read-only, executable, the kernel's
//! 0x0010_0000  image segments (the linker script places them here)
//!    ...       heap: from the end of the image to the stack guard
//!              guard page: never mapped (stack overflow faults)
//!              stack: STACK_SIZE bytes ending at mem_size
//! ```

/// Size of a page of the flat address space.
pub const PAGE_SIZE: u64 = 4096;
/// Address of the read-only info page.
pub const INFO_PAGE: u64 = 0x1000;
/// Address of the CPU state page: where the VM's register state beyond
/// the general registers (x87, SSE, AVX and AVX-512 state through
/// `xsave`, or `fxsave` where the CPU has no XSAVE; the data segment
/// selectors; the FS and GS bases) is saved while another VM runs. It is
/// the VM's own memory, writable by it: the save and the restore run in
/// the VM's ring 3, in the code at [`STATE_SWITCH_PAGE`], because under
/// the PVM flavour of KVM only ring 3 reaches the hardware's XSAVE state.
/// A VM that scribbles on it while it runs harms only itself.
pub const CPU_STATE_PAGE: u64 = 0x2000;
/// Address of the kernel's state-switch code page (read-only, executable,
/// the same frame in every VM).
pub const STATE_SWITCH_PAGE: u64 = 0x3000;
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
