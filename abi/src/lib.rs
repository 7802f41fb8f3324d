//! The Denali virtual architecture, defined once.
//!
//! This crate is the security boundary written down: every hypercall number,
//! error code, event bit and shared structure that the isolation kernel, the
//! guest library OS and the toolchain exchange lives here and nowhere else.
//! It is `no_std` and has no dependencies so that all three can use it.
//!
//! # Calling convention
//!
//! A guest makes a hypercall with `int 4` (see
//! [`hypercall::HYPERCALL_VECTOR`]): the call number in `rax`, up to five
//! arguments in `rdi`, `rsi`, `rdx`, `r10`, `r8`, and the result back in
//! `rax`. A negative result is `-(Error as i64)`. Every other register is
//! preserved.
//!
//! # Address space
//!
//! A VM sees one flat address space `[0, mem_size)` with no paging hardware
//! exposed. See [`layout`] for the fixed addresses in it.
#![no_std]
#![warn(missing_docs)]

#[cfg(any(feature = "alloc", test))]
extern crate alloc;

pub mod boot;
pub mod calendar;
pub mod console;
pub mod counters;
pub mod debug;
pub mod disk;
pub mod hypercall;
pub mod image;
pub mod info;
pub mod layout;
pub mod net;

/// Version of this interface. The kernel refuses images and boot bundles
/// built for another version.
pub const ABI_VERSION: u32 = 4;

/// FNV-1a, 64 bit: the content hash of images and a cheap checksum.
///
/// Not cryptographic: it identifies identical images for page sharing and
/// catches corruption, it does not defend against a forger (the kernel
/// validates every image regardless of its hash).
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    #[test]
    fn fnv_matches_reference_vectors() {
        assert_eq!(super::fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(super::fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
