//! Raw Ethernet frames through the virtual NIC: what the TCP/IP stack is
//! built on, and open to services that speak their own protocol.

use crate::hypercall::{Error, Hypercall, call2};
use denali_abi::hypercall::{EVENT_NET_RX, FrameRef};
pub use denali_abi::hypercall::{FRAME_MAX, FRAME_MIN, NET_BATCH_MAX};
pub use denali_abi::net::mac_of;

/// Sends one frame (header included; the source address must be this
/// VM's). A frame nobody on the segment can take is dropped silently, as
/// on a real wire.
pub fn send(frame: &[u8]) -> Result<(), Error> {
    // SAFETY: the kernel reads `frame.len()` bytes at `frame`, a live slice.
    unsafe { call2(Hypercall::NetSend, frame.as_ptr() as u64, frame.len() as u64) }.map(drop)
}

/// Sends the frames of `frames` in order, [`NET_BATCH_MAX`] to a
/// hypercall, each as [`send`] does; returns how many went. It stops at the
/// first frame [`send`] would refuse (an error if it is the first).
pub fn send_batch(frames: &[&[u8]]) -> Result<usize, Error> {
    let mut sent = 0;
    for chunk in frames.chunks(NET_BATCH_MAX) {
        let mut list = [FrameRef::default(); NET_BATCH_MAX];
        for (entry, frame) in list.iter_mut().zip(chunk) {
            *entry = FrameRef { addr: frame.as_ptr() as u64, len: frame.len() as u64 };
        }
        // SAFETY: the kernel reads the list's `chunk.len()` entries, and each
        // entry's frame, all live for the call.
        let went = unsafe { call2(Hypercall::NetSendBatch, list.as_ptr() as u64, chunk.len() as u64) };
        match went {
            Ok(n) if (n as usize) < chunk.len() => return Ok(sent + n as usize),
            Ok(n) => sent += n as usize,
            Err(e) if sent == 0 => return Err(e),
            Err(_) => return Ok(sent),
        }
    }
    Ok(sent)
}

/// Takes up to `bufs.len()` (at most [`NET_BATCH_MAX`]) of the oldest
/// received frames in one hypercall, the n-th into `bufs[n]` with its
/// length in `lens[n]`; returns how many. `Err(Error::WouldBlock)` when
/// none has arrived (seen on the info page, without a hypercall).
pub fn try_recv_batch(bufs: &mut [&mut [u8]], lens: &mut [usize]) -> Result<usize, Error> {
    if crate::vm::rx_ring_is_empty() {
        return Err(Error::WouldBlock);
    }
    let count = bufs.len().min(lens.len()).min(NET_BATCH_MAX);
    let mut list = [FrameRef::default(); NET_BATCH_MAX];
    for (entry, buf) in list.iter_mut().zip(bufs.iter_mut()).take(count) {
        *entry = FrameRef { addr: buf.as_mut_ptr() as u64, len: buf.len() as u64 };
    }
    // SAFETY: the kernel writes at most each entry's `len` bytes into that
    // entry's buffer, borrowed mutably here, and the lengths into the list.
    let got = unsafe { call2(Hypercall::NetRecvBatch, list.as_mut_ptr() as u64, count as u64) }? as usize;
    for (len, entry) in lens.iter_mut().zip(&list[..got.min(count)]) {
        *len = entry.len as usize;
    }
    Ok(got.min(count))
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

/// Waits for a frame (parking only the calling thread) and takes as many
/// as have arrived, as [`try_recv_batch`] does.
pub fn recv_batch(bufs: &mut [&mut [u8]], lens: &mut [usize]) -> Result<usize, Error> {
    loop {
        match try_recv_batch(bufs, lens) {
            Err(Error::WouldBlock) => crate::thread::wait_for_event(EVENT_NET_RX),
            result => return result,
        }
    }
}
