//! [`StorageClient`]: the object operations over the storage protocol, with or without the
//! metadata service. See the crate doc for the guarantees; this module is the mechanics.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::{Ipv6Addr, SocketAddr};

use objmeta::client::{ClientError, MetaClient};
use objmeta::model::{CreateRequest, ObjectMeta, ObjectRef, ObjectState, Replica};
use thiserror::Error;

use crate::transport::{Call, Flow, Options, Outcome, Transport};
use crate::wire::{self, status, Request, Stat};

/// UDP port of the storage service unless configured otherwise.
pub const DEFAULT_PORT: u16 = 7878;

/// Where a replica's requests go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// How errors name it: the node id (metadata mode) or the address.
    pub label: String,
    pub dst: SocketAddr,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.label == self.dst.to_string() {
            write!(f, "{}", self.dst)
        } else {
            write!(f, "{} ({})", self.label, self.dst)
        }
    }
}

/// One node addressed directly (the `*-raw` operations).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// The node's object prefix (a /64) and the service's port: object X is at prefix | X.
    Prefix(Ipv6Addr, u16),
    /// Every request to this one socket address, whatever the object (tests, debugging).
    Fixed(SocketAddr),
}

impl Endpoint {
    /// The target of `object` on this node.
    pub fn target(&self, object: u64) -> Target {
        let dst = match *self {
            Endpoint::Prefix(p, port) => {
                let a = Ipv6Addr::from((u128::from(p) >> 64 << 64) | u128::from(object));
                SocketAddr::new(a.into(), port)
            }
            Endpoint::Fixed(a) => a,
        };
        Target { label: dst.to_string(), dst }
    }
}

/// A replica that failed a read, to report for repair.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadReplica {
    pub target: Target,
    /// What went wrong (`checksum at offset 4096`, `no reply after 12 tries`, ...).
    pub reason: String,
    /// Whether the replica returned corrupt data (status checksum) rather than being
    /// unreachable or missing the object.
    pub checksum: bool,
}

impl fmt::Display for BadReplica {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "replica {}: {}", self.target, self.reason)
    }
}

/// A failed operation.
#[derive(Debug, Error)]
pub enum Error {
    #[error("metadata service: {0}")]
    Meta(#[from] ClientError),
    #[error("local socket: {0}")]
    Io(#[from] io::Error),
    /// A replica that had to take part failed (a put or a delete is not done).
    #[error("replica {target}: {reason}")]
    Replica { target: Target, reason: String },
    /// Every replica was tried for a read.
    #[error("{what}: no replica could serve it: {}", list(.tried))]
    AllReplicasFailed { what: String, tried: Vec<BadReplica> },
    #[error("{0}: not found")]
    NotFound(String),
    #[error("{0}")]
    Refused(String),
}

fn list(b: &[BadReplica]) -> String {
    b.iter().map(|b| b.to_string()).collect::<Vec<_>>().join("; ")
}

/// How a replica's reply status reads in a [`BadReplica`] reason.
fn status_reason(status: u16) -> String {
    format!("status {status} ({})", status::name(status))
}

fn outcome_reason(o: &Outcome) -> String {
    match o {
        Outcome::Reply { status, .. } => status_reason(*status),
        Outcome::NoReply { tries } => format!("no reply after {tries} tries (down or unreachable?)"),
    }
}

/// Told how far a long transfer got.
pub trait Progress {
    /// The transfer has `total` bytes.
    fn start(&self, _total: u64) {}
    /// `bytes` more are done (acknowledged by every replica, or read).
    fn advance(&self, _bytes: u64) {}
    fn finish(&self) {}
}

/// No progress reporting.
impl Progress for () {}

/// Configuration of a [`StorageClient`].
#[derive(Clone, Debug)]
pub struct Config {
    /// UDP port of the storage service on replica addresses.
    pub port: u16,
    /// Per node id, a socket address that replaces `replica address : port` (several fake
    /// nodes on one loopback address in tests; a NAT'd node).
    pub node_addrs: HashMap<String, SocketAddr>,
    pub transport: Options,
}

impl Default for Config {
    fn default() -> Self {
        Config { port: DEFAULT_PORT, node_addrs: HashMap::new(), transport: Options::default() }
    }
}

/// The result of [`StorageClient::get`].
#[derive(Clone, Debug)]
pub struct GetResult {
    pub meta: ObjectMeta,
    pub data: Vec<u8>,
    /// Replicas that failed on the way (to report for repair); the data came from others.
    pub bad_replicas: Vec<BadReplica>,
}

/// The result of [`StorageClient::read_replicas`].
#[derive(Clone, Debug)]
pub struct ReadOutcome {
    pub data: Vec<u8>,
    pub size: u64,
    pub version: u64,
    /// The targets that failed before the data was whole.
    pub bad_replicas: Vec<BadReplica>,
}

/// What [`StorageClient::stat`] found: the metadata and each replica's own view.
#[derive(Clone, Debug)]
pub struct StatResult {
    pub meta: ObjectMeta,
    pub replicas: Vec<(Target, Result<Stat, String>)>,
}

/// The client. Not shared between threads (it owns one socket and its request ids).
pub struct StorageClient {
    cfg: Config,
    transport: Transport,
}

impl StorageClient {
    pub fn new(cfg: Config) -> io::Result<StorageClient> {
        let transport = Transport::new(cfg.transport.clone())?;
        Ok(StorageClient { cfg, transport })
    }

    /// A client over a given transport (e.g. one whose socket carries an SRH).
    pub fn with_transport(cfg: Config, transport: Transport) -> StorageClient {
        StorageClient { cfg, transport }
    }

    /// Where requests for `r` go.
    pub fn replica_target(&self, r: &Replica) -> Target {
        let dst = self
            .cfg
            .node_addrs
            .get(&r.node)
            .copied()
            .unwrap_or_else(|| SocketAddr::new(r.address.into(), self.cfg.port));
        Target { label: r.node.clone(), dst }
    }

    fn targets(&self, m: &ObjectMeta) -> Vec<Target> {
        m.replicas.iter().map(|r| self.replica_target(r)).collect()
    }

    // ---- the protocol on explicit targets ----------------------------------------------

    /// Writes `data` as `object` at `version` to every target: every fragment to every
    /// target, until every target acknowledged every chunk (an ack means durable). The first
    /// target that answers anything but OK, or never answers, fails the whole write with an
    /// error naming it.
    pub fn write_replicas(
        &mut self,
        object: u64,
        version: u64,
        data: &[u8],
        targets: &[Target],
        progress: &dyn Progress,
    ) -> Result<(), Error> {
        if targets.is_empty() {
            return Err(Error::Refused(format!("object {object:#x}: no replicas to write")));
        }
        let size = data.len() as u64;
        let frags: Vec<(u64, u32)> = wire::fragments(size).collect();
        let nt = targets.len();
        let mut calls = Vec::with_capacity(frags.len() * nt);
        for &(off, len) in &frags {
            let part = &data[off as usize..off as usize + len as usize];
            for t in targets {
                calls.push(Call { dst: t.dst, req: Request::put(object, size, version, off, part) });
            }
        }
        progress.start(size);
        let mut acks = vec![0usize; frags.len()];
        let mut failure: Option<(usize, String)> = None;
        let results = self.transport.call_many(&calls, &mut |i, o| {
            let (f, t) = (i / nt, i % nt);
            if o.is_ok() {
                acks[f] += 1;
                if acks[f] == nt {
                    progress.advance(u64::from(frags[f].1));
                }
                Flow::Continue
            } else {
                failure = Some((
                    t,
                    format!(
                        "put of object {object:#x} at offset {} not acknowledged: {}",
                        frags[f].0,
                        outcome_reason(o)
                    ),
                ));
                Flow::Stop
            }
        })?;
        progress.finish();
        if let Some((t, reason)) = failure {
            return Err(Error::Replica { target: targets[t].clone(), reason });
        }
        debug_assert!(results.iter().all(|r| r.as_ref().is_some_and(Outcome::is_ok)));
        Ok(())
    }

    /// Reads `object` from the first target that can serve it, switching to the next one for
    /// the remaining fragments when a target does not answer, answers `checksum` or anything
    /// but OK, or has another size or version. `expect`: the (size, version) the object must
    /// have (from the metadata service); without it the first target's stat decides.
    pub fn read_replicas(
        &mut self,
        object: u64,
        expect: Option<(u64, u64)>,
        targets: &[Target],
        progress: &dyn Progress,
    ) -> Result<ReadOutcome, Error> {
        let mut bad: Vec<BadReplica> = Vec::new();
        let mut expect = expect;
        let mut data: Vec<u8> = Vec::new();
        let mut done: Vec<bool> = Vec::new();
        let mut started = false;
        let what = format!("object {object:#x}");
        for t in targets {
            let mut fail =
                |reason: String, checksum: bool| bad.push(BadReplica { target: t.clone(), reason, checksum });
            // The replica's view first: present, complete, the expected size and version.
            let st = match self.transport.call(t.dst, Request::stat(object))? {
                Outcome::Reply { status: status::OK, data } => match wire::parse_stat(&data) {
                    Some(s) => s,
                    None => {
                        fail(format!("stat reply of {} bytes", data.len()), false);
                        continue;
                    }
                },
                o => {
                    fail(format!("stat: {}", outcome_reason(&o)), false);
                    continue;
                }
            };
            if !st.complete {
                fail(format!("has an incomplete copy ({} chunks)", st.chunks), false);
                continue;
            }
            let sv = (st.size, st.version);
            match expect {
                Some(e) if e != sv => {
                    fail(format!("has size {} version {}, expected size {} version {}", sv.0, sv.1, e.0, e.1), false);
                    continue;
                }
                _ => expect = Some(sv),
            }
            let (size, version) = sv;
            let frags: Vec<(u64, u32)> = if size == 0 { Vec::new() } else { wire::fragments(size).collect() };
            if !started {
                started = true;
                data = vec![0; size as usize];
                done = vec![false; frags.len()];
                progress.start(size);
            }
            let todo: Vec<usize> = (0..frags.len()).filter(|&f| !done[f]).collect();
            let calls: Vec<Call> =
                todo.iter().map(|&f| Call { dst: t.dst, req: Request::get(object, frags[f].0, frags[f].1) }).collect();
            let mut failure: Option<(String, bool)> = None;
            self.transport.call_many(&calls, &mut |k, o| {
                let f = todo[k];
                let (off, len) = frags[f];
                let reason = match o {
                    Outcome::Reply { status: status::OK, data: d } => match wire::parse_get(d) {
                        Some((s, v, bytes)) if (s, v) == sv && bytes.len() == len as usize => {
                            data[off as usize..off as usize + len as usize].copy_from_slice(bytes);
                            done[f] = true;
                            progress.advance(u64::from(len));
                            return Flow::Continue;
                        }
                        Some((s, v, bytes)) => format!(
                            "get at offset {off}: size {s} version {v} with {} bytes, expected size {size} version {version} with {len}",
                            bytes.len()
                        ),
                        None => format!("get at offset {off}: reply of {} bytes", d.len()),
                    },
                    Outcome::Reply { status: status::CHECKSUM, .. } => {
                        failure = Some((format!("checksum error at offset {off}"), true));
                        return Flow::Stop;
                    }
                    o => format!("get at offset {off}: {}", outcome_reason(o)),
                };
                failure = Some((reason, false));
                Flow::Stop
            })?;
            match failure {
                None => {
                    progress.finish();
                    return Ok(ReadOutcome { data, size, version, bad_replicas: bad });
                }
                Some((reason, checksum)) => fail(reason, checksum),
            }
        }
        progress.finish();
        if !bad.is_empty() && bad.iter().all(|b| b.reason.ends_with(&status_reason(status::NOT_FOUND))) {
            return Err(Error::NotFound(what));
        }
        Err(Error::AllReplicasFailed { what, tried: bad })
    }

    /// Reads `object` whose size and version are already known (e.g. from a manifest) from the
    /// first target that serves every fragment, without asking for its stat first (one round
    /// trip less per object: the size and version in every fragment reply are checked instead).
    /// A target that does not answer, answers anything but OK, or has another size or version
    /// is left for the next one, for the fragments still missing. Returns the data, the index
    /// of the target that sent the last fragment, and the targets that failed on the way.
    pub fn read_known(
        &mut self,
        object: u64,
        size: u64,
        version: u64,
        targets: &[Target],
    ) -> Result<(Vec<u8>, usize, Vec<BadReplica>), Error> {
        let frags: Vec<(u64, u32)> = if size == 0 { Vec::new() } else { wire::fragments(size).collect() };
        let mut data = vec![0u8; size as usize];
        let mut done = vec![false; frags.len()];
        let mut bad: Vec<BadReplica> = Vec::new();
        for (ti, t) in targets.iter().enumerate() {
            let todo: Vec<usize> = (0..frags.len()).filter(|&f| !done[f]).collect();
            let calls: Vec<Call> =
                todo.iter().map(|&f| Call { dst: t.dst, req: Request::get(object, frags[f].0, frags[f].1) }).collect();
            let mut failure: Option<(String, bool)> = None;
            self.transport.call_many(&calls, &mut |k, o| {
                let f = todo[k];
                let (off, len) = frags[f];
                let reason = match o {
                    Outcome::Reply { status: status::OK, data: d } => match wire::parse_get(d) {
                        Some((s, v, bytes)) if (s, v) == (size, version) && bytes.len() == len as usize => {
                            data[off as usize..off as usize + len as usize].copy_from_slice(bytes);
                            done[f] = true;
                            return Flow::Continue;
                        }
                        Some((s, v, bytes)) => format!(
                            "get at offset {off}: size {s} version {v} with {} bytes, expected size {size} version {version} with {len}",
                            bytes.len()
                        ),
                        None => format!("get at offset {off}: reply of {} bytes", d.len()),
                    },
                    Outcome::Reply { status: status::CHECKSUM, .. } => {
                        failure = Some((format!("checksum error at offset {off}"), true));
                        return Flow::Stop;
                    }
                    o => format!("get at offset {off}: {}", outcome_reason(o)),
                };
                failure = Some((reason, false));
                Flow::Stop
            })?;
            match failure {
                None => return Ok((data, ti, bad)),
                Some((reason, checksum)) => bad.push(BadReplica { target: t.clone(), reason, checksum }),
            }
        }
        Err(Error::AllReplicasFailed { what: format!("object {object:#x}"), tried: bad })
    }

    /// Deletes `object` (`version`, 0: any) on every target; all must answer OK (the delete of
    /// an absent object is OK: idempotent).
    pub fn delete_replicas(&mut self, object: u64, version: u64, targets: &[Target]) -> Result<(), Error> {
        let calls: Vec<Call> =
            targets.iter().map(|t| Call { dst: t.dst, req: Request::delete(object, version) }).collect();
        let results = self.transport.call_many(&calls, &mut |_, _| Flow::Continue)?;
        for (t, r) in targets.iter().zip(results) {
            let o = r.expect("not stopped");
            if !o.is_ok() && !matches!(o, Outcome::Reply { status: status::NOT_FOUND, .. }) {
                return Err(Error::Replica {
                    target: t.clone(),
                    reason: format!("delete of object {object:#x}: {}", outcome_reason(&o)),
                });
            }
        }
        Ok(())
    }

    /// Each target's stat of `object`.
    pub fn stat_replicas(&mut self, object: u64, targets: &[Target]) -> Result<Vec<Result<Stat, String>>, Error> {
        let calls: Vec<Call> = targets.iter().map(|t| Call { dst: t.dst, req: Request::stat(object) }).collect();
        let results = self.transport.call_many(&calls, &mut |_, _| Flow::Continue)?;
        Ok(results
            .into_iter()
            .map(|r| match r.expect("not stopped") {
                Outcome::Reply { status: status::OK, data } => {
                    wire::parse_stat(&data).ok_or_else(|| format!("stat reply of {} bytes", data.len()))
                }
                o => Err(outcome_reason(&o)),
            })
            .collect())
    }

    // ---- one node, no metadata service (the `*-raw` commands) --------------------------

    pub fn put_raw(
        &mut self,
        node: &Endpoint,
        object: u64,
        version: u64,
        data: &[u8],
        progress: &dyn Progress,
    ) -> Result<(), Error> {
        self.write_replicas(object, version, data, &[node.target(object)], progress)
    }

    pub fn get_raw(&mut self, node: &Endpoint, object: u64, progress: &dyn Progress) -> Result<(Vec<u8>, u64), Error> {
        match self.read_replicas(object, None, &[node.target(object)], progress) {
            Ok(r) => Ok((r.data, r.version)),
            Err(Error::AllReplicasFailed { mut tried, .. }) if tried.len() == 1 => {
                let b = tried.remove(0);
                Err(Error::Replica { target: b.target, reason: b.reason })
            }
            Err(e) => Err(e),
        }
    }

    pub fn stat_raw(&mut self, node: &Endpoint, object: u64) -> Result<Stat, Error> {
        let t = node.target(object);
        match self.transport.call(t.dst, Request::stat(object))? {
            Outcome::Reply { status: status::OK, data } => wire::parse_stat(&data)
                .ok_or_else(|| Error::Replica { target: t, reason: format!("stat reply of {} bytes", data.len()) }),
            Outcome::Reply { status: status::NOT_FOUND, .. } => Err(Error::NotFound(format!("object {object:#x}"))),
            o => Err(Error::Replica { target: t, reason: format!("stat: {}", outcome_reason(&o)) }),
        }
    }

    pub fn rm_raw(&mut self, node: &Endpoint, object: u64, version: u64) -> Result<(), Error> {
        self.delete_replicas(object, version, &[node.target(object)])
    }

    /// One page of the node's objects after `after`, at most `max` (≤ [`wire::LIST_MAX`]).
    pub fn list_page_raw(
        &mut self,
        node: &Endpoint,
        after: Option<u64>,
        max: u32,
    ) -> Result<Vec<wire::ListEntry>, Error> {
        let t = node.target(after.unwrap_or(0));
        match self.transport.call(t.dst, Request::list(after, max))? {
            Outcome::Reply { status: status::OK, data } => wire::parse_list(&data)
                .ok_or_else(|| Error::Replica { target: t, reason: format!("list reply of {} bytes", data.len()) }),
            o => Err(Error::Replica { target: t, reason: format!("list: {}", outcome_reason(&o)) }),
        }
    }

    /// Every object of the node after `after` (pages of [`wire::LIST_MAX`]).
    pub fn list_raw(&mut self, node: &Endpoint, after: Option<u64>) -> Result<Vec<wire::ListEntry>, Error> {
        let mut all = Vec::new();
        let mut after = after;
        // Pages until an empty one: a page may hold fewer than LIST_MAX entries without
        // being the last (the node fills one reply's data, 43 entries, at most).
        loop {
            let page = self.list_page_raw(node, after, wire::LIST_MAX as u32)?;
            let last = page.last().map(|e| e.id);
            all.extend(page);
            match last {
                Some(l) if Some(l) != after => after = Some(l),
                _ => return Ok(all),
            }
        }
    }

    // ---- with the metadata service --------------------------------------------------------

    /// Stores `data` as a new object named by `id` and/or `name` with `replicas` replicas:
    /// create at the metadata service (which picks the replicas), write every replica until
    /// every chunk is durable on every one, then commit. Only a committed object is success;
    /// a replica failure is an error naming it (the object stays `creating` at the metadata
    /// service: `rm` removes it, a new put of the same name and size retries it).
    pub fn put(
        &mut self,
        meta: &MetaClient,
        id: Option<u64>,
        name: Option<&str>,
        data: &[u8],
        replicas: usize,
        progress: &dyn Progress,
    ) -> Result<ObjectMeta, Error> {
        let m = meta.create(&CreateRequest {
            id,
            name: name.map(str::to_string),
            size: data.len() as u64,
            replicas: Some(replicas),
        })?;
        if m.state == ObjectState::Complete {
            return Err(Error::Refused(format!(
                "object {:#x}{} already exists (complete); remove it first",
                m.id,
                m.name.as_ref().map(|n| format!(" {n:?}")).unwrap_or_default()
            )));
        }
        let targets = self.targets(&m);
        self.write_replicas(m.id, m.version, data, &targets, progress)?;
        Ok(meta.commit(m.id, m.version)?)
    }

    /// Reads an object: lookup, then the replicas in placement order with failover (see
    /// [`Self::read_replicas`]); the size and version must be the metadata's.
    pub fn get(&mut self, meta: &MetaClient, obj: &ObjectRef, progress: &dyn Progress) -> Result<GetResult, Error> {
        let m = self.lookup(meta, obj)?;
        if m.state != ObjectState::Complete {
            return Err(Error::Refused(format!("{obj} is not readable: its state is {:?}", m.state)));
        }
        let targets = self.targets(&m);
        let r = self.read_replicas(m.id, Some((m.size, m.version)), &targets, progress)?;
        Ok(GetResult { meta: m, data: r.data, bad_replicas: r.bad_replicas })
    }

    pub fn stat(&mut self, meta: &MetaClient, obj: &ObjectRef) -> Result<StatResult, Error> {
        let m = self.lookup(meta, obj)?;
        let targets = self.targets(&m);
        let st = self.stat_replicas(m.id, &targets)?;
        Ok(StatResult { meta: m, replicas: targets.into_iter().zip(st).collect() })
    }

    /// Deletes the object on every replica, then at the metadata service. A replica that
    /// fails leaves the metadata in place (so `rm` can be repeated).
    pub fn rm(&mut self, meta: &MetaClient, obj: &ObjectRef) -> Result<ObjectMeta, Error> {
        let m = self.lookup(meta, obj)?;
        let targets = self.targets(&m);
        self.delete_replicas(m.id, 0, &targets)?;
        meta.delete(m.id)?;
        Ok(m)
    }

    /// Every object known to the metadata service, in id order.
    pub fn ls(&mut self, meta: &MetaClient) -> Result<Vec<ObjectMeta>, Error> {
        let mut all = Vec::new();
        let mut after = None;
        loop {
            let page = meta.list(after, 1000)?;
            all.extend(page.objects);
            match page.next {
                Some(n) => after = Some(n),
                None => return Ok(all),
            }
        }
    }

    fn lookup(&self, meta: &MetaClient, obj: &ObjectRef) -> Result<ObjectMeta, Error> {
        meta.lookup(obj).map_err(|e| if e.is_not_found() { Error::NotFound(obj.to_string()) } else { Error::Meta(e) })
    }
}
