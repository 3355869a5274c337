//! Storage wiring (`storage:` configured): one object store per worker, each
//! on its own device (opened now: formatting and journal replay happen
//! before any packet is received), objects sharded `id % workers`, and a
//! hand-over ring between every pair of workers.

use std::sync::Arc;

use anyhow::{Context, Result};

use dataplane::storage::service::{ObjectService, ServiceCounters};
use objstore::blk::{BlockDevice, RamDevice, UringDevice, UringOptions};
use objstore::{FormatOptions, Store, StoreConfig};

use crate::config::{Config, Storage, HANDOVER_RING_SIZE};
use crate::worker::StorageLink;

/// The storage parts of a running appliance (empty without `storage:`).
pub(super) struct Wiring {
    /// The devices, kept open until shutdown (after the services).
    devices: Vec<Box<dyn BlockDevice>>,
    /// One per worker, until the workers take them.
    links: Vec<Option<StorageLink>>,
    counters: Vec<Arc<ServiceCounters>>,
}

impl Wiring {
    pub fn open(cfg: &Config, eal: &Arc<rte::Eal>) -> Result<Wiring> {
        let mut w = Wiring { devices: Vec::new(), links: Vec::new(), counters: Vec::new() };
        let Some(st) = &cfg.storage else { return Ok(w) };
        let mut services = Vec::new();
        for (i, device) in st.devices.iter().enumerate() {
            let (dev, svc) = open_store(st, device, cfg.storage_service.udp_port)
                .with_context(|| format!("storage (worker {i}, device {device})"))?;
            w.devices.push(dev);
            w.counters.push(svc.counters.clone());
            services.push(svc);
        }
        let n = services.len();
        let mut out: Vec<Vec<Option<rte::RingProducer>>> = (0..n).map(|_| (0..n).map(|_| None).collect()).collect();
        let mut inbound: Vec<Vec<rte::RingConsumer>> = (0..n).map(|_| Vec::new()).collect();
        for (from, outs) in out.iter_mut().enumerate() {
            for to in (0..n).filter(|&t| t != from) {
                let (p, c) = rte::MbufRing::new(eal, &format!("apl_sto{from}_{to}"), HANDOVER_RING_SIZE)
                    .context("creating a storage hand-over ring")?;
                outs[to] = Some(p);
                inbound[to].push(c);
            }
        }
        w.links = services
            .into_iter()
            .zip(out.into_iter().zip(inbound))
            .enumerate()
            .map(|(index, (service, (out, inbound)))| Some(StorageLink { service, index, out, inbound }))
            .collect();
        Ok(w)
    }

    /// Worker `worker`'s service and rings, if it has a device.
    pub fn take(&mut self, worker: usize) -> Option<StorageLink> {
        self.links.get_mut(worker).and_then(Option::take)
    }

    /// The services' counter blocks, one per worker.
    pub fn counters(&self) -> Vec<Arc<ServiceCounters>> {
        self.counters.clone()
    }
}

impl Drop for Wiring {
    fn drop(&mut self) {
        // Services (and their stores) before the devices they write.
        self.links.clear();
        self.devices.clear();
    }
}

/// Opens (creating and formatting a new file or a blank device) one store.
/// The device is returned to be kept until shutdown.
fn open_store(st: &Storage, device: &str, udp_port: u16) -> Result<(Box<dyn BlockDevice>, ObjectService<rte::Mbuf>)> {
    let blocks = u64::from(st.size_mb) * 256;
    let (dev, blank): (Box<dyn BlockDevice>, bool) = if device == "ram" {
        (Box::new(RamDevice::new(blocks, 1)), true)
    } else {
        let path = std::path::Path::new(&device);
        if !path.exists() {
            UringDevice::create_file(path, blocks * 4096)
                .with_context(|| format!("storage.device: creating {device}"))?;
        }
        // Blank (never formatted): the first block is all zeros.
        let mut first = [0u8; 4096];
        let blank = std::fs::File::open(path)
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut first))
            .map(|()| first.iter().all(|&b| b == 0))
            .with_context(|| format!("storage.device: reading {device}"))?;
        let dev = UringDevice::open(path, UringOptions::default())
            .with_context(|| format!("storage.device: opening {device} (O_DIRECT, io_uring)"))?;
        (Box::new(dev), blank)
    };
    if blank {
        Store::format(&*dev, FormatOptions { max_objects: u64::from(st.objects_max), journal_blocks: 0 })
            .with_context(|| format!("formatting {device}"))?;
        tracing::info!(device = %device, size_mb = st.size_mb, "storage device formatted");
    }
    let store =
        Store::open(&*dev, StoreConfig { max_requests: st.requests_max.min(1024) as usize, checkpoint_depth: 8 })
            .with_context(|| format!("opening the object store on {device}"))?;
    tracing::info!(device = %dev.describe(), objects = store.index().len(), object_prefix = %st.object_prefix, "object store opened");
    let svc = ObjectService::new(store, udp_port, st.requests_max as usize, st.assemblies_max as usize);
    Ok((dev, svc))
}
