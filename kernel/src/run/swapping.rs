//! Moving VMs between memory and the swap area (the policy is in
//! `crate::swap`): idle VMs are swapped out, oldest idle first, when free
//! frames run low or a VM's page fault finds none; a swapped-out VM is read
//! back in just before it runs again.
//!
//! An idle VM whose pages all fit in the swap area goes whole: its info
//! page and CPU state page with the rest, and its page tables are freed, so
//! that it keeps only its record in memory (its pending events wait there,
//! and it gets fresh tables from its image's when it comes back). A VM
//! pushed out while runnable keeps its tables and info page.

use super::Kernel;
use crate::kprintln;
use crate::mem::guest::GuestAddr;
use crate::mem::space::TakenPage;
use crate::platform::Platform;
use crate::sched::VmId;
use crate::swap::{FRAMES_PER_TRANSFER, SwappedPage};
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
            if !self.swap_out_oldest_idle() {
                return false;
            }
        }
        true
    }

    /// Swaps out the VM idle longest. False if there is none, or the swap
    /// area is full (it frees nothing then: the queue stays as it is).
    pub(super) fn swap_out_oldest_idle(&mut self) -> bool {
        if self.swap.as_ref().is_none_or(|swap| swap.free_slots() == 0) {
            return false;
        }
        let vms = &self.vms;
        let Some(victim) = self.idle.pop_oldest(|id, stamp| is_swappable(vms, id, stamp)) else { return false };
        self.swap_out(victim);
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

    /// After a VM's turn: swaps idle VMs out until free frames are back at
    /// the low watermark, if they fell below it. A VM swapped in takes from
    /// that reserve at once, and this gives it back a VM or two at a time,
    /// after the VM that came in has answered what woke it.
    pub(super) fn relieve_pressure(&mut self) {
        if self.swap.is_some() && self.frames.available() < self.watermarks.low {
            self.reclaim_idle(self.watermarks.low);
        }
    }

    /// Writes as many of VM `id`'s private pages as the swap area has room
    /// for and frees their frames: to runs of consecutive slots, a run a
    /// request. False if none was written.
    fn swap_out(&mut self, id: VmId) -> bool {
        let started = self.now();
        let written = self.write_out(id);
        self.swap_counters.out_ns += self.now() - started;
        written
    }

    /// [`Kernel::swap_out`]'s work.
    fn write_out(&mut self, id: VmId) -> bool {
        if self.state_owner == Some(id) {
            // Its registers go to its state page before the page goes.
            self.save_user_state();
        }
        let (Some(swap), Some(disk), Some(vm)) =
            (self.swap.as_mut(), self.disk.as_mut(), self.vms[id as usize].as_mut())
        else {
            return false;
        };
        let Some(space) = vm.space.as_mut() else { return false };
        let private = space.private_pages();
        let room = usize::try_from(swap.free_slots()).unwrap_or(usize::MAX).min(private);
        let whole = vm.state == State::Idle && room == private;
        // The list of what went out is kernel heap: without room for it,
        // nothing goes.
        if vm.swapped.try_reserve_exact(room).is_err() {
            return false;
        }
        let keep = (!whole).then_some(GuestAddr::new(INFO_PAGE));
        let pages = space.take_private(keep, room);
        let per_transfer = disk.frames_per_transfer().clamp(1, FRAMES_PER_TRANSFER);
        let (mut written, mut lost) = (0, false);
        let mut rest = &pages[..];
        while !rest.is_empty() {
            let most = rest.len().min(per_transfer) as u32;
            let (first, len) = swap.alloc_run(most).expect("no more pages than free slots were taken");
            let (run, after) = rest.split_at(len as usize);
            rest = after;
            let mut frames = [0u64; FRAMES_PER_TRANSFER];
            for (frame, page) in frames.iter_mut().zip(run) {
                *frame = page.frame;
            }
            self.swap_counters.requests += 1;
            let asked = self.clock.ns_at(self.platform.rdtsc());
            // SAFETY: the frames were just unmapped from the VM, each once,
            // and are ours until they are freed below; nothing writes them.
            let done = unsafe { disk.write_frames(swap.sector(first), &frames[..run.len()]) };
            self.swap_counters.write_wait_ns += self.clock.ns_at(self.platform.rdtsc()) - asked;
            if let Ok(segments) = done {
                self.swap_counters.segments += segments as u64;
                for (slot, page) in (first..).zip(run) {
                    if page.vaddr == INFO_PAGE {
                        // Pending events wait in the record until it is back.
                        vm.info_frame = None;
                    }
                    self.frames.free(page.frame);
                    vm.swapped.push(SwappedPage::new(page.vaddr, page.flags, slot));
                }
                written += len as u64;
                continue;
            }
            // The disk refused the run: put its pages back where they were
            // (their page tables are still there, so this needs no frame).
            swap.free_run(first, len);
            for &page in run {
                // SAFETY: the frame is the one take_private handed over for
                // this page, with its flags.
                if unsafe { space.restore_private(&mut self.frames, page) }.is_err() {
                    self.frames.free(page.frame);
                    lost = true;
                }
            }
        }
        if written > 0 {
            vm.stats.swap_outs += 1;
            vm.stats.pages_swapped_out += written;
            self.swap_counters.swap_outs += 1;
            self.swap_counters.pages_out += written;
            vm.stats.resident_pages -= written;
        }
        if lost {
            kprintln!("denali: vm {id} ({}) lost a page the disk refused to take; stopping it", vm.name);
            self.finish(id, SWAP_IN_FAILED_STATUS);
        } else if whole && space.private_pages() == 0 {
            let table_frames = u32::try_from(space.table_frames()).unwrap_or(u32::MAX);
            vm.tables_when_out = table_frames;
            let kept = kept_bytes(vm);
            self.switch.parking.release_room(id);
            let tables = vm.space.take();
            self.swap_counters.whole_swap_outs += 1;
            self.most_kept_when_whole = self.most_kept_when_whole.max(kept);
            tables.into_iter().for_each(|space| self.free_space(space));
        }
        written > 0
    }

    /// Brings VM `id` into memory if it is not: page tables from its
    /// image's (and the first time its info and CPU state pages), then its
    /// swapped pages, swapping idle VMs out for room. Without room, it
    /// waits for another turn (a few at most) if other VMs in memory can
    /// run meanwhile. A VM that cannot come in (no memory even then, or the
    /// disk fails) is stopped with that reason. True if it is resident and
    /// can run now.
    pub(super) fn swap_in(&mut self, id: VmId) -> bool {
        let Some(vm) = self.vms[id as usize].as_ref() else { return false };
        if vm.is_resident() {
            return true;
        }
        let swapped = !vm.swapped.is_empty();
        let (started, out_before) = (self.now(), self.swap_counters.out_ns);
        let resident = self.bring_in(id);
        if swapped {
            // Swap-outs that made room count as swap-outs, not here.
            let making_room = self.swap_counters.out_ns - out_before;
            self.swap_counters.in_ns += (self.now() - started).saturating_sub(making_room);
        }
        resident
    }

    /// Frames VM `id` takes to come into memory: its swapped pages, and
    /// without page tables its image's and as many more as it had when it
    /// went out (its pages go back under tables its image does not have).
    pub(super) fn frames_to_bring_in(&self, id: VmId) -> u64 {
        let Some(vm) = self.vms[id as usize].as_ref() else { return 0 };
        let tables = match &vm.space {
            None => {
                let template = &self.templates[vm.template as usize];
                let more = u64::from(vm.tables_when_out).saturating_sub(template.tables_per_vm());
                template.frames_to_materialize(vm.is_unborn()) + more
            }
            Some(_) => 0,
        };
        vm.swapped.len() as u64 + tables
    }

    /// [`Kernel::swap_in`]'s work.
    fn bring_in(&mut self, id: VmId) -> bool {
        let Some(vm) = self.vms[id as usize].as_ref() else { return false };
        let unborn = vm.is_unborn();
        let count = self.frames_to_bring_in(id);
        if unborn && !self.may_start(id, count) {
            self.wait_to_start(id);
            return false;
        }
        if !self.make_room(id, count) {
            return false;
        }
        let problem = match self.materialize(id) {
            Ok(()) => self.read_in(id),
            Err(why) => Some(why),
        };
        let Some(vm) = self.vms[id as usize].as_mut() else { return false };
        match problem {
            None => {
                vm.deferrals = 0;
                vm.sync_info_page();
                if unborn {
                    self.note_started();
                    self.note_booting(id);
                }
                true
            }
            Some(why) => {
                let what = if unborn { "started" } else { "swapped back in" };
                kprintln!("denali: vm {id} ({}) could not be {what} ({why}); stopping it", vm.name);
                self.finish(id, SWAP_IN_FAILED_STATUS);
                false
            }
        }
    }

    /// Frees `count` frames for VM `id` to come in: from the reserve of free
    /// frames if it holds them (idle VMs refill it after the VM's turn, see
    /// [`Kernel::relieve_pressure`], so a woken VM does not wait for
    /// another to be swapped out first), else from idle VMs; failing
    /// that, it waits a turn while VMs in memory run on (they will go idle
    /// or exit) rather than push one of them out at once: that way lies
    /// thrashing. After a few turns it pushes VMs in memory out; if even
    /// that frees too little, it waits on while any other VM in memory can
    /// run, and only when none can (nothing will free memory) does it go
    /// ahead and fail. False if it waits.
    fn make_room(&mut self, id: VmId, count: u64) -> bool {
        if self.frames.available() >= count || self.reclaim_idle(count) {
            return true;
        }
        let others_can_run =
            self.vms.iter().flatten().any(|vm| vm.id != id && vm.state == State::Runnable && vm.is_resident());
        if !others_can_run {
            // Nothing will free memory later: now or never.
            self.reclaim(count, id);
            return true;
        }
        let Some(vm) = self.vms[id as usize].as_mut() else { return false };
        vm.deferrals = vm.deferrals.saturating_add(1);
        if vm.deferrals > MAX_DEFERRALS && self.reclaim(count, id) {
            return true;
        }
        self.sched.make_runnable(id);
        false
    }

    /// Gives VM `id` page tables if it has none (see
    /// [`crate::vm::loader::Loader::materialize`]).
    fn materialize(&mut self, id: VmId) -> Result<(), &'static str> {
        let Some(mut vm) = self.vms[id as usize].take() else { return Err("it is gone") };
        let made = if vm.space.is_some() {
            Ok(())
        } else {
            let (mut loader, templates) = self.split_loader();
            let template = &templates[vm.template as usize];
            loader.materialize(&mut vm, template)
        };
        self.vms[id as usize] = Some(vm);
        made.map_err(|_| if self.swap.is_some() { NO_ROOM } else { NO_MEMORY })
    }

    /// Reads VM `id`'s swapped pages back into its page tables, a run of
    /// consecutive slots a request. `None` if all came back, else why not.
    fn read_in(&mut self, id: VmId) -> Option<&'static str> {
        let (Some(swap), Some(disk), Some(vm)) =
            (self.swap.as_mut(), self.disk.as_mut(), self.vms[id as usize].as_mut())
        else {
            return None;
        };
        let Some(space) = vm.space.as_mut() else { return Some("it has no page tables") };
        let per_transfer = disk.frames_per_transfer().clamp(1, FRAMES_PER_TRANSFER);
        let mut problem = None;
        let moved = !vm.swapped.is_empty();
        while problem.is_none() && !vm.swapped.is_empty() {
            let start = last_run(&vm.swapped, per_transfer);
            let run = &vm.swapped[start..];
            // Frames are handed out last freed first: filled in from the
            // end, frames freed in order come back in order, physically
            // adjacent ones adjacent, and move as one segment.
            let mut frames = [0u64; FRAMES_PER_TRANSFER];
            let mut got = 0;
            while got < run.len()
                && let Some(frame) = self.frames.alloc()
            {
                frames[run.len() - 1 - got] = frame;
                got += 1;
            }
            if got < run.len() {
                // The frames taken are at the end: bring them to the front.
                frames.copy_within(run.len() - got..run.len(), 0);
            }
            self.swap_counters.requests += 1;
            let asked = self.clock.ns_at(self.platform.rdtsc());
            let read = if got < run.len() {
                Err(NO_ROOM)
            } else {
                // SAFETY: the frames were just allocated, each once: ours,
                // mapped nowhere.
                unsafe { disk.read_frames(swap.sector(run[0].slot()), &frames[..got]) }.map_err(|_| "the disk failed")
            };
            self.swap_counters.read_wait_ns += self.clock.ns_at(self.platform.rdtsc()) - asked;
            let restored = match read {
                Err(why) => {
                    problem = Some(why);
                    0
                }
                Ok(segments) => {
                    self.swap_counters.segments += segments as u64;
                    let pages = run.iter().zip(&frames).map(|(page, &frame)| TakenPage {
                        vaddr: page.vaddr(),
                        frame,
                        flags: page.flags(),
                    });
                    // SAFETY: each frame holds its page's contents and is handed
                    // over with the flags take_private gave.
                    let restored = unsafe { space.restore_private_run(&mut self.frames, pages) };
                    if let Some(info) = run[..restored].iter().position(|page| page.vaddr() == INFO_PAGE) {
                        vm.info_frame = Some(frames[info]);
                    }
                    if restored < run.len() {
                        problem = Some("its page could not be mapped again");
                    }
                    restored
                }
            };
            // Frames not handed to the VM go back; slots whose pages came
            // back are free.
            frames[restored..got].iter().for_each(|&frame| self.frames.free(frame));
            swap.free_run(run[0].slot(), restored as u32);
            vm.swapped.drain(start..start + restored);
            vm.stats.pages_swapped_in += restored as u64;
            self.swap_counters.pages_in += restored as u64;
            vm.stats.resident_pages += restored as u64;
        }
        if problem.is_none() && moved {
            vm.stats.swap_ins += 1;
            self.swap_counters.swap_ins += 1;
            // Give the list's memory back to the kernel heap.
            vm.swapped = alloc::vec::Vec::new();
        }
        problem
    }
}

/// Why a VM could not come into memory when frames ran out, without a
/// swap area.
const NO_MEMORY: &str = "no free memory; give the kernel more memory, or a swap area on its disk";

/// Why a VM could not come into memory when frames ran out.
const NO_ROOM: &str =
    "no free memory, and no room in the swap area to make some; give the kernel more memory or a larger swap area";

/// Kernel heap a VM swapped out whole still takes: its record, its name
/// and the list of its swapped pages.
fn kept_bytes(vm: &Vm) -> u64 {
    let list = vm.swapped.capacity() * core::mem::size_of::<SwappedPage>();
    (core::mem::size_of::<Vm>() + vm.name.capacity() + list) as u64
}

/// Where the last run of `swapped` starts: the pages at its end in
/// consecutive slots, at most `most` of them (at least one).
fn last_run(swapped: &[SwappedPage], most: usize) -> usize {
    let end = swapped.len();
    let mut start = end.saturating_sub(1);
    while start > 0 && end - start < most && swapped[start - 1].slot().checked_add(1) == Some(swapped[start].slot()) {
        start -= 1;
    }
    start
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
