//! Boot: from the loader's `BootInfo` to a running kernel. Sets up the CPU,
//! carves the kernel heap and the frame allocator out of usable memory,
//! finds the machine's NIC and disk, assembles the kernel's core from those
//! parts (`run::admission::KernelBuilder`), admits the boot bundle's VMs
//! and runs them.

use crate::arch::x86_64::machine::Machine;
use crate::arch::x86_64::{self as arch, apic, cpu, gdt, trap, user_state};
use crate::drivers::pci;
use crate::drivers::virtio_blk::Disk;
use crate::drivers::virtio_net::Nic;
use crate::kprintln;
use crate::mem::frame::FrameAllocator;
use crate::mem::heap::CountingHeap;
use crate::mem::phys;
use crate::platform::{BlockDevice, NetDevice};
use crate::run::REFUSED_STATUS;
use crate::run::admission::{KernelBuilder, bundle_demands};
use crate::time::Clock;
use crate::vm::context::UserSelectors;
use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;
use denali_abi::boot::{
    BOOT_FLAG_CONSOLE_PORT, BOOT_FLAG_PCI, BOOT_FLAG_PROGRESS_SHOWN, BOOT_FLAG_STATS, BOOT_FLAG_VERBOSE,
    BOOT_FLAG_ZEROED_MEMORY, BOOT_MAGIC, BootInfo, Bundle, MAX_MEM_REGIONS, VIRTIO_MMIO_SIZE,
};
use virtio_drivers::transport::DeviceType;
use x86_64::registers::control::Cr3;

/// Smallest kernel heap: the VM table, queues and per-VM bookkeeping (about
/// 1 KiB a VM). It grows with memory, a sixteenth of it.
const MIN_HEAP_SIZE: u64 = 8 << 20;

/// Kernel heap to set aside per VM of a large boot: its record (under 1
/// KiB with its table entries) and room to note a small VM's pages in the
/// swap area.
const HEAP_PER_VM_BUDGET: u64 = 2560;

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
    if info.tsc_khz == 0 {
        kprintln!("denali: the boot loader did not report the TSC frequency");
        arch::exit_panic();
    }
    arch::pic::disable();
    let selectors = gdt::init();
    trap::init_idt(&selectors);
    let protections = cpu::init();
    // SAFETY: the loader placed the bundle at this physical range, which is
    // outside every usable region, so nothing else writes it.
    let bundle_bytes =
        unsafe { core::slice::from_raw_parts(phys::to_virt(info.bundle_addr), info.bundle_len as usize) };
    let bundle = match Bundle::parse(bundle_bytes) {
        Ok(bundle) => bundle,
        Err(e) => {
            kprintln!("denali: the boot bundle was refused: {e}");
            arch::exit(REFUSED_STATUS);
        }
    };
    let (vms, wants_disk) = bundle_demands(&bundle);
    let (heap_size, mut frames) = carve_memory(&info, heap, vms);
    if info.flags & BOOT_FLAG_ZEROED_MEMORY != 0 {
        frames.set_fresh_are_zero();
    }
    let user = UserSelectors { code: u64::from(selectors.user_code.0), data: u64::from(selectors.user_data.0) };
    let Some(switch_frame) = phys::alloc_zeroed(&mut frames) else {
        kprintln!("denali: no memory for the kernel's state-switch page; give the run more memory (--mem)");
        arch::exit_panic();
    };
    let state_switch = user_state::install(switch_frame, protections.user, user);
    let clock = Clock::start(info.tsc_khz, arch::rdtsc()).with_wall_clock(wall_clock(&info));
    let kernel_pml4 = Cr3::read().0.start_address().as_u64();
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

    let preemption = apic::init(&mut frames, kernel_pml4, info.tsc_khz);
    if !preemption {
        kprintln!("denali: this CPU's local APIC timer cannot be used; a VM that never yields will keep the CPU");
    }
    let uplink = start_uplink(&mut frames, kernel_pml4, &info);
    // The disk our monitor names is ours; on a PCI machine only a disk
    // with the Denali label is (a machine's other disks are none of the
    // kernel's business, and are not worth a word unless a VM wanted one).
    let disk = start_disk(&mut frames, kernel_pml4, &info, wants_disk || info.blk_mmio != 0);
    let built = KernelBuilder::new(Machine { preemption, selectors: user }, frames, clock, kernel_pml4, state_switch)
        .verbose(verbose)
        .progress_on_console(info.flags & BOOT_FLAG_PROGRESS_SHOWN == 0)
        // A quarter of the heap parks frames for VMs: the global budget
        // that no flood can exceed.
        .frame_budget((heap_size / 4 / denali_abi::hypercall::FRAME_MAX as u64) as u32)
        .uplink(uplink.map(|nic| Box::new(nic) as Box<dyn NetDevice>))
        .disk(disk.map(|disk| Box::new(disk) as Box<dyn BlockDevice>))
        .build();
    // The time limit counts from here: making the VMs is part of the run.
    let admitted = built.and_then(|mut kernel| {
        kernel.set_time_limit_ms(info.time_limit_ms);
        kernel.admit_bundle(&bundle, heap.free()).map(|()| kernel)
    });
    let mut kernel = match admitted {
        Ok(kernel) => kernel,
        Err(e) => {
            kprintln!("denali: {e}");
            arch::exit(REFUSED_STATUS);
        }
    };
    kernel.heap = Some(heap);
    heap.reset_peak();
    kernel.heap_after_boot = heap.usage();
    if let Some(id) = info.debug_vm.checked_sub(1).and_then(|id| u32::try_from(id).ok()) {
        kernel.debug_vm(id);
    }
    let status = kernel.run(flags & BOOT_FLAG_STATS != 0);
    arch::exit(status)
}

/// Gives the kernel heap the first usable region with room for it (a
/// sixteenth of memory, at least [`MIN_HEAP_SIZE`], more for `vms` VMs'
/// records and the swap area's bookkeeping, at most a quarter of memory)
/// and as much again, and every other usable byte to the frame allocator. Returns
/// the heap's size.
fn carve_memory(info: &BootInfo, heap: &CountingHeap, vms: u32) -> (u64, FrameAllocator) {
    let usable = info.regions.iter().take((info.region_count as usize).min(MAX_MEM_REGIONS));
    let total: u64 = usable.clone().map(|r| r.end.saturating_sub(r.start)).sum();
    let for_vms = u64::from(vms).saturating_mul(HEAP_PER_VM_BUDGET);
    let heap_size = (total / 16).max(for_vms.min(total / 4)).max(MIN_HEAP_SIZE).next_multiple_of(4096);
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
    (heap_size, FrameAllocator::new(regions))
}

/// The machine's NIC: the virtio-mmio device the loader names, or the
/// first virtio-net device on the PCI bus (its receive interrupt routed
/// through MSI-X where it can be, else polled).
fn start_uplink(frames: &mut FrameAllocator, kernel_pml4: u64, info: &BootInfo) -> Option<Nic> {
    if info.net_mmio != 0 {
        return start_nic(frames, kernel_pml4, info.net_mmio);
    }
    if info.flags & BOOT_FLAG_PCI == 0 {
        return None;
    }
    let (transport, route) = pci::find_virtio(frames, kernel_pml4, DeviceType::Network, 0)?;
    let mut nic =
        Nic::new_pci(transport).map_err(|e| kprintln!("denali: {e}; the VMs can reach only each other")).ok()?;
    nic.polled = !route.route_receive_interrupt(denali_abi::boot::NIC_VECTOR, apic::id());
    Some(nic)
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

/// Wall-clock time now, ns since the Unix epoch: the loader's word, or on
/// a PC machine the real-time clock; 0 if neither knows.
fn wall_clock(info: &BootInfo) -> u64 {
    match info.unix_time_ns {
        0 if info.flags & BOOT_FLAG_PCI != 0 => arch::rtc::now().map_or(0, |time| time.unix_ns()),
        known => known,
    }
}
