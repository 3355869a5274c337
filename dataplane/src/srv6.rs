//! SRv6: the node as a segment-routing endpoint (RFC 8754, RFC 8986) and the
//! storage-steering behaviour.
//!
//! # Where it sits
//! Local SIDs are /128 host routes whose next hop is [`NextHop::Sid`];
//! steering policies are prefixes whose next hop is [`NextHop::Encap`]. So the
//! one route lookup of [`L3::process`] classifies a packet as plain transit,
//! local, SID or steered; a packet whose destination is not a local SID gets
//! no SRH processing at all (RFC 8754 §4.3: it is plain transit).
//!
//! # Behaviours (RFC 8986 §4)
//! * **End**: with Segments Left > 0: hop-limit check (≤ 1: ICMPv6 time
//!   exceeded), SRH checks (Last Entry, Segments Left, TLVs: ICMPv6 parameter
//!   problem code 0 with a pointer), decrement hop limit and Segments Left,
//!   destination := Segment List[SL], FIB lookup and forward. Flavours: PSP
//!   removes the SRH when SL becomes 0; USD decapsulates an IPv6-in-IPv6
//!   payload when SL is 0.
//! * **End.X**: End, but forwarded to a configured (port, next hop).
//! * **End.DT6**: SL must be 0 (else parameter problem, pointer to SL); the
//!   payload must be IPv6 (next header 41); the outer header and all its
//!   extension headers are removed and the inner packet is looked up and
//!   forwarded (or delivered, if it is for the node).
//! * **End.DX6**: as End.DT6, but the inner packet goes to a configured
//!   (port, next hop) without lookup.
//! * **storage**: the storage-steering behaviour (capability S). The segment
//!   list names candidate storage nodes; at each one the configured
//!   [`StoragePolicy`] decides, per packet, to *accept* (the request is served
//!   by the local storage service and answered from this SID) or to *pass*
//!   (End: on to the next candidate). The last candidate (SL = 0) always
//!   accepts. The request is UDP to the service port with a storage header
//!   (`wire::storage`); its UDP checksum is computed by the client over the
//!   *final* destination, Segment List[0] (RFC 8200 §8.1), so the service
//!   verifies it against Segment List[0], whichever candidate accepts.
//! * Upper-layer processing at a SID (SL = 0 or no SRH): an ICMPv6 echo
//!   request directly after the IPv6 header is answered (one behind an SRH is
//!   not: RFC 8986 leaves the allowed upper layers to local policy);
//!   anything a behaviour does not consume gets a parameter problem code 4
//!   (SR upper-layer header error) pointing at it.
//! * **H.Encaps / H.Encaps.Red** (RFC 8986 §5.1, §5.2): packets to a steered
//!   prefix (IPv6, or IPv4 with next header 4) get an outer IPv6 header and an
//!   SRH built ahead of time from the policy (the reduced form leaves the
//!   first segment out of the SRH, and has no SRH for a single segment). The
//!   inner TTL/hop limit is decremented first, as for any forwarded packet;
//!   the outer hop limit is 64. The node never fragments: a packet that would
//!   exceed the egress MTU gets ICMP fragmentation needed / packet too big
//!   with the MTU less the encapsulation overhead.
//!
//! # Domain edge
//! Packets to a local SID arriving on a port outside the SR domain
//! (`srv6.trusted_ports`) are dropped (`srv6_untrusted`, RFC 8754 §5.1).
//!
//! # Re-running punted packets
//! A packet punted for `neighbor_miss` is in a state from which running the
//! pipeline again gives the same result as if the neighbour had been known
//! (see [`crate::l3`]): behaviours look up their egress neighbour before
//! they rewrite anything, and where a packet re-enters the pipeline after a
//! committed step (decapsulation, a next segment that is local again), the
//! rest of its processing starts from that committed state either way. A
//! storage SID that passed the packet marks the punt so that the control
//! core's re-run passes it too, whatever the queue depth is by then.

use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;

use crate::l3::{swap_macs, NextHop, Verdict, L3};
use crate::neigh::ip_key;
use netwire::{grow_front, PacketBuf};
use crate::stats::{Counter, DropReason, PuntReason};
use netwire::ipv4::Protocol;
use netwire::ipv6ext::{self, IPV4_IN_IPV6, IPV6_IN_IPV6};
use netwire::{checksum, ethernet, icmpv6, ipv4, ipv6, srh, storage};

/// Largest segment list a steering policy may carry.
pub const POLICY_SEGMENTS_MAX: usize = 16;
/// How many times a packet may re-enter the pipeline inside the node
/// (decapsulation, a next segment that is local again).
const DEPTH_MAX: u8 = 4;

/// What each local SID does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behavior {
    End,
    EndX,
    EndDt6,
    EndDx6,
    Storage,
}

impl Behavior {
    pub fn name(self) -> &'static str {
        match self {
            Behavior::End => "End",
            Behavior::EndX => "End.X",
            Behavior::EndDt6 => "End.DT6",
            Behavior::EndDx6 => "End.DX6",
            Behavior::Storage => "storage",
        }
    }
}

/// How a storage candidate decides to accept a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoragePolicy {
    /// Every candidate accepts (the first one always does).
    Always,
    /// Pass to the next candidate unless this is the last.
    NeverButLast,
    /// Accept when the local queue depth is below `threshold` (SR-c).
    SrC { threshold: u32 },
    /// Accept when this node holds the requested object.
    HoldsObject,
}

impl StoragePolicy {
    pub fn name(self) -> &'static str {
        match self {
            StoragePolicy::Always => "always",
            StoragePolicy::NeverButLast => "never-but-last",
            StoragePolicy::SrC { .. } => "sr-c",
            StoragePolicy::HoldsObject => "holds-object",
        }
    }
}

/// One local SID as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SidSpec {
    pub sid: Ipv6Addr,
    pub behavior: Behavior,
    pub psp: bool,
    pub usd: bool,
    /// End.X / End.DX6: (port, next hop).
    pub adjacency: Option<(u16, Ipv6Addr)>,
    /// storage: the acceptance policy.
    pub policy: Option<StoragePolicy>,
}

/// One steering policy as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicySpec {
    pub prefix: IpAddr,
    pub len: u8,
    /// Reduced encapsulation (H.Encaps.Red).
    pub reduced: bool,
    /// Travel order, first hop first.
    pub segments: Vec<Ipv6Addr>,
    /// Outer source; `None`: the egress port's first global IPv6 address.
    pub source: Option<Ipv6Addr>,
}

/// SRv6 configuration handed to [`L3::with_srv6`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Srv6Config {
    pub sids: Vec<SidSpec>,
    pub policies: Vec<PolicySpec>,
    /// Ports inside the SR domain; `None`: all.
    pub trusted_ports: Option<Vec<u16>>,
    /// Default outer source of H.Encaps.
    pub encap_source: Option<Ipv6Addr>,
}

/// A steering policy with its SRH built ahead of time.
#[derive(Debug, Clone)]
pub(crate) struct Policy {
    pub spec: PolicySpec,
    /// SRH template (next header patched per packet); `srh_len` 0: no SRH.
    srh: [u8; srh::HEADER_LEN + srh::SEGMENT_LEN * POLICY_SEGMENTS_MAX],
    srh_len: usize,
    /// The outer destination: the first segment.
    first: Ipv6Addr,
    /// Outer source, resolved at build time.
    source: Ipv6Addr,
}

/// The SRv6 tables (immutable after start, like the routes).
#[derive(Debug, Clone, Default)]
pub struct Srv6Tables {
    pub(crate) sids: Vec<SidSpec>,
    pub(crate) policies: Vec<Policy>,
    /// Bit `p` set: port `p` is inside the SR domain.
    trusted_mask: u64,
}

impl Srv6Tables {
    pub(crate) fn build(l3: &L3, cfg: &Srv6Config) -> Result<Srv6Tables, String> {
        let trusted_mask = match &cfg.trusted_ports {
            None => u64::MAX,
            Some(ports) => ports.iter().fold(0u64, |m, p| m | (1u64 << (u32::from(*p) & 63))),
        };
        let mut policies = Vec::new();
        for (i, spec) in cfg.policies.iter().enumerate() {
            if spec.segments.is_empty() || spec.segments.len() > POLICY_SEGMENTS_MAX {
                return Err(format!("steering[{i}]: 1..={POLICY_SEGMENTS_MAX} segments"));
            }
            let first = spec.segments[0];
            // SRH order: Segment List[0] is the last segment of the path.
            let mut rev: Vec<Ipv6Addr> = spec.segments.iter().rev().copied().collect();
            let mut srh_buf = [0u8; srh::HEADER_LEN + srh::SEGMENT_LEN * POLICY_SEGMENTS_MAX];
            let srh_len = if spec.reduced {
                // The first segment travels only in the destination address;
                // Segments Left still counts it (RFC 8986 §5.2).
                rev.pop();
                if rev.is_empty() {
                    0
                } else {
                    let sl = rev.len() as u8;
                    srh::emit_srh(&mut srh_buf, IPV6_IN_IPV6, sl, 0, &rev).map_err(|e| format!("steering[{i}]: {e}"))?
                }
            } else {
                let sl = (rev.len() - 1) as u8;
                srh::emit_srh(&mut srh_buf, IPV6_IN_IPV6, sl, 0, &rev).map_err(|e| format!("steering[{i}]: {e}"))?
            };
            let source = match spec.source.or(cfg.encap_source) {
                Some(s) => s,
                None => {
                    let port = match l3.route(IpAddr::V6(first)) {
                        Some(NextHop::Forward { port, .. }) | Some(NextHop::Local { port }) => Some(port),
                        _ => None,
                    };
                    port.and_then(|p| l3.ports()[usize::from(p)].primary_ipv6())
                        .or_else(|| l3.ports().iter().find_map(|p| p.primary_ipv6()))
                        .ok_or_else(|| format!("steering[{i}]: no IPv6 address to use as the outer source"))?
                }
            };
            policies.push(Policy { spec: spec.clone(), srh: srh_buf, srh_len, first, source });
        }
        Ok(Srv6Tables { sids: cfg.sids.clone(), policies, trusted_mask })
    }

    /// The configured SIDs.
    pub fn sids(&self) -> &[SidSpec] {
        &self.sids
    }

    /// The configured steering policies.
    pub fn policies(&self) -> impl Iterator<Item = &PolicySpec> {
        self.policies.iter().map(|p| &p.spec)
    }

    fn trusted(&self, port: u16) -> bool {
        self.trusted_mask & (1u64 << (u32::from(port) & 63)) != 0
    }
}

/// Per-SID counters (one block per worker, one writer).
#[derive(Debug, Default)]
pub struct SidCounters {
    pub packets: Counter,
    pub bytes: Counter,
    /// storage: requests accepted here / passed to the next candidate.
    pub accepted: Counter,
    pub passed: Counter,
    /// Packets this SID dropped or punted as errors, by reason.
    pub drops: crate::stats::DropCounters,
}

/// The local storage service as steering sees it: how loaded it is, what it
/// holds, and how it answers an accepted request. The built-in
/// [`Responder`] stands in until the object store exists.
pub trait LocalService: Send {
    /// Requests waiting in the local queue now.
    fn queue_depth(&self) -> u32;
    /// Whether this node holds `object_id`.
    fn holds(&self, object_id: u64) -> bool;
    /// Answers `request`, accepted by `accepted_by`: writes the reply's UDP
    /// payload into `reply` and returns its length.
    fn serve(&mut self, request: &storage::Repr, accepted_by: Ipv6Addr, reply: &mut [u8]) -> usize;
    /// The UDP port requests are sent to.
    fn udp_port(&self) -> u16;
}

/// The built-in responder: answers probes with the accepting node and its
/// (configured) queue depth, and every other op with `unsupported`.
#[derive(Debug, Clone)]
pub struct Responder {
    pub udp_port: u16,
    pub queue_depth: u32,
    /// Sorted object ids this node holds.
    pub objects: Vec<u64>,
}

impl LocalService for Responder {
    fn queue_depth(&self) -> u32 {
        self.queue_depth
    }
    fn holds(&self, object_id: u64) -> bool {
        self.objects.binary_search(&object_id).is_ok()
    }
    fn serve(&mut self, request: &storage::Repr, accepted_by: Ipv6Addr, reply: &mut [u8]) -> usize {
        let op = storage::Op(request.op);
        let (status, body) = if op == storage::Op::PROBE {
            (storage::status::OK, Some(storage::ProbeReply { accepted_by, queue_depth: self.queue_depth }))
        } else {
            (storage::status::UNSUPPORTED, None)
        };
        let body_len = body.map_or(0, |_| storage::ProbeReply::LEN);
        let hdr = storage::Repr {
            op: op.reply().0,
            status,
            flags: 0,
            request_id: request.request_id,
            object_id: request.object_id,
            offset: 0,
            length: body_len as u32,
        };
        let Ok(n) = hdr.emit(reply) else { return 0 };
        match body {
            Some(b) => n + b.emit(&mut reply[n..]).unwrap_or(0),
            None => n,
        }
    }
    fn udp_port(&self) -> u16 {
        self.udp_port
    }
}

/// What a worker carries through the pipeline besides the packet: its
/// per-SID counters, its handle on the local service, and what the last
/// punt needs explained.
pub struct WorkerState {
    pub sid_counters: Arc<Vec<SidCounters>>,
    pub service: Box<dyn LocalService>,
    /// The neighbour (port, address) a `neighbor_miss` punt waits for.
    pub miss: Option<(u16, IpAddr)>,
    /// Set when a storage SID passed the packet on (so a `neighbor_miss`
    /// punt can tell the control core to decide the same way again).
    pub storage_passed: bool,
    /// Forces storage decisions (`Some(false)`: pass), for the control
    /// core's dry runs and re-runs of a packet a worker already decided.
    pub storage_override: Option<bool>,
    /// Detail of the last punt (24 bits), carried to the control core in the
    /// mbuf tag: the MTU for `too_big`; [`param_problem_arg`] for
    /// `param_problem`.
    pub punt_arg: u32,
    /// The worker's NAT state (cache, activity records); `None` on the
    /// control core and when NAT is off.
    pub nat: Option<Box<crate::nat::fast::NatWorker>>,
    /// Set by the caller: the packet is already translated (an answer from
    /// the mapping core, or a re-run of a `neighbor_miss` punt after NAT).
    pub nat_skip: bool,
    /// Set by the pipeline: NAT translated this packet (or it was already).
    pub nat_done: bool,
}

impl WorkerState {
    pub fn new(l3: &L3, service: Box<dyn LocalService>) -> WorkerState {
        WorkerState {
            sid_counters: Arc::new((0..l3.srv6.sids.len()).map(|_| SidCounters::default()).collect()),
            service,
            miss: None,
            storage_passed: false,
            storage_override: None,
            punt_arg: 0,
            nat: None,
            nat_skip: false,
            nat_done: false,
        }
    }

    /// A state for dry runs and tests: private counters, an idle responder.
    pub fn scratch(l3: &L3) -> WorkerState {
        Self::new(l3, Box::new(Responder { udp_port: 0, queue_depth: 0, objects: Vec::new() }))
    }
}

/// Packs an ICMPv6 parameter-problem code and pointer (< 65536: within the
/// first packet bytes) into a 24-bit punt argument.
pub fn param_problem_arg(code: u8, pointer: u32) -> u32 {
    (u32::from(code) << 16) | pointer.min(0xffff)
}

/// Unpacks [`param_problem_arg`].
pub fn param_problem_parts(arg: u32) -> (u8, u32) {
    ((arg >> 16) as u8, arg & 0xffff)
}

/// Packs a punt reason and its 24-bit argument into an mbuf tag.
pub fn punt_tag(reason: PuntReason, arg: u32) -> u32 {
    (reason as u32) | (arg << 8)
}

/// Unpacks [`punt_tag`].
pub fn punt_tag_parts(tag: u32) -> (Option<PuntReason>, u32) {
    (PuntReason::from_u8(tag as u8), tag >> 8)
}

const ETH: usize = ethernet::HEADER_LEN;
const IP6: usize = ipv6::HEADER_LEN;

/// Where things are in an IPv6 frame addressed to a SID.
struct SidPacket {
    hop_limit: u8,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    ip_len: usize,
    chain: ipv6ext::ExtChain,
}

impl L3 {
    fn sid_drop(&self, ws: &WorkerState, sid: u16, r: DropReason) -> Verdict {
        ws.sid_counters[usize::from(sid)].drops.inc(r);
        Verdict::Drop(r)
    }

    fn sid_param_problem(&self, ws: &mut WorkerState, sid: u16, code: u8, pointer: usize) -> Verdict {
        ws.sid_counters[usize::from(sid)].drops.inc(DropReason::Srv6ParamProblem);
        ws.punt_arg = param_problem_arg(code, pointer as u32);
        Verdict::Punt(PuntReason::ParamProblem)
    }

    /// A packet addressed to local SID `sid`.
    pub(crate) fn srv6_sid<P: PacketBuf>(&self, pkt: &mut P, in_port: u16, sid: u16, ws: &mut WorkerState, depth: u8) -> Verdict {
        let spec = &self.srv6.sids[usize::from(sid)];
        let c = &ws.sid_counters[usize::from(sid)];
        c.packets.inc();
        c.bytes.add(pkt.data().len() as u64);
        if !self.srv6.trusted(in_port) {
            return self.sid_drop(ws, sid, DropReason::Srv6Untrusted);
        }
        if depth >= DEPTH_MAX {
            return self.sid_drop(ws, sid, DropReason::Srv6TooDeep);
        }
        let p = {
            let ip = &pkt.data()[ETH..];
            let h = ipv6::Packet::new_unchecked(ip);
            let ip_len = IP6 + usize::from(h.payload_len());
            let chain = match ipv6ext::walk(h.next_header(), &ip[IP6..ip_len]) {
                Ok(c) => c,
                Err(_) => return self.sid_drop(ws, sid, DropReason::Srv6BadSrh),
            };
            SidPacket { hop_limit: h.hop_limit(), src: h.src_addr(), dst: h.dst_addr(), ip_len, chain }
        };
        let Some(rt) = p.chain.routing else {
            return self.sid_upper_layer(pkt, in_port, sid, ws, depth, &p);
        };
        if rt.segments_left == 0 {
            return self.sid_upper_layer(pkt, in_port, sid, ws, depth, &p);
        }
        let srh_off = ETH + IP6 + rt.offset;
        if rt.routing_type != srh::ROUTING_TYPE {
            // RFC 8200 §4.4: unknown routing type with Segments Left > 0.
            return self.sid_param_problem(ws, sid, 0, IP6 + rt.offset + 2);
        }
        if matches!(spec.behavior, Behavior::EndDt6 | Behavior::EndDx6) {
            // Segments Left must be 0 here (RFC 8986 §4.4/§4.6 S02-S04);
            // these behaviours have no hop-limit step.
            return self.sid_param_problem(ws, sid, 0, IP6 + rt.offset + 3);
        }
        let (sl, check) = {
            let s = srh::Packet::new_unchecked(&pkt.data()[srh_off..srh_off + rt.len]);
            (s.segments_left(), s.check_srh())
        };
        if spec.behavior == Behavior::Storage {
            // Decide on a well-formed SRH only; an accepted request is local
            // delivery (no hop-limit step), a passed one continues as End.
            if let Err(e) = check {
                return self.sid_param_problem(ws, sid, 0, IP6 + rt.offset + e.pointer_offset() as usize);
            }
            let policy = spec.policy.unwrap_or(StoragePolicy::NeverButLast);
            let accept = match ws.storage_override {
                Some(decision) => decision,
                None => match policy {
                    StoragePolicy::Always => true,
                    StoragePolicy::NeverButLast => false,
                    StoragePolicy::SrC { threshold } => ws.service.queue_depth() < threshold,
                    StoragePolicy::HoldsObject => {
                        let obj = request_object_id(pkt.data(), &p);
                        obj.is_some_and(|o| ws.service.holds(o))
                    }
                },
            };
            if accept {
                return self.storage_accept(pkt, in_port, sid, ws, &p);
            }
            ws.sid_counters[usize::from(sid)].passed.inc();
            ws.storage_passed = true;
        }
        // End (RFC 8986 §4.1): hop limit (S05), then Last Entry / Segments
        // Left / TLV checks (S08-S10).
        if p.hop_limit <= 1 {
            ws.sid_counters[usize::from(sid)].drops.inc(DropReason::TtlExpired);
            return Verdict::Punt(PuntReason::TtlExpired);
        }
        if let Err(e) = check {
            return self.sid_param_problem(ws, sid, 0, IP6 + rt.offset + e.pointer_offset() as usize);
        }
        self.end(pkt, in_port, sid, ws, depth, &p, sl, srh_off, rt)
    }

    /// End / End.X with Segments Left > 0 (checks already passed).
    #[allow(clippy::too_many_arguments)]
    fn end<P: PacketBuf>(
        &self,
        pkt: &mut P,
        in_port: u16,
        sid: u16,
        ws: &mut WorkerState,
        depth: u8,
        p: &SidPacket,
        sl: u8,
        srh_off: usize,
        rt: ipv6ext::RoutingInfo,
    ) -> Verdict {
        let spec = &self.srv6.sids[usize::from(sid)];
        let new_sl = sl - 1;
        let new_da = srh::Packet::new_unchecked(&pkt.data()[srh_off..srh_off + rt.len]).segment(usize::from(new_sl));
        let pop = spec.psp && new_sl == 0;
        let new_len = p.ip_len - if pop { rt.len } else { 0 };
        // Plan: where does the packet go? (Nothing changed yet.)
        let target = match spec.adjacency {
            Some((port, nh)) if spec.behavior == Behavior::EndX => Some((port, IpAddr::V6(nh))),
            _ => match self.route(IpAddr::V6(new_da)) {
                Some(NextHop::Forward { port, via }) => Some((port, via.unwrap_or(IpAddr::V6(new_da)))),
                Some(_) => None, // local again: handled after the rewrite
                None => {
                    ws.sid_counters[usize::from(sid)].drops.inc(DropReason::NoRoute);
                    return Verdict::Punt(PuntReason::NoRoute);
                }
            },
        };
        let mut mac = None;
        if let Some((port, nh)) = target {
            let out = &self.ports()[usize::from(port)];
            if new_len > usize::from(out.mtu) {
                ws.punt_arg = u32::from(out.mtu);
                return Verdict::Punt(PuntReason::TooBig);
            }
            match self.neighbors().lookup_key(port, ip_key(nh)) {
                Some(m) => mac = Some((port, m)),
                None => {
                    ws.miss = Some((port, nh));
                    return Verdict::Punt(PuntReason::NeighborMiss);
                }
            }
        }
        // Commit: hop limit, Segments Left, destination.
        {
            let data = pkt.data_mut();
            let mut s = srh::Packet::new_unchecked(&mut data[srh_off..srh_off + rt.len]);
            s.set_segments_left(new_sl);
            let mut ip = ipv6::Packet::new_unchecked(&mut data[ETH..]);
            ip.set_hop_limit(p.hop_limit - 1);
            ip.set_dst_addr(new_da);
        }
        if pop {
            pop_srh(pkt, p.ip_len, rt);
        }
        match mac {
            Some((port, m)) => {
                let out_mac = self.ports()[usize::from(port)].mac;
                let data = pkt.data_mut();
                data[0..6].copy_from_slice(&m);
                data[6..12].copy_from_slice(&out_mac);
                Verdict::Forward(port)
            }
            None => self.process_at(pkt, in_port, ws, depth + 1),
        }
    }

    /// Upper-layer processing at a SID: Segments Left 0, or no SRH.
    fn sid_upper_layer<P: PacketBuf>(&self, pkt: &mut P, in_port: u16, sid: u16, ws: &mut WorkerState, depth: u8, p: &SidPacket) -> Verdict {
        let spec = &self.srv6.sids[usize::from(sid)];
        let upper = p.chain.upper_layer;
        let upper_ptr = IP6 + p.chain.upper_layer_offset;
        let decap = match spec.behavior {
            Behavior::EndDt6 | Behavior::EndDx6 => true,
            Behavior::End | Behavior::EndX => spec.usd,
            Behavior::Storage => false,
        };
        if spec.behavior == Behavior::Storage {
            return self.storage_accept(pkt, in_port, sid, ws, p);
        }
        if decap && upper == IPV6_IN_IPV6 && p.chain.has_upper_layer_header() {
            let hdrs = IP6 + p.chain.upper_layer_offset;
            let inner_len = p.ip_len - hdrs;
            if inner_len < IP6 {
                return self.sid_drop(ws, sid, DropReason::Ipv6Malformed);
            }
            if spec.behavior == Behavior::EndDx6 {
                let (port, nh) = spec.adjacency.expect("End.DX6 has an adjacency");
                let out = &self.ports()[usize::from(port)];
                if inner_len > usize::from(out.mtu) {
                    ws.punt_arg = u32::from(out.mtu);
                    return Verdict::Punt(PuntReason::TooBig);
                }
                let Some(m) = self.neighbors().lookup(port, IpAddr::V6(nh)) else {
                    ws.miss = Some((port, IpAddr::V6(nh)));
                    return Verdict::Punt(PuntReason::NeighborMiss);
                };
                decapsulate(pkt, hdrs, p.ip_len);
                let data = pkt.data_mut();
                data[0..6].copy_from_slice(&m);
                data[6..12].copy_from_slice(&out.mac);
                return Verdict::Forward(port);
            }
            // End.DT6 (and End/End.X with USD): look the inner packet up.
            decapsulate(pkt, hdrs, p.ip_len);
            return self.process_at(pkt, in_port, ws, depth + 1);
        }
        if upper == Protocol::ICMPV6 && p.chain.routing.is_none() && p.chain.ext_count == 0 {
            let ip_len = p.ip_len;
            let data = pkt.data_mut();
            let (eth_hdr, ip) = data.split_at_mut(ETH);
            match icmpv6::echo_request_to_reply(&mut ip[..ip_len]) {
                Ok(()) => {
                    swap_macs(eth_hdr, self.ports()[usize::from(in_port)].mac);
                    return Verdict::Forward(in_port);
                }
                Err(netwire::WireError::Unsupported) => {}
                Err(_) => return self.sid_drop(ws, sid, DropReason::LocalIcmpMalformed),
            }
        }
        // RFC 8986 §4.1.1: not an upper layer this SID processes.
        self.sid_param_problem(ws, sid, 4, upper_ptr)
    }

    /// Serves a request accepted at storage SID `sid` and answers it in
    /// place, from the SID, back out of the port it came in on.
    fn storage_accept<P: PacketBuf>(&self, pkt: &mut P, in_port: u16, sid: u16, ws: &mut WorkerState, p: &SidPacket) -> Verdict {
        let upper_off = ETH + IP6 + p.chain.upper_layer_offset;
        let end = ETH + p.ip_len;
        if p.chain.upper_layer != Protocol::UDP || !p.chain.has_upper_layer_header() || end < upper_off + 8 {
            return self.sid_param_problem(ws, sid, 4, IP6 + p.chain.upper_layer_offset);
        }
        // The final destination: Segment List[0] when there is an SRH.
        let final_dst = match p.chain.routing {
            Some(rt) if rt.routing_type == srh::ROUTING_TYPE => {
                let off = ETH + IP6 + rt.offset;
                srh::Packet::new_unchecked(&pkt.data()[off..off + rt.len]).segment_checked(0).unwrap_or(p.dst)
            }
            _ => p.dst,
        };
        let (client_port, request, udp_total) = {
            let data = pkt.data();
            let udp = &data[upper_off..end];
            let udp_len = usize::from(u16::from_be_bytes([udp[4], udp[5]]));
            let dport = u16::from_be_bytes([udp[2], udp[3]]);
            if udp_len < 8 || udp_len > udp.len() || dport != ws.service.udp_port() {
                return self.sid_drop(ws, sid, DropReason::StorageBadRequest);
            }
            let udp = &udp[..udp_len];
            let sum = checksum::add(
                checksum::pseudo_header_v6(p.src, final_dst, Protocol::UDP.0, udp_len as u32),
                checksum::sum(udp),
            );
            if u16::from_be_bytes([udp[6], udp[7]]) == 0 || sum != 0xffff {
                return self.sid_drop(ws, sid, DropReason::StorageBadChecksum);
            }
            let Ok(req) = storage::Packet::new_checked(&udp[8..]) else {
                return self.sid_drop(ws, sid, DropReason::StorageBadRequest);
            };
            (u16::from_be_bytes([udp[0], udp[1]]), storage::Repr::parse(&req), udp_len)
        };
        ws.sid_counters[usize::from(sid)].accepted.inc();
        if let Some(prefix) = self.objects_prefix() {
            // The object service takes it: it becomes a plain request to the
            // object's replica address here (extension headers removed, UDP
            // checksum over the new pseudo-header), served and answered from
            // that address, which tells the client who accepted.
            let replica = Ipv6Addr::from(u128::from(prefix) | u128::from(request.object_id));
            let data = pkt.data_mut();
            data.copy_within(upper_off..upper_off + udp_total, ETH + IP6);
            if !pkt.set_len(ETH + IP6 + udp_total) {
                return self.sid_drop(ws, sid, DropReason::StorageBadRequest);
            }
            let data = pkt.data_mut();
            {
                let mut ip = ipv6::Packet::new_unchecked(&mut data[ETH..]);
                ip.set_payload_len(udp_total as u16);
                ip.set_next_header(Protocol::UDP);
                ip.set_dst_addr(replica);
            }
            let udp = &mut data[ETH + IP6..ETH + IP6 + udp_total];
            udp[6..8].fill(0);
            let sum = checksum::add(
                checksum::pseudo_header_v6(p.src, replica, Protocol::UDP.0, udp_total as u32),
                checksum::sum(udp),
            );
            let c = !sum;
            udp[6..8].copy_from_slice(&(if c == 0 { 0xffff } else { c }).to_be_bytes());
            return Verdict::Punt(PuntReason::Storage);
        }
        // The reply: Ethernet back to the sender, IPv6 from the SID, UDP.
        let accepted_by = self.srv6.sids[usize::from(sid)].sid;
        let mut body = [0u8; 128];
        let body_len = ws.service.serve(&request, accepted_by, &mut body);
        let udp_len = 8 + body_len;
        let total = ETH + IP6 + udp_len;
        if !pkt.set_len(total.max(60)) {
            return self.sid_drop(ws, sid, DropReason::NoMbuf);
        }
        let our_mac = self.ports()[usize::from(in_port)].mac;
        let service_port = ws.service.udp_port();
        let data = pkt.data_mut();
        data[ETH + IP6 + udp_len..].fill(0);
        swap_macs(&mut data[..ETH], our_mac);
        let _ = ipv6::emit_header(&mut data[ETH..], accepted_by, p.src, Protocol::UDP, 64, udp_len);
        let udp = &mut data[ETH + IP6..ETH + IP6 + udp_len];
        udp[0..2].copy_from_slice(&service_port.to_be_bytes());
        udp[2..4].copy_from_slice(&client_port.to_be_bytes());
        udp[4..6].copy_from_slice(&(udp_len as u16).to_be_bytes());
        udp[6..8].fill(0);
        udp[8..].copy_from_slice(&body[..body_len]);
        let sum = checksum::add(
            checksum::pseudo_header_v6(accepted_by, p.src, Protocol::UDP.0, udp_len as u32),
            checksum::sum(udp),
        );
        let mut csum = !sum;
        if csum == 0 {
            csum = 0xffff;
        }
        udp[6..8].copy_from_slice(&csum.to_be_bytes());
        Verdict::Forward(in_port)
    }

    /// H.Encaps / H.Encaps.Red of an IPv4 or IPv6 packet on steering policy
    /// `policy`.
    pub(crate) fn h_encaps<P: PacketBuf>(&self, pkt: &mut P, in_port: u16, policy: u16, ws: &mut WorkerState) -> Verdict {
        let pol = &self.srv6.policies[usize::from(policy)];
        let _ = in_port;
        let (is_v4, inner_len, ttl, tclass, flow_hash, df) = {
            let data = pkt.data();
            let is_v4 = u16::from_be_bytes([data[12], data[13]]) == ethernet::EtherType::IPV4.0;
            if is_v4 {
                let ip = ipv4::Packet::new_unchecked(&data[ETH..]);
                let h = flow_label_hash(&ip.src_addr().octets(), &ip.dst_addr().octets(), ip.protocol().0);
                (true, usize::from(ip.total_len()), ip.ttl(), ip.dscp() << 2 | ip.ecn(), h, ip.dont_frag())
            } else {
                let ip = ipv6::Packet::new_unchecked(&data[ETH..]);
                let fl = ip.flow_label();
                let h = if fl != 0 { fl } else { flow_label_hash(&ip.src_addr().octets(), &ip.dst_addr().octets(), ip.next_header().0) };
                (false, IP6 + usize::from(ip.payload_len()), ip.hop_limit(), ip.traffic_class(), h, true)
            }
        };
        if ttl <= 1 {
            return Verdict::Punt(PuntReason::TtlExpired);
        }
        let overhead = IP6 + pol.srh_len;
        // Plan: the outer destination's route and neighbour.
        let (port, nh) = match self.route(IpAddr::V6(pol.first)) {
            Some(NextHop::Forward { port, via }) => (port, via.unwrap_or(IpAddr::V6(pol.first))),
            _ => return Verdict::Punt(PuntReason::NoRoute),
        };
        let out = &self.ports()[usize::from(port)];
        if inner_len + overhead > usize::from(out.mtu) {
            let mtu = usize::from(out.mtu).saturating_sub(overhead) as u32;
            ws.punt_arg = mtu;
            return if df { Verdict::Punt(PuntReason::TooBig) } else { Verdict::Drop(DropReason::FragmentationNeeded) };
        }
        let Some(mac) = self.neighbors().lookup_key(port, ip_key(nh)) else {
            ws.miss = Some((port, nh));
            return Verdict::Punt(PuntReason::NeighborMiss);
        };
        // Commit: forward the inner packet (TTL/hop limit), then push headers.
        {
            let data = pkt.data_mut();
            if is_v4 {
                ipv4::Packet::new_unchecked(&mut data[ETH..]).decrement_ttl_incremental();
            } else {
                ipv6::Packet::new_unchecked(&mut data[ETH..]).set_hop_limit(ttl - 1);
            }
        }
        // Drop link padding after the inner packet, then make room in front.
        if !pkt.set_len(ETH + inner_len) || !grow_front(pkt, overhead) {
            return Verdict::Drop(DropReason::NoMbuf);
        }
        let inner_proto = if is_v4 { IPV4_IN_IPV6 } else { IPV6_IN_IPV6 };
        let data = pkt.data_mut();
        // Ethernet header to the front (it was pushed back by `overhead`).
        data.copy_within(overhead..overhead + ETH, 0);
        data[0..6].copy_from_slice(&mac);
        data[6..12].copy_from_slice(&out.mac);
        data[12..14].copy_from_slice(&ethernet::EtherType::IPV6.0.to_be_bytes());
        let next = if pol.srh_len > 0 { Protocol::IPV6_ROUTING } else { inner_proto };
        let _ = ipv6::emit_header(&mut data[ETH..], pol.source, pol.first, next, 64, pol.srh_len + inner_len);
        {
            let mut ip = ipv6::Packet::new_unchecked(&mut data[ETH..]);
            ip.set_traffic_class(tclass);
            ip.set_flow_label(flow_hash & 0x000f_ffff);
        }
        if pol.srh_len > 0 {
            let s = &mut data[ETH + IP6..ETH + IP6 + pol.srh_len];
            s.copy_from_slice(&pol.srh[..pol.srh_len]);
            s[0] = inner_proto.0;
        }
        Verdict::Forward(port)
    }
}

/// The storage request's object id, read before a steering decision.
fn request_object_id(frame: &[u8], p: &SidPacket) -> Option<u64> {
    if p.chain.upper_layer != Protocol::UDP || !p.chain.has_upper_layer_header() {
        return None;
    }
    let off = ETH + IP6 + p.chain.upper_layer_offset + 8;
    let end = ETH + p.ip_len;
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
