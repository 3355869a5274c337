//! A whole cluster in one process: three [`ClusterNode`]s, their
//! [`AgentCore`]s over one in-memory etcd ([`MemStore`]), a network that
//! can lose, cut and partition, and per host a worker's [`FlowCache`] in
//! front of the node, as the appliance wires them. Flows are spread over
//! the live hosts by rendezvous hashing (what ECMP does: only a dead host's
//! flows move). Every packet the "server" sees is recorded, so the tests
//! check what crossed the wire: the public endpoint of each flow, and that
//! no public endpoint ever stood for two inside endpoints.

use std::collections::{HashMap, VecDeque};
use std::net::Ipv4Addr;
use std::sync::Arc;

use netwire::{ethernet, PacketBuf, VecBuf};

use super::agent::{AgentCore, AgentTiming, MemStore};
use super::node::{AgentRequest, ClusterNode, NodeIo, Role};
use super::shard::{tests::plan, ClusterPlan};
use crate::nat::alloc::BlockEvent;
use crate::nat::cache::{CacheKey, FlowCache, Touch};
use crate::nat::mapper::NatStats;
use crate::nat::msg::{self, Answer, ANSWER_LEN};
use crate::nat::session::Direction;
use crate::nat::translate::tests::build as pk;
use crate::nat::translate::{self, FlowKey, Proto};
use crate::nat::{mix64, NatConfig};
use crate::stats::DropReason;

#[derive(Default)]
struct SimIo {
    answers: Vec<(usize, VecBuf)>,
    invalidated: Vec<CacheKey>,
    sent: Vec<(u16, Vec<u8>)>,
    agent: Vec<AgentRequest>,
    log: Vec<BlockEvent>,
}

impl NodeIo<VecBuf> for SimIo {
    fn answer(&mut self, worker: usize, pkt: VecBuf) {
        self.answers.push((worker, pkt));
    }
    fn invalidate(&mut self, _worker: usize, keys: &[CacheKey]) {
        self.invalidated.extend_from_slice(keys);
    }
    fn send(&mut self, host: u16, datagram: &[u8]) {
        self.sent.push((host, datagram.to_vec()));
    }
    fn agent(&mut self, request: AgentRequest) {
        self.agent.push(request);
    }
    fn log(&mut self, event: BlockEvent) {
        self.log.push(event);
    }
}

pub(crate) struct Host {
    pub node: ClusterNode<VecBuf>,
    agent: AgentCore,
    io: SimIo,
    cache: FlowCache,
    touches: Vec<Touch>,
    pub nat_stats: Arc<NatStats>,
    pub up: bool,
    /// Cut off from etcd.
    pub etcd_cut: bool,
}

/// What the server side saw of a flow: (time ms, public endpoint).
pub(crate) type Seen = Vec<(u64, (Ipv4Addr, u16))>;

pub(crate) struct Sim {
    pub hosts: Vec<Host>,
    pub store: MemStore,
    pub now_us: u64,
    net: VecDeque<(u64, u16, u16, Vec<u8>)>,
    /// Percent of cluster datagrams lost.
    pub loss_pct: u64,
    /// Host pairs that cannot talk (both directions).
    pub cut: Vec<(u16, u16)>,
    rng: u64,
    /// Per flow (its outbound key): what the server saw.
    pub seen: HashMap<FlowKey, Seen>,
    /// Public endpoint (proto, addr, port) → inside endpoints seen behind it.
    pub behind: HashMap<(Proto, Ipv4Addr, u16), Vec<(Ipv4Addr, u16)>>,
    /// Inbound packets delivered to the wrong inside endpoint.
    pub misdelivered: u64,
    pub inbound_delivered: u64,
    pub latency: Duration,
}

/// Delivery delay of the simulated cluster network.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Duration {
    pub us: u64,
}

pub(crate) fn nat_config() -> NatConfig {
    NatConfig {
        mappings_max: 4096,
        sessions_max: 8192,
        subscribers_max: 1024,
        blocks_max: 1024,
        blocks_per_subscriber_max: 4,
        ..plan(1).1
    }
}

pub(crate) fn cluster_plan(host: u16) -> ClusterPlan {
    let mut p = plan(host).0;
    p.timing.holddown_ms = 1500;
    p
}

const AGENT: AgentTiming = AgentTiming { beat_interval_ms: 25, beat_stale_ms: 75, startup_grace_ms: 500 };
/// The worker cache's timing in cluster mode (docs/nat-ha.md).
const CACHE_IDLE_MS: u32 = 800;
const CACHE_REPORT_MS: u32 = 200;

fn frame(ip: Vec<u8>) -> VecBuf {
    let mut f = vec![0u8; ethernet::HEADER_LEN];
    f[12] = 0x08;
    f.extend(ip);
    VecBuf::from_frame(&f, 0)
}

impl Sim {
    pub fn new(seed: u64) -> Sim {
        let nat = nat_config();
        let store = MemStore::new(3);
        let hosts = (1..=3u16)
            .map(|h| {
                let nat_stats = Arc::new(NatStats::default());
                let p = cluster_plan(h);
                Host {
                    agent: AgentCore::new(h, 1000 + u64::from(h), &p.shards, AGENT),
                    node: ClusterNode::new(p, &nat, 1000 + u64::from(h), nat_stats.clone()),
                    io: SimIo::default(),
                    cache: FlowCache::new(4096, CACHE_IDLE_MS, CACHE_REPORT_MS, u64::from(h)),
                    touches: Vec::with_capacity(256),
                    nat_stats,
                    up: true,
                    etcd_cut: false,
                }
            })
            .collect();
        Sim {
            hosts,
            store,
            now_us: 1_000_000,
            net: VecDeque::new(),
            loss_pct: 0,
            cut: Vec::new(),
            rng: seed | 1,
            seen: HashMap::new(),
            behind: HashMap::new(),
            misdelivered: 0,
            inbound_delivered: 0,
            latency: Duration { us: 200 },
        }
    }

    fn random(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    pub fn host(&mut self, id: u16) -> &mut Host {
        &mut self.hosts[usize::from(id) - 1]
    }

    pub fn now_ms(&self) -> u64 {
        self.now_us / 1000
    }

    /// Kills a host (as `kill -9`: nothing more from it, its caches gone).
    pub fn kill(&mut self, id: u16) {
        self.host(id).up = false;
        self.net.retain(|d| d.1 != id && d.2 != id);
    }

    /// Advances time by `ms`, 1 ms per step.
    pub fn run_ms(&mut self, ms: u64) {
        for _ in 0..ms {
            self.step();
        }
    }

    fn step(&mut self) {
        self.now_us += 1000;
        let now_us = self.now_us;
        let now_ms = now_us / 1000;
        // Deliver what is due.
        while self.net.front().is_some_and(|d| d.0 <= now_us) {
            let (_, from, to, d) = self.net.pop_front().expect("front");
            let _ = from;
            let h = &mut self.hosts[usize::from(to) - 1];
            if h.up {
                h.node.datagram(&d, now_us, &mut h.io);
            }
        }
        for i in 0..self.hosts.len() {
            if !self.hosts[i].up {
                continue;
            }
            let mut events = Vec::new();
            {
                let store = &mut self.store;
                let h = &mut self.hosts[i];
                for r in h.io.agent.drain(..) {
                    h.agent.request(r);
                }
                if h.etcd_cut {
                    let mut dead = MemStore { unreachable: true, ..MemStore::new(3) };
                    h.agent.poll(&mut dead, now_ms, &mut events);
                } else {
                    h.agent.poll(store, now_ms, &mut events);
                }
                for e in events {
                    h.node.agent_event(e, now_us, &mut h.io);
                }
                let touches = std::mem::take(&mut h.touches);
                h.node.touches(0, touches.iter().copied(), now_us, &mut h.io);
                h.touches = touches;
                h.touches.clear();
                h.node.tick(now_us, &mut h.io);
            }
            self.collect(i);
        }
    }

    /// Takes a host's output: datagrams into the network, answers into its
    /// cache (and on to their destination), invalidations.
    fn collect(&mut self, i: usize) {
        let from = i as u16 + 1;
        let sent = std::mem::take(&mut self.hosts[i].io.sent);
        for (to, d) in sent {
            let cut = self.cut.iter().any(|&(a, b)| (a, b) == (from, to) || (b, a) == (from, to));
            let lost = self.loss_pct > 0 && self.random() % 100 < self.loss_pct;
            if !cut && !lost {
                let at = self.now_us + self.latency.us;
                self.net.push_back((at, from, to, d));
            }
        }
        let answers = std::mem::take(&mut self.hosts[i].io.answers);
        for (_, mut pkt) in answers {
            let answer = Answer::decode(pkt.data()).expect("answer header");
            assert!(pkt.adj(ANSWER_LEN));
            let now_ms = self.now_ms();
            for (key, rw) in answer.entries() {
                self.hosts[i].cache.insert(key, rw, 0, now_ms);
            }
            self.deliver(&pkt.data()[ethernet::HEADER_LEN..]);
        }
        let inval = std::mem::take(&mut self.hosts[i].io.invalidated);
        for key in inval {
            self.hosts[i].cache.remove(key);
        }
    }

    /// A translated packet reaches its destination. Its payload names the
    /// inside endpoint it belongs to (as a real client would write it).
    fn deliver(&mut self, ip: &[u8]) {
        let k = translate::flow_key(ip).expect("translated packet");
        let id = &ip[28..34];
        let inside = (Ipv4Addr::new(id[0], id[1], id[2], id[3]), u16::from_be_bytes([id[4], id[5]]));
        if k.dst.octets()[0] == 203 {
            let flow = FlowKey { src: inside.0, sport: inside.1, ..k };
            let now = self.now_ms();
            self.seen.entry(flow).or_default().push((now, (k.src, k.sport)));
            let owners = self.behind.entry((k.proto, k.src, k.sport)).or_default();
            if !owners.contains(&inside) {
                owners.push(inside);
            }
        } else {
            self.inbound_delivered += 1;
            if (k.dst, k.dport) != inside {
                self.misdelivered += 1;
            }
        }
    }

    /// The live host a flow's packets reach (rendezvous hashing over the
    /// live hosts: what ECMP with dead next hops skipped does).
    pub fn host_for(&self, key: &FlowKey) -> u16 {
        let h = mix64(u64::from(u32::from(key.src)) << 16 ^ u64::from(key.sport) ^ u64::from(u32::from(key.dst)) << 32);
        (1..=3u16)
            .filter(|&id| self.hosts[usize::from(id) - 1].up)
            .max_by_key(|&id| mix64(h ^ u64::from(id)))
            .expect("a live host")
    }

    fn packet(src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16), inside: (Ipv4Addr, u16)) -> VecBuf {
        let mut id = inside.0.octets().to_vec();
        id.extend_from_slice(&inside.1.to_be_bytes());
        frame(pk::ip(src.0, dst.0, 17, &[], &pk::udp(src.0, dst.0, src.1, dst.1, &id, false)))
    }

    /// One outbound UDP packet of `flow` (src inside, dst server) through
    /// the host ECMP picks: translated from the cache, or handed to the node.
    pub fn send_out(&mut self, flow: FlowKey) {
        let host = self.host_for(&flow);
        self.send_via(host, Direction::Outbound, flow, (flow.src, flow.sport));
    }

    /// The server's answer to the public endpoint `public` of `flow`.
    pub fn send_in(&mut self, flow: FlowKey, public: (Ipv4Addr, u16)) {
        let back = FlowKey { proto: flow.proto, src: flow.dst, sport: flow.dport, dst: public.0, dport: public.1 };
        let host = self.host_for(&back);
        self.send_via(host, Direction::Inbound, back, (flow.src, flow.sport));
    }

    fn send_via(&mut self, host: u16, dir: Direction, key: FlowKey, inside: (Ipv4Addr, u16)) {
        let i = usize::from(host) - 1;
        let now_ms = self.now_ms();
        let now_us = self.now_us;
        let mut pkt = Self::packet((key.src, key.sport), (key.dst, key.dport), inside);
        let h = &mut self.hosts[i];
        match h.cache.lookup(CacheKey::new(dir, &key), 0, now_ms) {
            Some((rw, touch)) => {
                if let Some(t) = touch {
                    h.touches.push(t);
                }
                let ip = &mut pkt.data_mut()[ethernet::HEADER_LEN..];
                match dir {
                    Direction::Outbound => translate::rewrite_src(ip, rw.addr, rw.port).unwrap(),
                    Direction::Inbound => translate::rewrite_dst(ip, rw.addr, rw.port).unwrap(),
                }
                let ip = pkt.data()[ethernet::HEADER_LEN..].to_vec();
                self.deliver(&ip);
            }
            None => {
                let tag = if dir == Direction::Outbound { msg::TAG_OUTBOUND } else { msg::TAG_INBOUND };
                h.node.request(pkt, 0, tag, now_us, &mut h.io);
                self.collect(i);
            }
        }
    }

    /// Drops of a reason on every host.
    pub fn drops(&self, reason: DropReason) -> u64 {
        self.hosts.iter().map(|h| h.nat_stats.drops.get(reason)).sum()
    }

    /// Public endpoints that stood for more than one inside endpoint.
    pub fn reused(&self) -> Vec<String> {
        self.behind.iter().filter(|(_, v)| v.len() > 1).map(|(k, v)| format!("{k:?} <- {v:?}")).collect()
    }

    /// Flows whose public endpoint changed (how many), among those seen.
    pub fn changed(&self) -> usize {
        self.seen.values().filter(|v| v.windows(2).any(|w| w[0].1 != w[1].1)).count()
    }

    /// The latest public endpoint of each flow.
    pub fn publics(&self) -> HashMap<FlowKey, (Ipv4Addr, u16)> {
        self.seen.iter().filter_map(|(k, v)| v.last().map(|l| (*k, l.1))).collect()
    }

    pub fn role(&self, host: u16, shard: u16) -> Option<Role> {
        self.hosts[usize::from(host) - 1].node.role(shard)
    }
}

/// `n` flows of `subscribers` subscribers to two servers.
pub(crate) fn flows(subscribers: u8, per_subscriber: u16) -> Vec<FlowKey> {
    let mut v = Vec::new();
    for s in 0..subscribers {
        for p in 0..per_subscriber {
            v.push(FlowKey {
                proto: Proto::Udp,
                src: Ipv4Addr::new(100, 64, 1, s),
                sport: 10_000 + p,
                dst: Ipv4Addr::new(203, 0, 113, 1 + (p % 2) as u8),
                dport: 9000,
            });
        }
    }
    v
}

/// Every flow sends a packet and gets an answer every `every_ms`, for `ms`.
pub(crate) fn traffic(sim: &mut Sim, flows: &[FlowKey], ms: u64, every_ms: u64) {
    for t in 0..ms {
        if t % every_ms == 0 {
            for f in flows {
                sim.send_out(*f);
            }
            let publics = sim.publics();
            for f in flows {
                if let Some(p) = publics.get(f) {
                    sim.send_in(*f, *p);
                }
            }
        }
        sim.run_ms(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settled(seed: u64) -> Sim {
        let mut sim = Sim::new(seed);
        sim.run_ms(100);
        for (host, shard) in [(1, 0), (2, 1), (3, 2)] {
            assert_eq!(sim.role(host, shard), Some(Role::Active), "host {host} shard {shard}");
        }
        sim
    }

    fn synced(sim: &Sim) -> bool {
        sim.hosts.iter().all(|h| h.node.view(sim.now_us).shards.iter().all(|s| s.role.is_none() || s.synced))
    }

    #[test]
    fn flows_through_every_host_share_their_subscribers_address() {
        let mut sim = settled(1);
        let fl = flows(12, 6);
        traffic(&mut sim, &fl, 300, 20);
        assert_eq!(sim.seen.len(), fl.len(), "every flow got through");
        assert!(sim.reused().is_empty(), "{:?}", sim.reused());
        assert_eq!(sim.changed(), 0);
        let publics = sim.publics();
        // Paired pooling across hosts: one public address per subscriber.
        for s in 0..12u8 {
            let addrs: std::collections::HashSet<Ipv4Addr> =
                fl.iter().filter(|f| f.src.octets()[3] == s).map(|f| publics[f].0).collect();
            assert_eq!(addrs.len(), 1, "subscriber {s}: {addrs:?}");
        }
        // Flows went through all three hosts, some to a remote owner.
        let hosts: std::collections::HashSet<u16> = fl.iter().map(|f| sim.host_for(f)).collect();
        assert_eq!(hosts.len(), 3);
        assert!(sim.hosts.iter().map(|h| h.node.stats().remote_requests.get()).sum::<u64>() > 0);
        assert!(sim.hosts.iter().map(|h| h.node.stats().served_requests.get()).sum::<u64>() > 0);
        assert_eq!(sim.misdelivered, 0);
        assert!(sim.inbound_delivered > 0);
        // EIM across hosts: the same inside endpoint to another server, via whatever host.
        let f = fl[0];
        let other = FlowKey { dst: Ipv4Addr::new(203, 0, 113, 9), ..f };
        sim.send_out(other);
        sim.run_ms(5);
        assert_eq!(sim.publics()[&other], publics[&f], "endpoint-independent mapping");
        assert!(synced(&sim));
    }

    #[test]
    fn a_killed_host_is_replaced_and_synced_flows_keep_their_endpoints() {
        let mut sim = settled(2);
        let fl = flows(12, 6);
        traffic(&mut sim, &fl, 300, 20);
        assert!(synced(&sim));
        let before = sim.publics();
        let activated: u64 = sim.hosts.iter().map(|h| h.node.stats().sessions_activated.get()).sum();
        assert_eq!(activated, 0);
        sim.kill(1);
        traffic(&mut sim, &fl, 1500, 20);
        assert_eq!(sim.role(2, 0), Some(Role::Active), "host 2 took shard 0");
        assert_eq!(sim.hosts[1].node.owner(0).host, 2);
        assert_eq!(sim.hosts[2].node.owner(0).host, 2, "host 3 learnt it");
        let after = sim.publics();
        for f in &fl {
            assert_eq!(after[f], before[f], "{f:?} kept its public endpoint");
        }
        assert!(sim.reused().is_empty(), "{:?}", sim.reused());
        assert_eq!(sim.misdelivered, 0);
        let st = sim.hosts[1].node.stats();
        assert_eq!(st.takeovers.get(), 1);
        assert!(st.sessions_activated.get() > 0);
        assert_eq!(st.sessions_adopted.get(), 0, "everything was synced: nothing to adopt");
        // New flows of shard 0's subscribers get mappings after the hold-down.
        let fresh = flows(24, 1);
        traffic(&mut sim, &fresh[12..], 1200, 20);
        assert!(fresh[12..].iter().all(|f| sim.seen.contains_key(f)), "new flows served after the hold-down");
        assert!(sim.reused().is_empty(), "{:?}", sim.reused());
    }

    #[test]
    fn graceful_handover_keeps_every_session_and_drops_nothing() {
        let mut sim = settled(3);
        let fl = flows(12, 6);
        traffic(&mut sim, &fl, 300, 20);
        let before = sim.publics();
        let now = sim.now_us;
        sim.host(1).node.handover(0, now).unwrap();
        traffic(&mut sim, &fl, 300, 10);
        assert_eq!(sim.role(2, 0), Some(Role::Active));
        assert_eq!(sim.role(1, 0), Some(Role::Standby));
        // New flows during and after: served at once (no hold-down after a handover).
        let fresh = flows(24, 1);
        traffic(&mut sim, &fresh[12..], 100, 10);
        assert!(fresh[12..].iter().all(|f| sim.seen.contains_key(f)));
        let after = sim.publics();
        assert!(fl.iter().all(|f| after[f] == before[f]));
        for r in [
            DropReason::NatRemoteTimeout,
            DropReason::NatRemoteQueueFull,
            DropReason::NatVmsUnreachable,
            DropReason::NatNotAllocating,
        ] {
            assert_eq!(sim.drops(r), 0, "{r:?}");
        }
        assert_eq!(sim.hosts[1].node.stats().handovers.get(), 1);
        assert_eq!(sim.hosts[1].node.stats().sessions_adopted.get(), 0, "everything was synced");
        traffic(&mut sim, &fl, 300, 20);
        assert!(synced(&sim), "host 1 resynchronised as the standby");
    }

    #[test]
    fn a_partition_between_owner_and_standby_changes_no_owner() {
        let mut sim = settled(4);
        let fl = flows(12, 6);
        traffic(&mut sim, &fl, 200, 20);
        let before = sim.publics();
        sim.cut.push((1, 2));
        traffic(&mut sim, &fl, 1000, 20);
        assert_eq!(sim.role(1, 0), Some(Role::Active), "host 1 keeps shard 0: it still beats");
        assert_eq!(sim.hosts[1].node.stats().takeovers.get(), 0);
        sim.cut.clear();
        traffic(&mut sim, &fl, 600, 20);
        assert!(synced(&sim), "the standby resynchronised");
        let after = sim.publics();
        assert!(fl.iter().all(|f| after[f] == before[f]));
        assert!(sim.reused().is_empty(), "{:?}", sim.reused());
    }

    #[test]
    fn an_owner_cut_off_from_everything_is_fenced() {
        let mut sim = settled(5);
        let fl = flows(12, 6);
        traffic(&mut sim, &fl, 200, 20);
        sim.cut.extend([(1, 2), (1, 3)]);
        sim.host(1).etcd_cut = true;
        // New flows keep arriving everywhere, host 1 included.
        let fresh = flows(40, 2);
        traffic(&mut sim, &fresh, 2500, 20);
        assert_eq!(sim.role(2, 0), Some(Role::Active));
        assert!(sim.reused().is_empty(), "{:?}", sim.reused());
        assert_eq!(sim.misdelivered, 0);
        assert!(sim.drops(DropReason::NatNotAllocating) > 0, "host 1 stopped allocating");
    }

    /// Sessions the standby never heard of (its sync link was down when they
    /// were made), still in other hosts' caches when the owner dies: the new
    /// owner adopts them from the workers' activity reports before its
    /// hold-down ends, so they keep their endpoints and nothing is reused.
    #[test]
    fn unsynced_sessions_are_adopted_from_worker_reports() {
        let mut sim = settled(6);
        sim.cut.push((1, 2));
        // Flows of shard-0 subscribers that cross host 3 (host 2 cannot
        // reach the owner, host 1, during the cut).
        let fl: Vec<FlowKey> = flows(40, 3)
            .into_iter()
            .filter(|f| sim.host_for(f) == 3)
            .filter(|f| super::super::shard::ShardMap::new(sim.hosts[0].node.plan()).of_subscriber(f.src) == 0)
            .collect();
        assert!(fl.len() >= 6, "{}", fl.len());
        traffic(&mut sim, &fl, 300, 20);
        let before = sim.publics();
        assert_eq!(before.len(), fl.len());
        sim.kill(1);
        sim.cut.clear();
        traffic(&mut sim, &fl, 2000, 20);
        assert_eq!(sim.role(2, 0), Some(Role::Active));
        assert!(sim.hosts[1].node.stats().sessions_adopted.get() >= fl.len() as u64 / 2);
        let after = sim.publics();
        assert!(fl.iter().all(|f| after[f] == before[f]), "adopted flows kept their endpoints");
        // New flows after the hold-down do not collide with the adopted ones.
        let fresh = flows(60, 4);
        traffic(&mut sim, &fresh[160..], 500, 20);
        assert!(sim.reused().is_empty(), "{:?}", sim.reused());
        assert_eq!(sim.misdelivered, 0);
    }

    #[test]
    fn lossy_cluster_network_with_a_failure_never_reuses_an_endpoint() {
        for seed in 1..6 {
            let mut sim = settled(100 + seed);
            sim.loss_pct = 5;
            let fl = flows(16, 4);
            traffic(&mut sim, &fl, 400, 20);
            sim.kill(1 + (seed % 3) as u16);
            let fresh = flows(30, 2);
            traffic(&mut sim, &fresh, 2500, 25);
            assert!(sim.reused().is_empty(), "seed {seed}: {:?}", sim.reused());
            assert_eq!(sim.misdelivered, 0, "seed {seed}");
        }
    }
}
