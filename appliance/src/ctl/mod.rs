//! The control API: one set of functions behind every front end. The
//! operator CLI (`aplctl`, over the Unix control socket, [`server`]) and the
//! HTTP pages call [`Api::call`] / the `show` functions; nothing reads or
//! changes the appliance another way.
//!
//! * `show ...` reads the shared state (per-core counters, the neighbour
//!   table, the published tables, the NAT mapping core through its query
//!   channel) on the calling thread: no worker is stopped or locked.
//! * Changes (`route`, `neighbor`, `sid`, `steering`, `clear neighbors`,
//!   `reload`) are sent to the main lcore, which alone writes the neighbour
//!   table and builds tables ([`change`]), and wait for its answer.
//! * `clear counters` records a baseline that the CLI's views subtract:
//!   the Prometheus counters keep counting (a counter that went back would
//!   break every `rate()`).
//!
//! Every reply has a text for people and a JSON value for programs
//! (`aplctl --json`).

pub mod change;
pub mod command;
pub mod server;
mod show;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dataplane::pipeline::Pipeline;
use serde_json::{json, Value};

use self::change::{Change, ChangeRequest};
use self::command::{Clear, Command, Show, ShowNat, ShowSrv6};
use crate::config::Config;
use crate::metrics::MetricsSource;
use crate::rcu::Published;
use crate::trace::TraceControl;

/// How long a change may take on the main lcore before the caller gives up.
const CHANGE_TIMEOUT: Duration = Duration::from_secs(5);

/// What a command answers.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// For people.
    pub text: String,
    /// For programs.
    pub data: Value,
}

impl Reply {
    fn done(text: String) -> Reply {
        Reply { data: json!({ "result": text.trim_end() }), text }
    }
}

/// Counter values recorded by `clear counters`, by name.
#[derive(Default)]
struct Baseline(HashMap<String, u64>);

impl Baseline {
    /// `value` less what it was at the last `clear counters`.
    fn since(&self, name: &str, value: u64) -> u64 {
        value.saturating_sub(self.0.get(name).copied().unwrap_or(0))
    }
}

/// The control API (see the module doc).
pub struct Api {
    pub src: Arc<MetricsSource>,
    pub cell: Arc<Published<Pipeline>>,
    pub trace: Arc<TraceControl>,
    changes: Mutex<SyncSender<ChangeRequest>>,
    config_path: Option<PathBuf>,
    /// The config as running: live sections as last applied, the others as
    /// started.
    running: Mutex<Config>,
    baseline: Mutex<Baseline>,
    capture: Mutex<Option<crate::trace::Capture>>,
}

impl Api {
    pub fn new(
        src: Arc<MetricsSource>,
        cell: Arc<Published<Pipeline>>,
        trace: Arc<TraceControl>,
        changes: SyncSender<ChangeRequest>,
        config: (Option<PathBuf>, Config),
    ) -> Api {
        Api {
            src,
            cell,
            trace,
            changes: Mutex::new(changes),
            config_path: config.0,
            running: Mutex::new(config.1),
            baseline: Mutex::new(Baseline::default()),
            capture: Mutex::new(None),
        }
    }

    /// Runs one command line.
    pub fn call(&self, line: &str) -> Result<Reply, String> {
        let line = line.trim();
        if line.is_empty() || line == "help" || line == "?" {
            return Ok(Reply::done(help()));
        }
        self.run(command::parse(line)?)
    }

    /// Runs one parsed command.
    pub fn run(&self, command: Command) -> Result<Reply, String> {
        match command {
            Command::Show(s) => self.show(s),
            Command::Clear(c) => self.clear(c),
            Command::Route(op) => self.change(show::route_change(&self.running_config(), op)?),
            Command::Neighbor(op) => self.change(show::neighbor_change(&self.running_config(), op)?),
            Command::Sid(op) => self.change(show::sid_change(&self.running_config(), op)?),
            Command::Steering(op) => self.change(show::steering_change(op)?),
            Command::Trace(command::TraceOp::Add { count }) => {
                self.trace.arm(count);
                Ok(Reply::done(format!("tracing the next {count} packets of each worker\n")))
            }
            Command::Capture(op) => self.capture(op),
            Command::Reload => self.reload(),
        }
    }

    fn show(&self, what: Show) -> Result<Reply, String> {
        let baseline = self.baseline.lock().map_err(|_| "internal error")?;
        match what {
            Show::Interfaces => Ok(show::interfaces(&self.src, &self.cell.load(), &baseline)),
            Show::Routes => Ok(show::routes(&self.cell.load())),
            Show::Neighbors => Ok(show::neighbors(&self.src)),
            Show::Nat(ShowNat::Sessions { filters }) => show::nat_sessions(&self.src, &filters),
            Show::Nat(ShowNat::Summary) => show::nat_summary(&self.src),
            Show::Srv6(ShowSrv6::Sids) => Ok(show::srv6_sids(&self.src, &self.cell.load())),
            Show::Srv6(ShowSrv6::Policies) => Ok(show::srv6_policies(&self.cell.load())),
            Show::Storage => Ok(show::storage(&self.src)),
            Show::Workers => Ok(show::workers(&self.src, &baseline)),
            Show::Errors => Ok(show::errors(&self.src, &baseline)),
            Show::Trace => Ok(self.trace.show()),
            Show::Version => Ok(show::version()),
        }
    }

    fn clear(&self, what: Clear) -> Result<Reply, String> {
        match what {
            Clear::Counters => {
                *self.baseline.lock().map_err(|_| "internal error")? = Baseline(show::counter_snapshot(&self.src));
                Ok(Reply::done("counters cleared (this CLI's views; Prometheus counters keep counting)\n".into()))
            }
            Clear::Nat { filters, .. } => show::nat_clear(&self.src, &filters),
            Clear::Neighbors => self.change(Change::NeighborsClearLearned),
            Clear::Trace => {
                self.trace.clear();
                Ok(Reply::done("trace cleared\n".into()))
            }
        }
    }

    /// Sends a change to the main lcore and waits for its answer.
    fn change(&self, change: Change) -> Result<Reply, String> {
        let (reply, answer) = sync_channel(1);
        let sent = self.changes.lock().map_err(|_| "internal error")?.try_send(ChangeRequest { change, reply });
        sent.map_err(|_| "the control core is busy or stopping: try again".to_string())?;
        match answer.recv_timeout(CHANGE_TIMEOUT) {
            Ok(result) => result.map(Reply::done),
            Err(_) => Err("the control core did not answer in 5 s".into()),
        }
    }

    fn running_config(&self) -> Config {
        self.running.lock().map(|c| c.clone()).unwrap_or_else(|p| p.into_inner().clone())
    }

    /// Re-reads the config file: the live sections are applied, the others
    /// are compared with what runs and named when they differ.
    fn reload(&self) -> Result<Reply, String> {
        let Some(path) = &self.config_path else {
            return Err("running on the embedded demo config: there is no file to reload".into());
        };
        let new = Config::load(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let restart = restart_needed(&self.running_config(), &new);
        let mut text = self.change(Change::Reload(Box::new(new.clone())))?.text;
        if let Ok(mut running) = self.running.lock() {
            running.routes = new.routes.clone();
            running.neighbors = new.neighbors.clone();
            running.srv6 = new.srv6.clone();
            running.neighbor = new.neighbor;
            running.icmp = new.icmp;
        }
        if !restart.is_empty() {
            text.push_str(&format!("not applied, needs a restart: {}\n", restart.join(", ")));
        }
        Ok(Reply { data: json!({ "result": text.trim_end(), "restart_needed": restart }), text })
    }

    fn capture(&self, op: command::CaptureOp) -> Result<Reply, String> {
        let mut cap = self.capture.lock().map_err(|_| "internal error")?;
        match op {
            command::CaptureOp::Start { file, port, count } => {
                if cap.is_some() {
                    return Err("a capture is running: capture stop first".into());
                }
                let port = match port {
                    Some(name) => Some(show::port_index(&self.cell.load(), &name)?),
                    None => None,
                };
                *cap = Some(self.trace.start_capture(&file, port, count)?);
                Ok(Reply::done(format!("capturing to {file}\n")))
            }
            command::CaptureOp::Stop => match cap.take() {
                Some(c) => {
                    let (file, packets) = c.stop()?;
                    let missed = self.trace.capture_missed.swap(0, std::sync::atomic::Ordering::Relaxed);
                    Ok(Reply {
                        data: json!({ "file": file, "packets": packets, "capture_missed": missed }),
                        text: format!("{packets} packets written to {file} ({missed} not captured)\n"),
                    })
                }
                None => Err("no capture is running".into()),
            },
        }
    }
}

/// The sections of `new` that differ from `running` and cannot change
/// while the appliance runs.
pub fn restart_needed(running: &Config, new: &Config) -> Vec<&'static str> {
    let mut out = Vec::new();
    let mut differs = |name, same: bool| {
        if !same {
            out.push(name);
        }
    };
    differs("eal", running.eal == new.eal);
    differs("lcores", running.lcores == new.lcores);
    differs("mempool", running.mempool == new.mempool);
    differs("ports", running.ports == new.ports);
    differs("pipeline", running.pipeline == new.pipeline);
    differs("metrics", running.metrics == new.metrics);
    differs("capture", running.capture == new.capture);
    differs("log", running.log == new.log);
    differs("storage_service", running.storage_service == new.storage_service);
    differs("nat", running.nat == new.nat);
    differs("storage", running.storage == new.storage);
    out
}

fn help() -> String {
    let mut s = String::from("commands (`COMMAND --help` for the arguments):\n");
    for w in command::WORDS {
        s.push_str("  ");
        s.push_str(w);
        s.push('\n');
    }
    s
}
