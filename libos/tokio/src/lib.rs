//! tokio TCP sockets for std services in Denali VMs.
//!
//! tokio's own `net` feature does not build for std's Hermit platform
//! layer, which Denali's std services use: its socket2 dependency stops
//! with `compile_error!` on any OS but Unix, Windows and WASI, and
//! `tokio::net` converts sockets with Unix or Windows calls only. Until
//! those crates learn the platform, this crate gives a tokio program
//! (`current_thread` or multi-threaded runtime) a [`TcpListener`] and a
//! [`TcpStream`] that implement tokio's `AsyncRead`/`AsyncWrite`, so
//! hyper and axum serve from a VM.
//!
//! Each is a non-blocking `std::net` socket; a read, write or accept that
//! would block hands the task's waker to the libOS's readiness reactor
//! (`denali::readiness`), which wakes it once the socket is ready.
//!
//! ```ignore
//! let listener = denali_tokio::TcpListener::bind("0.0.0.0:80").await?;
//! loop {
//!     let (stream, peer) = listener.accept().await?;
//!     tokio::spawn(serve(stream));
//! }
//! ```

use denali::readiness::{Interest, wake_when_ready};
use std::future::poll_fn;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, ToSocketAddrs};
use std::os::hermit::io::AsRawFd;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Runs `attempt` until it does not say `WouldBlock`; when it does, the
/// task waits for `fd` to be ready as `interest` says.
fn poll_io<T>(
    cx: &mut Context<'_>,
    fd: i32,
    interest: Interest,
    mut attempt: impl FnMut() -> io::Result<T>,
) -> Poll<io::Result<T>> {
    match attempt() {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {
            wake_when_ready(fd, interest, cx.waker());
            Poll::Pending
        }
        done => Poll::Ready(done),
    }
}

/// A TCP socket listening for connections.
#[derive(Debug)]
pub struct TcpListener(std::net::TcpListener);

impl TcpListener {
    /// Listens on `addr` (e.g. `"0.0.0.0:80"`).
    pub async fn bind(addr: impl ToSocketAddrs) -> io::Result<TcpListener> {
        let listener = std::net::TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        Ok(TcpListener(listener))
    }

    /// The next connection and its peer's address; waits for one.
    pub async fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        let (stream, peer) =
            poll_fn(|cx| poll_io(cx, self.0.as_raw_fd(), Interest::Readable, || self.0.accept())).await?;
        stream.set_nonblocking(true)?;
        Ok((TcpStream(stream), peer))
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

/// A TCP connection.
#[derive(Debug)]
pub struct TcpStream(std::net::TcpStream);

impl TcpStream {
    /// The peer's address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.0.peer_addr()
    }

    /// Turns Nagle's algorithm off (`true`) or on.
    pub fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        self.0.set_nodelay(nodelay)
    }
}

impl AsyncRead for TcpStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let stream = &self.0;
        let read = poll_io(cx, stream.as_raw_fd(), Interest::Readable, || (&*stream).read(buf.initialize_unfilled()));
        read.map_ok(|n| buf.advance(n))
    }
}

impl AsyncWrite for TcpStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let stream = &self.0;
        poll_io(cx, stream.as_raw_fd(), Interest::Writable, || (&*stream).write(data))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Nothing is buffered here: a write hands its bytes to the stack.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.0.shutdown(Shutdown::Write))
    }
}
