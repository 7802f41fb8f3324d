//! The Denali isolation kernel.
//!
//! Runs in ring 0 of one x86_64 machine (a KVM guest under our monitor, or
//! bare metal) and multiplexes it between many Denali VMs: ring-3 protection
//! domains, each with its own page tables over a flat address space, that
//! reach the kernel only through the hypercalls of `denali-abi`.
//!
//! Policy that needs no hardware (the scheduler's queues, the frame
//! allocator's bookkeeping) builds and is unit-tested on the host; the
//! modules that touch registers build only for `x86_64-unknown-none`.
#![cfg_attr(target_os = "none", no_std)]

extern crate alloc;

pub mod collections;
pub mod mem;
pub mod net;
pub mod rate;
pub mod sched;
pub mod swap;
pub mod time;

#[cfg(target_os = "none")]
pub mod arch;
#[cfg(target_os = "none")]
pub mod boot;
#[cfg(target_os = "none")]
pub mod console;
#[cfg(target_os = "none")]
pub mod drivers;
#[cfg(target_os = "none")]
pub mod run;
#[cfg(target_os = "none")]
pub mod vm;
