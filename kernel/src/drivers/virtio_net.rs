//! The machine's NIC: a virtio-net device driven by the `virtio-drivers`
//! crate. It is the virtual switch's uplink: frames for hosts beyond the
//! machine leave through it, and what it receives enters the switch.
//!
//! DMA memory comes from the kernel heap, which lies in the physmap and is
//! physically contiguous, so a heap pointer's physical address is plain
//! arithmetic (see [`crate::mem::phys::kernel_virt_to_phys`]).

use crate::mem::phys;
use alloc::boxed::Box;
use alloc::vec::Vec;
use core::alloc::Layout;
use core::ptr::NonNull;
use core::sync::atomic::AtomicBool;
use virtio_drivers::device::net::VirtIONetRaw;
use virtio_drivers::transport::SomeTransport;
use virtio_drivers::transport::mmio::{MmioTransport, VirtIOHeader};
use virtio_drivers::{BufferDirection, Hal, PAGE_SIZE, PhysAddr};

/// Set by the NIC's interrupt when it arrives in ring 0 (the kernel halted);
/// the run loop then takes what the NIC received.
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Receive buffers kept posted (and transmit slots).
const QUEUE_SIZE: usize = 64;
/// Each receive buffer: a full frame and the virtio header.
const RX_BUFFER_LEN: usize = 2048;
/// `struct virtio_net_hdr_v1` (the longest header the device may use).
const NET_HDR_LEN: usize = 12;

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

/// A buffer the device owns until it hands it back (by token).
type Buffer = Box<[u8]>;

/// The NIC. Transmission does not wait for the device: frames are queued
/// and their buffers reclaimed later, so when the device polls the
/// transmit ring (suppressing notifications while traffic flows) sending
/// costs no exit at all.
pub struct Nic {
    device: VirtIONetRaw<KernelHal, SomeTransport<'static>, QUEUE_SIZE>,
    /// Whether the NIC raises no interrupt the kernel takes (PCI without
    /// MSI set up): the run loop then polls it.
    pub polled: bool,
    /// Receive buffers posted, by token.
    rx: Vec<Option<Buffer>>,
    /// Transmit buffers in flight, by token.
    tx: Vec<Option<Buffer>>,
    /// Frames sent.
    pub sent: u64,
    /// Frames received.
    pub received: u64,
    /// Frames dropped because the transmit ring was full.
    pub tx_dropped: u64,
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
        Nic::new(SomeTransport::Mmio(transport), false)
    }

    /// Drives a virtio-net device found on the PCI bus, polled until its
    /// interrupt is routed (see `drivers::pci::InterruptRoute`).
    pub fn new_pci(transport: virtio_drivers::transport::pci::PciTransport) -> Result<Nic, &'static str> {
        Nic::new(SomeTransport::Pci(transport), true)
    }

    fn new(transport: SomeTransport<'static>, polled: bool) -> Result<Nic, &'static str> {
        let device = VirtIONetRaw::new(transport).map_err(|_| "the NIC refused to start")?;
        let mut nic = Nic {
            device,
            polled,
            rx: (0..QUEUE_SIZE).map(|_| None).collect(),
            tx: (0..QUEUE_SIZE).map(|_| None).collect(),
            sent: 0,
            received: 0,
            tx_dropped: 0,
        };
        for _ in 0..QUEUE_SIZE {
            nic.post(alloc::vec![0u8; RX_BUFFER_LEN].into_boxed_slice())?;
        }
        nic.device.enable_interrupts();
        Ok(nic)
    }

    /// Gives the device a receive buffer.
    fn post(&mut self, mut buffer: Buffer) -> Result<(), &'static str> {
        // SAFETY: the buffer is kept in `rx` under its token, untouched,
        // until the device returns that token.
        let token = unsafe { self.device.receive_begin(&mut buffer) }.map_err(|_| "the NIC's receive ring is full")?;
        self.rx[usize::from(token)] = Some(buffer);
        Ok(())
    }

    /// Takes back the transmit buffers the device is done with.
    fn reclaim(&mut self) {
        while let Some(token) = self.device.poll_transmit() {
            let Some(buffer) = self.tx.get_mut(usize::from(token)).and_then(Option::take) else { return };
            // SAFETY: the buffer is the one transmit_begin took with this token.
            let _ = unsafe { self.device.transmit_complete(token, &buffer) };
        }
    }

    /// Queues one frame for sending; dropped (and counted) if the ring is
    /// full, as a real NIC would.
    pub fn send(&mut self, frame: &[u8]) {
        self.reclaim();
        let mut buffer = alloc::vec![0u8; NET_HDR_LEN + frame.len()].into_boxed_slice();
        let Ok(header) = self.device.fill_buffer_header(&mut buffer) else { return };
        buffer[header..header + frame.len()].copy_from_slice(frame);
        let buffer_len = header + frame.len();
        // SAFETY: the buffer is kept in `tx` under its token, untouched,
        // until the device returns that token (see reclaim).
        match unsafe { self.device.transmit_begin(&buffer[..buffer_len]) } {
            Ok(token) => {
                self.tx[usize::from(token)] = Some(buffer);
                self.sent += 1;
            }
            Err(_) => self.tx_dropped += 1,
        }
    }

    /// Acknowledges the interrupt and takes every frame received.
    pub fn receive_all(&mut self) -> Vec<Vec<u8>> {
        if !self.polled {
            self.device.ack_interrupt();
        }
        self.reclaim();
        let mut frames = Vec::new();
        while let Some(token) = self.device.poll_receive() {
            let Some(mut buffer) = self.rx.get_mut(usize::from(token)).and_then(Option::take) else { break };
            // SAFETY: the buffer is the one receive_begin took with this token.
            if let Ok((header, len)) = unsafe { self.device.receive_complete(token, &mut buffer) } {
                frames.push(buffer[header..header + len].to_vec());
            }
            let _ = self.post(buffer);
        }
        self.received += frames.len() as u64;
        frames
    }
}
