//! DPDK's packet capture framework (`rte_pdump`) in the primary process.
//!
//! [`Pdump::init`] registers the primary's side of the capture protocol: a
//! secondary process (`dpdk-dumpcap`, `dpdk-pdump`) asks over EAL's
//! multi-process channel for a port and queue, and the primary installs rx
//! and tx callbacks on them that copy each packet into the secondary's
//! mempool and ring (both in shared hugepage memory). Until a secondary
//! asks, nothing is installed and the fast path pays nothing; while one
//! captures, the copies are made by the lcore that calls `rte_eth_rx_burst`
//! or `rte_eth_tx_burst` on that queue.
//!
//! A secondary maps the primary's hugepage files, so they must exist: EAL
//! must not run with `--huge-unlink` (see [`Eal::remove_hugepage_files_at_cleanup`]).

use std::sync::Arc;

use crate::{Eal, RteError};

/// The capture framework, initialised; `rte_pdump_uninit` runs on drop
/// (before EAL cleanup: it holds the `Arc<Eal>`).
#[derive(Debug)]
pub struct Pdump {
    _eal: Arc<Eal>,
}

impl Pdump {
    /// `rte_pdump_init`: secondaries may now enable capture on this process's
    /// ports. Call once, in the primary, after the ports exist (a request
    /// for a port that does not exist is refused to the secondary).
    pub fn init(eal: &Arc<Eal>) -> Result<Pdump, RteError> {
        // SAFETY: EAL is initialised (we hold it); rte_pdump_init registers an
        // IPC action and creates a memzone for its statistics, nothing else.
        let rc = unsafe { dpdk_sys::rte_pdump_init() };
        if rc < 0 {
            return Err(RteError::last("rte_pdump_init"));
        }
        Ok(Pdump { _eal: eal.clone() })
    }
}

impl Drop for Pdump {
    fn drop(&mut self) {
        // SAFETY: init succeeded; uninit unregisters the IPC action. Callbacks
        // a secondary left installed stay with their ports, which are
        // stopped before EAL cleanup.
        unsafe {
            dpdk_sys::rte_pdump_uninit();
        }
    }
}
