//! `cargo denali run`: boot images on the isolation kernel under KVM and
//! exit with the service's status.

use crate::build::{self, BuildOptions};
use crate::{image, kernel};
use anyhow::{Context, Result, bail};
use denali_abi::boot::build_bundle;
use std::path::PathBuf;

/// What to run.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Prebuilt images; empty means build the service here and run it.
    pub images: Vec<PathBuf>,
    /// How to build when `images` is empty.
    pub build: BuildOptions,
    /// Guest RAM for the isolation kernel, in bytes.
    pub memory: Option<u64>,
}

/// The images to boot, as (name, bytes).
fn images(options: &RunOptions) -> Result<Vec<(String, Vec<u8>)>> {
    let paths = if options.images.is_empty() {
        let built = build::build(&options.build)?;
        if built.len() > 1 {
            let names: Vec<_> = built.iter().map(|b| b.name.as_str()).collect();
            bail!(
                "the package has several binaries ({}): pick one with --bin NAME",
                names.join(", ")
            );
        }
        built.into_iter().map(|b| b.dvm).collect()
    } else {
        options.images.clone()
    };
    paths
        .iter()
        .map(|path| {
            let name = path
                .file_stem()
                .map_or_else(|| "service".into(), |s| s.to_string_lossy().into_owned());
            Ok((name, image::read_dvm(path)?))
        })
        .collect()
}

/// Boots the images (each its own VM) and returns the run's exit status.
pub fn run(options: &RunOptions) -> Result<i32> {
    denali_monitor::check_kvm()?;
    let images = images(options)?;
    let kernel = kernel::kernel_elf()?;
    let entries: Vec<(&str, u32, &[u8])> = images
        .iter()
        .map(|(n, b)| (n.as_str(), 1, b.as_slice()))
        .collect();
    let mut config = denali_monitor::Config::new(&kernel, build_bundle(&entries));
    config.verbose = options.build.verbose;
    if let Some(memory) = options.memory {
        config.mem_size = memory;
    }
    denali_monitor::run(&config, Box::new(std::io::stdout())).context("the run failed")
}
