//! The scale benchmark: boots N mostly idle VMs (examples/sleeper: sleep a
//! second, wake, three times) and prints what each cost, beside the same
//! logic as N native Linux processes measured in the same run.
//!
//! ```text
//! cargo run --release -p denali-cli --example bench-scale -- [N] [--mem MIB] [--swap MIB]
//!     [--sleep "ROUNDS SECONDS"] [--no-linux]
//! ```
//!
//! With `--swap` the VMs get a swap area of that size on a disk file in a
//! temporary directory, and sleepers that sleep long enough (`--sleep "1
//! 600"`: once, ten minutes) are all idle at once, so most of them are
//! swapped out whole. `--no-linux` skips the Linux processes and the
//! hypercall figures (for runs of 100,000 VMs and more).
//!
//! Figures: time to make all VMs and per VM, private and kernel memory per
//! VM, the null-hypercall round trip and the domain switch (from
//! examples/hypercall-bench); for Linux, spawn time and memory (PSS) per
//! process and the cost of a null system call.

use anyhow::{Context, Result, bail};
use denali_abi::boot::{BundleSpec, build_bundle};
use denali_abi::net::Ipv4Config;
use denali_cli::build::{BuildOptions, build};
use denali_cli::{image, kernel, paths};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn build_example(name: &str) -> Result<Vec<u8>> {
    let manifest = paths::repo_root().join("examples").join(name).join("Cargo.toml");
    let built = build(&BuildOptions { manifest_path: Some(manifest), release: true, ..Default::default() })?;
    image::read_dvm(&built[0].dvm)
}

/// The machine a run gets: memory (bytes; default: the monitor's) and a
/// disk file with a swap area of so many bytes.
#[derive(Clone, Copy)]
struct Machine<'a> {
    mem: Option<u64>,
    swap: Option<(&'a std::path::Path, u64)>,
}

/// Boots `instances` VMs of `image` with `args`; returns the console and the wall time.
fn boot(name: &str, image: &[u8], instances: u32, args: &str, machine: Machine) -> Result<(String, Duration)> {
    let kernel = kernel::kernel_elf()?;
    let bundle =
        build_bundle(&[BundleSpec { name, instances, image, args, ipv4: Ipv4Config::DEFAULT, disk_sectors: 0 }]);
    if let Some((disk, bytes)) = machine.swap {
        denali_cli::vm_disk::prepare(disk, denali_cli::vm_disk::windows_end_of_bundle(&bundle)?, bytes)?;
    }
    let mut config = denali_monitor::Config::new(&kernel, bundle);
    config.stats = true;
    config.disk = machine.swap.map(|(disk, _)| disk.to_path_buf());
    if let Some(mem) = machine.mem {
        config.mem_size = mem;
    }
    let console = denali_monitor::CapturedConsole::default();
    let start = Instant::now();
    let status = denali_monitor::run(&config, Box::new(console.clone()))?;
    let elapsed = start.elapsed();
    let text = console.text();
    if status != 0 {
        bail!("the run of {instances} x {name} ended with status {status}:\n{}", tail(&text));
    }
    Ok((text, elapsed))
}

fn tail(text: &str) -> String {
    text.lines().rev().take(12).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
}

/// The number after `label` on the first line containing it.
fn figure(text: &str, label: &str) -> Option<f64> {
    let line = text.lines().find(|l| l.contains(label))?;
    let rest = &line[line.find(label)? + label.len()..];
    rest.split_whitespace().find_map(|w| w.trim_matches(|c: char| !c.is_ascii_digit() && c != '.').parse().ok())
}

/// The total row of the kernel's accounting table.
fn totals(text: &str) -> Option<(f64, f64)> {
    let line = text.lines().find(|l| l.trim_start().starts_with("total"))?;
    let words: Vec<&str> = line.split_whitespace().collect();
    // total (N VMs) cpu-ms private shared hypercalls wakeups
    Some((words.get(4)?.parse().ok()?, words.get(5)?.parse().ok()?))
}

fn native_baseline(n: u32) -> Result<(Duration, f64)> {
    let exe = std::env::current_exe()?;
    let start = Instant::now();
    let mut children: Vec<Child> = Vec::new();
    for _ in 0..n {
        children.push(Command::new(&exe).arg("--native-sleeper").stdin(Stdio::null()).stdout(Stdio::null()).spawn()?);
    }
    let spawn = start.elapsed();
    std::thread::sleep(Duration::from_millis(300));
    let mut pss_kib = 0u64;
    for child in &children {
        let rollup = std::fs::read_to_string(format!("/proc/{}/smaps_rollup", child.id())).unwrap_or_default();
        pss_kib += figure(&rollup, "Pss:").unwrap_or(0.0) as u64;
    }
    for child in &mut children {
        let _ = child.kill();
        let _ = child.wait();
    }
    Ok((spawn, pss_kib as f64 / f64::from(n)))
}

fn null_syscall_ns() -> f64 {
    let n = 1_000_000;
    let start = Instant::now();
    for _ in 0..n {
        std::hint::black_box(std::process::id());
    }
    start.elapsed().as_nanos() as f64 / n as f64
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--native-sleeper") {
        for _ in 0..3 {
            std::thread::sleep(Duration::from_secs(1));
        }
        return Ok(());
    }
    let n: u32 = args.get(1).map(|a| a.parse()).transpose().context("N must be a number")?.unwrap_or(10_000);
    let mem =
        args.iter().position(|a| a == "--mem").and_then(|i| args.get(i + 1)).map(|m| m.parse::<u64>()).transpose()?;
    let mem = mem.map(|m| m << 20);
    let value = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1));
    let swap = value("--swap").map(|m| m.parse::<u64>().context("--swap takes MiB")).transpose()?;
    let sleep = value("--sleep").map_or("3 1", String::as_str);
    let scratch = tempfile::tempdir()?;
    let disk = scratch.path().join("swap.disk");
    let sleepers = Machine { mem, swap: swap.map(|mib| (disk.as_path(), mib << 20)) };

    eprintln!("building examples/sleeper and examples/hypercall-bench ...");
    let sleeper = build_example("sleeper")?;
    let hcbench = build_example("hypercall-bench")?;

    eprintln!("booting {n} sleepers ...");
    let (text, wall) = boot("sleeper", &sleeper, n, sleep, sleepers)?;
    let wanted = ["denali: made", "denali: swap:", "denali: kernel heap"];
    for line in text.lines().filter(|l| wanted.iter().any(|w| l.starts_with(w))) {
        println!("{line}");
    }
    println!("{n} sleepers (\"{sleep}\"): all exited 0 in {:.1} s", wall.as_secs_f64());
    if args.iter().any(|a| a == "--no-linux") {
        return Ok(());
    }
    let machine = Machine { mem, swap: None };
    let made_us = figure(&text, "VMs in").unwrap_or(f64::NAN);
    let per_vm_us = figure(&text, "us (").unwrap_or(f64::NAN);
    let record_b = figure(&text, "kernel memory per VM:").unwrap_or(f64::NAN);
    let kernel_kib = figure(&text, "B of VM record, and").unwrap_or(f64::NAN);
    let (private_kib, shared_kib) = totals(&text).unwrap_or((f64::NAN, f64::NAN));

    eprintln!("measuring hypercalls and domain switches ...");
    let (one, _) = boot("hypercall-bench", &hcbench, 1, "2000", machine)?;
    let (two, _) = boot("hypercall-bench", &hcbench, 2, "2000 switch", machine)?;
    let null_ns = figure(&one, "null hypercall").unwrap_or(f64::NAN);
    let yield_ns = figure(&one, "yield hypercall").unwrap_or(f64::NAN);
    let round_ns = figure(&two, "yield round (2 VMs)").unwrap_or(f64::NAN);
    let switch_ns = round_ns / 2.0 - yield_ns;

    eprintln!("spawning {n} native Linux processes ...");
    let (spawn, pss) = native_baseline(n)?;
    let syscall_ns = null_syscall_ns();

    println!();
    println!(
        "Scale: {n} sleeper VMs (sleep rounds and seconds: {sleep}) vs {n} Linux processes (3 x 1 s), same machine, same run"
    );
    println!("{:<44} {:>16} {:>16}", "", "Denali VMs", "Linux processes");
    println!("{:<44} {:>16.0} {:>16.0}", "time to start all (ms)", made_us / 1000.0, spawn.as_secs_f64() * 1000.0);
    println!("{:<44} {:>16.0} {:>16.0}", "time to start one (us)", per_vm_us, spawn.as_secs_f64() * 1e6 / f64::from(n));
    println!("{:<44} {:>16.1} {:>16.1}", "memory per instance, private (KiB)", private_kib / f64::from(n), pss);
    println!("{:<44} {:>16.1} {:>16}", "image pages shared by all (KiB)", shared_kib / f64::from(n), "-");
    println!("{:<44} {:>16.1} {:>16}", "kernel memory per VM: page tables (KiB)", kernel_kib, "-");
    println!("{:<44} {:>16.0} {:>16}", "kernel memory per VM: VM record (B)", record_b, "-");
    println!("{:<44} {:>16.0} {:>16.0}", "null hypercall / system call (ns)", null_ns, syscall_ns);
    println!("{:<44} {:>16.0} {:>16}", "domain switch (ns)", switch_ns, "-");
    println!("{:<44} {:>16.1} {:>16}", "whole run, wall (s)", wall.as_secs_f64(), "-");
    Ok(())
}
