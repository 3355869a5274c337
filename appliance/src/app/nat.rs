//! NAT44 wiring (`nat:` configured): the pipeline's NAT plan (port roles and
//! pool), the mapping server's tables (allocated now, at start), its block
//! log writer, a request/answer ring pair per worker, and each worker's
//! flow cache. With `nat.cluster` the mapping lcore is a cluster host
//! ([`crate::natcluster`]): one table per shard it carries, the cluster
//! socket and the etcd agent.

use std::sync::atomic::AtomicBool;
use std::sync::mpsc::Sender;
use std::sync::Arc;

use anyhow::{Context, Result};

use dataplane::nat::cache::FlowCache;
use dataplane::nat::fast::{cache_timing, NatPlan, NatWorker, Role};
use dataplane::nat::mapper::{Mapper, NatStats};

use super::pools::Pools;
use crate::config::{Config, IdleBackoff};
use crate::natcluster::{self, ClusterCore, ClusterShared};
use crate::natcore::{spawn_event_logger, EventOut, MapperCore, NatClock, NatQuery, EVENT_QUEUE};
use crate::worker::NatLink;

/// The mapping lcore's loop: a single-host mapping server, or a cluster host.
pub(super) enum Core {
    Single(Box<MapperCore>),
    Cluster(Box<ClusterCore>),
}

impl Core {
    pub fn run(self) -> i32 {
        match self {
            Core::Single(c) => c.run(),
            Core::Cluster(c) => c.run(),
        }
    }
}

/// The pipeline's view of NAT: which ports are inside and outside, and the pool.
pub(super) fn plan(cfg: &Config) -> Option<NatPlan> {
    let n = cfg.nat.as_ref()?;
    let roles = (0..cfg.ports.len())
        .map(|i| {
            if n.inside.contains(&i) {
                Role::Inside
            } else if n.outside.contains(&i) {
                Role::Outside
            } else {
                Role::Neither
            }
        })
        .collect();
    Some(NatPlan { roles, pool: n.table.pool.clone() })
}

/// The NAT parts of a running appliance (all empty with NAT off).
pub(super) struct Wiring {
    /// The mapping lcore, until it is launched.
    pub core: Option<Core>,
    /// The cluster's view and commands (with `nat.cluster`).
    pub cluster: Option<Arc<ClusterShared>>,
    /// Set to hand every shard over (SIGTERM); the lcore sets `left` when done.
    pub leave: Arc<AtomicBool>,
    pub left: Arc<AtomicBool>,
    agent: Option<std::thread::JoinHandle<()>>,
    /// One per worker, until the workers take them.
    pub links: std::vec::IntoIter<NatLink>,
    pub stats: Option<Arc<NatStats>>,
    pub query: Option<Sender<NatQuery>>,
    pub clock: NatClock,
    logger: Option<std::thread::JoinHandle<()>>,
}

impl Wiring {
    pub fn start(cfg: &Config, eal: &Arc<rte::Eal>, pools: &Pools, stop: &Arc<AtomicBool>) -> Result<Wiring> {
        let clock = NatClock::start();
        let mut w = Wiring {
            core: None,
            cluster: None,
            leave: Arc::new(AtomicBool::new(false)),
            left: Arc::new(AtomicBool::new(false)),
            agent: None,
            links: Vec::new().into_iter(),
            stats: None,
            query: None,
            clock,
            logger: None,
        };
        let Some(n) = &cfg.nat else { return Ok(w) };
        let mut table_cfg = n.table.clone();
        if !n.seeded {
            let (a, b) = os_seeds();
            table_cfg.random_seed = a;
            table_cfg.hash_seed = b;
        }
        let stats = Arc::new(NatStats::default());
        let (event_tx, event_rx) = std::sync::mpsc::sync_channel(EVENT_QUEUE);
        w.logger = Some(spawn_event_logger(event_rx, clock).context("starting the NAT log writer")?);
        let (query_tx, query_rx) = std::sync::mpsc::channel();
        let flush_epoch = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (mut requests, mut answers, mut links) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..cfg.lcores.workers.len() {
            let (req_p, req_c) = rte::MbufRing::new(eal, &format!("apl_natreq{i}"), n.ring_size)
                .context("creating a NAT request ring")?;
            let (ans_p, ans_c) = rte::MbufRing::new(eal, &format!("apl_natans{i}"), n.ring_size)
                .context("creating a NAT answer ring")?;
            let flush_epoch = flush_epoch.clone();
            // Worker i allocates from its own socket's pool.
            let pool = pools.for_lcore(eal, cfg.lcores.workers[i].lcore).clone();
            let held = (0..n.fragments.held_max).map(|_| None).collect();
            links.push(NatLink { requests: req_p, answers: ans_c, pool, clock, flush_epoch, held });
            requests.push(req_c);
            answers.push(ans_p);
        }
        let idle = IdleBackoff { enabled: n.mapper_idle_backoff, ..cfg.pipeline.idle_backoff };
        w.core = Some(match &n.cluster {
            None => {
                let mapper = Mapper::new(&table_cfg, EventOut { tx: event_tx, stats: stats.clone() }, stats.clone());
                tracing::info!(
                    pool_addresses = table_cfg.pool.len(),
                    ports_per_block = table_cfg.ports_per_block,
                    sessions_max = table_cfg.sessions_max,
                    table_bytes = mapper.table().memory_bytes(),
                    "NAT mapping server tables allocated"
                );
                Core::Single(Box::new(MapperCore {
                    mapper,
                    requests,
                    answers,
                    queries: query_rx,
                    stop: stop.clone(),
                    idle,
                    clock,
                    flush_epoch,
                }))
            }
            Some(cl) => {
                let parts = natcluster::Parts {
                    requests,
                    answers,
                    queries: query_rx,
                    log: event_tx,
                    pool: pools.for_lcore(eal, cfg.lcores.mapper.map_or(cfg.lcores.main.lcore, |l| l.lcore)).clone(),
                    nat_stats: stats.clone(),
                    stop: stop.clone(),
                    leave: w.leave.clone(),
                    left: w.left.clone(),
                    idle,
                    clock,
                };
                let started = natcluster::start(cl, &table_cfg, parts)?;
                w.cluster = Some(started.shared);
                w.agent = Some(started.agent);
                Core::Cluster(Box::new(started.core))
            }
        });
        w.links = links.into_iter();
        w.stats = Some(stats);
        w.query = Some(query_tx);
        Ok(w)
    }

    /// The rings of the mapping core, named for the metrics (`nat_request<w>`,
    /// `nat_answer<w>`).
    pub fn rings(&self, worker: usize) -> Vec<(String, Arc<rte::MbufRing>)> {
        let (requests, answers) = match &self.core {
            Some(Core::Single(c)) => (&c.requests, &c.answers),
            Some(Core::Cluster(c)) => (&c.requests, &c.answers),
            None => return Vec::new(),
        };
        vec![
            (format!("nat_request{worker}"), requests[worker].ring().clone()),
            (format!("nat_answer{worker}"), answers[worker].ring().clone()),
        ]
    }

    /// Worker `worker`'s NAT state: its flow cache, sized and timed for the
    /// configured timeouts.
    pub fn worker_state(cfg: &Config, worker: usize) -> Option<NatWorker> {
        let n = cfg.nat.as_ref()?;
        let t = &n.table;
        let min_timeout = t.udp_timeout_ms.min(t.icmp_timeout_ms).min(t.tcp_transitory_timeout_ms);
        // In a cluster an entry must not be trusted long after a takeover
        // (docs/nat-ha.md, the allocation hold-down): a shorter idle time.
        let (idle_ms, report_ms) = match &n.cluster {
            Some(cl) => (cl.cache_idle_ms, cl.report_ms),
            None => cache_timing(min_timeout),
        };
        let cache = FlowCache::new(n.worker_cache_entries as usize, idle_ms, report_ms, os_seeds().0 ^ worker as u64);
        Some(NatWorker::with_fragment_table(cache, n.fragments))
    }

    /// Waits for the block log writer: the mapping core's sink (the sender)
    /// went with it, so it drains what is queued and ends.
    pub fn stop_logger(&mut self) {
        if let Some(t) = self.agent.take() {
            let _ = t.join();
        }
        if let Some(t) = self.logger.take() {
            let _ = t.join();
        }
    }
}

/// Two 64-bit seeds from the OS (port randomisation, table hashes), so a
/// remote sender cannot predict ports or bucket collisions.
pub fn os_seeds() -> (u64, u64) {
    use std::hash::{BuildHasher, Hasher};
    // RandomState is keyed from the OS's random source once per process
    // and per instance thereafter.
    let mut a = std::collections::hash_map::RandomState::new().build_hasher();
    a.write_u64(1);
    let mut b = std::collections::hash_map::RandomState::new().build_hasher();
    b.write_u64(2);
    (a.finish(), b.finish())
}
