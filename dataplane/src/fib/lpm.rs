//! Longest-prefix-match tables for IPv4 and IPv6 routes.
//!
//! [`Lpm<N>`] maps prefixes of `N`-byte keys to `u32` values (route or next-hop
//! indices). It is built once at start-up with [`Lpm::insert`] and then only read:
//! lookups take `&self`, the table has no interior mutability, and it is `Send + Sync`,
//! so one table can be shared by all worker cores (e.g. in an `Arc`).
//!
//! Design: a multibit trie with stride 8 and controlled prefix expansion. Each node
//! is 256 entries, one per value of the key byte at its depth; all nodes live in one
//! `Vec` and refer to their children by index. A prefix of length `p > 0` lives in
//! the node at depth `(p - 1) / 8` and is expanded to the `2^(8 - r)` entries that
//! share its top `r = p - 8 * depth` bits of that byte (`/0` fills every root entry).
//! An entry holds an optional child node and an optional leaf (value + prefix length);
//! a leaf is only overwritten by a prefix at least as long, so insertion order does not
//! matter. A lookup walks at most `N` nodes, keeping the last leaf seen: a leaf in a
//! deeper node always belongs to a longer prefix.
//!
//! ```text
//! key:    [ b0 ][ b1 ][ b2 ][ b3 ]          10.1.0.0/16 -> depth 1, entry b1 = 1
//! root ---b0=10--> node A ---b1=1--> (leaf /16)
//! ```
//!
//! Memory: each node is 256 × 12 bytes (3 KiB). The node capacity is fixed by
//! [`Lpm::new`]; nodes are allocated as needed up to it and never freed.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

/// Why a prefix could not be inserted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LpmError {
    /// The prefix length is longer than the key.
    #[error("prefix length {prefix_len} exceeds the {max_len}-bit key")]
    PrefixTooLong {
        /// The requested prefix length in bits.
        prefix_len: u8,
        /// The key length in bits.
        max_len: usize,
    },
    /// Inserting the prefix would need more trie nodes than the table's capacity.
    #[error("LPM table full: all {max_nodes} trie nodes in use")]
    Full {
        /// The node capacity given to [`Lpm::new`].
        max_nodes: usize,
    },
}

/// Marks an entry without a child node.
const NO_CHILD: u32 = u32::MAX;
/// Marks an entry without a leaf (greater than any prefix length).
const NO_LEAF: u8 = u8::MAX;
/// Entries per node (stride 8).
const NODE_SIZE: usize = 256;

/// One slot of a trie node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    /// Index of the child node, or [`NO_CHILD`].
    child: u32,
    /// Value of the leaf, meaningful when `leaf_len != NO_LEAF`.
    value: u32,
    /// Prefix length of the leaf, or [`NO_LEAF`].
    leaf_len: u8,
}

const EMPTY: Entry = Entry { child: NO_CHILD, value: 0, leaf_len: NO_LEAF };

/// A longest-prefix-match table over `N`-byte keys (see the module documentation).
#[derive(Clone)]
pub struct Lpm<const N: usize> {
    /// All nodes, `NODE_SIZE` entries each; node 0 is the root.
    entries: Vec<Entry>,
    /// Node capacity (at least 1, the root).
    max_nodes: usize,
}

/// An IPv4 table (4-byte keys).
pub type Lpm4 = Lpm<4>;

/// An IPv6 table (16-byte keys).
pub type Lpm6 = Lpm<16>;

impl<const N: usize> Lpm<N> {
    /// The key length in bits.
    pub const KEY_BITS: usize = 8 * N;

    /// An empty table that may use up to `max_nodes` trie nodes of 3 KiB each (at
    /// least 1: the root, allocated now; at most `u32::MAX`). A prefix of length `p` needs up to
    /// `(p - 1) / 8` nodes below the root, shared with prefixes that start the same way.
    pub fn new(max_nodes: usize) -> Lpm<N> {
        Lpm { entries: vec![EMPTY; NODE_SIZE], max_nodes: max_nodes.clamp(1, NO_CHILD as usize) }
    }

    /// The number of trie nodes in use, root included.
    pub fn node_count(&self) -> usize {
        self.entries.len() / NODE_SIZE
    }

    /// The node capacity.
    pub fn max_nodes(&self) -> usize {
        self.max_nodes
    }

    /// Inserts `key/prefix_len` with `value`. Bits of `key` past `prefix_len` are
    /// ignored. Inserting a prefix that is already present replaces its value.
    ///
    /// Errors (the table is unchanged): [`LpmError::PrefixTooLong`] if `prefix_len`
    /// exceeds `8 * N`; [`LpmError::Full`] if the prefix needs more nodes than remain.
    pub fn insert(&mut self, key: [u8; N], prefix_len: u8, value: u32) -> Result<(), LpmError> {
        let len = usize::from(prefix_len);
        if len > Self::KEY_BITS {
            return Err(LpmError::PrefixTooLong { prefix_len, max_len: Self::KEY_BITS });
        }
        let depth = len.saturating_sub(1) / 8;

        // Follow the existing path first, so that a full table is left unchanged.
        let mut existing = 0;
        let mut node = 0usize;
        for &byte in &key[..depth] {
            let child = self.entries[node * NODE_SIZE + usize::from(byte)].child;
            if child == NO_CHILD {
                break;
            }
            existing += 1;
            node = child as usize;
        }
        let needed = depth - existing;
        if self.node_count() + needed > self.max_nodes {
            return Err(LpmError::Full { max_nodes: self.max_nodes });
        }

        for &byte in &key[existing..depth] {
            let new_node = self.node_count();
            self.entries.extend_from_slice(&[EMPTY; NODE_SIZE]);
            // Below NO_CHILD: `new` caps max_nodes at u32::MAX.
            self.entries[node * NODE_SIZE + usize::from(byte)].child = new_node as u32;
            node = new_node;
        }

        // Expand the prefix over the entries of its last byte.
        let significant_bits = len - 8 * depth; // 0 only for /0
        let first =
            if significant_bits == 0 { 0 } else { usize::from(key[depth] & (0xffu8 << (8 - significant_bits))) };
        let count = 1usize << (8 - significant_bits);
        let base = node * NODE_SIZE;
        for entry in &mut self.entries[base + first..base + first + count] {
            if entry.leaf_len == NO_LEAF || entry.leaf_len <= prefix_len {
                entry.leaf_len = prefix_len;
                entry.value = value;
            }
        }
        Ok(())
    }

    /// The value of the longest prefix containing `key`, if any.
    #[inline]
    pub fn lookup(&self, key: &[u8; N]) -> Option<u32> {
        self.lookup_with_len(key).map(|(value, _)| value)
    }

    /// The value and prefix length of the longest prefix containing `key`, if any.
    pub fn lookup_with_len(&self, key: &[u8; N]) -> Option<(u32, u8)> {
        let mut best = None;
        let mut node = 0usize;
        for &byte in key {
            let entry = self.entries[node * NODE_SIZE + usize::from(byte)];
            if entry.leaf_len != NO_LEAF {
                best = Some((entry.value, entry.leaf_len));
            }
            if entry.child == NO_CHILD {
                break;
            }
            node = entry.child as usize;
        }
        best
    }
}

impl<const N: usize> fmt::Debug for Lpm<N> {
    /// Shows the key width and node usage, not the entries.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lpm")
            .field("key_bits", &Self::KEY_BITS)
            .field("nodes", &self.node_count())
            .field("max_nodes", &self.max_nodes)
            .finish()
    }
}

impl Lpm<4> {
    /// Inserts the IPv4 prefix `addr/prefix_len` (see [`Lpm::insert`]).
    pub fn insert_v4(&mut self, addr: Ipv4Addr, prefix_len: u8, value: u32) -> Result<(), LpmError> {
        self.insert(addr.octets(), prefix_len, value)
    }

    /// The value of the longest IPv4 prefix containing `addr`.
    #[inline]
    pub fn lookup_v4(&self, addr: Ipv4Addr) -> Option<u32> {
        self.lookup(&addr.octets())
    }

    /// The value and prefix length of the longest IPv4 prefix containing `addr`.
    pub fn lookup_with_len_v4(&self, addr: Ipv4Addr) -> Option<(u32, u8)> {
        self.lookup_with_len(&addr.octets())
    }
}

impl Lpm<16> {
    /// Inserts the IPv6 prefix `addr/prefix_len` (see [`Lpm::insert`]).
    pub fn insert_v6(&mut self, addr: Ipv6Addr, prefix_len: u8, value: u32) -> Result<(), LpmError> {
        self.insert(addr.octets(), prefix_len, value)
    }

    /// The value of the longest IPv6 prefix containing `addr`.
    #[inline]
    pub fn lookup_v6(&self, addr: Ipv6Addr) -> Option<u32> {
        self.lookup(&addr.octets())
    }

    /// The value and prefix length of the longest IPv6 prefix containing `addr`.
    pub fn lookup_with_len_v6(&self, addr: Ipv6Addr) -> Option<(u32, u8)> {
        self.lookup_with_len(&addr.octets())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn v4(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn v6(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    #[test]
    fn is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Lpm4>();
        assert_send_sync::<Lpm6>();
    }

    #[test]
    fn empty_table_finds_nothing() {
        let table = Lpm4::new(16);
        assert_eq!(table.lookup_v4(v4("10.0.0.1")), None);
        assert_eq!(table.node_count(), 1);
    }

    #[test]
    fn overlapping_prefixes_in_both_orders() {
        let routes = [
            ("10.0.0.0", 8, 1),
            ("10.1.0.0", 16, 2),
            ("10.1.2.0", 24, 3),
            ("10.1.2.128", 25, 4),
            ("10.1.2.200", 32, 5),
            ("10.1.0.0", 12, 6),
        ];
        let checks = [
            ("10.2.3.4", Some((6, 12))),
            ("10.1.3.4", Some((2, 16))),
            ("10.1.2.3", Some((3, 24))),
            ("10.1.2.129", Some((4, 25))),
            ("10.1.2.200", Some((5, 32))),
            ("10.1.2.201", Some((4, 25))),
            ("10.15.0.1", Some((6, 12))),
            ("10.16.0.1", Some((1, 8))),
            ("11.0.0.1", None),
        ];
        let mut forward = Lpm4::new(64);
        for (addr, len, value) in routes {
            forward.insert_v4(v4(addr), len, value).unwrap();
        }
        let mut backward = Lpm4::new(64);
        for (addr, len, value) in routes.iter().rev() {
            backward.insert_v4(v4(addr), *len, *value).unwrap();
        }
        for (addr, expected) in checks {
            assert_eq!(forward.lookup_with_len_v4(v4(addr)), expected, "{addr}");
            assert_eq!(backward.lookup_with_len_v4(v4(addr)), expected, "{addr}");
            assert_eq!(forward.lookup_v4(v4(addr)), expected.map(|(v, _)| v));
        }
    }

    #[test]
    fn default_route_and_host_routes() {
        let mut table = Lpm4::new(8);
        table.insert_v4(v4("192.0.2.1"), 32, 7).unwrap();
        table.insert_v4(Ipv4Addr::UNSPECIFIED, 0, 99).unwrap();
        assert_eq!(table.lookup_with_len_v4(v4("192.0.2.1")), Some((7, 32)));
        assert_eq!(table.lookup_with_len_v4(v4("192.0.2.2")), Some((99, 0)));
        assert_eq!(table.lookup_v4(v4("255.255.255.255")), Some(99));
        assert_eq!(table.lookup_v4(v4("0.0.0.0")), Some(99));

        let mut table = Lpm6::new(32);
        table.insert_v6(Ipv6Addr::UNSPECIFIED, 0, 1).unwrap();
        table.insert_v6(v6("2001:db8::"), 32, 2).unwrap();
        table.insert_v6(v6("2001:db8::1"), 128, 3).unwrap();
        table.insert_v6(v6("2001:db8:0:1::"), 64, 4).unwrap();
        assert_eq!(table.lookup_with_len_v6(v6("2001:db8::1")), Some((3, 128)));
        assert_eq!(table.lookup_with_len_v6(v6("2001:db8::2")), Some((2, 32)));
        assert_eq!(table.lookup_with_len_v6(v6("2001:db8:0:1::5")), Some((4, 64)));
        assert_eq!(table.lookup_with_len_v6(v6("2001:db9::1")), Some((1, 0)));
        assert_eq!(table.lookup_v6(v6("::1")), Some(1));
    }

    #[test]
    fn host_bits_are_ignored() {
        let mut table = Lpm4::new(8);
        table.insert_v4(v4("10.1.2.3"), 16, 5).unwrap();
        assert_eq!(table.lookup_with_len_v4(v4("10.1.200.200")), Some((5, 16)));
        assert_eq!(table.lookup_v4(v4("10.2.0.0")), None);
        // The same prefix written with other host bits replaces the value.
        table.insert_v4(v4("10.1.99.99"), 16, 6).unwrap();
        assert_eq!(table.lookup_v4(v4("10.1.2.3")), Some(6));
        table.insert_v4(v4("10.255.255.255"), 9, 8).unwrap();
        assert_eq!(table.lookup_with_len_v4(v4("10.200.0.1")), Some((8, 9)));
        assert_eq!(table.lookup_with_len_v4(v4("10.127.0.1")), None);
    }

    #[test]
    fn duplicate_prefix_replaces_value() {
        let mut table = Lpm6::new(32);
        table.insert_v6(v6("2001:db8::"), 48, 1).unwrap();
        table.insert_v6(v6("2001:db8::"), 48, 2).unwrap();
        assert_eq!(table.lookup_with_len_v6(v6("2001:db8::42")), Some((2, 48)));
    }

    #[test]
    fn errors() {
        let mut table = Lpm4::new(3);
        assert_eq!(
            table.insert_v4(v4("10.0.0.0"), 33, 1),
            Err(LpmError::PrefixTooLong { prefix_len: 33, max_len: 32 })
        );
        assert_eq!(
            Lpm6::new(4).insert_v6(Ipv6Addr::UNSPECIFIED, 129, 1),
            Err(LpmError::PrefixTooLong { prefix_len: 129, max_len: 128 })
        );
        table.insert_v4(v4("10.1.2.0"), 24, 1).unwrap();
        assert_eq!(table.node_count(), 3);
        table.insert_v4(v4("10.1.3.0"), 24, 2).unwrap();
        table.insert_v4(v4("11.0.0.0"), 8, 3).unwrap();
        assert_eq!(table.insert_v4(v4("10.2.0.0"), 24, 4), Err(LpmError::Full { max_nodes: 3 }));
        assert_eq!(table.insert_v4(v4("12.0.0.0"), 32, 4), Err(LpmError::Full { max_nodes: 3 }));
        assert_eq!(table.node_count(), 3);
        assert_eq!(table.lookup_v4(v4("10.2.0.1")), None);
        assert_eq!(table.lookup_v4(v4("10.1.3.1")), Some(2));

        let mut root_only = Lpm4::new(0);
        assert_eq!(root_only.max_nodes(), 1);
        root_only.insert_v4(v4("10.0.0.0"), 8, 1).unwrap();
        assert!(root_only.insert_v4(v4("10.0.0.0"), 9, 1).is_err());
    }

    /// The naive reference: a list of masked prefixes, scanned linearly.
    struct Reference<const N: usize> {
        routes: Vec<([u8; N], u8, u32)>,
    }

    fn mask<const N: usize>(key: [u8; N], len: u8) -> [u8; N] {
        let mut masked = [0u8; N];
        for (i, byte) in masked.iter_mut().enumerate() {
            let bits = usize::from(len).saturating_sub(8 * i).min(8);
            let byte_mask = if bits == 0 { 0 } else { 0xffu8 << (8 - bits) };
            *byte = key[i] & byte_mask;
        }
        masked
    }

    impl<const N: usize> Reference<N> {
        fn insert(&mut self, key: [u8; N], len: u8, value: u32) {
            let key = mask(key, len);
            self.routes.retain(|&(k, l, _)| (k, l) != (key, len));
            self.routes.push((key, len, value));
        }

        fn lookup(&self, key: &[u8; N]) -> Option<(u32, u8)> {
            self.routes
                .iter()
                .filter(|(k, l, _)| mask(*key, *l) == *k)
                .max_by_key(|(_, l, _)| *l)
                .map(|(_, l, v)| (*v, *l))
        }
    }

    /// Keys drawn from a few bases so that prefixes overlap, with random tweaks.
    fn key_strategy<const N: usize>() -> impl Strategy<Value = [u8; N]> {
        (0usize..4, any::<[u8; N]>(), any::<prop::sample::Index>(), any::<bool>()).prop_map(
            |(base, random, index, keep_random)| {
                if keep_random {
                    return random;
                }
                let mut key = [0u8; N];
                key[0] = 10 + base as u8;
                key[N - 1] = base as u8;
                // Keep a random-length head of the base, then random bytes.
                let split = index.index(N + 1);
                key[split..].copy_from_slice(&random[split..]);
                key
            },
        )
    }

    fn compare<const N: usize>(routes: &[([u8; N], u8, u32)], probes: &[[u8; N]]) -> Result<(), TestCaseError> {
        let mut table = Lpm::<N>::new(100_000);
        let mut reference = Reference::<N> { routes: Vec::new() };
        for &(key, len, value) in routes {
            let len = len % (8 * N as u8 + 1);
            table.insert(key, len, value).unwrap();
            reference.insert(key, len, value);
        }
        let inserted = routes.iter().map(|r| r.0);
        for key in probes.iter().copied().chain(inserted) {
            prop_assert_eq!(table.lookup_with_len(&key), reference.lookup(&key), "key {:?}", key);
            prop_assert_eq!(table.lookup(&key), reference.lookup(&key).map(|(v, _)| v));
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn matches_linear_scan_v4(
            routes in proptest::collection::vec((key_strategy::<4>(), any::<u8>(), any::<u32>()), 0..40),
            probes in proptest::collection::vec(key_strategy::<4>(), 0..40),
        ) {
            compare(&routes, &probes)?;
        }

        #[test]
        fn matches_linear_scan_v6(
            routes in proptest::collection::vec((key_strategy::<16>(), any::<u8>(), any::<u32>()), 0..40),
            probes in proptest::collection::vec(key_strategy::<16>(), 0..40),
        ) {
            compare(&routes, &probes)?;
        }

        #[test]
        fn full_table_is_unchanged(
            routes in proptest::collection::vec((key_strategy::<4>(), 0u8..=32, any::<u32>()), 1..30),
            max_nodes in 1usize..6,
            probes in proptest::collection::vec(key_strategy::<4>(), 0..20),
        ) {
            let mut table = Lpm4::new(max_nodes);
            let mut accepted = Vec::new();
            for &(key, len, value) in &routes {
                let before = table.clone();
                match table.insert(key, len, value) {
                    Ok(()) => accepted.push((key, len, value)),
                    Err(error) => {
                        prop_assert_eq!(error, LpmError::Full { max_nodes });
                        prop_assert!(before.entries == table.entries);
                    }
                }
                prop_assert!(table.node_count() <= max_nodes);
            }
            let mut reference = Reference::<4> { routes: Vec::new() };
            for &(key, len, value) in &accepted {
                reference.insert(key, len, value);
            }
            for key in probes.iter().chain(routes.iter().map(|r| &r.0)) {
                prop_assert_eq!(table.lookup_with_len(key), reference.lookup(key));
            }
        }
    }
}
