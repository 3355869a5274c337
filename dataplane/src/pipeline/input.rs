//! Input stages: Ethernet, then the IPv4 or IPv6 header checks, the route
//! lookup, and the dispatch by next hop to the stage that owns it.
//!
//! * Ethernet: the destination must be our MAC, broadcast or multicast
//!   (`eth_not_for_us`); ARP is punted; anything but IPv4/IPv6 is
//!   `eth_unsupported_type`. A unicast IP packet received as link-layer
//!   broadcast/multicast may be delivered locally but is never forwarded
//!   (RFC 1812 §5.3.4, RFC 4443 §2.4(e)).
//! * IPv4 (RFC 1812 §4.2.2, §5.2.4, §5.3.7): header and checksum; options
//!   checked octet by octet (a malformed one is a parameter problem pointing
//!   at it, `ipv4_bad_option`; source routes are dropped, RFC 7126);
//!   fragment fields (`ipv4_fragment_malformed`, RFC 1858 tiny fragments);
//!   martian sources (0/8, 127/8, multicast, 240/4, broadcast, our own
//!   address or a subnet broadcast of the receiving port) and destinations
//!   (0/8, 127/8, 240/4: `ipv4_martian_destination`; multicast and limited
//!   broadcast are not routed); link-local 169.254/16 never forwarded
//!   (RFC 3927 §2.7); directed broadcasts of a connected subnet are not
//!   forwarded (RFC 2644, in `forward.rs`).
//! * IPv6: header; a payload length of 0 with a Hop-by-Hop header is a
//!   jumbogram question (RFC 2675 §3); the extension header chain is walked
//!   within `pipeline.ipv6_extension_headers` (RFC 8883 codes), with its
//!   options checked, Hop-by-Hop only first (RFC 8200 §4.1) and first
//!   fragments holding the whole chain (RFC 7112); martian sources
//!   (multicast, loopback, IPv4-mapped; the unspecified address only for
//!   DAD probes) and destinations (::, ::1, IPv4-mapped); multicast
//!   destinations only for ND; link-local destinations and sources never
//!   routed (RFC 4007 §9).
//! * Both: a packet longer than the receiving port's MTU that the frame does
//!   not hold is a cut super-frame (`superframe`, not `*_malformed`); on a
//!   port whose peers may send them (`PortInfo::partial_checksums`), a
//!   partial TCP/UDP checksum is completed (`partial.rs`) once the header
//!   passed its checks, before routing, NAT or local delivery look at it.
//!
//! Every check is made before anything is written; a refused packet is as
//! it arrived (a completed partial checksum aside: that packet is accepted).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use netwire::ipv6ext::{self, CheckedChain};
use netwire::ipv6opt::{ChainError, ChainErrorKind};
use netwire::{ethernet, ipv4, ipv4opt, ipv6, PacketBuf};

use super::ctx::{PacketFlags, PacketMeta, Stage, WorkerCtx};
use super::{local, param_problem, partial, Pipeline, Step, Verdict};
use crate::fib::{is_link_local6, Fib, NextHop, PortInfo};
use crate::stats::{DropReason, PuntReason};

const ETH: usize = ethernet::HEADER_LEN;

/// The IPv4 header fields the stages after input need.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ip4Header {
    pub dst: Ipv4Addr,
    pub ttl: u8,
    pub total_len: u16,
    pub df: bool,
    pub proto: ipv4::Protocol,
    /// More Fragments set or a non-zero fragment offset.
    pub fragment: bool,
}

/// The IPv6 header fields the stages after input need.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ip6Header {
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    pub hop_limit: u8,
    /// IPv6 header plus payload.
    pub ip_len: usize,
    pub next_header: ipv4::Protocol,
    /// The checked extension header chain, when the packet has one.
    pub chain: Option<CheckedChain>,
}

/// True for 169.254/16 (RFC 3927).
#[inline]
pub(crate) fn is_link_local4(a: Ipv4Addr) -> bool {
    a.octets()[..2] == [169, 254]
}

/// True for ::ffff:0:0/96 (RFC 4291 §2.5.5.2: never on the wire).
#[inline]
fn is_v4_mapped(a: Ipv6Addr) -> bool {
    a.segments()[..6] == [0, 0, 0, 0, 0, 0xffff]
}

/// Parses and checks an IPv4 header: lengths, checksum, options, fragment
/// fields.
#[inline]
fn ip4_header(
    frame: &[u8],
    in_info: &PortInfo,
    meta: &mut PacketMeta,
) -> Result<(Ipv4Addr, Ip4Header, Option<partial::Partial>), Verdict> {
    let Ok(ip) = ipv4::Packet::new_checked(&frame[ETH..]) else {
        return Err(Verdict::Drop(malformed(frame, in_info, DropReason::Ipv4Malformed)));
    };
    if !ip.verify_checksum() {
        return Err(Verdict::Drop(DropReason::Ipv4BadChecksum));
    }
    let h = Ip4Header {
        dst: ip.dst_addr(),
        ttl: ip.ttl(),
        total_len: ip.total_len(),
        df: ip.dont_frag(),
        proto: ip.protocol(),
        fragment: ip.is_fragment(),
    };
    if ip.header_len() > ipv4::HEADER_LEN {
        match ipv4opt::check(ip.options()) {
            Err(e) => return Err(param_problem(meta, DropReason::Ipv4BadOption, 0, ipv4::HEADER_LEN + e.offset)),
            Ok(found) if found.source_route => return Err(Verdict::Drop(DropReason::Ipv4SourceRoute)),
            Ok(_) => {}
        }
    }
    if h.fragment {
        let data = usize::from(h.total_len) - ip.header_len();
        check_fragment4(usize::from(ip.frag_offset_bytes()), ip.more_frags(), data, h.proto)?;
    }
    let partial = if in_info.partial_checksums { partial::find4(ip.as_bytes()) } else { None };
    Ok((ip.src_addr(), h, partial))
}

/// Fragment fields: the datagram stays within 65535 octets, a non-last
/// fragment carries a multiple of 8 octets, and no tiny fragment (RFC 1858
/// §3: a TCP fragment at offset 8 overlays the flags; a first fragment must
/// hold the ports).
#[cold]
fn check_fragment4(offset: usize, more: bool, data: usize, proto: ipv4::Protocol) -> Result<(), Verdict> {
    if offset + data > 65535 || (more && !data.is_multiple_of(8)) {
        return Err(Verdict::Drop(DropReason::Ipv4FragmentMalformed));
    }
    let tiny = match proto {
        ipv4::Protocol::TCP => offset == 8 || (offset == 0 && data < 20),
        ipv4::Protocol::UDP | ipv4::Protocol::ICMP => offset == 0 && data < 8,
        _ => false,
    };
    if tiny {
        return Err(Verdict::Drop(DropReason::Ipv4TinyFragment));
    }
    Ok(())
}

/// RFC 1812 §5.3.7 martians: sources that are not a unicast host, our own
/// address or a broadcast of the receiving port's subnets (not checked for
/// a packet NAT translated: a pool address may be a port address), and
/// destinations no router forwards to.
#[inline]
fn martian4(src: Ipv4Addr, dst: Ipv4Addr, fib: &Fib, in_port: u16, nat_done: bool) -> Option<DropReason> {
    let s = src.octets()[0];
    if src.is_multicast() || s == 0 || s == 127 || s >= 240 {
        return Some(DropReason::Ipv4MartianSource);
    }
    if dst.is_multicast() || dst.is_broadcast() {
        return Some(DropReason::Ipv4NotRouted);
    }
    let d = dst.octets()[0];
    if d == 0 || d == 127 || d >= 240 {
        return Some(DropReason::Ipv4MartianDestination);
    }
    if !nat_done && fib.is_port_address_or_broadcast(in_port, src) {
        return Some(DropReason::Ipv4MartianSource);
    }
    None
}

/// The verdict for an extension header chain [`ipv6ext::walk_checked`] refused.
#[cold]
fn ext_error(meta: &mut PacketMeta, e: ChainError) -> Verdict {
    let reason = match e.kind {
        ChainErrorKind::Truncated | ChainErrorKind::Malformed | ChainErrorKind::HopByHopNotFirst => {
            DropReason::Ipv6ExtMalformed
        }
        ChainErrorKind::IncompleteChain => DropReason::Ipv6IncompleteChain,
        ChainErrorKind::HeaderTooBig => DropReason::Ipv6ExtHeaderTooBig,
        ChainErrorKind::ChainTooLong => DropReason::Ipv6ExtChainTooLong,
        ChainErrorKind::TooManyHeaders => DropReason::Ipv6ExtTooMany,
        ChainErrorKind::TooManyOptions => DropReason::Ipv6ExtTooManyOptions,
        ChainErrorKind::OptionTooBig => DropReason::Ipv6ExtOptionTooBig,
    };
    match e.kind.code() {
        Some(code) => param_problem(meta, reason, code, e.offset),
        None => Verdict::Drop(reason),
    }
}

impl Pipeline {
    /// Ethernet input: the first stage of every pass.
    #[inline]
    pub(crate) fn l2_input<P: PacketBuf>(&self, pkt: &mut P, in_port: u16, ctx: &mut WorkerCtx) -> Step {
        ctx.meta.enter(Stage::L2Input);
        let Some(port) = self.fib.ports().get(usize::from(in_port)) else {
            return Verdict::Drop(DropReason::EthNotForUs).into();
        };
        let Ok(eth) = ethernet::Packet::new_checked(pkt.data()) else {
            return Verdict::Drop(DropReason::EthTruncated).into();
        };
        let dst = eth.dst_addr();
        if dst.0 != port.mac && !dst.is_multicast() {
            return Verdict::Drop(DropReason::EthNotForUs).into();
        }
        let ethertype = eth.ethertype();
        let l2_multicast = dst.is_multicast();
        if ethertype == ethernet::EtherType::IPV4 {
            self.ip4_input(pkt, in_port, port, l2_multicast, ctx).into()
        } else if ethertype == ethernet::EtherType::IPV6 {
            self.ip6_input(pkt, in_port, port, l2_multicast, ctx)
        } else if ethertype == ethernet::EtherType::ARP {
            Verdict::Punt(PuntReason::Arp).into()
        } else {
            Verdict::Drop(DropReason::EthUnsupportedType).into()
        }
    }

    /// IPv4 input: checks, route lookup, NAT, dispatch.
    #[inline]
    fn ip4_input<P: PacketBuf>(
        &self,
        pkt: &mut P,
        in_port: u16,
        in_info: &PortInfo,
        l2_multicast: bool,
        ctx: &mut WorkerCtx,
    ) -> Verdict {
        ctx.meta.enter(Stage::Ip4Input);
        let (src, mut h, partial) = match ip4_header(pkt.data(), in_info, &mut ctx.meta) {
            Ok(v) => v,
            Err(v) => return v,
        };
        if let Some(p) = partial {
            complete_partial(pkt, p, ctx);
        }
        if let Some(r) = martian4(src, h.dst, &self.fib, in_port, ctx.meta.input.nat_done()) {
            return Verdict::Drop(r);
        }
        let mut nh = self.fib.route(IpAddr::V4(h.dst));
        if (is_link_local4(src) || is_link_local4(h.dst)) && !matches!(nh, Some(NextHop::Local { .. })) {
            return Verdict::Drop(DropReason::Ipv4LinkLocal);
        }
        if self.nat.is_some() {
            match self.nat44(pkt, in_port, nh, &h, l2_multicast, ctx) {
                Ok(Some(new_dst)) => {
                    h.dst = new_dst;
                    nh = self.fib.route(IpAddr::V4(new_dst));
                }
                Ok(None) => {}
                Err(v) => return v,
            }
            if nh == Some(NextHop::NatPool) {
                // Translated (or re-run) and still to the pool: never loop.
                return Verdict::Drop(DropReason::NatLoop);
            }
        }
        let Some(nh) = nh else {
            return Verdict::Punt(PuntReason::NoRoute);
        };
        if l2_multicast && matches!(nh, NextHop::Forward { .. } | NextHop::Encap(_)) {
            return Verdict::Drop(DropReason::EthMulticastNotForwarded);
        }
        match nh {
            NextHop::Local { .. } => {
                ctx.meta.enter(Stage::Local);
                local::deliver4(pkt, in_port, in_info, &h)
            }
            NextHop::Encap(policy) => self.h_encaps(pkt, policy, ctx),
            NextHop::Forward { port, via } => self.forward4(pkt, port, via, &h, ctx),
            // IPv4 to an IPv6 SID or object prefix cannot happen, and pool
            // addresses are handled above (or NAT is off): keep the match total.
            NextHop::Sid(_) | NextHop::NatPool | NextHop::Objects => Verdict::Drop(DropReason::Ipv4NotRouted),
        }
    }

    /// IPv6 input: checks, route lookup, dispatch.
    #[inline]
    fn ip6_input<P: PacketBuf>(
        &self,
        pkt: &mut P,
        in_port: u16,
        in_info: &PortInfo,
        l2_multicast: bool,
        ctx: &mut WorkerCtx,
    ) -> Step {
        ctx.meta.enter(Stage::Ip6Input);
        let (h, partial) = match self.ip6_header(pkt.data(), in_info, &mut ctx.meta) {
            Ok(h) => h,
            Err(v) => return v.into(),
        };
        if let Some(v) = martian6(pkt.data(), &h) {
            return v.into();
        }
        if let Some(p) = partial {
            complete_partial(pkt, p, ctx);
        }
        let Some(nh) = self.fib.route(IpAddr::V6(h.dst)) else {
            return if is_link_local6(h.dst) {
                Verdict::Drop(DropReason::Ipv6NotRouted)
            } else {
                Verdict::Punt(PuntReason::NoRoute)
            }
            .into();
        };
        if l2_multicast && !matches!(nh, NextHop::Local { .. } | NextHop::NatPool) {
            return Verdict::Drop(DropReason::EthMulticastNotForwarded).into();
        }
        let transit = matches!(nh, NextHop::Forward { .. } | NextHop::Encap(_));
        if transit && (is_link_local6(h.dst) || is_link_local6(h.src)) {
            return Verdict::Drop(DropReason::Ipv6NotRouted).into();
        }
        match nh {
            NextHop::Objects if self.is_storage_request(pkt.data(), &h) => {
                Verdict::HandOff(super::HandOff::Storage).into()
            }
            NextHop::Local { .. } | NextHop::Objects => {
                local::deliver6(pkt, in_port, in_info, &h, &mut ctx.meta).into()
            }
            NextHop::Sid(sid) => self.srv6_sid(pkt, in_port, sid, &h, ctx),
            NextHop::Encap(policy) => self.h_encaps(pkt, policy, ctx).into(),
            NextHop::Forward { port, via } => self.forward6(pkt, port, via, &h, ctx).into(),
            // Pool addresses are IPv4.
            NextHop::NatPool => Verdict::Drop(DropReason::Ipv6NotRouted).into(),
        }
    }

    /// Parses an IPv6 header and checks its extension header chain; finds a
    /// partial transport checksum to complete (`in_info.partial_checksums`).
    #[inline]
    fn ip6_header(
        &self,
        frame: &[u8],
        in_info: &PortInfo,
        meta: &mut PacketMeta,
    ) -> Result<(Ip6Header, Option<partial::Partial>), Verdict> {
        let Ok(ip) = ipv6::Packet::new_checked(&frame[ETH..]) else {
            return Err(Verdict::Drop(malformed(frame, in_info, DropReason::Ipv6Malformed)));
        };
        let mut h = Ip6Header {
            src: ip.src_addr(),
            dst: ip.dst_addr(),
            hop_limit: ip.hop_limit(),
            ip_len: ipv6::HEADER_LEN + usize::from(ip.payload_len()),
            next_header: ip.next_header(),
            chain: None,
        };
        if ip.payload_len() == 0 && h.next_header == ipv4::Protocol::HOP_BY_HOP {
            return Err(self.jumbo6(frame, meta));
        }
        if ipv6ext::is_extension_header(h.next_header) {
            let payload = &frame[ETH + ipv6::HEADER_LEN..ETH + h.ip_len];
            let c = ipv6ext::walk_checked(h.next_header, payload, &self.ext_limits).map_err(|e| ext_error(meta, e))?;
            if let Some((at, _)) = c.jumbo {
                // RFC 2675 §3: a Jumbo Payload option with a payload length.
                return Err(param_problem(meta, DropReason::Ipv6Jumbo, 0, at));
            }
            h.chain = Some(c);
        }
        let partial = if in_info.partial_checksums { partial::find6(ip.as_bytes()) } else { None };
        Ok((h, partial))
    }

    /// A payload length of 0 with a Hop-by-Hop header (RFC 2675 §3): the
    /// errors the RFC lists are parameter problems; a well-formed jumbogram
    /// is longer than any link of this node carries, so it cannot be whole.
    #[cold]
    fn jumbo6(&self, frame: &[u8], meta: &mut PacketMeta) -> Verdict {
        let payload = &frame[ETH + ipv6::HEADER_LEN..];
        let c = match ipv6ext::walk_checked(ipv4::Protocol::HOP_BY_HOP, payload, &self.ext_limits) {
            Ok(c) => c,
            Err(e) => return ext_error(meta, e),
        };
        let reason = DropReason::Ipv6Jumbo;
        match (c.jumbo, c.chain.fragment) {
            (None, _) => param_problem(meta, reason, 0, 4),
            (Some((at, None)), _) => param_problem(meta, reason, 0, at + 1),
            (Some((at, Some(len))), _) if len < 65536 => param_problem(meta, reason, 0, at + 2),
            (Some(_), Some(f)) => param_problem(meta, reason, 0, ipv6::HEADER_LEN + f.offset),
            (Some(_), None) => Verdict::Drop(reason),
        }
    }

    /// True for UDP to the storage service's port (the frame's destination
    /// is in the object prefix).
    #[inline]
    fn is_storage_request(&self, frame: &[u8], h: &Ip6Header) -> bool {
        let Some(plan) = self.storage else { return false };
        let l4 = &frame[ethernet::HEADER_LEN + ipv6::HEADER_LEN..ethernet::HEADER_LEN + h.ip_len];
        h.next_header == ipv4::Protocol::UDP && l4.len() >= 8 && u16::from_be_bytes([l4[2], l4[3]]) == plan.udp_port
    }
}

/// IPv6 martians: a verdict for sources no host has, destinations no
/// router forwards to, and multicast (only ND to a group we are in).
#[inline]
fn martian6(frame: &[u8], h: &Ip6Header) -> Option<Verdict> {
    if h.src.is_multicast() || h.src.is_loopback() || is_v4_mapped(h.src) {
        return Some(Verdict::Drop(DropReason::Ipv6MartianSource));
    }
    if h.dst.is_multicast() || h.src.is_unspecified() {
        // Only neighbour discovery to a group we are in concerns us, and
        // only DAD probes (NS from ::) come from the unspecified address.
        return Some(if local::is_nd(frame, h) {
            Verdict::Punt(PuntReason::Nd)
        } else if h.dst.is_multicast() {
            Verdict::Drop(DropReason::Ipv6NotRouted)
        } else {
            Verdict::Drop(DropReason::Ipv6MartianSource)
        });
    }
    if h.dst.is_unspecified() || h.dst.is_loopback() || is_v4_mapped(h.dst) {
        return Some(Verdict::Drop(DropReason::Ipv6MartianDestination));
    }
    None
}

/// Completes the partial checksum `p` found in the packet's IP header and
/// counts it when that changed the packet.
#[cold]
#[inline(never)]
fn complete_partial<P: PacketBuf>(pkt: &mut P, p: partial::Partial, ctx: &mut WorkerCtx) {
    if p.complete(&mut pkt.data_mut()[ethernet::HEADER_LEN..]) {
        ctx.input_counters.checksums_completed.inc();
    }
}

/// Why an IP header that failed its checks is dropped: `superframe` when its
/// length field says more than the port's MTU and the frame holds less (a
/// TSO/GSO super-frame cut by the driver), `otherwise` for the rest.
#[cold]
#[inline(never)]
fn malformed(frame: &[u8], port: &PortInfo, otherwise: DropReason) -> DropReason {
    let ip = frame.get(ethernet::HEADER_LEN..).unwrap_or_default();
    let claimed = match (otherwise, ip) {
        (DropReason::Ipv4Malformed, [0x40..=0x4f, _, hi, lo, ..]) => usize::from(u16::from_be_bytes([*hi, *lo])),
        (DropReason::Ipv6Malformed, [0x60..=0x6f, _, _, _, hi, lo, ..]) => {
            ipv6::HEADER_LEN + usize::from(u16::from_be_bytes([*hi, *lo]))
        }
        _ => 0,
    };
    if claimed > usize::from(port.mtu) && claimed > ip.len() {
        DropReason::Superframe
    } else {
        otherwise
    }
}

impl PacketFlags {
    /// True when NAT must not translate the packet (again).
    #[inline]
    pub(crate) fn nat_done(self) -> bool {
        self.contains(PacketFlags::NAT_DONE)
    }
}
