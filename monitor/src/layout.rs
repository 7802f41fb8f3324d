//! Guest-physical layout of the KVM VM and the boot page tables.
//!
//! ```text
//! 0x0000_1000  boot GDT
//! 0x0000_2000  BootInfo
//! 0x0001_0000  PML4, then the physmap PDPT, the kernel PDPT and one PD per GiB
//! 0x0020_0000  the kernel ELF's segments (KERNEL_PHYS_LOAD)
//! next 2 MiB   the boot bundle
//! after it     usable RAM, handed to the kernel's frame allocator
//! ```
//!
//! The page tables map all RAM at `PHYS_OFFSET` (the physmap) and the low
//! 2 GiB again at `KERNEL_BASE` (where the kernel is linked), with 2 MiB
//! pages. Nothing is identity-mapped: the vCPU starts with paging on at the
//! kernel's higher-half entry point.

use denali_abi::boot::boot_page_tables_len;

/// Boot GDT.
pub const GDT_ADDR: u64 = 0x1000;
/// BootInfo.
pub const BOOT_INFO_ADDR: u64 = 0x2000;
/// PML4.
pub const PML4_ADDR: u64 = 0x1_0000;
/// Most RAM the boot page tables can map (one PD page per GiB).
pub const MAX_MEM_SIZE: u64 = 64 << 30;
/// End of the page-table area (see `denali_abi::boot::boot_page_tables`).
pub const PAGE_TABLES_END: u64 = PML4_ADDR + boot_page_tables_len(MAX_MEM_SIZE);

/// A flat 64-bit code segment and a data segment.
pub const GDT: [u64; 3] = [0, 0x00af_9b00_0000_ffff, 0x00cf_9300_0000_ffff];
