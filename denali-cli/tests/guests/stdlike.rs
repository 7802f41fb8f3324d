#![no_std]
#![no_main]
extern crate alloc;

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;
use alloc::format;
use denali::prelude::*;
use denali::time::{Duration, Instant, sleep};

#[denali::main]
fn main() {
    let v: Vec<u64> = (1..=1000).collect();
    println!("vec sum {}", v.iter().sum::<u64>());

    let mut s = String::new();
    for i in 0..1000 {
        s.push_str(&format!("{i}"));
    }
    println!("string len {}", s.len());

    let mut map = BTreeMap::new();
    map.insert("zebra", 26);
    map.insert("apple", 5);
    map.insert("mango", 13);
    let (first, last) = (map.iter().next().unwrap(), map.iter().last().unwrap());
    println!("map first {}={} last {}={}", first.0, first.1, last.0, last.1);

    println!("format {}", format!("{:05}|{:.5}|{:x}", 42, core::f64::consts::PI, 255));

    // Floating point in SSE registers: a series and Newton's method.
    let basel: f64 = (1..=1000).map(|n| 1.0 / ((n * n) as f64)).sum();
    println!("basel {basel:.6}");
    let mut x = 1.0f64;
    for _ in 0..20 {
        x = 0.5 * (x + 2.0 / x);
    }
    println!("sqrt2 {x:.12}");

    let start = Instant::now();
    sleep(Duration::from_millis(20));
    println!("slept at least 20 ms: {}", start.elapsed() >= Duration::from_millis(20));
}
