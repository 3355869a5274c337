//! `objcli image run`: a real container on a lazily fetched image.
//!
//! ```text
//!  imgagent (FUSE file → erofs, read-only, shared)   ← POST /images/NAME/mount
//!        lowerdir ─┐
//!  tmpfs upper ────┴─ overlay = the bundle's rootfs ─ runc run --bundle B ID
//! ```
//!
//! The host agent (`imgagent`) owns the image: its FUSE file, the erofs mount on it (the
//! read-only lower layer, shared by every container of that image on the host) and the chunk
//! cache. This runner owns one container: a tmpfs for its writes, the overlay, an OCI bundle
//! (`config.json` written here) and the `runc run` process. It tells the agent when the
//! container answers (`--ready-port`: the end of the start, which ends the trace the agent
//! records) and when it is gone (the agent may unmount the image). The container shares the
//! host's network namespace (no `network` namespace in the spec), so a server in it is reached
//! at the host's addresses.
//!
//! Cleanup, also on SIGINT/SIGTERM: the container is killed and deleted (`runc delete -f`),
//! the overlay and the tmpfs are unmounted, the bundle folder removed, the agent told.
//! Mounts are made in the caller's mount namespace; run the agent and this command in the same
//! one (`nsenter --net=...`, not `ip netns exec`, which makes a private mount namespace).

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// What to run.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// The agent's control address, `http://HOST:PORT`.
    pub agent: String,
    /// The image name.
    pub image: String,
    /// Container id (runc) and bundle folder name.
    pub id: String,
    /// The command and its arguments.
    pub args: Vec<String>,
    /// Where bundles are made.
    pub bundle_root: PathBuf,
    /// Size of the tmpfs that takes the container's writes.
    pub upper_mb: u32,
    /// The start is over when a TCP connect to 127.0.0.1:PORT succeeds.
    pub ready_port: Option<u16>,
    /// Fetch the whole image before starting (a full pull, for comparison).
    pub pull: bool,
    /// Prefetch along the image's merged start trace.
    pub prefetch: bool,
}

/// A call to the agent's HTTP API; an error answer becomes `Err` with the agent's message.
pub fn agent_call(agent: &str, method: &str, target: &str, body: &Value) -> Result<Value, String> {
    let addr = agent.strip_prefix("http://").unwrap_or(agent).trim_end_matches('/');
    let b = serde_json::to_vec(body).expect("json");
    let (status, resp) = objmeta::http::call(addr, method, target, Some(&b), Duration::from_secs(600))
        .map_err(|e| format!("image agent at {addr}: {e} (is imgagent running?)"))?;
    let v: Value =
        serde_json::from_slice(&resp).unwrap_or_else(|_| json!({ "message": String::from_utf8_lossy(&resp) }));
    if status != 200 {
        return Err(format!(
            "image agent: {} {target}: {status} {}",
            method,
            v["message"].as_str().unwrap_or("(no message)")
        ));
    }
    Ok(v)
}

/// The OCI runtime spec of the container (runc's `runc spec` defaults, minus the network
/// namespace and the /sys mounts, with a writable root).
pub fn oci_spec(args: &[String], hostname: &str) -> Value {
    json!({
        "ociVersion": "1.0.2-dev",
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": args,
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "LANG=C.UTF-8"],
            "cwd": "/",
            "capabilities": {
                "bounding": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
                "effective": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
                "permitted": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
                "ambient": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": true
        },
        "root": {"path": "rootfs", "readonly": false},
        "hostname": hostname,
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=1777", "size=65536k"]}
        ],
        "linux": {
            "resources": {"devices": [{"allow": false, "access": "rwm"}]},
            "namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}],
            "maskedPaths": ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                            "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
        }
    })
}

fn sh(cmd: &mut Command) -> Result<(), String> {
    let out = cmd.stdin(Stdio::null()).output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{cmd:?} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(())
}

/// Everything made for one container, undone in reverse on drop.
struct Bundle {
    dir: PathBuf,
    id: String,
    agent: String,
    image: String,
    mounted_image: bool,
    upper: bool,
    rootfs: bool,
    container: bool,
}

impl Drop for Bundle {
    fn drop(&mut self) {
        if self.container {
            let _ = Command::new("runc").args(["delete", "-f", &self.id]).stdin(Stdio::null()).output();
        }
        if self.rootfs {
            let _ = Command::new("umount").arg(self.dir.join("rootfs")).output();
        }
        if self.upper {
            let _ = Command::new("umount").arg(self.dir.join("up")).output();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        if self.mounted_image {
            let target = format!("/images/{}/unmount", self.image);
            if let Err(e) = agent_call(&self.agent, "POST", &target, &json!({})) {
                eprintln!("objcli: {e}");
            }
        }
    }
}

/// Waits until 127.0.0.1:`port` accepts a TCP connection.
fn wait_ready(port: u16, stop: &AtomicBool) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    while !stop.load(Ordering::SeqCst) {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

/// Runs the container to its end (or until `stop` is set: SIGINT/SIGTERM), then cleans up.
/// Returns runc's exit status. Progress goes to stderr as `objcli: ...` lines.
pub fn run(opts: &RunOptions, stop: Arc<AtomicBool>) -> Result<ExitStatus, String> {
    if opts.args.is_empty() {
        return Err("no command to run (objcli image run NAME -- CMD ARGS...)".into());
    }
    objmeta::image::validate_image_name(&opts.image).map_err(|e| e.to_string())?;
    if opts.id.is_empty() || !opts.id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)) {
        return Err(format!("container id {:?}: [A-Za-z0-9._-]+", opts.id));
    }
    let t0 = Instant::now();
    let dir = opts.bundle_root.join(&opts.id);
    if dir.exists() {
        return Err(format!("{} exists: a container {} is running or was not cleaned up", dir.display(), opts.id));
    }
    std::fs::create_dir_all(dir.join("up")).map_err(|e| format!("{}: {e}", dir.display()))?;
    std::fs::create_dir_all(dir.join("rootfs")).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut b = Bundle {
        dir: dir.clone(),
        id: opts.id.clone(),
        agent: opts.agent.clone(),
        image: opts.image.clone(),
        mounted_image: false,
        upper: false,
        rootfs: false,
        container: false,
    };
    let m = agent_call(
        &opts.agent,
        "POST",
        &format!("/images/{}/mount", opts.image),
        &json!({ "pull": opts.pull, "prefetch": opts.prefetch }),
    )?;
    b.mounted_image = true;
    let lower = m["lower"].as_str().ok_or("image agent: mount answer without \"lower\"")?.to_string();
    eprintln!(
        "objcli: image {} mounted at {lower} after {:.3} s ({} chunks, {} predicted)",
        opts.image,
        t0.elapsed().as_secs_f64(),
        m["chunks"],
        m["predicted"]
    );
    sh(Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={}m,mode=755", opts.upper_mb), "tmpfs"])
        .arg(dir.join("up")))?;
    b.upper = true;
    for d in ["up/upper", "up/work"] {
        std::fs::create_dir_all(dir.join(d)).map_err(|e| format!("{d}: {e}"))?;
    }
    let ovl = format!(
        "lowerdir={lower},upperdir={},workdir={}",
        dir.join("up/upper").display(),
        dir.join("up/work").display()
    );
    sh(Command::new("mount").args(["-t", "overlay", "overlay", "-o", &ovl]).arg(dir.join("rootfs")))?;
    b.rootfs = true;
    let spec = oci_spec(&opts.args, &opts.id);
    std::fs::write(dir.join("config.json"), serde_json::to_vec_pretty(&spec).expect("json"))
        .map_err(|e| format!("config.json: {e}"))?;
    let mut child: Child = Command::new("runc")
        .args(["run", "--bundle"])
        .arg(&dir)
        .arg(&opts.id)
        .stdin(Stdio::null())
        .spawn()
        .map_err(|e| format!("runc: {e} (is runc installed?)"))?;
    b.container = true;
    let ready_thread = opts.ready_port.map(|port| {
        let stop = stop.clone();
        let agent = opts.agent.clone();
        let image = opts.image.clone();
        std::thread::spawn(move || {
            if wait_ready(port, &stop) {
                let s = t0.elapsed().as_secs_f64();
                eprintln!("objcli: ready after {s:.3} s (127.0.0.1:{port} answers)");
                if let Err(e) = agent_call(&agent, "POST", &format!("/images/{image}/ready"), &json!({})) {
                    eprintln!("objcli: {e}");
                }
            }
        })
    });
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break st,
            Ok(None) => {}
            Err(e) => return Err(format!("waiting for runc: {e}")),
        }
        if stop.load(Ordering::SeqCst) {
            let _ = Command::new("runc").args(["kill", &opts.id, "KILL"]).stdin(Stdio::null()).output();
            break child.wait().map_err(|e| format!("waiting for runc: {e}"))?;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    stop.store(true, Ordering::SeqCst);
    if let Some(t) = ready_thread {
        let _ = t.join();
    }
    drop(b);
    Ok(status)
}

/// Default folder for bundles.
pub fn default_bundle_root() -> PathBuf {
    Path::new("/run/objcli-image").to_path_buf()
}

/// An id for a container that was not named: `img-<pid>`.
pub fn default_id() -> String {
    format!("img-{}", std::process::id())
}
