//! The Denali isolation kernel.
//!
//! Runs in ring 0 of one x86_64 machine (a KVM guest under our monitor, or
//! bare metal) and multiplexes it between many Denali VMs: ring-3 protection
//! domains, each with its own page tables over a flat address space, that
//! reach the kernel only through the hypercalls of `denali-abi`.
//!
//! The kernel is a core that builds and is unit-tested on the host (the run
//! loop, hypercall dispatch, VM admission and the loader, page tables and
//! guest memory, the scheduler, the virtual switch, swapping) over a small
//! [`platform::Platform`] interface; `arch`, `boot` and `drivers`, which
//! touch the hardware, build only for `x86_64-unknown-none`. The host tests
//! run the core on a simulated machine (`testing`).
#![cfg_attr(target_os = "none", no_std)]

extern crate alloc;

pub mod collections;
pub mod mem;
pub mod net;
pub mod platform;
pub mod rate;
pub mod sched;
pub mod swap;
pub mod time;

#[cfg(target_os = "none")]
pub mod arch;
#[cfg(target_os = "none")]
pub mod boot;
pub mod console;
#[cfg(target_os = "none")]
pub mod drivers;
pub mod run;
pub mod vm;

#[cfg(test)]
mod testing;

/// The test binary's allocator counts what each thread holds (see
/// `testing`).
#[cfg(test)]
#[global_allocator]
static ALLOCATOR: testing::CountingAlloc = testing::CountingAlloc;
