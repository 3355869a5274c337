//! The appliance's configuration: a YAML file, parsed once at start-up.
//!
//! Each section of the file has its own module: `eal` (`eal:`), `lcores`
//! (`lcores:` and `mempool:`), `ports`, `routing` (`routes:`,
//! `neighbors:`, `neighbor:`, `icmp:`), `pipeline`, `metrics`, `capture`, `log`,
//! `srv6`, `storage` (`storage:` and `storage_service:`) and `nat`. A
//! section module holds
//!
//! * the section as the file writes it: a serde struct (`...Yaml`) with its
//!   defaults; unknown fields are refused, and syntax and type errors carry
//!   the field path and the line/column;
//! * its validation into the type the program uses, the `dataplane` type
//!   where one exists ([`Srv6Config`], [`NatConfig`](dataplane::nat::NatConfig),
//!   [`RouteSpec`]); it fails on the first error;
//! * its tests.
//!
//! Validation also writes the canonical form of each value back into the
//! section struct (addresses as the program prints them, defaults that
//! depend on other fields filled in). That struct, serialized, is the
//! effective configuration `check-config` prints ([`Config::to_yaml`]): a
//! field is printed by the same struct that parses it, so the printed YAML
//! parses back to the same [`Config`].
//!
//! This module keeps [`Config`], [`ConfigError`], loading, the EAL arguments
//! and the checks that span sections (the pool against the rings, the
//! hugepage budget, the NAT mapping lcore). What depends on the machine (its
//! CPUs) is checked apart, by [`Config::check_host`], so that parsing stays
//! deterministic.
//!
//! Every error displays as `<field path>: <message>`, for example
//! `ports[1].queues: must be 1..=64`. The reference for every field (type,
//! default, limits, meaning) is `docs/config.md`; `configs/demo.yaml` is a
//! complete, commented example and is embedded in the binary as
//! [`EMBEDDED_DEMO`].

mod addr;
mod capture;
mod control;
mod eal;
mod host;
mod lcores;
mod log;
mod metrics;
mod nat;
mod natcluster;
mod pipeline;
mod ports;
mod routing;
mod srv6;
mod storage;
#[cfg(test)]
mod testing;

use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

pub use addr::{format_mac, parse_mac};
pub use capture::Capture;
pub use control::Control;
pub use dataplane::fib::RouteSpec;
pub use dataplane::srv6::Srv6Config;
pub use eal::{Eal, EalLogLevel};
pub use host::Host;
pub use lcores::{Lcore, Lcores, Mempool};
pub use log::{Log, LogFormat};
pub use metrics::Metrics;
pub use nat::Nat;
pub use natcluster::{report_ms, NatCluster};
pub use netwire::prefix::{IpCidr, Ipv4Cidr, Ipv6Cidr};
pub use pipeline::{IdleBackoff, Pipeline};
pub use ports::Port;
pub use routing::{Icmp, NeighborCfg, StaticNeighbor};
pub use storage::{Storage, StorageService, HANDOVER_RING_SIZE};

/// The demo configuration (`configs/demo.yaml`): the appliance between two
/// kernel hosts over two af_xdp vdevs.
pub const EMBEDDED_DEMO: &str = include_str!("../../../configs/demo.yaml");

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/// A configuration that cannot be used. Displays as `<field path>: <message>`.
#[derive(Debug)]
pub enum ConfigError {
    /// The file could not be read. Displays as `cannot read the file: <io error>`
    /// (the caller of [`Config::load`] prefixes the file name, as for every error).
    Io {
        /// The file that was to be read.
        file: PathBuf,
        /// Why it could not be read.
        source: std::io::Error,
    },
    /// YAML syntax error, wrong type, unknown field or missing required field.
    Parse {
        /// Field path, e.g. `ports[0].queues`; `(top level)` when there is none.
        path: String,
        /// What is wrong, with `at line L column C` when known.
        message: String,
        /// 1-based line of the error, when known.
        line: Option<usize>,
        /// 1-based column of the error, when known.
        column: Option<usize>,
    },
    /// The YAML parsed, but a value or a combination of values is not acceptable.
    Invalid {
        /// Field path, e.g. `routes[0].via`.
        path: String,
        /// What is wrong.
        message: String,
    },
}

impl ConfigError {
    fn invalid(path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Invalid { path: path.into(), message: message.into() }
    }

    /// The field path the error is about (the file name for [`ConfigError::Io`]).
    pub fn path(&self) -> String {
        match self {
            ConfigError::Io { file, .. } => file.display().to_string(),
            ConfigError::Parse { path, .. } | ConfigError::Invalid { path, .. } => path.clone(),
        }
    }

    /// The message, without the path.
    pub fn message(&self) -> String {
        match self {
            ConfigError::Io { source, .. } => source.to_string(),
            ConfigError::Parse { message, .. } | ConfigError::Invalid { message, .. } => message.clone(),
        }
    }

    /// 1-based (line, column) in the YAML text, when known.
    pub fn location(&self) -> Option<(usize, usize)> {
        match self {
            ConfigError::Parse { line: Some(l), column: Some(c), .. } => Some((*l, *c)),
            _ => None,
        }
    }

    fn from_yaml(err: serde_path_to_error::Error<serde_yaml_ng::Error>) -> Self {
        let path = err.path().to_string();
        let path = if path == "." || path.is_empty() { "(top level)".to_string() } else { path };
        let inner = err.into_inner();
        let location = inner.location();
        let mut message = humanize(&inner.to_string());
        let (line, column) = match &location {
            Some(loc) => (Some(loc.line()), Some(loc.column())),
            None => (None, None),
        };
        if let Some(loc) = &location {
            let suffix = format!(" at line {} column {}", loc.line(), loc.column());
            if let Some(core) = message.strip_suffix(&suffix) {
                message = format!("{}{suffix}", strip_yaml_path(core, &path));
            } else if !message.contains(" at line ") {
                message = format!("{}{suffix}", strip_yaml_path(&message, &path));
            }
        } else {
            message = strip_yaml_path(&message, &path).to_string();
        }
        ConfigError::Parse { path, message, line, column }
    }
}

/// Replaces the Rust type names of the section structs in serde's messages
/// (`expected struct PortYaml` is `expected a mapping`).
fn humanize(message: &str) -> String {
    let mut out = message.replace("expected i64", "expected an integer");
    while let Some(start) = out.find("struct ") {
        let name = start + "struct ".len();
        let end = out[name..].find(|c: char| !c.is_ascii_alphanumeric()).map_or(out.len(), |e| name + e);
        out.replace_range(start..end, "a mapping");
    }
    out
}

/// serde_yaml_ng prefixes its messages with its own path (`ports[0].x: ...`);
/// we print ours, so drop a leading word that is a prefix of our path.
fn strip_yaml_path<'a>(message: &'a str, path: &str) -> &'a str {
    if let Some((head, rest)) = message.split_once(": ") {
        if !head.is_empty() && !head.contains(char::is_whitespace) && (head == "." || path.starts_with(head)) {
            return rest;
        }
    }
    message
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // The caller names the file (`<file>: <error>`), as for the other variants.
            ConfigError::Io { source, .. } => write!(f, "cannot read the file: {source}"),
            ConfigError::Parse { path, message, .. } | ConfigError::Invalid { path, message } => {
                write!(f, "{path}: {message}")
            }
        }
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConfigError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

type Res<T> = Result<T, ConfigError>;

// ---------------------------------------------------------------------------
// Helpers the sections share
// ---------------------------------------------------------------------------

/// `v` as a `T`, if it lies in `lo..=hi`; else `<path>: must be lo..=hi`.
fn range<T: TryFrom<i64>>(path: &str, v: i64, lo: i64, hi: i64) -> Res<T> {
    let err = || ConfigError::invalid(path, format!("must be {lo}..={hi}"));
    if v < lo || v > hi {
        return Err(err());
    }
    T::try_from(v).map_err(|_| err())
}

/// [`range`], and a power of two.
fn pow2_range<T: TryFrom<i64>>(path: &str, v: i64, lo: i64, hi: i64) -> Res<T> {
    let out = range(path, v, lo, hi)?;
    if v.count_ones() != 1 {
        return Err(ConfigError::invalid(
            path,
            format!("{v} is not a power of two (must be a power of two in {lo}..={hi})"),
        ));
    }
    Ok(out)
}

/// A list of `lo..=hi` entries.
fn count(path: &str, n: usize, lo: usize, hi: usize) -> Res<()> {
    if n < lo || n > hi {
        return Err(ConfigError::invalid(path, format!("must have {lo}..={hi} entries, has {n}")));
    }
    Ok(())
}

/// A `dataplane` enum that the file writes as one of a fixed set of names
/// (`behavior: end.x`, `filtering: address-dependent`).
trait FileName: Copy + 'static {
    /// Every value, in the order error messages list their names.
    const VALUES: &'static [Self];
    /// The name the file uses for `self`.
    fn file_name(self) -> &'static str;
}

/// A [`FileName`] value as a field of a section struct: printed as its
/// name; an unknown name is refused as serde refuses an unknown variant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct ByName<T>(T);

impl<T: FileName> Serialize for ByName<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0.file_name())
    }
}

impl<'de, T: FileName> Deserialize<'de> for ByName<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor<T>(std::marker::PhantomData<T>);
        impl<T: FileName> serde::de::Visitor<'_> for Visitor<T> {
            type Value = ByName<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&one_of::<T>())
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ByName<T>, E> {
                T::VALUES
                    .iter()
                    .find(|t| t.file_name() == v)
                    .map(|t| ByName(*t))
                    .ok_or_else(|| E::custom(format!("unknown variant `{v}`, expected {}", one_of::<T>())))
            }
        }
        d.deserialize_str(Visitor(std::marker::PhantomData))
    }
}

/// The names of `T` as serde lists variants: `` `a` ``, `` `a` or `b` ``,
/// `` one of `a`, `b`, `c` ``.
fn one_of<T: FileName>() -> String {
    let names: Vec<String> = T::VALUES.iter().map(|v| format!("`{}`", v.file_name())).collect();
    match names.as_slice() {
        [one] => one.clone(),
        [a, b] => format!("{a} or {b}"),
        _ => format!("one of {}", names.join(", ")),
    }
}

// ---------------------------------------------------------------------------
// The file and the effective configuration
// ---------------------------------------------------------------------------

/// The whole file: every section, with its defaults. After validation it
/// holds the canonical form of every value and is what `to_yaml` prints.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
struct ConfigYaml {
    eal: eal::EalYaml,
    lcores: lcores::LcoresYaml,
    mempool: lcores::MempoolYaml,
    ports: Vec<ports::PortYaml>,
    routes: Vec<routing::RouteYaml>,
    neighbors: Vec<routing::NeighborYaml>,
    neighbor: routing::NeighborSettingsYaml,
    icmp: routing::IcmpYaml,
    pipeline: pipeline::PipelineYaml,
    metrics: metrics::MetricsYaml,
    control: control::ControlYaml,
    capture: capture::CaptureYaml,
    log: log::LogYaml,
    srv6: srv6::Srv6Yaml,
    storage_service: storage::StorageServiceYaml,
    #[serde(skip_serializing_if = "Option::is_none")]
    nat: Option<nat::NatYaml>,
    #[serde(skip_serializing_if = "Option::is_none")]
    storage: Option<storage::StorageYaml>,
}

/// The effective, validated configuration. Build it with
/// [`Config::from_yaml_str`] or [`Config::load`]; every default is filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// DPDK EAL options.
    pub eal: Eal,
    /// Main and worker lcores.
    pub lcores: Lcores,
    /// The packet buffer pool (one per process).
    pub mempool: Mempool,
    /// The ports, in configuration order; everything else refers to a port by
    /// its index in this vector.
    pub ports: Vec<Port>,
    /// Static routes (connected routes of port addresses are implicit), as
    /// the pipeline takes them; `port` indexes [`Config::ports`].
    pub routes: Vec<RouteSpec>,
    /// Static neighbor entries (never aged).
    pub neighbors: Vec<StaticNeighbor>,
    /// Neighbor table (ARP/ND) settings.
    pub neighbor: NeighborCfg,
    /// Generated ICMP/ICMPv6 error settings.
    pub icmp: Icmp,
    /// Worker poll loop settings.
    pub pipeline: Pipeline,
    /// Prometheus endpoint.
    pub metrics: Metrics,
    /// The control socket.
    pub control: Control,
    /// Whether DPDK's capture tools can attach.
    pub capture: Capture,
    /// The program's own logging (tracing).
    pub log: Log,
    /// SRv6 local SIDs and steering policies, as the pipeline takes them
    /// (empty by default); ports are indexes into [`Config::ports`].
    pub srv6: Srv6Config,
    /// The built-in storage responder of the storage SID behavior.
    pub storage_service: StorageService,
    /// Carrier-grade NAT44; `None` (the default) turns it off.
    pub nat: Option<Nat>,
    /// The object storage service; `None` (the default) turns it off.
    pub storage: Option<Storage>,
    /// The file, every default filled in and every value canonical: what
    /// [`Config::to_yaml`] prints.
    effective: ConfigYaml,
}

impl Config {
    /// Parses and validates a YAML configuration.
    pub fn from_yaml_str(text: &str) -> Result<Config, ConfigError> {
        let de = serde_yaml_ng::Deserializer::from_str(text);
        let file: ConfigYaml = serde_path_to_error::deserialize(de).map_err(ConfigError::from_yaml)?;
        validate(file)
    }

    /// Reads, parses and validates a YAML configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Io { file: path.to_path_buf(), source })?;
        let config = Config::from_yaml_str(&text)?;
        tracing::debug!(file = %path.display(), ports = config.ports.len(), "configuration loaded");
        Ok(config)
    }

    /// The embedded demo configuration ([`EMBEDDED_DEMO`]).
    pub fn demo() -> Config {
        Config::from_yaml_str(EMBEDDED_DEMO).expect("the embedded demo configuration is valid")
    }

    /// The EAL argument vector, `program` first:
    /// `--file-prefix=`, `-m`, `--huge-unlink`, `--lcores=main@cpu,w@cpu..`,
    /// `--main-lcore=`, `--log-level=`, `--no-pci` or `-a <addr>` per PCI port,
    /// `--vdev=<device>[,<args>]` per vdev port, then `eal.extra_args`.
    pub fn eal_args(&self, program: &str) -> Vec<String> {
        let eal = &self.eal;
        let mut v = vec![
            program.to_string(),
            format!("--file-prefix={}", eal.file_prefix),
            "-m".to_string(),
            eal.memory_mb.to_string(),
        ];
        if eal.huge_unlink {
            v.push("--huge-unlink".to_string());
        }
        let lcores: Vec<String> = std::iter::once(&self.lcores.main)
            .chain(&self.lcores.workers)
            .chain(&self.lcores.mapper)
            .map(|l| format!("{}@{}", l.lcore, l.cpu))
            .collect();
        v.push(format!("--lcores={}", lcores.join(",")));
        v.push(format!("--main-lcore={}", self.lcores.main.lcore));
        v.push(format!("--log-level={}", eal.log_level.as_str()));
        if !eal.pci {
            v.push("--no-pci".to_string());
        }
        for p in &self.ports {
            if p.is_pci {
                v.push("-a".to_string());
                v.push(p.device.clone());
            } else if p.args.is_empty() {
                v.push(format!("--vdev={}", p.device));
            } else {
                v.push(format!("--vdev={},{}", p.device, p.args));
            }
        }
        v.extend(eal.extra_args.iter().cloned());
        v
    }

    /// The index of the port named `name`.
    pub fn port_index(&self, name: &str) -> Option<usize> {
        self.ports.iter().position(|p| p.name == name)
    }

    /// Number of worker lcores.
    pub fn worker_count(&self) -> usize {
        self.lcores.workers.len()
    }

    /// The `(port index, rx queue)` pairs worker `worker` polls: rx queue `q` of
    /// every port belongs to worker `q % workers`.
    pub fn rx_queues_of_worker(&self, worker: usize) -> Vec<(usize, u16)> {
        let n = self.worker_count();
        let mut out = Vec::new();
        for (pi, p) in self.ports.iter().enumerate() {
            for q in 0..p.queues {
                if usize::from(q) % n == worker {
                    out.push((pi, q));
                }
            }
        }
        out
    }

    /// The effective configuration as YAML, every default filled in, routes,
    /// neighbors, SRv6 and NAT settings naming their port; it parses back to
    /// the same `Config`.
    pub fn to_yaml(&self) -> String {
        serde_yaml_ng::to_string(&self.effective).expect("the effective configuration serializes")
    }
}

/// Prints [`Config::to_yaml`].
impl fmt::Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_yaml())
    }
}

impl FromStr for Config {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        Config::from_yaml_str(s)
    }
}

// ---------------------------------------------------------------------------
// Validation: the sections in file order, then the checks across them
// ---------------------------------------------------------------------------

/// Validates every section, first error wins; `file` keeps the canonical
/// values and becomes [`Config::to_yaml`]'s text.
fn validate(mut file: ConfigYaml) -> Res<Config> {
    let f = &mut file;
    let eal = eal::validate(&mut f.eal, f.capture.pdump_written())?;
    let lcores = lcores::validate_lcores(&mut f.lcores)?;
    let mempool = lcores::validate_mempool(&f.mempool)?;
    let workers = lcores.workers.len();
    let ports = ports::validate(&mut f.ports, &eal, &mempool, workers)?;
    let routes = routing::validate_routes(&mut f.routes, &ports)?;
    let neighbors = routing::validate_neighbors(&mut f.neighbors, &ports)?;
    let neighbor = routing::validate_neighbor_settings(&f.neighbor, neighbors.len())?;
    let icmp = routing::validate_icmp(&f.icmp)?;
    let pipeline = pipeline::validate(&f.pipeline)?;
    let metrics = metrics::validate(&mut f.metrics)?;
    let control = control::validate(&mut f.control, &eal.file_prefix)?;
    let capture = capture::validate(&mut f.capture, &eal)?;
    let log = log::validate(&f.log)?;
    let srv6 = srv6::validate(&mut f.srv6, &ports, &routes)?;
    let storage_service = storage::validate_service(&mut f.storage_service)?;
    let nat = match &mut f.nat {
        None => None,
        Some(n) => Some(nat::validate(n, &ports, pipeline.idle_backoff.enabled)?),
    };
    check_mapper(nat.is_some(), &lcores)?;
    let storage = match &mut f.storage {
        None => None,
        Some(s) => Some(storage::validate(s, &ports, workers)?),
    };
    let config = Config {
        eal,
        lcores,
        mempool,
        ports,
        routes,
        neighbors,
        neighbor,
        icmp,
        pipeline,
        metrics,
        control,
        capture,
        log,
        srv6,
        storage_service,
        nat,
        storage,
        effective: file,
    };
    check_mbufs(&config)?;
    check_nat_mbufs(&config)?;
    check_hugepages(&config, 1)?;
    Ok(config)
}

/// `lcores.mapper` is the NAT mapping server's lcore: present exactly with `nat:`.
fn check_mapper(nat: bool, lcores: &Lcores) -> Res<()> {
    match (nat, &lcores.mapper) {
        (true, None) => Err(ConfigError::invalid(
            "lcores.mapper",
            "required with nat: the mapping server's lcore, e.g. { lcore: 2, cpu: 0 }",
        )),
        (false, Some(_)) => Err(ConfigError::invalid("lcores.mapper", "only used with nat:, which is not configured")),
        _ => Ok(()),
    }
}

/// The rx rings are filled at start and the tx rings and per-lcore caches can
/// hold mbufs too: the pool must be larger than all of them together.
fn check_mbufs(c: &Config) -> Res<()> {
    let m = &c.mempool;
    let workers = c.worker_count() as u64;
    let rings = ring_descriptors(c);
    let caches = u64::from(m.cache_size) * (workers + 1);
    let need = rings + caches;
    if u64::from(m.mbufs) < need {
        return Err(ConfigError::invalid(
            "mempool.mbufs",
            format!(
                "{} mbufs are fewer than the descriptor rings ({rings}) and lcore caches ({caches}) \
                 can hold: raise it to at least {need}",
                m.mbufs
            ),
        ));
    }
    Ok(())
}

/// The descriptors of every port's rx queues and of its tx queues (one per worker).
fn ring_descriptors(c: &Config) -> u64 {
    let workers = c.worker_count() as u64;
    c.ports
        .iter()
        .map(|p| u64::from(p.queues) * u64::from(p.rx_descriptors) + workers * u64::from(p.tx_descriptors))
        .sum()
}

/// The NAT rings hold mbufs too: requests and answers in flight.
fn check_nat_mbufs(c: &Config) -> Res<()> {
    let Some(nat) = &c.nat else { return Ok(()) };
    let workers = c.worker_count();
    let need = 2 * u64::from(nat.ring_size) * workers as u64;
    if u64::from(c.mempool.mbufs) < need * 2 {
        return Err(ConfigError::invalid(
            "nat.ring_size",
            format!(
                "{} request+answer ring slots for {workers} workers would hold more than half of mempool.mbufs ({}): \
                 lower nat.ring_size or raise mempool.mbufs",
                need, c.mempool.mbufs
            ),
        ));
    }
    Ok(())
}

/// Hugepage memory DPDK keeps besides what [`check_hugepages`] counts: its
/// own tables, the drivers' queue structures, the mempool's header with one
/// cache per possible lcore (128 × ~8 KiB). Measured with two net_null
/// ports and one worker under `-m 64`: 27000 mbufs still fit, so under
/// 3 MiB; this leaves room for drivers that take more.
const EAL_OWN_MIB: u64 = 16;
/// Hugepage bytes per descriptor of a port's rx or tx ring: a NIC's
/// descriptor (16 or 32 bytes) and the driver's entry for it, rounded up.
/// (vdevs such as af_packet keep their rings elsewhere; counting them is
/// the conservative side.)
const DESCRIPTOR_BYTES: u64 = 64;
/// Hugepage bytes per slot of an `rte_ring` (one pointer).
const RING_SLOT_BYTES: u64 = 8;
const MIB: u64 = 1 << 20;

/// `eal.memory_mb` must hold the mbuf pool, the ports' descriptor rings and
/// the rings between lcores, besides what DPDK keeps for itself
/// ([`EAL_OWN_MIB`]). The NAT tables, the flow caches and the storage
/// service's tables are not in it: they are the process's own memory
/// (`Vec`s, transparent huge pages), not DPDK's.
///
/// DPDK 22.11 maps more hugepages at run time when the `-m` memory is used
/// up (measured: 200000 mbufs under `-m 64` ran, on 516 MiB of hugepages),
/// so this holds the configuration to the budget it declares; it is not a
/// limit DPDK would enforce.
///
/// `pools`: one mbuf pool per NUMA node the lcores sit on; parsing assumes
/// one, [`Config::check_host`] counts the machine's nodes.
pub(super) fn check_hugepages(c: &Config, pools: u64) -> Res<()> {
    let m = &c.mempool;
    let pool =
        pools * (u64::from(m.mbufs) * m.object_bytes() + u64::from(m.mbufs + 1).next_power_of_two() * RING_SLOT_BYTES);
    let workers = c.worker_count() as u64;
    let descriptors = ring_descriptors(c) * DESCRIPTOR_BYTES;
    let mut slots = workers * u64::from(c.pipeline.punt_ring_size + c.pipeline.inject_ring_size);
    if let Some(nat) = &c.nat {
        slots += workers * 2 * u64::from(nat.ring_size);
    }
    if c.storage.is_some() {
        slots += workers * workers.saturating_sub(1) * u64::from(HANDOVER_RING_SIZE);
    }
    let rings = slots * RING_SLOT_BYTES;
    let memory = u64::from(c.eal.memory_mb) * MIB;
    let left = memory.saturating_sub(descriptors + rings + EAL_OWN_MIB * MIB);
    if pool > left {
        return Err(ConfigError::invalid(
            "mempool.mbufs",
            format!(
                "{}{} mbufs of {} bytes need ~{} MiB, more than eal.memory_mb ({} MiB) leaves after \
                 the descriptor rings (~{} MiB), the rings between lcores (~{} MiB) and DPDK's own \
                 {EAL_OWN_MIB} MiB: ~{} MiB; lower mempool.mbufs or raise eal.memory_mb",
                if pools > 1 { format!("{pools} pools (one per NUMA node in use) of ") } else { String::new() },
                m.mbufs,
                m.mbuf_bytes(),
                pool.div_ceil(MIB),
                c.eal.memory_mb,
                descriptors.div_ceil(MIB),
                rings.div_ceil(MIB),
                left / MIB,
            ),
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Tests of the whole file: parsing, printing, errors, the cross-section checks
// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;
    use std::net::Ipv4Addr;

    // -- whole configs -----------------------------------------------------

    #[test]
    fn demo_parses() {
        let c = Config::demo();
        assert_eq!(c.ports.len(), 2);
        let inside = &c.ports[0];
        assert_eq!(inside.name, "inside");
        assert_eq!(inside.device, "net_af_xdp0");
        assert_eq!(inside.args, "iface=apl-in");
        assert_eq!(inside.ipv4, vec!["192.0.2.1/24".parse().unwrap()]);
        assert_eq!(inside.ipv6, vec!["2001:db8:1::1/64".parse().unwrap()]);
        let outside = &c.ports[1];
        assert_eq!(outside.name, "outside");
        assert_eq!(outside.device, "net_af_xdp1");
        assert_eq!(outside.args, "iface=apl-out");
        assert_eq!(outside.ipv4, vec!["198.51.100.1/24".parse().unwrap()]);
        assert_eq!(outside.ipv6, vec!["2001:db8:2::1/64".parse().unwrap()]);
        assert_eq!(c.lcores.main, Lcore { lcore: 0, cpu: 0 });
        assert_eq!(c.lcores.workers, vec![Lcore { lcore: 1, cpu: 1 }]);
        assert!(c.pipeline.idle_backoff.enabled);
        assert_eq!(c.metrics.listen, Some("127.0.0.1:9100".parse().unwrap()));
        assert!(!c.eal.pci);
    }

    #[test]
    fn demo_eal_args() {
        let args = Config::demo().eal_args("appliance");
        assert_eq!(args[0], "appliance");
        let has = |s: &str| args.iter().any(|a| a == s);
        assert!(has("--no-pci"), "{args:?}");
        assert!(has("--file-prefix=appliance"), "{args:?}");
        assert!(has("--lcores=0@0,1@1"), "{args:?}");
        assert!(has("--main-lcore=0"), "{args:?}");
        assert!(!has("--huge-unlink"), "dpdk-dumpcap needs the hugepage files: {args:?}");
        assert!(Config::demo().capture.pdump);
        assert!(has("--log-level=notice"), "{args:?}");
        assert!(has("--vdev=net_af_xdp0,iface=apl-in"), "{args:?}");
        assert!(has("--vdev=net_af_xdp1,iface=apl-out"), "{args:?}");
        let m = args.iter().position(|a| a == "-m").unwrap();
        assert_eq!(args[m + 1], "256");
        assert!(!has("-a"));
    }

    #[test]
    fn bench_memif_parses() {
        let c = ok(BENCH_MEMIF);
        assert_eq!(c.ports[0].device, "net_memif0");
        assert_eq!(
            c.ports[0].args,
            "role=server,id=0,socket=/tmp/apl-bench/memif0.sock,socket-abstract=no,mac=02:00:00:00:10:01"
        );
        assert_eq!(c.ports[1].device, "net_null0");
        assert_eq!(c.ports[1].args, "no-rx=1");
        assert!(!c.pipeline.idle_backoff.enabled);
        assert_eq!(
            c.neighbors,
            vec![
                StaticNeighbor { ip: "198.51.100.2".parse().unwrap(), mac: [2, 0, 0, 0, 0x10, 2], port: 1 },
                StaticNeighbor { ip: "2001:db8:2::2".parse().unwrap(), mac: [2, 0, 0, 0, 0x10, 2], port: 1 },
            ]
        );
        // The SRv6 bench modes: an End SID and a storage SID that passes.
        assert_eq!(c.srv6.sids.len(), 2);
        let Some(dataplane::srv6::StoragePolicy::SrC { threshold }) = c.srv6.sids[1].policy else {
            panic!("the second SID of bench-memif is sr-c: {:?}", c.srv6.sids[1]);
        };
        assert!(c.storage_service.queue_depth >= threshold);
        assert_eq!(c.lcores.workers, vec![Lcore { lcore: 1, cpu: 1 }]);
        let args = c.eal_args("appliance");
        assert!(args.iter().any(|a| a == "--vdev=net_null0,no-rx=1"), "{args:?}");
        assert!(args.iter().any(|a| a == "--no-pci"));
    }

    #[test]
    fn defaults_filled_in() {
        let c = ok("ports:\n  - name: p0\n    device: net_null0\n");
        assert_eq!(c.eal.file_prefix, "appliance");
        assert_eq!(c.eal.memory_mb, 256);
        assert!(!c.eal.huge_unlink);
        assert!(c.capture.pdump);
        assert!(!c.eal.pci);
        assert_eq!(c.eal.log_level, EalLogLevel::Notice);
        assert!(c.eal.extra_args.is_empty());
        assert_eq!(c.lcores.main, Lcore { lcore: 0, cpu: 0 });
        assert_eq!(c.lcores.workers, vec![Lcore { lcore: 1, cpu: 1 }]);
        assert_eq!(c.mempool, Mempool { mbufs: 8191, cache_size: 256, data_room_bytes: 2176 });
        let p = &c.ports[0];
        assert_eq!(p.args, "");
        assert!(!p.is_pci);
        assert_eq!((p.queues, p.rx_descriptors, p.tx_descriptors, p.mtu), (1, 1024, 1024, 1500));
        assert_eq!(p.mac, None);
        assert!(!p.promiscuous);
        assert!(p.ipv4.is_empty() && p.ipv6.is_empty());
        assert!(c.routes.is_empty() && c.neighbors.is_empty());
        assert_eq!(
            c.neighbor,
            NeighborCfg {
                entries_max: 4096,
                pending_packets_max: 256,
                pending_per_neighbor_max: 4,
                resolve_retries: 3,
                resolve_interval_ms: 1000,
                reachable_ms: 30000
            }
        );
        assert_eq!(c.icmp, Icmp { errors_per_s: 100, errors_burst: 50 });
        assert_eq!(
            c.pipeline,
            Pipeline {
                burst_size: 32,
                idle_backoff: IdleBackoff { enabled: true, empty_polls: 256, sleep_us: 50 },
                punt_ring_size: 1024,
                inject_ring_size: 1024,
                ipv6_ext_limits: netwire::ipv6opt::ExtLimits::default(),
            }
        );
        assert_eq!(c.metrics.listen, Some("127.0.0.1:9100".parse().unwrap()));
        assert_eq!(c.log.level, "info");
        assert_eq!(c.log.format, LogFormat::Text);
        assert_eq!(c.srv6, Srv6Config::default());
        assert_eq!((c.srv6.encap_source, &c.srv6.trusted_ports), (None, &None));
        assert!(c.srv6.sids.is_empty() && c.srv6.policies.is_empty());
        assert_eq!(c.storage_service, StorageService { udp_port: 7878, queue_depth: 0, objects: vec![] });
    }

    #[test]
    fn partial_sections_keep_other_defaults() {
        let c = ok(&format!("{BASE}pipeline:\n  idle_backoff:\n    enabled: false\neal:\n  memory_mb: 512\n"));
        assert!(!c.pipeline.idle_backoff.enabled);
        assert_eq!(c.pipeline.idle_backoff.empty_polls, 256);
        assert_eq!(c.pipeline.burst_size, 32);
        assert_eq!(c.eal.memory_mb, 512);
        assert_eq!(c.eal.file_prefix, "appliance");
    }

    #[test]
    fn to_yaml_round_trips() {
        let with_srv6 = format!("{BASE}{SRV6}");
        for text in [EMBEDDED_DEMO, BENCH_MEMIF, BASE, with_srv6.as_str()] {
            let c = ok(text);
            let y = c.to_yaml();
            assert!(y.contains("mbufs: 8191"), "{y}");
            let back = ok(&y);
            assert_eq!(back, c, "{y}");
            assert_eq!(c.to_string(), y);
        }
        let y = ok(BASE).to_yaml();
        assert!(y.contains("port: outside"), "{y}");
        assert!(y.contains("mac: 02:00:00:00:00:02") || y.contains("mac: '02:00:00:00:00:02'"), "{y}");
        assert!(!y.contains("is_pci"), "{y}");
    }

    /// The printed values are the program's reading of the file: canonical
    /// addresses, defaults that depend on other fields filled in.
    #[test]
    fn to_yaml_prints_canonical_values() {
        let c = ok("eal: {pci: true}\nlcores:\n  workers: [{lcore: 3}]\n\
                    ports:\n  - {name: nic, device: \"0000:0A:00.1\", mac: \"02:AB:00:00:00:01\", \
                    ipv6: [\"2001:0db8:1:0::1/64\"]}\n  - {name: v, device: net_null0, args: null}\n");
        let y = c.to_yaml();
        for printed in
            ["device: 0000:0a:00.1", "mac: 02:ab:00:00:00:01", "- 2001:db8:1::1/64", "args: ''", "lcore: 3\n    cpu: 3"]
        {
            assert!(y.contains(printed), "{printed:?} not in\n{y}");
        }
        assert_eq!(ok(&y), c);
        assert_eq!(ok(&y).to_yaml(), y, "printing is idempotent");
    }

    #[test]
    fn disabled_metrics_and_null_args() {
        let c = ok(&format!("{BASE}metrics:\n  listen: null\n"));
        assert_eq!(c.metrics.listen, None);
        let c = ok("ports:\n  - name: p0\n    device: net_null0\n    args:\n");
        assert_eq!(c.ports[0].args, "");
        assert_eq!(c.eal_args("x").iter().filter(|a| a.starts_with("--vdev")).count(), 1);
    }

    #[test]
    fn rx_queue_assignment() {
        let y = "mempool: {mbufs: 16383}\nlcores:\n  workers: [{lcore: 1, cpu: 1}, {lcore: 2, cpu: 1}]\n\
                 ports:\n  - {name: a, device: net_null0, queues: 3}\n  - {name: b, device: net_null1}\n";
        let c = ok(y);
        assert_eq!(c.rx_queues_of_worker(0), vec![(0, 0), (0, 2), (1, 0)]);
        assert_eq!(c.rx_queues_of_worker(1), vec![(0, 1)]);
        assert!(c.eal_args("x").iter().any(|a| a == "--lcores=0@0,1@1,2@1"), "{:?}", c.eal_args("x"));
    }

    #[test]
    fn pci_ports() {
        let y =
            "eal: {pci: true}\nports:\n  - {name: nic, device: \"0000:03:00.0\"}\n  - {name: v, device: net_null0}\n";
        let c = ok(y);
        assert!(c.ports[0].is_pci);
        let args = c.eal_args("x");
        assert!(!args.iter().any(|a| a == "--no-pci"));
        let a = args.iter().position(|s| s == "-a").unwrap();
        assert_eq!(args[a + 1], "0000:03:00.0");
        assert!(args.iter().any(|s| s == "--vdev=net_null0"));
    }

    #[test]
    fn extra_args_appended_verbatim() {
        let c = ok(&format!("{BASE}eal:\n  extra_args: [\"--no-telemetry\", \"--in-memory\"]\n"));
        let args = c.eal_args("x");
        assert_eq!(&args[args.len() - 2..], ["--no-telemetry", "--in-memory"]);
    }

    #[test]
    fn cidr_helpers() {
        let c: Ipv4Cidr = "192.0.2.77/24".parse().unwrap();
        assert_eq!(c.network(), Ipv4Addr::new(192, 0, 2, 0));
        assert_eq!(c.broadcast(), Ipv4Addr::new(192, 0, 2, 255));
        assert!(c.contains(Ipv4Addr::new(192, 0, 2, 9)));
        assert!(!c.contains(Ipv4Addr::new(192, 0, 3, 9)));
        assert!(!c.is_network());
        let all: Ipv4Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(Ipv4Addr::new(203, 0, 113, 1)) && all.is_network());
        let c6: Ipv6Cidr = "2001:db8:1::1/64".parse().unwrap();
        assert_eq!(c6.network(), "2001:db8:1::".parse::<std::net::Ipv6Addr>().unwrap());
        assert!(c6.contains("2001:db8:1::ffff".parse().unwrap()));
        assert!(!c6.contains("2001:db8:2::1".parse().unwrap()));
        let host: Ipv6Cidr = "2001:db8::1/128".parse().unwrap();
        assert!(host.is_network() && host.contains("2001:db8::1".parse().unwrap()));
        let r: IpCidr = "2001:db8::/32".parse().unwrap();
        assert!(!r.is_ipv4() && r.prefix_len() == 32 && r.to_string() == "2001:db8::/32");
        assert!(!r.contains("192.0.2.1".parse().unwrap()));
        assert_eq!(parse_mac("02:00:00:00:10:0a"), Some([2, 0, 0, 0, 0x10, 0x0a]));
        assert_eq!(parse_mac("02:00:00:00:10"), None);
        assert_eq!(parse_mac("02:00:00:00:10:0a:00"), None);
        assert_eq!(parse_mac("+2:00:00:00:10:0a"), None);
        assert_eq!(format_mac(&[2, 0, 0, 0, 0x10, 0x0a]), "02:00:00:00:10:0a");
    }

    // -- parse errors ------------------------------------------------------

    #[test]
    fn unknown_field_is_named() {
        let e = err(&edit("    device: net_af_packet0\n", "    device: net_af_packet0\n    quux: 1\n"));
        assert!(e.starts_with("ports[0].quux: unknown field `quux`"), "{e}");
        assert!(e.contains("line "), "{e}");
        let e = err(&format!("{BASE}pipeline:\n  idle_backoff:\n    sleep: 5\n"));
        assert!(e.starts_with("pipeline.idle_backoff.sleep: unknown field `sleep`"), "{e}");
        let e = err(&format!("{BASE}bogus: 1\n"));
        assert!(e.starts_with("bogus: unknown field `bogus`"), "{e}");
    }

    #[test]
    fn bad_type_is_named_with_location() {
        let y = edit("    args: \"iface=veth1,qpairs=1\"\n", "    args: \"iface=veth1,qpairs=1\"\n    queues: many\n");
        let e = Config::from_yaml_str(&y).unwrap_err();
        let s = e.to_string();
        assert!(
            s.starts_with("ports[1].queues: invalid type: string \"many\", expected an integer at line 11 column"),
            "{s}"
        );
        assert!(s.ends_with(&format!("at line {} column {}", e.location().unwrap().0, e.location().unwrap().1)), "{s}");
        assert_eq!(e.location().unwrap().0, 11);
        let s = err(&format!("{BASE}pipeline:\n  idle_backoff:\n    enabled: maybe\n"));
        assert!(s.starts_with("pipeline.idle_backoff.enabled: invalid type"), "{s}");
        let s = err(&format!("{BASE}eal:\n  log_level: loud\n"));
        assert!(s.starts_with("eal.log_level: unknown variant `loud`"), "{s}");
        let s = err(&format!("{BASE}log:\n  format: xml\n"));
        assert!(s.starts_with("log.format: unknown variant `xml`"), "{s}");
        let s = err(&edit("ipv4: [\"192.0.2.1/24\"]", "ipv4: \"192.0.2.1/24\""));
        assert!(s.starts_with("ports[0].ipv4: invalid type"), "{s}");
    }

    #[test]
    fn missing_required_field_is_named() {
        let s = err("ports:\n  - name: p0\n");
        assert!(s.starts_with("ports[0]: missing field `device`"), "{s}");
        let s = err(&format!("{BASE}  - ip: 192.0.2.3\n    port: inside\n"));
        assert!(s.starts_with("neighbors[1]: missing field `mac`"), "{s}");
    }

    #[test]
    fn yaml_syntax_error_has_location() {
        let e = Config::from_yaml_str("ports:\n\t- x\n").unwrap_err();
        assert!(matches!(e, ConfigError::Parse { .. }), "{e}");
        assert_eq!(e.location(), Some((2, 1)), "{e}");
        assert!(e.to_string().contains("cannot start any token at line 2 column 1"), "{e}");
        let e = Config::from_yaml_str("- 1\n").unwrap_err();
        assert_eq!(e.to_string(), "(top level): invalid type: sequence, expected a mapping at line 1 column 1");
    }

    #[test]
    fn load_reports_missing_file() {
        let e = Config::load(Path::new("/nonexistent/appliance.yaml")).unwrap_err();
        assert!(e.to_string().starts_with("cannot read the file: "), "{e}");
        assert_eq!(e.path(), "/nonexistent/appliance.yaml");
        assert!(matches!(e, ConfigError::Io { .. }));
    }

    // -- checks across sections ---------------------------------------------

    #[test]
    fn mempool_must_cover_rings_and_caches() {
        // 2 ports x (1024 rx + 1024 tx) + 2 lcores x 256 cache = 4608
        assert_err_starts(
            &format!("{BASE}mempool:\n  mbufs: 4607\n"),
            "mempool.mbufs: 4607 mbufs are fewer than the descriptor rings (4096) and lcore caches (512) can hold: raise it to at least 4608",
        );
        ok(&format!("{BASE}mempool:\n  mbufs: 4608\n"));
    }

    #[test]
    fn mbufs_must_fit_the_hugepage_memory() {
        // 262144 mbufs of 2176 + 128 bytes, 64 more each in the pool (592 MiB),
        // and the pool's ring of 524288 pointers (4 MiB)
        assert_err(
            &format!("{BASE}mempool:\n  mbufs: 262144\n"),
            "mempool.mbufs: 262144 mbufs of 2304 bytes need ~596 MiB, more than eal.memory_mb (256 MiB) \
             leaves after the descriptor rings (~1 MiB), the rings between lcores (~1 MiB) and DPDK's \
             own 16 MiB: ~239 MiB; lower mempool.mbufs or raise eal.memory_mb",
        );
        ok(&format!("{BASE}mempool:\n  mbufs: 262144\neal:\n  memory_mb: 640\n"));
        // the smallest memory with the default pool (8191 mbufs, 19 MiB)
        ok(&format!("{BASE}eal:\n  memory_mb: 64\n"));
        // the storage hand-over rings count: 64 workers, 64 x 63 rings of 1024 slots (31.5 MiB)
        let workers: Vec<String> = (1..=64).map(|w| format!("{{lcore: {w}, cpu: 0}}")).collect();
        let many = format!(
            "eal: {{memory_mb: 80}}\nmempool: {{mbufs: 20000, cache_size: 0}}\n\
             lcores:\n  workers: [{}]\n\
             ports:\n  - {{name: a, device: net_null0, rx_descriptors: 64, tx_descriptors: 64}}\n",
            workers.join(", ")
        );
        ok(&many);
        let rams = vec!["ram"; 64].join(", ");
        assert_err(
            &format!("{many}storage: {{object_prefix: \"2001:db8:f0:1::/64\", device: [{rams}]}}\n"),
            "mempool.mbufs: 20000 mbufs of 2304 bytes need ~46 MiB, more than eal.memory_mb (80 MiB) \
             leaves after the descriptor rings (~1 MiB), the rings between lcores (~33 MiB) and DPDK's \
             own 16 MiB: ~31 MiB; lower mempool.mbufs or raise eal.memory_mb",
        );
    }

    #[test]
    fn every_shipped_config_fits_its_memory() {
        for text in [EMBEDDED_DEMO, BENCH_MEMIF, BENCH_NAT, NAT_CONFIG] {
            ok(text);
        }
    }
}
