//! TCP: [`TcpListener`] and [`TcpStream`], blocking and shaped like
//! `std::net`'s, over smoltcp's TCP sockets.
//!
//! A listener queues connections that arrive before `accept`, up to
//! [`BACKLOG`](super::BACKLOG) of them (see `listen`).

extern crate alloc;

use super::stack::{self, Interest, Protocol, Stack, Wait, block_on};
use super::{Ipv4Addr, SocketAddrV4, ToSocketAddr};
use crate::io::{self, Error, ErrorKind, Result};
use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp::{Socket, State};
use smoltcp::wire::{IpAddress, IpEndpoint};

/// Which halves of a connection [`TcpStream::shutdown`] closes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shutdown {
    /// No more reading.
    Read,
    /// No more writing: the peer reads the end of the stream.
    Write,
    /// Both.
    Both,
}

pub(crate) fn v4(endpoint: IpEndpoint) -> SocketAddrV4 {
    let IpAddress::Ipv4(ip) = endpoint.addr;
    SocketAddrV4::new(Ipv4Addr::from(ip.octets()), endpoint.port)
}

/// A TCP socket listening for connections.
pub struct TcpListener {
    port: u16,
}

impl TcpListener {
    /// Listens on `addr` (this VM's address or `0.0.0.0`; port 0 picks a
    /// free port).
    pub fn bind(addr: impl ToSocketAddr) -> Result<TcpListener> {
        let port = stack::with(|stack| stack.bind(Protocol::Tcp, addr.to_socket_addr()?))??;
        listen(port)?;
        Ok(TcpListener { port })
    }

    /// The address this listener is bound to.
    pub fn local_addr(&self) -> Result<SocketAddrV4> {
        stack::with(|stack| stack.local_addr(self.port))
    }

    /// Waits for a connection and returns it with the peer's address.
    pub fn accept(&mut self) -> Result<(TcpStream, SocketAddrV4)> {
        let (handle, peer) = accept(self.port, Wait::Forever)?;
        Ok((TcpStream { handle, ephemeral_port: None, eof: false }, peer))
    }
}

impl Drop for TcpListener {
    fn drop(&mut self) {
        unlisten(self.port);
    }
}

/// Listens on `port` (bound already) with a backlog.
pub(crate) fn listen(port: u16) -> Result<()> {
    stack::with(|stack| stack.listen(port))
}

/// Stops listening on `port` and gives the port back.
pub(crate) fn unlisten(port: u16) {
    let _ = stack::with(|stack| stack.unlisten(port));
}

/// Takes a connection from listening port `port`, waiting as `wait` says.
pub(crate) fn accept(port: u16, wait: Wait) -> Result<(SocketHandle, SocketAddrV4)> {
    stack::wait(wait, Interest::Accept(port), |stack| {
        loop {
            let handle = stack.accept(port)?;
            // A client that gave up while queued (reset, timed out) left
            // nothing to accept.
            let Some(peer) = stack.sockets.get::<Socket>(handle).remote_endpoint() else {
                stack.sockets.remove(handle);
                continue;
            };
            return Some(Ok((handle, v4(peer))));
        }
    })
}

/// Starts connecting to `addr` from a fresh ephemeral port; returns the
/// socket and the port ([`finish_connect`] waits for the handshake).
pub(crate) fn start_connect(addr: SocketAddrV4) -> Result<(SocketHandle, u16)> {
    if addr.port() == 0 || addr.ip().is_unspecified() {
        return Err(Error::new(ErrorKind::InvalidInput, "cannot connect to port 0 or to 0.0.0.0"));
    }
    stack::with(|stack| -> Result<_> {
        let port = stack.claim_port(Protocol::Tcp, 0)?;
        let mut socket = super::listen::new_socket();
        // Give up on a peer that never answers the handshake.
        socket.set_timeout(Some(smoltcp::time::Duration::from_secs(20)));
        let remote = IpEndpoint::new(IpAddress::Ipv4(addr.ip().octets().into()), addr.port());
        if socket.connect(stack.context(), remote, port).is_err() {
            stack.release_port(Protocol::Tcp, port);
            return Err(Error::new(ErrorKind::AddrNotAvailable, "no route to that address from this VM"));
        }
        let handle = stack.sockets.add(socket);
        stack.poll();
        Ok((handle, port))
    })?
}

/// Where a connection's handshake stands: `None` while it is under way.
pub(crate) fn connect_outcome(stack: &mut Stack, handle: SocketHandle) -> Option<Result<()>> {
    let socket = stack.sockets.get_mut::<Socket>(handle);
    match socket.state() {
        State::SynSent | State::SynReceived => None,
        State::Closed => {
            Some(Err(Error::new(ErrorKind::ConnectionRefused, "the connection was refused or never answered")))
        }
        _ => {
            socket.set_timeout(None);
            Some(Ok(()))
        }
    }
}

/// Waits, as `wait` says, for the handshake [`start_connect`] began.
pub(crate) fn finish_connect(handle: SocketHandle, wait: Wait) -> Result<()> {
    stack::wait(wait, Interest::TcpSend(handle), |stack| connect_outcome(stack, handle))
}

/// Reads from connection `handle` into `buf` (0: the peer's end of
/// stream), waiting as `wait` says; `peek` leaves the bytes queued.
pub(crate) fn recv(handle: SocketHandle, buf: &mut [u8], wait: Wait, peek: bool) -> Result<usize> {
    stack::wait(wait, Interest::TcpRecv(handle), |stack| {
        if stack.read_shut.contains(&handle) {
            return Some(Ok(0));
        }
        let socket = stack.sockets.get_mut::<Socket>(handle);
        if socket.can_recv() {
            // The window a read opens matters to the peer only if the
            // buffer was more than half full; otherwise the ACK may wait to
            // ride on this thread's answer. A peek opens none, and may be
            // waiting for the rest of a message the peer holds back until
            // it has that ACK.
            let window_matters = socket.recv_queue() * 2 > socket.recv_capacity();
            let got = if peek { socket.peek_slice(buf) } else { socket.recv_slice(buf) };
            if !window_matters && !peek {
                stack.defer_egress();
            }
            return Some(got.map_err(|_| reset()));
        }
        match socket.state() {
            State::Closed => Some(Err(reset())),
            _ if !socket.may_recv() => Some(Ok(0)),
            _ => None,
        }
    })
}

/// Writes some of `buf` to connection `handle`, waiting as `wait` says.
pub(crate) fn send(handle: SocketHandle, buf: &[u8], wait: Wait) -> Result<usize> {
    stack::wait(wait, Interest::TcpSend(handle), |stack| {
        let socket = stack.sockets.get_mut::<Socket>(handle);
        if socket.can_send() {
            return Some(socket.send_slice(buf).map_err(|_| reset()));
        }
        match socket.state() {
            State::Closed => Some(Err(reset())),
            _ if !socket.may_send() => {
                Some(Err(Error::new(ErrorKind::BrokenPipe, "this end of the connection was shut down")))
            }
            _ => None,
        }
    })
}

/// What a connection is ready for: (reading, writing, hung up).
#[cfg_attr(not(target_os = "hermit"), allow(dead_code))] // std's platform layer uses it
pub(crate) fn readiness(stack: &mut Stack, handle: SocketHandle) -> (bool, bool, bool) {
    let socket = stack.sockets.get::<Socket>(handle);
    let closed = socket.state() == State::Closed;
    let readable = socket.can_recv() || !socket.may_recv() || stack.read_shut.contains(&handle);
    (readable, socket.can_send() || closed, closed)
}

/// Ends this side's reading: reads, those waiting now among them, give the
/// end of the stream (as a Linux socket's do after `shutdown(SHUT_RD)`).
#[cfg_attr(not(target_os = "hermit"), allow(dead_code))] // std's platform layer uses it
pub(crate) fn shutdown_read(handle: SocketHandle) -> Result<()> {
    stack::with(|stack| {
        if !stack.read_shut.contains(&handle) {
            stack.read_shut.push(handle);
        }
    })?;
    super::wake::wake_readers(handle);
    Ok(())
}

/// Ends this side's writing: the peer reads the end of the stream.
pub(crate) fn shutdown_write(handle: SocketHandle) -> Result<()> {
    block_on(|stack| {
        stack.sockets.get_mut::<Socket>(handle).close();
        Some(Ok(()))
    })
}

/// Closes connection `handle` and frees it (with its ephemeral `port`)
/// once its goodbye is done.
pub(crate) fn close(handle: SocketHandle, port: Option<u16>) {
    let _ = stack::with(|stack| {
        stack.sockets.get_mut::<Socket>(handle).close();
        // The handle may name another connection later.
        stack.read_shut.retain(|&shut| shut != handle);
        stack.orphan(handle, port);
    });
}

/// Runs `f` on connection `handle`'s smoltcp socket.
pub(crate) fn with_socket<R>(handle: SocketHandle, f: impl FnOnce(&mut Socket<'static>) -> R) -> Result<R> {
    stack::with(|stack| f(stack.sockets.get_mut::<Socket>(handle)))
}

/// A TCP connection.
pub struct TcpStream {
    handle: SocketHandle,
    /// The port `connect` claimed, given back when the socket is freed.
    ephemeral_port: Option<u16>,
    /// Whether the peer's end of stream was seen.
    eof: bool,
}

impl TcpStream {
    /// Connects to `addr`, waiting until the connection is open.
    pub fn connect(addr: impl ToSocketAddr) -> Result<TcpStream> {
        let (handle, port) = start_connect(addr.to_socket_addr()?)?;
        let stream = TcpStream { handle, ephemeral_port: Some(port), eof: false };
        finish_connect(handle, Wait::Forever)?;
        Ok(stream)
    }

    fn with_socket<R>(&self, f: impl FnOnce(&mut Socket<'static>) -> R) -> Result<R> {
        with_socket(self.handle, f)
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> Result<SocketAddrV4> {
        self.with_socket(|s| s.remote_endpoint().map(v4))?
            .ok_or(Error::new(ErrorKind::NotConnected, "the connection is closed"))
    }

    /// This end's address.
    pub fn local_addr(&self) -> Result<SocketAddrV4> {
        self.with_socket(|s| s.local_endpoint().map(v4))?
            .ok_or(Error::new(ErrorKind::NotConnected, "the connection is closed"))
    }

    /// Sends small writes at once instead of gathering them (Nagle off).
    pub fn set_nodelay(&self, nodelay: bool) -> Result<()> {
        self.with_socket(|s| s.set_nagle_enabled(!nodelay))
    }

    /// Closes one or both halves of the connection.
    pub fn shutdown(&mut self, how: Shutdown) -> Result<()> {
        if how != Shutdown::Read {
            shutdown_write(self.handle)?;
        }
        if how != Shutdown::Write {
            self.eof = true;
        }
        Ok(())
    }
}

impl io::Read for TcpStream {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize> {
        if self.eof || buf.is_empty() {
            return Ok(0);
        }
        let n = recv(self.handle, buf, Wait::Forever, false)?;
        self.eof = n == 0;
        Ok(n)
    }
}

impl io::Write for TcpStream {
    fn write(&mut self, buf: &[u8]) -> Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        send(self.handle, buf, Wait::Forever)
    }

    fn flush(&mut self) -> Result<()> {
        stack::with(Stack::poll)
    }
}

fn reset() -> Error {
    Error::new(ErrorKind::ConnectionReset, "the peer reset the connection")
}

impl Drop for TcpStream {
    fn drop(&mut self) {
        close(self.handle, self.ephemeral_port);
    }
}
