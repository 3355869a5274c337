//! The command line: `check-config` on the demo config, and bad configs refused with the
//! path of the offending field, by `check-config` and by `run` before anything starts.
//! Needs neither root nor DPDK.

use appliance_tests::{appliance_bin, demo_config, edit_yaml, output_text, run_timeout, workspace_root};
use serde_yaml_ng::Value;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

fn appliance(args: &[&str]) -> Output {
    run_timeout(Command::new(appliance_bin()).args(args).stdin(Stdio::null()), Duration::from_secs(30))
}

/// The demo config with `f` applied and a file prefix of its own (in case `run` got past
/// validation).
fn bad_config(f: impl FnOnce(&mut Value)) -> String {
    edit_yaml(&demo_config(), |v| {
        v["eal"]["file_prefix"] = Value::from(format!("aplbad{}", std::process::id()));
        f(v)
    })
}

/// `check-config F` and `run --config F` both fail, and say `expect` on stderr.
fn assert_rejected(yaml: &str, expect: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(&path, yaml).unwrap();
    let p = path.to_str().unwrap();
    for args in [vec!["check-config", p], vec!["run", "--config", p]] {
        let out = appliance(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "`appliance {}` accepted a bad config (expected an error naming {expect:?}):\n{}\n---- config ----\n{yaml}",
            args.join(" "),
            output_text(&out)
        );
        assert!(
            stderr.contains(expect),
            "`appliance {}` failed ({}) but stderr does not name {expect:?}:\n{stderr}\n---- config ----\n{yaml}",
            args.join(" "),
            out.status
        );
    }
}

#[test]
fn check_config_accepts_demo_config() {
    let path = workspace_root().join("configs/demo.yaml");
    let out = appliance(&["check-config", path.to_str().unwrap()]);
    let text = output_text(&out);
    assert!(out.status.success(), "check-config configs/demo.yaml failed ({}):\n{text}", out.status);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("--no-pci"),
        "the EAL argv printed by check-config lacks --no-pci:\n{text}"
    );
}

#[test]
fn rejects_zero_queues() {
    assert_rejected(&bad_config(|v| v["ports"][0]["queues"] = Value::from(0)), "ports[0].queues");
}

#[test]
fn rejects_unknown_field() {
    assert_rejected(&bad_config(|v| v["ports"][0]["frobnicate"] = Value::from(1)), "frobnicate");
    assert_rejected(&bad_config(|v| v["no_such_section"] = Value::from(true)), "no_such_section");
}

#[test]
fn rejects_bad_ipv4_address() {
    assert_rejected(
        &bad_config(|v| v["ports"][0]["ipv4"] = Value::Sequence(vec![Value::from("192.0.2.300/24")])),
        "ports[0].ipv4[0]",
    );
}

#[test]
fn rejects_route_to_unknown_port() {
    assert_rejected(
        &bad_config(|v| {
            let mut r = serde_yaml_ng::Mapping::new();
            r.insert("prefix".into(), "203.0.113.0/24".into());
            r.insert("via".into(), "198.51.100.2".into());
            r.insert("port".into(), "no-such-port".into());
            v["routes"] = Value::Sequence(vec![Value::Mapping(r)]);
        }),
        "routes[0].port",
    );
}

#[test]
fn rejects_cpu_the_machine_lacks() {
    // 1023 is the largest CPU id a config may name, and one no test machine has.
    assert_rejected(
        &bad_config(|v| v["lcores"]["workers"][0]["cpu"] = Value::from(1023)),
        "lcores.workers[0].cpu: CPU 1023 does not exist (this machine has CPUs ",
    );
}

#[test]
fn rejects_mbufs_beyond_eal_memory() {
    assert_rejected(
        &bad_config(|v| v["mempool"]["mbufs"] = Value::from(262144)),
        "mempool.mbufs: 262144 mbufs of 2304 bytes need ~596 MiB, more than eal.memory_mb (256 MiB) leaves",
    );
}
