//! BSD sockets for std's `std::net`: TCP and UDP over IPv4, blocking or
//! not, with timeouts, on the libOS's smoltcp stack (`crate::net`).
//! Connections to `127.0.0.1` and to the VM's own address stay in the VM.
//!
//! A socket is a small state machine (fresh, bound, listening, connecting,
//! connected; or UDP) behind a descriptor. No borrow of it is held while a
//! call waits, so another thread may use the same socket meanwhile (a
//! reader and a writer on one connection, as std allows).

use super::fd::{self, Entry, Object};
use super::{fail, ret_size};
use crate::io::{Error, ErrorKind};
use crate::net::stack::{self, Protocol, Wait};
use crate::net::{tcp, udp};
use alloc::rc::Rc;
use core::cell::RefCell;
use core::ffi::c_char;
use core::net::{Ipv4Addr, SocketAddrV4};
use core::time::Duration;
use hermit_abi::*;
use smoltcp::iface::SocketHandle;

extern crate alloc;

/// Where a socket stands.
enum State {
    /// Made by `socket`, maybe bound (to this port).
    Fresh {
        port: Option<u16>,
    },
    Listening {
        port: u16,
    },
    Connecting {
        handle: SocketHandle,
        port: u16,
    },
    Connected {
        handle: SocketHandle,
        ephemeral: Option<u16>,
    },
    Udp {
        handle: SocketHandle,
        port: u16,
        peer: Option<SocketAddrV4>,
    },
    /// Its connection failed; `error` says why.
    Failed,
}

/// A socket behind a descriptor.
pub(super) struct Socket {
    udp: bool,
    state: State,
    /// The address it was bound to (`0.0.0.0`: any of the VM's).
    bound_ip: Ipv4Addr,
    nonblocking: bool,
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
    /// The pending error `SO_ERROR` reports (0: none).
    error: i32,
    /// Options kept for `getsockopt` only (smoltcp has no use for them).
    keepalive: i32,
    broadcast: i32,
    linger: linger,
    ttl: i32,
}

impl Drop for Socket {
    fn drop(&mut self) {
        match self.state {
            State::Fresh { port: Some(port) } => {
                let _ = stack::with(|s| s.release_port(Protocol::Tcp, port));
            }
            State::Listening { port } => tcp::unlisten(port),
            State::Connecting { handle, port } => tcp::close(handle, Some(port)),
            State::Connected { handle, ephemeral } => tcp::close(handle, ephemeral),
            State::Udp { handle, port, .. } => udp::close(handle, port),
            State::Fresh { port: None } | State::Failed => {}
        }
    }
}

impl Socket {
    /// A blocking socket in `state` with every option at its default.
    fn new(udp: bool, state: State) -> Socket {
        Socket {
            udp,
            state,
            bound_ip: Ipv4Addr::UNSPECIFIED,
            nonblocking: false,
            read_timeout: None,
            write_timeout: None,
            error: 0,
            keepalive: 0,
            broadcast: 0,
            linger: linger::default(),
            ttl: 64,
        }
    }

    /// Gives the socket a descriptor.
    fn open(self) -> Result<i32, i32> {
        fd::insert(Object::Socket(Rc::new(RefCell::new(self))))
    }

    fn wait_read(&self) -> Wait {
        if self.nonblocking { Wait::Never } else { Wait::at_most(self.read_timeout) }
    }

    fn wait_write(&self) -> Wait {
        if self.nonblocking { Wait::Never } else { Wait::at_most(self.write_timeout) }
    }
}

/// The errno for a libOS error.
fn errno(e: Error) -> i32 {
    match e.kind() {
        ErrorKind::ConnectionRefused => ECONNREFUSED,
        ErrorKind::ConnectionReset => ECONNRESET,
        ErrorKind::TimedOut => ETIMEDOUT,
        ErrorKind::NotConnected => ENOTCONN,
        ErrorKind::AddrInUse => EADDRINUSE,
        ErrorKind::AddrNotAvailable => EADDRNOTAVAIL,
        ErrorKind::BrokenPipe => EPIPE,
        ErrorKind::InvalidInput => EINVAL,
        ErrorKind::WouldBlock => EAGAIN,
        ErrorKind::NetworkUnreachable => ENETUNREACH,
        ErrorKind::Unsupported => EOPNOTSUPP,
        _ => EIO,
    }
}

/// A result as std's platform layer wants it: the value, or -errno.
fn ret(result: Result<i32, i32>) -> i32 {
    result.unwrap_or_else(fail)
}

/// Reads a `sockaddr_in` (the only family here) from the caller.
///
/// # Safety
/// `name` is null or points to `len` readable bytes.
unsafe fn read_addr(name: *const sockaddr, len: socklen_t) -> Result<SocketAddrV4, i32> {
    if name.is_null() || (len as usize) < size_of::<sockaddr_in>() {
        return Err(EINVAL);
    }
    // SAFETY: the caller's contract; the length was checked.
    let sin = unsafe { name.cast::<sockaddr_in>().read_unaligned() };
    if i32::from(sin.sin_family) != AF_INET {
        return Err(EAFNOSUPPORT);
    }
    Ok(SocketAddrV4::new(Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes()), u16::from_be(sin.sin_port)))
}

/// Writes `addr` as a `sockaddr_in` for the caller, cut to its buffer.
///
/// # Safety
/// `name` is null, or `len` points to the buffer's length and `name` to
/// that many writable bytes.
unsafe fn write_addr(addr: SocketAddrV4, name: *mut sockaddr, len: *mut socklen_t) {
    if name.is_null() || len.is_null() {
        return;
    }
    let sin = sockaddr_in {
        sin_len: size_of::<sockaddr_in>() as u8,
        sin_family: AF_INET as sa_family_t,
        sin_port: addr.port().to_be(),
        sin_addr: in_addr { s_addr: u32::from_ne_bytes(addr.ip().octets()) },
        sin_zero: [0; 8],
    };
    // SAFETY: the caller's contract; at most the buffer's length is
    // written, and the full length is reported as BSD does.
    unsafe {
        let room = (*len as usize).min(size_of::<sockaddr_in>());
        core::ptr::copy_nonoverlapping((&raw const sin).cast::<u8>(), name.cast::<u8>(), room);
        *len = size_of::<sockaddr_in>() as socklen_t;
    }
}

fn socket_of(fd: i32) -> Result<Entry, i32> {
    match fd::get(fd)? {
        Object::Socket(entry) => Ok(entry),
        _ => Err(ENOTSOCK),
    }
}

#[unsafe(no_mangle)]
extern "C" fn sys_socket(domain: i32, type_: i32, _protocol: i32) -> i32 {
    if domain != AF_INET {
        return fail(EAFNOSUPPORT);
    }
    let udp = match type_ & !(SOCK_NONBLOCK | SOCK_CLOEXEC) {
        SOCK_STREAM => false,
        SOCK_DGRAM => true,
        _ => return fail(EPROTONOSUPPORT),
    };
    let mut socket = Socket::new(udp, State::Fresh { port: None });
    socket.nonblocking = type_ & SOCK_NONBLOCK != 0;
    ret(socket.open())
}

/// # Safety
/// `name` points to `len` readable bytes.
#[unsafe(no_mangle)]
unsafe extern "C" fn sys_bind(fd: i32, name: *const sockaddr, len: socklen_t) -> i32 {
    // SAFETY: the caller's contract.
    ret(socket_of(fd).and_then(|entry| bind(&entry, unsafe { read_addr(name, len) }?)).map(|()| 0))
}

fn bind(entry: &Entry, addr: SocketAddrV4) -> Result<(), i32> {
    let mut socket = entry.borrow_mut();
    if !matches!(socket.state, State::Fresh { port: None }) {
        return Err(EINVAL);
    }
    socket.state = if socket.udp {
        let (handle, port) = udp::open(addr).map_err(errno)?;
        State::Udp { handle, port, peer: None }
    } else {
        let port = stack::with(|s| s.bind(Protocol::Tcp, addr)).map_err(errno)?.map_err(errno)?;
        State::Fresh { port: Some(port) }
    };
    socket.bound_ip = *addr.ip();
    Ok(())
}

#[unsafe(no_mangle)]
extern "C" fn sys_listen(fd: i32, _backlog: i32) -> i32 {
    ret(socket_of(fd).and_then(|entry| {
        if matches!(entry.borrow().state, State::Fresh { port: None }) {
            bind(&entry, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0))?;
        }
        let mut socket = entry.borrow_mut();
        match socket.state {
            State::Fresh { port: Some(port) } if !socket.udp => {
                tcp::listen(port).map_err(errno)?;
                socket.state = State::Listening { port };
                Ok(0)
            }
            State::Listening { .. } => Ok(0),
            _ => Err(EINVAL),
        }
    }))
}

/// # Safety
/// `addr` is null, or `len` points to its length and it to that many
/// writable bytes.
#[unsafe(no_mangle)]
unsafe extern "C" fn sys_accept(fd: i32, addr: *mut sockaddr, len: *mut socklen_t) -> i32 {
    let accepted = socket_of(fd).and_then(|entry| {
        let (port, wait) = match entry.borrow().state {
            State::Listening { port } => (port, entry.borrow().wait_read()),
            _ => return Err(EINVAL),
        };
        let (handle, peer) = tcp::accept(port, wait).map_err(errno)?;
        Ok((Socket::new(false, State::Connected { handle, ephemeral: None }).open()?, peer))
    });
    match accepted {
        Ok((new_fd, peer)) => {
            // SAFETY: the caller's contract.
            unsafe { write_addr(peer, addr, len) };
            new_fd
        }
        Err(e) => fail(e),
    }
}

/// # Safety
/// `name` points to `len` readable bytes.
#[unsafe(no_mangle)]
unsafe extern "C" fn sys_connect(fd: i32, name: *const sockaddr, len: socklen_t) -> i32 {
    // SAFETY: the caller's contract.
    ret(socket_of(fd).and_then(|entry| connect(&entry, unsafe { read_addr(name, len) }?)).map(|()| 0))
}

fn connect(entry: &Entry, addr: SocketAddrV4) -> Result<(), i32> {
    if entry.borrow().udp {
        if matches!(entry.borrow().state, State::Fresh { port: None }) {
            bind(entry, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0))?;
        }
        return match &mut entry.borrow_mut().state {
            State::Udp { peer, .. } => {
                *peer = Some(addr);
                Ok(())
            }
            _ => Err(EINVAL),
        };
    }
    let (handle, wait) = {
        let mut socket = entry.borrow_mut();
        match socket.state {
            State::Fresh { port } => {
                // The connection takes an ephemeral port of its own.
                if let Some(port) = port {
                    let _ = stack::with(|s| s.release_port(Protocol::Tcp, port));
                }
                socket.state = State::Fresh { port: None };
                let (handle, port) = tcp::start_connect(addr).map_err(errno)?;
                socket.state = State::Connecting { handle, port };
                (handle, socket.wait_write())
            }
            State::Connecting { .. } => return Err(EALREADY),
            State::Connected { .. } => return Err(EISCONN),
            _ => return Err(EINVAL),
        }
    };
    if wait == Wait::Never {
        return Err(EINPROGRESS);
    }
    let outcome = tcp::finish_connect(handle, wait);
    settle_connect(entry, outcome.map(|()| true))
}

/// Moves a connecting socket on once its handshake has an outcome
/// (`Ok(false)`: still under way).
fn settle_connect(entry: &Entry, outcome: crate::io::Result<bool>) -> Result<(), i32> {
    let mut socket = entry.borrow_mut();
    let State::Connecting { handle, port } = socket.state else { return Ok(()) };
    match outcome {
        Ok(true) => socket.state = State::Connected { handle, ephemeral: Some(port) },
        Ok(false) => return Err(EINPROGRESS),
        Err(e) if e.kind() == ErrorKind::WouldBlock => return Err(EINPROGRESS),
        Err(e) => {
            // Dropping the state frees the socket and its port.
            tcp::close(handle, Some(port));
            socket.state = State::Failed;
            socket.error = errno(e);
            return Err(socket.error);
        }
    }
    Ok(())
}

/// Reads into `buf` from a connected TCP socket or a UDP one; returns the
/// length and the sender.
pub(super) fn receive(entry: &Entry, buf: &mut [u8], peek: bool) -> Result<(usize, Option<SocketAddrV4>), i32> {
    let (state, wait) = {
        let socket = entry.borrow();
        let state = match socket.state {
            State::Connected { handle, .. } => Ok(handle),
            State::Udp { handle, .. } => Err(handle),
            _ => return Err(ENOTCONN),
        };
        (state, socket.wait_read())
    };
    match state {
        Ok(handle) => tcp::recv(handle, buf, wait, peek).map(|n| (n, None)).map_err(errno),
        Err(handle) => udp::recv_from(handle, buf, wait, peek).map(|(n, from)| (n, Some(from))).map_err(errno),
    }
}

/// Writes `buf` to a connected TCP socket, or sends it as a datagram to
/// `to` (or the UDP socket's peer).
pub(super) fn transmit(entry: &Entry, buf: &[u8], to: Option<SocketAddrV4>) -> Result<usize, i32> {
    if entry.borrow().udp && matches!(entry.borrow().state, State::Fresh { port: None }) {
        bind(entry, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0))?;
    }
    let socket = entry.borrow();
    let wait = socket.wait_write();
    match socket.state {
        State::Connected { handle, .. } => {
            drop(socket);
            tcp::send(handle, buf, wait).map_err(errno)
        }
        State::Udp { handle, peer, .. } => {
            let to = to.or(peer).ok_or(EDESTADDRREQ)?;
            drop(socket);
            udp::send_to(handle, buf, to, wait).map_err(errno)
        }
        _ => Err(ENOTCONN),
    }
}

/// # Safety
/// `buf` points to `len` writable bytes.
#[unsafe(no_mangle)]
unsafe extern "C" fn sys_recv(fd: i32, buf: *mut u8, len: usize, flags: i32) -> isize {
    // SAFETY: the caller's contract.
    unsafe { sys_recvfrom(fd, buf, len, flags, core::ptr::null_mut(), core::ptr::null_mut()) }
}

/// # Safety
/// `buf` points to `len` writable bytes; `addr` is null or as for
/// [`sys_accept`].
#[unsafe(no_mangle)]
unsafe extern "C" fn sys_recvfrom(
    fd: i32,
    buf: *mut u8,
    len: usize,
    flags: i32,
    addr: *mut sockaddr,
    addrlen: *mut socklen_t,
) -> isize {
    if buf.is_null() && len != 0 {
        return fail(EFAULT) as isize;
    }
    // SAFETY: the caller's contract.
    let buf = if len == 0 { &mut [][..] } else { unsafe { core::slice::from_raw_parts_mut(buf, len) } };
    let got = socket_of(fd).and_then(|entry| receive(&entry, buf, flags & MSG_PEEK != 0));
    ret_size(got.map(|(n, from)| {
        if let Some(from) = from {
            // SAFETY: the caller's contract.
            unsafe { write_addr(from, addr, addrlen) };
        }
        n
    }))
}

/// # Safety
/// `buf` points to `len` readable bytes.
#[unsafe(no_mangle)]
unsafe extern "C" fn sys_send(fd: i32, buf: *const c_void, len: usize, _flags: i32) -> isize {
    // SAFETY: the caller's contract.
    unsafe { sys_sendto(fd, buf, len, 0, core::ptr::null(), 0) }
}

/// # Safety
/// `buf` points to `len` readable bytes; `addr` is null or points to
/// `addrlen` readable bytes.
#[unsafe(no_mangle)]
unsafe extern "C" fn sys_sendto(
    fd: i32,
    buf: *const c_void,
    len: usize,
    _flags: i32,
    addr: *const sockaddr,
    addrlen: socklen_t,
) -> isize {
    if buf.is_null() && len != 0 {
        return fail(EFAULT) as isize;
    }
    // SAFETY: the caller's contract.
    let buf = if len == 0 { &[][..] } else { unsafe { core::slice::from_raw_parts(buf.cast::<u8>(), len) } };
    let to = if addr.is_null() {
        None
    } else {
        // SAFETY: the caller's contract.
        match unsafe { read_addr(addr, addrlen) } {
            Ok(to) => Some(to),
            Err(e) => return fail(e) as isize,
        }
    };
    ret_size(socket_of(fd).and_then(|entry| transmit(&entry, buf, to)))
}

#[unsafe(no_mangle)]
extern "C" fn sys_shutdown(fd: i32, how: i32) -> i32 {
    ret(socket_of(fd).and_then(|entry| {
        let handle = match entry.borrow().state {
            State::Connected { handle, .. } => handle,
            _ => return Err(ENOTCONN),
        };
        if how == SHUT_RD || how == SHUT_RDWR {
            tcp::shutdown_read(handle).map_err(errno)?;
        }
        if how == SHUT_WR || how == SHUT_RDWR {
            tcp::shutdown_write(handle).map_err(errno)?;
        }
        Ok(0)
    }))
}

#[unsafe(no_mangle)]
extern "C" fn sys_shutdown_socket(fd: i32, how: i32) -> i32 {
    sys_shutdown(fd, how)
}

/// # Safety
/// As [`sys_accept`].
#[unsafe(no_mangle)]
unsafe extern "C" fn sys_getsockname(fd: i32, name: *mut sockaddr, len: *mut socklen_t) -> i32 {
    let local = socket_of(fd).and_then(|entry| match entry.borrow().state {
        State::Fresh { port } => Ok(SocketAddrV4::new(entry.borrow().bound_ip, port.unwrap_or(0))),
        // Bound to any address, a UDP socket with a peer sends from the
        // VM's own (as Linux reports it).
        State::Udp { port, peer: Some(_), .. } if entry.borrow().bound_ip.is_unspecified() => {
            stack::with(|s| s.local_addr(port)).map_err(errno)
        }
        State::Listening { port } | State::Udp { port, .. } => Ok(SocketAddrV4::new(entry.borrow().bound_ip, port)),
        State::Connecting { handle, .. } | State::Connected { handle, .. } => {
            tcp::with_socket(handle, |s| s.local_endpoint().map(tcp::v4)).map_err(errno)?.ok_or(ENOTCONN)
        }
        State::Failed => Err(EINVAL),
    });
    // SAFETY: the caller's contract.
    ret(local.map(|addr| unsafe { write_addr(addr, name, len) }).map(|()| 0))
}

/// # Safety
/// As [`sys_accept`].
#[unsafe(no_mangle)]
unsafe extern "C" fn sys_getpeername(fd: i32, name: *mut sockaddr, len: *mut socklen_t) -> i32 {
    let peer = socket_of(fd).and_then(|entry| match entry.borrow().state {
        State::Connected { handle, .. } => {
            tcp::with_socket(handle, |s| s.remote_endpoint().map(tcp::v4)).map_err(errno)?.ok_or(ENOTCONN)
        }
        State::Udp { peer: Some(peer), .. } => Ok(peer),
        _ => Err(ENOTCONN),
    });
    // SAFETY: the caller's contract.
    ret(peer.map(|addr| unsafe { write_addr(addr, name, len) }).map(|()| 0))
}

fn timeval_of(timeout: Option<Duration>) -> timeval {
    timeout.map_or(timeval { tv_sec: 0, tv_usec: 0 }, |t| timeval {
        tv_sec: t.as_secs() as i64,
        tv_usec: t.subsec_micros() as suseconds_t,
    })
}

/// # Safety
/// `value` points to `len` readable bytes.
#[unsafe(no_mangle)]
unsafe extern "C" fn sys_setsockopt(fd: i32, level: i32, name: i32, value: *const c_void, len: socklen_t) -> i32 {
    /// Reads the option's value as a `T`.
    unsafe fn arg<T: Copy>(value: *const c_void, len: socklen_t) -> Result<T, i32> {
        if value.is_null() || (len as usize) < size_of::<T>() {
            return Err(EINVAL);
        }
        // SAFETY: the caller's contract; the length was checked.
        Ok(unsafe { value.cast::<T>().read_unaligned() })
    }
    ret(socket_of(fd).and_then(|entry| {
        let mut socket = entry.borrow_mut();
        match (level, name) {
            (SOL_SOCKET, SO_REUSEADDR) => {}
            // SAFETY (each `arg`): the caller's contract.
            (SOL_SOCKET, SO_KEEPALIVE) => socket.keepalive = unsafe { arg::<i32>(value, len) }?,
            (SOL_SOCKET, SO_BROADCAST) => socket.broadcast = unsafe { arg::<i32>(value, len) }?,
            (SOL_SOCKET, SO_LINGER) => socket.linger = unsafe { arg::<linger>(value, len) }?,
            (SOL_SOCKET, SO_RCVTIMEO | SO_SNDTIMEO) => {
                let tv = unsafe { arg::<timeval>(value, len) }?;
                if tv.tv_sec < 0 || !(0..1_000_000).contains(&tv.tv_usec) {
                    return Err(EINVAL);
                }
                let timeout = (tv.tv_sec != 0 || tv.tv_usec != 0)
                    .then(|| Duration::new(tv.tv_sec as u64, tv.tv_usec as u32 * 1000));
                if name == SO_RCVTIMEO { socket.read_timeout = timeout } else { socket.write_timeout = timeout }
            }
            (IPPROTO_TCP, TCP_NODELAY) => {
                let on = unsafe { arg::<i32>(value, len) }? != 0;
                let (State::Connected { handle, .. } | State::Connecting { handle, .. }) = socket.state else {
                    return Err(ENOTCONN);
                };
                tcp::with_socket(handle, |s| s.set_nagle_enabled(!on)).map_err(errno)?;
            }
            (IPPROTO_IP, IP_TTL) => socket.ttl = unsafe { arg::<i32>(value, len) }?,
            _ => return Err(ENOPROTOOPT),
        }
        Ok(0)
    }))
}

/// # Safety
/// `value` points to `*len` writable bytes; `len` is writable.
#[unsafe(no_mangle)]
unsafe extern "C" fn sys_getsockopt(fd: i32, level: i32, name: i32, value: *mut c_void, len: *mut socklen_t) -> i32 {
    /// Writes `v` as the option's value.
    unsafe fn put<T: Copy>(v: T, value: *mut c_void, len: *mut socklen_t) -> Result<i32, i32> {
        // SAFETY: the caller's contract; the length is checked first.
        unsafe {
            if value.is_null() || len.is_null() || (*len as usize) < size_of::<T>() {
                return Err(EINVAL);
            }
            value.cast::<T>().write_unaligned(v);
            *len = size_of::<T>() as socklen_t;
        }
        Ok(0)
    }
    ret(socket_of(fd).and_then(|entry| {
        let mut socket = entry.borrow_mut();
        // SAFETY (each `put`): the caller's contract.
        unsafe {
            match (level, name) {
                (SOL_SOCKET, SO_ERROR) => put(core::mem::take(&mut socket.error), value, len),
                (SOL_SOCKET, SO_KEEPALIVE) => put(socket.keepalive, value, len),
                (SOL_SOCKET, SO_BROADCAST) => put(socket.broadcast, value, len),
                (SOL_SOCKET, SO_LINGER) => put(socket.linger, value, len),
                (SOL_SOCKET, SO_RCVTIMEO) => put(timeval_of(socket.read_timeout), value, len),
                (SOL_SOCKET, SO_SNDTIMEO) => put(timeval_of(socket.write_timeout), value, len),
                (IPPROTO_TCP, TCP_NODELAY) => {
                    let (State::Connected { handle, .. } | State::Connecting { handle, .. }) = socket.state else {
                        return Err(ENOTCONN);
                    };
                    let nagle = tcp::with_socket(handle, |s| s.nagle_enabled()).map_err(errno)?;
                    put(i32::from(!nagle), value, len)
                }
                (IPPROTO_IP, IP_TTL) => put(socket.ttl, value, len),
                _ => Err(ENOPROTOOPT),
            }
        }
    }))
}

/// Sets or clears non-blocking mode (`FIONBIO`, `fcntl(F_SETFL)`).
fn set_nonblocking(fd: i32, on: bool) -> Result<(), i32> {
    match fd::get(fd)? {
        Object::Socket(entry) => entry.borrow_mut().nonblocking = on,
        Object::Event(event) => event.set_nonblocking(on),
        // Files are always ready: a transfer never waits on the network.
        Object::File(_) | Object::Dir(_) => {}
    }
    Ok(())
}

/// Whether `fd` is in non-blocking mode.
fn is_nonblocking(fd: i32) -> Result<bool, i32> {
    Ok(match fd::get(fd)? {
        Object::Socket(entry) => entry.borrow().nonblocking,
        Object::Event(event) => event.is_nonblocking(),
        Object::File(_) | Object::Dir(_) => false,
    })
}

/// # Safety
/// For `FIONBIO`, `argp` points to an `i32`.
#[unsafe(no_mangle)]
unsafe extern "C" fn sys_ioctl(fd: i32, cmd: i32, argp: *mut c_void) -> i32 {
    if cmd != FIONBIO {
        return fail(EINVAL);
    }
    if argp.is_null() {
        return fail(EFAULT);
    }
    // SAFETY: the caller's contract.
    let on = unsafe { argp.cast::<i32>().read_unaligned() } != 0;
    ret(set_nonblocking(fd, on).map(|()| 0))
}

#[unsafe(no_mangle)]
extern "C" fn sys_fcntl(fd: i32, cmd: i32, arg: i32) -> i32 {
    ret(match cmd {
        F_GETFL => is_nonblocking(fd).map(|on| (if on { O_NONBLOCK } else { 0 }) | O_RDWR),
        F_SETFL => set_nonblocking(fd, arg & O_NONBLOCK != 0).map(|()| 0),
        // Nothing here is ever executed: close-on-exec holds trivially.
        F_GETFD => fd::get(fd).map(|_| FD_CLOEXEC),
        F_SETFD => fd::get(fd).map(|_| 0),
        _ => Err(EINVAL),
    })
}

#[unsafe(no_mangle)]
extern "C" fn sys_dup(fd: i32) -> i32 {
    ret(fd::get(fd).and_then(fd::insert))
}

/// What `fd` is ready for now, as `poll` bits (POLLNVAL if it is not
/// open); called with the stack in hand.
pub(super) fn revents(stack: &mut stack::Stack, fd: i32, events: i16) -> i16 {
    let ready = match fd {
        0 => POLLIN,
        1 | 2 => POLLOUT,
        _ => match fd::get(fd) {
            Err(_) => return POLLNVAL,
            Ok(Object::Event(event)) => event.readiness(),
            Ok(Object::File(_)) => POLLIN | POLLOUT,
            Ok(Object::Dir(_)) => POLLIN,
            Ok(Object::Socket(entry)) => {
                let mut socket = entry.borrow_mut();
                match socket.state {
                    State::Fresh { .. } => POLLOUT | POLLHUP,
                    State::Listening { port } => {
                        if stack.has_pending(port) {
                            POLLIN
                        } else {
                            0
                        }
                    }
                    State::Connecting { handle, port } => match tcp::connect_outcome(stack, handle) {
                        None => 0,
                        Some(Ok(())) => {
                            socket.state = State::Connected { handle, ephemeral: Some(port) };
                            POLLOUT
                        }
                        Some(Err(e)) => {
                            socket.error = errno(e);
                            POLLOUT | POLLERR | POLLHUP
                        }
                    },
                    State::Connected { handle, .. } => {
                        let (readable, writable, hung_up) = tcp::readiness(stack, handle);
                        let mut bits = 0;
                        if readable {
                            bits |= POLLIN;
                        }
                        if writable {
                            bits |= POLLOUT;
                        }
                        if hung_up {
                            bits |= POLLHUP;
                        }
                        bits
                    }
                    State::Udp { handle, .. } => {
                        let (readable, writable) = udp::readiness(stack, handle);
                        (if readable { POLLIN } else { 0 }) | (if writable { POLLOUT } else { 0 })
                    }
                    State::Failed => POLLERR | POLLHUP,
                }
            }
        },
    };
    ready & (events | POLLERR | POLLHUP | POLLNVAL)
}

/// # Safety
/// `fds` points to `nfds` writable `pollfd`s.
#[unsafe(no_mangle)]
unsafe extern "C" fn sys_poll(fds: *mut pollfd, nfds: nfds_t, timeout_ms: i32) -> i32 {
    if nfds > 0 && fds.is_null() {
        return fail(EFAULT);
    }
    // SAFETY: the caller's contract.
    let fds = if nfds == 0 { &mut [][..] } else { unsafe { core::slice::from_raw_parts_mut(fds, nfds) } };
    let wait = match timeout_ms {
        0 => Wait::Never,
        t if t < 0 => Wait::Forever,
        t => Wait::at_most(Some(Duration::from_millis(t as u64))),
    };
    let outcome = stack::wait(wait, stack::Interest::Any, |stack| {
        let mut ready = 0;
        for pfd in fds.iter_mut() {
            pfd.revents = if pfd.fd < 0 { 0 } else { revents(stack, pfd.fd, pfd.events) };
            ready += i32::from(pfd.revents != 0);
        }
        (ready > 0).then_some(Ok(ready))
    });
    match outcome {
        Ok(ready) => ready,
        Err(e) if e.kind() == ErrorKind::WouldBlock => 0,
        Err(e) => fail(errno(e)),
    }
}

/// One address for `getaddrinfo`, freed by `freeaddrinfo`.
#[repr(C)]
struct AddrInfo {
    info: addrinfo,
    addr: sockaddr_in,
}

/// Resolves a numeric IPv4 address or `localhost` (there is no DNS in a
/// Denali VM); returns 0 or an `EAI_*` code.
///
/// # Safety
/// `node` and `service` are null or NUL-terminated; `hints` is null or
/// points to an `addrinfo`; `res` is writable.
#[unsafe(no_mangle)]
unsafe extern "C" fn sys_getaddrinfo(
    node: *const c_char,
    service: *const c_char,
    hints: *const addrinfo,
    res: *mut *mut addrinfo,
) -> i32 {
    if res.is_null() {
        return EAI_FAIL;
    }
    // SAFETY: the caller's contract.
    let text = |s: *const c_char| (!s.is_null()).then(|| unsafe { core::ffi::CStr::from_ptr(s) }.to_str());
    let ip = match text(node) {
        None | Some(Ok("localhost")) => Ipv4Addr::LOCALHOST,
        Some(Ok(name)) => match name.parse() {
            Ok(ip) => ip,
            Err(_) => return EAI_NONAME,
        },
        Some(Err(_)) => return EAI_NONAME,
    };
    let port: u16 = match text(service) {
        None => 0,
        Some(Ok(s)) => match s.parse::<u16>() {
            Ok(port) => port,
            Err(_) => return EAI_SERVICE,
        },
        Some(Err(_)) => return EAI_SERVICE,
    };
    // SAFETY: the caller's contract.
    let hints = unsafe { hints.as_ref() };
    if hints.is_some_and(|h| h.ai_family != AF_UNSPEC && h.ai_family != AF_INET) {
        return EAI_FAMILY;
    }
    let mut block = alloc::boxed::Box::new(AddrInfo {
        info: addrinfo {
            ai_flags: 0,
            ai_family: AF_INET,
            ai_socktype: hints.map_or(SOCK_STREAM, |h| h.ai_socktype),
            ai_protocol: hints.map_or(0, |h| h.ai_protocol),
            ai_addrlen: size_of::<sockaddr_in>() as socklen_t,
            ai_canonname: core::ptr::null_mut(),
            ai_addr: core::ptr::null_mut(),
            ai_next: core::ptr::null_mut(),
        },
        addr: sockaddr_in {
            sin_len: size_of::<sockaddr_in>() as u8,
            sin_family: AF_INET as sa_family_t,
            sin_port: port.to_be(),
            sin_addr: in_addr { s_addr: u32::from_ne_bytes(ip.octets()) },
            sin_zero: [0; 8],
        },
    });
    block.info.ai_addr = (&raw mut block.addr).cast();
    // SAFETY: the caller's contract; `AddrInfo` starts with its `addrinfo`.
    unsafe { res.write(alloc::boxed::Box::into_raw(block).cast()) };
    0
}

/// # Safety
/// `ai` is null or came from [`sys_getaddrinfo`] and is freed once.
#[unsafe(no_mangle)]
unsafe extern "C" fn sys_freeaddrinfo(ai: *mut addrinfo) {
    if !ai.is_null() {
        // SAFETY: the caller's contract: a block `sys_getaddrinfo` leaked.
        drop(unsafe { alloc::boxed::Box::from_raw(ai.cast::<AddrInfo>()) });
    }
}
