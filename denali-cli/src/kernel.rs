//! The isolation kernel, built from `kernel/` once and then reused: cargo's
//! own freshness check makes later builds a no-op.

use crate::{paths, toolchain};
use anyhow::{Context, Result, bail};
use std::path::PathBuf;
use std::process::Stdio;

/// Builds (if stale) and returns the kernel ELF.
pub fn kernel_elf() -> Result<PathBuf> {
    let sysroot = toolchain::check_nightly()?;
    toolchain::check_kernel_target(&sysroot)?;
    let root = paths::repo_root();
    let target_dir = root.join("target").join("denali-kernel");
    let output = toolchain::cargo()
        .current_dir(&root)
        .args(["build", "--quiet", "--release", "--target", "x86_64-unknown-none", "--package", "denali-kernel"])
        .arg("--target-dir")
        .arg(&target_dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .context("cannot run cargo to build the isolation kernel")?;
    if !output.status.success() {
        bail!(
            "building the isolation kernel in {} failed:\n{}",
            paths::kernel_crate().display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(target_dir.join("x86_64-unknown-none").join("release").join("denali-kernel"))
}
