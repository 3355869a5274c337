use std::ffi::CString;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::{Burst, Eal, Mempool, RteError};

/// How to set up a port before [`Port::start`].
#[derive(Debug, Clone)]
pub struct PortConfig {
    pub rx_queues: u16,
    pub tx_queues: u16,
    pub rx_descriptors: u16,
    pub tx_descriptors: u16,
    /// Overrides the device's MAC address.
    pub mac: Option<[u8; 6]>,
}

/// Port-level counters kept by the driver (rte_eth_stats).
#[derive(Debug, Default, Clone, Copy)]
pub struct PortStats {
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    /// Packets the NIC dropped for lack of rx descriptors.
    pub rx_missed: u64,
    pub rx_errors: u64,
    pub tx_errors: u64,
    /// Receive failures for lack of mbufs.
    pub rx_nombuf: u64,
}

/// A configured, started DPDK port. Stopped and closed on drop. Each queue
/// handle can be taken once, so exactly one thread polls each queue.
pub struct Port {
    id: u16,
    name: String,
    taken_rx: AtomicU64,
    taken_tx: AtomicU64,
    _eal: Arc<Eal>,
    _pools: Vec<Mempool>,
}

/// The port id of a device by its DPDK name.
fn port_by_name(device: &str) -> Result<u16, RteError> {
    let cname = CString::new(device).map_err(|_| RteError::other("port", "NUL in device name"))?;
    let mut id: u16 = 0;
    // SAFETY: valid C string and out-pointer.
    let rc = unsafe { dpdk_sys::rte_eth_dev_get_port_by_name(cname.as_ptr(), &mut id) };
    if rc != 0 {
        return Err(RteError::other(
            "rte_eth_dev_get_port_by_name",
            format!(
                "no DPDK port named {device:?}: the device was not created. EAL's messages above say why \
                 (a vdev whose probe failed: an af_packet interface missing from this network namespace, \
                 a memif socket already in use; or a PCI device not bound to a DPDK driver)"
            ),
        ));
    }
    Ok(id)
}

/// The NUMA socket a device is attached to; `None` where the driver does not
/// say (virtual devices, single-socket machines).
pub fn device_socket(_eal: &Arc<Eal>, device: &str) -> Result<Option<u32>, RteError> {
    let id = port_by_name(device)?;
    // SAFETY: valid port id.
    let socket = unsafe { dpdk_sys::rte_eth_dev_socket_id(id) };
    Ok(u32::try_from(socket).ok())
}

impl Port {
    /// Looks up a device by its DPDK name (vdev name such as `net_af_packet0`,
    /// or PCI address) and configures it: queues, descriptors, MAC. The
    /// MTU and promiscuous mode are set by [`set_mtu`](Self::set_mtu) and
    /// [`set_promiscuous`](Self::set_promiscuous), whose failures the caller
    /// judges.
    ///
    /// `rx_pools[q]` fills rx queue `q` (one per queue, so each queue can
    /// draw from the pool of its NUMA socket).
    pub fn configure(
        eal: &Arc<Eal>,
        device: &str,
        cfg: &PortConfig,
        rx_pools: &[Mempool],
    ) -> Result<Arc<Port>, RteError> {
        let id = port_by_name(device)?;
        if rx_pools.len() != usize::from(cfg.rx_queues) {
            return Err(RteError::other("rte_eth_rx_queue_setup", "one mbuf pool per rx queue"));
        }
        if cfg.rx_queues == 0 || cfg.tx_queues == 0 || cfg.rx_queues > 64 || cfg.tx_queues > 64 {
            return Err(RteError::other("rte_eth_dev_configure", "queues must be 1..=64"));
        }
        let mut info = dpdk_sys::rte_eth_dev_info::default();
        // SAFETY: id is a valid port; info is a valid out-pointer.
        let rc = unsafe { dpdk_sys::rte_eth_dev_info_get(id, &mut info) };
        if rc != 0 {
            return Err(RteError::from_errno("rte_eth_dev_info_get", rc));
        }
        if cfg.rx_queues > info.max_rx_queues || cfg.tx_queues > info.max_tx_queues {
            return Err(RteError::other(
                "rte_eth_dev_configure",
                format!(
                    "{device}: asked for {} rx / {} tx queues, device allows {} / {} (af_packet: set qpairs)",
                    cfg.rx_queues, cfg.tx_queues, info.max_rx_queues, info.max_tx_queues
                ),
            ));
        }
        let mut conf = dpdk_sys::rte_eth_conf::default();
        if cfg.rx_queues > 1 && info.flow_type_rss_offloads != 0 {
            conf.rxmode.mq_mode = dpdk_sys::RTE_ETH_MQ_RX_RSS;
            conf.rx_adv_conf.rss_conf.rss_hf =
                (dpdk_sys::RTE_ETH_RSS_IP | dpdk_sys::RTE_ETH_RSS_TCP | dpdk_sys::RTE_ETH_RSS_UDP) as u64
                    & info.flow_type_rss_offloads;
        }
        // SAFETY: valid port id and a fully initialised conf.
        let rc = unsafe { dpdk_sys::rte_eth_dev_configure(id, cfg.rx_queues, cfg.tx_queues, &conf) };
        if rc != 0 {
            return Err(RteError::from_errno("rte_eth_dev_configure", rc));
        }
        let (mut nb_rx, mut nb_tx) = (cfg.rx_descriptors, cfg.tx_descriptors);
        // SAFETY: valid port id and out-pointers.
        let rc = unsafe { dpdk_sys::rte_eth_dev_adjust_nb_rx_tx_desc(id, &mut nb_rx, &mut nb_tx) };
        if rc != 0 {
            return Err(RteError::from_errno("rte_eth_dev_adjust_nb_rx_tx_desc", rc));
        }
        // SAFETY: valid port id.
        let socket = unsafe { dpdk_sys::rte_eth_dev_socket_id(id) };
        let socket = if socket < 0 { 0 } else { socket as u32 };
        for (q, pool) in (0..cfg.rx_queues).zip(rx_pools) {
            // SAFETY: port configured with rx_queues queues; pool is a live
            // pktmbuf pool; NULL rxconf selects the driver default.
            let rc = unsafe { dpdk_sys::rte_eth_rx_queue_setup(id, q, nb_rx, socket, std::ptr::null(), pool.as_ptr()) };
            if rc != 0 {
                return Err(RteError::from_errno("rte_eth_rx_queue_setup", rc));
            }
        }
        for q in 0..cfg.tx_queues {
            // SAFETY: as above; NULL txconf selects the driver default.
            let rc = unsafe { dpdk_sys::rte_eth_tx_queue_setup(id, q, nb_tx, socket, std::ptr::null()) };
            if rc != 0 {
                return Err(RteError::from_errno("rte_eth_tx_queue_setup", rc));
            }
        }
        if let Some(mac) = cfg.mac {
            let mut addr = dpdk_sys::rte_ether_addr { addr_bytes: mac };
            // SAFETY: valid port and address.
            let rc = unsafe { dpdk_sys::rte_eth_dev_default_mac_addr_set(id, &mut addr) };
            if rc != 0 {
                return Err(RteError::from_errno("rte_eth_dev_default_mac_addr_set", rc));
            }
        }
        Ok(Arc::new(Port {
            id,
            name: device.to_owned(),
            taken_rx: AtomicU64::new(0),
            taken_tx: AtomicU64::new(0),
            _eal: eal.clone(),
            _pools: rx_pools.to_vec(),
        }))
    }

    /// Sets the MTU (rte_eth_dev_set_mtu). An error whose
    /// [`RteError::is_not_supported`] is true means the device has no MTU
    /// control at all (net_null, net_ring, memif): see [`mtu_range`](Self::mtu_range).
    pub fn set_mtu(&self, mtu: u16) -> Result<(), RteError> {
        // SAFETY: valid, configured port.
        let rc = unsafe { dpdk_sys::rte_eth_dev_set_mtu(self.id, mtu) };
        if rc != 0 {
            return Err(RteError::from_errno("rte_eth_dev_set_mtu", rc));
        }
        Ok(())
    }

    /// The MTUs the device accepts (min, max), from rte_eth_dev_info: its
    /// `max_mtu`, lowered to what its `max_rx_pktlen` allows (ethdev checks
    /// both; af_packet, for one, reports a 65535 MTU but 1518-byte frames).
    pub fn mtu_range(&self) -> (u16, u16) {
        let mut info = dpdk_sys::rte_eth_dev_info::default();
        // SAFETY: valid port and out-pointer.
        let rc = unsafe { dpdk_sys::rte_eth_dev_info_get(self.id, &mut info) };
        if rc != 0 {
            return (0, u16::MAX);
        }
        // ethdev's frame overhead: what max_rx_pktlen exceeds max_mtu by, or
        // Ethernet header and CRC when the driver does not say.
        let overhead = if info.max_mtu != u16::MAX && info.max_rx_pktlen > u32::from(info.max_mtu) {
            info.max_rx_pktlen - u32::from(info.max_mtu)
        } else {
            18
        };
        let by_frame = u16::try_from(info.max_rx_pktlen.saturating_sub(overhead)).unwrap_or(u16::MAX);
        (info.min_mtu, info.max_mtu.min(by_frame))
    }

    /// Enables promiscuous mode (rte_eth_promiscuous_enable).
    pub fn set_promiscuous(&self) -> Result<(), RteError> {
        // SAFETY: valid, configured port.
        let rc = unsafe { dpdk_sys::rte_eth_promiscuous_enable(self.id) };
        if rc != 0 {
            return Err(RteError::from_errno("rte_eth_promiscuous_enable", rc));
        }
        Ok(())
    }

    /// Starts the port (rx/tx begin).
    pub fn start(&self) -> Result<(), RteError> {
        // SAFETY: configured port.
        let rc = unsafe { dpdk_sys::rte_eth_dev_start(self.id) };
        if rc != 0 {
            return Err(RteError::from_errno("rte_eth_dev_start", rc));
        }
        Ok(())
    }

    pub fn id(&self) -> u16 {
        self.id
    }

    pub fn device_name(&self) -> &str {
        &self.name
    }

    /// The port's MAC address.
    pub fn mac(&self) -> [u8; 6] {
        let mut addr = dpdk_sys::rte_ether_addr::default();
        // SAFETY: valid port and out-pointer.
        unsafe { dpdk_sys::rte_eth_macaddr_get(self.id, &mut addr) };
        addr.addr_bytes
    }

    /// Link state without waiting: (up, speed in Mbit/s).
    pub fn link(&self) -> (bool, u32) {
        let mut link = dpdk_sys::rte_eth_link::default();
        // SAFETY: valid port and out-pointer.
        unsafe { dpdk_sys::rte_eth_link_get_nowait(self.id, &mut link) };
        (link.link_status() != 0, link.link_speed)
    }

    /// The driver's counters (readable from any thread).
    pub fn stats(&self) -> PortStats {
        let mut s = dpdk_sys::rte_eth_stats::default();
        // SAFETY: valid port and out-pointer.
        unsafe { dpdk_sys::rte_eth_stats_get(self.id, &mut s) };
        PortStats {
            rx_packets: s.ipackets,
            tx_packets: s.opackets,
            rx_bytes: s.ibytes,
            tx_bytes: s.obytes,
            rx_missed: s.imissed,
            rx_errors: s.ierrors,
            tx_errors: s.oerrors,
            rx_nombuf: s.rx_nombuf,
        }
    }

    /// Takes the handle of rx queue `q` (once).
    pub fn rx_queue(self: &Arc<Self>, q: u16) -> Result<RxQueue, RteError> {
        take_bit(&self.taken_rx, q, "rx_queue")?;
        Ok(RxQueue { port: self.clone(), port_id: self.id, queue: q })
    }

    /// Takes the handle of tx queue `q` (once).
    pub fn tx_queue(self: &Arc<Self>, q: u16) -> Result<TxQueue, RteError> {
        take_bit(&self.taken_tx, q, "tx_queue")?;
        Ok(TxQueue { port: self.clone(), port_id: self.id, queue: q })
    }
}

fn take_bit(bits: &AtomicU64, q: u16, op: &'static str) -> Result<(), RteError> {
    if q >= 64 {
        return Err(RteError::other(op, "queue index out of range"));
    }
    let old = bits.fetch_or(1 << q, Ordering::SeqCst);
    if old & (1 << q) != 0 {
        return Err(RteError::other(op, format!("queue {q} already taken")));
    }
    Ok(())
}

impl Drop for Port {
    fn drop(&mut self) {
        // SAFETY: no queue handle is left (each holds an Arc<Port>), so no
        // thread polls the port any more.
        unsafe {
            dpdk_sys::rte_eth_dev_stop(self.id);
            dpdk_sys::rte_eth_dev_close(self.id);
        }
    }
}

/// The receive side of one queue, owned by one thread.
pub struct RxQueue {
    port: Arc<Port>,
    port_id: u16,
    queue: u16,
}

impl RxQueue {
    /// Receives up to a burst of packets into an empty `burst`; returns the
    /// count.
    #[inline]
    pub fn rx_burst(&mut self, burst: &mut Burst, max: usize) -> usize {
        let (ptr, cap) = burst.fill_ptr();
        let want = max.min(cap) as u16;
        // SAFETY: this handle is the only poller of (port, queue); ptr has
        // room for `want` pointers; the PMD stores owned mbufs there.
        let n = unsafe { dpdk_sys::shim_rte_eth_rx_burst(self.port_id, self.queue, ptr, want) } as usize;
        burst.set_filled(n);
        n
    }

    pub fn port_id(&self) -> u16 {
        self.port_id
    }

    pub fn queue_id(&self) -> u16 {
        self.queue
    }

    pub fn port(&self) -> &Arc<Port> {
        &self.port
    }
}

/// The transmit side of one queue, owned by one thread.
pub struct TxQueue {
    port: Arc<Port>,
    port_id: u16,
    queue: u16,
}

impl TxQueue {
    /// Transmits what the driver takes from `burst`; what it does not take
    /// stays in `burst` (the caller retries or frees it and counts the drop).
    /// Returns the number sent.
    #[inline]
    pub fn tx_burst(&mut self, burst: &mut Burst) -> usize {
        let ptrs = burst.as_ptrs();
        let len = ptrs.len() as u16;
        if len == 0 {
            return 0;
        }
        // SAFETY: the only user of (port, queue); the pointers are owned mbufs
        // whose ownership passes to the driver for the first `n`.
        let n = unsafe { dpdk_sys::shim_rte_eth_tx_burst(self.port_id, self.queue, ptrs.as_mut_ptr(), len) } as usize;
        burst.consumed(n);
        n
    }

    pub fn port_id(&self) -> u16 {
        self.port_id
    }

    pub fn queue_id(&self) -> u16 {
        self.queue
    }

    pub fn port(&self) -> &Arc<Port> {
        &self.port
    }
}
