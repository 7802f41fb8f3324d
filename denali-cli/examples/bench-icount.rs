//! The instruction-count benchmark: what the kernel's basic operations cost
//! in instructions, deterministically, beside their wall-clock cost under
//! our KVM monitor and under QEMU with KVM, in one run.
//!
//! ```text
//! cargo run --release -p denali-cli --example bench-icount -- [--ops N] [--kvm-ops N]
//! ```
//!
//! It boots `examples/hypercall-bench` through PVH under QEMU's TCG with
//! `-icount shift=0,sleep=off`: the virtual clock then advances 1 ns per
//! guest instruction and the kernel calibrates the TSC against it, so the
//! VM's `Instant` counts instructions and its "ns/op" figures are
//! instructions per operation (loop included: the ring-3 loop's row is that
//! share). The same bundle runs twice under TCG to show the figures repeat.
//! Then it boots under our monitor and under QEMU with KVM for the
//! wall-clock columns (fewer operations: under the PVM flavour of KVM the
//! kernel is emulated at about 1.2 µs an instruction).
//!
//! A domain switch is derived from two VMs yielding to each other: a round
//! is two `yield`s and two switches.

use anyhow::{Context, Result, bail};
use denali_abi::boot::{BundleSpec, build_bundle};
use denali_abi::net::Ipv4Config;
use denali_cli::bare_metal::{QemuBoot, qemu_command};
use denali_cli::build::{BuildOptions, build};
use denali_cli::{image, kernel, paths};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// How long one boot may take.
const LIMIT: Duration = Duration::from_secs(900);
/// What a round of two VMs yielding to each other is called.
const ROUND: &str = "yield round (2 VMs)";

/// Figures a run printed: operation → ns (or instructions) per operation.
type Figures = BTreeMap<String, f64>;

/// Where a bundle boots.
#[derive(Clone, Copy, PartialEq)]
enum Way {
    /// QEMU TCG, one instruction a nanosecond.
    Icount,
    /// Our monitor on `/dev/kvm`.
    Monitor,
    /// QEMU with KVM, PVH.
    QemuKvm,
}

/// The `LABEL   N ns/op` lines of a run.
fn figures(text: &str) -> Figures {
    text.lines()
        .filter_map(|line| {
            let line = line.split_once("| ").map_or(line, |(_, rest)| rest);
            let (head, _) = line.split_once(" ns/op")?;
            let (label, value) = head.trim_end().rsplit_once(' ')?;
            Some((label.trim().to_string(), value.parse().ok()?))
        })
        .collect()
}

fn hypercall_bench() -> Result<Vec<u8>> {
    let manifest = paths::repo_root().join("examples/hypercall-bench/Cargo.toml");
    let built = build(&BuildOptions { manifest_path: Some(manifest), release: true, ..Default::default() })?;
    image::read_dvm(&built[0].dvm)
}

fn bundle(image: &[u8], instances: u32, args: &str) -> Vec<u8> {
    let spec =
        BundleSpec { name: "hypercall-bench", instances, image, args, ipv4: Ipv4Config::DEFAULT, disk_sectors: 0 };
    build_bundle(&[spec])
}

/// Boots `bundle` the `way` asked and returns what it printed.
fn boot(way: Way, kernel: &Path, bundle: &[u8], scratch: &Path) -> Result<String> {
    if way == Way::Monitor {
        let config = denali_monitor::Config::new(kernel, bundle.to_vec());
        let console = denali_monitor::CapturedConsole::default();
        let status = denali_monitor::run(&config, Box::new(console.clone()))?;
        if status != 0 {
            bail!("the monitor run ended with status {status}:\n{}", console.text());
        }
        return Ok(console.text());
    }
    let path = scratch.join("bench.bundle");
    std::fs::write(&path, bundle)?;
    let pvh = QemuBoot::Pvh { kernel, bundle: &path, machine: "q35" };
    let mut qemu = match way {
        Way::Icount => {
            let mut qemu = qemu_command(pvh, "tcg", 256 << 20);
            qemu.args(["-icount", "shift=0,sleep=off"]);
            qemu
        }
        _ => qemu_command(pvh, "kvm", 256 << 20),
    };
    let child = qemu.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().context("start qemu-system-x86_64")?;
    let pid = child.id();
    let watchdog = std::thread::spawn(move || {
        let start = Instant::now();
        while start.elapsed() < LIMIT {
            std::thread::sleep(Duration::from_millis(200));
            if !Path::new(&format!("/proc/{pid}")).exists() {
                return;
            }
        }
        let _ = std::process::Command::new("kill").arg(pid.to_string()).status();
    });
    let out = child.wait_with_output()?;
    let _ = watchdog.join();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if figures(&text).is_empty() {
        bail!("QEMU printed no figures:\n{text}\n{}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(text)
}

/// Both runs' figures of one way: one VM, then two VMs yielding.
fn measure(way: Way, kernel: &Path, image: &[u8], ops: u64, scratch: &Path) -> Result<Figures> {
    let mut all = figures(&boot(way, kernel, &bundle(image, 1, &ops.to_string()), scratch)?);
    let two = figures(&boot(way, kernel, &bundle(image, 2, &format!("{ops} switch")), scratch)?);
    if let (Some(round), Some(yield_one)) = (two.get(ROUND), all.get("yield hypercall")) {
        all.insert("domain switch (derived)".into(), round / 2.0 - yield_one);
    }
    all.extend(two);
    Ok(all)
}

fn flag(args: &[String], name: &str, default: u64) -> Result<u64> {
    match args.iter().position(|a| a == name) {
        None => Ok(default),
        Some(i) => args.get(i + 1).and_then(|v| v.parse().ok()).with_context(|| format!("{name} takes a number")),
    }
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let ops = flag(&args, "--ops", 100_000)?;
    let kvm_ops = flag(&args, "--kvm-ops", 2_000)?;
    eprintln!("building examples/hypercall-bench and the kernel ...");
    let image = hypercall_bench()?;
    let kernel = kernel::kernel_elf()?;
    let scratch = tempfile::tempdir()?;

    eprintln!("counting instructions under QEMU TCG -icount ({ops} operations, twice) ...");
    let counted = measure(Way::Icount, &kernel, &image, ops, scratch.path())?;
    let again = measure(Way::Icount, &kernel, &image, ops, scratch.path())?;
    eprintln!("timing under our KVM monitor ({kvm_ops} operations) ...");
    let monitor = measure(Way::Monitor, &kernel, &image, kvm_ops, scratch.path())?;
    eprintln!("timing under QEMU with KVM ({kvm_ops} operations) ...");
    let qemu_kvm = measure(Way::QemuKvm, &kernel, &image, kvm_ops, scratch.path()).unwrap_or_else(|e| {
        eprintln!("  QEMU with KVM failed: {e:#}");
        Figures::new()
    });

    println!("{:<28} {:>14} {:>16} {:>16}", "operation", "instructions", "our monitor ns", "QEMU+KVM ns");
    let cell = |figures: &Figures, op: &str| figures.get(op).map_or("-".to_string(), |v| format!("{v:.0}"));
    for (op, instructions) in &counted {
        println!("{op:<28} {instructions:>14.0} {:>16} {:>16}", cell(&monitor, op), cell(&qemu_kvm, op));
    }
    let repeat = if counted == again { "the same" } else { "different" };
    println!("(instructions per operation include the loop; two TCG runs gave {repeat} figures)");
    Ok(())
}
