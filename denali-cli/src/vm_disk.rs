//! The VMs' disk file: one file per service (`<target-dir>/denali/<profile>/
//! <name>.disk` unless `--disk` names another) that the isolation kernel
//! sees as a virtio-blk disk, under our monitor and under QEMU alike, and
//! divides into a window per VM (see `denali_abi::disk`), with the swap
//! area `--swap` asks for beyond every window.
//!
//! The file is made on first use (sparse: only written sectors take room),
//! grows when a run needs more, never shrinks, and carries the label
//! without which the kernel leaves a disk alone. Before each run the last
//! run's swap area is emptied (its pages are scratch, and must not reach a
//! VM whose window later grows over them) and the label names this run's.

use crate::run::Service;
use anyhow::{Context, Result, bail};
use denali_abi::disk::{DiskLabel, FIRST_DATA_SECTOR, SECTOR_SIZE, sectors_needed};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

/// Sectors in a page: the swap area starts on one.
const SECTORS_PER_PAGE: u64 = 8;

/// One past the last sector of `services`' windows (the label's sectors
/// when no VM asks for a disk).
pub fn windows_end(services: &[Service]) -> u64 {
    let windows = services.iter().flat_map(|s| (0..s.manifest.instances).map(|_| s.manifest.disk / SECTOR_SIZE as u64));
    sectors_needed(windows).unwrap_or(u64::MAX)
}

/// One past the last sector of the windows a boot bundle's VMs ask for.
pub fn windows_end_of_bundle(bundle: &[u8]) -> Result<u64> {
    let bundle = denali_abi::boot::Bundle::parse(bundle).context("the image's boot bundle is not valid")?;
    let windows = (0..bundle.len())
        .filter_map(|i| bundle.entry(i))
        .flat_map(|(entry, _)| (0..entry.instances).map(move |_| entry.disk_sectors));
    Ok(sectors_needed(windows).unwrap_or(u64::MAX))
}

/// The disk file a run of `services` uses, made ready with `swap` bytes of
/// swap area: `explicit` (from `--disk`) or the first service's; `None`
/// when no VM asks for a disk and there is no swap.
pub fn for_run(services: &[Service], explicit: Option<&Path>, swap: u64) -> Result<Option<PathBuf>> {
    let windows_end = windows_end(services);
    let needed = windows_end > FIRST_DATA_SECTOR || swap > 0;
    let path = match (needed, explicit, services.first()) {
        (false, Some(_), _) => {
            bail!(
                "--disk names a disk file but no VM asks for a disk: add [disk] size = \"1 MiB\" to the service's Denali.toml, or give --swap MIB"
            )
        }
        (false, None, _) | (true, None, None) => return Ok(None),
        (true, Some(path), _) => path.to_path_buf(),
        (true, None, Some(first)) => first.disk_file.clone(),
    };
    prepare(&path, windows_end, swap)?;
    Ok(Some(path))
}

/// Makes `path` a Denali disk holding windows up to sector `windows_end`
/// and a swap area of `swap` bytes beyond every window it ever held:
/// creates and labels it, or checks its label, empties the last swap area
/// and grows it.
pub fn prepare(path: &Path, windows_end: u64, swap: u64) -> Result<()> {
    let open =
        |e: std::io::Error| anyhow::Error::new(e).context(format!("cannot open the disk file {}", path.display()));
    let not_a_disk = || {
        anyhow::anyhow!(
            "{} is not a Denali disk (its first sector has no Denali label): name another file with --disk, or delete it",
            path.display()
        )
    };
    let mut file =
        std::fs::File::options().read(true).write(true).create(true).truncate(false).open(path).map_err(open)?;
    let metadata = file.metadata().map_err(open)?;
    // A device (or anything but a plain file) is never labelled: its first
    // sector may be a partition table.
    if !metadata.is_file() {
        bail!("{} is not a regular file: give --disk a file (it is made if missing)", path.display());
    }
    // A run using the file holds its lock (our monitor takes it): its swap
    // area must not be emptied under it.
    // SAFETY: flock on a descriptor we own; it changes nothing but the lock,
    // which goes when the file is closed at the end of this function.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        bail!(
            "the disk file {} is in use by another run: wait for it to end, or name another file with --disk",
            path.display()
        );
    }
    let old = if metadata.len() == 0 {
        DiskLabel::EMPTY
    } else {
        let mut first = vec![0u8; SECTOR_SIZE];
        file.read_exact(&mut first).map_err(|_| not_a_disk())?;
        let old = DiskLabel::parse(&first).ok_or_else(not_a_disk)?;
        empty(&file, old.swap_start, old.swap_sectors).with_context(|| format!("cannot reset {}", path.display()))?;
        old
    };
    let windows_end = windows_end.max(old.windows_end);
    let swap_start = windows_end.next_multiple_of(SECTORS_PER_PAGE);
    let swap_sectors = swap.div_ceil(SECTOR_SIZE as u64).next_multiple_of(SECTORS_PER_PAGE);
    let label = DiskLabel { windows_end, swap_start, swap_sectors: if swap == 0 { 0 } else { swap_sectors } };
    file.seek(SeekFrom::Start(0)).map_err(open)?;
    file.write_all(&label.to_sector()).map_err(open)?;
    let wanted = swap_start.saturating_add(label.swap_sectors).max(windows_end).saturating_mul(SECTOR_SIZE as u64);
    if file.seek(SeekFrom::End(0)).map_err(open)? < wanted {
        file.set_len(wanted)
            .with_context(|| format!("cannot grow the disk file {} to {wanted} bytes", path.display()))?;
    }
    Ok(())
}

/// Zeroes `sectors` sectors from `start` in `file` (where the file has
/// them), giving the room back to the file system.
fn empty(file: &std::fs::File, start: u64, sectors: u64) -> std::io::Result<()> {
    let len = file.metadata()?.len();
    let from = start.saturating_mul(SECTOR_SIZE as u64).min(len);
    let to = start.saturating_add(sectors).saturating_mul(SECTOR_SIZE as u64).min(len);
    if from >= to {
        return Ok(());
    }
    // SAFETY: fallocate on a file descriptor we own, with a range inside
    // the file; it touches nothing but the file.
    let punched = unsafe {
        libc::fallocate(
            file.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            from as libc::off_t,
            (to - from) as libc::off_t,
        )
    };
    if punched == 0 {
        return Ok(());
    }
    // A file system without hole punching: write the zeros.
    let zeros = vec![0u8; 1 << 20];
    let mut at = from;
    while at < to {
        let n = (to - at).min(zeros.len() as u64) as usize;
        std::os::unix::fs::FileExt::write_all_at(file, &zeros[..n], at)?;
        at += n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn label(path: &Path) -> DiskLabel {
        DiskLabel::parse(&std::fs::read(path).unwrap()).unwrap()
    }

    #[test]
    fn a_disk_is_made_labelled_grown_and_never_shrunk() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.disk");
        prepare(&path, 2048, 0).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 1 << 20);
        assert_eq!(label(&path), DiskLabel { windows_end: 2048, swap_start: 2048, swap_sectors: 0 });
        // Data written stays; more windows grow the file, fewer leave it.
        let mut file = std::fs::File::options().write(true).open(&path).unwrap();
        file.seek(SeekFrom::Start(8192)).unwrap();
        file.write_all(b"kept").unwrap();
        prepare(&path, 4096, 0).unwrap();
        prepare(&path, 16, 0).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!((bytes.len(), &bytes[8192..8196]), (2 << 20, &b"kept"[..]));
        assert_eq!(label(&path).windows_end, 4096);
    }

    #[test]
    fn swap_lies_past_every_window_ever_held_and_is_emptied_before_each_run() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.disk");
        prepare(&path, 1000, 1 << 20).unwrap();
        let first = label(&path);
        assert_eq!((first.swap_start, first.swap_sectors), (1000, 2048));
        // A run swaps something out...
        std::os::unix::fs::FileExt::write_all_at(
            &std::fs::File::options().write(true).open(&path).unwrap(),
            b"old page",
            1000 * 512,
        )
        .unwrap();
        // ...and the next has more windows: they grow over the old swap
        // area, which holds zeros again; the new one lies beyond them.
        prepare(&path, 1500, 1 << 20).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert!(bytes[1000 * 512..1008 * 512].iter().all(|&b| b == 0));
        assert_eq!(label(&path).swap_start, 1504);
        // Fewer windows later leave the swap area past the old ones.
        prepare(&path, 100, 4096).unwrap();
        assert_eq!((label(&path).windows_end, label(&path).swap_start, label(&path).swap_sectors), (1500, 1504, 8));
    }

    #[test]
    fn a_bundles_windows_end_after_every_vm_that_asks_for_one() {
        use denali_abi::boot::{BundleSpec, build_bundle};
        let spec = |name, instances, disk_sectors| BundleSpec {
            name,
            instances,
            image: b"img",
            args: "",
            ipv4: denali_abi::net::Ipv4Config::DEFAULT,
            disk_sectors,
        };
        let bundle = build_bundle(&[spec("a", 3, 512), spec("b", 2, 0), spec("c", 1, 8)]);
        assert_eq!(windows_end_of_bundle(&bundle).unwrap(), FIRST_DATA_SECTOR + 3 * 512 + 8);
        assert!(windows_end_of_bundle(b"junk").is_err());
    }

    #[test]
    fn a_file_without_the_label_or_a_device_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notes.txt");
        std::fs::write(&path, b"my notes").unwrap();
        let err = prepare(&path, 2048, 0).unwrap_err().to_string();
        assert!(err.contains("is not a Denali disk"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), b"my notes");
        let err = prepare(Path::new("/dev/null"), 2048, 0).unwrap_err().to_string();
        assert!(err.contains("/dev/null is not a regular file"), "{err}");
    }
}
