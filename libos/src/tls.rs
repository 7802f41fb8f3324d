//! Thread-local storage: each green thread's block, copied from the image's
//! TLS template (`.tdata`, then zeroed `.tbss`), and the FS base that
//! points at it.
//!
//! The layout is x86-64's "variant II", as the linker computes offsets for
//! a static executable: the thread pointer (FS base) sits just past the
//! block, and the word it points at holds its own address. The kernel
//! switches the FS base with the rest of a VM's state where it says so on
//! the info page (`FEATURE_FS_GS_BASE`); a `no_std` image has an empty
//! template, and its threads never touch FS.

extern crate alloc;

use alloc::boxed::Box;
use alloc::vec::Vec;

unsafe extern "C" {
    // Defined by the linker script (libos/build.rs): the template's bounds,
    // and (as an address) its alignment.
    static __denali_tls_start: u8;
    static __denali_tdata_end: u8;
    static __denali_tls_end: u8;
    static __denali_tls_align: u8;
}

/// The TLS template: where it is, how much is initialised, its size and
/// alignment.
struct Template {
    start: usize,
    init_len: usize,
    size: usize,
    align: usize,
}

fn template() -> Template {
    // Only the addresses of the linker's symbols are taken.
    let (start, tdata_end, end, align) = (
        &raw const __denali_tls_start as usize,
        &raw const __denali_tdata_end as usize,
        &raw const __denali_tls_end as usize,
        &raw const __denali_tls_align as usize,
    );
    Template { start, init_len: tdata_end - start, size: end - start, align: align.max(8) }
}

/// A thread's TLS block and the FS base for it; `None` when the image has
/// no thread-locals or the heap has no room.
pub(crate) fn new_block() -> Option<(Box<[u8]>, u64)> {
    let t = template();
    if t.size == 0 {
        return None;
    }
    // The block must sit at the template's address modulo its alignment,
    // and the thread pointer past it on the same terms (the linker's
    // variant-II offsets): room for that, the data, and the self-pointer.
    let padding = (t.start.wrapping_neg().wrapping_sub(t.size)) & (t.align - 1);
    let len = t.align + t.size + padding + 8;
    let mut bytes = Vec::new();
    bytes.try_reserve_exact(len).ok()?;
    bytes.resize(len, 0u8);
    let mut block = bytes.into_boxed_slice();
    let base = block.as_mut_ptr() as usize;
    let data = base + ((t.start.wrapping_sub(base)) & (t.align - 1));
    let thread_pointer = data + t.size + padding;
    // SAFETY: `data..thread_pointer + 8` lies inside `block` (sized for
    // it above); the template is `init_len` readable bytes of the image.
    unsafe {
        core::ptr::copy_nonoverlapping(t.start as *const u8, data as *mut u8, t.init_len);
        (thread_pointer as *mut u64).write_unaligned(thread_pointer as u64);
    }
    Some((block, thread_pointer as u64))
}

/// Points FS at `base` for the running thread.
pub(crate) fn set_fs_base(base: u64) {
    // SAFETY: the kernel enables and switches FS bases for this VM
    // (checked once at start-up by the std entry); FS is used only for
    // thread-locals, and `base` is a block from `new_block`.
    unsafe { core::arch::asm!("wrfsbase {}", in(reg) base, options(nostack, preserves_flags)) };
}

/// Whether the image has thread-locals (a thread needs a block).
pub(crate) fn wanted() -> bool {
    template().size != 0
}
