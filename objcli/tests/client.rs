//! The library against fake storage nodes and the real metadata service on loopback.

mod common;

use std::sync::atomic::Ordering;
use std::sync::Mutex;

use common::{config, content, FakeNode, Meta};
use objcli::{Endpoint, Error, StorageClient};
use objmeta::model::{ObjectRef, ObjectState};

/// Counts progress callbacks.
#[derive(Default)]
struct Count {
    total: Mutex<u64>,
    done: Mutex<u64>,
}

impl objcli::Progress for Count {
    fn start(&self, total: u64) {
        *self.total.lock().unwrap() = total;
    }
    fn advance(&self, bytes: u64) {
        *self.done.lock().unwrap() += bytes;
    }
}

fn three() -> (FakeNode, FakeNode, FakeNode) {
    (FakeNode::start(), FakeNode::start(), FakeNode::start())
}

#[test]
fn round_trips_with_three_replicas_and_loss() {
    let (a, b, c) = three();
    let nodes = [&a, &b, &c];
    for n in nodes {
        n.faults.drop_per_mille.store(50, Ordering::SeqCst); // 5 % each way
    }
    let meta = Meta::start(&nodes);
    let mut cl = StorageClient::new(config(&nodes)).unwrap();
    for (i, len) in [0usize, 1, 4096, 1 << 20].into_iter().enumerate() {
        let data = content(len, i as u64 + 1);
        let name = format!("obj-{len}");
        let p = Count::default();
        let m = cl.put(&meta.client, None, Some(&name), &data, 3, &p).unwrap();
        assert_eq!(m.state, ObjectState::Complete);
        assert_eq!(m.size, len as u64);
        assert_eq!((*p.total.lock().unwrap(), *p.done.lock().unwrap()), (len as u64, len as u64));
        for n in nodes {
            assert_eq!(n.object(m.id).as_deref(), Some(&data[..]), "{len} B on {}", n.addr);
        }
        let g = cl.get(&meta.client, &ObjectRef::Name(name.clone()), &()).unwrap();
        assert_eq!(g.data, data, "{len} B read back");
        assert!(g.bad_replicas.is_empty());
        let st = cl.stat(&meta.client, &ObjectRef::Id(m.id)).unwrap();
        assert_eq!(st.replicas.len(), 3);
        for (_, s) in &st.replicas {
            let s = s.as_ref().unwrap();
            assert!(s.complete && s.size == len as u64 && s.version == m.version);
        }
    }
    let all = cl.ls(&meta.client).unwrap();
    assert_eq!(all.len(), 4);
    let removed = cl.rm(&meta.client, &ObjectRef::Name("obj-4096".into())).unwrap();
    for n in nodes {
        assert!(!n.has(removed.id));
    }
    assert!(matches!(cl.get(&meta.client, &ObjectRef::Name("obj-4096".into()), &()), Err(Error::NotFound(_))));
    assert_eq!(cl.ls(&meta.client).unwrap().len(), 3);
}

#[test]
fn busy_is_retried() {
    let n = FakeNode::start();
    n.faults.busy_next.store(20, Ordering::SeqCst);
    let mut cl = StorageClient::new(config(&[&n])).unwrap();
    let ep = Endpoint::Fixed(n.addr);
    let data = content(10_000, 7);
    cl.put_raw(&ep, 42, 1, &data, &()).unwrap();
    assert_eq!(n.busy_sent.load(Ordering::SeqCst), 20);
    assert_eq!(cl.get_raw(&ep, 42, &()).unwrap(), (data, 1));
}

#[test]
fn read_fails_over_from_a_down_replica() {
    let (a, b, c) = three();
    let nodes = [&a, &b, &c];
    let meta = Meta::start(&nodes);
    let mut cl = StorageClient::new(config(&nodes)).unwrap();
    let data = content(50_000, 3);
    let m = cl.put(&meta.client, None, Some("f"), &data, 3, &()).unwrap();
    // The first replica in placement order goes down.
    let first = cl.replica_target(&m.replicas[0]);
    let down = nodes.iter().find(|n| n.addr == first.dst).unwrap();
    down.faults.down.store(true, Ordering::SeqCst);
    let g = cl.get(&meta.client, &ObjectRef::Id(m.id), &()).unwrap();
    assert_eq!(g.data, data);
    assert_eq!(g.bad_replicas.len(), 1);
    assert_eq!(g.bad_replicas[0].target, first);
    assert!(!g.bad_replicas[0].checksum);
    assert!(g.bad_replicas[0].reason.contains("no reply"), "{}", g.bad_replicas[0]);
}

#[test]
fn read_fails_over_on_a_checksum_error_and_names_the_bad_replica() {
    let (a, b, c) = three();
    let nodes = [&a, &b, &c];
    let meta = Meta::start(&nodes);
    let mut cl = StorageClient::new(config(&nodes)).unwrap();
    let data = content(5 * 4096 + 100, 4);
    let m = cl.put(&meta.client, None, Some("c"), &data, 3, &()).unwrap();
    let first = cl.replica_target(&m.replicas[0]);
    let bad = nodes.iter().find(|n| n.addr == first.dst).unwrap();
    bad.faults.checksum_chunk_plus1.store(3 + 1, Ordering::SeqCst); // chunk 3 is corrupt
    let g = cl.get(&meta.client, &ObjectRef::Name("c".into()), &()).unwrap();
    assert_eq!(g.data, data);
    assert_eq!(g.bad_replicas.len(), 1, "{:?}", g.bad_replicas);
    assert_eq!(g.bad_replicas[0].target, first);
    assert!(g.bad_replicas[0].checksum);
    assert!(g.bad_replicas[0].reason.contains("offset 12288"), "{}", g.bad_replicas[0]);

    // Every replica corrupt: the read fails, naming each.
    for n in nodes {
        n.faults.checksum_chunk_plus1.store(1, Ordering::SeqCst);
    }
    match cl.get(&meta.client, &ObjectRef::Name("c".into()), &()) {
        Err(Error::AllReplicasFailed { tried, .. }) => {
            assert_eq!(tried.len(), 3);
            assert!(tried.iter().all(|b| b.checksum));
        }
        other => panic!("expected a failure, got {other:?}"),
    }
}

#[test]
fn put_fails_when_a_replica_never_acknowledges() {
    let (a, b, c) = three();
    let nodes = [&a, &b, &c];
    let meta = Meta::start(&nodes);
    let mut cfg = config(&nodes);
    cfg.transport.tries = 4;
    let mut cl = StorageClient::new(cfg).unwrap();
    b.faults.never_ack_puts.store(true, Ordering::SeqCst);
    let data = content(9000, 5);
    match cl.put(&meta.client, None, Some("p"), &data, 3, &()) {
        Err(Error::Replica { target, reason }) => {
            assert_eq!(target.dst, b.addr);
            assert_eq!(target.label, common::node_id(1));
            assert!(reason.contains("not acknowledged") && reason.contains("no reply"), "{reason}");
            let msg = Error::Replica { target, reason }.to_string();
            assert!(msg.contains("node-1"), "{msg}");
        }
        other => panic!("expected a replica error, got {other:?}"),
    }
    // Not committed: the metadata still says creating, and a get refuses it.
    let m = meta.client.lookup(&ObjectRef::Name("p".into())).unwrap();
    assert_eq!(m.state, ObjectState::Creating);
    assert!(matches!(cl.get(&meta.client, &ObjectRef::Name("p".into()), &()), Err(Error::Refused(_))));
    // Once the replica works again, the same put completes.
    b.faults.never_ack_puts.store(false, Ordering::SeqCst);
    let m = cl.put(&meta.client, None, Some("p"), &data, 3, &()).unwrap();
    assert_eq!(m.state, ObjectState::Complete);
    assert_eq!(b.object(m.id).unwrap(), data);
    // A put over a complete object is refused.
    assert!(matches!(cl.put(&meta.client, None, Some("p"), &data, 3, &()), Err(Error::Refused(_))));
}

#[test]
fn raw_mode_on_one_node() {
    let n = FakeNode::start();
    n.faults.drop_per_mille.store(20, Ordering::SeqCst);
    let mut cl = StorageClient::new(config(&[&n])).unwrap();
    let ep = Endpoint::Fixed(n.addr);
    for id in 1..=120u64 {
        cl.put_raw(&ep, id, 1, &content((id as usize) * 37, id), &()).unwrap();
    }
    let st = cl.stat_raw(&ep, 100).unwrap();
    assert_eq!((st.size, st.version, st.complete), (3700, 1, true));
    let all = cl.list_raw(&ep, None).unwrap();
    assert_eq!(all.iter().map(|e| e.id).collect::<Vec<_>>(), (1..=120).collect::<Vec<_>>());
    assert_eq!(cl.list_raw(&ep, Some(110)).unwrap().len(), 10);
    cl.rm_raw(&ep, 7, 0).unwrap();
    cl.rm_raw(&ep, 7, 0).unwrap(); // idempotent
    assert!(matches!(cl.stat_raw(&ep, 7), Err(Error::NotFound(_))));
    assert!(matches!(cl.get_raw(&ep, 7, &()), Err(Error::NotFound(_))));
    assert_eq!(cl.get_raw(&ep, 8, &()).unwrap().0, content(8 * 37, 8));
    // A node that is down: a clear error naming it.
    n.faults.down.store(true, Ordering::SeqCst);
    let e = cl.stat_raw(&ep, 8).unwrap_err().to_string();
    assert!(e.contains(&n.addr.to_string()) && e.contains("no reply"), "{e}");
}

#[test]
fn prefix_endpoint_addresses_objects() {
    let p = Endpoint::Prefix("2001:db8:0:7::".parse().unwrap(), 7878);
    assert_eq!(p.target(0x1234).dst.to_string(), "[2001:db8:0:7::1234]:7878");
}
