//! Counters the kernel keeps where the monitor can read them while VMs
//! run: a benchmark watches swapping as it happens instead of waiting for
//! the report at the end of a run (which a server never reaches).
//!
//! The kernel writes the physical address of its [`SwapCounters`] to
//! [`COUNTERS`](crate::boot::ports::COUNTERS) once, before it runs the first
//! VM, and updates them as it works; the monitor reads them from guest
//! memory whenever it is asked. Each counter only grows.

/// Declares a struct of `u64` counters with `to_words` and `from_words`,
/// which list them in field order (the field list is written once).
macro_rules! counters {
    ($(#[$meta:meta])* pub struct $name:ident { $($(#[$doc:meta])* $field:ident,)* }) => {
        $(#[$meta])*
        pub struct $name {
            $($(#[$doc])* pub $field: u64,)*
        }

        impl $name {
            /// The counters, in field order.
            pub fn to_words(&self) -> [u64; Self::WORDS] {
                [$(self.$field),*]
            }

            /// The counters from their values in field order.
            pub fn from_words(words: [u64; Self::WORDS]) -> $name {
                let [$($field),*] = words;
                $name { $($field),* }
            }
        }
    };
}

counters! {
    /// What swapping has done since the boot.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct SwapCounters {
        /// Swap-outs (a VM's pages written to the swap area).
        swap_outs,
        /// Of those, swap-outs that took an idle VM out whole (page tables
        /// and info page too).
        whole_swap_outs,
        /// Pages written.
        pages_out,
        /// Swap-ins (a VM's pages read back whole).
        swap_ins,
        /// Pages read.
        pages_in,
        /// Disk requests, both ways.
        requests,
        /// Nanoseconds swapping VMs out, disk requests included.
        out_ns,
        /// Nanoseconds swapping VMs in, disk requests included (not the
        /// swap-outs that made room for them).
        in_ns,
        /// Nanoseconds waiting for the disk to take pages written out.
        write_wait_ns,
        /// Nanoseconds waiting for the disk to give pages read back.
        read_wait_ns,
        /// Data segments those requests carried: runs of physically
        /// adjacent frames, each of which costs the driver its own
        /// descriptor (as many as the pages moved when no frame lies next
        /// to the one before).
        segments,
    }
}

impl SwapCounters {
    /// Their size in guest memory.
    pub const SIZE: usize = core::mem::size_of::<SwapCounters>();
    /// How many counters there are.
    pub const WORDS: usize = Self::SIZE / 8;

    /// The counters from their bytes in guest memory (little-endian words
    /// in field order).
    pub fn from_bytes(bytes: &[u8; Self::SIZE]) -> SwapCounters {
        Self::from_words(core::array::from_fn(|i| {
            u64::from_le_bytes(bytes[i * 8..i * 8 + 8].try_into().expect("8 bytes"))
        }))
    }

    /// What each counter moved by since `earlier`.
    pub fn since(&self, earlier: &SwapCounters) -> SwapCounters {
        let (now, then) = (self.to_words(), earlier.to_words());
        Self::from_words(core::array::from_fn(|i| now[i].saturating_sub(then[i])))
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
            read_wait_ns: 10,
            segments: u64::MAX,
        };
        // SAFETY: SwapCounters is repr(C), all u64, no padding: its bytes
        // are initialised, and are what the kernel leaves in memory.
        let bytes: [u8; SwapCounters::SIZE] = unsafe { core::mem::transmute(counters) };
        assert_eq!(SwapCounters::from_bytes(&bytes), counters);
        assert_eq!(SwapCounters::from_words(counters.to_words()), counters);
        let later = SwapCounters::from_words(counters.to_words().map(|w| w.saturating_add(2)));
        assert_eq!(later.since(&counters).to_words()[..10], [2; 10]);
    }
}
