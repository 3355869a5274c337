//! The per-worker context the stages run over, and what the pipeline says
//! about the packet it just processed besides its verdict.

use std::net::IpAddr;
use std::sync::Arc;

use super::Pipeline;
use crate::nat::fast::NatWorker;
use crate::srv6::{SidCounters, SID_SLOTS};
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
    /// The stages the packet went through, newest in the low 4 bits (see
    /// [`Stage`]; the 16 most recent are kept). For traces.
    pub path: u64,
}

/// A stage of the pipeline, as recorded in [`PacketMeta::path`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Stage {
    L2Input = 1,
    Ip4Input = 2,
    Ip6Input = 3,
    Nat44 = 4,
    Local = 5,
    Forward = 6,
    Sid = 7,
    Encap = 8,
    StorageAccept = 9,
    StorageHandOff = 10,
    Recirculate = 11,
}

impl Stage {
    const ALL: [Stage; 11] = [
        Stage::L2Input,
        Stage::Ip4Input,
        Stage::Ip6Input,
        Stage::Nat44,
        Stage::Local,
        Stage::Forward,
        Stage::Sid,
        Stage::Encap,
        Stage::StorageAccept,
        Stage::StorageHandOff,
        Stage::Recirculate,
    ];

    /// The stage's name in traces.
    pub fn name(self) -> &'static str {
        match self {
            Stage::L2Input => "l2-input",
            Stage::Ip4Input => "ip4-input",
            Stage::Ip6Input => "ip6-input",
            Stage::Nat44 => "nat44",
            Stage::Local => "local",
            Stage::Forward => "forward",
            Stage::Sid => "srv6-sid",
            Stage::Encap => "srv6-encap",
            Stage::StorageAccept => "storage-accept",
            Stage::StorageHandOff => "storage-handoff",
            Stage::Recirculate => "recirculate",
        }
    }

    /// The stages of a [`PacketMeta::path`], oldest first.
    pub fn path(path: u64) -> impl Iterator<Item = Stage> {
        let n = (0..16).rev().find(|i| path >> (4 * i) != 0).map_or(0, |i| i + 1);
        (0..n).rev().filter_map(move |i| {
            let code = ((path >> (4 * i)) & 0xf) as u8;
            Stage::ALL.iter().copied().find(|s| *s as u8 == code)
        })
    }
}

impl PacketMeta {
    /// Records that the packet entered `stage`.
    #[inline(always)]
    pub fn enter(&mut self, stage: Stage) {
        self.path = (self.path << 4) | stage as u64;
    }
}

/// What a worker carries through the pipeline besides the packet: its
/// per-SID and input counters, its view of the local storage service, its NAT cache,
/// and the last packet's [`PacketMeta`]. Owned by one worker.
pub struct WorkerCtx {
    /// One block per SID counter slot ([`SID_SLOTS`]; a SID counts in
    /// `Srv6Tables::slot`).
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
    pub fn new(_pipeline: &Pipeline, service: Box<dyn LocalService>) -> WorkerCtx {
        WorkerCtx {
            sid_counters: Arc::new((0..SID_SLOTS).map(|_| SidCounters::default()).collect()),
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
