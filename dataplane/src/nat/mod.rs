//! Carrier-grade NAT44 (capability N of `DESIGN.md`).
//!
//! # Architecture
//!
//! ```text
//!   inside ─► worker w: flow cache hit? ── yes ─► translate in place (translate.rs) ─► L3 route lookup
//!               │ miss (packet held)                                   ▲
//!               ▼                                                      │ answer + held packet
//!         SPSC ring w→M ─────► mapping core M ──── SPSC ring M→w ──────┘
//!                              NatTable (session.rs)
//!                                ├ mappings: EIM key → public addr:port
//!                                ├ sessions: per remote endpoint, TCP state, timeouts
//!                                └ PortAllocator (alloc.rs): paired pool, port blocks,
//!                                  parity, preservation, 120 s quarantine
//!                              every change ─► NatEvent stream ─► log lines (blocks)
//!                                                              └► standby copy (later: HA)
//!   outside ─► worker v: flow cache hit? ── yes ─► translate ─► route
//!               └ miss: state request to M over its ring (same path as above)
//! ```
//!
//! * **Fast path** (each worker, [`fast`], [`cache`], `L3::nat44`): a per-worker flow cache (no locks, no
//!   shared writes) keyed by the packet's 5-tuple in each direction, giving the
//!   rewrite to apply; [`translate`] does the rewrite on the packet's bytes with
//!   RFC 1624 incremental checksums. A miss is not dropped: the packet is held
//!   and a request goes to the mapping core over the worker's SPSC ring.
//! * **Slow path** (the mapping core, [`mapper`], lcore loop `crate::natcore`): one [`session::NatTable`]
//!   per mapping server. It creates mappings (allocating public address/port
//!   pairs by port block per subscriber, [`alloc`]), creates and refreshes
//!   sessions, applies the filtering behaviour, and retires sessions and
//!   mappings on timeouts and TCP state ([`session::NatTable::expire`], bounded
//!   work per call). It translates the held packet itself and sends it back
//!   with the session's cache entries in its headroom ([`msg`]); the worker
//!   installs them and routes the packet.
//! * **Return traffic** arriving on a worker that has no cache entry for it is
//!   resolved the same way (a state request; [`session::NatTable::inbound`]),
//!   so no packet of a known session is dropped for want of a cache entry.
//!   (Hand-off by public port range, VPP style, is not done: blocks are
//!   aligned, so `(port - 1024) / ports_per_block` names a block a worker
//!   could own, but outbound mappings would then have to be created on the
//!   owning worker.)
//! * **Events**: every change of mapping state is a [`session::NatEvent`]
//!   pushed to a caller-provided [`Sink`], in causal order (block allocated →
//!   mapping created → session opened; session closed → mapping retired →
//!   block released). Block events are the RFC 6888 log records; the whole
//!   stream is what a standby mapping server will replay (high availability is
//!   a later issue).
//!
//! # How the pipeline uses it (`L3::nat44`, `Mapper::request`)
//!
//! ```text
//!  flow = translate::parse_flow(ip)?            // Err(e): drop, count nat_<e.label()>
//!  from inside (outbound):
//!    b = cache[flow.key] or ask M: NatTable::outbound(&flow.key, flow.tcp_flags, now)
//!        (ICMP error: NatTable::lookup_outbound, never creates or refreshes)
//!    icmp_error ? translate_icmp_error_outbound(ip, b.public_addr, b.public_port)
//!               : rewrite_src(ip, b.public_addr, b.public_port)
//!    if NatTable::is_public(dst): hairpin, continue as inbound with the new key
//!  from outside (inbound):
//!    b = cache[flow.key] or ask M: NatTable::inbound(&flow.key, flow.tcp_flags, now)
//!        (ICMP error: NatTable::lookup_inbound)
//!    icmp_error ? translate_icmp_error_inbound(ip, b.inside_addr, b.inside_port)
//!               : rewrite_dst(ip, b.inside_addr, b.inside_port)
//!  then the L3 route lookup, TTL decrement, forward
//! ```
//!
//! The worker cache is keyed by session (5-tuple per direction), not by
//! mapping: sessions carry the timeouts and the filtering, so a new remote
//! endpoint costs one round trip to the mapping core. A hit records the time
//! (and TCP flags) locally; workers report them in batches
//! ([`session::NatTable::touch`]) and stop trusting an entry that has been
//! idle for half the shortest timeout ([`fast`]).
//!
//! # Modules
//!
//! [`translate`] (rewrites on bytes), [`alloc`] (port blocks), [`session`]
//! (mappings, sessions, timeouts, events), `table.rs` (fixed-capacity hash
//! map), [`cache`] (the worker's cache), [`msg`] (what travels on the rings),
//! [`mapper`] (the mapping server), [`fast`] (the per-worker state and the
//! port roles). All pure: tested without DPDK. See `docs/nat.md`.
//!
//! # Limits
//!
//! Every capacity is in [`NatConfig`] and allocated when the tables are built;
//! nothing on the per-packet path allocates. A full table is an error the
//! caller counts and drops on; live mappings are never evicted.

pub mod alloc;
pub mod cache;
pub mod cluster;
pub mod fast;
pub mod frag;
pub mod mapper;
pub mod msg;
pub mod session;
mod table;
pub mod translate;

use std::net::Ipv4Addr;

pub use alloc::{BlockEvent, BlockEventKind, PortAllocator, PortLease};
pub use session::{Binding, Direction, Filtering, MappingEvent, NatEvent, NatTable, SessionEvent, SessionId, TcpState};
pub use translate::{Flow, FlowKey, Proto};

/// Lowest port (and ICMP identifier) handed out on a public address: the
/// well-known ports 0..=1023 are never used (RFC 4787 REQ-3 b: an inside
/// port in 1024..=65535 keeps to that range; a CGN has no business handing
/// out the system ports at all).
pub const PORT_MIN: u16 = 1024;

/// Number of ports in `PORT_MIN..=65535`.
pub const PORTS_USABLE: u32 = 65536 - PORT_MIN as u32;

/// Why a packet could not be translated, or a mapping could not be created.
///
/// Every variant is a named drop reason for the caller to count
/// ([`NatError::label`] is the metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum NatError {
    /// Not a valid IPv4 packet, or too short for the transport header the
    /// translation must read or write.
    #[error("packet truncated or malformed for NAT")]
    Malformed,
    /// A non-first fragment (no transport header, so no ports: the pipeline
    /// translates it by virtual reassembly, [`frag`]), or an ICMP error that
    /// is itself fragmented or quotes a non-first fragment (dropped).
    #[error("IPv4 fragment without transport header")]
    Fragment,
    /// Neither TCP, UDP nor ICMP (also for the packet quoted in an ICMP error).
    #[error("transport protocol not handled by NAT")]
    UnsupportedProtocol,
    /// An ICMP message that is neither an echo request/reply nor an error
    /// NAT translates (destination unreachable, time exceeded, parameter
    /// problem), or an error quoting an ICMP message other than an echo.
    #[error("ICMP message not handled by NAT")]
    UnsupportedIcmp,
    /// An ICMP error whose ICMP checksum is wrong (RFC 5508 REQ-3: drop it
    /// silently). Other checksums are not verified: incremental updates keep
    /// a wrong checksum wrong, so the receiver still drops the packet.
    #[error("bad ICMP error checksum")]
    BadChecksum,
    /// The operation does not apply to this kind of packet (e.g.
    /// [`translate::rewrite_src`] on an ICMP error, or the reverse).
    #[error("wrong translation for this packet kind")]
    WrongKind,
    /// No port block is free on any pool address (or, with paired pooling,
    /// on the subscriber's address).
    #[error("public address pool exhausted")]
    PoolExhausted,
    /// The subscriber's blocks are full and it holds `blocks_per_subscriber_max`.
    #[error("per-subscriber port block limit reached")]
    SubscriberLimit,
    /// `subscribers_max` subscribers hold blocks.
    #[error("subscriber table full")]
    SubscribersFull,
    /// `blocks_max` block records are in use (allocated or in quarantine).
    #[error("port block table full")]
    BlocksFull,
    /// `mappings_max` mappings exist.
    #[error("mapping table full")]
    MappingsFull,
    /// `sessions_max` sessions exist.
    #[error("session table full")]
    SessionsFull,
    /// An inbound packet to a public address/port with no mapping.
    #[error("no mapping for inbound packet")]
    NoMapping,
    /// An inbound packet refused by the filtering behaviour (address-dependent
    /// or address-and-port-dependent filtering).
    #[error("inbound packet filtered")]
    Filtered,
    /// A new mapping was needed but this mapping server may not allocate
    /// now: it does not hold a confirmed epoch of its pool shard, or it is in
    /// the hold-down after a takeover, or it is handing the shard over
    /// (docs/nat-ha.md, the fencing rule).
    #[error("mapping server not allocating")]
    NotAllocating,
}

impl NatError {
    /// The drop reason a packet refused for this error is counted under.
    pub fn drop_reason(self) -> crate::stats::DropReason {
        use crate::stats::DropReason as D;
        match self {
            NatError::Malformed => D::NatMalformed,
            NatError::Fragment => D::NatFragment,
            NatError::UnsupportedProtocol => D::NatUnsupportedProtocol,
            NatError::UnsupportedIcmp => D::NatUnsupportedIcmp,
            NatError::BadChecksum => D::NatBadChecksum,
            NatError::WrongKind => D::NatWrongKind,
            NatError::PoolExhausted => D::NatPoolExhausted,
            NatError::SubscriberLimit => D::NatSubscriberLimit,
            NatError::SubscribersFull => D::NatSubscribersFull,
            NatError::BlocksFull => D::NatBlocksFull,
            NatError::MappingsFull => D::NatMappingsFull,
            NatError::SessionsFull => D::NatSessionsFull,
            NatError::NoMapping => D::NatNoMapping,
            NatError::Filtered => D::NatFiltered,
            NatError::NotAllocating => D::NatNotAllocating,
        }
    }

    /// Every variant, in declaration order.
    pub const ALL: [NatError; 15] = [
        NatError::Malformed,
        NatError::Fragment,
        NatError::UnsupportedProtocol,
        NatError::UnsupportedIcmp,
        NatError::BadChecksum,
        NatError::WrongKind,
        NatError::PoolExhausted,
        NatError::SubscriberLimit,
        NatError::SubscribersFull,
        NatError::BlocksFull,
        NatError::MappingsFull,
        NatError::SessionsFull,
        NatError::NoMapping,
        NatError::Filtered,
        NatError::NotAllocating,
    ];

    /// Stable metric label (`nat_<label>` drop reason).
    pub fn label(self) -> &'static str {
        match self {
            NatError::Malformed => "malformed",
            NatError::Fragment => "fragment",
            NatError::UnsupportedProtocol => "unsupported_protocol",
            NatError::UnsupportedIcmp => "unsupported_icmp",
            NatError::BadChecksum => "bad_checksum",
            NatError::WrongKind => "wrong_kind",
            NatError::PoolExhausted => "pool_exhausted",
            NatError::SubscriberLimit => "subscriber_limit",
            NatError::SubscribersFull => "subscribers_full",
            NatError::BlocksFull => "blocks_full",
            NatError::MappingsFull => "mappings_full",
            NatError::SessionsFull => "sessions_full",
            NatError::NoMapping => "no_mapping",
            NatError::Filtered => "filtered",
            NatError::NotAllocating => "not_allocating",
        }
    }
}

/// A configuration value NAT refuses at start-up; names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("nat.{field}: {reason}")]
pub struct NatConfigError {
    /// The [`NatConfig`] field at fault.
    pub field: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

fn config_error(field: &'static str, reason: impl Into<String>) -> NatConfigError {
    NatConfigError { field, reason: reason.into() }
}

/// NAT44 configuration. The config file's `nat:` section builds it
/// (`appliance/src/config/nat.rs`); [`NatConfig::validate`] refuses bad
/// values, naming the field; capacities are allocated from it at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatConfig {
    /// Public IPv4 addresses (the pool). 1..=65536 distinct addresses; no
    /// default (empty is refused). Order does not matter.
    pub pool: Vec<Ipv4Addr>,
    /// Ports per port block: a power of two in 64..=4096; default 512.
    /// An address has `64512 / ports_per_block` blocks starting at port 1024
    /// (for 2048 and 4096 the last, partial range of ports is unused).
    pub ports_per_block: u16,
    /// Blocks one subscriber may hold at once (RFC 6888 REQ-4 limit):
    /// 1..=blocks per address; default 4.
    pub blocks_per_subscriber_max: u16,
    /// Subscribers (inside addresses) holding blocks at once: 1..=16 777 216;
    /// default 65 536.
    pub subscribers_max: u32,
    /// Block records (allocated or in quarantine): 1..=16 777 216; default
    /// 131 072. Capped at the pool's number of blocks.
    pub blocks_max: u32,
    /// Entries of the released-port quarantine queue: 1..=16 777 216; default
    /// 262 144. When it is full a released port stays unusable until its
    /// block is released (counted, never reused early).
    pub port_quarantine_max: u32,
    /// A released port, or block, is not handed out again for this long
    /// (RFC 6888 REQ-8: at least 120 s); 0..=3 600 000 ms, default 120 000.
    pub reuse_delay_ms: u64,
    /// Mappings (endpoint-independent: proto, inside address and port):
    /// 1..=16 777 216; default 262 144.
    pub mappings_max: u32,
    /// Sessions (a mapping and one remote endpoint): ≥ `mappings_max`,
    /// ≤ 16 777 216; default 1 048 576.
    pub sessions_max: u32,
    /// Inbound filtering behaviour (RFC 4787 §5); default endpoint-independent.
    pub filtering: Filtering,
    /// UDP idle timeout (RFC 4787 REQ-5: at least 120 s, 300 s recommended);
    /// 1 000..=86 400 000 ms, default 300 000.
    pub udp_timeout_ms: u64,
    /// TCP established idle timeout (RFC 5382 REQ-5: at least 2 h 4 min);
    /// 1 000..=86 400 000 ms, default 7 440 000.
    pub tcp_established_timeout_ms: u64,
    /// TCP transitory idle timeout: not yet established, or closing (FIN both
    /// ways or RST; RFC 5382 REQ-5, RFC 7857 §2.1: at least 4 min);
    /// 1 000..=86 400 000 ms, default 240 000.
    pub tcp_transitory_timeout_ms: u64,
    /// ICMP query idle timeout (RFC 5508 REQ-2: at least 60 s);
    /// 1 000..=86 400 000 ms, default 60 000.
    pub icmp_timeout_ms: u64,
    /// Seed of the port randomisation PRNG (xorshift). Default a fixed
    /// constant; production should derive it from the OS at start.
    pub random_seed: u64,
    /// Seed of the table hashes (makes bucket collisions unpredictable to a
    /// remote sender). Default a fixed constant; production: from the OS.
    pub hash_seed: u64,
}

impl Default for NatConfig {
    fn default() -> Self {
        NatConfig {
            pool: Vec::new(),
            ports_per_block: 512,
            blocks_per_subscriber_max: 4,
            subscribers_max: 65_536,
            blocks_max: 131_072,
            port_quarantine_max: 262_144,
            reuse_delay_ms: 120_000,
            mappings_max: 262_144,
            sessions_max: 1_048_576,
            filtering: Filtering::EndpointIndependent,
            udp_timeout_ms: 300_000,
            tcp_established_timeout_ms: 7_440_000,
            tcp_transitory_timeout_ms: 240_000,
            icmp_timeout_ms: 60_000,
            random_seed: 0x9e37_79b9_7f4a_7c15,
            hash_seed: 0x243f_6a88_85a3_08d3,
        }
    }
}

/// Upper bound for the table capacities (indices are `u32`, with room).
pub const CAPACITY_MAX: u32 = 1 << 24;

impl NatConfig {
    /// Blocks on one public address.
    pub fn blocks_per_addr(&self) -> u32 {
        PORTS_USABLE / u32::from(self.ports_per_block.max(1))
    }

    /// Checks every field against its documented limits.
    pub fn validate(&self) -> Result<(), NatConfigError> {
        if self.pool.is_empty() {
            return Err(config_error("pool", "at least one public address is required"));
        }
        if self.pool.len() > 65_536 {
            return Err(config_error("pool", format!("{} addresses, at most 65536", self.pool.len())));
        }
        let mut sorted: Vec<u32> = self.pool.iter().map(|a| u32::from(*a)).collect();
        sorted.sort_unstable();
        if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
            return Err(config_error("pool", format!("{} is listed twice", Ipv4Addr::from(w[0]))));
        }
        let block = self.ports_per_block;
        if !block.is_power_of_two() || !(64..=4096).contains(&block) {
            return Err(config_error("ports_per_block", format!("{block}: must be a power of two in 64..=4096")));
        }
        let per_addr = self.blocks_per_addr();
        let limit = u32::from(self.blocks_per_subscriber_max);
        if limit == 0 || limit > per_addr {
            return Err(config_error(
                "blocks_per_subscriber_max",
                format!("{limit}: must be in 1..={per_addr} (blocks on one address)"),
            ));
        }
        for (field, value) in [
            ("subscribers_max", self.subscribers_max),
            ("blocks_max", self.blocks_max),
            ("port_quarantine_max", self.port_quarantine_max),
            ("mappings_max", self.mappings_max),
            ("sessions_max", self.sessions_max),
        ] {
            if value == 0 || value > CAPACITY_MAX {
                return Err(config_error(field, format!("{value}: must be in 1..={CAPACITY_MAX}")));
            }
        }
        if self.sessions_max < self.mappings_max {
            return Err(config_error(
                "sessions_max",
                format!(
                    "{} is below mappings_max ({}): every mapping has a session",
                    self.sessions_max, self.mappings_max
                ),
            ));
        }
        if self.reuse_delay_ms > 3_600_000 {
            return Err(config_error("reuse_delay_ms", format!("{}: at most 3600000", self.reuse_delay_ms)));
        }
        for (field, value) in [
            ("udp_timeout_ms", self.udp_timeout_ms),
            ("tcp_established_timeout_ms", self.tcp_established_timeout_ms),
            ("tcp_transitory_timeout_ms", self.tcp_transitory_timeout_ms),
            ("icmp_timeout_ms", self.icmp_timeout_ms),
        ] {
            if !(1_000..=86_400_000).contains(&value) {
                return Err(config_error(field, format!("{value}: must be in 1000..=86400000")));
            }
        }
        Ok(())
    }
}

/// Where events go: the caller decides (a log writer, an HA stream, a `Vec`
/// in tests). The mapping core should give a bounded sink; a `Vec` grows.
pub trait Sink<E> {
    /// Takes one event.
    fn push(&mut self, event: E);
}

impl<E> Sink<E> for Vec<E> {
    fn push(&mut self, event: E) {
        Vec::push(self, event);
    }
}

/// A sink that discards every event.
#[derive(Debug, Default, Clone, Copy)]
pub struct NullSink;

impl<E> Sink<E> for NullSink {
    fn push(&mut self, _event: E) {}
}

/// A sink that calls a closure.
pub struct FnSink<F>(pub F);

impl<E, F: FnMut(E)> Sink<E> for FnSink<F> {
    fn push(&mut self, event: E) {
        (self.0)(event);
    }
}

/// splitmix64's finaliser: a cheap, well-mixing 64-bit hash step.
#[inline]
pub fn mix64(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A small valid config for tests: `pool_len` addresses from 198.51.100.1.
    pub(crate) fn small_config(pool_len: u32) -> NatConfig {
        NatConfig {
            pool: (0..pool_len).map(|i| Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 51, 100, 1)) + i)).collect(),
            ports_per_block: 64,
            blocks_per_subscriber_max: 2,
            subscribers_max: 64,
            blocks_max: 256,
            port_quarantine_max: 1024,
            mappings_max: 512,
            sessions_max: 1024,
            ..NatConfig::default()
        }
    }

    #[test]
    fn default_with_pool_is_valid() {
        let config = NatConfig { pool: vec![Ipv4Addr::new(192, 0, 2, 1)], ..NatConfig::default() };
        assert_eq!(config.validate(), Ok(()));
        assert_eq!(config.blocks_per_addr(), 126);
        assert_eq!(small_config(3).validate(), Ok(()));
    }

    #[test]
    fn validate_names_the_field() {
        let base = small_config(2);
        let field_of = |config: NatConfig| config.validate().unwrap_err().field;
        assert_eq!(field_of(NatConfig { pool: vec![], ..base.clone() }), "pool");
        let mut dup = base.clone();
        dup.pool.push(dup.pool[0]);
        assert_eq!(field_of(dup), "pool");
        for bad in [0, 32, 100, 8192] {
            assert_eq!(field_of(NatConfig { ports_per_block: bad, ..base.clone() }), "ports_per_block");
        }
        for size in [64u16, 128, 256, 512, 1024, 2048, 4096] {
            assert_eq!(
                NatConfig { ports_per_block: size, blocks_per_subscriber_max: 1, ..base.clone() }.validate(),
                Ok(())
            );
        }
        assert_eq!(NatConfig { ports_per_block: 4096, ..base.clone() }.blocks_per_addr(), 15);
        assert_eq!(field_of(NatConfig { blocks_per_subscriber_max: 0, ..base.clone() }), "blocks_per_subscriber_max");
        assert_eq!(
            field_of(NatConfig { ports_per_block: 4096, blocks_per_subscriber_max: 16, ..base.clone() }),
            "blocks_per_subscriber_max"
        );
        assert_eq!(field_of(NatConfig { subscribers_max: 0, ..base.clone() }), "subscribers_max");
        assert_eq!(field_of(NatConfig { blocks_max: CAPACITY_MAX + 1, ..base.clone() }), "blocks_max");
        assert_eq!(field_of(NatConfig { sessions_max: 10, mappings_max: 11, ..base.clone() }), "sessions_max");
        assert_eq!(field_of(NatConfig { reuse_delay_ms: 3_600_001, ..base.clone() }), "reuse_delay_ms");
        assert_eq!(field_of(NatConfig { udp_timeout_ms: 999, ..base.clone() }), "udp_timeout_ms");
        assert_eq!(field_of(NatConfig { icmp_timeout_ms: 86_400_001, ..base.clone() }), "icmp_timeout_ms");
        let message = NatConfig { ports_per_block: 100, ..base }.validate().unwrap_err().to_string();
        assert!(message.starts_with("nat.ports_per_block: 100"), "{message}");
    }

    #[test]
    fn error_labels_are_distinct() {
        let mut labels: Vec<&str> = NatError::ALL.iter().map(|e| e.label()).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), NatError::ALL.len());
        // Each error has its own drop reason, labelled nat_<label>.
        for e in NatError::ALL {
            assert_eq!(e.drop_reason().label(), format!("nat_{}", e.label()));
        }
    }

    #[test]
    fn sinks() {
        let mut v: Vec<u32> = Vec::new();
        Sink::push(&mut v, 3);
        assert_eq!(v, [3]);
        let mut total = 0;
        FnSink(|x: u32| total += x).push(5);
        assert_eq!(total, 5);
        Sink::<u32>::push(&mut NullSink, 1);
    }
}
