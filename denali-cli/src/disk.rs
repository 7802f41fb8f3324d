//! Bare-metal disk images: a GPT disk with one EFI system partition (FAT)
//! holding the UEFI loader as `\EFI\BOOT\BOOTX64.EFI`, the isolation kernel
//! and the boot bundle, which is what a PC's or a cloud VM's firmware boots.

use anyhow::{Context, Result};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

const MIB: u64 = 1 << 20;
const SECTOR: u64 = 512;
/// Where the partition starts (1 MiB, the usual alignment).
const PARTITION_START: u64 = MIB;

/// Paths of the files on the partition.
pub const LOADER_PATH: &str = "EFI/BOOT/BOOTX64.EFI";
/// The kernel, read by the loader.
pub const KERNEL_PATH: &str = "denali/kernel.elf";
/// The boot bundle, read by the loader.
pub const BUNDLE_PATH: &str = "denali/bundle.bin";

/// Writes a bootable image at `path` with the loader, kernel and bundle.
pub fn write_image(path: &Path, loader: &[u8], kernel: &[u8], bundle: &[u8]) -> Result<()> {
    let payload = (loader.len() + kernel.len() + bundle.len()) as u64;
    // FAT32 wants at least 33 MiB of clusters; leave room for the tables.
    let partition_len = (payload * 2 + 8 * MIB).max(64 * MIB).next_multiple_of(MIB);
    let disk_len = PARTITION_START + partition_len + MIB;
    let write = |what: &str| format!("cannot write the disk image {} ({what})", path.display());
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .with_context(|| write("create"))?;
    file.set_len(disk_len).with_context(|| write("size"))?;

    let mbr = gpt::mbr::ProtectiveMBR::with_lb_size(u32::try_from(disk_len / SECTOR - 1).unwrap_or(u32::MAX));
    mbr.overwrite_lba0(&mut file).with_context(|| write("protective MBR"))?;
    let mut disk = gpt::GptConfig::new().writable(true).create_from_device(file, None).with_context(|| write("GPT"))?;
    disk.add_partition_at(
        "EFI system partition",
        1,
        PARTITION_START / SECTOR,
        partition_len / SECTOR,
        gpt::partition_types::EFI,
        0,
    )
    .with_context(|| write("partition"))?;
    let file = disk.write().with_context(|| write("GPT"))?;

    let mut partition = Slice { file, start: PARTITION_START, len: partition_len, pos: 0 };
    fatfs::format_volume(&mut partition, fatfs::FormatVolumeOptions::new().volume_label(*b"DENALI     "))
        .with_context(|| write("FAT"))?;
    let fs = fatfs::FileSystem::new(partition, fatfs::FsOptions::new()).with_context(|| write("FAT"))?;
    for (name, data) in [(LOADER_PATH, loader), (KERNEL_PATH, kernel), (BUNDLE_PATH, bundle)] {
        let (dirs, file_name) = name.rsplit_once('/').expect("paths have a directory");
        let mut dir = fs.root_dir();
        for part in dirs.split('/') {
            dir = dir.create_dir(part).with_context(|| write(name))?;
        }
        let mut out = dir.create_file(file_name).with_context(|| write(name))?;
        out.truncate().with_context(|| write(name))?;
        out.write_all(data).with_context(|| write(name))?;
    }
    fs.unmount().with_context(|| write("FAT"))?;
    Ok(())
}

/// The boot bundle inside an image [`write_image`] wrote (for what its VMs
/// ask of a run: their disk windows).
pub fn read_bundle(path: &Path) -> Result<Vec<u8>> {
    let read = |what: &str| format!("cannot read the disk image {} ({what})", path.display());
    let file = File::open(path).with_context(|| read("open"))?;
    let len = file.metadata().with_context(|| read("size"))?.len();
    let partition = Slice { file, start: PARTITION_START, len: len.saturating_sub(PARTITION_START + MIB), pos: 0 };
    let fs = fatfs::FileSystem::new(partition, fatfs::FsOptions::new()).with_context(|| read("FAT"))?;
    let mut bundle = Vec::new();
    let mut file = fs.root_dir().open_file(BUNDLE_PATH).with_context(|| read(BUNDLE_PATH))?;
    file.read_to_end(&mut bundle).with_context(|| read(BUNDLE_PATH))?;
    Ok(bundle)
}

/// The partition: a window of the disk file that fatfs reads and writes.
struct Slice {
    file: File,
    start: u64,
    len: u64,
    pos: u64,
}

impl Slice {
    fn clamp(&self, n: usize) -> usize {
        n.min(self.len.saturating_sub(self.pos) as usize)
    }
}

impl Read for Slice {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.clamp(buf.len());
        self.file.seek(SeekFrom::Start(self.start + self.pos))?;
        let n = self.file.read(&mut buf[..n])?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Write for Slice {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.clamp(buf.len());
        self.file.seek(SeekFrom::Start(self.start + self.pos))?;
        let n = self.file.write(&buf[..n])?;
        self.pos += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

impl Seek for Slice {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        let target = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
        };
        match target {
            Some(n) if n <= self.len => {
                self.pos = n;
                Ok(n)
            }
            _ => Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "seek outside the partition")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bundle_written_into_an_image_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.img");
        write_image(&path, b"loader", b"kernel", b"the bundle").unwrap();
        assert_eq!(read_bundle(&path).unwrap(), b"the bundle");
        let foreign = dir.path().join("y.img");
        std::fs::write(&foreign, vec![0u8; 4 << 20]).unwrap();
        assert!(read_bundle(&foreign).unwrap_err().to_string().contains("cannot read the disk image"));
    }
}
