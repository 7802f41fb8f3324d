//! The machine's NIC: a virtio-net device driven by the `virtio-drivers`
//! crate. It is the virtual switch's uplink: frames for hosts beyond the
//! machine leave through it, and what it receives enters the switch.

use super::KernelHal;
use alloc::boxed::Box;
use alloc::vec::Vec;
use core::ptr::NonNull;
use core::sync::atomic::AtomicBool;
use virtio_drivers::device::net::VirtIONetRaw;
use virtio_drivers::transport::SomeTransport;

/// Set by the NIC's interrupt when it arrives in ring 0 (the kernel halted);
/// the run loop then takes what the NIC received.
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Receive buffers kept posted (and transmit slots).
const QUEUE_SIZE: usize = 64;
/// Each receive buffer: a full frame and the virtio header.
const RX_BUFFER_LEN: usize = 2048;
/// `struct virtio_net_hdr_v1` (the longest header the device may use).
const NET_HDR_LEN: usize = 12;

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
        // SAFETY: the caller's promise, passed on.
        let transport = unsafe { super::mmio_transport(registers, size) }
            .ok_or("the device at the NIC's address is not a virtio-mmio device")?;
        Nic::new(transport, false)
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
