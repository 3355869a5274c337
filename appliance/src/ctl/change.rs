//! Run-time changes, applied on the main lcore (the control core): the only
//! thread that writes the neighbour table and builds tables.
//!
//! The control API sends a [`Change`] over a channel with a reply channel;
//! the control loop takes it between punt bursts ([`Changer::apply`]). A
//! route, SID or steering change edits the desired state, builds a whole new
//! pipeline from it ([`dataplane::pipeline::Pipeline::rebuild`]) and
//! publishes it ([`crate::rcu`]): workers switch at their next quiescent
//! point, the old tables are freed here once every worker has passed it.
//! Nothing is published when the new tables cannot be built: the error goes
//! back to the operator and the running tables stay.
//!
//! A SID keeps its counter slot across rebuilds (so its counters keep
//! counting); a deleted SID's slot is zeroed and reused only once no worker
//! can still count in it.

use std::net::{IpAddr, Ipv6Addr};
use std::sync::mpsc::SyncSender;
use std::sync::Arc;

use dataplane::fib::RouteSpec;
use dataplane::pipeline::Pipeline;
use dataplane::slowpath::SlowPath;
use dataplane::srv6::{SidCounters, SidSpec, Srv6Config, SID_SLOTS};

use crate::config::Config;
use crate::rcu::Published;

/// A change for the control core, with where its answer goes.
pub struct ChangeRequest {
    pub change: Change,
    pub reply: SyncSender<Result<String, String>>,
}

/// What can change at run time.
#[derive(Debug, Clone)]
pub enum Change {
    RouteAdd(RouteSpec),
    RouteDel {
        prefix: IpAddr,
        len: u8,
    },
    NeighborAdd {
        port: u16,
        ip: IpAddr,
        mac: [u8; 6],
    },
    NeighborDel {
        port: u16,
        ip: IpAddr,
    },
    NeighborsClearLearned,
    SidAdd(SidSpec),
    SidDel(Ipv6Addr),
    SteeringAdd(dataplane::srv6::PolicySpec),
    SteeringDel {
        prefix: IpAddr,
        len: u8,
    },
    /// A config file re-read: its live sections replace the running ones.
    Reload(Box<Config>),
}

/// The desired state of what can change, and where it is published.
pub struct Changer {
    pub cell: Arc<Published<Pipeline>>,
    routes: Vec<RouteSpec>,
    srv6: Srv6Config,
    /// The configured static neighbours (a reload replaces them).
    neighbors: Vec<(u16, IpAddr, [u8; 6])>,
    /// Per worker: the SID counter blocks (to zero a freed slot).
    sid_counters: Vec<Arc<Vec<SidCounters>>>,
    /// Slots freed by deleted SIDs, with the generation that dropped them.
    freed_slots: Vec<(u64, u16)>,
}

impl Changer {
    pub fn new(cell: Arc<Published<Pipeline>>, cfg: &Config, sid_counters: Vec<Arc<Vec<SidCounters>>>) -> Changer {
        let mut srv6 = cfg.srv6.clone();
        srv6.counter_slots = (0..srv6.sids.len() as u16).collect();
        let neighbors = cfg.neighbors.iter().map(|n| (n.port as u16, n.ip, n.mac)).collect();
        Changer { cell, routes: cfg.routes.clone(), srv6, neighbors, sid_counters, freed_slots: Vec::new() }
    }

    /// The static routes now.
    pub fn routes(&self) -> &[RouteSpec] {
        &self.routes
    }

    /// Applies one change; the text is what the operator sees.
    pub fn apply<P: netwire::PacketBuf>(&mut self, change: Change, slow: &mut SlowPath<P>) -> Result<String, String> {
        match change {
            Change::NeighborAdd { port, ip, mac } => {
                self.check_port(port)?;
                slow.add_static(port, ip, mac).map_err(|e| e.to_string())?;
                Ok(format!("neighbor {ip} on port {port} added\n"))
            }
            Change::NeighborDel { port, ip } => match slow.remove_neighbor(port, ip) {
                true => Ok(format!("neighbor {ip} on port {port} removed\n")),
                false => Err(format!("no neighbor {ip} on port {port}")),
            },
            Change::NeighborsClearLearned => Ok(format!("{} learned neighbors removed\n", slow.remove_learned())),
            Change::Reload(cfg) => self.reload(*cfg, slow),
            table_change => self.change_tables(table_change, slow),
        }
    }

    fn check_port(&self, port: u16) -> Result<(), String> {
        let n = self.cell.load().ports().len();
        if usize::from(port) < n {
            Ok(())
        } else {
            Err(format!("port {port} does not exist ({n} ports)"))
        }
    }

    /// A route, SID or steering change: edit a copy of the desired state,
    /// build, publish.
    fn change_tables<P: netwire::PacketBuf>(
        &mut self,
        change: Change,
        slow: &mut SlowPath<P>,
    ) -> Result<String, String> {
        let (mut routes, mut srv6) = (self.routes.clone(), self.srv6.clone());
        let what = match change {
            Change::RouteAdd(r) => {
                routes.retain(|x| (x.prefix, x.len) != (r.prefix, r.len));
                routes.push(r);
                format!("route {}/{} added", r.prefix, r.len)
            }
            Change::RouteDel { prefix, len } => {
                let before = routes.len();
                routes.retain(|x| (x.prefix, x.len) != (prefix, len));
                if routes.len() == before {
                    return Err(format!("no static route {prefix}/{len}"));
                }
                format!("route {prefix}/{len} removed")
            }
            Change::SidAdd(spec) => self.sid_add(&mut srv6, spec)?,
            Change::SidDel(sid) => self.sid_del(&mut srv6, sid)?,
            Change::SteeringAdd(p) => {
                srv6.policies.retain(|x| (x.prefix, x.len) != (p.prefix, p.len));
                let text = format!("steering {}/{} added", p.prefix, p.len);
                srv6.policies.push(p);
                text
            }
            Change::SteeringDel { prefix, len } => {
                let before = srv6.policies.len();
                srv6.policies.retain(|x| (x.prefix, x.len) != (prefix, len));
                if srv6.policies.len() == before {
                    return Err(format!("no steering policy {prefix}/{len}"));
                }
                format!("steering {prefix}/{len} removed")
            }
            other => return Err(format!("not a table change: {other:?}")),
        };
        let generation = self.publish(routes, srv6, slow)?;
        Ok(format!("{what} (tables generation {generation})\n"))
    }

    fn sid_add(&mut self, srv6: &mut Srv6Config, spec: SidSpec) -> Result<String, String> {
        let text = format!("sid {} ({}) added", spec.sid, spec.behavior.name());
        if let Some(i) = srv6.sids.iter().position(|s| s.sid == spec.sid) {
            srv6.sids[i] = spec; // replaced in place: same counter slot
            return Ok(text);
        }
        let reached = self.cell.reached();
        let used: Vec<u16> = srv6.counter_slots.clone();
        let free = (0..SID_SLOTS as u16)
            .find(|s| !used.contains(s) && self.freed_slots.iter().all(|&(g, fs)| fs != *s || g <= reached));
        let slot = free.ok_or_else(|| format!("no free SID counter slot ({SID_SLOTS} SIDs at most)"))?;
        if let Some(i) = self.freed_slots.iter().position(|&(_, fs)| fs == slot) {
            // No worker can count in it any more: start it from zero.
            self.freed_slots.remove(i);
            for w in &self.sid_counters {
                w[usize::from(slot)].reset();
            }
        }
        srv6.sids.push(spec);
        srv6.counter_slots.push(slot);
        Ok(text)
    }

    fn sid_del(&mut self, srv6: &mut Srv6Config, sid: Ipv6Addr) -> Result<String, String> {
        let i = srv6.sids.iter().position(|s| s.sid == sid).ok_or_else(|| format!("no local SID {sid}"))?;
        srv6.sids.remove(i);
        let slot = srv6.counter_slots.remove(i);
        // Freed once the tables without it are everywhere (next generation).
        self.freed_slots.push((self.cell.generation() + 1, slot));
        Ok(format!("sid {sid} removed"))
    }

    /// Builds and publishes the tables for `routes` and `srv6`; on success
    /// they become the desired state.
    fn publish<P: netwire::PacketBuf>(
        &mut self,
        routes: Vec<RouteSpec>,
        srv6: Srv6Config,
        slow: &mut SlowPath<P>,
    ) -> Result<u64, String> {
        let new = Arc::new(self.cell.load().rebuild(&routes, &srv6).map_err(|e| e.to_string())?);
        slow.set_pipeline(new.clone());
        let generation = self.cell.publish(new);
        self.routes = routes;
        self.srv6 = srv6;
        tracing::info!(generation, routes = self.routes.len(), sids = self.srv6.sids.len(), "tables published");
        Ok(generation)
    }

    /// Applies a re-read config's live sections: static routes, static
    /// neighbours, SRv6, the `neighbor:` and `icmp:` settings (the API names
    /// the sections that differ and need a restart).
    fn reload<P: netwire::PacketBuf>(&mut self, cfg: Config, slow: &mut SlowPath<P>) -> Result<String, String> {
        let neighbors: Vec<(u16, IpAddr, [u8; 6])> =
            cfg.neighbors.iter().map(|n| (n.port as u16, n.ip, n.mac)).collect();
        for &(port, ip, _) in self.neighbors.iter().filter(|n| !neighbors.iter().any(|m| (m.0, m.1) == (n.0, n.1))) {
            slow.remove_neighbor(port, ip);
        }
        for &(port, ip, mac) in &neighbors {
            slow.add_static(port, ip, mac).map_err(|e| format!("neighbors: {e}"))?;
        }
        self.neighbors = neighbors;
        // SIDs that stay keep their counter slots.
        let mut srv6 = cfg.srv6.clone();
        srv6.counter_slots = Vec::new();
        let mut next_free = (0..SID_SLOTS as u16).filter(|s| !self.srv6.counter_slots.contains(s));
        for sid in &srv6.sids {
            let old = self.srv6.sids.iter().position(|s| s.sid == sid.sid).map(|i| self.srv6.counter_slots[i]);
            let slot = old.or_else(|| next_free.next()).ok_or("no free SID counter slot")?;
            srv6.counter_slots.push(slot);
        }
        slow.set_limits(crate::app::slow_path_config(&cfg));
        let generation = self.publish(cfg.routes.clone(), srv6, slow)?;
        Ok(format!(
            "reloaded: {} static routes, {} static neighbors, {} SIDs, {} steering policies, neighbor and icmp \
             settings (tables generation {generation})\n",
            self.routes.len(),
            self.neighbors.len(),
            self.srv6.sids.len(),
            self.srv6.policies.len()
        ))
    }

    /// Drops tables no worker can still use. Call every control tick.
    pub fn tick(&mut self) {
        self.cell.reclaim();
    }
}
