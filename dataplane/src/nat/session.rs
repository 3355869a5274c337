//! The mapping server's state: mappings, sessions, filtering, timeouts, and
//! the event stream a standby replays.
//!
//! ```text
//!  mapping (endpoint-independent, RFC 4787 REQ-1, RFC 5382 REQ-1):
//!     (proto, inside addr, inside port) ──► (public addr, public port)  + port lease
//!        index by inside key ─┐      ┌─ index by public key (return traffic)
//!                             ▼      ▼
//!                           mapping m ── sessions: (m, remote addr, remote port)
//!                                            ├ TCP state (SYN/FIN per direction, RST)
//!                                            ├ last activity, in one of four LRU lists:
//!                                            │   UDP │ TCP established │ TCP transitory │ ICMP
//!                                            └ (address-dependent filtering: count per (m, remote addr))
//! ```
//!
//! # Behaviour
//!
//! * **Mapping**: endpoint-independent. The first outbound packet of an
//!   inside endpoint creates the mapping (a port from [`PortAllocator`]);
//!   later packets to any remote endpoint reuse it. A mapping lives while it
//!   has sessions: it is retired, and its port released, with its last one.
//! * **Sessions**: one per (mapping, remote address, remote port); ICMP
//!   sessions ignore the remote "port" (the identifier is the mapping's).
//!   Outbound packets create and refresh them (RFC 4787 REQ-6); inbound
//!   packets refresh them and, where the filter allows, create them.
//! * **Filtering** ([`Filtering`], RFC 4787 §5, REQ-8; RFC 5382 REQ-3; RFC 6888
//!   REQ-7): an inbound packet to a mapping from a remote endpoint that has
//!   no session is accepted (creating a session) by endpoint-independent
//!   filtering (default); by address-dependent filtering only if the mapping
//!   has a session with that remote address; by address-and-port-dependent
//!   filtering never. Refused: [`NatError::Filtered`].
//! * **Hairpinning** (RFC 4787 REQ-9, RFC 5382 REQ-8, RFC 5508 REQ-7): the
//!   caller translates an outbound packet whose destination is a pool address
//!   ([`NatTable::is_public`]) outbound first, then runs the result through
//!   [`NatTable::inbound`]: the inside target sees the sender's public
//!   endpoint, and filtering applies as for any inbound packet.
//! * **TCP** ([`TcpState`]): SYN seen both ways → established; FIN seen both
//!   ways, or any RST → closing (RFC 7857 §2.1). Opening and closing sessions
//!   use the transitory timeout. A SYN without ACK on a closing session starts
//!   the state over (the 5-tuple is reused by a new connection). Unsolicited
//!   inbound SYNs are not held for 6 s (RFC 5382 REQ-4): with
//!   endpoint-independent filtering they create a session (simultaneous open).
//! * **Timeouts** (idle time, from the last packet seen in either direction):
//!   UDP, TCP established, TCP transitory, ICMP, each configurable. Because a
//!   class has one timeout, each class's list in last-activity order is also
//!   in expiry order: [`NatTable::expire`] looks only at the four heads and
//!   retires at most `max` sessions per call (bounded work), then ends at most
//!   `max` quarantines in the allocator. Workers translate from their caches
//!   without telling the mapping core every packet; they report activity
//!   with [`NatTable::touch`] (not wired yet).
//! * **ICMP errors** create nothing and refresh nothing (RFC 5508 REQ-4..6,
//!   RFC 4787 REQ-12, RFC 5382 REQ-10): use [`NatTable::lookup_outbound`] /
//!   [`NatTable::lookup_inbound`] with the error's [`super::Flow`] key.
//! * **Full tables**: [`NatError::MappingsFull`], [`NatError::SessionsFull`],
//!   or the allocator's errors; the caller drops and counts (and may send
//!   ICMP administratively prohibited, RFC 5508 REQ-8). Nothing live is
//!   evicted.
//! * **Events**: every creation, TCP state change and retirement is a
//!   [`NatEvent`] pushed to the caller's sink, in causal order. A standby that
//!   applies the stream in order holds the same mappings and sessions.
//!
//! # Limits and memory
//!
//! Arenas of `mappings_max` mappings and `sessions_max` sessions, free lists
//! and fixed-capacity hash indices (open addressing, linear probing, load
//! ≤ ½, no growth; `nat/table.rs`) are allocated in
//! [`NatTable::new`]; nothing allocates afterwards. A session id carries a
//! generation, so a stale id (a worker's report about a session that has
//! since been retired and its slot reused) is recognised and ignored.
//! [`NatTable::memory_bytes`] gives the footprint.

use std::fmt;
use std::net::Ipv4Addr;

mod replica;

pub use replica::{ReplicaError, SessionState};

use super::alloc::{BlockEvent, PortAllocator, PortLease};
use super::table::{FixedKey, FixedMap};
use super::translate::{tcp_flags, FlowKey, Proto};
use super::{NatConfig, NatError, Sink};

const NIL: u32 = u32::MAX;

/// Inbound filtering behaviour (RFC 4787 §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Filtering {
    /// Any remote endpoint may send to a mapping (RFC 6888 REQ-7 default).
    #[default]
    EndpointIndependent,
    /// Only remote addresses the mapping has sent to.
    AddressDependent,
    /// Only remote endpoints (address and port) the mapping has sent to.
    AddressAndPortDependent,
}

/// Which way a packet crosses the NAT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Inside to outside.
    Outbound,
    /// Outside to inside.
    Inbound,
}

/// The state of a TCP session, as far as the NAT follows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TcpState {
    /// SYN not yet seen in both directions (transitory timeout).
    Opening,
    /// SYN seen in both directions (established timeout).
    Established,
    /// FIN seen in both directions, or a RST (transitory timeout).
    Closing,
}

impl TcpState {
    /// Lower-case name for logs and listings.
    pub fn name(self) -> &'static str {
        match self {
            TcpState::Opening => "opening",
            TcpState::Established => "established",
            TcpState::Closing => "closing",
        }
    }
}

/// TCP flags seen on a session, per direction.
mod seen {
    pub const SYN_OUT: u8 = 0x01;
    pub const SYN_IN: u8 = 0x02;
    pub const FIN_OUT: u8 = 0x04;
    pub const FIN_IN: u8 = 0x08;
    pub const RST: u8 = 0x10;
}

fn tcp_state(bits: u8) -> TcpState {
    if bits & seen::RST != 0 || bits & (seen::FIN_OUT | seen::FIN_IN) == seen::FIN_OUT | seen::FIN_IN {
        TcpState::Closing
    } else if bits & (seen::SYN_OUT | seen::SYN_IN) == seen::SYN_OUT | seen::SYN_IN {
        TcpState::Established
    } else {
        TcpState::Opening
    }
}

/// The session's flag bits after a packet with `flags` going `direction`.
fn tcp_update(bits: u8, direction: Direction, flags: u8) -> u8 {
    let mut bits = bits;
    if tcp_state(bits) == TcpState::Closing && flags & (tcp_flags::SYN | tcp_flags::ACK) == tcp_flags::SYN {
        bits = 0;
    }
    let (syn, fin) = match direction {
        Direction::Outbound => (seen::SYN_OUT, seen::FIN_OUT),
        Direction::Inbound => (seen::SYN_IN, seen::FIN_IN),
    };
    if flags & tcp_flags::SYN != 0 {
        bits |= syn;
    }
    if flags & tcp_flags::FIN != 0 {
        bits |= fin;
    }
    if flags & tcp_flags::RST != 0 {
        bits |= seen::RST;
    }
    bits
}

/// Timeout classes; each has its own LRU list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Udp = 0,
    TcpEstablished = 1,
    TcpTransitory = 2,
    Icmp = 3,
}

fn class_of(proto: Proto, bits: u8) -> Class {
    match proto {
        Proto::Udp => Class::Udp,
        Proto::Icmp => Class::Icmp,
        Proto::Tcp => match tcp_state(bits) {
            TcpState::Established => Class::TcpEstablished,
            TcpState::Opening | TcpState::Closing => Class::TcpTransitory,
        },
    }
}

/// A session, named for the mapping core's clients (workers). Carries a
/// generation: an id outlives its session harmlessly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionId {
    index: u32,
    generation: u32,
}

impl SessionId {
    /// The id as one word (for messages between cores).
    pub const fn to_bits(self) -> u64 {
        (self.generation as u64) << 32 | self.index as u64
    }

    /// The id [`SessionId::to_bits`] made. Any word is accepted: an id that
    /// names no live session is recognised as stale by [`NatTable::touch`].
    pub const fn from_bits(bits: u64) -> SessionId {
        SessionId { index: bits as u32, generation: (bits >> 32) as u32 }
    }
}

/// Both translations of a flow: what a worker caches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Binding {
    pub proto: Proto,
    pub inside_addr: Ipv4Addr,
    /// Inside port, or ICMP identifier.
    pub inside_port: u16,
    pub public_addr: Ipv4Addr,
    /// Public port, or ICMP identifier.
    pub public_port: u16,
    pub remote_addr: Ipv4Addr,
    /// Remote port; 0 for ICMP.
    pub remote_port: u16,
    /// The session; `None` from the lookups for ICMP errors when the mapping
    /// has no session with this remote endpoint.
    pub session: Option<SessionId>,
}

/// Whether a mapping appeared or went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MappingEventKind {
    Created,
    Retired,
}

/// A mapping created or retired (no remote endpoint: RFC 6888 REQ-12).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MappingEvent {
    pub kind: MappingEventKind,
    pub proto: Proto,
    pub inside_addr: Ipv4Addr,
    pub inside_port: u16,
    pub public_addr: Ipv4Addr,
    pub public_port: u16,
    pub time_ms: u64,
}

/// Whether a session appeared, changed TCP state, or went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SessionEventKind {
    Opened,
    /// TCP state changed (it decides the timeout).
    Updated,
    /// Refreshed by traffic, `refresh_sync_ms` after it was last reported
    /// ([`NatTable::set_refresh_sync`]; for a standby, never logged).
    Refreshed,
    /// Retired on its idle timeout.
    Closed,
}

/// A session event. Holds the remote endpoint: for replication, not for the
/// subscriber log (RFC 6888 REQ-12: do not log destinations by default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionEvent {
    pub kind: SessionEventKind,
    pub proto: Proto,
    pub inside_addr: Ipv4Addr,
    pub inside_port: u16,
    pub public_addr: Ipv4Addr,
    pub public_port: u16,
    pub remote_addr: Ipv4Addr,
    pub remote_port: u16,
    /// For TCP sessions.
    pub tcp_state: Option<TcpState>,
    /// The TCP flags seen so far, as the table keeps them (SYN out 0x01,
    /// SYN in 0x02, FIN out 0x04, FIN in 0x08, RST 0x10): what a replica
    /// needs to follow the state machine on; 0 for UDP and ICMP.
    pub tcp_seen: u8,
    pub time_ms: u64,
}

/// Every change of a mapping server's state, in the order it happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NatEvent {
    Block(BlockEvent),
    Mapping(MappingEvent),
    Session(SessionEvent),
}

impl fmt::Display for MappingEvent {
    /// `nat_mapping event=created time_ms=.. proto=udp inside=a:p public=a:p`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            MappingEventKind::Created => "created",
            MappingEventKind::Retired => "retired",
        };
        write!(
            f,
            "nat_mapping event={kind} time_ms={} proto={} inside={}:{} public={}:{}",
            self.time_ms,
            self.proto.name(),
            self.inside_addr,
            self.inside_port,
            self.public_addr,
            self.public_port
        )
    }
}

impl fmt::Display for SessionEvent {
    /// `nat_session event=opened time_ms=.. proto=tcp inside=.. public=.. remote=.. tcp_state=opening`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            SessionEventKind::Opened => "opened",
            SessionEventKind::Updated => "updated",
            SessionEventKind::Refreshed => "refreshed",
            SessionEventKind::Closed => "closed",
        };
        write!(
            f,
            "nat_session event={kind} time_ms={} proto={} inside={}:{} public={}:{} remote={}:{}",
            self.time_ms,
            self.proto.name(),
            self.inside_addr,
            self.inside_port,
            self.public_addr,
            self.public_port,
            self.remote_addr,
            self.remote_port
        )?;
        if let Some(state) = self.tcp_state {
            write!(f, " tcp_state={}", state.name())?;
        }
        Ok(())
    }
}

impl fmt::Display for NatEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NatEvent::Block(e) => e.fmt(f),
            NatEvent::Mapping(e) => e.fmt(f),
            NatEvent::Session(e) => e.fmt(f),
        }
    }
}

/// Passes the allocator's block events into the table's event stream.
struct BlockEvents<'a, S>(&'a mut S);

impl<S: Sink<NatEvent>> Sink<BlockEvent> for BlockEvents<'_, S> {
    fn push(&mut self, event: BlockEvent) {
        self.0.push(NatEvent::Block(event));
    }
}

/// Counters of the table (single writer: the mapping core). The allocator's
/// are in [`NatTable::alloc`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NatCounters {
    pub mappings_created: u64,
    pub mappings_retired: u64,
    pub sessions_created: u64,
    pub sessions_retired: u64,
    pub mappings_full: u64,
    pub sessions_full: u64,
    /// Inbound packets to a public endpoint without a mapping.
    pub no_mapping: u64,
    /// Inbound packets refused by the filter.
    pub filtered: u64,
    /// New mappings refused while not allocating ([`NatTable::set_allocating`]).
    pub not_allocating: u64,
}

/// What one [`NatTable::expire`] call did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Expired {
    pub sessions: usize,
    pub mappings: usize,
    /// Ports and blocks whose quarantine ended.
    pub quarantine_ended: usize,
}

/// Filter for [`NatTable::sessions`] (`show nat sessions`): every field that
/// is set must match.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionFilter {
    pub proto: Option<Proto>,
    pub inside_addr: Option<Ipv4Addr>,
    pub public_addr: Option<Ipv4Addr>,
    pub remote_addr: Option<Ipv4Addr>,
}

/// One line of a session listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionInfo {
    pub binding: Binding,
    pub tcp_state: Option<TcpState>,
    pub last_ms: u64,
    /// When it expires if idle from now on.
    pub expires_ms: u64,
}

/// (proto, address, port): a mapping's inside or public endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct EndpointKey {
    proto: Proto,
    addr: u32,
    port: u16,
}

impl FixedKey for EndpointKey {
    fn words(&self) -> [u64; 2] {
        [u64::from(self.addr) | u64::from(self.port) << 32 | (self.proto.index() as u64) << 48, 0]
    }
}

/// (mapping, remote address, remote port): a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SessionKey {
    mapping: u32,
    remote_addr: u32,
    remote_port: u16,
}

impl FixedKey for SessionKey {
    fn words(&self) -> [u64; 2] {
        [u64::from(self.remote_addr) | u64::from(self.mapping) << 32, u64::from(self.remote_port)]
    }
}

/// (mapping, remote address): address-dependent filtering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RemoteKey {
    mapping: u32,
    remote_addr: u32,
}

impl FixedKey for RemoteKey {
    fn words(&self) -> [u64; 2] {
        [u64::from(self.remote_addr) | u64::from(self.mapping) << 32, 0x0adf]
    }
}

#[derive(Debug, Clone, Copy)]
struct Mapping {
    proto: Proto,
    inside_addr: u32,
    inside_port: u16,
    lease: Option<PortLease>,
    sessions: u32,
}

#[derive(Debug, Clone, Copy)]
struct Session {
    mapping: u32,
    remote_addr: u32,
    remote_port: u16,
    tcp_bits: u8,
    class: u8,
    generation: u32,
    last_ms: u64,
    /// When the last event about it was pushed (refresh replication).
    synced_ms: u64,
    prev: u32,
    next: u32,
}

/// The state of one mapping server. See the module doc.
#[derive(Debug, Clone)]
pub struct NatTable {
    alloc: PortAllocator,
    filtering: Filtering,
    /// The configured timeouts plus `margin_ms`.
    timeouts_ms: [u64; 4],
    base_timeouts_ms: [u64; 4],
    margin_ms: u64,
    /// 0: no refresh events.
    refresh_sync_ms: u64,
    /// Whether new mappings may be created (cluster fencing).
    allocating: bool,

    mappings: Vec<Mapping>,
    mapping_free: Vec<u32>,
    by_inside: FixedMap<EndpointKey, u32>,
    by_public: FixedMap<EndpointKey, u32>,

    sessions: Vec<Session>,
    session_free: Vec<u32>,
    session_index: FixedMap<SessionKey, u32>,
    /// Sessions per (mapping, remote address); address-dependent filtering only.
    remotes: Option<FixedMap<RemoteKey, u32>>,
    /// Heads and tails of the four LRU lists (oldest at the head).
    heads: [u32; 4],
    tails: [u32; 4],

    clock_ms: u64,
    counters: NatCounters,
}

impl NatTable {
    /// Allocates every table from `config`.
    ///
    /// # Panics
    /// If `config` does not pass [`NatConfig::validate`].
    pub fn new(config: &NatConfig) -> NatTable {
        let alloc = PortAllocator::new(config);
        let mappings_max = config.mappings_max as usize;
        let sessions_max = config.sessions_max as usize;
        let seed = config.hash_seed;
        let timeouts = [
            config.udp_timeout_ms,
            config.tcp_established_timeout_ms,
            config.tcp_transitory_timeout_ms,
            config.icmp_timeout_ms,
        ];
        NatTable {
            alloc,
            filtering: config.filtering,
            timeouts_ms: timeouts,
            base_timeouts_ms: timeouts,
            margin_ms: 0,
            refresh_sync_ms: 0,
            allocating: true,
            mappings: vec![
                Mapping { proto: Proto::Udp, inside_addr: 0, inside_port: 0, lease: None, sessions: 0 };
                mappings_max
            ],
            mapping_free: (0..mappings_max as u32).rev().collect(),
            by_inside: FixedMap::new(mappings_max, seed ^ 0x1111),
            by_public: FixedMap::new(mappings_max, seed ^ 0x2222),
            sessions: vec![
                Session {
                    mapping: NIL,
                    remote_addr: 0,
                    remote_port: 0,
                    tcp_bits: 0,
                    class: 0,
                    generation: 0,
                    last_ms: 0,
                    synced_ms: 0,
                    prev: NIL,
                    next: NIL,
                };
                sessions_max
            ],
            session_free: (0..sessions_max as u32).rev().collect(),
            session_index: FixedMap::new(sessions_max, seed ^ 0x3333),
            remotes: (config.filtering == Filtering::AddressDependent)
                .then(|| FixedMap::new(sessions_max, seed ^ 0x4444)),
            heads: [NIL; 4],
            tails: [NIL; 4],
            clock_ms: 0,
            counters: NatCounters::default(),
        }
    }

    /// The port allocator (its counters and gauges).
    pub fn alloc(&self) -> &PortAllocator {
        &self.alloc
    }

    pub fn counters(&self) -> &NatCounters {
        &self.counters
    }

    /// Live mappings.
    pub fn mappings(&self) -> usize {
        self.by_inside.len()
    }

    /// Live sessions.
    pub fn session_count(&self) -> usize {
        self.session_index.len()
    }

    /// Whether `addr` is a pool address (the destination of a hairpinned packet).
    pub fn is_public(&self, addr: Ipv4Addr) -> bool {
        self.alloc.is_public(addr)
    }

    /// Bytes allocated at start for the mapping server's state: the
    /// mapping and session arenas, their indices and free lists (the part
    /// that scales with `sessions_max`), and the allocator's tables.
    pub fn memory_bytes(&self) -> usize {
        use std::mem::size_of;
        self.mappings.capacity() * size_of::<Mapping>()
            + self.mapping_free.capacity() * 4
            + self.by_inside.memory_bytes()
            + self.by_public.memory_bytes()
            + self.sessions.capacity() * size_of::<Session>()
            + self.session_free.capacity() * 4
            + self.session_index.memory_bytes()
            + self.remotes.as_ref().map_or(0, FixedMap::memory_bytes)
            + self.alloc.memory_bytes()
    }

    fn advance_clock(&mut self, now_ms: u64) -> u64 {
        self.clock_ms = self.clock_ms.max(now_ms);
        self.clock_ms
    }

    fn remote_port(proto: Proto, port: u16) -> u16 {
        if proto == Proto::Icmp {
            0
        } else {
            port
        }
    }

    fn binding(&self, mapping: u32, remote_addr: u32, remote_port: u16, session: Option<u32>) -> Binding {
        let m = &self.mappings[mapping as usize];
        let lease = m.lease.expect("live mapping has a lease");
        Binding {
            proto: m.proto,
            inside_addr: Ipv4Addr::from(m.inside_addr),
            inside_port: m.inside_port,
            public_addr: lease.public_addr,
            public_port: lease.port,
            remote_addr: Ipv4Addr::from(remote_addr),
            remote_port,
            session: session.map(|index| SessionId { index, generation: self.sessions[index as usize].generation }),
        }
    }

    fn session_event(&self, kind: SessionEventKind, session: u32, time_ms: u64) -> SessionEvent {
        let s = &self.sessions[session as usize];
        let b = self.binding(s.mapping, s.remote_addr, s.remote_port, None);
        SessionEvent {
            kind,
            proto: b.proto,
            inside_addr: b.inside_addr,
            inside_port: b.inside_port,
            public_addr: b.public_addr,
            public_port: b.public_port,
            remote_addr: b.remote_addr,
            remote_port: b.remote_port,
            tcp_state: (b.proto == Proto::Tcp).then(|| tcp_state(s.tcp_bits)),
            tcp_seen: s.tcp_bits,
            time_ms,
        }
    }

    fn mapping_event(&self, kind: MappingEventKind, mapping: u32, time_ms: u64) -> MappingEvent {
        let m = &self.mappings[mapping as usize];
        let lease = m.lease.expect("live mapping has a lease");
        MappingEvent {
            kind,
            proto: m.proto,
            inside_addr: Ipv4Addr::from(m.inside_addr),
            inside_port: m.inside_port,
            public_addr: lease.public_addr,
            public_port: lease.port,
            time_ms,
        }
    }

    /// An outbound packet (inside → outside) of flow `key` (`src` inside,
    /// `dst` remote): finds or creates its mapping and session, refreshes the
    /// session and follows its TCP state. Returns the binding to translate
    /// with ([`super::translate::rewrite_src`] with the public endpoint).
    pub fn outbound(
        &mut self,
        key: &FlowKey,
        tcp_flags: u8,
        now_ms: u64,
        sink: &mut impl Sink<NatEvent>,
    ) -> Result<Binding, NatError> {
        let now_ms = self.advance_clock(now_ms);
        let inside = EndpointKey { proto: key.proto, addr: key.src.into(), port: key.sport };
        let remote_port = Self::remote_port(key.proto, key.dport);
        let mapping = match self.by_inside.get(&inside) {
            Some(mapping) => mapping,
            None => {
                if !self.allocating {
                    self.counters.not_allocating += 1;
                    return Err(NatError::NotAllocating);
                }
                if self.mapping_free.is_empty() {
                    self.counters.mappings_full += 1;
                    return Err(NatError::MappingsFull);
                }
                if self.session_free.is_empty() {
                    self.counters.sessions_full += 1;
                    return Err(NatError::SessionsFull);
                }
                let lease =
                    self.alloc.allocate_port(key.src, key.proto, key.sport, now_ms, &mut BlockEvents(&mut *sink))?;
                self.create_mapping(inside, lease, now_ms, sink)
            }
        };
        let session_key = SessionKey { mapping, remote_addr: key.dst.into(), remote_port };
        let session = match self.session_index.get(&session_key) {
            Some(session) => session,
            None => self.create_session(session_key, now_ms, sink)?,
        };
        self.refresh(session, Direction::Outbound, tcp_flags, now_ms, sink);
        Ok(self.binding(mapping, session_key.remote_addr, remote_port, Some(session)))
    }

    /// An inbound packet (outside → inside) of flow `key` (`src` remote,
    /// `dst` a public endpoint): finds the mapping, applies the filter,
    /// finds or creates the session, refreshes it. Returns the binding
    /// ([`super::translate::rewrite_dst`] with the inside endpoint).
    pub fn inbound(
        &mut self,
        key: &FlowKey,
        tcp_flags: u8,
        now_ms: u64,
        sink: &mut impl Sink<NatEvent>,
    ) -> Result<Binding, NatError> {
        let now_ms = self.advance_clock(now_ms);
        let public = EndpointKey { proto: key.proto, addr: key.dst.into(), port: key.dport };
        let Some(mapping) = self.by_public.get(&public) else {
            self.counters.no_mapping += 1;
            return Err(NatError::NoMapping);
        };
        let remote_port = Self::remote_port(key.proto, key.sport);
        let session_key = SessionKey { mapping, remote_addr: key.src.into(), remote_port };
        let session = match self.session_index.get(&session_key) {
            Some(session) => session,
            None => {
                if !self.filter_allows(mapping, session_key.remote_addr) {
                    self.counters.filtered += 1;
                    return Err(NatError::Filtered);
                }
                self.create_session(session_key, now_ms, sink)?
            }
        };
        self.refresh(session, Direction::Inbound, tcp_flags, now_ms, sink);
        Ok(self.binding(mapping, session_key.remote_addr, remote_port, Some(session)))
    }

    /// Whether the filter lets a remote endpoint without a session in.
    fn filter_allows(&self, mapping: u32, remote_addr: u32) -> bool {
        match self.filtering {
            Filtering::EndpointIndependent => true,
            Filtering::AddressDependent => {
                self.remotes.as_ref().is_some_and(|r| r.contains(&RemoteKey { mapping, remote_addr }))
            }
            Filtering::AddressAndPortDependent => false,
        }
    }

    /// For an ICMP error from inside ([`super::Flow::icmp_error`], key with
    /// `src` inside): the mapping, if any. Creates and refreshes nothing.
    pub fn lookup_outbound(&self, key: &FlowKey) -> Option<Binding> {
        let inside = EndpointKey { proto: key.proto, addr: key.src.into(), port: key.sport };
        let mapping = self.by_inside.get(&inside)?;
        let remote_port = Self::remote_port(key.proto, key.dport);
        let session = self.session_index.get(&SessionKey { mapping, remote_addr: key.dst.into(), remote_port });
        Some(self.binding(mapping, key.dst.into(), remote_port, session))
    }

    /// For an ICMP error from outside (key with `dst` public, `src` the
    /// remote the quoted packet went to): the mapping, if any and if the
    /// filter lets that remote in. Creates and refreshes nothing.
    pub fn lookup_inbound(&self, key: &FlowKey) -> Result<Binding, NatError> {
        let public = EndpointKey { proto: key.proto, addr: key.dst.into(), port: key.dport };
        let mapping = self.by_public.get(&public).ok_or(NatError::NoMapping)?;
        let remote_port = Self::remote_port(key.proto, key.sport);
        let session = self.session_index.get(&SessionKey { mapping, remote_addr: key.src.into(), remote_port });
        if session.is_none() && !self.filter_allows(mapping, key.src.into()) {
            return Err(NatError::Filtered);
        }
        Ok(self.binding(mapping, key.src.into(), remote_port, session))
    }

    /// The session a worker's cache entry of `key` (seen going `direction`)
    /// belongs to, if it is live.
    fn session_of(&self, direction: Direction, key: &FlowKey) -> Option<u32> {
        let (public, remote_addr, remote_port) = match direction {
            Direction::Outbound => {
                let inside = EndpointKey { proto: key.proto, addr: key.src.into(), port: key.sport };
                let mapping = self.by_inside.get(&inside)?;
                let sk = SessionKey {
                    mapping,
                    remote_addr: key.dst.into(),
                    remote_port: Self::remote_port(key.proto, key.dport),
                };
                return self.session_index.get(&sk);
            }
            Direction::Inbound => (
                EndpointKey { proto: key.proto, addr: key.dst.into(), port: key.dport },
                u32::from(key.src),
                Self::remote_port(key.proto, key.sport),
            ),
        };
        let mapping = self.by_public.get(&public)?;
        self.session_index.get(&SessionKey { mapping, remote_addr, remote_port })
    }

    /// Activity a worker saw on a cached entry (the entry's key and
    /// direction, its last packet's time and TCP flags). Returns false if
    /// the session is gone. Keyed by flow, not by session id, so that any
    /// instance of a replicated table (a standby that took over) finds it.
    pub fn touch(
        &mut self,
        direction: Direction,
        key: &FlowKey,
        tcp_flags: u8,
        now_ms: u64,
        sink: &mut impl Sink<NatEvent>,
    ) -> bool {
        let now_ms = self.advance_clock(now_ms);
        let Some(session) = self.session_of(direction, key) else {
            return false;
        };
        self.refresh(session, direction, tcp_flags, now_ms, sink);
        true
    }

    /// The binding of a live session (for a worker's cache entry, see
    /// [`NatTable::touch`]).
    pub fn binding_of(&self, direction: Direction, key: &FlowKey) -> Option<Binding> {
        let session = self.session_of(direction, key)?;
        let s = &self.sessions[session as usize];
        Some(self.binding(s.mapping, s.remote_addr, s.remote_port, Some(session)))
    }

    fn create_mapping(
        &mut self,
        inside: EndpointKey,
        lease: PortLease,
        now_ms: u64,
        sink: &mut impl Sink<NatEvent>,
    ) -> u32 {
        let mapping = self.mapping_free.pop().expect("checked by the caller");
        self.mappings[mapping as usize] = Mapping {
            proto: inside.proto,
            inside_addr: inside.addr,
            inside_port: inside.port,
            lease: Some(lease),
            sessions: 0,
        };
        let public = EndpointKey { proto: lease.proto, addr: lease.public_addr.into(), port: lease.port };
        self.by_inside.insert(inside, mapping).expect("mapping indices sized to mappings_max");
        let previous = self.by_public.insert(public, mapping).expect("mapping indices sized to mappings_max");
        assert!(previous.is_none(), "public endpoint leased twice: {public:?}");
        self.counters.mappings_created += 1;
        sink.push(NatEvent::Mapping(self.mapping_event(MappingEventKind::Created, mapping, now_ms)));
        mapping
    }

    fn create_session(
        &mut self,
        key: SessionKey,
        now_ms: u64,
        sink: &mut impl Sink<NatEvent>,
    ) -> Result<u32, NatError> {
        let Some(session) = self.session_free.pop() else {
            self.counters.sessions_full += 1;
            return Err(NatError::SessionsFull);
        };
        let proto = self.mappings[key.mapping as usize].proto;
        let generation = self.sessions[session as usize].generation;
        self.sessions[session as usize] = Session {
            mapping: key.mapping,
            remote_addr: key.remote_addr,
            remote_port: key.remote_port,
            tcp_bits: 0,
            class: class_of(proto, 0) as u8,
            generation,
            last_ms: now_ms,
            synced_ms: now_ms,
            prev: NIL,
            next: NIL,
        };
        self.link_tail(session);
        self.session_index.insert(key, session).expect("session index sized to sessions_max");
        if let Some(remotes) = &mut self.remotes {
            let remote = RemoteKey { mapping: key.mapping, remote_addr: key.remote_addr };
            let count = remotes.get(&remote).unwrap_or(0);
            remotes.insert(remote, count + 1).expect("sized to sessions_max");
        }
        self.mappings[key.mapping as usize].sessions += 1;
        self.counters.sessions_created += 1;
        sink.push(NatEvent::Session(self.session_event(SessionEventKind::Opened, session, now_ms)));
        Ok(session)
    }

    /// A packet on `session`: TCP state, last activity, LRU position.
    fn refresh(&mut self, session: u32, direction: Direction, flags: u8, now_ms: u64, sink: &mut impl Sink<NatEvent>) {
        let before = self.sessions[session as usize];
        let proto = self.mappings[before.mapping as usize].proto;
        let bits = if proto == Proto::Tcp { tcp_update(before.tcp_bits, direction, flags) } else { 0 };
        self.unlink(session);
        let s = &mut self.sessions[session as usize];
        s.tcp_bits = bits;
        s.class = class_of(proto, bits) as u8;
        s.last_ms = now_ms;
        self.link_tail(session);
        let kind = if proto == Proto::Tcp && tcp_state(bits) != tcp_state(before.tcp_bits) {
            SessionEventKind::Updated
        } else if self.refresh_sync_ms > 0 && now_ms.saturating_sub(before.synced_ms) >= self.refresh_sync_ms {
            SessionEventKind::Refreshed
        } else {
            return;
        };
        self.sessions[session as usize].synced_ms = now_ms;
        sink.push(NatEvent::Session(self.session_event(kind, session, now_ms)));
    }

    fn link_tail(&mut self, session: u32) {
        let class = usize::from(self.sessions[session as usize].class);
        let tail = self.tails[class];
        self.sessions[session as usize].prev = tail;
        self.sessions[session as usize].next = NIL;
        if tail == NIL {
            self.heads[class] = session;
        } else {
            self.sessions[tail as usize].next = session;
        }
        self.tails[class] = session;
    }

    fn unlink(&mut self, session: u32) {
        let Session { prev, next, class, .. } = self.sessions[session as usize];
        let class = usize::from(class);
        if prev == NIL {
            self.heads[class] = next;
        } else {
            self.sessions[prev as usize].next = next;
        }
        if next == NIL {
            self.tails[class] = prev;
        } else {
            self.sessions[next as usize].prev = prev;
        }
        self.sessions[session as usize].prev = NIL;
        self.sessions[session as usize].next = NIL;
    }

    /// Retires sessions idle for their timeout, oldest deadline first, at
    /// most `max` of them (and the mappings left without sessions), then
    /// ends at most `max` expired quarantines. Call it regularly from the
    /// mapping core's loop: the work per call is bounded by `max`.
    pub fn expire(&mut self, now_ms: u64, max: usize, sink: &mut impl Sink<NatEvent>) -> Expired {
        let now_ms = self.advance_clock(now_ms);
        let mut expired = Expired::default();
        while expired.sessions < max {
            let mut oldest: Option<(u64, u32)> = None;
            for class in 0..4 {
                let head = self.heads[class];
                if head == NIL {
                    continue;
                }
                let deadline = self.sessions[head as usize].last_ms + self.timeouts_ms[class];
                if deadline <= now_ms && oldest.is_none_or(|(d, _)| deadline < d) {
                    oldest = Some((deadline, head));
                }
            }
            let Some((_, session)) = oldest else { break };
            if self.retire_session(session, now_ms, sink) {
                expired.mappings += 1;
            }
            expired.sessions += 1;
        }
        expired.quarantine_ended = self.alloc.poll(now_ms, max);
        expired
    }

    /// Removes a session; and its mapping if it was the last. Returns
    /// whether the mapping went too.
    fn retire_session(&mut self, session: u32, now_ms: u64, sink: &mut impl Sink<NatEvent>) -> bool {
        sink.push(NatEvent::Session(self.session_event(SessionEventKind::Closed, session, now_ms)));
        self.unlink(session);
        let s = self.sessions[session as usize];
        let key = SessionKey { mapping: s.mapping, remote_addr: s.remote_addr, remote_port: s.remote_port };
        self.session_index.remove(&key).expect("live session is indexed");
        if let Some(remotes) = &mut self.remotes {
            let remote = RemoteKey { mapping: s.mapping, remote_addr: s.remote_addr };
            match remotes.get(&remote) {
                Some(1) => {
                    remotes.remove(&remote);
                }
                Some(n) => {
                    remotes.insert(remote, n - 1).expect("present");
                }
                None => unreachable!("session without its remote count"),
            }
        }
        let slot = &mut self.sessions[session as usize];
        slot.mapping = NIL;
        slot.generation = slot.generation.wrapping_add(1);
        self.session_free.push(session);
        self.counters.sessions_retired += 1;

        let mapping = s.mapping;
        self.mappings[mapping as usize].sessions -= 1;
        if self.mappings[mapping as usize].sessions > 0 {
            return false;
        }
        sink.push(NatEvent::Mapping(self.mapping_event(MappingEventKind::Retired, mapping, now_ms)));
        let m = self.mappings[mapping as usize];
        let lease = m.lease.expect("live mapping has a lease");
        self.by_inside.remove(&EndpointKey { proto: m.proto, addr: m.inside_addr, port: m.inside_port });
        self.by_public.remove(&EndpointKey { proto: m.proto, addr: lease.public_addr.into(), port: lease.port });
        self.alloc.release_port(lease, now_ms, &mut BlockEvents(&mut *sink));
        self.mappings[mapping as usize].lease = None;
        self.mapping_free.push(mapping);
        self.counters.mappings_retired += 1;
        true
    }

    /// Live sessions matching `filter`, in no particular order (slow path:
    /// `show nat sessions`).
    /// Retires every session `filter` matches (an operator's clear), as
    /// expiry would: events, mappings and blocks released with their last
    /// session. Returns how many. The caller makes the workers' cache
    /// entries stale before it translates another packet with them.
    pub fn retire_matching(&mut self, filter: &SessionFilter, now_ms: u64, sink: &mut impl Sink<NatEvent>) -> usize {
        let now_ms = self.advance_clock(now_ms);
        let doomed: Vec<u32> = self
            .session_index
            .iter()
            .filter(|(key, _)| {
                let b = self.binding(key.mapping, key.remote_addr, key.remote_port, None);
                filter.proto.is_none_or(|p| p == b.proto)
                    && filter.inside_addr.is_none_or(|a| a == b.inside_addr)
                    && filter.public_addr.is_none_or(|a| a == b.public_addr)
                    && filter.remote_addr.is_none_or(|a| a == b.remote_addr)
            })
            .map(|(_, index)| index)
            .collect();
        for &session in &doomed {
            self.retire_session(session, now_ms, sink);
        }
        doomed.len()
    }

    pub fn sessions<'a>(&'a self, filter: &'a SessionFilter) -> impl Iterator<Item = SessionInfo> + 'a {
        self.session_index.iter().filter_map(move |(key, index)| {
            let s = &self.sessions[index as usize];
            let binding = self.binding(key.mapping, key.remote_addr, key.remote_port, Some(index));
            let keep = filter.proto.is_none_or(|p| p == binding.proto)
                && filter.inside_addr.is_none_or(|a| a == binding.inside_addr)
                && filter.public_addr.is_none_or(|a| a == binding.public_addr)
                && filter.remote_addr.is_none_or(|a| a == binding.remote_addr);
            keep.then(|| SessionInfo {
                binding,
                tcp_state: (binding.proto == Proto::Tcp).then(|| tcp_state(s.tcp_bits)),
                last_ms: s.last_ms,
                expires_ms: s.last_ms + self.timeouts_ms[usize::from(s.class)],
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nat::alloc::BlockEventKind;
    use crate::nat::tests::small_config;
    use crate::nat::translate::tcp_flags::{ACK, FIN, RST, SYN};
    use proptest::prelude::*;
    use std::collections::{HashMap, HashSet};

    const A: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 10);
    const B: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 11);
    const S1: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 7);
    const S2: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 8);
    const S3: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 9);

    fn key(proto: Proto, src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> FlowKey {
        FlowKey { proto, src, sport, dst, dport }
    }

    fn out(
        table: &mut NatTable,
        proto: Proto,
        from: (Ipv4Addr, u16),
        to: (Ipv4Addr, u16),
        flags: u8,
        now: u64,
        ev: &mut Vec<NatEvent>,
    ) -> Result<Binding, NatError> {
        table.outbound(&key(proto, from.0, from.1, to.0, to.1), flags, now, ev)
    }

    /// The inbound key of a reply from `remote` to the binding's public endpoint.
    fn reply(b: &Binding, remote: (Ipv4Addr, u16)) -> FlowKey {
        let sport = if b.proto == Proto::Icmp { b.public_port } else { remote.1 };
        key(b.proto, remote.0, sport, b.public_addr, b.public_port)
    }

    fn table(config: NatConfig) -> NatTable {
        NatTable::new(&config)
    }

    #[test]
    fn endpoint_independent_mapping_and_events() {
        let mut t = table(small_config(4));
        let mut ev = Vec::new();
        let b1 = out(&mut t, Proto::Udp, (A, 5000), (S1, 53), 0, 1_000, &mut ev).unwrap();
        let b2 = out(&mut t, Proto::Udp, (A, 5000), (S2, 53), 0, 1_001, &mut ev).unwrap();
        assert_eq!((b1.public_addr, b1.public_port), (b2.public_addr, b2.public_port), "EIM");
        assert_eq!((b1.inside_addr, b1.inside_port), (A, 5000));
        assert_eq!((b2.remote_addr, b2.remote_port), (S2, 53));
        assert_ne!(b1.session, b2.session);
        assert_eq!((t.mappings(), t.session_count()), (1, 2));
        assert!(t.is_public(b1.public_addr));
        // Causal order: block, mapping, session, session.
        assert!(matches!(ev[0], NatEvent::Block(e) if e.kind == BlockEventKind::Allocated && e.subscriber == A));
        assert_eq!(
            ev[1],
            NatEvent::Mapping(MappingEvent {
                kind: MappingEventKind::Created,
                proto: Proto::Udp,
                inside_addr: A,
                inside_port: 5000,
                public_addr: b1.public_addr,
                public_port: b1.public_port,
                time_ms: 1_000,
            })
        );
        assert!(matches!(ev[2], NatEvent::Session(e) if e.kind == SessionEventKind::Opened && e.remote_addr == S1));
        assert!(
            matches!(ev[3], NatEvent::Session(e) if e.kind == SessionEventKind::Opened && e.remote_addr == S2 && e.time_ms == 1_001)
        );
        assert_eq!(ev.len(), 4);
        assert_eq!(
            ev[1].to_string(),
            format!(
                "nat_mapping event=created time_ms=1000 proto=udp inside=100.64.0.10:5000 public={}:{}",
                b1.public_addr, b1.public_port
            )
        );
        assert_eq!(
            ev[2].to_string(),
            format!("nat_session event=opened time_ms=1000 proto=udp inside=100.64.0.10:5000 public={}:{} remote=203.0.113.7:53", b1.public_addr, b1.public_port)
        );
        // Same flow again: nothing new.
        let again = out(&mut t, Proto::Udp, (A, 5000), (S1, 53), 0, 1_002, &mut ev).unwrap();
        assert_eq!(again, b1);
        assert_eq!(ev.len(), 4);
        // Return traffic finds the same session.
        let back = t.inbound(&reply(&b1, (S1, 53)), 0, 1_003, &mut ev).unwrap();
        assert_eq!(back, b1);
        assert_eq!(t.counters().mappings_created, 1);
        assert_eq!(t.counters().sessions_created, 2);
    }

    #[test]
    fn protocols_are_separate_mappings() {
        let mut t = table(small_config(1));
        let mut ev = Vec::new();
        let u = out(&mut t, Proto::Udp, (A, 5000), (S1, 53), 0, 0, &mut ev).unwrap();
        let c = out(&mut t, Proto::Tcp, (A, 5000), (S1, 53), SYN, 0, &mut ev).unwrap();
        assert_eq!(t.mappings(), 2);
        assert_eq!(u.public_addr, c.public_addr, "paired");
        // Inbound TCP to the UDP mapping's port does not reach the UDP mapping.
        let stray = key(Proto::Tcp, S2, 80, u.public_addr, u.public_port);
        if u.public_port != c.public_port {
            assert_eq!(t.inbound(&stray, SYN, 0, &mut ev), Err(NatError::NoMapping));
        }
    }

    #[test]
    fn filtering_behaviours() {
        for filtering in
            [Filtering::EndpointIndependent, Filtering::AddressDependent, Filtering::AddressAndPortDependent]
        {
            let mut t = table(NatConfig { filtering, ..small_config(2) });
            let mut ev = Vec::new();
            let b = out(&mut t, Proto::Udp, (A, 5000), (S1, 53), 0, 0, &mut ev).unwrap();
            // The contacted endpoint: always.
            assert!(t.inbound(&reply(&b, (S1, 53)), 0, 1, &mut ev).is_ok());
            // Same address, other port.
            let same_addr = t.inbound(&reply(&b, (S1, 54)), 0, 1, &mut ev);
            // Another address.
            let other = t.inbound(&reply(&b, (S3, 53)), 0, 1, &mut ev);
            match filtering {
                Filtering::EndpointIndependent => {
                    assert!(same_addr.is_ok() && other.is_ok());
                    assert_eq!(t.session_count(), 3);
                }
                Filtering::AddressDependent => {
                    assert!(same_addr.is_ok());
                    assert_eq!(other, Err(NatError::Filtered));
                    assert_eq!(t.session_count(), 2);
                }
                Filtering::AddressAndPortDependent => {
                    assert_eq!(same_addr, Err(NatError::Filtered));
                    assert_eq!(other, Err(NatError::Filtered));
                    assert_eq!(t.session_count(), 1);
                }
            }
            let filtered = [same_addr, other].iter().filter(|r| r.is_err()).count() as u64;
            assert_eq!(t.counters().filtered, filtered);
            // No mapping at all.
            let nowhere = key(Proto::Udp, S1, 53, b.public_addr, b.public_port ^ 1);
            assert_eq!(t.inbound(&nowhere, 0, 1, &mut ev), Err(NatError::NoMapping));
            assert_eq!(t.counters().no_mapping, 1);
        }
    }

    #[test]
    fn address_dependent_filter_follows_session_lifetimes() {
        let mut t = table(NatConfig { filtering: Filtering::AddressDependent, ..small_config(1) });
        let mut ev = Vec::new();
        let b = out(&mut t, Proto::Udp, (A, 5000), (S1, 53), 0, 0, &mut ev).unwrap();
        out(&mut t, Proto::Udp, (A, 5000), (S2, 53), 0, 200_000, &mut ev).unwrap();
        // The S1 session times out at 300 s; the mapping lives on (S2).
        assert_eq!(t.expire(300_000, 100, &mut ev).sessions, 1);
        assert_eq!(t.mappings(), 1);
        assert_eq!(t.inbound(&reply(&b, (S1, 53)), 0, 300_001, &mut ev), Err(NatError::Filtered));
        assert!(t.inbound(&reply(&b, (S2, 99)), 0, 300_001, &mut ev).is_ok(), "S2 address still allowed");
    }

    #[test]
    fn udp_timeout_retires_session_mapping_and_block() {
        let mut t = table(small_config(1));
        let mut ev = Vec::new();
        let b = out(&mut t, Proto::Udp, (A, 5000), (S1, 53), 0, 0, &mut ev).unwrap();
        // Refreshed by an inbound reply at 200 s: lives until 500 s.
        t.inbound(&reply(&b, (S1, 53)), 0, 200_000, &mut ev).unwrap();
        assert_eq!(t.expire(499_999, 100, &mut ev), Expired::default());
        ev.clear();
        let expired = t.expire(500_000, 100, &mut ev);
        assert_eq!((expired.sessions, expired.mappings), (1, 1));
        assert_eq!((t.mappings(), t.session_count()), (0, 0));
        assert!(matches!(ev[0], NatEvent::Session(e) if e.kind == SessionEventKind::Closed && e.time_ms == 500_000));
        assert!(
            matches!(ev[1], NatEvent::Mapping(e) if e.kind == MappingEventKind::Retired && e.public_port == b.public_port)
        );
        assert!(matches!(ev[2], NatEvent::Block(e) if e.kind == BlockEventKind::Released && e.subscriber == A));
        assert_eq!(ev.len(), 3);
        assert_eq!(t.inbound(&reply(&b, (S1, 53)), 0, 500_001, &mut ev), Err(NatError::NoMapping));
        assert_eq!(t.counters().mappings_retired, 1);
        assert_eq!(t.counters().sessions_retired, 1);
    }

    #[test]
    fn configured_timeouts_apply_per_class() {
        let config = NatConfig {
            udp_timeout_ms: 10_000,
            tcp_established_timeout_ms: 50_000,
            tcp_transitory_timeout_ms: 20_000,
            icmp_timeout_ms: 5_000,
            ..small_config(1)
        };
        let mut t = table(config);
        let mut ev = Vec::new();
        out(&mut t, Proto::Udp, (A, 1), (S1, 1), 0, 0, &mut ev).unwrap();
        out(&mut t, Proto::Icmp, (A, 2), (S1, 2), 0, 0, &mut ev).unwrap();
        out(&mut t, Proto::Tcp, (A, 3), (S1, 3), SYN, 0, &mut ev).unwrap();
        let est = out(&mut t, Proto::Tcp, (A, 4), (S1, 4), SYN, 0, &mut ev).unwrap();
        t.inbound(&reply(&est, (S1, 4)), SYN | ACK, 0, &mut ev).unwrap();
        let left = |t: &NatTable| {
            let mut v: Vec<u16> = t.sessions(&SessionFilter::default()).map(|s| s.binding.inside_port).collect();
            v.sort_unstable();
            v
        };
        t.expire(4_999, 10, &mut ev);
        assert_eq!(left(&t), [1, 2, 3, 4]);
        t.expire(5_000, 10, &mut ev);
        assert_eq!(left(&t), [1, 3, 4]);
        t.expire(10_000, 10, &mut ev);
        assert_eq!(left(&t), [3, 4]);
        t.expire(20_000, 10, &mut ev);
        assert_eq!(left(&t), [4]);
        t.expire(49_999, 10, &mut ev);
        assert_eq!(left(&t), [4]);
        t.expire(50_000, 10, &mut ev);
        assert!(left(&t).is_empty());
    }

    fn state_of(t: &NatTable, b: &Binding) -> Option<TcpState> {
        t.sessions(&SessionFilter::default()).find(|s| s.binding.session == b.session).and_then(|s| s.tcp_state)
    }

    #[test]
    fn tcp_state_machine_and_timeouts() {
        let mut t = table(small_config(1));
        let mut ev = Vec::new();
        let b = out(&mut t, Proto::Tcp, (A, 40000), (S1, 443), SYN, 0, &mut ev).unwrap();
        assert_eq!(state_of(&t, &b), Some(TcpState::Opening));
        let info = t.sessions(&SessionFilter::default()).next().unwrap();
        assert_eq!(info.expires_ms, 240_000, "transitory while opening");
        ev.clear();
        t.inbound(&reply(&b, (S1, 443)), SYN | ACK, 1_000, &mut ev).unwrap();
        assert_eq!(state_of(&t, &b), Some(TcpState::Established));
        assert!(
            matches!(ev[..], [NatEvent::Session(e)] if e.kind == SessionEventKind::Updated && e.tcp_state == Some(TcpState::Established))
        );
        assert!(ev[0].to_string().ends_with(" tcp_state=established"));
        out(&mut t, Proto::Tcp, (A, 40000), (S1, 443), ACK, 2_000, &mut ev).unwrap();
        // Established: not retired after 240 s of silence, nor 7439 s.
        assert_eq!(t.expire(2_000 + 7_439_999, 100, &mut ev).sessions, 0);
        // FIN one way: still established.
        let t0 = 7_500_000;
        out(&mut t, Proto::Tcp, (A, 40000), (S1, 443), FIN | ACK, t0, &mut ev).unwrap();
        assert_eq!(state_of(&t, &b), Some(TcpState::Established));
        t.inbound(&reply(&b, (S1, 443)), FIN | ACK, t0 + 10, &mut ev).unwrap();
        assert_eq!(state_of(&t, &b), Some(TcpState::Closing));
        out(&mut t, Proto::Tcp, (A, 40000), (S1, 443), ACK, t0 + 20, &mut ev).unwrap();
        assert_eq!(t.expire(t0 + 20 + 239_999, 100, &mut ev).sessions, 0);
        assert_eq!(t.expire(t0 + 20 + 240_000, 100, &mut ev).sessions, 1);
        assert_eq!(t.mappings(), 0);
    }

    #[test]
    fn tcp_rst_and_reuse() {
        let mut t = table(small_config(1));
        let mut ev = Vec::new();
        let b = out(&mut t, Proto::Tcp, (A, 40000), (S1, 443), SYN, 0, &mut ev).unwrap();
        t.inbound(&reply(&b, (S1, 443)), SYN | ACK, 0, &mut ev).unwrap();
        assert_eq!(state_of(&t, &b), Some(TcpState::Established));
        t.inbound(&reply(&b, (S1, 443)), RST, 10, &mut ev).unwrap();
        assert_eq!(state_of(&t, &b), Some(TcpState::Closing));
        // A new connection on the same 5-tuple starts over.
        out(&mut t, Proto::Tcp, (A, 40000), (S1, 443), SYN, 20, &mut ev).unwrap();
        assert_eq!(state_of(&t, &b), Some(TcpState::Opening));
        t.inbound(&reply(&b, (S1, 443)), SYN | ACK, 30, &mut ev).unwrap();
        assert_eq!(state_of(&t, &b), Some(TcpState::Established));
        // An ACK-carrying SYN on a closing session does not reset it.
        out(&mut t, Proto::Tcp, (A, 40000), (S1, 443), RST, 40, &mut ev).unwrap();
        t.inbound(&reply(&b, (S1, 443)), SYN | ACK, 50, &mut ev).unwrap();
        assert_eq!(state_of(&t, &b), Some(TcpState::Closing));
        // RST as the very first packet.
        let c = out(&mut t, Proto::Tcp, (A, 40001), (S1, 443), RST, 60, &mut ev).unwrap();
        assert_eq!(state_of(&t, &c), Some(TcpState::Closing));
    }

    #[test]
    fn icmp_query_ids() {
        let mut t = table(small_config(1));
        let mut ev = Vec::new();
        // Echo request id 7: key sport = dport = 7.
        let b = out(&mut t, Proto::Icmp, (A, 7), (S1, 7), 0, 0, &mut ev).unwrap();
        assert_eq!(b.remote_port, 0);
        assert!(b.public_port >= 1024);
        // Echo reply: sport = dport = public id.
        let back = t.inbound(&reply(&b, (S1, 0)), 0, 1, &mut ev).unwrap();
        assert_eq!(back.session, b.session);
        assert_eq!(t.session_count(), 1);
        assert_eq!(t.expire(60_000, 10, &mut ev).sessions, 0);
        assert_eq!(t.expire(60_001, 10, &mut ev).sessions, 1);
    }

    #[test]
    fn hairpinning() {
        for filtering in [Filtering::EndpointIndependent, Filtering::AddressDependent] {
            let mut t = table(NatConfig { filtering, ..small_config(4) });
            let mut ev = Vec::new();
            // B listens: it has talked to a server, so it has a mapping.
            let b = out(&mut t, Proto::Udp, (B, 6000), (S1, 3478), 0, 0, &mut ev).unwrap();
            // A sends to B's public endpoint: outbound first...
            assert!(t.is_public(b.public_addr));
            let a = out(&mut t, Proto::Udp, (A, 5000), (b.public_addr, b.public_port), 0, 1, &mut ev).unwrap();
            // ...then inbound, from A's public endpoint.
            let hairpin = key(Proto::Udp, a.public_addr, a.public_port, b.public_addr, b.public_port);
            let result = t.inbound(&hairpin, 0, 1, &mut ev);
            if filtering == Filtering::AddressDependent {
                assert_eq!(result, Err(NatError::Filtered), "B never sent to A's public address");
                // Once B has sent to A's public endpoint (hairpinned too), it passes.
                let b_to_a = out(&mut t, Proto::Udp, (B, 6000), (a.public_addr, a.public_port), 0, 2, &mut ev).unwrap();
                assert_eq!((b_to_a.public_addr, b_to_a.public_port), (b.public_addr, b.public_port));
                let into_a = t
                    .inbound(
                        &key(Proto::Udp, b.public_addr, b.public_port, a.public_addr, a.public_port),
                        0,
                        2,
                        &mut ev,
                    )
                    .unwrap();
                assert_eq!((into_a.inside_addr, into_a.inside_port), (A, 5000));
                assert!(t.inbound(&hairpin, 0, 3, &mut ev).is_ok());
            } else {
                let to_b = result.unwrap();
                assert_eq!((to_b.inside_addr, to_b.inside_port), (B, 6000));
                assert_eq!(
                    (to_b.remote_addr, to_b.remote_port),
                    (a.public_addr, a.public_port),
                    "B sees A's public endpoint"
                );
            }
        }
    }

    #[test]
    fn icmp_error_lookups_create_and_refresh_nothing() {
        let mut t = table(NatConfig { filtering: Filtering::AddressDependent, ..small_config(1) });
        let mut ev = Vec::new();
        let b = out(&mut t, Proto::Udp, (A, 5000), (S1, 53), 0, 0, &mut ev).unwrap();
        let events = ev.len();
        // From outside: port unreachable from S1 (key: the quoted datagram, reversed).
        let error_key = key(Proto::Udp, S1, 53, b.public_addr, b.public_port);
        let found = t.lookup_inbound(&error_key).unwrap();
        assert_eq!(found, b);
        // About a datagram to S1:99 (no session): the address filter allows it.
        let other_port = t.lookup_inbound(&key(Proto::Udp, S1, 99, b.public_addr, b.public_port)).unwrap();
        assert_eq!(other_port.session, None);
        assert_eq!(t.lookup_inbound(&key(Proto::Udp, S3, 53, b.public_addr, b.public_port)), Err(NatError::Filtered));
        assert_eq!(t.lookup_inbound(&key(Proto::Udp, S1, 53, b.public_addr, 1)), Err(NatError::NoMapping));
        // From inside: A reports an error about a packet from S1:53.
        assert_eq!(t.lookup_outbound(&key(Proto::Udp, A, 5000, S1, 53)), Some(b));
        assert_eq!(t.lookup_outbound(&key(Proto::Udp, B, 5000, S1, 53)), None);
        assert_eq!(ev.len(), events);
        assert_eq!(t.session_count(), 1);
        // Not refreshed: still expires at 300 s.
        assert_eq!(t.expire(300_000, 10, &mut ev).sessions, 1);
    }

    #[test]
    fn touch_refreshes_by_flow_key_and_gone_sessions_are_reported() {
        let mut t = table(small_config(1));
        let mut ev = Vec::new();
        let b = out(&mut t, Proto::Tcp, (A, 40000), (S1, 443), SYN, 0, &mut ev).unwrap();
        let outward = key(Proto::Tcp, A, 40000, S1, 443);
        let inward = reply(&b, (S1, 443));
        assert!(t.touch(Direction::Inbound, &inward, SYN | ACK, 100_000, &mut ev));
        assert_eq!(state_of(&t, &b), Some(TcpState::Established));
        assert_eq!(t.expire(240_000, 10, &mut ev).sessions, 0);
        assert!(t.touch(Direction::Outbound, &outward, RST, 300_000, &mut ev));
        assert_eq!(t.binding_of(Direction::Outbound, &outward).map(|x| x.public_port), Some(b.public_port));
        assert_eq!(t.expire(540_000, 10, &mut ev).sessions, 1);
        assert!(!t.touch(Direction::Outbound, &outward, 0, 540_001, &mut ev));
        assert!(!t.touch(Direction::Inbound, &inward, 0, 540_001, &mut ev));
        // Another flow of the same subscriber is not confused with it.
        let c = out(&mut t, Proto::Udp, (A, 40000), (S1, 443), 0, 540_002, &mut ev).unwrap();
        assert!(!t.touch(Direction::Outbound, &outward, 0, 540_003, &mut ev), "TCP, not UDP");
        assert!(t.touch(Direction::Outbound, &key(Proto::Udp, A, 40000, S1, 443), 0, 540_003, &mut ev));
        assert!(t.touch(Direction::Inbound, &reply(&c, (S1, 443)), 0, 540_003, &mut ev));
    }

    #[test]
    fn expire_is_bounded_and_oldest_first() {
        let mut t = table(small_config(2));
        let mut ev = Vec::new();
        for i in 0..10u16 {
            out(&mut t, Proto::Udp, (A, 2000 + i), (S1, 53), 0, u64::from(i), &mut ev).unwrap();
        }
        ev.clear();
        assert_eq!(t.expire(1_000_000, 3, &mut ev).sessions, 3);
        assert_eq!(t.session_count(), 7);
        let closed: Vec<u16> = ev
            .iter()
            .filter_map(|e| match e {
                NatEvent::Session(s) if s.kind == SessionEventKind::Closed => Some(s.inside_port),
                _ => None,
            })
            .collect();
        assert_eq!(closed, [2000, 2001, 2002]);
        assert_eq!(t.expire(1_000_000, 3, &mut ev).sessions, 3);
        assert_eq!(t.expire(1_000_000, 3, &mut ev).sessions, 3);
        assert_eq!(t.expire(1_000_000, 3, &mut ev).sessions, 1);
        assert_eq!(t.expire(1_000_000, 3, &mut ev).sessions, 0);
        // Across classes, the earliest deadline goes first: an ICMP session
        // (60 s) made after a UDP one (300 s) is retired first.
        out(&mut t, Proto::Udp, (A, 1), (S1, 1), 0, 2_000_000, &mut ev).unwrap();
        out(&mut t, Proto::Icmp, (A, 2), (S1, 2), 0, 2_000_001, &mut ev).unwrap();
        ev.clear();
        assert_eq!(t.expire(3_000_000, 1, &mut ev).sessions, 1);
        assert!(matches!(ev[0], NatEvent::Session(e) if e.proto == Proto::Icmp));
    }

    #[test]
    fn full_tables_refuse_without_evicting() {
        let config = NatConfig { mappings_max: 2, sessions_max: 3, ..small_config(1) };
        let mut t = table(config);
        let mut ev = Vec::new();
        let b1 = out(&mut t, Proto::Udp, (A, 1), (S1, 53), 0, 0, &mut ev).unwrap();
        out(&mut t, Proto::Udp, (A, 2), (S1, 53), 0, 0, &mut ev).unwrap();
        assert_eq!(out(&mut t, Proto::Udp, (A, 3), (S1, 53), 0, 0, &mut ev), Err(NatError::MappingsFull));
        assert_eq!(t.counters().mappings_full, 1);
        // One session left: a new remote for b1 takes it, then nothing more.
        out(&mut t, Proto::Udp, (A, 1), (S2, 53), 0, 0, &mut ev).unwrap();
        assert_eq!(out(&mut t, Proto::Udp, (A, 1), (S3, 53), 0, 0, &mut ev), Err(NatError::SessionsFull));
        assert_eq!(t.inbound(&reply(&b1, (S3, 1)), 0, 0, &mut ev), Err(NatError::SessionsFull));
        assert_eq!(t.counters().sessions_full, 2);
        // Everything live still works.
        assert!(t.inbound(&reply(&b1, (S1, 53)), 0, 1, &mut ev).is_ok());
        assert_eq!((t.mappings(), t.session_count()), (2, 3));

        // Allocation errors leave no half-made mapping behind.
        let config = NatConfig { blocks_per_subscriber_max: 1, ..small_config(1) };
        let mut t = table(config);
        let mut ev = Vec::new();
        for port in 0..64 {
            out(&mut t, Proto::Tcp, (A, 3000 + port), (S1, 80), SYN, 0, &mut ev).unwrap();
        }
        let events = ev.len();
        assert_eq!(out(&mut t, Proto::Tcp, (A, 9999), (S1, 80), SYN, 0, &mut ev), Err(NatError::SubscriberLimit));
        assert_eq!(ev.len(), events);
        assert_eq!(t.mappings(), 64);
        assert_eq!(t.alloc().counters().subscriber_limit, 1);
        // Another subscriber is not hurt.
        assert!(out(&mut t, Proto::Tcp, (B, 9999), (S1, 80), SYN, 0, &mut ev).is_ok());
    }

    #[test]
    fn listing_filters() {
        let mut t = table(small_config(2));
        let mut ev = Vec::new();
        out(&mut t, Proto::Udp, (A, 1), (S1, 53), 0, 0, &mut ev).unwrap();
        out(&mut t, Proto::Tcp, (A, 2), (S2, 80), SYN, 0, &mut ev).unwrap();
        let b = out(&mut t, Proto::Udp, (B, 3), (S1, 53), 0, 0, &mut ev).unwrap();
        let count = |f: SessionFilter| t.sessions(&f).count();
        assert_eq!(count(SessionFilter::default()), 3);
        assert_eq!(count(SessionFilter { proto: Some(Proto::Udp), ..Default::default() }), 2);
        assert_eq!(count(SessionFilter { inside_addr: Some(A), ..Default::default() }), 2);
        assert_eq!(count(SessionFilter { remote_addr: Some(S1), inside_addr: Some(B), ..Default::default() }), 1);
        assert!(count(SessionFilter { public_addr: Some(b.public_addr), ..Default::default() }) >= 1);
        let tcp = t.sessions(&SessionFilter { proto: Some(Proto::Tcp), ..Default::default() }).next().unwrap();
        assert_eq!(tcp.tcp_state, Some(TcpState::Opening));
    }

    #[test]
    fn memory_per_session_is_reported() {
        // The shape of a large deployment, scaled down: 4 sessions per
        // mapping, 8 mappings per block.
        let config = NatConfig {
            mappings_max: 1 << 14,
            sessions_max: 1 << 16,
            blocks_max: 1 << 11,
            subscribers_max: 1 << 10,
            port_quarantine_max: 1 << 14,
            ports_per_block: 64,
            ..small_config(64)
        };
        let t = table(config);
        let per_session = t.memory_bytes() / (1 << 16);
        assert!((40..=200).contains(&per_session), "{per_session} bytes per session");
        assert!(t.alloc().memory_bytes() < t.memory_bytes());
    }

    // ---- property test: the event stream is a faithful replica ----

    #[derive(Debug, Clone)]
    enum Op {
        Out { proto: usize, inside: u8, port: u16, remote: u8, rport: u16, flags: u8 },
        In { pick: usize, remote: u8, rport: u16, flags: u8 },
        Advance { ms: u64 },
        Expire { max: usize },
    }

    fn arb_flags() -> impl Strategy<Value = u8> {
        prop_oneof![Just(SYN), Just(SYN | ACK), Just(ACK), Just(FIN | ACK), Just(RST), Just(0)]
    }

    fn arb_op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0usize..3, 0u8..4, 0u16..6, 0u8..3, 0u16..3, arb_flags())
                .prop_map(|(proto, inside, port, remote, rport, flags)| Op::Out { proto, inside, port, remote, rport, flags }),
            3 => (any::<usize>(), 0u8..4, 0u16..3, arb_flags()).prop_map(|(pick, remote, rport, flags)| Op::In { pick, remote, rport, flags }),
            2 => prop_oneof![4 => 0u64..5_000, 4 => 0u64..400_000, 1 => 0u64..8_000_000].prop_map(|ms| Op::Advance { ms }),
            1 => (0usize..6).prop_map(|max| Op::Expire { max }),
        ]
    }

    /// Session identity in the replica: (proto, inside, inside port, remote, remote port).
    type Tuple = (Proto, Ipv4Addr, u16, Ipv4Addr, u16);

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// Random traffic, time and expiry: a replica built only from the
        /// event stream matches the table's own listing after every step;
        /// a session is retired only after being idle for its timeout; an
        /// unbounded expire leaves no idle session behind; a bounded one
        /// retires at most `max`.
        #[test]
        fn event_stream_replicates_state(
            ops in proptest::collection::vec(arb_op(), 1..300),
            filtering in prop_oneof![Just(Filtering::EndpointIndependent), Just(Filtering::AddressDependent), Just(Filtering::AddressAndPortDependent)],
        ) {
            let config = NatConfig {
                mappings_max: 16,
                sessions_max: 20,
                blocks_per_subscriber_max: 1,
                filtering,
                ..small_config(2)
            };
            let timeouts = [config.udp_timeout_ms, config.tcp_established_timeout_ms, config.tcp_transitory_timeout_ms, config.icmp_timeout_ms];
            let mut t = NatTable::new(&config);
            let mut ev: Vec<NatEvent> = Vec::new();
            let mut now = 0u64;
            // Replica, from events only.
            let mut mappings: HashMap<(Proto, Ipv4Addr, u16), (Ipv4Addr, u16)> = HashMap::new();
            let mut sessions: HashMap<Tuple, Option<TcpState>> = HashMap::new();
            let mut blocks: HashSet<(Ipv4Addr, u16)> = HashSet::new();
            // What the test saw: last activity per session.
            let mut last_seen: HashMap<Tuple, u64> = HashMap::new();
            let mut bindings: Vec<Binding> = Vec::new();
            let inside = |i: u8| Ipv4Addr::new(100, 64, 0, i);
            let remote = |i: u8| Ipv4Addr::new(203, 0, 113, i);
            for op in ops {
                let op_kind = match op { Op::Expire { max } => Some(if max == 5 { usize::MAX } else { max }), _ => None };
                let mut retire_bound = usize::MAX;
                let mut result = None;
                match op {
                    Op::Out { proto, inside: i, port, remote: r, rport, flags } => {
                        let proto = Proto::ALL[proto];
                        let k = key(proto, inside(i), 1000 + port, remote(r), 50 + rport);
                        result = Some(t.outbound(&k, flags, now, &mut ev));
                    }
                    Op::In { pick, remote: r, rport, flags } => {
                        if !bindings.is_empty() {
                            let b = bindings[pick % bindings.len()];
                            result = Some(t.inbound(&reply(&b, (remote(r), 50 + rport)), flags, now, &mut ev));
                        }
                    }
                    Op::Advance { ms } => now += ms,
                    Op::Expire { max } => {
                        // max 5 stands for "no bound".
                        retire_bound = if max == 5 { usize::MAX } else { max };
                        let done = t.expire(now, retire_bound, &mut ev);
                        prop_assert!(done.sessions <= retire_bound);
                    }
                }
                let mut retired = 0;
                for event in ev.drain(..) {
                    match event {
                        NatEvent::Block(e) => {
                            let block = (e.public_addr, e.port_start);
                            match e.kind {
                                BlockEventKind::Allocated => prop_assert!(blocks.insert(block)),
                                BlockEventKind::Released => prop_assert!(blocks.remove(&block)),
                            }
                        }
                        NatEvent::Mapping(e) => {
                            let k = (e.proto, e.inside_addr, e.inside_port);
                            prop_assert!(blocks.contains(&(e.public_addr, 1024 + (e.public_port - 1024) / 64 * 64)));
                            match e.kind {
                                MappingEventKind::Created => prop_assert!(mappings.insert(k, (e.public_addr, e.public_port)).is_none()),
                                MappingEventKind::Retired => {
                                    prop_assert_eq!(mappings.remove(&k), Some((e.public_addr, e.public_port)));
                                    prop_assert!(!sessions.keys().any(|s| (s.0, s.1, s.2) == k), "mapping retired with sessions");
                                }
                            }
                        }
                        NatEvent::Session(e) => {
                            let s = (e.proto, e.inside_addr, e.inside_port, e.remote_addr, e.remote_port);
                            prop_assert_eq!(mappings.get(&(e.proto, e.inside_addr, e.inside_port)), Some(&(e.public_addr, e.public_port)));
                            match e.kind {
                                SessionEventKind::Opened => prop_assert!(sessions.insert(s, e.tcp_state).is_none()),
                                SessionEventKind::Updated | SessionEventKind::Refreshed => prop_assert!(sessions.insert(s, e.tcp_state).is_some()),
                                SessionEventKind::Closed => {
                                    let state = sessions.remove(&s);
                                    prop_assert!(state.is_some());
                                    let class = class_index(e.proto, state.unwrap());
                                    let idle = now - last_seen[&s];
                                    prop_assert!(idle >= timeouts[class], "retired after {} ms idle", idle);
                                    retired += 1;
                                }
                            }
                        }
                    }
                }
                prop_assert!(retired <= retire_bound);
                if let Some(Ok(b)) = result {
                    let s = (b.proto, b.inside_addr, b.inside_port, b.remote_addr, b.remote_port);
                    last_seen.insert(s, now);
                    bindings.push(b);
                } else if let Some(Err(e)) = result {
                    prop_assert!(matches!(e, NatError::NoMapping | NatError::Filtered | NatError::MappingsFull
                        | NatError::SessionsFull | NatError::SubscriberLimit | NatError::PoolExhausted), "{:?}", e);
                }
                // The replica equals the table.
                let listed: HashMap<Tuple, Option<TcpState>> = t
                    .sessions(&SessionFilter::default())
                    .map(|s| ((s.binding.proto, s.binding.inside_addr, s.binding.inside_port, s.binding.remote_addr, s.binding.remote_port), s.tcp_state))
                    .collect();
                prop_assert_eq!(&listed, &sessions);
                prop_assert_eq!(t.mappings(), mappings.len());
                // An unbounded expire leaves nothing idle past its timeout.
                if matches!(op_kind, Some(usize::MAX)) {
                    for info in t.sessions(&SessionFilter::default()) {
                        prop_assert!(info.expires_ms > now, "idle session survived an unbounded expire");
                    }
                }
            }
        }
    }

    fn class_index(proto: Proto, state: Option<TcpState>) -> usize {
        match (proto, state) {
            (Proto::Udp, _) => 0,
            (Proto::Icmp, _) => 3,
            (Proto::Tcp, Some(TcpState::Established)) => 1,
            (Proto::Tcp, _) => 2,
        }
    }
}
