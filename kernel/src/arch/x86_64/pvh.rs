//! The PVH boot path: `qemu-system-x86_64 -kernel denali-kernel -initrd
//! bundle` (and any loader that speaks Xen's PVH protocol) enters here.
//!
//! The ELF note `XEN_ELFNOTE_PHYS32_ENTRY` names `pvh_start32`, entered in
//! 32-bit protected mode with paging off and `ebx` pointing at an
//! `hvm_start_info`. The stub maps the low 4 GiB (identity-mapped, at
//! `PHYS_OFFSET`, and the low 2 GiB at `KERNEL_BASE`), enters long mode,
//! and calls [`pvh_boot_info`], which maps the RAM above 4 GiB too (up to
//! [`MAPPED_END`]) so the physmap covers all memory as under our other
//! loaders, and turns the start info (memory map, the bundle as the first
//! module, the command line) into a `BootInfo`; then the kernel starts as it
//! does under our monitor.
//!
//! The command line may say `denali.time_limit_ms=N` ([`PVH_TIME_LIMIT_KEY`]): the run ends after
//! N ms with the kernel's report, as `--timeout` does under our monitor.

use super::entry::BOOT_STACK_SIZE;
use crate::mem::phys;
use denali_abi::boot::{
    BOOT_FLAG_PCI, BOOT_MAGIC, BootInfo, KERNEL_PHYS_LOAD, MAX_MEM_REGIONS, MemRegion, PVH_TIME_LIMIT_KEY,
};
use x86_64::instructions::port::Port;

/// PML4, one PDPT for the low half, one for the top, four PDs (4 GiB).
#[repr(C, align(4096))]
struct Tables([u64; 512 * 7]);

#[unsafe(no_mangle)]
static mut PVH_TABLES: Tables = Tables([0; 512 * 7]);

/// Where the low PDPT (identity and physmap) is in [`PVH_TABLES`].
const LOW_PDPT: usize = 512;

/// One page directory (1 GiB of 2 MiB pages) per GiB from 4 GiB to
/// [`MAPPED_END`], filled by [`map_high_memory`] as far as RAM reaches.
#[repr(C, align(4096))]
struct HighTables([[u64; 512]; HIGH_GIBS]);

const HIGH_GIBS: usize = ((MAPPED_END >> 30) - 4) as usize;

static mut PVH_HIGH_TABLES: HighTables = HighTables([[0; 512]; HIGH_GIBS]);

/// A flat 64-bit code segment for the jump into long mode.
#[unsafe(no_mangle)]
static PVH_GDT: [u64; 3] = [0, 0x00af_9a00_0000_ffff, 0x00cf_9200_0000_ffff];

core::arch::global_asm!(
    // The note the loader reads: name "Xen", type 18, the 32-bit entry.
    ".section .note.Xen, \"a\", @note",
    ".balign 4",
    ".long 4",
    ".long 4",
    ".long 18",
    ".asciz \"Xen\"",
    ".balign 4",
    ".long pvh_start32 - 0xffffffff80000000",
    ".balign 4",
    ".section .text.boot, \"ax\"",
    ".code32",
    ".global pvh_start32",
    "pvh_start32:",
    "    cli",
    "    mov esi, ebx",
    // Four PDs of 2 MiB pages for the low 4 GiB.
    "    mov edi, offset PVH_TABLES - 0xffffffff80000000 + 3 * 4096",
    "    mov eax, 0x83",
    "    xor edx, edx",
    "    mov ecx, 2048",
    "2:  mov [edi], eax",
    "    mov [edi + 4], edx",
    "    add eax, 0x200000",
    "    adc edx, 0",
    "    add edi, 8",
    "    dec ecx",
    "    jnz 2b",
    // The low PDPT: the four PDs (identity and physmap share it).
    "    mov edi, offset PVH_TABLES - 0xffffffff80000000 + 4096",
    "    mov eax, offset PVH_TABLES - 0xffffffff80000000 + 3 * 4096 + 3",
    "    mov ecx, 4",
    "3:  mov [edi], eax",
    "    add eax, 4096",
    "    add edi, 8",
    "    dec ecx",
    "    jnz 3b",
    // The top PDPT: its last two slots map the low 2 GiB at KERNEL_BASE.
    "    mov edi, offset PVH_TABLES - 0xffffffff80000000 + 2 * 4096 + 510 * 8",
    "    mov eax, offset PVH_TABLES - 0xffffffff80000000 + 3 * 4096 + 3",
    "    mov [edi], eax",
    "    add eax, 4096",
    "    mov [edi + 8], eax",
    // PML4: 0 (identity) and 256 (physmap) to the low PDPT, 511 to the top.
    "    mov edi, offset PVH_TABLES - 0xffffffff80000000",
    "    mov eax, offset PVH_TABLES - 0xffffffff80000000 + 4096 + 3",
    "    mov [edi], eax",
    "    mov [edi + 256 * 8], eax",
    "    mov eax, offset PVH_TABLES - 0xffffffff80000000 + 2 * 4096 + 3",
    "    mov [edi + 511 * 8], eax",
    // Long mode: PAE, the tables, EFER.LME, paging.
    "    mov cr3, edi",
    "    mov eax, cr4",
    "    or eax, 0x20",
    "    mov cr4, eax",
    "    mov ecx, 0xc0000080",
    "    rdmsr",
    "    or eax, 0x100",
    "    wrmsr",
    "    mov eax, cr0",
    "    or eax, 0x80000001",
    "    mov cr0, eax",
    "    lgdt [pvh_gdt_pointer - 0xffffffff80000000]",
    "    mov eax, offset pvh_start64 - 0xffffffff80000000",
    "    push 0x08",
    "    push eax",
    "    retf",
    ".code64",
    "pvh_start64:",
    "    mov ax, 0x10",
    "    mov ds, ax",
    "    mov es, ax",
    "    mov ss, ax",
    "    movabs rax, offset pvh_high",
    "    jmp rax",
    "pvh_high:",
    "    lea rsp, [rip + BOOT_STACK + {size}]",
    "    mov edi, esi",
    "    call pvh_boot_info",
    "    mov rdi, rax",
    "    call kernel_main",
    "5:  hlt",
    "    jmp 5b",
    ".section .rodata",
    ".balign 8",
    "pvh_gdt_pointer:",
    ".word 3 * 8 - 1",
    ".long PVH_GDT - 0xffffffff80000000",
    ".section .text",
    size = const BOOT_STACK_SIZE,
);

/// `struct hvm_start_info` (Xen's PVH ABI).
#[repr(C)]
struct StartInfo {
    magic: u32,
    version: u32,
    flags: u32,
    nr_modules: u32,
    modlist_paddr: u64,
    cmdline_paddr: u64,
    rsdp_paddr: u64,
    memmap_paddr: u64,
    memmap_entries: u32,
    reserved: u32,
}

/// `struct hvm_modlist_entry`.
#[repr(C)]
struct Module {
    paddr: u64,
    size: u64,
    cmdline_paddr: u64,
    reserved: u64,
}

/// `struct hvm_memmap_table_entry`.
#[repr(C)]
struct MemoryMapEntry {
    addr: u64,
    size: u64,
    kind: u32,
    reserved: u32,
}

const START_INFO_MAGIC: u32 = 0x336e_c578;
const E820_RAM: u32 = 1;
/// What the physmap reaches under PVH: RAM above it is not used. 64 GiB
/// costs 240 KiB of page directories in the kernel image's `.bss`.
const MAPPED_END: u64 = 64 << 30;
/// The longest command line read.
const CMDLINE_MAX: usize = 4096;

/// The `BootInfo` this path hands the kernel.
static mut BOOT_INFO: BootInfo = BootInfo {
    magic: 0,
    abi_version: 0,
    region_count: 0,
    bundle_addr: 0,
    bundle_len: 0,
    tsc_khz: 0,
    regions: [MemRegion { start: 0, end: 0 }; MAX_MEM_REGIONS],
    flags: 0,
    time_limit_ms: 0,
    net_mmio: 0,
    blk_mmio: 0,
    unix_time_ns: 0,
    debug_vm: 0,
};

unsafe extern "C" {
    static __kernel_end: u8;
}

/// Builds the `BootInfo` from the PVH start info at physical `start_info`
/// and returns its physical address.
#[unsafe(no_mangle)]
extern "C" fn pvh_boot_info(start_info: u64) -> u64 {
    // SAFETY: the loader put an hvm_start_info here, below 4 GiB (mapped);
    // it is read once, by value.
    let info = unsafe { core::ptr::read(phys::to_virt(start_info) as *const StartInfo) };
    let mut boot = BootInfo {
        magic: BOOT_MAGIC,
        abi_version: denali_abi::ABI_VERSION,
        region_count: 0,
        bundle_addr: 0,
        bundle_len: 0,
        tsc_khz: 0,
        regions: [MemRegion::default(); MAX_MEM_REGIONS],
        flags: BOOT_FLAG_PCI,
        time_limit_ms: 0,
        net_mmio: 0,
        blk_mmio: 0,
        unix_time_ns: 0,
        debug_vm: 0,
    };
    map_high_memory(&info);
    let low = (0, 1 << 20);
    let kernel = (KERNEL_PHYS_LOAD, phys::kernel_virt_to_phys(core::ptr::addr_of!(__kernel_end) as u64));
    let mut bundle = (0, 0);
    if info.magic == START_INFO_MAGIC && info.nr_modules > 0 {
        // SAFETY: as above, for the first module entry.
        let module = unsafe { core::ptr::read(phys::to_virt(info.modlist_paddr) as *const Module) };
        boot.bundle_addr = module.paddr;
        boot.bundle_len = module.size;
        bundle = (module.paddr & !0xfff, (module.paddr + module.size).next_multiple_of(4096));
    }
    add_regions(&mut boot, &info, &[low, kernel, bundle]);
    if info.magic == START_INFO_MAGIC && info.cmdline_paddr != 0 {
        // SAFETY: the loader's command line, NUL-terminated, in low memory.
        boot.time_limit_ms = unsafe { cmdline(info.cmdline_paddr) }.map_or(0, time_limit_ms);
    }
    boot.tsc_khz = measure_tsc_khz();
    // SAFETY: single-threaded boot; nothing else refers to BOOT_INFO yet.
    unsafe {
        let slot = &raw mut BOOT_INFO;
        slot.write(boot);
        phys::kernel_virt_to_phys(slot as u64)
    }
}

/// Maps the RAM above 4 GiB (to [`MAPPED_END`]) into the physmap, with
/// 2 MiB pages, as the stub mapped the low 4 GiB.
fn map_high_memory(info: &StartInfo) {
    let top = memory_map(info).filter(|e| e.kind == E820_RAM).map(|e| e.addr.saturating_add(e.size)).max();
    let gibs = top.unwrap_or(0).min(MAPPED_END).div_ceil(1 << 30);
    let low_pdpt = (&raw mut PVH_TABLES).cast::<u64>().wrapping_add(LOW_PDPT);
    for gib in 4..gibs {
        let directory = (&raw mut PVH_HIGH_TABLES).cast::<[u64; 512]>().wrapping_add(gib as usize - 4).cast::<u64>();
        // SAFETY: single-threaded boot. `directory` is one of the high
        // tables (gib < MAPPED_END's GiBs) and `low_pdpt + gib` a slot of the
        // low PDPT (gib < 512); only the CPU reads them, and the slot was
        // empty, so no stale translation of these addresses can be cached.
        unsafe {
            for i in 0..512 {
                directory.add(i).write(((gib << 30) + ((i as u64) << 21)) | 0x83);
            }
            low_pdpt.add(gib as usize).write(phys::kernel_virt_to_phys(directory as u64) | 0x3);
        }
    }
}

/// The start info's memory map, entry by entry.
fn memory_map(info: &StartInfo) -> impl Iterator<Item = MemoryMapEntry> + '_ {
    (0..u64::from(info.memmap_entries)).map(|i| {
        let entry_addr = info.memmap_paddr + i * core::mem::size_of::<MemoryMapEntry>() as u64;
        // SAFETY: the loader's memory map, below 4 GiB, read by value.
        unsafe { core::ptr::read(phys::to_virt(entry_addr) as *const MemoryMapEntry) }
    })
}

/// The command line at physical `paddr`, up to its NUL (at most
/// [`CMDLINE_MAX`] bytes), if it is UTF-8.
///
/// # Safety
///
/// `paddr` must be mapped and hold a NUL-terminated string or at least
/// `CMDLINE_MAX` readable bytes.
unsafe fn cmdline(paddr: u64) -> Option<&'static str> {
    let start = phys::to_virt(paddr) as *const u8;
    // SAFETY: the caller's promise: every byte up to the NUL is readable.
    let len = (0..CMDLINE_MAX).find(|&i| unsafe { *start.add(i) } == 0).unwrap_or(CMDLINE_MAX);
    // SAFETY: those `len` bytes were just read; the loader leaves them be.
    core::str::from_utf8(unsafe { core::slice::from_raw_parts(start, len) }).ok()
}

/// The time limit a command line names with [`PVH_TIME_LIMIT_KEY`] (0: none, or
/// not a number).
fn time_limit_ms(cmdline: &str) -> u64 {
    let value = cmdline.split_ascii_whitespace().find_map(|word| word.strip_prefix(PVH_TIME_LIMIT_KEY));
    value.and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// The RAM of the start info's memory map, below [`MAPPED_END`], minus
/// `holes`, as the kernel's usable regions.
fn add_regions(boot: &mut BootInfo, info: &StartInfo, holes: &[(u64, u64)]) {
    let mut count = 0;
    for entry in memory_map(info) {
        if entry.kind != E820_RAM {
            continue;
        }
        let mut pieces = [(entry.addr.next_multiple_of(4096), (entry.addr + entry.size).min(MAPPED_END) & !0xfff); 4];
        let mut n = 1;
        for &(hole_start, hole_end) in holes {
            let mut next = [(0, 0); 4];
            let mut m = 0;
            for &(start, end) in &pieces[..n] {
                for piece in [(start, end.min(hole_start)), (start.max(hole_end), end)] {
                    if piece.0 < piece.1 && m < next.len() {
                        next[m] = piece;
                        m += 1;
                    }
                }
            }
            pieces = next;
            n = m;
        }
        for &(start, end) in &pieces[..n] {
            if count < MAX_MEM_REGIONS {
                boot.regions[count] = MemRegion { start, end };
                count += 1;
            }
        }
    }
    boot.region_count = count as u32;
}

/// TSC ticks per millisecond, against 10 ms of the PIT's channel 2.
fn measure_tsc_khz() -> u64 {
    const PIT_HZ: u64 = 1_193_182;
    const MS: u64 = 10;
    let count = (PIT_HZ * MS / 1000) as u16;
    // SAFETY: the PIT's channel 2 and port 0x61 gate only the speaker
    // timer, which nothing else uses.
    unsafe {
        let mut gate = Port::<u8>::new(0x61);
        let value = gate.read();
        gate.write((value & !0x02) | 0x01);
        Port::<u8>::new(0x43).write(0xb0);
        Port::<u8>::new(0x42).write(count as u8);
        Port::<u8>::new(0x42).write((count >> 8) as u8);
        let start = super::rdtsc();
        while gate.read() & 0x20 == 0 {
            core::hint::spin_loop();
        }
        (super::rdtsc() - start) / MS
    }
}
