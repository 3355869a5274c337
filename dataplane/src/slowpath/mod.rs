//! The control core's packet work: everything the workers punt.
//!
//! * ARP (RFC 826) and neighbour discovery (RFC 4861 §7): answer requests
//!   for our addresses, learn senders, resolve next hops.
//! * Resolution: a packet whose next hop has no MAC yet is held (bounded:
//!   `pending_per_neighbor_max` per neighbour, `pending_packets_max` in all),
//!   a request is sent and retried every `resolve_interval_ms` up to
//!   `resolve_retries` times; when the answer comes the held packets are run
//!   through the pipeline again and sent; when it does not, they are dropped
//!   (`neighbor_failed`) with ICMP host/address unreachable, and the entry is
//!   marked failed. Learned entries older than `reachable_ms` are re-probed
//!   and stay usable meanwhile.
//! * ICMP/ICMPv6 errors (RFC 792/1812, RFC 4443): time exceeded, destination
//!   unreachable, fragmentation needed / packet too big. Rate-limited by a
//!   token bucket; never sent about an ICMP error, a non-first fragment or a
//!   non-unicast source (RFC 1812 §4.3.2.7, RFC 4443 §2.4(e)).
//! * NAT pool addresses on an outside subnet: answered for, and in a NAT
//!   cluster announced by the one host that serves them ([`announce`]).
//!
//! This module is pure: packets come in and go out through the
//! [`PacketBuf`]/[`PacketPool`] traits and a send callback, so it is tested
//! on vectors. Its one piece of shared state is the neighbour table, which
//! it alone writes. It may allocate (bounded, by configured limits): it is
//! the slow path.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

mod announce;
mod icmp;
mod neighbor;

pub use self::announce::{PoolServer, ANNOUNCE_INTERVAL_MS, ANNOUNCE_NUM};

use netwire::{PacketBuf, PacketPool};

use self::icmp::IcmpWhy;
use crate::fib::neigh::{NeighborState, NeighborWriter};
use crate::pipeline::{Pipeline, WorkerCtx};
use crate::stats::{ControlCounters, DropReason, PuntReason};

/// Limits and timers of the slow path (from the config's `neighbor` and
/// `icmp` sections).
#[derive(Debug, Clone)]
pub struct SlowPathConfig {
    pub pending_packets_max: usize,
    pub pending_per_neighbor_max: usize,
    pub resolve_retries: u32,
    pub resolve_interval_ms: u64,
    pub reachable_ms: u64,
    pub icmp_errors_per_s: u32,
    pub icmp_errors_burst: u32,
}

impl Default for SlowPathConfig {
    fn default() -> Self {
        SlowPathConfig {
            pending_packets_max: 256,
            pending_per_neighbor_max: 4,
            resolve_retries: 3,
            resolve_interval_ms: 1000,
            reachable_ms: 30_000,
            icmp_errors_per_s: 100,
            icmp_errors_burst: 50,
        }
    }
}

struct Resolution<P> {
    tries: u32,
    next_try_ms: u64,
    /// Held packets with their punt argument.
    held: Vec<(P, u32)>,
}

/// The control core's packet handler.
pub struct SlowPath<P> {
    pipeline: Arc<Pipeline>,
    neigh: NeighborWriter,
    cfg: SlowPathConfig,
    counters: Arc<ControlCounters>,
    resolving: HashMap<(u16, IpAddr), Resolution<P>>,
    pending_total: usize,
    icmp_tokens_milli: u64,
    icmp_refill_ms: u64,
    last_refresh_ms: u64,
    /// Pipeline state for re-running held packets (its counters are private).
    ctx: WorkerCtx,
    /// Which pool addresses this host serves (a NAT cluster); `None`: all.
    announcer: Option<announce::Announcer>,
}

impl<P: PacketBuf> SlowPath<P> {
    pub fn new(
        pipeline: Arc<Pipeline>,
        neigh: NeighborWriter,
        cfg: SlowPathConfig,
        counters: Arc<ControlCounters>,
    ) -> Self {
        let ctx = WorkerCtx::scratch(&pipeline);
        Self::with_state(pipeline, neigh, cfg, counters, ctx)
    }

    /// As [`SlowPath::new`], with the pipeline state used to re-run held
    /// packets (its local service should be configured like the workers').
    pub fn with_state(
        pipeline: Arc<Pipeline>,
        neigh: NeighborWriter,
        cfg: SlowPathConfig,
        counters: Arc<ControlCounters>,
        ctx: WorkerCtx,
    ) -> Self {
        let tokens = u64::from(cfg.icmp_errors_burst) * 1000;
        SlowPath {
            ctx,
            pipeline,
            neigh,
            cfg,
            counters,
            resolving: HashMap::new(),
            pending_total: 0,
            icmp_tokens_milli: tokens,
            icmp_refill_ms: 0,
            last_refresh_ms: 0,
            announcer: None,
        }
    }

    /// Gives back the pipeline state [`SlowPath::with_state`] took.
    pub fn into_state(self) -> WorkerCtx {
        self.ctx
    }

    pub fn counters(&self) -> &Arc<ControlCounters> {
        &self.counters
    }

    /// Answers ARP only for the NAT pool addresses `server` says this host
    /// serves, and announces those it starts serving (module `announce`).
    pub fn set_pool_server(&mut self, server: Box<dyn PoolServer>) {
        self.announcer = Some(announce::Announcer::new(server, &self.pipeline));
    }

    /// True when this host answers for NAT pool address `a`.
    fn serves_pool(&self, a: std::net::Ipv4Addr) -> bool {
        self.announcer.as_ref().is_none_or(|an| an.serves(a))
    }

    /// Uses `pipeline` from now on (tables published at run time).
    pub fn set_pipeline(&mut self, pipeline: Arc<Pipeline>) {
        self.pipeline = pipeline;
        if let Some(an) = self.announcer.as_mut() {
            an.rebuild(&self.pipeline);
        }
    }

    /// New limits and timers (a config reload); held packets stay held.
    pub fn set_limits(&mut self, cfg: SlowPathConfig) {
        self.cfg = cfg;
    }

    /// Removes a neighbour (static or learned); false if there is none.
    pub fn remove_neighbor(&mut self, port: u16, ip: IpAddr) -> bool {
        self.neigh.remove(port, ip)
    }

    /// Removes every learned neighbour (static ones stay); returns how many.
    pub fn remove_learned(&mut self) -> usize {
        self.neigh.remove_learned()
    }

    /// Installs a configured neighbour (never aged).
    pub fn add_static(&mut self, port: u16, ip: IpAddr, mac: [u8; 6]) -> Result<(), crate::fib::neigh::NeighborError> {
        self.neigh.set(port, ip, mac, NeighborState::Static, 0)
    }

    /// Handles one punted packet; `arg` is the punt's detail
    /// ([`crate::pipeline::PacketMeta::punt_arg`]). `send` transmits a packet out of the
    /// port set in it.
    #[allow(clippy::too_many_arguments)]
    pub fn handle<Pool: PacketPool<Buf = P>>(
        &mut self,
        pkt: P,
        reason: PuntReason,
        arg: u32,
        now_ms: u64,
        pool: &mut Pool,
        send: &mut dyn FnMut(P),
    ) {
        self.counters.punts_handled.inc();
        match reason {
            PuntReason::Arp => self.arp_input(pkt, now_ms, pool, send),
            PuntReason::Nd => self.nd_input(pkt, now_ms, pool, send),
            PuntReason::NeighborMiss => self.neighbor_miss(pkt, arg, now_ms, pool, send),
            PuntReason::TtlExpired => {
                self.icmp_error(&pkt, IcmpWhy::TimeExceeded, now_ms, pool, send);
                self.counters.drops.inc(DropReason::TtlExpired);
            }
            PuntReason::NoRoute => {
                self.icmp_error(&pkt, IcmpWhy::NoRoute, now_ms, pool, send);
                self.counters.drops.inc(DropReason::NoRoute);
            }
            PuntReason::TooBig => {
                let mtu = u16::try_from(arg).unwrap_or(1280);
                self.icmp_error(&pkt, IcmpWhy::TooBig(mtu), now_ms, pool, send);
                self.counters.drops.inc(DropReason::TooBig);
            }
            PuntReason::PortUnreachable => {
                self.icmp_error(&pkt, IcmpWhy::PortUnreachable, now_ms, pool, send);
                self.counters.drops.inc(DropReason::PortUnreachable);
            }
            PuntReason::ParamProblem => {
                let (code, pointer) = crate::stats::param_problem_parts(arg);
                self.icmp_error(&pkt, IcmpWhy::ParamProblem(code, pointer), now_ms, pool, send);
                self.counters.drops.inc(crate::stats::param_problem_reason(arg));
            }
        }
    }

    /// Timers: resolution retries and failures, re-probing of old entries,
    /// the ICMP token bucket. Call every few milliseconds.
    pub fn tick<Pool: PacketPool<Buf = P>>(&mut self, now_ms: u64, pool: &mut Pool, send: &mut dyn FnMut(P)) {
        // Retries and failures.
        let due: Vec<(u16, IpAddr)> =
            self.resolving.iter().filter(|(_, r)| r.next_try_ms <= now_ms).map(|(k, _)| *k).collect();
        for key in due {
            let tries = self.resolving[&key].tries;
            if tries >= self.cfg.resolve_retries {
                let r = self.resolving.remove(&key).expect("present");
                self.counters.resolutions_failed.inc();
                self.neigh.set_state(key.0, key.1, NeighborState::Failed, now_ms);
                self.pending_total -= r.held.len();
                for (held, _) in r.held {
                    self.icmp_error(&held, IcmpWhy::HostUnreachable, now_ms, pool, send);
                    self.counters.drops.inc(DropReason::NeighborFailed);
                }
            } else {
                let r = self.resolving.get_mut(&key).expect("present");
                r.tries += 1;
                r.next_try_ms = now_ms + self.cfg.resolve_interval_ms;
                self.solicit(key.0, key.1, pool, send);
            }
        }
        // Re-probe entries that have not been confirmed for reachable_ms.
        if now_ms >= self.last_refresh_ms + self.cfg.resolve_interval_ms.min(1000) {
            self.last_refresh_ms = now_ms;
            let old: Vec<(u16, IpAddr)> = self
                .neigh
                .table()
                .entries()
                .filter(|e| e.state == NeighborState::Reachable && now_ms >= e.updated_ms + self.cfg.reachable_ms)
                .map(|e| (e.port, e.ip))
                .collect();
            for (port, ip) in old {
                self.neigh.set_state(port, ip, NeighborState::Stale, now_ms);
                self.start_resolution(port, ip, now_ms, pool, send);
            }
        }
        self.counters.pending.set(self.pending_total as u64);
        if let Some(an) = self.announcer.as_mut() {
            an.tick(&self.pipeline, &self.counters, now_ms, pool, send);
        }
    }

    /// Number of packets held waiting for resolution.
    pub fn pending(&self) -> usize {
        self.pending_total
    }
}
