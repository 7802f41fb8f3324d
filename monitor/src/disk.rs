//! The virtio-mmio block device: the VMs' disk under our monitor, backed by
//! a file (see `denali_abi::disk` for what is on it).
//!
//! One request queue. The kernel polls for completions, so the device
//! raises no interrupt: a notification is served on the vCPU thread before
//! the kernel's register write returns, and the answer is in the used ring
//! when the kernel looks. Every request is checked (header, direction of
//! each buffer, sector range, length) and a bad one is answered with an
//! error status; the file is only ever read or written inside its size.

use crate::DiskFaults;
use crate::virtio::{COMMON_FEATURES, CONFIG_OFFSET, Event, MmioTransport, feature, read_config};
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK, VIRTIO_BLK_S_UNSUPP, VIRTIO_BLK_T_FLUSH,
    VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT,
};
use virtio_bindings::virtio_ids::VIRTIO_ID_BLOCK;
use virtio_queue::QueueT;
use virtio_queue::desc::split::Descriptor;
use vm_memory::GuestMemoryMmap;

/// Bytes in a sector.
const SECTOR: u64 = 512;
/// Longest transfer served in one request (the kernel asks for at most
/// 64 KiB).
const TRANSFER_MAX: usize = 1 << 20;

/// Request status bytes.
const S_OK: u8 = VIRTIO_BLK_S_OK as u8;
const S_IOERR: u8 = VIRTIO_BLK_S_IOERR as u8;
const S_UNSUPP: u8 = VIRTIO_BLK_S_UNSUPP as u8;

/// The device's registers and the file behind it.
pub struct BlockDevice {
    transport: MmioTransport,
    file: File,
    sectors: u64,
    /// Requests answered with an error status.
    failed: u64,
    /// Read errors still to make up.
    faults: Option<DiskFaults>,
}

impl BlockDevice {
    /// A device over `memory` serving `file`, whose size (rounded down to
    /// whole sectors) is the disk's.
    pub fn new(memory: GuestMemoryMmap, file: File) -> std::io::Result<Self> {
        let sectors = file.metadata()?.len() / SECTOR;
        let features = COMMON_FEATURES | feature(VIRTIO_BLK_F_FLUSH);
        Ok(BlockDevice {
            transport: MmioTransport::new(memory, VIRTIO_ID_BLOCK, features, 1),
            file,
            sectors,
            failed: 0,
            faults: None,
        })
    }

    /// The same device, failing reads as `faults` says.
    pub fn with_faults(mut self, faults: Option<DiskFaults>) -> Self {
        self.faults = faults;
        self
    }

    /// A read of the register at `offset`.
    pub fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset < CONFIG_OFFSET {
            return self.transport.read(offset, data);
        }
        // Configuration: capacity in sectors (u64); the rest reads as zero.
        read_config(&self.sectors.to_le_bytes(), offset, data);
    }

    /// A write of the register at `offset`; a notification serves every
    /// request queued.
    pub fn write(&mut self, offset: u64, data: &[u8]) {
        if let Some(Event::Notify(_)) = self.transport.write(offset, data) {
            self.serve();
        }
    }

    fn serve(&mut self) {
        let (file, sectors, faults) = (&self.file, self.sectors, &mut self.faults);
        let Some((queue, memory)) = self.transport.usable_queue(0) else { return };
        while let Some(chain) = queue.pop_descriptor_chain(memory) {
            let head = chain.head_index();
            let descriptors: Vec<Descriptor> = chain.clone().collect();
            let (status, data_written) = match (chain.clone().reader(memory), chain.writer(memory)) {
                (Ok(mut reader), Ok(mut writer)) => {
                    let mut header = [0u8; 16];
                    match reader.read_exact(&mut header) {
                        Ok(()) if made_up_read_error(faults, &header, writer.available_bytes()) => (S_IOERR, 0),
                        Ok(()) => serve_request(file, sectors, &header, &mut reader, &mut writer),
                        Err(_) => (S_IOERR, 0),
                    }
                }
                _ => (S_IOERR, 0),
            };
            if status != S_OK {
                self.failed += 1;
            }
            // The status byte is the chain's last writable byte.
            let written = write_status(memory, &descriptors, status).map_or(0, |()| data_written + 1);
            let _ = queue.add_used(memory, head, written as u32);
        }
    }
}

/// Whether the read whose header is `header` (with `room` bytes to fill,
/// the status byte included) is one `faults` says to fail; counts it.
fn made_up_read_error(faults: &mut Option<DiskFaults>, header: &[u8; 16], room: usize) -> bool {
    let Some(plan) = faults.as_mut().filter(|plan| plan.reads > 0) else { return false };
    let kind = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes"));
    let sector = u64::from_le_bytes(header[8..16].try_into().expect("8 bytes"));
    let end = sector.saturating_add((room as u64).saturating_sub(1) / SECTOR);
    let hit = kind == VIRTIO_BLK_T_IN && end > plan.from_sector;
    plan.reads -= u32::from(hit);
    hit
}

/// Carries out one request whose 16-byte header is `header`: data comes
/// from `reader` (after the header) or goes to `writer` (before the status
/// byte). Returns the status and the data bytes written to the guest.
fn serve_request(
    file: &File,
    sectors: u64,
    header: &[u8; 16],
    reader: &mut virtio_queue::Reader<'_>,
    writer: &mut virtio_queue::Writer<'_>,
) -> (u8, usize) {
    let kind = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes"));
    let sector = u64::from_le_bytes(header[8..16].try_into().expect("8 bytes"));
    // The last writable byte is the status, not data.
    let room = writer.available_bytes().saturating_sub(1);
    let in_range = |len: usize| {
        len != 0
            && len <= TRANSFER_MAX
            && (len as u64).is_multiple_of(SECTOR)
            && sector.checked_add(len as u64 / SECTOR).is_some_and(|end| end <= sectors)
    };
    match kind {
        VIRTIO_BLK_T_IN if in_range(room) => {
            let mut data = vec![0u8; room];
            match file.read_exact_at(&mut data, sector * SECTOR) {
                Ok(()) => match writer.write_all(&data) {
                    Ok(()) => (S_OK, room),
                    Err(_) => (S_IOERR, 0),
                },
                Err(_) => (S_IOERR, 0),
            }
        }
        VIRTIO_BLK_T_OUT if in_range(reader.available_bytes()) => {
            let mut data = vec![0u8; reader.available_bytes()];
            let done = reader.read_exact(&mut data).and_then(|()| file.write_all_at(&data, sector * SECTOR));
            (if done.is_ok() { S_OK } else { S_IOERR }, 0)
        }
        VIRTIO_BLK_T_FLUSH => (if file.sync_data().is_ok() { S_OK } else { S_IOERR }, 0),
        VIRTIO_BLK_T_GET_ID => {
            let mut id = [0u8; 20];
            id[..11].copy_from_slice(b"denali-disk");
            let len = room.min(id.len());
            match writer.write_all(&id[..len]) {
                Ok(()) => (S_OK, len),
                Err(_) => (S_IOERR, 0),
            }
        }
        VIRTIO_BLK_T_IN | VIRTIO_BLK_T_OUT => (S_IOERR, 0),
        _ => (S_UNSUPP, 0),
    }
}

/// Writes `status` to the last byte of the chain's last descriptor, which
/// must be device-writable.
fn write_status(memory: &GuestMemoryMmap, descriptors: &[Descriptor], status: u8) -> Result<(), ()> {
    use vm_memory::{Bytes, GuestAddress};
    let last = descriptors.last().filter(|d| d.is_write_only() && d.len() != 0).ok_or(())?;
    let at = last.addr().0.checked_add(u64::from(last.len()) - 1).ok_or(())?;
    memory.write_obj(status, GuestAddress(at)).map_err(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use virtio_bindings::virtio_mmio::*;
    use vm_memory::{Bytes, GuestAddress};

    const DESC: u64 = 0x1000;
    const AVAIL: u64 = 0x2000;
    const USED: u64 = 0x3000;
    const HEADER: u64 = 0x4000;
    const DATA: u64 = 0x5000;
    const STATUS: u64 = 0x6000;
    const F_NEXT: u16 = 1;
    const F_WRITE: u16 = 2;

    /// A device over 64 KiB of guest memory and a 16-sector file, set up
    /// through its registers as the kernel's driver does.
    fn device() -> (BlockDevice, GuestMemoryMmap, tempfile::NamedTempFile) {
        let memory = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap();
        let file = tempfile::NamedTempFile::new().unwrap();
        file.as_file().set_len(16 * SECTOR).unwrap();
        let mut device = BlockDevice::new(memory.clone(), file.reopen().unwrap()).unwrap();
        let reg = |device: &mut BlockDevice, offset: u32, value: u64| {
            device.write(offset.into(), &(value as u32).to_le_bytes())
        };
        reg(&mut device, VIRTIO_MMIO_QUEUE_NUM, 8);
        for (offset, addr) in [
            (VIRTIO_MMIO_QUEUE_DESC_LOW, DESC),
            (VIRTIO_MMIO_QUEUE_AVAIL_LOW, AVAIL),
            (VIRTIO_MMIO_QUEUE_USED_LOW, USED),
        ] {
            reg(&mut device, offset, addr);
        }
        reg(&mut device, VIRTIO_MMIO_QUEUE_READY, 1);
        reg(&mut device, VIRTIO_MMIO_STATUS, 0xf);
        (device, memory, file)
    }

    /// Queues one request (header, then `data` descriptors, then status)
    /// as avail entry `n`, notifies, and returns (status, used length).
    fn request(
        device: &mut BlockDevice,
        memory: &GuestMemoryMmap,
        n: u16,
        kind: u32,
        sector: u64,
        data: &[(u64, u32, u16)],
    ) -> (u8, u32) {
        let mut header = [0u8; 16];
        header[..4].copy_from_slice(&kind.to_le_bytes());
        header[8..].copy_from_slice(&sector.to_le_bytes());
        memory.write_slice(&header, GuestAddress(HEADER)).unwrap();
        memory.write_obj(0xffu8, GuestAddress(STATUS)).unwrap();
        let mut chain = vec![(HEADER, 16, 0)];
        chain.extend_from_slice(data);
        chain.push((STATUS, 1, F_WRITE));
        for (i, &(addr, len, flags)) in chain.iter().enumerate() {
            let last = i + 1 == chain.len();
            let at = DESC + 16 * i as u64;
            memory.write_obj(addr, GuestAddress(at)).unwrap();
            memory.write_obj(len, GuestAddress(at + 8)).unwrap();
            memory.write_obj(if last { flags } else { flags | F_NEXT }, GuestAddress(at + 12)).unwrap();
            memory.write_obj(i as u16 + 1, GuestAddress(at + 14)).unwrap();
        }
        memory.write_obj(0u16, GuestAddress(AVAIL + 4 + 2 * u64::from(n % 8))).unwrap();
        memory.write_obj(n + 1, GuestAddress(AVAIL + 2)).unwrap();
        device.write(VIRTIO_MMIO_QUEUE_NOTIFY.into(), &0u32.to_le_bytes());
        let used_len: u32 = memory.read_obj(GuestAddress(USED + 4 + 8 * u64::from(n % 8) + 4)).unwrap();
        (memory.read_obj(GuestAddress(STATUS)).unwrap(), used_len)
    }

    #[test]
    fn sectors_written_are_read_back_and_land_in_the_file() {
        let (mut device, memory, file) = device();
        let mut capacity = [0u8; 8];
        device.read(CONFIG_OFFSET, &mut capacity);
        assert_eq!(u64::from_le_bytes(capacity), 16);
        memory.write_slice(&[0xab; 1024], GuestAddress(DATA)).unwrap();
        assert_eq!(request(&mut device, &memory, 0, VIRTIO_BLK_T_OUT, 3, &[(DATA, 1024, 0)]), (S_OK, 1));
        memory.write_slice(&[0; 1024], GuestAddress(DATA)).unwrap();
        assert_eq!(request(&mut device, &memory, 1, VIRTIO_BLK_T_IN, 3, &[(DATA, 1024, F_WRITE)]), (S_OK, 1025));
        let mut back = [0u8; 1024];
        memory.read_slice(&mut back, GuestAddress(DATA)).unwrap();
        assert_eq!(back, [0xab; 1024]);
        let bytes = std::fs::read(file.path()).unwrap();
        assert!(bytes[3 * 512..5 * 512].iter().all(|&b| b == 0xab) && bytes[..3 * 512].iter().all(|&b| b == 0));
        assert_eq!(request(&mut device, &memory, 2, VIRTIO_BLK_T_FLUSH, 0, &[]), (S_OK, 1));
        assert_eq!(device.failed, 0);
    }

    #[test]
    fn made_up_read_errors_hit_only_the_reads_asked_for() {
        let (device, memory, _file) = device();
        let mut device = device.with_faults(Some(DiskFaults { from_sector: 8, reads: 2 }));
        let read = |device: &mut BlockDevice, n, sector| {
            request(device, &memory, n, VIRTIO_BLK_T_IN, sector, &[(DATA, 1024, F_WRITE)]).0
        };
        // Below sector 8, and writes: untouched.
        assert_eq!(read(&mut device, 0, 0), S_OK);
        assert_eq!(request(&mut device, &memory, 1, VIRTIO_BLK_T_OUT, 9, &[(DATA, 1024, 0)]).0, S_OK);
        // A read reaching sector 8 (sectors 7 and 8) and one past it fail;
        // then reads succeed again.
        assert_eq!(read(&mut device, 2, 7), S_IOERR);
        assert_eq!(read(&mut device, 3, 10), S_IOERR);
        assert_eq!(read(&mut device, 4, 10), S_OK);
    }

    #[test]
    fn hostile_requests_get_an_error_status_and_touch_nothing() {
        let (mut device, memory, file) = device();
        memory.write_slice(&[0xcd; 1024], GuestAddress(DATA)).unwrap();
        // Past the end, straddling it, wrapping, ragged, and data outside
        // guest memory.
        for (n, sector, len, addr) in
            [(0, 16, 512, DATA), (1, 15, 1024, DATA), (2, u64::MAX, 512, DATA), (3, 0, 100, DATA), (4, 0, 512, 1 << 40)]
        {
            assert_eq!(
                request(&mut device, &memory, n, VIRTIO_BLK_T_OUT, sector, &[(addr, len, 0)]).0,
                S_IOERR,
                "request {n}"
            );
        }
        // A read into a buffer the device may not write.
        assert_eq!(request(&mut device, &memory, 5, VIRTIO_BLK_T_IN, 0, &[(DATA, 512, 0)]).0, S_IOERR);
        // A kind of request the device does not know.
        assert_eq!(request(&mut device, &memory, 6, 99, 0, &[]).0, S_UNSUPP);
        assert_eq!(device.failed, 7);
        assert!(std::fs::read(file.path()).unwrap().iter().all(|&b| b == 0), "the file was written");
    }
}
