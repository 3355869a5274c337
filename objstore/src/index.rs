//! The object index: object id -> size, version and the location and CRC32C of every chunk.
//!
//! Chunks are [`CHUNK_SIZE`] (4 KiB, one block) each; chunk `i` of an object of `size` bytes
//! holds bytes `i*4096 .. min(size, (i+1)*4096)`, zero-padded to the block, and its CRC32C
//! covers the whole padded block. An object's chunks are located independently (so consecutive
//! chunks written in order form contiguous runs on the device, but need not).
//!
//! The index changes only through [`Index::apply`] of journal [`Entry`]s, in journal order, both
//! live (when the record holding the entry is durable) and at mount (replay). `apply` is
//! deterministic, so replay rebuilds exactly the state the live store had.
//!
//! Rules of `apply`:
//! * put, object absent: create it (fails with `ObjectTableFull` / `NoSpace` when the object
//!   count or the reservable data blocks would be exceeded; an object's size reserves
//!   `ceil(size/4096)` blocks at creation);
//! * put, same version: the size must match (`SizeMismatch`); the chunk is installed, the block it
//!   replaces (if any) is freed;
//! * put, newer version: the old version is dropped (all its blocks freed), then as creation;
//! * put, older version: `StaleVersion`;
//! * delete: the object and all its blocks go; deleting an absent object is not an error.
//!
//! Capacity: `max_objects` objects and `reservable` data blocks, fixed at format time. Memory:
//! 16 bytes per chunk of declared size plus a B-tree node share per object.

use std::collections::BTreeMap;

use crate::blk::BLOCK_SIZE;
use crate::layout::{le, CheckpointHeader, ChunkRef, Entry, CKPT_CHUNK, CKPT_HEADER, CKPT_OBJECT};
use crate::{Error, ObjectId, Result};

/// Bytes per chunk: one block.
pub const CHUNK_SIZE: usize = BLOCK_SIZE;

/// Chunks of an object of `size` bytes.
pub fn chunk_count(size: u64) -> u64 {
    size.div_ceil(CHUNK_SIZE as u64)
}

/// Valid bytes in chunk `index` of an object of `size` bytes.
pub fn chunk_len(size: u64, index: u32) -> usize {
    let start = u64::from(index) * CHUNK_SIZE as u64;
    size.saturating_sub(start).min(CHUNK_SIZE as u64) as usize
}

/// Where a chunk lives; `lba == 0` means not written yet (LBA 0 is a superblock, never data).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ChunkMeta {
    pub lba: u64,
    pub crc: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    pub size: u64,
    pub version: u64,
    pub chunks: Vec<ChunkMeta>,
}

/// A run of consecutive chunks stored in consecutive blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    pub first_chunk: u32,
    pub lba: u64,
    pub blocks: u32,
}

impl ObjectMeta {
    pub fn present(&self) -> u64 {
        self.chunks.iter().filter(|c| c.lba != 0).count() as u64
    }

    /// The object's present chunks as extents (diagnostics; the index stores chunks).
    pub fn extents(&self) -> Vec<Extent> {
        let mut out: Vec<Extent> = Vec::new();
        for (i, c) in self.chunks.iter().enumerate().filter(|(_, c)| c.lba != 0) {
            match out.last_mut() {
                Some(e) if e.first_chunk as usize + e.blocks as usize == i && e.lba + u64::from(e.blocks) == c.lba => {
                    e.blocks += 1
                }
                _ => out.push(Extent { first_chunk: i as u32, lba: c.lba, blocks: 1 }),
            }
        }
        out
    }
}

/// What a successful `apply` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    Put,
    Delete { existed: bool },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Index {
    objects: BTreeMap<ObjectId, ObjectMeta>,
    max_objects: u64,
    reservable: u64,
    reserved: u64,
    data: std::ops::Range<u64>,
}

impl Index {
    pub fn new(max_objects: u64, reservable: u64, data: std::ops::Range<u64>) -> Index {
        Index { objects: BTreeMap::new(), max_objects, reservable, reserved: 0, data }
    }

    pub fn get(&self, object: ObjectId) -> Option<&ObjectMeta> {
        self.objects.get(&object)
    }

    pub fn len(&self) -> usize {
        self.objects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    /// Blocks reserved by object sizes.
    pub fn reserved(&self) -> u64 {
        self.reserved
    }

    pub fn max_objects(&self) -> u64 {
        self.max_objects
    }

    /// Objects with id > `after` (all when `None`), in id order.
    pub fn range_after(&self, after: Option<ObjectId>) -> impl Iterator<Item = (&ObjectId, &ObjectMeta)> {
        use std::ops::Bound::{Excluded, Unbounded};
        let lo = after.map_or(Unbounded, Excluded);
        self.objects.range((lo, Unbounded))
    }

    pub fn iter(&self) -> impl Iterator<Item = (&ObjectId, &ObjectMeta)> {
        self.objects.iter()
    }

    /// The largest object size the geometry allows.
    pub fn max_size(&self) -> u64 {
        self.reservable.saturating_mul(CHUNK_SIZE as u64).min(u64::from(u32::MAX) * CHUNK_SIZE as u64)
    }

    /// Would a put of (`version`, `size`) for `object` be refused whatever happens before it?
    /// Used to fail early at submit; `apply` remains the authority.
    pub fn precheck_put(&self, object: ObjectId, version: u64, size: u64) -> Result<()> {
        if size > self.max_size() {
            return Err(Error::TooLarge { size, max: self.max_size() });
        }
        match self.objects.get(&object) {
            Some(o) if version < o.version => {
                Err(Error::StaleVersion { object, current: o.version, requested: version })
            }
            Some(o) if version == o.version && size != o.size => {
                Err(Error::SizeMismatch { object, version, size: o.size, requested: size })
            }
            Some(o) if version == o.version => Ok(()),
            existing => {
                let freed = existing.map_or(0, |o| chunk_count(o.size));
                if existing.is_none() && self.objects.len() as u64 >= self.max_objects {
                    return Err(Error::ObjectTableFull(self.max_objects));
                }
                if self.reserved - freed + chunk_count(size) > self.reservable {
                    return Err(Error::NoSpace);
                }
                Ok(())
            }
        }
    }

    /// Apply one journal entry. Blocks no longer referenced are appended to `freed`. On error
    /// the index is unchanged (and the entry's own block, if any, is the caller's to free).
    pub fn apply(&mut self, e: &Entry, freed: &mut Vec<u64>) -> Result<Applied> {
        match *e {
            Entry::Put { object, version, size, chunk } => {
                if let Some(c) = chunk {
                    if !self.data.contains(&c.lba) {
                        return Err(Error::Corrupt(format!("chunk block {} outside the data area", c.lba)));
                    }
                    if u64::from(c.index) >= chunk_count(size) {
                        return Err(Error::ChunkOutOfRange { chunk: c.index, size, chunks: chunk_count(size) as u32 });
                    }
                }
                self.precheck_put(object, version, size)?;
                let replace = self.objects.get(&object).is_none_or(|o| o.version != version);
                if replace {
                    let n = chunk_count(size);
                    if let Some(old) = self.objects.remove(&object) {
                        self.reserved -= chunk_count(old.size);
                        freed.extend(old.chunks.iter().filter(|c| c.lba != 0).map(|c| c.lba));
                    }
                    self.reserved += n;
                    self.objects
                        .insert(object, ObjectMeta { size, version, chunks: vec![ChunkMeta::default(); n as usize] });
                }
                if let Some(ChunkRef { index, lba, crc }) = chunk {
                    if let Some(o) = self.objects.get_mut(&object) {
                        let slot = &mut o.chunks[index as usize];
                        if slot.lba != 0 {
                            freed.push(slot.lba);
                        }
                        *slot = ChunkMeta { lba, crc };
                    }
                }
                Ok(Applied::Put)
            }
            Entry::Delete { object } => match self.objects.remove(&object) {
                Some(old) => {
                    self.reserved -= chunk_count(old.size);
                    freed.extend(old.chunks.iter().filter(|c| c.lba != 0).map(|c| c.lba));
                    Ok(Applied::Delete { existed: true })
                }
                None => Ok(Applied::Delete { existed: false }),
            },
        }
    }

    /// Bytes the checkpoint of the current index takes (header included).
    pub fn checkpoint_len(&self) -> usize {
        CKPT_HEADER + self.objects.values().map(|o| CKPT_OBJECT + CKPT_CHUNK * o.present() as usize).sum::<usize>()
    }

    /// Serialise the index as a checkpoint covering journal records up to `seq`, into `out`
    /// (cleared first; its capacity is reused).
    pub fn encode_checkpoint(&self, seq: u64, uuid: &[u8; 16], out: &mut Vec<u8>) {
        out.clear();
        out.resize(self.checkpoint_len(), 0);
        let mut off = CKPT_HEADER;
        for (&id, o) in &self.objects {
            le::put_u128(out, off, id);
            le::put_u64(out, off + 16, o.size);
            le::put_u64(out, off + 24, o.version);
            le::put_u32(out, off + 32, o.present() as u32);
            off += CKPT_OBJECT;
            for (i, c) in o.chunks.iter().enumerate().filter(|(_, c)| c.lba != 0) {
                le::put_u32(out, off, i as u32);
                le::put_u64(out, off + 4, c.lba);
                le::put_u32(out, off + 12, c.crc);
                off += CKPT_CHUNK;
            }
        }
        let header = CheckpointHeader {
            seq,
            uuid: *uuid,
            objects: self.objects.len() as u64,
            payload_len: (out.len() - CKPT_HEADER) as u64,
            payload_crc: crc32c::crc32c(&out[CKPT_HEADER..]),
        };
        header.encode(&mut out[..CKPT_HEADER]);
    }

    /// Rebuild an index from a checkpoint payload (header already decoded and checked).
    pub fn decode_checkpoint(
        h: &CheckpointHeader,
        payload: &[u8],
        max_objects: u64,
        reservable: u64,
        data: std::ops::Range<u64>,
    ) -> Result<Index> {
        let bad = |why: &str| Error::Corrupt(format!("checkpoint: {why}"));
        if payload.len() as u64 != h.payload_len || crc32c::crc32c(payload) != h.payload_crc {
            return Err(bad("payload checksum"));
        }
        let mut idx = Index::new(max_objects, reservable, data);
        let mut off = 0;
        let mut last = None;
        for _ in 0..h.objects {
            if off + CKPT_OBJECT > payload.len() {
                return Err(bad("truncated"));
            }
            let id = le::get_u128(payload, off);
            if last.is_some_and(|l| l >= id) {
                return Err(bad("objects out of order"));
            }
            last = Some(id);
            let size = le::get_u64(payload, off + 16);
            let version = le::get_u64(payload, off + 24);
            let present = le::get_u32(payload, off + 32) as usize;
            off += CKPT_OBJECT;
            let n = chunk_count(size);
            if idx.objects.len() as u64 >= max_objects || idx.reserved + n > reservable {
                return Err(bad("more objects or blocks than the geometry allows"));
            }
            let mut chunks = vec![ChunkMeta::default(); n as usize];
            if off + present * CKPT_CHUNK > payload.len() {
                return Err(bad("truncated"));
            }
            for _ in 0..present {
                let i = le::get_u32(payload, off) as usize;
                let lba = le::get_u64(payload, off + 4);
                let crc = le::get_u32(payload, off + 12);
                off += CKPT_CHUNK;
                if i >= chunks.len() || !idx.data.contains(&lba) || chunks[i].lba != 0 {
                    return Err(bad("bad chunk entry"));
                }
                chunks[i] = ChunkMeta { lba, crc };
            }
            idx.reserved += n;
            idx.objects.insert(id, ObjectMeta { size, version, chunks });
        }
        if off != payload.len() {
            return Err(bad("trailing bytes"));
        }
        Ok(idx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn put(object: u128, version: u64, size: u64, chunk: Option<(u32, u64)>) -> Entry {
        Entry::Put { object, version, size, chunk: chunk.map(|(index, lba)| ChunkRef { index, lba, crc: lba as u32 }) }
    }

    #[test]
    fn apply_rules() {
        let mut idx = Index::new(2, 10, 100..200);
        let mut freed = Vec::new();
        assert_eq!(idx.apply(&put(1, 1, 8192, Some((0, 100))), &mut freed), Ok(Applied::Put));
        assert_eq!(idx.reserved(), 2);
        // Same version, same chunk again: the old block is freed.
        idx.apply(&put(1, 1, 8192, Some((0, 101))), &mut freed).unwrap();
        assert_eq!(freed, vec![100]);
        assert_eq!(
            idx.apply(&put(1, 1, 4096, None), &mut freed),
            Err(Error::SizeMismatch { object: 1, version: 1, size: 8192, requested: 4096 })
        );
        assert!(matches!(idx.apply(&put(1, 1, 8192, Some((2, 102))), &mut freed), Err(Error::ChunkOutOfRange { .. })));
        // Newer version: everything of the old one goes.
        freed.clear();
        idx.apply(&put(1, 2, 4096, Some((0, 103))), &mut freed).unwrap();
        assert_eq!(freed, vec![101]);
        assert_eq!(idx.reserved(), 1);
        assert_eq!(
            idx.apply(&put(1, 1, 4096, None), &mut freed),
            Err(Error::StaleVersion { object: 1, current: 2, requested: 1 })
        );
        // Capacity.
        assert_eq!(idx.apply(&put(2, 1, 10 * 4096, None), &mut freed), Err(Error::NoSpace));
        idx.apply(&put(2, 1, 9 * 4096, None), &mut freed).unwrap();
        assert_eq!(idx.apply(&put(3, 1, 0, None), &mut freed), Err(Error::ObjectTableFull(2)));
        // Delete, twice.
        freed.clear();
        assert_eq!(idx.apply(&Entry::Delete { object: 1 }, &mut freed), Ok(Applied::Delete { existed: true }));
        assert_eq!(freed, vec![103]);
        assert_eq!(idx.apply(&Entry::Delete { object: 1 }, &mut freed), Ok(Applied::Delete { existed: false }));
        assert_eq!(idx.reserved(), 9);
        assert!(matches!(idx.apply(&put(5, 1, 4096, Some((0, 300))), &mut freed), Err(Error::Corrupt(_))));
    }

    #[test]
    fn extents_of_runs() {
        let c = |lba| ChunkMeta { lba, crc: 0 };
        let o = ObjectMeta { size: 6 * 4096, version: 1, chunks: vec![c(10), c(11), c(12), c(0), c(14), c(20)] };
        assert_eq!(
            o.extents(),
            vec![
                Extent { first_chunk: 0, lba: 10, blocks: 3 },
                Extent { first_chunk: 4, lba: 14, blocks: 1 },
                Extent { first_chunk: 5, lba: 20, blocks: 1 },
            ]
        );
    }

    #[test]
    fn chunk_geometry() {
        assert_eq!(chunk_count(0), 0);
        assert_eq!(chunk_count(1), 1);
        assert_eq!(chunk_count(4096), 1);
        assert_eq!(chunk_count(4097), 2);
        assert_eq!(chunk_len(4097, 0), 4096);
        assert_eq!(chunk_len(4097, 1), 1);
        assert_eq!(chunk_len(4097, 2), 0);
    }

    fn entries() -> impl Strategy<Value = Vec<Entry>> {
        proptest::collection::vec(
            prop_oneof![
                3 => (0u128..6, 1u64..4, 0u64..5 * 4096, proptest::option::of((0u32..5, 1000u64..1100)))
                    .prop_map(|(o, v, s, c)| put(o, v, s, c)),
                1 => (0u128..6).prop_map(|object| Entry::Delete { object }),
            ],
            0..80,
        )
    }

    proptest! {
        /// Any sequence of entries: the checkpoint of the result decodes to the same index, and
        /// the blocks referenced plus the blocks freed account for every block ever installed.
        #[test]
        fn checkpoint_round_trip_and_block_accounting(es in entries(), uuid in any::<[u8; 16]>()) {
            let mut idx = Index::new(4, 12, 1000..1100);
            let mut freed = Vec::new();
            let mut installed = Vec::new();
            for (n, e) in es.iter().enumerate() {
                // Give each chunk a fresh block, like the store does.
                let e = match *e {
                    Entry::Put { object, version, size, chunk: Some(c) } => Entry::Put { object, version, size, chunk: Some(ChunkRef { lba: 1000 + n as u64, ..c }) },
                    other => other,
                };
                let before = idx.clone();
                match idx.apply(&e, &mut freed) {
                    Ok(_) => if let Entry::Put { chunk: Some(c), .. } = e { installed.push(c.lba) },
                    Err(_) => prop_assert_eq!(&idx, &before),
                }
                prop_assert!(idx.reserved() <= 12);
                prop_assert!(idx.len() <= 4);
            }
            let mut live: Vec<u64> = idx.iter().flat_map(|(_, o)| o.chunks.iter().filter(|c| c.lba != 0).map(|c| c.lba)).collect();
            live.extend(&freed);
            live.sort_unstable();
            installed.sort_unstable();
            prop_assert_eq!(live, installed);

            let mut buf = Vec::new();
            idx.encode_checkpoint(77, &uuid, &mut buf);
            prop_assert_eq!(buf.len(), idx.checkpoint_len());
            let h = CheckpointHeader::decode(&buf).unwrap();
            prop_assert_eq!(h.seq, 77);
            let back = Index::decode_checkpoint(&h, &buf[CKPT_HEADER..], 4, 12, 1000..1100).unwrap();
            prop_assert_eq!(back, idx);
        }

        #[test]
        fn corrupt_checkpoint_is_refused(es in entries(), byte in any::<usize>(), bit in 0u8..8) {
            let mut idx = Index::new(4, 12, 1000..1100);
            let mut freed = Vec::new();
            for e in &es { let _ = idx.apply(e, &mut freed); }
            let mut buf = Vec::new();
            idx.encode_checkpoint(1, &[0; 16], &mut buf);
            let i = byte % buf.len();
            buf[i] ^= 1 << bit;
            let r = CheckpointHeader::decode(&buf)
                .and_then(|h| Index::decode_checkpoint(&h, &buf[CKPT_HEADER..], 4, 12, 1000..1100));
            prop_assert!(r.is_err());
        }
    }
}
