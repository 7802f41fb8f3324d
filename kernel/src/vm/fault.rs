//! What to do when a VM traps with a CPU exception: fill a demand-zero page,
//! or stop the VM and say exactly what it did.

use super::Vm;
use crate::mem::frame::FrameAllocator;
use crate::mem::guest::GuestAddr;
use core::fmt;
use denali_abi::layout::PAGE_SIZE;

/// A CPU exception taken in ring 3.
#[derive(Clone, Copy, Debug)]
pub struct Fault {
    /// The vector.
    pub vector: u64,
    /// The CPU's error code.
    pub error_code: u64,
    /// Where the VM was.
    pub rip: u64,
    /// The faulting address (page faults only).
    pub address: Option<GuestAddr>,
}

const PF_PRESENT: u64 = 1;
const PF_WRITE: u64 = 2;
const PF_FETCH: u64 = 16;

impl Vm {
    /// Handles a fault; returns true if the VM can go on (a first touch of a
    /// heap or stack page, or a first write to a copy-on-write data page).
    pub fn resolve_fault(&mut self, frames: &mut FrameAllocator, fault: &Fault) -> bool {
        self.out_of_memory = false;
        let Some(addr) = fault.address else { return false };
        let error = fault.error_code;
        if error & PF_FETCH != 0 {
            return false;
        }
        if error & PF_PRESENT == 0 {
            return self.populate(frames, addr);
        }
        // A first write to an image's data page: give the VM its own copy.
        if error & PF_WRITE != 0 {
            let Some(space) = self.space.as_mut() else { return false };
            match space.break_cow(frames, addr) {
                Ok(true) => {
                    self.stats.resident_pages += 1;
                    self.stats.shared_pages -= 1;
                    return true;
                }
                Ok(false) => {}
                Err(_) => self.out_of_memory = true,
            }
        }
        false
    }

    /// A one-line account of a fault that stops this VM.
    pub fn describe<'a>(&'a self, fault: &'a Fault) -> impl fmt::Display + 'a {
        FaultReport { vm: self, fault }
    }
}

fn vector_name(vector: u64) -> &'static str {
    match vector {
        0 => "divide error (#DE)",
        1 => "debug trap (#DB)",
        3 => "breakpoint (#BP)",
        4 => "overflow (#OF)",
        5 => "bound range exceeded (#BR)",
        6 => "invalid opcode (#UD)",
        7 => "device not available (#NM)",
        8 => "double fault (#DF)",
        10 => "invalid TSS (#TS)",
        11 => "segment not present (#NP)",
        12 => "stack-segment fault (#SS)",
        13 => "general protection fault (#GP)",
        14 => "page fault (#PF)",
        16 => "x87 floating-point error (#MF)",
        17 => "alignment check (#AC)",
        19 => "SIMD floating-point error (#XM)",
        _ => "unexpected trap",
    }
}

struct FaultReport<'a> {
    vm: &'a Vm,
    fault: &'a Fault,
}

impl fmt::Display for FaultReport<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Fault { vector, error_code, rip, address } = *self.fault;
        write!(
            f,
            "vm {} ({}) stopped: {} (vector {vector}) at rip {rip:#x}",
            self.vm.id,
            self.vm.name,
            vector_name(vector)
        )?;
        if super::state_switch::StateSwitch::contains(rip) {
            write!(f, " in the kernel's register-restore code (the VM's CPU state page holds an invalid state)")?;
        } else if vector == 13 {
            write!(f, " (a privileged instruction or a non-canonical address)")?;
        }
        let Some(addr) = address.map(GuestAddr::as_u64) else {
            return write!(f, ", error code {error_code:#x}");
        };
        let access = if error_code & PF_FETCH != 0 {
            "executing"
        } else if error_code & PF_WRITE != 0 {
            "writing"
        } else {
            "reading"
        };
        let no_memory = self.vm.out_of_memory || (self.vm.layout.is_demand_zero(addr) && error_code & PF_PRESENT == 0);
        let what = if no_memory {
            "the kernel had no free memory for that page"
        } else if addr < PAGE_SIZE {
            "a null pointer"
        } else if addr >= 1 << 47 {
            "a kernel address"
        } else if self.vm.layout.is_stack_guard(addr) {
            "the stack guard page (stack overflow)"
        } else if addr >= self.vm.layout.mem_size {
            "an address beyond its memory"
        } else if error_code & PF_PRESENT != 0 {
            "a page without that right"
        } else {
            "an unmapped address"
        };
        write!(f, ", {access} {addr:#x}: {what}")
    }
}
