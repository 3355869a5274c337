//! The metadata service: node membership and health, object creation with placement,
//! commit, intents (SR segment lists), lookup, delete, list — over any [`MetaStore`].
//!
//! Key layout (values are JSON):
//!
//! | key | value |
//! |---|---|
//! | `objmeta/nodes/<node id>` | [`Node`] |
//! | `objmeta/objects/<id as 16 hex digits>` | [`ObjectMeta`] (hex keeps key order = id order) |
//! | `objmeta/names/<name>` | `{"id": <u64>}` |
//! | `objmeta/next-id` | the next id to allocate (u64) |
//! | `objmeta/images/…`, `objmeta/image-traces/…` | container images: see [`images`] |
//!
//! Every read-modify-write is a compare-and-swap loop on the one key it changes, so any
//! number of service instances may share an etcd. Multi-key operations are ordered so a crash
//! between steps leaves a state the retried call completes:
//!
//! * create with a name binds `names/<name>` first, then writes the object; a retried create
//!   finds the binding and writes the missing object (placement is deterministic, so it picks
//!   the same nodes unless membership changed);
//! * delete marks the object `Deleting`, removes the name binding, then the object; a retried
//!   delete finishes whatever is left, and a create of the same name meanwhile gets `Conflict`.
//!
//! Health is computed when nodes are read: a node whose last heartbeat is older than
//! [`ServiceConfig::down_after_ms`] is Down. Down nodes are never chosen for new replicas.

use std::net::Ipv6Addr;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::clock::{Clock, SystemClock};
use crate::error::MetaError;
use crate::metrics::{Census, CountingStore, Metrics};
use crate::model::{
    validate_name, validate_node_id, Candidate, CreateRequest, Intent, IntentOp, IntentRequest, Node, NodeRegistration,
    NodeState, ObjectMeta, ObjectPage, ObjectRef, ObjectState, Replica, CHUNK_SIZE, DEFAULT_REPLICAS,
};
use crate::placement;
use crate::store::MetaStore;

mod images;

const NODES: &str = "objmeta/nodes/";
const OBJECTS: &str = "objmeta/objects/";
const NAMES: &str = "objmeta/names/";
const NEXT_ID: &str = "objmeta/next-id";
/// Most replicas an object may have.
pub const MAX_REPLICAS: usize = 16;
/// Largest page of [`MetadataService::list`].
pub const MAX_PAGE: usize = 1000;
/// Compare-and-swap attempts before an operation gives up with `Conflict`.
const CAS_ATTEMPTS: usize = 64;

/// Tunables.
#[derive(Clone, Debug)]
pub struct ServiceConfig {
    /// A node with no heartbeat for this long is Down.
    pub down_after_ms: u64,
    /// How many candidates a store intent for an object that does not exist yet returns.
    pub store_candidates: usize,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self { down_after_ms: 15_000, store_candidates: DEFAULT_REPLICAS }
    }
}

#[derive(Serialize, Deserialize)]
struct NameBinding {
    id: u64,
}

/// The service. Cheap to share behind an `Arc`; every method takes `&self`.
pub struct MetadataService {
    store: Box<dyn MetaStore>,
    clock: Arc<dyn Clock>,
    config: ServiceConfig,
    metrics: Arc<Metrics>,
}

fn object_key(id: u64) -> String {
    format!("{OBJECTS}{id:016x}")
}

fn name_key(name: &str) -> String {
    format!("{NAMES}{name}")
}

fn node_key(id: &str) -> String {
    format!("{NODES}{id}")
}

fn to_json<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("model types serialise")
}

fn from_json<T: DeserializeOwned>(key: &str, b: &[u8]) -> Result<T, MetaError> {
    serde_json::from_slice(b).map_err(|e| MetaError::Decode { key: key.to_string(), msg: e.to_string() })
}

fn contended(what: &str) -> MetaError {
    MetaError::Conflict(format!("{what}: gave up after {CAS_ATTEMPTS} concurrent updates"))
}

impl MetadataService {
    /// A service over `store` with the system clock.
    pub fn new(store: Box<dyn MetaStore>, config: ServiceConfig) -> Self {
        Self::with_clock(store, config, Arc::new(SystemClock))
    }

    /// A service over `store` with the given clock (tests use a manual one).
    /// Every store operation is counted ([`crate::metrics::CountingStore`]).
    pub fn with_clock(store: Box<dyn MetaStore>, config: ServiceConfig, clock: Arc<dyn Clock>) -> Self {
        let metrics = Arc::new(Metrics::default());
        let store = Box::new(CountingStore::new(store, metrics.clone()));
        Self { store, clock, config, metrics }
    }

    pub fn config(&self) -> &ServiceConfig {
        &self.config
    }

    /// The service's counters (the server adds its requests to them).
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The `GET /metrics` exposition: the counters and a [`census`](Self::census) of the store.
    pub fn metrics_text(&self) -> String {
        self.metrics.render(self.census().ok().as_ref())
    }

    /// Nodes by health, objects by state and images, as the store holds them now: one scan
    /// of the node, object and image keys (objects are read for their state only).
    pub fn census(&self) -> Result<Census, MetaError> {
        #[derive(Deserialize)]
        struct StateOnly {
            state: ObjectState,
        }
        let mut c = Census::default();
        for n in self.nodes()? {
            match n.state {
                NodeState::Up => c.nodes_up += 1,
                NodeState::Down => c.nodes_down += 1,
            }
            c.node_bytes.push((n.id, n.capacity_bytes, n.used_bytes));
        }
        let mut after: Option<Vec<u8>> = None;
        loop {
            let page = self.store.list_prefix(OBJECTS.as_bytes(), after.as_deref(), MAX_PAGE)?;
            let full = page.len() == MAX_PAGE;
            for (k, v) in page {
                let o: StateOnly = from_json(&String::from_utf8_lossy(&k), &v)?;
                match o.state {
                    ObjectState::Creating => c.objects_creating += 1,
                    ObjectState::Complete => c.objects_complete += 1,
                    ObjectState::Deleting => c.objects_deleting += 1,
                }
                after = Some(k);
            }
            if !full {
                break;
            }
        }
        c.images = self.images()?.len() as u64;
        Ok(c)
    }

    fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<(T, Vec<u8>)>, MetaError> {
        match self.store.get(key.as_bytes())? {
            None => Ok(None),
            Some(raw) => Ok(Some((from_json(key, &raw)?, raw))),
        }
    }

    fn with_health(&self, mut n: Node, now: u64) -> Node {
        n.state = if now.saturating_sub(n.last_heartbeat) > self.config.down_after_ms {
            NodeState::Down
        } else {
            NodeState::Up
        };
        n
    }

    // ---- membership -------------------------------------------------------------------

    /// Adds a node, or updates a known one (a node that restarts registers again). The node
    /// counts as heard from now. Refused when another node already has the same object prefix
    /// or storage SID, and when a known node comes with another object prefix (its objects'
    /// replica addresses lie in the old one).
    pub fn register(&self, reg: NodeRegistration) -> Result<Node, MetaError> {
        validate_node_id(&reg.id)?;
        if reg.failure_domain.is_empty() {
            return Err(MetaError::Invalid(format!("node {}: failure_domain must not be empty", reg.id)));
        }
        if reg.storage_sid.is_unspecified() || reg.storage_sid.is_multicast() {
            return Err(MetaError::Invalid(format!(
                "node {}: storage SID {} is not a unicast address",
                reg.id, reg.storage_sid
            )));
        }
        for other in self.nodes()? {
            if other.id == reg.id {
                continue;
            }
            if other.object_prefix == reg.object_prefix {
                return Err(MetaError::AlreadyExists(format!(
                    "object prefix {} belongs to node {}",
                    reg.object_prefix, other.id
                )));
            }
            if other.storage_sid == reg.storage_sid {
                return Err(MetaError::AlreadyExists(format!(
                    "storage SID {} belongs to node {}",
                    reg.storage_sid, other.id
                )));
            }
        }
        let key = node_key(&reg.id);
        for _ in 0..CAS_ATTEMPTS {
            let old = self.store.get(key.as_bytes())?;
            if let Some(raw) = &old {
                let known: Node = from_json(&key, raw)?;
                if known.object_prefix != reg.object_prefix {
                    // Its objects' replica addresses are in the old prefix.
                    return Err(MetaError::Conflict(format!(
                        "node {} has object prefix {}, not {}: deregister it first to re-address it",
                        reg.id, known.object_prefix, reg.object_prefix
                    )));
                }
            }
            let now = self.clock.now_ms();
            let node = Node {
                id: reg.id.clone(),
                object_prefix: reg.object_prefix,
                storage_sid: reg.storage_sid,
                capacity_bytes: reg.capacity_bytes,
                used_bytes: reg.used_bytes,
                failure_domain: reg.failure_domain.clone(),
                last_heartbeat: now,
                state: NodeState::Up,
            };
            if self.store.compare_and_swap(key.as_bytes(), old.as_deref(), Some(&to_json(&node)))? {
                return Ok(self.with_health(node, now));
            }
        }
        Err(contended(&key))
    }

    /// Records a heartbeat with the node's current usage.
    pub fn heartbeat(&self, id: &str, used_bytes: u64) -> Result<Node, MetaError> {
        validate_node_id(id)?;
        let key = node_key(id);
        for _ in 0..CAS_ATTEMPTS {
            let Some((mut node, raw)) = self.get::<Node>(&key)? else {
                return Err(MetaError::NotFound(format!("node {id}")));
            };
            let now = self.clock.now_ms();
            node.used_bytes = used_bytes;
            node.last_heartbeat = node.last_heartbeat.max(now);
            node.state = NodeState::Up;
            if self.store.compare_and_swap(key.as_bytes(), Some(&raw), Some(&to_json(&node)))? {
                return Ok(self.with_health(node, now));
            }
        }
        Err(contended(&key))
    }

    /// Removes a node from membership (decommissioned, or replaced by a node with another id
    /// and the same prefix or SID). Objects keep their replica records; intents skip replicas
    /// on nodes that are no longer known. `Ok(false)` when there was no such node.
    pub fn deregister(&self, id: &str) -> Result<bool, MetaError> {
        validate_node_id(id)?;
        Ok(self.store.delete(node_key(id).as_bytes())?)
    }

    /// Checks that the store answers (a read of one key).
    pub fn check(&self) -> Result<(), MetaError> {
        self.store.get(NEXT_ID.as_bytes())?;
        Ok(())
    }

    /// One node, with its current health.
    pub fn node(&self, id: &str) -> Result<Node, MetaError> {
        validate_node_id(id)?;
        let key = node_key(id);
        let (n, _) = self.get::<Node>(&key)?.ok_or_else(|| MetaError::NotFound(format!("node {id}")))?;
        Ok(self.with_health(n, self.clock.now_ms()))
    }

    /// Every node, by id, with its current health.
    pub fn nodes(&self) -> Result<Vec<Node>, MetaError> {
        let now = self.clock.now_ms();
        let mut out = Vec::new();
        let mut after: Option<Vec<u8>> = None;
        loop {
            let page = self.store.list_prefix(NODES.as_bytes(), after.as_deref(), MAX_PAGE)?;
            let full = page.len() == MAX_PAGE;
            for (k, v) in page {
                let key = String::from_utf8_lossy(&k).into_owned();
                out.push(self.with_health(from_json(&key, &v)?, now));
                after = Some(k);
            }
            if !full {
                return Ok(out);
            }
        }
    }

    // ---- objects ----------------------------------------------------------------------

    fn allocate_id(&self) -> Result<u64, MetaError> {
        for _ in 0..CAS_ATTEMPTS {
            let cur = self.get::<u64>(NEXT_ID)?;
            let id = cur.as_ref().map_or(1, |(n, _)| *n).max(1);
            let next = id.checked_add(1).ok_or_else(|| MetaError::Conflict("object ids exhausted".into()))?;
            if self.store.compare_and_swap(
                NEXT_ID.as_bytes(),
                cur.as_ref().map(|(_, raw)| raw.as_slice()),
                Some(&to_json(&next)),
            )? {
                return Ok(id);
            }
        }
        Err(contended(NEXT_ID))
    }

    /// Creates an object's metadata and chooses its replicas (see [`placement`]).
    ///
    /// Idempotent: a create that matches an existing object (same id or name, same size, same
    /// replica count) returns that object as it is; one that differs is `AlreadyExists`.
    pub fn create(&self, req: CreateRequest) -> Result<ObjectMeta, MetaError> {
        let replicas = req.replicas.unwrap_or(DEFAULT_REPLICAS);
        if replicas == 0 || replicas > MAX_REPLICAS {
            return Err(MetaError::Invalid(format!("replicas = {replicas}: must be 1 to {MAX_REPLICAS}")));
        }
        if req.id == Some(0) {
            return Err(MetaError::Invalid("object id 0 is reserved".into()));
        }
        if let Some(name) = &req.name {
            validate_name(name)?;
        }
        if req.id.is_none() && req.name.is_none() {
            return Err(MetaError::Invalid("create needs an id or a name".into()));
        }
        let same = |m: &ObjectMeta| m.size == req.size && m.name == req.name && m.replicas.len() == replicas;
        for _ in 0..CAS_ATTEMPTS {
            // 1. The id: given, bound to the name already, or freshly allocated and bound.
            // `bound`: this round bound the name (so a failed placement must unbind it).
            let (id, bound) = match &req.name {
                None => (req.id.expect("checked above"), false),
                Some(name) => {
                    let nkey = name_key(name);
                    match self.get::<NameBinding>(&nkey)? {
                        Some((b, _)) => {
                            if req.id.is_some_and(|id| id != b.id) {
                                return Err(MetaError::AlreadyExists(format!(
                                    "name {name:?} belongs to object {:#x}",
                                    b.id
                                )));
                            }
                            (b.id, false)
                        }
                        None => {
                            let id = match req.id {
                                Some(id) => id,
                                None => self.allocate_id()?,
                            };
                            let b = to_json(&NameBinding { id });
                            if !self.store.compare_and_swap(nkey.as_bytes(), None, Some(&b))? {
                                continue; // someone bound the name meanwhile: look again
                            }
                            (id, true)
                        }
                    }
                }
            };
            // 2. The object record.
            let okey = object_key(id);
            if let Some((m, _)) = self.get::<ObjectMeta>(&okey)? {
                if req.name.is_some() && m.name != req.name {
                    // The name binding (ours or found) points at an object that does not carry
                    // this name: an allocated id that an explicit create took, or a binding a
                    // racing or crashed creator has not released. Unbind it (only if it is
                    // unchanged) and look again, unless the taken id is the one we asked for.
                    let b = to_json(&NameBinding { id });
                    let nkey = name_key(req.name.as_deref().expect("checked"));
                    self.store.compare_and_swap(nkey.as_bytes(), Some(&b), None)?;
                    if req.id == Some(id) {
                        return Err(MetaError::AlreadyExists(format!("object {id:#x} exists with name {:?}", m.name)));
                    }
                    continue;
                }
                if m.state == ObjectState::Deleting {
                    return Err(MetaError::Conflict(format!("object {id:#x} is being deleted")));
                }
                if same(&m) {
                    return Ok(m);
                }
                return Err(MetaError::AlreadyExists(format!(
                    "object {id:#x} exists with name {:?}, size {}, {} replicas",
                    m.name,
                    m.size,
                    m.replicas.len()
                )));
            }
            let nodes = self.nodes()?;
            let chosen = match placement::place(&nodes, id, req.size, replicas) {
                Ok(c) => c,
                Err(e) => {
                    if bound {
                        let b = to_json(&NameBinding { id });
                        let nkey = name_key(req.name.as_deref().expect("bound implies a name"));
                        self.store.compare_and_swap(nkey.as_bytes(), Some(&b), None)?;
                    }
                    return Err(e);
                }
            };
            let meta = ObjectMeta {
                id,
                name: req.name.clone(),
                size: req.size,
                version: 1,
                chunk_size: CHUNK_SIZE,
                replicas: chosen
                    .iter()
                    .map(|n| Replica { node: n.id.clone(), address: n.object_prefix.object_address(id) })
                    .collect(),
                state: ObjectState::Creating,
                created: self.clock.now_ms(),
            };
            if self.store.compare_and_swap(okey.as_bytes(), None, Some(&to_json(&meta)))? {
                return Ok(meta);
            }
            // A concurrent create wrote it first: the next round compares with it.
        }
        Err(contended("create"))
    }

    /// Marks the object Complete: the client reports every replica durable for `version`.
    /// Idempotent; a version other than the object's is `Conflict`.
    pub fn commit(&self, id: u64, version: u64) -> Result<ObjectMeta, MetaError> {
        let key = object_key(id);
        for _ in 0..CAS_ATTEMPTS {
            let Some((mut m, raw)) = self.get::<ObjectMeta>(&key)? else {
                return Err(MetaError::NotFound(format!("object {id:#x}")));
            };
            if m.version != version {
                return Err(MetaError::Conflict(format!("object {id:#x} is at version {}, not {version}", m.version)));
            }
            match m.state {
                ObjectState::Complete => return Ok(m),
                ObjectState::Deleting => return Err(MetaError::Conflict(format!("object {id:#x} is being deleted"))),
                ObjectState::Creating => {}
            }
            m.state = ObjectState::Complete;
            if self.store.compare_and_swap(key.as_bytes(), Some(&raw), Some(&to_json(&m)))? {
                return Ok(m);
            }
        }
        Err(contended(&key))
    }

    /// The object's metadata, by id or name.
    pub fn lookup(&self, obj: &ObjectRef) -> Result<ObjectMeta, MetaError> {
        let id = match obj {
            ObjectRef::Id(id) => *id,
            ObjectRef::Name(name) => {
                validate_name(name)?;
                self.get::<NameBinding>(&name_key(name))?.ok_or_else(|| MetaError::NotFound(obj.to_string()))?.0.id
            }
        };
        self.get::<ObjectMeta>(&object_key(id))?.map(|(m, _)| m).ok_or_else(|| MetaError::NotFound(obj.to_string()))
    }

    /// Deletes the object's metadata: marks it Deleting, unbinds its name, removes it. Returns
    /// the metadata as it was marked (its replica addresses say where the data to remove
    /// is), or `None` when there was no such object (a repeated delete is not an error).
    pub fn delete(&self, id: u64) -> Result<Option<ObjectMeta>, MetaError> {
        let key = object_key(id);
        for _ in 0..CAS_ATTEMPTS {
            let Some((mut m, raw)) = self.get::<ObjectMeta>(&key)? else {
                return Ok(None);
            };
            let marked = if m.state == ObjectState::Deleting {
                raw
            } else {
                m.state = ObjectState::Deleting;
                let b = to_json(&m);
                if !self.store.compare_and_swap(key.as_bytes(), Some(&raw), Some(&b))? {
                    continue;
                }
                b
            };
            if let Some(name) = &m.name {
                let binding = to_json(&NameBinding { id });
                // Only if it still names this object.
                self.store.compare_and_swap(name_key(name).as_bytes(), Some(&binding), None)?;
            }
            self.store.compare_and_swap(key.as_bytes(), Some(&marked), None)?;
            return Ok(Some(m));
        }
        Err(contended(&key))
    }

    /// Objects in id order, strictly after `after`, at most `limit` (1 to [`MAX_PAGE`]; 0
    /// means 100).
    pub fn list(&self, after: Option<u64>, limit: usize) -> Result<ObjectPage, MetaError> {
        let limit = match limit {
            0 => 100,
            n => n.min(MAX_PAGE),
        };
        let start = after.map(object_key);
        let page = self.store.list_prefix(OBJECTS.as_bytes(), start.as_ref().map(String::as_bytes), limit)?;
        let objects = page
            .iter()
            .map(|(k, v)| from_json::<ObjectMeta>(&String::from_utf8_lossy(k), v))
            .collect::<Result<Vec<_>, _>>()?;
        let next = if objects.len() == limit { objects.last().map(|m| m.id) } else { None };
        Ok(ObjectPage { objects, next })
    }

    // ---- intents ----------------------------------------------------------------------

    /// The SR segment list for storing or retrieving an object.
    ///
    /// Order rule (travel order; the SRH Segment List holds it reversed):
    ///
    /// * the object exists (retrieve, or store of a created object): its replicas' nodes, Up
    ///   ones first, then Down ones, each group in placement order;
    /// * store of an object id that does not exist yet: the placement ranking for that id and
    ///   `size` ([`placement::rank`]: Up nodes with room, distinct failure domains first),
    ///   the first [`ServiceConfig::store_candidates`];
    /// * the last segment is reached with Segments Left = 0 and so accepts whatever its
    ///   policy says (docs/srv6.md): the list always ends with the least preferred candidate,
    ///   which is the node that takes the request when every earlier one passed.
    ///
    /// A retrieve of a missing object, or a store of a missing object named only by name, is
    /// `NotFound`; an intent with no candidate at all is `NotEnoughNodes`.
    pub fn intent(&self, req: &IntentRequest) -> Result<Intent, MetaError> {
        let r = self.intent_inner(req);
        let op = match req.op {
            IntentOp::Store => "store",
            IntentOp::Retrieve => "retrieve",
        };
        self.metrics.intent(op, r.as_ref().map_or_else(|e| crate::server::error_kind(e).1, |_| "ok"));
        r
    }

    fn intent_inner(&self, req: &IntentRequest) -> Result<Intent, MetaError> {
        let nodes = self.nodes()?;
        let existing = match self.lookup(&req.object) {
            Ok(m) => Some(m),
            Err(MetaError::NotFound(_)) => None,
            Err(e) => return Err(e),
        };
        let (id, candidates): (u64, Vec<Candidate>) = match (existing, req.op, &req.object) {
            (Some(m), _, _) => {
                if m.state == ObjectState::Deleting {
                    return Err(MetaError::Conflict(format!("object {:#x} is being deleted", m.id)));
                }
                let mut c: Vec<Candidate> = m
                    .replicas
                    .iter()
                    .filter_map(|r| {
                        let n = nodes.iter().find(|n| n.id == r.node)?;
                        Some(Candidate {
                            node: n.id.clone(),
                            storage_sid: n.storage_sid,
                            address: r.address,
                            state: n.state,
                        })
                    })
                    .collect();
                // Stable: placement order within each group.
                c.sort_by_key(|c| c.state == NodeState::Down);
                (m.id, c)
            }
            (None, IntentOp::Store, ObjectRef::Id(id)) => {
                if *id == 0 {
                    return Err(MetaError::Invalid("object id 0 is reserved".into()));
                }
                let c = placement::rank(&nodes, *id, req.size.unwrap_or(0))
                    .into_iter()
                    .take(self.config.store_candidates.max(1))
                    .map(|n| Candidate {
                        node: n.id.clone(),
                        storage_sid: n.storage_sid,
                        address: n.object_prefix.object_address(*id),
                        state: n.state,
                    })
                    .collect();
                (*id, c)
            }
            (None, _, obj) => return Err(MetaError::NotFound(obj.to_string())),
        };
        if candidates.is_empty() {
            return Err(MetaError::NotEnoughNodes(format!("no candidate node for {}", req.object)));
        }
        Ok(Intent {
            op: req.op,
            object: id,
            segments: candidates.iter().map(|c| c.storage_sid).collect::<Vec<Ipv6Addr>>(),
            candidates,
        })
    }
}
