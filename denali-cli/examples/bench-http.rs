//! The web benchmark: requests per second and latency for the `http`
//! template's 2 KB page with 1, 10, 100 and 1,000 server VMs, requests
//! spread uniformly and Zipf (alpha 0.8) over the servers, beside the same
//! page served by as many native Linux processes, in the same run.
//! `--templates http,axum` measures the `axum` template's std service
//! (tokio and hyper, "Hello, World!") in the same run too.
//!
//! ```text
//! cargo run --release -p denali-cli --example bench-http -- [--counts 1,10,100,1000] [--secs 5] [--clients 8]
//!     [--templates http,axum]
//! ```
//!
//! Needs root: it makes a network namespace `denali-bench` with a TAP device
//! (10.0.2.2/16) that the VMs sit behind (10.0.2.15 onward), runs itself
//! inside it, and removes it at the end. The Linux servers listen on the
//! namespace's loopback. The load generator is closed-loop: `--clients`
//! threads, each sending a request, waiting for the whole page, and sending
//! the next, over keep-alive connections (a thread keeps at most 32 open).

#[path = "web_load/mod.rs"]
#[allow(dead_code)] // each web benchmark uses its own part of it
mod web_load;

use anyhow::{Result, bail};
use denali_abi::boot::{BundleSpec, build_bundle};
use denali_abi::net::Ipv4Config;
use denali_cli::{image, kernel};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};
use web_load::{Servers, Spread, flag, load, start_servers, vm_targets, warm_up};

const NAMESPACE: &str = "denali-bench";
/// Set inside the namespace: the images' paths (built outside it, where
/// crates.io can be reached), in the order of `--templates`.
const IMAGE_VAR: &str = "DENALI_BENCH_IMAGE";
const NATIVE_BASE_PORT: u16 = 20_000;
const PAGE_SIZE: usize = 2048;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("--serve-denali") => serve_denali(args[1].parse()?, &args[2]),
        Some("--serve-native") => serve_native(args[1].parse()?),
        _ => match std::env::var_os(IMAGE_VAR) {
            None => {
                let images: Vec<_> =
                    templates(&args).iter().map(|t| web_load::build_template_image(t)).collect::<Result<_>>()?;
                web_load::run_in_namespace(NAMESPACE, IMAGE_VAR, &std::env::join_paths(images)?, &args)
            }
            Some(images) => benchmark(&args, &std::env::split_paths(&images).collect::<Vec<_>>()),
        },
    }
}

/// The templates `--templates` names (default: `http`).
fn templates(args: &[String]) -> Vec<String> {
    flag(args, "--templates", "http".to_string()).split(',').map(|t| t.trim().to_string()).collect()
}

/// What a template's service prints once it serves.
fn ready_line(template: &str) -> &'static str {
    if template == "http" { "http: serving" } else { ": listening on" }
}

fn benchmark(args: &[String], images: &[std::path::PathBuf]) -> Result<()> {
    let counts = web_load::counts(&flag(args, "--counts", "1,10,100,1000".to_string()))?;
    let secs: f64 = flag(args, "--secs", 5.0);
    let clients: usize = flag(args, "--clients", 8);
    let templates = templates(args);
    println!("{clients} closed-loop clients, {secs} s per figure; latency in ms");
    println!(
        "{:>6}  {:<8} {:<8} | {:>9} {:>7} {:>7} {:>6} | {:>9} {:>7} {:>7}",
        "VMs", "spread", "service", "denali/s", "p50", "p99", "errors", "linux/s", "p50", "p99"
    );
    let spreads = [Spread::Uniform, Spread::Zipf(0.8)];
    for &n in &counts {
        let denali_targets = vm_targets(n);
        let native_targets: Vec<SocketAddr> =
            (0..n).map(|i| SocketAddr::from((Ipv4Addr::LOCALHOST, NATIVE_BASE_PORT + i as u16))).collect();
        // rows[template][spread]
        let mut rows = Vec::new();
        for (template, image) in templates.iter().zip(images) {
            let serve = ["--serve-denali".to_string(), n.to_string(), image.to_string_lossy().into_owned()];
            let _servers = start_servers(&serve, n, ready_line(template))?;
            let mut figures = Vec::new();
            for spread in spreads {
                warm_up(&denali_targets);
                figures.push(load(&denali_targets, spread, clients, secs, u64::MAX));
            }
            rows.push(figures);
        }
        let _servers = start_native(n)?;
        for (s, spread) in spreads.into_iter().enumerate() {
            warm_up(&native_targets);
            let native = load(&native_targets, spread, clients, secs, u64::MAX);
            for (template, figures) in templates.iter().zip(&rows) {
                let denali = &figures[s];
                println!(
                    "{n:>6}  {:<8} {template:<8} | {:>9.0} {:>7.2} {:>7.2} {:>6} | {:>9.0} {:>7.2} {:>7.2}",
                    spread.name(),
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
