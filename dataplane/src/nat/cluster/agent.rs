//! The ownership agent's logic: what a host reads and writes in etcd, and
//! when (docs/nat-ha.md, ownership and the fencing rule). Pure: the store
//! is a trait ([`OwnerStore`]; the appliance implements it over etcd's JSON
//! gateway, tests in memory), the clock is given.
//!
//! ```text
//!  every beat interval:  read owner/* and beat/*  ─► owners to the node; a lost shard
//!                        beat: txn(owner/s mod == epoch, for each s held) put beat/s
//!                              ─► BeatOk(sent): the node may allocate until sent + fence
//!  absent owner/s ─► claim it (the preferred host at once, the other after the grace)
//!  takeover request ─► once beat/s has not changed for beat_stale_ms:
//!                      txn(owner/s mod == E, beat/s mod == R) put owner/s, beat/s
//!  handover request ─► txn(owner/s mod == E) put owner/s, beat/s
//! ```
//!
//! The epoch of a shard is the `mod_revision` etcd gave `owner/s` when it
//! was taken: unique and increasing, so two hosts never hold the same one.

use super::node::{AgentEvent, AgentRequest, HowAcquired};
use super::shard::ShardPlan;

/// An `owner/<shard>` key as read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OwnerRecord {
    pub host: u16,
    pub incarnation: u64,
    /// Its `mod_revision`: the epoch.
    pub revision: u64,
}

/// A store error (unreachable, no quorum, bad answer): nothing is known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("ownership store: {0}")]
pub struct StoreError(pub String);

/// What the agent needs of etcd.
pub trait OwnerStore {
    /// Every `owner/<s>` (index = shard; `None`: absent), linearizably.
    fn owners(&mut self, shards: usize) -> Result<Vec<Option<OwnerRecord>>, StoreError>;
    /// The `mod_revision` of every `beat/<s>` (0: absent).
    fn beats(&mut self, shards: usize) -> Result<Vec<u64>, StoreError>;
    /// Takes `shard` for (`host`, `incarnation`) if `owner/<shard>` still has
    /// `mod_revision == owner_rev` (0: absent) and, if given, `beat/<shard>`
    /// still has `beat_rev`; writes `owner/<shard>` and `beat/<shard>`.
    /// `Ok(Some(epoch))` (the new revision of `owner/<shard>`), `Ok(None)` if
    /// a compare failed.
    fn take(
        &mut self,
        shard: u16,
        owner_rev: u64,
        beat_rev: Option<u64>,
        host: u16,
        incarnation: u64,
    ) -> Result<Option<u64>, StoreError>;
    /// Writes `beat/<s>` for every held `(s, epoch)` if every `owner/<s>`
    /// still has that `mod_revision`. `Ok(false)`: a compare failed.
    fn beat(&mut self, held: &[(u16, u64)], host: u16, incarnation: u64) -> Result<bool, StoreError>;
}

/// Timings of the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgentTiming {
    pub beat_interval_ms: u64,
    /// How long `beat/<s>` must stay unchanged before a takeover.
    pub beat_stale_ms: u64,
    /// How long a host that does not prefer a shard (or restarted while
    /// "owning" it) waits before claiming it for itself.
    pub startup_grace_ms: u64,
}

#[derive(Debug, Clone, Copy, Default)]
struct BeatSeen {
    revision: u64,
    changed_ms: u64,
}

/// One host's agent. See the module doc.
#[derive(Debug, Clone)]
pub struct AgentCore {
    me: u16,
    incarnation: u64,
    /// The hosts of each shard (`[preferred, standby]`).
    hosts: Vec<[u16; 2]>,
    timing: AgentTiming,
    held: Vec<(u16, u64)>,
    known: Vec<Option<OwnerRecord>>,
    read_ok: bool,
    beats: Vec<BeatSeen>,
    takeovers: Vec<Option<(u16, u64)>>,
    handovers: Vec<Option<u64>>,
    started_ms: Option<u64>,
    last_round_ms: Option<u64>,
    /// Successful beats, failed beats, store errors, shards taken.
    pub beats_ok: u64,
    pub beats_failed: u64,
    pub store_errors: u64,
    pub taken: u64,
}

impl AgentCore {
    pub fn new(me: u16, incarnation: u64, shards: &[ShardPlan], timing: AgentTiming) -> AgentCore {
        let n = shards.len();
        AgentCore {
            me,
            incarnation,
            hosts: shards.iter().map(|s| s.hosts).collect(),
            timing,
            held: Vec::with_capacity(n),
            known: vec![None; n],
            read_ok: false,
            beats: vec![BeatSeen::default(); n],
            takeovers: vec![None; n],
            handovers: vec![None; n],
            started_ms: None,
            last_round_ms: None,
            beats_ok: 0,
            beats_failed: 0,
            store_errors: 0,
            taken: 0,
        }
    }

    /// The shards this host holds, with their epochs.
    pub fn held(&self) -> &[(u16, u64)] {
        &self.held
    }

    /// A request of the node.
    pub fn request(&mut self, r: AgentRequest) {
        match r {
            AgentRequest::TakeOver { shard, from, epoch } => {
                if let Some(t) = self.takeovers.get_mut(usize::from(shard)) {
                    *t = Some((from, epoch));
                }
            }
            AgentRequest::CancelTakeOver { shard } => {
                if let Some(t) = self.takeovers.get_mut(usize::from(shard)) {
                    *t = None;
                }
            }
            AgentRequest::TakeHandedOver { shard, epoch } => {
                if let Some(h) = self.handovers.get_mut(usize::from(shard)) {
                    *h = Some(epoch);
                }
            }
        }
    }

    fn carries(&self, shard: usize) -> bool {
        self.hosts[shard].contains(&self.me)
    }

    /// One round when it is due (every beat interval; requests are acted on
    /// at once): reads, beat, claims, takeovers, handovers. Events for the
    /// node go to `out`.
    pub fn poll(&mut self, store: &mut impl OwnerStore, now_ms: u64, out: &mut Vec<AgentEvent>) {
        let started = *self.started_ms.get_or_insert(now_ms);
        let pending = self.takeovers.iter().any(Option::is_some) || self.handovers.iter().any(Option::is_some);
        let due = self.last_round_ms.is_none_or(|t| now_ms >= t + self.timing.beat_interval_ms);
        if !(due || pending && self.read_ok) {
            return;
        }
        if due {
            self.last_round_ms = Some(now_ms);
            if !self.read(store, now_ms, out) {
                return;
            }
            self.beat(store, now_ms, out);
            self.claim(store, started, now_ms, out);
        }
        self.take_over(store, started, now_ms, out);
        self.hand_over(store, now_ms, out);
    }

    /// Reads owners and beats; reports changes and lost shards.
    fn read(&mut self, store: &mut impl OwnerStore, now_ms: u64, out: &mut Vec<AgentEvent>) -> bool {
        let n = self.known.len();
        let (owners, beats) = match (store.owners(n), store.beats(n)) {
            (Ok(o), Ok(b)) => (o, b),
            _ => {
                self.store_errors += 1;
                self.read_ok = false;
                return false;
            }
        };
        for (s, (now, before)) in owners.iter().zip(self.known.iter()).enumerate() {
            if let Some(o) = now.filter(|o| Some(*o) != *before || !self.read_ok) {
                let mine = o.host == self.me && o.incarnation == self.incarnation;
                out.push(AgentEvent::Owner { shard: s as u16, host: o.host, epoch: o.revision, mine });
            }
        }
        for (s, rev) in beats.iter().enumerate() {
            let seen = &mut self.beats[s];
            if *rev != seen.revision || !self.read_ok {
                *seen = BeatSeen { revision: *rev, changed_ms: now_ms };
            }
        }
        self.known = owners;
        self.read_ok = true;
        let (me, inc) = (self.me, self.incarnation);
        let known = &self.known;
        self.held.retain(|&(s, e)| {
            let still = known[usize::from(s)].is_some_and(|o| o.host == me && o.incarnation == inc && o.revision == e);
            if !still {
                let o = known[usize::from(s)].unwrap_or(OwnerRecord { host: 0, incarnation: 0, revision: 0 });
                out.push(AgentEvent::Lost { shard: s, host: o.host, epoch: o.revision });
            }
            still
        });
        true
    }

    fn beat(&mut self, store: &mut impl OwnerStore, now_ms: u64, out: &mut Vec<AgentEvent>) {
        if self.held.is_empty() {
            return;
        }
        match store.beat(&self.held, self.me, self.incarnation) {
            Ok(true) => {
                self.beats_ok += 1;
                out.push(AgentEvent::BeatOk { sent_ms: now_ms });
            }
            // A shard was taken: the next read says which.
            Ok(false) => self.beats_failed += 1,
            Err(_) => self.store_errors += 1,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn acquire(
        &mut self,
        store: &mut impl OwnerStore,
        shard: usize,
        owner_rev: u64,
        beat_rev: Option<u64>,
        how: HowAcquired,
        now_ms: u64,
        out: &mut Vec<AgentEvent>,
    ) -> bool {
        match store.take(shard as u16, owner_rev, beat_rev, self.me, self.incarnation) {
            Ok(Some(epoch)) => {
                self.taken += 1;
                self.held.retain(|h| usize::from(h.0) != shard);
                self.held.push((shard as u16, epoch));
                self.known[shard] = Some(OwnerRecord { host: self.me, incarnation: self.incarnation, revision: epoch });
                out.push(AgentEvent::Acquired { shard: shard as u16, epoch, how, sent_ms: now_ms });
                true
            }
            Ok(None) => false,
            Err(_) => {
                self.store_errors += 1;
                false
            }
        }
    }

    /// Shards nobody ever owned: the preferred host claims at once, the
    /// other after the start-up grace.
    fn claim(&mut self, store: &mut impl OwnerStore, started: u64, now_ms: u64, out: &mut Vec<AgentEvent>) {
        for s in 0..self.known.len() {
            if self.known[s].is_some() || !self.carries(s) {
                continue;
            }
            if self.hosts[s][0] == self.me || now_ms >= started + self.timing.startup_grace_ms {
                self.acquire(store, s, 0, None, HowAcquired::Fresh, now_ms, out);
            }
        }
    }

    /// Takeovers the node asked for, once the owner's beat is stale (its
    /// previous incarnation's, after the start-up grace too).
    fn take_over(&mut self, store: &mut impl OwnerStore, started: u64, now_ms: u64, out: &mut Vec<AgentEvent>) {
        for s in 0..self.takeovers.len() {
            let Some((from, epoch)) = self.takeovers[s] else { continue };
            match self.known[s] {
                Some(o) if o.host == from && o.revision == epoch => {}
                // The owner changed meanwhile: the node hears it from the read.
                _ => {
                    self.takeovers[s] = None;
                    continue;
                }
            }
            if from == self.me && now_ms < started + self.timing.startup_grace_ms {
                continue;
            }
            let seen = self.beats[s];
            if now_ms < seen.changed_ms + self.timing.beat_stale_ms {
                continue;
            }
            if self.acquire(store, s, epoch, Some(seen.revision), HowAcquired::Failover, now_ms, out) {
                self.takeovers[s] = None;
            }
        }
    }

    fn hand_over(&mut self, store: &mut impl OwnerStore, now_ms: u64, out: &mut Vec<AgentEvent>) {
        for s in 0..self.handovers.len() {
            let Some(epoch) = self.handovers[s].take() else { continue };
            self.acquire(store, s, epoch, None, HowAcquired::Handover, now_ms, out);
        }
    }
}

/// An in-memory [`OwnerStore`] with etcd's revision semantics (tests).
#[derive(Debug, Clone, Default)]
pub struct MemStore {
    pub revision: u64,
    pub owners: Vec<Option<OwnerRecord>>,
    pub beats: Vec<u64>,
    /// While set, every call fails (the host is cut off from etcd).
    pub unreachable: bool,
}

impl MemStore {
    pub fn new(shards: usize) -> MemStore {
        MemStore { revision: 1, owners: vec![None; shards], beats: vec![0; shards], unreachable: false }
    }

    fn check(&self) -> Result<(), StoreError> {
        if self.unreachable {
            Err(StoreError("unreachable".into()))
        } else {
            Ok(())
        }
    }
}

impl OwnerStore for MemStore {
    fn owners(&mut self, _shards: usize) -> Result<Vec<Option<OwnerRecord>>, StoreError> {
        self.check()?;
        Ok(self.owners.clone())
    }

    fn beats(&mut self, _shards: usize) -> Result<Vec<u64>, StoreError> {
        self.check()?;
        Ok(self.beats.clone())
    }

    fn take(
        &mut self,
        shard: u16,
        owner_rev: u64,
        beat_rev: Option<u64>,
        host: u16,
        incarnation: u64,
    ) -> Result<Option<u64>, StoreError> {
        self.check()?;
        let s = usize::from(shard);
        let current = self.owners[s].map_or(0, |o| o.revision);
        if current != owner_rev || beat_rev.is_some_and(|r| r != self.beats[s]) {
            return Ok(None);
        }
        self.revision += 1;
        self.owners[s] = Some(OwnerRecord { host, incarnation, revision: self.revision });
        self.beats[s] = self.revision;
        Ok(Some(self.revision))
    }

    fn beat(&mut self, held: &[(u16, u64)], _host: u16, _incarnation: u64) -> Result<bool, StoreError> {
        self.check()?;
        if held.iter().any(|&(s, e)| self.owners[usize::from(s)].map_or(0, |o| o.revision) != e) {
            return Ok(false);
        }
        self.revision += 1;
        for &(s, _) in held {
            self.beats[usize::from(s)] = self.revision;
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nat::cluster::shard::tests::plan;

    const T: AgentTiming = AgentTiming { beat_interval_ms: 50, beat_stale_ms: 150, startup_grace_ms: 1000 };

    fn agent(host: u16, inc: u64) -> AgentCore {
        AgentCore::new(host, inc, &plan(host).0.shards, T)
    }

    fn run(a: &mut AgentCore, store: &mut MemStore, from: u64, to: u64) -> Vec<AgentEvent> {
        let mut out = Vec::new();
        let mut t = from;
        while t <= to {
            a.poll(store, t, &mut out);
            t += 5;
        }
        out
    }

    #[test]
    fn preferred_hosts_claim_and_beat() {
        let mut store = MemStore::new(3);
        let mut a1 = agent(1, 11);
        let mut a2 = agent(2, 22);
        let ev = run(&mut a1, &mut store, 0, 0);
        assert!(matches!(ev[..], [AgentEvent::Acquired { shard: 0, how: HowAcquired::Fresh, .. }]), "{ev:?}");
        // Host 2 prefers shard 1; shard 0 is host 1's.
        let ev = run(&mut a2, &mut store, 0, 0);
        assert!(ev.contains(&AgentEvent::Owner { shard: 0, host: 1, epoch: a1.held()[0].1, mine: false }));
        assert!(ev.iter().any(|e| matches!(e, AgentEvent::Acquired { shard: 1, .. })));
        // Shard 2 (host 3 preferred, host 1 standby): host 1 claims it after the grace.
        let ev = run(&mut a1, &mut store, 50, 900);
        assert!(!ev.iter().any(|e| matches!(e, AgentEvent::Acquired { shard: 2, .. })));
        assert!(ev.iter().filter(|e| matches!(e, AgentEvent::BeatOk { .. })).count() >= 15);
        let ev = run(&mut a1, &mut store, 905, 1100);
        assert!(ev.iter().any(|e| matches!(e, AgentEvent::Acquired { shard: 2, how: HowAcquired::Fresh, .. })));
        assert_eq!(a1.held().len(), 2);
    }

    #[test]
    fn takeover_waits_for_a_stale_beat_and_fences_the_old_owner() {
        let mut store = MemStore::new(3);
        let mut a1 = agent(1, 11);
        let mut a2 = agent(2, 22);
        run(&mut a1, &mut store, 0, 100);
        run(&mut a2, &mut store, 0, 100);
        let e0 = a1.held()[0].1;
        // Host 2 is told host 1 went silent, but host 1 still beats: no takeover.
        a2.request(AgentRequest::TakeOver { shard: 0, from: 1, epoch: e0 });
        let mut t = 105;
        let mut out = Vec::new();
        while t < 600 {
            a1.poll(&mut store, t, &mut out);
            a2.poll(&mut store, t, &mut out);
            t += 5;
        }
        assert!(!out.iter().any(|e| matches!(e, AgentEvent::Acquired { shard: 0, .. })), "{out:?}");
        // Host 1 is cut off from etcd: its beats fail, host 2 takes the shard once the beat is stale.
        store.unreachable = true;
        let mut out1 = Vec::new();
        a1.poll(&mut store, 650, &mut out1);
        store.unreachable = false;
        let mut taken_at = None;
        let mut out2 = Vec::new();
        for t in (650..1200).step_by(5) {
            a2.poll(&mut store, t, &mut out2);
            if taken_at.is_none() && out2.iter().any(|e| matches!(e, AgentEvent::Acquired { shard: 0, .. })) {
                taken_at = Some(t);
            }
        }
        let taken_at = taken_at.expect("taken over");
        let last_beat = out.iter().rev().find_map(|e| match e {
            AgentEvent::BeatOk { sent_ms } => Some(*sent_ms),
            _ => None,
        });
        // The fencing rule: the old owner's last good beat + fence is before the
        // new owner's transaction + fence (fence equal on both).
        assert!(last_beat.unwrap() < taken_at, "{last_beat:?} {taken_at}");
        assert!(taken_at >= 600 + T.beat_stale_ms - 50);
        // Host 1 reconnects: its beat fails and it learns it lost the shard.
        let mut out1 = Vec::new();
        a1.poll(&mut store, 1300, &mut out1);
        assert!(out1.iter().any(|e| matches!(e, AgentEvent::Lost { shard: 0, host: 2, .. })), "{out1:?}");
        assert!(!out1.iter().any(|e| matches!(e, AgentEvent::BeatOk { .. })) || a1.held().iter().all(|h| h.0 != 0));
    }

    #[test]
    fn handover_takes_at_once_and_only_from_the_named_epoch() {
        let mut store = MemStore::new(3);
        let mut a1 = agent(1, 11);
        let mut a2 = agent(2, 22);
        run(&mut a1, &mut store, 0, 0);
        run(&mut a2, &mut store, 0, 0);
        let e0 = a1.held()[0].1;
        a2.request(AgentRequest::TakeHandedOver { shard: 0, epoch: e0 + 100 });
        let ev = run(&mut a2, &mut store, 5, 5);
        assert!(!ev.iter().any(|e| matches!(e, AgentEvent::Acquired { shard: 0, .. })), "wrong epoch");
        a2.request(AgentRequest::TakeHandedOver { shard: 0, epoch: e0 });
        let ev = run(&mut a2, &mut store, 10, 10);
        assert!(ev.iter().any(|e| matches!(e, AgentEvent::Acquired { shard: 0, how: HowAcquired::Handover, .. })));
    }

    #[test]
    fn a_restarted_host_waits_for_its_standby() {
        let mut store = MemStore::new(3);
        let mut old = agent(1, 11);
        run(&mut old, &mut store, 0, 0);
        let e0 = old.held()[0].1;
        // Host 1 restarts (new incarnation): it sees itself as the owner, not "mine".
        let mut new = agent(1, 12);
        let ev = run(&mut new, &mut store, 1000, 1000);
        assert!(ev.contains(&AgentEvent::Owner { shard: 0, host: 1, epoch: e0, mine: false }));
        new.request(AgentRequest::TakeOver { shard: 0, from: 1, epoch: e0 });
        let ev = run(&mut new, &mut store, 1005, 1900);
        assert!(!ev.iter().any(|e| matches!(e, AgentEvent::Acquired { shard: 0, .. })), "within the grace");
        let ev = run(&mut new, &mut store, 1905, 2100);
        assert!(ev.iter().any(|e| matches!(e, AgentEvent::Acquired { shard: 0, how: HowAcquired::Failover, .. })));
    }
}
