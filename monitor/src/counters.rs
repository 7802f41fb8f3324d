//! The kernel's swap counters, read from guest memory while the VMs run
//! (see `denali_abi::counters`): a benchmark holds a [`LiveCounters`] and
//! reads it whenever it wants a figure, without stopping anything.

use denali_abi::counters::SwapCounters;
use std::sync::{Arc, Mutex};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// A handle on the counters of a run: give a clone to
/// [`Config::counters`](crate::Config::counters), keep one to read.
#[derive(Clone, Debug, Default)]
pub struct LiveCounters(Arc<Mutex<Option<(GuestMemoryMmap, GuestAddress)>>>);

impl LiveCounters {
    /// The counters now; `None` until the kernel has said where they are
    /// (it does before the first VM runs), or if it named memory the guest
    /// does not have.
    pub fn read(&self) -> Option<SwapCounters> {
        let place = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let (memory, addr) = place.as_ref()?;
        let mut bytes = [0u8; SwapCounters::SIZE];
        memory.read_slice(&mut bytes, *addr).ok()?;
        Some(SwapCounters::from_bytes(&bytes))
    }

    /// The kernel keeps its counters at `addr` of `memory`.
    pub(crate) fn attach(&self, memory: GuestMemoryMmap, addr: u64) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some((memory, GuestAddress(addr)));
    }
}
