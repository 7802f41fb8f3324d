//! `cargo denali run`: boot images on the isolation kernel under KVM and
//! exit with the service's status.

use crate::build::{self, BuildOptions};
use crate::manifest::Manifest;
use crate::{image, kernel};
use anyhow::{Context, Result, bail};
use denali_abi::boot::{BundleSpec, build_bundle};
use denali_abi::net::Ipv4Config;
use denali_monitor::net::{NetConfig, PortForward};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// What to run.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Prebuilt images; empty means build the service here and run it.
    pub images: Vec<PathBuf>,
    /// How to build when `images` is empty.
    pub build: BuildOptions,
    /// Guest RAM for the isolation kernel, in bytes.
    pub memory: Option<u64>,
    /// VMs per image, overriding `Denali.toml`.
    pub instances: Option<u32>,
    /// Print per-VM accounting when the run ends.
    pub stats: bool,
    /// Stop every VM still running after this long.
    pub time_limit: Option<std::time::Duration>,
    /// `(host port, guest port)` forwards from 127.0.0.1 to the first VM.
    pub forwards: Vec<(u16, u16)>,
    /// The TAP device to connect the NIC to.
    pub tap: Option<String>,
    /// Boot a bare-metal disk image under QEMU instead of our monitor.
    pub qemu: bool,
    /// The VMs' disk file, instead of the one beside the first image.
    pub disk: Option<PathBuf>,
    /// Bytes of swap area on the disk (0: none).
    pub swap: u64,
    /// Where VMs that crash leave core files.
    pub core_dir: Option<PathBuf>,
    /// Serve gdb for one VM.
    pub gdb: Option<denali_monitor::GdbConfig>,
}

/// Parses `--net user|tap=NAME` (given `-p` forwards or not) into the TAP
/// device's name, if any.
pub fn parse_net(net: Option<&str>, forwarding: bool) -> Result<Option<String>> {
    match net {
        None | Some("user") => Ok(None),
        Some(spec) => match spec.strip_prefix("tap=") {
            Some(name) if forwarding => {
                bail!(
                    "-p forwards ports through user-mode networking; with --net tap={name} reach each VM at its own address instead"
                )
            }
            Some(name) if !name.is_empty() => Ok(Some(name.to_string())),
            _ => bail!("`--net {spec}` is not a network: write --net user or --net tap=NAME"),
        },
    }
}

/// Parses `-p HOST:GUEST`.
pub fn parse_forward(text: &str) -> Result<(u16, u16)> {
    let ports =
        text.split_once(':').and_then(|(h, g)| Some((h.trim().parse::<u16>().ok()?, g.trim().parse::<u16>().ok()?)));
    match ports {
        Some((host, guest)) if host != 0 && guest != 0 => Ok((host, guest)),
        _ => bail!("`-p {text}` is not a port forward: write it as HOST:GUEST with ports 1-65535, like -p 8080:80"),
    }
}

/// The NIC's configuration: the TAP device, or user-mode networking for
/// `forwards` to the first VM of the first service (whose network is
/// `network`), or no NIC.
fn nic_config(network: &Ipv4Config, forwards: &[(u16, u16)], tap: Option<&str>) -> Result<Option<NetConfig>> {
    if let Some(name) = tap {
        return Ok(Some(NetConfig::Tap(name.to_string())));
    }
    if forwards.is_empty() {
        return Ok(None);
    }
    if network.gateway == [0; 4] {
        bail!("-p needs a gateway for the VMs to answer through: add `gateway` under [network] in Denali.toml");
    }
    let guest_ip = Ipv4Addr::from(network.address);
    let forwards =
        forwards.iter().map(|&(host_port, guest_port)| PortForward { host_port, guest_ip, guest_port }).collect();
    Ok(Some(NetConfig::User { gateway: Ipv4Addr::from(network.gateway), prefix_len: network.prefix_len, forwards }))
}

/// One image to boot, and how.
pub struct Service {
    /// The image's name (its file stem).
    pub name: String,
    /// The `.dvm` image.
    pub image: Vec<u8>,
    /// How to boot it.
    pub manifest: Manifest,
    /// Where its VMs' disk is kept unless `--disk` says otherwise: beside
    /// the image.
    pub disk_file: PathBuf,
    /// The ELF the image was made from, kept beside it by the build, which
    /// names the functions of a crash's backtrace.
    pub elf: Option<PathBuf>,
}

/// The images to boot: built here (with their `Denali.toml`), or prebuilt
/// (with the `<name>.toml` the build kept beside each, else the defaults).
fn services(options: &RunOptions) -> Result<Vec<Service>> {
    let images: Vec<(PathBuf, Manifest)> = if options.images.is_empty() {
        let built = build::build(&options.build)?;
        if built.len() > 1 {
            let names: Vec<_> = built.iter().map(|b| b.name.as_str()).collect();
            bail!("the package has several binaries ({}): pick one with --bin NAME", names.join(", "));
        }
        built.into_iter().map(|b| (b.dvm, b.manifest)).collect()
    } else {
        let kept = |p: &PathBuf| {
            let path = p.with_extension("toml");
            Manifest::load_file(&path).with_context(|| format!("the manifest kept beside {} is not valid", p.display()))
        };
        options.images.iter().map(|p| Ok((p.clone(), kept(p)?))).collect::<Result<_>>()?
    };
    images
        .into_iter()
        .map(|(path, mut manifest)| {
            if let Some(n) = options.instances {
                manifest.instances = n;
            }
            Service::load(&path, manifest)
        })
        .collect()
}

impl Service {
    /// The image at `dvm` (named after its file), booted as `manifest`
    /// says, with the disk file and ELF kept beside it.
    pub fn load(dvm: &Path, manifest: Manifest) -> Result<Service> {
        let name = dvm.file_stem().map_or_else(|| "service".into(), |s| s.to_string_lossy().into_owned());
        let elf = Some(image::elf_beside(dvm)).filter(|elf| elf.is_file());
        Ok(Service { name, image: image::read_dvm(dvm)?, manifest, disk_file: dvm.with_extension("disk"), elf })
    }
}

/// Each service's first address: its manifest's, or else the next range
/// of the default network that no other service has, so that several
/// images never share one.
fn assign_networks(services: &[Service]) -> Result<Vec<Ipv4Config>> {
    // Addresses the manifests name are taken first; default ranges go
    // around them.
    let mut taken: Vec<(u32, u32, &str)> = Vec::new();
    for service in services {
        if let Some(network) = &service.manifest.network {
            take(&mut taken, network, service)?;
        }
    }
    let mut next_default = 0u32;
    let mut networks = Vec::new();
    for service in services {
        let network = match service.manifest.network {
            Some(network) => network,
            None => {
                let free = free_default_range(&taken, &mut next_default, service.manifest.instances);
                // None free: taking the start again says why.
                let network = free.unwrap_or(Ipv4Config::DEFAULT);
                take(&mut taken, &network, service)?;
                network
            }
        };
        networks.push(network);
    }
    Ok(networks)
}

/// The first range of the default network, from address `*next` on, for
/// `instances` VMs that no service in `taken` holds.
fn free_default_range(taken: &[(u32, u32, &str)], next: &mut u32, instances: u32) -> Option<Ipv4Config> {
    while let Some(candidate) = Ipv4Config::DEFAULT.nth(*next) {
        *next = next.saturating_add(instances);
        if overlap(taken, &candidate, instances).is_none() {
            return Some(candidate);
        }
    }
    None
}

/// The addresses `instances` VMs take from `network`.
fn span(network: &Ipv4Config, instances: u32) -> (u32, u32) {
    let first = u32::from_be_bytes(network.address);
    (first, first + instances.saturating_sub(1))
}

/// The service already holding one of the addresses `instances` VMs would
/// take from `network`.
fn overlap<'a>(taken: &[(u32, u32, &'a str)], network: &Ipv4Config, instances: u32) -> Option<&'a str> {
    let (first, last) = span(network, instances);
    taken.iter().find(|(a, b, _)| first <= *b && *a <= last).map(|(_, _, name)| *name)
}

/// Takes `service`'s addresses from `network`, or says why they cannot be.
fn take<'a>(taken: &mut Vec<(u32, u32, &'a str)>, network: &Ipv4Config, service: &'a Service) -> Result<()> {
    let instances = service.manifest.instances;
    crate::manifest::check_room(network, instances).with_context(|| format!("cannot address {}", service.name))?;
    if let Some(other) = overlap(taken, network, instances) {
        bail!(
            "{} and {other} would share IPv4 addresses: give one of them another `[network] ip` in its Denali.toml",
            service.name
        );
    }
    let (first, last) = span(network, instances);
    taken.push((first, last, &service.name));
    Ok(())
}

/// The boot bundle for `services`, and each service's first address.
pub fn bundle(services: &[Service]) -> Result<(Vec<u8>, Vec<Ipv4Config>)> {
    let networks = assign_networks(services)?;
    let command_lines = services.iter().map(|s| s.manifest.command_line(&s.name)).collect::<Result<Vec<String>>>()?;
    let entries: Vec<BundleSpec<'_>> = services
        .iter()
        .zip(&networks)
        .zip(&command_lines)
        .map(|((s, &ipv4), command_line)| BundleSpec {
            name: &s.name,
            instances: s.manifest.instances,
            image: &s.image,
            args: command_line,
            ipv4,
            disk_sectors: s.manifest.disk / denali_abi::disk::SECTOR_SIZE as u64,
        })
        .collect();
    Ok((build_bundle(&entries), networks))
}

/// Checks that `gdb` names a VM of `services`, and says how to connect.
fn gdb_target(services: &[Service], gdb: denali_monitor::GdbConfig) -> Result<denali_monitor::GdbConfig> {
    let mut first = 0u64;
    for service in services {
        let vms = first..first + u64::from(service.manifest.instances);
        if vms.contains(&u64::from(gdb.vm)) {
            let elf = service.elf.as_ref().map_or_else(|| format!("{}.elf", service.name), |e| e.display().to_string());
            eprintln!(
                "denali: vm {} ({}) waits at its entry point for gdb: gdb {elf} -ex 'target remote 127.0.0.1:{}'",
                gdb.vm, service.name, gdb.port
            );
            return Ok(gdb);
        }
        first = vms.end;
    }
    bail!("--gdb-vm {} names no VM: this run has {first} (0 to {})", gdb.vm, first.saturating_sub(1))
}

/// What `-v` and `--stats` say on a host whose `/dev/kvm` is PVM.
pub const PVM_NOTE: &str = "note: /dev/kvm here is KVM's PVM flavour (module kvm_pvm), which runs the isolation kernel in an instruction emulator at about 1.2 µs an instruction (a hypercall costs about 0.2 ms, making a VM about 2 ms); `cargo denali run --qemu` boots the same service through PVH under QEMU's emulator, where the kernel runs far faster and the service's own code slower.";

/// Boots the images (each instance its own VM) and returns the run's exit
/// status.
pub fn run(options: &RunOptions) -> Result<i32> {
    if options.qemu {
        if options.core_dir.is_some() || options.gdb.is_some() {
            bail!("--core-dir and --gdb need our KVM monitor, which reads the VM's memory: drop --qemu");
        }
        return crate::bare_metal::run(options);
    }
    denali_monitor::check_kvm()?;
    if (options.stats || options.build.verbose) && crate::bare_metal::host_is_pvm() {
        eprintln!("{PVM_NOTE}");
    }
    let services = services(options)?;
    let kernel = kernel::kernel_elf()?;
    let (bundle, networks) = bundle(&services)?;
    let net = nic_config(&networks[0], &options.forwards, options.tap.as_deref())?;
    let mut config = denali_monitor::Config::new(&kernel, bundle);
    config.verbose = options.build.verbose;
    config.stats = options.stats;
    config.time_limit = options.time_limit;
    config.net = net;
    config.disk = crate::vm_disk::for_run(&services, options.disk.as_deref(), options.swap)?;
    config.elves = services.iter().map(|s| s.elf.clone()).collect();
    if let Some(dir) = &options.core_dir {
        std::fs::create_dir_all(dir).map_err(|e| {
            anyhow::anyhow!(
                "cannot use {} for core files ({e}): name a directory you can write with --core-dir",
                dir.display()
            )
        })?;
        config.core_dir = Some(dir.clone());
    }
    if let Some(gdb) = options.gdb {
        config.gdb = Some(gdb_target(&services, gdb)?);
    }
    if let Some(memory) = options.memory {
        config.mem_size = memory;
    }
    denali_monitor::run(&config, Box::new(std::io::stdout())).context("the run failed")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(name: &str, instances: u32, network: Option<&str>) -> Service {
        let mut text = format!("instances = {instances}\n");
        if let Some(ip) = network {
            text += &format!("[network]\nip = \"{ip}\"\ngateway = \"10.0.2.2\"\n");
        }
        let manifest = Manifest::parse(&text).unwrap();
        Service { name: name.into(), image: Vec::new(), manifest, disk_file: PathBuf::new(), elf: None }
    }

    fn first_addresses(services: &[Service]) -> Result<Vec<Ipv4Addr>> {
        Ok(assign_networks(services)?.iter().map(|n| Ipv4Addr::from(n.address)).collect())
    }

    #[test]
    fn default_addresses_go_around_the_ones_manifests_name() {
        let services = [service("client", 1, None), service("web", 2, Some("10.0.2.15/24")), service("b", 1, None)];
        let expected: Vec<Ipv4Addr> = ["10.0.2.17", "10.0.2.15", "10.0.2.18"].map(|a| a.parse().unwrap()).into();
        assert_eq!(first_addresses(&services).unwrap(), expected);
    }

    #[test]
    fn services_that_name_the_same_addresses_are_refused() {
        let services = [service("a", 2, Some("10.0.2.15/24")), service("b", 1, Some("10.0.2.16/24"))];
        let error = first_addresses(&services).unwrap_err().to_string();
        assert!(error.contains("b and a would share IPv4 addresses"), "{error}");
    }
}
