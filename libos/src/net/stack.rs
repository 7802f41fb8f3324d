//! The VM's TCP/IP stack: one smoltcp interface over the virtual NIC, the
//! set of sockets, the ports in use, and [`block_on`], which parks the
//! calling green thread until a socket is ready.
//!
//! Every socket operation polls the interface first (taking in what the NIC
//! received) and after (sending what the operation queued), so no
//! background thread is needed. A waiting thread sleeps until a frame
//! arrives or smoltcp's next timer (a retransmission, a delayed ACK) is due.

extern crate alloc;

use super::frame;
use super::listen::{self, Listeners};
use crate::io::{Error, ErrorKind, Result};
use crate::time::Instant;
use alloc::boxed::Box;
use alloc::collections::BTreeSet;
use alloc::vec::Vec;
use core::cell::RefCell;
use denali_abi::hypercall::{EVENT_NET_RX, FRAME_MAX};
use smoltcp::iface::{Config, Interface, PollIngressSingleResult, PollResult, SocketHandle, SocketSet};
use smoltcp::phy::{self, Device, DeviceCapabilities, Medium};
use smoltcp::time::Instant as NetInstant;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpCidr, Ipv4Address};

/// How long a closed stream may wait for its peer's answers before it is
/// aborted and freed.
const ORPHAN_TIMEOUT_SECS: u64 = 60;

/// First port handed out for connections and unbound sockets.
const EPHEMERAL_FIRST: u16 = 49_152;

/// The virtual NIC as a smoltcp device.
struct Vnic {
    rx: [u8; FRAME_MAX],
    /// The arrival count when the ring was last found empty: until it
    /// moves, reading the ring again would only cost a hypercall (every
    /// green thread polls the stack when it wakes).
    empty_at: Option<u64>,
    /// Listening ports whose backlog is full: SYNs for them are dropped
    /// here (see `listen`).
    full: BTreeSet<u16>,
    /// The destination port of the last TCP segment handed to smoltcp.
    last_tcp_port: Option<u16>,
}

struct RxToken<'a>(&'a [u8]);
struct TxToken;

impl phy::RxToken for RxToken<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.0)
    }
}

impl phy::TxToken for TxToken {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut buf = [0u8; FRAME_MAX];
        let len = len.min(FRAME_MAX);
        let result = f(&mut buf[..len]);
        // The switch drops what nobody takes, as a wire would; a refused
        // frame is smoltcp's bug, and TCP retransmits it anyway.
        let _ = frame::send(&buf[..len]);
        result
    }
}

impl Device for Vnic {
    type RxToken<'a> = RxToken<'a>;
    type TxToken<'a> = TxToken;

    fn receive(&mut self, _now: NetInstant) -> Option<(RxToken<'_>, TxToken)> {
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
            self.last_tcp_port = None;
            if let Some((port, syn)) = listen::tcp_destination(&self.rx[..len]) {
                if syn && self.full.contains(&port) {
                    continue;
                }
                self.last_tcp_port = Some(port);
            }
            return Some((RxToken(&self.rx[..len]), TxToken));
        }
    }

    fn transmit(&mut self, _now: NetInstant) -> Option<TxToken> {
        Some(TxToken)
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = FRAME_MAX;
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
    /// Listening ports and their backlogs.
    listeners: Listeners,
    /// This VM's address.
    pub(crate) address: Ipv4Address,
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
        let mut vnic = Vnic { rx: [0; FRAME_MAX], empty_at: None, full: BTreeSet::new(), last_tcp_port: None };
        let mut iface = Interface::new(iface_config, &mut vnic, now());
        let address = Ipv4Address::from(config.address);
        iface.update_ip_addrs(|addrs| {
            let _ = addrs.push(IpCidr::new(address.into(), config.prefix_len));
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
            listeners: Listeners::default(),
            address,
        })
    }

    /// Takes in what arrived, one packet at a time (a listener tops up its
    /// listening sockets after each), sends what is queued, runs timers,
    /// and lets go of closed streams nobody holds.
    pub(crate) fn poll(&mut self) {
        let now = now();
        self.iface.poll_maintenance(now);
        while self.iface.poll_ingress_single(now, &mut self.vnic, &mut self.sockets) != PollIngressSingleResult::None {
            if let Some(port) = self.vnic.last_tcp_port.take() {
                self.refresh_listener(port);
            }
        }
        while self.iface.poll_egress(now, &mut self.vnic, &mut self.sockets) != PollResult::None {}
        // A full backlog drops SYNs before smoltcp sees them, so no packet
        // would refresh it: look again as handshakes time out and memory
        // frees.
        let full: Vec<u16> = self.vnic.full.iter().copied().collect();
        for port in full {
            self.refresh_listener(port);
        }
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

    /// Brings listening port `port` up to date (see `listen`).
    fn refresh_listener(&mut self, port: u16) {
        if self.listeners.refresh(port, &mut self.sockets) {
            self.vnic.full.insert(port);
        } else {
            self.vnic.full.remove(&port);
        }
    }

    /// Listens on `port` (already claimed) with a backlog.
    pub(crate) fn listen(&mut self, port: u16) {
        self.listeners.open(port, &mut self.sockets);
    }

    /// Stops listening on `port` and gives it back.
    pub(crate) fn unlisten(&mut self, port: u16) {
        for handle in self.listeners.close(port, &mut self.sockets) {
            // Freed once its reset is out.
            self.orphans.push((handle, None));
        }
        self.vnic.full.remove(&port);
        self.release_port(Protocol::Tcp, port);
    }

    /// The oldest connection on listening port `port` not yet accepted.
    pub(crate) fn accept(&mut self, port: u16) -> Option<SocketHandle> {
        let handle = self.listeners.accept(port)?;
        self.refresh_listener(port);
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

    /// Binds `addr` (this VM's address or `0.0.0.0`; port 0 picks a free
    /// one) for `protocol` and returns the port.
    pub(crate) fn bind(&mut self, protocol: Protocol, addr: core::net::SocketAddrV4) -> Result<u16> {
        let ip = *addr.ip();
        if !ip.is_unspecified() && Ipv4Address::from(ip.octets()) != self.address {
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
    }
    Ok(f(slot.as_mut().expect("made above")))
}

/// Polls until `ready` has an answer, parking the calling thread between
/// tries until a frame arrives or the stack's next timer is due. Every call
/// is a scheduling point: the other ready threads run first, so one busy
/// connection cannot starve the others.
pub(crate) fn block_on<T>(mut ready: impl FnMut(&mut Stack) -> Option<Result<T>>) -> Result<T> {
    crate::thread::yield_if_others_ready();
    loop {
        let (outcome, delay) = with(|stack| {
            stack.poll();
            let outcome = ready(stack);
            if outcome.is_some() {
                // Send what the operation queued.
                stack.poll();
            }
            (outcome, stack.iface.poll_delay(now(), &stack.sockets))
        })?;
        if let Some(outcome) = outcome {
            return outcome;
        }
        match delay {
            Some(delay) => {
                let due = Instant::now().as_nanos_since_boot() + delay.total_micros() * 1000;
                crate::thread::wait_for_event_until(EVENT_NET_RX, due);
            }
            None => crate::thread::wait_for_event(EVENT_NET_RX),
        }
    }
}
