//! The Prometheus endpoint: `GET /metrics` (text exposition format), plus
//! `GET /neighbors` and `GET /routes`-style listings for people.
//!
//! Counters live in per-core blocks ([`dataplane::stats`]); a scrape sums them
//! with relaxed loads on this thread, builds a fresh `prometheus-client`
//! registry and encodes it. Nothing on the fast path knows metrics exist.
//! The HTTP server is a small blocking loop on its own (non-EAL) thread; it
//! serves one request per connection and is not a fast path.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter as PCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge as PGauge;
use prometheus_client::registry::Registry;

use std::sync::mpsc::Sender;
use std::sync::Mutex;

use crate::natcore::{NatClock, NatQuery};
use crate::worker::WorkerCounters;
use dataplane::fib::neigh::{NeighborState, NeighborTable};
use dataplane::nat::fast::NatWorkerCounters;
use dataplane::nat::mapper::NatStats;
use dataplane::nat::session::SessionFilter;
use dataplane::nat::translate::Proto;
use dataplane::pipeline::Pipeline;
use dataplane::stats::{ControlCounters, DropReason, HandOffKind, IcmpErrorKind, PuntReason};
use dataplane::storage::service::{ServiceCounters, LATENCY_BOUNDS_US, OPS};

type Labels = Vec<(String, String)>;

/// What a scrape reads.
pub struct MetricsSource {
    /// Port names, by config index.
    pub port_names: Vec<String>,
    pub ports: Vec<Arc<rte::Port>>,
    pub workers: Vec<Arc<WorkerCounters>>,
    pub control: Arc<ControlCounters>,
    pub neigh: Arc<NeighborTable>,
    pub pool: rte::Mempool,
    /// (ring name, ring)
    pub rings: Vec<(String, Arc<rte::MbufRing>)>,
    pub tsc_hz: u64,
    pub pipeline: Arc<Pipeline>,
    /// Per worker: one block of counters per local SID.
    pub sid_counters: Vec<Arc<Vec<dataplane::srv6::SidCounters>>>,
    /// Per worker: what input did besides verdicts (completed checksums).
    pub input_counters: Vec<Arc<dataplane::stats::InputCounters>>,
    /// The NAT mapping server's figures (with NAT on).
    pub nat: Option<Arc<NatStats>>,
    /// Per worker: the NAT cache counters (with NAT on).
    pub nat_workers: Vec<Arc<NatWorkerCounters>>,
    /// Asks the mapping core for session listings (with NAT on).
    pub nat_query: Option<Mutex<Sender<NatQuery>>>,
    pub nat_clock: NatClock,
    /// The storage service's counters, one block per worker (with `storage:` configured).
    pub storage: Vec<Arc<ServiceCounters>>,
}

fn l(pairs: &[(&str, String)]) -> Labels {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect()
}

fn counter_family(reg: &mut Registry, name: &str, help: &str, samples: impl IntoIterator<Item = (Labels, u64)>) {
    let fam = Family::<Labels, PCounter>::default();
    for (labels, v) in samples {
        fam.get_or_create(&labels).inc_by(v);
    }
    reg.register(name, help, fam);
}

fn gauge_family(reg: &mut Registry, name: &str, help: &str, samples: impl IntoIterator<Item = (Labels, i64)>) {
    let fam = Family::<Labels, PGauge>::default();
    for (labels, v) in samples {
        fam.get_or_create(&labels).set(v);
    }
    reg.register(name, help, fam);
}

fn gauge_family_f64(reg: &mut Registry, name: &str, help: &str, samples: impl IntoIterator<Item = (Labels, f64)>) {
    let fam = Family::<Labels, PGauge<f64, std::sync::atomic::AtomicU64>>::default();
    for (labels, v) in samples {
        fam.get_or_create(&labels).set(v);
    }
    reg.register(name, help, fam);
}

impl MetricsSource {
    /// Renders every metric in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut reg = Registry::with_prefix("appliance");
        self.render_ports(&mut reg);
        self.render_verdicts(&mut reg);
        self.render_control(&mut reg);
        self.render_tables(&mut reg);
        self.render_lcores(&mut reg);
        self.render_srv6(&mut reg);
        if let Some(n) = &self.nat {
            self.render_nat(&mut reg, n);
        }
        self.render_storage(&mut reg);
        let mut out = String::new();
        encode(&mut out, &reg).expect("encoding into a String cannot fail");
        if !self.storage.is_empty() {
            let mut h = String::new();
            storage_text(&mut h, &self.storage);
            // Before the OpenMetrics end marker.
            match out.rfind("# EOF") {
                Some(i) => out.insert_str(i, &h),
                None => out.push_str(&h),
            }
        }
        out
    }

    fn port_name(&self, p: u16) -> String {
        self.port_names.get(usize::from(p)).cloned().unwrap_or_else(|| p.to_string())
    }

    /// Port counters: per queue from the workers, per device from the driver.
    fn render_ports(&self, reg: &mut Registry) {
        let pname = |p: u16| self.port_name(p);
        let rx = self.workers.iter().flat_map(|w| w.rx.iter());
        counter_family(
            reg,
            "port_rx_packets",
            "Packets received, per port and rx queue",
            rx.clone().map(|q| (l(&[("port", pname(q.port)), ("queue", q.queue.to_string())]), q.packets.get())),
        );
        counter_family(
            reg,
            "port_rx_bytes",
            "Bytes received, per port and rx queue",
            rx.map(|q| (l(&[("port", pname(q.port)), ("queue", q.queue.to_string())]), q.bytes.get())),
        );
        let tx = self.workers.iter().flat_map(|w| w.tx.iter());
        counter_family(
            reg,
            "port_tx_packets",
            "Packets sent, per port and tx queue",
            tx.clone().map(|q| (l(&[("port", pname(q.port)), ("queue", q.queue.to_string())]), q.packets.get())),
        );
        counter_family(
            reg,
            "port_tx_bytes",
            "Bytes sent, per port and tx queue",
            tx.map(|q| (l(&[("port", pname(q.port)), ("queue", q.queue.to_string())]), q.bytes.get())),
        );
        let hw: Vec<(String, rte::PortStats)> =
            self.ports.iter().enumerate().map(|(i, p)| (pname(i as u16), p.stats())).collect();
        counter_family(
            reg,
            "port_rx_missed",
            "Packets the device dropped for lack of rx descriptors (driver counter)",
            hw.iter().map(|(n, s)| (l(&[("port", n.clone())]), s.rx_missed)),
        );
        counter_family(
            reg,
            "port_rx_nombuf",
            "Receive failures for lack of mbufs (driver counter)",
            hw.iter().map(|(n, s)| (l(&[("port", n.clone())]), s.rx_nombuf)),
        );
        counter_family(
            reg,
            "port_errors",
            "Receive and transmit errors (driver counters)",
            hw.iter().flat_map(|(n, s)| {
                [
                    (l(&[("port", n.clone()), ("direction", "rx".into())]), s.rx_errors),
                    (l(&[("port", n.clone()), ("direction", "tx".into())]), s.tx_errors),
                ]
            }),
        );
    }

    /// What the workers did with packets: drops, punts, hand-offs, injections.
    fn render_verdicts(&self, reg: &mut Registry) {
        counter_family(
            reg,
            "drops",
            "Packets dropped, by reason (workers and control core)",
            DropReason::ALL.iter().map(|&r| {
                let v = self.workers.iter().map(|w| w.drops.get(r)).sum::<u64>()
                    + self.control.drops.get(r)
                    + self.nat.as_ref().map_or(0, |n| n.drops.get(r));
                (l(&[("reason", r.label().to_owned())]), v)
            }),
        );
        counter_family(
            reg,
            "punts",
            "Packets handed from workers to the control core, by reason",
            PuntReason::ALL
                .iter()
                .map(|&r| (l(&[("reason", r.label().to_owned())]), self.workers.iter().map(|w| w.punts.get(r)).sum())),
        );
        counter_family(
            reg,
            "handoffs",
            "Packets handed from workers to another part of the fast path, by destination",
            HandOffKind::ALL
                .iter()
                .map(|&k| (l(&[("to", k.label().to_owned())]), self.workers.iter().map(|w| w.handoffs.get(k)).sum())),
        );
        let completed = PCounter::<u64>::default();
        completed.inc_by(self.input_counters.iter().map(|c| c.checksums_completed.get()).sum());
        reg.register(
            "checksums_completed",
            "Partial TCP/UDP checksums (a kernel host's checksum offload) completed on input",
            completed,
        );
        counter_family(
            reg,
            "injected",
            "Packets the control core handed to workers for transmission",
            self.workers.iter().map(|w| (l(&[("lcore", w.lcore.to_string())]), w.injected.get())),
        );
    }

    /// The control core: ICMP errors, ARP/ND, resolutions, held packets.
    fn render_control(&self, reg: &mut Registry) {
        counter_family(
            reg,
            "icmp_errors_sent",
            "ICMP and ICMPv6 errors sent, by type",
            IcmpErrorKind::ALL.iter().map(|&k| (l(&[("type", k.label().to_owned())]), self.control.icmp_errors.get(k))),
        );
        let c = &self.control;
        for (name, help, v) in [
            ("arp_requests_sent", "ARP requests sent to resolve next hops", c.arp_requests_sent.get()),
            ("arp_replies_sent", "ARP replies sent for our addresses", c.arp_replies_sent.get()),
            ("nd_solicits_sent", "Neighbour solicitations sent", c.nd_solicits_sent.get()),
            ("nd_adverts_sent", "Neighbour advertisements sent for our addresses", c.nd_adverts_sent.get()),
            ("neighbors_learned", "Neighbour entries created or confirmed", c.neighbors_learned.get()),
            ("resolutions_started", "Neighbour resolutions started", c.resolutions_started.get()),
            ("resolutions_failed", "Neighbour resolutions that got no answer", c.resolutions_failed.get()),
            ("held_packets_sent", "Packets held during resolution and then sent", c.held_packets_sent.get()),
            ("punts_handled", "Punted packets handled by the control core", c.punts_handled.get()),
        ] {
            counter_family(reg, name, help, [(Labels::new(), v)]);
        }
        gauge_family(
            reg,
            "pending_packets",
            "Packets held waiting for neighbour resolution",
            [(Labels::new(), c.pending.get() as i64)],
        );
    }

    /// Neighbour table, mempool and rings.
    fn render_tables(&self, reg: &mut Registry) {
        let mut by_state = [0i64; NeighborState::ALL.len()];
        for e in self.neigh.entries() {
            by_state[NeighborState::ALL.iter().position(|s| *s == e.state).unwrap_or(0)] += 1;
        }
        gauge_family(
            reg,
            "neighbors",
            "Neighbour table entries, by state",
            NeighborState::ALL.iter().zip(by_state).map(|(s, n)| (l(&[("state", s.name().to_owned())]), n)),
        );
        gauge_family(
            reg,
            "neighbors_capacity",
            "Neighbour table capacity",
            [(Labels::new(), self.neigh.capacity() as i64)],
        );
        gauge_family(reg, "mempool_in_use", "Mbufs in use", [(Labels::new(), i64::from(self.pool.in_use()))]);
        gauge_family(reg, "mempool_capacity", "Mbufs in the pool", [(Labels::new(), i64::from(self.pool.capacity()))]);
        gauge_family(
            reg,
            "ring_used",
            "Packets waiting in a ring between cores",
            self.rings.iter().map(|(n, r)| (l(&[("ring", n.clone())]), i64::from(r.stats().used))),
        );
        gauge_family(
            reg,
            "ring_capacity",
            "Capacity of a ring between cores",
            self.rings.iter().map(|(n, r)| (l(&[("ring", n.clone())]), i64::from(r.stats().capacity))),
        );
    }

    /// Worker lcores: busy and idle cycles, idle back-off.
    fn render_lcores(&self, reg: &mut Registry) {
        counter_family(
            reg,
            "lcore_busy_cycles",
            "TSC cycles of poll loops that found work",
            self.workers.iter().map(|w| (l(&[("lcore", w.lcore.to_string())]), w.busy_cycles.get())),
        );
        counter_family(
            reg,
            "lcore_idle_cycles",
            "TSC cycles of poll loops that found no work (sleeps included)",
            self.workers.iter().map(|w| (l(&[("lcore", w.lcore.to_string())]), w.idle_cycles.get())),
        );
        counter_family(
            reg,
            "lcore_idle_sleeps",
            "Idle back-off pauses",
            self.workers.iter().map(|w| (l(&[("lcore", w.lcore.to_string())]), w.idle_sleeps.get())),
        );
        gauge_family_f64(
            reg,
            "lcore_idle_ratio",
            "Share of a worker's cycles spent idle since start",
            self.workers.iter().map(|w| {
                let (b, i) = (w.busy_cycles.get() as f64, w.idle_cycles.get() as f64);
                (l(&[("lcore", w.lcore.to_string())]), if b + i > 0.0 { i / (b + i) } else { 1.0 })
            }),
        );
        gauge_family(reg, "tsc_hz", "TSC frequency", [(Labels::new(), self.tsc_hz as i64)]);
    }

    /// Per local SID: packets, bytes, storage decisions, drops.
    fn render_srv6(&self, reg: &mut Registry) {
        let sids = self.pipeline.srv6().sids();
        let sum_sid = |i: usize, f: &dyn Fn(&dataplane::srv6::SidCounters) -> u64| -> u64 {
            self.sid_counters.iter().map(|w| w.get(i).map_or(0, f)).sum()
        };
        let sid_labels = |i: usize| {
            let s = &sids[i];
            l(&[("sid", s.sid.to_string()), ("behavior", s.behavior.name().to_owned())])
        };
        counter_family(
            reg,
            "srv6_sid_packets",
            "Packets addressed to a local SID",
            (0..sids.len()).map(|i| (sid_labels(i), sum_sid(i, &|c| c.packets.get()))),
        );
        counter_family(
            reg,
            "srv6_sid_bytes",
            "Bytes addressed to a local SID",
            (0..sids.len()).map(|i| (sid_labels(i), sum_sid(i, &|c| c.bytes.get()))),
        );
        counter_family(
            reg,
            "srv6_storage_decisions",
            "Storage steering decisions at a local storage SID",
            (0..sids.len()).filter(|i| sids[*i].behavior == dataplane::srv6::Behavior::Storage).flat_map(|i| {
                let mut a = sid_labels(i);
                a.push(("decision".into(), "accept".into()));
                let mut p = sid_labels(i);
                p.push(("decision".into(), "pass".into()));
                [(a, sum_sid(i, &|c| c.accepted.get())), (p, sum_sid(i, &|c| c.passed.get()))]
            }),
        );
        counter_family(
            reg,
            "srv6_sid_drops",
            "Packets a local SID dropped or answered with an error, by reason",
            (0..sids.len())
                .flat_map(|i| {
                    DropReason::ALL.iter().filter_map(move |&r| {
                        let v = sum_sid(i, &|c| c.drops.get(r));
                        (v > 0).then(|| {
                            let mut lb = sid_labels(i);
                            lb.push(("reason".into(), r.label().to_owned()));
                            (lb, v)
                        })
                    })
                })
                .collect::<Vec<_>>(),
        );
    }

    /// The storage service, summed over the workers.
    fn render_storage(&self, reg: &mut Registry) {
        if self.storage.is_empty() {
            return;
        }
        let total = |f: &dyn Fn(&ServiceCounters) -> u64| -> u64 { self.storage.iter().map(|s| f(s)).sum() };
        for (name, help, v) in [
            ("storage_queue_depth", "Storage requests held now, waiting for I/O", total(&|s| s.queue_depth.get())),
            (
                "storage_device_used_blocks",
                "4 KiB data blocks of the storage devices in use",
                total(&|s| s.device_used_blocks.get()),
            ),
            (
                "storage_device_free_blocks",
                "4 KiB data blocks of the storage devices free",
                total(&|s| s.device_free_blocks.get()),
            ),
        ] {
            gauge_family(reg, name, help, [(Labels::new(), v as i64)]);
        }
        for (name, help, v) in [
            ("storage_requests", "Requests to the storage service", total(&|s| s.requests.get())),
            ("storage_replies", "Replies of the storage service", total(&|s| s.replies.get())),
            (
                "storage_bad_requests",
                "Storage requests dropped or refused as malformed",
                total(&|s| s.bad_requests.get()),
            ),
            (
                "storage_busy",
                "Storage requests answered busy (request table or assembly buffers full)",
                total(&|s| s.busy.get()),
            ),
            (
                "storage_checksum_failures",
                "Chunks whose CRC32C failed on read (answered with status checksum)",
                total(&|s| s.checksum_failures.get()),
            ),
            ("storage_chunks_written", "Chunks made durable", total(&|s| s.chunks_written.get())),
            ("storage_written_bytes", "Object bytes made durable", total(&|s| s.bytes_written.get())),
            ("storage_read_bytes", "Object bytes sent in replies", total(&|s| s.bytes_read.get())),
            (
                "storage_handed_over",
                "Storage requests handed to the worker that owns the object",
                total(&|s| s.handed_over.get()),
            ),
            (
                "storage_assemblies_expired",
                "Chunks dropped incomplete (missing fragments)",
                total(&|s| s.assemblies_expired.get()),
            ),
        ] {
            counter_family(reg, name, help, [(Labels::new(), v)]);
        }
    }

    fn render_nat(&self, reg: &mut Registry, n: &NatStats) {
        let one = |v: u64| [(Labels::new(), v as i64)];
        let gauges: [(&str, &str, u64); 8] = [
            ("nat_sessions", "Live NAT sessions", n.sessions.get()),
            ("nat_mappings", "Live NAT mappings (endpoint-independent)", n.mappings.get()),
            ("nat_subscribers", "Subscribers holding port blocks", n.subscribers.get()),
            ("nat_blocks_allocated", "Port blocks held by subscribers", n.blocks_allocated.get()),
            ("nat_blocks_quarantined", "Released port blocks not yet reusable", n.blocks_quarantined.get()),
            ("nat_blocks_free", "Port blocks free in the pool", n.blocks_free.get()),
            ("nat_ports_quarantined", "Released ports not yet reusable", n.ports_quarantined.get()),
            ("nat_table_bytes", "Memory of the mapping server's tables (allocated at start)", n.memory_bytes.get()),
        ];
        for (name, help, v) in gauges {
            gauge_family(reg, name, help, one(v));
        }
        let counters: [(&str, &str, u64); 13] = [
            ("nat_mappings_created", "NAT mappings created", n.mappings_created.get()),
            ("nat_mappings_retired", "NAT mappings retired", n.mappings_retired.get()),
            ("nat_sessions_created", "NAT sessions created", n.sessions_created.get()),
            ("nat_sessions_retired", "NAT sessions retired", n.sessions_retired.get()),
            ("nat_ports_allocated", "Public ports allocated", n.ports_allocated.get()),
            ("nat_block_allocations", "Port blocks allocated to subscribers", n.blocks_allocated_total.get()),
            ("nat_block_releases", "Port blocks released by subscribers", n.blocks_released_total.get()),
            (
                "nat_subscriber_limit_hits",
                "New mappings refused by the per-subscriber block limit",
                n.subscriber_limit_hits.get(),
            ),
            ("nat_pool_exhausted", "New mappings refused for want of a free block", n.pool_exhausted.get()),
            ("nat_ports_preserved", "Mappings that kept the inside port", n.ports_preserved.get()),
            ("nat_touches", "Activity records applied by the mapping server", n.touches.get()),
            ("nat_touches_stale", "Activity records about sessions already retired", n.touches_stale.get()),
            (
                "nat_log_events_dropped",
                "Block log events lost because the log writer was behind",
                n.events_dropped.get(),
            ),
        ];
        for (name, help, v) in counters {
            counter_family(reg, name, help, [(Labels::new(), v)]);
        }
        counter_family(
            reg,
            "nat_requests",
            "Worker misses answered by the mapping server, by kind",
            [
                (l(&[("kind", "outbound".into())]), n.requests_outbound.get()),
                (l(&[("kind", "inbound".into())]), n.requests_inbound.get()),
                (l(&[("kind", "hairpin".into())]), n.requests_hairpin.get()),
            ],
        );
        let per_worker = |f: &dyn Fn(&NatWorkerCounters) -> u64| {
            self.nat_workers
                .iter()
                .zip(&self.workers)
                .map(|(c, w)| (l(&[("lcore", w.lcore.to_string())]), f(c)))
                .collect::<Vec<_>>()
        };
        counter_family(
            reg,
            "nat_cache_hits",
            "Packets translated from a worker's cache",
            per_worker(&|c| c.hits.get()),
        );
        counter_family(
            reg,
            "nat_cache_misses",
            "NAT packets without a usable cache entry",
            per_worker(&|c| c.misses.get()),
        );
        counter_family(
            reg,
            "nat_cache_evictions",
            "Live cache entries pushed out of a full bucket",
            per_worker(&|c| c.evictions.get()),
        );
        counter_family(
            reg,
            "nat_cache_inserts",
            "Cache entries installed from answers",
            per_worker(&|c| c.inserts.get()),
        );
        counter_family(
            reg,
            "nat_reports",
            "Activity reports sent to the mapping server",
            per_worker(&|c| c.reports.get()),
        );
    }

    /// `GET /nat/sessions?inside=A&public=A&remote=A&proto=udp&limit=N`:
    /// the mapping server's live sessions, one per line.
    pub fn nat_sessions_text(&self, query: &str) -> Result<String, String> {
        let Some(tx) = &self.nat_query else {
            return Err("NAT is not configured\n".into());
        };
        let mut filter = SessionFilter::default();
        let mut limit = 1000usize;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let addr = || v.parse().map_err(|_| format!("{k}: {v:?} is not an IPv4 address\n"));
            match k {
                "inside" => filter.inside_addr = Some(addr()?),
                "public" => filter.public_addr = Some(addr()?),
                "remote" => filter.remote_addr = Some(addr()?),
                "proto" => {
                    filter.proto = Some(match v {
                        "tcp" => Proto::Tcp,
                        "udp" => Proto::Udp,
                        "icmp" => Proto::Icmp,
                        _ => return Err(format!("proto: {v:?} is not tcp, udp or icmp\n")),
                    })
                }
                "limit" => limit = v.parse().map_err(|_| format!("limit: {v:?} is not a number\n"))?,
                _ => return Err(format!("unknown filter {k:?} (inside, public, remote, proto, limit)\n")),
            }
        }
        let (reply_tx, reply_rx) = std::sync::mpsc::sync_channel(1);
        tx.lock()
            .map_err(|_| "internal error\n".to_string())?
            .send(NatQuery { filter, limit, reply: reply_tx })
            .map_err(|_| "the mapping server is not running\n".to_string())?;
        let sessions = reply_rx
            .recv_timeout(Duration::from_secs(2))
            .map_err(|_| "the mapping server did not answer\n".to_string())?;
        let now = self.nat_clock.now_ms();
        let mut s = format!(
            "{:<5} {:<21} {:<21} {:<21} {:<11} {:>8} {:>10}\n",
            "proto", "inside", "public", "remote", "state", "idle_s", "expires_s"
        );
        for i in &sessions {
            let b = &i.binding;
            let _ = writeln!(
                s,
                "{:<5} {:<21} {:<21} {:<21} {:<11} {:>8} {:>10}",
                b.proto.name(),
                format!("{}:{}", b.inside_addr, b.inside_port),
                format!("{}:{}", b.public_addr, b.public_port),
                format!("{}:{}", b.remote_addr, b.remote_port),
                i.tcp_state.map_or("-", |t| t.name()),
                now.saturating_sub(i.last_ms) / 1000,
                i.expires_ms.saturating_sub(now) / 1000
            );
        }
        let _ = writeln!(s, "{} sessions shown", sessions.len());
        Ok(s)
    }

    /// A human-readable listing of the neighbour table.
    pub fn neighbors_text(&self) -> String {
        let mut entries: Vec<_> = self.neigh.entries().collect();
        entries.sort_by_key(|e| (e.port, e.ip));
        let mut s = format!("{:<10} {:<40} {:<18} {}\n", "port", "address", "mac", "state");
        for e in entries {
            let m = e.mac;
            let _ = writeln!(
                s,
                "{:<10} {:<40} {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}  {}",
                self.port_names.get(usize::from(e.port)).map(String::as_str).unwrap_or("?"),
                e.ip.to_string(),
                m[0],
                m[1],
                m[2],
                m[3],
                m[4],
                m[5],
                e.state.name()
            );
        }
        s
    }

    /// A human-readable listing of local SIDs and steering policies.
    pub fn srv6_text(&self) -> String {
        let mut s = String::from("local SIDs\n");
        let _ = writeln!(s, "  {:<40} {:<9} {:<22} {:>12} {:>12}", "sid", "behavior", "detail", "packets", "drops");
        for (i, sid) in self.pipeline.srv6().sids().iter().enumerate() {
            let sum = |f: &dyn Fn(&dataplane::srv6::SidCounters) -> u64| -> u64 {
                self.sid_counters.iter().map(|w| w.get(i).map_or(0, f)).sum()
            };
            let drops = sum(&|c| DropReason::ALL.iter().map(|&r| c.drops.get(r)).sum());
            let mut detail = String::new();
            if let Some((p, nh)) = sid.adjacency {
                detail = format!("via {nh} {}", self.port_names.get(usize::from(p)).map(String::as_str).unwrap_or("?"));
            }
            if let Some(pol) = sid.policy {
                detail = match pol {
                    dataplane::srv6::StoragePolicy::SrC { threshold } => format!("sr-c<{threshold}"),
                    other => other.name().to_owned(),
                };
            }
            if sid.psp {
                detail.push_str(" psp");
            }
            if sid.usd {
                detail.push_str(" usd");
            }
            let _ = writeln!(
                s,
                "  {:<40} {:<9} {:<22} {:>12} {:>12}",
                sid.sid.to_string(),
                sid.behavior.name(),
                detail.trim(),
                sum(&|c| c.packets.get()),
                drops
            );
        }
        s.push_str("steering policies\n");
        for p in self.pipeline.srv6().policies() {
            let segs: Vec<String> = p.segments.iter().map(|a| a.to_string()).collect();
            let _ = writeln!(
                s,
                "  {}/{} {} segments [{}]",
                p.prefix,
                p.len,
                if p.reduced { "H.Encaps.Red" } else { "H.Encaps" },
                segs.join(", ")
            );
        }
        s
    }

    /// A short summary of the totals, for the log at shutdown.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        for (i, name) in self.port_names.iter().enumerate() {
            let p = i as u16;
            let rx: u64 =
                self.workers.iter().flat_map(|w| &w.rx).filter(|q| q.port == p).map(|q| q.packets.get()).sum();
            let tx: u64 =
                self.workers.iter().flat_map(|w| &w.tx).filter(|q| q.port == p).map(|q| q.packets.get()).sum();
            let _ = writeln!(s, "  port {name}: rx_packets={rx} tx_packets={tx}");
        }
        for &r in DropReason::ALL {
            let v = self.workers.iter().map(|w| w.drops.get(r)).sum::<u64>()
                + self.control.drops.get(r)
                + self.nat.as_ref().map_or(0, |n| n.drops.get(r));
            if v > 0 {
                let _ = writeln!(s, "  drops{{reason={}}}={v}", r.label());
            }
        }
        for &r in PuntReason::ALL {
            let v: u64 = self.workers.iter().map(|w| w.punts.get(r)).sum();
            if v > 0 {
                let _ = writeln!(s, "  punts{{reason={}}}={v}", r.label());
            }
        }
        let completed: u64 = self.input_counters.iter().map(|c| c.checksums_completed.get()).sum();
        if completed > 0 {
            let _ = writeln!(s, "  checksums_completed={completed}");
        }
        if let Some(n) = &self.nat {
            let _ = writeln!(
                s,
                "  nat: sessions={} mappings={} mappings_created={} mappings_retired={} subscriber_limit_hits={}",
                n.sessions.get(),
                n.mappings.get(),
                n.mappings_created.get(),
                n.mappings_retired.get(),
                n.subscriber_limit_hits.get()
            );
        }
        let c = &self.control;
        let _ = writeln!(
            s,
            "  arp_replies_sent={} nd_adverts_sent={} icmp_errors_sent={}",
            c.arp_replies_sent.get(),
            c.nd_adverts_sent.get(),
            IcmpErrorKind::ALL.iter().map(|&k| c.icmp_errors.get(k)).sum::<u64>()
        );
        s
    }
}

/// Serves the endpoint on `addr` until `stop` is set. Bind errors are
/// returned before the thread starts, so a busy port fails start-up.
pub fn serve(
    addr: SocketAddr,
    source: Arc<MetricsSource>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let listener = TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    std::thread::Builder::new().name("metrics".into()).spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((stream, _)) => {
                    if let Err(e) = handle(stream, &source) {
                        tracing::debug!(error = %e, "metrics request failed");
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "metrics accept failed");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    })
}

fn handle(mut stream: TcpStream, source: &MetricsSource) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut buf = [0u8; 2048];
    let mut n = 0;
    while n < buf.len() {
        let k = stream.read(&mut buf[n..])?;
        if k == 0 {
            break;
        }
        n += k;
        if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") || buf[..n].windows(2).any(|w| w == b"\n\n") {
            break;
        }
    }
    let req = String::from_utf8_lossy(&buf[..n]);
    let mut parts = req.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (status, ctype, body) = match (method, path) {
        ("GET", "/metrics") => ("200 OK", "text/plain; version=0.0.4; charset=utf-8", source.render()),
        ("GET", "/neighbors") => ("200 OK", "text/plain; charset=utf-8", source.neighbors_text()),
        ("GET", "/srv6") => ("200 OK", "text/plain; charset=utf-8", source.srv6_text()),
        ("GET", p) if p == "/nat/sessions" || p.starts_with("/nat/sessions?") => {
            match source.nat_sessions_text(p.split_once('?').map_or("", |(_, q)| q)) {
                Ok(body) => ("200 OK", "text/plain; charset=utf-8", body),
                Err(e) => ("400 Bad Request", "text/plain; charset=utf-8", e),
            }
        }
        ("GET", "/") => {
            ("200 OK", "text/plain; charset=utf-8", "appliance: /metrics /neighbors /srv6 /nat/sessions\n".to_owned())
        }
        ("GET", _) => ("404 Not Found", "text/plain; charset=utf-8", "not found\n".to_owned()),
        _ => ("405 Method Not Allowed", "text/plain; charset=utf-8", "only GET\n".to_owned()),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())?;
    stream.flush()
}

/// The storage latency histograms in the text format (prometheus-client
/// builds histograms from observations only; these are single-writer
/// counters on the worker).
fn storage_text(out: &mut String, blocks: &[Arc<ServiceCounters>]) {
    out.push_str(
        "# HELP appliance_storage_latency_seconds Time from a storage request's arrival to its reply, by operation.\n",
    );
    out.push_str("# TYPE appliance_storage_latency_seconds histogram\n");
    for (i, op) in OPS.iter().enumerate() {
        let bucket = |b: usize| -> u64 { blocks.iter().map(|s| s.latency[i].buckets[b].get()).sum() };
        let mut cumulative = 0;
        for (b, bound) in LATENCY_BOUNDS_US.iter().enumerate() {
            cumulative += bucket(b);
            let _ = writeln!(
                out,
                "appliance_storage_latency_seconds_bucket{{op=\"{op}\",le=\"{}\"}} {cumulative}",
                *bound as f64 / 1e6
            );
        }
        cumulative += bucket(LATENCY_BOUNDS_US.len());
        let sum_us: u64 = blocks.iter().map(|s| s.latency[i].sum_us.get()).sum();
        let count: u64 = blocks.iter().map(|s| s.latency[i].count.get()).sum();
        let _ = writeln!(out, "appliance_storage_latency_seconds_bucket{{op=\"{op}\",le=\"+Inf\"}} {cumulative}");
        let _ = writeln!(out, "appliance_storage_latency_seconds_sum{{op=\"{op}\"}} {}", sum_us as f64 / 1e6);
        let _ = writeln!(out, "appliance_storage_latency_seconds_count{{op=\"{op}\"}} {count}");
    }
}
