//! `dpdk-dumpcap` attached to a running appliance: DPDK's own capture tool, a secondary
//! process of the appliance's EAL (same `--file-prefix`), writing pcapng.
//!
//! dumpcap builds its EAL arguments itself and takes no `--no-pci`, so it is started with
//! `SYSFS_PCI_DEVICES` set to an empty folder: EAL's PCI bus then sees no device at all and
//! the machine's own NIC is never scanned or probed (docs/capture.md).

use crate::proc::send_signal;
use anyhow::{bail, Context, Result};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

/// How long dumpcap may take to attach and start capturing.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running `dpdk-dumpcap -i DEVICE -p -w FILE` in a namespace. [`stop`](Self::stop) ends it
/// with SIGINT (by its PID, so that it detaches from the appliance and closes the file);
/// dropping it kills it if it still runs and removes its folder.
pub struct Dumpcap {
    child: Option<Child>,
    status: Option<ExitStatus>,
    dir: tempfile::TempDir,
    path: PathBuf,
    out_path: PathBuf,
    err_path: PathBuf,
}

impl Dumpcap {
    /// The command, without starting it: `ip netns exec NS dpdk-dumpcap
    /// --file-prefix=PREFIX -i DEVICE -p -w <dir>/capture.pcapng`, with an empty
    /// `SYSFS_PCI_DEVICES` in `dir`.
    pub fn command(ns: &str, file_prefix: &str, device: &str, dir: &Path) -> Command {
        let no_pci = dir.join("no-pci");
        std::fs::create_dir_all(&no_pci).expect("create the empty PCI folder");
        let mut cmd = Command::new("ip");
        // -p: leave the port's promiscuous mode alone (dumpcap would turn it on, and off again
        // when it stops, under the appliance's feet).
        cmd.args(["netns", "exec", ns, "dpdk-dumpcap"])
            .arg(format!("--file-prefix={file_prefix}"))
            .args(["-i", device, "-p", "-w"])
            .arg(dir.join("capture.pcapng"))
            .env("SYSFS_PCI_DEVICES", &no_pci)
            .stdin(Stdio::null());
        cmd
    }

    /// Starts dumpcap on `device` (a port's DPDK device name, e.g. `net_af_packet0`) of the
    /// appliance with EAL file prefix `file_prefix` running in namespace `ns`; returns once it
    /// captures (its callbacks are installed in the appliance).
    pub fn start(ns: &str, file_prefix: &str, device: &str) -> Result<Dumpcap> {
        let dir = tempfile::Builder::new().prefix("appliance-dumpcap.").tempdir()?;
        let path = dir.path().join("capture.pcapng");
        let out_path = dir.path().join("dumpcap.out");
        let err_path = dir.path().join("dumpcap.err");
        let child = Self::command(ns, file_prefix, device, dir.path())
            .stdout(Stdio::from(File::create(&out_path)?))
            .stderr(Stdio::from(File::create(&err_path)?))
            .spawn()
            .context("spawn dpdk-dumpcap")?;
        let mut d = Dumpcap { child: Some(child), status: None, dir, path, out_path, err_path };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            // dumpcap prints "Packets captured: " once the appliance has installed its
            // callbacks (after the enable request was answered).
            if d.output().contains("Packets captured:") {
                return Ok(d);
            }
            if let Some(st) = d.try_status() {
                bail!("dpdk-dumpcap exited ({st}) before capturing:\n{}", d.output());
            }
            if Instant::now() >= deadline {
                bail!("dpdk-dumpcap did not start capturing within {START_TIMEOUT:?}:\n{}", d.output());
            }
            sleep(Duration::from_millis(50));
        }
    }

    fn try_status(&mut self) -> Option<ExitStatus> {
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

    /// The PID of dpdk-dumpcap itself (`ip netns exec` execs it).
    pub fn pid(&self) -> Option<i32> {
        self.child.as_ref().map(|c| c.id() as i32)
    }

    /// Ends the capture: SIGINT, then waits (SIGKILL after 15 s). Returns its exit status.
    pub fn stop(&mut self) -> ExitStatus {
        if let Some(st) = self.try_status() {
            return st;
        }
        // Let the packets of the last moment reach the ring and the file.
        sleep(Duration::from_millis(300));
        if let Some(pid) = self.pid() {
            send_signal(pid, rustix::process::Signal::INT);
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(st) = self.try_status() {
                return st;
            }
            if Instant::now() >= deadline {
                let mut c = self.child.take().expect("running child");
                let _ = c.kill();
                let st = c.wait().expect("wait for dpdk-dumpcap");
                self.status = Some(st);
                return st;
            }
            sleep(Duration::from_millis(20));
        }
    }

    /// The pcapng file it writes.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Its stdout and stderr so far (the counts it reports when it stops).
    pub fn output(&self) -> String {
        let read = |p: &Path| std::fs::read(p).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
        let (out, err) = (read(&self.out_path), read(&self.err_path));
        if out.is_empty() || out.ends_with('\n') {
            format!("{out}{err}")
        } else {
            format!("{out}\n{err}")
        }
    }

    /// Where it ran, for messages.
    pub fn describe(&self) -> String {
        format!("dpdk-dumpcap ({})", self.dir.path().display())
    }
}

impl Drop for Dumpcap {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
