//! `Denali.toml`: how a service wants to be run, beside its `Cargo.toml`.
//!
//! ```toml
//! instances = 100        # VMs to boot from the image (default 1)
//! memory = "4 MiB"       # each VM's flat address space (default 4 MiB)
//! args = "--verbose"     # handed to every VM on its info page (std: `env::args` after the name)
//!
//! [env]
//! RUST_LOG = "info"      # a std service's `std::env::var`s
//!
//! [network]
//! ip = "10.0.2.15/24"    # the first instance's address; instance i takes the i-th after it
//! gateway = "10.0.2.2"   # where frames for other networks go
//!
//! [disk]
//! size = "1 MiB"         # each VM's own disk (`denali::disk`), kept across runs
//! ```
//!
//! Every value is checked here, and a bad one is refused with a sentence
//! that names the key.

use anyhow::{Context, Result, bail};
use denali_abi::info::{ARGS_MAX, CommandLine};
use denali_abi::layout::{DEFAULT_MEM_SIZE, MAX_MEM_SIZE, MIN_MEM_SIZE, PAGE_SIZE};
use denali_abi::net::Ipv4Config;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;

/// Most VMs one run may ask for.
pub const MAX_INSTANCES: u32 = 1_000_000;

/// The manifest's file name.
pub const FILE_NAME: &str = "Denali.toml";

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Raw {
    instances: Option<i64>,
    memory: Option<Size>,
    args: Option<String>,
    env: Option<BTreeMap<String, String>>,
    network: Option<RawNetwork>,
    disk: Option<RawDisk>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDisk {
    size: Size,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNetwork {
    ip: String,
    gateway: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Size {
    Bytes(i64),
    Text(String),
}

/// A validated manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    /// VMs to boot.
    pub instances: u32,
    /// Flat address space of each VM, in bytes.
    pub memory: u64,
    /// Whether `memory` came from the manifest (not the default).
    pub memory_set: bool,
    /// Arguments for every VM.
    pub args: String,
    /// Environment variables for every VM (`[env]`).
    pub env: BTreeMap<String, String>,
    /// The first VM's IPv4 configuration, if the manifest sets one (the
    /// runner picks an unused range of the default network otherwise).
    pub network: Option<Ipv4Config>,
    /// Bytes of disk each VM gets (0: none).
    pub disk: u64,
}

/// Largest disk one VM may ask for.
pub const MAX_DISK_SIZE: u64 = 64 << 30;

impl Default for Manifest {
    fn default() -> Self {
        Manifest {
            instances: 1,
            memory: DEFAULT_MEM_SIZE,
            memory_set: false,
            args: String::new(),
            env: BTreeMap::new(),
            network: None,
            disk: 0,
        }
    }
}

impl Manifest {
    /// Reads `Denali.toml` in `dir`, or the defaults if there is none.
    pub fn load(dir: &Path) -> Result<Self> {
        Self::load_file(&dir.join(FILE_NAME))
    }

    /// Reads the manifest at `path`, or the defaults if there is none.
    pub fn load_file(path: &Path) -> Result<Self> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text).with_context(|| format!("{} is not valid", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    /// Parses and checks a manifest's text.
    pub fn parse(text: &str) -> Result<Self> {
        let raw: Raw = toml::from_str(text).map_err(|e| anyhow::anyhow!("{}", e.to_string().trim_end()))?;
        let mut manifest = Manifest::default();
        if let Some(n) = raw.instances {
            manifest.instances = check_instances(n, "`instances`")?;
        }
        if let Some(size) = raw.memory {
            manifest.memory = parse_memory(&size)?;
            manifest.memory_set = true;
        }
        if let Some(args) = raw.args {
            if args.len() > ARGS_MAX {
                bail!("`args` is {} bytes long; at most {ARGS_MAX} fit on a VM's info page", args.len());
            }
            manifest.args = args;
        }
        if let Some(env) = raw.env {
            manifest.env = env;
            // Checked with a placeholder name: the real one only changes
            // the length, which `command_line` checks again.
            manifest.command_line("")?;
        }
        if let Some(network) = raw.network {
            let config = parse_network(&network)?;
            check_room(&config, manifest.instances)?;
            manifest.network = Some(config);
        }
        if let Some(disk) = raw.disk {
            manifest.disk = parse_disk(&disk.size)?;
        }
        Ok(manifest)
    }
}

/// Flat memory of a std service whose manifest does not say: std gives
/// each thread a 1 MiB stack, and only the pages a VM touches cost memory.
pub const STD_DEFAULT_MEM_SIZE: u64 = 64 << 20;

impl Manifest {
    /// The flat memory a binary of `kind` gets.
    pub fn memory_for(&self, kind: crate::build::Kind) -> u64 {
        match kind {
            crate::build::Kind::Std if !self.memory_set => STD_DEFAULT_MEM_SIZE,
            _ => self.memory,
        }
    }

    /// The command line on a VM's info page: the arguments, the program's
    /// name and the environment (see [`CommandLine`]).
    pub fn command_line(&self, program: &str) -> Result<String> {
        if let Some(key) = self.env.keys().find(|k| k.is_empty() || k.contains(['=', '\0'])) {
            bail!("the [env] key {key:?} is not a variable name: use one without `=`");
        }
        if self.args.contains('\0') || self.env.values().any(|v| v.contains('\0')) {
            bail!("`args` and [env] values cannot hold a NUL byte");
        }
        let mut out = [0u8; ARGS_MAX];
        let pairs = self.env.iter().map(|(k, v)| (k.as_str(), v.as_str()));
        let Some(len) = CommandLine::encode(&self.args, program, pairs, &mut out) else {
            let wanted = self.args.len()
                + 1
                + program.len()
                + self.env.iter().map(|(k, v)| k.len() + v.len() + 2).sum::<usize>();
            bail!(
                "`args`, the program name and [env] come to {wanted} bytes; at most {ARGS_MAX} fit on a VM's info page: shorten them"
            );
        };
        Ok(String::from_utf8(out[..len].to_vec()).expect("encoded from UTF-8 strings"))
    }
}

/// Checks an instance count from `what` (a key or a flag).
pub fn check_instances(n: i64, what: &str) -> Result<u32> {
    if n < 1 || n > i64::from(MAX_INSTANCES) {
        bail!("{what} must be between 1 and {MAX_INSTANCES} (got {n})");
    }
    Ok(n as u32)
}

/// Checks that `instances` consecutive addresses from `network`'s fit in
/// its subnet.
pub fn check_room(network: &Ipv4Config, instances: u32) -> Result<()> {
    let room = network.room();
    if instances > room {
        let first = Ipv4Addr::from(network.address);
        bail!(
            "{instances} instances need {instances} addresses from {first}/{}, but only {room} fit in that network: \
             give `[network] ip` a shorter prefix or an earlier first address",
            network.prefix_len
        );
    }
    Ok(())
}

fn parse_network(raw: &RawNetwork) -> Result<Ipv4Config> {
    let bad_ip = || {
        anyhow::anyhow!("`network.ip` = {:?} is not an address with a prefix: write it like \"10.0.2.15/24\"", raw.ip)
    };
    let (address, prefix) = raw.ip.split_once('/').ok_or_else(bad_ip)?;
    let address: Ipv4Addr = address.trim().parse().map_err(|_| bad_ip())?;
    let prefix_len: u8 = prefix.trim().parse().map_err(|_| bad_ip())?;
    if !(8..=30).contains(&prefix_len) {
        bail!("`network.ip` = {:?} has prefix /{prefix_len}: use a prefix between /8 and /30", raw.ip);
    }
    if address.is_unspecified() || address.is_broadcast() || address.is_multicast() || address.is_loopback() {
        bail!("`network.ip` = {:?} cannot be a VM's address: pick a unicast address such as 10.0.2.15/24", raw.ip);
    }
    let mut config = Ipv4Config { address: address.octets(), gateway: [0; 4], prefix_len, reserved: [0; 3] };
    let network_bits = u32::from(address) & config.mask();
    if u32::from(address) == network_bits {
        bail!("`network.ip` = {:?} is the network's own address: start one above it", raw.ip);
    }
    if config.room() == 0 {
        bail!("`network.ip` = {:?} is the network's broadcast address: pick one below it", raw.ip);
    }
    if let Some(gateway) = &raw.gateway {
        let parsed: Ipv4Addr = gateway.trim().parse().map_err(|_| {
            anyhow::anyhow!("`network.gateway` = {gateway:?} is not an IPv4 address: write it like \"10.0.2.2\"")
        })?;
        if u32::from(parsed) & config.mask() != network_bits {
            bail!("`network.gateway` = {gateway:?} is outside the network {}: the gateway must be on it", raw.ip);
        }
        config.gateway = parsed.octets();
    }
    Ok(config)
}

/// The bytes a size value of `key` says, and the value as written.
fn size_of_key(size: &Size, key: &str) -> Result<(u64, String)> {
    let bytes = match size {
        Size::Bytes(n) => u64::try_from(*n).ok(),
        Size::Text(text) => parse_size(text),
    };
    let shown = match size {
        Size::Bytes(n) => n.to_string(),
        Size::Text(t) => format!("{t:?}"),
    };
    match bytes {
        Some(bytes) => Ok((bytes, shown)),
        None => bail!("`{key}` = {shown} is not a size: write it like \"4 MiB\", \"512 KiB\" or a number of bytes"),
    }
}

fn parse_disk(size: &Size) -> Result<u64> {
    let (bytes, shown) = size_of_key(size, "disk.size")?;
    if !(PAGE_SIZE..=MAX_DISK_SIZE).contains(&bytes) || bytes % PAGE_SIZE != 0 {
        bail!(
            "`disk.size` = {shown} is out of range: a VM's disk must be between 4 KiB and {} GiB, in whole 4 KiB pages",
            MAX_DISK_SIZE >> 30
        );
    }
    Ok(bytes)
}

fn parse_memory(size: &Size) -> Result<u64> {
    let (bytes, shown) = size_of_key(size, "memory")?;
    if !(MIN_MEM_SIZE..=MAX_MEM_SIZE).contains(&bytes) || bytes % PAGE_SIZE != 0 {
        bail!(
            "`memory` = {shown} is out of range: a VM's memory must be between {} MiB and {} GiB, in whole 4 KiB pages",
            MIN_MEM_SIZE >> 20,
            MAX_MEM_SIZE >> 30
        );
    }
    Ok(bytes)
}

/// "4 MiB", "512KiB", "1 GiB", "4096" (bytes); binary units, and the SI
/// spellings (KB, MB, GB) as their binary namesakes, as cargo does.
fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().ok()?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => return None,
    };
    number.checked_mul(1 << shift)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_manifest_parses() {
        let m = Manifest::parse("instances = 3\nmemory = \"8 MiB\"\nargs = \"--fast\"\n").unwrap();
        let expected =
            Manifest { instances: 3, memory: 8 << 20, memory_set: true, args: "--fast".into(), ..Default::default() };
        assert_eq!(m, expected);
        let m =
            Manifest::parse("instances = 4\n[network]\nip = \"192.168.7.20/24\"\ngateway = \"192.168.7.1\"\n").unwrap();
        let net = m.network.unwrap();
        assert_eq!((net.address, net.gateway, net.prefix_len), ([192, 168, 7, 20], [192, 168, 7, 1], 24));
        assert_eq!(Manifest::parse("").unwrap(), Manifest::default());
        assert_eq!(Manifest::parse("memory = 2097152").unwrap().memory, 2 << 20);
        assert_eq!(Manifest::parse("[disk]\nsize = \"1 MiB\"").unwrap().disk, 1 << 20);
    }

    #[test]
    fn bad_values_name_their_key() {
        for (text, words) in [
            ("instances = 0", "`instances` must be between 1 and 1000000 (got 0)"),
            ("instances = -4", "`instances` must be between"),
            ("instances = \"many\"", "instances"),
            ("memory = \"3 parsecs\"", "`memory` = \"3 parsecs\" is not a size"),
            ("memory = \"12 KiB\"", "`memory` = \"12 KiB\" is out of range"),
            ("memory = \"1000000 GiB\"", "out of range"),
            ("memory = 4097", "out of range"),
            ("colour = \"blue\"", "unknown field `colour`"),
            ("instances = [", "instances"),
            ("[network]\nip = \"10.0.2.15\"", "`network.ip` = \"10.0.2.15\" is not an address with a prefix"),
            ("[network]\nip = \"10.0.2.300/24\"", "is not an address with a prefix"),
            ("[network]\nip = \"10.0.2.15/31\"", "has prefix /31"),
            ("[network]\nip = \"127.0.0.1/8\"", "cannot be a VM's address"),
            ("[network]\nip = \"10.0.2.0/24\"", "the network's own address"),
            ("[network]\nip = \"10.0.2.255/24\"", "broadcast address"),
            ("[network]\nip = \"10.0.2.15/24\"\ngateway = \"10.0.3.1\"", "outside the network"),
            ("[network]\nip = \"10.0.2.15/24\"\ngateway = \"gw\"", "`network.gateway` = \"gw\" is not an IPv4"),
            ("instances = 300\n[network]\nip = \"10.0.2.15/24\"", "300 instances need 300 addresses"),
            ("[network]\nipv6 = \"::1\"", "unknown field `ipv6`"),
            ("[disk]\nsize = \"lots\"", "`disk.size` = \"lots\" is not a size"),
            ("[disk]\nsize = 1000", "`disk.size` = 1000 is out of range"),
            ("[disk]\nsize = \"65 GiB\"", "out of range"),
            ("[disk]\nsize = 0", "out of range"),
            ("[disk]\nfile = \"x\"", "unknown field `file`"),
        ] {
            let err = format!("{:#}", Manifest::parse(text).unwrap_err());
            assert!(err.contains(words), "{text}: {err}");
        }
        let long = format!("args = \"{}\"", "x".repeat(ARGS_MAX + 1));
        assert!(Manifest::parse(&long).unwrap_err().to_string().contains("`args` is 1025 bytes long"));
    }

    #[test]
    fn env_reaches_the_command_line() {
        let m = Manifest::parse("args = \"-v\"\n[env]\nRUST_LOG = \"info\"\nGREETING = \"hi there\"\n").unwrap();
        let line = m.command_line("api").unwrap();
        let parsed = CommandLine::parse(line.as_bytes());
        assert_eq!((parsed.args, parsed.program), (&b"-v"[..], &b"api"[..]));
        assert_eq!(parsed.env().collect::<Vec<_>>(), [&b"GREETING=hi there"[..], b"RUST_LOG=info"]);
    }

    #[test]
    fn bad_env_is_refused_with_a_sentence() {
        let err = Manifest::parse("[env]\n\"A=B\" = \"x\"\n").unwrap_err().to_string();
        assert!(err.contains("is not a variable name"), "{err}");
        let long = format!("[env]\nBIG = \"{}\"\n", "x".repeat(ARGS_MAX));
        let err = Manifest::parse(&long).unwrap_err().to_string();
        assert!(err.contains("at most 1024 fit"), "{err}");
    }
}
