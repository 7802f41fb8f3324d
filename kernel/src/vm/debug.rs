//! What the monitor is told about a VM that crashed or stopped under a
//! debugger, and the copies of its image pages a debugger may write.

use super::Vm;
use super::fault::Fault;
use crate::mem::frame::FrameAllocator;
use crate::mem::guest::GuestAddr;
use denali_abi::debug::{DebugEvent, EventKind};

impl Vm {
    /// The event that tells the monitor this VM `kind` (how, for a fault);
    /// `None` while it has no address space.
    pub fn debug_event(&self, kind: EventKind, fault: Option<&Fault>) -> Option<DebugEvent> {
        let space = self.space.as_ref()?;
        Some(DebugEvent {
            vm: u64::from(self.id),
            kind: kind as u64,
            vector: fault.map_or(0, |f| f.vector),
            error_code: fault.map_or(0, |f| f.error_code),
            fault_address: fault.and_then(|f| f.address).map_or(0, GuestAddr::as_u64),
            root: space.root().start_address().as_u64(),
            space_size: self.layout.mem_size,
            status: 0,
            flags: 0,
            command: 0,
            regs: self.context.user_regs(),
        })
    }

    /// Copies every image page this VM maps into a frame of its own (see
    /// `AddressSpace::privatize_all`); false if memory ran out first.
    pub fn privatize_image(&mut self, frames: &mut FrameAllocator) -> bool {
        let Some(space) = self.space.as_mut() else { return false };
        let (copied, all) = space.privatize_all(frames);
        self.stats.resident_pages += copied;
        self.stats.shared_pages = self.stats.shared_pages.saturating_sub(copied);
        all
    }
}
