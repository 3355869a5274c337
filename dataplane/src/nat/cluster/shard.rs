//! The shard plan of a NAT cluster and what follows from it: which shard a
//! subscriber or a public address belongs to, and the run-time view of who
//! owns each shard at which epoch.
//!
//! ```text
//!  subscriber (inside address) ── mix64(addr ^ seed) mod shards ──► shard
//!  public address ─────────────── sorted (address, shard) table ──► shard
//!  shard ── Ownership ──► (owner host, epoch): the epoch is etcd's revision of the
//!                         shard's owner key; a larger epoch always wins
//! ```

use std::net::Ipv4Addr;

use crate::nat::{mix64, NatConfig, NatConfigError};

/// One shard of the pool: its public addresses and the two hosts that carry
/// it (`hosts[0]` preferred active, `hosts[1]` its standby).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardPlan {
    pub id: u16,
    pub pool: Vec<Ipv4Addr>,
    pub hosts: [u16; 2],
}

/// The timings and limits of a cluster member (docs/nat-ha.md; the
/// `nat.cluster` section fills it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClusterTiming {
    pub heartbeat_interval_ms: u64,
    /// Heartbeat intervals of silence after which a peer is taken for dead.
    pub heartbeat_miss: u32,
    /// How long a successful beat lets a host allocate (the fencing rule).
    pub fence_ms: u64,
    /// How long a new owner waits before allocating after a takeover.
    pub holddown_ms: u64,
    /// A refreshed session is re-sent to the standby when its last copy is this old.
    pub refresh_sync_ms: u64,
    /// The standby's timeouts are this much longer.
    pub timeout_margin_ms: u64,
    pub sync_retransmit_ms: u64,
    /// Retransmission rounds without progress before the standby is dropped
    /// (and later resynchronised).
    pub sync_retransmit_max: u32,
    /// Records kept for the standby until acknowledged.
    pub sync_window_records: u32,
    /// Records sent to one standby per loop at most.
    pub sync_flush_records: u32,
    /// Requests parked for a remote mapping server.
    pub remote_requests_max: u32,
    pub remote_request_timeout_ms: u64,
    /// How often a standby that is not synced asks for a snapshot.
    pub resync_retry_ms: u64,
    /// How long a graceful handover may take before the owner resumes.
    pub handover_timeout_ms: u64,
}

impl Default for ClusterTiming {
    fn default() -> Self {
        ClusterTiming {
            heartbeat_interval_ms: 20,
            heartbeat_miss: 5,
            fence_ms: 1000,
            holddown_ms: 3600,
            refresh_sync_ms: 30_000,
            timeout_margin_ms: 60_000,
            sync_retransmit_ms: 20,
            sync_retransmit_max: 25,
            sync_window_records: 65_536,
            sync_flush_records: 4096,
            remote_requests_max: 4096,
            remote_request_timeout_ms: 1000,
            resync_retry_ms: 200,
            handover_timeout_ms: 5000,
        }
    }
}

/// The whole plan: the same on every host, except `host_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterPlan {
    /// This host (1..=64).
    pub host_id: u16,
    /// Every host of the cluster, this one included, ascending.
    pub hosts: Vec<u16>,
    /// By id: `shards[i].id == i`.
    pub shards: Vec<ShardPlan>,
    pub subscriber_hash_seed: u64,
    pub timing: ClusterTiming,
}

fn err(field: &'static str, reason: impl Into<String>) -> NatConfigError {
    NatConfigError { field, reason: reason.into() }
}

/// Largest number of shards (shard ids are u16 on the wire; the tables are
/// sized per shard).
pub const SHARDS_MAX: usize = 1024;
/// Largest host id.
pub const HOST_ID_MAX: u16 = 64;

impl ClusterPlan {
    /// Checks the plan against the NAT's pool: shards numbered 0..n, each a
    /// non-empty part of the pool, disjoint, together the whole pool; two
    /// distinct known hosts per shard; this host among the hosts.
    /// The error's field is relative to `nat.cluster`.
    pub fn validate(&self, nat: &NatConfig) -> Result<(), NatConfigError> {
        if !(1..=HOST_ID_MAX).contains(&self.host_id) {
            return Err(err("host_id", format!("{}: must be in 1..={HOST_ID_MAX}", self.host_id)));
        }
        if !self.hosts.contains(&self.host_id) {
            return Err(err("host_id", format!("{} is not among the cluster's hosts", self.host_id)));
        }
        if self.shards.is_empty() || self.shards.len() > SHARDS_MAX {
            return Err(err("shards", format!("{} shards: must be 1..={SHARDS_MAX}", self.shards.len())));
        }
        let mut owner_of: std::collections::HashMap<Ipv4Addr, u16> = std::collections::HashMap::new();
        for (i, s) in self.shards.iter().enumerate() {
            if usize::from(s.id) != i {
                return Err(err("shards", format!("shard {i} has id {}: ids must be 0, 1, 2... in order", s.id)));
            }
            if s.pool.is_empty() {
                return Err(err("shards", format!("shard {i}: empty pool")));
            }
            if s.hosts[0] == s.hosts[1] {
                return Err(err("shards", format!("shard {i}: active and standby are both host {}", s.hosts[0])));
            }
            if let Some(h) = s.hosts.iter().find(|h| !self.hosts.contains(h)) {
                return Err(err("shards", format!("shard {i}: host {h} is not this host or a peer")));
            }
            for a in &s.pool {
                if !nat.pool.contains(a) {
                    return Err(err("shards", format!("shard {i}: {a} is not in nat.pool")));
                }
                if let Some(j) = owner_of.insert(*a, s.id) {
                    return Err(err("shards", format!("shard {i}: {a} is in shard {j} too")));
                }
            }
        }
        if let Some(a) = nat.pool.iter().find(|a| !owner_of.contains_key(a)) {
            return Err(err("shards", format!("{a} of nat.pool is in no shard")));
        }
        let t = &self.timing;
        if t.heartbeat_interval_ms == 0 || t.heartbeat_miss < 2 {
            return Err(err("heartbeat_miss", "at least 2 heartbeats of at least 1 ms"));
        }
        if t.timeout_margin_ms < t.refresh_sync_ms + t.sync_retransmit_ms * u64::from(t.sync_retransmit_max) {
            return Err(err(
                "timeout_margin_ms",
                format!(
                    "{}: must be at least refresh_sync_ms + sync_retransmit_ms × sync_retransmit_max ({})",
                    t.timeout_margin_ms,
                    t.refresh_sync_ms + t.sync_retransmit_ms * u64::from(t.sync_retransmit_max)
                ),
            ));
        }
        Ok(())
    }

    /// The shards this host carries (as active or standby).
    pub fn local_shards(&self) -> impl Iterator<Item = &ShardPlan> + '_ {
        self.shards.iter().filter(|s| s.hosts.contains(&self.host_id))
    }

    /// A digest of what every host must agree on (shards, pools, hosts,
    /// seed): heartbeats carry it, and a peer with another one is ignored.
    pub fn fingerprint(&self) -> u32 {
        let mut h = mix64(self.subscriber_hash_seed ^ 0x6e61_7468);
        for s in &self.shards {
            h = mix64(h ^ u64::from(s.id) ^ u64::from(s.hosts[0]) << 16 ^ u64::from(s.hosts[1]) << 32);
            for a in &s.pool {
                h = mix64(h ^ u64::from(u32::from(*a)));
            }
        }
        for host in &self.hosts {
            h = mix64(h ^ u64::from(*host) << 48);
        }
        (h ^ h >> 32) as u32
    }

    /// The NAT table config of one shard: `nat` with the shard's pool.
    pub fn shard_config(&self, nat: &NatConfig, shard: u16) -> NatConfig {
        NatConfig { pool: self.shards[usize::from(shard)].pool.clone(), ..nat.clone() }
    }
}

/// Which shard a subscriber or a public address belongs to.
#[derive(Debug, Clone)]
pub struct ShardMap {
    /// (address, shard), by address.
    by_addr: Vec<(u32, u16)>,
    shards: u16,
    seed: u64,
}

impl ShardMap {
    pub fn new(plan: &ClusterPlan) -> ShardMap {
        let mut by_addr: Vec<(u32, u16)> =
            plan.shards.iter().flat_map(|s| s.pool.iter().map(move |a| (u32::from(*a), s.id))).collect();
        by_addr.sort_unstable();
        ShardMap { by_addr, shards: plan.shards.len() as u16, seed: plan.subscriber_hash_seed }
    }

    /// Number of shards.
    pub fn len(&self) -> usize {
        usize::from(self.shards)
    }

    pub fn is_empty(&self) -> bool {
        self.shards == 0
    }

    /// The shard of a subscriber (an inside address).
    #[inline]
    pub fn of_subscriber(&self, inside: Ipv4Addr) -> u16 {
        (mix64(u64::from(u32::from(inside)) ^ self.seed) % u64::from(self.shards)) as u16
    }

    /// The shard holding a public address; `None` if it is not in the pool.
    #[inline]
    pub fn of_public(&self, public: Ipv4Addr) -> Option<u16> {
        let a = u32::from(public);
        self.by_addr.binary_search_by_key(&a, |e| e.0).ok().map(|i| self.by_addr[i].1)
    }
}

/// Who owns a shard, as far as this host knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Owner {
    /// 0: unknown.
    pub host: u16,
    pub epoch: u64,
}

/// The run-time view of every shard's owner. Epochs only go up: a report of
/// an older epoch is ignored, so views converge whatever the order they are
/// heard in (heartbeats, owner announcements, answers, etcd reads).
#[derive(Debug, Clone)]
pub struct Ownership {
    owners: Vec<Owner>,
}

impl Ownership {
    pub fn new(shards: usize) -> Ownership {
        Ownership { owners: vec![Owner::default(); shards] }
    }

    #[inline]
    pub fn get(&self, shard: u16) -> Owner {
        self.owners.get(usize::from(shard)).copied().unwrap_or_default()
    }

    /// Records `host` as the owner of `shard` at `epoch` if that is newer
    /// than what is known; returns whether the view changed.
    pub fn update(&mut self, shard: u16, host: u16, epoch: u64) -> bool {
        let Some(o) = self.owners.get_mut(usize::from(shard)) else { return false };
        if epoch > o.epoch || (epoch == o.epoch && o.host == 0) {
            let changed = o.host != host || o.epoch != epoch;
            *o = Owner { host, epoch };
            return changed;
        }
        false
    }

    pub fn iter(&self) -> impl Iterator<Item = (u16, Owner)> + '_ {
        self.owners.iter().enumerate().map(|(i, o)| (i as u16, *o))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::nat::tests::small_config;

    /// 3 hosts, 3 shards of 2 addresses each over small_config(6)'s pool:
    /// shard i active on host i+1, standby on the next host.
    pub(crate) fn plan(host: u16) -> (ClusterPlan, NatConfig) {
        let nat = small_config(6);
        let shards = (0..3u16)
            .map(|i| ShardPlan {
                id: i,
                pool: nat.pool[usize::from(i) * 2..usize::from(i) * 2 + 2].to_vec(),
                hosts: [i + 1, (i + 1) % 3 + 1],
            })
            .collect();
        let plan = ClusterPlan {
            host_id: host,
            hosts: vec![1, 2, 3],
            shards,
            subscriber_hash_seed: 7,
            timing: ClusterTiming::default(),
        };
        (plan, nat)
    }

    #[test]
    fn plan_validates_and_names_the_field() {
        let (p, nat) = plan(1);
        assert_eq!(p.validate(&nat), Ok(()));
        let field = |p: ClusterPlan| p.validate(&nat).unwrap_err().field;
        assert_eq!(field(ClusterPlan { host_id: 9, ..p.clone() }), "host_id");
        let mut bad = p.clone();
        bad.shards[1].pool.push(nat.pool[0]);
        let e = bad.validate(&nat).unwrap_err();
        assert_eq!(e.field, "shards");
        assert!(e.reason.contains("in shard 0 too"), "{e}");
        let mut bad = p.clone();
        bad.shards[2].pool.pop();
        assert!(bad.validate(&nat).unwrap_err().reason.contains("is in no shard"));
        let mut bad = p.clone();
        bad.shards[0].hosts = [2, 2];
        assert_eq!(field(bad), "shards");
        let mut bad = p.clone();
        bad.shards[0].hosts = [1, 7];
        assert!(bad.validate(&nat).unwrap_err().reason.contains("host 7"));
        let mut bad = p.clone();
        bad.timing.timeout_margin_ms = 1;
        assert_eq!(field(bad), "timeout_margin_ms");
        assert_eq!(p.local_shards().map(|s| s.id).collect::<Vec<_>>(), [0, 2]);
    }

    #[test]
    fn fingerprint_ignores_the_host_but_not_the_plan() {
        let (a, _) = plan(1);
        let (b, _) = plan(2);
        assert_eq!(a.fingerprint(), b.fingerprint());
        let mut c = a.clone();
        c.shards[0].hosts.swap(0, 1);
        assert_ne!(a.fingerprint(), c.fingerprint());
        let mut d = a.clone();
        d.subscriber_hash_seed = 8;
        assert_ne!(a.fingerprint(), d.fingerprint());
    }

    #[test]
    fn subscribers_and_addresses_map_to_shards() {
        let (p, nat) = plan(1);
        let m = ShardMap::new(&p);
        assert_eq!(m.len(), 3);
        for (i, a) in nat.pool.iter().enumerate() {
            assert_eq!(m.of_public(*a), Some((i / 2) as u16));
        }
        assert_eq!(m.of_public(Ipv4Addr::new(8, 8, 8, 8)), None);
        let mut seen = [0; 3];
        for i in 0..3000u32 {
            let s = m.of_subscriber(Ipv4Addr::from(0x6440_0000 + i));
            seen[usize::from(s)] += 1;
            assert_eq!(s, m.of_subscriber(Ipv4Addr::from(0x6440_0000 + i)), "stable");
        }
        assert!(seen.iter().all(|&n| n > 800), "spread: {seen:?}");
    }

    #[test]
    fn ownership_only_moves_forward() {
        let mut o = Ownership::new(2);
        assert_eq!(o.get(0), Owner::default());
        assert!(o.update(0, 1, 10));
        assert!(!o.update(0, 2, 9), "older epoch ignored");
        assert!(!o.update(0, 1, 10), "same");
        assert!(o.update(0, 2, 11));
        assert_eq!(o.get(0), Owner { host: 2, epoch: 11 });
        assert!(!o.update(5, 1, 1), "unknown shard");
        assert_eq!(o.iter().count(), 2);
    }
}
