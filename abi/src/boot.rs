//! What a boot loader (our KVM monitor, or later the UEFI loader) hands the
//! isolation kernel: the [`BootInfo`] structure, the boot bundle of images,
//! and the monitor's I/O ports.

use crate::image::ImageError;

/// Magic value in [`BootInfo::magic`].
pub const BOOT_MAGIC: u64 = u64::from_le_bytes(*b"DNLBOOT1");
/// Most usable-memory regions a [`BootInfo`] describes.
pub const MAX_MEM_REGIONS: usize = 32;

/// A range of usable physical memory.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemRegion {
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
}

/// Handed to the kernel's entry point (physical address in `rdi`).
///
/// Written by the loader; read once by the kernel at boot.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BootInfo {
    /// [`BOOT_MAGIC`].
    pub magic: u64,
    /// [`crate::ABI_VERSION`] the loader was built for.
    pub abi_version: u32,
    /// Number of valid entries in `regions`.
    pub region_count: u32,
    /// Physical address of the boot bundle (see [`Bundle`]).
    pub bundle_addr: u64,
    /// Length of the boot bundle in bytes.
    pub bundle_len: u64,
    /// Time-stamp counter frequency in kHz, 0 if the loader does not know.
    pub tsc_khz: u64,
    /// Usable physical memory not holding the kernel, the bundle, the boot
    /// page tables or this structure.
    pub regions: [MemRegion; MAX_MEM_REGIONS],
    /// `BOOT_FLAG_*` bits.
    pub flags: u64,
    /// Milliseconds after which the kernel stops every VM still running
    /// (0: no limit).
    pub time_limit_ms: u64,
    /// Physical address of a virtio-mmio network device (one 4 KiB
    /// register page), the machine's NIC; 0 if there is none. It raises
    /// [`NIC_VECTOR`] as a message-signalled interrupt.
    pub net_mmio: u64,
    /// Physical address of a virtio-mmio block device (one 4 KiB register
    /// page), the VMs' disk (see [`crate::disk`]); 0 if there is none (on
    /// a PCI machine the kernel then looks for a virtio-blk device there).
    /// The kernel polls it: it raises no interrupt.
    pub blk_mmio: u64,
    /// Wall-clock time when the loader handed over, in ns since the Unix
    /// epoch; 0 if the loader does not know (the kernel then reads the
    /// machine's real-time clock if it has one).
    pub unix_time_ns: u64,
    /// The VM a debugger holds, plus one (0: none): the kernel stops it at
    /// its entry point, reports each stop on
    /// [`ports::DEBUG`](ports::DEBUG), and never swaps it out.
    pub debug_vm: u64,
}

const _: () = assert!(core::mem::size_of::<BootInfo>() == 88 + 16 * MAX_MEM_REGIONS);

/// Size of a virtio-mmio register page ([`BootInfo::net_mmio`],
/// [`BootInfo::blk_mmio`]).
pub const VIRTIO_MMIO_SIZE: u64 = 0x1000;

/// Exit status the kernel reports when it panicked, where the panic port
/// has no listener (bare metal).
pub const KERNEL_PANIC_STATUS: i32 = 125;
/// Exit status of VMs still running when the boot's time limit passes, and
/// of the run (as `timeout(1)` reports).
pub const TIMED_OUT_STATUS: i32 = 124;

/// Interrupt vector of the machine's NIC.
pub const NIC_VECTOR: u8 = 33;

/// Interrupt vector the monitor raises (as an MSI) when the debugger asks
/// to stop the debugged VM while it runs (gdb's Ctrl-C).
pub const DEBUG_REQUEST_VECTOR: u8 = 34;

/// Boot flag: the kernel reports its own progress (boot banner, per-VM
/// exit lines) on the console, not only faults.
pub const BOOT_FLAG_VERBOSE: u64 = 1 << 0;
/// Boot flag: the kernel prints per-VM accounting when the run ends.
pub const BOOT_FLAG_STATS: u64 = 1 << 1;
/// Boot flag: the machine has a PCI bus (bare metal, QEMU, clouds): the
/// kernel looks there for a virtio-net NIC when `net_mmio` names none.
pub const BOOT_FLAG_PCI: u64 = 1 << 2;
/// Boot flag: the monitor takes whole console buffers on
/// [`ports::CONSOLE`]; without it the kernel writes the UART byte by byte.
pub const BOOT_FLAG_CONSOLE_PORT: u64 = 1 << 3;
/// Boot flag: every byte of the usable [`BootInfo::regions`] is zero (our
/// monitor's guest memory is fresh anonymous memory), so the kernel need
/// not zero a frame it has never handed out. Firmware promises nothing of
/// the kind: the UEFI loader and PVH leave it clear.
pub const BOOT_FLAG_ZEROED_MEMORY: u64 = 1 << 4;
/// Boot flag: the monitor shows a long boot's progress (from
/// [`ports::PROGRESS`]); elsewhere the kernel prints it on the console.
pub const BOOT_FLAG_PROGRESS_SHOWN: u64 = 1 << 5;

/// Virtual address at which all physical memory is mapped (the "physmap").
/// The loader sets this mapping up before entering the kernel.
pub const PHYS_OFFSET: u64 = 0xffff_8000_0000_0000;
/// Virtual address of physical address 0 in the kernel image mapping; the
/// kernel is linked at `KERNEL_BASE + its physical load address`.
pub const KERNEL_BASE: u64 = 0xffff_ffff_8000_0000;
/// Physical address at which the kernel image is loaded.
pub const KERNEL_PHYS_LOAD: u64 = 0x20_0000;

/// Bytes of page tables [`boot_page_tables`] builds for `mem_size` bytes of
/// RAM: a PML4, the physmap's PDPT, the kernel's PDPT and a PD per GiB.
pub const fn boot_page_tables_len(mem_size: u64) -> u64 {
    (3 + mem_size.div_ceil(1 << 30)) * 4096
}

/// The page tables every loader hands the kernel (our KVM monitor, the
/// UEFI loader), as `(physical address, 8-byte entry)` writes into zeroed
/// memory at `base` ([`boot_page_tables_len`] bytes): RAM `[0, mem_size)`
/// at [`PHYS_OFFSET`], the low 2 GiB again at [`KERNEL_BASE`], with 2 MiB
/// pages; with `identity`, RAM also at its own address (for a loader that
/// jumps from identity-mapped code). The PML4 is at `base`.
#[cfg(feature = "alloc")]
pub fn boot_page_tables(base: u64, mem_size: u64, identity: bool) -> alloc::vec::Vec<(u64, u64)> {
    const PRESENT_WRITABLE: u64 = 0b11;
    const HUGE: u64 = 1 << 7;
    let (pml4, pdpt_physmap, pdpt_kernel) = (base, base + 0x1000, base + 0x2000);
    let pd = |g: u64| base + (3 + g) * 0x1000;
    let index = |addr: u64, shift: u32| (addr >> shift) & 0x1ff;
    let mut writes = alloc::vec::Vec::new();
    writes.push((pml4 + index(PHYS_OFFSET, 39) * 8, pdpt_physmap | PRESENT_WRITABLE));
    writes.push((pml4 + index(KERNEL_BASE, 39) * 8, pdpt_kernel | PRESENT_WRITABLE));
    if identity {
        // The physmap's PDPT maps GiB g at its slot g, as identity needs.
        const _: () = assert!((PHYS_OFFSET >> 30) & 0x1ff == 0);
        writes.push((pml4, pdpt_physmap | PRESENT_WRITABLE));
    }
    for g in 0..mem_size.div_ceil(1 << 30) {
        writes.push((pdpt_physmap + (index(PHYS_OFFSET, 30) + g) * 8, pd(g) | PRESENT_WRITABLE));
        if g < 2 {
            writes.push((pdpt_kernel + (index(KERNEL_BASE, 30) + g) * 8, pd(g) | PRESENT_WRITABLE));
        }
        for e in 0..512 {
            let phys = (g << 30) + (e << 21);
            if phys < mem_size {
                writes.push((pd(g) + e * 8, phys | PRESENT_WRITABLE | HUGE));
            }
        }
    }
    writes
}

/// I/O ports of the monitor's devices.
pub mod ports {
    /// The 16550 UART (COM1).
    pub const SERIAL: u16 = 0x3f8;
    /// Exit device: a 32-bit write ends the run with that status.
    pub const EXIT: u16 = 0x501;
    /// Panic device: a 32-bit write says the kernel itself panicked.
    pub const PANIC: u16 = 0x502;
    /// Idle device: a 32-bit write says the kernel has nothing to run for
    /// that many microseconds, and the monitor parks the vCPU meanwhile
    /// (where no monitor claims the port, the write does nothing and the
    /// kernel waits by itself).
    pub const IDLE: u16 = 0x503;
    /// Console device: a 32-bit write of the physical address of a
    /// [`ConsoleRequest`](crate::console::ConsoleRequest) draws that
    /// buffer on the console in one exit (only where the loader sets
    /// [`BOOT_FLAG_CONSOLE_PORT`](super::BOOT_FLAG_CONSOLE_PORT)).
    pub const CONSOLE: u16 = 0x504;
    /// Progress device: while the kernel makes the bundle's VMs, a 32-bit
    /// write of how many it has made so far (a few times a second, and
    /// once at the end of a boot long enough to have reported before); the
    /// monitor draws a progress bar. Unclaimed elsewhere.
    pub const PROGRESS: u16 = 0x505;
    /// Progress device, memory: a 32-bit write of the MiB of memory in use,
    /// just before each write to [`PROGRESS`].
    pub const PROGRESS_MEMORY: u16 = 0x506;
    /// Counters device: a 32-bit write, once before the first VM runs, of
    /// the physical address of the kernel's
    /// [`SwapCounters`](crate::counters::SwapCounters), which the monitor
    /// may then read at any time. Unclaimed elsewhere.
    pub const COUNTERS: u16 = 0x507;
    /// Debug device: a 32-bit write of the physical address of a
    /// [`DebugEvent`](crate::debug::DebugEvent) when a VM crashes (before
    /// the kernel frees its memory) or the debugged VM stops; the monitor
    /// reads the event and the VM's pages, and answers a stop, before the
    /// write returns. Unclaimed elsewhere.
    pub const DEBUG: u16 = 0x508;
}

/// The key of the PVH command line (QEMU's `-append`) that sets the run's
/// time limit, in milliseconds: `denali.time_limit_ms=N` ends the run as
/// [`BootInfo::time_limit_ms`] does.
pub const PVH_TIME_LIMIT_KEY: &str = "denali.time_limit_ms=";

/// Magic at the start of a boot bundle.
pub const BUNDLE_MAGIC: [u8; 8] = *b"DNLBNDL1";
/// Longest name of a bundle entry.
pub const BUNDLE_NAME_MAX: usize = 32;

/// Boot-bundle header: `count` [`BundleEntry`]s follow it.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BundleHeader {
    /// [`BUNDLE_MAGIC`].
    pub magic: [u8; 8],
    /// [`crate::ABI_VERSION`].
    pub abi_version: u32,
    /// Number of entries.
    pub count: u32,
    /// `BOOT_FLAG_VERBOSE` and `BOOT_FLAG_STATS` the run asks for, for
    /// loaders that know nothing of the run (the UEFI loader, PVH): the
    /// kernel takes them besides [`BootInfo::flags`]. See
    /// [`set_run_flags`].
    pub run_flags: u64,
}

/// The run flags a bundle may carry (see [`BundleHeader::run_flags`]).
pub const BUNDLE_RUN_FLAGS: u64 = BOOT_FLAG_VERBOSE | BOOT_FLAG_STATS;

/// Sets the run flags of a bundle [`build_bundle`] wrote (only those in
/// [`BUNDLE_RUN_FLAGS`]).
pub fn set_run_flags(bundle: &mut [u8], flags: u64) {
    if let Some(field) = bundle.get_mut(16..24) {
        field.copy_from_slice(&(flags & BUNDLE_RUN_FLAGS).to_le_bytes());
    }
}

/// One image in a boot bundle, and how many VMs to start from it.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BundleEntry {
    /// Offset of the `.dvm` image from the start of the bundle.
    pub offset: u64,
    /// Length of the image.
    pub len: u64,
    /// VMs to start from this image.
    pub instances: u32,
    /// Length of `name`.
    pub name_len: u32,
    /// The image's name (the service's), UTF-8.
    pub name: [u8; BUNDLE_NAME_MAX],
    /// Offset of the VMs' argument string from the start of the bundle.
    pub args_offset: u64,
    /// Length of the argument string (at most `info::ARGS_MAX`).
    pub args_len: u32,
    /// The first VM's IPv4 configuration; VM `i` of this image takes the
    /// `i`-th address after it (see [`crate::net::Ipv4Config::nth`]).
    pub ipv4: crate::net::Ipv4Config,
    /// Sectors of disk each VM of this image gets (0: none); see
    /// [`crate::disk`].
    pub disk_sectors: u64,
}

const _: () = assert!(core::mem::size_of::<BundleHeader>() == 24);
const _: () = assert!(core::mem::size_of::<BundleEntry>() == 88);

/// Most images in one bundle.
pub const BUNDLE_MAX_ENTRIES: u32 = 4096;

/// A validated view of a boot bundle.
#[derive(Clone, Copy, Debug)]
pub struct Bundle<'a> {
    bytes: &'a [u8],
    count: u32,
    run_flags: u64,
}

/// Why a boot bundle was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BundleError {
    /// Shorter than its header or entry table.
    Truncated,
    /// The magic is wrong: not a bundle.
    BadMagic,
    /// Built for another ABI version.
    WrongVersion(u32),
    /// More entries than [`BUNDLE_MAX_ENTRIES`], or none.
    BadCount(u32),
    /// An entry points outside the bundle or has a bad name.
    BadEntry(u32),
    /// An image in the bundle is invalid.
    Image(u32, ImageError),
}

impl core::fmt::Display for BundleError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            BundleError::Truncated => write!(f, "boot bundle is truncated"),
            BundleError::BadMagic => write!(f, "not a Denali boot bundle (bad magic)"),
            BundleError::WrongVersion(v) => write!(f, "boot bundle is for ABI version {v}"),
            BundleError::BadCount(n) => write!(f, "boot bundle has {n} entries"),
            BundleError::BadEntry(i) => write!(f, "boot bundle entry {i} is out of range"),
            BundleError::Image(i, e) => write!(f, "image {i} in the boot bundle: {e}"),
        }
    }
}

pub(crate) fn read<T: Copy>(bytes: &[u8], offset: usize) -> Option<T> {
    let end = offset.checked_add(core::mem::size_of::<T>())?;
    let src = bytes.get(offset..end)?;
    // SAFETY: `src` is exactly size_of::<T>() readable bytes, read_unaligned
    // has no alignment requirement, and T is only instantiated with the
    // plain-old-data `#[repr(C)]` structs of this crate, valid for any bits.
    Some(unsafe { core::ptr::read_unaligned(src.as_ptr().cast::<T>()) })
}
pub(crate) use read as read_pod;

impl<'a> Bundle<'a> {
    /// Checks the header and every entry's bounds; images are validated by
    /// [`Bundle::entry`] callers with [`crate::image::Image::parse`].
    pub fn parse(bytes: &'a [u8]) -> Result<Self, BundleError> {
        let header: BundleHeader = read(bytes, 0).ok_or(BundleError::Truncated)?;
        if header.magic != BUNDLE_MAGIC {
            return Err(BundleError::BadMagic);
        }
        if header.abi_version != crate::ABI_VERSION {
            return Err(BundleError::WrongVersion(header.abi_version));
        }
        if header.count == 0 || header.count > BUNDLE_MAX_ENTRIES {
            return Err(BundleError::BadCount(header.count));
        }
        let bundle = Bundle { bytes, count: header.count, run_flags: header.run_flags & BUNDLE_RUN_FLAGS };
        for i in 0..header.count {
            let entry = bundle.raw_entry(i).ok_or(BundleError::Truncated)?;
            let in_range = |offset: u64, len: u64| offset.checked_add(len).is_some_and(|end| end <= bytes.len() as u64);
            if !in_range(entry.offset, entry.len)
                || !in_range(entry.args_offset, u64::from(entry.args_len))
                || entry.args_len as usize > crate::info::ARGS_MAX
                || entry.name_len as usize > BUNDLE_NAME_MAX
                || entry.instances == 0
            {
                return Err(BundleError::BadEntry(i));
            }
        }
        Ok(bundle)
    }

    fn raw_entry(&self, index: u32) -> Option<BundleEntry> {
        let offset = core::mem::size_of::<BundleHeader>() + index as usize * core::mem::size_of::<BundleEntry>();
        read(self.bytes, offset)
    }

    /// Number of entries.
    pub fn len(&self) -> u32 {
        self.count
    }

    /// The run flags it carries (within [`BUNDLE_RUN_FLAGS`]).
    pub fn run_flags(&self) -> u64 {
        self.run_flags
    }

    /// Whether there are no entries (never true for a parsed bundle).
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Entry `index`: its metadata and its image bytes.
    pub fn entry(&self, index: u32) -> Option<(BundleEntry, &'a [u8])> {
        if index >= self.count {
            return None;
        }
        let entry = self.raw_entry(index)?;
        let bytes = self.bytes.get(entry.offset as usize..(entry.offset + entry.len) as usize)?;
        Some((entry, bytes))
    }

    /// The argument string of entry `index`.
    pub fn args(&self, index: u32) -> Option<&'a [u8]> {
        let entry = self.raw_entry(index).filter(|_| index < self.count)?;
        let start = entry.args_offset as usize;
        self.bytes.get(start..start + entry.args_len as usize)
    }
}

impl BundleEntry {
    /// The entry's name, or `"?"` if it is not UTF-8.
    pub fn name(&self) -> &str {
        let len = (self.name_len as usize).min(BUNDLE_NAME_MAX);
        core::str::from_utf8(&self.name[..len]).unwrap_or("?")
    }
}

/// One image to put in a boot bundle.
#[derive(Clone, Copy, Debug)]
pub struct BundleSpec<'a> {
    /// The service's name (cut to [`BUNDLE_NAME_MAX`] bytes).
    pub name: &'a str,
    /// VMs to start from the image.
    pub instances: u32,
    /// The `.dvm` image.
    pub image: &'a [u8],
    /// Arguments every VM of this image finds on its info page (cut to
    /// `info::ARGS_MAX` bytes).
    pub args: &'a str,
    /// The first VM's IPv4 configuration.
    pub ipv4: crate::net::Ipv4Config,
    /// Sectors of disk each VM gets (0: none).
    pub disk_sectors: u64,
}

/// Writes a boot bundle.
#[cfg(feature = "alloc")]
pub fn build_bundle(entries: &[BundleSpec<'_>]) -> alloc::vec::Vec<u8> {
    use alloc::vec::Vec;
    fn cut(s: &str, max: usize) -> &[u8] {
        &s.as_bytes()[..s.len().min(max)]
    }
    let table_len = core::mem::size_of::<BundleHeader>() + entries.len() * core::mem::size_of::<BundleEntry>();
    let mut out = Vec::new();
    out.extend_from_slice(&BUNDLE_MAGIC);
    out.extend_from_slice(&crate::ABI_VERSION.to_le_bytes());
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    out.extend_from_slice(&0u64.to_le_bytes());
    let mut offset = table_len as u64;
    for spec in entries {
        let name = cut(spec.name, BUNDLE_NAME_MAX);
        let args = cut(spec.args, crate::info::ARGS_MAX);
        let mut name_buf = [0u8; BUNDLE_NAME_MAX];
        name_buf[..name.len()].copy_from_slice(name);
        out.extend_from_slice(&offset.to_le_bytes());
        out.extend_from_slice(&(spec.image.len() as u64).to_le_bytes());
        out.extend_from_slice(&spec.instances.to_le_bytes());
        out.extend_from_slice(&(name.len() as u32).to_le_bytes());
        out.extend_from_slice(&name_buf);
        out.extend_from_slice(&(offset + spec.image.len() as u64).to_le_bytes());
        out.extend_from_slice(&(args.len() as u32).to_le_bytes());
        let net = &spec.ipv4;
        out.extend_from_slice(&net.address);
        out.extend_from_slice(&net.gateway);
        out.extend_from_slice(&[net.prefix_len, 0, 0, 0]);
        out.extend_from_slice(&spec.disk_sectors.to_le_bytes());
        offset += (spec.image.len() + args.len()) as u64;
    }
    for spec in entries {
        out.extend_from_slice(spec.image);
        out.extend_from_slice(cut(spec.args, crate::info::ARGS_MAX));
    }
    out
}

#[cfg(all(test, feature = "alloc"))]
mod tests {
    use super::*;

    fn spec<'a>(name: &'a str, instances: u32, image: &'a [u8], args: &'a str) -> BundleSpec<'a> {
        BundleSpec { name, instances, image, args, ipv4: crate::net::Ipv4Config::DEFAULT, disk_sectors: 0 }
    }

    #[test]
    fn kernel_and_physmap_share_the_low_page_directories() {
        let base = 0x1_0000;
        let writes = boot_page_tables(base, 1 << 30, false);
        assert!(writes.contains(&(base + 256 * 8, (base + 0x1000) | 3)));
        assert!(writes.contains(&(base + 511 * 8, (base + 0x2000) | 3)));
        assert!(writes.contains(&(base + 0x2000 + 510 * 8, (base + 0x3000) | 3)));
        // 512 PD entries for one GiB, plus the four upper-level entries.
        assert_eq!(writes.len(), 512 + 4);
        // The identity map reuses the physmap's PDPT.
        let identity = boot_page_tables(base, 1 << 30, true);
        assert!(identity.contains(&(base, (base + 0x1000) | 3)));
        assert!(identity.iter().all(|&(addr, _)| addr < base + boot_page_tables_len(1 << 30)));
    }

    #[test]
    fn bundle_round_trips() {
        let bytes = build_bundle(&[spec("one", 1, b"abc", ""), spec("two", 3, b"defg", "--port 80")]);
        let bundle = Bundle::parse(&bytes).unwrap();
        assert_eq!(bundle.len(), 2);
        let (e, img) = bundle.entry(1).unwrap();
        assert_eq!((e.name(), e.instances, img), ("two", 3, &b"defg"[..]));
        assert_eq!(bundle.args(1), Some(&b"--port 80"[..]));
        assert_eq!(bundle.args(0), Some(&b""[..]));
        assert_eq!((e.disk_sectors, bundle.run_flags()), (0, 0));
        let mut flagged = bytes.clone();
        set_run_flags(&mut flagged, BOOT_FLAG_STATS | BOOT_FLAG_PCI);
        assert_eq!(Bundle::parse(&flagged).unwrap().run_flags(), BOOT_FLAG_STATS);
        let with_disk = build_bundle(&[BundleSpec { disk_sectors: 2048, ..spec("d", 2, b"img", "") }]);
        assert_eq!(Bundle::parse(&with_disk).unwrap().entry(0).unwrap().0.disk_sectors, 2048);
    }

    #[test]
    fn truncated_and_foreign_bundles_are_refused() {
        let bytes = build_bundle(&[spec("one", 1, b"abc", "x")]);
        assert_eq!(Bundle::parse(&bytes[..10]).unwrap_err(), BundleError::Truncated);
        assert_eq!(Bundle::parse(&bytes[..bytes.len() - 1]).unwrap_err(), BundleError::BadEntry(0));
        let mut foreign = bytes.clone();
        foreign[0] = b'X';
        assert_eq!(Bundle::parse(&foreign).unwrap_err(), BundleError::BadMagic);
    }
}

impl core::error::Error for BundleError {}
