//! The machine the kernel's core runs on ([`Platform`]): the TSC, the
//! local APIC's timer, `hlt`, the monitor's idle port, CR2 and CR3, and the
//! way into ring 3 and back (see `trap`).

use super::{apic, trap};
use crate::drivers::virtio_net::INTERRUPTED;
use crate::platform::{Platform, TrapHooks};
use crate::vm::context::{UserContext, UserSelectors};
use core::sync::atomic::Ordering;
use x86_64::registers::control::{Cr2, Cr3, Cr3Flags};
use x86_64::structures::paging::PhysFrame;

/// This CPU.
pub struct Machine {
    /// Whether the local APIC timer can take the CPU back from a VM.
    pub preemption: bool,
    /// The ring-3 selectors the state-save routine runs with.
    pub selectors: UserSelectors,
}

impl Platform for Machine {
    fn rdtsc(&self) -> u64 {
        super::rdtsc()
    }

    fn has_timer(&self) -> bool {
        self.preemption
    }

    fn set_deadline(&mut self, tsc: u64) {
        apic::set_deadline(tsc);
    }

    fn end_of_interrupt(&mut self) {
        apic::end_of_interrupt();
    }

    fn halt_until_interrupt(&mut self) {
        super::halt_until_interrupt();
    }

    fn take_pending_interrupts(&mut self) {
        super::take_pending_interrupts();
    }

    fn idle_for(&mut self, micros: u32) {
        super::idle_for(micros);
    }

    fn nic_interrupted(&self) -> bool {
        INTERRUPTED.load(Ordering::Relaxed)
    }

    fn take_nic_interrupt(&mut self) -> bool {
        INTERRUPTED.swap(false, Ordering::Relaxed)
    }

    fn take_debug_request(&mut self) -> bool {
        super::trap::DEBUG_REQUESTED.swap(false, Ordering::Relaxed)
    }

    fn load_address_space(&mut self, root: PhysFrame) {
        // SAFETY: every address space the kernel makes shares the kernel's
        // upper half, so the kernel keeps running after the switch.
        unsafe { Cr3::write(root, Cr3Flags::empty()) };
    }

    unsafe fn enter_user(_this: *mut Self, context: *mut UserContext, hooks: TrapHooks) {
        // SAFETY: the caller's promise, passed on.
        unsafe { trap::enter_user(context, hooks) }
    }

    fn run_save_routine(&mut self, rip: u64, failure: &mut UserContext) -> bool {
        // SAFETY: the selectors are the ring-3 ones and the routine is
        // mapped in every VM's space, the loaded one included.
        unsafe { trap::run_save_routine(failure, rip, self.selectors.code, self.selectors.data) }
    }

    fn fault_address(&self) -> u64 {
        Cr2::read_raw()
    }

    fn report_progress(&mut self, vms_made: u32, memory_mib: u32) {
        super::report_progress(vms_made, memory_mib);
    }

    fn share_counters(&mut self, counters: &denali_abi::counters::SwapCounters) {
        super::share_counters(counters);
    }

    fn debug_event(&mut self, event: &mut denali_abi::debug::DebugEvent) {
        super::debug_event(event);
    }
}
