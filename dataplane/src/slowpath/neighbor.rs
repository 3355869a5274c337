//! Neighbours: ARP (RFC 826, RFC 5227) and neighbour discovery (RFC 4861)
//! input, learning, and the resolution of next hops with the packets held
//! for them. Every ARP and ND packet is answered, learned from, or dropped
//! with a reason; what is learned from what, and which overrides the RFCs
//! oblige the node to accept, is in `docs/hostile-input.md`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use netwire::{arp, ethernet, icmpv6, ipv4, ipv6, MacAddr, PacketBuf, PacketPool};

use super::icmp::emit_ip_frame;
use super::{Resolution, SlowPath};
use crate::fib::neigh::NeighborState;
use crate::pipeline::Verdict;
use crate::stats::DropReason;

impl<P: PacketBuf> SlowPath<P> {
    // ---- ARP -------------------------------------------------------------

    /// An ARP packet (RFC 826, RFC 5227): answered, learned from, or
    /// dropped with a reason; see `docs/hostile-input.md` for the rules.
    pub(super) fn arp_input<Pool: PacketPool<Buf = P>>(
        &mut self,
        pkt: P,
        now_ms: u64,
        pool: &mut Pool,
        send: &mut dyn FnMut(P),
    ) {
        let port = pkt.port();
        let Some(info) = self.pipeline.ports().get(usize::from(port)) else {
            self.counters.drops.inc(DropReason::ArpInvalid);
            return;
        };
        let Some(a) = parse_arp(pkt.data()) else {
            self.counters.drops.inc(DropReason::ArpInvalid);
            return;
        };
        if let Some(r) = arp_refusal(&a, info) {
            self.counters.drops.inc(r);
            return;
        }
        // Our own addresses, and NAT pool addresses on an outside port's
        // subnet (so on-link hosts reach the pool without a route) that this
        // host serves (in a NAT cluster: the shards it is active for).
        let target_is_ours = info.owns(IpAddr::V4(a.tpa))
            || (self.pipeline.is_nat_pool(a.tpa)
                && info.on_link(IpAddr::V4(a.tpa))
                && self.pipeline.nat().is_some_and(|n| n.role(port) == crate::nat::fast::Role::Outside)
                && self.serves_pool(a.tpa));
        if a.spa.is_unspecified() {
            // RFC 5227 §2.1.1: a probe teaches nothing; one for our address
            // is answered (the prober then sees the address is taken).
            if target_is_ours && a.op == arp::Operation::REQUEST {
                self.arp_reply(pkt, &a, send);
            } else {
                self.counters.drops.inc(DropReason::ArpNotForUs);
            }
            return;
        }
        // RFC 826 merge: update a known sender; create an entry only when the
        // packet is for us.
        let known = self.neigh.table().get(port, IpAddr::V4(a.spa)).is_some();
        if known || target_is_ours {
            self.learn(port, IpAddr::V4(a.spa), a.sha.0, now_ms, pool, send);
        }
        if !target_is_ours {
            if !known {
                self.counters.drops.inc(DropReason::ArpNotForUs);
            }
            return;
        }
        if a.op == arp::Operation::REQUEST {
            self.arp_reply(pkt, &a, send);
        }
        // A reply to us was learned above; nothing to send.
    }

    /// Turns a request into the reply, in place, and sends it.
    fn arp_reply(&mut self, mut pkt: P, a: &ArpMessage, send: &mut dyn FnMut(P)) {
        let port = pkt.port();
        let our_mac = self.pipeline.ports()[usize::from(port)].mac;
        let data = pkt.data_mut();
        let (eth_hdr, rest) = data.split_at_mut(ethernet::HEADER_LEN);
        let mut reply = [0u8; arp::PACKET_LEN];
        if arp::emit(&mut reply, arp::Operation::REPLY, MacAddr(our_mac), a.tpa, a.sha, a.spa).is_err() {
            self.counters.drops.inc(DropReason::ArpInvalid);
            return;
        }
        rest[..arp::PACKET_LEN].copy_from_slice(&reply);
        eth_hdr[0..6].copy_from_slice(&a.sha.0);
        eth_hdr[6..12].copy_from_slice(&our_mac);
        pkt.set_port(port);
        self.counters.arp_replies_sent.inc();
        send(pkt);
    }

    // ---- Neighbour discovery ------------------------------------------------

    /// An ND message punted by a worker (RFC 4861): validated (§6.1, §7.1),
    /// then answered, learned from, or dropped with a reason.
    pub(super) fn nd_input<Pool: PacketPool<Buf = P>>(
        &mut self,
        pkt: P,
        now_ms: u64,
        pool: &mut Pool,
        send: &mut dyn FnMut(P),
    ) {
        use icmpv6::Message as M;
        let port = pkt.port();
        if self.pipeline.ports().get(usize::from(port)).is_none() {
            self.counters.drops.inc(DropReason::NdInvalid);
            return;
        }
        let Some(nd) = parse_nd(pkt.data()) else {
            self.counters.drops.inc(DropReason::NdInvalid);
            return;
        };
        match nd.msg_type {
            M::NEIGHBOR_SOLICIT => {
                let eth_src = ethernet::Packet::new_unchecked(pkt.data()).src_addr();
                drop(pkt);
                self.nd_solicit(port, &nd, eth_src, now_ms, pool, send);
            }
            M::NEIGHBOR_ADVERT => self.nd_advert(port, &nd, now_ms, pool, send),
            M::ROUTER_SOLICIT => self.counters.drops.inc(DropReason::NdRouterSolicitIgnored),
            M::ROUTER_ADVERT => self.counters.drops.inc(DropReason::NdRouterAdvertIgnored),
            _ => self.counters.drops.inc(DropReason::NdRedirectIgnored),
        }
    }

    /// A neighbour solicitation: for one of our addresses, answered with an
    /// advertisement (to all-nodes for a DAD probe); the solicitor is learned.
    fn nd_solicit<Pool: PacketPool<Buf = P>>(
        &mut self,
        port: u16,
        nd: &NdMessage,
        eth_src: MacAddr,
        now_ms: u64,
        pool: &mut Pool,
        send: &mut dyn FnMut(P),
    ) {
        let info = &self.pipeline.ports()[usize::from(port)];
        if info.owns(IpAddr::V6(nd.src)) {
            self.counters.drops.inc(DropReason::NdAddressConflict);
            return;
        }
        if !info.owns(IpAddr::V6(nd.target)) {
            self.counters.drops.inc(DropReason::NdNotForUs);
            return;
        }
        let our_mac = MacAddr(info.mac);
        // Learn the solicitor (RFC 4861 §7.2.3: only with a source
        // link-layer option and a specified source; and only a neighbour:
        // an address on the port's link).
        if !nd.src.is_unspecified() && info.on_link(IpAddr::V6(nd.src)) {
            if let Some(mac) = nd.lladdr {
                self.learn(port, IpAddr::V6(nd.src), mac.0, now_ms, pool, send);
            }
        }
        use icmpv6::NaFlags;
        let (dst_ip, dst_mac, flags) = if nd.src.is_unspecified() {
            // Answer to a DAD probe: to all-nodes, not solicited.
            (ipv6::ALL_NODES, MacAddr([0x33, 0x33, 0, 0, 0, 1]), NaFlags(NaFlags::ROUTER.0 | NaFlags::OVERRIDE.0))
        } else {
            let solicited = NaFlags(NaFlags::ROUTER.0 | NaFlags::SOLICITED.0 | NaFlags::OVERRIDE.0);
            (nd.src, nd.lladdr.unwrap_or(eth_src), solicited)
        };
        let Some(mut out) = pool.alloc() else {
            self.counters.drops.inc(DropReason::NoMbuf);
            return;
        };
        let mut body = [0u8; 64];
        let Ok(n) = icmpv6::emit_neighbor_advert(&mut body, nd.target, flags, our_mac) else {
            return;
        };
        if emit_ip_frame(&mut out, our_mac, dst_mac, nd.target.into(), dst_ip.into(), 255, &body[..n]) {
            out.set_port(port);
            self.counters.nd_adverts_sent.inc();
            send(out);
        }
    }

    /// A neighbour advertisement (RFC 4861 §7.2.5): never creates an entry;
    /// completes an incomplete one (with its target link-layer address),
    /// and updates a known one: without the override flag a different
    /// address only makes a resolved entry stale; with it, or with the same
    /// address, the entry takes it, reachable if solicited, else stale.
    /// Static entries never change.
    fn nd_advert<Pool: PacketPool<Buf = P>>(
        &mut self,
        port: u16,
        nd: &NdMessage,
        now_ms: u64,
        pool: &mut Pool,
        send: &mut dyn FnMut(P),
    ) {
        let info = &self.pipeline.ports()[usize::from(port)];
        let target = IpAddr::V6(nd.target);
        if info.owns(target) {
            self.counters.drops.inc(DropReason::NdAddressConflict);
            return;
        }
        let Some(entry) = self.neigh.table().get(port, target) else {
            self.counters.drops.inc(DropReason::NdAdvertUnknown);
            return;
        };
        let resolved = entry.state.is_usable();
        match nd.lladdr {
            None if !resolved => self.counters.drops.inc(DropReason::NdAdvertUnknown),
            None => {
                if nd.solicited && entry.state != NeighborState::Static {
                    self.neigh.set_state(port, target, NeighborState::Reachable, now_ms);
                }
                self.counters.neighbors_learned.inc();
            }
            Some(mac) if resolved && !nd.override_flag && entry.mac != mac.0 => {
                if entry.state == NeighborState::Reachable {
                    self.neigh.set_state(port, target, NeighborState::Stale, now_ms);
                }
                self.counters.neighbors_learned.inc();
            }
            Some(mac) => {
                let changed = entry.mac != mac.0;
                self.learn(port, target, mac.0, now_ms, pool, send);
                if !nd.solicited && (changed || !resolved) && entry.state != NeighborState::Static {
                    self.neigh.set_state(port, target, NeighborState::Stale, now_ms);
                }
            }
        }
    }

    /// Records a resolved neighbour and sends whatever waited for it.
    fn learn<Pool: PacketPool<Buf = P>>(
        &mut self,
        port: u16,
        ip: IpAddr,
        mac: [u8; 6],
        now_ms: u64,
        pool: &mut Pool,
        send: &mut dyn FnMut(P),
    ) {
        let _ = pool;
        match self.neigh.set(port, ip, mac, NeighborState::Reachable, now_ms) {
            Ok(()) => self.counters.neighbors_learned.inc(),
            Err(_) => {
                self.counters.drops.inc(DropReason::NeighborTableFull);
                return;
            }
        }
        if let Some(r) = self.resolving.remove(&(port, ip)) {
            self.pending_total -= r.held.len();
            self.counters.pending.set(self.pending_total as u64);
            for (held, arg) in r.held {
                self.forward_again(held, arg, send);
            }
        }
    }

    /// Runs a held packet through the pipeline again now that its neighbour
    /// is known.
    fn forward_again(&mut self, mut pkt: P, arg: u32, send: &mut dyn FnMut(P)) {
        let in_port = pkt.port();
        match self.pipeline.rerun(&mut pkt, in_port, arg, &mut self.ctx) {
            Verdict::Forward(out) => {
                pkt.set_port(out);
                self.counters.held_packets_sent.inc();
                send(pkt);
            }
            Verdict::Drop(r) => self.counters.drops.inc(r),
            Verdict::Punt(_) | Verdict::HandOff(_) => self.counters.drops.inc(DropReason::NeighborFailed),
        }
    }

    // ---- Resolution ----------------------------------------------------------

    pub(super) fn neighbor_miss<Pool: PacketPool<Buf = P>>(
        &mut self,
        pkt: P,
        arg: u32,
        now_ms: u64,
        pool: &mut Pool,
        send: &mut dyn FnMut(P),
    ) {
        // Which neighbour is it waiting for? A dry run of the pipeline says.
        let Some((port, nh)) = self.pipeline.missing_neighbor(pkt.data(), pkt.port(), arg, &mut self.ctx) else {
            // Resolved since the worker looked, or no longer routable: run
            // it through the pipeline again.
            self.forward_again(pkt, arg, send);
            return;
        };
        // Resolved since the worker looked?
        if self.pipeline.neighbors().lookup(port, nh).is_some() {
            self.forward_again(pkt, arg, send);
            return;
        }
        if self.pending_total >= self.cfg.pending_packets_max {
            self.counters.drops.inc(DropReason::PendingFull);
            return;
        }
        if !self.resolving.contains_key(&(port, nh)) && !self.start_resolution(port, nh, now_ms, pool, send) {
            return;
        }
        let per_max = self.cfg.pending_per_neighbor_max;
        let r = self.resolving.get_mut(&(port, nh)).expect("just started");
        if r.held.len() >= per_max {
            self.counters.drops.inc(DropReason::PendingFull);
            return;
        }
        r.held.push((pkt, arg));
        self.pending_total += 1;
        self.counters.pending.set(self.pending_total as u64);
    }

    /// Sends the first request for (port, ip) and records the resolution.
    /// False if the table has no room for the neighbour.
    pub(super) fn start_resolution<Pool: PacketPool<Buf = P>>(
        &mut self,
        port: u16,
        ip: IpAddr,
        now_ms: u64,
        pool: &mut Pool,
        send: &mut dyn FnMut(P),
    ) -> bool {
        if self.resolving.contains_key(&(port, ip)) {
            return true;
        }
        let exists = self.neigh.table().get(port, ip);
        match exists {
            Some(e) if e.state.is_usable() => {}
            _ => {
                if self.neigh.set(port, ip, [0; 6], NeighborState::Incomplete, now_ms).is_err() {
                    self.counters.drops.inc(DropReason::NeighborTableFull);
                    return false;
                }
            }
        }
        self.counters.resolutions_started.inc();
        self.resolving.insert(
            (port, ip),
            Resolution { tries: 1, next_try_ms: now_ms + self.cfg.resolve_interval_ms, held: Vec::new() },
        );
        self.solicit(port, ip, pool, send);
        true
    }

    /// Sends an ARP request or a neighbour solicitation for `ip` out of `port`.
    pub(super) fn solicit<Pool: PacketPool<Buf = P>>(
        &mut self,
        port: u16,
        ip: IpAddr,
        pool: &mut Pool,
        send: &mut dyn FnMut(P),
    ) {
        let info = &self.pipeline.ports()[port as usize];
        let our_mac = MacAddr(info.mac);
        let Some(mut out) = pool.alloc() else {
            self.counters.drops.inc(DropReason::NoMbuf);
            return;
        };
        match ip {
            IpAddr::V4(target) => {
                let Some(src_ip) = info.source_v4_for(target) else {
                    return;
                };
                let len = ethernet::HEADER_LEN + arp::PACKET_LEN;
                if !out.set_len(len.max(60)) {
                    return;
                }
                let data = out.data_mut();
                data.fill(0);
                let ok = ethernet::emit_header(data, MacAddr::BROADCAST, our_mac, ethernet::EtherType::ARP).is_ok()
                    && arp::emit_request(&mut data[ethernet::HEADER_LEN..], our_mac, src_ip, target).is_ok();
                if ok {
                    out.set_port(port);
                    self.counters.arp_requests_sent.inc();
                    send(out);
                }
            }
            IpAddr::V6(target) => {
                let Some(src_ip) = info.source_v6_for(target) else {
                    return;
                };
                let group = ipv6::solicited_node_multicast(target);
                let mut body = [0u8; 64];
                let Ok(n) = icmpv6::emit_neighbor_solicit(&mut body, target, Some(our_mac)) else {
                    return;
                };
                let dst_mac = MacAddr::from_ipv6_multicast(group);
                if emit_ip_frame(&mut out, our_mac, dst_mac, src_ip.into(), group.into(), 255, &body[..n]) {
                    out.set_port(port);
                    self.counters.nd_solicits_sent.inc();
                    send(out);
                }
            }
        }
    }
}

/// A validated ARP packet.
pub(super) struct ArpMessage {
    op: arp::Operation,
    sha: MacAddr,
    spa: Ipv4Addr,
    tpa: Ipv4Addr,
}

/// An Ethernet/IPv4 ARP packet (hardware and protocol types and lengths
/// checked by the view).
fn parse_arp(frame: &[u8]) -> Option<ArpMessage> {
    let eth = ethernet::Packet::new_checked(frame).ok()?;
    let a = arp::Packet::new_checked(eth.payload()).ok()?;
    Some(ArpMessage {
        op: a.operation(),
        sha: a.sender_hardware_addr(),
        spa: a.sender_protocol_addr(),
        tpa: a.target_protocol_addr(),
    })
}

/// Why an ARP packet is refused before anything is learned from it, if it
/// is: an operation other than request or reply, a sender hardware address
/// that is not unicast, a sender protocol address that is not a unicast
/// host on the port's link (0.0.0.0 is a probe, RFC 5227), or one of ours.
fn arp_refusal(a: &ArpMessage, info: &crate::fib::PortInfo) -> Option<DropReason> {
    if a.op != arp::Operation::REQUEST && a.op != arp::Operation::REPLY {
        return Some(DropReason::ArpUnsupportedOp);
    }
    if a.sha.is_multicast() || a.sha.0 == [0; 6] || a.sha.0 == info.mac {
        return Some(DropReason::ArpInvalid);
    }
    if a.spa.is_unspecified() {
        return None;
    }
    let first = a.spa.octets()[0];
    let subnet_broadcast = info.ipv4.iter().any(|&(addr, len)| crate::fib::subnet_broadcast(addr, len) == Some(a.spa));
    if a.spa.is_multicast() || first == 0 || first == 127 || first >= 240 || subnet_broadcast {
        return Some(DropReason::ArpMartianSender);
    }
    if info.owns(IpAddr::V4(a.spa)) {
        return Some(DropReason::ArpAddressConflict);
    }
    if !info.on_link(IpAddr::V4(a.spa)) {
        return Some(DropReason::ArpSenderNotOnLink);
    }
    None
}

/// A validated neighbour-discovery message (RFC 4861 §6.1, §7.1 checks passed).
struct NdMessage {
    src: Ipv6Addr,
    msg_type: icmpv6::Message,
    /// NS/NA: the target address (unspecified for other messages).
    target: Ipv6Addr,
    /// NS: the source link-layer option; NA: the target link-layer option.
    lladdr: Option<MacAddr>,
    /// NA: the override flag.
    override_flag: bool,
    /// NA: the solicited flag.
    solicited: bool,
}

/// Parses and validates an ND frame; `None` for anything RFC 4861 §7.1
/// says to discard (hop limit, checksum, lengths, options).
fn parse_nd(frame: &[u8]) -> Option<NdMessage> {
    let eth = ethernet::Packet::new_checked(frame).ok()?;
    let ip = ipv6::Packet::new_checked(eth.payload()).ok()?;
    if ip.next_header() != ipv4::Protocol::ICMPV6 {
        return None;
    }
    let icmp_bytes = &ip.payload()[..usize::from(ip.payload_len())];
    icmpv6::validate_nd(ip.hop_limit(), icmp_bytes).ok()?;
    let icmp = icmpv6::Packet::new_checked(icmp_bytes).ok()?;
    if !icmp.verify_checksum(ip.src_addr(), ip.dst_addr()) {
        return None;
    }
    let (src, dst, msg_type) = (ip.src_addr(), ip.dst_addr(), icmp.msg_type());
    let mut m =
        NdMessage { src, msg_type, target: Ipv6Addr::UNSPECIFIED, lladdr: None, override_flag: true, solicited: false };
    if msg_type == icmpv6::Message::NEIGHBOR_SOLICIT {
        let ns = icmpv6::NeighborSolicit::new_checked(icmp_bytes).ok()?;
        m.lladdr = ns.source_link_layer_addr().ok()?;
        // RFC 4861 §7.1.1: from :: (DAD) only to a solicited-node group,
        // and without a source link-layer option.
        if src.is_unspecified() && (m.lladdr.is_some() || !ipv6::is_solicited_node_multicast(dst)) {
            return None;
        }
        m.target = ns.target_addr();
    } else if msg_type == icmpv6::Message::NEIGHBOR_ADVERT {
        let na = icmpv6::NeighborAdvert::new_checked(icmp_bytes).ok()?;
        m.lladdr = na.target_link_layer_addr().ok()?;
        m.override_flag = na.override_flag();
        m.solicited = na.solicited_flag();
        // RFC 4861 §7.1.2: a solicited advertisement is never multicast.
        if m.solicited && dst.is_multicast() {
            return None;
        }
        m.target = na.target_addr();
    }
    Some(m)
}
