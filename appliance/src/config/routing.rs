//! What forwarding needs besides the ports: `routes:` (static routes, as
//! [`RouteSpec`]s), `neighbors:` (static neighbor entries), `neighbor:` (the
//! ARP/ND table and resolution) and `icmp:` (the errors the node sends).

use std::collections::HashMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::addr::{family, format_mac, non_unicast, parse_network, parse_unicast_mac};
use super::ports::{connected, own_address, resolve_port, IPV6_MIN_MTU};
use super::{count, range, ConfigError, IpCidr, Port, Res, RouteSpec};

/// Most static routes.
const MAX_ROUTES: usize = 65536;
/// Most static neighbor entries.
const MAX_STATIC_NEIGHBORS: usize = 4096;

/// `routes[]` as the file writes it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RouteYaml {
    prefix: String,
    #[serde(default)]
    via: Option<String>,
    port: String,
}

/// `neighbors[]` as the file writes it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NeighborYaml {
    ip: String,
    mac: String,
    port: String,
}

/// `neighbor:` as the file writes it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct NeighborSettingsYaml {
    entries_max: i64,
    pending_packets_max: i64,
    pending_per_neighbor_max: i64,
    resolve_retries: i64,
    resolve_interval_ms: i64,
    reachable_ms: i64,
}

impl Default for NeighborSettingsYaml {
    fn default() -> Self {
        NeighborSettingsYaml {
            entries_max: 4096,
            pending_packets_max: 256,
            pending_per_neighbor_max: 4,
            resolve_retries: 3,
            resolve_interval_ms: 1000,
            reachable_ms: 30000,
        }
    }
}

/// `icmp:` as the file writes it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct IcmpYaml {
    errors_per_s: i64,
    errors_burst: i64,
}

impl Default for IcmpYaml {
    fn default() -> Self {
        IcmpYaml { errors_per_s: 100, errors_burst: 50 }
    }
}

/// A static neighbor entry (`neighbors[]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StaticNeighbor {
    /// The neighbor's address, on a subnet of `port` (or IPv6 link-local).
    pub ip: IpAddr,
    /// Its MAC address (unicast).
    pub mac: [u8; 6],
    /// Index into [`Config::ports`](super::Config::ports).
    pub port: usize,
}

/// Neighbor table (ARP/ND) settings (`neighbor:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Icmp {
    /// Token bucket rate, 0..=1000000 per second; 0: no errors are sent.
    pub errors_per_s: u32,
    /// Token bucket depth, 1..=100000.
    pub errors_burst: u32,
}

/// Validates the routes; prints prefixes and next hops canonically.
pub(super) fn validate_routes(raw: &mut [RouteYaml], ports: &[Port]) -> Res<Vec<RouteSpec>> {
    count("routes", raw.len(), 0, MAX_ROUTES)?;
    let mut seen: HashMap<IpCidr, usize> = HashMap::with_capacity(raw.len());
    let mut routes = Vec::with_capacity(raw.len());
    for (i, r) in raw.iter_mut().enumerate() {
        let (prefix, route) = validate_route(i, r, ports, &seen)?;
        r.prefix = prefix.to_string();
        r.via = route.via.map(|v| v.to_string());
        seen.insert(prefix, i);
        routes.push(route);
    }
    Ok(routes)
}

/// `routes[i]`; `seen` holds the prefixes of the routes before it.
fn validate_route(i: usize, r: &RouteYaml, ports: &[Port], seen: &HashMap<IpCidr, usize>) -> Res<(IpCidr, RouteSpec)> {
    let p = |field: &str| format!("routes[{i}].{field}");
    let prefix = parse_network(&p("prefix"), &r.prefix)?;
    if let Some(j) = seen.get(&prefix) {
        return Err(ConfigError::invalid(p("prefix"), format!("{prefix} is already routed by routes[{j}]")));
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
            format!("port {} has mtu {}, too small for IPv6 (>= {IPV6_MIN_MTU})", pt.name, pt.mtu),
        ));
    }
    let via = match &r.via {
        None if v4 && pt.ipv4.is_empty() => {
            return Err(ConfigError::invalid(
                p("port"),
                format!("port {} has no IPv4 address, so it cannot resolve on-link IPv4 destinations", pt.name),
            ))
        }
        None => None,
        Some(s) => Some(route_via(&p("via"), s, &prefix, pt, ports)?),
    };
    let spec = RouteSpec { prefix: prefix.addr(), len: prefix.prefix_len(), port: port as u16, via };
    Ok((prefix, spec))
}

/// A route's next hop: the prefix's family, unicast, not ours, on the port.
fn route_via(path: &str, s: &str, prefix: &IpCidr, pt: &Port, ports: &[Port]) -> Res<IpAddr> {
    let v4 = prefix.is_ipv4();
    let via: IpAddr =
        s.parse().map_err(|_| ConfigError::invalid(path, format!("{s} is not an {} address", family(v4))))?;
    if via.is_ipv4() != v4 {
        return Err(ConfigError::invalid(
            path,
            format!("next hop {via} is {} but the prefix {prefix} is {}", family(via.is_ipv4()), family(v4)),
        ));
    }
    if let Some(what) = non_unicast(via) {
        return Err(ConfigError::invalid(path, format!("next hop {via} is {what}")));
    }
    if let Some(own) = own_address(via, ports) {
        return Err(ConfigError::invalid(path, format!("next hop {via} is an address of this node ({own})")));
    }
    if !pt.on_link(via) {
        return Err(ConfigError::invalid(path, format!("next hop {via} is not on a subnet of port {}", pt.name)));
    }
    Ok(via)
}

/// Validates the static neighbors; prints addresses canonically.
pub(super) fn validate_neighbors(raw: &mut [NeighborYaml], ports: &[Port]) -> Res<Vec<StaticNeighbor>> {
    count("neighbors", raw.len(), 0, MAX_STATIC_NEIGHBORS)?;
    let mut seen: HashMap<(usize, IpAddr), usize> = HashMap::with_capacity(raw.len());
    let mut out = Vec::with_capacity(raw.len());
    for (i, r) in raw.iter_mut().enumerate() {
        let n = validate_neighbor(i, r, ports)?;
        if let Some(j) = seen.insert((n.port, n.ip), i) {
            return Err(ConfigError::invalid(
                format!("neighbors[{i}].ip"),
                format!("{} on port {} is already neighbors[{j}]", n.ip, ports[n.port].name),
            ));
        }
        r.ip = n.ip.to_string();
        r.mac = format_mac(&n.mac);
        out.push(n);
    }
    Ok(out)
}

fn validate_neighbor(i: usize, r: &NeighborYaml, ports: &[Port]) -> Res<StaticNeighbor> {
    let p = |field: &str| format!("neighbors[{i}].{field}");
    let ip: IpAddr =
        r.ip.parse().map_err(|_| ConfigError::invalid(p("ip"), format!("{} is not an IP address", r.ip)))?;
    if let Some(what) = non_unicast(ip) {
        return Err(ConfigError::invalid(p("ip"), format!("{ip} is {what}")));
    }
    if let Some(own) = own_address(ip, ports) {
        return Err(ConfigError::invalid(p("ip"), format!("{ip} is an address of this node ({own})")));
    }
    let mac = parse_unicast_mac(&p("mac"), &r.mac, "02:00:00:00:00:02")?;
    let port = resolve_port(p("port"), &r.port, ports)?;
    let pt = &ports[port];
    if ip.is_ipv6() && !pt.ipv6_capable() {
        return Err(ConfigError::invalid(
            p("port"),
            format!("port {} has mtu {}, too small for IPv6 (>= {IPV6_MIN_MTU})", pt.name, pt.mtu),
        ));
    }
    if !pt.on_link(ip) {
        return Err(ConfigError::invalid(p("ip"), format!("{ip} is not on a subnet of port {}", pt.name)));
    }
    Ok(StaticNeighbor { ip, mac, port })
}

/// `neighbor:`; the table must hold the `statics` static entries.
pub(super) fn validate_neighbor_settings(r: &NeighborSettingsYaml, statics: usize) -> Res<NeighborCfg> {
    let n = NeighborCfg {
        entries_max: range("neighbor.entries_max", r.entries_max, 16, 1_048_576)?,
        pending_packets_max: range("neighbor.pending_packets_max", r.pending_packets_max, 0, 65536)?,
        pending_per_neighbor_max: range("neighbor.pending_per_neighbor_max", r.pending_per_neighbor_max, 1, 64)?,
        resolve_retries: range("neighbor.resolve_retries", r.resolve_retries, 1, 10)?,
        resolve_interval_ms: range("neighbor.resolve_interval_ms", r.resolve_interval_ms, 10, 60_000)?,
        reachable_ms: range("neighbor.reachable_ms", r.reachable_ms, 1000, 3_600_000)?,
    };
    if statics > n.entries_max as usize {
        return Err(ConfigError::invalid(
            "neighbor.entries_max",
            format!("{} is less than the number of static neighbors ({statics})", n.entries_max),
        ));
    }
    Ok(n)
}

pub(super) fn validate_icmp(r: &IcmpYaml) -> Res<Icmp> {
    Ok(Icmp {
        errors_per_s: range("icmp.errors_per_s", r.errors_per_s, 0, 1_000_000)?,
        errors_burst: range("icmp.errors_burst", r.errors_burst, 1, 100_000)?,
    })
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use std::net::{IpAddr, Ipv4Addr};

    #[test]
    fn base_resolves_ports() {
        let c = ok(BASE);
        assert_eq!(c.routes[0].port, 1);
        assert_eq!((c.routes[0].prefix, c.routes[0].len), (IpAddr::V4(Ipv4Addr::new(203, 0, 113, 0)), 24));
        assert_eq!(c.routes[0].via, Some("198.51.100.254".parse().unwrap()));
        assert_eq!(c.neighbors[0].port, 0);
        assert_eq!(c.port_index("outside"), Some(1));
        assert_eq!(c.port_index("nope"), None);
    }

    #[test]
    fn link_local_next_hop_and_neighbor() {
        let y = edit("via: 2001:db8:2::fe", "via: fe80::1")
            + "  - ip: fe80::2\n    mac: \"02:00:00:00:00:03\"\n    port: inside\n";
        let c = ok(&y);
        assert_eq!(c.routes[1].via, Some("fe80::1".parse().unwrap()));
    }

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
            &edit("    via: 198.51.100.254\n    port: outside", "    via: 198.51.100.254\n    port: outsid"),
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
            &edit("via: 198.51.100.254\n    port: outside", "via: 198.51.100.254\n    port: inside"),
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
        let y = "ports:\n  - {name: small, device: net_null0, mtu: 1000, ipv4: [\"192.0.2.1/24\"]}\n\
                 routes:\n  - {prefix: \"2001:db8:5::/48\", via: \"fe80::1\", port: small}\n";
        assert_err(y, "routes[0].port: port small has mtu 1000, too small for IPv6 (>= 1280)");
    }

    #[test]
    fn route_count_limit() {
        let mut y = String::from("ports:\n  - {name: p, device: net_null0, ipv4: [\"10.0.0.1/8\"]}\nroutes:\n");
        for _ in 0..=65536u32 {
            y.push_str("  - {prefix: 100.64.0.0/24, via: 10.0.0.2, port: p}\n");
        }
        // 65537 entries: the count check fires before the per-route checks
        assert_err(&y, "routes: must have 0..=65536 entries, has 65537");
    }

    #[test]
    fn neighbor_rules() {
        assert_err(&edit("ip: 192.0.2.2", "ip: 192.0.2.256"), "neighbors[0].ip: 192.0.2.256 is not an IP address");
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
        assert_err(&edit("ip: 192.0.2.2", "ip: 224.0.0.1"), "neighbors[0].ip: 224.0.0.1 is a multicast address");
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
            y.push_str(&format!("  - ip: 192.0.2.{i}\n    mac: \"02:00:00:00:01:{i:02x}\"\n    port: inside\n"));
        }
        y.push_str("neighbor:\n  entries_max: 16\n");
        assert_err(&y, "neighbor.entries_max: 16 is less than the number of static neighbors (17)");
    }

    #[test]
    fn neighbor_count_limit() {
        let mut y = String::from("ports:\n  - {name: p, device: net_null0, ipv4: [\"10.0.0.1/8\"]}\nneighbors:\n");
        for i in 0..4097u32 {
            y.push_str(&format!("  - {{ip: 10.1.{}.{}, mac: \"02:00:00:00:00:01\", port: p}}\n", i >> 8, i & 255));
        }
        assert_err(&y, "neighbors: must have 0..=4096 entries, has 4097");
    }

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
            assert_err(&format!("{BASE}neighbor:\n  {field}: {bad}\n"), &format!("neighbor.{field}: {msg}"));
        }
    }

    #[test]
    fn icmp_ranges() {
        assert_err(&format!("{BASE}icmp:\n  errors_per_s: 1000001\n"), "icmp.errors_per_s: must be 0..=1000000");
        assert_err(&format!("{BASE}icmp:\n  errors_burst: 0\n"), "icmp.errors_burst: must be 1..=100000");
        assert_eq!(ok(&format!("{BASE}icmp:\n  errors_per_s: 0\n")).icmp.errors_per_s, 0);
    }
}
