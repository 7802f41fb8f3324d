//! Starting VMs as memory holds them (load control). A VM that has never
//! run starts only when free memory holds what it is expected to take
//! while booting, beside what the VMs booting now may still take; until
//! then it waits, in order, in a queue of its own rather than in the run
//! queue, so thousands of waiting VMs cost nothing while the others run.
//!
//! Without this, a boot of more VMs than memory holds started every VM it
//! could fit at first, and those VMs, still growing as they booted, pushed
//! each other out to the swap area: with 10,000 web VMs in 128 MiB the
//! boot stalled, every VM in memory booting and none finishing.
//!
//! What a VM is expected to take is learnt from its image's VMs: the most
//! frames (page tables and pages) one held while booting, once one of them
//! has booted cleanly (first waited for an event, or exited with status
//! 0). Before that, a VM's first turns show only the start of its growth,
//! and it is taken to need all its flat space may hold. A VM stops counting
//! as booting when it first waits for an event, exits, or has had
//! [`BOOT_TURNS_MAX`] turns (a VM that computes for ever does not hold the
//! others back for ever; it teaches nothing then).

use super::Kernel;
use crate::platform::Platform;
use crate::sched::VmId;
use alloc::collections::TryReserveError;
use alloc::collections::VecDeque;

/// Turns on the CPU after which a VM that has not yet waited for an event
/// no longer counts as booting.
pub const BOOT_TURNS_MAX: u32 = 64;

/// VMs waiting to start, and the VMs booting.
#[derive(Debug, Default)]
pub(super) struct Starts {
    /// VMs that have never run, waiting for memory, first come first.
    waiting: VecDeque<VmId>,
    /// VMs started that are still booting.
    booting: u64,
    /// Frames the booting VMs may still take: for each, what it was
    /// expected to take when it started, less what it holds.
    still_to_take: u64,
    /// `booting` when a VM last could not start: nothing is tried again
    /// (no idle VM swapped out for it) until that changes.
    stuck_at: Option<u64>,
}

impl Starts {
    /// Reserves room for `count` waiting VMs, so the queue never grows
    /// while VMs run.
    pub(super) fn reserve(&mut self, count: usize) -> Result<(), TryReserveError> {
        self.waiting.try_reserve_exact(count)
    }

    /// VMs started that are still booting, and what they may still take.
    #[cfg(test)]
    pub(super) fn booting(&self) -> (u64, u64) {
        (self.booting, self.still_to_take)
    }

    /// Whether a VM waits to start.
    pub(super) fn has_waiting(&self) -> bool {
        !self.waiting.is_empty()
    }
}

/// Free frames a VM expected to take `expected` frames while booting must
/// find to start: those, the watermark kept free, and what the VMs booting
/// now may still take.
pub fn frames_to_start(expected: u64, low: u64, still_to_take: u64) -> u64 {
    expected.saturating_add(low).saturating_add(still_to_take)
}

impl<P: Platform> Kernel<P> {
    /// Whether VM `id`, which has never run and needs `count` frames to
    /// come in, may start now: nothing else can run; or no VM could start
    /// since the booting VMs last changed, and no VM is booting or free
    /// memory (after swapping idle VMs out) holds [`frames_to_start`].
    pub(super) fn may_start(&mut self, id: VmId, count: u64) -> bool {
        if !self.sched.has_runnable() {
            return true;
        }
        if self.starts.stuck_at == Some(self.starts.booting) {
            return false;
        }
        if self.starts.booting == 0 {
            return true;
        }
        let Some(vm) = self.vms[id as usize].as_ref() else { return true };
        let expected = self.templates[vm.template as usize].expected_boot_frames().max(count);
        let wanted = frames_to_start(expected, self.watermarks.low, self.starts.still_to_take);
        // Idle VMs are swapped out only for a start memory can hold at all.
        let fits = wanted <= self.frames.total() && (self.frames.available() >= wanted || self.reclaim_idle(wanted));
        if !fits {
            self.starts.stuck_at = Some(self.starts.booting);
        }
        fits
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
    /// against what it took. One that must wait for room after all (no
    /// VM booting, but memory short) goes to the run queue, and the rest
    /// wait on.
    pub(super) fn start_waiting(&mut self) {
        while let Some(&id) = self.starts.waiting.front() {
            if !self.vms[id as usize].as_ref().is_some_and(|vm| vm.is_unborn()) {
                // Stopped while it waited.
                self.starts.waiting.pop_front();
                continue;
            }
            let count = self.frames_to_bring_in(id);
            if !self.may_start(id, count) {
                return;
            }
            self.starts.waiting.pop_front();
            if !self.swap_in(id) {
                // Waiting for room in the run queue (or stopped).
                self.starts.stuck_at = Some(self.starts.booting);
                return;
            }
            self.sched.make_runnable(id);
        }
    }

    /// Notes that VM `id` has just come into memory for the first time.
    pub(super) fn note_booting(&mut self, id: VmId) {
        let Some(vm) = self.vms[id as usize].as_mut() else { return };
        let expected = self.templates[vm.template as usize].expected_boot_frames();
        vm.booting = true;
        vm.boot_expected = u32::try_from(expected).unwrap_or(u32::MAX);
        vm.boot_left = 0;
        self.starts.booting += 1;
        self.starts.stuck_at = None;
        self.update_still_to_take(id);
    }

    /// After a turn of booting VM `id` on the CPU: learns how much its
    /// image's VMs take, and after [`BOOT_TURNS_MAX`] turns stops counting
    /// it as booting.
    pub(super) fn note_boot_turn(&mut self, id: VmId) {
        let Some(vm) = self.vms[id as usize].as_mut().filter(|vm| vm.booting) else { return };
        vm.boot_turns = vm.boot_turns.saturating_add(1);
        let turns = vm.boot_turns;
        self.learn_boot_frames(id, false);
        self.update_still_to_take(id);
        if turns >= BOOT_TURNS_MAX {
            self.note_booted(id, false);
        }
    }

    /// Notes that VM `id` no longer boots, if it did: it waits for an
    /// event for the first time or exits (`clean`: then its image's VMs
    /// are known to boot in what it held), or it is stopped or has had its
    /// turns.
    pub(super) fn note_booted(&mut self, id: VmId, clean: bool) {
        let Some(vm) = self.vms[id as usize].as_mut().filter(|vm| vm.booting) else { return };
        vm.booting = false;
        self.starts.booting -= 1;
        self.starts.still_to_take -= u64::from(core::mem::take(&mut vm.boot_left));
        self.starts.stuck_at = None;
        self.learn_boot_frames(id, clean);
    }

    /// Sets booting VM `id`'s share of what the booting VMs may still take
    /// to what it was expected to take less what it holds now.
    fn update_still_to_take(&mut self, id: VmId) {
        let Some(vm) = self.vms[id as usize].as_mut() else { return };
        let left = u64::from(vm.boot_expected).saturating_sub(frames_held(vm));
        self.starts.still_to_take = self.starts.still_to_take - u64::from(vm.boot_left) + left;
        vm.boot_left = left as u32;
    }

    /// Raises VM `id`'s image's boot size to the frames the VM holds now,
    /// and notes whether it has `booted` cleanly. A VM a debugger holds
    /// (its whole image made private for breakpoints) teaches nothing.
    fn learn_boot_frames(&mut self, id: VmId, booted: bool) {
        let Some(vm) = self.vms[id as usize].as_ref().filter(|vm| !vm.pinned) else { return };
        let held = frames_held(vm);
        self.templates[vm.template as usize].note_boot_frames(held, booted);
    }
}

/// Frames VM `vm` holds: its page tables and private pages, in memory or
/// swapped out.
fn frames_held(vm: &crate::vm::Vm) -> u64 {
    let resident = vm.space.as_ref().map_or(0, |space| space.private_pages() as u64 + space.table_frames());
    resident + vm.swapped.len() as u64
}

#[cfg(test)]
mod tests {
    use super::frames_to_start;

    #[test]
    fn a_start_waits_for_what_it_takes_the_watermark_and_what_booting_vms_may_still_take() {
        assert_eq!(frames_to_start(80, 64, 0), 144);
        assert_eq!(frames_to_start(80, 64, 150), 294);
        assert_eq!(frames_to_start(80, 64, u64::MAX), u64::MAX, "saturates rather than wraps");
    }
}
