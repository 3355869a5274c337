//! The storage header and the operation data of docs/storage-service.md (byte layouts as in
//! `tests/helpers/obj_client.py`, the reference client). Pure functions, no I/O.
//!
//! Header (40 bytes, big-endian): magic `0x4153`, version 1, op, status (replies), flags,
//! request id (u64), object id (u64), offset (u64), length (u32), reserved (u32). A reply has
//! `op | 0x80`, the same request id and object id.
//!
//! The `length` field: for a put it is the *fragment* bytes (the data is 16 bytes of size and
//! version, then the fragment); for a get it is the bytes wanted; for a list the most entries
//! wanted; for a delete and in every reply it is the length of the operation data.

use std::fmt;

/// Magic of every storage header ("AS").
pub const MAGIC: u16 = 0x4153;
/// Protocol version.
pub const VERSION: u8 = 1;
/// Bytes of the header.
pub const HEADER_LEN: usize = 40;
/// Bytes of object data in one put or get packet.
pub const FRAGMENT: usize = 1024;
/// Bytes of one chunk (the store's block); a put is acknowledged when its whole chunk is durable.
pub const CHUNK: usize = 4096;
/// Most entries in one list reply.
pub const LIST_MAX: u32 = 50;
/// Reply bit of the op.
pub const REPLY: u8 = 0x80;
/// Request flag of a list: the object id is a start-after id.
pub const FLAG_AFTER: u16 = 1;

/// Operations.
pub mod op {
    pub const PUT: u8 = 0x01;
    pub const GET: u8 = 0x02;
    pub const STAT: u8 = 0x03;
    pub const DELETE: u8 = 0x04;
    pub const LIST: u8 = 0x05;
}

/// Reply statuses.
pub mod status {
    pub const OK: u16 = 0;
    pub const NOT_FOUND: u16 = 1;
    pub const BAD_REQUEST: u16 = 2;
    pub const UNSUPPORTED: u16 = 3;
    pub const CHECKSUM: u16 = 4;
    pub const NO_SPACE: u16 = 5;
    pub const BUSY: u16 = 6;
    pub const VERSION: u16 = 7;
    pub const IO: u16 = 8;
}

/// The name of a status code.
pub fn status_name(s: u16) -> &'static str {
    match s {
        status::OK => "ok",
        status::NOT_FOUND => "not found",
        status::BAD_REQUEST => "bad request",
        status::UNSUPPORTED => "unsupported",
        status::CHECKSUM => "checksum",
        status::NO_SPACE => "no space",
        status::BUSY => "busy",
        status::VERSION => "version",
        status::IO => "io",
        _ => "unknown status",
    }
}

/// A parsed storage header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Header {
    pub op: u8,
    pub status: u16,
    pub flags: u16,
    pub request_id: u64,
    pub object_id: u64,
    pub offset: u64,
    pub length: u32,
}

/// Why bytes are not a storage header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseError {
    Short(usize),
    Magic(u16),
    Version(u8),
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::Short(n) => write!(f, "{n} bytes, shorter than a storage header"),
            ParseError::Magic(m) => write!(f, "magic {m:#06x}"),
            ParseError::Version(v) => write!(f, "version {v}"),
        }
    }
}

impl Header {
    /// The header followed by `data`.
    pub fn encode(&self, data: &[u8]) -> Vec<u8> {
        let mut b = Vec::with_capacity(HEADER_LEN + data.len());
        b.extend_from_slice(&MAGIC.to_be_bytes());
        b.push(VERSION);
        b.push(self.op);
        b.extend_from_slice(&self.status.to_be_bytes());
        b.extend_from_slice(&self.flags.to_be_bytes());
        b.extend_from_slice(&self.request_id.to_be_bytes());
        b.extend_from_slice(&self.object_id.to_be_bytes());
        b.extend_from_slice(&self.offset.to_be_bytes());
        b.extend_from_slice(&self.length.to_be_bytes());
        b.extend_from_slice(&0u32.to_be_bytes());
        b.extend_from_slice(data);
        b
    }

    /// The header and the bytes after it.
    pub fn decode(b: &[u8]) -> Result<(Header, &[u8]), ParseError> {
        if b.len() < HEADER_LEN {
            return Err(ParseError::Short(b.len()));
        }
        let magic = be16(b, 0);
        if magic != MAGIC {
            return Err(ParseError::Magic(magic));
        }
        if b[2] != VERSION {
            return Err(ParseError::Version(b[2]));
        }
        let h = Header {
            op: b[3],
            status: be16(b, 4),
            flags: be16(b, 6),
            request_id: be64(b, 8),
            object_id: be64(b, 16),
            offset: be64(b, 24),
            length: be32(b, 32),
        };
        Ok((h, &b[HEADER_LEN..]))
    }
}

pub fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes(b[at..at + 2].try_into().expect("2 bytes"))
}

pub fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

pub fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// A request before it gets its request id: header fields and operation data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub op: u8,
    pub flags: u16,
    pub object_id: u64,
    pub offset: u64,
    pub length: u32,
    pub data: Vec<u8>,
}

impl Request {
    /// The packet with request id `rid`.
    pub fn encode(&self, rid: u64) -> Vec<u8> {
        Header {
            op: self.op,
            status: 0,
            flags: self.flags,
            request_id: rid,
            object_id: self.object_id,
            offset: self.offset,
            length: self.length,
        }
        .encode(&self.data)
    }

    /// Put of the fragment of `object` (of `size` bytes at `version`) at byte `offset`.
    pub fn put(object: u64, size: u64, version: u64, offset: u64, fragment: &[u8]) -> Request {
        let mut data = Vec::with_capacity(16 + fragment.len());
        data.extend_from_slice(&size.to_be_bytes());
        data.extend_from_slice(&version.to_be_bytes());
        data.extend_from_slice(fragment);
        Request {
            op: op::PUT,
            flags: 0,
            object_id: object,
            offset,
            length: fragment.len() as u32,
            data,
        }
    }

    /// Get of `len` (≤ [`FRAGMENT`]) bytes at `offset`.
    pub fn get(object: u64, offset: u64, len: u32) -> Request {
        Request {
            op: op::GET,
            flags: 0,
            object_id: object,
            offset,
            length: len,
            data: Vec::new(),
        }
    }

    pub fn stat(object: u64) -> Request {
        Request {
            op: op::STAT,
            flags: 0,
            object_id: object,
            offset: 0,
            length: 0,
            data: Vec::new(),
        }
    }

    /// Delete of `version` (0: any).
    pub fn delete(object: u64, version: u64) -> Request {
        Request {
            op: op::DELETE,
            flags: 0,
            object_id: object,
            offset: 0,
            length: 8,
            data: version.to_be_bytes().to_vec(),
        }
    }

    /// List of at most `max` (clamped to 1..=[`LIST_MAX`]) objects with ids after `after`.
    pub fn list(after: Option<u64>, max: u32) -> Request {
        Request {
            op: op::LIST,
            flags: if after.is_some() { FLAG_AFTER } else { 0 },
            object_id: after.unwrap_or(0),
            offset: 0,
            length: max.clamp(1, LIST_MAX),
            data: Vec::new(),
        }
    }
}

/// Byte ranges `(offset, len)` of the fragments of an object of `size` bytes. A 0-byte object
/// is one fragment `(0, 0)` (so that a put creates it).
pub fn fragments(size: u64) -> Vec<(u64, u32)> {
    if size == 0 {
        return vec![(0, 0)];
    }
    (0..size)
        .step_by(FRAGMENT)
        .map(|off| (off, (size - off).min(FRAGMENT as u64) as u32))
        .collect()
}

/// The data of a get reply: object size, version, the bytes.
pub fn parse_get(data: &[u8]) -> Option<(u64, u64, &[u8])> {
    (data.len() >= 16).then(|| (be64(data, 0), be64(data, 8), &data[16..]))
}

/// What a stat says about one replica's object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stat {
    pub size: u64,
    pub version: u64,
    pub chunks: u32,
    pub complete: bool,
}

pub fn parse_stat(data: &[u8]) -> Option<Stat> {
    (data.len() >= 24).then(|| Stat {
        size: be64(data, 0),
        version: be64(data, 8),
        chunks: be32(data, 16),
        complete: be32(data, 20) & 1 != 0,
    })
}

/// One entry of a list reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListEntry {
    pub id: u64,
    pub size: u64,
    pub version: u64,
}

pub fn parse_list(data: &[u8]) -> Option<Vec<ListEntry>> {
    if data.len() < 4 {
        return None;
    }
    let n = be32(data, 0) as usize;
    if data.len() < 4 + 24 * n {
        return None;
    }
    Some(
        (0..n)
            .map(|i| {
                let at = 4 + 24 * i;
                ListEntry {
                    id: be64(data, at),
                    size: be64(data, at + 8),
                    version: be64(data, at + 16),
                }
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_layout_matches_the_reference_client() {
        // struct.pack("!HBBHHQQQII", 0x4153, 1, 1, 0, 0, 7, 0x1122, 2048, 1024, 0)
        let r = Request::put(0x1122, 5000, 1, 2048, &[0xab; 1024]);
        let b = r.encode(7);
        assert_eq!(&b[..8], &[0x41, 0x53, 1, 1, 0, 0, 0, 0]);
        assert_eq!(&b[8..16], &7u64.to_be_bytes());
        assert_eq!(&b[16..24], &0x1122u64.to_be_bytes());
        assert_eq!(&b[24..32], &2048u64.to_be_bytes());
        assert_eq!(&b[32..36], &1024u32.to_be_bytes());
        assert_eq!(&b[36..40], &[0; 4]);
        assert_eq!(&b[40..48], &5000u64.to_be_bytes());
        assert_eq!(&b[48..56], &1u64.to_be_bytes());
        assert_eq!(b.len(), 40 + 16 + 1024);
        let (h, rest) = Header::decode(&b).unwrap();
        assert_eq!((h.op, h.request_id, h.object_id, h.offset, h.length), (1, 7, 0x1122, 2048, 1024));
        assert_eq!(rest.len(), 16 + 1024);
        assert_eq!(Header::decode(&b[..39]), Err(ParseError::Short(39)));
        let mut bad = b.clone();
        bad[2] = 2;
        assert_eq!(Header::decode(&bad), Err(ParseError::Version(2)));
    }

    #[test]
    fn fragments_cover_the_object() {
        assert_eq!(fragments(0), vec![(0, 0)]);
        assert_eq!(fragments(1), vec![(0, 1)]);
        assert_eq!(fragments(1024), vec![(0, 1024)]);
        assert_eq!(fragments(2049), vec![(0, 1024), (1024, 1024), (2048, 1)]);
        assert_eq!(fragments(1 << 20).len(), 1024);
    }

    #[test]
    fn list_and_delete_requests() {
        let l = Request::list(Some(9), 500);
        assert_eq!((l.flags, l.object_id, l.length), (FLAG_AFTER, 9, LIST_MAX));
        let l = Request::list(None, 10);
        assert_eq!((l.flags, l.object_id, l.length), (0, 0, 10));
        let d = Request::delete(3, 0);
        assert_eq!((d.length, d.data.as_slice()), (8, &[0u8; 8][..]));
        let mut data = 2u32.to_be_bytes().to_vec();
        for (id, s, v) in [(1u64, 2u64, 3u64), (4, 5, 6)] {
            data.extend_from_slice(&id.to_be_bytes());
            data.extend_from_slice(&s.to_be_bytes());
            data.extend_from_slice(&v.to_be_bytes());
        }
        let e = parse_list(&data).unwrap();
        assert_eq!(e[1], ListEntry { id: 4, size: 5, version: 6 });
        assert!(parse_list(&data[..30]).is_none());
    }
}
