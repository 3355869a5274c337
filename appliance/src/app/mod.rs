//! Start-up and shutdown of `appliance run`.
//!
//! Order: config (already validated) → EAL → mempool → ports (configured and
//! started; MACs read back) → neighbour table and pipeline tables → storage
//! (devices opened, formatted, journals replayed; hand-over rings) → NAT
//! (mapping server tables, log writer, request/answer rings) → the control
//! core's punt and inject rings → workers → metrics server → lcores
//! launched → control loop on the main lcore until SIGINT/SIGTERM →
//! workers joined → final counters → everything dropped (ports stopped and
//! closed, EAL cleaned up, hugepage files removed).
//!
//! Each feature's wiring is its own module: [`ports`], [`nat`], [`storage`],
//! [`workers`].

mod nat;
mod ports;
mod storage;
mod workers;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context, Result};

use dataplane::fib::neigh::NeighborTable;
use dataplane::pipeline::{Pipeline, StoragePlan, WorkerCtx};
use dataplane::slowpath::{SlowPath, SlowPathConfig};
use dataplane::stats::ControlCounters;
use dataplane::storage::Responder;

use crate::config::Config;
use crate::control::Control;
use crate::metrics::MetricsSource;

pub use self::nat::os_seeds;

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
    let (ports, infos) = ports::start(cfg, &eal, &pool)?;
    let (neigh, neigh_writer) = NeighborTable::new(cfg.neighbor.entries_max as usize);
    let storage_plan = cfg
        .storage
        .as_ref()
        .map(|st| StoragePlan { object_prefix: st.object_prefix.addr, udp_port: cfg.storage_service.udp_port });
    let pipeline = Arc::new(
        Pipeline::build(infos, &cfg.routes, &cfg.srv6, nat::plan(cfg), storage_plan, neigh.clone())
            .context("building the route tables")?,
    );
    let mut storage = storage::Wiring::open(cfg, &eal)?;
    let mut nat = nat::Wiring::start(cfg, &eal, &pool, &stop)?;
    let control_counters = Arc::new(ControlCounters::default());
    let slow = slow_path(cfg, &pipeline, neigh_writer, control_counters.clone())?;
    let built = workers::build(cfg, &eal, &pipeline, &ports, &stop, &mut nat, &mut storage)?;
    let source = Arc::new(MetricsSource {
        port_names: cfg.ports.iter().map(|p| p.name.clone()).collect(),
        ports: ports.clone(),
        workers: built.counters,
        control: control_counters.clone(),
        neigh,
        pool: pool.clone(),
        rings: built.rings,
        tsc_hz: rte::tsc_hz(),
        pipeline: pipeline.clone(),
        sid_counters: built.sid_counters,
        input_counters: built.input_counters,
        nat: nat.stats.clone(),
        nat_workers: built.nat_counters,
        nat_query: nat.query.take().map(std::sync::Mutex::new),
        nat_clock: nat.clock,
        storage: storage.counters(),
    });
    let metrics = MetricsServer::start(cfg, &source)?;
    let handles = launch(cfg, built.workers, nat.core.take(), &stop)?;
    tracing::info!(workers = cfg.lcores.workers.len(), metrics = ?cfg.metrics.listen, "appliance running; SIGINT/SIGTERM stops it");
    let mut control = Control {
        slow,
        punt: built.punt_rx,
        inject: built.inject_tx,
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
    nat.stop_logger();
    metrics.stop();
    let summary = source.summary();
    println!("final counters:\n{summary}");
    tracing::info!("final counters:\n{summary}");
    // Order matters: nothing that holds an mbuf outlives the pool, and EAL
    // goes last.
    drop(control);
    drop(source);
    drop(storage);
    drop(ports);
    drop(pool);
    drop(eal);
    tracing::info!("stopped cleanly");
    Ok(())
}

/// The control core's slow path, with the static neighbours installed.
fn slow_path(
    cfg: &Config,
    pipeline: &Arc<Pipeline>,
    neigh: dataplane::fib::neigh::NeighborWriter,
    counters: Arc<ControlCounters>,
) -> Result<SlowPath<rte::Mbuf>> {
    let ctx = WorkerCtx::new(pipeline, Box::new(responder(cfg)));
    let mut slow = SlowPath::with_state(pipeline.clone(), neigh, slow_path_config(cfg), counters, ctx);
    for (i, n) in cfg.neighbors.iter().enumerate() {
        slow.add_static(n.port as u16, n.ip, n.mac).with_context(|| format!("neighbors[{i}]"))?;
    }
    Ok(slow)
}

/// The metrics endpoint's thread (`metrics.listen`), if configured.
struct MetricsServer {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl MetricsServer {
    fn start(cfg: &Config, source: &Arc<MetricsSource>) -> Result<MetricsServer> {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = match cfg.metrics.listen {
            Some(addr) => Some(
                crate::metrics::serve(addr, source.clone(), stop.clone())
                    .with_context(|| format!("metrics.listen: cannot listen on {addr}"))?,
            ),
            None => None,
        };
        Ok(MetricsServer { stop, thread })
    }

    fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread {
            let _ = t.join();
        }
    }
}

/// Launches the workers and the NAT mapping core on their lcores.
fn launch(
    cfg: &Config,
    workers: Vec<crate::worker::Worker>,
    mapper: Option<crate::natcore::MapperCore>,
    stop: &Arc<AtomicBool>,
) -> Result<Vec<rte::lcore::LcoreHandle>> {
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
    if let Some(core) = mapper {
        let lcore = cfg.lcores.mapper.map_or(0, |l| l.lcore);
        match rte::lcore::launch(lcore, move || core.run()) {
            Ok(h) => handles.push(h),
            Err(e) => {
                stop.store(true, Ordering::SeqCst);
                bail!("launching the NAT mapping server on lcore {lcore}: {e}");
            }
        }
    }
    Ok(handles)
}

/// The slow path's limits and timers (`neighbor:` and `icmp:`).
fn slow_path_config(cfg: &Config) -> SlowPathConfig {
    SlowPathConfig {
        pending_packets_max: cfg.neighbor.pending_packets_max as usize,
        pending_per_neighbor_max: cfg.neighbor.pending_per_neighbor_max as usize,
        resolve_retries: cfg.neighbor.resolve_retries,
        resolve_interval_ms: u64::from(cfg.neighbor.resolve_interval_ms),
        reachable_ms: u64::from(cfg.neighbor.reachable_ms),
        icmp_errors_per_s: cfg.icmp.errors_per_s,
        icmp_errors_burst: cfg.icmp.errors_burst,
    }
}

/// The built-in storage responder as configured (`storage_service:`).
fn responder(cfg: &Config) -> Responder {
    let mut objects = cfg.storage_service.objects.clone();
    objects.sort_unstable();
    Responder { udp_port: cfg.storage_service.udp_port, queue_depth: cfg.storage_service.queue_depth, objects }
}
