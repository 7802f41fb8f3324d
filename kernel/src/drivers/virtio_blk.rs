//! The machine's disk: a virtio-blk device driven by the `virtio-drivers`
//! crate, over MMIO (our monitor) or PCI (QEMU, clouds). It holds the VMs'
//! disk windows (see `denali_abi::disk`).
//!
//! Transfers are synchronous: the kernel queues one request and polls the
//! used ring until the device answers, so the device raises no interrupt.
//! Under our monitor the answer is there when the notification returns;
//! the time spent waiting is charged to the VM that asked.

use super::KernelHal;
use crate::mem::phys;
use crate::platform::BlockDevice;
use alloc::vec;
use alloc::vec::Vec;
use core::ptr::NonNull;
use denali_abi::disk::{DISK_IO_MAX, DiskLabel, SECTOR_SIZE};
use denali_abi::hypercall::Error;

/// Bytes in a page frame.
const FRAME_SIZE: usize = crate::mem::frame::FRAME_SIZE as usize;
use virtio_drivers::device::blk::VirtIOBlk;
use virtio_drivers::transport::SomeTransport;

/// A labelled Denali disk.
pub struct Disk {
    device: VirtIOBlk<KernelHal, SomeTransport<'static>>,
    /// Its size in sectors.
    pub sectors: u64,
    /// Its label (where the swap area is).
    pub label: DiskLabel,
    /// Where transfers go through: allocated once, as large as the largest
    /// transfer (allocating and zeroing a buffer per request cost more than
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
        let mut device = VirtIOBlk::new(transport).map_err(|_| "the virtio-blk disk refused to start")?;
        device.disable_interrupts();
        let sectors = device.capacity();
        let mut disk = Disk { device, sectors, label: DiskLabel::EMPTY, buffer: vec![0u8; DISK_IO_MAX] };
        let sector = disk.read(0, SECTOR_SIZE).map_err(|_| "the virtio-blk disk could not be read")?;
        disk.label = DiskLabel::parse(sector)
            .ok_or("the virtio-blk disk carries no Denali label (cargo denali writes one), so it is left alone")?;
        Ok(disk)
    }

    /// Refuses what the device would (or what `virtio-drivers` asserts on):
    /// an empty, ragged or too long transfer, a range past the end.
    fn check(&self, sector: u64, len: usize) -> Result<(), Error> {
        let count = (len / SECTOR_SIZE) as u64;
        let fits = sector.checked_add(count).is_some_and(|end| end <= self.sectors);
        (len != 0 && len <= DISK_IO_MAX && len.is_multiple_of(SECTOR_SIZE) && fits).then_some(()).ok_or(Error::Io)
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
        self.check(sector, len)?;
        let buffer = &mut self.buffer[..len];
        self.device.read_blocks(sector as usize, buffer).map_err(|_| Error::Io)?;
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
        self.check(sector, len)?;
        let buffer = &mut self.buffer[..len];
        fill(buffer)?;
        self.device.write_blocks(sector as usize, buffer).map_err(|_| Error::Io)
    }

    /// Writes the page-sized frame at physical address `frame` at
    /// `sector`, the device reading the frame itself (no copy).
    ///
    /// # Safety
    ///
    /// `frame` must be a frame of RAM the caller owns, which nothing writes
    /// until this returns (the transfer is complete by then).
    unsafe fn write_frame(&mut self, sector: u64, frame: u64) -> Result<(), Error> {
        self.check(sector, FRAME_SIZE)?;
        // SAFETY: the caller's promise; the physmap maps all RAM.
        let bytes = unsafe { core::slice::from_raw_parts(phys::to_virt(frame), FRAME_SIZE) };
        self.device.write_blocks(sector as usize, bytes).map_err(|_| Error::Io)
    }

    /// Reads a page from `sector` straight into the frame at physical
    /// address `frame` (the device writes it).
    ///
    /// # Safety
    ///
    /// `frame` must be a frame of RAM the caller owns, mapped nowhere else
    /// and referenced by nothing while this runs.
    unsafe fn read_frame(&mut self, sector: u64, frame: u64) -> Result<(), Error> {
        self.check(sector, FRAME_SIZE)?;
        // SAFETY: the caller's promise; the physmap maps all RAM.
        let bytes = unsafe { core::slice::from_raw_parts_mut(phys::to_virt(frame), FRAME_SIZE) };
        self.device.read_blocks(sector as usize, bytes).map_err(|_| Error::Io)
    }
}
