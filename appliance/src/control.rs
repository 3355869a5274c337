//! The control core's loop (on the EAL main lcore): drains every worker's
//! punt ring into the [`SlowPath`], applies run-time changes from the
//! control API ([`Changer`]), runs the timers (and frees tables no worker
//! uses any more), and hands what it sends to a worker's inject ring for
//! transmission (the control core owns no tx queue: every tx queue belongs
//! to exactly one worker).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rte::{Burst, Mbuf, Mempool, RingConsumer, RingProducer};

use dataplane::slowpath::SlowPath;

use crate::ctl::change::{ChangeRequest, Changer};
use dataplane::stats::punt_tag_parts;
use dataplane::stats::{ControlCounters, DropReason};

/// How often the slow path's timers run.
const TICK_MS: u64 = 10;
/// Sleep of the control loop when a pass found nothing to do.
const IDLE_SLEEP: Duration = Duration::from_micros(200);

pub struct Control {
    pub slow: SlowPath<Mbuf>,
    /// Run-time changes from the control API, applied here (the one writer).
    pub changes: Receiver<ChangeRequest>,
    pub changer: Changer,
    /// One per worker.
    pub punt: Vec<RingConsumer>,
    /// One per worker.
    pub inject: Vec<RingProducer>,
    pub pool: Mempool,
    pub counters: Arc<ControlCounters>,
    pub stop: Arc<AtomicBool>,
}

impl Control {
    /// Runs until `stop` is set.
    pub fn run(&mut self) {
        let start = Instant::now();
        let mut burst = Burst::new();
        let mut out: Vec<Mbuf> = Vec::with_capacity(256);
        let mut last_tick = 0u64;
        while !self.stop.load(Ordering::Relaxed) {
            let now_ms = start.elapsed().as_millis() as u64;
            let mut work = 0;
            for ring in self.punt.iter_mut() {
                let n = ring.dequeue_burst(&mut burst, 64);
                work += n;
                for m in burst.drain() {
                    match punt_tag_parts(m.tag()) {
                        (Some(reason), arg) => {
                            self.slow.handle(m, reason, arg, now_ms, &mut self.pool, &mut |p| out.push(p));
                        }
                        (None, _) => self.counters.drops.inc(DropReason::ArpInvalid),
                    }
                }
            }
            while let Ok(req) = self.changes.try_recv() {
                work += 1;
                let result = self.changer.apply(req.change, &mut self.slow);
                if let Err(e) = &result {
                    tracing::info!(error = %e, "run-time change refused");
                }
                let _ = req.reply.try_send(result);
            }
            if now_ms >= last_tick + TICK_MS {
                last_tick = now_ms;
                self.slow.tick(now_ms, &mut self.pool, &mut |p| out.push(p));
                self.changer.tick();
            }
            if !out.is_empty() {
                work += out.len();
                self.send(&mut out);
            }
            if work == 0 {
                std::thread::sleep(IDLE_SLEEP);
            }
        }
    }

    /// Spreads packets to send over the workers' inject rings by egress
    /// port, so one port's packets keep their order.
    fn send(&mut self, out: &mut Vec<Mbuf>) {
        let workers = self.inject.len();
        for m in out.drain(..) {
            let w = usize::from(m.port()) % workers;
            if self.inject[w].enqueue(m).is_err() {
                self.counters.drops.inc(DropReason::InjectRingFull);
            }
        }
    }
}
