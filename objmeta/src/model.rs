//! The data model: storage nodes, objects, replicas, intents. Everything here is plain data,
//! serialised as JSON both in the store and on the HTTP API.
//!
//! Invariants checked by the constructors / validators here:
//!
//! * a [`Prefix64`] is a /64: its low 64 bits are zero;
//! * an object id is never 0 (the address prefix::0 is the subnet-router anycast address);
//! * a node id and an object name are 1..=128 characters from `[A-Za-z0-9._-]` (node id) or
//!   any printable character except `/` at the start (name), so that they fit in store keys and
//!   URL paths without escaping.

use std::fmt;
use std::net::Ipv6Addr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::MetaError;

/// Default chunk size of an object, in bytes (one block of the block path).
pub const CHUNK_SIZE: u32 = 4096;
/// Default number of replicas.
pub const DEFAULT_REPLICAS: usize = 3;

/// An IPv6 /64 prefix (the "object prefix" of a node). Written `2001:db8:1:1::/64`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Prefix64(Ipv6Addr);

impl Prefix64 {
    /// The prefix, or an error when the low 64 bits of `addr` are not zero.
    pub fn new(addr: Ipv6Addr) -> Result<Self, MetaError> {
        if u128::from(addr) & u128::from(u64::MAX) != 0 {
            return Err(MetaError::Invalid(format!("object prefix {addr}/64 has host bits set")));
        }
        Ok(Self(addr))
    }

    /// The network address.
    pub fn addr(self) -> Ipv6Addr {
        self.0
    }

    /// The address of object `id` inside this prefix: prefix | id.
    pub fn object_address(self, id: u64) -> Ipv6Addr {
        Ipv6Addr::from(u128::from(self.0) | u128::from(id))
    }

    /// Whether `a` lies in this /64.
    pub fn contains(self, a: Ipv6Addr) -> bool {
        u128::from(a) >> 64 == u128::from(self.0) >> 64
    }
}

impl fmt::Display for Prefix64 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/64", self.0)
    }
}

impl FromStr for Prefix64 {
    type Err = MetaError;
    fn from_str(s: &str) -> Result<Self, MetaError> {
        let (a, len) =
            s.split_once('/').ok_or_else(|| MetaError::Invalid(format!("object prefix {s:?}: expected ADDR/64")))?;
        if len != "64" {
            return Err(MetaError::Invalid(format!("object prefix {s:?}: must be a /64")));
        }
        let a: Ipv6Addr =
            a.parse().map_err(|_| MetaError::Invalid(format!("object prefix {s:?}: bad IPv6 address")))?;
        Self::new(a)
    }
}

impl Serialize for Prefix64 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Prefix64 {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Health of a node, derived from its last heartbeat.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    Up,
    Down,
}

/// A storage node (an appliance with a storage SID and an object store).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub id: String,
    /// The /64 (inside the node's locator) that object replica addresses are taken from.
    pub object_prefix: Prefix64,
    /// The node's SRv6 SID with the `storage` behaviour.
    pub storage_sid: Ipv6Addr,
    pub capacity_bytes: u64,
    pub used_bytes: u64,
    pub failure_domain: String,
    /// Milliseconds since the Unix epoch of the last heartbeat (or of registration).
    pub last_heartbeat: u64,
    /// Computed from `last_heartbeat` whenever a node is read; what is stored is ignored.
    pub state: NodeState,
}

impl Node {
    /// Free capacity (never negative).
    pub fn free_bytes(&self) -> u64 {
        self.capacity_bytes.saturating_sub(self.used_bytes)
    }
}

/// What a node sends to join (or re-join) the cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRegistration {
    pub id: String,
    pub object_prefix: Prefix64,
    pub storage_sid: Ipv6Addr,
    pub capacity_bytes: u64,
    #[serde(default)]
    pub used_bytes: u64,
    pub failure_domain: String,
}

/// Life cycle of an object's metadata.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ObjectState {
    /// Created, replicas chosen; the client is writing them.
    Creating,
    /// Every replica made the data durable (the client committed).
    Complete,
    /// Being deleted; the record disappears once the deletion finishes.
    Deleting,
}

/// One replica of an object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replica {
    /// Node id.
    pub node: String,
    /// The node's object prefix + the object id.
    pub address: Ipv6Addr,
}

/// An object's metadata.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectMeta {
    pub id: u64,
    pub name: Option<String>,
    pub size: u64,
    pub version: u64,
    pub chunk_size: u32,
    /// In placement order (most preferred first).
    pub replicas: Vec<Replica>,
    pub state: ObjectState,
    /// Milliseconds since the Unix epoch.
    pub created: u64,
}

/// How a caller names an object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ObjectRef {
    Id(u64),
    Name(String),
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ObjectRef::Id(id) => write!(f, "object {id:#x}"),
            ObjectRef::Name(n) => write!(f, "object {n:?}"),
        }
    }
}

/// A create request. At least one of `id` and `name` is given; with a name only, the service
/// allocates the id.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CreateRequest {
    #[serde(default)]
    pub id: Option<u64>,
    #[serde(default)]
    pub name: Option<String>,
    pub size: u64,
    /// Default [`DEFAULT_REPLICAS`].
    #[serde(default)]
    pub replicas: Option<usize>,
}

/// What the client means to do with an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IntentOp {
    Store,
    Retrieve,
}

/// An intent request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntentRequest {
    pub op: IntentOp,
    pub object: ObjectRef,
    /// For a store of an object that does not exist yet: its size (default 0), so that only
    /// nodes with room for it are candidates.
    #[serde(default)]
    pub size: Option<u64>,
}

/// One candidate of an intent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Candidate {
    pub node: String,
    pub storage_sid: Ipv6Addr,
    /// The replica address of the object on this node.
    pub address: Ipv6Addr,
    pub state: NodeState,
}

/// The answer to an intent: the storage SIDs to travel, in travel order (the first one is
/// visited first, so it is the *last* entry of the SRH Segment List; the last one accepts
/// unconditionally because it is reached with Segments Left = 0).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Intent {
    pub op: IntentOp,
    pub object: u64,
    pub segments: Vec<Ipv6Addr>,
    pub candidates: Vec<Candidate>,
}

/// One page of [`ObjectMeta`]s in id order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectPage {
    pub objects: Vec<ObjectMeta>,
    /// Pass as `after` to get the next page; `None` when this was the last one.
    pub next: Option<u64>,
}

/// Validates a node id: 1..=128 characters of `[A-Za-z0-9._-]`.
pub fn validate_node_id(id: &str) -> Result<(), MetaError> {
    if id.is_empty() || id.len() > 128 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)) {
        return Err(MetaError::Invalid(format!("node id {id:?}: 1 to 128 characters of [A-Za-z0-9._-]")));
    }
    Ok(())
}

/// Validates an object name: 1..=1024 bytes, no control characters.
pub fn validate_name(name: &str) -> Result<(), MetaError> {
    if name.is_empty() || name.len() > 1024 || name.chars().any(char::is_control) {
        return Err(MetaError::Invalid(format!("object name {name:?}: 1 to 1024 bytes, no control characters")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_parses_and_builds_addresses() {
        let p: Prefix64 = "2001:db8:1:2::/64".parse().unwrap();
        let a = p.object_address(0x1234_5678_9abc_def0);
        assert_eq!(a, "2001:db8:1:2:1234:5678:9abc:def0".parse::<Ipv6Addr>().unwrap());
        assert!(p.contains(a));
        assert!("2001:db8:1:2::1/64".parse::<Prefix64>().is_err());
        assert!("2001:db8:1:2::/48".parse::<Prefix64>().is_err());
        let j = serde_json::to_string(&p).unwrap();
        assert_eq!(j, "\"2001:db8:1:2::/64\"");
        assert_eq!(serde_json::from_str::<Prefix64>(&j).unwrap(), p);
    }

    #[test]
    fn ids_and_names_are_checked() {
        assert!(validate_node_id("node-1.a_b").is_ok());
        assert!(validate_node_id("").is_err());
        assert!(validate_node_id("a/b").is_err());
        assert!(validate_name("photos/cat.jpg").is_ok());
        assert!(validate_name("a\nb").is_err());
    }
}
