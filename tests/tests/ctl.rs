//! The operator CLI (`aplctl`) against a running appliance: every `show` command, run-time
//! route and SID changes (reaching the workers without stopping them: a flow keeps running
//! and loses nothing), NAT session clearing, trace, capture, config reload.
//! Run as root, serially: `sudo bash scripts/test.sh`.

use appliance_tests::appliance::edit_yaml;
use appliance_tests::proc::output_text;
use appliance_tests::testbed::workspace_root;
use appliance_tests::{demo_config, Appliance, Rig, Testbed};
use serde_yaml_ng::Value;
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// configs/nat.yaml: the NAT testbed's appliance (with `nat: false`, a plain router there).
fn nat_testbed_config(nat: bool) -> String {
    let p = workspace_root().join("configs/nat.yaml");
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    edit_yaml(&text, |v| {
        if !nat {
            v.as_mapping_mut().unwrap().remove("nat");
            v["lcores"].as_mapping_mut().unwrap().remove("mapper");
        }
    })
}

/// A background helper (`tests/helpers/seq_udp.py`) whose stdout we read line by line.
struct Helper {
    child: Child,
    out: BufReader<std::process::ChildStdout>,
}

impl Helper {
    fn start(tb: &Testbed, ns: &str, args: &[&str]) -> Helper {
        let script = workspace_root().join("tests/helpers/seq_udp.py");
        let mut child = Command::new("ip")
            .args(["netns", "exec", &tb.ns(ns), "python3"])
            .arg(&script)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn seq_udp.py");
        let out = BufReader::new(child.stdout.take().unwrap());
        Helper { child, out }
    }

    fn line(&mut self) -> String {
        let mut l = String::new();
        self.out.read_line(&mut l).expect("helper output");
        l.trim().to_string()
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn seqs(line: &str) -> BTreeSet<u32> {
    line.split(',').filter(|s| !s.is_empty()).map(|s| s.parse().expect("a sequence number")).collect()
}

#[test]
fn route_change_at_run_time_moves_a_flow_without_loss() {
    let mut tb = Testbed::up_nat("ctlroute");
    let app = Appliance::start(&tb, &nat_testbed_config(false));
    // 203.0.113.9 lives on both subscribers; the server reaches it (and them) through the appliance.
    for ns in ["s1", "s2"] {
        tb.exec_ok(ns, &["ip", "addr", "add", "203.0.113.9/32", "dev", "lo"]);
    }
    tb.exec_ok("srv", &["ip", "route", "add", "203.0.113.0/24", "via", "198.51.100.1"]);
    tb.exec_ok("srv", &["ip", "route", "add", "100.64.0.0/24", "via", "198.51.100.1"]);
    for s in ["100.64.0.10", "100.64.0.11"] {
        assert!(tb.ping("srv", s, 1), "srv cannot reach {s} through the appliance");
    }
    app.ctl_ok(&["route", "add", "203.0.113.9/32", "--via", "100.64.0.10", "--port", "inside"]);
    assert!(app.ctl_ok(&["show", "routes"]).contains("203.0.113.9/32"));
    let mut r1 = Helper::start(&tb, "s1", &["recv", "5555", "9"]);
    let mut r2 = Helper::start(&tb, "s2", &["recv", "5555", "9"]);
    assert_eq!((r1.line(), r2.line()), ("ready".into(), "ready".into()));
    // 3000 datagrams, one per ms; the route moves to s2 a second into the flow.
    let mut sender = Helper::start(&tb, "srv", &["send", "203.0.113.9", "5555", "3000", "1"]);
    std::thread::sleep(Duration::from_millis(1000));
    let moved = app.ctl_ok(&["route", "add", "203.0.113.9/32", "--via", "100.64.0.11", "--port", "inside"]);
    assert!(moved.contains("generation"), "{moved}");
    assert_eq!(sender.line(), "sent 3000");
    let (a, b) = (seqs(&r1.line()), seqs(&r2.line()));
    eprintln!("s1 got {} datagrams (last {:?}), s2 got {} (first {:?})", a.len(), a.last(), b.len(), b.first());
    assert!(!a.is_empty() && !b.is_empty(), "the flow reached s1 ({}) then s2 ({})", a.len(), b.len());
    assert!(a.last() < b.first(), "the route moved once: s1 then s2");
    let all: BTreeSet<u32> = a.union(&b).copied().collect();
    assert_eq!(
        all.len(),
        3000,
        "datagrams lost: {:?}",
        (0..3000).filter(|n| !all.contains(n)).take(20).collect::<Vec<_>>()
    );
    // Deleting the route: the flow's destination is unreachable again.
    app.ctl_ok(&["route", "del", "203.0.113.9/32"]);
    assert!(!app.ctl_ok(&["show", "routes"]).contains("203.0.113.9/32"));
    let bad = app.ctl(&["route", "del", "203.0.113.9/32"]);
    assert!(!bad.status.success() && output_text(&bad).contains("no static route"), "{}", output_text(&bad));
    drop(app);
    tb.down();
}

#[test]
fn every_show_command_trace_capture_and_nat_clear() {
    let mut tb = Testbed::up_nat("ctlshow");
    let app = Appliance::start(&tb, &nat_testbed_config(true));
    assert!(tb.ping("s1", "198.51.100.2", 2), "s1 → srv through the NAT");
    let interfaces = app.ctl_ok(&["show", "interfaces"]);
    assert!(interfaces.contains("inside") && interfaces.contains("outside") && interfaces.contains("100.64.0.1/24"));
    for cmd in ["routes", "neighbors", "storage", "workers", "errors", "version"] {
        let out = app.ctl_ok(&["show", cmd]);
        assert!(!out.is_empty(), "show {cmd} printed nothing");
    }
    assert!(app.ctl_ok(&["show", "neighbors"]).contains("100.64.0.10"));
    assert!(app.ctl_ok(&["show", "routes"]).contains("nat pool"));
    assert!(app.ctl_ok(&["show", "srv6", "sids"]).contains("sid"));
    assert!(app.ctl_ok(&["show", "srv6", "policies"]).contains("no steering"));
    let sessions = app.ctl_ok(&["show", "nat", "sessions", "inside=100.64.0.10"]);
    assert!(sessions.contains("icmp") && sessions.contains("100.64.0.10"), "{sessions}");
    assert!(app.ctl_ok(&["show", "nat", "summary"]).contains("sessions"));
    // --json: the same data for programs.
    let json: serde_json::Value = serde_json::from_str(&app.ctl_ok(&["--json", "show", "interfaces"])).unwrap();
    assert_eq!(json[0]["name"], "inside");
    assert!(json[0]["rx_packets"].as_u64().unwrap() > 0);
    // The HTTP pages are the same API: JSON for `show`, refused for changes.
    let api =
        |path: &str| output_text(&tb.exec(&tb.rtr(), &["curl", "-s", &format!("http://{}{path}", app.metrics_addr())]));
    let summary: serde_json::Value = serde_json::from_str(&api("/api/show/nat/summary")).unwrap();
    assert!(summary["sessions"].as_u64().unwrap() >= 1, "{summary}");
    assert!(api("/api/route/del/0.0.0.0%2F0").contains("only show commands"));
    assert!(api("/neighbors").contains("100.64.0.10"));
    // clear counters: the CLI's view starts again.
    app.ctl_ok(&["clear", "counters"]);
    let json: serde_json::Value = serde_json::from_str(&app.ctl_ok(&["--json", "show", "interfaces"])).unwrap();
    assert!(json[0]["rx_packets"].as_u64().unwrap() < 3, "{json}");
    // Trace: the next packets' stages and verdicts.
    app.ctl_ok(&["trace", "add", "4"]);
    assert!(tb.ping("s1", "198.51.100.2", 1));
    let trace = app.ctl_ok(&["show", "trace"]);
    assert!(trace.contains("l2-input -> ip4-input -> nat44"), "{trace}");
    assert!(trace.contains("IPv4 100.64.0.10 > 198.51.100.2"), "{trace}");
    // Capture: a pcap tshark reads.
    let pcap = app.work_dir().join("cap.pcap");
    let pcap_s = pcap.display().to_string();
    app.ctl_ok(&["capture", "start", &pcap_s, "--port", "inside"]);
    assert!(tb.ping("s1", "198.51.100.2", 3));
    let stopped = app.ctl_ok(&["capture", "stop"]);
    assert!(stopped.contains("packets written"), "{stopped}");
    let t = Command::new("tshark")
        .args(["-r", &pcap_s, "-Y", "icmp.type == 8", "-T", "fields", "-e", "ip.src"])
        .output()
        .unwrap();
    let srcs = String::from_utf8_lossy(&t.stdout);
    assert!(t.status.success() && srcs.lines().filter(|l| *l == "100.64.0.10").count() >= 3, "tshark: {srcs}");
    // clear nat sessions: gone, and new packets make new ones.
    let cleared = app.ctl_ok(&["clear", "nat", "sessions"]);
    assert!(cleared.contains("sessions retired") && !cleared.starts_with("0 "), "{cleared}");
    assert!(app.ctl_ok(&["show", "nat", "sessions"]).contains("0 sessions"));
    assert!(tb.ping("s1", "198.51.100.2", 1), "traffic after the clear gets a new mapping");
    assert!(app.ctl_ok(&["show", "nat", "sessions"]).contains("1 sessions"));
    // Errors name what is wrong, with a non-zero exit.
    let bad = app.ctl(&["show", "nonsense"]);
    assert_eq!(bad.status.code(), Some(1), "{}", output_text(&bad));
    drop(app);
    tb.down();
}

#[test]
fn sids_change_at_run_time_and_reload_applies_the_file() {
    let rig = Rig::with_config("ctlsid", &demo_config());
    let (tb, app) = (&rig.tb, &rig.app);
    tb.exec_ok("h1", &["ip", "-6", "route", "add", "2001:db8:a::/48", "via", "2001:db8:1::1"]);
    let sid = "2001:db8:a::99";
    assert!(!tb.ping("h1", sid, 1), "no SID yet");
    app.ctl_ok(&["sid", "add", sid, "--behavior", "end"]);
    assert!(tb.ping("h1", sid, 2), "the new SID answers at once");
    let sids = app.ctl_ok(&["show", "srv6", "sids"]);
    assert!(sids.contains(sid) && sids.contains("End"), "{sids}");
    app.ctl_ok(&["sid", "del", sid]);
    assert!(!tb.ping("h1", sid, 1), "a removed SID stops its traffic");
    // reload: the file gains a SID and loses nothing else; a changed port needs a restart.
    let file = std::fs::read_to_string(app.config_path()).unwrap();
    let edited = edit_yaml(&file, |v| {
        let m = v.as_mapping_mut().expect("a mapping");
        let srv6: Value =
            serde_yaml_ng::from_str(&format!("{{local_sids: [{{sid: \"{sid}\", behavior: end}}]}}")).unwrap();
        m.insert("srv6".into(), srv6);
        let pipeline = m.entry("pipeline".into()).or_insert_with(|| Value::Mapping(Default::default()));
        pipeline.as_mapping_mut().unwrap().insert("burst_size".into(), 16u64.into());
    });
    std::fs::write(app.config_path(), edited).unwrap();
    let reloaded = app.ctl_ok(&["reload"]);
    assert!(reloaded.contains("1 SIDs") && reloaded.contains("needs a restart: pipeline"), "{reloaded}");
    assert!(tb.ping("h1", sid, 2), "the reloaded SID answers");
    // SIGHUP does the same (the file is unchanged: still answers).
    let _ = Command::new("kill").args(["-HUP", &app.pid().to_string()]).status();
    std::thread::sleep(Duration::from_millis(500));
    assert!(app.log().contains("SIGHUP: config reloaded"), "{}", app.log_tail(20));
    assert!(tb.ping("h1", sid, 1));
}
