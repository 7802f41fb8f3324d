//! Raw Ethernet frames through the virtual NIC: what the TCP/IP stack is
//! built on, and open to services that speak their own protocol.

use crate::hypercall::{Error, Hypercall, call2};
use denali_abi::hypercall::EVENT_NET_RX;
pub use denali_abi::hypercall::{FRAME_MAX, FRAME_MIN};
pub use denali_abi::net::mac_of;

/// Sends one frame (header included; the source address must be this
/// VM's). A frame nobody on the segment can take is dropped silently, as
/// on a real wire.
pub fn send(frame: &[u8]) -> Result<(), Error> {
    // SAFETY: the kernel reads `frame.len()` bytes at `frame`, a live slice.
    unsafe { call2(Hypercall::NetSend, frame.as_ptr() as u64, frame.len() as u64) }.map(drop)
}

/// Takes the oldest received frame into `buf`, returning its length, or
/// `Err(Error::WouldBlock)` when none has arrived (seen on the info page
/// without a hypercall, where the kernel keeps the ring's length there).
pub fn try_recv(buf: &mut [u8]) -> Result<usize, Error> {
    if crate::vm::rx_ring_is_empty() {
        return Err(Error::WouldBlock);
    }
    // SAFETY: the kernel writes at most `buf.len()` bytes at `buf`, a slice
    // borrowed mutably here.
    unsafe { call2(Hypercall::NetRecv, buf.as_mut_ptr() as u64, buf.len() as u64) }.map(|n| n as usize)
}

/// Waits for a frame (parking only the calling thread) and takes it.
pub fn recv(buf: &mut [u8]) -> Result<usize, Error> {
    loop {
        match try_recv(buf) {
            Err(Error::WouldBlock) => crate::thread::wait_for_event(EVENT_NET_RX),
            result => return result,
        }
    }
}
