//! Two worker lcores: both rx queues of a port get traffic and both workers forward it.
//! The demo config with `lcores.workers: [{lcore: 1, cpu: 1}, {lcore: 2, cpu: 0}]`, both ports
//! with two rx queues over an af_packet device with two queue pairs (the kernel's fanout
//! spreads flows over them; rx queue q is polled by worker q % 2; DPDK 22.11's af_xdp driver
//! allows one queue on a veth). The appliance's veths carry an XDP pass program and GRO is
//! off on them (testbed `QUEUES=2`), so the hosts, at their default settings, segment their
//! TCP before the veths. Run as root, serially:
//! `cargo test --release -p appliance-tests --test multicore -- --test-threads=1`.

use appliance_tests::tools::{poll_until, samples_by_label};
use appliance_tests::{demo_config, edit_yaml, metric_sum, output_text, Rig};
use std::time::{Duration, Instant};

const H1_V4: &str = "192.0.2.2";
const H1_V6: &str = "2001:db8:1::2";
const H2_V4: &str = "198.51.100.2";
const H2_V6: &str = "2001:db8:2::2";
const IN_V4: &str = "192.0.2.1";
const IN_V6: &str = "2001:db8:1::1";

/// iperf3 runs (each on a new server port, so new flow hashes) before giving up on seeing
/// both inside rx queues used.
const MAX_IPERF_RUNS: u16 = 4;

fn two_worker_config() -> String {
    edit_yaml(&demo_config(), appliance_tests::appliance::two_workers)
}

fn assert_ping(rig: &Rig, ns: &str, addr: &str) {
    let (ok, out) = rig.tb.ping_output(ns, addr, &["-c", "3", "-i", "0.2", "-W", "2"]);
    assert!(ok, "ping {addr} from {ns} failed:\n{out}{}", rig.ctx());
}

/// Inside rx packets per queue.
fn inside_rx_by_queue(rig: &Rig) -> (f64, f64) {
    let m = rig.app.metrics();
    (
        metric_sum(&m, "appliance_port_rx_packets_total", &[("port", "inside"), ("queue", "0")]),
        metric_sum(&m, "appliance_port_rx_packets_total", &[("port", "inside"), ("queue", "1")]),
    )
}

/// One iperf3 TCP run h1 -> h2 with `streams` parallel streams for 3 s; returns the bytes
/// the receiver got.
fn iperf_run(rig: &Rig, port: u16, streams: u32) -> f64 {
    let port_s = port.to_string();
    let mut server = rig.tb.spawn("h2", &["iperf3", "-s", "-1", "-p", &port_s]);
    let result = {
        rig.tb
            .wait_listening("h2", port, Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("iperf3 server: {e:#}{}", rig.ctx()));
        let out = rig.tb.exec_timeout(
            "h1",
            &["iperf3", "-c", H2_V4, "-p", &port_s, "-P", &streams.to_string(), "-t", "3", "--connect-timeout", "5000"],
            Duration::from_secs(60),
        );
        let text = output_text(&out);
        assert!(
            out.status.success(),
            "iperf3 -P {streams} h1 -> {H2_V4}:{port} failed ({}):\n{text}{}",
            out.status,
            rig.ctx()
        );
        // "[SUM]   0.00-3.04  sec  1.23 GBytes  3.47 Gbits/sec    receiver"
        let line = text
            .lines()
            .find(|l| l.starts_with("[SUM]") && l.trim_end().ends_with("receiver"))
            .unwrap_or_else(|| panic!("no [SUM] receiver line in iperf3's output:\n{text}"));
        let f: Vec<&str> = line.split_whitespace().collect();
        let i = f.iter().position(|w| w.ends_with("Bytes")).unwrap_or_else(|| panic!("no byte count in {line:?}"));
        let n: f64 = f[i - 1].parse().unwrap_or_else(|_| panic!("bad number in {line:?}"));
        let mult = match f[i] {
            "Bytes" => 1.0,
            "KBytes" => 1024.0,
            "MBytes" => 1024.0 * 1024.0,
            "GBytes" => 1024.0 * 1024.0 * 1024.0,
            u => panic!("unit {u} in {line:?}"),
        };
        eprintln!("iperf3 -P {streams} port {port}: {}", line.trim());
        n * mult
    };
    // -1: the server exits after one test; end it by PID if it did not.
    if server.try_wait().ok().flatten().is_none() {
        let _ = server.kill();
    }
    let _ = server.wait();
    result
}

#[test]
fn two_workers_share_the_traffic() {
    let cfg = two_worker_config();
    let mut rig = Rig::with_config("multicore", &cfg);

    for (ns, addr) in [("h1", H2_V4), ("h1", H2_V6), ("h2", H1_V4), ("h2", H1_V6), ("h1", IN_V4), ("h1", IN_V6)] {
        assert_ping(&rig, ns, addr);
    }

    // Both worker lcores run a poll loop and report it.
    let m = rig.app.metrics();
    let mut ratios = samples_by_label(&m, "appliance_lcore_idle_ratio", "lcore");
    ratios.sort_by(|a, b| a.0.cmp(&b.0));
    let lcores: Vec<&str> = ratios.iter().map(|(l, _)| l.as_str()).collect();
    assert_eq!(lcores, ["1", "2"], "appliance_lcore_idle_ratio should have one sample per worker lcore:\n{m}");
    for (l, r) in &ratios {
        assert!((0.0..=1.0).contains(r), "idle ratio of lcore {l} is {r}");
    }

    // TCP with many flows until the fanout has put traffic on both inside rx queues.
    let (q0_start, q1_start) = inside_rx_by_queue(&rig);
    let mut runs = Vec::new();
    for attempt in 0..MAX_IPERF_RUNS {
        let port = 5201 + attempt;
        let streams = 8 + 8 * u32::from(attempt);
        let (q0a, q1a) = inside_rx_by_queue(&rig);
        let t0 = Instant::now();
        let bytes = iperf_run(&rig, port, streams);
        let took = t0.elapsed();
        assert!(bytes > 1e6, "iperf3 -P {streams}: the receiver got {bytes} bytes in 3 s{}", rig.ctx());
        assert!(took < Duration::from_secs(30), "iperf3 -P {streams} took {took:?}");
        let (q0b, q1b) = inside_rx_by_queue(&rig);
        runs.push(format!(
            "run {attempt} (-P {streams}, port {port}): inside rx queue 0 +{}, queue 1 +{}",
            q0b - q0a,
            q1b - q1a
        ));
        if q0b > q0_start && q1b > q1_start {
            break;
        }
    }
    let (q0, q1) = inside_rx_by_queue(&rig);
    assert!(
        q0 - q0_start > 0.0 && q1 - q1_start > 0.0,
        "after {} iperf3 runs, not both inside rx queues got traffic (queue 0 +{}, queue 1 +{}):\n{}\n{}{}",
        runs.len(),
        q0 - q0_start,
        q1 - q1_start,
        runs.join("\n"),
        rig.app.metrics(),
        rig.ctx()
    );
    eprintln!("{}", runs.join("\n"));

    // Both workers forwarded: each transmits on its own tx queue of the outside port.
    let m = rig.app.metrics();
    for q in ["0", "1"] {
        let tx = metric_sum(&m, "appliance_port_tx_packets_total", &[("port", "outside"), ("queue", q)]);
        assert!(tx > 0.0, "outside tx queue {q} (worker {q}) sent nothing:\n{m}{}", rig.ctx());
    }
    // And both spent time busy (idle ratio below 1 after the load).
    let ratios = samples_by_label(&m, "appliance_lcore_idle_ratio", "lcore");
    for (l, r) in &ratios {
        assert!(*r < 1.0, "lcore {l} idle ratio {r} after the iperf3 runs: never busy?\n{m}");
    }

    // Content check through the two workers.
    match rig.tb.tcp_transfer("h1", "h2", H2_V4, 5301, 4 << 20) {
        Ok(t) => assert_eq!(t.bytes, 4 << 20),
        Err(e) => panic!("4 MiB TCP transfer h1 -> {H2_V4}: {e:#}{}", rig.ctx()),
    }
    match rig.tb.tcp_transfer("h1", "h2", H2_V6, 5302, 4 << 20) {
        Ok(t) => assert_eq!(t.bytes, 4 << 20),
        Err(e) => panic!("4 MiB TCP transfer h1 -> {H2_V6}: {e:#}{}", rig.ctx()),
    }

    // No packet was lost to a full ring between the cores.
    let m = rig.app.metrics();
    for r in ["punt_ring_full", "inject_ring_full", "no_mbuf"] {
        let v = metric_sum(&m, "appliance_drops_total", &[("reason", r)]);
        assert_eq!(v, 0.0, "drops{{reason={r}}} = {v}{}", rig.ctx());
    }

    // Clean stop.
    let pid = rig.app.pid();
    let t0 = Instant::now();
    let (status, log) = rig.app.stop();
    assert!(status.success(), "exit status after SIGTERM: {status}\n{log}");
    assert!(t0.elapsed() < Duration::from_secs(15), "took {:?} to stop", t0.elapsed());
    assert!(log.contains("final counters"), "no \"final counters\" in its output:\n{log}");
    let gone = poll_until(Duration::from_secs(5), Duration::from_millis(100), || {
        (!appliance_tests::proc::pid_exists(pid)).then_some(())
    });
    assert!(gone.is_some(), "pid {pid} still exists after the appliance exited");
    let files = rig.app.hugepage_files();
    assert!(files.is_empty(), "hugepage files of prefix {} left: {files:?}", rig.app.file_prefix());
}
