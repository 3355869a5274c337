//! Object storage on a raw block device, with no file system in between (capability O of
//! `DESIGN.md`, issue 5 items 1 and 2). The on-device format, the durability argument and the
//! limits are written out in `docs/objstore.md`; this is the map.
//!
//! Two layers:
//!
//! * [`blk`]: the block path in the style of SPDK. A [`blk::BlockDevice`] hands out
//!   [`blk::QueuePair`]s, one per core; a queue pair takes reads, writes and flushes of whole
//!   4 KiB blocks ([`blk::BLOCK_SIZE`]) with `submit` (refused, with the buffer handed back, when
//!   the queue is full) and reports their completions with `poll`. Nothing on that path locks,
//!   sleeps or waits for an interrupt: the caller polls. Buffers are [`blk::DmaBuf`]s from a
//!   [`blk::DmaPool`] mapped once at start from hugepages (ordinary page-aligned memory, with a
//!   warning, when none are free). Backends: [`blk::UringDevice`] (io_uring, `O_DIRECT`,
//!   registered buffers and file, IOPOLL where the device supports it) and [`blk::RamDevice`]
//!   (memory, for tests, able to simulate a power cut and to flip bits).
//! * [`store`]: objects straight on such a device. Two superblock copies, a write-ahead journal
//!   ring, two index checkpoint slots and the data area ([`layout`]); a block bitmap allocator
//!   rebuilt from the index at mount ([`alloc`]); the object index ([`index`]); and the
//!   [`store::Store`] state machine with a non-blocking `submit`/`poll` API, plus
//!   [`store::BlockingStore`] for tests and tools.
//!
//! Invariants the whole crate keeps:
//!
//! * every data block has a CRC32C in the index, checked on every read; a mismatch is
//!   [`Error::Checksum`], never data;
//! * a put is acknowledged only after its data block, then the journal record naming it, have
//!   been written *and* flushed (data, flush, record, flush); an unacknowledged put is applied
//!   whole or not at all after a crash, because data is never overwritten in place;
//! * a block freed by an update is reused only once the record freeing it is on stable media
//!   and no read that might still target it is in flight;
//! * capacities (objects, data blocks, in-flight requests, buffers) are fixed when the device is
//!   formatted and the store is opened.
//!
//! `unsafe` lives only in [`blk::dma`] (mmap) and [`blk::uring`] (io_uring submission with raw
//! buffer pointers), each use with a `SAFETY:` comment.
#![deny(unsafe_code)]

pub mod alloc;
pub mod blk;
pub mod index;
pub mod layout;
pub mod store;

pub use store::{
    BlockingStore, ChunkData, FormatOptions, ObjectInfo, Reply, Request, Store, StoreCompletion, StoreConfig,
    StoreStats,
};

/// An object identifier: the low 64 bits of a replica's IPv6 address in the storage design, but
/// the store takes any 128-bit value.
pub type ObjectId = u128;

/// Every error the store reports. `Clone` and `PartialEq` so completions can carry it and tests
/// can compare it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The data read back from the device does not match the CRC32C recorded when it was
    /// written. The data is not returned.
    #[error("checksum mismatch in object {object:#x} chunk {chunk}")]
    Checksum { object: ObjectId, chunk: u32 },
    #[error("object {0:#x} not found")]
    NotFound(ObjectId),
    #[error("object {object:#x} chunk {chunk} has not been written")]
    ChunkMissing { object: ObjectId, chunk: u32 },
    #[error("chunk {chunk} out of range: object of {size} bytes has {chunks} chunks")]
    ChunkOutOfRange { chunk: u32, size: u64, chunks: u32 },
    #[error("chunk {chunk} must be {expected} bytes, got {got}")]
    BadLength { chunk: u32, expected: usize, got: usize },
    #[error("object {object:#x} is at version {current}, request is for older version {requested}")]
    StaleVersion { object: ObjectId, current: u64, requested: u64 },
    #[error("object {object:#x} version {version} has size {size}, request says {requested}")]
    SizeMismatch { object: ObjectId, version: u64, size: u64, requested: u64 },
    /// No free data block, or the object's declared size does not fit the remaining capacity.
    #[error("no space left on the device")]
    NoSpace,
    #[error("object table full ({0} objects)")]
    ObjectTableFull(u64),
    #[error("object size {size} exceeds the largest possible ({max})")]
    TooLarge { size: u64, max: u64 },
    /// No request slot or buffer free right now; poll and retry. Only returned by `submit`.
    #[error("store busy: no free request slot or buffer")]
    Busy,
    /// The device reported an error (a negative errno from the kernel, or EIO from the RAM
    /// device after a simulated crash).
    #[error("device error during {op}: errno {errno}")]
    Device { op: &'static str, errno: i32 },
    /// The on-device structures are not valid (bad magic, checksum, geometry).
    #[error("corrupt or unformatted device: {0}")]
    Corrupt(String),
    /// Bad configuration or device geometry at format/open time.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A system call outside the data path failed (open, mmap, ring setup).
    #[error("{context}: {message}")]
    Os { context: &'static str, message: String },
}

impl Error {
    pub(crate) fn os(context: &'static str, e: std::io::Error) -> Self {
        Error::Os { context, message: e.to_string() }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
