//! Turns a validated `.dvm` image into VMs. An image is loaded once into a
//! [`Template`]: its segments in frames that every VM made from it maps
//! read-only (code and constants) or copy-on-write (data). Each VM then
//! costs fresh page tables, its info page, and the pages it touches: heap
//! and stack pages appear zeroed on first touch (`Vm::populate`), data
//! pages are copied on first write.

use super::context::{UserContext, UserSelectors};
use super::state_switch::StateSwitch;
use super::{Layout, State, Stats, Vm};
use crate::mem::frame::{FRAME_SIZE, FrameAllocator};
use crate::mem::guest::GuestAddr;
use crate::mem::phys;
use crate::mem::space::{AddressSpace, Backing, MapError, Rights};
use crate::rate::TokenBucket;
use crate::sched::VmId;
use crate::time::Clock;
use alloc::string::String;
use alloc::vec::Vec;
use denali_abi::disk::Window;
use denali_abi::image::{Image, ImageError, SEG_EXEC, SEG_WRITE};
use denali_abi::info::{ARGS_MAX, FEATURE_FS_GS_BASE, INFO_MAGIC};
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
}

impl Loader<'_> {
    /// Validates `bytes` and copies its segments into frames once.
    pub fn prepare(&mut self, bytes: &[u8]) -> Result<Template, LoadError> {
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
        Ok(Template { entry: image.header().entry, layout, pages })
    }

    /// Makes VM `id` from a template; `args`, its address and its disk
    /// window go on its info page.
    pub fn instantiate(
        &mut self,
        id: VmId,
        name: &str,
        template: &Template,
        args: &[u8],
        ipv4: Ipv4Config,
        disk: Window,
    ) -> Result<Vm, LoadError> {
        let mut space = AddressSpace::new(self.frames, self.kernel_pml4).ok_or(LoadError::OutOfMemory)?;
        match self.map(&mut space, template) {
            Ok(info_frame) => {
                let layout = template.layout;
                let mut vm = Vm {
                    id,
                    name: String::from(name),
                    // Enter as if called: rsp + 8 is 16-byte aligned.
                    context: UserContext::new(self.selectors, template.entry, layout.stack.1 - 8),
                    space,
                    info_frame,
                    layout,
                    state: State::Runnable,
                    pending: 0,
                    console_budget: TokenBucket::full(super::hypercall::CONSOLE_BURST, 0),
                    stats: Stats {
                        resident_pages: 2,
                        shared_pages: template.pages.len() as u64 + 1,
                        ..Stats::default()
                    },
                    slice_left: crate::sched::TIME_SLICE_NS,
                    out_of_memory: false,
                    ipv4,
                    disk,
                    swapped: Vec::new(),
                    idle_stamp: 0,
                    last_ran: 0,
                    deferrals: 0,
                };
                self.write_info_page(&mut vm, args);
                Ok(vm)
            }
            Err(e) => {
                space.destroy(self.frames);
                Err(e)
            }
        }
    }

    /// Maps the info page, the CPU state page, the state-switch code and
    /// the template's pages; returns the info frame.
    fn map(&mut self, space: &mut AddressSpace, template: &Template) -> Result<u64, LoadError> {
        let info_frame =
            space.map_zeroed(self.frames, GuestAddr::new(INFO_PAGE), Rights { write: false, exec: false })?;
        let state_frame =
            space.map_zeroed(self.frames, GuestAddr::new(CPU_STATE_PAGE), Rights { write: true, exec: false })?;
        self.state_switch.init_state_page(state_frame);
        let code = Rights { write: false, exec: true };
        space.map_frame(
            self.frames,
            GuestAddr::new(STATE_SWITCH_PAGE),
            self.state_switch.frame,
            code,
            Backing::Shared,
        )?;
        for page in &template.pages {
            let backing = if page.rights.write { Backing::CopyOnWrite } else { Backing::Shared };
            space.map_frame(self.frames, GuestAddr::new(page.vaddr), page.frame, page.rights, backing)?;
        }
        Ok(info_frame)
    }

    fn write_info_page(&self, vm: &mut Vm, args: &[u8]) {
        let layout = vm.layout;
        let (id, count, clock, ipv4, disk_sectors) = (vm.id, self.vm_count, self.clock, vm.ipv4, vm.disk.sectors);
        let features = if self.state_switch.switches_bases() { FEATURE_FS_GS_BASE } else { 0 };
        let info = vm.info_mut();
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
        info.features = features;
        let args = &args[..args.len().min(ARGS_MAX)];
        info.args[..args.len()].copy_from_slice(args);
        info.args_len = args.len() as u32;
        info.mac[..6].copy_from_slice(&denali_abi::net::mac_of(id));
        info.ipv4 = ipv4;
        info.disk_sectors = disk_sectors;
    }
}
