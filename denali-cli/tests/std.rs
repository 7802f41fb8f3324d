//! Ordinary `std` Rust in a Denali VM: the std template (a `std::net` web
//! server) answering curl, a guest that exercises what std's platform layer
//! provides (console, args and env, exit status, panics, clocks and sleep,
//! threads, locks, channels, thread-locals, hashing), and one that
//! exercises `std::net` inside the VM (loopback, blocking and non-blocking,
//! timeouts, UDP), one that uses `std::fs` on the VM's disk across reboots,
//! and the axum template under load, booted under KVM.

mod support;

use std::time::Duration;
use support::*;

/// A service named `name` in `dir` whose main.rs is `source`, with
/// `dependency` (a Cargo.toml line) added to its dependencies.
fn guest(dir: &std::path::Path, name: &str, source: Option<&str>, dependency: Option<&str>) -> std::path::PathBuf {
    let service = new_service(dir, name, source);
    if let Some(dependency) = dependency {
        let cargo_toml = std::fs::read_to_string(service.join("Cargo.toml")).unwrap();
        let cargo_toml = cargo_toml.replace("[dependencies]\n", &format!("[dependencies]\n{dependency}\n"));
        std::fs::write(service.join("Cargo.toml"), cargo_toml).unwrap();
    }
    service
}

/// Builds and runs `service` (named `name`) and returns what it printed;
/// it must exit 0.
fn build_and_run(service: &std::path::Path, name: &str) -> String {
    build(service, name);
    let out = run(service, &[]);
    assert_eq!(out.status, 0, "stdout: {}\nstderr: {}", out.stdout, out.stderr);
    out.stdout
}

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
    let service = guest(dir.path(), "stdnet", Some(include_str!("guests/std_net.rs")), None);
    let manifest = "memory = \"256 MiB\"\n[network]\nip = \"10.0.2.15/24\"\ngateway = \"10.0.2.2\"\n";
    std::fs::write(service.join("Denali.toml"), manifest).unwrap();
    assert_has_lines(
        &build_and_run(&service, "stdnet"),
        &[
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
            "read woken by shutdown: Ok(0)",
            "udp pingpong",
            "udp timeout: Some(WouldBlock)",
        ],
    );
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
    let service = guest(dir.path(), "stdplat", Some(include_str!("guests/std_platform.rs")), None);
    manifest(&service, "ok");
    assert_has_lines(
        &build_and_run(&service, "stdplat"),
        &[
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
            "70000 threads one after another: 7 checkpoints",
            "mutex 8000",
            "condvar notified, then timed out: true",
            "rwlock 4 readers saw true",
            "mpsc 30 sum 3135",
            "sync_channel Ok(7) timeout true",
        ],
    );

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

#[test]
fn std_fs_works_on_the_vms_disk_and_survives_a_reboot() {
    let dir = scratch();
    let service = guest(dir.path(), "stdfs", Some(include_str!("guests/std_fs.rs")), None);
    std::fs::write(service.join("Denali.toml"), "memory = \"64 MiB\"\n[disk]\nsize = \"8 MiB\"\n").unwrap();
    let kept = "[104, 69, 76, 76, 111, 0, 0, 0, 33]";
    // A disk of this test's own: the default one beside the image is shared
    // by every run of the test in the guests' target directory.
    let disk = dir.path().join("stdfs.disk");
    let disk_args = ["--disk", disk.to_str().unwrap()];
    build(&service, "stdfs");
    let out = run(&service, &disk_args);
    assert_eq!(out.status, 0, "stdout: {}\nstderr: {}", out.stdout, out.stderr);
    assert_has_lines(
        &out.stdout,
        &[
            "boot 1",
            r#"read "hello""#,
            r#"appended "one\ntwo\nthree\n""#,
            &format!("after seeks {kept}"),
            "stream position 9",
            "big file read back equal: true",
            r#"listing ["a-long-file-name.json", "b.txt", "empty"]"#,
            "empty listing []",
            "metadata: file true dir false len 3",
            "dir metadata: dir true",
            "modified within a minute of now: true",
            "relative path finds the same file: true",
            "missing: Some(NotFound)",
            "create_new on an existing file: Some(AlreadyExists)",
            "create_dir twice: Some(AlreadyExists)",
            "missing parent: Some(NotFound)",
            "remove_dir of a full directory fails: true",
            "write to a read-only open fails: true",
            "open file kept under other names: true true",
            r#"its short name reads it: "{}""#,
            "removed: Some(NotFound)",
            r#"listing after removals ["a-long-file-name.json"]"#,
        ],
    );

    // The service boots again on the same disk and finds its files.
    let out = run(&service, &disk_args);
    assert_eq!(out.status, 0, "stdout: {}\nstderr: {}", out.stdout, out.stderr);
    assert_has_lines(
        &out.stdout,
        &[
            "boot 2",
            &format!("kept {kept}"),
            r#"kept log "one\ntwo\nthree\n""#,
            "kept big file equal: true",
            r#"kept listing ["big.bin", "boots.txt", "data", "greeting.txt", "service-log.txt"]"#,
        ],
    );

    // Without a disk, std::fs fails and the VM says what to add.
    std::fs::write(service.join("Denali.toml"), "memory = \"64 MiB\"\n").unwrap();
    let out = run(&service, &[]);
    assert_eq!(out.status, 1, "stdout: {}\nstderr: {}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("std::fs needs a disk, and this VM has none: give it one with [disk]"),
        "{}",
        out.stdout
    );
}

/// The source of `tiny_http`'s own hello-world example, from the crate as
/// crates.io ships it (cargo has fetched it for the service).
fn tiny_http_example(service: &std::path::Path) -> String {
    let metadata = cargo_metadata::MetadataCommand::new()
        .manifest_path(service.join("Cargo.toml"))
        .exec()
        .expect("cargo metadata of the service");
    let package = metadata.packages.iter().find(|p| p.name.as_str() == "tiny_http").expect("tiny_http is a dependency");
    let example = package.manifest_path.parent().expect("a crate directory").join("examples/hello-world.rs");
    std::fs::read_to_string(&example).unwrap_or_else(|e| panic!("cannot read {example}: {e}"))
}

#[test]
fn a_third_party_std_crate_serves_from_its_own_example_unchanged() {
    let _turn = take_turn();
    let dir = scratch();
    let service = guest(dir.path(), "tiny", None, Some("tiny_http = \"=0.12.0\""));
    std::fs::write(service.join("Denali.toml"), "memory = \"64 MiB\"\n").unwrap();
    let example = tiny_http_example(&service);
    assert!(example.contains("tiny_http::Server::http(\"0.0.0.0:9975\")"), "not the example expected:\n{example}");
    std::fs::write(service.join("src/main.rs"), &example).unwrap();
    build(&service, "tiny");

    let port = free_port();
    let mut server = Background::start(&service, &["-p", &format!("{port}:9975")]);
    server.wait_for("Now listening on port 9975", Duration::from_secs(120));
    let page = curl(&[&format!("http://127.0.0.1:{port}/")]);
    assert_eq!((page.status, page.stdout.as_str()), (0, "hello world"), "{}\n{}", page.stderr, server.output());

    // 100 clients at once, two keep-alive requests each: all answered.
    let target = format!("127.0.0.1:{port}").parse().unwrap();
    let report = load::http_load(target, 100, 2, "hello world".len(), None);
    assert!(report.failures.is_empty(), "{} ok; failures: {:?}\n{}", report.ok, report.failures, server.output());
    assert_eq!(report.ok, 200);
}

#[test]
fn the_axum_template_serves_curl_and_a_hundred_concurrent_clients() {
    let _turn = take_turn();
    let dir = scratch();
    let service = new_from_template(dir.path(), "axumweb", "axum");
    build(&service, "axumweb");
    let port = free_port();
    let mut server = Background::start(&service, &["-p", &format!("{port}:80")]);
    server.wait_for("axumweb: listening on 0.0.0.0:80", Duration::from_secs(120));
    let page = curl(&[&format!("http://127.0.0.1:{port}/")]);
    assert_eq!((page.status, page.stdout.as_str()), (0, "Hello, World!"), "{}\n{}", page.stderr, server.output());

    // 100 clients at once, two keep-alive requests each: all answered.
    let target = format!("127.0.0.1:{port}").parse().unwrap();
    let report = load::http_load(target, 100, 2, "Hello, World!".len(), None);
    assert!(report.failures.is_empty(), "{} ok; failures: {:?}\n{}", report.ok, report.failures, server.output());
    assert_eq!(report.ok, 200);
}

#[test]
fn a_thousand_std_vms_boot_and_exit_zero() {
    let _turn = take_turn();
    let dir = scratch();
    let hello = "use std::collections::HashMap;\n\nfn main() {\n    let id = std::thread::spawn(|| 6 * 7).join().unwrap();\n    let map: HashMap<&str, i32> = [(\"answer\", id)].into();\n    println!(\"std VM says {}\", map[\"answer\"]);\n}\n";
    let service = new_service(dir.path(), "many", Some(hello));
    // Release: under PVM a debug image's bigger page set makes each of the
    // thousand VMs slower to make and run.
    let mut c = cargo_denali();
    c.current_dir(&service).args(["denali", "build", "--release"]);
    let built = run_with_timeout(c, Duration::from_secs(600));
    assert_eq!(built.status, 0, "cargo denali build --release failed:\n{}", built.stderr);
    let out = run(&service, &["--release", "--instances", "1000", "--stats"]);
    assert_eq!(out.status, 0, "stderr: {}", out.stderr);
    assert_eq!(out.stdout.matches("std VM says 42").count(), 1000, "{}", out.stdout);
}

#[test]
fn tokio_runs_in_a_vm_on_both_runtimes() {
    let dir = scratch();
    let tokio = r#"tokio = { version = "=1.54.1", features = ["rt", "rt-multi-thread", "time", "macros", "sync"] }"#;
    let service = guest(dir.path(), "tok", Some(include_str!("guests/std_tokio.rs")), Some(tokio));
    assert_has_lines(
        &build_and_run(&service, "tok"),
        &[
            "current_thread: [0, 1, 4, 9, 16]",
            "timeout fired: true",
            "spawn_blocking: 42",
            "multi_thread: [0, 1, 4, 9, 16]",
            "multi_thread tasks sum 45",
        ],
    );
}

#[test]
fn mio_polls_sockets_and_wakers_in_a_vm() {
    let dir = scratch();
    let mio = r#"mio = { version = "=1.2.5", features = ["os-poll", "net"] }"#;
    let service = guest(dir.path(), "mioecho", Some(include_str!("guests/std_mio.rs")), Some(mio));
    assert_has_lines(
        &build_and_run(&service, "mioecho"),
        &["mio echoed 11 bytes; the client got \"through mio\"", "woken by the waker: true"],
    );
}
