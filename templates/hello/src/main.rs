#![no_std]
#![no_main]
use denali::prelude::*;

#[denali::main]
fn main() {
    println!("Hello from Denali VM {}", denali::vm::id());
}
