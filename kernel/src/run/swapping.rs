//! Moving VMs between memory and the swap area (the policy is in
//! `crate::swap`): idle VMs are swapped out, oldest idle first, when free
//! frames run low or a VM's page fault finds none; a swapped-out VM is read
//! back in just before it runs again.
//!
//! A VM's page tables and info page stay resident (the kernel writes its
//! pending events there while it is out); everything else it owns goes.

use super::Kernel;
use crate::kprintln;
use crate::mem::guest::GuestAddr;
use crate::mem::space::TakenPage;
use crate::platform::Platform;
use crate::sched::VmId;
use crate::swap::SwappedPage;
use crate::vm::{State, Vm, fault_status};
use alloc::boxed::Box;
use denali_abi::layout::INFO_PAGE;

/// Exit status of a VM that could not be swapped back in: as one that
/// found no free frame for a page (a page fault's).
const SWAP_IN_FAILED_STATUS: i32 = fault_status(14);

/// Turns a swapped-out VM may wait for room while others run before it
/// pushes a VM in memory out to make room (so no VM is kept out forever).
const MAX_DEFERRALS: u32 = 8;

impl<P: Platform> Kernel<P> {
    /// Notes that VM `id` has just gone idle (a candidate for swapping out).
    pub(super) fn note_idle(&mut self, id: VmId) {
        if self.swap.is_none() {
            return;
        }
        let stamp = self.idle.push(id);
        if let Some(vm) = self.vms[id as usize].as_mut() {
            vm.idle_stamp = stamp;
        }
        // Entries go stale as VMs wake; drop them before they pile up.
        if self.idle.len() > 2 * self.live + 64 {
            let vms = &self.vms;
            self.idle.retain(|id, stamp| is_swappable(vms, id, stamp));
        }
    }

    /// Swaps idle VMs out, oldest idle first, until `wanted` frames are
    /// free. False if it could not free that many.
    pub(super) fn reclaim_idle(&mut self, wanted: u64) -> bool {
        while self.frames.available() < wanted {
            // A full area frees nothing: leave the queue as it is.
            if self.swap.as_ref().is_none_or(|swap| swap.free_slots() == 0) {
                return false;
            }
            let vms = &self.vms;
            let Some(victim) = self.idle.pop_oldest(|id, stamp| is_swappable(vms, id, stamp)) else { return false };
            self.swap_out(victim);
        }
        true
    }

    /// Swaps VMs other than `keep` out until `wanted` frames are free: idle
    /// ones first, and when none is left the resident VM that ran last
    /// (with every runnable VM touching memory at once, memory can be
    /// overcommitted without an idle VM; the one that ran last waits
    /// longest for its next turn). False if it could not free that many
    /// (no swap area, nobody left to swap out, a full area).
    pub(super) fn reclaim(&mut self, wanted: u64, keep: VmId) -> bool {
        if self.reclaim_idle(wanted) {
            return true;
        }
        while self.frames.available() < wanted {
            let Some(victim) = latest_resident(&self.vms, keep) else { return false };
            if !self.swap_out(victim) {
                return false;
            }
        }
        true
    }

    /// Swaps idle VMs out if free frames are below the low watermark.
    pub(super) fn relieve_pressure(&mut self) {
        if self.swap.is_some() && self.frames.available() < self.watermarks.low {
            self.reclaim_idle(self.watermarks.high);
        }
    }

    /// Writes as many of VM `id`'s private pages as the swap area has room
    /// for and frees their frames. False if none was written.
    fn swap_out(&mut self, id: VmId) -> bool {
        if self.state_owner == Some(id) {
            // Its registers go to its state page before the page goes.
            self.save_user_state();
        }
        let (Some(swap), Some(disk), Some(vm)) =
            (self.swap.as_mut(), self.disk.as_mut(), self.vms[id as usize].as_mut())
        else {
            return false;
        };
        let room = usize::try_from(swap.free_slots()).unwrap_or(usize::MAX).min(vm.space.private_pages());
        // The list of what went out is kernel heap: without room for it,
        // nothing goes.
        if vm.swapped.try_reserve_exact(room).is_err() {
            return false;
        }
        let pages = vm.space.take_private(GuestAddr::new(INFO_PAGE), room);
        let (mut written, mut lost) = (0, false);
        for page in pages {
            let slot = swap.alloc().expect("no more pages than free slots were taken");
            // SAFETY: the frame was just unmapped from the VM and is ours
            // until it is freed below; nothing writes it meanwhile.
            if unsafe { disk.write_frame(swap.sector(slot), page.frame) }.is_ok() {
                self.frames.free(page.frame);
                vm.swapped.push(SwappedPage { vaddr: page.vaddr, flags: page.flags, slot });
                written += 1;
                continue;
            }
            // The disk refused the page: put it back where it was (its page
            // tables are still there, so this needs no frame).
            swap.free(slot);
            // SAFETY: the frame is the one take_private handed over for this
            // page, with its flags.
            if unsafe { vm.space.restore_private(&mut self.frames, page) }.is_err() {
                self.frames.free(page.frame);
                lost = true;
            }
        }
        if written > 0 {
            vm.stats.swap_outs += 1;
            vm.stats.pages_swapped_out += written;
            vm.stats.resident_pages -= written;
        }
        if lost {
            kprintln!("denali: vm {id} ({}) lost a page the disk refused to take; stopping it", vm.name);
            self.finish(id, SWAP_IN_FAILED_STATUS);
        }
        written > 0
    }

    /// Reads VM `id`'s swapped pages back in, swapping idle VMs out for
    /// room. Without room, it waits for another turn (a few at most) if
    /// other VMs in memory can run meanwhile. A VM that cannot come back
    /// (no memory even then, or the disk fails) is stopped with that
    /// reason. True if it is resident and can run now.
    pub(super) fn swap_in(&mut self, id: VmId) -> bool {
        let Some(count) = self.vms[id as usize].as_ref().map(|vm| vm.swapped.len() as u64) else { return false };
        if count == 0 {
            return true;
        }
        // Room from idle VMs; failing that, wait a turn while VMs in memory
        // run on (they will go idle or exit) rather than push one of them
        // out at once: that way lies thrashing.
        if !self.reclaim_idle(count + self.watermarks.low) && self.frames.available() < count {
            let others_can_run =
                self.vms.iter().flatten().any(|vm| vm.id != id && vm.state == State::Runnable && vm.swapped.is_empty());
            let vm = self.vms[id as usize].as_mut().expect("checked above");
            if others_can_run && vm.deferrals < MAX_DEFERRALS {
                vm.deferrals += 1;
                self.sched.make_runnable(id);
                return false;
            }
            self.reclaim(count, id);
        }
        let (Some(swap), Some(disk), Some(vm)) =
            (self.swap.as_mut(), self.disk.as_mut(), self.vms[id as usize].as_mut())
        else {
            return false;
        };
        vm.deferrals = 0;
        let mut problem = None;
        while let Some(page) = vm.swapped.pop() {
            let Some(frame) = self.frames.alloc() else {
                problem = Some("no free memory");
                vm.swapped.push(page);
                break;
            };
            let taken = TakenPage { vaddr: page.vaddr, frame, flags: page.flags };
            // SAFETY: the frame was just allocated: ours, mapped nowhere.
            if unsafe { disk.read_frame(swap.sector(page.slot), frame) }.is_err() {
                problem = Some("the disk failed");
            // SAFETY: the frame holds the page's contents and is handed
            // over with the flags take_private gave.
            } else if unsafe { vm.space.restore_private(&mut self.frames, taken) }.is_err() {
                problem = Some("its page could not be mapped again");
            }
            if problem.is_some() {
                self.frames.free(frame);
                vm.swapped.push(page);
                break;
            }
            swap.free(page.slot);
            vm.stats.resident_pages += 1;
        }
        match problem {
            None => {
                // Give the list's memory back to the kernel heap.
                vm.swapped = alloc::vec::Vec::new();
                true
            }
            Some(why) => {
                kprintln!("denali: vm {id} ({}) could not be swapped back in ({why}); stopping it", vm.name);
                self.finish(id, SWAP_IN_FAILED_STATUS);
                false
            }
        }
    }
}

/// The resident VM other than `keep` that ran last, if one has pages to
/// give.
fn latest_resident(vms: &[Option<Box<Vm>>], keep: VmId) -> Option<VmId> {
    vms.iter()
        .flatten()
        .filter(|vm| vm.id != keep && vm.has_pages_to_swap())
        .max_by_key(|vm| vm.last_ran)
        .map(|vm| vm.id)
}

/// Whether VM `id` is still as it was when it went idle with `stamp`, and
/// has pages to swap out.
fn is_swappable(vms: &[Option<Box<Vm>>], id: VmId, stamp: u64) -> bool {
    vms.get(id as usize)
        .and_then(Option::as_ref)
        .is_some_and(|vm| vm.state == State::Idle && vm.idle_stamp == stamp && vm.has_pages_to_swap())
}
