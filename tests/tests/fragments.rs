//! IPv4 fragments from kernel hosts at their default settings cross the appliance: through
//! the plain router (`configs/demo.yaml`) and through the NAT (`configs/nat.yaml`, virtual
//! reassembly: every fragment follows the first one's mapping, RFC 4787 REQ-14, RFC 6888).
//! Both configs use af_xdp ports, which deliver fragments as they are (an af_packet port's
//! fanout reassembles them in the kernel; docs/hostile-input.md).
//!
//! Each case sends a UDP datagram larger than the MTU, once fragmented by the sending kernel
//! and once as crafted fragments sent last first (scapy), to a server that answers with what
//! it saw (the sender's address and port, the SHA-256 and length of the datagram) followed by
//! the datagram itself, so the answer is fragmented on its way back too. The client checks
//! that both directions arrived intact. Run as root, serially:
//! `cargo test --release -p appliance-tests --test fragments -- --test-threads=1`.

use appliance_tests::tools::scapy_python;
use appliance_tests::{demo_config, Appliance, Rig, Testbed};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The server: for every datagram, "ADDR:PORT SHA256 LEN\n" then the datagram.
const SERVER_PY: &str = r#"
import hashlib, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
s.bind(("0.0.0.0", int(sys.argv[1])))
print("ready", flush=True)
while True:
    d, a = s.recvfrom(65535)
    head = "%s:%d %s %d\n" % (a[0], a[1], hashlib.sha256(d).hexdigest(), len(d))
    s.sendto(head.encode() + d, a)
"#;

/// The client: sends SIZE random bytes from SPORT to DST:PORT (`kernel`: one datagram the
/// kernel fragments; `reversed`: scapy's fragments of 1000 bytes, last first) and prints
/// "reply PEER intact" when the server saw every byte and every byte came back, "reply PEER
/// corrupt" when not, "timeout" after three tries.
const CLIENT_PY: &str = r#"
import hashlib, os, socket, sys
mode, dst, port, size, sport = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
s.bind(("0.0.0.0", sport))
s.settimeout(2)
data = os.urandom(size)
if mode == "reversed":
    from scapy.all import IP, UDP, Raw, fragment, send
    frags = fragment(IP(dst=dst, id=0x4242) / UDP(sport=sport, dport=port) / Raw(data), fragsize=1000)
    assert len(frags) >= 3, len(frags)
for attempt in range(3):
    if mode == "kernel":
        s.sendto(data, (dst, port))
    else:
        for f in reversed(frags):
            send(f, verbose=False)
    try:
        r, _ = s.recvfrom(65535)
    except socket.timeout:
        continue
    head, body = r.split(b"\n", 1)
    peer, sha, n = head.decode().split()
    ok = sha == hashlib.sha256(data).hexdigest() and int(n) == size and body == data
    print("reply", peer, "intact" if ok else "corrupt", flush=True)
    break
else:
    print("timeout", flush=True)
"#;

fn python(scapy: bool) -> String {
    if scapy {
        scapy_python().to_string_lossy().into_owned()
    } else {
        "python3".to_owned()
    }
}

struct Server(Child);

impl Server {
    fn start(tb: &Testbed, ns: &str, port: u16) -> Server {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &tb.ns(ns), "python3", "-c", SERVER_PY, &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn the UDP server");
        let out = child.stdout.take().expect("server stdout is piped");
        let mut line = String::new();
        BufReader::new(out).read_line(&mut line).expect("server output");
        assert_eq!(line.trim(), "ready", "the UDP server in {ns} did not start");
        Server(child)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs the client in `ns` and returns the peer the server saw (the datagram arrived and
/// came back intact), or panics with what happened.
fn exchange(tb: &Testbed, app: &Appliance, ns: &str, mode: &str, dst: &str, sport: u16) -> String {
    let out = tb.exec_timeout(
        ns,
        &[&python(mode == "reversed"), "-c", CLIENT_PY, mode, dst, "9500", "4000", &sport.to_string()],
        Duration::from_secs(60),
    );
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let line = text.lines().find(|l| l.starts_with("reply ") || *l == "timeout").unwrap_or("");
    let Some(rest) = line.strip_prefix("reply ") else {
        panic!("{mode} fragments {ns} -> {dst}: {text}\n{}", app.log_tail(30));
    };
    let (peer, verdict) = rest.split_once(' ').expect("reply PEER VERDICT");
    assert_eq!(verdict, "intact", "{mode} fragments {ns} -> {dst}: {text}");
    peer.to_owned()
}

#[test]
fn fragmented_udp_crosses_the_router_both_ways() {
    let rig = Rig::with_config("frag", &demo_config());
    assert!(rig.tb.ping("h1", "198.51.100.2", 3), "ping h1 -> h2{}", rig.ctx());
    let _server = Server::start(&rig.tb, "h2", 9500);
    for (mode, sport) in [("kernel", 41000), ("reversed", 41001)] {
        let peer = exchange(&rig.tb, &rig.app, "h1", mode, "198.51.100.2", sport);
        assert_eq!(peer, format!("192.0.2.2:{sport}"), "{mode}: the router does not translate");
    }
    let bad = ["ipv4_malformed", "ipv4_fragment_malformed", "local_fragment"]
        .iter()
        .map(|r| rig.app.metric_sum("appliance_drops_total", &[("reason", r)]))
        .sum::<f64>();
    assert_eq!(bad, 0.0, "a fragment was dropped{}", rig.ctx());
}

#[test]
fn fragmented_udp_crosses_the_nat_in_order_and_out_of_order() {
    let tb = Testbed::up_nat("frag");
    let p = appliance_tests::testbed::workspace_root().join("configs/nat.yaml");
    let app = Appliance::start(&tb, &std::fs::read_to_string(p).expect("configs/nat.yaml"));
    for (ns, gw) in [("s1", "100.64.0.1"), ("srv", "198.51.100.1")] {
        assert!(tb.ping(ns, gw, 2), "{ns} cannot ping the appliance at {gw}");
    }
    let _server = Server::start(&tb, "srv", 9500);
    for (mode, sport) in [("kernel", 42000), ("reversed", 42001)] {
        let peer = exchange(&tb, &app, "s1", mode, "198.51.100.2", sport);
        let (addr, _) = peer.split_once(':').expect("ADDR:PORT");
        let last: u8 = addr.strip_prefix("198.51.100.").and_then(|o| o.parse().ok()).unwrap_or(0);
        assert!((64..=67).contains(&last), "{mode}: the server saw {peer}, not a pool address");
    }
    for r in ["nat_fragments_full", "nat_fragment_timeout", "nat_no_mapping"] {
        assert_eq!(app.metric_sum("appliance_drops_total", &[("reason", r)]), 0.0, "drops {r}\n{}", app.log_tail(30));
    }
}
