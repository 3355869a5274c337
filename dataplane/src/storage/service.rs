//! The storage service on a worker core (issue 5 item 3; the design is
//! `docs/storage-service.md`): requests over IPv6/UDP to a replica address
//! (the node's object prefix plus the object id), served from the
//! [`objstore::Store`] the worker owns, run to completion.
//!
//! * A request packet is **held** (the mbuf itself, in a fixed table) while
//!   its I/O is in flight; the worker polls the store every loop and turns
//!   each completion into the reply, written in place over the held packet
//!   (addresses and ports swapped, Ethernet back to the sender) and sent
//!   out of the port it came in on.
//! * A put carries one fragment (≤ 1 KiB) of a 4 KiB chunk. Fragments are
//!   assembled per (object, version, chunk) in a fixed set of buffers; the
//!   whole chunk is submitted as one durable put, and every fragment of it
//!   is acknowledged only when the store reports the chunk durable. A
//!   fragment of a chunk already stored at that version is acknowledged at
//!   once (retries are harmless).
//! * Nothing waits: a full request table or no free assembly buffer is
//!   answered `busy` at once; a store refusal is answered with its status.
//!
//! Several workers: each owns one store on its own device and serves the
//! objects with `id % workers` equal to its index; a request that reaches
//! another worker is handed over on a per-pair SPSC ring (`worker.rs`).
//!
//! Limits (v1): replies go back to the sender's MAC (no route lookup).

use std::net::Ipv6Addr;

use objstore::{Error as StoreError, Reply, Request, Store, StoreCompletion};

use crate::stats::Counter;
use netwire::storage::{
    self as sh, status, ListEntry, Op, PutHead, StatReply, CHUNK, FRAGMENT, FRAGMENTS_PER_CHUNK, LIST_MAX,
};
use netwire::PacketBuf;
use netwire::{ethernet, ipv4::Protocol, ipv6, udp};

const ETH: usize = ethernet::HEADER_LEN;
const IP6: usize = ipv6::HEADER_LEN;
const UDP: usize = 8;
/// Where the storage header starts in a frame.
const SH: usize = ETH + IP6 + UDP;
/// How long an incomplete chunk waits for its missing fragments.
pub const ASSEMBLY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);
/// Tag bit of a store request that is a chunk put (the low bits name the
/// assembly buffer); others name a held request.
const PUT_TAG: u64 = 1 << 63;

/// Counters of the service (its worker is the only writer).
#[derive(Debug, Default)]
pub struct ServiceCounters {
    /// Requests by operation ([`OPS`] order, [`op_slot`]); a frame that does not parse
    /// counts as `other`.
    pub requests: [Counter; OPS.len()],
    /// Replies by operation and status ([`status_slot`]).
    pub replies: [[Counter; STATUS_SLOTS]; OPS.len()],
    pub bad_requests: Counter,
    pub busy: Counter,
    pub checksum_failures: Counter,
    pub chunks_written: Counter,
    pub bytes_written: Counter,
    pub bytes_read: Counter,
    /// Chunks dropped incomplete after [`ASSEMBLY_TIMEOUT`].
    pub assemblies_expired: Counter,
    /// Put fragments that arrived again (a client's retransmission) while
    /// the first copy is held: freed, the held copy gets the reply.
    pub fragments_duplicate: Counter,
    /// Requests another worker received and handed over (objects this one owns).
    pub handed_over: Counter,
    /// Requests held now (waiting for I/O).
    pub queue_depth: crate::stats::Gauge,
    /// Data blocks ([`objstore::BLOCK_SIZE`] bytes) of the device in use and free.
    pub device_used_blocks: crate::stats::Gauge,
    pub device_free_blocks: crate::stats::Gauge,
    /// Time from a request's arrival to its reply, for the first [`LATENCY_OPS`] operations
    /// of [`OPS`] (the others are answered at once).
    pub latency: [LatencyHistogram; LATENCY_OPS],
}

impl ServiceCounters {
    /// Counts a reply to a request of `op` with `status`.
    #[inline]
    pub fn reply(&self, op: u8, status: u16) {
        self.replies[op_slot(Op(op))][status_slot(status)].inc();
    }
}

/// The operation labels, in counter order: [`netwire::storage::Op::name`] of every op.
pub const OPS: [&str; 7] = ["put", "get", "stat", "delete", "list", "probe", "other"];

/// The slot of `other` in [`OPS`]: ops this node does not know, and frames that do not parse.
pub const OTHER_OP: usize = 6;

/// Operations with a latency histogram: `OPS[..LATENCY_OPS]` (put, get, stat, delete, list).
pub const LATENCY_OPS: usize = 5;

/// The counter slot of `op` (of a request or its reply) in [`OPS`].
#[inline]
pub fn op_slot(op: Op) -> usize {
    match op.request() {
        Op::PUT_CHUNK => 0,
        Op::GET_CHUNK => 1,
        Op::STAT => 2,
        Op::DELETE => 3,
        Op::LIST => 4,
        Op::PROBE => 5,
        _ => OTHER_OP,
    }
}

/// Reply status slots: every code of [`status::ALL`] by its value, then one for any other.
pub const STATUS_SLOTS: usize = status::ALL.len() + 1;

/// The counter slot of a reply status; its label is `status::name(code)` (`unknown` for
/// the last slot).
#[inline]
pub fn status_slot(code: u16) -> usize {
    (code as usize).min(status::ALL.len())
}

/// Upper bounds (µs) of the latency buckets; the last bucket is +Inf.
pub const LATENCY_BOUNDS_US: [u64; 11] = [50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000];

/// A latency histogram (single writer): per-bucket counts (not cumulative),
/// the sum and the count.
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    pub buckets: [Counter; 12],
    pub sum_us: Counter,
    pub count: Counter,
}

impl LatencyHistogram {
    pub fn observe(&self, us: u64) {
        let i = LATENCY_BOUNDS_US.iter().position(|&b| us <= b).unwrap_or(LATENCY_BOUNDS_US.len());
        self.buckets[i].inc();
        self.sum_us.add(us);
        self.count.inc();
    }
}

enum Waiting {
    Get {
        frag_off: usize,
        len: usize,
    },
    Stat,
    Delete,
    List,
    /// A put fragment waiting for its chunk.
    Put,
}

struct Held<P> {
    pkt: P,
    object: u64,
    waiting: Waiting,
    arrived: std::time::Instant,
}

struct Assembly {
    key: Option<(u64, u64, u32)>,
    size: u64,
    buf: Vec<u8>,
    have: u8,
    need: u8,
    submitted: bool,
    /// The store refused the chunk: its fragments get this status at the next poll.
    failed: Option<u16>,
    /// When the first fragment came: an assembly that stays incomplete for
    /// `ASSEMBLY_TIMEOUT` is dropped (its fragments unanswered: the client
    /// retries the whole chunk).
    started: std::time::Instant,
    /// Held request slots acknowledged when the chunk is durable.
    fragments: Vec<usize>,
}

/// The service. See the module doc.
pub struct ObjectService<P: PacketBuf> {
    store: Store,
    udp_port: u16,
    held: Vec<Option<Held<P>>>,
    free: Vec<usize>,
    assemblies: Vec<Assembly>,
    completions: Vec<StoreCompletion>,
    pub counters: std::sync::Arc<ServiceCounters>,
    /// Requests held now, published for steering's `sr-c` decisions
    /// ([`LoadView`]).
    load: std::sync::Arc<crate::stats::Gauge>,
}

/// A parsed request.
struct Parsed {
    dst: Ipv6Addr,
    hdr: sh::Repr,
}

impl<P: PacketBuf> ObjectService<P> {
    /// A service over `store`, holding at most `requests_max` packets and
    /// assembling at most `assemblies_max` chunks at once.
    pub fn new(store: Store, udp_port: u16, requests_max: usize, assemblies_max: usize) -> ObjectService<P> {
        ObjectService {
            store,
            udp_port,
            held: (0..requests_max).map(|_| None).collect(),
            free: (0..requests_max).rev().collect(),
            assemblies: (0..assemblies_max)
                .map(|_| Assembly {
                    key: None,
                    size: 0,
                    buf: vec![0; CHUNK],
                    have: 0,
                    need: 0,
                    submitted: false,
                    failed: None,
                    started: std::time::Instant::now(),
                    fragments: Vec::with_capacity(2 * FRAGMENTS_PER_CHUNK),
                })
                .collect(),
            completions: Vec::with_capacity(64),
            counters: std::sync::Arc::new(ServiceCounters::default()),
            load: std::sync::Arc::new(crate::stats::Gauge::default()),
        }
    }

    /// The gauge of held requests (for [`LoadView`]).
    pub fn load(&self) -> std::sync::Arc<crate::stats::Gauge> {
        self.load.clone()
    }

    pub fn udp_port(&self) -> u16 {
        self.udp_port
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Requests held now (waiting for I/O): the service's queue depth.
    pub fn queue_depth(&self) -> usize {
        self.held.len() - self.free.len()
    }

    /// Takes a request frame (IPv6, UDP to the service port, to one of our
    /// replica addresses). Returns the frame back when it is answered at
    /// once (a reply written in place, to send out of its port), `None`
    /// when it is held or dropped (a malformed request is counted and
    /// dropped: without a valid header there is no one to answer).
    pub fn request(&mut self, mut pkt: P) -> Option<P> {
        let Some(p) = parse(pkt.data(), self.udp_port) else {
            self.counters.requests[OTHER_OP].inc();
            self.counters.bad_requests.inc();
            return None;
        };
        self.counters.requests[op_slot(Op(p.hdr.op))].inc();
        let object = object_of(p.dst);
        let hdr = p.hdr;
        let answer_now = |svc: &mut Self, pkt: &mut P, status: u16, body: &[u8]| {
            if status == status::BUSY {
                svc.counters.busy.inc();
            }
            svc.counters.reply(hdr.op, status);
            reply_in_place(pkt, &hdr, status, body)
        };
        if hdr.object_id != object {
            return answer_now(self, &mut pkt, status::BAD_REQUEST, &[]).then_some(pkt);
        }
        let Some(slot) = self.free.pop() else {
            return answer_now(self, &mut pkt, status::BUSY, &[]).then_some(pkt);
        };
        let id = u128::from(object);
        let (req, waiting) = match Op(hdr.op) {
            Op::GET_CHUNK => {
                let off = hdr.offset;
                if off % FRAGMENT as u64 != 0 || hdr.length as usize > FRAGMENT {
                    self.free.push(slot);
                    return answer_now(self, &mut pkt, status::BAD_REQUEST, &[]).then_some(pkt);
                }
                let chunk = (off / CHUNK as u64) as u32;
                let frag_off = (off % CHUNK as u64) as usize;
                (Request::Get { object: id, chunk }, Waiting::Get { frag_off, len: hdr.length as usize })
            }
            Op::STAT => (Request::Stat { object: id }, Waiting::Stat),
            Op::DELETE => (Request::Delete { object: id }, Waiting::Delete),
            Op::LIST => (
                Request::List {
                    after: (hdr.flags & sh::FLAG_AFTER != 0).then_some(id),
                    limit: (hdr.length as usize).clamp(1, LIST_MAX),
                },
                Waiting::List,
            ),
            Op::PUT_CHUNK => {
                self.free.push(slot);
                return self.put_fragment(pkt, &p, object);
            }
            Op::PROBE => {
                // Steering's probe: who accepted (this replica address) and how loaded.
                self.free.push(slot);
                let mut body = [0u8; sh::ProbeReply::LEN];
                let depth = self.queue_depth() as u32;
                let _ = sh::ProbeReply { accepted_by: p.dst, queue_depth: depth }.emit(&mut body);
                return answer_now(self, &mut pkt, status::OK, &body).then_some(pkt);
            }
            _ => {
                self.free.push(slot);
                return answer_now(self, &mut pkt, status::UNSUPPORTED, &[]).then_some(pkt);
            }
        };
        match self.store.submit(req, slot as u64) {
            Ok(()) => {
                self.held[slot] = Some(Held { pkt, object, waiting, arrived: std::time::Instant::now() });
                None
            }
            Err(e) => {
                self.free.push(slot);
                let st = status_of(&e);
                answer_now(self, &mut pkt, st, &[]).then_some(pkt)
            }
        }
    }

    fn put_fragment(&mut self, mut pkt: P, p: &Parsed, object: u64) -> Option<P> {
        let hdr = p.hdr;
        let data_start = SH + sh::HEADER_LEN;
        let parsed = PutHead::parse(&pkt.data()[data_start.min(pkt.data().len())..])
            .ok()
            .map(|(head, fragment)| (head.size, head.version, fragment.len()));
        let bad = |svc: &mut Self, pkt: &mut P, st: u16| {
            svc.counters.reply(hdr.op, st);
            if st == status::BAD_REQUEST {
                svc.counters.bad_requests.inc();
            }
            if st == status::BUSY {
                svc.counters.busy.inc();
            }
            reply_in_place(pkt, &hdr, st, &[])
        };
        let Some((size, version, avail)) = parsed else {
            return bad(self, &mut pkt, status::BAD_REQUEST).then_some(pkt);
        };
        let off = hdr.offset;
        let len = hdr.length as usize;
        if sh::fragment_len(size, off) != Some(len) || avail < len {
            return bad(self, &mut pkt, status::BAD_REQUEST).then_some(pkt);
        }
        let chunk = (off / CHUNK as u64) as u32;
        let frag = ((off % CHUNK as u64) as usize) / FRAGMENT;
        let chunk_len = objstore::index::chunk_len(size, chunk);
        let need = chunk_len.div_ceil(FRAGMENT).max(1) as u8;
        // Already durable at this version: acknowledge at once.
        if let Some(meta) = self.store.index().get(u128::from(object)) {
            if meta.version == version
                && meta.size == size
                && meta.chunks.get(chunk as usize).is_some_and(|c| c.lba != 0)
            {
                self.counters.reply(hdr.op, status::OK);
                return reply_in_place(&mut pkt, &hdr, status::OK, &[]).then_some(pkt);
            }
            if meta.version > version {
                return bad(self, &mut pkt, status::VERSION).then_some(pkt);
            }
        }
        let key = (object, version, chunk);
        let a = match self.assemblies.iter().position(|a| a.key == Some(key)) {
            Some(a) => a,
            None => {
                let Some(a) = self.assemblies.iter().position(|a| a.key.is_none()) else {
                    return bad(self, &mut pkt, status::BUSY).then_some(pkt);
                };
                let asm = &mut self.assemblies[a];
                asm.key = Some(key);
                asm.size = size;
                asm.have = 0;
                asm.need = need;
                asm.submitted = false;
                asm.failed = None;
                asm.started = std::time::Instant::now();
                asm.fragments.clear();
                a
            }
        };
        if self.assemblies[a].have & (1 << frag) != 0 {
            // A retransmission of a fragment held here (the store was slower than the
            // client's timeout): the held copy, with the same request id, gets the
            // reply when the chunk is durable. Holding both would fill the assembly
            // and answer busy.
            self.counters.fragments_duplicate.inc();
            return None; // the duplicate is freed here
        }
        let Some(slot) = self.free.pop() else {
            return bad(self, &mut pkt, status::BUSY).then_some(pkt);
        };
        if self.assemblies[a].fragments.len() == self.assemblies[a].fragments.capacity() {
            self.free.push(slot);
            return bad(self, &mut pkt, status::BUSY).then_some(pkt);
        }
        {
            let asm = &mut self.assemblies[a];
            let src = &pkt.data()[data_start + PutHead::LEN..data_start + PutHead::LEN + len];
            asm.buf[frag * FRAGMENT..frag * FRAGMENT + len].copy_from_slice(src);
            asm.have |= 1 << frag;
            asm.fragments.push(slot);
        }
        self.held[slot] = Some(Held { pkt, object, waiting: Waiting::Put, arrived: std::time::Instant::now() });
        self.submit_ready(a);
        None
    }

    /// Submits assembly `a` if all its fragments are in and it is not yet submitted.
    fn submit_ready(&mut self, a: usize) {
        let asm = &mut self.assemblies[a];
        let full = (1u16 << asm.need) - 1;
        if asm.submitted || asm.failed.is_some() || u16::from(asm.have) != full {
            return;
        }
        let Some((object, version, chunk)) = asm.key else { return };
        let len = objstore::index::chunk_len(asm.size, chunk);
        let req = Request::Put { object: u128::from(object), chunk, data: &asm.buf[..len], size: asm.size, version };
        match self.store.submit(req, PUT_TAG | a as u64) {
            Ok(()) => asm.submitted = true,
            // Queue full: retried from `poll`. Anything else fails the chunk.
            Err(StoreError::Busy) => {}
            Err(e) => asm.failed = Some(status_of(&e)),
        }
    }

    /// Acknowledges (with `st`) every fragment of assembly `a` and frees it;
    /// the replies go to `out` (no allocation: `out` has the worker's room).
    fn finish_chunk(&mut self, a: usize, st: u16, out: &mut Vec<P>) {
        while let Some(slot) = self.assemblies[a].fragments.pop() {
            if let Some(mut h) = self.held[slot].take() {
                self.free.push(slot);
                self.counters.latency[0].observe(h.arrived.elapsed().as_micros() as u64);
                let hdr = header_of(h.pkt.data());
                self.counters.reply(hdr.op, st);
                if reply_in_place(&mut h.pkt, &hdr, st, &[]) {
                    out.push(h.pkt);
                }
            }
        }
        self.assemblies[a].key = None;
    }

    /// Polls the store; every finished request's reply goes to `out` (to
    /// send out of the frame's port). Call once per worker loop.
    pub fn poll(&mut self, out: &mut Vec<P>) -> usize {
        self.load.set(self.queue_depth() as u64);
        self.counters.queue_depth.set(self.queue_depth() as u64);
        self.counters.device_used_blocks.set(self.store.used_blocks());
        self.counters.device_free_blocks.set(self.store.free_blocks());
        self.poll_assemblies(out);
        self.completions.clear();
        let mut completions = std::mem::take(&mut self.completions);
        let n = self.store.poll(&mut completions);
        for c in completions.drain(..) {
            if c.tag & PUT_TAG != 0 {
                self.chunk_done(c, out);
            } else {
                self.request_done(c, out);
            }
        }
        self.completions = completions;
        n
    }

    /// Submits assemblies that became complete, fails those the store
    /// refused, and drops those whose fragments did not all come in time.
    fn poll_assemblies(&mut self, out: &mut Vec<P>) {
        for a in 0..self.assemblies.len() {
            if self.assemblies[a].key.is_some() && !self.assemblies[a].submitted {
                self.submit_ready(a);
            }
            if let Some(st) = self.assemblies[a].failed.take() {
                self.finish_chunk(a, st, out);
            }
            let asm = &self.assemblies[a];
            if asm.key.is_some() && !asm.submitted && asm.started.elapsed() > ASSEMBLY_TIMEOUT {
                self.counters.assemblies_expired.inc();
                for slot in self.assemblies[a].fragments.drain(..) {
                    self.held[slot] = None; // the packet is freed unanswered
                    self.free.push(slot);
                }
                self.assemblies[a].key = None;
            }
        }
    }

    /// A chunk put completed: acknowledge every fragment of its assembly.
    fn chunk_done(&mut self, c: StoreCompletion, out: &mut Vec<P>) {
        let a = (c.tag & !PUT_TAG) as usize;
        let st = match &c.result {
            Ok(_) => {
                self.counters.chunks_written.inc();
                let len = self.assemblies[a]
                    .key
                    .map_or(0, |(_, _, ch)| objstore::index::chunk_len(self.assemblies[a].size, ch));
                self.counters.bytes_written.add(len as u64);
                status::OK
            }
            Err(e) => status_of(e),
        };
        self.finish_chunk(a, st, out);
    }

    /// A held request's I/O completed: its reply, written in place.
    fn request_done(&mut self, c: StoreCompletion, out: &mut Vec<P>) {
        let slot = c.tag as usize;
        let Some(mut h) = self.held.get_mut(slot).and_then(Option::take) else { return };
        self.free.push(slot);
        let hdr = header_of(h.pkt.data());
        let op_index = match h.waiting {
            Waiting::Put => 0,
            Waiting::Get { .. } => 1,
            Waiting::Stat => 2,
            Waiting::Delete => 3,
            Waiting::List => 4,
        };
        self.counters.latency[op_index].observe(h.arrived.elapsed().as_micros() as u64);
        let mut body = [0u8; PutHead::LEN + FRAGMENT];
        let (st, len) = match (c.result, &h.waiting) {
            (Ok(Reply::Get(data)), Waiting::Get { frag_off, len }) => {
                let (size, version) =
                    self.store.index().get(u128::from(h.object)).map_or((0, 0), |m| (m.size, m.version));
                let end = (*frag_off + *len).min(data.len());
                let part = &data[(*frag_off).min(end)..end];
                let head = PutHead { size, version }.emit(&mut body).unwrap_or(0);
                body[head..head + part.len()].copy_from_slice(part);
                self.counters.bytes_read.add(part.len() as u64);
                (status::OK, head + part.len())
            }
            (Ok(Reply::Stat(info)), Waiting::Stat) => {
                let reply = StatReply {
                    size: info.size,
                    version: info.version,
                    chunks: info.chunks,
                    complete: info.present == info.chunks,
                };
                (status::OK, reply.emit(&mut body).unwrap_or(0))
            }
            (Ok(Reply::Delete { .. }), Waiting::Delete) => (status::OK, 0),
            (Ok(Reply::List(items)), Waiting::List) => {
                let entries =
                    items.iter().map(|it| ListEntry { id: it.object as u64, size: it.size, version: it.version });
                (status::OK, sh::emit_list(entries, &mut body).unwrap_or(0))
            }
            (Err(e), _) => {
                if matches!(e, StoreError::Checksum { .. }) {
                    self.counters.checksum_failures.inc();
                }
                (status_of(&e), 0)
            }
            _ => (status::IO, 0),
        };
        self.counters.reply(hdr.op, st);
        if reply_in_place(&mut h.pkt, &hdr, st, &body[..len]) {
            out.push(h.pkt);
        }
    }
}

/// The worker that owns a storage request frame's object (objects are
/// sharded `id % workers`, the id being the low 64 bits of the replica
/// address the frame is sent to); `None` for a frame too short to say.
pub fn shard_of(frame: &[u8], workers: usize) -> Option<usize> {
    let id = frame.get(ETH + 32..ETH + 40)?;
    let id = u64::from_be_bytes(id.try_into().ok()?);
    Some((id % workers.max(1) as u64) as usize)
}

/// The object id of a replica address: its low 64 bits.
pub fn object_of(addr: Ipv6Addr) -> u64 {
    (u128::from(addr) & u128::from(u64::MAX)) as u64
}

fn status_of(e: &StoreError) -> u16 {
    match e {
        StoreError::NotFound(_) | StoreError::ChunkMissing { .. } => status::NOT_FOUND,
        StoreError::Checksum { .. } => status::CHECKSUM,
        StoreError::NoSpace | StoreError::ObjectTableFull(_) => status::NO_SPACE,
        StoreError::StaleVersion { .. } => status::VERSION,
        StoreError::Busy => status::BUSY,
        StoreError::ChunkOutOfRange { .. }
        | StoreError::BadLength { .. }
        | StoreError::SizeMismatch { .. }
        | StoreError::TooLarge { .. } => status::BAD_REQUEST,
        _ => status::IO,
    }
}

/// The storage header of a held request frame (validated when it came in).
fn header_of(frame: &[u8]) -> sh::Repr {
    sh::Repr::parse(&sh::Packet::new_unchecked(&frame[SH..]))
}

/// Validates an IPv6/UDP request frame to `port` (no extension headers; UDP
/// checksum verified) and reads its storage header.
fn parse(frame: &[u8], port: u16) -> Option<Parsed> {
    if frame.len() < SH + sh::HEADER_LEN || frame[12..14] != [0x86, 0xdd] {
        return None;
    }
    let ip = ipv6::Packet::new_checked(&frame[ETH..]).ok()?;
    if ip.next_header() != Protocol::UDP {
        return None;
    }
    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    let udp_len = usize::from(ip.payload_len());
    let udp = frame.get(ETH + IP6..ETH + IP6 + udp_len)?;
    if udp_len < UDP || usize::from(u16::from_be_bytes([udp[4], udp[5]])) != udp_len {
        return None;
    }
    if u16::from_be_bytes([udp[2], udp[3]]) != port {
        return None;
    }
    if !udp::verify_v6(udp, src, dst) {
        return None;
    }
    let req = sh::Packet::new_checked(&udp[UDP..]).ok()?;
    let hdr = sh::Repr::parse(&req);
    if Op(hdr.op).is_reply() {
        return None;
    }
    Some(Parsed { dst, hdr })
}

/// Rewrites a (validated) request frame into its reply: Ethernet back to
/// the sender, IPv6 from the replica address to the client, UDP ports
/// swapped, the reply header with `status`, then `body`. False if the frame
/// cannot hold it.
fn reply_in_place<P: PacketBuf>(pkt: &mut P, req: &sh::Repr, status: u16, body: &[u8]) -> bool {
    let Some(p) = parse_addrs(pkt.data()) else { return false };
    let udp_len = UDP + sh::HEADER_LEN + body.len();
    let total = ETH + IP6 + udp_len;
    if !pkt.set_len(total.max(60)) {
        return false;
    }
    let data = pkt.data_mut();
    data[total..].fill(0);
    // Ethernet: back to the sender.
    let mut macs = [0u8; 12];
    macs[..6].copy_from_slice(&data[6..12]);
    macs[6..].copy_from_slice(&data[0..6]);
    data[..12].copy_from_slice(&macs);
    if ipv6::emit_header(&mut data[ETH..], p.1, p.0, Protocol::UDP, 64, udp_len).is_err() {
        return false;
    }
    let datagram = &mut data[ETH + IP6..total];
    udp::emit_header(datagram, p.3, p.2);
    let hdr = sh::Repr { op: Op(req.op).reply().0, status, length: body.len() as u32, ..*req };
    if hdr.emit(&mut datagram[UDP..]).is_err() {
        return false;
    }
    datagram[UDP + sh::HEADER_LEN..].copy_from_slice(body);
    udp::fill_checksum_v6(datagram, p.1, p.0);
    true
}

/// (client address, replica address, client port, service port) of a request frame.
fn parse_addrs(frame: &[u8]) -> Option<(Ipv6Addr, Ipv6Addr, u16, u16)> {
    let ip = ipv6::Packet::new_checked(frame.get(ETH..)?).ok()?;
    let udp = frame.get(ETH + IP6..ETH + IP6 + UDP)?;
    Some((ip.src_addr(), ip.dst_addr(), u16::from_be_bytes([udp[0], udp[1]]), u16::from_be_bytes([udp[2], udp[3]])))
}

#[cfg(test)]
#[path = "service_tests.rs"]
mod tests;
