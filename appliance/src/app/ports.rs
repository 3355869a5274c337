//! Port start-up: every configured port is configured (one rx queue per
//! `queues`, one tx queue per worker, each rx queue filled from the mbuf
//! pool of its NUMA socket), its MTU and promiscuous mode set, started, and
//! described to the pipeline (MAC read back, addresses, the link-local
//! address derived from the MAC, whether its frames may carry partial
//! checksums).
//!
//! A device that refuses the configured MTU or promiscuous mode stops the
//! start-up with the field named. One exception: a device with no MTU
//! control at all (net_null, net_ring, memif: ENOTSUP) is accepted when the
//! MTU lies within the range it reports, since the pipeline enforces the MTU
//! on everything it sends.

use std::sync::Arc;

use anyhow::{Context, Result};

use dataplane::fib::{link_local_from_mac, PortInfo};

use super::pools::Pools;
use crate::config::{format_mac, Config, Port};

/// Starts the ports; returns them (by config index) and their descriptions.
pub(super) fn start(cfg: &Config, eal: &Arc<rte::Eal>, pools: &Pools) -> Result<(Vec<Arc<rte::Port>>, Vec<PortInfo>)> {
    let workers = cfg.lcores.workers.len();
    let mut ports = Vec::new();
    let mut infos = Vec::new();
    for (i, p) in cfg.ports.iter().enumerate() {
        let pc = rte::PortConfig {
            rx_queues: p.queues,
            tx_queues: workers as u16,
            rx_descriptors: p.rx_descriptors,
            tx_descriptors: p.tx_descriptors,
            mac: p.mac,
        };
        let device_socket = rte::device_socket(eal, &p.device)?;
        let rx_pools: Vec<rte::Mempool> = (0..p.queues)
            .map(|q| match device_socket {
                Some(s) => pools.on(s).clone(),
                None => pools.for_lcore(eal, cfg.lcores.workers[usize::from(q) % workers].lcore).clone(),
            })
            .collect();
        let port = rte::Port::configure(eal, &p.device, &pc, &rx_pools)
            .with_context(|| format!("ports[{i}] ({}, device {}){}", p.name, p.device, setup_hint(&p.device)))?;
        set_mtu_and_mode(&port, p, i)?;
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

/// Sets `ports[i].mtu` and `ports[i].promiscuous` on the device; a refusal
/// is an error naming the field.
fn set_mtu_and_mode(port: &rte::Port, p: &Port, i: usize) -> Result<()> {
    match port.set_mtu(p.mtu) {
        Ok(()) => {}
        Err(e) if e.is_not_supported() => {
            let (min, max) = port.mtu_range();
            if p.mtu < min || p.mtu > max {
                anyhow::bail!(
                    "ports[{i}].mtu: {} cannot change its MTU and accepts {min}..={max}, not {}",
                    p.device,
                    p.mtu
                );
            }
            tracing::info!(port = %p.name, mtu = p.mtu, "the device has no MTU control; the pipeline enforces the MTU");
        }
        Err(e) => {
            let (min, max) = port.mtu_range();
            return Err(e).with_context(|| {
                format!("ports[{i}].mtu: {} refuses an MTU of {} (it accepts {min}..={max})", p.device, p.mtu)
            });
        }
    }
    if p.promiscuous {
        port.set_promiscuous()
            .with_context(|| format!("ports[{i}].promiscuous: {} cannot enter promiscuous mode", p.device))?;
    }
    Ok(())
}

/// What to check when a device refuses its set-up, for the drivers whose
/// refusals say only "Invalid argument".
fn setup_hint(device: &str) -> &'static str {
    if device.starts_with("net_af_xdp") {
        " (af_xdp builds its umem from the mbuf pool: mempool.data_room_bytes must keep an mbuf within a \
         4 KiB page (the default does, 9216 does not), ports[].queues must not exceed the interface's channels (1 on a veth), and the \
         interface must be up with no other XDP program attached)"
    } else {
        ""
    }
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
