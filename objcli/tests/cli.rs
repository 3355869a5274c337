//! Smoke tests of the `objcli` binary against fake nodes and the metadata service.

mod common;

use std::process::{Command, Output};
use std::sync::atomic::Ordering;

use common::{content, node_id, FakeNode, Meta};

fn objcli(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_objcli")).args(["--timeout-ms", "60", "--tries", "5"]).args(args).output().unwrap()
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn fails(o: &Output) -> String {
    assert_eq!(o.status.code(), Some(1), "stdout: {}", String::from_utf8_lossy(&o.stdout));
    String::from_utf8(o.stderr.clone()).unwrap()
}

#[test]
fn put_get_stat_ls_rm_through_the_metadata_service() {
    let (a, b, c) = (FakeNode::start(), FakeNode::start(), FakeNode::start());
    let nodes = [&a, &b, &c];
    let meta = Meta::start(&nodes);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("photo.bin");
    let data = content(300_000, 11);
    std::fs::write(&file, &data).unwrap();
    let mut base: Vec<String> = vec!["--meta".into(), meta.url.clone()];
    for (i, n) in nodes.iter().enumerate() {
        base.push("--node-addr".into());
        base.push(format!("{}={}", node_id(i), n.addr));
    }
    let run = |extra: &[&str]| {
        let mut args: Vec<&str> = base.iter().map(String::as_str).collect();
        args.extend_from_slice(extra);
        objcli(&args)
    };
    let out = ok(&run(&["put", file.to_str().unwrap()]));
    assert!(out.starts_with("stored photo.bin id 0x") && out.contains("size 300000"), "{out}");
    let back = dir.path().join("back.bin");
    ok(&run(&["get", "photo.bin", "-o", back.to_str().unwrap()]));
    assert_eq!(std::fs::read(&back).unwrap(), data);
    // To stdout.
    let o = run(&["get", "name:photo.bin"]);
    assert!(o.status.success());
    assert_eq!(o.stdout, data);
    let stat = ok(&run(&["stat", "photo.bin"]));
    assert!(stat.contains("state Complete") && stat.matches("complete 1").count() == 3, "{stat}");
    let ls = ok(&run(&["ls"]));
    assert!(ls.contains("photo.bin") && ls.contains("complete"), "{ls}");

    let out = ok(&run(&["rm", "photo.bin"]));
    assert!(out.starts_with("removed photo.bin"), "{out}");
    let err = fails(&run(&["get", "photo.bin"]));
    assert!(err.starts_with("objcli: ") && err.contains("not found"), "{err}");
    // No metadata service given.
    let err = fails(&objcli(&["ls"]));
    assert!(err.contains("--meta"), "{err}");
}

#[test]
fn get_reports_a_bad_replica_on_stderr() {
    let (a, b, c) = (FakeNode::start(), FakeNode::start(), FakeNode::start());
    let nodes = [&a, &b, &c];
    let meta = Meta::start(&nodes);
    let cfg = common::config(&nodes);
    let mut cl = objcli::StorageClient::new(cfg).unwrap();
    let data = content(20_000, 12);
    let m = cl.put(&meta.client, None, Some("x"), &data, 3, &()).unwrap();
    let first = cl.replica_target(&m.replicas[0]);
    let bad = nodes.iter().find(|n| n.addr == first.dst).unwrap();
    bad.faults.checksum_chunk_plus1.store(1, Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();
    let back = dir.path().join("x");
    let mut args = vec!["--meta".to_string(), meta.url.clone()];
    for (i, n) in nodes.iter().enumerate() {
        args.push("--node-addr".into());
        args.push(format!("{}={}", node_id(i), n.addr));
    }
    args.extend(["get".into(), "x".into(), "-o".into(), back.to_str().unwrap().into()]);
    let o = objcli(&args.iter().map(String::as_str).collect::<Vec<_>>());
    ok(&o);
    assert_eq!(std::fs::read(&back).unwrap(), data);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(&format!("warning: bad replica {}", m.replicas[0].node)) && err.contains("checksum"), "{err}");
}

#[test]
fn raw_commands_on_one_node() {
    let n = FakeNode::start();
    let node = n.addr.to_string();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("f");
    let data = content(5000, 13);
    std::fs::write(&file, &data).unwrap();
    let out = ok(&objcli(&["--node", &node, "put-raw", "0x2a", file.to_str().unwrap()]));
    assert_eq!(out, "ok 5000\n");
    let back = dir.path().join("b");
    ok(&objcli(&["--node", &node, "get-raw", "42", "-o", back.to_str().unwrap()]));
    assert_eq!(std::fs::read(&back).unwrap(), data);
    assert_eq!(ok(&objcli(&["--node", &node, "stat-raw", "42"])), "size 5000 version 1 chunks 2 complete 1\n");
    assert_eq!(ok(&objcli(&["--node", &node, "ls-raw"])), "42 5000 1\n");
    assert_eq!(ok(&objcli(&["--node", &node, "rm-raw", "42"])), "ok\n");
    let err = fails(&objcli(&["--node", &node, "stat-raw", "42"]));
    assert!(err.contains("not found"), "{err}");
    // A node that does not answer: non-zero exit, a message naming it.
    n.faults.down.store(true, Ordering::SeqCst);
    let err = fails(&objcli(&["--node", &node, "put-raw", "7", file.to_str().unwrap()]));
    assert!(err.contains(&node) && err.contains("no reply"), "{err}");
    // Usage errors.
    let err = fails(&objcli(&["put-raw", "7", file.to_str().unwrap()]));
    assert!(err.contains("--node"), "{err}");
    let err = fails(&objcli(&["--node", "2001:db8::1", "stat-raw", "7"]));
    assert!(err.contains("host bits"), "{err}");
}
