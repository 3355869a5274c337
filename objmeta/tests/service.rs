//! The service suite on the embedded store (the same suite runs on etcd in `etcd.rs`).

mod common;

use objmeta::model::{CreateRequest, ObjectRef};
use objmeta::store::{EmbeddedStore, MetaStore};
use objmeta::MetaError;

/// A new, empty store file in `dir`.
fn fresh(dir: &tempfile::TempDir) -> Box<dyn MetaStore> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let path = dir.path().join(format!("meta-{}.db", N.fetch_add(1, Ordering::SeqCst)));
    Box::new(EmbeddedStore::open(path).unwrap())
}

#[test]
fn service_suite_on_embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    common::service_suite(&|| fresh(&dir));
}

#[test]
fn metadata_survives_a_restart_of_the_service() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.db");
    let (m, nodes) = {
        let (svc, _) = common::service(Box::new(EmbeddedStore::open(&path).unwrap()));
        common::six_nodes(&svc);
        let m = svc.create(CreateRequest { name: Some("kept".into()), size: 123, ..CreateRequest::default() }).unwrap();
        (svc.commit(m.id, 1).unwrap(), svc.nodes().unwrap())
    };
    let (svc, _) = common::service(Box::new(EmbeddedStore::open(&path).unwrap()));
    assert_eq!(svc.lookup(&ObjectRef::Name("kept".into())).unwrap(), m);
    assert_eq!(svc.nodes().unwrap(), nodes);
    let next = svc.create(CreateRequest { name: Some("next".into()), size: 1, ..CreateRequest::default() }).unwrap();
    assert!(next.id > m.id, "the id counter survives too");
}

#[test]
fn a_failed_create_leaves_no_name_behind() {
    let dir = tempfile::tempdir().unwrap();
    let (svc, _) = common::service(fresh(&dir));
    svc.register(common::reg(0, "a", 100)).unwrap();
    let req = CreateRequest { name: Some("n".into()), size: 1000, replicas: Some(1), ..CreateRequest::default() };
    assert!(matches!(svc.create(req.clone()), Err(MetaError::NotEnoughNodes(_))));
    assert!(matches!(svc.lookup(&ObjectRef::Name("n".into())), Err(MetaError::NotFound(_))));
    svc.register(common::reg(0, "a", 10_000)).unwrap();
    assert_eq!(svc.create(req).unwrap().size, 1000);
}

#[test]
fn concurrent_creates_of_one_name_agree() {
    let dir = tempfile::tempdir().unwrap();
    let (svc, _) = common::service(fresh(&dir));
    common::concurrent_creates(std::sync::Arc::new(svc), 8, 30);
}
