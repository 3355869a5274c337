//! A hostile corpus: malformed or abusive frames an attacker on the inside
//! segment (h1's link) can send, each with the exact outcome the appliance
//! owes it (docs/hostile-input.md): a named drop, an ICMP answer, an answer
//! of its own (echo, ARP, ND, storage), a legitimate forward to h2, or a
//! neighbour entry learned from it.
//!
//! The frames are built here byte by byte with a checksum of this module's
//! own (no code shared with the appliance's `netwire`), from the RFCs'
//! checklists: Ethernet, ARP (RFC 826, 5227), IPv4 with options and
//! fragments (RFC 791, 1812, 1858, 3927), ICMP, IPv6 with extension headers
//! (RFC 8200, 2675, 5095, 7112, 8883), ND (RFC 4861), the SRH (RFC 8754,
//! 8986), UDP/TCP checksums (RFC 1122), the storage protocol
//! (docs/storage-service.md).
//!
//! The set-up they assume is the three-namespace testbed (`scripts/testbed.sh`)
//! with [`config_yaml`] (the demo config plus SRv6 SIDs): h1 sends every
//! frame from a packet socket on its eth0. `tests/tests/hostile.rs` runs them
//! against the real binary; [`write_seeds`] writes them as seeds of the
//! pipeline fuzz target (first byte 0: received on port 0, the inside port,
//! whose addresses the fuzz target shares).

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;

pub const IN_MAC: [u8; 6] = [2, 0, 0, 0, 1, 1];
pub const H1_MAC: [u8; 6] = [2, 0, 0, 0, 1, 2];
pub const OUT_MAC: [u8; 6] = [2, 0, 0, 0, 2, 1];
pub const BCAST: [u8; 6] = [0xff; 6];
pub const IN4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
pub const H1_4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
pub const H2_4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
pub const OUT4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
pub const IN6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1);
pub const H1_6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 2);
pub const H2_6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 2);
/// SIDs of [`config_yaml`] (the fuzz target's too).
pub const SID_END: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xa, 0, 0, 0, 0, 1);
pub const SID_X: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xa, 0, 0, 0, 0, 3);
pub const SID_DT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xa, 0, 0, 0, 0, 4);
pub const SID_DX6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xa, 0, 0, 0, 0, 5);
pub const SID_STORAGE: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xa, 0, 0, 0, 0, 7);
pub const STORAGE_PORT: u16 = 7878;

/// The link-local address the kernel derives from `mac` (EUI-64).
pub fn link_local(mac: [u8; 6]) -> Ipv6Addr {
    Ipv6Addr::from([0xfe, 0x80, 0, 0, 0, 0, 0, 0, mac[0] ^ 2, mac[1], mac[2], 0xff, 0xfe, mac[3], mac[4], mac[5]])
}

/// The demo config's additions for the corpus: SRv6 SIDs of every
/// behavior, among them a storage SID that accepts everything.
pub const SRV6_YAML: &str = r#"
srv6:
  local_sids:
    - { sid: "2001:db8:a::1", behavior: end }
    - { sid: "2001:db8:a::3", behavior: end.x, next_hop: "2001:db8:2::2", port: outside }
    - { sid: "2001:db8:a::4", behavior: end.dt6 }
    - { sid: "2001:db8:a::5", behavior: end.dx6, next_hop: "2001:db8:2::2", port: outside }
    - { sid: "2001:db8:a::7", behavior: storage, policy: always }
"#;

/// The demo config with [`SRV6_YAML`] instead of its (empty) `srv6:`.
pub fn config_yaml(demo: &str) -> String {
    let mut v: serde_yaml_ng::Value = serde_yaml_ng::from_str(demo).expect("demo config parses");
    let extra: serde_yaml_ng::Value = serde_yaml_ng::from_str(SRV6_YAML).expect("srv6 yaml");
    v["srv6"] = extra["srv6"].clone();
    serde_yaml_ng::to_string(&v).expect("yaml")
}

/// What the appliance must do with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Dropped: `appliance_drops_total{reason}` moves by one; nothing leaves.
    Drop(&'static str),
    /// An ICMPv4 error (type, code) back to h1, counted as the drop.
    Icmp4(u8, u8, &'static str),
    /// An ICMPv6 error (type, code) back to h1, counted as the drop.
    Icmp6(u8, u8, &'static str),
    /// An ICMP echo reply back to h1.
    Echo4,
    /// An ICMPv6 echo reply back to h1.
    Echo6,
    /// An ARP reply back to h1.
    ArpReply,
    /// A neighbour advertisement back to h1.
    NdAdvert,
    /// A storage reply (UDP from the service port) back to h1.
    StorageReply,
    /// Forwarded: arrives at h2.
    Forward,
    /// Learned from (a known neighbour confirmed): `neighbors_learned` moves,
    /// no drop, nothing sent.
    Learned,
}

/// One frame of the corpus.
#[derive(Debug, Clone)]
pub struct Case {
    pub name: String,
    /// The whole Ethernet frame h1 sends.
    pub frame: Vec<u8>,
    /// Bytes that the frame carries and that anything it causes (a forward,
    /// a quoting ICMP error) carries too: how the test tells its traffic apart.
    pub tag: Option<Vec<u8>>,
    pub expect: Expect,
}

// ---- Checksums and headers (this module's own) -----------------------------------

fn sum16(data: &[u8], mut acc: u32) -> u32 {
    for c in data.chunks(2) {
        acc += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    acc
}

fn fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

/// The Internet checksum of `data`.
pub fn inet_checksum(data: &[u8]) -> u16 {
    fold(sum16(data, 0))
}

fn pseudo4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, len: usize) -> u32 {
    let mut p = Vec::with_capacity(12);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(&[0, proto]);
    p.extend_from_slice(&(len as u16).to_be_bytes());
    sum16(&p, 0)
}

fn pseudo6(src: Ipv6Addr, dst: Ipv6Addr, proto: u8, len: usize) -> u32 {
    let mut p = Vec::with_capacity(40);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(&(len as u32).to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, proto]);
    sum16(&p, 0)
}

/// An Ethernet frame.
pub fn eth(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + payload.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// IPv4 header fields a case may bend.
#[derive(Debug, Clone)]
pub struct V4 {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub proto: u8,
    pub ttl: u8,
    pub ident: u16,
    /// Flags and fragment offset word (DF 0x4000, MF 0x2000, offset / 8).
    pub frag: u16,
    pub options: Vec<u8>,
}

impl V4 {
    pub fn new(src: Ipv4Addr, dst: Ipv4Addr, proto: u8) -> V4 {
        V4 { src, dst, proto, ttl: 64, ident: 0x1414, frag: 0, options: Vec::new() }
    }

    /// The packet with `payload`: header checksum right, options padded.
    pub fn packet(&self, payload: &[u8]) -> Vec<u8> {
        let mut opts = self.options.clone();
        while !opts.len().is_multiple_of(4) {
            opts.push(0);
        }
        let hl = 20 + opts.len();
        let mut p = vec![0u8; hl];
        p[0] = 0x40 | (hl / 4) as u8;
        p[2..4].copy_from_slice(&((hl + payload.len()) as u16).to_be_bytes());
        p[4..6].copy_from_slice(&self.ident.to_be_bytes());
        p[6..8].copy_from_slice(&self.frag.to_be_bytes());
        p[8] = self.ttl;
        p[9] = self.proto;
        p[12..16].copy_from_slice(&self.src.octets());
        p[16..20].copy_from_slice(&self.dst.octets());
        p[20..].copy_from_slice(&opts);
        let c = inet_checksum(&p);
        p[10..12].copy_from_slice(&c.to_be_bytes());
        p.extend_from_slice(payload);
        p
    }
}

/// A UDP datagram with its checksum over the IPv4 pseudo-header.
pub fn udp4(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, data: &[u8]) -> Vec<u8> {
    let mut u = udp_raw(sport, dport, data);
    let c = fold(sum16(&u, pseudo4(src, dst, 17, u.len())));
    u[6..8].copy_from_slice(&(if c == 0 { 0xffff } else { c }).to_be_bytes());
    u
}

/// A UDP datagram with its checksum over the IPv6 pseudo-header.
pub fn udp6(src: Ipv6Addr, dst: Ipv6Addr, sport: u16, dport: u16, data: &[u8]) -> Vec<u8> {
    let mut u = udp_raw(sport, dport, data);
    let c = fold(sum16(&u, pseudo6(src, dst, 17, u.len())));
    u[6..8].copy_from_slice(&(if c == 0 { 0xffff } else { c }).to_be_bytes());
    u
}

fn udp_raw(sport: u16, dport: u16, data: &[u8]) -> Vec<u8> {
    let mut u = vec![0u8; 8];
    u[0..2].copy_from_slice(&sport.to_be_bytes());
    u[2..4].copy_from_slice(&dport.to_be_bytes());
    u[4..6].copy_from_slice(&((8 + data.len()) as u16).to_be_bytes());
    u.extend_from_slice(data);
    u
}

fn tcp_raw(sport: u16, dport: u16, flags: u8, data: &[u8]) -> Vec<u8> {
    let mut t = vec![0u8; 20];
    t[0..2].copy_from_slice(&sport.to_be_bytes());
    t[2..4].copy_from_slice(&dport.to_be_bytes());
    t[4..8].copy_from_slice(&0x1000_0001u32.to_be_bytes());
    t[12] = 5 << 4;
    t[13] = flags;
    t[14..16].copy_from_slice(&64240u16.to_be_bytes());
    t.extend_from_slice(data);
    t
}

/// A TCP segment with its checksum over the IPv4 pseudo-header.
pub fn tcp4(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, flags: u8, data: &[u8]) -> Vec<u8> {
    let mut t = tcp_raw(sport, dport, flags, data);
    let c = fold(sum16(&t, pseudo4(src, dst, 6, t.len())));
    t[16..18].copy_from_slice(&c.to_be_bytes());
    t
}

/// A TCP segment with its checksum over the IPv6 pseudo-header.
pub fn tcp6(src: Ipv6Addr, dst: Ipv6Addr, sport: u16, dport: u16, flags: u8, data: &[u8]) -> Vec<u8> {
    let mut t = tcp_raw(sport, dport, flags, data);
    let c = fold(sum16(&t, pseudo6(src, dst, 6, t.len())));
    t[16..18].copy_from_slice(&c.to_be_bytes());
    t
}

/// An ICMP message (type, code, rest of header, data), checksum right.
pub fn icmp4(ty: u8, code: u8, rest: u32, data: &[u8]) -> Vec<u8> {
    let mut m = vec![ty, code, 0, 0];
    m.extend_from_slice(&rest.to_be_bytes());
    m.extend_from_slice(data);
    let c = inet_checksum(&m);
    m[2..4].copy_from_slice(&c.to_be_bytes());
    m
}

/// An ICMPv6 message, checksum right for `src` → `dst`.
pub fn icmp6(src: Ipv6Addr, dst: Ipv6Addr, ty: u8, code: u8, rest: u32, data: &[u8]) -> Vec<u8> {
    let mut m = vec![ty, code, 0, 0];
    m.extend_from_slice(&rest.to_be_bytes());
    m.extend_from_slice(data);
    let c = fold(sum16(&m, pseudo6(src, dst, 58, m.len())));
    m[2..4].copy_from_slice(&c.to_be_bytes());
    m
}

/// An IPv6 packet: fixed header (payload length = `payload.len()`), then `payload`.
pub fn ip6(src: Ipv6Addr, dst: Ipv6Addr, next: u8, hop: u8, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0u8; 40];
    p[0] = 0x60;
    p[4..6].copy_from_slice(&(payload.len() as u16).to_be_bytes());
    p[6] = next;
    p[7] = hop;
    p[8..24].copy_from_slice(&src.octets());
    p[24..40].copy_from_slice(&dst.octets());
    p.extend_from_slice(payload);
    p
}

/// A Hop-by-Hop or Destination Options header naming `next`, padded with
/// PadN to a multiple of 8 octets.
pub fn opts_hdr(next: u8, options: &[u8]) -> Vec<u8> {
    let mut h = vec![next, 0];
    h.extend_from_slice(options);
    let pad = (8 - h.len() % 8) % 8;
    match pad {
        0 => {}
        1 => h.push(0),
        n => {
            h.push(1);
            h.push((n - 2) as u8);
            h.extend(std::iter::repeat_n(0, n - 2));
        }
    }
    h[1] = (h.len() / 8 - 1) as u8;
    h
}

/// A Segment Routing Header (RFC 8754): `segs` in SRH order (Segment
/// List[0] first), Segments Left `sl`, Last Entry `segs.len() - 1`.
pub fn srh(next: u8, sl: u8, segs: &[Ipv6Addr]) -> Vec<u8> {
    let mut h = vec![next, (2 * segs.len()) as u8, 4, sl, (segs.len() - 1) as u8, 0, 0, 0];
    for s in segs {
        h.extend_from_slice(&s.octets());
    }
    h
}

/// A Routing header of any type with one address.
pub fn rh(next: u8, routing_type: u8, sl: u8, addr: Ipv6Addr) -> Vec<u8> {
    let mut h = vec![next, 2, routing_type, sl, 0, 0, 0, 0];
    h.extend_from_slice(&addr.octets());
    h
}

/// A Fragment header.
pub fn frag6(next: u8, offset_units: u16, more: bool, ident: u32) -> Vec<u8> {
    let word = (offset_units << 3) | u16::from(more);
    let mut h = vec![next, 0];
    h.extend_from_slice(&word.to_be_bytes());
    h.extend_from_slice(&ident.to_be_bytes());
    h
}

/// An ARP packet (Ethernet/IPv4 unless the caller bends it).
pub fn arp(op: u16, sha: [u8; 6], spa: Ipv4Addr, tha: [u8; 6], tpa: Ipv4Addr) -> Vec<u8> {
    let mut a = vec![0, 1, 8, 0, 6, 4];
    a.extend_from_slice(&op.to_be_bytes());
    a.extend_from_slice(&sha);
    a.extend_from_slice(&spa.octets());
    a.extend_from_slice(&tha);
    a.extend_from_slice(&tpa.octets());
    a
}

/// The MAC of an IPv6 multicast group.
pub fn mcast_mac(group: Ipv6Addr) -> [u8; 6] {
    let o = group.octets();
    [0x33, 0x33, o[12], o[13], o[14], o[15]]
}

/// The solicited-node multicast group of `a`.
pub fn solicited(a: Ipv6Addr) -> Ipv6Addr {
    let o = a.octets();
    Ipv6Addr::new(0xff02, 0, 0, 0, 0, 1, 0xff00 | u16::from(o[13]), u16::from_be_bytes([o[14], o[15]]))
}

/// An NS body (after the 4-octet reserved field) for `target`, with a
/// source link-layer option when `slla` is given.
fn ns_body(target: Ipv6Addr, slla: Option<[u8; 6]>) -> Vec<u8> {
    let mut b = target.octets().to_vec();
    if let Some(m) = slla {
        b.extend_from_slice(&[1, 1]);
        b.extend_from_slice(&m);
    }
    b
}

/// An NA body for `target` with a target link-layer option.
fn na_body(target: Ipv6Addr, tlla: [u8; 6]) -> Vec<u8> {
    let mut b = target.octets().to_vec();
    b.extend_from_slice(&[2, 1]);
    b.extend_from_slice(&tlla);
    b
}

/// The storage request header (docs/storage-service.md): a probe of object 42.
pub fn storage_probe(magic: u16, version: u8) -> Vec<u8> {
    let mut h = vec![0u8; 40];
    h[0..2].copy_from_slice(&magic.to_be_bytes());
    h[2] = version;
    h[3] = 0x10; // probe
    h[8..16].copy_from_slice(&7u64.to_be_bytes());
    h[16..24].copy_from_slice(&42u64.to_be_bytes());
    h
}

// ---- The corpus ---------------------------------------------------------------------

struct Builder {
    cases: Vec<Case>,
}

impl Builder {
    fn add(&mut self, name: &str, frame: Vec<u8>, expect: Expect) {
        let tag = self.tag_of(name);
        let has = frame.windows(tag.len()).any(|w| w == tag.as_slice());
        self.cases.push(Case { name: name.to_string(), frame, tag: has.then_some(tag), expect });
    }

    /// A case recognised by its answer's kind alone.
    fn add_untagged(&mut self, name: &str, frame: Vec<u8>, expect: Expect) {
        self.cases.push(Case { name: name.to_string(), frame, tag: None, expect });
    }

    /// The bytes a case's payload carries to be recognised (its name, short).
    fn tag_of(&self, name: &str) -> Vec<u8> {
        format!("#{name:.20}#").into_bytes()
    }

    fn data(&self, name: &str) -> Vec<u8> {
        let mut d = self.tag_of(name);
        d.extend_from_slice(b"-hostile-corpus-");
        d
    }
}

fn v4_frame(v: &V4, payload: &[u8]) -> Vec<u8> {
    eth(IN_MAC, H1_MAC, 0x0800, &v.packet(payload))
}

fn v6_frame(ip: &[u8]) -> Vec<u8> {
    eth(IN_MAC, H1_MAC, 0x86dd, ip)
}

/// Every case, in the order the test sends them.
pub fn corpus() -> Vec<Case> {
    let mut b = Builder { cases: Vec::new() };
    ethernet_cases(&mut b);
    arp_cases(&mut b);
    ipv4_cases(&mut b);
    ipv4_option_cases(&mut b);
    ipv4_fragment_cases(&mut b);
    ipv6_cases(&mut b);
    ipv6_ext_cases(&mut b);
    nd_cases(&mut b);
    srv6_cases(&mut b);
    storage_cases(&mut b);
    b.cases
}

fn ethernet_cases(b: &mut Builder) {
    use Expect::*;
    let d = b.data("eth");
    let udp = V4::new(H1_4, H2_4, 17).packet(&udp4(H1_4, H2_4, 40000, 9, &d));
    b.add("eth_type_88b5", eth(IN_MAC, H1_MAC, 0x88b5, &[0; 46]), Drop("eth_unsupported_type"));
    let mut vlan = vec![0x00, 0x07, 0x08, 0x00];
    vlan.extend_from_slice(&udp);
    b.add("eth_vlan_tagged", eth(IN_MAC, H1_MAC, 0x8100, &vlan), Drop("eth_unsupported_type"));
    b.add("eth_qinq_tagged", eth(IN_MAC, H1_MAC, 0x88a8, &vlan), Drop("eth_unsupported_type"));
    b.add("eth_lldp", eth([1, 0x80, 0xc2, 0, 0, 0x0e], H1_MAC, 0x88cc, &[0; 46]), Drop("eth_unsupported_type"));
    b.add("eth_8023_length", eth(IN_MAC, H1_MAC, 46, &[0xaa; 46]), Drop("eth_unsupported_type"));
    b.add("eth_other_unicast_dst", eth([2, 0, 0, 0, 9, 9], H1_MAC, 0x0800, &udp), Drop("eth_not_for_us"));
    let d = b.data("eth_bcast_unicast_ip");
    let p = V4::new(H1_4, H2_4, 17).packet(&udp4(H1_4, H2_4, 40000, 9, &d));
    b.add("eth_bcast_unicast_ip", eth(BCAST, H1_MAC, 0x0800, &p), Drop("eth_multicast_not_forwarded"));
    let d = b.data("eth_mcast_unicast_ip6");
    let p = ip6(H1_6, H2_6, 17, 64, &udp6(H1_6, H2_6, 40000, 9, &d));
    b.add(
        "eth_mcast_unicast_ip6",
        eth([0x33, 0x33, 0, 0, 0, 1], H1_MAC, 0x86dd, &p),
        Drop("eth_multicast_not_forwarded"),
    );
    b.add("eth_ipv4_no_header", eth(IN_MAC, H1_MAC, 0x0800, &[]), Drop("ipv4_malformed"));
    b.add("eth_ipv6_no_header", eth(IN_MAC, H1_MAC, 0x86dd, &[]), Drop("ipv6_malformed"));
    b.add("eth_arp_no_body", eth(IN_MAC, H1_MAC, 0x0806, &[]), Drop("arp_invalid"));
}

fn arp_cases(b: &mut Builder) {
    use Expect::*;
    let frame = |a: Vec<u8>| eth(BCAST, H1_MAC, 0x0806, &a);
    let z = [0u8; 6];
    let ip = Ipv4Addr::new;
    b.add("arp_request_for_us", frame(arp(1, H1_MAC, H1_4, z, IN4)), ArpReply);
    b.add("arp_request_unicast", eth(IN_MAC, H1_MAC, 0x0806, &arp(1, H1_MAC, H1_4, z, IN4)), ArpReply);
    b.add("arp_reply_to_us", eth(IN_MAC, H1_MAC, 0x0806, &arp(2, H1_MAC, H1_4, IN_MAC, IN4)), Learned);
    b.add("arp_gratuitous_known", frame(arp(1, H1_MAC, H1_4, z, H1_4)), Learned);
    b.add("arp_known_not_for_us", frame(arp(1, H1_MAC, H1_4, z, ip(192, 0, 2, 99))), Learned);
    b.add(
        "arp_unknown_not_for_us",
        frame(arp(1, [2, 0, 0, 0, 1, 0x77], ip(192, 0, 2, 77), z, ip(192, 0, 2, 99))),
        Drop("arp_not_for_us"),
    );
    b.add(
        "arp_gratuitous_unknown",
        frame(arp(2, [2, 0, 0, 0, 1, 0x78], ip(192, 0, 2, 78), BCAST, ip(192, 0, 2, 78))),
        Drop("arp_not_for_us"),
    );
    b.add("arp_probe_for_us", frame(arp(1, [2, 0, 0, 0, 1, 0x79], Ipv4Addr::UNSPECIFIED, z, IN4)), ArpReply);
    b.add(
        "arp_probe_for_other",
        frame(arp(1, [2, 0, 0, 0, 1, 0x79], Ipv4Addr::UNSPECIFIED, z, ip(192, 0, 2, 79))),
        Drop("arp_not_for_us"),
    );
    for (name, op) in [("arp_op_rarp_request", 3u16), ("arp_op_rarp_reply", 4), ("arp_op_inarp", 8), ("arp_op_zero", 0)]
    {
        b.add(name, frame(arp(op, H1_MAC, H1_4, z, IN4)), Drop("arp_unsupported_op"));
    }
    let bend = |at: usize, bytes: &[u8]| {
        let mut a = arp(1, H1_MAC, H1_4, z, IN4);
        a[at..at + bytes.len()].copy_from_slice(bytes);
        frame(a)
    };
    b.add("arp_htype_ieee802", bend(0, &[0, 6]), Drop("arp_invalid"));
    b.add("arp_ptype_ipv6", bend(2, &[0x86, 0xdd]), Drop("arp_invalid"));
    b.add("arp_hlen_8", bend(4, &[8]), Drop("arp_invalid"));
    b.add("arp_plen_16", bend(5, &[16]), Drop("arp_invalid"));
    b.add("arp_truncated", frame(arp(1, H1_MAC, H1_4, z, IN4)[..20].to_vec()), Drop("arp_invalid"));
    for (name, sha) in [
        ("arp_sha_broadcast", BCAST),
        ("arp_sha_zero", z),
        ("arp_sha_multicast", [1, 0, 0x5e, 0, 0, 1]),
        ("arp_sha_ours", IN_MAC),
    ] {
        b.add(name, eth(BCAST, H1_MAC, 0x0806, &arp(1, sha, H1_4, z, IN4)), Drop("arp_invalid"));
    }
    for (name, spa) in [
        ("arp_spa_multicast", ip(224, 0, 0, 5)),
        ("arp_spa_loopback", ip(127, 0, 0, 1)),
        ("arp_spa_broadcast", Ipv4Addr::BROADCAST),
        ("arp_spa_subnet_broadcast", ip(192, 0, 2, 255)),
        ("arp_spa_class_e", ip(240, 1, 1, 1)),
        ("arp_spa_zero_net", ip(0, 1, 2, 3)),
    ] {
        b.add(name, frame(arp(1, H1_MAC, spa, z, IN4)), Drop("arp_martian_sender"));
    }
    b.add("arp_spa_ours_conflict", frame(arp(2, [2, 0, 0, 0, 1, 0x66], IN4, BCAST, IN4)), Drop("arp_address_conflict"));
    b.add("arp_spa_off_link", frame(arp(1, H1_MAC, ip(203, 0, 113, 5), z, IN4)), Drop("arp_sender_not_on_link"));
    b.add("arp_spa_other_port", frame(arp(1, H1_MAC, OUT4, z, IN4)), Drop("arp_sender_not_on_link"));
}

fn ipv4_cases(b: &mut Builder) {
    use Expect::*;
    let ip = Ipv4Addr::new;
    let echo =
        |b: &Builder, name: &str, src, dst| V4::new(src, dst, 1).packet(&icmp4(8, 0, 0x0707_0001, &b.data(name)));
    b.add("ipv4_echo_to_us", eth(IN_MAC, H1_MAC, 0x0800, &echo(b, "ipv4_echo_to_us", H1_4, IN4)), Echo4);
    let mut p = echo(b, "ipv4_echo_bad_icmp_csum", H1_4, IN4);
    p[22] ^= 0x55;
    b.add("ipv4_echo_bad_icmp_csum", eth(IN_MAC, H1_MAC, 0x0800, &p), Drop("local_icmp_malformed"));
    b.add("ipv4_icmp_truncated", v4_frame(&V4::new(H1_4, IN4, 1), &[8, 0, 0xf7]), Drop("local_icmp_malformed"));
    let d = b.data("ipv4_echo_reply_to_us");
    b.add("ipv4_echo_reply_to_us", v4_frame(&V4::new(H1_4, IN4, 1), &icmp4(0, 0, 1, &d)), Drop("local_icmp_ignored"));
    let d = b.data("ipv4_timestamp_to_us");
    b.add("ipv4_timestamp_to_us", v4_frame(&V4::new(H1_4, IN4, 1), &icmp4(13, 0, 1, &d)), Drop("local_icmp_ignored"));
    let d = b.data("ipv4_unreach_to_us");
    b.add("ipv4_unreach_to_us", v4_frame(&V4::new(H1_4, IN4, 1), &icmp4(3, 1, 0, &d)), Drop("local_icmp_ignored"));
    let e = echo(b, "ipv4_directed_broadcast", H1_4, ip(192, 0, 2, 255));
    b.add("ipv4_directed_broadcast", eth(IN_MAC, H1_MAC, 0x0800, &e), Drop("ipv4_directed_broadcast"));
    let e = echo(b, "ipv4_limited_broadcast", H1_4, Ipv4Addr::BROADCAST);
    b.add("ipv4_limited_broadcast", eth(BCAST, H1_MAC, 0x0800, &e), Drop("ipv4_not_routed"));
    let e = echo(b, "ipv4_to_multicast", H1_4, ip(224, 0, 0, 1));
    b.add("ipv4_to_multicast", eth([1, 0, 0x5e, 0, 0, 1], H1_MAC, 0x0800, &e), Drop("ipv4_not_routed"));
    for (name, src) in [
        ("ipv4_src_zero_net", ip(0, 0, 0, 5)),
        ("ipv4_src_loopback", ip(127, 0, 0, 1)),
        ("ipv4_src_multicast", ip(224, 0, 0, 9)),
        ("ipv4_src_class_e", ip(240, 0, 0, 1)),
        ("ipv4_src_broadcast", Ipv4Addr::BROADCAST),
        ("ipv4_src_ours", IN4),
        ("ipv4_src_subnet_bcast", ip(192, 0, 2, 255)),
    ] {
        let d = b.data(name);
        b.add(name, v4_frame(&V4::new(src, H2_4, 17), &udp4(src, H2_4, 40000, 9, &d)), Drop("ipv4_martian_source"));
    }
    for (name, dst) in [
        ("ipv4_dst_loopback", ip(127, 0, 0, 9)),
        ("ipv4_dst_zero_net", ip(0, 9, 9, 9)),
        ("ipv4_dst_class_e", ip(250, 1, 2, 3)),
    ] {
        let d = b.data(name);
        b.add(
            name,
            v4_frame(&V4::new(H1_4, dst, 17), &udp4(H1_4, dst, 40000, 9, &d)),
            Drop("ipv4_martian_destination"),
        );
    }
    let ll = ip(169, 254, 7, 7);
    let d = b.data("ipv4_src_link_local");
    b.add(
        "ipv4_src_link_local",
        v4_frame(&V4::new(ll, H2_4, 17), &udp4(ll, H2_4, 4000, 9, &d)),
        Drop("ipv4_link_local"),
    );
    let d = b.data("ipv4_dst_link_local");
    b.add(
        "ipv4_dst_link_local",
        v4_frame(&V4::new(H1_4, ll, 17), &udp4(H1_4, ll, 4000, 9, &d)),
        Drop("ipv4_link_local"),
    );
    // Header damage.
    let d = b.data("ipv4_header_damage");
    let good = V4::new(H1_4, H2_4, 17).packet(&udp4(H1_4, H2_4, 40000, 9, &d));
    let bent = |at: usize, f: &dyn Fn(u8) -> u8| {
        let mut p = good.clone();
        p[at] = f(p[at]);
        if at != 10 && at != 11 {
            p[10..12].fill(0);
            let c = inet_checksum(&p[..20]);
            p[10..12].copy_from_slice(&c.to_be_bytes());
        }
        eth(IN_MAC, H1_MAC, 0x0800, &p)
    };
    b.add("ipv4_bad_header_csum", bent(11, &|x| x ^ 0xff), Drop("ipv4_bad_checksum"));
    b.add("ipv4_version_5", bent(0, &|x| (x & 0x0f) | 0x50), Drop("ipv4_malformed"));
    b.add("ipv4_ihl_4", bent(0, &|_| 0x44), Drop("ipv4_malformed"));
    b.add("ipv4_total_len_past_frame", bent(2, &|x| x.wrapping_add(4)), Drop("ipv4_malformed"));
    b.add("ipv4_total_len_below_header", bent(3, &|_| 16), Drop("ipv4_malformed"));
    // Forwarding errors answered with ICMP.
    for (name, ttl) in [("ipv4_ttl_1", 1u8), ("ipv4_ttl_0", 0)] {
        let d = b.data(name);
        let v = V4 { ttl, ..V4::new(H1_4, H2_4, 17) };
        b.add(name, v4_frame(&v, &udp4(H1_4, H2_4, 40000, 33434, &d)), Icmp4(11, 0, "ttl_expired"));
    }
    let far = ip(203, 0, 113, 9);
    let d = b.data("ipv4_no_route");
    b.add("ipv4_no_route", v4_frame(&V4::new(H1_4, far, 17), &udp4(H1_4, far, 40000, 9, &d)), Icmp4(3, 0, "no_route"));
    // Transport to us: checksums first (RFC 1122).
    let d = b.data("ipv4_udp_to_us");
    b.add(
        "ipv4_udp_to_us",
        v4_frame(&V4::new(H1_4, IN4, 17), &udp4(H1_4, IN4, 40000, 9, &d)),
        Icmp4(3, 3, "port_unreachable"),
    );
    let d = b.data("ipv4_udp_to_us_no_csum");
    let mut u = udp4(H1_4, IN4, 40000, 9, &d);
    u[6..8].fill(0);
    b.add("ipv4_udp_to_us_no_csum", v4_frame(&V4::new(H1_4, IN4, 17), &u), Icmp4(3, 3, "port_unreachable"));
    let d = b.data("ipv4_udp_to_us_bad_csum");
    let mut u = udp4(H1_4, IN4, 40000, 9, &d);
    u[7] ^= 1;
    b.add("ipv4_udp_to_us_bad_csum", v4_frame(&V4::new(H1_4, IN4, 17), &u), Drop("local_bad_checksum"));
    let d = b.data("ipv4_udp_to_us_bad_len");
    let mut u = udp4(H1_4, IN4, 40000, 9, &d);
    u[5] = u[5].wrapping_add(8);
    b.add("ipv4_udp_to_us_bad_len", v4_frame(&V4::new(H1_4, IN4, 17), &u), Drop("local_bad_checksum"));
    let d = b.data("ipv4_tcp_syn_to_us");
    b.add(
        "ipv4_tcp_syn_to_us",
        v4_frame(&V4::new(H1_4, IN4, 6), &tcp4(H1_4, IN4, 40000, 22, 2, &d)),
        Drop("local_unsupported"),
    );
    let d = b.data("ipv4_tcp_to_us_bad_csum");
    let mut t = tcp4(H1_4, IN4, 40000, 22, 2, &d);
    t[17] ^= 1;
    b.add("ipv4_tcp_to_us_bad_csum", v4_frame(&V4::new(H1_4, IN4, 6), &t), Drop("local_bad_checksum"));
    b.add(
        "ipv4_tcp_to_us_short",
        v4_frame(&V4::new(H1_4, IN4, 6), &[0x9c, 0x40, 0, 22, 0, 0, 0, 1, 0, 0]),
        Drop("local_bad_checksum"),
    );
    let d = b.data("ipv4_gre_to_us");
    b.add("ipv4_gre_to_us", v4_frame(&V4::new(H1_4, IN4, 47), &d), Drop("local_unsupported"));
    // Legitimate transit.
    let d = b.data("ipv4_udp_forward");
    b.add("ipv4_udp_forward", v4_frame(&V4::new(H1_4, H2_4, 17), &udp4(H1_4, H2_4, 40000, 9, &d)), Forward);
    let d = b.data("ipv4_tcp_forward");
    b.add("ipv4_tcp_forward", v4_frame(&V4::new(H1_4, H2_4, 6), &tcp4(H1_4, H2_4, 40000, 9, 0x10, &d)), Forward);
}

fn ipv4_option_cases(b: &mut Builder) {
    use Expect::*;
    let with = |b: &Builder, name: &str, to: Ipv4Addr, options: &[u8]| {
        let d = b.data(name);
        let v = V4 { options: options.to_vec(), ..V4::new(H1_4, to, 17) };
        v4_frame(&v, &udp4(H1_4, to, 40000, 9, &d))
    };
    let fwd: [(&str, &[u8]); 4] = [
        ("ipv4_opt_record_route", &[7, 7, 4, 0, 0, 0, 0]),
        ("ipv4_opt_router_alert", &[148, 4, 0, 0]),
        ("ipv4_opt_nop_end", &[1, 1, 1, 0]),
        ("ipv4_opt_unknown_ok", &[30, 4, 0xaa, 0xbb]),
    ];
    for (name, o) in fwd {
        b.add(name, with(b, name, H2_4, o), Forward);
    }
    let bad: [(&str, &[u8]); 8] = [
        ("ipv4_opt_len_0", &[30, 0, 0, 0]),
        ("ipv4_opt_len_past_hdr", &[1, 30, 9, 0]),
        ("ipv4_opt_rr_pointer_3", &[7, 7, 3, 0, 0, 0, 0]),
        ("ipv4_opt_rr_len_6", &[7, 6, 4, 0, 0, 0]),
        ("ipv4_opt_ts_flag_2", &[68, 8, 5, 2, 0, 0, 0, 0]),
        ("ipv4_opt_ts_pointer_4", &[68, 8, 4, 0, 0, 0, 0, 0]),
        ("ipv4_opt_ra_len_6", &[148, 6, 0, 0, 0, 0]),
        ("ipv4_opt_no_len_octet", &[1, 1, 1, 30]),
    ];
    for (name, o) in bad {
        b.add(name, with(b, name, H2_4, o), Icmp4(12, 0, "ipv4_bad_option"));
    }
    b.add("ipv4_opt_bad_to_us", with(b, "ipv4_opt_bad_to_us", IN4, &[30, 1, 0, 0]), Icmp4(12, 0, "ipv4_bad_option"));
    b.add("ipv4_opt_lsrr", with(b, "ipv4_opt_lsrr", H2_4, &[131, 7, 4, 198, 51, 100, 2]), Drop("ipv4_source_route"));
    b.add("ipv4_opt_ssrr", with(b, "ipv4_opt_ssrr", H2_4, &[137, 7, 4, 198, 51, 100, 2]), Drop("ipv4_source_route"));
}

fn ipv4_fragment_cases(b: &mut Builder) {
    use Expect::*;
    // A fragment at byte offset `offset`, More Fragments `more`: the case's
    // data padded to a multiple of 8 octets, then `data`.
    let frag = |b: &Builder, name: &str, to: Ipv4Addr, proto: u8, offset: u16, more: bool, data: &[u8]| {
        let mut payload = b.data(name);
        payload.resize(payload.len().div_ceil(8) * 8, b'.');
        payload.extend_from_slice(data);
        let v = V4 {
            frag: (offset / 8) | if more { 0x2000 } else { 0 },
            ident: 0x4000 ^ offset,
            ..V4::new(H1_4, to, proto)
        };
        v4_frame(&v, &payload)
    };
    // 8 + 16 + 8 = 32 octets: a multiple of 8 for a non-last fragment.
    b.add("ipv4_frag_first_fwd", frag(b, "ipv4_frag_first_fwd", H2_4, 17, 0, true, &[0; 8]), Forward);
    b.add("ipv4_frag_middle_fwd", frag(b, "ipv4_frag_middle_fwd", H2_4, 17, 1480, true, &[0; 8]), Forward);
    b.add("ipv4_frag_last_fwd", frag(b, "ipv4_frag_last_fwd", H2_4, 17, 2960, false, &[0; 3]), Forward);
    b.add("ipv4_frag_overlap_fwd", frag(b, "ipv4_frag_overlap_fwd", H2_4, 17, 16, true, &[0; 8]), Forward);
    b.add(
        "ipv4_frag_df_and_mf",
        {
            let mut f = frag(b, "ipv4_frag_df_and_mf", H2_4, 17, 0, true, &[0; 8]);
            f[14 + 6] |= 0x40;
            f[14 + 10..14 + 12].fill(0);
            let c = inet_checksum(&f[14..34]);
            f[24..26].copy_from_slice(&c.to_be_bytes());
            f
        },
        Forward,
    );
    b.add(
        "ipv4_frag_ping_of_death",
        frag(b, "ipv4_frag_ping_of_death", H2_4, 1, 65528, false, &[0; 8]),
        Drop("ipv4_fragment_malformed"),
    );
    b.add(
        "ipv4_frag_not_mult_8",
        frag(b, "ipv4_frag_not_mult_8", H2_4, 17, 0, true, &[0; 5]),
        Drop("ipv4_fragment_malformed"),
    );
    b.add(
        "ipv4_frag_tcp_offset_8",
        frag(b, "ipv4_frag_tcp_offset_8", H2_4, 6, 8, false, &[0; 4]),
        Drop("ipv4_tiny_fragment"),
    );
    let tiny = {
        let v = V4 { frag: 0x2000, ..V4::new(H1_4, H2_4, 6) };
        v4_frame(&v, &[0x9c, 0x40, 0, 80, 0, 0, 0, 1])
    };
    b.add("ipv4_frag_tcp_first_tiny", tiny, Drop("ipv4_tiny_fragment"));
    let d = b.data("ipv4_frag_echo_to_us");
    let v = V4 { frag: 0x2000, ..V4::new(H1_4, IN4, 1) };
    let mut m = icmp4(8, 0, 1, &d);
    m.extend_from_slice(&[0; 8]);
    m.truncate(m.len() / 8 * 8);
    b.add("ipv4_frag_echo_to_us", v4_frame(&v, &m), Drop("local_fragment"));
    b.add("ipv4_frag_udp_to_us", frag(b, "ipv4_frag_udp_to_us", IN4, 17, 800, false, &[0; 4]), Drop("local_fragment"));
}

fn ipv6_cases(b: &mut Builder) {
    use Expect::*;
    let h1_ll = link_local(H1_MAC);
    let in_ll = link_local(IN_MAC);
    let echo =
        |b: &Builder, name: &str, src, dst| ip6(src, dst, 58, 64, &icmp6(src, dst, 128, 0, 0x0606_0001, &b.data(name)));
    b.add("ipv6_echo_to_us", v6_frame(&echo(b, "ipv6_echo_to_us", H1_6, IN6)), Echo6);
    b.add("ipv6_echo_to_our_ll", v6_frame(&echo(b, "ipv6_echo_to_our_ll", h1_ll, in_ll)), Echo6);
    let mut p = echo(b, "ipv6_echo_bad_csum", H1_6, IN6);
    p[42] ^= 0x33;
    b.add("ipv6_echo_bad_csum", v6_frame(&p), Drop("local_icmp_malformed"));
    let d = b.data("ipv6_udp_to_us");
    b.add(
        "ipv6_udp_to_us",
        v6_frame(&ip6(H1_6, IN6, 17, 64, &udp6(H1_6, IN6, 40000, 9, &d))),
        Icmp6(1, 4, "port_unreachable"),
    );
    let d = b.data("ipv6_udp_to_us_zero_csum");
    let mut u = udp6(H1_6, IN6, 40000, 9, &d);
    u[6..8].fill(0);
    b.add("ipv6_udp_to_us_zero_csum", v6_frame(&ip6(H1_6, IN6, 17, 64, &u)), Drop("local_bad_checksum"));
    let d = b.data("ipv6_udp_to_us_bad_csum");
    let mut u = udp6(H1_6, IN6, 40000, 9, &d);
    u[7] ^= 0x10;
    b.add("ipv6_udp_to_us_bad_csum", v6_frame(&ip6(H1_6, IN6, 17, 64, &u)), Drop("local_bad_checksum"));
    let d = b.data("ipv6_tcp_to_us");
    b.add(
        "ipv6_tcp_to_us",
        v6_frame(&ip6(H1_6, IN6, 6, 64, &tcp6(H1_6, IN6, 40000, 22, 2, &d))),
        Drop("local_unsupported"),
    );
    let d = b.data("ipv6_tcp_to_us_bad_csum");
    let mut t = tcp6(H1_6, IN6, 40000, 22, 2, &d);
    t[16] ^= 0x80;
    b.add("ipv6_tcp_to_us_bad_csum", v6_frame(&ip6(H1_6, IN6, 6, 64, &t)), Drop("local_bad_checksum"));
    let d = b.data("ipv6_no_next_to_us");
    b.add("ipv6_no_next_to_us", v6_frame(&ip6(H1_6, IN6, 59, 64, &d)), Drop("local_unsupported"));
    let d = b.data("ipv6_hop_limit_1");
    b.add(
        "ipv6_hop_limit_1",
        v6_frame(&ip6(H1_6, H2_6, 17, 1, &udp6(H1_6, H2_6, 40000, 9, &d))),
        Icmp6(3, 0, "ttl_expired"),
    );
    let far: Ipv6Addr = "2001:db8:ffff::1".parse().unwrap();
    let d = b.data("ipv6_no_route");
    b.add("ipv6_no_route", v6_frame(&ip6(H1_6, far, 17, 64, &udp6(H1_6, far, 40000, 9, &d))), Icmp6(1, 0, "no_route"));
    let srcs = [
        ("ipv6_src_multicast", "ff02::1"),
        ("ipv6_src_loopback", "::1"),
        ("ipv6_src_v4_mapped", "::ffff:192.0.2.2"),
        ("ipv6_src_unspecified", "::"),
    ];
    for (name, s) in srcs {
        let s: Ipv6Addr = s.parse().unwrap();
        let d = b.data(name);
        b.add(name, v6_frame(&ip6(s, H2_6, 17, 64, &udp6(s, H2_6, 40000, 9, &d))), Drop("ipv6_martian_source"));
    }
    for (name, t) in
        [("ipv6_dst_loopback", "::1"), ("ipv6_dst_unspecified", "::"), ("ipv6_dst_v4_mapped", "::ffff:198.51.100.2")]
    {
        let t: Ipv6Addr = t.parse().unwrap();
        let d = b.data(name);
        b.add(name, v6_frame(&ip6(H1_6, t, 17, 64, &udp6(H1_6, t, 40000, 9, &d))), Drop("ipv6_martian_destination"));
    }
    let g: Ipv6Addr = "ff0e::1".parse().unwrap();
    let d = b.data("ipv6_dst_global_mcast");
    let p = ip6(H1_6, g, 17, 64, &udp6(H1_6, g, 40000, 9, &d));
    b.add("ipv6_dst_global_mcast", eth(mcast_mac(g), H1_MAC, 0x86dd, &p), Drop("ipv6_not_routed"));
    let other_ll: Ipv6Addr = "fe80::99".parse().unwrap();
    let d = b.data("ipv6_dst_other_ll");
    b.add(
        "ipv6_dst_other_ll",
        v6_frame(&ip6(h1_ll, other_ll, 17, 64, &udp6(h1_ll, other_ll, 40000, 9, &d))),
        Drop("ipv6_not_routed"),
    );
    let d = b.data("ipv6_src_ll_to_global");
    b.add(
        "ipv6_src_ll_to_global",
        v6_frame(&ip6(h1_ll, H2_6, 17, 64, &udp6(h1_ll, H2_6, 40000, 9, &d))),
        Drop("ipv6_not_routed"),
    );
    let d = b.data("ipv6_payload_len_long");
    let mut p = ip6(H1_6, H2_6, 17, 64, &udp6(H1_6, H2_6, 40000, 9, &d));
    p[5] = p[5].wrapping_add(40);
    b.add("ipv6_payload_len_long", v6_frame(&p), Drop("ipv6_malformed"));
    let mut p = ip6(H1_6, H2_6, 17, 64, &udp6(H1_6, H2_6, 40000, 9, &b.data("ipv6_version_4")));
    p[0] = 0x40;
    b.add("ipv6_version_4", v6_frame(&p), Drop("ipv6_malformed"));
    let d = b.data("ipv6_udp_forward");
    b.add("ipv6_udp_forward", v6_frame(&ip6(H1_6, H2_6, 17, 64, &udp6(H1_6, H2_6, 40000, 9, &d))), Forward);
}

fn ipv6_ext_cases(b: &mut Builder) {
    use Expect::*;
    // The UDP payload after `ext` (extension headers naming 17 last).
    let with = |b: &Builder, name: &str, dst: Ipv6Addr, first: u8, ext: &[u8]| {
        let mut payload = ext.to_vec();
        payload.extend_from_slice(&udp6(H1_6, dst, 40000, 9, &b.data(name)));
        v6_frame(&ip6(H1_6, dst, first, 64, &payload))
    };
    let echo_with = |b: &Builder, name: &str, first: u8, ext: &[u8]| {
        let mut payload = ext.to_vec();
        payload.extend_from_slice(&icmp6(H1_6, IN6, 128, 0, 0x0505_0001, &b.data(name)));
        v6_frame(&ip6(H1_6, IN6, first, 64, &payload))
    };
    b.add("ipv6_hbh_padn_fwd", with(b, "ipv6_hbh_padn_fwd", H2_6, 0, &opts_hdr(17, &[1, 2, 0, 0])), Forward);
    b.add(
        "ipv6_hbh_router_alert_fwd",
        with(b, "ipv6_hbh_router_alert_fwd", H2_6, 0, &opts_hdr(17, &[5, 2, 0, 0])),
        Forward,
    );
    b.add(
        "ipv6_hbh_unknown_icmp_fwd",
        with(b, "ipv6_hbh_unknown_icmp_fwd", H2_6, 0, &opts_hdr(17, &[0x9e, 0])),
        Forward,
    );
    b.add("ipv6_dest_opts_fwd", with(b, "ipv6_dest_opts_fwd", H2_6, 60, &opts_hdr(17, &[0x1e, 2, 0, 0])), Forward);
    b.add("ipv6_rh0_transit_fwd", with(b, "ipv6_rh0_transit_fwd", H2_6, 43, &rh(17, 0, 1, H1_6)), Forward);
    b.add("ipv6_first_frag_fwd", with(b, "ipv6_first_frag_fwd", H2_6, 44, &frag6(17, 0, true, 0x1111)), Forward);
    let hbh_second = [opts_hdr(0, &[1, 4, 0, 0, 0, 0]), opts_hdr(17, &[1, 4, 0, 0, 0, 0])].concat();
    b.add(
        "ipv6_hbh_not_first",
        with(b, "ipv6_hbh_not_first", H2_6, 60, &hbh_second),
        Icmp6(4, 1, "ipv6_ext_malformed"),
    );
    b.add(
        "ipv6_opt_overrun",
        with(b, "ipv6_opt_overrun", H2_6, 60, &[17, 0, 0x1e, 9, 0, 0, 0, 0]),
        Icmp6(4, 0, "ipv6_ext_malformed"),
    );
    // A Destination Options header claiming 64 octets more than the packet has.
    let d = b.data("ipv6_ext_truncated");
    let mut payload = vec![17, 8, 1, 4, 0, 0, 0, 0];
    payload.extend_from_slice(&d);
    b.add("ipv6_ext_truncated", v6_frame(&ip6(H1_6, H2_6, 60, 64, &payload)), Drop("ipv6_ext_malformed"));
    let mut nine = Vec::new();
    for i in 0..9 {
        nine.extend(opts_hdr(if i == 8 { 17 } else { 60 }, &[1, 4, 0, 0, 0, 0]));
    }
    b.add("ipv6_too_many_headers", with(b, "ipv6_too_many_headers", H2_6, 60, &nine), Icmp6(4, 8, "ipv6_ext_too_many"));
    let mut big = vec![17, 128];
    for _ in 0..4 {
        big.extend_from_slice(&[1, 255]);
        big.extend(std::iter::repeat_n(0u8, 255));
    }
    big.resize(8 * 129, 0); // then two Pad1
    b.add(
        "ipv6_ext_header_too_big",
        with(b, "ipv6_ext_header_too_big", H2_6, 60, &big),
        Icmp6(4, 6, "ipv6_ext_header_too_big"),
    );
    let half = |next: u8| {
        let mut h = vec![next, 64];
        for _ in 0..2 {
            h.extend_from_slice(&[1, 255]);
            h.extend(std::iter::repeat_n(0u8, 255));
        }
        h.resize(8 * 65, 0); // then four Pad1
        h
    };
    let long = [half(60), half(17)].concat();
    b.add(
        "ipv6_ext_chain_too_long",
        with(b, "ipv6_ext_chain_too_long", H2_6, 60, &long),
        Icmp6(4, 7, "ipv6_ext_chain_too_long"),
    );
    let many: Vec<u8> = std::iter::repeat_n([0x1e, 0], 9).flatten().collect();
    b.add(
        "ipv6_too_many_options",
        with(b, "ipv6_too_many_options", H2_6, 60, &opts_hdr(17, &many)),
        Icmp6(4, 9, "ipv6_ext_too_many_options"),
    );
    let mut fat = vec![0x1e, 100];
    fat.extend([0u8; 100]);
    b.add(
        "ipv6_option_too_big",
        with(b, "ipv6_option_too_big", H2_6, 60, &opts_hdr(17, &fat)),
        Icmp6(4, 10, "ipv6_ext_option_too_big"),
    );
    // A first fragment without its UDP header (RFC 7112).
    let mut payload = frag6(60, 0, true, 0x2222);
    payload.extend(opts_hdr(17, &[1, 4, 0, 0, 0, 0]));
    b.add("ipv6_frag_incomplete", v6_frame(&ip6(H1_6, H2_6, 44, 64, &payload)), Icmp6(4, 3, "ipv6_incomplete_chain"));
    b.add("ipv6_frag_to_us", with(b, "ipv6_frag_to_us", IN6, 44, &frag6(17, 0, true, 0x3333)), Drop("local_fragment"));
    b.add("ipv6_atomic_frag_echo", echo_with(b, "ipv6_atomic_frag_echo", 44, &frag6(58, 0, false, 0x4444)), Echo6);
    // Jumbo payload (RFC 2675).
    let jumbo = |b: &Builder, name: &str, plen0: bool, value: Option<u32>| {
        let opt = match value {
            Some(v) => {
                let mut o = vec![0xc2, 4];
                o.extend(v.to_be_bytes());
                o
            }
            None => vec![1, 4, 0, 0, 0, 0],
        };
        let mut payload = opts_hdr(17, &opt);
        payload.extend_from_slice(&udp6(H1_6, H2_6, 40000, 9, &b.data(name)));
        let mut p = ip6(H1_6, H2_6, 0, 64, &payload);
        if plen0 {
            p[4..6].fill(0);
        }
        v6_frame(&p)
    };
    // With a payload length of 0 an error quotes the fixed header only: matched untagged.
    b.add_untagged("ipv6_jumbo_no_option", jumbo(b, "ipv6_jumbo_no_option", true, None), Icmp6(4, 0, "ipv6_jumbo"));
    b.add_untagged("ipv6_jumbo_small", jumbo(b, "ipv6_jumbo_small", true, Some(1000)), Icmp6(4, 0, "ipv6_jumbo"));
    b.add("ipv6_jumbo_with_plen", jumbo(b, "ipv6_jumbo_with_plen", false, Some(70000)), Icmp6(4, 0, "ipv6_jumbo"));
    b.add("ipv6_jumbogram", jumbo(b, "ipv6_jumbogram", true, Some(70000)), Drop("ipv6_jumbo"));
    // Routing headers and options at the destination.
    b.add("ipv6_rh0_to_us", echo_with(b, "ipv6_rh0_to_us", 43, &rh(58, 0, 1, H2_6)), Icmp6(4, 0, "ipv6_rh0"));
    b.add("ipv6_rh0_sl0_echo", echo_with(b, "ipv6_rh0_sl0_echo", 43, &rh(58, 0, 0, H2_6)), Echo6);
    b.add(
        "ipv6_rh253_to_us",
        echo_with(b, "ipv6_rh253_to_us", 43, &rh(58, 253, 1, H2_6)),
        Icmp6(4, 0, "ipv6_routing_header"),
    );
    b.add(
        "ipv6_srh_to_non_sid",
        echo_with(b, "ipv6_srh_to_non_sid", 43, &srh(58, 1, &[H2_6, IN6])),
        Icmp6(4, 0, "ipv6_routing_header"),
    );
    b.add("ipv6_do_unknown_skip", echo_with(b, "ipv6_do_unknown_skip", 60, &opts_hdr(58, &[0x1e, 0])), Echo6);
    b.add(
        "ipv6_do_unknown_discard",
        echo_with(b, "ipv6_do_unknown_discard", 60, &opts_hdr(58, &[0x5e, 0])),
        Drop("ipv6_unknown_option"),
    );
    b.add(
        "ipv6_hbh_unknown_icmp",
        echo_with(b, "ipv6_hbh_unknown_icmp", 0, &opts_hdr(58, &[0x9e, 0])),
        Icmp6(4, 2, "ipv6_unknown_option"),
    );
}

fn nd_cases(b: &mut Builder) {
    use Expect::*;
    let h1_ll = link_local(H1_MAC);
    let in_ll = link_local(IN_MAC);
    let grp = solicited(IN6);
    let nd = |src: Ipv6Addr, dst: Ipv6Addr, hop: u8, ty: u8, code: u8, rest: u32, body: &[u8]| {
        let dst_mac = if dst.is_multicast() { mcast_mac(dst) } else { IN_MAC };
        eth(dst_mac, H1_MAC, 0x86dd, &ip6(src, dst, 58, hop, &icmp6(src, dst, ty, code, rest, body)))
    };
    b.add("nd_ns_for_us", nd(H1_6, grp, 255, 135, 0, 0, &ns_body(IN6, Some(H1_MAC))), NdAdvert);
    b.add("nd_ns_unicast_for_us", nd(H1_6, IN6, 255, 135, 0, 0, &ns_body(IN6, Some(H1_MAC))), NdAdvert);
    b.add("nd_ns_dad_for_us", nd(Ipv6Addr::UNSPECIFIED, grp, 255, 135, 0, 0, &ns_body(IN6, None)), NdAdvert);
    let other: Ipv6Addr = "2001:db8:1::99".parse().unwrap();
    b.add(
        "nd_ns_not_for_us",
        nd(H1_6, solicited(other), 255, 135, 0, 0, &ns_body(other, Some(H1_MAC))),
        Drop("nd_not_for_us"),
    );
    b.add("nd_ns_hop_limit_64", nd(H1_6, grp, 64, 135, 0, 0, &ns_body(IN6, Some(H1_MAC))), Drop("nd_invalid"));
    b.add("nd_ns_code_1", nd(H1_6, grp, 255, 135, 1, 0, &ns_body(IN6, Some(H1_MAC))), Drop("nd_invalid"));
    let mut f = nd(H1_6, grp, 255, 135, 0, 0, &ns_body(IN6, Some(H1_MAC)));
    f[14 + 42] ^= 1;
    b.add("nd_ns_bad_csum", f, Drop("nd_invalid"));
    b.add(
        "nd_ns_target_mcast",
        nd(H1_6, grp, 255, 135, 0, 0, &ns_body("ff02::1".parse().unwrap(), None)),
        Drop("nd_invalid"),
    );
    b.add("nd_ns_short", nd(H1_6, grp, 255, 135, 0, 0, &IN6.octets()[..12]), Drop("nd_invalid"));
    let mut body = ns_body(IN6, None);
    body.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0]);
    b.add("nd_ns_option_len_0", nd(H1_6, grp, 255, 135, 0, 0, &body), Drop("nd_invalid"));
    b.add(
        "nd_ns_dad_with_slla",
        nd(Ipv6Addr::UNSPECIFIED, grp, 255, 135, 0, 0, &ns_body(IN6, Some(H1_MAC))),
        Drop("nd_invalid"),
    );
    b.add("nd_ns_dad_unicast", nd(Ipv6Addr::UNSPECIFIED, IN6, 255, 135, 0, 0, &ns_body(IN6, None)), Drop("nd_invalid"));
    b.add(
        "nd_ns_from_our_addr",
        nd(IN6, grp, 255, 135, 0, 0, &ns_body(IN6, Some(H1_MAC))),
        Drop("nd_address_conflict"),
    );
    let all = ipv6_all_nodes();
    b.add(
        "nd_na_for_our_addr",
        nd(h1_ll, all, 255, 136, 0, 0x2000_0000, &na_body(IN6, H1_MAC)),
        Drop("nd_address_conflict"),
    );
    let stranger: Ipv6Addr = "2001:db8:1::77".parse().unwrap();
    b.add(
        "nd_na_unknown",
        nd(stranger, all, 255, 136, 0, 0x2000_0000, &na_body(stranger, [2, 0, 0, 0, 1, 0x77])),
        Drop("nd_advert_unknown"),
    );
    b.add("nd_na_solicited_mcast", nd(H1_6, all, 255, 136, 0, 0x6000_0000, &na_body(H1_6, H1_MAC)), Drop("nd_invalid"));
    b.add("nd_na_hop_limit_254", nd(H1_6, in_ll, 254, 136, 0, 0x6000_0000, &na_body(H1_6, H1_MAC)), Drop("nd_invalid"));
    b.add("nd_na_known_override", nd(H1_6, all, 255, 136, 0, 0x2000_0000, &na_body(H1_6, H1_MAC)), Learned);
    b.add(
        "nd_rs",
        nd(h1_ll, "ff02::2".parse().unwrap(), 255, 133, 0, 0, &[1, 1, 2, 0, 0, 0, 1, 2]),
        Drop("nd_rs_ignored"),
    );
    b.add("nd_ra", nd(h1_ll, all, 255, 134, 0, 0x4000_0708, &[0; 8]), Drop("nd_ra_ignored"));
    let mut red = H2_6.octets().to_vec();
    red.extend_from_slice(&H2_6.octets());
    b.add("nd_redirect", nd(h1_ll, in_ll, 255, 137, 0, 0, &red), Drop("nd_redirect_ignored"));
}

fn ipv6_all_nodes() -> Ipv6Addr {
    Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1)
}

fn srv6_cases(b: &mut Builder) {
    use Expect::*;
    // An SRH'd UDP packet: its checksum is over the final destination, Segment List[0].
    let sr = |b: &Builder, name: &str, segs: &[Ipv6Addr], sl: u8, hop: u8| {
        let mut payload = srh(17, sl, segs);
        payload.extend_from_slice(&udp6(H1_6, segs[0], 40000, 9, &b.data(name)));
        v6_frame(&ip6(H1_6, segs[usize::from(sl)], 43, hop, &payload))
    };
    b.add("srv6_end_to_h2", sr(b, "srv6_end_to_h2", &[H2_6, SID_END], 1, 64), Forward);
    b.add("srv6_endx_to_h2", sr(b, "srv6_endx_to_h2", &[H2_6, SID_X], 1, 64), Forward);
    b.add("srv6_end_sl0_udp", sr(b, "srv6_end_sl0_udp", &[SID_END], 0, 64), Icmp6(4, 4, "srv6_param_problem"));
    b.add("srv6_end_hop_limit_1", sr(b, "srv6_end_hop_limit_1", &[H2_6, SID_END], 1, 1), Icmp6(3, 0, "ttl_expired"));
    let far: Ipv6Addr = "2001:db8:ffff::1".parse().unwrap();
    b.add("srv6_end_next_no_route", sr(b, "srv6_end_next_no_route", &[far, SID_END], 1, 64), Icmp6(1, 0, "no_route"));
    let mut f = sr(b, "srv6_srh_last_entry_bad", &[H2_6, SID_END], 1, 64);
    f[14 + 40 + 4] = 5;
    b.add("srv6_srh_last_entry_bad", f, Icmp6(4, 0, "srv6_param_problem"));
    let mut f = sr(b, "srv6_srh_sl_too_big", &[H2_6, SID_END], 1, 64);
    f[14 + 40 + 3] = 3; // Segments Left > Last Entry + 1 (RFC 8754 §4.3.1.1)
    b.add("srv6_srh_sl_too_big", f, Icmp6(4, 0, "srv6_param_problem"));
    let mut payload = rh(17, 5, 1, H2_6);
    payload.extend_from_slice(&udp6(H1_6, H2_6, 40000, 9, &b.data("srv6_rh5_at_sid")));
    b.add("srv6_rh5_at_sid", v6_frame(&ip6(H1_6, SID_END, 43, 64, &payload)), Icmp6(4, 0, "srv6_param_problem"));
    b.add("srv6_dt6_sl1", sr(b, "srv6_dt6_sl1", &[H2_6, SID_DT6], 1, 64), Icmp6(4, 0, "srv6_param_problem"));
    let echo = ip6(H1_6, SID_END, 58, 64, &icmp6(H1_6, SID_END, 128, 0, 0x0404_0001, &b.data("srv6_echo_to_sid")));
    b.add("srv6_echo_to_sid", v6_frame(&echo), Echo6);
    // Decapsulation: an inner packet to h2; to a link-local address.
    let inner =
        |b: &Builder, name: &str, dst: Ipv6Addr| ip6(H1_6, dst, 17, 64, &udp6(H1_6, dst, 40000, 9, &b.data(name)));
    b.add("srv6_dt6_to_h2", v6_frame(&ip6(H1_6, SID_DT6, 41, 64, &inner(b, "srv6_dt6_to_h2", H2_6))), Forward);
    let ll: Ipv6Addr = "fe80::5".parse().unwrap();
    b.add(
        "srv6_dt6_inner_ll",
        v6_frame(&ip6(H1_6, SID_DT6, 41, 64, &inner(b, "srv6_dt6_inner_ll", ll))),
        Drop("ipv6_not_routed"),
    );
    b.add(
        "srv6_dx6_inner_ll",
        v6_frame(&ip6(H1_6, SID_DX6, 41, 64, &inner(b, "srv6_dx6_inner_ll", ll))),
        Drop("ipv6_link_local_scope"),
    );
    b.add("srv6_endx_next_ll", sr(b, "srv6_endx_next_ll", &[ll, SID_X], 1, 64), Drop("ipv6_link_local_scope"));
    let h1_ll = link_local(H1_MAC);
    let mut payload = srh(17, 1, &[H2_6, SID_END]);
    payload.extend_from_slice(&udp6(h1_ll, H2_6, 40000, 9, &b.data("srv6_end_src_ll")));
    b.add("srv6_end_src_ll", v6_frame(&ip6(h1_ll, SID_END, 43, 64, &payload)), Drop("ipv6_link_local_scope"));
    let mut f = sr(b, "srv6_srh_truncated", &[H2_6, SID_END], 1, 64);
    f[14 + 40 + 1] = 20;
    b.add("srv6_srh_truncated", f, Drop("ipv6_ext_malformed"));
}

fn storage_cases(b: &mut Builder) {
    use Expect::*;
    let req = |dport: u16, body: &[u8], name: &str| {
        let mut body = body.to_vec();
        body.extend_from_slice(&Builder { cases: Vec::new() }.data(name));
        ip6(H1_6, SID_STORAGE, 17, 64, &udp6(H1_6, SID_STORAGE, 40001, dport, &body))
    };
    b.add(
        "storage_probe_ok",
        v6_frame(&req(STORAGE_PORT, &storage_probe(0x4153, 1), "storage_probe_ok")),
        StorageReply,
    );
    b.add(
        "storage_bad_magic",
        v6_frame(&req(STORAGE_PORT, &storage_probe(0x4154, 1), "storage_bad_magic")),
        Drop("storage_bad_request"),
    );
    b.add(
        "storage_bad_version",
        v6_frame(&req(STORAGE_PORT, &storage_probe(0x4153, 9), "storage_bad_version")),
        Drop("storage_bad_request"),
    );
    let short =
        ip6(H1_6, SID_STORAGE, 17, 64, &udp6(H1_6, SID_STORAGE, 40001, STORAGE_PORT, &storage_probe(0x4153, 1)[..36]));
    b.add("storage_short_header", v6_frame(&short), Drop("storage_bad_request"));
    b.add(
        "storage_wrong_port",
        v6_frame(&req(9999, &storage_probe(0x4153, 1), "storage_wrong_port")),
        Drop("storage_bad_request"),
    );
    let mut p = req(STORAGE_PORT, &storage_probe(0x4153, 1), "storage_bad_csum");
    p[47] ^= 0x20;
    b.add("storage_bad_csum", v6_frame(&p), Drop("storage_bad_checksum"));
    let mut p = req(STORAGE_PORT, &storage_probe(0x4153, 1), "storage_udp_len_long");
    p[45] = p[45].wrapping_add(64);
    b.add("storage_udp_len_long", v6_frame(&p), Drop("storage_bad_request"));
    let d = b.data("storage_tcp");
    let p = ip6(H1_6, SID_STORAGE, 6, 64, &tcp6(H1_6, SID_STORAGE, 40001, STORAGE_PORT, 2, &d));
    b.add("storage_tcp", v6_frame(&p), Icmp6(4, 4, "srv6_param_problem"));
}

/// Writes the corpus as seeds of the pipeline fuzz target into `dir`:
/// `<name>` holding the port selector 0 (received on the inside port) and
/// the frame. Returns how many were written.
pub fn write_seeds(dir: &Path) -> std::io::Result<usize> {
    std::fs::create_dir_all(dir)?;
    let cases = corpus();
    for c in &cases {
        let mut bytes = vec![0u8];
        bytes.extend_from_slice(&c.frame);
        std::fs::write(dir.join(format!("hostile-{}", c.name)), bytes)?;
    }
    Ok(cases.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corpus_is_wide_and_names_are_unique() {
        let cases = corpus();
        assert!(cases.len() >= 100, "{} cases", cases.len());
        let mut names: Vec<&str> = cases.iter().map(|c| c.name.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), cases.len(), "duplicate case names");
        let mut frames: Vec<&Vec<u8>> = cases.iter().map(|c| &c.frame).collect();
        frames.sort();
        frames.dedup();
        assert_eq!(frames.len(), cases.len(), "two cases send the same frame");
        // Every layer is there.
        for prefix in ["eth_", "arp_", "ipv4_", "ipv4_opt_", "ipv4_frag_", "ipv6_", "nd_", "srv6_", "storage_"] {
            assert!(cases.iter().filter(|c| c.name.starts_with(prefix)).count() >= 4, "{prefix}");
        }
        // Frames fit the links' MTU (1500).
        for c in &cases {
            assert!(c.frame.len() <= 1514, "{}: {} octets", c.name, c.frame.len());
        }
    }

    #[test]
    fn own_checksums_are_right() {
        // RFC 1071's example.
        assert_eq!(inet_checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]), !0xddf2);
        let p = V4::new(H1_4, H2_4, 17).packet(&[]);
        assert_eq!(inet_checksum(&p), 0);
        let u = udp6(H1_6, H2_6, 1, 2, b"abc");
        assert_eq!(fold(sum16(&u, pseudo6(H1_6, H2_6, 17, u.len()))), 0);
        assert_eq!(solicited(IN6), "ff02::1:ff00:1".parse::<Ipv6Addr>().unwrap());
        assert_eq!(link_local(IN_MAC), "fe80::ff:fe00:101".parse::<Ipv6Addr>().unwrap());
    }

    /// The seeds in the repository are the corpus as it is now
    /// (`HOSTILE_WRITE_SEEDS=1` rewrites them).
    #[test]
    fn fuzz_seeds_are_the_corpus() {
        let dir = crate::workspace_root().join("fuzz/seeds/pipeline");
        if std::env::var_os("HOSTILE_WRITE_SEEDS").is_some() {
            for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                if e.file_name().to_string_lossy().starts_with("hostile-") {
                    std::fs::remove_file(e.path()).unwrap();
                }
            }
            write_seeds(&dir).unwrap();
        }
        for c in corpus() {
            let path = dir.join(format!("hostile-{}", c.name));
            let bytes = std::fs::read(&path).unwrap_or_else(|e| {
                panic!("{}: {e} (run with HOSTILE_WRITE_SEEDS=1 to write the seeds)", path.display())
            });
            assert_eq!(bytes[0], 0);
            assert_eq!(&bytes[1..], c.frame.as_slice(), "{} is stale (HOSTILE_WRITE_SEEDS=1 rewrites it)", c.name);
        }
    }
}
