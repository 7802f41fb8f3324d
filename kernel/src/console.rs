//! The kernel console: one serial port behind a lock, and `kprintln!`.

use crate::arch::x86_64::serial::Serial;
use spin::Mutex;

/// The console every message goes through.
pub static CONSOLE: Mutex<Serial> = Mutex::new(Serial::com1());

/// Prints a kernel message line.
#[macro_export]
macro_rules! kprintln {
    ($($arg:tt)*) => {{
        use core::fmt::Write as _;
        let mut console = $crate::console::CONSOLE.lock();
        let _ = writeln!(console, $($arg)*);
    }};
}

/// Writes raw bytes from a VM.
pub fn write_bytes(bytes: &[u8]) {
    CONSOLE.lock().write_bytes(bytes);
}
