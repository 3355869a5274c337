//! The metrics endpoint's HTTP server: `GET /metrics` (the Prometheus text format, rendered
//! by [`render`]; every metric is described in `docs/metrics.md`), plus the control API's
//! read-only views (docs/cli.md): `GET /api/show/...` (JSON), `/neighbors`, `/srv6`,
//! `/nat/sessions` (text).
//!
//! Counters live in per-core blocks ([`dataplane::stats`]); a scrape sums them with relaxed
//! loads on this thread. Nothing on the fast path knows metrics exist. The HTTP server is a
//! small blocking loop on its own (non-EAL) thread; it serves one request per connection and
//! is not a fast path. The pages come from the control API ([`crate::ctl`]), the metrics
//! from [`render::render`].

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use std::sync::mpsc::Sender;
use std::sync::Mutex;

use crate::ctl::Api;
use crate::natcore::{NatClock, NatQuery};
use crate::worker::WorkerCounters;
use dataplane::fib::neigh::NeighborTable;
use dataplane::nat::fast::NatWorkerCounters;
use dataplane::nat::mapper::NatStats;
use dataplane::pipeline::Pipeline;
use dataplane::stats::{ControlCounters, DropReason, IcmpErrorKind, PuntReason};
use dataplane::storage::service::ServiceCounters;

pub mod render;

pub use render::{BuildInfo, Readings, View};

/// What a scrape reads.
pub struct MetricsSource {
    /// Port names, by config index.
    pub port_names: Vec<String>,
    pub ports: Vec<Arc<rte::Port>>,
    pub workers: Vec<Arc<WorkerCounters>>,
    pub control: Arc<ControlCounters>,
    pub neigh: Arc<NeighborTable>,
    /// The mbuf pools by NUMA socket.
    pub pools: Vec<(u32, rte::Mempool)>,
    /// (ring name, ring)
    pub rings: Vec<(String, Arc<rte::MbufRing>)>,
    pub tsc_hz: u64,
    /// The tables as published now (SIDs come and go at run time).
    pub pipeline: Arc<crate::rcu::Published<Pipeline>>,
    /// Per worker: one block of counters per SID counter slot.
    pub sid_counters: Vec<Arc<Vec<dataplane::srv6::SidCounters>>>,
    /// Per worker: what input did besides verdicts (completed checksums).
    pub input_counters: Vec<Arc<dataplane::stats::InputCounters>>,
    /// The NAT mapping server's figures (with NAT on).
    pub nat: Option<Arc<NatStats>>,
    /// Per worker: the NAT cache counters (with NAT on).
    pub nat_workers: Vec<Arc<NatWorkerCounters>>,
    /// Asks the mapping core for session listings (with NAT on).
    pub nat_query: Option<Mutex<Sender<NatQuery>>>,
    pub nat_clock: NatClock,
    /// The NAT cluster's view, commands and figures (with `nat.cluster`).
    pub nat_cluster: Option<Arc<crate::natcluster::ClusterShared>>,
    /// The storage service's counters, one block per worker (with `storage:` configured).
    pub storage: Vec<Arc<ServiceCounters>>,
}

impl MetricsSource {
    /// Renders every metric in the Prometheus text format ([`render::render`]).
    pub fn render(&self) -> String {
        let readings = Readings {
            ports: self.ports.iter().map(|p| p.stats()).collect(),
            pools: self.pools.iter().map(|(s, p)| (*s, p.in_use(), p.capacity())).collect(),
            rings: self.rings.iter().map(|(n, r)| (n.clone(), r.stats())).collect(),
            dpdk_version: rte::version(),
        };
        let pipeline = self.pipeline.load();
        let mut out = render::render(&self.view(&pipeline), &readings);
        if let Some(c) = &self.nat_cluster {
            crate::natcluster::metrics::render(&mut out, c);
        }
        out
    }

    /// The counters, for [`render::render`].
    fn view<'a>(&'a self, pipeline: &'a Pipeline) -> View<'a> {
        View {
            port_names: &self.port_names,
            workers: &self.workers,
            control: &self.control,
            neigh: &self.neigh,
            tsc_hz: self.tsc_hz,
            srv6: pipeline.srv6(),
            sid_counters: &self.sid_counters,
            nat: self.nat.as_deref(),
            nat_workers: &self.nat_workers,
            storage: &self.storage,
            input: &self.input_counters,
            build: BuildInfo::CURRENT,
        }
    }

    /// A short summary of the totals, for the log at shutdown.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        for (i, name) in self.port_names.iter().enumerate() {
            let p = i as u16;
            let rx: u64 =
                self.workers.iter().flat_map(|w| &w.rx).filter(|q| q.port == p).map(|q| q.packets.get()).sum();
            let tx: u64 =
                self.workers.iter().flat_map(|w| &w.tx).filter(|q| q.port == p).map(|q| q.packets.get()).sum();
            let _ = writeln!(s, "  port {name}: rx_packets={rx} tx_packets={tx}");
        }
        let pipeline = self.pipeline.load();
        let view = self.view(&pipeline);
        for &r in DropReason::ALL {
            let v = view.drops(r);
            if v > 0 {
                let _ = writeln!(s, "  drops{{reason={}}}={v}", r.label());
            }
        }
        for &r in PuntReason::ALL {
            let v: u64 = self.workers.iter().map(|w| w.punts.get(r)).sum();
            if v > 0 {
                let _ = writeln!(s, "  punts{{reason={}}}={v}", r.label());
            }
        }
        let completed: u64 = self.input_counters.iter().map(|c| c.checksums_completed.get()).sum();
        if completed > 0 {
            let _ = writeln!(s, "  checksums_completed={completed}");
        }
        if let Some(n) = &self.nat {
            let _ = writeln!(
                s,
                "  nat: sessions={} mappings={} mappings_created={} mappings_retired={} subscriber_limit_hits={}",
                n.sessions.get(),
                n.mappings.get(),
                n.mappings_created.get(),
                n.mappings_retired.get(),
                n.subscriber_limit_hits.get()
            );
        }
        let c = &self.control;
        let _ = writeln!(
            s,
            "  arp_replies_sent={} nd_adverts_sent={} icmp_errors_sent={}",
            c.arp_replies_sent.get(),
            c.nd_adverts_sent.get(),
            IcmpErrorKind::ALL.iter().map(|&k| c.icmp_errors.get(k)).sum::<u64>()
        );
        s
    }
}

/// Serves the endpoint on `addr` until `stop` is set. Bind errors are
/// returned before the thread starts, so a busy port fails start-up.
pub fn serve(
    addr: SocketAddr,
    source: Arc<MetricsSource>,
    api: Arc<Api>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let listener = TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    std::thread::Builder::new().name("metrics".into()).spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((stream, _)) => {
                    if let Err(e) = handle(stream, &source, &api) {
                        tracing::debug!(error = %e, "metrics request failed");
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "metrics accept failed");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    })
}

fn handle(mut stream: TcpStream, source: &MetricsSource, api: &Api) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut buf = [0u8; 2048];
    let mut n = 0;
    while n < buf.len() {
        let k = stream.read(&mut buf[n..])?;
        if k == 0 {
            break;
        }
        n += k;
        if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") || buf[..n].windows(2).any(|w| w == b"\n\n") {
            break;
        }
    }
    let req = String::from_utf8_lossy(&buf[..n]);
    let mut parts = req.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (status, ctype, body) = match (method, path) {
        ("GET", "/metrics") => ("200 OK", promtext::CONTENT_TYPE, source.render()),
        ("GET", "/neighbors") => page(api, &["show neighbors"]),
        ("GET", "/srv6") => page(api, &["show srv6 sids", "show srv6 policies"]),
        ("GET", p) if p == "/nat/sessions" || p.starts_with("/nat/sessions?") => {
            let query = p.split_once('?').map_or("", |(_, q)| q).replace('&', " ");
            page(api, &[&format!("show nat sessions {query}")])
        }
        ("GET", p) if p.starts_with("/api/") => api_json(api, p),
        (m, p) if p.starts_with("/nat/cluster") => {
            let (status, body) = crate::natcluster::route(source.nat_cluster.as_deref(), m, p);
            (status, "text/plain; charset=utf-8", body)
        }
        ("GET", "/") => (
            "200 OK",
            "text/plain; charset=utf-8",
            "appliance: /metrics /neighbors /srv6 /nat/sessions /nat/cluster /api/show/<what> (JSON)\n".to_owned(),
        ),
        ("GET", _) => ("404 Not Found", "text/plain; charset=utf-8", "not found\n".to_owned()),
        _ => ("405 Method Not Allowed", "text/plain; charset=utf-8", "only GET\n".to_owned()),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())?;
    stream.flush()
}

/// A page of the control API's text for `commands` (read-only `show`s).
fn page(api: &Api, commands: &[&str]) -> (&'static str, &'static str, String) {
    let mut body = String::new();
    for c in commands {
        match api.call(c) {
            Ok(r) => body.push_str(&r.text),
            Err(e) => return ("400 Bad Request", "text/plain; charset=utf-8", format!("{e}\n")),
        }
    }
    ("200 OK", "text/plain; charset=utf-8", body)
}

/// `GET /api/show/<what>[/<more>][?key=value&...]`: a `show` command's data
/// as JSON (HTTP gets the read-only commands only; changes go through the
/// control socket).
fn api_json(api: &Api, path: &str) -> (&'static str, &'static str, String) {
    let (path, query) = path.split_once('?').unwrap_or((path, ""));
    let mut words: Vec<&str> = path.trim_start_matches("/api/").split('/').filter(|w| !w.is_empty()).collect();
    words.extend(query.split('&').filter(|q| !q.is_empty()));
    if words.first() != Some(&"show") {
        return ("403 Forbidden", "application/json", "{\"error\":\"only show commands over HTTP\"}\n".into());
    }
    match api.call(&words.join(" ")) {
        Ok(r) => ("200 OK", "application/json", format!("{}\n", r.data)),
        Err(e) => ("400 Bad Request", "application/json", format!("{}\n", serde_json::json!({ "error": e }))),
    }
}
