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
//! Accessors panic only on a view made with `new_unchecked` over fewer than
//! `HEADER_LEN` bytes.

use std::net::Ipv6Addr;

use super::WireError;

pub const MAGIC: u16 = 0x4153;
pub const VERSION: u8 = 1;
pub const HEADER_LEN: usize = 40;
/// Bit set in the op of every reply.
pub const OP_REPLY: u8 = 0x80;

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
}

/// Reply status codes.
pub mod status {
    pub const OK: u16 = 0;
    pub const NOT_FOUND: u16 = 1;
    pub const BAD_REQUEST: u16 = 2;
    pub const UNSUPPORTED: u16 = 3;
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn header_round_trip_and_checks() {
        let r = Repr { op: 0x10, status: 0, flags: 3, request_id: 0x1122334455667788, object_id: 42, offset: 4096, length: 0 };
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
        }
    }
}
