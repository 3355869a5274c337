//! Address syntax the sections share: MAC addresses, what a unicast host
//! address is, destination prefixes.

use std::net::IpAddr;

use super::{ConfigError, IpCidr, Res};

pub(super) use dataplane::fib::is_link_local6;

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

/// A unicast MAC address (`ports[].mac`, `neighbors[].mac`); `example`
/// shows the syntax in the error.
pub(super) fn parse_unicast_mac(path: &str, text: &str, example: &str) -> Res<[u8; 6]> {
    let mac = parse_mac(text).ok_or_else(|| {
        ConfigError::invalid(path, format!("{text:?} is not a MAC address (expected e.g. \"{example}\")"))
    })?;
    if mac[0] & 1 != 0 || mac == [0; 6] {
        return Err(ConfigError::invalid(path, format!("{text} is not a unicast MAC address")));
    }
    Ok(mac)
}

/// Why `ip` can't be a unicast host address (interface address, next hop, neighbor).
pub(super) fn non_unicast(ip: IpAddr) -> Option<&'static str> {
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

pub(super) fn family(ip_is_v4: bool) -> &'static str {
    if ip_is_v4 {
        "IPv4"
    } else {
        "IPv6"
    }
}

/// Parses a destination prefix (`routes[].prefix`, `srv6.steering[].prefix`):
/// IPv4 or IPv6, host bits zero.
pub(super) fn parse_network(path: &str, text: &str) -> Res<IpCidr> {
    let prefix: IpCidr = text.parse().map_err(|m| ConfigError::invalid(path, m))?;
    if !prefix.is_network() {
        let net = match prefix {
            IpCidr::V4(c) => c.trunc().to_string(),
            IpCidr::V6(c) => c.trunc().to_string(),
        };
        return Err(ConfigError::invalid(path, format!("{prefix} has host bits set (the network is {net})")));
    }
    Ok(prefix)
}
