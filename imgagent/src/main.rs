//! `imgagent serve`: the host agent for lazily fetched container images (docs/images.md).
//! Runs in the foreground until SIGINT/SIGTERM, then unmounts its images and its FUSE file
//! system. Any start-up failure is one line on stderr and exit status 1.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use imgagent::agent::{Agent, AgentConfig};
use imgagent::cache::ChunkCache;
use imgagent::fetch::{FetchConfig, Fetcher};
use imgagent::fuse::ImageFs;
use imgagent::metrics::Metrics;
use imgagent::{api, mount};
use objmeta::client::MetaClient;

#[derive(Parser)]
#[command(name = "imgagent", version, about = "Host agent: container images fetched lazily from the object store")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the agent.
    Serve(Serve),
}

#[derive(clap::Args)]
struct Serve {
    /// The metadata service, http://HOST:PORT.
    #[arg(long)]
    meta: String,
    /// Control API and /metrics.
    #[arg(long, default_value = "127.0.0.1:9400")]
    listen: SocketAddr,
    /// Cache, kept manifests, the FUSE mount point and the image mounts.
    #[arg(long, default_value = "/var/lib/imgagent")]
    state: PathBuf,
    /// Size limit of the chunk cache, MiB.
    #[arg(long = "cache-mb", default_value_t = 2048)]
    cache_mb: u64,
    /// Fetch threads.
    #[arg(long, default_value_t = 8)]
    fetchers: usize,
    /// Fetch threads that may work on prefetches at once.
    #[arg(long = "prefetch-parallel", default_value_t = 4)]
    prefetch_parallel: usize,
    /// Prefetch at most this many chunks beyond the furthest trace position read.
    #[arg(long = "prefetch-ahead", default_value_t = 64)]
    prefetch_ahead: usize,
    /// A chunk is prefetched when more than this fraction of the traces read it.
    #[arg(long = "min-support", default_value_t = 0.5)]
    min_support: f64,
    /// Newest traces merged.
    #[arg(long = "traces-merged", default_value_t = 16)]
    traces_merged: usize,
    /// A start's trace ends at the latest this many seconds after its mount.
    #[arg(long = "trace-window-s", default_value_t = 60)]
    trace_window_s: u64,
    /// Do not store start traces at the metadata service.
    #[arg(long = "no-upload-traces")]
    no_upload_traces: bool,
    /// Name of this host in the traces (default: the kernel's host name).
    #[arg(long)]
    host: Option<String>,
    /// Storage service UDP port.
    #[arg(long, default_value_t = 7878)]
    port: u16,
    /// Milliseconds before a fetch request is sent again.
    #[arg(long = "timeout-ms", default_value_t = 50)]
    timeout_ms: u64,
    /// Sends of a request before its candidate counts as failed.
    #[arg(long, default_value_t = 4)]
    tries: u32,
    /// Do not SR-steer fetches (ask the replicas directly).
    #[arg(long = "no-steer")]
    no_steer: bool,
    /// Seconds a failed node is left out of the candidates.
    #[arg(long = "node-down-s", default_value_t = 10)]
    node_down_s: u64,
    /// Send node NODE's requests to this socket address (repeatable): NODE=[ADDR]:PORT.
    #[arg(long = "node-addr", value_name = "NODE=[ADDR]:PORT")]
    node_addr: Vec<String>,
    /// Emulated round-trip delay added to every chunk fetch, ms (benchmarks; netem is absent).
    #[arg(long = "delay-ms", default_value_t = 0)]
    delay_ms: u64,
    /// read_ahead_kb of the FUSE file.
    #[arg(long = "fuse-readahead-kb", default_value_t = 0)]
    fuse_readahead_kb: u32,
    /// read_ahead_kb of the erofs mount.
    #[arg(long = "erofs-readahead-kb", default_value_t = 0)]
    erofs_readahead_kb: u32,
}

fn main() -> ExitCode {
    let Cmd::Serve(s) = Cli::parse().cmd;
    match serve(s) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("imgagent: {e}");
            ExitCode::from(1)
        }
    }
}

fn serve(s: Serve) -> Result<(), String> {
    let mut node_addrs = HashMap::new();
    for na in &s.node_addr {
        let (n, a) = na.split_once('=').ok_or_else(|| format!("--node-addr {na:?}: expected NODE=[ADDR]:PORT"))?;
        node_addrs.insert(n.to_string(), a.parse().map_err(|_| format!("--node-addr {na:?}: bad socket address"))?);
    }
    if !(0.0..1.0).contains(&s.min_support) {
        return Err(format!("--min-support {}: a fraction in [0, 1)", s.min_support));
    }
    if s.prefetch_parallel >= s.fetchers.max(1) {
        return Err(format!(
            "--prefetch-parallel {} must be below --fetchers {} (demand fetches need a free thread)",
            s.prefetch_parallel, s.fetchers
        ));
    }
    let host = s.host.clone().unwrap_or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "host".into())
    });
    std::fs::create_dir_all(&s.state).map_err(|e| format!("{}: {e}", s.state.display()))?;
    let stale = Agent::clear_stale_mounts(&s.state);
    if stale > 0 {
        eprintln!("imgagent: cleared {stale} stale mount(s) under {}", s.state.display());
    }
    let metrics = Arc::new(Metrics::default());
    let cache = Arc::new(
        ChunkCache::open(&s.state.join("chunks"), s.cache_mb << 20, metrics.clone())
            .map_err(|e| format!("cache {}: {e}", s.state.join("chunks").display()))?,
    );
    let (bytes, chunks) = cache.usage();
    let meta = MetaClient::new(s.meta.clone()).with_timeout(Duration::from_secs(5));
    let fetch_cfg = FetchConfig {
        fetchers: s.fetchers,
        prefetch_parallel: s.prefetch_parallel,
        port: s.port,
        timeout: Duration::from_millis(s.timeout_ms.max(1)),
        tries: s.tries.max(1),
        window: 64,
        steer: !s.no_steer,
        node_down: Duration::from_secs(s.node_down_s),
        node_addrs,
        delay: Duration::from_millis(s.delay_ms),
    };
    let fetcher = Fetcher::new(fetch_cfg, meta.clone(), cache.clone(), metrics.clone());
    match fetcher.refresh_nodes() {
        Ok(n) => eprintln!("imgagent: {n} storage nodes known"),
        Err(e) => eprintln!("imgagent: warning: {e} (will retry when a chunk is fetched)"),
    }
    let _workers = fetcher.start();
    let cfg = AgentConfig {
        state_dir: s.state.clone(),
        cache_max_bytes: s.cache_mb << 20,
        prefetch_ahead: s.prefetch_ahead,
        min_support: s.min_support,
        traces_merged_max: s.traces_merged.max(1),
        trace_window: Duration::from_secs(s.trace_window_s.max(1)),
        fuse_readahead_kb: s.fuse_readahead_kb,
        erofs_readahead_kb: s.erofs_readahead_kb,
        host,
        upload_traces: !s.no_upload_traces,
    };
    let agent = Arc::new(Agent::new(cfg, meta, cache, fetcher.clone(), metrics));
    let fuse_dir = agent.fuse_dir();
    std::fs::create_dir_all(&fuse_dir).map_err(|e| format!("{}: {e}", fuse_dir.display()))?;
    let mut fcfg = fuser::Config::default();
    fcfg.mount_options = vec![fuser::MountOption::FSName("imgagent".into()), fuser::MountOption::RO];
    fcfg.acl = fuser::SessionACL::All;
    fcfg.n_threads = Some(2);
    let session = fuser::spawn_mount(ImageFs { agent: agent.clone() }, &fuse_dir, &fcfg)
        .map_err(|e| format!("FUSE mount on {}: {e}", fuse_dir.display()))?;
    if let Some(bdi) = mount::bdi_of(&fuse_dir) {
        if let Err(e) = mount::set_readahead(&bdi, agent.cfg.fuse_readahead_kb) {
            eprintln!("imgagent: {e}");
        }
    }
    let listener = TcpListener::bind(s.listen).map_err(|e| format!("listen on {}: {e}", s.listen))?;
    api::spawn(listener, agent.clone()).map_err(|e| format!("API thread: {e}"))?;
    eprintln!(
        "imgagent: serving {} on http://{} (cache {} chunks, {} bytes, limit {} MiB)",
        fuse_dir.display(),
        s.listen,
        chunks,
        bytes,
        s.cache_mb
    );
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone()).map_err(|e| format!("signal handler: {e}"))?;
    }
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("imgagent: stopping");
    agent.shutdown();
    fetcher.shutdown();
    drop(session);
    mount::clear_stale(&s.state);
    Ok(())
}
