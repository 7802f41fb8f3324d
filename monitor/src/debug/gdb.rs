//! `cargo denali run --gdb PORT`: gdb's remote protocol (the `gdbstub`
//! crate) for one VM, served on the vCPU's thread while that VM is stopped.
//!
//! The kernel stops the debugged VM at its entry point, after each single
//! step, at `int3`, when gdb interrupts it (see [`super::watch`]) and when
//! it exits or crashes, and hands the monitor a [`DebugEvent`]. The
//! monitor then talks to gdb until gdb resumes the VM, and writes the
//! registers gdb set and the [`Command`] (continue, step, or kill, which
//! ends the VM) back into the event. gdb sees only that VM's flat address
//! space, read and written through the VM's own page tables; it may write
//! memory (and plant breakpoints) only once the kernel says every page of
//! the VM is the VM's own copy.

use super::walk::VmSpace;
use super::watch::{Raise, Watcher};
use denali_abi::debug::{Command, DebugEvent, EVENT_MEMORY_PRIVATE, EventKind};
use denali_abi::layout::IMAGE_BASE;
use gdbstub::common::Signal;
use gdbstub::conn::ConnectionExt;
use gdbstub::stub::state_machine::GdbStubStateMachine;
use gdbstub::stub::{DisconnectReason, GdbStub, SingleThreadStopReason};
use gdbstub::target::ext::base::BaseOps;
use gdbstub::target::ext::base::singlethread::{
    SingleThreadBase, SingleThreadResume, SingleThreadResumeOps, SingleThreadSingleStep, SingleThreadSingleStepOps,
};
use gdbstub::target::ext::breakpoints::{Breakpoints, BreakpointsOps, SwBreakpoint, SwBreakpointOps};
use gdbstub::target::{Target, TargetError, TargetResult};
use gdbstub_arch::x86::X86_64_SSE;
use gdbstub_arch::x86::reg::X86_64CoreRegs;
use std::collections::BTreeMap;
use std::net::{TcpListener, TcpStream};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// `int3`.
const BREAKPOINT: u8 = 0xcc;
const PAGE_SIZE: u64 = 4096;

type Session = GdbStubStateMachine<'static, VmTarget, TcpStream>;

/// The gdb server of a run.
pub struct GdbServer {
    listener: TcpListener,
    session: Option<Session>,
    target: VmTarget,
    /// gdb left (or the connection broke): the VM runs on undebugged.
    detached: bool,
    /// Raises the kernel's debug-request interrupt (until gdb connects).
    raise: Option<Raise>,
    /// Listens to gdb while the VM runs (once gdb is connected).
    watcher: Option<Watcher>,
    /// How gdb last resumed the VM.
    resumed: Command,
}

/// The stopped VM as gdb sees it.
struct VmTarget {
    memory: GuestMemoryMmap,
    /// The stop being served.
    event: DebugEvent,
    /// How gdb resumed the VM, once it has.
    answer: Option<Command>,
    /// Breakpoints planted, and the bytes they replaced.
    breakpoints: BTreeMap<u64, u8>,
}

impl GdbServer {
    /// A server listening on `listener` for gdb, over `memory`; `raise`
    /// asks the kernel to stop the VM while it runs.
    pub fn new(listener: TcpListener, memory: GuestMemoryMmap, raise: Raise) -> GdbServer {
        let event = DebugEvent::default();
        let target = VmTarget { memory, event, answer: None, breakpoints: BTreeMap::new() };
        GdbServer {
            listener,
            session: None,
            target,
            detached: false,
            raise: Some(raise),
            watcher: None,
            resumed: Command::Continue,
        }
    }

    /// Whether the debugged VM has stopped for gdb yet.
    pub fn has_stopped(&self) -> bool {
        self.session.is_some() || self.detached
    }

    /// The debugged VM stopped as `event` (read from guest-physical
    /// `addr`) says: serves gdb until it resumes the VM, then writes the
    /// answer back. What there is to say goes to `say`.
    pub fn stop(&mut self, addr: u64, event: DebugEvent, say: &mut dyn FnMut(&str)) {
        if self.detached {
            return;
        }
        if let Some(watcher) = &self.watcher {
            watcher.stopped();
        }
        self.target.event = event;
        self.target.answer = None;
        let reason = self.target.stop_reason();
        let served = match self.session.take() {
            None => {
                say(&entry_notice(&event));
                self.connect().and_then(|session| self.serve(session))
            }
            Some(session) if event.event_kind() == Some(EventKind::Interrupted) => self.interrupted(session),
            Some(GdbStubStateMachine::Running(running)) => {
                running.report_stop(&mut self.target, reason).map_err(|e| e.to_string()).and_then(|s| self.serve(s))
            }
            Some(other) => self.serve(other),
        };
        let served = match served {
            // A crashed VM does not come back: gdb hears that it ended.
            Ok(GdbStubStateMachine::Running(running)) if event.is_crash() => {
                let ended = SingleThreadStopReason::Terminated(Signal(super::crash_signal(&event)));
                running.report_stop(&mut self.target, ended).map_err(|e| e.to_string()).and_then(|s| self.serve(s))
            }
            other => other,
        };
        match served {
            Ok(session) => {
                self.session = Some(session);
                if let Some(watcher) = &self.watcher {
                    watcher.running();
                }
            }
            // After the VM ended, gdb leaving is the end of the session.
            Err(_) if event.event_kind() == Some(EventKind::Exited) || event.is_crash() => {
                self.detach(Command::Continue)
            }
            // The kernel says the VM ended.
            Err(_) if self.target.answer == Some(Command::Kill) => self.detach(Command::Kill),
            Err(why) => {
                self.detach(Command::Continue);
                say(&format!("denali: gdb left ({why}); vm {} runs on\n", event.vm));
            }
        }
        self.answer(addr);
    }

    /// Waits for gdb to connect, and starts listening to it while the VM
    /// runs.
    fn connect(&mut self) -> Result<Session, String> {
        let (stream, _) = self.listener.accept().map_err(|e| format!("cannot accept gdb's connection: {e}"))?;
        if let Some(raise) = self.raise.take() {
            let watched = stream.try_clone().map_err(|e| format!("cannot watch gdb's connection: {e}"))?;
            self.watcher = Some(Watcher::start(watched, raise).map_err(|e| format!("cannot watch gdb: {e}"))?);
        }
        GdbStub::new(stream).run_state_machine(&mut self.target).map_err(|e| e.to_string())
    }

    /// The VM stopped because gdb sent something while it ran: its Ctrl-C
    /// (gdb hears the VM stopped with SIGINT), or it left.
    fn interrupted(&mut self, mut session: Session) -> Result<Session, String> {
        let sent = match &mut session {
            GdbStubStateMachine::Running(running) => sent_while_running(running.borrow_conn()),
            _ => Some(Vec::new()),
        };
        let sent = sent.ok_or("it left while the VM ran")?;
        let stale = sent.is_empty();
        for byte in sent {
            session = self.feed(session, byte)?;
        }
        let sigint = SingleThreadStopReason::Signal(Signal::SIGINT);
        match session {
            // gdb's Ctrl-C came as the VM stopped by itself, and that stop
            // answered it: the VM goes on as gdb last asked, unannounced.
            GdbStubStateMachine::Running(running) if stale => {
                self.target.answer = Some(self.resumed);
                Ok(GdbStubStateMachine::Running(running))
            }
            GdbStubStateMachine::Running(running) => {
                running.report_stop(&mut self.target, sigint).map_err(|e| e.to_string()).and_then(|s| self.serve(s))
            }
            other => self.serve(other),
        }
    }

    /// Hands `byte`, sent while the VM ran, to `session`; a Ctrl-C among
    /// them is answered at once: the VM stopped for it, with SIGINT.
    fn feed(&mut self, session: Session, byte: u8) -> Result<Session, String> {
        let fed = match session {
            GdbStubStateMachine::Running(running) => running.incoming_data(&mut self.target, byte),
            GdbStubStateMachine::Idle(idle) => idle.incoming_data(&mut self.target, byte),
            other => return Ok(other),
        };
        match fed.map_err(|e| e.to_string())? {
            GdbStubStateMachine::CtrlCInterrupt(interrupt) => {
                let reason = Some(SingleThreadStopReason::Signal(Signal::SIGINT));
                interrupt.interrupt_handled(&mut self.target, reason).map_err(|e| e.to_string())
            }
            other => Ok(other),
        }
    }

    /// Talks to gdb until it resumes the VM (or leaves).
    fn serve(&mut self, mut session: Session) -> Result<Session, String> {
        loop {
            session = match session {
                GdbStubStateMachine::Idle(mut idle) => {
                    let byte = idle.borrow_conn().read().map_err(|e| format!("the connection broke: {e}"))?;
                    idle.incoming_data(&mut self.target, byte).map_err(|e| e.to_string())?
                }
                GdbStubStateMachine::Running(_) if self.target.answer.is_some() => return Ok(session),
                GdbStubStateMachine::Running(running) => {
                    // Resumed with no answer (cannot happen): stop again.
                    let reason = SingleThreadStopReason::Signal(Signal::SIGTRAP);
                    running.report_stop(&mut self.target, reason).map_err(|e| e.to_string())?
                }
                // A Ctrl-C that reached us with the VM stopped already: the
                // stop gdb heard answers it.
                GdbStubStateMachine::CtrlCInterrupt(interrupt) => interrupt
                    .interrupt_handled(&mut self.target, None::<SingleThreadStopReason<u64>>)
                    .map_err(|e| e.to_string())?,
                GdbStubStateMachine::Disconnected(gone) if gone.get_reason() == DisconnectReason::Kill => {
                    self.target.answer = Some(Command::Kill);
                    return Err("it killed the VM".into());
                }
                GdbStubStateMachine::Disconnected(_) => return Err("it disconnected".into()),
            }
        }
    }

    /// gdb is gone: its breakpoints come out and the VM does as `then`
    /// says (runs on, or ends).
    fn detach(&mut self, then: Command) {
        self.detached = true;
        self.watcher = None;
        let planted = std::mem::take(&mut self.target.breakpoints);
        for (addr, byte) in planted {
            let _ = self.target.write_bytes(addr, &[byte]);
        }
        self.target.answer = Some(then);
    }

    /// Writes the registers and the command into the event at `addr`.
    fn answer(&mut self, addr: u64) {
        self.resumed = self.target.answer.unwrap_or(Command::Continue);
        let command = self.resumed as u64;
        let mut bytes = command.to_le_bytes().to_vec();
        for word in self.target.event.regs.to_words() {
            bytes.extend(word.to_le_bytes());
        }
        let at = GuestAddress(addr + DebugEvent::COMMAND_OFFSET as u64);
        let _ = self.target.memory.write_slice(&bytes, at);
    }
}

impl VmTarget {
    fn space(&self) -> VmSpace<'_> {
        VmSpace::new(&self.memory, self.event.root, self.event.space_size)
    }

    /// Why the VM stopped, as gdb hears it; a stop at a planted breakpoint
    /// moves `rip` back onto it.
    fn stop_reason(&mut self) -> SingleThreadStopReason<u64> {
        let event = &mut self.event;
        match event.event_kind() {
            Some(EventKind::Step) => SingleThreadStopReason::DoneStep,
            Some(EventKind::Exited) => SingleThreadStopReason::Exited(event.status as u8),
            Some(EventKind::Trap) if self.breakpoints.contains_key(&event.regs.rip.wrapping_sub(1)) => {
                event.regs.rip -= 1;
                SingleThreadStopReason::SwBreak(())
            }
            Some(EventKind::Interrupted) => SingleThreadStopReason::Signal(Signal::SIGINT),
            Some(EventKind::Fault | EventKind::Panic) => {
                SingleThreadStopReason::Signal(Signal(super::crash_signal(event)))
            }
            _ => SingleThreadStopReason::Signal(Signal::SIGTRAP),
        }
    }

    /// Reads the VM's bytes from `addr` into `out`, page by page; how many
    /// it could.
    fn read_bytes(&self, addr: u64, out: &mut [u8]) -> usize {
        let space = self.space();
        let mut done = 0;
        for (va, piece) in pieces(addr, out.len()) {
            let Some(physical) = space.translate(va) else { break };
            if self.memory.read_slice(&mut out[piece.clone()], GuestAddress(physical)).is_err() {
                break;
            }
            done = piece.end;
        }
        done
    }

    /// Writes `bytes` at the VM's `addr`, only if all its pages are its own
    /// and none is the kernel's (below the image: the info page, the
    /// register state and the routines that switch it, which run with
    /// interrupts off).
    fn write_bytes(&self, addr: u64, bytes: &[u8]) -> Result<(), ()> {
        if self.event.flags & EVENT_MEMORY_PRIVATE == 0 || addr < IMAGE_BASE {
            return Err(());
        }
        let space = self.space();
        // Every page first: a write that cannot be whole changes nothing.
        let targets: Vec<(u64, std::ops::Range<usize>)> = pieces(addr, bytes.len())
            .map(|(va, piece)| space.translate(va).map(|physical| (physical, piece)))
            .collect::<Option<_>>()
            .ok_or(())?;
        for (physical, piece) in targets {
            self.memory.write_slice(&bytes[piece], GuestAddress(physical)).map_err(drop)?;
        }
        Ok(())
    }
}

/// What to say at the entry stop (where gdb connects): that the VM waits,
/// and, if its image's pages could not be made its own, what gdb cannot do.
fn entry_notice(event: &DebugEvent) -> String {
    let mut notice = format!("denali: vm {} stopped at its entry point for gdb\n", event.vm);
    if event.flags & EVENT_MEMORY_PRIVATE == 0 {
        notice += &format!(
            "denali: vm {} still shares its image's pages (memory is short), so gdb can read its memory \
             but not write it or set breakpoints: give the run more memory with --mem\n",
            event.vm
        );
    }
    notice
}

/// What gdb sent on `stream` while the VM ran, without waiting; `None` if
/// it closed the connection.
fn sent_while_running(stream: &mut TcpStream) -> Option<Vec<u8>> {
    stream.set_nonblocking(true).ok()?;
    let mut sent = Vec::new();
    let mut buffer = [0u8; 256];
    let closed = loop {
        match std::io::Read::read(stream, &mut buffer) {
            Ok(0) => break true,
            Ok(read) => sent.extend_from_slice(&buffer[..read]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break false,
            Err(_) => break true,
        }
    };
    stream.set_nonblocking(false).ok()?;
    (!closed).then_some(sent)
}

/// `len` bytes from the VM's `addr` cut at page boundaries: each piece's
/// VM address and its place in the buffer.
fn pieces(addr: u64, len: usize) -> impl Iterator<Item = (u64, std::ops::Range<usize>)> {
    let mut done = 0;
    std::iter::from_fn(move || {
        let va = addr.wrapping_add(done as u64);
        let piece = done..done + ((PAGE_SIZE - va % PAGE_SIZE) as usize).min(len - done);
        done = piece.end;
        (!piece.is_empty()).then_some((va, piece))
    })
}

impl Target for VmTarget {
    type Arch = X86_64_SSE;
    type Error = &'static str;

    fn base_ops(&mut self) -> BaseOps<'_, Self::Arch, Self::Error> {
        BaseOps::SingleThread(self)
    }

    fn support_breakpoints(&mut self) -> Option<BreakpointsOps<'_, Self>> {
        Some(self)
    }
}

impl SingleThreadBase for VmTarget {
    fn read_registers(&mut self, regs: &mut X86_64CoreRegs) -> TargetResult<(), Self> {
        let r = &self.event.regs;
        regs.regs = [
            r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi, r.rbp, r.rsp, r.r8, r.r9, r.r10, r.r11, r.r12, r.r13, r.r14,
            r.r15,
        ];
        regs.eflags = r.rflags as u32;
        regs.rip = r.rip;
        regs.segments.cs = r.cs as u32;
        regs.segments.ss = r.ss as u32;
        (regs.segments.ds, regs.segments.es) = (r.ds as u32, r.es as u32);
        Ok(())
    }

    fn write_registers(&mut self, regs: &X86_64CoreRegs) -> TargetResult<(), Self> {
        // The kernel would stop a VM sent outside its space.
        if regs.rip >= self.event.space_size {
            return Err(TargetError::NonFatal);
        }
        let r = &mut self.event.regs;
        [r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi, r.rbp, r.rsp] = regs.regs[..8].try_into().expect("8 registers");
        [r.r8, r.r9, r.r10, r.r11, r.r12, r.r13, r.r14, r.r15] = regs.regs[8..].try_into().expect("8 registers");
        r.rflags = u64::from(regs.eflags);
        r.rip = regs.rip;
        Ok(())
    }

    fn read_addrs(&mut self, start_addr: u64, data: &mut [u8]) -> TargetResult<usize, Self> {
        let read = self.read_bytes(start_addr, data);
        if read == 0 && !data.is_empty() {
            return Err(TargetError::NonFatal);
        }
        // gdb sees the bytes its breakpoints replaced.
        for (&addr, &byte) in self.breakpoints.range(start_addr..start_addr.saturating_add(read as u64)) {
            data[(addr - start_addr) as usize] = byte;
        }
        Ok(read)
    }

    fn write_addrs(&mut self, start_addr: u64, data: &[u8]) -> TargetResult<(), Self> {
        self.write_bytes(start_addr, data).map_err(|()| TargetError::NonFatal)
    }

    fn support_resume(&mut self) -> Option<SingleThreadResumeOps<'_, Self>> {
        Some(self)
    }
}

impl SingleThreadResume for VmTarget {
    fn resume(&mut self, _signal: Option<Signal>) -> Result<(), Self::Error> {
        self.answer = Some(Command::Continue);
        Ok(())
    }

    fn support_single_step(&mut self) -> Option<SingleThreadSingleStepOps<'_, Self>> {
        Some(self)
    }
}

impl SingleThreadSingleStep for VmTarget {
    fn step(&mut self, _signal: Option<Signal>) -> Result<(), Self::Error> {
        self.answer = Some(Command::Step);
        Ok(())
    }
}

impl Breakpoints for VmTarget {
    fn support_sw_breakpoint(&mut self) -> Option<SwBreakpointOps<'_, Self>> {
        Some(self)
    }
}

impl SwBreakpoint for VmTarget {
    fn add_sw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        if self.breakpoints.contains_key(&addr) {
            return Ok(true);
        }
        let mut original = [0u8];
        if self.read_bytes(addr, &mut original) != 1 || self.write_bytes(addr, &[BREAKPOINT]).is_err() {
            return Ok(false);
        }
        self.breakpoints.insert(addr, original[0]);
        Ok(true)
    }

    fn remove_sw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        let Some(original) = self.breakpoints.remove(&addr) else { return Ok(false) };
        Ok(self.write_bytes(addr, &[original]).is_ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use denali_abi::layout::STATE_SWITCH_PAGE;

    /// A stopped VM whose page `STATE_SWITCH_PAGE` and first image page
    /// are mapped (to frames 0x10000 and 0x11000).
    fn stopped(flags: u64) -> VmTarget {
        let memory = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x20000)]).unwrap();
        let put = |at: u64, value: u64| memory.write_obj(value, GuestAddress(at)).unwrap();
        put(0x1000, 0x4000 | 7);
        put(0x4000, 0x5000 | 7);
        put(0x5000, 0x6000 | 7);
        put(0x6000 + STATE_SWITCH_PAGE / PAGE_SIZE * 8, 0x10000 | 5);
        put(0x6000 + IMAGE_BASE / PAGE_SIZE * 8, 0x11000 | 5);
        let event = DebugEvent { root: 0x1000, space_size: 1 << 30, flags, ..DebugEvent::default() };
        VmTarget { memory, event, answer: None, breakpoints: BTreeMap::new() }
    }

    #[test]
    fn gdb_writes_only_the_vms_own_image_pages() {
        let mut vm = stopped(EVENT_MEMORY_PRIVATE);
        assert_eq!(vm.add_sw_breakpoint(IMAGE_BASE + 5, 1).ok(), Some(true));
        assert_eq!(vm.memory.read_obj::<u8>(GuestAddress(0x11005)).unwrap(), BREAKPOINT);
        let mut seen = [0xffu8; 8];
        assert_eq!(vm.read_addrs(IMAGE_BASE, &mut seen).ok(), Some(8));
        assert_eq!(seen, [0; 8], "gdb reads the byte its breakpoint replaced");
        assert!(vm.write_addrs(STATE_SWITCH_PAGE, &[0xeb, 0xfe]).is_err(), "the kernel's routines");
        assert_eq!(vm.add_sw_breakpoint(STATE_SWITCH_PAGE, 1).ok(), Some(false));
        assert_eq!(vm.memory.read_obj::<u16>(GuestAddress(0x10000)).unwrap(), 0);
        assert!(vm.write_addrs(IMAGE_BASE + PAGE_SIZE, &[1]).is_err(), "not mapped");

        let mut shared = stopped(0);
        assert!(shared.write_addrs(IMAGE_BASE, &[1]).is_err(), "pages another VM may share");
        assert_eq!(shared.add_sw_breakpoint(IMAGE_BASE, 1).ok(), Some(false));
        assert_eq!(shared.memory.read_obj::<u8>(GuestAddress(0x11000)).unwrap(), 0);
    }

    #[test]
    fn a_write_that_cannot_be_whole_changes_nothing() {
        let mut vm = stopped(EVENT_MEMORY_PRIVATE);
        // The first image page is mapped, the next is not.
        assert!(vm.write_addrs(IMAGE_BASE + PAGE_SIZE - 2, &[1, 2, 3, 4]).is_err());
        assert_eq!(vm.memory.read_obj::<u16>(GuestAddress(0x11000 + PAGE_SIZE - 2)).unwrap(), 0);
    }

    #[test]
    fn gdb_cannot_send_the_vm_outside_its_space() {
        let mut vm = stopped(EVENT_MEMORY_PRIVATE);
        let mut regs = X86_64CoreRegs::default();
        assert!(vm.read_registers(&mut regs).is_ok());
        regs.rip = vm.event.space_size;
        assert!(vm.write_registers(&regs).is_err());
        regs.rip = IMAGE_BASE + 16;
        assert!(vm.write_registers(&regs).is_ok());
        assert_eq!(vm.event.regs.rip, IMAGE_BASE + 16);
    }
}
