//! Network namespaces for the TAP tests: each test makes its own, so only
//! addresses inside it are used and nothing on this machine's network
//! changes.

use std::process::Command;

/// A network namespace with a TAP device `dn0` at 10.0.2.2/24, removed
/// (with the device) when dropped.
pub struct Namespace(pub String);

impl Namespace {
    /// A namespace named for this process and `tag` (tests run at once).
    pub fn new(tag: &str) -> Namespace {
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
        // A client here gives up connecting when the tests' patience runs
        // out (`load::CONNECT_PATIENCE`), not after Linux's default six SYN
        // retries (127 s): a VM under PVM takes a burst of a thousand
        // connections in over a minute, and every SYN it has no room for
        // is dropped so its client sends it again, as against a full Linux
        // backlog. Eight retries give up after 511 s.
        ip(&["netns", "exec", &name, "sh", "-c", "echo 8 > /proc/sys/net/ipv4/tcp_syn_retries"]);
        ns
    }

    /// A command run inside the namespace.
    pub fn command(&self, program: &str) -> Command {
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

pub fn ip(args: &[&str]) {
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
pub fn run_in(ns: &Namespace, service: &std::path::Path, args: &[&str]) -> Command {
    let mut c = ns.command(env!("CARGO_BIN_EXE_cargo-denali"));
    c.env("CARGO_TARGET_DIR", super::guest_target_dir()).current_dir(service).args(["denali", "run"]).args(args);
    c
}
