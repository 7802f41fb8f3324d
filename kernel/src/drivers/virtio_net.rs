//! The machine's NIC: a virtio-net device driven by the `virtio-drivers`
//! crate. It is the virtual switch's uplink: frames for hosts beyond the
//! machine leave through it, and what it receives enters the switch.

use super::KernelHal;
use crate::platform::NetDevice;
use alloc::boxed::Box;
use alloc::vec::Vec;
use core::ptr::NonNull;
use core::sync::atomic::AtomicBool;
use denali_abi::hypercall::FRAME_MAX;
use virtio_drivers::device::net::VirtIONetRaw;
use virtio_drivers::transport::SomeTransport;

/// Set by the NIC's interrupt when it arrives in ring 0 (the kernel halted);
/// the run loop then takes what the NIC received.
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Receive buffers kept posted (and transmit slots).
const QUEUE_SIZE: usize = 64;
/// Each receive buffer: a full frame and the virtio header.
const RX_BUFFER_LEN: usize = 2048;

/// A buffer the device owns until it hands it back (by token).
type Buffer = Box<[u8]>;

/// The NIC. Transmission does not wait for the device: frames are queued
/// and their buffers reclaimed later, so when the device polls the
/// transmit ring (suppressing notifications while traffic flows) sending
/// costs no exit at all. Every buffer is allocated when the NIC starts:
/// nothing on the frame path allocates.
pub struct Nic {
    device: VirtIONetRaw<KernelHal, SomeTransport<'static>, QUEUE_SIZE>,
    /// Whether the NIC raises no interrupt the kernel takes (PCI without
    /// MSI set up): the run loop then polls it.
    pub polled: bool,
    /// Receive buffers posted, by token.
    rx: Vec<Option<Buffer>>,
    /// Transmit buffers in flight, by token.
    tx: Vec<Option<Buffer>>,
    /// Transmit buffers not in flight.
    tx_free: Vec<Buffer>,
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
        let buffer = || alloc::vec![0u8; RX_BUFFER_LEN].into_boxed_slice();
        let mut nic = Nic {
            device,
            polled,
            rx: (0..QUEUE_SIZE).map(|_| None).collect(),
            tx: (0..QUEUE_SIZE).map(|_| None).collect(),
            tx_free: (0..QUEUE_SIZE).map(|_| buffer()).collect(),
            sent: 0,
            received: 0,
            tx_dropped: 0,
        };
        for _ in 0..QUEUE_SIZE {
            nic.post(buffer())?;
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
            self.tx_free.push(buffer);
        }
    }
}

impl NetDevice for Nic {
    fn polled(&self) -> bool {
        self.polled
    }

    /// Queues one frame (at most [`FRAME_MAX`] bytes) for sending; dropped
    /// (and counted) if the ring is full, as a real NIC would.
    fn send(&mut self, frame: &[u8]) {
        self.reclaim();
        let Some(mut buffer) = self.tx_free.pop() else {
            self.tx_dropped += 1;
            return;
        };
        let Ok(header) = self.device.fill_buffer_header(&mut buffer) else {
            self.tx_free.push(buffer);
            return;
        };
        let end = header + frame.len().min(FRAME_MAX);
        buffer[header..end].copy_from_slice(&frame[..end - header]);
        // SAFETY: the buffer is kept in `tx` under its token, untouched,
        // until the device returns that token (see reclaim).
        match unsafe { self.device.transmit_begin(&buffer[..end]) } {
            Ok(token) => {
                self.tx[usize::from(token)] = Some(buffer);
                self.sent += 1;
            }
            Err(_) => {
                self.tx_free.push(buffer);
                self.tx_dropped += 1;
            }
        }
    }

    /// Acknowledges the NIC's interrupt and takes back finished transmit
    /// buffers; then [`Nic::receive_into`] takes what arrived.
    fn acknowledge(&mut self) {
        if !self.polled {
            self.device.ack_interrupt();
        }
        self.reclaim();
    }

    /// Copies the next frame received into `out` and returns its length;
    /// frames longer than `out` are dropped.
    fn receive_into(&mut self, out: &mut [u8; FRAME_MAX]) -> Option<usize> {
        loop {
            let token = self.device.poll_receive()?;
            let mut buffer = self.rx.get_mut(usize::from(token)).and_then(Option::take)?;
            // SAFETY: the buffer is the one receive_begin took with this token.
            let received = unsafe { self.device.receive_complete(token, &mut buffer) };
            let len = match received {
                Ok((header, len)) if len <= FRAME_MAX => {
                    out[..len].copy_from_slice(&buffer[header..header + len]);
                    Some(len)
                }
                _ => None,
            };
            let _ = self.post(buffer);
            if let Some(len) = len {
                self.received += 1;
                return Some(len);
            }
        }
    }

    fn has_received(&self) -> bool {
        self.device.poll_receive().is_some()
    }

    fn interrupt_on_receive(&mut self, on: bool) {
        match (self.polled, on) {
            (true, _) => {}
            (false, true) => self.device.enable_interrupts(),
            (false, false) => self.device.disable_interrupts(),
        }
    }

    fn counters(&self) -> (u64, u64, u64) {
        (self.sent, self.received, self.tx_dropped)
    }
}
