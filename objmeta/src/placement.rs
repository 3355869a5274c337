//! Replica placement: weighted rendezvous (highest random weight) hashing on the object id.
//!
//! For object `o` and node `n` with free capacity `w_n`, the score is
//! `w_n / -ln(u(n, o))` where `u` is a uniform number in (0, 1) derived from a fixed 64-bit
//! hash of (node id, object id). The node with the highest score wins; with this form the
//! probability that `n` is the top node is exactly `w_n / Σ w` (the "logarithmic method" of
//! weighted rendezvous hashing), so objects spread in proportion to free capacity, and adding
//! or removing a node only moves the objects that rank it first.
//!
//! Rule ([`rank`]): only *eligible* nodes are ranked: state Up and free capacity ≥ the object's
//! size. They are sorted by score (highest first, ties by node id), then reordered
//! domain-first: the best node of each failure domain, in score order, then every remaining
//! node in score order. [`place`] takes the first `replicas` of that order, so replicas sit in
//! distinct failure domains whenever there are at least `replicas` eligible domains, and
//! otherwise cover every domain once and fill up with distinct nodes.
//!
//! The hash is spelled out here (FNV-1a over the node id, SplitMix64 finaliser), not taken from
//! `std`, so placement is identical across builds, platforms and service instances.

use std::collections::HashSet;

use crate::error::MetaError;
use crate::model::{Node, NodeState};

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The rendezvous score of `node_id` for `object_id` with weight `weight`.
pub fn score(node_id: &str, object_id: u64, weight: u64) -> f64 {
    let h = mix64(fnv1a(node_id.as_bytes()) ^ mix64(object_id));
    // 53 random bits, shifted into the open interval (0, 1).
    let u = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    weight as f64 / -u.ln()
}

/// Whether `node` may hold a new object of `size` bytes.
pub fn eligible(node: &Node, size: u64) -> bool {
    node.state == NodeState::Up && node.free_bytes() >= size
}

/// The eligible nodes for `object_id` in preference order (see the module doc).
pub fn rank(nodes: &[Node], object_id: u64, size: u64) -> Vec<&Node> {
    let mut scored: Vec<(f64, &Node)> =
        nodes.iter().filter(|n| eligible(n, size)).map(|n| (score(&n.id, object_id, n.free_bytes()), n)).collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.id.cmp(&b.1.id)));
    let mut seen = HashSet::new();
    let (mut first, mut rest) = (Vec::new(), Vec::new());
    for (_, n) in scored {
        if seen.insert(n.failure_domain.as_str()) {
            first.push(n);
        } else {
            rest.push(n);
        }
    }
    first.extend(rest);
    first
}

/// The `replicas` nodes that hold `object_id`, in preference order.
pub fn place(nodes: &[Node], object_id: u64, size: u64, replicas: usize) -> Result<Vec<&Node>, MetaError> {
    let mut r = rank(nodes, object_id, size);
    if r.len() < replicas {
        let up = nodes.iter().filter(|n| n.state == NodeState::Up).count();
        return Err(MetaError::NotEnoughNodes(format!(
            "{replicas} replicas of {size} bytes wanted, but only {} of {} nodes ({up} up) are up with that much free capacity",
            r.len(),
            nodes.len()
        )));
    }
    r.truncate(replicas);
    Ok(r)
}
