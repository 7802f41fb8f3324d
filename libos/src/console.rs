//! The console: `print!`, `println!` and their `e` twins. Output is
//! buffered per call and written with as few hypercalls as possible.

use crate::hypercall::{Error, Hypercall, call2};
use core::fmt::{self, Write};

/// Writes bytes to the console, all of them. A VM over its console rate
/// (the kernel bounds it) waits here, letting other VMs run, until the
/// kernel takes more.
pub fn write_bytes(mut bytes: &[u8]) {
    while !bytes.is_empty() {
        // SAFETY: the kernel reads at most `bytes.len()` bytes at `bytes`.
        match unsafe { call2(Hypercall::ConsoleWrite, bytes.as_ptr() as u64, bytes.len() as u64) } {
            Err(Error::WouldBlock) => {
                // SAFETY: `yield` takes no pointer.
                let _ = unsafe { call2(Hypercall::Yield, 0, 0) };
            }
            Ok(0) | Err(_) => return,
            Ok(n) => bytes = &bytes[(n as usize).min(bytes.len())..],
        }
    }
}

struct Buffered {
    buf: [u8; 512],
    len: usize,
}

impl Buffered {
    fn flush(&mut self) {
        write_bytes(&self.buf[..self.len]);
        self.len = 0;
    }
}

impl Write for Buffered {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for chunk in s.as_bytes().chunks(self.buf.len()) {
            if self.len + chunk.len() > self.buf.len() {
                self.flush();
            }
            self.buf[self.len..self.len + chunk.len()].copy_from_slice(chunk);
            self.len += chunk.len();
        }
        Ok(())
    }
}

#[doc(hidden)]
pub fn _print(args: fmt::Arguments<'_>) {
    let mut out = Buffered { buf: [0; 512], len: 0 };
    let _ = out.write_fmt(args);
    out.flush();
}

/// Prints to the console.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => { $crate::console::_print(format_args!($($arg)*)) };
}

/// Prints a line to the console.
#[macro_export]
macro_rules! println {
    () => { $crate::console::_print(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::console::_print(format_args!("{}\n", format_args!($($arg)*))) };
}

/// Prints to the console (a VM has one console; this mirrors `std`).
#[macro_export]
macro_rules! eprint {
    ($($arg:tt)*) => { $crate::print!($($arg)*) };
}

/// Prints a line to the console (a VM has one console; this mirrors `std`).
#[macro_export]
macro_rules! eprintln {
    ($($arg:tt)*) => { $crate::println!($($arg)*) };
}
