//! The NAT mapping server's lcore loop, its clock, the block log writer and
//! the session queries of the control API.
//!
//! ```text
//!  worker w ── request ring w (held packets, activity reports) ──► mapping lcore
//!  worker w ◄── answer ring w (translated packets + cache entries) ──┘
//!                                          │ block events (bounded queue, try_send)
//!                                          ▼
//!                                  log thread: one line per block allocated/released
//! ```
//!
//! The loop drains every worker's request ring, answers on the same
//! worker's answer ring (a full answer ring is a counted drop, never a
//! wait), retires idle sessions every [`TICK_MS`], and answers the session
//! listings the metrics thread asks for. Like the workers, it backs off
//! when idle if `pipeline.idle_backoff` is on.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rte::{Burst, RingConsumer, RingProducer};

use crate::config::IdleBackoff;
use dataplane::nat::mapper::{Mapper, NatStats};
use dataplane::nat::msg;
use dataplane::nat::session::{SessionFilter, SessionInfo};
use dataplane::nat::{NatEvent, Sink};
use dataplane::stats::DropReason;

/// How often idle sessions are retired and the gauges published.
pub const TICK_MS: u64 = 10;
/// Sessions retired per tick at most (bounded work between ring polls).
pub const EXPIRE_PER_TICK: usize = 4096;
/// Block events waiting for the log writer.
pub const EVENT_QUEUE: usize = 65_536;

/// Milliseconds since start, from the TSC: the same time base on every
/// core (the mapping core's timeouts and the workers' cache ages).
#[derive(Debug, Clone, Copy)]
pub struct NatClock {
    tsc0: u64,
    tsc_per_ms: u64,
    tsc_per_us: u64,
    /// Wall clock at `tsc0` (for log lines).
    pub wall0_ms: u64,
}

impl NatClock {
    pub fn start() -> NatClock {
        let wall0_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let hz = rte::tsc_hz();
        NatClock { tsc0: rte::tsc(), tsc_per_ms: (hz / 1000).max(1), tsc_per_us: (hz / 1_000_000).max(1), wall0_ms }
    }

    #[inline]
    pub fn now_ms(&self) -> u64 {
        // Starts at 1 so that 0 never means "now".
        1 + rte::tsc().wrapping_sub(self.tsc0) / self.tsc_per_ms
    }

    /// Microseconds since start (from 1000, so that `now_us() / 1000` runs
    /// with [`NatClock::now_ms`]).
    #[inline]
    pub fn now_us(&self) -> u64 {
        1000 + rte::tsc().wrapping_sub(self.tsc0) / self.tsc_per_us
    }
}

/// A question for the mapping core from the control API: list the
/// sessions `filter` matches (at most `limit`), or retire them.
pub struct NatQuery {
    pub filter: SessionFilter,
    pub limit: usize,
    pub retire: bool,
    pub reply: SyncSender<NatAnswer>,
}

/// The mapping core's answer to a [`NatQuery`].
pub enum NatAnswer {
    Sessions(Vec<SessionInfo>),
    /// Sessions retired (the workers' caches were told to drop every entry
    /// older than the retirement: see `FlowCache::invalidate`).
    Retired(usize),
    /// The query cannot be done here (the reason, for the operator).
    Refused(String),
}

/// The mapping core's event sink: block events go to the log writer through
/// a bounded queue; a full queue is counted, never waited on. Mapping and
/// session events are not logged (RFC 6888 REQ-12: no destinations), they
/// are what a standby will replay (high availability is a later issue).
pub struct EventOut {
    pub tx: SyncSender<NatEvent>,
    pub stats: Arc<NatStats>,
}

impl Sink<NatEvent> for EventOut {
    fn push(&mut self, event: NatEvent) {
        if let NatEvent::Block(_) = event {
            if self.tx.try_send(event).is_err() {
                self.stats.events_dropped.inc();
            }
        }
    }
}

/// Starts the log writer: one structured line per block event (target
/// `nat_log`), with the wall-clock time the block was allocated or released.
pub fn spawn_event_logger(rx: Receiver<NatEvent>, clock: NatClock) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new().name("nat-log".into()).spawn(move || {
        for event in rx {
            if let NatEvent::Block(b) = event {
                tracing::info!(
                    target: "nat_log",
                    event = %b.kind.name(),
                    time_ms = b.time_ms,
                    subscriber = %b.subscriber,
                    public_addr = %b.public_addr,
                    port_start = b.port_start,
                    port_end = b.port_end,
                    unix_ms = clock.wall0_ms + b.time_ms,
                    "nat_block"
                );
            }
        }
    })
}

/// The mapping lcore.
pub struct MapperCore {
    pub mapper: Mapper<EventOut>,
    /// Per worker.
    pub requests: Vec<RingConsumer>,
    /// Per worker.
    pub answers: Vec<RingProducer>,
    pub queries: Receiver<NatQuery>,
    pub stop: Arc<AtomicBool>,
    pub idle: IdleBackoff,
    pub clock: NatClock,
    /// Bumped after an operator's clear retired sessions: every worker then
    /// makes its cache entries stale before its next packet.
    pub flush_epoch: Arc<AtomicU64>,
}

impl MapperCore {
    /// The loop; returns when `stop` is set.
    pub fn run(mut self) -> i32 {
        let mut burst = Burst::new();
        let mut last_tick = 0u64;
        let mut empty_polls = 0u32;
        while !self.stop.load(Ordering::Relaxed) {
            let now = self.clock.now_ms();
            let mut work = 0usize;
            for w in 0..self.requests.len() {
                let n = self.requests[w].dequeue_burst(&mut burst, 32);
                work += n;
                for mut m in burst.drain() {
                    let tag = m.tag();
                    if tag == msg::TAG_TOUCH {
                        self.mapper.touches(msg::decode_touches(m.data()));
                        continue; // the report mbuf is freed here
                    }
                    if self.mapper.request(&mut m, tag, now).is_ok() && self.answers[w].enqueue(m).is_err() {
                        self.mapper.stats().drops.inc(DropReason::NatAnswerRingFull);
                    }
                    // A refused packet was counted by the mapper and is freed here.
                }
            }
            if now >= last_tick + TICK_MS {
                last_tick = now;
                let expired = self.mapper.tick(now, EXPIRE_PER_TICK);
                work += expired.sessions;
                while let Ok(q) = self.queries.try_recv() {
                    let answer = if q.retire {
                        let n = self.mapper.retire(&q.filter, now);
                        self.flush_epoch.fetch_add(1, Ordering::Release);
                        NatAnswer::Retired(n)
                    } else {
                        NatAnswer::Sessions(self.mapper.sessions(&q.filter, q.limit))
                    };
                    let _ = q.reply.try_send(answer);
                }
            }
            if work > 0 {
                empty_polls = 0;
            } else {
                empty_polls = empty_polls.saturating_add(1);
                if self.idle.enabled && empty_polls >= self.idle.empty_polls {
                    std::thread::sleep(Duration::from_micros(u64::from(self.idle.sleep_us)));
                }
            }
        }
        self.mapper.publish();
        0
    }
}
