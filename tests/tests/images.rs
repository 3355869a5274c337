//! Issue 11 end to end: a real Debian rootfs (mmdebstrap, cached) pushed as an erofs image to
//! three storage appliances; containers started lazily with runc on hosts in other network
//! namespaces through the image agent (FUSE file → erofs → overlay); traces shared between
//! hosts; a storage node killed and the agent killed during starts; the cache's limit and
//! garbage collection; the agent's metrics checked by promtool. Run as root, serially:
//! `cargo test --release -p appliance-tests --test images -- --test-threads=1`.

use appliance_tests::images::{
    bin, curl, curl_post, debian_rootfs, in_net, object_prefix, tree_listing, Hosts, Proc, Scratch, META,
};
use appliance_tests::steering::{candidate_config, sid, StorageFabric};
use appliance_tests::storage::DeviceFile;
use appliance_tests::{edit_yaml, metric_sum, output_text, run_timeout, Appliance};
use serde_yaml_ng::Value;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn node_config(k: usize, device: &DeviceFile) -> String {
    edit_yaml(&candidate_config(k, 8, 0, true), |v| {
        let mut st = serde_yaml_ng::Mapping::new();
        st.insert("object_prefix".into(), Value::from(format!("{}/64", object_prefix(k))));
        st.insert("device".into(), Value::from(device.0.display().to_string()));
        st.insert("size_mb".into(), Value::from(400));
        v["storage"] = Value::Mapping(st);
        v["eal"]["memory_mb"] = Value::from(256);
    })
}

/// One image agent in a host namespace; its API at 127.0.0.1:PORT there (a port per agent).
struct AgentRun {
    proc: Proc,
    ns: String,
    port: u16,
}

static NEXT_PORT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(9400);

impl AgentRun {
    fn start(ns: &str, state: &Path, log: &Path, extra: &[&str]) -> AgentRun {
        let imgagent = bin("imgagent").display().to_string();
        let st = state.display().to_string();
        let port = NEXT_PORT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let listen = format!("127.0.0.1:{port}");
        let mut args =
            vec![imgagent.as_str(), "serve", "--meta", META, "--state", st.as_str(), "--host", ns, "--listen", &listen];
        args.extend_from_slice(extra);
        let mut proc = Proc::spawn(in_net(ns, &args), log);
        if !proc.wait_for("imgagent: serving", Duration::from_secs(20)) {
            let ss = output_text(&run_timeout(&mut in_net(ns, &["ss", "-ltnp"]), Duration::from_secs(10)));
            panic!("agent did not start:\n{}\nlistening in {ns}:\n{ss}", proc.text());
        }
        AgentRun { proc, ns: ns.to_string(), port }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn metrics(&self) -> String {
        let (ok, text) = curl(&self.ns, &self.url("/metrics"));
        assert!(ok, "GET /metrics: {text}");
        text
    }

    fn metric(&self, name: &str, filter: &[(&str, &str)]) -> f64 {
        metric_sum(&self.metrics(), name, filter)
    }

    fn status(&self) -> String {
        curl(&self.ns, &self.url("/status")).1
    }
}

/// `objcli image run IMAGE --ready-port 8000 -- python3 -m http.server 8000 --bind 127.0.0.1`
/// in host `ns`, in the background.
fn start_container(agent: &AgentRun, scratch: &Scratch, id: &str, log: &Path) -> Proc {
    let ns = agent.ns.as_str();
    let agent_url = agent.url("");
    let objcli = bin("objcli").display().to_string();
    let bundles = scratch.dir.join("bundles").display().to_string();
    let id = format!("{}{id}", scratch.runc_prefix);
    Proc::spawn(
        in_net(
            ns,
            &[
                &objcli,
                "image",
                "run",
                "deb",
                "--agent",
                &agent_url,
                "--id",
                &id,
                "--bundle-root",
                &bundles,
                "--ready-port",
                "8000",
                "--",
                "python3",
                "-m",
                "http.server",
                "8000",
                "--bind",
                "127.0.0.1",
            ],
        ),
        log,
    )
}

/// Starts a container, waits until it answers, checks the page, stops it cleanly.
fn run_and_check(agent: &AgentRun, scratch: &Scratch, id: &str) -> String {
    let ns = agent.ns.as_str();
    let log = scratch.dir.join(format!("{id}.log"));
    let mut c = start_container(agent, scratch, id, &log);
    assert!(
        c.wait_for("objcli: ready after", Duration::from_secs(120)),
        "container {id} did not answer:\n{}",
        c.text()
    );
    let (ok, page) = curl(ns, "http://127.0.0.1:8000/");
    assert!(ok && page.contains("Directory listing for /"), "http.server in {id} answered: {page}");
    assert!(page.contains("usr/") && page.contains("etc/"), "the container's root is the Debian tree: {page}");
    c.signal(rustix::process::Signal::TERM);
    assert!(c.wait(Duration::from_secs(30)).is_some(), "objcli image run did not end after SIGTERM:\n{}", c.text());
    c.text()
}

#[test]
fn lazy_container_images_end_to_end() {
    let rootfs = debian_rootfs();
    let scratch = Scratch::new("e2e");
    let st = StorageFabric::up("imgs");
    let devices: Vec<DeviceFile> = (1..=3).map(|k| DeviceFile::new(&format!("img{k}"))).collect();
    let mut nodes: Vec<Appliance> =
        (1..=3).map(|k| Appliance::start_in(&st.appliance_ns(k), &node_config(k, &devices[k - 1]))).collect();
    for k in 1..=3 {
        st.exec_ok(
            "cl",
            &["ip", "-6", "route", "add", &format!("{}/64", object_prefix(k)), "via", &format!("2001:db8:5::{k}")],
        );
    }
    let hosts = Hosts::add(&st, &[2, 3]);
    let (h2, h3) = (hosts.ns(2), hosts.ns(3));
    let cl = st.ns("cl");
    let objmeta = bin("objmeta").display().to_string();
    let db = scratch.dir.join("meta.db").display().to_string();
    let meta = Proc::spawn(
        in_net(
            &cl,
            &[&objmeta, "serve", "--listen", "[::]:7070", "--down-after", "3600", "--store", &format!("embedded:{db}")],
        ),
        &scratch.dir.join("objmeta.log"),
    );
    let mut up = false;
    for _ in 0..100 {
        if curl(&h2, &format!("{META}/health")).1.contains("ok") {
            up = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(up, "objmeta does not answer from h2:\n{}", meta.text());
    for k in 1..=3 {
        let body = format!(
            r#"{{"id":"n{k}","object_prefix":"{}/64","storage_sid":"{}","capacity_bytes":400000000,"failure_domain":"rack{k}"}}"#,
            object_prefix(k),
            sid(k)
        );
        let (ok, out) = curl_post(&cl, &format!("{META}/nodes"), &body);
        assert!(ok && out.contains(&format!("\"n{k}\"")), "register n{k}: {out}");
    }

    // 1. Push, twice: the second stores nothing new.
    let objcli = bin("objcli").display().to_string();
    let root = rootfs.display().to_string();
    let push = |what: &str| {
        let out = run_timeout(
            &mut in_net(&cl, &[&objcli, "--meta", META, "image", "push", &root, "deb"]),
            Duration::from_secs(900),
        );
        let text = output_text(&out);
        assert!(out.status.success(), "{what} push: {text}");
        eprintln!("{what} push: {text}");
        let field = |k: &str| -> u64 {
            let w: Vec<&str> = text.split_whitespace().collect();
            w.iter()
                .position(|x| *x == k)
                .and_then(|i| w.get(i + 1))
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{k} in {text}"))
        };
        (field("chunks"), field("stored"), field("reused"), field("size"), field("bytes_stored"))
    };
    let (chunks, stored, reused, size, bytes_stored) = push("first");
    assert!(chunks > 1000 && stored > 0 && stored + reused <= chunks, "first push: {chunks} chunks, {stored} stored");
    assert_eq!(reused, 0, "nothing was stored before");
    let (chunks2, stored2, reused2, _, _) = push("second");
    assert_eq!((chunks2, stored2, reused2), (chunks, 0, stored), "the second push stores nothing new");
    for (k, n) in nodes.iter().enumerate() {
        let w = n.metric_sum("appliance_storage_chunks_written_total", &[]);
        assert!(w as u64 >= bytes_stored / 4096, "node {} holds every distinct chunk ({w} blocks written)", k + 1);
    }

    // 2 + 3. A lazy start on h2 with runc; the container answers; the trace is stored.
    let a2 = AgentRun::start(&h2, &scratch.dir.join("h2"), &scratch.dir.join("agent-h2.log"), &[]);
    let log = run_and_check(&a2, &scratch, "c1");
    assert!(log.contains("exited"), "{log}");
    let demand_first = a2.metric("imgagent_chunks_fetched_total", &[("reason", "demand")]);
    let bytes_first = a2.metric("imgagent_bytes_fetched_total", &[]);
    eprintln!("first lazy start on h2: {demand_first} chunks on demand, {bytes_first} bytes of {size}");
    assert!(demand_first > 0.0, "chunks were fetched on demand");
    assert!(bytes_first < size as f64 * 0.5, "a lazy start fetches a fraction of the image: {bytes_first} of {size}");
    assert_eq!(a2.metric("imgagent_traces_uploaded_total", &[]), 1.0, "{}", a2.proc.text());
    let traces =
        run_timeout(&mut in_net(&cl, &[&objcli, "--meta", META, "image", "traces", "deb"]), Duration::from_secs(30));
    assert!(output_text(&traces).contains("1 traces"), "{}", output_text(&traces));

    // The whole tree read through the lazy mount equals the original (every byte fetched,
    // checked, served through FUSE and erofs).
    let (ok, m) = curl_post(&h2, &a2.url("/images/deb/mount"), "{\"prefetch\":false,\"trace\":false}");
    assert!(ok && m.contains("\"lower\""), "mount: {m}");
    let lower = scratch.dir.join("h2/mnt/deb");
    let lazy = tree_listing(&lower);
    let orig = tree_listing(&rootfs);
    assert!(lazy.lines().count() > 8000, "the listing covers the tree");
    if lazy != orig {
        let diff: Vec<String> = orig
            .lines()
            .zip(lazy.lines())
            .filter(|(a, b)| a != b)
            .take(5)
            .map(|(a, b)| format!("{a}\n  vs {b}"))
            .collect();
        panic!("the tree read through the lazy mount differs from the original:\n{}", diff.join("\n"));
    }
    let (ok, out) = curl_post(&h2, &a2.url("/images/deb/unmount"), "{}");
    assert!(ok, "{out}");

    // 6. Metrics pass promtool; the fetch histogram and ratios are there.
    let metrics_file = scratch.dir.join("metrics.txt");
    std::fs::write(&metrics_file, a2.metrics()).unwrap();
    let out = run_timeout(
        Command::new("sh").arg("-c").arg(format!("promtool check metrics < {}", metrics_file.display())),
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "promtool check metrics: {}", output_text(&out));
    assert!(a2.metric("imgagent_fetch_latency_seconds_count", &[]) >= demand_first);
    assert!(a2.metric("imgagent_time_to_first_byte_seconds_count", &[]) >= 1.0);
    assert!(a2.metric("imgagent_cache_hit_ratio", &[]) > 0.0);

    // 4. A second start on a third host uses h2's trace: fewer chunks on demand.
    let a3 = AgentRun::start(&h3, &scratch.dir.join("h3"), &scratch.dir.join("agent-h3.log"), &[]);
    run_and_check(&a3, &scratch, "c2");
    let demand_second = a3.metric("imgagent_chunks_fetched_total", &[("reason", "demand")]);
    let prefetched = a3.metric("imgagent_chunks_fetched_total", &[("reason", "prefetch")]);
    let accuracy = a3.metric("imgagent_prefetch_accuracy", &[]);
    let coverage = a3.metric("imgagent_prefetch_coverage", &[]);
    eprintln!("start on h3 with h2's trace: {demand_second} on demand, {prefetched} prefetched, accuracy {accuracy}, coverage {coverage}");
    assert!(prefetched > 0.0, "chunks were prefetched along the trace");
    assert!(demand_second < demand_first, "fewer chunks on demand with the trace: {demand_second} vs {demand_first}");
    assert!(coverage > 0.5 && accuracy > 0.5, "accuracy {accuracy} coverage {coverage}");
    drop(a3);

    // 5a. The agent killed mid-start (fetches slowed to 20 ms so the start lasts): the
    // container's reads fail, the run ends with an error and cleans up; the restarted agent
    // clears the dead mounts, reuses (and verifies) the cache, and the next start works.
    let state = scratch.dir.join("h3-kill");
    let alog = scratch.dir.join("agent-h3-kill.log");
    let mut ak = AgentRun::start(&h3, &state, &alog, &["--delay-ms", "20", "--no-upload-traces"]);
    let clog = scratch.dir.join("c3.log");
    let mut c3 = start_container(&ak, &scratch, "c3", &clog);
    let mut reads = 0.0;
    for _ in 0..500 {
        reads = ak.metric("imgagent_fuse_reads_total", &[]);
        if reads >= 30.0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(reads >= 30.0, "the start did not get going:\n{}", c3.text());
    assert!(!c3.text().contains("ready after"), "the start was already over: {}", c3.text());
    ak.proc.signal(rustix::process::Signal::KILL);
    assert!(ak.proc.wait(Duration::from_secs(10)).is_some());
    let ended = c3.wait(Duration::from_secs(60));
    assert_eq!(
        ended,
        Some(false),
        "the container run fails (not hangs, not succeeds) without its agent:\n{}",
        c3.text()
    );
    assert!(!c3.text().contains("ready after"), "{}", c3.text());
    let cached_before = std::fs::read_dir(state.join("chunks")).unwrap().count();
    assert!(cached_before > 0);
    drop(ak);
    let ak = AgentRun::start(&h3, &state, &scratch.dir.join("agent-h3-restart.log"), &["--no-upload-traces"]);
    assert!(ak.proc.text().contains("cleared"), "stale mounts were cleared: {}", ak.proc.text());
    assert!(ak.status().contains(&format!("\"cache_chunks\":{cached_before}")), "{}", ak.status());
    run_and_check(&ak, &scratch, "c4");
    assert_eq!(ak.metric("imgagent_cache_verify_failures_total", &[]), 0.0);
    assert!(ak.metric("imgagent_cache_hits_total", &[]) > 0.0, "the kept cache served reads");
    let (ok, _) = curl_post(&h3, &ak.url("/images/deb/mount"), "{\"prefetch\":false,\"trace\":false}");
    assert!(ok);
    assert!(tree_listing(&state.join("mnt/deb")) == orig, "after the restart the tree is still the original");
    curl_post(&h3, &ak.url("/images/deb/unmount"), "{}");

    // 5b. Garbage collection: the unused image and its chunks go.
    let (ok, gc) = curl_post(&h3, &ak.url("/gc"), "{\"max_idle_s\":0}");
    assert!(ok && gc.contains("\"images_removed\":[\"deb\"]"), "gc: {gc}");
    assert_eq!(ak.metric("imgagent_cache_bytes", &[]), 0.0, "{gc}");
    drop(ak);

    // 5c. A small cache (8 MiB, below a start's working set): the limit holds, chunks are
    // evicted, the start still succeeds.
    let small = AgentRun::start(
        &h3,
        &scratch.dir.join("h3-small"),
        &scratch.dir.join("agent-h3-small.log"),
        &["--cache-mb", "8", "--no-upload-traces"],
    );
    run_and_check(&small, &scratch, "c5");
    assert!(small.metric("imgagent_cache_bytes", &[]) <= 8.0 * 1048576.0);
    assert!(small.metric("imgagent_cache_evictions_total", &[]) > 0.0);
    drop(small);

    // 5d. A storage node killed during a start: the start still succeeds (failover).
    let a_fo =
        AgentRun::start(&h2, &scratch.dir.join("h2-fo"), &scratch.dir.join("agent-h2-fo.log"), &["--no-upload-traces"]);
    let folog = scratch.dir.join("c6.log");
    let mut c6 = start_container(&a_fo, &scratch, "c6", &folog);
    for _ in 0..500 {
        if a_fo.metric("imgagent_fuse_reads_total", &[]) >= 10.0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    nodes[0].kill();
    assert!(
        c6.wait_for("objcli: ready after", Duration::from_secs(120)),
        "start with a node killed:\n{}\n{}",
        c6.text(),
        a_fo.proc.text()
    );
    let (ok, page) = curl(&h2, "http://127.0.0.1:8000/");
    assert!(ok && page.contains("Directory listing"), "{page}");
    c6.signal(rustix::process::Signal::TERM);
    c6.wait(Duration::from_secs(30));
    let failovers = a_fo.metric("imgagent_failovers_total", &[]);
    eprintln!("start with n1 killed: {failovers} failovers");
    assert!(failovers > 0.0, "fetches failed over from the dead node:\n{}", a_fo.proc.text());
    drop(a_fo);

    // 5e. No replica reachable: a clear error.
    nodes[1].kill();
    nodes[2].kill();
    let a_dead = AgentRun::start(
        &h2,
        &scratch.dir.join("h2-dead"),
        &scratch.dir.join("agent-h2-dead.log"),
        &["--timeout-ms", "20", "--tries", "2"],
    );
    let dlog = scratch.dir.join("c7.log");
    let mut c7 = start_container(&a_dead, &scratch, "c7", &dlog);
    assert_eq!(c7.wait(Duration::from_secs(120)), Some(false), "{}", c7.text());
    let text = c7.text();
    assert!(text.contains("no replica could serve it"), "the run names the cause: {text}");
    assert!(a_dead.status().contains("no replica could serve it"), "{}", a_dead.status());
    drop(a_dead);
    drop(meta);
}
