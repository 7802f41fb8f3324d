//! The kernel's main loop: pick a runnable VM, run it until it traps, act on
//! the trap; when nothing is runnable, wait for the next alarm; stop when
//! every VM has exited.

use crate::kprintln;
use crate::mem::frame::{FRAME_SIZE, FrameAllocator};
use crate::mem::guest::GuestAddr;
use crate::mem::heap::{CountingHeap, HeapUse};
use crate::mem::phys;
use crate::mem::space::AddressSpace;
use crate::net::{Delivered, Parked, Port, Switch};
use crate::platform::vectors::{BREAKPOINT, DEBUG, DEBUG_REQUEST, HYPERCALL, NIC, PAGE_FAULT, PIC, SPURIOUS, TIMER};
use crate::platform::{BlockDevice, NetDevice, Platform, TrapHooks};
use crate::sched::{MIN_SLICE_NS, Scheduler, TIME_SLICE_NS, VmId};
use crate::swap::{IdleQueue, SwapArea, Watermarks};
use crate::time::Clock;
use crate::vm::context::UserContext;
use crate::vm::fault::Fault;
use crate::vm::hypercall::{self, Deliveries, Env, Outcome};
use crate::vm::state_switch::StateSwitch;
use crate::vm::{State, Stats, Vm, fault_status};
use alloc::boxed::Box;
use alloc::collections::TryReserveError;
use alloc::string::String;
use alloc::vec::Vec;
use denali_abi::counters::SwapCounters;
use denali_abi::debug::EventKind;
use denali_abi::disk::DISK_IO_MAX;
use denali_abi::hypercall::Hypercall;
use denali_abi::hypercall::{EVENT_ALARM, EVENT_NET_RX, EVENT_WAKEUP};
use denali_abi::hypercall::{FRAME_MAX, FrameRef, NET_BATCH_MAX};
use denali_abi::layout::MAX_MEM_SIZE;
use x86_64::PhysAddr;
use x86_64::structures::paging::PhysFrame;

pub mod admission;
mod debug;
mod report;
pub mod starting;
mod swapping;
#[cfg(test)]
mod tests;

pub use denali_abi::boot::TIMED_OUT_STATUS;

/// Waits shorter than this are spun: parking the vCPU costs an exit.
const IDLE_THRESHOLD_NS: u64 = 50_000;
/// Idle time the kernel must have ahead to swap a VM out in it (a web VM's
/// swap-out takes about 3 ms under PVM, disk included).
const IDLE_SWAP_MIN_NS: u64 = 20_000_000;
/// How often an idle kernel looks at a NIC whose interrupts it does not
/// take (bare metal, for now).
const NIC_POLL_NS: u64 = 1_000_000;

/// Exit status recorded for an image the loader refused.
pub const REFUSED_STATUS: i32 = 126;

/// What making the boot's VMs cost.
#[derive(Clone, Copy, Debug, Default)]
pub struct BootReport {
    /// VMs made.
    pub vms: u64,
    /// Time from the first image to the last VM, in ns.
    pub ns: u64,
    /// Page-table frames a VM holds while it is in memory (the most of
    /// any image's).
    pub tables_per_vm: u64,
    /// Frames holding the images' pages, shared by their VMs.
    pub image_frames: u64,
    /// Frames holding the page tables the VMs' tables are copied from.
    pub image_table_frames: u64,
}

/// Frames the switch takes from the NIC at a time, as NAPI's budget does
/// in Linux. The NIC is refilled as fast as it is emptied when the real
/// machine's side holds a burst (a thousand clients connecting at once):
/// an unbounded poll would then take frames until the burst ended, and
/// no VM, not even the one they were for, would run meanwhile.
pub const UPLINK_BUDGET: usize = 64;

/// Every VM of this boot and the state to run them.
pub struct Kernel<P: Platform> {
    /// The machine: CPU, timer, address spaces.
    pub platform: P,
    /// Physical memory.
    pub frames: FrameAllocator,
    /// Run queue and alarms.
    pub sched: Scheduler,
    /// VMs by id; `None` once exited (or never loaded).
    pub vms: Vec<Option<Box<Vm>>>,
    /// The images the VMs are made from, loaded once each.
    templates: Vec<crate::vm::loader::Template>,
    /// VMs this boot makes.
    vm_count: u32,
    /// Exit status by id, once known.
    pub statuses: Vec<Option<i32>>,
    /// Image name by id, for reports after the VM is gone.
    names: Vec<String>,
    /// Accounting by id, kept when the VM exits.
    stats: Vec<Stats>,
    /// What making the VMs cost.
    pub boot: BootReport,
    /// The global clock.
    pub clock: Clock,
    /// The kernel's own page tables.
    pub kernel_pml4: u64,
    /// VMs not yet exited.
    live: usize,
    /// Whose register state beyond the general registers is in the CPU
    /// (see `arch::x86_64::user_state`).
    state_owner: Option<VmId>,
    /// The code that saves and restores that state, in every VM.
    state_switch: StateSwitch,
    /// Where a save routine that trapped (rather than ending at its `ud2`)
    /// left its registers. Kept, so no switch clears 176 bytes for a
    /// report it almost never makes: the trap path writes every word.
    save_failure: UserContext,
    /// Report each VM's exit, not only faults.
    verbose: bool,
    /// Print a long boot's progress on the console (no monitor shows it).
    progress_on_console: bool,
    /// VMs that have run at least once, and when their count was printed.
    started: u64,
    start_printed: admission::Printed,
    /// Global-clock time at which the boot ends, if any.
    pub time_limit: Option<u64>,
    /// Whether the last `run_vm` ended because the timer fired.
    preempted: bool,
    /// While a VM runs: when its slice ends should another VM become
    /// runnable meanwhile (a frame or the NIC woke one).
    slice_end: Option<u64>,
    /// The APIC timer's deadline while a VM runs, if armed.
    armed: Option<u64>,
    /// A VM woke while another ran: the running VM's slice must end on
    /// time (the run loop arms the timer; the hypercall hook cannot).
    cut_slice: bool,
    /// The VM running, whose hypercalls the hook carries out.
    running: VmId,
    /// Whether console lines are prefixed with the VM id.
    prefix_console: bool,
    /// A hypercall the hook began and left to the run loop.
    handed: Option<Handed>,
    /// Whether the platform has a preemption timer (read once, as the
    /// hypercall hook cannot ask the platform).
    has_timer: bool,
    /// The virtual Ethernet switch.
    pub switch: Switch,
    /// Where the frames of a `net_send_batch` went.
    deliveries: Box<Deliveries>,
    /// The machine's NIC, the switch's uplink.
    pub uplink: Option<Box<dyn NetDevice>>,
    /// The last poll of the uplink stopped at [`UPLINK_BUDGET`]: its
    /// interrupt is off and the run loop takes the rest a budget a round.
    uplink_backlog: bool,
    /// The machine's disk, holding the VMs' windows and the swap area.
    pub disk: Option<Box<dyn BlockDevice>>,
    /// The swap area, if the disk has room for one.
    pub swap: Option<SwapArea>,
    /// Idle VMs, oldest first: who to swap out.
    idle: IdleQueue,
    /// VMs waiting for memory to start, and how many are booting.
    starts: starting::Starts,
    /// What swapping has done, where the monitor can read it as VMs run.
    pub swap_counters: SwapCounters,
    /// The most bytes of kernel heap a VM swapped out whole kept (its
    /// record and the list of its swapped pages).
    pub most_kept_when_whole: u64,
    /// When to swap.
    pub watermarks: Watermarks,
    /// The page tables in CR3 (a CR3 write costs an exit under KVM).
    loaded_root: PhysFrame,
    /// The kernel heap, for `--stats`.
    pub heap: Option<&'static CountingHeap>,
    /// Heap use once every VM was made.
    pub heap_after_boot: HeapUse,
    /// The VM a debugger holds, if any.
    debugged: Option<debug::Debugged>,
    /// The monitor's request to stop the debugged VM arrived while a VM's
    /// state was being saved: handled at the top of the run loop.
    debug_request_pending: bool,
}

/// Times the state-save routine is run when interrupts keep cutting it off.
const SAVE_ATTEMPTS: u32 = 4;

/// The non-maskable interrupt's vector.
const NMI: u64 = 2;

/// Whether `vector` is an interrupt (not an exception the code raised).
fn is_interrupt(vector: u64) -> bool {
    matches!(vector, NMI | TIMER | NIC | DEBUG_REQUEST | SPURIOUS) || PIC.contains(&vector)
}

/// What the run loop does once a trap is handled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Next {
    /// Enter the VM again.
    Resume,
    /// Leave it: it blocked, yielded, exited, faulted or was preempted.
    Stop,
}

/// How far a trap hook took a hypercall or a page fault before leaving it
/// to the run loop.
#[derive(Clone, Debug)]
enum Handed {
    /// Decoded only: the run loop first makes room for what it may touch.
    Decoded(Hypercall),
    /// Carried out; the VM leaves the CPU (blocks, yields or exits: only
    /// where a platform hands the hook such calls, which ours do not).
    Done(Outcome),
    /// A page fault the VM's memory could not resolve.
    Unresolved,
}

/// Frames a hypercall may need, as pages it touches for the first time
/// and the page tables under them: the larger of a disk transfer's and a
/// batch of frames'.
const HYPERCALL_FRAMES: u64 = if DISK_CALL_FRAMES > BATCH_CALL_FRAMES { DISK_CALL_FRAMES } else { BATCH_CALL_FRAMES };

/// A disk transfer: the pages of one buffer of [`DISK_IO_MAX`] bytes and
/// the tables under them (a PT on each side of a boundary, a PD and a
/// PDPT across a GiB).
const DISK_CALL_FRAMES: u64 = pages_of_buffer(DISK_IO_MAX as u64) + 1 + 5;

/// A batch (`net_send_batch`, `net_recv_batch`): the pages of its list and
/// of [`NET_BATCH_MAX`] frames of up to [`FRAME_MAX`] bytes, each of which
/// may lie in a 2 MiB of its own (a PT each) and a GiB of its own (a PD
/// each, as many as a VM's space has GiBs), under one PDPT.
const BATCH_CALL_FRAMES: u64 = {
    let list = (NET_BATCH_MAX * FrameRef::SIZE) as u64;
    let pages = NET_BATCH_MAX as u64 * pages_of_buffer(FRAME_MAX as u64) + pages_of_buffer(list);
    let gibs = MAX_MEM_SIZE >> 30;
    2 * pages + if pages < gibs { pages } else { gibs } + 1
};

/// The most pages a buffer of `len` bytes spans, wherever it starts.
const fn pages_of_buffer(len: u64) -> u64 {
    len.div_ceil(FRAME_SIZE) + 1
}

impl<P: Platform> Kernel<P> {
    /// A kernel with no VMs yet.
    pub fn new(
        platform: P,
        frames: FrameAllocator,
        clock: Clock,
        kernel_pml4: u64,
        verbose: bool,
        state_switch: StateSwitch,
    ) -> Self {
        let frames_total = frames.total();
        let has_timer = platform.has_timer();
        Kernel {
            platform,
            frames,
            sched: Scheduler::new(),
            vms: Vec::new(),
            templates: Vec::new(),
            vm_count: 0,
            statuses: Vec::new(),
            names: Vec::new(),
            stats: Vec::new(),
            boot: BootReport::default(),
            clock,
            kernel_pml4,
            live: 0,
            state_owner: None,
            state_switch,
            save_failure: UserContext::default(),
            verbose,
            progress_on_console: false,
            started: 0,
            start_printed: admission::Printed::default(),
            time_limit: None,
            preempted: false,
            slice_end: None,
            armed: None,
            cut_slice: false,
            running: 0,
            prefix_console: false,
            handed: None,
            has_timer,
            loaded_root: PhysFrame::containing_address(PhysAddr::new(kernel_pml4)),
            switch: Switch::default(),
            deliveries: Box::default(),
            uplink: None,
            uplink_backlog: false,
            disk: None,
            swap: None,
            idle: IdleQueue::default(),
            starts: starting::Starts::default(),
            swap_counters: SwapCounters::default(),
            most_kept_when_whole: 0,
            watermarks: Watermarks::for_total(frames_total),
            heap: None,
            heap_after_boot: HeapUse::default(),
            debugged: None,
            debug_request_pending: false,
        }
    }

    /// Reserves the per-VM tables for `count` VMs up front, so that making
    /// them cannot exhaust the kernel heap halfway (a `Vec` doubling would
    /// briefly need three times the table).
    pub fn reserve(&mut self, count: usize) -> Result<(), TryReserveError> {
        self.vms.try_reserve_exact(count)?;
        self.statuses.try_reserve_exact(count)?;
        self.names.try_reserve_exact(count)?;
        self.stats.try_reserve_exact(count)?;
        self.switch.reserve(count)?;
        self.idle.reserve(count)?;
        self.starts.reserve(count)?;
        self.sched.reserve(count)
    }

    /// Adds a loaded VM (its id must be the next index) and makes it runnable.
    pub fn admit(&mut self, vm: Vm) {
        debug_assert_eq!(vm.id as usize, self.vms.len());
        self.sched.make_runnable(vm.id);
        self.names.push(vm.name.clone());
        self.stats.push(vm.stats);
        self.vms.push(Some(Box::new(vm)));
        self.statuses.push(None);
        self.live += 1;
    }

    /// Records an id whose image was refused.
    pub fn refuse(&mut self, name: &str) {
        self.record_unmade(name, REFUSED_STATUS);
    }

    /// Records an id that gets no VM, with the status it ends with.
    fn record_unmade(&mut self, name: &str, status: i32) {
        // Nothing is parked for an id no VM has.
        self.switch.parking.close(self.vms.len() as VmId);
        self.names.push(String::from(name));
        self.stats.push(Stats::default());
        self.vms.push(None);
        self.statuses.push(Some(status));
    }

    /// Ends the run `ms` milliseconds from now (0: never), VMs still being
    /// made included.
    pub fn set_time_limit_ms(&mut self, ms: u64) {
        self.time_limit = (ms != 0).then(|| self.now() + ms * 1_000_000);
    }

    fn past_time_limit(&self) -> bool {
        self.time_limit.is_some_and(|limit| self.now() >= limit)
    }

    fn now(&self) -> u64 {
        self.clock.ns_at(self.platform.rdtsc())
    }

    /// Runs every VM to completion and returns the boot's status: 0 if all
    /// exited 0, otherwise the first non-zero status in id order. With
    /// `print_stats`, ends with a table of per-VM accounting.
    pub fn run(&mut self, print_stats: bool) -> i32 {
        let prefix = self.vms.len() > 1;
        self.prefix_console = prefix;
        self.platform.share_counters(&self.swap_counters);
        self.start_printed = admission::Printed::from(self.now());
        while self.live > 0 {
            if self.past_time_limit() {
                kprintln!("denali: the time limit passed; stopping {} VM(s)", self.live);
                self.stop_all(TIMED_OUT_STATUS);
                break;
            }
            self.fire_alarms();
            self.start_waiting();
            if self.platform.take_debug_request() || core::mem::take(&mut self.debug_request_pending) {
                // The debugger may have killed the last VM.
                self.interrupt_debugged(None);
                continue;
            }
            if self.uplink_backlog || self.platform.take_nic_interrupt() || self.nic_polled() {
                self.poll_uplink();
            }
            if let Some(id) = self.sched.pick_next() {
                self.run_slice(id);
                self.relieve_pressure();
                continue;
            }
            if self.uplink_backlog {
                continue;
            }
            match self.next_event() {
                Some(deadline) => self.wait_until(deadline),
                // Idle VMs waiting for the network: only a frame can wake them.
                None if self.nic_polled() => {
                    while !self.sched.has_runnable() {
                        self.poll_uplink();
                        self.nap(u64::MAX);
                    }
                }
                None if self.uplink.is_some() && self.platform.has_timer() => {
                    self.work_while_idle(None);
                    if !self.platform.nic_interrupted() {
                        self.platform.halt_until_interrupt();
                    }
                }
                None => {
                    kprintln!("denali: {} VM(s) idle with no alarm set and nothing to wake them; stopping", self.live);
                    break;
                }
            }
        }
        self.print_exits(prefix);
        if print_stats {
            self.print_stats();
        }
        self.statuses.iter().map(|s| s.unwrap_or(1)).find(|&s| s != 0).unwrap_or(0)
    }

    /// The next alarm or the time limit, whichever comes first.
    fn next_event(&mut self) -> Option<u64> {
        match (self.sched.next_deadline(), self.time_limit) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Stops every VM still alive with `status`.
    fn stop_all(&mut self, status: i32) {
        for id in 0..self.vms.len() as VmId {
            if self.vms[id as usize].is_some() {
                self.finish(id, status);
            }
        }
    }

    /// Runs VM `id` for at most a time slice when others are waiting, or
    /// until the next alarm or the time limit: the APIC timer takes the CPU
    /// back then. With nothing else to run and nothing due, the VM runs
    /// undisturbed (no tick).
    ///
    /// A VM whose slice an alarm cut short keeps the rest of it and runs
    /// again right after the woken VM; one that used its slice up goes to
    /// the back of the queue. Spinning VMs thus share the CPU equally.
    fn run_slice(&mut self, id: VmId) {
        if !self.swap_in(id) {
            return;
        }
        let started = self.now();
        let Some(slice) = self.vms[id as usize].as_mut().map(|vm| {
            vm.last_ran = started;
            vm.slice_left
        }) else {
            return;
        };
        let mut deadline = self.next_event();
        if self.sched.has_runnable() || self.starts.has_waiting() {
            let slice_end = started + slice;
            deadline = Some(deadline.map_or(slice_end, |d| d.min(slice_end)));
        }
        self.armed = None;
        if let Some(deadline) = deadline {
            self.arm(deadline);
        }
        self.slice_end = Some(started + slice);
        self.preempted = false;
        self.run_vm(id);
        self.slice_end = None;
        if self.armed.take().is_some() {
            self.platform.set_deadline(0);
        }
        let used = self.now() - started;
        self.sched.ran(used);
        self.note_boot_turn(id);
        if self.preempted {
            // The VMs whose alarms took the CPU queue first, so the one
            // preempted runs the rest of its slice after them.
            self.fire_alarms();
        }
        match self.vms[id as usize].as_mut() {
            Some(vm) if self.preempted && used + MIN_SLICE_NS < slice => {
                vm.slice_left = slice - used;
                self.sched.resume(id);
            }
            Some(vm) => {
                vm.slice_left = TIME_SLICE_NS;
                if self.preempted {
                    self.sched.make_runnable(id);
                }
            }
            None => {}
        }
    }

    /// Between two looks at a polled NIC: halts for up to
    /// [`NIC_POLL_NS`] (never past `limit`) where the timer can wake the
    /// CPU, else spins once.
    fn nap(&mut self, limit: u64) {
        if !self.platform.has_timer() {
            return core::hint::spin_loop();
        }
        let until = self.now().saturating_add(NIC_POLL_NS).min(limit);
        self.platform.set_deadline(self.clock.tsc_at(until).max(1));
        self.platform.halt_until_interrupt();
        self.platform.set_deadline(0);
    }

    /// Whether the NIC raises no interrupt, so the kernel polls it.
    fn nic_polled(&self) -> bool {
        self.uplink.as_ref().is_some_and(|nic| nic.polled())
    }

    /// Takes up to [`UPLINK_BUDGET`] frames the NIC received into the
    /// switch: frames for VMs go to their rings (waking them), ARP requests
    /// for VM addresses are answered out of the NIC.
    fn poll_uplink(&mut self) {
        let Some(nic) = self.uplink.as_mut() else { return };
        nic.acknowledge();
        let mut frame = [0u8; FRAME_MAX];
        let mut taken = 0;
        while taken < UPLINK_BUDGET {
            let Some(len) = self.uplink.as_mut().and_then(|nic| nic.receive_into(&mut frame)) else { break };
            taken += 1;
            let nic = self.uplink.as_mut().expect("it just received");
            if let Ok(delivered) = self.switch.send(Port::Uplink, &frame[..len], &mut |reply| nic.send(reply)) {
                self.note_delivery(delivered);
            }
        }
        self.set_uplink_backlog(taken == UPLINK_BUDGET);
    }

    /// Turns the NIC's interrupt off while frames wait beyond a poll's
    /// budget (the run loop then polls once a round), and back on once a
    /// poll finds the NIC empty.
    fn set_uplink_backlog(&mut self, backlogged: bool) {
        let Some(nic) = self.uplink.as_mut() else { return };
        if backlogged != self.uplink_backlog {
            nic.interrupt_on_receive(!backlogged);
        }
        // A frame that arrived just before the interrupt was back on raised
        // none: it is taken next round.
        self.uplink_backlog = backlogged || nic.has_received();
    }

    /// Accounts for a frame the switch took and wakes the VM it went to;
    /// a frame dropped for a full ring (or pushed out of the fullest ring)
    /// counts against the VM whose ring it was.
    fn note_delivery(&mut self, delivered: Delivered) {
        let Delivered::ToVm(to, parked) = delivered else { return };
        if let Parked::Evicted(victim) = parked
            && let Some(vm) = self.vms.get_mut(victim as usize).and_then(Option::as_mut)
        {
            vm.stats.frames_dropped += 1;
            vm.set_rx_frames(self.switch.parking.len(victim));
        }
        let Some(vm) = self.vms.get_mut(to as usize).and_then(Option::as_mut) else { return };
        if parked == Parked::Dropped {
            vm.stats.frames_dropped += 1;
        } else {
            vm.stats.frames_received += 1;
            vm.set_rx_frames(self.switch.parking.len(to));
            vm.raise(EVENT_NET_RX);
            self.wake_if_idle(to);
        }
    }

    /// Makes an idle VM with pending events runnable, handing it the batch.
    /// If a VM is running, its slice now ends on time (it may have started
    /// with nobody else to run, and so without a timer): `run_vm` arms the
    /// timer before it enters the VM again.
    fn wake_if_idle(&mut self, id: VmId) {
        if let Some(vm) = self.vms[id as usize].as_mut()
            && vm.state == State::Idle
        {
            vm.state = State::Runnable;
            vm.stats.wakeups += 1;
            vm.context.rax = vm.take_pending();
            self.sched.wake(id);
            self.cut_slice |= self.slice_end.is_some();
        }
    }

    /// Arms the APIC timer for `deadline` unless it is already armed for
    /// an earlier one (while a VM runs; without the timer, nothing).
    fn arm(&mut self, deadline: u64) {
        if let Some(tsc) = self.timer_for(deadline) {
            self.platform.set_deadline(tsc);
        }
    }

    /// The TSC value to arm the timer with for `deadline`, noted as armed;
    /// none if it is armed for an earlier one already, or there is no
    /// timer. Never 0 or 1 (disarmed; [`TrapHooks::RESUME`]).
    fn timer_for(&mut self, deadline: u64) -> Option<u64> {
        if !self.has_timer || self.armed.is_some_and(|armed| armed <= deadline) {
            return None;
        }
        self.armed = Some(deadline);
        Some(self.clock.tsc_at(deadline).max(2))
    }

    #[inline(always)]
    fn fire_alarms(&mut self) {
        let now = self.now();
        while let Some(id) = self.sched.pop_expired(now) {
            if let Some(vm) = self.vms[id as usize].as_mut() {
                vm.raise(EVENT_ALARM);
                self.wake_if_idle(id);
            }
        }
    }

    /// Uses time in which nothing is runnable, until TSC time `until` (none:
    /// no timed event is due) or a frame arrives: first swaps idle VMs out,
    /// one at a time, until free frames are back at the high watermark, so
    /// that the next VM woken comes in without waiting for another to go
    /// out (only with that much time ahead: a swap-out takes milliseconds
    /// where the kernel is emulated); then zeroes free frames.
    fn work_while_idle(&mut self, until: Option<u64>) {
        let last_start = until.map(|tsc| self.clock.ns_at(tsc).saturating_sub(IDLE_SWAP_MIN_NS));
        while self.swap.is_some()
            && self.frames.available() < self.watermarks.high
            && last_start.is_none_or(|ns| self.now() < ns)
            && !self.platform.nic_interrupted()
            && self.swap_out_oldest_idle()
        {
            self.platform.take_pending_interrupts();
        }
        self.zero_frames_while_idle(until);
    }

    /// Zeroes free frames while nothing is runnable, so that first touches
    /// find them ready, until TSC time `until` (none: no timed event is
    /// due), a frame arrives, or the allocator has enough zeroed. Pending
    /// interrupts come in after each frame, so a frame for a VM waits for
    /// one frame's zeroing at most.
    fn zero_frames_while_idle(&mut self, until: Option<u64>) {
        while until.is_none_or(|tsc| self.platform.rdtsc() < tsc) && !self.platform.nic_interrupted() {
            if !phys::zero_one_free_frame(&mut self.frames) {
                break;
            }
            self.platform.take_pending_interrupts();
        }
    }

    /// Nothing is runnable until `deadline`: halt until the APIC timer
    /// fires then (or, without one, ask the monitor to park the CPU), and
    /// spin only for what is left.
    ///
    /// A NIC the kernel polls is polled meanwhile; a frame for a VM ends
    /// the wait.
    fn wait_until(&mut self, deadline: u64) {
        let target = self.clock.tsc_at(deadline);
        if self.nic_polled() {
            while self.platform.rdtsc() < target && !self.sched.has_runnable() {
                self.poll_uplink();
                self.nap(deadline);
            }
            return;
        }
        let now = self.now();
        if deadline > now + IDLE_THRESHOLD_NS {
            if self.platform.has_timer() {
                self.work_while_idle(Some(self.clock.tsc_at(deadline - IDLE_THRESHOLD_NS)));
                // A far deadline may fire early (the xAPIC's count is 32
                // bits): halt again until it is close.
                while !self.platform.nic_interrupted() && self.now() + IDLE_THRESHOLD_NS < deadline {
                    self.platform.set_deadline(target.max(1));
                    self.platform.halt_until_interrupt();
                    self.platform.set_deadline(0);
                }
            } else {
                let micros = ((deadline - now) / 1000).min(u64::from(u32::MAX)) as u32;
                self.platform.idle_for(micros);
            }
        }
        while self.platform.rdtsc() < target && !self.platform.nic_interrupted() {
            core::hint::spin_loop();
        }
    }

    /// Loads `root` into CR3 unless it is there.
    fn load_root(&mut self, root: PhysFrame) {
        if self.loaded_root != root {
            self.platform.load_address_space(root);
            self.loaded_root = root;
        }
    }

    /// Makes VM `id` the owner of the CPU's register state: saves the
    /// previous owner's (in its own ring 3) and has `id` restore its own
    /// on entry. Returns false if `id` is gone.
    fn switch_user_state(&mut self, id: VmId) -> bool {
        if self.state_owner == Some(id) {
            return self.vms[id as usize].is_some();
        }
        self.save_user_state();
        let switch = self.state_switch;
        let Some(vm) = self.vms[id as usize].as_mut() else { return false };
        // (A VM runs only in memory, info page and all.)
        let Some(mut resume) = vm.info_mut().map(|info| info.resume) else { return false };
        switch.enter_through_restore(&mut vm.context, &mut resume);
        if let Some(info) = vm.info_mut() {
            info.resume = resume;
        }
        self.state_owner = Some(id);
        self.note_restore_entry(id);
        true
    }

    /// Saves the state owner's register state to its CPU state page, by
    /// running its save routine in its address space; afterwards no VM's
    /// state is in the CPU that another could read.
    fn save_user_state(&mut self) {
        let Some(owner) = self.state_owner.take() else { return };
        let Some(vm) = self.vms[owner as usize].as_ref() else { return };
        if StateSwitch::contains(vm.context.rip) {
            // Stopped inside its restore routine (an interrupt): the CPU may
            // still hold the previous owner's state, and the VM's own is
            // all in its page (the routine only reads it). Nothing to save,
            // and saving would copy the other VM's registers into its page.
            return;
        }
        let Some(root) = vm.space.as_ref().map(AddressSpace::root) else { return };
        self.load_root(root);
        let start = self.platform.rdtsc();
        // An interrupt or NMI arriving meanwhile is no fault of the VM's:
        // run the routine again (it has no side effects but the save).
        let mut saved = false;
        for _ in 0..SAVE_ATTEMPTS {
            saved = self.platform.run_save_routine(self.state_switch.save_entry(), &mut self.save_failure);
            let vector = self.save_failure.vector;
            if saved || !is_interrupt(vector) {
                break;
            }
            self.debug_request_pending |= vector == DEBUG_REQUEST;
            if vector != NMI {
                self.platform.end_of_interrupt();
            }
        }
        let ticks = self.platform.rdtsc() - start;
        let Some(vm) = self.vms[owner as usize].as_mut() else { return };
        vm.stats.cpu_ticks += ticks;
        if !saved {
            let context = &self.save_failure;
            // Its state page is gone or read-only: it cannot have happened
            // without a kernel bug, and the VM cannot go on without it.
            kprintln!(
                "denali: vm {owner} ({}) stopped: its register state could not be saved (vector {} at {:#x})",
                vm.name,
                context.vector,
                context.rip
            );
            self.finish(owner, fault_status(context.vector));
        }
    }

    /// Runs VM `id` until it blocks, yields, exits, faults or is
    /// preempted. Every tick spent in it or in the kernel on its behalf
    /// (its hypercalls and page faults) is charged to it; the NIC's
    /// interrupt, work for others, is not.
    fn run_vm(&mut self, id: VmId) {
        if !self.switch_user_state(id) {
            return;
        }
        let Some(root) = self.vms[id as usize].as_ref().and_then(|vm| vm.space.as_ref()).map(AddressSpace::root) else {
            return;
        };
        self.load_root(root);
        self.running = id;
        self.cut_slice = false;
        // One clock read per trip through the run loop: each charges the VM
        // for the time since the one before (its ring-3 time and the
        // kernel's work for it in between, hypercalls the hook finished
        // included).
        let mut since = self.platform.rdtsc();
        loop {
            if core::mem::take(&mut self.cut_slice)
                && let Some(end) = self.slice_end
            {
                self.arm(end);
            }
            let Some(vm) = self.vms[id as usize].as_mut() else { return };
            if vm.context.rip >= vm.layout.mem_size {
                // Cannot happen for a context the CPU saved; refuse anyway
                // rather than iretq to an address outside the VM.
                kprintln!("denali: vm {id} has an impossible rip {:#x}; stopping it", vm.context.rip);
                return self.finish(id, fault_status(13));
            }
            let context = core::ptr::addr_of_mut!(vm.context);
            let kernel: *mut Self = self;
            // SAFETY: the context was built by the loader with user selectors
            // and IOPL 0, or saved by the CPU on a trap from ring 3, and this
            // VM's page tables are loaded. No reference into the kernel is
            // held across the call: the platform and the context are passed
            // as pointers, and the hooks (`Self::hypercall_hook` and
            // `Self::page_fault_hook`, given the kernel's pointer) touch
            // neither the platform nor, beyond what `TrapHooks` allows, the
            // context; the VM's box stays alive, as no hook ends a VM.
            unsafe { P::enter_user(core::ptr::addr_of_mut!((*kernel).platform), context, Self::hooks(kernel)) };
            let trapped = self.platform.rdtsc();
            let Some(vm) = self.vms[id as usize].as_mut() else { return };
            vm.stats.cpu_ticks += trapped - since;
            since = trapped;
            let vector = vm.context.vector;
            let next = match vector {
                NIC => {
                    // Work for others: not charged to this VM.
                    self.platform.end_of_interrupt();
                    self.poll_uplink();
                    since = self.platform.rdtsc();
                    continue;
                }
                HYPERCALL => self.handle_hypercall(id, trapped),
                TIMER => {
                    // The timer took the CPU back (run_slice requeues the
                    // VM); one wake-up event lets it recalibrate later.
                    self.platform.end_of_interrupt();
                    vm.raise(EVENT_WAKEUP);
                    self.preempted = true;
                    Next::Stop
                }
                // No fault of the VM's: it resumes.
                SPURIOUS | NMI => Next::Resume,
                vector if PIC.contains(&vector) => Next::Resume,
                DEBUG | BREAKPOINT if self.is_debugged(id) => self.handle_debug_trap(id, vector),
                DEBUG_REQUEST => {
                    // The time the debugger holds the VMs is nobody's.
                    self.platform.end_of_interrupt();
                    let next = self.interrupt_debugged(Some(id));
                    since = self.platform.rdtsc();
                    if next == Next::Resume {
                        continue;
                    }
                    next
                }
                vector => self.handle_fault(id, vector),
            };
            if next == Next::Stop {
                self.charge(id, self.platform.rdtsc() - since);
                return;
            }
        }
    }

    /// Adds `ticks` to VM `id`'s CPU time (also once it has exited).
    fn charge(&mut self, id: VmId, ticks: u64) {
        match self.vms[id as usize].as_mut() {
            Some(vm) => vm.stats.cpu_ticks += ticks,
            None => self.stats[id as usize].cpu_ticks += ticks,
        }
    }

    /// The hooks through which the platform hands this kernel hypercalls
    /// and page faults.
    fn hooks(kernel: *mut Self) -> TrapHooks {
        TrapHooks { kernel: kernel.cast(), hypercall: Self::hypercall_hook, page_fault: Self::page_fault_hook }
    }

    /// The platform's entry for a page fault of the running VM (see
    /// [`TrapHooks`]).
    ///
    /// # Safety
    ///
    /// As for [`Self::hypercall_hook`].
    unsafe extern "C" fn page_fault_hook(kernel: *mut (), address: u64) -> u64 {
        // SAFETY: as for the hypercall hook.
        let kernel = unsafe { &mut *kernel.cast::<Self>() };
        kernel.page_fault_on_trap_path(address)
    }

    /// Resolves the running VM's page fault at `address` where it trapped
    /// (a first touch, a first write to a shared page), or leaves it to the
    /// run loop: out of memory, or the VM's own fault.
    fn page_fault_on_trap_path(&mut self, address: u64) -> u64 {
        let Some(vm) = self.vms.get_mut(self.running as usize).and_then(Option::as_mut) else {
            return TrapHooks::TO_RUN_LOOP;
        };
        let fault = Fault {
            vector: PAGE_FAULT,
            error_code: vm.context.error_code,
            rip: vm.context.rip,
            address: Some(GuestAddr::new(address)),
        };
        if vm.resolve_fault(&mut self.frames, &fault) {
            return TrapHooks::RESUME;
        }
        self.handed = Some(Handed::Unresolved);
        TrapHooks::TO_RUN_LOOP
    }

    /// The platform's entry for a hypercall of the running VM (see
    /// [`TrapHooks`]).
    ///
    /// # Safety
    ///
    /// `kernel` must be the pointer `run_vm` handed the platform, called
    /// while that `enter_user` runs.
    unsafe extern "C" fn hypercall_hook(kernel: *mut (), tsc_low: u32, tsc_high: u32) -> u64 {
        // SAFETY: the caller's promise; `run_vm` holds no reference into
        // the kernel while the platform runs the VM.
        let kernel = unsafe { &mut *kernel.cast::<Self>() };
        kernel.hypercall_on_trap_path(u64::from(tsc_high) << 32 | u64::from(tsc_low))
    }

    /// Carries out the running VM's hypercall where it trapped, and answers
    /// the platform as [`TrapHooks`] says. What follows a call that
    /// leaves the VM (`yield`, `exit`, an `idle` that blocks) is left to the
    /// run loop, as is a call that may need VMs swapped out first (see
    /// [`Handed`]). It reads no callee-saved register of the VM's (they are
    /// not saved).
    fn hypercall_on_trap_path(&mut self, trapped: u64) -> u64 {
        let Some(vm) = self.vms.get_mut(self.running as usize).and_then(Option::as_mut) else {
            return TrapHooks::TO_RUN_LOOP;
        };
        match hypercall::decode(vm) {
            Some(call) => self.carry_out_on_trap_path(call, trapped),
            None => TrapHooks::RESUME,
        }
    }

    /// [`Self::hypercall_on_trap_path`] for a known call (out of line, so
    /// an unknown number is answered without this part's stack frame).
    #[inline(never)]
    fn carry_out_on_trap_path(&mut self, call: Hypercall, trapped: u64) -> u64 {
        if self.needs_room_for_hypercall() {
            self.handed = Some(Handed::Decoded(call));
            return TrapHooks::TO_RUN_LOOP;
        }
        if let Some(left) = self.carry_out(self.running, call, trapped) {
            self.handed = Some(Handed::Done(left));
            return TrapHooks::TO_RUN_LOOP;
        }
        // A VM the call woke runs once this one's slice ends.
        match self.slice_end.filter(|_| core::mem::take(&mut self.cut_slice)).and_then(|end| self.timer_for(end)) {
            Some(tsc) => tsc,
            None => TrapHooks::RESUME,
        }
    }

    /// Whether frames must be freed (VMs swapped out) before a hypercall:
    /// it may touch up to [`HYPERCALL_FRAMES`] pages and tables of the VM's
    /// for the first time, and must not fail for want of memory while VMs
    /// could be swapped out.
    fn needs_room_for_hypercall(&self) -> bool {
        self.swap.is_some() && self.frames.available() < HYPERCALL_FRAMES
    }

    /// Finishes the hypercall VM `id` made at TSC time `trapped`, from where
    /// the hook left it (or from the start, for a platform without one).
    fn handle_hypercall(&mut self, id: VmId, trapped: u64) -> Next {
        let outcome = match self.handed.take() {
            Some(Handed::Done(outcome)) => outcome,
            handed => {
                let call = match handed {
                    Some(Handed::Decoded(call)) => call,
                    _ => {
                        let Some(vm) = self.vms[id as usize].as_mut() else { return Next::Stop };
                        let Some(call) = hypercall::decode(vm) else { return Next::Resume };
                        call
                    }
                };
                if self.needs_room_for_hypercall() {
                    self.reclaim_idle(HYPERCALL_FRAMES);
                }
                match self.carry_out(id, call, trapped) {
                    Some(outcome) => outcome,
                    None => return Next::Resume,
                }
            }
        };
        self.leave_after_hypercall(id, outcome)
    }

    /// Runs hypercall `call` of VM `id` (the running VM) made at TSC time
    /// `trapped`, and does what follows it without the platform; what is
    /// left for the run loop: a block, a yield or an exit.
    #[inline(always)]
    fn carry_out(&mut self, id: VmId, call: Hypercall, trapped: u64) -> Option<Outcome> {
        let vm = self.vms[id as usize].as_mut()?;
        let (clock, prefix_console) = (&self.clock, self.prefix_console);
        let (frames, sched, switch) = (&mut self.frames, &mut self.sched, &mut self.switch);
        let deliveries = &mut self.deliveries;
        let (uplink, disk) = (self.uplink.as_deref_mut(), self.disk.as_deref_mut());
        let env =
            move || Env { frames, sched, prefix_console, now: clock.ns_at(trapped), switch, deliveries, uplink, disk };
        match hypercall::dispatch(vm, call, env) {
            Outcome::Resume(value) => vm.context.rax = value,
            Outcome::Sent(len, delivered) => {
                vm.context.rax = len;
                if delivered != Delivered::Dropped {
                    vm.stats.frames_sent += 1;
                }
                self.note_delivery(delivered);
            }
            Outcome::SentBatch(count) => {
                vm.context.rax = count;
                let mut n = 0;
                while let Some(delivered) = self.deliveries.get(n) {
                    n += 1;
                    if delivered != Delivered::Dropped
                        && let Some(vm) = self.vms[id as usize].as_mut()
                    {
                        vm.stats.frames_sent += 1;
                    }
                    self.note_delivery(delivered);
                }
                self.deliveries.clear();
            }
            left @ (Outcome::Block | Outcome::Yield | Outcome::Exit(..)) => return Some(left),
        }
        None
    }

    /// Takes VM `id` off the CPU after a hypercall that blocked, yielded or
    /// exited.
    fn leave_after_hypercall(&mut self, id: VmId, outcome: Outcome) -> Next {
        match outcome {
            Outcome::Block => {
                self.note_booted(id, true);
                self.note_idle(id);
            }
            Outcome::Yield => {
                if let Some(vm) = self.vms[id as usize].as_mut() {
                    vm.context.rax = 0;
                }
                self.sched.make_runnable(id);
            }
            Outcome::Exit(status, crashed) => {
                if crashed {
                    self.report_crash(id, None, status);
                } else {
                    // The VM ends either way: a `kill` changes nothing.
                    let _ = self.stop_for_debugger(id, EventKind::Exited, status);
                }
                self.finish(id, status);
            }
            Outcome::Resume(_) | Outcome::Sent(..) | Outcome::SentBatch(_) => return Next::Resume,
        }
        Next::Stop
    }

    /// Resolves a CPU exception VM `id` took (a first touch, a first
    /// write to a shared page), or stops the VM with a report.
    fn handle_fault(&mut self, id: VmId, vector: u64) -> Next {
        let Some(vm) = self.vms[id as usize].as_mut() else { return Next::Stop };
        let fault = Fault {
            vector,
            error_code: vm.context.error_code,
            rip: vm.context.rip,
            address: (vector == PAGE_FAULT).then(|| GuestAddr::new(self.platform.fault_address())),
        };
        let tried = vector == PAGE_FAULT && matches!(self.handed.take(), Some(Handed::Unresolved));
        if !tried && vm.resolve_fault(&mut self.frames, &fault) {
            return Next::Resume;
        }
        // Out of frames (or of kernel heap for the page's bookkeeping):
        // swap VMs out and, if that freed any, run the faulting instruction
        // again. Without progress, the VM stops: a page and its tables may
        // need more frames than are free, and retrying would fault for ever.
        if vm.out_of_memory {
            let before = self.frames.available();
            self.reclaim(self.watermarks.high, id);
            if self.vms[id as usize].is_some() && self.frames.available() > before {
                return Next::Resume;
            }
        }
        let Some(vm) = self.vms[id as usize].as_ref() else { return Next::Stop };
        kprintln!("denali: {}", vm.describe(&fault));
        self.report_crash(id, Some(&fault), fault_status(vector));
        self.finish(id, fault_status(vector));
        Next::Stop
    }

    /// Stops VM `id` with `status` and gives its memory back.
    fn finish(&mut self, id: VmId, status: i32) {
        self.note_booted(id, status == 0);
        let Some(vm) = self.vms[id as usize].take() else {
            return;
        };
        self.statuses[id as usize] = Some(status);
        self.stats[id as usize] = vm.stats;
        self.sched.remove(id);
        self.switch.detach(vm.ipv4.address, id);
        self.live -= 1;
        if self.state_owner == Some(id) {
            // Its registers stay in the CPU until the next VM's restore
            // replaces every one of them.
            self.state_owner = None;
        }
        if let Some(swap) = self.swap.as_mut() {
            vm.swapped.iter().for_each(|page| swap.free_run(page.slot(), 1));
        }
        if let Some(space) = vm.space {
            self.free_space(space);
        }
    }

    /// Frees a VM's page tables and what they hold privately, leaving them
    /// first if they are loaded (the kernel's own map everything the
    /// kernel uses).
    fn free_space(&mut self, space: AddressSpace) {
        if self.loaded_root == space.root() {
            self.load_root(PhysFrame::containing_address(PhysAddr::new(self.kernel_pml4)));
        }
        space.destroy(&mut self.frames);
    }
}
