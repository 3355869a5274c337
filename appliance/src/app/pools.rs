//! Mbuf pools, one per NUMA socket in use (DPDK's rule: a queue's
//! buffers live in the memory of the socket its device and its polling
//! core sit on; a buffer read across the interconnect costs a remote
//! memory access per packet).
//!
//! The sockets in use are those of the main lcore, every worker lcore and
//! every port's device. Each gets a pool of `mempool.mbufs` buffers named
//! `apl_mbufs_s<socket>`. A port's rx queues fill from its device's
//! socket's pool (or, for devices that name no socket, such as virtual
//! devices, the pool of the lcore that polls it); a worker allocates from
//! its own lcore's socket; the control core from the main lcore's.
//!
//! On a single-socket machine this is one pool, as before.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{Context, Result};

use crate::config::Config;

/// The pools by NUMA socket.
pub(crate) struct Pools {
    by_socket: BTreeMap<u32, rte::Mempool>,
}

impl Pools {
    /// One pool per socket in use; the error names `mempool.mbufs` when a
    /// pool does not fit the memory EAL has.
    pub fn create(cfg: &Config, eal: &Arc<rte::Eal>) -> Result<Pools> {
        let mut sockets: Vec<u32> = vec![eal.lcore_socket(cfg.lcores.main.lcore)];
        sockets.extend(cfg.lcores.workers.iter().map(|w| eal.lcore_socket(w.lcore)));
        for (i, p) in cfg.ports.iter().enumerate() {
            let s = rte::device_socket(eal, &p.device).with_context(|| format!("ports[{i}] ({})", p.name))?;
            sockets.extend(s);
        }
        sockets.sort_unstable();
        sockets.dedup();
        let mut by_socket = BTreeMap::new();
        for s in sockets {
            let m = &cfg.mempool;
            let pool = rte::Mempool::new_pktmbuf_on(
                eal,
                &format!("apl_mbufs_s{s}"),
                m.mbufs,
                m.cache_size,
                m.data_room_bytes,
                s as i32,
            )
            .with_context(|| {
                format!(
                    "creating the mbuf pool of NUMA socket {s} (mempool.mbufs too large for eal.memory_mb? \
                     every socket in use gets mempool.mbufs buffers)"
                )
            })?;
            tracing::info!(socket = s, mbufs = m.mbufs, "mbuf pool created");
            by_socket.insert(s, pool);
        }
        Ok(Pools { by_socket })
    }

    /// The pool of socket `socket`, or the lowest socket's when that socket
    /// has none.
    pub fn on(&self, socket: u32) -> &rte::Mempool {
        self.by_socket.get(&socket).or_else(|| self.by_socket.values().next()).expect("at least one pool")
    }

    /// The pool for lcore `lcore`'s allocations.
    pub fn for_lcore(&self, eal: &rte::Eal, lcore: u32) -> &rte::Mempool {
        self.on(eal.lcore_socket(lcore))
    }

    /// (socket, pool) for the metrics.
    pub fn all(&self) -> Vec<(u32, rte::Mempool)> {
        self.by_socket.iter().map(|(s, p)| (*s, p.clone())).collect()
    }
}
