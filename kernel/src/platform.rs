//! The small interface between the kernel's core (the run loop, hypercall
//! dispatch, VM admission, swapping: everything in `run`, `vm`, `sched`,
//! `net` and `swap`, built and unit-tested on the host) and the machine it
//! runs on.
//!
//! `arch::x86_64::Machine` implements [`Platform`] with the real
//! instructions (the APIC timer, `hlt`, CR3, `iretq` into ring 3); the host
//! tests implement it with a simulated CPU whose "VMs" are closures. The
//! machine's NIC and disk sit behind [`NetDevice`] and [`BlockDevice`]
//! (virtio drivers on the machine, in-memory ones in tests).

use crate::vm::context::UserContext;
use denali_abi::disk::DiskLabel;
use denali_abi::hypercall::{Error, FRAME_MAX, Hypercall};
use x86_64::structures::paging::PhysFrame;

/// The trap vectors the core tells apart.
pub mod vectors {
    /// `int 4`: a hypercall (see `denali_abi::hypercall::HYPERCALL_VECTOR`).
    pub const HYPERCALL: u64 = denali_abi::hypercall::HYPERCALL_VECTOR as u64;
    /// Invalid opcode: also how the state-save routine ends.
    pub const INVALID_OPCODE: u64 = 6;
    /// Page fault.
    pub const PAGE_FAULT: u64 = 14;
    /// Debug trap: a single step.
    pub const DEBUG: u64 = 1;
    /// Breakpoint: `int3`.
    pub const BREAKPOINT: u64 = 3;
    /// The local APIC timer.
    pub const TIMER: u64 = 32;
    /// The NIC's receive interrupt (MSI).
    pub const NIC: u64 = denali_abi::boot::NIC_VECTOR as u64;
    /// The monitor's request to stop the debugged VM (MSI).
    pub const DEBUG_REQUEST: u64 = denali_abi::boot::DEBUG_REQUEST_VECTOR as u64;
    /// The legacy PICs' vectors (remapped out of the way, masked).
    pub const PIC: core::ops::RangeInclusive<u64> = 0xe0..=0xef;
    /// The local APIC's spurious-interrupt vector.
    pub const SPURIOUS: u64 = 0xff;
}

/// How a platform hands the kernel the traps it can often finish without
/// its run loop, while the VM runs and without returning from
/// [`Platform::enter_user`]:
///
/// - `hypercall(kernel, tsc low, tsc high)`, for each hypercall but the
///   [`TrapHooks::LEAVING_CALLS`] (which trap as usual), carries out the
///   call in the VM's saved context;
/// - `page_fault(kernel, address)`, for a page fault from ring 3 (its error
///   code in the context), resolves it if it can (a first touch, a first
///   write to a shared page).
///
/// Each answers [`TrapHooks::TO_RUN_LOOP`] (the trap goes back to the run
/// loop: the VM blocks, yields or exits, the fault is the VM's, or the run
/// loop has work first), [`TrapHooks::RESUME`] (the VM resumes at once), or
/// (a hypercall) a TSC value: the VM resumes once the platform's timer is
/// armed for it (the call woke another VM, so the running one's slice must
/// end on time). Only the registers the System V ABI lets a call clobber
/// are saved in the context when a hook is called (and the CPU's frame,
/// with a page fault's error code); the others are still the VM's in the
/// CPU, and the vector (and a hypercall's error code) are stale, so a hook
/// must not read them from the context, and what it writes to the
/// callee-saved ones is lost. Hooks run with interrupts off, on the kernel
/// stack, while the VM's context is still the trap stack: they must not
/// enable interrupts or fault.
#[derive(Clone, Copy)]
pub struct TrapHooks {
    /// The kernel, as the hooks expect it.
    pub kernel: *mut (),
    /// The kernel's entry for hypercalls.
    pub hypercall: unsafe extern "C" fn(kernel: *mut (), tsc_low: u32, tsc_high: u32) -> u64,
    /// The kernel's entry for page faults.
    pub page_fault: unsafe extern "C" fn(kernel: *mut (), address: u64) -> u64,
}

impl TrapHooks {
    /// A hook's answer: back to the run loop.
    pub const TO_RUN_LOOP: u64 = 0;
    /// A hook's answer: the VM resumes.
    pub const RESUME: u64 = 1;
    /// The calls that take the VM off the CPU (`exit`, `yield`, and `idle`
    /// unless an event is pending), by number as bits: a platform hands
    /// them straight to the run loop, which takes the VM off the CPU.
    pub const LEAVING_CALLS: u64 =
        1 << Hypercall::Exit as u64 | 1 << Hypercall::Idle as u64 | 1 << Hypercall::Yield as u64;

    /// Whether a platform hands the call numbered `number` to its hook.
    pub fn takes(number: u64) -> bool {
        number >= 64 || Self::LEAVING_CALLS & 1 << number == 0
    }
}

/// What the core needs from the CPU and the machine around it.
pub trait Platform {
    /// The time-stamp counter.
    fn rdtsc(&self) -> u64;
    /// Whether a preemption timer exists (else a VM that never yields
    /// keeps the CPU).
    fn has_timer(&self) -> bool;
    /// Arms the preemption timer to fire at TSC value `tsc` (0 disarms).
    fn set_deadline(&mut self, tsc: u64);
    /// Acknowledges the interrupt being handled.
    fn end_of_interrupt(&mut self);
    /// Halts until an interrupt arrives.
    fn halt_until_interrupt(&mut self);
    /// Lets interrupts that arrived while the kernel worked with them off
    /// be taken now (a frame for the NIC, noted for
    /// [`Platform::nic_interrupted`]).
    fn take_pending_interrupts(&mut self);
    /// Asks the monitor (if any) to park the CPU for up to `micros`.
    fn idle_for(&mut self, micros: u32);
    /// Whether the NIC interrupted the halted kernel and nobody has taken
    /// what it received since.
    fn nic_interrupted(&self) -> bool;
    /// [`Platform::nic_interrupted`], and clears it: the caller takes
    /// what the NIC received.
    fn take_nic_interrupt(&mut self) -> bool;
    /// Whether the monitor asked, while the kernel was halted, to stop the
    /// debugged VM; clears the request. (Such a request also sets
    /// [`Platform::nic_interrupted`], so that every idle wait ends.)
    fn take_debug_request(&mut self) -> bool;
    /// Makes `root` the page tables in use.
    fn load_address_space(&mut self, root: PhysFrame);
    /// Runs the ring-3 context in the loaded address space until it traps;
    /// a hypercall or page fault goes to `hooks` first (see [`TrapHooks`]),
    /// and unless it says the VM resumes, this returns. On return `context` holds the VM's registers
    /// and `context.vector` the trap. It takes the platform by pointer, as
    /// a hook may reach the platform's owner (never the platform itself)
    /// while it runs: no reference to the platform is held across a call
    /// of a hook.
    ///
    /// # Safety
    ///
    /// `this` must be valid, and `context` valid for reads and writes, for
    /// the call; `context` must describe ring-3 code (user selectors, IOPL
    /// 0) of the VM whose page tables are loaded; `hooks` must be safe to
    /// call as [`TrapHooks`] says, and not touch `*this`.
    unsafe fn enter_user(this: *mut Self, context: *mut UserContext, hooks: TrapHooks);
    /// Runs the state-save routine at `rip` in the loaded address space
    /// (ring 3, interrupts off); true if it ended at its `ud2`, else
    /// `failure` holds how it trapped.
    fn run_save_routine(&mut self, rip: u64, failure: &mut UserContext) -> bool;
    /// The address of the last page fault.
    fn fault_address(&self) -> u64;
    /// Tells the monitor (if any) how many VMs the boot has made so far and
    /// the MiB of memory in use, for its progress bar.
    fn report_progress(&mut self, vms_made: u32, memory_mib: u32);
    /// Tells the monitor (if any) where the kernel keeps its swap
    /// counters, which stay there while VMs run.
    fn share_counters(&mut self, counters: &denali_abi::counters::SwapCounters);
    /// Hands the monitor (if any) `event`: a VM crashed (its memory still
    /// mapped as the event says) or the debugged VM stopped. The monitor
    /// has read what it wants when this returns, and for a stop has
    /// written its answer into `event` (else it is left as it was).
    fn debug_event(&mut self, event: &mut denali_abi::debug::DebugEvent);
}

/// The machine's NIC: the virtual switch's uplink.
pub trait NetDevice {
    /// Whether it raises no interrupt the kernel takes, so the run loop
    /// polls it.
    fn polled(&self) -> bool;
    /// Queues one frame for sending (dropped, and counted, when full).
    fn send(&mut self, frame: &[u8]);
    /// Acknowledges its interrupt; then [`NetDevice::receive_into`] takes
    /// what arrived.
    fn acknowledge(&mut self);
    /// Copies the next frame received into `out`; its length.
    fn receive_into(&mut self, out: &mut [u8; FRAME_MAX]) -> Option<usize>;
    /// Whether a frame waits to be taken.
    fn has_received(&self) -> bool;
    /// Turns the interrupt for received frames on or off (the run loop
    /// polls meanwhile); nothing for a NIC that is polled anyway.
    fn interrupt_on_receive(&mut self, on: bool);
    /// Frames sent, frames received, frames dropped at a full ring.
    fn counters(&self) -> (u64, u64, u64);
}

/// The machine's disk, holding the VMs' windows and the swap area.
pub trait BlockDevice {
    /// Its size in sectors.
    fn sectors(&self) -> u64;
    /// Its Denali label.
    fn label(&self) -> DiskLabel;
    /// Reads `len` bytes (whole sectors, at most `DISK_IO_MAX`) from
    /// `sector`; the data is valid until the next call.
    fn read(&mut self, sector: u64, len: usize) -> Result<&[u8], Error>;
    /// Writes `len` bytes from `sector`, which `fill` puts in the buffer
    /// it is handed.
    fn write(
        &mut self,
        sector: u64,
        len: usize,
        fill: &mut dyn FnMut(&mut [u8]) -> Result<(), Error>,
    ) -> Result<(), Error>;
    /// The most frames one `write_frames` or `read_frames` moves.
    fn frames_per_transfer(&self) -> usize;
    /// Writes the 4 KiB frames at physical addresses `frames` to
    /// consecutive pages from `sector`, in one request; the data segments
    /// it carried (see [`crate::swap::extents`]).
    ///
    /// # Safety
    ///
    /// Each frame must be RAM, listed once, that nothing writes meanwhile.
    unsafe fn write_frames(&mut self, sector: u64, frames: &[u64]) -> Result<usize, Error>;
    /// Reads consecutive pages from `sector` into the frames at physical
    /// addresses `frames`, in one request; the data segments it carried.
    ///
    /// # Safety
    ///
    /// Each frame must be RAM the caller owns, listed once, mapped nowhere
    /// a VM could see it half-written.
    unsafe fn read_frames(&mut self, sector: u64, frames: &[u64]) -> Result<usize, Error>;
}
