//! The exposition of an appliance with every feature on (router, SRv6 SIDs, NAT, storage),
//! from counters set by hand: clean by the rules `promtool check metrics` applies, in base
//! units, and documented in docs/metrics.md.

use std::sync::Arc;

use dataplane::fib::neigh::NeighborTable;
use dataplane::fib::PortInfo;
use dataplane::nat::fast::NatWorkerCounters;
use dataplane::nat::mapper::NatStats;
use dataplane::pipeline::Pipeline;
use dataplane::srv6::{Behavior, SidCounters, SidSpec, Srv6Config, StoragePolicy};
use dataplane::stats::{ControlCounters, DropReason, HandOffKind, PuntReason};
use dataplane::storage::service::{op_slot, status_slot, ServiceCounters};
use netwire::storage::{status, Op};

use super::{render, BuildInfo, Readings, View};
use crate::worker::{QueueCounters, WorkerCounters};

const DOCS: &str = include_str!("../../../docs/metrics.md");

/// Counters of a node with two ports, one worker, two SIDs, NAT and storage.
struct Node {
    workers: Vec<Arc<WorkerCounters>>,
    control: ControlCounters,
    neigh: Arc<NeighborTable>,
    pipeline: Pipeline,
    sid_counters: Vec<Arc<Vec<SidCounters>>>,
    nat: NatStats,
    nat_workers: Vec<Arc<NatWorkerCounters>>,
    storage: Vec<Arc<ServiceCounters>>,
    ports: Vec<String>,
}

fn node() -> Node {
    let queue = |port, packets| {
        let q = QueueCounters { port, queue: 0, ..Default::default() };
        q.packets.add(packets);
        q.bytes.add(packets * 100);
        q
    };
    let worker = WorkerCounters {
        lcore: 1,
        rx: vec![queue(0, 10), queue(1, 20)],
        tx: vec![queue(0, 19), queue(1, 9)],
        ..Default::default()
    };
    worker.busy_cycles.add(2_000_000_000);
    worker.idle_cycles.add(6_000_000_000);
    worker.drops.add(DropReason::NoRoute, 4);
    worker.punts.inc(PuntReason::Arp);
    worker.handoffs.inc(HandOffKind::Storage);
    let sid = |last: u16, behavior, policy| SidSpec {
        sid: std::net::Ipv6Addr::new(0x2001, 0xdb8, 0xa, 0, 0, 0, 0, last),
        behavior,
        psp: false,
        usd: false,
        adjacency: None,
        policy,
    };
    let sid_counters = vec![SidCounters::default(), SidCounters::default()];
    sid_counters[0].drops.inc(DropReason::Srv6ParamProblem);
    sid_counters[1].accepted.inc();
    let storage = ServiceCounters::default();
    storage.requests[op_slot(Op::PUT_CHUNK)].add(2);
    storage.reply(Op::PUT_CHUNK.0, status::OK);
    storage.reply(Op::PUT_CHUNK.reply().0, status::OK);
    storage.reply(Op::GET_CHUNK.0, status::NOT_FOUND);
    storage.reply(Op::STAT.0, 999);
    storage.device_used_blocks.set(3);
    storage.latency[1].observe(150);
    storage.latency[1].observe(200_000);
    Node {
        workers: vec![Arc::new(worker)],
        control: ControlCounters::default(),
        neigh: NeighborTable::new(16).0,
        pipeline: {
            let port = |name: &str, last: u8| PortInfo {
                name: name.into(),
                mac: [2, 0, 0, 0, 0, last],
                mtu: 1500,
                ipv4: vec![],
                partial_checksums: false,
                ipv6: vec![(std::net::Ipv6Addr::new(0x2001, 0xdb8, u16::from(last), 0, 0, 0, 0, 1), 64)],
            };
            let srv6 = Srv6Config {
                sids: vec![sid(1, Behavior::End, None), sid(5, Behavior::Storage, Some(StoragePolicy::Always))],
                ..Srv6Config::default()
            };
            Pipeline::with_srv6(vec![port("inside", 1), port("outside", 2)], &[], &srv6, NeighborTable::new(4).0)
                .expect("valid tables")
        },
        sid_counters: vec![Arc::new(sid_counters)],
        nat: NatStats::default(),
        nat_workers: vec![Arc::new(NatWorkerCounters::default())],
        storage: vec![Arc::new(storage)],
        ports: vec!["inside".into(), "outside".into()],
    }
}

fn exposition(n: &Node) -> String {
    let view = View {
        port_names: &n.ports,
        workers: &n.workers,
        control: &n.control,
        neigh: &n.neigh,
        tsc_hz: 1_000_000_000,
        srv6: n.pipeline.srv6(),
        sid_counters: &n.sid_counters,
        nat: Some(&n.nat),
        nat_workers: &n.nat_workers,
        storage: &n.storage,
        input: &[],
        build: BuildInfo { version: "0.1.0", git_commit: "0123456789ab" },
    };
    let readings = Readings {
        ports: vec![rte::PortStats { rx_missed: 5, ..Default::default() }; 2],
        pools: vec![(0, 100, 8191)],
        rings: vec![("punt0".into(), rte::RingStats { used: 1, capacity: 1023 })],
        dpdk_version: "DPDK 22.11.11".into(),
    };
    render(&view, &readings)
}

/// Names of every family in `text` (its `# TYPE` lines).
fn families(text: &str) -> Vec<&str> {
    text.lines().filter_map(|l| l.strip_prefix("# TYPE ")).filter_map(|l| l.split(' ').next()).collect()
}

#[test]
fn every_feature_renders_clean_text_format() {
    let text = exposition(&node());
    if let Err(problems) = promtext::lint(&text) {
        panic!("{}\n---\n{text}", problems.join("\n"));
    }
    let f = families(&text);
    for name in ["appliance_nat_sessions", "appliance_storage_latency_seconds", "appliance_srv6_sid_packets_total"] {
        assert!(f.contains(&name), "{name} rendered");
    }
}

#[test]
fn cycles_become_seconds_and_blocks_bytes() {
    let text = exposition(&node());
    assert!(text.contains("\nappliance_lcore_busy_seconds_total{lcore=\"1\"} 2\n"), "{text}");
    assert!(text.contains("\nappliance_lcore_idle_seconds_total{lcore=\"1\"} 6\n"), "{text}");
    assert!(text.contains("\nappliance_lcore_idle_ratio{lcore=\"1\"} 0.75\n"), "{text}");
    assert!(text.contains("\nappliance_storage_device_used_bytes 12288\n"), "{text}");
    for f in families(&text) {
        assert!(!f.contains("cycles"), "{f}: cycles are not a base unit");
        assert!(!(f.starts_with("appliance_storage") && f.contains("blocks")), "{f}: blocks are not a base unit");
    }
    assert!(
        text.contains("\nappliance_build_info{version=\"0.1.0\",git_commit=\"0123456789ab\",dpdk=\"22.11.11\"} 1\n")
    );
}

#[test]
fn storage_by_op_and_status_with_a_latency_histogram() {
    let text = exposition(&node());
    for line in [
        "appliance_storage_requests_total{op=\"put\"} 2",
        "appliance_storage_requests_total{op=\"probe\"} 0",
        // A reply counts under its request's op.
        "appliance_storage_replies_total{op=\"put\",status=\"ok\"} 2",
        "appliance_storage_replies_total{op=\"get\",status=\"not_found\"} 1",
        "appliance_storage_replies_total{op=\"other\",status=\"io\"} 0",
        "appliance_storage_replies_total{op=\"stat\",status=\"unknown\"} 1",
        "appliance_storage_latency_seconds_bucket{op=\"get\",le=\"0.0002\"} 1",
        "appliance_storage_latency_seconds_bucket{op=\"get\",le=\"0.1\"} 1",
        "appliance_storage_latency_seconds_bucket{op=\"get\",le=\"+Inf\"} 2",
        "appliance_storage_latency_seconds_sum{op=\"get\"} 0.20015",
        "appliance_storage_latency_seconds_count{op=\"list\"} 0",
    ] {
        assert!(text.contains(&format!("\n{line}\n")), "{line}:\n{text}");
    }
    // Every known status for every op (zeros included), `unknown` only when seen.
    let replies = text.lines().filter(|l| l.starts_with("appliance_storage_replies_total{")).count();
    assert_eq!(replies, 7 * status::ALL.len() + 1);
    assert_eq!(status_slot(999), status::ALL.len());
}

#[test]
fn sids_nat_and_ports_carry_their_labels() {
    let text = exposition(&node());
    for line in [
        "appliance_srv6_storage_decisions_total{sid=\"2001:db8:a::5\",behavior=\"storage\",decision=\"accept\"} 1",
        "appliance_srv6_sid_drops_total{sid=\"2001:db8:a::1\",behavior=\"End\",reason=\"srv6_param_problem\"} 1",
        "appliance_port_rx_packets_total{port=\"outside\",queue=\"0\"} 20",
        "appliance_port_rx_missed_total{port=\"inside\"} 5",
        "appliance_drops_total{reason=\"no_route\"} 4",
        "appliance_handoffs_total{to=\"storage\"} 1",
        "appliance_nat_requests_total{kind=\"hairpin\"} 0",
        "appliance_nat_cache_hits_total{lcore=\"1\"} 0",
        "appliance_ring_used{ring=\"punt0\"} 1",
    ] {
        assert!(text.contains(&format!("\n{line}\n")), "{line}:\n{text}");
    }
    // End SIDs make no decisions.
    assert!(!text.contains("appliance_srv6_storage_decisions_total{sid=\"2001:db8:a::1\""));
}

/// The text of docs/metrics.md under the heading `## {title}`, up to the next `## `.
fn section(title: &str) -> &'static str {
    let start = DOCS.find(&format!("\n## {title}\n")).unwrap_or_else(|| panic!("docs/metrics.md has no ## {title}"));
    let rest = &DOCS[start + 1..];
    let end = rest[3..].find("\n## ").map_or(rest.len(), |e| e + 3);
    &rest[..end]
}

#[test]
fn docs_describe_every_metric_and_reason() {
    let text = exposition(&node());
    let reference = section("Appliance");
    let missing: Vec<&str> = families(&text).into_iter().filter(|f| !reference.contains(&format!("`{f}`"))).collect();
    assert!(missing.is_empty(), "metrics missing from docs/metrics.md (## Appliance): {missing:?}");
    let labels = [
        ("Drop reasons", DropReason::ALL.iter().map(|r| r.label()).collect::<Vec<_>>()),
        ("Punt reasons", PuntReason::ALL.iter().map(|r| r.label()).collect()),
        ("Hand-offs", HandOffKind::ALL.iter().map(|k| k.label()).collect()),
    ];
    for (title, labels) in labels {
        let s = section(title);
        let missing: Vec<&str> = labels.into_iter().filter(|l| !s.contains(&format!("| `{l}` |"))).collect();
        assert!(missing.is_empty(), "labels missing from docs/metrics.md (## {title}): {missing:?}");
    }
}
