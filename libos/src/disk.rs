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
    for piece in pieces(offset, buf.len()) {
        let part = &mut buf[piece.at..piece.at + piece.len];
        let Some(within) = piece.within else {
            read_sectors(piece.sector, part)?;
            continue;
        };
        let mut bounce = [0u8; SECTOR_SIZE];
        read_sectors(piece.sector, &mut bounce)?;
        part.copy_from_slice(&bounce[within..within + piece.len]);
    }
    Ok(())
}

/// Writes all of `buf` to the disk, starting `offset` bytes in.
pub fn write_at(offset: u64, buf: &[u8]) -> Result<()> {
    check_range(offset, buf.len())?;
    for piece in pieces(offset, buf.len()) {
        let part = &buf[piece.at..piece.at + piece.len];
        let Some(within) = piece.within else {
            write_sectors(piece.sector, part)?;
            continue;
        };
        // Part of a sector: keep the bytes around the ones written.
        let mut bounce = [0u8; SECTOR_SIZE];
        read_sectors(piece.sector, &mut bounce)?;
        bounce[within..within + piece.len].copy_from_slice(part);
        write_sectors(piece.sector, &bounce)?;
    }
    Ok(())
}

/// One transfer's worth of a byte range: whole sectors (at most one
/// hypercall's), or part of a single sector.
struct Piece {
    /// First sector.
    sector: u64,
    /// Where in the caller's buffer the piece starts.
    at: usize,
    /// Bytes in the piece.
    len: usize,
    /// `None` for whole sectors; else the piece's offset in its sector.
    within: Option<usize>,
}

/// The pieces of `len` bytes starting `offset` bytes into the disk.
fn pieces(offset: u64, len: usize) -> impl Iterator<Item = Piece> {
    let mut at = 0;
    core::iter::from_fn(move || {
        if at == len {
            return None;
        }
        let here = offset + at as u64;
        let (sector, within) = (here / SECTOR_SIZE as u64, (here % SECTOR_SIZE as u64) as usize);
        let rest = len - at;
        let piece = if within == 0 && rest >= SECTOR_SIZE {
            Piece { sector, at, len: (rest - rest % SECTOR_SIZE).min(DISK_IO_MAX), within: None }
        } else {
            Piece { sector, at, len: rest.min(SECTOR_SIZE - within), within: Some(within) }
        };
        at += piece.len;
        Some(piece)
    })
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

/// Reads whole sectors from `sector` on into `buf`.
fn read_sectors(sector: u64, buf: &mut [u8]) -> Result<()> {
    // SAFETY: the kernel writes at most `buf.len()` bytes at `buf`, a slice
    // borrowed mutably here.
    decode(unsafe { call3(Hypercall::DiskRead, sector, buf.as_mut_ptr() as u64, buf.len() as u64) })
}

/// Writes `buf` (whole sectors) from `sector` on.
fn write_sectors(sector: u64, buf: &[u8]) -> Result<()> {
    // SAFETY: the kernel reads `buf.len()` bytes at `buf`, a live slice.
    decode(unsafe { call3(Hypercall::DiskWrite, sector, buf.as_ptr() as u64, buf.len() as u64) })
}

/// A disk hypercall's result as an I/O result.
fn decode(result: core::result::Result<u64, CallError>) -> Result<()> {
    match result {
        Ok(_) => Ok(()),
        Err(CallError::Io) => Err(Error::new(ErrorKind::Other, "the machine's disk failed the transfer")),
        Err(CallError::BadAddress) => {
            Err(Error::new(ErrorKind::InvalidInput, "the buffer is not memory this VM may read or write"))
        }
        Err(_) => Err(Error::new(ErrorKind::InvalidInput, "the kernel refused the disk transfer")),
    }
}
