//! Scheduling policy: which VM runs next, and which alarms have expired.
//!
//! Pure bookkeeping over VM ids, tested on the host. The run queue holds only
//! runnable VMs and alarms live in a min-heap, so an idle VM costs nothing
//! and no operation walks all VMs.

use alloc::collections::{BinaryHeap, VecDeque};
use alloc::vec::Vec;
use core::cmp::Reverse;

/// How long a VM runs before another runnable VM gets the CPU.
pub const TIME_SLICE_NS: u64 = 10_000_000;
/// A slice shorter than this is not worth resuming: the VM goes to the back.
pub const MIN_SLICE_NS: u64 = 200_000;

/// Identifies a VM within one boot.
pub type VmId = u32;

/// Run queue and alarm heap.
#[derive(Debug, Default)]
pub struct Scheduler {
    runnable: VecDeque<VmId>,
    queued: Vec<bool>,
    alarms: BinaryHeap<Reverse<(u64, VmId)>>,
    /// The current deadline of each VM (0 = none); heap entries that do not
    /// match it are stale and skipped.
    deadline: Vec<u64>,
}

impl Scheduler {
    /// An empty scheduler.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reserves room for `count` VMs.
    pub fn reserve(&mut self, count: usize) -> Result<(), alloc::collections::TryReserveError> {
        self.runnable.try_reserve_exact(count)?;
        self.queued.try_reserve_exact(count)?;
        self.deadline.try_reserve_exact(count)?;
        self.alarms.try_reserve(count)
    }

    fn grow(&mut self, id: VmId) {
        let needed = id as usize + 1;
        if self.queued.len() < needed {
            self.queued.resize(needed, false);
            self.deadline.resize(needed, 0);
        }
    }

    /// Puts `id` at the back of the run queue (once, however often called).
    pub fn make_runnable(&mut self, id: VmId) {
        self.grow(id);
        if !self.queued[id as usize] {
            self.queued[id as usize] = true;
            self.runnable.push_back(id);
        }
    }

    /// Puts `id` at the front of the run queue: a VM woken by an event runs
    /// before the ones that used up their slice, so it answers promptly.
    pub fn wake(&mut self, id: VmId) {
        self.grow(id);
        if !self.queued[id as usize] {
            self.queued[id as usize] = true;
            self.runnable.push_front(id);
        }
    }

    /// The next VM to run, removed from the queue.
    pub fn pick_next(&mut self) -> Option<VmId> {
        let id = self.runnable.pop_front()?;
        self.queued[id as usize] = false;
        Some(id)
    }

    /// Whether any VM is runnable.
    pub fn has_runnable(&self) -> bool {
        !self.runnable.is_empty()
    }

    /// Sets (or with 0, cancels) `id`'s alarm.
    pub fn set_alarm(&mut self, id: VmId, deadline: u64) {
        self.grow(id);
        self.deadline[id as usize] = deadline;
        if deadline != 0 {
            self.alarms.push(Reverse((deadline, id)));
        }
    }

    /// Forgets everything about `id` (it exited).
    pub fn remove(&mut self, id: VmId) {
        self.set_alarm(id, 0);
    }

    /// The earliest live deadline.
    pub fn next_deadline(&mut self) -> Option<u64> {
        self.drop_stale();
        self.alarms.peek().map(|Reverse((deadline, _))| *deadline)
    }

    /// Pops one alarm that has expired by `now`.
    pub fn pop_expired(&mut self, now: u64) -> Option<VmId> {
        self.drop_stale();
        let Reverse((deadline, id)) = *self.alarms.peek()?;
        if deadline > now {
            return None;
        }
        self.alarms.pop();
        self.deadline[id as usize] = 0;
        Some(id)
    }

    fn drop_stale(&mut self) {
        while let Some(Reverse((deadline, id))) = self.alarms.peek() {
            if self.deadline[*id as usize] == *deadline {
                break;
            }
            self.alarms.pop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_queue_is_fifo_without_duplicates() {
        let mut s = Scheduler::new();
        s.make_runnable(2);
        s.make_runnable(0);
        s.make_runnable(2);
        assert_eq!(s.pick_next(), Some(2));
        assert_eq!(s.pick_next(), Some(0));
        assert_eq!(s.pick_next(), None);
    }

    #[test]
    fn woken_vms_run_before_preempted_ones() {
        let mut s = Scheduler::new();
        s.make_runnable(1);
        s.make_runnable(2);
        s.wake(3);
        s.wake(1); // already queued: stays where it is
        assert_eq!(s.pick_next(), Some(3));
        assert_eq!(s.pick_next(), Some(1));
        assert_eq!(s.pick_next(), Some(2));
    }

    #[test]
    fn alarms_fire_in_deadline_order_and_can_be_replaced() {
        let mut s = Scheduler::new();
        s.set_alarm(1, 300);
        s.set_alarm(2, 100);
        s.set_alarm(3, 200);
        s.set_alarm(3, 50); // replaces 200
        s.set_alarm(2, 0); // cancels
        assert_eq!(s.next_deadline(), Some(50));
        assert_eq!(s.pop_expired(250), Some(3));
        assert_eq!(s.pop_expired(250), None);
        assert_eq!(s.pop_expired(300), Some(1));
        assert_eq!(s.next_deadline(), None);
    }
}
