//! The real appliance binary, started in a testbed's router namespace.

use crate::metrics;
use crate::proc::{output_text, run_timeout};
use crate::testbed::{require_root, workspace_root, Testbed};
use anyhow::{anyhow, bail, Context, Result};
use serde_yaml_ng::{Mapping, Value};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::sleep;
use std::time::{Duration, Instant};

/// How long the appliance may take to answer on /metrics after it is started
/// (`APPLIANCE_START_TIMEOUT_S` overrides it).
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long it may take to exit after SIGTERM before it is killed.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(15);

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// The appliance binary: `$APPLIANCE_BIN`, else `<target>/release/appliance`, else
/// `<target>/debug/appliance` (target = `$CARGO_TARGET_DIR` or `<workspace>/target`).
pub fn appliance_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("APPLIANCE_BIN").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        assert!(p.is_file(), "APPLIANCE_BIN={} does not exist", p.display());
        return p;
    }
    let mut targets = Vec::new();
    if let Some(t) = std::env::var_os("CARGO_TARGET_DIR").filter(|t| !t.is_empty()) {
        let t = PathBuf::from(t);
        targets.push(if t.is_absolute() { t } else { workspace_root().join(t) });
    }
    targets.push(workspace_root().join("target"));
    for t in &targets {
        for profile in ["release", "debug"] {
            let p = t.join(profile).join("appliance");
            if p.is_file() {
                return p;
            }
        }
    }
    panic!("no appliance binary found (APPLIANCE_BIN unset, none in target/release or target/debug): build it first: cargo build --release -p appliance");
}

/// The operator CLI, next to the appliance binary.
pub fn aplctl_bin() -> PathBuf {
    let p = appliance_bin().with_file_name("aplctl");
    assert!(
        p.is_file(),
        "no aplctl next to the appliance binary ({}): cargo build --release -p appliance",
        p.display()
    );
    p
}

/// configs/demo.yaml, read at run time.
pub fn demo_config() -> String {
    let p = workspace_root().join("configs/demo.yaml");
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()))
}

/// Parses `yaml`, lets `f` change it, and writes it back.
pub fn edit_yaml(yaml: &str, f: impl FnOnce(&mut Value)) -> String {
    let mut v: Value = serde_yaml_ng::from_str(yaml).expect("config is not valid YAML");
    f(&mut v);
    serde_yaml_ng::to_string(&v).expect("serialize YAML")
}

/// `yaml` with `eal.file_prefix` and `metrics.listen` set (sections created if absent).
pub fn config_with(yaml: &str, file_prefix: &str, metrics_listen: &str) -> String {
    edit_yaml(yaml, |v| {
        set_path(v, &["eal", "file_prefix"], Value::from(file_prefix));
        set_path(v, &["metrics", "listen"], Value::from(metrics_listen));
    })
}

/// An `{lcore, cpu}` mapping.
pub fn lcore(lcore: u64, cpu: u64) -> Value {
    let mut m = Mapping::new();
    m.insert("lcore".into(), lcore.into());
    m.insert("cpu".into(), cpu.into());
    Value::Mapping(m)
}

/// Edits a config with single-queue af_xdp ports (`net_af_xdpN`, `iface=X`) to run two
/// workers (lcores 1@1, 2@0), every port with two rx queues over an af_packet device with two
/// queue pairs (`net_af_packetN`, `qpairs=2`: DPDK 22.11's af_xdp driver allows one queue on
/// a veth; the kernel's fanout spreads flows over the two; rx queue q is polled by worker
/// q % 2), and a pool large enough for it: 2 ports x (2 rx + 2 tx queues) x 1024 descriptors
/// plus three lcore caches (docs/config.md). The testbed must then prepare the veths for
/// af_packet (`QUEUES=2`, see [`config_queues`]).
pub fn two_workers(v: &mut Value) {
    v["lcores"]["workers"] = Value::Sequence(vec![lcore(1, 1), lcore(2, 0)]);
    v["mempool"]["mbufs"] = 16383u64.into();
    for p in v["ports"].as_sequence_mut().expect("ports is a list").iter_mut() {
        p["queues"] = 2u64.into();
        let device = p["device"].as_str().expect("device").to_string();
        let args = p["args"].as_str().expect("af_xdp args").to_string();
        let n = device.strip_prefix("net_af_xdp").unwrap_or_else(|| panic!("not an af_xdp port: {device}"));
        assert!(args.starts_with("iface=") && !args.contains(','), "port args changed: {args}");
        p["device"] = format!("net_af_packet{n}").into();
        p["args"] = format!("{args},qpairs=2").into();
    }
}

/// Edits a config with single-queue af_xdp ports (`net_af_xdpN`, `iface=X`) to use af_packet
/// instead (`net_af_packetN`, `iface=X,qpairs=1`): the driver that holds no mbufs of its own
/// (the pool's in-use count is what the pipeline holds) and that hands a kernel host's TCP
/// super-frames over (cut).
pub fn af_packet_ports(v: &mut Value) {
    for p in v["ports"].as_sequence_mut().expect("ports is a list").iter_mut() {
        let device = p["device"].as_str().expect("device").to_string();
        let args = p["args"].as_str().expect("af_xdp args").to_string();
        let n = device.strip_prefix("net_af_xdp").unwrap_or_else(|| panic!("not an af_xdp port: {device}"));
        assert!(args.starts_with("iface=") && !args.contains(','), "port args changed: {args}");
        p["device"] = format!("net_af_packet{n}").into();
        p["args"] = format!("{args},qpairs=1").into();
    }
}

/// The most rx queues any port of `yaml` has (`ports[].queues`, default 1): the testbed's
/// `QUEUES` for it.
pub fn config_queues(yaml: &str) -> u64 {
    let v: Value = serde_yaml_ng::from_str(yaml).expect("config is not valid YAML");
    v["ports"].as_sequence().map_or(1, |ports| ports.iter().filter_map(|p| p["queues"].as_u64()).max().unwrap_or(1))
}

fn set_path(v: &mut Value, path: &[&str], new: Value) {
    let mut cur = v;
    for (i, key) in path.iter().enumerate() {
        if !cur.is_mapping() {
            *cur = Value::Mapping(Mapping::new());
        }
        let m = cur.as_mapping_mut().unwrap();
        if i + 1 == path.len() {
            m.insert(Value::from(*key), new);
            return;
        }
        if !m.contains_key(*key) {
            m.insert(Value::from(*key), Value::Mapping(Mapping::new()));
        }
        cur = m.get_mut(*key).unwrap();
    }
}

/// A running appliance (`ip netns exec <rtr> $APPLIANCE_BIN run --config F`).
/// Dropping it kills the process if it still runs and removes its hugepage files and
/// DPDK runtime directory.
pub struct Appliance {
    child: Option<Child>,
    status: Option<ExitStatus>,
    pid: i32,
    rtr_ns: String,
    file_prefix: String,
    metrics_addr: String,
    dir: tempfile::TempDir,
    log_path: PathBuf,
    config_path: PathBuf,
}

impl Appliance {
    /// Starts the appliance in `tb`'s router namespace with `config_yaml`, whose
    /// `eal.file_prefix` and `metrics.listen` are replaced by values unique to this start;
    /// waits until /metrics answers. Panics with the appliance's log on failure.
    pub fn start(tb: &Testbed, config_yaml: &str) -> Appliance {
        Self::try_start(tb, config_yaml).unwrap_or_else(|e| panic!("appliance did not start: {e:#}"))
    }

    /// [`start`](Self::start) with configs/demo.yaml.
    pub fn start_demo(tb: &Testbed) -> Appliance {
        Self::start(tb, &demo_config())
    }

    pub fn try_start(tb: &Testbed, config_yaml: &str) -> Result<Appliance> {
        Self::try_start_in(&tb.rtr(), config_yaml)
    }

    /// [`start`](Self::start) in namespace `ns` (a full namespace name) instead of a
    /// testbed's router namespace: for topologies of their own, such as several appliances.
    pub fn start_in(ns: &str, config_yaml: &str) -> Appliance {
        Self::try_start_in(ns, config_yaml).unwrap_or_else(|e| panic!("appliance did not start in {ns}: {e:#}"))
    }

    pub fn try_start_in(ns: &str, config_yaml: &str) -> Result<Appliance> {
        require_root();
        let bin = appliance_bin();
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let file_prefix = format!("apltest{}_{}", std::process::id(), n);
        // The router namespace is private to the testbed: any port is free there.
        let metrics_addr = format!("127.0.0.1:{}", 19100 + (n % 1000));
        let dir = tempfile::Builder::new().prefix("appliance-test.").tempdir()?;
        let config_path = dir.path().join("config.yaml");
        let log_path = dir.path().join("appliance.log");
        std::fs::write(&config_path, config_with(config_yaml, &file_prefix, &metrics_addr))?;
        let log = File::create(&log_path)?;
        let rtr_ns = ns.to_string();
        let child = Command::new("ip")
            .args(["netns", "exec", &rtr_ns])
            .arg(&bin)
            .arg("run")
            .arg("--config")
            .arg(&config_path)
            .env("RUST_BACKTRACE", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .with_context(|| format!("spawn ip netns exec {rtr_ns} {} run", bin.display()))?;
        let pid = child.id() as i32;
        let mut app = Appliance {
            child: Some(child),
            status: None,
            pid,
            rtr_ns,
            file_prefix,
            metrics_addr,
            dir,
            log_path,
            config_path,
        };
        let start_timeout = env_secs("APPLIANCE_START_TIMEOUT_S").unwrap_or(START_TIMEOUT);
        let deadline = Instant::now() + start_timeout;
        loop {
            if let Some(st) = app.try_status() {
                bail!("the appliance exited during start-up ({st}); log:\n{}", app.log());
            }
            if app.try_metrics().is_ok() {
                return Ok(app);
            }
            if Instant::now() >= deadline {
                bail!(
                    "no answer on http://{}/metrics after {:?}; its threads: {}; log:\n{}",
                    app.metrics_addr,
                    start_timeout,
                    thread_states(app.pid),
                    app.log()
                );
            }
            sleep(Duration::from_millis(100));
        }
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }
    pub fn file_prefix(&self) -> &str {
        &self.file_prefix
    }
    /// `127.0.0.1:<port>`, inside the router namespace.
    pub fn metrics_addr(&self) -> &str {
        &self.metrics_addr
    }
    /// The config file it was started with.
    /// The control socket (`control.socket` defaults to /run/appliance/<file prefix>.sock).
    pub fn control_socket(&self) -> PathBuf {
        PathBuf::from(format!("/run/appliance/{}.sock", self.file_prefix))
    }

    /// Runs `aplctl --socket <ours> ARGS...` (the operator CLI) and returns its output.
    pub fn ctl(&self, args: &[&str]) -> std::process::Output {
        let mut cmd = Command::new(aplctl_bin());
        cmd.arg("--socket").arg(self.control_socket()).args(args);
        crate::proc::run_timeout(&mut cmd, Duration::from_secs(20))
    }

    /// [`ctl`](Self::ctl), which must succeed; its stdout.
    pub fn ctl_ok(&self, args: &[&str]) -> String {
        let out = self.ctl(args);
        assert!(
            out.status.success(),
            "aplctl {} failed ({}):\n{}",
            args.join(" "),
            out.status,
            crate::proc::output_text(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn config_path(&self) -> &Path {
        &self.config_path
    }
    /// A scratch folder removed with the Appliance.
    pub fn work_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Everything it wrote so far (stdout and stderr, interleaved).
    pub fn log(&self) -> String {
        std::fs::read(&self.log_path).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
    }

    /// The last `n` lines of [`log`](Self::log).
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Exit status if it has exited (reaps it).
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    self.status = Some(st);
                    self.child = None;
                }
            }
        }
        self.status
    }

    pub fn is_running(&mut self) -> bool {
        self.try_status().is_none()
    }

    /// GET /metrics (through curl inside the router namespace).
    pub fn try_metrics(&self) -> Result<String> {
        let url = format!("http://{}/metrics", self.metrics_addr);
        let out = run_timeout(
            Command::new("ip").args(["netns", "exec", &self.rtr_ns, "curl", "-sS", "--fail", "--max-time", "3", &url]),
            Duration::from_secs(10),
        );
        if !out.status.success() {
            return Err(anyhow!("GET {url}: {}", output_text(&out).trim()));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// GET /metrics; panics (with the log) when it does not answer.
    pub fn metrics(&self) -> String {
        self.try_metrics().unwrap_or_else(|e| panic!("{e:#}\n---- appliance log ----\n{}", self.log_tail(60)))
    }

    /// Sum of the samples of metric `name` whose labels include `filter`.
    pub fn metric_sum(&self, name: &str, filter: &[(&str, &str)]) -> f64 {
        metrics::metric_sum(&self.metrics(), name, filter)
    }

    /// Whether the metric family `name` is exported (see [`metrics::family_present`]).
    pub fn metric_present(&self, name: &str) -> bool {
        metrics::family_present(&self.metrics(), name)
    }

    /// Sends SIGTERM (by PID) and waits; SIGKILL after [`STOP_TIMEOUT`].
    /// Returns the exit status and the whole log.
    pub fn stop(&mut self) -> (ExitStatus, String) {
        if let Some(st) = self.try_status() {
            return (st, self.log());
        }
        crate::proc::send_signal(self.pid, rustix::process::Signal::TERM);
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(st) = self.try_status() {
                return (st, self.log());
            }
            sleep(Duration::from_millis(50));
        }
        let st = self.kill();
        let mut log = self.log();
        log.push_str(&format!("\n[test harness: no exit within {STOP_TIMEOUT:?} of SIGTERM: killed]\n"));
        (st, log)
    }

    /// SIGKILL (by PID) and reap.
    pub fn kill(&mut self) -> ExitStatus {
        if let Some(st) = self.try_status() {
            return st;
        }
        let mut c = self.child.take().expect("running child");
        let _ = c.kill();
        let st = c.wait().expect("wait for appliance");
        self.status = Some(st);
        st
    }

    /// Hugepage files of this instance's file prefix still in /dev/hugepages.
    pub fn hugepage_files(&self) -> Vec<PathBuf> {
        hugepage_files(&self.file_prefix)
    }
}

fn env_secs(var: &str) -> Option<Duration> {
    std::env::var(var).ok()?.parse().ok().map(Duration::from_secs)
}

/// `name(state wchan)` of every thread of `pid`: where a process that does not answer is stuck.
pub fn thread_states(pid: i32) -> String {
    let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return format!("pid {pid} not found");
    };
    let mut v: Vec<String> = rd
        .filter_map(|e| e.ok())
        .map(|e| {
            let p = e.path();
            let rd = |f: &str| std::fs::read_to_string(p.join(f)).unwrap_or_default().trim().to_string();
            let stat = rd("stat");
            let state = stat.rsplit_once(") ").and_then(|(_, r)| r.split(' ').next()).unwrap_or("?").to_string();
            format!("{}({} {})", rd("comm"), state, rd("wchan"))
        })
        .collect();
    v.sort();
    v.join(", ")
}

/// Files in /dev/hugepages that belong to DPDK file prefix `prefix` (`<prefix>map_<n>`).
pub fn hugepage_files(prefix: &str) -> Vec<PathBuf> {
    let want = format!("{prefix}map_");
    std::fs::read_dir("/dev/hugepages")
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().starts_with(&want))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

impl Drop for Appliance {
    fn drop(&mut self) {
        if self.is_running() {
            self.kill();
            if std::thread::panicking() {
                eprintln!("---- appliance log (last 60 lines) ----\n{}", self.log_tail(60));
            }
        }
        for f in hugepage_files(&self.file_prefix) {
            let _ = std::fs::remove_file(f);
        }
        let _ = std::fs::remove_dir_all(Path::new("/var/run/dpdk").join(&self.file_prefix));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_with_sets_prefix_and_listen() {
        let y = "eal:\n  file_prefix: demo\n  pci: false\nports: []\n";
        let out = config_with(y, "apltest1_0", "127.0.0.1:19100");
        let v: Value = serde_yaml_ng::from_str(&out).unwrap();
        assert_eq!(v["eal"]["file_prefix"].as_str(), Some("apltest1_0"));
        assert_eq!(v["eal"]["pci"].as_bool(), Some(false));
        assert_eq!(v["metrics"]["listen"].as_str(), Some("127.0.0.1:19100"));
        // Absent sections are created.
        let v: Value = serde_yaml_ng::from_str(&config_with("ports: []\n", "p", "127.0.0.1:1")).unwrap();
        assert_eq!(v["eal"]["file_prefix"].as_str(), Some("p"));
    }
}
