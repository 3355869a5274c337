//! The object store: a run-to-completion state machine over one queue pair.
//!
//! [`Store::submit`] takes a [`Request`] and a caller tag and never blocks; [`Store::poll`] moves
//! everything forward (reaps device completions, verifies checksums, commits journal records,
//! writes checkpoints) and hands out [`StoreCompletion`]s. A `Store` belongs to one core; for more
//! cores, one store per device partition (the future storage service shards objects by id).
//! [`BlockingStore`] wraps it with blocking calls for tests and tools.
//!
//! Life of a put of chunk `i`:
//! 1. `submit`: validate against the index (fail fast), take a request slot, a DMA buffer and a
//!    free data block, copy the bytes (zero-padded to 4 KiB), compute the block's CRC32C, submit
//!    the write. The old block of that chunk, if any, is untouched (never overwrite in place).
//! 2. data write complete -> the put waits in the commit queue.
//! 3. group commit (one at a time): **flush** (the data blocks of the group are now durable) ->
//!    **write** one journal record naming every entry of the group -> **flush** (the record is
//!    durable) -> apply the entries to the index in record order -> acknowledge each request.
//!    Blocks the entries made unreachable are released only now, and a block that an in-flight
//!    get is reading is pinned until that read completes.
//!
//! Deletes take the same path without the data write. Gets read the block named by the index
//! at submit time and verify its CRC32C before answering; a mismatch answers
//! [`Error::Checksum`]. Stat and list answer from the index at the next poll.
//!
//! Checkpoints: when the records since the last checkpoint reach half the journal ring, commits
//! pause (data writes and reads go on), the index is serialised into the inactive checkpoint
//! slot, flushed, then the superblock copy for the next generation is written naming that slot
//! and the last record it covers, and flushed. Only then may the journal slots before it be
//! reused. A crash anywhere in between leaves the previous superblock, checkpoint and journal
//! intact.
//!
//! A device error on the journal or checkpoint path makes the store fail every later request
//! (what is durable is then unknown until the next mount replays it); a data I/O error only
//! fails its request.
//!
//! Allocation: the data path (put, get) allocates nothing: request slots, DMA buffers,
//! completion vectors and the commit group are sized at open. The index's B-tree and chunk
//! vectors change on create/delete, `list` returns a vector, and checkpoints serialise into a
//! reused buffer: heap use, bounded by the capacities fixed at format time.

use std::collections::VecDeque;
use std::hash::{BuildHasher, Hasher};

use crate::alloc::Allocator;
use crate::blk::{BlockDevice, DmaBuf, DmaPool, Io, IoCompletion, IoOp, QueuePair, BLOCK_SIZE};
use crate::index::{chunk_count, chunk_len, Applied, Index};
use crate::layout::{self, ChunkRef, Entry, Geometry, Superblock, CKPT_HEADER, RECORD_HEADER};
use crate::{Error, ObjectId, Result};

/// Per-open settings (the format-time ones are in [`FormatOptions`]).
#[derive(Debug, Clone, Copy)]
pub struct StoreConfig {
    /// Requests in flight at once (slots); also bounds the DMA pool.
    pub max_requests: usize,
    /// Blocks of checkpoint written concurrently.
    pub checkpoint_depth: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig { max_requests: 64, checkpoint_depth: 8 }
    }
}

/// Format-time settings.
#[derive(Debug, Clone, Copy)]
pub struct FormatOptions {
    pub max_objects: u64,
    /// Journal ring size in blocks (records); 0 picks 1/64 of the device, 16..=4096.
    pub journal_blocks: u64,
}

impl Default for FormatOptions {
    fn default() -> Self {
        FormatOptions { max_objects: 65_536, journal_blocks: 0 }
    }
}

/// A request. Data of a put is copied at submit, so the slice need not outlive the call.
#[derive(Debug, Clone, Copy)]
pub enum Request<'a> {
    /// Write chunk `chunk` of `object` at `version`, whose total size is `size`. `data` must be
    /// exactly the chunk's length (4096, or the remainder for the last chunk). For `size == 0`,
    /// `chunk` is 0 and `data` empty: that creates the empty object. A newer version replaces the
    /// object; the same version adds or rewrites chunks (so retries are harmless); an older
    /// version is refused.
    Put {
        object: ObjectId,
        chunk: u32,
        data: &'a [u8],
        size: u64,
        version: u64,
    },
    Get {
        object: ObjectId,
        chunk: u32,
    },
    Stat {
        object: ObjectId,
    },
    Delete {
        object: ObjectId,
    },
    /// Up to `limit` objects with id > `after`, in id order.
    List {
        after: Option<ObjectId>,
        limit: usize,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectInfo {
    pub object: ObjectId,
    pub size: u64,
    pub version: u64,
    pub chunks: u32,
    /// Chunks written so far; the object is complete when `present == chunks`.
    pub present: u32,
}

/// A chunk read back and verified. Holds a DMA buffer until dropped.
pub struct ChunkData {
    buf: DmaBuf,
    len: usize,
}

impl std::ops::Deref for ChunkData {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl std::fmt::Debug for ChunkData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ChunkData({} bytes)", self.len)
    }
}

#[derive(Debug)]
pub enum Reply {
    Put,
    Get(ChunkData),
    Stat(ObjectInfo),
    Delete { existed: bool },
    List(Vec<ObjectInfo>),
}

/// Counters since open (for metrics). Plain integers: the store belongs to one core.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    pub puts: u64,
    pub gets: u64,
    pub deletes: u64,
    pub stats: u64,
    pub lists: u64,
    /// Requests answered with an error (refusals at submit not counted).
    pub errors: u64,
    pub checksum_failures: u64,
    pub device_errors: u64,
    pub bytes_written: u64,
    pub bytes_read: u64,
    pub journal_records: u64,
    pub journal_entries: u64,
    pub checkpoints: u64,
}

#[derive(Debug)]
pub struct StoreCompletion {
    pub tag: u64,
    pub result: Result<Reply>,
}

// Device I/O tags: kind in the high 32 bits, request slot or block number in the low.
const T_READ: u64 = 1;
const T_WRITE: u64 = 2;
const T_FLUSH1: u64 = 3;
const T_RECORD: u64 = 4;
const T_FLUSH2: u64 = 5;
const T_CKPT: u64 = 6;
const T_CKPT_FLUSH: u64 = 7;
const T_SB: u64 = 8;
const T_SB_FLUSH: u64 = 9;

fn tag(kind: u64, low: u32) -> u64 {
    (kind << 32) | u64::from(low)
}

enum OpKind {
    Get {
        object: ObjectId,
        chunk: u32,
        lba: u64,
        crc: u32,
        len: usize,
    },
    /// A put or delete; `entry` is what the journal will record.
    Update {
        entry: Entry,
    },
}

struct Op {
    tag: u64,
    kind: OpKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Commit {
    Idle,
    Flush1,
    Record,
    Flush2,
    /// Checkpoint blocks being written: next block to submit, blocks in flight.
    Ckpt {
        next: u64,
        in_flight: usize,
    },
    CkptFlush,
    Sb,
    SbFlush,
}

pub struct Store {
    qp: Box<dyn QueuePair>,
    pool: DmaPool,
    sb: Superblock,
    /// The superblock being installed by a checkpoint.
    new_sb: Superblock,
    index: Index,
    alloc: Allocator,
    max_requests: usize,
    ops: Vec<Option<Op>>,
    free_ops: Vec<u32>,
    ready: VecDeque<StoreCompletion>,
    commit_queue: VecDeque<u32>,
    group: Vec<u32>,
    group_entries: Vec<Entry>,
    commit: Commit,
    next_seq: u64,
    journal_buf: Option<DmaBuf>,
    sb_buf: Option<DmaBuf>,
    ckpt_bufs: Vec<DmaBuf>,
    ckpt_data: Vec<u8>,
    /// Blocks no longer referenced that an in-flight read still targets; freed when the last
    /// such read completes.
    pinned: Vec<u64>,
    freed: Vec<u64>,
    io_done: Vec<IoCompletion>,
    failed: Option<Error>,
    stats: StoreStats,
}

fn dev_err(op: IoOp, errno: i32) -> Error {
    Error::Device { op: op.name(), errno }
}

fn new_uuid() -> [u8; 16] {
    let mut u = [0u8; 16];
    for half in u.chunks_mut(8) {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
        h.write_u32(std::process::id());
        half.copy_from_slice(&h.finish().to_le_bytes());
    }
    u
}

/// Blocking single-request I/O for format and mount (not the data path).
fn sync_io(qp: &mut dyn QueuePair, io: Io) -> Result<Option<DmaBuf>> {
    let op = io.op;
    qp.submit(io).map_err(|r| Error::Config(format!("{} at mount: {}", op.name(), r.reason)))?;
    let mut out = Vec::with_capacity(qp.depth());
    loop {
        qp.poll(&mut out);
        if let Some(c) = out.pop() {
            return c.result.map(|()| c.buf).map_err(|e| dev_err(op, e));
        }
        std::hint::spin_loop();
    }
}

fn sync_read(qp: &mut dyn QueuePair, pool: &DmaPool, lba: u64) -> Result<DmaBuf> {
    let buf = pool.alloc().ok_or(Error::Busy)?;
    sync_io(qp, Io::read(lba, 1, buf, 0))?.ok_or_else(|| Error::Corrupt("read lost its buffer".into()))
}

fn sync_write(qp: &mut dyn QueuePair, lba: u64, buf: DmaBuf) -> Result<DmaBuf> {
    sync_io(qp, Io::write(lba, 1, buf, 0))?.ok_or_else(|| Error::Corrupt("write lost its buffer".into()))
}

impl Store {
    /// Write an empty store onto `dev` (blocking). Everything previously on it is forgotten:
    /// records and checkpoints carry the new uuid, so old ones are never replayed.
    pub fn format(dev: &dyn BlockDevice, opts: FormatOptions) -> Result<Superblock> {
        let geometry = Geometry::compute(dev.num_blocks(), opts.max_objects, opts.journal_blocks)?;
        let uuid = new_uuid();
        let pool = DmaPool::new(2, 1)?;
        let mut qp = dev.queue_pair(4, &pool)?;
        let idx = Index::new(geometry.max_objects, geometry.reservable(), geometry.data_start..geometry.total_blocks);
        let mut ckpt = Vec::new();
        idx.encode_checkpoint(0, &uuid, &mut ckpt);
        let mut buf = pool.alloc().ok_or(Error::Busy)?;
        buf.fill(0);
        buf[..ckpt.len()].copy_from_slice(&ckpt);
        let buf = sync_write(qp.as_mut(), geometry.ckpt_start[0], buf)?;
        sync_io(qp.as_mut(), Io::flush(0))?;
        let sb = Superblock { geometry, uuid, generation: 1, ckpt_slot: 0, ckpt_seq: 0 };
        let mut buf = buf;
        sb.encode(&mut buf);
        let buf = sync_write(qp.as_mut(), 0, buf)?;
        let buf = sync_write(qp.as_mut(), 1, buf)?;
        drop(buf);
        sync_io(qp.as_mut(), Io::flush(0))?;
        Ok(sb)
    }

    /// Mount the store on `dev` (blocking): pick the newest valid superblock, load its
    /// checkpoint, replay the journal after it, rebuild the allocator.
    pub fn open(dev: &dyn BlockDevice, cfg: StoreConfig) -> Result<Store> {
        if cfg.max_requests == 0 || cfg.checkpoint_depth == 0 {
            return Err(Error::Config("max_requests and checkpoint_depth must be at least 1".into()));
        }
        // Buffers: one per request, as many again for replies the caller still holds, the
        // checkpoint writers, the journal and superblock buffers.
        let nbufs = 2 * cfg.max_requests + cfg.checkpoint_depth + 2;
        let pool = DmaPool::new(nbufs, 1)?;
        let depth = (cfg.max_requests + cfg.checkpoint_depth + 2) as u32;
        let mut qp = dev.queue_pair(depth, &pool)?;

        let mut best: Option<Superblock> = None;
        for lba in 0..2 {
            let b = sync_read(qp.as_mut(), &pool, lba)?;
            if let Ok(sb) = Superblock::decode(&b) {
                if best.is_none_or(|s| sb.generation > s.generation) {
                    best = Some(sb);
                }
            }
        }
        let sb = best.ok_or_else(|| Error::Corrupt("no valid superblock (not formatted?)".into()))?;
        let g = sb.geometry;
        if g.total_blocks > dev.num_blocks() {
            return Err(Error::Corrupt(format!(
                "superblock says {} blocks, device has {}",
                g.total_blocks,
                dev.num_blocks()
            )));
        }
        let data = g.data_start..g.total_blocks;

        // Checkpoint.
        let start = g.ckpt_start[sb.ckpt_slot as usize];
        let first = sync_read(qp.as_mut(), &pool, start)?;
        let h = layout::CheckpointHeader::decode(&first)?;
        if h.uuid != sb.uuid || h.seq != sb.ckpt_seq {
            return Err(Error::Corrupt("checkpoint does not match the superblock".into()));
        }
        let total = CKPT_HEADER as u64 + h.payload_len;
        if total > g.ckpt_blocks * BLOCK_SIZE as u64 {
            return Err(Error::Corrupt("checkpoint larger than its slot".into()));
        }
        let mut bytes = Vec::with_capacity(total as usize);
        bytes.extend_from_slice(&first[..(total as usize).min(BLOCK_SIZE)]);
        drop(first);
        let mut lba = start + 1;
        while (bytes.len() as u64) < total {
            let b = sync_read(qp.as_mut(), &pool, lba)?;
            let n = ((total as usize) - bytes.len()).min(BLOCK_SIZE);
            bytes.extend_from_slice(&b[..n]);
            lba += 1;
        }
        let mut index =
            Index::decode_checkpoint(&h, &bytes[CKPT_HEADER..], g.max_objects, g.reservable(), data.clone())?;
        drop(bytes);

        // Journal replay.
        let mut seq = sb.ckpt_seq + 1;
        let mut freed = Vec::new();
        let mut replayed = 0u64;
        while seq - sb.ckpt_seq <= g.journal_blocks {
            let b = sync_read(qp.as_mut(), &pool, g.journal_lba(seq))?;
            let Some(rec) = layout::decode_record(&b, &sb.uuid) else {
                break;
            };
            if rec.seq != seq {
                break;
            }
            for e in &rec.entries {
                // Entries that failed live fail identically here; their blocks stay free.
                let _ = index.apply(e, &mut freed);
            }
            seq += 1;
            replayed += 1;
        }
        let mut alloc = Allocator::new(g.data_start, g.data_blocks);
        for (_, o) in index.iter() {
            for c in o.chunks.iter().filter(|c| c.lba != 0) {
                alloc.mark_used(c.lba)?;
            }
        }
        tracing::info!(
            device = %dev.describe(),
            objects = index.len(),
            replayed,
            free_blocks = alloc.free_blocks(),
            hugepages = pool.is_hugepage(),
            "object store mounted"
        );

        let journal_buf = pool.alloc().ok_or(Error::Busy)?;
        let sb_buf = pool.alloc().ok_or(Error::Busy)?;
        let ckpt_bufs: Vec<DmaBuf> = (0..cfg.checkpoint_depth).filter_map(|_| pool.alloc()).collect();
        let m = cfg.max_requests;
        Ok(Store {
            qp,
            pool,
            sb,
            new_sb: sb,
            index,
            alloc,
            max_requests: m,
            ops: (0..m).map(|_| None).collect(),
            free_ops: (0..m as u32).rev().collect(),
            ready: VecDeque::with_capacity(m),
            commit_queue: VecDeque::with_capacity(m),
            group: Vec::with_capacity(m),
            group_entries: Vec::with_capacity(m),
            commit: Commit::Idle,
            next_seq: seq,
            journal_buf: Some(journal_buf),
            sb_buf: Some(sb_buf),
            ckpt_bufs,
            ckpt_data: Vec::new(),
            pinned: Vec::with_capacity(m),
            freed: Vec::with_capacity(m),
            io_done: Vec::with_capacity(depth as usize),
            failed: None,
            stats: StoreStats::default(),
        })
    }

    pub fn superblock(&self) -> &Superblock {
        &self.sb
    }

    pub fn index(&self) -> &Index {
        &self.index
    }

    /// Free data blocks (blocks pinned by in-flight reads not counted).
    pub fn free_blocks(&self) -> u64 {
        self.alloc.free_blocks()
    }

    /// Counters since open.
    pub fn stats(&self) -> &StoreStats {
        &self.stats
    }

    /// Data blocks in use (chunks plus blocks of puts in flight or awaiting reuse).
    pub fn used_blocks(&self) -> u64 {
        self.alloc.total_blocks() - self.alloc.free_blocks()
    }

    /// Next journal sequence number to be written.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Requests accepted and not yet handed out by `poll`.
    pub fn in_flight(&self) -> usize {
        self.max_requests - self.free_ops.len() + self.ready.len()
    }

    /// Whether nothing is in flight (no request, no commit, no checkpoint).
    pub fn is_idle(&self) -> bool {
        self.in_flight() == 0 && self.commit == Commit::Idle && self.qp.in_flight() == 0
    }

    /// Whether a checkpoint is being written (journal commits wait for it).
    pub fn checkpoint_in_progress(&self) -> bool {
        matches!(self.commit, Commit::Ckpt { .. } | Commit::CkptFlush | Commit::Sb | Commit::SbFlush)
    }

    /// The error that stopped the store, if any.
    pub fn failure(&self) -> Option<&Error> {
        self.failed.as_ref()
    }

    fn info(object: ObjectId, o: &crate::index::ObjectMeta) -> ObjectInfo {
        ObjectInfo {
            object,
            size: o.size,
            version: o.version,
            chunks: o.chunks.len() as u32,
            present: o.present() as u32,
        }
    }

    fn take_slot(&mut self, op: Op) -> Result<u32> {
        let slot = self.free_ops.pop().ok_or(Error::Busy)?;
        self.ops[slot as usize] = Some(op);
        Ok(slot)
    }

    /// Accept a request. `Err` means it was refused now (invalid, or [`Error::Busy`]: poll and
    /// retry) and no completion will follow; `Ok` means exactly one completion with `tag` will
    /// come out of [`Store::poll`].
    pub fn submit(&mut self, req: Request<'_>, tag: u64) -> Result<()> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        if self.free_ops.is_empty() || self.ready.len() >= self.max_requests {
            return Err(Error::Busy);
        }
        match req {
            Request::Stat { object } => {
                self.stats.stats += 1;
                let result = match self.index.get(object) {
                    Some(o) => Ok(Reply::Stat(Self::info(object, o))),
                    None => Err(Error::NotFound(object)),
                };
                self.ready.push_back(StoreCompletion { tag, result });
                Ok(())
            }
            Request::List { after, limit } => {
                self.stats.lists += 1;
                let list = self.index.range_after(after).take(limit).map(|(&id, o)| Self::info(id, o)).collect();
                self.ready.push_back(StoreCompletion { tag, result: Ok(Reply::List(list)) });
                Ok(())
            }
            Request::Delete { object } => {
                let slot = self.take_slot(Op { tag, kind: OpKind::Update { entry: Entry::Delete { object } } })?;
                self.commit_queue.push_back(slot);
                Ok(())
            }
            Request::Get { object, chunk } => {
                let o = self.index.get(object).ok_or(Error::NotFound(object))?;
                let c = *o.chunks.get(chunk as usize).ok_or(Error::ChunkOutOfRange {
                    chunk,
                    size: o.size,
                    chunks: o.chunks.len() as u32,
                })?;
                if c.lba == 0 {
                    return Err(Error::ChunkMissing { object, chunk });
                }
                let len = chunk_len(o.size, chunk);
                let buf = self.pool.alloc().ok_or(Error::Busy)?;
                let op = Op { tag, kind: OpKind::Get { object, chunk, lba: c.lba, crc: c.crc, len } };
                let slot = self.take_slot(op)?;
                self.submit_io(Io::read(c.lba, 1, buf, tag_of(T_READ, slot)), slot)
            }
            Request::Put { object, chunk, data, size, version } => {
                let chunks = chunk_count(size);
                if size == 0 {
                    if chunk != 0 || !data.is_empty() {
                        return Err(Error::ChunkOutOfRange { chunk, size, chunks: 0 });
                    }
                } else if u64::from(chunk) >= chunks {
                    return Err(Error::ChunkOutOfRange { chunk, size, chunks: chunks.min(u64::from(u32::MAX)) as u32 });
                }
                let want = chunk_len(size, chunk);
                if data.len() != want {
                    return Err(Error::BadLength { chunk, expected: want, got: data.len() });
                }
                self.index.precheck_put(object, version, size)?;
                if size == 0 {
                    let entry = Entry::Put { object, version, size, chunk: None };
                    let slot = self.take_slot(Op { tag, kind: OpKind::Update { entry } })?;
                    self.commit_queue.push_back(slot);
                    return Ok(());
                }
                let mut buf = self.pool.alloc().ok_or(Error::Busy)?;
                let lba = self.alloc.alloc().ok_or(Error::NoSpace)?;
                buf[..data.len()].copy_from_slice(data);
                buf[data.len()..BLOCK_SIZE].fill(0);
                let crc = crc32c::crc32c(&buf[..BLOCK_SIZE]);
                let entry = Entry::Put { object, version, size, chunk: Some(ChunkRef { index: chunk, lba, crc }) };
                let slot = match self.take_slot(Op { tag, kind: OpKind::Update { entry } }) {
                    Ok(s) => s,
                    Err(e) => {
                        self.free_block(lba);
                        return Err(e);
                    }
                };
                self.submit_io(Io::write(lba, 1, buf, tag_of(T_WRITE, slot)), slot)
            }
        }
    }

    /// Submit a request's device I/O; on refusal undo the slot (and the block of a put).
    fn submit_io(&mut self, io: Io, slot: u32) -> Result<()> {
        let lba = io.lba;
        let is_write = io.op == IoOp::Write;
        match self.qp.submit(io) {
            Ok(()) => Ok(()),
            Err(rej) => {
                self.ops[slot as usize] = None;
                self.free_ops.push(slot);
                if is_write {
                    self.free_block(lba);
                }
                Err(match rej.reason {
                    crate::blk::SubmitError::QueueFull => Error::Busy,
                    other => Error::Corrupt(format!("device refused a request: {other}")),
                })
            }
        }
    }

    fn free_block(&mut self, lba: u64) {
        if let Err(e) = self.alloc.free(lba) {
            tracing::error!(error = %e, "allocator inconsistency");
        }
    }

    fn finish(&mut self, slot: u32, result: Result<Reply>) {
        if let Some(op) = self.ops[slot as usize].take() {
            self.free_ops.push(slot);
            let st = &mut self.stats;
            match (&op.kind, &result) {
                (OpKind::Get { len, .. }, Ok(_)) => {
                    st.gets += 1;
                    st.bytes_read += *len as u64;
                }
                (OpKind::Update { entry: Entry::Put { size, chunk, .. } }, Ok(_)) => {
                    st.puts += 1;
                    st.bytes_written += chunk.map_or(0, |c| chunk_len(*size, c.index) as u64);
                }
                (OpKind::Update { entry: Entry::Delete { .. } }, Ok(_)) => st.deletes += 1,
                (_, Err(e)) => {
                    st.errors += 1;
                    match e {
                        Error::Checksum { .. } => st.checksum_failures += 1,
                        Error::Device { .. } => st.device_errors += 1,
                        _ => {}
                    }
                }
            }
            self.ready.push_back(StoreCompletion { tag: op.tag, result });
        }
    }

    /// Advance everything; append finished requests to `out` and return how many.
    pub fn poll(&mut self, out: &mut Vec<StoreCompletion>) -> usize {
        let mut done = std::mem::take(&mut self.io_done);
        self.qp.poll(&mut done);
        for c in done.drain(..) {
            self.on_io(c);
        }
        self.io_done = done;
        self.drive_commit();
        let n = self.ready.len();
        out.extend(self.ready.drain(..));
        n
    }

    fn on_io(&mut self, c: IoCompletion) {
        let kind = c.tag >> 32;
        let slot = c.tag as u32;
        match kind {
            T_READ => {
                let Some(Op { kind: OpKind::Get { object, chunk, lba, crc, len }, .. }) = &self.ops[slot as usize]
                else {
                    return;
                };
                let (object, chunk, lba, crc, len) = (*object, *chunk, *lba, *crc, *len);
                let result = match (c.result, c.buf) {
                    (Err(e), _) => Err(dev_err(IoOp::Read, e)),
                    (Ok(()), Some(buf)) => {
                        if crc32c::crc32c(&buf[..BLOCK_SIZE]) == crc {
                            Ok(Reply::Get(ChunkData { buf, len }))
                        } else {
                            tracing::warn!(object, chunk, "checksum mismatch on read");
                            Err(Error::Checksum { object, chunk })
                        }
                    }
                    (Ok(()), None) => Err(dev_err(IoOp::Read, libc::EIO)),
                };
                self.finish(slot, result);
                self.unpin(lba);
            }
            T_WRITE => match c.result {
                Ok(()) => self.commit_queue.push_back(slot),
                Err(e) => {
                    if let Some(Op { kind: OpKind::Update { entry: Entry::Put { chunk: Some(cr), .. } }, .. }) =
                        &self.ops[slot as usize]
                    {
                        let lba = cr.lba;
                        self.free_block(lba);
                    }
                    self.finish(slot, Err(dev_err(IoOp::Write, e)));
                }
            },
            T_FLUSH1 => match c.result {
                Ok(()) => self.write_record(),
                // Nothing durable refers to the group's blocks: fail the group, free them.
                Err(e) => self.fail_group(dev_err(IoOp::Flush, e), true),
            },
            T_RECORD => {
                self.journal_buf = c.buf;
                match c.result {
                    Ok(()) => self.submit_meta(Io::flush(tag_of(T_FLUSH2, 0)), Commit::Flush2),
                    Err(e) => self.fail_store(dev_err(IoOp::Write, e)),
                }
            }
            T_FLUSH2 => match c.result {
                Ok(()) => self.apply_group(),
                Err(e) => self.fail_store(dev_err(IoOp::Flush, e)),
            },
            T_CKPT => {
                if let Some(b) = c.buf {
                    self.ckpt_bufs.push(b);
                }
                if let Err(e) = c.result {
                    return self.fail_store(dev_err(IoOp::Write, e));
                }
                if let Commit::Ckpt { next, in_flight } = self.commit {
                    self.commit = Commit::Ckpt { next, in_flight: in_flight - 1 };
                }
                self.drive_checkpoint();
            }
            T_CKPT_FLUSH => match c.result {
                Ok(()) => {
                    let Some(mut buf) = self.sb_buf.take() else {
                        return self.fail_store(Error::Busy);
                    };
                    self.new_sb.encode(&mut buf);
                    let lba = self.new_sb.copy_lba();
                    self.submit_meta(Io::write(lba, 1, buf, tag_of(T_SB, 0)), Commit::Sb);
                }
                Err(e) => self.fail_store(dev_err(IoOp::Flush, e)),
            },
            T_SB => {
                self.sb_buf = c.buf;
                match c.result {
                    Ok(()) => self.submit_meta(Io::flush(tag_of(T_SB_FLUSH, 0)), Commit::SbFlush),
                    Err(e) => self.fail_store(dev_err(IoOp::Write, e)),
                }
            }
            T_SB_FLUSH => match c.result {
                Ok(()) => {
                    self.sb = self.new_sb;
                    self.stats.checkpoints += 1;
                    self.commit = Commit::Idle;
                    tracing::debug!(generation = self.sb.generation, seq = self.sb.ckpt_seq, "checkpoint installed");
                }
                Err(e) => self.fail_store(dev_err(IoOp::Flush, e)),
            },
            _ => {}
        }
    }

    fn submit_meta(&mut self, io: Io, next: Commit) {
        match self.qp.submit(io) {
            Ok(()) => self.commit = next,
            Err(rej) => {
                // The queue is sized for every request plus the metadata path; a refusal here is
                // a bug or a device problem. Keep the buffer and stop.
                if let Some(b) = rej.io.buf {
                    if self.journal_buf.is_none() {
                        self.journal_buf = Some(b);
                    } else {
                        self.sb_buf = Some(b);
                    }
                }
                self.fail_store(Error::Corrupt(format!("metadata I/O refused: {}", rej.reason)));
            }
        }
    }

    fn drive_commit(&mut self) {
        if let Some(err) = &self.failed {
            // Puts whose data writes finished after the store stopped.
            let err = err.clone();
            while let Some(slot) = self.commit_queue.pop_front() {
                self.finish(slot, Err(err.clone()));
            }
            return;
        }
        match self.commit {
            Commit::Idle => {}
            Commit::Ckpt { .. } => return self.drive_checkpoint(),
            _ => return,
        }
        if self.commit_queue.is_empty() {
            return;
        }
        let since = self.next_seq - 1 - self.sb.ckpt_seq;
        if since >= self.sb.geometry.journal_blocks / 2 {
            return self.start_checkpoint();
        }
        // Form the group: as many queued updates as fit in one record.
        self.group.clear();
        self.group_entries.clear();
        let mut bytes = 0;
        let mut needs_flush = false;
        while let Some(&slot) = self.commit_queue.front() {
            let Some(Op { kind: OpKind::Update { entry }, .. }) = &self.ops[slot as usize] else {
                self.commit_queue.pop_front();
                continue;
            };
            if bytes + entry.encoded_len() > BLOCK_SIZE - RECORD_HEADER {
                break;
            }
            bytes += entry.encoded_len();
            needs_flush |= matches!(entry, Entry::Put { chunk: Some(_), .. });
            self.group_entries.push(*entry);
            self.group.push(slot);
            self.commit_queue.pop_front();
        }
        if needs_flush {
            self.submit_meta(Io::flush(tag_of(T_FLUSH1, 0)), Commit::Flush1);
        } else {
            self.write_record();
        }
    }

    fn write_record(&mut self) {
        let Some(mut buf) = self.journal_buf.take() else {
            return self.fail_store(Error::Busy);
        };
        if let Err(e) = layout::encode_record(&mut buf, self.next_seq, &self.sb.uuid, &self.group_entries) {
            self.journal_buf = Some(buf);
            return self.fail_group(e, true);
        }
        let lba = self.sb.geometry.journal_lba(self.next_seq);
        self.submit_meta(Io::write(lba, 1, buf, tag_of(T_RECORD, 0)), Commit::Record);
    }

    /// The record is durable: apply its entries in order and answer each request.
    fn apply_group(&mut self) {
        self.next_seq += 1;
        self.stats.journal_records += 1;
        self.stats.journal_entries += self.group.len() as u64;
        self.commit = Commit::Idle;
        let group = std::mem::take(&mut self.group);
        for (i, &slot) in group.iter().enumerate() {
            let entry = self.group_entries[i];
            self.freed.clear();
            let result = match self.index.apply(&entry, &mut self.freed) {
                Ok(Applied::Put) => Ok(Reply::Put),
                Ok(Applied::Delete { existed }) => Ok(Reply::Delete { existed }),
                Err(e) => {
                    // Refused at apply (e.g. a newer version committed first): the block this put
                    // wrote is referenced by nothing, here or after replay.
                    if let Entry::Put { chunk: Some(c), .. } = entry {
                        self.freed.push(c.lba);
                    }
                    Err(e)
                }
            };
            for k in 0..self.freed.len() {
                let lba = self.freed[k];
                if self.read_targets(lba) {
                    self.pinned.push(lba);
                } else {
                    self.free_block(lba);
                }
            }
            self.finish(slot, result);
        }
        self.group = group;
        self.group.clear();
    }

    fn fail_group(&mut self, err: Error, free_blocks: bool) {
        self.commit = Commit::Idle;
        let group = std::mem::take(&mut self.group);
        for &slot in &group {
            if free_blocks {
                if let Some(Op { kind: OpKind::Update { entry: Entry::Put { chunk: Some(c), .. } }, .. }) =
                    &self.ops[slot as usize]
                {
                    let lba = c.lba;
                    self.free_block(lba);
                }
            }
            self.finish(slot, Err(err.clone()));
        }
        self.group = group;
        self.group.clear();
    }

    /// A metadata write or flush failed: what is durable is unknown until the next mount.
    fn fail_store(&mut self, err: Error) {
        tracing::error!(error = %err, "object store stopped after a metadata I/O error");
        self.failed = Some(err.clone());
        let group = std::mem::take(&mut self.group);
        for &slot in &group {
            self.finish(slot, Err(err.clone()));
        }
        self.group = group;
        self.group.clear();
        while let Some(slot) = self.commit_queue.pop_front() {
            self.finish(slot, Err(err.clone()));
        }
        self.commit = Commit::Idle;
    }

    fn start_checkpoint(&mut self) {
        let slot = 1 - self.sb.ckpt_slot;
        let seq = self.next_seq - 1;
        self.index.encode_checkpoint(seq, &self.sb.uuid, &mut self.ckpt_data);
        self.new_sb = Superblock { generation: self.sb.generation + 1, ckpt_slot: slot, ckpt_seq: seq, ..self.sb };
        self.commit = Commit::Ckpt { next: 0, in_flight: 0 };
        tracing::debug!(bytes = self.ckpt_data.len(), seq, slot, "checkpoint started");
        self.drive_checkpoint();
    }

    fn drive_checkpoint(&mut self) {
        let Commit::Ckpt { mut next, mut in_flight } = self.commit else {
            return;
        };
        let blocks = self.ckpt_data.len().div_ceil(BLOCK_SIZE) as u64;
        let start = self.sb.geometry.ckpt_start[self.new_sb.ckpt_slot as usize];
        while next < blocks {
            let Some(mut buf) = self.ckpt_bufs.pop() else {
                break;
            };
            let from = next as usize * BLOCK_SIZE;
            let to = (from + BLOCK_SIZE).min(self.ckpt_data.len());
            buf[..to - from].copy_from_slice(&self.ckpt_data[from..to]);
            buf[to - from..BLOCK_SIZE].fill(0);
            match self.qp.submit(Io::write(start + next, 1, buf, tag_of(T_CKPT, next as u32))) {
                Ok(()) => {
                    next += 1;
                    in_flight += 1;
                }
                Err(rej) => {
                    if let Some(b) = rej.io.buf {
                        self.ckpt_bufs.push(b);
                    }
                    break;
                }
            }
        }
        self.commit = Commit::Ckpt { next, in_flight };
        if next == blocks && in_flight == 0 {
            self.submit_meta(Io::flush(tag_of(T_CKPT_FLUSH, 0)), Commit::CkptFlush);
        }
    }

    /// Whether an in-flight read targets `lba` (a scan of the request slots).
    fn read_targets(&self, lba: u64) -> bool {
        self.ops.iter().any(|o| matches!(o, Some(Op { kind: OpKind::Get { lba: l, .. }, .. }) if *l == lba))
    }

    /// A read of `lba` finished: free the block if it was unreferenced meanwhile and no other
    /// read targets it.
    fn unpin(&mut self, lba: u64) {
        if let Some(i) = self.pinned.iter().position(|&p| p == lba) {
            if !self.read_targets(lba) {
                self.pinned.swap_remove(i);
                self.free_block(lba);
            }
        }
    }
}

fn tag_of(kind: u64, low: u32) -> u64 {
    tag(kind, low)
}

/// Blocking calls over a [`Store`], for tests and tools: each submits and polls until its own
/// completion arrives (busy polling, like the service's poll loop).
pub struct BlockingStore {
    store: Store,
    out: Vec<StoreCompletion>,
    stash: Vec<StoreCompletion>,
    next_tag: u64,
}

impl BlockingStore {
    pub fn new(store: Store) -> BlockingStore {
        BlockingStore { store, out: Vec::new(), stash: Vec::new(), next_tag: 1 }
    }

    pub fn open(dev: &dyn BlockDevice, cfg: StoreConfig) -> Result<BlockingStore> {
        Ok(BlockingStore::new(Store::open(dev, cfg)?))
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn store_mut(&mut self) -> &mut Store {
        &mut self.store
    }

    pub fn into_inner(self) -> Store {
        self.store
    }

    fn pump(&mut self) {
        self.store.poll(&mut self.out);
        self.stash.append(&mut self.out);
    }

    fn take(&mut self, tag: u64) -> Option<Result<Reply>> {
        let i = self.stash.iter().position(|c| c.tag == tag)?;
        Some(self.stash.swap_remove(i).result)
    }

    /// Submit without waiting (retrying while busy); returns the tag.
    pub fn start(&mut self, req: Request<'_>) -> Result<u64> {
        let tag = self.next_tag;
        self.next_tag += 1;
        loop {
            match self.store.submit(req, tag) {
                Ok(()) => return Ok(tag),
                Err(Error::Busy) => self.pump(),
                Err(e) => return Err(e),
            }
        }
    }

    /// Wait for the completion of `tag`.
    pub fn wait(&mut self, tag: u64) -> Result<Reply> {
        loop {
            if let Some(r) = self.take(tag) {
                return r;
            }
            self.pump();
        }
    }

    pub fn call(&mut self, req: Request<'_>) -> Result<Reply> {
        let tag = self.start(req)?;
        self.wait(tag)
    }

    pub fn put_chunk(&mut self, object: ObjectId, chunk: u32, data: &[u8], size: u64, version: u64) -> Result<()> {
        self.call(Request::Put { object, chunk, data, size, version }).map(|_| ())
    }

    pub fn get_chunk(&mut self, object: ObjectId, chunk: u32) -> Result<Vec<u8>> {
        match self.call(Request::Get { object, chunk })? {
            Reply::Get(d) => Ok(d.to_vec()),
            other => Err(Error::Corrupt(format!("unexpected reply {other:?}"))),
        }
    }

    pub fn stat(&mut self, object: ObjectId) -> Result<ObjectInfo> {
        match self.call(Request::Stat { object })? {
            Reply::Stat(i) => Ok(i),
            other => Err(Error::Corrupt(format!("unexpected reply {other:?}"))),
        }
    }

    pub fn delete(&mut self, object: ObjectId) -> Result<bool> {
        match self.call(Request::Delete { object })? {
            Reply::Delete { existed } => Ok(existed),
            other => Err(Error::Corrupt(format!("unexpected reply {other:?}"))),
        }
    }

    pub fn list(&mut self, after: Option<ObjectId>, limit: usize) -> Result<Vec<ObjectInfo>> {
        match self.call(Request::List { after, limit })? {
            Reply::List(l) => Ok(l),
            other => Err(Error::Corrupt(format!("unexpected reply {other:?}"))),
        }
    }

    /// Write a whole object, with up to the store's request slots in flight.
    pub fn put_object(&mut self, object: ObjectId, version: u64, data: &[u8]) -> Result<()> {
        let size = data.len() as u64;
        if size == 0 {
            return self.put_chunk(object, 0, &[], 0, version);
        }
        let window = self.store.max_requests;
        let mut inflight = VecDeque::with_capacity(window);
        let mut first_err = None;
        for (i, c) in data.chunks(crate::index::CHUNK_SIZE).enumerate() {
            if inflight.len() == window {
                if let Some(t) = inflight.pop_front() {
                    if let Err(e) = self.wait(t) {
                        first_err.get_or_insert(e);
                    }
                }
            }
            if first_err.is_some() {
                break;
            }
            let req = Request::Put { object, chunk: i as u32, data: c, size, version };
            match self.start(req) {
                Ok(t) => inflight.push_back(t),
                Err(e) => {
                    first_err = Some(e);
                    break;
                }
            }
        }
        for t in inflight {
            if let Err(e) = self.wait(t) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Read a whole object, with up to half the store's request slots in flight (replies hold
    /// DMA buffers, so the window is bounded).
    pub fn get_object(&mut self, object: ObjectId) -> Result<Vec<u8>> {
        let info = self.stat(object)?;
        let mut out = vec![0u8; info.size as usize];
        let window = (self.store.max_requests / 2).max(1);
        let mut inflight = VecDeque::with_capacity(window);
        let mut first_err = None;
        let mut next = 0;
        while next < info.chunks || !inflight.is_empty() {
            if next < info.chunks && inflight.len() < window && first_err.is_none() {
                match self.start(Request::Get { object, chunk: next }) {
                    Ok(t) => inflight.push_back((next, t)),
                    Err(e) => {
                        first_err = Some(e);
                    }
                }
                next += 1;
                continue;
            }
            let Some((chunk, t)) = inflight.pop_front() else {
                break;
            };
            match self.wait(t) {
                Ok(Reply::Get(d)) => {
                    let off = chunk as usize * crate::index::CHUNK_SIZE;
                    out[off..off + d.len()].copy_from_slice(&d);
                }
                Ok(other) => {
                    first_err.get_or_insert(Error::Corrupt(format!("unexpected reply {other:?}")));
                }
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
            if first_err.is_some() {
                next = info.chunks;
            }
        }
        first_err.map_or(Ok(out), Err)
    }

    /// Poll until nothing is in flight.
    pub fn quiesce(&mut self) {
        while !self.store.is_idle() {
            self.pump();
        }
    }
}
