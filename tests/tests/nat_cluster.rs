//! The distributed, highly available NAT (issue 10, docs/nat-ha.md) with real peers: three
//! appliance hosts behind kernel routers that spread flows by ECMP with an L4 hash (both
//! sides), kernel subscribers and a kernel server, a 3-member etcd cluster
//! (scripts/nat-cluster-testbed.sh). Every datagram names its inside endpoint, so the
//! server checks that no public endpoint ever stood for two inside endpoints and the
//! subscribers check that no reply reached the wrong one. Outage figures are printed, not
//! asserted; behaviour is asserted. Run as root, serially (`--test-threads=1`).

use appliance_tests::capture::Capture;
use appliance_tests::natcluster::{
    flow_reports, host_config_onlink, loss_profile, lost_after, outage_ms, outside_mac, server_report, subscribers,
    wall_now, FlowReport, NatCluster, Proc, SERVER, SERVER2,
};
use appliance_tests::output_text;
use appliance_tests::testbed::workspace_root;
use std::collections::{HashMap, HashSet};
use std::thread::sleep;
use std::time::Duration;

/// nat_probe.py's plain UDP echo (answers the sender's endpoint) on 9001, for EIM probes.
fn plain_echo(c: &NatCluster) -> Proc {
    let path = workspace_root().join("tests/helpers/nat_probe.py").display().to_string();
    let p = Proc::spawn(&c.ns("srv"), &["python3", &path, "udp-echo", "9001"]);
    assert_eq!(p.line(Duration::from_secs(10)).as_deref(), Some("ready"));
    p
}

/// The public endpoint `srv` saw for a probe from the subscriber's `sport` to `dst`:9001.
fn probe(c: &NatCluster, sport: u16, dst: &str) -> String {
    let path = workspace_root().join("tests/helpers/nat_probe.py").display().to_string();
    let out = c.exec("sub", &["python3", &path, "udp-probe", &sport.to_string(), dst, "9001"]);
    let text = output_text(&out);
    text.lines()
        .find_map(|l| l.strip_prefix("reply "))
        .map(str::to_string)
        .unwrap_or_else(|| panic!("no reply from {dst} for sport {sport}: {text}"))
}

/// Flows kept / changed / silent after `t`, lost datagrams, foreign replies.
struct Figures {
    flows: usize,
    kept: usize,
    changed: usize,
    silent_after: usize,
    sent: u64,
    received: u64,
    foreign: u64,
}

fn figures(reports: &[FlowReport], t: f64) -> Figures {
    let answered_after = |f: &FlowReport| f.last_rx.is_some_and(|r| r > t);
    Figures {
        flows: reports.len(),
        kept: reports.iter().filter(|f| f.distinct() == 1 && answered_after(f)).count(),
        changed: reports.iter().filter(|f| f.distinct() > 1).count(),
        silent_after: reports.iter().filter(|f| !answered_after(f)).count(),
        sent: reports.iter().map(|f| f.sent).sum(),
        received: reports.iter().map(|f| f.received).sum(),
        foreign: reports.iter().map(|f| f.foreign).sum(),
    }
}

fn print_figures(what: &str, f: &Figures, outage: f64) {
    println!(
        "{what}: flows {} kept their endpoint {} ({:.2} %), changed {}, silent after {}, datagrams sent {} \
         answered {} lost {} ({:.3} %), foreign replies {}, outage {:.0} ms",
        f.flows,
        f.kept,
        100.0 * f.kept as f64 / f.flows.max(1) as f64,
        f.changed,
        f.silent_after,
        f.sent,
        f.received,
        f.sent - f.received,
        100.0 * (f.sent - f.received) as f64 / f.sent.max(1) as f64,
        f.foreign,
        outage
    );
}

/// The server saw no public endpoint stand for two inside endpoints.
fn no_conflicts(server: Proc, c: &NatCluster) -> u64 {
    server.terminate(Duration::from_secs(10));
    let (datagrams, endpoints, conflicts) = server_report(&c.dir.path().join("server.json"));
    assert!(conflicts.is_empty(), "public endpoints used for two inside endpoints: {conflicts:?}");
    println!("server: {datagrams} datagrams, {endpoints} public endpoints, no public endpoint reused");
    datagrams
}

/// The host whose inside port received the most bytes over `window`.
fn busiest(c: &NatCluster, window: Duration) -> u16 {
    let rx = |k: u16| c.metric(k, "appliance_port_rx_bytes_total", &[("port", "inside")]);
    let before: Vec<f64> = (1..=3).map(rx).collect();
    sleep(window);
    (1..=3u16)
        .max_by(|a, b| {
            let da = rx(*a) - before[usize::from(*a) - 1];
            let db = rx(*b) - before[usize::from(*b) - 1];
            da.total_cmp(&db)
        })
        .expect("three hosts")
}

#[test]
fn flows_spread_over_every_host_and_translate_consistently() {
    let c = NatCluster::up_default("spread");
    c.warm_up();
    let server = c.udp_server();
    let echo = plain_echo(&c);
    let subs = subscribers(20);
    let (flows, out) = c.udp_flows("spread", &subs, 400, 100, 4.0, 0, 10);
    let summary = flows.finish(Duration::from_secs(60));
    println!("{}", summary.join("\n"));
    let reports = flow_reports(&out);
    assert!(reports.iter().all(|f| f.received > 0), "every flow answered: {summary:?}");
    assert!(reports.iter().all(|f| f.distinct() == 1), "one public endpoint per flow");
    assert_eq!(reports.iter().map(|f| f.foreign).sum::<u64>(), 0, "no reply reached another subscriber");
    // Paired pooling across hosts: all flows of a subscriber on one public address.
    let mut addr_of: HashMap<String, HashSet<String>> = HashMap::new();
    for f in &reports {
        let sub = f.inside.split(':').next().unwrap().to_string();
        let public = f.endpoints[0].1.split(':').next().unwrap().to_string();
        addr_of.entry(sub).or_default().insert(public);
    }
    for (sub, addrs) in &addr_of {
        assert_eq!(addrs.len(), 1, "subscriber {sub} on {addrs:?}");
    }
    // Every host carried traffic and its mapping server worked for others.
    for k in 1..=3 {
        let hits = c.metric(k, "appliance_nat_cache_hits_total", &[]);
        let misses = c.metric(k, "appliance_nat_cache_misses_total", &[]);
        let served = c.metric(k, "appliance_nat_cluster_served_requests_total", &[]);
        let remote = c.metric(k, "appliance_nat_cluster_remote_requests_total", &[]);
        println!("host {k}: cache hits {hits} misses {misses}, remote requests {remote}, served for others {served}");
        assert!(hits > 0.0 && misses > 0.0, "host {k} carried no NAT traffic");
        assert!(served > 0.0, "host {k}'s mapping server answered nobody else");
    }
    // Endpoint-independent mapping across hosts: one inside endpoint to two servers (the
    // router hashes the two flows independently) gets one public endpoint.
    for sport in 41000..41010 {
        assert_eq!(probe(&c, sport, SERVER), probe(&c, sport, SERVER2), "EIM for source port {sport}");
    }
    drop(echo);
    no_conflicts(server, &c);
    // The listing agrees everywhere.
    for k in 1..=3 {
        let v = c.view(k);
        assert!(v.contains("active") && v.contains("standby"), "{v}");
    }
}

#[test]
fn kill_one_host_during_a_transfer_and_1000_udp_flows() {
    let mut c = NatCluster::up_default("kill");
    c.warm_up();
    let server = c.udp_server();
    let _tcp = c.tcp_server();
    let subs = subscribers(20);
    let (flows, out) = c.udp_flows("kill", &subs, 1000, 500, 14.0, 20, 10);
    let transfer = c.tcp_send("100.64.1.10", 24_000_000, 2_000_000);
    let peer = transfer.line(Duration::from_secs(10)).expect("transfer connected");
    sleep(Duration::from_secs(3));
    // Kill the host the transfer crosses (most inside bytes), sessions long synced.
    let victim = busiest(&c, Duration::from_secs(1));
    let shards_before: Vec<u16> = (0..3).map(|s| c.owner(victim % 3 + 1, s)).collect();
    let t_kill = wall_now();
    c.kill(victim);
    println!("killed host {victim} (owner of shards {:?}) at {t_kill:.3}", {
        shards_before.iter().enumerate().filter(|(_, o)| **o == victim).map(|(s, _)| s).collect::<Vec<_>>()
    });
    c.wait("the killed host's shards taken over", Duration::from_secs(15), || c.ready());
    let t_ready = wall_now();
    let lines = transfer.finish(Duration::from_secs(90));
    let summary = flows.finish(Duration::from_secs(60));
    let reports = flow_reports(&out);
    let f = figures(&reports, t_kill + 3.0);
    print_figures("kill -9", &f, outage_ms(&reports, t_kill));
    println!("unanswered datagrams by send time, relative to the kill: {}", loss_profile(&reports, t_kill));
    println!("{}; takeover complete {:.0} ms after the kill", summary.join(" "), (t_ready - t_kill) * 1000.0);
    let sent = lines.iter().find_map(|l| l.strip_prefix("sent ")).unwrap_or_else(|| panic!("{lines:?}"));
    let got = lines.iter().find_map(|l| l.strip_prefix("sha256 ")).unwrap_or_else(|| panic!("{lines:?}"));
    assert_eq!(sent, got, "the transfer arrived intact through the other hosts ({peer})");
    let activated: f64 = (1..=3)
        .filter(|k| *k != victim)
        .map(|k| c.metric(k, "appliance_nat_cluster_sessions_activated_total", &[]))
        .sum();
    let takeovers: f64 =
        (1..=3).filter(|k| *k != victim).map(|k| c.metric(k, "appliance_nat_cluster_takeovers_total", &[])).sum();
    println!("takeovers {takeovers}, sessions activated {activated}");
    assert!(takeovers >= 1.0);
    // Behaviour: every flow was synced long before the kill; each one that is answered
    // after it kept its public endpoint, and none was answered for another subscriber.
    assert_eq!(f.changed, 0, "synced flows keep their endpoints");
    assert_eq!(f.silent_after, 0, "every flow is answered again after the takeover");
    assert_eq!(f.foreign, 0);
    no_conflicts(server, &c);
}

#[test]
fn graceful_handover_keeps_every_session_and_loses_no_packet() {
    let c = NatCluster::up_default("handover");
    c.warm_up();
    let server = c.udp_server();
    let subs = subscribers(20);
    let (flows, out) = c.udp_flows("handover", &subs, 300, 100, 8.0, 20, 10);
    sleep(Duration::from_secs(3));
    let owner = c.owner(1, 0);
    let t = wall_now();
    let answer = c.handover(owner, 0);
    assert!(answer.contains("handover started"), "{answer}");
    c.wait("shard 0 handed over", Duration::from_secs(10), || {
        let o = c.owner(1, 0);
        o != owner && o != 0 && c.ready()
    });
    println!("shard 0 moved from host {owner} to host {} in {:.0} ms", c.owner(1, 0), (wall_now() - t) * 1000.0);
    // New flows right after: served at once (no hold-down after a handover).
    let summary = flows.finish(Duration::from_secs(60));
    let reports = flow_reports(&out);
    let f = figures(&reports, t);
    print_figures("graceful handover", &f, outage_ms(&reports, t));
    println!("unanswered datagrams by send time, relative to the handover: {}", loss_profile(&reports, t));
    println!("{}", summary.join(" "));
    assert_eq!(f.changed, 0, "every session kept its endpoint");
    // The flows' first datagrams may wait for neighbour resolution; from a second
    // before the handover to the end, nothing may be lost.
    assert_eq!(lost_after(&reports, t - 1.0), 0, "no packet lost across the handover");
    let handovers: f64 = (1..=3).map(|k| c.metric(k, "appliance_nat_cluster_handovers_total", &[])).sum();
    assert_eq!(handovers, 1.0);
    let adopted: f64 = (1..=3).map(|k| c.metric(k, "appliance_nat_cluster_sessions_adopted_total", &[])).sum();
    assert_eq!(adopted, 0.0, "everything was synced before the handover");
    no_conflicts(server, &c);
}

#[test]
fn a_failed_host_comes_back_and_resyncs_as_standby() {
    let mut c = NatCluster::up_default("rejoin");
    c.warm_up();
    let server = c.udp_server();
    let subs = subscribers(20);
    let (flows, out) = c.udp_flows("rejoin", &subs, 300, 100, 16.0, 20, 10);
    sleep(Duration::from_secs(2));
    c.kill(2);
    c.wait("host 2's shard taken over", Duration::from_secs(15), || c.ready());
    // Let the takeover settle, then bring host 2 back while traffic runs.
    sleep(Duration::from_secs(4));
    let t_back = wall_now();
    c.start(2);
    c.wait("host 2 synced as a standby", Duration::from_secs(20), || c.ready());
    println!("host 2 back and synced in {:.0} ms", (wall_now() - t_back) * 1000.0);
    let rows = c.rows(2);
    assert!(rows.iter().all(|r| r.role != "active"), "host 2 came back as a standby: {rows:?}");
    assert!(rows.iter().any(|r| r.role == "standby" && r.synced && r.sessions > 0), "{rows:?}");
    let summary = flows.finish(Duration::from_secs(60));
    println!("{}", summary.join(" "));
    let reports = flow_reports(&out);
    // Traffic is undisturbed by the return: nothing sent from the restart on is lost, no
    // endpoint changes (delays on these shared CPUs are printed, not asserted).
    let f = figures(&reports, t_back);
    print_figures("host returns", &f, outage_ms(&reports, t_back));
    println!("unanswered datagrams by send time, relative to the restart: {}", loss_profile(&reports, t_back));
    assert_eq!(lost_after(&reports, t_back), 0, "datagrams lost while host 2 rejoined");
    assert_eq!(f.changed, 0);
    no_conflicts(server, &c);
}

#[test]
fn a_partition_between_owner_and_standby_never_reuses_a_public_endpoint() {
    let c = NatCluster::up_default("split");
    c.warm_up();
    let server = c.udp_server();
    let owner = c.owner(1, 0);
    let standby = if owner == 3 { 1 } else { owner + 1 };
    c.net(&["cut", &owner.to_string(), &standby.to_string()]);
    // New mappings keep being made through every host while the two cannot talk.
    let subs = subscribers(20);
    let (flows, out) = c.udp_flows("split", &subs, 600, 100, 6.0, 0, 10);
    let summary = flows.finish(Duration::from_secs(60));
    println!("{}", summary.join(" "));
    assert_eq!(c.owner(1, 0), owner, "the owner still beats in etcd: no takeover");
    let takeovers: f64 = (1..=3).map(|k| c.metric(k, "appliance_nat_cluster_takeovers_total", &[])).sum();
    assert_eq!(takeovers, 0.0);
    c.net(&["heal"]);
    c.wait("the standby resynchronised", Duration::from_secs(20), || c.ready());
    let reports = flow_reports(&out);
    assert_eq!(reports.iter().map(|f| f.foreign).sum::<u64>(), 0);
    no_conflicts(server, &c);
}

#[test]
fn sync_loss_then_failover_counts_broken_flows_and_misdelivers_nothing() {
    let mut c = NatCluster::up_default("loss");
    c.warm_up();
    let server = c.udp_server();
    c.net(&["loss", "5"]);
    let subs = subscribers(20);
    let (flows, out) = c.udp_flows("loss", &subs, 600, 200, 12.0, 20, 10);
    sleep(Duration::from_secs(4));
    let t_kill = wall_now();
    c.kill(1);
    c.wait("host 1's shard taken over", Duration::from_secs(20), || (0..3).all(|s| matches!(c.owner(2, s), 2 | 3)));
    let summary = flows.finish(Duration::from_secs(60));
    println!("{}", summary.join(" "));
    let reports = flow_reports(&out);
    let f = figures(&reports, t_kill + 3.0);
    print_figures("5 % sync loss, kill -9", &f, outage_ms(&reports, t_kill));
    println!("unanswered datagrams by send time, relative to the kill: {}", loss_profile(&reports, t_kill));
    let retrans: f64 =
        (2..=3).map(|k| c.metric(k, "appliance_nat_cluster_sync_records_retransmitted_total", &[])).sum();
    let adopted: f64 = (2..=3).map(|k| c.metric(k, "appliance_nat_cluster_sessions_adopted_total", &[])).sum();
    let invalidated: f64 = (2..=3).map(|k| c.metric(k, "appliance_nat_cluster_invalidations_total", &[])).sum();
    println!(
        "broken flows (endpoint changed or silent after the takeover): {}; records retransmitted {retrans}, \
         sessions adopted {adopted}, entries invalidated {invalidated}",
        f.changed + f.silent_after
    );
    assert_eq!(f.foreign, 0, "no reply reached another subscriber");
    no_conflicts(server, &c);
}

/// The pool addresses of `shard` (configs/nat-cluster.yaml: a /30 each from 198.51.100.64).
fn shard_pool(shard: u16) -> Vec<String> {
    (0..4).map(|i| format!("198.51.100.{}", 64 + 4 * shard + i)).collect()
}

#[test]
fn an_on_link_pool_is_answered_by_its_owner_alone_and_announced_on_takeover() {
    // r2 reaches the pool by ARP on one bridge with the three hosts, default neighbour
    // timers: without the new owner's announcements it would keep sending the dead
    // host's shard to the dead host's MAC until its entry expired (15 s or more).
    let mut c = NatCluster::up_with("onlink", &[("ONLINK", "1")], (1..=3).map(host_config_onlink).collect());
    let mut cap = Capture::start(&c.ns("r2"), "bout", "arp");
    c.warm_up();
    let server = c.udp_server();
    let subs = subscribers(20);
    let (flows, out) = c.udp_flows("onlink", &subs, 300, 100, 12.0, 20, 10);
    sleep(Duration::from_secs(3));
    let owners: Vec<u16> = (0..3).map(|s| c.owner(1, s)).collect();
    let victim = owners[0];
    let announced_by = |c: &NatCluster, k: u16| c.metric(k, "appliance_arp_announcements_sent_total", &[]);
    let before: Vec<f64> = (1..=3).map(|k| if k == victim { 0.0 } else { announced_by(&c, k) }).collect();
    let t_kill = wall_now();
    c.kill(victim);
    c.wait("shard 0 taken over", Duration::from_secs(15), || c.ready());
    let t_ready = wall_now();
    let survivor = (1..=3).find(|k| *k != victim).expect("two survivors");
    let new_owner = c.owner(survivor, 0);
    assert_ne!(new_owner, victim);
    // ANNOUNCE_NUM (3) announcements, 1 s apart.
    sleep(Duration::from_secs(3));
    let summary = flows.finish(Duration::from_secs(60));
    println!("{}", summary.join(" "));
    let announced = announced_by(&c, new_owner) - before[usize::from(new_owner) - 1];
    println!("host {new_owner} took shard 0 over from host {victim} {:.0} ms after the kill and sent {announced} ARP announcements", (t_ready - t_kill) * 1000.0);
    assert!(announced >= 12.0, "3 announcements of each of shard 0's 4 addresses, got {announced}");

    let arps = cap.fields(
        "arp",
        &["frame.time_epoch", "arp.opcode", "arp.src.hw_mac", "arp.src.proto_ipv4", "arp.dst.proto_ipv4"],
    );
    let shard_of = |a: &str| (0..3u16).find(|s| shard_pool(*s).iter().any(|p| p == a));
    let mut replies = 0;
    for row in &arps {
        let (t, op, mac, spa, tpa) = (row[0].parse::<f64>().unwrap_or(0.0), &row[1], &row[2], &row[3], &row[4]);
        let Some(shard) = shard_of(spa) else { continue };
        // Before the kill each pool address is answered by its shard's owner alone; after
        // it, shard 0's by the new owner.
        let owner = if shard == 0 && t > t_kill { new_owner } else { owners[usize::from(shard)] };
        if op == "2" {
            replies += 1;
            assert_eq!(*mac, outside_mac(owner), "ARP reply for {spa} at {t:.3} (kill at {t_kill:.3}): {arps:?}");
        } else if op == "1" && spa == tpa {
            assert_eq!(*mac, outside_mac(owner), "announcement of {spa} at {t:.3} (kill at {t_kill:.3}): {arps:?}");
        }
    }
    assert!(replies > 0, "r2 resolved pool addresses by ARP: {arps:?}");
    for a in shard_pool(0) {
        let n = arps
            .iter()
            .filter(|r| r[1] == "1" && r[3] == a && r[4] == a && r[2] == outside_mac(new_owner))
            .filter(|r| r[0].parse::<f64>().unwrap_or(0.0) > t_kill)
            .count();
        assert!(n >= 3, "{a} announced {n} times by host {new_owner} after the kill: {arps:?}");
    }
    // r2 took the new owner's MAC for every shard-0 address it knows.
    let neigh = output_text(&c.exec("r2", &["ip", "neigh", "show", "dev", "bout"]));
    println!("r2's neighbours on the pool's segment:\n{neigh}");
    for line in neigh.lines().filter(|l| shard_pool(0).iter().any(|a| l.starts_with(&format!("{a} ")))) {
        if line.contains("lladdr") {
            assert!(line.contains(&outside_mac(new_owner)), "r2 still sends shard 0 elsewhere: {line}");
        }
    }
    // And the flows: every one answered again after the takeover, none changed endpoint.
    let reports = flow_reports(&out);
    let f = figures(&reports, t_kill + 3.0);
    print_figures("on-link pool, kill -9", &f, outage_ms(&reports, t_kill));
    assert_eq!(f.changed, 0, "synced flows keep their endpoints");
    assert_eq!(f.silent_after, 0, "every flow is answered again after the takeover");
    assert_eq!(f.foreign, 0);
    no_conflicts(server, &c);
}
