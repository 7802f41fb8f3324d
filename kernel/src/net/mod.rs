//! The virtual Ethernet segment: each VM's receive ring and the switch's
//! decision for a frame a VM sends.
//!
//! Pure logic, tested on the host. A VM's MAC is derived from its id
//! (`denali_abi::net`), so routing a frame is arithmetic on its destination
//! address: no table to learn, nothing that grows with the number of VMs.
//! Rings are bounded: a frame for a full ring is dropped, never queued, so
//! no VM can make the kernel or another VM wait.

use alloc::collections::VecDeque;
use alloc::vec::Vec;
use denali_abi::hypercall::{FRAME_MAX, FRAME_MIN};
use denali_abi::net::{mac_of, vm_of};

/// Frames a VM's receive ring holds before it drops.
pub const RX_RING_FRAMES: usize = 256;

/// A VM's receive ring.
#[derive(Debug, Default)]
pub struct RxRing {
    frames: VecDeque<Vec<u8>>,
    /// Frames dropped because the ring was full.
    pub dropped: u64,
}

impl RxRing {
    /// Queues a frame; returns false (and counts a drop) if the ring is full.
    pub fn push(&mut self, frame: Vec<u8>) -> bool {
        if self.frames.len() >= RX_RING_FRAMES {
            self.dropped += 1;
            return false;
        }
        self.frames.push_back(frame);
        true
    }

    /// The oldest frame's length, if any.
    pub fn peek_len(&self) -> Option<usize> {
        self.frames.front().map(Vec::len)
    }

    /// Takes the oldest frame.
    pub fn pop(&mut self) -> Option<Vec<u8>> {
        self.frames.pop_front()
    }
}

/// Where a frame goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// To this VM's receive ring.
    Vm(u32),
    /// Nowhere on this segment (another host's address, or broadcast: the
    /// segment has no uplink yet): dropped.
    Drop,
}

/// Why a frame was refused outright.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendError {
    /// Shorter than an Ethernet header or longer than the MTU allows.
    BadLength,
    /// The source address is not the sender's own: spoofing is refused.
    Spoofed,
}

/// The switch's decision for `frame`, sent by VM `sender`.
pub fn route(sender: u32, frame: &[u8]) -> Result<Route, SendError> {
    if !(FRAME_MIN..=FRAME_MAX).contains(&frame.len()) {
        return Err(SendError::BadLength);
    }
    if frame[6..12] != mac_of(sender) {
        return Err(SendError::Spoofed);
    }
    let dst: [u8; 6] = frame[0..6].try_into().expect("six bytes");
    Ok(vm_of(&dst).map_or(Route::Drop, Route::Vm))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(dst: [u8; 6], src: [u8; 6], len: usize) -> Vec<u8> {
        let mut f = alloc::vec![0u8; len];
        f[0..6].copy_from_slice(&dst);
        f[6..12].copy_from_slice(&src);
        f
    }

    #[test]
    fn frames_go_to_the_vm_their_address_names() {
        assert_eq!(route(1, &frame(mac_of(7), mac_of(1), 60)), Ok(Route::Vm(7)));
        assert_eq!(route(1, &frame([0xff; 6], mac_of(1), 60)), Ok(Route::Drop));
    }

    #[test]
    fn spoofed_and_malformed_frames_are_refused() {
        assert_eq!(route(1, &frame(mac_of(7), mac_of(2), 60)), Err(SendError::Spoofed));
        assert_eq!(route(1, &frame(mac_of(7), mac_of(1), 13)[..13]), Err(SendError::BadLength));
        assert_eq!(route(1, &frame(mac_of(7), mac_of(1), 1515)), Err(SendError::BadLength));
    }

    #[test]
    fn a_full_ring_drops_instead_of_growing() {
        let mut ring = RxRing::default();
        for i in 0..RX_RING_FRAMES + 10 {
            ring.push(alloc::vec![i as u8; 20]);
        }
        assert_eq!(ring.dropped, 10);
        assert_eq!(ring.pop().map(|f| f[0]), Some(0));
    }
}
