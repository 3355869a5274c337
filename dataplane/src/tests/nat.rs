//! Tests of NAT44 in the pipeline: the Pipeline stage with a worker's cache, and
//! the mapping core answering its misses, exchanging the same messages as
//! on the rings (`nat::msg`), on plain buffers.
//!
//! Set-up: the Pipeline fixture (port 0 inside, port 1 outside, 203.0.113.0/24 via
//! the gateway on port 1), NAT with port 0 inside, port 1 outside, pool
//! 100.64.100.1-2, small tables.

use std::net::Ipv4Addr;
use std::sync::Arc;

use crate::fib::neigh::{NeighborState, NeighborTable, NeighborWriter};
use crate::nat::cache::FlowCache;
use crate::nat::fast::{cache_timing, NatPlan, NatWorker, Role};
use crate::nat::mapper::{Mapper, NatStats};
use crate::nat::msg::{Answer, ANSWER_LEN};
use crate::nat::translate::tests::{assert_checksums_canonical, build as pk};
use crate::nat::translate::{self, tcp_flags, FlowKey, Proto};
use crate::nat::{Filtering, NatConfig, NatEvent};
use crate::pipeline::{HandOff, PacketFlags, Pipeline, Verdict, WorkerCtx};
use crate::srv6::Srv6Config;
use crate::stats::{DropReason, PuntReason};
use crate::tests::l3::fixture::*;
use netwire::ethernet;
use netwire::{PacketBuf, VecBuf};

const POOL: [Ipv4Addr; 2] = [Ipv4Addr::new(100, 64, 100, 1), Ipv4Addr::new(100, 64, 100, 2)];
/// A second inside host.
const HOST2_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 3);
const HOST2_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x01, 0x03];
const REMOTE2_V4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 8);

fn config(filtering: Filtering) -> NatConfig {
    NatConfig {
        pool: POOL.to_vec(),
        ports_per_block: 64,
        blocks_per_subscriber_max: 1,
        subscribers_max: 16,
        blocks_max: 64,
        port_quarantine_max: 256,
        mappings_max: 256,
        sessions_max: 512,
        filtering,
        udp_timeout_ms: 10_000,
        tcp_transitory_timeout_ms: 10_000,
        icmp_timeout_ms: 10_000,
        ..NatConfig::default()
    }
}

struct Rig {
    l3: Arc<Pipeline>,
    writer: NeighborWriter,
    ws: WorkerCtx,
    mapper: Mapper<Vec<NatEvent>>,
    config: NatConfig,
    now: u64,
}

/// What happened to one frame.
struct Out {
    verdict: Verdict,
    frame: Vec<u8>,
    /// The worker asked the mapping core.
    asked: bool,
    punt_arg: u32,
}

impl Out {
    fn ip(&self) -> &[u8] {
        &self.frame[ethernet::HEADER_LEN..]
    }

    fn key(&self) -> FlowKey {
        translate::flow_key(self.ip()).expect("a NAT-able packet")
    }
}

impl Rig {
    fn new(filtering: Filtering) -> Rig {
        let config = config(filtering);
        let (table, mut writer) = NeighborTable::new(64);
        let plan = NatPlan { roles: vec![Role::Inside, Role::Outside], pool: config.pool.clone() };
        let l3 =
            Arc::new(Pipeline::with_nat(ports(1500), &routes(), &Srv6Config::default(), Some(plan), table).unwrap());
        resolve_all(&mut writer);
        writer.set(IN, v4(HOST2_V4), HOST2_MAC, NeighborState::Reachable, 0).unwrap();
        let ws = Self::worker_state(&l3, &config);
        let mapper = Mapper::new(&config, Vec::new(), Arc::new(NatStats::default()));
        Rig { l3, writer, ws, mapper, config, now: 1 }
    }

    fn worker_state(l3: &Pipeline, config: &NatConfig) -> WorkerCtx {
        let mut ws = WorkerCtx::scratch(l3);
        let min = config.udp_timeout_ms.min(config.icmp_timeout_ms).min(config.tcp_transitory_timeout_ms);
        let (idle, report) = cache_timing(min);
        ws.nat = Some(Box::new(NatWorker::new(FlowCache::new(1024, idle, report, 5))));
        ws
    }

    /// Another worker: same tables and mapping core, an empty cache.
    fn other_worker(&self) -> WorkerCtx {
        Self::worker_state(&self.l3, &self.config)
    }

    fn send(&mut self, frame: Vec<u8>, in_port: u16) -> Out {
        let mut ws = std::mem::replace(&mut self.ws, WorkerCtx::scratch(&self.l3));
        let out = self.send_on(&mut ws, frame, in_port);
        self.ws = ws;
        out
    }

    /// The worker loop for one frame: process; on a miss the mapping core
    /// answers and the worker installs the answer and routes the packet.
    fn send_on(&mut self, ws: &mut WorkerCtx, frame: Vec<u8>, in_port: u16) -> Out {
        let mut buf = VecBuf::from_frame(&frame, in_port);
        ws.nat.as_mut().unwrap().now_ms = self.now;
        let mut verdict = self.l3.process(&mut buf, in_port, ws);
        let mut asked = false;
        if let Verdict::HandOff(HandOff::NatMapper(kind)) = verdict {
            asked = true;
            match self.mapper.request(&mut buf, kind.tag(), self.now) {
                Err(e) => verdict = Verdict::Drop(e.drop_reason()),
                Ok(()) => {
                    let answer = Answer::decode(buf.data()).expect("answer header");
                    assert!(buf.adj(ANSWER_LEN));
                    ws.nat.as_mut().unwrap().install_for(&answer, &buf.data()[ethernet::HEADER_LEN..]);
                    verdict = self.l3.resume(&mut buf, in_port, PacketFlags::NAT_DONE, ws);
                }
            }
        }
        let touches: Vec<_> = ws.nat.as_mut().unwrap().touches.drain(..).collect();
        self.mapper.touches(touches.into_iter());
        Out { verdict, frame: buf.to_vec(), asked, punt_arg: ws.meta.punt_arg }
    }
}

fn udp_from(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> Vec<u8> {
    pk::ip(src, dst, 17, &[], &pk::udp(src, dst, sport, dport, b"payload", false))
}

fn tcp_from(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, flags: u8) -> Vec<u8> {
    pk::ip(src, dst, 6, &[], &pk::tcp(src, dst, sport, dport, flags, b"data"))
}

fn from_inside(ip: &[u8]) -> Vec<u8> {
    frame4(IN_MAC, HOST_MAC, ip)
}

fn from_outside(ip: &[u8]) -> Vec<u8> {
    frame4(OUT_MAC, GW_MAC, ip)
}

#[test]
fn outbound_udp_is_translated_then_hits_the_cache() {
    let mut rig = Rig::new(Filtering::EndpointIndependent);
    let ip = udp_from(HOST_V4, 40000, REMOTE_V4, 53);
    let first = rig.send(from_inside(&ip), IN);
    assert_eq!(first.verdict, Verdict::Forward(OUT));
    assert!(first.asked, "a miss goes to the mapping core");
    let k = first.key();
    assert!(POOL.contains(&k.src), "source is a pool address: {}", k.src);
    assert!(k.sport >= 1024);
    assert_eq!((k.dst, k.dport), (REMOTE_V4, 53));
    assert_eq!(&first.frame[0..6], &GW_MAC, "to the gateway");
    assert_eq!(&first.frame[6..12], &OUT_MAC);
    assert_eq!(first.ip()[8], 63, "TTL decremented once");
    assert_checksums_canonical(first.ip());
    assert_eq!(&first.ip()[28..], b"payload");

    let second = rig.send(from_inside(&ip), IN);
    assert_eq!(second.verdict, Verdict::Forward(OUT));
    assert!(!second.asked, "the second packet hits the worker's cache");
    assert_eq!(second.frame, first.frame);
    assert_eq!(rig.mapper.table().session_count(), 1);
}

#[test]
fn return_traffic_reaches_the_subscriber_even_on_another_worker() {
    let mut rig = Rig::new(Filtering::EndpointIndependent);
    let out = rig.send(from_inside(&udp_from(HOST_V4, 40000, REMOTE_V4, 53)), IN);
    let public = out.key();
    let reply = udp_from(REMOTE_V4, 53, public.src, public.sport);
    // Same worker: the answer installed the inbound entry too.
    let back = rig.send(from_outside(&reply), OUT);
    assert_eq!(back.verdict, Verdict::Forward(IN));
    assert!(!back.asked);
    assert_eq!((back.key().dst, back.key().dport), (HOST_V4, 40000));
    assert_eq!((back.key().src, back.key().sport), (REMOTE_V4, 53));
    assert_eq!(&back.frame[0..6], &HOST_MAC);
    assert_checksums_canonical(back.ip());
    // A worker that never saw the flow asks the mapping core: not dropped.
    let mut other = rig.other_worker();
    let back2 = rig.send_on(&mut other, from_outside(&reply), OUT);
    assert_eq!(back2.verdict, Verdict::Forward(IN));
    assert!(back2.asked);
    assert_eq!(back2.frame, back.frame);
}

#[test]
fn mapping_is_endpoint_independent() {
    let mut rig = Rig::new(Filtering::EndpointIndependent);
    let a = rig.send(from_inside(&udp_from(HOST_V4, 40000, REMOTE_V4, 53)), IN).key();
    let b = rig.send(from_inside(&udp_from(HOST_V4, 40000, REMOTE2_V4, 123)), IN).key();
    assert_eq!((a.src, a.sport), (b.src, b.sport), "one inside endpoint, one public endpoint");
    let c = rig.send(from_inside(&udp_from(HOST_V4, 40001, REMOTE_V4, 53)), IN).key();
    assert_eq!(c.src, a.src, "paired pooling: one public address per subscriber");
    assert_ne!(c.sport, a.sport);
    assert_eq!(rig.mapper.table().mappings(), 2);
    assert_eq!(rig.mapper.table().session_count(), 3);
}

#[test]
fn unsolicited_inbound_is_dropped_and_filtering_is_applied() {
    let mut rig = Rig::new(Filtering::AddressDependent);
    let none = rig.send(from_outside(&udp_from(REMOTE_V4, 53, POOL[0], 5000)), OUT);
    assert_eq!(none.verdict, Verdict::Drop(DropReason::NatNoMapping));
    let public = rig.send(from_inside(&udp_from(HOST_V4, 40000, REMOTE_V4, 53)), IN).key();
    // Address-dependent: the same remote address from another port is let in...
    let same_addr = rig.send(from_outside(&udp_from(REMOTE_V4, 54, public.src, public.sport)), OUT);
    assert_eq!(same_addr.verdict, Verdict::Forward(IN));
    // ...another remote address is not.
    let other = rig.send(from_outside(&udp_from(REMOTE2_V4, 53, public.src, public.sport)), OUT);
    assert_eq!(other.verdict, Verdict::Drop(DropReason::NatFiltered));
    assert_eq!(rig.mapper.stats().drops.get(DropReason::NatFiltered), 1);

    // Endpoint-independent filtering lets any remote in.
    let mut eif = Rig::new(Filtering::EndpointIndependent);
    let public = eif.send(from_inside(&udp_from(HOST_V4, 40000, REMOTE_V4, 53)), IN).key();
    let in2 = eif.send(from_outside(&udp_from(REMOTE2_V4, 53, public.src, public.sport)), OUT);
    assert_eq!(in2.verdict, Verdict::Forward(IN));
    assert_eq!(in2.key().dst, HOST_V4);
}

#[test]
fn outside_cannot_reach_inside_addresses_directly() {
    let mut rig = Rig::new(Filtering::EndpointIndependent);
    let direct = rig.send(from_outside(&udp_from(REMOTE_V4, 53, HOST_V4, 40000)), OUT);
    assert_eq!(direct.verdict, Verdict::Drop(DropReason::NatNoMapping));
}

#[test]
fn ping_through_the_nat() {
    let mut rig = Rig::new(Filtering::EndpointIndependent);
    let req = pk::ip(HOST_V4, REMOTE_V4, 1, &[], &pk::echo(8, 0x1234, 1, b"ping"));
    let out = rig.send(from_inside(&req), IN);
    assert_eq!(out.verdict, Verdict::Forward(OUT));
    let k = out.key();
    assert_eq!(k.proto, Proto::Icmp);
    assert!(POOL.contains(&k.src));
    assert_checksums_canonical(out.ip());
    let reply = pk::ip(REMOTE_V4, k.src, 1, &[], &pk::echo(0, k.sport, 1, b"ping"));
    let back = rig.send(from_outside(&reply), OUT);
    assert_eq!(back.verdict, Verdict::Forward(IN));
    assert_eq!(back.key().dst, HOST_V4);
    assert_eq!(back.key().sport, 0x1234, "the subscriber's own identifier");
    assert_checksums_canonical(back.ip());
}

#[test]
fn icmp_errors_are_translated_both_ways() {
    let mut rig = Rig::new(Filtering::EndpointIndependent);
    let out = rig.send(from_inside(&udp_from(HOST_V4, 40000, REMOTE_V4, 53)), IN);
    let public = out.key();
    // The server: port unreachable, quoting the translated packet.
    let quote = out.ip()[..28].to_vec();
    let err = pk::ip(REMOTE_V4, public.src, 1, &[], &pk::icmp_error(3, 3, &quote));
    let sessions = rig.mapper.table().session_count();
    let back = rig.send(from_outside(&err), OUT);
    assert_eq!(back.verdict, Verdict::Forward(IN));
    let ip = back.ip();
    assert_eq!(&ip[16..20], &HOST_V4.octets(), "outer destination");
    let quoted = &ip[28..];
    assert_eq!(&quoted[12..16], &HOST_V4.octets(), "quoted source");
    assert_eq!(u16::from_be_bytes([quoted[20], quoted[21]]), 40000, "quoted source port");
    assert_checksums_canonical(ip);
    assert_eq!(rig.mapper.table().session_count(), sessions, "errors create nothing");

    // The subscriber refuses a packet from the server: its error goes out
    // with the public endpoint.
    let inbound = rig.send(from_outside(&udp_from(REMOTE_V4, 53, public.src, public.sport)), OUT);
    let quote = inbound.ip()[..28].to_vec();
    let err = pk::ip(HOST_V4, REMOTE_V4, 1, &[], &pk::icmp_error(3, 3, &quote));
    let outb = rig.send(from_inside(&err), IN);
    assert_eq!(outb.verdict, Verdict::Forward(OUT));
    let ip = outb.ip();
    assert_eq!(&ip[12..16], &public.src.octets(), "outer source is the public address");
    let quoted = &ip[28..];
    assert_eq!(&quoted[16..20], &public.src.octets(), "quoted destination");
    assert_eq!(u16::from_be_bytes([quoted[22], quoted[23]]), public.sport);
    assert_checksums_canonical(ip);
}

#[test]
fn ttl_and_mtu_are_checked_before_translation() {
    let mut rig = Rig::new(Filtering::EndpointIndependent);
    let mut ip = udp_from(HOST_V4, 40000, REMOTE_V4, 53);
    ip[8] = 1;
    let fix = |ip: &mut Vec<u8>| {
        ip[10..12].fill(0);
        let c = netwire::checksum::checksum(&ip[..20]);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
    };
    fix(&mut ip);
    let frame = from_inside(&ip);
    let out = rig.send(frame.clone(), IN);
    assert_eq!(out.verdict, Verdict::Punt(PuntReason::TtlExpired));
    assert!(!out.asked);
    assert_eq!(out.frame, frame, "the control core sees the untranslated packet");
    assert_eq!(rig.mapper.table().session_count(), 0);
}

#[test]
fn tcp_through_the_nat_and_hairpin() {
    let mut rig = Rig::new(Filtering::EndpointIndependent);
    // Subscriber 2 listens behind its public endpoint (it opened it).
    let two = rig.send(frame4(IN_MAC, HOST2_MAC, &tcp_from(HOST2_V4, 8080, REMOTE_V4, 80, tcp_flags::SYN)), IN);
    assert_eq!(two.verdict, Verdict::Forward(OUT));
    let pub2 = two.key();
    // Subscriber 1 connects to it through the public address: hairpin.
    let syn = tcp_from(HOST_V4, 50000, pub2.src, pub2.sport, tcp_flags::SYN);
    let hp = rig.send(from_inside(&syn), IN);
    assert_eq!(hp.verdict, Verdict::Forward(IN), "back out of the inside port");
    assert!(hp.asked);
    let k = hp.key();
    assert_eq!((k.dst, k.dport), (HOST2_V4, 8080));
    assert!(POOL.contains(&k.src), "subscriber 2 sees subscriber 1's public endpoint");
    assert_eq!(&hp.frame[0..6], &HOST2_MAC);
    assert_checksums_canonical(hp.ip());
    // The answer from subscriber 2 hairpins back.
    let synack = tcp_from(HOST2_V4, 8080, k.src, k.sport, tcp_flags::SYN | tcp_flags::ACK);
    let back = rig.send(frame4(IN_MAC, HOST2_MAC, &synack), IN);
    assert_eq!(back.verdict, Verdict::Forward(IN));
    assert_eq!((back.key().dst, back.key().dport), (HOST_V4, 50000));
    assert_eq!((back.key().src, back.key().sport), (pub2.src, pub2.sport));
    // Further packets hit the cache both ways.
    let again = rig.send(from_inside(&tcp_from(HOST_V4, 50000, pub2.src, pub2.sport, tcp_flags::ACK)), IN);
    assert_eq!(again.verdict, Verdict::Forward(IN));
    assert!(!again.asked);
}

#[test]
fn per_subscriber_limit_does_not_hurt_others() {
    let mut rig = Rig::new(Filtering::EndpointIndependent);
    // One block of 64 ports per subscriber.
    for p in 0..64u16 {
        let v = rig.send(from_inside(&udp_from(HOST_V4, 10000 + p, REMOTE_V4, 53)), IN).verdict;
        assert_eq!(v, Verdict::Forward(OUT), "port {p}");
    }
    let over = rig.send(from_inside(&udp_from(HOST_V4, 20000, REMOTE_V4, 53)), IN);
    assert_eq!(over.verdict, Verdict::Drop(DropReason::NatSubscriberLimit));
    // Existing flows go on; another subscriber is served.
    assert_eq!(rig.send(from_inside(&udp_from(HOST_V4, 10000, REMOTE_V4, 53)), IN).verdict, Verdict::Forward(OUT));
    let other = rig.send(frame4(IN_MAC, HOST2_MAC, &udp_from(HOST2_V4, 20000, REMOTE_V4, 53)), IN);
    assert_eq!(other.verdict, Verdict::Forward(OUT));
    rig.mapper.publish();
    assert_eq!(rig.mapper.stats().subscriber_limit_hits.get(), 1);
}

#[test]
fn neighbor_miss_after_translation_is_rerun_without_translating_again() {
    let mut rig = Rig::new(Filtering::EndpointIndependent);
    rig.writer.set_state(OUT, v4(GW_V4), NeighborState::Incomplete, 0);
    let out = rig.send(from_inside(&udp_from(HOST_V4, 40000, REMOTE_V4, 53)), IN);
    assert_eq!(out.verdict, Verdict::Punt(PuntReason::NeighborMiss));
    assert!(PacketFlags::from_bits(out.punt_arg).contains(PacketFlags::NAT_DONE));
    let translated = out.key();
    assert!(POOL.contains(&translated.src));
    // The control core (no NAT state) re-runs it once the gateway is known.
    rig.writer.set(OUT, v4(GW_V4), GW_MAC, NeighborState::Reachable, 0).unwrap();
    let mut control = WorkerCtx::scratch(&rig.l3);
    let mut frame = out.frame.clone();
    let mut buf = VecBuf::from_frame(&frame, IN);
    let v = rig.l3.rerun(&mut buf, IN, out.punt_arg, &mut control);
    assert_eq!(v, Verdict::Forward(OUT));
    frame = buf.to_vec();
    assert_eq!(translate::flow_key(&frame[ethernet::HEADER_LEN..]).unwrap(), translated);
    assert_eq!(&frame[0..6], &GW_MAC);
}

#[test]
fn idle_session_times_out_and_a_new_packet_asks_again() {
    let mut rig = Rig::new(Filtering::EndpointIndependent);
    let ip = udp_from(HOST_V4, 40000, REMOTE_V4, 53);
    rig.send(from_inside(&ip), IN);
    // Traffic every 2 s keeps it alive past the 10 s timeout.
    for _ in 0..10 {
        rig.now += 2_000;
        assert!(!rig.send(from_inside(&ip), IN).asked);
        rig.mapper.tick(rig.now, 100);
        assert_eq!(rig.mapper.table().session_count(), 1);
    }
    // Silence for the timeout: the mapping core retires it...
    rig.now += 10_001;
    let expired = rig.mapper.tick(rig.now, 100);
    assert_eq!((expired.sessions, expired.mappings), (1, 1));
    assert!(rig
        .mapper
        .sink()
        .iter()
        .any(|e| matches!(e, NatEvent::Mapping(m) if m.kind == crate::nat::session::MappingEventKind::Retired)));
    // ...and the worker no longer trusts its entry.
    let again = rig.send(from_inside(&ip), IN);
    assert!(again.asked);
    assert_eq!(again.verdict, Verdict::Forward(OUT));
    assert_eq!(rig.mapper.table().session_count(), 1);
}

#[test]
fn traffic_not_crossing_the_nat_is_routed_as_before() {
    let mut rig = Rig::new(Filtering::EndpointIndependent);
    // Inside to inside: not translated.
    let ip = udp_from(HOST_V4, 1, HOST2_V4, 2);
    let v = rig.send(from_inside(&ip), IN);
    assert_eq!(v.verdict, Verdict::Forward(IN));
    assert_eq!(v.key().src, HOST_V4);
    // Ping to the appliance's own outside address from outside: answered.
    let ping = pk::ip(REMOTE_V4, OUT_V4, 1, &[], &pk::echo(8, 7, 1, b"x"));
    assert_eq!(rig.send(from_outside(&ping), OUT).verdict, Verdict::Forward(OUT));
    assert_eq!(rig.mapper.table().session_count(), 0);
    // Unsupported protocols to the pool are dropped and counted.
    let gre = pk::ip(REMOTE_V4, POOL[0], 47, &[], &[0u8; 8]);
    assert_eq!(rig.send(from_outside(&gre), OUT).verdict, Verdict::Drop(DropReason::NatUnsupportedProtocol));
}

#[test]
fn pool_overlapping_a_port_address_is_refused() {
    let (table, _w) = NeighborTable::new(8);
    let plan = NatPlan { roles: vec![Role::Inside, Role::Outside], pool: vec![OUT_V4] };
    let err = Pipeline::with_nat(ports(1500), &routes(), &Srv6Config::default(), Some(plan), table).err().unwrap();
    assert!(err.to_string().contains("is a port address"), "{err}");
}

// ---- Fragments: virtual reassembly (RFC 4787 REQ-14) --------------------------------

/// Splits a whole IPv4 packet (20-byte header) into fragments of at most
/// `chunk` data octets (a multiple of 8), DF clear, identification `ident`.
fn fragments(ip: &[u8], chunk: usize, ident: u16) -> Vec<Vec<u8>> {
    let data = &ip[20..];
    let mut out = Vec::new();
    let mut offset = 0;
    while offset < data.len() {
        let end = (offset + chunk).min(data.len());
        let mut f = ip[..20].to_vec();
        f.extend_from_slice(&data[offset..end]);
        let mut p = netwire::ipv4::Packet::new_unchecked(&mut f[..]);
        p.set_total_len((20 + end - offset) as u16);
        p.set_ident(ident);
        p.set_dont_frag(false);
        p.set_more_frags(end < data.len());
        p.set_frag_offset_bytes(offset as u16);
        p.fill_checksum();
        out.push(f);
        offset = end;
    }
    out
}

/// Reassembles forwarded fragments (frames) into the IPv4 datagram.
fn reassemble(frames: &[Vec<u8>]) -> Vec<u8> {
    let mut parts: Vec<(u16, &[u8])> = frames
        .iter()
        .map(|f| {
            let p = netwire::ipv4::Packet::new_checked(&f[ethernet::HEADER_LEN..]).unwrap();
            assert!(p.verify_checksum(), "a fragment's header checksum");
            (p.frag_offset_bytes(), &f[ethernet::HEADER_LEN + 20..ethernet::HEADER_LEN + usize::from(p.total_len())])
        })
        .collect();
    parts.sort_by_key(|p| p.0);
    let mut ip = frames[0][ethernet::HEADER_LEN..ethernet::HEADER_LEN + 20].to_vec();
    for (_, d) in &parts {
        ip.extend_from_slice(d);
    }
    let mut p = netwire::ipv4::Packet::new_unchecked(&mut ip[..]);
    p.set_frag_offset_bytes(0);
    p.set_more_frags(false);
    let len = p.as_bytes().len() as u16;
    p.set_total_len(len);
    p.fill_checksum();
    ip
}

impl Rig {
    /// The worker loop with held fragments: sends `frame`, then runs again
    /// whatever the fragment table released; returns every frame forwarded
    /// and the drops.
    fn send_held(&mut self, held: &mut Vec<Option<(Vec<u8>, u16)>>, frame: Vec<u8>, port: u16) -> Vec<Out> {
        let mut outs = Vec::new();
        let mut queue = vec![(frame, port)];
        while let Some((f, p)) = queue.pop() {
            let out = self.send(f, p);
            if let Verdict::HandOff(HandOff::NatFragment(slot)) = out.verdict {
                let slot = usize::from(slot);
                if held.len() <= slot {
                    held.resize(slot + 1, None);
                }
                assert!(held[slot].replace((out.frame.clone(), p)).is_none(), "slot {slot} handed out twice");
            } else {
                outs.push(out);
            }
            let nw = self.ws.nat.as_mut().unwrap();
            while let Some(slot) = nw.frags.pop_released() {
                queue.push(held[usize::from(slot)].take().expect("a released slot holds a fragment"));
            }
        }
        outs
    }
}

/// A UDP datagram of 3000 octets from the host, cut into 3 fragments.
fn udp_datagram_fragments(ident: u16) -> (Vec<u8>, Vec<Vec<u8>>) {
    let payload: Vec<u8> = (0..3000u32).map(|i| (i * 31 % 251) as u8).collect();
    let ip = pk::ip(HOST_V4, REMOTE_V4, 17, &[], &pk::udp(HOST_V4, REMOTE_V4, 40000, 53, &payload, false));
    let frags = fragments(&ip, 1480, ident);
    assert_eq!(frags.len(), 3);
    (ip, frags)
}

/// The translated datagram checks end to end: same payload, the public
/// source, a UDP checksum right for the translated pseudo-header.
fn check_translated_datagram(orig: &[u8], out: &[Out]) -> (Ipv4Addr, u16) {
    let frames: Vec<Vec<u8>> = out.iter().map(|o| o.frame.clone()).collect();
    for o in out {
        assert_eq!(o.verdict, Verdict::Forward(OUT));
    }
    let ip = reassemble(&frames);
    let p = netwire::ipv4::Packet::new_checked(&ip[..]).unwrap();
    assert!(POOL.contains(&p.src_addr()), "public source: {}", p.src_addr());
    assert_eq!(p.dst_addr(), REMOTE_V4);
    assert_eq!(&ip[28..], &orig[28..], "payload");
    assert!(netwire::checksum::verify_v4(p.src_addr(), p.dst_addr(), 17, &ip[20..]), "UDP checksum after NAT");
    (p.src_addr(), u16::from_be_bytes([ip[20], ip[21]]))
}

#[test]
fn fragments_in_order_follow_the_first_ones_mapping() {
    let mut rig = Rig::new(Filtering::EndpointIndependent);
    let mut held = Vec::new();
    let (ip, frags) = udp_datagram_fragments(0x5151);
    let mut out = Vec::new();
    for f in &frags {
        out.extend(rig.send_held(&mut held, from_inside(f), IN));
    }
    assert_eq!(out.len(), 3);
    assert!(out[0].asked, "the first fragment asked the mapping core");
    check_translated_datagram(&ip, &out);
    // A second datagram of the flow: the first fragment hits the cache.
    let (ip2, frags2) = udp_datagram_fragments(0x5152);
    let out2: Vec<Out> = frags2.iter().flat_map(|f| rig.send_held(&mut held, from_inside(f), IN)).collect();
    assert!(!out2[0].asked);
    check_translated_datagram(&ip2, &out2);
    let stats = *rig.ws.nat.as_ref().unwrap().frags.stats();
    assert_eq!((stats.recorded, stats.rewritten, stats.held), (2, 4, 0));
}

#[test]
fn fragments_out_of_order_are_held_until_the_first_one() {
    let mut rig = Rig::new(Filtering::EndpointIndependent);
    let mut held = Vec::new();
    let (ip, frags) = udp_datagram_fragments(0x6161);
    // Last, middle: held; nothing leaves.
    assert!(rig.send_held(&mut held, from_inside(&frags[2]), IN).is_empty());
    assert!(rig.send_held(&mut held, from_inside(&frags[1]), IN).is_empty());
    // The first fragment: translated (via the mapping core), and the held ones follow.
    let out = rig.send_held(&mut held, from_inside(&frags[0]), IN);
    assert_eq!(out.len(), 3);
    let (public, public_port) = check_translated_datagram(&ip, &out);
    // The reply, fragmented too and out of order, reaches the host.
    let payload: Vec<u8> = (0..2000u32).map(|i| i as u8).collect();
    let reply = pk::ip(REMOTE_V4, public, 17, &[], &pk::udp(REMOTE_V4, public, 53, public_port, &payload, false));
    let rf = fragments(&reply, 1000, 0x7070);
    assert!(rig.send_held(&mut held, from_outside(&rf[1]), OUT).is_empty());
    let mut back = rig.send_held(&mut held, from_outside(&rf[0]), OUT);
    back.extend(rig.send_held(&mut held, from_outside(&rf[2]), OUT));
    assert_eq!(back.len(), 3);
    let frames: Vec<Vec<u8>> = back.iter().map(|o| o.frame.clone()).collect();
    let ip = reassemble(&frames);
    let p = netwire::ipv4::Packet::new_checked(&ip[..]).unwrap();
    assert_eq!((p.src_addr(), p.dst_addr()), (REMOTE_V4, HOST_V4));
    assert_eq!(u16::from_be_bytes([ip[22], ip[23]]), 40000);
    assert!(netwire::checksum::verify_v4(REMOTE_V4, HOST_V4, 17, &ip[20..]));
    assert!(back.iter().all(|o| o.verdict == Verdict::Forward(IN)));
}

#[test]
fn held_fragments_are_bounded_and_expire() {
    let mut rig = Rig::new(Filtering::EndpointIndependent);
    let cfg = crate::nat::frag::FragConfig { datagrams_max: 2, held_max: 2, timeout_ms: 500 };
    rig.ws.nat.as_mut().unwrap().frags = crate::nat::frag::FragTable::new(cfg);
    let mut held = Vec::new();
    let later = |ident| udp_datagram_fragments(ident).1[1].clone();
    assert!(rig.send_held(&mut held, from_inside(&later(1)), IN).is_empty());
    assert!(rig.send_held(&mut held, from_inside(&later(2)), IN).is_empty());
    // A third held fragment: no room.
    let out = rig.send_held(&mut held, from_inside(&later(3)), IN);
    assert_eq!(out[0].verdict, Verdict::Drop(DropReason::NatFragmentsFull));
    // Their first fragments never come: they expire.
    let nw = rig.ws.nat.as_mut().unwrap();
    nw.advance(10_000, 0);
    let mut expired = 0;
    while let Some(slot) = nw.frags.pop_expired() {
        assert!(held[usize::from(slot)].take().is_some());
        expired += 1;
    }
    assert_eq!(expired, 2);
    assert!(nw.frags.is_empty());
}
