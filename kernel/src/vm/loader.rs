//! Turns a validated `.dvm` image into a VM: fresh page tables, the info
//! page, the image's segments with their rights, and the first registers.
//! Heap and stack pages are not mapped here; they appear zeroed on first
//! touch (`Vm::populate`).

use super::{Layout, State, Stats, Vm};
use crate::arch::x86_64::cpu::FpuState;
use crate::arch::x86_64::gdt::Selectors;
use crate::arch::x86_64::trap::UserContext;
use crate::mem::frame::{FRAME_SIZE, FrameAllocator};
use crate::mem::phys;
use crate::mem::space::{AddressSpace, MapError, Rights};
use crate::sched::VmId;
use crate::time::Clock;
use alloc::string::String;
use denali_abi::image::{Image, ImageError, SEG_EXEC, SEG_WRITE};
use denali_abi::info::{ARGS_MAX, INFO_MAGIC};
use denali_abi::layout::INFO_PAGE;

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

/// What the loader needs from the kernel.
pub struct Loader<'a> {
    /// Physical memory.
    pub frames: &'a mut FrameAllocator,
    /// The kernel's PML4, whose upper half every VM shares.
    pub kernel_pml4: u64,
    /// Segment selectors for ring 3.
    pub selectors: &'a Selectors,
    /// The global clock.
    pub clock: Clock,
    /// VMs in this boot.
    pub vm_count: u32,
}

impl Loader<'_> {
    /// Builds VM `id` from `bytes`, validating the image first; `args` go
    /// on its info page.
    pub fn load(&mut self, id: VmId, name: &str, bytes: &[u8], args: &[u8]) -> Result<Vm, LoadError> {
        let image = Image::parse(bytes).map_err(LoadError::Image)?;
        let mut space = AddressSpace::new(self.frames, self.kernel_pml4).ok_or(LoadError::OutOfMemory)?;
        match self.fill(&mut space, &image) {
            Ok((info_frame, pages)) => {
                let layout = Layout {
                    mem_size: image.header().mem_size,
                    heap: (image.heap_start(), image.heap_end()),
                    stack: (image.stack_bottom(), image.stack_top()),
                };
                let mut vm = Vm {
                    id,
                    name: String::from(name),
                    // Enter as if called: rsp + 8 is 16-byte aligned.
                    context: UserContext::new(self.selectors, image.header().entry, image.stack_top() - 8),
                    fpu: FpuState::initial(),
                    space,
                    info_frame,
                    layout,
                    state: State::Runnable,
                    pending: 0,
                    console_line_start: true,
                    stats: Stats { resident_pages: pages, ..Stats::default() },
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

    /// Maps the info page and the segments; returns the info frame and the
    /// number of pages mapped.
    fn fill(&mut self, space: &mut AddressSpace, image: &Image<'_>) -> Result<(u64, u64), LoadError> {
        let info_frame = space.map_zeroed(self.frames, INFO_PAGE, Rights { write: false, exec: false })?;
        let mut pages = 1;
        for segment in image.segments() {
            let rights = Rights { write: segment.flags & SEG_WRITE != 0, exec: segment.flags & SEG_EXEC != 0 };
            let mut page = segment.vaddr;
            while page < segment.vaddr + segment.mem_size {
                let frame = space.map_zeroed(self.frames, page, rights)?;
                pages += 1;
                let offset = (page - segment.vaddr) as usize;
                if offset < segment.data.len() {
                    let chunk = &segment.data[offset..segment.data.len().min(offset + FRAME_SIZE as usize)];
                    // SAFETY: `frame` was just allocated for this page and is
                    // reached through the physmap; chunk is at most a frame.
                    unsafe { core::ptr::copy_nonoverlapping(chunk.as_ptr(), phys::to_virt(frame), chunk.len()) };
                }
                page += FRAME_SIZE;
            }
        }
        Ok((info_frame, pages))
    }

    fn write_info_page(&self, vm: &mut Vm, args: &[u8]) {
        let layout = vm.layout;
        let (id, count, clock) = (vm.id, self.vm_count, self.clock);
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
        let args = &args[..args.len().min(ARGS_MAX)];
        info.args[..args.len()].copy_from_slice(args);
        info.args_len = args.len() as u32;
    }
}
