#![no_std]
#![no_main]
//! A mostly idle service: sleeps a second and wakes, as many times as its
//! argument says (default 3), then exits. The scale benchmark boots
//! thousands of these (`cargo run --release -p denali-cli --example bench-scale`).

use denali::time::{Duration, sleep};

#[denali::main]
fn main() {
    let rounds: u32 = denali::vm::args().trim().parse().unwrap_or(3);
    for _ in 0..rounds {
        sleep(Duration::from_secs(1));
    }
}
