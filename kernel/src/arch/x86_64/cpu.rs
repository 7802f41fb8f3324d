//! CPU features the kernel turns on at boot, and the per-VM FPU/SSE state.

use core::arch::x86_64::__cpuid_count;
use x86_64::registers::control::{Cr0, Cr0Flags, Cr4, Cr4Flags};
use x86_64::registers::model_specific::{Efer, EferFlags};

/// Which protections this CPU gave us.
#[derive(Clone, Copy, Debug, Default)]
pub struct Protections {
    /// Supervisor-mode execution prevention.
    pub smep: bool,
    /// Supervisor-mode access prevention.
    pub smap: bool,
}

/// Turns on SSE, NX, write protection, and SMEP/SMAP where present.
pub fn init() -> Protections {
    // Leaf 7 exists on every x86_64 CPU that KVM exposes.
    let leaf7 = __cpuid_count(7, 0);
    let protections = Protections { smep: leaf7.ebx & (1 << 7) != 0, smap: leaf7.ebx & (1 << 20) != 0 };
    // SAFETY: these bits only add protection or enable SSE, which the kernel
    // code does not rely on before this point (it is built soft-float). The
    // kernel never touches user addresses directly (it goes through the
    // physmap), so SMAP and SMEP cannot fault it.
    unsafe {
        Cr0::update(|cr0| {
            cr0.remove(Cr0Flags::EMULATE_COPROCESSOR | Cr0Flags::TASK_SWITCHED);
            cr0.insert(Cr0Flags::MONITOR_COPROCESSOR | Cr0Flags::WRITE_PROTECT | Cr0Flags::NUMERIC_ERROR);
        });
        Cr4::update(|cr4| {
            cr4.insert(Cr4Flags::OSFXSR | Cr4Flags::OSXMMEXCPT_ENABLE);
            cr4.remove(Cr4Flags::TIMESTAMP_DISABLE);
            if protections.smep {
                cr4.insert(Cr4Flags::SUPERVISOR_MODE_EXECUTION_PROTECTION);
            }
            if protections.smap {
                cr4.insert(Cr4Flags::SUPERVISOR_MODE_ACCESS_PREVENTION);
            }
        });
        // `syscall` stays off (EFER.SCE clear): a guest using it gets #UD.
        Efer::update(|efer| {
            efer.insert(EferFlags::NO_EXECUTE_ENABLE);
            efer.remove(EferFlags::SYSTEM_CALL_EXTENSIONS);
        });
    }
    protections
}

/// A VM's x87/SSE state, in `fxsave` format.
#[repr(C, align(16))]
#[derive(Clone)]
pub struct FpuState([u8; 512]);

impl FpuState {
    /// The state after reset: x87 initialised, all SSE exceptions masked.
    pub fn initial() -> Self {
        let mut state = FpuState([0; 512]);
        // Default FCW 0x037f and MXCSR 0x1f80 (all exceptions masked).
        state.0[0..2].copy_from_slice(&0x037fu16.to_le_bytes());
        state.0[24..28].copy_from_slice(&0x1f80u32.to_le_bytes());
        state.0[28..32].copy_from_slice(&0xffffu32.to_le_bytes());
        state
    }

    /// Saves the CPU's current FPU state here.
    pub fn save(&mut self) {
        // SAFETY: the buffer is 512 bytes, 16-byte aligned, as fxsave needs.
        unsafe { core::arch::x86_64::_fxsave64(self.0.as_mut_ptr()) }
    }

    /// Loads this state into the CPU.
    pub fn restore(&self) {
        // SAFETY: the buffer is 512 bytes, 16-byte aligned, and was written by
        // `initial` or by fxsave; the MXCSR reserved bits are clear in both,
        // so fxrstor cannot fault.
        unsafe { core::arch::x86_64::_fxrstor64(self.0.as_ptr()) }
    }
}
