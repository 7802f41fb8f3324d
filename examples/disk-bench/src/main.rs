#![no_std]
#![no_main]
//! Prints what the VM's disk costs, measured inside a VM: streaming its
//! whole 16 MiB disk out and back in 64 KiB transfers (the most one
//! hypercall moves), and single-sector reads and writes.
//!
//! `cargo denali run --release` in this directory (add `--qemu` for the
//! same on bare metal, under QEMU).

extern crate alloc;

use denali::prelude::*;
use denali::time::Instant;

const CHUNK: usize = 64 << 10;
const SMALL_OPS: u64 = 2000;

fn report(label: &str, bytes: u64, ops: u64, ns: u64) {
    let mib_s = (bytes as f64 / (1 << 20) as f64) / (ns as f64 / 1e9);
    println!("{label:<28} {mib_s:>8.1} MiB/s {:>8} us/op  ({ops} ops)", ns / ops / 1000);
}

#[denali::main]
fn main() {
    let capacity = denali::disk::capacity();
    let chunks = capacity / CHUNK as u64;
    let mut buf = alloc::vec![0x5au8; CHUNK];

    let start = Instant::now();
    for i in 0..chunks {
        denali::disk::write_at(i * CHUNK as u64, &buf).expect("write");
    }
    report("write, 64 KiB transfers", capacity, chunks, start.elapsed().as_nanos() as u64);

    let start = Instant::now();
    for i in 0..chunks {
        denali::disk::read_at(i * CHUNK as u64, &mut buf).expect("read");
    }
    report("read, 64 KiB transfers", capacity, chunks, start.elapsed().as_nanos() as u64);

    let sectors = capacity / 512;
    let start = Instant::now();
    for i in 0..SMALL_OPS {
        // A stride that visits sectors out of order.
        let sector = (i * 7919) % sectors;
        denali::disk::read_at(sector * 512, &mut buf[..512]).expect("read a sector");
    }
    report("read, one sector", SMALL_OPS * 512, SMALL_OPS, start.elapsed().as_nanos() as u64);

    let start = Instant::now();
    for i in 0..SMALL_OPS {
        let sector = (i * 7919) % sectors;
        denali::disk::write_at(sector * 512, &buf[..512]).expect("write a sector");
    }
    report("write, one sector", SMALL_OPS * 512, SMALL_OPS, start.elapsed().as_nanos() as u64);
}
