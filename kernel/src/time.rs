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

/// A UTC date and time of day, as a real-time clock reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CalendarTime {
    year: u32,
    month: u8,
    day: u8,
    hour: u8,
    minute: u8,
    second: u8,
}

impl CalendarTime {
    /// A date and time from 1970 on, or `None` if a field is out of range.
    pub fn new(year: u32, month: u8, day: u8, hour: u8, minute: u8, second: u8) -> Option<Self> {
        let valid = (1970..=9999).contains(&year)
            && (1..=12).contains(&month)
            && (1..=31).contains(&day)
            && hour < 24
            && minute < 60
            && second < 60;
        valid.then_some(CalendarTime { year, month, day, hour, minute, second })
    }

    /// Nanoseconds since the Unix epoch.
    pub fn unix_ns(&self) -> u64 {
        // Days from 1970-01-01 to the date, counting years from March so
        // the leap day ends a year (the civil-calendar algorithm).
        let (month, day) = (u64::from(self.month), u64::from(self.day));
        let year = u64::from(self.year) - u64::from(month <= 2);
        let era = year / 400;
        let year_of_era = year % 400;
        let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
        let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
        let days = era * 146_097 + day_of_era - 719_468;
        let seconds =
            days * 86_400 + u64::from(self.hour) * 3600 + u64::from(self.minute) * 60 + u64::from(self.second);
        seconds * 1_000_000_000
    }
}

#[cfg(test)]
mod tests {
    use super::CalendarTime;

    #[test]
    fn calendar_times_become_unix_time() {
        let at = |y, mo, d, h, mi, s| CalendarTime::new(y, mo, d, h, mi, s).unwrap().unix_ns() / 1_000_000_000;
        assert_eq!(at(1970, 1, 1, 0, 0, 0), 0);
        assert_eq!(at(2000, 3, 1, 0, 0, 0), 951_868_800);
        assert_eq!(at(2024, 2, 29, 12, 30, 15), 1_709_209_815);
        assert_eq!(at(2026, 12, 2, 13, 29, 18), 1_796_218_158);
    }

    #[test]
    fn nonsense_from_the_clock_is_refused() {
        assert_eq!(CalendarTime::new(2026, 13, 1, 0, 0, 0), None);
        assert_eq!(CalendarTime::new(2026, 1, 1, 24, 0, 0), None);
        assert_eq!(CalendarTime::new(1969, 12, 31, 0, 0, 0), None);
    }
}
