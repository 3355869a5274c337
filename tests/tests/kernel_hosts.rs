//! Kernel hosts at their default settings (issue 12): veths with transmit checksum offload
//! and TSO/GSO on, as every container runtime leaves them. Such a host sends TCP and UDP
//! with only the pseudo-header sum in the checksum field, and TCP super-frames larger than
//! the MTU unless the kernel segments them before the veth. The appliance completes the
//! partial checksums on input (`appliance_checksums_completed_total`), and its af_xdp ports
//! make the peers segment; on an af_packet port super-frames are a named, counted drop
//! (`superframe`). docs/architecture.md, "Kernel hosts at their default settings".
//!
//! From default hosts: ping, UDP (every size up to the MTU, echoed by a kernel socket) and a
//! 4 MiB TCP transfer (sha256 on both sides) through the router (IPv4 and IPv6), through
//! the NAT, over SRv6 (the kernel's `encap seg6` to End and End.DT6 on the appliance), and
//! to the storage service (plain and SR-steered requests). One test turns the offloads off,
//! as the testbeds used to: the reference, in which nothing needs completing.
//!
//! Run as root, serially: `cargo test --release -p appliance-tests --test kernel_hosts --
//! --test-threads=1`.

use appliance_tests::proc::run_timeout;
use appliance_tests::storage::DeviceFile;
use appliance_tests::testbed::workspace_root;
use appliance_tests::tools::poll_until;
use appliance_tests::{demo_config, edit_yaml, output_text, Appliance, Rig, Testbed};
use serde_yaml_ng::Value;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const H1_V4: &str = "192.0.2.2";
const H1_V6: &str = "2001:db8:1::2";
const H2_V4: &str = "198.51.100.2";
const H2_V6: &str = "2001:db8:2::2";
const MIB4: usize = 4 << 20;

/// `ethtool -k` of `iface` in `ns`: (tx-checksumming on, TCP segmentation offload on).
fn offloads(tb: &Testbed, ns: &str, iface: &str) -> (bool, bool) {
    let text = tb.exec_ok(ns, &["ethtool", "-k", iface]);
    let on = |feature: &str| text.lines().any(|l| l.trim_start().starts_with(&format!("{feature}: on")));
    (on("tx-checksumming"), on("tcp-segmentation-offload"))
}

/// The hosts' veths are at the kernel's defaults: checksum offload on. With the appliance's
/// af_xdp port on the other end, the kernel has taken TSO away from them (veth does so for
/// the peer of an interface with an XDP program): that is how super-frames are prevented.
fn assert_default_hosts(tb: &Testbed, hosts: &[&str], tso_expected: bool) {
    for ns in hosts {
        let (csum, tso) = offloads(tb, ns, "eth0");
        assert!(csum, "{ns}: transmit checksum offload is not on (the default)");
        assert_eq!(tso, tso_expected, "{ns}: TCP segmentation offload on = {tso}");
    }
}

/// The UDP echo helper running in a namespace; killed on drop.
struct Echo(Child);

impl Echo {
    fn start(tb: &Testbed, ns: &str, addr: &str, port: u16) -> Echo {
        let helper = workspace_root().join("tests/helpers/udp_check.py");
        let mut child = tb
            .command(ns, &["python3", &helper.display().to_string(), "echo", addr, &port.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the UDP echo helper");
        let mut line = String::new();
        let _ = BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line);
        assert_eq!(line.trim(), "ready", "UDP echo on [{addr}]:{port} in {ns} did not start");
        Echo(child)
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// UDP datagrams of every size up to the MTU from `from` to `dst`, echoed by a kernel socket
/// in `to` listening on `bind`: each must come back unchanged.
fn assert_udp(tb: &Testbed, from: &str, to: &str, bind: &str, dst: &str, port: u16, ctx: &dyn Fn() -> String) {
    assert_udp_up_to(tb, from, to, bind, dst, port, None, ctx)
}

/// [`assert_udp`] with the largest datagram given (`None`: what fits a 1500-byte MTU).
#[allow(clippy::too_many_arguments)]
fn assert_udp_up_to(
    tb: &Testbed,
    from: &str,
    to: &str,
    bind: &str,
    dst: &str,
    port: u16,
    largest: Option<usize>,
    ctx: &dyn Fn() -> String,
) {
    let _echo = Echo::start(tb, to, bind, port);
    let helper = workspace_root().join("tests/helpers/udp_check.py").display().to_string();
    let (port, largest) = (port.to_string(), largest.map(|l| l.to_string()));
    let mut args = vec!["python3", helper.as_str(), "send", dst, port.as_str()];
    args.extend(largest.as_deref());
    let out = output_text(&tb.exec_timeout(from, &args, Duration::from_secs(60)));
    assert_eq!(out.trim(), "echoed 5 of 5", "UDP {from} -> [{dst}]:{port} through the appliance{}", ctx());
}

fn assert_ping(tb: &Testbed, from: &str, dst: &str, ctx: &dyn Fn() -> String) {
    let (ok, out) = tb.ping_output(from, dst, &["-c", "3", "-i", "0.2", "-W", "2"]);
    assert!(ok, "ping {dst} from {from}:\n{out}{}", ctx());
}

fn assert_tcp(tb: &Testbed, from: &str, to: &str, dst: &str, port: u16, ctx: &dyn Fn() -> String) {
    match tb.tcp_transfer(from, to, dst, port, MIB4) {
        Ok(t) => assert_eq!(t.bytes, MIB4 as u64),
        Err(e) => panic!("4 MiB TCP {from} -> {dst}:{port}: {e:#}{}", ctx()),
    }
}

/// Partial checksums were completed, no super-frame arrived and no transport checksum was
/// refused.
fn assert_completed(app: &Appliance, what: &str) {
    let completed = app.metric_sum("appliance_checksums_completed_total", &[]);
    assert!(completed > 0.0, "{what}: no partial checksum completed: were the hosts at their defaults?");
    for reason in ["superframe", "nat_bad_checksum", "storage_bad_checksum"] {
        let n = app.metric_sum("appliance_drops_total", &[("reason", reason)]);
        assert_eq!(n, 0.0, "{what}: drops{{reason={reason}}} = {n}\n{}", app.log_tail(30));
    }
}

#[test]
fn router_carries_default_hosts() {
    let rig = Rig::demo("khrouter");
    let tb = &rig.tb;
    let ctx = || rig.ctx();
    assert_default_hosts(tb, &["h1", "h2"], false);
    for (from, dst) in [("h1", H2_V4), ("h1", H2_V6), ("h2", H1_V4), ("h2", H1_V6)] {
        assert_ping(tb, from, dst, &ctx);
    }
    assert_udp(tb, "h1", "h2", "0.0.0.0", H2_V4, 7001, &ctx);
    assert_udp(tb, "h1", "h2", "::", H2_V6, 7002, &ctx);
    assert_udp(tb, "h2", "h1", "0.0.0.0", H1_V4, 7003, &ctx);
    assert_tcp(tb, "h1", "h2", H2_V4, 5401, &ctx);
    assert_tcp(tb, "h1", "h2", H2_V6, 5402, &ctx);
    assert_tcp(tb, "h2", "h1", H1_V4, 5403, &ctx);
    assert_tcp(tb, "h2", "h1", H1_V6, 5404, &ctx);
    assert_completed(&rig.app, "router");
}

#[test]
fn nat_carries_default_hosts() {
    let tb = Testbed::up_nat("khnat");
    let config = std::fs::read_to_string(workspace_root().join("configs/nat.yaml")).expect("configs/nat.yaml");
    let app = Appliance::start(&tb, &config);
    let ctx = || format!("\n{}", app.log_tail(40));
    // s1 and s2 reach the appliance through a bridge: they keep TSO, and the switch's kernel
    // segments before the appliance's veth (p-in lost TSO to the XDP program on apl-in).
    assert_default_hosts(&tb, &["s1", "s2"], true);
    assert_default_hosts(&tb, &["srv"], false);
    assert_eq!(offloads(&tb, "sw", "p-in"), (true, false), "p-in: checksum offload on, TSO taken away");
    for (from, dst) in [("s1", "100.64.0.1"), ("s2", "100.64.0.1"), ("srv", "198.51.100.1"), ("s1", H2_V4)] {
        assert_ping(&tb, from, dst, &ctx);
    }
    assert_udp(&tb, "s1", "srv", "0.0.0.0", H2_V4, 7011, &ctx);
    assert_udp(&tb, "s2", "srv", "0.0.0.0", H2_V4, 7012, &ctx);
    assert_tcp(&tb, "s1", "srv", H2_V4, 5411, &ctx);
    assert_tcp(&tb, "s2", "srv", H2_V4, 5412, &ctx);
    assert_completed(&app, "NAT");
    let translated = app.metric_sum("appliance_nat_requests_total", &[("kind", "outbound")]);
    assert!(translated >= 4.0, "the flows went through the NAT: {translated} outbound mapping requests");
}

#[test]
fn srv6_encap_from_a_default_host() {
    const SID_END: &str = "2001:db8:a::1";
    const SID_DT6: &str = "2001:db8:a::2";
    let config = edit_yaml(&demo_config(), |v| {
        v["srv6"] = serde_yaml_ng::from_str(&format!(
            "local_sids:\n  - {{sid: \"{SID_END}\", behavior: end}}\n  - {{sid: \"{SID_DT6}\", behavior: end.dt6}}\n"
        ))
        .unwrap();
    });
    let rig = Rig::with_config("khsrv6", &config);
    let tb = &rig.tb;
    let ctx = || rig.ctx();
    assert_default_hosts(tb, &["h1", "h2"], false);
    assert_ping(tb, "h1", H2_V6, &ctx);
    // h1's kernel encapsulates everything for h2: End, then End.DT6 on the appliance.
    tb.exec_ok(
        "h1",
        &[
            "ip",
            "-6",
            "route",
            "add",
            &format!("{H2_V6}/128"),
            "encap",
            "seg6",
            "mode",
            "encap",
            "segs",
            &format!("{SID_END},{SID_DT6}"),
            "dev",
            "eth0",
        ],
    );
    assert_ping(tb, "h1", H2_V6, &ctx);
    // The encapsulation (outer IPv6 header and a two-segment SRH) takes 80 bytes of the MTU.
    assert_udp_up_to(tb, "h1", "h2", "::", H2_V6, 7021, Some(1500 - 40 - 8 - 80), &ctx);
    assert_tcp(tb, "h1", "h2", H2_V6, 5421, &ctx);
    assert_completed(&rig.app, "SRv6");
    let decapsulated = rig.app.metric_sum("appliance_srv6_sid_packets_total", &[("sid", SID_DT6)]);
    assert!(decapsulated > 2000.0, "the transfer went through End.DT6: {decapsulated} packets");
    let drops = rig.app.metric_sum("appliance_srv6_sid_drops_total", &[]);
    assert_eq!(drops, 0.0, "SIDs dropped packets{}", ctx());
}

#[test]
fn storage_requests_from_a_default_host() {
    const PREFIX: &str = "2001:db8:f0:1::";
    const SID: &str = "2001:db8:a::5";
    let dev = DeviceFile::new("kh");
    let config = edit_yaml(&demo_config(), |v| {
        let mut st = serde_yaml_ng::Mapping::new();
        st.insert("object_prefix".into(), Value::from(format!("{PREFIX}/64")));
        st.insert("device".into(), Value::from(dev.0.display().to_string()));
        st.insert("size_mb".into(), Value::from(64));
        v["storage"] = Value::Mapping(st);
        v["srv6"] = serde_yaml_ng::from_str(&format!(
            "local_sids:\n  - {{sid: \"{SID}\", behavior: storage, policy: sr-c, threshold: 8}}\n"
        ))
        .unwrap();
    });
    let rig = Rig::with_config("khstore", &config);
    let tb = &rig.tb;
    let ctx = || rig.ctx();
    assert_default_hosts(tb, &["h1"], false);
    let client = workspace_root().join("tests/helpers/obj_client.py").display().to_string();
    let obj = |args: &[&str]| {
        let mut all = vec!["python3", client.as_str()];
        all.extend_from_slice(args);
        output_text(&tb.exec_timeout("h1", &all, Duration::from_secs(180)))
    };
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("in");
    let back = dir.path().join("out");
    let mut data = vec![0u8; MIB4];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom").unwrap(), &mut data).unwrap();
    std::fs::write(&src, &data).unwrap();
    let out = obj(&[PREFIX, "put", "7", &src.display().to_string()]);
    assert_eq!(out.trim(), format!("ok {MIB4}"), "put of 4 MiB from h1{}", ctx());
    let out = obj(&[PREFIX, "get", "7", &back.display().to_string()]);
    assert_eq!(out.trim(), format!("ok {MIB4}"), "get of 4 MiB to h1{}", ctx());
    assert!(std::fs::read(&back).unwrap() == data, "the object read back differs from what was put");
    // A request steered over the storage SID (UDP behind an SRH: the kernel's partial
    // checksum covers the final destination, the replica address).
    let small = dir.path().join("small");
    std::fs::write(&small, b"steered through the SID").unwrap();
    let replica = format!("{PREFIX}8");
    let out = obj(&["-", "steer", &format!("{SID},{replica}"), "8", &small.display().to_string()]);
    assert_eq!(out.trim(), format!("accepted {replica} status 0"), "steered put{}", ctx());
    assert_completed(&rig.app, "storage");
    let accepted =
        rig.app.metric_sum("appliance_srv6_storage_decisions_total", &[("sid", SID), ("decision", "accept")]);
    assert!(accepted >= 1.0, "the SID accepted the steered put ({accepted})\n{}", rig.app.metrics());
}

/// On an af_packet port (no XDP program, so the peer keeps TSO) a default host's TCP
/// super-frames arrive cut at the driver's frame size: each is dropped and counted as
/// `superframe`, the remedy being an af_xdp port. UDP and ping still cross.
#[test]
fn af_packet_counts_superframes_from_default_hosts() {
    let config = edit_yaml(&demo_config(), appliance_tests::appliance::af_packet_ports);
    let rig = Rig::with_config("khafp", &config);
    let tb = &rig.tb;
    let ctx = || rig.ctx();
    assert_default_hosts(tb, &["h1", "h2"], true);
    assert_ping(tb, "h1", H2_V4, &ctx);
    assert_udp(tb, "h1", "h2", "0.0.0.0", H2_V4, 7031, &ctx);
    let mut server = tb
        .command("h2", &["nc", "-4", "-l", "5431"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nc -l");
    tb.wait_listening("h2", 5431, Duration::from_secs(10)).unwrap();
    // 1 MiB is written far faster than the MTU allows: the kernel sends super-frames. The
    // transfer cannot finish; nc is ended after 20 s whatever happened.
    let sender = std::thread::spawn({
        let mut c: Command =
            tb.command("h1", &["sh", "-c", &format!("head -c 1048576 /dev/zero | nc -N {H2_V4} 5431")]);
        move || run_timeout(&mut c, Duration::from_secs(20))
    });
    let counted = poll_until(Duration::from_secs(20), Duration::from_millis(250), || {
        let n = rig.app.metric_sum("appliance_drops_total", &[("reason", "superframe")]);
        (n > 0.0).then_some(n)
    });
    let _ = sender.join();
    let _ = server.kill();
    let _ = server.wait();
    assert!(counted.is_some(), "no super-frame from a host with TSO on was counted{}", ctx());
    assert!(rig.app.metric_sum("appliance_checksums_completed_total", &[]) > 0.0, "UDP and TCP were completed");
}

/// The reference: the hosts' offloads turned off, as the testbeds did before. The same
/// traffic crosses and nothing needs completing.
#[test]
fn reference_with_offloads_off() {
    let tb = Testbed::up_offloads_off("khoff");
    let app = Appliance::start_demo(&tb);
    let ctx = || format!("\n{}", app.log_tail(40));
    for ns in ["h1", "h2"] {
        assert_eq!(offloads(&tb, ns, "eth0"), (false, false), "{ns}: offloads are off");
    }
    assert_ping(&tb, "h1", H2_V4, &ctx);
    assert_ping(&tb, "h1", H2_V6, &ctx);
    assert_udp(&tb, "h1", "h2", "0.0.0.0", H2_V4, 7041, &ctx);
    assert_udp(&tb, "h1", "h2", "::", H2_V6, 7042, &ctx);
    assert_tcp(&tb, "h1", "h2", H2_V4, 5441, &ctx);
    assert_tcp(&tb, "h1", "h2", H2_V6, 5442, &ctx);
    assert_eq!(app.metric_sum("appliance_checksums_completed_total", &[]), 0.0, "nothing was partial");
    assert_eq!(app.metric_sum("appliance_drops_total", &[("reason", "superframe")]), 0.0);
}
