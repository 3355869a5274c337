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

    /// Sets it back to zero. Only while its writer does not write it (a
    /// counter block taken out of use).
    pub fn reset(&self) {
        self.0.store(0, Ordering::Relaxed);
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
            /// Zeroes every counter (see [`Counter::reset`]).
            pub fn reset(&self) { self.0.iter().for_each(Counter::reset); }
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
        /// IPv4 destination that no router may forward to (RFC 1812 §5.3.7:
        /// 0/8, 127/8, 240/4 but the limited broadcast).
        Ipv4MartianDestination => "ipv4_martian_destination",
        /// IPv4 to the broadcast address of a connected subnet (RFC 2644:
        /// directed broadcasts are not forwarded by default).
        Ipv4DirectedBroadcast => "ipv4_directed_broadcast",
        /// IPv4 link-local (169.254/16) source or destination that would be
        /// forwarded (RFC 3927 §2.7).
        Ipv4LinkLocal => "ipv4_link_local",
        /// A malformed IPv4 option (an ICMP parameter problem was attempted;
        /// RFC 1812 §4.2.2.1, §5.2.4).
        Ipv4BadOption => "ipv4_bad_option",
        /// Loose or strict source route option: dropped (RFC 7126 §4.3, §4.4).
        Ipv4SourceRoute => "ipv4_source_route",
        /// A fragment whose offset and length pass 65535 octets, or a
        /// non-last fragment whose data is not a multiple of 8 octets.
        Ipv4FragmentMalformed => "ipv4_fragment_malformed",
        /// A tiny fragment (RFC 1858 §3): a TCP fragment at offset 8, or a
        /// first fragment too short for the transport ports.
        Ipv4TinyFragment => "ipv4_tiny_fragment",
        /// IPv6 header too short, bad version, or payload length too big.
        Ipv6Malformed => "ipv6_malformed",
        /// IPv6 source multicast/unspecified/loopback.
        Ipv6MartianSource => "ipv6_martian_source",
        /// IPv6 link-local or multicast not for us: never forwarded.
        Ipv6NotRouted => "ipv6_not_routed",
        /// IPv6 destination ::, ::1 or IPv4-mapped (RFC 4291 §2.5.2, §2.5.3, §2.5.5.2).
        Ipv6MartianDestination => "ipv6_martian_destination",
        /// A stage (SRv6 End/End.X next segment, End.DX6, H.Encaps) would
        /// have sent a link-local source or destination off its link (RFC 4007 §9).
        Ipv6LinkLocalScope => "ipv6_link_local_scope",
        /// An extension header chain that runs past the packet, an option
        /// running past its header, a Hop-by-Hop header not first (a
        /// parameter problem was attempted where a pointer exists).
        Ipv6ExtMalformed => "ipv6_ext_malformed",
        /// More extension headers than `pipeline.ipv6_extension_headers.headers_max` (RFC 8883 code 8).
        Ipv6ExtTooMany => "ipv6_ext_too_many",
        /// Extension headers longer than `chain_bytes_max` (RFC 8883 code 7).
        Ipv6ExtChainTooLong => "ipv6_ext_chain_too_long",
        /// One extension header longer than `header_bytes_max` (RFC 8883 code 6).
        Ipv6ExtHeaderTooBig => "ipv6_ext_header_too_big",
        /// More options in one header than `options_max` (RFC 8883 code 9).
        Ipv6ExtTooManyOptions => "ipv6_ext_too_many_options",
        /// An option longer than `option_bytes_max` (RFC 8883 code 10).
        Ipv6ExtOptionTooBig => "ipv6_ext_option_too_big",
        /// A first fragment without the whole header chain (RFC 7112, code 3).
        Ipv6IncompleteChain => "ipv6_incomplete_chain",
        /// Jumbo Payload errors (RFC 2675 §3), or a jumbogram, which no link
        /// of the node can carry.
        Ipv6Jumbo => "ipv6_jumbo",
        /// A Type 0 Routing header with Segments Left > 0 to one of our
        /// addresses (RFC 5095: parameter problem pointing at the type).
        Ipv6Rh0 => "ipv6_rh0",
        /// Any other Routing header with Segments Left > 0 to one of our
        /// addresses that is not a SID (RFC 8200 §4.4, RFC 8754 §4.3.2).
        Ipv6RoutingHeader => "ipv6_routing_header",
        /// An option to us whose type says discard (RFC 8200 §4.2; with a
        /// parameter problem code 2 when its action bits ask for one).
        Ipv6UnknownOption => "ipv6_unknown_option",
        /// Our own address, a protocol we do not serve (TCP, unknown).
        LocalUnsupported => "local_unsupported",
        /// ICMP/ICMPv6 to us that we do not answer (echo replies, RS, RA...).
        LocalIcmpIgnored => "local_icmp_ignored",
        /// ICMP/ICMPv6 to us with a bad checksum or length.
        LocalIcmpMalformed => "local_icmp_malformed",
        /// TCP or UDP to us with a wrong checksum or length (RFC 1122
        /// §4.1.3.4, §4.2.2.7, RFC 8200 §8.1: never answered).
        LocalBadChecksum => "local_bad_checksum",
        /// A fragment addressed to us: the node does not reassemble.
        LocalFragment => "local_fragment",
        /// An answer (echo reply) larger than the port's MTU: not sent.
        LocalReplyTooBig => "local_reply_too_big",
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
        /// ARP not for one of our addresses that taught nothing (RFC 826:
        /// only a known sender is updated).
        ArpNotForUs => "arp_not_for_us",
        /// An ARP operation other than request and reply (RARP, InARP, ...).
        ArpUnsupportedOp => "arp_unsupported_op",
        /// ARP whose sender address is not a unicast address (multicast,
        /// broadcast, loopback, 0/8 other than a probe's 0.0.0.0, 240/4, a
        /// subnet broadcast).
        ArpMartianSender => "arp_martian_sender",
        /// ARP from a sender address on none of the port's subnets.
        ArpSenderNotOnLink => "arp_sender_not_on_link",
        /// ARP claiming one of our own addresses (RFC 5227 §2.4: a conflict).
        ArpAddressConflict => "arp_address_conflict",
        /// Malformed neighbour-discovery packet (RFC 4861 §7.1 checks).
        NdInvalid => "nd_invalid",
        /// Neighbour discovery for an address that is not ours.
        NdNotForUs => "nd_not_for_us",
        /// A neighbour advertisement for an address with no entry
        /// (RFC 4861 §7.2.5: never creates one), or without the target
        /// link-layer address an incomplete entry needs.
        NdAdvertUnknown => "nd_advert_unknown",
        /// ND claiming one of our own addresses (an advertisement for it,
        /// a solicitation from it).
        NdAddressConflict => "nd_address_conflict",
        /// A router solicitation: the node sends no router advertisements.
        NdRouterSolicitIgnored => "nd_rs_ignored",
        /// A router advertisement: a router learns nothing from them.
        NdRouterAdvertIgnored => "nd_ra_ignored",
        /// A redirect: a router never follows one (RFC 4861 §8).
        NdRedirectIgnored => "nd_redirect_ignored",
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
        /// An ICMP error that is itself a fragment (not translated).
        NatFragment => "nat_fragment",
        /// NAT virtual reassembly had no room for another datagram or held
        /// fragment (`nat.fragments`).
        NatFragmentsFull => "nat_fragments_full",
        /// A held fragment whose first fragment never came (`nat.fragments.timeout_ms`).
        NatFragmentTimeout => "nat_fragment_timeout",
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
        /// A new NAT mapping was needed while its mapping server may not
        /// allocate (no confirmed epoch, takeover hold-down, handover).
        NatNotAllocating => "nat_not_allocating",
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
        /// NAT cluster: the table of requests waiting for a remote mapping
        /// server was full.
        NatRemoteQueueFull => "nat_remote_queue_full",
        /// NAT cluster: no answer from the shard's mapping server in time.
        NatRemoteTimeout => "nat_remote_timeout",
        /// NAT cluster: the shard has no reachable mapping server (both of
        /// its hosts down, or the request was re-routed too often).
        NatVmsUnreachable => "nat_vms_unreachable",
        /// NAT cluster: a datagram to a peer could not be sent (socket
        /// buffer full, no route).
        NatClusterSendFailed => "nat_cluster_send_failed",
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
        /// A header error: ICMP/ICMPv6 parameter problem (SRH and SRv6
        /// upper layer, IPv4 options, IPv6 extension headers).
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
        /// A NAT'd fragment held until its datagram's first fragment is
        /// translated (virtual reassembly).
        NatFragment => "nat_fragment",
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

/// The largest parameter-problem pointer a punt argument carries: an error
/// pointing further is not worth sending (it quotes at most 1232 octets).
pub const PARAM_PROBLEM_POINTER_MAX: u32 = 0xfff;

/// Packs an SRv6 parameter-problem code and pointer into a 24-bit punt
/// argument ([`param_problem_arg_for`] with `srv6_param_problem`).
pub fn param_problem_arg(code: u8, pointer: u32) -> u32 {
    param_problem_arg_for(DropReason::Srv6ParamProblem, code, pointer)
}

/// Packs the drop reason the control core counts, an ICMP/ICMPv6
/// parameter-problem code (< 16) and pointer (≤ [`PARAM_PROBLEM_POINTER_MAX`])
/// into a 24-bit punt argument.
pub fn param_problem_arg_for(reason: DropReason, code: u8, pointer: u32) -> u32 {
    (u32::from(reason as u8) << 16) | (u32::from(code & 0xf) << 12) | pointer.min(PARAM_PROBLEM_POINTER_MAX)
}

/// Unpacks [`param_problem_arg_for`]: (code, pointer).
pub fn param_problem_parts(arg: u32) -> (u8, u32) {
    (((arg >> 12) & 0xf) as u8, arg & PARAM_PROBLEM_POINTER_MAX)
}

/// The drop reason of a [`param_problem_arg_for`] argument.
pub fn param_problem_reason(arg: u32) -> DropReason {
    DropReason::from_u8((arg >> 16) as u8).unwrap_or(DropReason::Srv6ParamProblem)
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
        V4ParamProblem => "v4_param_problem",
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
    /// RFC 5227 announcements of NAT pool addresses this host took over.
    pub arp_announcements_sent: Counter,
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
