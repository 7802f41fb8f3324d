//! Swapping: main memory is a cache of active VMs. When free frames run
//! low, VMs that have gone idle are written to the swap area of the
//! machine's disk (oldest idle first) and their frames freed; a VM woken
//! while swapped out is read back in before it runs again.
//!
//! This module is the bookkeeping, tested on the host: the swap area's
//! slots, the queue of idle VMs, and the watermarks. The kernel's run loop
//! (`run::swapping`) does the moving.

use crate::mem::frame::FRAME_SIZE;
use crate::sched::VmId;
use alloc::collections::VecDeque;
use alloc::vec::Vec;
use denali_abi::disk::SECTOR_SIZE;

/// Kernel heap a slot in use can cost: its entry in a VM's swapped list
/// and in the area's free list, and while the VM is being swapped out, the
/// list of its pages taken (generously: kernel heap running dry is fatal).
pub const HEAP_PER_SLOT: usize = 64;

/// Sectors in one slot: a page.
const SECTORS_PER_SLOT: u64 = FRAME_SIZE / SECTOR_SIZE as u64;

/// A page of a swapped-out VM: where it goes back, its page-table flags,
/// and the slot holding it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SwappedPage {
    /// Flat address.
    pub vaddr: u64,
    /// Page-table flags it had.
    pub flags: u64,
    /// Its slot in the swap area.
    pub slot: u32,
}

/// The swap area: page-sized slots on the disk after the VMs' windows.
#[derive(Debug)]
pub struct SwapArea {
    /// First sector of slot 0.
    start: u64,
    /// Slots in the area.
    slots: u32,
    /// Slots never handed out start here.
    next: u32,
    /// Slots handed out and given back.
    freed: Vec<u32>,
}

impl SwapArea {
    /// The slots that fit in sectors `[start, end)` (the first one
    /// page-aligned), or `None` if not one does (or the kernel heap has no
    /// room to keep track of them: the list of freed slots is sized now, so
    /// freeing one never allocates).
    pub fn new(start: u64, end: u64) -> Option<SwapArea> {
        let start = start.checked_next_multiple_of(SECTORS_PER_SLOT)?;
        let slots = u32::try_from(end.saturating_sub(start) / SECTORS_PER_SLOT).unwrap_or(u32::MAX);
        let mut freed = Vec::new();
        freed.try_reserve_exact(slots as usize).ok()?;
        (slots > 0).then_some(SwapArea { start, slots, next: 0, freed })
    }

    /// A free slot.
    pub fn alloc(&mut self) -> Option<u32> {
        if let Some(slot) = self.freed.pop() {
            return Some(slot);
        }
        (self.next < self.slots).then(|| {
            self.next += 1;
            self.next - 1
        })
    }

    /// Gives a slot back.
    pub fn free(&mut self, slot: u32) {
        debug_assert!(slot < self.next && !self.freed.contains(&slot));
        self.freed.push(slot);
    }

    /// Slots free.
    pub fn free_slots(&self) -> u64 {
        u64::from(self.slots - self.next) + self.freed.len() as u64
    }

    /// Slots in all.
    pub fn slots(&self) -> u32 {
        self.slots
    }

    /// The disk sector where `slot` starts.
    pub fn sector(&self, slot: u32) -> u64 {
        self.start + u64::from(slot) * SECTORS_PER_SLOT
    }
}

/// VMs in the order they went idle, the oldest first: who to swap out.
///
/// A VM goes in each time it blocks, with a stamp it also keeps; an entry
/// whose VM has run since (its stamp moved on), exited or been swapped out
/// is stale and skipped, so nothing has to be removed from the middle.
#[derive(Debug, Default)]
pub struct IdleQueue {
    queue: VecDeque<(VmId, u64)>,
    next_stamp: u64,
}

impl IdleQueue {
    /// Makes room for the entries of `count` VMs: the kernel keeps at most
    /// two per VM and a few more (see `run::swapping`), so pushing never
    /// allocates.
    pub fn reserve(&mut self, count: usize) -> Result<(), alloc::collections::TryReserveError> {
        self.queue.try_reserve_exact((2 * count + 66).saturating_sub(self.queue.len()))
    }

    /// Notes that `id` just went idle; returns the stamp it keeps.
    pub fn push(&mut self, id: VmId) -> u64 {
        self.next_stamp += 1;
        self.queue.push_back((id, self.next_stamp));
        self.next_stamp
    }

    /// Entries in the queue, stale ones included.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether the queue is empty.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Keeps only the entries `still_idle(id, stamp)` confirms.
    pub fn retain(&mut self, mut still_idle: impl FnMut(VmId, u64) -> bool) {
        self.queue.retain(|&(id, stamp)| still_idle(id, stamp));
    }

    /// The VM idle longest among those `still_idle(id, stamp)` confirms.
    pub fn pop_oldest(&mut self, mut still_idle: impl FnMut(VmId, u64) -> bool) -> Option<VmId> {
        while let Some((id, stamp)) = self.queue.pop_front() {
            if still_idle(id, stamp) {
                return Some(id);
            }
        }
        None
    }
}

/// When to swap: below `low` free frames the kernel swaps idle VMs out
/// until `high` are free.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Watermarks {
    /// Free frames below which swapping starts.
    pub low: u64,
    /// Free frames at which it stops.
    pub high: u64,
}

impl Watermarks {
    /// For `total` frames: a thirty-second of memory (at least 1 MiB) free
    /// before swapping, twice that after.
    pub fn for_total(total: u64) -> Watermarks {
        let low = (total / 32).max((1 << 20) / FRAME_SIZE);
        Watermarks { low, high: 2 * low }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_page_aligned_reused_and_bounded() {
        // Sectors 13..45: the first page-aligned slot starts at 16.
        let mut area = SwapArea::new(13, 45).unwrap();
        assert_eq!((area.slots(), area.free_slots()), (3, 3));
        let slots: Vec<u32> = (0..3).map(|_| area.alloc().unwrap()).collect();
        assert_eq!(slots, [0, 1, 2]);
        assert_eq!(area.alloc(), None);
        assert_eq!((area.sector(0), area.sector(2)), (16, 32));
        area.free(1);
        assert_eq!((area.free_slots(), area.alloc(), area.alloc()), (1, Some(1), None));
        assert!(SwapArea::new(8, 15).is_none());
        assert!(SwapArea::new(u64::MAX - 2, u64::MAX).is_none());
    }

    #[test]
    fn the_oldest_idle_vm_still_idle_goes_first() {
        let mut queue = IdleQueue::default();
        let a = queue.push(1);
        let _stale = queue.push(2);
        let b = queue.push(3);
        let c = queue.push(2); // VM 2 ran and went idle again
        let current = [(1, a), (2, c), (3, b)];
        let still = |id, stamp| current.contains(&(id, stamp));
        assert_eq!(queue.pop_oldest(still), Some(1));
        // VM 2's first entry is stale: VM 3 is next, then VM 2's new one.
        assert_eq!(queue.pop_oldest(still), Some(3));
        assert_eq!(queue.pop_oldest(still), Some(2));
        assert_eq!(queue.pop_oldest(still), None);
    }

    #[test]
    fn watermarks_grow_with_memory_and_keep_a_floor() {
        assert_eq!(Watermarks::for_total(1000), Watermarks { low: 256, high: 512 });
        assert_eq!(Watermarks::for_total(1 << 20), Watermarks { low: 1 << 15, high: 1 << 16 });
    }
}
