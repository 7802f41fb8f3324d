//! Ordinary `std` Rust in a Denali VM: the std template (a `std::net` web
//! server) answering curl, a guest that exercises what std's platform layer
//! provides (console, args and env, exit status, panics, clocks and sleep,
//! threads, locks, channels, thread-locals, hashing), and one that
//! exercises `std::net` inside the VM (loopback, blocking and non-blocking,
//! timeouts, UDP), booted under KVM.

mod support;

use std::time::Duration;
use support::*;

#[test]
fn the_std_template_serves_curl_through_a_port_forward() {
    let dir = scratch();
    let service = new_from_template(dir.path(), "api", "std");
    let source = std::fs::read_to_string(service.join("src/main.rs")).unwrap();
    let plain = !source.contains("#![no_std]") && !source.contains("#![no_main]") && !source.contains("denali::");
    assert!(plain, "the template is not plain std:\n{source}");
    build(&service, "api");
    let port = free_port();
    let mut server = Background::start(&service, &["-p", &format!("{port}:80")]);
    server.wait_for("api: listening on 0.0.0.0:80", Duration::from_secs(120));
    for _ in 0..3 {
        let page = curl(&[&format!("http://127.0.0.1:{port}/")]);
        assert_eq!(page.status, 0, "{}\n{}", page.stderr, server.output());
        assert!(page.stdout.starts_with("Hello, Denali, from std in a Denali VM (up "), "{}", page.stdout);
    }
}

#[test]
fn std_net_works_inside_a_vm() {
    let dir = scratch();
    let service = new_service(dir.path(), "stdnet", Some(include_str!("guests/std_net.rs")));
    let manifest = "memory = \"256 MiB\"\n[network]\nip = \"10.0.2.15/24\"\ngateway = \"10.0.2.2\"\n";
    std::fs::write(service.join("Denali.toml"), manifest).unwrap();
    build(&service, "stdnet");
    let out = run(&service, &[]);
    assert_eq!(out.status, 0, "stdout: {}\nstderr: {}", out.stdout, out.stderr);
    for line in [
        "own address 10.0.2.15",
        "listening on 0.0.0.0:7000",
        "echo via 127.0.0.1:7000: olleh",
        "echo via 10.0.2.15:7000: olleh",
        "50 concurrent clients answered: true",
        "nonblocking accept: Some(WouldBlock)",
        "read timeout: Some(WouldBlock) after >= 50 ms: true",
        "accepted the queued connection from 127.0.0.1: true",
        "nonblocking read: Some(WouldBlock)",
        "nodelay true",
        "read after the peer closed: 0",
        "refused: Some(ConnectionRefused)",
        "connect_timeout: true",
        "bind in use: Some(AddrInUse)",
        "udp pingpong",
        "udp timeout: Some(WouldBlock)",
    ] {
        assert!(out.stdout.contains(line), "missing `{line}` in:\n{}", out.stdout);
    }
}

/// Writes the guest's Denali.toml: `END` chooses how `main` ends.
fn manifest(service: &std::path::Path, end: &str) {
    let text =
        format!("memory = \"64 MiB\"\nargs = \"--port 80  -v\"\n[env]\nGREETING = \"hello there\"\nEND = \"{end}\"\n");
    std::fs::write(service.join("Denali.toml"), text).unwrap();
}

#[test]
fn std_works_inside_a_vm() {
    let dir = scratch();
    let service = new_service(dir.path(), "stdplat", Some(include_str!("guests/std_platform.rs")));
    manifest(&service, "ok");
    build(&service, "stdplat");
    let out = run(&service, &[]);
    assert_eq!(out.status, 0, "stdout: {}\nstderr: {}", out.stdout, out.stderr);
    for line in [
        "hello from std",
        "to stderr",
        r#"args ["--port", "80", "-v"]"#,
        "argv0 stdplat",
        r#"env GREETING=Ok("hello there")"#,
        "env MISSING is_err=true",
        "slept >= 30 ms: true",
        "wall clock after 2025: true",
        "hashmap 100 42",
        "thread-locals [1, 2, 3, 4] main 0",
        "mutex 8000",
        "condvar notified, then timed out: true",
        "rwlock 4 readers saw true",
        "mpsc 30 sum 3135",
        "sync_channel Ok(7) timeout true",
    ] {
        assert!(out.stdout.contains(line), "missing `{line}` in:\n{}", out.stdout);
    }

    // How main ends is the run's status, as on Linux.
    for (end, status, says) in [
        ("exit", 3, None),
        ("panic", 101, Some("panicked at src/main.rs")),
        ("error", 1, Some("Error: \"asked to fail\"")),
        ("abort", 134, None),
    ] {
        manifest(&service, end);
        let out = run(&service, &[]);
        assert_eq!(out.status, status, "END={end}: stdout: {}\nstderr: {}", out.stdout, out.stderr);
        if let Some(text) = says {
            assert!(out.stdout.contains(text), "END={end}: missing `{text}` in:\n{}", out.stdout);
        }
    }
}
