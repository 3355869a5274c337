//! The pipeline's cost per packet without I/O: the same frames as
//! `scripts/bench-fwd.sh` (64-byte IPv4/UDP forwarded; NAT44 established
//! flows), run through `Pipeline::process` on one reused buffer.
//!
//! `cargo run --release -p dataplane --example pipeline_cost -- MODE PACKETS`
//! (MODE: `l3`, `l3v6` (64-byte IPv6/UDP forwarded), `tcp1500` and
//! `tcp1500partial` (a full-size IPv4/TCP segment with a complete or a
//! partial checksum), `end`, or `nat` with FLOWS=N and CACHE=entries) prints
//! ns per packet. The receiving port
//! completes partial checksums, as a port to kernel hosts does, unless
//! PARTIAL_CHECKSUMS=0 (as on a NIC or memif port). Run twice under `valgrind --tool=callgrind` with two packet counts: the
//! difference of the instruction totals divided by the difference of the
//! counts is the instructions per packet, exact and independent of what
//! else the machine is doing (the way docs/benchmarks.md compares builds).

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Instant;

use dataplane::fib::neigh::{NeighborState, NeighborTable};
use dataplane::fib::{link_local_from_mac, PortInfo, RouteSpec};
use dataplane::nat::cache::FlowCache;
use dataplane::nat::fast::{NatPlan, NatWorker, Role};
use dataplane::nat::mapper::{Mapper, NatStats};
use dataplane::nat::msg::{Answer, ANSWER_LEN};
use dataplane::nat::{NatConfig, NullSink};
use dataplane::pipeline::{HandOff, PacketFlags, Pipeline, Verdict, WorkerCtx};
use dataplane::srv6::Srv6Config;
use netwire::{ethernet, ipv4, PacketBuf, VecBuf};

const IN_MAC: [u8; 6] = [2, 0, 0, 0, 0x10, 1];
const OUT_MAC: [u8; 6] = [2, 0, 0, 0, 0x10, 2];
const GEN_MAC: [u8; 6] = [2, 0, 0, 0, 0x20, 1];

fn ports() -> Vec<PortInfo> {
    let port = |name: &str, mac, v4, v6: &str| PortInfo {
        name: name.into(),
        mac,
        mtu: 1500,
        ipv4: vec![(v4, 24)],
        ipv6: vec![(v6.parse().unwrap(), 64), (link_local_from_mac(mac), 64)],
        partial_checksums: std::env::var("PARTIAL_CHECKSUMS").map_or(true, |v| v != "0"),
    };
    vec![
        port("port0", IN_MAC, Ipv4Addr::new(192, 0, 2, 1), "2001:db8:1::1"),
        port("port1", OUT_MAC, Ipv4Addr::new(198, 51, 100, 1), "2001:db8:2::1"),
    ]
}

/// A 64-byte Ethernet frame: IPv4/UDP `src:sport` → 198.51.100.2:9.
fn frame(src: Ipv4Addr, sport: u16) -> Vec<u8> {
    let mut f = vec![0u8; 60];
    ethernet::emit_header(&mut f, netwire::MacAddr(IN_MAC), netwire::MacAddr(GEN_MAC), ethernet::EtherType::IPV4)
        .unwrap();
    let udp_len = 60 - ethernet::HEADER_LEN - ipv4::HEADER_LEN;
    let ip = &mut f[ethernet::HEADER_LEN..];
    ipv4::emit_header(ip, src, Ipv4Addr::new(198, 51, 100, 2), ipv4::Protocol::UDP, 64, udp_len).unwrap();
    let udp = &mut ip[ipv4::HEADER_LEN..];
    netwire::udp::emit_header(udp, sport, 9);
    netwire::udp::fill_checksum_v4(udp, src, Ipv4Addr::new(198, 51, 100, 2));
    f
}

/// A 64-byte Ethernet frame: IPv6/UDP 2001:db8:1::2:1024 → 2001:db8:2::2:9
/// (the smallest IPv6/UDP frame: 62 bytes, no payload).
fn frame6() -> Vec<u8> {
    let src: std::net::Ipv6Addr = "2001:db8:1::2".parse().unwrap();
    let dst: std::net::Ipv6Addr = "2001:db8:2::2".parse().unwrap();
    let mut f = vec![0u8; ethernet::HEADER_LEN + 40 + 8];
    ethernet::emit_header(&mut f, netwire::MacAddr(IN_MAC), netwire::MacAddr(GEN_MAC), ethernet::EtherType::IPV6)
        .unwrap();
    let ip = &mut f[ethernet::HEADER_LEN..];
    ip[0] = 0x60;
    ip[4..6].copy_from_slice(&8u16.to_be_bytes());
    ip[6] = 17;
    ip[7] = 64;
    ip[8..24].copy_from_slice(&src.octets());
    ip[24..40].copy_from_slice(&dst.octets());
    let udp = &mut ip[40..];
    netwire::udp::emit_header(udp, 1024, 9);
    netwire::udp::fill_checksum_v6(udp, src, dst);
    f
}

/// A 1514-byte Ethernet frame: IPv4/TCP 192.0.2.2:1024 → 198.51.100.2:9 with
/// 1460 bytes of data; its checksum complete, or `partial` as a kernel host
/// with checksum offload sends it (the pseudo-header sum only).
fn tcp_frame(partial: bool) -> Vec<u8> {
    let (src, dst) = (Ipv4Addr::new(192, 0, 2, 2), Ipv4Addr::new(198, 51, 100, 2));
    let mut f = vec![0u8; 1514];
    ethernet::emit_header(&mut f, netwire::MacAddr(IN_MAC), netwire::MacAddr(GEN_MAC), ethernet::EtherType::IPV4)
        .unwrap();
    let ip = &mut f[ethernet::HEADER_LEN..];
    ipv4::emit_header(ip, src, dst, ipv4::Protocol::TCP, 64, 1480).unwrap();
    let tcp = &mut ip[ipv4::HEADER_LEN..];
    tcp[0..2].copy_from_slice(&1024u16.to_be_bytes());
    tcp[2..4].copy_from_slice(&9u16.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = 0x18;
    for (i, b) in tcp[20..].iter_mut().enumerate() {
        *b = i as u8;
    }
    let pseudo = netwire::checksum::pseudo_header_v4(src, dst, 6, 1480);
    let full = !netwire::checksum::add(pseudo, netwire::checksum::sum(tcp));
    tcp[16..18].copy_from_slice(&(if partial { pseudo } else { full }).to_be_bytes());
    f
}

/// scripts/mkpcap.py's `end` frame (166 bytes): IPv6 + SRH (SL 1, segments
/// [2001:db8:b::1, 2001:db8:a::1]) + UDP with 64 bytes, to the End SID.
fn end_frame() -> Vec<u8> {
    let src: std::net::Ipv6Addr = "2001:db8:1::2".parse().unwrap();
    let sid: std::net::Ipv6Addr = "2001:db8:a::1".parse().unwrap();
    let last: std::net::Ipv6Addr = "2001:db8:b::1".parse().unwrap();
    let mut udp = vec![0u8; 8 + 64];
    udp[0..2].copy_from_slice(&1024u16.to_be_bytes());
    udp[2..4].copy_from_slice(&9u16.to_be_bytes());
    udp[4..6].copy_from_slice(&72u16.to_be_bytes());
    for (i, b) in udp[8..].iter_mut().enumerate() {
        *b = i as u8;
    }
    let mut ph: Vec<u8> = [src.octets(), last.octets()].concat();
    ph.extend_from_slice(&72u32.to_be_bytes());
    ph.extend_from_slice(&[0, 0, 0, 17]);
    ph.extend_from_slice(&udp);
    let mut sum: u32 = ph.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let c = !(sum as u16);
    udp[6..8].copy_from_slice(&(if c == 0 { 0xffff } else { c }).to_be_bytes());
    let mut srh = vec![17u8, 4, 4, 1, 1, 0, 0, 0];
    srh.extend_from_slice(&last.octets());
    srh.extend_from_slice(&sid.octets());
    let mut f = vec![2, 0, 0, 0, 0x10, 1, 2, 0, 0, 0, 0x10, 3, 0x86, 0xdd];
    f.extend_from_slice(&(6u32 << 28).to_be_bytes());
    f.extend_from_slice(&((srh.len() + udp.len()) as u16).to_be_bytes());
    f.extend_from_slice(&[43, 64]);
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&sid.octets());
    f.extend_from_slice(&srh);
    f.extend_from_slice(&udp);
    f
}

fn build(nat: Option<NatPlan>) -> Arc<Pipeline> {
    let (table, mut writer) = NeighborTable::new(64);
    writer.set(1, IpAddr::V4(Ipv4Addr::new(198, 51, 100, 2)), [2, 0, 0, 0, 0x30, 1], NeighborState::Static, 0).unwrap();
    let gw6: std::net::Ipv6Addr = "2001:db8:2::2".parse().unwrap();
    writer.set(1, IpAddr::V6(gw6), [2, 0, 0, 0, 0x30, 1], NeighborState::Static, 0).unwrap();
    let routes =
        vec![RouteSpec { prefix: "2001:db8:b::".parse().unwrap(), len: 48, port: 1, via: Some(IpAddr::V6(gw6)) }];
    let srv6 = Srv6Config {
        sids: vec![dataplane::srv6::SidSpec {
            sid: "2001:db8:a::1".parse().unwrap(),
            behavior: dataplane::srv6::Behavior::End,
            psp: false,
            usd: false,
            adjacency: None,
            policy: None,
        }],
        ..Srv6Config::default()
    };
    // The writer must live as long as the table is used (it owns nothing the
    // readers need, but keep it to mirror the appliance).
    std::mem::forget(writer);
    Arc::new(Pipeline::with_nat(ports(), &routes, &srv6, nat, table).unwrap())
}

/// Runs `packets` frames (round robin) and returns ns per packet and the
/// packets that went to the mapping core (a 4-way cache bucket can evict an
/// established flow: the worker then asks again, as here).
fn run(
    p: &Pipeline,
    ctx: &mut WorkerCtx,
    mut mapper: Option<&mut Mapper<NullSink>>,
    frames: &[Vec<u8>],
    packets: usize,
) -> (f64, usize) {
    let mut buf = VecBuf::from_frame(&frames[0], 0);
    let mut asked = 0;
    let t0 = Instant::now();
    for i in 0..packets {
        // Restore the frame (forwarding rewrote it).
        let f = &frames[i % frames.len()];
        let _ = buf.set_len(f.len());
        buf.data_mut().copy_from_slice(f);
        let mut v = p.process(&mut buf, 0, ctx);
        if let (Verdict::HandOff(HandOff::NatMapper(kind)), Some(m)) = (v, mapper.as_deref_mut()) {
            asked += 1;
            v = ask(p, ctx, m, &mut buf, kind.tag());
        }
        assert_eq!(v, Verdict::Forward(1), "packet {i}");
    }
    std::hint::black_box(&buf);
    (t0.elapsed().as_nanos() as f64 / packets as f64, asked)
}

/// What the worker does with a miss: the mapping core translates the
/// packet and answers with the cache entries; the packet goes on.
fn ask(p: &Pipeline, ctx: &mut WorkerCtx, mapper: &mut Mapper<NullSink>, buf: &mut VecBuf, tag: u32) -> Verdict {
    mapper.request(buf, tag, 1).expect("a mapping");
    let answer = Answer::decode(buf.data()).expect("an answer");
    assert!(buf.adj(ANSWER_LEN));
    ctx.nat.as_mut().unwrap().install(&answer);
    p.resume(buf, 0, PacketFlags::NAT_DONE, ctx)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "l3".into());
    let packets: usize = args.next().map_or(1_000_000, |n| n.parse().expect("PACKETS is a number"));
    let (ns, asked) = match mode.as_str() {
        "l3" => {
            let p = build(None);
            let frames = vec![frame(Ipv4Addr::new(192, 0, 2, 2), 1024)];
            run(&p, &mut WorkerCtx::scratch(&p), None, &frames, packets)
        }
        "l3v6" => {
            let p = build(None);
            run(&p, &mut WorkerCtx::scratch(&p), None, &[frame6()], packets)
        }
        "tcp1500" | "tcp1500partial" => {
            let p = build(None);
            run(&p, &mut WorkerCtx::scratch(&p), None, &[tcp_frame(mode == "tcp1500partial")], packets)
        }
        "end" => {
            let p = build(None);
            run(&p, &mut WorkerCtx::scratch(&p), None, &[end_frame()], packets)
        }
        "nat" => {
            let flows: usize = std::env::var("FLOWS").map_or(1024, |f| f.parse().expect("FLOWS is a number"));
            // configs/bench-nat.yaml's worker_cache_entries.
            let cache_entries: usize =
                std::env::var("CACHE").map_or(1 << 22, |f| f.parse().expect("CACHE is a number"));
            let pool: Vec<Ipv4Addr> = (1..=64).map(|i| Ipv4Addr::new(198, 51, 100, 100 + i)).collect();
            let plan = NatPlan { roles: vec![Role::Inside, Role::Outside], pool: pool.clone() };
            let p = build(Some(plan));
            // configs/bench-nat.yaml's tables.
            let cfg = NatConfig {
                pool,
                ports_per_block: 512,
                blocks_per_subscriber_max: 4,
                subscribers_max: 4096,
                blocks_max: 16384,
                mappings_max: 1 << 20,
                sessions_max: 1 << 20,
                ..NatConfig::default()
            };
            let mut mapper = Mapper::new(&cfg, NullSink, Arc::new(NatStats::default()));
            let mut ctx = WorkerCtx::scratch(&p);
            ctx.nat = Some(Box::new(NatWorker::new(FlowCache::new(cache_entries, 30_000, 1_000, 7))));
            // 1024 flows per subscriber (100.64.0.1, ...), as scripts/mkpcap.py nat.
            let frames: Vec<Vec<u8>> = (0..flows)
                .map(|i| frame(Ipv4Addr::from(0x6440_0001u32 + (i / 1024) as u32), 1024 + (i % 1024) as u16))
                .collect();
            // Set-up: every flow once (each a miss answered by the mapping core).
            run(&p, &mut ctx, Some(&mut mapper), &frames, frames.len());
            run(&p, &mut ctx, Some(&mut mapper), &frames, packets)
        }
        m => panic!("unknown mode {m} (l3, l3v6, tcp1500, tcp1500partial, end, nat)"),
    };
    println!("mode={mode} packets={packets} ns_per_packet={ns:.1} asked_mapping_core={asked}");
}
