//! The virtual Ethernet segment's addressing: every VM's MAC address is
//! derived from its id, so the switch finds a frame's VM from its
//! destination address alone, without a table to learn or search.

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_addresses_round_trip_and_foreign_ones_are_not_vms() {
        for id in [0, 1, 255, 256, 65_536, MAX_VMS - 1] {
            assert_eq!(vm_of(&mac_of(id)), Some(id));
        }
        assert_eq!(vm_of(&[0xff; 6]), None);
        assert_eq!(vm_of(&[0x52, 0x54, 0, 0x12, 0x34, 0x56]), None);
    }
}
