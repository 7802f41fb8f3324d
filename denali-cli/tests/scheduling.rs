//! Scheduling: idle VMs cost nothing, sleeps are accurate.

mod support;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};
use support::*;

const SLEEPY: &str = "#![no_std]\n#![no_main]\nuse denali::time::{Duration, sleep};\n\n#[denali::main]\nfn main() {\n    denali::println!(\"sleeping\");\n    sleep(Duration::from_secs(30));\n}\n";

/// User plus system CPU time of process `pid`, from /proc.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("the run is alive");
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap().split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}

#[test]
fn five_hundred_sleeping_vms_leave_the_host_cpu_idle() {
    let _turn = take_turn();
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
    // Every VM says so just before it goes to sleep (a VM preempted
    // before that says so later, so count them all). Making 500 VMs takes
    // seconds under PVM: they sleep 30 s, so none wakes while it is measured.
    let mut asleep = 0;
    while asleep < 500 {
        let line = lines.next().expect("the run ended early").unwrap();
        if line.ends_with("| sleeping") {
            asleep += 1;
        }
        assert!(started.elapsed() < Duration::from_secs(120), "took too long to boot");
    }
    std::thread::sleep(Duration::from_millis(500));
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
    let _turn = take_turn();
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

const SPINNER: &str =
    "#![no_std]\n#![no_main]\n\n#[denali::main]\nfn main() {\n    loop {\n        core::hint::spin_loop();\n    }\n}\n";
const NAPPER: &str = r#"#![no_std]
#![no_main]
use denali::time::{Duration, Instant, sleep};

#[denali::main]
fn main() {
    let mut overshoots = [0u128; 100];
    for overshoot in overshoots.iter_mut() {
        let start = Instant::now();
        sleep(Duration::from_millis(3));
        *overshoot = (start.elapsed() - Duration::from_millis(3)).as_micros();
    }
    overshoots.sort_unstable();
    let [p10, median, p90] = [overshoots[10], overshoots[50], overshoots[90]];
    denali::println!("napper done, overshoot p10 {p10} us median {median} us p90 {p90} us worst {} us", overshoots[99]);
}
"#;

/// CPU milliseconds of VM `id` from the --stats table.
fn cpu_ms(stdout: &str, id: u32) -> f64 {
    let line = stdout
        .lines()
        .find(|l| l.split_whitespace().next() == Some(&id.to_string()) && l.contains("spinner"))
        .unwrap_or_else(|| panic!("no stats row for vm {id}:\n{stdout}"));
    line.split_whitespace().nth(3).unwrap().parse().unwrap()
}

#[test]
fn spinning_vms_are_preempted_and_share_the_cpu_fairly() {
    let _turn = take_turn();
    let dir = scratch();
    let spinner = build(&new_service(dir.path(), "spinner", Some(SPINNER)), "spinner");
    let napper = build(&new_service(dir.path(), "napper", Some(NAPPER)), "napper");
    let spinner = spinner.to_str().unwrap();
    // The limit counts from the kernel's start: under PVM making these
    // three VMs from two images takes about 1.5 s of it, and they run about 4 s.
    let out = run(dir.path(), &["--timeout", "5.5", "--stats", spinner, spinner, napper.to_str().unwrap()]);
    let text = &out.stdout;
    // The napper finishes although two VMs never give up the CPU...
    let line = text
        .lines()
        .find(|l| l.starts_with("vm2| napper done"))
        .unwrap_or_else(|| panic!("the napper did not finish:\n{text}"));
    let figure = |name: &str| -> u64 {
        let after = line.split(&format!(" {name} ")).nth(1).unwrap();
        after.split_whitespace().next().unwrap().parse().unwrap()
    };
    // ...and its alarm preempts the spinner: a 3 ms sleep ends the kernel
    // path's cost after its alarm. Were the napper to wait for the slice of
    // the spinner that ran when it fell asleep to run out, no sleep could
    // end before 10 ms had passed, 7 ms late. (That cost depends on the
    // host, and the host may take the vCPU away now and then, so the median
    // is asserted, not a bound on every sleep. A napper much busier than
    // this one would exceed its fair share of the CPU and rightly wait.)
    let median = figure("median");
    eprintln!("{line}");
    assert!(median < 5_000, "half the napper's 3 ms sleeps overshot by {median} us or more:\n{line}");
    // The spinners are stopped by the time limit, having shared the CPU.
    assert!(text.contains("denali: vm 0 (spinner) exited with status 124"), "{text}");
    let (a, b) = (cpu_ms(text, 0), cpu_ms(text, 1));
    assert!(a > 500.0 && b > 500.0, "spinners ran {a} and {b} ms");
    assert!((a - b).abs() / a.max(b) < 0.10, "spinners' CPU times differ by more than 10%: {a} vs {b} ms");
    assert_eq!(out.status, 124, "stderr: {}", out.stderr);
}

#[test]
fn a_bad_timeout_is_refused() {
    let dir = scratch();
    let out = run(dir.path(), &["--timeout", "0", "x.dvm"]);
    assert_eq!(out.status, 1);
    assert!(out.stderr.contains("--timeout must be a positive number of seconds (got 0)"), "{}", out.stderr);
}

#[test]
fn green_threads_sleep_concurrently_join_and_yield() {
    let _turn = take_turn();
    let dir = scratch();
    let service = new_service(dir.path(), "threads", Some(include_str!("guests/threads.rs")));
    build(&service, "threads");
    let out = run(&service, &["--stats"]);
    assert_eq!(out.status, 0, "{}\n{}", out.stdout, out.stderr);
    let woke: Vec<&str> = out.stdout.lines().filter(|l| l.contains(" woke after ")).collect();
    assert_eq!(
        woke,
        ["thread 2 woke after 100 ms", "thread 3 woke after 200 ms", "thread 1 woke after 300 ms"],
        "{}",
        out.stdout
    );
    // Three sleeps of 100, 200 and 300 ms overlap: well under their 600 ms sum.
    assert!(out.stdout.contains("joined all: 1200; overlapped: true"), "{}", out.stdout);
    assert!(out.stdout.contains("yields interleaved: 5"), "{}", out.stdout);
}

#[test]
fn kernel_time_spent_for_a_vm_is_charged_to_it() {
    let _turn = take_turn();
    let dir = scratch();
    let service = new_service(dir.path(), "kerneltime", Some(include_str!("guests/kernel_time.rs")));
    build(&service, "kerneltime");
    let out = run(&service, &["--stats"]);
    assert_eq!(out.status, 0, "{}", out.stderr);
    let text = &out.stdout;
    let line = text.lines().find(|l| l.contains(" hypercalls in ")).expect("the VM's time");
    let elapsed: f64 = line.split_whitespace().nth(3).unwrap().parse().unwrap();
    let row = text.lines().find(|l| l.trim_start().starts_with("0  kerneltime")).expect("vm 0's row");
    let charged: f64 = row.split_whitespace().nth(3).unwrap().parse().unwrap();
    // The VM ran alone: nearly all of its time, most of it in the kernel's
    // hypercall path, is its CPU time.
    assert!(charged >= 0.8 * elapsed, "charged {charged} ms of {elapsed} ms:\n{text}");
}
