//! The nightly toolchain the Denali target needs, checked up front so a
//! missing piece is one clear sentence rather than a page of cargo errors,
//! and a `cargo` command with the outer cargo's environment stripped.

use anyhow::{Context, Result, bail};
use std::path::PathBuf;
use std::process::Command;

/// The toolchain services and the kernel are built with: a pinned nightly,
/// so a new nightly cannot break a build that worked (`-Zbuild-std` and
/// JSON target specs are unstable). This is the one place it is named;
/// `scripts/setup` reads it from here.
pub const TOOLCHAIN: &str = "nightly-2026-05-20";

/// A `cargo +nightly` command that inherits nothing from an outer cargo
/// (a test run or `cargo run`) that would leak into the inner build.
pub fn cargo() -> Command {
    let mut cmd = Command::new("cargo");
    cmd.arg(format!("+{TOOLCHAIN}"));
    for (key, _) in std::env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        let keep = matches!(key, "CARGO_HOME" | "CARGO_TARGET_DIR" | "RUSTUP_HOME");
        let inherited_build_setting = key.starts_with("CARGO_")
            || key.starts_with("RUSTC")
            || key.starts_with("RUSTDOC")
            || matches!(key, "CARGO" | "RUSTFLAGS" | "RUSTUP_TOOLCHAIN" | "__CARGO_FIX_PLZ");
        if inherited_build_setting && !keep {
            cmd.env_remove(key);
        }
    }
    cmd
}

/// The nightly sysroot, after checking nightly and `rust-src` are there.
pub fn check_nightly() -> Result<PathBuf> {
    let output = Command::new("rustc")
        .args([&format!("+{TOOLCHAIN}"), "--print", "sysroot"])
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("RUSTC")
        .output()
        .context("cannot run rustc: install Rust with rustup (https://rustup.rs)")?;
    if !output.status.success() {
        bail!(
            "the {TOOLCHAIN} toolchain is not installed, and Denali services need it\n\
             hint: run `rustup toolchain install {TOOLCHAIN} --profile minimal --component rust-src`"
        );
    }
    let sysroot = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    if !sysroot.join("lib/rustlib/src/rust/library/core").is_dir() {
        bail!(
            "the {TOOLCHAIN} toolchain has no rust-src, which building for the Denali target needs\n\
             hint: run `rustup component add rust-src --toolchain {TOOLCHAIN}`"
        );
    }
    Ok(sysroot)
}

/// Checks that nightly has the prebuilt `target` (the kernel's or the loader's).
pub fn check_target(sysroot: &std::path::Path, target: &str) -> Result<()> {
    if !sysroot.join("lib/rustlib").join(target).is_dir() {
        bail!(
            "the {TOOLCHAIN} toolchain lacks the {target} target Denali's kernel and loader are built for\n\
             hint: run `rustup target add {target} --toolchain {TOOLCHAIN}` (scripts/setup does)"
        );
    }
    Ok(())
}
