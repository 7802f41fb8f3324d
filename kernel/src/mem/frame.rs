//! The physical frame allocator's bookkeeping: which 4 KiB frames are free.
//!
//! Pure logic over numbers, tested on the host. It never touches the frames;
//! the caller zeroes a frame before any VM can see it (`mem::phys`), unless
//! the allocator says it is known to be zero: one the machine handed over
//! zeroed and nobody has had since, or a freed one the kernel zeroed while
//! it had nothing else to do ([`FrameAllocator::zero_one_free`]), so that a
//! VM's first touch of a page rarely waits for 4 KiB of stores.

use alloc::collections::VecDeque;
use alloc::vec::Vec;

/// Size of a frame.
pub const FRAME_SIZE: u64 = 4096;

/// Free frames the kernel keeps zeroed ahead of need, at most: 4 MiB, a
/// burst of first touches (a web VM's whole heap and stack come to fewer).
pub const ZEROED_AHEAD_MAX: usize = 1024;

/// Hands out 4 KiB frames from a set of physical ranges: frames that were
/// freed, and fresh ones from the ranges in order. A caller that needs a
/// zero frame gets one known to be zero first; one that overwrites the
/// frame gets a dirty one first.
#[derive(Debug, Default)]
pub struct FrameAllocator {
    ranges: Vec<(u64, u64)>,
    next_range: usize,
    next_frame: u64,
    /// Freed frames, holding whatever their last owner left; handed out
    /// last freed first (a swap-in gets back the frames a swap-out just
    /// freed, adjacent ones adjacent), zeroed ahead oldest first.
    dirty: VecDeque<u64>,
    /// Freed frames zeroed since (at most [`ZEROED_AHEAD_MAX`]).
    zeroed: Vec<u64>,
    in_use: u64,
    total: u64,
    /// The machine zeroed the ranges: a frame never handed out is zero.
    fresh_are_zero: bool,
}

impl FrameAllocator {
    /// An allocator over `[start, end)` ranges; partial frames at the edges
    /// are not used.
    pub fn new(ranges: impl IntoIterator<Item = (u64, u64)>) -> Self {
        let ranges: Vec<(u64, u64)> = ranges
            .into_iter()
            .map(|(s, e)| (s.div_ceil(FRAME_SIZE) * FRAME_SIZE, e / FRAME_SIZE * FRAME_SIZE))
            .filter(|(s, e)| s < e)
            .collect();
        let total = ranges.iter().map(|(s, e)| (e - s) / FRAME_SIZE).sum();
        let next_frame = ranges.first().map_or(0, |r| r.0);
        FrameAllocator {
            ranges,
            next_range: 0,
            next_frame,
            // Room for every frame at once: freeing one never allocates,
            // so it cannot fail (it runs as VMs exit and are swapped out).
            dirty: VecDeque::with_capacity(total as usize),
            zeroed: Vec::new(),
            in_use: 0,
            total,
            fresh_are_zero: false,
        }
    }

    /// The machine handed the ranges over zeroed, and nothing has written
    /// a frame of them that this allocator has not handed out.
    pub fn set_fresh_are_zero(&mut self) {
        self.fresh_are_zero = true;
    }

    /// A free frame's physical address, or `None` when memory is exhausted;
    /// for a caller that overwrites all of it (a copy, a swap-in), so a
    /// dirty frame comes first and the zeroed ones are kept for those that
    /// need them.
    pub fn alloc(&mut self) -> Option<u64> {
        let frame = self.dirty.pop_back().or_else(|| self.take_fresh()).or_else(|| self.zeroed.pop())?;
        self.in_use += 1;
        Some(frame)
    }

    /// A free frame, and whether it is known to be zero: one zeroed while
    /// the kernel was idle, or one never handed out from ranges the machine
    /// zeroed. Those come first.
    pub fn alloc_knowing_zero(&mut self) -> Option<(u64, bool)> {
        let known_zero = self.zeroed.pop().or_else(|| if self.fresh_are_zero { self.take_fresh() } else { None });
        let taken = match known_zero {
            Some(frame) => (frame, true),
            None => (self.dirty.pop_back().or_else(|| self.take_fresh())?, false),
        };
        self.in_use += 1;
        Some(taken)
    }

    /// The next frame never handed out, if any is left.
    fn take_fresh(&mut self) -> Option<u64> {
        loop {
            let (_, end) = *self.ranges.get(self.next_range)?;
            if self.next_frame < end {
                let frame = self.next_frame;
                self.next_frame += FRAME_SIZE;
                return Some(frame);
            }
            self.next_range += 1;
            self.next_frame = self.ranges.get(self.next_range).map_or(0, |r| r.0);
        }
    }

    /// Takes back a frame from [`FrameAllocator::alloc`]; allocates
    /// nothing (the list has room for every frame).
    pub fn free(&mut self, frame: u64) {
        debug_assert!(frame.is_multiple_of(FRAME_SIZE));
        self.in_use -= 1;
        self.dirty.push_back(frame);
    }

    /// Hands one free frame not known to be zero (a freed one, or a fresh
    /// one from ranges the machine did not zero) to `zero`, which must zero
    /// it, and keeps it as known zero. False if there is none, or
    /// [`ZEROED_AHEAD_MAX`] are zeroed already (or the list has no room:
    /// nothing is lost, the frame stays as it was).
    pub fn zero_one_free(&mut self, zero: impl FnOnce(u64)) -> bool {
        if self.zeroed.len() >= ZEROED_AHEAD_MAX || self.zeroed.try_reserve(1).is_err() {
            return false;
        }
        let Some(frame) = self.dirty.pop_front().or_else(|| if self.fresh_are_zero { None } else { self.take_fresh() })
        else {
            return false;
        };
        zero(frame);
        self.zeroed.push(frame);
        true
    }

    /// Free frames known to be zero, zeroed ahead of need.
    pub fn zeroed_ahead(&self) -> usize {
        self.zeroed.len()
    }

    /// Frames handed out and not freed.
    pub fn in_use(&self) -> u64 {
        self.in_use
    }

    /// Frames this allocator manages.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Frames free.
    pub fn available(&self) -> u64 {
        self.total - self.in_use
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_come_from_every_range_and_are_reused() {
        let mut frames = FrameAllocator::new([(0x1800, 0x4000), (0x10000, 0x11000)]);
        assert_eq!(frames.total(), 3);
        assert_eq!(frames.alloc(), Some(0x2000));
        assert_eq!(frames.alloc(), Some(0x3000));
        assert_eq!(frames.alloc(), Some(0x10000));
        assert_eq!(frames.alloc(), None);
        frames.free(0x3000);
        assert_eq!(frames.in_use(), 2);
        assert_eq!(frames.alloc(), Some(0x3000));
        assert_eq!(frames.alloc(), None);
    }

    #[test]
    fn only_frames_never_handed_out_from_zeroed_ranges_are_known_zero() {
        let mut frames = FrameAllocator::new([(0x1000, 0x3000), (0x10000, 0x11000)]);
        assert_eq!(frames.alloc_knowing_zero(), Some((0x1000, false)), "the machine promised nothing");
        frames.set_fresh_are_zero();
        assert_eq!(frames.alloc_knowing_zero(), Some((0x2000, true)));
        frames.free(0x2000);
        assert_eq!(frames.alloc_knowing_zero(), Some((0x10000, true)), "a fresh zero frame before a freed one");
        assert_eq!(frames.alloc_knowing_zero(), Some((0x2000, false)), "freed: it held someone's data");
        frames.free(0x1000);
        assert_eq!(frames.alloc_knowing_zero(), Some((0x1000, false)));
        assert_eq!(frames.alloc_knowing_zero(), None);
    }

    #[test]
    fn frames_zeroed_while_idle_go_to_those_that_need_zero_and_dirty_ones_to_the_rest() {
        let mut frames = FrameAllocator::new([(0x1000, 0x5000)]);
        let all: Vec<u64> = (0..4).map(|_| frames.alloc().unwrap()).collect();
        all.iter().for_each(|&frame| frames.free(frame));
        let mut zeroed = Vec::new();
        assert!(frames.zero_one_free(|frame| zeroed.push(frame)));
        assert!(frames.zero_one_free(|frame| zeroed.push(frame)));
        assert_eq!((frames.zeroed_ahead(), frames.available()), (2, 4), "zeroed frames are still free");
        assert_eq!(zeroed, all[..2], "the oldest freed are zeroed first");
        assert_eq!(frames.alloc_knowing_zero(), Some((all[1], true)), "a zeroed frame first, said to be zero");
        assert_eq!(frames.alloc(), Some(all[3]), "an overwriting caller takes the last freed, dirty");
        assert_eq!(frames.alloc_knowing_zero(), Some((all[0], true)));
        assert_eq!(frames.alloc_knowing_zero(), Some((all[2], false)), "none zeroed is left");
        assert!(!frames.zero_one_free(|_| panic!("no frame is free")));
    }

    #[test]
    fn fresh_frames_are_zeroed_ahead_only_where_the_machine_did_not_zero_them() {
        let mut frames = FrameAllocator::new([(0x1000, 0x3000)]);
        assert!(frames.zero_one_free(|frame| assert_eq!(frame, 0x1000)));
        assert_eq!(frames.alloc_knowing_zero(), Some((0x1000, true)));
        let mut zeroed_by_machine = FrameAllocator::new([(0x1000, 0x3000)]);
        zeroed_by_machine.set_fresh_are_zero();
        assert!(!zeroed_by_machine.zero_one_free(|_| panic!("a fresh frame here is zero already")));
    }

    #[test]
    fn freeing_frames_allocates_nothing() {
        let count = 4096;
        let mut frames = FrameAllocator::new([(0, count * FRAME_SIZE)]);
        let all: Vec<u64> = (0..count).map(|_| frames.alloc().unwrap()).collect();
        let before = crate::testing::reset_heap_peak();
        all.iter().for_each(|&frame| frames.free(frame));
        assert_eq!(crate::testing::heap_peak_of_this_thread(), before, "freeing grew the kernel heap");
    }

    #[test]
    fn no_more_than_the_cap_are_zeroed_ahead() {
        let count = ZEROED_AHEAD_MAX as u64 + 8;
        let mut frames = FrameAllocator::new([(0, count * FRAME_SIZE)]);
        let all: Vec<u64> = (0..count).map(|_| frames.alloc().unwrap()).collect();
        all.iter().for_each(|&frame| frames.free(frame));
        let mut zeroings = 0;
        while frames.zero_one_free(|_| zeroings += 1) {}
        assert_eq!((zeroings, frames.zeroed_ahead()), (ZEROED_AHEAD_MAX, ZEROED_AHEAD_MAX));
        assert_eq!(frames.alloc().map(|frame| all.contains(&frame)), Some(true), "the dirty ones are still handed out");
        assert_eq!(frames.available(), count - 1);
    }
}
