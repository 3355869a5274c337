//! `srv6:` — the node's local SIDs (RFC 8986 endpoint behaviors and the
//! storage behavior) and the H.Encaps policies that steer traffic into
//! SRv6, validated straight into the pipeline's [`Srv6Config`]: the
//! behaviors and storage policies are `dataplane::srv6`'s own types; this
//! module only knows the names the file uses for them.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};

use dataplane::srv6::{Behavior, PolicySpec, SidSpec, StoragePolicy};
use serde::{Deserialize, Serialize};

use super::addr::{is_link_local6, non_unicast, parse_network};
use super::ports::{connected, own_address, own_ipv6, resolve_port, resolve_port_list, IPV6_MIN_MTU};
use super::storage::MAX_STORAGE_QUEUE_DEPTH;
use super::{count, range, ByName, ConfigError, FileName, IpCidr, Port, Res, RouteSpec, Srv6Config};

/// Most local SIDs (`srv6.local_sids`).
const MAX_LOCAL_SIDS: usize = 1024;
/// Most SRv6 steering policies (`srv6.steering`).
const MAX_STEERING_POLICIES: usize = 1024;
/// Most segments of one steering policy (`srv6.steering[].segments`).
const MAX_SEGMENTS: usize = dataplane::srv6::POLICY_SEGMENTS_MAX;

/// `srv6:` as the file writes it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct Srv6Yaml {
    encap_source: Option<String>,
    trusted_ports: Option<Vec<String>>,
    local_sids: Vec<LocalSidYaml>,
    steering: Vec<SteeringYaml>,
}

/// `srv6.local_sids[]` as the file writes it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct LocalSidYaml {
    sid: String,
    behavior: ByName<Behavior>,
    #[serde(default)]
    flavors: Vec<Flavor>,
    #[serde(default)]
    next_hop: Option<String>,
    #[serde(default)]
    port: Option<String>,
    #[serde(default)]
    policy: Option<ByName<StoragePolicy>>,
    #[serde(default)]
    threshold: Option<i64>,
}

/// `srv6.steering[]` as the file writes it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct SteeringYaml {
    prefix: String,
    #[serde(default)]
    mode: ByName<Reduced>,
    segments: Vec<String>,
    #[serde(default)]
    source: Option<String>,
}

/// A flavor of an End or End.X SID (RFC 8986 §4.16), `flavors: [psp, usd]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
enum Flavor {
    /// Penultimate Segment Pop: [`SidSpec::psp`].
    Psp,
    /// Ultimate Segment Decapsulation: [`SidSpec::usd`].
    Usd,
}

impl Flavor {
    fn as_str(self) -> &'static str {
        match self {
            Flavor::Psp => "psp",
            Flavor::Usd => "usd",
        }
    }
}

impl FileName for Behavior {
    const VALUES: &'static [Self] =
        &[Behavior::End, Behavior::EndX, Behavior::EndDt6, Behavior::EndDx6, Behavior::Storage];
    fn file_name(self) -> &'static str {
        match self {
            Behavior::End => "end",
            Behavior::EndX => "end.x",
            Behavior::EndDt6 => "end.dt6",
            Behavior::EndDx6 => "end.dx6",
            Behavior::Storage => "storage",
        }
    }
}

/// `sr-c`'s threshold is a field of its own (`threshold`): the policy read
/// from the file carries 0 until validation puts the threshold in.
impl FileName for StoragePolicy {
    const VALUES: &'static [Self] = &[
        StoragePolicy::Always,
        StoragePolicy::NeverButLast,
        StoragePolicy::SrC { threshold: 0 },
        StoragePolicy::HoldsObject,
    ];
    fn file_name(self) -> &'static str {
        self.name()
    }
}

/// How a policy encapsulates, as `mode:` names it: [`PolicySpec::reduced`],
/// `encaps` (H.Encaps, the default) or `encaps.red` (H.Encaps.Red).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Reduced(bool);

impl FileName for Reduced {
    const VALUES: &'static [Self] = &[Reduced(false), Reduced(true)];
    fn file_name(self) -> &'static str {
        if self.0 {
            "encaps.red"
        } else {
            "encaps"
        }
    }
}

/// Whether the behavior sends to a configured adjacency (`next_hop` and
/// `port`): End.X and End.DX6.
fn has_adjacency(b: Behavior) -> bool {
    matches!(b, Behavior::EndX | Behavior::EndDx6)
}

/// Whether the behavior takes the PSP/USD flavors: End and End.X.
fn takes_flavors(b: Behavior) -> bool {
    matches!(b, Behavior::End | Behavior::EndX)
}

/// Validates `srv6:` into the pipeline's form; prints addresses canonically.
pub(super) fn validate(r: &mut Srv6Yaml, ports: &[Port], routes: &[RouteSpec]) -> Res<Srv6Config> {
    let encap_source = match &r.encap_source {
        None => None,
        Some(s) => Some(own_ipv6("srv6.encap_source", s, ports)?),
    };
    let trusted_ports = match &r.trusted_ports {
        None => None,
        Some(names) => Some(validate_trusted_ports(names, ports)?),
    };
    let sids = validate_local_sids(&mut r.local_sids, ports)?;
    let policies = validate_steering(&mut r.steering, ports, routes)?;
    r.encap_source = encap_source.map(|a| a.to_string());
    Ok(Srv6Config { sids, policies, trusted_ports, encap_source, counter_slots: Vec::new() })
}

fn validate_trusted_ports(names: &[String], ports: &[Port]) -> Res<Vec<u16>> {
    let path = "srv6.trusted_ports";
    if names.is_empty() {
        return Err(ConfigError::invalid(path, "must name at least one port (null: every port is trusted)"));
    }
    let list = resolve_port_list(path, names, ports, |_, _| Ok(()))?;
    Ok(list.into_iter().map(|p| p as u16).collect())
}

fn validate_local_sids(raw: &mut [LocalSidYaml], ports: &[Port]) -> Res<Vec<SidSpec>> {
    count("srv6.local_sids", raw.len(), 0, MAX_LOCAL_SIDS)?;
    let mut seen: HashMap<Ipv6Addr, usize> = HashMap::with_capacity(raw.len());
    let mut out = Vec::with_capacity(raw.len());
    for (i, r) in raw.iter_mut().enumerate() {
        let spec = validate_local_sid(i, r, ports, &seen)?;
        seen.insert(spec.sid, i);
        r.sid = spec.sid.to_string();
        r.flavors = [(spec.psp, Flavor::Psp), (spec.usd, Flavor::Usd)]
            .into_iter()
            .filter_map(|(on, f)| on.then_some(f))
            .collect();
        r.next_hop = spec.adjacency.map(|(_, nh)| nh.to_string());
        r.policy = spec.policy.map(ByName);
        out.push(spec);
    }
    Ok(out)
}

/// `srv6.local_sids[i]`; `seen` holds the SIDs before it.
fn validate_local_sid(i: usize, r: &LocalSidYaml, ports: &[Port], seen: &HashMap<Ipv6Addr, usize>) -> Res<SidSpec> {
    let b = r.behavior.0;
    let sid = validate_sid(i, &r.sid, ports, seen)?;
    let (psp, usd) = validate_flavors(i, b, &r.flavors)?;
    let adjacency = validate_adjacency(i, b, r, ports)?;
    let policy = validate_policy(i, b, r)?;
    Ok(SidSpec { sid, behavior: b, psp, usd, adjacency, policy })
}

/// The SID: a global unicast IPv6 address of its own, not twice.
fn validate_sid(i: usize, text: &str, ports: &[Port], seen: &HashMap<Ipv6Addr, usize>) -> Res<Ipv6Addr> {
    let path = format!("srv6.local_sids[{i}].sid");
    let sid: Ipv6Addr =
        text.parse().map_err(|_| ConfigError::invalid(&path, format!("{text} is not an IPv6 address")))?;
    if let Some(what) = non_unicast(IpAddr::V6(sid)) {
        return Err(ConfigError::invalid(path, format!("{sid} is {what}; a SID must be a unicast address")));
    }
    if is_link_local6(sid) {
        return Err(ConfigError::invalid(path, format!("{sid} is link-local; a SID must be a global address")));
    }
    for (pi, pt) in ports.iter().enumerate() {
        if let Some(k) = pt.ipv6.iter().position(|c| c.addr == sid) {
            return Err(ConfigError::invalid(
                path,
                format!(
                    "{sid} is an address of port {} (ports[{pi}].ipv6[{k}]); a SID must be an address of its own",
                    pt.name
                ),
            ));
        }
    }
    if let Some(j) = seen.get(&sid) {
        return Err(ConfigError::invalid(path, format!("duplicate SID {sid} (also srv6.local_sids[{j}])")));
    }
    Ok(sid)
}

/// `(psp, usd)`: only End and End.X take flavors, each at most once.
fn validate_flavors(i: usize, b: Behavior, flavors: &[Flavor]) -> Res<(bool, bool)> {
    let (mut psp, mut usd) = (false, false);
    for (k, f) in flavors.iter().enumerate() {
        let path = format!("srv6.local_sids[{i}].flavors[{k}]");
        if !takes_flavors(b) {
            return Err(ConfigError::invalid(
                path,
                format!(
                    "{} is not allowed for behavior {} (only end and end.x take flavors)",
                    f.as_str(),
                    b.file_name()
                ),
            ));
        }
        let slot = match f {
            Flavor::Psp => &mut psp,
            Flavor::Usd => &mut usd,
        };
        if *slot {
            return Err(ConfigError::invalid(path, format!("duplicate flavor {}", f.as_str())));
        }
        *slot = true;
    }
    Ok((psp, usd))
}

/// `(port, next_hop)` of End.X and End.DX6 (required); absent for the others.
fn validate_adjacency(i: usize, b: Behavior, r: &LocalSidYaml, ports: &[Port]) -> Res<Option<(u16, Ipv6Addr)>> {
    let p = |field: &str| format!("srv6.local_sids[{i}].{field}");
    let name = b.file_name();
    if !has_adjacency(b) {
        for (field, given) in [("next_hop", r.next_hop.is_some()), ("port", r.port.is_some())] {
            if given {
                return Err(ConfigError::invalid(
                    p(field),
                    format!("not allowed for behavior {name} (only end.x and end.dx6 have a {field})"),
                ));
            }
        }
        return Ok(None);
    }
    let required = |field: &str| ConfigError::invalid(p(field), format!("required for behavior {name}"));
    let nh_text = r.next_hop.as_deref().ok_or_else(|| required("next_hop"))?;
    let port_name = r.port.as_deref().ok_or_else(|| required("port"))?;
    let nh: Ipv6Addr = nh_text
        .parse()
        .map_err(|_| ConfigError::invalid(p("next_hop"), format!("{nh_text} is not an IPv6 address")))?;
    if let Some(what) = non_unicast(IpAddr::V6(nh)) {
        return Err(ConfigError::invalid(p("next_hop"), format!("next hop {nh} is {what}")));
    }
    if let Some(own) = own_address(IpAddr::V6(nh), ports) {
        return Err(ConfigError::invalid(p("next_hop"), format!("next hop {nh} is an address of this node ({own})")));
    }
    let port = resolve_port(p("port"), port_name, ports)?;
    let pt = &ports[port];
    if !pt.ipv6_capable() {
        return Err(ConfigError::invalid(
            p("port"),
            format!("port {} has mtu {}, too small for IPv6 (>= {IPV6_MIN_MTU})", pt.name, pt.mtu),
        ));
    }
    if !pt.on_link(IpAddr::V6(nh)) {
        return Err(ConfigError::invalid(
            p("next_hop"),
            format!("next hop {nh} is not on a subnet of port {}", pt.name),
        ));
    }
    Ok(Some((port as u16, nh)))
}

/// The storage behavior's policy (required), with `sr-c`'s threshold
/// (required for it, refused for the others); absent for other behaviors.
fn validate_policy(i: usize, b: Behavior, r: &LocalSidYaml) -> Res<Option<StoragePolicy>> {
    let p = |field: &str| format!("srv6.local_sids[{i}].{field}");
    let name = b.file_name();
    if b != Behavior::Storage {
        if r.policy.is_some() {
            return Err(ConfigError::invalid(
                p("policy"),
                format!("not allowed for behavior {name} (only storage has a policy)"),
            ));
        }
        if r.threshold.is_some() {
            return Err(ConfigError::invalid(
                p("threshold"),
                format!("not allowed for behavior {name} (only storage with policy sr-c has a threshold)"),
            ));
        }
        return Ok(None);
    }
    let policy = r.policy.ok_or_else(|| ConfigError::invalid(p("policy"), format!("required for behavior {name}")))?.0;
    let policy = match (policy, r.threshold) {
        (StoragePolicy::SrC { .. }, None) => {
            return Err(ConfigError::invalid(p("threshold"), "required for policy sr-c"))
        }
        (StoragePolicy::SrC { .. }, Some(t)) => {
            StoragePolicy::SrC { threshold: range(&p("threshold"), t, 1, i64::from(MAX_STORAGE_QUEUE_DEPTH))? }
        }
        (policy, None) => policy,
        (policy, Some(_)) => {
            return Err(ConfigError::invalid(
                p("threshold"),
                format!("not allowed for policy {} (only sr-c has a threshold)", policy.name()),
            ))
        }
    };
    Ok(Some(policy))
}

fn validate_steering(raw: &mut [SteeringYaml], ports: &[Port], routes: &[RouteSpec]) -> Res<Vec<PolicySpec>> {
    count("srv6.steering", raw.len(), 0, MAX_STEERING_POLICIES)?;
    let mut seen: HashMap<IpCidr, usize> = HashMap::with_capacity(raw.len());
    let mut out = Vec::with_capacity(raw.len());
    for (i, r) in raw.iter_mut().enumerate() {
        let (prefix, spec) = validate_policy_spec(i, r, ports, routes, &seen)?;
        seen.insert(prefix, i);
        r.prefix = prefix.to_string();
        r.segments = spec.segments.iter().map(ToString::to_string).collect();
        r.source = spec.source.map(|a| a.to_string());
        out.push(spec);
    }
    Ok(out)
}

/// `srv6.steering[i]`; `seen` holds the prefixes of the policies before it.
fn validate_policy_spec(
    i: usize,
    r: &SteeringYaml,
    ports: &[Port],
    routes: &[RouteSpec],
    seen: &HashMap<IpCidr, usize>,
) -> Res<(IpCidr, PolicySpec)> {
    let p = |field: &str| format!("srv6.steering[{i}].{field}");
    let prefix = parse_network(&p("prefix"), &r.prefix)?;
    if let Some(j) = seen.get(&prefix) {
        return Err(ConfigError::invalid(p("prefix"), format!("duplicate prefix {prefix} (also srv6.steering[{j}])")));
    }
    let routed = |rt: &RouteSpec| rt.prefix == prefix.addr() && rt.len == prefix.prefix_len();
    if let Some(j) = routes.iter().position(routed) {
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
    let segments = validate_segments(i, &r.segments)?;
    let source = match &r.source {
        None => None,
        Some(s) => Some(own_ipv6(&p("source"), s, ports)?),
    };
    let ByName(Reduced(reduced)) = r.mode;
    let spec = PolicySpec { prefix: prefix.addr(), len: prefix.prefix_len(), reduced, segments, source };
    Ok((prefix, spec))
}

/// 1..=16 segments in travel order, each a global unicast IPv6 address.
fn validate_segments(i: usize, texts: &[String]) -> Res<Vec<Ipv6Addr>> {
    let n = texts.len();
    if !(1..=MAX_SEGMENTS).contains(&n) {
        return Err(ConfigError::invalid(
            format!("srv6.steering[{i}].segments"),
            format!("must have 1..={MAX_SEGMENTS} segments, has {n}"),
        ));
    }
    let mut segments = Vec::with_capacity(n);
    for (k, s) in texts.iter().enumerate() {
        let path = format!("srv6.steering[{i}].segments[{k}]");
        let a: Ipv6Addr = s.parse().map_err(|_| ConfigError::invalid(&path, format!("{s} is not an IPv6 address")))?;
        if let Some(what) = non_unicast(IpAddr::V6(a)) {
            return Err(ConfigError::invalid(path, format!("{a} is not a unicast address (it is {what})")));
        }
        if is_link_local6(a) {
            return Err(ConfigError::invalid(path, format!("{a} is link-local; segments must be global addresses")));
        }
        segments.push(a);
    }
    Ok(segments)
}

#[cfg(test)]
mod tests {
    use super::super::storage::StorageServiceYaml;
    use super::super::testing::*;
    use super::super::{Config, StorageService, EMBEDDED_DEMO};
    use super::*;

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

    /// Whether a packet for a local SID is accepted on `port` (as the
    /// pipeline's SRv6 tables decide from `trusted_ports`).
    fn trusts(s: &Srv6Config, port: u16) -> bool {
        s.trusted_ports.as_ref().is_none_or(|ports| ports.contains(&port))
    }

    /// The local SID equal to `addr`, if any.
    fn sid_of(s: &Srv6Config, addr: Ipv6Addr) -> Option<&SidSpec> {
        s.sids.iter().find(|l| l.sid == addr)
    }

    #[test]
    fn srv6_and_storage_defaults() {
        for c in [ok(BASE), Config::demo()] {
            assert_eq!(c.srv6, Srv6Config::default());
            assert_eq!(c.srv6, Srv6Config::default());
            assert!(trusts(&c.srv6, 0) && trusts(&c.srv6, 1));
            assert_eq!(c.storage_service, StorageService { udp_port: 7878, queue_depth: 0, objects: vec![] });
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
        assert!(!c.srv6.policies[0].reduced);
        assert_eq!((c.srv6.sids[2].psp, c.srv6.sids[2].usd), (false, false));
    }

    #[test]
    fn srv6_effective_values() {
        let c = ok(&format!("{BASE}{SRV6}"));
        let s = &c.srv6;
        assert_eq!(s.encap_source, Some(v6("2001:db8:2::1")));
        assert_eq!(s.trusted_ports, Some(vec![1, 0]));
        assert!(trusts(s, 0) && trusts(s, 1) && !trusts(s, 2));
        assert_eq!(
            s.sids[0],
            SidSpec {
                sid: v6("2001:db8:a::1"),
                behavior: Behavior::End,
                psp: true,
                usd: true,
                adjacency: None,
                policy: None
            }
        );
        assert_eq!(
            s.sids[1],
            SidSpec {
                sid: v6("2001:db8:a::2"),
                behavior: Behavior::EndX,
                psp: false,
                usd: true,
                adjacency: Some((1, v6("2001:db8:2::2"))),
                policy: None
            }
        );
        assert_eq!(s.sids[2].behavior, Behavior::EndDt6);
        assert_eq!((s.sids[3].behavior, s.sids[3].adjacency), (Behavior::EndDx6, Some((0, v6("fe80::2")))));
        assert_eq!(
            (s.sids[4].behavior, s.sids[4].policy),
            (Behavior::Storage, Some(StoragePolicy::SrC { threshold: 8 }))
        );
        assert_eq!(s.sids[5].policy, Some(StoragePolicy::HoldsObject));
        assert_eq!(sid_of(s, v6("2001:db8:a::3")).map(|l| l.behavior), Some(Behavior::EndDt6));
        assert!(sid_of(s, v6("2001:db8:a::9")).is_none());
        assert_eq!(
            s.policies,
            vec![
                PolicySpec {
                    prefix: "2001:db8:77::".parse().unwrap(),
                    len: 64,
                    reduced: false,
                    segments: vec![v6("2001:db8:b::1"), v6("2001:db8:c::100")],
                    source: None
                },
                PolicySpec {
                    prefix: "100.64.0.0".parse().unwrap(),
                    len: 10,
                    reduced: true,
                    segments: vec![v6("2001:db8:b::1")],
                    source: Some(v6("2001:db8:1::1"))
                }
            ]
        );
        assert_eq!(
            c.storage_service,
            StorageService { udp_port: 9999, queue_depth: 3, objects: vec![7, 42, u64::MAX, 0] }
        );
        assert!(c.storage_service.holds(42) && !c.storage_service.holds(8));
        // the names used in the file
        assert_eq!(
            Behavior::VALUES.iter().map(|b| b.file_name()).collect::<Vec<_>>(),
            ["end", "end.x", "end.dt6", "end.dx6", "storage"]
        );
        assert_eq!(
            StoragePolicy::VALUES.iter().map(|p| p.file_name()).collect::<Vec<_>>(),
            ["always", "never-but-last", "sr-c", "holds-object"]
        );
        assert_eq!(Reduced(true).file_name(), "encaps.red");
        assert_eq!(Reduced(false).file_name(), "encaps");
    }

    #[test]
    fn srv6_to_yaml_round_trips() {
        let c = ok(&format!("{BASE}{SRV6}"));
        let y = c.to_yaml();
        assert_eq!(ok(&y), c, "{y}");
        // ports by name, flavors as a list, every field printed
        let v: serde_yaml_ng::Value = serde_yaml_ng::from_str(&y).unwrap();
        let s = &v["srv6"];
        assert_eq!(s["trusted_ports"], serde_yaml_ng::from_str::<serde_yaml_ng::Value>("[outside, inside]").unwrap());
        assert_eq!(s["local_sids"][1]["port"].as_str(), Some("outside"));
        assert_eq!(s["local_sids"][1]["behavior"].as_str(), Some("end.x"));
        assert_eq!(
            s["local_sids"][0]["flavors"],
            serde_yaml_ng::from_str::<serde_yaml_ng::Value>("[psp, usd]").unwrap()
        );
        assert!(s["local_sids"][2]["next_hop"].is_null());
        assert_eq!(s["local_sids"][4]["policy"].as_str(), Some("sr-c"));
        assert_eq!(s["steering"][1]["mode"].as_str(), Some("encaps.red"));
        assert_eq!(s["steering"][0]["prefix"].as_str(), Some("2001:db8:77::/64"));
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
            let starts = body.is_some_and(|b| b.starts_with("srv6:") || b.starts_with("storage_service:"));
            in_block = starts || (in_block && body.is_some_and(|b| b.starts_with("  ")));
            if in_block {
                out.push_str(body.unwrap());
                uncommented += 1;
            } else {
                out.push_str(line);
            }
            out.push('\n');
        }
        assert!(uncommented > 10, "no srv6 example found in configs/demo.yaml");
        let mut c = ok(&out);
        assert!(!c.srv6.sids.is_empty() && !c.srv6.policies.is_empty());
        c.srv6 = Srv6Config::default();
        c.storage_service = StorageService::default();
        c.effective.srv6 = Srv6Yaml::default();
        c.effective.storage_service = StorageServiceYaml::default();
        assert_eq!(c, Config::demo());
    }

    #[test]
    fn srv6_parse_errors() {
        let e = err(&sr("behavior: end.dt6", "behavior: end.t"));
        assert!(
            e.starts_with("srv6.local_sids[2].behavior: unknown variant `end.t`, expected one of `end`, `end.x`, `end.dt6`, `end.dx6`, `storage`"),
            "{e}"
        );
        let e = err(&sr("flavors: [usd]", "flavors: [usp]"));
        assert!(e.starts_with("srv6.local_sids[1].flavors[0]: unknown variant `usp`, expected `psp` or `usd`"), "{e}");
        let e = err(&sr("policy: sr-c", "policy: src"));
        assert!(e.starts_with("srv6.local_sids[4].policy: unknown variant `src`"), "{e}");
        let e = err(&sr("mode: encaps.red", "mode: encap"));
        assert!(e.starts_with("srv6.steering[1].mode: unknown variant `encap`"), "{e}");
        let e = err(&one_sid("sid: \"2001:db8:a::1\""));
        assert!(e.starts_with("srv6.local_sids[0]: missing field `behavior`"), "{e}");
        let e = err(&one_sid("behavior: end"));
        assert!(e.starts_with("srv6.local_sids[0]: missing field `sid`"), "{e}");
        let e = err(&one_policy("prefix: \"2001:db8:77::/64\""));
        assert!(e.starts_with("srv6.steering[0]: missing field `segments`"), "{e}");
        let e = err(&sr("    behavior: end.dt6\n", "    behavior: end.dt6\n      vrf: 1\n"));
        assert!(e.starts_with("srv6.local_sids[2].vrf: unknown field `vrf`"), "{e}");
        let e = err(&format!("{BASE}srv6:\n  sids: []\n"));
        assert!(e.starts_with("srv6.sids: unknown field `sids`"), "{e}");
        let e = err(&format!("{BASE}storage_service:\n  port: 1\n"));
        assert!(e.starts_with("storage_service.port: unknown field `port`"), "{e}");
        let e = err(&sr("threshold: 8", "threshold: many"));
        assert!(e.starts_with("srv6.local_sids[4].threshold: invalid type"), "{e}");
        let e = err(&sr("objects: [7,", "objects: [1.5,"));
        assert!(e.starts_with("storage_service.objects[0]: invalid type: floating point"), "{e}");
    }

    #[test]
    fn srv6_encap_source() {
        assert_err(
            &sr("encap_source: \"2001:db8:2::1\"", "encap_source: \"2001:db8:2::zz\""),
            "srv6.encap_source: 2001:db8:2::zz is not an IPv6 address",
        );
        assert_err(
            &sr("encap_source: \"2001:db8:2::1\"", "encap_source: 198.51.100.1"),
            "srv6.encap_source: 198.51.100.1 is not an IPv6 address",
        );
        assert_err(
            &sr("encap_source: \"2001:db8:2::1\"", "encap_source: \"2001:db8:2::7\""),
            "srv6.encap_source: 2001:db8:2::7 is not an address of this node (one of ports[].ipv6)",
        );
        // a local SID is not a port address
        assert_err(
            &sr("encap_source: \"2001:db8:2::1\"", "encap_source: \"2001:db8:a::1\""),
            "srv6.encap_source: 2001:db8:a::1 is not an address of this node (one of ports[].ipv6)",
        );
        assert_eq!(
            ok(&sr("encap_source: \"2001:db8:2::1\"", "encap_source: \"2001:db8:1::1\"")).srv6.encap_source,
            Some(v6("2001:db8:1::1"))
        );
    }

    #[test]
    fn srv6_trusted_ports() {
        assert_err(
            &sr("trusted_ports: [outside, inside]", "trusted_ports: [outside, quux]"),
            "srv6.trusted_ports[1]: no port named \"quux\" (ports: inside, outside)",
        );
        assert_err(
            &sr("trusted_ports: [outside, inside]", "trusted_ports: [quux]"),
            "srv6.trusted_ports[0]: no port named \"quux\" (ports: inside, outside)",
        );
        assert_err(
            &sr("trusted_ports: [outside, inside]", "trusted_ports: [inside, outside, inside]"),
            "srv6.trusted_ports[2]: duplicate port inside (also srv6.trusted_ports[0])",
        );
        assert_err(
            &sr("trusted_ports: [outside, inside]", "trusted_ports: []"),
            "srv6.trusted_ports: must name at least one port (null: every port is trusted)",
        );
        let c = ok(&sr("trusted_ports: [outside, inside]", "trusted_ports: [inside]"));
        assert_eq!(c.srv6.trusted_ports, Some(vec![0]));
        assert!(trusts(&c.srv6, 0) && !trusts(&c.srv6, 1));
        let c = ok(&sr("trusted_ports: [outside, inside]", "trusted_ports: null"));
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
            &sr("sid: \"2001:db8:a::2\"", "sid: \"2001:0db8:000a:0:0:0:0:1\""),
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
        assert_err(&sr("flavors: [usd]", "flavors: [usd, usd]"), "srv6.local_sids[1].flavors[1]: duplicate flavor usd");
        let c = ok(&sr("flavors: [psp, usd]", "flavors: [usd]"));
        assert_eq!((c.srv6.sids[0].psp, c.srv6.sids[0].usd), (false, true));
        let c = ok(&sr("flavors: [psp, usd]", "flavors: []"));
        assert_eq!((c.srv6.sids[0].psp, c.srv6.sids[0].usd), (false, false));
        // printed in the order psp, usd whatever the order written
        let c = ok(&sr("flavors: [psp, usd]", "flavors: [usd, psp]"));
        let v: serde_yaml_ng::Value = serde_yaml_ng::from_str(&c.to_yaml()).unwrap();
        assert_eq!(
            v["srv6"]["local_sids"][0]["flavors"],
            serde_yaml_ng::from_str::<serde_yaml_ng::Value>("[psp, usd]").unwrap()
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
        ok(&one_sid(
            "sid: \"2001:db8:a::1\", behavior: end, next_hop: null, port: null, policy: null, threshold: null",
        ));
    }

    #[test]
    fn local_sid_adjacency_values() {
        assert_err(
            &sr("next_hop: \"2001:db8:2::2\"", "next_hop: \"2001:db8:2::zz\""),
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
            &sr("next_hop: \"2001:db8:2::2\"\n      port: outside", "next_hop: \"2001:db8:2::2\"\n      port: inside"),
            "srv6.local_sids[1].next_hop: next hop 2001:db8:2::2 is not on a subnet of port inside",
        );
        assert_err(
            &sr("next_hop: \"2001:db8:2::2\"\n      port: outside", "next_hop: \"2001:db8:2::2\"\n      port: outsid"),
            "srv6.local_sids[1].port: no port named \"outsid\" (ports: inside, outside)",
        );
        // link-local next hops are on every port
        let c = ok(&sr("next_hop: \"2001:db8:2::2\"", "next_hop: \"fe80::9\""));
        assert_eq!(c.srv6.sids[1].adjacency.map(|(_, nh)| nh), Some(v6("fe80::9")));
        let y = "ports:\n  - {name: small, device: net_null0, mtu: 1000, ipv4: [\"192.0.2.1/24\"]}\n\
                 srv6:\n  local_sids:\n    - {sid: \"2001:db8:a::1\", behavior: end.x, next_hop: \"fe80::1\", port: small}\n";
        assert_err(y, "srv6.local_sids[0].port: port small has mtu 1000, too small for IPv6 (>= 1280)");
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
            let c = ok(&one_sid(&format!("sid: \"2001:db8:a::1\", behavior: storage, policy: {p}")));
            assert_eq!(c.srv6.sids[0].policy.map(|p| p.name()), Some(p));
        }
        assert_err(
            &one_sid("sid: \"2001:db8:a::1\", behavior: end, threshold: 5"),
            "srv6.local_sids[0].threshold: not allowed for behavior end (only storage with policy sr-c has a threshold)",
        );
        let c = ok(&one_sid("sid: \"2001:db8:a::1\", behavior: storage, policy: sr-c, threshold: 1000000"));
        assert_eq!(c.srv6.sids[0].policy, Some(StoragePolicy::SrC { threshold: 1_000_000 }));
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
        ok(&sr("prefix: \"2001:db8:77::/64\"", "prefix: \"2001:db8:99::/64\""));
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
            &sr("segments: [\"2001:db8:b::1\"]", &format!("segments: [{}]", seventeen.join(", "))),
            "srv6.steering[1].segments: must have 1..=16 segments, has 17",
        );
        let sixteen = &seventeen[..16];
        let c = ok(&sr("segments: [\"2001:db8:b::1\"]", &format!("segments: [{}]", sixteen.join(", "))));
        assert_eq!(c.srv6.policies[1].segments.len(), 16);
        assert_eq!(c.srv6.policies[1].segments[15], v6("2001:db8:b::10"));
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
        assert_eq!(c.srv6.policies[1].source, None);
    }

    #[test]
    fn steering_count_limit() {
        let mut y = format!("{BASE}srv6:\n  steering:\n");
        for _ in 0..=1024 {
            y.push_str("    - {prefix: 100.64.0.0/10, segments: [\"2001:db8:b::1\"]}\n");
        }
        assert_err(&y, "srv6.steering: must have 0..=1024 entries, has 1025");
    }
}
