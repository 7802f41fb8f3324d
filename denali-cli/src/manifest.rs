//! `Denali.toml`: how a service wants to be run, beside its `Cargo.toml`.
//!
//! ```toml
//! instances = 100        # VMs to boot from the image (default 1)
//! memory = "4 MiB"       # each VM's flat address space (default 4 MiB)
//! args = "--verbose"     # handed to every VM on its info page
//! ```
//!
//! Every value is checked here, and a bad one is refused with a sentence
//! that names the key.

use anyhow::{Context, Result, bail};
use denali_abi::info::ARGS_MAX;
use denali_abi::layout::{DEFAULT_MEM_SIZE, MAX_MEM_SIZE, MIN_MEM_SIZE, PAGE_SIZE};
use serde::Deserialize;
use std::path::Path;

/// Most VMs one run may ask for.
pub const MAX_INSTANCES: u32 = 100_000;

/// The manifest's file name.
pub const FILE_NAME: &str = "Denali.toml";

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Raw {
    instances: Option<i64>,
    memory: Option<Size>,
    args: Option<String>,
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
    /// Arguments for every VM.
    pub args: String,
}

impl Default for Manifest {
    fn default() -> Self {
        Manifest { instances: 1, memory: DEFAULT_MEM_SIZE, args: String::new() }
    }
}

impl Manifest {
    /// Reads `Denali.toml` in `dir`, or the defaults if there is none.
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join(FILE_NAME);
        match std::fs::read_to_string(&path) {
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
        }
        if let Some(args) = raw.args {
            if args.len() > ARGS_MAX {
                bail!("`args` is {} bytes long; at most {ARGS_MAX} fit on a VM's info page", args.len());
            }
            manifest.args = args;
        }
        Ok(manifest)
    }
}

/// Checks an instance count from `what` (a key or a flag).
pub fn check_instances(n: i64, what: &str) -> Result<u32> {
    if n < 1 || n > i64::from(MAX_INSTANCES) {
        bail!("{what} must be between 1 and {MAX_INSTANCES} (got {n})");
    }
    Ok(n as u32)
}

fn parse_memory(size: &Size) -> Result<u64> {
    let bytes = match size {
        Size::Bytes(n) => u64::try_from(*n).ok(),
        Size::Text(text) => parse_size(text),
    };
    let shown = match size {
        Size::Bytes(n) => n.to_string(),
        Size::Text(t) => format!("{t:?}"),
    };
    let Some(bytes) = bytes else {
        bail!("`memory` = {shown} is not a size: write it like \"4 MiB\", \"512 KiB\" or a number of bytes");
    };
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
        assert_eq!(m, Manifest { instances: 3, memory: 8 << 20, args: "--fast".into() });
        assert_eq!(Manifest::parse("").unwrap(), Manifest::default());
        assert_eq!(Manifest::parse("memory = 2097152").unwrap().memory, 2 << 20);
    }

    #[test]
    fn bad_values_name_their_key() {
        for (text, words) in [
            ("instances = 0", "`instances` must be between 1 and 100000 (got 0)"),
            ("instances = -4", "`instances` must be between"),
            ("instances = \"many\"", "instances"),
            ("memory = \"3 parsecs\"", "`memory` = \"3 parsecs\" is not a size"),
            ("memory = \"12 KiB\"", "`memory` = \"12 KiB\" is out of range"),
            ("memory = \"1000000 GiB\"", "out of range"),
            ("memory = 4097", "out of range"),
            ("colour = \"blue\"", "unknown field `colour`"),
            ("instances = [", "instances"),
        ] {
            let err = format!("{:#}", Manifest::parse(text).unwrap_err());
            assert!(err.contains(words), "{text}: {err}");
        }
        let long = format!("args = \"{}\"", "x".repeat(ARGS_MAX + 1));
        assert!(Manifest::parse(&long).unwrap_err().to_string().contains("`args` is 1025 bytes long"));
    }
}
