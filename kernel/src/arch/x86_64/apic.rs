//! The local APIC, used for one thing: a one-shot timer that takes the CPU
//! back from a running VM when its time slice ends or an alarm is due, and
//! wakes the halted kernel. The kernel itself always runs with interrupts
//! off; only ring 3 (and `hlt`) sees the timer.
//!
//! Two ways to drive it, chosen at boot: the x2APIC's TSC-deadline mode
//! (MSRs, a deadline in TSC ticks: KVM, recent CPUs), or, where that is
//! missing (QEMU's emulation, older CPUs), the xAPIC's registers in memory
//! with the timer in one-shot mode, its count computed from the TSC
//! deadline with a rate measured at boot.

use crate::mem::frame::FrameAllocator;
use crate::mem::phys;
use core::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use x86_64::registers::model_specific::Msr;

/// Vector of the timer interrupt.
pub const TIMER_VECTOR: u64 = crate::platform::vectors::TIMER;
/// Vector the APIC uses for spurious interrupts (ignored, never EOId).
pub const SPURIOUS_VECTOR: u64 = crate::platform::vectors::SPURIOUS;

const IA32_APIC_BASE: u32 = 0x1b;
const IA32_TSC_DEADLINE: u32 = 0x6e0;
const X2APIC_EOI: u32 = 0x80b;
const X2APIC_SVR: u32 = 0x80f;
const X2APIC_LVT_TIMER: u32 = 0x832;

/// xAPIC register offsets.
const XAPIC_EOI: usize = 0xb0;
const XAPIC_SVR: usize = 0xf0;
const XAPIC_LVT_TIMER: usize = 0x320;
const XAPIC_INITIAL_COUNT: usize = 0x380;
const XAPIC_CURRENT_COUNT: usize = 0x390;
const XAPIC_DIVIDE: usize = 0x3e0;

const MODE_NONE: u8 = 0;
const MODE_TSC_DEADLINE: u8 = 1;
const MODE_XAPIC_ONE_SHOT: u8 = 2;

/// Which way the timer is driven.
static MODE: AtomicU8 = AtomicU8::new(MODE_NONE);
/// The xAPIC's registers (kernel address).
static XAPIC: AtomicU64 = AtomicU64::new(0);
/// xAPIC timer counts per TSC tick, as a 32.32 fixed-point number.
static COUNTS_PER_TSC: AtomicU64 = AtomicU64::new(0);

fn xapic_write(offset: usize, value: u32) {
    let base = XAPIC.load(Ordering::Relaxed) as *mut u32;
    // SAFETY: `base` maps the xAPIC's register page (uncached, see init);
    // `offset` is one of its 16-byte-aligned registers.
    unsafe { base.byte_add(offset).write_volatile(value) };
}

fn xapic_read(offset: usize) -> u32 {
    let base = XAPIC.load(Ordering::Relaxed) as *const u32;
    // SAFETY: as in xapic_write.
    unsafe { base.byte_add(offset).read_volatile() }
}

/// Turns the local APIC's timer on: TSC-deadline mode where the CPU has
/// it, else the xAPIC in one-shot mode (mapping its registers with
/// `frames`). Returns false if neither works (the kernel then cannot
/// preempt).
pub fn init(frames: &mut FrameAllocator, kernel_pml4: u64, tsc_khz: u64) -> bool {
    let leaf1 = core::arch::x86_64::__cpuid(1);
    let x2apic = leaf1.ecx & (1 << 21) != 0;
    let tsc_deadline = leaf1.ecx & (1 << 24) != 0;
    if x2apic && tsc_deadline {
        // SAFETY: these MSRs exist (CPUID said so); enabling the APIC and
        // programming its timer only causes interrupts on TIMER_VECTOR,
        // whose gate the IDT has, and only while interrupts are on.
        unsafe {
            let mut base = Msr::new(IA32_APIC_BASE);
            let value = base.read();
            base.write(value | (1 << 11) | (1 << 10));
            Msr::new(X2APIC_SVR).write((1 << 8) | SPURIOUS_VECTOR);
            Msr::new(X2APIC_LVT_TIMER).write(TIMER_VECTOR | (0b10 << 17));
        }
        MODE.store(MODE_TSC_DEADLINE, Ordering::Relaxed);
        return true;
    }
    if leaf1.edx & (1 << 9) == 0 {
        return false;
    }
    // SAFETY: the APIC base MSR exists where CPUID reports an APIC.
    let base = unsafe { Msr::new(IA32_APIC_BASE).read() } & 0xf_ffff_f000;
    let Some(registers) = phys::map_mmio(frames, kernel_pml4, base, 4096) else { return false };
    XAPIC.store(registers as u64, Ordering::Relaxed);
    // SAFETY: enabling the xAPIC (global enable bit, xAPIC mode) changes
    // nothing until its timer is armed.
    unsafe {
        let mut msr = Msr::new(IA32_APIC_BASE);
        let value = msr.read();
        msr.write((value | (1 << 11)) & !(1 << 10));
    }
    xapic_write(XAPIC_SVR, (1 << 8) | SPURIOUS_VECTOR as u32);
    xapic_write(XAPIC_DIVIDE, 0b1011); // divide by 1
    // Masked while measuring: how far the count falls in 10 ms of TSC.
    xapic_write(XAPIC_LVT_TIMER, (1 << 16) | TIMER_VECTOR as u32);
    let tsc_per_10ms = tsc_khz * 10;
    xapic_write(XAPIC_INITIAL_COUNT, u32::MAX);
    let start = super::rdtsc();
    while super::rdtsc() - start < tsc_per_10ms {
        core::hint::spin_loop();
    }
    let counted = u64::from(u32::MAX - xapic_read(XAPIC_CURRENT_COUNT));
    xapic_write(XAPIC_INITIAL_COUNT, 0);
    if counted == 0 {
        return false;
    }
    COUNTS_PER_TSC.store((counted << 32) / tsc_per_10ms.max(1), Ordering::Relaxed);
    xapic_write(XAPIC_LVT_TIMER, TIMER_VECTOR as u32); // one-shot, unmasked
    MODE.store(MODE_XAPIC_ONE_SHOT, Ordering::Relaxed);
    true
}

/// Raises the timer interrupt when the TSC reaches `tsc` (0 disarms). The
/// xAPIC's count is 32 bits: a deadline too far away fires early, and the
/// kernel, finding nothing due, arms it again.
pub fn set_deadline(tsc: u64) {
    match MODE.load(Ordering::Relaxed) {
        // SAFETY: writing the deadline only schedules (or cancels) the
        // timer interrupt set up by `init`.
        MODE_TSC_DEADLINE => unsafe { Msr::new(IA32_TSC_DEADLINE).write(tsc) },
        MODE_XAPIC_ONE_SHOT => {
            if tsc == 0 {
                return xapic_write(XAPIC_INITIAL_COUNT, 0);
            }
            let ticks = tsc.saturating_sub(super::rdtsc()).max(1);
            let counts = (u128::from(ticks) * u128::from(COUNTS_PER_TSC.load(Ordering::Relaxed))) >> 32;
            xapic_write(XAPIC_INITIAL_COUNT, counts.clamp(1, u128::from(u32::MAX)) as u32);
        }
        _ => {}
    }
}

/// This CPU's local APIC id (where a device's message-signalled
/// interrupts are sent).
pub fn id() -> u32 {
    match MODE.load(Ordering::Relaxed) {
        // SAFETY: the x2APIC id register exists in x2APIC mode.
        MODE_TSC_DEADLINE => unsafe { Msr::new(0x802).read() as u32 },
        MODE_XAPIC_ONE_SHOT => xapic_read(0x20) >> 24,
        _ => 0,
    }
}

/// Acknowledges the interrupt being handled.
pub fn end_of_interrupt() {
    match MODE.load(Ordering::Relaxed) {
        // SAFETY: an EOI write has no effect beyond retiring the interrupt.
        MODE_TSC_DEADLINE => unsafe { Msr::new(X2APIC_EOI).write(0) },
        MODE_XAPIC_ONE_SHOT => xapic_write(XAPIC_EOI, 0),
        _ => {}
    }
}
