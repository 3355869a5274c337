//! `nat:` — carrier-grade NAT44 (docs/nat.md). The pool, tables, limits
//! and timeouts become the mapping server's [`NatConfig`], which checks
//! them itself ([`NatConfig::validate`]; its field name becomes the path,
//! `nat.<field>`). What it cannot check is done here: the port roles, the
//! pool as written (entry by entry, against the ports' addresses), the
//! workers' caches and rings.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};

use dataplane::nat::frag::FragConfig;
use dataplane::nat::{Filtering, NatConfig};
use serde::{Deserialize, Serialize};

use super::natcluster::{NatCluster, NatClusterYaml};
use super::ports::{own_address, resolve_port_list};
use super::{pow2_range, range, ByName, ConfigError, FileName, Ipv4Cidr, Port, Res};

/// Most public addresses in `nat.pool` (after expanding prefixes).
const MAX_NAT_POOL: usize = 65_536;

/// `nat:` as the file writes it. The table defaults are [`NatConfig`]'s.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct NatYaml {
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
    filtering: ByName<Filtering>,
    udp_timeout_ms: i64,
    tcp_established_timeout_ms: i64,
    tcp_transitory_timeout_ms: i64,
    icmp_timeout_ms: i64,
    worker_cache_entries: i64,
    ring_size: i64,
    random_seed: Option<u64>,
    mapper_idle_backoff: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cluster: Option<NatClusterYaml>,
    fragments: FragmentsYaml,
}

/// `nat.fragments:` as the file writes it (virtual reassembly).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
struct FragmentsYaml {
    datagrams_max: i64,
    held_max: i64,
    timeout_ms: i64,
}

impl Default for FragmentsYaml {
    fn default() -> Self {
        let d = FragConfig::default();
        FragmentsYaml {
            datagrams_max: d.datagrams_max as i64,
            held_max: d.held_max as i64,
            timeout_ms: d.timeout_ms as i64,
        }
    }
}

impl Default for NatYaml {
    fn default() -> Self {
        let d = NatConfig::default();
        NatYaml {
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
            filtering: ByName(d.filtering),
            udp_timeout_ms: d.udp_timeout_ms as i64,
            tcp_established_timeout_ms: d.tcp_established_timeout_ms as i64,
            tcp_transitory_timeout_ms: d.tcp_transitory_timeout_ms as i64,
            icmp_timeout_ms: d.icmp_timeout_ms as i64,
            worker_cache_entries: 65536,
            ring_size: 1024,
            random_seed: None,
            mapper_idle_backoff: None,
            cluster: None,
            fragments: FragmentsYaml::default(),
        }
    }
}

impl FileName for Filtering {
    const VALUES: &'static [Self] =
        &[Filtering::EndpointIndependent, Filtering::AddressDependent, Filtering::AddressAndPortDependent];
    fn file_name(self) -> &'static str {
        match self {
            Filtering::EndpointIndependent => "endpoint-independent",
            Filtering::AddressDependent => "address-dependent",
            Filtering::AddressAndPortDependent => "address-and-port-dependent",
        }
    }
}

/// NAT44 (`nat:`): port roles, the mapping server's tables, the workers'
/// caches and rings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nat {
    /// Inside (subscriber) ports, by index: 1..=16, unique.
    pub inside: Vec<usize>,
    /// Outside (public) ports, by index: 1..=16, unique, none of them inside.
    pub outside: Vec<usize>,
    /// The pool, tables, limits and timeouts (pool expanded to addresses).
    pub table: NatConfig,
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
    /// This appliance as a host of a NAT cluster (docs/nat-ha.md); `None`:
    /// a single-host NAT.
    pub cluster: Option<NatCluster>,
    /// Each worker's virtual reassembly of fragments (`nat.fragments`).
    pub fragments: FragConfig,
}

/// Validates `nat:`; `pipeline_backoff` is `pipeline.idle_backoff.enabled`,
/// the mapping server's back-off unless `mapper_idle_backoff` says (and
/// prints) otherwise.
pub(super) fn validate(r: &mut NatYaml, ports: &[Port], pipeline_backoff: bool) -> Res<Nat> {
    let (inside, outside) = validate_roles(r, ports)?;
    let pool = validate_pool(&r.pool, ports)?;
    let table = table_config(r, pool)?;
    let cluster = match r.cluster.as_mut() {
        Some(c) => Some(super::natcluster::validate(c, &table)?),
        None => None,
    };
    let nat = Nat {
        inside,
        outside,
        table,
        worker_cache_entries: pow2_range("nat.worker_cache_entries", r.worker_cache_entries, 1024, 1 << 24)?,
        ring_size: pow2_range("nat.ring_size", r.ring_size, 64, 65536)?,
        seeded: r.random_seed.is_some(),
        mapper_idle_backoff: r.mapper_idle_backoff.unwrap_or(pipeline_backoff),
        cluster,
        fragments: FragConfig {
            datagrams_max: range("nat.fragments.datagrams_max", r.fragments.datagrams_max, 1, 1 << 20)?,
            held_max: range("nat.fragments.held_max", r.fragments.held_max, 0, 65534)?,
            timeout_ms: range("nat.fragments.timeout_ms", r.fragments.timeout_ms, 100, 60_000)?,
        },
    };
    r.mapper_idle_backoff = Some(nat.mapper_idle_backoff);
    Ok(nat)
}

/// `(inside, outside)`: disjoint lists of ports that have IPv4 addresses.
fn validate_roles(r: &NatYaml, ports: &[Port]) -> Res<(Vec<usize>, Vec<usize>)> {
    let inside = nat_ports("nat.inside", &r.inside, ports)?;
    let outside = nat_ports("nat.outside", &r.outside, ports)?;
    if let Some((i, p)) = outside.iter().enumerate().find(|(_, p)| inside.contains(p)) {
        return Err(ConfigError::invalid(
            format!("nat.outside[{i}]"),
            format!("port {} is also in nat.inside", ports[*p].name),
        ));
    }
    Ok((inside, outside))
}

fn nat_ports(path: &str, names: &[String], ports: &[Port]) -> Res<Vec<usize>> {
    if names.is_empty() {
        return Err(ConfigError::invalid(path, "must name at least one port"));
    }
    resolve_port_list(path, names, ports, |entry, p| {
        if ports[p].ipv4.is_empty() {
            return Err(ConfigError::invalid(
                entry,
                format!("port {} has no IPv4 address (NAT44 routes IPv4 through it)", ports[p].name),
            ));
        }
        Ok(())
    })
}

/// The pool expanded to addresses, entry by entry: each a public address
/// or prefix (/16 to /32), none twice, none a port's address, 65536 at most.
/// (An empty pool is [`NatConfig::validate`]'s to refuse.)
fn validate_pool(entries: &[String], ports: &[Port]) -> Res<Vec<Ipv4Addr>> {
    let mut pool: Vec<Ipv4Addr> = Vec::new();
    let mut seen: HashMap<Ipv4Addr, usize> = HashMap::new();
    for (i, text) in entries.iter().enumerate() {
        let path = format!("nat.pool[{i}]");
        let (base, len) = pool_entry(&path, text)?;
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
    Ok(pool)
}

/// One pool entry: `(first address, prefix length)`.
pub(super) fn pool_entry(path: &str, text: &str) -> Res<(u32, u8)> {
    if !text.contains('/') {
        let a: Ipv4Addr = text
            .parse()
            .map_err(|_| ConfigError::invalid(path, format!("{text:?} is not an IPv4 address or prefix")))?;
        return Ok((u32::from(a), 32));
    }
    let c: Ipv4Cidr = text.parse().map_err(|e: String| ConfigError::invalid(path, e))?;
    if c.len < 16 {
        return Err(ConfigError::invalid(path, format!("/{} is too large: at most a /16 per entry", c.len)));
    }
    if !c.is_network() {
        return Err(ConfigError::invalid(path, format!("{text} has host bits set (write the network)")));
    }
    Ok((u32::from(c.addr), c.len))
}

/// The mapping server's configuration, checked by [`NatConfig::validate`];
/// here only what the file's integers must be to fit its fields.
fn table_config(r: &NatYaml, pool: Vec<Ipv4Addr>) -> Res<NatConfig> {
    let path = |field: &str| format!("nat.{field}");
    let u32_max = i64::from(u32::MAX);
    let d = NatConfig::default();
    let table = NatConfig {
        pool,
        ports_per_block: range(&path("ports_per_block"), r.ports_per_block, 1, 65535)?,
        blocks_per_subscriber_max: range(&path("blocks_per_subscriber_max"), r.blocks_per_subscriber_max, 0, 65535)?,
        subscribers_max: range(&path("subscribers_max"), r.subscribers_max, 0, u32_max)?,
        blocks_max: range(&path("blocks_max"), r.blocks_max, 0, u32_max)?,
        port_quarantine_max: range(&path("port_quarantine_max"), r.port_quarantine_max, 0, u32_max)?,
        reuse_delay_ms: range(&path("reuse_delay_ms"), r.reuse_delay_ms, 0, i64::MAX)?,
        mappings_max: range(&path("mappings_max"), r.mappings_max, 0, u32_max)?,
        sessions_max: range(&path("sessions_max"), r.sessions_max, 0, u32_max)?,
        filtering: r.filtering.0,
        udp_timeout_ms: range(&path("udp_timeout_ms"), r.udp_timeout_ms, 0, i64::MAX)?,
        tcp_established_timeout_ms: range(
            &path("tcp_established_timeout_ms"),
            r.tcp_established_timeout_ms,
            0,
            i64::MAX,
        )?,
        tcp_transitory_timeout_ms: range(&path("tcp_transitory_timeout_ms"), r.tcp_transitory_timeout_ms, 0, i64::MAX)?,
        icmp_timeout_ms: range(&path("icmp_timeout_ms"), r.icmp_timeout_ms, 0, i64::MAX)?,
        random_seed: r.random_seed.unwrap_or(d.random_seed),
        hash_seed: r.random_seed.map_or(d.hash_seed, |s| dataplane::nat::mix64(s ^ d.hash_seed)),
    };
    table.validate().map_err(|e| ConfigError::invalid(path(e.field), e.reason))?;
    Ok(table)
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::super::{Config, Lcore};
    use super::*;

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
        let nat = if from.is_empty() {
            NAT.to_string()
        } else {
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
        assert_eq!(n.table.filtering, Filtering::AddressDependent);
        assert_eq!(n.table.udp_timeout_ms, 120_000);
        assert_eq!(n.table.icmp_timeout_ms, 60_000, "default");
        assert_eq!(n.worker_cache_entries, 65536);
        assert_eq!(n.fragments, FragConfig::default());
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
            (
                "mapper: { lcore: 2, cpu: 0 }",
                "mapper: { lcore: 1, cpu: 0 }",
                "lcores.mapper.lcore: lcore 1 is already used",
            ),
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
            (
                "udp_timeout_ms: 120000",
                "udp_timeout_ms: 120000\n  worker_cache_entries: 3000",
                "nat.worker_cache_entries: 3000 is not a power of two",
            ),
            ("udp_timeout_ms: 120000", "udp_timeout_ms: 120000\n  colour: blue", "nat.colour: unknown field `colour`"),
            (
                "udp_timeout_ms: 120000",
                "udp_timeout_ms: 120000\n  fragments: { held_max: 70000 }",
                "nat.fragments.held_max: must be 0..=65534",
            ),
            (
                "udp_timeout_ms: 120000",
                "udp_timeout_ms: 120000\n  fragments: { timeout_ms: 10 }",
                "nat.fragments.timeout_ms: must be 100..=60000",
            ),
        ];
        for (from, to, want) in cases {
            let e = err(&with_nat(from, to));
            assert!(e.starts_with(want), "{from} -> {to}: got {e}");
        }
        // A mapper lcore without NAT is refused too.
        let e = err(&BASE.replace(
            "ports:",
            "lcores:\n  main: { lcore: 0 }\n  workers: [{ lcore: 1 }]\n  mapper: { lcore: 2 }\nports:",
        ));
        assert!(e.starts_with("lcores.mapper: only used with nat"), "{e}");
    }

    /// What NatConfig refuses keeps its field's path and its own message;
    /// what it cannot see (entries of the pool, types) is named here.
    #[test]
    fn nat_table_checks_are_the_mapping_servers() {
        for (from, to) in [
            ("sessions_max: 8192", "sessions_max: 0"),
            ("ports_per_block: 256", "ports_per_block: 8192"),
            ("udp_timeout_ms: 120000", "udp_timeout_ms: 120000\n  reuse_delay_ms: 3600001"),
            ("udp_timeout_ms: 120000", "udp_timeout_ms: 120000\n  blocks_per_subscriber_max: 300"),
        ] {
            let c = with_nat(from, to);
            let e = Config::from_yaml_str(&c).unwrap_err();
            let mut yaml: serde_yaml_ng::Value = serde_yaml_ng::from_str(&c).unwrap();
            let field = e.path().strip_prefix("nat.").unwrap().to_string();
            // the same values, handed to NatConfig directly, fail on the same field
            let n = &mut yaml["nat"];
            let table = NatConfig {
                pool: vec![Ipv4Addr::new(100, 64, 100, 9)],
                ports_per_block: n["ports_per_block"].as_u64().unwrap() as u16,
                blocks_per_subscriber_max: n["blocks_per_subscriber_max"].as_u64().map_or(4, |v| v as u16),
                mappings_max: n["mappings_max"].as_u64().unwrap() as u32,
                sessions_max: n["sessions_max"].as_u64().unwrap() as u32,
                reuse_delay_ms: n["reuse_delay_ms"].as_u64().unwrap_or(120_000),
                ..NatConfig::default()
            };
            let direct = table.validate().unwrap_err();
            assert_eq!((direct.field, direct.reason), (field.as_str(), e.message()), "{from} -> {to}");
        }
        assert_err(
            &with_nat("ports_per_block: 256", "ports_per_block: 70000"),
            "nat.ports_per_block: must be 1..=65535",
        );
    }
}
