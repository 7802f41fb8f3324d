//! The virtual Ethernet segment's addressing: every VM's MAC address is
//! derived from its id, so the switch finds a frame's VM from its
//! destination address alone, without a table to learn or search.
//!
//! A unicast frame to a VM's MAC never leaves the machine: the switch parks
//! it for that VM or drops it. It goes from memory to memory, so its IPv4,
//! TCP, UDP and ICMP checksums may be left zero by its sender (the libOS
//! leaves them so), and a receiver should not verify them on a frame whose
//! source is a VM's MAC (the switch takes a VM's frame only with its own
//! MAC as the source, and drops frames from the uplink that claim a VM's).
//! A frame that may reach the uplink carries its checksums.

/// First three bytes of every VM's MAC: locally administered, unicast, "DN".
pub const MAC_PREFIX: [u8; 3] = [0x02, 0x44, 0x4e];

/// Most VMs the addressing covers (24 bits of id).
pub const MAX_VMS: u32 = 1 << 24;

/// The MAC address of VM `id`.
pub const fn mac_of(id: u32) -> [u8; 6] {
    [MAC_PREFIX[0], MAC_PREFIX[1], MAC_PREFIX[2], (id >> 16) as u8, (id >> 8) as u8, id as u8]
}

/// The VM a MAC address belongs to, if it is a VM's.
pub fn vm_of(mac: &[u8; 6]) -> Option<u32> {
    if mac[..3] != MAC_PREFIX {
        return None;
    }
    Some(u32::from(mac[3]) << 16 | u32::from(mac[4]) << 8 | u32::from(mac[5]))
}

/// An IPv4 interface configuration: what the manifest's `[network]` table
/// says, carried in the boot bundle (for an image's first instance) and on
/// each VM's info page (for that VM).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ipv4Config {
    /// The address; `0.0.0.0` means none.
    pub address: [u8; 4],
    /// The default gateway; `0.0.0.0` means none.
    pub gateway: [u8; 4],
    /// Network prefix length (`/24` is 24).
    pub prefix_len: u8,
    /// Reserved, zero.
    pub reserved: [u8; 3],
}

const _: () = assert!(core::mem::size_of::<Ipv4Config>() == 12);

impl Ipv4Config {
    /// The configuration used when a manifest names none: QEMU's user-mode
    /// network addresses (10.0.2.15, gateway 10.0.2.2), in a /8 so that
    /// every VM a machine can hold gets an address.
    pub const DEFAULT: Ipv4Config =
        Ipv4Config { address: [10, 0, 2, 15], gateway: [10, 0, 2, 2], prefix_len: 8, reserved: [0; 3] };

    /// Whether an address is configured.
    pub fn is_configured(&self) -> bool {
        self.address != [0; 4]
    }

    /// The network mask as a number.
    pub fn mask(&self) -> u32 {
        if self.prefix_len == 0 { 0 } else { u32::MAX << (32 - u32::from(self.prefix_len.min(32))) }
    }

    /// How many consecutive addresses, from this one, stay inside the
    /// subnet without reaching its broadcast address.
    pub fn room(&self) -> u32 {
        let address = u32::from_be_bytes(self.address);
        let broadcast = address | !self.mask();
        broadcast - address
    }

    /// The configuration of instance `index`: the `index`-th address after
    /// this one, the same gateway and prefix; `None` past the subnet.
    pub fn nth(&self, index: u32) -> Option<Ipv4Config> {
        if index >= self.room() {
            return None;
        }
        let address = (u32::from_be_bytes(self.address) + index).to_be_bytes();
        Some(Ipv4Config { address, ..*self })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instances_take_consecutive_addresses_inside_the_subnet() {
        let net = Ipv4Config { address: [10, 0, 2, 250], gateway: [10, 0, 2, 2], prefix_len: 24, reserved: [0; 3] };
        assert_eq!(net.room(), 5);
        assert_eq!(net.nth(4).unwrap().address, [10, 0, 2, 254]);
        assert_eq!(net.nth(5), None);
        assert_eq!(Ipv4Config::DEFAULT.nth(300).unwrap().address, [10, 0, 3, 59]);
        let whole = Ipv4Config { prefix_len: 0, ..net };
        assert_eq!(whole.mask(), 0);
    }

    #[test]
    fn mac_addresses_round_trip_and_foreign_ones_are_not_vms() {
        for id in [0, 1, 255, 256, 65_536, MAX_VMS - 1] {
            assert_eq!(vm_of(&mac_of(id)), Some(id));
        }
        assert_eq!(vm_of(&[0xff; 6]), None);
        assert_eq!(vm_of(&[0x52, 0x54, 0, 0x12, 0x34, 0x56]), None);
    }
}
