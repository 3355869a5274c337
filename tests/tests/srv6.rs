//! SRv6 (RFC 8754, RFC 8986) with real kernel hosts on both sides of the appliance: the
//! Linux kernel as SR source node and as SR endpoint, scapy for malformed Segment Routing
//! Headers, tcpdump + tshark to see what really went over the wire.
//!
//! The standard testbed (`[h1] | [rtr: appliance] | [h2]`) with the demo config plus an
//! `srv6:` section. Run as root, serially:
//! `cargo test --release -p appliance-tests --test srv6 -- --test-threads=1`.

use appliance_tests::capture::{tshark_expert_warnings, Capture};
use appliance_tests::tools::{poll_until, scapy_python};
use appliance_tests::{demo_config, edit_yaml, metric_sum, output_text, Appliance, Rig};
use serde_yaml_ng::Value;
use std::time::Duration;

const H1_V6: &str = "2001:db8:1::2";
const H2_V6: &str = "2001:db8:2::2";
const IN_V6: &str = "2001:db8:1::1";
const OUT_V6: &str = "2001:db8:2::1";
const OUT_MAC: &str = "02:00:00:00:02:01";
/// The appliance's End and End.DT6 SIDs.
const SID_END: &str = "2001:db8:a::1";
const SID_DT6: &str = "2001:db8:a::2";
/// h2's kernel End.DT6 SID, and the steered prefix / address behind it.
const H2_DT6: &str = "2001:db8:2::d6";
const STEERED: &str = "2001:db8:99::1";

/// The demo config (128 MiB) with `srv6` (a YAML mapping) and extra static `routes`
/// (`prefix via port`).
fn config(srv6: &str, routes: &[(&str, &str, &str)]) -> String {
    let srv6: Value = serde_yaml_ng::from_str(srv6).expect("srv6 section is YAML");
    edit_yaml(&demo_config(), |v| {
        v["eal"]["memory_mb"] = Value::from(128);
        v["srv6"] = srv6;
        let r: Vec<Value> = routes
            .iter()
            .map(|(prefix, via, port)| {
                serde_yaml_ng::from_str(&format!("{{prefix: \"{prefix}\", via: \"{via}\", port: {port}}}")).unwrap()
            })
            .collect();
        v["routes"] = Value::Sequence(r);
    })
}

/// End and End.DT6 SIDs, every port trusted.
fn end_and_dt6() -> String {
    config(
        &format!(
            "local_sids:\n  - {{sid: \"{SID_END}\", behavior: end}}\n  - {{sid: \"{SID_DT6}\", behavior: end.dt6}}\n"
        ),
        &[],
    )
}

fn assert_ping(rig: &Rig, ns: &str, addr: &str) {
    let (ok, out) = rig.tb.ping_output(ns, addr, &["-c", "3", "-i", "0.2", "-W", "2"]);
    assert!(ok, "ping {addr} from {ns} failed:\n{out}{}", rig.ctx());
}

/// Both hosts and the appliance know each other (IPv6) before a test looks at packets.
fn warm_up(rig: &Rig) {
    assert_ping(rig, "h1", IN_V6);
    assert_ping(rig, "h2", OUT_V6);
    assert_ping(rig, "h1", H2_V6);
}

fn sid_metric(m: &str, name: &str, sid: &str) -> f64 {
    metric_sum(m, name, &[("sid", sid)])
}

/// Sum of `appliance_srv6_sid_drops_total` for `sid` and `reason`.
fn sid_drops(m: &str, sid: &str, reason: &str) -> f64 {
    metric_sum(m, "appliance_srv6_sid_drops_total", &[("sid", sid), ("reason", reason)])
}

/// Echo requests (ICMPv6) plus TCP segments h1's kernel has sent so far (its own protocol
/// counters, /proc/net/snmp6 `Icmp6OutEchos` and /proc/net/snmp `Tcp: OutSegs`): in test 1
/// all of them go to h2 through the SR policy.
fn h1_sent_to_h2(rig: &Rig) -> f64 {
    let snmp6 = output_text(&rig.tb.exec("h1", &["cat", "/proc/net/snmp6"]));
    let echos: f64 = snmp6
        .lines()
        .find_map(|l| l.strip_prefix("Icmp6OutEchos").map(|v| v.trim().parse().unwrap()))
        .expect("Icmp6OutEchos in /proc/net/snmp6");
    let snmp = output_text(&rig.tb.exec("h1", &["cat", "/proc/net/snmp"]));
    let tcp: Vec<&str> = snmp.lines().filter(|l| l.starts_with("Tcp:")).collect();
    assert_eq!(tcp.len(), 2, "Tcp: lines in /proc/net/snmp:\n{snmp}");
    let names: Vec<&str> = tcp[0].split_whitespace().collect();
    let values: Vec<&str> = tcp[1].split_whitespace().collect();
    let i = names.iter().position(|n| *n == "OutSegs").expect("Tcp OutSegs");
    echos + values[i].parse::<f64>().unwrap()
}

// ---------------------------------------------------------------------------------------
// 1. The kernel encapsulates (H.Encaps), the appliance is End then End.DT6.
// ---------------------------------------------------------------------------------------

#[test]
fn kernel_encap_through_end_and_end_dt6() {
    let rig = Rig::with_config("srv6encap", &end_and_dt6());
    let tb = &rig.tb;
    warm_up(&rig);
    // h1 steers everything for h2 into an SR policy: End at the appliance, then End.DT6 at
    // the appliance (decapsulation, lookup of the inner destination). The SIDs are reached
    // through h1's default route (the appliance).
    tb.exec_ok(
        "h1",
        &[
            "ip",
            "-6",
            "route",
            "add",
            &format!("{H2_V6}/128"),
            "encap",
            "seg6",
            "mode",
            "encap",
            "segs",
            &format!("{SID_END},{SID_DT6}"),
            "dev",
            "eth0",
        ],
    );
    let m0 = rig.app.metrics();
    let sent0 = h1_sent_to_h2(&rig);
    let mut cap = Capture::start(&tb.h2(), "eth0", &format!("ip6 and src host {H1_V6}"));

    let (ok, out) = tb.ping_output("h1", H2_V6, &["-6", "-c", "3", "-i", "0.2", "-W", "2"]);
    assert!(ok && out.contains(" 0% packet loss"), "ping -6 {H2_V6} through End/End.DT6 failed:\n{out}{}", rig.ctx());
    let t = tb
        .tcp_transfer("h1", "h2", H2_V6, 5101, 1 << 20)
        .unwrap_or_else(|e| panic!("TCP transfer through End/End.DT6: {e:#}{}", rig.ctx()));
    assert_eq!(t.bytes, 1 << 20);

    // What h2 received from h1: plain IPv6 (the appliance decapsulated), never an SRH or an
    // IPv6-in-IPv6 packet.
    let rows = cap.fields("", &["frame.number", "ipv6.dst", "ipv6.nxt", "ipv6.routing.type", "icmpv6.type", "tcp.len"]);
    let bad: Vec<&Vec<String>> =
        rows.iter().filter(|r| r[1] != H2_V6 || !(r[2] == "58" || r[2] == "6") || !r[3].is_empty()).collect();
    assert!(
        bad.is_empty(),
        "h2 received {} of {} packets from h1 that are not plain IPv6 to {H2_V6} \
         (frame, dst, next headers, routing type): {:?}{}",
        bad.len(),
        rows.len(),
        &bad[..bad.len().min(10)],
        rig.ctx()
    );
    let echo_requests = rows.iter().filter(|r| r[4] == "128").count();
    let tcp_segments = rows.iter().filter(|r| !r[5].is_empty()).count();
    assert!(echo_requests >= 3, "h2 saw {echo_requests} echo requests from h1, expected 3");
    // A 1 MiB transfer is some 800 segments (tcpdump may miss a few on a busy machine).
    assert!(tcp_segments >= 500, "h2 saw only {tcp_segments} TCP segments from h1 ({})", cap.tcpdump_log());

    // Every echo request and TCP segment h1 sent to h2 went through both SIDs.
    let sent = h1_sent_to_h2(&rig) - sent0;
    assert!(sent >= 3.0 + 700.0, "h1's counters say it sent only {sent} echo requests and TCP segments");
    let m1 = poll_until(Duration::from_secs(5), Duration::from_millis(200), || {
        let m = rig.app.metrics();
        let d = |s| {
            sid_metric(&m, "appliance_srv6_sid_packets_total", s)
                - sid_metric(&m0, "appliance_srv6_sid_packets_total", s)
        };
        (d(SID_END) >= sent && d(SID_DT6) >= sent).then_some(m)
    })
    .unwrap_or_else(|| {
        let m = rig.app.metrics();
        panic!(
            "SID packet counters did not grow by the {sent} packets h1 sent: End {} -> {}, End.DT6 {} -> {}{}",
            sid_metric(&m0, "appliance_srv6_sid_packets_total", SID_END),
            sid_metric(&m, "appliance_srv6_sid_packets_total", SID_END),
            sid_metric(&m0, "appliance_srv6_sid_packets_total", SID_DT6),
            sid_metric(&m, "appliance_srv6_sid_packets_total", SID_DT6),
            rig.ctx()
        )
    });
    let drops = metric_sum(&m1, "appliance_srv6_sid_drops_total", &[]);
    assert_eq!(drops, 0.0, "SIDs dropped packets on the way:\n{m1}");
}

// ---------------------------------------------------------------------------------------
// 2. The appliance encapsulates (H.Encaps / H.Encaps.Red), h2's kernel is End.DT6.
// ---------------------------------------------------------------------------------------

/// h2 becomes the End.DT6 endpoint for 2001:db8:2::d6 and owns 2001:db8:99::1.
///
/// Linux's End.DT6 without a VRF ("legacy" `table N` mode) refuses a lookup result through
/// the loopback device (seg6_lookup_any_nexthop, local_delivery = false), so an address on
/// `lo` cannot be reached by it, and this kernel has no VRF support for the `vrftable` mode.
/// h2 therefore holds 2001:db8:99::1 on one end of a veth pair of its own (dt-b), and
/// End.DT6 looks the inner destination up in table 100, which sends 2001:db8:99::/64 into the
/// other end (dt-a): the decapsulated packet comes back in on dt-b and is delivered.
fn h2_end_dt6(rig: &Rig) {
    let script = format!(
        "set -e
         sysctl -qw net.ipv6.conf.all.seg6_enabled=1 net.ipv6.conf.eth0.seg6_enabled=1 net.ipv6.conf.all.forwarding=1
         ip link add dt-a type veth peer name dt-b
         ip link set dt-a up
         ip link set dt-b up
         ip -6 addr add {STEERED}/128 dev dt-b nodad
         ip -6 route add 2001:db8:99::/64 dev dt-a table 100
         ip -6 route add {H2_DT6}/128 encap seg6local action End.DT6 table 100 dev eth0"
    );
    let out = rig.tb.sh("h2", &script);
    assert!(out.status.success(), "End.DT6 set-up in h2 failed: {}", output_text(&out));
}

fn steering_config(mode: &str) -> String {
    config(
        &format!("steering:\n  - {{prefix: \"2001:db8:99::/64\", mode: {mode}, segments: [\"{H2_DT6}\"]}}\n"),
        // 2001:db8:2::d6 lies in the outside subnet but is no address of h2: it is routed to
        // h2 (the appliance would otherwise try to resolve it on the link).
        &[(&format!("{H2_DT6}/128"), H2_V6, "outside")],
    )
}

/// Pings the steered address through the appliance and checks, on h2's wire, that the
/// requests arrive encapsulated as `mode` says and the replies leave plain.
fn check_h_encaps(rig: &Rig, mode: &str) {
    let tb = &rig.tb;
    let mut cap = Capture::start(&tb.h2(), "eth0", "ip6");
    let (ok, out) = tb.ping_output("h1", STEERED, &["-6", "-c", "3", "-i", "0.2", "-W", "2"]);
    assert!(
        ok && out.contains(" 0% packet loss"),
        "[{mode}] ping {STEERED} through the SR policy failed:\n{out}{}",
        rig.ctx()
    );

    let from_appliance = format!("eth.src == {OUT_MAC} && ipv6.dst == {H2_DT6}");
    let fields = [
        "ipv6.src",
        "ipv6.dst",
        "ipv6.nxt",
        "ipv6.hlim",
        "ipv6.routing.type",
        "ipv6.routing.segleft",
        "ipv6.routing.srh.last_entry",
        "ipv6.routing.srh.addr",
        "ipv6.routing.nxt",
        "icmpv6.type",
    ];
    let rows = cap.fields(&from_appliance, &fields);
    let requests: Vec<&Vec<String>> = rows.iter().filter(|r| r[9] == "128").collect();
    assert!(
        requests.len() >= 3,
        "[{mode}] h2 saw {} encapsulated echo requests from the appliance, expected 3: {rows:?}\n{}{}",
        requests.len(),
        cap.tshark(&[]),
        rig.ctx()
    );
    for r in &requests {
        let what = format!("[{mode}] encapsulated request on h2's wire ({}): {r:?}", fields.join(" | "));
        // Outer source: the egress port's first global address; outer destination: the SID;
        // inner: h1's echo request to the steered address, carried unchanged.
        assert_eq!(r[0], format!("{OUT_V6},{H1_V6}"), "{what}");
        assert_eq!(r[1], format!("{H2_DT6},{STEERED}"), "{what}");
        assert!(r[3].starts_with("64,"), "{what}: outer hop limit should be 64");
        match mode {
            "encaps" => {
                // IPv6 | SRH (type 4, SL 0, Last Entry 0, [d6], next header 41) | IPv6 | ICMPv6
                assert_eq!(r[2], "43,58", "{what}");
                assert_eq!((r[4].as_str(), r[5].as_str(), r[6].as_str()), ("4", "0", "0"), "{what}");
                assert_eq!(r[7], H2_DT6, "{what}");
                assert_eq!(r[8], "41", "{what}");
            }
            "encaps.red" => {
                // One segment: no SRH at all, the outer header carries IPv6 directly.
                assert_eq!(r[2], "41,58", "{what}");
                assert!(r[4].is_empty() && r[7].is_empty(), "{what}: no SRH expected");
            }
            other => panic!("unknown mode {other}"),
        }
    }
    let verbose = cap.tshark(&["-V", "-Y", &from_appliance]);
    if mode == "encaps" {
        for needle in [
            "Routing Header for IPv6 (Segment Routing)",
            "Type: Segment Routing (4)",
            "Segments Left: 0",
            "Echo (ping) request",
        ] {
            assert!(verbose.contains(needle), "[{mode}] tshark -V lacks {needle:?}:\n{verbose}");
        }
    }
    assert!(!verbose.contains("Malformed"), "[{mode}] tshark finds malformed packets from the appliance:\n{verbose}");
    let warnings = tshark_expert_warnings(cap.path(), &format!("eth.src == {OUT_MAC}"));
    assert!(
        warnings.is_empty(),
        "[{mode}] tshark expert warnings/errors for what the appliance sent:\n{warnings}\n{verbose}"
    );

    // The replies travel back plain (h2 is no SR source): routed by the appliance.
    let replies =
        cap.fields(&format!("eth.dst == {OUT_MAC} && icmpv6.type == 129"), &["ipv6.src", "ipv6.dst", "ipv6.nxt"]);
    assert!(
        replies.len() >= 3,
        "[{mode}] h2 sent {} echo replies, expected 3; {}:\n{}",
        replies.len(),
        cap.describe(),
        cap.tshark(&["-T", "fields", "-e", "frame.number", "-e", "eth.src", "-e", "eth.dst", "-e", "_ws.col.Info"])
    );
    for r in &replies {
        assert_eq!(r, &vec![STEERED.to_string(), H1_V6.to_string(), "58".to_string()], "[{mode}] reply on h2's wire");
    }
}

#[test]
fn appliance_h_encaps_to_kernel_end_dt6() {
    let mut rig = Rig::with_config("srv6hencap", &steering_config("encaps"));
    warm_up(&rig);
    h2_end_dt6(&rig);
    check_h_encaps(&rig, "encaps");

    // H.Encaps.Red with one segment: no SRH.
    let (st, log) = rig.app.stop();
    assert!(st.success(), "appliance exit status {st}:\n{log}");
    rig.app = Appliance::start(&rig.tb, &steering_config("encaps.red"));
    check_h_encaps(&rig, "encaps.red");
}

// ---------------------------------------------------------------------------------------
// 3. Malformed SRHs get the ICMPv6 answer the RFCs prescribe.
// ---------------------------------------------------------------------------------------

/// Sends one crafted packet (case `argv[1]`) from h1 to the appliance's inside MAC and prints
/// the first ICMPv6 error the appliance sends back:
/// `answer <type> <code> <pointer|-> <src> <dst> <quoted src> <quoted dst>` or `nothing`.
const MALFORMED: &str = r#"
import socket, sys
from scapy.layers.l2 import Ether
from scapy.layers.inet import UDP
from scapy.layers.inet6 import IPv6, IPv6ExtHdrRouting, IPv6ExtHdrSegmentRouting, ICMPv6EchoRequest
from scapy.packet import Raw
from scapy.sendrecv import AsyncSniffer, sendp
from scapy.config import conf
conf.verb = 0
M, S = "02:00:00:00:01:01", "02:00:00:00:01:02"
H1, H2 = "2001:db8:1::2", "2001:db8:2::2"
END, DT6 = "2001:db8:a::1", "2001:db8:a::2"
eth = Ether(dst=M, src=S)
udp = UDP(sport=40000, dport=9999) / Raw(b"srv6-test")
def srh(segs, sl, le=None, nh=17, **kw):
    return IPv6ExtHdrSegmentRouting(addresses=segs, segleft=sl, lastentry=len(segs) - 1 if le is None else le, nh=nh, **kw)
def a16(a):
    return socket.inet_pton(socket.AF_INET6, a)
case = sys.argv[1]
if case == "sl_above_last_entry":      # SL 3 > Last Entry (1) + 1
    p = eth / IPv6(src=H1, dst=END) / srh([H2, END], 3) / udp
elif case == "last_entry_too_big":     # Last Entry 2, but Hdr Ext Len 4 holds 2 segments
    p = eth / IPv6(src=H1, dst=END) / srh([H2, END], 1, le=2) / udp
elif case == "hop_limit_1":
    p = eth / IPv6(src=H1, dst=END, hlim=1) / srh([H2, END], 1) / udp
elif case == "dt6_segments_left_1":
    p = eth / IPv6(src=H1, dst=DT6) / srh([H2, DT6], 1, nh=41) / IPv6(src=H1, dst=H2) / ICMPv6EchoRequest()
elif case == "dt6_segments_left_1_hop_limit_1":
    p = eth / IPv6(src=H1, dst=DT6, hlim=1) / srh([H2, DT6], 1, nh=41) / IPv6(src=H1, dst=H2) / ICMPv6EchoRequest()
elif case == "udp_at_end_sl0":        # SL 0: the End SID is the final destination of a UDP packet
    p = eth / IPv6(src=H1, dst=END) / srh([END], 0) / udp
elif case == "routing_type_0":
    p = eth / IPv6(src=H1, dst=END) / IPv6ExtHdrRouting(type=0, segleft=1, addresses=[H2], nh=17) / udp
elif case == "tlv_overrun":
    # Hdr Ext Len 5 = 48 bytes: 8 + 2 segments + 8 bytes of TLVs, where a PadN of length 10
    # (12 bytes) starts at offset 40 and runs 4 bytes past the header.
    b = bytes([17, 5, 4, 1, 1, 0, 0, 0]) + a16(H2) + a16(END) + bytes([4, 10]) + bytes(6)
    p = eth / IPv6(src=H1, dst=END, nh=43) / Raw(b) / udp
else:
    sys.exit("unknown case " + case)
import threading
ready = threading.Event()
sn = AsyncSniffer(iface="eth0", count=1, timeout=3, started_callback=ready.set,
                  filter="icmp6 and ip6[40] < 128 and ether src " + M)
sn.start()
ready.wait(10)
sendp(p, iface="eth0")
sn.join()
got = sn.results or []
if not got:
    print("nothing")
for g in got:
    i = g[IPv6]
    ic = i.payload
    q = bytes(ic)[8:]
    qs = socket.inet_ntop(socket.AF_INET6, q[8:24]) if len(q) >= 40 else "-"
    qd = socket.inet_ntop(socket.AF_INET6, q[24:40]) if len(q) >= 40 else "-"
    ptr = int.from_bytes(bytes(ic)[4:8], "big") if ic.type == 4 else "-"
    print("answer", ic.type, ic.code, ptr, i.src, i.dst, qs, qd)
"#;

#[derive(Debug, PartialEq)]
struct IcmpAnswer {
    ty: u8,
    code: u8,
    pointer: Option<u32>,
    src: String,
    dst: String,
    quoted_src: String,
    quoted_dst: String,
}

fn send_malformed(rig: &Rig, py: &str, case: &str) -> Option<IcmpAnswer> {
    let out = rig.tb.exec_timeout("h1", &[py, "-c", MALFORMED, case], Duration::from_secs(60));
    let text = output_text(&out);
    assert!(out.status.success(), "scapy case {case} failed ({}):\n{text}", out.status);
    let line = text
        .lines()
        .find(|l| l.starts_with("answer ") || l.trim() == "nothing")
        .unwrap_or_else(|| panic!("scapy case {case}: unexpected output:\n{text}"));
    let w: Vec<&str> = line.split_whitespace().collect();
    (w[0] == "answer").then(|| IcmpAnswer {
        ty: w[1].parse().unwrap(),
        code: w[2].parse().unwrap(),
        pointer: w[3].parse().ok(),
        src: w[4].into(),
        dst: w[5].into(),
        quoted_src: w[6].into(),
        quoted_dst: w[7].into(),
    })
}

#[test]
fn malformed_srh_gets_the_rfc_answer() {
    let rig = Rig::with_config("srv6bad", &end_and_dt6());
    warm_up(&rig);
    let py = scapy_python();
    let py = py.to_string_lossy();
    const PP: u8 = 4; // ICMPv6 Parameter Problem
    const TE: u8 = 3; // ICMPv6 Time Exceeded
                      // (case, SID it is sent to, expected (type, code, pointer), the SID drop reason it counts
                      // under). Pointers count from the start of the invoking IPv6 header; the SRH starts at 40.
    type Case<'a> = (&'a str, &'a str, (u8, u8, Option<u32>), &'a str);
    let cases: &[Case] = &[
        // RFC 8986 §4.1 S08-S10 / RFC 8754 §4.3.1.1: pointer at Segments Left (40 + 3).
        ("sl_above_last_entry", SID_END, (PP, 0, Some(43)), "srv6_param_problem"),
        ("last_entry_too_big", SID_END, (PP, 0, Some(43)), "srv6_param_problem"),
        // RFC 8986 §4.1 S05-S06: hop limit exceeded in transit.
        ("hop_limit_1", SID_END, (TE, 0, None), "ttl_expired"),
        // RFC 8986 §4.6 S02-S03 (End.DT6 with SL != 0): pointer at Segments Left.
        ("dt6_segments_left_1", SID_DT6, (PP, 0, Some(43)), "srv6_param_problem"),
        // The SL check of End.DT6 comes first (§4.6 S01-S04 replace End's S05 hop-limit
        // step): hop limit 1 changes nothing.
        ("dt6_segments_left_1_hop_limit_1", SID_DT6, (PP, 0, Some(43)), "srv6_param_problem"),
        // RFC 8986 §4.1.1: an upper layer the SID does not process: code 4 (SR Upper-layer
        // Header Error), pointer at the UDP header (40 + 24-byte SRH).
        ("udp_at_end_sl0", SID_END, (PP, 4, Some(64)), "srv6_param_problem"),
        // RFC 8200 §4.4: unrecognized Routing Type with SL > 0: pointer at Routing Type.
        ("routing_type_0", SID_END, (PP, 0, Some(42)), "srv6_param_problem"),
        // RFC 8754 §2.1 / §4.3.1.1: a TLV must not run past the header: pointer at the TLV
        // (the TLV area is bytes 40 + 40 .. 40 + 48).
        ("tlv_overrun", SID_END, (PP, 0, Some(80)), "srv6_param_problem"),
    ];
    for &(case, sid, (ty, code, pointer), reason) in cases {
        let m0 = rig.app.metrics();
        let answer = send_malformed(&rig, &py, case);
        let Some(a) = answer else {
            panic!("{case}: no ICMPv6 error from the appliance within 3 s{}", rig.ctx());
        };
        assert_eq!(
            (a.ty, a.code, a.pointer),
            (ty, code, pointer),
            "{case}: ICMPv6 (type, code, pointer) from the appliance: {a:?}{}",
            rig.ctx()
        );
        assert_eq!(a.dst, H1_V6, "{case}: error sent to {a:?}");
        assert!(a.src == IN_V6, "{case}: error should come from the inside port's address {IN_V6}: {a:?}");
        assert_eq!(
            (a.quoted_src.as_str(), a.quoted_dst.as_str()),
            (H1_V6, sid),
            "{case}: the error must quote the invoking packet: {a:?}"
        );

        let icmp_type = if ty == PP { "v6_param_problem" } else { "v6_time_exceeded" };
        let m1 = poll_until(Duration::from_secs(3), Duration::from_millis(100), || {
            let m = rig.app.metrics();
            let grew = |f: &dyn Fn(&str) -> f64| f(&m) - f(&m0) >= 1.0;
            (grew(&|t| metric_sum(t, "appliance_icmp_errors_sent_total", &[("type", icmp_type)]))
                && grew(&|t| sid_drops(t, sid, reason)))
            .then_some(m)
        });
        assert!(
            m1.is_some(),
            "{case}: appliance_icmp_errors_sent_total{{type={icmp_type}}} and \
             appliance_srv6_sid_drops_total{{sid={sid},reason={reason}}} should have grown:\n{}{}",
            rig.app
                .metrics()
                .lines()
                .filter(|l| l.contains("icmp_errors_sent") || l.contains("srv6_sid_drops"))
                .collect::<Vec<_>>()
                .join("\n"),
            rig.ctx()
        );
        // And it keeps forwarding.
        let (ok, out) = rig.tb.ping_output("h1", H2_V6, &["-c", "1", "-W", "2"]);
        assert!(ok, "{case}: ping h1 -> h2 after the malformed packet failed:\n{out}{}", rig.ctx());
    }
}

// ---------------------------------------------------------------------------------------
// 4. A SID is not reachable from outside the SR domain.
// ---------------------------------------------------------------------------------------

/// Sends `argv[3]` copies of UDP (port 9999) to the End SID with an SRH whose next and final
/// segment is `argv[2]`, from this host (`argv[1]`: h1 or h2) to the appliance.
const TO_END_SID: &str = r#"
import sys
from scapy.layers.l2 import Ether
from scapy.layers.inet import UDP
from scapy.layers.inet6 import IPv6, IPv6ExtHdrSegmentRouting
from scapy.packet import Raw
from scapy.sendrecv import sendp
from scapy.config import conf
conf.verb = 0
me = {"h1": ("02:00:00:00:01:02", "02:00:00:00:01:01", "2001:db8:1::2"),
      "h2": ("02:00:00:00:02:02", "02:00:00:00:02:01", "2001:db8:2::2")}[sys.argv[1]]
src_mac, dst_mac, src = me
final = sys.argv[2]
p = Ether(src=src_mac, dst=dst_mac) / IPv6(src=src, dst="2001:db8:a::1") \
    / IPv6ExtHdrSegmentRouting(addresses=[final, "2001:db8:a::1"], segleft=1, lastentry=1, nh=17) \
    / UDP(sport=40000, dport=9999) / Raw(b"untrusted?")
sendp(p, iface="eth0", count=int(sys.argv[3]), inter=0.05)
print("sent")
"#;

#[test]
fn untrusted_port_is_dropped() {
    let cfg =
        config(&format!("trusted_ports: [outside]\nlocal_sids:\n  - {{sid: \"{SID_END}\", behavior: end}}\n"), &[]);
    let rig = Rig::with_config("srv6trust", &cfg);
    warm_up(&rig);
    assert_ping(&rig, "h2", H1_V6);
    let py = scapy_python();
    let py = py.to_string_lossy();
    let send = |from: &str, final_dst: &str| {
        let out = rig.tb.exec_timeout(from, &[&py, "-c", TO_END_SID, from, final_dst, "3"], Duration::from_secs(60));
        assert!(out.status.success() && output_text(&out).contains("sent"), "scapy in {from}: {}", output_text(&out));
    };
    let m0 = rig.app.metrics();

    // From inside (untrusted): dropped, nothing reaches h2.
    // Captured by source address and dissected by tshark: a pcap filter "udp" would not see
    // UDP behind a routing header.
    let mut cap = Capture::start(&rig.tb.h2(), "eth0", &format!("ip6 src host {H1_V6}"));
    send("h1", H2_V6);
    std::thread::sleep(Duration::from_millis(500));
    let at_h2 = cap.fields("udp.dstport == 9999", &["ipv6.src", "ipv6.dst"]);
    assert!(
        at_h2.is_empty(),
        "h2 received packets sent from the untrusted port to the End SID: {at_h2:?}{}",
        rig.ctx()
    );
    let m1 = poll_until(Duration::from_secs(3), Duration::from_millis(100), || {
        let m = rig.app.metrics();
        (metric_sum(&m, "appliance_drops_total", &[("reason", "srv6_untrusted")])
            - metric_sum(&m0, "appliance_drops_total", &[("reason", "srv6_untrusted")])
            >= 3.0)
            .then_some(m)
    })
    .unwrap_or_else(|| {
        panic!(
            "appliance_drops_total{{reason=\"srv6_untrusted\"}} did not grow by 3:\n{}{}",
            rig.app.metrics(),
            rig.ctx()
        )
    });
    assert_eq!(
        sid_drops(&m1, SID_END, "srv6_untrusted") - sid_drops(&m0, SID_END, "srv6_untrusted"),
        3.0,
        "per-SID untrusted drops"
    );

    // From outside (trusted): the same packets are processed by End and reach h1.
    let mut cap = Capture::start(&rig.tb.h1(), "eth0", &format!("ip6 src host {H2_V6}"));
    send("h2", H1_V6);
    std::thread::sleep(Duration::from_millis(500));
    let at_h1 = cap.fields("udp.dstport == 9999", &["ipv6.src", "ipv6.dst", "ipv6.routing.segleft"]);
    assert_eq!(
        at_h1.len(),
        3,
        "h1 should receive the 3 packets sent from the trusted port through End: {at_h1:?}{}",
        rig.ctx()
    );
    for r in &at_h1 {
        assert_eq!(r, &vec![H2_V6.to_string(), H1_V6.to_string(), "0".to_string()], "packet at h1 after End");
    }
    let m2 = rig.app.metrics();
    assert_eq!(
        metric_sum(&m2, "appliance_drops_total", &[("reason", "srv6_untrusted")]),
        metric_sum(&m1, "appliance_drops_total", &[("reason", "srv6_untrusted")]),
        "packets from the trusted port were dropped as untrusted"
    );
    // Plain forwarding between the ports is not affected.
    assert_ping(&rig, "h1", H2_V6);
}
