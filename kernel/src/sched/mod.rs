//! Scheduling policy: which VM runs next, and which alarms have expired.
//!
//! Pure bookkeeping over VM ids, tested on the host. The run queue holds only
//! runnable VMs and alarms live in a min-heap with one entry per VM, so an
//! idle VM costs nothing, no operation walks all VMs, and no hypercall makes
//! the scheduler allocate: everything is sized for every VM at admission.

use crate::collections::IndexedHeap;
use alloc::collections::{TryReserveError, VecDeque};
use alloc::vec::Vec;

/// How long a VM runs before another runnable VM gets the CPU.
pub const TIME_SLICE_NS: u64 = 10_000_000;
/// A slice shorter than this is not worth resuming: the VM goes to the back.
pub const MIN_SLICE_NS: u64 = 200_000;
/// Woken VMs run before the others, but once they have used this much CPU
/// in a row one VM from the main queue runs, so a stream of wake-ups cannot
/// starve a VM that used its slice up. Counted in time, not turns: VMs that
/// wake, answer and sleep again in microseconds never make a VM that slept
/// wait behind a spinner's whole slice. (A resumed VM only finishes the
/// slice an event cut short, so its time does not count.)
pub const JUMP_LIMIT_NS: u64 = TIME_SLICE_NS;

/// Identifies a VM within one boot.
pub type VmId = u32;

/// Run queues and the alarm clock.
#[derive(Debug, Default)]
pub struct Scheduler {
    /// VMs woken by an event, first come first served.
    woken: VecDeque<VmId>,
    /// VMs whose slice an event cut short, to run the rest of it.
    resumed: VecDeque<VmId>,
    /// VMs that used their slice up, yielded or were just made.
    runnable: VecDeque<VmId>,
    /// CPU time woken VMs used in a row while `runnable` waited.
    jumped_ns: u64,
    /// Whether the VM picked last was woken and went ahead of a waiting
    /// `runnable`.
    jumped: bool,
    /// Whether each VM is in one of the queues (so it is in at most one,
    /// once: the queues never hold more entries than VMs).
    queued: Vec<bool>,
    /// Each VM's alarm deadline, earliest first.
    alarms: IndexedHeap<u64>,
}

impl Scheduler {
    /// An empty scheduler.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes room for VMs with ids below `count`; afterwards nothing the
    /// scheduler does for them allocates.
    pub fn reserve(&mut self, count: usize) -> Result<(), TryReserveError> {
        self.runnable.try_reserve_exact(count.saturating_sub(self.runnable.len()))?;
        self.woken.try_reserve_exact(count.saturating_sub(self.woken.len()))?;
        self.resumed.try_reserve_exact(count.saturating_sub(self.resumed.len()))?;
        self.queued.try_reserve_exact(count.saturating_sub(self.queued.len()))?;
        self.queued.resize(self.queued.len().max(count), false);
        self.alarms.reserve(count)
    }

    /// Room for `id`, if the kernel did not reserve it up front (host
    /// tests); the kernel reserves every VM before the first runs.
    fn grow(&mut self, id: VmId) {
        if id as usize >= self.queued.len() {
            self.reserve(id as usize + 1).expect("room for a VM id");
        }
    }

    /// Puts `id` at the back of the run queue (once, however often called).
    pub fn make_runnable(&mut self, id: VmId) {
        self.grow(id);
        enqueue(&mut self.queued, &mut self.runnable, id);
    }

    /// Queues `id` as woken by an event: woken VMs run before the ones that
    /// used up their slice, so they answer promptly, and among themselves in
    /// the order they woke, so none waits behind later wake-ups.
    pub fn wake(&mut self, id: VmId) {
        self.grow(id);
        enqueue(&mut self.queued, &mut self.woken, id);
    }

    /// Queues `id`, whose slice an event cut short: it runs the rest after
    /// the VMs woken by events, so a VM that spins cannot delay the answer
    /// of one that slept, but before the VMs that used their slice up.
    pub fn resume(&mut self, id: VmId) {
        self.grow(id);
        enqueue(&mut self.queued, &mut self.resumed, id);
    }

    /// The next VM to run, removed from its queue.
    pub fn pick_next(&mut self) -> Option<VmId> {
        let jump = !self.woken.is_empty() || !self.resumed.is_empty();
        let go_ahead = jump && (self.runnable.is_empty() || self.jumped_ns < JUMP_LIMIT_NS);
        if !go_ahead || self.runnable.is_empty() {
            self.jumped_ns = 0;
        }
        self.jumped = go_ahead && !self.woken.is_empty() && !self.runnable.is_empty();
        let id = if go_ahead {
            self.woken.pop_front().or_else(|| self.resumed.pop_front())?
        } else {
            self.runnable.pop_front()?
        };
        self.queued[id as usize] = false;
        Some(id)
    }

    /// The VM picked last ran for `ns` (counted against [`JUMP_LIMIT_NS`]
    /// if it went ahead of the main queue).
    pub fn ran(&mut self, ns: u64) {
        if self.jumped {
            self.jumped_ns = self.jumped_ns.saturating_add(ns);
        }
    }

    /// Whether any VM is runnable.
    pub fn has_runnable(&self) -> bool {
        !self.runnable.is_empty() || !self.woken.is_empty() || !self.resumed.is_empty()
    }

    /// Sets (or with 0, cancels) `id`'s alarm: a VM has one alarm, so a new
    /// deadline replaces the old one.
    pub fn set_alarm(&mut self, id: VmId, deadline: u64) {
        self.grow(id);
        if deadline == 0 {
            self.alarms.remove(id);
        } else {
            self.alarms.set(id, deadline);
        }
    }

    /// Forgets everything about `id` (it exited).
    pub fn remove(&mut self, id: VmId) {
        self.set_alarm(id, 0);
    }

    /// The earliest deadline.
    pub fn next_deadline(&self) -> Option<u64> {
        self.alarms.peek().map(|(deadline, _)| deadline)
    }

    /// Pops one alarm that has expired by `now`.
    pub fn pop_expired(&mut self, now: u64) -> Option<VmId> {
        let (deadline, id) = self.alarms.peek()?;
        (deadline <= now).then(|| {
            self.alarms.remove(id);
            id
        })
    }

    /// Alarms set.
    pub fn alarms_set(&self) -> usize {
        self.alarms.len()
    }
}

/// Puts `id` at the back of `queue` unless it is in a queue already.
fn enqueue(queued: &mut [bool], queue: &mut VecDeque<VmId>, id: VmId) {
    if !queued[id as usize] {
        queued[id as usize] = true;
        queue.push_back(id);
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
            s.ran(TIME_SLICE_NS / 2);
        }
        // Two half slices (the limit) of woken VMs, then the main queue.
        assert_eq!(picked[2], 100, "{picked:?}");
    }

    #[test]
    fn finishing_a_cut_slice_does_not_count_against_woken_vms() {
        let mut s = Scheduler::new();
        s.make_runnable(100);
        s.resume(1);
        assert_eq!(s.pick_next(), Some(1));
        s.ran(TIME_SLICE_NS);
        s.wake(2);
        assert_eq!(s.pick_next(), Some(2));
    }

    #[test]
    fn vms_that_wake_and_sleep_quickly_keep_going_first() {
        let mut s = Scheduler::new();
        s.make_runnable(100);
        for id in 0..10_000 {
            s.wake(id);
            assert_eq!(s.pick_next(), Some(id));
            s.ran(1_000);
        }
    }

    #[test]
    fn woken_vms_run_before_resumed_ones_and_resumed_before_the_main_queue() {
        let mut s = Scheduler::new();
        s.make_runnable(1);
        s.resume(2);
        s.wake(3);
        s.resume(3); // already queued: stays where it is
        assert_eq!([s.pick_next(), s.pick_next(), s.pick_next()], [Some(3), Some(2), Some(1)]);
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

    #[test]
    fn a_million_alarms_cost_no_memory() {
        let mut s = Scheduler::new();
        s.reserve(3).unwrap();
        for deadline in 1..=1_000_000u64 {
            s.set_alarm(1, u64::MAX - deadline);
        }
        assert_eq!(s.alarms_set(), 1, "one VM, one alarm");
        assert_eq!(s.next_deadline(), Some(u64::MAX - 1_000_000));
    }
}
