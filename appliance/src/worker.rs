//! The poll-mode worker: one per worker lcore, run to completion.
//!
//! Each loop polls, in turn: its rx queues (every packet through the
//! [`Pipeline`], then to the transmit burst of its egress port, the punt
//! burst for the control core, a hand-off, or freed with a counted reason),
//! the NAT mapping core's answers, the packets the control core injected,
//! the storage requests other workers handed over and the storage I/O that
//! completed; then it flushes its bursts. No allocation, lock or system
//! call happens in the loop; the only shared memory written is the worker's
//! own counter block and the SPSC rings.
//!
//! Idle back-off: after `empty_polls` consecutive loops with no packet the
//! worker sleeps `sleep_us`, so several appliance processes can share the
//! small test machines; on bare metal it is configured off and the loop spins.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dataplane::nat::fast::NatWorker;
use dataplane::nat::msg::{self, Answer, ANSWER_LEN, TOUCHES_PER_REPORT, TOUCH_LEN};
use dataplane::pipeline::{HandOff, PacketFlags, Pipeline, Verdict, WorkerCtx};

use crate::rcu::Reader;
use crate::trace::{TraceControl, TRACE_HEAD};
use dataplane::stats::{punt_tag, Counter, DropCounters, DropReason, HandOffCounters, HandOffKind, PuntCounters};
use dataplane::storage::service::{shard_of, ObjectService};
use rte::{Burst, Mbuf, Mempool, RingConsumer, RingProducer, RxQueue, TxQueue, BURST_MAX};

use crate::config::IdleBackoff;

/// Octets of an Ethernet header (the IPv4 packet of an answered frame follows it).
const ETH_HEADER_LEN: usize = 14;
use crate::natcore::NatClock;

/// Counters of one (port, queue).
#[derive(Debug, Default)]
pub struct QueueCounters {
    /// Index of the port in the config.
    pub port: u16,
    pub queue: u16,
    pub packets: Counter,
    pub bytes: Counter,
}

/// The counter block of one worker (it is the only writer).
#[derive(Debug, Default)]
#[repr(align(64))]
pub struct WorkerCounters {
    pub lcore: u32,
    /// One per rx queue the worker polls.
    pub rx: Vec<QueueCounters>,
    /// One per port (the worker's tx queue on it).
    pub tx: Vec<QueueCounters>,
    pub drops: DropCounters,
    pub punts: PuntCounters,
    pub handoffs: HandOffCounters,
    /// Packets the control core handed over for transmission.
    pub injected: Counter,
    /// TSC cycles spent in loops that found work / no work (sleeps included).
    pub busy_cycles: Counter,
    pub idle_cycles: Counter,
    pub idle_sleeps: Counter,
}

/// An rx queue with the config index of its port.
pub struct RxBinding {
    pub port: u16,
    pub queue: RxQueue,
}

/// Everything one worker owns.
pub struct Worker {
    /// The tables, republished at run time (see [`crate::rcu`]).
    pub pipeline: Reader<Pipeline>,
    /// This worker's index (trace and capture buffers).
    pub index: usize,
    pub trace: Arc<TraceControl>,
    pub rx: Vec<RxBinding>,
    /// Indexed by the config index of the port.
    pub tx: Vec<TxQueue>,
    pub punt: RingProducer,
    pub inject: RingConsumer,
    pub counters: Arc<WorkerCounters>,
    pub stop: Arc<AtomicBool>,
    pub burst_size: usize,
    pub idle: IdleBackoff,
    /// Per-worker pipeline context (SID counters, local service, NAT cache).
    pub ctx: WorkerCtx,
    /// The rings to and from the NAT mapping core (with NAT on).
    pub nat: Option<NatLink>,
    /// The object storage service (with `storage:` configured).
    pub storage: Option<StorageLink>,
}

/// A worker's side of the NAT mapping core: held packets and activity
/// reports go out on `requests`, translated packets come back on `answers`.
pub struct NatLink {
    pub requests: RingProducer,
    pub answers: RingConsumer,
    /// Where activity reports are allocated from.
    pub pool: Mempool,
    pub clock: NatClock,
    /// The mapping core's flush epoch (see `natcore::MapperCore::flush_epoch`).
    pub flush_epoch: Arc<std::sync::atomic::AtomicU64>,
    /// NAT'd fragments waiting for their datagram's first fragment, by the
    /// slot the worker's fragment table gave them (`nat.fragments.held_max`).
    pub held: Vec<Option<Mbuf>>,
}

/// A worker's storage service and its hand-over rings: objects are sharded
/// over the workers (`id % workers`); a request for another worker's object
/// goes to it on `out[owner]`, and `inbound` brings the others' requests.
pub struct StorageLink {
    pub service: ObjectService<Mbuf>,
    /// This worker's index among the storage workers.
    pub index: usize,
    /// A ring to each other worker (`None` for itself).
    pub out: Vec<Option<RingProducer>>,
    pub inbound: Vec<RingConsumer>,
}

/// The worker's output bursts and scratch space (allocated once, at start).
struct Bursts {
    /// One per port.
    tx: Vec<Burst>,
    punt: Burst,
    nat: Burst,
    /// Storage replies of a poll (capacity reserved at start).
    storage_replies: Vec<Mbuf>,
}

impl Worker {
    /// The poll loop; returns when `stop` is set.
    pub fn run(mut self) -> i32 {
        let mut b = Bursts {
            tx: (0..self.tx.len()).map(|_| Burst::new()).collect(),
            punt: Burst::new(),
            nat: Burst::new(),
            storage_replies: Vec::with_capacity(1024),
        };
        // Received or dequeued packets being processed.
        let mut input = Burst::new();
        let burst_size = self.burst_size.clamp(1, BURST_MAX);
        let mut empty_polls: u32 = 0;
        let mut t_prev = rte::tsc();
        while !self.stop.load(Ordering::Relaxed) {
            // Quiescent point: no packet in flight, no reference into the tables.
            self.pipeline.refresh();
            if let (Some(link), Some(nw)) = (&self.nat, self.ctx.nat.as_deref_mut()) {
                nw.advance(link.clock.now_ms(), link.flush_epoch.load(Ordering::Acquire));
            }
            let mut work = self.poll_rx(&mut input, &mut b, burst_size);
            work += self.poll_nat_answers(&mut input, &mut b, burst_size);
            work += self.poll_fragments(&mut b);
            work += self.poll_inject(&mut input, &mut b, burst_size);
            work += self.poll_storage(&mut input, &mut b, burst_size);
            self.flush(&mut b, work);
            t_prev = self.account(work, &mut empty_polls, t_prev);
        }
        // Hand nothing back: queued packets are freed when the bursts drop.
        for p in 0..b.tx.len() {
            flush_tx(&mut b.tx[p], &mut self.tx[p], &self.counters, p);
        }
        0
    }

    /// Receives a burst from every rx queue and gives each packet its verdict.
    #[inline]
    fn poll_rx(&mut self, input: &mut Burst, b: &mut Bursts, burst_size: usize) -> usize {
        let mut work = 0;
        for ri in 0..self.rx.len() {
            let port = self.rx[ri].port;
            let n = self.rx[ri].queue.rx_burst(input, burst_size);
            if n == 0 {
                continue;
            }
            work += n;
            let rxc = &self.counters.rx[ri];
            rxc.packets.add(n as u64);
            rxc.bytes.add(input.bytes());
            if self.ctx.nat.is_some() {
                let pipeline = self.pipeline.get();
                for m in input.as_slice() {
                    pipeline.nat_prefetch(m.data(), port, &self.ctx);
                }
            }
            if self.trace.capturing() {
                self.trace.capture_burst(self.index, port, input.as_slice().iter().map(|m| m.data()));
            }
            let tracing = self.trace.armed(self.index) > 0;
            for mut m in input.drain() {
                m.set_port(port);
                if !m.is_contiguous() {
                    self.counters.drops.inc(DropReason::MultiSegment);
                    continue;
                }
                if tracing {
                    self.traced(m, port, b);
                    continue;
                }
                let v = self.pipeline.get().process(&mut m, port, &mut self.ctx);
                self.dispatch(b, v, m);
            }
        }
        work
    }

    /// Answers of the NAT mapping core: installs their cache entries, then
    /// routes the (translated) packets; drops the entries an invalidation
    /// names (NAT cluster).
    #[inline]
    fn poll_nat_answers(&mut self, input: &mut Burst, b: &mut Bursts, burst_size: usize) -> usize {
        let Some(link) = self.nat.as_mut() else { return 0 };
        let n = link.answers.dequeue_burst(input, burst_size);
        for mut m in input.drain() {
            if m.tag() == msg::TAG_INVALIDATE {
                // NAT cluster: the shard's owner does not know these entries.
                if let Some(nw) = self.ctx.nat.as_deref_mut() {
                    for key in msg::decode_invalidations(m.data()) {
                        nw.cache.remove(key);
                    }
                }
                continue;
            }
            let Some(answer) = Answer::decode(m.data()) else {
                self.counters.drops.inc(DropReason::NatBadAnswer);
                continue;
            };
            m.adj(ANSWER_LEN);
            if let Some(nw) = self.ctx.nat.as_deref_mut() {
                nw.install_for(&answer, m.data().get(ETH_HEADER_LEN..).unwrap_or_default());
            }
            let port = m.port();
            let v = self.pipeline.get().resume(&mut m, port, PacketFlags::NAT_DONE, &mut self.ctx);
            self.dispatch(b, v, m);
        }
        n
    }

    /// NAT'd fragments: those whose first fragment has been translated
    /// since they were held go through the pipeline again; those that
    /// waited `nat.fragments.timeout_ms` for it are dropped.
    #[inline]
    fn poll_fragments(&mut self, b: &mut Bursts) -> usize {
        let (Some(link), Some(nw)) = (self.nat.as_mut(), self.ctx.nat.as_deref_mut()) else { return 0 };
        while let Some(slot) = nw.frags.pop_expired() {
            if link.held.get_mut(usize::from(slot)).and_then(Option::take).is_some() {
                self.counters.drops.inc(DropReason::NatFragmentTimeout);
            }
        }
        let mut work = 0;
        while let (Some(link), Some(nw)) = (self.nat.as_mut(), self.ctx.nat.as_deref_mut()) {
            let Some(slot) = nw.frags.pop_released() else { break };
            let Some(mut m) = link.held.get_mut(usize::from(slot)).and_then(Option::take) else { continue };
            work += 1;
            let port = m.port();
            let v = self.pipeline.get().resume(&mut m, port, PacketFlags::NONE, &mut self.ctx);
            self.dispatch(b, v, m);
        }
        work
    }

    /// Packets the control core built or released (ARP/ND answers, ICMP
    /// errors, packets held for resolution): out of the port set in them.
    #[inline]
    fn poll_inject(&mut self, input: &mut Burst, b: &mut Bursts, burst_size: usize) -> usize {
        let n = self.inject.dequeue_burst(input, burst_size);
        if n == 0 {
            return 0;
        }
        self.counters.injected.add(n as u64);
        for m in input.drain() {
            let port = m.port();
            if usize::from(port) < self.tx.len() {
                push_tx(&mut b.tx, &mut self.tx, &self.counters, port, m);
            } else {
                self.counters.drops.inc(DropReason::EthNotForUs);
            }
        }
        n
    }

    /// Storage requests other workers handed over, then the storage I/O that
    /// completed: their replies go out.
    #[inline]
    fn poll_storage(&mut self, input: &mut Burst, b: &mut Bursts, burst_size: usize) -> usize {
        let Some(st) = self.storage.as_mut() else { return 0 };
        let mut work = 0;
        for ring in st.inbound.iter_mut() {
            let n = ring.dequeue_burst(input, burst_size);
            work += n;
            st.service.counters.handed_over.add(n as u64);
            for m in input.drain() {
                if let Some(reply) = st.service.request(m) {
                    let port = reply.port();
                    push_tx(&mut b.tx, &mut self.tx, &self.counters, port, reply);
                }
            }
        }
        st.service.poll(&mut b.storage_replies);
        work += b.storage_replies.len();
        for m in b.storage_replies.drain(..) {
            let port = m.port();
            push_tx(&mut b.tx, &mut self.tx, &self.counters, port, m);
        }
        work
    }

    /// Sends what the loop queued: punts, NAT requests and activity reports,
    /// transmit bursts.
    #[inline]
    fn flush(&mut self, b: &mut Bursts, work: usize) {
        let c = &self.counters;
        flush_ring(&mut self.punt, &mut b.punt, &c.drops, DropReason::PuntRingFull);
        if let Some(link) = self.nat.as_mut() {
            flush_ring(&mut link.requests, &mut b.nat, &c.drops, DropReason::NatRingFull);
            if let Some(nw) = self.ctx.nat.as_deref_mut() {
                send_reports(link, nw, c);
                if work > 0 {
                    nw.publish();
                }
            }
        }
        for (p, (buf, txq)) in b.tx.iter_mut().zip(self.tx.iter_mut()).enumerate() {
            flush_tx(buf, txq, c, p);
        }
    }

    /// Busy/idle cycle accounting and the idle back-off; returns the new
    /// start of the next loop.
    #[inline]
    fn account(&self, work: usize, empty_polls: &mut u32, t_prev: u64) -> u64 {
        let c = &self.counters;
        let t_now = rte::tsc();
        if work > 0 {
            *empty_polls = 0;
            c.busy_cycles.add(t_now - t_prev);
            return t_now;
        }
        *empty_polls = empty_polls.saturating_add(1);
        if self.idle.enabled && *empty_polls >= self.idle.empty_polls {
            std::thread::sleep(Duration::from_micros(u64::from(self.idle.sleep_us)));
            c.idle_sleeps.inc();
        }
        let t_after = rte::tsc();
        c.idle_cycles.add(t_after - t_prev);
        t_after
    }

    /// A packet `trace add` asked for: its headers as received, then its
    /// path through the stages and its verdict, are recorded.
    #[cold]
    fn traced(&mut self, mut m: Mbuf, port: u16, b: &mut Bursts) {
        let mut head = [0u8; TRACE_HEAD];
        let n = m.data().len().min(TRACE_HEAD);
        head[..n].copy_from_slice(&m.data()[..n]);
        let len = m.data().len();
        let v = self.pipeline.get().process(&mut m, port, &mut self.ctx);
        self.trace.record(self.index, port, &head[..n], len, &self.ctx.meta, v);
        self.dispatch(b, v, m);
    }

    /// Sends a packet where its verdict says.
    #[inline]
    fn dispatch(&mut self, b: &mut Bursts, verdict: Verdict, m: Mbuf) {
        let c = &self.counters;
        match verdict {
            Verdict::Forward(out) => push_tx(&mut b.tx, &mut self.tx, c, out, m),
            Verdict::Punt(reason) => {
                c.punts.inc(reason);
                let mut m = m;
                m.set_tag(punt_tag(reason, self.ctx.meta.punt_arg));
                push_ring(&mut self.punt, &mut b.punt, &c.drops, DropReason::PuntRingFull, m);
            }
            Verdict::HandOff(HandOff::NatMapper(kind)) => {
                c.handoffs.inc(HandOffKind::NatMapper);
                let Some(link) = self.nat.as_mut() else {
                    c.drops.inc(DropReason::NatNoState);
                    return;
                };
                let mut m = m;
                m.set_tag(kind.tag());
                push_ring(&mut link.requests, &mut b.nat, &c.drops, DropReason::NatRingFull, m);
            }
            Verdict::HandOff(HandOff::Storage) => self.hand_to_storage(b, m),
            Verdict::HandOff(HandOff::NatFragment(slot)) => {
                c.handoffs.inc(HandOffKind::NatFragment);
                let held = self.nat.as_mut().and_then(|l| l.held.get_mut(usize::from(slot)));
                match held {
                    Some(h) if h.is_none() => *h = Some(m),
                    // The table hands a slot out once; never expected.
                    _ => c.drops.inc(DropReason::NatFragmentsFull),
                }
            }
            Verdict::Drop(reason) => c.drops.inc(reason),
        }
    }

    /// A request to a replica address: served here, or handed to the worker
    /// that owns the object.
    #[inline]
    fn hand_to_storage(&mut self, b: &mut Bursts, m: Mbuf) {
        let c = &self.counters;
        let Some(st) = self.storage.as_mut() else {
            c.drops.inc(DropReason::StorageNoService);
            return;
        };
        let workers = st.out.len();
        let owner = if workers > 1 { shard_of(m.data(), workers).unwrap_or(st.index) } else { st.index };
        if owner != st.index {
            c.handoffs.inc(HandOffKind::StorageWorker);
            match st.out.get_mut(owner).and_then(Option::as_mut) {
                Some(ring) => {
                    if ring.enqueue(m).is_err() {
                        c.drops.inc(DropReason::StorageHandoffFull);
                    }
                }
                None => c.drops.inc(DropReason::StorageNoService),
            }
            return;
        }
        c.handoffs.inc(HandOffKind::Storage);
        // Answered at once (errors, retries), or held until its I/O completes.
        if let Some(reply) = st.service.request(m) {
            let port = reply.port();
            push_tx(&mut b.tx, &mut self.tx, c, port, reply);
        }
    }
}

#[inline]
fn push_tx(tx_bufs: &mut [Burst], tx: &mut [TxQueue], c: &WorkerCounters, port: u16, m: Mbuf) {
    let p = usize::from(port);
    if let Err(m) = tx_bufs[p].push(m) {
        flush_tx(&mut tx_bufs[p], &mut tx[p], c, p);
        if tx_bufs[p].push(m).is_err() {
            c.drops.inc(DropReason::TxFull);
        }
    }
}

#[inline]
fn flush_tx(buf: &mut Burst, txq: &mut TxQueue, c: &WorkerCounters, p: usize) {
    if buf.is_empty() {
        return;
    }
    let bytes = buf.bytes();
    let n = txq.tx_burst(buf);
    let left_bytes = if buf.is_empty() { 0 } else { buf.bytes() };
    let txc = &c.tx[p];
    txc.packets.add(n as u64);
    txc.bytes.add(bytes - left_bytes);
    let dropped = buf.free_all();
    if dropped > 0 {
        c.drops.add(DropReason::TxFull, dropped as u64);
    }
}

/// Queues `m` for `ring`, flushing the burst first when it is full.
#[inline]
fn push_ring(ring: &mut RingProducer, burst: &mut Burst, drops: &DropCounters, reason: DropReason, m: Mbuf) {
    if let Err(m) = burst.push(m) {
        flush_ring(ring, burst, drops, reason);
        if burst.push(m).is_err() {
            drops.inc(reason);
        }
    }
}

#[inline]
fn flush_ring(ring: &mut RingProducer, burst: &mut Burst, drops: &DropCounters, reason: DropReason) {
    if burst.is_empty() {
        return;
    }
    ring.enqueue_burst(burst);
    let dropped = burst.free_all();
    if dropped > 0 {
        drops.add(reason, dropped as u64);
    }
}

/// Sends the NAT activity records waiting in `nw` to the mapping core, in
/// report mbufs of up to [`TOUCHES_PER_REPORT`] records. No mbuf or a full
/// ring loses the records (counted as `nat_report_lost`, one per record).
fn send_reports(link: &mut NatLink, nw: &mut NatWorker, c: &WorkerCounters) {
    if nw.touches_lost > 0 {
        c.drops.add(DropReason::NatReportLost, nw.touches_lost);
        nw.touches_lost = 0;
    }
    while !nw.touches.is_empty() {
        let n = nw.touches.len().min(TOUCHES_PER_REPORT);
        let sent = link.pool.alloc().and_then(|mut m| {
            let buf = m.append(n * TOUCH_LEN)?;
            msg::encode_touches(&nw.touches[..n], buf);
            m.set_tag(msg::TAG_TOUCH);
            link.requests.enqueue(m).ok()
        });
        match sent {
            Some(()) => {
                nw.counters.reports.inc();
                nw.counters.touch_records.add(n as u64);
            }
            None => c.drops.add(DropReason::NatReportLost, n as u64),
        }
        nw.touches.drain(..n);
    }
}
