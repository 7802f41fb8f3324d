#![no_std]
#![no_main]
//! VM 0 spins for two seconds without yielding; VM 1 sleeps ten times
//! 20 ms. With a preempting kernel the sleeper finishes first.

use core::time::Duration;
use denali::prelude::*;
use denali::time::{Instant, sleep};

#[denali::main]
fn main() {
    if denali::vm::id() == 0 {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(2) {
            core::hint::spin_loop();
        }
        println!("spinner done");
    } else {
        for _ in 0..10 {
            sleep(Duration::from_millis(20));
        }
        println!("sleeper done");
    }
}
