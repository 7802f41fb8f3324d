//! Frames the switch has delivered and their VMs have not taken yet.
//!
//! Every parked frame lives in one pool of frame-sized slots allocated at
//! boot: that pool is the global budget, so no flood, from VMs or from the
//! wire, makes the kernel allocate. One slot more, the staging slot, takes
//! a frame while the switch decides on it: a VM's frame is copied there
//! from its memory once, and parking it trades the slot for a free one
//! instead of copying it again. Each VM's receive ring is a list
//! threaded through the pool. Three bounds keep one VM from taking what
//! another needs:
//!
//! - a ring holds at most [`RX_RING_FRAMES`] frames (charged to its VM);
//! - one sender may hold at most a quarter of any ring, so a flood from one
//!   VM (or the wire) leaves room for everyone else's frames;
//! - when the pool runs out, the longest ring gives up its oldest frame
//!   (longest-queue drop): VMs that leave their frames unread lose them
//!   first, so no group of them can starve the rest.

use crate::collections::IndexedHeap;
use crate::sched::VmId;
use alloc::collections::TryReserveError;
use alloc::vec::Vec;
use core::cmp::Reverse;
use denali_abi::hypercall::FRAME_MAX;

/// Frames a VM's receive ring holds before it drops.
pub const RX_RING_FRAMES: u16 = 256;
/// Frames of one sender a ring holds: a flooding sender fills its share
/// and is dropped from then on, leaving room for everyone else's.
pub const RX_RING_PER_SENDER: u16 = RX_RING_FRAMES / 4;
/// Frames from the uplink a ring holds: the uplink carries every client
/// beyond the machine (a burst of a thousand connections arrives through
/// it), so it may take three quarters, still leaving a quarter to VMs.
pub const RX_RING_UPLINK: u16 = RX_RING_FRAMES / 4 * 3;
/// The sender id of frames from the uplink (VM ids are below 2^24).
pub const UPLINK_SENDER: u32 = u32::MAX;

/// The end of a list.
const NONE: u32 = u32::MAX;

/// Sender entries an empty ring keeps room for (32 bytes); a ring that
/// needed more gives the memory back when it empties.
const HELD_KEPT: usize = 4;

/// A slot's bookkeeping.
#[derive(Clone, Copy, Debug)]
struct Slot {
    /// The next slot in its ring (or in the free list).
    next: u32,
    /// Who sent the frame in it.
    sender: u32,
    /// The frame's length.
    len: u16,
}

/// A VM's receive ring: a list of slots, oldest first.
#[derive(Debug, Default)]
struct Ring {
    head: u32,
    tail: u32,
    len: u16,
    /// Its VM is gone: nothing more is parked here.
    closed: bool,
    /// Frames each sender holds in this ring, sorted by sender. Only
    /// senders with frames here have an entry. An empty ring keeps room for
    /// at most [`HELD_KEPT`] entries, so frames from a few senders do not
    /// allocate and free for every frame.
    held: Vec<(u32, u16)>,
}

/// What became of a frame handed to [`Parking::park`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parked {
    /// It is in the ring.
    Queued,
    /// It is in the ring; the pool was full, so the oldest frame of this
    /// VM's (the longest) ring was dropped for it.
    Evicted(VmId),
    /// Dropped: the ring, the sender's share of it, or the pool is full.
    Dropped,
}

/// The pool of slots and every VM's ring.
#[derive(Debug, Default)]
pub struct Parking {
    /// The frames' bytes, [`FRAME_MAX`] per slot (the pool's and the
    /// staging slot).
    bytes: Vec<u8>,
    slots: Vec<Slot>,
    /// Free slots, a list through `Slot::next`.
    free: u32,
    free_count: u32,
    /// The slot outside the pool that holds the frame being decided on.
    staging: u32,
    rings: Vec<Ring>,
    /// Each non-empty ring's length, longest first.
    longest: IndexedHeap<Reverse<u16>>,
}

impl Parking {
    /// A pool of `slots` frames and the staging slot, allocated now and
    /// never grown.
    pub fn with_slots(slots: u32) -> Result<Parking, TryReserveError> {
        let slots = slots.min(NONE - 2);
        let all = slots as usize + 1;
        let mut parking = Parking::default();
        parking.bytes.try_reserve_exact(all * FRAME_MAX)?;
        parking.bytes.resize(all * FRAME_MAX, 0);
        parking.slots.try_reserve_exact(all)?;
        parking.slots.extend((0..=slots).map(|i| Slot {
            next: if i + 1 < slots { i + 1 } else { NONE },
            sender: 0,
            len: 0,
        }));
        parking.free = if slots > 0 { 0 } else { NONE };
        parking.free_count = slots;
        parking.staging = slots;
        Ok(parking)
    }

    /// Makes room for the rings of VMs with ids below `count`.
    pub fn reserve(&mut self, count: usize) -> Result<(), TryReserveError> {
        self.rings.try_reserve_exact(count.saturating_sub(self.rings.len()))?;
        self.rings.resize_with(self.rings.len().max(count), Ring::default);
        self.longest.reserve(count)
    }

    /// Slots in the pool.
    pub fn capacity(&self) -> u32 {
        self.slots.len() as u32 - 1
    }

    /// Frames parked in all rings.
    pub fn parked(&self) -> u32 {
        self.capacity() - self.free_count
    }

    /// Frames in VM `vm`'s ring.
    pub fn len(&self, vm: VmId) -> u16 {
        self.rings.get(vm as usize).map_or(0, |ring| ring.len)
    }

    /// The first `len` bytes of the staging slot, to copy a frame into for
    /// [`Parking::park_staged`]; `None` past [`FRAME_MAX`], or before the
    /// pool is made. Its bytes past the frame are an earlier frame's: only
    /// the frame's length is ever read back.
    pub fn staging(&mut self, len: usize) -> Option<&mut [u8]> {
        let start = self.staging as usize * FRAME_MAX;
        self.bytes.get_mut(start..start + FRAME_MAX)?.get_mut(..len)
    }

    /// The first `len` bytes of the staging slot, as [`Parking::staging`].
    pub fn staged(&self, len: usize) -> Option<&[u8]> {
        let start = self.staging as usize * FRAME_MAX;
        self.bytes.get(start..start + FRAME_MAX)?.get(..len)
    }

    /// Puts a copy of `frame` (at most [`FRAME_MAX`] bytes) from `sender`
    /// in VM `to`'s ring, within the bounds above.
    pub fn park(&mut self, sender: u32, to: VmId, frame: &[u8]) -> Parked {
        let Some(room) = self.staging(frame.len()) else { return Parked::Dropped };
        room.copy_from_slice(frame);
        self.park_staged(sender, to, frame.len())
    }

    /// Puts the frame of `len` bytes in the staging slot, from `sender`, in
    /// VM `to`'s ring, within the bounds above, without copying it: the
    /// slot joins the ring and a free one becomes the staging slot.
    pub fn park_staged(&mut self, sender: u32, to: VmId, len: usize) -> Parked {
        let Some(ring) = self.rings.get(to as usize) else { return Parked::Dropped };
        let share = if sender == UPLINK_SENDER { RX_RING_UPLINK } else { RX_RING_PER_SENDER };
        if ring.closed || len > FRAME_MAX || ring.len >= RX_RING_FRAMES || held(ring, sender) >= share {
            return Parked::Dropped;
        }
        // When the pool is full the longest ring pays, unless it is this one.
        let victim = match self.longest.peek() {
            _ if self.free != NONE => None,
            Some((Reverse(len), victim)) if victim != to && len > self.len(to) => Some(victim),
            _ => return Parked::Dropped,
        };
        if self.rings[to as usize].held.try_reserve(1).is_err() {
            return Parked::Dropped;
        }
        let outcome = match victim {
            Some(victim) => {
                self.drop_oldest(victim);
                Parked::Evicted(victim)
            }
            None => Parked::Queued,
        };
        let slot = self.staging;
        self.staging = self.free;
        self.free = self.slots[self.staging as usize].next;
        self.free_count -= 1;
        self.slots[slot as usize] = Slot { next: NONE, sender, len: len as u16 };
        let ring = &mut self.rings[to as usize];
        if ring.len == 0 {
            ring.head = slot;
        } else {
            self.slots[ring.tail as usize].next = slot;
        }
        ring.tail = slot;
        ring.len += 1;
        match ring.held.binary_search_by_key(&sender, |&(s, _)| s) {
            Ok(at) => ring.held[at].1 += 1,
            Err(at) => ring.held.insert(at, (sender, 1)),
        }
        self.longest.set(to, Reverse(ring.len));
        outcome
    }

    /// The length of the oldest frame in VM `vm`'s ring.
    pub fn peek_len(&self, vm: VmId) -> Option<usize> {
        let ring = self.rings.get(vm as usize).filter(|ring| ring.len > 0)?;
        Some(usize::from(self.slots[ring.head as usize].len))
    }

    /// Hands the oldest frame in VM `vm`'s ring to `take` and frees it.
    pub fn pop<R>(&mut self, vm: VmId, take: impl FnOnce(&[u8]) -> R) -> Option<R> {
        let ring = self.rings.get(vm as usize).filter(|ring| ring.len > 0)?;
        let slot = self.slots[ring.head as usize];
        let start = ring.head as usize * FRAME_MAX;
        let result = take(&self.bytes[start..start + usize::from(slot.len)]);
        self.drop_oldest(vm);
        Some(result)
    }

    /// Gives back the room an empty ring keeps for its senders' counts (its
    /// VM goes to swap whole, keeping as little kernel memory as it can).
    pub fn release_room(&mut self, vm: VmId) {
        if let Some(ring) = self.rings.get_mut(vm as usize).filter(|ring| ring.len == 0) {
            ring.held = Vec::new();
        }
    }

    /// Drops every frame in VM `vm`'s ring and takes no more for it (the
    /// VM is gone).
    pub fn close(&mut self, vm: VmId) {
        while self.len(vm) > 0 {
            self.drop_oldest(vm);
        }
        if let Some(ring) = self.rings.get_mut(vm as usize) {
            ring.closed = true;
            ring.held = Vec::new();
        }
    }

    /// Frees the oldest slot of a non-empty ring.
    fn drop_oldest(&mut self, vm: VmId) {
        let ring = &mut self.rings[vm as usize];
        let slot = ring.head;
        let Slot { next, sender, .. } = self.slots[slot as usize];
        ring.head = next;
        ring.len -= 1;
        if let Ok(at) = ring.held.binary_search_by_key(&sender, |&(s, _)| s) {
            ring.held[at].1 -= 1;
            if ring.held[at].1 == 0 {
                ring.held.remove(at);
            }
        }
        if ring.len == 0 {
            if ring.held.capacity() > HELD_KEPT {
                ring.held = Vec::new();
            }
            self.longest.remove(vm);
        } else {
            self.longest.set(vm, Reverse(ring.len));
        }
        self.slots[slot as usize].next = self.free;
        self.free = slot;
        self.free_count += 1;
    }
}

/// Frames `sender` holds in `ring`.
fn held(ring: &Ring, sender: u32) -> u16 {
    ring.held.binary_search_by_key(&sender, |&(s, _)| s).map_or(0, |at| ring.held[at].1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parking(slots: u32, vms: usize) -> Parking {
        let mut parking = Parking::with_slots(slots).unwrap();
        parking.reserve(vms).unwrap();
        parking
    }

    #[test]
    fn frames_come_out_in_order_and_free_their_slots() {
        let mut p = parking(8, 2);
        for i in 0..3u8 {
            assert_eq!(p.park(1, 0, &[i; 60]), Parked::Queued);
        }
        assert_eq!((p.parked(), p.peek_len(0)), (3, Some(60)));
        let firsts: Vec<u8> = core::iter::from_fn(|| p.pop(0, |f| f[0])).collect();
        assert_eq!(firsts, [0, 1, 2]);
        assert_eq!((p.parked(), p.peek_len(0)), (0, None));
    }

    #[test]
    fn a_staged_frame_is_parked_as_copied_and_the_next_one_stages_elsewhere() {
        let mut p = parking(2, 1);
        p.staging(60).unwrap().fill(1);
        assert_eq!(p.park_staged(1, 0, 60), Parked::Queued);
        // Staging the next frame leaves the parked one as it was.
        p.staging(60).unwrap().fill(2);
        assert_eq!(p.park_staged(1, 0, 60), Parked::Queued);
        p.staging(60).unwrap().fill(3);
        assert_eq!(p.park_staged(1, 0, 60), Parked::Dropped, "the pool holds two");
        assert_eq!(p.staged(60).unwrap()[0], 3, "a refused frame stays where it was staged");
        let firsts: Vec<u8> = core::iter::from_fn(|| p.pop(0, |f| f[0])).collect();
        assert_eq!(firsts, [1, 2]);
        assert_eq!((p.parked(), p.capacity()), (0, 2));
        assert!(p.staging(FRAME_MAX + 1).is_none() && p.staged(FRAME_MAX + 1).is_none());
        assert!(Parking::default().staging(60).is_none(), "no pool, no staging slot");
    }

    #[test]
    fn a_full_ring_drops_instead_of_growing() {
        let mut p = parking(1024, 1);
        let queued = (0..RX_RING_FRAMES as u32 + 10).filter(|&i| p.park(i % 8, 0, &[i as u8; 20]) == Parked::Queued);
        assert_eq!(queued.count(), usize::from(RX_RING_FRAMES));
        assert_eq!(p.pop(0, |f| f[0]), Some(0));
    }

    #[test]
    fn a_flooding_sender_cannot_take_the_whole_ring() {
        let mut p = parking(1024, 1);
        let flooded = (0..1000).filter(|_| p.park(7, 0, &[0; 60]) == Parked::Queued).count();
        assert_eq!(flooded, usize::from(RX_RING_PER_SENDER));
        // Everyone else still gets in.
        assert_eq!(p.park(1, 0, &[1; 60]), Parked::Queued);
        assert_eq!(p.park(UPLINK_SENDER, 0, &[2; 60]), Parked::Queued);
        // Taking the flooder's frames gives its share back.
        p.pop(0, |_| ());
        assert_eq!(p.park(7, 0, &[0; 60]), Parked::Queued);
        assert_eq!(p.park(7, 0, &[0; 60]), Parked::Dropped);
    }

    #[test]
    fn the_uplink_may_take_three_quarters_of_a_ring() {
        let mut p = parking(1024, 1);
        let taken = (0..1000).filter(|_| p.park(UPLINK_SENDER, 0, &[0; 60]) == Parked::Queued).count();
        assert_eq!(taken, usize::from(RX_RING_UPLINK));
        assert_eq!(p.park(1, 0, &[1; 60]), Parked::Queued, "a quarter stays for VMs");
    }

    #[test]
    fn a_refused_sender_leaves_nothing_behind() {
        let mut p = parking(4, 1);
        for sender in 0..RX_RING_PER_SENDER as u32 {
            p.park(sender, 0, &[0; 60]);
        }
        // The pool is full and this is the longest ring: refused, and no
        // entry for the refused sender.
        assert_eq!(p.park(999, 0, &[0; 60]), Parked::Dropped);
        assert!(p.rings[0].held.iter().all(|&(s, _)| s != 999));
        p.pop(0, |_| ());
        while p.pop(0, |_| ()).is_some() {}
        assert_eq!(p.parked(), 0);
        assert!(p.rings[0].held.capacity() <= HELD_KEPT, "an empty ring keeps room for a few senders at most");
    }

    #[test]
    fn a_ring_that_held_many_senders_gives_their_memory_back_and_a_closed_one_keeps_none() {
        let mut p = parking(64, 2);
        for sender in 0..32 {
            assert_eq!(p.park(sender, 0, &[0; 60]), Parked::Queued);
        }
        while p.pop(0, |_| ()).is_some() {}
        assert_eq!(p.rings[0].held.capacity(), 0);
        p.park(7, 1, &[0; 60]);
        p.pop(1, |_| ());
        assert!(p.rings[1].held.capacity() > 0, "one sender's entry is kept for its next frame");
        p.release_room(1);
        assert_eq!(p.rings[1].held.capacity(), 0, "a VM swapped out whole keeps none");
        p.park(7, 1, &[0; 60]);
        p.pop(1, |_| ());
        p.close(1);
        assert_eq!(p.rings[1].held.capacity(), 0);
    }

    #[test]
    fn nothing_is_parked_for_a_vm_that_is_gone() {
        let mut p = parking(4, 2);
        p.park(1, 0, &[0; 60]);
        p.close(0);
        assert_eq!((p.park(1, 0, &[0; 60]), p.parked()), (Parked::Dropped, 0));
    }

    #[test]
    fn when_the_pool_is_full_the_longest_ring_pays() {
        let mut p = parking(8, 3);
        // VM 0 never reads: it holds 6 frames from 6 senders.
        for sender in 10..16 {
            assert_eq!(p.park(sender, 0, &[sender as u8; 60]), Parked::Queued);
        }
        assert_eq!(p.park(1, 1, &[1; 60]), Parked::Queued);
        assert_eq!(p.park(1, 1, &[1; 60]), Parked::Queued);
        // Full. A frame for VM 2 takes VM 0's oldest.
        assert_eq!(p.park(1, 2, &[2; 60]), Parked::Evicted(0));
        assert_eq!((p.len(0), p.len(2), p.parked()), (5, 1, 8));
        assert_eq!(p.pop(0, |f| f[0]), Some(11), "the oldest went");
    }

    #[test]
    fn frames_for_unknown_vms_or_too_long_are_dropped() {
        let mut p = parking(4, 1);
        assert_eq!(p.park(0, 5, &[0; 60]), Parked::Dropped);
        assert_eq!(p.park(0, 0, &[0; FRAME_MAX + 1]), Parked::Dropped);
        assert_eq!(p.parked(), 0);
    }
}
