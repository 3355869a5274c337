//! A fixed-capacity hash map for the mapping core's indices: open addressing,
//! linear probing, backward-shift deletion (no tombstones), every slot
//! allocated at construction.
//!
//! Invariants:
//! * slots = next power of two ≥ 2 × capacity, so the load factor stays at or
//!   below one half and a probe always ends on an empty slot;
//! * every entry lies between its home slot and the first empty slot after it
//!   (the linear-probing invariant; [`FixedMap::remove`] keeps it by shifting
//!   later entries back instead of leaving tombstones);
//! * [`FixedMap::insert`] refuses a new key when `len == capacity`: the map
//!   never grows and never allocates after [`FixedMap::new`].
//!
//! Hashing: splitmix64 over the key's words, mixed with a seed from the
//! configuration so a remote sender cannot aim keys at one probe chain.

use super::mix64;

/// A key of a [`FixedMap`]: two words to hash, equality to compare.
pub(crate) trait FixedKey: Copy + Eq {
    fn words(&self) -> [u64; 2];
}

/// The map is full: `capacity` entries, the new key is not among them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Full;

#[derive(Debug, Clone)]
pub(crate) struct FixedMap<K, V> {
    slots: Vec<Option<(K, V)>>,
    mask: usize,
    len: usize,
    capacity: usize,
    seed: u64,
}

impl<K: FixedKey, V: Copy> FixedMap<K, V> {
    /// A map for up to `capacity` entries (at least 1).
    pub(crate) fn new(capacity: usize, seed: u64) -> Self {
        let capacity = capacity.max(1);
        let slot_count = (capacity * 2).next_power_of_two();
        FixedMap { slots: vec![None; slot_count], mask: slot_count - 1, len: 0, capacity, seed }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// Bytes held by the slots.
    pub(crate) fn memory_bytes(&self) -> usize {
        self.slots.len() * std::mem::size_of::<Option<(K, V)>>()
    }

    fn home(&self, key: &K) -> usize {
        let [a, b] = key.words();
        (mix64(mix64(a ^ self.seed) ^ b) as usize) & self.mask
    }

    /// Slot holding `key`, or the empty slot where it would go.
    fn find(&self, key: &K) -> (usize, bool) {
        let mut i = self.home(key);
        loop {
            match &self.slots[i] {
                None => return (i, false),
                Some((k, _)) if k == key => return (i, true),
                Some(_) => i = (i + 1) & self.mask,
            }
        }
    }

    pub(crate) fn get(&self, key: &K) -> Option<V> {
        match self.find(key) {
            (i, true) => self.slots[i].map(|(_, v)| v),
            _ => None,
        }
    }

    pub(crate) fn contains(&self, key: &K) -> bool {
        self.find(key).1
    }

    /// Inserts or replaces; returns the previous value. Refuses a new key
    /// when the map holds `capacity` entries.
    pub(crate) fn insert(&mut self, key: K, value: V) -> Result<Option<V>, Full> {
        let (i, found) = self.find(&key);
        if found {
            let old = self.slots[i].map(|(_, v)| v);
            self.slots[i] = Some((key, value));
            return Ok(old);
        }
        if self.len == self.capacity {
            return Err(Full);
        }
        self.slots[i] = Some((key, value));
        self.len += 1;
        Ok(None)
    }

    /// Removes `key`; returns its value.
    pub(crate) fn remove(&mut self, key: &K) -> Option<V> {
        let (mut hole, found) = self.find(key);
        if !found {
            return None;
        }
        let removed = self.slots[hole].take().map(|(_, v)| v);
        self.len -= 1;
        // Backward shift: move back every later entry of the run that may
        // live in the hole (its home is not cyclically after the hole).
        let mut j = (hole + 1) & self.mask;
        while let Some((k, _)) = &self.slots[j] {
            let home = self.home(k);
            let from_home = j.wrapping_sub(home) & self.mask;
            let from_hole = j.wrapping_sub(hole) & self.mask;
            if from_home >= from_hole {
                self.slots[hole] = self.slots[j].take();
                hole = j;
            }
            j = (j + 1) & self.mask;
        }
        removed
    }

    /// Removes every entry (time proportional to the capacity, no allocation).
    pub(crate) fn clear(&mut self) {
        self.slots.fill(None);
        self.len = 0;
    }

    /// Every entry, in slot order (slow path: listings, checks).
    pub(crate) fn iter(&self) -> impl Iterator<Item = (K, V)> + '_ {
        self.slots.iter().filter_map(|slot| *slot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    impl FixedKey for u32 {
        fn words(&self) -> [u64; 2] {
            [u64::from(*self), 0]
        }
    }

    #[test]
    fn capacity_is_enforced() {
        let mut map: FixedMap<u32, u32> = FixedMap::new(3, 1);
        for k in 0..3 {
            assert_eq!(map.insert(k, k * 10), Ok(None));
        }
        assert_eq!(map.insert(9, 0), Err(Full));
        assert_eq!(map.insert(1, 11), Ok(Some(10)));
        assert_eq!(map.len(), 3);
        assert_eq!(map.remove(&1), Some(11));
        assert_eq!(map.insert(9, 90), Ok(None));
        assert_eq!(map.get(&9), Some(90));
        assert_eq!(map.capacity(), 3);
        assert_eq!(map.slots.len(), 8);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u32, u32),
        Remove(u32),
    }

    proptest! {
        /// Behaves like `HashMap` with a capacity limit, on small key spaces
        /// (long probe chains, many wrap-arounds and backward shifts).
        #[test]
        fn matches_a_model(
            capacity in 1usize..40,
            seed in any::<u64>(),
            ops in proptest::collection::vec(
                prop_oneof![
                    (0u32..64, any::<u32>()).prop_map(|(k, v)| Op::Insert(k, v)),
                    (0u32..64).prop_map(Op::Remove),
                ],
                0..400,
            ),
        ) {
            let mut map = FixedMap::new(capacity, seed);
            let mut model: HashMap<u32, u32> = HashMap::new();
            for op in ops {
                match op {
                    Op::Insert(k, v) => {
                        let expected = if model.contains_key(&k) || model.len() < capacity {
                            Ok(model.insert(k, v))
                        } else {
                            Err(Full)
                        };
                        prop_assert_eq!(map.insert(k, v), expected);
                    }
                    Op::Remove(k) => prop_assert_eq!(map.remove(&k), model.remove(&k)),
                }
                prop_assert_eq!(map.len(), model.len());
            }
            for k in 0..64 {
                prop_assert_eq!(map.get(&k), model.get(&k).copied());
                prop_assert_eq!(map.contains(&k), model.contains_key(&k));
            }
            let mut listed: Vec<(u32, u32)> = map.iter().collect();
            listed.sort_unstable();
            let mut expected: Vec<(u32, u32)> = model.into_iter().collect();
            expected.sort_unstable();
            prop_assert_eq!(listed, expected);
        }
    }
}
