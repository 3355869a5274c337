//! Unit tests of the Pipeline stage (see l3.rs).
//!
//! Set-up: port 0 `inside` (02:00:00:00:01:01, 192.0.2.1/24, 2001:db8:1::1/64 +
//! link-local), port 1 `outside` (02:00:00:00:02:01, 198.51.100.1/24,
//! 2001:db8:2::1/64 + link-local), a static route 203.0.113.0/24 via
//! 198.51.100.254 on port 1. The frame builders in [`fixture`] are shared with
//! the slow-path tests.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;

use self::fixture::*;
use crate::fib::neigh::NeighborState;
use crate::pipeline::{Pipeline, Verdict};
use crate::stats::{DropReason, PuntReason};
use netwire::ipv4::Protocol;
use netwire::{ethernet, icmpv4, icmpv6, ipv4, ipv6, MacAddr};

/// Addresses, set-up and frame builders shared by the Pipeline and slow-path tests.
pub(crate) mod fixture {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    use std::sync::Arc;

    use crate::fib::neigh::{NeighborState, NeighborTable, NeighborWriter};
    use crate::fib::{link_local_from_mac, PortInfo, RouteSpec};
    use crate::pipeline::{Pipeline, Verdict};
    use netwire::ipv4::Protocol;
    use netwire::{arp, checksum, ethernet, icmpv4, icmpv6, ipv4, ipv6, MacAddr};

    pub const IN: u16 = 0;
    pub const OUT: u16 = 1;
    pub const IN_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x01, 0x01];
    pub const OUT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x02, 0x01];
    pub const IN_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
    pub const OUT_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
    pub const IN_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1);
    pub const OUT_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 1);

    /// A host on the inside link.
    pub const HOST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x01, 0x02];
    pub const HOST_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
    pub const HOST_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 2);

    /// A neighbour on the outside link.
    pub const NEIGH_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x02, 0x02];
    pub const NEIGH_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
    pub const NEIGH_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 2);

    /// The gateway of the static route, on the outside link.
    pub const GW_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x02, 0xfe];
    pub const GW_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 254);
    /// A host behind the gateway (203.0.113.0/24 via 198.51.100.254).
    pub const REMOTE_V4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 7);

    pub const BROADCAST: [u8; 6] = [0xff; 6];

    pub fn in_ll() -> Ipv6Addr {
        link_local_from_mac(IN_MAC)
    }

    pub fn out_ll() -> Ipv6Addr {
        link_local_from_mac(OUT_MAC)
    }

    pub fn host_ll() -> Ipv6Addr {
        link_local_from_mac(HOST_MAC)
    }

    pub fn v4(a: Ipv4Addr) -> IpAddr {
        IpAddr::V4(a)
    }

    pub fn v6(a: Ipv6Addr) -> IpAddr {
        IpAddr::V6(a)
    }

    pub fn ports(outside_mtu: u16) -> Vec<PortInfo> {
        vec![
            PortInfo {
                name: "inside".into(),
                mac: IN_MAC,
                mtu: 1500,
                ipv4: vec![(IN_V4, 24)],
                ipv6: vec![(IN_V6, 64), (link_local_from_mac(IN_MAC), 64)],
                partial_checksums: true,
            },
            PortInfo {
                name: "outside".into(),
                mac: OUT_MAC,
                mtu: outside_mtu,
                ipv4: vec![(OUT_V4, 24)],
                ipv6: vec![(OUT_V6, 64), (link_local_from_mac(OUT_MAC), 64)],
                partial_checksums: true,
            },
        ]
    }

    pub fn routes() -> Vec<RouteSpec> {
        vec![RouteSpec {
            prefix: IpAddr::V4(Ipv4Addr::new(203, 0, 113, 0)),
            len: 24,
            port: OUT,
            via: Some(IpAddr::V4(GW_V4)),
        }]
    }

    /// The tables with the given MTU on `outside`, an empty neighbour table
    /// (room for 64) and its writer.
    pub fn build_l3(outside_mtu: u16) -> (Arc<Pipeline>, NeighborWriter) {
        let (table, writer) = NeighborTable::new(64);
        let l3 = Pipeline::new(ports(outside_mtu), &routes(), table).expect("valid set-up");
        (Arc::new(l3), writer)
    }

    /// As [`build_l3`] (MTU 1500) with HOST, NEIGH and GW resolved.
    pub fn build_l3_resolved() -> (Arc<Pipeline>, NeighborWriter) {
        let (l3, mut w) = build_l3(1500);
        resolve_all(&mut w);
        (l3, w)
    }

    pub fn resolve_all(w: &mut NeighborWriter) {
        let r = NeighborState::Reachable;
        w.set(IN, v4(HOST_V4), HOST_MAC, r, 0).unwrap();
        w.set(IN, v6(HOST_V6), HOST_MAC, r, 0).unwrap();
        w.set(OUT, v4(NEIGH_V4), NEIGH_MAC, r, 0).unwrap();
        w.set(OUT, v6(NEIGH_V6), NEIGH_MAC, r, 0).unwrap();
        w.set(OUT, v4(GW_V4), GW_MAC, r, 0).unwrap();
    }

    /// Runs one frame, received on `in_port`, through the worker pipeline.
    /// The only call of `Pipeline::process` in the Pipeline and slow-path tests: adapt
    /// here if its signature changes.
    #[allow(clippy::ptr_arg)] // a Vec, so that a pipeline that resizes frames fits here
    pub fn l3_process(l3: &Pipeline, frame: &mut Vec<u8>, in_port: u16) -> Verdict {
        l3_process_arg(l3, frame, in_port).0
    }

    /// As [`l3_process`], also giving the punt argument (MTU, pointer).
    pub fn l3_process_arg(l3: &Pipeline, frame: &mut Vec<u8>, in_port: u16) -> (Verdict, u32) {
        let mut ws = crate::pipeline::WorkerCtx::scratch(l3);
        let v = l3.process_frame(frame, in_port, &mut ws);
        (v, ws.meta.punt_arg)
    }

    // ---- IP packets ---------------------------------------------------------

    /// Bytes 0, 1, 2, ... (wrapping): a payload whose every byte is checkable.
    pub fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + 3) as u8).collect()
    }

    /// An IPv4 packet (20-byte header, valid checksum, DF clear).
    pub fn ipv4_packet(src: Ipv4Addr, dst: Ipv4Addr, proto: Protocol, ttl: u8, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0u8; ipv4::HEADER_LEN + payload.len()];
        ipv4::emit_header(&mut p, src, dst, proto, ttl, payload.len()).unwrap();
        p[ipv4::HEADER_LEN..].copy_from_slice(payload);
        let mut ip = ipv4::Packet::new_unchecked(&mut p[..]);
        ip.set_ident(0x4242);
        ip.fill_checksum();
        p
    }

    /// Sets DF on an IPv4 packet and fixes its header checksum.
    pub fn set_df(p: &mut [u8]) {
        let mut ip = ipv4::Packet::new_unchecked(p);
        ip.set_dont_frag(true);
        ip.fill_checksum();
    }

    /// Fills the checksum of a UDP/TCP segment at `offset` (pseudo-header sum given).
    fn fill_l4_checksum(seg: &mut [u8], offset: usize, pseudo: u16) {
        seg[offset..offset + 2].fill(0);
        let mut c = checksum::finish(checksum::add(pseudo, checksum::sum(seg)));
        if c == 0 {
            c = 0xffff;
        }
        seg[offset..offset + 2].copy_from_slice(&c.to_be_bytes());
    }

    fn udp_segment(data: &[u8]) -> Vec<u8> {
        let len = 8 + data.len();
        let mut seg = vec![0u8; len];
        seg[0..2].copy_from_slice(&40000u16.to_be_bytes());
        seg[2..4].copy_from_slice(&33434u16.to_be_bytes());
        seg[4..6].copy_from_slice(&(len as u16).to_be_bytes());
        seg[8..].copy_from_slice(data);
        seg
    }

    fn tcp_segment() -> Vec<u8> {
        let mut seg = vec![0u8; 20];
        seg[0..2].copy_from_slice(&40000u16.to_be_bytes());
        seg[2..4].copy_from_slice(&22u16.to_be_bytes());
        seg[12] = 5 << 4;
        seg[13] = 0x02; // SYN
        seg[14..16].copy_from_slice(&1024u16.to_be_bytes());
        seg
    }

    /// IPv4/UDP with `data_len` bytes of data, valid checksums.
    pub fn udp4(src: Ipv4Addr, dst: Ipv4Addr, ttl: u8, data_len: usize) -> Vec<u8> {
        let mut seg = udp_segment(&pattern(data_len));
        let pseudo = checksum::pseudo_header_v4(src, dst, Protocol::UDP.0, seg.len() as u16);
        fill_l4_checksum(&mut seg, 6, pseudo);
        ipv4_packet(src, dst, Protocol::UDP, ttl, &seg)
    }

    /// IPv4/TCP SYN, valid checksums.
    pub fn tcp4(src: Ipv4Addr, dst: Ipv4Addr, ttl: u8) -> Vec<u8> {
        let mut seg = tcp_segment();
        let pseudo = checksum::pseudo_header_v4(src, dst, Protocol::TCP.0, seg.len() as u16);
        fill_l4_checksum(&mut seg, 16, pseudo);
        ipv4_packet(src, dst, Protocol::TCP, ttl, &seg)
    }

    /// An IPv4 ICMP message (type, code, rest of header, data), checksums valid.
    pub fn icmp4(src: Ipv4Addr, dst: Ipv4Addr, ttl: u8, ty: u8, code: u8, rest: u32, data: &[u8]) -> Vec<u8> {
        let mut msg = vec![0u8; icmpv4::HEADER_LEN + data.len()];
        {
            let mut icmp = icmpv4::Packet::new_unchecked(&mut msg[..]);
            icmp.set_msg_type(icmpv4::Message(ty));
            icmp.set_msg_code(code);
            icmp.set_rest_of_header(rest);
            icmp.payload_mut().copy_from_slice(data);
            icmp.fill_checksum();
        }
        ipv4_packet(src, dst, Protocol::ICMP, ttl, &msg)
    }

    /// IPv4 ICMP echo request.
    pub fn echo4(src: Ipv4Addr, dst: Ipv4Addr, ttl: u8, id: u16, seq: u16, data: &[u8]) -> Vec<u8> {
        icmp4(src, dst, ttl, 8, 0, (u32::from(id) << 16) | u32::from(seq), data)
    }

    /// An IPv6 packet (no extension headers).
    pub fn ipv6_packet(src: Ipv6Addr, dst: Ipv6Addr, next: Protocol, hop: u8, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0u8; ipv6::HEADER_LEN + payload.len()];
        ipv6::emit_header(&mut p, src, dst, next, hop, payload.len()).unwrap();
        p[ipv6::HEADER_LEN..].copy_from_slice(payload);
        p
    }

    /// IPv6/UDP with `data_len` bytes of data, valid checksum.
    pub fn udp6(src: Ipv6Addr, dst: Ipv6Addr, hop: u8, data_len: usize) -> Vec<u8> {
        let mut seg = udp_segment(&pattern(data_len));
        let pseudo = checksum::pseudo_header_v6(src, dst, Protocol::UDP.0, seg.len() as u32);
        fill_l4_checksum(&mut seg, 6, pseudo);
        ipv6_packet(src, dst, Protocol::UDP, hop, &seg)
    }

    /// IPv6/TCP SYN, valid checksum.
    pub fn tcp6(src: Ipv6Addr, dst: Ipv6Addr, hop: u8) -> Vec<u8> {
        let mut seg = tcp_segment();
        let pseudo = checksum::pseudo_header_v6(src, dst, Protocol::TCP.0, seg.len() as u32);
        fill_l4_checksum(&mut seg, 16, pseudo);
        ipv6_packet(src, dst, Protocol::TCP, hop, &seg)
    }

    /// IPv6 carrying the ICMPv6 message `body` (its checksum is filled here).
    pub fn icmp6_packet(src: Ipv6Addr, dst: Ipv6Addr, hop: u8, body: &[u8]) -> Vec<u8> {
        let mut p = ipv6_packet(src, dst, Protocol::ICMPV6, hop, body);
        icmpv6::Packet::new_unchecked(&mut p[ipv6::HEADER_LEN..]).fill_checksum(src, dst);
        p
    }

    /// An ICMPv6 message (type, code, rest of header, data), checksum valid.
    pub fn icmp6(src: Ipv6Addr, dst: Ipv6Addr, hop: u8, ty: u8, code: u8, rest: u32, data: &[u8]) -> Vec<u8> {
        let mut body = vec![0u8; icmpv6::HEADER_LEN + data.len()];
        {
            let mut icmp = icmpv6::Packet::new_unchecked(&mut body[..]);
            icmp.set_msg_type(icmpv6::Message(ty));
            icmp.set_msg_code(code);
            icmp.set_rest_of_header(rest);
            icmp.payload_mut().copy_from_slice(data);
        }
        icmp6_packet(src, dst, hop, &body)
    }

    /// IPv6 ICMPv6 echo request.
    pub fn echo6(src: Ipv6Addr, dst: Ipv6Addr, hop: u8, id: u16, seq: u16, data: &[u8]) -> Vec<u8> {
        icmp6(src, dst, hop, 128, 0, (u32::from(id) << 16) | u32::from(seq), data)
    }

    /// A neighbour solicitation for `target`, with a source link-layer
    /// address option when `slla` is given.
    pub fn ns(src: Ipv6Addr, dst: Ipv6Addr, hop: u8, target: Ipv6Addr, slla: Option<[u8; 6]>) -> Vec<u8> {
        let mut body = [0u8; 64];
        let n = icmpv6::emit_neighbor_solicit(&mut body, target, slla.map(MacAddr)).unwrap();
        icmp6_packet(src, dst, hop, &body[..n])
    }

    /// A neighbour advertisement for `target` with a target link-layer address option.
    pub fn na(
        src: Ipv6Addr,
        dst: Ipv6Addr,
        hop: u8,
        target: Ipv6Addr,
        flags: icmpv6::NaFlags,
        tlla: [u8; 6],
    ) -> Vec<u8> {
        let mut body = [0u8; 64];
        let n = icmpv6::emit_neighbor_advert(&mut body, target, flags, MacAddr(tlla)).unwrap();
        icmp6_packet(src, dst, hop, &body[..n])
    }

    // ---- Frames ---------------------------------------------------------------

    pub fn eth(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; ethernet::HEADER_LEN + payload.len()];
        ethernet::emit_header(&mut f, MacAddr(dst), MacAddr(src), ethernet::EtherType(ethertype)).unwrap();
        f[ethernet::HEADER_LEN..].copy_from_slice(payload);
        f
    }

    pub fn frame4(dst: [u8; 6], src: [u8; 6], ip: &[u8]) -> Vec<u8> {
        eth(dst, src, ethernet::EtherType::IPV4.0, ip)
    }

    pub fn frame6(dst: [u8; 6], src: [u8; 6], ip: &[u8]) -> Vec<u8> {
        eth(dst, src, ethernet::EtherType::IPV6.0, ip)
    }

    /// Pads a frame to the 60-byte Ethernet minimum with 0xa5 bytes (not
    /// zeros, so that a padding byte taken for data shows).
    pub fn pad60(mut f: Vec<u8>) -> Vec<u8> {
        if f.len() < 60 {
            f.resize(60, 0xa5);
        }
        f
    }

    /// A complete ARP frame (padded to 60 bytes).
    #[allow(clippy::too_many_arguments)]
    pub fn arp_frame(
        eth_dst: [u8; 6],
        eth_src: [u8; 6],
        op: arp::Operation,
        sha: [u8; 6],
        spa: Ipv4Addr,
        tha: [u8; 6],
        tpa: Ipv4Addr,
    ) -> Vec<u8> {
        let mut body = [0u8; arp::PACKET_LEN];
        arp::emit(&mut body, op, MacAddr(sha), spa, MacAddr(tha), tpa).unwrap();
        let mut f = eth(eth_dst, eth_src, ethernet::EtherType::ARP.0, &body);
        f.resize(60, 0);
        f
    }

    /// A broadcast ARP request from (`mac`, `ip`) asking for `target`.
    pub fn arp_request(mac: [u8; 6], ip: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
        arp_frame([0xff; 6], mac, arp::Operation::REQUEST, mac, ip, [0; 6], target)
    }

    /// A unicast ARP reply from (`mac`, `ip`) to (`to_mac`, `to_ip`).
    pub fn arp_reply(mac: [u8; 6], ip: Ipv4Addr, to_mac: [u8; 6], to_ip: Ipv4Addr) -> Vec<u8> {
        arp_frame(to_mac, mac, arp::Operation::REPLY, mac, ip, to_mac, to_ip)
    }

    /// Checks that a forwarded IPv4 frame is `orig` with new MACs, TTL - 1 and the
    /// checksum updated accordingly, everything else (payload, padding) untouched.
    pub fn check_forwarded_v4(out: &[u8], orig: &[u8], dst_mac: [u8; 6], src_mac: [u8; 6]) {
        assert_eq!(out.len(), orig.len());
        assert_eq!(&out[0..6], &dst_mac, "dst MAC");
        assert_eq!(&out[6..12], &src_mac, "src MAC");
        assert_eq!(&out[12..14], &orig[12..14], "ethertype");
        let ip = ip4_of(out);
        let ip_orig = ip4_of(orig);
        assert_eq!(ip.ttl(), ip_orig.ttl() - 1, "TTL decremented by one");
        assert!(ip.verify_checksum(), "IPv4 header checksum valid");
        // Recomputing gives the same value (not just an equivalent one).
        let mut hdr = ip.header().to_vec();
        let mut h = ipv4::Packet::new_unchecked(&mut hdr[..]);
        h.fill_checksum();
        assert_eq!(h.checksum(), ip.checksum());
        // Every byte but TTL (offset 8) and checksum (10, 11) is unchanged.
        for (i, (a, b)) in out[14..].iter().zip(&orig[14..]).enumerate() {
            if ![8, 10, 11].contains(&i) {
                assert_eq!(a, b, "byte {i} of the IPv4 packet changed");
            }
        }
    }

    pub fn check_forwarded_v6(out: &[u8], orig: &[u8], dst_mac: [u8; 6], src_mac: [u8; 6]) {
        assert_eq!(out.len(), orig.len());
        assert_eq!(&out[0..6], &dst_mac, "dst MAC");
        assert_eq!(&out[6..12], &src_mac, "src MAC");
        assert_eq!(&out[12..14], &orig[12..14], "ethertype");
        assert_eq!(ip6_of(out).hop_limit(), ip6_of(orig).hop_limit() - 1, "hop limit decremented by one");
        for (i, (a, b)) in out[14..].iter().zip(&orig[14..]).enumerate() {
            if i != 7 {
                assert_eq!(a, b, "byte {i} of the IPv6 packet changed");
            }
        }
    }

    // ---- Parsing outputs ------------------------------------------------------

    pub fn eth_of(f: &[u8]) -> ethernet::Packet<&[u8]> {
        ethernet::Packet::new_checked(f).expect("ethernet header")
    }

    pub fn ip4_of(f: &[u8]) -> ipv4::Packet<&[u8]> {
        let e = eth_of(f);
        assert_eq!(e.ethertype(), ethernet::EtherType::IPV4);
        ipv4::Packet::new_checked(&f[ethernet::HEADER_LEN..]).expect("IPv4 packet")
    }

    pub fn ip6_of(f: &[u8]) -> ipv6::Packet<&[u8]> {
        let e = eth_of(f);
        assert_eq!(e.ethertype(), ethernet::EtherType::IPV6);
        ipv6::Packet::new_checked(&f[ethernet::HEADER_LEN..]).expect("IPv6 packet")
    }

    /// The ICMPv4 message of an IPv4 frame (checked: protocol ICMP).
    pub fn icmp4_of(f: &[u8]) -> icmpv4::Packet<&[u8]> {
        let ip = ip4_of(f);
        assert_eq!(ip.protocol(), Protocol::ICMP);
        let start = ethernet::HEADER_LEN + ip.header_len();
        let end = ethernet::HEADER_LEN + usize::from(ip.total_len());
        icmpv4::Packet::new_checked(&f[start..end]).expect("ICMP message")
    }

    /// The ICMPv6 message of an IPv6 frame (checked: next header 58).
    pub fn icmp6_of(f: &[u8]) -> icmpv6::Packet<&[u8]> {
        let ip = ip6_of(f);
        assert_eq!(ip.next_header(), Protocol::ICMPV6);
        let start = ethernet::HEADER_LEN + ipv6::HEADER_LEN;
        let end = start + usize::from(ip.payload_len());
        icmpv6::Packet::new_checked(&f[start..end]).expect("ICMPv6 message")
    }
}

/// Runs `frame` through `l3` on `port` and checks the frame is unchanged when
/// the verdict is a punt (a punted frame must be handed over as received).
fn process(l3: &Pipeline, frame: &mut Vec<u8>, port: u16) -> Verdict {
    let before = frame.clone();
    let v = l3_process(l3, frame, port);
    if let Verdict::Punt(_) = v {
        assert_eq!(frame, &before, "punted frame must be unchanged ({v:?})");
    }
    v
}

/// Asserts `frame` on `port` gets `expected` and, for punts and drops, that it
/// is byte-for-byte unchanged.
fn assert_verdict_unchanged(l3: &Pipeline, frame: &[u8], port: u16, expected: Verdict) {
    let mut f = frame.to_vec();
    let v = l3_process(l3, &mut f, port);
    assert_eq!(v, expected);
    assert_eq!(f, frame, "frame changed by {v:?}");
}

fn punt(r: PuntReason) -> Verdict {
    Verdict::Punt(r)
}

fn drop_(r: DropReason) -> Verdict {
    Verdict::Drop(r)
}

// ---- Forwarding ---------------------------------------------------------------

#[test]
fn forwards_ipv4_to_resolved_neighbor() {
    let (l3, _w) = build_l3_resolved();
    let orig = frame4(IN_MAC, HOST_MAC, &udp4(HOST_V4, NEIGH_V4, 64, 100));
    let mut f = orig.clone();
    assert_eq!(process(&l3, &mut f, IN), Verdict::Forward(OUT));
    check_forwarded_v4(&f, &orig, NEIGH_MAC, OUT_MAC);
    assert_eq!(ip4_of(&f).ttl(), 63);
    // Payload untouched, byte for byte.
    assert_eq!(&f[34..], &orig[34..]);
}

#[test]
fn forwards_ipv4_in_the_other_direction() {
    let (l3, _w) = build_l3_resolved();
    let orig = frame4(OUT_MAC, NEIGH_MAC, &udp4(NEIGH_V4, HOST_V4, 2, 33));
    let mut f = orig.clone();
    assert_eq!(process(&l3, &mut f, OUT), Verdict::Forward(IN));
    check_forwarded_v4(&f, &orig, HOST_MAC, IN_MAC);
    assert_eq!(ip4_of(&f).ttl(), 1);
}

#[test]
fn forwards_ipv4_ttl_checksum_edge_values() {
    // Different TTLs and identifications exercise the incremental update
    // (carries, 0xffff/0x0000 checksums).
    let (l3, _w) = build_l3_resolved();
    for ttl in [2u8, 3, 64, 128, 255] {
        for ident in [0u16, 1, 0x7fff, 0xfeff, 0xffff] {
            let mut ip = udp4(HOST_V4, NEIGH_V4, ttl, 11);
            {
                let mut p = ipv4::Packet::new_unchecked(&mut ip[..]);
                p.set_ident(ident);
                p.fill_checksum();
            }
            let orig = frame4(IN_MAC, HOST_MAC, &ip);
            let mut f = orig.clone();
            assert_eq!(process(&l3, &mut f, IN), Verdict::Forward(OUT), "ttl {ttl} ident {ident}");
            check_forwarded_v4(&f, &orig, NEIGH_MAC, OUT_MAC);
        }
    }
}

#[test]
fn forwards_ipv4_with_options() {
    let (l3, _w) = build_l3_resolved();
    // A 24-byte header: one NOP x3 + EOL option word.
    let udp = udp4(HOST_V4, NEIGH_V4, 9, 20);
    let mut ip = Vec::new();
    ip.extend_from_slice(&udp[..20]);
    ip.extend_from_slice(&[1, 1, 1, 0]);
    ip.extend_from_slice(&udp[20..]);
    {
        let mut p = ipv4::Packet::new_unchecked(&mut ip[..]);
        p.set_header_len(24);
        p.set_total_len(udp.len() as u16 + 4);
        p.fill_checksum();
    }
    let orig = frame4(IN_MAC, HOST_MAC, &ip);
    let mut f = orig.clone();
    assert_eq!(process(&l3, &mut f, IN), Verdict::Forward(OUT));
    check_forwarded_v4(&f, &orig, NEIGH_MAC, OUT_MAC);
}

#[test]
fn forwards_ipv6_to_resolved_neighbor() {
    let (l3, _w) = build_l3_resolved();
    let orig = frame6(IN_MAC, HOST_MAC, &udp6(HOST_V6, NEIGH_V6, 64, 100));
    let mut f = orig.clone();
    assert_eq!(process(&l3, &mut f, IN), Verdict::Forward(OUT));
    check_forwarded_v6(&f, &orig, NEIGH_MAC, OUT_MAC);
    assert_eq!(ip6_of(&f).hop_limit(), 63);
    assert_eq!(&f[54..], &orig[54..]);

    // And back.
    let orig = frame6(OUT_MAC, NEIGH_MAC, &udp6(NEIGH_V6, HOST_V6, 2, 8));
    let mut f = orig.clone();
    assert_eq!(process(&l3, &mut f, OUT), Verdict::Forward(IN));
    check_forwarded_v6(&f, &orig, HOST_MAC, IN_MAC);
    assert_eq!(ip6_of(&f).hop_limit(), 1);
}

#[test]
fn forwards_via_gateway_using_the_gateways_mac() {
    let (l3, mut w) = build_l3(1500);
    assert_eq!(l3.next_hop(v4(REMOTE_V4)), Some((OUT, v4(GW_V4))));
    // Only the destination itself "resolved": the gateway is what counts.
    w.set(OUT, v4(REMOTE_V4), [0x02, 0, 0, 0, 0x09, 0x09], NeighborState::Reachable, 0).unwrap();
    let orig = frame4(IN_MAC, HOST_MAC, &udp4(HOST_V4, REMOTE_V4, 64, 40));
    assert_verdict_unchanged(&l3, &orig, IN, punt(PuntReason::NeighborMiss));

    w.set(OUT, v4(GW_V4), GW_MAC, NeighborState::Reachable, 0).unwrap();
    let mut f = orig.clone();
    assert_eq!(process(&l3, &mut f, IN), Verdict::Forward(OUT));
    check_forwarded_v4(&f, &orig, GW_MAC, OUT_MAC);
    // The IP destination is not changed by going via a gateway.
    assert_eq!(ip4_of(&f).dst_addr(), REMOTE_V4);
}

#[test]
fn forwards_with_stale_and_static_neighbors() {
    let (l3, mut w) = build_l3(1500);
    let orig = frame4(IN_MAC, HOST_MAC, &udp4(HOST_V4, NEIGH_V4, 64, 4));
    for state in [NeighborState::Stale, NeighborState::Static] {
        w.set(OUT, v4(NEIGH_V4), NEIGH_MAC, state, 0).unwrap();
        let mut f = orig.clone();
        assert_eq!(process(&l3, &mut f, IN), Verdict::Forward(OUT), "{state:?}");
        check_forwarded_v4(&f, &orig, NEIGH_MAC, OUT_MAC);
    }
}

#[test]
fn unresolved_neighbor_is_punted_unchanged() {
    let (l3, mut w) = build_l3(1500);
    let f4 = frame4(IN_MAC, HOST_MAC, &udp4(HOST_V4, NEIGH_V4, 64, 30));
    let f6 = frame6(IN_MAC, HOST_MAC, &udp6(HOST_V6, NEIGH_V6, 64, 30));
    let miss = punt(PuntReason::NeighborMiss);
    assert_verdict_unchanged(&l3, &f4, IN, miss);
    assert_verdict_unchanged(&l3, &f6, IN, miss);
    // Entries that are not usable are misses too.
    for state in [NeighborState::Incomplete, NeighborState::Failed] {
        w.set(OUT, v4(NEIGH_V4), NEIGH_MAC, state, 0).unwrap();
        w.set(OUT, v6(NEIGH_V6), NEIGH_MAC, state, 0).unwrap();
        assert_verdict_unchanged(&l3, &f4, IN, miss);
        assert_verdict_unchanged(&l3, &f6, IN, miss);
    }
    // A neighbour known on the wrong port is no help.
    let (l3, mut w) = build_l3(1500);
    w.set(IN, v4(NEIGH_V4), NEIGH_MAC, NeighborState::Reachable, 0).unwrap();
    assert_verdict_unchanged(&l3, &f4, IN, miss);
}

#[test]
fn expired_ttl_is_punted_unchanged() {
    let (l3, _w) = build_l3_resolved();
    for ttl in [1u8, 0] {
        let f = frame4(IN_MAC, HOST_MAC, &udp4(HOST_V4, NEIGH_V4, ttl, 10));
        assert_verdict_unchanged(&l3, &f, IN, punt(PuntReason::TtlExpired));
        let f = frame4(IN_MAC, HOST_MAC, &udp4(HOST_V4, REMOTE_V4, ttl, 10));
        assert_verdict_unchanged(&l3, &f, IN, punt(PuntReason::TtlExpired));
        let f = frame6(IN_MAC, HOST_MAC, &udp6(HOST_V6, NEIGH_V6, ttl, 10));
        assert_verdict_unchanged(&l3, &f, IN, punt(PuntReason::TtlExpired));
    }
    // TTL expiry is detected before the neighbour lookup.
    let (l3, _w) = build_l3(1500);
    let f = frame4(IN_MAC, HOST_MAC, &udp4(HOST_V4, NEIGH_V4, 1, 10));
    assert_verdict_unchanged(&l3, &f, IN, punt(PuntReason::TtlExpired));
}

#[test]
fn no_route_is_punted_unchanged() {
    let (l3, _w) = build_l3_resolved();
    let f = frame4(IN_MAC, HOST_MAC, &udp4(HOST_V4, Ipv4Addr::new(100, 64, 0, 1), 64, 10));
    assert_verdict_unchanged(&l3, &f, IN, punt(PuntReason::NoRoute));
    let f = frame6(IN_MAC, HOST_MAC, &udp6(HOST_V6, "2001:db8:99::1".parse().unwrap(), 64, 10));
    assert_verdict_unchanged(&l3, &f, IN, punt(PuntReason::NoRoute));
    // No route is found before the TTL matters.
    let f = frame4(IN_MAC, HOST_MAC, &udp4(HOST_V4, Ipv4Addr::new(100, 64, 0, 1), 1, 10));
    assert_verdict_unchanged(&l3, &f, IN, punt(PuntReason::NoRoute));
}

// ---- Local delivery -------------------------------------------------------------

fn check_echo_reply_v4(out: &[u8], req: &[u8], our_mac: [u8; 6], our_ip: Ipv4Addr) {
    let (ip_req, icmp_req) = (ip4_of(req), icmp4_of(req));
    assert_eq!(out.len(), req.len());
    assert_eq!(&out[0..6], &req[6..12], "dst MAC = sender's");
    assert_eq!(&out[6..12], &our_mac, "src MAC = ours");
    let ip = ip4_of(out);
    assert_eq!(ip.src_addr(), our_ip);
    assert_eq!(ip.dst_addr(), ip_req.src_addr());
    assert_eq!(ip.protocol(), Protocol::ICMP);
    assert_eq!(ip.ttl(), ipv4::DEFAULT_TTL);
    assert_eq!(ip.total_len(), ip_req.total_len());
    assert!(ip.verify_checksum(), "IPv4 checksum");
    let icmp = icmp4_of(out);
    assert_eq!(icmp.msg_type(), icmpv4::Message::ECHO_REPLY);
    assert_eq!(icmp.msg_code(), 0);
    assert!(icmp.verify_checksum(), "ICMP checksum");
    assert_eq!(icmp.echo_ident(), icmp_req.echo_ident());
    assert_eq!(icmp.echo_seq_no(), icmp_req.echo_seq_no());
    assert_eq!(icmp.payload(), icmp_req.payload());
}

#[test]
fn answers_ipv4_echo_to_own_address() {
    let (l3, _w) = build_l3(1500);
    let req = frame4(IN_MAC, HOST_MAC, &echo4(HOST_V4, IN_V4, 64, 0x1234, 7, b"hello, router"));
    let mut f = req.clone();
    assert_eq!(process(&l3, &mut f, IN), Verdict::Forward(IN));
    check_echo_reply_v4(&f, &req, IN_MAC, IN_V4);

    // The other port's address, asked on inside: answered from that address,
    // out of the port the request came in on.
    let req = frame4(IN_MAC, HOST_MAC, &echo4(HOST_V4, OUT_V4, 17, 1, 2, &pattern(56)));
    let mut f = req.clone();
    assert_eq!(process(&l3, &mut f, IN), Verdict::Forward(IN));
    check_echo_reply_v4(&f, &req, IN_MAC, OUT_V4);

    // A request with TTL 1 to us is answered, not "expired".
    let req = frame4(IN_MAC, HOST_MAC, &echo4(HOST_V4, IN_V4, 1, 9, 9, b""));
    let mut f = req.clone();
    assert_eq!(process(&l3, &mut f, IN), Verdict::Forward(IN));
    check_echo_reply_v4(&f, &req, IN_MAC, IN_V4);

    // From a remote host through the gateway: the reply goes back to the
    // gateway's MAC (the frame's source).
    let req = frame4(OUT_MAC, GW_MAC, &echo4(REMOTE_V4, OUT_V4, 60, 3, 4, b"x"));
    let mut f = req.clone();
    assert_eq!(process(&l3, &mut f, OUT), Verdict::Forward(OUT));
    check_echo_reply_v4(&f, &req, OUT_MAC, OUT_V4);
    assert_eq!(&f[0..6], &GW_MAC);
}

#[test]
fn local_icmp_that_is_not_an_echo_request_is_dropped() {
    let (l3, _w) = build_l3(1500);
    let reply = frame4(IN_MAC, HOST_MAC, &icmp4(HOST_V4, IN_V4, 64, 0, 0, 0x10001, b"x"));
    assert_verdict_unchanged(&l3, &reply, IN, drop_(DropReason::LocalIcmpIgnored));
    let mut bad = echo4(HOST_V4, IN_V4, 64, 1, 1, b"data");
    bad[30] ^= 0xff; // ICMP data byte: ICMP checksum now wrong
    let f = frame4(IN_MAC, HOST_MAC, &bad);
    assert_verdict_unchanged(&l3, &f, IN, drop_(DropReason::LocalIcmpMalformed));
}

fn check_echo_reply_v6(out: &[u8], req: &[u8], our_mac: [u8; 6], our_ip: Ipv6Addr) {
    let (ip_req, icmp_req) = (ip6_of(req), icmp6_of(req));
    assert_eq!(out.len(), req.len());
    assert_eq!(&out[0..6], &req[6..12], "dst MAC = sender's");
    assert_eq!(&out[6..12], &our_mac, "src MAC = ours");
    let ip = ip6_of(out);
    assert_eq!(ip.src_addr(), our_ip);
    assert_eq!(ip.dst_addr(), ip_req.src_addr());
    assert_eq!(ip.hop_limit(), ipv6::DEFAULT_HOP_LIMIT);
    assert_eq!(ip.payload_len(), ip_req.payload_len());
    let icmp = icmp6_of(out);
    assert_eq!(icmp.msg_type(), icmpv6::Message::ECHO_REPLY);
    assert_eq!(icmp.msg_code(), 0);
    assert!(icmp.verify_checksum(ip.src_addr(), ip.dst_addr()), "ICMPv6 checksum");
    assert_eq!(icmp.echo_ident(), icmp_req.echo_ident());
    assert_eq!(icmp.echo_seq_no(), icmp_req.echo_seq_no());
    assert_eq!(icmp.payload(), icmp_req.payload());
}

#[test]
fn answers_ipv6_echo_to_own_addresses() {
    let (l3, _w) = build_l3(1500);
    let req = frame6(IN_MAC, HOST_MAC, &echo6(HOST_V6, IN_V6, 64, 0xbeef, 1, &pattern(32)));
    let mut f = req.clone();
    assert_eq!(process(&l3, &mut f, IN), Verdict::Forward(IN));
    check_echo_reply_v6(&f, &req, IN_MAC, IN_V6);

    // The link-local address, from a link-local source.
    let req = frame6(IN_MAC, HOST_MAC, &echo6(host_ll(), in_ll(), 64, 7, 8, b"ll"));
    let mut f = req.clone();
    assert_eq!(process(&l3, &mut f, IN), Verdict::Forward(IN));
    check_echo_reply_v6(&f, &req, IN_MAC, in_ll());

    // The outside global address asked on inside, hop limit 1.
    let req = frame6(IN_MAC, HOST_MAC, &echo6(HOST_V6, OUT_V6, 1, 7, 9, b"z"));
    let mut f = req.clone();
    assert_eq!(process(&l3, &mut f, IN), Verdict::Forward(IN));
    check_echo_reply_v6(&f, &req, IN_MAC, OUT_V6);
}

#[test]
fn udp_to_own_address_is_port_unreachable_and_tcp_unsupported() {
    let (l3, _w) = build_l3(1500);
    let f = frame4(IN_MAC, HOST_MAC, &udp4(HOST_V4, IN_V4, 64, 12));
    assert_verdict_unchanged(&l3, &f, IN, punt(PuntReason::PortUnreachable));
    let f = frame4(IN_MAC, HOST_MAC, &udp4(HOST_V4, OUT_V4, 64, 12));
    assert_verdict_unchanged(&l3, &f, IN, punt(PuntReason::PortUnreachable));
    let f = frame6(IN_MAC, HOST_MAC, &udp6(HOST_V6, IN_V6, 64, 12));
    assert_verdict_unchanged(&l3, &f, IN, punt(PuntReason::PortUnreachable));

    let f = frame4(IN_MAC, HOST_MAC, &tcp4(HOST_V4, IN_V4, 64));
    assert_verdict_unchanged(&l3, &f, IN, drop_(DropReason::LocalUnsupported));
    let f = frame6(IN_MAC, HOST_MAC, &tcp6(HOST_V6, IN_V6, 64));
    assert_verdict_unchanged(&l3, &f, IN, drop_(DropReason::LocalUnsupported));
}

// ---- ARP and neighbour discovery ---------------------------------------------------

#[test]
fn arp_is_punted_unchanged() {
    let (l3, _w) = build_l3(1500);
    let req = arp_request(HOST_MAC, HOST_V4, IN_V4);
    assert_verdict_unchanged(&l3, &req, IN, punt(PuntReason::Arp));
    let reply = arp_reply(NEIGH_MAC, NEIGH_V4, OUT_MAC, OUT_V4);
    assert_verdict_unchanged(&l3, &reply, OUT, punt(PuntReason::Arp));
    // Even an ARP packet for someone else, as long as the frame reaches us.
    let other = arp_request(HOST_MAC, HOST_V4, Ipv4Addr::new(192, 0, 2, 77));
    assert_verdict_unchanged(&l3, &other, IN, punt(PuntReason::Arp));
}

#[test]
fn neighbor_discovery_is_punted_other_multicast_dropped() {
    let (l3, _w) = build_l3(1500);
    let group = ipv6::solicited_node_multicast(IN_V6);
    let group_mac = MacAddr::from_ipv6_multicast(group).0;
    let f = frame6(group_mac, HOST_MAC, &ns(HOST_V6, group, 255, IN_V6, Some(HOST_MAC)));
    assert_verdict_unchanged(&l3, &f, IN, punt(PuntReason::Nd));
    // To our unicast address (a reachability probe).
    let f = frame6(IN_MAC, HOST_MAC, &ns(HOST_V6, IN_V6, 255, IN_V6, Some(HOST_MAC)));
    assert_verdict_unchanged(&l3, &f, IN, punt(PuntReason::Nd));
    // A DAD probe from the unspecified address.
    let f = frame6(group_mac, HOST_MAC, &ns(Ipv6Addr::UNSPECIFIED, group, 255, IN_V6, None));
    assert_verdict_unchanged(&l3, &f, IN, punt(PuntReason::Nd));
    // A neighbour advertisement to us.
    let na_pkt = na(NEIGH_V6, OUT_V6, 255, NEIGH_V6, icmpv6::NaFlags::SOLICITED, NEIGH_MAC);
    let f = frame6(OUT_MAC, NEIGH_MAC, &na_pkt);
    assert_verdict_unchanged(&l3, &f, OUT, punt(PuntReason::Nd));

    // MLDv2 report to ff02::16: not for us.
    let mld_group: Ipv6Addr = "ff02::16".parse().unwrap();
    let mld = icmp6(host_ll(), mld_group, 1, 143, 0, 0, &[0; 4]);
    let f = frame6(MacAddr::from_ipv6_multicast(mld_group).0, HOST_MAC, &mld);
    assert_verdict_unchanged(&l3, &f, IN, drop_(DropReason::Ipv6NotRouted));
    // UDP to all-nodes.
    let f = frame6([0x33, 0x33, 0, 0, 0, 1], HOST_MAC, &udp6(HOST_V6, ipv6::ALL_NODES, 64, 5));
    assert_verdict_unchanged(&l3, &f, IN, drop_(DropReason::Ipv6NotRouted));
    // Echo request to all-nodes: not answered.
    let f = frame6([0x33, 0x33, 0, 0, 0, 1], HOST_MAC, &echo6(HOST_V6, ipv6::ALL_NODES, 64, 1, 1, b""));
    assert_verdict_unchanged(&l3, &f, IN, drop_(DropReason::Ipv6NotRouted));
}

// ---- Ethernet and header checks ---------------------------------------------------------

#[test]
fn ethernet_checks() {
    let (l3, _w) = build_l3_resolved();
    let ip = udp4(HOST_V4, NEIGH_V4, 64, 10);
    // Unicast to someone else (including our other port's MAC).
    let f = frame4([0x02, 0, 0, 0, 0x01, 0x99], HOST_MAC, &ip);
    assert_verdict_unchanged(&l3, &f, IN, drop_(DropReason::EthNotForUs));
    let f = frame4(OUT_MAC, HOST_MAC, &ip);
    assert_verdict_unchanged(&l3, &f, IN, drop_(DropReason::EthNotForUs));
    // Truncated frames.
    let good = frame4(IN_MAC, HOST_MAC, &ip);
    for len in [0usize, 1, 6, 12, 13] {
        assert_verdict_unchanged(&l3, &good[..len], IN, drop_(DropReason::EthTruncated));
    }
    // Unknown EtherType (LLDP, to its multicast address) and VLAN-tagged.
    let f = eth([0x01, 0x80, 0xc2, 0, 0, 0x0e], HOST_MAC, 0x88cc, &[0; 46]);
    assert_verdict_unchanged(&l3, &f, IN, drop_(DropReason::EthUnsupportedType));
    let f = eth(IN_MAC, HOST_MAC, 0x8100, &[0; 46]);
    assert_verdict_unchanged(&l3, &f, IN, drop_(DropReason::EthUnsupportedType));
    // A port that does not exist.
    assert_verdict_unchanged(&l3, &good, 7, drop_(DropReason::EthNotForUs));
}

#[test]
fn ipv4_header_checks() {
    let (l3, _w) = build_l3_resolved();
    let ip = udp4(HOST_V4, NEIGH_V4, 64, 10);

    let mut bad = ip.clone();
    bad[10] ^= 0x01;
    let f = frame4(IN_MAC, HOST_MAC, &bad);
    assert_verdict_unchanged(&l3, &f, IN, drop_(DropReason::Ipv4BadChecksum));

    // IHL < 5 (checksum fixed over what would be the header).
    for ihl in [0u8, 4] {
        let mut bad = ip.clone();
        bad[0] = 0x40 | ihl;
        let f = frame4(IN_MAC, HOST_MAC, &bad);
        assert_verdict_unchanged(&l3, &f, IN, drop_(DropReason::Ipv4Malformed));
    }
    // total_len larger than the frame holds, or smaller than the header.
    for total in [ip.len() as u16 + 1, 1500, 19] {
        let mut bad = ip.clone();
        {
            let mut p = ipv4::Packet::new_unchecked(&mut bad[..]);
            p.set_total_len(total);
            p.fill_checksum();
        }
        let f = frame4(IN_MAC, HOST_MAC, &bad);
        assert_verdict_unchanged(&l3, &f, IN, drop_(DropReason::Ipv4Malformed));
    }
    // Wrong version, and fewer bytes than a header.
    let mut bad = ip.clone();
    bad[0] = 0x65;
    assert_verdict_unchanged(&l3, &frame4(IN_MAC, HOST_MAC, &bad), IN, drop_(DropReason::Ipv4Malformed));
    assert_verdict_unchanged(&l3, &frame4(IN_MAC, HOST_MAC, &ip[..19]), IN, drop_(DropReason::Ipv4Malformed));
    assert_verdict_unchanged(&l3, &frame4(IN_MAC, HOST_MAC, &[]), IN, drop_(DropReason::Ipv4Malformed));
}

/// `packet` (IPv4 or IPv6 with TCP or UDP right after the fixed header) with
/// its transport checksum as a kernel with checksum offload sends it: the
/// folded pseudo-header sum. Returns it and the complete checksum.
fn make_partial(packet: &[u8]) -> (Vec<u8>, u16) {
    let mut p = packet.to_vec();
    let (l4_at, proto, pseudo) = if p[0] >> 4 == 4 {
        let ip = ipv4::Packet::new_checked(&p[..]).unwrap();
        let l4_len = (ip.total_len() as usize - ip.header_len()) as u16;
        let pseudo = netwire::checksum::pseudo_header_v4(ip.src_addr(), ip.dst_addr(), ip.protocol().0, l4_len);
        (ip.header_len(), ip.protocol(), pseudo)
    } else {
        let ip = ipv6::Packet::new_checked(&p[..]).unwrap();
        let pseudo = netwire::checksum::pseudo_header_v6(
            ip.src_addr(),
            ip.dst_addr(),
            ip.next_header().0,
            u32::from(ip.payload_len()),
        );
        (ipv6::HEADER_LEN, ip.next_header(), pseudo)
    };
    let field = l4_at + if proto == Protocol::TCP { 16 } else { 6 };
    let full = netwire::read_u16(&p, field);
    netwire::write_u16(&mut p, field, pseudo);
    (p, full)
}

#[test]
fn partial_checksums_are_completed_before_forwarding() {
    let (l3, _w) = build_l3_resolved();
    let packets = [
        (udp4(HOST_V4, NEIGH_V4, 64, 1000), 14 + 20 + 6),
        (tcp4(HOST_V4, NEIGH_V4, 64), 14 + 20 + 16),
        (udp6(HOST_V6, NEIGH_V6, 64, 1000), 14 + 40 + 6),
        (tcp6(HOST_V6, NEIGH_V6, 64), 14 + 40 + 16),
    ];
    for (packet, field) in packets {
        let (partial, full) = make_partial(&packet);
        let frame =
            |ip: &[u8]| if ip[0] >> 4 == 4 { frame4(IN_MAC, HOST_MAC, ip) } else { frame6(IN_MAC, HOST_MAC, ip) };
        let mut f = frame(&partial);
        let mut ws = crate::pipeline::WorkerCtx::scratch(&l3);
        assert_eq!(l3.process_frame(&mut f, IN, &mut ws), Verdict::Forward(OUT));
        assert_eq!(netwire::read_u16(&f, field), full, "completed checksum");
        assert_eq!(ws.input_counters.checksums_completed.get(), 1);
        // The same packet with a complete checksum is forwarded untouched (but for
        // TTL and MACs) and nothing is counted.
        let mut g = frame(&packet);
        assert_eq!(l3.process_frame(&mut g, IN, &mut ws), Verdict::Forward(OUT));
        assert_eq!(f, g);
        assert_eq!(ws.input_counters.checksums_completed.get(), 1);
    }
}

#[test]
fn cut_superframes_are_named() {
    let (l3, _w) = build_l3_resolved();
    // A 20 000-byte TSO super-frame cut at 1514 bytes by the driver.
    let mut big = udp4(HOST_V4, NEIGH_V4, 64, 1472);
    {
        let mut p = ipv4::Packet::new_unchecked(&mut big[..]);
        p.set_total_len(20_000);
        p.fill_checksum();
    }
    assert_verdict_unchanged(&l3, &frame4(IN_MAC, HOST_MAC, &big), IN, drop_(DropReason::Superframe));
    let mut big6 = udp6(HOST_V6, NEIGH_V6, 64, 1452);
    ipv6::Packet::new_unchecked(&mut big6[..]).set_payload_len(20_000);
    assert_verdict_unchanged(&l3, &frame6(IN_MAC, HOST_MAC, &big6), IN, drop_(DropReason::Superframe));
}

#[test]
fn ipv4_martian_sources_and_unrouted_destinations() {
    let (l3, _w) = build_l3_resolved();
    for src in [
        Ipv4Addr::new(0, 0, 0, 0),
        Ipv4Addr::new(0, 1, 2, 3),
        Ipv4Addr::new(224, 0, 0, 1),
        Ipv4Addr::new(239, 1, 1, 1),
        Ipv4Addr::new(127, 0, 0, 1),
        Ipv4Addr::BROADCAST,
    ] {
        let f = frame4(IN_MAC, HOST_MAC, &udp4(src, NEIGH_V4, 64, 4));
        assert_verdict_unchanged(&l3, &f, IN, drop_(DropReason::Ipv4MartianSource));
    }
    for (dst, mac) in [
        (Ipv4Addr::BROADCAST, BROADCAST),
        (Ipv4Addr::new(224, 0, 0, 5), [0x01, 0, 0x5e, 0, 0, 5]),
        (Ipv4Addr::new(239, 1, 2, 3), [0x01, 0, 0x5e, 1, 2, 3]),
    ] {
        let f = frame4(mac, HOST_MAC, &udp4(HOST_V4, dst, 64, 4));
        assert_verdict_unchanged(&l3, &f, IN, drop_(DropReason::Ipv4NotRouted));
    }
    // RFC 1812 §5.3.7: no router forwards to 0/8, 127/8 or 240/4.
    for dst in [[127, 0, 0, 1], [0, 0, 0, 0], [0, 1, 2, 3], [240, 0, 0, 1], [254, 255, 255, 255]] {
        let f = frame4(IN_MAC, HOST_MAC, &udp4(HOST_V4, Ipv4Addr::from(dst), 64, 4));
        assert_verdict_unchanged(&l3, &f, IN, drop_(DropReason::Ipv4MartianDestination));
    }
}

#[test]
fn ipv6_header_checks() {
    let (l3, _w) = build_l3_resolved();
    let ip = udp6(HOST_V6, NEIGH_V6, 64, 10);
    for plen in [ip.len() as u16 - 40 + 1, 1000] {
        let mut bad = ip.clone();
        ipv6::Packet::new_unchecked(&mut bad[..]).set_payload_len(plen);
        let f = frame6(IN_MAC, HOST_MAC, &bad);
        assert_verdict_unchanged(&l3, &f, IN, drop_(DropReason::Ipv6Malformed));
    }
    // More than the port's MTU and more than the frame: a cut super-frame.
    let mut bad = ip.clone();
    ipv6::Packet::new_unchecked(&mut bad[..]).set_payload_len(0xffff);
    assert_verdict_unchanged(&l3, &frame6(IN_MAC, HOST_MAC, &bad), IN, drop_(DropReason::Superframe));
    let mut bad = ip.clone();
    bad[0] = 0x40;
    assert_verdict_unchanged(&l3, &frame6(IN_MAC, HOST_MAC, &bad), IN, drop_(DropReason::Ipv6Malformed));
    assert_verdict_unchanged(&l3, &frame6(IN_MAC, HOST_MAC, &ip[..39]), IN, drop_(DropReason::Ipv6Malformed));

    // Multicast and loopback sources; unspecified source outside DAD.
    for src in ["ff02::1", "::1", "::"] {
        let f = frame6(IN_MAC, HOST_MAC, &udp6(src.parse().unwrap(), NEIGH_V6, 64, 4));
        assert_verdict_unchanged(&l3, &f, IN, drop_(DropReason::Ipv6MartianSource));
    }
}

#[test]
fn ipv6_link_local_is_never_forwarded() {
    let (l3, mut w) = build_l3_resolved();
    let other_ll: Ipv6Addr = "fe80::99".parse().unwrap();
    w.set(OUT, v6(other_ll), NEIGH_MAC, NeighborState::Reachable, 0).unwrap();
    w.set(IN, v6(other_ll), NEIGH_MAC, NeighborState::Reachable, 0).unwrap();
    // Link-local destination that is not ours.
    let f = frame6(IN_MAC, HOST_MAC, &udp6(host_ll(), other_ll, 64, 4));
    assert_verdict_unchanged(&l3, &f, IN, drop_(DropReason::Ipv6NotRouted));
    let f = frame6(IN_MAC, HOST_MAC, &udp6(HOST_V6, other_ll, 64, 4));
    assert_verdict_unchanged(&l3, &f, IN, drop_(DropReason::Ipv6NotRouted));
    // Link-local source to a global destination (resolved).
    let f = frame6(IN_MAC, HOST_MAC, &udp6(host_ll(), NEIGH_V6, 64, 4));
    assert_verdict_unchanged(&l3, &f, IN, drop_(DropReason::Ipv6NotRouted));
    // Link-local source with hop limit 1: still not routed (no ICMP error).
    let f = frame6(IN_MAC, HOST_MAC, &udp6(host_ll(), NEIGH_V6, 1, 4));
    assert_verdict_unchanged(&l3, &f, IN, drop_(DropReason::Ipv6NotRouted));
}

// ---- MTU ----------------------------------------------------------------------------------

#[test]
fn larger_than_egress_mtu() {
    let (l3, mut w) = build_l3(1280);
    resolve_all(&mut w);
    // 1400-byte IPv4 with DF: packet too big; without DF: the node does not
    // fragment.
    let mut ip = udp4(HOST_V4, NEIGH_V4, 64, 1400 - 28);
    assert_eq!(ip.len(), 1400);
    let no_df = frame4(IN_MAC, HOST_MAC, &ip);
    assert_verdict_unchanged(&l3, &no_df, IN, drop_(DropReason::FragmentationNeeded));
    set_df(&mut ip);
    let df = frame4(IN_MAC, HOST_MAC, &ip);
    assert_verdict_unchanged(&l3, &df, IN, punt(PuntReason::TooBig));
    // 1400-byte IPv6.
    let ip6 = udp6(HOST_V6, NEIGH_V6, 64, 1400 - 48);
    assert_eq!(ip6.len(), 1400);
    let f = frame6(IN_MAC, HOST_MAC, &ip6);
    assert_verdict_unchanged(&l3, &f, IN, punt(PuntReason::TooBig));
    // The other direction has MTU 1500: fine.
    let orig = frame4(OUT_MAC, NEIGH_MAC, &udp4(NEIGH_V4, HOST_V4, 64, 1400 - 28));
    let mut f = orig.clone();
    assert_eq!(process(&l3, &mut f, OUT), Verdict::Forward(IN));
    check_forwarded_v4(&f, &orig, HOST_MAC, IN_MAC);

    // Exactly the MTU is forwarded.
    let mut ip = udp4(HOST_V4, NEIGH_V4, 64, 1280 - 28);
    set_df(&mut ip);
    let orig = frame4(IN_MAC, HOST_MAC, &ip);
    let mut f = orig.clone();
    assert_eq!(process(&l3, &mut f, IN), Verdict::Forward(OUT));
    check_forwarded_v4(&f, &orig, NEIGH_MAC, OUT_MAC);
    let orig = frame6(IN_MAC, HOST_MAC, &udp6(HOST_V6, NEIGH_V6, 64, 1280 - 48));
    let mut f = orig.clone();
    assert_eq!(process(&l3, &mut f, IN), Verdict::Forward(OUT));
    check_forwarded_v6(&f, &orig, NEIGH_MAC, OUT_MAC);
    // One byte more is too big.
    let f = frame6(IN_MAC, HOST_MAC, &udp6(HOST_V6, NEIGH_V6, 64, 1281 - 48));
    assert_verdict_unchanged(&l3, &f, IN, punt(PuntReason::TooBig));
    let mut ip = udp4(HOST_V4, NEIGH_V4, 64, 1281 - 28);
    set_df(&mut ip);
    let f = frame4(IN_MAC, HOST_MAC, &ip);
    assert_verdict_unchanged(&l3, &f, IN, punt(PuntReason::TooBig));

    // Too big is found before the neighbour lookup.
    let (l3, _w) = build_l3(1280);
    assert_verdict_unchanged(&l3, &df, IN, punt(PuntReason::TooBig));
}

// ---- Ethernet padding -------------------------------------------------------------------

#[test]
fn padded_minimum_frames_are_forwarded() {
    let (l3, _w) = build_l3_resolved();
    let ip = udp4(HOST_V4, NEIGH_V4, 64, 0);
    assert_eq!(ip.len(), 28);
    let orig = pad60(frame4(IN_MAC, HOST_MAC, &ip));
    assert_eq!(orig.len(), 60);
    let mut f = orig.clone();
    assert_eq!(process(&l3, &mut f, IN), Verdict::Forward(OUT));
    check_forwarded_v4(&f, &orig, NEIGH_MAC, OUT_MAC);
    assert_eq!(&f[42..], &[0xa5; 18], "padding untouched");

    // A padded echo request is answered; the padding is not part of the ICMP
    // checksum.
    let req = pad60(frame4(IN_MAC, HOST_MAC, &echo4(HOST_V4, IN_V4, 64, 5, 6, b"")));
    let mut f = req.clone();
    assert_eq!(process(&l3, &mut f, IN), Verdict::Forward(IN));
    check_echo_reply_v4(&f, &req, IN_MAC, IN_V4);
    assert_eq!(&f[42..], &[0xa5; 18]);

    // A padded TTL-expired packet is punted unchanged.
    let f = pad60(frame4(IN_MAC, HOST_MAC, &udp4(HOST_V4, NEIGH_V4, 1, 0)));
    assert_verdict_unchanged(&l3, &f, IN, punt(PuntReason::TtlExpired));
}

// ---- Link-layer broadcast ------------------------------------------------------------------

// Regression (was a bug): a unicast IPv4 packet received in a link-layer broadcast (or multicast)
// frame is forwarded. RFC 1812 §5.3.4: "A router MUST NOT forward any packet
// that the router received as a Link Layer broadcast, unless it is directed to
// an IP Multicast address" (and likewise for link-layer multicast). `process`
// accepts broadcast/multicast frames (needed for ARP/ND) and then routes their
// contents like unicast ones. Expected: some Drop verdict (e.g. EthNotForUs or
// Ipv4NotRouted). The same happens for IPv6 (unicast destination in a
// 33:33:xx or ff:ff:ff:ff:ff:ff frame).
#[test]
fn link_layer_broadcast_is_not_forwarded() {
    let (l3, _w) = build_l3_resolved();
    let ip = udp4(HOST_V4, NEIGH_V4, 64, 10);
    for mac in [BROADCAST, [0x01, 0, 0x5e, 0, 0, 5]] {
        let mut f = frame4(mac, HOST_MAC, &ip);
        let v = l3_process(&l3, &mut f, IN);
        assert!(matches!(v, Verdict::Drop(_)), "link-layer {mac:02x?} frame to unicast IP got {v:?}");
    }
}

// ---- Properties -------------------------------------------------------------------------

/// Valid frames of every kind the pipeline handles, to be mutated.
fn seed_frames() -> Vec<(Vec<u8>, u16)> {
    let group = ipv6::solicited_node_multicast(IN_V6);
    let group_mac = MacAddr::from_ipv6_multicast(group).0;
    vec![
        (frame4(IN_MAC, HOST_MAC, &udp4(HOST_V4, NEIGH_V4, 64, 30)), IN),
        (frame4(IN_MAC, HOST_MAC, &udp4(HOST_V4, REMOTE_V4, 2, 0)), IN),
        (pad60(frame4(IN_MAC, HOST_MAC, &udp4(HOST_V4, NEIGH_V4, 9, 0))), IN),
        (frame4(IN_MAC, HOST_MAC, &echo4(HOST_V4, IN_V4, 64, 1, 2, b"abcdefgh")), IN),
        (frame4(OUT_MAC, NEIGH_MAC, &udp4(NEIGH_V4, OUT_V4, 64, 8)), OUT),
        (frame6(IN_MAC, HOST_MAC, &udp6(HOST_V6, NEIGH_V6, 64, 30)), IN),
        (frame6(IN_MAC, HOST_MAC, &echo6(HOST_V6, IN_V6, 64, 1, 2, b"abcdefgh")), IN),
        (frame6(group_mac, HOST_MAC, &ns(HOST_V6, group, 255, IN_V6, Some(HOST_MAC))), IN),
        (frame6(OUT_MAC, NEIGH_MAC, &na(NEIGH_V6, OUT_V6, 255, NEIGH_V6, icmpv6::NaFlags::SOLICITED, NEIGH_MAC)), OUT),
        (arp_request(HOST_MAC, HOST_V4, IN_V4), IN),
        (arp_reply(NEIGH_MAC, NEIGH_V4, OUT_MAC, OUT_V4), OUT),
    ]
}

/// Invariants that hold for any input: no panic (implicit), punted frames
/// unchanged, forwarding only to existing ports, a forwarded IPv4 frame has a
/// valid header checksum, and the length never changes.
fn check_invariants(l3: &Pipeline, frame: &[u8], port: u16) -> Result<(), TestCaseError> {
    let mut f = frame.to_vec();
    let mut ws = crate::pipeline::WorkerCtx::scratch(l3);
    let v = l3.process_frame(&mut f, port, &mut ws);
    prop_assert_eq!(f.len(), frame.len());
    // A mutation may turn a transport checksum into a partial one (one in 65 536):
    // input completes it, the one change a punted frame may carry.
    let completed = ws.input_counters.checksums_completed.get();
    let changed = f.iter().zip(frame).filter(|(a, b)| a != b).count();
    match v {
        Verdict::Punt(_) | Verdict::HandOff(_) => {
            prop_assert!(changed == 0 || (completed == 1 && changed <= 2), "punted frame changed")
        }
        Verdict::Forward(p) => {
            prop_assert!(p < 2, "forward to port {}", p);
            let e = ethernet::Packet::new_checked(&f[..]).unwrap();
            if e.ethertype() == ethernet::EtherType::IPV4 {
                let ip = ipv4::Packet::new_checked(e.payload()).unwrap();
                prop_assert!(ip.verify_checksum());
            }
        }
        Verdict::Drop(_) => {}
    }
    Ok(())
}

proptest! {
    #[test]
    fn process_never_panics_on_arbitrary_bytes(
        bytes in proptest::collection::vec(any::<u8>(), 0..200),
        port in 0u16..3,
        ethertype in prop::sample::select(vec![None, Some(0x0800u16), Some(0x86dd), Some(0x0806)]),
        ours in any::<bool>(),
    ) {
        let (l3, _w) = build_l3_resolved();
        let mut bytes = bytes;
        // Often steer the frame past the Ethernet checks.
        if bytes.len() >= 14 {
            if ours {
                bytes[..6].copy_from_slice(&[IN_MAC, OUT_MAC][usize::from(port & 1)]);
            }
            if let Some(t) = ethertype {
                bytes[12..14].copy_from_slice(&t.to_be_bytes());
            }
        }
        check_invariants(&l3, &bytes, port)?;
    }

    #[test]
    fn process_never_panics_on_mutated_frames(
        seed in any::<prop::sample::Index>(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..6),
        cut in proptest::option::of(any::<prop::sample::Index>()),
        resolved in any::<bool>(),
    ) {
        let (l3, mut w) = build_l3(1500);
        if resolved {
            resolve_all(&mut w);
        }
        let seeds = seed_frames();
        let (frame, port) = &seeds[seed.index(seeds.len())];
        let mut f = frame.clone();
        for (i, x) in flips {
            let i = i.index(f.len());
            f[i] ^= x;
        }
        if let Some(c) = cut {
            f.truncate(c.index(f.len() + 1));
        }
        check_invariants(&l3, &f, *port)?;
    }
}

#[test]
fn seed_frames_are_handled_as_intended() {
    // The mutation seeds are meaningful: each valid one reaches a distinct
    // part of the pipeline.
    let (l3, _w) = build_l3_resolved();
    let verdicts: Vec<Verdict> = seed_frames().into_iter().map(|(mut f, p)| l3_process(&l3, &mut f, p)).collect();
    assert_eq!(
        verdicts,
        vec![
            Verdict::Forward(OUT),
            Verdict::Forward(OUT),
            Verdict::Forward(OUT),
            Verdict::Forward(IN),
            punt(PuntReason::PortUnreachable),
            Verdict::Forward(OUT),
            Verdict::Forward(IN),
            punt(PuntReason::Nd),
            punt(PuntReason::Nd),
            punt(PuntReason::Arp),
            punt(PuntReason::Arp),
        ]
    );
}

#[test]
fn route_lookup_and_next_hop() {
    let (l3, _w) = build_l3(1500);
    use crate::fib::NextHop;
    assert_eq!(l3.route(v4(IN_V4)), Some(NextHop::Local { port: IN }));
    assert_eq!(l3.route(v4(OUT_V4)), Some(NextHop::Local { port: OUT }));
    assert_eq!(l3.route(v6(in_ll())), Some(NextHop::Local { port: IN }));
    assert_eq!(l3.route(v6(out_ll())), Some(NextHop::Local { port: OUT }));
    assert_eq!(l3.next_hop(v4(HOST_V4)), Some((IN, v4(HOST_V4))));
    assert_eq!(l3.next_hop(v4(NEIGH_V4)), Some((OUT, v4(NEIGH_V4))));
    assert_eq!(l3.next_hop(v6(NEIGH_V6)), Some((OUT, v6(NEIGH_V6))));
    assert_eq!(l3.next_hop(v4(REMOTE_V4)), Some((OUT, v4(GW_V4))));
    assert_eq!(l3.next_hop(v4(IN_V4)), None);
    assert_eq!(l3.next_hop(IpAddr::V4(Ipv4Addr::new(100, 64, 0, 1))), None);
}
