//! x86_64: descriptor tables, traps and hypercall entry, the serial port,
//! CPU feature set-up, the APIC timer, and the monitor's exit devices.
//!
//! # Running under PVM
//!
//! On the project's machines `/dev/kvm` is KVM's PVM flavour (module
//! `kvm_pvm`), not hardware virtualisation. What was measured there, for
//! whoever makes the kernel run natively on it:
//!
//! - The kernel stays in PVM's emulated "non-PVM mode": `mov ax, cs` reads
//!   the selector our monitor set (0x10) rather than the host's 0x33, and a
//!   1,000,000-iteration loop in the kernel takes 4.7 s (about 1.2 us an
//!   instruction). Ring-3 VM code runs natively.
//! - Still emulated after relinking the kernel in the lower half
//!   (0x4000_0020_0000, large code model) with the sregs PVM's own tests use
//!   (CR0 0x80050033, CS 0x10 L=1, DS 0x18, TR set, RFLAGS 0x202).
//!   CR4.PCIDE makes KVM_SET_SREGS fail (EINVAL); the PVM MSRs
//!   (0x4b564df1, 0x4b564d20: vCPU struct) are refused by KVM_SET_MSRS, and a
//!   guest `wrmsr` of 0x4b564df1 raises #GP. The gate into native mode on
//!   this host is not public.
//! - Exceptions and `int 3`/`int 4` from ring 3 arrive through our IDT with
//!   IST stacks, `iretq` returns, and the x2APIC TSC-deadline timer
//!   interrupts through the IDT. A ring-3 `syscall` lands on LSTAR still in
//!   ring 3, and `int 0x80` is #UD: hence hypercalls through `int 4`.

pub mod apic;
pub mod cpu;
pub mod entry;
pub mod gdt;
pub mod machine;
pub mod pic;
pub mod pvh;
pub mod rtc;
pub mod serial;
pub mod trap;
pub mod user_state;

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

/// Reports a kernel panic to the monitor and stops. Without our monitor
/// (QEMU's isa-debug-exit on the exit port) the exit port carries
/// [`KERNEL_PANIC_STATUS`](denali_abi::boot::KERNEL_PANIC_STATUS).
pub fn exit_panic() -> ! {
    // SAFETY: as in `exit`.
    unsafe { Port::<u32>::new(ports::PANIC).write(1) };
    exit(denali_abi::boot::KERNEL_PANIC_STATUS)
}

/// Asks the monitor to park this CPU for up to `micros` microseconds: the
/// kernel has nothing to run until then. Returns at once where there is no
/// monitor.
pub fn idle_for(micros: u32) {
    // SAFETY: the idle port only parks the vCPU; it touches no memory.
    unsafe { Port::<u32>::new(ports::IDLE).write(micros) };
}

/// Tells the monitor how many VMs the boot has made and the MiB of memory
/// in use (see [`ports::PROGRESS`]); nothing where there is no monitor.
pub fn report_progress(vms_made: u32, memory_mib: u32) {
    // SAFETY: the progress ports only feed the monitor's progress bar; they
    // touch no memory.
    unsafe {
        Port::<u32>::new(ports::PROGRESS_MEMORY).write(memory_mib);
        Port::<u32>::new(ports::PROGRESS).write(vms_made);
    }
}

/// Tells the monitor where `counters` lie (see [`ports::COUNTERS`]); nothing
/// where there is no monitor.
pub fn share_counters(counters: &denali_abi::counters::SwapCounters) {
    // The kernel lives on its boot stack, in the image, below 4 GiB.
    let Ok(addr) = u32::try_from(crate::mem::phys::kernel_virt_to_phys(counters as *const _ as u64)) else { return };
    // SAFETY: the counters port only lets the monitor read the counters;
    // it writes nothing.
    unsafe { Port::<u32>::new(ports::COUNTERS).write(addr) };
}

/// Hands the monitor `event` and takes its answer (see [`ports::DEBUG`]);
/// nothing where there is no monitor.
pub fn debug_event(event: &mut denali_abi::debug::DebugEvent) {
    // The event is on the kernel's stack, in the image, below 4 GiB.
    let Ok(addr) = u32::try_from(crate::mem::phys::kernel_virt_to_phys(event as *mut _ as u64)) else { return };
    // SAFETY: the debug port lets the monitor read the event and the VM's
    // pages, and write the event's answer; nothing else. Unlike
    // `Port::write` (which says it touches no memory), the asm may read and
    // write memory, so the event is stored before it and read after it.
    unsafe {
        core::arch::asm!("out dx, eax", in("dx") ports::DEBUG, in("eax") addr, options(nostack, preserves_flags))
    };
}

/// Halts until an interrupt (the APIC timer) arrives. Interrupts are on
/// only for the `hlt` itself: `sti` holds them off for one instruction, so
/// none can slip in between and be missed.
pub fn halt_until_interrupt() {
    // SAFETY: the IDT handles the timer and spurious vectors in ring 0 by
    // returning here; interrupts are off again before this returns.
    unsafe { core::arch::asm!("sti", "hlt", "cli", options(nomem, nostack)) };
}

/// Lets an interrupt that arrived while they were off in: they are on for
/// one instruction (`sti` holds them off for the next one, the `nop`).
pub fn take_pending_interrupts() {
    // SAFETY: as for `halt_until_interrupt`: the IDT handles the timer, the
    // NIC and spurious vectors in ring 0 by returning here; interrupts are
    // off again before this returns.
    unsafe { core::arch::asm!("sti", "nop", "cli", options(nomem, nostack)) };
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
