//! Clocks and sleeping: the monotonic clock is the global clock (TSC and
//! the info page, no hypercall); the real-time clock adds the wall-clock
//! time the kernel noted at boot.

use super::fail;
use crate::time::{Duration, Instant, sleep};
use hermit_abi::{CLOCK_MONOTONIC, CLOCK_REALTIME, EFAULT, EINVAL, clockid_t, timespec};

/// # Safety
/// `tp` is null or points to a writable `timespec`.
#[unsafe(no_mangle)]
unsafe extern "C" fn sys_clock_gettime(clock: clockid_t, tp: *mut timespec) -> i32 {
    let ns = match clock {
        CLOCK_MONOTONIC => Instant::now().as_nanos_since_boot(),
        CLOCK_REALTIME => unix_ns(),
        _ => return fail(EINVAL),
    };
    if tp.is_null() {
        return fail(EFAULT);
    }
    let time = timespec { tv_sec: (ns / 1_000_000_000) as i64, tv_nsec: (ns % 1_000_000_000) as i32 };
    // SAFETY: the caller's contract.
    unsafe { tp.write(time) };
    0
}

/// Wall-clock time: nanoseconds since the Unix epoch (since boot, if the
/// machine has no clock).
pub(super) fn unix_ns() -> u64 {
    crate::vm::info().unix_ns_at_boot.saturating_add(Instant::now().as_nanos_since_boot())
}

#[unsafe(no_mangle)]
extern "C" fn sys_usleep(usecs: u64) {
    sleep(Duration::from_micros(usecs));
}

/// # Safety
/// `req` is null or points to a `timespec`.
#[unsafe(no_mangle)]
unsafe extern "C" fn sys_nanosleep(req: *const timespec) -> i32 {
    // SAFETY: the caller's contract.
    let Some(req) = (unsafe { req.as_ref() }) else { return fail(EFAULT) };
    if req.tv_sec < 0 || !(0..1_000_000_000).contains(&req.tv_nsec) {
        return fail(EINVAL);
    }
    sleep(Duration::new(req.tv_sec as u64, req.tv_nsec as u32));
    0
}

/// A relative `timespec` as a deadline on the global clock (`None`: it
/// is malformed).
pub(super) fn deadline_after(relative: &timespec) -> Option<u64> {
    if relative.tv_sec < 0 || !(0..1_000_000_000).contains(&relative.tv_nsec) {
        return None;
    }
    let ns = (relative.tv_sec as u64).saturating_mul(1_000_000_000).saturating_add(relative.tv_nsec as u64);
    Some(Instant::now().as_nanos_since_boot().saturating_add(ns))
}
