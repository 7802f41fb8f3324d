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
mod eventfd;
mod fd;
mod file;
mod io;
mod memory;
mod process;
pub mod readiness;
mod socket;
mod thread;
mod time;
mod volume;

pub(crate) use entry::start;

/// A failure as callers want it: std's platform layer reads the negated
/// errno returned; code written against libc (mio) sees a negative result
/// and reads the calling thread's `errno`, which this sets.
fn fail(errno: i32) -> i32 {
    crate::thread::set_errno(errno);
    -errno
}

/// A byte count as callers want it: the count, or -errno (see [`fail`]).
fn ret_size(result: Result<usize, i32>) -> isize {
    result.map_or_else(|e| fail(e) as isize, |n| n as isize)
}
