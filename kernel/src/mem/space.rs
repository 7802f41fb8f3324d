//! A VM's address space: its own PML4, whose lower half maps the VM's flat
//! memory with user rights and whose upper half is the kernel's, shared and
//! supervisor-only.
//!
//! Flat addresses are `u64`s below `mem_size`; the only way from one to a
//! kernel pointer is [`AddressSpace::frame_of`], which checks the page is
//! mapped with user rights (and writable, when asked).

use super::frame::FrameAllocator;
use super::phys::{self, Frames};
use x86_64::structures::paging::mapper::{MapToError, TranslateResult};
use x86_64::structures::paging::{
    Mapper, OffsetPageTable, Page, PageTable, PageTableFlags as Flags, PhysFrame, Size4KiB, Translate,
};
use x86_64::{PhysAddr, VirtAddr};

/// Rights of a page as the VM sees them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rights {
    /// Writable.
    pub write: bool,
    /// Executable.
    pub exec: bool,
}

/// Why a page could not be mapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapError {
    /// No free frame for the page or a page table.
    OutOfMemory,
    /// The page was already mapped.
    AlreadyMapped,
}

/// A VM's page tables.
pub struct AddressSpace {
    pml4: u64,
}

impl AddressSpace {
    /// A new space with nothing in its lower half and the kernel's upper half.
    pub fn new(frames: &mut FrameAllocator, kernel_pml4: u64) -> Option<Self> {
        let pml4 = phys::alloc_zeroed(frames)?;
        // SAFETY: both tables are whole frames in the physmap; the new one is
        // exclusively ours and the kernel's is only read.
        unsafe {
            let kernel = &*(phys::to_virt(kernel_pml4) as *const PageTable);
            let table = &mut *(phys::to_virt(pml4) as *mut PageTable);
            for i in 256..512 {
                table[i] = kernel[i].clone();
            }
        }
        Some(AddressSpace { pml4 })
    }

    fn mapper(&mut self) -> OffsetPageTable<'_> {
        // SAFETY: the PML4 is a frame this space owns, reached through the
        // physmap, which maps all physical memory at PHYS_OFFSET.
        unsafe {
            let table = &mut *(phys::to_virt(self.pml4) as *mut PageTable);
            OffsetPageTable::new(table, phys::virt_addr(0))
        }
    }

    /// The frame for CR3.
    pub fn root(&self) -> PhysFrame {
        PhysFrame::containing_address(PhysAddr::new(self.pml4))
    }

    /// Maps a fresh zeroed frame at flat address `vaddr` (page aligned) and
    /// returns the frame.
    pub fn map_zeroed(&mut self, frames: &mut FrameAllocator, vaddr: u64, rights: Rights) -> Result<u64, MapError> {
        let frame = phys::alloc_zeroed(frames).ok_or(MapError::OutOfMemory)?;
        let mut flags = Flags::PRESENT | Flags::USER_ACCESSIBLE;
        if rights.write {
            flags |= Flags::WRITABLE;
        }
        if !rights.exec {
            flags |= Flags::NO_EXECUTE;
        }
        let parents = Flags::PRESENT | Flags::WRITABLE | Flags::USER_ACCESSIBLE;
        let page = Page::<Size4KiB>::containing_address(VirtAddr::new(vaddr));
        let target = PhysFrame::containing_address(PhysAddr::new(frame));
        // SAFETY: the frame is fresh and zeroed, and it is mapped only into
        // this VM's lower half, so no other mapping aliases it.
        let result =
            unsafe { self.mapper().map_to_with_table_flags(page, target, flags, parents, &mut Frames(frames)) };
        match result {
            Ok(flush) => {
                flush.flush();
                Ok(frame)
            }
            Err(e) => {
                frames.free(frame);
                Err(match e {
                    MapToError::FrameAllocationFailed => MapError::OutOfMemory,
                    _ => MapError::AlreadyMapped,
                })
            }
        }
    }

    /// The physical frame behind the page holding `vaddr`, if it is mapped
    /// for the VM (and writable by it, when `write`).
    pub fn frame_of(&mut self, vaddr: u64, write: bool) -> Option<u64> {
        let addr = VirtAddr::try_new(vaddr).ok()?;
        match self.mapper().translate(addr) {
            TranslateResult::Mapped { frame, flags, .. } => {
                let allowed = flags.contains(Flags::USER_ACCESSIBLE) && (!write || flags.contains(Flags::WRITABLE));
                allowed.then(|| frame.start_address().as_u64())
            }
            _ => None,
        }
    }

    /// Frees every frame of the lower half and the tables themselves.
    pub fn destroy(self, frames: &mut FrameAllocator) {
        fn free_table(frames: &mut FrameAllocator, table_phys: u64, level: u8, entries: usize) {
            // SAFETY: a page-table frame this space owns, via the physmap.
            let table = unsafe { &*(phys::to_virt(table_phys) as *const PageTable) };
            for entry in table.iter().take(entries) {
                if !entry.flags().contains(Flags::PRESENT) {
                    continue;
                }
                let child = entry.addr().as_u64();
                if level > 1 {
                    free_table(frames, child, level - 1, 512);
                } else {
                    frames.free(child);
                }
            }
            frames.free(table_phys);
        }
        free_table(frames, self.pml4, 4, 256);
    }
}
