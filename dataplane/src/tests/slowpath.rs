//! Unit tests of the slow path (see slowpath.rs).
//!
//! Same set-up as the Pipeline tests (see `l3_tests::fixture`). Every punted frame is
//! first run through [`Pipeline::process`] as a worker would, so the inputs are ones
//! the slow path really gets; time is an explicit `now_ms`.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use proptest::prelude::*;

use crate::fib::neigh::{NeighborState, NeighborTable};
use crate::pipeline::{Pipeline, Verdict};
use crate::slowpath::{SlowPath, SlowPathConfig};
use crate::stats::{ControlCounters, DropReason, IcmpErrorKind, PuntReason};
use crate::tests::l3::fixture::*;
use netwire::ipv4::Protocol;
use netwire::{arp, ethernet, icmpv6, ipv4, ipv6, MacAddr};
use netwire::{PacketBuf, VecBuf, VecPool};

struct Rig {
    sp: SlowPath<VecBuf>,
    l3: Arc<Pipeline>,
    table: Arc<NeighborTable>,
    c: Arc<ControlCounters>,
    pool: VecPool,
}

/// A configuration whose ICMP rate limit never gets in the way.
fn cfg() -> SlowPathConfig {
    SlowPathConfig { icmp_errors_per_s: 1_000_000, icmp_errors_burst: 1_000_000, ..SlowPathConfig::default() }
}

impl Rig {
    fn new(cfg: SlowPathConfig) -> Rig {
        Rig::with_mtu(cfg, 1500)
    }

    fn with_mtu(cfg: SlowPathConfig, outside_mtu: u16) -> Rig {
        let (l3, writer) = build_l3(outside_mtu);
        let table = l3.neighbors().clone();
        let c = Arc::new(ControlCounters::default());
        let sp = SlowPath::new(l3.clone(), writer, cfg, c.clone());
        Rig { sp, l3, table, c, pool: VecPool { remaining: 1_000_000 } }
    }

    /// Runs `frame` (received on `port`) through Pipeline, checks it is punted for
    /// `reason`, hands it to the slow path and returns what that sent.
    fn punt(&mut self, frame: &[u8], port: u16, reason: PuntReason, now: u64) -> Vec<VecBuf> {
        let mut f = frame.to_vec();
        assert_eq!(l3_process(&self.l3, &mut f, port), Verdict::Punt(reason), "worker verdict");
        self.handle(frame, port, reason, now)
    }

    /// Hands `frame` to the slow path directly.
    /// The punt argument (MTU, pointer) comes from what the worker would say.
    fn handle(&mut self, frame: &[u8], port: u16, reason: PuntReason, now: u64) -> Vec<VecBuf> {
        let mut sent = Vec::new();
        let (_, arg) = l3_process_arg(&self.l3, &mut frame.to_vec(), port);
        self.sp.handle(VecBuf::from_frame(frame, port), reason, arg, now, &mut self.pool, &mut |p| sent.push(p));
        sent
    }

    fn tick(&mut self, now: u64) -> Vec<VecBuf> {
        let mut sent = Vec::new();
        self.sp.tick(now, &mut self.pool, &mut |p| sent.push(p));
        sent
    }

    fn drops(&self, r: DropReason) -> u64 {
        self.c.drops.get(r)
    }

    fn state4(&self, port: u16, ip: Ipv4Addr) -> Option<NeighborState> {
        self.table.get(port, v4(ip)).map(|e| e.state)
    }

    fn state6(&self, port: u16, ip: Ipv6Addr) -> Option<NeighborState> {
        self.table.get(port, v6(ip)).map(|e| e.state)
    }
}

fn one(mut sent: Vec<VecBuf>) -> VecBuf {
    assert_eq!(sent.len(), 1, "expected exactly one packet sent");
    sent.pop().unwrap()
}

fn arp_of(f: &[u8]) -> arp::Packet<&[u8]> {
    let e = eth_of(f);
    assert_eq!(e.ethertype(), ethernet::EtherType::ARP);
    arp::Packet::new_checked(&f[ethernet::HEADER_LEN..]).expect("ARP packet")
}

/// Checks an ARP request we sent: broadcast from our MAC on `port`, asking
/// for `target` with `sender_ip` as ours.
fn check_arp_request(out: &VecBuf, port: u16, our_mac: [u8; 6], sender_ip: Ipv4Addr, target: Ipv4Addr) {
    assert_eq!(out.port(), port);
    let f = out.data();
    assert_eq!(f.len(), 60, "minimum frame");
    assert_eq!(&f[0..6], &BROADCAST);
    assert_eq!(&f[6..12], &our_mac);
    let a = arp_of(f);
    assert_eq!(a.operation(), arp::Operation::REQUEST);
    assert_eq!(a.sender_hardware_addr(), MacAddr(our_mac));
    assert_eq!(a.sender_protocol_addr(), sender_ip);
    assert_eq!(a.target_hardware_addr(), MacAddr::ZERO);
    assert_eq!(a.target_protocol_addr(), target);
}

/// Checks a neighbour solicitation we sent for `target` out of `port`.
fn check_ns(out: &VecBuf, port: u16, our_mac: [u8; 6], src: Ipv6Addr, target: Ipv6Addr) {
    assert_eq!(out.port(), port);
    let f = out.data();
    let group = ipv6::solicited_node_multicast(target);
    assert_eq!(&f[0..6], &MacAddr::from_ipv6_multicast(group).0);
    assert_eq!(&f[6..12], &our_mac);
    let ip = ip6_of(f);
    assert_eq!(ip.src_addr(), src);
    assert_eq!(ip.dst_addr(), group);
    assert_eq!(ip.hop_limit(), 255);
    assert_eq!(f.len(), ethernet::HEADER_LEN + ipv6::HEADER_LEN + usize::from(ip.payload_len()));
    let icmp = icmp6_of(f);
    assert_eq!(icmp.msg_type(), icmpv6::Message::NEIGHBOR_SOLICIT);
    assert!(icmp.verify_checksum(src, group), "ICMPv6 checksum");
    assert_eq!(icmpv6::validate_nd(ip.hop_limit(), icmp.as_bytes()), Ok(()));
    let ns = icmpv6::NeighborSolicit::new_checked(icmp.as_bytes()).unwrap();
    assert_eq!(ns.target_addr(), target);
    assert_eq!(ns.source_link_layer_addr(), Ok(Some(MacAddr(our_mac))));
}

/// Checks a neighbour advertisement we sent and returns its flags.
#[allow(clippy::too_many_arguments)]
fn check_na(
    out: &VecBuf,
    port: u16,
    eth_dst: [u8; 6],
    our_mac: [u8; 6],
    src: Ipv6Addr,
    dst: Ipv6Addr,
    target: Ipv6Addr,
) -> icmpv6::NaFlags {
    assert_eq!(out.port(), port);
    let f = out.data();
    assert_eq!(&f[0..6], &eth_dst, "Ethernet dst");
    assert_eq!(&f[6..12], &our_mac, "Ethernet src");
    let ip = ip6_of(f);
    assert_eq!(ip.src_addr(), src);
    assert_eq!(ip.dst_addr(), dst);
    assert_eq!(ip.hop_limit(), 255);
    assert_eq!(f.len(), ethernet::HEADER_LEN + ipv6::HEADER_LEN + usize::from(ip.payload_len()));
    let icmp = icmp6_of(f);
    assert_eq!(icmp.msg_type(), icmpv6::Message::NEIGHBOR_ADVERT);
    assert_eq!(icmp.msg_code(), 0);
    assert!(icmp.verify_checksum(src, dst), "ICMPv6 checksum");
    assert_eq!(icmpv6::validate_nd(ip.hop_limit(), icmp.as_bytes()), Ok(()));
    let na = icmpv6::NeighborAdvert::new_checked(icmp.as_bytes()).unwrap();
    assert_eq!(na.target_addr(), target);
    assert_eq!(na.target_link_layer_addr(), Ok(Some(MacAddr(our_mac))));
    na.flags()
}

/// Checks an ICMPv4 error we sent about `offending` (an IPv4 packet).
#[allow(clippy::too_many_arguments)]
fn check_icmp4_error(
    out: &VecBuf,
    port: u16,
    eth_dst: [u8; 6],
    eth_src: [u8; 6],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    (ty, code, rest): (u8, u8, u32),
    offending: &[u8],
) {
    assert_eq!(out.port(), port, "sent back out of the port it came in on");
    let f = out.data();
    assert_eq!(&f[0..6], &eth_dst, "Ethernet dst");
    assert_eq!(&f[6..12], &eth_src, "Ethernet src");
    let ip = ip4_of(f);
    assert_eq!(ip.src_addr(), src);
    assert_eq!(ip.dst_addr(), dst);
    assert_eq!(ip.protocol(), Protocol::ICMP);
    assert_eq!(ip.ttl(), 64);
    assert!(!ip.is_fragment());
    assert!(ip.verify_checksum(), "IPv4 header checksum");
    assert!(usize::from(ip.total_len()) <= 576, "RFC 1812: at most 576 bytes");
    assert_eq!(f.len(), (ethernet::HEADER_LEN + usize::from(ip.total_len())).max(60));
    let icmp = icmp4_of(f);
    assert_eq!((icmp.msg_type().0, icmp.msg_code()), (ty, code), "type/code");
    assert_eq!(icmp.rest_of_header(), rest);
    assert!(icmp.verify_checksum(), "ICMP checksum");
    let quoted = icmp.payload();
    let off_hdr = ipv4::Packet::new_checked(offending).unwrap().header_len();
    assert!(quoted.len() >= off_hdr + 8, "quotes the IP header and 8 bytes");
    assert_eq!(quoted, &offending[..quoted.len()]);
    assert_eq!(quoted.len(), offending.len().min(548));
}

/// Checks an ICMPv6 error we sent about `offending` (an IPv6 packet).
#[allow(clippy::too_many_arguments)]
fn check_icmp6_error(
    out: &VecBuf,
    port: u16,
    eth_dst: [u8; 6],
    eth_src: [u8; 6],
    src: Ipv6Addr,
    dst: Ipv6Addr,
    (ty, code, param): (u8, u8, u32),
    offending: &[u8],
) {
    assert_eq!(out.port(), port, "sent back out of the port it came in on");
    let f = out.data();
    assert_eq!(&f[0..6], &eth_dst, "Ethernet dst");
    assert_eq!(&f[6..12], &eth_src, "Ethernet src");
    let ip = ip6_of(f);
    assert_eq!(ip.src_addr(), src);
    assert_eq!(ip.dst_addr(), dst);
    assert_eq!(ip.next_header(), Protocol::ICMPV6);
    assert_eq!(ip.hop_limit(), 64);
    assert!(ipv6::HEADER_LEN + usize::from(ip.payload_len()) <= 1280, "RFC 4443: fits the minimum MTU");
    assert_eq!(f.len(), ethernet::HEADER_LEN + ipv6::HEADER_LEN + usize::from(ip.payload_len()));
    let icmp = icmp6_of(f);
    assert_eq!((icmp.msg_type().0, icmp.msg_code()), (ty, code), "type/code");
    assert_eq!(icmp.rest_of_header(), param);
    assert!(icmp.verify_checksum(src, dst), "ICMPv6 checksum");
    let quoted = icmp.payload();
    assert_eq!(quoted, &offending[..quoted.len()]);
    assert_eq!(quoted.len(), offending.len().min(1232));
}

fn solicited_mac(a: Ipv6Addr) -> [u8; 6] {
    MacAddr::from_ipv6_multicast(ipv6::solicited_node_multicast(a)).0
}

// ---- ARP ------------------------------------------------------------------------

#[test]
fn arp_request_for_us_is_answered_and_requester_learned() {
    let mut rig = Rig::new(cfg());
    assert_eq!(rig.table.get(IN, v4(HOST_V4)), None);
    let req = arp_request(HOST_MAC, HOST_V4, IN_V4);
    let out = one(rig.punt(&req, IN, PuntReason::Arp, 1234));
    assert_eq!(out.port(), IN);
    let f = out.data();
    assert_eq!(&f[0..6], &HOST_MAC, "to the requester");
    assert_eq!(&f[6..12], &IN_MAC, "from us");
    let a = arp_of(f);
    assert_eq!(a.operation(), arp::Operation::REPLY);
    assert_eq!(a.sender_hardware_addr(), MacAddr(IN_MAC));
    assert_eq!(a.sender_protocol_addr(), IN_V4);
    assert_eq!(a.target_hardware_addr(), MacAddr(HOST_MAC));
    assert_eq!(a.target_protocol_addr(), HOST_V4);

    let e = rig.table.get(IN, v4(HOST_V4)).expect("requester learned");
    assert_eq!((e.mac, e.state, e.updated_ms), (HOST_MAC, NeighborState::Reachable, 1234));
    assert_eq!(rig.table.lookup(IN, v4(HOST_V4)), Some(HOST_MAC));
    assert_eq!(rig.c.arp_replies_sent.get(), 1);
    assert_eq!(rig.c.neighbors_learned.get(), 1);
    assert_eq!(rig.c.punts_handled.get(), 1);

    // The workers can now forward to it.
    let orig = frame4(OUT_MAC, NEIGH_MAC, &udp4(NEIGH_V4, HOST_V4, 64, 10));
    let mut fw = orig.clone();
    assert_eq!(l3_process(&rig.l3, &mut fw, OUT), Verdict::Forward(IN));
    check_forwarded_v4(&fw, &orig, HOST_MAC, IN_MAC);
}

#[test]
fn arp_request_not_for_us_is_ignored_and_sender_not_learned() {
    let mut rig = Rig::new(cfg());
    let req = arp_request(HOST_MAC, HOST_V4, Ipv4Addr::new(192, 0, 2, 99));
    assert!(rig.punt(&req, IN, PuntReason::Arp, 0).is_empty());
    assert_eq!(rig.drops(DropReason::ArpNotForUs), 1);
    assert_eq!(rig.table.get(IN, v4(HOST_V4)), None);
    assert!(rig.table.is_empty());
    assert_eq!(rig.c.arp_replies_sent.get(), 0);

    // The outside address asked on the inside port is not answered there.
    let req = arp_request(HOST_MAC, HOST_V4, OUT_V4);
    assert!(rig.punt(&req, IN, PuntReason::Arp, 0).is_empty());
    assert_eq!(rig.drops(DropReason::ArpNotForUs), 2);
}

#[test]
fn arp_from_known_neighbor_updates_its_mac() {
    let mut rig = Rig::new(cfg());
    one(rig.punt(&arp_request(HOST_MAC, HOST_V4, IN_V4), IN, PuntReason::Arp, 0));
    assert_eq!(rig.table.lookup(IN, v4(HOST_V4)), Some(HOST_MAC));

    // Gratuitous ARP (a request for its own address) with a new MAC.
    let new_mac = [0x02, 0, 0, 0, 0x01, 0x22];
    let garp = arp_request(new_mac, HOST_V4, HOST_V4);
    assert!(rig.punt(&garp, IN, PuntReason::Arp, 100).is_empty());
    assert_eq!(rig.table.lookup(IN, v4(HOST_V4)), Some(new_mac));
    assert_eq!(rig.table.get(IN, v4(HOST_V4)).unwrap().updated_ms, 100);

    // An unsolicited reply to us with yet another MAC: nothing sent, updated.
    let newer_mac = [0x02, 0, 0, 0, 0x01, 0x33];
    let reply = arp_reply(newer_mac, HOST_V4, IN_MAC, IN_V4);
    assert!(rig.punt(&reply, IN, PuntReason::Arp, 200).is_empty());
    assert_eq!(rig.table.lookup(IN, v4(HOST_V4)), Some(newer_mac));
    assert_eq!(rig.c.arp_replies_sent.get(), 1);

    // A gratuitous ARP from an unknown host creates nothing.
    let stranger = Ipv4Addr::new(192, 0, 2, 50);
    let garp = arp_request([0x02, 0, 0, 0, 0x01, 0x50], stranger, stranger);
    assert!(rig.punt(&garp, IN, PuntReason::Arp, 300).is_empty());
    assert_eq!(rig.table.get(IN, v4(stranger)), None);
    assert_eq!(rig.table.len(), 1);
}

#[test]
fn invalid_arp_is_counted() {
    let mut rig = Rig::new(cfg());
    // Multicast sender hardware address.
    let bad = arp_frame(BROADCAST, HOST_MAC, arp::Operation::REQUEST, [0x01, 0, 0x5e, 0, 0, 1], HOST_V4, [0; 6], IN_V4);
    assert!(rig.punt(&bad, IN, PuntReason::Arp, 0).is_empty());
    // Zero sender hardware address.
    let bad = arp_frame(BROADCAST, HOST_MAC, arp::Operation::REQUEST, [0; 6], HOST_V4, [0; 6], IN_V4);
    assert!(rig.punt(&bad, IN, PuntReason::Arp, 0).is_empty());
    // Truncated ARP body and non-Ethernet/IPv4 ARP.
    let short = eth(BROADCAST, HOST_MAC, ethernet::EtherType::ARP.0, &[0, 1, 8, 0, 6, 4]);
    assert!(rig.punt(&short, IN, PuntReason::Arp, 0).is_empty());
    let mut ipx = arp_request(HOST_MAC, HOST_V4, IN_V4);
    ipx[16] = 0x81; // protocol type 0x8137
    ipx[17] = 0x37;
    assert!(rig.punt(&ipx, IN, PuntReason::Arp, 0).is_empty());
    assert_eq!(rig.drops(DropReason::ArpInvalid), 4);
    assert!(rig.table.is_empty());
}

#[test]
fn static_neighbors_are_not_overridden_by_arp() {
    let mut rig = Rig::new(cfg());
    rig.sp.add_static(IN, v4(HOST_V4), HOST_MAC).unwrap();
    assert_eq!(rig.table.lookup(IN, v4(HOST_V4)), Some(HOST_MAC));
    let other = [0x02, 0, 0, 0, 0x01, 0x77];
    let req = arp_request(other, HOST_V4, IN_V4);
    let out = one(rig.punt(&req, IN, PuntReason::Arp, 5));
    assert_eq!(&out.data()[0..6], &other, "the reply still goes to the asker");
    let e = rig.table.get(IN, v4(HOST_V4)).unwrap();
    assert_eq!((e.mac, e.state), (HOST_MAC, NeighborState::Static));
}

// ---- Neighbour discovery -------------------------------------------------------------

#[test]
fn ns_for_us_is_answered_and_solicitor_learned() {
    let mut rig = Rig::new(cfg());
    let group = ipv6::solicited_node_multicast(IN_V6);
    let f = frame6(solicited_mac(IN_V6), HOST_MAC, &ns(HOST_V6, group, 255, IN_V6, Some(HOST_MAC)));
    let out = one(rig.punt(&f, IN, PuntReason::Nd, 77));
    let flags = check_na(&out, IN, HOST_MAC, IN_MAC, IN_V6, HOST_V6, IN_V6);
    assert!(flags.contains(icmpv6::NaFlags::SOLICITED), "S flag");
    assert!(flags.contains(icmpv6::NaFlags::OVERRIDE), "O flag");
    assert!(flags.contains(icmpv6::NaFlags::ROUTER), "R flag: we are a router (RFC 4861 §4.4)");
    assert_eq!(rig.c.nd_adverts_sent.get(), 1);

    let e = rig.table.get(IN, v6(HOST_V6)).expect("solicitor learned");
    assert_eq!((e.mac, e.state, e.updated_ms), (HOST_MAC, NeighborState::Reachable, 77));
}

#[test]
fn ns_for_our_link_local_address_is_answered_from_it() {
    let mut rig = Rig::new(cfg());
    let target = in_ll();
    let group = ipv6::solicited_node_multicast(target);
    let f = frame6(solicited_mac(target), HOST_MAC, &ns(host_ll(), group, 255, target, Some(HOST_MAC)));
    let out = one(rig.punt(&f, IN, PuntReason::Nd, 0));
    check_na(&out, IN, HOST_MAC, IN_MAC, target, host_ll(), target);
    assert_eq!(rig.table.lookup(IN, v6(host_ll())), Some(HOST_MAC));
}

#[test]
fn unicast_ns_without_slla_is_answered_to_the_frame_source() {
    let mut rig = Rig::new(cfg());
    // A reachability probe: unicast, no source link-layer option.
    let f = frame6(IN_MAC, HOST_MAC, &ns(HOST_V6, IN_V6, 255, IN_V6, None));
    let out = one(rig.punt(&f, IN, PuntReason::Nd, 0));
    let flags = check_na(&out, IN, HOST_MAC, IN_MAC, IN_V6, HOST_V6, IN_V6);
    assert!(flags.contains(icmpv6::NaFlags::SOLICITED | icmpv6::NaFlags::OVERRIDE));
    // Without the option the solicitor is not learned (RFC 4861 §7.2.3).
    assert_eq!(rig.table.get(IN, v6(HOST_V6)), None);
}

#[test]
fn dad_ns_is_answered_to_all_nodes_without_s_flag() {
    let mut rig = Rig::new(cfg());
    let group = ipv6::solicited_node_multicast(IN_V6);
    let f = frame6(solicited_mac(IN_V6), HOST_MAC, &ns(Ipv6Addr::UNSPECIFIED, group, 255, IN_V6, None));
    let out = one(rig.punt(&f, IN, PuntReason::Nd, 0));
    let flags = check_na(&out, IN, [0x33, 0x33, 0, 0, 0, 1], IN_MAC, IN_V6, ipv6::ALL_NODES, IN_V6);
    assert!(!flags.contains(icmpv6::NaFlags::SOLICITED), "no S flag to all-nodes");
    assert!(flags.contains(icmpv6::NaFlags::OVERRIDE));
    assert!(rig.table.is_empty(), "the unspecified address is not learned");
    assert_eq!(rig.c.neighbors_learned.get(), 0);
}

#[test]
fn invalid_ns_is_dropped() {
    let mut rig = Rig::new(cfg());
    let group = ipv6::solicited_node_multicast(IN_V6);
    let gmac = solicited_mac(IN_V6);
    // Hop limit 64: not from the link.
    let f = frame6(gmac, HOST_MAC, &ns(HOST_V6, group, 64, IN_V6, Some(HOST_MAC)));
    assert!(rig.punt(&f, IN, PuntReason::Nd, 0).is_empty());
    assert_eq!(rig.drops(DropReason::NdInvalid), 1);
    // Bad checksum.
    let mut p = ns(HOST_V6, group, 255, IN_V6, Some(HOST_MAC));
    p[ipv6::HEADER_LEN + 2] ^= 0x10;
    assert!(rig.punt(&frame6(gmac, HOST_MAC, &p), IN, PuntReason::Nd, 0).is_empty());
    assert_eq!(rig.drops(DropReason::NdInvalid), 2);
    // DAD probe with a source link-layer option.
    let f = frame6(gmac, HOST_MAC, &ns(Ipv6Addr::UNSPECIFIED, group, 255, IN_V6, Some(HOST_MAC)));
    assert!(rig.punt(&f, IN, PuntReason::Nd, 0).is_empty());
    assert_eq!(rig.drops(DropReason::NdInvalid), 3);
    // Multicast target.
    let f = frame6(gmac, HOST_MAC, &ns(HOST_V6, group, 255, group, Some(HOST_MAC)));
    assert!(rig.punt(&f, IN, PuntReason::Nd, 0).is_empty());
    assert_eq!(rig.drops(DropReason::NdInvalid), 4);
    assert!(rig.table.is_empty());
    assert_eq!(rig.c.nd_adverts_sent.get(), 0);
}

#[test]
fn ns_for_an_address_not_ours() {
    let mut rig = Rig::new(cfg());
    let target: Ipv6Addr = "2001:db8:1::99".parse().unwrap();
    let group = ipv6::solicited_node_multicast(target);
    let f = frame6(solicited_mac(target), HOST_MAC, &ns(HOST_V6, group, 255, target, Some(HOST_MAC)));
    assert!(rig.punt(&f, IN, PuntReason::Nd, 0).is_empty());
    assert_eq!(rig.drops(DropReason::NdNotForUs), 1);
    assert!(rig.table.is_empty());
    // Our outside address asked on the inside port.
    let group = ipv6::solicited_node_multicast(OUT_V6);
    let f = frame6(solicited_mac(OUT_V6), HOST_MAC, &ns(HOST_V6, group, 255, OUT_V6, Some(HOST_MAC)));
    assert!(rig.punt(&f, IN, PuntReason::Nd, 0).is_empty());
    assert_eq!(rig.drops(DropReason::NdNotForUs), 2);
}

#[test]
fn na_from_known_neighbor_updates_it_unknown_ignored() {
    let mut rig = Rig::new(cfg());
    // NEIGH solicits us: learned.
    let group = ipv6::solicited_node_multicast(OUT_V6);
    let f = frame6(solicited_mac(OUT_V6), NEIGH_MAC, &ns(NEIGH_V6, group, 255, OUT_V6, Some(NEIGH_MAC)));
    one(rig.punt(&f, OUT, PuntReason::Nd, 0));
    assert_eq!(rig.table.lookup(OUT, v6(NEIGH_V6)), Some(NEIGH_MAC));
    // Unsolicited NA to all-nodes announcing a new MAC.
    let new_mac = [0x02, 0, 0, 0, 0x02, 0x22];
    let p = na(NEIGH_V6, ipv6::ALL_NODES, 255, NEIGH_V6, icmpv6::NaFlags::OVERRIDE, new_mac);
    assert!(rig.punt(&frame6([0x33, 0x33, 0, 0, 0, 1], new_mac, &p), OUT, PuntReason::Nd, 10).is_empty());
    assert_eq!(rig.table.lookup(OUT, v6(NEIGH_V6)), Some(new_mac));
    // An NA about an unknown address creates nothing.
    let stranger: Ipv6Addr = "2001:db8:2::33".parse().unwrap();
    let p = na(stranger, ipv6::ALL_NODES, 255, stranger, icmpv6::NaFlags::OVERRIDE, [0x02, 0, 0, 0, 2, 0x33]);
    assert!(rig.punt(&frame6([0x33, 0x33, 0, 0, 0, 1], NEIGH_MAC, &p), OUT, PuntReason::Nd, 20).is_empty());
    assert_eq!(rig.table.get(OUT, v6(stranger)), None);
    assert_eq!(rig.drops(DropReason::NdAdvertUnknown), 1);
}

// ---- Resolution -------------------------------------------------------------------

#[test]
fn resolution_v4_holds_packet_until_arp_reply() {
    let mut rig = Rig::new(cfg());
    let orig = frame4(IN_MAC, HOST_MAC, &udp4(HOST_V4, NEIGH_V4, 64, 50));
    let req = one(rig.punt(&orig, IN, PuntReason::NeighborMiss, 0));
    check_arp_request(&req, OUT, OUT_MAC, OUT_V4, NEIGH_V4);
    assert_eq!(rig.sp.pending(), 1);
    assert_eq!(rig.c.pending.get(), 1);
    assert_eq!(rig.c.arp_requests_sent.get(), 1);
    assert_eq!(rig.c.resolutions_started.get(), 1);
    assert_eq!(rig.state4(OUT, NEIGH_V4), Some(NeighborState::Incomplete));
    // Workers still miss while the entry is incomplete; a second packet is
    // held without a second request.
    let second = frame4(IN_MAC, HOST_MAC, &udp4(HOST_V4, NEIGH_V4, 9, 3));
    assert!(rig.punt(&second, IN, PuntReason::NeighborMiss, 10).is_empty());
    assert_eq!(rig.sp.pending(), 2);

    let reply = arp_reply(NEIGH_MAC, NEIGH_V4, OUT_MAC, OUT_V4);
    let sent = rig.punt(&reply, OUT, PuntReason::Arp, 20);
    assert_eq!(sent.len(), 2, "both held packets sent, and nothing else");
    for (out, orig) in sent.iter().zip([&orig, &second]) {
        assert_eq!(out.port(), OUT);
        check_forwarded_v4(out.data(), orig, NEIGH_MAC, OUT_MAC);
    }
    assert_eq!(ip4_of(sent[0].data()).ttl(), 63);
    assert_eq!(rig.sp.pending(), 0);
    assert_eq!(rig.c.held_packets_sent.get(), 2);
    let e = rig.table.get(OUT, v4(NEIGH_V4)).unwrap();
    assert_eq!((e.mac, e.state, e.updated_ms), (NEIGH_MAC, NeighborState::Reachable, 20));
    // Resolution is over: no retries later.
    assert!(rig.tick(1000).is_empty());
    assert!(rig.tick(5000).is_empty());
    assert_eq!(rig.c.arp_requests_sent.get(), 1);
    assert_eq!(rig.c.pending.get(), 0);
}

#[test]
fn resolution_via_gateway_resolves_the_gateway() {
    let mut rig = Rig::new(cfg());
    let orig = frame4(IN_MAC, HOST_MAC, &udp4(HOST_V4, REMOTE_V4, 64, 20));
    let req = one(rig.punt(&orig, IN, PuntReason::NeighborMiss, 0));
    check_arp_request(&req, OUT, OUT_MAC, OUT_V4, GW_V4);
    let reply = arp_reply(GW_MAC, GW_V4, OUT_MAC, OUT_V4);
    let out = one(rig.punt(&reply, OUT, PuntReason::Arp, 5));
    assert_eq!(out.port(), OUT);
    check_forwarded_v4(out.data(), &orig, GW_MAC, OUT_MAC);
}

#[test]
fn resolution_v6_holds_packet_until_na() {
    let mut rig = Rig::new(cfg());
    let orig = frame6(IN_MAC, HOST_MAC, &udp6(HOST_V6, NEIGH_V6, 64, 50));
    let req = one(rig.punt(&orig, IN, PuntReason::NeighborMiss, 0));
    check_ns(&req, OUT, OUT_MAC, OUT_V6, NEIGH_V6);
    assert_eq!(rig.sp.pending(), 1);
    assert_eq!(rig.c.nd_solicits_sent.get(), 1);
    assert_eq!(rig.state6(OUT, NEIGH_V6), Some(NeighborState::Incomplete));

    let flags = icmpv6::NaFlags::SOLICITED | icmpv6::NaFlags::OVERRIDE;
    let answer = frame6(OUT_MAC, NEIGH_MAC, &na(NEIGH_V6, OUT_V6, 255, NEIGH_V6, flags, NEIGH_MAC));
    let out = one(rig.punt(&answer, OUT, PuntReason::Nd, 30));
    assert_eq!(out.port(), OUT);
    check_forwarded_v6(out.data(), &orig, NEIGH_MAC, OUT_MAC);
    assert_eq!(ip6_of(out.data()).hop_limit(), 63);
    assert_eq!(rig.sp.pending(), 0);
    assert_eq!(rig.table.lookup(OUT, v6(NEIGH_V6)), Some(NEIGH_MAC));
    assert!(rig.tick(1000).is_empty());
}

#[test]
fn neighbor_resolved_meanwhile_is_forwarded_at_once() {
    let mut rig = Rig::new(cfg());
    let orig = frame4(IN_MAC, HOST_MAC, &udp4(HOST_V4, NEIGH_V4, 64, 5));
    let mut f = orig.clone();
    assert_eq!(l3_process(&rig.l3, &mut f, IN), Verdict::Punt(PuntReason::NeighborMiss));
    // The neighbour asks for us (and so is learned) before the punt is handled.
    one(rig.punt(&arp_request(NEIGH_MAC, NEIGH_V4, OUT_V4), OUT, PuntReason::Arp, 0));
    let out = one(rig.handle(&orig, IN, PuntReason::NeighborMiss, 1));
    assert_eq!(out.port(), OUT);
    check_forwarded_v4(out.data(), &orig, NEIGH_MAC, OUT_MAC);
    assert_eq!(rig.sp.pending(), 0);
    assert_eq!(rig.c.arp_requests_sent.get(), 0);
}

fn retry_cfg() -> SlowPathConfig {
    SlowPathConfig { resolve_retries: 3, resolve_interval_ms: 1000, ..cfg() }
}

#[test]
fn resolution_v4_retries_then_fails_with_host_unreachable() {
    let mut rig = Rig::new(retry_cfg());
    let ip = udp4(HOST_V4, NEIGH_V4, 64, 40);
    let orig = frame4(IN_MAC, HOST_MAC, &ip);
    check_arp_request(&one(rig.punt(&orig, IN, PuntReason::NeighborMiss, 0)), OUT, OUT_MAC, OUT_V4, NEIGH_V4);
    assert!(rig.tick(500).is_empty());
    assert!(rig.tick(999).is_empty());
    check_arp_request(&one(rig.tick(1000)), OUT, OUT_MAC, OUT_V4, NEIGH_V4);
    assert!(rig.tick(1500).is_empty());
    check_arp_request(&one(rig.tick(2000)), OUT, OUT_MAC, OUT_V4, NEIGH_V4);
    assert!(rig.tick(2999).is_empty());
    assert_eq!(rig.c.arp_requests_sent.get(), 3, "resolve_retries requests in all");
    assert_eq!(rig.sp.pending(), 1);

    let err = one(rig.tick(3000));
    check_icmp4_error(&err, IN, HOST_MAC, IN_MAC, IN_V4, HOST_V4, (3, 1, 0), &ip);
    assert_eq!(rig.drops(DropReason::NeighborFailed), 1);
    assert_eq!(rig.c.resolutions_failed.get(), 1);
    assert_eq!(rig.c.icmp_errors.get(IcmpErrorKind::V4HostUnreachable), 1);
    assert_eq!(rig.sp.pending(), 0);
    assert_eq!(rig.c.pending.get(), 0);
    assert_eq!(rig.state4(OUT, NEIGH_V4), Some(NeighborState::Failed));
    assert!(rig.tick(10_000).is_empty());
    assert_eq!(rig.c.arp_requests_sent.get(), 3);

    // Workers keep missing; a new packet starts a new resolution.
    let mut f = orig.clone();
    assert_eq!(l3_process(&rig.l3, &mut f, IN), Verdict::Punt(PuntReason::NeighborMiss));
    check_arp_request(&one(rig.punt(&orig, IN, PuntReason::NeighborMiss, 20_000)), OUT, OUT_MAC, OUT_V4, NEIGH_V4);
    assert_eq!(rig.state4(OUT, NEIGH_V4), Some(NeighborState::Incomplete));
    assert_eq!(rig.sp.pending(), 1);
}

#[test]
fn resolution_v6_fails_with_address_unreachable() {
    let mut rig = Rig::new(retry_cfg());
    let ip = udp6(HOST_V6, NEIGH_V6, 64, 40);
    let orig = frame6(IN_MAC, HOST_MAC, &ip);
    check_ns(&one(rig.punt(&orig, IN, PuntReason::NeighborMiss, 0)), OUT, OUT_MAC, OUT_V6, NEIGH_V6);
    check_ns(&one(rig.tick(1000)), OUT, OUT_MAC, OUT_V6, NEIGH_V6);
    check_ns(&one(rig.tick(2000)), OUT, OUT_MAC, OUT_V6, NEIGH_V6);
    let err = one(rig.tick(3000));
    check_icmp6_error(&err, IN, HOST_MAC, IN_MAC, IN_V6, HOST_V6, (1, 3, 0), &ip);
    assert_eq!(rig.c.nd_solicits_sent.get(), 3);
    assert_eq!(rig.drops(DropReason::NeighborFailed), 1);
    assert_eq!(rig.c.icmp_errors.get(IcmpErrorKind::V6AddressUnreachable), 1);
    assert_eq!(rig.state6(OUT, NEIGH_V6), Some(NeighborState::Failed));
}

#[test]
fn pending_limits() {
    let mut rig = Rig::new(SlowPathConfig { pending_per_neighbor_max: 2, pending_packets_max: 3, ..cfg() });
    let to = |dst: Ipv4Addr, n: usize| frame4(IN_MAC, HOST_MAC, &udp4(HOST_V4, dst, 64, n));
    let other = Ipv4Addr::new(198, 51, 100, 3);

    assert_eq!(rig.punt(&to(NEIGH_V4, 1), IN, PuntReason::NeighborMiss, 0).len(), 1);
    assert!(rig.punt(&to(NEIGH_V4, 2), IN, PuntReason::NeighborMiss, 0).is_empty());
    assert!(rig.punt(&to(NEIGH_V4, 3), IN, PuntReason::NeighborMiss, 0).is_empty());
    assert_eq!(rig.drops(DropReason::PendingFull), 1, "per-neighbour limit");
    assert_eq!(rig.sp.pending(), 2);

    check_arp_request(&one(rig.punt(&to(other, 4), IN, PuntReason::NeighborMiss, 0)), OUT, OUT_MAC, OUT_V4, other);
    assert_eq!(rig.sp.pending(), 3);
    assert!(rig.punt(&to(other, 5), IN, PuntReason::NeighborMiss, 0).is_empty());
    assert_eq!(rig.drops(DropReason::PendingFull), 2, "total limit");
    let third = Ipv4Addr::new(198, 51, 100, 4);
    rig.punt(&to(third, 6), IN, PuntReason::NeighborMiss, 0);
    assert_eq!(rig.drops(DropReason::PendingFull), 3, "total limit, new neighbour");
    assert_eq!(rig.sp.pending(), 3);

    // The held packets are the first two: data lengths 1 and 2.
    let sent = rig.punt(&arp_reply(NEIGH_MAC, NEIGH_V4, OUT_MAC, OUT_V4), OUT, PuntReason::Arp, 1);
    assert_eq!(sent.len(), 2);
    check_forwarded_v4(sent[0].data(), &to(NEIGH_V4, 1), NEIGH_MAC, OUT_MAC);
    check_forwarded_v4(sent[1].data(), &to(NEIGH_V4, 2), NEIGH_MAC, OUT_MAC);
    assert_eq!(rig.sp.pending(), 1);
    // Room again.
    assert!(rig.punt(&to(other, 7), IN, PuntReason::NeighborMiss, 2).is_empty());
    assert_eq!(rig.sp.pending(), 2);
    assert_eq!(rig.drops(DropReason::PendingFull), 3);
}

// ---- ICMP errors -----------------------------------------------------------------

#[test]
fn ttl_expired_v4_sends_time_exceeded() {
    let mut rig = Rig::new(cfg());
    let ip = udp4(HOST_V4, REMOTE_V4, 1, 32);
    let f = frame4(IN_MAC, HOST_MAC, &ip);
    let err = one(rig.punt(&f, IN, PuntReason::TtlExpired, 0));
    check_icmp4_error(&err, IN, HOST_MAC, IN_MAC, IN_V4, HOST_V4, (11, 0, 0), &ip);
    assert_eq!(rig.c.icmp_errors.get(IcmpErrorKind::V4TimeExceeded), 1);
    assert_eq!(rig.drops(DropReason::TtlExpired), 1);

    // From the outside: the error comes from the outside address.
    let ip = udp4(REMOTE_V4, HOST_V4, 1, 0);
    let f = pad60(frame4(OUT_MAC, GW_MAC, &ip));
    let err = one(rig.punt(&f, OUT, PuntReason::TtlExpired, 0));
    check_icmp4_error(&err, OUT, GW_MAC, OUT_MAC, OUT_V4, REMOTE_V4, (11, 0, 0), &ip);
}

#[test]
fn ttl_expired_v6_sends_time_exceeded() {
    let mut rig = Rig::new(cfg());
    let ip = udp6(HOST_V6, NEIGH_V6, 1, 32);
    let f = frame6(IN_MAC, HOST_MAC, &ip);
    let err = one(rig.punt(&f, IN, PuntReason::TtlExpired, 0));
    check_icmp6_error(&err, IN, HOST_MAC, IN_MAC, IN_V6, HOST_V6, (3, 0, 0), &ip);
    assert_eq!(rig.c.icmp_errors.get(IcmpErrorKind::V6TimeExceeded), 1);
    assert_eq!(rig.drops(DropReason::TtlExpired), 1);
}

#[test]
fn no_route_sends_unreachable() {
    let mut rig = Rig::new(cfg());
    let ip = udp4(HOST_V4, Ipv4Addr::new(100, 64, 0, 1), 64, 20);
    let err = one(rig.punt(&frame4(IN_MAC, HOST_MAC, &ip), IN, PuntReason::NoRoute, 0));
    check_icmp4_error(&err, IN, HOST_MAC, IN_MAC, IN_V4, HOST_V4, (3, 0, 0), &ip);
    assert_eq!(rig.c.icmp_errors.get(IcmpErrorKind::V4NetUnreachable), 1);

    let ip = udp6(HOST_V6, "2001:db8:99::1".parse().unwrap(), 64, 20);
    let err = one(rig.punt(&frame6(IN_MAC, HOST_MAC, &ip), IN, PuntReason::NoRoute, 0));
    check_icmp6_error(&err, IN, HOST_MAC, IN_MAC, IN_V6, HOST_V6, (1, 0, 0), &ip);
    assert_eq!(rig.c.icmp_errors.get(IcmpErrorKind::V6NoRoute), 1);
    assert_eq!(rig.drops(DropReason::NoRoute), 2);
}

#[test]
fn udp_to_us_sends_port_unreachable() {
    let mut rig = Rig::new(cfg());
    let ip = udp4(HOST_V4, IN_V4, 64, 20);
    let err = one(rig.punt(&frame4(IN_MAC, HOST_MAC, &ip), IN, PuntReason::PortUnreachable, 0));
    check_icmp4_error(&err, IN, HOST_MAC, IN_MAC, IN_V4, HOST_V4, (3, 3, 0), &ip);
    assert_eq!(rig.c.icmp_errors.get(IcmpErrorKind::V4PortUnreachable), 1);

    let ip = udp6(HOST_V6, IN_V6, 64, 20);
    let err = one(rig.punt(&frame6(IN_MAC, HOST_MAC, &ip), IN, PuntReason::PortUnreachable, 0));
    check_icmp6_error(&err, IN, HOST_MAC, IN_MAC, IN_V6, HOST_V6, (1, 4, 0), &ip);
    assert_eq!(rig.c.icmp_errors.get(IcmpErrorKind::V6PortUnreachable), 1);
    assert_eq!(rig.drops(DropReason::PortUnreachable), 2);
}

#[test]
fn too_big_sends_frag_needed_and_packet_too_big() {
    let mut rig = Rig::with_mtu(cfg(), 1280);
    let mut ip = udp4(HOST_V4, NEIGH_V4, 64, 1400 - 28);
    set_df(&mut ip);
    let err = one(rig.punt(&frame4(IN_MAC, HOST_MAC, &ip), IN, PuntReason::TooBig, 0));
    check_icmp4_error(&err, IN, HOST_MAC, IN_MAC, IN_V4, HOST_V4, (3, 4, 1280), &ip);
    assert_eq!(ip4_of(err.data()).total_len(), 576, "quote capped at 576 bytes");
    assert_eq!(icmp4_of(err.data()).rest_of_header() & 0xffff, 1280, "next-hop MTU");
    assert_eq!(rig.c.icmp_errors.get(IcmpErrorKind::V4FragmentationNeeded), 1);

    let ip = udp6(HOST_V6, NEIGH_V6, 64, 1400 - 48);
    let err = one(rig.punt(&frame6(IN_MAC, HOST_MAC, &ip), IN, PuntReason::TooBig, 0));
    check_icmp6_error(&err, IN, HOST_MAC, IN_MAC, IN_V6, HOST_V6, (2, 0, 1280), &ip);
    assert_eq!(ip6_of(err.data()).payload_len(), 1240, "fills the minimum MTU");
    assert_eq!(rig.c.icmp_errors.get(IcmpErrorKind::V6PacketTooBig), 1);
    assert_eq!(rig.drops(DropReason::TooBig), 2);
}

#[test]
fn no_icmp_error_about_an_icmp_error() {
    let mut rig = Rig::new(cfg());
    // An ICMP destination unreachable (quoting something) with TTL 1.
    let quoted = udp4(REMOTE_V4, HOST_V4, 5, 8);
    let ip = icmp4(HOST_V4, REMOTE_V4, 1, 3, 3, 0, &quoted[..28]);
    assert!(rig.punt(&frame4(IN_MAC, HOST_MAC, &ip), IN, PuntReason::TtlExpired, 0).is_empty());
    assert_eq!(rig.drops(DropReason::IcmpErrorSuppressed), 1);
    assert_eq!(rig.drops(DropReason::TtlExpired), 1);
    // ICMPv6 destination unreachable with hop limit 1.
    let quoted6 = udp6(NEIGH_V6, HOST_V6, 5, 8);
    let ip = icmp6(HOST_V6, NEIGH_V6, 1, 1, 0, 0, &quoted6);
    assert!(rig.punt(&frame6(IN_MAC, HOST_MAC, &ip), IN, PuntReason::TtlExpired, 0).is_empty());
    assert_eq!(rig.drops(DropReason::IcmpErrorSuppressed), 2);

    // ICMP informational messages do get errors (traceroute with ICMP).
    let ip = echo4(HOST_V4, REMOTE_V4, 1, 1, 1, b"trace");
    let err = one(rig.punt(&frame4(IN_MAC, HOST_MAC, &ip), IN, PuntReason::TtlExpired, 0));
    check_icmp4_error(&err, IN, HOST_MAC, IN_MAC, IN_V4, HOST_V4, (11, 0, 0), &ip);
    let ip = echo6(HOST_V6, NEIGH_V6, 1, 1, 1, b"trace");
    let err = one(rig.punt(&frame6(IN_MAC, HOST_MAC, &ip), IN, PuntReason::TtlExpired, 0));
    check_icmp6_error(&err, IN, HOST_MAC, IN_MAC, IN_V6, HOST_V6, (3, 0, 0), &ip);
    assert_eq!(rig.drops(DropReason::IcmpErrorSuppressed), 2);
}

/// Link-layer broadcast/multicast frames that the workers still punt: a
/// unicast destination with no route, and UDP to one of our addresses.
fn l2_multicast_punts_v4(mac: [u8; 6]) -> [(Vec<u8>, PuntReason); 2] {
    [
        (frame4(mac, HOST_MAC, &udp4(HOST_V4, Ipv4Addr::new(100, 64, 0, 1), 64, 8)), PuntReason::NoRoute),
        (frame4(mac, HOST_MAC, &udp4(HOST_V4, IN_V4, 64, 8)), PuntReason::PortUnreachable),
    ]
}

fn l2_multicast_punts_v6(mac: [u8; 6]) -> [(Vec<u8>, PuntReason); 2] {
    [
        (frame6(mac, HOST_MAC, &udp6(HOST_V6, "2001:db8:99::1".parse().unwrap(), 64, 8)), PuntReason::NoRoute),
        (frame6(mac, HOST_MAC, &udp6(HOST_V6, IN_V6, 64, 8)), PuntReason::PortUnreachable),
    ]
}

#[test]
fn no_icmpv4_error_about_link_layer_broadcast() {
    let mut rig = Rig::new(cfg());
    for mac in [BROADCAST, [0x01, 0, 0x5e, 0, 0, 1]] {
        for (f, reason) in l2_multicast_punts_v4(mac) {
            assert!(rig.punt(&f, IN, reason, 0).is_empty(), "{reason:?} {mac:02x?}");
        }
        // Whatever Pipeline does with it, a TTL-expired one is not answered either.
        let f = frame4(mac, HOST_MAC, &udp4(HOST_V4, REMOTE_V4, 1, 8));
        assert!(rig.handle(&f, IN, PuntReason::TtlExpired, 0).is_empty());
    }
    assert_eq!(rig.drops(DropReason::IcmpErrorSuppressed), 6);
    assert_eq!(rig.c.icmp_errors.get(IcmpErrorKind::V4NetUnreachable), 0);
}

// Regression (was a bug): ICMPv6 errors were sent about packets received as link-layer broadcast or
// multicast. RFC 4443 §2.4 (e.4)/(e.5): an ICMPv6 error message MUST NOT be
// originated as a result of receiving a packet sent as a link-layer multicast
// or broadcast (except Packet Too Big / Parameter Problem code 2). The IPv4
// branch of `SlowPath::icmp_error` checks `eth.dst_addr().is_multicast()`; the
// IPv6 branch does not (and `icmpv6::is_error_allowed` leaves that check to the
// caller). Here packets to a unicast address arrive in broadcast / all-nodes
// frames, Pipeline punts them (NoRoute, PortUnreachable; TtlExpired too, as long as
// Pipeline does not drop link-layer multicast before forwarding) and an error is sent.
#[test]
fn no_icmpv6_error_about_link_layer_multicast() {
    let mut rig = Rig::new(cfg());
    for mac in [BROADCAST, [0x33, 0x33, 0, 0, 0, 1]] {
        for (f, reason) in l2_multicast_punts_v6(mac) {
            let sent = rig.punt(&f, IN, reason, 0);
            assert!(sent.is_empty(), "ICMPv6 error about a link-layer {mac:02x?} frame ({reason:?})");
        }
        let f = frame6(mac, HOST_MAC, &udp6(HOST_V6, NEIGH_V6, 1, 8));
        let sent = rig.handle(&f, IN, PuntReason::TtlExpired, 0);
        assert!(sent.is_empty(), "ICMPv6 error about a link-layer {mac:02x?} frame (TtlExpired)");
    }
    assert_eq!(rig.drops(DropReason::IcmpErrorSuppressed), 6);
}

#[test]
fn icmp_errors_are_rate_limited() {
    let mut rig = Rig::new(SlowPathConfig { icmp_errors_per_s: 10, icmp_errors_burst: 5, ..SlowPathConfig::default() });
    let f = frame4(IN_MAC, HOST_MAC, &udp4(HOST_V4, REMOTE_V4, 1, 8));
    let burst = |rig: &mut Rig, n: usize, now: u64| -> usize {
        (0..n).map(|_| rig.punt(&f, IN, PuntReason::TtlExpired, now).len()).sum()
    };
    // 20 at the same instant: the burst of 5 goes, 15 are limited.
    assert_eq!(burst(&mut rig, 20, 5000), 5);
    assert_eq!(rig.drops(DropReason::IcmpRateLimited), 15);
    assert_eq!(rig.c.icmp_errors.get(IcmpErrorKind::V4TimeExceeded), 5);
    // Over the next 1000 ms, 10 more (10 per second: one every 100 ms). The
    // bucket holds at most `burst` (5) tokens, so the 10 cannot all go at
    // one instant.
    let mut sent = 0;
    for step in 1..=10u64 {
        sent += burst(&mut rig, 3, 5000 + 100 * step);
    }
    assert_eq!(sent, 10);
    assert_eq!(rig.drops(DropReason::IcmpRateLimited), 15 + 20);
    // After a long pause the bucket is full again, but only up to the burst.
    assert_eq!(burst(&mut rig, 20, 60_000), 5);
    assert_eq!(rig.drops(DropReason::IcmpRateLimited), 15 + 20 + 15);
    // IPv6 errors draw from the same bucket.
    let f6 = frame6(IN_MAC, HOST_MAC, &udp6(HOST_V6, NEIGH_V6, 1, 8));
    assert!(rig.punt(&f6, IN, PuntReason::TtlExpired, 60_000).is_empty());
    assert_eq!(one(rig.punt(&f6, IN, PuntReason::TtlExpired, 60_100)).port(), IN);
}

#[test]
fn icmp_errors_disabled_by_zero_rate() {
    let mut rig = Rig::new(SlowPathConfig { icmp_errors_per_s: 0, ..SlowPathConfig::default() });
    let f = frame4(IN_MAC, HOST_MAC, &udp4(HOST_V4, REMOTE_V4, 1, 8));
    assert!(rig.punt(&f, IN, PuntReason::TtlExpired, 0).is_empty());
    assert_eq!(rig.drops(DropReason::IcmpRateLimited), 1);
}

// ---- Resources ---------------------------------------------------------------------

#[test]
fn pool_exhaustion_is_counted() {
    let mut rig = Rig::new(retry_cfg());
    rig.pool = VecPool { remaining: 0 };
    let f = frame4(IN_MAC, HOST_MAC, &udp4(HOST_V4, REMOTE_V4, 1, 8));
    assert!(rig.punt(&f, IN, PuntReason::TtlExpired, 0).is_empty());
    assert_eq!(rig.drops(DropReason::NoMbuf), 1);
    let f = frame6(IN_MAC, HOST_MAC, &udp6(HOST_V6, NEIGH_V6, 1, 8));
    assert!(rig.punt(&f, IN, PuntReason::TtlExpired, 0).is_empty());
    assert_eq!(rig.drops(DropReason::NoMbuf), 2);
    // NS: no NA, but the solicitor is learned.
    let group = ipv6::solicited_node_multicast(IN_V6);
    let f = frame6(solicited_mac(IN_V6), HOST_MAC, &ns(HOST_V6, group, 255, IN_V6, Some(HOST_MAC)));
    assert!(rig.punt(&f, IN, PuntReason::Nd, 0).is_empty());
    assert_eq!(rig.drops(DropReason::NoMbuf), 3);
    assert_eq!(rig.table.lookup(IN, v6(HOST_V6)), Some(HOST_MAC));
    // Neighbour miss: no request, but the packet is held and retried later.
    let orig = frame4(IN_MAC, HOST_MAC, &udp4(HOST_V4, NEIGH_V4, 64, 8));
    assert!(rig.punt(&orig, IN, PuntReason::NeighborMiss, 0).is_empty());
    assert_eq!(rig.drops(DropReason::NoMbuf), 4);
    assert_eq!(rig.sp.pending(), 1);
    assert!(rig.tick(1000).is_empty());
    assert_eq!(rig.drops(DropReason::NoMbuf), 5);
    // An ARP reply is built in place: no buffer needed.
    one(rig.punt(&arp_request(HOST_MAC, HOST_V4, IN_V4), IN, PuntReason::Arp, 1500));
    // Buffers again: the next retry goes out.
    rig.pool = VecPool { remaining: 1 };
    check_arp_request(&one(rig.tick(2000)), OUT, OUT_MAC, OUT_V4, NEIGH_V4);
}

// ---- Refresh ------------------------------------------------------------------------

fn refresh_cfg() -> SlowPathConfig {
    SlowPathConfig { reachable_ms: 30_000, resolve_retries: 3, resolve_interval_ms: 1000, ..cfg() }
}

#[test]
fn old_reachable_entry_is_refreshed_and_stays_usable() {
    let mut rig = Rig::new(refresh_cfg());
    // NEIGH asks for us at t=0: learned.
    one(rig.punt(&arp_request(NEIGH_MAC, NEIGH_V4, OUT_V4), OUT, PuntReason::Arp, 0));
    assert_eq!(rig.state4(OUT, NEIGH_V4), Some(NeighborState::Reachable));
    assert!(rig.tick(10_000).is_empty());
    assert!(rig.tick(29_000).is_empty());
    assert_eq!(rig.state4(OUT, NEIGH_V4), Some(NeighborState::Reachable));

    let req = one(rig.tick(30_000));
    check_arp_request(&req, OUT, OUT_MAC, OUT_V4, NEIGH_V4);
    assert_eq!(rig.state4(OUT, NEIGH_V4), Some(NeighborState::Stale));
    // Still usable while being refreshed.
    assert_eq!(rig.table.lookup(OUT, v4(NEIGH_V4)), Some(NEIGH_MAC));
    let orig = frame4(IN_MAC, HOST_MAC, &udp4(HOST_V4, NEIGH_V4, 64, 8));
    let mut f = orig.clone();
    assert_eq!(l3_process(&rig.l3, &mut f, IN), Verdict::Forward(OUT));
    check_forwarded_v4(&f, &orig, NEIGH_MAC, OUT_MAC);

    // The answer makes it reachable again; no more requests.
    assert!(rig.punt(&arp_reply(NEIGH_MAC, NEIGH_V4, OUT_MAC, OUT_V4), OUT, PuntReason::Arp, 30_500).is_empty());
    let e = rig.table.get(OUT, v4(NEIGH_V4)).unwrap();
    assert_eq!((e.state, e.updated_ms), (NeighborState::Reachable, 30_500));
    for t in [31_000, 32_000, 33_000, 40_000, 60_000] {
        assert!(rig.tick(t).is_empty(), "t={t}");
    }
    // And is refreshed again reachable_ms after that confirmation.
    check_arp_request(&one(rig.tick(61_000)), OUT, OUT_MAC, OUT_V4, NEIGH_V4);
}

#[test]
fn refresh_without_answer_ends_failed() {
    let mut rig = Rig::new(refresh_cfg());
    let group = ipv6::solicited_node_multicast(OUT_V6);
    let f = frame6(solicited_mac(OUT_V6), NEIGH_MAC, &ns(NEIGH_V6, group, 255, OUT_V6, Some(NEIGH_MAC)));
    one(rig.punt(&f, OUT, PuntReason::Nd, 0));
    check_ns(&one(rig.tick(30_000)), OUT, OUT_MAC, OUT_V6, NEIGH_V6);
    assert_eq!(rig.state6(OUT, NEIGH_V6), Some(NeighborState::Stale));
    assert_eq!(rig.table.lookup(OUT, v6(NEIGH_V6)), Some(NEIGH_MAC));
    check_ns(&one(rig.tick(31_000)), OUT, OUT_MAC, OUT_V6, NEIGH_V6);
    check_ns(&one(rig.tick(32_000)), OUT, OUT_MAC, OUT_V6, NEIGH_V6);
    assert!(rig.tick(33_000).is_empty(), "no held packets: no ICMP error");
    assert_eq!(rig.state6(OUT, NEIGH_V6), Some(NeighborState::Failed));
    assert_eq!(rig.table.lookup(OUT, v6(NEIGH_V6)), None);
    assert_eq!(rig.c.resolutions_failed.get(), 1);
}

// ---- Robustness ----------------------------------------------------------------------

const REASONS: [PuntReason; 7] = [
    PuntReason::Arp,
    PuntReason::Nd,
    PuntReason::NeighborMiss,
    PuntReason::TtlExpired,
    PuntReason::NoRoute,
    PuntReason::TooBig,
    PuntReason::PortUnreachable,
];

fn seeds() -> Vec<(Vec<u8>, u16)> {
    let group = ipv6::solicited_node_multicast(IN_V6);
    let mut ip = udp4(HOST_V4, NEIGH_V4, 64, 100);
    set_df(&mut ip);
    vec![
        (frame4(IN_MAC, HOST_MAC, &ip), IN),
        (frame4(IN_MAC, HOST_MAC, &udp4(HOST_V4, REMOTE_V4, 1, 8)), IN),
        (frame4(IN_MAC, HOST_MAC, &icmp4(HOST_V4, REMOTE_V4, 1, 3, 1, 0, &ip[..28])), IN),
        (frame6(IN_MAC, HOST_MAC, &udp6(HOST_V6, NEIGH_V6, 64, 100)), IN),
        (frame6(solicited_mac(IN_V6), HOST_MAC, &ns(HOST_V6, group, 255, IN_V6, Some(HOST_MAC))), IN),
        (frame6(OUT_MAC, NEIGH_MAC, &na(NEIGH_V6, OUT_V6, 255, NEIGH_V6, icmpv6::NaFlags::SOLICITED, NEIGH_MAC)), OUT),
        (arp_request(HOST_MAC, HOST_V4, IN_V4), IN),
        (arp_reply(NEIGH_MAC, NEIGH_V4, OUT_MAC, OUT_V4), OUT),
    ]
}

/// Feeds frames with arbitrary reasons, then ticks through resolution
/// timeouts; checks nothing panics and everything sent is a sane frame on an
/// existing port.
fn feed(frames: Vec<(Vec<u8>, u16, usize)>, pool: usize) -> Result<(), TestCaseError> {
    let mut rig = Rig::with_mtu(SlowPathConfig { pending_per_neighbor_max: 2, ..retry_cfg() }, 1280);
    rig.pool = VecPool { remaining: pool };
    let mut sent = Vec::new();
    for (i, (f, port, r)) in frames.into_iter().enumerate() {
        sent.extend(rig.handle(&f, port, REASONS[r % REASONS.len()], i as u64 * 100));
    }
    for t in (1000..=5000).step_by(500) {
        sent.extend(rig.tick(t));
    }
    prop_assert!(rig.sp.pending() <= 256);
    for p in &sent {
        prop_assert!(p.port() < 2, "sent on port {}", p.port());
        prop_assert!(p.data().len() >= 14);
    }
    Ok(())
}

proptest! {
    #[test]
    fn slow_path_never_panics_on_arbitrary_frames(
        frames in proptest::collection::vec(
            (proptest::collection::vec(any::<u8>(), 0..200), 0u16..3, 0usize..7,
             prop::sample::select(vec![None, Some(0x0800u16), Some(0x86dd), Some(0x0806)])),
            1..8),
        pool in 0usize..4,
    ) {
        let frames = frames
            .into_iter()
            .map(|(mut f, port, r, ty)| {
                if let (Some(t), true) = (ty, f.len() >= 14) {
                    f[12..14].copy_from_slice(&t.to_be_bytes());
                }
                (f, port, r)
            })
            .collect();
        feed(frames, pool)?;
    }

    #[test]
    fn slow_path_never_panics_on_mutated_frames(
        picks in proptest::collection::vec(
            (any::<prop::sample::Index>(), 0usize..7,
             proptest::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 0..4),
             proptest::option::of(any::<prop::sample::Index>())),
            1..8),
        pool in 0usize..20,
    ) {
        let seeds = seeds();
        let frames = picks
            .into_iter()
            .map(|(s, r, flips, cut)| {
                let (mut f, port) = seeds[s.index(seeds.len())].clone();
                for (i, x) in flips {
                    let i = i.index(f.len());
                    f[i] ^= x;
                }
                if let Some(c) = cut {
                    f.truncate(c.index(f.len() + 1));
                }
                (f, port, r)
            })
            .collect();
        feed(frames, pool)?;
    }
}

// ---- NAT pool ownership and announcements (slowpath/announce.rs) ------------

mod pool_ownership {
    use super::*;
    use crate::nat::fast::{NatPlan, Role};
    use crate::slowpath::{PoolServer, ANNOUNCE_INTERVAL_MS, ANNOUNCE_NUM};
    use crate::srv6::Srv6Config;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// Two pool addresses on the outside subnet (on-link) and one routed elsewhere.
    const POOL_A: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 64);
    const POOL_B: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 65);
    const POOL_ROUTED: Ipv4Addr = Ipv4Addr::new(100, 64, 100, 1);

    /// Serves POOL_A while the flag is set, never anything else.
    struct Owner(Arc<AtomicBool>);

    impl PoolServer for Owner {
        fn serves(&self, a: Ipv4Addr) -> bool {
            a == POOL_A && self.0.load(Ordering::SeqCst)
        }
    }

    fn rig(owner: Option<Arc<AtomicBool>>) -> Rig {
        let (table, writer) = NeighborTable::new(64);
        let plan = NatPlan { roles: vec![Role::Inside, Role::Outside], pool: vec![POOL_A, POOL_B, POOL_ROUTED] };
        let l3 =
            Arc::new(Pipeline::with_nat(ports(1500), &routes(), &Srv6Config::default(), Some(plan), table).unwrap());
        let table = l3.neighbors().clone();
        let c = Arc::new(ControlCounters::default());
        let mut sp = SlowPath::new(l3.clone(), writer, cfg(), c.clone());
        if let Some(flag) = owner {
            sp.set_pool_server(Box::new(Owner(flag)));
        }
        Rig { sp, l3, table, c, pool: VecPool { remaining: 1_000_000 } }
    }

    fn ask(rig: &mut Rig, target: Ipv4Addr, now: u64) -> Vec<VecBuf> {
        rig.punt(&arp_request(NEIGH_MAC, NEIGH_V4, target), OUT, PuntReason::Arp, now)
    }

    fn check_announcement(out: &VecBuf, addr: Ipv4Addr) {
        check_arp_request(out, OUT, OUT_MAC, addr, addr);
    }

    #[test]
    fn a_single_host_answers_for_every_on_link_pool_address_and_announces_none() {
        let mut r = rig(None);
        for a in [POOL_A, POOL_B] {
            let reply = one(ask(&mut r, a, 0));
            assert_eq!(arp_of(reply.data()).sender_protocol_addr(), a);
            assert_eq!(arp_of(reply.data()).sender_hardware_addr(), MacAddr(OUT_MAC));
        }
        assert!(r.tick(0).is_empty() && r.tick(5000).is_empty());
        assert_eq!(r.c.arp_announcements_sent.get(), 0);
    }

    #[test]
    fn only_the_serving_host_answers_and_it_announces_what_it_takes_over() {
        let flag = Arc::new(AtomicBool::new(false));
        let mut r = rig(Some(flag.clone()));
        // Not serving: no answer (counted as not for us), no announcement.
        assert!(ask(&mut r, POOL_A, 0).is_empty());
        assert_eq!(r.drops(DropReason::ArpNotForUs), 1);
        assert!(r.tick(10).is_empty());
        // It takes the shard over: ANNOUNCE_NUM announcements of POOL_A alone,
        // ANNOUNCE_INTERVAL_MS apart, then nothing.
        flag.store(true, Ordering::SeqCst);
        let mut t = 1000;
        let mut sent = Vec::new();
        for _ in 0..ANNOUNCE_NUM {
            let out = r.tick(t);
            assert_eq!(out.len(), 1, "one announcement at {t} ms");
            check_announcement(&out[0], POOL_A);
            sent.extend(out);
            assert!(r.tick(t + ANNOUNCE_INTERVAL_MS / 2).is_empty(), "nothing between announcements");
            t += ANNOUNCE_INTERVAL_MS;
        }
        assert!(r.tick(t).is_empty() && r.tick(t + 10 * ANNOUNCE_INTERVAL_MS).is_empty());
        assert_eq!(r.c.arp_announcements_sent.get(), u64::from(ANNOUNCE_NUM));
        // Now it answers for POOL_A, still not for POOL_B (another host's).
        t += 20 * ANNOUNCE_INTERVAL_MS;
        let reply = one(ask(&mut r, POOL_A, t));
        assert_eq!(arp_of(reply.data()).sender_protocol_addr(), POOL_A);
        assert!(ask(&mut r, POOL_B, t).is_empty());
        // Handed over and taken back: announced again.
        flag.store(false, Ordering::SeqCst);
        t += 100;
        assert!(r.tick(t).is_empty());
        assert!(ask(&mut r, POOL_A, t).is_empty());
        flag.store(true, Ordering::SeqCst);
        t += 100;
        check_announcement(&one(r.tick(t)), POOL_A);
        // Lost again before the next announcement was due: the rest are cancelled.
        flag.store(false, Ordering::SeqCst);
        t += 20;
        assert!(r.tick(t).is_empty() && r.tick(t + 3 * ANNOUNCE_INTERVAL_MS).is_empty());
        assert_eq!(r.c.arp_announcements_sent.get(), u64::from(ANNOUNCE_NUM) + 1);
    }

    #[test]
    fn an_announcement_without_a_buffer_is_counted_and_sent_later() {
        let flag = Arc::new(AtomicBool::new(true));
        let mut r = rig(Some(flag));
        r.pool = VecPool { remaining: 0 };
        assert!(r.tick(0).is_empty());
        assert_eq!(r.drops(DropReason::NoMbuf), 1);
        r.pool = VecPool { remaining: 10 };
        check_announcement(&one(r.tick(20)), POOL_A);
    }
}
