//! A VM's flat address: the one kind of address a VM can hand the kernel
//! (in a hypercall's arguments, or as the address it faulted on), hostile
//! until checked. It has a type of its own so it cannot be taken for the
//! other two kinds the kernel handles, a physical frame (`u64`s from the
//! frame allocator) and a kernel pointer (from [`super::phys::to_virt`]):
//! the only way from one to the others is
//! [`AddressSpace::frame_of`](super::space::AddressSpace::frame_of), which
//! checks the VM's page tables and rights.

use super::frame::FRAME_SIZE;

/// An address in a VM's flat address space.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GuestAddr(u64);

impl GuestAddr {
    /// The flat address `addr` (any value: nothing is checked yet).
    pub const fn new(addr: u64) -> GuestAddr {
        GuestAddr(addr)
    }

    /// The number.
    pub const fn as_u64(self) -> u64 {
        self.0
    }

    /// The start of its page.
    pub const fn page(self) -> GuestAddr {
        GuestAddr(self.0 & !(FRAME_SIZE - 1))
    }

    /// Its offset within its page.
    pub const fn page_offset(self) -> u64 {
        self.0 % FRAME_SIZE
    }

    /// `len` bytes further on, unless that overflows.
    pub fn checked_add(self, len: u64) -> Option<GuestAddr> {
        self.0.checked_add(len).map(GuestAddr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_offsets_and_overflow() {
        let a = GuestAddr::new(0x1234_5678);
        assert_eq!((a.page(), a.page_offset()), (GuestAddr::new(0x1234_5000), 0x678));
        assert_eq!(GuestAddr::new(u64::MAX - 1).checked_add(2), None);
        assert_eq!(a.checked_add(8).map(GuestAddr::as_u64), Some(0x1234_5680));
    }
}
