//! The virtio-mmio transport (virtio 1.x, MMIO version 2): the registers
//! every device under our monitor shares (identification, feature
//! negotiation, status, queue set-up, interrupt status). Each device keeps
//! one [`MmioTransport`] and adds its own configuration space and what a
//! queue notification means to it.
//!
//! The rings are rust-vmm `virtio-queue` queues over guest memory: every
//! index and address the kernel writes is checked when a ring is walked,
//! so a malformed one fails that request, never the monitor.

use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;

/// Most descriptors a queue may have.
pub const QUEUE_MAX: u16 = 256;
/// Offset of the device-specific configuration space.
pub const CONFIG_OFFSET: u64 = 0x100;
/// Feature bit: the device speaks virtio 1.x.
pub const VIRTIO_F_VERSION_1: u64 = 1 << 32;
/// `InterruptStatus` bit: a queue was used.
const INT_USED_RING: u32 = 1;
/// `Status` bit: the driver is ready.
const STATUS_DRIVER_OK: u32 = 0x4;
/// `Status` bit: the driver has given up on the device.
const STATUS_FAILED: u32 = 0x80;

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
        let value: u32 = match offset {
            0x000 => 0x7472_6976, // "virt"
            0x004 => 2,           // MMIO transport version
            0x008 => self.device_id,
            0x00c => 0x4c4e_4544, // "DENL"
            0x010 => match self.device_features_sel {
                0 => self.features as u32,
                1 => (self.features >> 32) as u32,
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

    /// A write of transport register `offset`; says what the device must
    /// act on, if anything.
    pub fn write(&mut self, offset: u64, data: &[u8]) -> Option<Event> {
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
            0x038 => self.with_selected(|q| q.set_size(value.min(u32::from(QUEUE_MAX)) as u16)),
            0x044 => self.with_selected(|q| q.set_ready(value == 1)),
            0x050 => return ((value as usize) < self.queues.len()).then_some(Event::Notify(value)),
            0x064 => self.interrupt_status &= !value,
            0x070 => {
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
        let driver_ok = self.status & STATUS_DRIVER_OK != 0 && self.status & STATUS_FAILED == 0;
        let queue = self.queues.get_mut(index)?;
        (driver_ok && queue.is_valid(&self.memory)).then_some((queue, &self.memory))
    }

    /// Marks a used-ring interrupt pending (the caller raises the line).
    pub fn set_used_interrupt(&mut self) {
        self.interrupt_status |= INT_USED_RING;
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
