//! The Denali UEFI loader (`\EFI\BOOT\BOOTX64.EFI` on a Denali disk image).
//!
//! Reads the isolation kernel and the boot bundle from the EFI system
//! partition, places the kernel's segments at their physical addresses,
//! builds the same long-mode page tables our KVM monitor builds (all RAM at
//! `PHYS_OFFSET`, the low 2 GiB again at `KERNEL_BASE`, plus an identity map
//! for the jump itself), measures the TSC against the firmware's timer,
//! leaves boot services and enters the kernel with a `BootInfo` whose
//! regions are the RAM the firmware no longer needs.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::vec::Vec;
use core::time::Duration;
use denali_abi::boot::{BOOT_FLAG_PCI, BOOT_MAGIC, BootInfo, KERNEL_PHYS_LOAD, MAX_MEM_REGIONS, MemRegion};
use object::read::elf::{ElfFile64, FileHeader, ProgramHeader};
use uefi::boot::{self, AllocateType, MemoryType};
use uefi::fs::FileSystem;
use uefi::mem::memory_map::MemoryMap;
use uefi::{CStr16, Status, cstr16, println};

const KERNEL_PATH: &CStr16 = cstr16!("\\denali\\kernel.elf");
const BUNDLE_PATH: &CStr16 = cstr16!("\\denali\\bundle.bin");
const PAGE: u64 = 4096;
const GIB: u64 = 1 << 30;
/// RAM below this is left to the firmware's and the BIOS's leftovers.
const LOW_MEMORY_END: u64 = 1 << 20;

#[uefi::entry]
fn main() -> Status {
    match load() {
        Ok(never) => match never {},
        Err(message) => {
            println!("denali loader: {message}");
            Status::LOAD_ERROR
        }
    }
}

/// Pages of `len` bytes, zeroed, anywhere (or at `at`), kept after boot
/// services end.
fn pages(len: u64, at: Option<u64>) -> Result<u64, &'static str> {
    let count = len.div_ceil(PAGE) as usize;
    let kind = at.map_or(AllocateType::AnyPages, AllocateType::Address);
    let ptr = boot::allocate_pages(kind, MemoryType::LOADER_DATA, count)
        .map_err(|_| "the firmware has no free memory where the kernel must go")?;
    // SAFETY: the firmware just gave us these `count` pages.
    unsafe { core::ptr::write_bytes(ptr.as_ptr(), 0, count * PAGE as usize) };
    Ok(ptr.as_ptr() as u64)
}

fn load() -> Result<core::convert::Infallible, &'static str> {
    let mut fs = FileSystem::new(
        boot::get_image_file_system(boot::image_handle()).map_err(|_| "cannot open the disk the loader came from")?,
    );
    let kernel = fs.read(KERNEL_PATH).map_err(|_| "\\denali\\kernel.elf is missing from the disk image")?;
    let bundle = fs.read(BUNDLE_PATH).map_err(|_| "\\denali\\bundle.bin is missing from the disk image")?;
    drop(fs);

    let entry = place_kernel(&kernel)?;
    let bundle_addr = pages(bundle.len() as u64, None)?;
    // SAFETY: `bundle_addr` has room for the bundle (just allocated).
    unsafe { core::ptr::copy_nonoverlapping(bundle.as_ptr(), bundle_addr as *mut u8, bundle.len()) };

    let ram_end = boot::memory_map(MemoryType::LOADER_DATA)
        .map_err(|_| "cannot read the memory map")?
        .entries()
        .filter(|d| is_ram(d.ty))
        .map(|d| d.phys_start + d.page_count * PAGE)
        .max()
        .unwrap_or(0);
    let pml4 = build_page_tables(ram_end)?;
    let tsc_khz = measure_tsc_khz();
    let info_addr = pages(size_of::<BootInfo>() as u64, None)?;

    // From here on there is no firmware: no printing, no allocating.
    // SAFETY: nothing of the firmware's is used after this point.
    let map = unsafe { boot::exit_boot_services(Some(MemoryType::LOADER_DATA)) };
    let mut regions = [MemRegion::default(); MAX_MEM_REGIONS];
    let mut count = 0;
    let usable = map.entries().filter(|d| {
        matches!(d.ty, MemoryType::CONVENTIONAL | MemoryType::BOOT_SERVICES_CODE | MemoryType::BOOT_SERVICES_DATA)
    });
    for d in usable {
        let start = d.phys_start.max(LOW_MEMORY_END);
        let end = d.phys_start + d.page_count * PAGE;
        if start >= end {
            continue;
        }
        if count > 0 && regions[count - 1].end == start {
            regions[count - 1].end = end;
        } else if count < MAX_MEM_REGIONS {
            regions[count] = MemRegion { start, end };
            count += 1;
        } else {
            // Keep the largest regions: replace the smallest if smaller.
            let (smallest, _) = regions.iter().enumerate().min_by_key(|(_, r)| r.end - r.start).expect("full");
            if regions[smallest].end - regions[smallest].start < end - start {
                regions[smallest] = MemRegion { start, end };
            }
        }
    }
    let info = BootInfo {
        magic: BOOT_MAGIC,
        abi_version: denali_abi::ABI_VERSION,
        region_count: count as u32,
        bundle_addr,
        bundle_len: bundle.len() as u64,
        tsc_khz,
        regions,
        flags: BOOT_FLAG_PCI,
        time_limit_ms: 0,
        net_mmio: 0,
        blk_mmio: 0,
        // The kernel reads the machine's real-time clock itself.
        unix_time_ns: 0,
        debug_vm: 0,
    };
    // SAFETY: `info_addr` is a page of ours, identity-mapped, large enough.
    unsafe { (info_addr as *mut BootInfo).write(info) };
    // SAFETY: the new tables map this code (identity), the kernel and all
    // RAM; the kernel's entry sets up its own stack and never returns.
    unsafe {
        core::arch::asm!(
            "cli",
            "mov cr3, {pml4}",
            "jmp {entry}",
            pml4 = in(reg) pml4,
            entry = in(reg) entry,
            in("rdi") info_addr,
            options(noreturn),
        )
    }
}

fn is_ram(ty: MemoryType) -> bool {
    matches!(
        ty,
        MemoryType::CONVENTIONAL
            | MemoryType::BOOT_SERVICES_CODE
            | MemoryType::BOOT_SERVICES_DATA
            | MemoryType::LOADER_CODE
            | MemoryType::LOADER_DATA
            | MemoryType::RUNTIME_SERVICES_CODE
            | MemoryType::RUNTIME_SERVICES_DATA
            | MemoryType::ACPI_RECLAIM
            | MemoryType::ACPI_NON_VOLATILE
    )
}

/// Copies the kernel's loadable segments to their physical addresses and
/// returns its (virtual) entry point.
fn place_kernel(kernel: &[u8]) -> Result<u64, &'static str> {
    let elf = ElfFile64::<object::Endianness>::parse(kernel).map_err(|_| "\\denali\\kernel.elf is not an ELF file")?;
    let endian = elf.endian();
    let mut segments: Vec<(u64, u64, &[u8])> = Vec::new();
    for ph in elf.elf_program_headers() {
        if ph.p_type(endian) != object::elf::PT_LOAD {
            continue;
        }
        let data = ph.data(endian, kernel).map_err(|_| "the kernel's segments lie outside its file")?;
        segments.push((ph.p_paddr(endian), ph.p_memsz(endian), data));
    }
    let start = segments.iter().map(|s| s.0).min().ok_or("the kernel has no loadable segment")?;
    let end = segments.iter().map(|s| s.0 + s.1).max().unwrap_or(start);
    if start < KERNEL_PHYS_LOAD || end - start > GIB {
        return Err("the kernel is not linked where Denali kernels are");
    }
    let base = start & !(PAGE - 1);
    pages(end - base, Some(base))?;
    for (addr, memsz, data) in segments {
        if data.len() as u64 > memsz {
            return Err("a kernel segment is larger in the file than in memory");
        }
        // SAFETY: the pages [base, end) were just allocated for the kernel;
        // each segment lies inside them (zeroed, so .bss needs nothing).
        unsafe { core::ptr::copy_nonoverlapping(data.as_ptr(), addr as *mut u8, data.len()) };
    }
    Ok(elf.elf_header().e_entry(endian))
}

/// The kernel's page tables (`denali_abi::boot::boot_page_tables`, with
/// the identity map this loader jumps from); returns the PML4's address.
fn build_page_tables(ram_end: u64) -> Result<u64, &'static str> {
    let base = pages(denali_abi::boot::boot_page_tables_len(ram_end), None)?;
    for (addr, entry) in denali_abi::boot::boot_page_tables(base, ram_end, true) {
        // SAFETY: every write lands in the zeroed pages just allocated
        // (identity-mapped by the firmware).
        unsafe { (addr as *mut u64).write(entry) };
    }
    Ok(base)
}

/// TSC ticks per millisecond, against the firmware's stall timer.
fn measure_tsc_khz() -> u64 {
    const MS: u64 = 50;
    // SAFETY: rdtsc has no side effects.
    let start = unsafe { core::arch::x86_64::_rdtsc() };
    boot::stall(Duration::from_millis(MS));
    // SAFETY: as above.
    let end = unsafe { core::arch::x86_64::_rdtsc() };
    (end - start) / MS
}
