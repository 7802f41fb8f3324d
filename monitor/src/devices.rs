//! The kernel's devices: the 16550 UART (vm-superio's model), the console
//! port that takes whole buffers, and the exit, panic, idle, progress and
//! counters ports. Port
//! I/O from the vCPU lands here.
//!
//! Both the UART (the kernel's early messages) and the console port draw
//! through one `denali_abi::console::Lines`, the discipline the kernel
//! uses on bare metal: VM bytes escaped, `vmN| ` prefixes, no line glued to
//! another's.

use crate::counters::LiveCounters;
use crate::debug::DebugPort;
use denali_abi::boot::ports;
use denali_abi::console::{CONSOLE_PIECES, CONSOLE_PREFIX, ConsoleRequest, Lines, Writer};
use denali_abi::hypercall::CONSOLE_WRITE_MAX;
use std::io::Write;
use std::sync::{Arc, Mutex};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vm_superio::{Serial, Trigger};

/// The UART's interrupt line: the kernel polls, so there is none to raise.
pub struct NoInterrupt;

impl Trigger for NoInterrupt {
    type E = std::io::Error;

    fn trigger(&self) -> Result<(), Self::E> {
        Ok(())
    }
}

/// What a port write asks of the run loop.
#[derive(Debug, PartialEq, Eq)]
pub enum PortAction {
    /// Keep running.
    Continue,
    /// The kernel ended the run with this status.
    Exit(i32),
    /// The kernel panicked.
    Panic,
    /// The kernel has nothing to run for this long.
    Idle(std::time::Duration),
    /// The kernel has made this many VMs and has this many MiB of memory
    /// in use.
    Progress {
        /// VMs made (or refused) so far.
        made: u32,
        /// MiB of memory in use.
        memory_mib: u32,
    },
}

/// The terminal (or whatever the caller gave) and the state of its lines.
struct Screen {
    lines: Lines,
    out: Box<dyn Write + Send>,
}

impl Screen {
    fn draw(&mut self, writer: Writer, prefix: bool, bytes: &[u8]) {
        let out = &mut self.out;
        // A full console (a closed pipe) must not stop the run.
        self.lines.write(writer, prefix, bytes, &mut |b| drop(out.write_all(b)));
    }
}

/// The UART's output: the kernel's own text, through the line discipline.
#[derive(Clone)]
struct KernelText(Arc<Mutex<Screen>>);

impl Write for KernelText {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).draw(Writer::Kernel, false, buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).out.flush()
    }
}

/// Every device on the I/O port bus.
pub struct PortBus {
    serial: Serial<NoInterrupt, vm_superio::serial::NoEvents, KernelText>,
    screen: Arc<Mutex<Screen>>,
    memory: GuestMemoryMmap,
    /// The last write to the progress device's memory port.
    memory_mib: u32,
    /// Where to say the kernel's counters are, if anyone reads them.
    counters: Option<LiveCounters>,
    /// The debug port's device: crash reports and gdb.
    debug: DebugPort,
}

const SERIAL_PORTS: std::ops::Range<u16> = ports::SERIAL..ports::SERIAL + 8;

impl PortBus {
    /// A bus whose console draws on `console`, reading the buffers the
    /// console port names from `memory`, which tells `counters` where
    /// the kernel keeps its own, and which serves the debug port with `debug`.
    pub fn new(
        console: Box<dyn Write + Send>,
        memory: GuestMemoryMmap,
        counters: Option<LiveCounters>,
        debug: DebugPort,
    ) -> Self {
        let screen = Arc::new(Mutex::new(Screen { lines: Lines::new(), out: console }));
        let serial = Serial::new(NoInterrupt, KernelText(screen.clone()));
        PortBus { serial, screen, memory, memory_mib: 0, counters, debug }
    }

    /// A write of `data` to `port`.
    pub fn write(&mut self, port: u16, data: &[u8]) -> PortAction {
        match port {
            p if SERIAL_PORTS.contains(&p) => {
                if let Some(&byte) = data.first() {
                    let _ = self.serial.write((p - ports::SERIAL) as u8, byte);
                }
                PortAction::Continue
            }
            ports::CONSOLE => {
                self.draw_request(u64::from(le_u32(data)));
                PortAction::Continue
            }
            ports::EXIT => PortAction::Exit(le_u32(data) as i32),
            ports::PANIC => PortAction::Panic,
            ports::IDLE => PortAction::Idle(std::time::Duration::from_micros(u64::from(le_u32(data)))),
            ports::PROGRESS_MEMORY => {
                self.memory_mib = le_u32(data);
                PortAction::Continue
            }
            ports::PROGRESS => PortAction::Progress { made: le_u32(data), memory_mib: self.memory_mib },
            ports::COUNTERS => {
                if let Some(counters) = &self.counters {
                    counters.attach(self.memory.clone(), u64::from(le_u32(data)));
                }
                PortAction::Continue
            }
            ports::DEBUG => {
                let screen = &self.screen;
                self.debug.event(u64::from(le_u32(data)), &mut |text| {
                    let mut screen = screen.lock().unwrap_or_else(|e| e.into_inner());
                    screen.draw(Writer::Kernel, false, text.as_bytes());
                    let _ = screen.out.flush();
                });
                PortAction::Continue
            }
            _ => PortAction::Continue,
        }
    }

    /// Draws the buffer the [`ConsoleRequest`] at guest-physical `addr`
    /// names. Every address and length in it is checked against guest
    /// memory (a request the kernel got wrong draws nothing).
    fn draw_request(&mut self, addr: u64) {
        let Ok(request) = self.memory.read_obj::<RequestBytes>(GuestAddress(addr)) else { return };
        let request = request.0;
        let mut bytes = Vec::with_capacity(CONSOLE_WRITE_MAX);
        for piece in request.pieces.iter().take((request.count as usize).min(CONSOLE_PIECES)) {
            let len = piece.len.min((CONSOLE_WRITE_MAX - bytes.len()) as u64) as usize;
            let start = bytes.len();
            bytes.resize(start + len, 0);
            if self.memory.read_slice(&mut bytes[start..], GuestAddress(piece.addr)).is_err() {
                return;
            }
        }
        let prefix = request.flags & CONSOLE_PREFIX != 0;
        self.screen.lock().unwrap_or_else(|e| e.into_inner()).draw(request.writer(), prefix, &bytes);
    }

    /// A read from `port` into `data`.
    pub fn read(&mut self, port: u16, data: &mut [u8]) {
        let value = if SERIAL_PORTS.contains(&port) { self.serial.read((port - ports::SERIAL) as u8) } else { 0xff };
        data.fill(value);
    }

    /// Ends an unfinished line and flushes the console.
    pub fn flush(&mut self) {
        let mut screen = self.screen.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(text) = self.debug.unserved() {
            screen.draw(Writer::Kernel, false, text.as_bytes());
        }
        let Screen { lines, out } = &mut *screen;
        lines.finish(&mut |b| drop(out.write_all(b)));
        let _ = out.flush();
    }
}

/// A [`ConsoleRequest`] as vm-memory reads it from the guest.
#[derive(Clone, Copy, Default)]
#[repr(transparent)]
struct RequestBytes(ConsoleRequest);

// SAFETY: ConsoleRequest is #[repr(C)], made only of integers, with no
// padding (its size is asserted in denali-abi): any bytes are a valid value.
unsafe impl vm_memory::ByteValued for RequestBytes {}

fn le_u32(data: &[u8]) -> u32 {
    let mut bytes = [0u8; 4];
    let n = data.len().min(4);
    bytes[..n].copy_from_slice(&data[..n]);
    u32::from_le_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CapturedConsole;
    use denali_abi::counters::SwapCounters;

    fn bus() -> (PortBus, CapturedConsole, GuestMemoryMmap) {
        let memory = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 1 << 16)]).unwrap();
        let sink = CapturedConsole::default();
        (
            PortBus::new(Box::new(sink.clone()), memory.clone(), None, DebugPort::new(memory.clone(), &[], &[], None)),
            sink,
            memory,
        )
    }

    #[test]
    fn uart_bytes_reach_the_console_and_the_exit_port_ends_the_run() {
        let (mut bus, sink, _) = bus();
        assert_eq!(bus.write(ports::SERIAL, b"h"), PortAction::Continue);
        assert_eq!(bus.write(ports::SERIAL, b"i"), PortAction::Continue);
        assert_eq!(sink.text(), "hi");
        assert_eq!(bus.write(ports::EXIT, &7u32.to_le_bytes()), PortAction::Exit(7));
        assert_eq!(bus.write(ports::PANIC, &1u32.to_le_bytes()), PortAction::Panic);
        assert_eq!(
            bus.write(ports::IDLE, &1500u32.to_le_bytes()),
            PortAction::Idle(std::time::Duration::from_micros(1500))
        );
        // The line-status register says the transmitter is empty.
        let mut lsr = [0u8];
        bus.read(ports::SERIAL + 5, &mut lsr);
        assert_ne!(lsr[0] & 0x20, 0);
        assert_eq!(bus.write(ports::PROGRESS_MEMORY, &300u32.to_le_bytes()), PortAction::Continue);
        assert_eq!(
            bus.write(ports::PROGRESS, &1200u32.to_le_bytes()),
            PortAction::Progress { made: 1200, memory_mib: 300 }
        );
    }

    /// Puts `pieces` in guest memory with a request naming them; returns
    /// the request's address.
    fn request(memory: &GuestMemoryMmap, writer: u32, pieces: &[&[u8]]) -> u32 {
        let mut request =
            ConsoleRequest { writer, flags: CONSOLE_PREFIX, count: pieces.len() as u32, ..Default::default() };
        let mut at = 0x1000;
        for (i, piece) in pieces.iter().enumerate() {
            memory.write_slice(piece, GuestAddress(at)).unwrap();
            request.pieces[i] = denali_abi::console::ConsolePiece { addr: at, len: piece.len() as u64 };
            at += 0x1000;
        }
        memory.write_obj(RequestBytes(request), GuestAddress(0x100)).unwrap();
        0x100
    }

    #[test]
    fn the_counters_port_lets_a_reader_watch_the_kernels_counters_change() {
        let (_, sink, memory) = bus();
        let counters = LiveCounters::default();
        let mut bus = PortBus::new(
            Box::new(sink),
            memory.clone(),
            Some(counters.clone()),
            DebugPort::new(memory.clone(), &[], &[], None),
        );
        assert_eq!(counters.read(), None, "nothing to read before the kernel says where");
        let write = |swap_ins: u64| {
            let mut words = [0u64; SwapCounters::SIZE / 8];
            words[3] = swap_ins;
            let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
            memory.write_slice(&bytes, GuestAddress(0x2000)).unwrap();
        };
        write(5);
        assert_eq!(bus.write(ports::COUNTERS, &0x2000u32.to_le_bytes()), PortAction::Continue);
        assert_eq!(counters.read().map(|c| c.swap_ins), Some(5));
        write(6);
        assert_eq!(counters.read().map(|c| c.swap_ins), Some(6));
        // An address past guest memory reads as nothing.
        bus.write(ports::COUNTERS, &u32::MAX.to_le_bytes());
        assert_eq!(counters.read(), None);
    }

    #[test]
    fn a_whole_buffer_is_drawn_in_one_port_write_escaped_and_prefixed() {
        let (mut bus, sink, memory) = bus();
        let addr = request(&memory, 3, &[b"half a ", b"line\r\x1b[2K\nnext"]);
        assert_eq!(bus.write(ports::CONSOLE, &addr.to_le_bytes()), PortAction::Continue);
        // The kernel's own text ends the VM's unfinished line first.
        for &b in b"denali: done\n" {
            bus.write(ports::SERIAL, &[b]);
        }
        assert_eq!(sink.text(), "vm3| half a line\\r\\x1b[2K\nvm3| next\ndenali: done\n");
    }

    #[test]
    fn a_request_outside_guest_memory_draws_nothing() {
        let (mut bus, sink, memory) = bus();
        let addr = request(&memory, 1, &[b"fine"]);
        let mut bad: RequestBytes = memory.read_obj(GuestAddress(u64::from(addr))).unwrap();
        bad.0.pieces[0].addr = 1 << 40;
        memory.write_obj(bad, GuestAddress(0x100)).unwrap();
        bus.write(ports::CONSOLE, &addr.to_le_bytes());
        bus.write(ports::CONSOLE, &(1u32 << 31).to_le_bytes());
        assert_eq!(sink.text(), "");
    }
}
