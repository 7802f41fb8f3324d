//! Memory: std's `System` allocator asks for memory here; it comes from
//! the same heap as the `denali` crate's global allocator.

use crate::heap::HEAP;
use core::alloc::{GlobalAlloc, Layout};

fn layout(size: usize, align: usize) -> Option<Layout> {
    Layout::from_size_align(size, align).ok().filter(|l| l.size() != 0)
}

#[unsafe(no_mangle)]
extern "C" fn sys_malloc(size: usize, align: usize) -> *mut u8 {
    // SAFETY: the layout is valid and of non-zero size.
    layout(size, align).map_or(core::ptr::null_mut(), |l| unsafe { HEAP.alloc(l) })
}

#[unsafe(no_mangle)]
extern "C" fn sys_alloc(size: usize, align: usize) -> *mut u8 {
    sys_malloc(size, align)
}

#[unsafe(no_mangle)]
extern "C" fn sys_alloc_zeroed(size: usize, align: usize) -> *mut u8 {
    // SAFETY: the layout is valid and of non-zero size.
    layout(size, align).map_or(core::ptr::null_mut(), |l| unsafe { HEAP.alloc_zeroed(l) })
}

/// # Safety
/// `ptr` came from this allocator with `size` and `align`.
#[unsafe(no_mangle)]
unsafe extern "C" fn sys_realloc(ptr: *mut u8, size: usize, align: usize, new_size: usize) -> *mut u8 {
    match layout(size, align) {
        // SAFETY: the caller's contract; `new_size` is checked by realloc's
        // own rules (non-zero, no overflow when rounded to `align`).
        Some(l) if new_size != 0 && Layout::from_size_align(new_size, align).is_ok() => unsafe {
            HEAP.realloc(ptr, l, new_size)
        },
        _ => core::ptr::null_mut(),
    }
}

/// # Safety
/// `ptr` came from this allocator with `size` and `align`.
#[unsafe(no_mangle)]
unsafe extern "C" fn sys_free(ptr: *mut u8, size: usize, align: usize) {
    if let (false, Some(l)) = (ptr.is_null(), layout(size, align)) {
        // SAFETY: the caller's contract.
        unsafe { HEAP.dealloc(ptr, l) }
    }
}

/// # Safety
/// As [`sys_free`].
#[unsafe(no_mangle)]
unsafe extern "C" fn sys_dealloc(ptr: *mut u8, size: usize, align: usize) {
    // SAFETY: the caller's contract.
    unsafe { sys_free(ptr, size, align) }
}

#[unsafe(no_mangle)]
extern "C" fn sys_getpagesize() -> i32 {
    denali_abi::layout::PAGE_SIZE as i32
}
