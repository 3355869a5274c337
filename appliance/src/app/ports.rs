//! Port start-up: every configured port is configured (one rx queue per
//! `queues`, one tx queue per worker), started, and described to the
//! pipeline (MAC read back, addresses, the link-local address derived from
//! the MAC, whether its frames may carry partial checksums).

use std::sync::Arc;

use anyhow::{Context, Result};

use dataplane::fib::{link_local_from_mac, PortInfo};

use crate::config::{format_mac, Config};

/// Starts the ports; returns them (by config index) and their descriptions.
pub(super) fn start(
    cfg: &Config,
    eal: &Arc<rte::Eal>,
    pool: &rte::Mempool,
) -> Result<(Vec<Arc<rte::Port>>, Vec<PortInfo>)> {
    let workers = cfg.lcores.workers.len();
    let mut ports = Vec::new();
    let mut infos = Vec::new();
    for (i, p) in cfg.ports.iter().enumerate() {
        let pc = rte::PortConfig {
            rx_queues: p.queues,
            tx_queues: workers as u16,
            rx_descriptors: p.rx_descriptors,
            tx_descriptors: p.tx_descriptors,
            mtu: Some(p.mtu),
            promiscuous: p.promiscuous,
            mac: p.mac,
        };
        let port = rte::Port::configure(eal, &p.device, &pc, pool)
            .with_context(|| format!("ports[{i}] ({}, device {})", p.name, p.device))?;
        port.start().with_context(|| format!("starting ports[{i}] ({})", p.name))?;
        let mac = port.mac();
        let mut ipv6: Vec<_> = p.ipv6.iter().map(|c| (c.addr, c.len)).collect();
        if p.ipv6_capable() {
            ipv6.push((link_local_from_mac(mac), 64));
        }
        let (up, speed) = port.link();
        tracing::info!(
            port = %p.name, device = %p.device, dpdk_port = port.id(),
            mac = %format_mac(&mac), link_up = up, speed_mbps = speed,
            partial_checksums = may_carry_partial_checksums(&p.device, p.is_pci),
            "port started"
        );
        infos.push(PortInfo {
            name: p.name.clone(),
            mac,
            mtu: p.mtu,
            ipv4: p.ipv4.iter().map(|c| (c.addr, c.len)).collect(),
            ipv6,
            partial_checksums: may_carry_partial_checksums(&p.device, p.is_pci),
        });
        ports.push(port);
    }
    Ok((ports, infos))
}

/// Whether TCP/UDP frames from `device` may carry partial checksums: a kernel or a VM
/// sends them through af_packet, af_xdp, tap, vhost and virtio_user (and any vdev not named
/// here); a NIC (PCI) never hands them over, nor do the software peers of memif, ring and
/// null. Input completes them only on ports where this holds (docs/architecture.md, "Kernel
/// hosts at their default settings").
fn may_carry_partial_checksums(device: &str, is_pci: bool) -> bool {
    !is_pci && !["net_memif", "net_ring", "net_null"].iter().any(|d| device.starts_with(d))
}

#[cfg(test)]
mod tests {
    use super::may_carry_partial_checksums;

    #[test]
    fn partial_checksums_by_driver() {
        for d in ["net_af_xdp0", "net_af_packet1", "net_tap0", "net_vhost0", "net_virtio_user0"] {
            assert!(may_carry_partial_checksums(d, false), "{d}");
        }
        for d in ["net_memif0", "net_ring0", "net_null1"] {
            assert!(!may_carry_partial_checksums(d, false), "{d}");
        }
        assert!(!may_carry_partial_checksums("0000:03:00.0", true));
    }
}
