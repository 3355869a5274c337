//! The storage request header: the start of the UDP payload of every request
//! to a storage node, and of every reply. SRv6 storage steering reads only
//! this header (the op, the object id and the request id); the object store
//! reads the rest.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |        Magic 0x4153 "AS"      |    Version    |      Op       |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |     Status (replies)          |            Flags              |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                       Request Id (64 bits)                    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                       Object Id (64 bits)                     |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                    Offset (64 bits, bytes)                    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                       Length (32 bits)                        |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                       Reserved (32 bits)                      |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                  Operation data (Length bytes)                ...
//! ```
//! All fields big-endian. `HEADER_LEN` = 40. A reply has the request's op with
//! the high bit set, the same request id and object id, and a status.
//! The *steering probe* (op 0x10) is answered by any storage node with a
//! [`ProbeReply`] body: the address of the node that accepted the request and
//! its queue depth at that moment.
//!
//! The `length` field: for a put it is the *fragment* bytes (the operation
//! data is a [`PutHead`] of 16 bytes, then the fragment); for a get the bytes
//! wanted; for a list the most entries wanted; for a delete and in every
//! reply the length of the operation data.
//!
//! Operation data (all big-endian):
//!
//! | op | request data | reply data |
//! |---|---|---|
//! | put | [`PutHead`] (object size u64, version u64), fragment | none |
//! | get | none | [`PutHead`] (size, version), the bytes |
//! | stat | none | [`StatReply`] (size u64, version u64, chunks u32, flags u32: bit 0 complete) |
//! | delete | version u64 (0: any) | none |
//! | list | none ([`FLAG_AFTER`]: object id is a start-after id) | count u32, then count × [`ListEntry`] (id, size, version: u64 each) |
//! | probe | none | [`ProbeReply`] |
//!
//! Objects travel in fragments of [`FRAGMENT`] bytes; the store writes whole
//! chunks of [`CHUNK`] bytes, and a put fragment is acknowledged only when
//! its chunk is durable. This module is the one definition of the protocol:
//! the appliance's service, steering, `objcli` and the fuzz targets use it.
//! Its reference text is `docs/storage-service.md`.
//!
//! Accessors panic only on a view made with `new_unchecked` over fewer than
//! `HEADER_LEN` bytes; the body parsers return `Err(Truncated)` on short input.

use std::net::Ipv6Addr;

use super::WireError;

pub const MAGIC: u16 = 0x4153;
pub const VERSION: u8 = 1;
pub const HEADER_LEN: usize = 40;
/// Bit set in the op of every reply.
pub const OP_REPLY: u8 = 0x80;
/// Bytes of object data in one put or get packet.
pub const FRAGMENT: usize = 1024;
/// Bytes of one chunk (the store's block); a put fragment is acknowledged
/// when its whole chunk is durable.
pub const CHUNK: usize = 4096;
/// Fragments in one chunk.
pub const FRAGMENTS_PER_CHUNK: usize = CHUNK / FRAGMENT;
/// Most entries in one list reply (fits a 1280-byte IPv6 MTU).
pub const LIST_MAX: usize = 50;
/// Request flag of a list: the object id is a start-after id.
pub const FLAG_AFTER: u16 = 1;

/// Operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Op(pub u8);

impl Op {
    pub const PUT_CHUNK: Op = Op(1);
    pub const GET_CHUNK: Op = Op(2);
    pub const STAT: Op = Op(3);
    pub const DELETE: Op = Op(4);
    pub const LIST: Op = Op(5);
    /// Steering probe: "who accepted, and how loaded is it?"
    pub const PROBE: Op = Op(0x10);

    pub fn is_reply(self) -> bool {
        self.0 & OP_REPLY != 0
    }

    pub fn reply(self) -> Op {
        Op(self.0 | OP_REPLY)
    }

    /// The request op of a reply (or of a request: itself).
    pub fn request(self) -> Op {
        Op(self.0 & !OP_REPLY)
    }

    /// The operation's name (metric label, log field): `put`, `get`, `stat`,
    /// `delete`, `list`, `probe`, or `other`.
    pub fn name(self) -> &'static str {
        match self.request() {
            Op::PUT_CHUNK => "put",
            Op::GET_CHUNK => "get",
            Op::STAT => "stat",
            Op::DELETE => "delete",
            Op::LIST => "list",
            Op::PROBE => "probe",
            _ => "other",
        }
    }
}

/// Reply status codes.
pub mod status {
    /// Done (a put: the fragment's chunk is durable).
    pub const OK: u16 = 0;
    /// No such object, or the chunk was never written.
    pub const NOT_FOUND: u16 = 1;
    /// The request is malformed (offset, length, object id).
    pub const BAD_REQUEST: u16 = 2;
    /// An op this node does not serve.
    pub const UNSUPPORTED: u16 = 3;
    /// The stored data failed its checksum: read another replica.
    pub const CHECKSUM: u16 = 4;
    /// The device or the object table is full.
    pub const NO_SPACE: u16 = 5;
    /// The node's request table or assembly buffers are full: retry later.
    pub const BUSY: u16 = 6;
    /// A newer version of the object is stored.
    pub const VERSION: u16 = 7;
    /// The device failed the I/O.
    pub const IO: u16 = 8;
    /// Every status, in code order.
    pub const ALL: [u16; 9] = [OK, NOT_FOUND, BAD_REQUEST, UNSUPPORTED, CHECKSUM, NO_SPACE, BUSY, VERSION, IO];

    /// The status's name (metric label, error text): `ok`, `not_found`, ...,
    /// or `unknown`.
    pub fn name(s: u16) -> &'static str {
        match s {
            OK => "ok",
            NOT_FOUND => "not_found",
            BAD_REQUEST => "bad_request",
            UNSUPPORTED => "unsupported",
            CHECKSUM => "checksum",
            NO_SPACE => "no_space",
            BUSY => "busy",
            VERSION => "version",
            IO => "io",
            _ => "unknown",
        }
    }
}

mod field {
    use std::ops::Range;
    pub const MAGIC: Range<usize> = 0..2;
    pub const VERSION: usize = 2;
    pub const OP: usize = 3;
    pub const STATUS: Range<usize> = 4..6;
    pub const FLAGS: Range<usize> = 6..8;
    pub const REQUEST_ID: Range<usize> = 8..16;
    pub const OBJECT_ID: Range<usize> = 16..24;
    pub const OFFSET: Range<usize> = 24..32;
    pub const LENGTH: Range<usize> = 32..36;
}

/// A view of a storage header at the start of a UDP payload.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

fn be_u16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}
fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}
fn be_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

impl<T: AsRef<[u8]>> Packet<T> {
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Checks length, magic and version.
    pub fn new_checked(buffer: T) -> Result<Packet<T>, WireError> {
        let p = Packet { buffer };
        let b = p.buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if be_u16(&b[field::MAGIC]) != MAGIC || b[field::VERSION] != VERSION {
            return Err(WireError::Malformed);
        }
        Ok(p)
    }

    pub fn op(&self) -> Op {
        Op(self.buffer.as_ref()[field::OP])
    }
    pub fn status(&self) -> u16 {
        be_u16(&self.buffer.as_ref()[field::STATUS])
    }
    pub fn flags(&self) -> u16 {
        be_u16(&self.buffer.as_ref()[field::FLAGS])
    }
    pub fn request_id(&self) -> u64 {
        be_u64(&self.buffer.as_ref()[field::REQUEST_ID])
    }
    pub fn object_id(&self) -> u64 {
        be_u64(&self.buffer.as_ref()[field::OBJECT_ID])
    }
    pub fn offset(&self) -> u64 {
        be_u64(&self.buffer.as_ref()[field::OFFSET])
    }
    pub fn length(&self) -> u32 {
        be_u32(&self.buffer.as_ref()[field::LENGTH])
    }
    /// The operation data after the header (at most `length` bytes).
    pub fn data(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        let end = (HEADER_LEN + self.length() as usize).min(b.len());
        &b[HEADER_LEN..end]
    }
}

/// The header's fields, for building.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Repr {
    pub op: u8,
    pub status: u16,
    pub flags: u16,
    pub request_id: u64,
    pub object_id: u64,
    pub offset: u64,
    pub length: u32,
}

impl Repr {
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> Repr {
        Repr {
            op: p.op().0,
            status: p.status(),
            flags: p.flags(),
            request_id: p.request_id(),
            object_id: p.object_id(),
            offset: p.offset(),
            length: p.length(),
        }
    }

    /// Parses the header at the start of `b` (length, magic and version
    /// checked) and returns it with the bytes after it.
    pub fn decode(b: &[u8]) -> Result<(Repr, &[u8]), WireError> {
        let p = Packet::new_checked(b)?;
        Ok((Repr::parse(&p), &b[HEADER_LEN..]))
    }

    /// Writes the 40-byte header.
    pub fn emit(&self, out: &mut [u8]) -> Result<usize, WireError> {
        if out.len() < HEADER_LEN {
            return Err(WireError::BufferTooSmall);
        }
        out[field::MAGIC].copy_from_slice(&MAGIC.to_be_bytes());
        out[field::VERSION] = VERSION;
        out[field::OP] = self.op;
        out[field::STATUS].copy_from_slice(&self.status.to_be_bytes());
        out[field::FLAGS].copy_from_slice(&self.flags.to_be_bytes());
        out[field::REQUEST_ID].copy_from_slice(&self.request_id.to_be_bytes());
        out[field::OBJECT_ID].copy_from_slice(&self.object_id.to_be_bytes());
        out[field::OFFSET].copy_from_slice(&self.offset.to_be_bytes());
        out[field::LENGTH].copy_from_slice(&self.length.to_be_bytes());
        out[36..40].fill(0);
        Ok(HEADER_LEN)
    }
}

/// Body of a reply to [`Op::PROBE`]: 16-byte address of the node that
/// accepted, then its queue depth (u32), then 4 reserved bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeReply {
    pub accepted_by: Ipv6Addr,
    pub queue_depth: u32,
}

impl ProbeReply {
    pub const LEN: usize = 24;

    pub fn emit(&self, out: &mut [u8]) -> Result<usize, WireError> {
        if out.len() < Self::LEN {
            return Err(WireError::BufferTooSmall);
        }
        out[..16].copy_from_slice(&self.accepted_by.octets());
        out[16..20].copy_from_slice(&self.queue_depth.to_be_bytes());
        out[20..24].fill(0);
        Ok(Self::LEN)
    }

    pub fn parse(data: &[u8]) -> Result<ProbeReply, WireError> {
        if data.len() < Self::LEN {
            return Err(WireError::Truncated);
        }
        let mut a = [0u8; 16];
        a.copy_from_slice(&data[..16]);
        Ok(ProbeReply { accepted_by: Ipv6Addr::from(a), queue_depth: be_u32(&data[16..20]) })
    }
}

/// The 16 bytes before the data of a put request and of a get reply: the
/// object's size and version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PutHead {
    pub size: u64,
    pub version: u64,
}

impl PutHead {
    pub const LEN: usize = 16;

    pub fn emit(&self, out: &mut [u8]) -> Result<usize, WireError> {
        if out.len() < Self::LEN {
            return Err(WireError::BufferTooSmall);
        }
        out[0..8].copy_from_slice(&self.size.to_be_bytes());
        out[8..16].copy_from_slice(&self.version.to_be_bytes());
        Ok(Self::LEN)
    }

    /// The head and the data after it.
    pub fn parse(data: &[u8]) -> Result<(PutHead, &[u8]), WireError> {
        if data.len() < Self::LEN {
            return Err(WireError::Truncated);
        }
        Ok((PutHead { size: be_u64(&data[0..8]), version: be_u64(&data[8..16]) }, &data[Self::LEN..]))
    }
}

/// The data of a stat reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StatReply {
    pub size: u64,
    pub version: u64,
    /// Chunks of the object.
    pub chunks: u32,
    /// Every chunk is stored.
    pub complete: bool,
}

impl StatReply {
    pub const LEN: usize = 24;

    pub fn emit(&self, out: &mut [u8]) -> Result<usize, WireError> {
        if out.len() < Self::LEN {
            return Err(WireError::BufferTooSmall);
        }
        out[0..8].copy_from_slice(&self.size.to_be_bytes());
        out[8..16].copy_from_slice(&self.version.to_be_bytes());
        out[16..20].copy_from_slice(&self.chunks.to_be_bytes());
        out[20..24].copy_from_slice(&u32::from(self.complete).to_be_bytes());
        Ok(Self::LEN)
    }

    pub fn parse(data: &[u8]) -> Result<StatReply, WireError> {
        if data.len() < Self::LEN {
            return Err(WireError::Truncated);
        }
        Ok(StatReply {
            size: be_u64(&data[0..8]),
            version: be_u64(&data[8..16]),
            chunks: be_u32(&data[16..20]),
            complete: be_u32(&data[20..24]) & 1 != 0,
        })
    }
}

/// One entry of a list reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ListEntry {
    pub id: u64,
    pub size: u64,
    pub version: u64,
}

impl ListEntry {
    pub const LEN: usize = 24;

    pub fn emit(&self, out: &mut [u8]) -> Result<usize, WireError> {
        if out.len() < Self::LEN {
            return Err(WireError::BufferTooSmall);
        }
        out[0..8].copy_from_slice(&self.id.to_be_bytes());
        out[8..16].copy_from_slice(&self.size.to_be_bytes());
        out[16..24].copy_from_slice(&self.version.to_be_bytes());
        Ok(Self::LEN)
    }

    pub fn parse(data: &[u8]) -> Result<ListEntry, WireError> {
        if data.len() < Self::LEN {
            return Err(WireError::Truncated);
        }
        Ok(ListEntry { id: be_u64(&data[0..8]), size: be_u64(&data[8..16]), version: be_u64(&data[16..24]) })
    }
}

/// Writes a list reply's data (count, then the entries; at most
/// [`LIST_MAX`] and as many as `out` holds) and returns its length.
pub fn emit_list(entries: impl IntoIterator<Item = ListEntry>, out: &mut [u8]) -> Result<usize, WireError> {
    if out.len() < 4 {
        return Err(WireError::BufferTooSmall);
    }
    let room = ((out.len() - 4) / ListEntry::LEN).min(LIST_MAX);
    let mut n = 0;
    for e in entries.into_iter().take(room) {
        e.emit(&mut out[4 + n * ListEntry::LEN..])?;
        n += 1;
    }
    out[0..4].copy_from_slice(&(n as u32).to_be_bytes());
    Ok(4 + n * ListEntry::LEN)
}

/// The entries of a list reply's data (`Err(Truncated)` when the count
/// promises more than there is).
pub fn parse_list(data: &[u8]) -> Result<impl Iterator<Item = ListEntry> + '_, WireError> {
    if data.len() < 4 {
        return Err(WireError::Truncated);
    }
    let n = be_u32(&data[0..4]) as usize;
    if (data.len() - 4) / ListEntry::LEN < n {
        return Err(WireError::Truncated);
    }
    Ok((0..n).map(move |i| {
        let at = 4 + i * ListEntry::LEN;
        ListEntry { id: be_u64(&data[at..]), size: be_u64(&data[at + 8..]), version: be_u64(&data[at + 16..]) }
    }))
}

/// Byte ranges `(offset, len)` of the fragments of an object of `size`
/// bytes. A 0-byte object is one fragment `(0, 0)` (so that a put creates it).
pub fn fragments(size: u64) -> impl Iterator<Item = (u64, u32)> {
    let n = size.div_ceil(FRAGMENT as u64).max(1);
    (0..n).map(move |i| {
        let off = i * FRAGMENT as u64;
        (off, size.saturating_sub(off).min(FRAGMENT as u64) as u32)
    })
}

/// The fragment length a put at `offset` of an object of `size` bytes must
/// carry, or `None` when `offset` is not the start of one of its fragments.
pub fn fragment_len(size: u64, offset: u64) -> Option<usize> {
    if !offset.is_multiple_of(FRAGMENT as u64) {
        return None;
    }
    if size == 0 {
        return (offset == 0).then_some(0);
    }
    (offset < size).then(|| (size - offset).min(FRAGMENT as u64) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn header_round_trip_and_checks() {
        let r = Repr {
            op: 0x10,
            status: 0,
            flags: 3,
            request_id: 0x1122334455667788,
            object_id: 42,
            offset: 4096,
            length: 0,
        };
        let mut b = [0u8; 64];
        assert_eq!(r.emit(&mut b), Ok(HEADER_LEN));
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(Repr::parse(&p), r);
        assert_eq!(p.op(), Op::PROBE);
        assert!(Op::PROBE.reply().is_reply());
        b[0] = 0;
        assert_eq!(Packet::new_checked(&b[..]).unwrap_err(), WireError::Malformed);
        assert_eq!(Packet::new_checked(&b[..39]).unwrap_err(), WireError::Truncated);
    }

    #[test]
    fn layout_matches_the_reference_client() {
        // tests/helpers/obj_client.py: struct.pack("!HBBHHQQQII", 0x4153, 1, 1, 0, 0, 7, 0x1122, 2048, 1024, 0)
        let mut b = [0u8; 56];
        let h = Repr {
            op: Op::PUT_CHUNK.0,
            request_id: 7,
            object_id: 0x1122,
            offset: 2048,
            length: 1024,
            ..Repr::default()
        };
        h.emit(&mut b).unwrap();
        PutHead { size: 5000, version: 1 }.emit(&mut b[HEADER_LEN..]).unwrap();
        assert_eq!(&b[..8], &[0x41, 0x53, 1, 1, 0, 0, 0, 0]);
        assert_eq!(&b[8..16], &7u64.to_be_bytes());
        assert_eq!(&b[16..24], &0x1122u64.to_be_bytes());
        assert_eq!(&b[24..32], &2048u64.to_be_bytes());
        assert_eq!(&b[32..36], &1024u32.to_be_bytes());
        assert_eq!(&b[36..40], &[0; 4]);
        assert_eq!(&b[40..48], &5000u64.to_be_bytes());
        assert_eq!(&b[48..56], &1u64.to_be_bytes());
        let (r, rest) = Repr::decode(&b).unwrap();
        assert_eq!(r, h);
        assert_eq!(PutHead::parse(rest).unwrap().0, PutHead { size: 5000, version: 1 });
        assert_eq!(Repr::decode(&b[..39]), Err(WireError::Truncated));
    }

    #[test]
    fn fragments_cover_the_object() {
        let f = |s| fragments(s).collect::<Vec<_>>();
        assert_eq!(f(0), vec![(0, 0)]);
        assert_eq!(f(1), vec![(0, 1)]);
        assert_eq!(f(1024), vec![(0, 1024)]);
        assert_eq!(f(2049), vec![(0, 1024), (1024, 1024), (2048, 1)]);
        assert_eq!(f(1 << 20).len(), 1024);
        assert_eq!(fragment_len(2049, 2048), Some(1));
        assert_eq!(fragment_len(2049, 1000), None);
        assert_eq!(fragment_len(2049, 3072), None);
        assert_eq!(fragment_len(0, 0), Some(0));
    }

    #[test]
    fn list_and_stat_round_trip() {
        let entries = [ListEntry { id: 1, size: 2, version: 3 }, ListEntry { id: 4, size: 5, version: 6 }];
        let mut b = [0u8; 4 + 2 * 24];
        assert_eq!(emit_list(entries, &mut b), Ok(b.len()));
        assert_eq!(parse_list(&b).unwrap().collect::<Vec<_>>(), entries);
        assert!(parse_list(&b[..30]).is_err());
        let mut small = [0u8; 4 + 24 + 10];
        assert_eq!(emit_list(entries, &mut small), Ok(28), "only what fits");
        let st = StatReply { size: 9, version: 2, chunks: 3, complete: true };
        let mut b = [0u8; 24];
        st.emit(&mut b).unwrap();
        assert_eq!(StatReply::parse(&b), Ok(st));
        assert_eq!(status::name(status::BUSY), "busy");
        assert_eq!(Op::GET_CHUNK.reply().name(), "get");
    }

    #[test]
    fn probe_reply_round_trip() {
        let r = ProbeReply { accepted_by: "2001:db8:a::1".parse().unwrap(), queue_depth: 7 };
        let mut b = [0u8; 24];
        r.emit(&mut b).unwrap();
        assert_eq!(ProbeReply::parse(&b), Ok(r));
    }

    proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            if let Ok(p) = Packet::new_checked(&bytes[..]) {
                let _ = (Repr::parse(&p), p.data());
            }
            let _ = ProbeReply::parse(&bytes);
            let _ = (PutHead::parse(&bytes), StatReply::parse(&bytes), ListEntry::parse(&bytes), Repr::decode(&bytes));
            if let Ok(entries) = parse_list(&bytes) {
                prop_assert!(entries.count() <= bytes.len() / ListEntry::LEN);
            }
        }

        #[test]
        fn fragments_tile_the_object(size in 0u64..(1 << 22)) {
            let mut next = 0;
            for (off, len) in fragments(size) {
                prop_assert_eq!(off, next);
                prop_assert_eq!(fragment_len(size, off), Some(len as usize));
                next = off + u64::from(len);
            }
            prop_assert_eq!(next, size);
        }
    }
}
