//! The per-worker context the stages run over, and what the pipeline says
//! about the packet it just processed besides its verdict.

use std::net::IpAddr;
use std::sync::Arc;

use super::Pipeline;
use crate::nat::fast::NatWorker;
use crate::srv6::SidCounters;
use crate::stats::InputCounters;
use crate::storage::{LocalService, Responder};

/// One-time steps a packet has taken, carried with it when it is held and
/// run again (in the punt argument of a `neighbor_miss`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PacketFlags(u8);

impl PacketFlags {
    pub const NONE: PacketFlags = PacketFlags(0);
    /// A storage SID passed the packet on: a re-run passes it again,
    /// whatever the queue depth is by then.
    pub const STORAGE_PASSED: PacketFlags = PacketFlags(1);
    /// NAT translated the packet (or the mapping core did): never again.
    pub const NAT_DONE: PacketFlags = PacketFlags(2);

    #[inline]
    pub fn contains(self, other: PacketFlags) -> bool {
        self.0 & other.0 == other.0
    }

    #[inline]
    pub fn insert(&mut self, other: PacketFlags) {
        self.0 |= other.0;
    }

    /// The flags as a punt argument.
    pub fn bits(self) -> u32 {
        u32::from(self.0)
    }

    /// Flags from a punt argument (unknown bits ignored).
    pub fn from_bits(arg: u32) -> PacketFlags {
        PacketFlags((arg & 0x3) as u8)
    }
}

/// What the pipeline learned about the last packet besides its verdict.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PacketMeta {
    /// Detail of a punt (24 bits), carried to the control core in the mbuf
    /// tag: the MTU for `too_big`, [`crate::stats::param_problem_arg`] for
    /// `param_problem`, the [`PacketFlags`] for `neighbor_miss`.
    pub punt_arg: u32,
    /// The neighbour (port, address) a `neighbor_miss` punt waits for
    /// (meaningful only after that verdict).
    pub miss: Option<(u16, IpAddr)>,
    /// One-time steps the packet had taken before this run (a re-run's
    /// punt argument, an answer of the NAT mapping core).
    pub input: PacketFlags,
    /// One-time steps taken: `input` and those of this run.
    pub flags: PacketFlags,
    /// Times the packet was recirculated.
    pub recirculated: u8,
}

/// What a worker carries through the pipeline besides the packet: its
/// per-SID and input counters, its view of the local storage service, its NAT cache,
/// and the last packet's [`PacketMeta`]. Owned by one worker.
pub struct WorkerCtx {
    pub sid_counters: Arc<Vec<SidCounters>>,
    /// What input did besides verdicts (completed checksums).
    pub input_counters: Arc<InputCounters>,
    pub service: Box<dyn LocalService>,
    /// The worker's NAT state (cache, activity records); `None` on the
    /// control core and when NAT is off.
    pub nat: Option<Box<NatWorker>>,
    pub meta: PacketMeta,
}

impl WorkerCtx {
    pub fn new(pipeline: &Pipeline, service: Box<dyn LocalService>) -> WorkerCtx {
        WorkerCtx {
            sid_counters: Arc::new((0..pipeline.srv6.sids().len()).map(|_| SidCounters::default()).collect()),
            input_counters: Arc::default(),
            service,
            nat: None,
            meta: PacketMeta::default(),
        }
    }

    /// A context for dry runs and tests: private counters, an idle responder.
    pub fn scratch(pipeline: &Pipeline) -> WorkerCtx {
        Self::new(pipeline, Box::new(Responder { udp_port: 0, queue_depth: 0, objects: Vec::new() }))
    }
}
