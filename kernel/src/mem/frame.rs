//! The physical frame allocator's bookkeeping: which 4 KiB frames are free.
//!
//! Pure logic over numbers, tested on the host. It never touches the frames;
//! the caller zeroes a frame before any VM can see it (`mem::phys`).

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
        FrameAllocator { ranges, next_range: 0, next_frame, free: Vec::new(), in_use: 0, total }
    }

    /// A free frame's physical address, or `None` when memory is exhausted.
    pub fn alloc(&mut self) -> Option<u64> {
        let frame = match self.free.pop() {
            Some(frame) => frame,
            None => loop {
                let (_, end) = *self.ranges.get(self.next_range)?;
                if self.next_frame < end {
                    let frame = self.next_frame;
                    self.next_frame += FRAME_SIZE;
                    break frame;
                }
                self.next_range += 1;
                self.next_frame = self.ranges.get(self.next_range).map_or(0, |r| r.0);
            },
        };
        self.in_use += 1;
        Some(frame)
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
}
