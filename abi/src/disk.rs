//! The VMs' disk: one block device of the machine (a virtio-blk disk, a file
//! under our monitor) divided into a window per VM.
//!
//! Sector 0 holds a [`DiskLabel`], written by the toolchain when it makes
//! the disk. The kernel uses a disk only if it carries the label, so a boot
//! disk or any other disk a machine happens to have is never written. The
//! windows follow from [`FIRST_DATA_SECTOR`], one after another in boot
//! order: VM 0 of image 0 first, and each VM's window as large as its
//! image's manifest asks (`[disk] size`, carried in the boot bundle).

/// Bytes in a sector: the unit of `disk_read` and `disk_write`.
pub const SECTOR_SIZE: usize = 512;

/// Most bytes one `disk_read` or `disk_write` moves.
pub const DISK_IO_MAX: usize = 64 << 10;

/// First sector of the first VM's window (4 KiB in, leaving room for the
/// label).
pub const FIRST_DATA_SECTOR: u64 = 8;

/// Magic value at the start of [`DiskLabel`].
pub const DISK_MAGIC: [u8; 8] = *b"DNLDISK1";

/// Sector 0 of a Denali disk.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiskLabel {
    /// [`DISK_MAGIC`].
    pub magic: [u8; 8],
    /// Layout version of the disk (1).
    pub version: u32,
    /// Reserved, zero.
    pub reserved: u32,
}

/// The current [`DiskLabel::version`].
pub const DISK_LAYOUT_VERSION: u32 = 1;

impl DiskLabel {
    /// The label of a disk laid out as this crate says.
    pub const CURRENT: DiskLabel = DiskLabel { magic: DISK_MAGIC, version: DISK_LAYOUT_VERSION, reserved: 0 };

    /// Sector 0 carrying this label.
    pub fn to_sector(&self) -> [u8; SECTOR_SIZE] {
        let mut sector = [0u8; SECTOR_SIZE];
        sector[..8].copy_from_slice(&self.magic);
        sector[8..12].copy_from_slice(&self.version.to_le_bytes());
        sector
    }

    /// Whether `sector` (a disk's sector 0) carries the current label.
    pub fn is_on(sector: &[u8]) -> bool {
        sector.get(..16).is_some_and(|head| head == &DiskLabel::CURRENT.to_sector()[..16])
    }
}

/// Sectors a disk needs for windows of `window_sectors` each, one per VM:
/// the label and every window.
pub fn sectors_needed(window_sectors: impl IntoIterator<Item = u64>) -> Option<u64> {
    window_sectors.into_iter().try_fold(FIRST_DATA_SECTOR, u64::checked_add)
}

/// Where one VM's window is: the disk sectors `[start, start + sectors)`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Window {
    /// First disk sector.
    pub start: u64,
    /// Sectors in it (0: the VM has no disk).
    pub sectors: u64,
}

impl Window {
    /// The disk sector a transfer of `len` bytes at the window's sector
    /// `sector` starts at, if it lies wholly inside the window and is a
    /// whole number of sectors between 1 and [`DISK_IO_MAX`] bytes.
    pub fn locate(&self, sector: u64, len: u64) -> Option<u64> {
        if len == 0 || len > DISK_IO_MAX as u64 || !len.is_multiple_of(SECTOR_SIZE as u64) {
            return None;
        }
        let end = sector.checked_add(len / SECTOR_SIZE as u64)?;
        (end <= self.sectors).then(|| self.start + sector)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transfers_stay_inside_the_window() {
        let window = Window { start: 100, sectors: 16 };
        assert_eq!(window.locate(0, 512), Some(100));
        assert_eq!(window.locate(15, 512), Some(115));
        assert_eq!(window.locate(8, 8 * 512), Some(108));
        // Past the end, straddling it, wrapping, empty, ragged, too long.
        assert_eq!(window.locate(16, 512), None);
        assert_eq!(window.locate(15, 1024), None);
        assert_eq!(window.locate(u64::MAX, 512), None);
        assert_eq!(window.locate(0, 0), None);
        assert_eq!(window.locate(0, 100), None);
        let big = Window { start: 0, sectors: 1 << 20 };
        assert_eq!(big.locate(0, DISK_IO_MAX as u64), Some(0));
        assert_eq!(big.locate(0, DISK_IO_MAX as u64 + 512), None);
        // No disk: nothing is inside.
        assert_eq!(Window::default().locate(0, 512), None);
    }

    #[test]
    fn the_label_is_recognised_and_nothing_else_is() {
        let sector = DiskLabel::CURRENT.to_sector();
        assert!(DiskLabel::is_on(&sector));
        assert!(!DiskLabel::is_on(&[0u8; SECTOR_SIZE]));
        let mut other_version = sector;
        other_version[8] = 2;
        assert!(!DiskLabel::is_on(&other_version));
        assert!(!DiskLabel::is_on(&sector[..10]));
    }

    #[test]
    fn a_disk_holds_the_label_and_every_window() {
        assert_eq!(sectors_needed([]), Some(FIRST_DATA_SECTOR));
        assert_eq!(sectors_needed([16, 0, 32]), Some(FIRST_DATA_SECTOR + 48));
        assert_eq!(sectors_needed([u64::MAX]), None);
    }
}
