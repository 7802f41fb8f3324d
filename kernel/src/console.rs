//! The kernel console: the kernel's own messages (`kprintln!`) and every
//! VM's `console_write`, drawn with the line discipline of
//! `denali_abi::console` (escaped VM bytes, `vmN| ` prefixes, no line
//! glued to another's).
//!
//! Under our monitor a whole buffer reaches it in one exit on the console
//! port (the monitor draws it); elsewhere the kernel draws it on the UART
//! itself, a byte per port write, which QEMU and real hardware take fast.

#[cfg(target_os = "none")]
use crate::arch::x86_64::serial::Serial;
use crate::mem::phys;
use denali_abi::console::{CONSOLE_PIECES, CONSOLE_PREFIX, ConsolePiece, ConsoleRequest, KERNEL_WRITER, Lines, Writer};
use spin::Mutex;

/// Host tests: the console keeps what it draws (there is no UART).
#[cfg(not(target_os = "none"))]
pub struct Serial(alloc::vec::Vec<u8>);

#[cfg(not(target_os = "none"))]
impl Serial {
    const fn com1() -> Serial {
        Serial(alloc::vec::Vec::new())
    }

    fn init(&mut self) {}

    fn write_bytes(&mut self, bytes: &[u8]) {
        self.0.extend_from_slice(bytes);
    }
}

/// Host tests: takes what the console drew so far.
#[cfg(not(target_os = "none"))]
pub fn take_host_output() -> alloc::vec::Vec<u8> {
    core::mem::take(&mut CONSOLE.lock().serial.0)
}

/// The console every message goes through.
pub static CONSOLE: Mutex<Console> = Mutex::new(Console::new());

/// Prints a kernel message line.
#[macro_export]
macro_rules! kprintln {
    ($($arg:tt)*) => {{
        use core::fmt::Write as _;
        let mut console = $crate::console::CONSOLE.lock();
        let _ = writeln!(console, $($arg)*);
    }};
}

/// Kernel text is gathered into lines of up to this many bytes before it
/// is drawn (one exit per line under our monitor).
const LINE_MAX: usize = 256;

/// The console: where it draws, and the state of its lines.
pub struct Console {
    serial: Serial,
    /// Whether our monitor takes whole buffers on the console port.
    port: bool,
    lines: Lines,
    /// Kernel text not yet drawn (up to a newline).
    line: [u8; LINE_MAX],
    line_len: usize,
    /// The request handed to the monitor (read by it through its
    /// physical address while the port write is in flight).
    request: ConsoleRequest,
}

impl Console {
    const fn new() -> Console {
        Console {
            serial: Serial::com1(),
            port: false,
            lines: Lines::new(),
            line: [0; LINE_MAX],
            line_len: 0,
            request: ConsoleRequest {
                writer: 0,
                flags: 0,
                count: 0,
                reserved: 0,
                pieces: [ConsolePiece { addr: 0, len: 0 }; CONSOLE_PIECES],
            },
        }
    }

    /// Sets up the UART.
    pub fn init(&mut self) {
        self.serial.init();
    }

    /// Draws through our monitor's console port from now on (the loader
    /// said it is there).
    pub fn use_port(&mut self) {
        self.flush_line();
        self.port = true;
    }

    /// Draws bytes VM `id` wrote, given as the pieces (kernel pointers into
    /// the physmap, at most [`CONSOLE_PIECES`]) that `pieces` hands to its
    /// argument.
    pub fn write_vm(&mut self, id: u32, prefix: bool, pieces: impl FnOnce(&mut dyn FnMut(&[u8]))) {
        self.flush_line();
        if self.port {
            self.request =
                ConsoleRequest { writer: id, flags: if prefix { CONSOLE_PREFIX } else { 0 }, ..self.request };
            self.request.count = 0;
            let request = &mut self.request;
            pieces(&mut |bytes: &[u8]| {
                let at = request.count as usize;
                if at < CONSOLE_PIECES {
                    let addr = phys::kernel_virt_to_phys(bytes.as_ptr() as u64);
                    request.pieces[at] = ConsolePiece { addr, len: bytes.len() as u64 };
                    request.count += 1;
                }
            });
            self.send();
        } else {
            let (lines, serial) = (&mut self.lines, &mut self.serial);
            pieces(&mut |bytes: &[u8]| lines.write(Writer::Vm(id), prefix, bytes, &mut |b| serial.write_bytes(b)));
        }
    }

    /// Draws the kernel's pending line.
    fn flush_line(&mut self) {
        if self.line_len == 0 {
            return;
        }
        if self.port {
            let addr = phys::kernel_virt_to_phys(self.line.as_ptr() as u64);
            let piece = ConsolePiece { addr, len: self.line_len as u64 };
            self.request = ConsoleRequest { writer: KERNEL_WRITER, flags: 0, count: 1, ..self.request };
            self.request.pieces[0] = piece;
            self.send();
        } else {
            let (lines, serial) = (&mut self.lines, &mut self.serial);
            lines.write(Writer::Kernel, false, &self.line[..self.line_len], &mut |b| serial.write_bytes(b));
        }
        self.line_len = 0;
    }

    /// Hands the request to the monitor.
    fn send(&mut self) {
        #[cfg(target_os = "none")]
        {
            let addr = phys::kernel_virt_to_phys(&self.request as *const ConsoleRequest as u64);
            // SAFETY: the console port only makes the monitor read the
            // request and the memory it names; it writes nothing. The kernel
            // image (and so the request) lies below 4 GiB.
            unsafe {
                x86_64::instructions::port::Port::<u32>::new(denali_abi::boot::ports::CONSOLE).write(addr as u32)
            };
        }
    }
}

impl core::fmt::Write for Console {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        for &byte in s.as_bytes() {
            self.line[self.line_len] = byte;
            self.line_len += 1;
            if byte == b'\n' || self.line_len == LINE_MAX {
                self.flush_line();
            }
        }
        Ok(())
    }
}
