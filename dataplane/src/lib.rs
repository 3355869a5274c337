//! The pure packet path of the appliance: everything a worker, the control
//! core and the NAT mapping core decide about a packet, on byte slices and
//! plain structs. No DPDK: `cargo test -p dataplane` runs anywhere; the
//! `appliance` crate ties it to DPDK ports, rings and lcores.
#![forbid(unsafe_code)]

pub mod l3;
pub mod lpm;
pub mod nat;
pub mod neigh;
pub mod objservice;
pub mod slowpath;
pub mod srv6;
pub mod stats;

#[cfg(test)]
mod l3_tests;
#[cfg(test)]
mod nat_tests;
#[cfg(test)]
mod slowpath_tests;
#[cfg(test)]
mod srv6_tests;
