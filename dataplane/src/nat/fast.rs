//! The NAT fast path's per-worker state and the plan every worker shares.
//!
//! [`NatPlan`] (immutable, in [`crate::l3::L3`]) says which ports are inside
//! and outside and which addresses are the pool. [`NatWorker`] (in each
//! worker's [`crate::l3::WorkerState`]) holds the worker's [`FlowCache`] and
//! the activity records waiting to be sent to the mapping core. The stage
//! itself is `L3::nat44` (`l3.rs`): it runs on IPv4 after the header checks
//! and the route lookup, before the TTL decrement.
//!
//! ```text
//!  in inside port, route out an outside port  → outbound: cache[out key] → rewrite source
//!  in inside port, destination in the pool    → hairpin: outbound, then inbound
//!  in any other port, destination in the pool → inbound: cache[in key] → rewrite destination
//!  in an outside port, route out an inside port → dropped (nat_no_mapping): no
//!                                                 way in except through a mapping
//!  a miss → the packet is handed to the mapping core (punt nat_miss), held, not dropped
//! ```
//!
//! Checked before anything is translated or asked: TTL (time exceeded goes
//! to the untranslated sender) and, outbound, the egress MTU (the
//! fragmentation-needed error goes to the inside host, untranslated).
//!
//! # Why a cache entry never outlives its session
//!
//! A hit refreshes the entry's `last` time and sends an activity report to
//! the mapping core whenever the last report is `report_ms` old (and at once
//! for new SYN/FIN/RST). An entry idle for `idle_ms` is not used. With
//! `report_ms < idle_ms ≤ timeout / 2` for every NAT timeout, at any hit the
//! mapping core has heard of the session within `report_ms` (plus ring
//! latency), so the session's deadline is still ahead; after `idle_ms` of
//! silence the worker asks again instead of trusting the entry. Reports can
//! be lost (ring full, no mbuf: counted); a session then expires only if
//! every report of a whole timeout is lost.

use std::net::Ipv4Addr;
use std::sync::Arc;

use super::cache::{CacheStats, FlowCache, Touch};
use super::frag::{FragConfig, FragTable};
use super::msg::{Answer, TOUCHES_PER_REPORT};
use crate::stats::Counter;

/// Fragment-table slots a worker looks at per poll loop for expiry.
const FRAG_EXPIRE_BUDGET: usize = 16;

/// What a port is to NAT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Subscribers' side: traffic from it to an outside port is translated.
    Inside,
    /// Public side.
    Outside,
    /// Neither: plain routing (packets to pool addresses are still inbound).
    Neither,
}

/// The NAT layout all workers share (built at start).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatPlan {
    /// Role of each port, by config index.
    pub roles: Vec<Role>,
    /// The public addresses.
    pub pool: Vec<Ipv4Addr>,
}

impl NatPlan {
    #[inline]
    pub fn role(&self, port: u16) -> Role {
        self.roles.get(usize::from(port)).copied().unwrap_or(Role::Neither)
    }
}

/// Timing of a worker's cache for the configured timeouts (see the module
/// doc): `(idle_ms, report_ms)`.
pub fn cache_timing(min_timeout_ms: u64) -> (u32, u32) {
    let idle = (min_timeout_ms / 2).clamp(2, 30_000) as u32;
    let report = (idle / 4).clamp(1, 1_000);
    (idle, report)
}

/// Counters of a worker's NAT stage (the worker is the only writer; copied
/// from the cache's own statistics once per poll loop with work).
#[derive(Debug, Default)]
#[repr(align(64))]
pub struct NatWorkerCounters {
    pub hits: Counter,
    pub misses: Counter,
    pub stale: Counter,
    pub inserts: Counter,
    pub evictions: Counter,
    /// Activity records queued for the mapping core.
    pub touch_records: Counter,
    /// Reports (mbufs) sent.
    pub reports: Counter,
    /// Answers received from the mapping core.
    pub answers: Counter,
}

/// A worker's NAT state.
pub struct NatWorker {
    pub cache: FlowCache,
    /// Activity records not yet sent.
    pub touches: Vec<Touch>,
    /// The worker's clock (ms since start), set once per poll loop.
    pub now_ms: u64,
    pub counters: Arc<NatWorkerCounters>,
    /// Records dropped because `touches` was full (sent reports lag).
    pub touches_lost: u64,
    /// The last flush epoch seen (see [`NatWorker::advance`]).
    flush_epoch: u64,
    /// Virtual reassembly: the fragments of datagrams being translated.
    pub frags: FragTable,
}

impl NatWorker {
    pub fn new(cache: FlowCache) -> NatWorker {
        Self::with_fragment_table(cache, FragConfig::default())
    }

    /// A worker with a fragment table of these sizes.
    pub fn with_fragment_table(cache: FlowCache, frags: FragConfig) -> NatWorker {
        NatWorker {
            cache,
            touches: Vec::with_capacity(4 * TOUCHES_PER_REPORT),
            now_ms: 0,
            counters: Arc::new(NatWorkerCounters::default()),
            touches_lost: 0,
            flush_epoch: 0,
            frags: FragTable::new(frags),
        }
    }

    /// Sets the worker's clock for this poll loop; `flush_epoch` is the
    /// mapping core's count of operator clears: when it moved since the last
    /// loop, every cache entry becomes stale (sessions were retired).
    #[inline]
    pub fn advance(&mut self, now_ms: u64, flush_epoch: u64) {
        self.now_ms = now_ms;
        if flush_epoch != self.flush_epoch {
            self.flush_epoch = flush_epoch;
            self.cache.invalidate(now_ms);
        }
        self.cache.settle(now_ms);
        self.frags.expire(now_ms, FRAG_EXPIRE_BUDGET);
    }

    /// Queues an activity record (when the cache said one is due).
    #[inline]
    pub fn note(&mut self, touch: Option<Touch>) {
        if let Some(t) = touch {
            if self.touches.len() < self.touches.capacity() {
                self.touches.push(t);
            } else {
                self.touches_lost += 1;
            }
        }
    }

    /// Installs an answer's entries.
    pub fn install(&mut self, answer: &Answer) {
        self.counters.answers.inc();
        for (key, rewrite) in answer.entries() {
            self.cache.insert(key, rewrite, 0, self.now_ms);
        }
    }

    /// Installs an answer's entries; when its packet (`ip`, translated) is
    /// the first fragment of a datagram, records the datagram's translation
    /// for the other fragments ([`FragTable::record_answered`]).
    pub fn install_for(&mut self, answer: &Answer, ip: &[u8]) {
        self.install(answer);
        if super::frag::is_first_fragment(ip) {
            self.frags.record_answered(answer, ip, self.now_ms);
        }
    }

    /// Copies the cache's statistics to the shared counters.
    pub fn publish(&self) {
        let CacheStats { hits, misses, stale, inserts, evictions } = *self.cache.stats();
        let c = &self.counters;
        for (counter, v) in
            [(&c.hits, hits), (&c.misses, misses), (&c.stale, stale), (&c.inserts, inserts), (&c.evictions, evictions)]
        {
            counter.add(v.wrapping_sub(counter.get()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timing_respects_the_invariant() {
        for t in [1_000u64, 2_000, 60_000, 240_000, 300_000, 7_440_000, 86_400_000] {
            let (idle, report) = cache_timing(t);
            assert!(u64::from(idle) <= t / 2, "{t}");
            assert!(report < idle, "{t}");
        }
        assert_eq!(cache_timing(60_000), (30_000, 1_000));
        assert_eq!(cache_timing(2_000), (1_000, 250));
    }

    #[test]
    fn touch_queue_is_bounded() {
        let mut w = NatWorker::new(FlowCache::new(16, 100, 10, 1));
        let t = Touch {
            key: crate::nat::cache::CacheKey(1 << 127),
            addr: Ipv4Addr::new(198, 51, 100, 1),
            port: 1024,
            tcp_flags: 0,
            time_ms: 0,
        };
        for _ in 0..w.touches.capacity() + 3 {
            w.note(Some(t));
        }
        w.note(None);
        assert_eq!(w.touches.len(), w.touches.capacity());
        assert_eq!(w.touches_lost, 3);
    }
}
