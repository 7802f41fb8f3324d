//! The virtual Ethernet switch: the table of VM addresses, the decision for
//! every frame that enters the switch from a VM or from the uplink (the
//! machine's NIC), and the frames parked for VMs (see [`parking`]).
//!
//! Pure logic, tested on the host. A VM's MAC is derived from its id
//! (`denali_abi::net`), so forwarding a unicast frame is arithmetic on its
//! destination address: no table to learn. The switch answers ARP requests
//! for VM addresses itself, so a broadcast never reaches every VM; other
//! broadcasts go to the uplink only.
//!
//! The switch enforces what the kernel assigned, as a cloud's anti-spoofing
//! does: a VM sends only ARP and IPv4, from its own MAC, and its ARP sender
//! address and IPv4 source address are its own address. Other addresses
//! may come only from the uplink, and frames from the uplink that claim a
//! VM's MAC or address are dropped.

pub mod parking;

use crate::sched::VmId;
use alloc::collections::{BTreeMap, TryReserveError};
use alloc::vec::Vec;
use denali_abi::hypercall::{FRAME_MAX, FRAME_MIN};
use denali_abi::net::{mac_of, vm_of};
pub use parking::{Parked, RX_RING_FRAMES, RX_RING_PER_SENDER, RX_RING_UPLINK, UPLINK_SENDER};
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol, EthernetRepr, Ipv4Packet,
};

/// Where a frame entered the switch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Port {
    /// From this VM's `net_send`.
    Vm(VmId),
    /// From the machine's NIC.
    Uplink,
}

impl Port {
    /// The sender id frames from this port are parked under.
    fn sender(self) -> u32 {
        match self {
            Port::Vm(id) => id,
            Port::Uplink => UPLINK_SENDER,
        }
    }
}

/// Length of the ARP replies the switch makes.
const ARP_REPLY_LEN: usize = 42;

/// What the switch decides for a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Put it in this VM's receive ring.
    ToVm(VmId),
    /// Send it out of the machine's NIC.
    ToUplink,
    /// Send this frame (the switch's own ARP answer) back where the
    /// request came from.
    Reply([u8; ARP_REPLY_LEN]),
    /// Nobody on the segment takes it.
    Drop,
}

/// What became of a frame the switch took.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivered {
    /// Offered to this VM's ring (the frame itself, or the switch's answer
    /// to it), with what the ring did with it.
    ToVm(VmId, Parked),
    /// Sent out of the machine's NIC.
    ToUplink,
    /// Nobody on the segment takes it.
    Dropped,
}

/// Why a frame from a VM was refused outright.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendError {
    /// Shorter than an Ethernet header or longer than the MTU allows.
    BadLength,
    /// A source address (MAC, ARP sender, IPv4 source) is not the
    /// sender's own: spoofing is refused.
    Spoofed,
    /// Not ARP or IPv4, or an ARP or IPv4 header cut short.
    NotIpv4,
}

/// The switch: which VM holds which IPv4 address, the frames parked for
/// VMs, and whether there is an uplink to send other traffic to.
#[derive(Debug, Default)]
pub struct Switch {
    by_ip: BTreeMap<[u8; 4], VmId>,
    /// Each VM's address (all zero: none).
    ips: Vec<[u8; 4]>,
    /// Frames delivered to VMs and not yet taken.
    pub parking: parking::Parking,
    /// Whether frames for other hosts can leave through a NIC.
    pub has_uplink: bool,
}

impl Switch {
    /// A switch that can park `frames` frames in all.
    pub fn with_budget(frames: u32) -> Result<Switch, TryReserveError> {
        Ok(Switch { parking: parking::Parking::with_slots(frames)?, ..Switch::default() })
    }

    /// Makes room for VMs with ids below `count`.
    pub fn reserve(&mut self, count: usize) -> Result<(), TryReserveError> {
        self.ips.try_reserve_exact(count.saturating_sub(self.ips.len()))?;
        self.ips.resize(self.ips.len().max(count), [0; 4]);
        self.parking.reserve(count)
    }

    /// Gives VM `vm` address `ip`; false if another VM holds it.
    pub fn attach(&mut self, ip: [u8; 4], vm: VmId) -> bool {
        if self.by_ip.contains_key(&ip) {
            return false;
        }
        if self.ips.len() <= vm as usize && self.reserve(vm as usize + 1).is_err() {
            return false;
        }
        self.by_ip.insert(ip, vm);
        self.ips[vm as usize] = ip;
        true
    }

    /// Forgets VM `vm` (it is gone): its address, if it holds `ip`, and the
    /// frames parked for it.
    pub fn detach(&mut self, ip: [u8; 4], vm: VmId) {
        if self.by_ip.get(&ip) == Some(&vm) {
            self.by_ip.remove(&ip);
            self.ips[vm as usize] = [0; 4];
        }
        self.parking.close(vm);
    }

    /// The VM holding `ip`.
    pub fn vm_at(&self, ip: [u8; 4]) -> Option<VmId> {
        self.by_ip.get(&ip).copied()
    }

    /// Takes `frame`, which entered at `from`: decides where it goes and
    /// parks it there, or hands it to `transmit` for the uplink.
    pub fn send(&mut self, from: Port, frame: &[u8], transmit: &mut dyn FnMut(&[u8])) -> Result<Delivered, SendError> {
        let room = self.parking.staging(frame.len()).ok_or(SendError::BadLength)?;
        room.copy_from_slice(frame);
        self.send_staged(from, frame.len(), transmit)
    }

    /// As [`Switch::send`], for the frame of `len` bytes already in the
    /// parking's staging slot (where a VM's frame is copied from its
    /// memory): a frame for a VM is parked without another copy.
    pub fn send_staged(
        &mut self,
        from: Port,
        len: usize,
        transmit: &mut dyn FnMut(&[u8]),
    ) -> Result<Delivered, SendError> {
        let frame = self.parking.staged(len).ok_or(SendError::BadLength)?;
        Ok(match (self.forward(from, frame)?, from) {
            (Action::ToVm(to), _) => Delivered::ToVm(to, self.parking.park_staged(from.sender(), to, len)),
            (Action::Reply(reply), Port::Vm(asker)) => Delivered::ToVm(asker, self.parking.park(asker, asker, &reply)),
            (Action::Reply(reply), Port::Uplink) => {
                transmit(&reply);
                Delivered::ToUplink
            }
            (Action::ToUplink, _) => {
                transmit(frame);
                Delivered::ToUplink
            }
            (Action::Drop, _) => Delivered::Dropped,
        })
    }

    /// Decides what happens to `frame`, which entered at `from`.
    pub fn forward(&self, from: Port, frame: &[u8]) -> Result<Action, SendError> {
        if !(FRAME_MIN..=FRAME_MAX).contains(&frame.len()) {
            return Err(SendError::BadLength);
        }
        match from {
            Port::Vm(sender) => self.check_source(sender, frame)?,
            Port::Uplink if self.claims_a_vm(frame) => return Ok(Action::Drop),
            Port::Uplink => {}
        }
        let dst: [u8; 6] = frame[0..6].try_into().expect("six bytes");
        if let Some(vm) = vm_of(&dst) {
            return Ok(Action::ToVm(vm));
        }
        if dst[0] & 1 != 0 {
            // Broadcast or multicast: an ARP request for a VM is answered
            // here; anything else may only concern hosts beyond the uplink.
            if let Some(reply) = self.answer_arp(frame) {
                return Ok(Action::Reply(reply));
            }
        }
        Ok(match from {
            Port::Vm(_) if self.has_uplink => Action::ToUplink,
            _ => Action::Drop,
        })
    }

    /// Refuses a frame from VM `sender` unless every source address in it
    /// is the sender's own and it is ARP or IPv4.
    fn check_source(&self, sender: VmId, frame: &[u8]) -> Result<(), SendError> {
        if frame[6..12] != mac_of(sender) {
            return Err(SendError::Spoofed);
        }
        let own_ip = self.ips.get(sender as usize).copied().unwrap_or_default();
        match source_addresses(frame).ok_or(SendError::NotIpv4)? {
            Source::Arp { mac, ip } if mac == mac_of(sender) && (ip == own_ip || ip == [0; 4]) => Ok(()),
            Source::Ipv4(ip) if ip == own_ip && ip != [0; 4] => Ok(()),
            _ => Err(SendError::Spoofed),
        }
    }

    /// Whether a frame from the uplink claims to come from a VM (its MAC,
    /// or an address a VM holds).
    fn claims_a_vm(&self, frame: &[u8]) -> bool {
        let src: [u8; 6] = frame[6..12].try_into().expect("six bytes");
        if vm_of(&src).is_some() {
            return true;
        }
        match source_addresses(frame) {
            Some(Source::Arp { mac, ip }) => vm_of(&mac).is_some() || self.vm_at(ip).is_some(),
            Some(Source::Ipv4(ip)) => self.vm_at(ip).is_some(),
            None => false,
        }
    }

    /// The ARP reply for `frame`, if it is a request for a VM's address.
    fn answer_arp(&self, frame: &[u8]) -> Option<[u8; ARP_REPLY_LEN]> {
        let eth = EthernetFrame::new_checked(frame).ok()?;
        if eth.ethertype() != EthernetProtocol::Arp {
            return None;
        }
        let request = ArpRepr::parse(&ArpPacket::new_checked(eth.payload()).ok()?).ok()?;
        let ArpRepr::EthernetIpv4 {
            operation: ArpOperation::Request,
            source_hardware_addr,
            source_protocol_addr,
            target_protocol_addr,
            ..
        } = request
        else {
            return None;
        };
        let vm = self.vm_at(target_protocol_addr.octets())?;
        let vm_mac = EthernetAddress(mac_of(vm));
        let reply = ArpRepr::EthernetIpv4 {
            operation: ArpOperation::Reply,
            source_hardware_addr: vm_mac,
            source_protocol_addr: target_protocol_addr,
            target_hardware_addr: source_hardware_addr,
            target_protocol_addr: source_protocol_addr,
        };
        let header =
            EthernetRepr { src_addr: vm_mac, dst_addr: source_hardware_addr, ethertype: EthernetProtocol::Arp };
        let mut out = [0u8; ARP_REPLY_LEN];
        let mut eth = EthernetFrame::new_unchecked(&mut out[..]);
        header.emit(&mut eth);
        reply.emit(&mut ArpPacket::new_unchecked(eth.payload_mut()));
        Some(out)
    }
}

/// The source addresses a frame claims above Ethernet.
enum Source {
    /// An ARP packet's sender hardware and protocol addresses.
    Arp { mac: [u8; 6], ip: [u8; 4] },
    /// An IPv4 packet's source address.
    Ipv4([u8; 4]),
}

/// The ARP sender or IPv4 source of `frame`; `None` if it is neither a
/// well-formed ARP (Ethernet/IPv4) packet nor an IPv4 packet.
fn source_addresses(frame: &[u8]) -> Option<Source> {
    let eth = EthernetFrame::new_checked(frame).ok()?;
    match eth.ethertype() {
        EthernetProtocol::Arp => match ArpRepr::parse(&ArpPacket::new_checked(eth.payload()).ok()?).ok()? {
            ArpRepr::EthernetIpv4 { source_hardware_addr, source_protocol_addr, .. } => {
                Some(Source::Arp { mac: source_hardware_addr.0, ip: source_protocol_addr.octets() })
            }
            _ => None,
        },
        EthernetProtocol::Ipv4 => Some(Source::Ipv4(Ipv4Packet::new_checked(eth.payload()).ok()?.src_addr().octets())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smoltcp::wire::Ipv4Address;

    const CLIENT: [u8; 4] = [10, 0, 2, 15];
    const SERVER: [u8; 4] = [10, 0, 2, 16];
    const HOST_MAC: [u8; 6] = [0x52, 0x54, 0, 1, 2, 3];

    /// An IPv4 frame (an empty UDP-less packet: only the header matters).
    fn ipv4(dst: [u8; 6], src: [u8; 6], from: [u8; 4], to: [u8; 4]) -> Vec<u8> {
        let mut f = alloc::vec![0u8; 14 + 20];
        f[0..6].copy_from_slice(&dst);
        f[6..12].copy_from_slice(&src);
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        let mut packet = Ipv4Packet::new_unchecked(&mut f[14..]);
        packet.set_version(4);
        packet.set_header_len(20);
        packet.set_total_len(20);
        packet.set_hop_limit(64);
        packet.set_src_addr(Ipv4Address::from(from));
        packet.set_dst_addr(Ipv4Address::from(to));
        packet.fill_checksum();
        f
    }

    fn arp(operation: ArpOperation, dst: [u8; 6], from_mac: [u8; 6], from_ip: [u8; 4], target_ip: [u8; 4]) -> Vec<u8> {
        let packet = ArpRepr::EthernetIpv4 {
            operation,
            source_hardware_addr: EthernetAddress(from_mac),
            source_protocol_addr: Ipv4Address::from(from_ip),
            target_hardware_addr: EthernetAddress([0; 6]),
            target_protocol_addr: Ipv4Address::from(target_ip),
        };
        let header = EthernetRepr {
            src_addr: EthernetAddress(from_mac),
            dst_addr: EthernetAddress(dst),
            ethertype: EthernetProtocol::Arp,
        };
        let mut out = alloc::vec![0u8; header.buffer_len() + packet.buffer_len()];
        let mut eth = EthernetFrame::new_unchecked(&mut out[..]);
        header.emit(&mut eth);
        packet.emit(&mut ArpPacket::new_unchecked(eth.payload_mut()));
        out
    }

    fn arp_request(from_mac: [u8; 6], from_ip: [u8; 4], target_ip: [u8; 4]) -> Vec<u8> {
        arp(ArpOperation::Request, [0xff; 6], from_mac, from_ip, target_ip)
    }

    fn switch() -> Switch {
        let mut switch = Switch::with_budget(64).unwrap();
        switch.reserve(8).unwrap();
        assert!(switch.attach(CLIENT, 0));
        assert!(switch.attach(SERVER, 1));
        assert!(!switch.attach(SERVER, 2), "an address has one holder");
        switch
    }

    #[test]
    fn frames_go_to_the_vm_their_address_names() {
        let switch = switch();
        let f = ipv4(mac_of(7), mac_of(1), SERVER, [10, 0, 2, 22]);
        assert_eq!(switch.forward(Port::Vm(1), &f), Ok(Action::ToVm(7)));
        let from_host = ipv4(mac_of(7), HOST_MAC, [10, 0, 2, 2], [10, 0, 2, 22]);
        assert_eq!(switch.forward(Port::Uplink, &from_host), Ok(Action::ToVm(7)));
    }

    #[test]
    fn other_hosts_are_reached_through_the_uplink_only() {
        let mut switch = switch();
        let outside = ipv4(HOST_MAC, mac_of(1), SERVER, [10, 0, 2, 2]);
        let broadcast = ipv4([0xff; 6], mac_of(1), SERVER, [10, 0, 2, 255]);
        assert_eq!(switch.forward(Port::Vm(1), &outside), Ok(Action::Drop));
        assert_eq!(switch.forward(Port::Vm(1), &broadcast), Ok(Action::Drop));
        switch.has_uplink = true;
        assert_eq!(switch.forward(Port::Vm(1), &outside), Ok(Action::ToUplink));
        assert_eq!(switch.forward(Port::Vm(1), &broadcast), Ok(Action::ToUplink));
        // Nothing from the uplink is sent back out of it, or flooded.
        let from_host = ipv4(HOST_MAC, [0x52, 0x54, 0, 9, 9, 9], [10, 0, 2, 3], [10, 0, 2, 2]);
        assert_eq!(switch.forward(Port::Uplink, &from_host), Ok(Action::Drop));
        let host_broadcast = ipv4([0xff; 6], HOST_MAC, [10, 0, 2, 2], [10, 0, 2, 255]);
        assert_eq!(switch.forward(Port::Uplink, &host_broadcast), Ok(Action::Drop));
    }

    #[test]
    fn the_switch_answers_arp_for_vm_addresses() {
        let mut switch = switch();
        let asker = mac_of(0);
        let mut wire = Vec::new();
        let delivered = switch.send(Port::Vm(0), &arp_request(asker, CLIENT, SERVER), &mut |f| wire.push(f.to_vec()));
        assert_eq!(delivered, Ok(Delivered::ToVm(0, Parked::Queued)), "the answer goes to the asker");
        let reply = switch.parking.pop(0, |f| f.to_vec()).unwrap();
        let eth = EthernetFrame::new_checked(&reply[..]).unwrap();
        assert_eq!(eth.dst_addr().0, asker);
        let arp = ArpRepr::parse(&ArpPacket::new_checked(eth.payload()).unwrap()).unwrap();
        let ArpRepr::EthernetIpv4 { operation, source_hardware_addr, source_protocol_addr, .. } = arp else { panic!() };
        assert_eq!(operation, ArpOperation::Reply);
        assert_eq!(source_hardware_addr.0, mac_of(1));
        assert_eq!(source_protocol_addr, Ipv4Address::from(SERVER));
        // From outside too, answered out of the NIC; an address nobody
        // holds is not answered.
        let delivered =
            switch.send(Port::Uplink, &arp_request(HOST_MAC, [10, 0, 2, 2], CLIENT), &mut |f| wire.push(f.to_vec()));
        assert_eq!((delivered, wire.len()), (Ok(Delivered::ToUplink), 1));
        assert_eq!(
            switch.forward(Port::Uplink, &arp_request(HOST_MAC, [10, 0, 2, 2], [10, 0, 2, 99])),
            Ok(Action::Drop)
        );
    }

    #[test]
    fn spoofed_and_malformed_frames_are_refused() {
        let switch = switch();
        let to_vm7 = |src_mac, src_ip| ipv4(mac_of(7), src_mac, src_ip, [10, 0, 2, 22]);
        assert_eq!(switch.forward(Port::Vm(1), &to_vm7(mac_of(2), SERVER)), Err(SendError::Spoofed));
        assert_eq!(
            switch.forward(Port::Vm(1), &to_vm7(mac_of(1), CLIENT)),
            Err(SendError::Spoofed),
            "forged IPv4 source"
        );
        let mut short = to_vm7(mac_of(1), SERVER);
        short.truncate(13);
        assert_eq!(switch.forward(Port::Vm(1), &short), Err(SendError::BadLength));
        assert_eq!(switch.forward(Port::Vm(1), &alloc::vec![0; 1515]), Err(SendError::BadLength));
        // Neither ARP nor IPv4 (here IPv6), or a header cut short.
        let mut ipv6 = to_vm7(mac_of(1), SERVER);
        ipv6[12..14].copy_from_slice(&[0x86, 0xdd]);
        assert_eq!(switch.forward(Port::Vm(1), &ipv6), Err(SendError::NotIpv4));
        let mut cut = arp_request(mac_of(0), CLIENT, SERVER);
        cut.truncate(30);
        assert_eq!(switch.forward(Port::Vm(0), &cut), Err(SendError::NotIpv4));
        // A VM without an address sends no IPv4 at all.
        assert_eq!(switch.forward(Port::Vm(5), &ipv4(mac_of(7), mac_of(5), [0; 4], SERVER)), Err(SendError::Spoofed));
    }

    #[test]
    fn a_vm_cannot_claim_another_vms_address_in_arp() {
        let switch = switch();
        // VM 2 (an attacker) tells the client that the server's address
        // is at its own MAC, unicast: refused.
        let poison = arp(ArpOperation::Reply, mac_of(0), mac_of(2), SERVER, CLIENT);
        assert_eq!(switch.forward(Port::Vm(2), &poison), Err(SendError::Spoofed));
        // Nor may the ARP sender MAC differ from the frame's.
        let mut switch = switch;
        assert!(switch.attach([10, 0, 2, 17], 2));
        let mismatched = arp(ArpOperation::Reply, mac_of(0), mac_of(2), [10, 0, 2, 17], CLIENT);
        let mut forged_mac = mismatched.clone();
        forged_mac[22..28].copy_from_slice(&mac_of(1));
        assert_eq!(switch.forward(Port::Vm(2), &forged_mac), Err(SendError::Spoofed));
        // Its own address, and probes from 0.0.0.0, pass.
        assert_eq!(switch.forward(Port::Vm(2), &mismatched), Ok(Action::ToVm(0)));
        let probe = arp(ArpOperation::Request, mac_of(0), mac_of(2), [0; 4], CLIENT);
        assert_eq!(switch.forward(Port::Vm(2), &probe), Ok(Action::ToVm(0)));
    }

    #[test]
    fn the_wire_cannot_pose_as_a_vm() {
        let switch = switch();
        let as_vm_mac = ipv4(mac_of(0), mac_of(1), [10, 0, 2, 2], CLIENT);
        assert_eq!(switch.forward(Port::Uplink, &as_vm_mac), Ok(Action::Drop));
        let as_vm_ip = ipv4(mac_of(0), HOST_MAC, SERVER, CLIENT);
        assert_eq!(switch.forward(Port::Uplink, &as_vm_ip), Ok(Action::Drop));
        let poison = arp(ArpOperation::Reply, mac_of(0), HOST_MAC, SERVER, CLIENT);
        assert_eq!(switch.forward(Port::Uplink, &poison), Ok(Action::Drop));
        let honest = ipv4(mac_of(0), HOST_MAC, [10, 0, 2, 2], CLIENT);
        assert_eq!(switch.forward(Port::Uplink, &honest), Ok(Action::ToVm(0)));
    }

    #[test]
    fn a_flood_from_the_wire_to_idle_vms_stays_within_the_pool() {
        // 6,400 frames over the uplink to 100 VMs that never read.
        let mut switch = Switch::with_budget(1000).unwrap();
        switch.reserve(100).unwrap();
        for vm in 0..100 {
            assert!(switch.attach([10, 0, 3, vm as u8], vm));
        }
        let mut queued = 0;
        for n in 0..6400u32 {
            let to = n % 100;
            let f = ipv4(mac_of(to), HOST_MAC, [10, 0, 2, 2], [10, 0, 3, to as u8]);
            if let Ok(Delivered::ToVm(_, Parked::Queued | Parked::Evicted(_))) =
                switch.send(Port::Uplink, &f, &mut |_| ())
            {
                queued += 1;
            }
        }
        assert_eq!(switch.parking.parked(), 1000, "the pool is full, never more");
        assert!(queued >= 1000);
    }

    #[test]
    fn detaching_a_vm_frees_its_parked_frames() {
        let mut switch = switch();
        let f = ipv4(mac_of(1), mac_of(0), CLIENT, SERVER);
        for _ in 0..10 {
            switch.send(Port::Vm(0), &f, &mut |_| ()).unwrap();
        }
        assert_eq!(switch.parking.parked(), 10);
        switch.detach(SERVER, 1);
        assert_eq!(switch.parking.parked(), 0);
        assert_eq!(switch.vm_at(SERVER), None);
    }
}
