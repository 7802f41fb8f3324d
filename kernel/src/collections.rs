//! Containers the kernel's bookkeeping shares: sized once for every VM of a
//! boot, so that nothing a VM does at run time makes them allocate.

use alloc::collections::TryReserveError;
use alloc::vec::Vec;

/// No position: the id is not in the heap.
const ABSENT: u32 = u32::MAX;

/// A binary min-heap of ids (below the capacity it was sized for), at most
/// one entry per id, each with a key that can be changed or removed in
/// O(log n). The alarm clock keeps one deadline per VM in it; the virtual
/// switch keeps the length of each receive ring.
///
/// Because an id has at most one entry, the heap never holds more entries
/// than ids: setting a key a million times costs no memory.
#[derive(Debug, Default)]
pub struct IndexedHeap<K> {
    /// `(key, id)`, a binary heap on the pair.
    entries: Vec<(K, u32)>,
    /// Where each id's entry is in `entries`, or [`ABSENT`].
    position: Vec<u32>,
}

impl<K: Ord + Copy> IndexedHeap<K> {
    /// An empty heap.
    pub const fn new() -> Self {
        IndexedHeap { entries: Vec::new(), position: Vec::new() }
    }

    /// Makes room for ids below `count`, so that no later call allocates.
    pub fn reserve(&mut self, count: usize) -> Result<(), TryReserveError> {
        self.entries.try_reserve_exact(count.saturating_sub(self.entries.len()))?;
        self.position.try_reserve_exact(count.saturating_sub(self.position.len()))?;
        self.position.resize(self.position.len().max(count), ABSENT);
        Ok(())
    }

    /// Ids the heap has room for.
    pub fn capacity(&self) -> usize {
        self.position.len()
    }

    /// Entries in the heap.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the heap is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// `id`'s key, if it has an entry.
    pub fn get(&self, id: u32) -> Option<K> {
        let at = *self.position.get(id as usize)?;
        (at != ABSENT).then(|| self.entries[at as usize].0)
    }

    /// Gives `id` the key `key`, adding its entry if it had none. An id
    /// beyond the reserved capacity is refused (false): the caller sized
    /// the heap for every id it will use.
    pub fn set(&mut self, id: u32, key: K) -> bool {
        let Some(&at) = self.position.get(id as usize) else { return false };
        if at == ABSENT {
            let at = self.entries.len();
            if self.entries.try_reserve(1).is_err() {
                return false;
            }
            self.entries.push((key, id));
            self.position[id as usize] = at as u32;
            self.sift_up(at);
        } else {
            let at = at as usize;
            self.entries[at].0 = key;
            self.sift_up(at);
            self.sift_down(self.position[id as usize] as usize);
        }
        true
    }

    /// Removes `id`'s entry, if any; returns its key.
    pub fn remove(&mut self, id: u32) -> Option<K> {
        let at = *self.position.get(id as usize)?;
        if at == ABSENT {
            return None;
        }
        let at = at as usize;
        let last = self.entries.len() - 1;
        self.swap(at, last);
        let (key, _) = self.entries.pop().expect("not empty");
        self.position[id as usize] = ABSENT;
        if at < self.entries.len() {
            self.sift_up(at);
            self.sift_down(at);
        }
        Some(key)
    }

    /// The smallest entry.
    pub fn peek(&self) -> Option<(K, u32)> {
        self.entries.first().copied()
    }

    /// Removes and returns the smallest entry.
    pub fn pop(&mut self) -> Option<(K, u32)> {
        let (key, id) = self.peek()?;
        self.remove(id);
        Some((key, id))
    }

    fn swap(&mut self, a: usize, b: usize) {
        self.entries.swap(a, b);
        self.position[self.entries[a].1 as usize] = a as u32;
        self.position[self.entries[b].1 as usize] = b as u32;
    }

    fn sift_up(&mut self, mut at: usize) {
        while at > 0 {
            let parent = (at - 1) / 2;
            if self.entries[parent] <= self.entries[at] {
                break;
            }
            self.swap(parent, at);
            at = parent;
        }
    }

    fn sift_down(&mut self, mut at: usize) {
        loop {
            let (left, right) = (2 * at + 1, 2 * at + 2);
            let mut smallest = at;
            if left < self.entries.len() && self.entries[left] < self.entries[smallest] {
                smallest = left;
            }
            if right < self.entries.len() && self.entries[right] < self.entries[smallest] {
                smallest = right;
            }
            if smallest == at {
                break;
            }
            self.swap(at, smallest);
            at = smallest;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_can_be_set_changed_and_removed_in_order() {
        let mut heap = IndexedHeap::new();
        heap.reserve(10).unwrap();
        for (id, key) in [(3, 30), (1, 10), (7, 70), (2, 20), (9, 5)] {
            assert!(heap.set(id, key));
        }
        assert!(heap.set(9, 50)); // moves down
        assert!(heap.set(7, 1)); // moves up
        assert_eq!(heap.remove(2), Some(20));
        assert_eq!(heap.remove(2), None);
        let order: Vec<_> = core::iter::from_fn(|| heap.pop()).collect();
        assert_eq!(order, [(1, 7), (10, 1), (30, 3), (50, 9)]);
    }

    #[test]
    fn an_id_has_one_entry_however_often_it_is_set() {
        let mut heap = IndexedHeap::new();
        heap.reserve(4).unwrap();
        let capacity = heap.entries.capacity();
        for key in (0..1_000_000u64).rev() {
            heap.set(2, key);
        }
        assert_eq!((heap.len(), heap.peek()), (1, Some((0, 2))));
        assert_eq!(heap.entries.capacity(), capacity, "setting a key never allocates");
        assert!(!heap.set(4, 1), "an id beyond the reserved capacity is refused");
    }

    #[test]
    fn a_random_workload_matches_a_model() {
        let mut heap = IndexedHeap::new();
        heap.reserve(64).unwrap();
        let mut model = alloc::collections::BTreeMap::new();
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let id = (seed % 64) as u32;
            match seed >> 60 {
                0..=9 => {
                    heap.set(id, seed >> 40);
                    model.insert(id, seed >> 40);
                }
                10..=12 => assert_eq!(heap.remove(id), model.remove(&id)),
                _ => {
                    let expected = model.iter().map(|(&id, &key)| (key, id)).min();
                    assert_eq!(heap.pop(), expected);
                    if let Some((_, id)) = expected {
                        model.remove(&id);
                    }
                }
            }
            assert_eq!(heap.len(), model.len());
        }
    }
}
