//! The `show` views and the parsing of change commands into [`Change`]s.
//! Each view returns text for people and JSON for programs; both come from
//! the same values.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use dataplane::fib::NextHop;
use dataplane::nat::session::SessionFilter;
use dataplane::nat::translate::Proto;
use dataplane::pipeline::Pipeline;
use dataplane::srv6::{Behavior, PolicySpec, SidSpec, StoragePolicy};
use dataplane::stats::{DropReason, HandOffKind, PuntReason};
use netwire::prefix::IpCidr;
use serde_json::{json, Value};

use super::change::Change;
use super::command::{NeighborOp, RouteOp, SidOp, SteeringOp};
use super::{Baseline, Reply};
use crate::config::{format_mac, parse_mac, Config};
use crate::metrics::MetricsSource;
use crate::natcore::NatQuery;

/// The index of the port called `name`.
pub fn port_index(p: &Pipeline, name: &str) -> Result<u16, String> {
    p.ports().iter().position(|x| x.name == name).map(|i| i as u16).ok_or_else(|| {
        let names: Vec<&str> = p.ports().iter().map(|x| x.name.as_str()).collect();
        format!("no port {name:?} (ports: {})", names.join(", "))
    })
}

/// Per-port (rx packets, rx bytes, tx packets, tx bytes) summed over workers.
fn port_counts(src: &MetricsSource) -> Vec<[u64; 4]> {
    let mut v = vec![[0u64; 4]; src.port_names.len()];
    for w in &src.workers {
        for q in &w.rx {
            v[usize::from(q.port)][0] += q.packets.get();
            v[usize::from(q.port)][1] += q.bytes.get();
        }
        for q in &w.tx {
            v[usize::from(q.port)][2] += q.packets.get();
            v[usize::from(q.port)][3] += q.bytes.get();
        }
    }
    v
}

/// Every counter the CLI's views show, by name (for `clear counters`).
pub fn counter_snapshot(src: &MetricsSource) -> HashMap<String, u64> {
    let mut m = HashMap::new();
    for (i, c) in port_counts(src).iter().enumerate() {
        for (k, v) in ["rx_packets", "rx_bytes", "tx_packets", "tx_bytes"].iter().zip(c) {
            m.insert(format!("port{i}.{k}"), *v);
        }
    }
    for r in DropReason::ALL {
        m.insert(format!("drop.{}", r.label()), drops(src, *r));
    }
    for r in PuntReason::ALL {
        m.insert(format!("punt.{}", r.label()), src.workers.iter().map(|w| w.punts.get(*r)).sum());
    }
    for k in HandOffKind::ALL {
        m.insert(format!("handoff.{}", k.label()), src.workers.iter().map(|w| w.handoffs.get(*k)).sum());
    }
    for (i, w) in src.workers.iter().enumerate() {
        m.insert(format!("worker{i}.busy"), w.busy_cycles.get());
        m.insert(format!("worker{i}.idle"), w.idle_cycles.get());
    }
    m
}

fn drops(src: &MetricsSource, r: DropReason) -> u64 {
    src.workers.iter().map(|w| w.drops.get(r)).sum::<u64>()
        + src.control.drops.get(r)
        + src.nat.as_ref().map_or(0, |n| n.drops.get(r))
}

pub fn interfaces(src: &MetricsSource, p: &Pipeline, base: &Baseline) -> Reply {
    let counts = port_counts(src);
    let mut text = format!(
        "{:<10} {:<3} {:<17} {:>5} {:<5} {:>12} {:>12} {:>9} {:>9}\n",
        "name", "idx", "mac", "mtu", "link", "rx_packets", "tx_packets", "rx_missed", "errors"
    );
    let mut data = Vec::new();
    for (i, info) in p.ports().iter().enumerate() {
        let (up, speed) = src.ports[i].link();
        let hw = src.ports[i].stats();
        let c = counts[i];
        let rx = base.since(&format!("port{i}.rx_packets"), c[0]);
        let tx = base.since(&format!("port{i}.tx_packets"), c[2]);
        let link = if up { "up" } else { "down" };
        let _ = writeln!(
            text,
            "{:<10} {:<3} {:<17} {:>5} {:<5} {:>12} {:>12} {:>9} {:>9}",
            info.name,
            i,
            format_mac(&info.mac),
            info.mtu,
            link,
            rx,
            tx,
            hw.rx_missed,
            hw.rx_errors + hw.tx_errors
        );
        let addrs: Vec<String> = info
            .ipv4
            .iter()
            .map(|(a, l)| format!("{a}/{l}"))
            .chain(info.ipv6.iter().map(|(a, l)| format!("{a}/{l}")))
            .collect();
        let _ = writeln!(text, "    {}", addrs.join(" "));
        data.push(json!({
            "name": info.name, "index": i, "mac": format_mac(&info.mac), "mtu": info.mtu,
            "link_up": up, "speed_mbps": speed, "addresses": addrs,
            "rx_packets": rx, "rx_bytes": base.since(&format!("port{i}.rx_bytes"), c[1]),
            "tx_packets": tx, "tx_bytes": base.since(&format!("port{i}.tx_bytes"), c[3]),
            "rx_missed": hw.rx_missed, "rx_nombuf": hw.rx_nombuf, "rx_errors": hw.rx_errors, "tx_errors": hw.tx_errors,
        }));
    }
    Reply { text, data: Value::Array(data) }
}

fn next_hop_text(p: &Pipeline, nh: NextHop) -> (String, Value) {
    let port = |i: u16| p.ports().get(usize::from(i)).map_or(i.to_string(), |x| x.name.clone());
    match nh {
        NextHop::Local { port: i } => (format!("local ({})", port(i)), json!({"kind": "local", "port": port(i)})),
        NextHop::Forward { port: i, via: None } => {
            (format!("connected {}", port(i)), json!({"kind": "connected", "port": port(i)}))
        }
        NextHop::Forward { port: i, via: Some(v) } => {
            (format!("via {v} {}", port(i)), json!({"kind": "via", "via": v.to_string(), "port": port(i)}))
        }
        NextHop::Sid(i) => {
            let b = p.srv6().sid(i).behavior.name();
            (format!("srv6 sid {b}"), json!({"kind": "sid", "behavior": b}))
        }
        NextHop::Encap(_) => ("srv6 steering (H.Encaps)".into(), json!({"kind": "steering"})),
        NextHop::NatPool => ("nat pool".into(), json!({"kind": "nat_pool"})),
        NextHop::Objects => ("object prefix (storage service)".into(), json!({"kind": "objects"})),
    }
}

pub fn routes(p: &Pipeline) -> Reply {
    // Later entries for the same prefix replaced earlier ones.
    let mut seen = std::collections::HashSet::new();
    let mut rows: Vec<_> = p.fib().entries().iter().rev().filter(|e| seen.insert((e.prefix, e.len))).collect();
    rows.reverse();
    rows.sort_by_key(|e| (e.prefix.is_ipv6(), e.prefix, e.len));
    let mut text = String::new();
    let mut data = Vec::new();
    for e in rows {
        let (t, v) = next_hop_text(p, e.next_hop);
        let _ = writeln!(text, "{:<44} {t}", format!("{}/{}", e.prefix, e.len));
        data.push(json!({ "prefix": format!("{}/{}", e.prefix, e.len), "next_hop": v }));
    }
    Reply { text, data: Value::Array(data) }
}

pub fn neighbors(src: &MetricsSource) -> Reply {
    let mut entries: Vec<_> = src.neigh.entries().collect();
    entries.sort_by_key(|e| (e.port, e.ip));
    let mut text = format!("{:<10} {:<40} {:<17} {:<10} {:>10}\n", "port", "address", "mac", "state", "age_ms");
    let mut data = Vec::new();
    let now = src.nat_clock.now_ms();
    for e in entries {
        let port = src.port_names.get(usize::from(e.port)).cloned().unwrap_or_default();
        let _ = writeln!(
            text,
            "{:<10} {:<40} {:<17} {:<10} {:>10}",
            port,
            e.ip.to_string(),
            format_mac(&e.mac),
            e.state.name(),
            now.saturating_sub(e.updated_ms)
        );
        data.push(json!({"port": port, "ip": e.ip.to_string(), "mac": format_mac(&e.mac), "state": e.state.name()}));
    }
    Reply { text, data: Value::Array(data) }
}

/// `key=value` filters of NAT session commands.
fn nat_filter(filters: &[String]) -> Result<(SessionFilter, usize), String> {
    let mut filter = SessionFilter::default();
    let mut limit = 1000usize;
    for pair in filters {
        let (k, v) = pair.split_once('=').ok_or_else(|| format!("{pair:?}: filters are key=value"))?;
        let addr = || v.parse::<Ipv4Addr>().map_err(|_| format!("{k}: {v:?} is not an IPv4 address"));
        match k {
            "inside" => filter.inside_addr = Some(addr()?),
            "public" => filter.public_addr = Some(addr()?),
            "remote" => filter.remote_addr = Some(addr()?),
            "proto" => {
                filter.proto = Some(match v {
                    "tcp" => Proto::Tcp,
                    "udp" => Proto::Udp,
                    "icmp" => Proto::Icmp,
                    _ => return Err(format!("proto: {v:?} is not tcp, udp or icmp")),
                })
            }
            "limit" => limit = v.parse().map_err(|_| format!("limit: {v:?} is not a number"))?,
            _ => return Err(format!("unknown filter {k:?} (inside, public, remote, proto, limit)")),
        }
    }
    Ok((filter, limit))
}

/// Asks the mapping core (list or retire) and waits for its answer.
fn nat_ask(src: &MetricsSource, filter: SessionFilter, limit: usize, retire: bool) -> Result<NatAnswer, String> {
    let tx = src.nat_query.as_ref().ok_or("NAT is not configured")?;
    let (reply, answer) = std::sync::mpsc::sync_channel(1);
    let q = NatQuery { filter, limit, retire, reply };
    tx.lock().map_err(|_| "internal error")?.send(q).map_err(|_| "the mapping server is not running")?;
    answer.recv_timeout(Duration::from_secs(2)).map_err(|_| "the mapping server did not answer".into())
}

pub use crate::natcore::NatAnswer;

pub fn nat_sessions(src: &MetricsSource, filters: &[String]) -> Result<Reply, String> {
    let (filter, limit) = nat_filter(filters)?;
    let sessions = match nat_ask(src, filter, limit, false)? {
        NatAnswer::Sessions(s) => s,
        NatAnswer::Retired(_) => return Err("internal error".into()),
        NatAnswer::Refused(why) => return Err(why),
    };
    let now = src.nat_clock.now_ms();
    let mut text = format!(
        "{:<5} {:<21} {:<21} {:<21} {:<11} {:>8} {:>10}\n",
        "proto", "inside", "public", "remote", "state", "idle_s", "expires_s"
    );
    let mut data = Vec::new();
    for i in &sessions {
        let b = &i.binding;
        let (inside, public, remote) = (
            format!("{}:{}", b.inside_addr, b.inside_port),
            format!("{}:{}", b.public_addr, b.public_port),
            format!("{}:{}", b.remote_addr, b.remote_port),
        );
        let state = i.tcp_state.map_or("-", |t| t.name());
        let (idle, expires) = (now.saturating_sub(i.last_ms) / 1000, i.expires_ms.saturating_sub(now) / 1000);
        let _ = writeln!(
            text,
            "{:<5} {inside:<21} {public:<21} {remote:<21} {state:<11} {idle:>8} {expires:>10}",
            b.proto.name()
        );
        data.push(json!({"proto": b.proto.name(), "inside": inside, "public": public, "remote": remote,
            "state": state, "idle_s": idle, "expires_s": expires}));
    }
    let _ = writeln!(text, "{} sessions", sessions.len());
    Ok(Reply { text, data: Value::Array(data) })
}

pub fn nat_clear(src: &MetricsSource, filters: &[String]) -> Result<Reply, String> {
    let (filter, _) = nat_filter(filters)?;
    match nat_ask(src, filter, 0, true)? {
        NatAnswer::Retired(n) => Ok(Reply { text: format!("{n} sessions retired\n"), data: json!({ "retired": n }) }),
        NatAnswer::Sessions(_) => Err("internal error".into()),
        NatAnswer::Refused(why) => Err(why),
    }
}

pub fn nat_summary(src: &MetricsSource) -> Result<Reply, String> {
    let n = src.nat.as_ref().ok_or("NAT is not configured")?;
    let rows = [
        ("sessions", n.sessions.get()),
        ("mappings", n.mappings.get()),
        ("subscribers", n.subscribers.get()),
        ("blocks_allocated", n.blocks_allocated.get()),
        ("blocks_free", n.blocks_free.get()),
        ("blocks_quarantined", n.blocks_quarantined.get()),
        ("table_bytes", n.memory_bytes.get()),
        ("mappings_created", n.mappings_created.get()),
        ("sessions_created", n.sessions_created.get()),
        ("sessions_retired", n.sessions_retired.get()),
        ("pool_exhausted", n.pool_exhausted.get()),
        ("subscriber_limit_hits", n.subscriber_limit_hits.get()),
        ("requests_outbound", n.requests_outbound.get()),
        ("requests_inbound", n.requests_inbound.get()),
        ("requests_hairpin", n.requests_hairpin.get()),
    ];
    let hits: u64 = src.nat_workers.iter().map(|w| w.hits.get()).sum();
    let misses: u64 = src.nat_workers.iter().map(|w| w.misses.get()).sum();
    let mut text = String::new();
    let mut data = serde_json::Map::new();
    for (k, v) in rows.iter().chain(&[("worker_cache_hits", hits), ("worker_cache_misses", misses)]) {
        let _ = writeln!(text, "{k:<24} {v}");
        data.insert((*k).into(), json!(v));
    }
    Ok(Reply { text, data: Value::Object(data) })
}

fn sid_sum(src: &MetricsSource, slot: usize, f: impl Fn(&dataplane::srv6::SidCounters) -> u64) -> u64 {
    src.sid_counters.iter().map(|w| w.get(slot).map_or(0, &f)).sum()
}

pub fn srv6_sids(src: &MetricsSource, p: &Pipeline) -> Reply {
    let mut text = format!(
        "{:<40} {:<10} {:>12} {:>10} {:>10} {:>8}\n",
        "sid", "behavior", "packets", "accepted", "passed", "drops"
    );
    let mut data = Vec::new();
    for (i, s) in p.srv6().sids().iter().enumerate() {
        let slot = p.srv6().slot(i as u16);
        let packets = sid_sum(src, slot, |c| c.packets.get());
        let accepted = sid_sum(src, slot, |c| c.accepted.get());
        let passed = sid_sum(src, slot, |c| c.passed.get());
        let dropped: u64 = DropReason::ALL.iter().map(|r| sid_sum(src, slot, |c| c.drops.get(*r))).sum();
        let _ = writeln!(
            text,
            "{:<40} {:<10} {packets:>12} {accepted:>10} {passed:>10} {dropped:>8}",
            s.sid.to_string(),
            s.behavior.name()
        );
        let mut flavors = Vec::new();
        if s.psp {
            flavors.push("psp");
        }
        if s.usd {
            flavors.push("usd");
        }
        data.push(json!({"sid": s.sid.to_string(), "behavior": s.behavior.name(), "flavors": flavors,
            "policy": s.policy.map(|p| p.name()), "packets": packets, "accepted": accepted, "passed": passed, "drops": dropped}));
    }
    Reply { text, data: Value::Array(data) }
}

pub fn srv6_policies(p: &Pipeline) -> Reply {
    let mut text = String::new();
    let mut data = Vec::new();
    for pol in p.srv6().policies() {
        let segs: Vec<String> = pol.segments.iter().map(|s| s.to_string()).collect();
        let mode = if pol.reduced { "encaps.red" } else { "encaps" };
        let _ = writeln!(text, "{}/{} {mode} segments {}", pol.prefix, pol.len, segs.join(","));
        data.push(json!({"prefix": format!("{}/{}", pol.prefix, pol.len), "mode": mode, "segments": segs,
            "source": pol.source.map(|s| s.to_string())}));
    }
    if data.is_empty() {
        text.push_str("no steering policies\n");
    }
    Reply { text, data: Value::Array(data) }
}

pub fn storage(src: &MetricsSource) -> Reply {
    if src.storage.is_empty() {
        return Reply { text: "the storage service is not configured\n".into(), data: Value::Array(Vec::new()) };
    }
    let mut text = format!(
        "{:<7} {:>10} {:>10} {:>6} {:>6} {:>12} {:>12} {:>10}\n",
        "worker", "requests", "replies", "busy", "queue", "written_b", "read_b", "free_blk"
    );
    let mut data = Vec::new();
    for (w, s) in src.storage.iter().enumerate() {
        let requests: u64 = s.requests.iter().map(|c| c.get()).sum();
        let replies: u64 = s.replies.iter().flatten().map(|c| c.get()).sum();
        let _ = writeln!(
            text,
            "{w:<7} {:>10} {:>10} {:>6} {:>6} {:>12} {:>12} {:>10}",
            requests,
            replies,
            s.busy.get(),
            s.queue_depth.get(),
            s.bytes_written.get(),
            s.bytes_read.get(),
            s.device_free_blocks.get()
        );
        data.push(json!({"worker": w, "requests": requests, "replies": replies, "busy": s.busy.get(),
            "queue_depth": s.queue_depth.get(), "bad_requests": s.bad_requests.get(),
            "checksum_failures": s.checksum_failures.get(), "bytes_written": s.bytes_written.get(),
            "bytes_read": s.bytes_read.get(), "device_used_blocks": s.device_used_blocks.get(),
            "device_free_blocks": s.device_free_blocks.get()}));
    }
    Reply { text, data: Value::Array(data) }
}

pub fn workers(src: &MetricsSource, base: &Baseline) -> Reply {
    let mut text = format!(
        "{:<7} {:<6} {:>7} {:>14} {:>14} {:>10}\n",
        "worker", "lcore", "busy%", "rx_packets", "tx_packets", "drops"
    );
    let mut data = Vec::new();
    for (i, w) in src.workers.iter().enumerate() {
        let busy = base.since(&format!("worker{i}.busy"), w.busy_cycles.get()) as f64;
        let idle = base.since(&format!("worker{i}.idle"), w.idle_cycles.get()) as f64;
        let share = if busy + idle > 0.0 { 100.0 * busy / (busy + idle) } else { 0.0 };
        let rx: u64 = w.rx.iter().map(|q| q.packets.get()).sum();
        let tx: u64 = w.tx.iter().map(|q| q.packets.get()).sum();
        let dropped: u64 = DropReason::ALL.iter().map(|r| w.drops.get(*r)).sum();
        let _ = writeln!(text, "{i:<7} {:<6} {share:>6.1}% {rx:>14} {tx:>14} {dropped:>10}", w.lcore);
        data.push(json!({"worker": i, "lcore": w.lcore, "busy_percent": share, "rx_packets": rx, "tx_packets": tx,
            "drops": dropped, "injected": w.injected.get(), "idle_sleeps": w.idle_sleeps.get()}));
    }
    Reply { text, data: Value::Array(data) }
}

pub fn errors(src: &MetricsSource, base: &Baseline) -> Reply {
    let mut text = format!("{:<10} {:<32} {:>12}\n", "kind", "reason", "packets");
    let mut data = Vec::new();
    let mut row = |kind: &str, label: &str, v: u64| {
        if v > 0 {
            let _ = writeln!(text, "{kind:<10} {label:<32} {v:>12}");
            data.push(json!({"kind": kind, "reason": label, "packets": v}));
        }
    };
    for r in DropReason::ALL {
        row("drop", r.label(), base.since(&format!("drop.{}", r.label()), drops(src, *r)));
    }
    for r in PuntReason::ALL {
        row(
            "punt",
            r.label(),
            base.since(&format!("punt.{}", r.label()), src.workers.iter().map(|w| w.punts.get(*r)).sum()),
        );
    }
    for k in HandOffKind::ALL {
        let v = src.workers.iter().map(|w| w.handoffs.get(*k)).sum();
        row("handoff", k.label(), base.since(&format!("handoff.{}", k.label()), v));
    }
    Reply { text, data: Value::Array(data) }
}

pub fn version() -> Reply {
    let text = format!("appliance {} (dpdk {})\n", env!("CARGO_PKG_VERSION"), rte::version());
    Reply { data: json!({"version": env!("CARGO_PKG_VERSION"), "dpdk": rte::version()}), text }
}

/// `PREFIX` as (network address, length).
fn prefix(text: &str) -> Result<(IpAddr, u8), String> {
    let c: IpCidr = text.parse()?;
    Ok((c.network(), c.prefix_len()))
}

fn port_of(cfg: &Config, name: &str) -> Result<u16, String> {
    cfg.ports.iter().position(|p| p.name == name).map(|i| i as u16).ok_or_else(|| {
        let names: Vec<&str> = cfg.ports.iter().map(|p| p.name.as_str()).collect();
        format!("no port {name:?} (ports: {})", names.join(", "))
    })
}

pub fn route_change(cfg: &Config, op: RouteOp) -> Result<Change, String> {
    Ok(match op {
        RouteOp::Add { prefix: p, via, port } => {
            let (prefix, len) = prefix(&p)?;
            if via.is_some_and(|v| v.is_ipv4() != prefix.is_ipv4()) {
                return Err(format!("route {p}: the gateway is not of the prefix's family"));
            }
            Change::RouteAdd(dataplane::fib::RouteSpec { prefix, len, port: port_of(cfg, &port)?, via })
        }
        RouteOp::Del { prefix: p } => {
            let (prefix, len) = prefix(&p)?;
            Change::RouteDel { prefix, len }
        }
    })
}

pub fn neighbor_change(cfg: &Config, op: NeighborOp) -> Result<Change, String> {
    Ok(match op {
        NeighborOp::Add { ip, mac, port } => {
            let mac = parse_mac(&mac).ok_or_else(|| format!("{mac:?} is not a MAC address (02:00:00:00:00:01)"))?;
            Change::NeighborAdd { port: port_of(cfg, &port)?, ip, mac }
        }
        NeighborOp::Del { ip, port } => Change::NeighborDel { port: port_of(cfg, &port)?, ip },
    })
}

pub fn sid_change(cfg: &Config, op: SidOp) -> Result<Change, String> {
    let (sid, behavior, psp, usd, port, next_hop, policy, threshold) = match op {
        SidOp::Del { sid } => return Ok(Change::SidDel(sid)),
        SidOp::Add { sid, behavior, psp, usd, port, next_hop, policy, threshold } => {
            (sid, behavior, psp, usd, port, next_hop, policy, threshold)
        }
    };
    let behavior = match behavior.as_str() {
        "end" => Behavior::End,
        "end.x" => Behavior::EndX,
        "end.dt6" => Behavior::EndDt6,
        "end.dx6" => Behavior::EndDx6,
        "storage" => Behavior::Storage,
        b => return Err(format!("behavior {b:?}: end, end.x, end.dt6, end.dx6 or storage")),
    };
    let adjacency = match (port, next_hop) {
        (Some(p), Some(nh)) => Some((port_of(cfg, &p)?, nh)),
        (None, None) => None,
        _ => return Err("--port and --next-hop go together".into()),
    };
    if matches!(behavior, Behavior::EndX | Behavior::EndDx6) != adjacency.is_some() {
        return Err("end.x and end.dx6 need --port and --next-hop; the others take neither".into());
    }
    let policy = match (behavior, policy.as_deref()) {
        (Behavior::Storage, None | Some("never-but-last")) => Some(StoragePolicy::NeverButLast),
        (Behavior::Storage, Some("always")) => Some(StoragePolicy::Always),
        (Behavior::Storage, Some("sr-c")) => Some(StoragePolicy::SrC { threshold: threshold.unwrap_or(1) }),
        (Behavior::Storage, Some("holds-object")) => Some(StoragePolicy::HoldsObject),
        (Behavior::Storage, Some(p)) => {
            return Err(format!("policy {p:?}: always, never-but-last, sr-c or holds-object"))
        }
        (_, None) => None,
        (_, Some(_)) => return Err("--policy is for the storage behavior".into()),
    };
    if psp && !matches!(behavior, Behavior::End | Behavior::EndX) {
        return Err("--psp is a flavor of end and end.x".into());
    }
    Ok(Change::SidAdd(SidSpec { sid, behavior, psp, usd, adjacency, policy }))
}

pub fn steering_change(op: SteeringOp) -> Result<Change, String> {
    Ok(match op {
        SteeringOp::Add { prefix: p, segments, reduced, source } => {
            let (prefix, len) = prefix(&p)?;
            Change::SteeringAdd(PolicySpec { prefix, len, reduced, segments, source })
        }
        SteeringOp::Del { prefix: p } => {
            let (prefix, len) = prefix(&p)?;
            Change::SteeringDel { prefix, len }
        }
    })
}
