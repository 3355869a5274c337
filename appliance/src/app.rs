//! Start-up and shutdown of `appliance run`.
//!
//! Order: config (already validated) → EAL → mempool → ports (configured and
//! started; MACs read back) → neighbour table, L3 tables, slow path → rings
//! (a punt and an inject ring per worker) → metrics server → workers launched
//! on their lcores → control loop on the main lcore until SIGINT/SIGTERM →
//! workers joined → final counters → everything dropped (ports stopped and
//! closed, EAL cleaned up, hugepage files removed).

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context, Result};

use crate::config::{Config, EncapMode, IpCidr, SidBehavior};
use crate::control::Control;
use dataplane::l3::{link_local_from_mac, PortInfo, RouteSpec, WorkerState, L3};
use dataplane::srv6::{Behavior, PolicySpec, Responder, SidSpec, Srv6Config, StoragePolicy};
use crate::metrics::MetricsSource;
use dataplane::nat::cache::FlowCache;
use dataplane::nat::fast::{cache_timing, NatPlan, NatWorker, Role};
use dataplane::nat::mapper::{Mapper, NatStats};
use crate::natcore::{EventOut, MapperCore, NatClock};
use crate::worker::NatLink;
use dataplane::neigh::NeighborTable;
use dataplane::slowpath::{SlowPath, SlowPathConfig};
use dataplane::stats::ControlCounters;
use crate::worker::{QueueCounters, RxBinding, Worker, WorkerCounters};

/// Runs the appliance until `stop` is set (by a signal). Returns after a
/// clean shutdown.
pub fn run(cfg: &Config, stop: Arc<AtomicBool>) -> Result<()> {
    let args = cfg.eal_args("appliance");
    tracing::info!(dpdk = %rte::version(), eal_args = ?args, "starting EAL");
    let eal = rte::Eal::init(&args).context("starting DPDK EAL (are hugepages reserved? run scripts/setup.sh)")?;

    let pool = rte::Mempool::new_pktmbuf(
        &eal,
        "apl_mbufs",
        cfg.mempool.mbufs,
        cfg.mempool.cache_size,
        cfg.mempool.data_room_bytes,
    )
    .context("creating the mbuf pool (mempool.mbufs too large for eal.memory_mb?)")?;

    let workers_n = cfg.lcores.workers.len();
    let mut ports = Vec::new();
    let mut infos = Vec::new();
    for (i, p) in cfg.ports.iter().enumerate() {
        let pc = rte::PortConfig {
            rx_queues: p.queues,
            tx_queues: workers_n as u16,
            rx_descriptors: p.rx_descriptors,
            tx_descriptors: p.tx_descriptors,
            mtu: Some(p.mtu),
            promiscuous: p.promiscuous,
            mac: p.mac,
        };
        let port = rte::Port::configure(&eal, &p.device, &pc, &pool)
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
            mac = %crate::config::format_mac(&mac), link_up = up, speed_mbps = speed,
            "port started"
        );
        infos.push(PortInfo {
            name: p.name.clone(),
            mac,
            mtu: p.mtu,
            ipv4: p.ipv4.iter().map(|c| (c.addr, c.len)).collect(),
            ipv6,
        });
        ports.push(port);
    }

    let (neigh, writer) = NeighborTable::new(cfg.neighbor.entries_max as usize);
    let routes: Vec<RouteSpec> = cfg
        .routes
        .iter()
        .map(|r| {
            let (prefix, len) = match r.prefix {
                IpCidr::V4(c) => (IpAddr::V4(c.addr), c.len),
                IpCidr::V6(c) => (IpAddr::V6(c.addr), c.len),
            };
            RouteSpec { prefix, len, port: r.port as u16, via: r.via }
        })
        .collect();
    let nat_plan = cfg.nat.as_ref().map(|n| NatPlan {
        roles: (0..cfg.ports.len())
            .map(|i| {
                if n.inside.contains(&i) {
                    Role::Inside
                } else if n.outside.contains(&i) {
                    Role::Outside
                } else {
                    Role::Neither
                }
            })
            .collect(),
        pool: n.table.pool.clone(),
    });
    let objects = cfg.storage.as_ref().map(|st| (st.object_prefix.addr, cfg.storage_service.udp_port));
    let l3 = Arc::new(
        L3::build(infos, &routes, &srv6_config(cfg), nat_plan, objects, neigh.clone())
            .context("building the route tables")?,
    );
    // The storage service's device and store (opened now: formatting and
    // journal replay happen before any packet is received).
    // One store per worker, each on its own device; objects sharded id % workers.
    let mut storage_devices = Vec::new();
    let mut storage_services = Vec::new();
    if let Some(st) = &cfg.storage {
        for (w, device) in st.devices.iter().enumerate() {
            let (dev, svc) = open_storage(st, device, cfg.storage_service.udp_port)
                .with_context(|| format!("storage (worker {w}, device {device})"))?;
            storage_devices.push(dev);
            storage_services.push(Some(svc));
        }
    }
    let storage_counters: Vec<_> = storage_services.iter().flatten().map(|s| s.counters.clone()).collect();
    // Hand-over rings between workers (storage requests for another worker's objects).
    let n_storage = storage_services.len();
    let mut storage_out: Vec<Vec<Option<rte::RingProducer>>> = (0..n_storage).map(|_| (0..n_storage).map(|_| None).collect()).collect();
    let mut storage_in: Vec<Vec<rte::RingConsumer>> = (0..n_storage).map(|_| Vec::new()).collect();
    for (from, outs) in storage_out.iter_mut().enumerate() {
        for to in (0..n_storage).filter(|&t| t != from) {
            let (p, c) = rte::MbufRing::new(&eal, &format!("apl_sto{from}_{to}"), 1024)
                .context("creating a storage hand-over ring")?;
            outs[to] = Some(p);
            storage_in[to].push(c);
        }
    }
    let mut storage_out = storage_out.into_iter();
    let mut storage_in = storage_in.into_iter();

    let control_counters = Arc::new(ControlCounters::default());
    let slow_cfg = SlowPathConfig {
        pending_packets_max: cfg.neighbor.pending_packets_max as usize,
        pending_per_neighbor_max: cfg.neighbor.pending_per_neighbor_max as usize,
        resolve_retries: cfg.neighbor.resolve_retries,
        resolve_interval_ms: u64::from(cfg.neighbor.resolve_interval_ms),
        reachable_ms: u64::from(cfg.neighbor.reachable_ms),
        icmp_errors_per_s: cfg.icmp.errors_per_s,
        icmp_errors_burst: cfg.icmp.errors_burst,
    };
    let mut slow = SlowPath::with_state(
        l3.clone(),
        writer,
        slow_cfg,
        control_counters.clone(),
        WorkerState::new(&l3, Box::new(responder_from(cfg))),
    );
    for (i, n) in cfg.neighbors.iter().enumerate() {
        slow.add_static(n.port as u16, n.ip, n.mac).with_context(|| format!("neighbors[{i}]"))?;
    }

    // NAT: the mapping server's tables (allocated now, at start), its event
    // log writer, and a request/answer ring pair per worker.
    let clock = NatClock::start();
    let mut nat_core = None;
    let mut nat_links = Vec::new();
    let mut nat_stats = None;
    let mut nat_query = None;
    let mut nat_logger = None;
    if let Some(n) = &cfg.nat {
        let mut table_cfg = n.table.clone();
        if !n.seeded {
            let (a, b) = os_seeds();
            table_cfg.random_seed = a;
            table_cfg.hash_seed = b;
        }
        let stats = Arc::new(NatStats::default());
        let (event_tx, event_rx) = std::sync::mpsc::sync_channel(crate::natcore::EVENT_QUEUE);
        nat_logger = Some(crate::natcore::spawn_event_logger(event_rx, clock).context("starting the NAT log writer")?);
        let mapper = Mapper::new(&table_cfg, EventOut { tx: event_tx, stats: stats.clone() }, stats.clone());
        tracing::info!(
            pool_addresses = table_cfg.pool.len(),
            ports_per_block = table_cfg.ports_per_block,
            sessions_max = table_cfg.sessions_max,
            table_bytes = mapper.table().memory_bytes(),
            "NAT mapping server tables allocated"
        );
        let (query_tx, query_rx) = std::sync::mpsc::channel();
        let mut requests = Vec::new();
        let mut answers = Vec::new();
        for w in 0..workers_n {
            let (req_p, req_c) = rte::MbufRing::new(&eal, &format!("apl_natreq{w}"), n.ring_size)
                .context("creating a NAT request ring")?;
            let (ans_p, ans_c) = rte::MbufRing::new(&eal, &format!("apl_natans{w}"), n.ring_size)
                .context("creating a NAT answer ring")?;
            nat_links.push(NatLink { requests: req_p, answers: ans_c, pool: pool.clone(), clock });
            requests.push(req_c);
            answers.push(ans_p);
        }
        nat_core = Some(MapperCore {
            mapper,
            requests,
            answers,
            queries: query_rx,
            stop: stop.clone(),
            idle: crate::config::IdleBackoff { enabled: n.mapper_idle_backoff, ..cfg.pipeline.idle_backoff },
            clock,
        });
        nat_stats = Some(stats);
        nat_query = Some(query_tx);
    }
    let mut nat_links = nat_links.into_iter();

    let mut punt_rx = Vec::new();
    let mut inject_tx = Vec::new();
    let mut rings = Vec::new();
    let mut worker_parts = Vec::new();
    for w in 0..workers_n {
        let (punt_p, punt_c) = rte::MbufRing::new(&eal, &format!("apl_punt{w}"), cfg.pipeline.punt_ring_size)
            .context("creating a punt ring")?;
        let (inj_p, inj_c) = rte::MbufRing::new(&eal, &format!("apl_inject{w}"), cfg.pipeline.inject_ring_size)
            .context("creating an inject ring")?;
        rings.push((format!("punt{w}"), punt_p.ring().clone()));
        rings.push((format!("inject{w}"), inj_p.ring().clone()));
        if let Some(core) = &nat_core {
            rings.push((format!("nat_request{w}"), core.requests[w].ring().clone()));
            rings.push((format!("nat_answer{w}"), core.answers[w].ring().clone()));
        }
        punt_rx.push(punt_c);
        inject_tx.push(inj_p);
        worker_parts.push((punt_p, inj_c));
    }

    // Each worker: the rx queues q of every port with q % workers == w, and
    // tx queue w of every port.
    let mut workers = Vec::new();
    let mut worker_counters = Vec::new();
    let mut sid_counters = Vec::new();
    let mut nat_worker_counters = Vec::new();
    for (w, (punt, inject)) in worker_parts.into_iter().enumerate() {
        let mut rx = Vec::new();
        let mut rxc = Vec::new();
        for (pi, p) in cfg.ports.iter().enumerate() {
            for q in (0..p.queues).filter(|q| usize::from(*q) % workers_n == w) {
                rx.push(RxBinding { port: pi as u16, queue: ports[pi].rx_queue(q)? });
                rxc.push(QueueCounters { port: pi as u16, queue: q, ..Default::default() });
            }
        }
        let mut tx = Vec::new();
        let mut txc = Vec::new();
        for (pi, port) in ports.iter().enumerate() {
            tx.push(port.tx_queue(w as u16)?);
            txc.push(QueueCounters { port: pi as u16, queue: w as u16, ..Default::default() });
        }
        // Steering decides on the object service's real queue depth when it exists.
        let service: Box<dyn dataplane::srv6::LocalService> = match storage_services.get(w).and_then(Option::as_ref) {
            Some(svc) => Box::new(dataplane::objservice::LoadView { load: svc.load(), responder: responder_from(cfg) }),
            None => Box::new(responder_from(cfg)),
        };
        let mut state = WorkerState::new(&l3, service);
        sid_counters.push(state.sid_counters.clone());
        if let Some(n) = &cfg.nat {
            let t = &n.table;
            let min_timeout = t.udp_timeout_ms.min(t.icmp_timeout_ms).min(t.tcp_transitory_timeout_ms);
            let (idle_ms, report_ms) = cache_timing(min_timeout);
            let cache = FlowCache::new(n.worker_cache_entries as usize, idle_ms, report_ms, os_seeds().0 ^ w as u64);
            let nw = NatWorker::new(cache);
            nat_worker_counters.push(nw.counters.clone());
            state.nat = Some(Box::new(nw));
        }
        let counters = Arc::new(WorkerCounters {
            lcore: cfg.lcores.workers[w].lcore,
            rx: rxc,
            tx: txc,
            ..Default::default()
        });
        worker_counters.push(counters.clone());
        workers.push(Worker {
            l3: l3.clone(),
            rx,
            tx,
            punt,
            inject,
            counters,
            stop: stop.clone(),
            burst_size: usize::from(cfg.pipeline.burst_size),
            idle: cfg.pipeline.idle_backoff,
            state,
            nat: nat_links.next(),
            storage: storage_services.get_mut(w).and_then(Option::take),
            storage_index: w,
            storage_out: storage_out.next().unwrap_or_default(),
            storage_in: storage_in.next().unwrap_or_default(),
        });
    }

    let source = Arc::new(MetricsSource {
        port_names: cfg.ports.iter().map(|p| p.name.clone()).collect(),
        ports: ports.clone(),
        workers: worker_counters,
        control: control_counters.clone(),
        neigh: neigh.clone(),
        pool: pool.clone(),
        rings,
        tsc_hz: rte::tsc_hz(),
        l3: l3.clone(),
        sid_counters,
        nat: nat_stats.clone(),
        nat_workers: nat_worker_counters,
        nat_query: nat_query.map(std::sync::Mutex::new),
        nat_clock: clock,
        storage: storage_counters,
    });
    let metrics_stop = Arc::new(AtomicBool::new(false));
    let metrics_thread = match cfg.metrics.listen {
        Some(addr) => Some(
            crate::metrics::serve(addr, source.clone(), metrics_stop.clone())
                .with_context(|| format!("metrics.listen: cannot listen on {addr}"))?,
        ),
        None => None,
    };

    let mut handles = Vec::new();
    for (w, worker) in workers.into_iter().enumerate() {
        let lcore = cfg.lcores.workers[w].lcore;
        match rte::lcore::launch(lcore, move || worker.run()) {
            Ok(h) => handles.push(h),
            Err(e) => {
                stop.store(true, Ordering::SeqCst);
                bail!("launching worker {w} on lcore {lcore}: {e}");
            }
        }
    }
    if let Some(core) = nat_core.take() {
        let lcore = cfg.lcores.mapper.map_or(0, |l| l.lcore);
        match rte::lcore::launch(lcore, move || core.run()) {
            Ok(h) => handles.push(h),
            Err(e) => {
                stop.store(true, Ordering::SeqCst);
                bail!("launching the NAT mapping server on lcore {lcore}: {e}");
            }
        }
    }
    tracing::info!(
        workers = workers_n,
        metrics = ?cfg.metrics.listen,
        "appliance running; SIGINT/SIGTERM stops it"
    );

    let mut control = Control {
        slow,
        punt: punt_rx,
        inject: inject_tx,
        pool: pool.clone(),
        counters: control_counters,
        stop: stop.clone(),
    };
    control.run();

    tracing::info!("stopping: waiting for workers");
    for h in handles {
        let rc = h.wait();
        if rc != 0 {
            tracing::error!(rc, "a worker returned an error");
        }
    }
    if let Some(t) = nat_logger {
        // The mapping core's sink (the sender) went with it: the writer
        // drains what is queued and ends.
        let _ = t.join();
    }
    metrics_stop.store(true, Ordering::SeqCst);
    if let Some(t) = metrics_thread {
        let _ = t.join();
    }
    let summary = source.summary();
    println!("final counters:\n{summary}");
    tracing::info!("final counters:\n{summary}");
    drop(control);
    drop(source);
    drop(storage_devices);
    drop(ports);
    drop(pool);
    drop(eal);
    tracing::info!("stopped cleanly");
    Ok(())
}

/// The SRv6 part of the config, as the pipeline takes it.
pub fn srv6_config(cfg: &Config) -> Srv6Config {
    let sids = cfg
        .srv6
        .local_sids
        .iter()
        .map(|s| SidSpec {
            sid: s.sid,
            behavior: match s.behavior {
                SidBehavior::End => Behavior::End,
                SidBehavior::EndX => Behavior::EndX,
                SidBehavior::EndDt6 => Behavior::EndDt6,
                SidBehavior::EndDx6 => Behavior::EndDx6,
                SidBehavior::Storage => Behavior::Storage,
            },
            psp: s.flavors.psp,
            usd: s.flavors.usd,
            adjacency: match (s.port, s.next_hop) {
                (Some(p), Some(nh)) => Some((p as u16, nh)),
                _ => None,
            },
            policy: s.policy.map(|p| match p {
                crate::config::StoragePolicy::Always => StoragePolicy::Always,
                crate::config::StoragePolicy::NeverButLast => StoragePolicy::NeverButLast,
                crate::config::StoragePolicy::SrC => StoragePolicy::SrC { threshold: s.threshold.unwrap_or(1) },
                crate::config::StoragePolicy::HoldsObject => StoragePolicy::HoldsObject,
            }),
        })
        .collect();
    let policies = cfg
        .srv6
        .steering
        .iter()
        .map(|p| {
            let (prefix, len) = match p.prefix {
                IpCidr::V4(c) => (IpAddr::V4(c.addr), c.len),
                IpCidr::V6(c) => (IpAddr::V6(c.addr), c.len),
            };
            PolicySpec {
                prefix,
                len,
                reduced: p.mode == EncapMode::EncapsRed,
                segments: p.segments.clone(),
                source: p.source,
            }
        })
        .collect();
    Srv6Config {
        sids,
        policies,
        trusted_ports: cfg.srv6.trusted_ports.as_ref().map(|v| v.iter().map(|p| *p as u16).collect()),
        encap_source: cfg.srv6.encap_source,
    }
}

/// The built-in storage responder as configured (`storage_service:`).
fn responder_from(cfg: &Config) -> Responder {
    let mut objects = cfg.storage_service.objects.clone();
    objects.sort_unstable();
    Responder { udp_port: cfg.storage_service.udp_port, queue_depth: cfg.storage_service.queue_depth, objects }
}

/// Two 64-bit seeds from the OS (port randomisation, table hashes), so a
/// remote sender cannot predict ports or bucket collisions.
fn os_seeds() -> (u64, u64) {
    use std::hash::{BuildHasher, Hasher};
    // RandomState is keyed from the OS's random source once per process
    // and per instance thereafter.
    let mut a = std::collections::hash_map::RandomState::new().build_hasher();
    a.write_u64(1);
    let mut b = std::collections::hash_map::RandomState::new().build_hasher();
    b.write_u64(2);
    (a.finish(), b.finish())
}

/// Opens (creating and formatting a new file or a blank device) the storage
/// service's store. The device is returned to be kept until shutdown.
fn open_storage(
    st: &crate::config::Storage,
    device: &str,
    udp_port: u16,
) -> Result<(Box<dyn objstore::blk::BlockDevice>, dataplane::objservice::ObjectService<rte::Mbuf>)> {
    use objstore::blk::{BlockDevice, RamDevice, UringDevice, UringOptions};
    use objstore::{FormatOptions, Store, StoreConfig};
    let blocks = u64::from(st.size_mb) * 256;
    let (dev, blank): (Box<dyn BlockDevice>, bool) = if device == "ram" {
        (Box::new(RamDevice::new(blocks, 1)), true)
    } else {
        let path = std::path::Path::new(&device);
        if !path.exists() {
            UringDevice::create_file(path, blocks * 4096)
                .with_context(|| format!("storage.device: creating {}", device))?;
        }
        // Blank (never formatted): the first block is all zeros.
        let mut first = [0u8; 4096];
        let blank = std::fs::File::open(path)
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut first))
            .map(|()| first.iter().all(|&b| b == 0))
            .with_context(|| format!("storage.device: reading {}", device))?;
        let dev = UringDevice::open(path, UringOptions::default())
            .with_context(|| format!("storage.device: opening {} (O_DIRECT, io_uring)", device))?;
        (Box::new(dev), blank)
    };
    if blank {
        Store::format(&*dev, FormatOptions { max_objects: u64::from(st.objects_max), journal_blocks: 0 })
            .with_context(|| format!("formatting {}", device))?;
        tracing::info!(device = %device, size_mb = st.size_mb, "storage device formatted");
    }
    let store = Store::open(&*dev, StoreConfig { max_requests: st.requests_max.min(1024) as usize, checkpoint_depth: 8 })
        .with_context(|| format!("opening the object store on {}", device))?;
    tracing::info!(
        device = %dev.describe(),
        objects = store.index().len(),
        object_prefix = %st.object_prefix,
        "object store opened"
    );
    let svc = dataplane::objservice::ObjectService::new(store, udp_port, st.requests_max as usize, st.assemblies_max as usize);
    Ok((dev, svc))
}
