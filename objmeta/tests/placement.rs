//! Placement properties: distinct failure domains, capacity, determinism, spread in
//! proportion to free capacity, minimal movement when a node leaves.

use std::collections::{HashMap, HashSet};

use objmeta::model::{Node, NodeState};
use objmeta::placement::{place, rank};
use objmeta::MetaError;

fn node(i: usize, domain: &str, free: u64) -> Node {
    Node {
        id: format!("n{i}"),
        object_prefix: format!("2001:db8:{i:x}::/64").parse().unwrap(),
        storage_sid: format!("fc00::{i:x}").parse().unwrap(),
        capacity_bytes: free + 1000,
        used_bytes: 1000,
        failure_domain: domain.into(),
        last_heartbeat: 0,
        state: NodeState::Up,
    }
}

fn ids(v: &[&Node]) -> Vec<String> {
    v.iter().map(|n| n.id.clone()).collect()
}

#[test]
fn replicas_land_in_distinct_domains_when_there_are_enough() {
    let nodes: Vec<Node> = (0..12).map(|i| node(i, &format!("d{}", i % 4), 1 << 30)).collect();
    for id in 1..2000u64 {
        let p = place(&nodes, id, 1, 3).unwrap();
        let domains: HashSet<_> = p.iter().map(|n| &n.failure_domain).collect();
        assert_eq!(domains.len(), 3, "object {id}");
        let p4 = place(&nodes, id, 1, 4).unwrap();
        assert_eq!(p4.iter().map(|n| &n.failure_domain).collect::<HashSet<_>>().len(), 4);
        assert_eq!(ids(&p4[..3]), ids(&p), "a prefix of the larger placement");
    }
}

#[test]
fn too_few_domains_cover_all_then_use_distinct_nodes() {
    let nodes: Vec<Node> = (0..5).map(|i| node(i, if i < 3 { "a" } else { "b" }, 1 << 30)).collect();
    for id in 1..500u64 {
        let p = place(&nodes, id, 1, 3).unwrap();
        let distinct: HashSet<_> = p.iter().map(|n| &n.id).collect();
        assert_eq!(distinct.len(), 3);
        let domains: HashSet<_> = p.iter().map(|n| &n.failure_domain).collect();
        assert_eq!(domains.len(), 2, "both domains used");
        assert_ne!(p[0].failure_domain, p[1].failure_domain, "domains first");
    }
    assert!(matches!(place(&nodes, 1, 1, 6), Err(MetaError::NotEnoughNodes(_))));
}

#[test]
fn only_up_nodes_with_room_are_chosen() {
    let mut nodes: Vec<Node> = (0..6).map(|i| node(i, &format!("d{i}"), 100)).collect();
    nodes[1].state = NodeState::Down;
    nodes[2].used_bytes = nodes[2].capacity_bytes - 99; // 99 free
    nodes[3].used_bytes = nodes[3].capacity_bytes + 5; // over-full: 0 free
    for id in 1..1000u64 {
        let p = place(&nodes, id, 100, 3).unwrap();
        let mut got = ids(&p);
        got.sort();
        assert_eq!(got, ["n0", "n4", "n5"], "object {id}");
    }
    assert!(matches!(place(&nodes, 1, 101, 1), Err(MetaError::NotEnoughNodes(_))));
    // A zero-byte object fits anywhere Up, even on a full node.
    assert_eq!(rank(&nodes, 9, 0).len(), 5);
}

#[test]
fn placement_is_deterministic_and_independent_of_node_order() {
    let nodes: Vec<Node> = (0..9).map(|i| node(i, &format!("d{}", i % 3), (i as u64 + 1) << 30)).collect();
    let mut reversed = nodes.clone();
    reversed.reverse();
    for id in [1u64, 2, 42, 0xdead_beef, u64::MAX] {
        let a = ids(&place(&nodes, id, 10, 3).unwrap());
        assert_eq!(a, ids(&place(&nodes, id, 10, 3).unwrap()));
        assert_eq!(a, ids(&place(&reversed, id, 10, 3).unwrap()));
    }
    // Different objects do not all go to the same nodes.
    let firsts: HashSet<_> = (1..100u64).map(|id| place(&nodes, id, 10, 1).unwrap()[0].id.clone()).collect();
    assert!(firsts.len() >= 8, "{firsts:?}");
}

#[test]
fn objects_spread_in_proportion_to_free_capacity() {
    let free = [1u64, 2, 3, 4, 10];
    let nodes: Vec<Node> = free.iter().enumerate().map(|(i, f)| node(i, &format!("d{i}"), f << 30)).collect();
    let total: u64 = free.iter().sum();
    let n = 40_000u64;
    let mut count: HashMap<String, u64> = HashMap::new();
    for id in 1..=n {
        *count.entry(place(&nodes, id, 1, 1).unwrap()[0].id.clone()).or_default() += 1;
    }
    for (i, f) in free.iter().enumerate() {
        let got = count[&format!("n{i}")] as f64 / n as f64;
        let want = *f as f64 / total as f64;
        assert!((got - want).abs() < 0.1 * want, "n{i}: share {got:.4}, want {want:.4}");
    }
}

#[test]
fn removing_a_node_only_moves_its_own_objects() {
    let nodes: Vec<Node> = (0..8).map(|i| node(i, &format!("d{i}"), (i as u64 % 3 + 1) << 30)).collect();
    let without: Vec<Node> = nodes.iter().filter(|n| n.id != "n3").cloned().collect();
    let mut moved = 0;
    for id in 1..5000u64 {
        let before = place(&nodes, id, 1, 1).unwrap()[0].id.clone();
        let after = place(&without, id, 1, 1).unwrap()[0].id.clone();
        if before != "n3" {
            assert_eq!(before, after, "object {id} moved though its node stayed");
        } else {
            moved += 1;
        }
    }
    assert!(moved > 0);
}
