//! The namespace testbed (scripts/testbed.sh) as a value: created by [`Testbed::up`],
//! deleted when dropped (also when the test panics).

use crate::proc::{output_text, run_timeout};
use anyhow::{bail, Context, Result};
use std::fs::File;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::sleep;
use std::time::{Duration, Instant};

/// Default deadline for one command run with [`Testbed::exec`].
pub const EXEC_TIMEOUT: Duration = Duration::from_secs(120);

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// The Cargo workspace (the repository root).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("tests crate lives in the workspace").to_path_buf()
}

/// Panics unless running as root: these tests create namespaces and start DPDK. They are
/// never skipped silently.
pub fn require_root() {
    let euid = rustix::process::geteuid().as_raw();
    if euid != 0 {
        panic!(
            "these tests must run as root (they create network namespaces, reserve hugepages and \
             start DPDK): run `sudo bash scripts/test.sh` (euid is {euid})"
        );
    }
}

/// Result of [`Testbed::tcp_transfer`].
#[derive(Debug, Clone)]
pub struct Transfer {
    pub bytes: u64,
    pub sha256: String,
}

/// Network namespaces brought up and torn down by one of the testbed scripts
/// (`scripts/testbed.sh`, `scripts/steering-testbed.sh`), under a namespace
/// prefix unique to this process and call (`<prefix><pid>-<tag><n>`), so tests
/// never collide with each other or with the demo. Torn down on drop, even
/// when a test panics.
#[derive(Debug)]
pub struct ScriptTopology {
    name: String,
    script: PathBuf,
    /// Extra environment for the script (`QUEUES`, `HOST_OFFLOADS`).
    env: Vec<(String, String)>,
    is_up: bool,
}

impl ScriptTopology {
    /// Runs `<script> up` with TB set to a fresh prefix; on failure runs
    /// `down` and returns the script's output as the error.
    pub fn up(script: &str, prefix: &str, tag: &str, tag_len_max: usize) -> Result<ScriptTopology> {
        Self::up_with(script, prefix, tag, tag_len_max, &[])
    }

    /// [`up`](Self::up) with extra environment variables for the script (e.g. `QUEUES=2`).
    pub fn up_with(
        script: &str,
        prefix: &str,
        tag: &str,
        tag_len_max: usize,
        env: &[(&str, &str)],
    ) -> Result<ScriptTopology> {
        require_root();
        let tag: String = tag
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .take(tag_len_max)
            .collect::<String>()
            .to_ascii_lowercase();
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let name = format!("{prefix}{}-{}{}", std::process::id(), tag, n);
        let script = workspace_root().join(script);
        if !script.exists() {
            bail!("{} is missing", script.display());
        }
        let env = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        let mut t = ScriptTopology { name, script, env, is_up: true };
        let out = t.script_cmd("up");
        if !out.status.success() {
            t.is_up = false;
            let _ = t.script_cmd("down");
            bail!("{} up (TB={}) failed: {}\n{}", t.script_name(), t.name, out.status, output_text(&out));
        }
        Ok(t)
    }

    fn script_name(&self) -> String {
        self.script.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default()
    }

    /// Runs `<script> <what>` with this topology's TB (60 s deadline).
    pub fn script_cmd(&self, what: &str) -> Output {
        run_timeout(
            Command::new("bash")
                .arg(&self.script)
                .arg(what)
                .env("TB", &self.name)
                .envs(self.env.iter().map(|(k, v)| (k, v)))
                .stdin(Stdio::null()),
            Duration::from_secs(60),
        )
    }

    /// The namespace prefix (TB).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs the script's `down` (idempotent; also done on drop).
    pub fn down(&mut self) {
        if self.is_up {
            self.is_up = false;
            let out = self.script_cmd("down");
            if !out.status.success() {
                eprintln!("{} down (TB={}) failed: {}", self.script_name(), self.name, output_text(&out));
            }
        }
    }
}

impl Drop for ScriptTopology {
    fn drop(&mut self) {
        self.down();
    }
}

/// One testbed: namespaces `<name>-h1`, `<name>-rtr`, `<name>-h2`.
#[derive(Debug)]
pub struct Testbed {
    topo: ScriptTopology,
}

impl Testbed {
    /// Brings up a fresh testbed whose namespace prefix is unique to this process and call:
    /// `at<pid>-<tag><n>` (so tests never collide with each other or with the demo's `apl`).
    /// Panics (with the script's output) on failure.
    pub fn up(tag: &str) -> Testbed {
        Self::try_up(tag).unwrap_or_else(|e| panic!("testbed up failed: {e:#}"))
    }

    pub fn try_up(tag: &str) -> Result<Testbed> {
        Self::try_up_with(tag, &[])
    }

    /// [`up`](Self::up) for an appliance whose ports have `queues` rx queues (`QUEUES`): with
    /// more than one they are af_packet ports, and the appliance's veths get an XDP pass
    /// program and GRO off so that the hosts still segment (scripts/lib.sh `xdp_pass`).
    pub fn up_queues(tag: &str, queues: u64) -> Testbed {
        let q = queues.to_string();
        Self::try_up_with(tag, &[("QUEUES", &q)]).unwrap_or_else(|e| panic!("testbed up failed: {e:#}"))
    }

    /// The reference testbed: checksum offload, TSO/GSO and GRO turned off on all four veth
    /// ends (`HOST_OFFLOADS=off`), as the testbeds did before kernel hosts at their default
    /// settings were handled (docs/architecture.md).
    pub fn up_offloads_off(tag: &str) -> Testbed {
        Self::try_up_with(tag, &[("HOST_OFFLOADS", "off")]).unwrap_or_else(|e| panic!("testbed up failed: {e:#}"))
    }

    /// [`try_up`](Self::try_up) with extra environment for scripts/testbed.sh.
    pub fn try_up_with(tag: &str, env: &[(&str, &str)]) -> Result<Testbed> {
        Ok(Testbed { topo: ScriptTopology::up_with("scripts/testbed.sh", "at", tag, 12, env)? })
    }

    /// The NAT testbed (scripts/nat-testbed.sh): subscribers `s1`, `s2` on a bridge (`sw`),
    /// the appliance's `rtr`, the server `srv`; prefix `nt<pid>-<tag><n>`.
    pub fn up_nat(tag: &str) -> Testbed {
        Self::up_nat_queues(tag, 1)
    }

    /// [`up_nat`](Self::up_nat) for an appliance whose ports have `queues` rx queues
    /// (`QUEUES`, see [`up_queues`](Self::up_queues)).
    pub fn up_nat_queues(tag: &str, queues: u64) -> Testbed {
        let q = queues.to_string();
        ScriptTopology::up_with("scripts/nat-testbed.sh", "nt", tag, 8, &[("QUEUES", &q)])
            .map(|topo| Testbed { topo })
            .unwrap_or_else(|e| panic!("nat testbed up failed: {e:#}"))
    }

    /// The namespace prefix (TB).
    pub fn name(&self) -> &str {
        self.topo.name()
    }

    /// Full namespace name for `h1`, `rtr` or `h2` (NAT testbed: `s1`, `s2`, `sw`, `rtr`,
    /// `srv`); any other string is taken as a full name.
    pub fn ns(&self, which: &str) -> String {
        match which {
            "h1" | "rtr" | "h2" | "s1" | "s2" | "sw" | "srv" => format!("{}-{}", self.name(), which),
            other => other.to_string(),
        }
    }

    pub fn h1(&self) -> String {
        self.ns("h1")
    }
    pub fn rtr(&self) -> String {
        self.ns("rtr")
    }
    pub fn h2(&self) -> String {
        self.ns("h2")
    }

    /// `ip netns exec <ns> args...` as a Command, for the caller to configure and run.
    pub fn command(&self, ns: &str, args: &[&str]) -> Command {
        assert!(!args.is_empty(), "no command given");
        let mut c = Command::new("ip");
        c.arg("netns").arg("exec").arg(self.ns(ns)).args(args);
        c.stdin(Stdio::null());
        c
    }

    /// Runs `args` in namespace `ns` (h1, rtr, h2) and returns its output (deadline 120 s).
    pub fn exec(&self, ns: &str, args: &[&str]) -> Output {
        run_timeout(&mut self.command(ns, args), EXEC_TIMEOUT)
    }

    /// Like [`exec`](Self::exec) with a deadline of your own.
    pub fn exec_timeout(&self, ns: &str, args: &[&str], timeout: Duration) -> Output {
        run_timeout(&mut self.command(ns, args), timeout)
    }

    /// Runs `args` in `ns`, panics (with its output) unless it succeeds; returns stdout+stderr.
    pub fn exec_ok(&self, ns: &str, args: &[&str]) -> String {
        let out = self.exec(ns, args);
        let text = output_text(&out);
        assert!(out.status.success(), "`{}` in {} failed ({}):\n{}", args.join(" "), self.ns(ns), out.status, text);
        text
    }

    /// Runs a shell snippet in `ns` (`sh -c script`).
    pub fn sh(&self, ns: &str, script: &str) -> Output {
        self.exec(ns, &["sh", "-c", script])
    }

    /// Starts `args` in `ns` in the background. The Child's PID is the program's own
    /// (`ip netns exec` execs it). The caller stops it; `Testbed` drop also ends what is left.
    pub fn spawn(&self, ns: &str, args: &[&str]) -> std::process::Child {
        self.command(ns, args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {args:?} in {}: {e}", self.ns(ns)))
    }

    /// `ping -c count` from `ns` to `addr` (IPv4 or IPv6); true when at least one reply came
    /// back (ping's exit status).
    pub fn ping(&self, ns: &str, addr: &str, count: u32) -> bool {
        self.ping_output(ns, addr, &["-c", &count.to_string(), "-i", "0.2", "-W", "2"]).0
    }

    /// `ping <extra...> addr` from `ns`: (success, stdout+stderr).
    pub fn ping_output(&self, ns: &str, addr: &str, extra: &[&str]) -> (bool, String) {
        let mut args = vec!["ping"];
        args.extend_from_slice(extra);
        args.push(addr);
        let out = self.exec_timeout(ns, &args, Duration::from_secs(60));
        (out.status.success(), output_text(&out))
    }

    /// `ip neigh show <addr>` in `ns` (the kernel's neighbour entry, e.g.
    /// `192.0.2.1 dev eth0 lladdr 02:00:00:00:01:01 REACHABLE`).
    pub fn neigh(&self, ns: &str, addr: &str) -> String {
        output_text(&self.exec(ns, &["ip", "neigh", "show", addr]))
    }

    /// Flushes the kernel's neighbour cache in `ns` (IPv4 and IPv6).
    pub fn neigh_flush(&self, ns: &str) {
        self.exec_ok(ns, &["ip", "neigh", "flush", "all"]);
        self.exec_ok(ns, &["ip", "-6", "neigh", "flush", "all"]);
    }

    /// Waits until a TCP socket listens on `port` in `ns`.
    pub fn wait_listening(&self, ns: &str, port: u16, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let filter = format!("sport = :{port}");
        loop {
            let out = self.exec(ns, &["ss", "-Hltn", &filter]);
            if out.status.success() && !out.stdout.iter().all(u8::is_ascii_whitespace) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("nothing listens on TCP port {port} in {} after {:?}", self.ns(ns), timeout);
            }
            sleep(Duration::from_millis(50));
        }
    }

    /// Sends `bytes` of random data over TCP with nc, from `from_ns` to `dst:port` where a
    /// `nc -l` in `to_ns` writes it to a file; compares the sha256 of both sides.
    pub fn tcp_transfer(&self, from_ns: &str, to_ns: &str, dst: &str, port: u16, bytes: usize) -> Result<Transfer> {
        let dir = tempfile::tempdir()?;
        let send = dir.path().join("send.bin");
        let recv = dir.path().join("recv.bin");
        {
            let mut rnd = File::open("/dev/urandom")?;
            let mut buf = vec![0u8; bytes];
            rnd.read_exact(&mut buf)?;
            File::create(&send)?.write_all(&buf)?;
        }
        let fam = if dst.contains(':') { "-6" } else { "-4" };
        let port_s = port.to_string();
        let mut server = self
            .command(to_ns, &["nc", fam, "-l", &port_s])
            .stdout(Stdio::from(File::create(&recv)?))
            .stderr(Stdio::null())
            .spawn()
            .context("start nc -l")?;
        let result = (|| -> Result<Transfer> {
            self.wait_listening(to_ns, port, Duration::from_secs(10))?;
            let mut client = self.command(from_ns, &["nc", "-N", "-w", "10", dst, &port_s]);
            client.stdin(Stdio::from(File::open(&send)?));
            let out = run_timeout(&mut client, Duration::from_secs(90));
            if !out.status.success() {
                bail!("nc client {} -> {dst}:{port} failed ({}): {}", self.ns(from_ns), out.status, output_text(&out));
            }
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if let Some(st) = server.try_wait()? {
                    if !st.success() {
                        bail!("nc -l in {} exited with {st}", self.ns(to_ns));
                    }
                    break;
                }
                if Instant::now() >= deadline {
                    bail!("nc -l in {} did not finish within 30 s of the sender", self.ns(to_ns));
                }
                sleep(Duration::from_millis(20));
            }
            let a = sha256(&send)?;
            let b = sha256(&recv)?;
            let got = std::fs::metadata(&recv)?.len();
            if a != b {
                bail!("TCP transfer to {dst}:{port} corrupted: sent {bytes} bytes sha256 {a}, received {got} bytes sha256 {b}");
            }
            Ok(Transfer { bytes: got, sha256: a })
        })();
        if server.try_wait().ok().flatten().is_none() {
            let _ = server.kill();
            let _ = server.wait();
        }
        result
    }

    /// Makes the router namespace's own kernel the router (`testbed.sh kernel-router`): a
    /// reference to compare with, or to check the harness without the appliance.
    pub fn kernel_router(&self) {
        let out = self.topo.script_cmd("kernel-router");
        assert!(out.status.success(), "kernel-router failed: {}", output_text(&out));
    }

    /// PIDs of the processes running in `ns`.
    pub fn pids(&self, ns: &str) -> Vec<i32> {
        let out = run_timeout(Command::new("ip").args(["netns", "pids", &self.ns(ns)]), Duration::from_secs(10));
        String::from_utf8_lossy(&out.stdout).split_whitespace().filter_map(|p| p.parse().ok()).collect()
    }

    /// Deletes the namespaces (ending what still runs in them). Also done on drop.
    pub fn down(&mut self) {
        self.topo.down();
    }
}

fn sha256(path: &std::path::Path) -> Result<String> {
    let out = run_timeout(Command::new("sha256sum").arg(path).stdin(Stdio::null()), Duration::from_secs(30));
    if !out.status.success() {
        bail!("sha256sum {} failed: {}", path.display(), output_text(&out));
    }
    Ok(String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap_or_default().to_string())
}
