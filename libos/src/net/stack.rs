//! The VM's TCP/IP stack: one smoltcp interface over the virtual NIC, the
//! set of sockets, the ports in use, and [`block_on`], which parks the
//! calling green thread until a socket is ready.
//!
//! Every socket operation polls the interface first (taking in what the NIC
//! received) and after (sending what the operation queued), so no
//! background thread is needed. A waiting thread sleeps until a frame
//! arrives or smoltcp's next timer (a retransmission, a delayed ACK) is due.
//!
//! Traffic to `127.0.0.0/8` and to the VM's own address stays inside the
//! VM, as on Linux: the device hands such frames (and the ARP requests
//! that precede them) straight back to the stack instead of the NIC.

extern crate alloc;

use super::frame;
use super::listen::{self, Listeners};
pub(crate) use super::wake::Interest;
use crate::io::{Error, ErrorKind, Result};
use crate::time::Instant;
use alloc::boxed::Box;
use alloc::collections::{BTreeSet, VecDeque};
use alloc::vec::Vec;
use core::cell::RefCell;
use denali_abi::hypercall::{EVENT_NET_RX, FRAME_MAX};
use denali_abi::net::vm_of;
use smoltcp::iface::{Config, Interface, PollIngressSingleResult, PollResult, SocketHandle, SocketSet};
use smoltcp::phy::{self, Checksum, Device, DeviceCapabilities, Medium};
use smoltcp::time::Instant as NetInstant;
use smoltcp::wire::{
    ArpPacket, EthernetAddress, EthernetFrame, EthernetProtocol, HardwareAddress, Icmpv4Packet, IpCidr, IpProtocol,
    Ipv4Address, Ipv4Packet, TcpPacket, UdpPacket,
};

/// How long a closed stream may wait for its peer's answers before it is
/// aborted and freed.
const ORPHAN_TIMEOUT_SECS: u64 = 60;

/// First port handed out for connections and unbound sockets.
const EPHEMERAL_FIRST: u16 = 49_152;

/// Frames on their way from the VM back to itself; more are dropped, as a
/// full queue would drop them (TCP sends them again).
const LOOPBACK_FRAMES: usize = 64;

/// Packets a poll takes in before it sends what they called for: under a
/// flood (a thousand clients connecting at once) the ring refills as fast
/// as it is read, and a poll that read until it was empty would answer no
/// SYN until the flood ended. The rest wait for the next poll, which is
/// due at once (as NAPI's budget does in Linux).
const INGRESS_BUDGET: usize = 32;

/// The loopback network, `127.0.0.0/8`.
const LOOPBACK: IpCidr = IpCidr::Ipv4(smoltcp::wire::Ipv4Cidr::new(Ipv4Address::new(127, 0, 0, 1), 8));

/// Frames the VM sends to itself, and what makes a frame one.
struct Loopback {
    frames: VecDeque<Vec<u8>>,
    /// Frames taken back in so far: threads waiting for the network are
    /// woken when this moves, as a frame from the NIC would wake them.
    delivered: u64,
    address: Ipv4Address,
    mac: EthernetAddress,
}

impl Loopback {
    fn is_local(&self, ip: Ipv4Address) -> bool {
        ip == self.address || LOOPBACK.contains_addr(&ip.into())
    }

    /// Takes `frame` if it is for this VM (an IPv4 packet to a local
    /// address, or an ARP packet asking for or answering one); returns
    /// whether it did.
    fn take(&mut self, frame: &[u8]) -> bool {
        let Ok(eth) = EthernetFrame::new_checked(frame) else { return false };
        let local = match eth.ethertype() {
            EthernetProtocol::Ipv4 => {
                Ipv4Packet::new_checked(eth.payload()).is_ok_and(|ip| self.is_local(ip.dst_addr()))
            }
            EthernetProtocol::Arp => ArpPacket::new_checked(eth.payload()).is_ok_and(|arp| {
                arp.target_protocol_addr().try_into().is_ok_and(|ip: [u8; 4]| self.is_local(ip.into()))
            }),
            _ => false,
        };
        if local && self.frames.len() < LOOPBACK_FRAMES {
            let mut copy = frame.to_vec();
            // Addressed to this VM's MAC, whatever smoltcp resolved.
            if eth.ethertype() == EthernetProtocol::Ipv4 {
                copy[..6].copy_from_slice(self.mac.as_bytes());
            }
            self.frames.push_back(copy);
        }
        local
    }
}

/// The virtual NIC as a smoltcp device.
struct Vnic {
    rx: [u8; FRAME_MAX],
    /// Where smoltcp writes a frame to send.
    tx: [u8; FRAME_MAX],
    /// The arrival count when the ring was last found empty: until it
    /// moves, reading the ring again would only cost a hypercall (every
    /// green thread polls the stack when it wakes).
    empty_at: Option<u64>,
    /// Listening ports whose backlog is full: SYNs for them are dropped
    /// here (see `listen`).
    full: BTreeSet<u16>,
    /// The last TCP segment handed to smoltcp.
    last_tcp: Option<listen::Arrival>,
    /// Frames sent so far.
    sent: u64,
    /// Ports listen: the TCP segments taken in matter to the listeners (a
    /// VM that only connects parses none for them).
    listening: bool,
    /// The last poll stopped at [`INGRESS_BUDGET`]: frames may be waiting
    /// that no new arrival will announce, so the next poll is due at once.
    over_budget: bool,
    loopback: Loopback,
}

struct RxToken<'a>(&'a [u8]);
/// Where smoltcp writes a frame, where frames to this VM go, and the count
/// of frames sent.
struct TxToken<'a>(&'a mut [u8; FRAME_MAX], &'a mut Loopback, &'a mut u64);

impl phy::RxToken for RxToken<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.0)
    }
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let frame = &mut self.0[..len.min(FRAME_MAX)];
        // Any byte smoltcp leaves unwritten goes out as zero, never as a
        // byte of an earlier frame. It writes headers field by field (TCP
        // option padding past the end-of-list byte, ICMP's unused word are
        // left as they were), all within the header room; past it, it
        // copies payloads whole.
        let header_room = frame.len().min(HEADER_ROOM);
        frame[..header_room].fill(0);
        let result = f(frame);
        if !self.1.take(frame) {
            if may_leave_the_machine(frame) {
                fill_checksums(frame);
            }
            // The switch drops what nobody takes, as a wire would; a refused
            // frame is smoltcp's bug, and TCP retransmits it anyway.
            let _ = frame::send(frame);
            *self.2 += 1;
        }
        result
    }
}

/// Where smoltcp may leave bytes unwritten: an Ethernet header, the
/// largest IPv4 header and the largest TCP header.
const HEADER_ROOM: usize = 14 + 60 + 60;

/// Whether `frame` may reach the uplink: all but a unicast frame to a VM,
/// which the switch only ever parks for that VM (see
/// [`denali_abi::net::vm_of`]).
fn may_leave_the_machine(frame: &[u8]) -> bool {
    frame.get(..6).and_then(|dst| dst.try_into().ok()).is_none_or(|dst: [u8; 6]| vm_of(&dst).is_none())
}

/// Fills in the IPv4 header checksum of `frame` and its TCP, UDP or ICMP
/// checksum (smoltcp leaves them zero, see [`Vnic::capabilities`]).
fn fill_checksums(frame: &mut [u8]) {
    let Ok(mut eth) = EthernetFrame::new_checked(frame) else { return };
    if eth.ethertype() != EthernetProtocol::Ipv4 {
        return;
    }
    let Ok(mut ip) = Ipv4Packet::new_checked(eth.payload_mut()) else { return };
    ip.fill_checksum();
    let (src, dst) = (ip.src_addr().into(), ip.dst_addr().into());
    let protocol = ip.next_header();
    let payload = ip.payload_mut();
    match protocol {
        IpProtocol::Tcp => {
            if let Ok(mut tcp) = TcpPacket::new_checked(payload) {
                tcp.fill_checksum(&src, &dst);
            }
        }
        IpProtocol::Udp => {
            if let Ok(mut udp) = UdpPacket::new_checked(payload) {
                udp.fill_checksum(&src, &dst);
            }
        }
        IpProtocol::Icmp => {
            if let Ok(mut icmp) = Icmpv4Packet::new_checked(payload) {
                icmp.fill_checksum();
            }
        }
        _ => {}
    }
}

/// Whether the checksums of `frame`, if it came from beyond this machine,
/// hold (the stack does not verify them itself, see
/// [`Vnic::capabilities`]).
///
/// A frame whose source is a VM's MAC came from a VM of this machine (or
/// from this VM itself, looped back): the kernel's switch takes a VM's
/// frame only with that VM's own MAC as its source and drops any frame
/// from the uplink that claims a VM's MAC. Such a frame went from memory
/// to memory, where nothing corrupts it, so its checksums prove nothing
/// (as Linux trusts a veth pair's or virtio-net's `DATA_VALID`). A frame
/// from the uplink crossed a wire: its IPv4 header and its TCP, UDP or
/// ICMP checksum are verified here, and it is dropped if one is wrong.
fn checksums_hold(frame: &[u8]) -> bool {
    let Ok(eth) = EthernetFrame::new_checked(frame) else { return true };
    if vm_of(&eth.src_addr().0).is_some() || eth.ethertype() != EthernetProtocol::Ipv4 {
        return true;
    }
    // What smoltcp cannot parse it drops anyway (fragments included).
    let Ok(ip) = Ipv4Packet::new_checked(eth.payload()) else { return true };
    if !ip.verify_checksum() {
        return false;
    }
    if ip.more_frags() || ip.frag_offset() != 0 {
        return true;
    }
    let (src, dst) = (ip.src_addr().into(), ip.dst_addr().into());
    match ip.next_header() {
        IpProtocol::Tcp => TcpPacket::new_checked(ip.payload()).ok().is_none_or(|tcp| tcp.verify_checksum(&src, &dst)),
        IpProtocol::Udp => UdpPacket::new_checked(ip.payload()).ok().is_none_or(|udp| udp.verify_checksum(&src, &dst)),
        IpProtocol::Icmp => Icmpv4Packet::new_checked(ip.payload()).ok().is_none_or(|icmp| icmp.verify_checksum()),
        _ => true,
    }
}

impl Vnic {
    /// Whether frames wait that no arrival will announce: looped back, or
    /// left by a poll's budget.
    fn frames_left(&self) -> bool {
        self.over_budget || !self.loopback.frames.is_empty()
    }

    /// Notes the TCP port of the frame now in `rx` (for the listeners);
    /// false if it is a SYN for a port whose backlog is full, or a frame
    /// from beyond the machine whose checksums are wrong.
    fn admit(&mut self, len: usize) -> bool {
        if !checksums_hold(&self.rx[..len]) {
            self.last_tcp = None;
            return false;
        }
        self.last_tcp = if self.listening { listen::tcp_arrival(&self.rx[..len]) } else { None };
        match self.last_tcp {
            Some(arrival) if arrival.syn_from.is_some() && self.full.contains(&arrival.port) => {
                self.last_tcp = None;
                false
            }
            _ => true,
        }
    }
}

impl Device for Vnic {
    type RxToken<'a> = RxToken<'a>;
    type TxToken<'a> = TxToken<'a>;

    fn receive(&mut self, _now: NetInstant) -> Option<(RxToken<'_>, TxToken<'_>)> {
        while let Some(looped) = self.loopback.frames.pop_front() {
            self.loopback.delivered += 1;
            let len = looped.len().min(FRAME_MAX);
            self.rx[..len].copy_from_slice(&looped[..len]);
            if self.admit(len) {
                return Some((RxToken(&self.rx[..len]), TxToken(&mut self.tx, &mut self.loopback, &mut self.sent)));
            }
        }
        if let Some(seen) = self.empty_at
            && !super::frames_may_wait(seen)
        {
            return None;
        }
        loop {
            let arrived = super::frames_arrived();
            let Ok(len) = frame::try_recv(&mut self.rx) else {
                self.empty_at = Some(arrived);
                return None;
            };
            if self.admit(len) {
                return Some((RxToken(&self.rx[..len]), TxToken(&mut self.tx, &mut self.loopback, &mut self.sent)));
            }
        }
    }

    fn transmit(&mut self, _now: NetInstant) -> Option<TxToken<'_>> {
        Some(TxToken(&mut self.tx, &mut self.loopback, &mut self.sent))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = FRAME_MAX;
        // smoltcp neither fills in nor verifies checksums. A frame that may
        // leave the machine gets them in `TxToken::consume`; a frame to a
        // VM goes from memory to memory, and its receiver trusts it as
        // this one trusts a VM's (`checksums_hold`). Frames from beyond
        // the machine are verified by `admit`.
        caps.checksum.ipv4 = Checksum::None;
        caps.checksum.tcp = Checksum::None;
        caps.checksum.udp = Checksum::None;
        caps.checksum.icmpv4 = Checksum::None;
        caps
    }
}

/// The stack: interface, sockets and port bookkeeping.
pub(crate) struct Stack {
    iface: Interface,
    vnic: Vnic,
    pub(crate) sockets: SocketSet<'static>,
    /// Ports bound by TCP listeners and connections.
    tcp_ports: BTreeSet<u16>,
    /// Ports bound by UDP sockets.
    udp_ports: BTreeSet<u16>,
    next_ephemeral: u16,
    /// Closed streams still finishing their goodbye, with the ephemeral
    /// port to give back once they are done.
    orphans: Vec<(SocketHandle, Option<u16>)>,
    /// Connections whose reading half this VM shut: reads give the end of
    /// the stream (see `tcp::shutdown_read`).
    pub(crate) read_shut: Vec<SocketHandle>,
    /// Listening ports and their backlogs.
    listeners: Listeners,
    /// This VM's address.
    pub(crate) address: Ipv4Address,
    /// Frames were taken in and the egress that follows was put off, for
    /// the threads they woke to add their answers first (see
    /// [`take_in_frames`]); the next scheduling point sends it.
    egress_owed: bool,
    /// The operation that just succeeded only read: its egress may wait
    /// for the next operation or scheduling point (see [`Stack::defer_egress`]).
    egress_may_wait: bool,
    /// A read put the egress off and nothing has been sent since: the
    /// next read does not put it off again.
    read_deferred: bool,
}

/// Which port table.
#[derive(Clone, Copy)]
pub(crate) enum Protocol {
    Tcp,
    Udp,
}

fn now() -> NetInstant {
    NetInstant::from_micros((Instant::now().as_nanos_since_boot() / 1000) as i64)
}

impl Stack {
    fn new() -> Result<Stack> {
        let info = crate::vm::info();
        let config = info.ipv4;
        if !config.is_configured() {
            return Err(Error::new(
                ErrorKind::NetworkUnreachable,
                "this VM has no IPv4 address: give it one with `[network] ip` in Denali.toml",
            ));
        }
        let mac = EthernetAddress(crate::vm::mac());
        let mut iface_config = Config::new(HardwareAddress::Ethernet(mac));
        // SAFETY: rdtsc is allowed in ring 3 (the kernel leaves CR4.TSD clear).
        iface_config.random_seed = unsafe { core::arch::x86_64::_rdtsc() } ^ u64::from(info.vm_id) << 40;
        let address = Ipv4Address::from(config.address);
        let loopback = Loopback { frames: VecDeque::new(), delivered: 0, address, mac };
        let mut vnic = Vnic {
            rx: [0; FRAME_MAX],
            tx: [0; FRAME_MAX],
            empty_at: None,
            full: BTreeSet::new(),
            last_tcp: None,
            sent: 0,
            listening: false,
            over_budget: false,
            loopback,
        };
        let mut iface = Interface::new(iface_config, &mut vnic, now());
        iface.update_ip_addrs(|addrs| {
            let _ = addrs.push(IpCidr::new(address.into(), config.prefix_len));
            let _ = addrs.push(LOOPBACK);
        });
        if config.gateway != [0; 4] {
            let _ = iface.routes_mut().add_default_ipv4_route(Ipv4Address::from(config.gateway));
        }
        Ok(Stack {
            iface,
            vnic,
            sockets: SocketSet::new(Vec::new()),
            tcp_ports: BTreeSet::new(),
            udp_ports: BTreeSet::new(),
            next_ephemeral: EPHEMERAL_FIRST,
            orphans: Vec::new(),
            read_shut: Vec::new(),
            listeners: Listeners::default(),
            address,
            egress_owed: false,
            egress_may_wait: false,
            read_deferred: false,
        })
    }

    /// Takes in what arrived, one packet at a time (a listener tops up its
    /// listening sockets after each), sends what is queued, runs timers,
    /// and lets go of closed streams nobody holds.
    pub(crate) fn poll(&mut self) {
        let now = now();
        self.take_in(now);
        self.send_out(now);
    }

    /// The first half of a poll: the interface's upkeep and the frames
    /// that arrived, within [`INGRESS_BUDGET`].
    fn take_in(&mut self, now: NetInstant) {
        self.iface.poll_maintenance(now);
        let mut taken = 0;
        while taken < INGRESS_BUDGET
            && self.iface.poll_ingress_single(now, &mut self.vnic, &mut self.sockets) != PollIngressSingleResult::None
        {
            taken += 1;
            if let Some(arrival) = self.vnic.last_tcp.take() {
                self.refresh_listener(arrival.port, arrival.syn_from);
            }
        }
        self.vnic.over_budget = taken == INGRESS_BUDGET;
    }

    /// The second half: sends what the sockets have queued (ACKs, data,
    /// retransmissions) and runs their timers, takes in the frames the VM
    /// sent itself (a conversation with itself settles in a few rounds,
    /// bounded all the same), refreshes full backlogs and frees finished
    /// streams.
    fn send_out(&mut self, now: NetInstant) {
        self.egress_owed = false;
        self.read_deferred = false;
        for round in 0..LOOPBACK_FRAMES {
            if round > 0 {
                self.take_in(now);
            }
            while self.iface.poll_egress(now, &mut self.vnic, &mut self.sockets) != PollResult::None {}
            if self.vnic.loopback.frames.is_empty() {
                break;
            }
        }
        // A full backlog drops SYNs before smoltcp sees them, so no packet
        // would refresh it: look again as handshakes time out and memory
        // frees.
        if !self.vnic.full.is_empty() {
            let full: Vec<u16> = self.vnic.full.iter().copied().collect();
            for port in full {
                self.refresh_listener(port, None);
            }
        }
        if !self.orphans.is_empty() {
            self.free_finished_orphans();
        }
    }

    /// Frames handed to the virtual NIC.
    pub(crate) fn frames_sent(&self) -> u64 {
        self.vnic.sent
    }

    /// Lets the egress after the operation that calls this (one that only
    /// read) wait for the next operation or scheduling point, so the ACK
    /// it would send alone rides on the thread's answer. A read that frees
    /// more than half the receive buffer does not call it: the peer may be
    /// waiting for that window. Only one read in a row puts it off: a
    /// thread that reads in small pieces still acknowledges as it goes.
    pub(crate) fn defer_egress(&mut self) {
        self.egress_may_wait = !self.read_deferred;
        self.read_deferred = true;
    }

    /// When the scheduler's poll must come back (see [`take_in_frames`]):
    /// at once if it left frames; at the stack's next timer if it sent
    /// frames (`sent_before` counts them) and no thread is ready to work
    /// that timer out.
    fn scheduler_due(&mut self, sent_before: u64) -> Option<u64> {
        if self.vnic.frames_left() {
            Some(0)
        } else if self.vnic.sent != sent_before && !crate::thread::any_ready() {
            self.next_timer_in().map(|d| Instant::now().as_nanos_since_boot().saturating_add(d))
        } else {
            None
        }
    }

    /// Frees the closed streams whose goodbye is over, and their ports.
    fn free_finished_orphans(&mut self) {
        let sockets = &mut self.sockets;
        let tcp_ports = &mut self.tcp_ports;
        self.orphans.retain(|&(handle, port)| {
            let socket = sockets.get::<smoltcp::socket::tcp::Socket>(handle);
            let done =
                matches!(socket.state(), smoltcp::socket::tcp::State::Closed | smoltcp::socket::tcp::State::TimeWait);
            if done {
                sockets.remove(handle);
                if let Some(port) = port {
                    tcp_ports.remove(&port);
                }
            }
            !done
        });
    }

    /// Whether a poll could do anything now: frames may wait (looped back,
    /// left over from a poll's budget, or announced since the ring was last
    /// found empty), a socket has something to send or a timer due, a full
    /// backlog waits for room, or a closed stream for its goodbye. Every
    /// operation polls once it succeeds, so between operations only these
    /// change what a poll would do.
    fn has_work(&mut self) -> bool {
        let now = now();
        self.vnic.frames_left()
            || self.vnic.empty_at.is_none_or(super::frames_may_wait)
            || !self.vnic.full.is_empty()
            || !self.orphans.is_empty()
            || self.iface.poll_at(now, &self.sockets).is_some_and(|at| at <= now)
    }

    /// Brings listening port `port` up to date after a segment (from
    /// `syn_from`, if a SYN) or a timer (see `listen`).
    fn refresh_listener(&mut self, port: u16, syn_from: Option<smoltcp::wire::IpEndpoint>) {
        if self.listeners.refresh(port, syn_from, &mut self.sockets) {
            self.vnic.full.insert(port);
        } else {
            self.vnic.full.remove(&port);
        }
    }

    /// How long until smoltcp's next timer (a retransmission, a delayed
    /// ACK) is due, in ns; `None`: no timer.
    fn next_timer_in(&mut self) -> Option<u64> {
        self.iface.poll_delay(now(), &self.sockets).map(|d| d.total_micros() * 1000)
    }

    /// Listens on `port` (already claimed) with a backlog.
    pub(crate) fn listen(&mut self, port: u16) {
        self.listeners.open(port, &mut self.sockets);
        self.vnic.listening = true;
    }

    /// Stops listening on `port` and gives it back.
    pub(crate) fn unlisten(&mut self, port: u16) {
        for handle in self.listeners.close(port, &mut self.sockets) {
            // Freed once its reset is out.
            self.orphans.push((handle, None));
        }
        self.vnic.full.remove(&port);
        self.vnic.listening = !self.listeners.is_empty();
        self.release_port(Protocol::Tcp, port);
    }

    /// Whether listening port `port` has a connection waiting for `accept`.
    #[cfg_attr(not(target_os = "hermit"), allow(dead_code))] // std's platform layer uses it
    pub(crate) fn has_pending(&self, port: u16) -> bool {
        self.listeners.has_pending(port)
    }

    /// The oldest connection on listening port `port` not yet accepted.
    pub(crate) fn accept(&mut self, port: u16) -> Option<SocketHandle> {
        let handle = self.listeners.accept(port)?;
        self.refresh_listener(port, None);
        Some(handle)
    }

    /// The smoltcp context, for `connect`.
    pub(crate) fn context(&mut self) -> &mut smoltcp::iface::Context {
        self.iface.context()
    }

    fn ports(&mut self, protocol: Protocol) -> &mut BTreeSet<u16> {
        match protocol {
            Protocol::Tcp => &mut self.tcp_ports,
            Protocol::Udp => &mut self.udp_ports,
        }
    }

    /// Claims `port` (0: any free ephemeral port) and returns it.
    pub(crate) fn claim_port(&mut self, protocol: Protocol, port: u16) -> Result<u16> {
        if port != 0 {
            if !self.ports(protocol).insert(port) {
                return Err(Error::new(ErrorKind::AddrInUse, "that port is already bound in this VM"));
            }
            return Ok(port);
        }
        for _ in EPHEMERAL_FIRST..=u16::MAX {
            let candidate = self.next_ephemeral;
            self.next_ephemeral = if candidate == u16::MAX { EPHEMERAL_FIRST } else { candidate + 1 };
            if self.ports(protocol).insert(candidate) {
                return Ok(candidate);
            }
        }
        Err(Error::new(ErrorKind::AddrInUse, "every ephemeral port of this VM is in use"))
    }

    /// Gives `port` back.
    pub(crate) fn release_port(&mut self, protocol: Protocol, port: u16) {
        self.ports(protocol).remove(&port);
    }

    /// Hands a closed stream's socket over to finish its goodbye; it is
    /// freed, with `port`, once done.
    pub(crate) fn orphan(&mut self, handle: SocketHandle, port: Option<u16>) {
        // A peer that vanished must not pin the socket for ever.
        let socket = self.sockets.get_mut::<smoltcp::socket::tcp::Socket>(handle);
        socket.set_timeout(Some(smoltcp::time::Duration::from_secs(ORPHAN_TIMEOUT_SECS)));
        self.orphans.push((handle, port));
        self.poll();
    }

    /// Binds `addr` (this VM's address, a loopback address or `0.0.0.0`;
    /// port 0 picks a free one) for `protocol` and returns the port.
    pub(crate) fn bind(&mut self, protocol: Protocol, addr: core::net::SocketAddrV4) -> Result<u16> {
        let ip = *addr.ip();
        if !ip.is_unspecified() && !self.vnic.loopback.is_local(Ipv4Address::from(ip.octets())) {
            return Err(Error::new(ErrorKind::AddrNotAvailable, "that address is not this VM's"));
        }
        self.claim_port(protocol, addr.port())
    }

    /// This VM's socket address for `port`.
    pub(crate) fn local_addr(&self, port: u16) -> core::net::SocketAddrV4 {
        core::net::SocketAddrV4::new(core::net::Ipv4Addr::from(self.address.octets()), port)
    }
}

/// The stack of a VM: one CPU, threads never run at once, and a borrow is
/// never held across a thread switch.
struct Global(RefCell<Option<Box<Stack>>>);

// SAFETY: a Denali VM is single-threaded at the hardware level: its green
// threads run one at a time on one CPU, never concurrently.
unsafe impl Sync for Global {}

static STACK: Global = Global(RefCell::new(None));

/// Runs `f` on the stack, making it on first use.
pub(crate) fn with<R>(f: impl FnOnce(&mut Stack) -> R) -> Result<R> {
    let mut slot = STACK.0.borrow_mut();
    if slot.is_none() {
        *slot = Some(Box::new(Stack::new()?));
        // What the stack puts off sending goes before the VM stops.
        crate::process::before_exit(crate::thread::send_owed_frames);
    }
    Ok(f(slot.as_mut().expect("made above")))
}

/// How long an operation may wait for its socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Wait {
    /// Until it can be done.
    Forever,
    /// Until this global-clock time (ns), then `WouldBlock` (a timeout).
    #[cfg_attr(not(target_os = "hermit"), allow(dead_code))] // std's platform layer uses it
    Until(u64),
    /// Not at all: `WouldBlock` if it cannot be done now (non-blocking).
    Never,
}

impl Wait {
    /// A wait of at most `timeout` from now (`None`: for ever).
    #[cfg_attr(not(target_os = "hermit"), allow(dead_code))] // std's platform layer uses it
    pub(crate) fn at_most(timeout: Option<core::time::Duration>) -> Wait {
        match timeout {
            None => Wait::Forever,
            Some(t) => {
                let ns = u64::try_from(t.as_nanos()).unwrap_or(u64::MAX);
                Wait::Until(Instant::now().as_nanos_since_boot().saturating_add(ns))
            }
        }
    }
}

/// Polls until `ready` has an answer, parking the calling thread between
/// tries until a frame arrives or the stack's next timer is due. Every call
/// is a scheduling point: the other ready threads run first, so one busy
/// connection cannot starve the others.
pub(crate) fn block_on<T>(ready: impl FnMut(&mut Stack) -> Option<Result<T>>) -> Result<T> {
    wait(Wait::Forever, Interest::Any, ready)
}

/// As [`block_on`], waiting at most as long as `wait` says, and between
/// tries only until what `interest` names changes (or a timer is due).
pub(crate) fn wait<T>(
    wait: Wait,
    interest: Interest,
    mut ready: impl FnMut(&mut Stack) -> Option<Result<T>>,
) -> Result<T> {
    if wait != Wait::Never {
        crate::thread::yield_if_others_ready();
    }
    // Whether a poll just changed the socket waited on (it woke the thread):
    // then the stack has nothing more to do yet.
    let mut just_polled = false;
    loop {
        let (outcome, delay, looped, key): (_, Option<u64>, _, _) = with(|stack| {
            let delivered = stack.vnic.loopback.delivered;
            if !just_polled && stack.has_work() {
                // Only what arrived: what the stack would send now goes with
                // what the operation adds (below).
                stack.take_in(now());
                stack.egress_owed = true;
            }
            let mut outcome = ready(stack);
            if outcome.is_none() && stack.egress_owed {
                // The put-off egress may change the socket waited on (a
                // timer that closes it): look again after it.
                stack.send_out(now());
                outcome = ready(stack);
            }
            let delay = if outcome.is_some() {
                // Send what the operation queued, or leave it to the next
                // operation or scheduling point if it only read; no wait
                // follows, so no timer is looked for. Frames the poll left
                // are the scheduler's to take in.
                if core::mem::take(&mut stack.egress_may_wait) {
                    stack.egress_owed = true;
                } else {
                    stack.poll();
                }
                if stack.vnic.frames_left() {
                    crate::thread::poll_network_by(0);
                }
                None
            } else if !stack.vnic.frames_left() {
                stack.next_timer_in()
            } else {
                // Frames still on their way back to this VM (a long
                // exchange with itself), or left by a poll's budget, are
                // due at once.
                Some(0)
            };
            // After the last poll: any change from here on wakes the thread.
            let key =
                if outcome.is_none() && wait != Wait::Never { interest.register(&mut stack.sockets) } else { None };
            (outcome, delay, stack.vnic.loopback.delivered != delivered, key)
        })?;
        if looped {
            // Another thread of this VM may be waiting for what this one
            // sent itself: no NIC event will come for it.
            crate::thread::wake_event_waiters(EVENT_NET_RX);
        }
        if let Some(outcome) = outcome {
            return outcome;
        }
        let now = Instant::now().as_nanos_since_boot();
        let due = delay.map(|d| now.saturating_add(d));
        let due = match wait {
            Wait::Never => return Err(would_block()),
            Wait::Until(deadline) if now >= deadline => return Err(would_block()),
            Wait::Until(deadline) => Some(due.map_or(deadline, |d| d.min(deadline))),
            Wait::Forever => due,
        };
        just_polled = match (key, due) {
            (Some(key), due) => crate::thread::wait_for_socket(key, due) == crate::thread::Wake::Unparked,
            (None, Some(due)) => {
                crate::thread::wait_for_event_until(EVENT_NET_RX, due);
                false
            }
            (None, None) => {
                crate::thread::wait_for_event(EVENT_NET_RX);
                false
            }
        };
    }
}

/// Takes in the frames that arrived and runs the stack's timers, for the
/// scheduler before it runs the threads waiting on sockets (see
/// [`super::wake`]): the sockets the frames change wake their threads.
/// When a thread is ready, what the stack would send now (an ACK, most
/// often) waits for it: the scheduler sends it at the next scheduling
/// point ([`send_owed`]), by which time the thread may have answered and
/// the ACK rides on its answer. Otherwise it is sent now; if the poll sent
/// frames and no thread is ready, the stack's next timer (a
/// retransmission) is the scheduler's to keep: a thread that runs works it
/// out again before it waits, and a poll that sent nothing started no
/// timer a waiting thread's deadline does not already cover. If it left
/// frames (past its budget, or the VM's own on their way back), the
/// scheduler polls again once the woken threads have run.
pub(crate) fn take_in_frames() {
    let due = match STACK.0.try_borrow_mut() {
        Ok(mut slot) => slot.as_mut().and_then(|stack| {
            let (sent, now) = (stack.vnic.sent, now());
            // Put off only for threads these frames woke: a thread already
            // ready may compute for long before it schedules again.
            let none_ready = !crate::thread::any_ready();
            stack.take_in(now);
            if none_ready && crate::thread::any_ready() && !stack.vnic.frames_left() {
                stack.egress_owed = true;
                return None;
            }
            stack.send_out(now);
            stack.scheduler_due(sent)
        }),
        // Not reached (nothing schedules while the stack is in use); were it,
        // the socket waiters would poll on their own.
        Err(_) => {
            crate::thread::wake_socket_waiters(None);
            None
        }
    };
    if let Some(due) = due {
        crate::thread::poll_network_by(due);
    }
}

/// Whether frames were taken in and the egress after them put off (see
/// [`take_in_frames`]).
pub(crate) fn egress_owed() -> bool {
    STACK.0.try_borrow().is_ok_and(|slot| slot.as_ref().is_some_and(|stack| stack.egress_owed))
}

/// Sends what the stack put off sending, for the scheduler at a
/// scheduling point (see [`take_in_frames`]).
pub(crate) fn send_owed() {
    let (due, looped) = match STACK.0.try_borrow_mut() {
        Ok(mut slot) => slot.as_mut().filter(|stack| stack.egress_owed).map_or((None, false), |stack| {
            let (sent, delivered) = (stack.vnic.sent, stack.vnic.loopback.delivered);
            stack.send_out(now());
            (stack.scheduler_due(sent), stack.vnic.loopback.delivered != delivered)
        }),
        Err(_) => (None, false),
    };
    if looped {
        // As in `wait`: no NIC event announces the VM's own frames.
        crate::thread::wake_event_waiters(EVENT_NET_RX);
    }
    if let Some(due) = due {
        crate::thread::poll_network_by(due);
    }
}

/// What an operation that cannot finish now, or in its time, returns.
pub(crate) fn would_block() -> Error {
    Error::new(ErrorKind::WouldBlock, "the operation would block, or its timeout passed")
}
