//! The instruction-count benchmark: what the kernel's operations cost in
//! instructions, deterministically, beside their wall-clock cost under our
//! KVM monitor and under QEMU with KVM, in one run.
//!
//! ```text
//! cargo run --release -p denali-cli --example bench-icount -- [--ops N] [--kvm-ops N] [--keep DIR]
//!     [--make 1000,10000,100000] [--only WORD[,WORD...]]
//! ```
//!
//! `--make` lists how many VMs the VM-making runs boot (default 1,000); runs
//! of more than 1,000 are counted under TCG only. `--only WORD` makes only
//! the runs whose hypercall-bench arguments hold WORD (`swap`, `http`), or
//! one of several words (`--only http,echo,stream`).
//!
//! `--keep DIR` writes each TCG run's bundle there (`run-K.bundle`, and
//! for the run that swaps its disk, `run-K.disk`), to boot
//! by hand, e.g. under QEMU's gdb stub to step through one operation, with
//! the ELFs of the kernel and both services for their symbols.
//!
//! It boots `examples/hypercall-bench` (and, for the HTTP figure, the
//! `http` template beside it) through PVH under QEMU's TCG with `-icount
//! shift=0,sleep=off`: the virtual clock then advances 1 ns per guest
//! instruction and the kernel calibrates the TSC against it, so the VM's
//! `Instant` counts instructions and its "ns/op" figures are instructions
//! per operation (the loop included: the ring-3 loop's row is that share;
//! a VM that idles waits no time, as QEMU skips to the next timer). Every
//! TCG run is made twice to show the figures repeat. Then the same bundles
//! boot under our monitor and under QEMU with KVM for the wall-clock
//! columns, with fewer operations (under the PVM flavour of KVM the kernel
//! is emulated at about 1.2 µs an instruction).
//!
//! A domain switch is derived from two VMs yielding to each other (a round
//! is two `yield`s and two switches); making a VM from the kernel's own
//! report for 1,000 VMs of an image already loaded.

use anyhow::{Context, Result, bail};
use denali_abi::boot::{BOOT_FLAG_STATS, BundleSpec, build_bundle, set_run_flags};
use denali_abi::net::Ipv4Config;
use denali_cli::bare_metal::{QemuBoot, qemu_command, qemu_disk};
use denali_cli::build::{BuildOptions, build};
use denali_cli::{image, kernel, paths, vm_disk};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long one boot may take.
const LIMIT: Duration = Duration::from_secs(900);
/// What the measuring VM prints once its figures are out.
const DONE: &str = "hypercall-bench: done";
/// What a round of two VMs yielding to each other is called.
const ROUND: &str = "yield round (2 VMs)";
/// VM-making runs of more VMs than this are counted under TCG only.
const MAKE_TIMED_MAX: u32 = 1000;

/// Figures a run printed: operation → ns (or instructions) per operation.
type Figures = BTreeMap<String, f64>;

/// Where a bundle boots.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Way {
    /// QEMU TCG, one instruction a nanosecond.
    Icount,
    /// Our monitor on `/dev/kvm`.
    Monitor,
    /// QEMU with KVM, PVH.
    QemuKvm,
}

/// One boot of the benchmark: hypercall-bench's arguments (`{n}` for the
/// operation count), its VM count, how many operations (a share of
/// `--ops`), whether the `http` template runs as VM 0, and for a run that
/// swaps, the memory its machine gets (it gets a disk with a swap area).
struct Run {
    args: &'static str,
    instances: u32,
    share: u64,
    http_server: bool,
    swap_memory: Option<u64>,
}

impl Run {
    /// A run of `instances` hypercall-bench VMs with `args`, `share`.
    fn new(args: &'static str, instances: u32, share: u64) -> Run {
        Run { args, instances, share, http_server: false, swap_memory: None }
    }

    /// A run that times making `instances` VMs (each exits at once).
    fn make(instances: u32) -> Run {
        Run::new("1 exit", instances, 1)
    }

    fn makes_vms(&self) -> bool {
        self.args.ends_with("exit")
    }

    /// Whether its VMs all exit, so the run ends with the kernel's report
    /// (which holds its figures).
    fn ends_by_itself(&self) -> bool {
        self.makes_vms() || self.swap_memory.is_some()
    }
}

/// VMs of the swapping run, and the memory they share: about half of them
/// fit.
const SWAP_VMS: u32 = 400;
const SWAP_MEMORY: u64 = 32 << 20;
/// The swap area of the swapping run's disk.
const SWAP_AREA: u64 = 64 << 20;

/// Every run: the operations, then making each of `make` VMs.
fn runs(make: &[u32]) -> Vec<Run> {
    let mut runs = vec![
        Run::new("{n}", 1, 1),
        Run::new("{n} switch", 2, 1),
        Run::new("{n} frames 64", 2, 10),
        Run::new("{n} frames 1514", 2, 10),
        Run::new("{n} frames 64 batch", 2, 80),
        Run::new("{n} frames 1514 batch", 2, 80),
        Run::new("{n} echo", 2, 100),
        Run { http_server: true, ..Run::new("{n} http", 1, 100) },
        Run::new("{n} stream", 2, 1000),
        Run { swap_memory: Some(SWAP_MEMORY), ..Run::new("{n} swap", SWAP_VMS, 200) },
    ];
    runs.extend(make.iter().map(|&n| Run::make(n)));
    runs
}

/// The `LABEL   N ns/op` lines of a run, and the kernel's time to make
/// its VMs as one more.
fn figures(text: &str) -> Figures {
    let mut figures: Figures = text
        .lines()
        .filter_map(|line| {
            let line = line.split_once("| ").map_or(line, |(_, rest)| rest);
            let (head, _) = line.split_once(" ns/op")?;
            let (label, value) = head.trim_end().rsplit_once(' ')?;
            Some((label.trim().to_string(), value.parse().ok()?))
        })
        .collect();
    let made = text.lines().find_map(|l| l.strip_prefix("denali: made ")).and_then(|rest| {
        let mut words = rest.split_whitespace();
        let vms: u64 = words.next()?.parse().ok()?;
        let us: f64 = words.nth(2)?.parse().ok()?;
        Some((vms, us * 1000.0 / vms as f64))
    });
    // (A swapping run's VMs are made in a small memory: not the figure.)
    let swapping = text.contains("denali: swap:");
    if let Some((vms, ns)) = made.filter(|&(vms, _)| vms > 2 && !swapping) {
        figures.insert(format!("make a VM, image loaded (of {vms})"), ns);
    }
    figures.extend(swap_figures(text));
    figures
}

/// Heap pages each VM of the swapping run fills (hypercall-bench's
/// `SWAP_PAGES`).
const SWAP_PAGES: u32 = 16;

/// The kernel's time for a swap-out and a swap-in, less the disk's (from
/// its `denali: swap: one swap-out took A ns (B ns ...), one swap-in C ns
/// (D ns waiting)` line).
fn swap_figures(text: &str) -> Vec<(String, f64)> {
    let Some(line) = text.lines().find_map(|l| l.strip_prefix("denali: swap: one swap-out took ")) else {
        return Vec::new();
    };
    let numbers: Vec<f64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter(|word| !word.is_empty())
        .filter_map(|w| w.parse().ok())
        .collect();
    let [out, out_disk, back, back_disk] = numbers[..] else { return Vec::new() };
    vec![
        (format!("swap-out of a sleeping VM ({SWAP_PAGES} heap pages), no disk"), out - out_disk),
        (format!("swap-in of a sleeping VM ({SWAP_PAGES} heap pages), no disk"), back - back_disk),
    ]
}

/// Builds the service of `manifest` (release); its image, and its ELF for
/// symbols.
fn build_image(manifest: PathBuf) -> Result<(Vec<u8>, PathBuf)> {
    let built = build(&BuildOptions { manifest_path: Some(manifest), release: true, ..Default::default() })?;
    Ok((image::read_dvm(&built[0].dvm)?, image::elf_beside(&built[0].dvm)))
}

/// A bundle to boot: whether its run ends by itself (else it is stopped
/// once the measuring VM is done: its servers never exit), and for a run
/// that swaps, its machine's memory.
struct Boot {
    bundle: Vec<u8>,
    ends_by_itself: bool,
    swap_memory: Option<u64>,
}

/// The bundles of `runs`, with `ops` (before each run's share).
fn bundles(runs: &[Run], bench: &[u8], http: &[u8], ops: u64) -> Vec<Boot> {
    runs.iter()
        .map(|run| {
            let args = run.args.replace("{n}", &(ops / run.share).max(1).to_string());
            let spec = |name, instances, image, args, address| BundleSpec {
                name,
                instances,
                image,
                args,
                ipv4: Ipv4Config { address, ..Ipv4Config::DEFAULT },
                disk_sectors: 0,
            };
            let mut specs = Vec::new();
            if run.http_server {
                specs.push(spec("http", 1, http, "", [10, 0, 2, 15]));
            }
            let first = if run.http_server { [10, 0, 2, 16] } else { [10, 0, 2, 15] };
            specs.push(spec("hypercall-bench", run.instances, bench, &args, first));
            let mut bundle = build_bundle(&specs);
            // A run that ends by itself ends with the kernel's report.
            if run.ends_by_itself() {
                set_run_flags(&mut bundle, BOOT_FLAG_STATS);
            }
            Boot { bundle, ends_by_itself: run.ends_by_itself(), swap_memory: run.swap_memory }
        })
        .collect()
}

/// Boots `bundle` the `way` asked; returns what it printed once the
/// measuring VM said it was done (the servers are then stopped) or the
/// kernel ended the run.
fn boot(way: Way, kernel: &Path, boot: &Boot, scratch: &Path) -> Result<String> {
    let path = scratch.join("bench.bundle");
    std::fs::write(&path, &boot.bundle)?;
    let ends_by_itself = boot.ends_by_itself;
    let pvh = QemuBoot::Pvh { kernel, bundle: &path, machine: "q35" };
    let memory = boot.swap_memory.unwrap_or(1 << 30);
    let disk = match boot.swap_memory {
        Some(_) => Some(swap_disk(&boot.bundle, scratch, "swap.disk")?),
        None => None,
    };
    let mut command = match way {
        Way::Monitor => {
            let mut me = Command::new(std::env::current_exe()?);
            me.arg("--monitor").arg(&path).args(["--mem", &memory.to_string()]);
            if let Some(disk) = &disk {
                me.arg("--disk").arg(disk);
            }
            me
        }
        Way::Icount | Way::QemuKvm => {
            let mut qemu = qemu_command(pvh, if way == Way::Icount { "tcg" } else { "kvm" }, memory);
            if way == Way::Icount {
                qemu.args(["-icount", "shift=0,sleep=off"]);
            }
            if let Some(disk) = &disk {
                qemu_disk(&mut qemu, disk);
            }
            qemu
        }
    };
    let mut child = command.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().context("start the boot")?;
    let (lines, said) = std::sync::mpsc::channel();
    let stdout = BufReader::new(child.stdout.take().expect("piped"));
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                return;
            }
        }
    });
    let (start, mut text) = (Instant::now(), String::new());
    let finished = loop {
        match said.recv_timeout(LIMIT.saturating_sub(start.elapsed())) {
            Ok(line) => {
                text.push_str(&line);
                text.push('\n');
                // A VM that only answers may be done first: stop once the
                // one that measures is.
                if line.contains(DONE) && !ends_by_itself && !figures(&text).is_empty() {
                    break true;
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break true,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => break false,
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    if !finished || figures(&text).is_empty() {
        bail!("the boot gave no figures{}:\n{text}", if finished { "" } else { " in time" });
    }
    Ok(text)
}

/// A disk for `bundle` with a swap area of `SWAP_AREA`: `dir/name`.
fn swap_disk(bundle: &[u8], dir: &Path, name: &str) -> Result<PathBuf> {
    let path = dir.join(name);
    vm_disk::prepare(&path, vm_disk::windows_end_of_bundle(bundle)?, SWAP_AREA)?;
    Ok(path)
}

/// Every run's figures one way; a domain switch derived.
fn measure(way: Way, kernel: &Path, bundles: &[Boot], scratch: &Path) -> Result<Figures> {
    let mut all = Figures::new();
    for bundle in bundles {
        let text = boot(way, kernel, bundle, scratch)?;
        // The swapping run's totals (segments a request, the disk's wait),
        // which its rows leave out.
        text.lines().filter(|line| line.starts_with("denali: swap: ")).for_each(|line| eprintln!("  {way:?}: {line}"));
        all.extend(figures(&text));
    }
    if let (Some(round), Some(yield_one)) = (all.get(ROUND), all.get("yield hypercall")) {
        all.insert("domain switch (derived)".into(), round / 2.0 - yield_one);
    }
    Ok(all)
}

/// The value after option `name`, if it is given (an error if it is
/// given without one).
fn value<'a>(args: &'a [String], name: &str) -> Result<Option<&'a str>> {
    match args.iter().position(|a| a == name) {
        None => Ok(None),
        Some(i) => args.get(i + 1).map(|v| Some(v.as_str())).with_context(|| format!("{name} takes a value")),
    }
}

/// The number after option `name`, or `default`.
fn flag(args: &[String], name: &str, default: u64) -> Result<u64> {
    let number = value(args, name)?.map(|v| v.parse().with_context(|| format!("{name} takes a number")));
    Ok(number.transpose()?.unwrap_or(default))
}

/// `--monitor BUNDLE --mem BYTES [--disk PATH]`: boots the bundle on our
/// monitor, console on stdout (a process of its own, so the benchmark can
/// stop servers that never exit).
fn monitor(args: &[String]) -> Result<()> {
    let bundle = args.get(1).context("--monitor takes a bundle")?;
    let mut config = denali_monitor::Config::new(&kernel::kernel_elf()?, std::fs::read(bundle)?);
    config.mem_size = flag(args, "--mem", config.mem_size)?;
    config.disk = value(args, "--disk")?.map(PathBuf::from);
    denali_monitor::run(&config, Box::new(std::io::stdout()))?;
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--monitor") {
        return monitor(&args);
    }
    let ops = flag(&args, "--ops", 100_000)?;
    let make = value(&args, "--make")?.unwrap_or("1000");
    let make: Vec<u32> = make
        .split(',')
        .map(|n| n.trim().parse())
        .collect::<Result<_, _>>()
        .context("--make takes counts like 1000,10000")?;
    // `--only WORD[,WORD...]`: the runs whose arguments hold one of the
    // words (e.g. `swap`, or `http,echo,stream`).
    let only: Vec<&str> = value(&args, "--only")?.unwrap_or("").split(',').collect();
    let chosen = |runs: Vec<Run>| {
        runs.into_iter().filter(|run| only.iter().any(|word| run.args.contains(word))).collect::<Vec<_>>()
    };
    let counted_runs = chosen(runs(&make));
    let timed_runs = chosen(runs(&make.iter().copied().filter(|&n| n <= MAKE_TIMED_MAX).collect::<Vec<_>>()));
    let kvm_ops = flag(&args, "--kvm-ops", 2_000)?;
    eprintln!("building examples/hypercall-bench, the http template and the kernel ...");
    let (bench, bench_elf) = build_image(paths::repo_root().join("examples/hypercall-bench/Cargo.toml"))?;
    let scratch = tempfile::tempdir()?;
    let http_service = denali_cli::new::new(scratch.path(), "http", "http")?;
    let (http, http_elf) = build_image(http_service.join("Cargo.toml"))?;
    let kernel = kernel::kernel_elf()?;

    eprintln!("counting instructions under QEMU TCG -icount ({ops} operations, twice) ...");
    let counted_bundles = bundles(&counted_runs, &bench, &http, ops);
    if let Some(dir) = value(&args, "--keep")? {
        let dir = PathBuf::from(dir);
        std::fs::create_dir_all(&dir)?;
        for (k, boot) in counted_bundles.iter().enumerate() {
            std::fs::write(dir.join(format!("run-{k}.bundle")), &boot.bundle)?;
            if boot.swap_memory.is_some() {
                swap_disk(&boot.bundle, &dir, &format!("run-{k}.disk"))?;
            }
        }
        for (elf, name) in [(&bench_elf, "hypercall-bench.elf"), (&http_elf, "http.elf"), (&kernel, "kernel.elf")] {
            std::fs::copy(elf, dir.join(name)).with_context(|| format!("cannot keep {}", elf.display()))?;
        }
    }
    let counted = measure(Way::Icount, &kernel, &counted_bundles, scratch.path())?;
    let again = measure(Way::Icount, &kernel, &counted_bundles, scratch.path())?;
    let timed = bundles(&timed_runs, &bench, &http, kvm_ops);
    eprintln!("timing under our KVM monitor ({kvm_ops} operations) ...");
    let monitor = measure(Way::Monitor, &kernel, &timed, scratch.path())?;
    eprintln!("timing under QEMU with KVM ({kvm_ops} operations) ...");
    let qemu_kvm = measure(Way::QemuKvm, &kernel, &timed, scratch.path()).unwrap_or_else(|e| {
        eprintln!("  QEMU with KVM failed: {e:#}");
        Figures::new()
    });

    println!("{:<50} {:>14} {:>16} {:>16}", "operation", "instructions", "our monitor ns", "QEMU+KVM ns");
    let cell = |figures: &Figures, op: &str| figures.get(op).map_or("-".to_string(), |v| format!("{v:.0}"));
    for (op, instructions) in &counted {
        println!("{op:<50} {instructions:>14.0} {:>16} {:>16}", cell(&monitor, op), cell(&qemu_kvm, op));
    }
    // Which VMs are out when depends on the disk's timing: the swap rows
    // are means over many swaps and vary a little from run to run.
    let steady = |figures: &Figures| figures.iter().filter(|(op, _)| !op.starts_with("swap-")).count();
    let same = counted.iter().filter(|(op, v)| !op.starts_with("swap-") && again.get(*op) == Some(v)).count();
    let repeat = if same == steady(&counted) && same == steady(&again) { "the same" } else { "different" };
    println!("(per operation, the loop included; two TCG runs gave {repeat} figures, swap rows aside: they are means)");
    Ok(())
}
