//! The HTTP/1.1 + JSON API over a [`MetadataService`] (reference: `docs/objmeta.md`).
//!
//! One thread per connection (at most [`MAX_CONNECTIONS`] at once; more get `503`), keep-alive
//! honoured, each request answered with a JSON body. Errors are
//! `{"error": "<kind>", "message": "<text>"}` with the status of their kind:
//! `invalid` 400, `not_found` 404, `already_exists` and `conflict` 409,
//! `not_enough_nodes` 507, `store` and `corrupt` 500, `method_not_allowed` 405.
//!
//! `GET /metrics` answers the Prometheus text format instead ([`crate::metrics`]); every
//! request is counted there (method, route template, status, time to answer).
//!
//! Limits: no authentication, no TLS; meant for a trusted management network.

use std::io::{BufReader, BufWriter};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::error::MetaError;
use crate::http::{self, Request};
use crate::image::{ImageManifest, Trace};
use crate::model::{CreateRequest, IntentRequest, NodeRegistration, ObjectRef};
use crate::service::MetadataService;

/// Most connections served at once.
pub const MAX_CONNECTIONS: usize = 256;
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Body of `POST /nodes/{id}/heartbeat`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HeartbeatBody {
    pub used_bytes: u64,
}

/// Body of `POST /objects/{id}/commit`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CommitBody {
    pub version: u64,
}

/// Answer of `DELETE /objects/{id}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeleteAnswer {
    /// Whether there was such an object.
    pub deleted: bool,
    /// Its metadata as marked Deleting (replica addresses of the data to remove).
    pub object: Option<crate::model::ObjectMeta>,
}

/// The error kind and status of a [`MetaError`].
pub fn error_kind(e: &MetaError) -> (u16, &'static str) {
    match e {
        MetaError::Invalid(_) => (400, "invalid"),
        MetaError::NotFound(_) => (404, "not_found"),
        MetaError::AlreadyExists(_) => (409, "already_exists"),
        MetaError::Conflict(_) => (409, "conflict"),
        MetaError::NotEnoughNodes(_) => (507, "not_enough_nodes"),
        MetaError::Store(_) => (500, "store"),
        MetaError::Decode { .. } => (500, "corrupt"),
    }
}

fn error_body(status: u16, kind: &str, message: &str) -> (u16, Vec<u8>) {
    (status, serde_json::to_vec(&json!({ "error": kind, "message": message })).expect("JSON"))
}

fn reply<T: Serialize>(r: Result<T, MetaError>) -> (u16, Vec<u8>) {
    match r {
        Ok(v) => (200, serde_json::to_vec(&v).expect("model types serialise")),
        Err(e) => {
            let (status, kind) = error_kind(&e);
            error_body(status, kind, &e.to_string())
        }
    }
}

fn body<T: for<'de> Deserialize<'de>>(req: &Request) -> Result<T, MetaError> {
    serde_json::from_slice(&req.body).map_err(|e| MetaError::Invalid(format!("request body: {e}")))
}

fn parse_id(s: &str) -> Result<u64, MetaError> {
    let r = match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16),
        None => s.parse(),
    };
    r.map_err(|_| MetaError::Invalid(format!("object id {s:?}: expected decimal or 0x-hex")))
}

/// Answers one request: (status, JSON body).
pub fn handle(svc: &MetadataService, req: &Request) -> (u16, Vec<u8>) {
    let path = req.path().trim_end_matches('/');
    let segs: Vec<String> = path.split('/').skip(1).map(http::percent_decode).collect();
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    let q = req.query();
    let param = |name: &str| q.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    match (req.method.as_str(), segs.as_slice()) {
        ("POST", ["nodes"]) => reply(body::<NodeRegistration>(req).and_then(|r| svc.register(r))),
        ("GET", ["nodes"]) => reply(svc.nodes()),
        ("GET", ["nodes", id]) => reply(svc.node(id)),
        ("DELETE", ["nodes", id]) => reply(svc.deregister(id).map(|d| json!({ "deleted": d }))),
        ("GET", ["health"]) => reply(svc.check().map(|()| json!({ "status": "ok" }))),
        ("POST", ["nodes", id, "heartbeat"]) => {
            reply(body::<HeartbeatBody>(req).and_then(|b| svc.heartbeat(id, b.used_bytes)))
        }
        ("POST", ["objects"]) => reply(body::<CreateRequest>(req).and_then(|r| svc.create(r))),
        ("GET", ["objects"]) => {
            if let Some(name) = param("name") {
                return reply(svc.lookup(&ObjectRef::Name(name.to_string())));
            }
            let after = match param("after").filter(|s| !s.is_empty()).map(parse_id) {
                Some(Err(e)) => return reply::<()>(Err(e)),
                Some(Ok(a)) => Some(a),
                None => None,
            };
            let limit = match param("limit").filter(|s| !s.is_empty()).map(str::parse::<usize>) {
                Some(Err(_)) => return reply::<()>(Err(MetaError::Invalid("limit: expected a number".into()))),
                Some(Ok(l)) => l,
                None => 0,
            };
            reply(svc.list(after, limit))
        }
        ("GET", ["objects", id]) => reply(parse_id(id).and_then(|id| svc.lookup(&ObjectRef::Id(id)))),
        ("DELETE", ["objects", id]) => {
            reply(parse_id(id).and_then(|id| svc.delete(id)).map(|m| DeleteAnswer { deleted: m.is_some(), object: m }))
        }
        ("POST", ["objects", id, "commit"]) => {
            reply(parse_id(id).and_then(|id| body::<CommitBody>(req).and_then(|b| svc.commit(id, b.version))))
        }
        ("POST", ["intent"]) => reply(body::<IntentRequest>(req).and_then(|r| svc.intent(&r))),
        ("GET", ["images"]) => reply(svc.images()),
        ("PUT", ["images", name]) => reply(body::<ImageManifest>(req).and_then(|m| {
            if m.name != *name {
                return Err(MetaError::Invalid(format!("manifest names {:?}, the path {name:?}", m.name)));
            }
            svc.put_image(m)
        })),
        ("GET", ["images", name]) => reply(svc.image(name)),
        ("DELETE", ["images", name]) => reply(svc.delete_image(name).map(|m| json!({ "deleted": m.is_some() }))),
        ("POST", ["images", name, "traces"]) => {
            reply(body::<Trace>(req).and_then(|t| svc.add_trace(name, t)).map(|kept| json!({ "kept": kept })))
        }
        ("GET", ["images", name, "traces"]) => reply(svc.traces(name)),
        (
            _,
            ["nodes"]
            | ["nodes", _]
            | ["nodes", _, "heartbeat"]
            | ["objects"]
            | ["objects", _]
            | ["objects", _, "commit"]
            | ["intent"]
            | ["images"]
            | ["images", _]
            | ["images", _, "traces"]
            | ["metrics"],
        ) => error_body(405, "method_not_allowed", &format!("{} is not allowed on {path}", req.method)),
        _ => error_body(404, "not_found", &format!("no route {} {path}", req.method)),
    }
}

fn serve_connection(svc: &MetadataService, stream: TcpStream) {
    let _ = stream.set_read_timeout(Some(IDLE_TIMEOUT));
    let _ = stream.set_nodelay(true);
    let mut r = BufReader::new(&stream);
    let mut w = BufWriter::new(&stream);
    loop {
        match http::read_request(&mut r) {
            Ok(Some(req)) => {
                let started = Instant::now();
                let (status, content_type, body) = if req.method == "GET" && req.path() == "/metrics" {
                    (200, promtext::CONTENT_TYPE, svc.metrics_text().into_bytes())
                } else {
                    let (status, body) = handle(svc, &req);
                    (status, "application/json", body)
                };
                svc.metrics().request(&req.method, req.path(), status, started.elapsed());
                let keep = req.keep_alive();
                if http::write_typed_response(&mut w, status, content_type, &body, keep).is_err() || !keep {
                    return;
                }
            }
            Ok(None) => return,
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                let (status, body) = error_body(400, "invalid", &e.to_string());
                svc.metrics().request("", "", status, Duration::ZERO);
                let _ = http::write_response(&mut w, status, &body, false);
                // Closing with unread input would reset the connection and the client might
                // lose the answer: half-close, then discard what is still coming (bounded).
                let _ = stream.shutdown(std::net::Shutdown::Write);
                let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
                let _ = std::io::copy(
                    &mut std::io::Read::take(&mut r, 4 * http::MAX_REQUEST_BODY as u64),
                    &mut std::io::sink(),
                );
                return;
            }
            Err(_) => return,
        }
    }
}

/// A running server (see [`spawn`]).
pub struct ServerHandle {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ServerHandle {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting and waits for the accept loop (open connections finish on their own).
    pub fn shutdown(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr); // wakes the blocking accept
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.stop_now();
    }
}

/// Serves `listener` until the process ends (the binary's main loop).
pub fn run(listener: TcpListener, svc: Arc<MetadataService>) {
    accept_loop(listener, svc, Arc::new(AtomicBool::new(false)));
}

/// Serves `listener` on a background thread.
pub fn spawn(listener: TcpListener, svc: Arc<MetadataService>) -> std::io::Result<ServerHandle> {
    let addr = listener.local_addr()?;
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let thread = thread::Builder::new().name("objmeta-accept".into()).spawn(move || accept_loop(listener, svc, s))?;
    Ok(ServerHandle { addr, stop, thread: Some(thread) })
}

fn accept_loop(listener: TcpListener, svc: Arc<MetadataService>, stop: Arc<AtomicBool>) {
    let active = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = stream else {
            // EMFILE and the like: back off instead of spinning.
            thread::sleep(Duration::from_millis(10));
            continue;
        };
        if active.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
            active.fetch_sub(1, Ordering::SeqCst);
            let (status, body) = error_body(503, "busy", "too many connections");
            svc.metrics().request("", "", status, Duration::ZERO);
            let _ = http::write_response(&mut &stream, status, &body, false);
            continue;
        }
        let svc = svc.clone();
        let active2 = active.clone();
        let spawned = thread::Builder::new().name("objmeta-conn".into()).spawn(move || {
            serve_connection(&svc, stream);
            active2.fetch_sub(1, Ordering::SeqCst);
        });
        if spawned.is_err() {
            active.fetch_sub(1, Ordering::SeqCst);
        }
    }
}
