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

use denali_abi::boot::{KERNEL_BASE, PHYS_OFFSET};

/// Boot GDT.
pub const GDT_ADDR: u64 = 0x1000;
/// BootInfo.
pub const BOOT_INFO_ADDR: u64 = 0x2000;
/// PML4.
pub const PML4_ADDR: u64 = 0x1_0000;
const PDPT_PHYSMAP_ADDR: u64 = PML4_ADDR + 0x1000;
const PDPT_KERNEL_ADDR: u64 = PML4_ADDR + 0x2000;
const PD_BASE: u64 = PML4_ADDR + 0x3000;
/// Most RAM the boot page tables can map (one PD page per GiB).
pub const MAX_MEM_SIZE: u64 = 64 << 30;
/// End of the page-table area.
pub const PAGE_TABLES_END: u64 = PD_BASE + (MAX_MEM_SIZE >> 30) * 0x1000;

const PRESENT: u64 = 1;
const WRITABLE: u64 = 2;
const HUGE: u64 = 1 << 7;

/// The boot page tables as `(guest address, 8-byte entry)` writes.
pub fn page_table_entries(mem_size: u64) -> Vec<(u64, u64)> {
    let gib = mem_size.div_ceil(1 << 30);
    let mut writes = Vec::new();
    let index = |addr: u64, shift: u32| (addr >> shift) & 0x1ff;
    writes.push((PML4_ADDR + index(PHYS_OFFSET, 39) * 8, PDPT_PHYSMAP_ADDR | PRESENT | WRITABLE));
    writes.push((PML4_ADDR + index(KERNEL_BASE, 39) * 8, PDPT_KERNEL_ADDR | PRESENT | WRITABLE));
    for g in 0..gib {
        let pd = PD_BASE + g * 0x1000;
        writes.push((PDPT_PHYSMAP_ADDR + (index(PHYS_OFFSET, 30) + g) * 8, pd | PRESENT | WRITABLE));
        if g < 2 {
            writes.push((PDPT_KERNEL_ADDR + (index(KERNEL_BASE, 30) + g) * 8, pd | PRESENT | WRITABLE));
        }
        for e in 0..512 {
            let phys = (g << 30) + (e << 21);
            if phys < mem_size {
                writes.push((pd + e * 8, phys | PRESENT | WRITABLE | HUGE));
            }
        }
    }
    writes
}

/// A flat 64-bit code segment and a data segment.
pub const GDT: [u64; 3] = [0, 0x00af_9b00_0000_ffff, 0x00cf_9300_0000_ffff];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_and_physmap_share_the_low_page_directories() {
        let writes = page_table_entries(1 << 30);
        assert!(writes.contains(&(PML4_ADDR + 256 * 8, PDPT_PHYSMAP_ADDR | 3)));
        assert!(writes.contains(&(PML4_ADDR + 511 * 8, PDPT_KERNEL_ADDR | 3)));
        assert!(writes.contains(&(PDPT_KERNEL_ADDR + 510 * 8, PD_BASE | 3)));
        // 512 PD entries for one GiB, plus the four upper-level entries.
        assert_eq!(writes.len(), 512 + 4);
    }
}
