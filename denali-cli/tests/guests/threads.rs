#![no_std]
#![no_main]
extern crate alloc;
use alloc::vec::Vec;
use denali::prelude::*;
use denali::thread;
use denali::time::{Duration, Instant, sleep};

#[denali::main]
fn main() {
    let start = Instant::now();
    let handles: Vec<_> = [300u64, 100, 200]
        .into_iter()
        .map(|ms| {
            thread::spawn(move || {
                sleep(Duration::from_millis(ms));
                println!("thread {} woke after {ms} ms", thread::current());
                ms * 2
            })
        })
        .collect();
    let total: u64 = handles.into_iter().map(|h| h.join()).sum();
    let elapsed = start.elapsed().as_millis();
    println!("joined all: {total}; overlapped: {}", (300..550).contains(&elapsed));
    let counter = alloc::rc::Rc::new(core::cell::Cell::new(0));
    let c = counter.clone();
    let t = thread::spawn(move || for _ in 0..5 { c.set(c.get() + 1); thread::yield_now(); });
    for _ in 0..5 { thread::yield_now(); }
    t.join();
    println!("yields interleaved: {}", counter.get());
}
