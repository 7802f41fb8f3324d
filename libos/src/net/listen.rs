//! Listening sockets with a backlog, as a Linux listener has: connections
//! that arrive before `accept` is called are queued, up to the backlog,
//! and never reset.
//!
//! smoltcp answers a SYN only with a socket in the `Listen` state and
//! resets it otherwise, and a socket takes one connection. So each
//! listening port keeps a few sockets listening and, after every packet
//! the stack takes in (it takes them one at a time for this), moves the
//! ones that connected to the ready queue and puts fresh ones in their
//! place. Once the backlog is full, SYNs for the port are dropped before
//! smoltcp sees them (see `stack::Vnic`), so clients retry as they would against a full Linux
//! backlog instead of being refused.
//!
//! smoltcp hands a segment to the first socket that takes it, and a socket
//! listening takes any SYN. So a SYN sent again (its SYN-ACK was late) can
//! reach a listening socket that comes before the one already answering
//! it, which would open a second connection with its own sequence numbers
//! and reset the client. A listening socket that took a SYN for a
//! connection another socket holds listens again before it sends anything.

extern crate alloc;

use alloc::collections::{BTreeMap, VecDeque};
use alloc::vec;
use alloc::vec::Vec;
use smoltcp::iface::{SocketHandle, SocketSet};
use smoltcp::socket::tcp::{Socket, SocketBuffer, State};
use smoltcp::wire::{EthernetFrame, EthernetProtocol, IpEndpoint, IpProtocol, Ipv4Packet, TcpPacket};

/// Connections a listener queues (connecting or connected, not yet
/// accepted) before it drops new ones.
pub const BACKLOG: usize = 1024;
/// Sockets kept in the `Listen` state while the backlog has room: the
/// stack tops them up after every packet it takes in, and a packet holds
/// one SYN, so one would do; two leave slack.
const LISTENING: usize = 2;
/// How long a connection may go without a segment from its client during
/// the handshake before its socket listens again (a client that vanished,
/// or a SYN flood, cannot hold the backlog). As long as Linux keeps a
/// half-open connection (its SYN-ACK retries span 63 s): under a burst the
/// client's ACK can wait in the queues in front of a slow VM, or be dropped
/// and come again with its request, and giving up sooner resets a client
/// that believes it is connected.
const HANDSHAKE_TIMEOUT_SECS: u64 = 75;
/// Heap the VM keeps free: no new listening socket (16 KiB of buffers
/// each) is made below it, and SYNs are dropped as if the backlog were
/// full, so a flood of connections cannot exhaust the VM's memory.
const HEAP_RESERVE: usize = 256 << 10;
/// Each connection's receive buffer.
pub(crate) const RX_BUFFER: usize = 8 * 1024;
/// Each connection's send buffer.
pub(crate) const TX_BUFFER: usize = 8 * 1024;

/// A TCP segment the stack is about to take in, as the listeners see it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Arrival {
    /// Its destination port.
    pub port: u16,
    /// For a SYN (without ACK), who sends it: a connection being opened.
    pub syn_from: Option<IpEndpoint>,
}

/// A fresh TCP socket with this VM's buffer sizes.
pub(crate) fn new_socket() -> Socket<'static> {
    Socket::new(SocketBuffer::new(vec![0; RX_BUFFER]), SocketBuffer::new(vec![0; TX_BUFFER]))
}

/// One listening port's sockets.
#[derive(Default)]
struct Port {
    /// Listening, or in the middle of a handshake.
    opening: Vec<SocketHandle>,
    /// Connected, waiting for `accept`, oldest first.
    ready: VecDeque<SocketHandle>,
    /// The sockets of `opening` that were listening when the port was last
    /// brought up to date: one of them took a SYN since if it is not now.
    listening: Vec<SocketHandle>,
}

impl Port {
    fn queued(&self) -> usize {
        self.opening.len() + self.ready.len()
    }

    fn listening(&self, sockets: &SocketSet<'static>) -> usize {
        self.opening.iter().filter(|&&h| sockets.get::<Socket>(h).state() == State::Listen).count()
    }

    /// Whether the port is as its last refresh left it, with enough
    /// sockets listening: every socket of `opening` still listens (and so
    /// `listening` holds them all). A segment that is not a SYN moves no
    /// socket out of `Listen`, so after one a refresh would change nothing.
    fn settled(&self, sockets: &SocketSet<'static>) -> bool {
        self.opening.len() >= LISTENING
            && self.listening.len() == self.opening.len()
            && self.listening(sockets) == self.opening.len()
    }
}

/// Every listening port of the VM.
#[derive(Default)]
pub(crate) struct Listeners {
    ports: BTreeMap<u16, Port>,
}

impl Listeners {
    /// Starts listening on `port`.
    pub(crate) fn open(&mut self, port: u16, sockets: &mut SocketSet<'static>) {
        let mut state = Port::default();
        top_up(port, &mut state, sockets);
        self.ports.insert(port, state);
    }

    /// Stops listening on `port`: connections not yet accepted are reset
    /// (aborted; the caller frees each socket once its reset is sent).
    pub(crate) fn close(&mut self, port: u16, sockets: &mut SocketSet<'static>) -> Vec<SocketHandle> {
        let Some(state) = self.ports.remove(&port) else { return Vec::new() };
        super::wake::wake_acceptors(port);
        let handles: Vec<SocketHandle> = state.opening.into_iter().chain(state.ready).collect();
        for &handle in &handles {
            sockets.get_mut::<Socket>(handle).abort();
        }
        handles
    }

    /// Whether no port listens.
    pub(crate) fn is_empty(&self) -> bool {
        self.ports.is_empty()
    }

    /// Whether `port` has a connection waiting for `accept`.
    #[cfg_attr(not(target_os = "hermit"), allow(dead_code))] // std's platform layer uses it
    pub(crate) fn has_pending(&self, port: u16) -> bool {
        self.ports.get(&port).is_some_and(|p| !p.ready.is_empty())
    }

    /// Takes the oldest connection on `port` waiting for `accept` (the
    /// caller refreshes the port: there is room in its backlog now).
    pub(crate) fn accept(&mut self, port: u16) -> Option<SocketHandle> {
        self.ports.get_mut(&port)?.ready.pop_front()
    }

    /// After the stack took in a packet for `port` (`syn_from`: a SYN from
    /// there): a second socket opened for a connection already held listens
    /// again, connected sockets move to the ready queue, reset ones listen
    /// again, and the port has sockets listening while its backlog has
    /// room. Returns whether the backlog is full.
    pub(crate) fn refresh(
        &mut self,
        port: u16,
        syn_from: Option<IpEndpoint>,
        sockets: &mut SocketSet<'static>,
    ) -> bool {
        let Some(state) = self.ports.get_mut(&port) else { return false };
        // The common case: a segment of a connection already accepted.
        if syn_from.is_none() && state.settled(sockets) {
            return state.queued() >= BACKLOG;
        }
        if let Some(from) = syn_from {
            forget_duplicate(port, from, &state.listening, sockets);
        }
        let queued = state.ready.len();
        {
            let mut index = 0;
            while index < state.opening.len() {
                let socket = sockets.get_mut::<Socket>(state.opening[index]);
                match socket.state() {
                    State::Listen | State::SynReceived => index += 1,
                    // Reset or timed out during the handshake: listen again.
                    State::Closed => {
                        let _ = socket.listen(port);
                        index += 1;
                    }
                    _ => {
                        socket.set_timeout(None);
                        state.ready.push_back(state.opening.swap_remove(index));
                    }
                }
            }
        }
        if state.ready.len() > queued {
            super::wake::wake_acceptors(port);
        }
        top_up(port, state, sockets);
        state.queued() >= BACKLOG || state.listening(sockets) == 0
    }
}

/// If one of `listening` just took the SYN from `from` on `port` while
/// another socket already holds that connection, makes it listen afresh
/// (replaced before it sent anything, so the client never hears of it).
fn forget_duplicate(port: u16, from: IpEndpoint, listening: &[SocketHandle], sockets: &mut SocketSet<'static>) {
    let holds = |socket: &Socket| {
        socket.remote_endpoint() == Some(from) && socket.local_endpoint().is_some_and(|local| local.port == port)
    };
    let Some(&taker) = listening.iter().find(|&&h| {
        let socket = sockets.get::<Socket>(h);
        socket.state() == State::SynReceived && holds(socket)
    }) else {
        return;
    };
    let held_elsewhere = sockets
        .iter()
        .filter(|&(handle, _)| handle != taker)
        .any(|(_, socket)| matches!(socket, smoltcp::socket::Socket::Tcp(tcp) if holds(tcp)));
    if held_elsewhere {
        *sockets.get_mut::<Socket>(taker) = listening_socket(port);
    }
}

/// A fresh socket listening on `port` (not 0), which gives up a handshake
/// that takes too long.
fn listening_socket(port: u16) -> Socket<'static> {
    let mut socket = new_socket();
    socket.listen(port).expect("a fresh socket listens on a port that is not 0");
    socket.set_timeout(Some(smoltcp::time::Duration::from_secs(HANDSHAKE_TIMEOUT_SECS)));
    socket
}

/// Adds listening sockets to `state` up to [`LISTENING`], within the
/// backlog, and notes which of its sockets listen.
fn top_up(port: u16, state: &mut Port, sockets: &mut SocketSet<'static>) {
    let mut listening = state.listening(sockets);
    while port != 0 && listening < LISTENING && state.queued() < BACKLOG && crate::heap::free() > HEAP_RESERVE {
        state.opening.push(sockets.add(listening_socket(port)));
        listening += 1;
    }
    state.listening.clear();
    state
        .listening
        .extend(state.opening.iter().copied().filter(|&h| sockets.get::<Socket>(h).state() == State::Listen));
}

/// The destination port of a TCP segment in `frame`, and for a SYN (without
/// ACK), who sends it.
pub(crate) fn tcp_arrival(frame: &[u8]) -> Option<Arrival> {
    let eth = EthernetFrame::new_checked(frame).ok()?;
    if eth.ethertype() != EthernetProtocol::Ipv4 {
        return None;
    }
    let ip = Ipv4Packet::new_checked(eth.payload()).ok()?;
    if ip.next_header() != IpProtocol::Tcp {
        return None;
    }
    let tcp = TcpPacket::new_checked(ip.payload()).ok()?;
    let syn_from = (tcp.syn() && !tcp.ack()).then(|| IpEndpoint::new(ip.src_addr().into(), tcp.src_port()));
    Some(Arrival { port: tcp.dst_port(), syn_from })
}
