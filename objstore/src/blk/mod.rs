//! The block path: devices of 4 KiB blocks driven through per-core queue pairs, SPDK style.
//!
//! * A [`BlockDevice`] is opened once and hands out [`QueuePair`]s. A queue pair belongs to one
//!   core (it is `Send` so it can be created on the main thread and moved, but it is never
//!   shared): no locks, no interrupts, no sleeping on the data path.
//! * [`QueuePair::submit`] queues a read, write or flush. It never blocks: when the queue already
//!   holds `depth` requests it refuses with [`SubmitError::QueueFull`] and hands the request
//!   (and its buffer) back. Submissions are batched: the device is told about them at the next
//!   [`QueuePair::poll`], which also reaps completions (one system call per poll for io_uring).
//! * The buffer of a read or write is *moved* into the queue pair for the duration of the I/O and
//!   comes back in the [`IoCompletion`]; that is what makes handing memory to the kernel safe
//!   without borrowing rules: nothing else can touch it meanwhile.
//! * Buffers come from a [`DmaPool`]: 4 KiB-aligned, mapped once at start (hugepages where
//!   possible), registered with the kernel where the backend can use that.
//! * Flush makes every write whose completion was reaped before the flush was submitted durable.
//!   Nothing else is promised: writes that are merely complete may still sit in a volatile cache
//!   and be lost or torn (per block) by a power cut; [`RamDevice`] simulates exactly that.
//!
//! Limits: one request covers at most the buffer's capacity (the pool's buffer size) and whole
//! blocks only; LBAs are in 4 KiB blocks.

pub mod dma;
mod ram;
pub mod uring;

pub use dma::{DmaBuf, DmaPool};
pub use ram::{CrashReport, RamDevice};
pub use uring::{IopollMode, UringDevice, UringOptions};

use crate::Result;

/// The only block size the block path and the store know.
pub const BLOCK_SIZE: usize = 4096;

/// What a request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoOp {
    Read,
    Write,
    Flush,
}

impl IoOp {
    pub fn name(self) -> &'static str {
        match self {
            IoOp::Read => "read",
            IoOp::Write => "write",
            IoOp::Flush => "flush",
        }
    }
}

/// One request to a queue pair. `nblocks` blocks at `lba`, to or from the start of `buf`
/// (`None` for a flush). `tag` comes back untouched in the completion.
#[derive(Debug)]
pub struct Io {
    pub op: IoOp,
    pub lba: u64,
    pub nblocks: u32,
    pub buf: Option<DmaBuf>,
    pub tag: u64,
}

impl Io {
    pub fn read(lba: u64, nblocks: u32, buf: DmaBuf, tag: u64) -> Self {
        Io { op: IoOp::Read, lba, nblocks, buf: Some(buf), tag }
    }
    pub fn write(lba: u64, nblocks: u32, buf: DmaBuf, tag: u64) -> Self {
        Io { op: IoOp::Write, lba, nblocks, buf: Some(buf), tag }
    }
    pub fn flush(tag: u64) -> Self {
        Io { op: IoOp::Flush, lba: 0, nblocks: 0, buf: None, tag }
    }
}

/// The outcome of one request: its tag, its buffer back, and `Err(errno)` on failure.
#[derive(Debug)]
pub struct IoCompletion {
    pub tag: u64,
    pub op: IoOp,
    pub buf: Option<DmaBuf>,
    pub result: std::result::Result<(), i32>,
}

/// Why a submission was refused; the request comes back with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    #[error("queue full")]
    QueueFull,
    #[error("request out of the device's range")]
    OutOfRange,
    #[error("bad request: buffer missing, too small or unaligned, or zero blocks")]
    BadRequest,
}

/// A refused request, handed back whole so the caller keeps its buffer.
#[derive(Debug)]
pub struct Rejected {
    pub io: Io,
    pub reason: SubmitError,
}

/// A per-core submission/completion queue pair.
pub trait QueuePair: Send {
    /// Queue a request; never blocks. Refused (with the request back) when full or invalid.
    fn submit(&mut self, io: Io) -> std::result::Result<(), Box<Rejected>>;
    /// Push queued submissions to the device and append any completions to `out`. Returns how
    /// many were appended. Never blocks; `out` should have capacity for `depth()` entries so the
    /// data path does not allocate.
    fn poll(&mut self, out: &mut Vec<IoCompletion>) -> usize;
    /// Most requests in flight at once.
    fn depth(&self) -> usize;
    /// Requests submitted and not yet reaped.
    fn in_flight(&self) -> usize;
}

/// A device of `num_blocks()` 4 KiB blocks.
pub trait BlockDevice {
    fn num_blocks(&self) -> u64;
    /// A new queue pair of `depth` entries whose requests use buffers of `pool` (a backend may
    /// register the pool's memory with the kernel).
    fn queue_pair(&self, depth: u32, pool: &DmaPool) -> Result<Box<dyn QueuePair>>;
    /// A human-readable description (backend, path, options in force).
    fn describe(&self) -> String;
}

/// Check a request against a device of `num_blocks` blocks.
pub(crate) fn validate(io: &Io, num_blocks: u64) -> std::result::Result<(), SubmitError> {
    match io.op {
        IoOp::Flush => Ok(()),
        IoOp::Read | IoOp::Write => {
            let buf = io.buf.as_ref().ok_or(SubmitError::BadRequest)?;
            if io.nblocks == 0 || (io.nblocks as usize) * BLOCK_SIZE > buf.capacity() {
                return Err(SubmitError::BadRequest);
            }
            let end = io.lba.checked_add(u64::from(io.nblocks)).ok_or(SubmitError::OutOfRange)?;
            if end > num_blocks {
                return Err(SubmitError::OutOfRange);
            }
            Ok(())
        }
    }
}
