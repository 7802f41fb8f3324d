#![no_std]
#![no_main]
//! Starts small and waits a moment, as a service waits for its first
//! work, then fills some heap (2 MiB unless its arguments say otherwise)
//! with a pattern of its own, then sleeps and checks it, three times (or
//! as often as they say): run more of these than memory holds and the
//! kernel must swap the sleeping ones out and back in without losing a
//! byte. (Filled while booting, they would start only as memory holds
//! them: the kernel's load control.)
//!
//! Arguments: `KIB ROUNDS SLEEP_MS` (default `2048 3 300`).

extern crate alloc;

use denali::prelude::*;
use denali::time::{Duration, sleep};

fn pattern(i: usize, id: u32) -> u8 {
    (i / 4096 + i * 13 + id as usize * 101) as u8
}

#[denali::main]
fn main() {
    let id = denali::vm::id();
    let mut args = denali::vm::args().split_whitespace().map(|a| a.parse::<usize>().ok());
    let mut arg = |default| args.next().flatten().unwrap_or(default);
    let (kib, rounds, sleep_ms) = (arg(2048), arg(3), arg(300));
    let size = kib * 1024;
    sleep(Duration::from_millis(1));
    let memory: alloc::vec::Vec<u8> = (0..size).map(|i| pattern(i, id)).collect();
    for round in 1..=rounds {
        sleep(Duration::from_millis(sleep_ms as u64));
        if let Some(i) = (0..size).find(|&i| memory[i] != pattern(i, id)) {
            println!("vm {id}: byte {i} changed after sleep {round}");
            denali::process::exit(1);
        }
    }
    if kib == 2048 {
        println!("vm {id}: 2 MiB intact after {rounds} sleeps");
    } else {
        println!("vm {id}: {kib} KiB intact after {rounds} sleeps");
    }
}
