//! Starting VMs as memory holds them (load control). A VM that has never
//! run starts only when free memory holds it and what the VMs booting now
//! are still expected to take; until then it waits, in order, in a queue
//! of its own rather than in the run queue, so thousands of waiting VMs
//! cost nothing while the others run.
//!
//! Without this, a boot of more VMs than memory holds started every VM it
//! could fit at first, and those VMs, still growing as they booted, pushed
//! each other out to the swap area: with 10,000 web VMs in 128 MiB the
//! boot stalled, every VM in memory booting and none finishing.
//!
//! What a VM is expected to take is learnt from its image's VMs: the most
//! frames (page tables and pages) one held while booting. Until one of
//! them has booted that is not known (a VM's first turns show only the
//! start of its growth), and each is taken to need all its flat space
//! may hold. A VM boots until it first waits for an event, exits, or has had
//! [`BOOT_TURNS_MAX`] turns (a VM that computes forever does not hold the
//! others back for ever).

use super::Kernel;
use crate::platform::Platform;
use crate::sched::VmId;
use alloc::collections::TryReserveError;
use alloc::collections::VecDeque;

/// Turns on the CPU after which a VM that has not yet waited for an event
/// counts as booted.
pub const BOOT_TURNS_MAX: u32 = 64;

/// VMs waiting to start, and how many are booting.
#[derive(Debug, Default)]
pub(super) struct Starts {
    /// VMs that have never run, waiting for memory, first come first.
    waiting: VecDeque<VmId>,
    /// VMs started that have not yet booted.
    booting: u64,
}

impl Starts {
    /// Reserves room for `count` waiting VMs, so the queue never grows
    /// while VMs run.
    pub(super) fn reserve(&mut self, count: usize) -> Result<(), TryReserveError> {
        self.waiting.try_reserve_exact(count)
    }

    /// VMs started that have not yet booted.
    #[cfg(test)]
    pub(super) fn booting(&self) -> u64 {
        self.booting
    }

    /// Whether a VM waits to start.
    pub(super) fn has_waiting(&self) -> bool {
        !self.waiting.is_empty()
    }
}

/// Free frames a VM that needs `count` frames to start must find: its own,
/// the watermark kept free, and `expected` more for each of the `booting`
/// VMs (the most one of them may still take).
pub fn frames_to_start(count: u64, low: u64, booting: u64, expected: u64) -> u64 {
    count.saturating_add(low).saturating_add(booting.saturating_mul(expected))
}

impl<P: Platform> Kernel<P> {
    /// Whether VM `id`, which has never run and needs `count` frames to
    /// start, may start now: no VM is booting, nothing else can run, or
    /// free memory (after swapping idle VMs out) holds it and the booting
    /// VMs' expected growth.
    pub(super) fn may_start(&mut self, id: VmId, count: u64) -> bool {
        if self.starts.booting == 0 || !self.sched.has_runnable() {
            return true;
        }
        let Some(vm) = self.vms[id as usize].as_ref() else { return true };
        let expected = self.templates[vm.template as usize].expected_boot_frames();
        let wanted = frames_to_start(count, self.watermarks.low, self.starts.booting, expected);
        self.reclaim_idle(wanted) || self.frames.available() >= wanted
    }

    /// Puts VM `id` at the back of the queue of VMs waiting to start (the
    /// run queue if the start queue cannot grow).
    pub(super) fn wait_to_start(&mut self, id: VmId) {
        if self.starts.waiting.try_reserve(1).is_ok() {
            self.starts.waiting.push_back(id);
        } else {
            self.sched.make_runnable(id);
        }
    }

    /// Starts waiting VMs, first come first, while [`Kernel::may_start`]
    /// lets them: each comes into memory now, so the next is weighed
    /// against what it took.
    pub(super) fn start_waiting(&mut self) {
        while let Some(&id) = self.starts.waiting.front() {
            if self.vms[id as usize].as_ref().is_some_and(|vm| vm.is_unborn()) {
                let count = self.frames_to_bring_in(id);
                if !self.may_start(id, count) {
                    return;
                }
                self.starts.waiting.pop_front();
                if self.swap_in(id) {
                    self.sched.make_runnable(id);
                }
            } else {
                // Stopped while it waited.
                self.starts.waiting.pop_front();
            }
        }
    }

    /// Notes that VM `id` has just come into memory for the first time.
    pub(super) fn note_booting(&mut self, id: VmId) {
        if let Some(vm) = self.vms[id as usize].as_mut() {
            vm.booting = true;
            self.starts.booting += 1;
        }
    }

    /// Learns from booting VM `id` after a turn on the CPU how much its
    /// image's VMs take to boot; after [`BOOT_TURNS_MAX`] turns it counts
    /// as booted.
    pub(super) fn note_boot_turn(&mut self, id: VmId) {
        let Some(vm) = self.vms[id as usize].as_mut().filter(|vm| vm.booting) else { return };
        vm.boot_turns = vm.boot_turns.saturating_add(1);
        let turns = vm.boot_turns;
        self.learn_boot_frames(id, false);
        if turns >= BOOT_TURNS_MAX {
            self.note_booted(id);
        }
    }

    /// Notes that VM `id` has booted (it waits for an event for the first
    /// time, or exits), if it was booting.
    pub(super) fn note_booted(&mut self, id: VmId) {
        let Some(vm) = self.vms[id as usize].as_mut().filter(|vm| vm.booting) else { return };
        vm.booting = false;
        self.starts.booting -= 1;
        self.learn_boot_frames(id, true);
    }

    /// Raises VM `id`'s image's boot size to the frames the VM holds now,
    /// and notes whether it has `booted`.
    fn learn_boot_frames(&mut self, id: VmId, booted: bool) {
        let Some(vm) = self.vms[id as usize].as_ref() else { return };
        let held = vm.space.as_ref().map_or(0, |space| space.private_pages() as u64 + space.table_frames());
        self.templates[vm.template as usize].note_boot_frames(held, booted);
    }
}

#[cfg(test)]
mod tests {
    use super::frames_to_start;

    #[test]
    fn a_start_waits_for_its_own_frames_the_watermark_and_each_booting_vms_growth() {
        assert_eq!(frames_to_start(10, 64, 0, 80), 74);
        assert_eq!(frames_to_start(10, 64, 3, 80), 314);
        assert_eq!(frames_to_start(10, 64, u64::MAX, 80), u64::MAX, "saturates rather than wraps");
    }
}
