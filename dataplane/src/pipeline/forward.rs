//! Plain forwarding: directed broadcasts of a connected subnet are not
//! forwarded (`ipv4_directed_broadcast`, RFC 2644), TTL / hop limit (≤ 1: punt `ttl_expired` for ICMP time
//! exceeded), the egress (MTU, neighbour: [`crate::fib::Fib::resolve_egress`]),
//! then the rewrite: TTL decremented with an incremental checksum update
//! (RFC 1624) or hop limit decremented, MACs written.

use std::net::IpAddr;

use netwire::{ethernet, ipv4, ipv6, PacketBuf};

use super::input::{Ip4Header, Ip6Header};
use super::{egress_miss, Pipeline, Stage, Verdict, WorkerCtx};
use crate::stats::{DropReason, PuntReason};

const ETH: usize = ethernet::HEADER_LEN;

impl Pipeline {
    /// IPv4 out of `port`, to `via` or the destination itself.
    #[inline(always)]
    pub(crate) fn forward4<P: PacketBuf>(
        &self,
        pkt: &mut P,
        port: u16,
        via: Option<IpAddr>,
        h: &Ip4Header,
        ctx: &mut WorkerCtx,
    ) -> Verdict {
        ctx.meta.enter(Stage::Forward);
        // RFC 2644: a router does not forward directed broadcasts by default.
        if via.is_none() && self.fib.is_subnet_broadcast(port, h.dst) {
            return Verdict::Drop(DropReason::Ipv4DirectedBroadcast);
        }
        if h.ttl <= 1 {
            return Verdict::Punt(PuntReason::TtlExpired);
        }
        let next_hop = via.unwrap_or(IpAddr::V4(h.dst));
        let egress = match self.fib.resolve_egress(port, next_hop, usize::from(h.total_len), 0, h.df) {
            Ok(e) => e,
            Err(miss) => return egress_miss(miss, port, next_hop, &mut ctx.meta),
        };
        let data = pkt.data_mut();
        ipv4::Packet::new_unchecked(&mut data[ETH..]).decrement_ttl_incremental();
        egress.write_macs(data);
        Verdict::Forward(port)
    }

    /// IPv6 out of `port`, to `via` or the destination itself.
    #[inline(always)]
    pub(crate) fn forward6<P: PacketBuf>(
        &self,
        pkt: &mut P,
        port: u16,
        via: Option<IpAddr>,
        h: &Ip6Header,
        ctx: &mut WorkerCtx,
    ) -> Verdict {
        ctx.meta.enter(Stage::Forward);
        if h.hop_limit <= 1 {
            return Verdict::Punt(PuntReason::TtlExpired);
        }
        let next_hop = via.unwrap_or(IpAddr::V6(h.dst));
        let egress = match self.fib.resolve_egress(port, next_hop, h.ip_len, 0, true) {
            Ok(e) => e,
            Err(miss) => return egress_miss(miss, port, next_hop, &mut ctx.meta),
        };
        let data = pkt.data_mut();
        ipv6::Packet::new_unchecked(&mut data[ETH..]).set_hop_limit(h.hop_limit - 1);
        egress.write_macs(data);
        Verdict::Forward(port)
    }
}
