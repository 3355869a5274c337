//! The one thin safe layer over `dpdk-sys`.
//!
//! Everything the appliance needs from DPDK goes through here: EAL start and
//! cleanup ([`Eal`]), packet pools ([`Mempool`]), owned packet buffers
//! ([`Mbuf`], freed on drop, moved on transmit), fixed-size bursts ([`Burst`]),
//! ports and their queues ([`Port`], [`RxQueue`], [`TxQueue`]), single-producer
//! single-consumer rings of packets ([`MbufRing`]), lcore launch
//! ([`lcore::launch`]) and the packet capture framework ([`Pdump`]). Every
//! `unsafe` block that touches DPDK is in this crate and carries a
//! `// SAFETY:` line; crates above it forbid `unsafe`.
//! [`Mbuf`] and [`Mempool`] implement `netwire`'s `PacketBuf`/`PacketPool`,
//! so the pure pipeline (`dataplane`) runs on them unchanged.
//!
//! # Lifetimes
//! DPDK objects live in EAL memory. [`Eal`] is created once per process and
//! shared as an `Arc`; every pool, port and ring keeps that `Arc`, so
//! `rte_eal_cleanup` runs only after the last of them is dropped. An [`Mbuf`]
//! does not hold the `Arc` (that would cost an atomic per packet): it is valid
//! while its pool is, and pools are never freed before EAL cleanup, which
//! cannot happen while a queue or ring handle (through which every mbuf came)
//! is alive.
#![allow(unsafe_code)]

mod burst;
mod eal;
mod error;
pub mod lcore;
mod mbuf;
mod mempool;
mod netwire_impl;
mod pdump;
mod port;
mod ring;

pub use burst::{Burst, BURST_MAX};
pub use eal::Eal;
pub use error::RteError;
pub use mbuf::Mbuf;
pub use mempool::Mempool;
pub use pdump::Pdump;
pub use port::{device_socket, Port, PortConfig, PortStats, RxQueue, TxQueue};
pub use ring::{MbufRing, RingConsumer, RingProducer, RingStats};

/// CPU time-stamp counter (for idle accounting and timers on the fast path;
/// no system call).
pub fn tsc() -> u64 {
    // SAFETY: rte_rdtsc reads the TSC register; no memory is touched.
    unsafe { dpdk_sys::shim_rte_rdtsc() }
}

/// TSC ticks per second, measured by EAL at init.
pub fn tsc_hz() -> u64 {
    // SAFETY: reads a value EAL computed at init; callable from any thread.
    unsafe { dpdk_sys::shim_rte_get_tsc_hz() }
}

/// The DPDK version string, e.g. "DPDK 22.11.11".
pub fn version() -> String {
    // SAFETY: rte_version returns a pointer to a static NUL-terminated string.
    unsafe { std::ffi::CStr::from_ptr(dpdk_sys::rte_version()) }.to_string_lossy().into_owned()
}
