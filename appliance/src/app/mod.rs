//! Start-up and shutdown of `appliance run`.
//!
//! Order: config (already validated) → EAL → mbuf pools (one per NUMA
//! socket in use, [`pools`]) → ports (configured and
//! started; MACs read back) → the capture framework (`capture.pdump`) →
//! neighbour table and pipeline tables → storage
//! (devices opened, formatted, journals replayed; hand-over rings) → NAT
//! (mapping server tables, log writer, request/answer rings) → the control
//! core's punt and inject rings → workers → metrics server → lcores
//! launched → control loop on the main lcore until SIGINT/SIGTERM →
//! workers joined → final counters → everything dropped (capture framework
//! closed, ports stopped and closed, EAL cleaned up, no hugepage file left:
//! with `--huge-unlink` EAL unlinked each as it mapped it, without it
//! `rte::Eal` removes them after cleanup).
//!
//! Each feature's wiring is its own module: [`ports`], [`nat`], [`storage`],
//! [`workers`].

mod nat;
mod pools;
mod ports;
mod storage;
mod workers;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use dataplane::fib::neigh::NeighborTable;
use dataplane::pipeline::{Pipeline, StoragePlan, WorkerCtx};
use dataplane::slowpath::{SlowPath, SlowPathConfig};
use dataplane::stats::ControlCounters;
use dataplane::storage::Responder;

use std::path::Path;

use crate::config::Config;
use crate::control::Control;
use crate::ctl::{self, change::Changer, Api};
use crate::metrics::MetricsSource;
use crate::rcu::Published;
use crate::trace::TraceControl;

pub use self::nat::os_seeds;

/// Changes waiting for the control core at most (more: "busy, try again").
const CHANGES_MAX: usize = 64;

/// What the signal handlers set: stop (SIGINT, SIGTERM), reload the config
/// (SIGHUP).
#[derive(Clone, Default)]
pub struct Signals {
    pub stop: Arc<AtomicBool>,
    pub reload: Arc<AtomicBool>,
}

/// Runs the appliance until `signals.stop` is set (SIGINT/SIGTERM). Returns
/// after a clean shutdown. In a NAT cluster the signal first hands every
/// shard this host serves over to its standby ([`supervise_leave`]).
pub fn run(cfg: &Config, config_path: Option<&Path>, signals: Signals) -> Result<()> {
    let signal = signals.stop.clone();
    let cluster = cfg.nat.as_ref().is_some_and(|n| n.cluster.is_some());
    let stop = if cluster { Arc::new(AtomicBool::new(false)) } else { signal.clone() };
    let args = cfg.eal_args("appliance");
    tracing::info!(dpdk = %rte::version(), eal_args = ?args, "starting EAL");
    let eal = rte::Eal::init(&args).context("starting DPDK EAL (are hugepages reserved? run scripts/setup.sh)")?;
    if !cfg.eal.huge_unlink {
        // The files stay for secondaries (dpdk-dumpcap) while we run; not after.
        eal.remove_hugepage_files_at_cleanup();
    }
    let pools = pools::Pools::create(cfg, &eal)?;
    let (ports, infos) = ports::start(cfg, &eal, &pools)?;
    let pdump = start_pdump(cfg, &eal)?;
    let (neigh, neigh_writer) = NeighborTable::new(cfg.neighbor.entries_max as usize);
    let storage_plan = cfg
        .storage
        .as_ref()
        .map(|st| StoragePlan { object_prefix: st.object_prefix.addr, udp_port: cfg.storage_service.udp_port });
    let pipeline = Arc::new(
        Pipeline::build(infos, &cfg.routes, &cfg.srv6, nat::plan(cfg), storage_plan, neigh.clone())
            .map(|p| p.with_ext_limits(cfg.pipeline.ipv6_ext_limits))
            .context("building the route tables")?,
    );
    let cell = Published::new(pipeline.clone(), cfg.lcores.workers.len());
    let trace =
        TraceControl::new(cfg.lcores.workers.len(), rte::tsc_hz(), cfg.ports.iter().map(|p| p.name.clone()).collect());
    let mut storage = storage::Wiring::open(cfg, &eal)?;
    let mut nat = nat::Wiring::start(cfg, &eal, &pools, &stop)?;
    let control_counters = Arc::new(ControlCounters::default());
    let mut slow = slow_path(cfg, &pipeline, neigh_writer, control_counters.clone())?;
    if let Some(shared) = &nat.cluster {
        slow.set_pool_server(Box::new(crate::natcluster::ShardPoolServer::new(shared)));
    }
    let built = workers::build(cfg, &eal, &cell, &trace, &ports, &stop, &mut nat, &mut storage)?;
    let source = Arc::new(MetricsSource {
        port_names: cfg.ports.iter().map(|p| p.name.clone()).collect(),
        ports: ports.clone(),
        workers: built.counters,
        control: control_counters.clone(),
        neigh,
        pools: pools.all(),
        rings: built.rings,
        tsc_hz: rte::tsc_hz(),
        pipeline: cell.clone(),
        sid_counters: built.sid_counters.clone(),
        input_counters: built.input_counters,
        nat: nat.stats.clone(),
        nat_workers: built.nat_counters,
        nat_query: nat.query.take().map(std::sync::Mutex::new),
        nat_clock: nat.clock,
        nat_cluster: nat.cluster.clone(),
        storage: storage.counters(),
    });
    let (changes_tx, changes) = std::sync::mpsc::sync_channel(CHANGES_MAX);
    let api = Arc::new(Api::new(
        source.clone(),
        cell.clone(),
        trace.clone(),
        changes_tx,
        (config_path.map(Path::to_path_buf), cfg.clone()),
    ));
    let metrics = MetricsServer::start(cfg, &source, &api)?;
    let control_socket = ctl::server::Server::start(&cfg.control.socket, api, Some(signals.reload.clone()))
        .with_context(|| format!("control.socket: cannot listen on {}", cfg.control.socket.display()))?;
    let handles = launch(cfg, built.workers, nat.core.take(), &stop)?;
    if let Some(cl) = cfg.nat.as_ref().and_then(|n| n.cluster.as_ref()) {
        let timeout = Duration::from_millis(cl.plan.timing.handover_timeout_ms + 1000);
        supervise_leave(signal, stop.clone(), nat.leave.clone(), nat.left.clone(), timeout)?;
    }
    tracing::info!(
        workers = cfg.lcores.workers.len(), metrics = ?cfg.metrics.listen, control = %cfg.control.socket.display(),
        "appliance running; SIGINT/SIGTERM stops it, SIGHUP reloads the config"
    );
    let mut control = Control {
        slow,
        changes,
        changer: Changer::new(cell.clone(), cfg, built.sid_counters),
        punt: built.punt_rx,
        inject: built.inject_tx,
        pool: pools.for_lcore(&eal, cfg.lcores.main.lcore).clone(),
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
    drop(control_socket);
    metrics.stop();
    let summary = source.summary();
    println!("final counters:\n{summary}");
    tracing::info!("final counters:\n{summary}");
    // Order matters: nothing that holds an mbuf outlives the pool, and EAL
    // goes last.
    drop(control);
    drop(source);
    drop(storage);
    drop(pdump);
    drop(ports);
    drop(pools);
    drop(eal);
    tracing::info!("stopped cleanly");
    Ok(())
}

/// `capture.pdump`: DPDK's capture framework, so that `dpdk-dumpcap` (a
/// secondary process) can attach to the ports (docs/capture.md).
fn start_pdump(cfg: &Config, eal: &Arc<rte::Eal>) -> Result<Option<rte::Pdump>> {
    if !cfg.capture.pdump {
        return Ok(None);
    }
    let pdump = rte::Pdump::init(eal).context("capture.pdump: initialising DPDK's capture framework (rte_pdump)")?;
    let devices: Vec<&str> = cfg.ports.iter().map(|p| p.device.as_str()).collect();
    tracing::info!(
        "dpdk-dumpcap can attach: dpdk-dumpcap --file-prefix={} -i <{}>",
        cfg.eal.file_prefix,
        devices.join("|")
    );
    Ok(Some(pdump))
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
    fn start(cfg: &Config, source: &Arc<MetricsSource>, api: &Arc<Api>) -> Result<MetricsServer> {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = match cfg.metrics.listen {
            Some(addr) => Some(
                crate::metrics::serve(addr, source.clone(), api.clone(), stop.clone())
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

/// On the signal, asks the NAT cluster's mapping lcore to hand its shards
/// over (drain, hand over, then stop), and stops everything once it says
/// it is done or after `timeout`.
fn supervise_leave(
    signal: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    leave: Arc<AtomicBool>,
    left: Arc<AtomicBool>,
    timeout: Duration,
) -> Result<()> {
    std::thread::Builder::new()
        .name("nat-leave".into())
        .spawn(move || {
            while !signal.load(Ordering::Relaxed) && !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(10));
            }
            leave.store(true, Ordering::SeqCst);
            let deadline = std::time::Instant::now() + timeout;
            while !left.load(Ordering::Relaxed) && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if !left.load(Ordering::Relaxed) {
                tracing::warn!("nat cluster: handover not complete in time; stopping anyway");
            }
            stop.store(true, Ordering::SeqCst);
        })
        .context("starting the NAT cluster's leave supervisor")?;
    Ok(())
}

/// Launches the workers and the NAT mapping core on their lcores.
fn launch(
    cfg: &Config,
    workers: Vec<crate::worker::Worker>,
    mapper: Option<nat::Core>,
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
pub(crate) fn slow_path_config(cfg: &Config) -> SlowPathConfig {
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
