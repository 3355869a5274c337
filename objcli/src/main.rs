//! `objcli`: the object store's command line for hosts without DPDK (reference:
//! `docs/objcli.md`). With `--meta` it works through the metadata service (`put`, `get`,
//! `stat`, `rm`, `ls`); with `--node` it talks to one node's object prefix directly (`*-raw`).
//! Any failure is one line on stderr and exit status 1 (2 for a usage error).
#![forbid(unsafe_code)]

use std::io::{IsTerminal, Write};
use std::net::{Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use objcli::{image, steer, BadReplica, Config, Endpoint, Progress, StorageClient, Target, Transport};
use objmeta::client::MetaClient;
use objmeta::model::{IntentOp, ObjectRef, ObjectState};

#[derive(Parser)]
#[command(name = "objcli", version, about = "Object store client over kernel sockets (no DPDK)")]
struct Cli {
    /// The metadata service, http://HOST:PORT (for put, get, stat, rm, ls); default: the
    /// environment variable OBJCLI_META.
    #[arg(long, global = true)]
    meta: Option<String>,
    /// One node for the *-raw commands: its object prefix (2001:db8:f0:1:: or .../64), or a
    /// socket address [ADDR]:PORT that gets every request.
    #[arg(long, global = true)]
    node: Option<String>,
    /// UDP port of the storage service.
    #[arg(long, global = true, default_value_t = objcli::client::DEFAULT_PORT)]
    port: u16,
    /// Send node NODE's requests to this socket address instead of its replica address
    /// (repeatable): NODE=[ADDR]:PORT.
    #[arg(long = "node-addr", global = true, value_name = "NODE=[ADDR]:PORT")]
    node_addr: Vec<String>,
    /// Requests in flight per replica.
    #[arg(long, global = true, default_value_t = 64)]
    window: usize,
    /// Milliseconds before a request is sent again.
    #[arg(long = "timeout-ms", global = true, default_value_t = 250)]
    timeout_ms: u64,
    /// Sends of one request before its replica counts as failed.
    #[arg(long, global = true, default_value_t = 12)]
    tries: u32,
    /// No progress bar (it is shown only on a terminal, for objects of 1 MiB or more).
    #[arg(long = "no-progress", global = true)]
    no_progress: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Store FILE on every replica, then commit it at the metadata service.
    Put {
        file: PathBuf,
        /// Object name (default: the file's name).
        #[arg(long)]
        name: Option<String>,
        /// Object id (default: the metadata service allocates one).
        #[arg(long)]
        id: Option<String>,
        #[arg(long, default_value_t = 3)]
        replicas: usize,
    },
    /// Read OBJECT (an id, `id:N`, a name or `name:N`) to FILE (default: stdout).
    Get {
        object: String,
        #[arg(short = 'o', long)]
        output: Option<PathBuf>,
        /// Send the requests along the metadata service's intent (an SRH on the socket).
        #[arg(long)]
        steer: bool,
    },
    /// Metadata and each replica's own view of OBJECT.
    Stat { object: String },
    /// Delete OBJECT on every replica, then at the metadata service.
    Rm { object: String },
    /// List the objects of the metadata service.
    Ls,
    /// Store FILE as OBJID on the --node (no metadata service).
    PutRaw {
        objid: String,
        file: PathBuf,
        #[arg(long, default_value_t = 1)]
        version: u64,
    },
    /// Read OBJID from the --node to FILE (default: stdout).
    GetRaw {
        objid: String,
        #[arg(short = 'o', long)]
        output: Option<PathBuf>,
    },
    /// The --node's stat of OBJID.
    StatRaw { objid: String },
    /// Delete OBJID on the --node.
    RmRaw {
        objid: String,
        /// Only this version (0: any).
        #[arg(long, default_value_t = 0)]
        version: u64,
    },
    /// List the --node's objects (ids after --after).
    LsRaw {
        #[arg(long)]
        after: Option<String>,
    },
    /// Load generator for the --node: PUT OBJECTS objects of SIZE bytes, then GET random ones
    /// for SECONDS, INFLIGHT operations at a time; prints ops/s and latency percentiles
    /// (docs/objcli.md "bench").
    Bench {
        #[arg(long, default_value_t = 1024)]
        objects: u64,
        #[arg(long, default_value_t = 4096)]
        size: usize,
        #[arg(long, default_value_t = 32)]
        inflight: usize,
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        /// The first object id (the bench uses FIRST..FIRST+OBJECTS).
        #[arg(long, default_value = "0x62656e6300000000")]
        first: String,
        /// Skip the PUT phase (the objects are there from an earlier run with the same
        /// --objects, --size and --first).
        #[arg(long = "no-put")]
        no_put: bool,
    },
    /// Container images: push a root file system, run a container on it lazily (docs/images.md).
    #[command(subcommand)]
    Image(ImageCmd),
}

#[derive(Subcommand)]
enum ImageCmd {
    /// Pack ROOTFS_DIR into an erofs image, store its chunks (by digest) on their replicas and
    /// the manifest at the metadata service.
    Push {
        rootfs: PathBuf,
        name: String,
        /// Chunk size in KiB (a power of two, 4 to 4096).
        #[arg(long = "chunk-kib", default_value_t = 64)]
        chunk_kib: u32,
        #[arg(long, default_value_t = 3)]
        replicas: usize,
        /// Chunks written at once.
        #[arg(long, default_value_t = 4)]
        parallel: usize,
        /// Keep the built image file here.
        #[arg(long = "keep-image")]
        keep_image: Option<PathBuf>,
        /// Push this erofs image file instead of packing ROOTFS_DIR (which is then ignored).
        #[arg(long = "from-image")]
        from_image: Option<PathBuf>,
    },
    /// Run a container on image NAME, mounted lazily by the host agent:
    /// `objcli image run NAME -- python3 -m http.server`.
    Run {
        name: String,
        /// The agent's control address.
        #[arg(long, default_value = "http://127.0.0.1:9400")]
        agent: String,
        /// Container id (default img-<pid>).
        #[arg(long)]
        id: Option<String>,
        /// The start is over when 127.0.0.1:PORT accepts a TCP connection (prints the time,
        /// ends the agent's trace of this start).
        #[arg(long = "ready-port")]
        ready_port: Option<u16>,
        /// Fetch the whole image before starting (a full pull, for comparison).
        #[arg(long)]
        pull: bool,
        /// Do not prefetch along the image's start trace.
        #[arg(long = "no-prefetch")]
        no_prefetch: bool,
        /// MiB of tmpfs for the container's writes.
        #[arg(long = "upper-mb", default_value_t = 256)]
        upper_mb: u32,
        /// Where bundles are made.
        #[arg(long = "bundle-root", default_value = "/run/objcli-image")]
        bundle_root: PathBuf,
        /// The command to run in the container.
        #[arg(last = true, required = true)]
        args: Vec<String>,
    },
    /// List the images of the metadata service.
    Ls,
    /// Print an image's manifest summary (--json: the whole manifest).
    Inspect {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Remove an image's manifest and traces (its chunks stay: other images may share them).
    Rm { name: String },
    /// The start traces kept for an image (host, start time, chunks read).
    Traces { name: String },
}

/// A progress bar on stderr, shown only on a terminal and for objects of 1 MiB or more.
struct Bar {
    pb: ProgressBar,
    enabled: bool,
}

impl Bar {
    fn new(enabled: bool) -> Bar {
        let pb = ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden());
        pb.set_style(
            ProgressStyle::with_template("{bytes}/{total_bytes} [{bar:40}] {bytes_per_sec} eta {eta}")
                .expect("template")
                .progress_chars("=> "),
        );
        Bar { pb, enabled: enabled && std::io::stderr().is_terminal() }
    }
}

impl Progress for Bar {
    fn start(&self, total: u64) {
        self.pb.set_length(total);
        self.pb.set_position(0);
        if self.enabled && total >= 1 << 20 {
            self.pb.set_draw_target(ProgressDrawTarget::stderr());
        }
    }
    fn advance(&self, bytes: u64) {
        self.pb.inc(bytes);
    }
    fn finish(&self) {
        self.pb.finish_and_clear();
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("objcli: {e}");
            ExitCode::from(1)
        }
    }
}

type Res = Result<(), String>;

fn parse_id(s: &str) -> Result<u64, String> {
    let v = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(h, 16),
        None => s.parse(),
    }
    .map_err(|_| format!("{s:?} is not an object id (decimal or 0x hex)"))?;
    if v == 0 {
        return Err("object id 0 is reserved".into());
    }
    Ok(v)
}

/// `id:N`, `name:X`, a number (an id) or anything else (a name).
fn object_ref(s: &str) -> Result<ObjectRef, String> {
    if let Some(id) = s.strip_prefix("id:") {
        return Ok(ObjectRef::Id(parse_id(id)?));
    }
    if let Some(n) = s.strip_prefix("name:") {
        return Ok(ObjectRef::Name(n.to_string()));
    }
    Ok(parse_id(s).map_or_else(|_| ObjectRef::Name(s.to_string()), ObjectRef::Id))
}

fn endpoint(node: Option<&str>, port: u16) -> Result<Endpoint, String> {
    let node = node.ok_or("the *-raw commands and bench need --node PREFIX or --node [ADDR]:PORT")?;
    if let Ok(a) = node.parse::<SocketAddr>() {
        return Ok(Endpoint::Fixed(a));
    }
    let a: Ipv6Addr = node
        .strip_suffix("/64")
        .unwrap_or(node)
        .parse()
        .map_err(|_| format!("--node {node:?}: not an IPv6 /64 prefix nor [ADDR]:PORT"))?;
    if u128::from(a) & u128::from(u64::MAX) != 0 {
        return Err(format!("--node {node:?}: a /64 prefix has no host bits"));
    }
    Ok(Endpoint::Prefix(a, port))
}

fn write_out(output: Option<&PathBuf>, data: &[u8]) -> Res {
    match output {
        Some(p) => std::fs::write(p, data).map_err(|e| format!("writing {}: {e}", p.display())),
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(data).and_then(|()| out.flush()).map_err(|e| format!("writing to stdout: {e}"))
        }
    }
}

fn report_bad(bad: &[BadReplica]) {
    for b in bad {
        eprintln!("objcli: warning: bad {b}; report it for repair");
    }
}

fn run(cli: Cli) -> Res {
    let mut cfg = Config { port: cli.port, ..Config::default() };
    for na in &cli.node_addr {
        let (node, addr) =
            na.split_once('=').ok_or_else(|| format!("--node-addr {na:?}: expected NODE=[ADDR]:PORT"))?;
        let addr: SocketAddr = addr.parse().map_err(|_| format!("--node-addr {na:?}: bad socket address"))?;
        cfg.node_addrs.insert(node.to_string(), addr);
    }
    cfg.transport.window = cli.window;
    cfg.transport.timeout = Duration::from_millis(cli.timeout_ms.max(1));
    cfg.transport.tries = cli.tries;
    let bar = Bar::new(!cli.no_progress);
    let meta = || -> Result<MetaClient, String> {
        cli.meta
            .clone()
            .or_else(|| std::env::var("OBJCLI_META").ok())
            .map(MetaClient::new)
            .ok_or_else(|| "this command needs --meta http://HOST:PORT (or OBJCLI_META)".to_string())
    };
    let new_client = |cfg: &Config| StorageClient::new(cfg.clone()).map_err(|e| format!("socket: {e}"));
    let e = |e: objcli::Error| e.to_string();
    match &cli.cmd {
        Cmd::Put { file, name, id, replicas } => {
            let meta = meta()?;
            let data = std::fs::read(file).map_err(|e| format!("reading {}: {e}", file.display()))?;
            let id = id.as_deref().map(parse_id).transpose()?;
            let name = match (name, id) {
                (Some(n), _) => Some(n.clone()),
                (None, Some(_)) => None,
                (None, None) => Some(
                    file.file_name()
                        .ok_or_else(|| format!("{}: no file name to use as the name", file.display()))?
                        .to_string_lossy()
                        .into_owned(),
                ),
            };
            let mut c = new_client(&cfg)?;
            let m = c.put(&meta, id, name.as_deref(), &data, *replicas, &bar).map_err(e)?;
            let nodes: Vec<&str> = m.replicas.iter().map(|r| r.node.as_str()).collect();
            println!(
                "stored {} id {:#x} size {} version {} replicas {}",
                m.name.as_deref().unwrap_or("-"),
                m.id,
                m.size,
                m.version,
                nodes.join(",")
            );
        }
        Cmd::Get { object, output, steer } => {
            let meta = meta()?;
            let obj = object_ref(object)?;
            let (data, bad) = if *steer {
                steered_get(&meta, &obj, &cfg, &bar)?
            } else {
                let g = new_client(&cfg)?.get(&meta, &obj, &bar).map_err(e)?;
                (g.data, g.bad_replicas)
            };
            report_bad(&bad);
            write_out(output.as_ref(), &data)?;
            if let Some(p) = output {
                eprintln!("objcli: {} bytes to {}", data.len(), p.display());
            }
        }
        Cmd::Stat { object } => {
            let meta = meta()?;
            let s = new_client(&cfg)?.stat(&meta, &object_ref(object)?).map_err(e)?;
            let m = &s.meta;
            println!(
                "id {:#x} name {} size {} version {} state {:?} chunk_size {}",
                m.id,
                m.name.as_deref().unwrap_or("-"),
                m.size,
                m.version,
                m.state,
                m.chunk_size
            );
            for (t, r) in &s.replicas {
                match r {
                    Ok(st) => println!(
                        "replica {t}: size {} version {} chunks {} complete {}",
                        st.size,
                        st.version,
                        st.chunks,
                        u8::from(st.complete)
                    ),
                    Err(why) => println!("replica {t}: {why}"),
                }
            }
        }
        Cmd::Rm { object } => {
            let meta = meta()?;
            let m = new_client(&cfg)?.rm(&meta, &object_ref(object)?).map_err(e)?;
            println!("removed {} id {:#x}", m.name.as_deref().unwrap_or("-"), m.id);
        }
        Cmd::Ls => {
            let meta = meta()?;
            for m in new_client(&cfg)?.ls(&meta).map_err(e)? {
                let state = match m.state {
                    ObjectState::Creating => "creating",
                    ObjectState::Complete => "complete",
                    ObjectState::Deleting => "deleting",
                };
                println!(
                    "{:#018x} {:>12} v{} {:<8} {}",
                    m.id,
                    m.size,
                    m.version,
                    state,
                    m.name.as_deref().unwrap_or("-")
                );
            }
        }
        Cmd::PutRaw { objid, file, version } => {
            let ep = endpoint(cli.node.as_deref(), cli.port)?;
            let id = parse_id(objid)?;
            let data = std::fs::read(file).map_err(|e| format!("reading {}: {e}", file.display()))?;
            new_client(&cfg)?.put_raw(&ep, id, *version, &data, &bar).map_err(e)?;
            println!("ok {}", data.len());
        }
        Cmd::GetRaw { objid, output } => {
            let ep = endpoint(cli.node.as_deref(), cli.port)?;
            let (data, _) = new_client(&cfg)?.get_raw(&ep, parse_id(objid)?, &bar).map_err(e)?;
            write_out(output.as_ref(), &data)?;
            if output.is_some() {
                println!("ok {}", data.len());
            }
        }
        Cmd::StatRaw { objid } => {
            let ep = endpoint(cli.node.as_deref(), cli.port)?;
            let s = new_client(&cfg)?.stat_raw(&ep, parse_id(objid)?).map_err(e)?;
            println!("size {} version {} chunks {} complete {}", s.size, s.version, s.chunks, u8::from(s.complete));
        }
        Cmd::RmRaw { objid, version } => {
            let ep = endpoint(cli.node.as_deref(), cli.port)?;
            new_client(&cfg)?.rm_raw(&ep, parse_id(objid)?, *version).map_err(e)?;
            println!("ok");
        }
        Cmd::LsRaw { after } => {
            let ep = endpoint(cli.node.as_deref(), cli.port)?;
            let after = after.as_deref().map(parse_id).transpose()?;
            for en in new_client(&cfg)?.list_raw(&ep, after).map_err(e)? {
                println!("{} {} {}", en.id, en.size, en.version);
            }
        }
        Cmd::Bench { objects, size, inflight, seconds, first, no_put } => {
            let ep = endpoint(cli.node.as_deref(), cli.port)?;
            let bc = objcli::bench::BenchConfig {
                objects: *objects,
                first: parse_id(first)?,
                size: *size,
                inflight: *inflight,
                seconds: *seconds,
                timeout: cfg.transport.timeout,
                tries: cli.tries,
                ..objcli::bench::BenchConfig::default()
            };
            let mut b = objcli::bench::Bench::new(ep, bc.clone()).map_err(|e| e.to_string())?;
            if !no_put {
                let r = b.puts().map_err(|e| format!("bench put phase: {e}"))?;
                println!("{}", r.line(&bc));
            }
            let r = b.gets().map_err(|e| format!("bench get phase: {e}"))?;
            println!("{}", r.line(&bc));
        }
        Cmd::Image(ic) => return image_cmd(ic, &cli, &cfg),
    }
    Ok(())
}

fn image_cmd(ic: &ImageCmd, cli: &Cli, cfg: &Config) -> Res {
    let meta = || -> Result<MetaClient, String> {
        cli.meta
            .clone()
            .or_else(|| std::env::var("OBJCLI_META").ok())
            .map(MetaClient::new)
            .ok_or_else(|| "this command needs --meta http://HOST:PORT (or OBJCLI_META)".to_string())
    };
    match ic {
        ImageCmd::Push { rootfs, name, chunk_kib, replicas, parallel, keep_image, from_image } => {
            let meta = meta()?;
            let opts = image::PushOptions {
                chunk_size: chunk_kib.saturating_mul(1024),
                replicas: *replicas,
                parallel: *parallel,
                keep_image: keep_image.clone(),
            };
            let t0 = std::time::Instant::now();
            let r = match from_image {
                Some(img) => image::push_image_file(&meta, cfg, img, name, &opts),
                None => image::push(&meta, cfg, rootfs, name, &opts),
            }
            .map_err(|e| format!("image push {name}: {e}"))?;
            let m = &r.manifest;
            println!(
                "pushed {} digest {} size {} chunks {} ({} KiB) stored {} reused {} bytes_stored {} in {:.1} s",
                m.name,
                m.digest,
                m.size,
                m.chunks.len(),
                m.chunk_size / 1024,
                r.chunks_stored,
                r.chunks_reused,
                r.bytes_stored,
                t0.elapsed().as_secs_f64()
            );
        }
        ImageCmd::Run { name, agent, id, ready_port, pull, no_prefetch, upper_mb, bundle_root, args } => {
            let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
                signal_hook::flag::register(sig, stop.clone()).map_err(|e| format!("signal handler: {e}"))?;
            }
            let opts = image::RunOptions {
                agent: agent.clone(),
                image: name.clone(),
                id: id.clone().unwrap_or_else(image::run::default_id),
                args: args.clone(),
                bundle_root: bundle_root.clone(),
                upper_mb: *upper_mb,
                ready_port: *ready_port,
                pull: *pull,
                prefetch: !no_prefetch,
            };
            let st = image::run(&opts, stop)?;
            eprintln!("objcli: container {} exited: {st}", opts.id);
            if !st.success() {
                return Err(format!("container {} failed: {st}", opts.id));
            }
        }
        ImageCmd::Ls => {
            let meta = meta()?;
            for n in meta.images().map_err(|e| format!("metadata service: {e}"))? {
                match meta.image(&n) {
                    Ok(m) => println!(
                        "{n} {} {} chunks of {} KiB digest {}",
                        m.size,
                        m.chunks.len(),
                        m.chunk_size / 1024,
                        m.digest
                    ),
                    Err(e) => println!("{n} ({e})"),
                }
            }
        }
        ImageCmd::Inspect { name, json } => {
            let m = meta()?.image(name).map_err(|e| format!("image {name}: {e}"))?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&m).expect("json"));
            } else {
                let distinct: std::collections::HashSet<&str> = m.chunks.iter().map(|c| c.digest.as_str()).collect();
                println!(
                    "name {} format {} size {} chunk_size {} chunks {} distinct {} digest {}",
                    m.name,
                    m.format,
                    m.size,
                    m.chunk_size,
                    m.chunks.len(),
                    distinct.len(),
                    m.digest
                );
            }
        }
        ImageCmd::Rm { name } => {
            let deleted = meta()?.delete_image(name).map_err(|e| format!("image {name}: {e}"))?;
            if !deleted {
                return Err(format!("image {name}: not found"));
            }
            println!("removed image {name}");
        }
        ImageCmd::Traces { name } => {
            let ts = meta()?.traces(name).map_err(|e| format!("image {name}: {e}"))?;
            for t in &ts {
                println!(
                    "trace host {} started_ms {} chunks {} last_at_us {}",
                    t.host,
                    t.started_ms,
                    t.entries.len(),
                    t.entries.last().map_or(0, |e| e.at_us)
                );
            }
            println!("{} traces", ts.len());
        }
    }
    Ok(())
}

/// `get --steer`: the intent's segment list on the socket (an SRH), every request to the last
/// segment; the storage SIDs on the way decide which node answers.
fn steered_get(
    meta: &MetaClient,
    obj: &ObjectRef,
    cfg: &Config,
    bar: &Bar,
) -> Result<(Vec<u8>, Vec<BadReplica>), String> {
    let m = meta.lookup(obj).map_err(|e| format!("metadata service: {e}"))?;
    if m.state != ObjectState::Complete {
        return Err(format!("{obj} is not readable: its state is {:?}", m.state));
    }
    let intent =
        meta.intent(IntentOp::Retrieve, ObjectRef::Id(m.id), None).map_err(|e| format!("metadata service: {e}"))?;
    let (sock, dst) = steer::steered_socket(&intent.segments, cfg.port).map_err(|e| format!("--steer: {e}"))?;
    let sids: Vec<String> = intent.segments.iter().map(|s| s.to_string()).collect();
    let target = Target { label: format!("steered via {}", sids.join(",")), dst };
    let mut c = StorageClient::with_transport(cfg.clone(), Transport::with_socket(sock, cfg.transport.clone()));
    let r = c.read_replicas(m.id, Some((m.size, m.version)), &[target], bar).map_err(|e| e.to_string())?;
    Ok((r.data, r.bad_replicas))
}
