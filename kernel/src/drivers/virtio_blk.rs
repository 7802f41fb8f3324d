//! The machine's disk: a virtio-blk device over MMIO (our monitor) or PCI
//! (QEMU, clouds). It holds the VMs' disk windows and the swap area (see
//! `denali_abi::disk`).
//!
//! The `virtio-drivers` crate brings the device up and keeps its queue
//! (`Transport`, `VirtQueue`); requests are put together here because its
//! block driver moves one buffer a request, and swapping moves many page
//! frames at once: one request carries a header, up to
//! [`FRAMES_PER_TRANSFER`] frames as separate segments (the device reads or
//! writes them in place, no copy) and a status byte.
//!
//! Transfers are synchronous: the kernel queues one request and polls the
//! used ring until the device answers, so the device raises no interrupt.
//! Under our monitor the answer is there when the notification returns;
//! the time spent waiting is charged to the VM that asked.

use super::KernelHal;
use crate::mem::phys;
use crate::platform::BlockDevice;
use crate::swap::{FRAMES_PER_TRANSFER, extents};
use alloc::vec;
use alloc::vec::Vec;
use bitflags::bitflags;
use core::ptr::NonNull;
use denali_abi::disk::{DISK_IO_MAX, DiskLabel, SECTOR_SIZE};
use denali_abi::hypercall::Error;
use virtio_drivers::queue::VirtQueue;
use virtio_drivers::transport::{SomeTransport, Transport};

/// Bytes in a page frame.
const FRAME_SIZE: usize = crate::mem::frame::FRAME_SIZE as usize;

/// Descriptors in the request queue: one request at a time, of at most a
/// header, [`FRAMES_PER_TRANSFER`] segments and a status.
const QUEUE_SIZE: usize = 64;

/// Request kinds (virtio 1.2, 5.2.6).
const T_IN: u32 = 0;
const T_OUT: u32 = 1;

bitflags! {
    /// The device features the driver uses.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    struct Features: u64 {
        /// `seg_max` in the configuration limits segments per request.
        const SEG_MAX = 1 << 2;
        /// The device follows virtio 1.0 or later.
        const VERSION_1 = 1 << 32;
    }
}

/// Where `seg_max` is in the device's configuration.
const SEG_MAX_OFFSET: usize = 12;

/// The device and its one request queue.
struct Device {
    transport: SomeTransport<'static>,
    queue: VirtQueue<KernelHal, QUEUE_SIZE>,
    /// Data segments one request may carry.
    segments: usize,
}

impl Device {
    fn new(mut transport: SomeTransport<'static>) -> Result<Device, DiskError> {
        let features = transport.begin_init(Features::SEG_MAX | Features::VERSION_1);
        let seg_max = if features.contains(Features::SEG_MAX) {
            transport
                .read_config_space::<u32>(SEG_MAX_OFFSET)
                .map_err(|_| "the virtio-blk disk has no configuration")?
        } else {
            u32::MAX
        };
        let mut queue = VirtQueue::new(&mut transport, 0, false, false)
            .map_err(|_| "the virtio-blk disk's queue is too small for Denali's requests")?;
        // Answers are polled for: no interrupts.
        queue.set_dev_notify(false);
        transport.finish_init();
        let segments = usize::try_from(seg_max).unwrap_or(usize::MAX).min(FRAMES_PER_TRANSFER);
        if segments == 0 {
            return Err("the virtio-blk disk takes no data in a request");
        }
        Ok(Device { transport, queue, segments })
    }

    /// The disk's size in sectors (a 64-bit field read as two 32-bit
    /// halves, as every transport allows).
    fn capacity(&self) -> Result<u64, DiskError> {
        let half = |offset| self.transport.read_config_space::<u32>(offset);
        self.transport
            .read_consistent(|| Ok(u64::from(half(0)?) | (u64::from(half(4)?) << 32)))
            .map_err(|_| "the virtio-blk disk's size cannot be read")
    }

    /// Sends one request of `kind` at `sector` whose data is `segments`
    /// (written to the disk for [`T_OUT`], filled from it for [`T_IN`]) and
    /// waits for its answer.
    fn request(&mut self, kind: u32, sector: u64, segments: &mut [&mut [u8]]) -> Result<(), Error> {
        if segments.is_empty() || segments.len() > self.segments {
            return Err(Error::Io);
        }
        let mut header = [0u8; 16];
        header[..4].copy_from_slice(&kind.to_le_bytes());
        header[8..].copy_from_slice(&sector.to_le_bytes());
        let mut status = [0xffu8];
        let mut inputs: [&[u8]; FRAMES_PER_TRANSFER + 1] = [&[]; FRAMES_PER_TRANSFER + 1];
        let mut outputs: [&mut [u8]; FRAMES_PER_TRANSFER + 1] = core::array::from_fn(|_| &mut [][..]);
        inputs[0] = &header;
        let (inputs, outputs) = if kind == T_OUT {
            for (input, segment) in inputs[1..].iter_mut().zip(segments.iter()) {
                *input = segment;
            }
            outputs[0] = &mut status;
            (&inputs[..=segments.len()], &mut outputs[..1])
        } else {
            let count = segments.len();
            for (output, segment) in outputs.iter_mut().zip(segments.iter_mut()) {
                *output = segment;
            }
            outputs[count] = &mut status;
            (&inputs[..1], &mut outputs[..=count])
        };
        self.queue.add_notify_wait_pop(inputs, outputs, &mut self.transport).map_err(|_| Error::Io)?;
        if status[0] == 0 { Ok(()) } else { Err(Error::Io) }
    }
}

/// A labelled Denali disk.
pub struct Disk {
    device: Device,
    /// Its size in sectors.
    pub sectors: u64,
    /// Its label (where the swap area is).
    pub label: DiskLabel,
    /// Where buffered transfers go through: allocated once, as large as the
    /// largest (allocating and zeroing a buffer per request cost more than
    /// the request itself where kernel code is emulated).
    buffer: Vec<u8>,
}

/// Why the machine's disk is not used.
pub type DiskError = &'static str;

impl Disk {
    /// Drives the virtio-mmio device whose registers are mapped at
    /// `registers` (`size` bytes).
    ///
    /// # Safety
    ///
    /// `registers` must map a virtio-mmio register page for the kernel's
    /// lifetime, used by nothing else.
    pub unsafe fn new_mmio(registers: NonNull<u8>, size: usize) -> Result<Disk, DiskError> {
        // SAFETY: the caller's promise, passed on.
        let transport = unsafe { super::mmio_transport(registers, size) }
            .ok_or("the device at the disk's address is not a virtio-mmio device")?;
        Disk::new(transport)
    }

    /// Drives a virtio-blk device found on the PCI bus.
    pub fn new_pci(transport: virtio_drivers::transport::pci::PciTransport) -> Result<Disk, DiskError> {
        Disk::new(SomeTransport::Pci(transport))
    }

    /// Starts the device and checks its label: a disk without one is not
    /// ours to write (it may be the disk the machine booted from).
    fn new(transport: SomeTransport<'static>) -> Result<Disk, DiskError> {
        let device = Device::new(transport)?;
        let sectors = device.capacity()?;
        let mut disk = Disk { device, sectors, label: DiskLabel::EMPTY, buffer: vec![0u8; DISK_IO_MAX] };
        let sector = disk.read(0, SECTOR_SIZE).map_err(|_| "the virtio-blk disk could not be read")?;
        disk.label = DiskLabel::parse(sector)
            .ok_or("the virtio-blk disk carries no Denali label (cargo denali writes one), so it is left alone")?;
        Ok(disk)
    }

    /// Refuses what the device would: an empty, ragged or too long
    /// transfer, a range past the end.
    fn check(&self, sector: u64, len: usize, most: usize) -> Result<(), Error> {
        let count = (len / SECTOR_SIZE) as u64;
        let fits = sector.checked_add(count).is_some_and(|end| end <= self.sectors);
        (len != 0 && len <= most && len.is_multiple_of(SECTOR_SIZE) && fits).then_some(()).ok_or(Error::Io)
    }

    /// Moves the frames at physical addresses `frames` to (`kind`
    /// [`T_OUT`]) or from ([`T_IN`]) consecutive pages of the disk from
    /// `sector`, in one request; the segments it carried.
    ///
    /// # Safety
    ///
    /// Each frame must be RAM the caller owns, listed once, which nothing
    /// else reads or writes until this returns.
    unsafe fn transfer_frames(&mut self, kind: u32, sector: u64, frames: &[u64]) -> Result<usize, Error> {
        self.check(sector, frames.len() * FRAME_SIZE, self.device.segments * FRAME_SIZE)?;
        let mut segments: [&mut [u8]; FRAMES_PER_TRANSFER] = core::array::from_fn(|_| &mut [][..]);
        let mut count = 0;
        for (start, len) in extents(frames) {
            // SAFETY: the caller's promise (frames physically adjacent are
            // adjacent in the physmap too, which maps all RAM in order).
            segments[count] = unsafe { core::slice::from_raw_parts_mut(phys::to_virt(start), len) };
            count += 1;
        }
        self.device.request(kind, sector, &mut segments[..count])?;
        Ok(count)
    }
}

impl BlockDevice for Disk {
    fn sectors(&self) -> u64 {
        self.sectors
    }

    fn label(&self) -> DiskLabel {
        self.label
    }

    /// Reads `len` bytes (whole sectors, at most [`DISK_IO_MAX`]) from
    /// `sector`; [`Error::Io`] if the device fails.
    fn read(&mut self, sector: u64, len: usize) -> Result<&[u8], Error> {
        self.check(sector, len, DISK_IO_MAX)?;
        let buffer = &mut self.buffer[..len];
        self.device.request(T_IN, sector, &mut [&mut *buffer])?;
        Ok(buffer)
    }

    /// Writes `len` bytes (whole sectors, at most [`DISK_IO_MAX`]) at
    /// `sector`, once `fill` has put them in the buffer it is given.
    fn write(
        &mut self,
        sector: u64,
        len: usize,
        fill: &mut dyn FnMut(&mut [u8]) -> Result<(), Error>,
    ) -> Result<(), Error> {
        self.check(sector, len, DISK_IO_MAX)?;
        let buffer = &mut self.buffer[..len];
        fill(buffer)?;
        self.device.request(T_OUT, sector, &mut [buffer])
    }

    fn frames_per_transfer(&self) -> usize {
        self.device.segments
    }

    /// Writes the frames at physical addresses `frames` to consecutive
    /// pages from `sector` in one request, the device reading each frame
    /// itself (no copy).
    ///
    /// # Safety
    ///
    /// Each frame must be RAM the caller owns, which nothing writes until
    /// this returns (the transfer is complete by then).
    unsafe fn write_frames(&mut self, sector: u64, frames: &[u64]) -> Result<usize, Error> {
        // SAFETY: the caller's promise, passed on.
        unsafe { self.transfer_frames(T_OUT, sector, frames) }
    }

    /// Reads consecutive pages from `sector` straight into the frames at
    /// physical addresses `frames` (the device writes them), in one
    /// request.
    ///
    /// # Safety
    ///
    /// Each frame must be RAM the caller owns, mapped nowhere else and
    /// referenced by nothing while this runs.
    unsafe fn read_frames(&mut self, sector: u64, frames: &[u64]) -> Result<usize, Error> {
        // SAFETY: the caller's promise, passed on.
        unsafe { self.transfer_frames(T_IN, sector, frames) }
    }
}
