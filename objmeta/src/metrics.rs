//! The service's metrics (`GET /metrics`, the Prometheus text format 0.0.4; every metric is
//! described in `docs/metrics.md`).
//!
//! * HTTP requests by method, route (the path's template, `/objects/{id}`, so the label set
//!   stays bounded) and status, and a latency histogram per route, recorded by the server;
//! * intents by op and result, recorded by the service;
//! * store operations and errors by operation, counted by [`CountingStore`], which wraps
//!   whatever store the service is given;
//! * nodes, objects and images as the store holds them now ([`Census`], read at scrape time:
//!   a scan of the node, object and image keys, so several instances over one etcd agree).
//!
//! Not a fast path: requests are counted under a mutex.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use promtext::Writer;

use crate::error::StoreError;
use crate::store::{Kv, MetaStore};

/// Upper bounds (seconds) of the request latency buckets.
pub const LATENCY_BOUNDS_S: [f64; 12] = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 5.0];

/// Route labels: every path the API serves, as a template; anything else is `other`.
pub const ROUTES: [&str; 13] = [
    "/nodes",
    "/nodes/{id}",
    "/nodes/{id}/heartbeat",
    "/objects",
    "/objects/{id}",
    "/objects/{id}/commit",
    "/intent",
    "/images",
    "/images/{name}",
    "/images/{name}/traces",
    "/health",
    "/metrics",
    "other",
];

/// Store operations, in [`Metrics`] counter order.
pub const STORE_OPS: [&str; 5] = ["get", "put", "delete", "list", "compare_and_swap"];

/// The route template of `path` (query excluded).
pub fn route_of(path: &str) -> &'static str {
    let segs: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    match segs.as_slice() {
        ["nodes"] => ROUTES[0],
        ["nodes", _] => ROUTES[1],
        ["nodes", _, "heartbeat"] => ROUTES[2],
        ["objects"] => ROUTES[3],
        ["objects", _] => ROUTES[4],
        ["objects", _, "commit"] => ROUTES[5],
        ["intent"] => ROUTES[6],
        ["images"] => ROUTES[7],
        ["images", _] => ROUTES[8],
        ["images", _, "traces"] => ROUTES[9],
        ["health"] => ROUTES[10],
        ["metrics"] => ROUTES[11],
        _ => ROUTES[12],
    }
}

fn method_label(m: &str) -> &'static str {
    match m {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        _ => "other",
    }
}

#[derive(Default, Clone)]
struct Histogram {
    counts: [u64; LATENCY_BOUNDS_S.len() + 1],
    sum_s: f64,
}

/// What the store holds now (read at scrape time).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Census {
    pub nodes_up: u64,
    pub nodes_down: u64,
    /// (node id, capacity bytes, used bytes as last reported)
    pub node_bytes: Vec<(String, u64, u64)>,
    pub objects_creating: u64,
    pub objects_complete: u64,
    pub objects_deleting: u64,
    pub images: u64,
}

/// The service's counters.
#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(&'static str, &'static str, u16), u64>>,
    latency: Mutex<BTreeMap<&'static str, Histogram>>,
    intents: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    store_ops: [AtomicU64; STORE_OPS.len()],
    store_errors: [AtomicU64; STORE_OPS.len()],
}

impl Metrics {
    /// Counts one answered HTTP request.
    pub fn request(&self, method: &str, path: &str, status: u16, took: Duration) {
        let route = route_of(path);
        *self.requests.lock().expect("metrics lock").entry((method_label(method), route, status)).or_default() += 1;
        let s = took.as_secs_f64();
        let mut lat = self.latency.lock().expect("metrics lock");
        let h = lat.entry(route).or_default();
        h.counts[LATENCY_BOUNDS_S.iter().position(|&b| s <= b).unwrap_or(LATENCY_BOUNDS_S.len())] += 1;
        h.sum_s += s;
    }

    /// Counts one intent (`op`: store or retrieve; `result`: `ok` or the error kind).
    pub fn intent(&self, op: &'static str, result: &'static str) {
        *self.intents.lock().expect("metrics lock").entry((op, result)).or_default() += 1;
    }

    fn store_op<T>(&self, op: usize, r: Result<T, StoreError>) -> Result<T, StoreError> {
        self.store_ops[op].fetch_add(1, Ordering::Relaxed);
        if r.is_err() {
            self.store_errors[op].fetch_add(1, Ordering::Relaxed);
        }
        r
    }

    /// The exposition; `census` is `None` when the store could not be read for it.
    pub fn render(&self, census: Option<&Census>) -> String {
        let mut w = Writer::new();
        w.gauge("objmeta_build_info", "Always 1; the label says which version runs")
            .sample(&[("version", env!("CARGO_PKG_VERSION"))], 1u64);
        self.render_http(&mut w);
        self.render_store(&mut w);
        w.gauge("objmeta_store_readable", "1 when this scrape could read the census below from the store, else 0")
            .sample(&[], u64::from(census.is_some()));
        if let Some(c) = census {
            render_census(&mut w, c);
        }
        w.finish()
    }

    fn render_http(&self, w: &mut Writer) {
        let requests = self.requests.lock().expect("metrics lock").clone();
        let mut f = w.counter("objmeta_http_requests_total", "HTTP requests answered, by method, route and status");
        for ((method, route, status), n) in requests {
            f.sample(&[("method", method), ("route", route), ("status", &status.to_string())], n);
        }
        let latency = self.latency.lock().expect("metrics lock").clone();
        let mut h = w.histogram("objmeta_http_request_duration_seconds", "Time to answer an HTTP request, by route");
        for (route, hist) in latency {
            h.series(&[("route", route)], &LATENCY_BOUNDS_S, &hist.counts, hist.sum_s);
        }
        let intents = self.intents.lock().expect("metrics lock").clone();
        let mut f = w.counter("objmeta_intents_total", "Intents answered, by op and result (ok or the error kind)");
        for ((op, result), n) in intents {
            f.sample(&[("op", op), ("result", result)], n);
        }
    }

    fn render_store(&self, w: &mut Writer) {
        let mut f = w.counter("objmeta_store_operations_total", "Operations on the key-value store, by operation");
        for (i, op) in STORE_OPS.iter().enumerate() {
            f.sample(&[("op", op)], self.store_ops[i].load(Ordering::Relaxed));
        }
        let mut f = w.counter("objmeta_store_errors_total", "Store operations that failed, by operation");
        for (i, op) in STORE_OPS.iter().enumerate() {
            f.sample(&[("op", op)], self.store_errors[i].load(Ordering::Relaxed));
        }
    }
}

fn render_census(w: &mut Writer, c: &Census) {
    w.gauge("objmeta_nodes", "Storage nodes registered, by health")
        .sample(&[("state", "up")], c.nodes_up)
        .sample(&[("state", "down")], c.nodes_down);
    let mut f = w.gauge("objmeta_node_capacity_bytes", "Capacity of a storage node, as it registered");
    for (node, capacity, _) in &c.node_bytes {
        f.sample(&[("node", node)], *capacity);
    }
    let mut f = w.gauge("objmeta_node_used_bytes", "Space a storage node last reported in use");
    for (node, _, used) in &c.node_bytes {
        f.sample(&[("node", node)], *used);
    }
    w.gauge("objmeta_objects", "Objects whose metadata the store holds, by state")
        .sample(&[("state", "creating")], c.objects_creating)
        .sample(&[("state", "complete")], c.objects_complete)
        .sample(&[("state", "deleting")], c.objects_deleting);
    w.gauge("objmeta_images", "Container images (manifests) the store holds").sample(&[], c.images);
}

/// A store that counts every operation and failure of the store it wraps.
pub struct CountingStore {
    inner: Box<dyn MetaStore>,
    metrics: Arc<Metrics>,
}

impl CountingStore {
    pub fn new(inner: Box<dyn MetaStore>, metrics: Arc<Metrics>) -> CountingStore {
        CountingStore { inner, metrics }
    }
}

impl MetaStore for CountingStore {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.metrics.store_op(0, self.inner.get(key))
    }
    fn put(&self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.metrics.store_op(1, self.inner.put(key, value))
    }
    fn delete(&self, key: &[u8]) -> Result<bool, StoreError> {
        self.metrics.store_op(2, self.inner.delete(key))
    }
    fn list_prefix(&self, prefix: &[u8], start_after: Option<&[u8]>, limit: usize) -> Result<Vec<Kv>, StoreError> {
        self.metrics.store_op(3, self.inner.list_prefix(prefix, start_after, limit))
    }
    fn compare_and_swap(&self, key: &[u8], expected: Option<&[u8]>, new: Option<&[u8]>) -> Result<bool, StoreError> {
        self.metrics.store_op(4, self.inner.compare_and_swap(key, expected, new))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_templates() {
        assert_eq!(route_of("/objects/0x2a/commit"), "/objects/{id}/commit");
        assert_eq!(route_of("/nodes/n1/"), "/nodes/{id}");
        assert_eq!(route_of("/images/deb%2Fbase/traces"), "/images/{name}/traces");
        assert_eq!(route_of("/"), "other");
        assert_eq!(route_of("/objects/1/2/3"), "other");
        for r in ROUTES.iter().filter(|r| **r != "other") {
            assert_eq!(route_of(&r.replace("{id}", "x").replace("{name}", "y")), *r);
        }
    }

    #[test]
    fn renders_clean_text_format() {
        let m = Metrics::default();
        m.request("GET", "/objects/7", 404, Duration::from_micros(300));
        m.request("GET", "/objects/8", 200, Duration::from_millis(3));
        m.request("PATCH", "/x", 404, Duration::from_secs(9));
        m.intent("store", "ok");
        let census = Census { nodes_up: 2, node_bytes: vec![("n\"1".into(), 10, 4)], ..Default::default() };
        let t = m.render(Some(&census));
        if let Err(p) = promtext::lint(&t) {
            panic!("{}\n{t}", p.join("\n"));
        }
        for line in [
            "objmeta_http_requests_total{method=\"GET\",route=\"/objects/{id}\",status=\"404\"} 1",
            "objmeta_http_requests_total{method=\"other\",route=\"other\",status=\"404\"} 1",
            "objmeta_http_request_duration_seconds_bucket{route=\"/objects/{id}\",le=\"0.0005\"} 1",
            "objmeta_http_request_duration_seconds_bucket{route=\"/objects/{id}\",le=\"0.005\"} 2",
            "objmeta_http_request_duration_seconds_count{route=\"other\"} 1",
            "objmeta_intents_total{op=\"store\",result=\"ok\"} 1",
            "objmeta_nodes{state=\"up\"} 2",
            "objmeta_node_used_bytes{node=\"n\\\"1\"} 4",
            "objmeta_store_readable 1",
        ] {
            assert!(t.contains(&format!("\n{line}\n")), "{line}:\n{t}");
        }
        let t = m.render(None);
        assert!(t.contains("\nobjmeta_store_readable 0\n") && !t.contains("objmeta_objects"), "{t}");
        assert_eq!(promtext::lint(&t), Ok(()));
    }

    #[test]
    fn docs_describe_every_metric() {
        let docs = include_str!("../../docs/metrics.md");
        let start = docs.find("\n## objmeta\n").expect("docs/metrics.md has ## objmeta");
        let section = &docs[start + 1..];
        let section = &section[..section[3..].find("\n## ").map_or(section.len(), |e| e + 3)];
        let m = Metrics::default();
        m.request("GET", "/health", 200, Duration::ZERO);
        m.intent("retrieve", "not_found");
        let t = m.render(Some(&Census { node_bytes: vec![("n1".into(), 1, 1)], ..Default::default() }));
        for name in t.lines().filter_map(|l| l.strip_prefix("# TYPE ")).filter_map(|l| l.split(' ').next()) {
            assert!(section.contains(&format!("`{name}`")), "{name} is missing from docs/metrics.md (## objmeta)");
        }
    }
}
