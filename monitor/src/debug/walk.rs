//! A crashed VM's flat address space, read through its own page tables:
//! only pages those tables give the VM (present and user-accessible at
//! every level, below the top of its space) are ever read, so nothing here
//! can reach the kernel's memory or another VM's.

use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

const PAGE_SIZE: u64 = 4096;
const PRESENT: u64 = 1;
const WRITABLE: u64 = 1 << 1;
const USER: u64 = 1 << 2;
const NO_EXECUTE: u64 = 1 << 63;
const HUGE: u64 = 1 << 7;
const ADDRESS: u64 = 0x000f_ffff_ffff_f000;
/// Bytes one entry of each level maps, top level first.
const LEVEL_SPANS: [u64; 4] = [1 << 39, 1 << 30, 1 << 21, 1 << 12];

/// A page the VM can read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Page {
    /// Its address in the VM's flat space.
    pub va: u64,
    /// The guest-physical frame behind it.
    pub frame: u64,
    /// The VM may write it (at the leaf: a copy-on-write page reads as not
    /// writable).
    pub writable: bool,
    /// The VM may run code from it.
    pub executable: bool,
}

/// One VM's address space in guest memory.
pub struct VmSpace<'a> {
    memory: &'a GuestMemoryMmap,
    /// Guest-physical address of the top-level table.
    root: u64,
    /// The VM sees `[0, size)`.
    size: u64,
}

impl<'a> VmSpace<'a> {
    /// The space whose top-level table is at `root` and which is `size`
    /// bytes long.
    pub fn new(memory: &'a GuestMemoryMmap, root: u64, size: u64) -> Self {
        VmSpace { memory, root, size }
    }

    /// The guest memory the space lies in.
    pub fn memory(&self) -> &'a GuestMemoryMmap {
        self.memory
    }

    /// The guest-physical address behind the VM's address `va`, if the VM
    /// can read it.
    pub fn translate(&self, va: u64) -> Option<u64> {
        if va >= self.size {
            return None;
        }
        let mut table = self.root;
        for (level, span) in LEVEL_SPANS.iter().enumerate() {
            let index = (va / span) % 512;
            let entry = self.entry(table, index)?;
            if level == LEVEL_SPANS.len() - 1 {
                return Some((entry & ADDRESS) + va % PAGE_SIZE);
            }
            table = entry & ADDRESS;
        }
        None
    }

    /// The 8 bytes at the VM's address `va` (aligned), if it can read them.
    pub fn read_u64(&self, va: u64) -> Option<u64> {
        if !va.is_multiple_of(8) {
            return None;
        }
        self.memory.read_obj::<u64>(GuestAddress(self.translate(va)?)).ok()
    }

    /// The VM's readable pages in address order.
    pub fn pages(&self) -> Vec<Page> {
        let mut pages = Vec::new();
        self.collect(self.root, 0, 0, &mut pages);
        pages
    }

    fn collect(&self, table: u64, level: usize, base: u64, pages: &mut Vec<Page>) {
        let span = LEVEL_SPANS[level];
        for index in 0..512 {
            let va = base + index * span;
            if va >= self.size {
                return;
            }
            let Some(entry) = self.entry(table, index) else { continue };
            if level == LEVEL_SPANS.len() - 1 {
                let (writable, executable) = (entry & WRITABLE != 0, entry & NO_EXECUTE == 0);
                pages.push(Page { va, frame: entry & ADDRESS, writable, executable });
            } else {
                self.collect(entry & ADDRESS, level + 1, va, pages);
            }
        }
    }

    /// Entry `index` of the table at `table`, if it maps something the VM
    /// may read (huge pages: the kernel makes none, so they are refused).
    fn entry(&self, table: u64, index: u64) -> Option<u64> {
        let entry = self.memory.read_obj::<u64>(GuestAddress(table + index * 8)).ok()?;
        let usable = entry & PRESENT != 0 && entry & USER != 0 && entry & HUGE == 0;
        let inside = self.memory.address_in_range(GuestAddress(entry & ADDRESS));
        (usable && inside).then_some(entry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Guest memory with one VM's tables at 0x1000.. mapping VM page 0x2000
    /// to frame 0x10000 and VM page 0x3000 to frame 0x11000, plus entries
    /// the walk must refuse.
    fn space() -> GuestMemoryMmap {
        let memory = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x20000)]).unwrap();
        let put = |at: u64, value: u64| memory.write_obj(value, GuestAddress(at)).unwrap();
        let flags = PRESENT | USER | 2;
        put(0x1000, 0x4000 | flags); // PML4[0]
        put(0x4000, 0x5000 | flags); // PDPT[0]
        put(0x5000, 0x6000 | flags); // PD[0]
        put(0x6000 + 2 * 8, 0x10000 | flags); // PT[2]
        put(0x6000 + 3 * 8, 0x11000 | PRESENT | USER); // PT[3], read-only
        put(0x6000 + 4 * 8, 0x12000 | PRESENT); // PT[4]: the kernel's, not the VM's
        put(0x6000 + 5 * 8, 0x7_0000_0000 | flags); // PT[5]: beyond guest memory
        put(0x5000 + 8, 0x200000 | flags | HUGE); // PD[1]: a huge page
        put(0x10000 + 0x18, 0xfeed);
        memory
    }

    #[test]
    fn only_the_vms_own_pages_are_read() {
        let memory = space();
        let vm = VmSpace::new(&memory, 0x1000, 1 << 30);
        assert_eq!(vm.translate(0x2018), Some(0x10018));
        assert_eq!(vm.read_u64(0x2018), Some(0xfeed));
        assert_eq!(vm.read_u64(0x2019), None, "unaligned");
        assert_eq!(vm.translate(0x3000), Some(0x11000));
        assert_eq!(vm.translate(0x4000), None, "a supervisor page");
        assert_eq!(vm.translate(0x5000), None, "a frame outside guest memory");
        assert_eq!(vm.translate(0x200000), None, "a huge page");
        assert_eq!(vm.translate(0x1000), None, "not mapped");
        let page = |va, frame, writable| Page { va, frame, writable, executable: true };
        assert_eq!(vm.pages(), vec![page(0x2000, 0x10000, true), page(0x3000, 0x11000, false)]);
        let small = VmSpace::new(&memory, 0x1000, 0x3000);
        assert_eq!(small.translate(0x3000), None, "beyond the VM's space");
        assert_eq!(small.pages(), vec![page(0x2000, 0x10000, true)]);
    }
}
