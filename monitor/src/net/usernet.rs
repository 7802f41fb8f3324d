//! User-mode networking: the far end of the virtual NIC's cable is a small
//! TCP/IP host inside the monitor (smoltcp), at the VMs' gateway address.
//! Each port forward listens on 127.0.0.1 of the real machine; a connection
//! accepted there is opened again from the gateway to the VM's address and
//! port, and bytes are copied both ways. No root, no TAP device.
//!
//! Many clients at once queue as they would at a real server: the host
//! listener's backlog is the kernel's largest, and the gateway opens at
//! most [`OPENING_MAX`] connections toward the VMs at a time, taking the
//! next from the backlog as each one opens.

use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{self, Device, DeviceCapabilities, Medium};
use smoltcp::socket::tcp;
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr, IpEndpoint, Ipv4Address};
use std::collections::VecDeque;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddrV4, TcpListener, TcpStream};

/// The gateway's Ethernet address (QEMU's user-mode network uses the same).
pub const GATEWAY_MAC: [u8; 6] = [0x52, 0x55, 0x0a, 0x00, 0x02, 0x02];
/// Each forwarded connection's buffers inside the gateway.
const BUFFER: usize = 16 * 1024;
/// Connections the gateway opens toward the VMs at once.
pub const OPENING_MAX: usize = 32;
/// The host listeners' backlog (Linux caps it at `somaxconn`).
const HOST_BACKLOG: i32 = 4096;
/// First port the gateway connects from.
const EPHEMERAL_FIRST: u16 = 49_152;
/// How long a connection toward a VM may hear nothing from it before it is
/// given up: Linux's budget for SYN retries (127 s), so a client whose SYN
/// a busy VM keeps dropping (its backlog full) waits, as it would for a
/// Linux server, instead of getting an empty reply after 30 s.
const GUEST_SILENCE_MAX: smoltcp::time::Duration = smoltcp::time::Duration::from_secs(127);

/// One `-p HOST:GUEST` forward.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortForward {
    /// Port on 127.0.0.1 of the real machine.
    pub host_port: u16,
    /// The VM's address.
    pub guest_ip: Ipv4Addr,
    /// The VM's port.
    pub guest_port: u16,
}

/// Frames between the gateway's stack and the NIC.
#[derive(Default)]
struct Wire {
    from_guest: VecDeque<Vec<u8>>,
    to_guest: Vec<Vec<u8>>,
}

struct RxToken(Vec<u8>);
struct TxToken<'a>(&'a mut Vec<Vec<u8>>);

impl phy::RxToken for RxToken {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut frame = vec![0; len];
        let result = f(&mut frame);
        self.0.push(frame);
        result
    }
}

impl Device for Wire {
    type RxToken<'a> = RxToken;
    type TxToken<'a> = TxToken<'a>;

    fn receive(&mut self, _now: Instant) -> Option<(RxToken, TxToken<'_>)> {
        let frame = self.from_guest.pop_front()?;
        Some((RxToken(frame), TxToken(&mut self.to_guest)))
    }

    fn transmit(&mut self, _now: Instant) -> Option<TxToken<'_>> {
        Some(TxToken(&mut self.to_guest))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = 1514;
        caps
    }
}

/// A forwarded connection: the real machine's socket and the gateway's.
struct Connection {
    host: TcpStream,
    socket: SocketHandle,
    /// Bytes read from the host, not yet taken by the gateway's socket.
    to_guest: Vec<u8>,
    /// Bytes from the VM, not yet written to the host.
    to_host: Vec<u8>,
    host_done: bool,
    guest_done: bool,
    closed_toward_guest: bool,
}

/// The gateway.
pub struct UserNet {
    iface: Interface,
    wire: Wire,
    sockets: SocketSet<'static>,
    listeners: Vec<(TcpListener, PortForward)>,
    connections: Vec<Connection>,
    next_port: u16,
    started: std::time::Instant,
}

impl UserNet {
    /// Binds every forward's port on 127.0.0.1 (so a port in use is known
    /// before anything boots) and sets the gateway up at `gateway/prefix`.
    pub fn new(gateway: Ipv4Addr, prefix_len: u8, forwards: &[PortForward]) -> Result<Self, (u16, io::Error)> {
        let mut listeners = Vec::new();
        for forward in forwards {
            let listener = TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, forward.host_port))
                .and_then(|l| l.set_nonblocking(true).map(|()| l))
                .map_err(|e| (forward.host_port, e))?;
            // SAFETY: listen() again on our own listening socket only
            // changes its backlog.
            unsafe { libc::listen(std::os::fd::AsRawFd::as_raw_fd(&listener), HOST_BACKLOG) };
            listeners.push((listener, *forward));
        }
        let mut wire = Wire::default();
        let config = Config::new(HardwareAddress::Ethernet(EthernetAddress(GATEWAY_MAC)));
        let started = std::time::Instant::now();
        let mut iface = Interface::new(config, &mut wire, Instant::ZERO);
        iface.update_ip_addrs(|addrs| {
            let _ = addrs.push(IpCidr::new(Ipv4Address::from(gateway.octets()).into(), prefix_len));
        });
        Ok(UserNet {
            iface,
            wire,
            sockets: SocketSet::new(Vec::new()),
            listeners,
            connections: Vec::new(),
            next_port: EPHEMERAL_FIRST,
            started,
        })
    }

    fn now(&self) -> Instant {
        Instant::from_micros(self.started.elapsed().as_micros() as i64)
    }

    /// Whether any forwarded connection is open (the caller polls faster).
    pub fn busy(&self) -> bool {
        !self.connections.is_empty()
    }

    /// A frame the VMs sent toward the gateway.
    pub fn from_guest(&mut self, frame: Vec<u8>) {
        self.wire.from_guest.push_back(frame);
    }

    /// Accepts, copies and closes what it can without blocking, and
    /// returns the frames for the VMs.
    pub fn poll(&mut self) -> Vec<Vec<u8>> {
        self.accept();
        let now = self.now();
        self.iface.poll(now, &mut self.wire, &mut self.sockets);
        let mut index = 0;
        while index < self.connections.len() {
            if self.pump(index) {
                index += 1;
            } else {
                let connection = self.connections.swap_remove(index);
                self.sockets.remove(connection.socket);
            }
        }
        self.iface.poll(now, &mut self.wire, &mut self.sockets);
        std::mem::take(&mut self.wire.to_guest)
    }

    /// Connections still opening toward their VM.
    fn opening(&self) -> usize {
        self.connections
            .iter()
            .filter(|c| self.sockets.get::<tcp::Socket>(c.socket).state() == tcp::State::SynSent)
            .count()
    }

    /// A port no connection of the gateway uses.
    fn free_port(&mut self) -> Option<u16> {
        let in_use: std::collections::HashSet<u16> = self
            .connections
            .iter()
            .filter_map(|c| self.sockets.get::<tcp::Socket>(c.socket).local_endpoint().map(|e| e.port))
            .collect();
        for _ in EPHEMERAL_FIRST..=u16::MAX {
            let port = self.next_port;
            self.next_port = if port == u16::MAX { EPHEMERAL_FIRST } else { port + 1 };
            if !in_use.contains(&port) {
                return Some(port);
            }
        }
        None
    }

    fn accept(&mut self) {
        let mut room = OPENING_MAX.saturating_sub(self.opening());
        for index in 0..self.listeners.len() {
            while room > 0 {
                let Ok((host, _)) = self.listeners[index].0.accept() else { break };
                let forward = self.listeners[index].1;
                let _ = host.set_nonblocking(true);
                let _ = host.set_nodelay(true);
                let Some(port) = self.free_port() else { break };
                room -= 1;
                let mut socket =
                    tcp::Socket::new(tcp::SocketBuffer::new(vec![0; BUFFER]), tcp::SocketBuffer::new(vec![0; BUFFER]));
                socket.set_nagle_enabled(false);
                socket.set_timeout(Some(GUEST_SILENCE_MAX));
                let remote =
                    IpEndpoint::new(IpAddress::Ipv4(Ipv4Address::from(forward.guest_ip.octets())), forward.guest_port);
                if socket.connect(self.iface.context(), remote, port).is_err() {
                    continue;
                }
                let socket = self.sockets.add(socket);
                self.connections.push(Connection {
                    host,
                    socket,
                    to_guest: Vec::new(),
                    to_host: Vec::new(),
                    host_done: false,
                    guest_done: false,
                    closed_toward_guest: false,
                });
            }
        }
    }

    /// Moves bytes for connection `index`; false when it is over.
    fn pump(&mut self, index: usize) -> bool {
        let c = &mut self.connections[index];
        let socket = self.sockets.get_mut::<tcp::Socket>(c.socket);
        // Host to VM.
        if c.to_guest.is_empty() && !c.host_done && socket.may_send() {
            let mut buf = [0u8; 16 * 1024];
            match c.host.read(&mut buf) {
                Ok(0) => c.host_done = true,
                Ok(n) => c.to_guest.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(_) => {
                    socket.abort();
                    return false;
                }
            }
        }
        if !c.to_guest.is_empty() && socket.can_send() {
            let sent = socket.send_slice(&c.to_guest).unwrap_or(0);
            c.to_guest.drain(..sent);
        }
        if c.host_done && c.to_guest.is_empty() && !c.closed_toward_guest {
            socket.close();
            c.closed_toward_guest = true;
        }
        // VM to host.
        while socket.can_recv() && c.to_host.len() < BUFFER {
            let _ = socket.recv(|data| {
                c.to_host.extend_from_slice(data);
                (data.len(), ())
            });
        }
        while !c.to_host.is_empty() {
            match c.host.write(&c.to_host) {
                Ok(0) => return false,
                Ok(n) => {
                    c.to_host.drain(..n);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(_) => {
                    socket.abort();
                    return false;
                }
            }
        }
        let state = socket.state();
        if !c.guest_done && c.to_host.is_empty() && !socket.may_recv() && state != tcp::State::SynSent {
            c.guest_done = true;
            let _ = c.host.shutdown(Shutdown::Write);
        }
        // Over when the VM's side is closed (or never opened: refused) and
        // everything it sent has reached the host.
        !(state == tcp::State::Closed || state == tcp::State::TimeWait) || !c.to_host.is_empty()
    }
}
