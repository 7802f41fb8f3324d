//! The CMOS real-time clock (ports 0x70/0x71), read once at boot on PC
//! machines whose loader did not say what time it is (PVH, UEFI).

use denali_abi::calendar::CalendarTime;
use x86_64::instructions::port::Port;

const INDEX: u16 = 0x70;
const DATA: u16 = 0x71;
const STATUS_A_UPDATING: u8 = 1 << 7;
const STATUS_B_BINARY: u8 = 1 << 2;
const STATUS_B_24_HOUR: u8 = 1 << 1;
const HOUR_PM: u8 = 1 << 7;

fn read(register: u8) -> u8 {
    // SAFETY: selecting a CMOS register (NMI stays enabled: bit 7 clear)
    // and reading it touches only the RTC.
    unsafe {
        Port::<u8>::new(INDEX).write(register & 0x7f);
        Port::<u8>::new(DATA).read()
    }
}

/// Reads of the status register before giving up on an update that never
/// ends (an update takes under 2 ms; a port with no RTC behind it reads
/// 0xff, "updating", for ever).
const UPDATE_POLLS: u32 = 100_000;

/// The clock's registers, read between updates; `None` if it never stops
/// updating.
fn snapshot() -> Option<[u8; 7]> {
    let mut polls = 0;
    while read(0x0a) & STATUS_A_UPDATING != 0 {
        polls += 1;
        if polls == UPDATE_POLLS {
            return None;
        }
        core::hint::spin_loop();
    }
    Some([0x00, 0x02, 0x04, 0x07, 0x08, 0x09, 0x32].map(read))
}

/// The time the RTC shows (taken as UTC, as QEMU and most servers keep it),
/// or `None` if there is none or it reads as nonsense.
pub fn now() -> Option<CalendarTime> {
    // Read until two snapshots agree, so an update between registers
    // cannot tear the reading.
    let mut raw = snapshot()?;
    for _ in 0..4 {
        let again = snapshot()?;
        if again == raw {
            break;
        }
        raw = again;
    }
    let status_b = read(0x0b);
    let decode = |v: u8| if status_b & STATUS_B_BINARY != 0 { v } else { (v & 0x0f) + (v >> 4) * 10 };
    let [second, minute, hour_raw, day, month, year, century] = raw;
    let mut hour = decode(hour_raw & !HOUR_PM);
    if status_b & STATUS_B_24_HOUR == 0 && hour_raw & HOUR_PM != 0 {
        hour = (hour % 12) + 12;
    }
    let century = match decode(century) {
        c @ 19..=99 => u32::from(c),
        _ => 20,
    };
    CalendarTime::new(
        century * 100 + u32::from(decode(year)),
        decode(month),
        decode(day),
        hour,
        decode(minute),
        decode(second),
    )
}
