//! Drivers for the machine's devices (not the VMs': theirs are virtual and
//! live in `vm` and `net`), and what the virtio drivers share: DMA memory
//! and the MMIO transport.
//!
//! DMA memory comes from the kernel heap, which lies in the physmap and is
//! physically contiguous, so a heap pointer's physical address is plain
//! arithmetic (see [`crate::mem::phys::kernel_virt_to_phys`]).

pub mod pci;
pub mod virtio_blk;
pub mod virtio_net;

use crate::mem::phys;
use core::alloc::Layout;
use core::ptr::NonNull;
use virtio_drivers::transport::SomeTransport;
use virtio_drivers::transport::mmio::{MmioTransport, VirtIOHeader};
use virtio_drivers::{BufferDirection, Hal, PAGE_SIZE, PhysAddr};

/// What `virtio-drivers` needs from the kernel: DMA memory and address
/// translation.
pub struct KernelHal;

fn dma_layout(pages: usize) -> Layout {
    Layout::from_size_align(pages * PAGE_SIZE, PAGE_SIZE).expect("a page-aligned layout")
}

// SAFETY: dma_alloc returns zeroed, page-aligned, exclusively owned heap
// memory with its true physical address (the heap is in the physmap, one
// contiguous range); share/unshare translate addresses without copying,
// which is correct because the device sees all guest memory coherently.
unsafe impl Hal for KernelHal {
    fn dma_alloc(pages: usize, _direction: BufferDirection) -> (PhysAddr, NonNull<u8>) {
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { alloc::alloc::alloc_zeroed(dma_layout(pages)) };
        let ptr = NonNull::new(ptr).expect("the kernel heap has room for the device's queues");
        (phys::kernel_virt_to_phys(ptr.as_ptr() as u64), ptr)
    }

    unsafe fn dma_dealloc(_paddr: PhysAddr, vaddr: NonNull<u8>, pages: usize) -> i32 {
        // SAFETY: the caller passes back what dma_alloc returned for `pages`.
        unsafe { alloc::alloc::dealloc(vaddr.as_ptr(), dma_layout(pages)) };
        0
    }

    unsafe fn mmio_phys_to_virt(paddr: PhysAddr, _size: usize) -> NonNull<u8> {
        NonNull::new(phys::to_virt(paddr)).expect("the physmap is not at 0")
    }

    unsafe fn share(buffer: NonNull<[u8]>, _direction: BufferDirection) -> PhysAddr {
        phys::kernel_virt_to_phys(buffer.as_ptr() as *mut u8 as u64)
    }

    unsafe fn unshare(_paddr: PhysAddr, _buffer: NonNull<[u8]>, _direction: BufferDirection) {}
}

/// The virtio-mmio transport over the register page at `registers`
/// (`size` bytes), if a virtio device answers there.
///
/// # Safety
///
/// `registers` must map a virtio-mmio register page for the kernel's
/// lifetime, used by nothing else.
unsafe fn mmio_transport(registers: NonNull<u8>, size: usize) -> Option<SomeTransport<'static>> {
    // SAFETY: the caller promises a live, exclusive register page.
    let transport = unsafe { MmioTransport::new(registers.cast::<VirtIOHeader>(), size) }.ok()?;
    Some(SomeTransport::Mmio(transport))
}
