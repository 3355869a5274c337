//! Fetching chunks from the object store: a pool of fetch threads behind two queues.
//!
//! * **One fetch per chunk.** A chunk being fetched has an entry in the in-flight table (by
//!   digest); every reader that needs it meanwhile adds a waiter to that entry instead of
//!   fetching again. When the fetch ends, the chunk is checked against its digest, written to
//!   the cache, and every waiter gets the bytes (or the error).
//! * **Demand first, prefetch bounded.** Reads the kernel is waiting for go to the demand
//!   queue, which every fetch thread serves first; prefetches go to their own queue, and at
//!   most `prefetch_parallel` fetch threads (fewer than `fetchers`) work on prefetches at once,
//!   so a read never waits behind the whole prefetch plan. A demand for a chunk whose
//!   prefetch is still queued moves it to the demand queue.
//! * **Candidates.** A chunk's replicas are in the manifest (node ids). First the request is
//!   SR-steered: one socket per segment list with a type-4 SRH listing the replicas' storage
//!   SIDs in manifest order (nodes that failed recently left out), sent to the last one; the
//!   first candidate whose policy accepts serves it (`objcli::steer`). If that fails (no reply:
//!   the first segment is taken as down and left out for `node_down_ms`; a wrong digest; an
//!   error status), the replicas are asked directly at their replica addresses, one after the
//!   other. Only when every candidate failed does the fetch fail: the waiting reads get EIO
//!   and the error names every candidate and why.
//!
//! Limits: a dead node inside a steered list (not first) is found only through the direct
//! attempts; node addresses come from the metadata service's node list, read at start and
//! again when a manifest names a node not known yet.

use std::collections::{HashMap, VecDeque};
use std::net::{Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use objcli::client::Target;
use objcli::{steer, Config as ClientConfig, StorageClient, Transport};
use objmeta::client::MetaClient;

use crate::cache::{hex, sha256, ChunkCache, Digest};
use crate::metrics::Metrics;

/// Tunables of the fetcher.
#[derive(Clone, Debug)]
pub struct FetchConfig {
    /// Fetch threads.
    pub fetchers: usize,
    /// Of those, at most this many on prefetches at once.
    pub prefetch_parallel: usize,
    /// Storage service UDP port.
    pub port: u16,
    /// Per-request timeout before a retransmission, and sends before a candidate is given up.
    pub timeout: Duration,
    pub tries: u32,
    /// Fragments in flight per candidate.
    pub window: usize,
    /// SR-steer the first attempt.
    pub steer: bool,
    /// How long a node that failed is left out of the candidates.
    pub node_down: Duration,
    /// Per node id, a socket address to use instead of its replica address (tests).
    pub node_addrs: HashMap<String, SocketAddr>,
    /// Added before every fetch (emulated round-trip delay for benchmarks; 0: none).
    pub delay: Duration,
}

impl Default for FetchConfig {
    fn default() -> Self {
        FetchConfig {
            fetchers: 8,
            prefetch_parallel: 4,
            port: objcli::client::DEFAULT_PORT,
            timeout: Duration::from_millis(50),
            tries: 4,
            window: 64,
            steer: true,
            node_down: Duration::from_secs(10),
            node_addrs: HashMap::new(),
            delay: Duration::ZERO,
        }
    }
}

/// One chunk to fetch.
#[derive(Clone, Debug)]
pub struct ChunkSpec {
    pub digest: Digest,
    pub object: u64,
    pub len: u32,
    pub replicas: Arc<Vec<String>>,
}

/// Why a chunk was asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    Demand,
    Prefetch,
}

/// Gets the chunk's bytes, or the error text.
pub type Waiter = Box<dyn FnOnce(Result<Arc<Vec<u8>>, String>) + Send>;

/// What [`Fetcher::request`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Requested {
    /// The chunk is in the cache already (the waiter was not taken: read it there).
    Present,
    /// A fetch was queued, or one in flight was joined; the waiter will be called.
    Queued,
}

struct InFlight {
    spec: ChunkSpec,
    waiters: Vec<Waiter>,
    started: bool,
    origin: Origin,
}

#[derive(Default)]
struct Queues {
    demand: VecDeque<Digest>,
    prefetch: VecDeque<Digest>,
    prefetch_running: usize,
    inflight: HashMap<Digest, InFlight>,
}

#[derive(Clone)]
struct NodeInfo {
    prefix: Ipv6Addr,
    sid: Ipv6Addr,
    down_until: Option<Instant>,
}

/// See the module doc.
pub struct Fetcher {
    cfg: FetchConfig,
    meta: MetaClient,
    cache: Arc<ChunkCache>,
    metrics: Arc<Metrics>,
    q: Mutex<Queues>,
    cv: Condvar,
    nodes: Mutex<HashMap<String, NodeInfo>>,
    stop: AtomicBool,
}

impl Fetcher {
    pub fn new(cfg: FetchConfig, meta: MetaClient, cache: Arc<ChunkCache>, metrics: Arc<Metrics>) -> Arc<Fetcher> {
        Arc::new(Fetcher {
            cfg,
            meta,
            cache,
            metrics,
            q: Mutex::new(Queues::default()),
            cv: Condvar::new(),
            nodes: Mutex::new(HashMap::new()),
            stop: AtomicBool::new(false),
        })
    }

    /// Starts the fetch threads.
    pub fn start(self: &Arc<Self>) -> Vec<JoinHandle<()>> {
        (0..self.cfg.fetchers.max(1))
            .map(|i| {
                let f = self.clone();
                std::thread::Builder::new()
                    .name(format!("fetch-{i}"))
                    .spawn(move || f.worker())
                    .expect("spawn fetch thread")
            })
            .collect()
    }

    /// Stops the fetch threads (queued fetches fail their waiters).
    pub fn shutdown(&self) {
        self.stop.store(true, Ordering::SeqCst);
        let waiters: Vec<Waiter> = {
            let mut q = self.q.lock().expect("lock");
            q.demand.clear();
            q.prefetch.clear();
            let keys: Vec<Digest> = q.inflight.iter().filter(|(_, f)| !f.started).map(|(d, _)| *d).collect();
            keys.iter().flat_map(|d| q.inflight.remove(d).map(|f| f.waiters).unwrap_or_default()).collect()
        };
        for w in waiters {
            w(Err("the agent is stopping".into()));
        }
        self.cv.notify_all();
    }

    /// Reads the metadata service's node list (addresses of every node).
    pub fn refresh_nodes(&self) -> Result<usize, String> {
        let nodes = self.meta.nodes().map_err(|e| format!("metadata service: {e}"))?;
        let mut t = self.nodes.lock().expect("lock");
        for n in nodes {
            let down_until = t.get(&n.id).and_then(|o| o.down_until);
            t.insert(n.id.clone(), NodeInfo { prefix: n.object_prefix.addr(), sid: n.storage_sid, down_until });
        }
        Ok(t.len())
    }

    /// Asks for a chunk (see [`Requested`]). `waiter` gets the bytes when the fetch ends.
    pub fn request(&self, spec: &ChunkSpec, origin: Origin, waiter: Option<Waiter>) -> Requested {
        let mut q = self.q.lock().expect("lock");
        if let Some(f) = q.inflight.get_mut(&spec.digest) {
            if let Some(w) = waiter {
                f.waiters.push(w);
                Metrics::add(&self.metrics.fetch_joins, 1);
            }
            if origin == Origin::Demand && f.origin == Origin::Prefetch && !f.started {
                f.origin = Origin::Demand;
                q.demand.push_back(spec.digest);
                self.cv.notify_one();
            }
            return Requested::Queued;
        }
        // Checked under the queue lock: a fetch that just ended inserted into the cache
        // before it left the in-flight table.
        if self.cache.contains(&spec.digest) {
            return Requested::Present;
        }
        q.inflight.insert(
            spec.digest,
            InFlight { spec: spec.clone(), waiters: waiter.into_iter().collect(), started: false, origin },
        );
        match origin {
            Origin::Demand => q.demand.push_back(spec.digest),
            Origin::Prefetch => q.prefetch.push_back(spec.digest),
        }
        self.cv.notify_one();
        Requested::Queued
    }

    /// Drops queued prefetches that nobody waits for and that `drop_it` selects; returns how
    /// many.
    pub fn cancel_prefetches(&self, drop_it: &dyn Fn(&Digest) -> bool) -> usize {
        let mut q = self.q.lock().expect("lock");
        let mut n = 0;
        let queued: Vec<Digest> = q.prefetch.drain(..).collect();
        for d in queued {
            let cancel = match q.inflight.get(&d) {
                Some(f) => !f.started && f.origin == Origin::Prefetch && f.waiters.is_empty() && drop_it(&d),
                None => false,
            };
            if cancel {
                q.inflight.remove(&d);
                n += 1;
            } else {
                q.prefetch.push_back(d);
            }
        }
        Metrics::add(&self.metrics.prefetch_cancelled, n as u64);
        n
    }

    /// Fetches in flight or queued.
    pub fn pending(&self) -> usize {
        self.q.lock().expect("lock").inflight.len()
    }

    fn next_job(&self) -> Option<(Digest, ChunkSpec, Origin)> {
        let mut q = self.q.lock().expect("lock");
        loop {
            if self.stop.load(Ordering::SeqCst) {
                return None;
            }
            while let Some(d) = q.demand.pop_front() {
                if let Some(f) = q.inflight.get_mut(&d) {
                    if !f.started {
                        f.started = true;
                        return Some((d, f.spec.clone(), Origin::Demand));
                    }
                }
            }
            if q.prefetch_running < self.cfg.prefetch_parallel.max(1) {
                while let Some(d) = q.prefetch.pop_front() {
                    if let Some(f) = q.inflight.get_mut(&d) {
                        if !f.started {
                            f.started = true;
                            let o = f.origin;
                            let spec = f.spec.clone();
                            if o == Origin::Prefetch {
                                q.prefetch_running += 1;
                            }
                            return Some((d, spec, o));
                        }
                    }
                }
            }
            q = self.cv.wait_timeout(q, Duration::from_millis(200)).expect("lock").0;
        }
    }

    fn worker(self: Arc<Self>) {
        let mut clients = Clients::default();
        while let Some((d, spec, origin)) = self.next_job() {
            let t0 = Instant::now();
            let r = self.fetch(&spec, &mut clients);
            self.metrics.fetch_latency.observe(t0.elapsed());
            let r = match r {
                Ok(data) => {
                    let (c, b) = match origin {
                        Origin::Demand => (&self.metrics.chunks_fetched_demand, &self.metrics.bytes_fetched_demand),
                        Origin::Prefetch => {
                            (&self.metrics.chunks_fetched_prefetch, &self.metrics.bytes_fetched_prefetch)
                        }
                    };
                    Metrics::add(c, 1);
                    Metrics::add(b, data.len() as u64);
                    if let Err(e) = self.cache.insert(&d, &data) {
                        self.metrics.set_error(format!("cache write of chunk {}: {e}", hex(&d)));
                    }
                    Ok(Arc::new(data))
                }
                Err(e) => {
                    Metrics::add(&self.metrics.fetch_failures, 1);
                    self.metrics.set_error(e.clone());
                    eprintln!("imgagent: {e}");
                    Err(e)
                }
            };
            let waiters = {
                let mut q = self.q.lock().expect("lock");
                if origin == Origin::Prefetch {
                    q.prefetch_running -= 1;
                }
                q.inflight.remove(&d).map(|f| f.waiters).unwrap_or_default()
            };
            self.cv.notify_all();
            for w in waiters {
                w(r.clone());
            }
        }
    }

    fn node(&self, id: &str) -> Option<NodeInfo> {
        if let Some(n) = self.nodes.lock().expect("lock").get(id) {
            return Some(n.clone());
        }
        let _ = self.refresh_nodes();
        self.nodes.lock().expect("lock").get(id).cloned()
    }

    fn mark_down(&self, id: &str) {
        if let Some(n) = self.nodes.lock().expect("lock").get_mut(id) {
            n.down_until = Some(Instant::now() + self.cfg.node_down);
        }
    }

    fn client_config(&self) -> ClientConfig {
        let mut c =
            ClientConfig { port: self.cfg.port, node_addrs: self.cfg.node_addrs.clone(), ..ClientConfig::default() };
        c.transport.timeout = self.cfg.timeout;
        c.transport.tries = self.cfg.tries;
        c.transport.window = self.cfg.window;
        c
    }

    /// One chunk from its candidates (see the module doc), digest checked.
    fn fetch(&self, spec: &ChunkSpec, clients: &mut Clients) -> Result<Vec<u8>, String> {
        if !self.cfg.delay.is_zero() {
            std::thread::sleep(self.cfg.delay);
        }
        let now = Instant::now();
        let mut nodes: Vec<(String, NodeInfo)> = Vec::new();
        let mut failures: Vec<String> = Vec::new();
        for id in spec.replicas.iter() {
            match self.node(id) {
                Some(n) => nodes.push((id.clone(), n)),
                None => failures.push(format!("{id}: not a known node")),
            }
        }
        // Up (not recently failed) nodes first, each group in manifest order.
        nodes.sort_by_key(|(_, n)| n.down_until.is_some_and(|t| t > now));
        let what = format!("chunk {} (object {:#x})", &hex(&spec.digest)[..16], spec.object);
        let check = |data: Vec<u8>| -> Result<Vec<u8>, String> {
            if sha256(&data) == spec.digest {
                Ok(data)
            } else {
                Metrics::add(&self.metrics.digest_mismatches, 1);
                Err("digest mismatch".into())
            }
        };
        let up: Vec<&(String, NodeInfo)> =
            nodes.iter().filter(|(_, n)| n.down_until.is_none_or(|t| t <= now)).collect();
        if self.cfg.steer && !up.is_empty() && self.cfg.node_addrs.is_empty() {
            let sids: Vec<Ipv6Addr> = up.iter().map(|(_, n)| n.sid).collect();
            let label = format!("steered via {}", up.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>().join(","));
            match clients.steered(&sids, &self.client_config()) {
                Ok((c, dst)) => {
                    let t = Target { label: label.clone(), dst };
                    match c
                        .read_known(spec.object, u64::from(spec.len), 1, &[t])
                        .map_err(|e| e.to_string())
                        .and_then(|(d, _, _)| check(d))
                    {
                        Ok(d) => return Ok(d),
                        Err(e) => {
                            Metrics::add(&self.metrics.failovers, 1);
                            if !e.contains("digest") {
                                self.mark_down(&up[0].0);
                            }
                            failures.push(format!("{label}: {e}"));
                        }
                    }
                }
                Err(e) => failures.push(format!("{label}: {e}")),
            }
        }
        for (id, n) in &nodes {
            let dst = self.cfg.node_addrs.get(id).copied().unwrap_or_else(|| {
                SocketAddr::new(Ipv6Addr::from(u128::from(n.prefix) | u128::from(spec.object)).into(), self.cfg.port)
            });
            let t = Target { label: id.clone(), dst };
            let c = clients.direct(&self.client_config())?;
            match c
                .read_known(spec.object, u64::from(spec.len), 1, &[t])
                .map_err(|e| e.to_string())
                .and_then(|(d, _, _)| check(d))
            {
                Ok(d) => return Ok(d),
                Err(e) => {
                    Metrics::add(&self.metrics.failovers, 1);
                    self.mark_down(id);
                    failures.push(format!("{id}: {e}"));
                }
            }
        }
        Err(format!("{what}: no replica could serve it: {}", failures.join("; ")))
    }
}

/// A fetch thread's sockets: one direct client, one steered client per segment list.
#[derive(Default)]
struct Clients {
    direct: Option<StorageClient>,
    steered: HashMap<Vec<Ipv6Addr>, (StorageClient, SocketAddr)>,
}

impl Clients {
    fn direct(&mut self, cfg: &ClientConfig) -> Result<&mut StorageClient, String> {
        if self.direct.is_none() {
            self.direct = Some(StorageClient::new(cfg.clone()).map_err(|e| format!("socket: {e}"))?);
        }
        Ok(self.direct.as_mut().expect("set"))
    }

    fn steered(&mut self, sids: &[Ipv6Addr], cfg: &ClientConfig) -> Result<(&mut StorageClient, SocketAddr), String> {
        if !self.steered.contains_key(sids) {
            let (sock, dst) = steer::steered_socket(sids, cfg.port).map_err(|e| format!("steered socket: {e}"))?;
            let c = StorageClient::with_transport(cfg.clone(), Transport::with_socket(sock, cfg.transport.clone()));
            self.steered.insert(sids.to_vec(), (c, dst));
        }
        let (c, dst) = self.steered.get_mut(sids).expect("inserted");
        Ok((c, *dst))
    }
}
