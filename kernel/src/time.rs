//! The global clock: nanoseconds since boot, from the TSC. VMs read the same
//! clock themselves through the parameters on their info page.

use denali_abi::info::InfoPage;

/// TSC-to-nanosecond conversion shared with every VM.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    /// TSC frequency in kHz.
    pub tsc_khz: u64,
    /// 32.32 fixed-point ns per tick.
    pub tsc_mult: u64,
    /// TSC at global-clock zero.
    pub tsc_base: u64,
    /// Wall-clock time at global-clock zero, ns since the Unix epoch (0:
    /// unknown).
    pub unix_ns_at_boot: u64,
}

impl Clock {
    /// A clock starting now, at TSC frequency `tsc_khz`.
    pub fn start(tsc_khz: u64, tsc_now: u64) -> Self {
        Clock { tsc_khz, tsc_mult: InfoPage::tsc_mult_for(tsc_khz), tsc_base: tsc_now, unix_ns_at_boot: 0 }
    }

    /// The same clock, noting that global-clock zero was `unix_ns` on the
    /// wall clock.
    pub fn with_wall_clock(self, unix_ns: u64) -> Self {
        Clock { unix_ns_at_boot: unix_ns, ..self }
    }

    /// Nanoseconds since boot at TSC value `tsc`.
    pub fn ns_at(&self, tsc: u64) -> u64 {
        InfoPage::tsc_to_ns(tsc, self.tsc_base, self.tsc_mult)
    }

    /// TSC value at `ns` since boot.
    pub fn tsc_at(&self, ns: u64) -> u64 {
        InfoPage::ns_to_tsc(ns, self.tsc_base, self.tsc_mult)
    }
}
