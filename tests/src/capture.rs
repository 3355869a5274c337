//! Packet captures inside a namespace (tcpdump) and their dissection (tshark): what a host
//! really received, decoded by an implementation independent of the appliance.

use crate::proc::{output_text, run_timeout};
use anyhow::{bail, Context, Result};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

/// A running `tcpdump -w` in a namespace. [`stop`](Self::stop) ends it (SIGINT, by its PID)
/// and leaves the pcap file; dropping it kills tcpdump if it still runs and removes the file.
pub struct Capture {
    child: Option<Child>,
    ns: String,
    iface: String,
    dir: tempfile::TempDir,
    path: PathBuf,
    err_path: PathBuf,
}

impl Capture {
    /// Starts `tcpdump -i iface -U -w FILE filter` in namespace `ns` (a full namespace name)
    /// and waits until it captures. `filter` is a pcap filter ("" for everything).
    pub fn start(ns: &str, iface: &str, filter: &str) -> Capture {
        Self::try_start(ns, iface, filter).unwrap_or_else(|e| panic!("tcpdump on {iface} in {ns}: {e:#}"))
    }

    pub fn try_start(ns: &str, iface: &str, filter: &str) -> Result<Capture> {
        let dir = tempfile::Builder::new().prefix("appliance-capture.").tempdir()?;
        let path = dir.path().join("capture.pcap");
        let err_path = dir.path().join("tcpdump.err");
        let err = File::create(&err_path)?;
        let mut cmd = Command::new("ip");
        // -Z root: Debian's tcpdump would otherwise drop to the tcpdump user and could not
        // write into the root-only scratch folder. -n: no name lookups. --immediate-mode and
        // -U: every packet is in the file as soon as it is seen (not when a buffer block
        // fills, which could be after the capture is stopped). -B: a 32 MiB buffer, so that
        // a burst on a busy machine is not lost before tcpdump writes it.
        cmd.args([
            "netns",
            "exec",
            ns,
            "tcpdump",
            "-n",
            "-Z",
            "root",
            "--immediate-mode",
            "-U",
            "-s",
            "0",
            "-B",
            "32768",
            "-i",
            iface,
            "-w",
        ])
        .arg(&path);
        if !filter.is_empty() {
            cmd.arg(filter);
        }
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::from(err));
        let child = cmd.spawn().context("spawn tcpdump")?;
        let mut cap = Capture { child: Some(child), ns: ns.to_string(), iface: iface.to_string(), dir, path, err_path };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let err = std::fs::read_to_string(&cap.err_path).unwrap_or_default();
            if err.contains("listening on") {
                return Ok(cap);
            }
            if let Some(st) = cap.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                cap.child = None;
                bail!("tcpdump exited ({st}) before capturing: {err}");
            }
            if Instant::now() >= deadline {
                bail!("tcpdump did not start capturing within 20 s: {err}");
            }
            sleep(Duration::from_millis(20));
        }
    }

    /// Ends the capture (SIGINT so that tcpdump flushes the file) and returns the pcap path.
    pub fn stop(&mut self) -> &Path {
        if let Some(mut c) = self.child.take() {
            // Let the last packets of the test reach the file (-U writes per packet).
            sleep(Duration::from_millis(300));
            // tcpdump itself: `ip netns exec` execs it.
            crate::proc::send_signal(c.id() as i32, rustix::process::Signal::INT);
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                if Instant::now() >= deadline {
                    let _ = c.kill();
                    let _ = c.wait();
                    break;
                }
                sleep(Duration::from_millis(20));
            }
        }
        &self.path
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What tcpdump printed (its packet counts once stopped).
    pub fn tcpdump_log(&self) -> String {
        std::fs::read_to_string(&self.err_path).unwrap_or_default()
    }

    /// `tshark -r <capture> args...` (the capture is stopped first); panics unless tshark
    /// succeeds. Returns stdout.
    pub fn tshark(&mut self, args: &[&str]) -> String {
        self.stop();
        tshark(&self.path, args)
    }

    /// The capture as `-T fields` rows: one Vec per packet (matching `display_filter`, may be
    /// ""), one String per field (multiple occurrences joined by ',').
    pub fn fields(&mut self, display_filter: &str, fields: &[&str]) -> Vec<Vec<String>> {
        self.stop();
        tshark_fields(&self.path, display_filter, fields)
    }

    /// Where it ran, for messages.
    pub fn describe(&self) -> String {
        format!("tcpdump on {} in {} ({})", self.iface, self.ns, self.dir.path().display())
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `tshark -r pcap args...`; panics (with its output) unless it succeeds. Returns stdout.
pub fn tshark(pcap: &Path, args: &[&str]) -> String {
    let out = run_timeout(
        Command::new("tshark").arg("-r").arg(pcap).args(args).stdin(Stdio::null()),
        Duration::from_secs(120),
    );
    assert!(
        out.status.success(),
        "tshark -r {} {args:?} failed ({}): {}",
        pcap.display(),
        out.status,
        output_text(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `tshark -r pcap [-Y filter] -T fields -e f1 -e f2 ...` split into rows and fields.
pub fn tshark_fields(pcap: &Path, display_filter: &str, fields: &[&str]) -> Vec<Vec<String>> {
    let mut args: Vec<&str> = Vec::new();
    if !display_filter.is_empty() {
        args.extend(["-Y", display_filter]);
    }
    // Checksums are verified (udp.checksum.status etc. then say good or bad).
    args.extend(["-o", "udp.check_checksum:TRUE", "-o", "tcp.check_checksum:TRUE"]);
    args.extend(["-T", "fields", "-E", "separator=/t", "-E", "aggregator=,", "-E", "occurrence=a"]);
    for f in fields {
        args.extend(["-e", f]);
    }
    let text = tshark(pcap, &args);
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let mut v: Vec<String> = l.split('\t').map(str::to_string).collect();
            v.resize(fields.len(), String::new());
            v
        })
        .collect()
}

/// The expert infos of level warning or above (`-z expert,warn[,filter]`) that tshark
/// reports for the packets matching `filter` ("" for all): empty when there are none.
pub fn tshark_expert_warnings(pcap: &Path, filter: &str) -> String {
    let z = if filter.is_empty() { "expert,warn".to_string() } else { format!("expert,warn,{filter}") };
    let out = tshark(pcap, &["-q", "-z", &z]);
    // tshark prints section headers ("Errors (n)", "Warns (n)") only when something was found.
    if out.lines().any(|l| l.starts_with("Errors (") || l.starts_with("Warns (")) {
        out
    } else {
        String::new()
    }
}
