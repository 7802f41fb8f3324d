//! The info page: the one read-only page through which the kernel tells a VM
//! who it is, where its memory is, and what time it is.
//!
//! Written by the kernel (before the VM first runs, and `pending_events` at
//! any time the VM is not running); read by the guest library OS. The guest
//! cannot write it: it is mapped read-only at [`crate::layout::INFO_PAGE`].

/// Magic value in [`InfoPage::magic`].
pub const INFO_MAGIC: u64 = u64::from_le_bytes(*b"DNLINFO1");
/// Longest command line (see [`CommandLine`]) a VM's info page holds.
pub const ARGS_MAX: usize = 1024;

/// [`InfoPage::features`] bit: the kernel switches the FS and GS base
/// registers with the rest of a VM's state, so `wrfsbase`/`wrgsbase` work
/// in ring 3 and their values are the VM's own (thread-local storage).
pub const FEATURE_FS_GS_BASE: u32 = 1 << 0;
/// [`InfoPage::features`] bit: the kernel keeps [`InfoPage::rx_frames`]
/// equal to the number of frames in the VM's receive ring, so a VM can see
/// its ring is empty without a `net_recv` hypercall.
pub const FEATURE_RX_COUNT: u32 = 1 << 1;

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
    /// `FEATURE_*` bits: what the kernel does for this VM beyond the
    /// baseline architecture.
    pub features: u32,
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
    /// Frames waiting in the VM's receive ring (kept up to date by a kernel
    /// that sets [`FEATURE_RX_COUNT`]; zero otherwise).
    pub rx_frames: u32,
    /// The VM's Ethernet address (see [`crate::net::mac_of`]); 2 bytes pad.
    pub mac: [u8; 8],
    /// The VM's IPv4 configuration (address, gateway, prefix).
    pub ipv4: crate::net::Ipv4Config,
    /// Reserved, zero.
    pub reserved3: u32,
    /// Sectors in the VM's disk window (0: no disk); see [`crate::disk`].
    pub disk_sectors: u64,
    /// The VM's command line (see [`CommandLine`]), UTF-8.
    pub args: [u8; ARGS_MAX],
    /// Where the kernel's state-restore code (see
    /// [`crate::layout::STATE_SWITCH_PAGE`]) continues the VM: its `rip`,
    /// `rax` and `rdx`, which that code needs for itself.
    pub resume: ResumePoint,
    /// Wall-clock time at global-clock zero, in ns since the Unix epoch
    /// (0: the machine did not say; wall-clock time then counts from 1970).
    pub unix_ns_at_boot: u64,
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

const _: () = assert!(core::mem::size_of::<InfoPage>() == 128 + ARGS_MAX + 24 + 8);
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

/// The command line on a VM's info page: the manifest's `args` string,
/// then, for a service that wants them, a NUL, its program name, and a NUL
/// before each `KEY=VALUE` of its environment:
/// `args [\0 program (\0 KEY=VALUE)*]`. The kernel copies it unread; the
/// CLI writes it ([`CommandLine::encode`]) and the libOS reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommandLine<'a> {
    /// The manifest's `args`, as one string.
    pub args: &'a [u8],
    /// The program's name (`argv[0]`), empty if none was given.
    pub program: &'a [u8],
    /// The environment: NUL-separated `KEY=VALUE` entries.
    env: &'a [u8],
}

impl<'a> CommandLine<'a> {
    /// Splits a command line as the info page holds it.
    pub fn parse(bytes: &'a [u8]) -> Self {
        let mut parts = bytes.splitn(3, |&b| b == 0);
        let args = parts.next().unwrap_or_default();
        let program = parts.next().unwrap_or_default();
        let env = parts.next().unwrap_or_default();
        CommandLine { args, program, env }
    }

    /// The environment's `KEY=VALUE` entries, in order.
    pub fn env(&self) -> impl Iterator<Item = &'a [u8]> {
        self.env.split(|&b| b == 0).filter(|entry| !entry.is_empty())
    }

    /// Writes `args`, `program` and `env` into `out`; `None` if a part
    /// holds a NUL or the whole would not fit in [`ARGS_MAX`] bytes.
    pub fn encode<'e>(
        args: &str,
        program: &str,
        env: impl IntoIterator<Item = (&'e str, &'e str)>,
        out: &mut [u8; ARGS_MAX],
    ) -> Option<usize> {
        let mut len = 0;
        let mut put = |bytes: &[u8]| -> Option<()> {
            let end = len + bytes.len();
            out.get_mut(len..end)?.copy_from_slice(bytes);
            len = end;
            Some(())
        };
        let clean = |s: &str| (!s.as_bytes().contains(&0)).then_some(());
        clean(args)?;
        clean(program)?;
        put(args.as_bytes())?;
        put(b"\0")?;
        put(program.as_bytes())?;
        for (key, value) in env {
            clean(key)?;
            clean(value)?;
            if key.is_empty() || key.contains('=') {
                return None;
            }
            put(b"\0")?;
            put(key.as_bytes())?;
            put(b"=")?;
            put(value.as_bytes())?;
        }
        Some(len)
    }
}

#[cfg(test)]
mod command_line_tests {
    use super::*;

    #[test]
    fn a_command_line_round_trips() {
        let mut out = [0u8; ARGS_MAX];
        let len = CommandLine::encode("--port 80", "web", [("RUST_LOG", "info"), ("A", "b=c")], &mut out).unwrap();
        let line = CommandLine::parse(&out[..len]);
        assert_eq!(line.args, b"--port 80");
        assert_eq!(line.program, b"web");
        assert_eq!(line.env().collect::<alloc::vec::Vec<_>>(), [&b"RUST_LOG=info"[..], b"A=b=c"]);
    }

    #[test]
    fn a_plain_args_string_is_a_command_line_without_program_or_env() {
        let line = CommandLine::parse(b"--fast");
        assert_eq!((line.args, line.program, line.env().count()), (&b"--fast"[..], &b""[..], 0));
    }

    #[test]
    fn what_cannot_be_encoded_is_refused() {
        let mut out = [0u8; ARGS_MAX];
        assert_eq!(CommandLine::encode("a\0b", "p", [], &mut out), None);
        assert_eq!(CommandLine::encode("", "p", [("K=", "v")], &mut out), None);
        assert_eq!(CommandLine::encode("", "p", [("", "v")], &mut out), None);
        let long = "x".repeat(ARGS_MAX);
        assert_eq!(CommandLine::encode(&long, "p", [], &mut out), None);
    }
}
