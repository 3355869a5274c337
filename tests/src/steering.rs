//! The storage-steering testbed (scripts/steering-testbed.sh) as a value, the candidate
//! appliances' configuration, and a kernel storage client.
//!
//! ```text
//!                     [<name>-sw: bridge br0]
//!         ||               ||               ||               ||
//!   [<name>-cl] eth0  [<name>-a1] apl0  [<name>-a2] apl0  [<name>-a3] apl0
//!   2001:db8:5::100   appliance 1       appliance 2       appliance 3
//!                     2001:db8:5::1     2001:db8:5::2     2001:db8:5::3
//!                     SID 2001:db8:5a::1 SID 2001:db8:5a::2 SID 2001:db8:5a::3
//! ```
//!
//! The client sends a storage request over a plain UDP socket with a Segment Routing Header
//! (`IPV6_RTHDR`) listing candidate SIDs; the kernel sends it to the first candidate and
//! computes the UDP checksum over the last one (the final destination).

use crate::appliance::edit_yaml;
use crate::proc::{output_text, run_timeout};
use crate::testbed::ScriptTopology;
use anyhow::Result;
use serde_yaml_ng::Value;
use std::net::Ipv6Addr;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// The storage service's UDP port in [`candidate_config`].
pub const STORAGE_PORT: u16 = 7878;
/// The client's address.
pub const CLIENT: &str = "2001:db8:5::100";

/// Port address of appliance `k` (1..=3).
pub fn port_addr(k: usize) -> String {
    format!("2001:db8:5::{k}")
}

/// Storage SID of appliance `k` (1..=3).
pub fn sid(k: usize) -> String {
    format!("2001:db8:5a::{k}")
}

/// MAC of appliance `k`'s port (set by the script).
pub fn mac(k: usize) -> String {
    format!("02:00:00:00:05:0{k}")
}

/// One steering testbed: namespaces `<name>-cl`, `-sw`, `-a1`, `-a2`, `-a3`.
#[derive(Debug)]
pub struct StorageFabric {
    topo: ScriptTopology,
}

impl StorageFabric {
    /// Brings up a fresh steering testbed with a prefix unique to this process and call
    /// (`st<pid>-<tag><n>`). Panics (with the script's output) on failure.
    pub fn up(tag: &str) -> StorageFabric {
        Self::try_up(tag).unwrap_or_else(|e| panic!("steering testbed up failed: {e:#}"))
    }

    pub fn try_up(tag: &str) -> Result<StorageFabric> {
        Ok(StorageFabric { topo: ScriptTopology::up("scripts/steering-testbed.sh", "st", tag, 8)? })
    }

    /// The namespace prefix (TB).
    pub fn name(&self) -> &str {
        self.topo.name()
    }

    /// Full namespace name of `cl`, `sw`, `a1`, `a2`, `a3`; any other string is returned as is.
    pub fn ns(&self, which: &str) -> String {
        match which {
            "cl" | "sw" | "a1" | "a2" | "a3" => format!("{}-{}", self.name(), which),
            other => other.to_string(),
        }
    }

    /// Namespace of appliance `k` (1..=3).
    pub fn appliance_ns(&self, k: usize) -> String {
        self.ns(&format!("a{k}"))
    }

    /// Runs `args` in namespace `ns` with a deadline.
    pub fn exec_timeout(&self, ns: &str, args: &[&str], timeout: Duration) -> Output {
        let mut c = Command::new("ip");
        c.arg("netns").arg("exec").arg(self.ns(ns)).args(args).stdin(Stdio::null());
        run_timeout(&mut c, timeout)
    }

    /// Runs `args` in `ns`, panics (with its output) unless it succeeds; returns stdout+stderr.
    pub fn exec_ok(&self, ns: &str, args: &[&str]) -> String {
        let out = self.exec_timeout(ns, args, Duration::from_secs(120));
        let text = output_text(&out);
        assert!(out.status.success(), "`{}` in {} failed ({}):\n{}", args.join(" "), self.ns(ns), out.status, text);
        text
    }

    /// Sends `count` storage PROBE requests from the client, one after the other, each over
    /// the candidate SIDs `segments` (travel order), and waits up to `timeout` for each reply.
    pub fn probe(&self, segments: &[String], count: u32, first_request_id: u64, timeout: Duration) -> Vec<Probe> {
        let py = plain_python();
        let segs = segments.join(",");
        let args = [
            py.as_str(),
            "-c",
            PROBE_CLIENT,
            &segs,
            &STORAGE_PORT.to_string(),
            &count.to_string(),
            &first_request_id.to_string(),
            &timeout.as_secs_f64().to_string(),
        ];
        let deadline = timeout * count + Duration::from_secs(30);
        let out = self.exec_timeout("cl", &args, deadline);
        let text = output_text(&out);
        assert!(out.status.success(), "storage client in {} failed ({}):\n{text}", self.ns("cl"), out.status);
        let probes: Vec<Probe> = text.lines().filter_map(Probe::parse).collect();
        assert_eq!(
            probes.len(),
            count as usize,
            "storage client printed {} results for {count} requests:\n{text}",
            probes.len()
        );
        probes
    }

    /// Deletes the namespaces (ending what still runs in them). Also done on drop.
    pub fn down(&mut self) {
        self.topo.down();
    }
}

/// `/usr/bin/python3` (Debian's) when present, else `python3`: the client needs only the
/// standard library.
pub fn plain_python() -> String {
    if std::path::Path::new("/usr/bin/python3").is_file() {
        "/usr/bin/python3".into()
    } else {
        "python3".into()
    }
}

/// A reply as the client saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeAnswer {
    /// The reply's IPv6 source address and UDP source port.
    pub from: Ipv6Addr,
    pub from_port: u16,
    pub magic: u16,
    pub version: u8,
    pub op: u8,
    pub status: u16,
    pub request_id: u64,
    pub length: u32,
    /// ProbeReply body: the node that accepted, and its queue depth.
    pub accepted_by: Option<Ipv6Addr>,
    pub queue_depth: Option<u32>,
}

/// One request and what came back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub request_id: u64,
    /// `None`: no reply within the timeout.
    pub answer: Option<ProbeAnswer>,
}

impl Probe {
    /// Parses a client output line: `timeout <rid>` or
    /// `reply <rid> <src> <sport> <magic> <ver> <op> <status> <reply rid> <length> <accepted_by|-> <depth|-1>`.
    fn parse(line: &str) -> Option<Probe> {
        let w: Vec<&str> = line.split_whitespace().collect();
        match *w.first()? {
            "timeout" => Some(Probe { request_id: w.get(1)?.parse().ok()?, answer: None }),
            "reply" if w.len() == 12 => Some(Probe {
                request_id: w[1].parse().ok()?,
                answer: Some(ProbeAnswer {
                    from: w[2].parse().ok()?,
                    from_port: w[3].parse().ok()?,
                    magic: w[4].parse().ok()?,
                    version: w[5].parse().ok()?,
                    op: w[6].parse().ok()?,
                    status: w[7].parse().ok()?,
                    request_id: w[8].parse().ok()?,
                    length: w[9].parse().ok()?,
                    accepted_by: w[10].parse().ok(),
                    queue_depth: w[11].parse::<i64>().ok().and_then(|d| u32::try_from(d).ok()),
                }),
            }),
            _ => None,
        }
    }
}

/// The storage client: a plain UDP socket with a type-4 routing header set through
/// IPV6_RTHDR (57). The SRH lists the segments in reverse order; the kernel overwrites
/// Segment List[0] with the sendto destination, which must be the final segment, sends to
/// Segment List[Segments Left] = the first candidate, and computes the UDP checksum over the
/// final destination (RFC 8200 §8.1). The request is the 40-byte storage header
/// (appliance/src/wire/storage.rs): magic 0x4153, version 1, op 0x10 (PROBE), a request id.
pub const PROBE_CLIENT: &str = r#"
import socket, struct, sys
segs = [socket.inet_pton(socket.AF_INET6, a) for a in sys.argv[1].split(",")]
port, count, rid0, timeout = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
n = len(segs)
srh = struct.pack("!BBBBBBH", 0, 2 * n, 4, n - 1, n - 1, 0, 0) + b"".join(reversed(segs))
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IPV6, 57, srh)   # IPV6_RTHDR
s.bind(("::", 0))
s.settimeout(timeout)
final = socket.inet_ntop(socket.AF_INET6, segs[-1])
for i in range(count):
    rid = rid0 + i
    req = struct.pack("!HBBHHQQQII", 0x4153, 1, 0x10, 0, 0, rid, 0, 0, 0, 0)
    s.sendto(req, (final, port))
    try:
        while True:
            data, addr = s.recvfrom(2048)
            if len(data) >= 40 and struct.unpack("!Q", data[8:16])[0] == rid:
                break
            print("stray", addr[0], data.hex(), flush=True)
    except socket.timeout:
        print("timeout", rid, flush=True)
        continue
    magic, ver, op, status, flags, rrid, obj, off, length, _ = struct.unpack("!HBBHHQQQII", data[:40])
    body = data[40:40 + length]
    acc = socket.inet_ntop(socket.AF_INET6, body[:16]) if len(body) >= 20 else "-"
    depth = struct.unpack("!I", body[16:20])[0] if len(body) >= 20 else -1
    print("reply", rid, addr[0], addr[1], magic, ver, op, status, rrid, length, acc, depth, flush=True)
"#;

/// Config of candidate appliance `k` (1..=3) on the steering testbed: port `net` (af_xdp on
/// apl0) with 2001:db8:5::k/64, the storage SID 2001:db8:5a::k (`sr-c` with `threshold`),
/// the storage service with queue depth `load`, static routes to the other candidates'
/// SIDs, one worker, idle back-off, 128 MiB. With `static_neighbors` the other candidates'
/// MACs are configured too (no neighbour discovery between candidates).
pub fn candidate_config(k: usize, threshold: u32, load: u32, static_neighbors: bool) -> String {
    assert!((1..=3).contains(&k), "candidate {k}: 1..=3");
    let others: Vec<usize> = (1..=3).filter(|j| *j != k).collect();
    let mut y = String::new();
    y += "eal: { file_prefix: steering, memory_mb: 128, huge_unlink: true, pci: false }\n";
    y += "lcores: { main: { lcore: 0, cpu: 0 }, workers: [ { lcore: 1, cpu: 1 } ] }\n";
    y += &format!(
        "ports:\n  - {{ name: net, device: net_af_xdp0, args: \"iface=apl0\", ipv6: [\"{}/64\"] }}\n",
        port_addr(k)
    );
    y += "routes:\n";
    for j in &others {
        y += &format!("  - {{ prefix: \"{}/128\", via: \"{}\", port: net }}\n", sid(*j), port_addr(*j));
    }
    if static_neighbors {
        y += "neighbors:\n";
        for j in &others {
            y += &format!("  - {{ ip: \"{}\", mac: \"{}\", port: net }}\n", port_addr(*j), mac(*j));
        }
    }
    y += "pipeline: { idle_backoff: { enabled: true, empty_polls: 256, sleep_us: 50 } }\n";
    y += "metrics: { listen: \"127.0.0.1:9100\" }\n";
    y += "log: { level: info }\n";
    y += &format!(
        "srv6:\n  local_sids:\n    - {{ sid: \"{}\", behavior: storage, policy: sr-c, threshold: {threshold} }}\n",
        sid(k)
    );
    y += &format!("storage_service: {{ udp_port: {STORAGE_PORT}, queue_depth: {load} }}\n");
    // Round trip through the YAML library: a typo in the template fails here, not later.
    edit_yaml(&y, |_v: &mut Value| {})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_client_lines() {
        let p = Probe::parse("reply 7 2001:db8:5a::2 7878 16723 1 144 0 7 24 2001:db8:5a::2 3").unwrap();
        let a = p.answer.unwrap();
        assert_eq!(p.request_id, 7);
        assert_eq!(a.from, "2001:db8:5a::2".parse::<Ipv6Addr>().unwrap());
        assert_eq!((a.op, a.status, a.length, a.queue_depth), (0x90, 0, 24, Some(3)));
        assert_eq!(Probe::parse("timeout 9"), Some(Probe { request_id: 9, answer: None }));
        assert_eq!(Probe::parse("stray x y"), None);
        let p = Probe::parse("reply 1 2001:db8:5a::1 7878 16723 1 144 3 1 0 - -1").unwrap();
        assert_eq!(p.answer.unwrap().accepted_by, None);
    }

    #[test]
    fn config_shape() {
        let y = candidate_config(2, 5, 3, true);
        let v: Value = serde_yaml_ng::from_str(&y).unwrap();
        assert_eq!(v["storage_service"]["queue_depth"].as_u64(), Some(3));
        assert_eq!(v["srv6"]["local_sids"][0]["sid"].as_str(), Some("2001:db8:5a::2"));
        assert_eq!(v["routes"].as_sequence().unwrap().len(), 2);
        assert_eq!(v["neighbors"][1]["ip"].as_str(), Some("2001:db8:5::3"));
        assert!(candidate_config(1, 5, 9, false).find("neighbors").is_none());
    }
}
