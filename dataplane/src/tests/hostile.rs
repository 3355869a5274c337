//! Unit tests of the input checks an attacker on a connected segment meets
//! (issue 14): RFC 1812/1122 IPv4 checks, IPv6 extension headers and scope,
//! what the node answers for itself, ARP and ND validation. Set-up: the
//! fixture of `l3.rs`.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use crate::fib::neigh::{NeighborState, NeighborTable};
use crate::pipeline::{Pipeline, Verdict};
use crate::slowpath::{SlowPath, SlowPathConfig};
use crate::stats::{param_problem_parts, param_problem_reason, ControlCounters, DropReason, IcmpErrorKind, PuntReason};
use crate::tests::l3::fixture::*;
use netwire::ipv4::Protocol;
use netwire::ipv6opt::ExtLimits;
use netwire::{arp, checksum, ethernet, icmpv4, icmpv6, ipv4, ipv6, MacAddr, PacketBuf, VecBuf, VecPool};

fn drop_(r: DropReason) -> Verdict {
    Verdict::Drop(r)
}

/// The verdict and punt argument of `frame` on `port`, asserting that a
/// refused frame is unchanged.
fn verdict(l3: &Pipeline, frame: &[u8], port: u16) -> (Verdict, u32) {
    let mut f = frame.to_vec();
    let (v, arg) = l3_process_arg(l3, &mut f, port);
    if !matches!(v, Verdict::Forward(_)) {
        assert_eq!(f, frame, "a refused frame changed ({v:?})");
    }
    (v, arg)
}

fn assert_drop(l3: &Pipeline, frame: &[u8], r: DropReason) {
    assert_eq!(verdict(l3, frame, IN).0, drop_(r));
}

/// Asserts a parameter problem punt: (reason counted, code, pointer).
fn assert_param_problem(l3: &Pipeline, frame: &[u8], reason: DropReason, code: u8, pointer: u32) {
    let (v, arg) = verdict(l3, frame, IN);
    assert_eq!(v, Verdict::Punt(PuntReason::ParamProblem));
    assert_eq!(param_problem_reason(arg), reason);
    assert_eq!(param_problem_parts(arg), (code, pointer));
}

/// An IPv4 packet with `options` (padded to 4 octets with End) before the
/// payload of `base` (a packet without options).
fn with_options(base: &[u8], options: &[u8]) -> Vec<u8> {
    let mut opts = options.to_vec();
    while !opts.len().is_multiple_of(4) {
        opts.push(0);
    }
    let mut ip = base[..20].to_vec();
    ip.extend_from_slice(&opts);
    ip.extend_from_slice(&base[20..]);
    let mut p = ipv4::Packet::new_unchecked(&mut ip[..]);
    p.set_header_len(20 + opts.len());
    p.set_total_len((base.len() + opts.len()) as u16);
    p.fill_checksum();
    ip
}

fn set_frag(ip: &mut [u8], offset_bytes: u16, more: bool) {
    let mut p = ipv4::Packet::new_unchecked(ip);
    p.set_frag_offset_bytes(offset_bytes);
    p.set_more_frags(more);
    p.fill_checksum();
}

// ---- IPv4 --------------------------------------------------------------------------

#[test]
fn ipv4_options_are_checked_before_forwarding() {
    let (l3, _w) = build_l3_resolved();
    let base = udp4(HOST_V4, NEIGH_V4, 9, 12);
    // Record Route with room, and Router Alert: forwarded with the options.
    for opts in [&[7u8, 7, 4, 0, 0, 0, 0][..], &[148, 4, 0, 0]] {
        let orig = frame4(IN_MAC, HOST_MAC, &with_options(&base, opts));
        let mut f = orig.clone();
        assert_eq!(l3_process(&l3, &mut f, IN), Verdict::Forward(OUT));
        check_forwarded_v4(&f, &orig, NEIGH_MAC, OUT_MAC);
    }
    // A malformed option: parameter problem pointing at its octet (20 + offset).
    // NOP, then a Record Route whose length (9) runs past the options.
    let f = frame4(IN_MAC, HOST_MAC, &with_options(&base, &[1, 7, 9, 4, 0, 0, 0, 0]));
    assert_param_problem(&l3, &f, DropReason::Ipv4BadOption, 0, 22);
    // NOP, then a Record Route whose pointer (9) is past its length + 1.
    let f = frame4(IN_MAC, HOST_MAC, &with_options(&base, &[1, 7, 7, 9, 0, 0, 0, 0]));
    assert_param_problem(&l3, &f, DropReason::Ipv4BadOption, 0, 23);
    let f = frame4(IN_MAC, HOST_MAC, &with_options(&base, &[1, 1, 1, 30]));
    assert_param_problem(&l3, &f, DropReason::Ipv4BadOption, 0, 23);
    // Also when addressed to us: never answered as is.
    let f = frame4(IN_MAC, HOST_MAC, &with_options(&echo4(HOST_V4, IN_V4, 64, 1, 1, b"x"), &[68, 8, 5, 2, 0, 0, 0, 0]));
    assert_param_problem(&l3, &f, DropReason::Ipv4BadOption, 0, 23);
    // Source routes are dropped (RFC 7126).
    for kind in [131u8, 137] {
        let f = frame4(IN_MAC, HOST_MAC, &with_options(&base, &[kind, 7, 4, 198, 51, 100, 2]));
        assert_drop(&l3, &f, DropReason::Ipv4SourceRoute);
    }
}

#[test]
fn ipv4_parameter_problem_is_sent_by_the_control_core() {
    let mut rig = SpRig::new();
    let base = udp4(HOST_V4, NEIGH_V4, 9, 12);
    let f = frame4(IN_MAC, HOST_MAC, &with_options(&base, &[7, 6, 4, 0, 0, 0]));
    let sent = rig.punt(&f, IN, PuntReason::ParamProblem);
    assert_eq!(sent.len(), 1);
    let icmp = icmp4_of(sent[0].data());
    assert_eq!((icmp.msg_type(), icmp.msg_code()), (icmpv4::Message::PARAMETER_PROBLEM, 0));
    assert_eq!(icmp.rest_of_header() >> 24, 21, "pointer at the option's length octet");
    assert_eq!(rig.c.drops.get(DropReason::Ipv4BadOption), 1);
    assert_eq!(rig.c.icmp_errors.get(IcmpErrorKind::V4ParamProblem), 1);
}

#[test]
fn ipv4_martians_per_rfc_1812() {
    let (l3, _w) = build_l3_resolved();
    for src in [[240, 0, 0, 1], [255, 0, 0, 1], [192, 0, 2, 255], [192, 0, 2, 1]] {
        let f = frame4(IN_MAC, HOST_MAC, &udp4(Ipv4Addr::from(src), NEIGH_V4, 64, 4));
        assert_drop(&l3, &f, DropReason::Ipv4MartianSource);
    }
    // The documentation and shared ranges are ordinary unicast.
    for dst in [[203, 0, 113, 9], [198, 51, 100, 2]] {
        let mut f = frame4(IN_MAC, HOST_MAC, &udp4(HOST_V4, Ipv4Addr::from(dst), 64, 4));
        assert_eq!(l3_process(&l3, &mut f, IN), Verdict::Forward(OUT));
    }
    // Directed broadcast of the outside subnet, and of our own.
    for dst in [[198, 51, 100, 255], [192, 0, 2, 255]] {
        let f = frame4(IN_MAC, HOST_MAC, &udp4(HOST_V4, Ipv4Addr::from(dst), 64, 4));
        assert_drop(&l3, &f, DropReason::Ipv4DirectedBroadcast);
    }
    // Link-local: never forwarded, either way.
    let f = frame4(IN_MAC, HOST_MAC, &udp4(Ipv4Addr::new(169, 254, 1, 1), NEIGH_V4, 64, 4));
    assert_drop(&l3, &f, DropReason::Ipv4LinkLocal);
    let f = frame4(IN_MAC, HOST_MAC, &udp4(HOST_V4, Ipv4Addr::new(169, 254, 1, 1), 64, 4));
    assert_drop(&l3, &f, DropReason::Ipv4LinkLocal);
}

#[test]
fn ipv4_fragments_are_forwarded_and_checked() {
    let (l3, _w) = build_l3_resolved();
    // A first and a middle fragment of a UDP datagram are forwarded as they are.
    for (offset, more) in [(0u16, true), (1480, true), (2960, false)] {
        let mut ip = udp4(HOST_V4, NEIGH_V4, 64, 16);
        set_frag(&mut ip, offset, more);
        let orig = frame4(IN_MAC, HOST_MAC, &ip);
        let mut f = orig.clone();
        assert_eq!(l3_process(&l3, &mut f, IN), Verdict::Forward(OUT), "offset {offset}");
        check_forwarded_v4(&f, &orig, NEIGH_MAC, OUT_MAC);
    }
    // Past 65535 octets (ping of death), and a non-last fragment of 20 octets.
    let mut ip = udp4(HOST_V4, NEIGH_V4, 64, 16);
    set_frag(&mut ip, 65528, false);
    assert_drop(&l3, &frame4(IN_MAC, HOST_MAC, &ip), DropReason::Ipv4FragmentMalformed);
    let mut ip = udp4(HOST_V4, NEIGH_V4, 64, 12);
    set_frag(&mut ip, 0, true);
    assert_drop(&l3, &frame4(IN_MAC, HOST_MAC, &ip), DropReason::Ipv4FragmentMalformed);
    // RFC 1858 tiny fragments: TCP at offset 8, a first fragment without the ports.
    let mut ip = tcp4(HOST_V4, NEIGH_V4, 64);
    set_frag(&mut ip, 8, false);
    assert_drop(&l3, &frame4(IN_MAC, HOST_MAC, &ip), DropReason::Ipv4TinyFragment);
    let mut ip = ipv4_packet(HOST_V4, NEIGH_V4, Protocol::UDP, 64, &[0; 0]);
    set_frag(&mut ip, 0, true);
    assert_drop(&l3, &frame4(IN_MAC, HOST_MAC, &ip), DropReason::Ipv4TinyFragment);
    // To us: no reassembly.
    let mut ip = echo4(HOST_V4, IN_V4, 64, 1, 1, &[0; 16]);
    set_frag(&mut ip, 0, true);
    assert_drop(&l3, &frame4(IN_MAC, HOST_MAC, &ip), DropReason::LocalFragment);
}

#[test]
fn transport_checksums_are_verified_before_the_node_answers() {
    let (l3, _w) = build_l3_resolved();
    // Good UDP to us: port unreachable; a flipped bit: silently discarded.
    let good = udp4(HOST_V4, IN_V4, 64, 8);
    assert_eq!(verdict(&l3, &frame4(IN_MAC, HOST_MAC, &good), IN).0, Verdict::Punt(PuntReason::PortUnreachable));
    let mut bad = good.clone();
    *bad.last_mut().unwrap() ^= 1;
    assert_drop(&l3, &frame4(IN_MAC, HOST_MAC, &bad), DropReason::LocalBadChecksum);
    // A UDP length that disagrees with the IP length.
    let mut bad = good.clone();
    bad[24..26].copy_from_slice(&9u16.to_be_bytes());
    assert_drop(&l3, &frame4(IN_MAC, HOST_MAC, &bad), DropReason::LocalBadChecksum);
    // No checksum (0) is allowed over IPv4.
    let mut none = good.clone();
    none[26..28].fill(0);
    assert_eq!(verdict(&l3, &frame4(IN_MAC, HOST_MAC, &none), IN).0, Verdict::Punt(PuntReason::PortUnreachable));
    // TCP: checked, then not served.
    let tcp = tcp4(HOST_V4, IN_V4, 64);
    assert_drop(&l3, &frame4(IN_MAC, HOST_MAC, &tcp), DropReason::LocalUnsupported);
    let mut bad = tcp.clone();
    bad[20 + 4] ^= 1;
    assert_drop(&l3, &frame4(IN_MAC, HOST_MAC, &bad), DropReason::LocalBadChecksum);
    // IPv6: UDP with a zero checksum, and a bad one.
    let good6 = udp6(HOST_V6, IN_V6, 64, 8);
    assert_eq!(verdict(&l3, &frame6(IN_MAC, HOST_MAC, &good6), IN).0, Verdict::Punt(PuntReason::PortUnreachable));
    let mut zero = good6.clone();
    zero[46..48].fill(0);
    assert_drop(&l3, &frame6(IN_MAC, HOST_MAC, &zero), DropReason::LocalBadChecksum);
    let mut bad = good6.clone();
    *bad.last_mut().unwrap() ^= 0x80;
    assert_drop(&l3, &frame6(IN_MAC, HOST_MAC, &bad), DropReason::LocalBadChecksum);
    let mut bad = tcp6(HOST_V6, IN_V6, 64);
    bad[40 + 4] ^= 1;
    assert_drop(&l3, &frame6(IN_MAC, HOST_MAC, &bad), DropReason::LocalBadChecksum);
}

#[test]
fn answers_never_exceed_the_mtu() {
    // The inside port's MTU is 1500: a 1600-octet echo request (from a peer
    // with a larger MTU) is not answered with a 1600-octet reply.
    let (l3, _w) = build_l3_resolved();
    let f = frame4(IN_MAC, HOST_MAC, &echo4(HOST_V4, IN_V4, 64, 1, 1, &[7; 1572]));
    assert_drop(&l3, &f, DropReason::LocalReplyTooBig);
    let f = frame6(IN_MAC, HOST_MAC, &echo6(HOST_V6, IN_V6, 64, 1, 1, &[7; 1552]));
    assert_drop(&l3, &f, DropReason::LocalReplyTooBig);
    let mut f = frame4(IN_MAC, HOST_MAC, &echo4(HOST_V4, IN_V4, 64, 1, 1, &[7; 1472]));
    assert_eq!(l3_process(&l3, &mut f, IN), Verdict::Forward(IN), "exactly the MTU is answered");
}

#[test]
fn icmp_errors_fit_a_small_mtu() {
    // Outside MTU 576 - 8: a time exceeded quoting a 560-octet packet is cut.
    let (l3, mut w) = build_l3(568);
    resolve_all(&mut w);
    let c = Arc::new(ControlCounters::default());
    let mut sp = SlowPath::new(l3.clone(), w, sp_cfg(), c.clone());
    let f = frame4(OUT_MAC, NEIGH_MAC, &udp4(NEIGH_V4, HOST_V4, 1, 532));
    let mut sent = Vec::new();
    let mut pool = VecPool { remaining: 10 };
    sp.handle(VecBuf::from_frame(&f, OUT), PuntReason::TtlExpired, 0, 0, &mut pool, &mut |p| sent.push(p));
    assert_eq!(sent.len(), 1);
    let ip = ip4_of(sent[0].data());
    assert!(usize::from(ip.total_len()) <= 568, "{}", ip.total_len());
}

// ---- IPv6 ----------------------------------------------------------------------------

/// An IPv6 packet with the raw extension headers `ext` (the first one's
/// type is `first`) before an upper layer `upper` of type `upper_nh`.
fn ext6(src: Ipv6Addr, dst: Ipv6Addr, first: u8, ext: &[u8], upper_nh: u8, upper: &[u8]) -> Vec<u8> {
    let mut payload = ext.to_vec();
    payload.extend_from_slice(upper);
    let mut p = ipv6_packet(src, dst, Protocol(first), 64, &payload);
    // The last extension header names the upper layer.
    let _ = upper_nh;
    p.truncate(40 + payload.len());
    p
}

/// An options header (Hop-by-Hop or Destination Options) naming `next`.
fn opts_hdr(next: u8, options: &[u8]) -> Vec<u8> {
    let mut h = vec![next, 0];
    h.extend_from_slice(options);
    while h.len() % 8 != 0 {
        h.push(0); // Pad1
    }
    h[1] = (h.len() / 8 - 1) as u8;
    h
}

/// The UDP body of `udp6(src, dst, ..)` with its checksum (the upper layer
/// behind extension headers checksums the same).
fn udp_body6(src: Ipv6Addr, dst: Ipv6Addr) -> Vec<u8> {
    udp6(src, dst, 64, 8)[40..].to_vec()
}

#[test]
fn extension_header_limits_are_counted_drops_with_rfc_8883_codes() {
    let (l3, _w) = build_l3_resolved();
    let l3 =
        Arc::new(Pipeline::new(ports(1500), &routes(), l3.neighbors().clone()).unwrap().with_ext_limits(ExtLimits {
            headers_max: 3,
            options_max: 2,
            option_bytes_max: 8,
            ..ExtLimits::default()
        }));
    let up = udp_body6(HOST_V6, NEIGH_V6);
    // Three Destination Options headers pass, four do not.
    let chain = |n: usize| {
        let mut v = Vec::new();
        for i in 0..n {
            v.extend(opts_hdr(if i + 1 == n { 17 } else { 60 }, &[1, 4, 0, 0, 0, 0]));
        }
        v
    };
    let mut f = frame6(IN_MAC, HOST_MAC, &ext6(HOST_V6, NEIGH_V6, 60, &chain(3), 17, &up));
    assert_eq!(l3_process(&l3, &mut f, IN), Verdict::Forward(OUT));
    let f = frame6(IN_MAC, HOST_MAC, &ext6(HOST_V6, NEIGH_V6, 60, &chain(4), 17, &up));
    assert_param_problem(&l3, &f, DropReason::Ipv6ExtTooMany, 8, 40 + 24);
    // Three options in a header (limit 2), an option of 10 octets (limit 8).
    let f =
        frame6(IN_MAC, HOST_MAC, &ext6(HOST_V6, NEIGH_V6, 60, &opts_hdr(17, &[0x1e, 0, 0x1e, 0, 0x1e, 0]), 17, &up));
    assert_param_problem(&l3, &f, DropReason::Ipv6ExtTooManyOptions, 9, 40 + 6);
    let f = frame6(
        IN_MAC,
        HOST_MAC,
        &ext6(HOST_V6, NEIGH_V6, 60, &opts_hdr(17, &[0x1e, 10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]), 17, &up),
    );
    assert_param_problem(&l3, &f, DropReason::Ipv6ExtOptionTooBig, 10, 40 + 3);
    // An option running past its header, a Hop-by-Hop header second.
    let f = frame6(IN_MAC, HOST_MAC, &ext6(HOST_V6, NEIGH_V6, 60, &opts_hdr(17, &[0x1e, 5, 0, 0, 0, 0]), 17, &up));
    assert_param_problem(&l3, &f, DropReason::Ipv6ExtMalformed, 0, 40 + 3);
    let hdrs = [opts_hdr(0, &[1, 4, 0, 0, 0, 0]), opts_hdr(17, &[1, 4, 0, 0, 0, 0])].concat();
    let f = frame6(IN_MAC, HOST_MAC, &ext6(HOST_V6, NEIGH_V6, 60, &hdrs, 17, &up));
    assert_param_problem(&l3, &f, DropReason::Ipv6ExtMalformed, 1, 40);
    // A first fragment without its UDP header (RFC 7112).
    let frag = [17u8, 0, 0, 1, 0, 0, 0, 9];
    let f = frame6(IN_MAC, HOST_MAC, &ext6(HOST_V6, NEIGH_V6, 44, &frag, 17, &[]));
    assert_param_problem(&l3, &f, DropReason::Ipv6IncompleteChain, 3, 0);
}

#[test]
fn jumbo_payload_per_rfc_2675() {
    let (l3, _w) = build_l3_resolved();
    let jumbo = |len: u32| {
        let mut o = vec![0xc2, 4];
        o.extend(len.to_be_bytes());
        opts_hdr(17, &o)
    };
    let with_plen0 = |hbh: Vec<u8>| {
        let mut p = ext6(HOST_V6, NEIGH_V6, 0, &hbh, 17, &udp_body6(HOST_V6, NEIGH_V6));
        p[4..6].fill(0);
        frame6(IN_MAC, HOST_MAC, &p)
    };
    // Payload length 0 without a Jumbo option: pointer at the payload length.
    assert_param_problem(&l3, &with_plen0(opts_hdr(17, &[1, 4, 0, 0, 0, 0])), DropReason::Ipv6Jumbo, 0, 4);
    // A jumbo length below 65536: pointer at its high-order octet.
    assert_param_problem(&l3, &with_plen0(jumbo(1000)), DropReason::Ipv6Jumbo, 0, 40 + 4);
    // A well-formed jumbogram cannot be whole in any frame here.
    assert_drop(&l3, &with_plen0(jumbo(70000)), DropReason::Ipv6Jumbo);
    // A Jumbo option with a non-zero payload length: pointer at the option.
    let f = frame6(IN_MAC, HOST_MAC, &ext6(HOST_V6, NEIGH_V6, 0, &jumbo(70000), 17, &udp_body6(HOST_V6, NEIGH_V6)));
    assert_param_problem(&l3, &f, DropReason::Ipv6Jumbo, 0, 40 + 2);
}

#[test]
fn destination_processing_of_extension_headers() {
    let (l3, _w) = build_l3_resolved();
    // RH0 with Segments Left > 0 to us: parameter problem at the type.
    let rh0 = [58u8, 2, 0, 1, 0, 0, 0, 0, 0x20, 1, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9];
    let echo = echo6(HOST_V6, IN_V6, 64, 1, 1, b"ping")[40..].to_vec();
    let f = frame6(IN_MAC, HOST_MAC, &ext6(HOST_V6, IN_V6, 43, &rh0, 58, &echo));
    assert_param_problem(&l3, &f, DropReason::Ipv6Rh0, 0, 42);
    // In transit RH0 is not ours to process: forwarded.
    let echo_n = echo6(HOST_V6, NEIGH_V6, 64, 1, 1, b"ping")[40..].to_vec();
    let mut f = frame6(IN_MAC, HOST_MAC, &ext6(HOST_V6, NEIGH_V6, 43, &rh0, 58, &echo_n));
    assert_eq!(l3_process(&l3, &mut f, IN), Verdict::Forward(OUT));
    // An SRH with Segments Left > 0 to an address that is not a SID: at Segments Left.
    let mut srh = rh0;
    srh[2] = 4;
    let f = frame6(IN_MAC, HOST_MAC, &ext6(HOST_V6, IN_V6, 43, &srh, 58, &echo));
    assert_param_problem(&l3, &f, DropReason::Ipv6RoutingHeader, 0, 43);
    // Unknown options to us: skip (answered, headers removed), discard, or parameter problem code 2.
    let f = frame6(IN_MAC, HOST_MAC, &ext6(HOST_V6, IN_V6, 60, &opts_hdr(58, &[0x1e, 0]), 58, &echo));
    let mut out = f.clone();
    assert_eq!(l3_process(&l3, &mut out, IN), Verdict::Forward(IN));
    let ip = ip6_of(&out);
    assert_eq!((ip.next_header(), usize::from(ip.payload_len())), (Protocol::ICMPV6, echo.len()));
    let icmp = icmp6_of(&out);
    assert_eq!(icmp.msg_type(), icmpv6::Message::ECHO_REPLY);
    assert!(icmp.verify_checksum(IN_V6, HOST_V6));
    let f = frame6(IN_MAC, HOST_MAC, &ext6(HOST_V6, IN_V6, 60, &opts_hdr(58, &[0x5e, 0]), 58, &echo));
    assert_drop(&l3, &f, DropReason::Ipv6UnknownOption);
    let f = frame6(IN_MAC, HOST_MAC, &ext6(HOST_V6, IN_V6, 0, &opts_hdr(58, &[0x9e, 0]), 58, &echo));
    assert_param_problem(&l3, &f, DropReason::Ipv6UnknownOption, 2, 42);
    // In transit, Hop-by-Hop options are not processed (RFC 8200 §4.3).
    let mut f = frame6(IN_MAC, HOST_MAC, &ext6(HOST_V6, NEIGH_V6, 0, &opts_hdr(58, &[0x9e, 0]), 58, &echo_n));
    assert_eq!(l3_process(&l3, &mut f, IN), Verdict::Forward(OUT));
    // A fragment to us (not atomic): not reassembled.
    let frag = [58u8, 0, 0, 1, 0, 0, 0, 9];
    let f = frame6(IN_MAC, HOST_MAC, &ext6(HOST_V6, IN_V6, 44, &frag, 58, &echo));
    assert_drop(&l3, &f, DropReason::LocalFragment);
}

#[test]
fn ipv6_martians_and_scope() {
    let (l3, _w) = build_l3_resolved();
    let mapped: Ipv6Addr = "::ffff:192.0.2.2".parse().unwrap();
    let f = frame6(IN_MAC, HOST_MAC, &udp6(mapped, NEIGH_V6, 64, 4));
    assert_drop(&l3, &f, DropReason::Ipv6MartianSource);
    for dst in ["::", "::1", "::ffff:198.51.100.2"] {
        let f = frame6(IN_MAC, HOST_MAC, &udp6(HOST_V6, dst.parse().unwrap(), 64, 4));
        assert_drop(&l3, &f, DropReason::Ipv6MartianDestination);
    }
}

// ---- ARP and ND ---------------------------------------------------------------------

fn sp_cfg() -> SlowPathConfig {
    SlowPathConfig { icmp_errors_per_s: 1_000_000, icmp_errors_burst: 1_000_000, ..SlowPathConfig::default() }
}

struct SpRig {
    sp: SlowPath<VecBuf>,
    l3: Arc<Pipeline>,
    table: Arc<NeighborTable>,
    c: Arc<ControlCounters>,
    pool: VecPool,
}

impl SpRig {
    fn new() -> SpRig {
        let (l3, writer) = build_l3(1500);
        let table = l3.neighbors().clone();
        let c = Arc::new(ControlCounters::default());
        let sp = SlowPath::new(l3.clone(), writer, sp_cfg(), c.clone());
        SpRig { sp, l3, table, c, pool: VecPool { remaining: 1_000_000 } }
    }

    /// Runs `frame` through the worker (it must punt it for `reason`), then the slow path.
    fn punt(&mut self, frame: &[u8], port: u16, reason: PuntReason) -> Vec<VecBuf> {
        let mut f = frame.to_vec();
        let (v, arg) = l3_process_arg(&self.l3, &mut f, port);
        assert_eq!(v, Verdict::Punt(reason), "worker verdict");
        let mut sent = Vec::new();
        self.sp.handle(VecBuf::from_frame(frame, port), reason, arg, 0, &mut self.pool, &mut |p| sent.push(p));
        sent
    }

    /// The drop counters that moved (reason, count).
    fn drops(&self) -> Vec<(DropReason, u64)> {
        DropReason::ALL.iter().map(|&r| (r, self.c.drops.get(r))).filter(|&(_, n)| n > 0).collect()
    }
}

fn arp(op: u16, sha: [u8; 6], spa: Ipv4Addr, tha: [u8; 6], tpa: Ipv4Addr) -> Vec<u8> {
    let mut a = vec![0u8; arp::PACKET_LEN];
    {
        let mut p = arp::Packet::new_unchecked(&mut a[..]);
        p.set_hardware_type(1);
        p.set_protocol_type(0x0800);
        p.set_hardware_len(6);
        p.set_protocol_len(4);
        p.set_operation(arp::Operation(op));
        p.set_sender_hardware_addr(MacAddr(sha));
        p.set_sender_protocol_addr(spa);
        p.set_target_hardware_addr(MacAddr(tha));
        p.set_target_protocol_addr(tpa);
    }
    pad60(eth(BROADCAST, sha, ethernet::EtherType::ARP.0, &a))
}

#[test]
fn every_arp_packet_is_answered_learned_or_dropped_by_name() {
    let cases: [(Vec<u8>, DropReason); 6] = [
        (arp(3, HOST_MAC, HOST_V4, [0; 6], IN_V4), DropReason::ArpUnsupportedOp),
        (arp(8, HOST_MAC, HOST_V4, [0; 6], IN_V4), DropReason::ArpUnsupportedOp),
        (arp(1, HOST_MAC, Ipv4Addr::new(224, 0, 0, 1), [0; 6], IN_V4), DropReason::ArpMartianSender),
        (arp(1, HOST_MAC, Ipv4Addr::new(192, 0, 2, 255), [0; 6], IN_V4), DropReason::ArpMartianSender),
        (arp(2, HOST_MAC, IN_V4, IN_MAC, IN_V4), DropReason::ArpAddressConflict),
        (arp(1, HOST_MAC, NEIGH_V4, [0; 6], IN_V4), DropReason::ArpSenderNotOnLink),
    ];
    for (frame, reason) in cases {
        let mut rig = SpRig::new();
        assert!(rig.punt(&frame, IN, PuntReason::Arp).is_empty());
        assert_eq!(rig.drops(), vec![(reason, 1)]);
        assert!(rig.table.is_empty(), "{reason:?}: nothing learned");
    }
    // A probe (sender 0.0.0.0) for our address is answered, teaches nothing.
    let mut rig = SpRig::new();
    let sent = rig.punt(&arp(1, HOST_MAC, Ipv4Addr::UNSPECIFIED, [0; 6], IN_V4), IN, PuntReason::Arp);
    assert_eq!(sent.len(), 1);
    let a = arp::Packet::new_checked(&sent[0].data()[14..]).unwrap();
    assert_eq!((a.operation(), a.target_protocol_addr()), (arp::Operation::REPLY, Ipv4Addr::UNSPECIFIED));
    assert!(rig.table.is_empty());
    // A probe for another address: not for us.
    assert!(rig.punt(&arp(1, HOST_MAC, Ipv4Addr::UNSPECIFIED, [0; 6], HOST_V4), IN, PuntReason::Arp).is_empty());
    assert_eq!(rig.drops(), vec![(DropReason::ArpNotForUs, 1)]);
    // A gratuitous ARP from a known neighbour updates it and is no drop.
    let mut rig = SpRig::new();
    assert_eq!(rig.punt(&arp(1, HOST_MAC, HOST_V4, [0; 6], IN_V4), IN, PuntReason::Arp).len(), 1);
    let new_mac = [2, 0, 0, 0, 1, 0x77];
    assert!(rig.punt(&arp(1, new_mac, HOST_V4, [0; 6], HOST_V4), IN, PuntReason::Arp).is_empty());
    assert_eq!(rig.table.lookup(IN, v4(HOST_V4)), Some(new_mac));
    assert!(rig.drops().is_empty());
    assert_eq!(rig.c.neighbors_learned.get(), 2);
}

fn nd_frame(dst_mac: [u8; 6], src_mac: [u8; 6], ip: &[u8]) -> Vec<u8> {
    frame6(dst_mac, src_mac, ip)
}

#[test]
fn every_nd_message_is_answered_learned_or_dropped_by_name() {
    let all_routers = [0x33, 0x33, 0, 0, 0, 2];
    let all_nodes = [0x33, 0x33, 0, 0, 0, 1];
    // RS, RA, redirect: valid, ignored by name.
    let rs = icmp6(host_ll(), ipv6::ALL_ROUTERS, 255, 133, 0, 0, &[]);
    let ra = icmp6(host_ll(), ipv6::ALL_NODES, 255, 134, 0, 0, &[0; 8]);
    let mut redirect_body = vec![0u8; 32];
    redirect_body[..16].copy_from_slice(&HOST_V6.octets());
    redirect_body[16..].copy_from_slice(&NEIGH_V6.octets());
    let redirect = icmp6(host_ll(), in_ll(), 255, 137, 0, 0, &redirect_body);
    let cases = [
        (nd_frame(all_routers, HOST_MAC, &rs), DropReason::NdRouterSolicitIgnored),
        (nd_frame(all_nodes, HOST_MAC, &ra), DropReason::NdRouterAdvertIgnored),
        (nd_frame(IN_MAC, HOST_MAC, &redirect), DropReason::NdRedirectIgnored),
        // An NA for our own address: a conflict.
        (
            nd_frame(
                all_nodes,
                HOST_MAC,
                &na(HOST_V6, ipv6::ALL_NODES, 255, IN_V6, icmpv6::NaFlags::OVERRIDE, HOST_MAC),
            ),
            DropReason::NdAddressConflict,
        ),
        // A solicited NA sent to all-nodes (RFC 4861 §7.1.2).
        (
            nd_frame(
                all_nodes,
                HOST_MAC,
                &na(HOST_V6, ipv6::ALL_NODES, 255, HOST_V6, icmpv6::NaFlags::SOLICITED, HOST_MAC),
            ),
            DropReason::NdInvalid,
        ),
        // A DAD probe not sent to the solicited-node group (§7.1.1).
        (nd_frame(IN_MAC, HOST_MAC, &ns(Ipv6Addr::UNSPECIFIED, IN_V6, 255, IN_V6, None)), DropReason::NdInvalid),
        // An NA about nobody we know.
        (
            nd_frame(
                all_nodes,
                HOST_MAC,
                &na(HOST_V6, ipv6::ALL_NODES, 255, HOST_V6, icmpv6::NaFlags::OVERRIDE, HOST_MAC),
            ),
            DropReason::NdAdvertUnknown,
        ),
    ];
    for (frame, reason) in cases {
        let mut rig = SpRig::new();
        assert!(rig.punt(&frame, IN, PuntReason::Nd).is_empty(), "{reason:?}");
        assert_eq!(rig.drops(), vec![(reason, 1)]);
        assert!(rig.table.is_empty());
    }
}

#[test]
fn na_without_override_only_makes_a_reachable_entry_stale() {
    let mut rig = SpRig::new();
    let group = ipv6::solicited_node_multicast(IN_V6);
    let smac = MacAddr::from_ipv6_multicast(group).0;
    assert_eq!(
        rig.punt(&nd_frame(smac, HOST_MAC, &ns(HOST_V6, group, 255, IN_V6, Some(HOST_MAC))), IN, PuntReason::Nd).len(),
        1
    );
    assert_eq!(rig.table.get(IN, v6(HOST_V6)).unwrap().state, NeighborState::Reachable);
    let other = [2, 0, 0, 0, 1, 0x99];
    let all_nodes = [0x33, 0x33, 0, 0, 0, 1];
    let f = nd_frame(all_nodes, other, &na(HOST_V6, ipv6::ALL_NODES, 255, HOST_V6, icmpv6::NaFlags::NONE, other));
    assert!(rig.punt(&f, IN, PuntReason::Nd).is_empty());
    let e = rig.table.get(IN, v6(HOST_V6)).unwrap();
    assert_eq!((e.mac, e.state), (HOST_MAC, NeighborState::Stale), "address kept, entry stale");
    // With override (RFC 4861 §7.2.5: accepted), the address changes; unsolicited: stale.
    let f = nd_frame(all_nodes, other, &na(HOST_V6, ipv6::ALL_NODES, 255, HOST_V6, icmpv6::NaFlags::OVERRIDE, other));
    assert!(rig.punt(&f, IN, PuntReason::Nd).is_empty());
    let e = rig.table.get(IN, v6(HOST_V6)).unwrap();
    assert_eq!((e.mac, e.state), (other, NeighborState::Stale));
    assert!(rig.drops().is_empty());
}

#[test]
fn ns_from_our_own_address_is_a_conflict() {
    let mut rig = SpRig::new();
    let group = ipv6::solicited_node_multicast(IN_V6);
    let smac = MacAddr::from_ipv6_multicast(group).0;
    let f = nd_frame(smac, HOST_MAC, &ns(IN_V6, group, 255, IN_V6, Some(HOST_MAC)));
    assert!(rig.punt(&f, IN, PuntReason::Nd).is_empty());
    assert_eq!(rig.drops(), vec![(DropReason::NdAddressConflict, 1)]);
}

#[test]
fn checksum_helpers_agree_with_the_fixture() {
    let p = udp4(HOST_V4, IN_V4, 64, 9);
    assert!(checksum::verify_v4(HOST_V4, IN_V4, 17, &p[20..]));
}
