//! Time: `Instant` reads the global clock straight from the TSC with the
//! info page's parameters (no hypercall); `sleep` sets the virtual alarm
//! clock and idles until it rings.

use crate::hypercall::{Hypercall, call2};
use crate::vm::info;
pub use core::time::Duration;
use denali_abi::info::InfoPage;

/// Nanoseconds on the global clock.
fn now_ns() -> u64 {
    let info = info();
    // SAFETY: rdtsc is allowed in ring 3 (the kernel leaves CR4.TSD clear).
    let tsc = unsafe { core::arch::x86_64::_rdtsc() };
    InfoPage::tsc_to_ns(tsc, info.tsc_base, info.tsc_mult)
}

/// A point on the global clock, as `std::time::Instant`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Instant(u64);

impl Instant {
    /// Now.
    pub fn now() -> Self {
        Instant(now_ns())
    }

    /// Time since `earlier` (zero if `earlier` is later).
    pub fn duration_since(&self, earlier: Instant) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }

    /// Time since this instant.
    pub fn elapsed(&self) -> Duration {
        Instant::now().duration_since(*self)
    }

    /// This instant plus `d`, if representable.
    pub fn checked_add(&self, d: Duration) -> Option<Instant> {
        u64::try_from(d.as_nanos()).ok().and_then(|ns| self.0.checked_add(ns)).map(Instant)
    }

    /// Nanoseconds since the kernel booted.
    pub fn as_nanos_since_boot(&self) -> u64 {
        self.0
    }
}

impl core::ops::Add<Duration> for Instant {
    type Output = Instant;
    fn add(self, d: Duration) -> Instant {
        self.checked_add(d).expect("overflow when adding duration to instant")
    }
}

impl core::ops::Sub<Instant> for Instant {
    type Output = Duration;
    fn sub(self, earlier: Instant) -> Duration {
        self.duration_since(earlier)
    }
}

/// Gives up the CPU until an event is pending; returns the batch of event
/// bits (`denali_abi::hypercall::EVENT_*`). This parks the whole VM, every
/// thread of it; threads should sleep or wait instead.
pub fn idle() -> u64 {
    // SAFETY: `idle` takes no pointer.
    let events = unsafe { call2(Hypercall::Idle, 0, 0) }.unwrap_or(0);
    if events & denali_abi::hypercall::EVENT_NET_RX != 0 {
        crate::net::note_frames_arrived();
    }
    events
}

/// Sleeps for at least `d`, using no CPU meanwhile: the calling thread
/// parks and the VM's other threads run (see [`crate::thread`]).
pub fn sleep(d: Duration) {
    let deadline = Instant::now().checked_add(d).map_or(u64::MAX, |i| i.0);
    while now_ns() < deadline {
        crate::thread::sleep_until(deadline);
    }
}
