//! Networking: TCP and UDP sockets shaped like `std::net`, over the VM's
//! virtual NIC.
//!
//! ```ignore
//! use denali::io::{Read, Write};
//! let listener = denali::net::TcpListener::bind("0.0.0.0:7")?;
//! loop {
//!     let (mut stream, _) = listener.accept()?;
//!     denali::thread::spawn(move || {
//!         let mut buf = [0u8; 1024];
//!         while let Ok(n @ 1..) = stream.read(&mut buf) {
//!             let _ = stream.write_all(&buf[..n]);
//!         }
//!     });
//! }
//! ```
//!
//! Each VM has the IPv4 address its manifest's `[network]` table gives it
//! ([`local_ip`]) and the MAC address derived from its id
//! ([`crate::vm::mac`]). A call that must wait parks only the calling green
//! thread; the VM idles when every thread waits.

pub mod frame;
mod listen;
pub(crate) mod stack;
pub(crate) mod tcp;
pub(crate) mod udp;
mod wake;

pub use core::net::{Ipv4Addr, SocketAddrV4};
pub use listen::BACKLOG;
pub use tcp::{Shutdown, TcpListener, TcpStream};
pub use udp::UdpSocket;

use crate::io::{Error, ErrorKind, Result};

/// How many times the kernel has said frames arrived (see
/// [`crate::time::idle`]): the NIC's ring is worth reading only if this
/// moved since it was last found empty.
static FRAMES_ARRIVED: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

pub(crate) fn note_frames_arrived() {
    FRAMES_ARRIVED.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
}

/// Whether frames may be waiting: the kernel said so since `seen`, or says
/// so now on the info page.
pub(crate) fn frames_may_wait(seen: u64) -> bool {
    FRAMES_ARRIVED.load(core::sync::atomic::Ordering::Relaxed) != seen
        || crate::vm::pending_events() & denali_abi::hypercall::EVENT_NET_RX != 0
}

pub(crate) fn frames_arrived() -> u64 {
    FRAMES_ARRIVED.load(core::sync::atomic::Ordering::Relaxed)
}

/// Sockets the VM's TCP/IP stack holds now: listening, connected, and
/// closed ones still saying goodbye (0 before the first socket).
pub fn open_sockets() -> usize {
    stack::with(|stack| stack.sockets.iter().count()).unwrap_or(0)
}

/// Frames this VM's TCP/IP stack has handed to the virtual NIC (0 before
/// the first socket; frames to itself are not counted): what its traffic
/// costs in frames.
pub fn frames_sent() -> u64 {
    stack::with(|stack| stack.frames_sent()).unwrap_or(0)
}

/// This VM's IPv4 address, if its manifest gave it one.
pub fn local_ip() -> Option<Ipv4Addr> {
    let config = crate::vm::info().ipv4;
    config.is_configured().then(|| Ipv4Addr::from(config.address))
}

/// Something that names one IPv4 socket address, as `std::net`'s
/// `ToSocketAddrs` does (without name lookup: there is no DNS here).
pub trait ToSocketAddr {
    /// The address.
    fn to_socket_addr(&self) -> Result<SocketAddrV4>;
}

impl ToSocketAddr for SocketAddrV4 {
    fn to_socket_addr(&self) -> Result<SocketAddrV4> {
        Ok(*self)
    }
}

impl ToSocketAddr for (Ipv4Addr, u16) {
    fn to_socket_addr(&self) -> Result<SocketAddrV4> {
        Ok(SocketAddrV4::new(self.0, self.1))
    }
}

impl ToSocketAddr for str {
    fn to_socket_addr(&self) -> Result<SocketAddrV4> {
        self.parse()
            .map_err(|_| Error::new(ErrorKind::InvalidInput, "not an IPv4 socket address like \"10.0.2.15:80\""))
    }
}

impl<T: ToSocketAddr + ?Sized> ToSocketAddr for &T {
    fn to_socket_addr(&self) -> Result<SocketAddrV4> {
        (**self).to_socket_addr()
    }
}
