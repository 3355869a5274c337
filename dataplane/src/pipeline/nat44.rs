//! The NAT44 fast-path stage: runs on IPv4 after the input checks and the
//! route lookup, before forwarding (see [`crate::nat::fast`] for the cache
//! and why an entry never outlives its session).
//!
//! ```text
//!  in inside port, route out an outside port  → outbound: cache[out key] → rewrite source
//!  in inside port, destination in the pool    → hairpin: outbound, then inbound
//!  in any other port, destination in the pool → inbound: cache[in key] → rewrite destination
//!  in an outside port, route out an inside port → dropped (nat_no_mapping): no
//!                                                 way in except through a mapping
//!  a miss → handed off to the mapping core (held, not dropped)
//! ```
//!
//! Fragments (virtual reassembly, [`crate::nat::frag`]): a first fragment
//! is translated like a whole packet and its translation recorded; every
//! other fragment of the datagram gets the same addresses, or is held
//! (`HandOff::NatFragment`) until its first fragment has been translated.
//!
//! Checked before anything is translated or asked: TTL (time exceeded goes
//! to the untranslated sender) and, outbound, the egress MTU (the
//! fragmentation-needed error goes to the inside host, untranslated).
//! A translated packet is routed again by the input stage; the
//! [`PacketFlags::NAT_DONE`] flag keeps it (and its re-runs) from being
//! translated twice.

use std::net::Ipv4Addr;

use netwire::{ethernet, PacketBuf};

use super::ctx::{PacketFlags, Stage, WorkerCtx};
use super::input::Ip4Header;
use super::{HandOff, Pipeline, Verdict};
use crate::fib::NextHop;
use crate::nat::cache::{CacheKey, Rewrite};
use crate::nat::fast::{NatWorker, Role};
use crate::nat::frag::{self, FragKey, FragRewrite, FragVerdict};
use crate::nat::msg::RequestKind;
use crate::nat::{translate, Direction};
use crate::stats::{DropReason, PuntReason};

impl Pipeline {
    /// `Ok(None)`: NAT does not touch the packet (or already has); `Ok(Some(dst))`:
    /// translated, route it again to `dst`; `Err(verdict)`: stop here (a punt
    /// before translation, a miss handed to the mapping core, a drop).
    #[inline]
    pub(crate) fn nat44<P: PacketBuf>(
        &self,
        pkt: &mut P,
        in_port: u16,
        nh: Option<NextHop>,
        h: &Ip4Header,
        l2_multicast: bool,
        ctx: &mut WorkerCtx,
    ) -> Result<Option<Ipv4Addr>, Verdict> {
        let Some(plan) = &self.nat else { return Ok(None) };
        if ctx.meta.input.nat_done() {
            return Ok(None);
        }
        let out_port = match nh {
            Some(NextHop::Forward { port, .. }) => Some(port),
            _ => None,
        };
        let kind = match (plan.role(in_port), nh == Some(NextHop::NatPool), out_port.map(|p| plan.role(p))) {
            (Role::Inside, true, _) => RequestKind::Hairpin,
            (Role::Inside, false, Some(Role::Outside)) => RequestKind::Outbound,
            (Role::Inside, false, _) => return Ok(None),
            (_, true, _) => RequestKind::Inbound,
            (Role::Outside, false, Some(Role::Inside)) => return Err(Verdict::Drop(DropReason::NatNoMapping)),
            (_, false, _) => return Ok(None),
        };
        ctx.meta.enter(Stage::Nat44);
        if l2_multicast {
            return Err(Verdict::Drop(DropReason::EthMulticastNotForwarded));
        }
        if h.ttl <= 1 {
            return Err(Verdict::Punt(PuntReason::TtlExpired));
        }
        if let Some(port) = out_port.filter(|_| kind == RequestKind::Outbound) {
            let mtu = self.fib.ports()[usize::from(port)].mtu;
            if h.total_len > mtu {
                ctx.meta.punt_arg = u32::from(mtu);
                return Err(if h.df {
                    Verdict::Punt(PuntReason::TooBig)
                } else {
                    Verdict::Drop(DropReason::FragmentationNeeded)
                });
            }
        }
        let Some(nw) = ctx.nat.as_deref_mut() else {
            return Err(Verdict::Drop(DropReason::NatNoState));
        };
        let ip = &mut pkt.data_mut()[ethernet::HEADER_LEN..ethernet::HEADER_LEN + usize::from(h.total_len)];
        let direction = if kind == RequestKind::Inbound { Direction::Inbound } else { Direction::Outbound };
        if frag::is_later_fragment(ip) {
            let dst = later_fragment(nw, ip, direction)?;
            ctx.meta.flags.insert(PacketFlags::NAT_DONE);
            return Ok(Some(dst));
        }
        let first = frag::is_first_fragment(ip).then(|| FragKey::of(direction, ip));
        if let Some(miss) = translate_from_cache(nw, ip, kind)? {
            return Err(Verdict::HandOff(HandOff::NatMapper(miss)));
        }
        let (src, dst) = (Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]), Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]));
        if let Some(key) = first {
            nw.frags.record(key, FragRewrite { src, dst }, nw.now_ms);
        }
        ctx.meta.flags.insert(PacketFlags::NAT_DONE);
        Ok(Some(dst))
    }

    /// Prefetches the NAT cache bucket a frame received on `in_port` will
    /// look up (a cheap guess from its headers, no validation: the lookup
    /// itself checks everything). Called for a whole burst before any of it
    /// is processed, so the buckets' memory latencies overlap.
    #[inline]
    pub fn nat_prefetch(&self, frame: &[u8], in_port: u16, ctx: &WorkerCtx) {
        let (Some(plan), Some(nw)) = (&self.nat, ctx.nat.as_deref()) else { return };
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
}

/// A fragment other than the first: translated as its datagram's first
/// fragment was (addresses only), held until that is known, or dropped when
/// there is no room to hold it. Returns the new destination.
#[cold]
fn later_fragment(nw: &mut NatWorker, ip: &mut [u8], direction: Direction) -> Result<Ipv4Addr, Verdict> {
    match nw.frags.lookup_or_hold(FragKey::of(direction, ip), nw.now_ms) {
        FragVerdict::Rewrite(rw) => {
            frag::rewrite_fragment(ip, rw);
            Ok(rw.dst)
        }
        FragVerdict::Held(slot) => Err(Verdict::HandOff(HandOff::NatFragment(slot))),
        FragVerdict::Full => Err(Verdict::Drop(DropReason::NatFragmentsFull)),
    }
}

/// Translates `ip` from the worker's cache for a packet of `kind`:
/// `Ok(None)` when done, `Ok(Some(kind))` on a miss, with what to ask the
/// mapping core (a hairpin whose outbound half hit is translated outbound
/// already and asks for the inbound half only).
#[inline(always)]
fn translate_from_cache(nw: &mut NatWorker, ip: &mut [u8], kind: RequestKind) -> Result<Option<RequestKind>, Verdict> {
    let flow = translate::parse_flow(ip).map_err(|e| Verdict::Drop(e.drop_reason()))?;
    let mut key = flow.key;
    if kind != RequestKind::Inbound {
        let Some(rw) = step(nw, ip, Direction::Outbound, &key, &flow)? else {
            return Ok(Some(kind));
        };
        if kind == RequestKind::Outbound {
            return Ok(None);
        }
        // Hairpin: the packet now comes from the public endpoint and is
        // an inbound packet of the destination's mapping.
        key.src = rw.addr;
        key.sport = rw.port;
        if key.proto == translate::Proto::Icmp && !flow.icmp_error {
            key.dport = rw.port;
        }
    }
    match step(nw, ip, Direction::Inbound, &key, &flow)? {
        Some(_) => Ok(None),
        None => Ok(Some(RequestKind::Inbound)),
    }
}

/// One NAT step from the worker's cache: looks `key` up in `direction`,
/// queues the activity report a hit may owe, and rewrites `ip` (the source
/// outbound, the destination inbound; the quoted packet too for ICMP errors,
/// which report no activity). `Ok(None)` on a miss.
#[inline]
fn step(
    nw: &mut NatWorker,
    ip: &mut [u8],
    direction: Direction,
    key: &translate::FlowKey,
    flow: &translate::Flow,
) -> Result<Option<Rewrite>, Verdict> {
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
