//! The hostile corpus (`appliance_tests::hostile`) against the real binary between kernel
//! hosts: every frame is sent from h1's eth0 through a packet socket, and its exact outcome
//! is checked: the drop reason that moves (by one, and no other), the ICMP error or answer
//! that comes back to h1, the frame that reaches h2, or the neighbour entry learned from it.
//! After the barrage, forwarding both ways and the neighbour table are what they were; then
//! the overrides RFC 826 and RFC 4861 oblige the node to accept are checked, and that a
//! static neighbour is never overridden (docs/hostile-input.md).
//!
//! Run as root, serially:
//! `APPLIANCE_BIN=$PWD/target/release/appliance cargo test --release -p appliance-tests --test hostile -- --test-threads=1`
//! (`HOSTILE_CASES=prefix` runs only the cases whose name starts with it.)

use appliance_tests::hostile::{self, Case, Expect, H1_MAC, IN_MAC, OUT_MAC};
use appliance_tests::tools::{scapy_python, RawSend};
use appliance_tests::{demo_config, edit_yaml, metric_sum, parse_samples, Rig, Testbed};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

/// Sends frames from a packet socket on `eth0` of a namespace and reports what it receives
/// (a stdlib-only Python kept running for the whole test).
const WIRE_PY: &str = r#"
import socket, sys, select, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
s.bind((sys.argv[1], 0))
try:
    s.setsockopt(263, 23, 1)  # SOL_PACKET, PACKET_IGNORE_OUTGOING: not our own frames
except OSError:
    pass
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
out = sys.stdout
for line in sys.stdin:
    cmd = line.split()
    if not cmd:
        continue
    if cmd[0] == 'send':
        try:
            s.send(bytes.fromhex(cmd[1]))
            out.write('sent\n')
        except OSError as e:
            out.write('refused %d\n' % e.errno)
    elif cmd[0] == 'recv':
        deadline = time.time() + int(cmd[1]) / 1000.0
        while True:
            left = deadline - time.time()
            r, _, _ = select.select([s], [], [], max(left, 0))
            if r:
                out.write('frame %s\n' % s.recv(65535).hex())
            elif left <= 0:
                break
        out.write('end\n')
    out.flush()
"#;

/// A packet socket in a namespace, driven over the Python's stdin/stdout.
struct Wire {
    child: Child,
    stdin: ChildStdin,
    out: BufReader<ChildStdout>,
}

impl Wire {
    fn start(tb: &Testbed, ns: &str) -> Wire {
        let py = scapy_python();
        let mut child = tb
            .command(ns, &[&py.to_string_lossy(), "-u", "-c", WIRE_PY, "eth0"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the packet socket helper");
        let stdin = child.stdin.take().unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        Wire { child, stdin, out }
    }

    fn line(&mut self) -> String {
        let mut l = String::new();
        let n = self.out.read_line(&mut l).expect("read from the packet socket helper");
        assert!(n > 0, "the packet socket helper exited");
        l.trim_end().to_string()
    }

    fn send(&mut self, frame: &[u8]) -> RawSend {
        let hex: String = frame.iter().map(|b| format!("{b:02x}")).collect();
        writeln!(self.stdin, "send {hex}").unwrap();
        let l = self.line();
        match l.strip_prefix("refused ") {
            Some(e) => RawSend::Refused(e.parse().unwrap_or(-1)),
            None => {
                assert_eq!(l, "sent");
                RawSend::Sent
            }
        }
    }

    /// Frames received so far, waiting up to `ms` for more.
    fn recv(&mut self, ms: u64) -> Vec<Vec<u8>> {
        writeln!(self.stdin, "recv {ms}").unwrap();
        let mut frames = Vec::new();
        loop {
            let l = self.line();
            if l == "end" {
                return frames;
            }
            let hex = l.strip_prefix("frame ").expect("a frame line");
            frames.push((0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect());
        }
    }
}

impl Drop for Wire {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A UDP socket on [::]:40001 that reads and discards (the storage cases' client port).
const UDP_SINK_PY: &str = "import socket\ns = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)\ns.bind(('::', 40001))\nwhile True:\n    s.recv(65535)\n";

/// Drop reasons that kernel hosts can move on their own (MLD reports to groups the
/// appliance is not in): not held against a case.
const NOISE: &[&str] = &["ipv6_not_routed"];

fn drops(metrics: &str) -> BTreeMap<String, f64> {
    parse_samples(metrics)
        .into_iter()
        .filter(|s| s.name == "appliance_drops_total")
        .map(|s| (s.label("reason").unwrap_or_default().to_string(), s.value))
        .collect()
}

fn contains(frame: &[u8], tag: &[u8]) -> bool {
    frame.windows(tag.len()).any(|w| w == tag)
}

/// (IP protocol or next header, ICMP type, code) of an IPv4 or IPv6 frame carrying ICMP.
fn icmp_of(f: &[u8]) -> Option<(u16, u8, u8)> {
    match u16::from_be_bytes([*f.get(12)?, *f.get(13)?]) {
        0x0800 if f.get(23) == Some(&1) => {
            let l4 = 14 + usize::from(f[14] & 0x0f) * 4;
            Some((0x0800, *f.get(l4)?, *f.get(l4 + 1)?))
        }
        0x86dd if f.get(20) == Some(&58) => Some((0x86dd, *f.get(54)?, *f.get(55)?)),
        _ => None,
    }
}

/// Whether the IP source of `f` is one of the appliance's addresses (not a host it forwards for).
fn from_appliance(f: &[u8]) -> bool {
    match u16::from_be_bytes([f[12], f[13]]) {
        0x0800 => {
            f.len() >= 34 && [hostile::IN4.octets(), hostile::OUT4.octets()].contains(&[f[26], f[27], f[28], f[29]])
        }
        0x86dd => {
            let src = f.get(22..38).map(|s| <[u8; 16]>::try_from(s).unwrap());
            let ours =
                [hostile::IN6, hostile::link_local(IN_MAC), hostile::SID_END, hostile::SID_X, hostile::SID_STORAGE];
            src.is_some_and(|s| ours.iter().any(|a| a.octets() == s))
        }
        _ => true,
    }
}

/// Whether `f`, received by h1 from the appliance, is the answer `expect` wants for `case`.
fn is_answer(case: &Case, f: &[u8]) -> bool {
    let tagged = |f: &[u8]| case.tag.as_ref().is_none_or(|t| contains(f, t));
    match case.expect {
        Expect::Icmp4(t, c, _) => icmp_of(f) == Some((0x0800, t, c)) && tagged(f),
        Expect::Icmp6(t, c, _) => icmp_of(f) == Some((0x86dd, t, c)) && tagged(f),
        Expect::Echo4 => icmp_of(f) == Some((0x0800, 0, 0)) && tagged(f),
        Expect::Echo6 => icmp_of(f) == Some((0x86dd, 129, 0)) && tagged(f),
        // An ARP reply to the sender hardware address the case used.
        Expect::ArpReply => {
            f.len() >= 42 && f[12..14] == [8, 6] && f[20..22] == [0, 2] && f[32..38] == case.frame[22..28]
        }
        Expect::NdAdvert => {
            icmp_of(f).is_some_and(|(e, t, _)| e == 0x86dd && t == 136)
                && f.len() >= 78
                && f[62..78] == hostile::IN6.octets()
        }
        Expect::StorageReply => f.len() >= 62 && f[12..14] == [0x86, 0xdd] && f[20] == 17 && f[54..56] == [0x1e, 0xc6],
        _ => false,
    }
}

struct Outcome {
    drops_before: BTreeMap<String, f64>,
    drops_after: BTreeMap<String, f64>,
    learned: f64,
    at_h1: Vec<Vec<u8>>,
    at_h2: Vec<Vec<u8>>,
}

impl Outcome {
    fn delta(&self, reason: &str) -> f64 {
        self.drops_after.get(reason).copied().unwrap_or(0.0) - self.drops_before.get(reason).copied().unwrap_or(0.0)
    }

    /// Reasons that moved, but `except` and noise.
    fn others(&self, except: Option<&str>) -> Vec<(String, f64)> {
        self.drops_after
            .keys()
            .filter(|r| Some(r.as_str()) != except && !NOISE.contains(&r.as_str()))
            .map(|r| (r.clone(), self.delta(r)))
            .filter(|(_, d)| *d != 0.0)
            .collect()
    }

    /// Frames at h2 that carry the case's tag (forwarded by the appliance).
    fn forwarded(&self, case: &Case) -> usize {
        let Some(tag) = &case.tag else { return 0 };
        self.at_h2.iter().filter(|f| f[6..12] == OUT_MAC && contains(f, tag)).count()
    }

    fn answers(&self, case: &Case) -> usize {
        self.at_h1.iter().filter(|f| f[6..12] == IN_MAC && is_answer(case, f)).count()
    }

    /// Frames from one of the appliance's own addresses at h1 carrying the tag (an ICMP
    /// error quoting it, an echo); what h2 answers to a forwarded packet does not count.
    fn tagged_at_h1(&self, case: &Case) -> usize {
        let Some(tag) = &case.tag else { return 0 };
        self.at_h1.iter().filter(|f| f[6..12] == IN_MAC && contains(f, tag) && from_appliance(f)).count()
    }
}

struct Run<'a> {
    rig: &'a Rig,
    h1: Wire,
    h2: Wire,
}

impl Run<'_> {
    fn snapshot(&self) -> (BTreeMap<String, f64>, f64) {
        let m = self.rig.app.metrics();
        (drops(&m), metric_sum(&m, "appliance_neighbors_learned_total", &[]))
    }

    /// Sends one case and watches until its outcome shows (or 3 s), then 250 ms more.
    fn play(&mut self, case: &Case) -> Outcome {
        self.h1.recv(0);
        self.h2.recv(0);
        let (drops_before, learned_before) = self.snapshot();
        match self.h1.send(&case.frame) {
            RawSend::Sent => {}
            RawSend::Refused(e) => panic!("h1's kernel refused case {} (errno {e})", case.name),
        }
        let mut o = Outcome {
            drops_after: drops_before.clone(),
            drops_before,
            learned: 0.0,
            at_h1: Vec::new(),
            at_h2: Vec::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            o.at_h1.extend(self.h1.recv(100));
            o.at_h2.extend(self.h2.recv(0));
            let (after, learned) = self.snapshot();
            o.drops_after = after;
            o.learned = learned - learned_before;
            let done = match case.expect {
                Expect::Drop(r) => o.delta(r) >= 1.0,
                Expect::Icmp4(_, _, r) | Expect::Icmp6(_, _, r) => o.delta(r) >= 1.0 && o.answers(case) >= 1,
                Expect::Forward => o.forwarded(case) >= 1,
                Expect::Learned => o.learned >= 1.0,
                _ => o.answers(case) >= 1,
            };
            if done || Instant::now() >= deadline {
                break;
            }
        }
        sleep(Duration::from_millis(250));
        o.at_h1.extend(self.h1.recv(0));
        o.at_h2.extend(self.h2.recv(0));
        let (after, learned) = self.snapshot();
        o.drops_after = after;
        o.learned = learned - learned_before;
        o
    }
}

/// Checks one outcome; returns what is wrong.
fn judge(case: &Case, o: &Outcome) -> Result<(), String> {
    let mut wrong = Vec::new();
    let expected_reason = match case.expect {
        Expect::Drop(r) | Expect::Icmp4(_, _, r) | Expect::Icmp6(_, _, r) => Some(r),
        _ => None,
    };
    if let Some(r) = expected_reason {
        if o.delta(r) != 1.0 {
            wrong.push(format!("drops{{reason={r}}} moved by {} (expected 1)", o.delta(r)));
        }
    }
    let others = o.others(expected_reason);
    if !others.is_empty() {
        wrong.push(format!("other drop reasons moved: {others:?}"));
    }
    let forwarded = o.forwarded(case);
    let want_fwd = usize::from(case.expect == Expect::Forward);
    if forwarded != want_fwd {
        wrong.push(format!("{forwarded} copies reached h2 (expected {want_fwd})"));
    }
    match case.expect {
        Expect::Drop(_) | Expect::Forward | Expect::Learned => {
            let n = o.tagged_at_h1(case);
            if n != 0 {
                wrong.push(format!("{n} frames carrying it came back to h1"));
            }
        }
        Expect::Icmp4(..) | Expect::Icmp6(..) | Expect::Echo4 | Expect::Echo6 => {
            let n = o.answers(case);
            if n != 1 {
                wrong.push(format!("{n} answers of the expected kind at h1 (expected exactly 1)"));
            }
        }
        Expect::ArpReply | Expect::NdAdvert | Expect::StorageReply => {
            if o.answers(case) == 0 {
                wrong.push("no answer at h1".to_string());
            }
        }
    }
    if case.expect == Expect::Learned && o.learned < 1.0 {
        wrong.push("nothing learned".to_string());
    }
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(format!("{} ({:?}): {}", case.name, case.expect, wrong.join("; ")))
    }
}

/// Pings until a reply comes (neighbours on both sides may still be resolving), 10 s at most.
fn assert_ping(rig: &Rig, ns: &str, addr: &str) {
    let mut last = String::new();
    for _ in 0..5 {
        let (ok, out) = rig.tb.ping_output(ns, addr, &["-c", "2", "-i", "0.2", "-W", "2"]);
        if ok {
            return;
        }
        last = out;
    }
    panic!("ping {addr} from {ns} failed:\n{last}{}", rig.ctx());
}

/// `aplctl --json show neighbors` as (port, ip) → (mac, state).
fn neighbors(rig: &Rig) -> BTreeMap<(String, String), (String, String)> {
    let text = rig.app.ctl_ok(&["--json", "show", "neighbors"]);
    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    let rows = v.get("data").unwrap_or(&v).as_array().cloned().unwrap_or_else(|| panic!("no rows: {text}"));
    rows.iter()
        .map(|r| {
            let s = |k: &str| r[k].as_str().unwrap_or_default().to_string();
            ((s("port"), s("ip")), (s("mac"), s("state")))
        })
        .collect()
}

fn quiet_hosts(tb: &Testbed) {
    for ns in ["h1", "h2"] {
        // No router solicitations or MLD reports of the hosts' own during the barrage.
        let _ = tb.sh(ns, "sysctl -qw net.ipv6.conf.eth0.router_solicitations=0");
    }
}

/// `HOSTILE_PORTS=af_packet`: run on the demo's af_packet ports. DPDK 22.11's af_packet PMD
/// joins a fanout group with PACKET_FANOUT_FLAG_DEFRAG, so the kernel reassembles or keeps
/// IPv4 fragments and none reaches the appliance: the IPv4 fragment cases are left out then.
/// By default the ports are af_xdp vdevs on the same veths, which deliver every frame.
fn af_packet() -> bool {
    std::env::var("HOSTILE_PORTS").as_deref() == Ok("af_packet")
}

/// The test config: the corpus's SIDs, a static neighbour on the inside port, af_xdp ports
/// (see [`af_packet`]).
fn config() -> String {
    edit_yaml(&hostile::config_yaml(&demo_config()), |v| {
        v["neighbors"] =
            serde_yaml_ng::from_str(r#"[{ port: inside, ip: "192.0.2.9", mac: "02:00:00:00:01:09" }]"#).unwrap();
        if !af_packet() {
            for (i, iface) in ["apl-in", "apl-out"].iter().enumerate() {
                v["ports"][i]["device"] = format!("net_af_xdp{i}").into();
                v["ports"][i]["args"] = format!("iface={iface}").into();
            }
        }
    })
}

#[test]
fn hostile_corpus_gets_its_exact_outcomes() {
    let rig = Rig::with_config("hostile", &config());
    quiet_hosts(&rig.tb);
    for (ns, addr) in [("h1", "198.51.100.2"), ("h1", "2001:db8:2::2"), ("h1", "192.0.2.1"), ("h1", "2001:db8:1::1")] {
        assert_ping(&rig, ns, addr);
    }
    let before = neighbors(&rig);
    let only = std::env::var("HOSTILE_CASES").unwrap_or_default();
    let cases: Vec<Case> = hostile::corpus()
        .into_iter()
        .filter(|c| c.name.starts_with(&only) && !(af_packet() && c.name.starts_with("ipv4_frag_")))
        .collect();
    // h1 listens where storage replies go, so its kernel answers them with no port
    // unreachable (which the storage SID would have to refuse).
    let mut sink = rig.tb.spawn("h1", &[&scapy_python().to_string_lossy(), "-c", UDP_SINK_PY]);
    let mut run = Run { rig: &rig, h1: Wire::start(&rig.tb, "h1"), h2: Wire::start(&rig.tb, "h2") };
    let mut failures = Vec::new();
    for case in &cases {
        if std::env::var_os("HOSTILE_VERBOSE").is_some() {
            eprintln!("case {}", case.name);
        }
        let o = run.play(case);
        if let Err(e) = judge(case, &o) {
            eprintln!("FAIL {e}");
            failures.push(e);
        }
    }
    drop(run);
    let _ = sink.kill();
    let _ = sink.wait();
    assert!(
        failures.is_empty(),
        "{} of {} cases did not get their outcome:\n{}{}",
        failures.len(),
        cases.len(),
        failures.join("\n"),
        rig.ctx()
    );
    eprintln!("{} cases, every one with its exact outcome", cases.len());

    // Still forwarding and answering, with the same neighbours.
    let mut rig = rig;
    assert!(rig.app.is_running(), "the appliance exited: {:?}{}", rig.app.try_status(), rig.ctx());
    for (ns, addr) in [("h1", "198.51.100.2"), ("h1", "2001:db8:2::2"), ("h2", "192.0.2.2"), ("h1", "192.0.2.1")] {
        assert_ping(&rig, ns, addr);
    }
    let after = neighbors(&rig);
    for key in [
        ("inside", "192.0.2.2"),
        ("inside", "2001:db8:1::2"),
        ("outside", "198.51.100.2"),
        ("outside", "2001:db8:2::2"),
    ] {
        let key = (key.0.to_string(), key.1.to_string());
        let (a, b) = (&before[&key], &after[&key]);
        assert_eq!(a.0, b.0, "{key:?}: MAC changed by the barrage");
        assert!(["reachable", "stale"].contains(&b.1.as_str()), "{key:?}: {b:?}");
    }
    let inside: Vec<_> = after.keys().filter(|(p, _)| p == "inside").map(|(_, ip)| ip.clone()).collect();
    let h1_ll = hostile::link_local(H1_MAC).to_string();
    for ip in &inside {
        assert!(
            ["192.0.2.2", "192.0.2.9", "2001:db8:1::2", h1_ll.as_str()].contains(&ip.as_str()),
            "the barrage created a neighbour entry for {ip}: {after:?}"
        );
    }
}

/// The overrides the RFCs oblige the node to accept (docs/hostile-input.md), and the
/// static neighbour it never lets the wire change.
#[test]
fn documented_overrides_and_static_neighbours() {
    let rig = Rig::with_config("override", &config());
    quiet_hosts(&rig.tb);
    assert_ping(&rig, "h1", "198.51.100.2");
    assert_ping(&rig, "h1", "2001:db8:2::2");
    let mut h1 = Wire::start(&rig.tb, "h1");
    let fake = [2, 0, 0, 0, 1, 0xee];
    let mac_of = |ip: &str| {
        let n = neighbors(&rig);
        n.get(&("inside".to_string(), ip.to_string())).cloned().unwrap_or_default()
    };
    let wait_mac = |ip: &str, want: &str| {
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let (mac, state) = mac_of(ip);
            if mac == want || Instant::now() >= deadline {
                return (mac, state);
            }
            sleep(Duration::from_millis(100));
        }
    };
    use appliance_tests::hostile::{arp, eth, BCAST, H1_4, H1_6};
    // RFC 826: a gratuitous ARP from a known neighbour's address takes.
    assert_eq!(h1.send(&eth(BCAST, fake, 0x0806, &arp(1, fake, H1_4, [0; 6], H1_4))), RawSend::Sent);
    assert_eq!(wait_mac("192.0.2.2", "02:00:00:00:01:ee").0, "02:00:00:00:01:ee", "RFC 826 merge{}", rig.ctx());
    // ... and the real one takes it back.
    assert_eq!(h1.send(&eth(BCAST, H1_MAC, 0x0806, &arp(1, H1_MAC, H1_4, [0; 6], H1_4))), RawSend::Sent);
    assert_eq!(wait_mac("192.0.2.2", "02:00:00:00:01:02").0, "02:00:00:00:01:02");
    // A static neighbour is never changed from the wire.
    let static_ip = std::net::Ipv4Addr::new(192, 0, 2, 9);
    assert_eq!(h1.send(&eth(BCAST, fake, 0x0806, &arp(2, fake, static_ip, IN_MAC, hostile::IN4))), RawSend::Sent);
    sleep(Duration::from_millis(500));
    assert_eq!(mac_of("192.0.2.9"), ("02:00:00:00:01:09".to_string(), "static".to_string()));
    // RFC 4861 §7.2.5: an unsolicited NA without override does not change the address ...
    let na = |mac: [u8; 6], flags: u32| {
        let all: std::net::Ipv6Addr = "ff02::1".parse().unwrap();
        let mut body = H1_6.octets().to_vec();
        body.extend_from_slice(&[2, 1]);
        body.extend_from_slice(&mac);
        let icmp = hostile::icmp6(H1_6, all, 136, 0, flags, &body);
        eth([0x33, 0x33, 0, 0, 0, 1], mac, 0x86dd, &hostile::ip6(H1_6, all, 58, 255, &icmp))
    };
    assert_eq!(h1.send(&na(fake, 0)), RawSend::Sent);
    sleep(Duration::from_millis(500));
    assert_eq!(mac_of("2001:db8:1::2").0, "02:00:00:00:01:02", "no override without the O flag");
    // ... with it, it does (stale), and the real host's NA takes it back.
    assert_eq!(h1.send(&na(fake, 0x2000_0000)), RawSend::Sent);
    let (mac, state) = wait_mac("2001:db8:1::2", "02:00:00:00:01:ee");
    assert_eq!((mac.as_str(), state.as_str()), ("02:00:00:00:01:ee", "stale"), "RFC 4861 override{}", rig.ctx());
    assert_eq!(h1.send(&na(H1_MAC, 0x2000_0000)), RawSend::Sent);
    assert_eq!(wait_mac("2001:db8:1::2", "02:00:00:00:01:02").0, "02:00:00:00:01:02");
    drop(h1);
    assert_ping(&rig, "h2", "2001:db8:1::2");
    assert_ping(&rig, "h2", "192.0.2.2");
}
