//! Sync records: one change of a virtual mapping server's state, as the
//! active streams it to the standby (docs/nat-ha.md, the sync stream).
//!
//! ```text
//!  28 bytes, big-endian:  type (u8) │ body
//!  1 session   proto, tcp seen, 0, inside a:p, public a:p, remote a:p, idle ms (u32), 0 0
//!  2 close     proto, 0, 0, inside a:p, public a:p, remote a:p, 0 ...
//!  3 block+    0 0 0, subscriber, public address, first port, 0 ...
//!  4 block-    0 0 0, subscriber, public address, first port, 0 ...
//!  5 block q   0 0 0, public address, first port, remaining ms (u32), 0 ...
//!  6 port q    proto, 0 0, public address, port, remaining ms (u32), 0 ...
//!  7 snapshot begins    8 snapshot ends
//! ```
//!
//! A record applies idempotently ([`SyncRecord::apply`]); a session record
//! carries its mapping, so mapping events need no record of their own. A
//! snapshot is the table walked in bounded steps ([`SnapshotCursor`]) while
//! live records keep flowing in the same stream: for every key the last
//! record in the stream is its latest state, so the replica converges.

use std::net::Ipv4Addr;

use crate::nat::alloc::BlockEventKind;
use crate::nat::session::{NatEvent, NatTable, ReplicaError, SessionEventKind, SessionState};
use crate::nat::translate::Proto;
use crate::nat::{NullSink, Sink};

/// Bytes of one record.
pub const RECORD_LEN: usize = 28;

/// One change, as it travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncRecord {
    /// A session opened, refreshed, changed TCP state, or in a snapshot.
    Session {
        st: SessionState,
        idle_ms: u32,
    },
    /// A session retired (its mapping and block follow it if it was their last).
    Close {
        proto: Proto,
        inside: (Ipv4Addr, u16),
        public: (Ipv4Addr, u16),
        remote: (Ipv4Addr, u16),
    },
    BlockAllocated {
        subscriber: Ipv4Addr,
        public_addr: Ipv4Addr,
        port_start: u16,
    },
    BlockReleased {
        subscriber: Ipv4Addr,
        public_addr: Ipv4Addr,
        port_start: u16,
    },
    BlockQuarantine {
        public_addr: Ipv4Addr,
        port_start: u16,
        remaining_ms: u32,
    },
    PortQuarantine {
        proto: Proto,
        public_addr: Ipv4Addr,
        port: u16,
        remaining_ms: u32,
    },
    SnapshotBegin,
    SnapshotEnd,
}

fn put_ep(out: &mut [u8], ep: (Ipv4Addr, u16)) {
    out[0..4].copy_from_slice(&ep.0.octets());
    out[4..6].copy_from_slice(&ep.1.to_be_bytes());
}

fn get_ep(b: &[u8]) -> (Ipv4Addr, u16) {
    (Ipv4Addr::new(b[0], b[1], b[2], b[3]), u16::from_be_bytes([b[4], b[5]]))
}

fn get_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// What applying a record did besides changing the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    Changed,
    /// The table was cleared: a snapshot follows.
    SnapshotBegin,
    /// The snapshot is complete: the replica is synced.
    SnapshotEnd,
}

impl SyncRecord {
    /// The record of an event of the active table (`None`: mapping events,
    /// which session records imply).
    pub fn from_event(e: &NatEvent) -> Option<SyncRecord> {
        Some(match e {
            NatEvent::Block(b) => {
                let (subscriber, public_addr, port_start) = (b.subscriber, b.public_addr, b.port_start);
                match b.kind {
                    BlockEventKind::Allocated => SyncRecord::BlockAllocated { subscriber, public_addr, port_start },
                    BlockEventKind::Released => SyncRecord::BlockReleased { subscriber, public_addr, port_start },
                }
            }
            NatEvent::Mapping(_) => return None,
            NatEvent::Session(s) => match s.kind {
                SessionEventKind::Closed => SyncRecord::Close {
                    proto: s.proto,
                    inside: (s.inside_addr, s.inside_port),
                    public: (s.public_addr, s.public_port),
                    remote: (s.remote_addr, s.remote_port),
                },
                SessionEventKind::Opened | SessionEventKind::Updated | SessionEventKind::Refreshed => {
                    SyncRecord::Session {
                        st: SessionState {
                            proto: s.proto,
                            inside_addr: s.inside_addr,
                            inside_port: s.inside_port,
                            public_addr: s.public_addr,
                            public_port: s.public_port,
                            remote_addr: s.remote_addr,
                            remote_port: s.remote_port,
                            tcp_seen: s.tcp_seen,
                        },
                        idle_ms: 0,
                    }
                }
            },
        })
    }

    /// Writes the record.
    pub fn encode(&self, out: &mut [u8; RECORD_LEN]) {
        out.fill(0);
        match *self {
            SyncRecord::Session { st, idle_ms } => {
                out[0] = 1;
                out[1] = st.proto.index() as u8;
                out[2] = st.tcp_seen;
                put_ep(&mut out[4..], (st.inside_addr, st.inside_port));
                put_ep(&mut out[10..], (st.public_addr, st.public_port));
                put_ep(&mut out[16..], (st.remote_addr, st.remote_port));
                out[22..26].copy_from_slice(&idle_ms.to_be_bytes());
            }
            SyncRecord::Close { proto, inside, public, remote } => {
                out[0] = 2;
                out[1] = proto.index() as u8;
                put_ep(&mut out[4..], inside);
                put_ep(&mut out[10..], public);
                put_ep(&mut out[16..], remote);
            }
            SyncRecord::BlockAllocated { subscriber, public_addr, port_start }
            | SyncRecord::BlockReleased { subscriber, public_addr, port_start } => {
                out[0] = if matches!(self, SyncRecord::BlockAllocated { .. }) { 3 } else { 4 };
                out[4..8].copy_from_slice(&subscriber.octets());
                put_ep(&mut out[8..], (public_addr, port_start));
            }
            SyncRecord::BlockQuarantine { public_addr, port_start, remaining_ms } => {
                out[0] = 5;
                put_ep(&mut out[4..], (public_addr, port_start));
                out[10..14].copy_from_slice(&remaining_ms.to_be_bytes());
            }
            SyncRecord::PortQuarantine { proto, public_addr, port, remaining_ms } => {
                out[0] = 6;
                out[1] = proto.index() as u8;
                put_ep(&mut out[4..], (public_addr, port));
                out[10..14].copy_from_slice(&remaining_ms.to_be_bytes());
            }
            SyncRecord::SnapshotBegin => out[0] = 7,
            SyncRecord::SnapshotEnd => out[0] = 8,
        }
    }

    /// Reads a record; `None` if it is not one (unknown type, bad protocol).
    pub fn decode(b: &[u8]) -> Option<SyncRecord> {
        let b = b.get(..RECORD_LEN)?;
        let proto = || Proto::ALL.get(usize::from(b[1])).copied();
        Some(match b[0] {
            1 => {
                let (inside_addr, inside_port) = get_ep(&b[4..]);
                let (public_addr, public_port) = get_ep(&b[10..]);
                let (remote_addr, remote_port) = get_ep(&b[16..]);
                SyncRecord::Session {
                    st: SessionState {
                        proto: proto()?,
                        inside_addr,
                        inside_port,
                        public_addr,
                        public_port,
                        remote_addr,
                        remote_port,
                        tcp_seen: b[2],
                    },
                    idle_ms: get_u32(&b[22..]),
                }
            }
            2 => SyncRecord::Close {
                proto: proto()?,
                inside: get_ep(&b[4..]),
                public: get_ep(&b[10..]),
                remote: get_ep(&b[16..]),
            },
            3 | 4 => {
                let subscriber = Ipv4Addr::new(b[4], b[5], b[6], b[7]);
                let (public_addr, port_start) = get_ep(&b[8..]);
                if b[0] == 3 {
                    SyncRecord::BlockAllocated { subscriber, public_addr, port_start }
                } else {
                    SyncRecord::BlockReleased { subscriber, public_addr, port_start }
                }
            }
            5 => {
                let (public_addr, port_start) = get_ep(&b[4..]);
                SyncRecord::BlockQuarantine { public_addr, port_start, remaining_ms: get_u32(&b[10..]) }
            }
            6 => {
                let (public_addr, port) = get_ep(&b[4..]);
                SyncRecord::PortQuarantine { proto: proto()?, public_addr, port, remaining_ms: get_u32(&b[10..]) }
            }
            7 => SyncRecord::SnapshotBegin,
            8 => SyncRecord::SnapshotEnd,
            _ => return None,
        })
    }

    /// Applies the record to a replica at its time `now_ms` (idempotent).
    /// The replica's own events go nowhere: the active logs and replicates.
    pub fn apply(&self, table: &mut NatTable, now_ms: u64) -> Result<Applied, ReplicaError> {
        let sink = &mut NullSink;
        match *self {
            SyncRecord::Session { st, idle_ms } => table.upsert_session(&st, u64::from(idle_ms), now_ms, sink)?,
            SyncRecord::Close { proto, inside, remote, .. } => {
                table.close_session(proto, inside, remote, now_ms, sink);
            }
            SyncRecord::BlockAllocated { subscriber, public_addr, port_start } => {
                table.claim_block(subscriber, public_addr, port_start, now_ms, sink)?
            }
            SyncRecord::BlockReleased { subscriber, public_addr, port_start } => {
                table.release_block_if_idle(subscriber, public_addr, port_start, now_ms, sink)?
            }
            SyncRecord::BlockQuarantine { public_addr, port_start, remaining_ms } => {
                table.quarantine_block(public_addr, port_start, u64::from(remaining_ms), now_ms)?
            }
            SyncRecord::PortQuarantine { proto, public_addr, port, remaining_ms } => {
                table.quarantine_port(proto, public_addr, port, u64::from(remaining_ms), now_ms)
            }
            SyncRecord::SnapshotBegin => {
                table.reset();
                return Ok(Applied::SnapshotBegin);
            }
            SyncRecord::SnapshotEnd => return Ok(Applied::SnapshotEnd),
        }
        Ok(Applied::Changed)
    }
}

/// Where a snapshot walk is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Blocks(u32),
    Sessions(u32),
    BlockQuarantine(u64),
    PortQuarantine(u64),
    Done,
}

/// A snapshot of a table, taken in bounded steps (the table changes between
/// them; see the module doc for why that is correct).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotCursor {
    phase: Phase,
}

impl Default for SnapshotCursor {
    fn default() -> Self {
        Self::new()
    }
}

impl SnapshotCursor {
    pub fn new() -> SnapshotCursor {
        SnapshotCursor { phase: Phase::Blocks(0) }
    }

    pub fn is_done(&self) -> bool {
        self.phase == Phase::Done
    }

    /// Walks at most `budget` items (subscriber records, session slots or
    /// queue entries) and emits their records; a subscriber record emits up
    /// to `blocks_per_subscriber_max` of them. Returns whether the walk is
    /// complete. Does not emit the begin and end markers.
    pub fn step(&mut self, table: &NatTable, budget: u32, out: &mut impl FnMut(SyncRecord)) -> bool {
        let clamp = |ms: u64| ms.min(u64::from(u32::MAX)) as u32;
        self.phase = match self.phase {
            Phase::Blocks(from) => {
                let next = table.alloc().snapshot_blocks(from, budget, |subscriber, public_addr, port_start| {
                    out(SyncRecord::BlockAllocated { subscriber, public_addr, port_start })
                });
                next.map_or(Phase::Sessions(0), Phase::Blocks)
            }
            Phase::Sessions(from) => {
                let next = table
                    .snapshot_sessions(from, budget, |st, idle| out(SyncRecord::Session { st, idle_ms: clamp(idle) }));
                next.map_or(Phase::BlockQuarantine(0), Phase::Sessions)
            }
            Phase::BlockQuarantine(from) => {
                let next = table.alloc().snapshot_block_quarantine(from, budget as usize, |a, p, rem| {
                    out(SyncRecord::BlockQuarantine { public_addr: a, port_start: p, remaining_ms: clamp(rem) })
                });
                next.map_or(Phase::PortQuarantine(0), Phase::BlockQuarantine)
            }
            Phase::PortQuarantine(from) => {
                let next = table.alloc().snapshot_port_quarantine(from, budget as usize, |proto, a, p, rem| {
                    out(SyncRecord::PortQuarantine { proto, public_addr: a, port: p, remaining_ms: clamp(rem) })
                });
                next.map_or(Phase::Done, Phase::PortQuarantine)
            }
            Phase::Done => Phase::Done,
        };
        self.is_done()
    }
}

/// A sink for an active table's events that turns them into records.
pub struct RecordSink<F: FnMut(SyncRecord)>(pub F);

impl<F: FnMut(SyncRecord)> Sink<NatEvent> for RecordSink<F> {
    fn push(&mut self, event: NatEvent) {
        if let Some(r) = SyncRecord::from_event(&event) {
            (self.0)(r);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nat::session::{Binding, SessionFilter, TcpState};
    use crate::nat::tests::small_config;
    use crate::nat::translate::tcp_flags::{ACK, FIN, RST, SYN};
    use crate::nat::translate::FlowKey;
    use crate::nat::{Filtering, NatConfig, NatError};
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn st(proto: Proto, port: u16) -> SessionState {
        SessionState {
            proto,
            inside_addr: Ipv4Addr::new(100, 64, 0, 10),
            inside_port: port,
            public_addr: Ipv4Addr::new(198, 51, 100, 1),
            public_port: 1024 + port,
            remote_addr: Ipv4Addr::new(203, 0, 113, 7),
            remote_port: 80,
            tcp_seen: 3,
        }
    }

    #[test]
    fn records_round_trip() {
        let a = Ipv4Addr::new(198, 51, 100, 9);
        let s = Ipv4Addr::new(100, 64, 0, 3);
        let all = [
            SyncRecord::Session { st: st(Proto::Tcp, 7), idle_ms: 123_456 },
            SyncRecord::Close { proto: Proto::Icmp, inside: (s, 5), public: (a, 1030), remote: (a, 0) },
            SyncRecord::BlockAllocated { subscriber: s, public_addr: a, port_start: 1088 },
            SyncRecord::BlockReleased { subscriber: s, public_addr: a, port_start: 1088 },
            SyncRecord::BlockQuarantine { public_addr: a, port_start: 2048, remaining_ms: 99 },
            SyncRecord::PortQuarantine { proto: Proto::Udp, public_addr: a, port: 2050, remaining_ms: 7 },
            SyncRecord::SnapshotBegin,
            SyncRecord::SnapshotEnd,
        ];
        for r in all {
            let mut b = [0xaa; RECORD_LEN];
            r.encode(&mut b);
            assert_eq!(SyncRecord::decode(&b), Some(r));
        }
        assert_eq!(SyncRecord::decode(&[9; RECORD_LEN]), None);
        assert_eq!(SyncRecord::decode(&[1; 10]), None);
        let mut b = [0; RECORD_LEN];
        SyncRecord::Session { st: st(Proto::Udp, 1), idle_ms: 0 }.encode(&mut b);
        b[1] = 7;
        assert_eq!(SyncRecord::decode(&b), None, "bad protocol");
    }

    /// The replica's view: sessions with state, blocks by subscriber, and
    /// what is in quarantine (not yet due).
    fn view(t: &NatTable) -> (BTreeSet<String>, BTreeSet<String>) {
        let sessions = t
            .sessions(&SessionFilter::default())
            .map(|s| {
                let b = s.binding;
                format!(
                    "{:?} {}:{} {}:{} {}:{} {:?}",
                    b.proto,
                    b.inside_addr,
                    b.inside_port,
                    b.public_addr,
                    b.public_port,
                    b.remote_addr,
                    b.remote_port,
                    s.tcp_state
                )
            })
            .collect();
        let mut blocks = BTreeSet::new();
        t.alloc().snapshot_blocks(0, u32::MAX, |s, a, p| {
            blocks.insert(format!("{s} {a}:{p}"));
        });
        t.alloc().snapshot_block_quarantine(0, usize::MAX, |a, p, rem| {
            if rem > 0 {
                blocks.insert(format!("quarantined {a}:{p}"));
            }
        });
        t.alloc().snapshot_port_quarantine(0, usize::MAX, |proto, a, p, rem| {
            if rem > 0 {
                blocks.insert(format!("quarantined {proto:?} {a}:{p}"));
            }
        });
        (sessions, blocks)
    }

    fn config(filtering: Filtering) -> NatConfig {
        NatConfig { mappings_max: 64, sessions_max: 128, blocks_per_subscriber_max: 2, filtering, ..small_config(2) }
    }

    #[test]
    fn a_replica_fed_records_matches_and_can_take_over() {
        let cfg = config(Filtering::AddressDependent);
        let mut active = NatTable::new(&cfg);
        active.set_refresh_sync(1000);
        let mut replica = NatTable::new(&cfg);
        replica.set_timeout_margin(10_000);
        let mut records = Vec::new();
        let k = |sport, dport| FlowKey {
            proto: Proto::Tcp,
            src: Ipv4Addr::new(100, 64, 0, 10),
            sport,
            dst: Ipv4Addr::new(203, 0, 113, 7),
            dport,
        };
        let b = active.outbound(&k(4000, 80), SYN, 0, &mut RecordSink(|r| records.push(r))).unwrap();
        let reply = FlowKey { src: b.remote_addr, sport: 80, dst: b.public_addr, dport: b.public_port, ..k(0, 0) };
        active.inbound(&reply, SYN | ACK, 10, &mut RecordSink(|r| records.push(r))).unwrap();
        for r in records.drain(..) {
            r.apply(&mut replica, 20).unwrap();
        }
        assert_eq!(view(&replica), view(&active));
        let info = replica.sessions(&SessionFilter::default()).next().unwrap();
        assert_eq!(info.tcp_state, Some(TcpState::Established), "TCP state travels");
        // Address-dependent filtering state travels with the sessions.
        let other = FlowKey { src: Ipv4Addr::new(203, 0, 113, 99), ..reply };
        assert_eq!(replica.inbound(&other, SYN, 30, &mut NullSink), Err(NatError::Filtered));
        // A refresh far enough apart is re-sent; closing retires it on both.
        active.touch(crate::nat::Direction::Outbound, &k(4000, 80), ACK, 2000, &mut RecordSink(|r| records.push(r)));
        assert!(matches!(records[..], [SyncRecord::Session { .. }]), "{records:?}");
        active.touch(crate::nat::Direction::Outbound, &k(4000, 80), FIN, 2001, &mut RecordSink(|r| records.push(r)));
        assert_eq!(records.len(), 1, "a refresh soon after is not re-sent");
        active.touch(crate::nat::Direction::Inbound, &reply, RST, 2002, &mut RecordSink(|r| records.push(r)));
        assert_eq!(records.len(), 2, "a TCP state change is");
        let retire_at = 2002 + cfg.tcp_transitory_timeout_ms;
        active.expire(retire_at, 10, &mut RecordSink(|r| records.push(r)));
        assert!(records.iter().any(|r| matches!(r, SyncRecord::BlockReleased { .. })));
        // The replica, with its margin, has not expired it on its own by then.
        replica.expire(retire_at, 10, &mut NullSink);
        assert_eq!(replica.session_count(), 1);
        for r in records.drain(..) {
            r.apply(&mut replica, retire_at).unwrap();
        }
        assert_eq!(view(&replica), view(&active));
        assert_eq!(replica.alloc().blocks_allocated(), 0);
        assert_eq!(replica.alloc().blocks_quarantined(), 1, "the block waits out its quarantine on both");
    }

    #[test]
    fn conflicting_records_are_refused() {
        let cfg = config(Filtering::EndpointIndependent);
        let mut t = NatTable::new(&cfg);
        let s = st(Proto::Udp, 5);
        SyncRecord::Session { st: s, idle_ms: 0 }.apply(&mut t, 0).unwrap();
        SyncRecord::Session { st: s, idle_ms: 0 }.apply(&mut t, 1).unwrap();
        assert_eq!(t.session_count(), 1, "idempotent");
        let moved = SessionState { public_port: s.public_port + 2, ..s };
        assert_eq!(SyncRecord::Session { st: moved, idle_ms: 0 }.apply(&mut t, 2), Err(ReplicaError::MappingConflict));
        let thief = SessionState { inside_port: 6, ..s };
        assert_eq!(SyncRecord::Session { st: thief, idle_ms: 0 }.apply(&mut t, 2), Err(ReplicaError::PublicInUse));
        let other = SessionState { inside_addr: Ipv4Addr::new(100, 64, 0, 11), public_port: s.public_port + 4, ..s };
        assert!(matches!(
            SyncRecord::Session { st: other, idle_ms: 0 }.apply(&mut t, 2),
            Err(ReplicaError::Block(crate::nat::alloc::ClaimError::HeldByOther))
        ));
        // A port below 1024 (found by the nat_cluster fuzz target) is refused
        // before anything is claimed.
        let low = SessionState { inside_port: 9, public_port: 5, ..s };
        assert_eq!(
            SyncRecord::Session { st: low, idle_ms: 0 }.apply(&mut t, 2),
            Err(ReplicaError::Block(crate::nat::alloc::ClaimError::NotInPool))
        );
        assert_eq!(t.alloc().blocks_allocated(), 1, "no block claimed for it");
        let close = SyncRecord::Close {
            proto: Proto::Udp,
            inside: (s.inside_addr, s.inside_port),
            public: (s.public_addr, s.public_port),
            remote: (s.remote_addr, s.remote_port),
        };
        close.apply(&mut t, 3).unwrap();
        close.apply(&mut t, 3).unwrap();
        assert_eq!(t.session_count(), 0);
        assert_eq!(SyncRecord::SnapshotBegin.apply(&mut t, 4), Ok(Applied::SnapshotBegin));
        assert_eq!(t.alloc().blocks_quarantined(), 0, "reset");
    }

    // ---- property: a replica converges whatever snapshot interleaving ----

    #[derive(Debug, Clone)]
    enum Op {
        Out {
            sub: u8,
            port: u16,
            remote: u8,
            flags: u8,
            proto: usize,
        },
        In {
            pick: usize,
            remote: u8,
            flags: u8,
        },
        Advance {
            ms: u64,
        },
        /// Nothing (both tables retire what is due after every step).
        Expire,
        /// Start a snapshot (the standby rejoins): records sent before are lost.
        Resync,
        /// Advance the snapshot walk by this many items.
        Step {
            budget: u32,
        },
    }

    fn arb_op() -> impl Strategy<Value = Op> {
        let flags = prop_oneof![Just(SYN), Just(SYN | ACK), Just(ACK), Just(FIN | ACK), Just(RST), Just(0)];
        prop_oneof![
            5 => (0u8..5, 0u16..8, 0u8..3, flags.clone(), 0usize..3)
                .prop_map(|(sub, port, remote, flags, proto)| Op::Out { sub, port, remote, flags, proto }),
            3 => (any::<usize>(), 0u8..4, flags).prop_map(|(pick, remote, flags)| Op::In { pick, remote, flags }),
            2 => prop_oneof![0u64..2_000, 0u64..400_000].prop_map(|ms| Op::Advance { ms }),
            1 => Just(Op::Expire),
            1 => Just(Op::Resync),
            3 => (1u32..40).prop_map(|budget| Op::Step { budget }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

        /// Random traffic, expiry and resynchronisations with a snapshot taken
        /// in small steps while the table changes: once the snapshot is
        /// complete, the replica holds exactly the active's sessions and
        /// blocks after every step; and taking over from it, no public
        /// endpoint is handed out twice.
        #[test]
        fn replica_converges_through_snapshots(ops in proptest::collection::vec(arb_op(), 1..250)) {
            let cfg = config(Filtering::EndpointIndependent);
            let mut active = NatTable::new(&cfg);
            active.set_refresh_sync(1000);
            let mut replica = NatTable::new(&cfg);
            replica.set_timeout_margin(20_000);
            let mut stream: Vec<SyncRecord> = Vec::new();
            let mut cursor: Option<SnapshotCursor> = Some(SnapshotCursor::new());
            stream.push(SyncRecord::SnapshotBegin);
            let mut synced = false;
            let mut now = 0u64;
            let mut bindings: Vec<Binding> = Vec::new();
            let key = |sub: u8, port: u16, remote: u8, proto: Proto| FlowKey {
                proto,
                src: Ipv4Addr::new(100, 64, 0, sub),
                sport: 2000 + port,
                dst: Ipv4Addr::new(203, 0, 113, remote),
                dport: if proto == Proto::Icmp { 2000 + port } else { 53 },
            };
            for op in ops {
                let mut sink = RecordSink(|r| stream.push(r));
                match op {
                    Op::Out { sub, port, remote, flags, proto } => {
                        if let Ok(b) = active.outbound(&key(sub, port, remote, Proto::ALL[proto]), flags, now, &mut sink) {
                            bindings.push(b);
                        }
                    }
                    Op::In { pick, remote, flags } => {
                        if !bindings.is_empty() {
                            let b = bindings[pick % bindings.len()];
                            let sport = if b.proto == Proto::Icmp { b.public_port } else { 53 };
                            let k = FlowKey { proto: b.proto, src: Ipv4Addr::new(203, 0, 113, remote), sport, dst: b.public_addr, dport: b.public_port };
                            let _ = active.inbound(&k, flags, now, &mut sink);
                        }
                    }
                    Op::Advance { ms } => now += ms,
                    Op::Expire => {}
                    Op::Resync => {
                        stream.clear();
                        stream.push(SyncRecord::SnapshotBegin);
                        cursor = Some(SnapshotCursor::new());
                        synced = false;
                    }
                    Op::Step { budget } => {
                        if let Some(c) = cursor.as_mut() {
                            if c.step(&active, budget, &mut |r| stream.push(r)) {
                                stream.push(SyncRecord::SnapshotEnd);
                                cursor = None;
                            }
                        }
                    }
                }
                // Both retire what is due each step, as their mapping cores do
                // every tick: the replica, with its margin, never first.
                active.expire(now, usize::MAX, &mut RecordSink(|r| stream.push(r)));
                replica.expire(now, usize::MAX, &mut NullSink);
                for r in stream.drain(..) {
                    match r.apply(&mut replica, now) {
                        Ok(Applied::SnapshotEnd) => synced = true,
                        Ok(_) => {}
                        Err(e) => prop_assert!(false, "{:?} refused: {}", r, e),
                    }
                }
                if synced {
                    prop_assert_eq!(view(&replica), view(&active));
                }
            }
            // Take over from the replica: new mappings never reuse a live public endpoint.
            if synced {
                let live: BTreeSet<(Ipv4Addr, u16, Proto)> = replica
                    .sessions(&SessionFilter::default())
                    .map(|s| (s.binding.public_addr, s.binding.public_port, s.binding.proto))
                    .collect();
                for port in 0..20 {
                    if let Ok(b) = replica.outbound(&key(9, port, 1, Proto::Udp), 0, now, &mut NullSink) {
                        prop_assert!(!live.contains(&(b.public_addr, b.public_port, b.proto)));
                    }
                }
            }
        }
    }
}
