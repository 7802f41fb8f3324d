//! x86_64: descriptor tables, traps and hypercall entry, the serial port,
//! CPU feature set-up, and the monitor's exit devices.

pub mod apic;
pub mod cpu;
pub mod entry;
pub mod gdt;
pub mod serial;
pub mod trap;

use denali_abi::boot::ports;
use x86_64::instructions::port::Port;

/// Ends the run with `status` through the monitor's exit device, or halts
/// forever where there is none.
pub fn exit(status: i32) -> ! {
    // SAFETY: writing the exit port has no effect on memory; under our
    // monitor it ends the run, elsewhere the port is unclaimed.
    unsafe { Port::<u32>::new(ports::EXIT).write(status as u32) };
    halt_forever()
}

/// Reports a kernel panic to the monitor and stops.
pub fn exit_panic() -> ! {
    // SAFETY: as in `exit`.
    unsafe { Port::<u32>::new(ports::PANIC).write(1) };
    halt_forever()
}

/// Asks the monitor to park this CPU for up to `micros` microseconds: the
/// kernel has nothing to run until then. Returns at once where there is no
/// monitor.
pub fn idle_for(micros: u32) {
    // SAFETY: the idle port only parks the vCPU; it touches no memory.
    unsafe { Port::<u32>::new(ports::IDLE).write(micros) };
}

/// Stops this CPU for good.
pub fn halt_forever() -> ! {
    loop {
        x86_64::instructions::interrupts::disable();
        x86_64::instructions::hlt();
    }
}

/// Reads the time-stamp counter.
#[inline]
pub fn rdtsc() -> u64 {
    // SAFETY: rdtsc only reads a counter.
    unsafe { core::arch::x86_64::_rdtsc() }
}
