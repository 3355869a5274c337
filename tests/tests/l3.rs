//! L3 router behaviour with real kernel hosts on both sides of the appliance.
//! Each test brings up its own testbed and appliance (demo config). Run as root, serially:
//! `sudo bash scripts/test.sh` (or `cargo test -p appliance-tests --test l3 -- --test-threads=1`).

use appliance_tests::{Rig, Testbed};
use std::thread::sleep;
use std::time::{Duration, Instant};

const H1_V4: &str = "192.0.2.2";
const H1_V6: &str = "2001:db8:1::2";
const H2_V4: &str = "198.51.100.2";
const H2_V6: &str = "2001:db8:2::2";
const IN_V4: &str = "192.0.2.1";
const IN_V6: &str = "2001:db8:1::1";
const OUT_V4: &str = "198.51.100.1";
const OUT_V6: &str = "2001:db8:2::1";
const IN_MAC: &str = "02:00:00:00:01:01";
const OUT_MAC: &str = "02:00:00:00:02:01";

fn assert_ping(rig: &Rig, ns: &str, addr: &str) {
    let (ok, out) = rig.tb.ping_output(ns, addr, &["-c", "3", "-i", "0.2", "-W", "2"]);
    assert!(ok, "ping {addr} from {ns} failed:\n{out}{}", rig.ctx());
}

/// Both hosts know the appliance (and it knows them) before a test looks at one packet.
fn warm_up(rig: &Rig) {
    for (ns, addr) in [("h1", IN_V4), ("h1", IN_V6), ("h2", OUT_V4), ("h2", OUT_V6)] {
        assert_ping(rig, ns, addr);
    }
}

fn assert_neigh(tb: &Testbed, rig: &Rig, ns: &str, addr: &str, mac: &str) {
    let n = tb.neigh(ns, addr);
    assert!(
        n.contains(&format!("lladdr {mac}")) && !n.contains("FAILED") && !n.contains("INCOMPLETE"),
        "{ns}'s neighbour entry for {addr} should be {mac} (resolved), got: {n:?}{}",
        rig.ctx()
    );
}

#[test]
fn ping_both_ways_ipv4_and_ipv6() {
    let rig = Rig::demo("ping");
    assert_ping(&rig, "h1", H2_V4);
    assert_ping(&rig, "h1", H2_V6);
    assert_ping(&rig, "h2", H1_V4);
    assert_ping(&rig, "h2", H1_V6);
    // The appliance's own addresses: echo answered by the appliance itself.
    assert_ping(&rig, "h1", IN_V4);
    assert_ping(&rig, "h1", IN_V6);
    assert_ping(&rig, "h2", OUT_V4);
    assert_ping(&rig, "h2", OUT_V6);
}

#[test]
fn arp_and_ndp_resolution() {
    let rig = Rig::demo("neigh");
    let tb = &rig.tb;
    assert_ping(&rig, "h1", H2_V4);
    assert_ping(&rig, "h1", H2_V6);
    // h1 resolved the appliance's inside port by ARP and by ND.
    assert_neigh(tb, &rig, "h1", IN_V4, IN_MAC);
    assert_neigh(tb, &rig, "h1", IN_V6, IN_MAC);
    assert_neigh(tb, &rig, "h2", OUT_V4, OUT_MAC);
    assert_neigh(tb, &rig, "h2", OUT_V6, OUT_MAC);

    // h2 forgets the appliance: forwarding to h2 and the replies need a fresh resolution
    // in both directions.
    tb.neigh_flush("h2");
    assert_ping(&rig, "h1", H2_V4);
    assert_ping(&rig, "h1", H2_V6);
    assert_neigh(tb, &rig, "h2", OUT_V4, OUT_MAC);
    assert_neigh(tb, &rig, "h2", OUT_V6, OUT_MAC);

    // The appliance's own table, where it exports one.
    let m = rig.app.metrics();
    if appliance_tests::family_present(&m, "appliance_neighbors") {
        let n = appliance_tests::metric_sum(&m, "appliance_neighbors", &[]);
        assert!(n >= 2.0, "appliance_neighbors sums to {n}, expected at least h1 and h2:\n{m}");
    }
}

#[test]
fn tcp_transfer_content_verified() {
    let rig = Rig::demo("tcp");
    warm_up(&rig);
    for (dst, port) in [(H2_V4, 5001u16), (H2_V6, 5002u16)] {
        match rig.tb.tcp_transfer("h1", "h2", dst, port, 4 << 20) {
            Ok(t) => assert_eq!(t.bytes, 4 << 20),
            Err(e) => panic!("TCP transfer h1 -> {dst}:{port}: {e:#}{}", rig.ctx()),
        }
    }
}

#[test]
fn ttl_expired_gives_icmp_time_exceeded() {
    let rig = Rig::demo("ttl");
    warm_up(&rig);
    let (_, out) = rig.tb.ping_output("h1", H2_V4, &["-t", "1", "-c", "2", "-i", "0.5", "-W", "2"]);
    assert!(
        out.contains("Time to live exceeded") && out.contains(&format!("From {IN_V4}")),
        "expected ICMP time exceeded from {IN_V4}:\n{out}{}",
        rig.ctx()
    );
    let (_, out) = rig.tb.ping_output("h1", H2_V6, &["-6", "-t", "1", "-c", "2", "-i", "0.5", "-W", "2"]);
    assert!(
        out.contains("Time exceeded: Hop limit") && out.contains(&format!("From {IN_V6}")),
        "expected ICMPv6 time exceeded from {IN_V6}:\n{out}{}",
        rig.ctx()
    );
    // h2 is two hops away: TTL 2 reaches it.
    let (ok, out) = rig.tb.ping_output("h1", H2_V4, &["-t", "2", "-c", "3", "-i", "0.2", "-W", "2"]);
    assert!(ok, "ping -t 2 {H2_V4} should succeed:\n{out}{}", rig.ctx());
    let (ok, out) = rig.tb.ping_output("h1", H2_V6, &["-6", "-t", "2", "-c", "3", "-i", "0.2", "-W", "2"]);
    assert!(ok, "ping -6 -t 2 {H2_V6} should succeed:\n{out}{}", rig.ctx());
}

#[test]
fn unreachable_route_gives_icmp_unreachable() {
    let rig = Rig::demo("unreach");
    warm_up(&rig);
    // h1's default route sends these to the appliance, which has no route for them.
    let (ok, out) = rig.tb.ping_output("h1", "203.0.113.9", &["-c", "2", "-i", "0.5", "-W", "2"]);
    assert!(
        !ok && out.contains("Destination Net Unreachable") && out.contains(&format!("From {IN_V4}")),
        "expected ICMP net unreachable from {IN_V4}:\n{out}{}",
        rig.ctx()
    );
    let (ok, out) = rig.tb.ping_output("h1", "2001:db8:99::1", &["-c", "2", "-i", "0.5", "-W", "2"]);
    assert!(
        !ok && out.contains("Destination unreachable: No route") && out.contains(&format!("From {IN_V6}")),
        "expected ICMPv6 no route from {IN_V6}:\n{out}{}",
        rig.ctx()
    );
}

#[test]
fn metrics_match_traffic() {
    let rig = Rig::demo("metrics");
    warm_up(&rig);
    assert_ping(&rig, "h1", H2_V4); // h2 resolved; nothing pending
    sleep(Duration::from_millis(1500));
    let rx = |port| rig.app.metric_sum("appliance_port_rx_packets_total", &[("port", port)]);
    let tx = |port| rig.app.metric_sum("appliance_port_tx_packets_total", &[("port", port)]);
    let (rx_in0, tx_out0, rx_out0, tx_in0) = (rx("inside"), tx("outside"), rx("outside"), tx("inside"));

    let (ok, out) = rig.tb.ping_output("h1", H2_V4, &["-c", "50", "-i", "0.01", "-W", "1"]);
    assert!(ok && out.contains(" 0% packet loss"), "50 pings h1 -> h2 with no loss expected:\n{out}{}", rig.ctx());

    // Counters may be published with a small delay: wait for them to catch up.
    let deadline = Instant::now() + Duration::from_secs(5);
    while (rx("inside") - rx_in0 < 50.0 || tx("inside") - tx_in0 < 50.0) && Instant::now() < deadline {
        sleep(Duration::from_millis(200));
    }
    sleep(Duration::from_millis(500));
    let m = rig.app.metrics();
    let d = |name: &str, port: &str, before: f64| appliance_tests::metric_sum(&m, name, &[("port", port)]) - before;
    let checks = [
        ("rx inside (echo requests)", d("appliance_port_rx_packets_total", "inside", rx_in0)),
        ("tx outside (echo requests)", d("appliance_port_tx_packets_total", "outside", tx_out0)),
        ("rx outside (echo replies)", d("appliance_port_rx_packets_total", "outside", rx_out0)),
        ("tx inside (echo replies)", d("appliance_port_tx_packets_total", "inside", tx_in0)),
    ];
    for (what, delta) in checks {
        // 50 pings, plus a little slack for ARP/ND the hosts may send meanwhile.
        assert!((50.0..=60.0).contains(&delta), "{what}: counter grew by {delta}, expected 50..=60\n{m}{}", rig.ctx());
    }
    assert!(appliance_tests::family_present(&m, "appliance_drops_total"), "no appliance_drops_total metric:\n{m}");
}

#[test]
fn stops_cleanly_on_sigterm() {
    let mut rig = Rig::demo("stop");
    assert_ping(&rig, "h1", H2_V4);
    let pid = rig.app.pid();
    let t0 = Instant::now();
    let (status, log) = rig.app.stop();
    let took = t0.elapsed();
    assert!(status.success(), "exit status after SIGTERM: {status}\n{log}");
    assert!(took < Duration::from_secs(15), "took {took:?} to stop");
    assert!(log.contains("final counters"), "no \"final counters\" in its output:\n{log}");
    let alive = appliance_tests::proc::pid_exists(pid);
    assert!(!alive, "pid {pid} still exists after the appliance exited");
    let left = rig.tb.pids("rtr");
    assert!(left.is_empty(), "processes left in {}: {left:?}", rig.tb.rtr());
    let files = rig.app.hugepage_files();
    assert!(files.is_empty(), "hugepage files of prefix {} left: {files:?}", rig.app.file_prefix());
}

/// `ports[i].mtu` and `ports[i].promiscuous` reach the device, and a device
/// that refuses them stops the start-up with the field named (issue 12: they
/// used to be ignored).
#[test]
fn port_mtu_and_promiscuous_reach_the_device_or_stop_the_start_up() {
    use appliance_tests::{demo_config, edit_yaml, Appliance};
    use serde_yaml_ng::Value;
    let tb = Testbed::up("portset");
    // Frames of a 9000-byte MTU fit the mbufs, but DPDK 22.11's af_packet
    // takes frames of at most 1518 bytes. (af_packet ports: the demo's af_xdp
    // ports build their umem from the pool and refuse mbufs this large.)
    let with = |mtu: u64| {
        edit_yaml(&demo_config(), |v| {
            appliance_tests::appliance::af_packet_ports(v);
            v["mempool"]["data_room_bytes"] = Value::from(9216);
            v["ports"][0]["mtu"] = Value::from(mtu);
            v["ports"][1]["promiscuous"] = Value::from(true);
        })
    };
    let err = match Appliance::try_start(&tb, &with(9000)) {
        Ok(mut app) => panic!("started with an MTU af_packet cannot take; log:\n{}", app.stop().1),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("ports[0].mtu: net_af_packet0 refuses an MTU of 9000 (it accepts 46..=1500)"), "{err}");

    // An MTU the device takes reaches it: the kernel side of the af_packet
    // socket shows it, and the other port is promiscuous.
    let mut app = Appliance::start(&tb, &with(1400));
    let link = |dev: &str| tb.exec_ok(&tb.rtr(), &["ip", "link", "show", dev]);
    assert!(link("apl-in").contains("mtu 1400"), "{}\n{}", link("apl-in"), app.log());
    assert!(link("apl-out").contains("PROMISC"), "{}\n{}", link("apl-out"), app.log());
    assert!(!link("apl-in").contains("PROMISC"), "{}", link("apl-in"));
    assert!(tb.ping(&tb.h1(), H2_V4, 2), "no forwarding with the changed port settings\n{}", app.log());
    let (status, log) = app.stop();
    assert!(status.success(), "{status}\n{log}");
}
