//! The local APIC in x2APIC mode, used for one thing: a one-shot
//! TSC-deadline timer that takes the CPU back from a running VM when its
//! time slice ends or an alarm is due. The kernel itself always runs with
//! interrupts off; only ring 3 sees the timer.

use x86_64::registers::model_specific::Msr;

/// Vector of the timer interrupt.
pub const TIMER_VECTOR: u64 = 32;
/// Vector the APIC uses for spurious interrupts (ignored, never EOId).
pub const SPURIOUS_VECTOR: u64 = 0xff;

const IA32_APIC_BASE: u32 = 0x1b;
const IA32_TSC_DEADLINE: u32 = 0x6e0;
const X2APIC_EOI: u32 = 0x80b;
const X2APIC_SVR: u32 = 0x80f;
const X2APIC_LVT_TIMER: u32 = 0x832;

/// Turns the local APIC on in x2APIC mode with its timer in TSC-deadline
/// mode. Returns false (and leaves the APIC alone) if the CPU lacks either.
pub fn init() -> bool {
    let leaf1 = core::arch::x86_64::__cpuid(1);
    let x2apic = leaf1.ecx & (1 << 21) != 0;
    let tsc_deadline = leaf1.ecx & (1 << 24) != 0;
    if !x2apic || !tsc_deadline {
        return false;
    }
    // SAFETY: these MSRs exist (CPUID said so); enabling the APIC and
    // programming its timer only causes interrupts on TIMER_VECTOR, whose
    // gate the IDT has, and only while interrupts are on (ring 3).
    unsafe {
        let mut base = Msr::new(IA32_APIC_BASE);
        let value = base.read();
        base.write(value | (1 << 11) | (1 << 10));
        Msr::new(X2APIC_SVR).write((1 << 8) | SPURIOUS_VECTOR);
        Msr::new(X2APIC_LVT_TIMER).write(TIMER_VECTOR | (0b10 << 17));
    }
    true
}

/// Raises the timer interrupt when the TSC reaches `tsc` (0 disarms).
pub fn set_deadline(tsc: u64) {
    // SAFETY: writing the deadline only schedules (or cancels) the timer
    // interrupt set up by `init`.
    unsafe { Msr::new(IA32_TSC_DEADLINE).write(tsc) };
}

/// Acknowledges the timer interrupt.
pub fn end_of_interrupt() {
    // SAFETY: an EOI write has no effect beyond retiring the interrupt.
    unsafe { Msr::new(X2APIC_EOI).write(0) };
}
