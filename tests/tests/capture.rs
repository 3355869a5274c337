//! Capture by DPDK's own tool and decoding by Wireshark's (issue 12 item 3):
//!
//! * `dpdk-dumpcap`, a DPDK secondary process, attaches to the running appliance
//!   (`capture.pdump`, on in the demo config) and writes what crosses a port, both directions,
//!   to a pcapng that tshark reads; with `capture.pdump: false` it is refused.
//! * The storage protocol's Lua dissector (`tools/wireshark/aplstorage.lua`) decodes real
//!   object requests and replies through the appliance without an expert warning, and flags
//!   crafted malformed ones.
//!
//! Run as root, serially: `sudo bash scripts/test.sh`.

use appliance_tests::capture::{tshark, Capture};
use appliance_tests::dumpcap::Dumpcap;
use appliance_tests::storage::DeviceFile;
use appliance_tests::testbed::workspace_root;
use appliance_tests::{demo_config, edit_yaml, output_text, Appliance, Rig, Testbed};
use serde_yaml_ng::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

// ---------------------------------------------------------------------------------------------
// dpdk-dumpcap
// ---------------------------------------------------------------------------------------------

/// One captured ICMP/ICMPv6 echo as tshark decodes it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Echo {
    /// "in" (the appliance received it on this port) or "out" (it sent it).
    dir: &'static str,
    /// "request" or "reply".
    kind: &'static str,
    v6: bool,
    seq: u32,
    ttl: u32,
    src: String,
}

/// The echo requests and replies in a dumpcap pcapng, and the interface names it recorded.
fn echoes(pcap: &Path) -> (Vec<Echo>, BTreeSet<String>) {
    let fields = [
        "frame.interface_name",
        "frame.packet_flags_direction",
        "icmp.type",
        "icmp.seq",
        "ip.ttl",
        "ip.src",
        "icmpv6.type",
        "icmpv6.echo.sequence_number",
        "ipv6.hlim",
        "ipv6.src",
    ];
    let rows = appliance_tests::capture::tshark_fields(
        pcap,
        "icmp.type == 0 || icmp.type == 8 || icmpv6.type == 128 || icmpv6.type == 129",
        &fields,
    );
    let mut names = BTreeSet::new();
    let mut out = Vec::new();
    for r in rows {
        names.insert(r[0].clone());
        // pcapng epb_flags: bits 0-1 are the direction, 1 inbound, 2 outbound.
        let dir = match u32::from_str_radix(r[1].trim_start_matches("0x"), 16).map(|f| f & 3) {
            Ok(1) => "in",
            Ok(2) => "out",
            _ => panic!("packet without a direction flag in {}: {r:?}", pcap.display()),
        };
        let v6 = r[2].is_empty();
        let (ty, seq, ttl, src) = if v6 { (&r[6], &r[7], &r[8], &r[9]) } else { (&r[2], &r[3], &r[4], &r[5]) };
        let kind = match ty.as_str() {
            "8" | "128" => "request",
            "0" | "129" => "reply",
            other => panic!("unexpected ICMP type {other}: {r:?}"),
        };
        let num = |s: &str| s.parse::<u32>().unwrap_or_else(|_| panic!("not a number {s:?} in {r:?}"));
        out.push(Echo { dir, kind, v6, seq: num(seq), ttl: num(ttl), src: src.clone() });
    }
    out.sort();
    (out, names)
}

/// `received/dropped` from dumpcap's closing report on `device`.
fn dumpcap_counts(output: &str, device: &str) -> (u64, u64) {
    let want = format!("Packets received/dropped on interface '{device}': ");
    let line = output.lines().find_map(|l| l.split_once(&want).map(|(_, rest)| rest.to_string()));
    let line = line.unwrap_or_else(|| panic!("no `{want}` line in dpdk-dumpcap's output:\n{output}"));
    let counts = line.split_whitespace().next().unwrap_or_default();
    let (rx, drop) = counts.split_once('/').unwrap_or_else(|| panic!("unexpected counts {line:?}"));
    (rx.parse().unwrap(), drop.parse().unwrap())
}

#[test]
fn dumpcap_captures_both_directions_of_each_port() {
    let mut rig = Rig::demo("dumpcap");
    let rtr = rig.tb.rtr();
    let prefix = rig.app.file_prefix().to_string();
    assert!(rig.app.log().contains("dpdk-dumpcap can attach"), "capture.pdump is on in the demo{}", rig.ctx());
    // Without --huge-unlink the page files stay while it runs: secondaries map them.
    assert!(!rig.app.hugepage_files().is_empty(), "capture.pdump keeps the hugepage files while running");

    // One dumpcap per port: DPDK 22.11's dumpcap given several -i captures only the last.
    let start = |dev: &str| Dumpcap::start(&rtr, &prefix, dev).unwrap_or_else(|e| panic!("{e:#}{}", rig.ctx()));
    let mut inside = start("net_af_xdp0");
    let mut outside = start("net_af_xdp1");

    let (ok, out) = rig.tb.ping_output("h1", "198.51.100.2", &["-c", "5", "-i", "0.2", "-W", "2"]);
    assert!(ok, "IPv4 ping h1 → h2 while captured: {out}{}", rig.ctx());
    let (ok, out) = rig.tb.ping_output("h1", "2001:db8:2::2", &["-c", "3", "-i", "0.2", "-W", "2"]);
    assert!(ok, "IPv6 ping h1 → h2 while captured: {out}{}", rig.ctx());

    for (d, dev) in [(&mut inside, "net_af_xdp0"), (&mut outside, "net_af_xdp1")] {
        let st = d.stop();
        assert!(st.success(), "{} on {dev} exited with {st}:\n{}", d.describe(), d.output());
        let (received, dropped) = dumpcap_counts(&d.output(), dev);
        assert!(received >= 16, "{dev}: dumpcap got {received} packets, 16 echoes at least crossed");
        assert_eq!(dropped, 0, "{dev}: the appliance dropped captured copies:\n{}", d.output());
    }

    // What h1 sent arrives on the inside port and leaves by the outside port one hop older;
    // the replies the other way. Both ports' rx and tx are captured.
    let (got_in, names_in) = echoes(inside.path());
    let (got_out, names_out) = echoes(outside.path());
    // dumpcap ran in the appliance's namespace: it names the ports' kernel interfaces.
    assert_eq!(names_in, BTreeSet::from(["apl-in".to_string()]));
    assert_eq!(names_out, BTreeSet::from(["apl-out".to_string()]));
    let mut want_in = Vec::new();
    let mut want_out = Vec::new();
    for (v6, count, h1, h2) in [(false, 5, "192.0.2.2", "198.51.100.2"), (true, 3, "2001:db8:1::2", "2001:db8:2::2")] {
        for seq in 1..=count {
            let e = |dir, kind, ttl, src: &str| Echo { dir, kind, v6, seq, ttl, src: src.to_string() };
            want_in.push(e("in", "request", 64, h1));
            want_in.push(e("out", "reply", 63, h2));
            want_out.push(e("out", "request", 63, h1));
            want_out.push(e("in", "reply", 64, h2));
        }
    }
    want_in.sort();
    want_out.sort();
    assert_eq!(got_in, want_in, "echoes captured on the inside port{}", rig.ctx());
    assert_eq!(got_out, want_out, "echoes captured on the outside port{}", rig.ctx());

    // The appliance still forwards after dumpcap detached, and stops cleanly, leaving no
    // hugepage file (it removes them itself when it runs without --huge-unlink).
    assert!(rig.tb.ping("h1", "198.51.100.2", 2), "forwarding after dumpcap detached{}", rig.ctx());
    let (st, log) = rig.app.stop();
    assert!(st.success(), "appliance exit {st}:\n{log}");
    let left = rig.app.hugepage_files();
    assert!(left.is_empty(), "hugepage files left after a clean stop: {left:?}");
}

#[test]
fn dumpcap_is_refused_without_pdump() {
    // The same process layout (page files kept), without rte_pdump_init: dumpcap attaches as
    // a secondary but the appliance does not answer its capture request.
    let cfg = edit_yaml(&demo_config(), |v| {
        v["eal"]["huge_unlink"] = Value::Bool(false);
        v["capture"] = serde_yaml_ng::from_str("pdump: false").unwrap();
    });
    let mut rig = Rig::with_config("nopdump", &cfg);
    assert!(!rig.app.log().contains("dpdk-dumpcap can attach"), "{}", rig.ctx());
    let err = match Dumpcap::start(&rig.tb.rtr(), rig.app.file_prefix(), "net_af_xdp0") {
        Ok(d) => panic!("dpdk-dumpcap captured with capture.pdump: false:\n{}", d.output()),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("Packet dump enable failed"), "dumpcap failed for another reason: {err}");
    assert!(rig.tb.ping("h1", "198.51.100.2", 2), "forwarding after the refused capture{}", rig.ctx());
    let (st, log) = rig.app.stop();
    assert!(st.success(), "appliance exit {st}:\n{log}");
    assert!(rig.app.hugepage_files().is_empty(), "eal.huge_unlink: false, and no file left after a clean stop");
}

// ---------------------------------------------------------------------------------------------
// The storage protocol's Wireshark dissector
// ---------------------------------------------------------------------------------------------

const PREFIX: &str = "2001:db8:f0:1::";
/// Source port of the crafted malformed requests.
const MALFORMED_PORT: u16 = 40001;
/// Source port of the crafted well-formed extras (probe, heuristic cases).
const EXTRA_PORT: u16 = 40002;

fn dissector() -> PathBuf {
    let p = workspace_root().join("tools/wireshark/aplstorage.lua");
    assert!(p.is_file(), "{} is missing", p.display());
    p
}

/// `tshark -X lua_script:<dissector> -r pcap args...`
fn tshark_lua(pcap: &Path, args: &[&str]) -> String {
    let lua = format!("lua_script:{}", dissector().display());
    let mut all = vec!["-X", lua.as_str()];
    all.extend_from_slice(args);
    tshark(pcap, &all)
}

/// `-T fields` rows of the packets matching `filter`, decoded with the dissector.
fn fields(pcap: &Path, filter: &str, fields: &[&str]) -> Vec<Vec<String>> {
    let mut args = vec!["-Y", filter, "-T", "fields", "-E", "separator=/t", "-E", "aggregator=,", "-E", "occurrence=a"];
    for f in fields {
        args.extend(["-e", f]);
    }
    tshark_lua(pcap, &args)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let mut v: Vec<String> = l.split('\t').map(str::to_string).collect();
            v.resize(fields.len(), String::new());
            v
        })
        .collect()
}

/// `tshark -z expert,warn,<filter>`: the warnings and errors, empty when there are none.
fn expert_warnings(pcap: &Path, filter: &str) -> String {
    let z = format!("expert,warn,{filter}");
    let out = tshark_lua(pcap, &["-q", "-z", &z]);
    if out.lines().any(|l| l.starts_with("Errors (") || l.starts_with("Warns (")) {
        out
    } else {
        String::new()
    }
}

/// Sends, from h1, crafted datagrams (stdlib Python, one UDP socket per source port):
/// well-formed extras from EXTRA_PORT, then malformed requests from MALFORMED_PORT, in the
/// order the test expects them.
const CRAFT: &str = r#"
import socket, struct, sys, time
prefix, extra_port, bad_port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
H = struct.Struct("!HBBHHQQQII")
def hdr(op, obj, rid, off=0, length=0, magic=0x4153, ver=1, status=0):
    return H.pack(magic, ver, op, status, 0, rid, obj, off, length, 0)
def addr(obj):
    import ipaddress
    return str(ipaddress.IPv6Address(int(ipaddress.IPv6Address(prefix)) | obj))
def sock(port):
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    s.bind(("::", port))
    s.settimeout(2)
    return s
good, bad = sock(extra_port), sock(bad_port)
# A steering probe to a replica address: answered with who accepted it.
good.sendto(hdr(0x10, 0x2b, 9001), (addr(0x2b), 7878))
good.recvfrom(2048)
# A stat on another port: decoded by the heuristic (nothing answers it).
good.sendto(hdr(0x03, 0x2b, 9002), (addr(0x2b), 9999))
# Not storage at all on another port: left alone.
good.sendto(b"plain datagram, not a storage header; long enough to be looked at", (addr(0x2b), 9998))
time.sleep(0.05)
frames = [
    b"AS\x01\x03short",                                               # shorter than the header
    hdr(0x03, 0x2b, 9101, magic=0x1234),                              # bad magic
    hdr(0x03, 0x2b, 9102, ver=2),                                     # bad version
    hdr(0x01, 0x2b, 9103, 0, 1024) + struct.pack("!QQ", 5000, 1) + b"z" * 100,  # length > data
    hdr(0x33, 0x2b, 9104),                                            # unknown op
    hdr(0x02, 0x2b, 9105, 100, 2000),                                 # not a fragment
]
for f in frames:
    bad.sendto(f, (addr(0x2b), 7878))
    time.sleep(0.05)
print("sent", len(frames))
"#;

fn storage_config(device: &Path) -> String {
    edit_yaml(&demo_config(), |v| {
        let mut st = serde_yaml_ng::Mapping::new();
        st.insert("object_prefix".into(), Value::from(format!("{PREFIX}/64")));
        st.insert("device".into(), Value::from(device.display().to_string()));
        st.insert("size_mb".into(), Value::from(64));
        v["storage"] = Value::Mapping(st);
    })
}

fn obj_client(tb: &Testbed, args: &[&str]) -> String {
    let script = workspace_root().join("tests/helpers/obj_client.py").display().to_string();
    let mut all = vec!["python3", script.as_str(), PREFIX];
    all.extend_from_slice(args);
    output_text(&tb.exec_timeout("h1", &all, Duration::from_secs(120)))
}

#[test]
fn storage_dissector_decodes_requests_and_replies_and_flags_malformed_ones() {
    let tb = Testbed::up("dissect");
    let dev = DeviceFile::new("dissect");
    let apl = Appliance::start(&tb, &storage_config(&dev.0));
    let ctx = || format!("\n---- appliance log ----\n{}", apl.log_tail(30));
    let mut cap = Capture::start(&tb.h1(), "eth0", "udp");

    // Real traffic: a 5000-byte object (5 fragments, 2 chunks) put and got back, stat, list,
    // delete, and a stat of the deleted object.
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("in");
    let content: Vec<u8> = (0..5000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&src, &content).unwrap();
    let s = src.display().to_string();
    assert_eq!(obj_client(&tb, &["put", "42", &s]).trim(), "ok 5000", "put{}", ctx());
    let back = dir.path().join("out").display().to_string();
    assert_eq!(obj_client(&tb, &["get", "42", &back]).trim(), "ok 5000", "get{}", ctx());
    assert_eq!(obj_client(&tb, &["stat", "42"]).trim(), "size 5000 version 1 chunks 2 complete 1");
    assert!(obj_client(&tb, &["list"]).lines().any(|l| l.starts_with("42 5000 1")), "list{}", ctx());
    assert_eq!(obj_client(&tb, &["rm", "42"]).trim(), "ok");
    assert_eq!(obj_client(&tb, &["stat", "42"]).trim(), "status 1");
    let out = tb.exec_timeout(
        "h1",
        &["python3", "-c", CRAFT, PREFIX, &EXTRA_PORT.to_string(), &MALFORMED_PORT.to_string()],
        Duration::from_secs(60),
    );
    assert!(out.status.success() && output_text(&out).contains("sent 6"), "crafted: {}{}", output_text(&out), ctx());
    let pcap = cap.stop().to_path_buf();

    // Every datagram to or from the service port is claimed by the dissector.
    let udp_7878 = fields(&pcap, "udp.port == 7878", &["frame.number"]).len();
    let decoded = fields(&pcap, "udp.port == 7878 && aplstorage", &["frame.number"]).len();
    assert!(udp_7878 >= 2 * (5 + 1 + 5 + 1 + 1 + 1 + 1), "too few storage packets captured: {udp_7878}");
    assert_eq!(decoded, udp_7878, "storage packets the dissector did not claim");

    // The well-formed traffic (everything but the crafted malformed requests and the replies
    // to them) decodes without a warning.
    let warnings = expert_warnings(&pcap, &format!("!(udp.port == {MALFORMED_PORT})"));
    assert!(warnings.is_empty(), "expert warnings on well-formed traffic:\n{warnings}");
    let verbose = tshark_lua(&pcap, &["-V", "-Y", "aplstorage"]);
    assert!(!verbose.contains("Lua Error"), "the dissector failed:\n{verbose}");

    let cols = [
        "aplstorage.op",
        "aplstorage.status",
        "aplstorage.request_id",
        "aplstorage.object_id",
        "aplstorage.offset",
        "aplstorage.length",
        "aplstorage.chunk",
        "aplstorage.fragment",
        "aplstorage.object_size",
        "aplstorage.object_version",
        "_ws.col.Info",
    ];
    let normal = format!("aplstorage && !(udp.port == {MALFORMED_PORT}) && !(udp.port == {EXTRA_PORT})");
    let rows = fields(&pcap, &normal, &cols);
    let of = |op: &str| rows.iter().filter(|r| r[0] == op).cloned().collect::<Vec<_>>();
    let obj = "0x000000000000002a";

    // put: one request per fragment, each with the object's size and version and its place
    // in its chunk; every request id answered "ok" (retransmissions may repeat some).
    let puts = of("0x01");
    let mut frags: Vec<(String, String, String, String)> =
        puts.iter().map(|r| (r[4].clone(), r[5].clone(), r[6].clone(), r[7].clone())).collect();
    frags.sort_by_key(|f| f.0.parse::<u64>().unwrap());
    frags.dedup();
    let want: Vec<(String, String, String, String)> =
        [(0, 1024, 0, 0), (1024, 1024, 0, 1), (2048, 1024, 0, 2), (3072, 1024, 0, 3), (4096, 904, 1, 0)]
            .iter()
            .map(|(o, l, c, f)| (o.to_string(), l.to_string(), c.to_string(), f.to_string()))
            .collect();
    assert_eq!(frags, want, "put fragments (offset, length, chunk, fragment)");
    for r in &puts {
        assert_eq!((r[1].as_str(), r[3].as_str(), r[8].as_str(), r[9].as_str()), ("0", obj, "5000", "1"), "{r:?}");
        assert!(r[10].starts_with("put request id=") && r[10].contains("object=0x2a"), "info {:?}", r[10]);
    }
    let put_ids: BTreeSet<&str> = puts.iter().map(|r| r[2].as_str()).collect();
    let put_replies = of("0x81");
    let acked: BTreeSet<&str> = put_replies.iter().filter(|r| r[1] == "0").map(|r| r[2].as_str()).collect();
    assert_eq!(acked, put_ids, "every put request answered ok, by request id");
    assert!(put_replies.iter().all(|r| r[3] == obj && r[5] == "0" && r[10].starts_with("put reply ok")));

    // get: the replies carry size, version and the fragment; length = 16 + bytes.
    let get_replies = of("0x82");
    let mut got: Vec<(u64, u32)> = get_replies.iter().map(|r| (r[4].parse().unwrap(), r[5].parse().unwrap())).collect();
    got.sort();
    got.dedup();
    assert_eq!(got, vec![(0, 1040), (1024, 1040), (2048, 1040), (3072, 1040), (4096, 920)], "get replies");
    assert!(get_replies.iter().all(|r| r[1] == "0" && r[8] == "5000" && r[9] == "1"), "{get_replies:?}");

    // stat replies: found (size 5000, version 1, 2 chunks, complete) then, after delete,
    // not_found; list: the object; delete: ok.
    let stat = fields(
        &pcap,
        "aplstorage.op == 0x83",
        &[
            "aplstorage.status",
            "aplstorage.stat.size",
            "aplstorage.stat.version",
            "aplstorage.stat.chunks",
            "aplstorage.stat.complete",
            "_ws.col.Info",
        ],
    );
    assert!(stat.iter().any(|r| r[..5] == ["0", "5000", "1", "2", "1"]), "stat reply of the object: {stat:?}");
    assert!(stat.iter().any(|r| r[0] == "1" && r[5].starts_with("stat reply not_found")), "{stat:?}");
    let list = fields(
        &pcap,
        "aplstorage.op == 0x85",
        &["aplstorage.status", "aplstorage.list.count", "aplstorage.list.id", "aplstorage.list.size"],
    );
    assert!(list.iter().any(|r| r[0] == "0" && r[1] == "1" && r[2] == obj && r[3] == "5000"), "{list:?}");
    assert!(of("0x84").iter().any(|r| r[1] == "0" && r[3] == obj), "delete reply");
    assert!(!of("0x04").is_empty() && !of("0x03").is_empty() && !of("0x05").is_empty() && !of("0x02").is_empty());

    // Names, as a person reads them.
    for text in [
        "Op: put reply (0x81)",
        "= Operation: get (0x02)",
        "Status: ok (0)",
        "Status: not_found (1)",
        "Entry 0: object 0x2a, 5000 bytes, version 1",
        "= Complete: True",
        "[Chunk: 1]",
    ] {
        assert!(verbose.contains(text), "`{text}` not in tshark -V output");
    }

    // The probe reply names the replica address that accepted; the heuristic claims a storage
    // header on another port, and leaves other payloads alone.
    let probe = fields(&pcap, "aplstorage.op == 0x90", &["aplstorage.probe.accepted_by", "aplstorage.request_id"]);
    assert_eq!(probe, vec![vec![format!("{PREFIX}2b"), "9001".to_string()]], "probe reply");
    let heur = fields(&pcap, "udp.dstport == 9999 && aplstorage", &["aplstorage.op", "aplstorage.request_id"]);
    assert_eq!(heur, vec![vec!["0x03".to_string(), "9002".to_string()]], "heuristic on port 9999");
    assert_eq!(fields(&pcap, "udp.dstport == 9998", &["frame.number"]).len(), 1, "the plain datagram");
    let claimed = fields(&pcap, "udp.dstport == 9998 && aplstorage", &["frame.number"]);
    assert!(claimed.is_empty(), "the heuristic claimed a non-storage datagram: {claimed:?}");

    // The crafted malformed requests: one expert info each, in order.
    let bad = fields(&pcap, &format!("udp.srcport == {MALFORMED_PORT}"), &["_ws.expert.message"]);
    let messages: Vec<&str> = bad.iter().map(|r| r[0].as_str()).collect();
    let want = [
        "Storage header truncated: 9 bytes, 40 needed",
        "Bad magic 0x1234 (expected 0x4153)",
        "Unsupported version 2 (expected 1)",
        "Length 1024 means 1040 bytes of operation data, the packet has 116",
        "Unknown op 0x33",
        "Not a fragment: offset 100 (a multiple of 1024 expected), length 2000 (at most 1024)",
    ];
    assert_eq!(messages, want, "expert infos of the malformed requests: {bad:?}");
    let warned = expert_warnings(&pcap, &format!("udp.srcport == {MALFORMED_PORT}"));
    for w in want {
        assert!(warned.contains(w), "`{w}` not in tshark -z expert:\n{warned}");
    }
    for f in ["short", "bad_magic", "bad_version", "length_mismatch", "unknown_op", "bad_fragment"] {
        let n = fields(&pcap, &format!("udp.srcport == {MALFORMED_PORT} && aplstorage.expert.{f}"), &["frame.number"])
            .len();
        assert_eq!(n, 1, "packets flagged aplstorage.expert.{f}");
    }
}
