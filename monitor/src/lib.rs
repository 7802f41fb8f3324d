//! The Denali KVM monitor: one KVM VM with one vCPU that runs the isolation
//! kernel, which in turn runs every Denali VM of the boot bundle.
//!
//! The monitor loads the kernel ELF, builds the long-mode page tables and
//! the [`BootInfo`](denali_abi::boot::BootInfo), places the bundle in guest
//! memory, enters the kernel in 64-bit mode, and then serves the kernel's
//! few devices (UART, exit port, the virtio NIC) until the run ends. Denali VMs never exit to
//! the monitor: their hypercalls are handled inside the guest.

mod counters;
mod debug;
mod devices;
mod disk;
mod error;
mod layout;
pub mod net;
mod progress;
mod vcpu;
mod virtio;

pub use counters::LiveCounters;
pub use error::Error;

use std::io::Write;
use std::path::{Path, PathBuf};

/// Default guest RAM.
pub const DEFAULT_MEM_SIZE: u64 = 512 << 20;

/// What to boot.
#[derive(Debug, Clone)]
pub struct Config {
    /// The isolation kernel's ELF file.
    pub kernel: PathBuf,
    /// The boot bundle (see `denali_abi::boot::Bundle`).
    pub bundle: Vec<u8>,
    /// Guest RAM in bytes.
    pub mem_size: u64,
    /// Let the kernel report its progress, not only problems.
    pub verbose: bool,
    /// Let the kernel print per-VM accounting when the run ends.
    pub stats: bool,
    /// Stop every VM still running after this long.
    pub time_limit: Option<std::time::Duration>,
    /// The machine's NIC and where it leads; `None`: no NIC (VMs talk only
    /// to each other).
    pub net: Option<net::NetConfig>,
    /// The file behind the VMs' disk (a Denali disk: see
    /// `denali_abi::disk`); `None`: no disk.
    pub disk: Option<PathBuf>,
    /// Read errors the disk makes up, to test how the kernel copes with a
    /// failing disk; `None` (the default): the disk fails only when the
    /// file does.
    pub disk_faults: Option<DiskFaults>,
    /// Where the kernel's swap counters can be read while the VMs run;
    /// `None` (the default): nobody reads them.
    pub counters: Option<LiveCounters>,
    /// Each bundle image's ELF, in bundle order, from which a crashed VM's
    /// backtrace gets its names and lines; an image without one (or past
    /// the end) gets raw addresses.
    pub elves: Vec<Option<PathBuf>>,
    /// Where a VM that crashes leaves an ELF core file (`core.vmN`);
    /// `None` (the default): nowhere.
    pub core_dir: Option<PathBuf>,
    /// Serve gdb for one VM; `None` (the default): no debugger.
    pub gdb: Option<GdbConfig>,
}

/// Where gdb connects, and the VM it debugs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GdbConfig {
    /// The monitor listens on 127.0.0.1 at this port.
    pub port: u16,
    /// The VM gdb debugs: it stops at its entry point until gdb connects.
    pub vm: u32,
}

/// Read errors a run's disk makes up (see [`Config::disk_faults`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskFaults {
    /// Only reads that reach this sector or beyond fail...
    pub from_sector: u64,
    /// ...this many of them, the first ones; later reads succeed.
    pub reads: u32,
}

impl Config {
    /// A configuration with the default memory size.
    pub fn new(kernel: &Path, bundle: Vec<u8>) -> Self {
        Config {
            kernel: kernel.to_path_buf(),
            bundle,
            mem_size: DEFAULT_MEM_SIZE,
            verbose: false,
            stats: false,
            time_limit: None,
            net: None,
            disk: None,
            disk_faults: None,
            counters: None,
            elves: Vec::new(),
            core_dir: None,
            gdb: None,
        }
    }
}

/// A console that keeps what the kernel printed, for callers that want the
/// text rather than a terminal (tests, benchmarks).
#[derive(Clone, Debug, Default)]
pub struct CapturedConsole(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl CapturedConsole {
    /// Everything written so far, as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }
}

impl Write for CapturedConsole {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Checks that `/dev/kvm` can be opened, so a missing or forbidden KVM is
/// reported before anything is built.
pub fn check_kvm() -> Result<(), Error> {
    vcpu::open_kvm().map(drop)
}

/// Boots the kernel and runs it to the end, writing the console to
/// `console`. Returns the status the kernel reported through the exit port.
pub fn run(config: &Config, console: Box<dyn Write + Send>) -> Result<i32, Error> {
    let machine = vcpu::Machine::create(config)?;
    machine.run(console)
}
