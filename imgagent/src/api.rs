//! The agent's HTTP API (HTTP/1.1, JSON; `/metrics` is Prometheus text), one thread per
//! connection. Routes:
//!
//! | request | body | answer |
//! |---|---|---|
//! | `POST /images/{name}/mount` | `{"pull": bool, "prefetch": bool}` | `{"lower", "image", "digest", "size", "chunks", "predicted", "refs", "pulled", "mount_s"}` |
//! | `POST /images/{name}/ready` | | `{"ok": true}` |
//! | `POST /images/{name}/unmount` | | `{"refs"}` |
//! | `POST /images/{name}/pull` | | `{"fetched", "present", "seconds"}` |
//! | `POST /gc` | `{"max_idle_s": N}` | `{"images_removed", "chunks_removed"}` |
//! | `GET /status` | | images, cache use, last error |
//! | `GET /metrics` | | Prometheus text format |
//!
//! Errors: `{"error": STATUS, "message": TEXT}` with the status (400 bad name, 404 unknown
//! image, 409 state conflict, 502 the object store failed, 503 the metadata service is
//! unreachable and no manifest is kept).

use std::io::{BufReader, BufWriter, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use objmeta::http;
use serde_json::{json, Value};

use crate::agent::{Agent, ApiError};

fn respond(agent: &Arc<Agent>, req: &http::Request) -> (u16, Vec<u8>, &'static str) {
    let path = req.path().to_string();
    let segs: Vec<&str> = path.trim_matches('/').split('/').filter(|s| !s.is_empty()).collect();
    let body: Value = if req.body.is_empty() {
        json!({})
    } else {
        match serde_json::from_slice(&req.body) {
            Ok(v) => v,
            Err(e) => {
                return (
                    400,
                    json!({"error": 400, "message": format!("body: {e}")}).to_string().into_bytes(),
                    "application/json",
                )
            }
        }
    };
    let r: Result<Value, ApiError> = match (req.method.as_str(), segs.as_slice()) {
        ("GET", ["metrics"]) => return (200, agent.metrics.render().into_bytes(), "text/plain; version=0.0.4"),
        ("GET", ["status"]) => Ok(agent.status()),
        ("POST", ["images", name, "mount"]) => agent.mount(&http::percent_decode(name), &body),
        ("POST", ["images", name, "ready"]) => agent.ready(&http::percent_decode(name)),
        ("POST", ["images", name, "unmount"]) => agent.unmount(&http::percent_decode(name)),
        ("POST", ["images", name, "pull"]) => agent.pull(&http::percent_decode(name)),
        ("POST", ["gc"]) => agent.gc(Duration::from_secs(body["max_idle_s"].as_u64().unwrap_or(0))),
        _ => Err(ApiError(404, format!("no route {} {path}", req.method))),
    };
    match r {
        Ok(v) => (200, v.to_string().into_bytes(), "application/json"),
        Err(ApiError(st, msg)) => {
            (st, json!({"error": st, "message": msg}).to_string().into_bytes(), "application/json")
        }
    }
}

fn serve(agent: Arc<Agent>, stream: TcpStream) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(60)));
    let mut r = BufReader::new(&stream);
    let mut w = BufWriter::new(&stream);
    while let Ok(Some(req)) = http::read_request(&mut r) {
        let (status, body, ctype) = respond(&agent, &req);
        let keep = req.keep_alive();
        let head = format!(
            "HTTP/1.1 {status} {}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: {}\r\n\r\n",
            http::reason(status),
            body.len(),
            if keep { "keep-alive" } else { "close" }
        );
        if w.write_all(head.as_bytes()).and_then(|()| w.write_all(&body)).and_then(|()| w.flush()).is_err() || !keep {
            return;
        }
    }
}

/// Serves `listener` on background threads.
pub fn spawn(listener: TcpListener, agent: Arc<Agent>) -> std::io::Result<()> {
    std::thread::Builder::new().name("api".into()).spawn(move || {
        for s in listener.incoming().flatten() {
            let a = agent.clone();
            let _ = std::thread::Builder::new().name("api-conn".into()).spawn(move || serve(a, s));
        }
    })?;
    Ok(())
}
