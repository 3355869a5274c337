//! The forwarding base every stage stands on: the ports, the route tables,
//! the next hops they lead to, the neighbour table, and the one place where
//! a packet's egress is resolved ([`Fib::resolve_egress`]: MTU, neighbour,
//! MAC rewrite).
//!
//! # Routes
//! Connected subnets come from the port addresses, static routes from the
//! config, and every feature adds its own kind of next hop: the node's own
//! addresses are host routes to [`NextHop::Local`], SRv6 local SIDs host
//! routes to [`NextHop::Sid`], steering policies prefixes to
//! [`NextHop::Encap`], NAT pool addresses host routes to [`NextHop::NatPool`]
//! and the storage service's object prefix a /64 to [`NextHop::Objects`].
//! So one lookup classifies a packet for every stage.
//!
//! IPv4 routes live in a DIR-24-8 table ([`dir24`]): one memory access for
//! prefixes up to /24, two for longer ones and host routes. IPv6 host routes
//! (/128: own addresses, SIDs) live in an exact-match table looked up first
//! (a host route is always the longest match, so one hash probe replaces a
//! trie walk of 16 levels for what the node itself serves); other IPv6
//! prefixes in a stride-8 trie ([`lpm`]).
//!
//! # Invariants
//! * Everything is built at start-up and read-only afterwards, except the
//!   neighbour table, which only the control core writes (seqlocks; workers
//!   read it on every forwarded packet).
//! * [`Fib::resolve_egress`] changes nothing: a stage asks it first and
//!   rewrites only on `Ok`, so a packet punted for `neighbor_miss` or
//!   `too_big` is still as the stage received it.
//!
//! # Limits
//! Routes ≤ 65 536, ports ≤ 16, addresses per port ≤ 8 per family (checked
//! by the config); the trie's node budget is computed from the route count.

pub mod dir24;
pub mod lpm;
pub mod neigh;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use netwire::prefix::{Ipv4Cidr, Ipv6Cidr};

use self::dir24::{Dir24, Dir24Error};
use self::lpm::Lpm6;
use self::neigh::{ip_key, NeighborTable};
use crate::stats::{DropReason, PuntReason};

/// What the pipeline needs to know about one port.
#[derive(Debug, Clone)]
pub struct PortInfo {
    pub name: String,
    pub mac: [u8; 6],
    pub mtu: u16,
    /// The node's own IPv4 addresses on this port, with their prefix length.
    pub ipv4: Vec<(Ipv4Addr, u8)>,
    /// The node's own IPv6 addresses on this port (global ones from the
    /// config, then the link-local one derived from the MAC).
    pub ipv6: Vec<(Ipv6Addr, u8)>,
    /// Whether TCP/UDP received on this port may carry partial checksums (a
    /// kernel or a VM on the other side of a veth, tap or virtio link): input
    /// then recognises and completes them (`pipeline/partial.rs`).
    pub partial_checksums: bool,
}

impl PortInfo {
    /// The first IPv4 address (source of ICMP errors sent from this port).
    pub fn primary_ipv4(&self) -> Option<Ipv4Addr> {
        self.ipv4.first().map(|a| a.0)
    }

    /// The first global IPv6 address, else the link-local one.
    pub fn primary_ipv6(&self) -> Option<Ipv6Addr> {
        self.ipv6.iter().find(|a| !is_link_local6(a.0)).or(self.ipv6.first()).map(|a| a.0)
    }

    /// The link-local address, if any.
    pub fn link_local6(&self) -> Option<Ipv6Addr> {
        self.ipv6.iter().find(|a| is_link_local6(a.0)).map(|a| a.0)
    }

    /// True if `ip` is one of this port's own addresses.
    pub fn owns(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(v4) => self.ipv4.iter().any(|a| a.0 == v4),
            IpAddr::V6(v6) => self.ipv6.iter().any(|a| a.0 == v6),
        }
    }

    /// True if `ip` is on one of this port's connected subnets.
    pub fn on_link(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(v4) => self.ipv4.iter().any(|&(addr, len)| Ipv4Cidr { addr, len }.contains(v4)),
            IpAddr::V6(v6) => self.ipv6.iter().any(|&(addr, len)| Ipv6Cidr { addr, len }.contains(v6)),
        }
    }

    /// Our IPv4 address on the subnet of `target` (the sender address of an
    /// ARP request for it), else the port's first.
    pub fn source_v4_for(&self, target: Ipv4Addr) -> Option<Ipv4Addr> {
        self.ipv4
            .iter()
            .find(|&&(addr, len)| Ipv4Cidr { addr, len }.contains(target))
            .map(|a| a.0)
            .or_else(|| self.primary_ipv4())
    }

    /// Our IPv6 address on the subnet of `target` (the source of a neighbour
    /// solicitation for it), else the link-local one, else the first.
    pub fn source_v6_for(&self, target: Ipv6Addr) -> Option<Ipv6Addr> {
        self.ipv6
            .iter()
            .find(|&&(addr, len)| Ipv6Cidr { addr, len }.contains(target))
            .map(|a| a.0)
            .or_else(|| self.link_local6())
            .or_else(|| self.primary_ipv6())
    }
}

/// The IPv6 link-local address derived from a MAC (modified EUI-64, RFC 4291 App. A).
pub fn link_local_from_mac(mac: [u8; 6]) -> Ipv6Addr {
    Ipv6Addr::from([0xfe, 0x80, 0, 0, 0, 0, 0, 0, mac[0] ^ 0x02, mac[1], mac[2], 0xff, 0xfe, mac[3], mac[4], mac[5]])
}

/// True for fe80::/10.
pub fn is_link_local6(a: Ipv6Addr) -> bool {
    a.segments()[0] & 0xffc0 == 0xfe80
}

/// A static route as the pipeline takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteSpec {
    pub prefix: IpAddr,
    pub len: u8,
    pub port: u16,
    /// Gateway; `None` means the destination itself is on-link.
    pub via: Option<IpAddr>,
}

/// Where a route lookup leads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextHop {
    /// One of our own addresses (on this port).
    Local { port: u16 },
    /// Out of `port`, to `via` or (when `None`) to the destination itself.
    Forward { port: u16, via: Option<IpAddr> },
    /// A local SRv6 SID: index into the SID table.
    Sid(u16),
    /// An SRv6 steering policy (H.Encaps): index into the policy table.
    Encap(u16),
    /// A NAT pool address: inbound NAT (translated, then routed again).
    NatPool,
    /// An address in the node's object prefix: a replica address of the
    /// storage service (UDP to its port), otherwise treated as our own.
    Objects,
}

/// Why the tables could not be built.
#[derive(Debug, thiserror::Error)]
pub enum FibError {
    #[error("route {prefix}/{len}: {source}")]
    Route { prefix: IpAddr, len: u8, source: lpm::LpmError },
    #[error("IPv4 routes: {0}")]
    Routes4(#[from] Dir24Error),
    #[error("route {prefix}/{len}: port {port} does not exist")]
    NoSuchPort { prefix: IpAddr, len: u8, port: u16 },
    #[error("srv6: {0}")]
    Srv6(String),
    #[error("nat: {0}")]
    Nat(String),
}

/// Exact-match table of host routes (/32, /128). Open addressing, built at
/// start, read-only.
#[derive(Debug, Clone, Default)]
struct HostRoutes {
    /// (key, next-hop index); index `u32::MAX` marks an empty slot.
    slots: Vec<(u128, u32)>,
    mask: usize,
}

impl HostRoutes {
    fn new(capacity: usize) -> HostRoutes {
        let n = (capacity.max(1) * 2).next_power_of_two();
        HostRoutes { slots: vec![(0, u32::MAX); n], mask: n - 1 }
    }

    #[inline]
    fn slot(&self, key: u128) -> usize {
        let h = (key as u64 ^ (key >> 64) as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        (h ^ (h >> 29)) as usize & self.mask
    }

    /// Inserts or replaces (capacity is fixed: callers size it for every host route).
    fn insert(&mut self, key: u128, value: u32) {
        let mut i = self.slot(key);
        loop {
            let (k, v) = self.slots[i];
            if v == u32::MAX || k == key {
                self.slots[i] = (key, value);
                return;
            }
            i = (i + 1) & self.mask;
        }
    }

    #[inline]
    fn get(&self, key: u128) -> Option<u32> {
        let mut i = self.slot(key);
        loop {
            let (k, v) = self.slots[i];
            if v == u32::MAX {
                return None;
            }
            if k == key {
                return Some(v);
            }
            i = (i + 1) & self.mask;
        }
    }
}

/// Where a packet leaves: the port and the two MACs of its new Ethernet header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Egress {
    pub port: u16,
    pub dst_mac: [u8; 6],
    pub src_mac: [u8; 6],
}

impl Egress {
    /// Writes the destination and source MACs at the start of `frame`.
    #[inline(always)]
    pub fn write_macs(&self, frame: &mut [u8]) {
        frame[0..6].copy_from_slice(&self.dst_mac);
        frame[6..12].copy_from_slice(&self.src_mac);
    }
}

/// Why a packet cannot leave yet, and what it needs explained to the
/// control core (the `too_big` MTU, the missing neighbour).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EgressMiss {
    /// IPv4 without DF larger than the MTU: the node does not fragment.
    FragmentationNeeded,
    /// Too big: an ICMP error reports `mtu` (already less any overhead).
    TooBig { mtu: u16 },
    /// The next hop has no MAC yet (the caller knows which: the port and
    /// next hop it asked about).
    Neighbor,
}

impl EgressMiss {
    /// The verdict reason of the miss.
    pub fn reason(self) -> Result<PuntReason, DropReason> {
        match self {
            EgressMiss::FragmentationNeeded => Err(DropReason::FragmentationNeeded),
            EgressMiss::TooBig { .. } => Ok(PuntReason::TooBig),
            EgressMiss::Neighbor => Ok(PuntReason::NeighborMiss),
        }
    }
}

/// One entry of the route table, as listed by [`Fib::entries`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FibEntry {
    pub prefix: IpAddr,
    pub len: u8,
    pub next_hop: NextHop,
}

/// The tables while [`Fib::build`] fills them.
struct Builder {
    /// (address, prefix length, next-hop index), in insertion order.
    routes4: Vec<(u32, u8, u32)>,
    routes6: Lpm6,
    hosts6: HostRoutes,
    nexthops: Vec<NextHop>,
    /// Every route added, for listings.
    entries: Vec<FibEntry>,
}

impl Builder {
    fn add(&mut self, prefix: IpAddr, len: u8, nh: NextHop) -> Result<(), FibError> {
        let idx = self.nexthops.len() as u32;
        self.nexthops.push(nh);
        self.entries.push(FibEntry { prefix, len, next_hop: nh });
        match prefix {
            IpAddr::V4(a) => {
                if len > 32 {
                    return Err(FibError::Routes4(Dir24Error::PrefixTooLong(len)));
                }
                self.routes4.push((u32::from(a), len, idx));
                Ok(())
            }
            IpAddr::V6(a) if len == 128 => {
                self.hosts6.insert(u128::from(a), idx);
                Ok(())
            }
            IpAddr::V6(a) => {
                self.routes6.insert_v6(a, len, idx).map_err(|source| FibError::Route { prefix, len, source })
            }
        }
    }
}

/// The forwarding base (immutable after start, but for the neighbour table).
pub struct Fib {
    ports: Vec<PortInfo>,
    routes4: Dir24,
    routes6: Lpm6,
    hosts6: HostRoutes,
    nexthops: Vec<NextHop>,
    neigh: Arc<NeighborTable>,
    entries: Vec<FibEntry>,
    /// Per port, the broadcast addresses of its IPv4 subnets (shorter than
    /// /31), computed once: the forward stage checks every packet sent to an
    /// on-link destination against them (RFC 2644).
    broadcasts4: Vec<Box<[u32]>>,
    /// Per port, its IPv4 addresses and their subnets' broadcasts: sources
    /// a packet received there cannot have (RFC 1812 §5.3.7).
    foreign_sources4: Vec<Box<[u32]>>,
}

/// The broadcast address of a subnet (none for /31 and /32, RFC 3021).
#[inline]
pub fn subnet_broadcast(addr: Ipv4Addr, len: u8) -> Option<Ipv4Addr> {
    (len < 31).then(|| Ipv4Addr::from(u32::from(addr) | (u32::MAX >> len)))
}

/// The feature routes a [`Fib`] is built with besides the connected and
/// static ones.
#[derive(Debug, Clone, Default)]
pub struct FeatureRoutes {
    /// SRv6 steering policies: (prefix, length), in policy-index order.
    pub policies: Vec<(IpAddr, u8)>,
    /// SRv6 local SIDs, in SID-index order.
    pub sids: Vec<Ipv6Addr>,
    /// NAT pool addresses.
    pub nat_pool: Vec<Ipv4Addr>,
    /// The storage service's object prefix (a /64).
    pub objects: Option<Ipv6Addr>,
}

impl Fib {
    /// Builds the tables: connected routes for every port address, the
    /// static routes (a static route for the same prefix as a connected one
    /// replaces it), the feature routes, then a host route to "local" for
    /// every own address (a /32 or /128 always wins).
    pub fn build(
        ports: Vec<PortInfo>,
        routes: &[RouteSpec],
        features: &FeatureRoutes,
        neigh: Arc<NeighborTable>,
    ) -> Result<Fib, FibError> {
        let n_routes = routes.len()
            + 1
            + features.sids.len()
            + features.policies.len()
            + ports.iter().map(|p| 2 * (p.ipv4.len() + p.ipv6.len())).sum::<usize>();
        // Trie node budget: each IPv6 prefix needs at most 15 new nodes.
        let mut b = Builder {
            routes4: Vec::new(),
            routes6: Lpm6::new(1 + n_routes * 15),
            hosts6: HostRoutes::new(n_routes),
            nexthops: Vec::new(),
            entries: Vec::new(),
        };
        let connected: Vec<(IpAddr, u8, u16)> = ports
            .iter()
            .enumerate()
            .flat_map(|(i, p)| {
                let v4 = p.ipv4.iter().map(move |&(a, l)| (IpAddr::V4(a), l, i as u16));
                let v6 = p.ipv6.iter().map(move |&(a, l)| (IpAddr::V6(a), l, i as u16));
                v4.chain(v6)
            })
            .collect();
        for &(prefix, len, port) in &connected {
            b.add(prefix, len, NextHop::Forward { port, via: None })?;
        }
        for r in routes {
            if usize::from(r.port) >= ports.len() {
                return Err(FibError::NoSuchPort { prefix: r.prefix, len: r.len, port: r.port });
            }
            b.add(r.prefix, r.len, NextHop::Forward { port: r.port, via: r.via })?;
        }
        for (i, &(prefix, len)) in features.policies.iter().enumerate() {
            b.add(prefix, len, NextHop::Encap(i as u16))?;
        }
        for (i, &sid) in features.sids.iter().enumerate() {
            b.add(IpAddr::V6(sid), 128, NextHop::Sid(i as u16))?;
        }
        if let Some(prefix) = features.objects {
            b.add(IpAddr::V6(prefix), 64, NextHop::Objects)?;
        }
        for &(addr, _, port) in &connected {
            b.add(addr, if addr.is_ipv4() { 32 } else { 128 }, NextHop::Local { port })?;
        }
        if !features.nat_pool.is_empty() {
            // One next hop shared by every pool address.
            let idx = b.nexthops.len() as u32;
            b.nexthops.push(NextHop::NatPool);
            for a in &features.nat_pool {
                if ports.iter().any(|p| p.owns(IpAddr::V4(*a))) {
                    return Err(FibError::Nat(format!("pool address {a} is a port address")));
                }
                b.routes4.push((u32::from(*a), 32, idx));
                b.entries.push(FibEntry { prefix: IpAddr::V4(*a), len: 32, next_hop: NextHop::NatPool });
            }
        }
        let broadcasts4: Vec<Box<[u32]>> = ports
            .iter()
            .map(|p| p.ipv4.iter().filter_map(|&(a, len)| subnet_broadcast(a, len)).map(u32::from).collect())
            .collect();
        let foreign_sources4 = ports
            .iter()
            .zip(&broadcasts4)
            .map(|(p, b)| p.ipv4.iter().map(|&(a, _)| u32::from(a)).chain(b.iter().copied()).collect())
            .collect();
        Ok(Fib {
            foreign_sources4,
            broadcasts4,
            routes4: Dir24::build(&b.routes4)?,
            routes6: b.routes6,
            hosts6: b.hosts6,
            nexthops: b.nexthops,
            ports,
            neigh,
            entries: b.entries,
        })
    }

    pub fn ports(&self) -> &[PortInfo] {
        &self.ports
    }

    /// True if `src` is one of `port`'s IPv4 addresses or a broadcast
    /// address of its subnets (a martian source there, RFC 1812 §5.3.7).
    #[inline]
    #[allow(clippy::manual_contains)] // contains() measured 21 instructions more per packet (callgrind)
    pub fn is_port_address_or_broadcast(&self, port: u16, src: Ipv4Addr) -> bool {
        let s = u32::from(src);
        self.foreign_sources4.get(usize::from(port)).is_some_and(|b| b.iter().any(|&a| a == s))
    }

    /// True if `dst` is the broadcast address of one of `port`'s IPv4
    /// subnets (a directed broadcast, RFC 2644).
    #[inline]
    #[allow(clippy::manual_contains)] // as above
    pub fn is_subnet_broadcast(&self, port: u16, dst: Ipv4Addr) -> bool {
        let d = u32::from(dst);
        self.broadcasts4.get(usize::from(port)).is_some_and(|b| b.iter().any(|&a| a == d))
    }

    pub fn neighbors(&self) -> &Arc<NeighborTable> {
        &self.neigh
    }

    /// Every route in the order it was added (a later entry for the same
    /// prefix replaced an earlier one in the lookup tables).
    pub fn entries(&self) -> &[FibEntry] {
        &self.entries
    }

    /// Route lookup.
    #[inline]
    pub fn route(&self, dst: IpAddr) -> Option<NextHop> {
        let idx = match dst {
            IpAddr::V4(a) => self.routes4.lookup(u32::from(a))?,
            IpAddr::V6(a) => match self.hosts6.get(u128::from(a)) {
                Some(i) => i,
                None => self.routes6.lookup_v6(a)?,
            },
        };
        self.nexthops.get(idx as usize).copied()
    }

    /// The port and next-hop address a plainly forwarded packet to `dst`
    /// goes to (`None` for local destinations, SIDs and steered prefixes).
    pub fn next_hop(&self, dst: IpAddr) -> Option<(u16, IpAddr)> {
        match self.route(dst)? {
            NextHop::Forward { port, via } => Some((port, via.unwrap_or(dst))),
            _ => None,
        }
    }

    /// Resolves the egress of a packet leaving `port` towards `next_hop`:
    /// the packet's IP length after the stage's rewrite (`ip_len`) must fit
    /// the port's MTU (an ICMP error reports the MTU less `overhead`, the
    /// bytes the node itself adds; IPv4 without DF (`df` false) is dropped
    /// instead: the node never fragments), and the next hop must have a
    /// MAC. Changes nothing.
    #[inline(always)]
    pub fn resolve_egress(
        &self,
        port: u16,
        next_hop: IpAddr,
        ip_len: usize,
        overhead: usize,
        df: bool,
    ) -> Result<Egress, EgressMiss> {
        let out = &self.ports[usize::from(port)];
        if ip_len > usize::from(out.mtu) {
            return Err(if df {
                EgressMiss::TooBig { mtu: out.mtu.saturating_sub(overhead as u16) }
            } else {
                EgressMiss::FragmentationNeeded
            });
        }
        match self.neigh.lookup_key(port, ip_key(next_hop)) {
            Some(dst_mac) => Ok(Egress { port, dst_mac, src_mac: out.mac }),
            None => Err(EgressMiss::Neighbor),
        }
    }
}
