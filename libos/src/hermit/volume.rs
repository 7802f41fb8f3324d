//! The filesystem std::fs sees: a FAT volume on the VM's own disk (the
//! window `[disk] size` in Denali.toml gives it), read and written by the
//! `lamfat` crate (rust-fatfs, republished for `no_std`). It is mounted on
//! first use, and formatted then if the disk is blank, so a service's
//! files survive its reboots as its disk does. FAT because a host can read
//! it too (`mtools`, a loop mount) and because the crate made for the job
//! exists; names are case-insensitive and files stop at 4 GiB, as on FAT.
//!
//! Every write goes straight to the disk (the cache below is write-through)
//! and std calls no `fsync` on this platform, so what a write returned is
//! what the next boot reads.

extern crate alloc;

use crate::disk::{self, SECTOR_SIZE};
use alloc::boxed::Box;
use core::cell::RefCell;
use denali_abi::calendar::CalendarTime;
use hermit_abi::{EIO, ENODEV, ENOSPC};
use lamfat::{Date, DateTime, FileSystem, FsOptions, LossyOemCpConverter, SeekFrom, Time, TimeProvider};

/// The mounted volume.
pub(super) type Volume = FileSystem<Disk, WallClock, LossyOemCpConverter>;
/// An open file on it.
pub(super) type FatFile = lamfat::File<'static, Disk, WallClock, LossyOemCpConverter>;
/// An open directory on it.
pub(super) type FatDir = lamfat::Dir<'static, Disk, WallClock, LossyOemCpConverter>;
/// An entry of a directory on it.
pub(super) type FatEntry = lamfat::DirEntry<'static, Disk, WallClock, LossyOemCpConverter>;
/// A failure from the crate, carrying our disk's errno.
pub(super) type FatError = lamfat::Error<Errno>;

/// The volume, once mounted (or why it cannot be).
struct Mount(RefCell<Option<Result<&'static Volume, i32>>>);

// SAFETY: a Denali VM runs one green thread at a time and mounting never
// switches threads (disk hypercalls are synchronous), so no two borrows of
// the cell overlap.
unsafe impl Sync for Mount {}

static MOUNT: Mount = Mount(RefCell::new(None));

/// The VM's volume, mounted (and formatted, if the disk is blank) on the
/// first call; an errno if there is no disk or it holds something else.
pub(super) fn volume() -> Result<&'static Volume, i32> {
    if let Some(mounted) = *MOUNT.0.borrow() {
        return mounted;
    }
    let mounted = mount();
    *MOUNT.0.borrow_mut() = Some(mounted);
    mounted
}

fn mount() -> Result<&'static Volume, i32> {
    if disk::capacity() == 0 {
        crate::eprintln!(
            "denali: std::fs needs a disk, and this VM has none: give it one with [disk] size = \"16 MiB\" in Denali.toml"
        );
        return Err(ENODEV);
    }
    let mut first = [0u8; SECTOR_SIZE];
    disk::read_at(0, &mut first).map_err(|_| EIO)?;
    if first.iter().all(|&b| b == 0) {
        let label = *b"DENALI     ";
        lamfat::format_volume(&mut Disk::new(), lamfat::FormatVolumeOptions::new().volume_label(label))
            .map_err(|e| errno(&e))?;
    }
    let options = FsOptions::new().time_provider(WallClock).update_accessed_date(false);
    match FileSystem::new(Disk::new(), options) {
        Ok(volume) => Ok(Box::leak(Box::new(volume))),
        Err(lamfat::Error::Io(Errno(errno))) => Err(errno),
        Err(_) => {
            crate::eprintln!(
                "denali: the VM's disk holds data that is not a FAT filesystem, so std::fs leaves it alone: \
                 delete the disk file to start with an empty one"
            );
            Err(EIO)
        }
    }
}

/// The errno a failure of the crate means.
pub(super) fn errno(error: &FatError) -> i32 {
    use hermit_abi::{EEXIST, EINVAL, ENAMETOOLONG, ENOENT, ENOTEMPTY};
    match error {
        lamfat::Error::Io(Errno(errno)) => *errno,
        lamfat::Error::NotFound => ENOENT,
        lamfat::Error::AlreadyExists => EEXIST,
        lamfat::Error::DirectoryIsNotEmpty => ENOTEMPTY,
        lamfat::Error::NotEnoughSpace | lamfat::Error::WriteZero => ENOSPC,
        lamfat::Error::InvalidFileNameLength => ENAMETOOLONG,
        lamfat::Error::InvalidInput | lamfat::Error::UnsupportedFileNameCharacter => EINVAL,
        _ => EIO,
    }
}

/// An errno from the disk, as the crate carries it.
#[derive(Clone, Copy, Debug)]
pub(super) struct Errno(i32);

impl lamfat::IoError for Errno {
    fn is_interrupted(&self) -> bool {
        false
    }

    fn new_unexpected_eof_error() -> Self {
        Errno(EIO)
    }

    fn new_write_zero_error() -> Self {
        Errno(ENOSPC)
    }
}

/// Sectors the cache holds: the FAT and directory sectors a lookup walks.
const CACHED_SECTORS: usize = 32;

/// The VM's disk as a seekable stream of bytes. Small and unaligned
/// transfers (FAT entries, directory entries) go through a write-through
/// cache of whole sectors, so a lookup does not cost a hypercall per
/// entry; whole sectors of file data go straight to the disk.
pub(super) struct Disk {
    position: u64,
    cache: SectorCache,
}

impl Disk {
    fn new() -> Self {
        Disk { position: 0, cache: SectorCache::default() }
    }
}

impl lamfat::IoBase for Disk {
    type Error = Errno;
}

impl lamfat::Read for Disk {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Errno> {
        let len = transfer_len(self.position, buf.len());
        if len == 0 {
            return Ok(0);
        }
        let at = self.position;
        let done = if let Some(whole) = whole_sectors(at, len) {
            disk::read_at(at, &mut buf[..whole]).map_err(|_| Errno(EIO))?;
            whole
        } else {
            let sector = self.cache.sector(at / SECTOR_SIZE as u64)?;
            let within = (at % SECTOR_SIZE as u64) as usize;
            let part = len.min(SECTOR_SIZE - within);
            buf[..part].copy_from_slice(&sector[within..within + part]);
            part
        };
        self.position += done as u64;
        Ok(done)
    }
}

impl lamfat::Write for Disk {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Errno> {
        let len = transfer_len(self.position, buf.len());
        if len == 0 {
            return Ok(0);
        }
        let at = self.position;
        let done = if let Some(whole) = whole_sectors(at, len) {
            self.cache.forget(at / SECTOR_SIZE as u64, whole / SECTOR_SIZE);
            disk::write_at(at, &buf[..whole]).map_err(|_| Errno(EIO))?;
            whole
        } else {
            // Part of one sector: patch it in the cache, write it whole.
            let number = at / SECTOR_SIZE as u64;
            let within = (at % SECTOR_SIZE as u64) as usize;
            let part = len.min(SECTOR_SIZE - within);
            let sector = self.cache.sector(number)?;
            sector[within..within + part].copy_from_slice(&buf[..part]);
            let sector = *sector;
            if disk::write_at(number * SECTOR_SIZE as u64, &sector).is_err() {
                // The cache must not keep what the disk did not take.
                self.cache.forget(number, 1);
                return Err(Errno(EIO));
            }
            part
        };
        self.position += done as u64;
        Ok(done)
    }

    fn flush(&mut self) -> Result<(), Errno> {
        Ok(())
    }
}

impl lamfat::Seek for Disk {
    fn seek(&mut self, to: SeekFrom) -> Result<u64, Errno> {
        let position = match to {
            SeekFrom::Start(at) => Some(at),
            SeekFrom::Current(delta) => self.position.checked_add_signed(delta),
            SeekFrom::End(delta) => disk::capacity().checked_add_signed(delta),
        };
        self.position = position.filter(|&p| p <= disk::capacity()).ok_or(Errno(hermit_abi::EINVAL))?;
        Ok(self.position)
    }
}

/// The bytes of whole sectors a `len`-byte transfer at `at` starts with,
/// if it starts on a sector and spans one or more.
fn whole_sectors(at: u64, len: usize) -> Option<usize> {
    (at.is_multiple_of(SECTOR_SIZE as u64) && len >= SECTOR_SIZE).then(|| len - len % SECTOR_SIZE)
}

/// How much of a `wanted`-byte transfer at `position` fits on the disk.
fn transfer_len(position: u64, wanted: usize) -> usize {
    disk::capacity().saturating_sub(position).min(wanted as u64) as usize
}

/// A few recently used sectors, each exactly as on the disk.
#[derive(Default)]
struct SectorCache {
    slots: alloc::vec::Vec<(u64, Box<[u8; SECTOR_SIZE]>)>,
    /// The slot to replace next, round robin.
    hand: usize,
}

impl SectorCache {
    /// Sector `number`, read from the disk unless it is cached.
    fn sector(&mut self, number: u64) -> Result<&mut [u8; SECTOR_SIZE], Errno> {
        if let Some(slot) = self.slots.iter().position(|(n, _)| *n == number) {
            return Ok(&mut self.slots[slot].1);
        }
        let mut data = Box::new([0u8; SECTOR_SIZE]);
        disk::read_at(number * SECTOR_SIZE as u64, &mut data[..]).map_err(|_| Errno(EIO))?;
        let slot = if self.slots.len() < CACHED_SECTORS {
            self.slots.push((number, data));
            self.slots.len() - 1
        } else {
            self.hand = (self.hand + 1) % CACHED_SECTORS;
            self.slots[self.hand] = (number, data);
            self.hand
        };
        Ok(&mut self.slots[slot].1)
    }

    /// Drops `count` sectors from `first` on: they were written around the
    /// cache.
    fn forget(&mut self, first: u64, count: usize) {
        self.slots.retain(|(n, _)| !(first..first + count as u64).contains(n));
        self.hand = 0;
    }
}

/// File times from the VM's wall clock (the kernel's reading at boot plus
/// the global clock), in UTC; 1980-01-01 if the machine has no clock.
#[derive(Debug, Clone, Copy)]
pub(super) struct WallClock;

impl TimeProvider for WallClock {
    fn get_current_date(&self) -> Date {
        self.get_current_date_time().date
    }

    fn get_current_date_time(&self) -> DateTime {
        let now = CalendarTime::from_unix_seconds(super::time::unix_ns() / 1_000_000_000);
        let year = now.year.clamp(1980, 2107) as u16;
        let date = Date::new(year, u16::from(now.month), u16::from(now.day));
        DateTime::new(date, Time::new(u16::from(now.hour), u16::from(now.minute), u16::from(now.second), 0))
    }
}

/// Seconds since the Unix epoch of a time FAT recorded.
pub(super) fn unix_seconds(time: DateTime) -> u64 {
    let (date, time) = (time.date, time.time);
    CalendarTime::new(
        u32::from(date.year),
        date.month as u8,
        date.day as u8,
        time.hour as u8,
        time.min as u8,
        time.sec as u8,
    )
    .map_or(0, |t| t.unix_seconds())
}
