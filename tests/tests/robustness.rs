//! A malformed packet is counted and dropped, and the appliance keeps running.
//!
//! Frames are built with scapy in h1 (an implementation independent of the appliance's own
//! `wire` module) and sent byte-exact from h1's eth0 to the appliance's inside MAC through an
//! AF_PACKET socket (scapy's `sendp` silently pads a frame the kernel refuses, which would
//! hide a runt). Run as root, serially:
//! `cargo test --release -p appliance-tests --test robustness -- --test-threads=1`.

use appliance_tests::tools::{
    iface_counter, parse_hex_frames, poll_until, scapy_python, seed_from_env, send_raw_frame, RawSend,
};
use appliance_tests::{demo_config, edit_yaml, metric_sum, output_text, Rig};
use std::collections::BTreeMap;
use std::thread::sleep;
use std::time::Duration;

const H2_V4: &str = "198.51.100.2";
const H2_V6: &str = "2001:db8:2::2";
const IN_V4: &str = "192.0.2.1";
const IN_V6: &str = "2001:db8:1::1";
const IN_MAC: &str = "02:00:00:00:01:01";

/// Every drop reason a malformed frame of this file may land on: a case must move its own
/// reason by exactly the number of frames sent, and none of the others.
const WATCHED: &[&str] = &[
    "eth_truncated",
    "eth_multicast_not_forwarded",
    "eth_unsupported_type",
    "ipv4_malformed",
    "ipv4_bad_checksum",
    "ipv4_martian_source",
    "ipv4_not_routed",
    "ipv6_malformed",
    "ipv6_martian_source",
    "ipv6_not_routed",
    "arp_invalid",
    "arp_not_for_us",
    "nd_invalid",
    "nd_not_for_us",
    "local_icmp_malformed",
    "multi_segment",
];

/// Copies of each malformed frame.
const COPIES: u32 = 3;

/// Builds the malformed frames in h1 with scapy and prints `name hex` per frame.
const BUILD_FRAMES: &str = r#"
import sys
from scapy.all import Ether, IP, IPv6, ICMP, ICMPv6EchoRequest, ICMPv6ND_NS, ICMPv6NDOptSrcLLAddr, Raw, raw
M, S = "02:00:00:00:01:01", "02:00:00:00:01:02"
H1, H2, H1_6, H2_6, IN_6 = "192.0.2.2", "198.51.100.2", "2001:db8:1::2", "2001:db8:2::2", "2001:db8:1::1"
eth4 = Ether(dst=M, src=S, type=0x0800)
eth6 = Ether(dst=M, src=S, type=0x86dd)
good4 = IP(src=H1, dst=H2) / ICMP(id=7, seq=1) / Raw(b"robustness")
frames = {}
# IPv4 header cut after 10 bytes (IHL says 5 = 20 bytes).
frames["ipv4_truncated_header"] = raw(eth4) + raw(good4)[:10]
# IPv4 with a wrong header checksum (the right one with its bits flipped).
b = bytearray(raw(good4)); b[10] ^= 0xff; b[11] ^= 0xff
frames["ipv4_bad_checksum"] = raw(eth4) + bytes(b)
# IHL 3 (12 bytes, below the 20-byte minimum).
frames["ipv4_ihl3"] = raw(eth4 / IP(src=H1, dst=H2, ihl=3) / ICMP() / Raw(b"x" * 16))
# total_len 1000 in a frame that carries 38 bytes of IP.
frames["ipv4_total_len_too_big"] = raw(eth4 / IP(src=H1, dst=H2, len=1000) / ICMP() / Raw(b"x" * 10))
# IPv6 payload_len 1000 in a frame that carries 18 bytes of payload.
frames["ipv6_payload_len_too_big"] = raw(eth6 / IPv6(src=H1_6, dst=H2_6, plen=1000) / ICMPv6EchoRequest(data=b"x" * 10))
# A 10-byte runt: not even an Ethernet header.
frames["runt_10_bytes"] = bytes.fromhex("020000000101020000000102")[:10]
# EtherType 0x88b5 (IEEE local experimental).
frames["ethertype_88b5"] = raw(Ether(dst=M, src=S, type=0x88b5) / Raw(b"\x00" * 46))
# ARP with hardware length 8: htype 1, ptype IPv4, hlen 8, plen 4, request, 8-byte addresses.
arp = bytes.fromhex("0001" "0800" "08" "04" "0001") + bytes.fromhex("0200000001020000") + bytes([192, 0, 2, 2]) \
    + bytes(8) + bytes([192, 0, 2, 1])
frames["arp_hlen8"] = raw(Ether(dst=M, src=S, type=0x0806)) + arp
# Neighbour solicitation for our own address with hop limit 64 (RFC 4861 7.1.1: must be 255).
frames["ns_hop_limit_64"] = raw(eth6 / IPv6(src=H1_6, dst=IN_6, hlim=64) / ICMPv6ND_NS(tgt=IN_6) / ICMPv6NDOptSrcLLAddr(lladdr=S))
# Martian IPv4 sources (valid headers otherwise).
frames["ipv4_src_0.0.0.0"] = raw(eth4 / IP(src="0.0.0.0", dst=H2) / ICMP() / Raw(b"martian"))
frames["ipv4_src_224.0.0.1"] = raw(eth4 / IP(src="224.0.0.1", dst=H2) / ICMP() / Raw(b"martian"))
for k, v in frames.items():
    print(k, v.hex())
"#;

/// (case, drop reason it must land on).
const CASES: &[(&str, &str)] = &[
    ("ipv4_truncated_header", "ipv4_malformed"),
    ("ipv4_bad_checksum", "ipv4_bad_checksum"),
    ("ipv4_ihl3", "ipv4_malformed"),
    ("ipv4_total_len_too_big", "ipv4_malformed"),
    ("ipv6_payload_len_too_big", "ipv6_malformed"),
    ("runt_10_bytes", "eth_truncated"),
    ("ethertype_88b5", "eth_unsupported_type"),
    ("arp_hlen8", "arp_invalid"),
    ("ns_hop_limit_64", "nd_invalid"),
    ("ipv4_src_0.0.0.0", "ipv4_martian_source"),
    ("ipv4_src_224.0.0.1", "ipv4_martian_source"),
];

fn assert_ping(rig: &Rig, ns: &str, addr: &str) {
    let (ok, out) = rig.tb.ping_output(ns, addr, &["-c", "3", "-i", "0.2", "-W", "2"]);
    assert!(ok, "ping {addr} from {ns} failed:\n{out}{}", rig.ctx());
}

fn assert_alive(rig: &mut Rig, after: &str) {
    assert!(rig.app.is_running(), "the appliance exited after {after}: {:?}{}", rig.app.try_status(), rig.ctx());
}

/// Drop counters of the watched reasons, plus the inside port's rx and the outside port's tx.
#[derive(Debug, Clone)]
struct Snap {
    drops: BTreeMap<&'static str, f64>,
    rx_in: f64,
    tx_out: f64,
    punts_arp: f64,
    punts_nd: f64,
}

fn snap(text: &str) -> Snap {
    Snap {
        drops: WATCHED.iter().map(|&r| (r, metric_sum(text, "appliance_drops_total", &[("reason", r)]))).collect(),
        rx_in: metric_sum(text, "appliance_port_rx_packets_total", &[("port", "inside")]),
        tx_out: metric_sum(text, "appliance_port_tx_packets_total", &[("port", "outside")]),
        punts_arp: metric_sum(text, "appliance_punts_total", &[("reason", "arp")]),
        punts_nd: metric_sum(text, "appliance_punts_total", &[("reason", "nd")]),
    }
}

fn build_frames(rig: &Rig) -> BTreeMap<String, Vec<u8>> {
    let py = scapy_python();
    let out = rig.tb.exec_timeout("h1", &[&py.to_string_lossy(), "-c", BUILD_FRAMES], Duration::from_secs(120));
    let text = output_text(&out);
    assert!(out.status.success(), "building frames with scapy failed ({}):\n{text}", out.status);
    let frames: BTreeMap<String, Vec<u8>> =
        parse_hex_frames(&String::from_utf8_lossy(&out.stdout)).into_iter().collect();
    for (case, _) in CASES {
        assert!(frames.contains_key(*case), "scapy built no frame {case}:\n{text}");
    }
    frames
}

#[test]
fn malformed_frames_are_counted_and_dropped() {
    let mut rig = Rig::demo("malformed");
    // Both sides resolved: nothing of the appliance's own (ARP/ND) runs during the cases.
    assert_ping(&rig, "h1", IN_V4);
    assert_ping(&rig, "h1", IN_V6);
    assert_ping(&rig, "h1", H2_V4);
    assert_ping(&rig, "h1", H2_V6);
    let frames = build_frames(&rig);
    let mut runt_refused = None;

    for &(case, reason) in CASES {
        let frame = &frames[case];
        let before = snap(&rig.app.metrics());
        match send_raw_frame(&rig.tb, "h1", "eth0", frame, COPIES) {
            RawSend::Sent => {}
            RawSend::Refused(errno) if case == "runt_10_bytes" => {
                // The kernel never puts a frame shorter than an Ethernet header on a veth
                // (dev_validate_header: EINVAL below min_header_len, even for root), so no
                // kernel host can deliver one: check that nothing reached the appliance.
                sleep(Duration::from_millis(500));
                let after = snap(&rig.app.metrics());
                assert_eq!(
                    after.drops,
                    before.drops,
                    "the kernel refused the {}-byte runt (errno {errno}), yet drop counters moved{}",
                    frame.len(),
                    rig.ctx()
                );
                runt_refused = Some(errno);
                assert_alive(&mut rig, case);
                continue;
            }
            RawSend::Refused(errno) => panic!("h1's kernel refused frame {case} (errno {errno}): {frame:02x?}"),
        }
        let want = COPIES as f64;
        let reached = poll_until(Duration::from_secs(5), Duration::from_millis(100), || {
            let s = snap(&rig.app.metrics());
            (s.drops[reason] - before.drops[reason] >= want).then_some(())
        });
        // Let anything late (a second count of the same frame) show up before comparing.
        sleep(Duration::from_millis(300));
        let m = rig.app.metrics();
        let after = snap(&m);
        assert!(
            reached.is_some() && after.drops[reason] - before.drops[reason] == want,
            "case {case}: drops{{reason={reason}}} went {} -> {} after {COPIES} frames, expected +{COPIES}\nframe: {frame:02x?}\n{m}{}",
            before.drops[reason],
            after.drops[reason],
            rig.ctx()
        );
        for (&r, &v) in &after.drops {
            if r != reason {
                assert_eq!(
                    v,
                    before.drops[r],
                    "case {case}: drops{{reason={r}}} moved too ({} -> {v}); only {reason} should\nframe: {frame:02x?}{}",
                    before.drops[r],
                    rig.ctx()
                );
            }
        }
        assert!(
            after.rx_in - before.rx_in >= want,
            "case {case}: inside rx grew by {} only, {COPIES} frames sent{}",
            after.rx_in - before.rx_in,
            rig.ctx()
        );
        assert!(
            after.tx_out - before.tx_out < want,
            "case {case}: outside tx grew by {} while {COPIES} malformed frames arrived: forwarded?{}",
            after.tx_out - before.tx_out,
            rig.ctx()
        );
        // ARP and ND are judged by the control core: they must have been punted there.
        if reason == "arp_invalid" {
            assert_eq!(after.punts_arp - before.punts_arp, want, "case {case}: punts{{reason=arp}}{}", rig.ctx());
        }
        if reason == "nd_invalid" {
            assert_eq!(after.punts_nd - before.punts_nd, want, "case {case}: punts{{reason=nd}}{}", rig.ctx());
        }
        assert_alive(&mut rig, case);
    }
    if let Some(errno) = runt_refused {
        eprintln!(
            "note: h1's kernel refused the 10-byte runt (errno {errno}); eth_truncated cannot be reached from a kernel host"
        );
    }

    // Still forwarding both ways and answering for itself.
    assert_ping(&rig, "h1", H2_V4);
    assert_ping(&rig, "h1", H2_V6);
    assert_ping(&rig, "h1", IN_V4);
    assert_alive(&mut rig, "all malformed frames");
}

/// Frames the inside port's kernel interface received vs. what the appliance counted.
#[derive(Debug, Clone, Copy)]
struct RxMark {
    kernel: f64,
    app_rx: f64,
    app_missed: f64,
}

/// Read when the link was quiet: the kernel counter is the same 200 ms before the scrape and
/// after it (a frame arriving in between, e.g. a host's neighbour probe, could be in one
/// count and not yet in the other).
fn rx_mark(rig: &Rig) -> RxMark {
    let kernel = || iface_counter(&rig.tb, "rtr", "apl-in", "rx_packets") as f64;
    let mut last = None;
    poll_until(Duration::from_secs(10), Duration::from_millis(50), || {
        let k0 = kernel();
        sleep(Duration::from_millis(200));
        let m = rig.app.metrics();
        let k1 = kernel();
        let mark = RxMark {
            kernel: k1,
            app_rx: metric_sum(&m, "appliance_port_rx_packets_total", &[("port", "inside")]),
            app_missed: metric_sum(&m, "appliance_port_rx_missed_total", &[("port", "inside")]),
        };
        last = Some(mark);
        (k0 == k1).then_some(mark)
    })
    .or(last)
    .expect("a reading")
}

/// Every frame the kernel delivered to apl-in since `from` was received by the appliance
/// (or counted as missed by the driver); `sent` of them were ours. Returns (received, missed).
fn assert_all_received(rig: &Rig, from: RxMark, sent: u64, what: &str) -> (f64, f64) {
    let mut last = from;
    let ok = poll_until(Duration::from_secs(10), Duration::from_millis(200), || {
        last = rx_mark(rig);
        let delivered = last.kernel - from.kernel;
        let counted = (last.app_rx - from.app_rx) + (last.app_missed - from.app_missed);
        (delivered >= sent as f64 && counted == delivered).then_some(())
    });
    let (delivered, rx, missed) =
        (last.kernel - from.kernel, last.app_rx - from.app_rx, last.app_missed - from.app_missed);
    assert!(
        ok.is_some(),
        "{what}: {sent} frames sent, apl-in's kernel counted {delivered}, the appliance received {rx} and missed {missed}\n{}{}",
        rig.app.metrics(),
        rig.ctx()
    );
    (rx, missed)
}

/// 2000 frames of random bytes to the appliance's MAC, with random EtherTypes and, for a
/// share of them, the IPv4/IPv6/ARP EtherTypes (so the IP and ARP parsers see garbage too).
#[test]
fn random_frame_flood_leaves_it_forwarding() {
    const N: u64 = 2000;
    let mut rig = Rig::demo("flood");
    assert_ping(&rig, "h1", H2_V4);
    assert_ping(&rig, "h1", H2_V6);
    let seed = seed_from_env("ROBUSTNESS_SEED");
    let script = format!(
        r#"
import random
from scapy.all import Ether, Raw, RandString, sendp, conf
conf.verb = 0
random.seed({seed})
frames = []
for i in range({N}):
    k = i % 5
    t = {{0: random.randrange(0x600, 0x10000), 1: random.randrange(0, 0x600), 2: 0x0800, 3: 0x86dd, 4: 0x0806}}[k]
    body = bytes(RandString(size=random.randrange(0, 1501)))
    if k == 2 and body: body = bytes([0x40 | (body[0] & 0x0f)]) + body[1:]   # version 4, random IHL
    if k == 3 and body: body = bytes([0x60 | (body[0] & 0x0f)]) + body[1:]   # version 6
    frames.append(Ether(dst="{IN_MAC}", src="02:00:00:00:01:02", type=t) / Raw(body))
sendp(frames, iface="eth0")
print("sent", len(frames))
"#
    );
    sleep(Duration::from_millis(500));
    let mark = rx_mark(&rig);
    let drops0 = metric_sum(&rig.app.metrics(), "appliance_drops_total", &[]);
    let py = scapy_python();
    let out = rig.tb.exec_timeout("h1", &[&py.to_string_lossy(), "-c", &script], Duration::from_secs(300));
    let text = output_text(&out);
    assert!(out.status.success() && text.contains(&format!("sent {N}")), "flood (seed {seed}) failed:\n{text}");
    assert_alive(&mut rig, &format!("the flood (seed {seed})"));

    // Every frame was received (or counted as missed by the driver) ...
    let (rx, missed) = assert_all_received(&rig, mark, N, &format!("flood seed {seed}"));
    sleep(Duration::from_millis(300));
    let m = rig.app.metrics();
    let drops = metric_sum(&m, "appliance_drops_total", &[]) - drops0;
    eprintln!("flood seed {seed}: inside rx +{rx}, missed +{missed}, drops +{drops}");
    // ... and accounted for as a drop (random bytes are never a valid, routable packet; a
    // frame may count twice, e.g. a no-route punt whose ICMP error is then rate-limited).
    assert!(
        drops >= rx - 20.0,
        "flood seed {seed}: {rx} frames received but drops grew by {drops} only\n{m}{}",
        rig.ctx()
    );

    assert_ping(&rig, "h1", H2_V4);
    assert_ping(&rig, "h1", H2_V6);
    assert_ping(&rig, "h1", IN_V4);
    assert_alive(&mut rig, &format!("the flood (seed {seed}) and pings"));
    let (st, log) = rig.app.stop();
    assert!(st.success(), "exit status after SIGTERM following the flood (seed {seed}): {st}\n{log}");
}

/// Mbufs in use once nothing is held for resolution any more and the rings are empty (the
/// af_packet driver keeps no mbufs in its rx rings, so this is what the pipeline holds; the
/// af_xdp driver's fill and completion rings hold a varying number).
/// Returns (in_use, pending) when in_use has come back to `baseline`, or the last values.
fn settled_in_use(rig: &Rig, baseline: f64) -> Result<f64, (f64, f64)> {
    let mut last = (f64::NAN, f64::NAN);
    poll_until(Duration::from_secs(15), Duration::from_millis(250), || {
        let m = rig.app.metrics();
        let in_use = metric_sum(&m, "appliance_mempool_in_use", &[]);
        let pending = metric_sum(&m, "appliance_pending_packets", &[]);
        last = (in_use, pending);
        (pending == 0.0 && in_use <= baseline).then_some(in_use)
    })
    .ok_or(last)
}

/// Frames with valid checksums and lengths but random contents where it hurts: TTL/hop
/// limit 0/1, IPv4 options, every ICMP/ICMPv6 type (errors quoting errors,
/// ND with bad options), extension headers, martian/multicast/link-local/unroutable
/// addresses, sources nobody answers for (neighbour resolution that fails). Checks that the
/// appliance receives every frame the kernel delivered, survives, keeps forwarding, and gives
/// back every mbuf once resolutions end. The ports are af_packet, whose driver holds no mbufs
/// (so the pool's in-use count is exact). No IPv4 fragments: that driver's socket never
/// hands them over.
#[test]
fn structured_fuzz_keeps_it_forwarding_without_leaking_mbufs() {
    const N: u64 = 1500;
    let config = edit_yaml(&demo_config(), appliance_tests::appliance::af_packet_ports);
    let mut rig = Rig::with_config("fuzz", &config);
    assert_ping(&rig, "h1", H2_V4);
    assert_ping(&rig, "h1", H2_V6);
    assert_ping(&rig, "h2", "192.0.2.2");
    assert_ping(&rig, "h2", "2001:db8:1::2");
    let baseline = {
        sleep(Duration::from_millis(500));
        metric_sum(&rig.app.metrics(), "appliance_mempool_in_use", &[])
    };
    let seed = seed_from_env("ROBUSTNESS_SEED");
    let script = format!(
        r#"
import random
from scapy.all import *
conf.verb = 0
random.seed({seed})
M, S = "{IN_MAC}", "02:00:00:00:01:02"
c = random.choice
def rb(n): return bytes(random.getrandbits(8) for _ in range(n))
V4_DST = ["192.0.2.1", "198.51.100.1", "198.51.100.2", "198.51.100.77", "192.0.2.77", "203.0.113.9",
          "224.0.0.5", "255.255.255.255", "192.0.2.255", "127.0.0.1", "0.1.2.3", "240.0.0.1"]
V4_SRC = ["192.0.2.2", "192.0.2.2", "192.0.2.99", "203.0.113.5", "198.51.100.2", "192.0.2.1"]
V6_DST = ["2001:db8:1::1", "2001:db8:2::1", "2001:db8:2::2", "2001:db8:2::77", "2001:db8:1::77", "2001:db8:99::1",
          "fe80::ff:fe00:101", "fe80::1", "ff02::1", "ff02::1:ff00:1", "ff02::2", "::1", "::"]
V6_SRC = ["2001:db8:1::2", "2001:db8:1::2", "2001:db8:1::99", "fe80::ff:fe00:102", "::", "2001:db8:99::5", "2001:db8:1::1"]
def l4v4():
    k = random.randrange(5)
    if k == 0:
        t = c([0, 3, 4, 5, 8, 8, 11, 12, 13, random.randrange(256)])
        inner = IP(src=c(V4_DST), dst=c(V4_SRC), ttl=c([1, 64])) / c([ICMP(type=c([0, 3, 8, 11])), UDP(), TCP()]) / Raw(rb(random.randrange(0, 40)))
        body = raw(inner)[:random.randrange(0, len(raw(inner)) + 1)] if t in (3, 4, 5, 11, 12) else rb(random.randrange(0, 64))
        return ICMP(type=t, code=c([0, 1, 3, 4, random.randrange(256)])) / Raw(body)
    if k == 1: return UDP(sport=random.randrange(65536), dport=c([7, 53, 33434, random.randrange(65536)])) / Raw(rb(random.randrange(0, 200)))
    if k == 2: return TCP(sport=random.randrange(65536), dport=c([22, 80, random.randrange(65536)]), flags=random.randrange(256)) / Raw(rb(random.randrange(0, 100)))
    if k == 3: return Raw(rb(random.randrange(0, 300)))
    return ICMP(type=8, id=random.randrange(65536), seq=random.randrange(65536)) / Raw(rb(random.randrange(0, 1400)))
def v4():
    ip = IP(src=c(V4_SRC), dst=c(V4_DST), ttl=c([0, 1, 2, 64, 255]), tos=random.randrange(256),
            flags=c([0, 2]), frag=0, id=random.randrange(65536),
            proto=c([None, None, None, random.randrange(256)]))
    if random.random() < 0.2: ip.options = [IPOption_NOP()] * (4 * random.randrange(1, 11))
    p = ip / l4v4()
    b = raw(p)[:1500]
    if len(b) < len(raw(p)):
        p = IP(b); p.len = None; p.chksum = None; b = raw(p)[:1500]
    if random.random() < 0.1 and len(b) < 1480: b += rb(random.randrange(1, 20))   # link-layer padding after the packet
    return raw(Ether(dst=c([M, M, M, "ff:ff:ff:ff:ff:ff", "01:00:5e:00:00:05"]), src=S, type=0x0800)) + b
def nd_opts():
    o = []
    for _ in range(random.randrange(0, 3)):
        o.append(c([raw(ICMPv6NDOptSrcLLAddr(lladdr=S)), raw(ICMPv6NDOptDstLLAddr(lladdr=S)),
                    bytes([1, 0]) + rb(6), bytes([random.randrange(256), 1]) + rb(6), bytes([1, 2]) + rb(6)]))
    return b"".join(o)
def l4v6():
    k = random.randrange(6)
    if k == 0:
        t = c([1, 2, 3, 4, 128, 128, 129, 133, 134, 135, 135, 136, 136, 137, random.randrange(256)])
        if t in (135, 136):
            m = (ICMPv6ND_NS if t == 135 else ICMPv6ND_NA)(tgt=c(V6_DST + ["2001:db8:1::1"] * 3))
            return m / Raw(nd_opts()), c([255, 255, 64, 1])
        if t in (1, 2, 3, 4):
            inner = IPv6(src=c(V6_DST), dst=c(V6_SRC)) / ICMPv6EchoRequest() / Raw(rb(random.randrange(0, 40)))
            return ICMPv6Unknown(type=t, code=random.randrange(4)) / Raw(raw(inner)[:random.randrange(0, 90)]), c([64, 255])
        return ICMPv6Unknown(type=t, code=c([0, random.randrange(256)])) / Raw(rb(random.randrange(0, 64))), c([1, 64, 255])
    if k == 1: return UDP(sport=random.randrange(65536), dport=c([53, 547, random.randrange(65536)])) / Raw(rb(random.randrange(0, 200))), c([0, 1, 64])
    if k == 2: return TCP(sport=random.randrange(65536), dport=random.randrange(65536), flags=random.randrange(256)), c([1, 64])
    if k == 3: return IPv6ExtHdrHopByHop() / ICMPv6EchoRequest() / Raw(rb(random.randrange(0, 64))), c([1, 64])
    if k == 4: return IPv6ExtHdrFragment(offset=c([0, 1]), m=c([0, 1])) / ICMPv6EchoRequest() / Raw(rb(32)), c([1, 64])
    return ICMPv6EchoRequest(id=random.randrange(65536)) / Raw(rb(random.randrange(0, 1400))), c([0, 1, 2, 64])
def v6():
    l4, hl = l4v6()
    p = IPv6(src=c(V6_SRC), dst=c(V6_DST), hlim=hl, tc=random.randrange(256), fl=random.randrange(1 << 20)) / l4
    b = raw(p)
    if len(b) > 1500: return v6()
    if random.random() < 0.1 and len(b) < 1480: b += rb(random.randrange(1, 20))
    return raw(Ether(dst=c([M, M, M, "33:33:00:00:00:01", "33:33:ff:00:00:01"]), src=S, type=0x86dd)) + b
def arp():
    p = ARP(op=c([1, 2, 3, random.randrange(65536)]), hwsrc=c([S, "ff:ff:ff:ff:ff:ff", "00:00:00:00:00:00", "01:00:5e:00:00:01"]),
            psrc=c(V4_SRC + ["0.0.0.0", "198.51.100.9"]), pdst=c(V4_DST), hwdst=c(["00:00:00:00:00:00", M]))
    return raw(Ether(dst=c([M, "ff:ff:ff:ff:ff:ff"]), src=S, type=0x0806) / p)
s = conf.L2socket(iface="eth0")
sent = 0
for i in range({N}):
    f = c([v4, v4, v6, v6, arp])()
    s.send(f)
    sent += 1
s.close()
print("sent", sent)
"#
    );
    let mark = rx_mark(&rig);
    let py = scapy_python();
    let out = rig.tb.exec_timeout("h1", &[&py.to_string_lossy(), "-c", &script], Duration::from_secs(300));
    let text = output_text(&out);
    assert!(out.status.success() && text.contains(&format!("sent {N}")), "fuzz (seed {seed}) failed:\n{text}");
    assert_alive(&mut rig, &format!("the structured fuzz (seed {seed})"));
    let (rx, missed) = assert_all_received(&rig, mark, N, &format!("fuzz seed {seed}"));
    eprintln!("fuzz seed {seed}: inside rx +{rx}, missed +{missed}");

    match settled_in_use(&rig, baseline) {
        Ok(v) => eprintln!("fuzz seed {seed}: mbufs in use {baseline} before, {v} after"),
        Err((in_use, pending)) => panic!(
            "fuzz seed {seed}: {in_use} mbufs still in use 15 s after the fuzz (baseline {baseline}), {pending} packets pending: leaked?\n{}{}",
            rig.app.metrics(),
            rig.ctx()
        ),
    }
    // The fuzz sends from h1's port and may have spoofed ARP/ND for h1's own addresses with
    // random link-layer addresses (legitimately learned: RFC 826, RFC 4861 7.2.3). h1 then
    // announces itself again (gratuitous ARP, unsolicited NA with override), as a host does
    // after a link change; forwarding must work at once after that.
    let announce = r#"
from scapy.all import *
conf.verb = 0
mac = get_if_hwaddr("eth0")
sendp(Ether(dst="ff:ff:ff:ff:ff:ff", src=mac) / ARP(op=2, hwsrc=mac, psrc="192.0.2.2", hwdst="ff:ff:ff:ff:ff:ff", pdst="192.0.2.2"), iface="eth0")
sendp(Ether(dst="33:33:00:00:00:01", src=mac) / IPv6(src="2001:db8:1::2", dst="ff02::1", hlim=255)
      / ICMPv6ND_NA(tgt="2001:db8:1::2", R=0, S=0, O=1) / ICMPv6NDOptDstLLAddr(lladdr=mac), iface="eth0")
print("announced")
"#;
    let out = rig.tb.exec_timeout("h1", &[&py.to_string_lossy(), "-c", announce], Duration::from_secs(60));
    assert!(output_text(&out).contains("announced"), "{}", output_text(&out));
    sleep(Duration::from_millis(200));
    assert_ping(&rig, "h1", H2_V4);
    assert_ping(&rig, "h1", H2_V6);
    assert_ping(&rig, "h2", "192.0.2.2");
    assert_ping(&rig, "h1", IN_V4);
    assert_ping(&rig, "h1", IN_V6);
    assert_alive(&mut rig, &format!("the structured fuzz (seed {seed}) and pings"));
    let (st, log) = rig.app.stop();
    assert!(st.success(), "exit status after SIGTERM following the fuzz (seed {seed}): {st}\n{log}");
    assert!(!log.contains("panicked"), "a thread panicked during the fuzz (seed {seed}):\n{log}");
    if let Some(i) = log.find("final counters") {
        eprintln!("fuzz seed {seed}: {}", &log[i..]);
    }
}
