//! The Denali guest library OS.
//!
//! A service built with `cargo denali build` runs alone in a Denali VM: a
//! flat address space, a read-only info page, and a handful of hypercalls.
//! This crate turns that into something that feels like `std`: an entry
//! attribute, `println!`, a heap for `alloc`, `time::{Instant, sleep}`,
//! `process::exit`, a panic handler that reports where it happened, green
//! threads, TCP/UDP sockets (`net`) over the VM's virtual NIC, and its own
//! disk (`disk`).
//!
//! ```ignore
//! #![no_std]
//! #![no_main]
//! use denali::prelude::*;
//!
//! #[denali::main]
//! fn main() {
//!     println!("Hello from Denali VM {}", denali::vm::id());
//! }
//! ```
#![no_std]
#![warn(missing_docs)]

pub mod console;
pub mod disk;
pub mod hypercall;
pub mod io;
pub mod net;
pub mod process;
pub mod thread;
pub mod time;
pub mod vm;

mod heap;
#[cfg(target_os = "hermit")]
mod hermit;
#[cfg(target_os = "hermit")]
pub use hermit::readiness;
mod rt;
mod tls;

/// Marks the function the service starts in (see the crate docs).
pub use denali_macros::main;

/// What most services want in scope.
pub mod prelude {
    pub use crate::{eprint, eprintln, print, println};
}
