//! `cargo denali`: the command line.

use clap::{Args, Parser, Subcommand};
use denali_cli::build::{self, BuildOptions};
use denali_cli::run::{self, RunOptions};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(bin_name = "cargo", version, about)]
enum Cargo {
    /// Build and run Denali services.
    Denali(Denali),
}

#[derive(Args)]
#[command(version, about = "Build Denali services and boot them on the Denali isolation kernel")]
struct Denali {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone, Default)]
struct BuildArgs {
    /// Build with the release profile.
    #[arg(long, short)]
    release: bool,
    /// Path to the service's Cargo.toml.
    #[arg(long)]
    manifest_path: Option<PathBuf>,
    /// Build only this binary (repeatable).
    #[arg(long = "bin")]
    bins: Vec<String>,
    /// Show the nested cargo command.
    #[arg(long, short)]
    verbose: bool,
}

impl From<BuildArgs> for BuildOptions {
    fn from(a: BuildArgs) -> Self {
        BuildOptions { manifest_path: a.manifest_path, release: a.release, bins: a.bins, verbose: a.verbose }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Create a new service from a template.
    New {
        /// The service's name (also its directory).
        name: String,
        /// The template to start from: hello, http (a web server), echo (TCP
        /// echo), disk (counts its boots on its own disk) or std (an
        /// ordinary Rust program using the standard library).
        #[arg(long, default_value = "hello")]
        template: String,
    },
    /// Compile the service into <target-dir>/denali/<profile>/<name>.dvm.
    Build {
        #[command(flatten)]
        build: BuildArgs,
        /// Also write <name>.img: a UEFI disk image (GPT, FAT EFI partition)
        /// of the loader, the isolation kernel and the service, for bare metal.
        #[arg(long)]
        bare_metal: bool,
    },
    /// Boot the service (or the given .dvm images, each in its own VM) and
    /// exit with its status.
    Run {
        /// Prebuilt .dvm images to boot instead of building.
        images: Vec<PathBuf>,
        #[command(flatten)]
        build: BuildArgs,
        /// Memory for the isolation kernel, in MiB (our monitor: 512 by
        /// default; --qemu: the machine's, 1024 by default).
        #[arg(long, value_name = "MIB")]
        mem: Option<u64>,
        /// VMs to boot from each image (overrides `instances` in Denali.toml).
        #[arg(long, value_name = "N", allow_negative_numbers = true)]
        instances: Option<i64>,
        /// Print each VM's CPU time, resident memory, hypercalls, wake-ups,
        /// disk traffic and swapping, and the kernel's totals, when the run
        /// ends (past 256 VMs: their mean and maximum; with -v every VM).
        #[arg(long)]
        stats: bool,
        /// Stop every VM still running after this many seconds (their status
        /// is 124).
        #[arg(long, value_name = "SECS")]
        timeout: Option<f64>,
        /// Forward 127.0.0.1:HOST on this machine to port GUEST of the first
        /// VM, through user-mode networking (no root needed); repeatable.
        #[arg(short = 'p', long = "publish", value_name = "HOST:GUEST")]
        publish: Vec<String>,
        /// Connect the machine's NIC: `user` (user-mode networking, implied
        /// by -p) or `tap=NAME` (the TAP device NAME; every VM answers at its
        /// own address; needs root or CAP_NET_ADMIN).
        #[arg(long, value_name = "user|tap=NAME")]
        net: Option<String>,
        /// Boot under qemu-system-x86_64 instead of our KVM monitor: the
        /// service built here through PVH (the kernel and its bundle, no
        /// firmware), or the .img given with OVMF (KVM acceleration where
        /// plain KVM is present, else emulation).
        #[arg(long)]
        qemu: bool,
        /// The file that holds the VMs' disks (`[disk]` in Denali.toml);
        /// default: beside the image, `<name>.disk`.
        #[arg(long, value_name = "FILE")]
        disk: Option<PathBuf>,
        /// Give the disk MIB of swap area: when memory runs low, idle VMs
        /// are written there and read back when they wake.
        #[arg(long, value_name = "MIB")]
        swap: Option<u64>,
        /// Write an ELF core file (`core.vmN`, for `gdb NAME.elf core.vmN`)
        /// of each VM that faults or panics into DIR.
        #[arg(long, value_name = "DIR")]
        core_dir: Option<PathBuf>,
        /// Serve gdb on 127.0.0.1:PORT: the debugged VM stops at its entry
        /// point until gdb connects (`target remote :PORT`); while it is
        /// stopped, every VM waits.
        #[arg(long, value_name = "PORT", value_parser = gdb_port)]
        gdb: Option<u16>,
        /// The VM gdb debugs (default: VM 0).
        #[arg(long, value_name = "N", requires = "gdb")]
        gdb_vm: Option<u32>,
    },
}

/// `--gdb`'s port: not 0, which would listen where gdb cannot know.
fn gdb_port(text: &str) -> Result<u16, String> {
    match text.parse::<u16>() {
        Ok(0) => Err("port 0 would let the system pick one gdb cannot know: name a port, e.g. --gdb 1234".into()),
        Ok(port) => Ok(port),
        Err(_) => Err(format!("{text} is not a port number: name one from 1 to 65535, e.g. --gdb 1234")),
    }
}

/// Says what was built, and how big.
fn report_built(paths: &[PathBuf]) -> i32 {
    for path in paths {
        let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        eprintln!("       Built {} ({} KiB)", path.display(), size.div_ceil(1024));
    }
    0
}

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().collect();
    // Run as `cargo-denali build` as well as `cargo denali build`.
    if args.get(1).map(String::as_str) != Some("denali") {
        args.insert(1, "denali".into());
    }
    let Cargo::Denali(cli) = Cargo::parse_from(args);
    let result = match cli.command {
        Command::New { name, template } => std::env::current_dir()
            .map_err(anyhow::Error::from)
            .and_then(|cwd| denali_cli::new::new(&cwd, &name, &template))
            .map(|dir| {
                eprintln!("     Created service `{name}` in {}", dir.display());
                0
            }),
        Command::Build { build, bare_metal: true } => {
            denali_cli::bare_metal::build_images(&build.into(), Default::default())
                .map(|images| report_built(&images.into_iter().map(|i| i.path).collect::<Vec<_>>()))
        }
        Command::Build { build, bare_metal: false } => {
            build::build(&build.into()).map(|built| report_built(&built.into_iter().map(|b| b.dvm).collect::<Vec<_>>()))
        }
        Command::Run {
            images,
            build,
            mem,
            instances,
            stats,
            timeout,
            publish,
            net,
            qemu,
            disk,
            swap,
            core_dir,
            gdb,
            gdb_vm,
        } => {
            let time_limit = match timeout {
                Some(secs) if !(secs > 0.0 && secs < 1e9) => {
                    Err(anyhow::anyhow!("--timeout must be a positive number of seconds (got {secs})"))
                }
                other => Ok(other.map(std::time::Duration::from_secs_f64)),
            };
            let instances = instances.map(|n| denali_cli::manifest::check_instances(n, "--instances")).transpose();
            instances.and_then(|instances| {
                let memory = mem.map(|m| m << 20);
                let forwards = publish.iter().map(|p| run::parse_forward(p)).collect::<anyhow::Result<Vec<_>>>()?;
                let tap = run::parse_net(net.as_deref(), !forwards.is_empty())?;
                run::run(&RunOptions {
                    images,
                    build: build.into(),
                    memory,
                    instances,
                    stats,
                    time_limit: time_limit?,
                    forwards,
                    tap,
                    qemu,
                    disk,
                    swap: swap.map_or(0, |mib| mib.saturating_mul(1 << 20)),
                    core_dir,
                    gdb: gdb.map(|port| denali_monitor::GdbConfig { port, vm: gdb_vm.unwrap_or(0) }),
                })
            })
        }
    };
    match result {
        Ok(status) => ExitCode::from(status as u8),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn gdb_needs_a_port_it_can_be_told() {
        assert_eq!(super::gdb_port("1234"), Ok(1234));
        assert!(super::gdb_port("0").unwrap_err().contains("name a port"));
        assert!(super::gdb_port("65536").unwrap_err().contains("not a port number"));
    }
}
