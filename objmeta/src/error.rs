//! Errors of the service and of its stores.

use thiserror::Error;

/// A failure of a [`crate::store::MetaStore`] backend.
#[derive(Debug, Error)]
pub enum StoreError {
    #[error("store i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("store file {path}: {msg}")]
    Corrupt { path: String, msg: String },
    #[error("etcd: {0}")]
    Etcd(String),
    #[error("store spec: {0}")]
    Spec(String),
    #[error("store unusable after a failed write that could not be undone: {0}")]
    Poisoned(String),
}

/// A failure of a service operation. Each variant maps to one HTTP status (see `server`).
#[derive(Debug, Error)]
pub enum MetaError {
    /// Bad input (400).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// No such node or object (404).
    #[error("not found: {0}")]
    NotFound(String),
    /// A create that clashes with an existing, different object or node (409).
    #[error("already exists: {0}")]
    AlreadyExists(String),
    /// The operation does not fit the record's current state or version (409).
    #[error("conflict: {0}")]
    Conflict(String),
    /// Placement found too few Up nodes with room (507).
    #[error("not enough nodes: {0}")]
    NotEnoughNodes(String),
    /// The store failed (500).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored record did not decode (500).
    #[error("corrupt record {key}: {msg}")]
    Decode { key: String, msg: String },
}
