//! Small helpers shared by the robustness, multi-core and Prometheus tests: the Python that
//! has scapy, frames sent byte-exact from a host, a free TCP port inside a namespace,
//! polling with a deadline.

use crate::metrics::parse_samples;
use crate::proc::output_text;
use crate::testbed::Testbed;
use std::path::PathBuf;
use std::thread::sleep;
use std::time::{Duration, Instant};

/// A `python3` that can `import scapy` (Debian's `python3-scapy` lives in /usr/bin/python3's
/// path; a `python3` found first on PATH, such as a pyenv shim, may not have it).
/// `$SCAPY_PYTHON` overrides the search. Panics when none is found.
pub fn scapy_python() -> PathBuf {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(p) = std::env::var_os("SCAPY_PYTHON").filter(|p| !p.is_empty()) {
        candidates.push(PathBuf::from(p));
    }
    candidates.push(PathBuf::from("/usr/bin/python3"));
    candidates.push(PathBuf::from("python3"));
    for c in &candidates {
        let out = crate::proc::run_timeout(
            std::process::Command::new(c).args(["-c", "import scapy.all"]),
            Duration::from_secs(60),
        );
        if out.status.success() {
            return c.clone();
        }
    }
    panic!("no python3 with scapy found (tried {candidates:?}): install python3-scapy (scripts/setup.sh)");
}

/// Result of [`send_raw_frame`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawSend {
    /// The kernel took every copy.
    Sent,
    /// The kernel refused the frame (`send(2)` failed with this errno).
    Refused(i32),
}

/// Sends `frame` (a whole Ethernet frame, byte-exact: no padding is added) `count` times out
/// of `iface` in namespace `ns`, through an `AF_PACKET`/`SOCK_RAW` socket of a stdlib-only
/// Python. Unlike scapy's `sendp`, a frame the kernel refuses is reported, not padded.
pub fn send_raw_frame(tb: &Testbed, ns: &str, iface: &str, frame: &[u8], count: u32) -> RawSend {
    const SCRIPT: &str = r#"
import socket, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((sys.argv[1], 0))
f = bytes.fromhex(sys.argv[2])
for _ in range(int(sys.argv[3])):
    try:
        n = s.send(f)
    except OSError as e:
        print("refused", e.errno)
        sys.exit(0)
    if n != len(f):
        print("short", n)
        sys.exit(1)
print("sent")
"#;
    let hex: String = frame.iter().map(|b| format!("{b:02x}")).collect();
    let py = scapy_python();
    let py = py.to_string_lossy();
    let count_s = count.to_string();
    let out = tb.exec_timeout(ns, &[&py, "-c", SCRIPT, iface, &hex, &count_s], Duration::from_secs(60));
    let text = output_text(&out);
    assert!(out.status.success(), "raw send in {} failed ({}): {text}", tb.ns(ns), out.status);
    let line = text.lines().last().unwrap_or_default().trim();
    if line == "sent" {
        RawSend::Sent
    } else if let Some(e) = line.strip_prefix("refused ") {
        RawSend::Refused(e.trim().parse().unwrap_or(-1))
    } else {
        panic!("raw send in {}: unexpected output: {text}", tb.ns(ns));
    }
}

/// Parses `name hex` lines (as a frame-building script prints them) into (name, bytes).
pub fn parse_hex_frames(text: &str) -> Vec<(String, Vec<u8>)> {
    text.lines()
        .filter_map(|l| {
            let (name, hex) = l.trim().split_once(' ')?;
            let hex = hex.trim();
            if hex.len() % 2 != 0 {
                return None;
            }
            let bytes: Option<Vec<u8>> =
                (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).ok()).collect();
            Some((name.to_string(), bytes?))
        })
        .collect()
}

/// A TCP port in `from..` on which nothing listens in namespace `ns` (by `ss -Hltn`).
/// Good enough inside a testbed namespace, where only the test's own processes run.
pub fn free_tcp_port(tb: &Testbed, ns: &str, from: u16) -> u16 {
    let out = tb.exec(ns, &["ss", "-Hltn"]);
    assert!(out.status.success(), "ss -Hltn in {}: {}", tb.ns(ns), output_text(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    let used: Vec<u16> = text
        .lines()
        .filter_map(|l| l.split_whitespace().nth(3))
        .filter_map(|local| local.rsplit_once(':').and_then(|(_, p)| p.parse().ok()))
        .collect();
    (from..=u16::MAX).find(|p| !used.contains(p)).expect("a free TCP port")
}

/// A kernel interface counter (`/sys/class/net/<iface>/statistics/<counter>`, e.g.
/// `rx_packets`) of `iface` in namespace `ns`.
pub fn iface_counter(tb: &Testbed, ns: &str, iface: &str, counter: &str) -> u64 {
    let path = format!("/sys/class/net/{iface}/statistics/{counter}");
    let out = tb.exec(ns, &["cat", &path]);
    let text = output_text(&out);
    assert!(out.status.success(), "cat {path} in {}: {text}", tb.ns(ns));
    text.trim().parse().unwrap_or_else(|_| panic!("{path} in {}: {text:?} is not a number", tb.ns(ns)))
}

/// A seed for randomized traffic: `$name` when set (to replay a failure), else the time.
pub fn seed_from_env(name: &str) -> u64 {
    std::env::var(name).ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(1)
    })
}

/// Calls `f` every `every` until it returns `Some`, or returns `None` after `timeout`.
pub fn poll_until<T>(timeout: Duration, every: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        sleep(every);
    }
}

/// Every sample of `name` in `text`, as (value of `label`, value).
pub fn samples_by_label(text: &str, name: &str, label: &str) -> Vec<(String, f64)> {
    parse_samples(text)
        .into_iter()
        .filter(|s| s.name == name)
        .map(|s| (s.label(label).unwrap_or_default().to_string(), s.value))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_frames() {
        let f = parse_hex_frames("a 0102ff\n\nb 00\nbad 0\nc zz\n");
        assert_eq!(f, vec![("a".to_string(), vec![1, 2, 255]), ("b".to_string(), vec![0])]);
    }

    #[test]
    fn labels() {
        let t = "x{lcore=\"1\"} 0.5\nx{lcore=\"2\"} 1\ny 3\n";
        assert_eq!(samples_by_label(t, "x", "lcore"), vec![("1".into(), 0.5), ("2".into(), 1.0)]);
    }

    #[test]
    fn poll() {
        let mut n = 0;
        assert_eq!(
            poll_until(Duration::from_secs(1), Duration::from_millis(1), || {
                n += 1;
                (n == 3).then_some(n)
            }),
            Some(3)
        );
        assert_eq!(poll_until(Duration::from_millis(10), Duration::from_millis(1), || None::<()>), None);
    }
}
