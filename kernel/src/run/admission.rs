//! Assembling a kernel and admitting the boot bundle's VMs: the
//! [`KernelBuilder`] takes the parts the boot path found (memory, clock,
//! NIC, disk), and [`Kernel::admit_bundle`] makes every VM the bundle asks
//! for, refusing one with a sentence (a bad image, an address another VM
//! holds, no room on the disk) while the rest boot.
//!
//! Nothing here touches hardware, so the host tests boot bundles through
//! it exactly as the machine does.

use super::{BootReport, Kernel};
use crate::kprintln;
use crate::mem::frame::FrameAllocator;
use crate::net::Switch;
use crate::platform::{BlockDevice, NetDevice, Platform};
use crate::swap::{HEAP_PER_SLOT, SwapArea};
use crate::time::Clock;
use crate::vm::loader::{LoadError, Loader, Template};
use crate::vm::state_switch::StateSwitch;
use alloc::boxed::Box;
use denali_abi::boot::{Bundle, BundleEntry, TIMED_OUT_STATUS};
use denali_abi::disk::{FIRST_DATA_SECTOR, Window};
use denali_abi::net::Ipv4Config;

/// Heap bytes a VM takes besides its record: its name, its entries in the
/// per-VM tables and the scheduler, the room its receive ring keeps for a
/// few senders' counts, and the allocator's overhead.
const HEAP_PER_VM_EXTRA: usize = 308;

/// How often a long boot tells the monitor how many VMs it has made.
const PROGRESS_INTERVAL_NS: u64 = 250_000_000;
/// How often it prints that on the console where no monitor shows it.
const CONSOLE_PROGRESS_INTERVAL_NS: u64 = 10_000_000_000;

/// When a boot last reported its progress, and whether it has at all; when
/// it last printed it.
struct ProgressReports {
    last_ns: u64,
    any: bool,
    printed: Printed,
}

/// When a count of VMs was last printed on the console, what it was then,
/// and whether it has been printed at all.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Printed {
    ns: u64,
    count: u64,
    any: bool,
}

impl Printed {
    /// Nothing printed yet; rates count from `now`.
    pub(super) fn from(now: u64) -> Printed {
        Printed { ns: now, count: 0, any: false }
    }
}

/// Why a kernel could not be assembled, or a bundle admitted at all.
#[derive(Debug)]
pub enum BootError {
    /// The kernel heap cannot hold this many VMs.
    TooManyVms {
        /// VMs the bundle asks for.
        vms: u32,
        /// The heap's size in MiB.
        heap_mib: u64,
    },
    /// The kernel heap has no room for the network's frame pool.
    NoFramePool,
}

impl core::fmt::Display for BootError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            BootError::TooManyVms { vms, heap_mib } => write!(
                f,
                "{vms} VMs do not fit in the kernel's {heap_mib} MiB heap; boot fewer or give the run more memory (--mem)"
            ),
            BootError::NoFramePool => {
                write!(f, "no kernel heap for the network's frames; give the run more memory (--mem)")
            }
        }
    }
}

/// The parts of a kernel, as the boot path finds them.
pub struct KernelBuilder<P: Platform> {
    kernel: Kernel<P>,
    frame_slots: u32,
}

impl<P: Platform> KernelBuilder<P> {
    /// A kernel on `platform` over `frames`, with the global `clock`, the
    /// kernel's own page tables at `kernel_pml4`, and the state-switch
    /// code every VM maps.
    pub fn new(platform: P, frames: FrameAllocator, clock: Clock, kernel_pml4: u64, state_switch: StateSwitch) -> Self {
        KernelBuilder { kernel: Kernel::new(platform, frames, clock, kernel_pml4, false, state_switch), frame_slots: 0 }
    }

    /// Reports each VM's exit, not only failures.
    pub fn verbose(mut self, verbose: bool) -> Self {
        self.kernel.verbose = verbose;
        self
    }

    /// Prints a long boot's progress on the console, where no monitor
    /// shows it.
    pub fn progress_on_console(mut self, on: bool) -> Self {
        self.kernel.progress_on_console = on;
        self
    }

    /// Parks at most `slots` frames for VMs in all (the global budget).
    pub fn frame_budget(mut self, slots: u32) -> Self {
        self.frame_slots = slots;
        self
    }

    /// The machine's NIC, the virtual switch's uplink.
    pub fn uplink(mut self, nic: Option<Box<dyn NetDevice>>) -> Self {
        self.kernel.uplink = nic;
        self
    }

    /// The machine's disk, holding the VMs' windows and the swap area.
    pub fn disk(mut self, disk: Option<Box<dyn BlockDevice>>) -> Self {
        self.kernel.disk = disk;
        self
    }

    /// The kernel, with its frame pool allocated.
    pub fn build(self) -> Result<Kernel<P>, BootError> {
        let mut kernel = self.kernel;
        kernel.switch = Switch::with_budget(self.frame_slots).map_err(|_| BootError::NoFramePool)?;
        kernel.switch.has_uplink = kernel.uplink.is_some();
        Ok(kernel)
    }
}

/// How many VMs a bundle asks for, and whether any wants a disk.
pub fn bundle_demands(bundle: &Bundle<'_>) -> (u32, bool) {
    let (mut vms, mut disk) = (0u32, false);
    for (entry, _) in (0..bundle.len()).filter_map(|index| bundle.entry(index)) {
        vms = vms.saturating_add(entry.instances);
        disk |= entry.disk_sectors != 0;
    }
    (vms, disk)
}

impl<P: Platform> Kernel<P> {
    /// Makes every VM `bundle` asks for, in order (VM ids follow the
    /// bundle), then sets up the swap area with what `heap_free` bytes of
    /// kernel heap allow. Fails only if the VMs' records cannot all fit in
    /// the heap (`heap_free` bytes), checked before the first is made.
    pub fn admit_bundle(&mut self, bundle: &Bundle<'_>, heap_free: usize) -> Result<(), BootError> {
        let (vms, _) = bundle_demands(bundle);
        let per_vm = (core::mem::size_of::<crate::vm::Vm>() + HEAP_PER_VM_EXTRA) as u64;
        let fits = u64::from(vms).saturating_mul(per_vm) < heap_free as u64;
        if !fits || self.reserve(vms as usize).is_err() {
            return Err(BootError::TooManyVms { vms, heap_mib: (heap_free >> 20) as u64 });
        }
        let started = self.now();
        self.vm_count = vms;
        let (mut template_frames, mut tables_per_vm) = (0, 0);
        let (mut next_sector, mut unmade) = (FIRST_DATA_SECTOR, 0);
        let mut progress = ProgressReports { last_ns: started, any: false, printed: Printed::from(started) };
        for index in 0..bundle.len() {
            let Some((entry, image)) = bundle.entry(index) else { continue };
            let args = bundle.args(index).unwrap_or_default();
            let prepared = match self.templates.try_reserve(1) {
                Ok(()) => self.split_loader().0.prepare(image, args),
                Err(_) => Err(LoadError::OutOfMemory),
            };
            let prepared = match prepared {
                Ok(template) => template,
                Err(e) => {
                    kprintln!("denali: image {index} ({}) refused by the loader: {e}", entry.name());
                    (0..entry.instances).for_each(|_| self.refuse(entry.name()));
                    next_sector = next_sector.saturating_add(u64::from(entry.instances) * entry.disk_sectors);
                    continue;
                }
            };
            template_frames += prepared.frames();
            tables_per_vm = tables_per_vm.max(prepared.tables_per_vm());
            let template = self.templates.len() as u32;
            self.templates.push(prepared);
            for instance in 0..entry.instances {
                // Windows follow one another in boot order whether or not
                // their VM starts, so a VM finds its data where it left it.
                let disk = Window { start: next_sector, sectors: entry.disk_sectors };
                next_sector = next_sector.saturating_add(entry.disk_sectors);
                if self.past_time_limit() {
                    self.record_unmade(entry.name(), TIMED_OUT_STATUS);
                    unmade += 1;
                    continue;
                }
                let ipv4 = entry.ipv4.nth(instance).unwrap_or_default();
                self.admit_one(&entry, template, ipv4, disk);
                self.report_progress(&mut progress, false);
            }
        }
        self.report_progress(&mut progress, true);
        if unmade > 0 {
            kprintln!("denali: the time limit passed while VMs were being made; {unmade} of {vms} were not made");
        }
        self.set_up_swap(next_sector, heap_free);
        let made = self.vms.iter().filter(|vm| vm.is_some()).count() as u64;
        let image_table_frames = self.templates.iter().map(Template::tables_per_vm).sum();
        self.boot = BootReport {
            vms: made,
            ns: self.now() - started,
            tables_per_vm,
            image_frames: template_frames,
            image_table_frames,
        };
        Ok(())
    }

    /// Tells the platform how many VMs have been made (or refused) so far,
    /// at most every [`PROGRESS_INTERVAL_NS`]; at the `end`, once more if
    /// it was told before (a short boot says nothing).
    fn report_progress(&mut self, progress: &mut ProgressReports, end: bool) {
        let now = self.now();
        if (end && progress.any) || (!end && now - progress.last_ns >= PROGRESS_INTERVAL_NS) {
            let vms = self.vms.len() as u64;
            let mib = self.memory_in_use_mib();
            self.platform.report_progress(vms as u32, u32::try_from(mib).unwrap_or(u32::MAX));
            (progress.last_ns, progress.any) = (now, true);
            self.print_progress(&mut progress.printed, now, vms, u64::from(self.vm_count), "making", "made");
        }
    }

    /// Counts a VM that has just run for the first time. Where no monitor
    /// shows progress, prints how many have (see [`Kernel::print_progress`]),
    /// and once all have, if that took long enough to print, says so.
    pub(super) fn note_started(&mut self) {
        self.started += 1;
        if !self.progress_on_console {
            return;
        }
        let (now, mut printed) = (self.now(), self.start_printed);
        if self.started == self.boot.vms {
            if printed.any {
                kprintln!("denali: all {} VMs have started", self.started);
            }
        } else {
            self.print_progress(&mut printed, now, self.started, self.boot.vms, "starting", "started");
        }
        self.start_printed = printed;
    }

    /// Prints `count` of `of` VMs `done` (made, started), the rate since the
    /// last print, whole swap-outs and memory in use, where no monitor shows
    /// progress, at most every [`CONSOLE_PROGRESS_INTERVAL_NS`].
    fn print_progress(&self, printed: &mut Printed, now: u64, count: u64, of: u64, doing: &str, done: &str) {
        if !self.progress_on_console || now - printed.ns < CONSOLE_PROGRESS_INTERVAL_NS {
            return;
        }
        let per_second = (count - printed.count) * 1_000_000_000 / (now - printed.ns);
        kprintln!(
            "denali: {doing} VMs: {count} of {of} {done} ({per_second}/s), {} swapped out whole, {} MiB of memory in use",
            self.swap_counters.whole_swap_outs,
            self.memory_in_use_mib()
        );
        *printed = Printed { ns: now, count, any: true };
    }

    fn memory_in_use_mib(&self) -> u64 {
        (self.frames.in_use() * crate::mem::frame::FRAME_SIZE).div_ceil(1 << 20)
    }

    /// A loader for this kernel's VMs, and the templates it makes them from.
    pub(super) fn split_loader(&mut self) -> (Loader<'_>, &[Template]) {
        let loader = Loader {
            frames: &mut self.frames,
            kernel_pml4: self.kernel_pml4,
            selectors: self.state_switch.selectors(),
            clock: self.clock,
            vm_count: self.vm_count,
            state_switch: &self.state_switch,
        };
        (loader, &self.templates)
    }

    /// Makes the next VM from the `template`th template, or refuses it
    /// with a sentence.
    fn admit_one(&mut self, entry: &BundleEntry, template: u32, ipv4: Ipv4Config, disk: Window) {
        let id = self.vms.len() as u32;
        let name = entry.name();
        if ipv4.is_configured() && !self.switch.attach(ipv4.address, id) {
            let [a, b, c, d] = ipv4.address;
            kprintln!("denali: vm {id} ({name}) refused: another VM already has its address {a}.{b}.{c}.{d}");
            return self.refuse(name);
        }
        let disk_sectors = self.disk.as_ref().map_or(0, |d| d.sectors());
        if disk.sectors != 0 && disk.start.saturating_add(disk.sectors) > disk_sectors {
            let why = if self.disk.is_some() {
                "the machine's disk has no room left for it"
            } else {
                "the machine has no Denali disk"
            };
            kprintln!("denali: vm {id} ({name}) refused: it asks for {} KiB of disk and {why}", disk.sectors / 2);
            self.switch.detach(ipv4.address, id);
            return self.refuse(name);
        }
        let (mut loader, templates) = self.split_loader();
        let vm = loader.make(id, name, (template, &templates[template as usize]), ipv4, disk);
        self.admit(vm);
    }

    /// The swap area is where the disk's label says, if that is past every
    /// window of this boot (from `first_free` on), and as much of it as a
    /// quarter of the free kernel heap can keep track of.
    fn set_up_swap(&mut self, first_free: u64, heap_free: usize) {
        let Some(disk) = &self.disk else { return };
        let (label, sectors) = (disk.label(), disk.sectors());
        if label.swap_sectors != 0 && label.swap_start < first_free {
            kprintln!("denali: the disk's swap area overlaps the VMs' disk windows; nothing will be swapped");
        } else if label.swap_sectors != 0 {
            let tracked = ((heap_free / 4 / HEAP_PER_SLOT) as u64).saturating_mul(8);
            if tracked < label.swap_sectors {
                kprintln!(
                    "denali: the kernel can keep track of {} MiB of the {} MiB swap area, so only that much is used",
                    tracked >> 11,
                    label.swap_sectors >> 11
                );
            }
            let end = label.swap_start.saturating_add(label.swap_sectors.min(tracked)).min(sectors);
            self.swap = SwapArea::new(label.swap_start, end);
        }
        if self.verbose {
            let swap_mib = self.swap.as_ref().map_or(0, |s| u64::from(s.slots()) >> 8);
            kprintln!("denali: disk: {} MiB, of which {swap_mib} MiB swap", sectors >> 11);
        }
    }
}
