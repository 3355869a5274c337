//! The whole worker pipeline (L3, SRv6 behaviours, storage steering, NAT44
//! with its mapping server) and the control core's handling of what it
//! punts, on arbitrary frames. The first byte picks the receiving port (and,
//! with bit 7 set, the NAT set-up). Invariants: no panic; forwarded frames go
//! to an existing port; a neighbour-miss punt re-runs to a miss; a NAT miss
//! answered by the mapping server is routed without asking again.
#![no_main]
use std::cell::RefCell;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex, OnceLock};

use dataplane::nat::cache::FlowCache;
use dataplane::nat::fast::{NatPlan, NatWorker, Role};
use dataplane::nat::frag::FragConfig;
use dataplane::nat::mapper::{Mapper, NatStats};
use dataplane::nat::msg::{Answer, ANSWER_LEN};
use dataplane::nat::{NatConfig, NullSink};
use netwire::PacketBuf;

use dataplane::fib::neigh::{NeighborState, NeighborTable};
use dataplane::fib::{link_local_from_mac, PortInfo, RouteSpec};
use dataplane::pipeline::{HandOff, PacketFlags, Pipeline, Verdict, WorkerCtx};
use dataplane::slowpath::{SlowPath, SlowPathConfig};
use dataplane::srv6::{Behavior, PolicySpec, SidSpec, Srv6Config, StoragePolicy};
use dataplane::stats::{ControlCounters, PuntReason};
use libfuzzer_sys::fuzz_target;
use netwire::{VecBuf, VecPool};

fn v6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

fn l3() -> &'static Arc<Pipeline> {
    static L3S: OnceLock<Arc<Pipeline>> = OnceLock::new();
    L3S.get_or_init(|| build(None))
}

const POOL: Ipv4Addr = Ipv4Addr::new(100, 64, 100, 1);

fn nat_config() -> NatConfig {
    NatConfig {
        pool: vec![POOL, Ipv4Addr::new(100, 64, 100, 2)],
        ports_per_block: 64,
        blocks_per_subscriber_max: 2,
        subscribers_max: 64,
        blocks_max: 128,
        port_quarantine_max: 256,
        mappings_max: 256,
        sessions_max: 512,
        ..NatConfig::default()
    }
}

/// The same tables with NAT (port 0 inside, port 1 outside), and the mapping
/// server every input shares (state accumulates across inputs, as it would).
fn nat() -> &'static (Arc<Pipeline>, Mutex<Mapper<NullSink>>) {
    static NAT: OnceLock<(Arc<Pipeline>, Mutex<Mapper<NullSink>>)> = OnceLock::new();
    NAT.get_or_init(|| {
        let plan = NatPlan { roles: vec![Role::Inside, Role::Outside], pool: nat_config().pool };
        let mapper = Mapper::new(&nat_config(), NullSink, Arc::new(NatStats::default()));
        (build(Some(plan)), Mutex::new(mapper))
    })
}

fn build(nat: Option<NatPlan>) -> Arc<Pipeline> {
    {
        let ports = vec![
            PortInfo {
                name: "inside".into(),
                mac: [2, 0, 0, 0, 1, 1],
                mtu: 1500,
                ipv4: vec![(Ipv4Addr::new(192, 0, 2, 1), 24)],
                ipv6: vec![(v6("2001:db8:1::1"), 64), (link_local_from_mac([2, 0, 0, 0, 1, 1]), 64)],
                partial_checksums: true,
            },
            PortInfo {
                name: "outside".into(),
                mac: [2, 0, 0, 0, 2, 1],
                mtu: 1400,
                ipv4: vec![(Ipv4Addr::new(198, 51, 100, 1), 24)],
                ipv6: vec![(v6("2001:db8:2::1"), 64)],
                partial_checksums: false,
            },
        ];
        let routes = [RouteSpec {
            prefix: IpAddr::V6(v6("2001:db8:b::")),
            len: 48,
            port: 1,
            via: Some(IpAddr::V6(v6("2001:db8:2::2"))),
        }];
        let sid = |s: &str, behavior, psp, usd, adjacency, policy| SidSpec {
            sid: v6(s),
            behavior,
            psp,
            usd,
            adjacency,
            policy,
        };
        let srv6 = Srv6Config {
            sids: vec![
                sid("2001:db8:a::1", Behavior::End, false, false, None, None),
                sid("2001:db8:a::2", Behavior::End, true, true, None, None),
                sid("2001:db8:a::3", Behavior::EndX, false, false, Some((1, v6("2001:db8:2::2"))), None),
                sid("2001:db8:a::4", Behavior::EndDt6, false, false, None, None),
                sid("2001:db8:a::5", Behavior::EndDx6, false, false, Some((1, v6("2001:db8:2::2"))), None),
                sid("2001:db8:a::7", Behavior::Storage, false, false, None, Some(StoragePolicy::SrC { threshold: 3 })),
                sid("2001:db8:a::9", Behavior::Storage, false, false, None, Some(StoragePolicy::HoldsObject)),
            ],
            policies: vec![
                PolicySpec {
                    prefix: IpAddr::V6(v6("2001:db8:99::")),
                    len: 64,
                    reduced: false,
                    segments: vec![v6("2001:db8:b::1"), v6("2001:db8:b::2")],
                    source: None,
                },
                PolicySpec {
                    prefix: IpAddr::V4(Ipv4Addr::new(203, 0, 113, 0)),
                    len: 24,
                    reduced: true,
                    segments: vec![v6("2001:db8:b::1")],
                    source: None,
                },
            ],
            trusted_ports: None,
            encap_source: None,
            counter_slots: Vec::new(),
        };
        let (table, mut w) = NeighborTable::new(64);
        w.set(1, IpAddr::V6(v6("2001:db8:2::2")), [2, 0, 0, 0, 2, 2], NeighborState::Reachable, 0).unwrap();
        w.set(0, IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2)), [2, 0, 0, 0, 1, 2], NeighborState::Reachable, 0).unwrap();
        w.set(1, IpAddr::V4(Ipv4Addr::new(198, 51, 100, 2)), [2, 0, 0, 0, 2, 2], NeighborState::Reachable, 0).unwrap();
        Arc::new(Pipeline::with_nat(ports, &routes, &srv6, nat, table).unwrap())
    }
}

/// A NAT worker: a miss goes to the mapping server; its answer is installed
/// and the packet routed without NAT (as the worker loop does).
fn run_nat(port: u16, frame: &[u8]) {
    let (l3, mapper) = nat();
    // A fresh cache and fragment table per input (small: a full fragment
    // table is a path too); the worker's counters are reused.
    let mut ws = take_ctx(l3);
    let frags = FragConfig { datagrams_max: 8, held_max: 16, timeout_ms: 2000 };
    ws.nat = Some(Box::new(NatWorker::with_fragment_table(FlowCache::new(64, 1000, 250, 7), frags)));
    let mut buf = VecBuf::from_frame(frame, port);
    let v = l3.process(&mut buf, port, &mut ws);
    if let Verdict::Forward(p) = v {
        assert!(p < 2);
    }
    let Verdict::HandOff(HandOff::NatMapper(kind)) = v else {
        return;
    };
    if mapper.lock().unwrap().request(&mut buf, kind.tag(), 1).is_err() {
        return;
    }
    let answer = Answer::decode(buf.data()).expect("the mapping server's answer has a valid header");
    assert!(buf.adj(ANSWER_LEN));
    ws.nat.as_mut().unwrap().install(&answer);
    let v = l3.resume(&mut buf, port, PacketFlags::NAT_DONE, &mut ws);
    assert!(!matches!(v, Verdict::HandOff(HandOff::NatMapper(_))), "an answered packet asks again");
    if let Verdict::Forward(p) = v {
        assert!(p < 2);
    }
    ws.nat = None;
    give_ctx(ws);
}

thread_local! {
    /// A worker context kept between inputs: building one zeroes every SID
    /// counter slot, which cost more than running the packet.
    static CTX: RefCell<Vec<WorkerCtx>> = const { RefCell::new(Vec::new()) };
}

fn take_ctx(p: &Pipeline) -> WorkerCtx {
    CTX.with(|c| c.borrow_mut().pop()).unwrap_or_else(|| WorkerCtx::scratch(p))
}

fn give_ctx(ws: WorkerCtx) {
    CTX.with(|c| c.borrow_mut().push(ws));
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, frame)) = data.split_first() else { return };
    let port = u16::from(sel % 3);
    if sel & 0x80 != 0 {
        run_nat(port, frame);
        return;
    }
    let l3 = l3();
    let mut ws = take_ctx(l3);
    let mut buf = frame.to_vec();
    let v = l3.process_frame(&mut buf, port, &mut ws);
    match v {
        Verdict::Forward(p) => assert!(p < 2),
        Verdict::Punt(reason) => {
            let arg = ws.meta.punt_arg;
            if reason == PuntReason::NeighborMiss {
                let mut again = VecBuf::from_frame(&buf, port);
                assert_eq!(l3.rerun(&mut again, port, arg, &mut ws), Verdict::Punt(PuntReason::NeighborMiss));
            }
            // The control core handles whatever was punted.
            let (_t, writer) = NeighborTable::new(16);
            let mut sp = SlowPath::<VecBuf>::with_state(
                l3.clone(),
                writer,
                SlowPathConfig::default(),
                Arc::new(ControlCounters::default()),
                take_ctx(l3),
            );
            let mut pool = VecPool { remaining: 8 };
            let mut sent = 0;
            sp.handle(VecBuf::from_frame(&buf, port), reason, arg, 0, &mut pool, &mut |_| sent += 1);
            sp.tick(5000, &mut pool, &mut |_| sent += 1);
            assert!(sent <= 8);
            give_ctx(sp.into_state());
        }
        Verdict::HandOff(_) | Verdict::Drop(_) => {}
    }
    give_ctx(ws);
});
