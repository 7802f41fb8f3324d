//! The web benchmark: requests per second and latency for the `http`
//! template's 2 KB page with 1, 10, 100 and 1,000 server VMs, requests
//! spread uniformly and Zipf (alpha 0.8) over the servers, beside the same
//! page served by as many native Linux processes, in the same run.
//!
//! ```text
//! cargo run --release -p denali-cli --example bench-http -- [--counts 1,10,100,1000] [--secs 5] [--clients 8]
//! ```
//!
//! Needs root: it makes a network namespace `denali-bench` with a TAP device
//! (10.0.2.2/16) that the VMs sit behind (10.0.2.15 onward), runs itself
//! inside it, and removes it at the end. The Linux servers listen on the
//! namespace's loopback. The load generator is closed-loop: `--clients`
//! threads, each sending a request, waiting for the whole page, and sending
//! the next, over keep-alive connections (a thread keeps at most 32 open).

use anyhow::{Context, Result, bail};
use denali_abi::boot::{BundleSpec, build_bundle};
use denali_abi::net::Ipv4Config;
use denali_cli::build::{BuildOptions, build};
use denali_cli::{image, kernel};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const NAMESPACE: &str = "denali-bench";
/// Set inside the namespace: the http image's path (built outside it,
/// where crates.io can be reached).
const IMAGE_VAR: &str = "DENALI_BENCH_IMAGE";
const NATIVE_BASE_PORT: u16 = 20_000;
const PAGE_SIZE: usize = 2048;
/// Keep-alive connections one client thread keeps open.
const OPEN_PER_CLIENT: usize = 32;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("--serve-denali") => serve_denali(args[1].parse()?, &args[2]),
        Some("--serve-native") => serve_native(args[1].parse()?),
        _ => match std::env::var_os(IMAGE_VAR) {
            None => run_in_namespace(&args),
            Some(image) => benchmark(&args, std::path::Path::new(&image)),
        },
    }
}

/// Builds the image, makes the namespace and its TAP device, runs this
/// program inside it, and removes it.
fn run_in_namespace(args: &[String]) -> Result<()> {
    let image = build_http_image()?;
    let ip = |args: &[&str]| -> Result<()> {
        let out = Command::new("ip").args(args).output().context("the benchmark needs `ip` (Debian: iproute2)")?;
        if !out.status.success() {
            bail!("ip {}: {} (the benchmark needs root)", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(())
    };
    let _ = Command::new("ip").args(["netns", "del", NAMESPACE]).output();
    ip(&["netns", "add", NAMESPACE])?;
    fn inside<'a>(rest: &[&'a str]) -> Vec<&'a str> {
        [&["netns", "exec", NAMESPACE, "ip"][..], rest].concat()
    }
    let setup = (|| {
        ip(&inside(&["tuntap", "add", "dev", "dn0", "mode", "tap"]))?;
        ip(&inside(&["addr", "add", "10.0.2.2/16", "dev", "dn0"]))?;
        ip(&inside(&["link", "set", "dn0", "up"]))?;
        ip(&inside(&["link", "set", "lo", "up"]))
    })();
    let status = setup.and_then(|()| {
        Command::new("ip")
            .args(["netns", "exec", NAMESPACE])
            .arg(std::env::current_exe()?)
            .args(args)
            .env(IMAGE_VAR, &image)
            .status()
            .context("run the benchmark in its namespace")
    });
    let _ = Command::new("ip").args(["netns", "del", NAMESPACE]).output();
    if !status?.success() {
        bail!("the benchmark failed");
    }
    Ok(())
}

fn flag<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn benchmark(args: &[String], image: &std::path::Path) -> Result<()> {
    let counts: Vec<u32> = flag(args, "--counts", "1,10,100,1000".to_string())
        .split(',')
        .map(|n| n.trim().parse().context("--counts takes numbers like 1,10,100"))
        .collect::<Result<_>>()?;
    let secs: f64 = flag(args, "--secs", 5.0);
    let clients: usize = flag(args, "--clients", 8);
    println!("{clients} closed-loop clients, {secs} s per figure; latency in ms");
    println!(
        "{:>6}  {:<8} | {:>9} {:>7} {:>7} {:>6} | {:>9} {:>7} {:>7}",
        "VMs", "spread", "denali/s", "p50", "p99", "errors", "linux/s", "p50", "p99"
    );
    for &n in &counts {
        let denali_targets: Vec<SocketAddr> = (0..n)
            .map(|i| SocketAddr::from((Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 0, 2, 15)) + i), 80)))
            .collect();
        let native_targets: Vec<SocketAddr> =
            (0..n).map(|i| SocketAddr::from((Ipv4Addr::LOCALHOST, NATIVE_BASE_PORT + i as u16))).collect();
        let mut rows = Vec::new();
        {
            let _servers = start_denali(n, image)?;
            for zipf in [false, true] {
                rows.push(load(&denali_targets, zipf, clients, secs));
            }
        }
        {
            let _servers = start_native(n)?;
            for (i, zipf) in [false, true].into_iter().enumerate() {
                let native = load(&native_targets, zipf, clients, secs);
                let denali = &rows[i];
                println!(
                    "{n:>6}  {:<8} | {:>9.0} {:>7.2} {:>7.2} {:>6} | {:>9.0} {:>7.2} {:>7.2}",
                    if zipf { "zipf 0.8" } else { "uniform" },
                    denali.rate,
                    denali.p50,
                    denali.p99,
                    denali.errors,
                    native.rate,
                    native.p50,
                    native.p99
                );
            }
        }
    }
    Ok(())
}

/// The `http` template, built in release mode (the crate is kept in the
/// temporary directory, outside any workspace, so later runs reuse it).
fn build_http_image() -> Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join("denali-bench-http");
    if !dir.join("web/Cargo.toml").is_file() {
        std::fs::create_dir_all(&dir)?;
        denali_cli::new::new(&dir, "web", "http")?;
    }
    let built =
        build(&BuildOptions { manifest_path: Some(dir.join("web/Cargo.toml")), release: true, ..Default::default() })?;
    Ok(built[0].dvm.clone())
}

/// Servers that are killed when dropped.
struct Servers(Vec<Child>);

impl Drop for Servers {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Boots `n` http VMs behind dn0 in a child process; returns once all serve.
fn start_denali(n: u32, image: &std::path::Path) -> Result<Servers> {
    let mut child = Command::new(std::env::current_exe()?)
        .args(["--serve-denali", &n.to_string(), &image.to_string_lossy()])
        .stdout(Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take().expect("piped");
    let servers = Servers(vec![child]);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains("http: serving") {
                let _ = tx.send(());
            }
        }
    });
    for _ in 0..n {
        rx.recv_timeout(Duration::from_secs(300)).context("the VMs did not all start serving")?;
    }
    Ok(servers)
}

fn serve_denali(n: u32, image: &str) -> Result<()> {
    let image = image::read_dvm(std::path::Path::new(image))?;
    let ipv4 = Ipv4Config { address: [10, 0, 2, 15], gateway: [10, 0, 2, 2], prefix_len: 16, reserved: [0; 3] };
    let bundle =
        build_bundle(&[BundleSpec { name: "web", instances: n, image: &image, args: "", ipv4, disk_sectors: 0 }]);
    let mut config = denali_monitor::Config::new(&kernel::kernel_elf()?, bundle);
    config.mem_size = 4 << 30;
    config.net = Some(denali_monitor::net::NetConfig::Tap("dn0".into()));
    denali_monitor::run(&config, Box::new(std::io::stdout()))?;
    Ok(())
}

/// Starts `n` native servers on 127.0.0.1:20000.. and waits for them.
fn start_native(n: u32) -> Result<Servers> {
    let exe = std::env::current_exe()?;
    let mut servers = Servers(Vec::new());
    for i in 0..n {
        let port = NATIVE_BASE_PORT + i as u16;
        servers.0.push(Command::new(&exe).args(["--serve-native", &port.to_string()]).spawn()?);
    }
    for i in 0..n {
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect((Ipv4Addr::LOCALHOST, NATIVE_BASE_PORT + i as u16)).is_err() {
            if Instant::now() > deadline {
                bail!("native server {i} did not start");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    Ok(servers)
}

/// The same page and protocol as the `http` template, as a Linux process:
/// a thread per connection, HTTP/1.1 keep-alive.
fn serve_native(port: u16) -> Result<()> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port))?;
    let mut page = String::from("<!doctype html>\n<html><body><h1>Hello from Linux</h1><p>");
    let tail = "</p></body></html>\n";
    while page.len() + tail.len() < PAGE_SIZE {
        page.push('x');
    }
    page.push_str(tail);
    let response: &'static [u8] = Box::leak(
        format!("HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {PAGE_SIZE}\r\nConnection: keep-alive\r\n\r\n{page}")
            .into_bytes()
            .into_boxed_slice(),
    );
    for stream in listener.incoming().map_while(Result::ok) {
        std::thread::spawn(move || {
            let mut stream = stream;
            let _ = stream.set_nodelay(true);
            let mut buf = Vec::new();
            let mut chunk = [0u8; 2048];
            loop {
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut chunk) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let end = buf.windows(4).position(|w| w == b"\r\n\r\n").expect("found") + 4;
                buf.drain(..end);
                if stream.write_all(response).is_err() {
                    return;
                }
            }
        });
    }
    Ok(())
}

/// What one load run measured.
struct Figures {
    rate: f64,
    p50: f64,
    p99: f64,
    errors: u64,
}

/// Zipf(alpha) over `n` targets, as a cumulative distribution.
fn zipf_cdf(n: usize, alpha: f64) -> Vec<f64> {
    let weights: Vec<f64> = (1..=n).map(|k| 1.0 / (k as f64).powf(alpha)).collect();
    let total: f64 = weights.iter().sum();
    let mut acc = 0.0;
    weights
        .iter()
        .map(|w| {
            acc += w / total;
            acc
        })
        .collect()
}

/// One request to each target in turn, so ARP caches and first-touch page
/// faults are behind us before anything is measured.
fn warm_up(targets: &[SocketAddr]) {
    for target in targets {
        if let Ok(mut stream) = TcpStream::connect_timeout(target, Duration::from_secs(5)) {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
            let _ = request(&mut stream);
        }
    }
}

/// Runs `clients` closed-loop clients against `targets` for `secs`.
fn load(targets: &[SocketAddr], zipf: bool, clients: usize, secs: f64) -> Figures {
    warm_up(targets);
    let cdf = zipf.then(|| zipf_cdf(targets.len(), 0.8));
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let threads: Vec<_> = (0..clients)
        .map(|c| {
            let targets = targets.to_vec();
            let cdf = cdf.clone();
            std::thread::spawn(move || client(&targets, cdf.as_deref(), c as u64 + 1, deadline))
        })
        .collect();
    let mut latencies = Vec::new();
    let mut errors = 0;
    for thread in threads {
        let (l, e) = thread.join().expect("client");
        latencies.extend(l);
        errors += e;
    }
    latencies.sort_unstable();
    let percentile = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(f64::NAN, |&us| us as f64 / 1000.0)
    };
    Figures { rate: latencies.len() as f64 / secs, p50: percentile(0.50), p99: percentile(0.99), errors }
}

/// One client: requests until `deadline`; returns latencies (µs) and errors.
fn client(targets: &[SocketAddr], cdf: Option<&[f64]>, seed: u64, deadline: Instant) -> (Vec<u64>, u64) {
    let mut rng = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut open: HashMap<usize, TcpStream> = HashMap::new();
    let (mut latencies, mut errors) = (Vec::new(), 0);
    while Instant::now() < deadline {
        let target = match cdf {
            Some(cdf) => {
                cdf.partition_point(|&c| c < (next() >> 11) as f64 / (1u64 << 53) as f64).min(targets.len() - 1)
            }
            None => (next() % targets.len() as u64) as usize,
        };
        if !open.contains_key(&target) && open.len() >= OPEN_PER_CLIENT {
            let victim = *open.keys().next().expect("not empty");
            open.remove(&victim);
        }
        let started = Instant::now();
        let stream = match open.entry(target) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                match TcpStream::connect_timeout(&targets[target], Duration::from_secs(5)) {
                    Ok(s) => {
                        let _ = s.set_nodelay(true);
                        let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                        e.insert(s)
                    }
                    Err(_) => {
                        errors += 1;
                        continue;
                    }
                }
            }
        };
        if request(stream).is_ok() {
            latencies.push(started.elapsed().as_micros() as u64);
        } else {
            errors += 1;
            open.remove(&target);
        }
    }
    (latencies, errors)
}

/// One GET of the page over `stream`, reading the whole response.
fn request(stream: &mut TcpStream) -> std::io::Result<()> {
    stream.write_all(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")?;
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .ok_or(std::io::ErrorKind::InvalidData)?;
            if buf.len() >= end + 4 + length {
                return Ok(());
            }
        }
    }
}
