//! CPU features the kernel turns on at boot.

use super::user_state::Features;
use core::arch::x86_64::__cpuid_count;
use x86_64::registers::control::{Cr0, Cr0Flags, Cr4, Cr4Flags};
use x86_64::registers::model_specific::{Efer, EferFlags};

/// Which protections this CPU gave us.
#[derive(Clone, Copy, Debug)]
pub struct Protections {
    /// Supervisor-mode execution prevention.
    pub smep: bool,
    /// Supervisor-mode access prevention.
    pub smap: bool,
    /// What ring 3 may use, and how its state is switched.
    pub user: Features,
}

/// Turns on SSE, NX, write protection, SMEP/SMAP, UMIP, XSAVE (with XCR0
/// covering x87, SSE, AVX and AVX-512, as the CPU has them) and FSGSBASE
/// where present; `syscall` and everything CR4 enables that the kernel
/// does not switch per VM (protection keys, user interrupts, shadow
/// stacks) stay off whatever the loader left.
pub fn init() -> Protections {
    // Leaf 7 exists on every x86_64 CPU that KVM exposes.
    let leaf7 = __cpuid_count(7, 0);
    let user = Features::detect();
    let protections = Protections { smep: leaf7.ebx & (1 << 7) != 0, smap: leaf7.ebx & (1 << 20) != 0, user };
    // SAFETY: these bits only add protection or enable state the kernel
    // switches per VM (see `user_state`); the kernel code does not use
    // SSE (it is built soft-float) and never touches user addresses
    // directly (it goes through the physmap), so SMAP and SMEP cannot
    // fault it.
    unsafe {
        Cr0::update(|cr0| {
            cr0.remove(Cr0Flags::EMULATE_COPROCESSOR | Cr0Flags::TASK_SWITCHED);
            cr0.insert(Cr0Flags::MONITOR_COPROCESSOR | Cr0Flags::WRITE_PROTECT | Cr0Flags::NUMERIC_ERROR);
        });
        Cr4::update(|cr4| {
            cr4.remove(
                Cr4Flags::TIMESTAMP_DISABLE
                    | Cr4Flags::PROTECTION_KEY_USER
                    | Cr4Flags::PROTECTION_KEY_SUPERVISOR
                    | Cr4Flags::PERFORMANCE_MONITOR_COUNTER
                    | Cr4Flags::CONTROL_FLOW_ENFORCEMENT
                    | Cr4Flags::FSGSBASE
                    | Cr4Flags::OSXSAVE,
            );
            cr4.insert(Cr4Flags::OSFXSR | Cr4Flags::OSXMMEXCPT_ENABLE);
            cr4.set(Cr4Flags::SUPERVISOR_MODE_EXECUTION_PROTECTION, protections.smep);
            cr4.set(Cr4Flags::SUPERVISOR_MODE_ACCESS_PREVENTION, protections.smap);
            cr4.set(Cr4Flags::USER_MODE_INSTRUCTION_PREVENTION, user.umip);
            cr4.set(Cr4Flags::FSGSBASE, user.fsgsbase);
            cr4.set(Cr4Flags::OSXSAVE, user.xcr0.is_some());
        });
        if let Some(xcr0) = user.xcr0 {
            core::arch::asm!("xsetbv", in("ecx") 0, in("eax") xcr0 as u32, in("edx") (xcr0 >> 32) as u32,
                options(nomem, nostack));
        }
        // `syscall` stays off (EFER.SCE clear): a guest using it gets #UD.
        Efer::update(|efer| {
            efer.insert(EferFlags::NO_EXECUTE_ENABLE);
            efer.remove(EferFlags::SYSTEM_CALL_EXTENSIONS);
        });
    }
    protections
}
