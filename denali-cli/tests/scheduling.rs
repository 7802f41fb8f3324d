//! Scheduling: idle VMs cost nothing, sleeps are accurate.

mod support;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};
use support::*;

const SLEEPY: &str = "#![no_std]\n#![no_main]\nuse denali::time::{Duration, sleep};\n\n#[denali::main]\nfn main() {\n    denali::println!(\"sleeping\");\n    sleep(Duration::from_secs(4));\n}\n";

/// User plus system CPU time of process `pid`, from /proc.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("the run is alive");
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap().split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}

#[test]
fn five_hundred_sleeping_vms_leave_the_host_cpu_idle() {
    require_kvm();
    let dir = scratch();
    let service = new_service(dir.path(), "sleepy", Some(SLEEPY));
    build(&service, "sleepy");
    let mut cmd = cargo_denali();
    cmd.current_dir(&service).args(["denali", "run", "--instances", "500"]).stdout(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let started = Instant::now();
    let mut lines = stdout.lines();
    // The last VM to start runs after every other one has gone to sleep.
    loop {
        let line = lines.next().expect("the run ended early").unwrap();
        if line == "vm499| sleeping" {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(120), "took too long to boot");
    }
    let before = cpu_time(child.id());
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu_time(child.id()) - before;
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = child.wait().unwrap();
    assert!(status.success(), "{rest:?}");
    assert!(rest.iter().any(|l| l == "denali: 500 VMs: 500 exited with status 0, 0 did not"), "{rest:?}");
    // While every VM sleeps, the kernel parks the vCPU instead of spinning.
    assert!(used < Duration::from_millis(200), "the host spent {used:?} of CPU in 2 s while all VMs slept");
}

const TIMER: &str = "#![no_std]\n#![no_main]\nuse denali::time::{Duration, Instant, sleep};\n\n#[denali::main]\nfn main() {\n    let mut worst = Duration::ZERO;\n    for _ in 0..20 {\n        let start = Instant::now();\n        sleep(Duration::from_millis(10));\n        let slept = start.elapsed();\n        assert!(slept >= Duration::from_millis(10), \"woke early: {slept:?}\");\n        worst = worst.max(slept - Duration::from_millis(10));\n    }\n    denali::println!(\"worst overshoot {} us\", worst.as_micros());\n}\n";

#[test]
fn sleep_wakes_on_time() {
    let dir = scratch();
    let service = new_service(dir.path(), "timer", Some(TIMER));
    build(&service, "timer");
    let out = run(&service, &[]);
    assert_eq!(out.status, 0, "{}\n{}", out.stdout, out.stderr);
    let worst: u64 = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("worst overshoot "))
        .and_then(|l| l.trim_end_matches(" us").parse().ok())
        .expect("the VM reported its overshoot");
    // The emulated kernel answers an alarm within a few milliseconds.
    assert!(worst < 10_000, "a 10 ms sleep overshot by {worst} us");
}
