//! Issue 5 end to end: three storage appliances (the steering testbed: a kernel client and
//! three appliance namespaces on one bridge), the metadata service (`objmeta serve`, in the
//! client's namespace), and kernel clients (tests/helpers/obj_client.py, and `objcli` for 100 MiB). Objects are created
//! (0 B to 100 MiB) at the metadata service, written to all three replica addresses, committed, and read back
//! with content checked; a flipped bit on one replica's device is reported and read around;
//! with one node killed, reads fail over; a steered request is accepted
//! by the first candidate under its threshold. Run as root, serially: `sudo bash scripts/test.sh`.

use appliance_tests::steering::{candidate_config, port_addr, sid, StorageFabric};
use appliance_tests::storage::DeviceFile;
use appliance_tests::testbed::workspace_root;
use appliance_tests::{edit_yaml, output_text, Appliance};
use serde_yaml_ng::Value;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const META: &str = "http://127.0.0.1:7070";

fn object_prefix(k: usize) -> String {
    format!("2001:db8:5b:{k}::")
}

fn node_config(k: usize, device: &DeviceFile) -> String {
    edit_yaml(&candidate_config(k, 8, 0, true), |v| {
        let mut st = serde_yaml_ng::Mapping::new();
        st.insert("object_prefix".into(), Value::from(format!("{}/64", object_prefix(k))));
        st.insert("device".into(), Value::from(device.0.display().to_string()));
        st.insert("size_mb".into(), Value::from(160));
        v["storage"] = Value::Mapping(st);
    })
}

/// A workspace binary (objmeta, objcli), release build first.
fn bin(name: &str) -> PathBuf {
    for dir in ["target/release", "target/debug"] {
        let p = workspace_root().join(dir).join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!("no {name} binary: build it first (cargo build --release -p {name})");
}

/// The metadata service in the client's namespace; killed (by PID) on drop.
struct Meta(Child);

impl Drop for Meta {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn client(st: &StorageFabric, args: &[&str]) -> String {
    let script = workspace_root().join("tests/helpers/obj_client.py").display().to_string();
    let mut all = vec!["python3", script.as_str(), "-"];
    all.extend_from_slice(args);
    output_text(&st.exec_timeout("cl", &all, Duration::from_secs(180)))
}

#[test]
fn three_replicas_failover_and_steering() {
    let st = StorageFabric::up("objs");
    let devices: Vec<DeviceFile> = (1..=3).map(|k| DeviceFile::new(&format!("node{k}"))).collect();
    let mut nodes: Vec<Appliance> =
        (1..=3).map(|k| Appliance::start_in(&st.appliance_ns(k), &node_config(k, &devices[k - 1]))).collect();
    for k in 1..=3 {
        st.exec_ok("cl", &["ip", "-6", "route", "add", &format!("{}/64", object_prefix(k)), "via", &port_addr(k)]);
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("meta.db");
    let meta = Meta(
        Command::new("ip")
            .args(["netns", "exec", &st.ns("cl")])
            .arg(bin("objmeta"))
            .args(["serve", "--listen", "127.0.0.1:7070", "--down-after", "3600", "--store"])
            .arg(format!("embedded:{}", db.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start objmeta"),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while !output_text(&st.exec_timeout("cl", &["curl", "-sf", &format!("{META}/health")], Duration::from_secs(5)))
        .contains("ok")
    {
        assert!(Instant::now() < deadline, "objmeta did not answer /health");
        std::thread::sleep(Duration::from_millis(200));
    }
    for k in 1..=3 {
        let body = format!(
            r#"{{"id":"n{k}","object_prefix":"{}/64","storage_sid":"{}","capacity_bytes":150000000,"failure_domain":"rack{k}"}}"#,
            object_prefix(k),
            sid(k)
        );
        let out = output_text(&st.exec_timeout(
            "cl",
            &["curl", "-sf", "-XPOST", &format!("{META}/nodes"), "-d", &body],
            Duration::from_secs(10),
        ));
        assert!(out.contains(&format!("\"n{k}\"")), "register n{k}: {out}");
    }

    // Objects of several sizes on three replicas, each read back and compared.
    let sizes = [0usize, 1, 4096, 1 << 20];
    for (i, len) in sizes.iter().enumerate() {
        let src = dir.path().join(format!("in{i}"));
        let mut data = vec![0u8; *len];
        std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom").unwrap(), &mut data).unwrap();
        std::fs::write(&src, &data).unwrap();
        let name = format!("obj-{i}");
        let out = client(&st, &["mput", META, &name, &src.display().to_string()]);
        assert!(out.starts_with("ok "), "put of {len} bytes: {out}");
        let replicas: Vec<&str> = out.split_whitespace().skip(2).collect();
        assert_eq!(replicas.len(), 3, "three replicas: {out}");
        for k in 1..=3 {
            assert!(
                replicas.iter().any(|r| r.starts_with(&format!("2001:db8:5b:{k}:"))),
                "one replica per node: {out}"
            );
        }
        let back = dir.path().join(format!("out{i}"));
        let out = client(&st, &["mget", META, &name, &back.display().to_string()]);
        assert!(out.contains("ok "), "get of {len} bytes: {out}");
        assert!(std::fs::read(&back).unwrap() == data, "object of {len} bytes differs");
    }
    // 100 MiB with the Rust client (objcli): put on three replicas, commit, get back.
    let big = dir.path().join("big.in");
    {
        let mut data = vec![0u8; 100 << 20];
        std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom").unwrap(), &mut data).unwrap();
        std::fs::write(&big, &data).unwrap();
    }
    let objcli = bin("objcli");
    let objcli = objcli.display().to_string();
    let out = st.exec_timeout(
        "cl",
        &[&objcli, "--meta", META, "put", &big.display().to_string(), "--name", "big"],
        Duration::from_secs(600),
    );
    assert!(out.status.success(), "objcli put of 100 MiB: {}", output_text(&out));
    let big_out = dir.path().join("big.out");
    let out = st.exec_timeout(
        "cl",
        &[&objcli, "--meta", META, "get", "big", "-o", &big_out.display().to_string()],
        Duration::from_secs(600),
    );
    assert!(out.status.success(), "objcli get of 100 MiB: {}", output_text(&out));
    assert!(std::fs::read(&big).unwrap() == std::fs::read(&big_out).unwrap(), "the 100 MiB object differs");

    // Every node stored every object.
    for (k, n) in nodes.iter().enumerate() {
        let chunks = n.metric_sum("appliance_storage_chunks_written_total", &[]);
        assert!(chunks >= (1 + 1 + 1 + 256 + 25_600) as f64, "node {} wrote {chunks} chunks", k + 1);
    }

    // A steered request (SRH over the three storage SIDs, none busy) is accepted by the
    // first candidate and answered from its replica address.
    let segs = format!("{},{},{}", sid(1), sid(2), sid(3));
    let out = client(&st, &["steer", &segs, "3"]);
    assert!(out.starts_with(&format!("accepted {}3 status", object_prefix(1))), "steered stat: {out}");
    // A steered write: a 700-byte object (one fragment) over the same list is stored by the
    // first candidate and acknowledged from its replica address; it reads back there.
    let small = dir.path().join("small");
    let small_data: Vec<u8> = (0..700u32).map(|i| (i * 31 % 251) as u8).collect();
    std::fs::write(&small, &small_data).unwrap();
    let out = client(&st, &["steer", &segs, "9", &small.display().to_string()]);
    assert_eq!(out.trim(), format!("accepted {}9 status 0", object_prefix(1)), "steered put");
    let script = workspace_root().join("tests/helpers/obj_client.py").display().to_string();
    let back = dir.path().join("small.back");
    let out = output_text(&st.exec_timeout(
        "cl",
        &["python3", &script, &object_prefix(1), "get", "9", &back.display().to_string()],
        Duration::from_secs(60),
    ));
    assert_eq!(out.trim(), "ok 700", "{out}");
    assert!(std::fs::read(&back).unwrap() == small_data);

    // Corruption: flip a bit of obj-2 (4 KiB) on the node its reads go to first; the read
    // is answered with status checksum there, reported, and served by another replica.
    let first = client(&st, &["mget", META, "obj-2", &dir.path().join("y").display().to_string()]);
    let from = first
        .lines()
        .find_map(|l| l.strip_prefix("ok "))
        .and_then(|l| l.split(" from ").nth(1))
        .unwrap_or_else(|| panic!("{first}"))
        .to_string();
    let k = (1..=3).find(|k| from.starts_with(&format!("2001:db8:5b:{k}:"))).expect("a node's replica");
    let (status, log) = nodes[k - 1].stop();
    assert!(status.success(), "{log}");
    let content = std::fs::read(dir.path().join("in2")).unwrap();
    devices[k - 1].flip_bit_in(&content[..64], 200);
    nodes[k - 1] = Appliance::start_in(&st.appliance_ns(k), &node_config(k, &devices[k - 1]));
    let back = dir.path().join("repaired");
    let out = client(&st, &["mget", META, "obj-2", &back.display().to_string()]);
    assert!(out.contains(&format!("bad {from} (status 4)")), "the corrupted replica is reported: {out}");
    assert!(out.contains("ok "), "read from a good replica: {out}");
    assert!(std::fs::read(&back).unwrap() == content, "the data read is the original");
    assert!(nodes[k - 1].metric_sum("appliance_storage_checksum_failures_total", &[]) >= 1.0);

    // Kill the node holding the first replica of obj-3: the read fails over.
    let first = client(&st, &["mget", META, "obj-3", &dir.path().join("x").display().to_string()]);
    let from = first
        .lines()
        .find_map(|l| l.strip_prefix("ok "))
        .and_then(|l| l.split(" from ").nth(1))
        .unwrap_or_else(|| panic!("{first}"))
        .to_string();
    let k = (1..=3).find(|k| from.starts_with(&format!("2001:db8:5b:{k}:"))).expect("a node's replica");
    nodes[k - 1].kill();
    let back = dir.path().join("failover");
    let out = client(&st, &["mget", META, "obj-3", &back.display().to_string()]);
    assert!(out.contains(&format!("bad {from}")), "the dead replica is reported: {out}");
    assert!(out.contains("ok "), "read through another replica: {out}");
    assert!(std::fs::read(&back).unwrap() == std::fs::read(dir.path().join("in3")).unwrap());
    drop(meta);
}
