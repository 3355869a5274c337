//! Image manifests and start traces through the HTTP API (`MetaClient` against a server on a
//! loopback port over an embedded store): store, replace, list, traces kept per digest and
//! capped, clear errors for bad input, removal; and the manifest survives a restart.

use std::net::TcpListener;
use std::sync::Arc;

use objmeta::client::MetaClient;
use objmeta::image::{ChunkRef, ImageManifest, Trace, TraceEntry, TRACES_KEPT};
use objmeta::server;
use objmeta::store::EmbeddedStore;
use objmeta::{MetadataService, ServiceConfig};

fn start(db: &std::path::Path) -> server::ServerHandle {
    let svc = MetadataService::new(Box::new(EmbeddedStore::open(db).unwrap()), ServiceConfig::default());
    server::spawn(TcpListener::bind("127.0.0.1:0").unwrap(), Arc::new(svc)).unwrap()
}

fn manifest(name: &str, seed: u8, chunks: usize) -> ImageManifest {
    ImageManifest {
        name: name.into(),
        format: "erofs".into(),
        chunk_size: 65536,
        size: chunks as u64 * 65536 - 100,
        digest: format!("{seed:064x}"),
        chunks: (0..chunks)
            .map(|i| ChunkRef {
                digest: format!("{:064x}", i + 1000),
                object: i as u64 + 1,
                replicas: vec!["n1".into(), "n2".into()],
            })
            .collect(),
        created: 1,
    }
}

fn trace(m: &ImageManifest, host: &str, started_ms: u64, chunks: &[u32]) -> Trace {
    Trace {
        image_digest: m.digest.clone(),
        host: host.into(),
        started_ms,
        entries: chunks.iter().enumerate().map(|(i, &chunk)| TraceEntry { chunk, at_us: i as u64 * 10 }).collect(),
    }
}

#[test]
fn manifests_and_traces() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("m.db");
    let srv = start(&db);
    let c = MetaClient::new(format!("http://{}", srv.addr()));

    let m1 = manifest("debian", 1, 40);
    c.put_image(&m1).unwrap();
    assert_eq!(c.image("debian").unwrap(), m1);
    c.put_image(&manifest("alpha", 2, 3)).unwrap();
    assert_eq!(c.images().unwrap(), vec!["alpha".to_string(), "debian".to_string()]);
    assert!(c.image("nope").unwrap_err().is_not_found());

    // Bad manifests are refused with a reason.
    let mut bad = manifest("bad", 3, 4);
    bad.chunks.pop();
    let e = c.put_image(&bad).unwrap_err();
    assert_eq!(e.kind(), Some("invalid"), "{e}");
    assert!(e.to_string().contains("chunks listed"), "{e}");
    assert_eq!(c.image("a.b/c").unwrap_err().kind(), Some("invalid"), "a name with a slash is refused");

    // Traces: kept per digest, oldest dropped beyond the cap.
    for i in 0..(TRACES_KEPT as u64 + 5) {
        let kept = c.add_trace("debian", &trace(&m1, &format!("h{i}"), 1000 + i, &[0, 5, 2])).unwrap();
        assert_eq!(kept, (i as usize + 1).min(TRACES_KEPT));
    }
    let ts = c.traces("debian").unwrap();
    assert_eq!(ts.len(), TRACES_KEPT);
    assert_eq!(ts[0].started_ms, 1005, "the five oldest were dropped");
    assert_eq!(ts[0].entries[1], TraceEntry { chunk: 5, at_us: 10 });
    let e = c.add_trace("debian", &trace(&m1, "h", 1, &[0, 0])).unwrap_err();
    assert_eq!(e.kind(), Some("invalid"), "{e}");
    let e = c.add_trace("debian", &trace(&m1, "h", 1, &[40])).unwrap_err();
    assert!(e.to_string().contains("outside"), "{e}");
    let e = c.add_trace("nope", &trace(&m1, "h", 1, &[1])).unwrap_err();
    assert!(e.is_not_found());

    // A new image under the name: the old digest's traces are not served for it.
    let m2 = manifest("debian", 7, 40);
    c.put_image(&m2).unwrap();
    assert!(c.traces("debian").unwrap().is_empty());
    let e = c.add_trace("debian", &trace(&m1, "h", 1, &[1])).unwrap_err();
    assert_eq!(e.kind(), Some("conflict"), "{e}");
    c.add_trace("debian", &trace(&m2, "h", 1, &[1])).unwrap();

    // Survives a restart of the service on the same file.
    drop(srv);
    let srv = start(&db);
    let c = MetaClient::new(format!("http://{}", srv.addr()));
    assert_eq!(c.image("debian").unwrap(), m2);
    assert_eq!(c.traces("debian").unwrap().len(), 1);

    assert!(c.delete_image("debian").unwrap());
    assert!(!c.delete_image("debian").unwrap());
    assert!(c.image("debian").unwrap_err().is_not_found());
    assert_eq!(c.images().unwrap(), vec!["alpha".to_string()]);
}
