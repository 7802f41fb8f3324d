//! The virtual Ethernet switch: each VM's receive ring, the table of VM
//! addresses, and the decision for every frame that enters the switch from
//! a VM or from the uplink (the machine's NIC).
//!
//! Pure logic, tested on the host. A VM's MAC is derived from its id
//! (`denali_abi::net`), so forwarding a unicast frame is arithmetic on its
//! destination address: no table to learn. The switch answers ARP requests
//! for VM addresses itself, so a broadcast never reaches every VM; other
//! broadcasts go to the uplink only. Rings are bounded: a frame for a full
//! ring is dropped, never queued, so no VM can make the kernel or another VM
//! wait.

use alloc::collections::{BTreeMap, VecDeque};
use alloc::vec::Vec;
use denali_abi::hypercall::{FRAME_MAX, FRAME_MIN};
use denali_abi::net::{mac_of, vm_of};
use smoltcp::wire::{ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol, EthernetRepr};

/// Frames a VM's receive ring holds before it drops.
pub const RX_RING_FRAMES: usize = 256;
/// Frames of one sender a ring holds: a flooding sender fills its share
/// and is dropped from then on, leaving room for everyone else's.
pub const RX_RING_PER_SENDER: u16 = (RX_RING_FRAMES / 4) as u16;
/// The sender id of frames from the uplink (VM ids are below 2^24).
pub const UPLINK_SENDER: u32 = u32::MAX;

/// A VM's receive ring.
#[derive(Debug, Default)]
pub struct RxRing {
    frames: VecDeque<(u32, Vec<u8>)>,
    /// Frames each sender has in the ring.
    held: BTreeMap<u32, u16>,
    /// Frames dropped because the ring, or the sender's share, was full.
    pub dropped: u64,
}

impl RxRing {
    /// Queues a frame from `sender`; returns false (and counts a drop) if
    /// the ring or the sender's share of it is full.
    pub fn push(&mut self, sender: u32, frame: Vec<u8>) -> bool {
        let held = self.held.entry(sender).or_insert(0);
        if self.frames.len() >= RX_RING_FRAMES || *held >= RX_RING_PER_SENDER {
            self.dropped += 1;
            return false;
        }
        *held += 1;
        self.frames.push_back((sender, frame));
        true
    }

    /// The oldest frame's length, if any.
    pub fn peek_len(&self) -> Option<usize> {
        self.frames.front().map(|(_, frame)| frame.len())
    }

    /// Takes the oldest frame.
    pub fn pop(&mut self) -> Option<Vec<u8>> {
        let (sender, frame) = self.frames.pop_front()?;
        if let Some(held) = self.held.get_mut(&sender) {
            *held -= 1;
            if *held == 0 {
                self.held.remove(&sender);
            }
        }
        Some(frame)
    }
}

/// Where a frame entered the switch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Port {
    /// From this VM's `net_send`.
    Vm(u32),
    /// From the machine's NIC.
    Uplink,
}

/// What the switch does with a frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Put it in this VM's receive ring.
    ToVm(u32, Vec<u8>),
    /// Send it out of the machine's NIC.
    ToUplink(Vec<u8>),
    /// Send this frame (the switch's own ARP answer) back where the
    /// request came from.
    Reply(Vec<u8>),
    /// Nobody on the segment takes it.
    Drop,
}

/// Why a frame from a VM was refused outright.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendError {
    /// Shorter than an Ethernet header or longer than the MTU allows.
    BadLength,
    /// The source address is not the sender's own: spoofing is refused.
    Spoofed,
}

/// The switch: which VM holds which IPv4 address, and whether there is an
/// uplink to send other traffic to.
#[derive(Debug, Default)]
pub struct Switch {
    by_ip: BTreeMap<[u8; 4], u32>,
    /// Whether frames for other hosts can leave through a NIC.
    pub has_uplink: bool,
}

impl Switch {
    /// Gives VM `vm` address `ip`; false if another VM holds it.
    pub fn attach(&mut self, ip: [u8; 4], vm: u32) -> bool {
        if self.by_ip.contains_key(&ip) {
            return false;
        }
        self.by_ip.insert(ip, vm);
        true
    }

    /// Forgets address `ip` if VM `vm` holds it (the VM is gone).
    pub fn detach(&mut self, ip: [u8; 4], vm: u32) {
        if self.by_ip.get(&ip) == Some(&vm) {
            self.by_ip.remove(&ip);
        }
    }

    /// The VM holding `ip`.
    pub fn vm_at(&self, ip: [u8; 4]) -> Option<u32> {
        self.by_ip.get(&ip).copied()
    }

    /// Decides what happens to `frame`, which entered at `from`.
    pub fn forward(&self, from: Port, frame: Vec<u8>) -> Result<Action, SendError> {
        if !(FRAME_MIN..=FRAME_MAX).contains(&frame.len()) {
            return Err(SendError::BadLength);
        }
        if let Port::Vm(sender) = from
            && frame[6..12] != mac_of(sender)
        {
            return Err(SendError::Spoofed);
        }
        let dst: [u8; 6] = frame[0..6].try_into().expect("six bytes");
        if let Some(vm) = vm_of(&dst) {
            return Ok(Action::ToVm(vm, frame));
        }
        if dst[0] & 1 != 0 {
            // Broadcast or multicast: an ARP request for a VM is answered
            // here; anything else may only concern hosts beyond the uplink.
            if let Some(reply) = self.answer_arp(&frame) {
                return Ok(Action::Reply(reply));
            }
        }
        Ok(match from {
            Port::Vm(_) if self.has_uplink => Action::ToUplink(frame),
            _ => Action::Drop,
        })
    }

    /// The ARP reply for `frame`, if it is a request for a VM's address.
    fn answer_arp(&self, frame: &[u8]) -> Option<Vec<u8>> {
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
        let mut out = alloc::vec![0u8; header.buffer_len() + reply.buffer_len()];
        let mut eth = EthernetFrame::new_unchecked(&mut out[..]);
        header.emit(&mut eth);
        reply.emit(&mut ArpPacket::new_unchecked(eth.payload_mut()));
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ipv4(octets: [u8; 4]) -> smoltcp::wire::Ipv4Address {
        smoltcp::wire::Ipv4Address::from(octets)
    }

    fn frame(dst: [u8; 6], src: [u8; 6], len: usize) -> Vec<u8> {
        let mut f = alloc::vec![0u8; len];
        f[0..6].copy_from_slice(&dst);
        f[6..12].copy_from_slice(&src);
        f
    }

    fn arp_request(from_mac: [u8; 6], from_ip: [u8; 4], target_ip: [u8; 4]) -> Vec<u8> {
        let request = ArpRepr::EthernetIpv4 {
            operation: ArpOperation::Request,
            source_hardware_addr: EthernetAddress(from_mac),
            source_protocol_addr: ipv4(from_ip),
            target_hardware_addr: EthernetAddress([0; 6]),
            target_protocol_addr: ipv4(target_ip),
        };
        let header = EthernetRepr {
            src_addr: EthernetAddress(from_mac),
            dst_addr: EthernetAddress::BROADCAST,
            ethertype: EthernetProtocol::Arp,
        };
        let mut out = alloc::vec![0u8; header.buffer_len() + request.buffer_len()];
        let mut eth = EthernetFrame::new_unchecked(&mut out[..]);
        header.emit(&mut eth);
        request.emit(&mut ArpPacket::new_unchecked(eth.payload_mut()));
        out
    }

    fn switch() -> Switch {
        let mut switch = Switch::default();
        assert!(switch.attach([10, 0, 2, 15], 0));
        assert!(switch.attach([10, 0, 2, 16], 1));
        assert!(!switch.attach([10, 0, 2, 16], 2), "an address has one holder");
        switch
    }

    #[test]
    fn frames_go_to_the_vm_their_address_names() {
        let switch = switch();
        let f = frame(mac_of(7), mac_of(1), 60);
        assert_eq!(switch.forward(Port::Vm(1), f.clone()), Ok(Action::ToVm(7, f.clone())));
        assert_eq!(switch.forward(Port::Uplink, f.clone()), Ok(Action::ToVm(7, f)));
    }

    #[test]
    fn other_hosts_are_reached_through_the_uplink_only() {
        let mut switch = switch();
        let outside = frame([0x52, 0x54, 0, 1, 2, 3], mac_of(1), 60);
        let broadcast = frame([0xff; 6], mac_of(1), 60);
        assert_eq!(switch.forward(Port::Vm(1), outside.clone()), Ok(Action::Drop));
        assert_eq!(switch.forward(Port::Vm(1), broadcast.clone()), Ok(Action::Drop));
        switch.has_uplink = true;
        assert_eq!(switch.forward(Port::Vm(1), outside.clone()), Ok(Action::ToUplink(outside.clone())));
        assert_eq!(switch.forward(Port::Vm(1), broadcast.clone()), Ok(Action::ToUplink(broadcast.clone())));
        // Nothing from the uplink is sent back out of it, or flooded.
        assert_eq!(switch.forward(Port::Uplink, outside), Ok(Action::Drop));
        assert_eq!(switch.forward(Port::Uplink, broadcast), Ok(Action::Drop));
    }

    #[test]
    fn the_switch_answers_arp_for_vm_addresses() {
        let switch = switch();
        let asker = mac_of(0);
        let reply = match switch.forward(Port::Vm(0), arp_request(asker, [10, 0, 2, 15], [10, 0, 2, 16])) {
            Ok(Action::Reply(reply)) => reply,
            other => panic!("{other:?}"),
        };
        let eth = EthernetFrame::new_checked(&reply[..]).unwrap();
        assert_eq!(eth.dst_addr().0, asker);
        let arp = ArpRepr::parse(&ArpPacket::new_checked(eth.payload()).unwrap()).unwrap();
        let ArpRepr::EthernetIpv4 { operation, source_hardware_addr, source_protocol_addr, .. } = arp else { panic!() };
        assert_eq!(operation, ArpOperation::Reply);
        assert_eq!(source_hardware_addr.0, mac_of(1));
        assert_eq!(source_protocol_addr, ipv4([10, 0, 2, 16]));
        // From outside too; an address nobody holds is not answered.
        let host = [0x52, 0x54, 0, 1, 2, 3];
        assert!(matches!(
            switch.forward(Port::Uplink, arp_request(host, [10, 0, 2, 2], [10, 0, 2, 15])),
            Ok(Action::Reply(_))
        ));
        assert_eq!(switch.forward(Port::Uplink, arp_request(host, [10, 0, 2, 2], [10, 0, 2, 99])), Ok(Action::Drop));
    }

    #[test]
    fn spoofed_and_malformed_frames_are_refused() {
        let switch = switch();
        assert_eq!(switch.forward(Port::Vm(1), frame(mac_of(7), mac_of(2), 60)), Err(SendError::Spoofed));
        assert_eq!(switch.forward(Port::Vm(1), frame(mac_of(7), mac_of(1), 13)), Err(SendError::BadLength));
        assert_eq!(switch.forward(Port::Vm(1), frame(mac_of(7), mac_of(1), 1515)), Err(SendError::BadLength));
        // A truncated ARP request is not answered (and does not panic).
        let mut short = arp_request(mac_of(0), [10, 0, 2, 15], [10, 0, 2, 16]);
        short.truncate(30);
        assert_eq!(switch.forward(Port::Vm(0), short), Ok(Action::Drop));
    }

    #[test]
    fn a_full_ring_drops_instead_of_growing() {
        let mut ring = RxRing::default();
        for i in 0..RX_RING_FRAMES + 10 {
            ring.push(i as u32 % 8, alloc::vec![i as u8; 20]);
        }
        assert_eq!(ring.dropped, 10);
        assert_eq!(ring.pop().map(|f| f[0]), Some(0));
    }

    #[test]
    fn a_flooding_sender_cannot_take_the_whole_ring() {
        let mut ring = RxRing::default();
        let flooded = (0..1000).filter(|_| ring.push(7, alloc::vec![0; 60])).count();
        assert_eq!(flooded, usize::from(RX_RING_PER_SENDER));
        // Everyone else still gets in.
        assert!(ring.push(1, alloc::vec![1; 60]));
        assert!(ring.push(UPLINK_SENDER, alloc::vec![2; 60]));
        // Taking the flooder's frames gives its share back.
        ring.pop();
        assert!(ring.push(7, alloc::vec![0; 60]));
        assert!(!ring.push(7, alloc::vec![0; 60]));
    }
}
