//! The etcd backend against a real etcd (Debian's `etcd-server`): the test starts `etcd` on
//! loopback with free client and peer ports and a temporary data directory, waits until it is
//! healthy, runs the store conformance suite and the whole service suite on it, and kills it
//! by PID when done (also when an assertion fails: the guard's `Drop`).
//!
//! `etcd` must be on `PATH` (scripts/setup.sh installs it); the test fails, not skips, when it
//! is missing.

mod common;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use objmeta::model::{CreateRequest, ObjectRef};
use objmeta::store::{EtcdStore, MetaStore};

struct Etcd {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn start_etcd() -> Etcd {
    let dir = tempfile::tempdir().unwrap();
    let (client, peer) = (free_port(), free_port());
    let url = format!("http://127.0.0.1:{client}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let log = std::fs::File::create(dir.path().join("etcd.log")).unwrap();
    let child = Command::new("etcd")
        .arg("--name=objmeta-test")
        .arg(format!("--data-dir={}", dir.path().join("data").display()))
        .arg(format!("--listen-client-urls={url}"))
        .arg(format!("--advertise-client-urls={url}"))
        .arg(format!("--listen-peer-urls={peer_url}"))
        .arg(format!("--initial-advertise-peer-urls={peer_url}"))
        .arg(format!("--initial-cluster=objmeta-test={peer_url}"))
        .arg("--initial-cluster-state=new")
        .env("ETCD_UNSUPPORTED_ARCH", std::env::consts::ARCH.replace("x86_64", "amd64").replace("aarch64", "arm64"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("etcd (Debian package etcd-server, see scripts/setup.sh) must be on PATH");
    let mut etcd = Etcd { child, url, _dir: dir };
    let t0 = Instant::now();
    loop {
        if EtcdStore::connect(&etcd.url).is_ok() {
            return etcd;
        }
        if let Ok(Some(st)) = etcd.child.try_wait() {
            let log = std::fs::read_to_string(etcd._dir.path().join("etcd.log")).unwrap_or_default();
            panic!("etcd exited with {st}:\n{log}");
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "etcd not healthy after 30 s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn etcd_backend_against_a_real_etcd() {
    let etcd = start_etcd();
    let store = EtcdStore::connect(&etcd.url).unwrap();
    common::conformance(&store);
    common::concurrent_cas(Arc::new(store.clone()), 4, 10);

    // The service suite: every part on an emptied keyspace.
    let s2 = store.clone();
    common::service_suite(&move || {
        common::wipe(&s2);
        Box::new(s2.clone()) as Box<dyn MetaStore>
    });

    // Creators racing through etcd (HTTP round trips make the windows wide).
    common::wipe(&store);
    let (svc, _) = common::service(Box::new(store.clone()));
    common::concurrent_creates(Arc::new(svc), 4, 6);

    // Two service instances on one etcd see each other's writes and agree on creates.
    common::wipe(&store);
    let (a, _) = common::service(Box::new(store.clone()));
    let (b, _) = common::service(Box::new(store.clone()));
    common::six_nodes(&a);
    assert_eq!(b.nodes().unwrap().len(), 6);
    let req = CreateRequest { name: Some("shared".into()), size: 10, ..CreateRequest::default() };
    let ma = a.create(req.clone()).unwrap();
    assert_eq!(b.create(req).unwrap(), ma);
    assert_eq!(b.lookup(&ObjectRef::Name("shared".into())).unwrap(), ma);
    b.delete(ma.id).unwrap();
    assert!(a.lookup(&ObjectRef::Id(ma.id)).is_err());
}

#[test]
fn an_unreachable_etcd_is_a_clear_error() {
    let port = free_port();
    let e = EtcdStore::connect(&format!("http://127.0.0.1:{port}")).unwrap_err();
    assert!(e.to_string().contains(&format!("127.0.0.1:{port}")), "{e}");
    assert!(EtcdStore::connect("https://127.0.0.1:1").is_err());
}
