//! The appliance's configuration: a YAML file, parsed once at start-up.
//!
//! Parsing has two steps:
//!
//! 1. The YAML text is deserialized into private "raw" structs that mirror the
//!    file (strings for addresses, wide integers for counts, defaults filled in,
//!    unknown fields refused). Syntax and type errors carry the field path and
//!    the line/column.
//! 2. [`validate`](Config::from_yaml_str) checks every value and every
//!    cross-field rule, failing on the first error, and builds the effective,
//!    typed [`Config`]: `std::net` addresses, [`Ipv4Cidr`]/[`Ipv6Cidr`]
//!    prefixes, port references resolved to port indexes.
//!
//! Every error displays as `<field path>: <message>`, for example
//! `ports[1].queues: must be 1..=64`.
//!
//! The reference for every field (type, default, limits, meaning) is
//! `docs/config.md`; `configs/demo.yaml` is a complete, commented example and is
//! embedded in the binary as [`EMBEDDED_DEMO`].

use serde::{Deserialize, Serialize, Serializer};
use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// The demo configuration (`configs/demo.yaml`): the appliance between two
/// kernel hosts over two af_packet vdevs.
pub const EMBEDDED_DEMO: &str = include_str!("../../configs/demo.yaml");

/// Hard limits of the configuration (the upper ends of the documented ranges).
pub mod limits {
    /// Most ports (`ports`).
    pub const MAX_PORTS: usize = 16;
    /// Most worker lcores (`lcores.workers`).
    pub const MAX_WORKERS: usize = 64;
    /// Most rx queues per port (`ports[].queues`).
    pub const MAX_QUEUES: u16 = 64;
    /// Lcore ids are below this (DPDK's default `RTE_MAX_LCORE`).
    pub const MAX_LCORE: u32 = 128;
    /// CPU ids are below this.
    pub const MAX_CPU: u32 = 1024;
    /// Most addresses of one family on one port.
    pub const MAX_ADDRESSES_PER_FAMILY: usize = 8;
    /// Most static routes.
    pub const MAX_ROUTES: usize = 65536;
    /// Most static neighbor entries.
    pub const MAX_STATIC_NEIGHBORS: usize = 4096;
    /// DPDK's `RTE_PKTMBUF_HEADROOM`: bytes of an mbuf's data room kept in front of the frame.
    pub const MBUF_HEADROOM: u32 = 128;
    /// Ethernet header and CRC: a frame is at most `mtu + FRAME_OVERHEAD` bytes.
    pub const FRAME_OVERHEAD: u32 = 18;
    /// The smallest MTU an IPv6 link may have (RFC 8200).
    pub const IPV6_MIN_MTU: u16 = 1280;
    /// Most local SIDs (`srv6.local_sids`).
    pub const MAX_LOCAL_SIDS: usize = 1024;
    /// Most SRv6 steering policies (`srv6.steering`).
    pub const MAX_STEERING_POLICIES: usize = 1024;
    /// Most segments of one steering policy (`srv6.steering[].segments`).
    pub const MAX_SEGMENTS: usize = 16;
    /// Largest `threshold` of an `sr-c` storage SID, and largest
    /// `storage_service.queue_depth`.
    pub const MAX_STORAGE_QUEUE_DEPTH: u32 = 1_000_000;
    /// Most object ids held by the storage service (`storage_service.objects`).
    pub const MAX_STORAGE_OBJECTS: usize = 4096;
}

use limits::*;

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
        ConfigError::Invalid {
            path: path.into(),
            message: message.into(),
        }
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
            ConfigError::Parse { message, .. } | ConfigError::Invalid { message, .. } => {
                message.clone()
            }
        }
    }

    /// 1-based (line, column) in the YAML text, when known.
    pub fn location(&self) -> Option<(usize, usize)> {
        match self {
            ConfigError::Parse {
                line: Some(l),
                column: Some(c),
                ..
            } => Some((*l, *c)),
            _ => None,
        }
    }

    fn from_yaml(err: serde_path_to_error::Error<serde_yaml_ng::Error>) -> Self {
        let path = err.path().to_string();
        let path = if path == "." || path.is_empty() {
            "(top level)".to_string()
        } else {
            path
        };
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
        ConfigError::Parse {
            path,
            message,
            line,
            column,
        }
    }
}

/// Replaces the Rust type names of the raw structs in serde's messages.
fn humanize(message: &str) -> String {
    let mut out = message.replace("expected i64", "expected an integer");
    while let Some(start) = out.find("struct Raw") {
        let end = out[start + "struct Raw".len()..]
            .find(|c: char| !c.is_ascii_alphanumeric())
            .map_or(out.len(), |e| start + "struct Raw".len() + e);
        out.replace_range(start..end, "a mapping");
    }
    out
}

/// serde_yaml_ng prefixes its messages with its own path (`ports[0].x: ...`);
/// we print ours, so drop a leading word that is a prefix of our path.
fn strip_yaml_path<'a>(message: &'a str, path: &str) -> &'a str {
    if let Some((head, rest)) = message.split_once(": ") {
        if !head.is_empty()
            && !head.contains(char::is_whitespace)
            && (head == "." || path.starts_with(head))
        {
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
// Prefixes and addresses
// ---------------------------------------------------------------------------

pub use netwire::prefix::{IpCidr, Ipv4Cidr, Ipv6Cidr};


/// Formats a MAC address as `02:00:00:00:00:01`.
pub fn format_mac(mac: &[u8; 6]) -> String {
    let [a, b, c, d, e, g] = mac;
    format!("{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
}

/// Parses `02:00:00:00:00:01` (six pairs of hex digits separated by `:`).
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = s.split(':');
    for byte in out.iter_mut() {
        let p = parts.next()?;
        if p.len() != 2 || !p.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        *byte = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

fn ser_mac<S: Serializer>(mac: &[u8; 6], s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&format_mac(mac))
}

fn ser_opt_mac<S: Serializer>(mac: &Option<[u8; 6]>, s: S) -> Result<S::Ok, S::Error> {
    match mac {
        Some(m) => s.collect_str(&format_mac(m)),
        None => s.serialize_none(),
    }
}

/// Why `ip` can't be a unicast host address (interface address, next hop, neighbor).
fn non_unicast(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(a) => {
            if a.is_unspecified() {
                Some("the unspecified address")
            } else if a.is_loopback() {
                Some("a loopback address")
            } else if a.is_multicast() {
                Some("a multicast address")
            } else if a.is_broadcast() {
                Some("the broadcast address")
            } else if a.octets()[0] >= 240 {
                Some("a reserved (240.0.0.0/4) address")
            } else if a.octets()[0] == 0 {
                Some("a \"this network\" (0.0.0.0/8) address")
            } else {
                None
            }
        }
        IpAddr::V6(a) => {
            if a.is_unspecified() {
                Some("the unspecified address")
            } else if a.is_loopback() {
                Some("the loopback address")
            } else if a.is_multicast() {
                Some("a multicast address")
            } else if a.to_ipv4_mapped().is_some() {
                Some("an IPv4-mapped address")
            } else {
                None
            }
        }
    }
}

fn is_link_local6(a: Ipv6Addr) -> bool {
    a.segments()[0] & 0xffc0 == 0xfe80
}

// ---------------------------------------------------------------------------
// The effective configuration
// ---------------------------------------------------------------------------

/// The effective, validated configuration. Build it with
/// [`Config::from_yaml_str`] or [`Config::load`]; every default is filled in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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
    /// Static routes (connected routes of port addresses are implicit).
    pub routes: Vec<Route>,
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
    /// The program's own logging (tracing).
    pub log: Log,
    /// SRv6 local SIDs and steering policies (empty by default).
    pub srv6: Srv6,
    /// The built-in storage responder of the storage SID behavior.
    pub storage_service: StorageService,
    /// Carrier-grade NAT44; `None` (the default) turns it off.
    #[serde(skip)]
    pub nat: Option<Nat>,
    /// The object storage service; `None` (the default) turns it off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage: Option<Storage>,
}

/// The object storage service (`storage:`), docs/storage-service.md.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Storage {
    /// The node's object prefix (a /64): replica addresses are this prefix
    /// plus the object id.
    pub object_prefix: Ipv6Cidr,
    /// One device per worker (worker `w` serves the objects with
    /// `id % workers == w` from `devices[w]`): a block device or raw file,
    /// or `ram` (memory, lost at exit: for tests). Written `device:` as one
    /// string (one worker) or a list.
    #[serde(rename = "device")]
    pub devices: Vec<String>,
    /// Size of the file created when `device` does not exist, and of `ram`.
    pub size_mb: u32,
    /// Objects the store can hold (fixed when the device is formatted).
    pub objects_max: u32,
    /// Requests held at once (waiting for I/O); more are answered `busy`.
    pub requests_max: u32,
    /// Chunks being assembled from fragments at once.
    pub assemblies_max: u32,
}

/// NAT44 (`nat:`): port roles, the pool and the mapping server's tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nat {
    /// Inside (subscriber) ports, by index: 1..=16, unique.
    pub inside: Vec<usize>,
    /// Outside (public) ports, by index: 1..=16, unique, none of them inside.
    pub outside: Vec<usize>,
    /// The pool, tables, limits and timeouts (pool expanded to addresses).
    pub table: dataplane::nat::NatConfig,
    /// The pool as written (addresses and prefixes), for printing.
    pub pool_text: Vec<String>,
    /// Slots of each worker's flow cache: a power of two, 1024..=16777216.
    pub worker_cache_entries: u32,
    /// Size of each worker's request and answer rings: a power of two, 64..=65536.
    pub ring_size: u32,
    /// Whether the seeds were written (else they come from the OS at start).
    pub seeded: bool,
    /// Whether the mapping server's loop sleeps when idle (with
    /// `pipeline.idle_backoff`'s `empty_polls` and `sleep_us`); written
    /// `null` it follows `pipeline.idle_backoff.enabled`.
    pub mapper_idle_backoff: bool,
}

/// DPDK EAL options (`eal:`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Eal {
    /// `--file-prefix`; `[A-Za-z0-9_-]{1,32}`, one per DPDK process on the machine.
    pub file_prefix: String,
    /// `-m`: hugepage memory in MiB, 64..=65536.
    pub memory_mb: u32,
    /// `--huge-unlink`: no hugepage files left behind.
    pub huge_unlink: bool,
    /// false: `--no-pci`. true: `-a <addr>` for every PCI port (at least one).
    pub pci: bool,
    /// `--log-level=<level>`.
    pub log_level: EalLogLevel,
    /// Appended to the EAL arguments verbatim.
    pub extra_args: Vec<String>,
}

/// DPDK log levels, as `--log-level` spells them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EalLogLevel {
    /// RTE_LOG_EMERG
    Emergency,
    /// RTE_LOG_ALERT
    Alert,
    /// RTE_LOG_CRIT
    Critical,
    /// RTE_LOG_ERR
    Error,
    /// RTE_LOG_WARNING
    Warning,
    /// RTE_LOG_NOTICE
    Notice,
    /// RTE_LOG_INFO
    Info,
    /// RTE_LOG_DEBUG
    Debug,
}

impl EalLogLevel {
    /// The name `--log-level` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            EalLogLevel::Emergency => "emergency",
            EalLogLevel::Alert => "alert",
            EalLogLevel::Critical => "critical",
            EalLogLevel::Error => "error",
            EalLogLevel::Warning => "warning",
            EalLogLevel::Notice => "notice",
            EalLogLevel::Info => "info",
            EalLogLevel::Debug => "debug",
        }
    }
}

/// The lcores (`lcores:`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Lcores {
    /// The main lcore: control plane, metrics, slow path.
    pub main: Lcore,
    /// Poll-mode workers, 1..=64. Worker `w` is `workers[w]`.
    pub workers: Vec<Lcore>,
    /// The NAT mapping server's lcore: required with `nat:`, refused without.
    pub mapper: Option<Lcore>,
}

/// An EAL lcore pinned to a CPU (`--lcores lcore@cpu`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct Lcore {
    /// EAL lcore id, < 128, unique.
    pub lcore: u32,
    /// CPU the lcore's thread runs on, < 1024; lcores may share a CPU.
    pub cpu: u32,
}

/// The mbuf pool (`mempool:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Mempool {
    /// Number of mbufs, 1023..=1048575 (best: a power of two minus one).
    pub mbufs: u32,
    /// Per-lcore cache, 0..=512 and `cache_size * 3 / 2 <= mbufs`.
    pub cache_size: u32,
    /// Data room of an mbuf including the 128-byte headroom, 1152..=65535.
    pub data_room_bytes: u16,
}

/// A port (`ports[]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Port {
    /// Our name for the port, `[a-z0-9_-]{1,15}`, unique.
    pub name: String,
    /// DPDK device: a vdev name (`net_...`) or a PCI address (`0000:03:00.0`).
    /// The ethdev is looked up by this name, not by port order.
    pub device: String,
    /// vdev devargs (`--vdev=<device>,<args>`); empty for PCI devices.
    pub args: String,
    /// Whether `device` is a PCI address (derived from `device`, not printed).
    #[serde(skip_serializing)]
    pub is_pci: bool,
    /// Rx queues, 1..=64; rx queue `q` is polled by worker `q % workers`.
    /// Tx queues are always one per worker.
    pub queues: u16,
    /// Descriptors per rx queue, power of two, 64..=16384.
    pub rx_descriptors: u16,
    /// Descriptors per tx queue, power of two, 64..=16384.
    pub tx_descriptors: u16,
    /// MTU, 68..=9000 (>= 1280 with IPv6).
    pub mtu: u16,
    /// MAC address override; `None`: the device's own.
    #[serde(serialize_with = "ser_opt_mac")]
    pub mac: Option<[u8; 6]>,
    /// Promiscuous mode.
    pub promiscuous: bool,
    /// The node's own IPv4 addresses on this port, with their subnets (0..=8).
    pub ipv4: Vec<Ipv4Cidr>,
    /// The node's own IPv6 addresses on this port (0..=8); the EUI-64
    /// link-local address is added at run time and is not listed here.
    pub ipv6: Vec<Ipv6Cidr>,
}

impl Port {
    /// Whether `ip` is one of this port's own addresses.
    pub fn has_address(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(a) => self.ipv4.iter().any(|c| c.addr == a),
            IpAddr::V6(a) => self.ipv6.iter().any(|c| c.addr == a),
        }
    }

    /// Whether `ip` is on one of this port's subnets (IPv6 link-local
    /// addresses are on every port's link).
    pub fn on_link(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(a) => self.ipv4.iter().any(|c| c.contains(a)),
            IpAddr::V6(a) => is_link_local6(a) || self.ipv6.iter().any(|c| c.contains(a)),
        }
    }

    /// Whether the port carries IPv6 (its MTU allows it).
    pub fn ipv6_capable(&self) -> bool {
        self.mtu >= IPV6_MIN_MTU
    }
}

/// A static route (`routes[]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Route {
    /// Destination prefix, host bits zero.
    pub prefix: IpCidr,
    /// Next hop (same family, on a subnet of `port`); `None`: on-link.
    pub via: Option<IpAddr>,
    /// Index into [`Config::ports`].
    pub port: usize,
}

/// A static neighbor entry (`neighbors[]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct StaticNeighbor {
    /// The neighbor's address, on a subnet of `port` (or IPv6 link-local).
    pub ip: IpAddr,
    /// Its MAC address (unicast).
    #[serde(serialize_with = "ser_mac")]
    pub mac: [u8; 6],
    /// Index into [`Config::ports`].
    pub port: usize,
}

/// Neighbor table (ARP/ND) settings (`neighbor:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct NeighborCfg {
    /// Table capacity (static + learned), 16..=1048576.
    pub entries_max: u32,
    /// Packets held while resolving, all neighbors together, 0..=65536.
    pub pending_packets_max: u32,
    /// Packets held per unresolved neighbor, 1..=64.
    pub pending_per_neighbor_max: u32,
    /// Requests sent before giving up, 1..=10.
    pub resolve_retries: u32,
    /// Time between requests, 10..=60000 ms.
    pub resolve_interval_ms: u32,
    /// Learned entries are re-resolved after this, 1000..=3600000 ms.
    pub reachable_ms: u32,
}

/// Generated ICMP/ICMPv6 errors (`icmp:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Icmp {
    /// Token bucket rate, 0..=1000000 per second; 0: no errors are sent.
    pub errors_per_s: u32,
    /// Token bucket depth, 1..=100000.
    pub errors_burst: u32,
}

/// Worker poll loop settings (`pipeline:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Pipeline {
    /// Packets per rx/tx burst, 1..=64.
    pub burst_size: u16,
    /// Pausing an idle poll loop.
    pub idle_backoff: IdleBackoff,
    /// Worker -> control ring size, power of two, 64..=65536.
    pub punt_ring_size: u32,
    /// Control -> worker ring size, power of two, 64..=65536.
    pub inject_ring_size: u32,
}

/// Idle back-off of poll loops (`pipeline.idle_backoff:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct IdleBackoff {
    /// false: workers spin (bare metal).
    pub enabled: bool,
    /// Consecutive empty polls before a pause, 1..=1000000.
    pub empty_polls: u32,
    /// Pause length, 1..=100000 µs.
    pub sleep_us: u32,
}

/// Metrics endpoint (`metrics:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Metrics {
    /// Where `GET /metrics` is served; `None`: disabled.
    pub listen: Option<SocketAddr>,
}

/// The program's own logging (`log:`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Log {
    /// A level (`trace debug info warn error off`) or an EnvFilter directive
    /// string (`info,appliance::neigh=debug`).
    pub level: String,
    /// Output format.
    pub format: LogFormat,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// SRv6 (`srv6:`): the node's local SIDs (RFC 8986 endpoint behaviors) and the
/// H.Encaps policies that steer traffic into SRv6. The default is empty: no
/// local SID, no steering, nothing changes in forwarding.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Srv6 {
    /// IPv6 source address of the outer header pushed by H.Encaps /
    /// H.Encaps.Red; one of the node's own addresses (`ports[].ipv6`).
    /// `None`: the first global IPv6 address of the egress port, chosen at
    /// run time. [`SteeringPolicy::source`] overrides it per policy.
    pub encap_source: Option<Ipv6Addr>,
    /// The ports inside the SR domain (indexes into [`Config::ports`], in
    /// configuration order, unique, 1..=16). A packet whose destination is a
    /// local SID arriving on another port is dropped (RFC 8754 §5.1).
    /// `None`: every port is trusted.
    pub trusted_ports: Option<Vec<usize>>,
    /// The local SIDs, 0..=1024, unique.
    pub local_sids: Vec<LocalSid>,
    /// The steering (H.Encaps) policies, 0..=1024, prefixes unique.
    pub steering: Vec<SteeringPolicy>,
}

impl Srv6 {
    /// Whether a packet for a local SID is accepted when it arrives on `port`
    /// ([`Srv6::trusted_ports`]).
    pub fn trusts(&self, port: usize) -> bool {
        self.trusted_ports
            .as_ref()
            .is_none_or(|ports| ports.contains(&port))
    }

    /// The local SID equal to `addr`, if any.
    pub fn local_sid(&self, addr: Ipv6Addr) -> Option<&LocalSid> {
        self.local_sids.iter().find(|s| s.sid == addr)
    }
}

/// A local SID (`srv6.local_sids[]`): an IPv6 address (a /128) of this node
/// bound to an endpoint behavior.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct LocalSid {
    /// The SID; unicast, not link-local, not one of the ports' own addresses,
    /// unique.
    pub sid: Ipv6Addr,
    /// What the node does with a packet whose destination is `sid`.
    pub behavior: SidBehavior,
    /// PSP/USD flavors; only [`SidBehavior::End`] and [`SidBehavior::EndX`]
    /// have any.
    pub flavors: Flavors,
    /// The layer-3 adjacency of [`SidBehavior::EndX`] and
    /// [`SidBehavior::EndDx6`] (`Some` exactly for those): on a subnet of
    /// `port`, or link-local.
    pub next_hop: Option<Ipv6Addr>,
    /// The output port of `next_hop` (index into [`Config::ports`]; `Some`
    /// exactly for [`SidBehavior::EndX`] and [`SidBehavior::EndDx6`]); its MTU
    /// allows IPv6.
    pub port: Option<usize>,
    /// The acceptance policy of [`SidBehavior::Storage`] (`Some` exactly for it).
    pub policy: Option<StoragePolicy>,
    /// [`StoragePolicy::SrC`]'s threshold, 1..=1000000 (`Some` exactly for
    /// it): the request is accepted while the local queue depth is below it.
    pub threshold: Option<u32>,
}

/// SRv6 endpoint behaviors (RFC 8986 §4) and the storage behavior.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SidBehavior {
    /// `end`: endpoint (§4.1). Decrement Segments Left, copy the next segment
    /// into the destination address, forward by the FIB.
    #[serde(rename = "end")]
    End,
    /// `end.x`: endpoint with layer-3 cross-connect (§4.2): as End, but send
    /// to the configured next hop on the configured port instead of a FIB
    /// lookup.
    #[serde(rename = "end.x")]
    EndX,
    /// `end.dt6`: decapsulate and look the inner IPv6 packet up in the IPv6
    /// table (§4.6); only with Segments Left 0.
    #[serde(rename = "end.dt6")]
    EndDt6,
    /// `end.dx6`: decapsulate and send the inner IPv6 packet to the
    /// configured next hop on the configured port (§4.5); only with Segments
    /// Left 0.
    #[serde(rename = "end.dx6")]
    EndDx6,
    /// `storage`: the request is accepted into the local storage service
    /// ([`StorageService`]) or passed on to the next segment, by
    /// [`StoragePolicy`]; the last segment always accepts.
    #[serde(rename = "storage")]
    Storage,
}

impl SidBehavior {
    /// The name the configuration uses (`end.x`).
    pub fn as_str(self) -> &'static str {
        match self {
            SidBehavior::End => "end",
            SidBehavior::EndX => "end.x",
            SidBehavior::EndDt6 => "end.dt6",
            SidBehavior::EndDx6 => "end.dx6",
            SidBehavior::Storage => "storage",
        }
    }

    /// Whether the behavior sends to a configured adjacency (`next_hop` and
    /// `port`): End.X and End.DX6.
    pub fn has_adjacency(self) -> bool {
        matches!(self, SidBehavior::EndX | SidBehavior::EndDx6)
    }

    /// Whether the behavior takes the PSP/USD flavors: End and End.X.
    pub fn takes_flavors(self) -> bool {
        matches!(self, SidBehavior::End | SidBehavior::EndX)
    }
}

impl fmt::Display for SidBehavior {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The flavors of an End or End.X SID (RFC 8986 §4.16). Written as a list,
/// `flavors: [psp, usd]`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize)]
pub struct Flavors {
    /// Penultimate Segment Pop: when Segments Left becomes 0, remove the SRH.
    pub psp: bool,
    /// Ultimate Segment Decapsulation: a packet arriving with Segments Left 0
    /// whose payload is an IPv6 or IPv4 packet is decapsulated and the inner
    /// packet forwarded (End: by the FIB, End.X: to the adjacency).
    pub usd: bool,
}

impl Flavors {
    /// The flavor names, in the order `psp`, `usd`.
    pub fn names(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.psp {
            v.push("psp");
        }
        if self.usd {
            v.push("usd");
        }
        v
    }
}

/// When a storage SID accepts a request (`srv6.local_sids[].policy`). Whatever
/// the policy, the last candidate (Segments Left 0) always accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum StoragePolicy {
    /// `always`: accept at this node.
    #[serde(rename = "always")]
    Always,
    /// `never-but-last`: pass to the next segment; accept only as the last one.
    #[serde(rename = "never-but-last")]
    NeverButLast,
    /// `sr-c`: accept while the local queue depth is below
    /// [`LocalSid::threshold`], otherwise pass on.
    #[serde(rename = "sr-c")]
    SrC,
    /// `holds-object`: accept if the requested object id is one of
    /// [`StorageService::objects`], otherwise pass on.
    #[serde(rename = "holds-object")]
    HoldsObject,
}

impl StoragePolicy {
    /// The name the configuration uses (`never-but-last`).
    pub fn as_str(self) -> &'static str {
        match self {
            StoragePolicy::Always => "always",
            StoragePolicy::NeverButLast => "never-but-last",
            StoragePolicy::SrC => "sr-c",
            StoragePolicy::HoldsObject => "holds-object",
        }
    }
}

impl fmt::Display for StoragePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A steering policy (`srv6.steering[]`): packets to `prefix` are
/// encapsulated in an outer IPv6 header towards `segments`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SteeringPolicy {
    /// Destination prefix (IPv4 or IPv6, host bits zero), unique over the
    /// policies; not a static route's prefix nor a connected subnet.
    pub prefix: IpCidr,
    /// H.Encaps or H.Encaps.Red.
    pub mode: EncapMode,
    /// The segment list in travel order (`segments[0]` is visited first),
    /// 1..=16 unicast, non-link-local IPv6 addresses. The SRH lists them
    /// reversed (RFC 8754).
    pub segments: Vec<Ipv6Addr>,
    /// Outer source address; one of the node's own addresses. `None`:
    /// [`Srv6::encap_source`].
    pub source: Option<Ipv6Addr>,
}

/// How a steering policy encapsulates (RFC 8986 §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EncapMode {
    /// `encaps`: H.Encaps (§5.1): push an outer IPv6 header and an SRH that
    /// holds every segment; the destination is the first segment.
    #[serde(rename = "encaps")]
    Encaps,
    /// `encaps.red`: H.Encaps.Red (§5.2): the same, but the first segment is
    /// left out of the SRH (it is in the destination address), and no SRH is
    /// pushed at all for a single segment.
    #[serde(rename = "encaps.red")]
    EncapsRed,
}

impl EncapMode {
    /// The name the configuration uses (`encaps.red`).
    pub fn as_str(self) -> &'static str {
        match self {
            EncapMode::Encaps => "encaps",
            EncapMode::EncapsRed => "encaps.red",
        }
    }
}

impl fmt::Display for EncapMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The built-in storage responder (`storage_service:`) that storage SIDs
/// deliver accepted requests to, until the object store exists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StorageService {
    /// UDP port of the responder, 1..=65535.
    pub udp_port: u16,
    /// Simulated local queue depth, 0..=1000000: reported in replies and
    /// compared with an `sr-c` SID's threshold.
    pub queue_depth: u32,
    /// Object ids this node holds (for [`StoragePolicy::HoldsObject`]),
    /// 0..=4096, unique, in configuration order.
    pub objects: Vec<u64>,
}

impl Default for StorageService {
    fn default() -> Self {
        StorageService {
            udp_port: defaults::STORAGE_UDP_PORT as u16,
            queue_depth: defaults::STORAGE_QUEUE_DEPTH as u32,
            objects: Vec::new(),
        }
    }
}

impl StorageService {
    /// Whether the node holds object `id`.
    pub fn holds(&self, id: u64) -> bool {
        self.objects.contains(&id)
    }
}

impl Config {
    /// Parses and validates a YAML configuration.
    pub fn from_yaml_str(text: &str) -> Result<Config, ConfigError> {
        let de = serde_yaml_ng::Deserializer::from_str(text);
        let raw: RawConfig =
            serde_path_to_error::deserialize(de).map_err(ConfigError::from_yaml)?;
        validate(raw)
    }

    /// Reads, parses and validates a YAML configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            file: path.to_path_buf(),
            source,
        })?;
        let config = Config::from_yaml_str(&text)?;
        tracing::debug!(file = %path.display(), ports = config.ports.len(), "configuration loaded");
        Ok(config)
    }

    /// The embedded demo configuration ([`EMBEDDED_DEMO`]).
    pub fn demo() -> Config {
        Config::from_yaml_str(EMBEDDED_DEMO).expect("the embedded demo configuration is valid")
    }

    /// The static routes, as the pipeline takes them.
    pub fn route_specs(&self) -> Vec<dataplane::fib::RouteSpec> {
        self.routes
            .iter()
            .map(|r| dataplane::fib::RouteSpec {
                prefix: r.prefix.addr(),
                len: r.prefix.prefix_len(),
                port: r.port as u16,
                via: r.via,
            })
            .collect()
    }

    /// The SRv6 part of the config, as the pipeline takes it.
    pub fn srv6_config(&self) -> dataplane::srv6::Srv6Config {
        use dataplane::srv6 as sr;
        let sids = self
            .srv6
            .local_sids
            .iter()
            .map(|s| sr::SidSpec {
                sid: s.sid,
                behavior: match s.behavior {
                    SidBehavior::End => sr::Behavior::End,
                    SidBehavior::EndX => sr::Behavior::EndX,
                    SidBehavior::EndDt6 => sr::Behavior::EndDt6,
                    SidBehavior::EndDx6 => sr::Behavior::EndDx6,
                    SidBehavior::Storage => sr::Behavior::Storage,
                },
                psp: s.flavors.psp,
                usd: s.flavors.usd,
                adjacency: match (s.port, s.next_hop) {
                    (Some(p), Some(nh)) => Some((p as u16, nh)),
                    _ => None,
                },
                policy: s.policy.map(|p| match p {
                    StoragePolicy::Always => sr::StoragePolicy::Always,
                    StoragePolicy::NeverButLast => sr::StoragePolicy::NeverButLast,
                    StoragePolicy::SrC => sr::StoragePolicy::SrC { threshold: s.threshold.unwrap_or(1) },
                    StoragePolicy::HoldsObject => sr::StoragePolicy::HoldsObject,
                }),
            })
            .collect();
        let policies = self
            .srv6
            .steering
            .iter()
            .map(|p| sr::PolicySpec {
                prefix: p.prefix.addr(),
                len: p.prefix.prefix_len(),
                reduced: p.mode == EncapMode::EncapsRed,
                segments: p.segments.clone(),
                source: p.source,
            })
            .collect();
        sr::Srv6Config {
            sids,
            policies,
            trusted_ports: self.srv6.trusted_ports.as_ref().map(|v| v.iter().map(|p| *p as u16).collect()),
            encap_source: self.srv6.encap_source,
        }
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
    /// neighbors and SRv6 settings naming their port; it parses back to the
    /// same `Config`.
    pub fn to_yaml(&self) -> String {
        let view = View {
            eal: &self.eal,
            lcores: &self.lcores,
            mempool: &self.mempool,
            ports: &self.ports,
            routes: self
                .routes
                .iter()
                .map(|r| RouteView {
                    prefix: r.prefix,
                    via: r.via,
                    port: &self.ports[r.port].name,
                })
                .collect(),
            neighbors: self
                .neighbors
                .iter()
                .map(|n| NeighborView {
                    ip: n.ip,
                    mac: n.mac,
                    port: &self.ports[n.port].name,
                })
                .collect(),
            neighbor: &self.neighbor,
            icmp: &self.icmp,
            pipeline: &self.pipeline,
            metrics: &self.metrics,
            log: &self.log,
            srv6: Srv6View {
                encap_source: self.srv6.encap_source,
                trusted_ports: self
                    .srv6
                    .trusted_ports
                    .as_ref()
                    .map(|ps| ps.iter().map(|&p| self.ports[p].name.as_str()).collect()),
                local_sids: self
                    .srv6
                    .local_sids
                    .iter()
                    .map(|s| LocalSidView {
                        sid: s.sid,
                        behavior: s.behavior,
                        flavors: s.flavors.names(),
                        next_hop: s.next_hop,
                        port: s.port.map(|p| self.ports[p].name.as_str()),
                        policy: s.policy,
                        threshold: s.threshold,
                    })
                    .collect(),
                steering: &self.srv6.steering,
            },
            storage_service: &self.storage_service,
            nat: self.nat.as_ref().map(|n| NatView {
                inside: n.inside.iter().map(|&p| self.ports[p].name.as_str()).collect(),
                outside: n.outside.iter().map(|&p| self.ports[p].name.as_str()).collect(),
                pool: &n.pool_text,
                ports_per_block: n.table.ports_per_block,
                blocks_per_subscriber_max: n.table.blocks_per_subscriber_max,
                subscribers_max: n.table.subscribers_max,
                blocks_max: n.table.blocks_max,
                port_quarantine_max: n.table.port_quarantine_max,
                reuse_delay_ms: n.table.reuse_delay_ms,
                mappings_max: n.table.mappings_max,
                sessions_max: n.table.sessions_max,
                filtering: match n.table.filtering {
                    dataplane::nat::Filtering::EndpointIndependent => "endpoint-independent",
                    dataplane::nat::Filtering::AddressDependent => "address-dependent",
                    dataplane::nat::Filtering::AddressAndPortDependent => "address-and-port-dependent",
                },
                udp_timeout_ms: n.table.udp_timeout_ms,
                tcp_established_timeout_ms: n.table.tcp_established_timeout_ms,
                tcp_transitory_timeout_ms: n.table.tcp_transitory_timeout_ms,
                icmp_timeout_ms: n.table.icmp_timeout_ms,
                worker_cache_entries: n.worker_cache_entries,
                ring_size: n.ring_size,
                random_seed: n.seeded.then_some(n.table.random_seed),
                mapper_idle_backoff: n.mapper_idle_backoff,
            }),
            storage: self.storage.as_ref(),
        };
        serde_yaml_ng::to_string(&view).expect("the effective configuration serializes")
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

#[derive(Serialize)]
struct View<'a> {
    eal: &'a Eal,
    lcores: &'a Lcores,
    mempool: &'a Mempool,
    ports: &'a [Port],
    routes: Vec<RouteView<'a>>,
    neighbors: Vec<NeighborView<'a>>,
    neighbor: &'a NeighborCfg,
    icmp: &'a Icmp,
    pipeline: &'a Pipeline,
    metrics: &'a Metrics,
    log: &'a Log,
    srv6: Srv6View<'a>,
    storage_service: &'a StorageService,
    #[serde(skip_serializing_if = "Option::is_none")]
    nat: Option<NatView<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    storage: Option<&'a Storage>,
}

#[derive(Serialize)]
struct NatView<'a> {
    inside: Vec<&'a str>,
    outside: Vec<&'a str>,
    pool: &'a [String],
    ports_per_block: u16,
    blocks_per_subscriber_max: u16,
    subscribers_max: u32,
    blocks_max: u32,
    port_quarantine_max: u32,
    reuse_delay_ms: u64,
    mappings_max: u32,
    sessions_max: u32,
    filtering: &'static str,
    udp_timeout_ms: u64,
    tcp_established_timeout_ms: u64,
    tcp_transitory_timeout_ms: u64,
    icmp_timeout_ms: u64,
    worker_cache_entries: u32,
    ring_size: u32,
    random_seed: Option<u64>,
    mapper_idle_backoff: bool,
}

#[derive(Serialize)]
struct Srv6View<'a> {
    encap_source: Option<Ipv6Addr>,
    trusted_ports: Option<Vec<&'a str>>,
    local_sids: Vec<LocalSidView<'a>>,
    steering: &'a [SteeringPolicy],
}

#[derive(Serialize)]
struct LocalSidView<'a> {
    sid: Ipv6Addr,
    behavior: SidBehavior,
    flavors: Vec<&'static str>,
    next_hop: Option<Ipv6Addr>,
    port: Option<&'a str>,
    policy: Option<StoragePolicy>,
    threshold: Option<u32>,
}

#[derive(Serialize)]
struct RouteView<'a> {
    prefix: IpCidr,
    via: Option<IpAddr>,
    port: &'a str,
}

#[derive(Serialize)]
struct NeighborView<'a> {
    ip: IpAddr,
    #[serde(serialize_with = "ser_mac")]
    mac: [u8; 6],
    port: &'a str,
}

// ---------------------------------------------------------------------------
// Raw (as written) configuration
// ---------------------------------------------------------------------------

/// Defaults, one place for the raw structs and the docs.
mod defaults {
    pub const FILE_PREFIX: &str = "appliance";
    pub const MEMORY_MB: i64 = 256;
    pub const MBUFS: i64 = 8191;
    pub const CACHE_SIZE: i64 = 256;
    pub const DATA_ROOM_BYTES: i64 = 2176;
    pub const QUEUES: i64 = 1;
    pub const DESCRIPTORS: i64 = 1024;
    pub const MTU: i64 = 1500;
    pub const ENTRIES_MAX: i64 = 4096;
    pub const PENDING_PACKETS_MAX: i64 = 256;
    pub const PENDING_PER_NEIGHBOR_MAX: i64 = 4;
    pub const RESOLVE_RETRIES: i64 = 3;
    pub const RESOLVE_INTERVAL_MS: i64 = 1000;
    pub const REACHABLE_MS: i64 = 30000;
    pub const ERRORS_PER_S: i64 = 100;
    pub const ERRORS_BURST: i64 = 50;
    pub const BURST_SIZE: i64 = 32;
    pub const EMPTY_POLLS: i64 = 256;
    pub const SLEEP_US: i64 = 50;
    pub const RING_SIZE: i64 = 1024;
    pub const METRICS_LISTEN: &str = "127.0.0.1:9100";
    pub const LOG_LEVEL: &str = "info";
    pub const STORAGE_UDP_PORT: i64 = 7878;
    pub const STORAGE_QUEUE_DEPTH: i64 = 0;
    pub const NAT_CACHE_ENTRIES: i64 = 65536;

    pub fn queues() -> i64 {
        QUEUES
    }
    pub fn descriptors() -> i64 {
        DESCRIPTORS
    }
    pub fn mtu() -> i64 {
        MTU
    }
    pub fn storage_size_mb() -> i64 {
        256
    }
    pub fn storage_objects_max() -> i64 {
        65536
    }
    pub fn storage_requests_max() -> i64 {
        256
    }
    pub fn storage_assemblies_max() -> i64 {
        64
    }
    pub fn encap_mode() -> super::EncapMode {
        super::EncapMode::Encaps
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawConfig {
    eal: RawEal,
    lcores: RawLcores,
    mempool: RawMempool,
    ports: Vec<RawPort>,
    routes: Vec<RawRoute>,
    neighbors: Vec<RawNeighbor>,
    neighbor: RawNeighborCfg,
    icmp: RawIcmp,
    pipeline: RawPipeline,
    metrics: RawMetrics,
    log: RawLog,
    srv6: RawSrv6,
    storage_service: RawStorageService,
    nat: Option<RawNat>,
    storage: Option<RawStorage>,
}

/// `storage.device`: one path, or one per worker.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawDevices {
    One(String),
    PerWorker(Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStorage {
    object_prefix: String,
    device: RawDevices,
    #[serde(default = "defaults::storage_size_mb")]
    size_mb: i64,
    #[serde(default = "defaults::storage_objects_max")]
    objects_max: i64,
    #[serde(default = "defaults::storage_requests_max")]
    requests_max: i64,
    #[serde(default = "defaults::storage_assemblies_max")]
    assemblies_max: i64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawNat {
    inside: Vec<String>,
    outside: Vec<String>,
    pool: Vec<String>,
    ports_per_block: i64,
    blocks_per_subscriber_max: i64,
    subscribers_max: i64,
    blocks_max: i64,
    port_quarantine_max: i64,
    reuse_delay_ms: i64,
    mappings_max: i64,
    sessions_max: i64,
    filtering: RawFiltering,
    udp_timeout_ms: i64,
    tcp_established_timeout_ms: i64,
    tcp_transitory_timeout_ms: i64,
    icmp_timeout_ms: i64,
    worker_cache_entries: i64,
    ring_size: i64,
    random_seed: Option<u64>,
    mapper_idle_backoff: Option<bool>,
}

impl Default for RawNat {
    fn default() -> Self {
        let d = dataplane::nat::NatConfig::default();
        RawNat {
            inside: Vec::new(),
            outside: Vec::new(),
            pool: Vec::new(),
            ports_per_block: i64::from(d.ports_per_block),
            blocks_per_subscriber_max: i64::from(d.blocks_per_subscriber_max),
            subscribers_max: i64::from(d.subscribers_max),
            blocks_max: i64::from(d.blocks_max),
            port_quarantine_max: i64::from(d.port_quarantine_max),
            reuse_delay_ms: d.reuse_delay_ms as i64,
            mappings_max: i64::from(d.mappings_max),
            sessions_max: i64::from(d.sessions_max),
            filtering: RawFiltering::EndpointIndependent,
            udp_timeout_ms: d.udp_timeout_ms as i64,
            tcp_established_timeout_ms: d.tcp_established_timeout_ms as i64,
            tcp_transitory_timeout_ms: d.tcp_transitory_timeout_ms as i64,
            icmp_timeout_ms: d.icmp_timeout_ms as i64,
            worker_cache_entries: defaults::NAT_CACHE_ENTRIES,
            ring_size: defaults::RING_SIZE,
            random_seed: None,
            mapper_idle_backoff: None,
        }
    }
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "kebab-case")]
enum RawFiltering {
    EndpointIndependent,
    AddressDependent,
    AddressAndPortDependent,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawEal {
    file_prefix: String,
    memory_mb: i64,
    huge_unlink: bool,
    pci: bool,
    log_level: EalLogLevel,
    extra_args: Vec<String>,
}

impl Default for RawEal {
    fn default() -> Self {
        RawEal {
            file_prefix: defaults::FILE_PREFIX.to_string(),
            memory_mb: defaults::MEMORY_MB,
            huge_unlink: true,
            pci: false,
            log_level: EalLogLevel::Notice,
            extra_args: Vec::new(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawLcores {
    main: RawLcore,
    workers: Vec<RawLcore>,
    mapper: Option<RawLcore>,
}

impl Default for RawLcores {
    fn default() -> Self {
        RawLcores {
            main: RawLcore {
                lcore: 0,
                cpu: Some(0),
            },
            workers: vec![RawLcore {
                lcore: 1,
                cpu: Some(1),
            }],
            mapper: None,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLcore {
    lcore: i64,
    #[serde(default)]
    cpu: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawMempool {
    mbufs: i64,
    cache_size: i64,
    data_room_bytes: i64,
}

impl Default for RawMempool {
    fn default() -> Self {
        RawMempool {
            mbufs: defaults::MBUFS,
            cache_size: defaults::CACHE_SIZE,
            data_room_bytes: defaults::DATA_ROOM_BYTES,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPort {
    name: String,
    device: String,
    #[serde(default)]
    args: Option<String>,
    #[serde(default = "defaults::queues")]
    queues: i64,
    #[serde(default = "defaults::descriptors")]
    rx_descriptors: i64,
    #[serde(default = "defaults::descriptors")]
    tx_descriptors: i64,
    #[serde(default = "defaults::mtu")]
    mtu: i64,
    #[serde(default)]
    mac: Option<String>,
    #[serde(default)]
    promiscuous: bool,
    #[serde(default)]
    ipv4: Vec<String>,
    #[serde(default)]
    ipv6: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    prefix: String,
    #[serde(default)]
    via: Option<String>,
    port: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNeighbor {
    ip: String,
    mac: String,
    port: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawNeighborCfg {
    entries_max: i64,
    pending_packets_max: i64,
    pending_per_neighbor_max: i64,
    resolve_retries: i64,
    resolve_interval_ms: i64,
    reachable_ms: i64,
}

impl Default for RawNeighborCfg {
    fn default() -> Self {
        RawNeighborCfg {
            entries_max: defaults::ENTRIES_MAX,
            pending_packets_max: defaults::PENDING_PACKETS_MAX,
            pending_per_neighbor_max: defaults::PENDING_PER_NEIGHBOR_MAX,
            resolve_retries: defaults::RESOLVE_RETRIES,
            resolve_interval_ms: defaults::RESOLVE_INTERVAL_MS,
            reachable_ms: defaults::REACHABLE_MS,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawIcmp {
    errors_per_s: i64,
    errors_burst: i64,
}

impl Default for RawIcmp {
    fn default() -> Self {
        RawIcmp {
            errors_per_s: defaults::ERRORS_PER_S,
            errors_burst: defaults::ERRORS_BURST,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawPipeline {
    burst_size: i64,
    idle_backoff: RawIdleBackoff,
    punt_ring_size: i64,
    inject_ring_size: i64,
}

impl Default for RawPipeline {
    fn default() -> Self {
        RawPipeline {
            burst_size: defaults::BURST_SIZE,
            idle_backoff: RawIdleBackoff::default(),
            punt_ring_size: defaults::RING_SIZE,
            inject_ring_size: defaults::RING_SIZE,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawIdleBackoff {
    enabled: bool,
    empty_polls: i64,
    sleep_us: i64,
}

impl Default for RawIdleBackoff {
    fn default() -> Self {
        RawIdleBackoff {
            enabled: true,
            empty_polls: defaults::EMPTY_POLLS,
            sleep_us: defaults::SLEEP_US,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawMetrics {
    listen: Option<String>,
}

impl Default for RawMetrics {
    fn default() -> Self {
        RawMetrics {
            listen: Some(defaults::METRICS_LISTEN.to_string()),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawLog {
    level: String,
    format: LogFormat,
}

impl Default for RawLog {
    fn default() -> Self {
        RawLog {
            level: defaults::LOG_LEVEL.to_string(),
            format: LogFormat::Text,
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawSrv6 {
    encap_source: Option<String>,
    trusted_ports: Option<Vec<String>>,
    local_sids: Vec<RawLocalSid>,
    steering: Vec<RawSteering>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLocalSid {
    sid: String,
    behavior: SidBehavior,
    #[serde(default)]
    flavors: Vec<RawFlavor>,
    #[serde(default)]
    next_hop: Option<String>,
    #[serde(default)]
    port: Option<String>,
    #[serde(default)]
    policy: Option<StoragePolicy>,
    #[serde(default)]
    threshold: Option<i64>,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum RawFlavor {
    Psp,
    Usd,
}

impl RawFlavor {
    fn as_str(self) -> &'static str {
        match self {
            RawFlavor::Psp => "psp",
            RawFlavor::Usd => "usd",
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSteering {
    prefix: String,
    #[serde(default = "defaults::encap_mode")]
    mode: EncapMode,
    segments: Vec<String>,
    #[serde(default)]
    source: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawStorageService {
    udp_port: i64,
    queue_depth: i64,
    objects: Vec<RawObjectId>,
}

impl Default for RawStorageService {
    fn default() -> Self {
        RawStorageService {
            udp_port: defaults::STORAGE_UDP_PORT,
            queue_depth: defaults::STORAGE_QUEUE_DEPTH,
            objects: Vec::new(),
        }
    }
}

/// An object id as written: a YAML integer, or a string holding a decimal or
/// `0x`-hex number. Checked in validation.
enum RawObjectId {
    Int(i128),
    Text(String),
}

impl<'de> Deserialize<'de> for RawObjectId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = RawObjectId;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object id (an integer, or a decimal or 0x-hex string)")
            }
            fn visit_i64<E>(self, v: i64) -> Result<RawObjectId, E> {
                Ok(RawObjectId::Int(v.into()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<RawObjectId, E> {
                Ok(RawObjectId::Int(v.into()))
            }
            fn visit_i128<E>(self, v: i128) -> Result<RawObjectId, E> {
                Ok(RawObjectId::Int(v))
            }
            fn visit_u128<E>(self, v: u128) -> Result<RawObjectId, E> {
                // anything above i128::MAX is out of range anyway
                Ok(RawObjectId::Int(i128::try_from(v).unwrap_or(i128::MAX)))
            }
            fn visit_str<E>(self, v: &str) -> Result<RawObjectId, E> {
                Ok(RawObjectId::Text(v.to_string()))
            }
        }
        d.deserialize_any(Visitor)
    }
}

// ---------------------------------------------------------------------------
// Validation: raw -> effective, first error wins
// ---------------------------------------------------------------------------

fn range<T: TryFrom<i64>>(path: &str, v: i64, lo: i64, hi: i64) -> Res<T> {
    let err = || ConfigError::invalid(path, format!("must be {lo}..={hi}"));
    if v < lo || v > hi {
        return Err(err());
    }
    T::try_from(v).map_err(|_| err())
}

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

fn count(path: &str, n: usize, lo: usize, hi: usize) -> Res<()> {
    if n < lo || n > hi {
        return Err(ConfigError::invalid(
            path,
            format!("must have {lo}..={hi} entries, has {n}"),
        ));
    }
    Ok(())
}

fn validate(raw: RawConfig) -> Res<Config> {
    let eal = validate_eal(raw.eal)?;
    let lcores = validate_lcores(raw.lcores)?;
    let mempool = validate_mempool(raw.mempool)?;
    let ports = validate_ports(raw.ports, &eal, &mempool, lcores.workers.len())?;
    let routes = validate_routes(raw.routes, &ports)?;
    let neighbors = validate_neighbors(raw.neighbors, &ports)?;
    let neighbor = validate_neighbor_cfg(raw.neighbor, neighbors.len())?;
    let icmp = Icmp {
        errors_per_s: range("icmp.errors_per_s", raw.icmp.errors_per_s, 0, 1_000_000)?,
        errors_burst: range("icmp.errors_burst", raw.icmp.errors_burst, 1, 100_000)?,
    };
    let pipeline = validate_pipeline(raw.pipeline)?;
    let metrics = validate_metrics(raw.metrics)?;
    let log = validate_log(raw.log)?;
    let srv6 = validate_srv6(raw.srv6, &ports, &routes)?;
    let storage_service = validate_storage_service(raw.storage_service)?;
    let nat = match raw.nat {
        None => None,
        Some(n) => Some(validate_nat(n, &ports, pipeline.idle_backoff.enabled)?),
    };
    match (&nat, &lcores.mapper) {
        (Some(_), None) => {
            return Err(ConfigError::invalid(
                "lcores.mapper",
                "required with nat: the mapping server's lcore, e.g. { lcore: 2, cpu: 0 }",
            ))
        }
        (None, Some(_)) => {
            return Err(ConfigError::invalid("lcores.mapper", "only used with nat:, which is not configured"))
        }
        _ => {}
    }
    let storage = match raw.storage {
        None => None,
        Some(r) => Some(validate_storage(r, &ports, lcores.workers.len())?),
    };
    check_mbufs(&mempool, &ports, &lcores)?;
    if let Some(n) = &nat {
        check_nat_mbufs(&mempool, n, lcores.workers.len())?;
    }
    Ok(Config {
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
        log,
        srv6,
        storage_service,
        nat,
        storage,
    })
}

fn validate_storage(r: RawStorage, ports: &[Port], workers: usize) -> Res<Storage> {
    let object_prefix: Ipv6Cidr = r
        .object_prefix
        .parse()
        .map_err(|e: String| ConfigError::invalid("storage.object_prefix", e))?;
    if object_prefix.len != 64 {
        return Err(ConfigError::invalid(
            "storage.object_prefix",
            format!("{} must be a /64 (the object id is the interface identifier)", r.object_prefix),
        ));
    }
    if object_prefix.addr != object_prefix.network() {
        return Err(ConfigError::invalid(
            "storage.object_prefix",
            format!("{} has host bits set (the network is {}/64)", r.object_prefix, object_prefix.network()),
        ));
    }
    if object_prefix.addr.is_multicast() || (object_prefix.addr.segments()[0] & 0xffc0) == 0xfe80 {
        return Err(ConfigError::invalid("storage.object_prefix", "must be a global unicast prefix"));
    }
    for (i, p) in ports.iter().enumerate() {
        for (k, c) in p.ipv6.iter().enumerate() {
            if c.overlaps(&object_prefix) {
                return Err(ConfigError::invalid(
                    "storage.object_prefix",
                    format!("overlaps ports[{i}].ipv6[{k}] ({}/{})", c.addr, c.len),
                ));
            }
        }
    }
    let (devices, listed) = match r.device {
        RawDevices::One(d) => (vec![d], false),
        RawDevices::PerWorker(v) => (v, true),
    };
    if devices.len() != workers {
        return Err(ConfigError::invalid(
            "storage.device",
            format!(
                "{} device(s) for {workers} workers: each worker serves its share of the objects from its own device (give a list of {workers})",
                devices.len()
            ),
        ));
    }
    for (i, d) in devices.iter().enumerate() {
        let path = if listed { format!("storage.device[{i}]") } else { "storage.device".to_string() };
        if d.is_empty() || (d != "ram" && !d.starts_with('/')) {
            return Err(ConfigError::invalid(path, format!("{d:?}: an absolute path of a block device or file, or \"ram\"")));
        }
        if d != "ram" {
            if let Some(j) = devices[..i].iter().position(|e| e == d) {
                return Err(ConfigError::invalid(path, format!("{d} is also storage.device[{j}]")));
            }
        }
    }
    Ok(Storage {
        object_prefix,
        devices,
        size_mb: range("storage.size_mb", r.size_mb, 16, 1 << 20)?,
        objects_max: range("storage.objects_max", r.objects_max, 1, 1 << 24)?,
        requests_max: range("storage.requests_max", r.requests_max, 1, 65536)?,
        assemblies_max: range("storage.assemblies_max", r.assemblies_max, 1, 4096)?,
    })
}

fn validate_port_list(path: &str, names: &[String], ports: &[Port]) -> Res<Vec<usize>> {
    if names.is_empty() {
        return Err(ConfigError::invalid(path, "must name at least one port"));
    }
    count(path, names.len(), 1, MAX_PORTS)?;
    let mut out: Vec<usize> = Vec::with_capacity(names.len());
    for (i, name) in names.iter().enumerate() {
        let p = resolve_port(format!("{path}[{i}]"), name, ports)?;
        if let Some(j) = out.iter().position(|&q| q == p) {
            return Err(ConfigError::invalid(
                format!("{path}[{i}]"),
                format!("duplicate port {name} (also {path}[{j}])"),
            ));
        }
        if ports[p].ipv4.is_empty() {
            return Err(ConfigError::invalid(
                format!("{path}[{i}]"),
                format!("port {name} has no IPv4 address (NAT44 routes IPv4 through it)"),
            ));
        }
        out.push(p);
    }
    Ok(out)
}

/// Most public addresses in `nat.pool` (after expanding prefixes).
const MAX_NAT_POOL: usize = 65_536;

fn validate_nat(r: RawNat, ports: &[Port], pipeline_backoff: bool) -> Res<Nat> {
    let inside = validate_port_list("nat.inside", &r.inside, ports)?;
    let outside = validate_port_list("nat.outside", &r.outside, ports)?;
    if let Some((i, p)) = outside.iter().enumerate().find(|(_, p)| inside.contains(p)) {
        return Err(ConfigError::invalid(
            format!("nat.outside[{i}]"),
            format!("port {} is also in nat.inside", ports[*p].name),
        ));
    }
    if r.pool.is_empty() {
        return Err(ConfigError::invalid("nat.pool", "at least one public IPv4 address or prefix is required"));
    }
    let mut pool: Vec<Ipv4Addr> = Vec::new();
    let mut seen: HashMap<Ipv4Addr, usize> = HashMap::new();
    for (i, text) in r.pool.iter().enumerate() {
        let path = format!("nat.pool[{i}]");
        let (base, len) = if text.contains('/') {
            let c: Ipv4Cidr = text.parse().map_err(|e: String| ConfigError::invalid(&path, e))?;
            if c.len < 16 {
                return Err(ConfigError::invalid(&path, format!("/{} is too large: at most a /16 per entry", c.len)));
            }
            let mask = if c.len == 0 { 0 } else { u32::MAX << (32 - u32::from(c.len)) };
            if u32::from(c.addr) & !mask != 0 {
                return Err(ConfigError::invalid(&path, format!("{text} has host bits set (write the network)")));
            }
            (u32::from(c.addr), c.len)
        } else {
            let a: Ipv4Addr = text
                .parse()
                .map_err(|_| ConfigError::invalid(&path, format!("{text:?} is not an IPv4 address or prefix")))?;
            (u32::from(a), 32)
        };
        let n = 1u64 << (32 - u32::from(len));
        if pool.len() as u64 + n > MAX_NAT_POOL as u64 {
            return Err(ConfigError::invalid(&path, format!("the pool would exceed {MAX_NAT_POOL} addresses")));
        }
        for k in 0..n as u32 {
            let a = Ipv4Addr::from(base + k);
            if a.is_multicast() || a.is_broadcast() || a.is_loopback() || a.is_unspecified() {
                return Err(ConfigError::invalid(&path, format!("{a} cannot be a public address")));
            }
            if let Some(j) = seen.get(&a) {
                return Err(ConfigError::invalid(&path, format!("{a} is already in nat.pool[{j}]")));
            }
            if let Some(owner) = own_address(IpAddr::V4(a), ports) {
                return Err(ConfigError::invalid(&path, format!("{a} is a port address ({owner})")));
            }
            seen.insert(a, i);
            pool.push(a);
        }
    }
    let defaults = dataplane::nat::NatConfig::default();
    let table = dataplane::nat::NatConfig {
        pool,
        ports_per_block: range("nat.ports_per_block", r.ports_per_block, 1, 65535)?,
        blocks_per_subscriber_max: range("nat.blocks_per_subscriber_max", r.blocks_per_subscriber_max, 0, 65535)?,
        subscribers_max: range("nat.subscribers_max", r.subscribers_max, 0, i64::from(u32::MAX))?,
        blocks_max: range("nat.blocks_max", r.blocks_max, 0, i64::from(u32::MAX))?,
        port_quarantine_max: range("nat.port_quarantine_max", r.port_quarantine_max, 0, i64::from(u32::MAX))?,
        reuse_delay_ms: range("nat.reuse_delay_ms", r.reuse_delay_ms, 0, i64::MAX)?,
        mappings_max: range("nat.mappings_max", r.mappings_max, 0, i64::from(u32::MAX))?,
        sessions_max: range("nat.sessions_max", r.sessions_max, 0, i64::from(u32::MAX))?,
        filtering: match r.filtering {
            RawFiltering::EndpointIndependent => dataplane::nat::Filtering::EndpointIndependent,
            RawFiltering::AddressDependent => dataplane::nat::Filtering::AddressDependent,
            RawFiltering::AddressAndPortDependent => dataplane::nat::Filtering::AddressAndPortDependent,
        },
        udp_timeout_ms: range("nat.udp_timeout_ms", r.udp_timeout_ms, 0, i64::MAX)?,
        tcp_established_timeout_ms: range("nat.tcp_established_timeout_ms", r.tcp_established_timeout_ms, 0, i64::MAX)?,
        tcp_transitory_timeout_ms: range("nat.tcp_transitory_timeout_ms", r.tcp_transitory_timeout_ms, 0, i64::MAX)?,
        icmp_timeout_ms: range("nat.icmp_timeout_ms", r.icmp_timeout_ms, 0, i64::MAX)?,
        random_seed: r.random_seed.unwrap_or(defaults.random_seed),
        hash_seed: r.random_seed.map_or(defaults.hash_seed, |s| dataplane::nat::mix64(s ^ defaults.hash_seed)),
    };
    table.validate().map_err(|e| ConfigError::invalid(format!("nat.{}", e.field), e.reason))?;
    Ok(Nat {
        inside,
        outside,
        table,
        pool_text: r.pool,
        worker_cache_entries: pow2_range("nat.worker_cache_entries", r.worker_cache_entries, 1024, 1 << 24)?,
        ring_size: pow2_range("nat.ring_size", r.ring_size, 64, 65536)?,
        seeded: r.random_seed.is_some(),
        mapper_idle_backoff: r.mapper_idle_backoff.unwrap_or(pipeline_backoff),
    })
}

fn validate_eal(r: RawEal) -> Res<Eal> {
    let ok = (1..=32).contains(&r.file_prefix.len())
        && r.file_prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !ok {
        return Err(ConfigError::invalid(
            "eal.file_prefix",
            format!("{:?} must match [A-Za-z0-9_-]{{1,32}}", r.file_prefix),
        ));
    }
    let memory_mb = range("eal.memory_mb", r.memory_mb, 64, 65536)?;
    for (i, a) in r.extra_args.iter().enumerate() {
        if a.is_empty() || a.contains('\0') {
            return Err(ConfigError::invalid(
                format!("eal.extra_args[{i}]"),
                "must be a non-empty argument without NUL bytes",
            ));
        }
    }
    Ok(Eal {
        file_prefix: r.file_prefix,
        memory_mb,
        huge_unlink: r.huge_unlink,
        pci: r.pci,
        log_level: r.log_level,
        extra_args: r.extra_args,
    })
}

fn validate_lcores(r: RawLcores) -> Res<Lcores> {
    fn one(path: &str, l: &RawLcore) -> Res<Lcore> {
        let lcore = range(
            &format!("{path}.lcore"),
            l.lcore,
            0,
            i64::from(MAX_LCORE) - 1,
        )?;
        let cpu = range(
            &format!("{path}.cpu"),
            l.cpu.unwrap_or(l.lcore),
            0,
            i64::from(MAX_CPU) - 1,
        )?;
        Ok(Lcore { lcore, cpu })
    }
    let main = one("lcores.main", &r.main)?;
    count("lcores.workers", r.workers.len(), 1, MAX_WORKERS)?;
    let mut seen: HashMap<u32, String> = HashMap::new();
    seen.insert(main.lcore, "lcores.main".to_string());
    let mut workers = Vec::with_capacity(r.workers.len());
    for (i, w) in r.workers.iter().enumerate() {
        let path = format!("lcores.workers[{i}]");
        let l = one(&path, w)?;
        if let Some(other) = seen.get(&l.lcore) {
            return Err(ConfigError::invalid(
                format!("{path}.lcore"),
                format!("lcore {} is already used by {other}", l.lcore),
            ));
        }
        seen.insert(l.lcore, path);
        workers.push(l);
    }
    let mapper = match &r.mapper {
        None => None,
        Some(m) => {
            let l = one("lcores.mapper", m)?;
            if let Some(other) = seen.get(&l.lcore) {
                return Err(ConfigError::invalid(
                    "lcores.mapper.lcore",
                    format!("lcore {} is already used by {other}", l.lcore),
                ));
            }
            Some(l)
        }
    };
    Ok(Lcores { main, workers, mapper })
}

/// DPDK's `rte_mempool_create` refuses `cache_size * 3 / 2 > n`.
fn max_cache_size(mbufs: u32) -> u32 {
    (2 * mbufs + 1) / 3
}

fn validate_mempool(r: RawMempool) -> Res<Mempool> {
    let mbufs: u32 = range("mempool.mbufs", r.mbufs, 1023, 1_048_575)?;
    let cache_size: u32 = range("mempool.cache_size", r.cache_size, 0, 512)?;
    if cache_size > max_cache_size(mbufs) {
        return Err(ConfigError::invalid(
            "mempool.cache_size",
            format!(
                "must be <= mbufs / 1.5 ({} for {mbufs} mbufs)",
                max_cache_size(mbufs)
            ),
        ));
    }
    let data_room_bytes = range("mempool.data_room_bytes", r.data_room_bytes, 1152, 65535)?;
    Ok(Mempool {
        mbufs,
        cache_size,
        data_room_bytes,
    })
}

fn valid_port_name(s: &str) -> bool {
    (1..=15).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

fn valid_vdev_name(s: &str) -> bool {
    s.len() <= 63
        && s.strip_prefix("net_").is_some_and(|rest| {
            !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        })
}

/// `DDDD:BB:DD.F` with hex digits (DPDK's full PCI address form).
fn is_pci_address(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 12
        && b[4] == b':'
        && b[7] == b':'
        && b[10] == b'.'
        && b.iter()
            .enumerate()
            .all(|(i, c)| matches!(i, 4 | 7 | 10) || c.is_ascii_hexdigit())
        && (b'0'..=b'7').contains(&b[11])
}

/// The value of `key=value` in a devargs string.
fn devarg<'a>(args: &'a str, key: &str) -> Option<&'a str> {
    args.split(',')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

fn validate_ports(
    raw: Vec<RawPort>,
    eal: &Eal,
    mempool: &Mempool,
    workers: usize,
) -> Res<Vec<Port>> {
    count("ports", raw.len(), 1, MAX_PORTS)?;
    let mut ports: Vec<Port> = Vec::with_capacity(raw.len());
    for (i, r) in raw.into_iter().enumerate() {
        let p = |field: &str| format!("ports[{i}].{field}");

        // name
        if !valid_port_name(&r.name) {
            return Err(ConfigError::invalid(
                p("name"),
                format!("{:?} must match [a-z0-9_-]{{1,15}}", r.name),
            ));
        }
        if let Some(j) = ports.iter().position(|q| q.name == r.name) {
            return Err(ConfigError::invalid(
                p("name"),
                format!("duplicate port name {} (also ports[{j}])", r.name),
            ));
        }

        // device
        let is_pci = is_pci_address(&r.device);
        let device = if is_pci {
            r.device.to_ascii_lowercase()
        } else {
            r.device.clone()
        };
        if is_pci && !eal.pci {
            return Err(ConfigError::invalid(
                p("device"),
                format!(
                    "{} is a PCI address; PCI devices need eal.pci: true",
                    r.device
                ),
            ));
        }
        if !is_pci && !valid_vdev_name(&r.device) {
            return Err(ConfigError::invalid(
                p("device"),
                format!(
                    "{:?} is neither a vdev name (net_ followed by [A-Za-z0-9_], e.g. net_af_packet0) \
                     nor a PCI address with its domain (e.g. 0000:03:00.0)",
                    r.device
                ),
            ));
        }
        if let Some(j) = ports.iter().position(|q| q.device == device) {
            return Err(ConfigError::invalid(
                p("device"),
                format!("device {device} is already used by ports[{j}]"),
            ));
        }

        // args
        let args = r.args.unwrap_or_default();
        if is_pci && !args.is_empty() {
            return Err(ConfigError::invalid(
                p("args"),
                "must be empty for a PCI device",
            ));
        }
        if args.chars().any(|c| c.is_whitespace() || c.is_control()) || args.starts_with(',') {
            return Err(ConfigError::invalid(
                p("args"),
                format!("{args:?} must be key=value pairs separated by commas, without spaces"),
            ));
        }

        // queues, descriptors
        let queues: u16 = range(&p("queues"), r.queues, 1, i64::from(MAX_QUEUES))?;
        let rx_descriptors: u16 = pow2_range(&p("rx_descriptors"), r.rx_descriptors, 64, 16384)?;
        let tx_descriptors: u16 = pow2_range(&p("tx_descriptors"), r.tx_descriptors, 64, 16384)?;
        for (prefix, key) in [("net_af_packet", "qpairs"), ("net_af_xdp", "queue_count")] {
            if !device.starts_with(prefix) {
                continue;
            }
            let n: usize = match devarg(&args, key) {
                None => 1,
                Some(v) => v.parse().map_err(|_| {
                    ConfigError::invalid(p("args"), format!("{key}={v} is not a number"))
                })?,
            };
            if usize::from(queues) > n {
                return Err(ConfigError::invalid(
                    p("queues"),
                    format!("{queues} rx queues, but the device has {key}={n} (add {key}={queues} to args)"),
                ));
            }
            if workers > n {
                return Err(ConfigError::invalid(
                    p("args"),
                    format!(
                        "{key}={n}, but each of the {workers} workers needs its own tx queue (set {key}={workers})"
                    ),
                ));
            }
        }

        // mtu
        let mtu: u16 = range(&p("mtu"), r.mtu, 68, 9000)?;
        let need = u32::from(mtu) + FRAME_OVERHEAD + MBUF_HEADROOM;
        if need > u32::from(mempool.data_room_bytes) {
            return Err(ConfigError::invalid(
                p("mtu"),
                format!(
                    "a frame of mtu {mtu} does not fit in one mbuf: mempool.data_room_bytes must be >= {need} \
                     ({MBUF_HEADROOM} headroom + {FRAME_OVERHEAD} Ethernet header and CRC + mtu)"
                ),
            ));
        }

        // mac
        let mac = match &r.mac {
            None => None,
            Some(s) => {
                let m = parse_mac(s).ok_or_else(|| {
                    ConfigError::invalid(
                        p("mac"),
                        format!("{s:?} is not a MAC address (expected e.g. \"02:00:00:00:00:01\")"),
                    )
                })?;
                if m[0] & 1 != 0 || m == [0; 6] {
                    return Err(ConfigError::invalid(
                        p("mac"),
                        format!("{s} is not a unicast MAC address"),
                    ));
                }
                Some(m)
            }
        };

        // addresses
        count(&p("ipv4"), r.ipv4.len(), 0, MAX_ADDRESSES_PER_FAMILY)?;
        let mut ipv4: Vec<Ipv4Cidr> = Vec::with_capacity(r.ipv4.len());
        for (k, s) in r.ipv4.iter().enumerate() {
            let path = format!("ports[{i}].ipv4[{k}]");
            let c: Ipv4Cidr = s.parse().map_err(|m| ConfigError::invalid(&path, m))?;
            check_interface_v4(&c).map_err(|m| ConfigError::invalid(&path, m))?;
            if let Some(j) = ipv4.iter().position(|o| o.addr == c.addr) {
                return Err(ConfigError::invalid(
                    path,
                    format!("{} is already ports[{i}].ipv4[{j}]", c.addr),
                ));
            }
            for (pj, q) in ports.iter().enumerate() {
                if let Some((kj, o)) = q.ipv4.iter().enumerate().find(|(_, o)| o.overlaps(&c)) {
                    return Err(ConfigError::invalid(
                        path,
                        format!(
                            "{c} overlaps {o} of port {} (ports[{pj}].ipv4[{kj}])",
                            q.name
                        ),
                    ));
                }
            }
            ipv4.push(c);
        }
        count(&p("ipv6"), r.ipv6.len(), 0, MAX_ADDRESSES_PER_FAMILY)?;
        if !r.ipv6.is_empty() && mtu < IPV6_MIN_MTU {
            return Err(ConfigError::invalid(
                p("ipv6"),
                format!(
                    "IPv6 needs an mtu of at least {IPV6_MIN_MTU}, but ports[{i}].mtu is {mtu}"
                ),
            ));
        }
        let mut ipv6: Vec<Ipv6Cidr> = Vec::with_capacity(r.ipv6.len());
        for (k, s) in r.ipv6.iter().enumerate() {
            let path = format!("ports[{i}].ipv6[{k}]");
            let c: Ipv6Cidr = s.parse().map_err(|m| ConfigError::invalid(&path, m))?;
            check_interface_v6(&c).map_err(|m| ConfigError::invalid(&path, m))?;
            if let Some(j) = ipv6.iter().position(|o| o.addr == c.addr) {
                return Err(ConfigError::invalid(
                    path,
                    format!("{} is already ports[{i}].ipv6[{j}]", c.addr),
                ));
            }
            for (pj, q) in ports.iter().enumerate() {
                if let Some((kj, o)) = q.ipv6.iter().enumerate().find(|(_, o)| o.overlaps(&c)) {
                    return Err(ConfigError::invalid(
                        path,
                        format!(
                            "{c} overlaps {o} of port {} (ports[{pj}].ipv6[{kj}])",
                            q.name
                        ),
                    ));
                }
            }
            ipv6.push(c);
        }

        ports.push(Port {
            name: r.name,
            device,
            args,
            is_pci,
            queues,
            rx_descriptors,
            tx_descriptors,
            mtu,
            mac,
            promiscuous: r.promiscuous,
            ipv4,
            ipv6,
        });
    }
    if eal.pci && !ports.iter().any(|p| p.is_pci) {
        return Err(ConfigError::invalid(
            "eal.pci",
            "true, but no port is a PCI device: the EAL would probe every PCI device \
             of the machine (use false for vdev-only setups)",
        ));
    }
    Ok(ports)
}

fn check_interface_v4(c: &Ipv4Cidr) -> Result<(), String> {
    if c.len == 0 {
        return Err("prefix length 0 is not allowed for an interface address (1..=32)".into());
    }
    if let Some(what) = non_unicast(IpAddr::V4(c.addr)) {
        return Err(format!(
            "{} is {what}; interface addresses must be unicast",
            c.addr
        ));
    }
    if c.len <= 30 && c.addr == c.network() {
        return Err(format!(
            "{} is the network address of {}, not a host address",
            c.addr,
            c.trunc()
        ));
    }
    if c.len <= 30 && c.addr == c.broadcast() {
        return Err(format!(
            "{} is the broadcast address of {}, not a host address",
            c.addr,
            c.trunc()
        ));
    }
    Ok(())
}

fn check_interface_v6(c: &Ipv6Cidr) -> Result<(), String> {
    if c.len == 0 {
        return Err("prefix length 0 is not allowed for an interface address (1..=128)".into());
    }
    if let Some(what) = non_unicast(IpAddr::V6(c.addr)) {
        return Err(format!(
            "{} is {what}; interface addresses must be unicast",
            c.addr
        ));
    }
    if is_link_local6(c.addr) {
        return Err(format!(
            "{} is link-local; the fe80::/64 address is derived from the MAC at run time",
            c.addr
        ));
    }
    Ok(())
}

fn resolve_port(path: String, name: &str, ports: &[Port]) -> Res<usize> {
    ports.iter().position(|p| p.name == name).ok_or_else(|| {
        let names: Vec<&str> = ports.iter().map(|p| p.name.as_str()).collect();
        ConfigError::invalid(
            path,
            format!("no port named {name:?} (ports: {})", names.join(", ")),
        )
    })
}

/// The port and field path of one of the node's own addresses.
fn own_address(ip: IpAddr, ports: &[Port]) -> Option<String> {
    ports.iter().enumerate().find_map(|(i, p)| match ip {
        IpAddr::V4(a) => p
            .ipv4
            .iter()
            .position(|c| c.addr == a)
            .map(|k| format!("ports[{i}].ipv4[{k}]")),
        IpAddr::V6(a) => p
            .ipv6
            .iter()
            .position(|c| c.addr == a)
            .map(|k| format!("ports[{i}].ipv6[{k}]")),
    })
}

/// The connected subnet equal to `prefix`, if any.
fn connected(prefix: &IpCidr, ports: &[Port]) -> Option<(String, String)> {
    ports.iter().enumerate().find_map(|(i, p)| match prefix {
        IpCidr::V4(c) => p
            .ipv4
            .iter()
            .position(|o| o.len == c.len && o.network() == c.addr)
            .map(|k| (p.name.clone(), format!("ports[{i}].ipv4[{k}]"))),
        IpCidr::V6(c) => p
            .ipv6
            .iter()
            .position(|o| o.len == c.len && o.network() == c.addr)
            .map(|k| (p.name.clone(), format!("ports[{i}].ipv6[{k}]"))),
    })
}

fn family(ip_is_v4: bool) -> &'static str {
    if ip_is_v4 {
        "IPv4"
    } else {
        "IPv6"
    }
}

/// Parses a destination prefix (`routes[].prefix`, `srv6.steering[].prefix`):
/// IPv4 or IPv6, host bits zero.
fn parse_network(path: &str, text: &str) -> Res<IpCidr> {
    let prefix: IpCidr = text.parse().map_err(|m| ConfigError::invalid(path, m))?;
    if !prefix.is_network() {
        let net = match prefix {
            IpCidr::V4(c) => c.trunc().to_string(),
            IpCidr::V6(c) => c.trunc().to_string(),
        };
        return Err(ConfigError::invalid(
            path,
            format!("{prefix} has host bits set (the network is {net})"),
        ));
    }
    Ok(prefix)
}

fn validate_routes(raw: Vec<RawRoute>, ports: &[Port]) -> Res<Vec<Route>> {
    count("routes", raw.len(), 0, MAX_ROUTES)?;
    let mut seen: HashMap<IpCidr, usize> = HashMap::with_capacity(raw.len());
    let mut routes = Vec::with_capacity(raw.len());
    for (i, r) in raw.iter().enumerate() {
        let p = |field: &str| format!("routes[{i}].{field}");
        let prefix = parse_network(&p("prefix"), &r.prefix)?;
        if let Some(j) = seen.get(&prefix) {
            return Err(ConfigError::invalid(
                p("prefix"),
                format!("{prefix} is already routed by routes[{j}]"),
            ));
        }
        if let Some((name, path)) = connected(&prefix, ports) {
            return Err(ConfigError::invalid(
                p("prefix"),
                format!("{prefix} is the connected subnet of port {name} ({path}); connected routes are implicit"),
            ));
        }
        let port = resolve_port(p("port"), &r.port, ports)?;
        let pt = &ports[port];
        let v4 = prefix.is_ipv4();
        if !v4 && !pt.ipv6_capable() {
            return Err(ConfigError::invalid(
                p("port"),
                format!(
                    "port {} has mtu {}, too small for IPv6 (>= {IPV6_MIN_MTU})",
                    pt.name, pt.mtu
                ),
            ));
        }
        let via = match &r.via {
            None => {
                if v4 && pt.ipv4.is_empty() {
                    return Err(ConfigError::invalid(
                        p("port"),
                        format!(
                            "port {} has no IPv4 address, so it cannot resolve on-link IPv4 destinations",
                            pt.name
                        ),
                    ));
                }
                None
            }
            Some(s) => {
                let via: IpAddr = s.parse().map_err(|_| {
                    ConfigError::invalid(p("via"), format!("{s} is not an {} address", family(v4)))
                })?;
                if via.is_ipv4() != v4 {
                    return Err(ConfigError::invalid(
                        p("via"),
                        format!(
                            "next hop {via} is {} but the prefix {prefix} is {}",
                            family(via.is_ipv4()),
                            family(v4)
                        ),
                    ));
                }
                if let Some(what) = non_unicast(via) {
                    return Err(ConfigError::invalid(
                        p("via"),
                        format!("next hop {via} is {what}"),
                    ));
                }
                if let Some(own) = own_address(via, ports) {
                    return Err(ConfigError::invalid(
                        p("via"),
                        format!("next hop {via} is an address of this node ({own})"),
                    ));
                }
                if !pt.on_link(via) {
                    return Err(ConfigError::invalid(
                        p("via"),
                        format!("next hop {via} is not on a subnet of port {}", pt.name),
                    ));
                }
                Some(via)
            }
        };
        seen.insert(prefix, i);
        routes.push(Route { prefix, via, port });
    }
    Ok(routes)
}

fn validate_neighbors(raw: Vec<RawNeighbor>, ports: &[Port]) -> Res<Vec<StaticNeighbor>> {
    count("neighbors", raw.len(), 0, MAX_STATIC_NEIGHBORS)?;
    let mut seen: HashMap<(usize, IpAddr), usize> = HashMap::with_capacity(raw.len());
    let mut out = Vec::with_capacity(raw.len());
    for (i, r) in raw.iter().enumerate() {
        let p = |field: &str| format!("neighbors[{i}].{field}");
        let ip: IpAddr = r
            .ip
            .parse()
            .map_err(|_| ConfigError::invalid(p("ip"), format!("{} is not an IP address", r.ip)))?;
        if let Some(what) = non_unicast(ip) {
            return Err(ConfigError::invalid(p("ip"), format!("{ip} is {what}")));
        }
        if let Some(own) = own_address(ip, ports) {
            return Err(ConfigError::invalid(
                p("ip"),
                format!("{ip} is an address of this node ({own})"),
            ));
        }
        let mac = parse_mac(&r.mac).ok_or_else(|| {
            ConfigError::invalid(
                p("mac"),
                format!(
                    "{:?} is not a MAC address (expected e.g. \"02:00:00:00:00:02\")",
                    r.mac
                ),
            )
        })?;
        if mac[0] & 1 != 0 || mac == [0; 6] {
            return Err(ConfigError::invalid(
                p("mac"),
                format!("{} is not a unicast MAC address", r.mac),
            ));
        }
        let port = resolve_port(p("port"), &r.port, ports)?;
        let pt = &ports[port];
        if ip.is_ipv6() && !pt.ipv6_capable() {
            return Err(ConfigError::invalid(
                p("port"),
                format!(
                    "port {} has mtu {}, too small for IPv6 (>= {IPV6_MIN_MTU})",
                    pt.name, pt.mtu
                ),
            ));
        }
        if !pt.on_link(ip) {
            return Err(ConfigError::invalid(
                p("ip"),
                format!("{ip} is not on a subnet of port {}", pt.name),
            ));
        }
        if let Some(j) = seen.insert((port, ip), i) {
            return Err(ConfigError::invalid(
                p("ip"),
                format!("{ip} on port {} is already neighbors[{j}]", pt.name),
            ));
        }
        out.push(StaticNeighbor { ip, mac, port });
    }
    Ok(out)
}

fn validate_neighbor_cfg(r: RawNeighborCfg, statics: usize) -> Res<NeighborCfg> {
    let n = NeighborCfg {
        entries_max: range("neighbor.entries_max", r.entries_max, 16, 1_048_576)?,
        pending_packets_max: range(
            "neighbor.pending_packets_max",
            r.pending_packets_max,
            0,
            65536,
        )?,
        pending_per_neighbor_max: range(
            "neighbor.pending_per_neighbor_max",
            r.pending_per_neighbor_max,
            1,
            64,
        )?,
        resolve_retries: range("neighbor.resolve_retries", r.resolve_retries, 1, 10)?,
        resolve_interval_ms: range(
            "neighbor.resolve_interval_ms",
            r.resolve_interval_ms,
            10,
            60_000,
        )?,
        reachable_ms: range("neighbor.reachable_ms", r.reachable_ms, 1000, 3_600_000)?,
    };
    if statics > n.entries_max as usize {
        return Err(ConfigError::invalid(
            "neighbor.entries_max",
            format!(
                "{} is less than the number of static neighbors ({statics})",
                n.entries_max
            ),
        ));
    }
    Ok(n)
}

fn validate_pipeline(r: RawPipeline) -> Res<Pipeline> {
    Ok(Pipeline {
        burst_size: range("pipeline.burst_size", r.burst_size, 1, 64)?,
        idle_backoff: IdleBackoff {
            enabled: r.idle_backoff.enabled,
            empty_polls: range(
                "pipeline.idle_backoff.empty_polls",
                r.idle_backoff.empty_polls,
                1,
                1_000_000,
            )?,
            sleep_us: range(
                "pipeline.idle_backoff.sleep_us",
                r.idle_backoff.sleep_us,
                1,
                100_000,
            )?,
        },
        punt_ring_size: pow2_range("pipeline.punt_ring_size", r.punt_ring_size, 64, 65536)?,
        inject_ring_size: pow2_range("pipeline.inject_ring_size", r.inject_ring_size, 64, 65536)?,
    })
}

fn validate_metrics(r: RawMetrics) -> Res<Metrics> {
    let listen = match r.listen {
        None => None,
        Some(s) => {
            let a: SocketAddr = s.parse().map_err(|_| {
                ConfigError::invalid(
                    "metrics.listen",
                    format!("{s:?} is not a socket address (ip:port or [ipv6]:port), or null to disable"),
                )
            })?;
            if a.port() == 0 {
                return Err(ConfigError::invalid(
                    "metrics.listen",
                    format!("{s}: port 0 is not allowed"),
                ));
            }
            Some(a)
        }
    };
    Ok(Metrics { listen })
}

const LOG_LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];

fn validate_log(r: RawLog) -> Res<Log> {
    let l = r.level.as_str();
    let bad = l.is_empty()
        || l.len() > 1024
        || l.chars().any(char::is_control)
        // a single bare word is meant as a level ("warning" would silently
        // become a target name in an EnvFilter)
        || (!l.contains(['=', ',', ':', '[']) && !LOG_LEVELS.contains(&l.to_ascii_lowercase().as_str()));
    if bad {
        return Err(ConfigError::invalid(
            "log.level",
            format!(
                "{l:?} must be one of {} or an EnvFilter directive (e.g. info,appliance=debug)",
                LOG_LEVELS.join(" ")
            ),
        ));
    }
    Ok(Log {
        level: r.level,
        format: r.format,
    })
}

/// Parses one of the node's own IPv6 addresses (`srv6.encap_source`,
/// `srv6.steering[].source`).
fn own_ipv6(path: String, s: &str, ports: &[Port]) -> Res<Ipv6Addr> {
    let a: Ipv6Addr = s
        .parse()
        .map_err(|_| ConfigError::invalid(&path, format!("{s} is not an IPv6 address")))?;
    if own_address(IpAddr::V6(a), ports).is_none() {
        return Err(ConfigError::invalid(
            path,
            format!("{a} is not an address of this node (one of ports[].ipv6)"),
        ));
    }
    Ok(a)
}

fn validate_srv6(r: RawSrv6, ports: &[Port], routes: &[Route]) -> Res<Srv6> {
    let encap_source = match &r.encap_source {
        None => None,
        Some(s) => Some(own_ipv6("srv6.encap_source".to_string(), s, ports)?),
    };
    let trusted_ports = match &r.trusted_ports {
        None => None,
        Some(names) => {
            if names.is_empty() {
                return Err(ConfigError::invalid(
                    "srv6.trusted_ports",
                    "must name at least one port (null: every port is trusted)",
                ));
            }
            count("srv6.trusted_ports", names.len(), 1, MAX_PORTS)?;
            let mut out: Vec<usize> = Vec::with_capacity(names.len());
            for (i, name) in names.iter().enumerate() {
                let path = format!("srv6.trusted_ports[{i}]");
                let port = resolve_port(path.clone(), name, ports)?;
                if let Some(j) = out.iter().position(|&p| p == port) {
                    return Err(ConfigError::invalid(
                        path,
                        format!("duplicate port {name} (also srv6.trusted_ports[{j}])"),
                    ));
                }
                out.push(port);
            }
            Some(out)
        }
    };
    let local_sids = validate_local_sids(&r.local_sids, ports)?;
    let steering = validate_steering(&r.steering, ports, routes)?;
    Ok(Srv6 {
        encap_source,
        trusted_ports,
        local_sids,
        steering,
    })
}

fn validate_local_sids(raw: &[RawLocalSid], ports: &[Port]) -> Res<Vec<LocalSid>> {
    count("srv6.local_sids", raw.len(), 0, MAX_LOCAL_SIDS)?;
    let mut seen: HashMap<Ipv6Addr, usize> = HashMap::with_capacity(raw.len());
    let mut out = Vec::with_capacity(raw.len());
    for (i, r) in raw.iter().enumerate() {
        let p = |field: &str| format!("srv6.local_sids[{i}].{field}");
        let b = r.behavior;

        // sid
        let sid: Ipv6Addr = r.sid.parse().map_err(|_| {
            ConfigError::invalid(p("sid"), format!("{} is not an IPv6 address", r.sid))
        })?;
        if let Some(what) = non_unicast(IpAddr::V6(sid)) {
            return Err(ConfigError::invalid(
                p("sid"),
                format!("{sid} is {what}; a SID must be a unicast address"),
            ));
        }
        if is_link_local6(sid) {
            return Err(ConfigError::invalid(
                p("sid"),
                format!("{sid} is link-local; a SID must be a global address"),
            ));
        }
        for (pi, pt) in ports.iter().enumerate() {
            if let Some(k) = pt.ipv6.iter().position(|c| c.addr == sid) {
                return Err(ConfigError::invalid(
                    p("sid"),
                    format!(
                        "{sid} is an address of port {} (ports[{pi}].ipv6[{k}]); a SID must be an address of its own",
                        pt.name
                    ),
                ));
            }
        }
        if let Some(j) = seen.get(&sid) {
            return Err(ConfigError::invalid(
                p("sid"),
                format!("duplicate SID {sid} (also srv6.local_sids[{j}])"),
            ));
        }

        // flavors
        let mut flavors = Flavors::default();
        for (k, f) in r.flavors.iter().enumerate() {
            let path = format!("srv6.local_sids[{i}].flavors[{k}]");
            if !b.takes_flavors() {
                return Err(ConfigError::invalid(
                    path,
                    format!(
                        "{} is not allowed for behavior {b} (only end and end.x take flavors)",
                        f.as_str()
                    ),
                ));
            }
            let slot = match f {
                RawFlavor::Psp => &mut flavors.psp,
                RawFlavor::Usd => &mut flavors.usd,
            };
            if *slot {
                return Err(ConfigError::invalid(
                    path,
                    format!("duplicate flavor {}", f.as_str()),
                ));
            }
            *slot = true;
        }

        // next_hop, port
        let (next_hop, port) = if b.has_adjacency() {
            let required =
                |field: &str| ConfigError::invalid(p(field), format!("required for behavior {b}"));
            let nh_text = r.next_hop.as_deref().ok_or_else(|| required("next_hop"))?;
            let port_name = r.port.as_deref().ok_or_else(|| required("port"))?;
            let nh: Ipv6Addr = nh_text.parse().map_err(|_| {
                ConfigError::invalid(p("next_hop"), format!("{nh_text} is not an IPv6 address"))
            })?;
            if let Some(what) = non_unicast(IpAddr::V6(nh)) {
                return Err(ConfigError::invalid(
                    p("next_hop"),
                    format!("next hop {nh} is {what}"),
                ));
            }
            if let Some(own) = own_address(IpAddr::V6(nh), ports) {
                return Err(ConfigError::invalid(
                    p("next_hop"),
                    format!("next hop {nh} is an address of this node ({own})"),
                ));
            }
            let port = resolve_port(p("port"), port_name, ports)?;
            let pt = &ports[port];
            if !pt.ipv6_capable() {
                return Err(ConfigError::invalid(
                    p("port"),
                    format!(
                        "port {} has mtu {}, too small for IPv6 (>= {IPV6_MIN_MTU})",
                        pt.name, pt.mtu
                    ),
                ));
            }
            if !pt.on_link(IpAddr::V6(nh)) {
                return Err(ConfigError::invalid(
                    p("next_hop"),
                    format!("next hop {nh} is not on a subnet of port {}", pt.name),
                ));
            }
            (Some(nh), Some(port))
        } else {
            for (field, given) in [
                ("next_hop", r.next_hop.is_some()),
                ("port", r.port.is_some()),
            ] {
                if given {
                    return Err(ConfigError::invalid(
                        p(field),
                        format!(
                            "not allowed for behavior {b} (only end.x and end.dx6 have a {field})"
                        ),
                    ));
                }
            }
            (None, None)
        };

        // policy, threshold
        let (policy, threshold) = if b == SidBehavior::Storage {
            let policy = r.policy.ok_or_else(|| {
                ConfigError::invalid(p("policy"), format!("required for behavior {b}"))
            })?;
            let threshold = match (policy, r.threshold) {
                (StoragePolicy::SrC, None) => {
                    return Err(ConfigError::invalid(
                        p("threshold"),
                        format!("required for policy {policy}"),
                    ))
                }
                (StoragePolicy::SrC, Some(t)) => Some(range(
                    &p("threshold"),
                    t,
                    1,
                    i64::from(MAX_STORAGE_QUEUE_DEPTH),
                )?),
                (_, None) => None,
                (_, Some(_)) => {
                    return Err(ConfigError::invalid(
                        p("threshold"),
                        format!("not allowed for policy {policy} (only sr-c has a threshold)"),
                    ))
                }
            };
            (Some(policy), threshold)
        } else {
            if r.policy.is_some() {
                return Err(ConfigError::invalid(
                    p("policy"),
                    format!("not allowed for behavior {b} (only storage has a policy)"),
                ));
            }
            if r.threshold.is_some() {
                return Err(ConfigError::invalid(
                    p("threshold"),
                    format!(
                        "not allowed for behavior {b} (only storage with policy sr-c has a threshold)"
                    ),
                ));
            }
            (None, None)
        };

        seen.insert(sid, i);
        out.push(LocalSid {
            sid,
            behavior: b,
            flavors,
            next_hop,
            port,
            policy,
            threshold,
        });
    }
    Ok(out)
}

fn validate_steering(
    raw: &[RawSteering],
    ports: &[Port],
    routes: &[Route],
) -> Res<Vec<SteeringPolicy>> {
    count("srv6.steering", raw.len(), 0, MAX_STEERING_POLICIES)?;
    let mut seen: HashMap<IpCidr, usize> = HashMap::with_capacity(raw.len());
    let mut out = Vec::with_capacity(raw.len());
    for (i, r) in raw.iter().enumerate() {
        let p = |field: &str| format!("srv6.steering[{i}].{field}");
        let prefix = parse_network(&p("prefix"), &r.prefix)?;
        if let Some(j) = seen.get(&prefix) {
            return Err(ConfigError::invalid(
                p("prefix"),
                format!("duplicate prefix {prefix} (also srv6.steering[{j}])"),
            ));
        }
        if let Some(j) = routes.iter().position(|rt| rt.prefix == prefix) {
            return Err(ConfigError::invalid(
                p("prefix"),
                format!("same prefix as routes[{j}] ({prefix}); a destination is either steered or routed"),
            ));
        }
        if let Some((name, path)) = connected(&prefix, ports) {
            return Err(ConfigError::invalid(
                p("prefix"),
                format!("{prefix} is the connected subnet of port {name} ({path}); it cannot be steered"),
            ));
        }
        let n = r.segments.len();
        if !(1..=MAX_SEGMENTS).contains(&n) {
            return Err(ConfigError::invalid(
                p("segments"),
                format!("must have 1..={MAX_SEGMENTS} segments, has {n}"),
            ));
        }
        let mut segments = Vec::with_capacity(n);
        for (k, s) in r.segments.iter().enumerate() {
            let path = format!("srv6.steering[{i}].segments[{k}]");
            let a: Ipv6Addr = s
                .parse()
                .map_err(|_| ConfigError::invalid(&path, format!("{s} is not an IPv6 address")))?;
            if let Some(what) = non_unicast(IpAddr::V6(a)) {
                return Err(ConfigError::invalid(
                    path,
                    format!("{a} is not a unicast address (it is {what})"),
                ));
            }
            if is_link_local6(a) {
                return Err(ConfigError::invalid(
                    path,
                    format!("{a} is link-local; segments must be global addresses"),
                ));
            }
            segments.push(a);
        }
        let source = match &r.source {
            None => None,
            Some(s) => Some(own_ipv6(p("source"), s, ports)?),
        };
        seen.insert(prefix, i);
        out.push(SteeringPolicy {
            prefix,
            mode: r.mode,
            segments,
            source,
        });
    }
    Ok(out)
}

/// `123` or `0x7b` (no sign, no spaces).
fn parse_object_id(s: &str) -> Option<u64> {
    if let Some(hex) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        if hex.is_empty() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u64::from_str_radix(hex, 16).ok()
    } else {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    }
}

fn validate_storage_service(r: RawStorageService) -> Res<StorageService> {
    let udp_port = range("storage_service.udp_port", r.udp_port, 1, 65535)?;
    let queue_depth = range(
        "storage_service.queue_depth",
        r.queue_depth,
        0,
        i64::from(MAX_STORAGE_QUEUE_DEPTH),
    )?;
    count(
        "storage_service.objects",
        r.objects.len(),
        0,
        MAX_STORAGE_OBJECTS,
    )?;
    let mut seen: HashMap<u64, usize> = HashMap::with_capacity(r.objects.len());
    let mut objects = Vec::with_capacity(r.objects.len());
    for (i, o) in r.objects.iter().enumerate() {
        let path = format!("storage_service.objects[{i}]");
        let id = match o {
            RawObjectId::Int(v) => u64::try_from(*v).map_err(|_| {
                ConfigError::invalid(
                    &path,
                    format!("{v} is out of range 0..={} (object ids are u64)", u64::MAX),
                )
            })?,
            RawObjectId::Text(s) => parse_object_id(s).ok_or_else(|| {
                ConfigError::invalid(
                    &path,
                    format!(
                        "{s:?} is not an object id (a decimal or 0x-hex number in 0..={})",
                        u64::MAX
                    ),
                )
            })?,
        };
        if let Some(j) = seen.get(&id) {
            return Err(ConfigError::invalid(
                path,
                format!("duplicate object id {id} (also storage_service.objects[{j}])"),
            ));
        }
        seen.insert(id, i);
        objects.push(id);
    }
    Ok(StorageService {
        udp_port,
        queue_depth,
        objects,
    })
}

/// The rx rings are filled at start and the tx rings and per-lcore caches can
/// hold mbufs too: the pool must be larger than all of them together.
fn check_mbufs(m: &Mempool, ports: &[Port], lcores: &Lcores) -> Res<()> {
    let workers = lcores.workers.len() as u64;
    let rings: u64 = ports
        .iter()
        .map(|p| {
            u64::from(p.queues) * u64::from(p.rx_descriptors)
                + workers * u64::from(p.tx_descriptors)
        })
        .sum();
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

/// The NAT rings hold mbufs too: requests and answers in flight.
fn check_nat_mbufs(m: &Mempool, nat: &Nat, workers: usize) -> Res<()> {
    let need = 2 * u64::from(nat.ring_size) * workers as u64;
    if u64::from(m.mbufs) < need * 2 {
        return Err(ConfigError::invalid(
            "nat.ring_size",
            format!(
                "{} request+answer ring slots for {workers} workers would hold more than half of mempool.mbufs ({}): \
                 lower nat.ring_size or raise mempool.mbufs",
                need, m.mbufs
            ),
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    const BENCH_MEMIF: &str = include_str!("../../configs/bench-memif.yaml");

    /// A small valid config; tests edit it with `replace`.
    const BASE: &str = r#"
ports:
  - name: inside
    device: net_af_packet0
    args: "iface=veth0,qpairs=1"
    ipv4: ["192.0.2.1/24"]
    ipv6: ["2001:db8:1::1/64"]
  - name: outside
    device: net_af_packet1
    args: "iface=veth1,qpairs=1"
    ipv4: ["198.51.100.1/24"]
    ipv6: ["2001:db8:2::1/64"]
routes:
  - prefix: 203.0.113.0/24
    via: 198.51.100.254
    port: outside
  - prefix: 2001:db8:99::/48
    via: 2001:db8:2::fe
    port: outside
neighbors:
  - ip: 192.0.2.2
    mac: "02:00:00:00:00:02"
    port: inside
"#;

    fn ok(yaml: &str) -> Config {
        match Config::from_yaml_str(yaml) {
            Ok(c) => c,
            Err(e) => panic!("expected a valid config, got: {e}\n{yaml}"),
        }
    }

    fn err(yaml: &str) -> String {
        match Config::from_yaml_str(yaml) {
            Ok(_) => panic!("expected an error for:\n{yaml}"),
            Err(e) => e.to_string(),
        }
    }

    /// BASE with `from` replaced by `to` (which must occur).
    fn edit(from: &str, to: &str) -> String {
        assert!(BASE.contains(from), "{from:?} not in BASE");
        BASE.replacen(from, to, 1)
    }

    fn assert_err(yaml: &str, expected: &str) {
        let e = err(yaml);
        assert_eq!(e, expected, "\n{yaml}");
    }

    fn assert_err_starts(yaml: &str, expected: &str) {
        let e = err(yaml);
        assert!(
            e.starts_with(expected),
            "got {e:?}, expected prefix {expected:?}"
        );
    }

    // -- whole configs -----------------------------------------------------

    #[test]
    fn demo_parses() {
        let c = Config::demo();
        assert_eq!(c.ports.len(), 2);
        let inside = &c.ports[0];
        assert_eq!(inside.name, "inside");
        assert_eq!(inside.device, "net_af_packet0");
        assert_eq!(inside.args, "iface=apl-in,qpairs=1");
        assert_eq!(inside.ipv4, vec!["192.0.2.1/24".parse().unwrap()]);
        assert_eq!(inside.ipv6, vec!["2001:db8:1::1/64".parse().unwrap()]);
        let outside = &c.ports[1];
        assert_eq!(outside.name, "outside");
        assert_eq!(outside.device, "net_af_packet1");
        assert_eq!(outside.args, "iface=apl-out,qpairs=1");
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
        assert!(has("--huge-unlink"), "{args:?}");
        assert!(has("--log-level=notice"), "{args:?}");
        assert!(
            has("--vdev=net_af_packet0,iface=apl-in,qpairs=1"),
            "{args:?}"
        );
        assert!(
            has("--vdev=net_af_packet1,iface=apl-out,qpairs=1"),
            "{args:?}"
        );
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
        assert_eq!(c.srv6.local_sids.len(), 2);
        assert_eq!(c.srv6.local_sids[1].policy, Some(StoragePolicy::SrC));
        assert!(c.storage_service.queue_depth >= c.srv6.local_sids[1].threshold.unwrap());
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
        assert!(c.eal.huge_unlink);
        assert!(!c.eal.pci);
        assert_eq!(c.eal.log_level, EalLogLevel::Notice);
        assert!(c.eal.extra_args.is_empty());
        assert_eq!(c.lcores.main, Lcore { lcore: 0, cpu: 0 });
        assert_eq!(c.lcores.workers, vec![Lcore { lcore: 1, cpu: 1 }]);
        assert_eq!(
            c.mempool,
            Mempool {
                mbufs: 8191,
                cache_size: 256,
                data_room_bytes: 2176
            }
        );
        let p = &c.ports[0];
        assert_eq!(p.args, "");
        assert!(!p.is_pci);
        assert_eq!(
            (p.queues, p.rx_descriptors, p.tx_descriptors, p.mtu),
            (1, 1024, 1024, 1500)
        );
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
        assert_eq!(
            c.icmp,
            Icmp {
                errors_per_s: 100,
                errors_burst: 50
            }
        );
        assert_eq!(
            c.pipeline,
            Pipeline {
                burst_size: 32,
                idle_backoff: IdleBackoff {
                    enabled: true,
                    empty_polls: 256,
                    sleep_us: 50
                },
                punt_ring_size: 1024,
                inject_ring_size: 1024
            }
        );
        assert_eq!(c.metrics.listen, Some("127.0.0.1:9100".parse().unwrap()));
        assert_eq!(c.log.level, "info");
        assert_eq!(c.log.format, LogFormat::Text);
        assert_eq!(c.srv6, Srv6::default());
        assert_eq!((c.srv6.encap_source, &c.srv6.trusted_ports), (None, &None));
        assert!(c.srv6.local_sids.is_empty() && c.srv6.steering.is_empty());
        assert_eq!(
            c.storage_service,
            StorageService {
                udp_port: 7878,
                queue_depth: 0,
                objects: vec![]
            }
        );
    }

    #[test]
    fn partial_sections_keep_other_defaults() {
        let c = ok(&format!(
            "{BASE}pipeline:\n  idle_backoff:\n    enabled: false\neal:\n  memory_mb: 512\n"
        ));
        assert!(!c.pipeline.idle_backoff.enabled);
        assert_eq!(c.pipeline.idle_backoff.empty_polls, 256);
        assert_eq!(c.pipeline.burst_size, 32);
        assert_eq!(c.eal.memory_mb, 512);
        assert_eq!(c.eal.file_prefix, "appliance");
    }

    #[test]
    fn base_resolves_ports() {
        let c = ok(BASE);
        assert_eq!(c.routes[0].port, 1);
        assert_eq!(
            c.routes[0].prefix,
            IpCidr::V4(Ipv4Cidr {
                addr: Ipv4Addr::new(203, 0, 113, 0),
                len: 24
            })
        );
        assert_eq!(c.routes[0].via, Some("198.51.100.254".parse().unwrap()));
        assert_eq!(c.neighbors[0].port, 0);
        assert_eq!(c.port_index("outside"), Some(1));
        assert_eq!(c.port_index("nope"), None);
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
        assert!(
            y.contains("mac: 02:00:00:00:00:02") || y.contains("mac: '02:00:00:00:00:02'"),
            "{y}"
        );
        assert!(!y.contains("is_pci"), "{y}");
    }

    #[test]
    fn disabled_metrics_and_null_args() {
        let c = ok(&format!("{BASE}metrics:\n  listen: null\n"));
        assert_eq!(c.metrics.listen, None);
        let c = ok("ports:\n  - name: p0\n    device: net_null0\n    args:\n");
        assert_eq!(c.ports[0].args, "");
        assert_eq!(
            c.eal_args("x")
                .iter()
                .filter(|a| a.starts_with("--vdev"))
                .count(),
            1
        );
    }

    #[test]
    fn rx_queue_assignment() {
        let y = "mempool: {mbufs: 16383}\nlcores:\n  workers: [{lcore: 1, cpu: 1}, {lcore: 2, cpu: 1}]\n\
                 ports:\n  - {name: a, device: net_null0, queues: 3}\n  - {name: b, device: net_null1}\n";
        let c = ok(y);
        assert_eq!(c.rx_queues_of_worker(0), vec![(0, 0), (0, 2), (1, 0)]);
        assert_eq!(c.rx_queues_of_worker(1), vec![(0, 1)]);
        assert_eq!(c.eal_args("x")[5], "--lcores=0@0,1@1,2@1");
    }

    #[test]
    fn worker_cpu_defaults_to_lcore_id() {
        let c = ok(&format!("{BASE}lcores:\n  workers: [{{lcore: 3}}]\n"));
        assert_eq!(c.lcores.workers, vec![Lcore { lcore: 3, cpu: 3 }]);
    }

    #[test]
    fn pci_ports() {
        let y = "eal: {pci: true}\nports:\n  - {name: nic, device: \"0000:03:00.0\"}\n  - {name: v, device: net_null0}\n";
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
        let c = ok(&format!(
            "{BASE}eal:\n  extra_args: [\"--no-telemetry\", \"--in-memory\"]\n"
        ));
        let args = c.eal_args("x");
        assert_eq!(&args[args.len() - 2..], ["--no-telemetry", "--in-memory"]);
    }

    #[test]
    fn link_local_next_hop_and_neighbor() {
        let y = edit("via: 2001:db8:2::fe", "via: fe80::1")
            + "  - ip: fe80::2\n    mac: \"02:00:00:00:00:03\"\n    port: inside\n";
        let c = ok(&y);
        assert_eq!(c.routes[1].via, Some("fe80::1".parse().unwrap()));
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
        assert_eq!(c6.network(), "2001:db8:1::".parse::<Ipv6Addr>().unwrap());
        assert!(c6.contains("2001:db8:1::ffff".parse().unwrap()));
        assert!(!c6.contains("2001:db8:2::1".parse().unwrap()));
        let host: Ipv6Cidr = "2001:db8::1/128".parse().unwrap();
        assert!(host.is_network() && host.contains("2001:db8::1".parse().unwrap()));
        let r: IpCidr = "2001:db8::/32".parse().unwrap();
        assert!(!r.is_ipv4() && r.prefix_len() == 32 && r.to_string() == "2001:db8::/32");
        assert!(!r.contains("192.0.2.1".parse().unwrap()));
        assert_eq!(
            parse_mac("02:00:00:00:10:0a"),
            Some([2, 0, 0, 0, 0x10, 0x0a])
        );
        assert_eq!(parse_mac("02:00:00:00:10"), None);
        assert_eq!(parse_mac("02:00:00:00:10:0a:00"), None);
        assert_eq!(parse_mac("+2:00:00:00:10:0a"), None);
        assert_eq!(format_mac(&[2, 0, 0, 0, 0x10, 0x0a]), "02:00:00:00:10:0a");
    }

    #[test]
    fn cache_size_rule() {
        // DPDK: cache_size * 3 / 2 <= n. With mbufs >= 1023 and cache <= 512 it always
        // holds, so check the formula itself.
        assert_eq!(max_cache_size(8191), 5461);
        assert_eq!(max_cache_size(1023), 682);
        for n in [1023u32, 1024, 1025, 4095, 8191, 1_048_575] {
            let c = max_cache_size(n);
            assert!(c * 3 / 2 <= n && (c + 1) * 3 / 2 > n, "{n}: {c}");
        }
    }

    // -- parse errors ------------------------------------------------------

    #[test]
    fn unknown_field_is_named() {
        let e = err(&edit(
            "    device: net_af_packet0\n",
            "    device: net_af_packet0\n    quux: 1\n",
        ));
        assert!(e.starts_with("ports[0].quux: unknown field `quux`"), "{e}");
        assert!(e.contains("line "), "{e}");
        let e = err(&format!("{BASE}pipeline:\n  idle_backoff:\n    sleep: 5\n"));
        assert!(
            e.starts_with("pipeline.idle_backoff.sleep: unknown field `sleep`"),
            "{e}"
        );
        let e = err(&format!("{BASE}bogus: 1\n"));
        assert!(e.starts_with("bogus: unknown field `bogus`"), "{e}");
    }

    #[test]
    fn bad_type_is_named_with_location() {
        let y = edit(
            "    args: \"iface=veth1,qpairs=1\"\n",
            "    args: \"iface=veth1,qpairs=1\"\n    queues: many\n",
        );
        let e = Config::from_yaml_str(&y).unwrap_err();
        let s = e.to_string();
        assert!(s.starts_with("ports[1].queues: invalid type: string \"many\", expected an integer at line 11 column"), "{s}");
        assert!(
            s.ends_with(&format!(
                "at line {} column {}",
                e.location().unwrap().0,
                e.location().unwrap().1
            )),
            "{s}"
        );
        assert_eq!(e.location().unwrap().0, 11);
        let s = err(&format!(
            "{BASE}pipeline:\n  idle_backoff:\n    enabled: maybe\n"
        ));
        assert!(
            s.starts_with("pipeline.idle_backoff.enabled: invalid type"),
            "{s}"
        );
        let s = err(&format!("{BASE}eal:\n  log_level: loud\n"));
        assert!(
            s.starts_with("eal.log_level: unknown variant `loud`"),
            "{s}"
        );
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
        assert!(
            e.to_string()
                .contains("cannot start any token at line 2 column 1"),
            "{e}"
        );
        let e = Config::from_yaml_str("- 1\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "(top level): invalid type: sequence, expected a mapping at line 1 column 1"
        );
    }

    #[test]
    fn load_reports_missing_file() {
        let e = Config::load(Path::new("/nonexistent/appliance.yaml")).unwrap_err();
        assert!(e.to_string().starts_with("cannot read the file: "), "{e}");
        assert_eq!(e.path(), "/nonexistent/appliance.yaml");
        assert!(matches!(e, ConfigError::Io { .. }));
    }

    // -- eal ---------------------------------------------------------------

    #[test]
    fn eal_file_prefix() {
        assert_err_starts(
            &format!("{BASE}eal:\n  file_prefix: \"a b\"\n"),
            "eal.file_prefix: \"a b\" must match",
        );
        assert_err_starts(
            &format!("{BASE}eal:\n  file_prefix: \"\"\n"),
            "eal.file_prefix: ",
        );
        assert_err_starts(
            &format!("{BASE}eal:\n  file_prefix: {}\n", "x".repeat(33)),
            "eal.file_prefix: ",
        );
    }

    #[test]
    fn eal_memory() {
        assert_err(
            &format!("{BASE}eal:\n  memory_mb: 32\n"),
            "eal.memory_mb: must be 64..=65536",
        );
        assert_err(
            &format!("{BASE}eal:\n  memory_mb: -1\n"),
            "eal.memory_mb: must be 64..=65536",
        );
    }

    #[test]
    fn eal_extra_args_non_empty() {
        assert_err_starts(
            &format!("{BASE}eal:\n  extra_args: [\"--x\", \"\"]\n"),
            "eal.extra_args[1]: ",
        );
    }

    #[test]
    fn eal_pci_needs_pci_port() {
        assert_err_starts(
            &format!("{BASE}eal:\n  pci: true\n"),
            "eal.pci: true, but no port is a PCI device",
        );
    }

    // -- lcores ------------------------------------------------------------

    #[test]
    fn lcores_rules() {
        assert_err(
            &format!("{BASE}lcores:\n  workers: []\n"),
            "lcores.workers: must have 1..=64 entries, has 0",
        );
        let many: Vec<String> = (1..=65)
            .map(|i| format!("{{lcore: {i}, cpu: 1}}"))
            .collect();
        assert_err(
            &format!("{BASE}lcores:\n  workers: [{}]\n", many.join(", ")),
            "lcores.workers: must have 1..=64 entries, has 65",
        );
        assert_err(
            &format!("{BASE}lcores:\n  workers: [{{lcore: 128, cpu: 1}}]\n"),
            "lcores.workers[0].lcore: must be 0..=127",
        );
        assert_err(
            &format!("{BASE}lcores:\n  workers: [{{lcore: 1, cpu: 1024}}]\n"),
            "lcores.workers[0].cpu: must be 0..=1023",
        );
        assert_err(
            &format!("{BASE}lcores:\n  main: {{lcore: -1, cpu: 0}}\n"),
            "lcores.main.lcore: must be 0..=127",
        );
        assert_err(
            &format!("{BASE}lcores:\n  workers: [{{lcore: 1, cpu: 1}}, {{lcore: 1, cpu: 0}}]\n"),
            "lcores.workers[1].lcore: lcore 1 is already used by lcores.workers[0]",
        );
        assert_err(
            &format!("{BASE}lcores:\n  workers: [{{lcore: 0, cpu: 1}}]\n"),
            "lcores.workers[0].lcore: lcore 0 is already used by lcores.main",
        );
        // several lcores on one cpu is fine
        ok(&format!(
            "{BASE}lcores:\n  main: {{lcore: 0, cpu: 1}}\n  workers: [{{lcore: 1, cpu: 1}}]\n"
        ));
    }

    // -- mempool -----------------------------------------------------------

    #[test]
    fn mempool_ranges() {
        assert_err(
            &format!("{BASE}mempool:\n  mbufs: 1000\n"),
            "mempool.mbufs: must be 1023..=1048575",
        );
        assert_err(
            &format!("{BASE}mempool:\n  cache_size: 513\n"),
            "mempool.cache_size: must be 0..=512",
        );
        assert_err(
            &format!("{BASE}mempool:\n  data_room_bytes: 1000\n"),
            "mempool.data_room_bytes: must be 1152..=65535",
        );
        assert_err(
            &format!("{BASE}mempool:\n  data_room_bytes: 65536\n"),
            "mempool.data_room_bytes: must be 1152..=65535",
        );
    }

    #[test]
    fn mempool_must_cover_rings_and_caches() {
        // 2 ports x (1024 rx + 1024 tx) + 2 lcores x 256 cache = 4608
        assert_err_starts(
            &format!("{BASE}mempool:\n  mbufs: 4607\n"),
            "mempool.mbufs: 4607 mbufs are fewer than the descriptor rings (4096) and lcore caches (512) can hold: raise it to at least 4608",
        );
        ok(&format!("{BASE}mempool:\n  mbufs: 4608\n"));
    }

    // -- ports -------------------------------------------------------------

    #[test]
    fn ports_count() {
        assert_err("ports: []\n", "ports: must have 1..=16 entries, has 0");
        assert_err("{}\n", "ports: must have 1..=16 entries, has 0");
        let many: Vec<String> = (0..17)
            .map(|i| format!("  - {{name: p{i}, device: net_null{i}}}\n"))
            .collect();
        assert_err(
            &format!("mempool: {{mbufs: 65535}}\nports:\n{}", many.concat()),
            "ports: must have 1..=16 entries, has 17",
        );
    }

    #[test]
    fn port_name() {
        assert_err_starts(
            &edit("name: inside", "name: Inside"),
            "ports[0].name: \"Inside\" must match [a-z0-9_-]{1,15}",
        );
        assert_err_starts(
            &edit("name: inside", "name: a-very-long-name-x"),
            "ports[0].name: ",
        );
        assert_err_starts(
            &edit("name: outside", "name: inside"),
            "ports[1].name: duplicate port name inside (also ports[0])",
        );
    }

    #[test]
    fn port_device() {
        assert_err_starts(
            &edit("device: net_af_packet0", "device: af_packet0"),
            "ports[0].device: \"af_packet0\" is neither a vdev name",
        );
        assert_err_starts(
            &edit(
                "device: net_af_packet0",
                "device: \"net_af_packet0,iface=x\"",
            ),
            "ports[0].device: ",
        );
        assert_err(
            &edit("device: net_af_packet1", "device: net_af_packet0"),
            "ports[1].device: device net_af_packet0 is already used by ports[0]",
        );
        assert_err(
            "ports:\n  - {name: nic, device: \"0000:03:00.0\"}\n",
            "ports[0].device: 0000:03:00.0 is a PCI address; PCI devices need eal.pci: true",
        );
        assert_err_starts(
            "eal: {pci: true}\nports:\n  - {name: nic, device: \"03:00.0\"}\n",
            "ports[0].device: \"03:00.0\" is neither",
        );
    }

    #[test]
    fn port_args() {
        assert_err(
            "eal: {pci: true}\nports:\n  - {name: nic, device: \"0000:03:00.0\", args: \"x=1\"}\n",
            "ports[0].args: must be empty for a PCI device",
        );
        assert_err_starts(
            &edit("iface=veth0,qpairs=1", "iface=veth0, qpairs=1"),
            "ports[0].args: ",
        );
    }

    #[test]
    fn port_queues() {
        assert_err(
            &edit(
                "    args: \"iface=veth1,qpairs=1\"\n",
                "    args: \"iface=veth1,qpairs=1\"\n    queues: 65\n",
            ),
            "ports[1].queues: must be 1..=64",
        );
        assert_err(
            &edit(
                "    args: \"iface=veth1,qpairs=1\"\n",
                "    args: \"iface=veth1,qpairs=1\"\n    queues: 0\n",
            ),
            "ports[1].queues: must be 1..=64",
        );
    }

    #[test]
    fn af_packet_qpairs() {
        assert_err_starts(
            &edit(
                "    args: \"iface=veth1,qpairs=1\"\n",
                "    args: \"iface=veth1,qpairs=1\"\n    queues: 2\n",
            ),
            "ports[1].queues: 2 rx queues, but the device has qpairs=1",
        );
        assert_err_starts(
            &edit(
                "    args: \"iface=veth1,qpairs=1\"\n",
                "    args: \"iface=veth1\"\n    queues: 2\n",
            ),
            "ports[1].queues: 2 rx queues, but the device has qpairs=1",
        );
        assert_err_starts(
            &format!("{BASE}lcores:\n  workers: [{{lcore: 1}}, {{lcore: 2}}]\n"),
            "ports[0].args: qpairs=1, but each of the 2 workers needs its own tx queue",
        );
        assert_err(
            &edit("qpairs=1\"\n    ipv4", "qpairs=x\"\n    ipv4"),
            "ports[0].args: qpairs=x is not a number",
        );
        ok(&edit(
            "    args: \"iface=veth1,qpairs=1\"\n",
            "    args: \"iface=veth1,qpairs=4\"\n    queues: 4\n",
        ));
    }

    #[test]
    fn port_descriptors() {
        let add = |f: &str| {
            edit(
                "    args: \"iface=veth0,qpairs=1\"\n",
                &format!("    args: \"iface=veth0,qpairs=1\"\n    {f}\n"),
            )
        };
        assert_err(
            &add("rx_descriptors: 32"),
            "ports[0].rx_descriptors: must be 64..=16384",
        );
        assert_err(&add("rx_descriptors: 1000"), "ports[0].rx_descriptors: 1000 is not a power of two (must be a power of two in 64..=16384)");
        assert_err(
            &add("tx_descriptors: 32768"),
            "ports[0].tx_descriptors: must be 64..=16384",
        );
        assert_err_starts(
            &add("tx_descriptors: 1536"),
            "ports[0].tx_descriptors: 1536 is not a power of two",
        );
    }

    #[test]
    fn port_mtu() {
        let add = |f: &str| {
            edit(
                "    args: \"iface=veth0,qpairs=1\"\n",
                &format!("    args: \"iface=veth0,qpairs=1\"\n    {f}\n"),
            )
        };
        assert_err(&add("mtu: 67"), "ports[0].mtu: must be 68..=9000");
        assert_err(&add("mtu: 9001"), "ports[0].mtu: must be 68..=9000");
        assert_err_starts(&add("mtu: 9000"), "ports[0].mtu: a frame of mtu 9000 does not fit in one mbuf: mempool.data_room_bytes must be >= 9146");
        ok(&format!(
            "{}mempool: {{data_room_bytes: 9146, mbufs: 16383}}\n",
            add("mtu: 9000")
        ));
        assert_err(
            &add("mtu: 1279"),
            "ports[0].ipv6: IPv6 needs an mtu of at least 1280, but ports[0].mtu is 1279",
        );
    }

    #[test]
    fn port_mac() {
        let add = |f: &str| {
            edit(
                "    args: \"iface=veth0,qpairs=1\"\n",
                &format!("    args: \"iface=veth0,qpairs=1\"\n    {f}\n"),
            )
        };
        assert_eq!(
            ok(&add("mac: \"02:00:00:00:00:01\"")).ports[0].mac,
            Some([2, 0, 0, 0, 0, 1])
        );
        assert_err_starts(
            &add("mac: \"02:00:00:00:00\""),
            "ports[0].mac: \"02:00:00:00:00\" is not a MAC address",
        );
        assert_err(
            &add("mac: \"03:00:00:00:00:01\""),
            "ports[0].mac: 03:00:00:00:00:01 is not a unicast MAC address",
        );
        assert_err(
            &add("mac: \"00:00:00:00:00:00\""),
            "ports[0].mac: 00:00:00:00:00:00 is not a unicast MAC address",
        );
    }

    #[test]
    fn port_ipv4_syntax() {
        assert_err(
            &edit("192.0.2.1/24", "192.0.2.1/33"),
            "ports[0].ipv4[0]: prefix length 33 is out of range 0..=32",
        );
        assert_err(
            &edit("192.0.2.1/24", "192.0.2.300/24"),
            "ports[0].ipv4[0]: 192.0.2.300 is not an IPv4 address",
        );
        assert_err_starts(
            &edit("192.0.2.1/24", "192.0.2.1"),
            "ports[0].ipv4[0]: 192.0.2.1 has no prefix length",
        );
        assert_err(
            &edit("192.0.2.1/24", "2001:db8::1/64"),
            "ports[0].ipv4[0]: 2001:db8::1 is not an IPv4 address",
        );
        assert_err(
            &edit("192.0.2.1/24", "192.0.2.1/x"),
            "ports[0].ipv4[0]: prefix length \"x\" is not a number",
        );
        assert_err(
            &edit("192.0.2.1/24", "192.0.2.1/0"),
            "ports[0].ipv4[0]: prefix length 0 is not allowed for an interface address (1..=32)",
        );
    }

    #[test]
    fn port_ipv4_unicast_only() {
        for (addr, what) in [
            ("224.0.0.1/24", "224.0.0.1 is a multicast address"),
            ("0.0.0.0/8", "0.0.0.0 is the unspecified address"),
            ("127.0.0.1/8", "127.0.0.1 is a loopback address"),
            (
                "255.255.255.255/32",
                "255.255.255.255 is the broadcast address",
            ),
        ] {
            assert_err(
                &edit("192.0.2.1/24", addr),
                &format!("ports[0].ipv4[0]: {what}; interface addresses must be unicast"),
            );
        }
        assert_err(
            &edit("192.0.2.1/24", "192.0.2.0/24"),
            "ports[0].ipv4[0]: 192.0.2.0 is the network address of 192.0.2.0/24, not a host address",
        );
        assert_err(
            &edit("192.0.2.1/24", "192.0.2.255/24"),
            "ports[0].ipv4[0]: 192.0.2.255 is the broadcast address of 192.0.2.0/24, not a host address",
        );
        // no network/broadcast address in a /31 or /32
        ok("ports:\n  - {name: p, device: net_null0, ipv4: [\"192.0.2.0/31\", \"198.51.100.255/32\"]}\n");
    }

    #[test]
    fn port_ipv6_rules() {
        assert_err(
            &edit("2001:db8:1::1/64", "2001:db8:1::1/129"),
            "ports[0].ipv6[0]: prefix length 129 is out of range 0..=128",
        );
        assert_err(
            &edit("2001:db8:1::1/64", "2001:db8:1::g/64"),
            "ports[0].ipv6[0]: 2001:db8:1::g is not an IPv6 address",
        );
        assert_err(
            &edit("2001:db8:1::1/64", "ff02::1/64"),
            "ports[0].ipv6[0]: ff02::1 is a multicast address; interface addresses must be unicast",
        );
        assert_err(
            &edit("2001:db8:1::1/64", "::/64"),
            "ports[0].ipv6[0]: :: is the unspecified address; interface addresses must be unicast",
        );
        assert_err(
            &edit("2001:db8:1::1/64", "::1/128"),
            "ports[0].ipv6[0]: ::1 is the loopback address; interface addresses must be unicast",
        );
        assert_err_starts(
            &edit("2001:db8:1::1/64", "fe80::1/64"),
            "ports[0].ipv6[0]: fe80::1 is link-local",
        );
        assert_err_starts(
            &edit("2001:db8:1::1/64", "2001:db8:1::1/0"),
            "ports[0].ipv6[0]: prefix length 0 is not allowed",
        );
    }

    #[test]
    fn port_address_count() {
        let nine: Vec<String> = (1..=9).map(|i| format!("\"192.0.2.{i}/24\"")).collect();
        assert_err(
            &edit(
                "ipv4: [\"192.0.2.1/24\"]",
                &format!("ipv4: [{}]", nine.join(", ")),
            ),
            "ports[0].ipv4: must have 0..=8 entries, has 9",
        );
        let nine: Vec<String> = (1..=9).map(|i| format!("\"2001:db8:1::{i}/64\"")).collect();
        assert_err(
            &edit(
                "ipv6: [\"2001:db8:1::1/64\"]",
                &format!("ipv6: [{}]", nine.join(", ")),
            ),
            "ports[0].ipv6: must have 0..=8 entries, has 9",
        );
    }

    #[test]
    fn port_address_overlap() {
        assert_err(
            &edit("198.51.100.1/24", "192.0.2.5/24"),
            "ports[1].ipv4[0]: 192.0.2.5/24 overlaps 192.0.2.1/24 of port inside (ports[0].ipv4[0])",
        );
        assert_err(
            &edit("198.51.100.1/24", "192.0.0.1/16"),
            "ports[1].ipv4[0]: 192.0.0.1/16 overlaps 192.0.2.1/24 of port inside (ports[0].ipv4[0])",
        );
        assert_err(
            &edit("2001:db8:2::1/64", "2001:db8:1::2/64"),
            "ports[1].ipv6[0]: 2001:db8:1::2/64 overlaps 2001:db8:1::1/64 of port inside (ports[0].ipv6[0])",
        );
        assert_err(
            &edit("\"192.0.2.1/24\"]", "\"192.0.2.1/24\", \"192.0.2.1/25\"]"),
            "ports[0].ipv4[1]: 192.0.2.1 is already ports[0].ipv4[0]",
        );
        // a secondary address in the same subnet of the same port is fine
        ok(&edit(
            "\"192.0.2.1/24\"]",
            "\"192.0.2.1/24\", \"192.0.2.3/24\"]",
        ));
    }

    // -- routes ------------------------------------------------------------

    #[test]
    fn route_prefix() {
        assert_err(
            &edit("prefix: 203.0.113.0/24", "prefix: 198.51.100.7/24"),
            "routes[0].prefix: 198.51.100.7/24 has host bits set (the network is 198.51.100.0/24)",
        );
        assert_err(
            &edit("prefix: 2001:db8:99::/48", "prefix: 2001:db8:99::1/48"),
            "routes[1].prefix: 2001:db8:99::1/48 has host bits set (the network is 2001:db8:99::/48)",
        );
        assert_err(
            &edit("prefix: 203.0.113.0/24", "prefix: 203.0.113.0/40"),
            "routes[0].prefix: prefix length 40 is out of range 0..=32",
        );
        assert_err(
            &edit("prefix: 203.0.113.0/24", "prefix: nonsense/8"),
            "routes[0].prefix: nonsense is not an IPv4 address",
        );
        assert_err(
            &format!("{BASE}  - {{prefix: 203.0.113.0/24, port: outside}}\n").replacen(
                "neighbors:\n  - ip: 192.0.2.2\n    mac: \"02:00:00:00:00:02\"\n    port: inside\n",
                "",
                1,
            ),
            "routes[2].prefix: 203.0.113.0/24 is already routed by routes[0]",
        );
        assert_err(
            &edit("prefix: 203.0.113.0/24\n    via: 198.51.100.254", "prefix: 198.51.100.0/24\n    via: 198.51.100.254"),
            "routes[0].prefix: 198.51.100.0/24 is the connected subnet of port outside (ports[1].ipv4[0]); connected routes are implicit",
        );
        // a default route is fine
        ok(&edit("prefix: 203.0.113.0/24", "prefix: 0.0.0.0/0"));
    }

    #[test]
    fn route_port() {
        assert_err(
            &edit(
                "    via: 198.51.100.254\n    port: outside",
                "    via: 198.51.100.254\n    port: outsid",
            ),
            "routes[0].port: no port named \"outsid\" (ports: inside, outside)",
        );
    }

    #[test]
    fn route_via() {
        assert_err(
            &edit("via: 198.51.100.254", "via: 192.0.2.300"),
            "routes[0].via: 192.0.2.300 is not an IPv4 address",
        );
        assert_err(
            &edit("via: 2001:db8:2::fe", "via: 2001:db8:2::zz"),
            "routes[1].via: 2001:db8:2::zz is not an IPv6 address",
        );
        assert_err(
            &edit("via: 198.51.100.254", "via: 2001:db8:2::fe"),
            "routes[0].via: next hop 2001:db8:2::fe is IPv6 but the prefix 203.0.113.0/24 is IPv4",
        );
        assert_err(
            &edit("via: 198.51.100.254", "via: 203.0.113.9"),
            "routes[0].via: next hop 203.0.113.9 is not on a subnet of port outside",
        );
        assert_err(
            &edit(
                "via: 198.51.100.254\n    port: outside",
                "via: 198.51.100.254\n    port: inside",
            ),
            "routes[0].via: next hop 198.51.100.254 is not on a subnet of port inside",
        );
        assert_err(
            &edit("via: 2001:db8:2::fe", "via: 2001:db8:1::fe"),
            "routes[1].via: next hop 2001:db8:1::fe is not on a subnet of port outside",
        );
        assert_err(
            &edit("via: 198.51.100.254", "via: 224.0.0.5"),
            "routes[0].via: next hop 224.0.0.5 is a multicast address",
        );
        assert_err(
            &edit("via: 198.51.100.254", "via: 198.51.100.1"),
            "routes[0].via: next hop 198.51.100.1 is an address of this node (ports[1].ipv4[0])",
        );
    }

    #[test]
    fn route_on_link() {
        let c = ok(&edit("    via: 198.51.100.254\n", ""));
        assert_eq!(c.routes[0].via, None);
        assert_err(
            &format!("{BASE}  - {{prefix: 100.64.0.0/10, port: v6only}}\n")
                .replacen("routes:", "  - {name: v6only, device: net_null0, ipv6: [\"2001:db8:3::1/64\"]}\nroutes:", 1)
                .replacen("neighbors:\n  - ip: 192.0.2.2\n    mac: \"02:00:00:00:00:02\"\n    port: inside\n", "", 1),
            "routes[2].port: port v6only has no IPv4 address, so it cannot resolve on-link IPv4 destinations",
        );
    }

    #[test]
    fn route_ipv6_on_small_mtu_port() {
        let y =
            "ports:\n  - {name: small, device: net_null0, mtu: 1000, ipv4: [\"192.0.2.1/24\"]}\n\
                 routes:\n  - {prefix: \"2001:db8:5::/48\", via: \"fe80::1\", port: small}\n";
        assert_err(
            y,
            "routes[0].port: port small has mtu 1000, too small for IPv6 (>= 1280)",
        );
    }

    #[test]
    fn route_count_limit() {
        let mut y = String::from(
            "ports:\n  - {name: p, device: net_null0, ipv4: [\"10.0.0.1/8\"]}\nroutes:\n",
        );
        for _ in 0..=65536u32 {
            y.push_str("  - {prefix: 100.64.0.0/24, via: 10.0.0.2, port: p}\n");
        }
        // 65537 entries: the count check fires before the per-route checks
        assert_err(&y, "routes: must have 0..=65536 entries, has 65537");
    }

    // -- neighbors ---------------------------------------------------------

    #[test]
    fn neighbor_rules() {
        assert_err(
            &edit("ip: 192.0.2.2", "ip: 192.0.2.256"),
            "neighbors[0].ip: 192.0.2.256 is not an IP address",
        );
        assert_err(
            &edit("ip: 192.0.2.2", "ip: 198.51.100.2"),
            "neighbors[0].ip: 198.51.100.2 is not on a subnet of port inside",
        );
        assert_err(
            &edit("ip: 192.0.2.2", "ip: 2001:db8:2::2"),
            "neighbors[0].ip: 2001:db8:2::2 is not on a subnet of port inside",
        );
        ok(&edit("ip: 192.0.2.2", "ip: 2001:db8:1::2"));
        assert_err(
            &edit("ip: 192.0.2.2", "ip: 192.0.2.1"),
            "neighbors[0].ip: 192.0.2.1 is an address of this node (ports[0].ipv4[0])",
        );
        assert_err(
            &edit("ip: 192.0.2.2", "ip: 224.0.0.1"),
            "neighbors[0].ip: 224.0.0.1 is a multicast address",
        );
        assert_err(
            &edit(
                "    mac: \"02:00:00:00:00:02\"\n    port: inside",
                "    mac: \"02:00:00:00:00:02\"\n    port: nowhere",
            ),
            "neighbors[0].port: no port named \"nowhere\" (ports: inside, outside)",
        );
        assert_err_starts(
            &edit("mac: \"02:00:00:00:00:02\"", "mac: \"02-00-00-00-00-02\""),
            "neighbors[0].mac: \"02-00-00-00-00-02\" is not a MAC address",
        );
        assert_err(
            &edit("mac: \"02:00:00:00:00:02\"", "mac: \"ff:ff:ff:ff:ff:ff\""),
            "neighbors[0].mac: ff:ff:ff:ff:ff:ff is not a unicast MAC address",
        );
        assert_err(
            &format!("{BASE}  - ip: 192.0.2.2\n    mac: \"02:00:00:00:00:09\"\n    port: inside\n"),
            "neighbors[1].ip: 192.0.2.2 on port inside is already neighbors[0]",
        );
    }

    #[test]
    fn neighbors_fit_in_table() {
        // BASE ends with its `neighbors:` list: append 16 more entries (17 in all)
        let mut y = BASE.to_string();
        for i in 3..=18 {
            y.push_str(&format!(
                "  - ip: 192.0.2.{i}\n    mac: \"02:00:00:00:01:{i:02x}\"\n    port: inside\n"
            ));
        }
        y.push_str("neighbor:\n  entries_max: 16\n");
        assert_err(
            &y,
            "neighbor.entries_max: 16 is less than the number of static neighbors (17)",
        );
    }

    #[test]
    fn neighbor_count_limit() {
        let mut y = String::from(
            "ports:\n  - {name: p, device: net_null0, ipv4: [\"10.0.0.1/8\"]}\nneighbors:\n",
        );
        for i in 0..4097u32 {
            y.push_str(&format!(
                "  - {{ip: 10.1.{}.{}, mac: \"02:00:00:00:00:01\", port: p}}\n",
                i >> 8,
                i & 255
            ));
        }
        assert_err(&y, "neighbors: must have 0..=4096 entries, has 4097");
    }

    // -- neighbor, icmp, pipeline, metrics, log ----------------------------

    #[test]
    fn neighbor_cfg_ranges() {
        for (field, bad, msg) in [
            ("entries_max", "15", "must be 16..=1048576"),
            ("pending_packets_max", "65537", "must be 0..=65536"),
            ("pending_per_neighbor_max", "0", "must be 1..=64"),
            ("resolve_retries", "11", "must be 1..=10"),
            ("resolve_interval_ms", "9", "must be 10..=60000"),
            ("reachable_ms", "999", "must be 1000..=3600000"),
        ] {
            assert_err(
                &format!("{BASE}neighbor:\n  {field}: {bad}\n"),
                &format!("neighbor.{field}: {msg}"),
            );
        }
    }

    #[test]
    fn icmp_ranges() {
        assert_err(
            &format!("{BASE}icmp:\n  errors_per_s: 1000001\n"),
            "icmp.errors_per_s: must be 0..=1000000",
        );
        assert_err(
            &format!("{BASE}icmp:\n  errors_burst: 0\n"),
            "icmp.errors_burst: must be 1..=100000",
        );
        assert_eq!(
            ok(&format!("{BASE}icmp:\n  errors_per_s: 0\n"))
                .icmp
                .errors_per_s,
            0
        );
    }

    #[test]
    fn pipeline_ranges() {
        assert_err(
            &format!("{BASE}pipeline:\n  burst_size: 65\n"),
            "pipeline.burst_size: must be 1..=64",
        );
        assert_err(
            &format!("{BASE}pipeline:\n  idle_backoff: {{empty_polls: 0}}\n"),
            "pipeline.idle_backoff.empty_polls: must be 1..=1000000",
        );
        assert_err(
            &format!("{BASE}pipeline:\n  idle_backoff: {{sleep_us: 100001}}\n"),
            "pipeline.idle_backoff.sleep_us: must be 1..=100000",
        );
        assert_err(
            &format!("{BASE}pipeline:\n  punt_ring_size: 32\n"),
            "pipeline.punt_ring_size: must be 64..=65536",
        );
        assert_err(
            &format!("{BASE}pipeline:\n  inject_ring_size: 1000\n"),
            "pipeline.inject_ring_size: 1000 is not a power of two (must be a power of two in 64..=65536)",
        );
    }

    #[test]
    fn metrics_listen() {
        assert_err_starts(
            &format!("{BASE}metrics:\n  listen: localhost:9100\n"),
            "metrics.listen: \"localhost:9100\" is not a socket address",
        );
        assert_err(
            &format!("{BASE}metrics:\n  listen: \"127.0.0.1:0\"\n"),
            "metrics.listen: 127.0.0.1:0: port 0 is not allowed",
        );
        assert_eq!(
            ok(&format!("{BASE}metrics:\n  listen: \"[::1]:9100\"\n"))
                .metrics
                .listen,
            Some("[::1]:9100".parse().unwrap())
        );
    }

    #[test]
    fn log_settings() {
        assert_err_starts(
            &format!("{BASE}log:\n  level: warning\n"),
            "log.level: \"warning\" must be one of trace debug info warn error off",
        );
        assert_err_starts(&format!("{BASE}log:\n  level: \"\"\n"), "log.level: ");
        let c = ok(&format!(
            "{BASE}log:\n  level: \"info,appliance::neigh=debug\"\n  format: json\n"
        ));
        assert_eq!(c.log.level, "info,appliance::neigh=debug");
        assert_eq!(c.log.format, LogFormat::Json);
    }

    // -- srv6, storage_service ---------------------------------------------

    /// Appended to BASE: every SRv6 feature once.
    const SRV6: &str = r#"srv6:
  encap_source: "2001:db8:2::1"
  trusted_ports: [outside, inside]
  local_sids:
    - sid: "2001:db8:a::1"
      behavior: end
      flavors: [psp, usd]
    - sid: "2001:db8:a::2"
      behavior: end.x
      flavors: [usd]
      next_hop: "2001:db8:2::2"
      port: outside
    - sid: "2001:db8:a::3"
      behavior: end.dt6
    - sid: "2001:db8:a::4"
      behavior: end.dx6
      next_hop: "fe80::2"
      port: inside
    - sid: "2001:db8:a::5"
      behavior: storage
      policy: sr-c
      threshold: 8
    - sid: "2001:db8:a::6"
      behavior: storage
      policy: holds-object
  steering:
    - prefix: "2001:db8:77::/64"
      segments: ["2001:db8:b::1", "2001:db8:c::100"]
    - prefix: 100.64.0.0/10
      mode: encaps.red
      segments: ["2001:db8:b::1"]
      source: "2001:db8:1::1"
storage_service:
  udp_port: 9999
  queue_depth: 3
  objects: [7, "0x2a", "18446744073709551615", 0]
"#;

    /// BASE + SRV6 with `from` replaced by `to` (which must occur).
    fn sr(from: &str, to: &str) -> String {
        let y = format!("{BASE}{SRV6}");
        assert!(y.contains(from), "{from:?} not in BASE + SRV6");
        y.replacen(from, to, 1)
    }

    /// BASE + `srv6:` with only `local_sids: [<sid>]` (flow mapping body).
    fn one_sid(body: &str) -> String {
        format!("{BASE}srv6:\n  local_sids:\n    - {{{body}}}\n")
    }

    /// BASE + `srv6:` with only `steering: [<policy>]` (flow mapping body).
    fn one_policy(body: &str) -> String {
        format!("{BASE}srv6:\n  steering:\n    - {{{body}}}\n")
    }

    fn v6(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    #[test]
    fn srv6_and_storage_defaults() {
        for c in [ok(BASE), Config::demo()] {
            assert_eq!(c.srv6, Srv6::default());
            assert_eq!(
                c.srv6,
                Srv6 {
                    encap_source: None,
                    trusted_ports: None,
                    local_sids: vec![],
                    steering: vec![]
                }
            );
            assert!(c.srv6.trusts(0) && c.srv6.trusts(1));
            assert_eq!(
                c.storage_service,
                StorageService {
                    udp_port: 7878,
                    queue_depth: 0,
                    objects: vec![]
                }
            );
            assert_eq!(c.storage_service, StorageService::default());
        }
        // empty sections are the defaults too
        let c = ok(&format!("{BASE}srv6: {{}}\nstorage_service: {{}}\n"));
        assert_eq!(c, ok(BASE));
        let c = ok(&format!(
            "{BASE}srv6:\n  encap_source: null\n  trusted_ports: null\n  local_sids: []\n  steering: []\n"
        ));
        assert_eq!(c, ok(BASE));
        // a partial section keeps the other defaults
        let c = ok(&format!("{BASE}storage_service:\n  queue_depth: 5\n"));
        assert_eq!(c.storage_service.udp_port, 7878);
        assert_eq!(c.storage_service.queue_depth, 5);
        // steering mode defaults to encaps; optional SID fields to none
        let c = ok(&format!("{BASE}{SRV6}"));
        assert_eq!(c.srv6.steering[0].mode, EncapMode::Encaps);
        assert_eq!(c.srv6.local_sids[2].flavors, Flavors::default());
    }

    #[test]
    fn srv6_effective_values() {
        let c = ok(&format!("{BASE}{SRV6}"));
        let s = &c.srv6;
        assert_eq!(s.encap_source, Some(v6("2001:db8:2::1")));
        assert_eq!(s.trusted_ports, Some(vec![1, 0]));
        assert!(s.trusts(0) && s.trusts(1) && !s.trusts(2));
        assert_eq!(
            s.local_sids[0],
            LocalSid {
                sid: v6("2001:db8:a::1"),
                behavior: SidBehavior::End,
                flavors: Flavors {
                    psp: true,
                    usd: true
                },
                next_hop: None,
                port: None,
                policy: None,
                threshold: None
            }
        );
        assert_eq!(
            s.local_sids[1],
            LocalSid {
                sid: v6("2001:db8:a::2"),
                behavior: SidBehavior::EndX,
                flavors: Flavors {
                    psp: false,
                    usd: true
                },
                next_hop: Some(v6("2001:db8:2::2")),
                port: Some(1),
                policy: None,
                threshold: None
            }
        );
        assert_eq!(s.local_sids[2].behavior, SidBehavior::EndDt6);
        assert_eq!(
            (
                s.local_sids[3].behavior,
                s.local_sids[3].next_hop,
                s.local_sids[3].port
            ),
            (SidBehavior::EndDx6, Some(v6("fe80::2")), Some(0))
        );
        assert_eq!(
            (
                s.local_sids[4].behavior,
                s.local_sids[4].policy,
                s.local_sids[4].threshold
            ),
            (SidBehavior::Storage, Some(StoragePolicy::SrC), Some(8))
        );
        assert_eq!(
            (s.local_sids[5].policy, s.local_sids[5].threshold),
            (Some(StoragePolicy::HoldsObject), None)
        );
        assert_eq!(
            s.local_sid(v6("2001:db8:a::3")).map(|l| l.behavior),
            Some(SidBehavior::EndDt6)
        );
        assert!(s.local_sid(v6("2001:db8:a::9")).is_none());
        assert_eq!(
            s.steering,
            vec![
                SteeringPolicy {
                    prefix: "2001:db8:77::/64".parse().unwrap(),
                    mode: EncapMode::Encaps,
                    segments: vec![v6("2001:db8:b::1"), v6("2001:db8:c::100")],
                    source: None
                },
                SteeringPolicy {
                    prefix: "100.64.0.0/10".parse().unwrap(),
                    mode: EncapMode::EncapsRed,
                    segments: vec![v6("2001:db8:b::1")],
                    source: Some(v6("2001:db8:1::1"))
                }
            ]
        );
        assert_eq!(
            c.storage_service,
            StorageService {
                udp_port: 9999,
                queue_depth: 3,
                objects: vec![7, 42, u64::MAX, 0]
            }
        );
        assert!(c.storage_service.holds(42) && !c.storage_service.holds(8));
        // the names used in the file
        assert_eq!(
            [
                SidBehavior::End,
                SidBehavior::EndX,
                SidBehavior::EndDt6,
                SidBehavior::EndDx6,
                SidBehavior::Storage
            ]
            .map(|b| b.to_string()),
            ["end", "end.x", "end.dt6", "end.dx6", "storage"]
        );
        assert_eq!(
            [
                StoragePolicy::Always,
                StoragePolicy::NeverButLast,
                StoragePolicy::SrC,
                StoragePolicy::HoldsObject
            ]
            .map(|p| p.to_string()),
            ["always", "never-but-last", "sr-c", "holds-object"]
        );
        assert_eq!(EncapMode::EncapsRed.to_string(), "encaps.red");
        assert_eq!(EncapMode::Encaps.as_str(), "encaps");
    }

    #[test]
    fn srv6_to_yaml_round_trips() {
        let c = ok(&format!("{BASE}{SRV6}"));
        let y = c.to_yaml();
        assert_eq!(ok(&y), c, "{y}");
        // ports by name, flavors as a list, every field printed
        let v: serde_yaml_ng::Value = serde_yaml_ng::from_str(&y).unwrap();
        let s = &v["srv6"];
        assert_eq!(
            s["trusted_ports"],
            serde_yaml_ng::from_str::<serde_yaml_ng::Value>("[outside, inside]").unwrap()
        );
        assert_eq!(s["local_sids"][1]["port"].as_str(), Some("outside"));
        assert_eq!(s["local_sids"][1]["behavior"].as_str(), Some("end.x"));
        assert_eq!(
            s["local_sids"][0]["flavors"],
            serde_yaml_ng::from_str::<serde_yaml_ng::Value>("[psp, usd]").unwrap()
        );
        assert!(s["local_sids"][2]["next_hop"].is_null());
        assert_eq!(s["local_sids"][4]["policy"].as_str(), Some("sr-c"));
        assert_eq!(s["steering"][1]["mode"].as_str(), Some("encaps.red"));
        assert_eq!(
            s["steering"][0]["prefix"].as_str(),
            Some("2001:db8:77::/64")
        );
        assert_eq!(v["storage_service"]["objects"][2].as_u64(), Some(u64::MAX));
        // the defaults print and parse back too
        let d = ok(BASE).to_yaml();
        assert!(d.contains("srv6:") && d.contains("storage_service:"), "{d}");
        assert!(d.contains("udp_port: 7878"), "{d}");
    }

    /// The commented-out `srv6:`/`storage_service:` example of the demo is
    /// valid once uncommented (and, commented, changes nothing).
    #[test]
    fn demo_srv6_example_is_valid() {
        let mut out = String::new();
        let mut in_block = false;
        let mut uncommented = 0;
        for line in EMBEDDED_DEMO.lines() {
            let body = line.strip_prefix('#');
            let starts =
                body.is_some_and(|b| b.starts_with("srv6:") || b.starts_with("storage_service:"));
            in_block = starts || (in_block && body.is_some_and(|b| b.starts_with("  ")));
            if in_block {
                out.push_str(body.unwrap());
                uncommented += 1;
            } else {
                out.push_str(line);
            }
            out.push('\n');
        }
        assert!(
            uncommented > 10,
            "no srv6 example found in configs/demo.yaml"
        );
        let c = ok(&out);
        assert!(!c.srv6.local_sids.is_empty() && !c.srv6.steering.is_empty());
        assert_eq!(
            Config {
                srv6: Srv6::default(),
                storage_service: StorageService::default(),
                ..c
            },
            Config::demo()
        );
    }

    #[test]
    fn srv6_parse_errors() {
        let e = err(&sr("behavior: end.dt6", "behavior: end.t"));
        assert!(
            e.starts_with("srv6.local_sids[2].behavior: unknown variant `end.t`, expected one of `end`, `end.x`, `end.dt6`, `end.dx6`, `storage`"),
            "{e}"
        );
        let e = err(&sr("flavors: [usd]", "flavors: [usp]"));
        assert!(
            e.starts_with(
                "srv6.local_sids[1].flavors[0]: unknown variant `usp`, expected `psp` or `usd`"
            ),
            "{e}"
        );
        let e = err(&sr("policy: sr-c", "policy: src"));
        assert!(
            e.starts_with("srv6.local_sids[4].policy: unknown variant `src`"),
            "{e}"
        );
        let e = err(&sr("mode: encaps.red", "mode: encap"));
        assert!(
            e.starts_with("srv6.steering[1].mode: unknown variant `encap`"),
            "{e}"
        );
        let e = err(&one_sid("sid: \"2001:db8:a::1\""));
        assert!(
            e.starts_with("srv6.local_sids[0]: missing field `behavior`"),
            "{e}"
        );
        let e = err(&one_sid("behavior: end"));
        assert!(
            e.starts_with("srv6.local_sids[0]: missing field `sid`"),
            "{e}"
        );
        let e = err(&one_policy("prefix: \"2001:db8:77::/64\""));
        assert!(
            e.starts_with("srv6.steering[0]: missing field `segments`"),
            "{e}"
        );
        let e = err(&sr(
            "    behavior: end.dt6\n",
            "    behavior: end.dt6\n      vrf: 1\n",
        ));
        assert!(
            e.starts_with("srv6.local_sids[2].vrf: unknown field `vrf`"),
            "{e}"
        );
        let e = err(&format!("{BASE}srv6:\n  sids: []\n"));
        assert!(e.starts_with("srv6.sids: unknown field `sids`"), "{e}");
        let e = err(&format!("{BASE}storage_service:\n  port: 1\n"));
        assert!(
            e.starts_with("storage_service.port: unknown field `port`"),
            "{e}"
        );
        let e = err(&sr("threshold: 8", "threshold: many"));
        assert!(
            e.starts_with("srv6.local_sids[4].threshold: invalid type"),
            "{e}"
        );
        let e = err(&sr("objects: [7,", "objects: [1.5,"));
        assert!(
            e.starts_with("storage_service.objects[0]: invalid type: floating point"),
            "{e}"
        );
    }

    #[test]
    fn srv6_encap_source() {
        assert_err(
            &sr(
                "encap_source: \"2001:db8:2::1\"",
                "encap_source: \"2001:db8:2::zz\"",
            ),
            "srv6.encap_source: 2001:db8:2::zz is not an IPv6 address",
        );
        assert_err(
            &sr(
                "encap_source: \"2001:db8:2::1\"",
                "encap_source: 198.51.100.1",
            ),
            "srv6.encap_source: 198.51.100.1 is not an IPv6 address",
        );
        assert_err(
            &sr(
                "encap_source: \"2001:db8:2::1\"",
                "encap_source: \"2001:db8:2::7\"",
            ),
            "srv6.encap_source: 2001:db8:2::7 is not an address of this node (one of ports[].ipv6)",
        );
        // a local SID is not a port address
        assert_err(
            &sr(
                "encap_source: \"2001:db8:2::1\"",
                "encap_source: \"2001:db8:a::1\"",
            ),
            "srv6.encap_source: 2001:db8:a::1 is not an address of this node (one of ports[].ipv6)",
        );
        assert_eq!(
            ok(&sr(
                "encap_source: \"2001:db8:2::1\"",
                "encap_source: \"2001:db8:1::1\""
            ))
            .srv6
            .encap_source,
            Some(v6("2001:db8:1::1"))
        );
    }

    #[test]
    fn srv6_trusted_ports() {
        assert_err(
            &sr(
                "trusted_ports: [outside, inside]",
                "trusted_ports: [outside, quux]",
            ),
            "srv6.trusted_ports[1]: no port named \"quux\" (ports: inside, outside)",
        );
        assert_err(
            &sr("trusted_ports: [outside, inside]", "trusted_ports: [quux]"),
            "srv6.trusted_ports[0]: no port named \"quux\" (ports: inside, outside)",
        );
        assert_err(
            &sr(
                "trusted_ports: [outside, inside]",
                "trusted_ports: [inside, outside, inside]",
            ),
            "srv6.trusted_ports[2]: duplicate port inside (also srv6.trusted_ports[0])",
        );
        assert_err(
            &sr("trusted_ports: [outside, inside]", "trusted_ports: []"),
            "srv6.trusted_ports: must name at least one port (null: every port is trusted)",
        );
        let c = ok(&sr(
            "trusted_ports: [outside, inside]",
            "trusted_ports: [inside]",
        ));
        assert_eq!(c.srv6.trusted_ports, Some(vec![0]));
        assert!(c.srv6.trusts(0) && !c.srv6.trusts(1));
        let c = ok(&sr(
            "trusted_ports: [outside, inside]",
            "trusted_ports: null",
        ));
        assert_eq!(c.srv6.trusted_ports, None);
    }

    #[test]
    fn local_sid_address() {
        assert_err(
            &sr("sid: \"2001:db8:a::3\"", "sid: \"2001:db8:a::g\""),
            "srv6.local_sids[2].sid: 2001:db8:a::g is not an IPv6 address",
        );
        assert_err(
            &sr("sid: \"2001:db8:a::3\"", "sid: 192.0.2.9"),
            "srv6.local_sids[2].sid: 192.0.2.9 is not an IPv6 address",
        );
        assert_err(
            &sr("sid: \"2001:db8:a::3\"", "sid: \"ff02::1\""),
            "srv6.local_sids[2].sid: ff02::1 is a multicast address; a SID must be a unicast address",
        );
        assert_err(
            &sr("sid: \"2001:db8:a::3\"", "sid: \"::\""),
            "srv6.local_sids[2].sid: :: is the unspecified address; a SID must be a unicast address",
        );
        assert_err(
            &sr("sid: \"2001:db8:a::3\"", "sid: \"::1\""),
            "srv6.local_sids[2].sid: ::1 is the loopback address; a SID must be a unicast address",
        );
        assert_err(
            &sr("sid: \"2001:db8:a::3\"", "sid: \"fe80::1\""),
            "srv6.local_sids[2].sid: fe80::1 is link-local; a SID must be a global address",
        );
        assert_err(
            &sr("sid: \"2001:db8:a::2\"", "sid: \"2001:db8:1::1\""),
            "srv6.local_sids[1].sid: 2001:db8:1::1 is an address of port inside (ports[0].ipv6[0]); a SID must be an address of its own",
        );
        assert_err(
            &sr("sid: \"2001:db8:a::6\"", "sid: \"2001:db8:a::1\""),
            "srv6.local_sids[5].sid: duplicate SID 2001:db8:a::1 (also srv6.local_sids[0])",
        );
        // the same address in another notation is the same SID
        assert_err(
            &sr(
                "sid: \"2001:db8:a::2\"",
                "sid: \"2001:0db8:000a:0:0:0:0:1\"",
            ),
            "srv6.local_sids[1].sid: duplicate SID 2001:db8:a::1 (also srv6.local_sids[0])",
        );
        // on a connected subnet is fine (a SID is a /128 of its own)
        ok(&sr("sid: \"2001:db8:a::3\"", "sid: \"2001:db8:1::3\""));
    }

    #[test]
    fn local_sid_flavors() {
        assert_err(
            &sr("behavior: end.dt6", "behavior: end.dt6\n      flavors: [usd]"),
            "srv6.local_sids[2].flavors[0]: usd is not allowed for behavior end.dt6 (only end and end.x take flavors)",
        );
        assert_err(
            &sr("next_hop: \"fe80::2\"", "next_hop: \"fe80::2\"\n      flavors: [psp]"),
            "srv6.local_sids[3].flavors[0]: psp is not allowed for behavior end.dx6 (only end and end.x take flavors)",
        );
        assert_err(
            &sr("policy: holds-object", "policy: holds-object\n      flavors: [psp]"),
            "srv6.local_sids[5].flavors[0]: psp is not allowed for behavior storage (only end and end.x take flavors)",
        );
        assert_err(
            &sr("flavors: [psp, usd]", "flavors: [psp, usd, psp]"),
            "srv6.local_sids[0].flavors[2]: duplicate flavor psp",
        );
        assert_err(
            &sr("flavors: [usd]", "flavors: [usd, usd]"),
            "srv6.local_sids[1].flavors[1]: duplicate flavor usd",
        );
        let c = ok(&sr("flavors: [psp, usd]", "flavors: [usd]"));
        assert_eq!(
            c.srv6.local_sids[0].flavors,
            Flavors {
                psp: false,
                usd: true
            }
        );
        let c = ok(&sr("flavors: [psp, usd]", "flavors: []"));
        assert_eq!(c.srv6.local_sids[0].flavors, Flavors::default());
        assert_eq!(
            Flavors {
                psp: true,
                usd: true
            }
            .names(),
            ["psp", "usd"]
        );
    }

    #[test]
    fn local_sid_adjacency_presence() {
        assert_err(
            &one_sid("sid: \"2001:db8:a::1\", behavior: end.x, port: outside"),
            "srv6.local_sids[0].next_hop: required for behavior end.x",
        );
        assert_err(
            &one_sid("sid: \"2001:db8:a::1\", behavior: end.dx6, next_hop: null, port: outside"),
            "srv6.local_sids[0].next_hop: required for behavior end.dx6",
        );
        assert_err(
            &one_sid("sid: \"2001:db8:a::1\", behavior: end.x, next_hop: \"2001:db8:2::2\""),
            "srv6.local_sids[0].port: required for behavior end.x",
        );
        assert_err(
            &one_sid("sid: \"2001:db8:a::1\", behavior: end.dx6, next_hop: \"2001:db8:2::2\""),
            "srv6.local_sids[0].port: required for behavior end.dx6",
        );
        for b in ["end", "end.dt6"] {
            assert_err(
                &one_sid(&format!("sid: \"2001:db8:a::1\", behavior: {b}, next_hop: \"2001:db8:2::2\", port: outside")),
                &format!("srv6.local_sids[0].next_hop: not allowed for behavior {b} (only end.x and end.dx6 have a next_hop)"),
            );
            assert_err(
                &one_sid(&format!("sid: \"2001:db8:a::1\", behavior: {b}, port: outside")),
                &format!("srv6.local_sids[0].port: not allowed for behavior {b} (only end.x and end.dx6 have a port)"),
            );
        }
        assert_err(
            &one_sid("sid: \"2001:db8:a::1\", behavior: storage, policy: always, port: outside"),
            "srv6.local_sids[0].port: not allowed for behavior storage (only end.x and end.dx6 have a port)",
        );
        // explicit nulls are the same as absent
        ok(&one_sid("sid: \"2001:db8:a::1\", behavior: end, next_hop: null, port: null, policy: null, threshold: null"));
    }

    #[test]
    fn local_sid_adjacency_values() {
        assert_err(
            &sr(
                "next_hop: \"2001:db8:2::2\"",
                "next_hop: \"2001:db8:2::zz\"",
            ),
            "srv6.local_sids[1].next_hop: 2001:db8:2::zz is not an IPv6 address",
        );
        assert_err(
            &sr("next_hop: \"2001:db8:2::2\"", "next_hop: 198.51.100.2"),
            "srv6.local_sids[1].next_hop: 198.51.100.2 is not an IPv6 address",
        );
        assert_err(
            &sr("next_hop: \"2001:db8:2::2\"", "next_hop: \"ff02::2\""),
            "srv6.local_sids[1].next_hop: next hop ff02::2 is a multicast address",
        );
        assert_err(
            &sr("next_hop: \"2001:db8:2::2\"", "next_hop: \"2001:db8:2::1\""),
            "srv6.local_sids[1].next_hop: next hop 2001:db8:2::1 is an address of this node (ports[1].ipv6[0])",
        );
        assert_err(
            &sr("next_hop: \"2001:db8:2::2\"", "next_hop: \"2001:db8:1::2\""),
            "srv6.local_sids[1].next_hop: next hop 2001:db8:1::2 is not on a subnet of port outside",
        );
        assert_err(
            &sr(
                "next_hop: \"2001:db8:2::2\"\n      port: outside",
                "next_hop: \"2001:db8:2::2\"\n      port: inside",
            ),
            "srv6.local_sids[1].next_hop: next hop 2001:db8:2::2 is not on a subnet of port inside",
        );
        assert_err(
            &sr(
                "next_hop: \"2001:db8:2::2\"\n      port: outside",
                "next_hop: \"2001:db8:2::2\"\n      port: outsid",
            ),
            "srv6.local_sids[1].port: no port named \"outsid\" (ports: inside, outside)",
        );
        // link-local next hops are on every port
        let c = ok(&sr("next_hop: \"2001:db8:2::2\"", "next_hop: \"fe80::9\""));
        assert_eq!(c.srv6.local_sids[1].next_hop, Some(v6("fe80::9")));
        let y = "ports:\n  - {name: small, device: net_null0, mtu: 1000, ipv4: [\"192.0.2.1/24\"]}\n\
                 srv6:\n  local_sids:\n    - {sid: \"2001:db8:a::1\", behavior: end.x, next_hop: \"fe80::1\", port: small}\n";
        assert_err(
            y,
            "srv6.local_sids[0].port: port small has mtu 1000, too small for IPv6 (>= 1280)",
        );
    }

    #[test]
    fn local_sid_storage_policy() {
        assert_err(
            &one_sid("sid: \"2001:db8:a::1\", behavior: storage"),
            "srv6.local_sids[0].policy: required for behavior storage",
        );
        assert_err(
            &one_sid("sid: \"2001:db8:a::1\", behavior: end.dt6, policy: always"),
            "srv6.local_sids[0].policy: not allowed for behavior end.dt6 (only storage has a policy)",
        );
        assert_err(
            &one_sid("sid: \"2001:db8:a::1\", behavior: storage, policy: sr-c"),
            "srv6.local_sids[0].threshold: required for policy sr-c",
        );
        assert_err(
            &one_sid("sid: \"2001:db8:a::1\", behavior: storage, policy: sr-c, threshold: 0"),
            "srv6.local_sids[0].threshold: must be 1..=1000000",
        );
        assert_err(
            &one_sid("sid: \"2001:db8:a::1\", behavior: storage, policy: sr-c, threshold: 1000001"),
            "srv6.local_sids[0].threshold: must be 1..=1000000",
        );
        for p in ["always", "never-but-last", "holds-object"] {
            assert_err(
                &one_sid(&format!("sid: \"2001:db8:a::1\", behavior: storage, policy: {p}, threshold: 5")),
                &format!("srv6.local_sids[0].threshold: not allowed for policy {p} (only sr-c has a threshold)"),
            );
            let c = ok(&one_sid(&format!(
                "sid: \"2001:db8:a::1\", behavior: storage, policy: {p}"
            )));
            assert_eq!(c.srv6.local_sids[0].policy.map(|p| p.as_str()), Some(p));
        }
        assert_err(
            &one_sid("sid: \"2001:db8:a::1\", behavior: end, threshold: 5"),
            "srv6.local_sids[0].threshold: not allowed for behavior end (only storage with policy sr-c has a threshold)",
        );
        let c = ok(&one_sid(
            "sid: \"2001:db8:a::1\", behavior: storage, policy: sr-c, threshold: 1000000",
        ));
        assert_eq!(c.srv6.local_sids[0].threshold, Some(1_000_000));
    }

    #[test]
    fn local_sid_count_limit() {
        let mut y = format!("{BASE}srv6:\n  local_sids:\n");
        for _ in 0..=1024 {
            y.push_str("    - {sid: \"2001:db8:a::1\", behavior: end}\n");
        }
        // 1025 entries: the count check fires before the per-SID checks
        assert_err(&y, "srv6.local_sids: must have 0..=1024 entries, has 1025");
    }

    #[test]
    fn steering_prefix() {
        assert_err(
            &sr("prefix: \"2001:db8:77::/64\"", "prefix: \"2001:db8:77::1/64\""),
            "srv6.steering[0].prefix: 2001:db8:77::1/64 has host bits set (the network is 2001:db8:77::/64)",
        );
        assert_err(
            &sr("prefix: 100.64.0.0/10", "prefix: 100.64.0.0/33"),
            "srv6.steering[1].prefix: prefix length 33 is out of range 0..=32",
        );
        assert_err(
            &sr("prefix: 100.64.0.0/10", "prefix: nonsense/8"),
            "srv6.steering[1].prefix: nonsense is not an IPv4 address",
        );
        assert_err(
            &sr("prefix: 100.64.0.0/10", "prefix: \"2001:db8:77::/64\""),
            "srv6.steering[1].prefix: duplicate prefix 2001:db8:77::/64 (also srv6.steering[0])",
        );
        assert_err(
            &sr("prefix: 100.64.0.0/10", "prefix: 203.0.113.0/24"),
            "srv6.steering[1].prefix: same prefix as routes[0] (203.0.113.0/24); a destination is either steered or routed",
        );
        assert_err(
            &sr("prefix: \"2001:db8:77::/64\"", "prefix: \"2001:db8:99::/48\""),
            "srv6.steering[0].prefix: same prefix as routes[1] (2001:db8:99::/48); a destination is either steered or routed",
        );
        assert_err(
            &sr("prefix: \"2001:db8:77::/64\"", "prefix: \"2001:db8:1::/64\""),
            "srv6.steering[0].prefix: 2001:db8:1::/64 is the connected subnet of port inside (ports[0].ipv6[0]); it cannot be steered",
        );
        // more or less specific than a route is fine, and so is a default
        ok(&sr("prefix: 100.64.0.0/10", "prefix: 203.0.113.0/25"));
        ok(&sr(
            "prefix: \"2001:db8:77::/64\"",
            "prefix: \"2001:db8:99::/64\"",
        ));
        ok(&sr("prefix: 100.64.0.0/10", "prefix: 0.0.0.0/0"));
        ok(&sr("prefix: \"2001:db8:77::/64\"", "prefix: \"::/0\""));
    }

    #[test]
    fn steering_segments() {
        assert_err(
            &sr("segments: [\"2001:db8:b::1\"]", "segments: []"),
            "srv6.steering[1].segments: must have 1..=16 segments, has 0",
        );
        let seventeen: Vec<String> = (1..=17).map(|i| format!("\"2001:db8:b::{i:x}\"")).collect();
        assert_err(
            &sr(
                "segments: [\"2001:db8:b::1\"]",
                &format!("segments: [{}]", seventeen.join(", ")),
            ),
            "srv6.steering[1].segments: must have 1..=16 segments, has 17",
        );
        let sixteen = &seventeen[..16];
        let c = ok(&sr(
            "segments: [\"2001:db8:b::1\"]",
            &format!("segments: [{}]", sixteen.join(", ")),
        ));
        assert_eq!(c.srv6.steering[1].segments.len(), 16);
        assert_eq!(c.srv6.steering[1].segments[15], v6("2001:db8:b::10"));
        assert_err(
            &sr("\"2001:db8:c::100\"", "\"ff02::1\""),
            "srv6.steering[0].segments[1]: ff02::1 is not a unicast address (it is a multicast address)",
        );
        assert_err(
            &sr("\"2001:db8:c::100\"", "\"::\""),
            "srv6.steering[0].segments[1]: :: is not a unicast address (it is the unspecified address)",
        );
        assert_err(
            &sr("\"2001:db8:c::100\"", "\"fe80::1\""),
            "srv6.steering[0].segments[1]: fe80::1 is link-local; segments must be global addresses",
        );
        assert_err(
            &sr("\"2001:db8:c::100\"", "\"2001:db8:c::zz\""),
            "srv6.steering[0].segments[1]: 2001:db8:c::zz is not an IPv6 address",
        );
        assert_err(
            &sr("\"2001:db8:c::100\"", "\"192.0.2.7\""),
            "srv6.steering[0].segments[1]: 192.0.2.7 is not an IPv6 address",
        );
    }

    #[test]
    fn steering_source() {
        assert_err(
            &sr("source: \"2001:db8:1::1\"", "source: \"2001:db8:1::2\""),
            "srv6.steering[1].source: 2001:db8:1::2 is not an address of this node (one of ports[].ipv6)",
        );
        assert_err(
            &sr("source: \"2001:db8:1::1\"", "source: 192.0.2.1"),
            "srv6.steering[1].source: 192.0.2.1 is not an IPv6 address",
        );
        let c = ok(&sr("source: \"2001:db8:1::1\"", "source: null"));
        assert_eq!(c.srv6.steering[1].source, None);
    }

    #[test]
    fn steering_count_limit() {
        let mut y = format!("{BASE}srv6:\n  steering:\n");
        for _ in 0..=1024 {
            y.push_str("    - {prefix: 100.64.0.0/10, segments: [\"2001:db8:b::1\"]}\n");
        }
        assert_err(&y, "srv6.steering: must have 0..=1024 entries, has 1025");
    }

    #[test]
    fn storage_service_ranges() {
        assert_err(
            &format!("{BASE}storage_service:\n  udp_port: 0\n"),
            "storage_service.udp_port: must be 1..=65535",
        );
        assert_err(
            &format!("{BASE}storage_service:\n  udp_port: 65536\n"),
            "storage_service.udp_port: must be 1..=65535",
        );
        assert_err(
            &format!("{BASE}storage_service:\n  queue_depth: 1000001\n"),
            "storage_service.queue_depth: must be 0..=1000000",
        );
        assert_err(
            &format!("{BASE}storage_service:\n  queue_depth: -1\n"),
            "storage_service.queue_depth: must be 0..=1000000",
        );
        let c = ok(&format!(
            "{BASE}storage_service:\n  udp_port: 65535\n  queue_depth: 1000000\n"
        ));
        assert_eq!(
            (c.storage_service.udp_port, c.storage_service.queue_depth),
            (65535, 1_000_000)
        );
    }

    #[test]
    fn storage_service_objects() {
        let objs = |list: &str| format!("{BASE}storage_service:\n  objects: {list}\n");
        let c = ok(&objs(
            "[0, \"1\", \"0x10\", \"0XfF\", 0x11, \"99\", 18446744073709551615]",
        ));
        assert_eq!(
            c.storage_service.objects,
            vec![0, 1, 16, 255, 17, 99, u64::MAX]
        );
        assert_err(
            &objs("[1, 5, 9, 7, \"0x7\"]"),
            "storage_service.objects[4]: duplicate object id 7 (also storage_service.objects[3])",
        );
        assert_err(
            &objs("[1, 5, 7, \"7\"]"),
            "storage_service.objects[3]: duplicate object id 7 (also storage_service.objects[2])",
        );
        assert_err(
            &objs("[1, -5]"),
            "storage_service.objects[1]: -5 is out of range 0..=18446744073709551615 (object ids are u64)",
        );
        assert_err(
            &objs("[18446744073709551616]"),
            "storage_service.objects[0]: 18446744073709551616 is out of range 0..=18446744073709551615 (object ids are u64)",
        );
        for bad in [
            "abc",
            "0x",
            "0x1g",
            "+5",
            " 5",
            "-5",
            "18446744073709551616",
            "0x10000000000000000",
            "",
        ] {
            assert_err(
                &objs(&format!("[{bad:?}]")),
                &format!("storage_service.objects[0]: {bad:?} is not an object id (a decimal or 0x-hex number in 0..=18446744073709551615)"),
            );
        }
        let many: Vec<String> = (0..4097).map(|i| i.to_string()).collect();
        assert_err(
            &objs(&format!("[{}]", many.join(", "))),
            "storage_service.objects: must have 0..=4096 entries, has 4097",
        );
        assert_eq!(
            ok(&objs(&format!("[{}]", many[..4096].join(", "))))
                .storage_service
                .objects
                .len(),
            4096
        );
    }

    const NAT: &str = r#"
lcores:
  main: { lcore: 0, cpu: 0 }
  workers: [{ lcore: 1, cpu: 1 }]
  mapper: { lcore: 2, cpu: 0 }
nat:
  inside: [inside]
  outside: [outside]
  pool: ["100.64.100.0/30", "100.64.100.9"]
  ports_per_block: 256
  mappings_max: 4096
  sessions_max: 8192
  filtering: address-dependent
  udp_timeout_ms: 120000
"#;

    fn with_nat(from: &str, to: &str) -> String {
        let nat = if from.is_empty() { NAT.to_string() } else {
            assert!(NAT.contains(from), "{from}");
            NAT.replace(from, to)
        };
        format!("{BASE}{nat}")
    }

    #[test]
    fn nat_section_parses_and_round_trips() {
        let c = ok(&with_nat("", ""));
        let n = c.nat.as_ref().unwrap();
        assert_eq!(n.inside, [0]);
        assert_eq!(n.outside, [1]);
        assert_eq!(n.table.pool.len(), 5, "a /30 and one address");
        assert_eq!(n.table.pool[4], Ipv4Addr::new(100, 64, 100, 9));
        assert_eq!(n.table.ports_per_block, 256);
        assert_eq!(n.table.filtering, dataplane::nat::Filtering::AddressDependent);
        assert_eq!(n.table.udp_timeout_ms, 120_000);
        assert_eq!(n.table.icmp_timeout_ms, 60_000, "default");
        assert_eq!(n.worker_cache_entries, 65536);
        assert_eq!(c.lcores.mapper, Some(Lcore { lcore: 2, cpu: 0 }));
        assert!(c.eal_args("x").iter().any(|a| a == "--lcores=0@0,1@1,2@0"));
        let again = ok(&c.to_yaml());
        assert_eq!(again, c);
        assert!(ok(BASE).nat.is_none(), "off by default");
    }

    #[test]
    fn nat_errors_name_the_field() {
        let cases: &[(&str, &str, &str)] = &[
            ("  mapper: { lcore: 2, cpu: 0 }\n", "", "lcores.mapper: required with nat"),
            ("mapper: { lcore: 2, cpu: 0 }", "mapper: { lcore: 1, cpu: 0 }", "lcores.mapper.lcore: lcore 1 is already used"),
            ("inside: [inside]", "inside: []", "nat.inside: must name at least one port"),
            ("inside: [inside]", "inside: [nope]", "nat.inside[0]: no port named \"nope\""),
            ("outside: [outside]", "outside: [inside]", "nat.outside[0]: port inside is also in nat.inside"),
            ("outside: [outside]", "outside: [outside, outside]", "nat.outside[1]: duplicate port outside"),
            ("pool: [\"100.64.100.0/30\", \"100.64.100.9\"]", "pool: []", "nat.pool: at least one"),
            ("\"100.64.100.9\"", "\"100.64.100.2\"", "nat.pool[1]: 100.64.100.2 is already in nat.pool[0]"),
            ("\"100.64.100.9\"", "\"198.51.100.1\"", "nat.pool[1]: 198.51.100.1 is a port address (ports[1].ipv4[0])"),
            ("\"100.64.100.9\"", "\"bogus\"", "nat.pool[1]: \"bogus\" is not an IPv4 address or prefix"),
            ("\"100.64.100.0/30\"", "\"100.64.100.1/30\"", "nat.pool[0]: 100.64.100.1/30 has host bits set"),
            ("\"100.64.100.0/30\"", "\"100.64.0.0/15\"", "nat.pool[0]: /15 is too large"),
            ("ports_per_block: 256", "ports_per_block: 100", "nat.ports_per_block: 100: must be a power of two"),
            ("sessions_max: 8192", "sessions_max: 100", "nat.sessions_max: 100 is below mappings_max"),
            ("udp_timeout_ms: 120000", "udp_timeout_ms: 10", "nat.udp_timeout_ms: 10: must be in 1000..=86400000"),
            ("filtering: address-dependent", "filtering: strict", "nat.filtering: unknown variant"),
            ("udp_timeout_ms: 120000", "udp_timeout_ms: 120000\n  worker_cache_entries: 3000", "nat.worker_cache_entries: 3000 is not a power of two"),
            ("udp_timeout_ms: 120000", "udp_timeout_ms: 120000\n  colour: blue", "nat.colour: unknown field `colour`"),
        ];
        for (from, to, want) in cases {
            let e = err(&with_nat(from, to));
            assert!(e.starts_with(want), "{from} -> {to}: got {e}");
        }
        // A mapper lcore without NAT is refused too.
        let e = err(&BASE.replace("ports:", "lcores:\n  main: { lcore: 0 }\n  workers: [{ lcore: 1 }]\n  mapper: { lcore: 2 }\nports:"));
        assert!(e.starts_with("lcores.mapper: only used with nat"), "{e}");
    }

    #[test]
    fn storage_section() {
        let yaml = format!("{BASE}storage:\n  object_prefix: \"2001:db8:f0:1::/64\"\n  device: ram\n");
        let c = ok(&yaml);
        let st = c.storage.as_ref().unwrap();
        assert_eq!(st.object_prefix.len, 64);
        assert_eq!(st.size_mb, 256);
        assert_eq!(ok(&c.to_yaml()), c);
        let cases: &[(&str, &str)] = &[
            ("object_prefix: \"2001:db8:f0:1::/64\"", "storage.object_prefix: ... must be a /64"),
            ("device: ram", "storage.device: \"disk.img\": an absolute path"),
        ];
        let e = err(&yaml.replace("2001:db8:f0:1::/64", "2001:db8:f0:1::/48"));
        assert!(e.starts_with("storage.object_prefix: 2001:db8:f0:1::/48 must be a /64"), "{e}");
        let e = err(&yaml.replace("2001:db8:f0:1::/64", "2001:db8:f0:1::5/64"));
        assert!(e.contains("host bits"), "{e}");
        let e = err(&yaml.replace("2001:db8:f0:1::/64", "2001:db8:1::/64"));
        assert!(e.starts_with("storage.object_prefix: overlaps ports[0].ipv6[0]"), "{e}");
        let e = err(&yaml.replace("device: ram", "device: disk.img"));
        assert!(e.starts_with(cases[1].1), "{e}");
        let e = err(&format!("{yaml}  size_mb: 1\n"));
        assert!(e.starts_with("storage.size_mb: must be 16..="), "{e}");
        let two = yaml.replace("ports:", "lcores:\n  main: { lcore: 0 }\n  workers: [{ lcore: 1 }, { lcore: 2 }]\nports:");
        let two = two.replace("qpairs=1", "qpairs=2");
        let e = err(&two);
        assert!(e.starts_with("storage.device: 1 device(s) for 2 workers"), "{e}");
        let c2 = ok(&two.replace("device: ram", "device: [ram, /var/tmp/apl-dev1.img]"));
        assert_eq!(c2.storage.as_ref().unwrap().devices, ["ram", "/var/tmp/apl-dev1.img"]);
        assert_eq!(ok(&c2.to_yaml()), c2);
        let e = err(&two.replace("device: ram", "device: [/a.img, /a.img]"));
        assert!(e.starts_with("storage.device[1]: /a.img is also storage.device[0]"), "{e}");
    }
}
