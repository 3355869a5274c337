//! A block device in memory, for tests: asynchronous, reordering, and able to lose power.
//!
//! The device keeps two images: what reads see (the volatile cache) and what would survive a
//! power cut (the media). A write, when the device executes it, changes the cache and marks its
//! blocks dirty; a flush copies to the media every dirty block whose write was executed before
//! the flush was *submitted* (the weakest promise a real device makes). Each `poll` executes a
//! random subset of the queued requests in random order and reports a random subset of the
//! executed ones, so completions come late and out of order.
//!
//! [`RamDevice::crash`] cuts the power: the device stops (every later request fails with `EIO`),
//! and a new device is returned whose media holds, for each dirty block independently, either
//! the new or the old content (block-granular tearing); requests not yet executed are lost.
//! [`RamDevice::crash_torn_sectors`] also tears blocks inside, 512-byte sector by sector.
//! [`RamDevice::flip_bit`] corrupts a block on both images.
//!
//! The state sits behind a mutex so the test can reach it while a store drives the queue pair;
//! this backend is for tests, the lock-free data path is the io_uring one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use super::{validate, BlockDevice, DmaPool, Io, IoCompletion, IoOp, QueuePair, Rejected, SubmitError, BLOCK_SIZE};
use crate::Result;

struct RamState {
    blocks: u64,
    cache: Vec<u8>,
    media: Vec<u8>,
    /// Dirty block -> execution stamp of the write that dirtied it last.
    dirty: HashMap<u64, u64>,
    stamp: u64,
    dead: bool,
    hold_reads: bool,
    rng: u64,
    writes: u64,
    flushes: u64,
}

impl RamState {
    fn next_rand(&mut self) -> u64 {
        // xorshift64*
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// True with probability 1/n.
    fn one_in(&mut self, n: u64) -> bool {
        self.next_rand() < u64::MAX / n
    }

    fn range(lba: u64, nblocks: u32) -> std::ops::Range<usize> {
        let start = lba as usize * BLOCK_SIZE;
        start..start + nblocks as usize * BLOCK_SIZE
    }

    /// Execute one request; `submit_stamp` is the stamp when it was submitted.
    fn execute(&mut self, io: &mut Io, submit_stamp: u64) -> std::result::Result<(), i32> {
        if self.dead {
            return Err(libc::EIO);
        }
        self.stamp += 1;
        match io.op {
            IoOp::Read => {
                let r = Self::range(io.lba, io.nblocks);
                let buf = io.buf.as_mut().ok_or(libc::EINVAL)?;
                buf[..r.len()].copy_from_slice(&self.cache[r]);
            }
            IoOp::Write => {
                let r = Self::range(io.lba, io.nblocks);
                let buf = io.buf.as_ref().ok_or(libc::EINVAL)?;
                self.cache[r.clone()].copy_from_slice(&buf[..r.len()]);
                for b in io.lba..io.lba + u64::from(io.nblocks) {
                    self.dirty.insert(b, self.stamp);
                }
                self.writes += 1;
            }
            IoOp::Flush => {
                let mut done = Vec::new();
                for (&b, &st) in &self.dirty {
                    if st < submit_stamp {
                        done.push(b);
                    }
                }
                for b in done {
                    let r = Self::range(b, 1);
                    let (cache, media) = (&self.cache, &mut self.media);
                    media[r.clone()].copy_from_slice(&cache[r]);
                    self.dirty.remove(&b);
                }
                self.flushes += 1;
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tearing {
    Blocks,
    Sectors,
}

/// What a simulated power cut did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CrashReport {
    /// Blocks written but not flushed at the cut.
    pub dirty: usize,
    /// Of those, how many reached the media whole anyway.
    pub persisted: usize,
    /// Of those, how many were torn inside (sector by sector; `crash_torn_sectors` only).
    pub torn: usize,
}

/// An in-memory block device; clones share the device.
#[derive(Clone)]
pub struct RamDevice {
    state: Arc<Mutex<RamState>>,
}

fn lock(m: &Mutex<RamState>) -> MutexGuard<'_, RamState> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl RamDevice {
    /// A zeroed device of `blocks` blocks; `seed` drives the reordering and crash choices.
    pub fn new(blocks: u64, seed: u64) -> RamDevice {
        let bytes = blocks as usize * BLOCK_SIZE;
        RamDevice::from_image(blocks, vec![0; bytes], seed)
    }

    fn from_image(blocks: u64, media: Vec<u8>, seed: u64) -> RamDevice {
        RamDevice {
            state: Arc::new(Mutex::new(RamState {
                blocks,
                cache: media.clone(),
                media,
                dirty: HashMap::new(),
                stamp: 0,
                dead: false,
                hold_reads: false,
                rng: seed | 1,
                writes: 0,
                flushes: 0,
            })),
        }
    }

    /// Cut the power. This device fails every request from now on; the returned device holds
    /// what the media would hold: each dirty block, independently, new or old.
    pub fn crash(&self, seed: u64) -> (RamDevice, CrashReport) {
        self.cut(seed, Tearing::Blocks)
    }

    /// Like [`RamDevice::crash`], but a dirty block may also be torn inside: each of its eight
    /// 512-byte sectors independently new or old (devices promise no more than sector atomicity).
    pub fn crash_torn_sectors(&self, seed: u64) -> (RamDevice, CrashReport) {
        self.cut(seed, Tearing::Sectors)
    }

    fn cut(&self, seed: u64, tearing: Tearing) -> (RamDevice, CrashReport) {
        const SECTOR: usize = 512;
        let mut st = lock(&self.state);
        st.dead = true;
        st.rng ^= seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut media = st.media.clone();
        let mut dirty: Vec<u64> = st.dirty.keys().copied().collect();
        dirty.sort_unstable();
        let mut report = CrashReport { dirty: dirty.len(), persisted: 0, torn: 0 };
        for b in dirty {
            let r = RamState::range(b, 1);
            if tearing == Tearing::Sectors && st.one_in(3) {
                for s in (r.start..r.end).step_by(SECTOR) {
                    if st.one_in(2) {
                        media[s..s + SECTOR].copy_from_slice(&st.cache[s..s + SECTOR]);
                    }
                }
                report.torn += 1;
            } else if st.one_in(2) {
                media[r.clone()].copy_from_slice(&st.cache[r]);
                report.persisted += 1;
            }
        }
        let blocks = st.blocks;
        let next_seed = st.next_rand();
        drop(st);
        (RamDevice::from_image(blocks, media, next_seed), report)
    }

    /// Flip one bit of block `lba` (cache and media).
    pub fn flip_bit(&self, lba: u64, byte: usize, bit: u8) {
        let mut st = lock(&self.state);
        let i = lba as usize * BLOCK_SIZE + byte % BLOCK_SIZE;
        st.cache[i] ^= 1 << (bit % 8);
        st.media[i] ^= 1 << (bit % 8);
    }

    /// A copy of block `lba` as reads see it.
    pub fn block(&self, lba: u64) -> Vec<u8> {
        let st = lock(&self.state);
        st.cache[RamState::range(lba, 1)].to_vec()
    }

    /// Writes and flushes executed so far.
    /// While `true`, reads stay queued (not executed); other requests go on. For tests of what
    /// happens around a slow read.
    pub fn hold_reads(&self, hold: bool) {
        lock(&self.state).hold_reads = hold;
    }

    pub fn counters(&self) -> (u64, u64) {
        let st = lock(&self.state);
        (st.writes, st.flushes)
    }
}

impl BlockDevice for RamDevice {
    fn num_blocks(&self) -> u64 {
        lock(&self.state).blocks
    }

    fn queue_pair(&self, depth: u32, _pool: &DmaPool) -> Result<Box<dyn QueuePair>> {
        let depth = depth.max(1) as usize;
        Ok(Box::new(RamQueuePair {
            state: Arc::clone(&self.state),
            depth,
            queued: Vec::with_capacity(depth),
            executed: Vec::with_capacity(depth),
        }))
    }

    fn describe(&self) -> String {
        format!("ram device, {} blocks", self.num_blocks())
    }
}

struct RamQueuePair {
    state: Arc<Mutex<RamState>>,
    depth: usize,
    /// Submitted, not yet executed, with the device stamp at submission.
    queued: Vec<(Io, u64)>,
    /// Executed, completion not yet reported.
    executed: Vec<IoCompletion>,
}

impl QueuePair for RamQueuePair {
    fn submit(&mut self, io: Io) -> std::result::Result<(), Box<Rejected>> {
        let mut st = lock(&self.state);
        if let Err(reason) = validate(&io, st.blocks) {
            return Err(Box::new(Rejected { io, reason }));
        }
        if self.in_flight() >= self.depth {
            return Err(Box::new(Rejected { io, reason: SubmitError::QueueFull }));
        }
        // A submission is an event: later executions get larger stamps than this one.
        st.stamp += 1;
        let stamp = st.stamp;
        self.queued.push((io, stamp));
        Ok(())
    }

    fn poll(&mut self, out: &mut Vec<IoCompletion>) -> usize {
        let mut st = lock(&self.state);
        // Execute a random subset of the queue in random order.
        let mut i = 0;
        while i < self.queued.len() {
            if st.one_in(3) {
                i += 1;
                continue;
            }
            let pick = i + (st.next_rand() % (self.queued.len() - i) as u64) as usize;
            if st.hold_reads && self.queued[pick].0.op == IoOp::Read {
                self.queued.swap(i, pick);
                i += 1;
                continue;
            }
            let (mut io, stamp) = self.queued.swap_remove(pick);
            let result = st.execute(&mut io, stamp);
            self.executed.push(IoCompletion { tag: io.tag, op: io.op, buf: io.buf, result });
        }
        // Report a random subset of the executed ones.
        let before = out.len();
        let mut j = 0;
        while j < self.executed.len() {
            if st.one_in(4) {
                j += 1;
            } else {
                out.push(self.executed.swap_remove(j));
            }
        }
        out.len() - before
    }

    fn depth(&self) -> usize {
        self.depth
    }

    fn in_flight(&self) -> usize {
        self.queued.len() + self.executed.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(qp: &mut dyn QueuePair) -> Vec<IoCompletion> {
        let mut out = Vec::new();
        while qp.in_flight() > 0 {
            qp.poll(&mut out);
        }
        out
    }

    #[test]
    fn write_read_flush_crash() {
        let dev = RamDevice::new(16, 1);
        let pool = DmaPool::new(4, 2).unwrap();
        let mut qp = dev.queue_pair(4, &pool).unwrap();
        let mut b = pool.alloc().unwrap();
        b.fill(0x11);
        qp.submit(Io::write(3, 2, b, 7)).unwrap();
        let c = drain(qp.as_mut());
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].tag, 7);
        assert!(c[0].result.is_ok());
        // Visible to reads before the flush.
        assert_eq!(dev.block(4)[0], 0x11);
        qp.submit(Io::flush(8)).unwrap();
        drain(qp.as_mut());
        // Unflushed write after the flush.
        let mut b = pool.alloc().unwrap();
        b.fill(0x22);
        qp.submit(Io::write(5, 1, b, 9)).unwrap();
        drain(qp.as_mut());
        let (after, report) = dev.crash(3);
        assert_eq!(report.dirty, 1);
        assert_eq!(after.block(3)[0], 0x11);
        assert_eq!(after.block(4)[100], 0x11);
        let b5 = after.block(5)[0];
        assert!(b5 == 0x22 || b5 == 0, "block 5 is new or old, not {b5}");
        // The old device is dead.
        qp.submit(Io::flush(10)).unwrap();
        let c = drain(qp.as_mut());
        assert_eq!(c[0].result, Err(libc::EIO));
    }

    #[test]
    fn queue_full_and_range() {
        let dev = RamDevice::new(4, 1);
        let pool = DmaPool::new(4, 1).unwrap();
        let mut qp = dev.queue_pair(2, &pool).unwrap();
        qp.submit(Io::flush(1)).unwrap();
        qp.submit(Io::flush(2)).unwrap();
        let r = qp.submit(Io::flush(3)).unwrap_err();
        assert_eq!(r.reason, SubmitError::QueueFull);
        let buf = pool.alloc().unwrap();
        let r = qp.submit(Io::read(4, 1, buf, 4)).unwrap_err();
        assert_eq!(r.reason, SubmitError::OutOfRange);
        assert!(r.io.buf.is_some(), "buffer handed back");
        let buf = pool.alloc().unwrap();
        let r = qp.submit(Io::read(0, 2, buf, 4)).unwrap_err();
        assert_eq!(r.reason, SubmitError::BadRequest);
    }

    #[test]
    fn flush_covers_only_writes_executed_before_it_was_submitted() {
        let dev = RamDevice::new(4, 5);
        let pool = DmaPool::new(4, 1).unwrap();
        let mut qp = dev.queue_pair(4, &pool).unwrap();
        // Submit a write and a flush together: the flush may execute first, so the write is
        // not necessarily durable. Repeat until the adversarial order shows up at least once.
        let mut saw_unflushed = false;
        for round in 0..64u8 {
            let mut b = pool.alloc().unwrap();
            b.fill(round);
            qp.submit(Io::write(0, 1, b, 1)).unwrap();
            qp.submit(Io::flush(2)).unwrap();
            drain(qp.as_mut());
            if lock(&dev.state).dirty.contains_key(&0) {
                saw_unflushed = true;
                break;
            }
        }
        assert!(saw_unflushed);
    }
}
