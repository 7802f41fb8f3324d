//! The info page: the one read-only page through which the kernel tells a VM
//! who it is, where its memory is, and what time it is.
//!
//! Written by the kernel (before the VM first runs, and `pending_events` at
//! any time the VM is not running); read by the guest library OS. The guest
//! cannot write it: it is mapped read-only at [`crate::layout::INFO_PAGE`].

/// Magic value in [`InfoPage::magic`].
pub const INFO_MAGIC: u64 = u64::from_le_bytes(*b"DNLINFO1");
/// Longest argument string the manifest can hand a VM.
pub const ARGS_MAX: usize = 1024;

/// The info page, at [`crate::layout::INFO_PAGE`] in every VM.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct InfoPage {
    /// [`INFO_MAGIC`].
    pub magic: u64,
    /// [`crate::ABI_VERSION`] of the kernel that booted this VM.
    pub abi_version: u32,
    /// This VM's id, unique within one boot, counted from 0.
    pub vm_id: u32,
    /// How many VMs this boot started.
    pub vm_count: u32,
    /// Reserved, zero.
    pub reserved: u32,
    /// Size of the flat address space: addresses `[0, mem_size)`.
    pub mem_size: u64,
    /// First heap byte (page aligned, just past the image).
    pub heap_start: u64,
    /// One past the last heap byte (the stack guard page starts here).
    pub heap_end: u64,
    /// Initial stack pointer (one past the top of the stack).
    pub stack_top: u64,
    /// Time-stamp counter frequency in kHz.
    pub tsc_khz: u64,
    /// Global clock in ns = `((rdtsc - tsc_base) * tsc_mult) >> 32`.
    pub tsc_mult: u64,
    /// TSC value at global-clock zero (the kernel's boot).
    pub tsc_base: u64,
    /// Pending event bits (`EVENT_*` in [`crate::hypercall`]); set by the
    /// kernel, cleared by the `idle` hypercall that returns them.
    pub pending_events: u64,
    /// Length of `args` in bytes.
    pub args_len: u32,
    /// Reserved, zero.
    pub reserved2: u32,
    /// The VM's Ethernet address (see [`crate::net::mac_of`]); 2 bytes pad.
    pub mac: [u8; 8],
    /// The VM's IPv4 configuration (address, gateway, prefix).
    pub ipv4: crate::net::Ipv4Config,
    /// Reserved, zero.
    pub reserved3: u32,
    /// Sectors in the VM's disk window (0: no disk); see [`crate::disk`].
    pub disk_sectors: u64,
    /// The VM's arguments from the manifest, UTF-8.
    pub args: [u8; ARGS_MAX],
    /// Where the kernel's state-restore code (see
    /// [`crate::layout::STATE_SWITCH_PAGE`]) continues the VM: its `rip`,
    /// `rax` and `rdx`, which that code needs for itself.
    pub resume: ResumePoint,
}

/// The registers the state-restore code hands back last.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ResumePoint {
    /// Where the VM continues.
    pub rip: u64,
    /// Its `rax`.
    pub rax: u64,
    /// Its `rdx`.
    pub rdx: u64,
}

const _: () = assert!(core::mem::size_of::<InfoPage>() == 128 + ARGS_MAX + 24);
const _: () = assert!(core::mem::size_of::<InfoPage>() <= crate::layout::PAGE_SIZE as usize);
const _: () = assert!(core::mem::size_of::<InfoPage>() <= crate::layout::PAGE_SIZE as usize);
const _: () = assert!(core::mem::offset_of!(InfoPage, pending_events) == 80);

impl InfoPage {
    /// Multiplier for [`InfoPage::tsc_mult`] from a TSC frequency in kHz.
    pub const fn tsc_mult_for(tsc_khz: u64) -> u64 {
        if tsc_khz == 0 {
            return 0;
        }
        // ns per tick = 1e6 / kHz, as a 32.32 fixed-point number.
        (1_000_000u64 << 32) / tsc_khz
    }

    /// Converts a TSC reading to global-clock nanoseconds.
    pub const fn tsc_to_ns(tsc: u64, tsc_base: u64, tsc_mult: u64) -> u64 {
        let ticks = tsc.saturating_sub(tsc_base) as u128;
        ((ticks * tsc_mult as u128) >> 32) as u64
    }

    /// Converts a global-clock time in ns back to a TSC value.
    pub const fn ns_to_tsc(ns: u64, tsc_base: u64, tsc_mult: u64) -> u64 {
        if tsc_mult == 0 {
            return u64::MAX;
        }
        let ticks = ((ns as u128) << 32) / tsc_mult as u128;
        tsc_base.saturating_add(if ticks > u64::MAX as u128 { u64::MAX } else { ticks as u64 })
    }
}

#[cfg(test)]
mod tests {
    use super::InfoPage;

    #[test]
    fn clock_conversion_is_accurate_to_a_nanosecond_per_second() {
        let khz = 2_345_678;
        let mult = InfoPage::tsc_mult_for(khz);
        // One second of ticks.
        let ns = InfoPage::tsc_to_ns(1000 + khz * 1000, 1000, mult);
        assert!((ns as i64 - 1_000_000_000).abs() <= 1, "{ns}");
        let tsc = InfoPage::ns_to_tsc(ns, 1000, mult);
        assert!((tsc as i64 - (1000 + khz * 1000) as i64).abs() <= 3);
    }
}
