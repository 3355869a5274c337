//! The appliance: a DPDK network and storage node.
//!
//! Everything in this crate is safe Rust: the one `unsafe` boundary is the `rte`
//! crate (over `dpdk-sys`). Packet logic (`wire`, `lpm`, `neigh`, `l3`,
//! `slowpath`) works on byte slices and plain structs and is tested without
//! DPDK; `worker`, `control`, `metrics` and `app` tie it to DPDK.
#![forbid(unsafe_code)]

pub mod app;
pub mod config;
pub mod control;
pub mod l3;
pub mod lpm;
pub mod metrics;
pub mod nat;
pub mod natcore;
pub mod neigh;
pub mod objservice;
pub mod packet;
pub mod slowpath;
pub mod srv6;
pub mod stats;
pub mod wire;
pub mod worker;

#[cfg(test)]
mod l3_tests;
#[cfg(test)]
mod nat_tests;
#[cfg(test)]
mod slowpath_tests;
#[cfg(test)]
mod srv6_tests;
