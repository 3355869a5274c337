//! What a replicated [`NatTable`] needs beyond serving packets: the knobs
//! of a cluster member (timeout margin, refresh events, the allocation
//! fence), restoring state another instance decided (a standby replaying
//! the active's stream, an owner adopting a session a worker reports), a
//! reset before a snapshot, and the walk that produces one.
//!
//! Every restore is idempotent: restoring what exists updates it, closing
//! what is missing does nothing. A record that contradicts the table (the
//! public endpoint held by another inside endpoint, a block of another
//! subscriber) is refused with a [`ReplicaError`]: the caller resynchronises.
//! See docs/nat-ha.md (the sync stream).

use std::net::Ipv4Addr;

use super::{class_of, BlockEvents, EndpointKey, Mapping, NatEvent, NatTable, SessionEventKind, SessionKey, NIL};
use crate::nat::alloc::ClaimError;
use crate::nat::translate::Proto;
use crate::nat::Sink;

/// A session as a replica restores it: its mapping, remote endpoint and TCP
/// state (the seen-flags of [`super::SessionEvent::tcp_seen`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionState {
    pub proto: Proto,
    pub inside_addr: Ipv4Addr,
    /// Inside port, or ICMP identifier.
    pub inside_port: u16,
    pub public_addr: Ipv4Addr,
    pub public_port: u16,
    pub remote_addr: Ipv4Addr,
    /// 0 for ICMP.
    pub remote_port: u16,
    pub tcp_seen: u8,
}

/// Why a restore was refused: the replica and its source disagree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReplicaError {
    #[error("port block: {0}")]
    Block(#[from] ClaimError),
    /// The inside endpoint is mapped to another public endpoint here.
    #[error("inside endpoint mapped elsewhere")]
    MappingConflict,
    /// The public endpoint is held by another inside endpoint here.
    #[error("public endpoint held by another mapping")]
    PublicInUse,
    #[error("mapping table full")]
    MappingsFull,
    #[error("session table full")]
    SessionsFull,
}

impl NatTable {
    /// Runs every timeout `margin_ms` longer (a standby: docs/nat-ha.md,
    /// the timeout margin). The lists stay in expiry order: the margin is the
    /// same for every session of a class.
    pub fn set_timeout_margin(&mut self, margin_ms: u64) {
        self.margin_ms = margin_ms;
        for (t, base) in self.timeouts_ms.iter_mut().zip(self.base_timeouts_ms) {
            *t = base + margin_ms;
        }
    }

    pub fn timeout_margin_ms(&self) -> u64 {
        self.margin_ms
    }

    /// Pushes a [`SessionEventKind::Refreshed`] event when a session is
    /// refreshed and its last event is `ms` old (0: never).
    pub fn set_refresh_sync(&mut self, ms: u64) {
        self.refresh_sync_ms = ms;
    }

    /// Whether new mappings may be created ([`NatError::NotAllocating`]
    /// otherwise). Everything else (lookups, new sessions on existing
    /// mappings, refreshes, expiry) goes on either way.
    pub fn set_allocating(&mut self, allocating: bool) {
        self.allocating = allocating;
    }

    pub fn is_allocating(&self) -> bool {
        self.allocating
    }

    /// Creates or updates a session and whatever it needs (the subscriber's
    /// block, the mapping), as another instance decided it. `idle_ms`: how
    /// long it had been idle there. Pushes the events a new block, mapping or
    /// session cause (so an owner that adopts a session replicates it).
    pub fn upsert_session(
        &mut self,
        st: &SessionState,
        idle_ms: u64,
        now_ms: u64,
        sink: &mut impl Sink<NatEvent>,
    ) -> Result<(), ReplicaError> {
        let now_ms = self.advance_clock(now_ms);
        let inside = EndpointKey { proto: st.proto, addr: st.inside_addr.into(), port: st.inside_port };
        let public = EndpointKey { proto: st.proto, addr: st.public_addr.into(), port: st.public_port };
        let mapping = match self.by_inside.get(&inside) {
            Some(m) => {
                let lease = self.mappings[m as usize].lease.expect("live mapping has a lease");
                if (lease.public_addr, lease.port) != (st.public_addr, st.public_port) {
                    return Err(ReplicaError::MappingConflict);
                }
                m
            }
            None => {
                if self.by_public.contains(&public) {
                    return Err(ReplicaError::PublicInUse);
                }
                if self.mapping_free.is_empty() {
                    return Err(ReplicaError::MappingsFull);
                }
                if self.session_free.is_empty() {
                    return Err(ReplicaError::SessionsFull);
                }
                if st.public_port < crate::nat::PORT_MIN {
                    return Err(ReplicaError::Block(ClaimError::NotInPool));
                }
                let start = self.alloc.block_start(st.public_port);
                self.alloc.claim_block(st.inside_addr, st.public_addr, start, now_ms, &mut BlockEvents(&mut *sink))?;
                let lease = self.alloc.claim_port(st.inside_addr, st.proto, st.public_addr, st.public_port)?;
                self.create_mapping(inside, lease, now_ms, sink)
            }
        };
        let key = SessionKey {
            mapping,
            remote_addr: st.remote_addr.into(),
            remote_port: Self::remote_port(st.proto, st.remote_port),
        };
        let (session, created) = match self.session_index.get(&key) {
            Some(s) => (s, false),
            None => match self.create_session(key, now_ms, sink) {
                Ok(s) => (s, true),
                Err(_) => return Err(ReplicaError::SessionsFull),
            },
        };
        let bits = if st.proto == Proto::Tcp { st.tcp_seen } else { 0 };
        self.unlink(session);
        let s = &mut self.sessions[session as usize];
        s.tcp_bits = bits;
        s.class = class_of(st.proto, bits) as u8;
        // Linked at the tail with an older time: it may expire late, never early.
        s.last_ms = now_ms.saturating_sub(idle_ms);
        s.synced_ms = now_ms;
        self.link_tail(session);
        if created && bits != 0 {
            sink.push(NatEvent::Session(self.session_event(SessionEventKind::Updated, session, now_ms)));
        }
        Ok(())
    }

    /// Retires the session of `inside` with `remote` (and its mapping and
    /// block if they go with it), as another instance did. False if there
    /// is no such session.
    pub fn close_session(
        &mut self,
        proto: Proto,
        inside: (Ipv4Addr, u16),
        remote: (Ipv4Addr, u16),
        now_ms: u64,
        sink: &mut impl Sink<NatEvent>,
    ) -> bool {
        let now_ms = self.advance_clock(now_ms);
        let Some(mapping) = self.by_inside.get(&EndpointKey { proto, addr: inside.0.into(), port: inside.1 }) else {
            return false;
        };
        let key = SessionKey { mapping, remote_addr: remote.0.into(), remote_port: Self::remote_port(proto, remote.1) };
        let Some(session) = self.session_index.get(&key) else {
            return false;
        };
        self.retire_session(session, now_ms, sink);
        true
    }

    /// [`crate::nat::PortAllocator::claim_block`] for a replica (a block
    /// allocated at the source).
    pub fn claim_block(
        &mut self,
        subscriber: Ipv4Addr,
        public_addr: Ipv4Addr,
        port_start: u16,
        now_ms: u64,
        sink: &mut impl Sink<NatEvent>,
    ) -> Result<(), ClaimError> {
        self.alloc.claim_block(subscriber, public_addr, port_start, now_ms, &mut BlockEvents(sink))
    }

    /// [`crate::nat::PortAllocator::release_block_if_idle`] for a replica.
    pub fn release_block_if_idle(
        &mut self,
        subscriber: Ipv4Addr,
        public_addr: Ipv4Addr,
        port_start: u16,
        now_ms: u64,
        sink: &mut impl Sink<NatEvent>,
    ) -> Result<(), ClaimError> {
        self.alloc.release_block_if_idle(subscriber, public_addr, port_start, now_ms, &mut BlockEvents(sink))
    }

    /// [`crate::nat::PortAllocator::quarantine_block`] for a replica.
    pub fn quarantine_block(
        &mut self,
        public_addr: Ipv4Addr,
        port_start: u16,
        remaining_ms: u64,
        now_ms: u64,
    ) -> Result<(), ClaimError> {
        self.alloc.quarantine_block(public_addr, port_start, remaining_ms, now_ms)
    }

    /// [`crate::nat::PortAllocator::quarantine_port`] for a replica (a port
    /// no live mapping holds).
    pub fn quarantine_port(&mut self, proto: Proto, public_addr: Ipv4Addr, port: u16, remaining_ms: u64, now_ms: u64) {
        if !self.by_public.contains(&EndpointKey { proto, addr: public_addr.into(), port }) {
            self.alloc.quarantine_port(proto, public_addr, port, remaining_ms, now_ms);
        }
    }

    /// Empties the table (capacities, seeds, counters and settings kept):
    /// a standby before a snapshot. Time proportional to the capacities; no
    /// allocation. Session ids handed out before do not name new sessions.
    pub fn reset(&mut self) {
        self.alloc.reset();
        self.mappings.fill(Mapping { proto: Proto::Udp, inside_addr: 0, inside_port: 0, lease: None, sessions: 0 });
        self.mapping_free.clear();
        self.mapping_free.extend((0..self.mappings.len() as u32).rev());
        self.by_inside.clear();
        self.by_public.clear();
        for s in &mut self.sessions {
            if s.mapping != NIL {
                s.generation = s.generation.wrapping_add(1);
            }
            s.mapping = NIL;
            s.prev = NIL;
            s.next = NIL;
        }
        self.session_free.clear();
        self.session_free.extend((0..self.sessions.len() as u32).rev());
        self.session_index.clear();
        if let Some(r) = &mut self.remotes {
            r.clear();
        }
        self.heads = [NIL; 4];
        self.tails = [NIL; 4];
    }

    /// The live sessions of arena slots `from..from + max`: `out(state,
    /// idle ms)`. Returns where to go on, `None` at the end. A snapshot
    /// walks the table this way in bounded steps while it keeps changing.
    pub fn snapshot_sessions(&self, from: u32, max: u32, mut out: impl FnMut(SessionState, u64)) -> Option<u32> {
        let end = (from as usize).saturating_add(max as usize).min(self.sessions.len());
        for index in from as usize..end {
            let s = &self.sessions[index];
            if s.mapping == NIL {
                continue;
            }
            let b = self.binding(s.mapping, s.remote_addr, s.remote_port, None);
            let st = SessionState {
                proto: b.proto,
                inside_addr: b.inside_addr,
                inside_port: b.inside_port,
                public_addr: b.public_addr,
                public_port: b.public_port,
                remote_addr: b.remote_addr,
                remote_port: b.remote_port,
                tcp_seen: s.tcp_bits,
            };
            out(st, self.clock_ms.saturating_sub(s.last_ms));
        }
        (end < self.sessions.len()).then_some(end as u32)
    }

    /// The session state of a cached flow (for comparing a worker's report).
    pub fn session_state(&self, direction: super::Direction, key: &crate::nat::FlowKey) -> Option<SessionState> {
        let session = self.session_of(direction, key)?;
        let s = &self.sessions[session as usize];
        let b = self.binding(s.mapping, s.remote_addr, s.remote_port, None);
        Some(SessionState {
            proto: b.proto,
            inside_addr: b.inside_addr,
            inside_port: b.inside_port,
            public_addr: b.public_addr,
            public_port: b.public_port,
            remote_addr: b.remote_addr,
            remote_port: b.remote_port,
            tcp_seen: s.tcp_bits,
        })
    }
}
