//! Metadata service of the IPv6-centric object store (capability O of `DESIGN.md`, issue 5
//! item 4). The full reference (model, placement rule, intent rule, HTTP API, key layout,
//! running with etcd) is `docs/objmeta.md`; this is the map.
//!
//! * [`model`]: [`model::Node`] (a storage node: its object prefix, a /64 inside its locator,
//!   its storage SID, capacity, failure domain, last heartbeat) and [`model::ObjectMeta`] (an
//!   object: id, optional name, size, version, replicas each with an IPv6 address = the node's
//!   object prefix + the 64-bit object id).
//! * [`image`]: container images (issue 11): an image's manifest (its chunks, each an object
//!   named by its digest) and the start traces hosts record for prefetching.
//! * [`placement`]: weighted rendezvous hashing on the object id, weight = free capacity,
//!   distinct failure domains first. Pure functions, deterministic.
//! * [`store`]: the [`store::MetaStore`] trait (get / put / delete / list by prefix /
//!   compare-and-swap on byte keys) with two backends: [`store::EmbeddedStore`], a crash-safe
//!   single-file append-only log (CRC32C per record, fsync per mutation, replayed at open), and
//!   [`store::EtcdStore`], etcd v3 through its JSON gRPC gateway.
//! * [`service`]: [`service::MetadataService`], the operations (membership, health, create,
//!   commit, intent, lookup, delete, list) over any store. Values are JSON.
//! * [`server`] and [`client`]: a minimal HTTP/1.1 + JSON API over the service, and the typed
//!   [`client::MetaClient`] for it; `GET /metrics` serves [`metrics`] (requests, intents,
//!   store operations, and a census of the store) in the Prometheus text format. [`http`] is the small HTTP/1.1 codec both (and the etcd
//!   backend) share.
//!
//! Invariants:
//!
//! * every mutation goes through a compare-and-swap on the record it changes, so several
//!   service instances over one etcd never lose an update; create, commit, register, delete are
//!   idempotent (a retry after a lost reply returns the same result);
//! * a replica address always lies inside its node's object prefix and its low 64 bits are the
//!   object id (ids are never 0);
//! * placement only ever picks Up nodes whose free capacity covers the object.
//!
//! Limits: no leases or watches; health is computed from the last heartbeat at read time;
//! uniqueness of node prefixes/SIDs is checked by a scan at register time (two concurrent
//! registrations of the same prefix on two instances are not excluded).
#![forbid(unsafe_code)]

pub mod client;
pub mod clock;
pub mod error;
pub mod http;
pub mod image;
pub mod metrics;
pub mod model;
pub mod placement;
pub mod server;
pub mod service;
pub mod store;

pub use error::MetaError;
pub use model::{Node, NodeState, ObjectMeta, ObjectRef, ObjectState, Prefix64, Replica};
pub use service::{MetadataService, ServiceConfig};
