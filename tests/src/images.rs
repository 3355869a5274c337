//! Helpers for the container-image tests (issue 11): extra host namespaces on the storage
//! fabric's bridge, the metadata service, the image agent (`imgagent`) and container runs
//! (`objcli image run`) started in a host's network namespace but the root mount namespace
//! (`nsenter --net`: the agent's FUSE and erofs mounts must be visible to the runner and to
//! runc), and cleanup of everything they leave (processes by PID, mounts, runc containers).
//!
//! ```text
//!   [cl] objmeta, objcli image push      [h2] imgagent, runc      [h3] imgagent, runc
//!   2001:db8:5::100                      2001:db8:5::102          2001:db8:5::103
//!        └──────────────── [sw: br0] ── a1, a2, a3 (storage appliances) ──┘
//! ```

use crate::proc::{output_text, run_timeout};
use crate::steering::{port_addr, sid, StorageFabric};
use crate::testbed::workspace_root;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The metadata service's address, inside the fabric (cl's port address).
pub const META: &str = "http://[2001:db8:5::100]:7070";

/// Object prefix of storage node `k`.
pub fn object_prefix(k: usize) -> String {
    format!("2001:db8:5b:{k}::")
}

/// A workspace binary (release build first).
pub fn bin(name: &str) -> PathBuf {
    for dir in ["target/release", "target/debug"] {
        let p = workspace_root().join(dir).join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!("no {name} binary: build it first (cargo build --release -p {name})");
}

/// The Debian rootfs (bookworm minbase + python3), built once by mmdebstrap and kept under
/// /var/cache/appliance-tests (tests/helpers/debian-rootfs.sh).
pub fn debian_rootfs() -> PathBuf {
    let script = workspace_root().join("tests/helpers/debian-rootfs.sh");
    let out = run_timeout(Command::new("bash").arg(&script), Duration::from_secs(900));
    let text = output_text(&out);
    assert!(out.status.success(), "building the Debian rootfs failed:\n{text}");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim().lines().last().expect("a path"))
}

/// `nsenter --net=/run/netns/NS ARGS` (network namespace only) as a Command.
pub fn in_net(ns: &str, args: &[&str]) -> Command {
    let mut c = Command::new("nsenter");
    c.arg(format!("--net=/run/netns/{ns}")).args(args).stdin(Stdio::null());
    c
}

/// Host namespaces added to a storage fabric: `<fabric>-hN` with 2001:db8:5::10N, a veth to
/// the bridge, routes to the storage SIDs and object prefixes. Deleted on drop.
pub struct Hosts {
    names: Vec<String>,
}

impl Hosts {
    pub fn add(st: &StorageFabric, ids: &[usize]) -> Hosts {
        let mut h = Hosts { names: Vec::new() };
        for &n in ids {
            let ns = format!("{}-h{n}", st.name());
            let peer = format!("p-h{n}");
            let sw = st.ns("sw");
            let sh = |args: &[&str]| {
                let out =
                    run_timeout(Command::new(args[0]).args(&args[1..]).stdin(Stdio::null()), Duration::from_secs(30));
                assert!(out.status.success(), "{args:?}: {}", output_text(&out));
            };
            sh(&["ip", "netns", "add", &ns]);
            h.names.push(ns.clone());
            sh(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
            sh(&[
                "ip",
                "netns",
                "exec",
                &ns,
                "sysctl",
                "-qw",
                "net.ipv6.conf.all.accept_ra=0",
                "net.ipv6.conf.default.accept_ra=0",
            ]);
            sh(&["ip", "-n", &ns, "link", "add", "eth0", "type", "veth", "peer", "name", &peer, "netns", &sw]);
            sh(&["ip", "-n", &ns, "link", "set", "eth0", "address", &format!("02:00:00:00:05:{:02x}", 0x70 + n)]);
            sh(&["ip", "-n", &sw, "link", "set", &peer, "master", "br0"]);
            sh(&["ip", "-n", &sw, "link", "set", &peer, "up"]);
            sh(&["ip", "-n", &ns, "link", "set", "eth0", "up"]);
            sh(&["ip", "-n", &ns, "-6", "addr", "add", &format!("2001:db8:5::{}/64", 100 + n), "dev", "eth0", "nodad"]);
            for k in 1..=3 {
                sh(&[
                    "ip",
                    "-n",
                    &ns,
                    "-6",
                    "route",
                    "add",
                    &format!("{}/128", sid(k)),
                    "via",
                    &port_addr(k),
                    "dev",
                    "eth0",
                ]);
                sh(&[
                    "ip",
                    "-n",
                    &ns,
                    "-6",
                    "route",
                    "add",
                    &format!("{}/64", object_prefix(k)),
                    "via",
                    &port_addr(k),
                    "dev",
                    "eth0",
                ]);
            }
            sh(&["ip", "netns", "exec", &ns, "sysctl", "-qw", "net.ipv6.conf.all.seg6_enabled=1"]);
        }
        h
    }

    /// Namespace of host `n`.
    pub fn ns(&self, n: usize) -> String {
        self.names.iter().find(|s| s.ends_with(&format!("-h{n}"))).cloned().expect("host added")
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for ns in &self.names {
            let out = run_timeout(Command::new("ip").args(["netns", "pids", ns]), Duration::from_secs(10));
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace().filter_map(|p| p.parse::<i32>().ok()) {
                // A process inside a namespace this test created.
                crate::proc::send_signal(pid, rustix::process::Signal::KILL);
            }
            let _ = run_timeout(Command::new("ip").args(["netns", "del", ns]), Duration::from_secs(10));
        }
    }
}

/// A process we started; SIGKILLed (by PID) and reaped on drop.
pub struct Proc {
    pub child: Option<Child>,
    pub log: PathBuf,
}

impl Proc {
    /// Starts `cmd` with stdout and stderr to `log`.
    pub fn spawn(mut cmd: Command, log: &Path) -> Proc {
        let f = File::create(log).expect("log file");
        cmd.stdout(Stdio::from(f.try_clone().expect("dup"))).stderr(Stdio::from(f));
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        Proc { child: Some(child), log: log.to_path_buf() }
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map_or(0, |c| c.id() as i32)
    }

    pub fn text(&self) -> String {
        std::fs::read(&self.log).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
    }

    /// Waits until the log contains `needle` (or the process exits, or the deadline passes).
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.text().contains(needle) {
                return true;
            }
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(_)) = c.try_wait() {
                    return self.text().contains(needle);
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Sends `sig` (by PID).
    pub fn signal(&self, sig: rustix::process::Signal) {
        if let Some(c) = &self.child {
            crate::proc::send_signal(c.id() as i32, sig);
        }
    }

    /// Waits for the exit (SIGKILL after `timeout`); returns whether it exited with 0.
    pub fn wait(&mut self, timeout: Duration) -> Option<bool> {
        let deadline = Instant::now() + timeout;
        let c = self.child.as_mut()?;
        loop {
            if let Ok(Some(st)) = c.try_wait() {
                self.child = None;
                return Some(st.success());
            }
            if Instant::now() >= deadline {
                let _ = c.kill();
                let _ = c.wait();
                self.child = None;
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Lazily unmounts everything at or under `root` (deepest first).
pub fn umount_under(root: &Path) {
    for _ in 0..4 {
        let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut m: Vec<PathBuf> = text
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .map(PathBuf::from)
            .filter(|p| p.starts_with(root))
            .collect();
        if m.is_empty() {
            return;
        }
        m.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        for p in m {
            let _ = Command::new("umount").arg("-l").arg(&p).stdin(Stdio::null()).output();
        }
    }
}

/// Deletes runc containers whose id starts with `prefix` (those a test started).
pub fn runc_cleanup(prefix: &str) {
    let out = run_timeout(Command::new("runc").args(["list", "-q"]), Duration::from_secs(10));
    for id in String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.starts_with(prefix)) {
        let _ = run_timeout(Command::new("runc").args(["delete", "-f", id]), Duration::from_secs(10));
    }
}

/// A scratch folder for one test under target/images-test (a real file system: the agent's
/// cache and FUSE mount point live there), with every mount under it and every runc container
/// of the test removed on drop, even when the test fails.
pub struct Scratch {
    pub dir: PathBuf,
    pub runc_prefix: String,
}

impl Scratch {
    pub fn new(tag: &str) -> Scratch {
        let dir = workspace_root().join("target/images-test").join(format!("{tag}-{}", std::process::id()));
        umount_under(&dir);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Scratch { dir, runc_prefix: format!("imgt{}-", std::process::id()) }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        runc_cleanup(&self.runc_prefix);
        umount_under(&self.dir);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// GET `url` with curl from namespace `ns`; (success, body).
pub fn curl(ns: &str, url: &str) -> (bool, String) {
    let out = run_timeout(&mut in_net(ns, &["curl", "-sS", "--max-time", "20", url]), Duration::from_secs(30));
    (out.status.success(), output_text(&out))
}

/// POST `body` to `url` with curl from namespace `ns`; (success, answer).
pub fn curl_post(ns: &str, url: &str, body: &str) -> (bool, String) {
    let out = run_timeout(
        &mut in_net(ns, &["curl", "-sS", "--max-time", "300", "-XPOST", url, "-d", body]),
        Duration::from_secs(320),
    );
    (out.status.success(), output_text(&out))
}

/// `sha256sum` of every regular file, the target of every symlink and the mode of every
/// entry under `root`, sorted: two trees with equal listings have the same content.
pub fn tree_listing(root: &Path) -> String {
    let script = "cd \"$1\" && find . -type f -print0 | sort -z | xargs -0 sha256sum && \
                  find . -type l -printf '%p -> %l\\n' | sort && find . -printf '%p %m %U %G\\n' | sort";
    let out = run_timeout(Command::new("sh").args(["-c", script, "sh"]).arg(root), Duration::from_secs(600));
    assert!(out.status.success(), "listing {}: {}", root.display(), output_text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}
