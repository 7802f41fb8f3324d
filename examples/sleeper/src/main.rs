#![no_std]
#![no_main]
//! A mostly idle service: sleeps and wakes, as many times as its first
//! argument says (default 3), for as many seconds each time as its second
//! says (default 1), then exits. The scale benchmark boots thousands of
//! these (`cargo run --release -p denali-cli --example bench-scale`).

use denali::time::{Duration, sleep};

#[denali::main]
fn main() {
    let mut args = denali::vm::args().split_whitespace().map(|a| a.parse::<u64>().ok());
    let rounds = args.next().flatten().unwrap_or(3);
    let seconds = args.next().flatten().unwrap_or(1);
    for _ in 0..rounds {
        sleep(Duration::from_secs(seconds));
    }
}
