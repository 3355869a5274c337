//! The NAT cluster's parsers on arbitrary bytes: a cluster datagram (a valid
//! header stamped on it, so the bodies are reached) handed to a host's
//! `ClusterNode`, and sync records applied to a replica table. Neither may
//! panic; a replica refuses what it cannot apply.
#![no_main]
use std::cell::RefCell;
use std::net::Ipv4Addr;
use std::sync::Arc;

use dataplane::nat::alloc::BlockEvent;
use dataplane::nat::cache::CacheKey;
use dataplane::nat::cluster::node::{AgentRequest, ClusterNode, NodeIo};
use dataplane::nat::cluster::record::{SyncRecord, RECORD_LEN};
use dataplane::nat::cluster::wire::{Header, Kind, HEADER_LEN};
use dataplane::nat::cluster::{ClusterPlan, ClusterTiming, ShardPlan};
use dataplane::nat::mapper::NatStats;
use dataplane::nat::{NatConfig, NatTable};
use libfuzzer_sys::fuzz_target;
use netwire::VecBuf;

struct Io;

impl NodeIo<VecBuf> for Io {
    fn answer(&mut self, _: usize, _: VecBuf) {}
    fn invalidate(&mut self, _: usize, _: &[CacheKey]) {}
    fn send(&mut self, _: u16, _: &[u8]) {}
    fn agent(&mut self, _: AgentRequest) {}
    fn log(&mut self, _: BlockEvent) {}
}

fn config() -> (ClusterPlan, NatConfig) {
    let pool: Vec<Ipv4Addr> = (1..=4).map(|i| Ipv4Addr::new(198, 51, 100, i)).collect();
    let nat = NatConfig {
        pool: pool.clone(),
        ports_per_block: 64,
        blocks_per_subscriber_max: 2,
        subscribers_max: 16,
        blocks_max: 64,
        port_quarantine_max: 64,
        mappings_max: 64,
        sessions_max: 128,
        ..NatConfig::default()
    };
    let plan = ClusterPlan {
        host_id: 1,
        hosts: vec![1, 2],
        shards: vec![
            ShardPlan { id: 0, pool: pool[..2].to_vec(), hosts: [1, 2] },
            ShardPlan { id: 1, pool: pool[2..].to_vec(), hosts: [2, 1] },
        ],
        subscriber_hash_seed: 1,
        timing: ClusterTiming { remote_requests_max: 16, sync_window_records: 1024, ..ClusterTiming::default() },
    };
    (plan, nat)
}

fuzz_target!(|data: &[u8]| {
    let (plan, nat) = config();
    let Some((&kind, body)) = data.split_first() else { return };
    // A datagram from host 2 with a valid header: the bodies are what is fuzzed.
    let mut node: ClusterNode<VecBuf> = ClusterNode::new(plan.clone(), &nat, 7, Arc::new(NatStats::default()));
    if let Some(kind) = Kind::from_u8(kind % 10) {
        let mut d = vec![0u8; HEADER_LEN];
        Header { kind, from: 2, fingerprint: plan.fingerprint(), incarnation: 9 }.encode(&mut d);
        d.extend_from_slice(body);
        node.datagram(&d, 1_000_000, &mut Io);
        node.tick(1_050_000, &mut Io);
    }
    // Records applied to a replica (one table, reset per input as a
    // resynchronisation does: building it costs more than the input).
    REPLICA.with(|t| {
        let mut t = t.borrow_mut();
        let table = t.get_or_insert_with(|| NatTable::new(&nat));
        table.reset();
        for (i, rec) in body.chunks_exact(RECORD_LEN).enumerate() {
            if let Some(r) = SyncRecord::decode(rec) {
                let _ = r.apply(table, 1000 + i as u64);
            }
        }
        table.expire(10_000_000, usize::MAX, &mut dataplane::nat::NullSink);
    });
});

thread_local! {
    static REPLICA: RefCell<Option<NatTable>> = const { RefCell::new(None) };
}
