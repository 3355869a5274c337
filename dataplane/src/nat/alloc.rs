//! Public address and port allocation for a carrier-grade NAT: paired address
//! pooling, port blocks per subscriber, parity, preservation, randomisation,
//! and a quarantine before any port or block is used again.
//!
//! ```text
//!  public address a (one of the pool), ports 1024..=65535 cut in blocks:
//!  ┌──────────┬──────────┬──────────┬─────┬──────────┐
//!  │ block 0  │ block 1  │ block 2  │ ... │ block n-1│   n = 64512 / ports_per_block
//!  │1024..1024│          │          │     │          │   block k: 1024 + k·size ..
//!  │  +size-1 │          │          │     │          │            1024 + (k+1)·size - 1
//!  └──────────┴──────────┴──────────┴─────┴──────────┘
//!  subscriber s (an inside address) ── holds ≤ blocks_per_subscriber_max blocks,
//!                                      all on ONE address (paired pooling)
//!  block: per protocol (TCP, UDP, ICMP id) a bitmap of ports in use or in quarantine
//! ```
//!
//! # Behaviour (RFC 4787, RFC 6888, RFC 7857)
//!
//! * **Paired pooling** (RFC 4787 REQ-2, RFC 6888 REQ-2): while a subscriber
//!   holds any block, all its blocks are on the same public address. Its first
//!   block is on the address at `hash(subscriber) mod pool size` (seeded
//!   hash), or the next address (in pool order, wrapping) with a free block.
//!   When its last block is released the pairing ends; its next block is
//!   chosen the same way, so it usually gets the same address back.
//! * **Port blocks** of `ports_per_block` ports, at most
//!   `blocks_per_subscriber_max` per subscriber (RFC 6888 REQ-4). A block is
//!   chosen at random among the free ones of the address. A block serves TCP,
//!   UDP and ICMP identifiers alike (one log record covers all three). Blocks
//!   are filled first-fit in the order they were allocated, so later blocks
//!   drain and are released (RFC 6888 REQ-13, REQ-14).
//! * **Port choice**, for a new mapping of inside port `p`: `p` itself if it
//!   lies in one of the subscriber's blocks and is free (port preservation);
//!   otherwise a random port of the same parity as `p` (RFC 4787 REQ-4) in
//!   the first block that has one (a random start, then the next free port:
//!   RFC 6888 REQ-15); otherwise a new block (same parity, or `p` if it falls
//!   in that block); only if no new block can be had, a port of the other
//!   parity in an existing block. Ports below 1024 are never handed out
//!   (RFC 4787 REQ-3); ICMP identifiers follow the same rules.
//! * **Quarantine** (RFC 6888 REQ-8): a released port is not handed out again
//!   for `reuse_delay_ms`; a released block (released when its last port is)
//!   is not handed to anyone for `reuse_delay_ms`. Both queues are FIFO,
//!   which is expiry order because the delay is constant and time never goes
//!   back (the allocator keeps the latest time it was given). The block queue
//!   cannot overflow (one entry per block record at most); when the port
//!   queue is full, the released port simply stays unusable until its block
//!   is released and has served its own quarantine — never reused early —
//!   and `port_quarantine_overflow` counts it.
//! * **Events**: every block allocation and release is a [`BlockEvent`]
//!   pushed to the caller's sink: the RFC 6888 §4 log record (who had which
//!   public address and ports, from when to when; no destinations: REQ-12)
//!   and the record a standby replays.
//! * **Exhaustion**: no mapping is ever evicted. Errors are returned and
//!   counted per reason: [`NatError::PoolExhausted`],
//!   [`NatError::SubscriberLimit`], [`NatError::SubscribersFull`],
//!   [`NatError::BlocksFull`].
//!
//! # Limits and cost
//!
//! Everything is allocated in [`PortAllocator::new`]: the pool (≤ 65 536
//! addresses) with a bitmap of free blocks per address, `subscribers_max`
//! subscriber records, `blocks_max` block records with three port bitmaps each
//! (`3 × ports_per_block / 8` bytes), and both quarantine queues. Allocating a
//! port scans at most the subscriber's blocks' bitmaps (word at a time);
//! choosing a new subscriber's address scans the pool once in the worst case
//! (slow path only); releasing is O(blocks per subscriber).

use std::collections::VecDeque;
use std::fmt;
use std::net::Ipv4Addr;

use super::table::{FixedKey, FixedMap};
use super::translate::Proto;
use super::{mix64, NatConfig, NatError, Sink, PORT_MIN};

/// Quarantine entries retired (at most) on each allocation, so an idle
/// expiry loop does not keep released ports away longer than needed.
const QUARANTINE_POLL_PER_ALLOC: usize = 8;

/// A port quarantine entry whose port was claimed back (never frees anything).
const NO_BLOCK: u32 = u32::MAX;

/// Whether a block was handed out or given back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BlockEventKind {
    Allocated,
    Released,
}

impl BlockEventKind {
    /// Lower-case name used in log lines.
    pub fn name(self) -> &'static str {
        match self {
            BlockEventKind::Allocated => "allocated",
            BlockEventKind::Released => "released",
        }
    }
}

/// One port block given to, or taken back from, a subscriber: the RFC 6888
/// log record and the HA replication record. Ports `port_start..=port_end`
/// of `public_addr`, for TCP, UDP and ICMP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlockEvent {
    pub kind: BlockEventKind,
    /// The inside address.
    pub subscriber: Ipv4Addr,
    pub public_addr: Ipv4Addr,
    pub port_start: u16,
    pub port_end: u16,
    /// The allocator's clock when it happened (the caller's monotonic ms).
    pub time_ms: u64,
}

impl fmt::Display for BlockEvent {
    /// One structured log line, e.g.
    /// `nat_block event=allocated time_ms=5000 subscriber=100.64.0.10 public_addr=198.51.100.1 port_start=1024 port_end=1535`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "nat_block event={} time_ms={} subscriber={} public_addr={} port_start={} port_end={}",
            self.kind.name(),
            self.time_ms,
            self.subscriber,
            self.public_addr,
            self.port_start,
            self.port_end
        )
    }
}

/// Index of a block record (for the holder of a lease; opaque otherwise).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlockId(u32);

/// A public port (or ICMP identifier) handed out for one mapping; give it
/// back with [`PortAllocator::release_port`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortLease {
    pub proto: Proto,
    pub public_addr: Ipv4Addr,
    pub port: u16,
    pub block: BlockId,
}

/// Counters of the allocator (single writer: the mapping core).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AllocCounters {
    pub ports_allocated: u64,
    pub ports_released: u64,
    /// Ports allocated equal to the inside port.
    pub ports_preserved: u64,
    /// Ports allocated with the other parity than the inside port.
    pub parity_not_kept: u64,
    pub blocks_allocated: u64,
    pub blocks_released: u64,
    pub pool_exhausted: u64,
    pub subscriber_limit: u64,
    pub subscribers_full: u64,
    pub blocks_full: u64,
    /// Released ports that found the port quarantine full (held until their
    /// block is recycled).
    pub port_quarantine_overflow: u64,
}

/// A subscriber key in the subscriber index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SubscriberKey(u32);

impl FixedKey for SubscriberKey {
    fn words(&self) -> [u64; 2] {
        [u64::from(self.0), 0]
    }
}

/// A block's place in the pool: (index of the address, block number).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BlockAt {
    pool_index: u32,
    block_no: u32,
}

impl FixedKey for BlockAt {
    fn words(&self) -> [u64; 2] {
        [u64::from(self.pool_index) << 32 | u64::from(self.block_no), 0xb10c]
    }
}

/// Why a block or port could not be claimed (replication or adoption: the
/// caller's copy of the state disagrees with this allocator's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ClaimError {
    /// The address is not in this allocator's pool, or the port is not the
    /// first port of a block.
    #[error("address or port outside the pool's blocks")]
    NotInPool,
    /// The block is held by another subscriber.
    #[error("block held by another subscriber")]
    HeldByOther,
    /// The subscriber holds blocks on another address (paired pooling).
    #[error("subscriber paired with another address")]
    OtherAddress,
    /// The subscriber already holds `blocks_per_subscriber_max` blocks.
    #[error("subscriber at its block limit")]
    SubscriberLimit,
    /// `subscribers_max` subscribers hold blocks.
    #[error("subscriber table full")]
    SubscribersFull,
    /// `blocks_max` block records are in use.
    #[error("block table full")]
    BlocksFull,
    /// The port is not in one of the subscriber's blocks.
    #[error("port not in the subscriber's blocks")]
    NotHeld,
    /// The block still has live ports (it cannot be released or quarantined).
    #[error("block in use")]
    InUse,
}

#[derive(Debug, Clone, Copy, Default)]
struct Subscriber {
    addr: u32,
    pool_index: u32,
    block_count: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum BlockState {
    #[default]
    Free,
    Allocated,
    Quarantined,
}

#[derive(Debug, Clone, Copy, Default)]
struct Block {
    state: BlockState,
    pool_index: u32,
    block_no: u32,
    subscriber: u32,
    /// Ports held by mappings (not those in quarantine).
    live: u32,
    /// Bumped on release: port quarantine entries of an older generation
    /// no longer apply.
    generation: u32,
}

#[derive(Debug, Clone, Copy)]
struct QuarantinedPort {
    block: u32,
    generation: u32,
    proto: Proto,
    offset: u16,
    until_ms: u64,
}

/// xorshift64* (Vigna): small, fast, good enough to make ports hard to guess
/// from outside; not cryptographic.
#[derive(Debug, Clone)]
struct XorShift64(u64);

impl XorShift64 {
    fn new(seed: u64) -> Self {
        XorShift64(if seed == 0 { 0x9e37_79b9_7f4a_7c15 } else { seed })
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform enough in `0..n` (`n > 0`).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const EVEN_BITS: u64 = 0x5555_5555_5555_5555;

/// Which port numbers a search accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Parity {
    Even,
    Odd,
    Any,
}

impl Parity {
    fn of(port: u16) -> Parity {
        if port.is_multiple_of(2) {
            Parity::Even
        } else {
            Parity::Odd
        }
    }

    /// Bits of a bitmap word (offset 0 is even: blocks start on even ports).
    fn mask(self) -> u64 {
        match self {
            Parity::Even => EVEN_BITS,
            Parity::Odd => !EVEN_BITS,
            Parity::Any => !0,
        }
    }
}

/// The first bit at or cyclically after `start` for which `candidates(word)`
/// has a one.
fn find_from(words: &[u64], start: usize, candidates: impl Fn(u64) -> u64) -> Option<usize> {
    let n = words.len();
    let (first_word, first_bit) = (start / 64, start % 64);
    let high = candidates(words[first_word]) & (!0u64 << first_bit);
    if high != 0 {
        return Some(first_word * 64 + high.trailing_zeros() as usize);
    }
    for k in 1..n {
        let w = (first_word + k) % n;
        let c = candidates(words[w]);
        if c != 0 {
            return Some(w * 64 + c.trailing_zeros() as usize);
        }
    }
    let low = candidates(words[first_word]) & !(!0u64 << first_bit);
    (low != 0).then(|| first_word * 64 + low.trailing_zeros() as usize)
}

/// The allocator of one mapping server. See the module doc.
#[derive(Debug, Clone)]
pub struct PortAllocator {
    /// Public addresses, ascending.
    pool: Vec<u32>,
    ports_per_block: u32,
    blocks_per_addr: u32,
    /// Free-block bitmap words per address.
    addr_words: usize,
    /// Bit set: block free and out of quarantine.
    addr_avail: Vec<u64>,
    addr_free: Vec<u32>,
    free_blocks_total: u64,

    subscriber_index: FixedMap<SubscriberKey, u32>,
    subscribers: Vec<Subscriber>,
    /// `blocks_per_subscriber_max` block ids per subscriber record, in
    /// allocation order.
    subscriber_blocks: Vec<u32>,
    subscriber_free: Vec<u32>,
    blocks_per_subscriber_max: usize,

    blocks: Vec<Block>,
    /// Port bitmap words per block and protocol.
    block_words: usize,
    /// Bit set: port in use or in quarantine.
    block_used: Vec<u64>,
    block_free: Vec<u32>,
    /// The record of every allocated or quarantined block, by (address, block).
    block_at: FixedMap<BlockAt, u32>,
    /// (record, its generation when queued, until): an entry whose record was
    /// claimed back meanwhile ([`PortAllocator::claim_block`]) is stale.
    block_quarantine: VecDeque<(u32, u32, u64)>,
    /// Entries ever popped from the front of each queue (snapshot cursors
    /// survive the queues moving).
    block_quarantine_popped: u64,
    port_quarantine: VecDeque<QuarantinedPort>,
    port_quarantine_popped: u64,
    /// Blocks in quarantine (the queue may also hold stale entries).
    blocks_in_quarantine: usize,
    port_quarantine_max: usize,
    reuse_delay_ms: u64,

    clock_ms: u64,
    rng: XorShift64,
    hash_seed: u64,
    counters: AllocCounters,
}

impl PortAllocator {
    /// Allocates every table from `config`, which must have passed
    /// [`NatConfig::validate`].
    ///
    /// # Panics
    /// If `config` is not valid.
    pub fn new(config: &NatConfig) -> PortAllocator {
        if let Err(e) = config.validate() {
            panic!("PortAllocator::new with an invalid config: {e}");
        }
        let mut pool: Vec<u32> = config.pool.iter().map(|a| u32::from(*a)).collect();
        pool.sort_unstable();
        let ports_per_block = u32::from(config.ports_per_block);
        let blocks_per_addr = config.blocks_per_addr();
        let addr_words = (blocks_per_addr as usize).div_ceil(64);
        let mut addr_avail = vec![0u64; pool.len() * addr_words];
        for words in addr_avail.chunks_mut(addr_words.max(1)) {
            set_first_bits(words, blocks_per_addr as usize);
        }
        let total_blocks = pool.len() as u64 * u64::from(blocks_per_addr);
        let blocks_max = u64::from(config.blocks_max).min(total_blocks) as usize;
        let subscribers_max = config.subscribers_max as usize;
        let limit = usize::from(config.blocks_per_subscriber_max);
        let block_words = ports_per_block as usize / 64;
        PortAllocator {
            addr_free: vec![blocks_per_addr; pool.len()],
            pool,
            ports_per_block,
            blocks_per_addr,
            addr_words,
            addr_avail,
            free_blocks_total: total_blocks,
            subscriber_index: FixedMap::new(subscribers_max, config.hash_seed ^ 0x5ab5),
            subscribers: vec![Subscriber::default(); subscribers_max],
            subscriber_blocks: vec![u32::MAX; subscribers_max * limit],
            subscriber_free: (0..subscribers_max as u32).rev().collect(),
            blocks_per_subscriber_max: limit,
            blocks: vec![Block::default(); blocks_max],
            block_words,
            block_used: vec![0; blocks_max * 3 * block_words],
            block_free: (0..blocks_max as u32).rev().collect(),
            block_at: FixedMap::new(blocks_max, config.hash_seed ^ 0xb10c),
            block_quarantine: VecDeque::with_capacity(blocks_max),
            block_quarantine_popped: 0,
            port_quarantine: VecDeque::with_capacity(config.port_quarantine_max as usize),
            port_quarantine_popped: 0,
            blocks_in_quarantine: 0,
            port_quarantine_max: config.port_quarantine_max as usize,
            reuse_delay_ms: config.reuse_delay_ms,
            clock_ms: 0,
            rng: XorShift64::new(config.random_seed),
            hash_seed: config.hash_seed,
            counters: AllocCounters::default(),
        }
    }

    /// Bytes allocated for the allocator's tables.
    pub fn memory_bytes(&self) -> usize {
        use std::mem::size_of;
        self.pool.capacity() * 4
            + self.addr_avail.capacity() * 8
            + self.addr_free.capacity() * 4
            + self.subscriber_index.memory_bytes()
            + self.subscribers.capacity() * size_of::<Subscriber>()
            + (self.subscriber_blocks.capacity() + self.subscriber_free.capacity()) * 4
            + self.blocks.capacity() * size_of::<Block>()
            + self.block_used.capacity() * 8
            + self.block_free.capacity() * 4
            + self.block_at.memory_bytes()
            + self.block_quarantine.capacity() * size_of::<(u32, u32, u64)>()
            + self.port_quarantine.capacity() * size_of::<QuarantinedPort>()
    }

    /// Counters since start.
    pub fn counters(&self) -> &AllocCounters {
        &self.counters
    }

    /// Subscribers holding at least one block.
    pub fn subscribers(&self) -> usize {
        self.subscriber_index.len()
    }

    /// Blocks held by subscribers.
    pub fn blocks_allocated(&self) -> usize {
        self.blocks.len() - self.block_free.len() - self.blocks_in_quarantine
    }

    /// Blocks waiting out their quarantine.
    pub fn blocks_quarantined(&self) -> usize {
        self.blocks_in_quarantine
    }

    /// Blocks neither allocated nor in quarantine, over the whole pool.
    pub fn blocks_free(&self) -> u64 {
        self.free_blocks_total
    }

    /// Ports waiting in the port quarantine queue.
    pub fn ports_quarantined(&self) -> usize {
        self.port_quarantine.len()
    }

    /// The public address a subscriber is paired with, while it holds blocks.
    pub fn paired_address(&self, subscriber: Ipv4Addr) -> Option<Ipv4Addr> {
        let slot = self.subscriber_index.get(&SubscriberKey(subscriber.into()))?;
        Some(Ipv4Addr::from(self.pool[self.subscribers[slot as usize].pool_index as usize]))
    }

    /// The port ranges a subscriber holds, in allocation order.
    pub fn subscriber_blocks(&self, subscriber: Ipv4Addr) -> impl Iterator<Item = (Ipv4Addr, u16, u16)> + '_ {
        let slot = self.subscriber_index.get(&SubscriberKey(subscriber.into()));
        let ids: &[u32] = match slot {
            Some(slot) => self.blocks_of(slot),
            None => &[],
        };
        ids.iter().map(|&b| {
            let (start, end) = self.block_range(b);
            (Ipv4Addr::from(self.pool[self.blocks[b as usize].pool_index as usize]), start, end)
        })
    }

    /// Whether `addr` is one of the pool's addresses.
    pub fn is_public(&self, addr: Ipv4Addr) -> bool {
        self.pool.binary_search(&u32::from(addr)).is_ok()
    }

    fn advance_clock(&mut self, now_ms: u64) -> u64 {
        self.clock_ms = self.clock_ms.max(now_ms);
        self.clock_ms
    }

    fn blocks_of(&self, slot: u32) -> &[u32] {
        let start = slot as usize * self.blocks_per_subscriber_max;
        let count = usize::from(self.subscribers[slot as usize].block_count);
        &self.subscriber_blocks[start..start + count]
    }

    fn block_range(&self, block: u32) -> (u16, u16) {
        let start = u32::from(PORT_MIN) + self.blocks[block as usize].block_no * self.ports_per_block;
        (start as u16, (start + self.ports_per_block - 1) as u16)
    }

    fn ports_words(&self, block: u32, proto: Proto) -> std::ops::Range<usize> {
        let start = (block as usize * 3 + proto.index()) * self.block_words;
        start..start + self.block_words
    }

    fn lease(&mut self, block: u32, proto: Proto, offset: usize, inside_port: u16) -> PortLease {
        let words = self.ports_words(block, proto);
        let word = &mut self.block_used[words.start + offset / 64];
        debug_assert_eq!(*word & (1 << (offset % 64)), 0);
        *word |= 1 << (offset % 64);
        self.blocks[block as usize].live += 1;
        let port = self.block_range(block).0 + offset as u16;
        self.counters.ports_allocated += 1;
        if port == inside_port {
            self.counters.ports_preserved += 1;
        }
        if Parity::of(port) != Parity::of(inside_port) {
            self.counters.parity_not_kept += 1;
        }
        let pool_index = self.blocks[block as usize].pool_index as usize;
        PortLease { proto, public_addr: Ipv4Addr::from(self.pool[pool_index]), port, block: BlockId(block) }
    }

    /// The inside port itself, if it lies in `block` and is free.
    fn preserved_offset(&self, block: u32, proto: Proto, inside_port: u16) -> Option<usize> {
        let (start, end) = self.block_range(block);
        if !(start..=end).contains(&inside_port) {
            return None;
        }
        let offset = usize::from(inside_port - start);
        let words = &self.block_used[self.ports_words(block, proto)];
        (words[offset / 64] & (1 << (offset % 64)) == 0).then_some(offset)
    }

    /// A random free port of the given parity in `block`.
    fn random_offset(&mut self, block: u32, proto: Proto, parity: Parity) -> Option<usize> {
        let start = self.rng.below(self.ports_per_block as usize);
        let words = &self.block_used[self.ports_words(block, proto)];
        let mask = parity.mask();
        find_from(words, start, |w| !w & mask)
    }

    /// A port in the subscriber's existing blocks: the inside port if free,
    /// else a random one of `parity`, first-fit over the blocks.
    fn port_in_blocks(&mut self, slot: u32, proto: Proto, inside_port: u16, parity: Parity) -> Option<PortLease> {
        let count = usize::from(self.subscribers[slot as usize].block_count);
        let base = slot as usize * self.blocks_per_subscriber_max;
        for i in 0..count {
            let block = self.subscriber_blocks[base + i];
            if let Some(offset) = self.preserved_offset(block, proto, inside_port) {
                return Some(self.lease(block, proto, offset, inside_port));
            }
        }
        for i in 0..count {
            let block = self.subscriber_blocks[base + i];
            if let Some(offset) = self.random_offset(block, proto, parity) {
                return Some(self.lease(block, proto, offset, inside_port));
            }
        }
        None
    }

    /// Allocates a public port (or ICMP identifier) for a new mapping of
    /// `subscriber:inside_port` (see the module doc for the rules). Pushes a
    /// [`BlockEvent`] if a block had to be allocated.
    pub fn allocate_port(
        &mut self,
        subscriber: Ipv4Addr,
        proto: Proto,
        inside_port: u16,
        now_ms: u64,
        sink: &mut impl Sink<BlockEvent>,
    ) -> Result<PortLease, NatError> {
        let now_ms = self.advance_clock(now_ms);
        self.poll(now_ms, QUARANTINE_POLL_PER_ALLOC);
        let key = SubscriberKey(subscriber.into());
        let existing = self.subscriber_index.get(&key);
        let parity = Parity::of(inside_port);
        if let Some(slot) = existing {
            if let Some(lease) = self.port_in_blocks(slot, proto, inside_port, parity) {
                return Ok(lease);
            }
        }
        match self.new_block(existing, subscriber, now_ms, sink) {
            Ok(block) => {
                let offset = match self.preserved_offset(block, proto, inside_port) {
                    Some(offset) => Some(offset),
                    None => self.random_offset(block, proto, parity),
                };
                let offset = offset.expect("a fresh block has free ports of both parities");
                Ok(self.lease(block, proto, offset, inside_port))
            }
            Err(error) => {
                if let Some(slot) = existing {
                    if let Some(lease) = self.port_in_blocks(slot, proto, inside_port, Parity::Any) {
                        return Ok(lease);
                    }
                }
                match error {
                    NatError::PoolExhausted => self.counters.pool_exhausted += 1,
                    NatError::SubscriberLimit => self.counters.subscriber_limit += 1,
                    NatError::SubscribersFull => self.counters.subscribers_full += 1,
                    NatError::BlocksFull => self.counters.blocks_full += 1,
                    _ => {}
                }
                Err(error)
            }
        }
    }

    /// The pool address for a new subscriber: its hash's address, or the
    /// next one with a free block.
    fn choose_address(&self, subscriber: Ipv4Addr) -> Option<usize> {
        if self.free_blocks_total == 0 {
            return None;
        }
        let n = self.pool.len();
        let home = (mix64(u64::from(u32::from(subscriber)) ^ self.hash_seed) % n as u64) as usize;
        (0..n).map(|k| (home + k) % n).find(|&a| self.addr_free[a] > 0)
    }

    /// Allocates a block for the subscriber (creating its record if new).
    /// Every check comes before any change.
    fn new_block(
        &mut self,
        existing: Option<u32>,
        subscriber: Ipv4Addr,
        now_ms: u64,
        sink: &mut impl Sink<BlockEvent>,
    ) -> Result<u32, NatError> {
        let pool_index = match existing {
            Some(slot) => {
                let s = self.subscribers[slot as usize];
                if usize::from(s.block_count) >= self.blocks_per_subscriber_max {
                    return Err(NatError::SubscriberLimit);
                }
                if self.addr_free[s.pool_index as usize] == 0 {
                    return Err(NatError::PoolExhausted);
                }
                s.pool_index as usize
            }
            None => {
                if self.subscriber_free.is_empty() {
                    return Err(NatError::SubscribersFull);
                }
                self.choose_address(subscriber).ok_or(NatError::PoolExhausted)?
            }
        };
        let Some(block) = self.block_free.pop() else {
            return Err(NatError::BlocksFull);
        };
        // A random free block of the address.
        let words = &self.addr_avail[pool_index * self.addr_words..(pool_index + 1) * self.addr_words];
        let start = self.rng.below(self.blocks_per_addr as usize);
        let block_no = find_from(words, start, |w| w).expect("addr_free > 0");
        self.take_free_block(pool_index, block_no, block);
        self.give_block(existing, subscriber, pool_index, block, now_ms, sink);
        Ok(block)
    }

    /// Marks block `block_no` of address `pool_index` as no longer free and
    /// binds it to record `block` (taken from the free list by the caller).
    fn take_free_block(&mut self, pool_index: usize, block_no: usize, block: u32) {
        self.addr_avail[pool_index * self.addr_words + block_no / 64] &= !(1 << (block_no % 64));
        self.addr_free[pool_index] -= 1;
        self.free_blocks_total -= 1;
        let at = BlockAt { pool_index: pool_index as u32, block_no: block_no as u32 };
        self.block_at.insert(at, block).expect("block_at holds blocks_max entries");
        let record = &mut self.blocks[block as usize];
        debug_assert_eq!(record.state, BlockState::Free);
        *record = Block {
            state: BlockState::Quarantined,
            pool_index: pool_index as u32,
            block_no: block_no as u32,
            subscriber: u32::MAX,
            live: 0,
            generation: record.generation,
        };
    }

    /// Gives record `block` (not free, not held) to the subscriber (its
    /// record `existing`, or a new one: the caller checked there is room),
    /// with empty port bitmaps.
    fn give_block(
        &mut self,
        existing: Option<u32>,
        subscriber: Ipv4Addr,
        pool_index: usize,
        block: u32,
        now_ms: u64,
        sink: &mut impl Sink<BlockEvent>,
    ) {
        let slot = match existing {
            Some(slot) => slot,
            None => {
                let slot = self.subscriber_free.pop().expect("checked by the caller");
                self.subscribers[slot as usize] =
                    Subscriber { addr: subscriber.into(), pool_index: pool_index as u32, block_count: 0 };
                self.subscriber_index
                    .insert(SubscriberKey(subscriber.into()), slot)
                    .expect("subscriber index holds subscribers_max entries");
                slot
            }
        };
        let words = block as usize * 3 * self.block_words..(block as usize + 1) * 3 * self.block_words;
        self.block_used[words].fill(0);
        let record = &mut self.blocks[block as usize];
        record.state = BlockState::Allocated;
        record.subscriber = slot;
        record.live = 0;
        let s = &mut self.subscribers[slot as usize];
        let index = slot as usize * self.blocks_per_subscriber_max + usize::from(s.block_count);
        s.block_count += 1;
        self.subscriber_blocks[index] = block;
        self.counters.blocks_allocated += 1;
        let (port_start, port_end) = self.block_range(block);
        sink.push(BlockEvent {
            kind: BlockEventKind::Allocated,
            subscriber,
            public_addr: Ipv4Addr::from(self.pool[pool_index]),
            port_start,
            port_end,
            time_ms: now_ms,
        });
    }

    /// (address index, block number) of the block starting at `port_start`
    /// on `public_addr`.
    fn locate(&self, public_addr: Ipv4Addr, port_start: u16) -> Result<(usize, usize), ClaimError> {
        let pool_index = self.pool.binary_search(&u32::from(public_addr)).map_err(|_| ClaimError::NotInPool)?;
        let offset = u32::from(port_start).checked_sub(u32::from(PORT_MIN)).ok_or(ClaimError::NotInPool)?;
        if offset % self.ports_per_block != 0 || offset / self.ports_per_block >= self.blocks_per_addr {
            return Err(ClaimError::NotInPool);
        }
        Ok((pool_index, (offset / self.ports_per_block) as usize))
    }

    /// The first port of the block that holds `port` (any address).
    pub fn block_start(&self, port: u16) -> u16 {
        let offset = u32::from(port.max(PORT_MIN) - PORT_MIN);
        (u32::from(PORT_MIN) + offset / self.ports_per_block * self.ports_per_block) as u16
    }

    /// Gives the subscriber exactly the block starting at `port_start` on
    /// `public_addr` (replaying another allocator's decision: a standby's
    /// replica, or a session adopted after a takeover). Nothing happens if
    /// it holds the block already; a block in quarantine is taken back (the
    /// replicated allocator decided it was reusable). Pushes a
    /// [`BlockEvent`] when the block is newly given. Every check comes
    /// before any change.
    pub fn claim_block(
        &mut self,
        subscriber: Ipv4Addr,
        public_addr: Ipv4Addr,
        port_start: u16,
        now_ms: u64,
        sink: &mut impl Sink<BlockEvent>,
    ) -> Result<(), ClaimError> {
        let now_ms = self.advance_clock(now_ms);
        let (pool_index, block_no) = self.locate(public_addr, port_start)?;
        let existing = self.subscriber_index.get(&SubscriberKey(subscriber.into()));
        let record = self.block_at.get(&BlockAt { pool_index: pool_index as u32, block_no: block_no as u32 });
        if let Some(r) = record {
            let b = self.blocks[r as usize];
            if b.state == BlockState::Allocated {
                return if Some(b.subscriber) == existing { Ok(()) } else { Err(ClaimError::HeldByOther) };
            }
        }
        match existing {
            Some(slot) => {
                let s = self.subscribers[slot as usize];
                if s.pool_index as usize != pool_index {
                    return Err(ClaimError::OtherAddress);
                }
                if usize::from(s.block_count) >= self.blocks_per_subscriber_max {
                    return Err(ClaimError::SubscriberLimit);
                }
            }
            None if self.subscriber_free.is_empty() => return Err(ClaimError::SubscribersFull),
            None => {}
        }
        let block = match record {
            Some(r) => {
                // Out of quarantine early: its queue entry goes stale.
                let rec = &mut self.blocks[r as usize];
                rec.generation = rec.generation.wrapping_add(1);
                self.blocks_in_quarantine -= 1;
                r
            }
            None => {
                let Some(r) = self.block_free.pop() else { return Err(ClaimError::BlocksFull) };
                self.take_free_block(pool_index, block_no, r);
                r
            }
        };
        self.give_block(existing, subscriber, pool_index, block, now_ms, sink);
        Ok(())
    }

    /// Leases exactly `port` of `public_addr` to a mapping of the subscriber,
    /// in one of its blocks ([`PortAllocator::claim_block`] first). The
    /// caller has checked that no live mapping holds the port: if its bit is
    /// set the port is in quarantine, and is taken back from it.
    pub fn claim_port(
        &mut self,
        subscriber: Ipv4Addr,
        proto: Proto,
        public_addr: Ipv4Addr,
        port: u16,
    ) -> Result<PortLease, ClaimError> {
        if port < PORT_MIN {
            return Err(ClaimError::NotInPool);
        }
        let (pool_index, block_no) = self.locate(public_addr, self.block_start(port))?;
        let slot = self.subscriber_index.get(&SubscriberKey(subscriber.into())).ok_or(ClaimError::NotHeld)?;
        let block = self
            .block_at
            .get(&BlockAt { pool_index: pool_index as u32, block_no: block_no as u32 })
            .filter(|&b| self.blocks[b as usize].state == BlockState::Allocated)
            .filter(|&b| self.blocks[b as usize].subscriber == slot)
            .ok_or(ClaimError::NotHeld)?;
        let offset = usize::from(port - self.block_range(block).0);
        let words = self.ports_words(block, proto);
        let bit = 1u64 << (offset % 64);
        if self.block_used[words.start + offset / 64] & bit != 0 {
            // In quarantine: its entry must not free the port later.
            let generation = self.blocks[block as usize].generation;
            if let Some(q) = self.port_quarantine.iter_mut().find(|q| {
                q.block == block && q.generation == generation && q.proto == proto && usize::from(q.offset) == offset
            }) {
                q.block = NO_BLOCK;
            }
            self.block_used[words.start + offset / 64] &= !bit;
        }
        Ok(self.lease(block, proto, offset, port))
    }

    /// Releases the subscriber's block starting at `port_start` on
    /// `public_addr` if no port of it is leased (replaying a release).
    /// Nothing happens if the subscriber does not hold it.
    pub fn release_block_if_idle(
        &mut self,
        subscriber: Ipv4Addr,
        public_addr: Ipv4Addr,
        port_start: u16,
        now_ms: u64,
        sink: &mut impl Sink<BlockEvent>,
    ) -> Result<(), ClaimError> {
        let now_ms = self.advance_clock(now_ms);
        let (pool_index, block_no) = self.locate(public_addr, port_start)?;
        let Some(slot) = self.subscriber_index.get(&SubscriberKey(subscriber.into())) else { return Ok(()) };
        let Some(block) = self.block_at.get(&BlockAt { pool_index: pool_index as u32, block_no: block_no as u32 })
        else {
            return Ok(());
        };
        let b = self.blocks[block as usize];
        if b.state != BlockState::Allocated || b.subscriber != slot {
            return Ok(());
        }
        if b.live > 0 {
            return Err(ClaimError::InUse);
        }
        self.release_block(block, now_ms, sink);
        Ok(())
    }

    /// Puts the free block starting at `port_start` on `public_addr` in
    /// quarantine for `remaining_ms` (a snapshot of another allocator).
    /// Nothing happens if it is in quarantine already.
    pub fn quarantine_block(
        &mut self,
        public_addr: Ipv4Addr,
        port_start: u16,
        remaining_ms: u64,
        now_ms: u64,
    ) -> Result<(), ClaimError> {
        let now_ms = self.advance_clock(now_ms);
        let (pool_index, block_no) = self.locate(public_addr, port_start)?;
        if let Some(b) = self.block_at.get(&BlockAt { pool_index: pool_index as u32, block_no: block_no as u32 }) {
            return match self.blocks[b as usize].state {
                BlockState::Allocated => Err(ClaimError::InUse),
                _ => Ok(()),
            };
        }
        let Some(block) = self.block_free.pop() else { return Err(ClaimError::BlocksFull) };
        self.take_free_block(pool_index, block_no, block);
        self.blocks_in_quarantine += 1;
        let generation = self.blocks[block as usize].generation;
        self.block_quarantine.push_back((block, generation, now_ms + remaining_ms));
        Ok(())
    }

    /// Puts `port` of a held block in quarantine for `remaining_ms` (a
    /// snapshot of another allocator). Nothing happens if the block is not
    /// held (its own quarantine covers the port) or the port is not free.
    pub fn quarantine_port(&mut self, proto: Proto, public_addr: Ipv4Addr, port: u16, remaining_ms: u64, now_ms: u64) {
        let now_ms = self.advance_clock(now_ms);
        if port < PORT_MIN {
            return;
        }
        let Ok((pool_index, block_no)) = self.locate(public_addr, self.block_start(port)) else { return };
        let Some(block) = self
            .block_at
            .get(&BlockAt { pool_index: pool_index as u32, block_no: block_no as u32 })
            .filter(|&b| self.blocks[b as usize].state == BlockState::Allocated)
        else {
            return;
        };
        let offset = port - self.block_range(block).0;
        let words = self.ports_words(block, proto);
        let word = &mut self.block_used[words.start + usize::from(offset) / 64];
        if *word & (1 << (offset % 64)) != 0 {
            return;
        }
        *word |= 1 << (offset % 64);
        if self.port_quarantine.len() < self.port_quarantine_max {
            let generation = self.blocks[block as usize].generation;
            let until_ms = now_ms + remaining_ms;
            self.port_quarantine.push_back(QuarantinedPort { block, generation, proto, offset, until_ms });
        } else {
            self.counters.port_quarantine_overflow += 1;
        }
    }

    /// Gives a port back. It is not handed out again for `reuse_delay_ms`;
    /// if it was its block's last port, the block is released (a
    /// [`BlockEvent`]) and quarantined as a whole.
    ///
    /// # Panics
    /// If `lease` was not handed out by this allocator or was already
    /// released (a bug in the caller: leases are owned by mappings).
    pub fn release_port(&mut self, lease: PortLease, now_ms: u64, sink: &mut impl Sink<BlockEvent>) {
        let now_ms = self.advance_clock(now_ms);
        let block = lease.block.0;
        let record = self.blocks[block as usize];
        let (start, end) = self.block_range(block);
        assert!(
            record.state == BlockState::Allocated
                && self.pool[record.pool_index as usize] == u32::from(lease.public_addr)
                && (start..=end).contains(&lease.port)
                && record.live > 0,
            "release of a lease not held: {lease:?}"
        );
        let offset = lease.port - start;
        let words = self.ports_words(block, lease.proto);
        let used = self.block_used[words.start + usize::from(offset) / 64] & (1 << (offset % 64)) != 0;
        assert!(used, "release of a port not in use: {lease:?}");
        self.counters.ports_released += 1;
        self.blocks[block as usize].live -= 1;
        if record.live == 1 {
            self.release_block(block, now_ms, sink);
        } else if self.port_quarantine.len() < self.port_quarantine_max {
            self.port_quarantine.push_back(QuarantinedPort {
                block,
                generation: record.generation,
                proto: lease.proto,
                offset,
                until_ms: now_ms + self.reuse_delay_ms,
            });
        } else {
            self.counters.port_quarantine_overflow += 1;
        }
    }

    fn release_block(&mut self, block: u32, now_ms: u64, sink: &mut impl Sink<BlockEvent>) {
        let record = &mut self.blocks[block as usize];
        record.state = BlockState::Quarantined;
        record.generation = record.generation.wrapping_add(1);
        let (slot, pool_index) = (record.subscriber, record.pool_index);
        let s = self.subscribers[slot as usize];
        let base = slot as usize * self.blocks_per_subscriber_max;
        let held = &mut self.subscriber_blocks[base..base + usize::from(s.block_count)];
        let at = held.iter().position(|&b| b == block).expect("block listed by its subscriber");
        held.copy_within(at + 1.., at);
        held[held.len() - 1] = u32::MAX;
        self.subscribers[slot as usize].block_count -= 1;
        if s.block_count == 1 {
            self.subscriber_index.remove(&SubscriberKey(s.addr));
            self.subscriber_free.push(slot);
        }
        debug_assert!(self.blocks_in_quarantine < self.blocks.len());
        self.blocks_in_quarantine += 1;
        let generation = self.blocks[block as usize].generation;
        self.block_quarantine.push_back((block, generation, now_ms + self.reuse_delay_ms));
        self.counters.blocks_released += 1;
        let (port_start, port_end) = self.block_range(block);
        sink.push(BlockEvent {
            kind: BlockEventKind::Released,
            subscriber: Ipv4Addr::from(s.addr),
            public_addr: Ipv4Addr::from(self.pool[pool_index as usize]),
            port_start,
            port_end,
            time_ms: now_ms,
        });
    }

    /// Ends the quarantine of at most `max` ports and blocks whose delay has
    /// passed; returns how many. Bounded work: call it regularly (the
    /// mapping core does, from [`super::NatTable::expire`]).
    pub fn poll(&mut self, now_ms: u64, max: usize) -> usize {
        let now_ms = self.advance_clock(now_ms);
        let mut done = 0;
        while done < max {
            if let Some(&port) = self.port_quarantine.front().filter(|p| p.until_ms <= now_ms) {
                self.port_quarantine.pop_front();
                self.port_quarantine_popped += 1;
                let record = self.blocks.get(port.block as usize).copied().unwrap_or_default();
                if record.generation == port.generation && record.state == BlockState::Allocated {
                    let words = self.ports_words(port.block, port.proto);
                    let offset = usize::from(port.offset);
                    self.block_used[words.start + offset / 64] &= !(1 << (offset % 64));
                }
            } else if let Some(&(block, generation, _)) = self.block_quarantine.front().filter(|b| b.2 <= now_ms) {
                self.block_quarantine.pop_front();
                self.block_quarantine_popped += 1;
                let record = &mut self.blocks[block as usize];
                if record.generation == generation && record.state == BlockState::Quarantined {
                    record.state = BlockState::Free;
                    let (a, b) = (record.pool_index as usize, record.block_no as usize);
                    self.block_at.remove(&BlockAt { pool_index: a as u32, block_no: b as u32 });
                    self.addr_avail[a * self.addr_words + b / 64] |= 1 << (b % 64);
                    self.addr_free[a] += 1;
                    self.free_blocks_total += 1;
                    self.block_free.push(block);
                    self.blocks_in_quarantine -= 1;
                }
            } else {
                break;
            }
            done += 1;
        }
        done
    }

    /// Back to the state [`PortAllocator::new`] built (capacities and seeds
    /// kept, nothing allocated): a standby's replica before a snapshot. Time
    /// proportional to the capacities; no allocation.
    pub fn reset(&mut self) {
        for a in 0..self.pool.len() {
            let words = &mut self.addr_avail[a * self.addr_words..(a + 1) * self.addr_words];
            set_first_bits(words, self.blocks_per_addr as usize);
        }
        self.addr_free.fill(self.blocks_per_addr);
        self.free_blocks_total = self.pool.len() as u64 * u64::from(self.blocks_per_addr);
        self.subscriber_index.clear();
        self.subscribers.fill(Subscriber::default());
        self.subscriber_blocks.fill(u32::MAX);
        self.subscriber_free.clear();
        self.subscriber_free.extend((0..self.subscribers.len() as u32).rev());
        for b in &mut self.blocks {
            *b = Block { generation: b.generation.wrapping_add(1), ..Block::default() };
        }
        self.block_used.fill(0);
        self.block_free.clear();
        self.block_free.extend((0..self.blocks.len() as u32).rev());
        self.block_at.clear();
        self.block_quarantine.clear();
        self.port_quarantine.clear();
        self.blocks_in_quarantine = 0;
    }

    /// The blocks of subscriber records `from..`, in allocation order per
    /// subscriber, for at most `max_slots` records: `out(subscriber,
    /// address, first port)`. Returns where to go on, `None` at the end.
    pub fn snapshot_blocks(
        &self,
        from: u32,
        max_slots: u32,
        mut out: impl FnMut(Ipv4Addr, Ipv4Addr, u16),
    ) -> Option<u32> {
        let end = (from as usize).saturating_add(max_slots as usize).min(self.subscribers.len());
        for slot in from as usize..end {
            let s = self.subscribers[slot];
            if s.block_count == 0 {
                continue;
            }
            for &b in self.blocks_of(slot as u32) {
                let addr = Ipv4Addr::from(self.pool[self.blocks[b as usize].pool_index as usize]);
                out(Ipv4Addr::from(s.addr), addr, self.block_range(b).0);
            }
        }
        (end < self.subscribers.len()).then_some(end as u32)
    }

    /// Blocks in quarantine from queue position `from` (counted since start,
    /// so a cursor survives the queue moving), at most `max`: `out(address,
    /// first port, remaining ms)`. Returns where to go on, `None` at the end.
    pub fn snapshot_block_quarantine(
        &self,
        from: u64,
        max: usize,
        mut out: impl FnMut(Ipv4Addr, u16, u64),
    ) -> Option<u64> {
        let first = from.saturating_sub(self.block_quarantine_popped) as usize;
        let end = first.saturating_add(max).min(self.block_quarantine.len());
        for &(block, generation, until) in self.block_quarantine.range(first.min(end)..end) {
            let b = self.blocks[block as usize];
            if b.generation == generation && b.state == BlockState::Quarantined {
                let addr = Ipv4Addr::from(self.pool[b.pool_index as usize]);
                out(addr, self.block_range(block).0, until.saturating_sub(self.clock_ms));
            }
        }
        (end < self.block_quarantine.len()).then_some(self.block_quarantine_popped + end as u64)
    }

    /// Ports in quarantine, like [`PortAllocator::snapshot_block_quarantine`]:
    /// `out(proto, address, port, remaining ms)`.
    pub fn snapshot_port_quarantine(
        &self,
        from: u64,
        max: usize,
        mut out: impl FnMut(Proto, Ipv4Addr, u16, u64),
    ) -> Option<u64> {
        let first = from.saturating_sub(self.port_quarantine_popped) as usize;
        let end = first.saturating_add(max).min(self.port_quarantine.len());
        for q in self.port_quarantine.range(first.min(end)..end) {
            let Some(b) = self.blocks.get(q.block as usize) else { continue };
            if b.generation == q.generation && b.state == BlockState::Allocated {
                let addr = Ipv4Addr::from(self.pool[b.pool_index as usize]);
                let port = self.block_range(q.block).0 + q.offset;
                out(q.proto, addr, port, q.until_ms.saturating_sub(self.clock_ms));
            }
        }
        (end < self.port_quarantine.len()).then_some(self.port_quarantine_popped + end as u64)
    }
}

/// Sets bits `0..n` of `words` and clears the rest (a word at a time: the
/// pool's bitmaps are rebuilt on every start and resynchronisation).
fn set_first_bits(words: &mut [u64], n: usize) {
    for (i, w) in words.iter_mut().enumerate() {
        let lo = i * 64;
        *w = if n >= lo + 64 {
            u64::MAX
        } else if n > lo {
            (1u64 << (n - lo)) - 1
        } else {
            0
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nat::tests::small_config;
    use proptest::prelude::*;
    use std::collections::{HashMap, HashSet};

    const SUB: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 10);

    fn sub(i: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(Ipv4Addr::new(100, 64, 0, 0)) + i)
    }

    #[test]
    fn find_from_wraps_and_masks() {
        let words = [!0u64, !0u64 ^ (1 << 3), !0u64];
        assert_eq!(find_from(&words, 0, |w| !w), Some(67));
        assert_eq!(find_from(&words, 100, |w| !w), Some(67));
        assert_eq!(find_from(&words, 67, |w| !w), Some(67));
        assert_eq!(find_from(&words, 68, |w| !w), Some(67));
        assert_eq!(find_from(&words, 68, |w| !w & EVEN_BITS), None);
        assert_eq!(find_from(&[0b1000_0001], 1, |w| w), Some(7));
        assert_eq!(find_from(&[0b1000_0001], 8, |w| w), Some(0));
        assert_eq!(find_from(&[0], 5, |w| w), None);
    }

    #[test]
    fn first_port_allocates_a_block_and_logs_it() {
        let mut alloc = PortAllocator::new(&small_config(4));
        let mut events = Vec::new();
        let lease = alloc.allocate_port(SUB, Proto::Udp, 5000, 1_000, &mut events).unwrap();
        assert_eq!(events.len(), 1);
        let event = events[0];
        assert_eq!(event.kind, BlockEventKind::Allocated);
        assert_eq!(event.subscriber, SUB);
        assert_eq!(event.public_addr, lease.public_addr);
        assert_eq!(event.port_end - event.port_start, 63);
        assert_eq!((event.port_start - 1024) % 64, 0);
        assert!((event.port_start..=event.port_end).contains(&lease.port));
        assert_eq!(event.time_ms, 1_000);
        assert_eq!(lease.port % 2, 0, "parity of 5000 kept");
        assert_eq!(alloc.paired_address(SUB), Some(lease.public_addr));
        assert_eq!(alloc.subscribers(), 1);
        assert_eq!(alloc.blocks_allocated(), 1);
        assert_eq!(
            event.to_string(),
            format!(
                "nat_block event=allocated time_ms=1000 subscriber=100.64.0.10 public_addr={} port_start={} port_end={}",
                lease.public_addr, event.port_start, event.port_end
            )
        );

        alloc.release_port(lease, 2_000, &mut events);
        assert_eq!(events.len(), 2);
        assert_eq!(events[1], BlockEvent { kind: BlockEventKind::Released, time_ms: 2_000, ..event });
        assert_eq!(alloc.subscribers(), 0);
        assert_eq!(alloc.paired_address(SUB), None);
        assert_eq!(alloc.blocks_quarantined(), 1);
    }

    #[test]
    fn preservation_and_parity() {
        let mut alloc = PortAllocator::new(&small_config(1));
        let mut events = Vec::new();
        let first = alloc.allocate_port(SUB, Proto::Tcp, 40000, 0, &mut events).unwrap();
        let (start, end) = (events[0].port_start, events[0].port_end);
        // Any free port of the block is preserved, for every protocol.
        for port in [start, start + 7, end] {
            if port == first.port {
                continue;
            }
            for proto in Proto::ALL {
                let lease = alloc.allocate_port(SUB, proto, port, 0, &mut events).unwrap();
                assert_eq!(lease.port, port);
            }
        }
        // The same port again (TCP) cannot be preserved: random, same parity.
        for inside in [start, start + 7] {
            let lease = alloc.allocate_port(SUB, Proto::Tcp, inside, 0, &mut events).unwrap();
            assert_ne!(lease.port, inside);
            assert_eq!(lease.port % 2, inside % 2);
            assert!((start..=end).contains(&lease.port));
        }
        assert_eq!(events.len(), 1, "all in the first block");
        assert_eq!(alloc.counters().parity_not_kept, 0);
    }

    #[test]
    fn parity_fallback_when_no_block_left() {
        // One block only: 32 even ports, then odd ones are used for even inside ports.
        let config = NatConfig { blocks_per_subscriber_max: 1, ..small_config(1) };
        let mut alloc = PortAllocator::new(&config);
        let mut events = Vec::new();
        let mut ports = HashSet::new();
        for i in 0..64 {
            let lease = alloc.allocate_port(SUB, Proto::Udp, 10, i, &mut events).unwrap();
            assert!(ports.insert(lease.port));
            if i < 32 {
                assert_eq!(lease.port % 2, 0);
            } else {
                assert_eq!(lease.port % 2, 1);
            }
        }
        assert_eq!(alloc.counters().parity_not_kept, 32);
        assert_eq!(alloc.allocate_port(SUB, Proto::Udp, 10, 99, &mut events), Err(NatError::SubscriberLimit));
        assert_eq!(alloc.counters().subscriber_limit, 1);
        // Another protocol has its own 64 ports in the same block.
        assert!(alloc.allocate_port(SUB, Proto::Tcp, 10, 99, &mut events).is_ok());
    }

    #[test]
    fn even_parity_prefers_a_new_block_over_odd_ports() {
        let config = NatConfig { blocks_per_subscriber_max: 2, ..small_config(1) };
        let mut alloc = PortAllocator::new(&config);
        let mut events = Vec::new();
        for _ in 0..32 {
            let lease = alloc.allocate_port(SUB, Proto::Udp, 2, 0, &mut events).unwrap();
            assert_eq!(lease.port % 2, 0);
        }
        assert_eq!(events.len(), 1);
        let lease = alloc.allocate_port(SUB, Proto::Udp, 2, 0, &mut events).unwrap();
        assert_eq!(lease.port % 2, 0);
        assert_eq!(events.len(), 2, "a second block for an even port");
        assert_eq!(events[0].public_addr, events[1].public_addr, "paired");
    }

    #[test]
    fn subscriber_limit_does_not_hurt_others() {
        let config = NatConfig { blocks_per_subscriber_max: 2, ..small_config(2) };
        let mut alloc = PortAllocator::new(&config);
        let mut events = Vec::new();
        for i in 0..128 {
            alloc.allocate_port(SUB, Proto::Tcp, 1024 + i, 0, &mut events).unwrap();
        }
        assert_eq!(alloc.allocate_port(SUB, Proto::Tcp, 5000, 0, &mut events), Err(NatError::SubscriberLimit));
        assert_eq!(alloc.subscriber_blocks(SUB).count(), 2);
        let other = alloc.allocate_port(sub(99), Proto::Tcp, 5000, 0, &mut events).unwrap();
        assert!(alloc.is_public(other.public_addr));
        assert_eq!(alloc.counters().subscriber_limit, 1);
    }

    #[test]
    fn pool_exhaustion_and_paired_address() {
        // Two addresses × 1008 blocks would be a lot; use 4096-port blocks:
        // 15 blocks per address, 30 in all, one block per subscriber.
        let config = NatConfig {
            ports_per_block: 4096,
            blocks_per_subscriber_max: 15,
            subscribers_max: 64,
            blocks_max: 64,
            ..small_config(2)
        };
        let mut alloc = PortAllocator::new(&config);
        let mut events = Vec::new();
        let mut per_addr: HashMap<Ipv4Addr, usize> = HashMap::new();
        for i in 0..30 {
            let lease = alloc.allocate_port(sub(i), Proto::Udp, 5000, 0, &mut events).unwrap();
            *per_addr.entry(lease.public_addr).or_default() += 1;
            assert!(lease.port < 1024 + 15 * 4096);
        }
        assert_eq!(per_addr.values().copied().collect::<Vec<_>>(), vec![15, 15]);
        assert_eq!(alloc.blocks_free(), 0);
        assert_eq!(alloc.allocate_port(sub(30), Proto::Udp, 5000, 0, &mut events), Err(NatError::PoolExhausted));
        assert_eq!(alloc.counters().pool_exhausted, 1);
        // An existing subscriber still gets ports in its block.
        let again = alloc.allocate_port(sub(0), Proto::Udp, 5000, 0, &mut events).unwrap();
        assert_eq!(Some(again.public_addr), alloc.paired_address(sub(0)));
    }

    #[test]
    fn blocks_full_and_subscribers_full() {
        let config = NatConfig { blocks_max: 2, subscribers_max: 3, ..small_config(1) };
        let mut alloc = PortAllocator::new(&config);
        let mut events = Vec::new();
        alloc.allocate_port(sub(1), Proto::Udp, 5000, 0, &mut events).unwrap();
        alloc.allocate_port(sub(2), Proto::Udp, 5000, 0, &mut events).unwrap();
        assert_eq!(alloc.allocate_port(sub(3), Proto::Udp, 5000, 0, &mut events), Err(NatError::BlocksFull));
        assert_eq!(alloc.subscribers(), 2, "a failed allocation leaves no subscriber behind");
        let config = NatConfig { subscribers_max: 1, ..small_config(1) };
        let mut alloc = PortAllocator::new(&config);
        alloc.allocate_port(sub(1), Proto::Udp, 5000, 0, &mut events).unwrap();
        assert_eq!(alloc.allocate_port(sub(2), Proto::Udp, 5000, 0, &mut events), Err(NatError::SubscribersFull));
        assert_eq!(alloc.counters().subscribers_full, 1);
    }

    #[test]
    fn paired_pooling_spreads_subscribers_by_hash() {
        let mut alloc = PortAllocator::new(&NatConfig { subscribers_max: 256, ..small_config(8) });
        let mut events = Vec::new();
        let mut used = HashSet::new();
        for i in 0..200 {
            let first = alloc.allocate_port(sub(i), Proto::Udp, 1000, 0, &mut events).unwrap();
            used.insert(first.public_addr);
            for port in 0..3 {
                let lease = alloc.allocate_port(sub(i), Proto::Tcp, port, 0, &mut events).unwrap();
                assert_eq!(lease.public_addr, first.public_addr);
            }
        }
        assert_eq!(used.len(), 8, "every address used");
    }

    #[test]
    fn quarantine_holds_a_released_port_for_the_delay() {
        // One block: fill it so that the only free port is the released one.
        let config = NatConfig { blocks_per_subscriber_max: 1, reuse_delay_ms: 120_000, ..small_config(1) };
        let mut alloc = PortAllocator::new(&config);
        let mut events = Vec::new();
        let leases: Vec<PortLease> =
            (0..64).map(|_| alloc.allocate_port(SUB, Proto::Udp, 3, 0, &mut events).unwrap()).collect();
        let victim = leases[10];
        alloc.release_port(victim, 1_000, &mut events);
        assert_eq!(alloc.ports_quarantined(), 1);
        assert_eq!(
            alloc.allocate_port(SUB, Proto::Udp, victim.port, 1_000, &mut events),
            Err(NatError::SubscriberLimit)
        );
        assert_eq!(
            alloc.allocate_port(SUB, Proto::Udp, victim.port, 120_999, &mut events),
            Err(NatError::SubscriberLimit)
        );
        let again = alloc.allocate_port(SUB, Proto::Udp, victim.port, 121_000, &mut events).unwrap();
        assert_eq!(again.port, victim.port);
        assert_eq!(alloc.ports_quarantined(), 0);
    }

    #[test]
    fn quarantine_holds_a_released_block_for_the_delay() {
        // One address, one block per subscriber, 15 blocks: all taken, then
        // one released: nobody gets it for 120 s.
        let config =
            NatConfig { ports_per_block: 4096, blocks_per_subscriber_max: 1, blocks_max: 64, ..small_config(1) };
        let mut alloc = PortAllocator::new(&config);
        let mut events = Vec::new();
        let leases: Vec<PortLease> =
            (0..15).map(|i| alloc.allocate_port(sub(i), Proto::Tcp, 5000, 0, &mut events).unwrap()).collect();
        alloc.release_port(leases[3], 10_000, &mut events);
        assert_eq!(events.last().unwrap().kind, BlockEventKind::Released);
        assert_eq!(alloc.allocate_port(sub(3), Proto::Tcp, 5000, 10_000, &mut events), Err(NatError::PoolExhausted));
        assert_eq!(alloc.allocate_port(sub(99), Proto::Tcp, 5000, 129_999, &mut events), Err(NatError::PoolExhausted));
        let lease = alloc.allocate_port(sub(99), Proto::Tcp, 5000, 130_000, &mut events).unwrap();
        assert_eq!((lease.public_addr, lease.block), (leases[3].public_addr, leases[3].block));
        assert_eq!((lease.port - 1024) / 4096, (leases[3].port - 1024) / 4096, "the recycled block");
    }

    #[test]
    fn full_port_quarantine_holds_the_port_until_its_block_recycles() {
        let config = NatConfig { blocks_per_subscriber_max: 1, port_quarantine_max: 1, ..small_config(1) };
        let mut alloc = PortAllocator::new(&config);
        let mut events = Vec::new();
        let leases: Vec<PortLease> =
            (0..64).map(|_| alloc.allocate_port(SUB, Proto::Udp, 3, 0, &mut events).unwrap()).collect();
        alloc.release_port(leases[0], 0, &mut events);
        alloc.release_port(leases[1], 0, &mut events);
        assert_eq!(alloc.counters().port_quarantine_overflow, 1);
        // After the delay only leases[0] comes back.
        let back = alloc.allocate_port(SUB, Proto::Udp, leases[1].port, 500_000, &mut events).unwrap();
        assert_eq!(back.port, leases[0].port);
        assert_eq!(alloc.allocate_port(SUB, Proto::Udp, 3, 500_000, &mut events), Err(NatError::SubscriberLimit));
    }

    #[test]
    fn poll_is_bounded() {
        let config = NatConfig { blocks_per_subscriber_max: 1, ..small_config(1) };
        let mut alloc = PortAllocator::new(&config);
        let mut events = Vec::new();
        let leases: Vec<PortLease> =
            (0..20).map(|_| alloc.allocate_port(SUB, Proto::Udp, 3, 0, &mut events).unwrap()).collect();
        for lease in &leases[..19] {
            alloc.release_port(*lease, 0, &mut events);
        }
        assert_eq!(alloc.ports_quarantined(), 19);
        assert_eq!(alloc.poll(119_999, 100), 0);
        assert_eq!(alloc.poll(120_000, 5), 5);
        assert_eq!(alloc.ports_quarantined(), 14);
        assert_eq!(alloc.poll(120_000, 100), 14);
    }

    #[test]
    #[should_panic(expected = "release of a port not in use")]
    fn double_release_panics() {
        let mut alloc = PortAllocator::new(&small_config(1));
        let mut events = Vec::new();
        let a = alloc.allocate_port(SUB, Proto::Udp, 3, 0, &mut events).unwrap();
        let _b = alloc.allocate_port(SUB, Proto::Udp, 3, 0, &mut events).unwrap();
        alloc.release_port(a, 0, &mut events);
        alloc.poll(1_000_000, 10);
        alloc.release_port(a, 0, &mut events);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Allocate { subscriber: u32, proto: usize, port: u16 },
        Release { pick: usize },
        Advance { ms: u64 },
        Poll { max: usize },
    }

    fn arb_op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u32..12, 0usize..3, any::<u16>()).prop_map(|(subscriber, proto, port)| Op::Allocate { subscriber, proto, port }),
            3 => any::<usize>().prop_map(|pick| Op::Release { pick }),
            1 => (0u64..60_000).prop_map(|ms| Op::Advance { ms }),
            1 => (0usize..20).prop_map(|max| Op::Poll { max }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// Random allocate/release/time sequences keep every invariant:
        /// ports in 1024..=65535 and in a block of the subscriber, unique per
        /// (proto, address, port), paired addresses, the block limit, events
        /// that pair up, and no port (or block) handed out again before
        /// `reuse_delay_ms` after its release.
        #[test]
        fn invariants_hold(ops in proptest::collection::vec(arb_op(), 1..400), seed in any::<u64>()) {
            let config = NatConfig {
                blocks_per_subscriber_max: 2,
                blocks_max: 20,
                subscribers_max: 8,
                port_quarantine_max: 64,
                reuse_delay_ms: 120_000,
                random_seed: seed,
                ..small_config(3)
            };
            let mut alloc = PortAllocator::new(&config);
            let mut events = Vec::new();
            let mut now = 0u64;
            let mut live: Vec<(Ipv4Addr, PortLease)> = Vec::new();
            let mut in_use: HashSet<(Proto, Ipv4Addr, u16)> = HashSet::new();
            let mut released_at: HashMap<(Proto, Ipv4Addr, u16), u64> = HashMap::new();
            let mut block_released_at: HashMap<(Ipv4Addr, u16), u64> = HashMap::new();
            let mut open_blocks: HashMap<(Ipv4Addr, u16), Ipv4Addr> = HashMap::new();
            for op in ops {
                match op {
                    Op::Allocate { subscriber, proto, port } => {
                        let s = sub(subscriber);
                        let proto = Proto::ALL[proto];
                        let before = events.len();
                        match alloc.allocate_port(s, proto, port, now, &mut events) {
                            Ok(lease) => {
                                prop_assert!(lease.port >= 1024);
                                let key = (proto, lease.public_addr, lease.port);
                                prop_assert!(in_use.insert(key), "port handed out twice");
                                if let Some(t) = released_at.get(&key) {
                                    prop_assert!(now >= t + 120_000, "port reused after {} ms", now - t);
                                }
                                let block_start = 1024 + (lease.port - 1024) / 64 * 64;
                                prop_assert_eq!(open_blocks.get(&(lease.public_addr, block_start)).copied().or_else(|| {
                                    // allocated just now
                                    events[before..].iter().find(|e| e.port_start == block_start).map(|e| e.subscriber)
                                }), Some(s));
                                for owner in live.iter().filter(|(o, _)| *o == s) {
                                    prop_assert_eq!(owner.1.public_addr, lease.public_addr, "paired pooling");
                                }
                                live.push((s, lease));
                            }
                            Err(e) => prop_assert!(matches!(e, NatError::PoolExhausted | NatError::SubscriberLimit
                                | NatError::SubscribersFull | NatError::BlocksFull), "{e:?}"),
                        }
                        for event in &events[before..] {
                            prop_assert_eq!(event.kind, BlockEventKind::Allocated);
                            let block = (event.public_addr, event.port_start);
                            if let Some(t) = block_released_at.get(&block) {
                                prop_assert!(now >= t + 120_000, "block reused early");
                            }
                            prop_assert!(open_blocks.insert(block, event.subscriber).is_none());
                        }
                    }
                    Op::Release { pick } => {
                        if live.is_empty() { continue; }
                        let (s, lease) = live.swap_remove(pick % live.len());
                        let before = events.len();
                        alloc.release_port(lease, now, &mut events);
                        let key = (lease.proto, lease.public_addr, lease.port);
                        in_use.remove(&key);
                        released_at.insert(key, now);
                        for event in &events[before..] {
                            prop_assert_eq!(event.kind, BlockEventKind::Released);
                            prop_assert_eq!(event.subscriber, s);
                            let block = (event.public_addr, event.port_start);
                            prop_assert_eq!(open_blocks.remove(&block), Some(s));
                            block_released_at.insert(block, now);
                            prop_assert!(!live.iter().any(|(_, l)| l.public_addr == event.public_addr
                                && (event.port_start..=event.port_end).contains(&l.port)), "block released with live ports");
                        }
                    }
                    Op::Advance { ms } => now += ms,
                    Op::Poll { max } => { prop_assert!(alloc.poll(now, max) <= max); }
                }
                // Per-subscriber limit and the allocator's own view.
                let mut per_sub: HashMap<Ipv4Addr, usize> = HashMap::new();
                for subscriber in open_blocks.values() { *per_sub.entry(*subscriber).or_default() += 1; }
                for (s, n) in &per_sub {
                    prop_assert!(*n <= 2);
                    prop_assert_eq!(alloc.subscriber_blocks(*s).count(), *n);
                }
                prop_assert_eq!(alloc.subscribers(), per_sub.len());
                prop_assert_eq!(alloc.blocks_allocated(), open_blocks.len());
            }
        }
    }
}
