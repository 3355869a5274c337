//! The appliance: a DPDK network and storage node.
//!
//! This crate is the DPDK wiring: start-up ([`app`]), configuration
//! ([`config`]), the worker, control and NAT mapping lcores ([`worker`],
//! [`control`], [`natcore`]) and the metrics endpoint ([`metrics`]). The
//! packet logic they run is the `dataplane` crate, over the header views of
//! `netwire`; the one `unsafe` boundary is the `rte` crate (over `dpdk-sys`).
#![forbid(unsafe_code)]

pub mod app;
pub mod config;
pub mod control;
pub mod ctl;
pub mod metrics;
pub mod natcluster;
pub mod natcore;
pub mod rcu;
pub mod trace;
pub mod worker;
