//! One host of a NAT cluster: what its mapping lcore does (docs/nat-ha.md).
//!
//! ```text
//!  worker miss ─► request ─► shard of the flow ─► owner here? ── yes ─► local VMS: decide,
//!                                   │                                translate, answer the worker
//!                                   └─ no ─► park the packet, state request to the owner
//!                                            ◄─ reply: translate, answer  (timeout: drop)
//!  activity ─► owner here? refresh / adopt / invalidate : forward to the owner
//!  datagrams ─► heartbeats (liveness, owners), sync + acks, requests, replies,
//!               activity, invalidations, owner announcements, handovers
//!  tick ─► heartbeats, sync streams (send, retransmit, snapshots), takeover
//!          requests, handovers, expiry, parked timeouts, figures
//!  agent (etcd) ─► owners, acquisitions, beats (the allocation fence)
//! ```
//!
//! Pure: the caller gives the time and an [`NodeIo`] (the rings to the
//! workers, the cluster socket, the agent's queue, the block log). Nothing
//! here blocks; every queue and table is bounded and allocated at start
//! (the parked-request table, the sync windows, the message batches).

use std::net::Ipv4Addr;
use std::sync::Arc;

use netwire::{ethernet, PacketBuf};

use super::pending::{Job, Parked, Pending};
use super::record::SyncRecord;
use super::shard::{ClusterPlan, Owner, Ownership, ShardMap};
use super::stream::{SyncReceiver, SyncSender};
use super::wire::{self, Activity, Batch, Header, Kind, Op, OwnedShard, Reply, Request, Status, SyncAck};
use crate::nat::alloc::BlockEvent;
use crate::nat::cache::{CacheKey, Touch};
use crate::nat::mapper::NatStats;
use crate::nat::msg::{self, Answer, RequestKind, ANSWER_LEN};
use crate::nat::session::{Binding, Direction, NatEvent, NatTable, SessionFilter, SessionInfo, SessionState};
use crate::nat::translate::{self, FlowKey, Proto};
use crate::nat::{NatConfig, NatError, NullSink, Sink};
use crate::stats::{Counter, DropReason, Gauge};

/// What the node asks of the etcd agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentRequest {
    /// The owner `from` (at `epoch`) of a shard this host carries has gone
    /// silent: take the shard once its beat is stale.
    TakeOver { shard: u16, from: u16, epoch: u64 },
    /// The owner is heard again: forget the takeover.
    CancelTakeOver { shard: u16 },
    /// The owner (at `epoch`) handed the shard over and this host applied
    /// everything: take it (no staleness wait).
    TakeHandedOver { shard: u16, epoch: u64 },
}

/// How this host came to own a shard (decides the allocation hold-down).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HowAcquired {
    /// Nobody ever owned it: no cache anywhere can hold its bindings.
    Fresh,
    /// Its owner failed: hold allocation down (docs/nat-ha.md).
    Failover,
    /// Its owner handed it over, fully synced: allocate at once.
    Handover,
}

/// What the etcd agent tells the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentEvent {
    /// etcd says `host` owns `shard` at `epoch` (`mine`: this very process;
    /// this host's id with `mine` false is a previous incarnation's).
    Owner { shard: u16, host: u16, epoch: u64, mine: bool },
    /// This host took `shard` at `epoch` with a transaction sent at `sent_ms`.
    Acquired { shard: u16, epoch: u64, how: HowAcquired, sent_ms: u64 },
    /// A beat confirming every shard this host holds was sent at `sent_ms`.
    BeatOk { sent_ms: u64 },
    /// A beat failed: `shard` is now `host`'s at `epoch`.
    Lost { shard: u16, host: u16, epoch: u64 },
}

/// The node's side effects. The appliance implements it over its rings,
/// its UDP socket and its threads; tests over vectors.
pub trait NodeIo<P> {
    /// A translated packet with its answer header, for worker `worker`.
    fn answer(&mut self, worker: usize, pkt: P);
    /// Cache keys worker `worker` must forget.
    fn invalidate(&mut self, worker: usize, keys: &[CacheKey]);
    /// A datagram to host `host`.
    fn send(&mut self, host: u16, datagram: &[u8]);
    /// A request to the etcd agent.
    fn agent(&mut self, request: AgentRequest);
    /// A port block event for the subscriber log.
    fn log(&mut self, event: BlockEvent);
}

/// A VMS's role on this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Carried here but neither serving nor following (owner unknown, or
    /// this host's previous incarnation).
    Idle,
    /// Following the owner's stream.
    Standby,
    /// Serving.
    Active,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Idle => "idle",
            Role::Standby => "standby",
            Role::Active => "active",
        }
    }

    /// The value of the role gauge: 0 idle, 1 standby, 2 active.
    pub fn gauge(self) -> u64 {
        match self {
            Role::Idle => 0,
            Role::Standby => 1,
            Role::Active => 2,
        }
    }
}

/// Figures of one shard carried here (the node writes, the scrape reads).
#[derive(Debug, Default)]
pub struct ShardStats {
    pub role: Gauge,
    pub epoch: Gauge,
    pub owner: Gauge,
    pub sessions: Gauge,
    pub allocating: Gauge,
    pub synced: Gauge,
    pub lag_records: Gauge,
    pub lag_ms: Gauge,
    pub records_sent: Gauge,
    pub records_acked: Gauge,
    pub records_retransmitted: Gauge,
    pub sync_datagrams: Gauge,
    pub resyncs: Gauge,
    pub records_applied: Gauge,
    pub records_refused: Gauge,
}

/// Upper bounds (µs) of the remote request latency histogram.
pub const LATENCY_BOUNDS_US: [u64; 10] = [50, 100, 200, 500, 1000, 2000, 5000, 10_000, 50_000, 200_000];

/// Figures of the node.
#[derive(Debug)]
pub struct ClusterStats {
    /// By shard (all shards; only those carried here move).
    pub shards: Vec<ShardStats>,
    /// By host id (0..=64): 1 while heard from.
    pub peer_alive: Vec<Gauge>,
    pub takeovers: Counter,
    pub handovers: Counter,
    pub demotions: Counter,
    pub sessions_activated: Counter,
    pub sessions_adopted: Counter,
    pub invalidations: Counter,
    pub remote_requests: Counter,
    pub remote_replies: Counter,
    pub remote_rerouted: Counter,
    /// Requests this host answered for other hosts.
    pub served_requests: Counter,
    /// Cumulative counts per [`LATENCY_BOUNDS_US`] bucket, then +Inf.
    pub remote_latency: [Counter; LATENCY_BOUNDS_US.len() + 1],
    pub remote_latency_sum_us: Counter,
    pub activity_forwarded: Counter,
    pub activity_received: Counter,
    pub heartbeats_sent: Counter,
    pub datagrams_sent: Counter,
    pub bytes_sent: Counter,
    pub sync_bytes_sent: Counter,
    pub datagrams_received: Counter,
    pub datagrams_bad: Counter,
    /// Datagrams of a host with another plan fingerprint.
    pub peer_mismatch: Counter,
    pub parked: Gauge,
}

impl ClusterStats {
    pub fn new(shards: usize) -> ClusterStats {
        ClusterStats {
            shards: (0..shards).map(|_| ShardStats::default()).collect(),
            peer_alive: (0..=super::shard::HOST_ID_MAX).map(|_| Gauge::default()).collect(),
            takeovers: Counter::default(),
            handovers: Counter::default(),
            demotions: Counter::default(),
            sessions_activated: Counter::default(),
            sessions_adopted: Counter::default(),
            invalidations: Counter::default(),
            remote_requests: Counter::default(),
            remote_replies: Counter::default(),
            remote_rerouted: Counter::default(),
            served_requests: Counter::default(),
            remote_latency: std::array::from_fn(|_| Counter::default()),
            remote_latency_sum_us: Counter::default(),
            activity_forwarded: Counter::default(),
            activity_received: Counter::default(),
            heartbeats_sent: Counter::default(),
            datagrams_sent: Counter::default(),
            bytes_sent: Counter::default(),
            sync_bytes_sent: Counter::default(),
            datagrams_received: Counter::default(),
            datagrams_bad: Counter::default(),
            peer_mismatch: Counter::default(),
            parked: Gauge::default(),
        }
    }
}

/// A graceful handover in progress.
#[derive(Debug, Clone, Copy)]
struct Handing {
    started_ms: u64,
    last_sent_ms: u64,
}

/// A virtual mapping server carried here.
struct Vms {
    table: NatTable,
    role: Role,
    /// The epoch this host holds (while active).
    epoch: u64,
    /// Allocation hold-down end and fence end (ms).
    alloc_from_ms: u64,
    alloc_until_ms: u64,
    sender: SyncSender,
    receiver: SyncReceiver,
    /// The shard's other host.
    peer: u16,
    handing: Option<Handing>,
    last_resync_request_ms: u64,
    ack_due: Option<SyncAck>,
    /// Last time the owner's heartbeat listed this shard.
    owner_seen_ms: u64,
    takeover_asked: bool,
    handover_asked: bool,
}

impl Vms {
    fn may_allocate(&self, now_ms: u64) -> bool {
        self.role == Role::Active
            && self.handing.is_none()
            && now_ms >= self.alloc_from_ms
            && now_ms < self.alloc_until_ms
    }
}

/// Outgoing batches to one peer.
struct PeerOut {
    requests: Batch,
    replies: Batch,
    activity: Batch,
    invalidations: Batch,
}

impl PeerOut {
    fn new() -> PeerOut {
        PeerOut {
            requests: Batch::new(Kind::StateRequest),
            replies: Batch::new(Kind::StateReply),
            activity: Batch::new(Kind::Activity),
            invalidations: Batch::new(Kind::Invalidate),
        }
    }

    fn batch(&mut self, kind: Kind) -> &mut Batch {
        match kind {
            Kind::StateRequest => &mut self.requests,
            Kind::StateReply => &mut self.replies,
            Kind::Activity => &mut self.activity,
            _ => &mut self.invalidations,
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Peer {
    last_heard_ms: u64,
    incarnation: u64,
    alive: bool,
}

/// Events of the active tables: block events to the log queue, changes to
/// the shard's sync stream.
struct VmsSink<'a> {
    sender: &'a mut SyncSender,
    log: &'a mut Vec<BlockEvent>,
    now_ms: u64,
}

/// Block events held for [`NodeIo::log`] per call at most.
const LOG_QUEUE: usize = 4096;

impl Sink<NatEvent> for VmsSink<'_> {
    fn push(&mut self, event: NatEvent) {
        if let NatEvent::Block(b) = event {
            if self.log.len() < LOG_QUEUE {
                self.log.push(b);
            }
        }
        if let Some(r) = SyncRecord::from_event(&event) {
            self.sender.push(&r, self.now_ms);
        }
    }
}

/// How a step of a request ended.
enum Step {
    Done,
    Next,
}

/// Snapshot items walked per shard per tick.
const SNAPSHOT_BUDGET: u32 = 256;
/// How often parked requests are checked for their deadline, tables
/// expired and figures published.
const SLOW_TICK_MS: u64 = 10;
/// Sessions retired per shard per slow tick at most.
const EXPIRE_MAX: usize = 4096;
/// A parked request is re-sent at most this often (owner changes).
const SENDS_MAX: u8 = 6;
/// How often a handover message is repeated until the shard moves.
const HANDOVER_REPEAT_MS: u64 = 50;

/// One host's mapping lcore in a cluster. See the module doc.
pub struct ClusterNode<P> {
    plan: ClusterPlan,
    incarnation: u64,
    fingerprint: u32,
    map: ShardMap,
    owners: Ownership,
    vms: Vec<Option<Vms>>,
    peers: Vec<Peer>,
    out: Vec<Option<PeerOut>>,
    pending: Pending<P>,
    picked: Vec<u32>,
    log: Vec<BlockEvent>,
    scratch: Vec<u8>,
    invalid: Vec<CacheKey>,
    stats: Arc<ClusterStats>,
    nat_stats: Arc<NatStats>,
    /// Per shard: the table counters last folded into `nat_stats`.
    folded: Vec<[u64; 4]>,
    heartbeat_batch: Batch,
    /// `nat.blocks_per_subscriber_max`: records a snapshot item may emit.
    blocks_per_subscriber: u32,
    last_heartbeat_ms: u64,
    last_slow_ms: u64,
    leaving: bool,
}

impl<P: PacketBuf> ClusterNode<P> {
    /// Allocates the tables of every shard this host carries (`nat` with
    /// each shard's pool) and every queue. `incarnation`: a number unique
    /// to this process (peers notice a restart by it).
    pub fn new(plan: ClusterPlan, nat: &NatConfig, incarnation: u64, nat_stats: Arc<NatStats>) -> ClusterNode<P> {
        let t = plan.timing;
        let vms = plan
            .shards
            .iter()
            .map(|s| {
                let i = s.hosts.iter().position(|h| *h == plan.host_id)?;
                let mut table = NatTable::new(&plan.shard_config(nat, s.id));
                table.set_timeout_margin(t.timeout_margin_ms);
                table.set_refresh_sync(t.refresh_sync_ms);
                Some(Vms {
                    table,
                    role: Role::Idle,
                    epoch: 0,
                    alloc_from_ms: 0,
                    alloc_until_ms: 0,
                    sender: SyncSender::new(
                        t.sync_window_records as usize,
                        t.sync_retransmit_ms,
                        t.sync_retransmit_max,
                    ),
                    receiver: SyncReceiver::new(),
                    peer: s.hosts[1 - i],
                    handing: None,
                    last_resync_request_ms: 0,
                    ack_due: None,
                    owner_seen_ms: 0,
                    takeover_asked: false,
                    handover_asked: false,
                })
            })
            .collect();
        let hosts = usize::from(super::shard::HOST_ID_MAX) + 1;
        let out = (0..hosts)
            .map(|h| (h as u16 != plan.host_id && plan.hosts.contains(&(h as u16))).then(PeerOut::new))
            .collect();
        let shards = plan.shards.len();
        ClusterNode {
            map: ShardMap::new(&plan),
            owners: Ownership::new(shards),
            fingerprint: plan.fingerprint(),
            incarnation,
            vms,
            peers: vec![Peer::default(); hosts],
            out,
            pending: Pending::new(t.remote_requests_max as usize),
            picked: Vec::with_capacity(t.remote_requests_max as usize),
            log: Vec::with_capacity(LOG_QUEUE),
            scratch: vec![0; wire::DATAGRAM_MAX],
            invalid: Vec::with_capacity(wire::DATAGRAM_MAX / wire::INVALIDATE_LEN),
            stats: Arc::new(ClusterStats::new(shards)),
            nat_stats,
            folded: vec![[0; 4]; shards],
            heartbeat_batch: Batch::new(Kind::Heartbeat),
            blocks_per_subscriber: u32::from(nat.blocks_per_subscriber_max),
            last_heartbeat_ms: 0,
            last_slow_ms: 0,
            leaving: false,
            plan,
        }
    }

    pub fn stats(&self) -> &Arc<ClusterStats> {
        &self.stats
    }

    pub fn plan(&self) -> &ClusterPlan {
        &self.plan
    }

    pub fn owner(&self, shard: u16) -> Owner {
        self.owners.get(shard)
    }

    /// This host's role for `shard` (`None`: not carried here).
    pub fn role(&self, shard: u16) -> Option<Role> {
        self.vms.get(usize::from(shard))?.as_ref().map(|v| v.role)
    }

    /// The table of a shard carried here (tests, listings).
    pub fn table(&self, shard: u16) -> Option<&NatTable> {
        self.vms.get(usize::from(shard))?.as_ref().map(|v| &v.table)
    }

    fn me(&self) -> u16 {
        self.plan.host_id
    }

    fn header(&self, kind: Kind) -> Header {
        Header { kind, from: self.me(), fingerprint: self.fingerprint, incarnation: self.incarnation }
    }

    fn shard_of(&self, dir: Direction, key: &FlowKey) -> Option<u16> {
        match dir {
            Direction::Outbound => Some(self.map.of_subscriber(key.src)),
            Direction::Inbound => self.map.of_public(key.dst),
        }
    }

    fn is_active(&self, shard: u16) -> bool {
        self.owners.get(shard).host == self.me()
            && self.vms[usize::from(shard)].as_ref().is_some_and(|v| v.role == Role::Active)
    }

    fn alive(&self, host: u16) -> bool {
        host == self.me() || self.peers.get(usize::from(host)).is_some_and(|p| p.alive)
    }

    fn drop_packet(&self, pkt: P, reason: DropReason) {
        self.nat_stats.drops.inc(reason);
        drop(pkt);
    }

    // ---- requests from the workers ----

    /// A held packet from worker `worker` (`tag`: its kind, [`msg::TAG_OUTBOUND`]...).
    pub fn request(&mut self, mut pkt: P, worker: usize, tag: u32, now_us: u64, io: &mut impl NodeIo<P>) {
        let Some(kind) = RequestKind::from_tag(tag) else {
            return self.drop_packet(pkt, NatError::WrongKind.drop_reason());
        };
        let flow = match pkt.data_mut().get_mut(ethernet::HEADER_LEN..).ok_or(NatError::Malformed) {
            Ok(ip) => translate::parse_flow(ip),
            Err(e) => Err(e),
        };
        let flow = match flow {
            Ok(f) => f,
            Err(e) => return self.drop_packet(pkt, e.drop_reason()),
        };
        match kind {
            RequestKind::Outbound => self.nat_stats.requests_outbound.inc(),
            RequestKind::Inbound => self.nat_stats.requests_inbound.inc(),
            RequestKind::Hairpin => self.nat_stats.requests_hairpin.inc(),
        }
        let job = Job {
            worker: worker as u8,
            kind,
            icmp_error: flow.icmp_error,
            tcp_flags: flow.tcp_flags,
            dir: if kind == RequestKind::Inbound { Direction::Inbound } else { Direction::Outbound },
            key: flow.key,
            answer: Answer::default(),
            started_us: now_us,
        };
        self.run(pkt, job, 0, now_us, io);
    }

    fn op(job: &Job) -> Op {
        match (job.dir, job.icmp_error) {
            (Direction::Outbound, false) => Op::Outbound,
            (Direction::Outbound, true) => Op::LookupOutbound,
            (Direction::Inbound, false) => Op::Inbound,
            (Direction::Inbound, true) => Op::LookupInbound,
        }
    }

    /// Runs a job's steps here while its shards are owned here; parks it at
    /// the first step owned elsewhere.
    fn run(&mut self, mut pkt: P, mut job: Job, sends: u8, now_us: u64, io: &mut impl NodeIo<P>) {
        loop {
            let Some(shard) = self.shard_of(job.dir, &job.key) else {
                return self.drop_packet(pkt, DropReason::NatNoMapping);
            };
            let handing = self.vms[usize::from(shard)].as_ref().is_some_and(|v| v.handing.is_some());
            if !self.is_active(shard) || handing {
                return self.park(pkt, job, shard, sends, now_us, io);
            }
            let r = self.decide(shard, Self::op(&job), &job.key, job.tcp_flags, now_us / 1000);
            match advance(&mut pkt, &mut job, r) {
                Ok(Step::Next) => continue,
                Ok(Step::Done) => return self.complete(pkt, &job, io),
                Err(e) => return self.drop_packet(pkt, e.drop_reason()),
            }
        }
    }

    /// A decision of the local active VMS of `shard`.
    fn decide(&mut self, shard: u16, op: Op, key: &FlowKey, tcp_flags: u8, now_ms: u64) -> Result<Binding, NatError> {
        let Some(v) = self.vms[usize::from(shard)].as_mut() else { return Err(NatError::NoMapping) };
        let allocating = v.may_allocate(now_ms);
        v.table.set_allocating(allocating);
        let mut sink = VmsSink { sender: &mut v.sender, log: &mut self.log, now_ms };
        match op {
            Op::Outbound => v.table.outbound(key, tcp_flags, now_ms, &mut sink),
            Op::Inbound => v.table.inbound(key, tcp_flags, now_ms, &mut sink),
            Op::LookupOutbound => v.table.lookup_outbound(key).ok_or(NatError::NoMapping),
            Op::LookupInbound => v.table.lookup_inbound(key),
        }
    }

    fn complete(&mut self, mut pkt: P, job: &Job, io: &mut impl NodeIo<P>) {
        if !netwire::grow_front(&mut pkt, ANSWER_LEN) {
            return self.drop_packet(pkt, DropReason::NatMalformed);
        }
        job.answer.encode(pkt.data_mut());
        io.answer(usize::from(job.worker), pkt);
        self.flush_log(io);
    }

    fn flush_log(&mut self, io: &mut impl NodeIo<P>) {
        for e in self.log.drain(..) {
            io.log(e);
        }
    }

    /// Parks a job whose shard is owned elsewhere (or by nobody reachable)
    /// and sends its request when the owner is known and alive.
    fn park(&mut self, pkt: P, job: Job, shard: u16, sends: u8, now_us: u64, io: &mut impl NodeIo<P>) {
        if sends >= SENDS_MAX {
            return self.drop_packet(pkt, DropReason::NatVmsUnreachable);
        }
        let owner = self.owners.get(shard).host;
        let handing = self.vms[usize::from(shard)].as_ref().is_some_and(|v| v.handing.is_some());
        let target = if owner != 0 && owner != self.me() && self.alive(owner) && !handing { owner } else { 0 };
        let now_ms = now_us / 1000;
        let parked = Parked {
            pkt,
            job,
            shard,
            sent_to: target,
            sent_us: now_us,
            deadline_ms: now_ms + self.plan.timing.remote_request_timeout_ms,
            sends: sends + u8::from(target != 0),
        };
        let id = match self.pending.insert(parked) {
            Ok(id) => id,
            Err(p) => return self.drop_packet(p.pkt, DropReason::NatRemoteQueueFull),
        };
        if target != 0 {
            self.stats.remote_requests.inc();
            let r = Request { id, op: Self::op(&job), tcp_flags: job.tcp_flags, key: job.key };
            self.push_entry(target, Kind::StateRequest, io, |e| r.encode(e));
        }
    }

    /// Re-sends (or runs here) the parked requests of `shard` that do not
    /// wait for its current owner.
    fn redispatch(&mut self, shard: u16, now_us: u64, io: &mut impl NodeIo<P>) {
        let owner = self.owners.get(shard).host;
        let mut picked = std::mem::take(&mut self.picked);
        self.pending.select(&mut picked, |p| p.shard == shard && (p.sent_to != owner || owner == 0));
        for &id in &picked {
            if let Some(p) = self.pending.remove(id) {
                if p.sent_to != 0 {
                    self.stats.remote_rerouted.inc();
                }
                self.run(p.pkt, p.job, p.sends, now_us, io);
            }
        }
        self.picked = picked;
    }

    /// An activity report of worker `worker`.
    pub fn touches(
        &mut self,
        worker: usize,
        records: impl Iterator<Item = Touch>,
        now_us: u64,
        io: &mut impl NodeIo<P>,
    ) {
        let now_ms = now_us / 1000;
        for t in records {
            let Some((dir, key)) = t.key.parts() else {
                self.nat_stats.touches_stale.inc();
                continue;
            };
            let Some(shard) = self.shard_of(dir, &key) else { continue };
            if self.is_active(shard) {
                if !self.apply_touch(shard, dir, &key, (t.addr, t.port), t.tcp_flags, now_ms) {
                    io.invalidate(worker, &[t.key]);
                    self.stats.invalidations.inc();
                }
                continue;
            }
            let owner = self.owners.get(shard).host;
            if owner == 0 || owner == self.me() || !self.alive(owner) {
                continue;
            }
            self.stats.activity_forwarded.inc();
            let a = Activity { worker: worker as u8, tcp_flags: t.tcp_flags, key: t.key, rewrite: (t.addr, t.port) };
            self.push_entry(owner, Kind::Activity, io, |e| a.encode(e));
        }
        self.flush_log(io);
    }

    /// Refreshes the session of a worker's entry, or adopts it if the owner
    /// does not know it and its public endpoint is free. False: the entry
    /// is wrong here and its worker must drop it.
    fn apply_touch(
        &mut self,
        shard: u16,
        dir: Direction,
        key: &FlowKey,
        rewrite: (Ipv4Addr, u16),
        tcp_flags: u8,
        now_ms: u64,
    ) -> bool {
        let Some(v) = self.vms[usize::from(shard)].as_mut() else { return false };
        let mut sink = VmsSink { sender: &mut v.sender, log: &mut self.log, now_ms };
        if let Some(st) = v.table.session_state(dir, key) {
            let matches = match dir {
                Direction::Outbound => (st.public_addr, st.public_port) == rewrite,
                Direction::Inbound => (st.inside_addr, st.inside_port) == rewrite,
            };
            if matches {
                v.table.touch(dir, key, tcp_flags, now_ms, &mut sink);
            }
            return matches;
        }
        let icmp = key.proto == Proto::Icmp;
        let st = match dir {
            Direction::Outbound => SessionState {
                proto: key.proto,
                inside_addr: key.src,
                inside_port: key.sport,
                public_addr: rewrite.0,
                public_port: rewrite.1,
                remote_addr: key.dst,
                remote_port: if icmp { 0 } else { key.dport },
                tcp_seen: 0,
            },
            Direction::Inbound => SessionState {
                proto: key.proto,
                inside_addr: rewrite.0,
                inside_port: rewrite.1,
                public_addr: key.dst,
                public_port: key.dport,
                remote_addr: key.src,
                remote_port: if icmp { 0 } else { key.sport },
                tcp_seen: 0,
            },
        };
        // A TCP session whose opening was never seen here: assume it is
        // established (the longer timeout; it still closes on FIN or RST).
        let st = SessionState { tcp_seen: if key.proto == Proto::Tcp { 0x03 } else { 0 }, ..st };
        if v.table.upsert_session(&st, 0, now_ms, &mut sink).is_err() {
            return false;
        }
        v.table.touch(dir, key, tcp_flags, now_ms, &mut sink);
        self.stats.sessions_adopted.inc();
        true
    }

    // ---- datagrams ----

    /// A datagram from the cluster socket.
    pub fn datagram(&mut self, d: &[u8], now_us: u64, io: &mut impl NodeIo<P>) {
        let now_ms = now_us / 1000;
        let Some((h, body)) = wire::Header::decode(d) else {
            self.stats.datagrams_bad.inc();
            return;
        };
        if h.fingerprint != self.fingerprint {
            self.stats.peer_mismatch.inc();
            return;
        }
        if h.from == self.me() || self.out.get(usize::from(h.from)).is_none_or(Option::is_none) {
            self.stats.datagrams_bad.inc();
            return;
        }
        self.stats.datagrams_received.inc();
        self.heard(h.from, h.incarnation, now_us, io);
        match h.kind {
            Kind::Heartbeat => self.on_heartbeat(h.from, body, now_us, io),
            Kind::Sync => self.on_sync(h.from, body, now_ms),
            Kind::SyncAck => self.on_sync_ack(h.from, body, now_ms),
            Kind::StateRequest => self.on_requests(h.from, body, now_ms, io),
            Kind::StateReply => self.on_replies(h.from, body, now_us, io),
            Kind::Activity => self.on_activity(h.from, body, now_ms, io),
            Kind::Invalidate => self.on_invalidations(body, io),
            Kind::Owner => {
                if let Some((shard, host, epoch)) = wire::decode_owner(body) {
                    self.learn_owner(shard, host, epoch, now_us, io);
                }
            }
            Kind::Handover => self.on_handover(h.from, body, io),
        }
        self.flush_log(io);
    }

    /// Any datagram from `host`: it is alive; a new incarnation restarted.
    /// Requests that waited for it (it owns their shard but was silent) go now.
    fn heard(&mut self, host: u16, incarnation: u64, now_us: u64, io: &mut impl NodeIo<P>) {
        let p = &mut self.peers[usize::from(host)];
        let restarted = p.incarnation != 0 && p.incarnation != incarnation;
        let revived = !p.alive;
        p.incarnation = incarnation;
        p.last_heard_ms = now_us / 1000;
        p.alive = true;
        self.stats.peer_alive[usize::from(host)].set(1);
        if restarted {
            // Whatever it followed is gone: it will ask for a snapshot again.
            for v in self.vms.iter_mut().flatten().filter(|v| v.peer == host) {
                v.sender.detach();
            }
        }
        if revived {
            for shard in 0..self.vms.len() as u16 {
                if self.owners.get(shard).host == host {
                    self.redispatch(shard, now_us, io);
                }
            }
        }
    }

    /// Records a newer owner of `shard`; steps down if it is not this host
    /// any more; re-routes what waits for the shard.
    fn learn_owner(&mut self, shard: u16, host: u16, epoch: u64, now_us: u64, io: &mut impl NodeIo<P>) {
        if usize::from(shard) >= self.owners.iter().count() {
            return;
        }
        if !self.owners.update(shard, host, epoch) {
            return;
        }
        let me = self.me();
        let now_ms = now_us / 1000;
        if let Some(v) = self.vms[usize::from(shard)].as_mut() {
            v.owner_seen_ms = now_ms;
            if v.takeover_asked {
                v.takeover_asked = false;
                io.agent(AgentRequest::CancelTakeOver { shard });
            }
            v.handover_asked = false;
            if host != me {
                if v.role == Role::Active {
                    self.stats.demotions.inc();
                    v.table.reset();
                }
                v.role = Role::Standby;
                v.handing = None;
                v.sender.detach();
                v.receiver.reset();
            }
        }
        self.redispatch(shard, now_us, io);
    }

    fn on_heartbeat(&mut self, from: u16, body: &[u8], now_us: u64, io: &mut impl NodeIo<P>) {
        let now_ms = now_us / 1000;
        for e in wire::entries(Kind::Heartbeat, body) {
            let s = OwnedShard::decode(e);
            if usize::from(s.shard) >= self.vms.len() {
                continue;
            }
            self.learn_owner(s.shard, from, s.epoch, now_us, io);
            if self.owners.get(s.shard) == (Owner { host: from, epoch: s.epoch }) {
                if let Some(v) = self.vms[usize::from(s.shard)].as_mut() {
                    v.owner_seen_ms = now_ms;
                    if v.role == Role::Idle {
                        v.role = Role::Standby;
                    }
                    // The owner stopped feeding this standby (it gave up
                    // retransmitting, or restarted the stream): ask again.
                    if !s.attached && v.role == Role::Standby && !v.receiver.wants_resync() {
                        v.receiver.reset();
                    }
                    if v.takeover_asked {
                        v.takeover_asked = false;
                        io.agent(AgentRequest::CancelTakeOver { shard: s.shard });
                    }
                }
            }
        }
    }

    fn on_sync(&mut self, from: u16, body: &[u8], now_ms: u64) {
        let Some((shard, epoch, first, records)) = wire::decode_sync(body) else {
            self.stats.datagrams_bad.inc();
            return;
        };
        if usize::from(shard) >= self.vms.len() {
            return;
        }
        self.owners.update(shard, from, epoch);
        if self.owners.get(shard) != (Owner { host: from, epoch }) {
            return;
        }
        let Some(v) = self.vms[usize::from(shard)].as_mut() else { return };
        if v.role == Role::Active {
            return;
        }
        v.role = Role::Standby;
        if let Some(ack) = v.receiver.receive(epoch, first, records, &mut v.table, now_ms) {
            v.ack_due = Some(SyncAck { shard, epoch, acked: ack.seq, resync: ack.resync });
            if ack.resync {
                v.last_resync_request_ms = now_ms;
            }
        }
    }

    fn on_sync_ack(&mut self, from: u16, body: &[u8], now_ms: u64) {
        let Some(ack) = SyncAck::decode(body) else { return };
        let Some(v) = self.vms.get_mut(usize::from(ack.shard)).and_then(Option::as_mut) else { return };
        if v.role != Role::Active || v.epoch != ack.epoch || v.peer != from {
            return;
        }
        if ack.resync {
            v.sender.resync_requested(now_ms);
        } else {
            v.sender.on_ack(ack.acked, now_ms);
        }
    }

    /// State requests of another host: answered from the active tables here.
    fn on_requests(&mut self, from: u16, body: &[u8], now_ms: u64, io: &mut impl NodeIo<P>) {
        for e in wire::entries(Kind::StateRequest, body) {
            let Some(r) = Request::decode(e) else { continue };
            self.stats.served_requests.inc();
            let dir = match r.op {
                Op::Outbound | Op::LookupOutbound => Direction::Outbound,
                Op::Inbound | Op::LookupInbound => Direction::Inbound,
            };
            let Some(shard) = self.shard_of(dir, &r.key) else { continue };
            let owner = self.owners.get(shard);
            let mut reply = Reply {
                id: r.id,
                status: Status::NotOwner,
                proto: r.key.proto,
                owner: owner.host,
                epoch: owner.epoch,
                inside: (Ipv4Addr::UNSPECIFIED, 0),
                public: (Ipv4Addr::UNSPECIFIED, 0),
                remote: (Ipv4Addr::UNSPECIFIED, 0),
            };
            let handing = self.vms[usize::from(shard)].as_ref().is_some_and(|v| v.handing.is_some());
            if self.is_active(shard) && handing {
                reply.status = Status::HandingOver;
            } else if self.is_active(shard) {
                match self.decide(shard, r.op, &r.key, r.tcp_flags, now_ms) {
                    Ok(b) => {
                        reply.status = Status::Ok;
                        reply.inside = (b.inside_addr, b.inside_port);
                        reply.public = (b.public_addr, b.public_port);
                        reply.remote = (b.remote_addr, b.remote_port);
                    }
                    Err(e) => {
                        self.nat_stats.drops.inc(e.drop_reason());
                        let i = NatError::ALL.iter().position(|x| *x == e).unwrap_or(0);
                        reply.status = Status::Refused(i as u8);
                    }
                }
            }
            self.push_entry(from, Kind::StateReply, io, |e| reply.encode(e));
        }
    }

    fn on_replies(&mut self, from: u16, body: &[u8], now_us: u64, io: &mut impl NodeIo<P>) {
        for e in wire::entries(Kind::StateReply, body) {
            let Some(r) = Reply::decode(e) else { continue };
            let Some(p) = self.pending.get_mut(r.id) else { continue };
            if p.sent_to != from {
                continue;
            }
            let p = self.pending.remove(r.id).expect("just found");
            self.stats.remote_replies.inc();
            self.latency(now_us.saturating_sub(p.sent_us));
            if r.owner != 0 {
                self.learn_owner(p.shard, r.owner, r.epoch, now_us, io);
            }
            let mut pkt = p.pkt;
            let mut job = p.job;
            match r.status {
                Status::Ok => {
                    let b = Binding {
                        proto: r.proto,
                        inside_addr: r.inside.0,
                        inside_port: r.inside.1,
                        public_addr: r.public.0,
                        public_port: r.public.1,
                        remote_addr: r.remote.0,
                        remote_port: r.remote.1,
                        session: None,
                    };
                    match advance(&mut pkt, &mut job, Ok(b)) {
                        Ok(Step::Next) => self.run(pkt, job, p.sends, now_us, io),
                        Ok(Step::Done) => self.complete(pkt, &job, io),
                        Err(e) => self.drop_packet(pkt, e.drop_reason()),
                    }
                }
                Status::Refused(i) => {
                    let e = NatError::ALL.get(usize::from(i)).copied().unwrap_or(NatError::NoMapping);
                    self.drop_packet(pkt, e.drop_reason());
                }
                Status::NotOwner | Status::HandingOver => {
                    self.stats.remote_rerouted.inc();
                    // To the owner the answer names, or wait for the next one.
                    let wait = self.owners.get(p.shard).host == from;
                    self.park_waiting(pkt, job, p.shard, p.sends, now_us, io, wait);
                }
            }
        }
    }

    /// Parks a job that must wait for its shard's next owner (`wait`) or
    /// can go to the current one.
    #[allow(clippy::too_many_arguments)]
    fn park_waiting(
        &mut self,
        pkt: P,
        job: Job,
        shard: u16,
        sends: u8,
        now_us: u64,
        io: &mut impl NodeIo<P>,
        wait: bool,
    ) {
        if !wait {
            return self.run(pkt, job, sends, now_us, io);
        }
        let parked = Parked {
            pkt,
            job,
            shard,
            sent_to: 0,
            sent_us: now_us,
            deadline_ms: now_us / 1000 + self.plan.timing.remote_request_timeout_ms,
            sends,
        };
        if let Err(p) = self.pending.insert(parked) {
            self.drop_packet(p.pkt, DropReason::NatRemoteQueueFull);
        }
    }

    fn latency(&self, us: u64) {
        let s = &self.stats;
        s.remote_latency_sum_us.add(us);
        for (i, bound) in LATENCY_BOUNDS_US.iter().enumerate() {
            if us <= *bound {
                s.remote_latency[i].inc();
            }
        }
        s.remote_latency[LATENCY_BOUNDS_US.len()].inc();
    }

    fn on_activity(&mut self, from: u16, body: &[u8], now_ms: u64, io: &mut impl NodeIo<P>) {
        for e in wire::entries(Kind::Activity, body) {
            let a = Activity::decode(e);
            self.stats.activity_received.inc();
            let Some((dir, key)) = a.key.parts() else { continue };
            let Some(shard) = self.shard_of(dir, &key) else { continue };
            if !self.is_active(shard) {
                continue;
            }
            if !self.apply_touch(shard, dir, &key, a.rewrite, a.tcp_flags, now_ms) {
                self.stats.invalidations.inc();
                self.push_entry(from, Kind::Invalidate, io, |e| wire::encode_invalidation(e, a.worker, a.key));
            }
        }
    }

    fn on_invalidations(&mut self, body: &[u8], io: &mut impl NodeIo<P>) {
        let mut keys = std::mem::take(&mut self.invalid);
        for worker in 0..=u8::MAX {
            keys.clear();
            let mut any = false;
            for e in wire::entries(Kind::Invalidate, body) {
                let (w, key) = wire::decode_invalidation(e);
                any |= w >= worker;
                if w == worker {
                    keys.push(key);
                }
            }
            if !keys.is_empty() {
                io.invalidate(usize::from(worker), &keys);
            }
            if !any {
                break;
            }
        }
        self.invalid = keys;
    }

    fn on_handover(&mut self, from: u16, body: &[u8], io: &mut impl NodeIo<P>) {
        let Some((shard, epoch, last)) = wire::decode_handover(body) else { return };
        if self.owners.get(shard) != (Owner { host: from, epoch }) {
            return;
        }
        let Some(v) = self.vms.get_mut(usize::from(shard)).and_then(Option::as_mut) else { return };
        if v.role == Role::Standby && v.receiver.is_synced() && v.receiver.applied() >= last && !v.handover_asked {
            v.handover_asked = true;
            io.agent(AgentRequest::TakeHandedOver { shard, epoch });
        }
    }

    // ---- the agent ----

    /// An event of the etcd agent.
    pub fn agent_event(&mut self, event: AgentEvent, now_us: u64, io: &mut impl NodeIo<P>) {
        let fence = self.plan.timing.fence_ms;
        match event {
            AgentEvent::Owner { shard, host, epoch, mine } => {
                if host == self.me() && !mine {
                    // A previous incarnation's: the shard waits for a takeover.
                    self.owners.update(shard, host, epoch);
                    if let Some(v) = self.vms.get_mut(usize::from(shard)).and_then(Option::as_mut) {
                        v.role = Role::Idle;
                    }
                    self.redispatch(shard, now_us, io);
                } else if host != self.me() {
                    self.learn_owner(shard, host, epoch, now_us, io);
                }
            }
            AgentEvent::Lost { shard, host, epoch } => self.learn_owner(shard, host, epoch, now_us, io),
            AgentEvent::BeatOk { sent_ms } => {
                for v in self.vms.iter_mut().flatten().filter(|v| v.role == Role::Active) {
                    v.alloc_until_ms = v.alloc_until_ms.max(sent_ms + fence);
                }
            }
            AgentEvent::Acquired { shard, epoch, how, sent_ms } => {
                self.acquired(shard, epoch, how, sent_ms, now_us, io)
            }
        }
    }

    fn acquired(
        &mut self,
        shard: u16,
        epoch: u64,
        how: HowAcquired,
        sent_ms: u64,
        now_us: u64,
        io: &mut impl NodeIo<P>,
    ) {
        let now_ms = now_us / 1000;
        let t = self.plan.timing;
        let me = self.me();
        let Some(v) = self.vms.get_mut(usize::from(shard)).and_then(Option::as_mut) else { return };
        if epoch <= self.owners.get(shard).epoch && self.owners.get(shard).host != me {
            return;
        }
        if v.role == Role::Standby && v.receiver.is_synced() {
            self.stats.sessions_activated.add(v.table.session_count() as u64);
        } else if v.role != Role::Active {
            v.table.reset();
        }
        match how {
            HowAcquired::Failover => self.stats.takeovers.inc(),
            HowAcquired::Handover => self.stats.handovers.inc(),
            HowAcquired::Fresh => {}
        }
        v.role = Role::Active;
        v.epoch = epoch;
        v.alloc_until_ms = sent_ms + t.fence_ms;
        v.alloc_from_ms = match how {
            HowAcquired::Failover => now_ms + t.holddown_ms,
            HowAcquired::Fresh | HowAcquired::Handover => now_ms,
        };
        v.receiver.reset();
        v.sender.detach();
        v.handing = None;
        v.takeover_asked = false;
        v.handover_asked = false;
        self.owners.update(shard, me, epoch);
        let mut b = [0u8; wire::HEADER_LEN + 12];
        self.header(Kind::Owner).encode(&mut b);
        wire::encode_owner(&mut b[wire::HEADER_LEN..], shard, me, epoch);
        for i in 0..self.plan.hosts.len() {
            let h = self.plan.hosts[i];
            if h != me {
                self.sent(h, &b, io);
            }
        }
        self.redispatch(shard, now_us, io);
    }

    // ---- operator ----

    /// Starts a graceful handover of `shard` to its standby.
    pub fn handover(&mut self, shard: u16, now_us: u64) -> Result<(), String> {
        let alive = |h: u16| self.peers.get(usize::from(h)).is_some_and(|p| p.alive);
        let Some(v) = self.vms.get(usize::from(shard)).and_then(Option::as_ref) else {
            return Err(format!("shard {shard} is not carried by this host"));
        };
        if v.role != Role::Active {
            return Err(format!("shard {shard} is not active here ({})", v.role.name()));
        }
        if !alive(v.peer) {
            return Err(format!("shard {shard}: its standby, host {}, is not reachable", v.peer));
        }
        let v = self.vms[usize::from(shard)].as_mut().expect("checked");
        if v.handing.is_none() {
            v.handing = Some(Handing { started_ms: now_us / 1000, last_sent_ms: 0 });
        }
        Ok(())
    }

    /// Hands every active shard over (SIGTERM); see [`ClusterNode::left`].
    pub fn leave(&mut self, now_us: u64) {
        self.leaving = true;
        for shard in 0..self.vms.len() as u16 {
            let _ = self.handover(shard, now_us);
        }
    }

    /// Whether nothing is active here any more (or nothing could be handed
    /// over): the process may stop.
    pub fn left(&self) -> bool {
        self.vms.iter().flatten().all(|v| v.role != Role::Active || v.handing.is_none())
    }

    // ---- the clock ----

    /// Timers: heartbeats, liveness, sync streams, takeovers, handovers;
    /// every 10 ms expiry, deadlines and figures. Call it every loop.
    pub fn tick(&mut self, now_us: u64, io: &mut impl NodeIo<P>) {
        let now_ms = now_us / 1000;
        let t = self.plan.timing;
        if now_ms >= self.last_heartbeat_ms + t.heartbeat_interval_ms {
            self.last_heartbeat_ms = now_ms;
            self.heartbeat(io);
            self.liveness(now_us, io);
        }
        for shard in 0..self.vms.len() as u16 {
            if self.vms[usize::from(shard)].is_some() {
                self.tick_shard(shard, now_ms, io);
            }
        }
        if now_ms >= self.last_slow_ms + SLOW_TICK_MS {
            self.last_slow_ms = now_ms;
            self.expire(now_ms, io);
            self.deadlines(now_ms);
            self.publish(now_ms);
        }
        self.flush(io);
    }

    fn heartbeat(&mut self, io: &mut impl NodeIo<P>) {
        let me = self.me();
        let hdr = self.header(Kind::Heartbeat);
        let b = &mut self.heartbeat_batch;
        b.clear();
        for (shard, v) in self.vms.iter().enumerate() {
            let Some(v) = v.as_ref().filter(|v| v.role == Role::Active) else { continue };
            let Some(e) = b.entry() else { break };
            OwnedShard {
                shard: shard as u16,
                epoch: v.epoch,
                attached: v.sender.is_attached(),
                allocating: v.handing.is_none(),
            }
            .encode(e);
        }
        let d = b.finish(hdr);
        for &h in &self.plan.hosts {
            if h != me {
                self.stats.heartbeats_sent.inc();
                self.stats.datagrams_sent.inc();
                self.stats.bytes_sent.add(d.len() as u64);
                io.send(h, d);
            }
        }
    }

    /// Peers that went silent; shards whose owner stopped claiming them.
    fn liveness(&mut self, now_us: u64, io: &mut impl NodeIo<P>) {
        let now_ms = now_us / 1000;
        let t = self.plan.timing;
        let silence = t.heartbeat_interval_ms * u64::from(t.heartbeat_miss);
        let me = self.me();
        for i in 0..self.plan.hosts.len() {
            let h = self.plan.hosts[i];
            let p = &mut self.peers[usize::from(h)];
            if h == me || !p.alive || now_ms < p.last_heard_ms + silence {
                continue;
            }
            p.alive = false;
            self.stats.peer_alive[usize::from(h)].set(0);
            for v in self.vms.iter_mut().flatten().filter(|v| v.peer == h && v.role == Role::Active) {
                v.sender.detach();
            }
            // Requests sent there wait for the shard's next owner.
            let mut picked = std::mem::take(&mut self.picked);
            self.pending.select(&mut picked, |p| p.sent_to == h);
            for &id in &picked {
                if let Some(p) = self.pending.get_mut(id) {
                    p.sent_to = 0;
                }
            }
            self.picked = picked;
        }
        for shard in 0..self.vms.len() as u16 {
            let owner = self.owners.get(shard);
            let Some(v) = self.vms[usize::from(shard)].as_mut() else { continue };
            if v.role == Role::Active || owner.host == 0 || v.takeover_asked || self.leaving {
                continue;
            }
            if now_ms >= v.owner_seen_ms + silence {
                v.takeover_asked = true;
                io.agent(AgentRequest::TakeOver { shard, from: owner.host, epoch: owner.epoch });
            }
        }
    }

    fn tick_shard(&mut self, shard: u16, now_ms: u64, io: &mut impl NodeIo<P>) {
        let t = self.plan.timing;
        let me = self.me();
        let owner = self.owners.get(shard);
        let hdr_sync = self.header(Kind::Sync);
        let peer_alive = {
            let v = self.vms[usize::from(shard)].as_ref().expect("carried");
            self.peers.get(usize::from(v.peer)).is_some_and(|p| p.alive)
        };
        let per_item = self.blocks_per_subscriber.max(1);
        let Self { vms, scratch, stats, .. } = self;
        let v = vms[usize::from(shard)].as_mut().expect("carried");
        match v.role {
            Role::Active => {
                // Handover: once the standby has everything, ask it to take over.
                if let Some(h) = v.handing {
                    if now_ms >= h.started_ms + t.handover_timeout_ms || !peer_alive {
                        v.handing = None;
                    } else if v.sender.drained() && now_ms >= h.last_sent_ms + HANDOVER_REPEAT_MS {
                        let mut b = [0u8; wire::HEADER_LEN + 18];
                        Header { kind: Kind::Handover, ..hdr_sync }.encode(&mut b);
                        wire::encode_handover(&mut b[wire::HEADER_LEN..], shard, v.epoch, v.sender.last_seq());
                        v.handing = Some(Handing { last_sent_ms: now_ms, ..h });
                        stats.datagrams_sent.inc();
                        stats.bytes_sent.add(b.len() as u64);
                        io.send(v.peer, &b);
                    }
                }
                if !peer_alive {
                    return;
                }
                v.sender.step_snapshot(&v.table, SNAPSHOT_BUDGET, per_item, now_ms);
                let (epoch, peer) = (v.epoch, v.peer);
                v.sender.poll(now_ms, t.sync_flush_records as usize, |seq, recs| {
                    let n = wire::encode_sync(scratch, hdr_sync, shard, epoch, seq, recs);
                    stats.datagrams_sent.inc();
                    stats.bytes_sent.add(n as u64);
                    stats.sync_bytes_sent.add(n as u64);
                    io.send(peer, &scratch[..n]);
                });
            }
            Role::Standby | Role::Idle => {
                if owner.host == 0 || owner.host == me {
                    return;
                }
                let owner_alive = self.peers.get(usize::from(owner.host)).is_some_and(|p| p.alive);
                let v = self.vms[usize::from(shard)].as_mut().expect("carried");
                if owner_alive && v.receiver.wants_resync() && now_ms >= v.last_resync_request_ms + t.resync_retry_ms {
                    v.last_resync_request_ms = now_ms;
                    v.ack_due = Some(SyncAck { shard, epoch: owner.epoch, acked: 0, resync: true });
                }
            }
        }
    }

    fn expire(&mut self, now_ms: u64, io: &mut impl NodeIo<P>) {
        let Self { vms, log, .. } = self;
        for v in vms.iter_mut().flatten() {
            match v.role {
                Role::Active if v.handing.is_none() => {
                    let mut sink = VmsSink { sender: &mut v.sender, log, now_ms };
                    v.table.expire(now_ms, EXPIRE_MAX, &mut sink);
                }
                Role::Standby => {
                    v.table.expire(now_ms, EXPIRE_MAX, &mut NullSink);
                }
                _ => {}
            }
        }
        self.flush_log(io);
    }

    fn deadlines(&mut self, now_ms: u64) {
        let mut picked = std::mem::take(&mut self.picked);
        self.pending.select(&mut picked, |p| p.deadline_ms <= now_ms);
        for &id in &picked {
            if let Some(p) = self.pending.remove(id) {
                self.nat_stats.drops.inc(DropReason::NatRemoteTimeout);
                drop(p);
            }
        }
        self.picked = picked;
        self.stats.parked.set(self.pending.len() as u64);
    }

    /// Copies the figures to [`ClusterStats`] and the active tables' to [`NatStats`].
    fn publish(&mut self, now_ms: u64) {
        let (
            mut sessions,
            mut mappings,
            mut subscribers,
            mut blocks,
            mut quarantined,
            mut free,
            mut ports_q,
            mut bytes,
        ) = (0u64, 0u64, 0u64, 0u64, 0u64, 0u64, 0u64, 0u64);
        for (shard, v) in self.vms.iter().enumerate() {
            let Some(v) = v.as_ref() else { continue };
            let s = &self.stats.shards[shard];
            let o = self.owners.get(shard as u16);
            s.role.set(v.role.gauge());
            s.epoch.set(o.epoch);
            s.owner.set(u64::from(o.host));
            s.sessions.set(v.table.session_count() as u64);
            s.allocating.set(u64::from(v.may_allocate(now_ms)));
            s.synced.set(u64::from(v.role == Role::Active || v.receiver.is_synced()));
            s.lag_records.set(v.sender.lag_records());
            s.lag_ms.set(v.sender.lag_ms(now_ms));
            let st = v.sender.stats;
            s.records_sent.set(st.records_sent);
            s.records_acked.set(st.records_acked);
            s.records_retransmitted.set(st.records_retransmitted);
            s.sync_datagrams.set(st.datagrams);
            s.resyncs.set(st.resyncs);
            s.records_applied.set(v.receiver.stats.records_applied);
            s.records_refused.set(v.receiver.stats.refused);
            let t = &v.table;
            bytes += t.memory_bytes() as u64;
            let c = t.counters();
            let now = [c.mappings_created, c.sessions_created, c.mappings_retired, c.sessions_retired];
            let folded = &mut self.folded[shard];
            if v.role == Role::Active {
                let n = &self.nat_stats;
                for (i, counter) in [&n.mappings_created, &n.sessions_created, &n.mappings_retired, &n.sessions_retired]
                    .into_iter()
                    .enumerate()
                {
                    counter.add(now[i].saturating_sub(folded[i]));
                }
                sessions += t.session_count() as u64;
                mappings += t.mappings() as u64;
                subscribers += t.alloc().subscribers() as u64;
                blocks += t.alloc().blocks_allocated() as u64;
                quarantined += t.alloc().blocks_quarantined() as u64;
                free += t.alloc().blocks_free();
                ports_q += t.alloc().ports_quarantined() as u64;
            }
            *folded = now;
        }
        let n = &self.nat_stats;
        n.sessions.set(sessions);
        n.mappings.set(mappings);
        n.subscribers.set(subscribers);
        n.blocks_allocated.set(blocks);
        n.blocks_quarantined.set(quarantined);
        n.blocks_free.set(free);
        n.ports_quarantined.set(ports_q);
        n.memory_bytes.set(bytes);
        self.stats.parked.set(self.pending.len() as u64);
    }

    // ---- output ----

    fn sent(&self, host: u16, d: &[u8], io: &mut impl NodeIo<P>) {
        self.stats.datagrams_sent.inc();
        self.stats.bytes_sent.add(d.len() as u64);
        io.send(host, d);
    }

    /// Adds an entry to the batch of `kind` for `host`, sending the batch
    /// first when it is full.
    fn push_entry(&mut self, host: u16, kind: Kind, io: &mut impl NodeIo<P>, fill: impl FnOnce(&mut [u8])) {
        let hdr = self.header(kind);
        let stats = &self.stats;
        let Some(po) = self.out.get_mut(usize::from(host)).and_then(Option::as_mut) else { return };
        let b = po.batch(kind);
        if !b.has_room() {
            let d = b.finish(hdr);
            stats.datagrams_sent.inc();
            stats.bytes_sent.add(d.len() as u64);
            io.send(host, d);
            b.clear();
        }
        if let Some(e) = b.entry() {
            fill(e);
        }
    }

    /// Sends every partly filled batch and the sync acks that are due. Call
    /// it at the end of every loop (the tick does).
    pub fn flush(&mut self, io: &mut impl NodeIo<P>) {
        let me = self.me();
        for h in 0..self.out.len() {
            let Some(po) = self.out[h].as_mut() else { continue };
            for kind in [Kind::StateRequest, Kind::StateReply, Kind::Activity, Kind::Invalidate] {
                let b = po.batch(kind);
                if b.is_empty() {
                    continue;
                }
                let hdr = Header { kind, from: me, fingerprint: self.fingerprint, incarnation: self.incarnation };
                let d = b.finish(hdr);
                self.stats.datagrams_sent.inc();
                self.stats.bytes_sent.add(d.len() as u64);
                io.send(h as u16, d);
                b.clear();
            }
        }
        let hdr = self.header(Kind::SyncAck);
        for shard in 0..self.vms.len() {
            let owner = self.owners.get(shard as u16).host;
            let Some(v) = self.vms[shard].as_mut() else { continue };
            let Some(ack) = v.ack_due.take() else { continue };
            if owner == 0 || owner == me {
                continue;
            }
            let mut b = [0u8; wire::HEADER_LEN + SyncAck::LEN];
            hdr.encode(&mut b);
            ack.encode(&mut b[wire::HEADER_LEN..]);
            self.stats.datagrams_sent.inc();
            self.stats.bytes_sent.add(b.len() as u64);
            io.send(owner, &b);
        }
    }

    // ---- queries ----

    /// Live sessions of the active tables here matching `filter`, at most `limit`.
    pub fn sessions(&self, filter: &SessionFilter, limit: usize) -> Vec<SessionInfo> {
        self.vms
            .iter()
            .flatten()
            .filter(|v| v.role == Role::Active)
            .flat_map(|v| v.table.sessions(filter))
            .take(limit)
            .collect()
    }

    /// The cluster as this host sees it (`GET /nat/cluster`).
    pub fn view(&self, now_us: u64) -> ClusterView {
        let now_ms = now_us / 1000;
        let hosts = self
            .plan
            .hosts
            .iter()
            .map(|&h| {
                let p = self.peers[usize::from(h)];
                HostView {
                    id: h,
                    this: h == self.me(),
                    alive: self.alive(h),
                    incarnation: if h == self.me() { self.incarnation } else { p.incarnation },
                    silent_ms: if h == self.me() { 0 } else { now_ms.saturating_sub(p.last_heard_ms) },
                }
            })
            .collect();
        let shards = self
            .plan
            .shards
            .iter()
            .map(|s| {
                let o = self.owners.get(s.id);
                let v = self.vms[usize::from(s.id)].as_ref();
                ShardView {
                    id: s.id,
                    addresses: s.pool.len(),
                    first_address: s.pool[0],
                    hosts: s.hosts,
                    owner: o.host,
                    epoch: o.epoch,
                    role: v.map(|v| v.role),
                    allocating: v.is_some_and(|v| v.may_allocate(now_ms)),
                    handing_over: v.is_some_and(|v| v.handing.is_some()),
                    sessions: v.map_or(0, |v| v.table.session_count()),
                    synced: v.is_some_and(|v| v.role == Role::Active || v.receiver.is_synced()),
                    sync_seq: v.map_or(0, |v| v.sender.last_seq().max(v.receiver.applied())),
                    sync_acked: v.map_or(0, |v| v.sender.acked()),
                    lag_records: v.map_or(0, |v| v.sender.lag_records()),
                    lag_ms: v.map_or(0, |v| v.sender.lag_ms(now_ms)),
                    resyncs: v.map_or(0, |v| v.sender.stats.resyncs),
                }
            })
            .collect();
        ClusterView { host: self.me(), incarnation: self.incarnation, hosts, shards, parked: self.pending.len() }
    }
}

/// One step of a job with the decision `r`: translates the packet, gathers
/// its cache entries, and says whether a second step (the inbound half of a
/// hairpin) follows.
fn advance<P: PacketBuf>(pkt: &mut P, job: &mut Job, r: Result<Binding, NatError>) -> Result<Step, NatError> {
    let b = r?;
    let ip = pkt.data_mut().get_mut(ethernet::HEADER_LEN..).ok_or(NatError::Malformed)?;
    match job.dir {
        Direction::Outbound => {
            if job.icmp_error {
                translate::translate_icmp_error_outbound(ip, b.public_addr, b.public_port)?;
            } else {
                translate::rewrite_src(ip, b.public_addr, b.public_port)?;
                let [out, inb] = msg::entries_of(&b);
                job.answer.push(out);
                if job.kind == RequestKind::Outbound {
                    job.answer.push(inb);
                }
            }
            if job.kind != RequestKind::Hairpin {
                return Ok(Step::Done);
            }
            // The packet now comes from the public endpoint: an inbound
            // packet of the destination's mapping (maybe another shard).
            let key = FlowKey { src: b.public_addr, sport: b.public_port, ..job.key };
            job.key = if job.icmp_error { key } else { translate::flow_key(ip)? };
            job.dir = Direction::Inbound;
            Ok(Step::Next)
        }
        Direction::Inbound => {
            if job.icmp_error {
                translate::translate_icmp_error_inbound(ip, b.inside_addr, b.inside_port)?;
            } else {
                translate::rewrite_dst(ip, b.inside_addr, b.inside_port)?;
                let [out, inb] = msg::entries_of(&b);
                job.answer.push(inb);
                if job.kind == RequestKind::Inbound {
                    job.answer.push(out);
                }
            }
            Ok(Step::Done)
        }
    }
}

/// A host in [`ClusterView`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostView {
    pub id: u16,
    pub this: bool,
    pub alive: bool,
    pub incarnation: u64,
    pub silent_ms: u64,
}

/// A shard in [`ClusterView`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardView {
    pub id: u16,
    pub addresses: usize,
    pub first_address: Ipv4Addr,
    pub hosts: [u16; 2],
    pub owner: u16,
    pub epoch: u64,
    /// `None`: not carried here.
    pub role: Option<Role>,
    pub allocating: bool,
    pub handing_over: bool,
    pub sessions: usize,
    pub synced: bool,
    pub sync_seq: u64,
    pub sync_acked: u64,
    pub lag_records: u64,
    pub lag_ms: u64,
    pub resyncs: u64,
}

/// The cluster as one host sees it: what `GET /nat/cluster` (and the CLI)
/// shows ([`ClusterView::render`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterView {
    pub host: u16,
    pub incarnation: u64,
    pub hosts: Vec<HostView>,
    pub shards: Vec<ShardView>,
    pub parked: usize,
}

impl ClusterView {
    /// The listing as text, one line per host and per shard.
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let _ = writeln!(s, "host {} incarnation {:016x} parked_requests {}", self.host, self.incarnation, self.parked);
        let _ = writeln!(s, "host alive silent_ms incarnation");
        for h in &self.hosts {
            let _ = writeln!(
                s,
                "{:<4} {:<5} {:>9} {:016x}{}",
                h.id,
                if h.alive { "yes" } else { "no" },
                h.silent_ms,
                h.incarnation,
                if h.this { " (this host)" } else { "" }
            );
        }
        let _ = writeln!(
            s,
            "shard addresses          hosts owner epoch      role     alloc synced sessions  sync_seq  acked     lag lag_ms resyncs"
        );
        for sh in &self.shards {
            let role = match (sh.role, sh.handing_over) {
                (Some(_), true) => "handover",
                (Some(r), false) => r.name(),
                (None, _) => "-",
            };
            let _ = writeln!(
                s,
                "{:<5} {:<15}x{:<2} {}/{}   {:<5} {:<10} {:<8} {:<5} {:<6} {:>8} {:>9} {:>6} {:>7} {:>6} {:>7}",
                sh.id,
                sh.first_address,
                sh.addresses,
                sh.hosts[0],
                sh.hosts[1],
                sh.owner,
                sh.epoch,
                role,
                if sh.allocating { "yes" } else { "no" },
                if sh.synced { "yes" } else { "no" },
                sh.sessions,
                sh.sync_seq,
                sh.sync_acked,
                sh.lag_records,
                sh.lag_ms,
                sh.resyncs
            );
        }
        s
    }
}
