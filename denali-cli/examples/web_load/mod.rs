//! What the web benchmarks share: the `http` template's image, a network
//! namespace with a TAP device for the VMs to sit behind, servers in child
//! processes, and a closed-loop load generator that spreads requests for
//! the 2 KB page uniformly or Zipf(alpha 0.8) over them.

use anyhow::{Context, Result, bail};
use denali_cli::build::{BuildOptions, build};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Keep-alive connections one client thread keeps open.
const OPEN_PER_CLIENT: usize = 32;

/// The value after `--name` among `args`, or `default`.
pub fn flag<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The numbers of a `--counts`-style list such as `1,10,100`.
pub fn counts(list: &str) -> Result<Vec<u32>> {
    list.split(',').map(|n| n.trim().parse().context("a list of VM counts looks like 1,10,100")).collect()
}

/// A service made from `template` (`http`, `axum`, ...), built in release
/// mode (the crate is kept in the temporary directory, outside any
/// workspace, so later runs reuse it).
pub fn build_template_image(template: &str) -> Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("denali-bench-{template}"));
    if !dir.join("web/Cargo.toml").is_file() {
        std::fs::create_dir_all(&dir)?;
        denali_cli::new::new(&dir, "web", template)?;
    }
    let built =
        build(&BuildOptions { manifest_path: Some(dir.join("web/Cargo.toml")), release: true, ..Default::default() })?;
    Ok(built[0].dvm.clone())
}

/// Makes network namespace `namespace` with a TAP device `dn0`
/// (10.0.2.2/16), runs this program inside it with `args` and with `var`
/// set to `images` (paths joined as in `PATH`), and removes it.
pub fn run_in_namespace(namespace: &str, var: &str, images: &std::ffi::OsStr, args: &[String]) -> Result<()> {
    let ip = |args: &[&str]| -> Result<()> {
        let out = Command::new("ip").args(args).output().context("the benchmark needs `ip` (Debian: iproute2)")?;
        if !out.status.success() {
            bail!("ip {}: {} (the benchmark needs root)", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(())
    };
    let _ = Command::new("ip").args(["netns", "del", namespace]).output();
    ip(&["netns", "add", namespace])?;
    let inside = |rest: &[&str]| -> Result<()> { ip(&[&["netns", "exec", namespace, "ip"][..], rest].concat()) };
    let setup = (|| {
        inside(&["tuntap", "add", "dev", "dn0", "mode", "tap"])?;
        inside(&["addr", "add", "10.0.2.2/16", "dev", "dn0"])?;
        inside(&["link", "set", "dn0", "up"])?;
        inside(&["link", "set", "lo", "up"])
    })();
    let status = setup.and_then(|()| {
        Command::new("ip")
            .args(["netns", "exec", namespace])
            .arg(std::env::current_exe()?)
            .args(args)
            .env(var, images)
            .status()
            .context("run the benchmark in its namespace")
    });
    let _ = Command::new("ip").args(["netns", "del", namespace]).output();
    if !status?.success() {
        bail!("the benchmark failed");
    }
    Ok(())
}

/// The addresses of `n` VMs behind the TAP device: 10.0.2.15 onward.
pub fn vm_targets(n: u32) -> Vec<SocketAddr> {
    (0..n).map(|i| SocketAddr::from((Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 0, 2, 15)) + i), 80))).collect()
}

/// Servers that are killed when dropped.
pub struct Servers(pub Vec<Child>);

impl Drop for Servers {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs this program with `args` (a server mode), and returns once it has
/// printed `ready` `n` times, with every later line it prints (stdout and
/// stderr).
pub fn start_servers(args: &[String], n: u32, ready: &str) -> Result<(Servers, mpsc::Receiver<String>)> {
    let mut child =
        Command::new(std::env::current_exe()?).args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    let streams: [Box<dyn Read + Send>; 2] =
        [Box::new(child.stdout.take().expect("piped")), Box::new(child.stderr.take().expect("piped"))];
    let mut servers = Servers(vec![child]);
    let (tx, rx) = mpsc::channel();
    for stream in streams {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
    }
    let (mut serving, mut last, mut error) = (0, String::new(), None);
    let started = Instant::now();
    while serving < n {
        let line = match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(line) => line,
            Err(_) if started.elapsed() > Duration::from_secs(3600) => {
                bail!("the VMs did not all start serving in an hour ({serving} of {n} did); the last line was: {last}")
            }
            Err(_) => match servers.0[0].try_wait()? {
                // Its error, if it gave one, else its last line.
                Some(status) => {
                    std::thread::sleep(Duration::from_millis(200));
                    let said = error.into_iter().chain(rx.try_iter()).find(|line| line.starts_with("Error"));
                    bail!("the servers ended ({status}) with {serving} of {n} VMs serving: {}", said.unwrap_or(last))
                }
                None => continue,
            },
        };
        if line.starts_with("Error") {
            error.get_or_insert_with(|| line.clone());
        }
        if line.contains(ready) {
            serving += 1;
            if serving % 100 == 0 || serving == n {
                eprint!("\r  {serving} of {n} VMs serving ({:.0} s)", started.elapsed().as_secs_f64());
            }
        }
        last = line;
    }
    eprintln!();
    Ok((servers, rx))
}

/// What one load run measured.
pub struct Figures {
    /// Requests answered.
    pub requests: u64,
    /// Requests answered per second.
    pub rate: f64,
    /// Median latency, ms.
    pub p50: f64,
    /// 99th-percentile latency, ms.
    pub p99: f64,
    /// Requests that failed.
    pub errors: u64,
    /// Of those, connections a server refused, reset or closed early
    /// (the rest timed out: 5 s to connect, 10 s to answer).
    pub resets: u64,
}

/// How requests are spread over the servers.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Spread {
    /// Every server equally.
    Uniform,
    /// Zipf with this alpha: server k is asked in proportion to 1/k^alpha.
    Zipf(f64),
}

impl Spread {
    /// Its name in tables.
    pub fn name(self) -> String {
        match self {
            Spread::Uniform => String::from("uniform"),
            Spread::Zipf(alpha) => format!("zipf {alpha}"),
        }
    }
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
pub fn warm_up(targets: &[SocketAddr]) {
    for target in targets {
        if let Ok(mut stream) = TcpStream::connect_timeout(target, Duration::from_secs(5)) {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
            let _ = request(&mut stream);
        }
    }
}

/// Runs `clients` closed-loop clients against `targets` for `secs` (and at
/// most `most` requests in all).
pub fn load(targets: &[SocketAddr], spread: Spread, clients: usize, secs: f64, most: u64) -> Figures {
    let cdf = match spread {
        Spread::Uniform => None,
        Spread::Zipf(alpha) => Some(zipf_cdf(targets.len(), alpha)),
    };
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(secs);
    let per_client = most.div_ceil(clients as u64);
    let threads: Vec<_> = (0..clients)
        .map(|c| {
            let targets = targets.to_vec();
            let cdf = cdf.clone();
            std::thread::spawn(move || client(&targets, cdf.as_deref(), c as u64 + 1, deadline, per_client))
        })
        .collect();
    let mut latencies = Vec::new();
    let (mut errors, mut resets) = (0, 0);
    for thread in threads {
        let (l, e, r) = thread.join().expect("client");
        latencies.extend(l);
        errors += e;
        resets += r;
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let percentile = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(f64::NAN, |&us| us as f64 / 1000.0)
    };
    Figures {
        requests: latencies.len() as u64,
        rate: latencies.len() as f64 / elapsed,
        p50: percentile(0.50),
        p99: percentile(0.99),
        errors,
        resets,
    }
}

/// One client: up to `most` requests until `deadline`; returns latencies
/// (µs), errors, and of those, refusals and resets.
fn client(
    targets: &[SocketAddr],
    cdf: Option<&[f64]>,
    seed: u64,
    deadline: Instant,
    most: u64,
) -> (Vec<u64>, u64, u64) {
    let mut rng = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut open: HashMap<usize, TcpStream> = HashMap::new();
    let (mut latencies, mut errors, mut resets) = (Vec::new(), 0, 0);
    let mut failed = |e: std::io::Error| {
        errors += 1;
        resets += u64::from(!matches!(e.kind(), std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock));
    };
    while Instant::now() < deadline && (latencies.len() as u64) < most {
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
                    Err(e) => {
                        failed(e);
                        continue;
                    }
                }
            }
        };
        match request(stream) {
            Ok(()) => latencies.push(started.elapsed().as_micros() as u64),
            Err(e) => {
                failed(e);
                open.remove(&target);
            }
        }
    }
    (latencies, errors, resets)
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
