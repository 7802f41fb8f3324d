//! The parts of Denali that run below the services, built from this
//! repository once and then reused (cargo's own freshness check makes later
//! builds a no-op): the isolation kernel, and the UEFI loader that boots it
//! on bare metal.

use crate::{paths, toolchain};
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Stdio;

/// Builds (if stale) and returns the kernel ELF.
pub fn kernel_elf() -> Result<PathBuf> {
    let built = build_nightly(&paths::repo_root(), "denali-kernel", "x86_64-unknown-none", "denali-kernel")?;
    Ok(built.join("denali-kernel"))
}

/// Builds (if stale) and returns the UEFI loader (`BOOTX64.EFI`).
pub fn loader_efi() -> Result<PathBuf> {
    let built =
        build_nightly(&paths::repo_root().join("loader"), "denali-loader", "x86_64-unknown-uefi", "denali-loader")?;
    Ok(built.join("denali-loader.efi"))
}

/// `cargo +nightly build --release` of `package` (from `dir`) for `target`
/// into `target/<out>`; returns the directory holding the artifacts.
fn build_nightly(dir: &Path, package: &str, target: &str, out: &str) -> Result<PathBuf> {
    let sysroot = toolchain::check_nightly()?;
    toolchain::check_target(&sysroot, target)?;
    let target_dir = paths::repo_root().join("target").join(out);
    let output = toolchain::cargo()
        .current_dir(dir)
        .args(["build", "--quiet", "--release", "--target", target, "--package", package])
        .arg("--target-dir")
        .arg(&target_dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .with_context(|| format!("cannot run cargo to build {package}"))?;
    if !output.status.success() {
        bail!("building {package} in {} failed:\n{}", dir.display(), String::from_utf8_lossy(&output.stderr));
    }
    Ok(target_dir.join(target).join("release"))
}
