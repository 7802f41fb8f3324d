//! The Denali VM: a ring-3 domain with its registers, its address space,
//! its pending events and its accounting.

pub mod context;
pub mod debug;
pub mod fault;
pub mod hypercall;
pub mod loader;
pub mod memory;
pub mod state_switch;

use crate::mem::phys;
use crate::mem::space::AddressSpace;
use crate::sched::VmId;
use alloc::string::String;
use context::UserContext;
use denali_abi::info::InfoPage;

/// Where a VM is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// In the run queue, or running.
    Runnable,
    /// Called `idle` with nothing pending; waits for an event.
    Idle,
}

/// Per-VM accounting.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stats {
    /// TSC ticks spent running in ring 3 and in its hypercalls.
    pub cpu_ticks: u64,
    /// Hypercalls made.
    pub hypercalls: u64,
    /// Pages it owns (touched heap and stack, copied data, its info page).
    pub resident_pages: u64,
    /// Image pages it maps but shares with the other VMs of its image.
    pub shared_pages: u64,
    /// Times it was woken from `idle`.
    pub wakeups: u64,
    /// Frames it sent that the switch took.
    pub frames_sent: u64,
    /// Frames put in its receive ring.
    pub frames_received: u64,
    /// Frames for it dropped because its ring (or the sender's share of
    /// it) was full.
    pub frames_dropped: u64,
    /// Bytes it read from its disk window.
    pub disk_read_bytes: u64,
    /// Bytes it wrote to its disk window.
    pub disk_written_bytes: u64,
    /// Times it was swapped out.
    pub swap_outs: u64,
    /// Pages written to swap.
    pub pages_swapped_out: u64,
    /// Times it was swapped back in whole.
    pub swap_ins: u64,
    /// Pages read back from swap.
    pub pages_swapped_in: u64,
}

impl Stats {
    /// Each field of `self` and `other` combined by `f`: the one place the
    /// fields are listed, for totals, maxima and means.
    pub fn zip_with(&self, other: &Stats, f: impl Fn(u64, u64) -> u64) -> Stats {
        Stats {
            cpu_ticks: f(self.cpu_ticks, other.cpu_ticks),
            hypercalls: f(self.hypercalls, other.hypercalls),
            resident_pages: f(self.resident_pages, other.resident_pages),
            shared_pages: f(self.shared_pages, other.shared_pages),
            wakeups: f(self.wakeups, other.wakeups),
            frames_sent: f(self.frames_sent, other.frames_sent),
            frames_received: f(self.frames_received, other.frames_received),
            frames_dropped: f(self.frames_dropped, other.frames_dropped),
            disk_read_bytes: f(self.disk_read_bytes, other.disk_read_bytes),
            disk_written_bytes: f(self.disk_written_bytes, other.disk_written_bytes),
            swap_outs: f(self.swap_outs, other.swap_outs),
            pages_swapped_out: f(self.pages_swapped_out, other.pages_swapped_out),
            swap_ins: f(self.swap_ins, other.swap_ins),
            pages_swapped_in: f(self.pages_swapped_in, other.pages_swapped_in),
        }
    }
}

impl core::ops::AddAssign<&Stats> for Stats {
    /// Adds another VM's accounting (for totals).
    fn add_assign(&mut self, other: &Stats) {
        *self = self.zip_with(other, u64::saturating_add);
    }
}

/// The exit status of a VM stopped by a fault: 128 + the vector, as a
/// shell reports a process killed by a signal.
pub const fn fault_status(vector: u64) -> i32 {
    128 + vector as i32
}

/// Flat-address-space regions the kernel fills with zero pages on first
/// touch: the heap and the stack.
#[derive(Clone, Copy, Debug)]
pub struct Layout {
    /// Size of the flat space.
    pub mem_size: u64,
    /// `[heap_start, heap_end)`.
    pub heap: (u64, u64),
    /// `[stack_bottom, stack_top)`.
    pub stack: (u64, u64),
}

impl Layout {
    /// Whether `addr` lies in a demand-zero region.
    pub fn is_demand_zero(&self, addr: u64) -> bool {
        (self.heap.0..self.heap.1).contains(&addr) || (self.stack.0..self.stack.1).contains(&addr)
    }

    /// Whether `addr` is in the guard page below the stack.
    pub fn is_stack_guard(&self, addr: u64) -> bool {
        (self.heap.1..self.stack.0).contains(&addr)
    }
}

/// One VM.
pub struct Vm {
    /// Its id, also its index in the kernel's table.
    pub id: VmId,
    /// The image's name.
    pub name: String,
    /// Saved registers.
    pub context: UserContext,
    /// Its page tables; `None` before it first runs and while it is
    /// swapped out whole.
    pub space: Option<AddressSpace>,
    /// The frame behind its info page; `None` while that page is not in
    /// memory.
    pub info_frame: Option<u64>,
    /// Which of the kernel's templates it was made from.
    pub template: u32,
    /// Where its heap and stack are.
    pub layout: Layout,
    /// Where it is in its life.
    pub state: State,
    /// Events not yet delivered.
    pub pending: u64,
    /// Frames in its receive ring, as its info page says (see
    /// [`Vm::set_rx_frames`]).
    pub rx_frames: u32,
    /// What is left of its console output rate.
    pub console_budget: crate::rate::TokenBucket,
    /// Accounting.
    pub stats: Stats,
    /// What is left of its time slice (a full slice after it used one up).
    pub slice_left: u64,
    /// Its last fault needed a frame and none was free.
    pub out_of_memory: bool,
    /// Its IPv4 configuration (all zero: no address).
    pub ipv4: denali_abi::net::Ipv4Config,
    /// Its window of the machine's disk (no sectors: no disk).
    pub disk: denali_abi::disk::Window,
    /// Its pages in the swap area (empty: it is resident).
    pub swapped: alloc::vec::Vec<crate::swap::SwappedPage>,
    /// The stamp of its latest entry in the kernel's idle queue.
    pub idle_stamp: u64,
    /// When it last started to run (global clock).
    pub last_ran: u64,
    /// Turns it has waited, swapped out, for room to come back in.
    pub deferrals: u32,
    /// The page-table frames it had when it last went out whole: coming
    /// back, its pages need as many (its image's tables are only some).
    pub tables_when_out: u32,
    /// Never swapped out (a debugger holds it).
    pub pinned: bool,
    /// Started and still booting (see `run::starting`).
    pub booting: bool,
    /// Turns it has had on the CPU while booting.
    pub boot_turns: u32,
    /// Frames it was expected to take while booting, when it started.
    pub boot_expected: u32,
    /// Its share of what the booting VMs may still take.
    pub boot_left: u32,
}

impl Vm {
    /// Its info page, writable by the kernel, if it is in memory.
    pub fn info_mut(&mut self) -> Option<&mut InfoPage> {
        // SAFETY: the info frame belongs to this VM; the VM itself can only
        // read it, and it does not run while the kernel holds this borrow.
        self.info_frame.map(|frame| unsafe { &mut *(phys::to_virt(frame) as *mut InfoPage) })
    }

    /// Adds event bits to the pending set (and the info page's copy, which
    /// a VM out of memory gets when it comes back).
    pub fn raise(&mut self, events: u64) {
        self.pending |= events;
        self.sync_info_page();
    }

    /// Copies the pending set and the receive ring's length to the info
    /// page, if that page is in memory (what changed while it was out
    /// reaches it when it comes back).
    pub fn sync_info_page(&mut self) {
        let (pending, rx_frames) = (self.pending, self.rx_frames);
        if let Some(info) = self.info_mut() {
            info.pending_events = pending;
            info.rx_frames = rx_frames;
        }
    }

    /// Tells the VM (on its info page) how many frames wait in its receive
    /// ring: the ring changed. A VM that reads 0 there skips `net_recv`.
    pub fn set_rx_frames(&mut self, frames: u16) {
        self.rx_frames = u32::from(frames);
        if let Some(info) = self.info_mut() {
            info.rx_frames = u32::from(frames);
        }
    }

    /// Whether it has never been in memory: no tables, no pages anywhere.
    pub fn is_unborn(&self) -> bool {
        self.space.is_none() && self.swapped.is_empty()
    }

    /// Whether it is in memory whole (and so can run).
    pub fn is_resident(&self) -> bool {
        self.space.is_some() && self.swapped.is_empty()
    }

    /// Whether it is resident and owns pages to swap out besides its info
    /// page.
    pub fn has_pages_to_swap(&self) -> bool {
        !self.pinned && self.swapped.is_empty() && self.space.as_ref().is_some_and(|space| space.private_pages() > 1)
    }

    /// Takes the whole pending batch.
    pub fn take_pending(&mut self) -> u64 {
        let events = core::mem::take(&mut self.pending);
        if let Some(info) = self.info_mut() {
            info.pending_events = 0;
        }
        events
    }
}
