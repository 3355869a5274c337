//! The metrics endpoint's HTTP server: `GET /metrics` (the Prometheus text format, rendered
//! by [`render`]; every metric is described in `docs/metrics.md`), plus listings for people:
//! `GET /neighbors`, `GET /srv6`, `GET /nat/sessions`.
//!
//! Counters live in per-core blocks ([`dataplane::stats`]); a scrape sums them with relaxed
//! loads on this thread. Nothing on the fast path knows metrics exist. The HTTP server is a
//! small blocking loop on its own (non-EAL) thread; it serves one request per connection and
//! is not a fast path. The pages (listings) and the metric rendering are separate: the
//! pages are methods of [`MetricsSource`] below, the metrics are [`render::render`].

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use std::sync::mpsc::Sender;
use std::sync::Mutex;

use crate::natcore::{NatClock, NatQuery};
use crate::worker::WorkerCounters;
use dataplane::fib::neigh::NeighborTable;
use dataplane::nat::fast::NatWorkerCounters;
use dataplane::nat::mapper::NatStats;
use dataplane::nat::session::SessionFilter;
use dataplane::nat::translate::Proto;
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
    pub pool: rte::Mempool,
    /// (ring name, ring)
    pub rings: Vec<(String, Arc<rte::MbufRing>)>,
    pub tsc_hz: u64,
    pub pipeline: Arc<Pipeline>,
    /// Per worker: one block of counters per local SID.
    pub sid_counters: Vec<Arc<Vec<dataplane::srv6::SidCounters>>>,
    /// The NAT mapping server's figures (with NAT on).
    pub nat: Option<Arc<NatStats>>,
    /// Per worker: the NAT cache counters (with NAT on).
    pub nat_workers: Vec<Arc<NatWorkerCounters>>,
    /// Asks the mapping core for session listings (with NAT on).
    pub nat_query: Option<Mutex<Sender<NatQuery>>>,
    pub nat_clock: NatClock,
    /// The storage service's counters, one block per worker (with `storage:` configured).
    pub storage: Vec<Arc<ServiceCounters>>,
}

impl MetricsSource {
    /// Renders every metric in the Prometheus text format ([`render::render`]).
    pub fn render(&self) -> String {
        let readings = Readings {
            ports: self.ports.iter().map(|p| p.stats()).collect(),
            pool_in_use: self.pool.in_use(),
            pool_capacity: self.pool.capacity(),
            rings: self.rings.iter().map(|(n, r)| (n.clone(), r.stats())).collect(),
            dpdk_version: rte::version(),
        };
        render::render(&self.view(), &readings)
    }

    /// The counters, for [`render::render`].
    fn view(&self) -> View<'_> {
        View {
            port_names: &self.port_names,
            workers: &self.workers,
            control: &self.control,
            neigh: &self.neigh,
            tsc_hz: self.tsc_hz,
            sids: self.pipeline.srv6().sids(),
            sid_counters: &self.sid_counters,
            nat: self.nat.as_deref(),
            nat_workers: &self.nat_workers,
            storage: &self.storage,
            build: BuildInfo::CURRENT,
        }
    }

    /// `GET /nat/sessions?inside=A&public=A&remote=A&proto=udp&limit=N`:
    /// the mapping server's live sessions, one per line.
    pub fn nat_sessions_text(&self, query: &str) -> Result<String, String> {
        let Some(tx) = &self.nat_query else {
            return Err("NAT is not configured\n".into());
        };
        let mut filter = SessionFilter::default();
        let mut limit = 1000usize;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let addr = || v.parse().map_err(|_| format!("{k}: {v:?} is not an IPv4 address\n"));
            match k {
                "inside" => filter.inside_addr = Some(addr()?),
                "public" => filter.public_addr = Some(addr()?),
                "remote" => filter.remote_addr = Some(addr()?),
                "proto" => {
                    filter.proto = Some(match v {
                        "tcp" => Proto::Tcp,
                        "udp" => Proto::Udp,
                        "icmp" => Proto::Icmp,
                        _ => return Err(format!("proto: {v:?} is not tcp, udp or icmp\n")),
                    })
                }
                "limit" => limit = v.parse().map_err(|_| format!("limit: {v:?} is not a number\n"))?,
                _ => return Err(format!("unknown filter {k:?} (inside, public, remote, proto, limit)\n")),
            }
        }
        let (reply_tx, reply_rx) = std::sync::mpsc::sync_channel(1);
        tx.lock()
            .map_err(|_| "internal error\n".to_string())?
            .send(NatQuery { filter, limit, reply: reply_tx })
            .map_err(|_| "the mapping server is not running\n".to_string())?;
        let sessions = reply_rx
            .recv_timeout(Duration::from_secs(2))
            .map_err(|_| "the mapping server did not answer\n".to_string())?;
        let now = self.nat_clock.now_ms();
        let mut s = format!(
            "{:<5} {:<21} {:<21} {:<21} {:<11} {:>8} {:>10}\n",
            "proto", "inside", "public", "remote", "state", "idle_s", "expires_s"
        );
        for i in &sessions {
            let b = &i.binding;
            let _ = writeln!(
                s,
                "{:<5} {:<21} {:<21} {:<21} {:<11} {:>8} {:>10}",
                b.proto.name(),
                format!("{}:{}", b.inside_addr, b.inside_port),
                format!("{}:{}", b.public_addr, b.public_port),
                format!("{}:{}", b.remote_addr, b.remote_port),
                i.tcp_state.map_or("-", |t| t.name()),
                now.saturating_sub(i.last_ms) / 1000,
                i.expires_ms.saturating_sub(now) / 1000
            );
        }
        let _ = writeln!(s, "{} sessions shown", sessions.len());
        Ok(s)
    }

    /// A human-readable listing of the neighbour table.
    pub fn neighbors_text(&self) -> String {
        let mut entries: Vec<_> = self.neigh.entries().collect();
        entries.sort_by_key(|e| (e.port, e.ip));
        let mut s = format!("{:<10} {:<40} {:<18} {}\n", "port", "address", "mac", "state");
        for e in entries {
            let m = e.mac;
            let _ = writeln!(
                s,
                "{:<10} {:<40} {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}  {}",
                self.port_names.get(usize::from(e.port)).map(String::as_str).unwrap_or("?"),
                e.ip.to_string(),
                m[0],
                m[1],
                m[2],
                m[3],
                m[4],
                m[5],
                e.state.name()
            );
        }
        s
    }

    /// A human-readable listing of local SIDs and steering policies.
    pub fn srv6_text(&self) -> String {
        let mut s = String::from("local SIDs\n");
        let _ = writeln!(s, "  {:<40} {:<9} {:<22} {:>12} {:>12}", "sid", "behavior", "detail", "packets", "drops");
        for (i, sid) in self.pipeline.srv6().sids().iter().enumerate() {
            let sum = |f: &dyn Fn(&dataplane::srv6::SidCounters) -> u64| -> u64 {
                self.sid_counters.iter().map(|w| w.get(i).map_or(0, f)).sum()
            };
            let drops = sum(&|c| DropReason::ALL.iter().map(|&r| c.drops.get(r)).sum());
            let mut detail = String::new();
            if let Some((p, nh)) = sid.adjacency {
                detail = format!("via {nh} {}", self.port_names.get(usize::from(p)).map(String::as_str).unwrap_or("?"));
            }
            if let Some(pol) = sid.policy {
                detail = match pol {
                    dataplane::srv6::StoragePolicy::SrC { threshold } => format!("sr-c<{threshold}"),
                    other => other.name().to_owned(),
                };
            }
            if sid.psp {
                detail.push_str(" psp");
            }
            if sid.usd {
                detail.push_str(" usd");
            }
            let _ = writeln!(
                s,
                "  {:<40} {:<9} {:<22} {:>12} {:>12}",
                sid.sid.to_string(),
                sid.behavior.name(),
                detail.trim(),
                sum(&|c| c.packets.get()),
                drops
            );
        }
        s.push_str("steering policies\n");
        for p in self.pipeline.srv6().policies() {
            let segs: Vec<String> = p.segments.iter().map(|a| a.to_string()).collect();
            let _ = writeln!(
                s,
                "  {}/{} {} segments [{}]",
                p.prefix,
                p.len,
                if p.reduced { "H.Encaps.Red" } else { "H.Encaps" },
                segs.join(", ")
            );
        }
        s
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
        let view = self.view();
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
    stop: Arc<AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let listener = TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    std::thread::Builder::new().name("metrics".into()).spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((stream, _)) => {
                    if let Err(e) = handle(stream, &source) {
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

fn handle(mut stream: TcpStream, source: &MetricsSource) -> std::io::Result<()> {
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
        ("GET", "/neighbors") => ("200 OK", "text/plain; charset=utf-8", source.neighbors_text()),
        ("GET", "/srv6") => ("200 OK", "text/plain; charset=utf-8", source.srv6_text()),
        ("GET", p) if p == "/nat/sessions" || p.starts_with("/nat/sessions?") => {
            match source.nat_sessions_text(p.split_once('?').map_or("", |(_, q)| q)) {
                Ok(body) => ("200 OK", "text/plain; charset=utf-8", body),
                Err(e) => ("400 Bad Request", "text/plain; charset=utf-8", e),
            }
        }
        ("GET", "/") => {
            ("200 OK", "text/plain; charset=utf-8", "appliance: /metrics /neighbors /srv6 /nat/sessions\n".to_owned())
        }
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
