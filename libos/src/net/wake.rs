//! Which threads a change of the stack wakes.
//!
//! A thread that waits for one socket (to read, to write, to connect, to
//! accept on a port) waits on that socket's key, not for every frame: the
//! scheduler takes frames in itself (see `thread::deliver`), and only the
//! sockets they change wake their threads. A server with a thousand idle
//! connections runs one thread per frame, not a thousand.
//!
//! smoltcp's sockets wake a registered [`Waker`] on every change that can
//! alter what `recv` or `send` returns (data, room, a state change, a
//! reset); the wakers here carry a key and wake every thread waiting on
//! it. A connection ready to accept is announced by the listeners
//! (`listen::Listeners::refresh`). Two sockets that shared a key would
//! only wake more threads than needed: every woken thread checks its
//! socket again.

use core::hash::{Hash, Hasher};
use core::task::{RawWaker, RawWakerVTable, Waker};
use smoltcp::iface::{SocketHandle, SocketSet};
use smoltcp::socket::{tcp, udp};

/// What a waiting operation waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Interest {
    /// Any change of the network (several sockets, or raw frames): the
    /// thread wakes for every frame.
    Any,
    /// Data, the peer's end, or a reset on a TCP connection.
    TcpRecv(SocketHandle),
    /// Room to send, a connection made, or a reset.
    TcpSend(SocketHandle),
    /// A datagram on a UDP socket.
    UdpRecv(SocketHandle),
    /// Room to send a datagram.
    UdpSend(SocketHandle),
    /// A connection ready to accept on a listening port.
    Accept(u16),
}

impl Interest {
    /// Has the socket wake its waiters on its next change; the key to wait
    /// on (`None`: wait for any frame).
    pub(crate) fn register(self, sockets: &mut SocketSet<'static>) -> Option<usize> {
        let key = self.key()?;
        let waker = waker(key);
        match self {
            Interest::TcpRecv(h) => sockets.get_mut::<tcp::Socket>(h).register_recv_waker(&waker),
            Interest::TcpSend(h) => sockets.get_mut::<tcp::Socket>(h).register_send_waker(&waker),
            Interest::UdpRecv(h) => sockets.get_mut::<udp::Socket>(h).register_recv_waker(&waker),
            Interest::UdpSend(h) => sockets.get_mut::<udp::Socket>(h).register_send_waker(&waker),
            Interest::Accept(_) | Interest::Any => {}
        }
        Some(key)
    }

    fn key(self) -> Option<usize> {
        match self {
            Interest::Any => None,
            Interest::TcpRecv(h) | Interest::UdpRecv(h) => Some(index(h) << 1),
            Interest::TcpSend(h) | Interest::UdpSend(h) => Some(index(h) << 1 | 1),
            Interest::Accept(port) => Some(accept_key(port)),
        }
    }
}

/// The key of threads accepting on `port` (above every socket's key).
pub(crate) fn accept_key(port: u16) -> usize {
    1 << 40 | usize::from(port)
}

/// Wakes the threads accepting on `port`.
pub(crate) fn wake_acceptors(port: u16) {
    crate::thread::wake_socket_waiters(Some(accept_key(port)));
}

/// Wakes the threads reading from connection `handle`, and those polling
/// any socket (they wait for any change of the network).
pub(crate) fn wake_readers(handle: SocketHandle) {
    crate::thread::wake_socket_waiters(Interest::TcpRecv(handle).key());
    crate::thread::wake_event_waiters(denali_abi::hypercall::EVENT_NET_RX);
}

/// A socket handle's index in the socket set. smoltcp keeps it private,
/// but its `Hash` writes exactly it; were that to change, sockets would
/// share keys, which costs wake-ups, not correctness.
fn index(handle: SocketHandle) -> usize {
    struct Index(usize);
    impl Hasher for Index {
        fn finish(&self) -> u64 {
            self.0 as u64
        }
        fn write(&mut self, _: &[u8]) {}
        fn write_usize(&mut self, i: usize) {
            self.0 = i;
        }
    }
    let mut index = Index(0);
    handle.hash(&mut index);
    index.0 & ((1 << 39) - 1)
}

/// A waker that wakes the threads waiting on `key`. Wakers of one key are
/// equal (`Waker::will_wake`), so registering again clones nothing.
fn waker(key: usize) -> Waker {
    // SAFETY: the data is the key, an integer never dereferenced; the
    // vtable's functions neither free nor share anything, and a VM runs
    // one thread at a time, so no wake races another.
    unsafe { Waker::from_raw(RawWaker::new(key as *const (), &VTABLE)) }
}

static VTABLE: RawWakerVTable = RawWakerVTable::new(clone, wake, wake, drop);

fn clone(data: *const ()) -> RawWaker {
    RawWaker::new(data, &VTABLE)
}

fn wake(data: *const ()) {
    crate::thread::wake_socket_waiters(Some(data as usize));
}

fn drop(_: *const ()) {}
