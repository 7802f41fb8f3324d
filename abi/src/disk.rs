//! The VMs' disk: one block device of the machine (a virtio-blk disk, a file
//! under our monitor) divided into a window per VM.
//!
//! Sector 0 holds a [`DiskLabel`], written by the toolchain when it makes
//! the disk. The kernel uses a disk only if it carries the label, so a boot
//! disk or any other disk a machine happens to have is never written. The
//! windows follow from [`FIRST_DATA_SECTOR`], one after another in boot
//! order: VM 0 of image 0 first, and each VM's window as large as its
//! image's manifest asks (`[disk] size`, carried in the boot bundle). The
//! swap area, if the label names one, lies beyond every window.

/// Bytes in a sector: the unit of `disk_read` and `disk_write`.
pub const SECTOR_SIZE: usize = 512;

/// Most bytes one `disk_read` or `disk_write` moves.
pub const DISK_IO_MAX: usize = 64 << 10;

/// First sector of the first VM's window (4 KiB in, leaving room for the
/// label).
pub const FIRST_DATA_SECTOR: u64 = 8;

/// Magic value at the start of [`DiskLabel`].
pub const DISK_MAGIC: [u8; 8] = *b"DNLDISK1";

/// Sector 0 of a Denali disk: the magic, and where the swap area is.
///
/// Written by the toolchain before each boot; the kernel only reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiskLabel {
    /// One past the last sector any VM's window has reached on this disk:
    /// the swap area never starts before it, so it never overwrites a
    /// window a later boot may use again.
    pub windows_end: u64,
    /// First sector of the swap area.
    pub swap_start: u64,
    /// Sectors in the swap area (0: none). Its contents are scratch: only
    /// what a boot wrote there itself is ever read back.
    pub swap_sectors: u64,
}

/// The current layout version, after [`DISK_MAGIC`].
pub const DISK_LAYOUT_VERSION: u32 = 1;

impl DiskLabel {
    /// A label for a disk with no window used yet and no swap area.
    pub const EMPTY: DiskLabel = DiskLabel { windows_end: FIRST_DATA_SECTOR, swap_start: 0, swap_sectors: 0 };

    /// Sector 0 carrying this label: magic, version, a reserved word, then
    /// the three fields, little-endian.
    pub fn to_sector(&self) -> [u8; SECTOR_SIZE] {
        let mut sector = [0u8; SECTOR_SIZE];
        sector[..8].copy_from_slice(&DISK_MAGIC);
        sector[8..12].copy_from_slice(&DISK_LAYOUT_VERSION.to_le_bytes());
        for (i, value) in [self.windows_end, self.swap_start, self.swap_sectors].into_iter().enumerate() {
            sector[16 + 8 * i..24 + 8 * i].copy_from_slice(&value.to_le_bytes());
        }
        sector
    }

    /// The label on `sector` (a disk's sector 0), if it carries one of
    /// this layout version.
    pub fn parse(sector: &[u8]) -> Option<DiskLabel> {
        let head = sector.get(..40)?;
        if head[..8] != DISK_MAGIC || head[8..12] != DISK_LAYOUT_VERSION.to_le_bytes() {
            return None;
        }
        let word = |i: usize| u64::from_le_bytes(head[16 + 8 * i..24 + 8 * i].try_into().expect("8 bytes"));
        Some(DiskLabel { windows_end: word(0), swap_start: word(1), swap_sectors: word(2) })
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
    fn the_label_round_trips_and_nothing_else_is_one() {
        let label = DiskLabel { windows_end: 520, swap_start: 528, swap_sectors: 1 << 17 };
        let sector = label.to_sector();
        assert_eq!(DiskLabel::parse(&sector), Some(label));
        assert_eq!(DiskLabel::parse(&[0u8; SECTOR_SIZE]), None);
        let mut other_version = sector;
        other_version[8] = 2;
        assert_eq!(DiskLabel::parse(&other_version), None);
        assert_eq!(DiskLabel::parse(&sector[..39]), None);
    }

    #[test]
    fn a_disk_holds_the_label_and_every_window() {
        assert_eq!(sectors_needed([]), Some(FIRST_DATA_SECTOR));
        assert_eq!(sectors_needed([16, 0, 32]), Some(FIRST_DATA_SECTOR + 48));
        assert_eq!(sectors_needed([u64::MAX]), None);
    }
}
