//! NAT44 as a cluster: virtual mapping servers (VMS) over shards of the
//! pool, each with an active instance and a standby on another host, state
//! streamed from the one to the other, and takeover when a host fails
//! (capability N; docs/nat-ha.md is the design).
//!
//! Pure, like the rest of NAT: the appliance owns the sockets, the etcd
//! client and the rings, and drives [`node::ClusterNode`] with what arrives.
//!
//! * [`shard`]: the plan (shards, placement, timings), which shard a
//!   subscriber or a public address belongs to, the owners and epochs;
//! * [`record`]: the sync records, their application to a replica, snapshots;
//! * [`stream`]: sequence numbers, acknowledgements, retransmission and
//!   resynchronisation of one shard's sync stream;
//! * [`wire`]: the cluster messages;
//! * [`node`]: one host's mapping lcore in a cluster.

pub mod agent;
pub mod node;
pub mod pending;
pub mod record;
pub mod shard;
pub mod stream;
pub mod wire;

#[cfg(test)]
mod sim;

pub use shard::{ClusterPlan, ClusterTiming, Owner, Ownership, ShardMap, ShardPlan};
