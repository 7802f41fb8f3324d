//! A simulated machine for the kernel core's host tests: "physical memory"
//! is a buffer of the test process (the physmap is moved onto it), the CPU
//! is a [`Sim`] whose VMs are programs (closures that act as the VM's code
//! between two traps, reading and writing the VM's memory through its own
//! page tables), and the heap counts what each test thread allocates, so a
//! test can tell whether anything a VM did made the kernel's memory grow.
//!
//! Everything above the [`Platform`] is the kernel's own code: admission,
//! the loader, page tables, the run loop, hypercall dispatch, the switch.

use crate::mem::frame::{FRAME_SIZE, FrameAllocator};
use crate::mem::phys;
use crate::platform::{BlockDevice, Platform, TrapHooks, vectors};
use crate::run::Kernel;
use crate::run::admission::KernelBuilder;
use crate::time::Clock;
use crate::vm::context::{UserContext, UserSelectors};
use crate::vm::state_switch::StateSwitch;
use denali_abi::boot::{Bundle, BundleSpec, build_bundle};
use denali_abi::disk::{DiskLabel, FIRST_DATA_SECTOR, SECTOR_SIZE};
use denali_abi::hypercall::Error as DiskError;
use denali_abi::image::{SEG_EXEC, SEG_READ, SegmentSpec, build_image};
use denali_abi::info::InfoPage;
use denali_abi::layout::IMAGE_BASE;
use denali_abi::layout::INFO_PAGE;
use denali_abi::net::Ipv4Config;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::rc::Rc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use x86_64::VirtAddr;
use x86_64::structures::paging::mapper::TranslateResult;
use x86_64::structures::paging::{OffsetPageTable, PageTable, PageTableFlags, PhysFrame, Translate};

/// The global allocator of the kernel's test binary: the system's, with
/// the bytes each thread has allocated and not freed counted.
pub struct CountingAlloc;

thread_local! {
    static NET_BYTES: Cell<isize> = const { Cell::new(0) };
    static PEAK_BYTES: Cell<isize> = const { Cell::new(0) };
}

// SAFETY: every call goes to the system allocator unchanged; the counter
// only observes.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let now = NET_BYTES.with(|n| {
            n.set(n.get() + layout.size() as isize);
            n.get()
        });
        PEAK_BYTES.with(|p| p.set(p.get().max(now)));
        // SAFETY: the caller's promise about `layout`, passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        NET_BYTES.with(|n| n.set(n.get() - layout.size() as isize));
        // SAFETY: `ptr` came from `alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// Bytes this thread has allocated and not freed.
pub fn heap_in_use_by_this_thread() -> isize {
    NET_BYTES.with(Cell::get)
}

/// Starts counting this thread's peak afresh; returns what it holds now.
pub fn reset_heap_peak() -> isize {
    let now = heap_in_use_by_this_thread();
    PEAK_BYTES.with(|p| p.set(now));
    now
}

/// The most bytes this thread held at once since [`reset_heap_peak`].
pub fn heap_peak_of_this_thread() -> isize {
    PEAK_BYTES.with(Cell::get)
}

/// All host "physical memory" (never touched pages cost nothing).
const HOST_MEMORY: u64 = 4 << 30;
/// Where the next test's region starts.
static NEXT_REGION: AtomicU64 = AtomicU64::new(FRAME_SIZE);

/// `mib` MiB of host physical memory for one test, as a frame allocator
/// (every test gets its own range; the physmap is shared).
pub fn frames(mib: u64) -> FrameAllocator {
    static BASE: OnceLock<usize> = OnceLock::new();
    let base = *BASE.get_or_init(|| {
        let layout = Layout::from_size_align(HOST_MEMORY as usize, FRAME_SIZE as usize).expect("a layout");
        // SAFETY: a non-zero size; the memory is never freed (it is the
        // machine's RAM for the whole test run).
        let base = unsafe { std::alloc::alloc_zeroed(layout) };
        assert!(!base.is_null(), "no host memory for the simulated machine");
        phys::use_host_memory(base);
        base as usize
    });
    let _ = base;
    let start = NEXT_REGION.fetch_add(mib << 20, Ordering::Relaxed);
    assert!(start + (mib << 20) <= HOST_MEMORY, "the simulated machine's memory is used up");
    FrameAllocator::new([(start, start + (mib << 20))])
}

/// What a VM's program did when it stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trap {
    /// A hypercall, with the number and arguments it put in the registers.
    Hypercall,
    /// It touched `addr` (writing, or not) and the page is not mapped
    /// that way.
    PageFault { addr: u64, write: bool },
    /// It ran `int3` (`rip` is after it).
    Breakpoint,
    /// It ran one instruction with the trap flag set.
    SingleStep,
    /// It computed until the timer took the CPU back.
    Spin,
    /// It computed until the monitor asked to stop the debugged VM.
    DebugRequest,
}

/// A debugger's answer to a stop: the command, and how it changes the
/// VM's registers.
pub type Answer = (denali_abi::debug::Command, fn(&mut denali_abi::debug::UserRegs));

/// The x86 trap flag.
const TRAP_FLAG: u64 = 1 << 8;

/// A VM's code: runs from the VM's registers to its next trap.
pub type Program = Box<dyn FnMut(&mut Guest, &mut UserContext) -> Trap>;

/// A VM's view of its own flat memory, through its page tables.
pub struct Guest {
    root: PhysFrame,
}

impl Guest {
    fn translate(&self, addr: u64, write: bool) -> Result<*mut u8, Trap> {
        // SAFETY: the root is a page table of the running VM, in the host
        // physical memory the physmap points at; only read here.
        let tables = unsafe {
            OffsetPageTable::new(
                &mut *(phys::to_virt(self.root.start_address().as_u64()) as *mut PageTable),
                phys::virt_addr(0),
            )
        };
        let fault = Trap::PageFault { addr, write };
        let Ok(virt) = VirtAddr::try_new(addr) else { return Err(fault) };
        match tables.translate(virt) {
            TranslateResult::Mapped { frame, offset, flags } => {
                let allowed = flags.contains(PageTableFlags::USER_ACCESSIBLE)
                    && (!write || flags.contains(PageTableFlags::WRITABLE));
                if !allowed {
                    return Err(fault);
                }
                Ok(phys::to_virt(frame.start_address().as_u64() + offset))
            }
            _ => Err(fault),
        }
    }

    /// Writes `bytes` at `addr` as the VM's own stores would (a page
    /// fault if a page is not mapped writable).
    pub fn write(&mut self, addr: u64, bytes: &[u8]) -> Result<(), Trap> {
        let mut done = 0;
        while done < bytes.len() {
            let at = addr + done as u64;
            let chunk = ((FRAME_SIZE - at % FRAME_SIZE) as usize).min(bytes.len() - done);
            let ptr = self.translate(at, true)?;
            // SAFETY: the page is mapped writable for the VM, in host
            // memory, and the chunk stays within it.
            unsafe { core::ptr::copy_nonoverlapping(bytes[done..].as_ptr(), ptr, chunk) };
            done += chunk;
        }
        Ok(())
    }

    /// Reads `out.len()` bytes at `addr` as the VM's own loads would.
    pub fn read(&self, addr: u64, out: &mut [u8]) -> Result<(), Trap> {
        let mut done = 0;
        while done < out.len() {
            let at = addr + done as u64;
            let chunk = ((FRAME_SIZE - at % FRAME_SIZE) as usize).min(out.len() - done);
            let ptr = self.translate(at, false)?;
            // SAFETY: the page is mapped readable for the VM, in host
            // memory, and the chunk stays within it.
            unsafe { core::ptr::copy_nonoverlapping(ptr, out[done..].as_mut_ptr(), chunk) };
            done += chunk;
        }
        Ok(())
    }

    /// Reads the info page.
    pub fn info(&self) -> InfoPage {
        let ptr = self.translate(INFO_PAGE, false).expect("every VM has its info page");
        // SAFETY: the info page is mapped, a whole page, holding an InfoPage.
        unsafe { (ptr as *const InfoPage).read() }
    }
}

/// The simulated CPU: a TSC that moves a microsecond a look, a timer, and
/// the VMs' programs, by the page tables they run on.
pub struct Sim {
    tsc: Rc<Cell<u64>>,
    /// How far the TSC moves each time it is read.
    ticks_per_look: u64,
    deadline: u64,
    cr2: u64,
    root: Option<PhysFrame>,
    /// Each VM's program, by VM id (which the info page says).
    programs: Vec<Program>,
    /// Times the state-save routine ran.
    pub saves: u64,
    /// Traps that end the next runs of the state-save routine instead of
    /// its `ud2`, by vector, in order (then it saves).
    pub save_traps: std::collections::VecDeque<u64>,
    /// What the kernel reported of its boot's progress.
    pub progress: Vec<(u32, u32)>,
    /// Where the kernel said its swap counters are.
    pub shared_counters: Option<*const denali_abi::counters::SwapCounters>,
    /// Every debug event the kernel handed over, in order.
    pub events: Vec<denali_abi::debug::DebugEvent>,
    /// The debugger's answers to stops, in order, and how it changes the
    /// registers (then: run on).
    pub answers: std::collections::VecDeque<Answer>,
    /// The monitor asked to stop the debugged VM while the kernel was
    /// halted (shared, so that a VM's program can stand in for the monitor).
    pub debug_request: Rc<Cell<bool>>,
}

/// The simulated TSC's frequency: 1 GHz (1 ns a tick).
pub const TSC_KHZ: u64 = 1_000_000;
impl Sim {
    /// A CPU whose TSC moves a microsecond each time it is read.
    pub fn new() -> Sim {
        Sim::with_ticks_per_look(1_000)
    }

    /// A CPU whose TSC moves `ticks` each time it is read (a slow machine).
    pub fn with_ticks_per_look(ticks: u64) -> Sim {
        Sim {
            tsc: Rc::new(Cell::new(0)),
            ticks_per_look: ticks,
            deadline: 0,
            cr2: 0,
            root: None,
            programs: Vec::new(),
            saves: 0,
            save_traps: Default::default(),
            progress: Vec::new(),
            shared_counters: None,
            events: Vec::new(),
            answers: Default::default(),
            debug_request: Rc::default(),
        }
    }
}

/// Which hook the simulated CPU calls, with what.
#[derive(Clone, Copy)]
enum Hook {
    /// A hypercall, at this TSC.
    Hypercall(u64),
    /// A page fault at this address.
    PageFault(u64),
}

/// What a trap hook finds in the context's slots the machine does not save
/// while it runs (the callee-saved registers, the vector).
const CALLEE_SAVED_POISON: u64 = 0x5afe_d000_0000_0bad;

/// A context's callee-saved registers.
fn callee_saved(context: &mut UserContext) -> [&mut u64; 6] {
    [&mut context.rbx, &mut context.rbp, &mut context.r12, &mut context.r13, &mut context.r14, &mut context.r15]
}

impl Sim {
    /// Runs the current VM's program until it traps, as the CPU would.
    fn run_program(&mut self, context: &mut UserContext) {
        let root = self.root.expect("a VM's tables are loaded before it runs");
        let mut guest = Guest { root };
        // Entering through the state-restore routine: it hands back the
        // registers noted on the info page.
        if StateSwitch::contains(context.rip) {
            let resume = guest.info().resume;
            (context.rip, context.rax, context.rdx) = (resume.rip, resume.rax, resume.rdx);
            // With the trap flag set, the CPU traps where the routine
            // lands, before the VM's next instruction.
            if context.rflags & TRAP_FLAG != 0 {
                context.vector = vectors::DEBUG;
                return;
            }
        }
        let id = guest.info().vm_id as usize;
        let program = self.programs.get_mut(id).expect("a program for this VM");
        match program(&mut guest, context) {
            Trap::Hypercall => context.vector = vectors::HYPERCALL,
            Trap::Breakpoint => context.vector = vectors::BREAKPOINT,
            Trap::SingleStep => context.vector = vectors::DEBUG,
            Trap::DebugRequest => context.vector = vectors::DEBUG_REQUEST,
            Trap::Spin => {
                assert!(self.deadline != 0, "a VM spins with no timer armed: the kernel would never run again");
                self.tsc.set(self.tsc.get().max(self.deadline));
                context.vector = vectors::TIMER;
            }
            Trap::PageFault { addr, write } => {
                let present = guest.translate(addr, false).is_ok();
                context.vector = vectors::PAGE_FAULT;
                context.error_code = u64::from(present) | if write { 2 } else { 0 } | 4;
                self.cr2 = addr;
            }
        }
    }

    /// The TSC, for programs that read the clock (as a VM does, with the
    /// info page's `tsc_base` and `tsc_mult`).
    pub fn tsc(&self) -> Rc<Cell<u64>> {
        Rc::clone(&self.tsc)
    }
}

impl Default for Sim {
    fn default() -> Sim {
        Sim::new()
    }
}

impl Platform for Sim {
    fn rdtsc(&self) -> u64 {
        self.tsc.set(self.tsc.get() + self.ticks_per_look);
        self.tsc.get()
    }

    fn has_timer(&self) -> bool {
        true
    }

    fn set_deadline(&mut self, tsc: u64) {
        self.deadline = tsc;
    }

    fn end_of_interrupt(&mut self) {}

    fn halt_until_interrupt(&mut self) {
        // The timer is the only interrupt: time jumps to it.
        if self.deadline > self.tsc.get() {
            self.tsc.set(self.deadline);
        }
    }

    fn take_pending_interrupts(&mut self) {}

    fn idle_for(&mut self, micros: u32) {
        self.tsc.set(self.tsc.get() + u64::from(micros) * 1000);
    }

    fn nic_interrupted(&self) -> bool {
        false
    }

    fn take_nic_interrupt(&mut self) -> bool {
        false
    }

    fn take_debug_request(&mut self) -> bool {
        self.debug_request.take()
    }

    fn load_address_space(&mut self, root: PhysFrame) {
        self.root = Some(root);
    }

    unsafe fn enter_user(this: *mut Self, context: *mut UserContext, hooks: TrapHooks) {
        loop {
            // SAFETY: the caller's promise: both are valid for the call, and
            // neither reference outlives this block (a hook may reach the
            // kernel that owns the simulation).
            let (hook, kept) = unsafe {
                let (sim, context) = (&mut *this, &mut *context);
                sim.run_program(context);
                let hook = match context.vector {
                    vectors::HYPERCALL if TrapHooks::takes(context.rax) => {
                        let tsc = sim.rdtsc();
                        Hook::Hypercall(tsc)
                    }
                    vectors::PAGE_FAULT => Hook::PageFault(sim.cr2),
                    _ => return,
                };
                // As on the machine, the callee-saved registers are not in
                // the context while a hook runs, nor the vector (nor a
                // hypercall's error code): it must not read them.
                let kept = callee_saved(context).map(|slot| core::mem::replace(slot, CALLEE_SAVED_POISON));
                context.vector = CALLEE_SAVED_POISON;
                if matches!(hook, Hook::Hypercall(_)) {
                    context.error_code = CALLEE_SAVED_POISON;
                }
                (hook, kept)
            };
            // SAFETY: the caller's promise for the hooks; no reference into
            // the simulation or the context is held across them.
            let answer = unsafe {
                match hook {
                    Hook::Hypercall(tsc) => (hooks.hypercall)(hooks.kernel, tsc as u32, (tsc >> 32) as u32),
                    Hook::PageFault(address) => (hooks.page_fault)(hooks.kernel, address),
                }
            };
            // SAFETY: as above. Either way they are the VM's again: still
            // in the CPU, or stored by the stub on its way to the run loop
            // with the vector (and a hypercall's error code of 0).
            unsafe {
                let context = &mut *context;
                callee_saved(context).into_iter().zip(kept).for_each(|(slot, value)| *slot = value);
                (context.vector, context.error_code) = match hook {
                    Hook::Hypercall(_) => (vectors::HYPERCALL, 0),
                    Hook::PageFault(_) => (vectors::PAGE_FAULT, context.error_code),
                };
            }
            match (answer, hook) {
                (TrapHooks::RESUME, _) => {}
                // Only a hypercall's hook may answer a deadline; the
                // page-fault stub takes anything else for the run loop.
                // SAFETY: as above.
                (deadline, Hook::Hypercall(_)) if deadline != TrapHooks::TO_RUN_LOOP => unsafe {
                    (*this).set_deadline(deadline)
                },
                _ => return,
            }
        }
    }

    fn run_save_routine(&mut self, rip: u64, failure: &mut UserContext) -> bool {
        self.saves += 1;
        let Some(vector) = self.save_traps.pop_front() else { return true };
        // The trap path writes the whole context; what matters is why.
        *failure = UserContext { vector, rip, ..UserContext::default() };
        false
    }

    fn fault_address(&self) -> u64 {
        self.cr2
    }

    fn report_progress(&mut self, vms_made: u32, memory_mib: u32) {
        self.progress.push((vms_made, memory_mib));
    }

    fn debug_event(&mut self, event: &mut denali_abi::debug::DebugEvent) {
        self.events.push(*event);
        if !event.is_crash()
            && let Some((command, change)) = self.answers.pop_front()
        {
            event.command = command as u64;
            change(&mut event.regs);
        }
    }

    fn share_counters(&mut self, counters: &denali_abi::counters::SwapCounters) {
        self.shared_counters = Some(counters);
    }
}

/// A minimal image: one page of "code" (the programs stand in for it), in
/// a flat space of 4 MiB.
pub fn image() -> Vec<u8> {
    image_of(4 << 20)
}

/// As [`image`], in a flat space of `mem_size` bytes (its stack at the top).
pub fn image_of(mem_size: u64) -> Vec<u8> {
    let code = [0xf4u8; 16];
    let text = SegmentSpec { vaddr: IMAGE_BASE, mem_size: 0x1000, flags: SEG_READ | SEG_EXEC, data: &code };
    build_image(IMAGE_BASE, mem_size, 64 << 10, &[text])
}

/// A kernel on a [`Sim`] with `mib` MiB of memory, a pool of `frame_slots`
/// frames, and `vms` VMs of [`image`] at consecutive addresses from
/// 10.0.2.15, each running the program `program(id)` makes.
pub fn kernel(mib: u64, frame_slots: u32, vms: u32, program: impl FnMut(u32) -> Program) -> Kernel<Sim> {
    kernel_on(Sim::new(), mib, frame_slots, vms, program)
}

/// As [`kernel`], on the CPU `sim`.
pub fn kernel_on(sim: Sim, mib: u64, frame_slots: u32, vms: u32, program: impl FnMut(u32) -> Program) -> Kernel<Sim> {
    kernel_with_disk(sim, &image(), mib, frame_slots, None, 0, vms, program)
}

/// As [`kernel_on`], with 16 MiB and the run's time limit set before the
/// VMs are made, as the boot sets it.
pub fn kernel_with_time_limit(sim: Sim, limit_ms: u64, vms: u32, program: impl FnMut(u32) -> Program) -> Kernel<Sim> {
    kernel_with_disk(sim, &image(), 16, 64, None, limit_ms, vms, program)
}

/// As [`kernel`], with a [`RamDisk`] of `swap_pages` pages of swap area.
pub fn kernel_with_swap(mib: u64, swap_pages: u64, vms: u32, program: impl FnMut(u32) -> Program) -> Kernel<Sim> {
    kernel_with_swap_of(&image(), mib, swap_pages, vms, program)
}

/// As [`kernel_with_swap`], with VMs of `image`.
pub fn kernel_with_swap_of(
    image: &[u8],
    mib: u64,
    swap_pages: u64,
    vms: u32,
    program: impl FnMut(u32) -> Program,
) -> Kernel<Sim> {
    let disk: Option<Box<dyn BlockDevice>> = Some(Box::new(RamDisk::with_swap(swap_pages)));
    kernel_with_disk(Sim::new(), image, mib, 64, disk, 0, vms, program)
}

#[allow(clippy::too_many_arguments)] // the test kernels' one builder
fn kernel_with_disk(
    sim: Sim,
    image: &[u8],
    mib: u64,
    frame_slots: u32,
    disk: Option<Box<dyn BlockDevice>>,
    time_limit_ms: u64,
    vms: u32,
    mut program: impl FnMut(u32) -> Program,
) -> Kernel<Sim> {
    let mut frames = frames(mib);
    let kernel_pml4 = phys::alloc_zeroed(&mut frames).expect("a frame for the kernel's tables");
    let switch_frame = phys::alloc_zeroed(&mut frames).expect("a frame for the state-switch code");
    let selectors = UserSelectors { code: 0x23, data: 0x1b };
    let state_switch = StateSwitch::new(switch_frame, 0x3000, 0x3080, selectors);
    let mut kernel = KernelBuilder::new(sim, frames, Clock::start(TSC_KHZ, 0), kernel_pml4, state_switch)
        .frame_budget(frame_slots)
        .progress_on_console(true)
        .disk(disk)
        .build()
        .expect("a kernel");
    kernel.set_time_limit_ms(time_limit_ms);
    let spec = BundleSpec { name: "sim", instances: vms, image, args: "", ipv4: Ipv4Config::DEFAULT, disk_sectors: 0 };
    let bundle = build_bundle(&[spec]);
    kernel.admit_bundle(&Bundle::parse(&bundle).expect("a valid bundle"), 64 << 20).expect("room for the VMs");
    for id in 0..vms {
        kernel.platform.programs.push(program(id));
    }
    kernel
}

/// A disk in the test's memory: a label, then a swap area.
pub struct RamDisk {
    bytes: Vec<u8>,
    label: DiskLabel,
}

impl RamDisk {
    /// A disk whose swap area holds `pages` pages.
    pub fn with_swap(pages: u64) -> RamDisk {
        let swap_start = FIRST_DATA_SECTOR;
        let swap_sectors = pages * FRAME_SIZE / SECTOR_SIZE as u64;
        let bytes = vec![0; ((swap_start + swap_sectors) * SECTOR_SIZE as u64) as usize];
        RamDisk { bytes, label: DiskLabel { windows_end: swap_start, swap_start, swap_sectors } }
    }

    /// The bytes of `frames.len()` pages from `sector`, if on the disk.
    fn pages(&mut self, sector: u64, frames: &[u64]) -> Result<&mut [u8], DiskError> {
        let start = (sector * SECTOR_SIZE as u64) as usize;
        let end = start + frames.len() * FRAME_SIZE as usize;
        self.bytes.get_mut(start..end).ok_or(DiskError::Io)
    }
}

impl BlockDevice for RamDisk {
    fn sectors(&self) -> u64 {
        (self.bytes.len() / SECTOR_SIZE) as u64
    }

    fn label(&self) -> DiskLabel {
        self.label
    }

    fn read(&mut self, _sector: u64, _len: usize) -> Result<&[u8], DiskError> {
        Err(DiskError::Io)
    }

    fn write(
        &mut self,
        _sector: u64,
        _len: usize,
        _fill: &mut dyn FnMut(&mut [u8]) -> Result<(), DiskError>,
    ) -> Result<(), DiskError> {
        Err(DiskError::Io)
    }

    fn frames_per_transfer(&self) -> usize {
        32
    }

    unsafe fn write_frames(&mut self, sector: u64, frames: &[u64]) -> Result<usize, DiskError> {
        let pages = self.pages(sector, frames)?;
        for (page, &frame) in pages.chunks_mut(FRAME_SIZE as usize).zip(frames) {
            // SAFETY: the caller's promise: `frame` is RAM (in the test's
            // memory, through the physmap), a whole frame.
            page.copy_from_slice(unsafe { core::slice::from_raw_parts(phys::to_virt(frame), page.len()) });
        }
        Ok(crate::swap::extents(frames).count())
    }

    unsafe fn read_frames(&mut self, sector: u64, frames: &[u64]) -> Result<usize, DiskError> {
        let pages = self.pages(sector, frames)?;
        for (page, &frame) in pages.chunks(FRAME_SIZE as usize).zip(frames) {
            // SAFETY: the caller's promise: `frame` is RAM it owns, a whole
            // frame, mapped nowhere.
            unsafe { core::ptr::copy_nonoverlapping(page.as_ptr(), phys::to_virt(frame), page.len()) };
        }
        Ok(crate::swap::extents(frames).count())
    }
}

/// One hypercall a program makes: number and up to three arguments.
pub type Call = (u64, u64, u64, u64);

/// A program that makes the hypercalls `next` gives (each one after the
/// previous returned, with its result), then exits with status 0.
pub fn calls(mut next: impl FnMut(&mut Guest, Option<u64>) -> Option<Call> + 'static) -> Program {
    let mut started = false;
    Box::new(move |guest, context| {
        let result = started.then_some(context.rax);
        started = true;
        let (number, a0, a1, a2) = next(guest, result).unwrap_or((0, 0, 0, 0));
        (context.rax, context.rdi, context.rsi, context.rdx) = (number, a0, a1, a2);
        Trap::Hypercall
    })
}
