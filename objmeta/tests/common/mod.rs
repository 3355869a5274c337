//! Shared by the test binaries: the store conformance suite and the service suite, both run
//! against every backend (embedded here, a real etcd in `etcd.rs`).
#![allow(dead_code)]

use std::net::Ipv6Addr;
use std::sync::Arc;
use std::thread;

use objmeta::clock::ManualClock;
use objmeta::model::{CreateRequest, IntentOp, IntentRequest, NodeRegistration, NodeState, ObjectRef, ObjectState};
use objmeta::store::MetaStore;
use objmeta::{MetaError, MetadataService, ServiceConfig};

pub const DOWN_AFTER_MS: u64 = 10_000;

/// Removes every key (so one etcd can serve several suites).
pub fn wipe(store: &dyn MetaStore) {
    loop {
        let all = store.list_prefix(b"", None, 1000).unwrap();
        if all.is_empty() {
            return;
        }
        for (k, _) in all {
            store.delete(&k).unwrap();
        }
    }
}

/// The [`MetaStore`] contract (see `objmeta::store`).
pub fn conformance(store: &(dyn MetaStore + 'static)) {
    wipe(store);
    assert_eq!(store.get(b"a/1").unwrap(), None);
    assert!(!store.delete(b"a/1").unwrap());
    store.put(b"a/1", b"one").unwrap();
    assert_eq!(store.get(b"a/1").unwrap().as_deref(), Some(&b"one"[..]));
    store.put(b"a/1", b"uno").unwrap();
    assert_eq!(store.get(b"a/1").unwrap().as_deref(), Some(&b"uno"[..]));
    store.put(b"a/2", b"").unwrap();
    assert_eq!(store.get(b"a/2").unwrap().as_deref(), Some(&b""[..]), "empty value kept");
    store.put(b"a/3", b"three").unwrap();
    store.put(b"a0", b"not in a/").unwrap();
    store.put(b"a", b"not in a/ either").unwrap();
    store.put(b"b\xff\x00", b"\x00\xff binary").unwrap();

    // Prefix, order, start_after, limit.
    let keys = |v: Vec<(Vec<u8>, Vec<u8>)>| v.into_iter().map(|(k, _)| k).collect::<Vec<_>>();
    assert_eq!(
        keys(store.list_prefix(b"a/", None, 100).unwrap()),
        vec![b"a/1".to_vec(), b"a/2".to_vec(), b"a/3".to_vec()]
    );
    assert_eq!(keys(store.list_prefix(b"a/", None, 2).unwrap()), vec![b"a/1".to_vec(), b"a/2".to_vec()]);
    assert_eq!(keys(store.list_prefix(b"a/", Some(b"a/1"), 100).unwrap()), vec![b"a/2".to_vec(), b"a/3".to_vec()]);
    assert_eq!(keys(store.list_prefix(b"a/", Some(b"a/3"), 100).unwrap()), Vec::<Vec<u8>>::new());
    assert_eq!(keys(store.list_prefix(b"a/", Some(b"0"), 1).unwrap()), vec![b"a/1".to_vec()]);
    assert_eq!(store.list_prefix(b"a/", None, 0).unwrap(), vec![]);
    let all = store.list_prefix(b"", None, 100).unwrap();
    assert_eq!(all.len(), 6);
    assert!(all.windows(2).all(|w| w[0].0 < w[1].0), "ascending");
    assert_eq!(
        store.list_prefix(b"b\xff", None, 10).unwrap(),
        vec![(b"b\xff\x00".to_vec(), b"\x00\xff binary".to_vec())]
    );

    // Compare-and-swap.
    assert!(!store.compare_and_swap(b"a/1", None, Some(b"x")).unwrap(), "present, expected absent");
    assert!(!store.compare_and_swap(b"a/1", Some(b"one"), Some(b"x")).unwrap(), "stale value");
    assert_eq!(store.get(b"a/1").unwrap().as_deref(), Some(&b"uno"[..]), "failed CAS changes nothing");
    assert!(store.compare_and_swap(b"a/1", Some(b"uno"), Some(b"eins")).unwrap());
    assert_eq!(store.get(b"a/1").unwrap().as_deref(), Some(&b"eins"[..]));
    assert!(store.compare_and_swap(b"c", None, Some(b"new")).unwrap(), "create if absent");
    assert!(!store.compare_and_swap(b"c", None, Some(b"again")).unwrap());
    assert!(!store.compare_and_swap(b"missing", Some(b"v"), Some(b"w")).unwrap());
    assert_eq!(store.get(b"missing").unwrap(), None);
    assert!(store.compare_and_swap(b"c", Some(b"new"), None).unwrap(), "delete if equal");
    assert_eq!(store.get(b"c").unwrap(), None);
    assert!(store.compare_and_swap(b"c", None, None).unwrap(), "absent stays absent");
    assert!(store.delete(b"a/1").unwrap());
    assert_eq!(store.get(b"a/1").unwrap(), None);

    // Large values and long listings (etcd answers these with chunked bodies).
    let big: Vec<u8> = (0..300_000u32).map(|i| (i * 7 + i / 256) as u8).collect();
    store.put(b"big", &big).unwrap();
    assert_eq!(store.get(b"big").unwrap().as_deref(), Some(&big[..]));
    assert!(store.compare_and_swap(b"big", Some(&big), Some(b"small")).unwrap());
    for i in 0..150u32 {
        store.put(format!("many/{i:04}").as_bytes(), &[b'v'; 100]).unwrap();
    }
    let many = store.list_prefix(b"many/", None, 1000).unwrap();
    assert_eq!(many.len(), 150);
    assert_eq!(many[149].0, b"many/0149");
    let page = store.list_prefix(b"many/", Some(b"many/0099"), 30).unwrap();
    assert_eq!((page.len(), page[0].0.as_slice()), (30, &b"many/0100"[..]));
    wipe(store);
}

/// Counter incremented by CAS from several threads: no update is lost.
pub fn concurrent_cas(store: Arc<dyn MetaStore>, threads: usize, per_thread: usize) {
    store.delete(b"counter").unwrap();
    let hs: Vec<_> = (0..threads)
        .map(|_| {
            let s = store.clone();
            thread::spawn(move || {
                for _ in 0..per_thread {
                    loop {
                        let cur = s.get(b"counter").unwrap();
                        let n: u64 = cur.as_deref().map_or(0, |b| std::str::from_utf8(b).unwrap().parse().unwrap());
                        if s.compare_and_swap(b"counter", cur.as_deref(), Some((n + 1).to_string().as_bytes())).unwrap()
                        {
                            break;
                        }
                    }
                }
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    let v = store.get(b"counter").unwrap().unwrap();
    assert_eq!(String::from_utf8(v).unwrap(), (threads * per_thread).to_string());
    store.delete(b"counter").unwrap();
}

pub fn reg(i: usize, domain: &str, capacity: u64) -> NodeRegistration {
    NodeRegistration {
        id: format!("node-{i}"),
        object_prefix: format!("2001:db8:{i:x}:1::/64").parse().unwrap(),
        storage_sid: format!("fc00:{i:x}::100").parse().unwrap(),
        capacity_bytes: capacity,
        used_bytes: 0,
        failure_domain: domain.to_string(),
    }
}

pub fn service(store: Box<dyn MetaStore>) -> (MetadataService, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let cfg = ServiceConfig { down_after_ms: DOWN_AFTER_MS, ..ServiceConfig::default() };
    (MetadataService::with_clock(store, cfg, clock.clone()), clock)
}

const GB: u64 = 1 << 30;

/// Six nodes, two per failure domain (rack-a, rack-b, rack-c).
pub fn six_nodes(svc: &MetadataService) {
    for i in 0..6 {
        svc.register(reg(i, ["rack-a", "rack-b", "rack-c"][i % 3], 100 * GB)).unwrap();
    }
}

pub fn membership_and_health(svc: &MetadataService, clock: &ManualClock) {
    six_nodes(svc);
    let nodes = svc.nodes().unwrap();
    assert_eq!(nodes.len(), 6);
    assert!(nodes.iter().all(|n| n.state == NodeState::Up));
    // Exactly at the limit still Up; one ms later Down.
    clock.advance_ms(DOWN_AFTER_MS);
    assert!(svc.nodes().unwrap().iter().all(|n| n.state == NodeState::Up));
    clock.advance_ms(1);
    assert!(svc.nodes().unwrap().iter().all(|n| n.state == NodeState::Down));
    let n = svc.heartbeat("node-2", 5 * GB).unwrap();
    assert_eq!((n.state, n.used_bytes), (NodeState::Up, 5 * GB));
    let states: Vec<_> = svc.nodes().unwrap().into_iter().map(|n| (n.id, n.state)).collect();
    for (id, st) in states {
        assert_eq!(st, if id == "node-2" { NodeState::Up } else { NodeState::Down }, "{id}");
    }
    assert!(matches!(svc.heartbeat("node-99", 0), Err(MetaError::NotFound(_))));
    // Re-registration updates the node and counts as a heartbeat.
    let mut r = reg(0, "rack-a", 200 * GB);
    r.used_bytes = GB;
    let n = svc.register(r).unwrap();
    assert_eq!((n.capacity_bytes, n.free_bytes(), n.state), (200 * GB, 199 * GB, NodeState::Up));
    assert_eq!(svc.nodes().unwrap().len(), 6);
    // Another node may not take an existing prefix or SID.
    let mut dup = reg(7, "rack-a", GB);
    dup.object_prefix = reg(1, "", 0).object_prefix;
    assert!(matches!(svc.register(dup), Err(MetaError::AlreadyExists(_))));
    let mut dup = reg(7, "rack-a", GB);
    dup.storage_sid = reg(1, "", 0).storage_sid;
    assert!(matches!(svc.register(dup), Err(MetaError::AlreadyExists(_))));
    assert!(matches!(svc.register(reg(7, "", GB)), Err(MetaError::Invalid(_))));
    let mut moved = reg(2, "rack-c", GB);
    moved.object_prefix = "2001:db8:ffff:1::/64".parse().unwrap();
    assert!(matches!(svc.register(moved), Err(MetaError::Conflict(_))), "a known node keeps its prefix");
    let mut new_sid = reg(2, "rack-c", GB);
    new_sid.storage_sid = "fc00:ffff::100".parse().unwrap();
    assert_eq!(svc.register(new_sid).unwrap().storage_sid, "fc00:ffff::100".parse::<Ipv6Addr>().unwrap());
    let mut bad = reg(7, "rack-a", GB);
    bad.id = "bad id".into();
    assert!(matches!(svc.register(bad), Err(MetaError::Invalid(_))));
}

pub fn create_lookup_commit_delete(svc: &MetadataService) {
    six_nodes(svc);
    let req = CreateRequest { name: Some("photos/cat 1.jpg".into()), size: 10 << 20, ..CreateRequest::default() };
    let m = svc.create(req.clone()).unwrap();
    assert_ne!(m.id, 0);
    assert_eq!((m.size, m.version, m.chunk_size, m.state), (10 << 20, 1, 4096, ObjectState::Creating));
    assert_eq!(m.replicas.len(), 3);
    let nodes = svc.nodes().unwrap();
    let mut domains: Vec<_> = m
        .replicas
        .iter()
        .map(|r| {
            let n = nodes.iter().find(|n| n.id == r.node).unwrap();
            assert!(n.object_prefix.contains(r.address), "address inside the node's prefix");
            assert_eq!(u128::from(r.address) as u64, m.id, "low 64 bits are the object id");
            n.failure_domain.clone()
        })
        .collect();
    domains.sort();
    domains.dedup();
    assert_eq!(domains.len(), 3, "three failure domains");

    // Idempotent create; a different one with the same name is refused.
    assert_eq!(svc.create(req.clone()).unwrap(), m);
    let other = CreateRequest { size: 1, ..req.clone() };
    assert!(matches!(svc.create(other), Err(MetaError::AlreadyExists(_))));
    let other = CreateRequest { replicas: Some(2), ..req.clone() };
    assert!(matches!(svc.create(other), Err(MetaError::AlreadyExists(_))));
    let other = CreateRequest { id: Some(m.id + 1000), ..req.clone() };
    assert!(matches!(svc.create(other), Err(MetaError::AlreadyExists(_))));

    assert_eq!(svc.lookup(&ObjectRef::Id(m.id)).unwrap(), m);
    assert_eq!(svc.lookup(&ObjectRef::Name("photos/cat 1.jpg".into())).unwrap(), m);
    assert!(matches!(svc.lookup(&ObjectRef::Name("nope".into())), Err(MetaError::NotFound(_))));

    // By explicit id (no name), with one replica; id 0 and no id/name are invalid.
    let by_id = CreateRequest { id: Some(0xfeed), size: 0, replicas: Some(1), ..CreateRequest::default() };
    let b = svc.create(by_id.clone()).unwrap();
    assert_eq!((b.id, b.replicas.len(), b.name.clone()), (0xfeed, 1, None));
    assert_eq!(svc.create(by_id).unwrap(), b);
    let zero = CreateRequest { id: Some(0), size: 1, ..CreateRequest::default() };
    assert!(matches!(svc.create(zero), Err(MetaError::Invalid(_))));
    assert!(matches!(svc.create(CreateRequest::default()), Err(MetaError::Invalid(_))));
    let many = CreateRequest { id: Some(5), size: 1, replicas: Some(7), ..CreateRequest::default() };
    assert!(matches!(svc.create(many), Err(MetaError::NotEnoughNodes(_))));

    // Commit: idempotent, version-checked.
    assert!(matches!(svc.commit(m.id, 2), Err(MetaError::Conflict(_))));
    let c = svc.commit(m.id, 1).unwrap();
    assert_eq!(c.state, ObjectState::Complete);
    assert_eq!(svc.commit(m.id, 1).unwrap(), c);
    assert_eq!(svc.lookup(&ObjectRef::Id(m.id)).unwrap().state, ObjectState::Complete);
    assert!(matches!(svc.commit(0xdead, 1), Err(MetaError::NotFound(_))));

    // Delete: returns the marked metadata once, then nothing; the name is free again.
    let d = svc.delete(m.id).unwrap().unwrap();
    assert_eq!((d.id, d.state), (m.id, ObjectState::Deleting));
    assert!(svc.delete(m.id).unwrap().is_none());
    assert!(matches!(svc.lookup(&ObjectRef::Id(m.id)), Err(MetaError::NotFound(_))));
    assert!(matches!(svc.lookup(&ObjectRef::Name("photos/cat 1.jpg".into())), Err(MetaError::NotFound(_))));
    let again = svc.create(req).unwrap();
    assert_ne!(again.id, m.id, "a fresh id for the re-created name");

    // An allocated id never collides with an explicit one.
    let next_guess = again.id + 1;
    let explicit = svc.create(CreateRequest { id: Some(next_guess), size: 1, ..CreateRequest::default() }).unwrap();
    let named =
        svc.create(CreateRequest { name: Some("after-explicit".into()), size: 1, ..CreateRequest::default() }).unwrap();
    assert_ne!(named.id, explicit.id);
    assert_eq!(svc.lookup(&ObjectRef::Id(explicit.id)).unwrap().name, None);
}

pub fn capacity_is_respected(svc: &MetadataService) {
    svc.register(reg(0, "a", 10 * GB)).unwrap();
    svc.register(reg(1, "b", 10 * GB)).unwrap();
    svc.register(reg(2, "c", 2 * GB)).unwrap();
    svc.register(reg(3, "d", 10 * GB)).unwrap();
    svc.heartbeat("node-3", 9 * GB).unwrap(); // 1 GB free
    for i in 0..50 {
        let m = svc
            .create(CreateRequest {
                name: Some(format!("big-{i}")),
                size: 5 * GB,
                replicas: Some(2),
                ..CreateRequest::default()
            })
            .unwrap();
        let mut on: Vec<_> = m.replicas.iter().map(|r| r.node.as_str()).collect();
        on.sort();
        assert_eq!(on, ["node-0", "node-1"], "only nodes with 5 GB free");
    }
    let e = svc.create(CreateRequest {
        name: Some("too-big".into()),
        size: 5 * GB,
        replicas: Some(3),
        ..CreateRequest::default()
    });
    assert!(matches!(e, Err(MetaError::NotEnoughNodes(_))), "{e:?}");
}

pub fn intents(svc: &MetadataService, clock: &ManualClock) {
    six_nodes(svc);
    let m = svc.create(CreateRequest { name: Some("x".into()), size: 4096, ..CreateRequest::default() }).unwrap();
    let sid = |node: &str| svc.node(node).unwrap().storage_sid;
    let want: Vec<Ipv6Addr> = m.replicas.iter().map(|r| sid(&r.node)).collect();
    let retrieve = IntentRequest { op: IntentOp::Retrieve, object: ObjectRef::Name("x".into()), size: None };
    let i = svc.intent(&retrieve).unwrap();
    assert_eq!((i.object, i.segments.clone()), (m.id, want.clone()), "all up: placement order");

    // The first replica's node goes down: it moves to the end.
    clock.advance_ms(DOWN_AFTER_MS + 1);
    for n in svc.nodes().unwrap() {
        if n.id != m.replicas[0].node {
            svc.heartbeat(&n.id, 0).unwrap();
        }
    }
    let i = svc.intent(&retrieve).unwrap();
    assert_eq!(i.segments, vec![want[1], want[2], want[0]]);
    assert_eq!(
        i.candidates.iter().map(|c| c.state).collect::<Vec<_>>(),
        [NodeState::Up, NodeState::Up, NodeState::Down]
    );
    assert_eq!(i.candidates[2].address, m.replicas[0].address);
    // A store intent for the existing object names the same replicas.
    let st = svc.intent(&IntentRequest { op: IntentOp::Store, object: ObjectRef::Id(m.id), size: None }).unwrap();
    assert_eq!(st.segments, i.segments);

    // Store of a new id: the placement ranking, Up nodes only, distinct domains first.
    let new_id = 0x1234_5678;
    let st = svc.intent(&IntentRequest { op: IntentOp::Store, object: ObjectRef::Id(new_id), size: Some(1) }).unwrap();
    assert_eq!(st.segments.len(), svc.config().store_candidates);
    assert!(st.candidates.iter().all(|c| c.state == NodeState::Up && c.node != m.replicas[0].node));
    let created = svc.create(CreateRequest { id: Some(new_id), size: 1, ..CreateRequest::default() }).unwrap();
    let placed: Vec<_> = created.replicas.iter().map(|r| r.node.clone()).collect();
    let candidates: Vec<_> = st.candidates.iter().map(|c| c.node.clone()).collect();
    assert_eq!(placed, candidates, "the store candidates are where create places it");
    assert!(st.candidates.iter().all(|c| u128::from(c.address) as u64 == new_id));

    // Missing objects.
    let e = svc.intent(&IntentRequest { op: IntentOp::Retrieve, object: ObjectRef::Id(0xabcdef), size: None });
    assert!(matches!(e, Err(MetaError::NotFound(_))));
    let e = svc.intent(&IntentRequest { op: IntentOp::Store, object: ObjectRef::Name("new".into()), size: None });
    assert!(matches!(e, Err(MetaError::NotFound(_))));
    // Everything down: a store of a new object has no candidate.
    clock.advance_ms(DOWN_AFTER_MS + 1);
    let e = svc.intent(&IntentRequest { op: IntentOp::Store, object: ObjectRef::Id(77), size: None });
    assert!(matches!(e, Err(MetaError::NotEnoughNodes(_))));
    // ...but a retrieve still lists the replicas (all Down, placement order).
    let i = svc.intent(&retrieve).unwrap();
    assert_eq!(i.segments, want);
}

pub fn listing(svc: &MetadataService) {
    six_nodes(svc);
    let mut ids: Vec<u64> = (0..25)
        .map(|i| {
            svc.create(CreateRequest {
                name: Some(format!("o{i}")),
                size: i,
                replicas: Some(1),
                ..CreateRequest::default()
            })
            .unwrap()
            .id
        })
        .collect();
    ids.push(
        svc.create(CreateRequest { id: Some(u64::MAX), size: 0, replicas: Some(1), ..CreateRequest::default() })
            .unwrap()
            .id,
    );
    ids.sort();
    let mut seen = Vec::new();
    let mut after = None;
    let mut pages = 0;
    loop {
        let p = svc.list(after, 10).unwrap();
        pages += 1;
        assert!(p.objects.len() <= 10);
        seen.extend(p.objects.iter().map(|m| m.id));
        match p.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    assert_eq!(seen, ids, "every object once, in id order");
    assert_eq!(pages, 3);
    assert_eq!(svc.list(Some(u64::MAX), 10).unwrap().objects, vec![]);
}

/// `threads` creators race on each of `rounds` names (half of them with an explicit id
/// creator in the mix): each name ends up as one object, and every creator gets that object.
pub fn concurrent_creates(svc: Arc<MetadataService>, threads: usize, rounds: usize) {
    six_nodes(&svc);
    for round in 0..rounds {
        let name = format!("race-{round}");
        let hs: Vec<_> = (0..threads)
            .map(|t| {
                let svc = svc.clone();
                let name = name.clone();
                thread::spawn(move || {
                    if t == 0 && round % 2 == 1 {
                        // Takes the id the named creators are likely to be allocated next.
                        let _ = svc.create(CreateRequest {
                            id: Some(round as u64 + 1),
                            size: 1,
                            ..CreateRequest::default()
                        });
                        return None;
                    }
                    Some(svc.create(CreateRequest { name: Some(name), size: 7, ..CreateRequest::default() }).unwrap())
                })
            })
            .collect();
        let got: Vec<_> = hs.into_iter().filter_map(|h| h.join().unwrap()).collect();
        assert!(got.windows(2).all(|w| w[0] == w[1]), "{name}: creators disagree: {got:?}");
        assert_eq!(svc.lookup(&ObjectRef::Name(name.clone())).unwrap(), got[0]);
    }
    let mut all = Vec::new();
    let mut after = None;
    loop {
        let p = svc.list(after, 1000).unwrap();
        all.extend(p.objects);
        match p.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    let named = all.iter().filter(|m| m.name.is_some()).count();
    assert_eq!(named, rounds, "one object per name, no orphans");
}

/// Every service test on a fresh store from `make`.
pub fn service_suite(make: &dyn Fn() -> Box<dyn MetaStore>) {
    let (svc, clock) = service(make());
    membership_and_health(&svc, &clock);
    let (svc, _) = service(make());
    create_lookup_commit_delete(&svc);
    let (svc, _) = service(make());
    capacity_is_respected(&svc);
    let (svc, clock) = service(make());
    intents(&svc, &clock);
    let (svc, _) = service(make());
    listing(&svc);
}
