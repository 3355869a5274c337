//! SRv6 storage steering (the `storage` SID behaviour, policy `sr-c`) across three appliance
//! processes, with a Linux kernel client (scripts/steering-testbed.sh):
//!
//! ```text
//!   [cl] 2001:db8:5::100 ── bridge ── [a1] 2001:db8:5::1, SID 2001:db8:5a::1
//!                                 ├── [a2] 2001:db8:5::2, SID 2001:db8:5a::2
//!                                 └── [a3] 2001:db8:5::3, SID 2001:db8:5a::3
//! ```
//!
//! The client sends a storage PROBE over UDP (port 7878) with an SRH listing the candidates
//! 1, 2, 3 (a plain socket with IPV6_RTHDR: the kernel sends to candidate 1 and checksums over
//! candidate 3, the final destination). Each candidate accepts while its queue depth (config)
//! is below the threshold 5, else passes the request on; the last one always accepts. The
//! reply comes from the accepting SID and names it. Run as root, serially:
//! `cargo test --release -p appliance-tests --test steering -- --test-threads=1`.

use appliance_tests::capture::{tshark_fields, Capture};
use appliance_tests::metric_sum;
use appliance_tests::steering::{candidate_config, sid, Probe, StorageFabric, CLIENT, STORAGE_PORT};
use appliance_tests::tools::poll_until;
use appliance_tests::Appliance;
use std::net::Ipv6Addr;
use std::time::Duration;

const THRESHOLD: u32 = 5;
const REPLY_TIMEOUT: Duration = Duration::from_secs(2);

/// The fabric with the three candidates running. Fields drop in order: the appliances stop
/// before the namespaces go.
struct Steering {
    apps: Vec<Appliance>,
    fab: StorageFabric,
    loads: [u32; 3],
}

impl Steering {
    /// Candidates with queue depths `loads`; with `static_neighbors`, each knows the others'
    /// MACs from its config (no neighbour discovery between candidates).
    fn start(tag: &str, loads: [u32; 3], static_neighbors: bool) -> Steering {
        let fab = StorageFabric::up(tag);
        let apps = (1..=3)
            .map(|k| {
                Appliance::start_in(
                    &fab.appliance_ns(k),
                    &candidate_config(k, THRESHOLD, loads[k - 1], static_neighbors),
                )
            })
            .collect();
        Steering { apps, fab, loads }
    }

    fn candidates() -> Vec<String> {
        (1..=3).map(sid).collect()
    }

    fn probe(&self, count: u32, first_id: u64) -> Vec<Probe> {
        self.fab.probe(&Self::candidates(), count, first_id, REPLY_TIMEOUT)
    }

    /// `appliance_srv6_storage_decisions_total{decision}` of candidate `k`.
    fn decisions(&self, k: usize, decision: &str) -> f64 {
        metric_sum(
            &self.apps[k - 1].metrics(),
            "appliance_srv6_storage_decisions_total",
            &[("sid", &sid(k)), ("decision", decision)],
        )
    }

    fn sid_packets(&self, k: usize) -> f64 {
        metric_sum(&self.apps[k - 1].metrics(), "appliance_srv6_sid_packets_total", &[("sid", &sid(k))])
    }

    /// What each candidate did, for failure messages: decisions, SID drops, drops and punts
    /// that are not zero, and the last lines of its log.
    fn ctx(&self) -> String {
        let mut s = format!("\nloads {:?}, threshold {THRESHOLD}", self.loads);
        for (i, app) in self.apps.iter().enumerate() {
            let m = app.try_metrics().unwrap_or_default();
            s += &format!("\n---- candidate {} ({}) ----\n", i + 1, sid(i + 1));
            for l in m.lines() {
                let interesting = l.starts_with("appliance_srv6_")
                    || l.starts_with("appliance_drops_total")
                    || l.starts_with("appliance_punts_total")
                    || l.starts_with("appliance_held_packets")
                    || l.starts_with("appliance_neighbors{");
                if interesting && !l.ends_with(" 0") {
                    s += l;
                    s.push('\n');
                }
            }
            s += &app.log_tail(8);
        }
        s
    }

    /// Waits until the candidates' counters show `want[k]` = (pass, accept) and every SID
    /// packet count is what those decisions imply; panics with the counters otherwise.
    fn assert_decisions(&self, want: [(f64, f64); 3]) {
        let got = || -> Vec<(f64, f64, f64)> {
            (1..=3).map(|k| (self.decisions(k, "pass"), self.decisions(k, "accept"), self.sid_packets(k))).collect()
        };
        let expected: Vec<(f64, f64, f64)> = want.iter().map(|&(p, a)| (p, a, p + a)).collect();
        let ok = poll_until(Duration::from_secs(3), Duration::from_millis(100), || (got() == expected).then_some(()));
        assert!(
            ok.is_some(),
            "(pass, accept, SID packets) per candidate: got {:?}, expected {expected:?}{}",
            got(),
            self.ctx()
        );
    }

    /// No candidate dropped a request as malformed or with a bad checksum.
    fn assert_no_bad_requests(&self) {
        for (i, app) in self.apps.iter().enumerate() {
            let m = app.metrics();
            for reason in ["storage_bad_request", "storage_bad_checksum"] {
                let n = metric_sum(&m, "appliance_drops_total", &[("reason", reason)]);
                assert_eq!(n, 0.0, "candidate {} dropped {n} requests as {reason}{}", i + 1, self.ctx());
            }
        }
    }
}

/// The reply to `p` came from candidate `k`'s SID, names it, and carries its queue depth.
fn assert_answered_by(st: &Steering, p: &Probe, k: usize) {
    let want: Ipv6Addr = sid(k).parse().unwrap();
    let Some(a) = &p.answer else {
        panic!(
            "request {} got no reply within {REPLY_TIMEOUT:?} (expected candidate {k}, {want}){}",
            p.request_id,
            st.ctx()
        );
    };
    let what = format!("reply to request {}: {a:?}", p.request_id);
    assert_eq!((a.from, a.from_port), (want, STORAGE_PORT), "{what}: should come from candidate {k}'s SID{}", st.ctx());
    assert_eq!((a.magic, a.version), (0x4153, 1), "{what}");
    assert_eq!(a.op, 0x90, "{what}: op should be PROBE | reply bit");
    assert_eq!(a.status, 0, "{what}: status OK");
    assert_eq!(a.request_id, p.request_id, "{what}: request id echoed");
    assert_eq!(a.length, 24, "{what}: ProbeReply body length");
    assert_eq!(a.accepted_by, Some(want), "{what}: accepted_by");
    assert_eq!(a.queue_depth, Some(st.loads[k - 1]), "{what}: queue depth of candidate {k}");
}

/// (a) The first candidate is busy (9 >= 5), the second is not (3 < 5): the first passes,
/// the second accepts, the third never sees the request.
#[test]
fn busy_first_candidate_passes_to_the_second() {
    let st = Steering::start("pass", [9, 3, 1], false);
    let mut cap = Capture::start(&st.fab.ns("cl"), "eth0", &format!("ip6 src host {CLIENT}"));
    let probes = st.probe(1, 0x5a01);
    assert_answered_by(&st, &probes[0], 2);
    st.assert_decisions([(1.0, 0.0), (0.0, 1.0), (0.0, 0.0)]);
    st.assert_no_bad_requests();

    // The request as the client's kernel sent it: to candidate 1, with an SRH holding the
    // candidates in reverse order (Segments Left 2), and a UDP checksum that tshark finds
    // right over the final destination (candidate 3).
    cap.stop();
    let rows = tshark_fields(
        cap.path(),
        &format!("udp.dstport == {STORAGE_PORT}"),
        &[
            "ipv6.dst",
            "ipv6.routing.type",
            "ipv6.routing.segleft",
            "ipv6.routing.srh.last_entry",
            "ipv6.routing.srh.addr",
            "udp.checksum.status",
        ],
    );
    let segments = format!("{},{},{}", sid(3), sid(2), sid(1));
    let want = vec![sid(1), "4".into(), "2".into(), "2".into(), segments, "1".into()];
    assert_eq!(
        rows,
        vec![want],
        "the request on the client's wire (dst, routing type, SL, last entry, segments, checksum status 1 = good)"
    );
}

/// (b) The first candidate is idle: it accepts, nobody else sees the request.
#[test]
fn idle_first_candidate_accepts() {
    let st = Steering::start("first", [1, 9, 9], false);
    let probes = st.probe(1, 0x5b01);
    assert_answered_by(&st, &probes[0], 1);
    st.assert_decisions([(0.0, 1.0), (0.0, 0.0), (0.0, 0.0)]);
    st.assert_no_bad_requests();
}

/// (c) Everyone is busy: the last candidate (Segments Left 0) accepts anyway.
#[test]
fn last_candidate_accepts_when_all_are_busy() {
    let st = Steering::start("last", [9, 9, 9], false);
    let probes = st.probe(1, 0x5c01);
    assert_answered_by(&st, &probes[0], 3);
    st.assert_decisions([(1.0, 0.0), (1.0, 0.0), (0.0, 1.0)]);
    st.assert_no_bad_requests();
}

/// (d) Ten requests in a row, each answered (by candidate 2), none lost, request ids echoed.
#[test]
fn ten_requests_in_a_row_are_all_answered() {
    let st = Steering::start("ten", [9, 3, 1], false);
    let probes = st.probe(10, 0x5d00);
    let lost: Vec<u64> = probes.iter().filter(|p| p.answer.is_none()).map(|p| p.request_id).collect();
    assert!(lost.is_empty(), "{} of 10 requests got no reply: {lost:x?}{}", lost.len(), st.ctx());
    for p in &probes {
        assert_answered_by(&st, p, 2);
    }
    st.assert_decisions([(10.0, 0.0), (0.0, 10.0), (0.0, 0.0)]);
    st.assert_no_bad_requests();
}

/// The decisions of (a) and (c) with the candidates' neighbours configured statically, so
/// that passing a request on never waits for neighbour discovery: the steering decision and
/// the reply path on their own.
#[test]
fn decisions_with_static_neighbors() {
    let st = Steering::start("static", [9, 3, 1], true);
    let probes = st.probe(3, 0x5e00);
    for p in &probes {
        assert_answered_by(&st, p, 2);
    }
    st.assert_decisions([(3.0, 0.0), (0.0, 3.0), (0.0, 0.0)]);
    st.assert_no_bad_requests();
    drop(st);

    let st = Steering::start("static", [9, 9, 9], true);
    let probes = st.probe(3, 0x5e10);
    for p in &probes {
        assert_answered_by(&st, p, 3);
    }
    st.assert_decisions([(3.0, 0.0), (3.0, 0.0), (0.0, 3.0)]);
    st.assert_no_bad_requests();
}
