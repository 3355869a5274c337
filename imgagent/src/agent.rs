//! The agent's state: images (manifest, FUSE inode, erofs mount, the current start), the chunk
//! cache, the fetcher; mount / ready / unmount / pull / gc, the read path behind FUSE, start
//! traces and prefetch.
//!
//! A **start** (a session) begins when an image is mounted while no container uses it (a cold
//! mount: the kernel's page cache of the image is empty, so every first access reaches the
//! agent). It records the first access to each chunk with its time, prefetches along the
//! image's merged trace, and ends at `ready` (the container answers), when the image is
//! unmounted, or after `trace_window`, whichever comes first. Its trace is then stored at the
//! metadata service, queued prefetches it no longer needs are dropped, and its prefetch
//! accuracy (prefetched and used / prefetched) and coverage (needed and prefetched / needed,
//! where needed = read by the start and not cached when the start began) are counted.
//!
//! Prefetch window: the plan is fetched at most `prefetch_ahead` chunks beyond the furthest
//! plan position this start has read so far, so a start that stops following the plan (a
//! different command, other files) stops pulling the rest of it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use objmeta::client::MetaClient;
use objmeta::image::{ImageManifest, Trace, TraceEntry};
use serde_json::{json, Value};

use crate::cache::{parse_hex, ChunkCache, Digest, Read};
use crate::fetch::{ChunkSpec, Fetcher, Origin, Requested};
use crate::metrics::Metrics;
use crate::mount;
use crate::trace;

/// Tunables of the agent (command-line flags of `imgagent serve`; docs/images.md).
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// Cache, manifests, FUSE mount point and image mounts live here.
    pub state_dir: PathBuf,
    pub cache_max_bytes: u64,
    /// Chunks fetched at most this far beyond the furthest plan position read.
    pub prefetch_ahead: usize,
    /// A chunk is prefetched when more than this fraction of the traces read it.
    pub min_support: f64,
    /// Newest traces merged.
    pub traces_merged_max: usize,
    /// A start's trace ends at the latest this long after the mount.
    pub trace_window: Duration,
    /// read_ahead_kb of the FUSE file and of the erofs mount.
    pub fuse_readahead_kb: u32,
    pub erofs_readahead_kb: u32,
    /// Name in the traces this host records.
    pub host: String,
    pub upload_traces: bool,
}

/// A request error with the HTTP status it maps to.
#[derive(Debug)]
pub struct ApiError(pub u16, pub String);

type ApiResult = Result<Value, ApiError>;

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// One image known to the agent.
pub struct ImageState {
    pub name: String,
    pub ino: u64,
    pub manifest: ImageManifest,
    pub digests: Vec<Digest>,
    replicas: Vec<Arc<Vec<String>>>,
    inner: Mutex<ImageInner>,
}

struct ImageInner {
    refs: usize,
    mnt: Option<PathBuf>,
    session: Option<Arc<Session>>,
    last_used: Instant,
}

impl ImageState {
    fn new(m: ImageManifest, ino: u64) -> Result<ImageState, String> {
        let mut digests = Vec::with_capacity(m.chunks.len());
        let mut lists: HashMap<Vec<String>, Arc<Vec<String>>> = HashMap::new();
        let mut replicas = Vec::with_capacity(m.chunks.len());
        for c in &m.chunks {
            digests.push(
                parse_hex(&c.digest).ok_or_else(|| format!("manifest of {}: bad digest {:?}", m.name, c.digest))?,
            );
            replicas.push(lists.entry(c.replicas.clone()).or_insert_with(|| Arc::new(c.replicas.clone())).clone());
        }
        Ok(ImageState {
            name: m.name.clone(),
            ino,
            manifest: m,
            digests,
            replicas,
            inner: Mutex::new(ImageInner { refs: 0, mnt: None, session: None, last_used: Instant::now() }),
        })
    }

    pub fn spec(&self, c: usize) -> ChunkSpec {
        ChunkSpec {
            digest: self.digests[c],
            object: self.manifest.chunks[c].object,
            len: self.manifest.chunk_len(c),
            replicas: self.replicas[c].clone(),
        }
    }

    pub fn session(&self) -> Option<Arc<Session>> {
        self.inner.lock().expect("lock").session.clone()
    }
}

/// One start of an image (see the module doc).
pub struct Session {
    /// Store the trace when the start ends.
    upload: bool,
    opened: Instant,
    started_ms: u64,
    st: Mutex<SessState>,
    cv: Condvar,
}

struct SessState {
    recording: bool,
    entries: Vec<TraceEntry>,
    seen: Vec<bool>,
    plan: Vec<u32>,
    rank: Vec<u32>,
    cursor: usize,
    next: usize,
    launched: Vec<bool>,
    launched_count: u64,
    needed: u64,
    needed_prefetched: u64,
    first_byte: bool,
}

impl Session {
    fn new(chunks: usize, plan: Vec<u32>) -> Session {
        let mut rank = vec![u32::MAX; chunks];
        for (i, &c) in plan.iter().enumerate() {
            rank[c as usize] = i as u32;
        }
        Session {
            upload: true,
            opened: Instant::now(),
            started_ms: now_ms(),
            st: Mutex::new(SessState {
                recording: true,
                entries: Vec::new(),
                seen: vec![false; chunks],
                plan,
                rank,
                cursor: 0,
                next: 0,
                launched: vec![false; chunks],
                launched_count: 0,
                needed: 0,
                needed_prefetched: 0,
                first_byte: false,
            }),
            cv: Condvar::new(),
        }
    }

    /// Records a read of chunk `c` (`cached`: served from the cache at once). Returns whether
    /// it is the first byte this start served.
    fn access(&self, c: usize, cached: bool) -> bool {
        let mut s = self.st.lock().expect("lock");
        if !s.recording {
            return false;
        }
        let first = !s.first_byte;
        s.first_byte = true;
        if !s.seen[c] {
            s.seen[c] = true;
            let at_us = self.opened.elapsed().as_micros() as u64;
            s.entries.push(TraceEntry { chunk: c as u32, at_us });
            if s.launched[c] {
                s.needed += 1;
                s.needed_prefetched += 1;
            } else if !cached {
                s.needed += 1;
            }
            let r = s.rank[c];
            if r != u32::MAX && r as usize + 1 > s.cursor {
                s.cursor = r as usize + 1;
                self.cv.notify_all();
            }
        }
        first
    }
}

/// The agent.
pub struct Agent {
    pub cfg: AgentConfig,
    pub meta: MetaClient,
    pub cache: Arc<ChunkCache>,
    pub fetcher: Arc<Fetcher>,
    pub metrics: Arc<Metrics>,
    images: RwLock<BTreeMap<u64, Arc<ImageState>>>,
    by_name: Mutex<HashMap<String, u64>>,
    next_ino: AtomicU64,
    /// Serialises mount/unmount/pull/gc (the control plane); reads never take it.
    control: Mutex<()>,
}

impl Agent {
    pub fn new(
        cfg: AgentConfig,
        meta: MetaClient,
        cache: Arc<ChunkCache>,
        fetcher: Arc<Fetcher>,
        metrics: Arc<Metrics>,
    ) -> Agent {
        Agent {
            cfg,
            meta,
            cache,
            fetcher,
            metrics,
            images: RwLock::new(BTreeMap::new()),
            by_name: Mutex::new(HashMap::new()),
            next_ino: AtomicU64::new(2),
            control: Mutex::new(()),
        }
    }

    pub fn fuse_dir(&self) -> PathBuf {
        self.cfg.state_dir.join("fuse")
    }

    fn mnt_dir(&self, name: &str) -> PathBuf {
        self.cfg.state_dir.join("mnt").join(name)
    }

    fn manifest_path(&self, name: &str) -> PathBuf {
        self.cfg.state_dir.join("images").join(format!("{name}.json"))
    }

    /// The image with FUSE inode `ino`.
    pub fn by_ino(&self, ino: u64) -> Option<Arc<ImageState>> {
        self.images.read().expect("lock").get(&ino).cloned()
    }

    /// Every image (for the FUSE directory listing).
    pub fn list(&self) -> Vec<Arc<ImageState>> {
        self.images.read().expect("lock").values().cloned().collect()
    }

    pub fn lookup(&self, name: &str) -> Option<Arc<ImageState>> {
        let ino = *self.by_name.lock().expect("lock").get(name)?;
        self.by_ino(ino)
    }

    /// The manifest from the metadata service, or the copy kept from an earlier mount when the
    /// service cannot be reached (a missing image is an error either way).
    fn manifest(&self, name: &str) -> Result<ImageManifest, ApiError> {
        objmeta::image::validate_image_name(name).map_err(|e| ApiError(400, e.to_string()))?;
        match self.meta.image(name) {
            Ok(m) => {
                let _ = std::fs::create_dir_all(self.cfg.state_dir.join("images"));
                let _ = std::fs::write(self.manifest_path(name), serde_json::to_vec(&m).expect("json"));
                Ok(m)
            }
            Err(e) if e.is_not_found() => {
                Err(ApiError(404, format!("image {name}: not found at the metadata service")))
            }
            Err(e) => {
                match std::fs::read(self.manifest_path(name)).ok().and_then(|b| serde_json::from_slice(&b).ok()) {
                    Some(m) => {
                        eprintln!("imgagent: metadata service unreachable ({e}); using the kept manifest of {name}");
                        Ok(m)
                    }
                    None => Err(ApiError(503, format!("image {name}: metadata service: {e}"))),
                }
            }
        }
    }

    /// The image's state for this manifest: the known one if the digest matches, else a new
    /// inode (the old one must not be mounted).
    fn register(&self, m: ImageManifest) -> Result<Arc<ImageState>, ApiError> {
        if let Some(old) = self.lookup(&m.name) {
            if old.manifest.digest == m.digest {
                return Ok(old);
            }
            if old.inner.lock().expect("lock").refs > 0 {
                return Err(ApiError(
                    409,
                    format!("image {} changed at the metadata service while mounted here; unmount it first", m.name),
                ));
            }
            self.images.write().expect("lock").remove(&old.ino);
        }
        let ino = self.next_ino.fetch_add(1, Ordering::SeqCst);
        let name = m.name.clone();
        let img = Arc::new(ImageState::new(m, ino).map_err(|e| ApiError(502, e))?);
        self.images.write().expect("lock").insert(ino, img.clone());
        self.by_name.lock().expect("lock").insert(name, ino);
        Ok(img)
    }

    /// `POST /images/{name}/mount`: see the module doc. Body: `pull` (fetch everything first),
    /// `prefetch` (along the merged trace; default true), `trace` (store this start's trace;
    /// default true: false for a mount that is not a container start, e.g. an inspection).
    pub fn mount(self: &Arc<Self>, name: &str, body: &Value) -> ApiResult {
        let t0 = Instant::now();
        let _g = self.control.lock().expect("lock");
        let m = self.manifest(name)?;
        let img = self.register(m)?;
        let mut pulled = Value::Null;
        if body["pull"].as_bool().unwrap_or(false) {
            pulled = self.pull_locked(&img)?;
        }
        let mut inner = img.inner.lock().expect("lock");
        let mut predicted = 0;
        if inner.refs == 0 {
            let plan =
                if body["prefetch"].as_bool().unwrap_or(true) { self.plan(&img) } else { trace::Plan::default() };
            predicted = plan.order.len();
            let mut sess = Session::new(img.digests.len(), plan.order);
            sess.upload = body["trace"].as_bool().unwrap_or(true);
            let sess = Arc::new(sess);
            inner.session = Some(sess.clone());
            let dir = self.mnt_dir(name);
            std::fs::create_dir_all(&dir).map_err(|e| ApiError(500, format!("{}: {e}", dir.display())))?;
            let file = self.fuse_dir().join(name);
            // The mount reads the image through FUSE, whose read path takes this lock: let go
            // of it (the control lock keeps other mounts and unmounts out meanwhile).
            drop(inner);
            let mounted = mount::mount_erofs(&file, &dir);
            inner = img.inner.lock().expect("lock");
            match mounted {
                Ok(bdi) => {
                    if let Some(b) = bdi {
                        if let Err(e) = mount::set_readahead(&b, self.cfg.erofs_readahead_kb) {
                            eprintln!("imgagent: {e}");
                        }
                    }
                }
                Err(e) => {
                    inner.session = None;
                    drop(inner);
                    self.end_session(&img, &sess);
                    let cause = self.metrics.last_error.lock().expect("lock").clone();
                    let cause = if cause.is_empty() { String::new() } else { format!(" (last fetch error: {cause})") };
                    return Err(ApiError(502, format!("image {name}: {e}{cause}")));
                }
            }
            inner.mnt = Some(dir);
            self.metrics.images_mounted.fetch_add(1, Ordering::Relaxed);
            let agent = self.clone();
            let (img2, s2) = (img.clone(), sess.clone());
            std::thread::Builder::new()
                .name("prefetch".into())
                .spawn(move || agent.prefetch_loop(&img2, &s2))
                .map_err(|e| ApiError(500, format!("prefetch thread: {e}")))?;
        }
        inner.refs += 1;
        inner.last_used = Instant::now();
        Ok(json!({
            "image": self.fuse_dir().join(name),
            "lower": inner.mnt,
            "digest": img.manifest.digest,
            "size": img.manifest.size,
            "chunks": img.digests.len(),
            "predicted": predicted,
            "refs": inner.refs,
            "pulled": pulled,
            "mount_s": t0.elapsed().as_secs_f64(),
        }))
    }

    /// The merged plan of the image's kept traces (empty when there are none or the metadata
    /// service cannot be reached).
    fn plan(&self, img: &ImageState) -> trace::Plan {
        match self.meta.traces(&img.name) {
            Ok(mut ts) => {
                let keep = ts.len().saturating_sub(self.cfg.traces_merged_max);
                ts.drain(..keep);
                trace::merge(&ts, self.cfg.min_support, img.digests.len())
            }
            Err(e) => {
                eprintln!("imgagent: traces of {}: {e}; starting without prefetch", img.name);
                trace::Plan::default()
            }
        }
    }

    fn prefetch_loop(&self, img: &Arc<ImageState>, sess: &Arc<Session>) {
        loop {
            let todo: Vec<usize> = {
                let mut s = sess.st.lock().expect("lock");
                if !s.recording {
                    return;
                }
                if sess.opened.elapsed() >= self.cfg.trace_window {
                    drop(s);
                    self.end_session(img, sess);
                    return;
                }
                let mut v = Vec::new();
                let limit = (s.cursor + self.cfg.prefetch_ahead).min(s.plan.len());
                while s.next < limit {
                    let c = s.plan[s.next] as usize;
                    s.next += 1;
                    if !s.seen[c] && !s.launched[c] {
                        s.launched[c] = true;
                        s.launched_count += 1;
                        v.push(c);
                    }
                }
                if v.is_empty() {
                    let _ = sess.cv.wait_timeout(s, Duration::from_millis(50)).expect("lock");
                    continue;
                }
                v
            };
            for c in todo {
                if self.fetcher.request(&img.spec(c), Origin::Prefetch, None) == Requested::Present {
                    let mut s = sess.st.lock().expect("lock");
                    s.launched[c] = false;
                    s.launched_count -= 1;
                }
            }
        }
    }

    /// Ends a start: recording stops, queued prefetches of it are dropped, its accuracy and
    /// coverage are counted, its trace stored (cold starts with at least one access).
    fn end_session(&self, img: &Arc<ImageState>, sess: &Arc<Session>) {
        let (trace, launched, used, needed, needed_pf) = {
            let mut s = sess.st.lock().expect("lock");
            if !s.recording {
                return;
            }
            s.recording = false;
            sess.cv.notify_all();
            let used = (0..s.seen.len()).filter(|&c| s.seen[c] && s.launched[c]).count() as u64;
            let t = Trace {
                image_digest: img.manifest.digest.clone(),
                host: self.cfg.host.clone(),
                started_ms: sess.started_ms,
                entries: std::mem::take(&mut s.entries),
            };
            (t, s.launched_count, used, s.needed, s.needed_prefetched)
        };
        let wanted: HashSet<Digest> = img.digests.iter().copied().collect();
        self.fetcher.cancel_prefetches(&|d| wanted.contains(d));
        let m = &self.metrics;
        Metrics::add(&m.starts, 1);
        Metrics::add(&m.prefetched, launched);
        Metrics::add(&m.prefetched_used, used);
        Metrics::add(&m.needed, needed);
        Metrics::add(&m.needed_prefetched, needed_pf);
        m.last_accuracy_permille.store((used * 1000).checked_div(launched).unwrap_or(0), Ordering::Relaxed);
        m.last_coverage_permille.store((needed_pf * 1000).checked_div(needed).unwrap_or(0), Ordering::Relaxed);
        eprintln!(
            "imgagent: start of {} ended after {:.3} s: {} chunks read, {} prefetched ({} used), {} needed ({} prefetched)",
            img.name,
            sess.opened.elapsed().as_secs_f64(),
            trace.entries.len(),
            launched,
            used,
            needed,
            needed_pf
        );
        if self.cfg.upload_traces && sess.upload && !trace.entries.is_empty() {
            match self.meta.add_trace(&img.name, &trace) {
                Ok(_) => Metrics::add(&m.traces_uploaded, 1),
                Err(e) => {
                    Metrics::add(&m.trace_upload_failures, 1);
                    m.set_error(format!("trace of {}: {e}", img.name));
                    eprintln!("imgagent: storing the trace of {}: {e}", img.name);
                }
            }
        }
    }

    /// `POST /images/{name}/ready`: the container answers; the start's trace ends.
    pub fn ready(&self, name: &str) -> ApiResult {
        let img = self.lookup(name).ok_or_else(|| ApiError(404, format!("image {name} is not mounted here")))?;
        if let Some(s) = img.session() {
            self.end_session(&img, &s);
        }
        Ok(json!({ "ok": true }))
    }

    /// `POST /images/{name}/unmount`: one user fewer; the last one unmounts the erofs.
    pub fn unmount(&self, name: &str) -> ApiResult {
        let _g = self.control.lock().expect("lock");
        let img = self.lookup(name).ok_or_else(|| ApiError(404, format!("image {name} is not mounted here")))?;
        let mut inner = img.inner.lock().expect("lock");
        if inner.refs == 0 {
            return Err(ApiError(409, format!("image {name} is not mounted")));
        }
        inner.refs -= 1;
        inner.last_used = Instant::now();
        if inner.refs > 0 {
            return Ok(json!({ "refs": inner.refs }));
        }
        let sess = inner.session.take();
        let mnt = inner.mnt.take();
        drop(inner);
        if let Some(s) = sess {
            self.end_session(&img, &s);
        }
        if let Some(dir) = mnt {
            if mount::umount(&dir, false).is_err() {
                mount::umount(&dir, true).map_err(|e| ApiError(500, e.to_string()))?;
            }
            let _ = std::fs::remove_dir(&dir);
            self.metrics.images_mounted.fetch_sub(1, Ordering::Relaxed);
        }
        Ok(json!({ "refs": 0 }))
    }

    /// `POST /images/{name}/pull`: every chunk into the cache.
    pub fn pull(&self, name: &str) -> ApiResult {
        let _g = self.control.lock().expect("lock");
        let m = self.manifest(name)?;
        let img = self.register(m)?;
        self.pull_locked(&img)
    }

    fn pull_locked(&self, img: &Arc<ImageState>) -> ApiResult {
        let t0 = Instant::now();
        let (tx, rx) = std::sync::mpsc::channel::<Result<(), String>>();
        let mut waiting = 0;
        let mut present = 0;
        let mut seen = HashSet::new();
        for c in 0..img.digests.len() {
            if !seen.insert(img.digests[c]) {
                continue;
            }
            let tx = tx.clone();
            let w: crate::fetch::Waiter = Box::new(move |r| {
                let _ = tx.send(r.map(|_| ()));
            });
            match self.fetcher.request(&img.spec(c), Origin::Demand, Some(w)) {
                Requested::Present => present += 1,
                Requested::Queued => waiting += 1,
            }
        }
        drop(tx);
        let mut failed = Vec::new();
        for _ in 0..waiting {
            match rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => failed.push(e),
                Err(_) => failed.push("the fetcher stopped".into()),
            }
        }
        if let Some(e) = failed.first() {
            return Err(ApiError(502, format!("pull of {}: {} chunks failed; first: {e}", img.name, failed.len())));
        }
        Ok(json!({ "fetched": waiting, "present": present, "seconds": t0.elapsed().as_secs_f64() }))
    }

    /// `POST /gc`: forgets images not mounted for `max_idle_s` (default: the request says; 0:
    /// all unmounted ones) and removes cached chunks no kept image uses.
    pub fn gc(&self, max_idle: Duration) -> ApiResult {
        let _g = self.control.lock().expect("lock");
        let mut removed = Vec::new();
        for img in self.list() {
            let inner = img.inner.lock().expect("lock");
            if inner.refs == 0 && inner.last_used.elapsed() >= max_idle {
                removed.push(img.name.clone());
                drop(inner);
                self.images.write().expect("lock").remove(&img.ino);
                self.by_name.lock().expect("lock").remove(&img.name);
                let _ = std::fs::remove_file(self.manifest_path(&img.name));
            }
        }
        // Keep what loaded images use, and what kept manifests of images not loaded use.
        let mut keep: HashSet<Digest> = HashSet::new();
        let loaded: HashSet<String> = self.list().iter().map(|i| i.name.clone()).collect();
        for img in self.list() {
            keep.extend(img.digests.iter().copied());
        }
        if let Ok(rd) = std::fs::read_dir(self.cfg.state_dir.join("images")) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().trim_end_matches(".json").to_string();
                if loaded.contains(&name) {
                    continue;
                }
                if let Some(m) =
                    std::fs::read(e.path()).ok().and_then(|b| serde_json::from_slice::<ImageManifest>(&b).ok())
                {
                    keep.extend(m.chunks.iter().filter_map(|c| parse_hex(&c.digest)));
                }
            }
        }
        let chunks = self.cache.retain(&keep);
        Metrics::add(&self.metrics.gc_chunks_removed, chunks as u64);
        Metrics::add(&self.metrics.gc_images_removed, removed.len() as u64);
        Ok(json!({ "images_removed": removed, "chunks_removed": chunks }))
    }

    /// `GET /status`.
    pub fn status(&self) -> Value {
        let (bytes, chunks) = self.cache.usage();
        let images: Vec<Value> = self
            .list()
            .iter()
            .map(|i| {
                let inner = i.inner.lock().expect("lock");
                let cached = i.digests.iter().filter(|d| self.cache.contains(d)).count();
                json!({
                    "name": i.name, "digest": i.manifest.digest, "size": i.manifest.size,
                    "chunks": i.digests.len(), "cached_chunks": cached, "refs": inner.refs,
                    "mounted_at": inner.mnt, "recording": inner.session.as_ref().is_some_and(|s| s.st.lock().expect("lock").recording),
                })
            })
            .collect();
        json!({
            "cache_bytes": bytes, "cache_chunks": chunks, "cache_max_bytes": self.cfg.cache_max_bytes,
            "fetches_pending": self.fetcher.pending(), "images": images,
            "last_error": *self.metrics.last_error.lock().expect("lock"),
        })
    }

    /// The FUSE read path: bytes `offset..offset+size` of image `ino`, handed to `done` when
    /// every chunk they touch is there (at once for cached chunks; after the fetch of missing
    /// ones, which never blocks this thread). `done` gets `Err(errno)` on failure.
    pub fn read(&self, ino: u64, offset: u64, size: u32, done: Box<dyn FnOnce(Result<Vec<u8>, i32>) + Send>) {
        Metrics::add(&self.metrics.fuse_reads, 1);
        let Some(img) = self.by_ino(ino) else {
            return done(Err(libc::ENOENT));
        };
        let total = img.manifest.size;
        if offset >= total || size == 0 {
            return done(Ok(Vec::new()));
        }
        let end = (offset + u64::from(size)).min(total);
        let cs = u64::from(img.manifest.chunk_size);
        let sess = img.session();
        let pending = Arc::new(Pending {
            buf: Mutex::new(vec![0u8; (end - offset) as usize]),
            left: Mutex::new(1),
            failed: Mutex::new(None),
            done: Mutex::new(Some(done)),
            metrics: self.metrics.clone(),
        });
        let (c0, c1) = ((offset / cs) as usize, ((end - 1) / cs) as usize);
        for c in c0..=c1 {
            let cstart = c as u64 * cs;
            let lo = offset.max(cstart);
            let hi = end.min(cstart + cs);
            let (coff, boff, len) = ((lo - cstart) as u32, (lo - offset) as usize, (hi - lo) as usize);
            let d = img.digests[c];
            let hit = {
                let mut b = pending.buf.lock().expect("lock");
                self.cache.read(&d, coff, &mut b[boff..boff + len]) == Read::Hit
            };
            if let Some(s) = &sess {
                if s.access(c, hit) {
                    let t = s.opened.elapsed();
                    self.metrics.ttfb.observe(t);
                    self.metrics.ttfb_last_ns.store(t.as_nanos() as u64, Ordering::Relaxed);
                }
            }
            if hit {
                Metrics::add(&self.metrics.cache_hits, 1);
                continue;
            }
            Metrics::add(&self.metrics.cache_misses, 1);
            *pending.left.lock().expect("lock") += 1;
            let p = pending.clone();
            let w: crate::fetch::Waiter = Box::new(move |r| {
                match r {
                    Ok(data) => {
                        let co = coff as usize;
                        p.buf.lock().expect("lock")[boff..boff + len].copy_from_slice(&data[co..co + len]);
                    }
                    Err(e) => {
                        p.failed.lock().expect("lock").get_or_insert(e);
                    }
                }
                p.finish_one();
            });
            if self.fetcher.request(&img.spec(c), Origin::Demand, Some(w)) == Requested::Present {
                // Fetched between the cache check and the request: read it now.
                let ok = {
                    let mut b = pending.buf.lock().expect("lock");
                    self.cache.read(&d, coff, &mut b[boff..boff + len]) == Read::Hit
                };
                if !ok {
                    pending.failed.lock().expect("lock").get_or_insert(format!("chunk {c} vanished from the cache"));
                }
                pending.finish_one();
            }
        }
        pending.finish_one();
    }

    /// Unmounts every image (agent shutdown) and ends their starts.
    pub fn shutdown(&self) {
        for img in self.list() {
            let (sess, mnt) = {
                let mut inner = img.inner.lock().expect("lock");
                inner.refs = 0;
                (inner.session.take(), inner.mnt.take())
            };
            if let Some(s) = sess {
                self.end_session(&img, &s);
            }
            if let Some(dir) = mnt {
                let _ = mount::umount(&dir, true);
                let _ = std::fs::remove_dir(&dir);
            }
        }
    }

    /// Clears mounts a killed agent left under the state folder; returns how many.
    pub fn clear_stale_mounts(state_dir: &Path) -> usize {
        mount::clear_stale(state_dir)
    }
}

/// Gets a FUSE read's bytes, or the errno to answer.
pub type ReadDone = Box<dyn FnOnce(Result<Vec<u8>, i32>) + Send>;

/// A FUSE read waiting for chunks.
struct Pending {
    buf: Mutex<Vec<u8>>,
    left: Mutex<usize>,
    failed: Mutex<Option<String>>,
    done: Mutex<Option<ReadDone>>,
    metrics: Arc<Metrics>,
}

impl Pending {
    fn finish_one(&self) {
        let last = {
            let mut l = self.left.lock().expect("lock");
            *l -= 1;
            *l == 0
        };
        if !last {
            return;
        }
        let Some(done) = self.done.lock().expect("lock").take() else {
            return;
        };
        if self.failed.lock().expect("lock").is_some() {
            Metrics::add(&self.metrics.read_errors, 1);
            done(Err(libc::EIO));
        } else {
            let b = std::mem::take(&mut *self.buf.lock().expect("lock"));
            Metrics::add(&self.metrics.fuse_read_bytes, b.len() as u64);
            done(Ok(b));
        }
    }
}
