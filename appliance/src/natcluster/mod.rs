//! The NAT cluster's I/O (docs/nat-ha.md): the mapping lcore in cluster
//! mode ([`ClusterCore`], driving `dataplane::nat::cluster::node`), the
//! etcd agent's thread, the cluster view and handover commands of the
//! HTTP server, and the cluster's metrics.
//!
//! ```text
//!  workers ─ request rings ─► ClusterCore (mapping lcore) ─ answer rings ─► workers
//!                               │  ▲ UDP socket (non-blocking) ◄─► peers' ClusterCores
//!                  AgentRequest │  │ AgentEvent (channels; the lcore never waits)
//!                               ▼  │
//!                          agent thread ── HTTP ──► etcd (owners, beats)
//!  HTTP /nat/cluster, /nat/cluster/handover ── ClusterCommand ──► ClusterCore
//! ```
//!
//! The mapping lcore makes system calls (the socket) but never blocks: the
//! socket is non-blocking, every channel is tried, a full one is counted.

pub mod etcd;
pub mod metrics;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use rte::{Burst, Mbuf, Mempool, RingConsumer, RingProducer};

use dataplane::nat::alloc::BlockEvent;
use dataplane::nat::cache::CacheKey;
use dataplane::nat::cluster::agent::AgentCore;
use dataplane::nat::cluster::node::{
    AgentEvent, AgentRequest, ClusterNode, ClusterStats, ClusterView, HowAcquired, NodeIo, Role,
};
use dataplane::nat::cluster::ClusterPlan;
use dataplane::nat::mapper::NatStats;
use dataplane::nat::msg::{self, INVALIDATIONS_PER_MBUF};
use dataplane::nat::NatEvent;
use dataplane::slowpath::PoolServer;
use dataplane::stats::{Counter, DropReason};

use crate::config::{IdleBackoff, NatCluster};
use crate::natcore::{NatAnswer, NatClock, NatQuery};

/// A command for the mapping lcore from the HTTP server (and the CLI).
pub enum ClusterCommand {
    /// The cluster view.
    View { reply: SyncSender<ClusterView> },
    /// Hand one shard (or every active one) over to its standby.
    Handover { shard: Option<u16>, reply: SyncSender<Result<String, String>> },
}

/// What the HTTP server and the metrics scrape hold of the cluster.
pub struct ClusterShared {
    pub stats: Arc<ClusterStats>,
    pub plan: ClusterPlan,
    pub commands: Mutex<Sender<ClusterCommand>>,
    /// Requests to the agent it could not take (its queue was full).
    pub agent_queue_full: Arc<Counter>,
}

/// The pool addresses of the shards this host is active for: the control
/// core answers ARP for those alone and announces them when it takes a shard
/// over (`dataplane::slowpath::announce`, docs/nat-ha.md "On-link pools").
pub struct ShardPoolServer {
    stats: Arc<ClusterStats>,
    /// Pool address → shard (index into `stats.shards`).
    shard_of: HashMap<Ipv4Addr, usize>,
}

impl ShardPoolServer {
    pub fn new(shared: &ClusterShared) -> ShardPoolServer {
        let shard_of =
            shared.plan.shards.iter().enumerate().flat_map(|(i, s)| s.pool.iter().map(move |a| (*a, i))).collect();
        ShardPoolServer { stats: shared.stats.clone(), shard_of }
    }
}

impl PoolServer for ShardPoolServer {
    fn serves(&self, a: Ipv4Addr) -> bool {
        self.shard_of
            .get(&a)
            .and_then(|i| self.stats.shards.get(*i))
            .is_some_and(|s| s.role.get() == Role::Active.gauge())
    }
}

/// Requests waiting for the agent thread.
const AGENT_QUEUE: usize = 1024;
/// Datagrams read per loop at most.
const RECV_BURST: usize = 64;
/// How often commands and listings are answered.
const QUERY_MS: u64 = 10;

/// The mapping lcore in cluster mode.
pub struct ClusterCore {
    pub node: ClusterNode<Mbuf>,
    /// Per worker.
    pub requests: Vec<RingConsumer>,
    /// Per worker.
    pub answers: Vec<RingProducer>,
    pub socket: UdpSocket,
    /// By host id.
    pub peers: Vec<Option<SocketAddr>>,
    pub agent_tx: SyncSender<AgentRequest>,
    pub agent_rx: Receiver<AgentEvent>,
    pub agent_queue_full: Arc<Counter>,
    pub queries: Receiver<NatQuery>,
    pub commands: Receiver<ClusterCommand>,
    /// Block events for the log writer.
    pub log: SyncSender<NatEvent>,
    pub pool: Mempool,
    pub nat_stats: Arc<NatStats>,
    pub stop: Arc<AtomicBool>,
    /// Set on SIGTERM: hand every shard over, then say so in `left`.
    pub leave: Arc<AtomicBool>,
    pub left: Arc<AtomicBool>,
    pub idle: IdleBackoff,
    pub clock: NatClock,
}

/// The node's side effects over the rings, the socket and the channels.
struct CoreIo<'a> {
    answers: &'a mut [RingProducer],
    socket: &'a UdpSocket,
    peers: &'a [Option<SocketAddr>],
    agent: &'a SyncSender<AgentRequest>,
    agent_queue_full: &'a Counter,
    log: &'a SyncSender<NatEvent>,
    pool: &'a Mempool,
    stats: &'a NatStats,
}

impl NodeIo<Mbuf> for CoreIo<'_> {
    fn answer(&mut self, worker: usize, pkt: Mbuf) {
        let Some(ring) = self.answers.get_mut(worker) else { return };
        if ring.enqueue(pkt).is_err() {
            self.stats.drops.inc(DropReason::NatAnswerRingFull);
        }
    }

    fn invalidate(&mut self, worker: usize, keys: &[CacheKey]) {
        let Some(ring) = self.answers.get_mut(worker) else { return };
        for chunk in keys.chunks(INVALIDATIONS_PER_MBUF) {
            let sent = self.pool.alloc().and_then(|mut m| {
                let buf = m.append(chunk.len() * 16)?;
                msg::encode_invalidations(chunk, buf);
                m.set_tag(msg::TAG_INVALIDATE);
                ring.enqueue(m).ok()
            });
            if sent.is_none() {
                self.stats.drops.inc(DropReason::NatAnswerRingFull);
            }
        }
    }

    fn send(&mut self, host: u16, datagram: &[u8]) {
        let Some(addr) = self.peers.get(usize::from(host)).copied().flatten() else { return };
        if self.socket.send_to(datagram, addr).is_err() {
            self.stats.drops.inc(DropReason::NatClusterSendFailed);
        }
    }

    fn agent(&mut self, request: AgentRequest) {
        if let Err(TrySendError::Full(_)) = self.agent.try_send(request) {
            self.agent_queue_full.inc();
        }
    }

    fn log(&mut self, event: BlockEvent) {
        if self.log.try_send(NatEvent::Block(event)).is_err() {
            self.stats.events_dropped.inc();
        }
    }
}

macro_rules! io {
    ($s:ident) => {
        CoreIo {
            answers: &mut $s.answers,
            socket: &$s.socket,
            peers: &$s.peers,
            agent: &$s.agent_tx,
            agent_queue_full: &$s.agent_queue_full,
            log: &$s.log,
            pool: &$s.pool,
            stats: &$s.nat_stats,
        }
    };
}

impl ClusterCore {
    /// The loop; returns when `stop` is set.
    pub fn run(mut self) -> i32 {
        let mut burst = Burst::new();
        let mut buf = vec![0u8; 2048];
        let mut empty_polls = 0u32;
        let mut last_query = 0u64;
        let mut leaving = false;
        while !self.stop.load(Ordering::Relaxed) {
            let now_us = self.clock.now_us();
            let mut work = self.poll_rings(&mut burst, now_us);
            work += self.poll_socket(&mut buf, now_us);
            work += self.poll_agent(now_us);
            if self.leave.load(Ordering::Relaxed) && !leaving {
                leaving = true;
                self.node.leave(now_us);
                tracing::info!("nat cluster: leaving: handing every active shard over");
            }
            if leaving && self.node.left() {
                self.left.store(true, Ordering::Relaxed);
            }
            if now_us / 1000 >= last_query + QUERY_MS {
                last_query = now_us / 1000;
                self.answer_queries(now_us);
            }
            let mut io = io!(self);
            self.node.tick(now_us, &mut io);
            self.back_off(work, &mut empty_polls);
        }
        0
    }

    fn poll_rings(&mut self, burst: &mut Burst, now_us: u64) -> usize {
        let mut work = 0;
        for w in 0..self.requests.len() {
            work += self.requests[w].dequeue_burst(burst, 32);
            for m in burst.drain() {
                let tag = m.tag();
                let mut io = io!(self);
                if tag == msg::TAG_TOUCH {
                    self.node.touches(w, msg::decode_touches(m.data()), now_us, &mut io);
                } else {
                    self.node.request(m, w, tag, now_us, &mut io);
                }
            }
        }
        work
    }

    fn poll_socket(&mut self, buf: &mut [u8], now_us: u64) -> usize {
        let mut n = 0;
        while n < RECV_BURST {
            match self.socket.recv(buf) {
                Ok(len) => {
                    n += 1;
                    let mut io = io!(self);
                    self.node.datagram(&buf[..len], now_us, &mut io);
                }
                Err(_) => break,
            }
        }
        n
    }

    fn poll_agent(&mut self, now_us: u64) -> usize {
        let mut n = 0;
        while let Ok(e) = self.agent_rx.try_recv() {
            n += 1;
            log_agent_event(&e);
            let mut io = io!(self);
            self.node.agent_event(e, now_us, &mut io);
        }
        n
    }

    fn answer_queries(&mut self, now_us: u64) {
        while let Ok(q) = self.queries.try_recv() {
            let answer = if q.retire {
                // Retiring here would leave the standby's copies alive: a cluster retires
                // sessions by their timeouts and TCP state only.
                NatAnswer::Refused("clearing sessions is not supported in a NAT cluster (nat.cluster)".into())
            } else {
                NatAnswer::Sessions(self.node.sessions(&q.filter, q.limit))
            };
            let _ = q.reply.try_send(answer);
        }
        while let Ok(c) = self.commands.try_recv() {
            match c {
                ClusterCommand::View { reply } => {
                    let _ = reply.try_send(self.node.view(now_us));
                }
                ClusterCommand::Handover { shard, reply } => {
                    let shards: Vec<u16> = match shard {
                        Some(s) => vec![s],
                        None => (0..self.node.plan().shards.len() as u16)
                            .filter(|&s| self.node.role(s) == Some(dataplane::nat::cluster::node::Role::Active))
                            .collect(),
                    };
                    let mut out = Ok(String::new());
                    for s in shards {
                        match self.node.handover(s, now_us) {
                            Ok(()) => {
                                tracing::info!(shard = s, "nat cluster: handover started");
                                if let Ok(text) = out.as_mut() {
                                    text.push_str(&format!("shard {s}: handover started\n"));
                                }
                            }
                            Err(e) => out = Err(e),
                        }
                    }
                    let _ = reply.try_send(out);
                }
            }
        }
    }

    fn back_off(&self, work: usize, empty_polls: &mut u32) {
        if work > 0 {
            *empty_polls = 0;
            return;
        }
        *empty_polls = empty_polls.saturating_add(1);
        if self.idle.enabled && *empty_polls >= self.idle.empty_polls {
            std::thread::sleep(Duration::from_micros(u64::from(self.idle.sleep_us)));
        }
    }
}

fn log_agent_event(e: &AgentEvent) {
    match *e {
        AgentEvent::Acquired { shard, epoch, how, .. } => {
            let how = match how {
                HowAcquired::Fresh => "claimed",
                HowAcquired::Failover => "taken over",
                HowAcquired::Handover => "handed over",
            };
            tracing::info!(shard, epoch, how, "nat cluster: shard acquired");
        }
        AgentEvent::Lost { shard, host, epoch } => {
            tracing::warn!(shard, owner = host, epoch, "nat cluster: shard lost (a beat found a newer owner)")
        }
        AgentEvent::Owner { shard, host, epoch, mine } => {
            tracing::info!(shard, owner = host, epoch, mine, "nat cluster: shard owner")
        }
        AgentEvent::BeatOk { .. } => {}
    }
}

/// Starts the etcd agent's thread: requests from the mapping lcore, events
/// back, a round every few milliseconds (a beat every beat interval).
pub fn spawn_agent(
    mut core: AgentCore,
    mut store: etcd::EtcdOwners,
    requests: Receiver<AgentRequest>,
    events: Sender<AgentEvent>,
    clock: NatClock,
    stop: Arc<AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new().name("nat-agent".into()).spawn(move || {
        let mut out = Vec::with_capacity(64);
        let mut last_errors = 0;
        while !stop.load(Ordering::Relaxed) {
            while let Ok(r) = requests.try_recv() {
                core.request(r);
            }
            core.poll(&mut store, clock.now_us() / 1000, &mut out);
            for e in out.drain(..) {
                if events.send(e).is_err() {
                    return;
                }
            }
            if core.store_errors != last_errors {
                last_errors = core.store_errors;
                tracing::warn!(
                    errors = last_errors,
                    "nat cluster: etcd unreachable or refusing (allocation stops when the fence runs out)"
                );
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    })
}

/// Everything `app::nat` needs to start the cluster: the lcore, the agent,
/// and the shared view.
pub struct Started {
    pub core: ClusterCore,
    pub shared: Arc<ClusterShared>,
    pub agent: std::thread::JoinHandle<()>,
}

/// The parts [`start`] takes from the NAT wiring.
pub struct Parts {
    pub requests: Vec<RingConsumer>,
    pub answers: Vec<RingProducer>,
    pub queries: Receiver<NatQuery>,
    pub log: SyncSender<NatEvent>,
    pub pool: Mempool,
    pub nat_stats: Arc<NatStats>,
    pub stop: Arc<AtomicBool>,
    pub leave: Arc<AtomicBool>,
    pub left: Arc<AtomicBool>,
    pub idle: IdleBackoff,
    pub clock: NatClock,
}

/// Binds the cluster socket, allocates every shard's table and starts the
/// agent.
pub fn start(cl: &NatCluster, table: &dataplane::nat::NatConfig, parts: Parts) -> Result<Started> {
    let socket = UdpSocket::bind(cl.listen).with_context(|| {
        format!("nat.cluster.listen: cannot bind {} (is it an address of this namespace?)", cl.listen)
    })?;
    socket.set_nonblocking(true).context("nat.cluster.listen: non-blocking socket")?;
    let incarnation = crate::app::os_seeds().0 | 1;
    let node = ClusterNode::new(cl.plan.clone(), table, incarnation, parts.nat_stats.clone());
    let mut peers = vec![None; 65];
    for (id, addr) in &cl.peers {
        peers[usize::from(*id)] = Some(*addr);
    }
    let (agent_tx, agent_requests) = std::sync::mpsc::sync_channel(AGENT_QUEUE);
    let (agent_events, agent_rx) = std::sync::mpsc::channel();
    let store = etcd::EtcdOwners::new(cl.etcd.clone(), &cl.name, Duration::from_millis(cl.etcd_timeout_ms));
    let agent_core = AgentCore::new(cl.plan.host_id, incarnation, &cl.plan.shards, cl.agent);
    let agent = spawn_agent(agent_core, store, agent_requests, agent_events, parts.clock, parts.stop.clone())
        .context("starting the NAT cluster agent")?;
    let (commands_tx, commands) = std::sync::mpsc::channel();
    let agent_queue_full = Arc::new(Counter::default());
    tracing::info!(
        host = cl.plan.host_id,
        incarnation = format!("{incarnation:016x}"),
        listen = %cl.listen,
        shards = cl.plan.shards.len(),
        carried = cl.plan.local_shards().count(),
        "nat cluster: host starting"
    );
    let shared = Arc::new(ClusterShared {
        stats: node.stats().clone(),
        plan: cl.plan.clone(),
        commands: Mutex::new(commands_tx),
        agent_queue_full: agent_queue_full.clone(),
    });
    let core = ClusterCore {
        node,
        requests: parts.requests,
        answers: parts.answers,
        socket,
        peers,
        agent_tx,
        agent_rx,
        agent_queue_full,
        queries: parts.queries,
        commands,
        log: parts.log,
        pool: parts.pool,
        nat_stats: parts.nat_stats,
        stop: parts.stop,
        leave: parts.leave,
        left: parts.left,
        idle: parts.idle,
        clock: parts.clock,
    };
    Ok(Started { core, shared, agent })
}

/// The cluster's HTTP routes on the metrics address: `GET /nat/cluster`
/// (the view, [`ClusterView::render`]) and `POST /nat/cluster/handover`
/// (`?shard=N`, or every active shard). Returns (status, body).
pub fn route(shared: Option<&ClusterShared>, method: &str, path: &str) -> (&'static str, String) {
    let Some(shared) = shared else {
        return ("404 Not Found", "this appliance is not in a NAT cluster (nat.cluster)\n".into());
    };
    let (path, query) = path.split_once('?').unwrap_or((path, ""));
    match (method, path) {
        ("GET", "/nat/cluster") => match view(shared) {
            Some(v) => ("200 OK", v.render()),
            None => ("503 Service Unavailable", "the mapping lcore did not answer\n".into()),
        },
        ("POST", "/nat/cluster/handover") => {
            let shard = match query.split('&').find_map(|kv| kv.strip_prefix("shard=")) {
                Some(s) => match s.parse::<u16>() {
                    Ok(s) if usize::from(s) < shared.plan.shards.len() => Some(s),
                    _ => return ("400 Bad Request", format!("shard={s}: not a shard of the plan\n")),
                },
                None => None,
            };
            let (tx, rx) = std::sync::mpsc::sync_channel(1);
            if shared.commands.lock().map(|c| c.send(ClusterCommand::Handover { shard, reply: tx })).is_err() {
                return ("503 Service Unavailable", "the mapping lcore is gone\n".into());
            }
            match rx.recv_timeout(Duration::from_secs(2)) {
                Ok(Ok(text)) => ("200 OK", text),
                Ok(Err(e)) => ("409 Conflict", format!("{e}\n")),
                Err(_) => ("503 Service Unavailable", "the mapping lcore did not answer\n".into()),
            }
        }
        (_, "/nat/cluster") | (_, "/nat/cluster/handover") => {
            ("405 Method Not Allowed", "GET /nat/cluster, POST /nat/cluster/handover[?shard=N]\n".into())
        }
        _ => ("404 Not Found", "not found\n".into()),
    }
}

/// The cluster view from the mapping lcore (the CLI calls this too).
pub fn view(shared: &ClusterShared) -> Option<ClusterView> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    shared.commands.lock().ok()?.send(ClusterCommand::View { reply: tx }).ok()?;
    rx.recv_timeout(Duration::from_secs(2)).ok()
}
