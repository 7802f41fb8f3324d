//! Helpers for the end-to-end tests: make services with `cargo denali new`,
//! build and run them with the real binary under real KVM, with a timeout.
#![allow(dead_code)]

pub mod load;
pub mod netns;

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

/// Tests that load the machine's two cores (or measure time and CPU use)
/// take turns rather than compete: each holds this while it runs.
pub fn take_turn() -> std::sync::MutexGuard<'static, ()> {
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    ONE_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
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

/// Fails unless `output` holds every one of `lines`.
pub fn assert_has_lines(output: &str, lines: &[&str]) {
    for line in lines {
        assert!(output.contains(line), "missing `{line}` in:\n{output}");
    }
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

/// `cargo denali new NAME --template TEMPLATE` in `dir`.
pub fn new_from_template(dir: &Path, name: &str, template: &str) -> PathBuf {
    let mut c = cargo_denali();
    c.current_dir(dir).args(["denali", "new", name, "--template", template]);
    let out = run_with_timeout(c, Duration::from_secs(30));
    assert_eq!(out.status, 0, "cargo denali new --template {template} failed: {}", out.stderr);
    dir.join(name)
}

/// A `cargo denali run` left running in the background (a server); killed
/// when dropped.
pub struct Background {
    child: std::process::Child,
    stdout: std::sync::Arc<std::sync::Mutex<String>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Background {
    /// Starts `cargo denali run ARGS` in `dir`.
    pub fn start(dir: &Path, args: &[&str]) -> Background {
        let mut c = cargo_denali();
        c.current_dir(dir).args(["denali", "run"]).args(args);
        Background::spawn(c)
    }

    /// Starts `c`, which runs cargo-denali.
    pub fn spawn(mut c: Command) -> Background {
        require_kvm();
        let mut child = c.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn cargo-denali");
        let stdout = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let streams =
            [Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>, Box::new(child.stderr.take().unwrap())];
        let readers = streams
            .into_iter()
            .map(|mut stream| {
                let sink = stdout.clone();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    while let Ok(n @ 1..) = stream.read(&mut buf) {
                        sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
                    }
                })
            })
            .collect();
        Background { child, stdout, readers }
    }

    /// Waits for the run to end by itself (panicking with its output after
    /// `limit`) and returns its exit status once all it printed is read.
    pub fn finish(&mut self, limit: Duration) -> i32 {
        let start = Instant::now();
        let status = loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                break status;
            }
            assert!(start.elapsed() < limit, "the run did not end within {limit:?}:\n{}", self.output());
            std::thread::sleep(Duration::from_millis(50));
        };
        self.readers.drain(..).for_each(|reader| reader.join().unwrap());
        status.code().unwrap_or(-1)
    }

    /// Sends the process SIGINT, as Ctrl-C in its terminal would.
    pub fn interrupt(&self) {
        let sent = Command::new("kill").args(["-INT", &self.child.id().to_string()]).status();
        assert!(sent.is_ok_and(|s| s.success()), "cannot send SIGINT to process {}", self.child.id());
    }

    /// Everything printed so far (stdout and stderr).
    pub fn output(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    /// Waits until the output holds `text`; panics with the output after
    /// `limit` or if the run ends first.
    pub fn wait_for(&mut self, text: &str, limit: Duration) {
        let start = Instant::now();
        while !self.output().contains(text) {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("the run ended ({status}) before printing {text:?}:\n{}", self.output());
            }
            assert!(start.elapsed() < limit, "no {text:?} after {limit:?}:\n{}", self.output());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

/// A TCP port on 127.0.0.1 that nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Runs `curl ARGS` and returns what it printed; fails loudly where curl
/// is missing.
pub fn curl(args: &[&str]) -> Outcome {
    let mut c = Command::new("curl");
    c.args(["--silent", "--show-error", "--max-time", "30"]).args(args);
    match c.stdout(Stdio::piped()).stderr(Stdio::piped()).output() {
        Ok(out) => Outcome {
            status: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        },
        Err(e) => panic!("the network tests need curl (Debian package `curl`; scripts/setup installs it): {e}"),
    }
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

/// The number just before `word` in `line` (as in "3 swap-ins" or
/// "(12 pages,"); panics, showing the line, if there is none.
pub fn number_before(line: &str, word: &str) -> u64 {
    let at = line.find(word).unwrap_or_else(|| panic!("no `{word}` in {line}"));
    let number = line[..at].split([' ', '(']).rev().find(|w| !w.is_empty());
    number.and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("no number before `{word}` in {line}"))
}

/// The kernel's `denali: swap: ...` line of a run with `--stats`.
pub fn swap_report(output: &str) -> &str {
    output.lines().find(|l| l.starts_with("denali: swap: ")).unwrap_or_else(|| panic!("no swap line in\n{output}"))
}
