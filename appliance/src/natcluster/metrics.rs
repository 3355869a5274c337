//! The NAT cluster's metrics in the Prometheus text format (appended to
//! `/metrics` by `crate::metrics`; kept here so the metrics module and this
//! one change apart). Base units: seconds, bytes; counters end in `_total`.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `appliance_nat_cluster_shard_role` (0 none, 1 standby, 2 active) | gauge | shard |
//! | `appliance_nat_cluster_shard_epoch`, `..._shard_owner` | gauge | shard |
//! | `appliance_nat_cluster_shard_sessions`, `..._shard_allocating`, `..._shard_synced` | gauge | shard |
//! | `appliance_nat_cluster_sync_lag_records`, `..._sync_lag_seconds` | gauge | shard |
//! | `appliance_nat_cluster_sync_records_sent_total`, `..._acked_total`, `..._retransmitted_total`, `..._applied_total`, `..._refused_total` | counter | shard |
//! | `appliance_nat_cluster_resyncs_total` | counter | shard |
//! | `appliance_nat_cluster_peer_alive` | gauge | host |
//! | `appliance_nat_cluster_takeovers_total`, `..._handovers_total`, `..._demotions_total` | counter | |
//! | `appliance_nat_cluster_sessions_activated_total`, `..._sessions_adopted_total`, `..._invalidations_total` | counter | |
//! | `appliance_nat_cluster_remote_requests_total`, `..._remote_replies_total`, `..._remote_rerouted_total`, `..._served_requests_total` | counter | |
//! | `appliance_nat_cluster_remote_request_seconds` | histogram | |
//! | `appliance_nat_cluster_activity_forwarded_total`, `..._activity_received_total` | counter | |
//! | `appliance_nat_cluster_heartbeats_sent_total`, `..._datagrams_sent_total`, `..._datagrams_received_total`, `..._datagrams_bad_total`, `..._peer_mismatch_total` | counter | |
//! | `appliance_nat_cluster_sent_bytes_total`, `..._sync_sent_bytes_total` | counter | |
//! | `appliance_nat_cluster_parked_requests` | gauge | |
//! | `appliance_nat_cluster_agent_queue_full_total` | counter | |

use std::fmt::Write;

use dataplane::nat::cluster::node::{ShardStats, LATENCY_BOUNDS_US};
use dataplane::stats::{Counter, Gauge};

use super::ClusterShared;

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP appliance_nat_cluster_{name} {help}");
    let _ = writeln!(out, "# TYPE appliance_nat_cluster_{name} {kind}");
}

fn per_shard(out: &mut String, c: &ClusterShared, name: &str, kind: &str, help: &str, f: impl Fn(&ShardStats) -> f64) {
    family(out, name, kind, help);
    for s in c.plan.local_shards() {
        let v = f(&c.stats.shards[usize::from(s.id)]);
        let _ = writeln!(out, "appliance_nat_cluster_{name}{{shard=\"{}\"}} {v}", s.id);
    }
}

fn single(out: &mut String, name: &str, kind: &str, help: &str, v: u64) {
    family(out, name, kind, help);
    let _ = writeln!(out, "appliance_nat_cluster_{name} {v}");
}

/// (name, help, value of a shard).
type ShardFamily = (&'static str, &'static str, fn(&ShardStats) -> f64);

fn g(x: &Gauge) -> f64 {
    x.get() as f64
}

/// Appends the cluster's metric families to `out`.
pub fn render(out: &mut String, c: &ClusterShared) {
    let gauges: [ShardFamily; 7] = [
        ("shard_role", "This host's role for the shard: 0 none, 1 standby, 2 active", |s| g(&s.role)),
        ("shard_epoch", "The shard's ownership epoch as known here (etcd revision)", |s| g(&s.epoch)),
        ("shard_owner", "The host id owning the shard as known here (0: unknown)", |s| g(&s.owner)),
        ("shard_sessions", "Sessions in this host's copy of the shard", |s| g(&s.sessions)),
        ("shard_allocating", "1 while this host may allocate in the shard", |s| g(&s.allocating)),
        ("shard_synced", "1 when this host's copy is complete (active, or a synced standby)", |s| g(&s.synced)),
        ("sync_lag_records", "Records sent to the standby and not yet acknowledged", |s| g(&s.lag_records)),
    ];
    for (name, help, f) in gauges {
        per_shard(out, c, name, "gauge", help, f);
    }
    per_shard(out, c, "sync_lag_seconds", "gauge", "Age of the oldest unacknowledged sync record", |s| {
        s.lag_ms.get() as f64 / 1000.0
    });
    let counters: [ShardFamily; 6] = [
        ("sync_records_sent_total", "Sync records sent to the standby (first sends)", |s| g(&s.records_sent)),
        ("sync_records_acked_total", "Sync records the standby acknowledged", |s| g(&s.records_acked)),
        ("sync_records_retransmitted_total", "Sync records sent again", |s| g(&s.records_retransmitted)),
        ("sync_records_applied_total", "Sync records this host applied as the standby", |s| g(&s.records_applied)),
        ("sync_records_refused_total", "Sync records this standby could not apply (a resync follows)", |s| {
            g(&s.records_refused)
        }),
        ("resyncs_total", "Full resynchronisations started for the standby", |s| g(&s.resyncs)),
    ];
    for (name, help, f) in counters {
        per_shard(out, c, name, "counter", help, f);
    }
    family(out, "peer_alive", "gauge", "1 while the host is heard from (heartbeats, any datagram)");
    for &h in &c.plan.hosts {
        if h != c.plan.host_id {
            let _ = writeln!(
                out,
                "appliance_nat_cluster_peer_alive{{host=\"{h}\"}} {}",
                c.stats.peer_alive[usize::from(h)].get()
            );
        }
    }
    let s = &c.stats;
    let totals: [(&str, &str, &Counter); 20] = [
        ("takeovers_total", "Shards this host took over from a failed owner", &s.takeovers),
        ("handovers_total", "Shards handed over to this host gracefully", &s.handovers),
        ("demotions_total", "Shards this host stopped serving (a newer owner)", &s.demotions),
        (
            "sessions_activated_total",
            "Synced sessions that became active with a takeover or handover",
            &s.sessions_activated,
        ),
        (
            "sessions_adopted_total",
            "Sessions adopted from workers' reports (not synced before a takeover)",
            &s.sessions_adopted,
        ),
        ("invalidations_total", "Cache entries workers were told to drop", &s.invalidations),
        ("remote_requests_total", "State requests sent to another host's mapping server", &s.remote_requests),
        ("remote_replies_total", "Replies received to state requests", &s.remote_replies),
        ("remote_rerouted_total", "State requests sent again to a new owner", &s.remote_rerouted),
        ("served_requests_total", "State requests of other hosts answered here", &s.served_requests),
        ("activity_forwarded_total", "Activity records forwarded to a shard's owner", &s.activity_forwarded),
        ("activity_received_total", "Activity records received from other hosts", &s.activity_received),
        ("heartbeats_sent_total", "Heartbeats sent", &s.heartbeats_sent),
        ("datagrams_sent_total", "Cluster datagrams sent", &s.datagrams_sent),
        ("datagrams_received_total", "Cluster datagrams received", &s.datagrams_received),
        ("datagrams_bad_total", "Cluster datagrams refused (malformed, unknown sender)", &s.datagrams_bad),
        ("peer_mismatch_total", "Datagrams from a host with another shard plan", &s.peer_mismatch),
        ("sent_bytes_total", "Bytes of cluster datagrams sent (UDP payload)", &s.bytes_sent),
        ("sync_sent_bytes_total", "Bytes of sync datagrams sent (UDP payload)", &s.sync_bytes_sent),
        ("agent_queue_full_total", "Requests the etcd agent's queue could not take", &c.agent_queue_full),
    ];
    for (name, help, counter) in totals {
        single(out, name, "counter", help, counter.get());
    }
    single(out, "parked_requests", "gauge", "Packets parked for a remote mapping server", s.parked.get());
    family(out, "remote_request_seconds", "histogram", "Round trip of state requests to another host");
    for (i, bound) in LATENCY_BOUNDS_US.iter().enumerate() {
        let _ = writeln!(
            out,
            "appliance_nat_cluster_remote_request_seconds_bucket{{le=\"{}\"}} {}",
            *bound as f64 / 1e6,
            s.remote_latency[i].get()
        );
    }
    let count = s.remote_latency[LATENCY_BOUNDS_US.len()].get();
    let _ = writeln!(out, "appliance_nat_cluster_remote_request_seconds_bucket{{le=\"+Inf\"}} {count}");
    let _ = writeln!(
        out,
        "appliance_nat_cluster_remote_request_seconds_sum {}",
        s.remote_latency_sum_us.get() as f64 / 1e6
    );
    let _ = writeln!(out, "appliance_nat_cluster_remote_request_seconds_count {count}");
}
