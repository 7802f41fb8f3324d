//! The foundation, end to end: a template service is created, built and
//! booted in its own VM on the isolation kernel under KVM.

mod support;

use support::*;

#[test]
fn template_service_prints_its_vm_id_and_exits_zero() {
    let dir = scratch();
    let service = new_service(dir.path(), "hello", None);
    let image = build(&service, "hello");
    let out = run(&service, &[]);
    assert_eq!(out.status, 0, "stderr: {}", out.stderr);
    assert!(out.stdout.contains("Hello from Denali VM 0"), "stdout: {}", out.stdout);

    // A prebuilt image boots without a service around it.
    let out = run(dir.path(), &[image.to_str().unwrap()]);
    assert_eq!(out.status, 0, "stderr: {}", out.stderr);
    assert_eq!(out.stdout.trim(), "Hello from Denali VM 0");
}

#[test]
fn exit_code_becomes_the_run_status() {
    let dir = scratch();
    let service = new_service(
        dir.path(),
        "exit7",
        Some("#![no_std]\n#![no_main]\n\n#[denali::main]\nfn main() {\n    denali::process::exit(7);\n}\n"),
    );
    build(&service, "exit7");
    let out = run(&service, &[]);
    assert_eq!(out.status, 7, "stdout: {}\nstderr: {}", out.stdout, out.stderr);
}

#[test]
fn panic_reports_its_location_and_exits_101() {
    let dir = scratch();
    let service = new_service(
        dir.path(),
        "panicky",
        Some(
            "#![no_std]\n#![no_main]\n\n#[denali::main]\nfn main() {\n    let v: u32 = denali::vm::id() + 41;\n    panic!(\"the answer was {}\", v + 1);\n}\n",
        ),
    );
    build(&service, "panicky");
    let out = run(&service, &[]);
    assert_eq!(out.status, 101, "stdout: {}\nstderr: {}", out.stdout, out.stderr);
    assert!(out.stdout.contains("panicked at src/main.rs:7:5:"), "stdout: {}", out.stdout);
    assert!(out.stdout.contains("the answer was 42"), "stdout: {}", out.stdout);
}

#[test]
fn heap_collections_time_and_floats_work_inside_a_vm() {
    let dir = scratch();
    let service = new_service(dir.path(), "stdlike", Some(include_str!("guests/stdlike.rs")));
    build(&service, "stdlike");
    let out = run(&service, &[]);
    assert_eq!(out.status, 0, "stdout: {}\nstderr: {}", out.stdout, out.stderr);
    assert_has_lines(
        &out.stdout,
        &[
            "vec sum 500500",
            "string len 2890",
            "map first apple=5 last zebra=26",
            "format 00042|3.14159|ff",
            "basel 1.643935",
            "sqrt2 1.414213562373",
            "slept at least 20 ms: true",
        ],
    );
}

const COUNTER: &str = "#![no_std]\n#![no_main]\n\n#[denali::main]\nfn main() {\n    denali::println!(\"instance {} of {} says {}\", denali::vm::id(), denali::vm::count(), denali::vm::args());\n}\n";

#[test]
fn a_thousand_instances_each_print_their_id() {
    let dir = scratch();
    let service = new_service(dir.path(), "counter", Some(COUNTER));
    std::fs::write(service.join("Denali.toml"), "instances = 3\nargs = \"hello\"\nmemory = \"2 MiB\"\n").unwrap();
    build(&service, "counter");
    // Denali.toml's count, then the flag's, which wins.
    let out = run(&service, &["--stats"]);
    assert_eq!(out.status, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("vm2| instance 2 of 3 says hello"), "{}", out.stdout);
    assert!(out.stdout.contains("total  (3 VMs)"), "{}", out.stdout);
    // On a PVM host (its module loaded) --stats says what that costs.
    let pvm = std::path::Path::new("/sys/module/kvm_pvm").exists();
    assert_eq!(out.stderr.contains("KVM's PVM flavour"), pvm, "{}", out.stderr);
    // Every frame a VM took came back when it exited.
    let frames = out.stdout.lines().find(|l| l.starts_with("denali: frames in use after the run: ")).unwrap();
    let numbers: Vec<u64> = frames.split(|c: char| !c.is_ascii_digit()).filter_map(|w| w.parse().ok()).collect();
    assert_eq!(numbers[0], numbers[1] + numbers[2] + numbers[3], "{frames}");
    let out = run(&service, &["--release", "--instances", "1000", "--stats"]);
    assert_eq!(out.status, 0, "{}", out.stderr);
    // A thousand VMs' accounting is summed up, not listed.
    assert!(out.stdout.contains("denali: 1000 VMs: one row each left out"), "{}", out.stdout);
    let row = |label: &str| out.stdout.lines().any(|l| l.trim_start().starts_with(label));
    assert!(row("mean ") && row("max ") && row("total  (1000 VMs)") && !row("999  counter"), "{}", out.stdout);
    for id in 0..1000 {
        let line = format!("vm{id}| instance {id} of 1000 says hello\n");
        assert!(out.stdout.contains(&line), "missing {line:?}");
    }
    assert!(out.stdout.contains("denali: 1000 VMs: 1000 exited with status 0, 0 did not"), "{}", out.stdout);
}

#[test]
fn bad_manifest_values_and_zero_instances_are_refused() {
    let dir = scratch();
    let service = new_service(dir.path(), "badmanifest", None);
    let out = run(&service, &["--instances", "0"]);
    assert_eq!(out.status, 1);
    assert!(out.stderr.contains("error: --instances must be between 1 and 1000000 (got 0)"), "{}", out.stderr);
    for (text, message) in [
        ("memory = \"lots\"", "`memory` = \"lots\" is not a size"),
        ("instances = 0", "`instances` must be between 1 and 1000000 (got 0)"),
        ("colour = 1", "unknown field `colour`"),
    ] {
        std::fs::write(service.join("Denali.toml"), text).unwrap();
        let out = run(&service, &[]);
        assert_eq!(out.status, 1, "{text}");
        assert!(
            out.stderr.contains("Denali.toml is not valid") && out.stderr.contains(message),
            "{text}: {}",
            out.stderr
        );
    }
}
