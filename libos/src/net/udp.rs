//! UDP: [`UdpSocket`], blocking and shaped like `std::net::UdpSocket`.

extern crate alloc;

use super::stack::{self, Protocol, block_on};
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
        let addr = addr.to_socket_addr()?;
        stack::with(|stack| {
            let port = stack.bind(Protocol::Udp, addr)?;
            let buffer = || PacketBuffer::new(vec![PacketMetadata::EMPTY; PACKETS], vec![0; BYTES]);
            let mut socket = Socket::new(buffer(), buffer());
            socket.bind(port).expect("port is not 0");
            Ok(UdpSocket { handle: stack.sockets.add(socket), port })
        })?
    }

    /// The address this socket is bound to.
    pub fn local_addr(&self) -> Result<SocketAddrV4> {
        stack::with(|stack| stack.local_addr(self.port))
    }

    /// Sends `buf` as one datagram to `addr`.
    pub fn send_to(&self, buf: &[u8], addr: impl ToSocketAddr) -> Result<usize> {
        let addr = addr.to_socket_addr()?;
        let remote = IpEndpoint::new(IpAddress::Ipv4(addr.ip().octets().into()), addr.port());
        block_on(|stack| match stack.sockets.get_mut::<Socket>(self.handle).send_slice(buf, remote) {
            Ok(()) => Some(Ok(buf.len())),
            Err(SendError::BufferFull) if buf.len() <= BYTES => None,
            Err(SendError::BufferFull) => Some(Err(Error::new(ErrorKind::InvalidInput, "the datagram is too long"))),
            Err(SendError::Unaddressable) => {
                Some(Err(Error::new(ErrorKind::InvalidInput, "cannot send to port 0 or to that address")))
            }
        })
    }

    /// Waits for a datagram, copies it into `buf` (cut to fit) and returns
    /// its length and sender.
    pub fn recv_from(&self, buf: &mut [u8]) -> Result<(usize, SocketAddrV4)> {
        block_on(|stack| {
            let socket = stack.sockets.get_mut::<Socket>(self.handle);
            let (data, meta) = socket.recv().ok()?;
            let n = data.len().min(buf.len());
            buf[..n].copy_from_slice(&data[..n]);
            let IpAddress::Ipv4(ip) = meta.endpoint.addr;
            Some(Ok((n, SocketAddrV4::new(Ipv4Addr::from(ip.octets()), meta.endpoint.port))))
        })
    }
}

impl Drop for UdpSocket {
    fn drop(&mut self) {
        let _ = stack::with(|stack| {
            stack.sockets.remove(self.handle);
            stack.release_port(Protocol::Udp, self.port);
        });
    }
}
