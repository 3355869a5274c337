//! The HTTP API end to end: a server on a loopback port, driven through `MetaClient` (and raw
//! requests for the error paths); then the `objmeta` binary itself.

mod common;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use objmeta::client::MetaClient;
use objmeta::http;
use objmeta::model::{CreateRequest, IntentOp, NodeState, ObjectRef, ObjectState};
use objmeta::server;
use objmeta::store::EmbeddedStore;

const T: Duration = Duration::from_secs(5);

fn start(dir: &tempfile::TempDir) -> (server::ServerHandle, Arc<objmeta::clock::ManualClock>) {
    let (svc, clock) = common::service(Box::new(EmbeddedStore::open(dir.path().join("api.db")).unwrap()));
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    (server::spawn(l, Arc::new(svc)).unwrap(), clock)
}

#[test]
fn the_api_through_meta_client() {
    let dir = tempfile::tempdir().unwrap();
    let (srv, clock) = start(&dir);
    let c = MetaClient::new(format!("http://{}", srv.addr()));

    for i in 0..6 {
        let n = c.register(&common::reg(i, ["a", "b", "c"][i % 3], 1 << 40)).unwrap();
        assert_eq!(n.state, NodeState::Up);
    }
    assert_eq!(c.nodes().unwrap().len(), 6);
    assert_eq!(c.heartbeat("node-1", 77).unwrap().used_bytes, 77);
    assert_eq!(c.node("node-1").unwrap().used_bytes, 77);
    c.health().unwrap();
    c.register(&common::reg(9, "z", 1)).unwrap();
    assert!(c.deregister("node-9").unwrap());
    assert!(!c.deregister("node-9").unwrap());

    let name = "dir/a file?&=#.bin";
    let req = CreateRequest { name: Some(name.into()), size: 1 << 20, ..CreateRequest::default() };
    let m = c.create(&req).unwrap();
    assert_eq!(m.replicas.len(), 3);
    assert_eq!(c.create(&req).unwrap(), m, "idempotent over HTTP too");
    assert_eq!(c.lookup(&ObjectRef::Id(m.id)).unwrap(), m);
    assert_eq!(c.lookup(&ObjectRef::Name(name.into())).unwrap(), m);
    let i = c.intent(IntentOp::Retrieve, ObjectRef::Name(name.into()), None).unwrap();
    assert_eq!(i.object, m.id);
    assert_eq!(i.segments.len(), 3);
    let st = c.intent(IntentOp::Store, ObjectRef::Id(999), Some(10)).unwrap();
    assert_eq!(st.segments.len(), 3);
    assert_eq!(c.commit(m.id, 1).unwrap().state, ObjectState::Complete);

    for k in 0..4 {
        c.create(&CreateRequest { name: Some(format!("o{k}")), size: 1, ..CreateRequest::default() }).unwrap();
    }
    let p1 = c.list(None, 3).unwrap();
    assert_eq!(p1.objects.len(), 3);
    let p2 = c.list(p1.next, 3).unwrap();
    assert_eq!((p2.objects.len(), p2.next), (2, None));

    // Errors: kinds and statuses.
    let e = c.lookup(&ObjectRef::Id(424242)).unwrap_err();
    assert!(e.is_not_found(), "{e}");
    let e = c.create(&CreateRequest { size: 5, ..req.clone() }).unwrap_err();
    assert_eq!(e.kind(), Some("already_exists"), "{e}");
    let e = c.commit(m.id, 9).unwrap_err();
    assert_eq!(e.kind(), Some("conflict"));
    let e = c
        .create(&CreateRequest { id: Some(0x5000), size: 1, replicas: Some(9), ..CreateRequest::default() })
        .unwrap_err();
    assert!(matches!(&e, objmeta::client::ClientError::Api { status: 507, .. }), "{e}");
    let e = c.heartbeat("ghost", 1).unwrap_err();
    assert!(e.is_not_found());
    clock.advance_ms(common::DOWN_AFTER_MS + 1);
    assert!(c.nodes().unwrap().iter().all(|n| n.state == NodeState::Down));
    let e = c.create(&CreateRequest { name: Some("late".into()), size: 1, ..CreateRequest::default() }).unwrap_err();
    assert_eq!(e.kind(), Some("not_enough_nodes"));

    let addr = srv.addr().to_string();
    let raw = |method: &str, target: &str, body: Option<&[u8]>| {
        let (status, body) = http::call(&addr, method, target, body, T).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        (status, v)
    };
    let (s, v) = raw("POST", "/objects", Some(b"{not json"));
    assert_eq!((s, v["error"].as_str()), (400, Some("invalid")));
    assert!(v["message"].as_str().unwrap().contains("request body"));
    let huge = vec![b' '; http::MAX_REQUEST_BODY + 1];
    let (s, v) = raw("POST", "/objects", Some(&huge));
    assert_eq!((s, v["error"].as_str()), (400, Some("invalid")), "oversized body refused unread");
    let (s, v) = raw("PUT", "/objects", None);
    assert_eq!((s, v["error"].as_str()), (405, Some("method_not_allowed")));
    let (s, _) = raw("GET", "/nope", None);
    assert_eq!(s, 404);
    let (s, v) = raw("GET", "/objects/xyz", None);
    assert_eq!((s, v["error"].as_str()), (400, Some("invalid")));
    let (s, v) = raw("GET", &format!("/objects/{:#x}", m.id), None);
    assert_eq!((s, v["id"].as_u64()), (200, Some(m.id)), "hex ids accepted");
    let (s, v) = raw("POST", "/intent", Some(br#"{"op":"retrieve","object":{"id":1234567}}"#));
    assert_eq!((s, v["error"].as_str()), (404, Some("not_found")));

    // Delete over HTTP.
    let d = c.delete(m.id).unwrap().unwrap();
    assert_eq!(d.state, ObjectState::Deleting);
    assert_eq!(c.delete(m.id).unwrap(), None);
    assert!(c.lookup(&ObjectRef::Name(name.into())).unwrap_err().is_not_found());

    // What all this looks like on GET /metrics (the Prometheus text format).
    let text = metrics_text(&addr);
    if let Err(p) = promtext::lint(&text) {
        panic!("{}\n{text}", p.join("\n"));
    }
    for line in [
        "objmeta_http_requests_total{method=\"POST\",route=\"/nodes\",status=\"200\"} 7",
        "objmeta_http_requests_total{method=\"PUT\",route=\"/objects\",status=\"405\"} 1",
        "objmeta_http_requests_total{method=\"POST\",route=\"/objects\",status=\"400\"} 1",
        // The oversized body: refused before its method was read.
        "objmeta_http_requests_total{method=\"other\",route=\"other\",status=\"400\"} 1",
        "objmeta_http_requests_total{method=\"GET\",route=\"other\",status=\"404\"} 1",
        "objmeta_http_request_duration_seconds_count{route=\"/nodes/{id}/heartbeat\"} 2",
        "objmeta_intents_total{op=\"retrieve\",result=\"ok\"} 1",
        "objmeta_intents_total{op=\"retrieve\",result=\"not_found\"} 1",
        "objmeta_intents_total{op=\"store\",result=\"ok\"} 1",
        "objmeta_nodes{state=\"down\"} 6",
        "objmeta_nodes{state=\"up\"} 0",
        "objmeta_objects{state=\"creating\"} 4",
        "objmeta_objects{state=\"complete\"} 0",
        "objmeta_node_used_bytes{node=\"node-1\"} 77",
        "objmeta_store_errors_total{op=\"put\"} 0",
        "objmeta_store_readable 1",
    ] {
        assert!(text.contains(&format!("\n{line}\n")), "{line}:\n{text}");
    }
    srv.shutdown();
}

/// GET /metrics with a raw request: checks the Content-Type, returns the body.
fn metrics_text(addr: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    assert!(head.contains("\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"), "{head}");
    body.to_string()
}

#[test]
fn keep_alive_connections_serve_several_requests() {
    use std::io::{BufRead, BufReader, Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let (srv, _) = start(&dir);
    let s = std::net::TcpStream::connect(srv.addr()).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    let mut r = BufReader::new(&s);
    for _ in 0..3 {
        (&s).write_all(b"GET /nodes HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        assert!(line.starts_with("HTTP/1.1 200"), "{line}");
        let mut len = 0;
        loop {
            let mut h = String::new();
            r.read_line(&mut h).unwrap();
            if h.trim().is_empty() {
                break;
            }
            if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().unwrap();
            }
        }
        let mut body = vec![0; len];
        r.read_exact(&mut body).unwrap();
        assert_eq!(body, b"[]");
    }
}

/// Kills the child (by its PID) when dropped, whatever happened in the test.
struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn the_binary_serves_and_its_subcommands_talk_to_it() {
    let dir = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_objmeta");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let store = format!("embedded:{}", dir.path().join("bin.db").display());
    let _srv = Kill(
        Command::new(bin)
            .args(["serve", "--listen", &listen, "--store", &store])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let c = MetaClient::new(listen.clone());
    let t0 = Instant::now();
    while c.nodes().is_err() {
        assert!(t0.elapsed() < Duration::from_secs(10), "objmeta serve did not come up");
        std::thread::sleep(Duration::from_millis(20));
    }
    let run = |args: &[&str]| {
        let out = Command::new(bin).arg("--server").arg(&listen).args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    for i in 1..=3 {
        let v = run(&[
            "node-add",
            &format!("n{i}"),
            "--prefix",
            &format!("2001:db8:{i}::/64"),
            "--sid",
            &format!("fc00::{i}"),
            "--capacity",
            "1000000",
            "--domain",
            &format!("d{i}"),
        ]);
        assert_eq!(v["state"], "up");
    }
    let v = run(&["create", "--name", "hello", "--size", "5"]);
    let id = v["id"].as_u64().unwrap();
    assert_eq!(v["replicas"].as_array().unwrap().len(), 3);
    assert_eq!(run(&["lookup", "hello"])["id"].as_u64(), Some(id));
    assert_eq!(run(&["commit", &id.to_string()])["state"], "complete");
    assert_eq!(run(&["intent", "retrieve", "hello"])["segments"].as_array().unwrap().len(), 3);
    assert_eq!(run(&["ls"])["objects"].as_array().unwrap().len(), 1);
    assert_eq!(run(&["rm", &id.to_string()])["id"].as_u64(), Some(id));
    let out = Command::new(bin).args(["--server", &listen, "lookup", "hello"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not_found"));
}

fn serve(bin: &str, listen: &str, store: &str) -> Kill {
    let k = Kill(
        Command::new(bin)
            .args(["serve", "--listen", listen, "--store", store])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let c = MetaClient::new(listen);
    let t0 = Instant::now();
    while c.health().is_err() {
        assert!(t0.elapsed() < Duration::from_secs(10), "objmeta serve did not come up");
        std::thread::sleep(Duration::from_millis(20));
    }
    k
}

#[test]
fn kill_9_during_a_stream_of_creates_loses_no_acknowledged_one() {
    let dir = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_objmeta");
    let listen = format!("127.0.0.1:{}", free_port());
    let store = format!("embedded:{}", dir.path().join("k9.db").display());
    let mut srv = serve(bin, &listen, &store);
    let c = MetaClient::new(listen.clone()).with_timeout(Duration::from_secs(2));
    for i in 0..4 {
        c.register(&common::reg(i, &format!("d{i}"), 1 << 40)).unwrap();
    }
    // Four writers create and commit objects until the server dies under them.
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let c = c.clone();
            std::thread::spawn(move || {
                let mut acked = Vec::new();
                for i in 0.. {
                    let req = CreateRequest { name: Some(format!("w{w}-{i}")), size: i, ..CreateRequest::default() };
                    let Ok(m) = c.create(&req) else { break };
                    acked.push(m.clone());
                    match c.commit(m.id, 1) {
                        Ok(done) => *acked.last_mut().unwrap() = done,
                        Err(_) => break,
                    }
                }
                acked
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(400));
    // SIGKILL (Child::kill) to the server's PID: no chance to flush anything.
    srv.0.kill().unwrap();
    let _ = srv.0.wait();
    let acked: Vec<_> = writers.into_iter().flat_map(|h| h.join().unwrap()).collect();
    assert!(acked.len() > 10, "only {} creates before the kill", acked.len());
    let _srv = serve(bin, &listen, &store);
    for m in &acked {
        let got = c.lookup(&ObjectRef::Name(m.name.clone().unwrap())).unwrap();
        // A commit whose answer was lost may have happened: Complete is allowed then.
        if m.state == ObjectState::Complete {
            assert_eq!(&got, m);
        } else {
            assert_eq!((got.id, got.size, &got.replicas), (m.id, m.size, &m.replicas));
        }
    }
}
