//! The virtio-mmio transport (virtio 1.x, MMIO version 2): the registers
//! every device under our monitor shares (identification, feature
//! negotiation, status, queue set-up, interrupt status). Each device keeps
//! one [`MmioTransport`] and adds its own configuration space and what a
//! queue notification means to it.
//!
//! The rings are rust-vmm `virtio-queue` queues over guest memory: every
//! index and address the kernel writes is checked when a ring is walked,
//! so a malformed one fails that request, never the monitor.

use virtio_bindings::virtio_config::{VIRTIO_CONFIG_S_DRIVER_OK, VIRTIO_CONFIG_S_FAILED, VIRTIO_F_VERSION_1};
use virtio_bindings::virtio_mmio::*;
use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;

/// Most descriptors a queue may have.
pub const QUEUE_MAX: u16 = 256;
/// Offset of the device-specific configuration space.
pub const CONFIG_OFFSET: u64 = VIRTIO_MMIO_CONFIG as u64;
/// The magic value at register 0: "virt".
const MAGIC: u32 = u32::from_le_bytes(*b"virt");
/// The MMIO transport's version (virtio 1.x).
const MMIO_VERSION: u32 = 2;
/// Our vendor id: "DENL".
const VENDOR: u32 = u32::from_le_bytes(*b"DENL");

/// A feature bit (the spec numbers them) as a mask.
pub const fn feature(bit: u32) -> u64 {
    1 << bit
}

/// Features every device under our monitor offers.
pub const COMMON_FEATURES: u64 = feature(VIRTIO_F_VERSION_1);

/// A register write the device itself must act on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// The driver notified queue `n`.
    Notify(u32),
    /// The driver reset the device (queues and features already are).
    Reset,
}

/// The transport registers and the queues of one device.
pub struct MmioTransport {
    /// Guest memory the rings live in.
    pub memory: GuestMemoryMmap,
    device_id: u32,
    features: u64,
    queues: Vec<Queue>,
    queue_sel: u32,
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    status: u32,
    interrupt_status: u32,
}

impl MmioTransport {
    /// A device of virtio type `device_id` offering `features`, with
    /// `queues` queues over `memory`.
    pub fn new(memory: GuestMemoryMmap, device_id: u32, features: u64, queues: usize) -> Self {
        MmioTransport {
            memory,
            device_id,
            features,
            queues: (0..queues).map(|_| Queue::new(QUEUE_MAX).expect("QUEUE_MAX is a power of two")).collect(),
            queue_sel: 0,
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            status: 0,
            interrupt_status: 0,
        }
    }

    /// A read of transport register `offset` (below [`CONFIG_OFFSET`]).
    pub fn read(&mut self, offset: u64, data: &mut [u8]) {
        let value: u32 = match u32::try_from(offset).unwrap_or(u32::MAX) {
            VIRTIO_MMIO_MAGIC_VALUE => MAGIC,
            VIRTIO_MMIO_VERSION => MMIO_VERSION,
            VIRTIO_MMIO_DEVICE_ID => self.device_id,
            VIRTIO_MMIO_VENDOR_ID => VENDOR,
            VIRTIO_MMIO_DEVICE_FEATURES => match self.device_features_sel {
                0 => self.features as u32,
                1 => (self.features >> 32) as u32,
                _ => 0,
            },
            VIRTIO_MMIO_QUEUE_NUM_MAX => self.selected().map_or(0, |_| u32::from(QUEUE_MAX)),
            VIRTIO_MMIO_QUEUE_READY => self.selected().map_or(0, |q| u32::from(q.ready())),
            VIRTIO_MMIO_INTERRUPT_STATUS => self.interrupt_status,
            VIRTIO_MMIO_STATUS => self.status,
            // The configuration generation (it never changes) and
            // everything else reads as zero.
            _ => 0,
        };
        let bytes = value.to_le_bytes();
        let n = data.len().min(4);
        data[..n].copy_from_slice(&bytes[..n]);
    }

    /// A write of transport register `offset`; says what the device must
    /// act on, if anything.
    pub fn write(&mut self, offset: u64, data: &[u8]) -> Option<Event> {
        let mut bytes = [0u8; 4];
        let n = data.len().min(4);
        bytes[..n].copy_from_slice(&data[..n]);
        let value = u32::from_le_bytes(bytes);
        match u32::try_from(offset).unwrap_or(u32::MAX) {
            VIRTIO_MMIO_DEVICE_FEATURES_SEL => self.device_features_sel = value,
            VIRTIO_MMIO_DRIVER_FEATURES => {
                let shift = 32 * u64::from(self.driver_features_sel.min(1));
                if self.driver_features_sel < 2 {
                    self.driver_features =
                        (self.driver_features & !(0xffff_ffff << shift)) | (u64::from(value) << shift);
                }
            }
            VIRTIO_MMIO_DRIVER_FEATURES_SEL => self.driver_features_sel = value,
            VIRTIO_MMIO_QUEUE_SEL => self.queue_sel = value,
            VIRTIO_MMIO_QUEUE_NUM => self.with_selected(|q| q.set_size(value.min(u32::from(QUEUE_MAX)) as u16)),
            VIRTIO_MMIO_QUEUE_READY => self.with_selected(|q| q.set_ready(value == 1)),
            VIRTIO_MMIO_QUEUE_NOTIFY => {
                return ((value as usize) < self.queues.len()).then_some(Event::Notify(value));
            }
            VIRTIO_MMIO_INTERRUPT_ACK => self.interrupt_status &= !value,
            VIRTIO_MMIO_STATUS => {
                self.status = value;
                if value == 0 {
                    for q in &mut self.queues {
                        q.reset();
                    }
                    self.driver_features = 0;
                    self.interrupt_status = 0;
                    return Some(Event::Reset);
                }
            }
            VIRTIO_MMIO_QUEUE_DESC_LOW => self.with_selected(|q| q.set_desc_table_address(Some(value), None)),
            VIRTIO_MMIO_QUEUE_DESC_HIGH => self.with_selected(|q| q.set_desc_table_address(None, Some(value))),
            VIRTIO_MMIO_QUEUE_AVAIL_LOW => self.with_selected(|q| q.set_avail_ring_address(Some(value), None)),
            VIRTIO_MMIO_QUEUE_AVAIL_HIGH => self.with_selected(|q| q.set_avail_ring_address(None, Some(value))),
            VIRTIO_MMIO_QUEUE_USED_LOW => self.with_selected(|q| q.set_used_ring_address(Some(value), None)),
            VIRTIO_MMIO_QUEUE_USED_HIGH => self.with_selected(|q| q.set_used_ring_address(None, Some(value))),
            _ => {}
        }
        None
    }

    fn selected(&mut self) -> Option<&mut Queue> {
        self.queues.get_mut(self.queue_sel as usize)
    }

    fn with_selected(&mut self, f: impl FnOnce(&mut Queue)) {
        if let Some(q) = self.selected() {
            f(q);
        }
    }

    /// Queue `index`, if the driver has finished setting the device up and
    /// the queue's rings lie in guest memory: with the memory to walk it.
    pub fn usable_queue(&mut self, index: usize) -> Option<(&mut Queue, &GuestMemoryMmap)> {
        let driver_ok = self.status & VIRTIO_CONFIG_S_DRIVER_OK != 0 && self.status & VIRTIO_CONFIG_S_FAILED == 0;
        let queue = self.queues.get_mut(index)?;
        (driver_ok && queue.is_valid(&self.memory)).then_some((queue, &self.memory))
    }

    /// Marks a used-ring interrupt pending (the caller raises the line).
    pub fn set_used_interrupt(&mut self) {
        self.interrupt_status |= VIRTIO_MMIO_INT_VRING;
    }
}

/// Copies bytes `[offset, offset + data.len())` of a configuration space
/// `config` into `data`; bytes past its end read as zero.
pub fn read_config(config: &[u8], offset: u64, data: &mut [u8]) {
    let start = offset.saturating_sub(CONFIG_OFFSET) as usize;
    for (i, byte) in data.iter_mut().enumerate() {
        *byte = config.get(start + i).copied().unwrap_or(0);
    }
}
