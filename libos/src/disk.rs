//! The VM's disk: its own window of the machine's disk, as many bytes as
//! `[disk] size` in its `Denali.toml` asks, kept across runs (in a file
//! beside the image under `cargo denali run`).
//!
//! Reads and writes take any offset and length; whole sectors go straight
//! between the disk and the caller's buffer, and a partial sector at either
//! end is read, patched and written back. A call returns when the device
//! has the data.
//!
//! ```ignore
//! let mut count = [0u8; 8];
//! denali::disk::read_at(0, &mut count)?;
//! let boots = u64::from_le_bytes(count) + 1;
//! denali::disk::write_at(0, &boots.to_le_bytes())?;
//! ```

use crate::hypercall::{Hypercall, call3};
use crate::io::{Error, ErrorKind, Result};
use denali_abi::disk::DISK_IO_MAX;
pub use denali_abi::disk::SECTOR_SIZE;
use denali_abi::hypercall::Error as CallError;

/// Size of this VM's disk in bytes (0: it has none).
pub fn capacity() -> u64 {
    crate::vm::info().disk_sectors * SECTOR_SIZE as u64
}

/// Fills `buf` from the disk, starting `offset` bytes in.
pub fn read_at(offset: u64, buf: &mut [u8]) -> Result<()> {
    check_range(offset, buf.len())?;
    let (mut offset, mut done) = (offset, 0);
    while done < buf.len() {
        let rest = &mut buf[done..];
        let (sector, within) = split(offset);
        let moved = if within == 0 && rest.len() >= SECTOR_SIZE {
            let len = whole_sectors(rest.len());
            transfer(Hypercall::DiskRead, sector, rest.as_mut_ptr() as u64, len)?;
            len
        } else {
            let mut bounce = [0u8; SECTOR_SIZE];
            transfer(Hypercall::DiskRead, sector, bounce.as_mut_ptr() as u64, SECTOR_SIZE)?;
            let len = rest.len().min(SECTOR_SIZE - within);
            rest[..len].copy_from_slice(&bounce[within..within + len]);
            len
        };
        done += moved;
        offset += moved as u64;
    }
    Ok(())
}

/// Writes all of `buf` to the disk, starting `offset` bytes in.
pub fn write_at(offset: u64, buf: &[u8]) -> Result<()> {
    check_range(offset, buf.len())?;
    let (mut offset, mut done) = (offset, 0);
    while done < buf.len() {
        let rest = &buf[done..];
        let (sector, within) = split(offset);
        let moved = if within == 0 && rest.len() >= SECTOR_SIZE {
            let len = whole_sectors(rest.len());
            transfer(Hypercall::DiskWrite, sector, rest.as_ptr() as u64, len)?;
            len
        } else {
            // Part of a sector: keep the bytes around the ones written.
            let mut bounce = [0u8; SECTOR_SIZE];
            transfer(Hypercall::DiskRead, sector, bounce.as_mut_ptr() as u64, SECTOR_SIZE)?;
            let len = rest.len().min(SECTOR_SIZE - within);
            bounce[within..within + len].copy_from_slice(&rest[..len]);
            transfer(Hypercall::DiskWrite, sector, bounce.as_ptr() as u64, SECTOR_SIZE)?;
            len
        };
        done += moved;
        offset += moved as u64;
    }
    Ok(())
}

/// The sector holding byte `offset`, and where in it the byte is.
fn split(offset: u64) -> (u64, usize) {
    (offset / SECTOR_SIZE as u64, (offset % SECTOR_SIZE as u64) as usize)
}

/// The whole sectors at the start of `len` bytes, at most one transfer's.
fn whole_sectors(len: usize) -> usize {
    (len - len % SECTOR_SIZE).min(DISK_IO_MAX)
}

fn check_range(offset: u64, len: usize) -> Result<()> {
    if capacity() == 0 {
        return Err(Error::new(
            ErrorKind::Unsupported,
            "this VM has no disk: give it one with [disk] size = \"1 MiB\" in Denali.toml",
        ));
    }
    match offset.checked_add(len as u64) {
        Some(end) if end <= capacity() => Ok(()),
        _ => Err(Error::new(ErrorKind::InvalidInput, "the range goes past the end of the VM's disk")),
    }
}

fn transfer(call: Hypercall, sector: u64, addr: u64, len: usize) -> Result<()> {
    match call3(call, sector, addr, len as u64) {
        Ok(_) => Ok(()),
        Err(CallError::Io) => Err(Error::new(ErrorKind::Other, "the machine's disk failed the transfer")),
        Err(CallError::BadAddress) => {
            Err(Error::new(ErrorKind::InvalidInput, "the buffer is not memory this VM may read or write"))
        }
        Err(_) => Err(Error::new(ErrorKind::InvalidInput, "the kernel refused the disk transfer")),
    }
}
