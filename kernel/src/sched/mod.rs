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
/// Woken VMs run before the others, but after this many in a row one VM
/// from the main queue runs, so a stream of wake-ups cannot starve a VM
/// that used its slice up.
pub const WOKEN_BURST: u32 = 8;

/// Identifies a VM within one boot.
pub type VmId = u32;

/// Run queues and alarm heap.
#[derive(Debug, Default)]
pub struct Scheduler {
    /// VMs woken by an event, first come first served.
    woken: VecDeque<VmId>,
    /// VMs that used their slice up, yielded or were just made.
    runnable: VecDeque<VmId>,
    /// Woken VMs picked in a row while `runnable` waited.
    woken_streak: u32,
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
        self.woken.try_reserve_exact(count)?;
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

    /// Queues `id` as woken by an event: woken VMs run before the ones that
    /// used up their slice, so they answer promptly, and among themselves in
    /// the order they woke, so none waits behind later wake-ups.
    pub fn wake(&mut self, id: VmId) {
        self.grow(id);
        if !self.queued[id as usize] {
            self.queued[id as usize] = true;
            self.woken.push_back(id);
        }
    }

    /// The next VM to run, removed from its queue.
    pub fn pick_next(&mut self) -> Option<VmId> {
        let take_woken = !self.woken.is_empty() && (self.runnable.is_empty() || self.woken_streak < WOKEN_BURST);
        let id = if take_woken {
            self.woken_streak = if self.runnable.is_empty() { 0 } else { self.woken_streak + 1 };
            self.woken.pop_front()?
        } else {
            self.woken_streak = 0;
            self.runnable.pop_front()?
        };
        self.queued[id as usize] = false;
        Some(id)
    }

    /// Whether any VM is runnable.
    pub fn has_runnable(&self) -> bool {
        !self.runnable.is_empty() || !self.woken.is_empty()
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
    fn woken_vms_run_first_in_the_order_they_woke() {
        let mut s = Scheduler::new();
        s.make_runnable(9);
        s.wake(1);
        s.wake(2);
        s.wake(3);
        assert_eq!([s.pick_next(), s.pick_next(), s.pick_next()], [Some(1), Some(2), Some(3)]);
        assert_eq!(s.pick_next(), Some(9));
    }

    #[test]
    fn a_stream_of_wake_ups_does_not_starve_the_main_queue() {
        let mut s = Scheduler::new();
        s.make_runnable(100);
        let mut picked = Vec::new();
        for id in 0..20 {
            s.wake(id);
            picked.push(s.pick_next().unwrap());
        }
        assert!(picked[..=WOKEN_BURST as usize].contains(&100), "{picked:?}");
    }

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
