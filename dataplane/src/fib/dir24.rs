//! IPv4 longest-prefix match in DPDK's DIR-24-8 layout: one memory access
//! for a destination covered by prefixes of up to 24 bits, two for longer
//! ones (host routes included).
//!
//! ```text
//!  addr: [ top 24 bits ][ low 8 ]
//!           │
//!  tbl24[top 24] ── value + 1 (0: no route) ─────────────► done
//!           └─ GROUP | g ──► tbl8[g * 256 + low 8] ── value + 1 ──► done
//! ```
//!
//! The table is built once from the complete route list ([`Dir24::build`]):
//! prefixes are applied shortest first, so a longer prefix always overwrites
//! a shorter one and the insertion order of equal-length prefixes decides
//! between duplicates (the last wins). A prefix of 24 bits or less fills the
//! tbl24 entries it covers (and the tbl8 groups under them); a longer one
//! turns its tbl24 entry into a group of 256 entries inheriting the shorter
//! route and fills its part of it.
//!
//! Memory: tbl24 is 2^24 × 4 bytes = 64 MiB of virtual memory, zeroed
//! lazily by the kernel (only the pages that routes touch are backed) and
//! advised onto transparent huge pages; each group is 1 KiB. Values must be
//! below 2^31 - 1.

/// Marks a tbl24 entry that points to a tbl8 group.
const GROUP: u32 = 1 << 31;
const TBL24_ENTRIES: usize = 1 << 24;
const GROUP_ENTRIES: usize = 256;

/// Why a route table could not be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Dir24Error {
    #[error("prefix length {0} exceeds 32")]
    PrefixTooLong(u8),
    #[error("value {0} is too large for the table (at most 2^31 - 2)")]
    ValueTooLarge(u32),
}

/// An IPv4 route table (immutable after [`Dir24::build`]).
pub struct Dir24 {
    tbl24: Vec<u32>,
    tbl8: Vec<u32>,
}

impl std::fmt::Debug for Dir24 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dir24").field("groups", &(self.tbl8.len() / GROUP_ENTRIES)).finish()
    }
}

impl Dir24 {
    /// Builds the table from `(address, prefix length, value)`: host bits
    /// of the address are ignored; for a prefix given twice the later value
    /// wins.
    pub fn build(routes: &[(u32, u8, u32)]) -> Result<Dir24, Dir24Error> {
        let mut order: Vec<usize> = (0..routes.len()).collect();
        order.sort_by_key(|&i| routes[i].1); // stable: later duplicates win
        let mut t = Dir24 { tbl24: fastmem::zeroed_u32(TBL24_ENTRIES), tbl8: Vec::new() };
        for i in order {
            let (addr, len, value) = routes[i];
            if len > 32 {
                return Err(Dir24Error::PrefixTooLong(len));
            }
            if value >= GROUP - 1 {
                return Err(Dir24Error::ValueTooLarge(value));
            }
            t.insert(addr, len, value + 1);
        }
        Ok(t)
    }

    fn insert(&mut self, addr: u32, len: u8, entry: u32) {
        let net = if len == 0 { 0 } else { addr & (u32::MAX << (32 - u32::from(len))) };
        if len <= 24 {
            let first = (net >> 8) as usize;
            let count = 1usize << (24 - len);
            for e in first..first + count {
                let cur = self.tbl24[e];
                if cur & GROUP != 0 {
                    // A group made by a longer prefix inserted before? Not
                    // with shortest-first order: every entry of it is ours.
                    let g = (cur & !GROUP) as usize * GROUP_ENTRIES;
                    self.tbl8[g..g + GROUP_ENTRIES].fill(entry);
                } else {
                    self.tbl24[e] = entry;
                }
            }
            return;
        }
        let e = (net >> 8) as usize;
        let cur = self.tbl24[e];
        let g = if cur & GROUP != 0 {
            (cur & !GROUP) as usize
        } else {
            let g = self.tbl8.len() / GROUP_ENTRIES;
            // The group inherits the shorter route that covered the entry.
            self.tbl8.extend(std::iter::repeat_n(cur, GROUP_ENTRIES));
            self.tbl24[e] = GROUP | g as u32;
            g
        };
        let first = (net & 0xff) as usize;
        let count = 1usize << (32 - len);
        self.tbl8[g * GROUP_ENTRIES + first..g * GROUP_ENTRIES + first + count].fill(entry);
    }

    /// The value of the longest prefix containing `addr`.
    #[inline(always)]
    pub fn lookup(&self, addr: u32) -> Option<u32> {
        let mut e = self.tbl24[(addr >> 8) as usize];
        if e & GROUP != 0 {
            e = self.tbl8[(e & !GROUP) as usize * GROUP_ENTRIES + (addr & 0xff) as usize];
        }
        e.checked_sub(1)
    }

    /// tbl8 groups in use.
    pub fn groups(&self) -> usize {
        self.tbl8.len() / GROUP_ENTRIES
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn reference(routes: &[(u32, u8, u32)], addr: u32) -> Option<u32> {
        let mask = |l: u8| if l == 0 { 0 } else { u32::MAX << (32 - u32::from(l)) };
        let mut best: Option<(u8, u32)> = None;
        for &(a, l, v) in routes {
            if addr & mask(l) == a & mask(l) && best.is_none_or(|(bl, _)| l >= bl) {
                best = Some((l, v));
            }
        }
        best.map(|b| b.1)
    }

    #[test]
    fn host_routes_over_shorter_prefixes() {
        let routes = [(0x0a00_0000, 8, 1), (0x0a01_0203, 32, 2), (0x0a01_0200, 24, 3), (0, 0, 4)];
        let t = Dir24::build(&routes).unwrap();
        assert_eq!(t.lookup(0x0a01_0203), Some(2));
        assert_eq!(t.lookup(0x0a01_0204), Some(3));
        assert_eq!(t.lookup(0x0a02_0000), Some(1));
        assert_eq!(t.lookup(0x0b00_0000), Some(4));
        assert_eq!(t.groups(), 1);
        assert_eq!(Dir24::build(&[(0, 33, 1)]).unwrap_err(), Dir24Error::PrefixTooLong(33));
        assert!(Dir24::build(&[]).unwrap().lookup(1).is_none());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn matches_linear_scan(
            routes in proptest::collection::vec(((0u32..4).prop_map(|b| 0x0a00_0000 | b << 8), any::<u32>(), 0u8..=32, 0u32..1000), 0..30),
            probes in proptest::collection::vec(any::<u32>(), 0..30),
        ) {
            // Addresses near one another so that prefixes overlap.
            let routes: Vec<(u32, u8, u32)> = routes.iter().map(|&(base, r, l, v)| (base | (r & 0xff), l, v)).collect();
            let t = Dir24::build(&routes).unwrap();
            for addr in probes.iter().map(|p| 0x0a00_0000 | (p & 0x3ff)).chain(routes.iter().map(|r| r.0)).chain(probes.iter().copied()) {
                prop_assert_eq!(t.lookup(addr), reference(&routes, addr), "addr {:#x}", addr);
            }
        }
    }
}
