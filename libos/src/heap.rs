//! The global allocator: `talc` (the kernel's allocator too) over the flat
//! space between the image and the stack guard.
//!
//! talc keeps its free blocks in size-class bins, so an allocation costs
//! the same however fragmented the heap is (a first-fit list walks every
//! hole). It marks both ends of a free block, so the heap is claimed a
//! page at a time as allocations need it rather than all at once: the
//! kernel maps pages zeroed on first touch, and the part of the range the
//! service never used stays untouched and costs nothing.

use core::alloc::Layout;
use talc::{OomHandler, Span, Talc, Talck};

/// The step in which the heap claims more of its range when it runs out.
const GROWTH: usize = 4 << 10;

/// Grows the heap through the VM's heap range, [`GROWTH`] at a time.
pub(crate) struct Grow {
    /// The whole range the kernel reserved for the heap.
    range: Span,
    /// What of it the heap has claimed so far (empty before the first
    /// allocation).
    claimed: Span,
}

impl OomHandler for Grow {
    fn handle_oom(talc: &mut Talc<Self>, layout: Layout) -> Result<(), ()> {
        let Grow { range, claimed } = talc.oom_handler;
        let (base, end) = range.get_base_acme().ok_or(())?;
        let top = claimed.get_base_acme().map_or(base, |(_, top)| top);
        // Room for the block, its tags and its alignment, whole steps.
        let need = layout.size().saturating_add(layout.align()).saturating_add(64);
        let step = need.div_ceil(GROWTH).saturating_mul(GROWTH);
        let new_top = top.wrapping_add(step.min(end as usize - top as usize));
        if new_top == top {
            return Err(());
        }
        let wanted = Span::new(base, new_top);
        // SAFETY: `wanted` lies within the range the kernel reserved for the
        // heap, which nothing else in the VM uses (see `init`), and contains
        // what the heap claimed before.
        let grown = unsafe { if claimed.is_empty() { talc.claim(wanted)? } else { talc.extend(claimed, wanted) } };
        talc.oom_handler.claimed = grown;
        // talc calls again while it is short: stop once nothing was gained.
        if grown.size() > claimed.size() { Ok(()) } else { Err(()) }
    }
}

#[global_allocator]
pub(crate) static HEAP: Talck<spin::Mutex<()>, Grow> =
    Talc::new(Grow { range: Span::empty(), claimed: Span::empty() }).lock();

/// Hands the heap range from the info page to the allocator. Called once,
/// before any allocation.
pub(crate) fn init() {
    let info = crate::vm::info();
    let size = info.heap_end.saturating_sub(info.heap_start) as usize;
    // The kernel reserves [heap_start, heap_end) of the flat space for the
    // heap: nothing else in the VM uses it.
    HEAP.lock().oom_handler.range = Span::from_base_size(info.heap_start as *mut u8, size);
}

/// Heap bytes allocated now.
pub(crate) fn used() -> usize {
    HEAP.lock().get_counters().allocated_bytes
}

/// Heap bytes free now: the range less what is allocated (the part not
/// claimed yet is claimed as needed).
pub(crate) fn free() -> usize {
    let heap = HEAP.lock();
    heap.oom_handler.range.size().saturating_sub(heap.get_counters().allocated_bytes)
}
