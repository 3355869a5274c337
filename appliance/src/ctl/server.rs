//! The control socket: a Unix stream socket (`control.socket`, mode 0600)
//! where `aplctl` and any program send commands.
//!
//! Protocol: one JSON object per line each way.
//! * request: `{"command": "show interfaces"}`
//! * reply: `{"ok": true, "text": "...", "data": ...}` or
//!   `{"ok": false, "error": "..."}`
//!
//! A connection may carry any number of requests (the interactive CLI keeps
//! one open). Each connection has its own thread; at most
//! [`CONNECTIONS_MAX`] at once (more are told so and closed). The socket
//! file is removed at shutdown.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::Api;

/// Connections served at once.
pub const CONNECTIONS_MAX: usize = 8;
/// Longest request line accepted.
const LINE_MAX: usize = 64 << 10;

/// The running server; stops (and removes the socket file) on drop.
pub struct Server {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    /// Listens on `path` (a stale socket file from a dead process is
    /// replaced; a live one is an error).
    /// `reload`: set by SIGHUP; the server runs `reload` when it is.
    pub fn start(path: &Path, api: Arc<Api>, reload: Option<Arc<AtomicBool>>) -> std::io::Result<Server> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        if path.exists() {
            if UnixStream::connect(path).is_ok() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    format!("{} is in use by a running appliance", path.display()),
                ));
            }
            std::fs::remove_file(path)?;
        }
        let listener = UnixListener::bind(path)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread =
            std::thread::Builder::new().name("ctl".into()).spawn(move || accept_loop(listener, api, &s, reload))?;
        Ok(Server { path: path.to_path_buf(), stop, thread: Some(thread) })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

fn accept_loop(listener: UnixListener, api: Arc<Api>, stop: &Arc<AtomicBool>, reload: Option<Arc<AtomicBool>>) {
    let open = Arc::new(AtomicUsize::new(0));
    while !stop.load(Ordering::Relaxed) {
        if reload.as_ref().is_some_and(|r| r.swap(false, Ordering::SeqCst)) {
            match api.call("reload") {
                Ok(r) => tracing::info!(result = %r.text.trim_end(), "SIGHUP: config reloaded"),
                Err(e) => tracing::warn!(error = %e, "SIGHUP: config not reloaded"),
            }
        }
        match listener.accept() {
            Ok((mut stream, _)) => {
                if open.load(Ordering::Relaxed) >= CONNECTIONS_MAX {
                    let _ = writeln!(stream, "{}", json!({"ok": false, "error": "too many control connections"}));
                    continue;
                }
                open.fetch_add(1, Ordering::Relaxed);
                let (api, open, stop) = (api.clone(), open.clone(), stop.clone());
                let spawned = std::thread::Builder::new().name("ctl-conn".into()).spawn(move || {
                    if let Err(e) = serve(stream, &api, &stop) {
                        tracing::debug!(error = %e, "control connection ended");
                    }
                    open.fetch_sub(1, Ordering::Relaxed);
                });
                if spawned.is_err() {
                    tracing::warn!("cannot start a control connection thread");
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => {
                tracing::warn!(error = %e, "control socket accept failed");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// Answers the requests of one connection until it closes.
fn serve(stream: UnixStream, api: &Api, stop: &AtomicBool) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_millis(500)))?;
    let mut out = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    while !stop.load(Ordering::Relaxed) {
        match reader.read_line(&mut line) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                if line.len() > LINE_MAX {
                    return Ok(());
                }
                continue;
            }
            Err(e) => return Err(e),
        }
        let reply = answer(api, &line);
        line.clear();
        writeln!(out, "{reply}")?;
    }
    Ok(())
}

/// The reply line to one request line.
pub fn answer(api: &Api, request: &str) -> Value {
    let command = match serde_json::from_str::<Value>(request) {
        Ok(v) => match v.get("command").and_then(Value::as_str) {
            Some(c) => c.to_string(),
            None => return json!({"ok": false, "error": "a request is {\"command\": \"...\"}"}),
        },
        Err(e) => return json!({"ok": false, "error": format!("not JSON: {e}")}),
    };
    match api.call(&command) {
        Ok(r) => json!({"ok": true, "text": r.text, "data": r.data}),
        Err(e) => json!({"ok": false, "error": e}),
    }
}
