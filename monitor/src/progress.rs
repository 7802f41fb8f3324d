//! The progress bar of a long boot: while the kernel makes the bundle's
//! VMs it reports how many it has made and the memory in use (see
//! `denali_abi::boot::ports::PROGRESS`), a few times a second; this draws
//! them on standard error (nothing where that is not a terminal).

use denali_abi::boot::Bundle;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

/// The bar, drawn from the kernel's first report on.
pub struct BootProgress {
    /// VMs the bundle asks for.
    total: u64,
    bar: Option<ProgressBar>,
}

impl BootProgress {
    /// Progress through making the VMs `bundle` asks for.
    pub fn new(bundle: &[u8]) -> Self {
        let total = Bundle::parse(bundle).map_or(0, |bundle| {
            (0..bundle.len()).filter_map(|index| bundle.entry(index)).map(|(entry, _)| u64::from(entry.instances)).sum()
        });
        BootProgress { total, bar: None }
    }

    /// The kernel has made `made` VMs and has `memory_mib` MiB in use.
    pub fn update(&mut self, made: u32, memory_mib: u32) {
        let total = self.total;
        let bar = self.bar.get_or_insert_with(|| {
            let style = ProgressStyle::with_template(
                "making VMs {bar:30} {pos}/{len} ({rate}, {elapsed} so far, {eta} left), {msg}",
            )
            .expect("a valid template")
            .with_key("rate", |state: &ProgressState, out: &mut dyn std::fmt::Write| {
                let _ = write!(out, "{:.0} VMs/s", state.per_sec());
            });
            ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr()).with_style(style)
        });
        let memory = format!("{memory_mib} MiB of memory in use");
        bar.set_message(memory.clone());
        bar.set_position(u64::from(made));
        if u64::from(made) >= total && !bar.is_finished() {
            bar.finish_and_clear();
            if !bar.is_hidden() {
                let seconds = bar.elapsed().as_secs_f64();
                eprintln!("made {made} VMs in {seconds:.1} s ({:.0} VMs/s), {memory}", f64::from(made) / seconds);
            }
        }
    }

    /// VMs the bundle asks for.
    #[cfg(test)]
    fn total(&self) -> u64 {
        self.total
    }

    /// Where the bar stands.
    #[cfg(test)]
    fn position(&self) -> u64 {
        self.bar.as_ref().map_or(0, ProgressBar::position)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use denali_abi::boot::{BundleSpec, build_bundle};
    use denali_abi::net::Ipv4Config;

    #[test]
    fn the_bar_counts_the_bundles_vms() {
        let image = [0u8; 64];
        let spec = |instances| BundleSpec {
            name: "a",
            instances,
            image: &image,
            args: "",
            ipv4: Ipv4Config::DEFAULT,
            disk_sectors: 0,
        };
        let mut progress = BootProgress::new(&build_bundle(&[spec(3), spec(1000)]));
        assert_eq!((progress.total(), progress.position()), (1003, 0));
        progress.update(400, 12);
        assert_eq!(progress.position(), 400);
        progress.update(1003, 30);
        assert_eq!(progress.position(), 1003);
        assert_eq!(BootProgress::new(b"not a bundle").total(), 0);
    }
}
