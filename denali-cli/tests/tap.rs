//! The NIC on a TAP device: every instance answers at its own address. The
//! test makes a network namespace of its own, so only addresses inside it
//! are used and nothing on this machine's network changes.

mod support;

use std::time::Duration;
use support::netns::*;
use support::*;

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
