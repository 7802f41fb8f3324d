//! The virtio-mmio network device: the kernel's NIC under our monitor.
//!
//! Virtio 1.x over the MMIO transport ([`crate::virtio`]), with the two
//! queues of a virtio-net device (0: receive, 1: transmit), the MAC feature
//! and nothing else, so frames carry the 12-byte `virtio_net_hdr` with
//! every field zero. A malformed ring or descriptor makes that frame fail,
//! never the monitor.
//!
//! Exits are what cost here, so both directions batch: one interrupt per
//! batch of received frames (none for transmit completions: the kernel
//! reclaims its buffers when it next sends or receives), and while traffic
//! flows the network thread polls the transmit ring with the kernel's
//! notifications switched off ([`NetDevice::set_polling`]).

use crate::virtio::{COMMON_FEATURES, CONFIG_OFFSET, Event, MmioTransport, feature, read_config};
use std::collections::VecDeque;
use std::io::{Read, Write};
use virtio_bindings::virtio_ids::VIRTIO_ID_NET;
use virtio_bindings::virtio_net::VIRTIO_NET_F_MAC;
use virtio_queue::QueueT;
use vm_memory::GuestMemoryMmap;

/// Receive queue.
const RX: usize = 0;
/// Transmit queue.
const TX: usize = 1;
/// `struct virtio_net_hdr_v1`, all zero: no offloads.
const NET_HDR_LEN: usize = 12;
/// Longest frame either way (Ethernet header + 1500).
const FRAME_MAX: usize = 1514;
/// Frames kept for the kernel while it has no receive buffers posted.
const PENDING_MAX: usize = 256;

/// The device's registers and queues.
pub struct NetDevice {
    transport: MmioTransport,
    mac: [u8; 6],
    /// Frames waiting for the kernel to post receive buffers.
    pending: VecDeque<Vec<u8>>,
    /// Raises the device's interrupt.
    irq: Box<dyn Fn() + Send>,
    /// Frames for the kernel dropped for want of buffers.
    pub rx_dropped: u64,
    /// Whether the transmit ring is polled (kernel notifications off).
    polling: bool,
}

impl NetDevice {
    /// A device with address `mac` over `memory`, raising `irq`.
    pub fn new(memory: GuestMemoryMmap, mac: [u8; 6], irq: Box<dyn Fn() + Send>) -> Self {
        NetDevice {
            transport: MmioTransport::new(memory, VIRTIO_ID_NET, COMMON_FEATURES | feature(VIRTIO_NET_F_MAC), 2),
            mac,
            pending: VecDeque::new(),
            irq,
            rx_dropped: 0,
            polling: false,
        }
    }

    /// A read of the register at `offset`.
    pub fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset < CONFIG_OFFSET {
            return self.transport.read(offset, data);
        }
        // Device configuration: mac[6], status u16 (link up).
        let mut config = [0u8; 8];
        config[..6].copy_from_slice(&self.mac);
        config[6] = 1;
        read_config(&config, offset, data);
    }

    /// A write of the register at `offset`; says which queue it notified,
    /// if it was a notification (the caller then takes the frames to send
    /// with [`NetDevice::take_transmitted`]).
    pub fn write(&mut self, offset: u64, data: &[u8]) -> Option<Notified> {
        match self.transport.write(offset, data)? {
            Event::Notify(queue) if queue as usize == TX => Some(Notified::Transmit),
            Event::Notify(_) => {
                self.flush_pending();
                Some(Notified::Receive)
            }
            Event::Reset => {
                self.polling = false;
                self.pending.clear();
                None
            }
        }
    }

    /// Takes the frames the kernel queued for sending (without their
    /// virtio header), marking their buffers used.
    pub fn take_transmitted(&mut self) -> Vec<Vec<u8>> {
        let mut frames = Vec::new();
        let Some((queue, memory)) = self.transport.usable_queue(TX) else {
            return frames;
        };
        while let Some(chain) = queue.pop_descriptor_chain(memory) {
            let head = chain.head_index();
            let mut packet = Vec::new();
            if let Ok(mut reader) = chain.reader(memory) {
                let _ = reader.by_ref().take((NET_HDR_LEN + FRAME_MAX) as u64).read_to_end(&mut packet);
            }
            if packet.len() > NET_HDR_LEN {
                frames.push(packet.split_off(NET_HDR_LEN));
            }
            let _ = queue.add_used(memory, head, 0);
        }
        frames
    }

    /// Switches the kernel's transmit notifications off (`polling`: the
    /// network thread reads the ring itself) or back on. Returns frames
    /// queued meanwhile, so none waits for a notification that will not
    /// come.
    pub fn set_polling(&mut self, polling: bool) -> Vec<Vec<u8>> {
        if self.polling == polling {
            return Vec::new();
        }
        let Some((queue, memory)) = self.transport.usable_queue(TX) else {
            return Vec::new();
        };
        if polling {
            let _ = queue.disable_notification(memory);
        } else {
            let _ = queue.enable_notification(memory);
        }
        self.polling = polling;
        if polling { Vec::new() } else { self.take_transmitted() }
    }

    /// Hands `frames` to the kernel: into posted receive buffers, or kept
    /// until the kernel posts some (dropping beyond [`PENDING_MAX`]).
    pub fn receive(&mut self, frames: impl IntoIterator<Item = Vec<u8>>) {
        for frame in frames {
            if self.pending.len() >= PENDING_MAX {
                self.rx_dropped += 1;
            } else {
                self.pending.push_back(frame);
            }
        }
        self.flush_pending();
    }

    fn flush_pending(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let Some((queue, memory)) = self.transport.usable_queue(RX) else {
            return;
        };
        let mut delivered = false;
        while let Some(frame) = self.pending.front() {
            let Some(chain) = queue.pop_descriptor_chain(memory) else { break };
            let head = chain.head_index();
            let mut header = [0u8; NET_HDR_LEN];
            header[10] = 1; // num_buffers
            let written = chain
                .writer(memory)
                .ok()
                .filter(|w| w.available_bytes() >= NET_HDR_LEN + frame.len())
                .and_then(|mut w| w.write_all(&header).and_then(|()| w.write_all(frame)).ok())
                .map_or(0, |()| (NET_HDR_LEN + frame.len()) as u32);
            if written == 0 {
                self.rx_dropped += 1;
            }
            let _ = queue.add_used(memory, head, written);
            self.pending.pop_front();
            delivered = true;
        }
        let notify = delivered && queue.needs_notification(memory).unwrap_or(true);
        if notify {
            self.transport.set_used_interrupt();
            (self.irq)();
        }
    }
}

/// Which queue the kernel notified.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Notified {
    /// Frames to send.
    Transmit,
    /// Receive buffers posted.
    Receive,
}
