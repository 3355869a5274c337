//! A real Prometheus server scrapes the appliance's and the metadata service's /metrics, and
//! the real `promtool check metrics` checks what they serve.
//!
//! The test starts its own `prometheus` (Debian package `prometheus`; never the system
//! service) inside the router namespace, where the appliance's endpoint listens on the
//! namespace's loopback, with a generated config scraping every second, storage in a temp
//! dir and a free port of that namespace. A guard stops it by PID and removes its files, also
//! when the test fails. The HTTP API answers are read with curl and jq.
//!
//! 1. The demo router: scraped, its counters ingested as served, promtool clean.
//! 2. Every feature at once (router, NAT, SRv6 SIDs, the storage service) and objmeta, with
//!    traffic through each: both expositions are promtool clean, and every PromQL expression
//!    of the Grafana dashboard (tools/grafana/appliance.json) returns a result in the real
//!    Prometheus.
//!
//! Run as root, serially:
//! `cargo test --release -p appliance-tests --test prometheus -- --test-threads=1`.

use appliance_tests::appliance::lcore;
use appliance_tests::images::{bin, Proc};
use appliance_tests::storage::DeviceFile;
use appliance_tests::testbed::workspace_root;
use appliance_tests::tools::{free_tcp_port, poll_until};
use appliance_tests::{demo_config, edit_yaml, output_text, run_timeout, Appliance, Rig, Testbed};
use serde_yaml_ng::Value;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

const H2_V4: &str = "198.51.100.2";
const PINGS: u32 = 20;

/// `name` (`prometheus`, `promtool`) in /usr/bin or on PATH (Debian's package `prometheus`).
fn prometheus_bin(name: &str) -> PathBuf {
    for dir in ["/usr/bin", "/usr/local/bin"] {
        let p = Path::new(dir).join(name);
        if p.is_file() {
            return p;
        }
    }
    let out = run_timeout(Command::new("sh").args(["-c", &format!("command -v {name}")]), Duration::from_secs(10));
    let p = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        out.status.success() && !p.is_empty(),
        "no {name} binary: install the Debian package `prometheus` (scripts/setup.sh does)"
    );
    PathBuf::from(p)
}

/// A Prometheus server of our own in namespace `ns`. Dropping it stops it (SIGTERM by PID,
/// SIGKILL after 10 s) and removes its config, log and data (a temp dir).
struct PromServer {
    child: Option<Child>,
    pid: i32,
    ns: String,
    addr: String,
    dir: Option<tempfile::TempDir>,
}

impl PromServer {
    /// Scrapes every `(job, address)` of `targets` each second.
    fn start(tb: &Testbed, ns: &str, targets: &[(&str, &str)]) -> PromServer {
        let dir = tempfile::Builder::new().prefix("appliance-prometheus.").tempdir().expect("temp dir");
        let port = free_tcp_port(tb, ns, 19090);
        let addr = format!("127.0.0.1:{port}");
        let mut config = "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                          scrape_configs:\n"
            .to_string();
        for (job, target) in targets {
            config.push_str(&format!("  - job_name: {job}\n    static_configs:\n      - targets: [\"{target}\"]\n"));
        }
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).expect("write prometheus.yml");
        let data = dir.path().join("data");
        let log = File::create(dir.path().join("prometheus.log")).expect("log file");
        let child = tb
            .command(ns, &[&prometheus_bin("prometheus").to_string_lossy()])
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!("--storage.tsdb.path={}", data.display()))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--storage.tsdb.retention.time=1h")
            .stdout(Stdio::from(log.try_clone().expect("dup")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn prometheus");
        let pid = child.id() as i32;
        let mut p = PromServer { child: Some(child), pid, ns: tb.ns(ns), addr, dir: Some(dir) };
        // Ready when /-/ready answers 200.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(st) = p.try_status() {
                panic!("prometheus exited during start-up ({st}):\n{}", p.log());
            }
            let out = p.curl(&["-o", "/dev/null", "-w", "%{http_code}", &format!("http://{}/-/ready", p.addr)]);
            if String::from_utf8_lossy(&out.stdout).trim() == "200" {
                return p;
            }
            assert!(Instant::now() < deadline, "prometheus not ready on {} after 60 s:\n{}", p.addr, p.log());
            sleep(Duration::from_millis(200));
        }
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.as_ref().expect("dir").path().join("data")
    }

    fn log(&self) -> String {
        let Some(d) = self.dir.as_ref() else {
            return String::new();
        };
        let text = std::fs::read_to_string(d.path().join("prometheus.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    fn try_status(&mut self) -> Option<ExitStatus> {
        let st = self.child.as_mut()?.try_wait().ok().flatten();
        if st.is_some() {
            self.child = None;
        }
        st
    }

    /// curl inside the namespace.
    fn curl(&self, args: &[&str]) -> std::process::Output {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns, "curl", "-sS", "--max-time", "5"]).args(args).stdin(Stdio::null());
        run_timeout(&mut c, Duration::from_secs(15))
    }

    /// GET `path` with `params` (URL-encoded) and applies jq `filter` to the JSON answer.
    fn api(&self, path: &str, params: &[(&str, &str)], filter: &str) -> String {
        let url = format!("http://{}{path}", self.addr);
        let mut args: Vec<String> = vec!["--fail".into(), "--get".into()];
        for (k, v) in params {
            args.push("--data-urlencode".into());
            args.push(format!("{k}={v}"));
        }
        args.push(url.clone());
        let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = self.curl(&arg_refs);
        assert!(out.status.success(), "GET {url} {params:?}: {}\n{}", output_text(&out), self.log());
        let json = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(json.path(), &out.stdout).expect("write json");
        let jq = run_timeout(Command::new("jq").args(["-r", filter]).arg(json.path()), Duration::from_secs(10));
        assert!(
            jq.status.success(),
            "jq {filter:?} on the answer of {url}: {}\nanswer: {}",
            output_text(&jq),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&jq.stdout).trim().to_string()
    }

    /// Instant query; the values of the result vector, one per series.
    fn query(&self, q: &str) -> Vec<f64> {
        let v = self.api(
            "/api/v1/query",
            &[("query", q)],
            r#"if .status == "success" then (.data.result[] | .value[1]) else error(.error) end"#,
        );
        v.lines().map(|l| l.parse().unwrap_or_else(|_| panic!("query {q}: value {l:?} is not a number"))).collect()
    }

    /// Instant query that may fail: each series of the result as `labels<TAB>value`, or the
    /// error Prometheus gave (status and message).
    fn try_query(&self, q: &str) -> Result<Vec<String>, String> {
        let url = format!("http://{}/api/v1/query", self.addr);
        let out = self.curl(&["--get", "--data-urlencode", &format!("query={q}"), &url]);
        assert!(out.status.success(), "GET {url} {q}: {}\n{}", output_text(&out), self.log());
        let json = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(json.path(), &out.stdout).expect("write json");
        let filter = r#"if .status == "success" then (.data.result[] | "\(.metric | tostring)\t\(.value[1])")
                        else "ERROR \(.errorType): \(.error)" end"#;
        let jq = run_timeout(Command::new("jq").args(["-r", filter]).arg(json.path()), Duration::from_secs(10));
        let text = String::from_utf8_lossy(&jq.stdout).trim().to_string();
        if !jq.status.success() || text.starts_with("ERROR ") {
            return Err(format!("{text} {}", String::from_utf8_lossy(&out.stdout)));
        }
        Ok(text.lines().map(str::to_string).collect())
    }

    /// Waits until the target of `job` is up.
    fn wait_up(&self, job: &str) {
        let filter = format!(r#".data.activeTargets[] | select(.labels.job == "{job}") | .health"#);
        let up = poll_until(Duration::from_secs(20), Duration::from_millis(250), || {
            (self.api("/api/v1/targets", &[], &filter) == "up").then_some(())
        });
        assert!(
            up.is_some(),
            "the {job} target is not up in prometheus: {}\n{}",
            self.api("/api/v1/targets", &[], ".data.activeTargets"),
            self.log()
        );
    }

    /// Waits for two more scrapes of `job`: afterwards Prometheus holds what its endpoint
    /// said after everything that happened before the call.
    fn wait_two_scrapes(&self, job: &str) {
        let q = format!(r#"count_over_time(up{{job="{job}"}}[1h])"#);
        let scrapes = || self.query(&q).first().copied().unwrap_or(0.0);
        let n0 = scrapes();
        let two_more =
            poll_until(Duration::from_secs(20), Duration::from_millis(250), || (scrapes() >= n0 + 2.0).then_some(()));
        assert!(
            two_more.is_some(),
            "prometheus did not scrape {job} twice within 20 s (count {n0} -> {})\n{}",
            scrapes(),
            self.log()
        );
    }

    /// Sends SIGTERM by PID, waits up to 10 s, then SIGKILL. Returns the exit status.
    fn stop(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        if let Ok(Some(st)) = child.try_wait() {
            return Some(st);
        }
        appliance_tests::proc::send_signal(self.pid, rustix::process::Signal::TERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(st)) = child.try_wait() {
                return Some(st);
            }
            sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        child.wait().ok()
    }
}

impl Drop for PromServer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- prometheus log (last 40 lines) ----\n{}", self.log());
        }
        self.stop();
        if let Some(d) = self.dir.take() {
            let p = d.path().to_path_buf();
            if let Err(e) = d.close() {
                eprintln!("could not remove {}: {e}", p.display());
            }
        }
    }
}

#[test]
fn prometheus_scrapes_the_appliance() {
    let rig = Rig::demo("prom");
    let mut prom = PromServer::start(&rig.tb, "rtr", &[("appliance", rig.app.metrics_addr())]);
    let data_dir = prom.data_dir();
    let dir = data_dir.parent().unwrap().to_path_buf();

    prom.wait_up("appliance");
    let (ok, out) = rig.tb.ping_output("h1", H2_V4, &["-c", &PINGS.to_string(), "-i", "0.05", "-W", "2"]);
    assert!(ok && out.contains(" 0% packet loss"), "{PINGS} pings h1 -> h2 with no loss expected:\n{out}{}", rig.ctx());
    // Two scrapes that started after the last echo went out of the outside port.
    prom.wait_two_scrapes("appliance");

    let up = prom.query(r#"up{job="appliance"}"#);
    assert_eq!(up, vec![1.0], "up{{job=\"appliance\"}}");
    let tx = prom.query(r#"sum(appliance_port_tx_packets_total{port="outside"})"#);
    assert_eq!(tx.len(), 1, "no appliance_port_tx_packets_total{{port=\"outside\"}} in prometheus");
    assert!(tx[0] >= f64::from(PINGS), "prometheus has outside tx = {}, expected >= {PINGS}", tx[0]);
    // What prometheus stored is what the endpoint says (the counter only grows since).
    let direct = rig.app.metric_sum("appliance_port_tx_packets_total", &[("port", "outside")]);
    assert!(tx[0] <= direct, "prometheus has outside tx = {}, the endpoint now {direct}", tx[0]);
    // Labels survived: one series per (port, queue), one idle ratio per worker lcore.
    let series = prom.query(r#"count(appliance_port_rx_packets_total{job="appliance"})"#);
    assert_eq!(series, vec![2.0], "series of appliance_port_rx_packets_total (2 ports x 1 queue)");
    let idle = prom.query(r#"appliance_lcore_idle_ratio{lcore="1"}"#);
    assert!(idle.len() == 1 && (0.0..=1.0).contains(&idle[0]), "appliance_lcore_idle_ratio{{lcore=\"1\"}}: {idle:?}");
    // The whole exposition was ingested: as many samples as the endpoint serves.
    let scraped = prom.query(r#"scrape_samples_scraped{job="appliance"}"#);
    let served = appliance_tests::parse_samples(&rig.app.metrics()).len() as f64;
    assert!(
        scraped.len() == 1 && scraped[0] == served,
        "prometheus scraped {scraped:?} samples, the endpoint serves {served}"
    );

    // The router's exposition passes the real promtool.
    promtool_check(&rig.tb, "rtr", rig.app.metrics_addr(), "the demo router");

    let health = prom.api(
        "/api/v1/targets",
        &[],
        r#".data.activeTargets[] | select(.labels.job == "appliance") | "health=\(.health) lastError=\(.lastError)""#,
    );
    assert_eq!(health, "health=up lastError=", "the appliance target in /api/v1/targets");

    // Stop it by PID; its files go with it.
    let st = prom.stop().expect("prometheus was running");
    assert!(st.success(), "prometheus exit status after SIGTERM: {st}\n{}", prom.log());
    drop(prom);
    assert!(!dir.exists(), "{} was not removed", dir.display());
    let left = rig.tb.pids("rtr");
    assert_eq!(left, vec![rig.app.pid()], "processes in {} besides the appliance", rig.tb.rtr());
}

/// GETs `http://addr/metrics` in `ns`, checks its Content-Type and runs the real
/// `promtool check metrics` on it: no finding, exit 0. Returns the exposition.
fn promtool_check(tb: &Testbed, ns: &str, addr: &str, what: &str) -> String {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("metrics.txt");
    let url = format!("http://{addr}/metrics");
    let f = file.display().to_string();
    let out = tb.exec(ns, &["curl", "-sS", "--fail", "--max-time", "5", "-o", &f, "-w", "%{content_type}", &url]);
    assert!(out.status.success(), "GET {url} ({what}): {}", output_text(&out));
    let ctype = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(ctype, "text/plain; version=0.0.4; charset=utf-8", "Content-Type of {what}'s /metrics");
    let body = std::fs::read_to_string(&file).expect("read the scrape");
    let mut promtool = Command::new(prometheus_bin("promtool"));
    promtool.args(["check", "metrics"]).stdin(File::open(&file).expect("open the scrape"));
    let out = run_timeout(&mut promtool, Duration::from_secs(30));
    let findings = output_text(&out);
    assert!(
        out.status.success() && findings.trim().is_empty(),
        "promtool check metrics on {what} ({}):\n{findings}\n---- exposition ----\n{body}",
        out.status
    );
    body
}

const OBJECT_PREFIX: &str = "2001:db8:f0:1::";
const SID_END: &str = "2001:db8:a::1";
const SID_DT6: &str = "2001:db8:a::2";
const SID_STORAGE: &str = "2001:db8:a::5";
const H2_V6: &str = "2001:db8:2::2";

/// The demo config with every feature: NAT44 between the two ports (pool on the outside
/// subnet), local SIDs End, End.DT6 and storage, and the storage service on `device`.
fn every_feature_config(device: &Path) -> String {
    let yaml = |text: &str| -> Value { serde_yaml_ng::from_str(text).expect("YAML") };
    edit_yaml(&demo_config(), |v| {
        v["lcores"]["mapper"] = lcore(2, 0);
        v["nat"] = yaml(
            r#"{inside: [inside], outside: [outside], pool: ["198.51.100.64/30"], ports_per_block: 512,
                blocks_per_subscriber_max: 4, subscribers_max: 64, blocks_max: 256, mappings_max: 4096,
                sessions_max: 8192, worker_cache_entries: 4096, ring_size: 256}"#,
        );
        v["srv6"] = yaml(&format!(
            r#"{{local_sids: [{{sid: "{SID_END}", behavior: end}}, {{sid: "{SID_DT6}", behavior: end.dt6}},
                              {{sid: "{SID_STORAGE}", behavior: storage, policy: always}}]}}"#
        ));
        v["storage"] =
            yaml(&format!(r#"{{object_prefix: "{OBJECT_PREFIX}/64", device: "{}", size_mb: 64}}"#, device.display()));
    })
}

/// `objmeta serve` in `ns` on a free loopback port with an embedded store in `dir`; killed
/// (by PID) when dropped.
fn start_objmeta(tb: &Testbed, ns: &str, dir: &Path) -> (Proc, String) {
    let addr = format!("127.0.0.1:{}", free_tcp_port(tb, ns, 17070));
    let store = format!("embedded:{}", dir.join("meta.db").display());
    let objmeta = bin("objmeta").display().to_string();
    let cmd = tb.command(ns, &[&objmeta, "serve", "--listen", &addr, "--down-after", "3600", "--store", &store]);
    let meta = Proc::spawn(cmd, &dir.join("objmeta.log"));
    let health = format!("http://{addr}/health");
    let up = poll_until(Duration::from_secs(20), Duration::from_millis(200), || {
        output_text(&tb.exec(ns, &["curl", "-sf", &health])).contains("ok").then_some(())
    });
    assert!(up.is_some(), "objmeta does not answer on {addr}:\n{}", meta.text());
    (meta, addr)
}

/// The storage client (tests/helpers/obj_client.py) on h1.
fn obj_client(tb: &Testbed, args: &[&str]) -> String {
    let script = workspace_root().join("tests/helpers/obj_client.py").display().to_string();
    let mut all = vec!["python3", script.as_str(), OBJECT_PREFIX];
    all.extend_from_slice(args);
    output_text(&tb.exec_timeout("h1", &all, Duration::from_secs(120)))
}

/// Traffic through every feature of the appliance, each checked where it ends.
fn appliance_traffic(tb: &Testbed, app: &Appliance, dir: &Path) {
    let ctx = || format!("\n---- appliance log ----\n{}", app.log_tail(40));
    // NAT44: h1 reaches h2 from a pool address; h2 cannot reach h1 (no mapping: drops).
    assert!(tb.ping("h1", H2_V4, 3), "ping h1 -> h2 through the NAT{}", ctx());
    tb.exec_ok("h2", &["ip", "route", "add", "192.0.2.0/24", "via", "198.51.100.1"]);
    assert!(!tb.ping("h2", "192.0.2.2", 2), "h2 reached an inside address without a mapping");
    // No route: ICMPv6 destination unreachable.
    assert!(!tb.ping("h1", "2001:db8:99::1", 2), "2001:db8:99::1 has no route in the appliance");
    // SRv6: h1's kernel encapsulates to h2 over the appliance's End and End.DT6 SIDs.
    let (dst, segs) = (format!("{H2_V6}/128"), format!("{SID_END},{SID_DT6}"));
    tb.exec_ok(
        "h1",
        &["ip", "-6", "route", "add", &dst, "encap", "seg6", "mode", "encap", "segs", &segs, "dev", "eth0"],
    );
    assert!(tb.ping("h1", H2_V6, 3), "ping h1 -> h2 over the SIDs{}", ctx());
    // Storage: every operation, a miss, and a request steered to the storage SID.
    let src = dir.join("object");
    std::fs::write(&src, vec![7u8; 10_000]).expect("write the object");
    let back = dir.join("object.back");
    let (s, b) = (src.display().to_string(), back.display().to_string());
    for (args, want) in [
        (vec!["put", "1", s.as_str()], "ok 10000"),
        (vec!["get", "1", b.as_str()], "ok 10000"),
        (vec!["stat", "1"], "size 10000 version 1 chunks 3 complete 1"),
        (vec!["list"], "1 10000 1"),
        (vec!["stat", "2"], "status 1"),
    ] {
        let out = obj_client(tb, &args);
        assert_eq!(out.trim(), want, "obj_client {args:?}{}", ctx());
    }
    let out = obj_client(tb, &["steer", SID_STORAGE, "1"]);
    assert!(out.starts_with(&format!("accepted {OBJECT_PREFIX}1 status 0")), "steered stat: {out}{}", ctx());
    assert_eq!(obj_client(tb, &["rm", "1"]).trim(), "ok");
}

/// What a metadata client does: register a node, create an object, ask intents (one for
/// an object that does not exist), look one up that does not exist.
fn objmeta_traffic(tb: &Testbed, addr: &str) {
    let node = r#"{"id":"n1","object_prefix":"2001:db8:f0:1::/64","storage_sid":"2001:db8:a::5","capacity_bytes":67108864,"failure_domain":"rack1"}"#;
    let calls = [
        ("POST", "/nodes", node, 200),
        ("POST", "/objects", r#"{"name":"cat.jpg","size":10000,"replicas":1}"#, 200),
        ("POST", "/intent", r#"{"op":"retrieve","object":{"name":"cat.jpg"}}"#, 200),
        ("POST", "/intent", r#"{"op":"retrieve","object":{"name":"dog.jpg"}}"#, 404),
        ("GET", "/objects/99", "", 404),
    ];
    for (method, path, body, want) in calls {
        let url = format!("http://{addr}{path}");
        let mut args = vec!["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-X", method, &url];
        if !body.is_empty() {
            args.extend(["-d", body]);
        }
        let out = tb.exec("rtr", &args);
        assert_eq!(output_text(&out).trim(), want.to_string(), "{method} {path}");
    }
}

/// Every PromQL expression of the Grafana dashboard: (panel title, expression), with the
/// dashboard's variables replaced (rate window 5m: everything since the test began;
/// instances: all).
fn dashboard_queries() -> Vec<(String, String)> {
    let path = workspace_root().join("tools/grafana/appliance.json");
    let filter = r#".. | objects | select(has("targets")) | .title as $t | .targets[] | "\($t)\t\(.expr)""#;
    let out = run_timeout(Command::new("jq").args(["-r", filter]).arg(&path), Duration::from_secs(10));
    assert!(out.status.success(), "jq on {}: {}", path.display(), output_text(&out));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let queries: Vec<(String, String)> = text
        .lines()
        .map(|l| {
            let (title, expr) = l.split_once('\t').expect("title TAB expr");
            let expr = expr.replace("$__rate_interval", "5m").replace("$instance", ".+").replace("$objmeta", ".+");
            assert!(!expr.contains('$'), "panel {title:?}: a variable the test does not know: {expr}");
            (title.to_string(), expr)
        })
        .collect();
    assert!(queries.len() >= 20, "only {} queries in {}", queries.len(), path.display());
    queries
}

#[test]
fn every_feature_is_promtool_clean_and_every_dashboard_query_answers() {
    let tb = Testbed::up("promall");
    let dev = DeviceFile::new("prom");
    let app = Appliance::start(&tb, &every_feature_config(&dev.0));
    let dir = tempfile::tempdir().expect("temp dir");
    let (meta, meta_addr) = start_objmeta(&tb, "rtr", dir.path());
    let prom = PromServer::start(&tb, "rtr", &[("appliance", app.metrics_addr()), ("objmeta", &meta_addr)]);
    prom.wait_up("appliance");
    prom.wait_up("objmeta");
    // Traffic only after Prometheus has a first sample of every counter, so rates see it.
    prom.wait_two_scrapes("appliance");
    appliance_traffic(&tb, &app, dir.path());
    objmeta_traffic(&tb, &meta_addr);
    prom.wait_two_scrapes("appliance");
    prom.wait_two_scrapes("objmeta");

    let text = promtool_check(&tb, "rtr", app.metrics_addr(), "the appliance with NAT, SRv6 and storage");
    for family in
        ["appliance_nat_sessions", "appliance_srv6_storage_decisions_total", "appliance_storage_latency_seconds"]
    {
        assert!(text.contains(&format!("# TYPE {family} ")), "{family} in the appliance's exposition");
    }
    let text = promtool_check(&tb, "rtr", &meta_addr, "objmeta");
    assert!(text.contains("\nobjmeta_objects{state=\"creating\"} 1\n"), "objmeta census:\n{text}\n{}", meta.text());

    // Every panel of the dashboard has data, from the real Prometheus.
    let mut failures = Vec::new();
    for (title, expr) in dashboard_queries() {
        match prom.try_query(&expr) {
            Ok(series) if series.is_empty() => failures.push(format!("{title}: no result for {expr}")),
            Ok(_) => {}
            Err(e) => failures.push(format!("{title}: {expr}: {e}")),
        }
    }
    assert!(failures.is_empty(), "dashboard queries without a result:\n{}\n{}", failures.join("\n"), prom.log());
    // A few figures the traffic must have produced, as Prometheus has them.
    for q in [
        r#"appliance_storage_replies_total{op="get",status="ok"}"#,
        r#"appliance_storage_replies_total{op="stat",status="not_found"}"#,
        r#"appliance_srv6_storage_decisions_total{decision="accept"}"#,
        r#"appliance_drops_total{reason="nat_no_mapping"}"#,
        r#"appliance_nat_mappings_created_total"#,
        r#"objmeta_intents_total{op="retrieve",result="not_found"}"#,
    ] {
        let v = prom.query(q);
        assert!(v.len() == 1 && v[0] >= 1.0, "{q} = {v:?} in prometheus");
    }
    let commit = prom.api("/api/v1/query", &[("query", "appliance_build_info")], ".data.result[0].metric.git_commit");
    assert!(!commit.is_empty() && commit != "null", "appliance_build_info has a git_commit label: {commit:?}");
}
