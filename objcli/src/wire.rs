//! The storage protocol as the client uses it. Every layout, op, status and constant is
//! `netwire::storage` (the one definition, shared with the appliance's service and steering);
//! this module only builds requests into owned buffers for the socket and reads reply data
//! into owned values.

pub use netwire::storage::{
    fragments, status, ListEntry, Op, PutHead, Repr as Header, StatReply as Stat, CHUNK, FLAG_AFTER, FRAGMENT,
    HEADER_LEN, LIST_MAX, OP_REPLY as REPLY,
};

/// The packet of header `h` followed by `data`.
pub fn encode(h: &Header, data: &[u8]) -> Vec<u8> {
    let mut b = vec![0u8; HEADER_LEN + data.len()];
    h.emit(&mut b).expect("the buffer holds a header");
    b[HEADER_LEN..].copy_from_slice(data);
    b
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
        let h = Header {
            op: self.op,
            status: 0,
            flags: self.flags,
            request_id: rid,
            object_id: self.object_id,
            offset: self.offset,
            length: self.length,
        };
        encode(&h, &self.data)
    }

    fn new(op: Op, object_id: u64) -> Request {
        Request { op: op.0, flags: 0, object_id, offset: 0, length: 0, data: Vec::new() }
    }

    /// Put of the fragment of `object` (of `size` bytes at `version`) at byte `offset`.
    pub fn put(object: u64, size: u64, version: u64, offset: u64, fragment: &[u8]) -> Request {
        let mut data = vec![0u8; PutHead::LEN + fragment.len()];
        PutHead { size, version }.emit(&mut data).expect("room for the head");
        data[PutHead::LEN..].copy_from_slice(fragment);
        Request { offset, length: fragment.len() as u32, data, ..Request::new(Op::PUT_CHUNK, object) }
    }

    /// Get of `len` (≤ [`FRAGMENT`]) bytes at `offset`.
    pub fn get(object: u64, offset: u64, len: u32) -> Request {
        Request { offset, length: len, ..Request::new(Op::GET_CHUNK, object) }
    }

    pub fn stat(object: u64) -> Request {
        Request::new(Op::STAT, object)
    }

    /// Delete of `version` (0: any).
    pub fn delete(object: u64, version: u64) -> Request {
        Request { length: 8, data: version.to_be_bytes().to_vec(), ..Request::new(Op::DELETE, object) }
    }

    /// List of at most `max` (clamped to 1..=[`LIST_MAX`]) objects with ids after `after`.
    pub fn list(after: Option<u64>, max: u32) -> Request {
        Request {
            flags: if after.is_some() { FLAG_AFTER } else { 0 },
            length: max.clamp(1, LIST_MAX as u32),
            ..Request::new(Op::LIST, after.unwrap_or(0))
        }
    }
}

/// The data of a get reply: object size, version, the bytes.
pub fn parse_get(data: &[u8]) -> Option<(u64, u64, &[u8])> {
    PutHead::parse(data).ok().map(|(h, bytes)| (h.size, h.version, bytes))
}

/// The data of a stat reply.
pub fn parse_stat(data: &[u8]) -> Option<Stat> {
    Stat::parse(data).ok()
}

/// The entries of a list reply.
pub fn parse_list(data: &[u8]) -> Option<Vec<ListEntry>> {
    netwire::storage::parse_list(data).ok().map(Iterator::collect)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_carry_their_fields() {
        let b = Request::put(0x1122, 5000, 1, 2048, &[0xab; 1024]).encode(7);
        let (h, rest) = Header::decode(&b).unwrap();
        assert_eq!((h.op, h.request_id, h.object_id, h.offset, h.length), (1, 7, 0x1122, 2048, 1024));
        assert_eq!(parse_get(rest).map(|(s, v, d)| (s, v, d.len())), Some((5000, 1, 1024)));
        let l = Request::list(Some(9), 500);
        assert_eq!((l.flags, l.object_id, l.length), (FLAG_AFTER, 9, LIST_MAX as u32));
        let l = Request::list(None, 10);
        assert_eq!((l.flags, l.object_id, l.length), (0, 0, 10));
        let d = Request::delete(3, 0);
        assert_eq!((d.length, d.data.as_slice()), (8, &[0u8; 8][..]));
    }
}
