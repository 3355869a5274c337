//! The storage service in the appliance (issue 5 item 3) with a kernel client: objects put
//! and got over IPv6/UDP at their replica addresses, on an io_uring O_DIRECT device file;
//! a `kill -9` during a stream of puts loses no acknowledged write; a flipped bit on the
//! device is never returned as data. The testbed's h1 is the client
//! (tests/helpers/obj_client.py); the appliance runs the demo config plus a `storage:`
//! section. Run as root, serially: `sudo bash scripts/test.sh`.

use appliance_tests::storage::DeviceFile;
use appliance_tests::testbed::workspace_root;
use appliance_tests::{demo_config, edit_yaml, output_text, Appliance, Testbed};
use serde_yaml_ng::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const PREFIX: &str = "2001:db8:f0:1::";

fn config(device: &Path) -> String {
    edit_yaml(&demo_config(), |v| {
        let mut st = serde_yaml_ng::Mapping::new();
        st.insert("object_prefix".into(), Value::from(format!("{PREFIX}/64")));
        st.insert("device".into(), Value::from(device.display().to_string()));
        st.insert("size_mb".into(), Value::from(64));
        v["storage"] = Value::Mapping(st);
    })
}

fn client(tb: &Testbed, args: &[&str]) -> String {
    let script = workspace_root().join("tests/helpers/obj_client.py");
    let script = script.display().to_string();
    let mut all = vec!["python3", script.as_str(), PREFIX];
    all.extend_from_slice(args);
    output_text(&tb.exec_timeout("h1", &all, Duration::from_secs(120)))
}

fn random_file(dir: &Path, name: &str, len: usize) -> PathBuf {
    let p = dir.join(name);
    let mut data = vec![0u8; len];
    let mut f = std::fs::File::open("/dev/urandom").unwrap();
    std::io::Read::read_exact(&mut f, &mut data).unwrap();
    std::fs::write(&p, &data).unwrap();
    p
}

#[test]
fn objects_round_trip_through_the_appliance() {
    let tb = Testbed::up("objrt");
    let dev = DeviceFile::new("rt");
    let apl = Appliance::start(&tb, &config(&dev.0));
    let dir = tempfile::tempdir().unwrap();
    // Replica addresses are the appliance's: it answers ping on them.
    assert!(tb.ping("h1", &format!("{PREFIX}2a"), 2), "ping of a replica address\n{}", apl.log_tail(20));
    for (obj, len) in [(1u64, 0usize), (2, 1), (3, 4096), (4, 4097), (5, 1 << 20)] {
        let src = random_file(dir.path(), &format!("in{obj}"), len);
        let out = client(&tb, &["put", &obj.to_string(), &src.display().to_string()]);
        assert_eq!(out.trim(), format!("ok {len}"), "put of {len} bytes\n{}", apl.log_tail(20));
        let back = dir.path().join(format!("out{obj}"));
        let out = client(&tb, &["get", &obj.to_string(), &back.display().to_string()]);
        assert_eq!(out.trim(), format!("ok {len}"), "get of {len} bytes");
        assert!(std::fs::read(&src).unwrap() == std::fs::read(&back).unwrap(), "object {obj} ({len} bytes) differs");
        let stat = client(&tb, &["stat", &obj.to_string()]);
        assert_eq!(stat.trim(), format!("size {len} version 1 chunks {} complete 1", len.div_ceil(4096)));
    }
    let list = client(&tb, &["list"]);
    let ids: Vec<&str> = list.lines().filter_map(|l| l.split_whitespace().next()).collect();
    assert_eq!(ids, ["1", "2", "3", "4", "5"], "{list}");
    assert_eq!(client(&tb, &["rm", "4"]).trim(), "ok");
    assert_eq!(client(&tb, &["stat", "4"]).trim(), "status 1", "deleted");
    assert_eq!(client(&tb, &["rm", "4"]).trim(), "ok", "delete is idempotent");
    assert!(apl.metric_sum("appliance_storage_chunks_written_total", &[]) >= (1 + 1 + 1 + 2 + 256) as f64);
    assert!(apl.metric_sum("appliance_storage_read_bytes_total", &[]) >= (1 << 20) as f64);
    // Latency histograms per operation, queue depth, device usage.
    let m = apl.metrics();
    let sum = |name: &str, f: &[(&str, &str)]| appliance_tests::metric_sum(&m, name, f);
    let puts = sum("appliance_storage_latency_seconds_count", &[("op", "put")]);
    assert!(puts >= (1 + 1 + 4 + 5 + 1024) as f64, "one latency sample per put fragment: {puts}");
    assert_eq!(sum("appliance_storage_latency_seconds_bucket", &[("op", "put"), ("le", "+Inf")]), puts);
    assert!(sum("appliance_storage_latency_seconds_count", &[("op", "get")]) >= 1024.0);
    assert!(sum("appliance_storage_device_used_bytes", &[]) >= (256 * 4096) as f64, "device usage");
    // Requests and replies by op and status.
    assert!(sum("appliance_storage_requests_total", &[("op", "put")]) >= puts);
    assert!(sum("appliance_storage_replies_total", &[("op", "get"), ("status", "ok")]) >= 1024.0);
    assert!(sum("appliance_storage_replies_total", &[("op", "delete"), ("status", "ok")]) >= 1.0);
    assert!(sum("appliance_storage_replies_total", &[("op", "stat"), ("status", "not_found")]) >= 1.0);
    assert!(m.contains("appliance_storage_queue_depth"), "queue depth gauge");
}

#[test]
fn acknowledged_writes_survive_kill_9() {
    let tb = Testbed::up("objcrash");
    let dev = DeviceFile::new("crash");
    let cfg = config(&dev.0);
    let mut apl = Appliance::start(&tb, &cfg);
    // A stream of 4 KiB puts, one at a time; kill -9 the appliance in the middle of it.
    let script = workspace_root().join("tests/helpers/obj_client.py").display().to_string();
    let mut stream = tb
        .command("h1", &["python3", &script, PREFIX, "stream", "1000", "100000"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start the stream");
    let stdout = stream.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut acked = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.len() < 200 && Instant::now() < deadline {
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(100)) {
            acked.extend(l.strip_prefix("acked ").and_then(|n| n.parse::<u64>().ok()));
        }
    }
    assert!(acked.len() >= 200, "the stream did not get going\n{}", apl.log_tail(20));
    apl.kill();
    // Whatever the client saw acknowledged before the kill.
    while let Ok(l) = rx.recv_timeout(Duration::from_millis(300)) {
        acked.extend(l.strip_prefix("acked ").and_then(|n| n.parse::<u64>().ok()));
    }
    let _ = stream.kill();
    let _ = stream.wait();
    let last = *acked.iter().max().unwrap();

    // Restart on the same device: the journal is replayed.
    let apl = Appliance::start(&tb, &cfg);
    let count = (last - 1000 + 10).to_string();
    let out = client(&tb, &["verify", "1000", &count]);
    let good: Vec<u64> = out.lines().filter_map(|l| l.strip_prefix("good ")?.parse().ok()).collect();
    let wrong: Vec<&str> = out.lines().filter(|l| l.starts_with("wrong")).collect();
    assert!(wrong.is_empty(), "objects neither whole nor absent after the crash: {wrong:?}");
    for a in &acked {
        assert!(good.contains(a), "acknowledged object {a} lost by the crash\n{}", apl.log_tail(20));
    }
}

#[test]
fn a_corrupted_block_is_never_returned() {
    let tb = Testbed::up("objcrc");
    let dev = DeviceFile::new("crc");
    let cfg = config(&dev.0);
    let mut apl = Appliance::start(&tb, &cfg);
    let dir = tempfile::tempdir().unwrap();
    let src = random_file(dir.path(), "in", 8192);
    let out = client(&tb, &["put", "77", &src.display().to_string()]);
    assert_eq!(out.trim(), "ok 8192");
    let (status, log) = apl.stop();
    assert!(status.success(), "{log}");

    // Flip one bit of the object's second chunk on the device (found by its content).
    let content = std::fs::read(&src).unwrap();
    dev.flip_bit_in(&content[4096..4096 + 64], 100);

    let apl = Appliance::start(&tb, &cfg);
    let back = dir.path().join("out");
    let out = client(&tb, &["get", "77", &back.display().to_string()]);
    assert_eq!(out.trim(), "status 4", "a read of the corrupted chunk must fail with status checksum");
    assert!(apl.metric_sum("appliance_storage_checksum_failures_total", &[]) >= 1.0);
    // The other chunk is intact and readable on its own terms: stat still works.
    assert_eq!(client(&tb, &["stat", "77"]).trim(), "size 8192 version 1 chunks 2 complete 1");
}

/// Two workers, each with its own device: objects are sharded by id over the workers, and a
/// request that reaches the worker not owning its object is handed over, not dropped.
#[test]
fn two_workers_shard_the_objects() {
    let tb = Testbed::up("objtwo");
    let devs = [DeviceFile::new("w0"), DeviceFile::new("w1")];
    let cfg = edit_yaml(&config(&devs[0].0), |v| {
        appliance_tests::appliance::two_workers(v);
        v["storage"]["device"] = Value::Sequence(devs.iter().map(|d| Value::from(d.0.display().to_string())).collect());
    });
    let apl = Appliance::start(&tb, &cfg);
    let dir = tempfile::tempdir().unwrap();
    for obj in 1..=24u64 {
        let len = 1000 + 700 * obj as usize;
        let src = random_file(dir.path(), &format!("in{obj}"), len);
        let out = client(&tb, &["put", &obj.to_string(), &src.display().to_string()]);
        assert_eq!(out.trim(), format!("ok {len}"), "put {obj}\n{}", apl.log_tail(20));
        let back = dir.path().join(format!("out{obj}"));
        assert_eq!(client(&tb, &["get", &obj.to_string(), &back.display().to_string()]).trim(), format!("ok {len}"));
        assert!(std::fs::read(&src).unwrap() == std::fs::read(&back).unwrap(), "object {obj}");
    }
    assert!(
        apl.metric_sum("appliance_storage_handed_over_total", &[]) > 0.0,
        "with two workers some requests reach the worker that does not own their object"
    );
    assert_eq!(apl.metric_sum("appliance_drops_total", &[("reason", "storage_handoff_full")]), 0.0);
    // Each worker's store holds its share: a list (sent to object 0's address, so served by
    // worker 0) shows exactly the even ids.
    let list = client(&tb, &["list"]);
    let ids: Vec<u64> = list.lines().filter_map(|l| l.split_whitespace().next()?.parse().ok()).collect();
    assert_eq!(ids, (1..=24u64).filter(|i| i % 2 == 0).collect::<Vec<_>>(), "{list}");
}

/// `objcli bench` (the load generator of scripts/bench-storage.sh) against the appliance:
/// 256 objects put at depth 16, then checked random reads; the node lists every object it
/// wrote, and the appliance counted as many puts.
#[test]
fn the_load_generator_puts_and_reads_back_through_the_appliance() {
    let tb = Testbed::up("objbench");
    let dev = DeviceFile::new("bench");
    let apl = Appliance::start(&tb, &config(&dev.0));
    let objcli = appliance_tests::images::bin("objcli").display().to_string();
    let first = "0x7700000000000000";
    let args = [
        objcli.as_str(),
        "--node",
        PREFIX,
        "bench",
        "--objects",
        "256",
        "--inflight",
        "16",
        "--seconds",
        "1",
        "--first",
        first,
    ];
    let out = tb.exec_timeout("h1", &args, Duration::from_secs(120));
    let text = output_text(&out);
    assert!(out.status.success(), "objcli bench failed: {text}\n{}", apl.log_tail(20));
    println!("{text}");
    let field = |op: &str, name: &str| -> f64 {
        let line =
            text.lines().find(|l| l.contains(&format!("op={op} "))).unwrap_or_else(|| panic!("no {op} line: {text}"));
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{name}=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {line}"))
    };
    assert_eq!(field("put", "ops"), 256.0);
    assert!(field("get", "ops") > 0.0 && field("get", "p99_us") >= field("get", "p50_us"));
    // Every object is on the node (ls-raw lists ids in order).
    let ls = output_text(&tb.exec_timeout(
        "h1",
        &[objcli.as_str(), "--node", PREFIX, "ls-raw", "--after", "0x76ffffffffffffff"],
        Duration::from_secs(60),
    ));
    let ids: Vec<&str> = ls.lines().filter(|l| l.split_whitespace().nth(1) == Some("4096")).collect();
    assert_eq!(ids.len(), 256, "objects of 4096 bytes listed by the node: {ls}");
}
