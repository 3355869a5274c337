//! The poll-mode worker: one per worker lcore, run to completion.
//!
//! Each loop: receive a burst from every rx queue the worker owns, give every
//! packet its verdict ([`L3::process`]), then move it to the transmit burst
//! of its egress port, the punt burst (for the control core) or free it with
//! a counted reason; send what the control core injected; flush. No
//! allocation, lock or system call happens in the loop; the only shared
//! memory written is the worker's own counter block and the SPSC rings.
//!
//! Idle back-off: after `empty_polls` consecutive loops with no packet the
//! worker sleeps `sleep_us`, so several appliance processes can share the
//! small test machines; on bare metal it is configured off and the loop spins.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rte::{Burst, Mbuf, Mempool, RingConsumer, RingProducer, RxQueue, TxQueue, BURST_MAX};

use crate::config::IdleBackoff;
use dataplane::l3::{Verdict, WorkerState, L3};
use dataplane::nat::msg::{self, Answer, ANSWER_LEN, TOUCHES_PER_REPORT, TOUCH_LEN};
use crate::natcore::NatClock;
use dataplane::objservice::ObjectService;
use dataplane::stats::PuntReason;
use dataplane::srv6::punt_tag;
use dataplane::stats::{Counter, DropCounters, DropReason, PuntCounters};

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
    pub l3: Arc<L3>,
    pub rx: Vec<RxBinding>,
    /// Indexed by the config index of the port.
    pub tx: Vec<TxQueue>,
    pub punt: RingProducer,
    pub inject: RingConsumer,
    pub counters: Arc<WorkerCounters>,
    pub stop: Arc<AtomicBool>,
    pub burst_size: usize,
    pub idle: IdleBackoff,
    /// Per-worker pipeline state (SID counters, local service, NAT cache).
    pub state: WorkerState,
    /// The rings to and from the NAT mapping core (with NAT on).
    pub nat: Option<NatLink>,
    /// The object storage service (with `storage:` configured).
    pub storage: Option<ObjectService<Mbuf>>,
    /// Hand-over of storage requests for objects other workers own: this
    /// worker's index, a ring to each other worker (`None` for itself) and
    /// the rings from them.
    pub storage_index: usize,
    pub storage_out: Vec<Option<RingProducer>>,
    pub storage_in: Vec<RingConsumer>,
}

/// A worker's side of the NAT mapping core: held packets and activity
/// reports go out on `requests`, translated packets come back on `answers`.
pub struct NatLink {
    pub requests: RingProducer,
    pub answers: RingConsumer,
    /// Where activity reports are allocated from.
    pub pool: Mempool,
    pub clock: NatClock,
}

/// Where a verdict sends a packet: the worker's output bursts.
struct Outputs<'a> {
    tx_bufs: &'a mut [Burst],
    tx: &'a mut [TxQueue],
    punt_burst: &'a mut Burst,
    punt: &'a mut RingProducer,
    nat_burst: &'a mut Burst,
    nat: Option<&'a mut NatLink>,
    storage: Option<&'a mut ObjectService<Mbuf>>,
    storage_index: usize,
    storage_out: &'a mut [Option<RingProducer>],
}

impl Outputs<'_> {
    #[inline]
    fn dispatch(&mut self, c: &WorkerCounters, verdict: Verdict, punt_arg: u32, mut m: Mbuf) {
        match verdict {
            Verdict::Forward(out) => push_tx(self.tx_bufs, self.tx, c, out, m),
            Verdict::Punt(PuntReason::Storage) => {
                c.punts.inc(PuntReason::Storage);
                let workers = self.storage_out.len();
                if workers > 1 {
                    // Objects are sharded over the workers: hand it to the owner.
                    let owner = dataplane::objservice::shard_of(m.data(), workers).unwrap_or(self.storage_index);
                    if owner != self.storage_index {
                        match self.storage_out.get_mut(owner).and_then(Option::as_mut) {
                            Some(ring) => {
                                if ring.enqueue(m).is_err() {
                                    c.drops.inc(DropReason::StorageHandoffFull);
                                }
                            }
                            None => c.drops.inc(DropReason::StorageNoService),
                        }
                        return;
                    }
                }
                match self.storage.as_deref_mut() {
                    Some(svc) => {
                        // Answered at once (errors, retries), or held until its I/O completes.
                        if let Some(reply) = svc.request(m) {
                            let port = reply.port();
                            push_tx(self.tx_bufs, self.tx, c, port, reply);
                        }
                    }
                    None => c.drops.inc(DropReason::StorageNoService),
                }
            }
            Verdict::Punt(PuntReason::NatMiss) => {
                c.punts.inc(PuntReason::NatMiss);
                let Some(link) = self.nat.as_deref_mut() else {
                    c.drops.inc(DropReason::NatNoState);
                    return;
                };
                m.set_tag(0x4e41_0000 | (punt_arg & 0xffff));
                if let Err(m) = self.nat_burst.push(m) {
                    flush_ring(&mut link.requests, self.nat_burst, &c.drops, DropReason::NatRingFull);
                    if self.nat_burst.push(m).is_err() {
                        c.drops.inc(DropReason::NatRingFull);
                    }
                }
            }
            Verdict::Punt(reason) => {
                c.punts.inc(reason);
                m.set_tag(punt_tag(reason, punt_arg));
                if let Err(m) = self.punt_burst.push(m) {
                    flush_ring(self.punt, self.punt_burst, &c.drops, DropReason::PuntRingFull);
                    if self.punt_burst.push(m).is_err() {
                        c.drops.inc(DropReason::PuntRingFull);
                    }
                }
            }
            Verdict::Drop(reason) => c.drops.inc(reason),
        }
    }
}

impl Worker {
    /// The poll loop; returns when `stop` is set.
    pub fn run(mut self) -> i32 {
        let ports = self.tx.len();
        let mut tx_bufs: Vec<Burst> = (0..ports).map(|_| Burst::new()).collect();
        let mut rx_burst = Burst::new();
        let mut punt_burst = Burst::new();
        let mut nat_burst = Burst::new();
        let mut storage_replies: Vec<Mbuf> = Vec::with_capacity(1024);
        let burst_size = self.burst_size.clamp(1, BURST_MAX);
        let mut empty_polls: u32 = 0;
        let c = self.counters.clone();
        let mut t_prev = rte::tsc();

        while !self.stop.load(Ordering::Relaxed) {
            let mut work = 0usize;
            if let (Some(link), Some(nw)) = (&self.nat, self.state.nat.as_deref_mut()) {
                nw.now_ms = link.clock.now_ms();
            }
            let mut out = Outputs {
                tx_bufs: &mut tx_bufs,
                tx: &mut self.tx,
                punt_burst: &mut punt_burst,
                punt: &mut self.punt,
                nat_burst: &mut nat_burst,
                nat: self.nat.as_mut(),
                storage: self.storage.as_mut(),
                storage_index: self.storage_index,
                storage_out: &mut self.storage_out,
            };
            for (ri, rx) in self.rx.iter_mut().enumerate() {
                let n = rx.queue.rx_burst(&mut rx_burst, burst_size);
                if n == 0 {
                    continue;
                }
                work += n;
                let rxc = &c.rx[ri];
                rxc.packets.add(n as u64);
                rxc.bytes.add(rx_burst.bytes());
                if self.state.nat.is_some() {
                    for m in rx_burst.as_slice() {
                        self.l3.nat_prefetch(m.data(), rx.port, &self.state);
                    }
                }
                for mut m in rx_burst.drain() {
                    m.set_port(rx.port);
                    if !m.is_contiguous() {
                        c.drops.inc(DropReason::MultiSegment);
                        continue;
                    }
                    let v = self.l3.process(&mut m, rx.port, &mut self.state);
                    out.dispatch(&c, v, self.state.punt_arg, m);
                }
            }
            // Answers of the NAT mapping core: install the entries, then
            // route the (translated) packet.
            if let Some(link) = out.nat.as_deref_mut() {
                let n = link.answers.dequeue_burst(&mut rx_burst, burst_size);
                if n > 0 {
                    work += n;
                    for mut m in rx_burst.drain() {
                        let Some(answer) = Answer::decode(m.data()) else {
                            c.drops.inc(DropReason::NatBadAnswer);
                            continue;
                        };
                        m.adj(ANSWER_LEN);
                        if let Some(nw) = self.state.nat.as_deref_mut() {
                            nw.install(&answer);
                        }
                        self.state.nat_skip = true;
                        let port = m.port();
                        let v = self.l3.process(&mut m, port, &mut self.state);
                        self.state.nat_skip = false;
                        out.dispatch(&c, v, self.state.punt_arg, m);
                    }
                }
            }
            // Packets the control core built or released (ARP/ND answers,
            // ICMP errors, packets held for resolution).
            let n = self.inject.dequeue_burst(&mut rx_burst, burst_size);
            if n > 0 {
                work += n;
                c.injected.add(n as u64);
                for m in rx_burst.drain() {
                    let port = m.port();
                    if usize::from(port) < ports {
                        push_tx(out.tx_bufs, out.tx, &c, port, m);
                    } else {
                        c.drops.inc(DropReason::EthNotForUs);
                    }
                }
            }
            // Storage requests other workers handed over (objects this one owns).
            if let Some(svc) = out.storage.as_deref_mut() {
                for ring in self.storage_in.iter_mut() {
                    let n = ring.dequeue_burst(&mut rx_burst, burst_size);
                    work += n;
                    svc.counters.handed_over.add(n as u64);
                    for m in rx_burst.drain() {
                        if let Some(reply) = svc.request(m) {
                            let port = reply.port();
                            push_tx(out.tx_bufs, out.tx, &c, port, reply);
                        }
                    }
                }
            }
            // Storage I/O that completed: its replies go out.
            if let Some(svc) = out.storage.as_deref_mut() {
                svc.poll(&mut storage_replies);
                work += storage_replies.len();
                for m in storage_replies.drain(..) {
                    let port = m.port();
                    push_tx(out.tx_bufs, out.tx, &c, port, m);
                }
            }
            flush_ring(out.punt, out.punt_burst, &c.drops, DropReason::PuntRingFull);
            if let Some(link) = out.nat.as_deref_mut() {
                flush_ring(&mut link.requests, out.nat_burst, &c.drops, DropReason::NatRingFull);
                if let Some(nw) = self.state.nat.as_deref_mut() {
                    send_reports(link, nw, &c);
                    if work > 0 {
                        nw.publish();
                    }
                }
            }
            for (p, (buf, txq)) in tx_bufs.iter_mut().zip(self.tx.iter_mut()).enumerate() {
                flush_tx(buf, txq, &c, p);
            }

            let t_now = rte::tsc();
            if work > 0 {
                empty_polls = 0;
                c.busy_cycles.add(t_now - t_prev);
                t_prev = t_now;
            } else {
                empty_polls = empty_polls.saturating_add(1);
                if self.idle.enabled && empty_polls >= self.idle.empty_polls {
                    std::thread::sleep(Duration::from_micros(u64::from(self.idle.sleep_us)));
                    c.idle_sleeps.inc();
                }
                let t_after = rte::tsc();
                c.idle_cycles.add(t_after - t_prev);
                t_prev = t_after;
            }
        }
        // Hand nothing back: queued packets are freed when the bursts drop.
        for (p, buf) in tx_bufs.iter_mut().enumerate() {
            flush_tx(buf, &mut self.tx[p], &c, p);
        }
        0
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
fn send_reports(link: &mut NatLink, nw: &mut dataplane::nat::fast::NatWorker, c: &WorkerCounters) {
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
