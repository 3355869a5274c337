//! The cluster's messages (UDP datagrams between the hosts' mapping lcores;
//! docs/nat-ha.md has the table). Big-endian; every datagram is at most
//! [`DATAGRAM_MAX`] bytes and starts with a [`Header`]:
//!
//! ```text
//!  0      2    3    4        6      8             12                    20
//!  ┌──────┬────┬────┬────────┬──────┬─────────────┬─────────────────────┐
//!  │0x4e48│ v1 │type│ from   │ 0  0 │ fingerprint │ incarnation (u64)   │ body...
//!  └──────┴────┴────┴────────┴──────┴─────────────┴─────────────────────┘
//! ```
//!
//! Batched messages (state requests and replies, activity, invalidations,
//! heartbeat entries) have a count (u16) and fixed-size entries; [`Batch`]
//! builds them in a buffer allocated once.

use std::net::Ipv4Addr;

use crate::nat::cache::CacheKey;
use crate::nat::translate::{FlowKey, Proto};

pub const MAGIC: u16 = 0x4e48;
pub const VERSION: u8 = 1;
pub const HEADER_LEN: usize = 20;
/// Largest datagram (fits a 1500-byte MTU with IPv4 and UDP headers).
pub const DATAGRAM_MAX: usize = 1400;

/// Message types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
    Heartbeat = 1,
    Sync = 2,
    SyncAck = 3,
    StateRequest = 4,
    StateReply = 5,
    Activity = 6,
    Invalidate = 7,
    Owner = 8,
    Handover = 9,
}

impl Kind {
    pub fn from_u8(v: u8) -> Option<Kind> {
        Some(match v {
            1 => Kind::Heartbeat,
            2 => Kind::Sync,
            3 => Kind::SyncAck,
            4 => Kind::StateRequest,
            5 => Kind::StateReply,
            6 => Kind::Activity,
            7 => Kind::Invalidate,
            8 => Kind::Owner,
            9 => Kind::Handover,
            _ => return None,
        })
    }

    /// Bytes of one entry of a batched message (0: not batched).
    pub const fn entry_len(self) -> usize {
        match self {
            Kind::Heartbeat => HEARTBEAT_ENTRY,
            Kind::StateRequest => REQUEST_LEN,
            Kind::StateReply => REPLY_LEN,
            Kind::Activity => ACTIVITY_LEN,
            Kind::Invalidate => INVALIDATE_LEN,
            _ => 0,
        }
    }
}

/// The header every datagram starts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub kind: Kind,
    pub from: u16,
    pub fingerprint: u32,
    pub incarnation: u64,
}

impl Header {
    pub fn encode(&self, out: &mut [u8]) {
        out[0..2].copy_from_slice(&MAGIC.to_be_bytes());
        out[2] = VERSION;
        out[3] = self.kind as u8;
        out[4..6].copy_from_slice(&self.from.to_be_bytes());
        out[6..8].fill(0);
        out[8..12].copy_from_slice(&self.fingerprint.to_be_bytes());
        out[12..20].copy_from_slice(&self.incarnation.to_be_bytes());
    }

    /// The header and the body after it; `None` if it is not a datagram of
    /// this protocol and version.
    pub fn decode(d: &[u8]) -> Option<(Header, &[u8])> {
        let h = d.get(..HEADER_LEN)?;
        if u16::from_be_bytes([h[0], h[1]]) != MAGIC || h[2] != VERSION {
            return None;
        }
        let header = Header {
            kind: Kind::from_u8(h[3])?,
            from: u16::from_be_bytes([h[4], h[5]]),
            fingerprint: u32::from_be_bytes([h[8], h[9], h[10], h[11]]),
            incarnation: u64::from_be_bytes(h[12..20].try_into().ok()?),
        };
        Some((header, &d[HEADER_LEN..]))
    }
}

fn u16_at(b: &[u8], i: usize) -> u16 {
    u16::from_be_bytes([b[i], b[i + 1]])
}

fn u64_at(b: &[u8], i: usize) -> u64 {
    u64::from_be_bytes(b[i..i + 8].try_into().expect("8 bytes"))
}

fn addr_at(b: &[u8], i: usize) -> Ipv4Addr {
    Ipv4Addr::new(b[i], b[i + 1], b[i + 2], b[i + 3])
}

fn put_ep(out: &mut [u8], i: usize, ep: (Ipv4Addr, u16)) {
    out[i..i + 4].copy_from_slice(&ep.0.octets());
    out[i + 4..i + 6].copy_from_slice(&ep.1.to_be_bytes());
}

fn ep_at(b: &[u8], i: usize) -> (Ipv4Addr, u16) {
    (addr_at(b, i), u16_at(b, i + 4))
}

/// A batched message being built: header, count, entries.
#[derive(Debug, Clone)]
pub struct Batch {
    kind: Kind,
    buf: Vec<u8>,
    count: u16,
}

impl Batch {
    /// An empty batch of `kind` (a batched kind).
    pub fn new(kind: Kind) -> Batch {
        assert!(kind.entry_len() > 0, "{kind:?} is not batched");
        let mut buf = Vec::with_capacity(DATAGRAM_MAX);
        buf.resize(HEADER_LEN + 2, 0);
        Batch { kind, buf, count: 0 }
    }

    pub fn len(&self) -> usize {
        usize::from(self.count)
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Whether one more entry fits.
    pub fn has_room(&self) -> bool {
        self.buf.len() + self.kind.entry_len() <= DATAGRAM_MAX
    }

    /// Room for the next entry (zeroed); the caller fills it. `None` when full.
    pub fn entry(&mut self) -> Option<&mut [u8]> {
        if !self.has_room() {
            return None;
        }
        let at = self.buf.len();
        self.buf.resize(at + self.kind.entry_len(), 0);
        self.count += 1;
        Some(&mut self.buf[at..])
    }

    /// The datagram (header stamped), ready to send; then [`Batch::clear`].
    pub fn finish(&mut self, header: Header) -> &[u8] {
        header.encode(&mut self.buf[..HEADER_LEN]);
        self.buf[HEADER_LEN..HEADER_LEN + 2].copy_from_slice(&self.count.to_be_bytes());
        &self.buf
    }

    pub fn clear(&mut self) {
        self.buf.truncate(HEADER_LEN + 2);
        self.count = 0;
    }
}

/// The entries of a batched message body.
pub fn entries(kind: Kind, body: &[u8]) -> impl Iterator<Item = &[u8]> + '_ {
    let n = if body.len() >= 2 { usize::from(u16_at(body, 0)) } else { 0 };
    let len = kind.entry_len().max(1);
    body.get(2..).unwrap_or(&[]).chunks_exact(len).take(n)
}

// ---- heartbeat ----

/// Bytes of a heartbeat entry.
pub const HEARTBEAT_ENTRY: usize = 12;

/// What a heartbeat says of one shard its sender owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OwnedShard {
    pub shard: u16,
    pub epoch: u64,
    /// The sender feeds a standby for it.
    pub attached: bool,
    /// The sender allocates in it now.
    pub allocating: bool,
}

impl OwnedShard {
    pub fn encode(&self, out: &mut [u8]) {
        out[0..2].copy_from_slice(&self.shard.to_be_bytes());
        out[2..10].copy_from_slice(&self.epoch.to_be_bytes());
        out[10] = u8::from(self.attached) | u8::from(self.allocating) << 1;
    }

    pub fn decode(e: &[u8]) -> OwnedShard {
        OwnedShard { shard: u16_at(e, 0), epoch: u64_at(e, 2), attached: e[10] & 1 != 0, allocating: e[10] & 2 != 0 }
    }
}

// ---- sync and its ack ----

/// Bytes of a sync message before its records.
pub const SYNC_HEAD: usize = 20;

/// Writes a sync message (header, shard, epoch, first sequence, records)
/// into `out`; returns its length.
pub fn encode_sync(
    out: &mut [u8],
    header: Header,
    shard: u16,
    epoch: u64,
    first_seq: u64,
    records: &[[u8; 28]],
) -> usize {
    header.encode(out);
    let b = &mut out[HEADER_LEN..];
    b[0..2].copy_from_slice(&shard.to_be_bytes());
    b[2..10].copy_from_slice(&epoch.to_be_bytes());
    b[10..18].copy_from_slice(&first_seq.to_be_bytes());
    b[18..20].copy_from_slice(&(records.len() as u16).to_be_bytes());
    for (i, r) in records.iter().enumerate() {
        b[SYNC_HEAD + i * 28..SYNC_HEAD + (i + 1) * 28].copy_from_slice(r);
    }
    HEADER_LEN + SYNC_HEAD + records.len() * 28
}

/// A sync message's body: (shard, epoch, first sequence, the records' bytes).
pub fn decode_sync(body: &[u8]) -> Option<(u16, u64, u64, &[u8])> {
    let h = body.get(..SYNC_HEAD)?;
    let count = usize::from(u16_at(h, 18));
    let records = body.get(SYNC_HEAD..SYNC_HEAD + count * 28)?;
    Some((u16_at(h, 0), u64_at(h, 2), u64_at(h, 10), records))
}

/// A sync ack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncAck {
    pub shard: u16,
    pub epoch: u64,
    pub acked: u64,
    pub resync: bool,
}

impl SyncAck {
    pub const LEN: usize = 19;

    pub fn encode(&self, out: &mut [u8]) {
        out[0..2].copy_from_slice(&self.shard.to_be_bytes());
        out[2..10].copy_from_slice(&self.epoch.to_be_bytes());
        out[10..18].copy_from_slice(&self.acked.to_be_bytes());
        out[18] = u8::from(self.resync);
    }

    pub fn decode(b: &[u8]) -> Option<SyncAck> {
        let b = b.get(..Self::LEN)?;
        Some(SyncAck { shard: u16_at(b, 0), epoch: u64_at(b, 2), acked: u64_at(b, 10), resync: b[18] & 1 != 0 })
    }
}

// ---- state requests and replies ----

/// Bytes of a state request entry.
pub const REQUEST_LEN: usize = 20;

/// What a request asks of the owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Op {
    /// Find or create the mapping and session (`NatTable::outbound`).
    Outbound = 1,
    /// Find the mapping, filter, find or create the session (`NatTable::inbound`).
    Inbound = 2,
    /// ICMP error from inside: look up only.
    LookupOutbound = 3,
    /// ICMP error from outside: look up only.
    LookupInbound = 4,
}

impl Op {
    pub fn from_u8(v: u8) -> Option<Op> {
        Some(match v {
            1 => Op::Outbound,
            2 => Op::Inbound,
            3 => Op::LookupOutbound,
            4 => Op::LookupInbound,
            _ => return None,
        })
    }
}

/// One state request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    pub id: u32,
    pub op: Op,
    pub tcp_flags: u8,
    pub key: FlowKey,
}

impl Request {
    pub fn encode(&self, out: &mut [u8]) {
        out[0..4].copy_from_slice(&self.id.to_be_bytes());
        out[4] = self.op as u8;
        out[5] = self.key.proto.index() as u8;
        out[6] = self.tcp_flags;
        put_ep(out, 8, (self.key.src, self.key.sport));
        put_ep(out, 14, (self.key.dst, self.key.dport));
    }

    pub fn decode(e: &[u8]) -> Option<Request> {
        let (src, sport) = ep_at(e, 8);
        let (dst, dport) = ep_at(e, 14);
        Some(Request {
            id: u32::from_be_bytes([e[0], e[1], e[2], e[3]]),
            op: Op::from_u8(e[4])?,
            tcp_flags: e[6],
            key: FlowKey { proto: *Proto::ALL.get(usize::from(e[5]))?, src, sport, dst, dport },
        })
    }
}

/// Bytes of a state reply entry.
pub const REPLY_LEN: usize = 34;

/// How a request went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    /// Refused by the table (a [`crate::nat::NatError`], by its index in `ALL`).
    Refused(u8),
    /// The answering host does not own the shard; the reply carries its view.
    NotOwner,
    /// The owner is handing the shard over: ask the next owner.
    HandingOver,
}

impl Status {
    fn to_u8(self) -> u8 {
        match self {
            Status::Ok => 0,
            Status::Refused(i) => 1 + i,
            Status::NotOwner => 100,
            Status::HandingOver => 101,
        }
    }

    fn from_u8(v: u8) -> Status {
        match v {
            0 => Status::Ok,
            100 => Status::NotOwner,
            101 => Status::HandingOver,
            v => Status::Refused(v - 1),
        }
    }
}

/// One state reply: the binding when `status` is `Ok`; the answering
/// host's view of the shard's owner always.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply {
    pub id: u32,
    pub status: Status,
    pub proto: Proto,
    pub owner: u16,
    pub epoch: u64,
    pub inside: (Ipv4Addr, u16),
    pub public: (Ipv4Addr, u16),
    pub remote: (Ipv4Addr, u16),
}

impl Reply {
    pub fn encode(&self, out: &mut [u8]) {
        out[0..4].copy_from_slice(&self.id.to_be_bytes());
        out[4] = self.status.to_u8();
        out[5] = self.proto.index() as u8;
        out[6..8].copy_from_slice(&self.owner.to_be_bytes());
        out[8..16].copy_from_slice(&self.epoch.to_be_bytes());
        put_ep(out, 16, self.inside);
        put_ep(out, 22, self.public);
        put_ep(out, 28, self.remote);
    }

    pub fn decode(e: &[u8]) -> Option<Reply> {
        Some(Reply {
            id: u32::from_be_bytes([e[0], e[1], e[2], e[3]]),
            status: Status::from_u8(e[4]),
            proto: *Proto::ALL.get(usize::from(e[5]))?,
            owner: u16_at(e, 6),
            epoch: u64_at(e, 8),
            inside: ep_at(e, 16),
            public: ep_at(e, 22),
            remote: ep_at(e, 28),
        })
    }
}

// ---- activity and invalidations ----

/// Bytes of an activity entry.
pub const ACTIVITY_LEN: usize = 24;

/// A worker's activity record, forwarded to the owner of its shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Activity {
    /// The worker (on the sending host) whose cache holds the entry.
    pub worker: u8,
    pub tcp_flags: u8,
    pub key: CacheKey,
    /// What the entry rewrites to.
    pub rewrite: (Ipv4Addr, u16),
}

impl Activity {
    pub fn encode(&self, out: &mut [u8]) {
        out[0] = self.worker;
        out[1] = self.tcp_flags;
        out[2..18].copy_from_slice(&self.key.0.to_be_bytes());
        put_ep(out, 18, self.rewrite);
    }

    pub fn decode(e: &[u8]) -> Activity {
        Activity {
            worker: e[0],
            tcp_flags: e[1],
            key: CacheKey(u128::from_be_bytes(e[2..18].try_into().expect("16 bytes"))),
            rewrite: ep_at(e, 18),
        }
    }
}

/// Bytes of an invalidation entry.
pub const INVALIDATE_LEN: usize = 20;

/// Encodes an invalidation entry: the worker and the cache key to drop.
pub fn encode_invalidation(out: &mut [u8], worker: u8, key: CacheKey) {
    out[0] = worker;
    out[4..20].copy_from_slice(&key.0.to_be_bytes());
}

pub fn decode_invalidation(e: &[u8]) -> (u8, CacheKey) {
    (e[0], CacheKey(u128::from_be_bytes(e[4..20].try_into().expect("16 bytes"))))
}

// ---- owner, handover ----

/// `owner(shard, host, epoch)`: the sender took the shard.
pub fn encode_owner(out: &mut [u8], shard: u16, host: u16, epoch: u64) -> usize {
    out[0..2].copy_from_slice(&shard.to_be_bytes());
    out[2..4].copy_from_slice(&host.to_be_bytes());
    out[4..12].copy_from_slice(&epoch.to_be_bytes());
    12
}

pub fn decode_owner(b: &[u8]) -> Option<(u16, u16, u64)> {
    let b = b.get(..12)?;
    Some((u16_at(b, 0), u16_at(b, 2), u64_at(b, 4)))
}

/// `handover(shard, epoch, last sequence)`: take the shard once you have
/// applied everything up to `last`.
pub fn encode_handover(out: &mut [u8], shard: u16, epoch: u64, last: u64) -> usize {
    out[0..2].copy_from_slice(&shard.to_be_bytes());
    out[2..10].copy_from_slice(&epoch.to_be_bytes());
    out[10..18].copy_from_slice(&last.to_be_bytes());
    18
}

pub fn decode_handover(b: &[u8]) -> Option<(u16, u64, u64)> {
    let b = b.get(..18)?;
    Some((u16_at(b, 0), u64_at(b, 2), u64_at(b, 10)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nat::session::Direction;

    fn header(kind: Kind) -> Header {
        Header { kind, from: 3, fingerprint: 0xdead_beef, incarnation: 0x0102_0304_0506_0708 }
    }

    #[test]
    fn header_round_trips_and_rejects_strangers() {
        let mut b = [0u8; 24];
        header(Kind::Owner).encode(&mut b);
        let (h, body) = Header::decode(&b).unwrap();
        assert_eq!(h, header(Kind::Owner));
        assert_eq!(body.len(), 4);
        b[2] = 2;
        assert!(Header::decode(&b).is_none(), "other version");
        header(Kind::Owner).encode(&mut b);
        b[3] = 42;
        assert!(Header::decode(&b).is_none(), "unknown type");
        assert!(Header::decode(&b[..10]).is_none());
    }

    #[test]
    fn batches_fill_a_datagram_and_round_trip() {
        let key = FlowKey {
            proto: Proto::Tcp,
            src: Ipv4Addr::new(100, 64, 0, 1),
            sport: 4000,
            dst: Ipv4Addr::new(198, 51, 100, 7),
            dport: 443,
        };
        let mut batch = Batch::new(Kind::StateRequest);
        let mut n = 0u32;
        while let Some(e) = batch.entry() {
            Request { id: n, op: Op::Outbound, tcp_flags: 2, key }.encode(e);
            n += 1;
        }
        assert_eq!(n as usize, (DATAGRAM_MAX - HEADER_LEN - 2) / REQUEST_LEN);
        let d = batch.finish(header(Kind::StateRequest)).to_vec();
        assert!(d.len() <= DATAGRAM_MAX);
        let (h, body) = Header::decode(&d).unwrap();
        let got: Vec<Request> = entries(h.kind, body).map(|e| Request::decode(e).unwrap()).collect();
        assert_eq!(got.len(), n as usize);
        assert_eq!(got[5], Request { id: 5, op: Op::Outbound, tcp_flags: 2, key });
        batch.clear();
        assert!(batch.is_empty());

        let reply = Reply {
            id: 9,
            status: Status::Refused(3),
            proto: Proto::Udp,
            owner: 2,
            epoch: 77,
            inside: (Ipv4Addr::new(100, 64, 0, 1), 5),
            public: (Ipv4Addr::new(198, 51, 100, 1), 1030),
            remote: (Ipv4Addr::new(203, 0, 113, 1), 53),
        };
        let mut e = [0u8; REPLY_LEN];
        for status in [Status::Ok, Status::Refused(0), Status::Refused(14), Status::NotOwner, Status::HandingOver] {
            Reply { status, ..reply }.encode(&mut e);
            assert_eq!(Reply::decode(&e), Some(Reply { status, ..reply }));
        }
        let a = Activity {
            worker: 1,
            tcp_flags: 0x11,
            key: CacheKey::new(Direction::Inbound, &key),
            rewrite: (Ipv4Addr::new(100, 64, 0, 1), 4000),
        };
        let mut e = [0u8; ACTIVITY_LEN];
        a.encode(&mut e);
        assert_eq!(Activity::decode(&e), a);
        let mut e = [0u8; INVALIDATE_LEN];
        encode_invalidation(&mut e, 3, a.key);
        assert_eq!(decode_invalidation(&e), (3, a.key));
        let s = OwnedShard { shard: 4, epoch: 99, attached: true, allocating: false };
        let mut e = [0u8; HEARTBEAT_ENTRY];
        s.encode(&mut e);
        assert_eq!(OwnedShard::decode(&e), s);
    }

    #[test]
    fn sync_messages_round_trip() {
        let mut out = [0u8; DATAGRAM_MAX];
        let recs = [[7u8; 28]; 48];
        let n = encode_sync(&mut out, header(Kind::Sync), 2, 10, 500, &recs);
        assert!(n <= DATAGRAM_MAX, "48 records fit");
        let (_, body) = Header::decode(&out[..n]).unwrap();
        let (shard, epoch, first, r) = decode_sync(body).unwrap();
        assert_eq!((shard, epoch, first, r.len()), (2, 10, 500, 48 * 28));
        assert!(decode_sync(&body[..100]).is_none(), "truncated");
        let ack = SyncAck { shard: 1, epoch: 2, acked: 3, resync: true };
        let mut b = [0u8; SyncAck::LEN];
        ack.encode(&mut b);
        assert_eq!(SyncAck::decode(&b), Some(ack));
        let mut b = [0u8; 18];
        encode_owner(&mut b, 1, 2, 3);
        assert_eq!(decode_owner(&b), Some((1, 2, 3)));
        encode_handover(&mut b, 1, 2, 3);
        assert_eq!(decode_handover(&b), Some((1, 2, 3)));
    }
}
