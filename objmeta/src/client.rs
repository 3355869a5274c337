//! [`MetaClient`]: a typed, blocking client for the HTTP API of [`crate::server`], for the
//! object-store CLI and for tests. One request per connection; every method maps the API's
//! JSON error (`{"error", "message"}`) to [`ClientError::Api`].

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use thiserror::Error;

use crate::http;
use crate::image::{ImageManifest, Trace};
use crate::model::{
    CreateRequest, Intent, IntentOp, IntentRequest, Node, NodeRegistration, ObjectMeta, ObjectPage, ObjectRef,
};
use crate::server::{CommitBody, DeleteAnswer, HeartbeatBody};

/// A failed call.
#[derive(Debug, Error)]
pub enum ClientError {
    /// The service answered with an error.
    #[error("{status} {kind}: {message}")]
    Api {
        status: u16,
        /// `invalid`, `not_found`, `already_exists`, `conflict`, `not_enough_nodes`, ...
        kind: String,
        message: String,
    },
    /// The service could not be reached or the connection failed.
    #[error("objmeta at {addr}: {source}")]
    Io { addr: String, source: std::io::Error },
    /// The answer was not what the API promises.
    #[error("objmeta at {addr}: bad answer: {msg}")]
    Decode { addr: String, msg: String },
}

impl ClientError {
    /// The API error kind, if the service answered with one.
    pub fn kind(&self) -> Option<&str> {
        match self {
            ClientError::Api { kind, .. } => Some(kind),
            _ => None,
        }
    }

    pub fn is_not_found(&self) -> bool {
        self.kind() == Some("not_found")
    }
}

/// A client of one metadata service.
#[derive(Debug, Clone)]
pub struct MetaClient {
    addr: String,
    timeout: Duration,
}

impl MetaClient {
    /// `addr` is `host:port` (an `http://` prefix is accepted).
    pub fn new(addr: impl Into<String>) -> Self {
        let addr: String = addr.into();
        let addr = addr.strip_prefix("http://").unwrap_or(&addr).trim_end_matches('/').to_string();
        Self { addr, timeout: Duration::from_secs(10) }
    }

    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    fn call<T: DeserializeOwned>(
        &self,
        method: &str,
        target: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T, ClientError> {
        let body = body.map(|b| serde_json::to_vec(b).expect("request types serialise"));
        let (status, resp) = http::call(&self.addr, method, target, body.as_deref(), self.timeout)
            .map_err(|source| ClientError::Io { addr: self.addr.clone(), source })?;
        let decode = |msg: String| ClientError::Decode { addr: self.addr.clone(), msg };
        if status != 200 {
            let v: serde_json::Value = serde_json::from_slice(&resp)
                .map_err(|e| decode(format!("{status} with a body that is not JSON: {e}")))?;
            return Err(ClientError::Api {
                status,
                kind: v["error"].as_str().unwrap_or("unknown").to_string(),
                message: v["message"].as_str().unwrap_or("").to_string(),
            });
        }
        serde_json::from_slice(&resp).map_err(|e| decode(e.to_string()))
    }

    pub fn register(&self, reg: &NodeRegistration) -> Result<Node, ClientError> {
        self.call("POST", "/nodes", Some(reg))
    }

    pub fn heartbeat(&self, node: &str, used_bytes: u64) -> Result<Node, ClientError> {
        let target = format!("/nodes/{}/heartbeat", http::percent_encode(node));
        self.call("POST", &target, Some(&HeartbeatBody { used_bytes }))
    }

    pub fn node(&self, node: &str) -> Result<Node, ClientError> {
        self.call("GET", &format!("/nodes/{}", http::percent_encode(node)), None::<&()>)
    }

    /// Removes a node from membership; `Ok(false)` when it was not known.
    pub fn deregister(&self, node: &str) -> Result<bool, ClientError> {
        let v: serde_json::Value =
            self.call("DELETE", &format!("/nodes/{}", http::percent_encode(node)), None::<&()>)?;
        Ok(v["deleted"].as_bool().unwrap_or(false))
    }

    /// Whether the service and its store answer.
    pub fn health(&self) -> Result<(), ClientError> {
        self.call::<serde_json::Value>("GET", "/health", None::<&()>)?;
        Ok(())
    }

    pub fn nodes(&self) -> Result<Vec<Node>, ClientError> {
        self.call("GET", "/nodes", None::<&()>)
    }

    pub fn create(&self, req: &CreateRequest) -> Result<ObjectMeta, ClientError> {
        self.call("POST", "/objects", Some(req))
    }

    pub fn commit(&self, id: u64, version: u64) -> Result<ObjectMeta, ClientError> {
        self.call("POST", &format!("/objects/{id}/commit"), Some(&CommitBody { version }))
    }

    pub fn lookup(&self, obj: &ObjectRef) -> Result<ObjectMeta, ClientError> {
        let target = match obj {
            ObjectRef::Id(id) => format!("/objects/{id}"),
            ObjectRef::Name(n) => format!("/objects?name={}", http::percent_encode(n)),
        };
        self.call("GET", &target, None::<&()>)
    }

    /// Deletes; `Ok(None)` when there was no such object.
    pub fn delete(&self, id: u64) -> Result<Option<ObjectMeta>, ClientError> {
        let a: DeleteAnswer = self.call("DELETE", &format!("/objects/{id}"), None::<&()>)?;
        Ok(a.object)
    }

    pub fn list(&self, after: Option<u64>, limit: usize) -> Result<ObjectPage, ClientError> {
        let mut target = format!("/objects?limit={limit}");
        if let Some(a) = after {
            target.push_str(&format!("&after={a}"));
        }
        self.call("GET", &target, None::<&()>)
    }

    pub fn intent(&self, op: IntentOp, object: ObjectRef, size: Option<u64>) -> Result<Intent, ClientError> {
        self.call("POST", "/intent", Some(&IntentRequest { op, object, size }))
    }

    /// Stores (or replaces) an image manifest (`PUT /images/{name}`).
    pub fn put_image(&self, m: &ImageManifest) -> Result<ImageManifest, ClientError> {
        self.call("PUT", &format!("/images/{}", http::percent_encode(&m.name)), Some(m))
    }

    pub fn image(&self, name: &str) -> Result<ImageManifest, ClientError> {
        self.call("GET", &format!("/images/{}", http::percent_encode(name)), None::<&()>)
    }

    /// Every image name.
    pub fn images(&self) -> Result<Vec<String>, ClientError> {
        self.call("GET", "/images", None::<&()>)
    }

    /// Removes an image's manifest and traces; `Ok(false)` when it was not known.
    pub fn delete_image(&self, name: &str) -> Result<bool, ClientError> {
        let v: serde_json::Value =
            self.call("DELETE", &format!("/images/{}", http::percent_encode(name)), None::<&()>)?;
        Ok(v["deleted"].as_bool().unwrap_or(false))
    }

    /// Adds a start trace; returns how many traces the image now keeps.
    pub fn add_trace(&self, name: &str, t: &Trace) -> Result<usize, ClientError> {
        let v: serde_json::Value =
            self.call("POST", &format!("/images/{}/traces", http::percent_encode(name)), Some(t))?;
        Ok(v["kept"].as_u64().unwrap_or(0) as usize)
    }

    /// The kept traces of the image's current digest, oldest first.
    pub fn traces(&self, name: &str) -> Result<Vec<Trace>, ClientError> {
        self.call("GET", &format!("/images/{}/traces", http::percent_encode(name)), None::<&()>)
    }
}
