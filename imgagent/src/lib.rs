//! `imgagent`: the host agent for lazily fetched container images (issue 11; capability I of
//! DESIGN.md; reference `docs/images.md`).
//!
//! ```text
//!  runc ─ overlay ─ erofs (kernel, read-only, straight from the file)
//!                     │ reads of <state>/fuse/<image>
//!                     ▼
//!  imgagent: FUSE ─► chunk cache (<state>/chunks, by digest) ─ miss ─► fetcher ─► storage nodes
//!                        ▲                                      (SR-steered, then each replica)
//!                        └──────── prefetch along the merged start trace ◄── metadata service
//! ```
//!
//! * [`fuse`]: one read-only file per image; reads never block the FUSE thread on a fetch.
//! * [`cache`]: chunks by digest, atomic writes, verified on first reuse, LRU under a size limit.
//! * [`fetch`]: one fetch per missing chunk however many readers wait, demand before prefetch,
//!   prefetch parallelism bounded, SR-steered with failover to each replica, digest checked.
//! * [`agent`]: images, mounts, starts (trace recording, prefetch window, accuracy and
//!   coverage), pull, garbage collection.
//! * [`trace`]: merging the traces of many starts and hosts into one prefetch order.
//! * [`mount`]: mount(2) of erofs on the FUSE file (the crate's only `unsafe`), readahead.
//! * [`api`], [`metrics`]: the HTTP control API and `/metrics`.
//!
//! Invariants: bytes served are always the manifest's (every fetched chunk is checked against
//! its SHA-256 before it is cached or served; a cached chunk is re-checked on first reuse after
//! a restart); a read that cannot be served fails with EIO, never with other bytes; when the
//! agent dies the kernel fails the reads of its mounts (the FUSE connection is gone), and a
//! restarted agent clears those mounts and reuses the verified cache.
#![deny(unsafe_code)]

pub mod agent;
pub mod api;
pub mod cache;
pub mod fetch;
pub mod fuse;
pub mod metrics;
pub mod mount;
pub mod trace;
