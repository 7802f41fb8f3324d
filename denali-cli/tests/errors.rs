//! Mistakes a user can make get one sentence saying what to do.

mod support;

use std::time::Duration;
use support::*;

#[test]
fn a_crate_without_denali_is_refused() {
    let dir = scratch();
    std::fs::create_dir_all(dir.path().join("plain/src")).unwrap();
    std::fs::write(
        dir.path().join("plain/Cargo.toml"),
        "[package]\nname = \"plain\"\nversion = \"0.1.0\"\nedition = \"2021\"\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("plain/src/main.rs"), "fn main() {}\n").unwrap();
    let mut cmd = cargo_denali();
    cmd.current_dir(dir.path().join("plain")).args(["denali", "build"]);
    let out = run_with_timeout(cmd, Duration::from_secs(60));
    assert_eq!(out.status, 1);
    assert!(
        out.stderr.contains("error: the package `plain` does not depend on `denali`, so it is not a Denali service"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("hint: add `denali = { path ="), "{}", out.stderr);
}

#[test]
fn no_cargo_toml_is_explained() {
    let dir = scratch();
    let mut cmd = cargo_denali();
    cmd.current_dir(dir.path()).args(["denali", "build"]);
    let out = run_with_timeout(cmd, Duration::from_secs(60));
    assert_eq!(out.status, 1);
    assert!(out.stderr.contains("error: there is no Cargo.toml here or above"), "{}", out.stderr);
}

#[test]
fn a_missing_nightly_names_the_rustup_command() {
    let dir = scratch();
    let service = new_service(dir.path(), "nonightly", None);
    let empty_rustup = dir.path().join("rustup-home");
    std::fs::create_dir_all(&empty_rustup).unwrap();
    let mut cmd = cargo_denali();
    cmd.current_dir(&service).env("RUSTUP_HOME", &empty_rustup).args(["denali", "build"]);
    let out = run_with_timeout(cmd, Duration::from_secs(60));
    assert_eq!(out.status, 1);
    let toolchain = denali_cli::toolchain::TOOLCHAIN;
    assert!(out.stderr.contains(&format!("the {toolchain} toolchain is not installed")), "{}", out.stderr);
    assert!(
        out.stderr.contains(&format!("rustup toolchain install {toolchain} --profile minimal --component rust-src")),
        "{}",
        out.stderr
    );
}

#[test]
fn new_refuses_an_existing_directory_and_bad_names() {
    let dir = scratch();
    new_service(dir.path(), "taken", None);
    for (name, message) in [("taken", "already exists"), ("9lives", "is not a valid service name")] {
        let mut cmd = cargo_denali();
        cmd.current_dir(dir.path()).args(["denali", "new", name]);
        let out = run_with_timeout(cmd, Duration::from_secs(30));
        assert_eq!(out.status, 1);
        assert!(out.stderr.contains(message), "{}", out.stderr);
    }
}

#[test]
fn more_vms_than_the_kernel_can_hold_are_refused_with_a_sentence() {
    let dir = scratch();
    let image = build(&new_service(dir.path(), "crowd", None), "crowd");
    // A million VMs' records are more than half of the default 512 MiB.
    let out = run(dir.path(), &["--instances", "1000000", image.to_str().unwrap()]);
    assert!(out.stdout.contains("denali: 1000000 VMs do not fit in the kernel's "), "{}", out.stdout);
    assert!(out.stdout.contains(" MiB heap; boot fewer or give the run more memory (--mem)"), "{}", out.stdout);
    assert_eq!(out.status, 126, "{}", out.stderr);
}
