//! SRv6 domain types and tables: local SIDs with their behaviours, steering
//! policies with their SRH built ahead of time, the SR domain's trusted
//! ports. The behaviours that use them are the pipeline's SRv6 stage
//! ([`crate::pipeline::srv6`]); the config section `srv6:` builds
//! [`Srv6Config`].
//!
//! # Behaviours (RFC 8986 §4)
//! * **End**: with Segments Left > 0: hop-limit check (≤ 1: ICMPv6 time
//!   exceeded), SRH checks (Last Entry, Segments Left, TLVs: ICMPv6 parameter
//!   problem code 0 with a pointer), decrement hop limit and Segments Left,
//!   destination := Segment List[SL], FIB lookup and forward. Flavours: PSP
//!   removes the SRH when SL becomes 0; USD decapsulates an IPv6-in-IPv6
//!   payload when SL is 0.
//! * **End.X**: End, but forwarded to a configured (port, next hop).
//! * **End.DT6**: SL must be 0; the payload must be IPv6; the outer header
//!   and all its extension headers are removed and the inner packet is
//!   looked up and forwarded (or delivered, if it is for the node).
//! * **End.DX6**: as End.DT6, but the inner packet goes to a configured
//!   (port, next hop) without lookup.
//! * **storage**: the storage-steering behaviour (capability S): at each
//!   candidate the configured [`StoragePolicy`] decides to accept (serve
//!   locally) or to pass (End to the next candidate); the last candidate
//!   (SL = 0) always accepts.
//! * **H.Encaps / H.Encaps.Red** (RFC 8986 §5.1, §5.2) for packets to a
//!   steered prefix, with the SRH prebuilt here from the policy.

use std::net::{IpAddr, Ipv6Addr};

use crate::fib::{Fib, NextHop};
use crate::stats::Counter;
use netwire::ipv6ext::IPV6_IN_IPV6;
use netwire::srh;

/// Counter slots per worker: one block of [`SidCounters`] per SID the
/// node may have at once (the config's `srv6.local_sids` limit). A SID keeps
/// its slot across table rebuilds (run-time changes), so its counters do.
pub const SID_SLOTS: usize = 1024;

/// Largest segment list a steering policy may carry.
pub const POLICY_SEGMENTS_MAX: usize = 16;

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

/// SRv6 configuration handed to [`crate::pipeline::Pipeline::build`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Srv6Config {
    pub sids: Vec<SidSpec>,
    pub policies: Vec<PolicySpec>,
    /// Ports inside the SR domain; `None`: all.
    pub trusted_ports: Option<Vec<u16>>,
    /// Default outer source of H.Encaps.
    pub encap_source: Option<Ipv6Addr>,
    /// The counter slot of each SID (< [`SID_SLOTS`], unique); empty: SID
    /// `i` counts in slot `i`. Set by the control plane so that a SID keeps
    /// its counters when the tables are rebuilt at run time.
    pub counter_slots: Vec<u16>,
}

/// A steering policy with its SRH built ahead of time.
#[derive(Debug, Clone)]
pub struct Policy {
    pub spec: PolicySpec,
    /// SRH template (next header patched per packet); `srh_len` 0: no SRH.
    pub(crate) srh: [u8; srh::HEADER_LEN + srh::SEGMENT_LEN * POLICY_SEGMENTS_MAX],
    pub(crate) srh_len: usize,
    /// The outer destination: the first segment.
    pub(crate) first: Ipv6Addr,
    /// Outer source, resolved at build time.
    pub(crate) source: Ipv6Addr,
}

/// The SRv6 tables (immutable after start, like the routes).
#[derive(Debug, Clone, Default)]
pub struct Srv6Tables {
    pub(crate) sids: Vec<SidSpec>,
    pub(crate) policies: Vec<Policy>,
    /// Bit `p` set: port `p` is inside the SR domain.
    trusted_mask: u64,
    /// Counter slot of each SID.
    slots: Vec<u16>,
}

impl Srv6Tables {
    pub(crate) fn build(fib: &Fib, cfg: &Srv6Config) -> Result<Srv6Tables, String> {
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
                    let port = match fib.route(IpAddr::V6(first)) {
                        Some(NextHop::Forward { port, .. }) | Some(NextHop::Local { port }) => Some(port),
                        _ => None,
                    };
                    port.and_then(|p| fib.ports()[usize::from(p)].primary_ipv6())
                        .or_else(|| fib.ports().iter().find_map(|p| p.primary_ipv6()))
                        .ok_or_else(|| format!("steering[{i}]: no IPv6 address to use as the outer source"))?
                }
            };
            policies.push(Policy { spec: spec.clone(), srh: srh_buf, srh_len, first, source });
        }
        let slots = counter_slots(cfg)?;
        Ok(Srv6Tables { sids: cfg.sids.clone(), policies, trusted_mask, slots })
    }

    /// The configured SIDs.
    pub fn sids(&self) -> &[SidSpec] {
        &self.sids
    }

    /// The configured steering policies.
    pub fn policies(&self) -> impl Iterator<Item = &PolicySpec> {
        self.policies.iter().map(|p| &p.spec)
    }

    /// Steering policy `i` with its prebuilt SRH.
    #[inline]
    pub(crate) fn policy(&self, i: u16) -> &Policy {
        &self.policies[usize::from(i)]
    }

    /// Local SID `i`.
    #[inline]
    pub fn sid(&self, i: u16) -> &SidSpec {
        &self.sids[usize::from(i)]
    }

    /// The counter slot of local SID `i` (see [`SID_SLOTS`]).
    #[inline]
    pub fn slot(&self, i: u16) -> usize {
        usize::from(self.slots[usize::from(i)])
    }

    /// True if `port` is inside the SR domain.
    #[inline]
    pub fn trusted(&self, port: u16) -> bool {
        self.trusted_mask & (1u64 << (u32::from(port) & 63)) != 0
    }
}

/// The counter slots of `cfg`'s SIDs: as given (checked), or `0..n`.
fn counter_slots(cfg: &Srv6Config) -> Result<Vec<u16>, String> {
    if cfg.sids.len() > SID_SLOTS {
        return Err(format!("{} local SIDs, at most {SID_SLOTS}", cfg.sids.len()));
    }
    if cfg.counter_slots.is_empty() {
        return Ok((0..cfg.sids.len() as u16).collect());
    }
    if cfg.counter_slots.len() != cfg.sids.len() {
        return Err(format!("{} counter slots for {} SIDs", cfg.counter_slots.len(), cfg.sids.len()));
    }
    let mut seen = vec![false; SID_SLOTS];
    for &s in &cfg.counter_slots {
        match seen.get_mut(usize::from(s)) {
            Some(used) if !*used => *used = true,
            _ => return Err(format!("counter slot {s} is taken or out of range")),
        }
    }
    Ok(cfg.counter_slots.clone())
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

impl SidCounters {
    /// Zeroes the block (a SID counter slot given to a new SID, once no
    /// worker counts in it any more).
    pub fn reset(&self) {
        for c in [&self.packets, &self.bytes, &self.accepted, &self.passed] {
            c.reset();
        }
        self.drops.reset();
    }
}
