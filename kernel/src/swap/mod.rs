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

/// Kernel heap a slot in use costs: its entry in a VM's swapped list.
/// (The list of pages taken while a VM is swapped out is allocated, like
/// the swapped list, only if the heap has room: without it the VM stays in
/// memory.)
pub const HEAP_PER_SLOT: usize = core::mem::size_of::<SwappedPage>();

/// The most pages one disk request moves (128 KiB): a VM's pages go to
/// consecutive slots and move this many at a time, each frame a segment of
/// the request.
pub const FRAMES_PER_TRANSFER: usize = 32;

/// Sectors in one slot: a page.
const SECTORS_PER_SLOT: u64 = FRAME_SIZE / SECTOR_SIZE as u64;

/// Slots a word of the area's bitmap covers.
const SLOTS_PER_WORD: u32 = u64::BITS;

/// A page of a swapped-out VM: where it goes back, its page-table flags,
/// and the slot holding it, in 12 bytes (a machine with a million VMs
/// swapped out keeps millions of these).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C, packed(4))]
pub struct SwappedPage {
    /// Its flat address and flags as a page-table entry would hold them:
    /// the address in the frame bits, the flags around it.
    entry: u64,
    /// Its slot in the swap area.
    slot: u32,
}

/// The bits of a page-table entry that hold the frame's address.
const ADDRESS_BITS: u64 = 0x000f_ffff_ffff_f000;

impl SwappedPage {
    /// The page at flat address `vaddr` (page-aligned, in the lower half),
    /// mapped with page-table `flags`, kept in `slot`.
    pub fn new(vaddr: u64, flags: u64, slot: u32) -> SwappedPage {
        debug_assert_eq!(vaddr & !ADDRESS_BITS, 0, "a page-aligned lower-half address");
        SwappedPage { entry: (vaddr & ADDRESS_BITS) | (flags & !ADDRESS_BITS), slot }
    }

    /// Its flat address.
    pub fn vaddr(&self) -> u64 {
        self.entry & ADDRESS_BITS
    }

    /// The page-table flags it had.
    pub fn flags(&self) -> u64 {
        self.entry & !ADDRESS_BITS
    }

    /// Its slot in the swap area.
    pub fn slot(&self) -> u32 {
        self.slot
    }
}

/// The swap area: page-sized slots on the disk after the VMs' windows,
/// handed out in runs of consecutive slots so that a VM's pages move in a
/// few large transfers.
#[derive(Debug)]
pub struct SwapArea {
    /// First sector of slot 0.
    start: u64,
    /// Slots in the area.
    slots: u32,
    /// A bit per slot, set while the slot is in use; the bits past the
    /// last slot are set too, so they are never handed out.
    used: Vec<u64>,
    /// Slots not in use.
    free: u32,
    /// Where the next search for a run starts: next fit, so runs handed
    /// out one after another are consecutive on the disk.
    cursor: u32,
}

impl SwapArea {
    /// The slots that fit in sectors `[start, end)` (the first one
    /// page-aligned), or `None` if not one does (or the kernel heap has no
    /// room for the bitmap: it is sized now, so nothing later allocates).
    pub fn new(start: u64, end: u64) -> Option<SwapArea> {
        let start = start.checked_next_multiple_of(SECTORS_PER_SLOT)?;
        let slots = u32::try_from(end.saturating_sub(start) / SECTORS_PER_SLOT).unwrap_or(u32::MAX);
        let words = slots.div_ceil(SLOTS_PER_WORD) as usize;
        let mut used = Vec::new();
        used.try_reserve_exact(words).ok()?;
        used.resize(words, 0);
        if let Some(last) = used.last_mut().filter(|_| !slots.is_multiple_of(SLOTS_PER_WORD)) {
            *last = u64::MAX << (slots % SLOTS_PER_WORD);
        }
        (slots > 0).then_some(SwapArea { start, slots, used, free: slots, cursor: 0 })
    }

    /// A run of at most `most` free slots, consecutive on the disk, as
    /// (first slot, length): the first free slot from where the last run
    /// ended (wrapping round) and the free slots right after it. `None` if
    /// the area is full (or `most` is 0).
    pub fn alloc_run(&mut self, most: u32) -> Option<(u32, u32)> {
        if self.free == 0 || most == 0 {
            return None;
        }
        let first = self.first_free_from(self.cursor).or_else(|| self.first_free_from(0))?;
        let len = self.free_from(first, most);
        self.set_range(first, len, true);
        self.free -= len;
        self.cursor = if first + len == self.slots { 0 } else { first + len };
        Some((first, len))
    }

    /// Gives back the `len` slots from `first` (a run `alloc_run` handed
    /// out, or part of one).
    pub fn free_run(&mut self, first: u32, len: u32) {
        debug_assert!((first..first + len).all(|slot| self.is_used(slot)), "a slot of {first}+{len} freed twice");
        self.set_range(first, len, false);
        self.free += len;
    }

    /// Slots free.
    pub fn free_slots(&self) -> u64 {
        u64::from(self.free)
    }

    /// Slots in all.
    pub fn slots(&self) -> u32 {
        self.slots
    }

    /// The disk sector where `slot` starts.
    pub fn sector(&self, slot: u32) -> u64 {
        self.start + u64::from(slot) * SECTORS_PER_SLOT
    }

    /// The first free slot at or after `from`, if any.
    fn first_free_from(&self, from: u32) -> Option<u32> {
        let mut word = (from / SLOTS_PER_WORD) as usize;
        // The slots below `from` in its word count as used.
        let mut bits = self.used.get(word)? | ((1u64 << (from % SLOTS_PER_WORD)) - 1);
        while bits == u64::MAX {
            word += 1;
            bits = *self.used.get(word)?;
        }
        Some(word as u32 * SLOTS_PER_WORD + bits.trailing_ones())
    }

    /// How many slots from `first` are free, up to `most`: a word of the
    /// bitmap at a time (the bits past the last slot are set, so a run
    /// never passes it).
    fn free_from(&self, first: u32, most: u32) -> u32 {
        let mut len = 0;
        while len < most {
            let slot = first + len;
            let bit = slot % SLOTS_PER_WORD;
            let Some(&word) = self.used.get((slot / SLOTS_PER_WORD) as usize) else { break };
            let free_here = (!word >> bit).trailing_ones().min(SLOTS_PER_WORD - bit);
            len += free_here.min(most - len);
            if bit + free_here < SLOTS_PER_WORD {
                break;
            }
        }
        len
    }

    /// Marks the `len` slots from `first` used or free, a word at a time.
    fn set_range(&mut self, first: u32, len: u32, used: bool) {
        let (mut slot, end) = (first, first + len);
        while slot < end {
            let bit = slot % SLOTS_PER_WORD;
            let count = (end - slot).min(SLOTS_PER_WORD - bit);
            let mask = (u64::MAX >> (SLOTS_PER_WORD - count)) << bit;
            let word = &mut self.used[(slot / SLOTS_PER_WORD) as usize];
            if used {
                *word |= mask
            } else {
                *word &= !mask
            }
            slot += count;
        }
    }

    fn is_used(&self, slot: u32) -> bool {
        self.used[(slot / SLOTS_PER_WORD) as usize] & (1 << (slot % SLOTS_PER_WORD)) != 0
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

/// `frames` (physical addresses) as (start, bytes) extents of physically
/// adjacent frames, in order: each becomes one segment of a disk request,
/// and every segment costs the driver a descriptor's work both ways.
pub fn extents(frames: &[u64]) -> impl Iterator<Item = (u64, usize)> + '_ {
    let mut rest = frames;
    core::iter::from_fn(move || {
        let (&start, _) = rest.split_first()?;
        let adjacent = rest.windows(2).take_while(|pair| pair[1] == pair[0] + FRAME_SIZE).count();
        rest = &rest[adjacent + 1..];
        Some((start, (adjacent + 1) * FRAME_SIZE as usize))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_next_to_the_one_before_share_its_extent() {
        let frames = [0x5000, 0x6000, 0x7000, 0x3000, 0x9000, 0xa000, 0x8000];
        let runs: Vec<(u64, usize)> = extents(&frames).collect();
        assert_eq!(runs, [(0x5000, 0x3000), (0x3000, 0x1000), (0x9000, 0x2000), (0x8000, 0x1000)]);
        assert_eq!(extents(&[]).count(), 0);
    }

    #[test]
    fn a_swapped_page_keeps_its_address_flags_and_slot_in_twelve_bytes() {
        // Present, writable, user, a software bit (9) and no-execute (63).
        let flags = 0b111 | 1 << 9 | 1 << 63;
        let page = SwappedPage::new(0x7fff_ffff_f000, flags, u32::MAX);
        assert_eq!((page.vaddr(), page.flags(), page.slot()), (0x7fff_ffff_f000, flags, u32::MAX));
        assert_eq!(core::mem::size_of::<SwappedPage>(), 12);
        assert_eq!(HEAP_PER_SLOT, 12);
    }

    #[test]
    fn slots_are_page_aligned_handed_out_in_runs_reused_and_bounded() {
        // Sectors 13..45: the first page-aligned slot starts at 16.
        let mut area = SwapArea::new(13, 45).unwrap();
        assert_eq!((area.slots(), area.free_slots()), (3, 3));
        assert_eq!((area.sector(0), area.sector(2)), (16, 32));
        assert_eq!(area.alloc_run(2), Some((0, 2)));
        assert_eq!(area.alloc_run(5), Some((2, 1)));
        assert_eq!((area.alloc_run(1), area.free_slots()), (None, 0));
        area.free_run(1, 1);
        assert_eq!((area.free_slots(), area.alloc_run(3), area.alloc_run(1)), (1, Some((1, 1)), None));
        assert_eq!(area.alloc_run(0), None);
        assert!(SwapArea::new(8, 15).is_none());
        assert!(SwapArea::new(u64::MAX - 2, u64::MAX).is_none());
    }

    #[test]
    fn runs_follow_one_another_and_wrap_round_the_holes() {
        // 200 slots: more than three words of the bitmap, the last partial.
        let mut area = SwapArea::new(0, 200 * SECTORS_PER_SLOT).unwrap();
        assert_eq!(area.alloc_run(32), Some((0, 32)));
        assert_eq!(area.alloc_run(32), Some((32, 32)));
        assert_eq!(area.alloc_run(150), Some((64, 136)));
        // Full: holes open at 10..20 and 100..130; the search wraps from
        // the end to the first, and a run stops at a used slot.
        area.free_run(10, 10);
        area.free_run(100, 30);
        assert_eq!(area.free_slots(), 40);
        assert_eq!(area.alloc_run(32), Some((10, 10)));
        assert_eq!(area.alloc_run(32), Some((100, 30)));
        assert_eq!(area.alloc_run(1), None);
        // Everything back: the whole area is free again, in one piece.
        area.free_run(0, 200);
        assert_eq!(area.free_slots(), 200);
        assert_eq!(area.alloc_run(u32::MAX), Some((130, 70)));
        assert_eq!(area.alloc_run(u32::MAX), Some((0, 130)));
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
