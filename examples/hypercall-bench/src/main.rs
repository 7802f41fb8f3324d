#![no_std]
#![no_main]
//! Prints what the Denali virtual architecture's basic operations cost,
//! measured inside a VM: a ring-3 loop with no call (the loop's own cost,
//! to subtract), a null hypercall (an unknown call number, which the
//! kernel answers at once), a `yield`, an alarm already due and the `idle`
//! that takes its event, reading the clock, a first touch of a demand-zero
//! page, and a first write to a page of the image's data (copy-on-write).
//!
//! Booted through PVH under QEMU with `-icount shift=0,sleep=off`, a
//! nanosecond of the VM's clock is one instruction, so the figures are
//! instructions per operation (`examples/bench-icount` in `denali-cli`).
//!
//! `cargo denali run --release` in this directory. The iteration count is
//! the VM's first argument (`args` in Denali.toml), 1,000,000 by default. A
//! second argument `switch` measures only `yield`: run two instances and
//! each yield hands the CPU to the other VM, so one round is two hypercalls
//! and two domain switches.

extern crate alloc;

use denali::hypercall::{Hypercall, call2, raw};
use denali::prelude::*;
use denali::time::Instant;

const PAGES: usize = 256;

/// Image data pages written once each by the copy-on-write figure. Not
/// zero, so the linker keeps them in `.data` (pages of the image that
/// every VM shares until it writes one).
const DATA_PAGES: usize = 64;
static mut DATA: [[u8; 4096]; DATA_PAGES] = [[1; 4096]; DATA_PAGES];

fn per_op(label: &str, n: u64, f: impl Fn()) {
    let start = Instant::now();
    for _ in 0..n {
        f();
    }
    let ns = start.elapsed().as_nanos() as u64;
    println!("{label:<28} {:>10} ns/op  ({n} ops in {} ms)", ns / n, ns / 1_000_000);
}

#[denali::main]
fn main() {
    let mut args = denali::vm::args().split_whitespace();
    let iterations: u64 = args.next().and_then(|n| n.parse().ok()).unwrap_or(1_000_000);
    if args.next() == Some("switch") {
        per_op("yield round (2 VMs)", iterations, || {
            // SAFETY: `yield` takes no pointer.
            let _ = unsafe { call2(Hypercall::Yield, 0, 0) };
        });
        return;
    }
    per_op("ring-3 loop (no call)", iterations, || {
        core::hint::black_box(0u64);
    });
    per_op("null hypercall", iterations, || {
        // SAFETY: no such call: the kernel refuses it and touches nothing.
        core::hint::black_box(unsafe { raw(u64::MAX, 0, 0) });
    });
    per_op("yield hypercall", iterations / 10, || {
        // SAFETY: `yield` takes no pointer.
        let _ = unsafe { call2(Hypercall::Yield, 0, 0) };
    });
    per_op("alarm (due) + idle", iterations / 10, || {
        // SAFETY: neither call takes a pointer. A deadline of 1 ns since
        // boot has passed, so the alarm's event is pending at once and
        // `idle` returns it without blocking.
        let _ = unsafe { call2(Hypercall::Alarm, 1, 0) };
        let _ = unsafe { call2(Hypercall::Idle, 0, 0) };
    });
    per_op("clock read (no hypercall)", iterations, || {
        core::hint::black_box(Instant::now());
    });
    let mut pages = alloc::vec::Vec::<[u8; 4096]>::with_capacity(PAGES);
    let start = Instant::now();
    for i in 0..PAGES {
        // Each push fills a fresh heap page, faulting it in.
        pages.push([i as u8; 4096]);
    }
    let ns = start.elapsed().as_nanos() as u64;
    println!("{:<28} {:>10} ns/op  ({PAGES} pages)", "first touch of a heap page", ns / PAGES as u64);
    let data = &raw mut DATA;
    let start = Instant::now();
    for page in 0..DATA_PAGES {
        // SAFETY: one thread; each write stays inside `DATA`.
        unsafe { core::ptr::write_volatile(&raw mut (*data)[page][8], 2) };
    }
    let ns = start.elapsed().as_nanos() as u64;
    println!("{:<28} {:>10} ns/op  ({DATA_PAGES} pages)", "copy-on-write fault", ns / DATA_PAGES as u64);
}
