//! The physical frame allocator's bookkeeping: which 4 KiB frames are free.
//!
//! Pure logic over numbers, tested on the host. It never touches the frames;
//! the caller zeroes a frame before any VM can see it (`mem::phys`), unless
//! the allocator says it is one the machine handed over zeroed and nobody
//! has had since.

use alloc::vec::Vec;

/// Size of a frame.
pub const FRAME_SIZE: u64 = 4096;

/// Hands out 4 KiB frames from a set of physical ranges: first frames that
/// were freed, then fresh ones from the ranges in order.
#[derive(Debug, Default)]
pub struct FrameAllocator {
    ranges: Vec<(u64, u64)>,
    next_range: usize,
    next_frame: u64,
    free: Vec<u64>,
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
        FrameAllocator { ranges, next_range: 0, next_frame, free: Vec::new(), in_use: 0, total, fresh_are_zero: false }
    }

    /// The machine handed the ranges over zeroed, and nothing has written
    /// a frame of them that this allocator has not handed out.
    pub fn set_fresh_are_zero(&mut self) {
        self.fresh_are_zero = true;
    }

    /// A free frame's physical address, or `None` when memory is exhausted.
    pub fn alloc(&mut self) -> Option<u64> {
        self.alloc_knowing_zero().map(|(frame, _)| frame)
    }

    /// [`FrameAllocator::alloc`], and whether the frame is known to be
    /// zero: one never handed out, from ranges the machine zeroed. A frame
    /// that was freed never is.
    pub fn alloc_knowing_zero(&mut self) -> Option<(u64, bool)> {
        let taken = match self.free.pop() {
            Some(frame) => (frame, false),
            None => loop {
                let (_, end) = *self.ranges.get(self.next_range)?;
                if self.next_frame < end {
                    let frame = self.next_frame;
                    self.next_frame += FRAME_SIZE;
                    break (frame, self.fresh_are_zero);
                }
                self.next_range += 1;
                self.next_frame = self.ranges.get(self.next_range).map_or(0, |r| r.0);
            },
        };
        self.in_use += 1;
        Some(taken)
    }

    /// Takes back a frame from [`FrameAllocator::alloc`].
    pub fn free(&mut self, frame: u64) {
        debug_assert!(frame.is_multiple_of(FRAME_SIZE));
        self.in_use -= 1;
        self.free.push(frame);
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
        assert_eq!(frames.alloc_knowing_zero(), Some((0x2000, false)), "freed: it held someone's data");
        assert_eq!(frames.alloc_knowing_zero(), Some((0x10000, true)), "the next range, fresh");
        frames.free(0x1000);
        assert_eq!(frames.alloc_knowing_zero(), Some((0x1000, false)));
        assert_eq!(frames.alloc_knowing_zero(), None);
    }
}
