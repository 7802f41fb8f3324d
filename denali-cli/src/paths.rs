//! Where the toolchain's own files are: the repository this binary was
//! built from holds the library OS, the kernel, the target spec and the
//! templates.

use std::path::PathBuf;

/// The repository root.
pub fn repo_root() -> PathBuf {
    let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest_dir.parent().map(PathBuf::from).unwrap_or(manifest_dir)
}

/// The guest library OS crate (`denali`).
pub fn libos() -> PathBuf {
    repo_root().join("libos")
}

/// The target spec of `#![no_std]` services.
pub fn target_spec() -> PathBuf {
    repo_root().join("target-specs").join("x86_64-denali.json")
}

/// The target spec of `std` services: std's Hermit platform layer, which
/// the `denali` crate provides.
pub fn std_target_spec() -> PathBuf {
    repo_root().join("target-specs").join("x86_64-denali-std.json")
}

/// The isolation kernel's crate.
pub fn kernel_crate() -> PathBuf {
    repo_root().join("kernel")
}
