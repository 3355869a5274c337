//! Messages between the workers and the mapping core. They ride in mbufs
//! over the per-worker SPSC ring pair, so nothing is allocated for them:
//!
//! * **request** (worker → mapping core): the held packet itself, as
//!   received (or, for the second half of a hairpin, as translated
//!   outbound), its mbuf tag naming the kind ([`TAG_OUTBOUND`],
//!   [`TAG_INBOUND`], [`TAG_HAIRPIN`]).
//! * **activity report** (worker → mapping core): an mbuf from the pool
//!   tagged [`TAG_TOUCH`], holding up to [`TOUCHES_PER_REPORT`] records of
//!   [`TOUCH_LEN`] bytes: the cache entry's key (u128, its direction
//!   included), its rewrite address (u32) and port (u16), TCP flags (u8),
//!   1 byte zero, time (u64 ms). Big-endian. Keyed by flow, not by session
//!   id, so any instance of a replicated mapping server finds (or adopts)
//!   the session.
//! * **answer** (mapping core → worker): the request's packet, translated,
//!   with an [`ANSWER_LEN`]-byte header prepended in its headroom: magic
//!   `0xA54E` (u16), entry count (u8, ≤ [`ANSWER_ENTRIES`]), 5 bytes zero,
//!   then [`ANSWER_ENTRIES`] entries of [`ENTRY_LEN`] bytes: cache key
//!   (u128), rewrite address (u32), rewrite port (u16), 2 bytes zero,
//!   session id (u64). The worker strips the header, installs the entries
//!   in its cache and sends the packet on through the route lookup.
//! * **invalidation** (mapping core → worker, NAT cluster): an mbuf tagged
//!   [`TAG_INVALIDATE`] holding cache keys (u128 each, big-endian) whose
//!   entries the worker must drop (the owner of their shard does not know
//!   the session and could not adopt it).

use std::net::Ipv4Addr;

use super::cache::{CacheKey, Rewrite, Touch};
use super::session::{Binding, Direction, SessionId};
use super::translate::{FlowKey, Proto};

/// Request: an outbound packet (inside → outside) without a cache entry.
pub const TAG_OUTBOUND: u32 = 0x4e41_0001;
/// Request: an inbound packet (to a pool address) without a cache entry.
pub const TAG_INBOUND: u32 = 0x4e41_0002;
/// Request: an outbound packet to a pool address (hairpin): translate both ways.
pub const TAG_HAIRPIN: u32 = 0x4e41_0003;
/// An activity report.
pub const TAG_TOUCH: u32 = 0x4e41_0004;
/// On an answer ring: cache keys to forget.
pub const TAG_INVALIDATE: u32 = 0x4e41_0005;

/// What a held packet asks of the mapping core (its mbuf tag on the
/// request ring).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    /// Inside → outside without a cache entry: find or create the mapping.
    Outbound,
    /// To a pool address without a cache entry: look the mapping up.
    Inbound,
    /// Inside → a pool address: translate both ways.
    Hairpin,
}

impl RequestKind {
    /// The request's mbuf tag.
    pub const fn tag(self) -> u32 {
        match self {
            RequestKind::Outbound => TAG_OUTBOUND,
            RequestKind::Inbound => TAG_INBOUND,
            RequestKind::Hairpin => TAG_HAIRPIN,
        }
    }

    /// The kind of a request tag (`None` for reports and foreign tags).
    pub const fn from_tag(tag: u32) -> Option<RequestKind> {
        match tag {
            TAG_OUTBOUND => Some(RequestKind::Outbound),
            TAG_INBOUND => Some(RequestKind::Inbound),
            TAG_HAIRPIN => Some(RequestKind::Hairpin),
            _ => None,
        }
    }
}

/// Bytes of one activity record.
pub const TOUCH_LEN: usize = 32;
/// Records in one report (fits the smallest allowed data room, 1152 bytes).
pub const TOUCHES_PER_REPORT: usize = 32;
/// Keys in one invalidation mbuf.
pub const INVALIDATIONS_PER_MBUF: usize = 64;

/// Cache entries one answer carries at most.
pub const ANSWER_ENTRIES: usize = 2;
/// Bytes of one answer entry.
pub const ENTRY_LEN: usize = 32;
/// Bytes of the answer header (fits the 128-byte mbuf headroom).
pub const ANSWER_LEN: usize = 8 + ANSWER_ENTRIES * ENTRY_LEN;
const MAGIC: u16 = 0xA54E;

// An answer fits the mbuf headroom; a report fits the smallest data room.
const _: () = assert!(ANSWER_LEN <= 128);
const _: () = assert!(TOUCHES_PER_REPORT * TOUCH_LEN <= 1152 - 128);
const _: () = assert!(INVALIDATIONS_PER_MBUF * 16 <= 1152 - 128);

/// Both cache keys of a session, with what each rewrites to:
/// (outbound key → public endpoint, inbound key → inside endpoint).
pub fn entries_of(b: &Binding) -> [(CacheKey, Rewrite); 2] {
    let icmp = b.proto == Proto::Icmp;
    let session = b.session.unwrap_or(SessionId::from_bits(u64::MAX));
    let out = FlowKey {
        proto: b.proto,
        src: b.inside_addr,
        sport: b.inside_port,
        dst: b.remote_addr,
        dport: if icmp { b.inside_port } else { b.remote_port },
    };
    let inb = FlowKey {
        proto: b.proto,
        src: b.remote_addr,
        sport: if icmp { b.public_port } else { b.remote_port },
        dst: b.public_addr,
        dport: b.public_port,
    };
    [
        (CacheKey::new(Direction::Outbound, &out), Rewrite { addr: b.public_addr, port: b.public_port, session }),
        (CacheKey::new(Direction::Inbound, &inb), Rewrite { addr: b.inside_addr, port: b.inside_port, session }),
    ]
}

/// The cache entries an answer carries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Answer {
    entries: [Option<(CacheKey, Rewrite)>; ANSWER_ENTRIES],
}

impl Answer {
    /// Adds an entry; false if the answer is full.
    pub fn push(&mut self, entry: (CacheKey, Rewrite)) -> bool {
        match self.entries.iter_mut().find(|e| e.is_none()) {
            Some(slot) => {
                *slot = Some(entry);
                true
            }
            None => false,
        }
    }

    pub fn entries(&self) -> impl Iterator<Item = (CacheKey, Rewrite)> + '_ {
        self.entries.iter().flatten().copied()
    }

    /// Writes the header into `out` (at least [`ANSWER_LEN`] bytes).
    pub fn encode(&self, out: &mut [u8]) {
        let out = &mut out[..ANSWER_LEN];
        out.fill(0);
        out[0..2].copy_from_slice(&MAGIC.to_be_bytes());
        out[2] = self.entries().count() as u8;
        for (i, (key, rw)) in self.entries().enumerate() {
            let e = &mut out[8 + i * ENTRY_LEN..8 + (i + 1) * ENTRY_LEN];
            e[0..16].copy_from_slice(&key.0.to_be_bytes());
            e[16..20].copy_from_slice(&rw.addr.octets());
            e[20..22].copy_from_slice(&rw.port.to_be_bytes());
            e[24..32].copy_from_slice(&rw.session.to_bits().to_be_bytes());
        }
    }

    /// Reads a header; `None` if `bytes` does not start with one.
    pub fn decode(bytes: &[u8]) -> Option<Answer> {
        let h = bytes.get(..ANSWER_LEN)?;
        if u16::from_be_bytes([h[0], h[1]]) != MAGIC || usize::from(h[2]) > ANSWER_ENTRIES {
            return None;
        }
        let mut answer = Answer::default();
        for i in 0..usize::from(h[2]) {
            let e = &h[8 + i * ENTRY_LEN..8 + (i + 1) * ENTRY_LEN];
            let key = CacheKey(u128::from_be_bytes(e[0..16].try_into().ok()?));
            key.parts()?;
            let rw = Rewrite {
                addr: Ipv4Addr::new(e[16], e[17], e[18], e[19]),
                port: u16::from_be_bytes([e[20], e[21]]),
                session: SessionId::from_bits(u64::from_be_bytes(e[24..32].try_into().ok()?)),
            };
            answer.push((key, rw));
        }
        Some(answer)
    }
}

/// Writes `touches` as report records into `out`; returns the bytes used.
pub fn encode_touches(touches: &[Touch], out: &mut [u8]) -> usize {
    let n = touches.len().min(out.len() / TOUCH_LEN);
    for (t, rec) in touches[..n].iter().zip(out.chunks_exact_mut(TOUCH_LEN)) {
        rec[0..16].copy_from_slice(&t.key.0.to_be_bytes());
        rec[16..20].copy_from_slice(&t.addr.octets());
        rec[20..22].copy_from_slice(&t.port.to_be_bytes());
        rec[22] = t.tcp_flags;
        rec[23] = 0;
        rec[24..32].copy_from_slice(&t.time_ms.to_be_bytes());
    }
    n * TOUCH_LEN
}

/// Reads the records of a report (a trailing partial record is ignored).
pub fn decode_touches(bytes: &[u8]) -> impl Iterator<Item = Touch> + '_ {
    bytes.chunks_exact(TOUCH_LEN).map(|rec| Touch {
        key: CacheKey(u128::from_be_bytes(rec[0..16].try_into().expect("16 bytes"))),
        addr: Ipv4Addr::new(rec[16], rec[17], rec[18], rec[19]),
        port: u16::from_be_bytes([rec[20], rec[21]]),
        tcp_flags: rec[22],
        time_ms: u64::from_be_bytes(rec[24..32].try_into().expect("8 bytes")),
    })
}

/// Writes cache keys to invalidate into `out`; returns the bytes used.
pub fn encode_invalidations(keys: &[CacheKey], out: &mut [u8]) -> usize {
    let n = keys.len().min(out.len() / 16);
    for (k, rec) in keys[..n].iter().zip(out.chunks_exact_mut(16)) {
        rec.copy_from_slice(&k.0.to_be_bytes());
    }
    n * 16
}

/// Reads the keys of an invalidation.
pub fn decode_invalidations(bytes: &[u8]) -> impl Iterator<Item = CacheKey> + '_ {
    bytes.chunks_exact(16).map(|rec| CacheKey(u128::from_be_bytes(rec.try_into().expect("16 bytes"))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(proto: Proto) -> Binding {
        Binding {
            proto,
            inside_addr: Ipv4Addr::new(100, 64, 0, 10),
            inside_port: 4000,
            public_addr: Ipv4Addr::new(203, 0, 113, 1),
            public_port: 5000,
            remote_addr: Ipv4Addr::new(198, 51, 100, 7),
            remote_port: if proto == Proto::Icmp { 0 } else { 80 },
            session: Some(SessionId::from_bits(0x1_0000_0002)),
        }
    }

    #[test]
    fn answer_round_trips_and_fits_the_headroom() {
        let [a, b] = entries_of(&binding(Proto::Tcp));
        let mut ans = Answer::default();
        assert!(ans.push(a));
        assert!(ans.push(b));
        assert!(!ans.push(a), "full");
        let mut buf = [0xffu8; ANSWER_LEN + 3];
        ans.encode(&mut buf);
        assert_eq!(Answer::decode(&buf), Some(ans));
        buf[0] = 0;
        assert_eq!(Answer::decode(&buf), None);
        assert_eq!(Answer::decode(&buf[..10]), None);
        let mut empty = [0u8; ANSWER_LEN];
        Answer::default().encode(&mut empty);
        assert_eq!(Answer::decode(&empty).unwrap().entries().count(), 0);
    }

    #[test]
    fn session_keys_match_the_packets_of_the_session() {
        let b = binding(Proto::Udp);
        let [(out, out_rw), (inb, in_rw)] = entries_of(&b);
        assert_eq!(
            out.parts().unwrap().1,
            FlowKey { proto: Proto::Udp, src: b.inside_addr, sport: 4000, dst: b.remote_addr, dport: 80 }
        );
        assert_eq!(
            inb.parts().unwrap().1,
            FlowKey { proto: Proto::Udp, src: b.remote_addr, sport: 80, dst: b.public_addr, dport: 5000 }
        );
        assert_eq!((out_rw.addr, out_rw.port), (b.public_addr, 5000));
        assert_eq!((in_rw.addr, in_rw.port), (b.inside_addr, 4000));
        // ICMP echo: the identifier is both "ports".
        let b = binding(Proto::Icmp);
        let [(out, _), (inb, _)] = entries_of(&b);
        assert_eq!((out.parts().unwrap().1.sport, out.parts().unwrap().1.dport), (4000, 4000));
        assert_eq!((inb.parts().unwrap().1.sport, inb.parts().unwrap().1.dport), (5000, 5000));
    }

    #[test]
    fn touches_round_trip() {
        let touches: Vec<Touch> = (0..5u16)
            .map(|i| Touch {
                key: entries_of(&binding(Proto::Udp))[usize::from(i % 2)].0,
                addr: Ipv4Addr::new(203, 0, 113, i as u8),
                port: 1000 + i,
                tcp_flags: i as u8,
                time_ms: 1_000_000 + u64::from(i),
            })
            .collect();
        let mut buf = vec![0u8; TOUCHES_PER_REPORT * TOUCH_LEN];
        let n = encode_touches(&touches, &mut buf);
        assert_eq!(n, 5 * TOUCH_LEN);
        assert_eq!(decode_touches(&buf[..n + 3]).collect::<Vec<_>>(), touches);
        assert_eq!(touches[1].direction(), Direction::Inbound);
        // A short buffer takes what fits.
        assert_eq!(encode_touches(&touches, &mut buf[..2 * TOUCH_LEN + 1]), 2 * TOUCH_LEN);
    }

    #[test]
    fn invalidations_round_trip() {
        let keys: Vec<CacheKey> = entries_of(&binding(Proto::Tcp)).iter().map(|e| e.0).collect();
        let mut buf = [0u8; 40];
        let n = encode_invalidations(&keys, &mut buf);
        assert_eq!(n, 32);
        assert_eq!(decode_invalidations(&buf[..n]).collect::<Vec<_>>(), keys);
        assert_eq!(encode_invalidations(&keys, &mut buf[..20]), 16);
    }
}
