//! The pure packet path of the appliance: everything a worker, the control
//! core and the NAT mapping core decide about a packet, on byte slices and
//! plain structs. No DPDK: `cargo test -p dataplane` runs anywhere; the
//! `appliance` crate ties it to DPDK ports, rings and lcores.
#![forbid(unsafe_code)]

pub mod fib;
pub mod nat;
pub mod pipeline;
pub mod slowpath;
pub mod srv6;
pub mod stats;
pub mod storage;

#[cfg(test)]
mod tests;
