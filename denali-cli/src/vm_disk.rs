//! The VMs' disk file: one file per service (`<target-dir>/denali/<profile>/
//! <name>.disk` unless `--disk` names another) that the isolation kernel
//! sees as a virtio-blk disk, under our monitor and under QEMU alike, and
//! divides into a window per VM (see `denali_abi::disk`).
//!
//! The file is made on first use (sparse: only written sectors take room),
//! grows when a manifest asks for more, never shrinks, and carries the
//! label without which the kernel leaves a disk alone.

use crate::run::Service;
use anyhow::{Context, Result, bail};
use denali_abi::disk::{DiskLabel, SECTOR_SIZE, sectors_needed};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Bytes a disk needs to hold every VM's window of `services` and `swap`
/// bytes of swap area after them (0: no disk is needed).
pub fn bytes_needed(services: &[Service], swap: u64) -> u64 {
    let windows = services.iter().flat_map(|s| (0..s.manifest.instances).map(|_| s.manifest.disk / SECTOR_SIZE as u64));
    let windows: Vec<u64> = windows.filter(|&sectors| sectors != 0).collect();
    if windows.is_empty() && swap == 0 {
        return 0;
    }
    let windows = sectors_needed(windows).map_or(u64::MAX, |sectors| sectors.saturating_mul(SECTOR_SIZE as u64));
    // The swap area starts at the next page.
    windows.next_multiple_of(4096).saturating_add(swap)
}

/// The disk file a run of `services` uses, made ready with `swap` bytes of
/// swap area: `explicit` (from `--disk`) or the first service's; `None`
/// when no VM asks for a disk and there is no swap.
pub fn for_run(services: &[Service], explicit: Option<&Path>, swap: u64) -> Result<Option<PathBuf>> {
    let bytes = bytes_needed(services, swap);
    let path = match (bytes, explicit, services.first()) {
        (0, Some(_), _) => {
            bail!(
                "--disk names a disk file but no VM asks for a disk: add [disk] size = \"1 MiB\" to the service's Denali.toml, or give --swap MIB"
            )
        }
        (0, None, _) | (_, None, None) => return Ok(None),
        (_, Some(path), _) => path.to_path_buf(),
        (_, None, Some(first)) => first.disk_file.clone(),
    };
    prepare(&path, bytes)?;
    Ok(Some(path))
}

/// Makes `path` a Denali disk of at least `bytes`: creates and labels it,
/// or checks its label and grows it.
pub fn prepare(path: &Path, bytes: u64) -> Result<()> {
    let open =
        |e: std::io::Error| anyhow::Error::new(e).context(format!("cannot open the disk file {}", path.display()));
    let mut file =
        std::fs::File::options().read(true).write(true).create(true).truncate(false).open(path).map_err(open)?;
    let len = file.metadata().map_err(open)?.len();
    if len == 0 {
        file.write_all(&DiskLabel::CURRENT.to_sector()).map_err(open)?;
    } else {
        let mut first = vec![0u8; SECTOR_SIZE];
        let labelled = file.read_exact(&mut first).is_ok() && DiskLabel::is_on(&first);
        if !labelled {
            bail!(
                "{} is not a Denali disk (its first sector has no Denali label): name another file with --disk, or delete it",
                path.display()
            );
        }
    }
    let wanted = bytes.max(SECTOR_SIZE as u64);
    if file.seek(SeekFrom::End(0)).map_err(open)? < wanted {
        file.set_len(wanted)
            .with_context(|| format!("cannot grow the disk file {} to {wanted} bytes", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_disk_is_made_labelled_grown_and_never_shrunk() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.disk");
        prepare(&path, 1 << 20).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len(), 1 << 20);
        assert!(DiskLabel::is_on(&bytes));
        // Data written stays; a larger request grows the file, a smaller
        // one leaves it.
        let mut file = std::fs::File::options().write(true).open(&path).unwrap();
        file.seek(SeekFrom::Start(8192)).unwrap();
        file.write_all(b"kept").unwrap();
        prepare(&path, 2 << 20).unwrap();
        prepare(&path, 4096).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!((bytes.len(), &bytes[8192..8196]), (2 << 20, &b"kept"[..]));
    }

    #[test]
    fn a_file_without_the_label_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notes.txt");
        std::fs::write(&path, b"my notes").unwrap();
        let err = prepare(&path, 1 << 20).unwrap_err().to_string();
        assert!(err.contains("is not a Denali disk"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), b"my notes");
    }
}
