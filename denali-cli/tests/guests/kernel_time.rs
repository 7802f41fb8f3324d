#![no_std]
#![no_main]
//! Spends its time in the kernel: `CALLS` hypercalls the kernel answers at
//! once, and reports how long they took by its own clock.

use denali::prelude::*;
use denali::time::Instant;

const CALLS: u32 = 20_000;

#[denali::main]
fn main() {
    let start = Instant::now();
    for _ in 0..CALLS {
        // SAFETY: no such call: the kernel refuses it and touches nothing.
        core::hint::black_box(unsafe { denali::hypercall::raw(u64::MAX, 0, 0) });
    }
    println!("{CALLS} hypercalls in {} ms", start.elapsed().as_millis());
}
