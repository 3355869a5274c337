//! Partial transport checksums from kernel hosts: recognised on input and
//! completed before any stage reads, translates or forwards the packet.
//!
//! A Linux host whose interface offers transmit checksum offload (every veth,
//! by default, and so every container) sends TCP and UDP with only the
//! pseudo-header sum in the checksum field (`CHECKSUM_PARTIAL`): its NIC is
//! supposed to finish the job. On a veth there is no NIC, and DPDK's
//! af_packet and af_xdp drivers hand the frame over as it is, without the
//! kernel's "checksum not ready" mark. Forwarded like that, the receiving
//! kernel drops it (`bad udp cksum`), NAT's incremental update keeps it
//! wrong, and the storage service refuses it.
//!
//! The field of such a packet equals the folded pseudo-header sum, so it can
//! be recognised per packet: [`complete4`] and [`complete6`] compute that sum
//! (about 20 instructions, no access beyond the headers) and only when the
//! field matches read the whole segment and write the full checksum
//! ([`netwire::checksum::complete_partial`], which also says why a complete
//! checksum that happens to match is left correct).
//!
//! What is looked at:
//! * IPv4: TCP and UDP that are not fragments (a kernel completes the
//!   checksum before it fragments; a UDP checksum of 0, none, never matches).
//! * IPv6: TCP and UDP right after the fixed header (the fast case); behind
//!   extension headers, walked with [`netwire::ipv6ext::walk`], with the
//!   pseudo-header's destination taken from an SRH's Segment List\[0\] (the
//!   final destination, which the sender's checksum covers, RFC 8200 §8.1);
//!   and one level of encapsulation (IPv6 or IPv4 after the extension
//!   headers: the kernel's `encap seg6`, whose partial checksum is the inner
//!   packet's).
//!
//! Limits: only the first transport header is looked at (one level of
//! encapsulation); ICMP and ICMPv6 are always complete (kernels compute them
//! in software). A packet too short or malformed for the walk is left as it
//! is for the later stages to judge. Super-frames (TSO/GSO, larger than the
//! MTU) cannot be completed into anything forwardable: input drops them as
//! `superframe` (see `input.rs`).
//!
//! Every function takes the whole frame and never panics on any input.

use netwire::checksum::{fill_from_partial, fold_small};
use netwire::ipv4::Protocol;
use netwire::{ipv4, ipv6, ipv6ext, srh};

/// Offset of the checksum field in a TCP header.
const TCP_CHECKSUM: usize = 16;
/// Offset of the checksum field in a UDP header.
const UDP_CHECKSUM: usize = 6;

/// Where a partial checksum was found, relative to the start of the outer IP
/// header: the transport segment `start..end` and its checksum field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Partial {
    start: u32,
    end: u32,
    /// UDP (checksum field at 6, RFC 768's 0 rule) or TCP (field at 16).
    udp: bool,
}

impl Partial {
    /// Writes the full checksum into the IP packet `ip` it was found in;
    /// true when that changed it (not a complete checksum that happened to
    /// equal the pseudo-header sum).
    #[cold]
    #[inline(never)]
    pub(crate) fn complete(self, ip: &mut [u8]) -> bool {
        let field = if self.udp { UDP_CHECKSUM } else { TCP_CHECKSUM };
        match ip.get_mut(self.start as usize..self.end as usize) {
            Some(segment) => fill_from_partial(segment, field, self.udp),
            None => false,
        }
    }
}

/// The checksum field's offset for TCP and UDP; `None` for anything else.
#[inline(always)]
fn checksum_field(protocol: u8) -> Option<usize> {
    match Protocol(protocol) {
        Protocol::TCP => Some(TCP_CHECKSUM),
        Protocol::UDP => Some(UDP_CHECKSUM),
        _ => None,
    }
}

// The pseudo-header is summed in little-endian words, without byte swaps: the
// one's-complement sum does not depend on byte order (RFC 1071 §2(B)), so the
// folded little-endian sum equals the checksum field read little-endian exactly
// when the big-endian ones are equal. Big-endian words of the header (protocol,
// length) enter byte-swapped.

/// Little-endian u32 at `at` of a slice known to hold it.
#[inline(always)]
fn le32(b: &[u8], at: usize) -> u64 {
    u64::from(u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]))
}

/// Sum of the four 32-bit words of the IPv6 address at `at` (unfolded).
#[inline(always)]
fn addr6(b: &[u8], at: usize) -> u64 {
    le32(b, at) + le32(b, at + 4) + le32(b, at + 8) + le32(b, at + 12)
}

/// The pseudo-header's protocol word and a 32-bit length, in little-endian words.
#[inline(always)]
fn protocol_and_length(protocol: u8, length: usize) -> u64 {
    (u64::from(protocol) << 8)
        + u64::from((length as u16).swap_bytes())
        + u64::from(((length >> 16) as u16).swap_bytes())
}

/// Folds an IPv6 pseudo-header accumulator (ten 32-bit words and two
/// 16-bit ones, below 2^36) without a loop: 64 to 33 bits, then
/// [`fold_small`]. IPv4's (below 2^34) goes to [`fold_small`] directly.
#[inline(always)]
fn fold_pseudo6(accumulator: u64) -> u16 {
    fold_small((accumulator & 0xffff_ffff) + (accumulator >> 32))
}

/// The segment `start..end` of `ip` (protocol `protocol`, checksum field at
/// `field`) if its checksum field holds `pseudo`, the folded pseudo-header
/// sum (in little-endian words).
#[inline(always)]
fn matches(ip: &[u8], start: usize, end: usize, protocol: u8, field: usize, pseudo: u16) -> Option<Partial> {
    let at = start + field;
    if at + 2 > end || end > ip.len() {
        return None;
    }
    let value = u16::from_le_bytes([ip[at], ip[at + 1]]);
    (value == pseudo).then_some(Partial { start: start as u32, end: end as u32, udp: protocol == Protocol::UDP.0 })
}

/// A partial TCP/UDP checksum in the IPv4 packet `ip` (its header accepted
/// by `ipv4::Packet::check`; checked again here when it is an inner one).
#[inline]
pub(crate) fn find4(ip: &[u8]) -> Option<Partial> {
    let header = ip.get(..ipv4::HEADER_LEN)?;
    let field = checksum_field(header[9])?;
    // More fragments, or an offset: not a whole datagram.
    if u16::from_be_bytes([header[6], header[7]]) & 0x3fff != 0 {
        return None;
    }
    let header_len = usize::from(header[0] & 0x0f) * 4;
    let total_len = usize::from(u16::from_be_bytes([header[2], header[3]]));
    let l4_len = total_len.checked_sub(header_len)?;
    let pseudo = fold_small(le32(header, 12) + le32(header, 16) + protocol_and_length(header[9], l4_len));
    matches(ip, header_len, total_len, header[9], field, pseudo)
}

/// A partial TCP/UDP checksum in the IPv6 packet `ip` (its header accepted
/// by `ipv6::Packet::check`).
#[inline]
pub(crate) fn find6(ip: &[u8]) -> Option<Partial> {
    let next_header = *ip.get(6)?;
    match checksum_field(next_header) {
        Some(field) => upper6(ip, 0, next_header, field, ipv6::HEADER_LEN, None),
        None if Protocol(next_header) == Protocol::IPV6_ROUTING => routed6(ip),
        None if ipv6ext::is_extension_header(Protocol(next_header)) => behind6(ip, 0, true),
        None => None,
    }
}

/// The SRv6 case without a walk: a Routing header right after the fixed
/// header and TCP/UDP right after it (an SRH's Segment List\[0\] is the
/// final destination); anything else is walked.
#[inline]
fn routed6(ip: &[u8]) -> Option<Partial> {
    let routing = ip.get(ipv6::HEADER_LEN..ipv6::HEADER_LEN + 8)?;
    let len = 8 + 8 * usize::from(routing[1]);
    match checksum_field(routing[0]) {
        Some(field) => {
            let final_dst = (routing[2] == srh::ROUTING_TYPE && len >= 24).then_some(ipv6::HEADER_LEN + 8);
            upper6(ip, 0, routing[0], field, ipv6::HEADER_LEN + len, final_dst)
        }
        None => behind6(ip, 0, true),
    }
}

/// The transport segment at `at + upper` of the IPv6 packet at `at` in `ip`,
/// over the pseudo-header with the packet's addresses, or with the final
/// destination at `final_dst` (an offset in `ip`).
#[inline(always)]
fn upper6(ip: &[u8], at: usize, protocol: u8, field: usize, upper: usize, final_dst: Option<usize>) -> Option<Partial> {
    let header = ip.get(at..at + ipv6::HEADER_LEN)?;
    let end = at + ipv6::HEADER_LEN + usize::from(u16::from_be_bytes([header[4], header[5]]));
    let l4_len = (end - at).checked_sub(upper)?;
    let dst = match final_dst {
        Some(d) => addr6(ip.get(d..d + 16)?, 0),
        None => addr6(header, 24),
    };
    let pseudo = fold_pseudo6(addr6(header, 8) + dst + protocol_and_length(protocol, l4_len));
    matches(ip, at + upper, end, protocol, field, pseudo)
}

/// The IPv6 packet at `at` has extension headers: walks them to the
/// transport header (final destination from an SRH) or, when `outer`, into
/// one encapsulated IPv6 or IPv4 packet.
#[cold]
#[inline(never)]
fn behind6(ip: &[u8], at: usize, outer: bool) -> Option<Partial> {
    let header = ip.get(at..at + ipv6::HEADER_LEN)?;
    let payload_start = at + ipv6::HEADER_LEN;
    let payload_end = payload_start + usize::from(u16::from_be_bytes([header[4], header[5]]));
    let payload = ip.get(payload_start..payload_end)?;
    let chain = ipv6ext::walk(Protocol(header[6]), payload).ok()?;
    if chain.fragment.is_some_and(|f| !f.is_atomic()) {
        return None;
    }
    let upper = ipv6::HEADER_LEN + chain.upper_layer_offset;
    let protocol = chain.upper_layer.0;
    if let Some(field) = checksum_field(protocol) {
        // Segment List[0] of an SRH (RFC 8754 §2) is the final destination.
        let final_dst = chain
            .routing
            .filter(|r| r.routing_type == srh::ROUTING_TYPE && r.len >= 24)
            .map(|r| payload_start + r.offset + 8);
        return upper6(ip, at, protocol, field, upper, final_dst);
    }
    let inner = at + upper;
    match (outer, chain.upper_layer) {
        (true, ipv6ext::IPV4_IN_IPV6) => {
            let inner_ip = ip.get(inner..payload_end)?;
            ipv4::Packet::new_checked(inner_ip).ok()?;
            let p = find4(inner_ip)?;
            Some(Partial { start: inner as u32 + p.start, end: inner as u32 + p.end, ..p })
        }
        (true, ipv6ext::IPV6_IN_IPV6) => {
            ipv6::Packet::new_checked(ip.get(inner..payload_end)?).ok()?;
            let next_header = ip[inner + 6];
            match checksum_field(next_header) {
                Some(field) => upper6(ip, inner, next_header, field, ipv6::HEADER_LEN, None),
                None => behind6(ip, inner, false),
            }
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netwire::checksum::{add, pseudo_header_v4, pseudo_header_v6, sum};
    use netwire::ethernet;
    use std::net::{Ipv4Addr, Ipv6Addr};

    /// Find and complete in a frame, as input does.
    fn complete4(frame: &mut [u8]) -> bool {
        let at = ethernet::HEADER_LEN.min(frame.len());
        let ip = &mut frame[at..];
        find4(ip).is_some_and(|p| p.complete(ip))
    }

    fn complete6(frame: &mut [u8]) -> bool {
        let at = ethernet::HEADER_LEN.min(frame.len());
        let ip = &mut frame[at..];
        find6(ip).is_some_and(|p| p.complete(ip))
    }

    const H1: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
    const H2: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);

    fn v6(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    fn eth(ethertype: u16) -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 1, 1, 2, 0, 0, 0, 1, 2];
        f.extend_from_slice(&ethertype.to_be_bytes());
        f
    }

    /// A TCP (protocol 6) or UDP (17) segment with a payload, checksum field zero.
    fn segment(protocol: u8, payload: &[u8]) -> Vec<u8> {
        let mut s = if protocol == 6 {
            let mut h = vec![0u8; 20];
            h[12] = 5 << 4;
            h
        } else {
            vec![0u8; 8]
        };
        s[0..4].copy_from_slice(&[0x9c, 0x40, 0x13, 0x88]);
        s.extend_from_slice(payload);
        if protocol == 17 {
            let len = s.len() as u16;
            s[4..6].copy_from_slice(&len.to_be_bytes());
        }
        s
    }

    fn field_of(protocol: u8) -> usize {
        if protocol == 6 {
            TCP_CHECKSUM
        } else {
            UDP_CHECKSUM
        }
    }

    /// Sets the segment's checksum field: `full` gives the complete checksum,
    /// otherwise the partial one (the pseudo-header sum). Returns the complete one.
    fn set_checksum(s: &mut [u8], protocol: u8, pseudo: u16, full: bool) -> u16 {
        let f = field_of(protocol);
        s[f..f + 2].fill(0);
        let c = !add(pseudo, sum(s));
        let c = if protocol == 17 && c == 0 { 0xffff } else { c };
        let v = if full { c } else { pseudo };
        s[f..f + 2].copy_from_slice(&v.to_be_bytes());
        c
    }

    fn ipv4_packet(protocol: u8, l4: &[u8], frag: u16) -> Vec<u8> {
        let mut ip = vec![0u8; 20];
        ipv4::emit_header(&mut ip, H1, H2, Protocol(protocol), 64, l4.len()).unwrap();
        ip[6..8].copy_from_slice(&frag.to_be_bytes());
        ip[10..12].fill(0);
        let c = netwire::checksum::checksum(&ip[..20]);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        ip.extend_from_slice(l4);
        ip
    }

    fn ipv6_packet(src: Ipv6Addr, dst: Ipv6Addr, next_header: u8, payload: &[u8]) -> Vec<u8> {
        let mut ip = vec![0x60, 0, 0, 0];
        ip.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        ip.extend_from_slice(&[next_header, 64]);
        ip.extend_from_slice(&src.octets());
        ip.extend_from_slice(&dst.octets());
        ip.extend_from_slice(payload);
        ip
    }

    /// An SRH with `segments` (Segment List\[0\] first) and Segments Left 1.
    fn srh(next_header: u8, segments: &[Ipv6Addr]) -> Vec<u8> {
        let n = segments.len() as u8;
        let mut h = vec![next_header, 2 * n, 4, 1, n - 1, 0, 0, 0];
        for s in segments {
            h.extend_from_slice(&s.octets());
        }
        h
    }

    fn field(frame: &[u8], at: usize, protocol: u8) -> u16 {
        netwire::read_u16(frame, at + field_of(protocol))
    }

    #[test]
    fn ipv4_tcp_and_udp_partial_are_completed() {
        for protocol in [6u8, 17] {
            let mut l4 = segment(protocol, b"some payload bytes");
            let pseudo = pseudo_header_v4(H1, H2, protocol, l4.len() as u16);
            let full = set_checksum(&mut l4, protocol, pseudo, false);
            let mut frame = [eth(0x0800), ipv4_packet(protocol, &l4, 0x4000)].concat();
            assert!(complete4(&mut frame), "protocol {protocol}");
            assert_eq!(field(&frame, 34, protocol), full);
            // Complete already: untouched.
            let before = frame.clone();
            assert!(!complete4(&mut frame));
            assert_eq!(frame, before);
        }
    }

    #[test]
    fn ipv4_fragments_and_other_protocols_are_left_alone() {
        let mut l4 = segment(17, b"abc");
        let pseudo = pseudo_header_v4(H1, H2, 17, l4.len() as u16);
        set_checksum(&mut l4, 17, pseudo, false);
        for frag in [0x2000u16, 0x0001] {
            let mut frame = [eth(0x0800), ipv4_packet(17, &l4, frag)].concat();
            let before = frame.clone();
            assert!(!complete4(&mut frame), "fragment {frag:#x}");
            assert_eq!(frame, before);
        }
        // ICMP whose bytes happen to look the same: never touched.
        let mut frame = [eth(0x0800), ipv4_packet(1, &l4, 0)].concat();
        assert!(!complete4(&mut frame));
    }

    #[test]
    fn ipv6_plain_partial_is_completed() {
        let (a, b) = (v6("2001:db8:1::2"), v6("2001:db8:2::2"));
        for protocol in [6u8, 17] {
            let mut l4 = segment(protocol, &[0xab; 33]);
            let pseudo = pseudo_header_v6(a, b, protocol, l4.len() as u32);
            let full = set_checksum(&mut l4, protocol, pseudo, false);
            let mut frame = [eth(0x86dd), ipv6_packet(a, b, protocol, &l4)].concat();
            assert!(complete6(&mut frame));
            assert_eq!(field(&frame, 54, protocol), full);
            assert!(!complete6(&mut frame));
        }
    }

    #[test]
    fn ipv6_srh_uses_the_final_destination() {
        // A storage request as objcli sends it: UDP behind an SRH, the checksum over
        // the final destination (Segment List[0]), the IPv6 destination the active SID.
        let (src, sid, last) = (v6("2001:db8:5::100"), v6("2001:db8:5a::1"), v6("2001:db8:5b::7"));
        let mut l4 = segment(17, b"request");
        let pseudo = pseudo_header_v6(src, last, 17, l4.len() as u32);
        let full = set_checksum(&mut l4, 17, pseudo, false);
        let payload = [srh(17, &[last, sid]), l4].concat();
        let mut frame = [eth(0x86dd), ipv6_packet(src, sid, 43, &payload)].concat();
        assert!(complete6(&mut frame));
        assert_eq!(field(&frame, 54 + 40, 17), full);
    }

    #[test]
    fn encapsulated_inner_partial_is_completed() {
        // The kernel's `encap seg6`: outer IPv6 + SRH, inner IPv6/TCP or IPv4/UDP
        // whose checksum is partial over the inner addresses.
        let (src, sid, dt6) = (v6("2001:db8:1::2"), v6("2001:db8:a::1"), v6("2001:db8:a::2"));
        let (a, b) = (v6("2001:db8:1::2"), v6("2001:db8:2::2"));
        let mut tcp = segment(6, &[7; 100]);
        let pseudo = pseudo_header_v6(a, b, 6, tcp.len() as u32);
        let full = set_checksum(&mut tcp, 6, pseudo, false);
        let inner = ipv6_packet(a, b, 6, &tcp);
        let payload = [srh(41, &[dt6, sid]), inner].concat();
        let mut frame = [eth(0x86dd), ipv6_packet(src, sid, 43, &payload)].concat();
        assert!(complete6(&mut frame));
        assert_eq!(field(&frame, 14 + 40 + 40 + 40, 6), full);

        let mut udp = segment(17, b"v4 inside");
        let pseudo = pseudo_header_v4(H1, H2, 17, udp.len() as u16);
        let full = set_checksum(&mut udp, 17, pseudo, false);
        let payload = [srh(4, &[dt6, sid]), ipv4_packet(17, &udp, 0)].concat();
        let mut frame = [eth(0x86dd), ipv6_packet(src, sid, 43, &payload)].concat();
        assert!(complete6(&mut frame));
        assert_eq!(field(&frame, 14 + 40 + 40 + 20, 17), full);
    }

    #[test]
    fn truncated_and_malformed_never_panic() {
        let (a, b) = (v6("2001:db8:1::2"), v6("2001:db8:2::2"));
        let mut l4 = segment(6, &[1; 40]);
        let pseudo = pseudo_header_v6(a, b, 6, l4.len() as u32);
        set_checksum(&mut l4, 6, pseudo, false);
        let payload = [srh(41, &[b, a]), ipv6_packet(a, b, 6, &l4)].concat();
        let whole = [eth(0x86dd), ipv6_packet(a, b, 43, &payload)].concat();
        for cut in 0..whole.len() {
            let mut f = whole[..cut].to_vec();
            complete6(&mut f);
            let mut f = whole[..cut].to_vec();
            complete4(&mut f);
        }
        // Lengths that claim more than the frame holds.
        let mut f = whole.clone();
        f[18..20].copy_from_slice(&0xffffu16.to_be_bytes());
        assert!(!complete6(&mut f));
    }
}
