//! The end-of-run report: which VMs failed, and with `--stats`, what each
//! VM cost.

use super::Kernel;
use crate::kprintln;
use crate::platform::Platform;
use crate::vm::{Stats, Vm};
use alloc::string::String;

/// Most failed VMs named one by one without `-v`.
const MAX_NAMED: usize = 20;

/// Most VMs given a row each in the `--stats` table without `-v`: beyond
/// this the table would take longer to print than the run (the console
/// goes through the monitor a line at a time).
const MAX_ROWS: usize = 256;

/// Kernel heap a VM's record takes: the VM and its entries in the
/// per-id tables.
const VM_RECORD_BYTES: usize =
    core::mem::size_of::<Vm>() + core::mem::size_of::<Stats>() + core::mem::size_of::<Option<i32>>();

/// Many VMs' accounting in three rows.
struct Summary {
    /// Each field summed.
    total: Stats,
    /// Each field's mean (rounded down).
    mean: Stats,
    /// Each field's largest value, whichever VM it came from.
    most: Stats,
}

impl Summary {
    fn of(stats: &[Stats]) -> Summary {
        let (mut total, mut most) = (Stats::default(), Stats::default());
        for vm in stats {
            total += vm;
            most = most.zip_with(vm, u64::max);
        }
        let vms = (stats.len() as u64).max(1);
        Summary { total, mean: total.zip_with(&total, |sum, _| sum / vms), most }
    }
}

impl<P: Platform> Kernel<P> {
    /// Names every VM that failed (every VM, when verbose) and, when several
    /// ran, ends with one summary line.
    pub(super) fn print_exits(&self, several: bool) {
        // Failures are named (the first few when there are thousands);
        // successes only when asked, so ten thousand healthy VMs end with
        // one line.
        let mut named = 0;
        for (id, (status, name)) in self.statuses.iter().zip(&self.names).enumerate() {
            if *status == Some(0) && !self.verbose {
                continue;
            }
            named += 1;
            if named > MAX_NAMED && !self.verbose {
                continue;
            }
            match status {
                Some(s) => kprintln!("denali: vm {id} ({name}) exited with status {s}"),
                None => kprintln!("denali: vm {id} ({name}) did not finish"),
            }
        }
        if named > MAX_NAMED && !self.verbose {
            kprintln!("denali: ... and {} more VMs did not exit with status 0 (-v lists them all)", named - MAX_NAMED);
        }
        if several {
            let ok = self.statuses.iter().filter(|s| **s == Some(0)).count();
            kprintln!(
                "denali: {} VMs: {ok} exited with status 0, {} did not",
                self.statuses.len(),
                self.statuses.len() - ok
            );
        }
    }

    /// The `--stats` table: each VM's accounting (past `MAX_ROWS` VMs, their
    /// mean and maximum instead, unless verbose), the totals, and what
    /// making the VMs cost.
    pub(super) fn print_stats(&self) {
        let row = |id: &str, name: &str, status: &str, stats: &Stats| {
            let ms = (stats.cpu_ticks as f64) / (self.clock.tsc_khz as f64);
            kprintln!(
                "{id:>6}  {name:<20} {status:>6} {ms:>10.3} {:>12} {:>11} {:>11} {:>9} {:>13} {:>13} {:>9} {:>9} {:>8} {:>8}",
                stats.resident_pages * 4,
                stats.shared_pages * 4,
                stats.hypercalls,
                stats.wakeups,
                stats.disk_read_bytes / 1024,
                stats.disk_written_bytes / 1024,
                stats.swap_outs,
                stats.pages_swapped_out,
                stats.swap_ins,
                stats.pages_swapped_in
            );
        };
        kprintln!("denali: per-VM accounting");
        kprintln!(
            "{:>6}  {:<20} {:>6} {:>10} {:>12} {:>11} {:>11} {:>9} {:>13} {:>13} {:>9} {:>9} {:>8} {:>8}",
            "vm",
            "name",
            "status",
            "cpu ms",
            "private KiB",
            "shared KiB",
            "hypercalls",
            "wake-ups",
            "disk read KiB",
            "disk wrote KiB",
            "swap-outs",
            "pages out",
            "swap-ins",
            "pages in"
        );
        let each_row = self.stats.len() <= MAX_ROWS || self.verbose;
        if each_row {
            for (id, (stats, name)) in self.stats.iter().zip(&self.names).enumerate() {
                let status = self.statuses[id].map_or(String::from("-"), |s| alloc::format!("{s}"));
                row(&alloc::format!("{id}"), name, &status, stats);
            }
        }
        let summary = Summary::of(&self.stats);
        let vms = self.stats.len();
        if !each_row {
            kprintln!(
                "denali: {vms} VMs: one row each left out (-v prints them); their mean and their largest figures:"
            );
            row("mean", "", "", &summary.mean);
            row("max", "", "", &summary.most);
        }
        let total = summary.total;
        row("total", &alloc::format!("({vms} VMs)"), "", &total);
        let boot = self.boot;
        let per_vm = |total: u64| total.checked_div(boot.vms).unwrap_or(0);
        kprintln!(
            "denali: made {} VMs in {} us ({} us per VM); kernel memory per VM: {} B of VM record, and {} KiB of page tables while it is in memory (made when it first runs)",
            boot.vms,
            boot.ns / 1000,
            per_vm(boot.ns / 1000),
            VM_RECORD_BYTES,
            boot.tables_per_vm * 4,
        );
        if total.frames_sent + total.frames_received + total.frames_dropped != 0 || self.uplink.is_some() {
            let (out, into, lost) = self.uplink.as_ref().map_or((0, 0, 0), |nic| nic.counters());
            kprintln!(
                "denali: network: VMs sent {} frames and received {}; {} dropped at full receive rings; the NIC sent {} ({} dropped at a full ring) and received {}",
                total.frames_sent,
                total.frames_received,
                total.frames_dropped,
                out,
                lost,
                into
            );
        }
        if let Some(swap) = &self.swap {
            let counters = self.swap_counters;
            kprintln!(
                "denali: swap: {} swap-outs ({} pages, {} KiB written, {} ms), {} swap-ins ({} pages read, {} ms), in {} disk requests of {} segments ({} ms waiting for the disk); swap area {} MiB, {} pages in use at the end",
                counters.swap_outs,
                counters.pages_out,
                counters.pages_out * 4,
                counters.out_ns / 1_000_000,
                counters.swap_ins,
                counters.pages_in,
                counters.in_ns / 1_000_000,
                counters.requests,
                counters.segments,
                (counters.write_wait_ns + counters.read_wait_ns) / 1_000_000,
                u64::from(swap.slots()) >> 8,
                u64::from(swap.slots()) - swap.free_slots()
            );
            let per = |ns: u64, count: u64| ns / count.max(1);
            kprintln!(
                "denali: swap: one swap-out took {} ns ({} ns of it waiting for the disk), one swap-in {} ns ({} ns waiting)",
                per(counters.out_ns, counters.swap_outs),
                per(counters.write_wait_ns, counters.swap_outs),
                per(counters.in_ns, counters.swap_ins),
                per(counters.read_wait_ns, counters.swap_ins)
            );
            kprintln!(
                "denali: swap: {} swap-outs took an idle VM out whole (its page tables and info page too), leaving it at most {} B of kernel memory",
                counters.whole_swap_outs,
                self.most_kept_when_whole
            );
        }
        if let Some(heap) = self.heap {
            let (boot, now) = (self.heap_after_boot, heap.usage());
            kprintln!(
                "denali: kernel heap: {} KiB in use once the VMs were made, at most {} KiB while they ran, {} KiB at the end (of {} KiB); {} of {} frame slots in use at the end",
                boot.used >> 10,
                now.peak >> 10,
                now.used >> 10,
                now.size >> 10,
                self.switch.parking.parked(),
                self.switch.parking.capacity()
            );
        }
        // Every VM's frames went back: only the images' pages, their page
        // tables and the state-switch code stay.
        kprintln!(
            "denali: frames in use after the run: {} ({} hold image pages, {} their page tables, 1 the state-switch code)",
            self.frames.in_use(),
            boot.image_frames,
            boot.image_table_frames
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_summary_sums_averages_and_takes_the_largest_of_each_field() {
        let vm =
            |cpu_ticks, resident_pages, swap_ins| Stats { cpu_ticks, resident_pages, swap_ins, ..Stats::default() };
        let summary = Summary::of(&[vm(10, 5, 0), vm(20, 1, 7), vm(0, 3, 2)]);
        assert_eq!((summary.total.cpu_ticks, summary.total.resident_pages, summary.total.swap_ins), (30, 9, 9));
        assert_eq!((summary.mean.cpu_ticks, summary.mean.resident_pages, summary.mean.swap_ins), (10, 3, 3));
        assert_eq!((summary.most.cpu_ticks, summary.most.resident_pages, summary.most.swap_ins), (20, 5, 7));
        assert_eq!(Summary::of(&[]).mean.hypercalls, 0, "no VMs: no division by zero");
    }
}
