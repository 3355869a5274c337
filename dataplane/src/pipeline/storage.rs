//! The storage stage: a request a storage SID accepted.
//!
//! The request is UDP to the service port with a storage header
//! (`netwire::storage`); its UDP checksum is computed by the client over the
//! *final* destination, Segment List[0] (RFC 8200 §8.1), so it is verified
//! against Segment List[0], whichever candidate accepts.
//!
//! With the object service (`storage:` configured) the request becomes a
//! plain request to the object's replica address here (extension headers
//! removed, UDP checksum over the new pseudo-header) and is handed off to
//! the service, which answers from that address: the client learns who
//! accepted. Without it, the built-in responder answers in place, from the
//! SID.

use std::net::Ipv6Addr;

use netwire::ipv4::Protocol;
use netwire::{ethernet, ipv6, storage, udp, PacketBuf};

use super::srv6::SidPacket;
use super::{swap_macs, HandOff, Pipeline, Stage, Verdict, WorkerCtx};
use crate::stats::DropReason;

const ETH: usize = ethernet::HEADER_LEN;
const IP6: usize = ipv6::HEADER_LEN;

impl Pipeline {
    /// Serves a request accepted at storage SID `sid`.
    pub(crate) fn storage_accept<P: PacketBuf>(
        &self,
        pkt: &mut P,
        in_port: u16,
        sid: u16,
        ctx: &mut WorkerCtx,
        p: &SidPacket,
    ) -> Verdict {
        ctx.meta.enter(Stage::StorageAccept);
        let upper_off = ETH + IP6 + p.chain.upper_layer_offset;
        let end = ETH + p.h.ip_len;
        if p.chain.upper_layer != Protocol::UDP
            || !p.chain.has_upper_layer_header()
            || end < upper_off + udp::HEADER_LEN
        {
            return ctx.sid_param_problem(self.srv6.slot(sid), 4, IP6 + p.chain.upper_layer_offset);
        }
        let final_dst = final_destination(pkt.data(), p);
        let (client_port, request, udp_len) = {
            let datagram = &pkt.data()[upper_off..end];
            let (sport, dport, len) = udp::ports_and_len(datagram);
            let len = usize::from(len);
            if len < udp::HEADER_LEN || len > datagram.len() || dport != ctx.service.udp_port() {
                return ctx.sid_drop(self.srv6.slot(sid), DropReason::StorageBadRequest);
            }
            let datagram = &datagram[..len];
            if !udp::verify_v6(datagram, p.h.src, final_dst) {
                return ctx.sid_drop(self.srv6.slot(sid), DropReason::StorageBadChecksum);
            }
            let Ok(req) = storage::Packet::new_checked(&datagram[udp::HEADER_LEN..]) else {
                return ctx.sid_drop(self.srv6.slot(sid), DropReason::StorageBadRequest);
            };
            (sport, storage::Repr::parse(&req), len)
        };
        ctx.sid_counters[self.srv6.slot(sid)].accepted.inc();
        match self.storage {
            Some(plan) => {
                to_replica(pkt, ctx, self.srv6.slot(sid), p.h.src, upper_off, udp_len, &request, plan.object_prefix)
            }
            None => self.respond(pkt, in_port, sid, ctx, p.h.src, client_port, &request),
        }
    }

    /// The built-in responder's reply: Ethernet back to the sender, IPv6
    /// from the SID, UDP from the service port.
    #[allow(clippy::too_many_arguments)]
    fn respond<P: PacketBuf>(
        &self,
        pkt: &mut P,
        in_port: u16,
        sid: u16,
        ctx: &mut WorkerCtx,
        client: Ipv6Addr,
        client_port: u16,
        request: &storage::Repr,
    ) -> Verdict {
        let accepted_by = self.srv6.sid(sid).sid;
        let mut body = [0u8; 128];
        let body_len = ctx.service.serve(request, accepted_by, &mut body);
        let udp_len = udp::HEADER_LEN + body_len;
        let total = ETH + IP6 + udp_len;
        if !pkt.set_len(total.max(60)) {
            return ctx.sid_drop(self.srv6.slot(sid), DropReason::NoMbuf);
        }
        let our_mac = self.fib.ports()[usize::from(in_port)].mac;
        let service_port = ctx.service.udp_port();
        let data = pkt.data_mut();
        data[total..].fill(0);
        swap_macs(&mut data[..ETH], our_mac);
        let _ = ipv6::emit_header(&mut data[ETH..], accepted_by, client, Protocol::UDP, 64, udp_len);
        let datagram = &mut data[ETH + IP6..total];
        udp::emit_header(datagram, service_port, client_port);
        datagram[udp::HEADER_LEN..].copy_from_slice(&body[..body_len]);
        udp::fill_checksum_v6(datagram, accepted_by, client);
        Verdict::Forward(in_port)
    }
}

/// Rewrites an accepted request into a plain request to the object's
/// replica address and hands it to the storage service.
#[allow(clippy::too_many_arguments)]
fn to_replica<P: PacketBuf>(
    pkt: &mut P,
    ctx: &mut WorkerCtx,
    slot: usize,
    client: Ipv6Addr,
    upper_off: usize,
    udp_len: usize,
    request: &storage::Repr,
    object_prefix: Ipv6Addr,
) -> Verdict {
    let replica = Ipv6Addr::from(u128::from(object_prefix) | u128::from(request.object_id));
    pkt.data_mut().copy_within(upper_off..upper_off + udp_len, ETH + IP6);
    if !pkt.set_len(ETH + IP6 + udp_len) {
        return ctx.sid_drop(slot, DropReason::StorageBadRequest);
    }
    let data = pkt.data_mut();
    {
        let mut ip = ipv6::Packet::new_unchecked(&mut data[ETH..]);
        ip.set_payload_len(udp_len as u16);
        ip.set_next_header(Protocol::UDP);
        ip.set_dst_addr(replica);
    }
    udp::fill_checksum_v6(&mut data[ETH + IP6..ETH + IP6 + udp_len], client, replica);
    Verdict::HandOff(HandOff::Storage)
}

/// The request's final destination: Segment List[0] when there is an SRH.
fn final_destination(frame: &[u8], p: &SidPacket) -> Ipv6Addr {
    match p.chain.routing {
        Some(rt) if rt.routing_type == netwire::srh::ROUTING_TYPE => {
            let off = ETH + IP6 + rt.offset;
            netwire::srh::Packet::new_unchecked(&frame[off..off + rt.len]).segment_checked(0).unwrap_or(p.h.dst)
        }
        _ => p.h.dst,
    }
}
