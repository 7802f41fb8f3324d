//! The hypercall surface: one function per call. Every argument is a value a
//! hostile guest chose; each is checked before use.

use super::{State, Vm};
use crate::console;
use crate::mem::frame::FrameAllocator;
use crate::mem::guest::GuestAddr;
use crate::net::{Delivered, Port, Switch};
use crate::platform::{BlockDevice, NetDevice};
use crate::sched::Scheduler;
use denali_abi::hypercall::{CONSOLE_WRITE_MAX, EVENT_ALARM, Error, FRAME_MAX, Hypercall};

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
    /// Room for a frame on its way from the VM to the switch.
    pub send_buffer: &'a mut [u8; FRAME_MAX],
    /// The machine's NIC, the switch's uplink.
    pub uplink: Option<&'a mut (dyn NetDevice + 'static)>,
    /// The machine's disk, if it has a labelled one.
    pub disk: Option<&'a mut (dyn BlockDevice + 'static)>,
}

/// Decodes and runs the hypercall in the VM's saved registers. The handlers
/// that keep a buffer on the stack are `#[inline(never)]`, so the calls that
/// need none (`yield`, `idle`, `alarm`, an unknown number) do not pay for
/// their stack frame.
pub fn dispatch(vm: &mut Vm, env: &mut Env<'_>) -> Outcome {
    vm.stats.hypercalls += 1;
    let ctx = &vm.context;
    let (number, a0, a1, a2) = (ctx.rax, ctx.rdi, ctx.rsi, ctx.rdx);
    let call = match Hypercall::try_from(number) {
        Ok(call) => call,
        Err(e) => return Outcome::Resume(e.to_return()),
    };
    // Pointer arguments are flat addresses of this VM, checked on use.
    let (p0, p1) = (GuestAddr::new(a0), GuestAddr::new(a1));
    match call {
        Hypercall::Exit => Outcome::Exit(a0 as i32, a1 & denali_abi::debug::EXIT_CRASHED != 0),
        Hypercall::ConsoleWrite => console_write(vm, env, p0, a1),
        Hypercall::Idle => idle(vm),
        Hypercall::Alarm => alarm(vm, env, a0),
        Hypercall::Yield => Outcome::Yield,
        Hypercall::NetSend => net_send(vm, env, p0, a1),
        Hypercall::NetRecv => net_recv(vm, env, p0, a1),
        Hypercall::DiskRead => disk_transfer(vm, env, a0, p1, a2, Direction::Read),
        Hypercall::DiskWrite => disk_transfer(vm, env, a0, p1, a2, Direction::Write),
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
    if len as usize > FRAME_MAX {
        return Outcome::Resume(Error::InvalidArgument.to_return());
    }
    let frame = &mut env.send_buffer[..len as usize];
    if let Err(e) = vm.copy_from_guest(env.frames, addr, frame) {
        return Outcome::Resume(e.to_return());
    }
    let uplink = &mut env.uplink;
    let mut transmit = |frame: &[u8]| {
        if let Some(nic) = uplink.as_deref_mut() {
            nic.send(frame);
        }
    };
    match env.switch.send(Port::Vm(vm.id), frame, &mut transmit) {
        Ok(delivered) => Outcome::Sent(len, delivered),
        Err(_) => Outcome::Resume(Error::InvalidArgument.to_return()),
    }
}

#[inline(never)]
fn net_recv(vm: &mut Vm, env: &mut Env<'_>, addr: GuestAddr, cap: u64) -> Outcome {
    let parking = &mut env.switch.parking;
    let Some(len) = parking.peek_len(vm.id) else {
        return Outcome::Resume(Error::WouldBlock.to_return());
    };
    if (len as u64) > cap {
        return Outcome::Resume(Error::InvalidArgument.to_return());
    }
    // A bad buffer loses the frame, as a NIC's DMA into one would.
    let result = parking.pop(vm.id, |frame| vm.write_guest(env.frames, addr, frame)).expect("peeked");
    vm.set_rx_frames(parking.len(vm.id));
    Outcome::Resume(result.map_or_else(Error::to_return, |()| len as u64))
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
