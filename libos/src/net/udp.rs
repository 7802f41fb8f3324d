//! UDP: [`UdpSocket`], blocking and shaped like `std::net::UdpSocket`, and
//! the socket-level operations under it (which std's platform layer uses
//! with its own waits).

extern crate alloc;

use super::stack::{self, Interest, Protocol, Stack, Wait};
use super::{Ipv4Addr, SocketAddrV4, ToSocketAddr};
use crate::io::{Error, ErrorKind, Result};
use alloc::vec;
use smoltcp::iface::SocketHandle;
use smoltcp::socket::udp::{PacketBuffer, PacketMetadata, SendError, Socket};
use smoltcp::wire::{IpAddress, IpEndpoint};

/// Datagrams each direction holds.
const PACKETS: usize = 16;
/// Payload bytes each direction holds.
const BYTES: usize = 16 * 1024;

/// A UDP socket.
pub struct UdpSocket {
    handle: SocketHandle,
    port: u16,
}

impl UdpSocket {
    /// Binds `addr` (this VM's address or `0.0.0.0`; port 0 picks a free
    /// port).
    pub fn bind(addr: impl ToSocketAddr) -> Result<UdpSocket> {
        let (handle, port) = open(addr.to_socket_addr()?)?;
        Ok(UdpSocket { handle, port })
    }

    /// The address this socket is bound to.
    pub fn local_addr(&self) -> Result<SocketAddrV4> {
        stack::with(|stack| stack.local_addr(self.port))
    }

    /// Sends `buf` as one datagram to `addr`.
    pub fn send_to(&self, buf: &[u8], addr: impl ToSocketAddr) -> Result<usize> {
        send_to(self.handle, buf, addr.to_socket_addr()?, Wait::Forever)
    }

    /// Waits for a datagram, copies it into `buf` (cut to fit) and returns
    /// its length and sender.
    pub fn recv_from(&self, buf: &mut [u8]) -> Result<(usize, SocketAddrV4)> {
        recv_from(self.handle, buf, Wait::Forever, false)
    }
}

impl Drop for UdpSocket {
    fn drop(&mut self) {
        close(self.handle, self.port);
    }
}

/// Binds a UDP socket to `addr`; returns it and its port.
pub(crate) fn open(addr: SocketAddrV4) -> Result<(SocketHandle, u16)> {
    stack::with(|stack| {
        let port = stack.bind(Protocol::Udp, addr)?;
        let buffer = || PacketBuffer::new(vec![PacketMetadata::EMPTY; PACKETS], vec![0; BYTES]);
        let mut socket = Socket::new(buffer(), buffer());
        socket.bind(port).expect("port is not 0");
        Ok((stack.sockets.add(socket), port))
    })?
}

/// Sends `buf` as one datagram from `handle` to `addr`, waiting for room
/// as `wait` says.
pub(crate) fn send_to(handle: SocketHandle, buf: &[u8], addr: SocketAddrV4, wait: Wait) -> Result<usize> {
    let remote = IpEndpoint::new(IpAddress::Ipv4(addr.ip().octets().into()), addr.port());
    stack::wait(wait, Interest::UdpSend(handle), |stack| {
        match stack.sockets.get_mut::<Socket>(handle).send_slice(buf, remote) {
            Ok(()) => Some(Ok(buf.len())),
            Err(SendError::BufferFull) if buf.len() <= BYTES => None,
            Err(SendError::BufferFull) => Some(Err(Error::new(ErrorKind::InvalidInput, "the datagram is too long"))),
            Err(SendError::Unaddressable) => {
                Some(Err(Error::new(ErrorKind::InvalidInput, "cannot send to port 0 or to that address")))
            }
        }
    })
}

/// Takes a datagram from `handle` into `buf` (cut to fit; `peek` leaves
/// it queued), waiting as `wait` says; returns its length and sender.
pub(crate) fn recv_from(handle: SocketHandle, buf: &mut [u8], wait: Wait, peek: bool) -> Result<(usize, SocketAddrV4)> {
    stack::wait(wait, Interest::UdpRecv(handle), |stack| {
        let socket = stack.sockets.get_mut::<Socket>(handle);
        let (data, meta) = if peek { socket.peek().map(|(d, m)| (d, *m)).ok()? } else { socket.recv().ok()? };
        let n = data.len().min(buf.len());
        buf[..n].copy_from_slice(&data[..n]);
        let IpAddress::Ipv4(ip) = meta.endpoint.addr;
        Some(Ok((n, SocketAddrV4::new(Ipv4Addr::from(ip.octets()), meta.endpoint.port))))
    })
}

/// What a UDP socket is ready for: (reading, writing).
#[cfg_attr(not(target_os = "hermit"), allow(dead_code))] // std's platform layer uses it
pub(crate) fn readiness(stack: &mut Stack, handle: SocketHandle) -> (bool, bool) {
    let socket = stack.sockets.get::<Socket>(handle);
    (socket.can_recv(), socket.can_send())
}

/// Frees UDP socket `handle` and its `port`.
pub(crate) fn close(handle: SocketHandle, port: u16) {
    let _ = stack::with(|stack| {
        stack.sockets.remove(handle);
        stack.release_port(Protocol::Udp, port);
    });
}
