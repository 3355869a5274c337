//! The whole worker pipeline (L3, SRv6 behaviours, storage steering) and
//! the control core's handling of what it punts, on arbitrary frames. The
//! first byte picks the receiving port. Invariants: no panic; forwarded
//! frames go to an existing port; a neighbour-miss punt re-runs to a miss.
#![no_main]
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, OnceLock};

use appliance::l3::{PortInfo, RouteSpec, Verdict, WorkerState, L3};
use appliance::neigh::{NeighborState, NeighborTable};
use appliance::packet::{VecBuf, VecPool};
use appliance::slowpath::{SlowPath, SlowPathConfig};
use appliance::srv6::{Behavior, PolicySpec, SidSpec, Srv6Config, StoragePolicy};
use appliance::stats::{ControlCounters, PuntReason};
use libfuzzer_sys::fuzz_target;

fn v6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

fn l3() -> &'static Arc<L3> {
    static L3S: OnceLock<Arc<L3>> = OnceLock::new();
    L3S.get_or_init(|| {
        let ports = vec![
            PortInfo {
                name: "inside".into(),
                mac: [2, 0, 0, 0, 1, 1],
                mtu: 1500,
                ipv4: vec![(Ipv4Addr::new(192, 0, 2, 1), 24)],
                ipv6: vec![(v6("2001:db8:1::1"), 64), (appliance::l3::link_local_from_mac([2, 0, 0, 0, 1, 1]), 64)],
            },
            PortInfo {
                name: "outside".into(),
                mac: [2, 0, 0, 0, 2, 1],
                mtu: 1400,
                ipv4: vec![(Ipv4Addr::new(198, 51, 100, 1), 24)],
                ipv6: vec![(v6("2001:db8:2::1"), 64)],
            },
        ];
        let routes = [RouteSpec { prefix: IpAddr::V6(v6("2001:db8:b::")), len: 48, port: 1, via: Some(IpAddr::V6(v6("2001:db8:2::2"))) }];
        let sid = |s: &str, behavior, psp, usd, adjacency, policy| SidSpec { sid: v6(s), behavior, psp, usd, adjacency, policy };
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
                PolicySpec { prefix: IpAddr::V6(v6("2001:db8:99::")), len: 64, reduced: false, segments: vec![v6("2001:db8:b::1"), v6("2001:db8:b::2")], source: None },
                PolicySpec { prefix: IpAddr::V4(Ipv4Addr::new(203, 0, 113, 0)), len: 24, reduced: true, segments: vec![v6("2001:db8:b::1")], source: None },
            ],
            trusted_ports: None,
            encap_source: None,
        };
        let (table, mut w) = NeighborTable::new(64);
        w.set(1, IpAddr::V6(v6("2001:db8:2::2")), [2, 0, 0, 0, 2, 2], NeighborState::Reachable, 0).unwrap();
        w.set(0, IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2)), [2, 0, 0, 0, 1, 2], NeighborState::Reachable, 0).unwrap();
        Arc::new(L3::with_srv6(ports, &routes, &srv6, table).unwrap())
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, frame)) = data.split_first() else { return };
    let l3 = l3();
    let port = u16::from(sel % 3);
    let mut ws = WorkerState::scratch(l3);
    let mut buf = frame.to_vec();
    let v = l3.process_frame(&mut buf, port, &mut ws);
    match v {
        Verdict::Forward(p) => assert!(p < 2),
        Verdict::Punt(reason) => {
            if reason == PuntReason::NeighborMiss {
                let mut again = VecBuf::from_frame(&buf, port);
                let arg = ws.punt_arg;
                assert_eq!(l3.rerun(&mut again, port, arg, &mut WorkerState::scratch(l3)), Verdict::Punt(PuntReason::NeighborMiss));
            }
            // The control core handles whatever was punted.
            let (_t, writer) = NeighborTable::new(16);
            let mut sp = SlowPath::<VecBuf>::new(l3.clone(), writer, SlowPathConfig::default(), Arc::new(ControlCounters::default()));
            let mut pool = VecPool { remaining: 8 };
            let mut sent = 0;
            sp.handle(VecBuf::from_frame(&buf, port), reason, ws.punt_arg, 0, &mut pool, &mut |_| sent += 1);
            sp.tick(5000, &mut pool, &mut |_| sent += 1);
            assert!(sent <= 8);
        }
        Verdict::Drop(_) => {}
    }
});
