//! The kernel heap: `talc` over one range of RAM, with the bytes in use and
//! their peak counted, so `--stats` (and the tests that
//! hold the kernel to its bounds) can see whether anything a VM does makes
//! the kernel's memory grow.

use core::alloc::{GlobalAlloc, Layout};
use core::sync::atomic::{AtomicUsize, Ordering};
use talc::{ErrOnOom, Span, Talc, Talck};

/// The allocator under the counters: talc keeps its free blocks in
/// size-class bins, so an allocation costs the same with 100,000 VMs' worth
/// of records around it as with one (a first-fit list walks every hole).
type Inner = Talck<spin::Mutex<()>, ErrOnOom>;

/// The kernel's global allocator.
pub struct CountingHeap {
    heap: Inner,
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
        CountingHeap { heap: Talc::new(ErrOnOom).lock(), used: AtomicUsize::new(0), peak: AtomicUsize::new(0) }
    }

    /// Gives the heap `[start, start + size)`.
    ///
    /// # Safety
    ///
    /// The range must be unused, writable memory that nothing else uses
    /// for as long as the heap lives; call once.
    pub unsafe fn init(&self, start: *mut u8, size: usize) {
        // SAFETY: the caller's promise, passed on. (Claiming fails only for
        // a range too small to hold anything: the heap then stays empty.)
        let _ = unsafe { self.heap.lock().claim(Span::from_base_size(start, size)) };
    }

    /// Bytes free.
    pub fn free(&self) -> usize {
        self.heap.lock().get_counters().available_bytes
    }

    /// What is in use now and at most.
    pub fn usage(&self) -> HeapUse {
        HeapUse {
            used: self.used.load(Ordering::Relaxed),
            peak: self.peak.load(Ordering::Relaxed),
            size: self.heap.lock().get_counters().claimed_bytes,
        }
    }

    /// Counts `bytes` more in use, and the peak.
    fn count_more(&self, bytes: usize) {
        let used = self.used.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.peak.fetch_max(used, Ordering::Relaxed);
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
            self.count_more(layout.size());
        }
        ptr
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's promises about `ptr`, `layout` and
        // `new_size`, passed on (talc grows in place where it can).
        let moved = unsafe { self.heap.realloc(ptr, layout, new_size) };
        if !moved.is_null() {
            self.used.fetch_sub(layout.size(), Ordering::Relaxed);
            self.count_more(new_size);
        }
        moved
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        self.used.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: `ptr` came from `alloc` with this layout.
        unsafe { self.heap.dealloc(ptr, layout) }
    }
}
