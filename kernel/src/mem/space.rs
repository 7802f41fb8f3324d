//! A VM's address space: its own PML4, whose lower half maps the VM's flat
//! memory with user rights and whose upper half is the kernel's, shared and
//! supervisor-only.
//!
//! Flat addresses are [`GuestAddr`]s; the only way from one to a frame (and
//! so a kernel pointer) is [`AddressSpace::frame_of`], which checks the page
//! is mapped with user rights (and writable, when asked).

use super::frame::{FRAME_SIZE, FrameAllocator};
use super::guest::GuestAddr;
use super::phys::{self, Frames};
use alloc::vec::Vec;
use denali_abi::layout::IMAGE_BASE;
use x86_64::structures::paging::mapper::{MapToError, TranslateResult};
use x86_64::structures::paging::page_table::PageTableEntry;
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

/// Who owns a mapped frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backing {
    /// The VM's alone; freed with its address space.
    Private,
    /// An image frame every VM of that image maps read-only.
    Shared,
    /// An image frame of a writable segment: shared and read-only until the
    /// VM first writes it, then replaced by a private copy.
    CopyOnWrite,
}

/// Page-table bit (available to software) marking a shared page the VM may
/// write after copying it.
const COPY_ON_WRITE: Flags = Flags::BIT_10;

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
    /// The frames of its page tables.
    tables: Vec<u64>,
    /// Its private pages: flat address and frame (never the shared image
    /// frames). Freeing a space frees exactly these and the tables, without
    /// walking the tables; swapping a VM out takes these.
    private: Vec<(u64, u64)>,
}

/// An image's page tables, made once: its shared pages mapped. A VM's
/// space starts as a copy of them ([`AddressSpace::from_prototype`]): a few
/// whole-table copies instead of a walk per page.
pub struct Prototype {
    space: AddressSpace,
    /// Where one of its tables points at another, as indices into
    /// `space.tables`, to point each copy at its own copy.
    links: Vec<Link>,
}

/// An entry of table `table` at `index` that points at table `child`.
#[derive(Clone, Copy, Debug)]
struct Link {
    table: u16,
    index: u16,
    child: u16,
}

impl Prototype {
    /// Page-table frames each space made from it takes.
    pub fn tables(&self) -> u64 {
        self.space.tables.len() as u64
    }
}

/// A private page taken out of a space (see [`AddressSpace::take_private`]):
/// where it was, its frame, and its page-table flags, to map it back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TakenPage {
    /// Flat address.
    pub vaddr: u64,
    /// The frame, now the caller's.
    pub frame: u64,
    /// Its page-table flags.
    pub flags: u64,
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
        Some(AddressSpace { pml4, tables: alloc::vec![pml4], private: Vec::new() })
    }

    /// Makes this space (with no private pages) the prototype of others:
    /// notes which of its tables point at which. Gives the space back if
    /// the kernel heap has no room for the notes.
    pub fn into_prototype(self) -> Result<Prototype, AddressSpace> {
        debug_assert!(self.private.is_empty(), "a prototype maps only shared pages");
        match self.links() {
            Some(links) => Ok(Prototype { space: self, links }),
            None => Err(self),
        }
    }

    /// Every entry of the lower half's tables that points at another of
    /// them (`None`: no heap for the list).
    fn links(&self) -> Option<Vec<Link>> {
        let mut links = Vec::new();
        for (table, &frame) in self.tables.iter().enumerate() {
            // SAFETY: a table frame of this space, in the physmap, only read.
            let entries = unsafe { &*(phys::to_virt(frame) as *const PageTable) };
            // The PML4's upper half is the kernel's: shared, never copied.
            let lower = if frame == self.pml4 { 256 } else { 512 };
            for (index, entry) in entries.iter().enumerate().take(lower) {
                let child = self.tables.iter().position(|&t| t == entry.addr().as_u64());
                if let Some(child) = child.filter(|_| entry.flags().contains(Flags::PRESENT)) {
                    links.try_reserve(1).ok()?;
                    links.push(Link { table: table as u16, index: index as u16, child: child as u16 });
                }
            }
        }
        Some(links)
    }

    /// A space mapping what `prototype` maps: each of its tables copied into
    /// a fresh frame and linked to the copies. `None` (and nothing taken)
    /// if memory or kernel heap runs out.
    pub fn from_prototype(prototype: &Prototype, frames: &mut FrameAllocator) -> Option<Self> {
        let source = &prototype.space.tables;
        let mut tables = Vec::new();
        tables.try_reserve_exact(source.len() + 3).ok()?;
        for &from in source {
            let Some(to) = frames.alloc() else {
                tables.iter().for_each(|&frame| frames.free(frame));
                return None;
            };
            // SAFETY: `from` is a table of the prototype and `to` a fresh
            // frame of ours, both whole frames in the physmap; the copy
            // overwrites every byte, so `to` needs no zeroing first.
            unsafe { core::ptr::copy_nonoverlapping(phys::to_virt(from), phys::to_virt(to), FRAME_SIZE as usize) };
            tables.push(to);
        }
        for link in &prototype.links {
            // SAFETY: the link's table is one of the copies just made, ours.
            let table = unsafe { &mut *(phys::to_virt(tables[usize::from(link.table)]) as *mut PageTable) };
            let entry = &mut table[usize::from(link.index)];
            let flags = entry.flags();
            entry.set_addr(PhysAddr::new(tables[usize::from(link.child)]), flags);
        }
        let pml4 = tables[source.iter().position(|&t| t == prototype.space.pml4).unwrap_or(0)];
        Some(AddressSpace { pml4, tables, private: Vec::new() })
    }

    /// The space's page tables, and the list of its table frames (the
    /// mapper adds the ones it allocates).
    fn parts(&mut self) -> (OffsetPageTable<'_>, &mut Vec<u64>) {
        // SAFETY: the PML4 is a frame this space owns, reached through the
        // physmap, which maps all physical memory at PHYS_OFFSET; nothing
        // else holds a reference to it while `self` is borrowed.
        let mapper = unsafe {
            let table = &mut *(phys::to_virt(self.pml4) as *mut PageTable);
            OffsetPageTable::new(table, phys::virt_addr(0))
        };
        (mapper, &mut self.tables)
    }

    /// The frame for CR3.
    pub fn root(&self) -> PhysFrame {
        PhysFrame::containing_address(PhysAddr::new(self.pml4))
    }

    /// Maps a fresh zeroed frame at flat address `vaddr` (page aligned) and
    /// returns the frame.
    pub fn map_zeroed(
        &mut self,
        frames: &mut FrameAllocator,
        vaddr: GuestAddr,
        rights: Rights,
    ) -> Result<u64, MapError> {
        let frame = phys::alloc_zeroed(frames).ok_or(MapError::OutOfMemory)?;
        self.map_frame(frames, vaddr, frame, rights, Backing::Private).inspect_err(|_| frames.free(frame))?;
        Ok(frame)
    }

    /// Maps `frame` at flat address `vaddr` (page aligned). A `Shared` or
    /// `CopyOnWrite` frame stays its owner's: destroying this space leaves
    /// it alone, and a copy-on-write page is mapped read-only until
    /// [`AddressSpace::break_cow`] gives the VM its own copy.
    pub fn map_frame(
        &mut self,
        frames: &mut FrameAllocator,
        vaddr: GuestAddr,
        frame: u64,
        rights: Rights,
        backing: Backing,
    ) -> Result<(), MapError> {
        let vaddr = vaddr.as_u64();
        let mut flags = Flags::PRESENT | Flags::USER_ACCESSIBLE;
        match backing {
            Backing::Private if rights.write => flags |= Flags::WRITABLE,
            Backing::Private | Backing::Shared => {}
            Backing::CopyOnWrite => flags |= COPY_ON_WRITE,
        }
        if !rights.exec {
            flags |= Flags::NO_EXECUTE;
        }
        let parents = Flags::PRESENT | Flags::WRITABLE | Flags::USER_ACCESSIBLE;
        let page = Page::<Size4KiB>::containing_address(VirtAddr::new(vaddr));
        let target = PhysFrame::containing_address(PhysAddr::new(frame));
        self.room_for_one()?;
        // Where the tables above the page are there already (every touch
        // but the first few of a region), the entry is written directly:
        // the general mapper costs a first touch about a hundred more
        // instructions.
        if let Some(entry) = self.walk(vaddr, parents) {
            if !entry.is_unused() {
                return Err(MapError::AlreadyMapped);
            }
            entry.set_frame(target, flags);
            phys::flush_page(vaddr);
        } else {
            let (mut mapper, owned) = self.parts();
            // SAFETY: the frame is either fresh and exclusively this VM's, or
            // a shared image frame mapped without write access; either way no
            // writable alias to another VM's memory is created.
            let result =
                unsafe { mapper.map_to_with_table_flags(page, target, flags, parents, &mut Frames { frames, owned }) };
            match result {
                Ok(flush) => phys::flush_tlb(flush),
                Err(MapToError::FrameAllocationFailed) => return Err(MapError::OutOfMemory),
                Err(_) => return Err(MapError::AlreadyMapped),
            }
        }
        if backing == Backing::Private {
            self.private.push((vaddr, frame));
        }
        Ok(())
    }

    /// Gives the VM its own writable copy of the copy-on-write page holding
    /// `vaddr`. Returns false if that page is not copy-on-write.
    pub fn break_cow(&mut self, frames: &mut FrameAllocator, vaddr: GuestAddr) -> Result<bool, MapError> {
        let Ok(addr) = VirtAddr::try_new(vaddr.as_u64()) else { return Ok(false) };
        let TranslateResult::Mapped { frame: shared, flags, .. } = self.parts().0.translate(addr) else {
            return Ok(false);
        };
        if !flags.contains(COPY_ON_WRITE) {
            return Ok(false);
        }
        self.room_for_one()?;
        let copy = frames.alloc().ok_or(MapError::OutOfMemory)?;
        // SAFETY: `copy` is a fresh frame and `shared` a mapped image frame,
        // both whole frames in the physmap.
        unsafe {
            core::ptr::copy_nonoverlapping(
                phys::to_virt(shared.start_address().as_u64()),
                phys::to_virt(copy),
                FRAME_SIZE as usize,
            )
        };
        let page = Page::<Size4KiB>::containing_address(addr);
        let new_flags = (flags - COPY_ON_WRITE) | Flags::WRITABLE;
        let target = PhysFrame::containing_address(PhysAddr::new(copy));
        let (mut mapper, owned) = self.parts();
        if let Ok((_, flush)) = mapper.unmap(page) {
            phys::flush_tlb(flush);
        }
        let parents = Flags::PRESENT | Flags::WRITABLE | Flags::USER_ACCESSIBLE;
        // SAFETY: the page was just unmapped and `copy` is this VM's alone.
        match unsafe { mapper.map_to_with_table_flags(page, target, new_flags, parents, &mut Frames { frames, owned }) }
        {
            Ok(flush) => {
                phys::flush_tlb(flush);
                self.private.push((page.start_address().as_u64(), copy));
                Ok(true)
            }
            Err(_) => {
                frames.free(copy);
                Err(MapError::OutOfMemory)
            }
        }
    }

    /// Gives the VM its own copy of every image page it maps (shared and
    /// copy-on-write alike, from `IMAGE_BASE` up), so that a debugger may
    /// write any page of it there without touching another VM's. A copy-on-write page becomes
    /// writable, as the VM's own first write would make it; a shared page
    /// keeps its rights. Returns how many pages were copied, and whether
    /// all were (when memory runs out, the pages copied so far stay the
    /// VM's).
    pub fn privatize_all(&mut self, frames: &mut FrameAllocator) -> (u64, bool) {
        let private = &mut self.private;
        // The copies join the list; only the pages it held before can be
        // the VM's already.
        let owned_before = private.len();
        let mut copied = 0;
        let walked = for_each_user_leaf(self.pml4, 0, 0, &mut |vaddr, entry| {
            let shared = entry.addr().as_u64();
            // Below the image lie the kernel's pages (the info page, the
            // register state and its save and restore routines, which run
            // with interrupts off): never the debugger's to write.
            if vaddr < IMAGE_BASE || private[..owned_before].iter().any(|&(_, frame)| frame == shared) {
                return Ok(());
            }
            private.try_reserve(1).map_err(|_| MapError::OutOfMemory)?;
            let copy = frames.alloc().ok_or(MapError::OutOfMemory)?;
            // SAFETY: `copy` is a fresh frame and `shared` a mapped image
            // frame, both whole frames in the physmap.
            unsafe { core::ptr::copy_nonoverlapping(phys::to_virt(shared), phys::to_virt(copy), FRAME_SIZE as usize) };
            let mut flags = entry.flags();
            if flags.contains(COPY_ON_WRITE) {
                flags = (flags - COPY_ON_WRITE) | Flags::WRITABLE;
            }
            entry.set_addr(PhysAddr::new(copy), flags);
            phys::flush_page(vaddr);
            private.push((vaddr, copy));
            copied += 1;
            Ok(())
        });
        (copied, walked.is_ok())
    }

    /// Makes room to note one more private page and the page tables a
    /// mapping may add, so that mapping a page never fails halfway for
    /// want of kernel heap (it fails as a page does for want of a frame).
    fn room_for_one(&mut self) -> Result<(), MapError> {
        self.private.try_reserve(1).map_err(|_| MapError::OutOfMemory)?;
        self.tables.try_reserve(3).map_err(|_| MapError::OutOfMemory)
    }

    /// The physical frame behind the page holding `vaddr`, if it is mapped
    /// for the VM (and writable by it, when `write`).
    ///
    /// Every pointer a hypercall carries comes here, so it is the space's
    /// own walk (no huge pages in a VM's half) rather than the general
    /// `translate`, which costs three times the instructions.
    pub fn frame_of(&mut self, vaddr: GuestAddr, write: bool) -> Option<u64> {
        let needed = if write {
            Flags::PRESENT | Flags::USER_ACCESSIBLE | Flags::WRITABLE
        } else {
            Flags::PRESENT | Flags::USER_ACCESSIBLE
        };
        let entry = self.leaf(vaddr.as_u64())?;
        entry.flags().contains(needed).then(|| entry.addr().as_u64())
    }

    /// Frees every frame the space owns: its tables and private pages, never
    /// the shared image frames (they belong to the image).
    pub fn destroy(self, frames: &mut FrameAllocator) {
        for frame in self.tables.into_iter().chain(self.private.into_iter().map(|(_, frame)| frame)) {
            frames.free(frame);
        }
    }

    /// Private pages mapped.
    pub fn private_pages(&self) -> usize {
        self.private.len()
    }

    /// Unmaps up to `limit` private pages other than the one at `keep` (if
    /// any) and hands them over (their frames are the caller's now). The page tables
    /// stay.
    ///
    /// The `invlpg` of each unmapping is all the TLB needs: the kernel uses
    /// no PCIDs and maps no user page global, so another space's entries
    /// for these pages went with its last CR3 load.
    pub fn take_private(&mut self, keep: Option<GuestAddr>, limit: usize) -> Vec<TakenPage> {
        let keep = keep.map(GuestAddr::as_u64);
        let mut pages = Vec::new();
        if pages.try_reserve_exact(self.private.len().min(limit)).is_err() {
            // No heap to note them in: take nothing.
            return pages;
        }
        // The pages kept stay in the list's own memory: nothing allocated.
        let mut private = core::mem::take(&mut self.private);
        private.retain(|&(vaddr, frame)| {
            let wanted = Some(vaddr) != keep && pages.len() < limit;
            let entry = self.leaf(vaddr).filter(|entry| wanted && entry.flags().contains(Flags::PRESENT));
            let Some(entry) = entry else { return true };
            let flags = entry.flags().bits();
            entry.set_unused();
            phys::flush_page(vaddr);
            pages.push(TakenPage { vaddr, frame, flags });
            false
        });
        self.private = private;
        pages
    }

    /// Frames of its page tables (its PML4 included).
    pub fn table_frames(&self) -> u64 {
        self.tables.len() as u64
    }

    /// The last-level page-table entry for the page at `vaddr`, if the
    /// tables above it exist: one walk, nothing allocated (swapping moves
    /// tens of thousands of pages, each costing this where kernel code is
    /// emulated).
    fn leaf(&mut self, vaddr: u64) -> Option<&mut PageTableEntry> {
        self.walk(vaddr, Flags::PRESENT)
    }

    /// The last-level entry for `vaddr`, if every table above it is there
    /// with at least the flags `parents` (the space's own walk: no huge
    /// pages in a VM's half).
    fn walk(&mut self, vaddr: u64, parents: Flags) -> Option<&mut PageTableEntry> {
        let page = Page::<Size4KiB>::containing_address(VirtAddr::try_new(vaddr).ok()?);
        let table = self.last_level_table(page, parents)?;
        // SAFETY: a table of this space's, in the physmap; `&mut self`
        // keeps every table of the space unshared.
        Some(unsafe { &mut (&mut *table)[page.p1_index()] })
    }

    /// The last-level table over `page`, if every table above it is there
    /// with at least the flags `parents`. It lives as long as the space
    /// (tables are freed only with it).
    fn last_level_table(&self, page: Page<Size4KiB>, parents: Flags) -> Option<*mut PageTable> {
        let mut table = phys::to_virt(self.pml4) as *mut PageTable;
        for index in [page.p4_index(), page.p3_index(), page.p2_index()] {
            // SAFETY: `table` is a table of this space (the PML4, or one a
            // present entry above pointed to), in the physmap.
            let entry = unsafe { &(&*table)[index] };
            if !entry.flags().contains(parents) || entry.flags().contains(Flags::HUGE_PAGE) {
                return None;
            }
            table = phys::to_virt(entry.addr().as_u64()) as *mut PageTable;
        }
        Some(table)
    }

    /// Maps a page [`AddressSpace::take_private`] took back in, in a frame
    /// of the caller's (now the space's) holding its contents. Its page
    /// tables are still there, so this takes no other frame.
    ///
    /// # Safety
    ///
    /// `page.frame` must be a frame of RAM the caller owns and hands over
    /// (mapped nowhere else), and `page.flags` flags `take_private` gave.
    pub unsafe fn restore_private(&mut self, frames: &mut FrameAllocator, page: TakenPage) -> Result<(), MapError> {
        let flags = Flags::from_bits_truncate(page.flags);
        let parents = Flags::PRESENT | Flags::WRITABLE | Flags::USER_ACCESSIBLE;
        let target = PhysFrame::containing_address(PhysAddr::new(page.frame));
        let at = Page::<Size4KiB>::containing_address(VirtAddr::new(page.vaddr));
        self.room_for_one()?;
        if let Some(entry) = self.leaf(page.vaddr)
            && fill_in(entry, &page)
        {
            self.private.push((page.vaddr, page.frame));
            return Ok(());
        }
        let (mut mapper, owned) = self.parts();
        // SAFETY: the caller hands over a frame of its own and the flags the
        // page had, so no VM gains access to memory not its own.
        match unsafe { mapper.map_to_with_table_flags(at, target, flags, parents, &mut Frames { frames, owned }) } {
            Ok(flush) => {
                phys::flush_tlb(flush);
                self.private.push((page.vaddr, page.frame));
                Ok(())
            }
            Err(MapToError::FrameAllocationFailed) => Err(MapError::OutOfMemory),
            Err(_) => Err(MapError::AlreadyMapped),
        }
    }

    /// [`AddressSpace::restore_private`] for each of `pages` in order,
    /// until one fails: how many were mapped. A page under the same
    /// last-level table as the page before finds it without walking the
    /// tables again (a swap-in's pages mostly lie side by side), and the
    /// list of private pages makes room for all of them at once.
    ///
    /// # Safety
    ///
    /// As for [`AddressSpace::restore_private`], for each page.
    pub unsafe fn restore_private_run(
        &mut self,
        frames: &mut FrameAllocator,
        pages: impl ExactSizeIterator<Item = TakenPage>,
    ) -> usize {
        let parents = Flags::PRESENT;
        let _ = self.private.try_reserve_exact(pages.len());
        // The table the page before lay under, and its 2 MiB.
        let mut under: Option<(u64, *mut PageTable)> = None;
        let mut mapped = 0;
        for page in pages {
            let Ok(vaddr) = VirtAddr::try_new(page.vaddr) else { break };
            let at = Page::<Size4KiB>::containing_address(vaddr);
            let region = page.vaddr >> TABLE_SPAN_SHIFT;
            if under.is_none_or(|(seen, _)| seen != region) {
                under = self.last_level_table(at, parents).map(|table| (region, table));
            }
            let filled = self.private.len() < self.private.capacity()
                && under.is_some_and(|(_, table)| {
                    // SAFETY: a last-level table of this space's, which lives
                    // as long as the space; `&mut self` keeps it unshared.
                    fill_in(unsafe { &mut (&mut *table)[at.p1_index()] }, &page)
                });
            if filled {
                self.private.push((page.vaddr, page.frame));
            } else {
                // The general way, which may add tables: look again next time.
                under = None;
                // SAFETY: the caller's promise, passed on.
                if unsafe { self.restore_private(frames, page) }.is_err() {
                    break;
                }
            }
            mapped += 1;
        }
        mapped
    }
}

/// Flat address bits one last-level table covers (2 MiB).
const TABLE_SPAN_SHIFT: u32 = 21;

/// Maps `page` at `entry` if the entry is free for it: unused, or (in a
/// space made again from its prototype) the image's copy-on-write page,
/// whose frame the image owns. False if the entry maps something else.
fn fill_in(entry: &mut PageTableEntry, page: &TakenPage) -> bool {
    let shared = entry.flags().contains(COPY_ON_WRITE);
    if !(entry.is_unused() || shared) {
        return false;
    }
    entry.set_addr(PhysAddr::new(page.frame), Flags::from_bits_truncate(page.flags));
    if shared {
        phys::flush_page(page.vaddr);
    }
    true
}

/// Calls `visit` with the flat address and entry of every page the VM's
/// tables map with user rights, below `table` (a table at `level`, 0 the
/// PML4, covering flat addresses from `base`): the lower half only, where
/// the VM lives; the kernel's upper half is never touched.
fn for_each_user_leaf(
    table: u64,
    level: u32,
    base: u64,
    visit: &mut dyn FnMut(u64, &mut PageTableEntry) -> Result<(), MapError>,
) -> Result<(), MapError> {
    // SAFETY: `table` is a page-table frame of the space being walked, in
    // the physmap; the kernel is single-threaded and holds no other
    // reference to it while the walk runs.
    let table = unsafe { &mut *(phys::to_virt(table) as *mut PageTable) };
    let span = 1u64 << (39 - 9 * level);
    let entries = if level == 0 { 256 } else { 512 };
    for index in 0..entries {
        let entry = &mut table[index];
        let flags = entry.flags();
        if !flags.contains(Flags::PRESENT | Flags::USER_ACCESSIBLE) || flags.contains(Flags::HUGE_PAGE) {
            continue;
        }
        let vaddr = base + index as u64 * span;
        if level == 3 {
            visit(vaddr, entry)?;
        } else {
            for_each_user_leaf(entry.addr().as_u64(), level + 1, vaddr, visit)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::frames;

    const CODE: Rights = Rights { write: false, exec: true };
    const DATA: Rights = Rights { write: true, exec: false };

    #[test]
    fn spaces_made_from_a_prototype_share_its_pages_and_no_table() {
        let mut frames = frames(4);
        let kernel = phys::alloc_zeroed(&mut frames).unwrap();
        let (code, data) = (phys::alloc_zeroed(&mut frames).unwrap(), phys::alloc_zeroed(&mut frames).unwrap());
        let mut space = AddressSpace::new(&mut frames, kernel).unwrap();
        space.map_frame(&mut frames, GuestAddr::new(0x10_0000), code, CODE, Backing::Shared).unwrap();
        space.map_frame(&mut frames, GuestAddr::new(0x10_1000), data, DATA, Backing::CopyOnWrite).unwrap();
        let prototype = space.into_prototype().ok().unwrap();
        let mut a = AddressSpace::from_prototype(&prototype, &mut frames).unwrap();
        let mut b = AddressSpace::from_prototype(&prototype, &mut frames).unwrap();
        for space in [&mut a, &mut b] {
            assert_eq!(space.frame_of(GuestAddr::new(0x10_0000), false), Some(code));
            assert_eq!(space.frame_of(GuestAddr::new(0x10_1000), false), Some(data));
            assert_eq!(space.frame_of(GuestAddr::new(0x10_1000), true), None, "copy-on-write stays read-only");
        }
        // A page one space maps next to the shared ones, in the same table,
        // is in no other space made from the prototype, then or later.
        let own = a.map_zeroed(&mut frames, GuestAddr::new(0x10_2000), DATA).unwrap();
        assert_eq!(a.frame_of(GuestAddr::new(0x10_2000), true), Some(own));
        let mut c = AddressSpace::from_prototype(&prototype, &mut frames).unwrap();
        assert_eq!(b.frame_of(GuestAddr::new(0x10_2000), false), None);
        assert_eq!(c.frame_of(GuestAddr::new(0x10_2000), false), None);
        for table in &a.tables {
            assert!(!b.tables.contains(table) && !prototype.space.tables.contains(table), "table {table:#x} shared");
        }
    }

    #[test]
    fn a_page_under_tables_already_there_maps_as_one_under_new_tables() {
        let mut frames = frames(4);
        let kernel = phys::alloc_zeroed(&mut frames).unwrap();
        let mut space = AddressSpace::new(&mut frames, kernel).unwrap();
        // The first page of a region makes its tables; the next is written
        // under them directly.
        let first = space.map_zeroed(&mut frames, GuestAddr::new(0x20_0000), DATA).unwrap();
        let tables = space.tables.len();
        let second = space.map_zeroed(&mut frames, GuestAddr::new(0x20_1000), DATA).unwrap();
        assert_eq!(space.tables.len(), tables, "no table more");
        let (a, b) = (space.leaf(0x20_0000).unwrap().clone(), space.leaf(0x20_1000).unwrap().clone());
        assert_eq!((a.addr().as_u64(), b.addr().as_u64()), (first, second));
        assert_eq!(a.flags(), b.flags());
        assert_eq!(space.frame_of(GuestAddr::new(0x20_1000), true), Some(second));
        let again = space.map_frame(&mut frames, GuestAddr::new(0x20_1000), first, DATA, Backing::Private);
        assert_eq!(again, Err(MapError::AlreadyMapped), "a mapped page is never mapped over");
        assert_eq!(space.frame_of(GuestAddr::new(0x20_1000), true), Some(second));
        assert_eq!(space.private_pages(), 2);
    }

    /// A prototype with one copy-on-write page at 0x10_1000, and a space
    /// made from it that has written that page (its own copy now).
    fn space_with_its_copy_of_an_image_page(frames: &mut FrameAllocator) -> (Prototype, AddressSpace) {
        let kernel = phys::alloc_zeroed(frames).unwrap();
        let data = phys::alloc_zeroed(frames).unwrap();
        let mut space = AddressSpace::new(frames, kernel).unwrap();
        space.map_frame(frames, GuestAddr::new(0x10_1000), data, DATA, Backing::CopyOnWrite).unwrap();
        let prototype = space.into_prototype().ok().unwrap();
        let mut a = AddressSpace::from_prototype(&prototype, frames).unwrap();
        assert!(a.break_cow(frames, GuestAddr::new(0x10_1000)).unwrap());
        (prototype, a)
    }

    #[test]
    fn a_private_copy_comes_back_over_the_copy_on_write_page() {
        let mut frames = frames(4);
        let (prototype, mut a) = space_with_its_copy_of_an_image_page(&mut frames);
        let taken = a.take_private(None, usize::MAX);
        assert_eq!(taken.len(), 1);
        a.destroy(&mut frames);
        // Swapped out whole and back: a fresh copy of the prototype, with
        // the private copy where the image's page was.
        let mut again = AddressSpace::from_prototype(&prototype, &mut frames).unwrap();
        // SAFETY: the frame and flags take_private handed over.
        unsafe { again.restore_private(&mut frames, taken[0]) }.unwrap();
        assert_eq!(again.frame_of(GuestAddr::new(0x10_1000), true), Some(taken[0].frame));
        assert_eq!(again.private_pages(), 1);
    }

    #[test]
    fn a_run_of_pages_comes_back_under_tables_old_and_new_and_stops_at_one_that_cannot() {
        let mut frames = frames(4);
        // Its copy of the image's page, one page beside it (under the
        // image's table), and two in a 2 MiB the image has no table for.
        let (prototype, mut a) = space_with_its_copy_of_an_image_page(&mut frames);
        for vaddr in [0x10_2000, 0x40_0000, 0x40_1000] {
            a.map_zeroed(&mut frames, GuestAddr::new(vaddr), DATA).unwrap();
        }
        let taken = a.take_private(None, usize::MAX);
        assert_eq!(taken.len(), 4);
        a.destroy(&mut frames);
        // Out whole and back: a fresh copy of the prototype's tables, and
        // every page where it was; the table for 0x40_0000 is made anew.
        let mut again = AddressSpace::from_prototype(&prototype, &mut frames).unwrap();
        let tables = again.table_frames();
        // SAFETY: the frames and flags take_private handed over.
        let mapped = unsafe { again.restore_private_run(&mut frames, taken.iter().copied()) };
        assert_eq!(mapped, 4);
        for page in &taken {
            assert_eq!(again.frame_of(GuestAddr::new(page.vaddr), true), Some(page.frame), "{:#x}", page.vaddr);
        }
        assert_eq!((again.private_pages(), again.table_frames()), (4, tables + 1));
        // A page already mapped, or at no flat address, ends the run there.
        let more = TakenPage { vaddr: 0x40_2000, ..taken[3] };
        let bad = [TakenPage { vaddr: 0x40_0000, ..taken[3] }, more];
        // SAFETY: nothing is mapped: the first page is refused, the run ends.
        assert_eq!(unsafe { again.restore_private_run(&mut frames, bad.into_iter()) }, 0);
        let frame = phys::alloc_zeroed(&mut frames).unwrap();
        let odd = [more, TakenPage { vaddr: 0x8000_0000_0000, ..taken[3] }].map(|page| TakenPage { frame, ..page });
        // SAFETY: the first page maps a fresh frame of the test's; the
        // second is refused before anything is mapped for it.
        assert_eq!(unsafe { again.restore_private_run(&mut frames, odd.into_iter()) }, 1);
        assert_eq!(again.frame_of(GuestAddr::new(0x40_2000), true), Some(frame));
    }
}
