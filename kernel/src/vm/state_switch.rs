//! The kernel's side of switching a VM's register state beyond its
//! general registers (the routines themselves, and why they run in ring 3,
//! are in `arch::x86_64::user_state`): where the routines are, how a VM
//! enters through the restore routine, and what a fresh VM's state page
//! holds.

use super::context::{UserContext, UserSelectors};
use crate::mem::phys;
use denali_abi::info::ResumePoint;
use denali_abi::layout::STATE_SWITCH_PAGE;

/// The state-switch page, ready to map into every VM, and where its
/// routines start.
#[derive(Clone, Copy, Debug)]
pub struct StateSwitch {
    /// The frame holding the routines.
    pub frame: u64,
    save: u64,
    restore: u64,
    selectors: UserSelectors,
    bases: bool,
}

impl StateSwitch {
    /// The page whose routines start at flat addresses `save` and
    /// `restore`, in `frame`; VMs run them with `selectors`.
    pub fn new(frame: u64, save: u64, restore: u64, selectors: UserSelectors) -> StateSwitch {
        StateSwitch { frame, save, restore, selectors, bases: false }
    }

    /// The same page, whose routines also switch the FS and GS bases.
    pub fn switching_bases(self) -> StateSwitch {
        StateSwitch { bases: true, ..self }
    }

    /// Whether the routines switch the FS and GS bases, so a VM may set
    /// them (`FEATURE_FS_GS_BASE` on its info page).
    pub fn switches_bases(&self) -> bool {
        self.bases
    }

    /// Where the save routine starts.
    pub fn save_entry(&self) -> u64 {
        self.save
    }

    /// The selectors VMs run with.
    pub fn selectors(&self) -> UserSelectors {
        self.selectors
    }

    /// Makes `context` enter through the restore routine, noting in
    /// `resume` where it really continues. A VM stopped inside the page
    /// (an interrupt in the middle of the routine) starts it again: its
    /// resume point is still the one noted when it entered.
    pub fn enter_through_restore(&self, context: &mut UserContext, resume: &mut ResumePoint) {
        if !Self::contains(context.rip) {
            *resume = ResumePoint { rip: context.rip, rax: context.rax, rdx: context.rdx };
        }
        context.rip = self.restore;
    }

    /// Whether `rip` is in the state-switch page.
    pub fn contains(rip: u64) -> bool {
        (STATE_SWITCH_PAGE..STATE_SWITCH_PAGE + 4096).contains(&rip)
    }

    /// Fills a fresh VM's CPU state page (zeroed, reached through the
    /// physmap at `frame`) with the state after reset: x87 initialised and
    /// every SSE exception masked; with XSAVE, every component in its
    /// initial configuration.
    pub fn init_state_page(&self, frame: u64) {
        let page = phys::to_virt(frame);
        // SAFETY: the frame is the VM's fresh state page, a whole frame;
        // FCW at offset 0 and MXCSR at 24 in the legacy area that both
        // formats share (XSTATE_BV stays 0: all else initial).
        unsafe {
            page.cast::<u16>().write(0x037f);
            page.add(24).cast::<u32>().write(0x1f80);
        }
    }
}
