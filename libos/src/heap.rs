//! The global allocator: a linked-list heap over the flat space between
//! the image and the stack guard. The kernel maps those pages zeroed on
//! first touch, so an untouched heap costs nothing.

use linked_list_allocator::LockedHeap;

#[global_allocator]
pub(crate) static HEAP: LockedHeap = LockedHeap::empty();

/// Hands the heap range from the info page to the allocator. Called once.
pub(crate) fn init() {
    let info = crate::vm::info();
    let size = info.heap_end.saturating_sub(info.heap_start) as usize;
    // SAFETY: the kernel reserves [heap_start, heap_end) of the flat space
    // for the heap: nothing else in the VM uses it, and init runs once,
    // before any allocation.
    unsafe { HEAP.lock().init(info.heap_start as *mut u8, size) };
}

/// Heap bytes allocated now.
pub(crate) fn used() -> usize {
    HEAP.lock().used()
}

/// Heap bytes free now.
pub(crate) fn free() -> usize {
    HEAP.lock().free()
}
