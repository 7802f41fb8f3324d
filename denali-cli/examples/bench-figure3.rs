//! The paper's Figure 3: N web-server VMs (the `http` template) behind a
//! TAP device in a memory that holds only some of them, with a swap area on
//! the disk; a closed-loop load generator asks for the 2 KB page from VMs
//! chosen uniformly or Zipf(0.8). For each N and spread it prints requests
//! per second, latency, what swapping did, and the disk file's own
//! bandwidth for the same transfer sizes measured in the same run; it
//! writes the table as CSV and the figure as PNG and SVG.
//!
//! ```text
//! sudo cargo run --release -p denali-cli --example bench-figure3 -- \
//!     [--counts 1,10,100,500,1000,2000,5000,10000] [--mem MIB] [--secs S] \
//!     [--requests MAX] [--clients C] [--spreads uniform,zipf] [--out DIR]
//! ```
//!
//! Needs root (a network namespace `denali-figure3` with a TAP device, as
//! `bench-http`) and, for the figure's text, the DejaVu Sans font (Debian:
//! fonts-dejavu-core). Swapping figures come from the kernel's counters,
//! read from guest memory while the VMs run (`denali_monitor::LiveCounters`).

#[path = "web_load/mod.rs"]
#[allow(dead_code)] // each web benchmark uses its own part of it
mod web_load;

use anyhow::{Context, Result, bail};
use denali_abi::boot::{BundleSpec, build_bundle};
use denali_abi::counters::SwapCounters;
use denali_abi::net::Ipv4Config;
use denali_cli::{image, kernel, vm_disk};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use web_load::{Spread, flag, load, start_servers, vm_targets};

const NAMESPACE: &str = "denali-figure3";
/// Set inside the namespace: the http image's path.
const IMAGE_VAR: &str = "DENALI_FIGURE3_IMAGE";
/// What the server process prints before the kernel's counters.
const COUNTERS_TAG: &str = "counters:";
/// How often the server process prints them.
const COUNTERS_EVERY: Duration = Duration::from_millis(200);
/// Swap area for each VM (a web VM's private pages, with room to spare).
const SWAP_PER_VM: u64 = 512 << 10;
/// The transfer sizes whose raw bandwidth is measured: a page, and the most
/// one swap request moves.
const TRANSFERS: [usize; 2] = [4 << 10, 128 << 10];

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("--serve") => serve(&args[1..]),
        _ => match std::env::var_os(IMAGE_VAR) {
            None => web_load::run_in_namespace(
                NAMESPACE,
                IMAGE_VAR,
                web_load::build_template_image("http")?.as_os_str(),
                &args,
            ),
            Some(image) => benchmark(&args, Path::new(&image)),
        },
    }
}

/// The run's settings.
struct Settings {
    counts: Vec<u32>,
    mem_mib: u64,
    secs: f64,
    requests: u64,
    clients: usize,
    spreads: Vec<Spread>,
    out: PathBuf,
}

impl Settings {
    fn from_args(args: &[String]) -> Result<Settings> {
        let spreads = flag(args, "--spreads", "uniform,zipf".to_string())
            .split(',')
            .map(|s| match s.trim() {
                "uniform" => Ok(Spread::Uniform),
                "zipf" => Ok(Spread::Zipf(0.8)),
                other => bail!("--spreads takes uniform and zipf, not {other}"),
            })
            .collect::<Result<_>>()?;
        Ok(Settings {
            counts: web_load::counts(&flag(args, "--counts", "1,10,100,500,1000,2000,5000,10000".to_string()))?,
            mem_mib: flag(args, "--mem", 256),
            secs: flag(args, "--secs", 20.0),
            requests: flag(args, "--requests", 100_000),
            clients: flag(args, "--clients", 16),
            spreads,
            out: PathBuf::from(flag(args, "--out", "target/bench-figure3".to_string())),
        })
    }
}

/// One row of the table.
struct Row {
    vms: u32,
    spread: Spread,
    figures: web_load::Figures,
    secs: f64,
    /// What the kernel's counters moved by while the load ran.
    swap: SwapCounters,
}

impl Row {
    fn per_sec(&self, count: u64) -> f64 {
        count as f64 / self.secs
    }

    fn mib_per_sec(&self, pages: u64) -> f64 {
        self.per_sec(pages) * 4096.0 / f64::from(1 << 20)
    }

    /// Share of requests whose VM was swapped out when it came.
    fn swapped_fraction(&self) -> f64 {
        (self.swap.swap_ins as f64 / self.figures.requests.max(1) as f64).min(1.0)
    }

    /// Mean time to bring a VM back in, and of that, waiting for the disk (ms).
    fn swap_in_ms(&self) -> (f64, f64) {
        let per = |ns: u64| ns as f64 / self.swap.swap_ins.max(1) as f64 / 1e6;
        (per(self.swap.in_ns), per(self.swap.read_wait_ns))
    }

    /// Bandwidth of swapping in while it ran (MiB/s of its time).
    fn swap_in_mib_s(&self) -> f64 {
        self.swap.pages_in as f64 * 4096.0 / f64::from(1 << 20) / (self.swap.in_ns.max(1) as f64 / 1e9)
    }
}

fn benchmark(args: &[String], image: &Path) -> Result<()> {
    let settings = Settings::from_args(args)?;
    std::fs::create_dir_all(&settings.out)?;
    let scratch = tempfile::tempdir()?;
    let most = settings.counts.iter().copied().max().unwrap_or(1);
    eprintln!("measuring the disk file's own bandwidth ...");
    let raw = raw_bandwidth(&scratch.path().join("raw.disk"), (u64::from(most) * SWAP_PER_VM).max(256 << 20))?;
    let mut rows = Vec::new();
    for &n in &settings.counts {
        eprintln!("booting {n} web VMs in {} MiB ...", settings.mem_mib);
        let disk = scratch.path().join("figure3.disk");
        let serve = [
            "--serve".to_string(),
            n.to_string(),
            image.to_string_lossy().into_owned(),
            settings.mem_mib.to_string(),
            disk.to_string_lossy().into_owned(),
        ];
        let (_servers, lines) = start_servers(&serve, n, "http: serving")?;
        let targets = vm_targets(n);
        for &spread in &settings.spreads {
            let before = latest_counters(&lines)?;
            let started = Instant::now();
            let figures = load(&targets, spread, settings.clients, settings.secs, settings.requests);
            let secs = started.elapsed().as_secs_f64();
            let after = latest_counters(&lines)?;
            let row = Row { vms: n, spread, figures, secs, swap: after.since(&before) };
            print_row(&row, rows.is_empty());
            rows.push(row);
        }
        std::fs::remove_file(&disk).ok();
    }
    print_raw(&raw);
    write_csv(&settings.out.join("figure3.csv"), &rows, &raw)?;
    plot(&settings.out, &rows, &raw)?;
    eprintln!("wrote figure3.csv, figure3.png and figure3.svg in {}", settings.out.display());
    Ok(())
}

/// The server process: boots `n` VMs of the image in `mem` MiB with a swap
/// area on `disk`, and prints the kernel's counters every
/// [`COUNTERS_EVERY`] on stderr while they run.
fn serve(args: &[String]) -> Result<()> {
    let [n, image, mem, disk] = args else { bail!("--serve N IMAGE MEM_MIB DISK") };
    let n: u32 = n.parse()?;
    let image = image::read_dvm(Path::new(image))?;
    let ipv4 = Ipv4Config { address: [10, 0, 2, 15], gateway: [10, 0, 2, 2], prefix_len: 16, reserved: [0; 3] };
    let bundle =
        build_bundle(&[BundleSpec { name: "web", instances: n, image: &image, args: "", ipv4, disk_sectors: 0 }]);
    let disk = PathBuf::from(disk);
    let swap = (u64::from(n) * SWAP_PER_VM).max(64 << 20);
    vm_disk::prepare(&disk, vm_disk::windows_end_of_bundle(&bundle)?, swap)?;
    let mut config = denali_monitor::Config::new(&kernel::kernel_elf()?, bundle);
    config.mem_size = mem.parse::<u64>()? << 20;
    config.net = Some(denali_monitor::net::NetConfig::Tap("dn0".into()));
    config.disk = Some(disk);
    let counters = denali_monitor::LiveCounters::default();
    config.counters = Some(counters.clone());
    std::thread::spawn(move || {
        loop {
            if let Some(c) = counters.read() {
                eprintln!("{COUNTERS_TAG} {}", c.to_words().map(|w| w.to_string()).join(" "));
            }
            std::thread::sleep(COUNTERS_EVERY);
        }
    });
    let status = denali_monitor::run(&config, Box::new(std::io::stdout()))?;
    bail!("the web VMs stopped (status {status})")
}

/// The newest counters the server process printed: waits for a fresh
/// counters line, then takes those already waiting.
fn latest_counters(lines: &mpsc::Receiver<String>) -> Result<SwapCounters> {
    let deadline = Instant::now() + COUNTERS_EVERY * 10;
    let counters = |line: String| line.strip_prefix(COUNTERS_TAG).map(parse_counters);
    let mut latest = loop {
        let wait = deadline.saturating_duration_since(Instant::now());
        let line = lines.recv_timeout(wait).context("the server process stopped printing the kernel's counters")?;
        if let Some(fresh) = counters(line) {
            break fresh?;
        }
    };
    for fresh in lines.try_iter().filter_map(counters) {
        latest = fresh?;
    }
    Ok(latest)
}

fn parse_counters(words: &str) -> Result<SwapCounters> {
    let words: Vec<u64> = words.split_whitespace().map(str::parse).collect::<Result<_, _>>()?;
    let words = words.try_into().map_err(|w: Vec<u64>| anyhow::anyhow!("a counters line with {} numbers", w.len()))?;
    Ok(SwapCounters::from_words(words))
}

/// The disk file's bandwidth, MiB/s, for each of [`TRANSFERS`]: random
/// reads and writes through the page cache, as the monitor's disk does.
struct RawBandwidth {
    /// (transfer bytes, read MiB/s, write MiB/s)
    sizes: Vec<(usize, f64, f64)>,
}

impl RawBandwidth {
    /// Read MiB/s for transfers of `bytes`.
    fn read(&self, bytes: usize) -> f64 {
        self.sizes.iter().find(|s| s.0 == bytes).map_or(f64::NAN, |s| s.1)
    }
}

fn raw_bandwidth(path: &Path, size: u64) -> Result<RawBandwidth> {
    let file = std::fs::File::options().read(true).write(true).create(true).truncate(true).open(path)?;
    file.set_len(size)?;
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut sizes = Vec::new();
    for bytes in TRANSFERS {
        let mut buf = vec![0x5au8; bytes];
        let slots = size / bytes as u64;
        let mut offset = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            (rng % slots) * bytes as u64
        };
        let mut rate = |write: bool| -> Result<f64> {
            let started = Instant::now();
            let mut moved = 0u64;
            while started.elapsed() < Duration::from_secs(1) {
                let at = offset();
                if write {
                    file.write_all_at(&buf, at)?
                } else {
                    file.read_exact_at(&mut buf, at)?
                }
                moved += bytes as u64;
            }
            Ok(moved as f64 / f64::from(1 << 20) / started.elapsed().as_secs_f64())
        };
        let write = rate(true)?;
        let read = rate(false)?;
        sizes.push((bytes, read, write));
    }
    Ok(RawBandwidth { sizes })
}

fn print_row(row: &Row, header: bool) {
    if header {
        println!(
            "{:>6} {:<8} | {:>8} {:>8} {:>8} {:>9} | {:>8} {:>8} {:>8} {:>8} {:>7} | {:>9} {:>9} {:>9}",
            "VMs",
            "spread",
            "req/s",
            "p50 ms",
            "p99 ms",
            "err(rst)",
            "in/s",
            "out/s",
            "rd MiB/s",
            "wr MiB/s",
            "swapped",
            "swap-in ms",
            "disk ms",
            "in MiB/s"
        );
    }
    let (swap_in_ms, disk_ms) = row.swap_in_ms();
    println!(
        "{:>6} {:<8} | {:>8.1} {:>8.2} {:>8.2} {:>9} | {:>8.1} {:>8.1} {:>8.2} {:>8.2} {:>6.1}% | {:>9.2} {:>9.2} {:>9.1}",
        row.vms,
        row.spread.name(),
        row.figures.rate,
        row.figures.p50,
        row.figures.p99,
        format!("{}({})", row.figures.errors, row.figures.resets),
        row.per_sec(row.swap.swap_ins),
        row.per_sec(row.swap.swap_outs),
        row.mib_per_sec(row.swap.pages_in),
        row.mib_per_sec(row.swap.pages_out),
        row.swapped_fraction() * 100.0,
        swap_in_ms,
        disk_ms,
        row.swap_in_mib_s()
    );
}

fn print_raw(raw: &RawBandwidth) {
    println!();
    println!("the disk file itself, same run (random transfers through the page cache):");
    for &(bytes, read, write) in &raw.sizes {
        println!("  {:>4} KiB transfers: read {read:>8.1} MiB/s, write {write:>8.1} MiB/s", bytes >> 10);
    }
}

/// Requests per second if every request had to bring its VM back in at
/// the disk's raw read bandwidth (`None` if the row swapped nothing in).
fn disk_bound(row: &Row, raw: &RawBandwidth) -> Option<f64> {
    let bytes_per_swap_in = row.swap.pages_in as f64 * 4096.0 / row.swap.swap_ins.max(1) as f64;
    (row.swap.swap_ins > 0).then(|| raw.read(128 << 10) * f64::from(1 << 20) / bytes_per_swap_in)
}

fn write_csv(path: &Path, rows: &[Row], raw: &RawBandwidth) -> Result<()> {
    let mut csv = String::from(
        "vms,spread,requests,requests_per_s,p50_ms,p99_ms,errors,resets,swap_ins_per_s,swap_outs_per_s,read_mib_s,written_mib_s,swapped_fraction,swap_in_ms,swap_in_disk_ms,swap_in_mib_s,disk_read_mib_s_128k,disk_bound_requests_per_s\n",
    );
    for row in rows {
        let (swap_in_ms, disk_ms) = row.swap_in_ms();
        csv += &format!(
            "{},{},{},{:.1},{:.3},{:.3},{},{},{:.2},{:.2},{:.3},{:.3},{:.4},{:.3},{:.3},{:.1},{:.1},{}\n",
            row.vms,
            row.spread.name(),
            row.figures.requests,
            row.figures.rate,
            row.figures.p50,
            row.figures.p99,
            row.figures.errors,
            row.figures.resets,
            row.per_sec(row.swap.swap_ins),
            row.per_sec(row.swap.swap_outs),
            row.mib_per_sec(row.swap.pages_in),
            row.mib_per_sec(row.swap.pages_out),
            row.swapped_fraction(),
            swap_in_ms,
            disk_ms,
            row.swap_in_mib_s(),
            raw.read(128 << 10),
            disk_bound(row, raw).map_or(String::new(), |r| format!("{r:.1}"))
        );
    }
    std::fs::write(path, csv).with_context(|| format!("cannot write {}", path.display()))
}

/// Where the figure's font is looked for.
const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

/// Throughput against VM count (log scale), one line per spread and the
/// disk-bound line, as PNG and SVG.
fn plot(dir: &Path, rows: &[Row], raw: &RawBandwidth) -> Result<()> {
    use plotters::prelude::*;
    let font = std::fs::read(FONT)
        .with_context(|| format!("the figure needs the DejaVu Sans font at {FONT} (Debian: fonts-dejavu-core)"))?;
    plotters::style::register_font("sans-serif", FontStyle::Normal, Box::leak(font.into_boxed_slice()))
        .map_err(|_| anyhow::anyhow!("{FONT} is not a TrueType font"))?;
    let uniform = || rows.iter().filter(|r| r.spread == Spread::Uniform);
    let bound: Vec<(u32, f64)> = uniform().filter_map(|r| disk_bound(r, raw).map(|b| (r.vms, b))).collect();
    let swap_bound: Vec<(u32, f64)> =
        uniform().filter(|r| r.swap.swap_ins > 0).map(|r| (r.vms, 1e3 / r.swap_in_ms().0)).collect();
    let highest = rows.iter().map(|r| r.figures.rate).chain(bound.iter().map(|b| b.1)).fold(1.0, f64::max);
    let figure = Figure {
        most_vms: rows.iter().map(|r| r.vms).max().unwrap_or(1).max(2),
        top: highest * 2.0,
        lines: [Spread::Uniform, Spread::Zipf(0.8)].map(|spread| {
            (spread, rows.iter().filter(|r| r.spread == spread).map(|r| (r.vms, r.figures.rate)).collect())
        }),
        bound,
        swap_bound,
    };
    figure.draw(BitMapBackend::new(&dir.join("figure3.png"), (900, 560)).into_drawing_area())?;
    figure.draw(SVGBackend::new(&dir.join("figure3.svg"), (900, 560)).into_drawing_area())?;
    Ok(())
}

/// What the figure shows.
struct Figure {
    most_vms: u32,
    /// Top of the y axis.
    top: f64,
    /// (VMs, requests/s) for each spread.
    lines: [(Spread, Vec<(u32, f64)>); 2],
    /// (VMs, requests/s) the disk allows if every request is a swap-in.
    bound: Vec<(u32, f64)>,
    /// (VMs, requests/s) if every request is a swap-in taking as long as
    /// the kernel's swap-ins took.
    swap_bound: Vec<(u32, f64)>,
}

impl Figure {
    fn draw<DB: plotters::prelude::DrawingBackend>(
        &self,
        area: plotters::prelude::DrawingArea<DB, plotters::coord::Shift>,
    ) -> Result<()>
    where
        DB::ErrorType: 'static,
    {
        use plotters::prelude::*;
        let failed = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow::anyhow!("cannot draw the figure: {e}");
        area.fill(&WHITE).map_err(failed)?;
        let mut chart = ChartBuilder::on(&area)
            .caption("Denali: web-server VMs, 2 KB page, memory as a cache", ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d((1u32..self.most_vms).log_scale(), (0.5f64..self.top).log_scale())
            .map_err(failed)?;
        let mesh = chart.configure_mesh().x_desc("web-server VMs").y_desc("requests per second (log scale)").draw();
        mesh.map_err(failed)?;
        for ((spread, points), color) in self.lines.iter().zip([RED, BLUE]) {
            chart
                .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
                .map_err(failed)?
                .label(spread.name())
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color));
            chart.draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled()))).map_err(failed)?;
        }
        let grey = RGBColor(128, 128, 128);
        let bounds = [
            (&self.bound, BLACK, "disk-bound: every request a swap-in at the disk file's speed"),
            (&self.swap_bound, grey, "swap-bound: every request a swap-in as long as the kernel's took"),
        ];
        for (points, color, label) in bounds {
            chart
                .draw_series(LineSeries::new(points.clone(), color.stroke_width(1)))
                .map_err(failed)?
                .label(label)
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::MiddleRight)
            .border_style(BLACK)
            .background_style(WHITE)
            .draw()
            .map_err(failed)?;
        area.present().map_err(failed)?;
        Ok(())
    }
}
