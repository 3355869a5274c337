//! Per-core counters.
//!
//! Every worker (and the control core) owns one counter block and is its only
//! writer. A counter is an `AtomicU64` written with a plain load + store
//! (single writer: on x86 two ordinary `mov`s, no locked instruction, no
//! shared cache line with another writer); the metrics thread reads them with
//! relaxed loads and sums across cores at scrape time. Blocks are
//! cache-aligned so two cores never write the same line.

use std::sync::atomic::{AtomicU64, Ordering};

/// A monotonically increasing counter with exactly one writer thread.
#[derive(Default, Debug)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds `n`. Must only be called by the block's owner thread.
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.store(self.0.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
    }

    #[inline]
    pub fn inc(&self) {
        self.add(1);
    }

    /// Current value (any thread).
    #[inline]
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down, with one writer.
#[derive(Default, Debug)]
pub struct Gauge(AtomicU64);

impl Gauge {
    #[inline]
    pub fn set(&self, v: u64) {
        self.0.store(v, Ordering::Relaxed);
    }

    #[inline]
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Defines a reason enum with a stable metric label per variant and an
/// array of counters indexed by it.
macro_rules! reasons {
    ($(#[$m:meta])* $name:ident, $counters:ident { $($(#[$vm:meta])* $v:ident => $label:literal,)* }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum $name { $($(#[$vm])* $v,)* }

        impl $name {
            /// Every reason, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$v,)*];
            /// Number of reasons.
            pub const COUNT: usize = Self::ALL.len();
            /// The metric label of this reason.
            pub fn label(self) -> &'static str {
                match self { $($name::$v => $label,)* }
            }
            /// Inverse of `as u8`.
            pub fn from_u8(v: u8) -> Option<$name> {
                Self::ALL.get(v as usize).copied()
            }
        }

        /// One counter per reason.
        #[derive(Debug)]
        pub struct $counters([Counter; $name::COUNT]);

        impl Default for $counters {
            fn default() -> Self {
                $counters(std::array::from_fn(|_| Counter::default()))
            }
        }

        impl $counters {
            #[inline]
            pub fn inc(&self, r: $name) { self.0[r as usize].inc(); }
            #[inline]
            pub fn add(&self, r: $name, n: u64) { self.0[r as usize].add(n); }
            pub fn get(&self, r: $name) -> u64 { self.0[r as usize].get() }
        }
    };
}

reasons!(
    /// Why a packet was dropped. Every drop has one, and each is a metric
    /// label of `appliance_drops_total`.
    DropReason, DropCounters {
        /// Shorter than an Ethernet header.
        EthTruncated => "eth_truncated",
        /// Destination MAC is neither ours, broadcast nor multicast.
        EthNotForUs => "eth_not_for_us",
        /// A unicast IP packet received in a link-layer broadcast/multicast
        /// frame: never forwarded (RFC 1812 §5.3.4).
        EthMulticastNotForwarded => "eth_multicast_not_forwarded",
        /// An EtherType the node does not handle (e.g. VLAN-tagged, LLDP).
        EthUnsupportedType => "eth_unsupported_type",
        /// Packet spread over several mbuf segments.
        MultiSegment => "multi_segment",
        /// An IPv4 or IPv6 packet longer than the receiving port's MTU that the
        /// frame does not hold: a TSO/GSO super-frame (a kernel host with
        /// segmentation offload on, read through af_packet, which also cuts it
        /// at its frame size). Remedy: an af_xdp port (the kernel then segments
        /// before the veth), or `ethtool -K <host interface> tso off gso off`.
        Superframe => "superframe",
        /// IPv4 header too short, bad version/IHL, or lengths inconsistent.
        Ipv4Malformed => "ipv4_malformed",
        /// IPv4 header checksum wrong.
        Ipv4BadChecksum => "ipv4_bad_checksum",
        /// IPv4 source is not a unicast address (broadcast, multicast, 0/8, loopback).
        Ipv4MartianSource => "ipv4_martian_source",
        /// IPv4 destination broadcast/multicast/reserved: not routed.
        Ipv4NotRouted => "ipv4_not_routed",
        /// IPv6 header too short, bad version, or payload length too big.
        Ipv6Malformed => "ipv6_malformed",
        /// IPv6 source multicast/unspecified/loopback.
        Ipv6MartianSource => "ipv6_martian_source",
        /// IPv6 link-local or multicast not for us: never forwarded.
        Ipv6NotRouted => "ipv6_not_routed",
        /// Our own address, a protocol we do not serve (TCP, unknown).
        LocalUnsupported => "local_unsupported",
        /// ICMP/ICMPv6 to us that we do not answer (echo replies, RS, RA...).
        LocalIcmpIgnored => "local_icmp_ignored",
        /// ICMP/ICMPv6 to us with a bad checksum or length.
        LocalIcmpMalformed => "local_icmp_malformed",
        /// IPv4 larger than the egress MTU without DF: the node does not fragment.
        FragmentationNeeded => "fragmentation_needed",
        /// Time to live / hop limit expired (an ICMP error was attempted).
        TtlExpired => "ttl_expired",
        /// No route to the destination (an ICMP error was attempted).
        NoRoute => "no_route",
        /// Too big for the egress MTU (an ICMP error was attempted).
        TooBig => "too_big",
        /// Local UDP port not served (an ICMP port unreachable was attempted).
        PortUnreachable => "port_unreachable",
        /// Neighbour did not answer resolution.
        NeighborFailed => "neighbor_failed",
        /// Too many packets already held waiting for resolution.
        PendingFull => "pending_full",
        /// The neighbour table has no room for a new neighbour.
        NeighborTableFull => "neighbor_table_full",
        /// Malformed or irrelevant ARP packet.
        ArpInvalid => "arp_invalid",
        /// ARP not for one of our addresses (after learning).
        ArpNotForUs => "arp_not_for_us",
        /// Malformed neighbour-discovery packet (RFC 4861 §7.1 checks).
        NdInvalid => "nd_invalid",
        /// Neighbour discovery for an address that is not ours.
        NdNotForUs => "nd_not_for_us",
        /// The worker→control ring was full.
        PuntRingFull => "punt_ring_full",
        /// The control→worker ring was full.
        InjectRingFull => "inject_ring_full",
        /// The driver did not take the packet (tx queue full).
        TxFull => "tx_full",
        /// No mbuf left to build a reply or an error.
        NoMbuf => "no_mbuf",
        /// An ICMP error was not sent: over the rate limit.
        IcmpRateLimited => "icmp_rate_limited",
        /// A packet to a local SID arrived from outside the SR domain.
        Srv6Untrusted => "srv6_untrusted",
        /// A packet re-entered the pipeline too often inside the node.
        Srv6TooDeep => "srv6_too_deep",
        /// Extension headers of a packet to a SID could not be parsed.
        Srv6BadSrh => "srv6_bad_srh",
        /// An SRH or upper-layer error (an ICMPv6 parameter problem was attempted).
        Srv6ParamProblem => "srv6_param_problem",
        /// A storage request that is not UDP to the service port with a valid header.
        StorageBadRequest => "storage_bad_request",
        /// A storage request whose UDP checksum (over the final destination) is wrong.
        StorageBadChecksum => "storage_bad_checksum",
        /// An ICMP error is never sent about an ICMP error, a fragment
        /// other than the first, or a non-unicast packet (RFC 1812 §4.3.2.7).
        IcmpErrorSuppressed => "icmp_error_suppressed",
        NatMalformed => "nat_malformed",
        NatFragment => "nat_fragment",
        NatUnsupportedProtocol => "nat_unsupported_protocol",
        NatUnsupportedIcmp => "nat_unsupported_icmp",
        NatBadChecksum => "nat_bad_checksum",
        NatWrongKind => "nat_wrong_kind",
        NatPoolExhausted => "nat_pool_exhausted",
        NatSubscriberLimit => "nat_subscriber_limit",
        NatSubscribersFull => "nat_subscribers_full",
        NatBlocksFull => "nat_blocks_full",
        NatMappingsFull => "nat_mappings_full",
        NatSessionsFull => "nat_sessions_full",
        NatNoMapping => "nat_no_mapping",
        NatFiltered => "nat_filtered",
        /// A worker's request ring to the mapping core was full.
        NatRingFull => "nat_ring_full",
        /// The mapping core's answer ring to a worker was full.
        NatAnswerRingFull => "nat_answer_ring_full",
        /// An answer without a valid header (never expected).
        NatBadAnswer => "nat_bad_answer",
        /// An activity report that could not be sent (no mbuf, ring full).
        NatReportLost => "nat_report_lost",
        /// NAT traffic on a core that has no NAT state (never expected).
        NatNoState => "nat_no_state",
        /// A translated packet routed back to a pool address.
        NatLoop => "nat_loop",
        /// A storage request on a core without the storage service, or
        /// one the service could not parse (see its counters).
        StorageNoService => "storage_no_service",
        /// The ring handing a storage request to the worker that owns its
        /// object was full.
        StorageHandoffFull => "storage_handoff_full",
    }
);

reasons!(
    /// Why a worker handed a packet to the control core.
    PuntReason, PuntCounters {
        /// ARP request or reply.
        Arp => "arp",
        /// IPv6 neighbour discovery (NS/NA) addressed to us or our
        /// solicited-node group.
        Nd => "nd",
        /// Next hop not resolved yet: the packet is held until it is.
        NeighborMiss => "neighbor_miss",
        /// TTL/hop limit would expire: ICMP time exceeded.
        TtlExpired => "ttl_expired",
        /// No route: ICMP destination unreachable.
        NoRoute => "no_route",
        /// Larger than the egress MTU and may not be fragmented: ICMP
        /// fragmentation needed / packet too big.
        TooBig => "too_big",
        /// UDP to one of our addresses on a port nobody serves: ICMP port
        /// unreachable.
        PortUnreachable => "port_unreachable",
        /// An SRH or SRv6 upper-layer error: ICMPv6 parameter problem.
        ParamProblem => "param_problem",
    }
);

reasons!(
    /// Where a worker handed a packet that is neither forwarded, punted to
    /// the control core nor dropped (label of `appliance_handoffs_total`).
    HandOffKind, HandOffCounters {
        /// No NAT cache entry: held and sent to the mapping core, which
        /// translates it and answers with the cache entries.
        NatMapper => "nat_mapper",
        /// A request to a replica address, served by this worker's storage
        /// service (held until its I/O completes).
        Storage => "storage",
        /// A request for an object another worker owns, sent to it.
        StorageWorker => "storage_worker",
    }
);

/// Packs a punt reason and its 24-bit argument into an mbuf tag (the
/// worker → control ring carries it).
pub fn punt_tag(reason: PuntReason, arg: u32) -> u32 {
    (reason as u32) | (arg << 8)
}

/// Unpacks [`punt_tag`].
pub fn punt_tag_parts(tag: u32) -> (Option<PuntReason>, u32) {
    (PuntReason::from_u8(tag as u8), tag >> 8)
}

/// Packs an ICMPv6 parameter-problem code and pointer (< 65536: within the
/// first packet bytes) into a 24-bit punt argument.
pub fn param_problem_arg(code: u8, pointer: u32) -> u32 {
    (u32::from(code) << 16) | pointer.min(0xffff)
}

/// Unpacks [`param_problem_arg`].
pub fn param_problem_parts(arg: u32) -> (u8, u32) {
    ((arg >> 16) as u8, arg & 0xffff)
}

reasons!(
    /// The ICMP and ICMPv6 errors the node sends (label of
    /// `appliance_icmp_errors_sent_total`).
    IcmpErrorKind, IcmpErrorCounters {
        V4TimeExceeded => "v4_time_exceeded",
        V4NetUnreachable => "v4_net_unreachable",
        V4HostUnreachable => "v4_host_unreachable",
        V4PortUnreachable => "v4_port_unreachable",
        V4FragmentationNeeded => "v4_fragmentation_needed",
        V6TimeExceeded => "v6_time_exceeded",
        V6NoRoute => "v6_no_route",
        V6AddressUnreachable => "v6_address_unreachable",
        V6PortUnreachable => "v6_port_unreachable",
        V6PacketTooBig => "v6_packet_too_big",
        V6ParamProblem => "v6_param_problem",
    }
);

/// What a worker's input stages did to packets besides giving them a verdict
/// (single writer: the worker).
#[derive(Debug, Default)]
#[repr(align(64))]
pub struct InputCounters {
    /// Partial TCP/UDP checksums (a kernel host's transmit checksum offload)
    /// completed on input (`pipeline/partial.rs`); a complete checksum that
    /// merely equals the pseudo-header sum is not counted.
    pub checksums_completed: Counter,
}

/// Counters of the control core (single writer: the control thread).
#[derive(Debug, Default)]
#[repr(align(64))]
pub struct ControlCounters {
    pub punts_handled: Counter,
    pub arp_requests_sent: Counter,
    pub arp_replies_sent: Counter,
    pub nd_solicits_sent: Counter,
    pub nd_adverts_sent: Counter,
    pub neighbors_learned: Counter,
    pub resolutions_started: Counter,
    pub resolutions_failed: Counter,
    pub held_packets_sent: Counter,
    /// Packets currently held waiting for resolution.
    pub pending: Gauge,
    pub icmp_errors: IcmpErrorCounters,
    pub drops: DropCounters,
}
