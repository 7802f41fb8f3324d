#![no_std]
#![no_main]
//! Fills 2 MiB of heap with a pattern of its own, then sleeps and checks
//! it, three times: run more of these than memory holds and the kernel
//! must swap the sleeping ones out and back in without losing a byte.

extern crate alloc;

use denali::prelude::*;
use denali::time::{Duration, sleep};

const SIZE: usize = 2 << 20;

fn pattern(i: usize, id: u32) -> u8 {
    (i / 4096 + i * 13 + id as usize * 101) as u8
}

#[denali::main]
fn main() {
    let id = denali::vm::id();
    let memory: alloc::vec::Vec<u8> = (0..SIZE).map(|i| pattern(i, id)).collect();
    for round in 1..=3 {
        sleep(Duration::from_millis(300));
        if let Some(i) = (0..SIZE).find(|&i| memory[i] != pattern(i, id)) {
            println!("vm {id}: byte {i} changed after sleep {round}");
            denali::process::exit(1);
        }
    }
    println!("vm {id}: 2 MiB intact after 3 sleeps");
}
