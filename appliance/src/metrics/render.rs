//! `GET /metrics`: every counter of the appliance in the Prometheus text format 0.0.4
//! ([`promtext`], which says why that format), with base units: seconds (TSC cycles are
//! divided by the TSC frequency at scrape time), bytes (device blocks are multiplied by the
//! block size), counters ending in `_total`. The reference of every metric is
//! `docs/metrics.md`; a unit test fails when a metric rendered here is missing from it.
//!
//! Rendering is pure: it reads a [`View`] (the per-core counter blocks, summed here with
//! relaxed loads) and the [`Readings`] taken from DPDK for this scrape (driver counters,
//! mempool and ring occupancy), so it is tested without DPDK.

use std::sync::Arc;

use dataplane::fib::neigh::{NeighborState, NeighborTable};
use dataplane::nat::fast::NatWorkerCounters;
use dataplane::nat::mapper::NatStats;
use dataplane::srv6::{Behavior, SidCounters, Srv6Tables};
use dataplane::stats::{ControlCounters, DropReason, HandOffKind, IcmpErrorKind, InputCounters, PuntReason};
use dataplane::storage::service::{ServiceCounters, LATENCY_BOUNDS_US, LATENCY_OPS, OPS, STATUS_SLOTS};
use netwire::storage::status;
use promtext::Writer;

use crate::worker::WorkerCounters;

/// What the program was built from (`appliance_build_info`).
#[derive(Debug, Clone)]
pub struct BuildInfo {
    pub version: &'static str,
    /// The git commit the binary was built from (build.rs), or `unknown`.
    pub git_commit: &'static str,
}

impl BuildInfo {
    /// This binary's.
    pub const CURRENT: BuildInfo =
        BuildInfo { version: env!("CARGO_PKG_VERSION"), git_commit: env!("APPLIANCE_GIT_COMMIT") };
}

/// The counters a scrape reads (see [`crate::metrics::MetricsSource`]).
pub struct View<'a> {
    /// Port names, by config index.
    pub port_names: &'a [String],
    pub workers: &'a [Arc<WorkerCounters>],
    pub control: &'a ControlCounters,
    pub neigh: &'a NeighborTable,
    pub tsc_hz: u64,
    /// The SRv6 tables as published now: the SIDs and their counter slots.
    pub srv6: &'a Srv6Tables,
    /// Per worker: one block per SID counter slot.
    pub sid_counters: &'a [Arc<Vec<SidCounters>>],
    pub nat: Option<&'a NatStats>,
    pub nat_workers: &'a [Arc<NatWorkerCounters>],
    pub storage: &'a [Arc<ServiceCounters>],
    /// Per worker: what input did besides its verdicts (partial checksums completed).
    pub input: &'a [Arc<InputCounters>],
    pub build: BuildInfo,
}

/// What DPDK reports at scrape time.
#[derive(Debug, Clone, Default)]
pub struct Readings {
    /// Driver counters, by config index of the port.
    pub ports: Vec<rte::PortStats>,
    /// Per mbuf pool: (NUMA socket, in use, capacity).
    pub pools: Vec<(u32, u32, u32)>,
    /// (ring name, occupancy)
    pub rings: Vec<(String, rte::RingStats)>,
    /// `rte_version()`, e.g. `DPDK 22.11.11`.
    pub dpdk_version: String,
}

/// Every metric, in the text format.
pub fn render(v: &View, r: &Readings) -> String {
    let mut w = Writer::new();
    build_info(&mut w, v, r);
    ports(&mut w, v, r);
    verdicts(&mut w, v);
    control(&mut w, v);
    tables(&mut w, v, r);
    lcores(&mut w, v);
    srv6(&mut w, v);
    if let Some(n) = v.nat {
        nat_mapper(&mut w, n);
        nat_workers(&mut w, v);
    }
    if !v.storage.is_empty() {
        storage_gauges(&mut w, v);
        storage_counters(&mut w, v);
        storage_latency(&mut w, v);
    }
    w.finish()
}

impl View<'_> {
    fn port_name(&self, p: u16) -> String {
        self.port_names.get(usize::from(p)).cloned().unwrap_or_else(|| p.to_string())
    }

    /// A drop reason summed over the workers, the control core and the mapping server.
    pub(crate) fn drops(&self, r: DropReason) -> u64 {
        self.workers.iter().map(|w| w.drops.get(r)).sum::<u64>()
            + self.control.drops.get(r)
            + self.nat.map_or(0, |n| n.drops.get(r))
    }

    fn seconds(&self, cycles: u64) -> f64 {
        cycles as f64 / self.tsc_hz.max(1) as f64
    }
}

fn build_info(w: &mut Writer, v: &View, r: &Readings) {
    let dpdk = r.dpdk_version.strip_prefix("DPDK ").unwrap_or(&r.dpdk_version);
    w.gauge("appliance_build_info", "Always 1; the labels say what the running program was built from")
        .sample(&[("version", v.build.version), ("git_commit", v.build.git_commit), ("dpdk", dpdk)], 1u64);
}

/// Port counters: per queue from the workers, per device from the driver.
fn ports(w: &mut Writer, v: &View, r: &Readings) {
    let queues = [
        ("appliance_port_rx_packets_total", "Packets received, per port and rx queue", true, true),
        ("appliance_port_rx_bytes_total", "Bytes received, per port and rx queue", true, false),
        ("appliance_port_tx_packets_total", "Packets sent, per port and tx queue", false, true),
        ("appliance_port_tx_bytes_total", "Bytes sent, per port and tx queue", false, false),
    ];
    for (name, help, rx, packets) in queues {
        let mut f = w.counter(name, help);
        for q in v.workers.iter().flat_map(|wk| if rx { wk.rx.iter() } else { wk.tx.iter() }) {
            let value = if packets { q.packets.get() } else { q.bytes.get() };
            f.sample(&[("port", &v.port_name(q.port)), ("queue", &q.queue.to_string())], value);
        }
    }
    let hw: Vec<(String, &rte::PortStats)> =
        r.ports.iter().enumerate().map(|(i, s)| (v.port_name(i as u16), s)).collect();
    let mut f =
        w.counter("appliance_port_rx_missed_total", "Packets the device dropped for lack of rx descriptors (driver)");
    for (n, s) in &hw {
        f.sample(&[("port", n)], s.rx_missed);
    }
    let mut f = w.counter("appliance_port_rx_nombuf_total", "Receive failures for lack of mbufs (driver)");
    for (n, s) in &hw {
        f.sample(&[("port", n)], s.rx_nombuf);
    }
    let mut f = w.counter("appliance_port_errors_total", "Receive and transmit errors (driver)");
    for (n, s) in &hw {
        f.sample(&[("port", n), ("direction", "rx")], s.rx_errors);
        f.sample(&[("port", n), ("direction", "tx")], s.tx_errors);
    }
}

/// What the workers did with packets: drops, punts, hand-offs, injections.
fn verdicts(w: &mut Writer, v: &View) {
    let mut f = w.counter("appliance_drops_total", "Packets dropped, by reason (workers, control core, NAT mapper)");
    for &r in DropReason::ALL {
        f.sample(&[("reason", r.label())], v.drops(r));
    }
    let mut f = w.counter("appliance_punts_total", "Packets handed from workers to the control core, by reason");
    for &r in PuntReason::ALL {
        f.sample(&[("reason", r.label())], v.workers.iter().map(|wk| wk.punts.get(r)).sum::<u64>());
    }
    let mut f =
        w.counter("appliance_handoffs_total", "Packets handed to another part of the fast path, by destination");
    for &k in HandOffKind::ALL {
        f.sample(&[("to", k.label())], v.workers.iter().map(|wk| wk.handoffs.get(k)).sum::<u64>());
    }
    let mut f = w.counter(
        "appliance_checksums_completed_total",
        "Partial TCP/UDP checksums (a kernel host's checksum offload) completed on input",
    );
    f.sample(&[], v.input.iter().map(|c| c.checksums_completed.get()).sum::<u64>());
    let mut f = w.counter("appliance_injected_total", "Packets the control core handed to a worker to transmit");
    for wk in v.workers {
        f.sample(&[("lcore", &wk.lcore.to_string())], wk.injected.get());
    }
}

/// The control core: ICMP errors, ARP/ND, resolutions, held packets.
fn control(w: &mut Writer, v: &View) {
    let c = v.control;
    let mut f = w.counter("appliance_icmp_errors_sent_total", "ICMP and ICMPv6 errors sent, by type");
    for &k in IcmpErrorKind::ALL {
        f.sample(&[("type", k.label())], c.icmp_errors.get(k));
    }
    for (name, help, value) in [
        ("appliance_arp_requests_sent_total", "ARP requests sent to resolve next hops", c.arp_requests_sent.get()),
        ("appliance_arp_replies_sent_total", "ARP replies sent for our addresses", c.arp_replies_sent.get()),
        (
            "appliance_arp_announcements_sent_total",
            "ARP announcements of NAT pool addresses this host started serving",
            c.arp_announcements_sent.get(),
        ),
        ("appliance_nd_solicits_sent_total", "Neighbour solicitations sent", c.nd_solicits_sent.get()),
        ("appliance_nd_adverts_sent_total", "Neighbour advertisements sent for our addresses", c.nd_adverts_sent.get()),
        ("appliance_neighbors_learned_total", "Neighbour entries created or confirmed", c.neighbors_learned.get()),
        ("appliance_resolutions_started_total", "Neighbour resolutions started", c.resolutions_started.get()),
        ("appliance_resolutions_failed_total", "Neighbour resolutions that got no answer", c.resolutions_failed.get()),
        ("appliance_held_packets_sent_total", "Packets held during resolution, then sent", c.held_packets_sent.get()),
        ("appliance_punts_handled_total", "Punted packets handled by the control core", c.punts_handled.get()),
    ] {
        w.counter(name, help).sample(&[], value);
    }
    w.gauge("appliance_pending_packets", "Packets held now, waiting for neighbour resolution")
        .sample(&[], c.pending.get());
}

/// Neighbour table, mempool and rings.
fn tables(w: &mut Writer, v: &View, r: &Readings) {
    let mut by_state = [0u64; NeighborState::ALL.len()];
    for e in v.neigh.entries() {
        by_state[NeighborState::ALL.iter().position(|s| *s == e.state).unwrap_or(0)] += 1;
    }
    let mut f = w.gauge("appliance_neighbors", "Neighbour table entries, by state");
    for (s, n) in NeighborState::ALL.iter().zip(by_state) {
        f.sample(&[("state", s.name())], n);
    }
    w.gauge("appliance_neighbors_capacity", "Neighbour table capacity").sample(&[], v.neigh.capacity() as u64);
    let mut f = w.gauge("appliance_mempool_in_use", "Mbufs in use, by the NUMA socket of their pool");
    for (socket, in_use, _) in &r.pools {
        f.sample(&[("socket", &socket.to_string())], *in_use);
    }
    let mut f = w.gauge("appliance_mempool_capacity", "Mbufs in the pool of a NUMA socket");
    for (socket, _, capacity) in &r.pools {
        f.sample(&[("socket", &socket.to_string())], *capacity);
    }
    let mut f = w.gauge("appliance_ring_used", "Packets waiting in a ring between cores");
    for (n, s) in &r.rings {
        f.sample(&[("ring", n)], s.used);
    }
    let mut f = w.gauge("appliance_ring_capacity", "Capacity of a ring between cores");
    for (n, s) in &r.rings {
        f.sample(&[("ring", n)], s.capacity);
    }
}

/// Worker lcores: time busy and idle (TSC cycles converted to seconds), idle back-off.
fn lcores(w: &mut Writer, v: &View) {
    let lcore = |wk: &WorkerCounters| wk.lcore.to_string();
    let mut f =
        w.counter("appliance_lcore_busy_seconds_total", "Time in poll loops that found work (its rate: busy ratio)");
    for wk in v.workers {
        f.sample(&[("lcore", &lcore(wk))], v.seconds(wk.busy_cycles.get()));
    }
    let mut f =
        w.counter("appliance_lcore_idle_seconds_total", "Time in poll loops that found no work, sleeps included");
    for wk in v.workers {
        f.sample(&[("lcore", &lcore(wk))], v.seconds(wk.idle_cycles.get()));
    }
    let mut f = w.counter("appliance_lcore_idle_sleeps_total", "Idle back-off pauses");
    for wk in v.workers {
        f.sample(&[("lcore", &lcore(wk))], wk.idle_sleeps.get());
    }
    let mut f = w.gauge("appliance_lcore_idle_ratio", "Share of a worker's time spent idle since start");
    for wk in v.workers {
        let (b, i) = (wk.busy_cycles.get() as f64, wk.idle_cycles.get() as f64);
        f.sample(&[("lcore", &lcore(wk))], if b + i > 0.0 { i / (b + i) } else { 1.0 });
    }
    w.gauge("appliance_tsc_frequency_hertz", "TSC frequency the cycle counts are converted with").sample(&[], v.tsc_hz);
}

/// Per local SID: packets, bytes, storage decisions, drops.
fn srv6(w: &mut Writer, v: &View) {
    // SID `i` counts in its slot (stable across run-time changes).
    let sum = |i: usize, f: &dyn Fn(&SidCounters) -> u64| -> u64 {
        let slot = v.srv6.slot(i as u16);
        v.sid_counters.iter().map(|wk| wk.get(slot).map_or(0, f)).sum()
    };
    let labels: Vec<(String, &str)> = v.srv6.sids().iter().map(|s| (s.sid.to_string(), s.behavior.name())).collect();
    let mut f = w.counter("appliance_srv6_sid_packets_total", "Packets addressed to a local SID");
    for (i, (sid, behavior)) in labels.iter().enumerate() {
        f.sample(&[("sid", sid), ("behavior", behavior)], sum(i, &|c| c.packets.get()));
    }
    let mut f = w.counter("appliance_srv6_sid_bytes_total", "Bytes addressed to a local SID");
    for (i, (sid, behavior)) in labels.iter().enumerate() {
        f.sample(&[("sid", sid), ("behavior", behavior)], sum(i, &|c| c.bytes.get()));
    }
    let mut f =
        w.counter("appliance_srv6_storage_decisions_total", "Storage steering decisions at a local storage SID");
    for (i, (sid, behavior)) in labels.iter().enumerate() {
        if v.srv6.sids()[i].behavior == Behavior::Storage {
            f.sample(&[("sid", sid), ("behavior", behavior), ("decision", "accept")], sum(i, &|c| c.accepted.get()));
            f.sample(&[("sid", sid), ("behavior", behavior), ("decision", "pass")], sum(i, &|c| c.passed.get()));
        }
    }
    let mut f = w.counter(
        "appliance_srv6_sid_drops_total",
        "Packets a local SID dropped or answered with an error, by reason (reasons seen so far)",
    );
    for (i, (sid, behavior)) in labels.iter().enumerate() {
        for &r in DropReason::ALL {
            let n = sum(i, &|c| c.drops.get(r));
            if n > 0 {
                f.sample(&[("sid", sid), ("behavior", behavior), ("reason", r.label())], n);
            }
        }
    }
}

/// The NAT mapping server's tables and counters.
fn nat_mapper(w: &mut Writer, n: &NatStats) {
    for (name, help, value) in [
        ("appliance_nat_sessions", "Live NAT sessions", n.sessions.get()),
        ("appliance_nat_mappings", "Live NAT mappings (endpoint-independent)", n.mappings.get()),
        ("appliance_nat_subscribers", "Subscribers holding port blocks", n.subscribers.get()),
        ("appliance_nat_blocks_allocated", "Port blocks held by subscribers", n.blocks_allocated.get()),
        ("appliance_nat_blocks_quarantined", "Released port blocks not yet reusable", n.blocks_quarantined.get()),
        ("appliance_nat_blocks_free", "Port blocks free in the pool", n.blocks_free.get()),
        ("appliance_nat_ports_quarantined", "Released ports not yet reusable", n.ports_quarantined.get()),
        (
            "appliance_nat_table_bytes",
            "Memory of the mapping server's tables (allocated at start)",
            n.memory_bytes.get(),
        ),
    ] {
        w.gauge(name, help).sample(&[], value);
    }
    for (name, help, value) in [
        ("appliance_nat_mappings_created_total", "NAT mappings created", n.mappings_created.get()),
        ("appliance_nat_mappings_retired_total", "NAT mappings retired", n.mappings_retired.get()),
        ("appliance_nat_sessions_created_total", "NAT sessions created", n.sessions_created.get()),
        ("appliance_nat_sessions_retired_total", "NAT sessions retired", n.sessions_retired.get()),
        ("appliance_nat_ports_allocated_total", "Public ports allocated", n.ports_allocated.get()),
        (
            "appliance_nat_block_allocations_total",
            "Port blocks allocated to subscribers",
            n.blocks_allocated_total.get(),
        ),
        ("appliance_nat_block_releases_total", "Port blocks released by subscribers", n.blocks_released_total.get()),
        ("appliance_nat_subscriber_limit_hits_total", "New mappings refused by the per-subscriber block limit", {
            n.subscriber_limit_hits.get()
        }),
        ("appliance_nat_pool_exhausted_total", "New mappings refused for want of a free block", n.pool_exhausted.get()),
        ("appliance_nat_ports_preserved_total", "Mappings that kept the inside port", n.ports_preserved.get()),
        ("appliance_nat_touches_total", "Activity records applied by the mapping server", n.touches.get()),
        ("appliance_nat_touches_stale_total", "Activity records about sessions already retired", n.touches_stale.get()),
        ("appliance_nat_log_events_dropped_total", "Block log events lost: the log writer was behind", {
            n.events_dropped.get()
        }),
    ] {
        w.counter(name, help).sample(&[], value);
    }
    w.counter("appliance_nat_requests_total", "Worker misses answered by the mapping server, by kind")
        .sample(&[("kind", "outbound")], n.requests_outbound.get())
        .sample(&[("kind", "inbound")], n.requests_inbound.get())
        .sample(&[("kind", "hairpin")], n.requests_hairpin.get());
}

/// The workers' NAT caches.
fn nat_workers(w: &mut Writer, v: &View) {
    type Read = fn(&NatWorkerCounters) -> u64;
    let per_worker: [(&str, &str, Read); 5] = [
        ("appliance_nat_cache_hits_total", "Packets translated from a worker's cache", |c| c.hits.get()),
        ("appliance_nat_cache_misses_total", "NAT packets without a usable cache entry", |c| c.misses.get()),
        ("appliance_nat_cache_evictions_total", "Live cache entries pushed out of a full bucket", |c| {
            c.evictions.get()
        }),
        ("appliance_nat_cache_inserts_total", "Cache entries installed from answers", |c| c.inserts.get()),
        ("appliance_nat_reports_total", "Activity reports sent to the mapping server", |c| c.reports.get()),
    ];
    for (name, help, get) in per_worker {
        let mut f = w.counter(name, help);
        for (c, wk) in v.nat_workers.iter().zip(v.workers) {
            f.sample(&[("lcore", &wk.lcore.to_string())], get(c));
        }
    }
}

/// The storage service's gauges, summed over the workers (bytes, not blocks).
fn storage_gauges(w: &mut Writer, v: &View) {
    let total = |f: &dyn Fn(&ServiceCounters) -> u64| -> u64 { v.storage.iter().map(|s| f(s)).sum() };
    let block = objstore::blk::BLOCK_SIZE as u64;
    w.gauge("appliance_storage_queue_depth", "Storage requests held now, waiting for I/O")
        .sample(&[], total(&|s| s.queue_depth.get()));
    w.gauge("appliance_storage_device_used_bytes", "Data space of the storage devices in use")
        .sample(&[], total(&|s| s.device_used_blocks.get()) * block);
    w.gauge("appliance_storage_device_free_bytes", "Data space of the storage devices free")
        .sample(&[], total(&|s| s.device_free_blocks.get()) * block);
}

/// The storage service's counters, summed over the workers.
fn storage_counters(w: &mut Writer, v: &View) {
    let total = |f: &dyn Fn(&ServiceCounters) -> u64| -> u64 { v.storage.iter().map(|s| f(s)).sum() };
    let mut f = w.counter("appliance_storage_requests_total", "Requests to the storage service, by operation");
    for (i, op) in OPS.iter().enumerate() {
        f.sample(&[("op", op)], total(&|s| s.requests[i].get()));
    }
    let mut f = w.counter("appliance_storage_replies_total", "Replies of the storage service, by operation and status");
    for (i, op) in OPS.iter().enumerate() {
        for slot in 0..STATUS_SLOTS {
            let n = total(&|s| s.replies[i][slot].get());
            if let Some(&code) = status::ALL.get(slot) {
                f.sample(&[("op", op), ("status", status::name(code))], n);
            } else if n > 0 {
                f.sample(&[("op", op), ("status", "unknown")], n);
            }
        }
    }
    for (name, help, value) in [
        ("appliance_storage_bad_requests_total", "Storage requests dropped or refused as malformed", {
            total(&|s| s.bad_requests.get())
        }),
        ("appliance_storage_busy_total", "Requests answered busy (request table or assembly buffers full)", {
            total(&|s| s.busy.get())
        }),
        ("appliance_storage_checksum_failures_total", "Chunks whose CRC32C failed on read", {
            total(&|s| s.checksum_failures.get())
        }),
        (
            "appliance_storage_fragments_duplicate_total",
            "Put fragments received again while held (freed; the held copy is answered)",
            { total(&|s| s.fragments_duplicate.get()) },
        ),
        ("appliance_storage_chunks_written_total", "Chunks made durable", total(&|s| s.chunks_written.get())),
        ("appliance_storage_written_bytes_total", "Object bytes made durable", total(&|s| s.bytes_written.get())),
        ("appliance_storage_read_bytes_total", "Object bytes sent in replies", total(&|s| s.bytes_read.get())),
        ("appliance_storage_handed_over_total", "Requests handed to the worker that owns the object", {
            total(&|s| s.handed_over.get())
        }),
        ("appliance_storage_assemblies_expired_total", "Chunks dropped incomplete (fragments missing)", {
            total(&|s| s.assemblies_expired.get())
        }),
    ] {
        w.counter(name, help).sample(&[], value);
    }
}

/// The storage latency histograms, one series per operation that waits for I/O.
fn storage_latency(w: &mut Writer, v: &View) {
    let bounds: Vec<f64> = LATENCY_BOUNDS_US.iter().map(|&us| us as f64 / 1e6).collect();
    let mut h = w.histogram(
        "appliance_storage_latency_seconds",
        "Time from a storage request's arrival to its reply, by operation",
    );
    for (i, op) in OPS.iter().enumerate().take(LATENCY_OPS) {
        let mut counts = [0u64; LATENCY_BOUNDS_US.len() + 1];
        let mut sum_us = 0;
        for s in v.storage {
            let lat = &s.latency[i];
            for (c, b) in counts.iter_mut().zip(&lat.buckets) {
                *c += b.get();
            }
            sum_us += lat.sum_us.get();
        }
        h.series(&[("op", op)], &bounds, &counts, sum_us as f64 / 1e6);
    }
}

#[cfg(test)]
#[path = "render_tests.rs"]
mod tests;
