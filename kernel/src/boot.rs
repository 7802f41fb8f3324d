//! Boot: from the loader's `BootInfo` to a running kernel. Sets up the CPU,
//! carves the kernel heap and the frame allocator out of usable memory,
//! loads every image of the boot bundle into its own VM, and runs them.

use crate::arch::x86_64::user_state::StateSwitch;
use crate::arch::x86_64::{self as arch, apic, cpu, gdt, trap};
use crate::drivers::pci;
use crate::drivers::virtio_blk::Disk;
use crate::drivers::virtio_net::Nic;
use crate::kprintln;
use crate::mem::frame::FrameAllocator;
use crate::mem::heap::CountingHeap;
use crate::mem::phys;
use crate::run::{BootReport, Kernel};
use crate::time::Clock;
use crate::vm::loader::Loader;
use alloc::string::String;
use alloc::vec::Vec;
use denali_abi::boot::{
    BOOT_FLAG_CONSOLE_PORT, BOOT_FLAG_PCI, BOOT_FLAG_STATS, BOOT_FLAG_VERBOSE, BOOT_MAGIC, BootInfo, Bundle,
    MAX_MEM_REGIONS, VIRTIO_MMIO_SIZE,
};
use denali_abi::disk::{FIRST_DATA_SECTOR, Window};
use virtio_drivers::transport::DeviceType;
use x86_64::registers::control::Cr3;

/// Heap bytes a VM takes besides its record: its name, its entries in the
/// per-VM tables and the scheduler, and the allocator's overhead.
const HEAP_PER_VM_EXTRA: usize = 192;

/// Smallest kernel heap: the VM table, queues and per-VM bookkeeping (about
/// 1 KiB a VM). It grows with memory, a sixteenth of it.
const MIN_HEAP_SIZE: u64 = 8 << 20;

/// Boots the kernel and never returns: the run ends through the exit device.
pub fn boot(boot_info_phys: u64, heap: &'static CountingHeap) -> ! {
    crate::console::CONSOLE.lock().init();
    // SAFETY: the loader placed a BootInfo at this physical address; it is
    // read once, by value, before anything can overwrite it.
    let info: BootInfo = unsafe { core::ptr::read(phys::to_virt(boot_info_phys) as *const BootInfo) };
    if info.magic != BOOT_MAGIC || info.abi_version != denali_abi::ABI_VERSION {
        kprintln!("denali: the boot loader speaks another ABI (magic {:#x}, version {})", info.magic, info.abi_version);
        arch::exit_panic();
    }
    if info.flags & BOOT_FLAG_CONSOLE_PORT != 0 {
        crate::console::CONSOLE.lock().use_port();
    }
    arch::pic::disable();
    let selectors = gdt::init();
    trap::init_idt(&selectors);
    let protections = cpu::init();

    let usable = info.regions.iter().take((info.region_count as usize).min(MAX_MEM_REGIONS));
    let total: u64 = usable.clone().map(|r| r.end.saturating_sub(r.start)).sum();
    let heap_size = (total / 16).max(MIN_HEAP_SIZE).next_multiple_of(4096);
    // The heap is the first region with room for it and as much again
    // (found before anything is allocated); everything else goes to the
    // frame allocator.
    let Some(heap_start) = usable
        .clone()
        .map(|r| r.start.next_multiple_of(4096))
        .zip(usable.clone().map(|r| r.end))
        .find(|&(start, end)| end.saturating_sub(start) > heap_size * 2)
        .map(|(start, _)| start)
    else {
        kprintln!("denali: not enough memory for the kernel heap ({} MiB needed)", (heap_size * 2) >> 20);
        arch::exit_panic();
    };
    // SAFETY: the loader reports this range as unused RAM, mapped by the
    // physmap; it becomes the heap and nothing else uses it.
    unsafe { heap.init(phys::to_virt(heap_start), heap_size as usize) };
    let mut regions: Vec<(u64, u64)> = Vec::new();
    for region in usable {
        let (mut start, end) = (region.start.next_multiple_of(4096), region.end);
        if start == heap_start {
            start += heap_size;
        }
        regions.push((start, end));
    }
    let mut frames = FrameAllocator::new(regions);
    let Some(switch_frame) = phys::alloc_zeroed(&mut frames) else {
        kprintln!("denali: no memory for the kernel's state-switch page; give the run more memory (--mem)");
        arch::exit_panic();
    };
    let state_switch = StateSwitch::new(switch_frame, protections.user, &selectors);
    if info.tsc_khz == 0 {
        kprintln!("denali: the boot loader did not report the TSC frequency");
        arch::exit_panic();
    }
    let clock = Clock::start(info.tsc_khz, arch::rdtsc());
    let kernel_pml4 = Cr3::read().0.start_address().as_u64();
    // SAFETY: the loader placed the bundle at this physical range, which is
    // outside every usable region, so nothing else writes it.
    let bundle_bytes =
        unsafe { core::slice::from_raw_parts(phys::to_virt(info.bundle_addr), info.bundle_len as usize) };
    let bundle = match Bundle::parse(bundle_bytes) {
        Ok(bundle) => bundle,
        Err(e) => {
            kprintln!("denali: the boot bundle was refused: {e}");
            arch::exit(crate::run::REFUSED_STATUS);
        }
    };
    // The loader's flags, and the run's where the loader knows nothing of
    // the run (UEFI, PVH).
    let flags = info.flags | bundle.run_flags();
    let verbose = flags & BOOT_FLAG_VERBOSE != 0;
    if verbose {
        kprintln!(
            "denali: isolation kernel up: {} MiB for VMs, TSC {} MHz, SMEP {}, SMAP {}, UMIP {}, {}, FSGSBASE {}",
            (frames.total() * 4096) >> 20,
            info.tsc_khz / 1000,
            on_or_absent(protections.smep),
            on_or_absent(protections.smap),
            on_or_absent(protections.user.umip),
            protections.user.xcr0.map_or(String::from("no XSAVE (FXSAVE)"), |x| alloc::format!("XSAVE, XCR0 {x:#x}")),
            on_or_absent(protections.user.fsgsbase),
        );
    }

    let (mut vm_count, mut wants_disk) = (0u32, false);
    for index in 0..bundle.len() {
        let (entry, _) = bundle.entry(index).expect("parsed bundle has this entry");
        vm_count = vm_count.saturating_add(entry.instances);
        wants_disk |= entry.disk_sectors != 0;
    }

    let mut kernel = Kernel::new(frames, clock, kernel_pml4, verbose, state_switch);
    // A quarter of the heap parks frames for VMs: the global budget that
    // no flood can exceed.
    let frame_slots = (heap_size / 4 / denali_abi::hypercall::FRAME_MAX as u64) as u32;
    match crate::net::Switch::with_budget(frame_slots) {
        Ok(switch) => kernel.switch = switch,
        Err(_) => {
            kprintln!("denali: no kernel heap for the network's frames; give the run more memory (--mem)");
            arch::exit(crate::run::REFUSED_STATUS);
        }
    }
    // Each VM's record is a heap allocation of its own, made as it is
    // loaded: check they all fit before making the first, so the heap never
    // runs dry halfway (an allocation failure would stop the kernel).
    let per_vm = (core::mem::size_of::<crate::vm::Vm>() + HEAP_PER_VM_EXTRA) as u64;
    let fits = u64::from(vm_count).saturating_mul(per_vm) < heap.free() as u64;
    if !fits || kernel.reserve(vm_count as usize).is_err() {
        kprintln!(
            "denali: {vm_count} VMs do not fit in the kernel's {} MiB heap; boot fewer or give the run more memory (--mem)",
            heap_size >> 20
        );
        arch::exit(crate::run::REFUSED_STATUS);
    }
    kernel.preemption = apic::init(&mut kernel.frames, kernel_pml4, info.tsc_khz);
    if info.net_mmio != 0 {
        kernel.uplink = start_nic(&mut kernel.frames, kernel_pml4, info.net_mmio);
    } else if info.flags & BOOT_FLAG_PCI != 0 {
        kernel.uplink =
            pci::find_virtio(&mut kernel.frames, kernel_pml4, DeviceType::Network, 0).and_then(|(transport, route)| {
                let mut nic = Nic::new_pci(transport)
                    .map_err(|e| kprintln!("denali: {e}; the VMs can reach only each other"))
                    .ok()?;
                nic.polled = !route.route_receive_interrupt(denali_abi::boot::NIC_VECTOR, apic::id());
                Some(nic)
            });
    }
    // The disk our monitor names is ours; on a PCI machine only a disk
    // with the Denali label is (a machine's other disks are none of the
    // kernel's business, and are not worth a word unless a VM wanted one).
    kernel.disk = start_disk(&mut kernel.frames, kernel_pml4, &info, wants_disk || info.blk_mmio != 0);
    let mut next_sector = FIRST_DATA_SECTOR;
    kernel.switch.has_uplink = kernel.uplink.is_some();
    if !kernel.preemption {
        kprintln!("denali: this CPU's local APIC timer cannot be used; a VM that never yields will keep the CPU");
    }
    let load_started = arch::rdtsc();
    let frames_before = kernel.frames.in_use();
    let mut template_frames = 0;
    for index in 0..bundle.len() {
        let (entry, image) = bundle.entry(index).expect("parsed bundle has this entry");
        let args = bundle.args(index).unwrap_or_default();
        let mut loader = Loader {
            frames: &mut kernel.frames,
            kernel_pml4,
            selectors: &selectors,
            clock,
            vm_count,
            state_switch: &state_switch,
        };
        let template = match loader.prepare(image) {
            Ok(template) => {
                template_frames += template.frames();
                template
            }
            Err(e) => {
                kprintln!("denali: image {index} ({}) refused by the loader: {e}", entry.name());
                (0..entry.instances).for_each(|_| kernel.refuse(entry.name()));
                next_sector = next_sector.saturating_add(u64::from(entry.instances).saturating_mul(entry.disk_sectors));
                continue;
            }
        };
        for instance in 0..entry.instances {
            let id = kernel.vms.len() as u32;
            let ipv4 = entry.ipv4.nth(instance).unwrap_or_default();
            // Windows follow one another in boot order whether or not their
            // VM starts, so a VM finds its data where it left it.
            let disk = Window { start: next_sector, sectors: entry.disk_sectors };
            next_sector = next_sector.saturating_add(entry.disk_sectors);
            if ipv4.is_configured() && !kernel.switch.attach(ipv4.address, id) {
                let [a, b, c, d] = ipv4.address;
                kprintln!(
                    "denali: vm {id} ({}) refused: another VM already has its address {a}.{b}.{c}.{d}",
                    entry.name()
                );
                kernel.refuse(entry.name());
                continue;
            }
            let disk_sectors = kernel.disk.as_ref().map_or(0, |d| d.sectors);
            if disk.sectors != 0 && disk.start.saturating_add(disk.sectors) > disk_sectors {
                kprintln!(
                    "denali: vm {id} ({}) refused: it asks for {} KiB of disk and {}",
                    entry.name(),
                    disk.sectors / 2,
                    if kernel.disk.is_some() {
                        "the machine's disk has no room left for it"
                    } else {
                        "the machine has no Denali disk"
                    }
                );
                kernel.switch.detach(ipv4.address, id);
                kernel.refuse(entry.name());
                continue;
            }
            let mut loader = Loader {
                frames: &mut kernel.frames,
                kernel_pml4,
                selectors: &selectors,
                clock,
                vm_count,
                state_switch: &state_switch,
            };
            match loader.instantiate(id, entry.name(), &template, args, ipv4, disk) {
                Ok(vm) => kernel.admit(vm),
                Err(e) => {
                    kprintln!("denali: vm {id} ({}) could not be made: {e}", entry.name());
                    kernel.switch.detach(ipv4.address, id);
                    kernel.refuse(entry.name());
                }
            }
        }
    }
    // The swap area is where the label says, if that is past every window
    // of this boot, and as much of it as a quarter of the free kernel heap
    // can keep track of.
    if let Some(disk) = &kernel.disk {
        let label = disk.label;
        if label.swap_sectors != 0 && label.swap_start < next_sector {
            kprintln!("denali: the disk's swap area overlaps the VMs' disk windows; nothing will be swapped");
        } else if label.swap_sectors != 0 {
            let slots = (heap.free() / 4 / crate::swap::HEAP_PER_SLOT) as u64;
            let end =
                label.swap_start.saturating_add(label.swap_sectors.min(slots.saturating_mul(8))).min(disk.sectors);
            kernel.swap = crate::swap::SwapArea::new(label.swap_start, end);
        }
        if verbose {
            let swap_mib = kernel.swap.as_ref().map_or(0, |s| u64::from(s.slots()) >> 8);
            kprintln!("denali: disk: {} MiB, of which {swap_mib} MiB swap", disk.sectors >> 11);
        }
    }
    let made = kernel.vms.iter().filter(|vm| vm.is_some()).count() as u64;
    kernel.boot = BootReport {
        vms: made,
        ns: clock.ns_at(arch::rdtsc()) - clock.ns_at(load_started),
        // Every frame the loading took that is neither an image page nor a
        // VM's own info page: page tables.
        page_table_frames: kernel.frames.in_use() - frames_before - template_frames - made,
        image_frames: template_frames,
    };
    kernel.heap = Some(heap);
    heap.reset_peak();
    kernel.heap_after_boot = heap.usage();
    if info.time_limit_ms != 0 {
        kernel.time_limit = Some(clock.ns_at(arch::rdtsc()) + info.time_limit_ms * 1_000_000);
    }
    let status = kernel.run(flags & BOOT_FLAG_STATS != 0);
    arch::exit(status)
}

fn on_or_absent(on: bool) -> &'static str {
    if on { "on" } else { "absent" }
}

/// Starts the VMs' disk: the virtio-mmio device the loader names, or the
/// first labelled virtio-blk device on the PCI bus. Without one, VMs that ask for a
/// disk are refused (and the rest run) and nothing is swapped, so a failure
/// is reported (when `loud`), not fatal.
fn start_disk(frames: &mut FrameAllocator, kernel_pml4: u64, info: &BootInfo, loud: bool) -> Option<Disk> {
    let disk = if info.blk_mmio != 0 {
        let registers = phys::map_mmio(frames, kernel_pml4, info.blk_mmio, VIRTIO_MMIO_SIZE)?;
        // SAFETY: the loader says a virtio-mmio register page is at
        // `blk_mmio`; it was just mapped, and only this driver uses it.
        unsafe { Disk::new_mmio(core::ptr::NonNull::new(registers)?, VIRTIO_MMIO_SIZE as usize) }
    } else if info.flags & BOOT_FLAG_PCI != 0 {
        // The first virtio-blk device that carries the label (the machine
        // may have booted from another).
        let mut result = Err("the machine has no virtio-blk disk");
        for nth in 0.. {
            let Some((transport, _)) = pci::find_virtio(frames, kernel_pml4, DeviceType::Block, nth) else { break };
            result = Disk::new_pci(transport);
            if result.is_ok() {
                break;
            }
        }
        result
    } else {
        return None;
    };
    disk.map_err(|e| {
        if loud {
            kprintln!("denali: {e}");
        }
    })
    .ok()
}

/// Maps and starts the virtio-mmio NIC at physical `mmio`; without it the
/// VMs still reach each other, so a failure is reported, not fatal.
fn start_nic(frames: &mut FrameAllocator, kernel_pml4: u64, mmio: u64) -> Option<Nic> {
    let registers = phys::map_mmio(frames, kernel_pml4, mmio, VIRTIO_MMIO_SIZE)?;
    // SAFETY: the loader says a virtio-mmio register page is at `mmio`;
    // it was just mapped, and only this driver uses it.
    match unsafe { Nic::new_mmio(core::ptr::NonNull::new(registers)?, VIRTIO_MMIO_SIZE as usize) } {
        Ok(nic) => Some(nic),
        Err(e) => {
            kprintln!("denali: {e}; the VMs can reach only each other");
            None
        }
    }
}
