//! ICMP and ICMPv6 errors (RFC 792/1812, RFC 4443): time exceeded,
//! destination unreachable, fragmentation needed / packet too big, ICMPv6
//! parameter problem. One path for both families: decide whether an error
//! may be sent and which ([`ErrorPlan`]), take a token from the rate limit,
//! build the frame back to the sender out of the port the offending packet
//! came in on.
//!
//! Never sent about an ICMP error, a non-first fragment or a non-unicast
//! source (RFC 1812 §4.3.2.7, RFC 4443 §2.4(e)), nor about a packet that
//! arrived as link-layer broadcast/multicast (except ICMPv6 packet too big);
//! those are counted as `icmp_error_suppressed`.

use std::net::IpAddr;

use netwire::{ethernet, icmpv4, icmpv6, ipv4, ipv6, MacAddr, PacketBuf, PacketPool};

use super::SlowPath;
use crate::stats::{DropReason, IcmpErrorKind};

/// Which ICMP error to send.
#[derive(Debug, Clone, Copy)]
pub(crate) enum IcmpWhy {
    TimeExceeded,
    NoRoute,
    HostUnreachable,
    PortUnreachable,
    TooBig(u16),
    /// ICMPv6 parameter problem: code, pointer.
    ParamProblem(u8, u32),
}

/// An error that may be sent: what, from and to whom.
struct ErrorPlan {
    kind: IcmpErrorKind,
    msg_type: u8,
    code: u8,
    /// ICMPv4 rest of header / ICMPv6 parameter (MTU, pointer).
    param: u32,
    our_ip: IpAddr,
    peer_ip: IpAddr,
}

/// The ICMPv4 error for `why` (`None`: no such error in ICMPv4).
fn v4_error(why: IcmpWhy) -> Option<(IcmpErrorKind, icmpv4::Message, u8, u32)> {
    use icmpv4::Message as M;
    Some(match why {
        IcmpWhy::TimeExceeded => (IcmpErrorKind::V4TimeExceeded, M::TIME_EXCEEDED, 0, 0),
        IcmpWhy::NoRoute => (IcmpErrorKind::V4NetUnreachable, M::DEST_UNREACHABLE, 0, 0),
        IcmpWhy::HostUnreachable => (IcmpErrorKind::V4HostUnreachable, M::DEST_UNREACHABLE, 1, 0),
        IcmpWhy::PortUnreachable => (IcmpErrorKind::V4PortUnreachable, M::DEST_UNREACHABLE, 3, 0),
        IcmpWhy::TooBig(mtu) => {
            (IcmpErrorKind::V4FragmentationNeeded, M::DEST_UNREACHABLE, 4, icmpv4::frag_needed_rest_of_header(mtu))
        }
        IcmpWhy::ParamProblem(code, pointer) => (
            IcmpErrorKind::V4ParamProblem,
            M::PARAMETER_PROBLEM,
            code,
            icmpv4::parameter_problem_rest_of_header(pointer.min(255) as u8),
        ),
    })
}

/// The ICMPv6 error for `why`.
fn v6_error(why: IcmpWhy) -> (IcmpErrorKind, icmpv6::Message, u8, u32) {
    use icmpv6::Message as M;
    match why {
        IcmpWhy::TimeExceeded => (IcmpErrorKind::V6TimeExceeded, M::TIME_EXCEEDED, 0, 0),
        IcmpWhy::NoRoute => (IcmpErrorKind::V6NoRoute, M::DEST_UNREACHABLE, 0, 0),
        IcmpWhy::HostUnreachable => (IcmpErrorKind::V6AddressUnreachable, M::DEST_UNREACHABLE, 3, 0),
        IcmpWhy::PortUnreachable => (IcmpErrorKind::V6PortUnreachable, M::DEST_UNREACHABLE, 4, 0),
        IcmpWhy::TooBig(mtu) => (IcmpErrorKind::V6PacketTooBig, M::PACKET_TOO_BIG, 0, u32::from(mtu)),
        IcmpWhy::ParamProblem(code, pointer) => (IcmpErrorKind::V6ParamProblem, M::PARAMETER_PROBLEM, code, pointer),
    }
}

impl<P: PacketBuf> SlowPath<P> {
    /// Sends an ICMP/ICMPv6 error about `offending` (a frame received on its
    /// port) back to its sender, out of the same port.
    pub(crate) fn icmp_error<Pool: PacketPool<Buf = P>>(
        &mut self,
        offending: &P,
        why: IcmpWhy,
        now_ms: u64,
        pool: &mut Pool,
        send: &mut dyn FnMut(P),
    ) {
        let port = offending.port();
        let Some(info) = self.pipeline.ports().get(usize::from(port)) else { return };
        let (our_mac, mtu) = (MacAddr(info.mac), usize::from(info.mtu));
        let Ok(eth) = ethernet::Packet::new_checked(offending.data()) else { return };
        let (peer_mac, l2_multicast) = (eth.src_addr(), eth.dst_addr().is_multicast());
        let Some((plan, ip_bytes)) = self.plan_error(eth.ethertype(), eth.payload(), why, l2_multicast, port) else {
            return;
        };
        if !self.take_icmp_token(now_ms) {
            self.counters.drops.inc(DropReason::IcmpRateLimited);
            return;
        }
        let Some(mut out) = pool.alloc() else {
            self.counters.drops.inc(DropReason::NoMbuf);
            return;
        };
        let mut body = [0u8; 1280];
        // The error fits the port's MTU (RFC 1812 §4.3.2.3 and RFC 4443
        // §2.4(c) cap it at 576 / 1280 octets; a smaller MTU cuts the quote).
        let ip_header = if plan.our_ip.is_ipv4() { ipv4::HEADER_LEN } else { ipv6::HEADER_LEN };
        let quote_max = mtu.saturating_sub(ip_header + icmpv4::HEADER_LEN);
        let quote = &ip_bytes[..ip_bytes.len().min(quote_max)];
        let n = match plan.our_ip {
            IpAddr::V4(_) => {
                icmpv4::emit_error(&mut body[..576], icmpv4::Message(plan.msg_type), plan.code, plan.param, quote)
            }
            IpAddr::V6(_) => {
                icmpv6::emit_error(&mut body, icmpv6::Message(plan.msg_type), plan.code, plan.param, quote)
            }
        };
        let Ok(n) = n else { return };
        if emit_ip_frame(&mut out, our_mac, peer_mac, plan.our_ip, plan.peer_ip, 64, &body[..n]) {
            out.set_port(port);
            self.counters.icmp_errors.inc(plan.kind);
            send(out);
        }
    }

    /// Whether an error about the IP packet in `payload` may be sent, and
    /// which; `None` (counted when suppressed by rule) when not. Returns the
    /// offending IP packet without link padding with it.
    fn plan_error<'a>(
        &self,
        ethertype: ethernet::EtherType,
        payload: &'a [u8],
        why: IcmpWhy,
        l2_multicast: bool,
        port: u16,
    ) -> Option<(ErrorPlan, &'a [u8])> {
        let info = &self.pipeline.ports()[usize::from(port)];
        let suppressed = || {
            self.counters.drops.inc(DropReason::IcmpErrorSuppressed);
            None
        };
        if ethertype == ethernet::EtherType::IPV4 {
            let ip = ipv4::Packet::new_checked(payload).ok()?;
            let ip_bytes = &payload[..usize::from(ip.total_len())];
            if !icmpv4::is_error_allowed(ip_bytes) || l2_multicast {
                return suppressed();
            }
            let our_ip = info.primary_ipv4()?;
            let Some((kind, ty, code, param)) = v4_error(why) else { return suppressed() };
            let plan =
                ErrorPlan { kind, msg_type: ty.0, code, param, our_ip: our_ip.into(), peer_ip: ip.src_addr().into() };
            Some((plan, ip_bytes))
        } else if ethertype == ethernet::EtherType::IPV6 {
            let ip = ipv6::Packet::new_checked(payload).ok()?;
            let ip_bytes = &payload[..ipv6::HEADER_LEN + usize::from(ip.payload_len())];
            let our_ip = info.primary_ipv6()?;
            let (kind, ty, code, param) = v6_error(why);
            // RFC 4443 §2.4(e.3-e.5): no error about a packet that arrived as
            // link-layer multicast/broadcast, except Packet Too Big.
            let l2_ok = !l2_multicast || ty == icmpv6::Message::PACKET_TOO_BIG;
            if !icmpv6::is_error_allowed(ip_bytes, ty, code) || !l2_ok {
                return suppressed();
            }
            let plan =
                ErrorPlan { kind, msg_type: ty.0, code, param, our_ip: our_ip.into(), peer_ip: ip.src_addr().into() };
            Some((plan, ip_bytes))
        } else {
            None
        }
    }

    /// Token bucket of ICMP errors (`icmp.errors_per_s`, `icmp.errors_burst`).
    fn take_icmp_token(&mut self, now_ms: u64) -> bool {
        let rate = u64::from(self.cfg.icmp_errors_per_s);
        if rate == 0 {
            return false;
        }
        let cap = u64::from(self.cfg.icmp_errors_burst) * 1000;
        let elapsed = now_ms.saturating_sub(self.icmp_refill_ms);
        self.icmp_refill_ms = now_ms;
        // Tokens in thousandths: `rate` per second is `rate` thousandths per ms.
        self.icmp_tokens_milli = (self.icmp_tokens_milli + elapsed * rate).min(cap);
        if self.icmp_tokens_milli >= 1000 {
            self.icmp_tokens_milli -= 1000;
            true
        } else {
            false
        }
    }
}

/// Writes Ethernet + IPv4 or IPv6 + the ICMP / ICMPv6 message `body` into
/// `out` (ICMPv6 checksum filled over the pseudo-header; `body` carries the
/// ICMPv4 one). False if the addresses mix families or `out` is too small.
pub(crate) fn emit_ip_frame<P: PacketBuf>(
    out: &mut P,
    src_mac: MacAddr,
    dst_mac: MacAddr,
    src: IpAddr,
    dst: IpAddr,
    hop_limit: u8,
    body: &[u8],
) -> bool {
    const ETH: usize = ethernet::HEADER_LEN;
    let (ethertype, ip_header) = match (src, dst) {
        (IpAddr::V4(_), IpAddr::V4(_)) => (ethernet::EtherType::IPV4, ipv4::HEADER_LEN),
        (IpAddr::V6(_), IpAddr::V6(_)) => (ethernet::EtherType::IPV6, ipv6::HEADER_LEN),
        _ => return false,
    };
    let total = ETH + ip_header + body.len();
    if !out.set_len(total.max(60)) {
        return false;
    }
    let data = out.data_mut();
    data.fill(0);
    if ethernet::emit_header(data, dst_mac, src_mac, ethertype).is_err() {
        return false;
    }
    let ip = &mut data[ETH..];
    let ok = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            ipv4::emit_header(ip, s, d, ipv4::Protocol::ICMP, hop_limit, body.len()).is_ok()
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            ipv6::emit_header(ip, s, d, ipv4::Protocol::ICMPV6, hop_limit, body.len()).is_ok()
        }
        _ => false,
    };
    if !ok {
        return false;
    }
    let icmp = &mut ip[ip_header..ip_header + body.len()];
    icmp.copy_from_slice(body);
    if let (IpAddr::V6(s), IpAddr::V6(d)) = (src, dst) {
        icmpv6::Packet::new_unchecked(icmp).fill_checksum(s, d);
    }
    true
}
