//! The SRv6 stage: local SID behaviours and H.Encaps (the behaviours and
//! their RFC 8986 pseudo-code references are in [`crate::srv6`]).
//!
//! * A packet to a SID is checked: from a trusted port (`srv6_untrusted`,
//!   RFC 8754 §5.1), not recirculated too often (`srv6_too_deep`), its
//!   extension headers parse (`srv6_bad_srh`).
//! * With Segments Left > 0 and an SRH: End / End.X (and storage when it
//!   passes the request on): hop limit, SRH checks (ICMPv6 parameter
//!   problem with a pointer), then the next segment. End.DT6/End.DX6 want
//!   SL = 0 (parameter problem pointing at Segments Left).
//! * With SL = 0 or no SRH: the upper layer: decapsulation (End.DT6,
//!   End.DX6, End/End.X with USD), an ICMPv6 echo request directly after
//!   the IPv6 header (answered), or a parameter problem code 4 (RFC 8986
//!   §4.1.1: an upper layer this SID does not process).
//! * The storage behaviour decides per request with its policy (accept or
//!   pass); an accepted request goes to [`Pipeline::storage_accept`].
//!
//! A link-local source or destination never leaves its link (RFC 4007 §9):
//! End/End.X towards another port with a link-local next segment or
//! source, End.DX6 of an inner packet with one, are `ipv6_link_local_scope`
//! (End.DT6 recirculates, and input refuses to route it).
//!
//! Egress is resolved before anything is rewritten (re-run rule); a
//! decapsulated packet, or one whose next segment is local again, is
//! recirculated. Every drop or error at a SID is also counted on the SID.

use std::net::IpAddr;

use netwire::ipv4::Protocol;
use netwire::ipv6ext::{self, IPV4_IN_IPV6, IPV6_IN_IPV6};
use netwire::{ethernet, grow_front, ipv4, ipv6, srh, storage, PacketBuf, WireError};

use super::ctx::{PacketFlags, Stage, WorkerCtx};
use super::input::Ip6Header;
use super::{egress_miss, local, Pipeline, Step, Verdict, RECIRCULATE_MAX};
use crate::fib::{is_link_local6, NextHop};
use crate::srv6::{Behavior, StoragePolicy};
use crate::stats::{param_problem_arg, DropReason, PuntReason};

const ETH: usize = ethernet::HEADER_LEN;
const IP6: usize = ipv6::HEADER_LEN;

/// An IPv6 frame addressed to a SID: the input stage's header and where its
/// extension headers are.
pub(crate) struct SidPacket<'a> {
    pub h: &'a Ip6Header,
    pub chain: ipv6ext::ExtChain,
}

/// A SID's view of an SRH with Segments Left > 0.
struct Srh {
    sl: u8,
    offset: usize,
    rt: ipv6ext::RoutingInfo,
    check: Result<(), srh::SrhError>,
}

impl WorkerCtx {
    /// Counts `r` on the SID of counter slot `slot` and drops.
    pub(crate) fn sid_drop(&self, slot: usize, r: DropReason) -> Verdict {
        self.sid_counters[slot].drops.inc(r);
        Verdict::Drop(r)
    }

    /// Counts a parameter problem on the SID of counter slot `slot` and punts it (code, pointer
    /// into the IPv6 packet) for the ICMPv6 error.
    pub(crate) fn sid_param_problem(&mut self, slot: usize, code: u8, pointer: usize) -> Verdict {
        self.sid_counters[slot].drops.inc(DropReason::Srv6ParamProblem);
        self.meta.punt_arg = param_problem_arg(code, pointer as u32);
        Verdict::Punt(PuntReason::ParamProblem)
    }
}

impl Pipeline {
    /// A packet addressed to local SID `sid`.
    /// `h`: the input stage's view of the packet, whose extension header
    /// chain (checked there) is reused rather than walked again.
    pub(crate) fn srv6_sid<P: PacketBuf>(
        &self,
        pkt: &mut P,
        in_port: u16,
        sid: u16,
        h: &Ip6Header,
        ctx: &mut WorkerCtx,
    ) -> Step {
        ctx.meta.enter(Stage::Sid);
        let c = &ctx.sid_counters[self.srv6.slot(sid)];
        c.packets.inc();
        c.bytes.add(pkt.data().len() as u64);
        if !self.srv6.trusted(in_port) {
            return ctx.sid_drop(self.srv6.slot(sid), DropReason::Srv6Untrusted).into();
        }
        if ctx.meta.recirculated >= RECIRCULATE_MAX {
            return ctx.sid_drop(self.srv6.slot(sid), DropReason::Srv6TooDeep).into();
        }
        let chain = match h.chain {
            Some(c) => c.chain,
            None => {
                // No extension header: nothing to walk (the walk returns at once).
                let ip = &pkt.data()[ETH..];
                let Ok(chain) = ipv6ext::walk(h.next_header, &ip[IP6..h.ip_len]) else {
                    return ctx.sid_drop(self.srv6.slot(sid), DropReason::Srv6BadSrh).into();
                };
                chain
            }
        };
        let p = SidPacket { h, chain };
        match p.chain.routing {
            Some(rt) if rt.segments_left > 0 => self.sid_segments_left(pkt, in_port, sid, ctx, &p, rt),
            _ => self.sid_upper_layer(pkt, in_port, sid, ctx, &p),
        }
    }

    /// A SID with Segments Left > 0: checks, the storage decision, then End.
    fn sid_segments_left<P: PacketBuf>(
        &self,
        pkt: &mut P,
        in_port: u16,
        sid: u16,
        ctx: &mut WorkerCtx,
        p: &SidPacket,
        rt: ipv6ext::RoutingInfo,
    ) -> Step {
        let spec = self.srv6.sid(sid);
        if rt.routing_type != srh::ROUTING_TYPE {
            // RFC 8200 §4.4: unknown routing type with Segments Left > 0.
            return ctx.sid_param_problem(self.srv6.slot(sid), 0, IP6 + rt.offset + 2).into();
        }
        if matches!(spec.behavior, Behavior::EndDt6 | Behavior::EndDx6) {
            // Segments Left must be 0 here (RFC 8986 §4.4/§4.6 S02-S04);
            // these behaviours have no hop-limit step.
            return ctx.sid_param_problem(self.srv6.slot(sid), 0, IP6 + rt.offset + 3).into();
        }
        let offset = ETH + IP6 + rt.offset;
        let (sl, check) = {
            let s = srh::Packet::new_unchecked(&pkt.data()[offset..offset + rt.len]);
            (s.segments_left(), s.check_srh())
        };
        let s = Srh { sl, offset, rt, check };
        if spec.behavior == Behavior::Storage {
            // Decide on a well-formed SRH only; an accepted request is local
            // delivery (no hop-limit step), a passed one continues as End.
            if let Err(e) = s.check {
                return ctx
                    .sid_param_problem(self.srv6.slot(sid), 0, IP6 + rt.offset + e.pointer_offset() as usize)
                    .into();
            }
            if self.storage_accepts(pkt.data(), spec.policy, p, ctx) {
                return self.storage_accept(pkt, in_port, sid, ctx, p).into();
            }
            ctx.sid_counters[self.srv6.slot(sid)].passed.inc();
            ctx.meta.flags.insert(PacketFlags::STORAGE_PASSED);
        }
        // End (RFC 8986 §4.1): hop limit (S05), then Last Entry / Segments
        // Left / TLV checks (S08-S10).
        if p.h.hop_limit <= 1 {
            ctx.sid_counters[self.srv6.slot(sid)].drops.inc(DropReason::TtlExpired);
            return Verdict::Punt(PuntReason::TtlExpired).into();
        }
        if let Err(e) = s.check {
            return ctx.sid_param_problem(self.srv6.slot(sid), 0, IP6 + rt.offset + e.pointer_offset() as usize).into();
        }
        self.end(pkt, in_port, sid, ctx, p, &s)
    }

    /// The storage policy's decision for a request at a storage SID.
    fn storage_accepts(&self, frame: &[u8], policy: Option<StoragePolicy>, p: &SidPacket, ctx: &WorkerCtx) -> bool {
        if ctx.meta.input.contains(PacketFlags::STORAGE_PASSED) {
            // A re-run of a request this node already passed on.
            return false;
        }
        match policy.unwrap_or(StoragePolicy::NeverButLast) {
            StoragePolicy::Always => true,
            StoragePolicy::NeverButLast => false,
            StoragePolicy::SrC { threshold } => ctx.service.queue_depth() < threshold,
            StoragePolicy::HoldsObject => request_object_id(frame, p).is_some_and(|o| ctx.service.holds(o)),
        }
    }

    /// End / End.X with Segments Left > 0 (checks already passed).
    fn end<P: PacketBuf>(
        &self,
        pkt: &mut P,
        in_port: u16,
        sid: u16,
        ctx: &mut WorkerCtx,
        p: &SidPacket,
        s: &Srh,
    ) -> Step {
        let spec = self.srv6.sid(sid);
        let new_sl = s.sl - 1;
        let new_da =
            srh::Packet::new_unchecked(&pkt.data()[s.offset..s.offset + s.rt.len]).segment(usize::from(new_sl));
        let pop = spec.psp && new_sl == 0;
        let new_len = p.h.ip_len - if pop { s.rt.len } else { 0 };
        // Plan: where does the packet go? (Nothing changed yet.)
        let target = match spec.adjacency {
            Some((port, nh)) if spec.behavior == Behavior::EndX => Some((port, IpAddr::V6(nh))),
            _ => match self.fib.route(IpAddr::V6(new_da)) {
                Some(NextHop::Forward { port, via }) => Some((port, via.unwrap_or(IpAddr::V6(new_da)))),
                Some(_) => None, // local again: recirculated after the rewrite
                None => {
                    ctx.sid_counters[self.srv6.slot(sid)].drops.inc(DropReason::NoRoute);
                    return Verdict::Punt(PuntReason::NoRoute).into();
                }
            },
        };
        if target.is_some_and(|(port, _)| port != in_port) && (is_link_local6(new_da) || is_link_local6(p.h.src)) {
            // RFC 4007 §9: a link-local address never leaves its link.
            return ctx.sid_drop(self.srv6.slot(sid), DropReason::Ipv6LinkLocalScope).into();
        }
        let egress = match target {
            Some((port, nh)) => match self.fib.resolve_egress(port, nh, new_len, 0, true) {
                Ok(e) => Some(e),
                Err(miss) => return egress_miss(miss, port, nh, &mut ctx.meta).into(),
            },
            None => None,
        };
        // Commit: hop limit, Segments Left, destination.
        {
            let data = pkt.data_mut();
            srh::Packet::new_unchecked(&mut data[s.offset..s.offset + s.rt.len]).set_segments_left(new_sl);
            let mut ip = ipv6::Packet::new_unchecked(&mut data[ETH..]);
            ip.set_hop_limit(p.h.hop_limit - 1);
            ip.set_dst_addr(new_da);
        }
        if pop {
            pop_srh(pkt, p.h.ip_len, s.rt);
        }
        match egress {
            Some(e) => {
                e.write_macs(pkt.data_mut());
                Verdict::Forward(e.port).into()
            }
            None => Step::Recirculate,
        }
    }

    /// Upper-layer processing at a SID: Segments Left 0, or no SRH.
    fn sid_upper_layer<P: PacketBuf>(
        &self,
        pkt: &mut P,
        in_port: u16,
        sid: u16,
        ctx: &mut WorkerCtx,
        p: &SidPacket,
    ) -> Step {
        let spec = self.srv6.sid(sid);
        let upper = p.chain.upper_layer;
        let decap = match spec.behavior {
            Behavior::EndDt6 | Behavior::EndDx6 => true,
            Behavior::End | Behavior::EndX => spec.usd,
            Behavior::Storage => return self.storage_accept(pkt, in_port, sid, ctx, p).into(),
        };
        if decap && upper == IPV6_IN_IPV6 && p.chain.has_upper_layer_header() {
            return self.decapsulate6(pkt, in_port, sid, ctx, p);
        }
        if upper == Protocol::ICMPV6 && p.chain.routing.is_none() && p.chain.ext_count == 0 {
            match local::echo6(pkt, in_port, self.fib.ports()[usize::from(in_port)].mac, p.h.ip_len) {
                Ok(v) => return v.into(),
                Err(WireError::Unsupported) => {}
                Err(_) => return ctx.sid_drop(self.srv6.slot(sid), DropReason::LocalIcmpMalformed).into(),
            }
        }
        // RFC 8986 §4.1.1: not an upper layer this SID processes.
        ctx.sid_param_problem(self.srv6.slot(sid), 4, IP6 + p.chain.upper_layer_offset).into()
    }

    /// End.DX6 (to its adjacency) and End.DT6 / USD (recirculated for a
    /// lookup) of an IPv6-in-IPv6 payload.
    fn decapsulate6<P: PacketBuf>(
        &self,
        pkt: &mut P,
        in_port: u16,
        sid: u16,
        ctx: &mut WorkerCtx,
        p: &SidPacket,
    ) -> Step {
        let spec = self.srv6.sid(sid);
        let hdrs = IP6 + p.chain.upper_layer_offset;
        let inner_len = p.h.ip_len - hdrs;
        if inner_len < IP6 {
            return ctx.sid_drop(self.srv6.slot(sid), DropReason::Ipv6Malformed).into();
        }
        if spec.behavior != Behavior::EndDx6 {
            // End.DT6 (and End/End.X with USD): look the inner packet up.
            decapsulate(pkt, hdrs, p.h.ip_len);
            return Step::Recirculate;
        }
        let (port, nh) = spec.adjacency.expect("End.DX6 has an adjacency");
        let inner = ipv6::Packet::new_unchecked(&pkt.data()[ETH + hdrs..]);
        if port != in_port && (is_link_local6(inner.src_addr()) || is_link_local6(inner.dst_addr())) {
            return ctx.sid_drop(self.srv6.slot(sid), DropReason::Ipv6LinkLocalScope).into();
        }
        let egress = match self.fib.resolve_egress(port, IpAddr::V6(nh), inner_len, 0, true) {
            Ok(e) => e,
            Err(miss) => return egress_miss(miss, port, IpAddr::V6(nh), &mut ctx.meta).into(),
        };
        decapsulate(pkt, hdrs, p.h.ip_len);
        egress.write_macs(pkt.data_mut());
        Verdict::Forward(port).into()
    }

    /// H.Encaps / H.Encaps.Red of an IPv4 or IPv6 packet on steering policy
    /// `policy`.
    pub(crate) fn h_encaps<P: PacketBuf>(&self, pkt: &mut P, policy: u16, ctx: &mut WorkerCtx) -> Verdict {
        ctx.meta.enter(Stage::Encap);
        let pol = self.srv6.policy(policy);
        let inner = Inner::read(pkt.data());
        if inner.ttl <= 1 {
            return Verdict::Punt(PuntReason::TtlExpired);
        }
        let overhead = IP6 + pol.srh_len;
        // Plan: the outer destination's route and neighbour.
        let (port, nh) = match self.fib.route(IpAddr::V6(pol.first)) {
            Some(NextHop::Forward { port, via }) => (port, via.unwrap_or(IpAddr::V6(pol.first))),
            _ => return Verdict::Punt(PuntReason::NoRoute),
        };
        let egress = match self.fib.resolve_egress(port, nh, inner.len + overhead, overhead, inner.df) {
            Ok(e) => e,
            Err(miss) => return egress_miss(miss, port, nh, &mut ctx.meta),
        };
        // Commit: forward the inner packet (TTL/hop limit), then push headers.
        {
            let data = pkt.data_mut();
            if inner.is_v4 {
                ipv4::Packet::new_unchecked(&mut data[ETH..]).decrement_ttl_incremental();
            } else {
                ipv6::Packet::new_unchecked(&mut data[ETH..]).set_hop_limit(inner.ttl - 1);
            }
        }
        // Drop link padding after the inner packet, then make room in front.
        if !pkt.set_len(ETH + inner.len) || !grow_front(pkt, overhead) {
            return Verdict::Drop(DropReason::NoMbuf);
        }
        let inner_proto = if inner.is_v4 { IPV4_IN_IPV6 } else { IPV6_IN_IPV6 };
        let data = pkt.data_mut();
        // Ethernet header to the front (it was pushed back by `overhead`).
        data.copy_within(overhead..overhead + ETH, 0);
        egress.write_macs(data);
        data[12..14].copy_from_slice(&ethernet::EtherType::IPV6.0.to_be_bytes());
        let next = if pol.srh_len > 0 { Protocol::IPV6_ROUTING } else { inner_proto };
        let _ = ipv6::emit_header(&mut data[ETH..], pol.source, pol.first, next, 64, pol.srh_len + inner.len);
        {
            let mut ip = ipv6::Packet::new_unchecked(&mut data[ETH..]);
            ip.set_traffic_class(inner.tclass);
            ip.set_flow_label(inner.flow_hash & 0x000f_ffff);
        }
        if pol.srh_len > 0 {
            let s = &mut data[ETH + IP6..ETH + IP6 + pol.srh_len];
            s.copy_from_slice(&pol.srh[..pol.srh_len]);
            s[0] = inner_proto.0;
        }
        Verdict::Forward(port)
    }
}

/// What H.Encaps reads of the packet it encapsulates.
struct Inner {
    is_v4: bool,
    len: usize,
    ttl: u8,
    tclass: u8,
    flow_hash: u32,
    df: bool,
}

impl Inner {
    fn read(frame: &[u8]) -> Inner {
        if u16::from_be_bytes([frame[12], frame[13]]) == ethernet::EtherType::IPV4.0 {
            let ip = ipv4::Packet::new_unchecked(&frame[ETH..]);
            Inner {
                is_v4: true,
                len: usize::from(ip.total_len()),
                ttl: ip.ttl(),
                tclass: ip.dscp() << 2 | ip.ecn(),
                flow_hash: flow_label_hash(&ip.src_addr().octets(), &ip.dst_addr().octets(), ip.protocol().0),
                df: ip.dont_frag(),
            }
        } else {
            let ip = ipv6::Packet::new_unchecked(&frame[ETH..]);
            let fl = ip.flow_label();
            Inner {
                is_v4: false,
                len: IP6 + usize::from(ip.payload_len()),
                ttl: ip.hop_limit(),
                tclass: ip.traffic_class(),
                flow_hash: if fl != 0 {
                    fl
                } else {
                    flow_label_hash(&ip.src_addr().octets(), &ip.dst_addr().octets(), ip.next_header().0)
                },
                df: true,
            }
        }
    }
}

/// The storage request's object id, read before a steering decision.
fn request_object_id(frame: &[u8], p: &SidPacket) -> Option<u64> {
    if p.chain.upper_layer != Protocol::UDP || !p.chain.has_upper_layer_header() {
        return None;
    }
    let off = ETH + IP6 + p.chain.upper_layer_offset + 8;
    let end = ETH + p.h.ip_len;
    let req = storage::Packet::new_checked(frame.get(off..end)?).ok()?;
    Some(req.object_id())
}

/// A flow label from the inner addresses and protocol (RFC 6437 §3).
fn flow_label_hash(src: &[u8], dst: &[u8], proto: u8) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in src.iter().chain(dst).chain(std::iter::once(&proto)) {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    (h ^ (h >> 20)) & 0x000f_ffff
}

/// Removes the outer IPv6 header and `hdrs - 40` bytes of extension headers
/// in front of the inner packet, keeping the Ethernet header (and dropping
/// link padding).
fn decapsulate<P: PacketBuf>(pkt: &mut P, hdrs: usize, outer_ip_len: usize) {
    let _ = pkt.set_len(ETH + outer_ip_len);
    let data = pkt.data_mut();
    data.copy_within(0..ETH, hdrs);
    let _ = pkt.adj(hdrs);
}

/// Removes the SRH (PSP): shifts everything before it forward over it and
/// fixes the Next Header field that named it and the payload length.
fn pop_srh<P: PacketBuf>(pkt: &mut P, ip_len: usize, rt: ipv6ext::RoutingInfo) {
    let srh_off = ETH + IP6 + rt.offset;
    let _ = pkt.set_len(ETH + ip_len);
    let data = pkt.data_mut();
    let srh_next = data[srh_off];
    match rt.prev_next_header_offset {
        None => data[ETH + 6] = srh_next,
        Some(off) => data[ETH + IP6 + off] = srh_next,
    }
    let plen = u16::from_be_bytes([data[ETH + 4], data[ETH + 5]]) - rt.len as u16;
    data[ETH + 4..ETH + 6].copy_from_slice(&plen.to_be_bytes());
    data.copy_within(0..srh_off, rt.len);
    let _ = pkt.adj(rt.len);
}
