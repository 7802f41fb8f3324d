#![no_std]
#![no_main]
//! Counts its boots on its own disk, writes and reads back 100 KB at an
//! unaligned offset (several transfers, partial sectors at both ends), and
//! hands the disk hypercalls bad arguments, each of which must fail while
//! the VM keeps running.

extern crate alloc;

use denali::hypercall::{Hypercall, call3};
use denali::prelude::*;

fn pattern(i: usize, id: u32) -> u8 {
    (i * 7 + id as usize) as u8
}

#[denali::main]
fn main() {
    let id = denali::vm::id();
    let capacity = denali::disk::capacity();
    let mut count = [0u8; 8];
    denali::disk::read_at(0, &mut count).expect("read the boot counter");
    let boots = u64::from_le_bytes(count) + 1;
    denali::disk::write_at(0, &boots.to_le_bytes()).expect("write the boot counter");

    let data: alloc::vec::Vec<u8> = (0..100_000).map(|i| pattern(i, id)).collect();
    denali::disk::write_at(1000, &data).expect("write 100 KB");
    let mut back = alloc::vec![0u8; data.len()];
    denali::disk::read_at(1000, &mut back).expect("read 100 KB");
    // The counter beside the data is untouched by the partial sectors.
    denali::disk::read_at(0, &mut count).expect("read the boot counter again");
    let intact = back == data && u64::from_le_bytes(count) == boots;

    let buf = [0u8; 512];
    let sectors = capacity / 512;
    // SAFETY (every call below): each must be refused before the kernel
    // touches `buf` (the test checks that it is); a transfer it accepted
    // would be a kernel bug.
    let bad = [
        ("past the end", unsafe { call3(Hypercall::DiskRead, sectors, buf.as_ptr() as u64, 512) }),
        ("straddling the end", unsafe { call3(Hypercall::DiskWrite, sectors - 1, buf.as_ptr() as u64, 1024) }),
        ("wrapping sector", unsafe { call3(Hypercall::DiskRead, u64::MAX, buf.as_ptr() as u64, 512) }),
        ("ragged length", unsafe { call3(Hypercall::DiskRead, 0, buf.as_ptr() as u64, 100) }),
        ("empty", unsafe { call3(Hypercall::DiskRead, 0, buf.as_ptr() as u64, 0) }),
        ("too long", unsafe { call3(Hypercall::DiskRead, 0, buf.as_ptr() as u64, (64 << 10) + 512) }),
        ("kernel buffer", unsafe { call3(Hypercall::DiskRead, 0, 0xffff_8000_0000_0000, 512) }),
        ("null buffer", unsafe { call3(Hypercall::DiskWrite, 0, 0, 512) }),
    ];
    for (what, result) in bad {
        println!("vm {id} {what}: {result:?}");
    }
    let past = denali::disk::write_at(capacity - 4, &[1u8; 8]).map_err(|e| e.kind());
    println!("vm {id} write past the end: {past:?}");
    println!("vm {id}: disk of {capacity} bytes, boot {boots}, data intact: {intact}");
}
