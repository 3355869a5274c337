//! A worker's private cache of NAT translations (the fast path's only state).
//!
//! Keyed by the packet's 5-tuple and direction exactly as it arrives (so one
//! probe decides), the value is the rewrite to apply (the public endpoint for
//! an outbound packet, the inside endpoint for an inbound one) and the
//! mapping core's session id, for the activity reports the worker sends.
//!
//! # Invariants
//!
//! * One writer: the worker that owns it. No locks, no atomics, no
//!   allocation after [`FlowCache::new`].
//! * It is only a cache: the mapping core holds the truth. Losing an entry
//!   (eviction when a bucket is full) costs one round trip to the mapping
//!   core, never a packet.
//! * An entry is usable only while it has been hit within `idle_ms`
//!   ([`FlowCache::lookup`]); the caller chooses `idle_ms` below every NAT
//!   timeout, so an entry can never outlive its session at the mapping core
//!   (see [`super::fast`] for the argument).
//!
//! # Layout
//!
//! Open addressing in buckets of [`BUCKET`] slots (48-byte slots, a bucket is
//! three cache lines); a key lives in the bucket its hash names. A full
//! bucket evicts its least recently hit slot.

use std::net::Ipv4Addr;

use super::session::{Direction, SessionId};
use super::translate::{FlowKey, Proto};

/// Slots per bucket.
pub const BUCKET: usize = 4;

/// A cache key: direction and 5-tuple packed in 128 bits (bit 127 set, so a
/// key is never 0, the empty marker).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CacheKey(pub u128);

impl CacheKey {
    /// The key of a packet of `flow` travelling in `direction`.
    #[inline]
    pub fn new(direction: Direction, flow: &FlowKey) -> CacheKey {
        let dir = match direction {
            Direction::Outbound => 0u128,
            Direction::Inbound => 1,
        };
        CacheKey(
            1u128 << 127
                | dir << 100
                | (flow.proto.index() as u128) << 96
                | u128::from(u32::from(flow.src)) << 64
                | u128::from(flow.sport) << 48
                | u128::from(u32::from(flow.dst)) << 16
                | u128::from(flow.dport),
        )
    }

    /// The direction and flow of the key (inverse of [`CacheKey::new`]).
    pub fn parts(self) -> Option<(Direction, FlowKey)> {
        let k = self.0;
        if k >> 127 == 0 {
            return None;
        }
        let direction = if (k >> 100) & 1 == 0 { Direction::Outbound } else { Direction::Inbound };
        let proto = *Proto::ALL.get(((k >> 96) & 3) as usize)?;
        Some((
            direction,
            FlowKey {
                proto,
                src: Ipv4Addr::from((k >> 64) as u32),
                sport: (k >> 48) as u16,
                dst: Ipv4Addr::from((k >> 16) as u32),
                dport: k as u16,
            },
        ))
    }

    #[inline]
    fn hash(self, seed: u64) -> u64 {
        super::mix64((self.0 as u64) ^ super::mix64((self.0 >> 64) as u64 ^ seed))
    }
}

/// What a hit gives: the endpoint to rewrite to and the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rewrite {
    pub addr: Ipv4Addr,
    pub port: u16,
    pub session: SessionId,
}

#[derive(Debug, Clone, Copy)]
#[repr(C)]
struct Slot {
    key: u128,
    session: u64,
    addr: u32,
    /// Last hit (ms, wrapping).
    last_ms: u32,
    /// Last activity report sent to the mapping core (ms, wrapping).
    reported_ms: u32,
    port: u16,
    /// TCP flags seen since the last report.
    flags: u8,
}

const EMPTY: Slot = Slot { key: 0, session: 0, addr: 0, last_ms: 0, reported_ms: 0, port: 0, flags: 0 };

/// True when an entry last used at `last_ms` may not be used at `now`: idle
/// for `idle_ms`, or used last before the last [`FlowCache::invalidate`].
#[inline]
fn age_stale(now: u32, last_ms: u32, idle_ms: u32, invalidated_ms: Option<u32>) -> bool {
    let age = now.wrapping_sub(last_ms);
    age >= idle_ms || invalidated_ms.is_some_and(|inv| age > now.wrapping_sub(inv))
}

/// An activity report the caller must send to the mapping core: which
/// entry was hit (its key, so any instance of the mapping server finds the
/// session; the direction is in the key), what it rewrites to (so an owner
/// that does not know the session can adopt it after a takeover), the TCP
/// flags seen and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Touch {
    pub key: CacheKey,
    pub addr: Ipv4Addr,
    pub port: u16,
    pub tcp_flags: u8,
    pub time_ms: u64,
}

impl Touch {
    /// The entry's direction (from its key).
    pub fn direction(&self) -> Direction {
        if (self.key.0 >> 100) & 1 == 0 {
            Direction::Outbound
        } else {
            Direction::Inbound
        }
    }
}

/// Counters of one cache (its worker is the only writer).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    /// Entries found but idle longer than `idle_ms` (treated as misses).
    pub stale: u64,
    pub inserts: u64,
    /// Live entries pushed out of a full bucket.
    pub evictions: u64,
}

/// The cache. See the module doc.
#[derive(Debug, Clone)]
pub struct FlowCache {
    slots: Vec<Slot>,
    bucket_mask: usize,
    seed: u64,
    idle_ms: u32,
    report_ms: u32,
    /// Entries last used before this time (ms, wrapping) are stale: see
    /// [`FlowCache::invalidate`].
    invalidated_ms: Option<u32>,
    stats: CacheStats,
}

impl FlowCache {
    /// A cache of `entries` slots (rounded up to a power of two, at least one
    /// bucket). Entries idle for `idle_ms` are not used; a hit reports
    /// activity when the last report is `report_ms` old (or the TCP flags
    /// carry SYN, FIN or RST not yet reported).
    pub fn new(entries: usize, idle_ms: u32, report_ms: u32, seed: u64) -> FlowCache {
        let n = entries.max(BUCKET).next_power_of_two();
        FlowCache {
            // Transparent huge pages: a random bucket per packet over 4 KiB
            // pages is a TLB miss per packet (4x slower at 192 MB).
            slots: fastmem::huge_vec(n, EMPTY),
            bucket_mask: n / BUCKET - 1,
            seed,
            idle_ms,
            report_ms,
            invalidated_ms: None,
            stats: CacheStats::default(),
        }
    }

    /// Number of slots.
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Bytes of memory the slots take.
    pub fn memory_bytes(&self) -> usize {
        self.slots.len() * std::mem::size_of::<Slot>()
    }

    pub fn stats(&self) -> &CacheStats {
        &self.stats
    }

    /// Live (not idle) entries; a scan, for tests and listings.
    pub fn live(&self, now_ms: u64) -> usize {
        let now = now_ms as u32;
        self.slots
            .iter()
            .filter(|s| s.key != 0 && !age_stale(now, s.last_ms, self.idle_ms, self.invalidated_ms))
            .count()
    }

    /// Makes every entry stale at `now_ms` in O(1) (the mapping core
    /// retired sessions the operator cleared: their entries must not
    /// translate another packet; live flows ask again and get fresh ones).
    pub fn invalidate(&mut self, now_ms: u64) {
        self.invalidated_ms = Some(now_ms as u32);
    }

    /// Forgets an invalidation older than `idle_ms` (every entry used
    /// before it is stale by age anyway), before the ms clock can wrap
    /// around it. Call once per poll loop.
    #[inline]
    pub fn settle(&mut self, now_ms: u64) {
        if self.invalidated_ms.is_some_and(|inv| (now_ms as u32).wrapping_sub(inv) > self.idle_ms) {
            self.invalidated_ms = None;
        }
    }

    #[inline]
    fn bucket(&self, key: CacheKey) -> usize {
        (key.hash(self.seed) as usize & self.bucket_mask) * BUCKET
    }

    /// Brings `key`'s bucket into the CPU cache ahead of its lookup.
    #[inline]
    pub fn prefetch(&self, key: CacheKey) {
        let base = self.bucket(key);
        fastmem::prefetch(&self.slots[base..base + BUCKET]);
    }

    /// Looks `key` up at `now_ms`. A hit refreshes the entry and, when an
    /// activity report is due, returns it in the second field; the caller
    /// queues it for the mapping core (`tcp_flags` are the packet's).
    #[inline]
    pub fn lookup(&mut self, key: CacheKey, tcp_flags: u8, now_ms: u64) -> Option<(Rewrite, Option<Touch>)> {
        let now = now_ms as u32;
        let base = self.bucket(key);
        for slot in &mut self.slots[base..base + BUCKET] {
            if slot.key != key.0 {
                continue;
            }
            if age_stale(now, slot.last_ms, self.idle_ms, self.invalidated_ms) {
                self.stats.stale += 1;
                self.stats.misses += 1;
                slot.key = 0;
                return None;
            }
            self.stats.hits += 1;
            slot.last_ms = now;
            const NOTABLE: u8 =
                super::translate::tcp_flags::SYN | super::translate::tcp_flags::FIN | super::translate::tcp_flags::RST;
            let new_flags = tcp_flags & NOTABLE & !slot.flags;
            slot.flags |= tcp_flags & NOTABLE;
            let touch = if new_flags != 0 || now.wrapping_sub(slot.reported_ms) >= self.report_ms {
                slot.reported_ms = now;
                Some(Touch {
                    key,
                    addr: Ipv4Addr::from(slot.addr),
                    port: slot.port,
                    tcp_flags: tcp_flags | new_flags,
                    time_ms: now_ms,
                })
            } else {
                None
            };
            let rewrite = Rewrite {
                addr: Ipv4Addr::from(slot.addr),
                port: slot.port,
                session: SessionId::from_bits(slot.session),
            };
            return Some((rewrite, touch));
        }
        self.stats.misses += 1;
        None
    }

    /// Installs (or replaces) `key`: the mapping core has just created or
    /// refreshed the session at `now_ms` (so no report is due yet).
    pub fn insert(&mut self, key: CacheKey, rewrite: Rewrite, tcp_flags: u8, now_ms: u64) {
        let now = now_ms as u32;
        let base = self.bucket(key);
        let (idle_ms, invalidated_ms) = (self.idle_ms, self.invalidated_ms);
        let bucket = &mut self.slots[base..base + BUCKET];
        let pick = bucket
            .iter()
            .position(|s| s.key == key.0)
            .or_else(|| bucket.iter().position(|s| s.key == 0 || age_stale(now, s.last_ms, idle_ms, invalidated_ms)))
            .unwrap_or_else(|| {
                self.stats.evictions += 1;
                // Least recently hit: the largest age.
                (0..BUCKET).max_by_key(|&i| now.wrapping_sub(bucket[i].last_ms)).unwrap_or(0)
            });
        bucket[pick] = Slot {
            key: key.0,
            session: rewrite.session.to_bits(),
            addr: rewrite.addr.into(),
            last_ms: now,
            reported_ms: now,
            port: rewrite.port,
            flags: tcp_flags
                & (super::translate::tcp_flags::SYN
                    | super::translate::tcp_flags::FIN
                    | super::translate::tcp_flags::RST),
        };
        self.stats.inserts += 1;
    }

    /// Forgets `key` (the mapping server says its binding is not valid);
    /// true if it was there.
    pub fn remove(&mut self, key: CacheKey) -> bool {
        let base = self.bucket(key);
        match self.slots[base..base + BUCKET].iter_mut().find(|s| s.key == key.0) {
            Some(slot) => {
                *slot = EMPTY;
                true
            }
            None => false,
        }
    }

    /// Forgets every entry.
    pub fn clear(&mut self) {
        self.slots.fill(EMPTY);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nat::translate::tcp_flags::{ACK, FIN, SYN};

    fn flow(sport: u16) -> FlowKey {
        FlowKey {
            proto: Proto::Udp,
            src: Ipv4Addr::new(100, 64, 0, 10),
            sport,
            dst: Ipv4Addr::new(203, 0, 113, 7),
            dport: 53,
        }
    }

    fn rw(port: u16, session: u64) -> Rewrite {
        Rewrite { addr: Ipv4Addr::new(198, 51, 100, 1), port, session: SessionId::from_bits(session) }
    }

    #[test]
    fn slot_is_48_bytes() {
        assert_eq!(std::mem::size_of::<Slot>(), 48);
    }

    #[test]
    fn key_round_trips_and_separates_directions() {
        let f = FlowKey { proto: Proto::Icmp, ..flow(77) };
        let out = CacheKey::new(Direction::Outbound, &f);
        let inb = CacheKey::new(Direction::Inbound, &f);
        assert_ne!(out, inb);
        assert_eq!(out.parts(), Some((Direction::Outbound, f)));
        assert_eq!(inb.parts(), Some((Direction::Inbound, f)));
        assert_eq!(CacheKey(0).parts(), None);
    }

    #[test]
    fn invalidate_makes_every_entry_stale_at_once() {
        let mut c = FlowCache::new(64, 1000, 100, 1);
        let (a, b) = (CacheKey::new(Direction::Outbound, &flow(1000)), CacheKey::new(Direction::Outbound, &flow(1001)));
        let rw = Rewrite { addr: Ipv4Addr::new(198, 51, 100, 9), port: 7, session: SessionId::from_bits(3) };
        c.insert(a, rw, 0, 10);
        c.insert(b, rw, 0, 10);
        assert!(c.lookup(a, 0, 20).is_some());
        c.invalidate(30);
        assert!(c.lookup(a, 0, 30).is_none() && c.lookup(b, 0, 40).is_none(), "entries used before the invalidation");
        assert_eq!(c.live(40), 0);
        c.insert(a, rw, 0, 50);
        assert!(c.lookup(a, 0, 60).is_some(), "entries the mapping core installs afterwards are good");
        assert!(c.lookup(a, 0, 2000).is_some() || c.lookup(a, 0, 1000).is_none(), "and age as usual");
    }

    #[test]
    fn insert_then_hit_then_idle_miss() {
        let mut c = FlowCache::new(64, 1000, 100, 1);
        let k = CacheKey::new(Direction::Outbound, &flow(1000));
        assert!(c.lookup(k, 0, 0).is_none());
        c.insert(k, rw(2000, 5), 0, 10);
        let (r, touch) = c.lookup(k, 0, 50).unwrap();
        assert_eq!(r, rw(2000, 5));
        assert_eq!(touch, None, "a report is due only after report_ms");
        let (_, touch) = c.lookup(k, 0, 200).unwrap();
        assert_eq!(
            touch,
            Some(Touch { key: k, addr: Ipv4Addr::new(198, 51, 100, 1), port: 2000, tcp_flags: 0, time_ms: 200 })
        );
        // Idle for idle_ms since the last hit (200): not usable any more.
        assert!(c.lookup(k, 0, 1200).is_none());
        assert_eq!(c.stats().stale, 1);
        assert!(c.lookup(k, 0, 1201).is_none(), "a stale entry is dropped");
    }

    #[test]
    fn new_tcp_flags_are_reported_at_once() {
        let mut c = FlowCache::new(64, 10_000, 5_000, 1);
        let k = CacheKey::new(Direction::Inbound, &FlowKey { proto: Proto::Tcp, ..flow(1) });
        c.insert(k, rw(1, 9), SYN, 0);
        assert_eq!(c.lookup(k, SYN | ACK, 1).unwrap().1, None, "SYN already known");
        assert_eq!(c.lookup(k, ACK, 2).unwrap().1, None);
        let t = c.lookup(k, FIN | ACK, 3).unwrap().1.unwrap();
        assert_eq!(t.tcp_flags, FIN | ACK);
        assert_eq!(t.direction(), Direction::Inbound);
        assert_eq!(c.lookup(k, FIN | ACK, 4).unwrap().1, None, "FIN reported once");
    }

    #[test]
    fn full_bucket_evicts_least_recent() {
        // One bucket only: every key collides.
        let mut c = FlowCache::new(BUCKET, 1_000_000, 1_000_000, 7);
        let keys: Vec<CacheKey> =
            (0..BUCKET as u16 + 1).map(|p| CacheKey::new(Direction::Outbound, &flow(p))).collect();
        for (i, k) in keys[..BUCKET].iter().enumerate() {
            c.insert(*k, rw(i as u16, i as u64), 0, i as u64);
        }
        // Refresh key 0 so key 1 is the least recent.
        assert!(c.lookup(keys[0], 0, 100).is_some());
        c.insert(keys[BUCKET], rw(99, 99), 0, 101);
        assert_eq!(c.stats().evictions, 1);
        assert!(c.lookup(keys[1], 0, 102).is_none());
        for k in [keys[0], keys[2], keys[3], keys[BUCKET]] {
            assert!(c.lookup(k, 0, 102).is_some());
        }
    }

    #[test]
    fn reinsert_replaces() {
        let mut c = FlowCache::new(16, 1000, 1000, 3);
        let k = CacheKey::new(Direction::Outbound, &flow(5));
        c.insert(k, rw(1, 1), 0, 0);
        c.insert(k, rw(2, 2), 0, 1);
        assert_eq!(c.lookup(k, 0, 2).unwrap().0, rw(2, 2));
        assert_eq!(c.live(2), 1);
        c.clear();
        assert_eq!(c.live(2), 0);
    }

    #[test]
    fn many_keys_fit_a_large_cache() {
        let mut c = FlowCache::new(1 << 16, u32::MAX, u32::MAX, 11);
        for p in 0..20_000u16 {
            c.insert(CacheKey::new(Direction::Outbound, &flow(p)), rw(p, u64::from(p)), 0, 0);
        }
        let found = (0..20_000u16)
            .filter(|&p| c.lookup(CacheKey::new(Direction::Outbound, &flow(p)), 0, 1).is_some_and(|(r, _)| r.port == p))
            .count();
        // At 30 % load about 1 % of 4-way buckets overflow (Poisson, mean
        // 1.2 keys per bucket): size the cache at 4x the live flows.
        assert!(found > 19_600, "{found}");
    }
}
