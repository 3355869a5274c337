//! Input stages: Ethernet, then the IPv4 or IPv6 header checks, the route
//! lookup, and the dispatch by next hop to the stage that owns it.
//!
//! * Ethernet: the destination must be our MAC, broadcast or multicast
//!   (`eth_not_for_us`); ARP is punted; anything but IPv4/IPv6 is
//!   `eth_unsupported_type`. A unicast IP packet received as link-layer
//!   broadcast/multicast may be delivered locally but is never forwarded
//!   (RFC 1812 §5.3.4, RFC 4443 §2.4(e)).
//! * IPv4: header and checksum, martian source (broadcast, multicast,
//!   loopback, 0/8) and destination (not routed).
//! * Both: a packet longer than the receiving port's MTU that the frame does
//!   not hold is a cut super-frame (`superframe`, not `*_malformed`); on a
//!   port whose peers may send them (`PortInfo::partial_checksums`), a
//!   partial TCP/UDP checksum is completed (`partial.rs`) before routing.
//! * IPv6: header, martian source (multicast, loopback; the unspecified
//!   address only for DAD probes), multicast destinations only for ND,
//!   link-local destinations never routed.

use std::net::IpAddr;

use netwire::{ethernet, ipv4, ipv6, PacketBuf};

use super::ctx::{PacketFlags, WorkerCtx};
use super::{local, partial, Pipeline, Step, Verdict};
use crate::fib::{is_link_local6, NextHop, PortInfo};
use crate::stats::{DropReason, PuntReason};

/// The IPv4 header fields the stages after input need.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ip4Header {
    pub dst: std::net::Ipv4Addr,
    pub ttl: u8,
    pub total_len: u16,
    pub df: bool,
    pub proto: ipv4::Protocol,
}

/// The IPv6 header fields the stages after input need.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ip6Header {
    pub src: std::net::Ipv6Addr,
    pub dst: std::net::Ipv6Addr,
    pub hop_limit: u8,
    /// IPv6 header plus payload.
    pub ip_len: usize,
    pub next_header: ipv4::Protocol,
}

impl Pipeline {
    /// Ethernet input: the first stage of every pass.
    #[inline]
    pub(crate) fn l2_input<P: PacketBuf>(&self, pkt: &mut P, in_port: u16, ctx: &mut WorkerCtx) -> Step {
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
        let (src, mut h, partial) = {
            let Ok(ip) = ipv4::Packet::new_checked(&pkt.data()[ethernet::HEADER_LEN..]) else {
                return Verdict::Drop(malformed(pkt.data(), in_info, DropReason::Ipv4Malformed));
            };
            if !ip.verify_checksum() {
                return Verdict::Drop(DropReason::Ipv4BadChecksum);
            }
            let h = Ip4Header {
                dst: ip.dst_addr(),
                ttl: ip.ttl(),
                total_len: ip.total_len(),
                df: ip.dont_frag(),
                proto: ip.protocol(),
            };
            let partial = if in_info.partial_checksums { partial::find4(ip.as_bytes()) } else { None };
            (ip.src_addr(), h, partial)
        };
        if let Some(p) = partial {
            complete_partial(pkt, p, ctx);
        }
        if src.is_multicast() || src.is_broadcast() || src.is_loopback() || src.octets()[0] == 0 {
            return Verdict::Drop(DropReason::Ipv4MartianSource);
        }
        let dst = h.dst;
        if dst.is_multicast() || dst.is_broadcast() || dst.is_loopback() || dst.octets()[0] == 0 {
            return Verdict::Drop(DropReason::Ipv4NotRouted);
        }
        let mut nh = self.fib.route(IpAddr::V4(dst));
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
            NextHop::Local { .. } => local::deliver4(pkt, in_port, in_info, &h),
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
        let (h, partial) = {
            let Ok(ip) = ipv6::Packet::new_checked(&pkt.data()[ethernet::HEADER_LEN..]) else {
                return Verdict::Drop(malformed(pkt.data(), in_info, DropReason::Ipv6Malformed)).into();
            };
            let h = Ip6Header {
                src: ip.src_addr(),
                dst: ip.dst_addr(),
                hop_limit: ip.hop_limit(),
                ip_len: ipv6::HEADER_LEN + usize::from(ip.payload_len()),
                next_header: ip.next_header(),
            };
            let partial = if in_info.partial_checksums { partial::find6(ip.as_bytes()) } else { None };
            (h, partial)
        };
        if h.src.is_multicast() || h.src.is_loopback() {
            return Verdict::Drop(DropReason::Ipv6MartianSource).into();
        }
        if let Some(p) = partial {
            complete_partial(pkt, p, ctx);
        }
        if h.dst.is_multicast() || h.src.is_unspecified() {
            // Only neighbour discovery to a group we are in concerns us, and
            // only DAD probes (NS from ::) come from the unspecified address.
            return if local::is_nd(pkt.data(), &h) {
                Verdict::Punt(PuntReason::Nd)
            } else if h.dst.is_multicast() {
                Verdict::Drop(DropReason::Ipv6NotRouted)
            } else {
                Verdict::Drop(DropReason::Ipv6MartianSource)
            }
            .into();
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
            NextHop::Local { .. } | NextHop::Objects => local::deliver6(pkt, in_port, in_info, &h).into(),
            NextHop::Sid(sid) => self.srv6_sid(pkt, in_port, sid, ctx),
            NextHop::Encap(policy) => self.h_encaps(pkt, policy, ctx).into(),
            NextHop::Forward { port, via } => self.forward6(pkt, port, via, &h, ctx).into(),
            // Pool addresses are IPv4.
            NextHop::NatPool => Verdict::Drop(DropReason::Ipv6NotRouted).into(),
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
