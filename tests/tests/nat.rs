//! Carrier-grade NAT44 with real kernel peers (scripts/nat-testbed.sh): two subscribers
//! on the inside LAN, a server outside, the appliance translating between them with the
//! pool 198.51.100.64/30 (configs/nat.yaml). Servers report the address they see
//! (tests/helpers/nat_probe.py), so every check is about what crossed the wire.
//! Run as root, serially: `sudo bash scripts/test.sh`.

use appliance_tests::appliance::edit_yaml;
use appliance_tests::proc::output_text;
use appliance_tests::testbed::workspace_root;
use appliance_tests::{Appliance, Testbed};
use serde_yaml_ng::Value;
use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread::sleep;
use std::time::{Duration, Instant};

const S1: &str = "100.64.0.10";
const SRV: &str = "198.51.100.2";
const SRV2: &str = "198.51.100.3";

fn nat_config(edit: impl FnOnce(&mut Value)) -> String {
    let p = workspace_root().join("configs/nat.yaml");
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    edit_yaml(&text, |v| edit(&mut v["nat"]))
}

fn probe_path() -> String {
    workspace_root().join("tests/helpers/nat_probe.py").display().to_string()
}

/// Runs the probe tool in `ns` and returns its stdout+stderr.
fn probe(tb: &Testbed, ns: &str, args: &[&str]) -> String {
    let path = probe_path();
    let mut all = vec!["python3", path.as_str()];
    all.extend_from_slice(args);
    let out = tb.exec_timeout(ns, &all, Duration::from_secs(30));
    output_text(&out)
}

/// The probe tool in the background, its stdout lines on a channel.
struct Bg {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Bg {
    fn start(tb: &Testbed, ns: &str, args: &[&str]) -> Bg {
        let path = probe_path();
        let mut child = Command::new("ip")
            .args(["netns", "exec", &tb.ns(ns), "python3", &path])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn probe");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Bg { child, lines }
    }

    /// The next line, within `timeout`.
    fn line(&self, timeout: Duration) -> Option<String> {
        self.lines.recv_timeout(timeout).ok()
    }

    /// Every line until the process ends (at most `timeout`).
    fn rest(mut self, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        while Instant::now() < deadline {
            match self.lines.recv_timeout(Duration::from_millis(100)) {
                Ok(l) => out.push(l),
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        out
    }
}

impl Drop for Bg {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Servers on `srv`: UDP echo on 9000 and 9001, TCP echo on 9100. Every host pings the
/// appliance's own address first, so neighbours are resolved on both sides before a test
/// sends bursts (the appliance holds only a few packets per unresolved neighbour).
fn servers(tb: &Testbed) -> (Bg, Bg) {
    for (ns, gw) in [("s1", "100.64.0.1"), ("s2", "100.64.0.1"), ("srv", "198.51.100.1")] {
        assert!(tb.ping(ns, gw, 1), "{ns} cannot ping the appliance at {gw}");
    }
    let udp = Bg::start(tb, "srv", &["udp-echo", "9000", "9001"]);
    assert_eq!(udp.line(Duration::from_secs(10)).as_deref(), Some("ready"));
    let tcp = Bg::start(tb, "srv", &["tcp-echo", "9100"]);
    assert_eq!(tcp.line(Duration::from_secs(10)).as_deref(), Some("ready"));
    (udp, tcp)
}

fn in_pool(a: Ipv4Addr) -> bool {
    let o = a.octets();
    o[0..3] == [198, 51, 100] && (64..=67).contains(&o[3])
}

/// "ADDR:PORT" → (address, port), checked to be in the pool.
fn public(endpoint: &str, ctx: &str) -> (Ipv4Addr, u16) {
    let (a, p) = endpoint.trim().split_once(':').unwrap_or_else(|| panic!("not ADDR:PORT: {endpoint:?} ({ctx})"));
    let a: Ipv4Addr = a.parse().unwrap_or_else(|_| panic!("not an address: {endpoint:?} ({ctx})"));
    assert!(in_pool(a), "{ctx}: the server saw {endpoint}, not a pool address");
    (a, p.parse().expect("port"))
}

/// `udp-probe` and the endpoint the server reported.
fn udp_public(tb: &Testbed, ns: &str, sport: u16, dst: &str, dport: u16) -> (Ipv4Addr, u16) {
    let out = probe(tb, ns, &["udp-probe", &sport.to_string(), dst, &dport.to_string()]);
    let reply = out
        .lines()
        .find_map(|l| l.strip_prefix("reply "))
        .unwrap_or_else(|| panic!("no reply from {dst}:{dport} to {ns}: {out}"));
    public(reply, &format!("{ns}:{sport} -> {dst}:{dport}"))
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        sleep(Duration::from_millis(200));
    }
}

#[test]
fn subscribers_reach_the_server_through_the_pool() {
    let tb = Testbed::up_nat("basic");
    let mut apl = Appliance::start(&tb, &nat_config(|_| {}));
    let _servers = servers(&tb);

    // Ping through the NAT (ICMP query mapping), both subscribers.
    assert!(tb.ping("s1", SRV, 3), "ping s1 -> server through the NAT\n{}", apl.log_tail(30));
    assert!(tb.ping("s2", SRV, 3), "ping s2 -> server through the NAT");

    // UDP: the server sees a pool address, never the subscriber's own.
    let (a1, p1) = udp_public(&tb, "s1", 40000, SRV, 9000);
    // Endpoint-independent mapping: the same inside endpoint to another server address
    // and port gets the same public endpoint.
    assert_eq!(udp_public(&tb, "s1", 40000, SRV2, 9001), (a1, p1), "EIM");
    // Paired pooling: another flow of s1 uses the same public address, another port.
    let (a1b, p1b) = udp_public(&tb, "s1", 40001, SRV, 9000);
    assert_eq!(a1b, a1, "one public address per subscriber");
    assert_ne!(p1b, p1);
    let (a2, _) = udp_public(&tb, "s2", 40000, SRV, 9000);

    // TCP, content checked end to end; the server sees s1's public address.
    let out = probe(&tb, "s1", &["tcp-send", SRV, "9100", "1000000"]);
    let peer = out.lines().find_map(|l| l.strip_prefix("peer ")).unwrap_or_else(|| panic!("{out}"));
    assert_eq!(public(peer, "tcp").0, a1, "TCP shares the subscriber's public address");
    let sent = out.lines().find_map(|l| l.strip_prefix("sent ")).unwrap_or_else(|| panic!("{out}"));
    let got = out.lines().find_map(|l| l.strip_prefix("sha256 ")).unwrap_or_else(|| panic!("{out}"));
    assert_eq!(sent, got, "the server received every byte intact");

    // An ICMP port unreachable from the server reaches the subscriber translated.
    let out = probe(&tb, "s1", &["udp-refused", "40010", SRV, "9999"]);
    assert!(out.contains("refused"), "the ICMP error did not reach s1's socket: {out}");

    // Endpoint-independent filtering: another server address may send to s1's mapping.
    let listen = Bg::start(&tb, "s1", &["udp-probe", "40002", SRV, "9000", "4"]);
    let reply = listen.line(Duration::from_secs(5)).expect("s1 probe reply");
    let (pa, pp) = public(reply.strip_prefix("reply ").unwrap_or(&reply), "s1 40002");
    probe(&tb, "srv", &["udp-send", "9555", &pa.to_string(), &pp.to_string(), "eif", SRV2]);
    let lines = listen.rest(Duration::from_secs(6));
    assert!(
        lines.iter().any(|l| l.starts_with(&format!("from {SRV2}:9555 eif"))),
        "EIF: a datagram from another remote address should reach s1: {lines:?}"
    );

    // Hairpinning, UDP: s2 opens a mapping, s1 sends to s2's public endpoint; s2 gets it
    // from s1's public endpoint.
    let s2 = Bg::start(&tb, "s2", &["udp-probe", "41000", SRV, "9000", "4"]);
    let reply = s2.line(Duration::from_secs(5)).expect("s2 probe reply");
    let (b, bp) = public(reply.strip_prefix("reply ").unwrap_or(&reply), "s2 41000");
    assert_eq!(b, a2);
    probe(&tb, "s1", &["udp-send", "42000", &b.to_string(), &bp.to_string(), "hairpin"]);
    let lines = s2.rest(Duration::from_secs(6));
    let from = lines
        .iter()
        .find_map(|l| l.strip_prefix("from ").and_then(|r| r.strip_suffix(" hairpin")))
        .unwrap_or_else(|| panic!("s2 did not get the hairpinned datagram: {lines:?}\n{}", apl.log_tail(20)));
    assert_eq!(public(from, "udp hairpin").0, a1, "s2 sees s1's public address");

    // Hairpinning, TCP: s2 listens behind its public endpoint, s1 connects to it.
    let s2 = Bg::start(&tb, "s2", &["tcp-hairpin-listen", "43000", SRV, "9100"]);
    let line = s2.line(Duration::from_secs(10)).expect("s2 public endpoint");
    let (b, bp) = public(line.strip_prefix("public ").unwrap_or(&line), "tcp hairpin listener");
    let out = probe(&tb, "s1", &["tcp-send", &b.to_string(), &bp.to_string(), "200000"]);
    let peer = out.lines().find_map(|l| l.strip_prefix("peer ")).unwrap_or_else(|| panic!("s1 tcp to {b}:{bp}: {out}"));
    assert_eq!(public(peer, "tcp hairpin").0, a1, "s2 sees s1's public address");
    let sent = out.lines().find_map(|l| l.strip_prefix("sent ")).unwrap_or_else(|| panic!("{out}"));
    let got = out.lines().find_map(|l| l.strip_prefix("sha256 ")).unwrap_or_else(|| panic!("{out}"));
    assert_eq!(sent, got);
    drop(s2);

    // The session listing shows s1's mapping; filters apply.
    let url = format!("http://{}/nat/sessions?inside={S1}&proto=udp", apl.metrics_addr());
    let listing = output_text(&tb.exec(&tb.rtr(), &["curl", "-sf", &url]));
    assert!(listing.contains(&format!("{S1}:40000")) && listing.contains(&format!("{a1}:{p1}")), "{listing}");
    assert!(!listing.contains("100.64.0.11"), "filtered by inside address: {listing}");
    let bad = format!("http://{}/nat/sessions?proto=sctp", apl.metrics_addr());
    assert!(output_text(&tb.exec(&tb.rtr(), &["curl", "-s", &bad])).contains("not tcp, udp or icmp"));

    // The outside cannot reach an inside address except through a mapping.
    tb.exec_ok("srv", &["ip", "route", "add", "100.64.0.0/24", "via", "198.51.100.1"]);
    assert!(!tb.ping("srv", S1, 2), "an inside address answered from outside");
    assert!(apl.metric_sum("appliance_drops_total", &[("reason", "nat_no_mapping")]) >= 2.0);

    assert!(apl.metric_sum("appliance_nat_sessions", &[]) >= 6.0);
    assert!(apl.metric_sum("appliance_nat_block_allocations_total", &[]) >= 2.0);
    assert!(apl.metric_sum("appliance_nat_cache_hits_total", &[]) > 0.0);
    let (status, log) = apl.stop();
    assert!(status.success(), "{log}");
    assert!(
        log.contains("nat_block event=allocated") && log.contains(&format!("subscriber={S1}")),
        "block log:\n{log}"
    );
}

#[test]
fn filtering_limits_and_timeouts() {
    let tb = Testbed::up_nat("limits");
    let apl = Appliance::start(
        &tb,
        &nat_config(|n| {
            n["filtering"] = Value::from("address-dependent");
            n["ports_per_block"] = Value::from(64);
            n["blocks_per_subscriber_max"] = Value::from(1);
            n["udp_timeout_ms"] = Value::from(2000);
        }),
    );
    let _servers = servers(&tb);

    // Per-subscriber limit: one block of 64 ports. 70 flows from s1: 64 get through.
    let out = probe(&tb, "s1", &["udp-many", "70", SRV, "9000"]);
    assert!(out.contains("replies 64"), "s1 should get exactly 64 mappings: {out}\n{}", apl.log_tail(20));
    assert!(apl.metric_sum("appliance_nat_subscriber_limit_hits_total", &[]) >= 1.0);
    assert!(apl.metric_sum("appliance_drops_total", &[("reason", "nat_subscriber_limit")]) >= 1.0);
    // Others are not hurt.
    udp_public(&tb, "s2", 40000, SRV, 9000);

    // Timeout: with no traffic the 64 mappings retire after 2 s and s1's block is
    // released (logged); s1 is served again, from a new block.
    wait_for("s1's mappings to time out", Duration::from_secs(15), || {
        apl.metric_sum("appliance_nat_mappings_retired_total", &[]) >= 64.0
    });
    assert!(apl.metric_sum("appliance_nat_block_releases_total", &[]) >= 1.0);
    assert!(apl.log().contains("nat_block event=released"), "{}", apl.log_tail(20));
    let (a, p) = udp_public(&tb, "s1", 40000, SRV, 9000);

    // Address-dependent filtering: the server's address may answer from any port;
    // another address may not.
    let listen = Bg::start(&tb, "s1", &["udp-probe", "40000", SRV, "9000", "3"]);
    let reply = listen.line(Duration::from_secs(5)).expect("probe reply");
    assert_eq!(public(reply.strip_prefix("reply ").unwrap_or(&reply), "adf"), (a, p), "same mapping while it lives");
    let (a_s, p_s) = (a.to_string(), p.to_string());
    probe(&tb, "srv", &["udp-send", "9555", &a_s, &p_s, "same-address", SRV]);
    probe(&tb, "srv", &["udp-send", "9556", &a_s, &p_s, "other-address", SRV2]);
    let lines = listen.rest(Duration::from_secs(5));
    assert!(lines.iter().any(|l| l.ends_with("same-address")), "ADF lets the same address in: {lines:?}");
    assert!(!lines.iter().any(|l| l.ends_with("other-address")), "ADF must filter another address: {lines:?}");
    assert!(apl.metric_sum("appliance_drops_total", &[("reason", "nat_filtered")]) >= 1.0);
}

/// Two workers, two rx queues per port (af_packet fanout spreads flows; the appliance's veths
/// carry an XDP pass program so the default hosts segment): the return traffic of a flow
/// often reaches the worker that did not create its mapping. That worker asks the mapping server (a state request)
/// instead of dropping the packet.
#[test]
fn two_workers_return_traffic_on_the_other_worker() {
    let tb = Testbed::up_nat_queues("twow", 2);
    let config = nat_config(|_| {});
    let config = edit_yaml(&config, |v| {
        appliance_tests::appliance::two_workers(v);
        v["lcores"]["mapper"] = appliance_tests::appliance::lcore(3, 0);
    });
    let apl = Appliance::start(&tb, &config);
    let _servers = servers(&tb);

    // 200 flows, one datagram each way: every reply must come back.
    let out = probe(&tb, "s1", &["udp-many", "200", SRV, "9000"]);
    assert!(out.contains("replies 200"), "every flow's reply must reach s1: {out}\n{}", apl.log_tail(20));
    let requests = |kind: &str| apl.metric_sum("appliance_nat_requests_total", &[("kind", kind)]);
    assert!(requests("outbound") >= 200.0, "one outbound request per new flow");
    assert!(
        requests("inbound") >= 1.0,
        "with two workers some replies arrive on the worker without the entry and are resolved by a state request"
    );
    assert_eq!(apl.metric_sum("appliance_drops_total", &[("reason", "nat_no_mapping")]), 0.0);
    // Both workers translated traffic.
    let m = apl.metrics();
    for lcore in ["1", "2"] {
        let misses = appliance_tests::metric_sum(&m, "appliance_nat_cache_misses_total", &[("lcore", lcore)]);
        assert!(misses >= 1.0, "worker {lcore} saw no NAT traffic");
    }
    // And a TCP transfer through both, content checked.
    let out = probe(&tb, "s1", &["tcp-send", SRV, "9100", "2000000"]);
    let sent = out.lines().find_map(|l| l.strip_prefix("sent ")).unwrap_or_else(|| panic!("{out}"));
    let got = out.lines().find_map(|l| l.strip_prefix("sha256 ")).unwrap_or_else(|| panic!("{out}"));
    assert_eq!(sent, got);
}
