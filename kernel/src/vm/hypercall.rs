//! The hypercall surface: one function per call. Every argument is a value a
//! hostile guest chose; each is checked before use.

use super::{State, Vm};
use crate::console;
use crate::mem::frame::FrameAllocator;
use crate::mem::guest::GuestAddr;
use crate::net::{Delivered, Port, Switch};
use crate::platform::{BlockDevice, NetDevice};
use crate::sched::Scheduler;
use core::mem::MaybeUninit;
use denali_abi::hypercall::{CONSOLE_WRITE_MAX, EVENT_ALARM, Error, FrameRef, Hypercall, NET_BATCH_MAX};

/// What the kernel does with the VM after a hypercall.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Return this value in `rax` and keep running the VM.
    Resume(u64),
    /// The VM waits for an event (`idle` with nothing pending).
    Block,
    /// Return 0 and put the VM at the back of the run queue.
    Yield,
    /// The VM is finished with this status; true if it says it crashed
    /// (see `denali_abi::debug::EXIT_CRASHED`).
    Exit(i32, bool),
    /// Return the frame's length (this value) in `rax` and keep running
    /// the VM; the switch took the frame it sent as the second says (the
    /// kernel wakes the VM it went to).
    Sent(u64, Delivered),
    /// Return this count of frames sent in `rax` and keep running the VM;
    /// where each went is in [`Env::deliveries`].
    SentBatch(u64),
}

/// Where each frame of a `net_send_batch` went, for the kernel to wake
/// their VMs once the call is done (room for a whole batch, made once).
#[derive(Clone, Copy, Debug)]
pub struct Deliveries {
    list: [Delivered; NET_BATCH_MAX],
    len: usize,
}

impl Default for Deliveries {
    fn default() -> Self {
        Self { list: [Delivered::Dropped; NET_BATCH_MAX], len: 0 }
    }
}

impl Deliveries {
    /// Notes one (a batch holds at most [`NET_BATCH_MAX`]).
    fn push(&mut self, delivered: Delivered) {
        self.list[self.len] = delivered;
        self.len += 1;
    }

    /// The `n`-th noted, if there is one.
    pub fn get(&self, n: usize) -> Option<Delivered> {
        self.list[..self.len].get(n).copied()
    }

    /// Forgets what was noted.
    pub fn clear(&mut self) {
        self.len = 0;
    }
}

/// Kernel services a hypercall may use.
pub struct Env<'a> {
    /// Physical memory, for demand-zero pages a buffer may touch.
    pub frames: &'a mut FrameAllocator,
    /// The scheduler, for alarms.
    pub sched: &'a mut Scheduler,
    /// Whether console lines are prefixed with the VM id.
    pub prefix_console: bool,
    /// Current global-clock time.
    pub now: u64,
    /// The virtual Ethernet switch.
    pub switch: &'a mut Switch,
    /// Where the frames of a batch went.
    pub deliveries: &'a mut Deliveries,
    /// The machine's NIC, the switch's uplink.
    pub uplink: Option<&'a mut (dyn NetDevice + 'static)>,
    /// The machine's disk, if it has a labelled one.
    pub disk: Option<&'a mut (dyn BlockDevice + 'static)>,
}

/// The hypercall in the VM's saved registers, counted. An unknown number is
/// answered here (its error in `rax`): `None`.
pub fn decode(vm: &mut Vm) -> Option<Hypercall> {
    vm.stats.hypercalls += 1;
    match Hypercall::try_from(vm.context.rax) {
        Ok(call) => Some(call),
        Err(e) => {
            vm.context.rax = e.to_return();
            None
        }
    }
}

/// Runs `call` (decoded from the VM's saved registers) with its arguments
/// there; `env` gives the kernel services, made only for a call that uses
/// them (not `exit`, `idle` or `yield`). The handlers that keep a buffer on
/// the stack are `#[inline(never)]`, so the calls that need none (`yield`,
/// `idle`, `alarm`) do not pay for their stack frame; this is inlined, so
/// the caller makes `env` only where a call uses it.
#[inline(always)]
pub fn dispatch<'a>(vm: &mut Vm, call: Hypercall, env: impl FnOnce() -> Env<'a>) -> Outcome {
    let ctx = &vm.context;
    let (a0, a1, a2) = (ctx.rdi, ctx.rsi, ctx.rdx);
    // Pointer arguments are flat addresses of this VM, checked on use.
    let (p0, p1) = (GuestAddr::new(a0), GuestAddr::new(a1));
    match call {
        Hypercall::Exit => Outcome::Exit(a0 as i32, a1 & denali_abi::debug::EXIT_CRASHED != 0),
        Hypercall::ConsoleWrite => console_write(vm, &mut env(), p0, a1),
        Hypercall::Idle => idle(vm),
        Hypercall::Alarm => alarm(vm, &mut env(), a0),
        Hypercall::Yield => Outcome::Yield,
        Hypercall::NetSend => net_send(vm, &mut env(), p0, a1),
        Hypercall::NetRecv => net_recv(vm, &mut env(), p0, a1),
        Hypercall::NetSendBatch => net_send_batch(vm, &mut env(), p0, a1),
        Hypercall::NetRecvBatch => net_recv_batch(vm, &mut env(), p0, a1),
        Hypercall::DiskRead => disk_transfer(vm, &mut env(), a0, p1, a2, Direction::Read),
        Hypercall::DiskWrite => disk_transfer(vm, &mut env(), a0, p1, a2, Direction::Write),
    }
}

/// Console bytes a VM may write in one burst, and then per second: a VM
/// printing more waits (`WouldBlock`), so none floods the console or the
/// monitor. Each call costs the kernel one exit at most, whatever its size.
pub const CONSOLE_BURST: u64 = 64 << 10;
pub const CONSOLE_RATE: u64 = 256 << 10;

#[inline(never)]
fn console_write(vm: &mut Vm, env: &mut Env<'_>, addr: GuestAddr, len: u64) -> Outcome {
    let wanted = len.min(CONSOLE_WRITE_MAX as u64);
    let len = vm.console_budget.take(env.now, wanted, CONSOLE_RATE, CONSOLE_BURST);
    if len == 0 && wanted > 0 {
        return Outcome::Resume(Error::WouldBlock.to_return());
    }
    let mut result = Ok(());
    let (id, frames) = (vm.id, &mut *env.frames);
    console::CONSOLE.lock().write_vm(id, env.prefix_console, |piece| {
        result = vm.read_guest(frames, addr, len, |bytes| piece(bytes));
    });
    Outcome::Resume(result.map_or_else(Error::to_return, |()| len))
}

#[inline(never)]
fn net_send(vm: &mut Vm, env: &mut Env<'_>, addr: GuestAddr, len: u64) -> Outcome {
    match send_frame(vm, env, addr, len) {
        Ok(delivered) => Outcome::Sent(len, delivered),
        Err(e) => Outcome::Resume(e.to_return()),
    }
}

/// Hands the frame of `len` bytes at `addr` to the switch.
fn send_frame(vm: &mut Vm, env: &mut Env<'_>, addr: GuestAddr, len: u64) -> Result<Delivered, Error> {
    // Straight into the switch's staging slot: a frame for a VM is parked
    // from there without another copy.
    let room = env.switch.parking.staging(len as usize).ok_or(Error::InvalidArgument)?;
    vm.copy_from_guest(env.frames, addr, room)?;
    let uplink = &mut env.uplink;
    let mut transmit = |frame: &[u8]| {
        if let Some(nic) = uplink.as_deref_mut() {
            nic.send(frame);
        }
    };
    env.switch.send_staged(Port::Vm(vm.id), len as usize, &mut transmit).map_err(|_| Error::InvalidArgument)
}

/// Bytes of the longest batch list.
const LIST_MAX: usize = NET_BATCH_MAX * FrameRef::SIZE;

/// The entries of a batch list, read from the VM in one copy (only the
/// entries' bytes are cleared first, not room for the longest list).
struct BatchList {
    raw: MaybeUninit<[u8; LIST_MAX]>,
    /// Entries read.
    count: usize,
}

impl BatchList {
    /// The list of `count` entries (1 to [`NET_BATCH_MAX`], else
    /// `InvalidArgument`) at `list`.
    fn read(vm: &mut Vm, frames: &mut FrameAllocator, list: GuestAddr, count: u64) -> Result<Self, Error> {
        if !(1..=NET_BATCH_MAX as u64).contains(&count) {
            return Err(Error::InvalidArgument);
        }
        let mut entries = BatchList { raw: MaybeUninit::uninit(), count: count as usize };
        let len = entries.count * FrameRef::SIZE;
        // SAFETY: `len` is at most `LIST_MAX`, within `raw`; those bytes are
        // cleared here, before the slice over them is made.
        let bytes = unsafe {
            let at = entries.raw.as_mut_ptr().cast::<u8>();
            at.write_bytes(0, len);
            core::slice::from_raw_parts_mut(at, len)
        };
        vm.copy_from_guest(frames, list, bytes)?;
        Ok(entries)
    }

    /// The bytes of the first `count` entries (at most those read).
    fn bytes(&self, count: usize) -> &[u8] {
        // SAFETY: `read` initialised the bytes of `self.count` entries,
        // within `raw`.
        unsafe { core::slice::from_raw_parts(self.raw.as_ptr().cast::<u8>(), count.min(self.count) * FrameRef::SIZE) }
    }

    /// Entry `n` (one of those read).
    fn entry(&self, n: usize) -> FrameRef {
        let at = n * FrameRef::SIZE;
        FrameRef::from_bytes(self.bytes(self.count)[at..at + FrameRef::SIZE].try_into().expect("one entry"))
    }

    /// Sets the length of entry `n` (one of those read).
    fn set_len(&mut self, n: usize, len: u64) {
        let entry = FrameRef { len, ..self.entry(n) };
        // SAFETY: entry `n` lies within the initialised bytes of `raw`.
        unsafe { self.raw.as_mut_ptr().cast::<[u8; FrameRef::SIZE]>().add(n).write(entry.to_bytes()) }
    }
}

/// Runs `each` on entries `0..count` of a batch in order until one fails:
/// `rax` for the call, how many went or, if none did, the error that
/// stopped the first.
fn run_batch(count: usize, mut each: impl FnMut(usize) -> Result<(), Error>) -> Result<u64, Error> {
    let mut done = 0;
    while done < count {
        match each(done) {
            Ok(()) => done += 1,
            Err(e) if done == 0 => return Err(e),
            Err(_) => break,
        }
    }
    Ok(done as u64)
}

#[inline(never)]
fn net_send_batch(vm: &mut Vm, env: &mut Env<'_>, list: GuestAddr, count: u64) -> Outcome {
    let sent = BatchList::read(vm, env.frames, list, count).and_then(|entries| {
        run_batch(entries.count, |n| {
            let entry = entries.entry(n);
            let delivered = send_frame(vm, env, GuestAddr::new(entry.addr), entry.len)?;
            env.deliveries.push(delivered);
            Ok(())
        })
    });
    match sent {
        Ok(sent) => Outcome::SentBatch(sent),
        Err(e) => Outcome::Resume(e.to_return()),
    }
}

#[inline(never)]
fn net_recv(vm: &mut Vm, env: &mut Env<'_>, addr: GuestAddr, cap: u64) -> Outcome {
    Outcome::Resume(recv_frame(vm, env, addr, cap).unwrap_or_else(Error::to_return))
}

/// Takes the oldest received frame into the buffer of `cap` bytes at
/// `addr`; its length.
fn recv_frame(vm: &mut Vm, env: &mut Env<'_>, addr: GuestAddr, cap: u64) -> Result<u64, Error> {
    let parking = &mut env.switch.parking;
    let len = parking.peek_len(vm.id).ok_or(Error::WouldBlock)?;
    if (len as u64) > cap {
        return Err(Error::InvalidArgument);
    }
    // A bad buffer loses the frame, as a NIC's DMA into one would.
    let result = parking.pop(vm.id, |frame| vm.write_guest(env.frames, addr, frame)).expect("peeked");
    vm.set_rx_frames(parking.len(vm.id));
    result.map(|()| len as u64)
}

#[inline(never)]
fn net_recv_batch(vm: &mut Vm, env: &mut Env<'_>, list: GuestAddr, count: u64) -> Outcome {
    Outcome::Resume(recv_batch(vm, env, list, count).unwrap_or_else(Error::to_return))
}

/// Takes frames into the buffers of the batch list at `list`, then writes
/// their lengths into it in one copy: a list the VM cannot write loses the
/// frames taken, as a bad buffer loses its frame.
fn recv_batch(vm: &mut Vm, env: &mut Env<'_>, list: GuestAddr, count: u64) -> Result<u64, Error> {
    let mut entries = BatchList::read(vm, env.frames, list, count)?;
    let received = run_batch(entries.count, |n| {
        let entry = entries.entry(n);
        let len = recv_frame(vm, env, GuestAddr::new(entry.addr), entry.len)?;
        entries.set_len(n, len);
        Ok(())
    })?;
    vm.write_guest(env.frames, list, entries.bytes(received as usize))?;
    Ok(received)
}

/// Which way a disk transfer goes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    Read,
    Write,
}

/// `disk_read` and `disk_write`: the range must lie in the VM's window and
/// the buffer in its memory; the data passes through the disk's transfer
/// buffer (the device's DMA never sees VM memory).
#[inline(never)]
fn disk_transfer(
    vm: &mut Vm,
    env: &mut Env<'_>,
    sector: u64,
    addr: GuestAddr,
    len: u64,
    direction: Direction,
) -> Outcome {
    let Some(at) = vm.disk.locate(sector, len) else {
        return Outcome::Resume(Error::InvalidArgument.to_return());
    };
    // A VM with a window was admitted only with a disk behind it.
    let Some(disk) = env.disk.as_deref_mut() else {
        return Outcome::Resume(Error::Io.to_return());
    };
    let frames = &mut *env.frames;
    let result = match direction {
        Direction::Write => disk
            .write(at, len as usize, &mut |buffer| vm.copy_from_guest(frames, addr, &mut buffer[..len as usize]))
            .map(|()| vm.stats.disk_written_bytes += len),
        Direction::Read => disk
            .read(at, len as usize)
            .and_then(|data| vm.write_guest(frames, addr, data))
            .map(|()| vm.stats.disk_read_bytes += len),
    };
    Outcome::Resume(result.map_or_else(Error::to_return, |()| len))
}

fn idle(vm: &mut Vm) -> Outcome {
    if vm.pending != 0 {
        return Outcome::Resume(vm.take_pending());
    }
    vm.state = State::Idle;
    Outcome::Block
}

fn alarm(vm: &mut Vm, env: &mut Env<'_>, deadline: u64) -> Outcome {
    if deadline != 0 && deadline <= env.now {
        env.sched.set_alarm(vm.id, 0);
        vm.raise(EVENT_ALARM);
    } else {
        env.sched.set_alarm(vm.id, deadline);
    }
    Outcome::Resume(0)
}
