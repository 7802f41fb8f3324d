//! std's platform layer: the C ABI that Rust's standard library calls on
//! `target_os = "hermit"` (declared by the `hermit-abi` crate), provided
//! here over the Denali virtual architecture, so an ordinary Rust program
//! (`fn main()`, `std::thread`, `std::time`, ...) runs in a Denali VM.
//!
//! Each `sys_*` function is what std expects of it: a negative errno on
//! failure, no panics across the boundary. The hypercall interface stays
//! the same narrow set; everything here is library code in the VM.

mod entropy;
mod entry;
mod fd;
mod io;
mod memory;
mod process;
mod socket;
mod thread;
mod time;

pub(crate) use entry::start;

/// A failure as std's platform layer wants it: the errno, negated.
const fn fail(errno: i32) -> i32 {
    -errno
}
