//! Client library of the IPv6-centric object store for hosts without DPDK (issue 5 item 5;
//! the protocol is `docs/storage-service.md`, the CLI `docs/objcli.md`).
//!
//! Everything goes over kernel sockets: UDP over IPv6 to the storage service on replica
//! addresses (a node's object prefix | the object id, port 7878 by default), and HTTP to the
//! metadata service through [`objmeta::client::MetaClient`].
//!
//! * [`wire`]: the 40-byte storage header and the operation data (pure).
//! * [`transport`]: a batch of requests over one socket, windowed per destination, each
//!   retransmitted on timeout (every request is idempotent), `busy` retried after a back-off.
//! * [`client`]: [`StorageClient`], the operations:
//!   - `put`: create at the metadata service (which picks the replicas), every fragment to
//!     every replica, success only when **every replica acknowledged every chunk** (an ack
//!     means durable) and the commit at the metadata service succeeded; a replica that fails
//!     makes the put fail with an error naming it, never a silent partial success;
//!   - `get`: lookup, read from the replicas in placement order; a replica that does not
//!     answer, answers `checksum` or anything else than OK, or has another size or version
//!     than the metadata is left for the next one (for the fragments still missing) and is
//!     returned in [`GetResult::bad_replicas`] (objmeta has no repair endpoint yet: the caller
//!     reports them; the CLI prints them);
//!   - `stat` (metadata and each replica's stat), `rm` (every replica, then the metadata),
//!     `ls` (the metadata service's listing);
//!   - the `*_raw` operations: one node, no metadata service ([`Endpoint`]).
//! * [`image`]: container images (issue 11): `objcli image push` packs a root file system
//!   into an erofs image stored as chunks named by digest, `objcli image run` starts a container
//!   on it through the host agent (`imgagent`).
//! * [`steer`]: SR-steered requests: a type-4 SRH attached with `IPV6_RTHDR` (the only
//!   `unsafe` code of the crate, one `setsockopt`).
//!
//! Replica addressing: a replica's requests go to `replica address : port`; a per-node
//! override ([`client::Config::node_addrs`]) sends them to any socket address instead (tests
//! run several fake nodes on `::1`, one port each).
//!
//! Limits: objects are held in memory whole (a put reads the file, a get builds the object
//! before writing it); one socket per client, one operation at a time.
#![deny(unsafe_code)]

pub mod bench;
pub mod client;
pub mod image;
pub mod steer;
pub mod transport;
pub mod wire;

pub use client::{BadReplica, Config, Endpoint, Error, GetResult, Progress, StatResult, StorageClient, Target};
pub use transport::{Options, Transport};
