//! Helpers for the end-to-end tests: make services with `cargo denali new`,
//! build and run them with the real binary under real KVM, with a timeout.
#![allow(dead_code)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The `cargo-denali` binary under test.
pub fn cargo_denali() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cargo-denali"));
    // All test services share one target directory, so the standard library
    // and the denali crate are compiled for the Denali target only once.
    cmd.env("CARGO_TARGET_DIR", guest_target_dir());
    cmd
}

/// Where test services are built.
pub fn guest_target_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/e2e-guests")
}

/// Fails loudly (never skips) where KVM is missing.
pub fn require_kvm() {
    if let Err(e) = std::fs::File::options().read(true).write(true).open("/dev/kvm") {
        panic!("these tests boot VMs under KVM and need /dev/kvm, which cannot be opened here: {e}");
    }
}

/// What a finished command left behind.
#[derive(Debug)]
pub struct Outcome {
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `cmd`, killing it after `limit`.
pub fn run_with_timeout(mut cmd: Command, limit: Duration) -> Outcome {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn cargo-denali");
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        stdout.read_to_string(&mut s).ok();
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        stderr.read_to_string(&mut s).ok();
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if start.elapsed() > limit {
            child.kill().ok();
            child.wait().ok();
            panic!("timed out after {limit:?}; stdout so far: {}", out.join().unwrap());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Outcome { status: status.code().unwrap_or(-1), stdout: out.join().unwrap(), stderr: err.join().unwrap() }
}

/// A scratch directory for services.
pub fn scratch() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

/// `cargo denali new NAME` in `dir`, then replaces src/main.rs with `main_rs`
/// (when given). Returns the service directory.
pub fn new_service(dir: &Path, name: &str, main_rs: Option<&str>) -> PathBuf {
    let out = run_with_timeout(
        {
            let mut c = cargo_denali();
            c.current_dir(dir).args(["denali", "new", name]);
            c
        },
        Duration::from_secs(30),
    );
    assert_eq!(out.status, 0, "cargo denali new failed: {}", out.stderr);
    let service = dir.join(name);
    if let Some(src) = main_rs {
        std::fs::write(service.join("src/main.rs"), src).unwrap();
    }
    service
}

/// `cargo denali build` in `service`; returns the image path.
pub fn build(service: &Path, name: &str) -> PathBuf {
    let mut c = cargo_denali();
    c.current_dir(service).args(["denali", "build"]);
    let out = run_with_timeout(c, Duration::from_secs(600));
    assert_eq!(out.status, 0, "cargo denali build failed:\n{}", out.stderr);
    let image = guest_target_dir().join("denali/debug").join(format!("{name}.dvm"));
    assert!(image.is_file(), "the image is not at {}", image.display());
    image
}

/// `cargo denali run` with these arguments, in `dir`.
pub fn run(dir: &Path, args: &[&str]) -> Outcome {
    require_kvm();
    let mut c = cargo_denali();
    c.current_dir(dir).args(["denali", "run"]).args(args);
    run_with_timeout(c, Duration::from_secs(600))
}
