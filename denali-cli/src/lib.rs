//! `cargo denali`: the Denali toolchain.
//!
//! `new` makes a service from a template, `build` compiles it against the
//! guest library OS for the Denali target and links a `.dvm` image, and
//! `run` boots images on the bundled isolation kernel through the KVM
//! monitor. Each step lives in its own module; this crate is also a library
//! so the end-to-end tests can reach the same functions.

pub mod bare_metal;
pub mod build;
pub mod disk;
pub mod image;
pub mod kernel;
pub mod manifest;
pub mod new;
pub mod paths;
pub mod run;
pub mod toolchain;
pub mod vm_disk;
