#![no_std]
#![no_main]
//! Hands the kernel every bad argument it can think of; each call must fail
//! with an error code while the VM keeps running.

use denali::hypercall::{Error, Hypercall, call2, raw};
use denali::prelude::*;

fn show(what: &str, result: Result<u64, Error>) {
    println!("{what}: {result:?}");
}

#[denali::main]
fn main() {
    // SAFETY (every call below): the kernel must refuse each pointer as
    // outside the VM's readable memory; if it did not, it would only read.
    let mem = denali::vm::memory_size();
    show("kernel pointer", unsafe { call2(Hypercall::ConsoleWrite, 0xffff_8000_0000_0000, 16) });
    show("non-canonical pointer", unsafe { call2(Hypercall::ConsoleWrite, 0x0000_8000_0000_0000, 16) });
    show("null pointer", unsafe { call2(Hypercall::ConsoleWrite, 0, 16) });
    show("past the end", unsafe { call2(Hypercall::ConsoleWrite, mem - 4, 16) });
    show("wrapping range", unsafe { call2(Hypercall::ConsoleWrite, u64::MAX - 8, 16) });
    show("stack guard page", unsafe { call2(Hypercall::ConsoleWrite, mem - (256 << 10) - 16, 8) });
    show("unknown call", Error::from_return(unsafe { raw(0xdead, 1, 2) }));
    show("alarm in the past", unsafe { call2(Hypercall::Alarm, 1, 0) });
    println!("still running");
}
