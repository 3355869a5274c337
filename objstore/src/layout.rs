//! The on-device format: geometry, superblock, journal records and the checkpoint header.
//! Pure encoding and decoding, no I/O. All integers are little-endian; every structure carries a
//! CRC32C (Castagnoli) and the filesystem UUID so nothing from a previous format is mistaken for
//! current data. `docs/objstore.md` has the same tables.
//!
//! ```text
//! LBA 0, 1                 superblock copies A and B (copy = generation % 2)
//! LBA 2 ..                 journal ring, J blocks, one record per block; record of sequence s
//!                          lives at ring slot (s - 1) % J
//! then                     checkpoint slot 0, C blocks
//! then                     checkpoint slot 1, C blocks
//! then .. end              data blocks, one 4 KiB chunk each
//! ```
//!
//! Superblock (one block, 140 bytes used, rest zero):
//!
//! | off | size | field |
//! |----:|-----:|-------|
//! | 0 | 8 | magic `APLOBJS1` |
//! | 8 | 4 | format version (1) |
//! | 12 | 4 | block size (4096) |
//! | 16 | 8 | total blocks |
//! | 24 | 16 | uuid |
//! | 40 | 8 | generation (bumped by every checkpoint) |
//! | 48 | 8 | max objects |
//! | 56 | 8 | journal start LBA |
//! | 64 | 8 | journal blocks J |
//! | 72 | 8 | checkpoint slot 0 LBA |
//! | 80 | 8 | checkpoint slot 1 LBA |
//! | 88 | 8 | checkpoint slot blocks C |
//! | 96 | 8 | data start LBA |
//! | 104 | 8 | data blocks |
//! | 112 | 8 | spare data blocks (never reserved by object sizes; room for out-of-place updates) |
//! | 120 | 4 | active checkpoint slot (0 or 1) |
//! | 124 | 4 | zero |
//! | 128 | 8 | checkpoint sequence: last journal record folded into the active checkpoint |
//! | 136 | 4 | CRC32C of bytes 0..136 |
//!
//! Journal record (one block):
//!
//! | off | size | field |
//! |----:|-----:|-------|
//! | 0 | 4 | magic `0x4E524A4F` ("OJRN") |
//! | 4 | 2 | record format version (1) |
//! | 6 | 2 | entry count |
//! | 8 | 8 | sequence number (first record is 1) |
//! | 16 | 16 | uuid |
//! | 32 | 4 | payload length in bytes |
//! | 36 | 4 | CRC32C of bytes 0..36 then the payload |
//! | 40 | .. | entries |
//!
//! Entries: `1` put = tag u8, object u128, version u64, size u64, chunk u32, lba u64, crc u32
//! (49 bytes; lba 0 means "no chunk", which creates or re-versions the object only); `2` delete =
//! tag u8, object u128 (17 bytes). At most [`MAX_RECORD_PUTS`] puts per record.
//!
//! Checkpoint header (first 64 bytes of a slot; the payload follows at byte 64):
//!
//! | off | size | field |
//! |----:|-----:|-------|
//! | 0 | 4 | magic `0x504B434F` ("OCKP") |
//! | 4 | 4 | format version (1) |
//! | 8 | 8 | sequence of the last journal record included |
//! | 16 | 16 | uuid |
//! | 32 | 8 | object count |
//! | 40 | 8 | payload length in bytes |
//! | 48 | 4 | CRC32C of the payload |
//! | 52 | 4 | CRC32C of bytes 0..52 |
//! | 56 | 8 | zero |
//!
//! Payload: per object in id order, id u128, size u64, version u64, present-chunk count u32
//! (36 bytes), then per present chunk index u32, lba u64, crc u32 (16 bytes).

use crate::blk::BLOCK_SIZE;
use crate::{Error, ObjectId, Result};

pub const SB_MAGIC: [u8; 8] = *b"APLOBJS1";
pub const FORMAT_VERSION: u32 = 1;
pub const JOURNAL_MAGIC: u32 = 0x4E52_4A4F;
pub const CKPT_MAGIC: u32 = 0x504B_434F;
pub const RECORD_HEADER: usize = 40;
pub const PUT_ENTRY: usize = 49;
pub const DELETE_ENTRY: usize = 17;
/// Puts that always fit in one record.
pub const MAX_RECORD_PUTS: usize = (BLOCK_SIZE - RECORD_HEADER) / PUT_ENTRY;
pub const CKPT_HEADER: usize = 64;
pub const CKPT_OBJECT: usize = 36;
pub const CKPT_CHUNK: usize = 16;

/// Where everything lives, fixed at format time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    pub total_blocks: u64,
    pub max_objects: u64,
    pub journal_start: u64,
    pub journal_blocks: u64,
    pub ckpt_start: [u64; 2],
    pub ckpt_blocks: u64,
    pub data_start: u64,
    pub data_blocks: u64,
    pub spare_blocks: u64,
}

impl Geometry {
    /// Lay out a device of `total_blocks` for `max_objects` objects with a journal of
    /// `journal_blocks` records (0 = default: 1/64 of the device, between 16 and 4096).
    pub fn compute(total_blocks: u64, max_objects: u64, journal_blocks: u64) -> Result<Geometry> {
        let journal_blocks = if journal_blocks == 0 { (total_blocks / 64).clamp(16, 4096) } else { journal_blocks };
        let bad = |why: String| Error::Config(format!("device of {total_blocks} blocks: {why}"));
        if max_objects == 0 {
            return Err(bad("max_objects must be at least 1".into()));
        }
        let journal_start = 2;
        let after_journal = journal_start + journal_blocks;
        if total_blocks <= after_journal + 3 {
            return Err(bad(format!("too small for a {journal_blocks}-block journal")));
        }
        // Size the checkpoint slots for the largest data area possible; slightly generous.
        let data_bound = total_blocks - after_journal;
        let ckpt_bytes = max_objects
            .checked_mul(CKPT_OBJECT as u64)
            .and_then(|o| o.checked_add(data_bound.checked_mul(CKPT_CHUNK as u64)?))
            .and_then(|b| b.checked_add(CKPT_HEADER as u64))
            .ok_or_else(|| bad("max_objects too large".into()))?;
        let ckpt_blocks = ckpt_bytes.div_ceil(BLOCK_SIZE as u64);
        let data_start = after_journal + 2 * ckpt_blocks;
        if data_start + 2 > total_blocks {
            return Err(bad(format!("no room for data after metadata ({data_start} blocks)")));
        }
        let data_blocks = total_blocks - data_start;
        let spare_blocks = (data_blocks / 8).clamp(1, 256);
        Ok(Geometry {
            total_blocks,
            max_objects,
            journal_start,
            journal_blocks,
            ckpt_start: [after_journal, after_journal + ckpt_blocks],
            ckpt_blocks,
            data_start,
            data_blocks,
            spare_blocks,
        })
    }

    /// Data blocks that object sizes may reserve (the rest is spare for out-of-place updates).
    pub fn reservable(&self) -> u64 {
        self.data_blocks - self.spare_blocks
    }

    /// LBA of the journal slot holding record `seq` (seq >= 1).
    pub fn journal_lba(&self, seq: u64) -> u64 {
        self.journal_start + (seq - 1) % self.journal_blocks
    }

    /// Whether the regions are consistent with each other and the device.
    pub fn check(&self) -> Result<()> {
        let ok = self.journal_start == 2
            && self.journal_blocks >= 2
            && self.ckpt_start[0] == self.journal_start + self.journal_blocks
            && self.ckpt_start[1] == self.ckpt_start[0] + self.ckpt_blocks
            && self.data_start == self.ckpt_start[1] + self.ckpt_blocks
            && self.data_start.checked_add(self.data_blocks) == Some(self.total_blocks)
            && self.spare_blocks < self.data_blocks
            && self.max_objects > 0
            && (self.ckpt_blocks as u128) * BLOCK_SIZE as u128
                >= CKPT_HEADER as u128
                    + self.max_objects as u128 * CKPT_OBJECT as u128
                    + self.data_blocks as u128 * CKPT_CHUNK as u128;
        if ok {
            Ok(())
        } else {
            Err(Error::Corrupt(format!("inconsistent geometry {self:?}")))
        }
    }
}

/// The superblock; two copies, the valid one with the highest generation wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Superblock {
    pub geometry: Geometry,
    pub uuid: [u8; 16],
    pub generation: u64,
    pub ckpt_slot: u32,
    pub ckpt_seq: u64,
}

pub(crate) fn put_u16(b: &mut [u8], off: usize, v: u16) {
    b[off..off + 2].copy_from_slice(&v.to_le_bytes());
}
pub(crate) fn put_u32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}
pub(crate) fn put_u64(b: &mut [u8], off: usize, v: u64) {
    b[off..off + 8].copy_from_slice(&v.to_le_bytes());
}
pub(crate) fn put_u128(b: &mut [u8], off: usize, v: u128) {
    b[off..off + 16].copy_from_slice(&v.to_le_bytes());
}
pub(crate) fn get_u16(b: &[u8], off: usize) -> u16 {
    let mut a = [0; 2];
    a.copy_from_slice(&b[off..off + 2]);
    u16::from_le_bytes(a)
}
pub(crate) fn get_u32(b: &[u8], off: usize) -> u32 {
    let mut a = [0; 4];
    a.copy_from_slice(&b[off..off + 4]);
    u32::from_le_bytes(a)
}
pub(crate) fn get_u64(b: &[u8], off: usize) -> u64 {
    let mut a = [0; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(a)
}
pub(crate) fn get_u128(b: &[u8], off: usize) -> u128 {
    let mut a = [0; 16];
    a.copy_from_slice(&b[off..off + 16]);
    u128::from_le_bytes(a)
}

impl Superblock {
    /// Which copy (LBA 0 or 1) this generation is written to.
    pub fn copy_lba(&self) -> u64 {
        self.generation % 2
    }

    /// Encode into the first block of `b` (which must be at least one block); zeroes the rest.
    pub fn encode(&self, b: &mut [u8]) {
        let b = &mut b[..BLOCK_SIZE];
        b.fill(0);
        let g = &self.geometry;
        b[0..8].copy_from_slice(&SB_MAGIC);
        put_u32(b, 8, FORMAT_VERSION);
        put_u32(b, 12, BLOCK_SIZE as u32);
        put_u64(b, 16, g.total_blocks);
        b[24..40].copy_from_slice(&self.uuid);
        put_u64(b, 40, self.generation);
        put_u64(b, 48, g.max_objects);
        put_u64(b, 56, g.journal_start);
        put_u64(b, 64, g.journal_blocks);
        put_u64(b, 72, g.ckpt_start[0]);
        put_u64(b, 80, g.ckpt_start[1]);
        put_u64(b, 88, g.ckpt_blocks);
        put_u64(b, 96, g.data_start);
        put_u64(b, 104, g.data_blocks);
        put_u64(b, 112, g.spare_blocks);
        put_u32(b, 120, self.ckpt_slot);
        put_u64(b, 128, self.ckpt_seq);
        let crc = crc32c::crc32c(&b[..136]);
        put_u32(b, 136, crc);
    }

    pub fn decode(b: &[u8]) -> Result<Superblock> {
        if b.len() < BLOCK_SIZE || b[0..8] != SB_MAGIC {
            return Err(Error::Corrupt("no superblock magic".into()));
        }
        if crc32c::crc32c(&b[..136]) != get_u32(b, 136) {
            return Err(Error::Corrupt("superblock checksum".into()));
        }
        if get_u32(b, 8) != FORMAT_VERSION || get_u32(b, 12) != BLOCK_SIZE as u32 {
            return Err(Error::Corrupt("unsupported format version or block size".into()));
        }
        let mut uuid = [0; 16];
        uuid.copy_from_slice(&b[24..40]);
        let geometry = Geometry {
            total_blocks: get_u64(b, 16),
            max_objects: get_u64(b, 48),
            journal_start: get_u64(b, 56),
            journal_blocks: get_u64(b, 64),
            ckpt_start: [get_u64(b, 72), get_u64(b, 80)],
            ckpt_blocks: get_u64(b, 88),
            data_start: get_u64(b, 96),
            data_blocks: get_u64(b, 104),
            spare_blocks: get_u64(b, 112),
        };
        geometry.check()?;
        let ckpt_slot = get_u32(b, 120);
        if ckpt_slot > 1 {
            return Err(Error::Corrupt("checkpoint slot".into()));
        }
        Ok(Superblock { geometry, uuid, generation: get_u64(b, 40), ckpt_slot, ckpt_seq: get_u64(b, 128) })
    }
}

/// A chunk written by a put: where and with which CRC32C (of the whole 4 KiB block).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkRef {
    pub index: u32,
    pub lba: u64,
    pub crc: u32,
}

/// One journal entry: the unit the index applies, live and at replay, in the same order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    /// Create, re-version or extend an object, and (with `chunk`) point one chunk at a block.
    Put {
        object: ObjectId,
        version: u64,
        size: u64,
        chunk: Option<ChunkRef>,
    },
    Delete {
        object: ObjectId,
    },
}

impl Entry {
    pub fn encoded_len(&self) -> usize {
        match self {
            Entry::Put { .. } => PUT_ENTRY,
            Entry::Delete { .. } => DELETE_ENTRY,
        }
    }
}

/// Encode a journal record into the first block of `b`. The caller keeps the payload within one
/// block (`entries` of total encoded length <= `BLOCK_SIZE - RECORD_HEADER`).
pub fn encode_record(b: &mut [u8], seq: u64, uuid: &[u8; 16], entries: &[Entry]) -> Result<()> {
    let b = &mut b[..BLOCK_SIZE];
    let payload: usize = entries.iter().map(Entry::encoded_len).sum();
    if payload > BLOCK_SIZE - RECORD_HEADER || entries.len() > u16::MAX as usize {
        return Err(Error::Config(format!("journal record of {payload} bytes does not fit a block")));
    }
    b.fill(0);
    put_u32(b, 0, JOURNAL_MAGIC);
    put_u16(b, 4, 1);
    put_u16(b, 6, entries.len() as u16);
    put_u64(b, 8, seq);
    b[16..32].copy_from_slice(uuid);
    put_u32(b, 32, payload as u32);
    let mut off = RECORD_HEADER;
    for e in entries {
        match *e {
            Entry::Put { object, version, size, chunk } => {
                b[off] = 1;
                put_u128(b, off + 1, object);
                put_u64(b, off + 17, version);
                put_u64(b, off + 25, size);
                let c = chunk.unwrap_or(ChunkRef { index: 0, lba: 0, crc: 0 });
                put_u32(b, off + 33, c.index);
                put_u64(b, off + 37, c.lba);
                put_u32(b, off + 45, c.crc);
            }
            Entry::Delete { object } => {
                b[off] = 2;
                put_u128(b, off + 1, object);
            }
        }
        off += e.encoded_len();
    }
    let crc = record_crc(b, payload);
    put_u32(b, 36, crc);
    Ok(())
}

fn record_crc(b: &[u8], payload: usize) -> u32 {
    let c = crc32c::crc32c(&b[..36]);
    crc32c::crc32c_append(c, &b[RECORD_HEADER..RECORD_HEADER + payload])
}

/// A decoded record header plus its entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub seq: u64,
    pub entries: Vec<Entry>,
}

/// Decode the record in block `b`, or `None` when the block does not hold a valid record of
/// this filesystem (wrong magic or uuid, bad checksum or structure): the end of the journal.
pub fn decode_record(b: &[u8], uuid: &[u8; 16]) -> Option<Record> {
    if b.len() < BLOCK_SIZE || get_u32(b, 0) != JOURNAL_MAGIC || get_u16(b, 4) != 1 || b[16..32] != uuid[..] {
        return None;
    }
    let payload = get_u32(b, 32) as usize;
    if payload > BLOCK_SIZE - RECORD_HEADER || record_crc(b, payload) != get_u32(b, 36) {
        return None;
    }
    let count = get_u16(b, 6) as usize;
    let mut entries = Vec::with_capacity(count);
    let mut off = RECORD_HEADER;
    let end = RECORD_HEADER + payload;
    for _ in 0..count {
        let e = match b.get(off)? {
            1 if off + PUT_ENTRY <= end => {
                let lba = get_u64(b, off + 37);
                Entry::Put {
                    object: get_u128(b, off + 1),
                    version: get_u64(b, off + 17),
                    size: get_u64(b, off + 25),
                    chunk: (lba != 0).then(|| ChunkRef { index: get_u32(b, off + 33), lba, crc: get_u32(b, off + 45) }),
                }
            }
            2 if off + DELETE_ENTRY <= end => Entry::Delete { object: get_u128(b, off + 1) },
            _ => return None,
        };
        off += e.encoded_len();
        entries.push(e);
    }
    (off == end).then_some(Record { seq: get_u64(b, 8), entries })
}

/// The checkpoint header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointHeader {
    pub seq: u64,
    pub uuid: [u8; 16],
    pub objects: u64,
    pub payload_len: u64,
    pub payload_crc: u32,
}

impl CheckpointHeader {
    pub fn encode(&self, b: &mut [u8]) {
        let b = &mut b[..CKPT_HEADER];
        b.fill(0);
        put_u32(b, 0, CKPT_MAGIC);
        put_u32(b, 4, 1);
        put_u64(b, 8, self.seq);
        b[16..32].copy_from_slice(&self.uuid);
        put_u64(b, 32, self.objects);
        put_u64(b, 40, self.payload_len);
        put_u32(b, 48, self.payload_crc);
        let crc = crc32c::crc32c(&b[..52]);
        put_u32(b, 52, crc);
    }

    pub fn decode(b: &[u8]) -> Result<CheckpointHeader> {
        if b.len() < CKPT_HEADER || get_u32(b, 0) != CKPT_MAGIC || get_u32(b, 4) != 1 {
            return Err(Error::Corrupt("no checkpoint magic".into()));
        }
        if crc32c::crc32c(&b[..52]) != get_u32(b, 52) || b[56..CKPT_HEADER].iter().any(|&x| x != 0) {
            return Err(Error::Corrupt("checkpoint header checksum".into()));
        }
        let mut uuid = [0; 16];
        uuid.copy_from_slice(&b[16..32]);
        Ok(CheckpointHeader {
            seq: get_u64(b, 8),
            uuid,
            objects: get_u64(b, 32),
            payload_len: get_u64(b, 40),
            payload_crc: get_u32(b, 48),
        })
    }
}

/// Little-endian field access shared with the checkpoint payload codec in `index`.
pub(crate) mod le {
    pub(crate) use super::{get_u128, get_u32, get_u64, put_u128, put_u32, put_u64};
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sb(total: u64, objs: u64) -> Superblock {
        Superblock {
            geometry: Geometry::compute(total, objs, 0).unwrap(),
            uuid: [7; 16],
            generation: 3,
            ckpt_slot: 1,
            ckpt_seq: 99,
        }
    }

    #[test]
    fn geometry_regions_are_disjoint_and_cover_the_device() {
        for total in [64u64, 1000, 262_144, 1 << 24] {
            let g = Geometry::compute(total, 1000.min(total), 0).unwrap();
            g.check().unwrap();
            assert!(g.data_blocks > 0);
            assert_eq!(g.journal_lba(1), g.journal_start);
            assert_eq!(g.journal_lba(g.journal_blocks + 1), g.journal_start);
        }
        assert!(Geometry::compute(10, 1, 16).is_err());
        assert!(Geometry::compute(1000, 0, 0).is_err());
    }

    #[test]
    fn superblock_rejects_any_flipped_bit() {
        let s = sb(10_000, 100);
        let mut b = vec![0u8; BLOCK_SIZE];
        s.encode(&mut b);
        assert_eq!(Superblock::decode(&b).unwrap(), s);
        for i in 0..140 * 8 {
            let mut c = b.clone();
            c[i / 8] ^= 1 << (i % 8);
            assert!(Superblock::decode(&c).is_err(), "bit {i}");
        }
    }

    #[test]
    fn record_capacity() {
        let puts =
            vec![
                Entry::Put { object: 1, version: 1, size: 1, chunk: Some(ChunkRef { index: 0, lba: 9, crc: 1 }) };
                MAX_RECORD_PUTS
            ];
        let mut b = vec![0u8; BLOCK_SIZE];
        encode_record(&mut b, 1, &[0; 16], &puts).unwrap();
        let mut more = puts.clone();
        more.push(puts[0]);
        assert!(encode_record(&mut b, 1, &[0; 16], &more).is_err());
    }

    fn entry() -> impl Strategy<Value = Entry> {
        prop_oneof![
            (any::<u128>(), any::<u64>(), any::<u64>(), proptest::option::of((any::<u32>(), 1u64.., any::<u32>())))
                .prop_map(|(object, version, size, c)| Entry::Put {
                    object,
                    version,
                    size,
                    chunk: c.map(|(index, lba, crc)| ChunkRef { index, lba, crc }),
                }),
            any::<u128>().prop_map(|object| Entry::Delete { object }),
        ]
    }

    proptest! {
        #[test]
        fn record_round_trip(seq in 1u64.., uuid in any::<[u8; 16]>(), entries in proptest::collection::vec(entry(), 0..MAX_RECORD_PUTS)) {
            let mut b = vec![0xEEu8; BLOCK_SIZE];
            encode_record(&mut b, seq, &uuid, &entries).unwrap();
            let r = decode_record(&b, &uuid).unwrap();
            prop_assert_eq!(r.seq, seq);
            prop_assert_eq!(&r.entries, &entries);
            // Another filesystem's uuid: not a record of ours.
            let mut other = uuid;
            other[0] ^= 1;
            prop_assert!(decode_record(&b, &other).is_none());
        }

        #[test]
        fn record_corruption_is_detected(entries in proptest::collection::vec(entry(), 1..20), byte in 0usize..BLOCK_SIZE, bit in 0u8..8) {
            let mut b = vec![0u8; BLOCK_SIZE];
            encode_record(&mut b, 5, &[1; 16], &entries).unwrap();
            let payload: usize = entries.iter().map(Entry::encoded_len).sum();
            b[byte] ^= 1 << bit;
            let used = byte < RECORD_HEADER + payload;
            // A flip in the used part is always detected; past it the record is unchanged.
            match decode_record(&b, &[1; 16]) {
                None => prop_assert!(used),
                Some(r) => { prop_assert!(!used); prop_assert_eq!(r.entries, entries); }
            }
        }

        #[test]
        fn random_blocks_are_not_records(b in proptest::collection::vec(any::<u8>(), BLOCK_SIZE)) {
            prop_assert!(decode_record(&b, &[0; 16]).is_none());
        }

        #[test]
        fn superblock_round_trip(total in 64u64..(1 << 40), objs in 1u64..100_000, gen in any::<u64>(), slot in 0u32..2, seq in any::<u64>(), uuid in any::<[u8; 16]>()) {
            prop_assume!(Geometry::compute(total, objs, 0).is_ok());
            let s = Superblock { geometry: Geometry::compute(total, objs, 0).unwrap(), uuid, generation: gen, ckpt_slot: slot, ckpt_seq: seq };
            let mut b = vec![0u8; BLOCK_SIZE];
            s.encode(&mut b);
            prop_assert_eq!(Superblock::decode(&b).unwrap(), s);
        }

        #[test]
        fn checkpoint_header_round_trip(seq in any::<u64>(), uuid in any::<[u8; 16]>(), objects in any::<u64>(), len in any::<u64>(), crc in any::<u32>()) {
            let h = CheckpointHeader { seq, uuid, objects, payload_len: len, payload_crc: crc };
            let mut b = vec![0u8; CKPT_HEADER];
            h.encode(&mut b);
            prop_assert_eq!(CheckpointHeader::decode(&b).unwrap(), h);
        }
    }
}
