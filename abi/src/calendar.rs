//! UTC calendar dates and times, and their conversion to and from Unix
//! time: the kernel reads a real-time clock in these terms, and the libOS
//! stamps files with them (FAT keeps local calendar fields, not seconds).

/// A UTC date and time of day, whole seconds, from 1970 to 9999.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CalendarTime {
    /// Year, e.g. 2026.
    pub year: u32,
    /// Month, 1-12.
    pub month: u8,
    /// Day of the month, 1-31.
    pub day: u8,
    /// Hour, 0-23.
    pub hour: u8,
    /// Minute, 0-59.
    pub minute: u8,
    /// Second, 0-59.
    pub second: u8,
}

/// Days in a 400-year era of the Gregorian calendar.
const DAYS_PER_ERA: u64 = 146_097;
/// Days from 0000-03-01 to 1970-01-01 in the proleptic calendar.
const EPOCH_DAYS: u64 = 719_468;
/// Seconds in a day.
const DAY: u64 = 86_400;

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

    /// The date and time `seconds` after the Unix epoch (clamped to the
    /// last second of 9999).
    pub fn from_unix_seconds(seconds: u64) -> Self {
        // The civil-calendar algorithm run backwards: years counted from
        // March, so the leap day ends a year.
        let seconds = seconds.min(253_402_300_799);
        let (days, in_day) = (seconds / DAY + EPOCH_DAYS, seconds % DAY);
        let era = days / DAYS_PER_ERA;
        let day_of_era = days % DAYS_PER_ERA;
        let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
        let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
        let month_from_march = (5 * day_of_year + 2) / 153;
        let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
        let month = if month_from_march < 10 { month_from_march + 3 } else { month_from_march - 9 };
        let year = era * 400 + year_of_era + u64::from(month <= 2);
        CalendarTime {
            year: year as u32,
            month: month as u8,
            day: day as u8,
            hour: (in_day / 3600) as u8,
            minute: (in_day / 60 % 60) as u8,
            second: (in_day % 60) as u8,
        }
    }

    /// Seconds since the Unix epoch (0 for a time before it, which only a
    /// value built field by field, not by [`CalendarTime::new`], can be).
    pub fn unix_seconds(&self) -> u64 {
        let (month, day) = (u64::from(self.month), u64::from(self.day));
        let year = u64::from(self.year) - u64::from(month <= 2);
        let era = year / 400;
        let year_of_era = year % 400;
        let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
        let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
        let days = (era * DAYS_PER_ERA + day_of_era).saturating_sub(EPOCH_DAYS);
        days * DAY + u64::from(self.hour) * 3600 + u64::from(self.minute) * 60 + u64::from(self.second)
    }

    /// Nanoseconds since the Unix epoch, up to `u64::MAX` (in 2554).
    pub fn unix_ns(&self) -> u64 {
        self.unix_seconds().saturating_mul(1_000_000_000)
    }
}

#[cfg(test)]
mod tests {
    use super::CalendarTime;

    #[test]
    fn calendar_times_become_unix_time() {
        let at = |y, mo, d, h, mi, s| CalendarTime::new(y, mo, d, h, mi, s).unwrap().unix_seconds();
        assert_eq!(at(1970, 1, 1, 0, 0, 0), 0);
        assert_eq!(at(2000, 3, 1, 0, 0, 0), 951_868_800);
        assert_eq!(at(2024, 2, 29, 12, 30, 15), 1_709_209_815);
        assert_eq!(at(2026, 12, 2, 13, 29, 18), 1_796_218_158);
        assert_eq!(CalendarTime::new(2026, 12, 2, 13, 29, 18).unwrap().unix_ns(), 1_796_218_158_000_000_000);
        assert_eq!(CalendarTime::new(9999, 12, 31, 23, 59, 59).unwrap().unix_ns(), u64::MAX);
        let before_the_epoch = CalendarTime { year: 1969, ..CalendarTime::new(1970, 1, 1, 0, 0, 0).unwrap() };
        assert_eq!(before_the_epoch.unix_seconds(), 0);
    }

    #[test]
    fn unix_time_becomes_the_same_calendar_time() {
        let expected = CalendarTime::new(2024, 2, 29, 12, 30, 15).unwrap();
        assert_eq!(CalendarTime::from_unix_seconds(1_709_209_815), expected);
        assert_eq!(CalendarTime::from_unix_seconds(0), CalendarTime::new(1970, 1, 1, 0, 0, 0).unwrap());
        // Every day boundary for 500 years round-trips, leap days included.
        for day in 0..(500 * 366) {
            let seconds = day * 86_400 + 86_399;
            assert_eq!(CalendarTime::from_unix_seconds(seconds).unix_seconds(), seconds, "day {day}");
        }
        assert_eq!(CalendarTime::from_unix_seconds(u64::MAX).year, 9999);
    }

    #[test]
    fn nonsense_from_the_clock_is_refused() {
        assert_eq!(CalendarTime::new(2026, 13, 1, 0, 0, 0), None);
        assert_eq!(CalendarTime::new(2026, 1, 1, 24, 0, 0), None);
        assert_eq!(CalendarTime::new(1969, 12, 31, 0, 0, 0), None);
    }
}
