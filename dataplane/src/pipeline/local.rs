//! Local delivery: packets addressed to the node itself (its port
//! addresses, replica addresses that are not storage requests, SIDs with
//! an upper layer the node answers).
//!
//! * ICMP / ICMPv6 echo requests are answered in place (addresses and MACs
//!   swapped, checksums updated) out of the receiving port;
//! * neighbour discovery (ICMPv6 133-137) is punted to the control core;
//! * UDP is punted for an ICMP port unreachable (no local UDP service here:
//!   the storage service has its own hand-off);
//! * anything else is dropped by name.

use netwire::ipv4::Protocol;
use netwire::{ethernet, icmpv4, icmpv6, ipv6, PacketBuf, WireError};

use super::input::{Ip4Header, Ip6Header};
use super::{swap_macs, Verdict};
use crate::fib::PortInfo;
use crate::stats::{DropReason, PuntReason};

const ETH: usize = ethernet::HEADER_LEN;

/// IPv4 to one of our addresses.
#[inline]
pub(crate) fn deliver4<P: PacketBuf>(pkt: &mut P, in_port: u16, in_info: &PortInfo, h: &Ip4Header) -> Verdict {
    if h.proto == Protocol::ICMP {
        let (eth_hdr, ip) = pkt.data_mut().split_at_mut(ETH);
        match icmpv4::echo_request_to_reply(&mut ip[..usize::from(h.total_len)]) {
            Ok(()) => {
                swap_macs(eth_hdr, in_info.mac);
                Verdict::Forward(in_port)
            }
            Err(e) => Verdict::Drop(icmp_drop(e)),
        }
    } else if h.proto == Protocol::UDP {
        Verdict::Punt(PuntReason::PortUnreachable)
    } else {
        Verdict::Drop(DropReason::LocalUnsupported)
    }
}

/// IPv6 to one of our addresses (no extension headers considered: the
/// next header is the upper layer, or the packet is not for a service here).
#[inline]
pub(crate) fn deliver6<P: PacketBuf>(pkt: &mut P, in_port: u16, in_info: &PortInfo, h: &Ip6Header) -> Verdict {
    if h.next_header == Protocol::ICMPV6 {
        if is_nd(pkt.data(), h) {
            return Verdict::Punt(PuntReason::Nd);
        }
        match echo6(pkt, in_port, in_info.mac, h.ip_len) {
            Ok(v) => v,
            Err(e) => Verdict::Drop(icmp_drop(e)),
        }
    } else if h.next_header == Protocol::UDP {
        Verdict::Punt(PuntReason::PortUnreachable)
    } else {
        Verdict::Drop(DropReason::LocalUnsupported)
    }
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
