//! The boot benchmark: how long from starting the machine to the service's
//! first line, for the hello template booted every way Denali boots, in one
//! run: our KVM monitor, and QEMU with the UEFI disk image or through PVH,
//! emulated (TCG) and with KVM acceleration. Also prints the image's size.
//!
//! ```text
//! cargo run --release -p denali-cli --example bench-boot -- [RUNS]
//! ```
//!
//! Each figure is the median of RUNS boots (default 5). A way that does not
//! reach the first line within a minute is reported with QEMU's last words
//! (OVMF, for one, cannot run under the PVM flavour of KVM).

use anyhow::{Context, Result};
use denali_cli::bare_metal::{QEMU_MEMORY, QemuBoot, build_images, qemu_command};
use denali_cli::build::BuildOptions;
use denali_cli::kernel;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the hello template prints first.
const FIRST_LINE: &str = "Hello from Denali VM 0";
/// How long a boot may take before it counts as failed.
const LIMIT: Duration = Duration::from_secs(60);

/// A console that notes when the first line arrives.
#[derive(Clone)]
struct Stopwatch {
    start: Instant,
    text: Arc<Mutex<String>>,
    first_line: Arc<Mutex<Option<Duration>>>,
}

impl Write for Stopwatch {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut text = self.text.lock().unwrap();
        text.push_str(&String::from_utf8_lossy(buf));
        let mut first = self.first_line.lock().unwrap();
        if first.is_none() && text.contains(FIRST_LINE) {
            *first = Some(self.start.elapsed());
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Boots `bundle` on our monitor; time to the first line.
fn monitor_boot(kernel: &Path, bundle: &[u8]) -> Result<Duration> {
    let config = denali_monitor::Config::new(kernel, bundle.to_vec());
    let watch = Stopwatch { start: Instant::now(), text: Arc::default(), first_line: Arc::default() };
    denali_monitor::run(&config, Box::new(watch.clone()))?;
    let first = *watch.first_line.lock().unwrap();
    first.with_context(|| format!("no first line:\n{}", watch.text.lock().unwrap()))
}

/// What QEMU said, line by line.
enum Said {
    /// A console line, and when it came.
    Console(String, Duration),
    /// A line on QEMU's standard error.
    Error(String),
}

/// Starts QEMU; time to the first line, then stops it. Gives up at the
/// first error QEMU reports (after an internal error it waits forever).
fn qemu_boot(boot: QemuBoot<'_>, accel: &str) -> Result<Duration> {
    let mut qemu = qemu_command(boot, accel, QEMU_MEMORY);
    let start = Instant::now();
    let mut child = qemu.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().context("start QEMU")?;
    let (sender, said) = std::sync::mpsc::channel();
    let stdout = BufReader::new(child.stdout.take().expect("piped"));
    let to_console = sender.clone();
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            if to_console.send(Said::Console(line, start.elapsed())).is_err() {
                break;
            }
        }
    });
    let stderr = BufReader::new(child.stderr.take().expect("piped"));
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            if sender.send(Said::Error(line)).is_err() {
                break;
            }
        }
    });
    let result = loop {
        match said.recv_timeout(LIMIT.saturating_sub(start.elapsed())) {
            Ok(Said::Console(line, at)) if line.contains(FIRST_LINE) => break Ok(at),
            Ok(Said::Console(..)) => continue,
            Ok(Said::Error(line)) if line.to_lowercase().contains("error") => break Err(line),
            Ok(Said::Error(_)) => continue,
            Err(_) => break Err(format!("no first line within {}s", LIMIT.as_secs())),
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    result.map_err(|why| anyhow::anyhow!("{why}"))
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn main() -> Result<()> {
    let runs: usize = std::env::args().nth(1).and_then(|n| n.parse().ok()).unwrap_or(5).max(1);
    let scratch = tempfile::tempdir()?;
    let service = denali_cli::new::new(scratch.path(), "hello", "hello")?;
    let options = BuildOptions { manifest_path: Some(service.join("Cargo.toml")), release: true, ..Default::default() };
    let image = build_images(&options, Default::default())?.remove(0).path;
    let bundle_path = image.with_extension("bundle");
    let bundle = std::fs::read(&bundle_path)?;
    let kernel = kernel::kernel_elf()?;

    let metadata = std::fs::metadata(&image)?;
    let allocated = std::os::unix::fs::MetadataExt::blocks(&metadata) * 512;
    println!(
        "image: {} MiB apparent, {:.1} MiB allocated (sparse); bundle {} KiB; kernel {} KiB",
        metadata.len() >> 20,
        allocated as f64 / (1 << 20) as f64,
        bundle.len() >> 10,
        std::fs::metadata(&kernel)?.len() >> 10
    );
    println!("time from start to the service's first line, median of {runs}:");

    type Boot<'a> = Box<dyn Fn() -> Result<Duration> + 'a>;
    let pvh = |machine| QemuBoot::Pvh { kernel: &kernel, bundle: &bundle_path, machine };
    let ways: Vec<(&str, Boot<'_>)> = vec![
        ("our KVM monitor (in process)", Box::new(|| monitor_boot(&kernel, &bundle))),
        ("QEMU, UEFI disk image, emulated (TCG)", Box::new(|| qemu_boot(QemuBoot::Uefi(&image), "tcg"))),
        ("QEMU, UEFI disk image, KVM", Box::new(|| qemu_boot(QemuBoot::Uefi(&image), "kvm"))),
        ("QEMU q35, PVH, emulated (TCG)", Box::new(|| qemu_boot(pvh("q35"), "tcg"))),
        ("QEMU q35, PVH, KVM", Box::new(|| qemu_boot(pvh("q35"), "kvm"))),
        ("QEMU microvm, PVH, KVM", Box::new(|| qemu_boot(pvh("microvm"), "kvm"))),
    ];
    for (label, boot) in ways {
        let mut samples = Vec::new();
        let mut failure = None;
        for _ in 0..runs {
            match boot() {
                Ok(at) => samples.push(at),
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        match failure {
            None => println!("  {label:<40} {:>8.0} ms", median(samples).as_secs_f64() * 1000.0),
            Some(e) => println!("  {label:<40} fails: {e:#}"),
        }
    }
    Ok(())
}
