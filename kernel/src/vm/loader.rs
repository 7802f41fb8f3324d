//! Turns a validated `.dvm` image into VMs. An image is loaded once into a
//! [`Template`]: its segments in frames that every VM made from it maps
//! read-only (code and constants) or copy-on-write (data), and page tables
//! mapping them (a [`Prototype`]). Making a VM costs only its record; when
//! it first runs it gets a copy of those tables, its info and CPU state
//! pages ([`Loader::materialize`]), and then the pages it touches: heap and
//! stack pages appear zeroed on first touch (`Vm::populate`), data pages
//! are copied on first write. A VM swapped out whole gives its tables back
//! and gets a fresh copy when it returns.

use super::context::{UserContext, UserSelectors};
use super::state_switch::StateSwitch;
use super::{Layout, State, Stats, Vm};
use crate::mem::frame::{FRAME_SIZE, FrameAllocator};
use crate::mem::guest::GuestAddr;
use crate::mem::phys;
use crate::mem::space::{AddressSpace, Backing, MapError, Prototype, Rights};
use crate::rate::TokenBucket;
use crate::sched::VmId;
use crate::time::Clock;
use alloc::string::String;
use alloc::vec::Vec;
use denali_abi::disk::Window;
use denali_abi::image::{Image, ImageError, SEG_EXEC, SEG_WRITE};
use denali_abi::info::{ARGS_MAX, FEATURE_FS_GS_BASE, FEATURE_RX_COUNT, INFO_MAGIC};
use denali_abi::layout::{CPU_STATE_PAGE, INFO_PAGE, STATE_SWITCH_PAGE};
use denali_abi::net::Ipv4Config;

/// Why a VM could not be made.
#[derive(Clone, Copy, Debug)]
pub enum LoadError {
    /// The image is invalid.
    Image(ImageError),
    /// Not enough physical memory.
    OutOfMemory,
}

impl core::fmt::Display for LoadError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            LoadError::Image(e) => write!(f, "{e}"),
            LoadError::OutOfMemory => write!(f, "out of physical memory"),
        }
    }
}

impl From<MapError> for LoadError {
    fn from(_: MapError) -> Self {
        LoadError::OutOfMemory
    }
}

/// One page of an image, in a frame shared by every VM of the image.
#[derive(Clone, Copy, Debug)]
struct TemplatePage {
    vaddr: u64,
    frame: u64,
    rights: Rights,
}

/// An image loaded once, ready to become any number of VMs.
pub struct Template {
    entry: u64,
    layout: Layout,
    pages: Vec<TemplatePage>,
    /// Page tables mapping the image's pages and the state-switch code.
    prototype: Prototype,
    /// The arguments its VMs get on their info page.
    args: Vec<u8>,
    /// The most frames one of its VMs held while booting (see
    /// `run::starting`), and whether one has booted (before, that is not
    /// known).
    boot_frames: u64,
    one_booted: bool,
}

/// What the loader needs from the kernel.
pub struct Loader<'a> {
    /// Physical memory.
    pub frames: &'a mut FrameAllocator,
    /// The kernel's PML4, whose kernel slots every VM shares.
    pub kernel_pml4: u64,
    /// Segment selectors for ring 3.
    pub selectors: UserSelectors,
    /// The global clock.
    pub clock: Clock,
    /// VMs in this boot.
    pub vm_count: u32,
    /// The code that switches VMs' register state, mapped into each.
    pub state_switch: &'a StateSwitch,
}

impl Template {
    /// Frames holding the image's pages.
    pub fn frames(&self) -> u64 {
        self.pages.len() as u64
    }

    /// Page-table frames a VM of this image holds while it is in memory.
    pub fn tables_per_vm(&self) -> u64 {
        self.prototype.tables()
    }

    /// Frames a VM of this image needs to come into memory before any of
    /// its swapped pages: its tables, and the first time its info and CPU
    /// state pages.
    pub fn frames_to_materialize(&self, first_time: bool) -> u64 {
        self.tables_per_vm() + if first_time { 2 } else { 0 }
    }

    /// Frames a VM of this image is expected to take while booting: the
    /// most (page tables and pages) one of them has held, once one has
    /// booted; before that, as many as its flat space holds.
    pub fn expected_boot_frames(&self) -> u64 {
        if self.one_booted { self.boot_frames } else { self.layout.mem_size.div_ceil(FRAME_SIZE) }
    }

    /// Notes that one of its VMs holds `frames` while booting, and whether
    /// it has booted now.
    pub fn note_boot_frames(&mut self, frames: u64, booted: bool) {
        self.boot_frames = self.boot_frames.max(frames);
        self.one_booted |= booted;
    }
}

impl Loader<'_> {
    /// Validates `bytes`, copies its segments into frames once and maps
    /// them (and the state-switch code) in the template's page tables; its
    /// VMs get `args`.
    pub fn prepare(&mut self, bytes: &[u8], args: &[u8]) -> Result<Template, LoadError> {
        let image = Image::parse(bytes).map_err(LoadError::Image)?;
        let mut pages = Vec::new();
        for segment in image.segments() {
            let rights = Rights { write: segment.flags & SEG_WRITE != 0, exec: segment.flags & SEG_EXEC != 0 };
            let mut vaddr = segment.vaddr;
            while vaddr < segment.vaddr + segment.mem_size {
                let Some(frame) = phys::alloc_zeroed(self.frames) else {
                    pages.iter().for_each(|p: &TemplatePage| self.frames.free(p.frame));
                    return Err(LoadError::OutOfMemory);
                };
                let offset = (vaddr - segment.vaddr) as usize;
                if offset < segment.data.len() {
                    let chunk = &segment.data[offset..segment.data.len().min(offset + FRAME_SIZE as usize)];
                    // SAFETY: `frame` was just allocated for this page and is
                    // reached through the physmap; chunk is at most a frame.
                    unsafe { core::ptr::copy_nonoverlapping(chunk.as_ptr(), phys::to_virt(frame), chunk.len()) };
                }
                pages.push(TemplatePage { vaddr, frame, rights });
                vaddr += FRAME_SIZE;
            }
        }
        let layout = Layout {
            mem_size: image.header().mem_size,
            heap: (image.heap_start(), image.heap_end()),
            stack: (image.stack_bottom(), image.stack_top()),
        };
        let args = &args[..args.len().min(ARGS_MAX)];
        let mut kept_args = Vec::new();
        let prototype = kept_args.try_reserve_exact(args.len()).map_err(|_| LoadError::OutOfMemory);
        let prototype = prototype.and_then(|()| self.prototype(&pages));
        match prototype {
            Ok(prototype) => {
                kept_args.extend_from_slice(args);
                Ok(Template {
                    entry: image.header().entry,
                    layout,
                    pages,
                    prototype,
                    args: kept_args,
                    boot_frames: 0,
                    one_booted: false,
                })
            }
            Err(e) => {
                pages.iter().for_each(|p| self.frames.free(p.frame));
                Err(e)
            }
        }
    }

    /// Page tables mapping the state-switch code and `pages`.
    fn prototype(&mut self, pages: &[TemplatePage]) -> Result<Prototype, LoadError> {
        let mut space = AddressSpace::new(self.frames, self.kernel_pml4).ok_or(LoadError::OutOfMemory)?;
        let code = Rights { write: false, exec: true };
        let switch = GuestAddr::new(STATE_SWITCH_PAGE);
        let mut mapped = space.map_frame(self.frames, switch, self.state_switch.frame, code, Backing::Shared);
        for page in pages {
            if mapped.is_err() {
                break;
            }
            let backing = if page.rights.write { Backing::CopyOnWrite } else { Backing::Shared };
            mapped = space.map_frame(self.frames, GuestAddr::new(page.vaddr), page.frame, page.rights, backing);
        }
        if let Err(e) = mapped {
            space.destroy(self.frames);
            return Err(e.into());
        }
        space.into_prototype().map_err(|space| {
            space.destroy(self.frames);
            LoadError::OutOfMemory
        })
    }

    /// Makes VM `id`'s record from `template` (the kernel's `template`th),
    /// with its address and its disk window: no frame yet, and nothing
    /// that can fail (the caller made sure the heap has room for records).
    pub fn make(&mut self, id: VmId, name: &str, template: (u32, &Template), ipv4: Ipv4Config, disk: Window) -> Vm {
        let (index, template) = template;
        let layout = template.layout;
        Vm {
            id,
            name: String::from(name),
            // Enter as if called: rsp + 8 is 16-byte aligned.
            context: UserContext::new(self.selectors, template.entry, layout.stack.1 - 8),
            space: None,
            info_frame: None,
            template: index,
            layout,
            state: State::Runnable,
            pending: 0,
            rx_frames: 0,
            console_budget: TokenBucket::full(super::hypercall::CONSOLE_BURST, 0),
            stats: Stats { shared_pages: template.pages.len() as u64 + 1, ..Stats::default() },
            slice_left: crate::sched::TIME_SLICE_NS,
            out_of_memory: false,
            ipv4,
            disk,
            swapped: Vec::new(),
            idle_stamp: 0,
            last_ran: 0,
            deferrals: 0,
            tables_when_out: 0,
            booting: false,
            boot_turns: 0,
            boot_expected: 0,
            boot_left: 0,
            pinned: false,
        }
    }

    /// Gives `vm` (not in memory) page tables copied from its template's;
    /// the first time, also its info page (filled in) and CPU state page.
    /// Its swapped pages are the caller's to bring back. Takes nothing if
    /// memory runs out.
    pub fn materialize(&mut self, vm: &mut Vm, template: &Template) -> Result<(), LoadError> {
        debug_assert!(vm.space.is_none(), "only a VM without tables is materialized");
        let first_time = vm.is_unborn();
        let mut space = AddressSpace::from_prototype(&template.prototype, self.frames).ok_or(LoadError::OutOfMemory)?;
        if first_time {
            match self.map_own_pages(&mut space) {
                Ok(info_frame) => vm.info_frame = Some(info_frame),
                Err(e) => {
                    space.destroy(self.frames);
                    return Err(e);
                }
            }
            vm.stats.resident_pages += 2;
        }
        vm.space = Some(space);
        if first_time {
            self.write_info_page(vm, &template.args);
        }
        Ok(())
    }

    /// Maps a new VM's info page and CPU state page; returns the info frame.
    fn map_own_pages(&mut self, space: &mut AddressSpace) -> Result<u64, LoadError> {
        let info_frame =
            space.map_zeroed(self.frames, GuestAddr::new(INFO_PAGE), Rights { write: false, exec: false })?;
        let state_frame =
            space.map_zeroed(self.frames, GuestAddr::new(CPU_STATE_PAGE), Rights { write: true, exec: false })?;
        self.state_switch.init_state_page(state_frame);
        Ok(info_frame)
    }

    fn write_info_page(&self, vm: &mut Vm, args: &[u8]) {
        let layout = vm.layout;
        let (id, count, clock, ipv4, disk_sectors) = (vm.id, self.vm_count, self.clock, vm.ipv4, vm.disk.sectors);
        let bases = if self.state_switch.switches_bases() { FEATURE_FS_GS_BASE } else { 0 };
        let Some(info) = vm.info_mut() else { return };
        info.magic = INFO_MAGIC;
        info.abi_version = denali_abi::ABI_VERSION;
        info.vm_id = id;
        info.vm_count = count;
        info.mem_size = layout.mem_size;
        info.heap_start = layout.heap.0;
        info.heap_end = layout.heap.1;
        info.stack_top = layout.stack.1;
        info.tsc_khz = clock.tsc_khz;
        info.tsc_mult = clock.tsc_mult;
        info.tsc_base = clock.tsc_base;
        info.unix_ns_at_boot = clock.unix_ns_at_boot;
        info.features = bases | FEATURE_RX_COUNT;
        let args = &args[..args.len().min(ARGS_MAX)];
        info.args[..args.len()].copy_from_slice(args);
        info.args_len = args.len() as u32;
        info.mac[..6].copy_from_slice(&denali_abi::net::mac_of(id));
        info.ipv4 = ipv4;
        info.disk_sectors = disk_sectors;
        // Events and frames that came before it first ran.
        vm.sync_info_page();
    }
}
