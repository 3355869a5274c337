//! The NAT cluster testbed (scripts/nat-cluster-testbed.sh) with three appliances running
//! in it, as a value; the hosts' configs; the traffic tools of tests/helpers/nat_ha_probe.py
//! and what they report.
//!
//! ```text
//!  [sub] ── [r1 ECMP] ═ a1, a2, a3 (appliances: inside, outside, cluster link) ═ [r2 ECMP] ── [srv]
//!                          └──── cluster bridge [sw], etcd x3 ────┘
//! ```
//!
//! Everything a test starts is ended when the value drops (appliances first, by PID; then
//! the namespaces, etcd included), also when the test panics.

use crate::appliance::{edit_yaml, Appliance};
use crate::proc::{output_text, run_timeout, send_signal};
use crate::testbed::{workspace_root, ScriptTopology};
use serde_yaml_ng::Value;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread::sleep;
use std::time::{Duration, Instant};

/// The subscribers' addresses (the testbed gives the subscriber namespace 20).
pub fn subscribers(n: usize) -> Vec<String> {
    (10..10 + n.min(20)).map(|k| format!("100.64.1.{k}")).collect()
}

/// The server's address and UDP echo port.
pub const SERVER: &str = "203.0.113.2";
pub const SERVER2: &str = "203.0.113.3";
pub const UDP_PORT: u16 = 9000;
pub const TCP_PORT: u16 = 9100;

/// Config of host `k` (1..=3): configs/nat-cluster.yaml with host k's ports, routes and
/// cluster identity; `edit` may change the result.
pub fn host_config(k: u16, edit: impl FnOnce(&mut Value)) -> String {
    let p = workspace_root().join("configs/nat-cluster.yaml");
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    edit_yaml(&text, |v| {
        v["ports"][0]["ipv4"] = Value::Sequence(vec![format!("100.64.1{k}.2/24").into()]);
        v["ports"][1]["ipv4"] = Value::Sequence(vec![format!("100.65.{k}.2/24").into()]);
        v["routes"][0]["via"] = format!("100.64.1{k}.1").into();
        v["routes"][1]["via"] = format!("100.65.{k}.1").into();
        let c = &mut v["nat"]["cluster"];
        c["host_id"] = u64::from(k).into();
        c["listen"] = format!("192.0.2.{k}:7400").into();
        let peers: Vec<Value> = (1..=3u16)
            .filter(|h| *h != k)
            .map(|h| {
                let mut m = serde_yaml_ng::Mapping::new();
                m.insert("id".into(), u64::from(h).into());
                m.insert("addr".into(), format!("192.0.2.{h}:7400").into());
                Value::Mapping(m)
            })
            .collect();
        c["peers"] = Value::Sequence(peers);
        edit(v);
    })
}

/// Config of host `k` for the testbed's `ONLINK=1` variant: the outside port on the pool's
/// subnet (198.51.100.1k/24), r2 (198.51.100.1) its default gateway.
pub fn host_config_onlink(k: u16) -> String {
    host_config(k, |v| {
        v["ports"][1]["ipv4"] = Value::Sequence(vec![format!("198.51.100.1{k}/24").into()]);
        v["routes"][1]["via"] = "198.51.100.1".into();
    })
}

/// The MAC of host `k`'s outside port (the testbed sets it).
pub fn outside_mac(k: u16) -> String {
    format!("02:00:00:00:0b:1{k}")
}

/// One row of `GET /nat/cluster`'s shard table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardRow {
    pub id: u16,
    pub owner: u16,
    pub epoch: u64,
    pub role: String,
    pub allocating: bool,
    pub synced: bool,
    pub sessions: u64,
}

/// The shard rows of a `/nat/cluster` listing.
pub fn shard_rows(view: &str) -> Vec<ShardRow> {
    let mut rows = Vec::new();
    let mut in_shards = false;
    for line in view.lines() {
        if line.starts_with("shard ") {
            in_shards = true;
            continue;
        }
        if !in_shards {
            continue;
        }
        let w: Vec<&str> = line.split_whitespace().collect();
        if w.len() < 10 {
            continue;
        }
        rows.push(ShardRow {
            id: w[0].parse().unwrap_or(u16::MAX),
            owner: w[4].parse().unwrap_or(0),
            epoch: w[5].parse().unwrap_or(0),
            role: w[6].to_string(),
            allocating: w[7] == "yes",
            synced: w[8] == "yes",
            sessions: w[9].parse().unwrap_or(0),
        });
    }
    rows
}

/// A process in a namespace whose stdout lines arrive on a channel; killed (by PID) when
/// dropped.
pub struct Proc {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Proc {
    pub fn spawn(ns: &str, args: &[&str]) -> Proc {
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {args:?} in {ns}: {e}"));
        let stdout = child.stdout.take().expect("piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Proc { child, lines }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// The next line within `timeout`.
    pub fn line(&self, timeout: Duration) -> Option<String> {
        self.lines.recv_timeout(timeout).ok()
    }

    /// Waits for the process to end (at most `timeout`; then it is killed) and returns
    /// the lines it printed since the last [`Proc::line`].
    pub fn finish(mut self, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break;
            }
            sleep(Duration::from_millis(50));
        }
        let mut out = Vec::new();
        while let Ok(l) = self.lines.recv_timeout(Duration::from_millis(200)) {
            out.push(l);
        }
        out
    }

    /// SIGTERM, then [`Proc::finish`].
    pub fn terminate(self, timeout: Duration) -> Vec<String> {
        send_signal(self.pid(), rustix::process::Signal::TERM);
        self.finish(timeout)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The testbed with its three appliances. Fields drop in order: appliances before the
/// namespaces.
pub struct NatCluster {
    pub apps: Vec<Option<Appliance>>,
    topo: ScriptTopology,
    configs: Vec<String>,
    pub dir: tempfile::TempDir,
}

impl NatCluster {
    /// Brings the testbed up (`ncl<pid>-<tag><n>`) and starts host k with `configs[k-1]`;
    /// waits until every shard has an owner and every standby is synced.
    pub fn up(tag: &str, configs: Vec<String>) -> NatCluster {
        Self::up_with(tag, &[], configs)
    }

    /// [`NatCluster::up`] with environment variables for the testbed script (`ONLINK=1`).
    pub fn up_with(tag: &str, env: &[(&str, &str)], configs: Vec<String>) -> NatCluster {
        let topo = ScriptTopology::up_with("scripts/nat-cluster-testbed.sh", "nc", tag, 6, env)
            .unwrap_or_else(|e| panic!("nat cluster testbed up failed: {e:#}"));
        let mut c = NatCluster {
            apps: vec![None, None, None],
            topo,
            configs,
            dir: tempfile::Builder::new().prefix("nat-cluster-test.").tempdir().expect("tempdir"),
        };
        for k in 1..=3 {
            c.start(k);
        }
        c.wait_ready(Duration::from_secs(30));
        c
    }

    /// With configs/nat-cluster.yaml for every host.
    pub fn up_default(tag: &str) -> NatCluster {
        Self::up(tag, (1..=3).map(|k| host_config(k, |_| {})).collect())
    }

    /// Full name of namespace `sub`, `r1`, `r2`, `srv`, `sw`, `a1`..`a3`.
    pub fn ns(&self, which: &str) -> String {
        format!("{}-{}", self.topo.name(), which)
    }

    /// Starts host `k` (again) with its config.
    pub fn start(&mut self, k: u16) {
        let ns = self.ns(&format!("a{k}"));
        self.apps[usize::from(k) - 1] = Some(Appliance::start_in(&ns, &self.configs[usize::from(k) - 1]));
    }

    pub fn app(&self, k: u16) -> &Appliance {
        self.apps[usize::from(k) - 1].as_ref().unwrap_or_else(|| panic!("host {k} is not running"))
    }

    /// `kill -9` of host `k`.
    pub fn kill(&mut self, k: u16) {
        if let Some(mut a) = self.apps[usize::from(k) - 1].take() {
            a.kill();
        }
    }

    /// SIGTERM to host `k` (it hands its shards over first); its log.
    pub fn stop(&mut self, k: u16) -> String {
        match self.apps[usize::from(k) - 1].take() {
            Some(mut a) => {
                let (status, log) = a.stop();
                assert!(status.success(), "host {k} did not stop cleanly: {status}\n{log}");
                log
            }
            None => String::new(),
        }
    }

    /// `GET /nat/cluster` of host `k`.
    pub fn view(&self, k: u16) -> String {
        let url = format!("http://{}/nat/cluster", self.app(k).metrics_addr());
        let out = self.exec(&format!("a{k}"), &["curl", "-sS", "--max-time", "5", &url]);
        output_text(&out)
    }

    /// `POST /nat/cluster/handover?shard=N` on host `k`: (HTTP code, body).
    pub fn handover(&self, k: u16, shard: u16) -> String {
        let url = format!("http://{}/nat/cluster/handover?shard={shard}", self.app(k).metrics_addr());
        output_text(&self.exec(&format!("a{k}"), &["curl", "-sS", "-X", "POST", "--max-time", "5", &url]))
    }

    pub fn rows(&self, k: u16) -> Vec<ShardRow> {
        shard_rows(&self.view(k))
    }

    /// The owner of `shard` as host `k` sees it.
    pub fn owner(&self, k: u16, shard: u16) -> u16 {
        self.rows(k).iter().find(|r| r.id == shard).map_or(0, |r| r.owner)
    }

    /// Sum of a metric of host `k`.
    pub fn metric(&self, k: u16, name: &str, filter: &[(&str, &str)]) -> f64 {
        self.app(k).metric_sum(name, filter)
    }

    /// Until every running host sees an owner for each shard, the owners agree, and every
    /// standby is synced.
    pub fn wait_ready(&self, timeout: Duration) {
        self.wait("every shard owned and every standby synced", timeout, || self.ready());
    }

    pub fn ready(&self) -> bool {
        let running: Vec<u16> = (1..=3).filter(|k| self.apps[usize::from(*k) - 1].is_some()).collect();
        let views: Vec<Vec<ShardRow>> = running.iter().map(|k| self.rows(*k)).collect();
        (0..3u16).all(|s| {
            let owners: Vec<u16> = views.iter().map(|v| v.iter().find(|r| r.id == s).map_or(0, |r| r.owner)).collect();
            let owner = owners[0];
            owner != 0
                && owners.iter().all(|o| *o == owner)
                && running.contains(&owner)
                && views.iter().flatten().filter(|r| r.id == s && r.role != "-").all(|r| r.synced)
        })
    }

    /// Polls `f` every 200 ms until it holds; panics (with the views) after `timeout`.
    pub fn wait(&self, what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + timeout;
        while !f() {
            if Instant::now() >= deadline {
                let views: Vec<String> = (1..=3u16)
                    .filter(|k| self.apps[usize::from(*k) - 1].is_some())
                    .map(|k| format!("---- host {k}\n{}", self.view(k)))
                    .collect();
                panic!("timed out waiting for {what}\n{}", views.join("\n"));
            }
            sleep(Duration::from_millis(200));
        }
    }

    /// Runs `args` in namespace `which` (short name) with a 120 s deadline.
    pub fn exec(&self, which: &str, args: &[&str]) -> std::process::Output {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns(which)]).args(args).stdin(Stdio::null());
        run_timeout(&mut c, Duration::from_secs(120))
    }

    /// Runs the testbed script's `cut A B`, `heal` or `loss PCT`.
    pub fn net(&self, args: &[&str]) {
        let out = run_timeout(
            Command::new("bash")
                .arg(workspace_root().join("scripts/nat-cluster-testbed.sh"))
                .args(args)
                .env("TB", self.topo.name())
                .stdin(Stdio::null()),
            Duration::from_secs(30),
        );
        assert!(out.status.success(), "nat-cluster-testbed.sh {args:?}: {}", output_text(&out));
    }

    fn probe_path() -> String {
        workspace_root().join("tests/helpers/nat_ha_probe.py").display().to_string()
    }

    /// The UDP echo server (port 9000) in `srv`, recording public endpoints; its report
    /// goes to `<dir>/server.json` when it is terminated.
    pub fn udp_server(&self) -> Proc {
        let out = self.dir.path().join("server.json");
        let p = Proc::spawn(
            &self.ns("srv"),
            &["python3", &Self::probe_path(), "udp-server", out.to_str().unwrap(), &UDP_PORT.to_string()],
        );
        assert_eq!(p.line(Duration::from_secs(10)).as_deref(), Some("ready"), "udp server");
        p
    }

    /// nat_probe.py's TCP echo (peer line, then sha256) on 9100 in `srv`.
    pub fn tcp_server(&self) -> Proc {
        let path = workspace_root().join("tests/helpers/nat_probe.py").display().to_string();
        let p = Proc::spawn(&self.ns("srv"), &["python3", &path, "tcp-echo", &TCP_PORT.to_string()]);
        assert_eq!(p.line(Duration::from_secs(10)).as_deref(), Some("ready"), "tcp server");
        p
    }

    /// `udp-flows` in `sub`; its report goes to `<dir>/<name>.json`.
    #[allow(clippy::too_many_arguments)]
    pub fn udp_flows(
        &self,
        name: &str,
        subs: &[String],
        n: usize,
        interval_ms: u64,
        duration_s: f64,
        fast: usize,
        fast_interval_ms: u64,
    ) -> (Proc, std::path::PathBuf) {
        let out = self.dir.path().join(format!("{name}.json"));
        let p = Proc::spawn(
            &self.ns("sub"),
            &[
                "python3",
                &Self::probe_path(),
                "udp-flows",
                out.to_str().unwrap(),
                SERVER,
                &UDP_PORT.to_string(),
                &subs.join(","),
                &n.to_string(),
                &interval_ms.to_string(),
                &duration_s.to_string(),
                &fast.to_string(),
                &fast_interval_ms.to_string(),
            ],
        );
        assert_eq!(p.line(Duration::from_secs(20)).as_deref(), Some("started"), "udp flows");
        (p, out)
    }

    /// A paced TCP transfer from `src` (in `sub`) to the TCP echo: the process.
    pub fn tcp_send(&self, src: &str, bytes: u64, rate: u64) -> Proc {
        Proc::spawn(
            &self.ns("sub"),
            &[
                "python3",
                &Self::probe_path(),
                "tcp-send",
                src,
                SERVER,
                &TCP_PORT.to_string(),
                &bytes.to_string(),
                &rate.to_string(),
            ],
        )
    }

    /// Every host's neighbours are resolved (routers and appliances ARP each other) before
    /// traffic: one ping from the subscribers and the server to each router.
    pub fn warm_up(&self) {
        for (ns, addr) in [("sub", "100.64.1.1"), ("srv", "203.0.113.1")] {
            let out = self.exec(ns, &["ping", "-c", "1", "-W", "2", addr]);
            assert!(out.status.success(), "{ns} cannot ping {addr}: {}", output_text(&out));
        }
    }
}

/// What `udp-flows` reported of one flow.
#[derive(Debug, Clone)]
pub struct FlowReport {
    pub inside: String,
    pub fast: bool,
    pub sent: u64,
    pub received: u64,
    pub foreign: u64,
    /// (first seen, public endpoint), in order.
    pub endpoints: Vec<(f64, String)>,
    /// Silent gaps (from, to), wall time.
    pub gaps: Vec<(f64, f64)>,
    pub last_rx: Option<f64>,
    /// Send times of the datagrams never answered (the first 100 per flow).
    pub lost_at: Vec<f64>,
}

impl FlowReport {
    /// Distinct public endpoints seen.
    pub fn distinct(&self) -> usize {
        let mut v: Vec<&String> = self.endpoints.iter().map(|e| &e.1).collect();
        v.sort();
        v.dedup();
        v.len()
    }
}

/// Reads a `udp-flows` report.
pub fn flow_reports(path: &std::path::Path) -> Vec<FlowReport> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let v: serde_json::Value = serde_json::from_str(&text).expect("udp-flows JSON");
    v.as_array()
        .expect("a list")
        .iter()
        .map(|f| FlowReport {
            inside: f["inside"].as_str().unwrap_or("").to_string(),
            fast: f["fast"].as_bool().unwrap_or(false),
            sent: f["sent"].as_u64().unwrap_or(0),
            received: f["received"].as_u64().unwrap_or(0),
            foreign: f["foreign"].as_u64().unwrap_or(0),
            endpoints: f["endpoints"]
                .as_array()
                .map(|a| {
                    a.iter().map(|e| (e[0].as_f64().unwrap_or(0.0), e[1].as_str().unwrap_or("").to_string())).collect()
                })
                .unwrap_or_default(),
            gaps: f["gaps"]
                .as_array()
                .map(|a| a.iter().map(|g| (g[0].as_f64().unwrap_or(0.0), g[1].as_f64().unwrap_or(0.0))).collect())
                .unwrap_or_default(),
            last_rx: f["last_rx"].as_f64(),
            lost_at: f["lost_at"]
                .as_array()
                .map(|a| a.iter().filter_map(serde_json::Value::as_f64).collect())
                .unwrap_or_default(),
        })
        .collect()
}

/// The server's report: (datagrams, public endpoints, conflicts as text).
pub fn server_report(path: &std::path::Path) -> (u64, u64, Vec<String>) {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let v: serde_json::Value = serde_json::from_str(&text).expect("server JSON");
    let conflicts =
        v["conflicts"].as_object().map(|m| m.iter().map(|(k, v)| format!("{k} <- {v}")).collect()).unwrap_or_default();
    (v["datagrams"].as_u64().unwrap_or(0), v["endpoints"].as_u64().unwrap_or(0), conflicts)
}

/// When the unanswered datagrams were sent, relative to `t` (s), in 100 ms bins:
/// `"-0.2s:3 +0.1s:40"`.
pub fn loss_profile(flows: &[FlowReport], t: f64) -> String {
    let mut bins: std::collections::BTreeMap<i64, usize> = std::collections::BTreeMap::new();
    for l in flows.iter().flat_map(|f| f.lost_at.iter()) {
        *bins.entry(((l - t) * 10.0).floor() as i64).or_default() += 1;
    }
    bins.iter().map(|(b, n)| format!("{:+.1}s:{n}", *b as f64 / 10.0)).collect::<Vec<_>>().join(" ")
}

/// Datagrams sent at or after `t0` that were never answered.
pub fn lost_after(flows: &[FlowReport], t0: f64) -> usize {
    flows.iter().flat_map(|f| f.lost_at.iter()).filter(|l| **l >= t0).count()
}

/// Seconds since the epoch (the probes' clock).
pub fn wall_now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// The data-path outage of an event at `t` as the fast flows saw it: the longest silent
/// gap that contains `t` (ms; 0 when none did).
pub fn outage_ms(flows: &[FlowReport], t: f64) -> f64 {
    flows
        .iter()
        .filter(|f| f.fast)
        .flat_map(|f| f.gaps.iter())
        .filter(|g| g.0 <= t + 0.5 && g.1 >= t)
        .map(|g| (g.1 - g.0) * 1000.0)
        .fold(0.0, f64::max)
}
