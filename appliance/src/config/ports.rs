//! `ports:` — the network ports: DPDK device, queues, MTU, MAC and the
//! node's own addresses. Other sections name a port; [`resolve_port`] turns
//! the name into its index, [`own_address`] and [`connected`] answer for the
//! addresses.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::addr::{format_mac, is_link_local6, non_unicast, parse_unicast_mac};
use super::lcores::MBUF_HEADROOM;
use super::{count, pow2_range, range, ConfigError, Eal, IpCidr, Ipv4Cidr, Ipv6Cidr, Mempool, Res};

/// Most ports (`ports`).
const MAX_PORTS: usize = 16;
/// Most rx queues per port (`ports[].queues`).
const MAX_QUEUES: u16 = 64;
/// Most addresses of one family on one port.
const MAX_ADDRESSES_PER_FAMILY: usize = 8;
/// Ethernet header and CRC: a frame is at most `mtu + FRAME_OVERHEAD` bytes.
const FRAME_OVERHEAD: u32 = 18;
/// The smallest MTU an IPv6 link may have (RFC 8200).
pub(super) const IPV6_MIN_MTU: u16 = 1280;

/// `ports[]` as the file writes it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PortYaml {
    name: String,
    device: String,
    #[serde(default)]
    args: Option<String>,
    #[serde(default = "default_queues")]
    queues: i64,
    #[serde(default = "default_descriptors")]
    rx_descriptors: i64,
    #[serde(default = "default_descriptors")]
    tx_descriptors: i64,
    #[serde(default = "default_mtu")]
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

fn default_queues() -> i64 {
    1
}

fn default_descriptors() -> i64 {
    1024
}

fn default_mtu() -> i64 {
    1500
}

/// A port (`ports[]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Port {
    /// Our name for the port, `[a-z0-9_-]{1,15}`, unique.
    pub name: String,
    /// DPDK device: a vdev name (`net_...`) or a PCI address (`0000:03:00.0`).
    /// The ethdev is looked up by this name, not by port order.
    pub device: String,
    /// vdev devargs (`--vdev=<device>,<args>`); empty for PCI devices.
    pub args: String,
    /// Whether `device` is a PCI address (derived from `device`).
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

/// Validates the ports in order (each against the ones before it), and
/// prints each value in its canonical form.
pub(super) fn validate(raw: &mut [PortYaml], eal: &Eal, mempool: &Mempool, workers: usize) -> Res<Vec<Port>> {
    count("ports", raw.len(), 1, MAX_PORTS)?;
    let mut ports: Vec<Port> = Vec::with_capacity(raw.len());
    for (i, r) in raw.iter_mut().enumerate() {
        let port = validate_port(i, r, &ports, eal, mempool, workers)?;
        r.device.clone_from(&port.device);
        r.args = Some(port.args.clone());
        r.mac = port.mac.as_ref().map(format_mac);
        r.ipv4 = port.ipv4.iter().map(ToString::to_string).collect();
        r.ipv6 = port.ipv6.iter().map(ToString::to_string).collect();
        ports.push(port);
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

/// `ports[i]`, checked against the ports before it (`earlier`).
fn validate_port(i: usize, r: &PortYaml, earlier: &[Port], eal: &Eal, mempool: &Mempool, workers: usize) -> Res<Port> {
    let p = |field: &str| format!("ports[{i}].{field}");
    check_name(&p("name"), &r.name, earlier)?;
    let (device, is_pci) = check_device(&p("device"), &r.device, eal.pci, earlier)?;
    let args = r.args.clone().unwrap_or_default();
    check_args(&p("args"), &args, is_pci)?;
    let queues: u16 = range(&p("queues"), r.queues, 1, i64::from(MAX_QUEUES))?;
    let rx_descriptors: u16 = pow2_range(&p("rx_descriptors"), r.rx_descriptors, 64, 16384)?;
    let tx_descriptors: u16 = pow2_range(&p("tx_descriptors"), r.tx_descriptors, 64, 16384)?;
    check_device_queues(i, &device, &args, queues, workers)?;
    let mtu = check_mtu(&p("mtu"), r.mtu, mempool)?;
    let mac = match &r.mac {
        None => None,
        Some(s) => Some(parse_unicast_mac(&p("mac"), s, "02:00:00:00:00:01")?),
    };
    let ipv4 = validate_addresses::<Ipv4Cidr>(i, &r.ipv4, earlier)?;
    count(&p("ipv6"), r.ipv6.len(), 0, MAX_ADDRESSES_PER_FAMILY)?;
    if !r.ipv6.is_empty() && mtu < IPV6_MIN_MTU {
        return Err(ConfigError::invalid(
            p("ipv6"),
            format!("IPv6 needs an mtu of at least {IPV6_MIN_MTU}, but ports[{i}].mtu is {mtu}"),
        ));
    }
    let ipv6 = validate_addresses::<Ipv6Cidr>(i, &r.ipv6, earlier)?;
    Ok(Port {
        name: r.name.clone(),
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
    })
}

fn check_name(path: &str, name: &str, earlier: &[Port]) -> Res<()> {
    let valid = (1..=15).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if !valid {
        return Err(ConfigError::invalid(path, format!("{name:?} must match [a-z0-9_-]{{1,15}}")));
    }
    if let Some(j) = earlier.iter().position(|q| q.name == name) {
        return Err(ConfigError::invalid(path, format!("duplicate port name {name} (also ports[{j}])")));
    }
    Ok(())
}

/// The device as stored (a PCI address in lower case) and whether it is PCI.
fn check_device(path: &str, text: &str, pci: bool, earlier: &[Port]) -> Res<(String, bool)> {
    let is_pci = is_pci_address(text);
    let device = if is_pci { text.to_ascii_lowercase() } else { text.to_string() };
    if is_pci && !pci {
        return Err(ConfigError::invalid(path, format!("{text} is a PCI address; PCI devices need eal.pci: true")));
    }
    if !is_pci && !valid_vdev_name(text) {
        return Err(ConfigError::invalid(
            path,
            format!(
                "{text:?} is neither a vdev name (net_ followed by [A-Za-z0-9_], e.g. net_af_packet0) \
                 nor a PCI address with its domain (e.g. 0000:03:00.0)"
            ),
        ));
    }
    if let Some(j) = earlier.iter().position(|q| q.device == device) {
        return Err(ConfigError::invalid(path, format!("device {device} is already used by ports[{j}]")));
    }
    Ok((device, is_pci))
}

fn check_args(path: &str, args: &str, is_pci: bool) -> Res<()> {
    if is_pci && !args.is_empty() {
        return Err(ConfigError::invalid(path, "must be empty for a PCI device"));
    }
    if args.chars().any(|c| c.is_whitespace() || c.is_control()) || args.starts_with(',') {
        return Err(ConfigError::invalid(
            path,
            format!("{args:?} must be key=value pairs separated by commas, without spaces"),
        ));
    }
    Ok(())
}

/// af_packet and af_xdp vdevs have a fixed number of queue pairs
/// (`qpairs`, `queue_count`, default 1): they must cover the rx queues and
/// one tx queue per worker.
fn check_device_queues(i: usize, device: &str, args: &str, queues: u16, workers: usize) -> Res<()> {
    for (prefix, key) in [("net_af_packet", "qpairs"), ("net_af_xdp", "queue_count")] {
        if !device.starts_with(prefix) {
            continue;
        }
        let n: usize = match devarg(args, key) {
            None => 1,
            Some(v) => v
                .parse()
                .map_err(|_| ConfigError::invalid(format!("ports[{i}].args"), format!("{key}={v} is not a number")))?,
        };
        if usize::from(queues) > n {
            return Err(ConfigError::invalid(
                format!("ports[{i}].queues"),
                format!("{queues} rx queues, but the device has {key}={n} (add {key}={queues} to args)"),
            ));
        }
        if workers > n {
            return Err(ConfigError::invalid(
                format!("ports[{i}].args"),
                format!("{key}={n}, but each of the {workers} workers needs its own tx queue (set {key}={workers})"),
            ));
        }
    }
    Ok(())
}

fn check_mtu(path: &str, v: i64, mempool: &Mempool) -> Res<u16> {
    let mtu: u16 = range(path, v, 68, 9000)?;
    let need = u32::from(mtu) + FRAME_OVERHEAD + MBUF_HEADROOM;
    if need > u32::from(mempool.data_room_bytes) {
        return Err(ConfigError::invalid(
            path,
            format!(
                "a frame of mtu {mtu} does not fit in one mbuf: mempool.data_room_bytes must be >= {need} \
                 ({MBUF_HEADROOM} headroom + {FRAME_OVERHEAD} Ethernet header and CRC + mtu)"
            ),
        ));
    }
    Ok(mtu)
}

fn valid_vdev_name(s: &str) -> bool {
    s.len() <= 63
        && s.strip_prefix("net_")
            .is_some_and(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
}

/// `DDDD:BB:DD.F` with hex digits (DPDK's full PCI address form).
fn is_pci_address(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 12
        && b[4] == b':'
        && b[7] == b':'
        && b[10] == b'.'
        && b.iter().enumerate().all(|(i, c)| matches!(i, 4 | 7 | 10) || c.is_ascii_hexdigit())
        && (b'0'..=b'7').contains(&b[11])
}

/// The value of `key=value` in a devargs string.
fn devarg<'a>(args: &'a str, key: &str) -> Option<&'a str> {
    args.split(',').filter_map(|kv| kv.split_once('=')).find(|(k, _)| *k == key).map(|(_, v)| v)
}

/// An interface address of one family (`ports[].ipv4[]`, `ports[].ipv6[]`).
trait InterfaceAddress: FromStr<Err = String> + fmt::Display + Sized {
    /// The field of the port: `ipv4` or `ipv6`.
    const FIELD: &'static str;
    /// The port's addresses of this family.
    fn of(port: &Port) -> &[Self];
    fn ip(&self) -> IpAddr;
    fn overlaps_with(&self, other: &Self) -> bool;
    /// Why this can't be an interface address.
    fn check(&self) -> Result<(), String>;
}

impl InterfaceAddress for Ipv4Cidr {
    const FIELD: &'static str = "ipv4";
    fn of(port: &Port) -> &[Self] {
        &port.ipv4
    }
    fn ip(&self) -> IpAddr {
        IpAddr::V4(self.addr)
    }
    fn overlaps_with(&self, other: &Self) -> bool {
        self.overlaps(other)
    }
    fn check(&self) -> Result<(), String> {
        check_interface_v4(self)
    }
}

impl InterfaceAddress for Ipv6Cidr {
    const FIELD: &'static str = "ipv6";
    fn of(port: &Port) -> &[Self] {
        &port.ipv6
    }
    fn ip(&self) -> IpAddr {
        IpAddr::V6(self.addr)
    }
    fn overlaps_with(&self, other: &Self) -> bool {
        self.overlaps(other)
    }
    fn check(&self) -> Result<(), String> {
        check_interface_v6(self)
    }
}

/// `ports[i].ipv4` or `.ipv6`: 0..=8 unicast addresses, none twice on the
/// port, no subnet overlapping one of another port.
fn validate_addresses<C: InterfaceAddress>(i: usize, texts: &[String], earlier: &[Port]) -> Res<Vec<C>> {
    let field = C::FIELD;
    count(&format!("ports[{i}].{field}"), texts.len(), 0, MAX_ADDRESSES_PER_FAMILY)?;
    let mut out: Vec<C> = Vec::with_capacity(texts.len());
    for (k, s) in texts.iter().enumerate() {
        let path = format!("ports[{i}].{field}[{k}]");
        let c: C = s.parse().map_err(|m| ConfigError::invalid(&path, m))?;
        c.check().map_err(|m| ConfigError::invalid(&path, m))?;
        if let Some(j) = out.iter().position(|o| o.ip() == c.ip()) {
            return Err(ConfigError::invalid(path, format!("{} is already ports[{i}].{field}[{j}]", c.ip())));
        }
        for (pj, q) in earlier.iter().enumerate() {
            if let Some((kj, o)) = C::of(q).iter().enumerate().find(|(_, o)| o.overlaps_with(&c)) {
                return Err(ConfigError::invalid(
                    path,
                    format!("{c} overlaps {o} of port {} (ports[{pj}].{field}[{kj}])", q.name),
                ));
            }
        }
        out.push(c);
    }
    Ok(out)
}

fn check_interface_v4(c: &Ipv4Cidr) -> Result<(), String> {
    if c.len == 0 {
        return Err("prefix length 0 is not allowed for an interface address (1..=32)".into());
    }
    if let Some(what) = non_unicast(IpAddr::V4(c.addr)) {
        return Err(format!("{} is {what}; interface addresses must be unicast", c.addr));
    }
    if c.len <= 30 && c.addr == c.network() {
        return Err(format!("{} is the network address of {}, not a host address", c.addr, c.trunc()));
    }
    if c.len <= 30 && c.addr == c.broadcast() {
        return Err(format!("{} is the broadcast address of {}, not a host address", c.addr, c.trunc()));
    }
    Ok(())
}

fn check_interface_v6(c: &Ipv6Cidr) -> Result<(), String> {
    if c.len == 0 {
        return Err("prefix length 0 is not allowed for an interface address (1..=128)".into());
    }
    if let Some(what) = non_unicast(IpAddr::V6(c.addr)) {
        return Err(format!("{} is {what}; interface addresses must be unicast", c.addr));
    }
    if is_link_local6(c.addr) {
        return Err(format!("{} is link-local; the fe80::/64 address is derived from the MAC at run time", c.addr));
    }
    Ok(())
}

/// The index of the port named `name`, for a field (`path`) that names one.
pub(super) fn resolve_port(path: String, name: &str, ports: &[Port]) -> Res<usize> {
    ports.iter().position(|p| p.name == name).ok_or_else(|| {
        let names: Vec<&str> = ports.iter().map(|p| p.name.as_str()).collect();
        ConfigError::invalid(path, format!("no port named {name:?} (ports: {})", names.join(", ")))
    })
}

/// A list of port names (`srv6.trusted_ports`, `nat.inside`): 1..=16, each
/// a port, none twice, each passing `check` (given its path and index).
pub(super) fn resolve_port_list(
    path: &str,
    names: &[String],
    ports: &[Port],
    check: impl Fn(&str, usize) -> Res<()>,
) -> Res<Vec<usize>> {
    count(path, names.len(), 1, MAX_PORTS)?;
    let mut out: Vec<usize> = Vec::with_capacity(names.len());
    for (i, name) in names.iter().enumerate() {
        let entry = format!("{path}[{i}]");
        let p = resolve_port(entry.clone(), name, ports)?;
        if let Some(j) = out.iter().position(|&q| q == p) {
            return Err(ConfigError::invalid(entry, format!("duplicate port {name} (also {path}[{j}])")));
        }
        check(&entry, p)?;
        out.push(p);
    }
    Ok(out)
}

/// The field path of `ip` if it is one of the node's own addresses.
pub(super) fn own_address(ip: IpAddr, ports: &[Port]) -> Option<String> {
    ports.iter().enumerate().find_map(|(i, p)| match ip {
        IpAddr::V4(a) => p.ipv4.iter().position(|c| c.addr == a).map(|k| format!("ports[{i}].ipv4[{k}]")),
        IpAddr::V6(a) => p.ipv6.iter().position(|c| c.addr == a).map(|k| format!("ports[{i}].ipv6[{k}]")),
    })
}

/// The port and field path of the connected subnet equal to `prefix`, if any.
pub(super) fn connected(prefix: &IpCidr, ports: &[Port]) -> Option<(String, String)> {
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

/// Parses one of the node's own IPv6 addresses (`srv6.encap_source`,
/// `srv6.steering[].source`).
pub(super) fn own_ipv6(path: &str, s: &str, ports: &[Port]) -> Res<Ipv6Addr> {
    let a: Ipv6Addr = s.parse().map_err(|_| ConfigError::invalid(path, format!("{s} is not an IPv6 address")))?;
    if own_address(IpAddr::V6(a), ports).is_none() {
        return Err(ConfigError::invalid(path, format!("{a} is not an address of this node (one of ports[].ipv6)")));
    }
    Ok(a)
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;

    #[test]
    fn ports_count() {
        assert_err("ports: []\n", "ports: must have 1..=16 entries, has 0");
        assert_err("{}\n", "ports: must have 1..=16 entries, has 0");
        let many: Vec<String> = (0..17).map(|i| format!("  - {{name: p{i}, device: net_null{i}}}\n")).collect();
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
        assert_err_starts(&edit("name: inside", "name: a-very-long-name-x"), "ports[0].name: ");
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
        assert_err_starts(&edit("device: net_af_packet0", "device: \"net_af_packet0,iface=x\""), "ports[0].device: ");
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
        assert_err_starts(&edit("iface=veth0,qpairs=1", "iface=veth0, qpairs=1"), "ports[0].args: ");
    }

    #[test]
    fn port_queues() {
        assert_err(
            &edit("    args: \"iface=veth1,qpairs=1\"\n", "    args: \"iface=veth1,qpairs=1\"\n    queues: 65\n"),
            "ports[1].queues: must be 1..=64",
        );
        assert_err(
            &edit("    args: \"iface=veth1,qpairs=1\"\n", "    args: \"iface=veth1,qpairs=1\"\n    queues: 0\n"),
            "ports[1].queues: must be 1..=64",
        );
    }

    #[test]
    fn af_packet_qpairs() {
        assert_err_starts(
            &edit("    args: \"iface=veth1,qpairs=1\"\n", "    args: \"iface=veth1,qpairs=1\"\n    queues: 2\n"),
            "ports[1].queues: 2 rx queues, but the device has qpairs=1",
        );
        assert_err_starts(
            &edit("    args: \"iface=veth1,qpairs=1\"\n", "    args: \"iface=veth1\"\n    queues: 2\n"),
            "ports[1].queues: 2 rx queues, but the device has qpairs=1",
        );
        assert_err_starts(
            &format!("{BASE}lcores:\n  workers: [{{lcore: 1}}, {{lcore: 2}}]\n"),
            "ports[0].args: qpairs=1, but each of the 2 workers needs its own tx queue",
        );
        assert_err(&edit("qpairs=1\"\n    ipv4", "qpairs=x\"\n    ipv4"), "ports[0].args: qpairs=x is not a number");
        ok(&edit("    args: \"iface=veth1,qpairs=1\"\n", "    args: \"iface=veth1,qpairs=4\"\n    queues: 4\n"));
    }

    #[test]
    fn port_descriptors() {
        let add = |f: &str| {
            edit("    args: \"iface=veth0,qpairs=1\"\n", &format!("    args: \"iface=veth0,qpairs=1\"\n    {f}\n"))
        };
        assert_err(&add("rx_descriptors: 32"), "ports[0].rx_descriptors: must be 64..=16384");
        assert_err(
            &add("rx_descriptors: 1000"),
            "ports[0].rx_descriptors: 1000 is not a power of two (must be a power of two in 64..=16384)",
        );
        assert_err(&add("tx_descriptors: 32768"), "ports[0].tx_descriptors: must be 64..=16384");
        assert_err_starts(&add("tx_descriptors: 1536"), "ports[0].tx_descriptors: 1536 is not a power of two");
    }

    #[test]
    fn port_mtu() {
        let add = |f: &str| {
            edit("    args: \"iface=veth0,qpairs=1\"\n", &format!("    args: \"iface=veth0,qpairs=1\"\n    {f}\n"))
        };
        assert_err(&add("mtu: 67"), "ports[0].mtu: must be 68..=9000");
        assert_err(&add("mtu: 9001"), "ports[0].mtu: must be 68..=9000");
        assert_err_starts(
            &add("mtu: 9000"),
            "ports[0].mtu: a frame of mtu 9000 does not fit in one mbuf: mempool.data_room_bytes must be >= 9146",
        );
        ok(&format!("{}mempool: {{data_room_bytes: 9146, mbufs: 16383}}\n", add("mtu: 9000")));
        assert_err(&add("mtu: 1279"), "ports[0].ipv6: IPv6 needs an mtu of at least 1280, but ports[0].mtu is 1279");
    }

    #[test]
    fn port_mac() {
        let add = |f: &str| {
            edit("    args: \"iface=veth0,qpairs=1\"\n", &format!("    args: \"iface=veth0,qpairs=1\"\n    {f}\n"))
        };
        assert_eq!(ok(&add("mac: \"02:00:00:00:00:01\"")).ports[0].mac, Some([2, 0, 0, 0, 0, 1]));
        assert_err_starts(&add("mac: \"02:00:00:00:00\""), "ports[0].mac: \"02:00:00:00:00\" is not a MAC address");
        assert_err(&add("mac: \"03:00:00:00:00:01\""), "ports[0].mac: 03:00:00:00:00:01 is not a unicast MAC address");
        assert_err(&add("mac: \"00:00:00:00:00:00\""), "ports[0].mac: 00:00:00:00:00:00 is not a unicast MAC address");
    }

    #[test]
    fn port_ipv4_syntax() {
        assert_err(&edit("192.0.2.1/24", "192.0.2.1/33"), "ports[0].ipv4[0]: prefix length 33 is out of range 0..=32");
        assert_err(&edit("192.0.2.1/24", "192.0.2.300/24"), "ports[0].ipv4[0]: 192.0.2.300 is not an IPv4 address");
        assert_err_starts(&edit("192.0.2.1/24", "192.0.2.1"), "ports[0].ipv4[0]: 192.0.2.1 has no prefix length");
        assert_err(&edit("192.0.2.1/24", "2001:db8::1/64"), "ports[0].ipv4[0]: 2001:db8::1 is not an IPv4 address");
        assert_err(&edit("192.0.2.1/24", "192.0.2.1/x"), "ports[0].ipv4[0]: prefix length \"x\" is not a number");
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
            ("255.255.255.255/32", "255.255.255.255 is the broadcast address"),
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
        assert_err_starts(&edit("2001:db8:1::1/64", "fe80::1/64"), "ports[0].ipv6[0]: fe80::1 is link-local");
        assert_err_starts(
            &edit("2001:db8:1::1/64", "2001:db8:1::1/0"),
            "ports[0].ipv6[0]: prefix length 0 is not allowed",
        );
    }

    #[test]
    fn port_address_count() {
        let nine: Vec<String> = (1..=9).map(|i| format!("\"192.0.2.{i}/24\"")).collect();
        assert_err(
            &edit("ipv4: [\"192.0.2.1/24\"]", &format!("ipv4: [{}]", nine.join(", "))),
            "ports[0].ipv4: must have 0..=8 entries, has 9",
        );
        let nine: Vec<String> = (1..=9).map(|i| format!("\"2001:db8:1::{i}/64\"")).collect();
        assert_err(
            &edit("ipv6: [\"2001:db8:1::1/64\"]", &format!("ipv6: [{}]", nine.join(", "))),
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
        ok(&edit("\"192.0.2.1/24\"]", "\"192.0.2.1/24\", \"192.0.2.3/24\"]"));
    }
}
