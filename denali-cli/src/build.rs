//! `cargo denali build`: compile a service against the library OS for the
//! Denali target on nightly, then turn each binary into a `.dvm` image at
//! `<target-dir>/denali/<profile>/<name>.dvm`.

use crate::image::{self, Sizes};
use crate::manifest::Manifest;
use crate::{paths, toolchain};
use anyhow::{Context, Result, bail};
use cargo_metadata::{Message, MetadataCommand, Package, TargetKind};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

/// What to build.
#[derive(Clone, Debug, Default)]
pub struct BuildOptions {
    /// The service's `Cargo.toml` (default: the one cargo finds from here).
    pub manifest_path: Option<PathBuf>,
    /// Optimised build (`release` profile).
    pub release: bool,
    /// Only these binaries (default: all of the package's).
    pub bins: Vec<String>,
    /// Echo the nested cargo command.
    pub verbose: bool,
}

/// One image built.
#[derive(Clone, Debug)]
pub struct Built {
    /// The binary's name.
    pub name: String,
    /// The `.dvm` file.
    pub dvm: PathBuf,
    /// The service's `Denali.toml` (or the defaults).
    pub manifest: Manifest,
}

/// Finds the service package, refusing crates that are not Denali services.
fn service_package(options: &BuildOptions) -> Result<(Package, PathBuf)> {
    let mut command = MetadataCommand::new();
    command.no_deps();
    if let Some(path) = &options.manifest_path {
        command.manifest_path(path);
    }
    let metadata = command.exec().map_err(|e| match e {
        cargo_metadata::Error::CargoMetadata { stderr } if stderr.contains("could not find `Cargo.toml`") => {
            anyhow::anyhow!(
                "there is no Cargo.toml here or above\nhint: run cargo denali in a service's directory, or create one with `cargo denali new NAME`"
            )
        }
        cargo_metadata::Error::CargoMetadata { stderr } => {
            anyhow::anyhow!("cannot read the package metadata: {}", stderr.trim().trim_start_matches("error: "))
        }
        other => anyhow::Error::new(other).context("cannot read the package metadata"),
    })?;
    let package = metadata.root_package().cloned().context(
        "this is a workspace without a root package\nhint: run cargo denali in the service's own directory or pass --manifest-path",
    )?;
    if !package.dependencies.iter().any(|d| d.name == "denali") {
        bail!(
            "the package `{}` does not depend on `denali`, so it is not a Denali service\n\
             hint: add `denali = {{ path = \"{}\" }}` to its [dependencies], or create a service with `cargo denali new NAME`",
            package.name,
            paths::libos().display()
        );
    }
    Ok((package, metadata.target_directory.into_std_path_buf()))
}

/// What a binary is written against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `#![no_std]` + `#![no_main]`, against `denali::*` directly.
    NoStd,
    /// An ordinary Rust program (`fn main()`, `std`); the `denali` crate
    /// supplies std's platform layer.
    Std,
}

impl Kind {
    /// The kind of the binary whose crate root is `source`: `NoStd` if it
    /// declares `#![no_std]` (also inside a `cfg_attr`), `Std` otherwise.
    pub fn of_source(source: &str) -> Kind {
        let declares_no_std = source
            .lines()
            .map(|line| line.split("//").next().unwrap_or("").trim())
            .any(|line| line.starts_with("#![") && line.contains("no_std"));
        if declares_no_std { Kind::NoStd } else { Kind::Std }
    }

    fn describe(self) -> &'static str {
        match self {
            Kind::NoStd => "the Denali target",
            Kind::Std => "the Denali target with std",
        }
    }
}

/// The package's binaries to build (all, or those `options` names) with
/// their kinds.
fn binaries(package: &Package, options: &BuildOptions) -> Result<Vec<(String, Kind)>> {
    let mut bins = Vec::new();
    for target in package.targets.iter().filter(|t| t.kind.contains(&TargetKind::Bin)) {
        if !options.bins.is_empty() && !options.bins.contains(&target.name) {
            continue;
        }
        let source =
            std::fs::read_to_string(&target.src_path).with_context(|| format!("cannot read {}", target.src_path))?;
        bins.push((target.name.clone(), Kind::of_source(&source)));
    }
    if let Some(missing) = options.bins.iter().find(|b| !bins.iter().any(|(name, _)| name == *b)) {
        bail!("the package `{}` has no binary named `{missing}`", package.name);
    }
    if bins.is_empty() {
        bail!("the package `{}` has no binary to turn into an image\nhint: a service needs src/main.rs", package.name);
    }
    Ok(bins)
}

/// The nested cargo that compiles `bins` (all of one `kind`).
fn cargo_command(package: &Package, options: &BuildOptions, kind: Kind, bins: &[&str]) -> std::process::Command {
    let mut cargo = toolchain::cargo();
    match kind {
        Kind::NoStd => {
            cargo.arg("build");
            for bin in bins {
                cargo.args(["--bin", bin]);
            }
            cargo.arg("--target").arg(paths::target_spec()).arg("-Zbuild-std=core,alloc,compiler_builtins");
        }
        // `cargo rustc` (one binary at a time) so that the binary, and only
        // it, links the `denali` crate even if it never names it: an
        // ordinary program says nothing of its platform.
        Kind::Std => {
            cargo.args(["rustc", "--bin", bins[0]]);
            cargo.arg("--target").arg(paths::std_target_spec()).arg("-Zbuild-std=std,panic_abort");
        }
    }
    cargo
        .arg("--manifest-path")
        .arg(package.manifest_path.as_std_path())
        .args(["-Zbuild-std-features=compiler-builtins-mem", "-Zjson-target-spec"])
        .arg("--message-format=json-render-diagnostics")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if options.release {
        cargo.arg("--release");
    }
    if kind == Kind::Std {
        cargo.args(["--", "-Zunstable-options", "--extern", "force:denali"]);
    }
    cargo
}

/// Runs one nested cargo, showing progress, and returns the ELF files of
/// the package's binaries it linked.
fn compile(
    mut cargo: std::process::Command,
    package: &Package,
    kind: Kind,
    verbose: bool,
) -> Result<Vec<(String, PathBuf)>> {
    if verbose {
        eprintln!("     Running {cargo:?}");
    }
    let mut child = cargo.spawn().context("cannot run cargo +nightly")?;
    let progress = ProgressBar::new_spinner();
    progress.set_style(ProgressStyle::with_template("{spinner} {msg}").expect("valid template"));
    progress.enable_steady_tick(Duration::from_millis(120));
    progress.set_message(format!("building {} for {}", package.name, kind.describe()));

    let mut elves = Vec::new();
    let stdout = child.stdout.take().expect("stdout is piped");
    for message in Message::parse_stream(BufReader::new(stdout)) {
        match message.context("cannot read cargo's output")? {
            Message::CompilerArtifact(artifact) => {
                progress.set_message(format!("compiled {}", artifact.target.name));
                let is_bin = artifact.target.kind.contains(&TargetKind::Bin);
                if let (true, true, Some(exe)) = (artifact.package_id == package.id, is_bin, artifact.executable) {
                    elves.push((artifact.target.name.clone(), exe.into_std_path_buf()));
                }
            }
            Message::CompilerMessage(msg) => progress.suspend(|| eprint!("{msg}")),
            _ => {}
        }
    }
    let status = child.wait().context("cargo did not finish")?;
    progress.finish_and_clear();
    if !status.success() {
        bail!("building `{}` failed (cargo's messages are above)", package.name);
    }
    Ok(elves)
}

/// Keeps the service's `Denali.toml` beside its image as `<name>.toml`, so
/// that the image run later on its own boots as it was configured (its
/// env, args, disk and network); removes a stale one if there is none.
fn keep_manifest(package_dir: &Path, dvm: &Path) -> Result<()> {
    let (source, kept) = (package_dir.join(crate::manifest::FILE_NAME), dvm.with_extension("toml"));
    match std::fs::copy(&source, &kept) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => match std::fs::remove_file(&kept) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).with_context(|| format!("cannot remove {}", kept.display()))
            }
            _ => Ok(()),
        },
        Err(e) => Err(e).with_context(|| format!("cannot copy {} to {}", source.display(), kept.display())),
    }
}

/// Builds the service and returns its images.
pub fn build(options: &BuildOptions) -> Result<Vec<Built>> {
    let (package, target_dir) = service_package(options)?;
    let package_dir = package.manifest_path.parent().map(|p| p.as_std_path().to_path_buf()).unwrap_or_default();
    let manifest = Manifest::load(&package_dir)?;
    toolchain::check_nightly()?;
    let profile = if options.release { "release" } else { "debug" };
    let bins = binaries(&package, options)?;
    let no_std: Vec<&str> = bins.iter().filter(|(_, k)| *k == Kind::NoStd).map(|(n, _)| n.as_str()).collect();
    let mut elves = Vec::new();
    if !no_std.is_empty() {
        let cargo = cargo_command(&package, options, Kind::NoStd, &no_std);
        elves.extend(compile(cargo, &package, Kind::NoStd, options.verbose)?.into_iter().map(|e| (e, Kind::NoStd)));
    }
    for (bin, _) in bins.iter().filter(|(_, k)| *k == Kind::Std) {
        let cargo = cargo_command(&package, options, Kind::Std, &[bin]);
        elves.extend(compile(cargo, &package, Kind::Std, options.verbose)?.into_iter().map(|e| (e, Kind::Std)));
    }

    let out_dir = target_dir.join("denali").join(profile);
    std::fs::create_dir_all(&out_dir).with_context(|| format!("cannot create {}", out_dir.display()))?;
    let mut built = Vec::new();
    for ((name, elf), kind) in elves {
        let dvm = out_dir.join(format!("{name}.dvm"));
        let sizes = Sizes { memory: manifest.memory_for(kind), ..Sizes::default() };
        let bytes = image::elf_to_dvm(&elf, sizes)?;
        std::fs::write(&dvm, &bytes).with_context(|| format!("cannot write {}", dvm.display()))?;
        // Keep the ELF beside the image for symbolised fault reports.
        std::fs::copy(&elf, image::elf_beside(&dvm)).with_context(|| format!("cannot copy {}", elf.display()))?;
        keep_manifest(&package_dir, &dvm)?;
        built.push(Built { name, dvm, manifest: manifest.clone() });
    }
    Ok(built)
}

#[cfg(test)]
mod tests {
    use super::Kind;

    #[test]
    fn a_crate_is_no_std_only_if_it_says_so() {
        assert_eq!(Kind::of_source("#![no_std]\n#![no_main]\nuse denali::prelude::*;\n"), Kind::NoStd);
        assert_eq!(Kind::of_source("#![cfg_attr(target_os = \"none\", no_std)]\nfn main() {}\n"), Kind::NoStd);
        assert_eq!(Kind::of_source("fn main() {\n    println!(\"hi\");\n}\n"), Kind::Std);
        assert_eq!(Kind::of_source("// #![no_std] was here\nfn main() {}\n"), Kind::Std);
        assert_eq!(Kind::of_source("fn main() { let s = \"#![no_std]\"; }\n"), Kind::Std);
    }
}
