//! `packaging/systemd/appliance@.service` (docs/deploy.md): `systemd-analyze verify`
//! accepts it, and its commands do what the unit says, run against the real binary in a
//! testbed namespace: `ExecStartPre` refuses a bad config with exit status 2 (which
//! `RestartPreventExitStatus` keeps from restarting), `ExecStart` runs the appliance,
//! `ExecReload` reloads its config, and its `KillSignal` stops it cleanly within
//! `TimeoutStopSec`. (The test machines do not run systemd as PID 1, so the unit is not
//! started by systemd itself.) Run as root, serially: `sudo bash scripts/test.sh`.

use appliance_tests::{appliance_bin, demo_config, output_text, run_timeout, workspace_root, Testbed};
use appliance_tests::{edit_yaml, Appliance};
use serde_yaml_ng::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The unit's `[Service]` (and `[Unit]`) settings as key → values (a key may repeat).
fn settings(text: &str) -> BTreeMap<String, Vec<String>> {
    let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with(['#', '['])) {
        let (k, v) = line.split_once('=').unwrap_or_else(|| panic!("not key=value: {line:?}"));
        m.entry(k.to_string()).or_default().push(v.to_string());
    }
    m
}

fn one<'a>(s: &'a BTreeMap<String, Vec<String>>, key: &str) -> &'a str {
    match s.get(key).map(Vec::as_slice) {
        Some([v]) => v,
        other => panic!("the unit should set {key} exactly once, has {other:?}"),
    }
}

/// The unit as installed on this machine's layout: the binary from the build, the
/// config directory a temporary one.
fn unit_for(dir: &Path) -> String {
    let text = std::fs::read_to_string(workspace_root().join("packaging/systemd/appliance@.service")).unwrap();
    assert!(text.contains("/usr/local/bin/appliance ") && text.contains("/etc/appliance/%i.yaml"), "{text}");
    text.replace("/usr/local/bin/appliance ", &format!("{} ", appliance_bin().display()))
        .replace("/etc/appliance/", &format!("{}/", dir.display()))
}

#[test]
fn systemd_unit_verifies_and_its_commands_run_the_appliance() {
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_for(dir.path());
    let unit_path = dir.path().join("appliance@edge.service");
    std::fs::write(dir.path().join("appliance@.service"), &unit).unwrap();
    // systemd-analyze wants the instance name; the template file serves it.
    let out = run_timeout(
        Command::new("systemd-analyze").arg("verify").arg(&unit_path).current_dir(dir.path()).stdin(Stdio::null()),
        Duration::from_secs(60),
    );
    let text = output_text(&out);
    assert!(out.status.success() && !text.contains(&unit_path.display().to_string()), "verify:\n{text}\n{unit}");

    let s = settings(&unit.replace("%i", "edge"));
    assert_eq!(one(&s, "KillSignal"), "SIGTERM");
    assert_eq!(one(&s, "RestartPreventExitStatus"), "2");
    let stop_timeout: u64 = one(&s, "TimeoutStopSec").parse().unwrap();
    let split = |cmd: &str| cmd.split_whitespace().map(str::to_string).collect::<Vec<_>>();
    let pre = split(one(&s, "ExecStartPre"));
    let start = split(one(&s, "ExecStart"));
    let reload = one(&s, "ExecReload").to_string();
    let config = dir.path().join("edge.yaml");

    // ExecStartPre on a bad config: exit status 2, the field named.
    std::fs::write(&config, edit_yaml(&demo_config(), |v| v["ports"][0]["queues"] = Value::from(0))).unwrap();
    let out = run_timeout(Command::new(&pre[0]).args(&pre[1..]).stdin(Stdio::null()), Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(2), "ExecStartPre on a bad config:\n{}", output_text(&out));
    assert!(output_text(&out).contains("ports[0].queues"), "{}", output_text(&out));

    // ExecStartPre then ExecStart on a good one, in a testbed's router namespace.
    let tb = Testbed::up("unit");
    std::fs::write(&config, demo_config()).unwrap();
    let out = run_timeout(Command::new(&pre[0]).args(&pre[1..]).stdin(Stdio::null()), Duration::from_secs(30));
    assert!(out.status.success(), "ExecStartPre on the demo config:\n{}", output_text(&out));
    // The harness runs `<binary> run --config <file>` in the namespace, as ExecStart does
    // (with its own file prefix and metrics port written into the file).
    assert_eq!(start[0], appliance_bin().to_str().unwrap(), "ExecStart: {start:?}");
    assert_eq!(start[1..], ["run", "--config", config.to_str().unwrap()], "ExecStart: {start:?}");
    let mut app = Appliance::start(&tb, &std::fs::read_to_string(&config).unwrap());
    assert!(tb.ping(&tb.h1(), "198.51.100.2", 2), "no forwarding\n{}", app.log());

    // ExecReload with systemd's $MAINPID.
    let reload = reload.replace("$MAINPID", &app.pid().to_string());
    let out = run_timeout(Command::new("sh").arg("-c").arg(&reload).stdin(Stdio::null()), Duration::from_secs(10));
    assert!(out.status.success(), "ExecReload `{reload}`: {}", output_text(&out));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !app.log().contains("SIGHUP: config reloaded") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(app.log().contains("SIGHUP: config reloaded"), "{}", app.log_tail(20));
    assert!(app.is_running(), "ExecReload stopped it:\n{}", app.log());

    // KillSignal (SIGTERM, what the harness sends): a clean exit within TimeoutStopSec.
    let t0 = Instant::now();
    let (status, log) = app.stop();
    assert!(status.success(), "{status}\n{log}");
    assert!(t0.elapsed() < Duration::from_secs(stop_timeout), "took {:?} to stop", t0.elapsed());
    assert!(log.contains("stopped cleanly"), "{log}");
}
