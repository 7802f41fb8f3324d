//! Counters the kernel keeps where the monitor can read them while VMs
//! run: a benchmark watches swapping as it happens instead of waiting for
//! the report at the end of a run (which a server never reaches).
//!
//! The kernel writes the physical address of its [`SwapCounters`] to
//! [`COUNTERS`](crate::boot::ports::COUNTERS) once, before it runs the first
//! VM, and updates them as it works; the monitor reads them from guest
//! memory whenever it is asked. Each counter only grows.

/// What swapping has done since the boot.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SwapCounters {
    /// Swap-outs (a VM's pages written to the swap area).
    pub swap_outs: u64,
    /// Of those, swap-outs that took an idle VM out whole (page tables and
    /// info page too).
    pub whole_swap_outs: u64,
    /// Pages written.
    pub pages_out: u64,
    /// Swap-ins (a VM's pages read back whole).
    pub swap_ins: u64,
    /// Pages read.
    pub pages_in: u64,
    /// Disk requests, both ways.
    pub requests: u64,
    /// Nanoseconds swapping VMs out, disk requests included.
    pub out_ns: u64,
    /// Nanoseconds swapping VMs in, disk requests included.
    pub in_ns: u64,
    /// Nanoseconds waiting for the disk to take pages written out.
    pub write_wait_ns: u64,
    /// Nanoseconds waiting for the disk to give pages read back.
    pub read_wait_ns: u64,
}

impl SwapCounters {
    /// Their size in guest memory.
    pub const SIZE: usize = core::mem::size_of::<SwapCounters>();

    /// The counters from their bytes in guest memory (little-endian words
    /// in field order).
    pub fn from_bytes(bytes: &[u8; Self::SIZE]) -> SwapCounters {
        let mut words = bytes.chunks_exact(8).map(|w| u64::from_le_bytes(w.try_into().expect("8 bytes")));
        let mut next = || words.next().expect("one word per field");
        SwapCounters {
            swap_outs: next(),
            whole_swap_outs: next(),
            pages_out: next(),
            swap_ins: next(),
            pages_in: next(),
            requests: next(),
            out_ns: next(),
            in_ns: next(),
            write_wait_ns: next(),
            read_wait_ns: next(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_read_back_from_their_bytes_in_field_order() {
        let counters = SwapCounters {
            swap_outs: 1,
            whole_swap_outs: 2,
            pages_out: 3,
            swap_ins: 4,
            pages_in: 5,
            requests: 6,
            out_ns: 7,
            in_ns: 8,
            write_wait_ns: 9,
            read_wait_ns: u64::MAX,
        };
        // SAFETY: SwapCounters is repr(C), all u64, no padding: its bytes
        // are initialised, and are what the kernel leaves in memory.
        let bytes: [u8; SwapCounters::SIZE] = unsafe { core::mem::transmute(counters) };
        assert_eq!(SwapCounters::from_bytes(&bytes), counters);
    }
}
