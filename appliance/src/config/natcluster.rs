//! `nat.cluster:` — this appliance as a host of a NAT cluster
//! (docs/nat-ha.md; fields in docs/config.md). The shard plan becomes the
//! cluster's [`ClusterPlan`], which checks what it can itself; the rest is
//! checked here, each error naming its field (`nat.cluster.<field>`).

use std::net::{Ipv4Addr, SocketAddr};

use dataplane::nat::cluster::agent::AgentTiming;
use dataplane::nat::cluster::{ClusterPlan, ClusterTiming, ShardPlan};
use dataplane::nat::NatConfig;
use serde::{Deserialize, Serialize};

use super::nat::pool_entry;
use super::{count, range, ConfigError, Res};

/// One peer as the file writes it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PeerYaml {
    id: i64,
    addr: String,
}

/// One shard as the file writes it (its id is its index).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ShardYaml {
    pool: Vec<String>,
    hosts: Vec<i64>,
}

/// `nat.cluster:` as the file writes it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct NatClusterYaml {
    host_id: i64,
    name: String,
    listen: String,
    peers: Vec<PeerYaml>,
    etcd: Vec<String>,
    shards: Vec<ShardYaml>,
    subscriber_hash_seed: u64,
    heartbeat_interval_ms: i64,
    heartbeat_miss: i64,
    beat_interval_ms: i64,
    beat_stale_ms: i64,
    fence_ms: i64,
    startup_grace_ms: i64,
    cache_idle_ms: i64,
    holddown_ms: Option<i64>,
    refresh_sync_ms: i64,
    timeout_margin_ms: i64,
    sync_retransmit_ms: i64,
    sync_retransmit_max: i64,
    sync_window_records: i64,
    sync_flush_records: i64,
    remote_requests_max: i64,
    remote_request_timeout_ms: i64,
    resync_retry_ms: i64,
    handover_timeout_ms: i64,
    etcd_timeout_ms: i64,
}

impl Default for NatClusterYaml {
    fn default() -> Self {
        let t = ClusterTiming::default();
        NatClusterYaml {
            host_id: 0,
            name: "nat".into(),
            listen: String::new(),
            peers: Vec::new(),
            etcd: Vec::new(),
            shards: Vec::new(),
            subscriber_hash_seed: 0x5eed_5eed,
            heartbeat_interval_ms: t.heartbeat_interval_ms as i64,
            heartbeat_miss: i64::from(t.heartbeat_miss),
            beat_interval_ms: 50,
            beat_stale_ms: 150,
            fence_ms: t.fence_ms as i64,
            startup_grace_ms: 3000,
            cache_idle_ms: 2000,
            holddown_ms: None,
            refresh_sync_ms: t.refresh_sync_ms as i64,
            timeout_margin_ms: t.timeout_margin_ms as i64,
            sync_retransmit_ms: t.sync_retransmit_ms as i64,
            sync_retransmit_max: i64::from(t.sync_retransmit_max),
            sync_window_records: i64::from(t.sync_window_records),
            sync_flush_records: i64::from(t.sync_flush_records),
            remote_requests_max: i64::from(t.remote_requests_max),
            remote_request_timeout_ms: t.remote_request_timeout_ms as i64,
            resync_retry_ms: t.resync_retry_ms as i64,
            handover_timeout_ms: t.handover_timeout_ms as i64,
            etcd_timeout_ms: 500,
        }
    }
}

/// `nat.cluster`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatCluster {
    /// Shards, placement, timings: the same on every host but `host_id`.
    pub plan: ClusterPlan,
    /// The etcd key prefix is `/appliance/nat/<name>/`.
    pub name: String,
    /// The cluster socket (a kernel UDP socket in the appliance's namespace).
    pub listen: SocketAddr,
    /// (host id, address) of every other host.
    pub peers: Vec<(u16, SocketAddr)>,
    /// etcd members, `host:port` (the JSON gateway, plain HTTP).
    pub etcd: Vec<String>,
    pub agent: AgentTiming,
    /// A worker does not trust a cache entry unhit for this long.
    pub cache_idle_ms: u32,
    /// A hit owes an activity report when the last is this old.
    pub report_ms: u32,
    pub etcd_timeout_ms: u64,
}

fn ms(path: &str, v: i64, lo: i64, hi: i64) -> Res<u64> {
    range(path, v, lo, hi)
}

/// The report interval for an idle time (as the single-host cache derives it).
pub fn report_ms(cache_idle_ms: u32) -> u32 {
    (cache_idle_ms / 4).clamp(1, 1000)
}

/// Validates `nat.cluster` against the NAT's pool and timeouts.
pub(super) fn validate(r: &mut NatClusterYaml, nat: &NatConfig) -> Res<NatCluster> {
    let p = |f: &str| format!("nat.cluster.{f}");
    let host_id: u16 = range(&p("host_id"), r.host_id, 1, 64)?;
    if r.name.is_empty() || !r.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        return Err(ConfigError::invalid(p("name"), format!("{:?}: letters, digits, - and _ only", r.name)));
    }
    let listen: SocketAddr = r
        .listen
        .parse()
        .map_err(|_| ConfigError::invalid(p("listen"), format!("{:?} is not ADDRESS:PORT", r.listen)))?;
    let peers = validate_peers(&r.peers, host_id, listen)?;
    let etcd = validate_etcd(&r.etcd)?;
    let mut hosts: Vec<u16> = peers.iter().map(|x| x.0).chain([host_id]).collect();
    hosts.sort_unstable();
    let shards = validate_shards(&r.shards, &hosts, nat)?;
    let timing = validate_timing(r, nat)?;
    r.holddown_ms = Some(timing.0.holddown_ms as i64);
    let plan = ClusterPlan { host_id, hosts, shards, subscriber_hash_seed: r.subscriber_hash_seed, timing: timing.0 };
    plan.validate(nat).map_err(|e| ConfigError::invalid(p(e.field), e.reason))?;
    Ok(NatCluster {
        plan,
        name: r.name.clone(),
        listen,
        peers,
        etcd,
        agent: timing.1,
        cache_idle_ms: timing.2,
        report_ms: report_ms(timing.2),
        etcd_timeout_ms: ms(&p("etcd_timeout_ms"), r.etcd_timeout_ms, 10, 60_000)?,
    })
}

fn validate_peers(peers: &[PeerYaml], host_id: u16, listen: SocketAddr) -> Res<Vec<(u16, SocketAddr)>> {
    count("nat.cluster.peers", peers.len(), 1, 63)?;
    let mut out: Vec<(u16, SocketAddr)> = Vec::new();
    for (i, peer) in peers.iter().enumerate() {
        let id: u16 = range(&format!("nat.cluster.peers[{i}].id"), peer.id, 1, 64)?;
        if id == host_id {
            return Err(ConfigError::invalid(format!("nat.cluster.peers[{i}].id"), format!("{id} is this host's id")));
        }
        if out.iter().any(|x| x.0 == id) {
            return Err(ConfigError::invalid(
                format!("nat.cluster.peers[{i}].id"),
                format!("host {id} is listed twice"),
            ));
        }
        let addr: SocketAddr = peer.addr.parse().map_err(|_| {
            ConfigError::invalid(format!("nat.cluster.peers[{i}].addr"), format!("{:?} is not ADDRESS:PORT", peer.addr))
        })?;
        if addr == listen || addr.is_ipv4() != listen.is_ipv4() {
            return Err(ConfigError::invalid(
                format!("nat.cluster.peers[{i}].addr"),
                format!("{addr}: must be another address of listen's family ({listen})"),
            ));
        }
        out.push((id, addr));
    }
    Ok(out)
}

fn validate_etcd(etcd: &[String]) -> Res<Vec<String>> {
    count("nat.cluster.etcd", etcd.len(), 1, 7)?;
    etcd.iter()
        .enumerate()
        .map(|(i, e)| {
            let hostport = e.strip_prefix("http://").map(|h| h.trim_end_matches('/')).unwrap_or("");
            if hostport.parse::<SocketAddr>().is_err() {
                return Err(ConfigError::invalid(
                    format!("nat.cluster.etcd[{i}]"),
                    format!("{e:?}: must be http://ADDRESS:PORT (etcd's client URL)"),
                ));
            }
            Ok(hostport.to_string())
        })
        .collect()
}

fn validate_shards(shards: &[ShardYaml], hosts: &[u16], nat: &NatConfig) -> Res<Vec<ShardPlan>> {
    count("nat.cluster.shards", shards.len(), 1, 1024)?;
    let mut seen: std::collections::HashMap<Ipv4Addr, usize> = std::collections::HashMap::new();
    let mut out = Vec::new();
    for (i, s) in shards.iter().enumerate() {
        let path = format!("nat.cluster.shards[{i}]");
        count(&format!("{path}.hosts"), s.hosts.len(), 2, 2)?;
        let mut pair = [0u16; 2];
        for (j, h) in s.hosts.iter().enumerate() {
            let id: u16 = range(&format!("{path}.hosts[{j}]"), *h, 1, 64)?;
            if !hosts.contains(&id) {
                return Err(ConfigError::invalid(
                    format!("{path}.hosts[{j}]"),
                    format!("host {id} is neither nat.cluster.host_id nor a peer"),
                ));
            }
            pair[j] = id;
        }
        if pair[0] == pair[1] {
            return Err(ConfigError::invalid(format!("{path}.hosts"), "the active and the standby must be two hosts"));
        }
        count(&format!("{path}.pool"), s.pool.len(), 1, 65_536)?;
        let mut pool = Vec::new();
        for (j, text) in s.pool.iter().enumerate() {
            let entry = format!("{path}.pool[{j}]");
            let (base, len) = pool_entry(&entry, text)?;
            for k in 0..1u32 << (32 - u32::from(len)) {
                let a = Ipv4Addr::from(base + k);
                if !nat.pool.contains(&a) {
                    return Err(ConfigError::invalid(entry, format!("{a} is not in nat.pool")));
                }
                if let Some(other) = seen.insert(a, i) {
                    return Err(ConfigError::invalid(entry, format!("{a} is in nat.cluster.shards[{other}] too")));
                }
                pool.push(a);
            }
        }
        out.push(ShardPlan { id: i as u16, pool, hosts: pair });
    }
    if let Some(a) = nat.pool.iter().find(|a| !seen.contains_key(a)) {
        return Err(ConfigError::invalid("nat.cluster.shards", format!("{a} of nat.pool is in no shard")));
    }
    Ok(out)
}

/// (the node's timing, the agent's, the cache idle time).
fn validate_timing(r: &NatClusterYaml, nat: &NatConfig) -> Res<(ClusterTiming, AgentTiming, u32)> {
    let p = |f: &str| format!("nat.cluster.{f}");
    let heartbeat_interval_ms = ms(&p("heartbeat_interval_ms"), r.heartbeat_interval_ms, 1, 10_000)?;
    let heartbeat_miss: u32 = range(&p("heartbeat_miss"), r.heartbeat_miss, 2, 100)?;
    let beat_interval_ms = ms(&p("beat_interval_ms"), r.beat_interval_ms, 10, 10_000)?;
    let beat_stale_ms = ms(&p("beat_stale_ms"), r.beat_stale_ms, 1, 600_000)?;
    if beat_stale_ms < 2 * beat_interval_ms {
        return Err(ConfigError::invalid(
            p("beat_stale_ms"),
            format!("{beat_stale_ms}: at least 2 × beat_interval_ms ({})", 2 * beat_interval_ms),
        ));
    }
    let fence_ms = ms(&p("fence_ms"), r.fence_ms, 1, 600_000)?;
    if fence_ms < 2 * beat_interval_ms {
        return Err(ConfigError::invalid(
            p("fence_ms"),
            format!(
                "{fence_ms}: at least 2 × beat_interval_ms ({}), or allocation stops between beats",
                2 * beat_interval_ms
            ),
        ));
    }
    let min_timeout = nat.udp_timeout_ms.min(nat.icmp_timeout_ms).min(nat.tcp_transitory_timeout_ms);
    let cache_idle: u32 = range(&p("cache_idle_ms"), r.cache_idle_ms, 10, 30_000)?;
    if u64::from(cache_idle) > min_timeout / 2 {
        return Err(ConfigError::invalid(
            p("cache_idle_ms"),
            format!("{cache_idle}: at most half the shortest NAT timeout ({} ms)", min_timeout / 2),
        ));
    }
    let holddown_min = fence_ms + u64::from(cache_idle) + u64::from(report_ms(cache_idle)) + 100;
    let holddown_ms = match r.holddown_ms {
        None => holddown_min,
        Some(v) => ms(&p("holddown_ms"), v, 0, 3_600_000)?,
    };
    if holddown_ms < holddown_min {
        return Err(ConfigError::invalid(
            p("holddown_ms"),
            format!("{holddown_ms}: at least fence_ms + cache_idle_ms + its report interval + 100 ({holddown_min})"),
        ));
    }
    let window: u32 = range(&p("sync_window_records"), r.sync_window_records, 1024, 1 << 22)?;
    let timing = ClusterTiming {
        heartbeat_interval_ms,
        heartbeat_miss,
        fence_ms,
        holddown_ms,
        refresh_sync_ms: ms(&p("refresh_sync_ms"), r.refresh_sync_ms, 100, 3_600_000)?,
        timeout_margin_ms: ms(&p("timeout_margin_ms"), r.timeout_margin_ms, 0, 3_600_000)?,
        sync_retransmit_ms: ms(&p("sync_retransmit_ms"), r.sync_retransmit_ms, 1, 10_000)?,
        sync_retransmit_max: range(&p("sync_retransmit_max"), r.sync_retransmit_max, 1, 10_000)?,
        sync_window_records: window,
        sync_flush_records: range(&p("sync_flush_records"), r.sync_flush_records, 48, i64::from(window))?,
        remote_requests_max: range(&p("remote_requests_max"), r.remote_requests_max, 16, 65_536)?,
        remote_request_timeout_ms: ms(&p("remote_request_timeout_ms"), r.remote_request_timeout_ms, 1, 60_000)?,
        resync_retry_ms: ms(&p("resync_retry_ms"), r.resync_retry_ms, 1, 60_000)?,
        handover_timeout_ms: ms(&p("handover_timeout_ms"), r.handover_timeout_ms, 1, 600_000)?,
    };
    let startup_grace_ms = ms(&p("startup_grace_ms"), r.startup_grace_ms, 0, 600_000)?;
    Ok((timing, AgentTiming { beat_interval_ms, beat_stale_ms, startup_grace_ms }, cache_idle))
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;

    const NAT: &str = r#"
lcores:
  main: { lcore: 0, cpu: 0 }
  workers: [{ lcore: 1, cpu: 1 }]
  mapper: { lcore: 2, cpu: 0 }
nat:
  inside: [inside]
  outside: [outside]
  pool: ["100.64.100.0/30", "100.64.100.8/30"]
  cluster:
    host_id: 1
    listen: "192.0.2.1:7400"
    peers: [{ id: 2, addr: "192.0.2.2:7400" }, { id: 3, addr: "192.0.2.3:7400" }]
    etcd: ["http://192.0.2.10:2379"]
    shards:
      - { pool: ["100.64.100.0/30"], hosts: [1, 2] }
      - { pool: ["100.64.100.8/31", "100.64.100.10/31"], hosts: [2, 3] }
"#;

    fn with(from: &str, to: &str) -> String {
        assert!(NAT.contains(from), "{from}");
        format!("{BASE}{}", NAT.replacen(from, to, 1))
    }

    #[test]
    fn cluster_section_parses_and_round_trips() {
        let c = ok(&format!("{BASE}{NAT}"));
        let cl = c.nat.as_ref().unwrap().cluster.as_ref().unwrap();
        assert_eq!(cl.plan.host_id, 1);
        assert_eq!(cl.plan.hosts, [1, 2, 3]);
        assert_eq!(cl.plan.shards.len(), 2);
        assert_eq!(cl.plan.shards[1].pool.len(), 4);
        assert_eq!(cl.plan.shards[1].hosts, [2, 3]);
        assert_eq!(cl.etcd, ["192.0.2.10:2379"]);
        assert_eq!(cl.report_ms, 500);
        assert_eq!(cl.plan.timing.holddown_ms, 1000 + 2000 + 500 + 100, "derived");
        assert_eq!(ok(&c.to_yaml()), c);
        assert!(c.to_yaml().contains("holddown_ms: 3600"), "the derived value is printed");
    }

    #[test]
    fn cluster_errors_name_the_field() {
        let cases: &[(&str, &str, &str)] = &[
            ("host_id: 1", "host_id: 0", "nat.cluster.host_id: must be 1..=64"),
            (
                "listen: \"192.0.2.1:7400\"",
                "listen: \"192.0.2.1\"",
                "nat.cluster.listen: \"192.0.2.1\" is not ADDRESS:PORT",
            ),
            ("{ id: 2, addr", "{ id: 1, addr", "nat.cluster.peers[0].id: 1 is this host's id"),
            ("{ id: 3, addr", "{ id: 2, addr", "nat.cluster.peers[1].id: host 2 is listed twice"),
            ("\"192.0.2.3:7400\"", "\"192.0.2.1:7400\"", "nat.cluster.peers[1].addr: 192.0.2.1:7400: must be another"),
            ("http://192.0.2.10:2379", "192.0.2.10:2379", "nat.cluster.etcd[0]: \"192.0.2.10:2379\": must be http://"),
            ("hosts: [1, 2]", "hosts: [1, 1]", "nat.cluster.shards[0].hosts: the active and the standby"),
            ("hosts: [2, 3]", "hosts: [2, 9]", "nat.cluster.shards[1].hosts[1]: host 9 is neither"),
            ("hosts: [2, 3]", "hosts: [2]", "nat.cluster.shards[1].hosts: must have 2..=2 entries"),
            (
                "\"100.64.100.8/31\", ",
                "\"100.64.100.0/31\", ",
                "nat.cluster.shards[1].pool[0]: 100.64.100.0 is in nat.cluster.shards[0] too",
            ),
            (
                "\"100.64.100.10/31\"",
                "\"100.64.100.10/32\"",
                "nat.cluster.shards: 100.64.100.11 of nat.pool is in no shard",
            ),
            (
                "\"100.64.100.10/31\"",
                "\"100.64.100.12/31\"",
                "nat.cluster.shards[1].pool[1]: 100.64.100.12 is not in nat.pool",
            ),
            ("host_id: 1", "host_id: 1\n    fence_ms: 10", "nat.cluster.fence_ms: 10: at least 2 × beat_interval_ms"),
            (
                "host_id: 1",
                "host_id: 1\n    beat_stale_ms: 60",
                "nat.cluster.beat_stale_ms: 60: at least 2 × beat_interval_ms",
            ),
            ("host_id: 1", "host_id: 1\n    holddown_ms: 100", "nat.cluster.holddown_ms: 100: at least fence_ms"),
            ("host_id: 1", "host_id: 1\n    cache_idle_ms: 40000", "nat.cluster.cache_idle_ms: must be 10..=30000"),
            (
                "host_id: 1",
                "host_id: 1\n    timeout_margin_ms: 10",
                "nat.cluster.timeout_margin_ms: 10: must be at least",
            ),
            ("host_id: 1", "host_id: 1\n    colour: blue", "nat.cluster.colour: unknown field"),
            ("host_id: 1", "host_id: 1\n    name: \"a b\"", "nat.cluster.name: \"a b\": letters"),
        ];
        for (from, to, want) in cases {
            let e = err(&with(from, to));
            assert!(e.starts_with(want), "{from} -> {to}: got {e}");
        }
        // The cache idle time must respect the NAT timeouts (the cache's invariant).
        let e = err(&with("host_id: 1", "host_id: 1\n    cache_idle_ms: 20000")
            .replace("  cluster:", "  udp_timeout_ms: 30000\n  cluster:"));
        assert!(e.starts_with("nat.cluster.cache_idle_ms: 20000: at most half the shortest NAT timeout"), "{e}");
    }
}
