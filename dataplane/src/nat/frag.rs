//! Virtual reassembly of IPv4 fragments for NAT44 (RFC 4787 REQ-14, RFC
//! 6888 §4: a NAT translates fragments, in order or not).
//!
//! Only the first fragment of a datagram carries the transport header, so
//! only it can be looked up in the flow cache or answered by the mapping
//! core. Its translation is what every other fragment of the datagram gets:
//! the same new source and destination addresses (ports and the transport
//! checksum are in the first fragment only; the checksum already covers the
//! rewritten pseudo-header, so the reassembled datagram checks).
//!
//! ```text
//!  first fragment ─► translated (cache or mapping core) ─► record(key, new src/dst)
//!                                                             │ releases the held fragments
//!  other fragment ─► lookup(key) ── translated ─► rewrite addresses + IPv4 checksum
//!                               └─ not yet    ─► hold (a slot; the worker keeps the mbuf)
//!  key = direction, source, destination, protocol, identification, as received
//! ```
//!
//! Nothing is reassembled or copied: the worker keeps each held fragment in
//! the slot this table hands out ([`FragTable::hold`]) and takes it back
//! when the table lists the slot as released ([`FragTable::pop_released`],
//! to run it through the pipeline again) or expired
//! ([`FragTable::pop_expired`], to drop it as `nat_fragment_timeout`).
//!
//! # Limits and invariants
//!
//! * Everything is allocated in [`FragTable::new`]: `datagrams_max` records
//!   (open addressing, linear probing, backward-shift deletion, at most half
//!   full), `held_max` held fragments, at most [`HELD_PER_DATAGRAM_MAX`] per
//!   datagram. A full table is a counted drop (`nat_fragments_full`), never
//!   an eviction of a live record.
//! * A record lives `timeout_ms` after its last fragment was seen; then it
//!   and its held fragments go ([`FragTable::expire`], a bounded amount of
//!   work per call).
//! * One writer: the worker that owns it. No locks.
//! * A hairpinned datagram whose first fragment went to the mapping core is
//!   not recorded (its two halves are not both in the answer): its other
//!   fragments time out. Hairpins translated from the cache are recorded.

use std::net::Ipv4Addr;

use super::msg::Answer;
use super::session::Direction;
use netwire::{checksum, ipv4, read_u16, write_u16};

/// Fragments held for one datagram at most (a 64 KiB datagram over a 1500
/// octet MTU is 45 fragments).
pub const HELD_PER_DATAGRAM_MAX: u16 = 64;

const NONE: u16 = u16::MAX;

/// Sizes and timing of a [`FragTable`] (`nat.fragments`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FragConfig {
    /// Datagrams tracked at once.
    pub datagrams_max: usize,
    /// Fragments held (waiting for their first fragment) at once, ≤ 65535.
    pub held_max: usize,
    /// How long a record lives after its last fragment.
    pub timeout_ms: u64,
}

impl Default for FragConfig {
    fn default() -> FragConfig {
        FragConfig { datagrams_max: 1024, held_max: 256, timeout_ms: 2000 }
    }
}

/// A datagram as it arrives at the NAT: direction, addresses, protocol,
/// identification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FragKey {
    pub direction: Direction,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub proto: u8,
    pub ident: u16,
}

impl FragKey {
    /// The key of the IPv4 packet `ip` travelling in `direction`.
    pub fn of(direction: Direction, ip: &[u8]) -> FragKey {
        let p = ipv4::Packet::new_unchecked(ip);
        FragKey { direction, src: p.src_addr(), dst: p.dst_addr(), proto: p.protocol().0, ident: p.ident() }
    }

    fn hash(&self) -> u64 {
        let dir = u64::from(self.direction == Direction::Inbound);
        let a = (u64::from(u32::from(self.src)) << 32) | u64::from(u32::from(self.dst));
        let b = (dir << 24) | (u64::from(self.proto) << 16) | u64::from(self.ident);
        super::mix64(a ^ super::mix64(b ^ 0x9e37_79b9_7f4a_7c15))
    }
}

/// What the other fragments of a datagram become: its first fragment's
/// addresses after translation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FragRewrite {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
}

/// What [`FragTable::lookup_or_hold`] says about a non-first fragment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FragVerdict {
    /// Translate it so.
    Rewrite(FragRewrite),
    /// Keep it in this slot until its first fragment comes.
    Held(u16),
    /// No room (`nat_fragments_full`).
    Full,
}

/// Counters of the table (the owning worker's).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FragStats {
    pub recorded: u64,
    pub rewritten: u64,
    pub held: u64,
    pub released: u64,
    pub expired: u64,
    pub full: u64,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    key: FragKey,
    used: bool,
    rewrite: Option<FragRewrite>,
    expires_ms: u64,
    held_head: u16,
    held_count: u16,
}

const EMPTY_KEY: FragKey = FragKey {
    direction: Direction::Outbound,
    src: Ipv4Addr::UNSPECIFIED,
    dst: Ipv4Addr::UNSPECIFIED,
    proto: 0,
    ident: 0,
};
const EMPTY: Entry =
    Entry { key: EMPTY_KEY, used: false, rewrite: None, expires_ms: 0, held_head: NONE, held_count: 0 };

/// A worker's fragment records and held-fragment slots.
pub struct FragTable {
    slots: Vec<Entry>,
    mask: usize,
    len: usize,
    cfg: FragConfig,
    /// Next held slot of the same datagram (or of the free list).
    held_next: Vec<u16>,
    free_head: u16,
    released: Vec<u16>,
    expired: Vec<u16>,
    cursor: usize,
    stats: FragStats,
}

impl FragTable {
    /// A table of `cfg`'s sizes (`held_max` is capped at 65534).
    pub fn new(cfg: FragConfig) -> FragTable {
        let cfg = FragConfig {
            datagrams_max: cfg.datagrams_max.max(1),
            held_max: cfg.held_max.min(usize::from(NONE) - 1),
            ..cfg
        };
        let size = (cfg.datagrams_max * 2).next_power_of_two();
        let held_next = (0..cfg.held_max).map(|i| if i + 1 < cfg.held_max { (i + 1) as u16 } else { NONE }).collect();
        FragTable {
            slots: vec![EMPTY; size],
            mask: size - 1,
            len: 0,
            held_next,
            free_head: if cfg.held_max > 0 { 0 } else { NONE },
            released: Vec::with_capacity(cfg.held_max),
            expired: Vec::with_capacity(cfg.held_max),
            cursor: 0,
            stats: FragStats::default(),
            cfg,
        }
    }

    /// The sizes in force.
    pub fn config(&self) -> FragConfig {
        self.cfg
    }

    /// Datagrams tracked now.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn stats(&self) -> &FragStats {
        &self.stats
    }

    fn find(&self, key: &FragKey) -> Result<usize, usize> {
        let mut i = key.hash() as usize & self.mask;
        loop {
            let e = &self.slots[i];
            if !e.used {
                return Err(i);
            }
            if e.key == *key {
                return Ok(i);
            }
            i = (i + 1) & self.mask;
        }
    }

    /// The slot of `key`, created when there is room.
    fn entry(&mut self, key: &FragKey, now_ms: u64) -> Option<usize> {
        let i = match self.find(key) {
            Ok(i) => i,
            Err(_) if self.len >= self.cfg.datagrams_max => return None,
            Err(i) => {
                self.slots[i] = Entry { key: *key, used: true, ..EMPTY };
                self.len += 1;
                i
            }
        };
        self.slots[i].expires_ms = now_ms + self.cfg.timeout_ms;
        Some(i)
    }

    /// Records the translation of a datagram's first fragment; its held
    /// fragments are released. False (counted full) when there is no room.
    pub fn record(&mut self, key: FragKey, rewrite: FragRewrite, now_ms: u64) -> bool {
        let Some(i) = self.entry(&key, now_ms) else {
            self.stats.full += 1;
            return false;
        };
        self.stats.recorded += 1;
        let e = &mut self.slots[i];
        e.rewrite = Some(rewrite);
        e.held_count = 0;
        let mut h = std::mem::replace(&mut e.held_head, NONE);
        while h != NONE {
            let next = self.held_next[usize::from(h)];
            self.released.push(h);
            self.stats.released += 1;
            h = next;
        }
        true
    }

    /// A non-first fragment of `key`: its rewrite, or a slot to hold it in.
    pub fn lookup_or_hold(&mut self, key: FragKey, now_ms: u64) -> FragVerdict {
        let Some(i) = self.entry(&key, now_ms) else {
            self.stats.full += 1;
            return FragVerdict::Full;
        };
        if let Some(rw) = self.slots[i].rewrite {
            self.stats.rewritten += 1;
            return FragVerdict::Rewrite(rw);
        }
        if self.free_head == NONE || self.slots[i].held_count >= HELD_PER_DATAGRAM_MAX {
            self.stats.full += 1;
            if self.slots[i].held_count == 0 {
                self.remove_at(i);
            }
            return FragVerdict::Full;
        }
        let h = self.free_head;
        self.free_head = self.held_next[usize::from(h)];
        let e = &mut self.slots[i];
        self.held_next[usize::from(h)] = e.held_head;
        e.held_head = h;
        e.held_count += 1;
        self.stats.held += 1;
        FragVerdict::Held(h)
    }

    /// A slot the worker has taken its fragment back from ([`Self::pop_released`],
    /// [`Self::pop_expired`]) is free again.
    fn free(&mut self, h: u16) {
        self.held_next[usize::from(h)] = self.free_head;
        self.free_head = h;
    }

    /// The next held fragment whose datagram got its translation: run it
    /// through the pipeline again. The slot is free once this returns it.
    pub fn pop_released(&mut self) -> Option<u16> {
        let h = self.released.pop()?;
        self.free(h);
        Some(h)
    }

    /// The next held fragment whose first fragment never came: drop it.
    pub fn pop_expired(&mut self) -> Option<u16> {
        let h = self.expired.pop()?;
        self.free(h);
        Some(h)
    }

    /// Retires records not seen for `timeout_ms`, looking at up to `budget`
    /// slots (a call per poll loop walks the table in bounded steps).
    pub fn expire(&mut self, now_ms: u64, budget: usize) {
        let limit = budget.min(self.slots.len());
        let mut scanned = 0;
        while scanned < limit && self.len > 0 {
            let i = self.cursor;
            let e = self.slots[i];
            if e.used && e.expires_ms <= now_ms {
                let mut h = e.held_head;
                while h != NONE {
                    let next = self.held_next[usize::from(h)];
                    self.expired.push(h);
                    self.stats.expired += 1;
                    h = next;
                }
                self.remove_at(i);
                // A later entry may have moved into `i`: look at it again.
                continue;
            }
            self.cursor = (i + 1) & self.mask;
            scanned += 1;
        }
    }

    /// Removes slot `i` with backward-shift deletion (no tombstones).
    fn remove_at(&mut self, mut i: usize) {
        self.slots[i] = EMPTY;
        self.len -= 1;
        let mut j = i;
        loop {
            j = (j + 1) & self.mask;
            if !self.slots[j].used {
                return;
            }
            let home = self.slots[j].key.hash() as usize & self.mask;
            let stays = if i <= j { i < home && home <= j } else { i < home || home <= j };
            if !stays {
                self.slots[i] = self.slots[j];
                self.slots[j] = EMPTY;
                i = j;
            }
        }
    }

    /// A first fragment the mapping core translated (`ip`, after
    /// translation) with the cache entries of its `answer`: records the
    /// datagram under the key its fragments arrive with. Outbound and
    /// inbound only (see the module doc).
    pub fn record_answered(&mut self, answer: &Answer, ip: &[u8], now_ms: u64) {
        let Some(t) = first_fragment(ip) else { return };
        let icmp = t.proto == 1;
        for (key, rw) in answer.entries() {
            let Some((dir, flow)) = key.parts() else { continue };
            let original = match dir {
                Direction::Outbound
                    if rw.addr == t.src
                        && rw.port == t.sport
                        && flow.dst == t.dst
                        && (icmp || flow.dport == t.dport) =>
                {
                    FragKey { direction: dir, src: flow.src, dst: t.dst, proto: t.proto, ident: t.ident }
                }
                Direction::Inbound
                    if rw.addr == t.dst
                        && rw.port == t.dport
                        && flow.src == t.src
                        && (icmp || flow.sport == t.sport) =>
                {
                    FragKey { direction: dir, src: t.src, dst: flow.dst, proto: t.proto, ident: t.ident }
                }
                _ => continue,
            };
            self.record(original, FragRewrite { src: t.src, dst: t.dst }, now_ms);
            return;
        }
    }
}

/// What [`FragTable::record_answered`] reads of a translated first fragment.
struct FirstFragment {
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: u8,
    ident: u16,
    sport: u16,
    dport: u16,
}

/// The addresses, ports (ICMP: the echo identifier twice) and key fields
/// of a first fragment (More Fragments set, offset 0), if `ip` is one.
fn first_fragment(ip: &[u8]) -> Option<FirstFragment> {
    let p = ipv4::Packet::new_checked(ip).ok()?;
    if !p.more_frags() || p.frag_offset_bytes() != 0 {
        return None;
    }
    let l4 = p.payload();
    let (sport, dport) = match p.protocol().0 {
        6 | 17 if l4.len() >= 4 => (read_u16(l4, 0), read_u16(l4, 2)),
        1 if l4.len() >= 6 => (read_u16(l4, 4), read_u16(l4, 4)),
        _ => return None,
    };
    Some(FirstFragment { src: p.src_addr(), dst: p.dst_addr(), proto: p.protocol().0, ident: p.ident(), sport, dport })
}

/// True for a fragment other than the first (a non-zero offset).
#[inline]
pub fn is_later_fragment(ip: &[u8]) -> bool {
    ip.len() >= ipv4::HEADER_LEN && read_u16(ip, 6) & 0x1fff != 0
}

/// True for a first fragment (More Fragments set, offset 0).
#[inline]
pub fn is_first_fragment(ip: &[u8]) -> bool {
    ip.len() >= ipv4::HEADER_LEN && read_u16(ip, 6) & 0x3fff == 0x2000
}

/// Rewrites the addresses of a fragment to `rw`, updating the IPv4 header
/// checksum incrementally (RFC 1624). `ip` is a checked IPv4 header.
pub fn rewrite_fragment(ip: &mut [u8], rw: FragRewrite) {
    let mut sum = read_u16(ip, 10);
    for (offset, new) in [(12, rw.src), (16, rw.dst)] {
        let old = u32::from_be_bytes([ip[offset], ip[offset + 1], ip[offset + 2], ip[offset + 3]]);
        sum = checksum::update32(sum, old, u32::from(new));
        ip[offset..offset + 4].copy_from_slice(&new.octets());
    }
    write_u16(ip, 10, sum);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(ident: u16) -> FragKey {
        FragKey {
            direction: Direction::Outbound,
            src: Ipv4Addr::new(100, 64, 0, 1),
            dst: Ipv4Addr::new(198, 51, 100, 2),
            proto: 17,
            ident,
        }
    }

    const RW: FragRewrite = FragRewrite { src: Ipv4Addr::new(198, 51, 100, 64), dst: Ipv4Addr::new(198, 51, 100, 2) };

    #[test]
    fn in_order_and_out_of_order() {
        let mut t = FragTable::new(FragConfig { datagrams_max: 4, held_max: 4, timeout_ms: 100 });
        // In order: the first fragment records, the others rewrite.
        assert!(t.record(key(1), RW, 0));
        assert_eq!(t.lookup_or_hold(key(1), 1), FragVerdict::Rewrite(RW));
        // Out of order: held, then released by the first fragment.
        assert_eq!(t.lookup_or_hold(key(2), 1), FragVerdict::Held(0));
        assert_eq!(t.lookup_or_hold(key(2), 2), FragVerdict::Held(1));
        assert_eq!(t.pop_released(), None);
        assert!(t.record(key(2), RW, 3));
        let mut released = vec![t.pop_released().unwrap(), t.pop_released().unwrap()];
        released.sort();
        assert_eq!(released, vec![0, 1]);
        assert_eq!(t.pop_released(), None);
        assert_eq!(t.lookup_or_hold(key(2), 4), FragVerdict::Rewrite(RW));
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn bounded_and_expiring() {
        let mut t = FragTable::new(FragConfig { datagrams_max: 2, held_max: 3, timeout_ms: 100 });
        assert!(matches!(t.lookup_or_hold(key(1), 0), FragVerdict::Held(_)));
        assert!(matches!(t.lookup_or_hold(key(2), 0), FragVerdict::Held(_)));
        // A third datagram: no record left.
        assert_eq!(t.lookup_or_hold(key(3), 0), FragVerdict::Full);
        assert!(!t.record(key(3), RW, 0));
        assert!(matches!(t.lookup_or_hold(key(2), 0), FragVerdict::Held(_)));
        // No held slot left.
        assert_eq!(t.lookup_or_hold(key(1), 0), FragVerdict::Full);
        assert_eq!(t.stats().full, 3);
        // Nothing expires before its time; then everything does.
        t.expire(50, 1000);
        assert_eq!(t.pop_expired(), None);
        t.expire(100, 1000);
        let mut n = 0;
        while t.pop_expired().is_some() {
            n += 1;
        }
        assert_eq!((n, t.len()), (3, 0));
        // Slots and records are reusable.
        for i in 0..3 {
            assert!(matches!(t.lookup_or_hold(key(10 + (i % 2)), 200), FragVerdict::Held(_)));
        }
    }

    #[test]
    fn per_datagram_cap() {
        let mut t = FragTable::new(FragConfig { datagrams_max: 4, held_max: 1000, timeout_ms: 100 });
        for _ in 0..HELD_PER_DATAGRAM_MAX {
            assert!(matches!(t.lookup_or_hold(key(1), 0), FragVerdict::Held(_)));
        }
        assert_eq!(t.lookup_or_hold(key(1), 0), FragVerdict::Full);
        assert!(matches!(t.lookup_or_hold(key(2), 0), FragVerdict::Held(_)));
    }

    #[test]
    fn deletion_keeps_every_other_record_findable() {
        // Many records through a small table, expiring in turns: every live
        // one stays findable (backward-shift deletion).
        let mut t = FragTable::new(FragConfig { datagrams_max: 64, held_max: 0, timeout_ms: 10 });
        for round in 0..50u64 {
            for i in 0..40u16 {
                let k = key((round as u16) * 40 + i);
                assert!(t.record(k, RW, round * 10 + u64::from(i % 3)), "round {round} i {i}");
            }
            t.expire(round * 10 + 12, usize::MAX);
            assert_eq!(t.len(), 0, "round {round}");
        }
        let live: Vec<FragKey> = (0..60).map(key).collect();
        for (n, k) in live.iter().enumerate() {
            assert!(t.record(*k, RW, n as u64));
        }
        t.expire(30 + 10, usize::MAX);
        for (n, k) in live.iter().enumerate() {
            assert_eq!(t.find(k).is_ok(), n as u64 + 10 > 40, "{n}");
        }
    }

    #[test]
    fn rewrite_keeps_the_header_checksum_right() {
        let mut ip = [0u8; 20];
        ipv4::emit_header(
            &mut ip,
            Ipv4Addr::new(100, 64, 0, 1),
            Ipv4Addr::new(198, 51, 100, 2),
            ipv4::Protocol::UDP,
            64,
            0,
        )
        .unwrap();
        rewrite_fragment(&mut ip, RW);
        let p = ipv4::Packet::new_unchecked(&ip[..]);
        assert!(p.verify_checksum());
        assert_eq!((p.src_addr(), p.dst_addr()), (RW.src, RW.dst));
        let mut f = ip;
        f[6] = 0x20;
        assert!(is_first_fragment(&f) && !is_later_fragment(&f));
        f[7] = 1;
        assert!(!is_first_fragment(&f) && is_later_fragment(&f));
    }
}
