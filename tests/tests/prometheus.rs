//! A real Prometheus server scrapes the appliance's /metrics.
//!
//! The test starts its own `prometheus` (Debian package `prometheus`; never the system
//! service) inside the router namespace, where the appliance's endpoint listens on the
//! namespace's loopback, with a generated config scraping every second, storage in a temp
//! dir and a free port of that namespace. A guard stops it by PID and removes its files, also
//! when the test fails. The HTTP API answers are read with curl and jq. Run as root, serially:
//! `cargo test --release -p appliance-tests --test prometheus -- --test-threads=1`.

use appliance_tests::tools::{free_tcp_port, poll_until};
use appliance_tests::{output_text, run_timeout, Rig, Testbed};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

const H2_V4: &str = "198.51.100.2";
const PINGS: u32 = 20;

/// `prometheus` on PATH or in /usr/bin (Debian's package).
fn prometheus_bin() -> PathBuf {
    for p in ["/usr/bin/prometheus", "/usr/local/bin/prometheus"] {
        if Path::new(p).is_file() {
            return PathBuf::from(p);
        }
    }
    let out = run_timeout(Command::new("sh").args(["-c", "command -v prometheus"]), Duration::from_secs(10));
    let p = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        out.status.success() && !p.is_empty(),
        "no prometheus binary: install the Debian package `prometheus` (scripts/setup.sh does)"
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
    fn start(tb: &Testbed, ns: &str, scrape_target: &str) -> PromServer {
        let dir = tempfile::Builder::new().prefix("appliance-prometheus.").tempdir().expect("temp dir");
        let port = free_tcp_port(tb, ns, 19090);
        let addr = format!("127.0.0.1:{port}");
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: appliance\n    static_configs:\n      - targets: [\"{scrape_target}\"]\n"
        );
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).expect("write prometheus.yml");
        let data = dir.path().join("data");
        let log = File::create(dir.path().join("prometheus.log")).expect("log file");
        let child = tb
            .command(ns, &[&prometheus_bin().to_string_lossy()])
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
    let mut prom = PromServer::start(&rig.tb, "rtr", rig.app.metrics_addr());
    let data_dir = prom.data_dir();
    let dir = data_dir.parent().unwrap().to_path_buf();

    // The target is scraped and healthy.
    let target_ok = poll_until(Duration::from_secs(20), Duration::from_millis(250), || {
        let h =
            prom.api("/api/v1/targets", &[], r#".data.activeTargets[] | select(.labels.job == "appliance") | .health"#);
        (h == "up").then_some(())
    });
    assert!(
        target_ok.is_some(),
        "the appliance target is not up in prometheus: {}\n{}{}",
        prom.api("/api/v1/targets", &[], ".data.activeTargets"),
        prom.log(),
        rig.ctx()
    );

    let (ok, out) = rig.tb.ping_output("h1", H2_V4, &["-c", &PINGS.to_string(), "-i", "0.05", "-W", "2"]);
    assert!(ok && out.contains(" 0% packet loss"), "{PINGS} pings h1 -> h2 with no loss expected:\n{out}{}", rig.ctx());

    // Two scrapes that started after the last echo went out of the outside port.
    let scrapes =
        |p: &PromServer| p.query(r#"count_over_time(up{job="appliance"}[1h])"#).first().copied().unwrap_or(0.0);
    let n0 = scrapes(&prom);
    let two_more =
        poll_until(Duration::from_secs(20), Duration::from_millis(250), || (scrapes(&prom) >= n0 + 2.0).then_some(()));
    assert!(
        two_more.is_some(),
        "prometheus did not scrape twice within 20 s (count {n0} -> {})\n{}",
        scrapes(&prom),
        prom.log()
    );

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
