//! The worker pipeline: a received frame goes through a chain of stages,
//! each a function over the immutable tables ([`Pipeline`]) and the
//! worker's own context ([`WorkerCtx`]), until one gives it a [`Verdict`].
//!
//! ```text
//!  frame ─► l2 input (input.rs): ours/broadcast/multicast? ARP ─────► punt arp
//!             │ IPv4 ─► ip4 input: header checks, martians, route ─┐
//!             │ IPv6 ─► ip6 input: header checks, martians, route ─┤
//!             ▼                                                   │
//!   by next hop:                                                  │
//!     NAT (nat44.rs, IPv4 with nat: on) ── miss ──────────────────┼─► hand off to the mapping core
//!       └ translated: route again                                 │
//!     Local ─► local delivery (local.rs): echo, ND, port unreach. │
//!     Objects ─► UDP to the service port ─────────────────────────┼─► hand off to the storage service
//!     Sid ─► SRv6 behaviour (srv6.rs) ── decapsulated / local next segment ─► recirculate
//!     Encap ─► H.Encaps (srv6.rs) ─┐                              │
//!     Forward ─► forward.rs ───────┴─► Fib::resolve_egress: MTU, neighbour ─► forward(port)
//!                                                                  (punt too_big / neighbor_miss)
//! ```
//!
//! Verdicts: forward out of a port, punt to the control core (ARP, ND,
//! ICMP errors, unresolved neighbours: [`PuntReason`]), hand off to another
//! core of the fast path ([`HandOff`]: the NAT mapping core, the storage
//! service), or drop with a named reason. A packet that a stage changed
//! into a new one (SRv6 decapsulation, a next segment that is local again)
//! is recirculated: the driver ([`Pipeline::resume`]) runs the chain again
//! on it, at most [`RECIRCULATE_MAX`] times, instead of a stage calling the
//! chain recursively.
//!
//! Input completes partial TCP/UDP checksums (what a kernel host with
//! checksum offload sends over a veth) before any stage looks further
//! (`partial.rs`), and drops super-frames (TSO/GSO, larger than the MTU)
//! as `superframe`.
//!
//! Per-packet results beyond the verdict land in [`WorkerCtx::meta`]: the
//! punt's detail (MTU, parameter-problem pointer), the neighbour a miss
//! waits for, and [`PacketFlags`] saying which one-time steps the packet has
//! taken (NAT translated it; a storage SID passed it on).
//!
//! # Re-run rule
//! A packet punted for `neighbor_miss` is in a state from which running it
//! again with the flags it was punted with ([`Pipeline::rerun`]) gives the
//! same result as if the neighbour had been known. Stages resolve their
//! egress *before* they rewrite anything ([`crate::fib::Fib::resolve_egress`]
//! changes nothing), so such a packet is usually exactly as received; after
//! a committed step (NAT translation, SRv6 decapsulation or a local next
//! segment) it is the committed state, and the flags stop NAT from
//! translating twice and a storage SID from accepting what it passed.
//!
//! Everything here is pure: byte slices through [`PacketBuf`], the
//! read-only tables, the neighbour table (read only), the worker's context.

mod ctx;
mod forward;
mod input;
mod local;
pub mod nat44;
mod partial;
pub mod srv6;
mod storage;

use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;

use netwire::ipv6opt::ExtLimits;
use netwire::{PacketBuf, VecBuf};

pub use self::ctx::{PacketFlags, PacketMeta, Stage, WorkerCtx};
use crate::fib::neigh::NeighborTable;
use crate::fib::{EgressMiss, FeatureRoutes, Fib, FibError, NextHop, PortInfo, RouteSpec};
use crate::nat::fast::NatPlan;
use crate::nat::msg::RequestKind;
use crate::srv6::{Srv6Config, Srv6Tables};
use crate::stats::{DropReason, PuntReason};

/// How many times a packet may be recirculated inside the node
/// (decapsulation, a next segment that is local again).
pub const RECIRCULATE_MAX: u8 = 4;

/// What happens to a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Send it out of this port (the frame has been rewritten).
    Forward(u16),
    /// Hand it to the control core with a reason (detail in
    /// [`PacketMeta::punt_arg`]).
    Punt(PuntReason),
    /// Hand it to another part of the fast path.
    HandOff(HandOff),
    /// Free it and count the reason.
    Drop(DropReason),
}

/// Fast-path hand-offs: the packet is held by another stage owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandOff {
    /// No NAT cache entry: to the mapping core (held; it answers with the
    /// translated packet and the cache entries).
    NatMapper(RequestKind),
    /// A request to one of the node's replica addresses: to the storage
    /// service of the worker that owns the object.
    Storage,
    /// A NAT'd IPv4 fragment whose first fragment has not been translated
    /// yet: the worker keeps it in this slot of its fragment table until
    /// the table releases it (run it again) or expires it (drop it).
    NatFragment(u16),
}

/// The result of one pass through the stage chain.
pub(crate) enum Step {
    Done(Verdict),
    /// Run the chain again on the (changed) packet.
    Recirculate,
}

impl From<Verdict> for Step {
    #[inline]
    fn from(v: Verdict) -> Step {
        Step::Done(v)
    }
}

/// The storage service's place in the tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoragePlan {
    /// The node's object prefix (a /64).
    pub object_prefix: Ipv6Addr,
    /// The service's UDP port.
    pub udp_port: u16,
}

/// The immutable tables every worker's pipeline reads.
pub struct Pipeline {
    pub(crate) fib: Fib,
    pub(crate) srv6: Srv6Tables,
    pub(crate) nat: Option<NatPlan>,
    pub(crate) storage: Option<StoragePlan>,
    /// Limits of the input checks (`pipeline.ipv6_extension_headers`).
    pub(crate) ext_limits: ExtLimits,
}

impl Pipeline {
    /// Plain routing: ports, static routes, neighbours.
    pub fn new(ports: Vec<PortInfo>, routes: &[RouteSpec], neigh: Arc<NeighborTable>) -> Result<Pipeline, FibError> {
        Self::build(ports, routes, &Srv6Config::default(), None, None, neigh)
    }

    /// As [`Pipeline::new`], with SRv6 local SIDs and steering policies.
    pub fn with_srv6(
        ports: Vec<PortInfo>,
        routes: &[RouteSpec],
        srv6: &Srv6Config,
        neigh: Arc<NeighborTable>,
    ) -> Result<Pipeline, FibError> {
        Self::build(ports, routes, srv6, None, None, neigh)
    }

    /// As [`Pipeline::with_srv6`], with NAT44 (port roles and pool).
    pub fn with_nat(
        ports: Vec<PortInfo>,
        routes: &[RouteSpec],
        srv6: &Srv6Config,
        nat: Option<NatPlan>,
        neigh: Arc<NeighborTable>,
    ) -> Result<Pipeline, FibError> {
        Self::build(ports, routes, srv6, nat, None, neigh)
    }

    /// Everything: routing, SRv6, NAT44 and the storage service.
    pub fn build(
        ports: Vec<PortInfo>,
        routes: &[RouteSpec],
        srv6: &Srv6Config,
        nat: Option<NatPlan>,
        storage: Option<StoragePlan>,
        neigh: Arc<NeighborTable>,
    ) -> Result<Pipeline, FibError> {
        if let Some(plan) = &nat {
            if plan.roles.len() != ports.len() {
                return Err(FibError::Nat(format!("{} port roles for {} ports", plan.roles.len(), ports.len())));
            }
        }
        let features = FeatureRoutes {
            policies: srv6.policies.iter().map(|p| (p.prefix, p.len)).collect(),
            sids: srv6.sids.iter().map(|s| s.sid).collect(),
            nat_pool: nat.as_ref().map(|n| n.pool.clone()).unwrap_or_default(),
            objects: storage.map(|s| s.object_prefix),
        };
        let fib = Fib::build(ports, routes, &features, neigh)?;
        let srv6 = Srv6Tables::build(&fib, srv6).map_err(FibError::Srv6)?;
        Ok(Pipeline { fib, srv6, nat, storage, ext_limits: ExtLimits::default() })
    }

    /// The same pipeline with these IPv6 extension header limits (RFC 8883).
    pub fn with_ext_limits(mut self, limits: ExtLimits) -> Pipeline {
        self.ext_limits = limits;
        self
    }

    /// The IPv6 extension header limits in force.
    pub fn ext_limits(&self) -> &ExtLimits {
        &self.ext_limits
    }

    /// A new pipeline with these static routes and SRv6 tables and
    /// everything else as in this one (ports, NAT plan, storage plan, the
    /// shared neighbour table): a run-time change, built on the control core
    /// and published to the workers.
    pub fn rebuild(&self, routes: &[RouteSpec], srv6: &Srv6Config) -> Result<Pipeline, FibError> {
        let ports = self.fib.ports().to_vec();
        Self::build(ports, routes, srv6, self.nat.clone(), self.storage, self.fib.neighbors().clone())
            .map(|p| p.with_ext_limits(self.ext_limits))
    }

    /// The forwarding base.
    pub fn fib(&self) -> &Fib {
        &self.fib
    }

    pub fn ports(&self) -> &[PortInfo] {
        self.fib.ports()
    }

    pub fn neighbors(&self) -> &Arc<NeighborTable> {
        self.fib.neighbors()
    }

    /// Route lookup (see [`Fib::route`]).
    #[inline]
    pub fn route(&self, dst: IpAddr) -> Option<NextHop> {
        self.fib.route(dst)
    }

    /// See [`Fib::next_hop`].
    pub fn next_hop(&self, dst: IpAddr) -> Option<(u16, IpAddr)> {
        self.fib.next_hop(dst)
    }

    /// The SRv6 tables (local SIDs, steering policies).
    pub fn srv6(&self) -> &Srv6Tables {
        &self.srv6
    }

    /// The NAT layout, when NAT is configured.
    pub fn nat(&self) -> Option<&NatPlan> {
        self.nat.as_ref()
    }

    /// The storage service's prefix and port, when it is configured.
    pub fn storage(&self) -> Option<StoragePlan> {
        self.storage
    }

    /// True if `a` is a NAT pool address.
    pub fn is_nat_pool(&self, a: std::net::Ipv4Addr) -> bool {
        self.nat.is_some() && self.route(IpAddr::V4(a)) == Some(NextHop::NatPool)
    }

    /// Gives the frame in `pkt`, received on `in_port`, its verdict.
    /// Forwarded and answered frames are rewritten in place (SRv6 may grow or
    /// shrink them); frames punted for `neighbor_miss` are as the re-run
    /// rule says (module doc).
    #[inline]
    pub fn process<P: PacketBuf>(&self, pkt: &mut P, in_port: u16, ctx: &mut WorkerCtx) -> Verdict {
        self.resume(pkt, in_port, PacketFlags::NONE, ctx)
    }

    /// As [`Pipeline::process`], for a packet that has already taken the
    /// one-time steps in `flags` (a packet the NAT mapping core translated,
    /// a held packet run again).
    #[inline]
    pub fn resume<P: PacketBuf>(&self, pkt: &mut P, in_port: u16, flags: PacketFlags, ctx: &mut WorkerCtx) -> Verdict {
        // Only what every packet needs reset (`miss` is set with its punt).
        ctx.meta.input = flags;
        ctx.meta.flags = flags;
        ctx.meta.punt_arg = 0;
        ctx.meta.recirculated = 0;
        ctx.meta.path = 0;
        let verdict = loop {
            match self.l2_input(pkt, in_port, ctx) {
                Step::Done(v) => break v,
                Step::Recirculate => {
                    ctx.meta.recirculated += 1;
                    ctx.meta.enter(Stage::Recirculate);
                    // Stages bound their own recirculation (counted per SID);
                    // this is the backstop that makes a loop impossible.
                    if ctx.meta.recirculated > RECIRCULATE_MAX {
                        break Verdict::Drop(DropReason::Srv6TooDeep);
                    }
                }
            }
        };
        if matches!(verdict, Verdict::Punt(PuntReason::NeighborMiss)) {
            // The re-run needs the flags: they travel as the punt's argument.
            ctx.meta.punt_arg = ctx.meta.flags.bits();
        }
        verdict
    }

    /// Runs a frame punted for `neighbor_miss` (with punt argument `arg`)
    /// through the pipeline again, deciding as the worker did.
    pub fn rerun<P: PacketBuf>(&self, pkt: &mut P, in_port: u16, arg: u32, ctx: &mut WorkerCtx) -> Verdict {
        self.resume(pkt, in_port, PacketFlags::from_bits(arg), ctx)
    }

    /// Which neighbour (port, address) a frame that was punted for
    /// `neighbor_miss` (with punt argument `arg`) waits for: a dry run of the
    /// pipeline on a copy, deciding as the worker did.
    pub fn missing_neighbor(&self, frame: &[u8], in_port: u16, arg: u32, ctx: &mut WorkerCtx) -> Option<(u16, IpAddr)> {
        let mut copy = VecBuf::from_frame(frame, in_port);
        match self.rerun(&mut copy, in_port, arg, ctx) {
            Verdict::Punt(PuntReason::NeighborMiss) => ctx.meta.miss,
            _ => None,
        }
    }

    /// Test and tool helper: runs [`Pipeline::process`] on a frame held in
    /// a vector (with mbuf-like headroom) and writes the result back.
    pub fn process_frame(&self, frame: &mut Vec<u8>, in_port: u16, ctx: &mut WorkerCtx) -> Verdict {
        let mut buf = VecBuf::from_frame(frame, in_port);
        let v = self.process(&mut buf, in_port, ctx);
        frame.clear();
        frame.extend_from_slice(buf.data());
        v
    }
}

/// The verdict of an egress out of `port` towards `next_hop` that could not
/// be resolved, with its detail in `meta` (the MTU to report, the neighbour
/// to resolve).
#[cold]
pub(crate) fn egress_miss(miss: EgressMiss, port: u16, next_hop: IpAddr, meta: &mut PacketMeta) -> Verdict {
    match miss {
        EgressMiss::TooBig { mtu } => meta.punt_arg = u32::from(mtu),
        EgressMiss::Neighbor => meta.miss = Some((port, next_hop)),
        EgressMiss::FragmentationNeeded => {}
    }
    match miss.reason() {
        Ok(p) => Verdict::Punt(p),
        Err(d) => Verdict::Drop(d),
    }
}

/// A parameter problem (ICMP type 12 / ICMPv6 type 4) about the packet,
/// counted as `reason` by the control core that sends it; a pointer beyond
/// what an error can carry makes it a plain drop.
#[cold]
pub(crate) fn param_problem(meta: &mut PacketMeta, reason: DropReason, code: u8, pointer: usize) -> Verdict {
    match u32::try_from(pointer) {
        Ok(p) if p <= crate::stats::PARAM_PROBLEM_POINTER_MAX => {
            meta.punt_arg = crate::stats::param_problem_arg_for(reason, code, p);
            Verdict::Punt(PuntReason::ParamProblem)
        }
        _ => Verdict::Drop(reason),
    }
}

/// Answers a frame back to its sender: destination MAC := source MAC,
/// source MAC := ours.
#[inline]
pub(crate) fn swap_macs(eth_hdr: &mut [u8], our_mac: [u8; 6]) {
    eth_hdr.copy_within(6..12, 0);
    eth_hdr[6..12].copy_from_slice(&our_mac);
}
