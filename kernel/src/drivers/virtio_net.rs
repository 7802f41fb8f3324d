//! The machine's NIC: a virtio-net device driven by the `virtio-drivers`
//! crate. It is the virtual switch's uplink: frames for hosts beyond the
//! machine leave through it, and what it receives enters the switch.
//!
//! DMA memory comes from the kernel heap, which lies in the physmap and is
//! physically contiguous, so a heap pointer's physical address is plain
//! arithmetic (see [`crate::mem::phys::kernel_virt_to_phys`]).

use crate::mem::phys;
use alloc::vec::Vec;
use core::alloc::Layout;
use core::ptr::NonNull;
use core::sync::atomic::AtomicBool;
use virtio_drivers::device::net::VirtIONet;
use virtio_drivers::transport::mmio::{MmioTransport, VirtIOHeader};
use virtio_drivers::{BufferDirection, Hal, PAGE_SIZE, PhysAddr};

/// Set by the NIC's interrupt when it arrives in ring 0 (the kernel halted);
/// the run loop then takes what the NIC received.
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Receive buffers kept posted (and transmit slots).
const QUEUE_SIZE: usize = 64;
/// Each receive buffer: a full frame and the virtio header.
const RX_BUFFER_LEN: usize = 2048;

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
        let ptr = NonNull::new(ptr).expect("the kernel heap has room for the NIC's queues");
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

/// The NIC.
pub struct Nic {
    device: VirtIONet<KernelHal, MmioTransport<'static>, QUEUE_SIZE>,
    /// Frames sent and received, for the statistics.
    pub sent: u64,
    /// Frames received.
    pub received: u64,
}

impl Nic {
    /// Drives the virtio-mmio device whose registers are mapped at
    /// `registers` (`size` bytes).
    ///
    /// # Safety
    ///
    /// `registers` must map a virtio-mmio register page for the kernel's
    /// lifetime, used by nothing else.
    pub unsafe fn new_mmio(registers: NonNull<u8>, size: usize) -> Result<Nic, &'static str> {
        // SAFETY: the caller promises a live, exclusive register page.
        let transport = unsafe { MmioTransport::new(registers.cast::<VirtIOHeader>(), size) }
            .map_err(|_| "the device at the NIC's address is not a virtio-mmio device")?;
        let mut device = VirtIONet::new(transport, RX_BUFFER_LEN).map_err(|_| "the NIC refused to start")?;
        device.enable_interrupts();
        Ok(Nic { device, sent: 0, received: 0 })
    }

    /// Sends one frame (waiting for the device to take it).
    pub fn send(&mut self, frame: &[u8]) {
        let mut buffer = self.device.new_tx_buffer(frame.len());
        buffer.packet_mut().copy_from_slice(frame);
        if self.device.send(buffer).is_ok() {
            self.sent += 1;
        }
    }

    /// Acknowledges the interrupt and takes every frame received.
    pub fn receive_all(&mut self) -> Vec<Vec<u8>> {
        self.device.ack_interrupt();
        let mut frames = Vec::new();
        while let Ok(buffer) = self.device.receive() {
            frames.push(buffer.packet().to_vec());
            let _ = self.device.recycle_rx_buffer(buffer);
        }
        self.received += frames.len() as u64;
        frames
    }
}
