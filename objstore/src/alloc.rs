//! The data-block allocator: a bitmap over the data area, never written to the device.
//!
//! At mount it is rebuilt from the index (every block a chunk points at is in use, everything
//! else is free), which is why it needs no journal of its own. Allocation is next-fit from a
//! cursor, so a stream of puts lands on consecutive blocks (runs that behave like extents on the
//! device) and the search is amortised O(1) while the device has free space.
//!
//! Invariants: a block is handed out at most once until freed; freeing a free block or marking a
//! used one is reported (it would mean two chunks share a block).
//! Memory: one bit per data block (32 KiB per GiB of device), allocated once.

use crate::{Error, Result};

#[derive(Debug, Clone)]
pub struct Allocator {
    start: u64,
    len: u64,
    /// Bit set = block in use.
    used: Vec<u64>,
    free: u64,
    cursor: u64,
}

impl Allocator {
    /// All `len` blocks from `start` free.
    pub fn new(start: u64, len: u64) -> Allocator {
        Allocator { start, len, used: vec![0; len.div_ceil(64) as usize], free: len, cursor: 0 }
    }

    pub fn free_blocks(&self) -> u64 {
        self.free
    }

    pub fn total_blocks(&self) -> u64 {
        self.len
    }

    fn bit(&self, lba: u64) -> Result<(usize, u64)> {
        if lba < self.start || lba >= self.start + self.len {
            return Err(Error::Corrupt(format!("block {lba} outside the data area")));
        }
        let i = lba - self.start;
        Ok(((i / 64) as usize, 1u64 << (i % 64)))
    }

    pub fn is_used(&self, lba: u64) -> bool {
        self.bit(lba).map(|(w, m)| self.used[w] & m != 0).unwrap_or(false)
    }

    /// Mark `lba` in use (mount-time rebuild). Fails if it already is or is out of range.
    pub fn mark_used(&mut self, lba: u64) -> Result<()> {
        let (w, m) = self.bit(lba)?;
        if self.used[w] & m != 0 {
            return Err(Error::Corrupt(format!("block {lba} referenced twice")));
        }
        self.used[w] |= m;
        self.free -= 1;
        Ok(())
    }

    /// A free block, next after the previous allocation, or `None` when full.
    pub fn alloc(&mut self) -> Option<u64> {
        if self.free == 0 {
            return None;
        }
        let words = self.used.len();
        let start_w = (self.cursor / 64) as usize;
        let start_bit = self.cursor % 64;
        let tail = self.len % 64;
        // Words from the cursor's onwards, wrapping; the cursor's word is visited again last so
        // its bits below the cursor are found too.
        for k in 0..=words {
            let w = (start_w + k) % words;
            let mut cand = !self.used[w];
            if k == 0 {
                cand &= u64::MAX << start_bit;
            }
            if w == words - 1 && tail != 0 {
                cand &= (1u64 << tail) - 1;
            }
            if cand != 0 {
                let i = w as u64 * 64 + u64::from(cand.trailing_zeros());
                self.used[w] |= 1u64 << (i % 64);
                self.free -= 1;
                self.cursor = (i + 1) % self.len;
                return Some(self.start + i);
            }
        }
        None
    }

    /// Return `lba` to the free pool.
    pub fn free(&mut self, lba: u64) -> Result<()> {
        let (w, m) = self.bit(lba)?;
        if self.used[w] & m == 0 {
            return Err(Error::Corrupt(format!("block {lba} freed twice")));
        }
        self.used[w] &= !m;
        self.free += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    #[test]
    fn sequential_then_full_then_reuse() {
        let mut a = Allocator::new(100, 130);
        let got: Vec<u64> = (0..130).map(|_| a.alloc().unwrap()).collect();
        assert_eq!(got, (100..230).collect::<Vec<_>>());
        assert_eq!(a.alloc(), None);
        a.free(150).unwrap();
        a.free(101).unwrap();
        let mut again = [a.alloc().unwrap(), a.alloc().unwrap()];
        again.sort_unstable();
        assert_eq!(again, [101, 150]);
        assert_eq!(a.alloc(), None);
        assert!(a.free(99).is_err());
        assert!(a.free(230).is_err());
        a.free(120).unwrap();
        assert!(a.free(120).is_err());
        assert!(a.mark_used(121).is_err());
    }

    proptest! {
        /// Against a model set: never hands out a used block, finds a free one whenever one
        /// exists, and keeps the free count.
        #[test]
        fn matches_model(len in 1u64..300, ops in proptest::collection::vec((any::<bool>(), any::<u64>()), 0..600)) {
            let mut a = Allocator::new(10, len);
            let mut used = BTreeSet::new();
            for (alloc, r) in ops {
                if alloc || used.is_empty() {
                    match a.alloc() {
                        Some(b) => {
                            prop_assert!((10..10 + len).contains(&b));
                            prop_assert!(used.insert(b), "block {} handed out twice", b);
                        }
                        None => prop_assert_eq!(used.len() as u64, len),
                    }
                } else {
                    let b = *used.iter().nth((r % used.len() as u64) as usize).unwrap();
                    used.remove(&b);
                    a.free(b).unwrap();
                }
                prop_assert_eq!(a.free_blocks(), len - used.len() as u64);
            }
        }
    }
}
