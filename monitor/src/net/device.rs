//! The virtio-mmio network device: the kernel's NIC under our monitor.
//!
//! Virtio 1.x over the MMIO transport (version 2), with the two queues of a
//! virtio-net device (0: receive, 1: transmit), the MAC feature and nothing
//! else, so frames carry the 12-byte `virtio_net_hdr` with every field zero.
//! The rings are walked by rust-vmm's `virtio-queue` over guest memory; a
//! malformed ring or descriptor makes that frame fail, never the monitor.
//!
//! Exits are what cost here, so both directions batch: one interrupt per
//! batch of received frames (none for transmit completions: the kernel
//! reclaims its buffers when it next sends or receives), and while traffic
//! flows the network thread polls the transmit ring with the kernel's
//! notifications switched off ([`NetDevice::set_polling`]).

use std::collections::VecDeque;
use std::io::{Read, Write};
use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;

/// Receive queue.
const RX: usize = 0;
/// Transmit queue.
const TX: usize = 1;
/// Most descriptors a queue may have.
const QUEUE_MAX: u16 = 256;
/// `struct virtio_net_hdr_v1`, all zero: no offloads.
const NET_HDR_LEN: usize = 12;
/// Longest frame either way (Ethernet header + 1500).
const FRAME_MAX: usize = 1514;
/// Frames kept for the kernel while it has no receive buffers posted.
const PENDING_MAX: usize = 256;

const VIRTIO_F_VERSION_1: u64 = 1 << 32;
const VIRTIO_NET_F_MAC: u64 = 1 << 5;
const FEATURES: u64 = VIRTIO_F_VERSION_1 | VIRTIO_NET_F_MAC;
/// `InterruptStatus` bit: a queue was used.
const INT_USED_RING: u32 = 1;
/// `Status` bit: the driver has given up on the device.
const STATUS_FAILED: u32 = 0x80;

/// The device's registers and queues.
pub struct NetDevice {
    memory: GuestMemoryMmap,
    mac: [u8; 6],
    queues: [Queue; 2],
    queue_sel: u32,
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    status: u32,
    interrupt_status: u32,
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
        let queue = || Queue::new(QUEUE_MAX).expect("QUEUE_MAX is a power of two");
        NetDevice {
            memory,
            mac,
            queues: [queue(), queue()],
            queue_sel: 0,
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            status: 0,
            interrupt_status: 0,
            pending: VecDeque::new(),
            irq,
            rx_dropped: 0,
            polling: false,
        }
    }

    fn selected(&mut self) -> Option<&mut Queue> {
        self.queues.get_mut(self.queue_sel as usize)
    }

    fn driver_ok(&self) -> bool {
        self.status & 0x4 != 0 && self.status & STATUS_FAILED == 0
    }

    /// A read of the register at `offset`.
    pub fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= 0x100 {
            // Device configuration: mac[6], status u16 (link up).
            let mut config = [0u8; 8];
            config[..6].copy_from_slice(&self.mac);
            config[6] = 1;
            let start = (offset - 0x100) as usize;
            for (i, byte) in data.iter_mut().enumerate() {
                *byte = config.get(start + i).copied().unwrap_or(0);
            }
            return;
        }
        let value: u32 = match offset {
            0x000 => 0x7472_6976, // "virt"
            0x004 => 2,           // MMIO transport version
            0x008 => 1,           // network card
            0x00c => 0x4c4e_4544, // "DENL"
            0x010 => match self.device_features_sel {
                0 => FEATURES as u32,
                1 => (FEATURES >> 32) as u32,
                _ => 0,
            },
            0x034 => self.selected().map_or(0, |_| u32::from(QUEUE_MAX)),
            0x044 => self.selected().map_or(0, |q| u32::from(q.ready())),
            0x060 => self.interrupt_status,
            0x070 => self.status,
            // Config generation (0x0fc: the configuration never changes)
            // and everything else reads as zero.
            _ => 0,
        };
        let bytes = value.to_le_bytes();
        let n = data.len().min(4);
        data[..n].copy_from_slice(&bytes[..n]);
    }

    /// A write of the register at `offset`; says which queue it notified,
    /// if it was a notification (the caller then takes the frames to send
    /// with [`NetDevice::take_transmitted`]).
    pub fn write(&mut self, offset: u64, data: &[u8]) -> Option<Notified> {
        let mut bytes = [0u8; 4];
        let n = data.len().min(4);
        bytes[..n].copy_from_slice(&data[..n]);
        let value = u32::from_le_bytes(bytes);
        match offset {
            0x014 => self.device_features_sel = value,
            0x020 => {
                let shift = 32 * u64::from(self.driver_features_sel.min(1));
                if self.driver_features_sel < 2 {
                    self.driver_features =
                        (self.driver_features & !(0xffff_ffff << shift)) | (u64::from(value) << shift);
                }
            }
            0x024 => self.driver_features_sel = value,
            0x030 => self.queue_sel = value,
            0x038 => {
                if let Some(q) = self.selected() {
                    q.set_size(value.min(u32::from(QUEUE_MAX)) as u16);
                }
            }
            0x044 => {
                if let Some(q) = self.selected() {
                    q.set_ready(value == 1);
                }
            }
            0x050 => {
                return match value as usize {
                    TX => Some(Notified::Transmit),
                    RX => {
                        self.flush_pending();
                        Some(Notified::Receive)
                    }
                    _ => None,
                };
            }
            0x064 => self.interrupt_status &= !value,
            0x070 => {
                self.status = value;
                if value == 0 {
                    self.reset();
                }
            }
            0x080 => self.with_selected(|q| q.set_desc_table_address(Some(value), None)),
            0x084 => self.with_selected(|q| q.set_desc_table_address(None, Some(value))),
            0x090 => self.with_selected(|q| q.set_avail_ring_address(Some(value), None)),
            0x094 => self.with_selected(|q| q.set_avail_ring_address(None, Some(value))),
            0x0a0 => self.with_selected(|q| q.set_used_ring_address(Some(value), None)),
            0x0a4 => self.with_selected(|q| q.set_used_ring_address(None, Some(value))),
            _ => {}
        }
        None
    }

    fn with_selected(&mut self, f: impl FnOnce(&mut Queue)) {
        if let Some(q) = self.selected() {
            f(q);
        }
    }

    fn reset(&mut self) {
        for q in &mut self.queues {
            q.reset();
        }
        self.driver_features = 0;
        self.interrupt_status = 0;
        self.polling = false;
        self.pending.clear();
    }

    fn queue_usable(&self, index: usize) -> bool {
        self.driver_ok() && self.queues[index].is_valid(&self.memory)
    }

    /// Takes the frames the kernel queued for sending (without their
    /// virtio header), marking their buffers used.
    pub fn take_transmitted(&mut self) -> Vec<Vec<u8>> {
        let mut frames = Vec::new();
        if !self.queue_usable(TX) {
            return frames;
        }
        let memory = &self.memory;
        let queue = &mut self.queues[TX];
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
        if self.polling == polling || !self.queue_usable(TX) {
            return Vec::new();
        }
        self.polling = polling;
        let queue = &mut self.queues[TX];
        if polling {
            let _ = queue.disable_notification(&self.memory);
            Vec::new()
        } else {
            let _ = queue.enable_notification(&self.memory);
            self.take_transmitted()
        }
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
        if self.pending.is_empty() || !self.queue_usable(RX) {
            return;
        }
        let mut delivered = false;
        let memory = &self.memory;
        let queue = &mut self.queues[RX];
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
        if delivered && self.queues[RX].needs_notification(&self.memory).unwrap_or(true) {
            self.raise();
        }
    }

    fn raise(&mut self) {
        self.interrupt_status |= INT_USED_RING;
        (self.irq)();
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
