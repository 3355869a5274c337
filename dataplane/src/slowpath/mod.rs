//! The control core's packet work: everything the workers punt.
//!
//! * ARP (RFC 826) and neighbour discovery (RFC 4861 §7): answer requests
//!   for our addresses, learn senders, resolve next hops.
//! * Resolution: a packet whose next hop has no MAC yet is held (bounded:
//!   `pending_per_neighbor_max` per neighbour, `pending_packets_max` in all),
//!   a request is sent and retried every `resolve_interval_ms` up to
//!   `resolve_retries` times; when the answer comes the held packets are run
//!   through the pipeline again and sent; when it does not, they are dropped
//!   (`neighbor_failed`) with ICMP host/address unreachable, and the entry is
//!   marked failed. Learned entries older than `reachable_ms` are re-probed
//!   and stay usable meanwhile.
//! * ICMP/ICMPv6 errors (RFC 792/1812, RFC 4443): time exceeded, destination
//!   unreachable, fragmentation needed / packet too big. Rate-limited by a
//!   token bucket; never sent about an ICMP error, a non-first fragment or a
//!   non-unicast source (RFC 1812 §4.3.2.7, RFC 4443 §2.4(e)).
//!
//! This module is pure: packets come in and go out through the
//! [`PacketBuf`]/[`PacketPool`] traits and a send callback, so it is tested
//! on vectors. Its one piece of shared state is the neighbour table, which
//! it alone writes. It may allocate (bounded, by configured limits): it is
//! the slow path.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;

use crate::pipeline::{Pipeline, Verdict, WorkerCtx};
use crate::fib::neigh::{NeighborState, NeighborWriter};
use netwire::{PacketBuf, PacketPool};
use crate::stats::{ControlCounters, DropReason, IcmpErrorKind, PuntReason};
use netwire::{arp, ethernet, icmpv4, icmpv6, ipv4, ipv6, MacAddr};

/// Limits and timers of the slow path (from the config's `neighbor` and
/// `icmp` sections).
#[derive(Debug, Clone)]
pub struct SlowPathConfig {
    pub pending_packets_max: usize,
    pub pending_per_neighbor_max: usize,
    pub resolve_retries: u32,
    pub resolve_interval_ms: u64,
    pub reachable_ms: u64,
    pub icmp_errors_per_s: u32,
    pub icmp_errors_burst: u32,
}

impl Default for SlowPathConfig {
    fn default() -> Self {
        SlowPathConfig {
            pending_packets_max: 256,
            pending_per_neighbor_max: 4,
            resolve_retries: 3,
            resolve_interval_ms: 1000,
            reachable_ms: 30_000,
            icmp_errors_per_s: 100,
            icmp_errors_burst: 50,
        }
    }
}

struct Resolution<P> {
    tries: u32,
    next_try_ms: u64,
    /// Held packets with their punt argument.
    held: Vec<(P, u32)>,
}

/// The control core's packet handler.
pub struct SlowPath<P> {
    pipeline: Arc<Pipeline>,
    neigh: NeighborWriter,
    cfg: SlowPathConfig,
    counters: Arc<ControlCounters>,
    resolving: HashMap<(u16, IpAddr), Resolution<P>>,
    pending_total: usize,
    icmp_tokens_milli: u64,
    icmp_refill_ms: u64,
    last_refresh_ms: u64,
    /// Pipeline state for re-running held packets (its counters are private).
    ctx: WorkerCtx,
}


impl<P: PacketBuf> SlowPath<P> {
    pub fn new(pipeline: Arc<Pipeline>, neigh: NeighborWriter, cfg: SlowPathConfig, counters: Arc<ControlCounters>) -> Self {
        let ctx = WorkerCtx::scratch(&pipeline);
        Self::with_state(pipeline, neigh, cfg, counters, ctx)
    }

    /// As [`SlowPath::new`], with the pipeline state used to re-run held
    /// packets (its local service should be configured like the workers').
    pub fn with_state(
        pipeline: Arc<Pipeline>,
        neigh: NeighborWriter,
        cfg: SlowPathConfig,
        counters: Arc<ControlCounters>,
        ctx: WorkerCtx,
    ) -> Self {
        let tokens = u64::from(cfg.icmp_errors_burst) * 1000;
        SlowPath {
            ctx,
            pipeline,
            neigh,
            cfg,
            counters,
            resolving: HashMap::new(),
            pending_total: 0,
            icmp_tokens_milli: tokens,
            icmp_refill_ms: 0,
            last_refresh_ms: 0,
        }
    }

    pub fn counters(&self) -> &Arc<ControlCounters> {
        &self.counters
    }

    /// Installs a configured neighbour (never aged).
    pub fn add_static(&mut self, port: u16, ip: IpAddr, mac: [u8; 6]) -> Result<(), crate::fib::neigh::NeighborError> {
        self.neigh.set(port, ip, mac, NeighborState::Static, 0)
    }

    /// Handles one punted packet; `arg` is the punt's detail
    /// ([`crate::pipeline::PacketMeta::punt_arg`]). `send` transmits a packet out of the
    /// port set in it.
    #[allow(clippy::too_many_arguments)]
    pub fn handle<Pool: PacketPool<Buf = P>>(
        &mut self,
        pkt: P,
        reason: PuntReason,
        arg: u32,
        now_ms: u64,
        pool: &mut Pool,
        send: &mut dyn FnMut(P),
    ) {
        self.counters.punts_handled.inc();
        match reason {
            PuntReason::Arp => self.arp_input(pkt, now_ms, pool, send),
            PuntReason::Nd => self.nd_input(pkt, now_ms, pool, send),
            PuntReason::NeighborMiss => self.neighbor_miss(pkt, arg, now_ms, pool, send),
            PuntReason::TtlExpired => {
                self.icmp_error(&pkt, IcmpWhy::TimeExceeded, now_ms, pool, send);
                self.counters.drops.inc(DropReason::TtlExpired);
            }
            PuntReason::NoRoute => {
                self.icmp_error(&pkt, IcmpWhy::NoRoute, now_ms, pool, send);
                self.counters.drops.inc(DropReason::NoRoute);
            }
            PuntReason::TooBig => {
                let mtu = u16::try_from(arg).unwrap_or(1280);
                self.icmp_error(&pkt, IcmpWhy::TooBig(mtu), now_ms, pool, send);
                self.counters.drops.inc(DropReason::TooBig);
            }
            PuntReason::PortUnreachable => {
                self.icmp_error(&pkt, IcmpWhy::PortUnreachable, now_ms, pool, send);
                self.counters.drops.inc(DropReason::PortUnreachable);
            }
            PuntReason::ParamProblem => {
                let (code, pointer) = crate::stats::param_problem_parts(arg);
                self.icmp_error(&pkt, IcmpWhy::ParamProblem(code, pointer), now_ms, pool, send);
                self.counters.drops.inc(DropReason::Srv6ParamProblem);
            }
        }
    }

    /// Timers: resolution retries and failures, re-probing of old entries,
    /// the ICMP token bucket. Call every few milliseconds.
    pub fn tick<Pool: PacketPool<Buf = P>>(&mut self, now_ms: u64, pool: &mut Pool, send: &mut dyn FnMut(P)) {
        // Retries and failures.
        let due: Vec<(u16, IpAddr)> = self
            .resolving
            .iter()
            .filter(|(_, r)| r.next_try_ms <= now_ms)
            .map(|(k, _)| *k)
            .collect();
        for key in due {
            let tries = self.resolving[&key].tries;
            if tries >= self.cfg.resolve_retries {
                let r = self.resolving.remove(&key).expect("present");
                self.counters.resolutions_failed.inc();
                self.neigh.set_state(key.0, key.1, NeighborState::Failed, now_ms);
                self.pending_total -= r.held.len();
                for (held, _) in r.held {
                    self.icmp_error(&held, IcmpWhy::HostUnreachable, now_ms, pool, send);
                    self.counters.drops.inc(DropReason::NeighborFailed);
                }
            } else {
                let r = self.resolving.get_mut(&key).expect("present");
                r.tries += 1;
                r.next_try_ms = now_ms + self.cfg.resolve_interval_ms;
                self.solicit(key.0, key.1, pool, send);
            }
        }
        // Re-probe entries that have not been confirmed for reachable_ms.
        if now_ms >= self.last_refresh_ms + self.cfg.resolve_interval_ms.min(1000) {
            self.last_refresh_ms = now_ms;
            let old: Vec<(u16, IpAddr)> = self
                .neigh
                .table()
                .entries()
                .filter(|e| e.state == NeighborState::Reachable && now_ms >= e.updated_ms + self.cfg.reachable_ms)
                .map(|e| (e.port, e.ip))
                .collect();
            for (port, ip) in old {
                self.neigh.set_state(port, ip, NeighborState::Stale, now_ms);
                self.start_resolution(port, ip, now_ms, pool, send);
            }
        }
        self.counters.pending.set(self.pending_total as u64);
    }

    /// Number of packets held waiting for resolution.
    pub fn pending(&self) -> usize {
        self.pending_total
    }

    // ---- ARP -------------------------------------------------------------

    fn arp_input<Pool: PacketPool<Buf = P>>(&mut self, mut pkt: P, now_ms: u64, pool: &mut Pool, send: &mut dyn FnMut(P)) {
        let port = pkt.port();
        let Some(info) = self.pipeline.ports().get(port as usize) else {
            self.counters.drops.inc(DropReason::ArpInvalid);
            return;
        };
        let our_mac = info.mac;
        let (op, sha, spa, tpa) = {
            let Ok(eth) = ethernet::Packet::new_checked(pkt.data()) else {
                self.counters.drops.inc(DropReason::ArpInvalid);
                return;
            };
            let Ok(a) = arp::Packet::new_checked(eth.payload()) else {
                self.counters.drops.inc(DropReason::ArpInvalid);
                return;
            };
            (a.operation(), a.sender_hardware_addr(), a.sender_protocol_addr(), a.target_protocol_addr())
        };
        if sha.is_multicast() || sha.0 == [0; 6] {
            self.counters.drops.inc(DropReason::ArpInvalid);
            return;
        }
        // Our own addresses, and NAT pool addresses on an outside port's
        // subnet (so on-link hosts reach the pool without a route).
        let target_is_ours = info.owns(IpAddr::V4(tpa))
            || (self.pipeline.is_nat_pool(tpa)
                && info.on_link(IpAddr::V4(tpa))
                && self.pipeline.nat().is_some_and(|n| n.role(port) == crate::nat::fast::Role::Outside));
        let sender_on_link = info.on_link(IpAddr::V4(spa)) && !info.owns(IpAddr::V4(spa));
        // RFC 826 merge: update a known sender; create an entry only when the
        // packet is for us.
        if sender_on_link {
            let known = self.neigh.table().get(port, IpAddr::V4(spa)).is_some();
            if known || target_is_ours {
                self.learn(port, IpAddr::V4(spa), sha.0, now_ms, pool, send);
            }
        }
        if !target_is_ours {
            self.counters.drops.inc(DropReason::ArpNotForUs);
            return;
        }
        if op != arp::Operation::REQUEST {
            return; // a reply to us: learned above; nothing to send
        }
        // Turn the request into the reply, in place.
        let data = pkt.data_mut();
        let (eth_hdr, rest) = data.split_at_mut(ethernet::HEADER_LEN);
        let mut reply = [0u8; arp::PACKET_LEN];
        if arp::emit(&mut reply, arp::Operation::REPLY, MacAddr(our_mac), tpa, sha, spa).is_err() {
            self.counters.drops.inc(DropReason::ArpInvalid);
            return;
        }
        rest[..arp::PACKET_LEN].copy_from_slice(&reply);
        eth_hdr[0..6].copy_from_slice(&sha.0);
        eth_hdr[6..12].copy_from_slice(&our_mac);
        pkt.set_port(port);
        self.counters.arp_replies_sent.inc();
        send(pkt);
    }

    // ---- Neighbour discovery ------------------------------------------------

    fn nd_input<Pool: PacketPool<Buf = P>>(&mut self, pkt: P, now_ms: u64, pool: &mut Pool, send: &mut dyn FnMut(P)) {
        let port = pkt.port();
        let Some(info) = self.pipeline.ports().get(port as usize) else {
            self.counters.drops.inc(DropReason::NdInvalid);
            return;
        };
        let mut override_flag = true;
        let parsed = (|| -> Option<(Ipv6Addr, icmpv6::Message, Ipv6Addr, Option<MacAddr>)> {
            let eth = ethernet::Packet::new_checked(pkt.data()).ok()?;
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
            let ty = icmp.msg_type();
            if ty == icmpv6::Message::NEIGHBOR_SOLICIT {
                let ns = icmpv6::NeighborSolicit::new_checked(icmp_bytes).ok()?;
                let lladdr = ns.source_link_layer_addr().ok()?;
                // RFC 4861 §7.1.1: no source link-layer option from ::.
                if ip.src_addr().is_unspecified() && lladdr.is_some() {
                    return None;
                }
                Some((ip.src_addr(), ty, ns.target_addr(), lladdr))
            } else if ty == icmpv6::Message::NEIGHBOR_ADVERT {
                let na = icmpv6::NeighborAdvert::new_checked(icmp_bytes).ok()?;
                let lladdr = na.target_link_layer_addr().ok()?;
                override_flag = na.override_flag();
                Some((ip.src_addr(), ty, na.target_addr(), lladdr))
            } else {
                Some((ip.src_addr(), ty, Ipv6Addr::UNSPECIFIED, None))
            }
        })();
        let Some((src, ty, target, lladdr)) = parsed else {
            self.counters.drops.inc(DropReason::NdInvalid);
            return;
        };
        if ty == icmpv6::Message::NEIGHBOR_SOLICIT {
            {
                if !info.owns(IpAddr::V6(target)) {
                    self.counters.drops.inc(DropReason::NdNotForUs);
                    return;
                }
                let our_mac = info.mac;
                // Learn the solicitor (RFC 4861 §7.2.3: only with a source
                // link-layer option and a specified source).
                if !src.is_unspecified() {
                    if let Some(mac) = lladdr {
                        self.learn(port, IpAddr::V6(src), mac.0, now_ms, pool, send);
                    }
                }
                let (dst_ip, dst_mac, flags) = if src.is_unspecified() {
                    // Answer to a DAD probe: to all-nodes, not solicited.
                    (
                        ipv6::ALL_NODES,
                        MacAddr([0x33, 0x33, 0, 0, 0, 1]),
                        icmpv6::NaFlags(icmpv6::NaFlags::ROUTER.0 | icmpv6::NaFlags::OVERRIDE.0),
                    )
                } else {
                    let eth_src = ethernet::Packet::new_unchecked(pkt.data()).src_addr();
                    (
                        src,
                        lladdr.unwrap_or(eth_src),
                        icmpv6::NaFlags(
                            icmpv6::NaFlags::ROUTER.0 | icmpv6::NaFlags::SOLICITED.0 | icmpv6::NaFlags::OVERRIDE.0,
                        ),
                    )
                };
                drop(pkt);
                let Some(mut out) = pool.alloc() else {
                    self.counters.drops.inc(DropReason::NoMbuf);
                    return;
                };
                let mut body = [0u8; 64];
                let Ok(n) = icmpv6::emit_neighbor_advert(&mut body, target, flags, MacAddr(our_mac)) else {
                    return;
                };
                if build_ipv6_icmp(&mut out, MacAddr(our_mac), dst_mac, target, dst_ip, 255, &body[..n]) {
                    out.set_port(port);
                    self.counters.nd_adverts_sent.inc();
                    send(out);
                }
            }
        } else if ty == icmpv6::Message::NEIGHBOR_ADVERT {
            {
                if let Some(mac) = lladdr {
                    let known = self.neigh.table().get(port, IpAddr::V6(target));
                    if let Some(entry) = known.filter(|_| !info.owns(IpAddr::V6(target))) {
                        // RFC 4861 §7.2.5: without the override flag a
                        // different address only makes a resolved entry stale.
                        if !override_flag && entry.state.is_usable() && entry.mac != mac.0 {
                            self.neigh.set_state(port, IpAddr::V6(target), NeighborState::Stale, now_ms);
                        } else {
                            self.learn(port, IpAddr::V6(target), mac.0, now_ms, pool, send);
                        }
                        return;
                    }
                }
                self.counters.drops.inc(DropReason::NdNotForUs);
            }
        } else {
            self.counters.drops.inc(DropReason::LocalIcmpIgnored);
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

    fn neighbor_miss<Pool: PacketPool<Buf = P>>(
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
    fn start_resolution<Pool: PacketPool<Buf = P>>(
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
    fn solicit<Pool: PacketPool<Buf = P>>(&mut self, port: u16, ip: IpAddr, pool: &mut Pool, send: &mut dyn FnMut(P)) {
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
                if build_ipv6_icmp(&mut out, our_mac, MacAddr::from_ipv6_multicast(group), src_ip, group, 255, &body[..n]) {
                    out.set_port(port);
                    self.counters.nd_solicits_sent.inc();
                    send(out);
                }
            }
        }
    }

    // ---- ICMP errors ---------------------------------------------------------

    fn take_icmp_token(&mut self, now_ms: u64) -> bool {
        let rate = u64::from(self.cfg.icmp_errors_per_s);
        if rate == 0 {
            return false;
        }
        let cap = u64::from(self.cfg.icmp_errors_burst) * 1000;
        let elapsed = now_ms.saturating_sub(self.icmp_refill_ms);
        self.icmp_refill_ms = now_ms;
        // tokens in thousandths: rate per second = rate per ms * 1000 / 1000
        self.icmp_tokens_milli = (self.icmp_tokens_milli + elapsed * rate).min(cap);
        if self.icmp_tokens_milli >= 1000 {
            self.icmp_tokens_milli -= 1000;
            true
        } else {
            false
        }
    }

    /// Sends an ICMP/ICMPv6 error about `offending` (a frame received on its
    /// port) back to its sender, out of the same port.
    fn icmp_error<Pool: PacketPool<Buf = P>>(
        &mut self,
        offending: &P,
        why: IcmpWhy,
        now_ms: u64,
        pool: &mut Pool,
        send: &mut dyn FnMut(P),
    ) {
        let port = offending.port();
        let frame = offending.data();
        let Ok(eth) = ethernet::Packet::new_checked(frame) else {
            return;
        };
        let Some(info) = self.pipeline.ports().get(port as usize) else {
            return;
        };
        let our_mac = MacAddr(info.mac);
        let peer_mac = eth.src_addr();
        let ethertype = eth.ethertype();
        let ip_bytes = eth.payload();
        if ethertype == ethernet::EtherType::IPV4 {
            let Ok(ip) = ipv4::Packet::new_checked(ip_bytes) else { return };
            let ip_bytes = &ip_bytes[..usize::from(ip.total_len())];
            let src = ip.src_addr();
            if !icmpv4::is_error_allowed(ip_bytes) || eth.dst_addr().is_multicast() {
                self.counters.drops.inc(DropReason::IcmpErrorSuppressed);
                return;
            }
            let Some(our_ip) = info.primary_ipv4() else { return };
            let (kind, ty, code, rest) = match why {
                IcmpWhy::TimeExceeded => (IcmpErrorKind::V4TimeExceeded, icmpv4::Message::TIME_EXCEEDED, 0, 0),
                IcmpWhy::NoRoute => (IcmpErrorKind::V4NetUnreachable, icmpv4::Message::DEST_UNREACHABLE, 0, 0),
                IcmpWhy::HostUnreachable => (IcmpErrorKind::V4HostUnreachable, icmpv4::Message::DEST_UNREACHABLE, 1, 0),
                IcmpWhy::PortUnreachable => (IcmpErrorKind::V4PortUnreachable, icmpv4::Message::DEST_UNREACHABLE, 3, 0),
                IcmpWhy::ParamProblem(..) => {
                    self.counters.drops.inc(DropReason::IcmpErrorSuppressed);
                    return;
                }
                IcmpWhy::TooBig(mtu) => (
                    IcmpErrorKind::V4FragmentationNeeded,
                    icmpv4::Message::DEST_UNREACHABLE,
                    4,
                    icmpv4::frag_needed_rest_of_header(mtu),
                ),
            };
            if !self.take_icmp_token(now_ms) {
                self.counters.drops.inc(DropReason::IcmpRateLimited);
                return;
            }
            let Some(mut out) = pool.alloc() else {
                self.counters.drops.inc(DropReason::NoMbuf);
                return;
            };
            let mut body = [0u8; 576];
            let Ok(n) = icmpv4::emit_error(&mut body, ty, code, rest, ip_bytes) else { return };
            let total = ethernet::HEADER_LEN + ipv4::HEADER_LEN + n;
            if !out.set_len(total.max(60)) {
                return;
            }
            let data = out.data_mut();
            data.fill(0);
            let ok = ethernet::emit_header(data, peer_mac, our_mac, ethernet::EtherType::IPV4).is_ok()
                && ipv4::emit_header(&mut data[ethernet::HEADER_LEN..], our_ip, src, ipv4::Protocol::ICMP, 64, n).is_ok();
            if !ok {
                return;
            }
            data[ethernet::HEADER_LEN + ipv4::HEADER_LEN..total].copy_from_slice(&body[..n]);
            out.set_port(port);
            self.counters.icmp_errors.inc(kind);
            send(out);
        } else if ethertype == ethernet::EtherType::IPV6 {
            let Ok(ip) = ipv6::Packet::new_checked(ip_bytes) else { return };
            let ip_bytes = &ip_bytes[..ipv6::HEADER_LEN + usize::from(ip.payload_len())];
            let src = ip.src_addr();
            let Some(our_ip) = info.primary_ipv6() else { return };
            let (kind, ty, code, param) = match why {
                IcmpWhy::TimeExceeded => (IcmpErrorKind::V6TimeExceeded, icmpv6::Message::TIME_EXCEEDED, 0, 0),
                IcmpWhy::NoRoute => (IcmpErrorKind::V6NoRoute, icmpv6::Message::DEST_UNREACHABLE, 0, 0),
                IcmpWhy::HostUnreachable => {
                    (IcmpErrorKind::V6AddressUnreachable, icmpv6::Message::DEST_UNREACHABLE, 3, 0)
                }
                IcmpWhy::PortUnreachable => (IcmpErrorKind::V6PortUnreachable, icmpv6::Message::DEST_UNREACHABLE, 4, 0),
                IcmpWhy::TooBig(mtu) => {
                    (IcmpErrorKind::V6PacketTooBig, icmpv6::Message::PACKET_TOO_BIG, 0, u32::from(mtu))
                }
                IcmpWhy::ParamProblem(code, pointer) => {
                    (IcmpErrorKind::V6ParamProblem, icmpv6::Message::PARAMETER_PROBLEM, code, pointer)
                }
            };
            // RFC 4443 §2.4(e.3-e.5): no error about a packet that arrived as
            // link-layer multicast/broadcast, except Packet Too Big.
            let l2_multicast_ok = ty == icmpv6::Message::PACKET_TOO_BIG;
            if !icmpv6::is_error_allowed(ip_bytes, ty, code) || (eth.dst_addr().is_multicast() && !l2_multicast_ok) {
                self.counters.drops.inc(DropReason::IcmpErrorSuppressed);
                return;
            }
            if !self.take_icmp_token(now_ms) {
                self.counters.drops.inc(DropReason::IcmpRateLimited);
                return;
            }
            let Some(mut out) = pool.alloc() else {
                self.counters.drops.inc(DropReason::NoMbuf);
                return;
            };
            let mut body = [0u8; 1280];
            let Ok(n) = icmpv6::emit_error(&mut body, ty, code, param, ip_bytes) else { return };
            if build_ipv6_icmp(&mut out, our_mac, peer_mac, our_ip, src, 64, &body[..n]) {
                out.set_port(port);
                self.counters.icmp_errors.inc(kind);
                send(out);
            }
        }
    }
}

/// Which ICMP error to send.
#[derive(Debug, Clone, Copy)]
enum IcmpWhy {
    TimeExceeded,
    NoRoute,
    HostUnreachable,
    PortUnreachable,
    TooBig(u16),
    /// ICMPv6 parameter problem: code, pointer.
    ParamProblem(u8, u32),
}

/// Writes Ethernet + IPv6 + the ICMPv6 `body` (checksum filled) into `out`.
fn build_ipv6_icmp<P: PacketBuf>(
    out: &mut P,
    src_mac: MacAddr,
    dst_mac: MacAddr,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    hop_limit: u8,
    body: &[u8],
) -> bool {
    let total = ethernet::HEADER_LEN + ipv6::HEADER_LEN + body.len();
    if !out.set_len(total) {
        return false;
    }
    let data = out.data_mut();
    if ethernet::emit_header(data, dst_mac, src_mac, ethernet::EtherType::IPV6).is_err() {
        return false;
    }
    let ip = &mut data[ethernet::HEADER_LEN..];
    if ipv6::emit_header(ip, src, dst, ipv4::Protocol::ICMPV6, hop_limit, body.len()).is_err() {
        return false;
    }
    let icmp = &mut ip[ipv6::HEADER_LEN..ipv6::HEADER_LEN + body.len()];
    icmp.copy_from_slice(body);
    icmpv6::Packet::new_unchecked(icmp).fill_checksum(src, dst);
    true
}
