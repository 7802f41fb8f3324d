#![no_std]
#![no_main]
//! Touches MIB MiB of its heap, one word a page (the word names the page
//! and the VM), checks every word, then sleeps SLEEP_SECS seconds.
//!
//! Arguments: `MIB SLEEP_SECS` (default `1 0`).

extern crate alloc;

use denali::prelude::*;
use denali::time::{Duration, sleep};

const PAGE: usize = 4096;

fn word(page: usize, id: u32) -> u64 {
    (page as u64) << 16 | u64::from(id)
}

#[denali::main]
fn main() {
    let id = denali::vm::id();
    let mut args = denali::vm::args().split_whitespace().map(|a| a.parse::<usize>().ok());
    let mut arg = |default| args.next().flatten().unwrap_or(default);
    let (mib, sleep_secs) = (arg(1), arg(0));
    let pages = mib * 256;
    let mut memory: alloc::vec::Vec<u64> = alloc::vec::Vec::with_capacity(pages * PAGE / 8);
    let words = memory.spare_capacity_mut();
    for page in 0..pages {
        words[page * PAGE / 8].write(word(page, id));
    }
    for page in 0..pages {
        // SAFETY: the loop above wrote this word.
        if unsafe { words[page * PAGE / 8].assume_init() } != word(page, id) {
            println!("vm {id}: page {page} changed");
            denali::process::exit(1);
        }
    }
    println!("vm {id}: {mib} MiB touched and intact");
    sleep(Duration::from_secs(sleep_secs as u64));
}
