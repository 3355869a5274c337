//! Worker wiring: the control core's punt and inject ring per worker, each
//! worker's rx queues (queue `q` of every port with `q % workers == w`) and
//! tx queue (`w` of every port), its pipeline context, its NAT link and
//! storage service.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::{Context, Result};

use dataplane::nat::fast::NatWorkerCounters;
use dataplane::pipeline::{Pipeline, WorkerCtx};
use dataplane::srv6::SidCounters;
use dataplane::stats::InputCounters;
use dataplane::storage::{LoadView, LocalService};

use super::{nat, responder, storage};
use crate::config::Config;
use crate::rcu::Published;
use crate::trace::TraceControl;
use crate::worker::{QueueCounters, RxBinding, Worker, WorkerCounters};

/// The workers, ready to launch, and what the control core and the
/// metrics read of them.
pub(super) struct Built {
    pub workers: Vec<Worker>,
    pub counters: Vec<Arc<WorkerCounters>>,
    pub sid_counters: Vec<Arc<Vec<SidCounters>>>,
    pub input_counters: Vec<Arc<InputCounters>>,
    pub nat_counters: Vec<Arc<NatWorkerCounters>>,
    /// (ring name, ring) for the metrics.
    pub rings: Vec<(String, Arc<rte::MbufRing>)>,
    /// The control core's ends of the punt and inject rings, one per worker.
    pub punt_rx: Vec<rte::RingConsumer>,
    pub inject_tx: Vec<rte::RingProducer>,
}

#[allow(clippy::too_many_arguments)]
pub(super) fn build(
    cfg: &Config,
    eal: &Arc<rte::Eal>,
    cell: &Arc<Published<Pipeline>>,
    trace: &Arc<TraceControl>,
    ports: &[Arc<rte::Port>],
    stop: &Arc<AtomicBool>,
    nat: &mut nat::Wiring,
    storage: &mut storage::Wiring,
) -> Result<Built> {
    let mut b = Built {
        workers: Vec::new(),
        counters: Vec::new(),
        sid_counters: Vec::new(),
        input_counters: Vec::new(),
        nat_counters: Vec::new(),
        rings: Vec::new(),
        punt_rx: Vec::new(),
        inject_tx: Vec::new(),
    };
    for w in 0..cfg.lcores.workers.len() {
        let (punt, punt_rx) = rte::MbufRing::new(eal, &format!("apl_punt{w}"), cfg.pipeline.punt_ring_size)
            .context("creating a punt ring")?;
        let (inject_tx, inject) = rte::MbufRing::new(eal, &format!("apl_inject{w}"), cfg.pipeline.inject_ring_size)
            .context("creating an inject ring")?;
        b.rings.push((format!("punt{w}"), punt.ring().clone()));
        b.rings.push((format!("inject{w}"), inject_tx.ring().clone()));
        b.rings.extend(nat.rings(w));
        b.punt_rx.push(punt_rx);
        b.inject_tx.push(inject_tx);
        let storage = storage.take(w);
        // Steering decides on the object service's real queue depth when it exists.
        let service: Box<dyn LocalService> = match &storage {
            Some(st) => Box::new(LoadView { load: st.service.load(), responder: responder(cfg) }),
            None => Box::new(responder(cfg)),
        };
        let mut ctx = WorkerCtx::new(&cell.load(), service);
        b.sid_counters.push(ctx.sid_counters.clone());
        b.input_counters.push(ctx.input_counters.clone());
        if let Some(nw) = nat::Wiring::worker_state(cfg, w) {
            b.nat_counters.push(nw.counters.clone());
            ctx.nat = Some(Box::new(nw));
        }
        let (rx, tx, counters) = queues(cfg, ports, w)?;
        b.counters.push(counters.clone());
        b.workers.push(Worker {
            pipeline: cell.reader(w),
            index: w,
            trace: trace.clone(),
            rx,
            tx,
            punt,
            inject,
            counters,
            stop: stop.clone(),
            burst_size: usize::from(cfg.pipeline.burst_size),
            idle: cfg.pipeline.idle_backoff,
            ctx,
            nat: nat.links.next(),
            storage,
        });
    }
    Ok(b)
}

/// Worker `w`'s rx queues (queue `q` of every port with `q % workers == w`),
/// tx queues (queue `w` of every port) and counter block.
fn queues(
    cfg: &Config,
    ports: &[Arc<rte::Port>],
    w: usize,
) -> Result<(Vec<RxBinding>, Vec<rte::TxQueue>, Arc<WorkerCounters>)> {
    let workers = cfg.lcores.workers.len();
    let (mut rx, mut rxc, mut tx, mut txc) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (pi, p) in cfg.ports.iter().enumerate() {
        for q in (0..p.queues).filter(|q| usize::from(*q) % workers == w) {
            rx.push(RxBinding { port: pi as u16, queue: ports[pi].rx_queue(q)? });
            rxc.push(QueueCounters { port: pi as u16, queue: q, ..Default::default() });
        }
    }
    for (pi, port) in ports.iter().enumerate() {
        tx.push(port.tx_queue(w as u16)?);
        txc.push(QueueCounters { port: pi as u16, queue: w as u16, ..Default::default() });
    }
    let counters =
        Arc::new(WorkerCounters { lcore: cfg.lcores.workers[w].lcore, rx: rxc, tx: txc, ..Default::default() });
    Ok((rx, tx, counters))
}
