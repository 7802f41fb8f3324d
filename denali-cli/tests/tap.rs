//! The NIC on a TAP device: every instance answers at its own address. The
//! test makes a network namespace of its own, so only addresses inside it
//! are used and nothing on this machine's network changes.

mod support;

use std::process::Command;
use std::time::Duration;
use support::*;

/// A network namespace with a TAP device `dn0` at 10.0.2.2/24, removed
/// (with the device) when dropped.
struct Namespace(String);

impl Namespace {
    /// A namespace named for this process and `tag` (tests run at once).
    fn new(tag: &str) -> Namespace {
        let name = format!("denali-{tag}-{}", std::process::id());
        let ns = Namespace(name.clone());
        ip(&["netns", "add", &name]);
        for args in [
            &["tuntap", "add", "dev", "dn0", "mode", "tap"][..],
            &["addr", "add", "10.0.2.2/24", "dev", "dn0"],
            &["link", "set", "dn0", "up"],
            &["link", "set", "lo", "up"],
        ] {
            ip(&[&["netns", "exec", &name, "ip"][..], args].concat());
        }
        ns
    }

    /// A command run inside the namespace.
    fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.0, program]);
        c
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap_or_else(|e| {
        panic!("the TAP tests need `ip` (Debian package iproute2; scripts/setup installs it): {e}")
    });
    assert!(
        out.status.success(),
        "ip {} failed (the TAP tests need root to make a network namespace): {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `cargo denali run ARGS` for `service` inside `ns`.
fn run_in(ns: &Namespace, service: &std::path::Path, args: &[&str]) -> Command {
    let mut c = ns.command(env!("CARGO_BIN_EXE_cargo-denali"));
    c.env("CARGO_TARGET_DIR", guest_target_dir()).current_dir(service).args(["denali", "run"]).args(args);
    c
}

#[test]
fn a_hundred_instances_each_answer_at_their_own_address_on_a_tap_device() {
    let dir = scratch();
    let service = new_from_template(dir.path(), "web", "http");
    build(&service, "web");
    let ns = Namespace::new("hundred");
    let mut server = Background::spawn(run_in(&ns, &service, &["--instances", "100", "--net", "tap=dn0"]));
    server.wait_for("vm99| http: serving 2048 bytes on 10.0.2.114:80", Duration::from_secs(300));

    let urls: Vec<String> = (0..100).map(|i| format!("http://10.0.2.{}/", 15 + i)).collect();
    let mut curl = ns.command("curl");
    curl.args(["--silent", "--show-error", "--max-time", "60"]).args(&urls);
    let out = curl.output().expect("curl");
    let pages = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stderr), server.output());
    assert_eq!(pages.len(), 100 * 2048);
    for i in 0..100 {
        assert!(pages.contains(&format!("<h1>Hello from Denali VM {i}</h1>")), "VM {i} did not answer");
    }
}

#[test]
fn attaching_a_tap_device_without_permission_is_refused_with_a_sentence() {
    let dir = scratch();
    let image = build(&new_from_template(dir.path(), "noperm", "http"), "noperm");
    let ns = Namespace::new("noperm");
    // Root without CAP_NET_ADMIN cannot make a TAP device.
    let mut c = ns.command("setpriv");
    c.args(["--inh-caps=-net_admin", "--bounding-set=-net_admin", env!("CARGO_BIN_EXE_cargo-denali")]);
    c.env("CARGO_TARGET_DIR", guest_target_dir()).args([
        "denali",
        "run",
        "--net",
        "tap=dnnew",
        image.to_str().unwrap(),
    ]);
    let out = run_with_timeout(c, Duration::from_secs(60));
    assert_eq!(out.status, 1, "{}", out.stdout);
    assert!(
        out.stderr.contains("no permission to attach TAP device dnnew: run as root (or grant CAP_NET_ADMIN)"),
        "{}",
        out.stderr
    );
}
