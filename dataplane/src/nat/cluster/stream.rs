//! One shard's sync stream: the active's [`SyncSender`] and the standby's
//! [`SyncReceiver`] (docs/nat-ha.md, the sync stream).
//!
//! ```text
//!  active                                           standby
//!  push(record) ─► window (seq acked+1 ..= next-1)
//!  poll ─► datagrams of ≤ 48 records (first seq) ──► receive: in order? apply, ack
//!       ◄─ ack (cumulative, resync flag) ◄──────────   gap? duplicate ack
//!  no progress for retransmit_ms: send again from acked+1 (go-back-N)
//!  retransmit_max rounds without progress: the standby is dropped
//!  window full, or the standby asks: resync = snapshot begin, the table walked
//!  in steps between live records, snapshot end
//! ```
//!
//! Sequence numbers start at 1 and never go back within a sender's life; a
//! snapshot-begin record lets the receiver jump to it. Everything is bounded:
//! the window holds `capacity` records, allocated at start.

use std::collections::VecDeque;

use super::record::{Applied, SnapshotCursor, SyncRecord, RECORD_LEN};
use crate::nat::session::NatTable;

/// Records in one sync datagram.
pub const RECORDS_PER_DATAGRAM: usize = 48;

/// Counters of a sender (the mapping core is its only writer).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SenderStats {
    pub records_pushed: u64,
    pub records_sent: u64,
    pub records_acked: u64,
    pub records_retransmitted: u64,
    pub datagrams: u64,
    pub resyncs: u64,
    /// The window was full: the standby fell behind (a resync follows).
    pub overflows: u64,
    /// Retransmission gave up: the standby is dropped until it asks again.
    pub standby_lost: u64,
}

#[derive(Debug, Clone, Copy)]
struct Held {
    record: [u8; RECORD_LEN],
    /// When it was pushed (ms, for the lag).
    at_ms: u64,
}

/// The active's side. See the module doc.
#[derive(Debug, Clone)]
pub struct SyncSender {
    window: VecDeque<Held>,
    capacity: usize,
    next_seq: u64,
    acked: u64,
    sent: u64,
    /// Last progress or (re)start of sending.
    timer_ms: u64,
    rounds: u32,
    attached: bool,
    snapshot: Option<SnapshotCursor>,
    /// Sequence of the last snapshot-begin record.
    begin_seq: u64,
    retransmit_ms: u64,
    retransmit_max: u32,
    scratch: Vec<[u8; RECORD_LEN]>,
    pub stats: SenderStats,
}

impl SyncSender {
    /// A sender holding at most `capacity` unacknowledged records.
    pub fn new(capacity: usize, retransmit_ms: u64, retransmit_max: u32) -> SyncSender {
        let capacity = capacity.max(RECORDS_PER_DATAGRAM * 2);
        SyncSender {
            window: VecDeque::with_capacity(capacity),
            capacity,
            next_seq: 1,
            acked: 0,
            sent: 0,
            timer_ms: 0,
            rounds: 0,
            attached: false,
            snapshot: None,
            begin_seq: 0,
            retransmit_ms,
            retransmit_max,
            scratch: Vec::with_capacity(RECORDS_PER_DATAGRAM),
            stats: SenderStats::default(),
        }
    }

    /// Whether a standby is being fed.
    pub fn is_attached(&self) -> bool {
        self.attached
    }

    /// Whether a snapshot is being walked.
    pub fn in_snapshot(&self) -> bool {
        self.snapshot.is_some()
    }

    /// Sequence of the last record pushed (0: none).
    pub fn last_seq(&self) -> u64 {
        self.next_seq - 1
    }

    /// Highest sequence the standby acknowledged.
    pub fn acked(&self) -> u64 {
        self.acked
    }

    /// Records pushed and not yet acknowledged.
    pub fn lag_records(&self) -> u64 {
        self.window.len() as u64
    }

    /// Age of the oldest unacknowledged record (0: none).
    pub fn lag_ms(&self, now_ms: u64) -> u64 {
        self.window.front().map_or(0, |h| now_ms.saturating_sub(h.at_ms))
    }

    /// Whether everything pushed has been acknowledged (and no snapshot is
    /// under way): a handover may proceed.
    pub fn drained(&self) -> bool {
        self.attached && self.window.is_empty() && self.snapshot.is_none()
    }

    fn clear(&mut self) {
        self.window.clear();
        self.acked = self.next_seq - 1;
        self.sent = self.acked;
        self.rounds = 0;
        self.snapshot = None;
    }

    /// Stops feeding the standby (it is gone): what is held is dropped.
    pub fn detach(&mut self) {
        self.clear();
        self.attached = false;
    }

    /// Starts (again) from a snapshot: drops what is held, pushes a
    /// snapshot-begin record and walks the table from [`SyncSender::step_snapshot`].
    pub fn start_resync(&mut self, now_ms: u64) {
        self.clear();
        self.attached = true;
        self.stats.resyncs += 1;
        self.snapshot = Some(SnapshotCursor::new());
        self.begin_seq = self.next_seq;
        self.timer_ms = now_ms;
        self.push_raw(&SyncRecord::SnapshotBegin, now_ms);
    }

    /// The standby asked for a snapshot. Ignored while the last one's begin
    /// record is not acknowledged yet (requests already on their way).
    pub fn resync_requested(&mut self, now_ms: u64) -> bool {
        if self.attached && self.acked < self.begin_seq {
            return false;
        }
        self.start_resync(now_ms);
        true
    }

    fn push_raw(&mut self, r: &SyncRecord, now_ms: u64) {
        let mut record = [0u8; RECORD_LEN];
        r.encode(&mut record);
        self.window.push_back(Held { record, at_ms: now_ms });
        self.next_seq += 1;
        self.stats.records_pushed += 1;
    }

    /// Queues a live change for the standby (nothing if none is attached).
    /// A full window means the standby fell behind: everything held is
    /// dropped and a resync starts (the snapshot covers this change).
    pub fn push(&mut self, r: &SyncRecord, now_ms: u64) {
        if !self.attached {
            return;
        }
        if self.window.len() >= self.capacity {
            self.stats.overflows += 1;
            self.start_resync(now_ms);
            return;
        }
        self.push_raw(r, now_ms);
    }

    /// Walks the snapshot by `budget` items if the window has room for what
    /// they may emit (`budget × per_item_max` records); pushes the end
    /// marker when the walk is complete.
    pub fn step_snapshot(&mut self, table: &NatTable, budget: u32, per_item_max: u32, now_ms: u64) {
        let Some(mut cursor) = self.snapshot.take() else { return };
        let need = (budget as usize).saturating_mul(per_item_max.max(1) as usize) + 1;
        if self.capacity - self.window.len() < need {
            self.snapshot = Some(cursor);
            return;
        }
        let done = cursor.step(table, budget, &mut |r| self.push_raw(&r, now_ms));
        if done {
            self.push_raw(&SyncRecord::SnapshotEnd, now_ms);
        } else {
            self.snapshot = Some(cursor);
        }
    }

    /// The standby acknowledged every record up to `seq`.
    pub fn on_ack(&mut self, seq: u64, now_ms: u64) {
        if !self.attached || seq <= self.acked || seq >= self.next_seq {
            return;
        }
        let n = (seq - self.acked) as usize;
        self.window.drain(..n);
        self.stats.records_acked += n as u64;
        self.acked = seq;
        self.sent = self.sent.max(seq);
        self.rounds = 0;
        self.timer_ms = now_ms;
    }

    /// Sends what is due, at most `budget` records: a go-back-N
    /// retransmission when the oldest unacknowledged record has waited
    /// `retransmit_ms`, then records not sent yet. `send(first seq,
    /// records)` gets one datagram's worth at a time.
    pub fn poll(&mut self, now_ms: u64, budget: usize, mut send: impl FnMut(u64, &[[u8; RECORD_LEN]])) {
        if !self.attached {
            return;
        }
        if self.acked < self.sent && now_ms.saturating_sub(self.timer_ms) >= self.retransmit_ms {
            self.rounds += 1;
            if self.rounds > self.retransmit_max {
                self.stats.standby_lost += 1;
                self.detach();
                return;
            }
            self.stats.records_retransmitted += self.sent - self.acked;
            self.sent = self.acked;
            self.timer_ms = now_ms;
        }
        let mut n = 0;
        while self.sent < self.next_seq - 1 && n < budget {
            if self.sent == self.acked {
                self.timer_ms = now_ms;
            }
            let start = (self.sent - self.acked) as usize;
            let count = RECORDS_PER_DATAGRAM.min((self.next_seq - 1 - self.sent) as usize).min(budget - n);
            self.scratch.clear();
            self.scratch.extend(self.window.range(start..start + count).map(|h| h.record));
            send(self.sent + 1, &self.scratch);
            self.sent += count as u64;
            self.stats.records_sent += count as u64;
            self.stats.datagrams += 1;
            n += count;
        }
    }
}

/// Counters of a receiver.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReceiverStats {
    pub records_applied: u64,
    pub duplicates: u64,
    pub gaps: u64,
    /// Records the replica refused (it diverged: a resync follows).
    pub refused: u64,
    pub snapshots: u64,
}

/// What the receiver wants sent back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    /// Everything up to here is applied (0: nothing yet).
    pub seq: u64,
    /// A snapshot is wanted.
    pub resync: bool,
}

/// The standby's side. See the module doc.
#[derive(Debug, Clone, Default)]
pub struct SyncReceiver {
    /// Next sequence to apply; 0: waiting for a snapshot.
    expected: u64,
    epoch: u64,
    synced: bool,
    pub stats: ReceiverStats,
}

impl SyncReceiver {
    pub fn new() -> SyncReceiver {
        SyncReceiver::default()
    }

    /// Whether the replica holds a complete copy (a snapshot ended, nothing
    /// refused since).
    pub fn is_synced(&self) -> bool {
        self.synced
    }

    /// The stream's epoch (the owner's).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Last sequence applied.
    pub fn applied(&self) -> u64 {
        self.expected.saturating_sub(1)
    }

    /// Whether a snapshot is wanted (nothing applicable until one begins).
    pub fn wants_resync(&self) -> bool {
        self.expected == 0
    }

    /// Forgets the stream (the owner changed, or this host took the shard).
    pub fn reset(&mut self) {
        self.expected = 0;
        self.synced = false;
    }

    /// A sync datagram of stream `epoch`: `records` (whole records) starting
    /// at `first_seq`. Applies what is next in order to `table`; `None` for
    /// a datagram of an older owner (ignored, no ack).
    pub fn receive(
        &mut self,
        epoch: u64,
        first_seq: u64,
        records: &[u8],
        table: &mut NatTable,
        now_ms: u64,
    ) -> Option<Ack> {
        if epoch < self.epoch {
            return None;
        }
        if epoch > self.epoch {
            self.epoch = epoch;
            self.reset();
        }
        let count = (records.len() / RECORD_LEN) as u64;
        if count == 0 {
            return Some(self.ack());
        }
        let begins = SyncRecord::decode(records) == Some(SyncRecord::SnapshotBegin);
        if begins && (self.expected == 0 || first_seq >= self.expected) {
            self.expected = first_seq;
        }
        if self.expected == 0 {
            return Some(self.ack());
        }
        if first_seq > self.expected {
            self.stats.gaps += 1;
            return Some(self.ack());
        }
        let skip = self.expected - first_seq;
        if skip >= count {
            self.stats.duplicates += 1;
            return Some(self.ack());
        }
        for rec in records.chunks_exact(RECORD_LEN).skip(skip as usize) {
            let applied = SyncRecord::decode(rec).ok_or(()).and_then(|r| r.apply(table, now_ms).map_err(|_| ()));
            match applied {
                Ok(Applied::SnapshotBegin) => {
                    self.synced = false;
                    self.stats.snapshots += 1;
                }
                Ok(Applied::SnapshotEnd) => self.synced = true,
                Ok(Applied::Changed) => {}
                Err(()) => {
                    // Diverged: nothing after this can be trusted until a snapshot.
                    self.stats.refused += 1;
                    self.reset();
                    return Some(self.ack());
                }
            }
            self.stats.records_applied += 1;
            self.expected += 1;
        }
        Some(self.ack())
    }

    fn ack(&self) -> Ack {
        Ack { seq: self.applied(), resync: self.wants_resync() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nat::cluster::record::RecordSink;
    use crate::nat::session::SessionFilter;
    use crate::nat::tests::small_config;
    use crate::nat::translate::{FlowKey, Proto};
    use crate::nat::{NatConfig, NullSink};
    use proptest::prelude::*;
    use std::net::Ipv4Addr;

    fn cfg() -> NatConfig {
        NatConfig { mappings_max: 256, sessions_max: 512, blocks_per_subscriber_max: 4, ..small_config(4) }
    }

    fn flow(i: u16) -> FlowKey {
        FlowKey {
            proto: Proto::Udp,
            src: Ipv4Addr::new(100, 64, 0, (i % 7) as u8),
            sport: 3000 + i,
            dst: Ipv4Addr::new(203, 0, 113, 1),
            dport: 53,
        }
    }

    fn sessions(t: &NatTable) -> Vec<String> {
        let mut v: Vec<String> = t
            .sessions(&SessionFilter::default())
            .map(|s| format!("{:?}", (s.binding.inside_addr, s.binding.inside_port, s.binding.public_port)))
            .collect();
        v.sort();
        v
    }

    /// Datagrams in flight.
    struct Link {
        datagrams: Vec<(u64, Vec<u8>)>,
    }

    #[test]
    fn in_order_stream_is_applied_and_acked() {
        let mut active = NatTable::new(&cfg());
        let mut replica = NatTable::new(&cfg());
        let mut tx = SyncSender::new(1024, 20, 5);
        let mut rx = SyncReceiver::new();
        assert!(rx.wants_resync());
        // Nothing is queued before a standby attaches.
        tx.push(&SyncRecord::SnapshotEnd, 0);
        assert_eq!(tx.last_seq(), 0);
        assert!(tx.resync_requested(0));
        assert!(!tx.resync_requested(0), "a second request while the first begin is unacked");
        let mut pending = Vec::new();
        for i in 0..100 {
            active.outbound(&flow(i), 0, 1, &mut RecordSink(|r| pending.push(r))).unwrap();
        }
        for r in pending.drain(..) {
            tx.push(&r, 1);
        }
        while tx.in_snapshot() {
            tx.step_snapshot(&active, 100, 4, 1);
        }
        let mut link = Link { datagrams: Vec::new() };
        tx.poll(2, 10_000, |seq, recs| link.datagrams.push((seq, recs.concat())));
        assert!(link.datagrams.len() > 2);
        assert!(link.datagrams.iter().all(|(_, d)| d.len() <= RECORDS_PER_DATAGRAM * RECORD_LEN));
        let mut last = None;
        for (seq, d) in &link.datagrams {
            last = rx.receive(7, *seq, d, &mut replica, 3);
        }
        let ack = last.unwrap();
        assert_eq!(ack, Ack { seq: tx.last_seq(), resync: false });
        assert!(rx.is_synced());
        assert_eq!(sessions(&replica), sessions(&active));
        tx.on_ack(ack.seq, 4);
        assert!(tx.drained());
        assert_eq!(tx.lag_records(), 0);
        // An older epoch is ignored; a newer one without a snapshot wants one.
        assert_eq!(rx.receive(6, 1, &link.datagrams[0].1, &mut replica, 5), None);
        let live: Vec<u8> = {
            let mut b = [0u8; RECORD_LEN];
            SyncRecord::SnapshotEnd.encode(&mut b);
            b.to_vec()
        };
        assert_eq!(rx.receive(8, 500, &live, &mut replica, 5), Some(Ack { seq: 0, resync: true }));
        assert!(!rx.is_synced());
    }

    #[test]
    fn silence_retransmits_then_drops_the_standby() {
        let mut tx = SyncSender::new(1024, 20, 3);
        tx.start_resync(0);
        let mut sent = Vec::new();
        tx.poll(0, 100, |seq, r| sent.push((seq, r.len())));
        assert_eq!(sent, [(1, 1)]);
        for t in [10, 19] {
            tx.poll(t, 100, |seq, r| sent.push((seq, r.len())));
        }
        assert_eq!(sent.len(), 1, "not yet");
        tx.poll(20, 100, |seq, r| sent.push((seq, r.len())));
        assert_eq!(sent.len(), 2, "go back");
        assert_eq!(tx.stats.records_retransmitted, 1);
        tx.poll(40, 100, |_, _| {});
        tx.poll(60, 100, |_, _| {});
        assert!(tx.is_attached());
        tx.poll(80, 100, |_, _| {});
        assert!(!tx.is_attached(), "given up after retransmit_max rounds");
        assert_eq!(tx.stats.standby_lost, 1);
    }

    #[test]
    fn a_full_window_starts_a_resync() {
        let mut tx = SyncSender::new(RECORDS_PER_DATAGRAM * 2, 20, 3);
        tx.start_resync(0);
        tx.step_snapshot(&NatTable::new(&cfg()), 100, 4, 0);
        for _ in 0..RECORDS_PER_DATAGRAM * 3 {
            tx.push(&SyncRecord::SnapshotEnd, 1);
        }
        assert_eq!(tx.stats.overflows, 1);
        assert!(tx.in_snapshot(), "a new snapshot is under way");
        assert_eq!(tx.stats.resyncs, 2);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        /// Over a link that loses datagrams both ways (acks too), with live
        /// changes during the snapshot, the replica ends equal to the active
        /// once the link heals; the window never exceeds its capacity.
        #[test]
        fn lossy_link_converges(loss in 0u32..60, seed in any::<u64>(), flows in 10u16..200) {
            let mut active = NatTable::new(&cfg());
            let mut replica = NatTable::new(&cfg());
            let mut tx = SyncSender::new(4096, 20, 1000);
            let mut rx = SyncReceiver::new();
            let mut rng = seed | 1;
            let mut lose = |pct: u32| {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                (rng % 100) < u64::from(pct)
            };
            let mut now = 0u64;
            let mut i = 0u16;
            let mut acks: Vec<Ack> = Vec::new();
            for round in 0..4000u32 {
                now += 1;
                let loss = if round < 3000 { loss } else { 0 };
                if i < flows && round % 3 == 0 {
                    let mut recs = Vec::new();
                    let _ = active.outbound(&flow(i), 0, now, &mut RecordSink(|r| recs.push(r)));
                    for r in recs { tx.push(&r, now); }
                    i += 1;
                }
                if round % 50 == 49 {
                    let mut recs = Vec::new();
                    active.expire(now + 300_000, 3, &mut RecordSink(|r| recs.push(r)));
                    for r in recs { tx.push(&r, now); }
                }
                for a in acks.drain(..) {
                    if a.resync { tx.resync_requested(now); } else { tx.on_ack(a.seq, now); }
                }
                if !tx.is_attached() || (rx.wants_resync() && round % 25 == 0) {
                    tx.resync_requested(now);
                }
                tx.step_snapshot(&active, 8, 4, now);
                let mut out = Vec::new();
                tx.poll(now, 200, |seq, recs| out.push((seq, recs.concat())));
                prop_assert!(tx.lag_records() <= 4096);
                for (seq, d) in out {
                    if lose(loss) { continue; }
                    if let Some(a) = rx.receive(1, seq, &d, &mut replica, now) {
                        if !lose(loss) { acks.push(a); }
                    }
                }
                replica.expire(now, 100, &mut NullSink);
            }
            prop_assert!(rx.is_synced());
            prop_assert_eq!(sessions(&replica), sessions(&active));
        }
    }
}
