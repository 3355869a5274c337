//! The L3 stage of the worker pipeline: classify a received frame and give it
//! a verdict: forward it (rewritten in place), hand it to the control core
//! (punt, with a reason), or drop it (with a reason).
//!
//! ```text
//!  frame ─► Ethernet: ours/broadcast/multicast? ── no ─► drop eth_not_for_us
//!             │ ARP ───────────────────────────────────► punt arp
//!             │ IPv4 / IPv6: header checks ── bad ─────► drop ipv4_/ipv6_malformed ...
//!             ▼
//!          route lookup (LPM; our own addresses are host routes to "local")
//!             │ none ─────────────────────────────────► punt no_route   (ICMP unreachable)
//!             │ local: echo request ──────────────────► reply in place, forward to in_port
//!             │        ND (NS/NA) ────────────────────► punt nd
//!             │        UDP ───────────────────────────► punt port_unreachable
//!             │ TTL/hop limit ≤ 1 ────────────────────► punt ttl_expired (ICMP time exceeded)
//!             │ longer than egress MTU ───────────────► punt too_big / drop fragmentation_needed
//!             │ next hop not resolved ────────────────► punt neighbor_miss (held, not dropped)
//!             ▼
//!          decrement TTL (incremental checksum), rewrite MACs ─► forward(port)
//! ```
//!
//! SRv6 ([`crate::srv6`]) plugs in through the route lookup: a local SID is a
//! host route whose next hop is [`NextHop::Sid`], a steering policy a prefix
//! whose next hop is [`NextHop::Encap`]. NAT will plug in on IPv4 before the
//! lookup.
//!
//! Everything here is pure: it works on a byte slice and the read-only tables
//! built at start-up ([`L3`] is immutable and shared by all workers), plus the
//! neighbour table, which workers only read, and the worker's own
//! [`WorkerState`].
//!
//! Re-run rule: a packet punted for `neighbor_miss` is in a state from which
//! running the pipeline again ([`L3::rerun`]) gives the same result as if the
//! neighbour had been known. Plain forwarding and every SRv6 behaviour look
//! up the egress neighbour *before* they rewrite anything, so such a packet
//! is usually exactly as received; after a committed SRv6 step
//! (decapsulation, a local next segment) it is the committed state, from
//! which processing continues the same way. The control core finds which
//! neighbour is missing by a dry run on a copy ([`L3::missing_neighbor`]).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use crate::lpm::{Lpm4, Lpm6};
use crate::nat::cache::CacheKey;
use crate::nat::fast::{NatPlan, Role};
use crate::nat::{msg, translate, Direction};
use crate::neigh::{ip_key, NeighborTable};
use netwire::prefix::{Ipv4Cidr, Ipv6Cidr};
use netwire::{PacketBuf, VecBuf};
use crate::srv6::{Srv6Config, Srv6Tables};
use crate::stats::{DropReason, PuntReason};
use netwire::{ethernet, icmpv4, icmpv6, ipv4, ipv6};

pub use crate::srv6::WorkerState;

/// Punt argument of a `neighbor_miss` punt: a storage SID passed the packet
/// on (so re-runs must pass it too).
pub const NEIGHBOR_MISS_STORAGE_PASSED: u32 = 1;
/// Punt argument of a `neighbor_miss` punt: NAT has translated the packet
/// (so re-runs must not translate it again).
pub const NEIGHBOR_MISS_NAT_DONE: u32 = 2;

/// What happens to a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Send it out of this port (the frame has been rewritten).
    Forward(u16),
    /// Hand it, unchanged, to the control core.
    Punt(PuntReason),
    /// Free it and count the reason.
    Drop(DropReason),
}

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
}

impl PortInfo {
    /// The first IPv4 address (source of ICMP errors sent from this port).
    pub fn primary_ipv4(&self) -> Option<Ipv4Addr> {
        self.ipv4.first().map(|a| a.0)
    }

    /// The first global IPv6 address, else the link-local one.
    pub fn primary_ipv6(&self) -> Option<Ipv6Addr> {
        self.ipv6
            .iter()
            .find(|a| !is_link_local6(a.0))
            .or(self.ipv6.first())
            .map(|a| a.0)
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
            IpAddr::V4(v4) => self.ipv4.iter().any(|&(a, l)| in_subnet4(a, l, v4)),
            IpAddr::V6(v6) => self.ipv6.iter().any(|&(a, l)| in_subnet6(a, l, v6)),
        }
    }

    /// Our IPv4 address on the subnet of `target` (the sender address of an
    /// ARP request for it), else the port's first.
    pub fn source_v4_for(&self, target: Ipv4Addr) -> Option<Ipv4Addr> {
        self.ipv4.iter().find(|&&(a, l)| in_subnet4(a, l, target)).map(|a| a.0).or_else(|| self.primary_ipv4())
    }

    /// Our IPv6 address on the subnet of `target` (the source of a neighbour
    /// solicitation for it), else the link-local one, else the first.
    pub fn source_v6_for(&self, target: Ipv6Addr) -> Option<Ipv6Addr> {
        self.ipv6
            .iter()
            .find(|&&(a, l)| in_subnet6(a, l, target))
            .map(|a| a.0)
            .or_else(|| self.link_local6())
            .or_else(|| self.primary_ipv6())
    }
}

fn in_subnet4(addr: Ipv4Addr, len: u8, ip: Ipv4Addr) -> bool {
    Ipv4Cidr { addr, len }.contains(ip)
}

fn in_subnet6(addr: Ipv6Addr, len: u8, ip: Ipv6Addr) -> bool {
    Ipv6Cidr { addr, len }.contains(ip)
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
pub enum L3Error {
    #[error("route {prefix}/{len}: {source}")]
    Route { prefix: IpAddr, len: u8, source: crate::lpm::LpmError },
    #[error("route {prefix}/{len}: port {port} does not exist")]
    NoSuchPort { prefix: IpAddr, len: u8, port: u16 },
    #[error("srv6: {0}")]
    Srv6(String),
    #[error("nat: {0}")]
    Nat(String),
}

/// The immutable forwarding state shared by all workers.
/// Exact-match table of host routes (/32, /128: the node's own addresses,
/// local SIDs, host routes from the config). A host route is always the
/// longest match, so one hash probe replaces a trie walk of 4 or 16 levels
/// for the destinations the node itself serves (a /128 SID lookup was a third
/// of the End behaviour's cost). Open addressing, built at start, read-only.
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

pub struct L3 {
    ports: Vec<PortInfo>,
    routes4: Lpm4,
    routes6: Lpm6,
    hosts4: HostRoutes,
    hosts6: HostRoutes,
    nexthops: Vec<NextHop>,
    neigh: Arc<NeighborTable>,
    pub(crate) srv6: Srv6Tables,
    nat: Option<NatPlan>,
    /// The object prefix's storage service UDP port (0: no storage service).
    objects_port: u16,
    /// The node's object prefix (with the storage service).
    objects_prefix: Option<Ipv6Addr>,
}

/// The IPv6 link-local address derived from a MAC (modified EUI-64, RFC 4291 App. A).
pub fn link_local_from_mac(mac: [u8; 6]) -> Ipv6Addr {
    Ipv6Addr::from([
        0xfe, 0x80, 0, 0, 0, 0, 0, 0,
        mac[0] ^ 0x02, mac[1], mac[2], 0xff, 0xfe, mac[3], mac[4], mac[5],
    ])
}

fn is_link_local6(a: Ipv6Addr) -> bool {
    a.segments()[0] & 0xffc0 == 0xfe80
}

impl L3 {
    /// Builds the tables: connected routes for every port address, a host
    /// route to "local" for every own address, then the static routes (a
    /// static route for the same prefix as a connected one replaces it).
    pub fn new(ports: Vec<PortInfo>, routes: &[RouteSpec], neigh: Arc<NeighborTable>) -> Result<L3, L3Error> {
        Self::with_srv6(ports, routes, &Srv6Config::default(), neigh)
    }

    /// As [`L3::new`], with SRv6 local SIDs and steering policies.
    pub fn with_srv6(
        ports: Vec<PortInfo>,
        routes: &[RouteSpec],
        srv6: &Srv6Config,
        neigh: Arc<NeighborTable>,
    ) -> Result<L3, L3Error> {
        Self::with_nat(ports, routes, srv6, None, neigh)
    }

    /// As [`L3::with_srv6`], with NAT44 (`nat`: port roles and pool; every
    /// pool address becomes a host route to [`NextHop::NatPool`]).
    pub fn with_nat(
        ports: Vec<PortInfo>,
        routes: &[RouteSpec],
        srv6: &Srv6Config,
        nat: Option<NatPlan>,
        neigh: Arc<NeighborTable>,
    ) -> Result<L3, L3Error> {
        Self::build(ports, routes, srv6, nat, None, neigh)
    }

    /// Everything: as [`L3::with_nat`], plus the storage service's object
    /// prefix (a /64 routed to [`NextHop::Objects`]) and UDP port.
    pub fn build(
        ports: Vec<PortInfo>,
        routes: &[RouteSpec],
        srv6: &Srv6Config,
        nat: Option<NatPlan>,
        objects: Option<(Ipv6Addr, u16)>,
        neigh: Arc<NeighborTable>,
    ) -> Result<L3, L3Error> {
        let n_pool = nat.as_ref().map_or(0, |n| n.pool.len());
        let n_routes = routes.len()
            + 1
            + srv6.sids.len()
            + srv6.policies.len()
            + ports.iter().map(|p| 2 * (p.ipv4.len() + p.ipv6.len())).sum::<usize>();
        // Node budget: each prefix of up to N bytes needs at most N-1 new nodes.
        let mut routes4 = Lpm4::new(1 + n_routes * 3);
        let mut routes6 = Lpm6::new(1 + n_routes * 15);
        let mut hosts4 = HostRoutes::new(n_routes + n_pool);
        let mut hosts6 = HostRoutes::new(n_routes);
        let mut nexthops = Vec::new();
        let mut add = |prefix: IpAddr, len: u8, nh: NextHop| -> Result<(), L3Error> {
            let idx = nexthops.len() as u32;
            nexthops.push(nh);
            let r = match prefix {
                IpAddr::V4(a) if len == 32 => {
                    hosts4.insert(u128::from(u32::from(a)), idx);
                    Ok(())
                }
                IpAddr::V6(a) if len == 128 => {
                    hosts6.insert(u128::from(a), idx);
                    Ok(())
                }
                IpAddr::V4(a) => routes4.insert_v4(a, len, idx),
                IpAddr::V6(a) => routes6.insert_v6(a, len, idx),
            };
            r.map_err(|source| L3Error::Route { prefix, len, source })
        };
        for (i, p) in ports.iter().enumerate() {
            let port = i as u16;
            for &(a, l) in &p.ipv4 {
                add(IpAddr::V4(a), l, NextHop::Forward { port, via: None })?;
            }
            for &(a, l) in &p.ipv6 {
                add(IpAddr::V6(a), l, NextHop::Forward { port, via: None })?;
            }
        }
        for r in routes {
            if usize::from(r.port) >= ports.len() {
                return Err(L3Error::NoSuchPort { prefix: r.prefix, len: r.len, port: r.port });
            }
            add(r.prefix, r.len, NextHop::Forward { port: r.port, via: r.via })?;
        }
        for (i, pol) in srv6.policies.iter().enumerate() {
            add(pol.prefix, pol.len, NextHop::Encap(i as u16))?;
        }
        for (i, sid) in srv6.sids.iter().enumerate() {
            add(IpAddr::V6(sid.sid), 128, NextHop::Sid(i as u16))?;
        }
        if let Some((prefix, _)) = objects {
            add(IpAddr::V6(prefix), 64, NextHop::Objects)?;
        }
        // Own addresses last: a /32 or /128 always wins.
        for (i, p) in ports.iter().enumerate() {
            let port = i as u16;
            for &(a, _) in &p.ipv4 {
                add(IpAddr::V4(a), 32, NextHop::Local { port })?;
            }
            for &(a, _) in &p.ipv6 {
                add(IpAddr::V6(a), 128, NextHop::Local { port })?;
            }
        }
        if let Some(plan) = &nat {
            if plan.roles.len() != ports.len() {
                return Err(L3Error::Nat(format!("{} port roles for {} ports", plan.roles.len(), ports.len())));
            }
            // One next hop shared by every pool address.
            let idx = nexthops.len() as u32;
            nexthops.push(NextHop::NatPool);
            for a in &plan.pool {
                if ports.iter().any(|p| p.owns(IpAddr::V4(*a))) {
                    return Err(L3Error::Nat(format!("pool address {a} is a port address")));
                }
                hosts4.insert(u128::from(u32::from(*a)), idx);
            }
        }
        let mut l3 = L3 { ports, routes4, routes6, hosts4, hosts6, nexthops, neigh, srv6: Srv6Tables::default(), nat, objects_port: objects.map_or(0, |o| o.1), objects_prefix: objects.map(|o| o.0) };
        l3.srv6 = Srv6Tables::build(&l3, srv6).map_err(L3Error::Srv6)?;
        Ok(l3)
    }

    pub fn ports(&self) -> &[PortInfo] {
        &self.ports
    }

    /// The SRv6 tables (local SIDs, steering policies).
    pub fn srv6(&self) -> &Srv6Tables {
        &self.srv6
    }

    pub fn neighbors(&self) -> &Arc<NeighborTable> {
        &self.neigh
    }

    /// The storage service's object prefix, when it is configured.
    pub fn objects_prefix(&self) -> Option<Ipv6Addr> {
        self.objects_prefix
    }

    /// The NAT layout, when NAT is configured.
    pub fn nat(&self) -> Option<&NatPlan> {
        self.nat.as_ref()
    }

    /// True if `a` is a NAT pool address.
    pub fn is_nat_pool(&self, a: Ipv4Addr) -> bool {
        self.nat.is_some() && self.route(IpAddr::V4(a)) == Some(NextHop::NatPool)
    }

    /// Route lookup.
    #[inline]
    pub fn route(&self, dst: IpAddr) -> Option<NextHop> {
        let idx = match dst {
            IpAddr::V4(a) => match self.hosts4.get(u128::from(u32::from(a))) {
                Some(i) => i,
                None => self.routes4.lookup_v4(a)?,
            },
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

    /// Which neighbour (port, address) a frame that was punted for
    /// `neighbor_miss` (with punt argument `arg`) waits for: a dry run of the
    /// pipeline on a copy, deciding as the worker did.
    pub fn missing_neighbor(&self, frame: &[u8], in_port: u16, arg: u32, ws: &mut WorkerState) -> Option<(u16, IpAddr)> {
        let mut copy = VecBuf::from_frame(frame, in_port);
        ws.miss = None;
        match self.rerun(&mut copy, in_port, arg, ws) {
            Verdict::Punt(PuntReason::NeighborMiss) => ws.miss,
            _ => None,
        }
    }

    /// Runs a frame punted for `neighbor_miss` (with punt argument `arg`)
    /// through the pipeline again, deciding as the worker did.
    pub fn rerun<P: PacketBuf>(&self, pkt: &mut P, in_port: u16, arg: u32, ws: &mut WorkerState) -> Verdict {
        ws.storage_override = (arg & NEIGHBOR_MISS_STORAGE_PASSED != 0).then_some(false);
        ws.nat_skip = arg & NEIGHBOR_MISS_NAT_DONE != 0;
        let v = self.process(pkt, in_port, ws);
        ws.storage_override = None;
        ws.nat_skip = false;
        v
    }

    /// Test and tool helper: runs [`L3::process`] on a frame held in a
    /// vector (with mbuf-like headroom) and writes the result back.
    pub fn process_frame(&self, frame: &mut Vec<u8>, in_port: u16, ws: &mut WorkerState) -> Verdict {
        let mut buf = VecBuf::from_frame(frame, in_port);
        let v = self.process(&mut buf, in_port, ws);
        frame.clear();
        frame.extend_from_slice(buf.data());
        v
    }

    /// Gives the frame in `pkt`, received on `in_port`, its verdict.
    /// Forwarded and answered frames are rewritten in place (SRv6 may grow or
    /// shrink them); frames punted for `neighbor_miss` are unchanged.
    #[inline]
    pub fn process<P: PacketBuf>(&self, pkt: &mut P, in_port: u16, ws: &mut WorkerState) -> Verdict {
        ws.punt_arg = 0;
        ws.storage_passed = false;
        ws.nat_done = false;
        let v = self.process_at(pkt, in_port, ws, 0);
        if v == Verdict::Punt(PuntReason::NeighborMiss) {
            if ws.storage_passed {
                ws.punt_arg |= NEIGHBOR_MISS_STORAGE_PASSED;
            }
            if ws.nat_done {
                ws.punt_arg |= NEIGHBOR_MISS_NAT_DONE;
            }
        }
        v
    }

    /// `depth` counts re-entries after SRv6 decapsulation or a segment that
    /// is local again; it is bounded so no packet can loop inside the node.
    pub(crate) fn process_at<P: PacketBuf>(&self, pkt: &mut P, in_port: u16, ws: &mut WorkerState, depth: u8) -> Verdict {
        let Some(port) = self.ports.get(in_port as usize) else {
            return Verdict::Drop(DropReason::EthNotForUs);
        };
        let eth = match ethernet::Packet::new_checked(pkt.data()) {
            Ok(e) => e,
            Err(_) => return Verdict::Drop(DropReason::EthTruncated),
        };
        let dst = eth.dst_addr();
        if dst.0 != port.mac && !dst.is_multicast() {
            return Verdict::Drop(DropReason::EthNotForUs);
        }
        let ethertype = eth.ethertype();
        // RFC 1812 §5.3.4 / RFC 4443 §2.4(e): what arrived as link-layer
        // broadcast or multicast may be delivered locally but never forwarded.
        let l2_multicast = dst.is_multicast();
        if ethertype == ethernet::EtherType::IPV4 {
            self.ipv4(pkt, in_port, port, l2_multicast, ws)
        } else if ethertype == ethernet::EtherType::IPV6 {
            self.ipv6(pkt, in_port, port, l2_multicast, ws, depth)
        } else if ethertype == ethernet::EtherType::ARP {
            Verdict::Punt(PuntReason::Arp)
        } else {
            Verdict::Drop(DropReason::EthUnsupportedType)
        }
    }

    #[inline]
    fn ipv4<P: PacketBuf>(
        &self,
        pkt: &mut P,
        in_port: u16,
        in_info: &PortInfo,
        l2_multicast: bool,
        ws: &mut WorkerState,
    ) -> Verdict {
        let (eth_hdr, ip_buf) = pkt.data_mut().split_at_mut(ethernet::HEADER_LEN);
        let (src, dst, ttl, total_len, df, proto) = {
            let ip = match ipv4::Packet::new_checked(&*ip_buf) {
                Ok(ip) => ip,
                Err(_) => return Verdict::Drop(DropReason::Ipv4Malformed),
            };
            if !ip.verify_checksum() {
                return Verdict::Drop(DropReason::Ipv4BadChecksum);
            }
            (ip.src_addr(), ip.dst_addr(), ip.ttl(), ip.total_len(), ip.dont_frag(), ip.protocol())
        };
        if src.is_multicast() || src.is_broadcast() || src.is_loopback() || src.octets()[0] == 0 {
            return Verdict::Drop(DropReason::Ipv4MartianSource);
        }
        if dst.is_multicast() || dst.is_broadcast() || dst.is_loopback() || dst.octets()[0] == 0 {
            return Verdict::Drop(DropReason::Ipv4NotRouted);
        }
        let mut dst = dst;
        let mut nh = self.route(IpAddr::V4(dst));
        if let Some(plan) = &self.nat {
            if ws.nat_skip {
                ws.nat_done = true;
            } else {
                let ip_pkt = &mut ip_buf[..usize::from(total_len)];
                match self.nat44(plan, ip_pkt, in_port, nh, ttl, total_len, df, l2_multicast, ws) {
                    Ok(false) => {}
                    Ok(true) => {
                        ws.nat_done = true;
                        dst = ipv4::Packet::new_unchecked(&*ip_buf).dst_addr();
                        nh = self.route(IpAddr::V4(dst));
                    }
                    Err(v) => return v,
                }
            }
            if nh == Some(NextHop::NatPool) {
                // Translated (or re-run) and still to the pool: never loop.
                return Verdict::Drop(DropReason::NatLoop);
            }
        }
        let Some(nh) = nh else {
            return Verdict::Punt(PuntReason::NoRoute);
        };
        match nh {
            NextHop::Local { .. } => {
                let ip_len = usize::from(total_len);
                let ip_pkt = &mut ip_buf[..ip_len];
                if proto == ipv4::Protocol::ICMP {
                    match icmpv4::echo_request_to_reply(ip_pkt) {
                        Ok(()) => {
                            swap_macs(eth_hdr, in_info.mac);
                            Verdict::Forward(in_port)
                        }
                        Err(netwire::WireError::Unsupported) => Verdict::Drop(DropReason::LocalIcmpIgnored),
                        Err(_) => Verdict::Drop(DropReason::LocalIcmpMalformed),
                    }
                } else if proto == ipv4::Protocol::UDP {
                    Verdict::Punt(PuntReason::PortUnreachable)
                } else {
                    Verdict::Drop(DropReason::LocalUnsupported)
                }
            }
            NextHop::Encap(policy) => {
                if l2_multicast {
                    return Verdict::Drop(DropReason::EthMulticastNotForwarded);
                }
                self.h_encaps(pkt, in_port, policy, ws)
            }
            // IPv4 to an IPv6 SID or object prefix cannot happen, and pool
            // addresses are handled above (or NAT is off); keep the match total.
            NextHop::Sid(_) | NextHop::NatPool | NextHop::Objects => Verdict::Drop(DropReason::Ipv4NotRouted),
            NextHop::Forward { port, via } => {
                if l2_multicast {
                    return Verdict::Drop(DropReason::EthMulticastNotForwarded);
                }
                if ttl <= 1 {
                    return Verdict::Punt(PuntReason::TtlExpired);
                }
                let out = &self.ports[port as usize];
                if total_len > out.mtu {
                    ws.punt_arg = u32::from(out.mtu);
                    return if df {
                        Verdict::Punt(PuntReason::TooBig)
                    } else {
                        Verdict::Drop(DropReason::FragmentationNeeded)
                    };
                }
                let nh_ip = via.unwrap_or(IpAddr::V4(dst));
                let Some(mac) = self.neigh.lookup_key(port, ip_key(nh_ip)) else {
                    ws.miss = Some((port, nh_ip));
                    return Verdict::Punt(PuntReason::NeighborMiss);
                };
                ipv4::Packet::new_unchecked(&mut *ip_buf).decrement_ttl_incremental();
                eth_hdr[0..6].copy_from_slice(&mac);
                eth_hdr[6..12].copy_from_slice(&out.mac);
                Verdict::Forward(port)
            }
        }
    }

    /// Prefetches the NAT cache bucket a frame received on `in_port` will
    /// look up (a cheap guess from its headers, no validation: the lookup
    /// itself checks everything). Called for a whole burst before any of it
    /// is processed, so the buckets' memory latencies overlap.
    #[inline]
    pub fn nat_prefetch(&self, frame: &[u8], in_port: u16, ws: &WorkerState) {
        let (Some(plan), Some(nw)) = (&self.nat, ws.nat.as_deref()) else { return };
        let Some(ip) = frame.get(ethernet::HEADER_LEN..) else { return };
        if frame[12..14] != [0x08, 0x00] || ip.len() < 20 {
            return;
        }
        let ihl = usize::from(ip[0] & 0x0f) * 4;
        let (Some(proto), Some(l4)) = (translate::Proto::from_number(ip[9]), ip.get(ihl..ihl + 8)) else { return };
        let (sport, dport) = match proto {
            translate::Proto::Icmp => {
                let id = u16::from_be_bytes([l4[4], l4[5]]);
                (id, id)
            }
            _ => (u16::from_be_bytes([l4[0], l4[1]]), u16::from_be_bytes([l4[2], l4[3]])),
        };
        let key = translate::FlowKey {
            proto,
            src: Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]),
            sport,
            dst: Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]),
            dport,
        };
        let direction = if plan.role(in_port) == Role::Inside { Direction::Outbound } else { Direction::Inbound };
        nw.cache.prefetch(CacheKey::new(direction, &key));
    }

    /// The NAT44 stage (see [`crate::nat::fast`]): `Ok(false)` for traffic
    /// NAT does not touch, `Ok(true)` when the packet has been translated
    /// (route it again), `Err(verdict)` to stop here: a punt before
    /// translation (TTL, MTU), a miss handed to the mapping core
    /// (`nat_miss`, the kind in `ws.punt_arg`), or a drop.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    fn nat44(
        &self,
        plan: &NatPlan,
        ip: &mut [u8],
        in_port: u16,
        nh: Option<NextHop>,
        ttl: u8,
        total_len: u16,
        df: bool,
        l2_multicast: bool,
        ws: &mut WorkerState,
    ) -> Result<bool, Verdict> {
        let pool_dst = nh == Some(NextHop::NatPool);
        let in_role = plan.role(in_port);
        let out_role = match nh {
            Some(NextHop::Forward { port, .. }) => Some((port, plan.role(port))),
            _ => None,
        };
        let kind = match (in_role, pool_dst, out_role) {
            (Role::Inside, true, _) => msg::TAG_HAIRPIN,
            (Role::Inside, false, Some((_, Role::Outside))) => msg::TAG_OUTBOUND,
            (Role::Inside, false, _) => return Ok(false),
            (_, true, _) => msg::TAG_INBOUND,
            (Role::Outside, false, Some((_, Role::Inside))) => return Err(Verdict::Drop(DropReason::NatNoMapping)),
            (_, false, _) => return Ok(false),
        };
        if l2_multicast {
            return Err(Verdict::Drop(DropReason::EthMulticastNotForwarded));
        }
        if ttl <= 1 {
            return Err(Verdict::Punt(PuntReason::TtlExpired));
        }
        if let Some((port, _)) = out_role.filter(|_| kind == msg::TAG_OUTBOUND) {
            let mtu = self.ports[usize::from(port)].mtu;
            if total_len > mtu {
                ws.punt_arg = u32::from(mtu);
                return Err(if df {
                    Verdict::Punt(PuntReason::TooBig)
                } else {
                    Verdict::Drop(DropReason::FragmentationNeeded)
                });
            }
        }
        let Some(nw) = ws.nat.as_deref_mut() else {
            return Err(Verdict::Drop(DropReason::NatNoState));
        };
        let flow = translate::parse_flow(ip).map_err(|e| Verdict::Drop(e.drop_reason()))?;
        let miss = |ws: &mut WorkerState, tag: u32| {
            ws.punt_arg = tag & 0xffff;
            Err(Verdict::Punt(PuntReason::NatMiss))
        };
        let mut key = flow.key;
        if kind != msg::TAG_INBOUND {
            let Some(rw) = nat_from_cache(nw, ip, Direction::Outbound, &key, &flow)? else {
                return miss(ws, kind);
            };
            if kind == msg::TAG_OUTBOUND {
                return Ok(true);
            }
            // Hairpin: the packet now comes from the public endpoint and is
            // an inbound packet of the destination's mapping.
            key.src = rw.addr;
            key.sport = rw.port;
            if key.proto == translate::Proto::Icmp && !flow.icmp_error {
                key.dport = rw.port;
            }
        }
        match nat_from_cache(nw, ip, Direction::Inbound, &key, &flow)? {
            Some(_) => Ok(true),
            None => miss(ws, msg::TAG_INBOUND),
        }
    }

    #[inline]
    fn ipv6<P: PacketBuf>(
        &self,
        pkt: &mut P,
        in_port: u16,
        in_info: &PortInfo,
        l2_multicast: bool,
        ws: &mut WorkerState,
        depth: u8,
    ) -> Verdict {
        let (eth_hdr, ip_buf) = pkt.data_mut().split_at_mut(ethernet::HEADER_LEN);
        let (src, dst, hop_limit, payload_len, next_header) = {
            let ip = match ipv6::Packet::new_checked(&*ip_buf) {
                Ok(ip) => ip,
                Err(_) => return Verdict::Drop(DropReason::Ipv6Malformed),
            };
            (ip.src_addr(), ip.dst_addr(), ip.hop_limit(), ip.payload_len(), ip.next_header())
        };
        if src.is_multicast() || src.is_loopback() {
            return Verdict::Drop(DropReason::Ipv6MartianSource);
        }
        let ip_len = ipv6::HEADER_LEN + usize::from(payload_len);
        if dst.is_multicast() {
            // Only neighbour discovery to a group we are in concerns us.
            return if next_header == ipv4::Protocol::ICMPV6 && is_nd_type(&ip_buf[ipv6::HEADER_LEN..ip_len]) {
                Verdict::Punt(PuntReason::Nd)
            } else {
                Verdict::Drop(DropReason::Ipv6NotRouted)
            };
        }
        if src.is_unspecified() {
            // Only DAD probes (NS from ::) are legal from the unspecified address.
            return if next_header == ipv4::Protocol::ICMPV6 && is_nd_type(&ip_buf[ipv6::HEADER_LEN..ip_len]) {
                Verdict::Punt(PuntReason::Nd)
            } else {
                Verdict::Drop(DropReason::Ipv6MartianSource)
            };
        }
        let Some(nh) = self.route(IpAddr::V6(dst)) else {
            return if is_link_local6(dst) {
                Verdict::Drop(DropReason::Ipv6NotRouted)
            } else {
                Verdict::Punt(PuntReason::NoRoute)
            };
        };
        if nh == NextHop::Objects {
            if l2_multicast {
                return Verdict::Drop(DropReason::EthMulticastNotForwarded);
            }
            let l4 = &ip_buf[ipv6::HEADER_LEN..ip_len];
            if next_header == ipv4::Protocol::UDP
                && l4.len() >= 8
                && u16::from_be_bytes([l4[2], l4[3]]) == self.objects_port
            {
                return Verdict::Punt(PuntReason::Storage);
            }
        }
        match nh {
            NextHop::Local { .. } | NextHop::Objects => {
                if next_header == ipv4::Protocol::ICMPV6 {
                    let icmp = &ip_buf[ipv6::HEADER_LEN..ip_len];
                    if is_nd_type(icmp) {
                        return Verdict::Punt(PuntReason::Nd);
                    }
                    match icmpv6::echo_request_to_reply(&mut ip_buf[..ip_len]) {
                        Ok(()) => {
                            swap_macs(eth_hdr, in_info.mac);
                            Verdict::Forward(in_port)
                        }
                        Err(netwire::WireError::Unsupported) => Verdict::Drop(DropReason::LocalIcmpIgnored),
                        Err(_) => Verdict::Drop(DropReason::LocalIcmpMalformed),
                    }
                } else if next_header == ipv4::Protocol::UDP {
                    Verdict::Punt(PuntReason::PortUnreachable)
                } else {
                    Verdict::Drop(DropReason::LocalUnsupported)
                }
            }
            NextHop::Sid(sid) => {
                if l2_multicast {
                    return Verdict::Drop(DropReason::EthMulticastNotForwarded);
                }
                self.srv6_sid(pkt, in_port, sid, ws, depth)
            }
            // Pool addresses are IPv4.
            NextHop::NatPool => Verdict::Drop(DropReason::Ipv6NotRouted),
            NextHop::Encap(policy) => {
                if l2_multicast {
                    return Verdict::Drop(DropReason::EthMulticastNotForwarded);
                }
                if is_link_local6(dst) || is_link_local6(src) {
                    return Verdict::Drop(DropReason::Ipv6NotRouted);
                }
                self.h_encaps(pkt, in_port, policy, ws)
            }
            NextHop::Forward { port, via } => {
                if l2_multicast {
                    return Verdict::Drop(DropReason::EthMulticastNotForwarded);
                }
                if is_link_local6(dst) || is_link_local6(src) {
                    return Verdict::Drop(DropReason::Ipv6NotRouted);
                }
                if hop_limit <= 1 {
                    return Verdict::Punt(PuntReason::TtlExpired);
                }
                let out = &self.ports[port as usize];
                if ip_len > usize::from(out.mtu) {
                    ws.punt_arg = u32::from(out.mtu);
                    return Verdict::Punt(PuntReason::TooBig);
                }
                let nh_ip = via.unwrap_or(IpAddr::V6(dst));
                let Some(mac) = self.neigh.lookup_key(port, ip_key(nh_ip)) else {
                    ws.miss = Some((port, nh_ip));
                    return Verdict::Punt(PuntReason::NeighborMiss);
                };
                ipv6::Packet::new_unchecked(&mut *ip_buf).set_hop_limit(hop_limit - 1);
                eth_hdr[0..6].copy_from_slice(&mac);
                eth_hdr[6..12].copy_from_slice(&out.mac);
                Verdict::Forward(port)
            }
        }
    }
}

/// One NAT step from the worker's cache: looks `key` up in `direction`,
/// queues the activity report a hit may owe, and rewrites `ip` (the source
/// outbound, the destination inbound; the quoted packet too for ICMP errors,
/// which report no activity). `Ok(None)` on a miss.
#[inline]
fn nat_from_cache(
    nw: &mut crate::nat::fast::NatWorker,
    ip: &mut [u8],
    direction: Direction,
    key: &translate::FlowKey,
    flow: &translate::Flow,
) -> Result<Option<crate::nat::cache::Rewrite>, Verdict> {
    let Some((rw, touch)) = nw.cache.lookup(CacheKey::new(direction, key), flow.tcp_flags, nw.now_ms) else {
        return Ok(None);
    };
    if !flow.icmp_error {
        nw.note(touch);
    }
    let r = match (direction, flow.icmp_error) {
        (Direction::Outbound, false) => translate::rewrite_src(ip, rw.addr, rw.port),
        (Direction::Outbound, true) => translate::translate_icmp_error_outbound(ip, rw.addr, rw.port),
        (Direction::Inbound, false) => translate::rewrite_dst(ip, rw.addr, rw.port),
        (Direction::Inbound, true) => translate::translate_icmp_error_inbound(ip, rw.addr, rw.port),
    };
    r.map_err(|e| Verdict::Drop(e.drop_reason()))?;
    Ok(Some(rw))
}

/// True for ICMPv6 router/neighbour discovery messages (types 133..=137).
#[inline]
fn is_nd_type(icmp: &[u8]) -> bool {
    matches!(icmp.first(), Some(133..=137))
}

/// Answers a frame back to its sender: destination MAC := source MAC,
/// source MAC := ours.
#[inline]
pub(crate) fn swap_macs(eth_hdr: &mut [u8], our_mac: [u8; 6]) {
    eth_hdr.copy_within(6..12, 0);
    eth_hdr[6..12].copy_from_slice(&our_mac);
}
