//! Local delivery: packets addressed to the node itself (its port
//! addresses, replica addresses that are not storage requests, SIDs with
//! an upper layer the node answers).
//!
//! * A fragment is dropped (`local_fragment`): the node reassembles nothing.
//! * IPv6 extension headers (already checked by input) are processed as
//!   RFC 8200 §4 says for a destination: a Routing header with Segments
//!   Left > 0 is a parameter problem (RFC 5095 for RH0 at its type, RFC 8754
//!   §4.3.2 for an SRH at Segments Left, RFC 8200 §4.4 for the others), an
//!   unknown option is discarded, with a parameter problem code 2 when its
//!   action bits ask for one; then the upper layer.
//! * ICMP / ICMPv6 echo requests are answered in place (addresses and MACs
//!   swapped, checksums updated, IPv6 extension headers removed) out of the
//!   receiving port, if the answer fits its MTU (`local_reply_too_big`);
//!   their checksums are verified first (`local_icmp_malformed`);
//! * neighbour discovery (ICMPv6 133-137) is punted to the control core;
//! * UDP is punted for an ICMP port unreachable (no local UDP service here:
//!   the storage service has its own hand-off), and TCP dropped, but only
//!   after their checksums are verified (RFC 1122 §4.1.3.4, RFC 8200 §8.1:
//!   a datagram with a bad checksum is discarded silently, never answered:
//!   `local_bad_checksum`);
//! * anything else is dropped by name.

use std::net::{Ipv4Addr, Ipv6Addr};

use netwire::ipv4::Protocol;
use netwire::ipv6opt::{unknown_action, UnknownAction};
use netwire::{checksum, ethernet, icmpv4, icmpv6, ipv4, ipv6, srh, PacketBuf, WireError};

use super::ctx::PacketMeta;
use super::input::{Ip4Header, Ip6Header};
use super::{param_problem, swap_macs, Verdict};
use crate::fib::PortInfo;
use crate::stats::{DropReason, PuntReason};

const ETH: usize = ethernet::HEADER_LEN;
const IP6: usize = ipv6::HEADER_LEN;

/// IPv4 to one of our addresses.
#[inline]
pub(crate) fn deliver4<P: PacketBuf>(pkt: &mut P, in_port: u16, in_info: &PortInfo, h: &Ip4Header) -> Verdict {
    if h.fragment {
        return Verdict::Drop(DropReason::LocalFragment);
    }
    if h.proto == Protocol::ICMP {
        if h.total_len > in_info.mtu {
            return Verdict::Drop(DropReason::LocalReplyTooBig);
        }
        let (eth_hdr, ip) = pkt.data_mut().split_at_mut(ETH);
        match icmpv4::echo_request_to_reply(&mut ip[..usize::from(h.total_len)]) {
            Ok(()) => {
                swap_macs(eth_hdr, in_info.mac);
                Verdict::Forward(in_port)
            }
            Err(e) => Verdict::Drop(icmp_drop(e)),
        }
    } else if h.proto == Protocol::UDP || h.proto == Protocol::TCP {
        let ip = ipv4::Packet::new_unchecked(&pkt.data()[ETH..ETH + usize::from(h.total_len)]);
        if !l4_checksum_ok4(ip.src_addr(), ip.dst_addr(), h.proto, ip.payload()) {
            Verdict::Drop(DropReason::LocalBadChecksum)
        } else if h.proto == Protocol::UDP {
            Verdict::Punt(PuntReason::PortUnreachable)
        } else {
            Verdict::Drop(DropReason::LocalUnsupported)
        }
    } else {
        Verdict::Drop(DropReason::LocalUnsupported)
    }
}

/// A TCP segment or UDP datagram whose length and checksum are right (a
/// UDP checksum field of 0 means none, RFC 768).
#[inline]
fn l4_checksum_ok4(src: Ipv4Addr, dst: Ipv4Addr, proto: Protocol, l4: &[u8]) -> bool {
    if proto == Protocol::UDP {
        if l4.len() < 8 || usize::from(u16::from_be_bytes([l4[4], l4[5]])) != l4.len() {
            return false;
        }
        if l4[6..8] == [0, 0] {
            return true;
        }
    } else if l4.len() < 20 {
        return false;
    }
    checksum::verify_v4(src, dst, proto.0, l4)
}

/// The same over IPv6, where a UDP checksum is mandatory (RFC 8200 §8.1).
#[inline]
fn l4_checksum_ok6(src: Ipv6Addr, dst: Ipv6Addr, proto: Protocol, l4: &[u8]) -> bool {
    let min = if proto == Protocol::UDP { 8 } else { 20 };
    if l4.len() < min {
        return false;
    }
    if proto == Protocol::UDP && (usize::from(u16::from_be_bytes([l4[4], l4[5]])) != l4.len() || l4[6..8] == [0, 0]) {
        return false;
    }
    checksum::verify_v6(src, dst, proto.0, l4)
}

/// IPv6 to one of our addresses: the extension headers as a destination
/// processes them, then the upper layer.
#[inline]
pub(crate) fn deliver6<P: PacketBuf>(
    pkt: &mut P,
    in_port: u16,
    in_info: &PortInfo,
    h: &Ip6Header,
    meta: &mut PacketMeta,
) -> Verdict {
    let (upper, offset) = match &h.chain {
        None => (h.next_header, 0),
        Some(c) => match destination_ext6(c, meta) {
            Ok(()) => (c.chain.upper_layer, c.chain.upper_layer_offset),
            Err(v) => return v,
        },
    };
    if upper == Protocol::ICMPV6 {
        if offset == 0 && is_nd(pkt.data(), h) {
            return Verdict::Punt(PuntReason::Nd);
        }
        if h.ip_len - offset > usize::from(in_info.mtu) {
            return Verdict::Drop(DropReason::LocalReplyTooBig);
        }
        let ip_len = if offset > 0 { strip_ext6(pkt, offset, h.ip_len) } else { h.ip_len };
        match echo6(pkt, in_port, in_info.mac, ip_len) {
            Ok(v) => v,
            Err(e) => Verdict::Drop(icmp_drop(e)),
        }
    } else if upper == Protocol::UDP || upper == Protocol::TCP {
        let l4 = &pkt.data()[ETH + IP6 + offset..ETH + h.ip_len];
        if !l4_checksum_ok6(h.src, h.dst, upper, l4) {
            Verdict::Drop(DropReason::LocalBadChecksum)
        } else if upper == Protocol::UDP {
            Verdict::Punt(PuntReason::PortUnreachable)
        } else {
            Verdict::Drop(DropReason::LocalUnsupported)
        }
    } else {
        Verdict::Drop(DropReason::LocalUnsupported)
    }
}

/// What a destination does with the extension headers before the upper
/// layer (RFC 8200 §4): `Err` with the verdict when it stops there.
#[cold]
fn destination_ext6(c: &netwire::ipv6ext::CheckedChain, meta: &mut PacketMeta) -> Result<(), Verdict> {
    if c.chain.fragment.is_some_and(|f| !f.is_atomic()) {
        return Err(Verdict::Drop(DropReason::LocalFragment));
    }
    if let Some(rt) = c.chain.routing.filter(|rt| rt.segments_left > 0) {
        let (reason, field) = match rt.routing_type {
            0 => (DropReason::Ipv6Rh0, 2),
            srh::ROUTING_TYPE => (DropReason::Ipv6RoutingHeader, 3),
            _ => (DropReason::Ipv6RoutingHeader, 2),
        };
        return Err(param_problem(meta, reason, 0, IP6 + rt.offset + field));
    }
    if let Some((at, kind, _)) = c.unknown_option {
        return Err(match unknown_action(kind) {
            UnknownAction::Skip => return Ok(()),
            UnknownAction::Discard => Verdict::Drop(DropReason::Ipv6UnknownOption),
            // The destination is one of our unicast addresses.
            UnknownAction::DiscardIcmp | UnknownAction::DiscardIcmpUnicast => {
                param_problem(meta, DropReason::Ipv6UnknownOption, 2, at)
            }
        });
    }
    Ok(())
}

/// Removes the `offset` octets of extension headers between the IPv6
/// header and an ICMPv6 message (an echo is answered without them);
/// returns the new IPv6 length.
#[cold]
fn strip_ext6<P: PacketBuf>(pkt: &mut P, offset: usize, ip_len: usize) -> usize {
    let new_len = ip_len - offset;
    let data = pkt.data_mut();
    data.copy_within(ETH + IP6 + offset..ETH + ip_len, ETH + IP6);
    let mut ip = ipv6::Packet::new_unchecked(&mut data[ETH..]);
    ip.set_payload_len((new_len - IP6) as u16);
    ip.set_next_header(Protocol::ICMPV6);
    let _ = pkt.set_len(ETH + new_len);
    new_len
}

/// Answers an ICMPv6 echo request (directly after the IPv6 header) in place,
/// back out of `in_port`. `Err(Unsupported)` for any other ICMPv6 message.
#[inline]
pub(crate) fn echo6<P: PacketBuf>(
    pkt: &mut P,
    in_port: u16,
    our_mac: [u8; 6],
    ip_len: usize,
) -> Result<Verdict, WireError> {
    let (eth_hdr, ip) = pkt.data_mut().split_at_mut(ETH);
    icmpv6::echo_request_to_reply(&mut ip[..ip_len])?;
    swap_macs(eth_hdr, our_mac);
    Ok(Verdict::Forward(in_port))
}

/// The drop of an ICMP message to us that is not answered.
fn icmp_drop(e: WireError) -> DropReason {
    match e {
        WireError::Unsupported => DropReason::LocalIcmpIgnored,
        _ => DropReason::LocalIcmpMalformed,
    }
}

/// True for ICMPv6 router/neighbour discovery (types 133..=137) directly
/// after the IPv6 header.
#[inline]
pub(crate) fn is_nd(frame: &[u8], h: &Ip6Header) -> bool {
    h.next_header == Protocol::ICMPV6
        && matches!(frame.get(ETH + ipv6::HEADER_LEN..ETH + h.ip_len).and_then(|icmp| icmp.first()), Some(133..=137))
}
