//! Crashes and one VM under a debugger, as the platform (the monitor) is
//! told of them.
//!
//! A VM that faults or panics is reported once, before its memory is
//! freed. The debugged VM (at most one, named at boot) also stops at its
//! entry point, after each single step it is asked for, at `int3` and when
//! it exits; each stop hands the platform its registers, which come back
//! with a [`Command`]. Single steps use the trap flag, kept in the VM's
//! saved `rflags`; a step that enters the VM through its state-restore
//! routine traps on each of the routine's instructions and then once more
//! where the VM resumes, before its next instruction runs: those traps are
//! passed over. While the VM is stopped the kernel waits, so every other VM
//! waits too.

use super::{Kernel, Next};
use crate::kprintln;
use crate::platform::Platform;
use crate::platform::vectors::DEBUG;
use crate::sched::VmId;
use crate::vm::fault::Fault;
use crate::vm::state_switch::StateSwitch;
use denali_abi::debug::{Command, EVENT_MEMORY_PRIVATE, EventKind, KILLED_STATUS};

/// The x86 trap flag: a debug trap after the next instruction.
const TRAP_FLAG: u64 = 1 << 8;

/// The VM a debugger holds, and where its stepping stands.
#[derive(Clone, Copy, Debug)]
pub struct Debugged {
    /// Its id.
    pub vm: VmId,
    /// The debugger asked for single steps (or the entry stop is due).
    stepping: bool,
    /// It was entered through its state-restore routine since it last
    /// stopped: the first debug trap outside the routine is a landing.
    landing: bool,
    /// No stop yet: the first landing is the entry stop.
    at_entry: bool,
    /// Its image pages are copies of its own, so the debugger may write
    /// any of its memory.
    memory_private: bool,
    /// The debugger asked to stop it while it was inside its state-restore
    /// routine: it stops where it lands.
    interrupt_pending: bool,
}

impl<P: Platform> Kernel<P> {
    /// Puts VM `id` under a debugger: it stops at its entry point and is
    /// never swapped out. Before the VMs run; an unknown id is ignored.
    pub fn debug_vm(&mut self, id: VmId) {
        let Some(vm) = self.vms.get_mut(id as usize).and_then(Option::as_mut) else { return };
        vm.pinned = true;
        vm.context.rflags |= TRAP_FLAG;
        self.debugged = Some(Debugged {
            vm: id,
            stepping: true,
            landing: false,
            at_entry: true,
            memory_private: false,
            interrupt_pending: false,
        });
    }

    /// Whether VM `id` is the one under a debugger.
    pub(super) fn is_debugged(&self, id: VmId) -> bool {
        self.debugged.is_some_and(|debugged| debugged.vm == id)
    }

    /// VM `id` is about to be entered through its state-restore routine:
    /// if it is stepping, its next single-step trap outside the routine is
    /// a landing (a trap it raises itself otherwise is its own).
    pub(super) fn note_restore_entry(&mut self, id: VmId) {
        if let Some(debugged) = self.debugged.as_mut().filter(|debugged| debugged.vm == id) {
            debugged.landing = debugged.stepping;
        }
    }

    /// A debug trap (`vector` [`DEBUG`]) or breakpoint of the debugged VM
    /// `id`: passed over, or a stop.
    pub(super) fn handle_debug_trap(&mut self, id: VmId, vector: u64) -> Next {
        let (Some(debugged), Some(vm)) = (self.debugged.as_mut(), self.vms[id as usize].as_ref()) else {
            return Next::Stop;
        };
        let kind = match vector {
            DEBUG if StateSwitch::contains(vm.context.rip) => return Next::Resume,
            DEBUG if core::mem::take(&mut debugged.interrupt_pending) => EventKind::Interrupted,
            DEBUG if debugged.landing => {
                debugged.landing = false;
                if !core::mem::take(&mut debugged.at_entry) {
                    return Next::Resume;
                }
                EventKind::Entry
            }
            DEBUG if debugged.stepping => EventKind::Step,
            _ => EventKind::Trap,
        };
        self.stop_for_debugger(id, kind, 0)
    }

    /// The debugger asked to stop the debugged VM (gdb's Ctrl-C) while VM
    /// `running`, if any, had the CPU: it stops where it is, or, inside its
    /// state-restore routine, where it lands. Whether `running` runs on.
    pub(super) fn interrupt_debugged(&mut self, running: Option<VmId>) -> Next {
        let Some(debugged) = self.debugged.as_mut() else { return Next::Resume };
        let id = debugged.vm;
        let Some(vm) = self.vms[id as usize].as_mut() else { return Next::Resume };
        if StateSwitch::contains(vm.context.rip) {
            debugged.interrupt_pending = true;
            vm.context.rflags |= TRAP_FLAG;
            return Next::Resume;
        }
        let next = self.stop_for_debugger(id, EventKind::Interrupted, 0);
        if running == Some(id) { next } else { Next::Resume }
    }

    /// Stops the debugged VM `id` (`kind`, with exit `status` for
    /// [`EventKind::Exited`]) until the debugger answers; takes the
    /// registers it set and whether to step. The VM resumes, or, if the
    /// debugger killed it, has finished.
    pub(super) fn stop_for_debugger(&mut self, id: VmId, kind: EventKind, status: i32) -> Next {
        let Some(mut debugged) = self.debugged.filter(|debugged| debugged.vm == id) else { return Next::Resume };
        let Some(vm) = self.vms[id as usize].as_mut() else { return Next::Resume };
        if kind == EventKind::Entry {
            debugged.memory_private = vm.privatize_image(&mut self.frames);
        }
        let Some(mut event) = vm.debug_event(kind, None) else { return Next::Resume };
        event.status = status as u64;
        event.flags = if debugged.memory_private { EVENT_MEMORY_PRIVATE } else { 0 };
        self.platform.debug_event(&mut event);
        if event.command() == Some(Command::Kill) && kind != EventKind::Exited {
            kprintln!("denali: vm {id} was killed by its debugger");
            self.finish(id, KILLED_STATUS);
            return Next::Stop;
        }
        vm.context.set_from_debugger(&event.regs);
        // No answer (no monitor): run on.
        debugged.stepping = event.command() == Some(Command::Step);
        debugged.landing = false;
        if debugged.stepping {
            vm.context.rflags |= TRAP_FLAG;
        } else {
            vm.context.rflags &= !TRAP_FLAG;
        }
        self.debugged = Some(debugged);
        Next::Resume
    }

    /// Tells the platform that VM `id` crashed (`fault`: how, if a CPU
    /// exception; else a panic that exits with `status`), before its
    /// memory is freed. The debugged VM's debugger sees it stopped there.
    pub(super) fn report_crash(&mut self, id: VmId, fault: Option<&Fault>, status: i32) {
        let kind = if fault.is_some() { EventKind::Fault } else { EventKind::Panic };
        let Some(vm) = self.vms[id as usize].as_ref() else { return };
        let Some(mut event) = vm.debug_event(kind, fault) else { return };
        event.status = status as u64;
        self.platform.debug_event(&mut event);
    }
}
