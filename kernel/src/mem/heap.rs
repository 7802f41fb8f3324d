//! The kernel heap: `linked_list_allocator` over one range of RAM, with the
//! bytes in use and their peak counted, so `--stats` (and the tests that
//! hold the kernel to its bounds) can see whether anything a VM does makes
//! the kernel's memory grow.

use core::alloc::{GlobalAlloc, Layout};
use core::sync::atomic::{AtomicUsize, Ordering};
use linked_list_allocator::LockedHeap;

/// The kernel's global allocator.
pub struct CountingHeap {
    heap: LockedHeap,
    used: AtomicUsize,
    peak: AtomicUsize,
}

/// Heap use at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HeapUse {
    /// Bytes allocated now.
    pub used: usize,
    /// Most bytes allocated at once since the last [`CountingHeap::reset_peak`].
    pub peak: usize,
    /// Bytes the heap has in all.
    pub size: usize,
}

impl CountingHeap {
    /// A heap with no memory yet (see [`CountingHeap::init`]).
    pub const fn empty() -> Self {
        CountingHeap { heap: LockedHeap::empty(), used: AtomicUsize::new(0), peak: AtomicUsize::new(0) }
    }

    /// Gives the heap `[start, start + size)`.
    ///
    /// # Safety
    ///
    /// The range must be unused, writable memory that nothing else uses
    /// for as long as the heap lives; call once.
    pub unsafe fn init(&self, start: *mut u8, size: usize) {
        // SAFETY: the caller's promise, passed on.
        unsafe { self.heap.lock().init(start, size) }
    }

    /// Bytes free.
    pub fn free(&self) -> usize {
        self.heap.lock().free()
    }

    /// What is in use now and at most.
    pub fn usage(&self) -> HeapUse {
        HeapUse {
            used: self.used.load(Ordering::Relaxed),
            peak: self.peak.load(Ordering::Relaxed),
            size: self.heap.lock().size(),
        }
    }

    /// Starts counting the peak afresh from what is in use now.
    pub fn reset_peak(&self) {
        self.peak.store(self.used.load(Ordering::Relaxed), Ordering::Relaxed);
    }
}

// SAFETY: every call goes to the inner allocator unchanged; the counters
// only observe.
unsafe impl GlobalAlloc for CountingHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's promise about `layout`, passed on.
        let ptr = unsafe { self.heap.alloc(layout) };
        if !ptr.is_null() {
            let used = self.used.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            self.peak.fetch_max(used, Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        self.used.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: `ptr` came from `alloc` with this layout.
        unsafe { self.heap.dealloc(ptr, layout) }
    }
}
