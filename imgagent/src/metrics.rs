//! The agent's counters and their Prometheus text exposition (`GET /metrics`).
//!
//! Every family has HELP and TYPE lines; counters end in `_total`; ratios are gauges computed
//! from the counters at scrape time (so they are never stale and a scraper can also compute
//! them itself). The list, with meanings, is in `docs/metrics.md` (a test checks it is complete).

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds (seconds) of the fetch latency histogram.
pub const FETCH_BUCKETS_S: [f64; 12] = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 5.0];

/// A histogram with fixed buckets.
#[derive(Default)]
pub struct Histogram {
    counts: [AtomicU64; 12],
    count: AtomicU64,
    sum_ns: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        if let Some(i) = FETCH_BUCKETS_S.iter().position(|&b| s <= b) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

/// Counters, all monotonic unless said otherwise.
#[derive(Default)]
pub struct Metrics {
    pub chunks_fetched_demand: AtomicU64,
    pub chunks_fetched_prefetch: AtomicU64,
    pub bytes_fetched_demand: AtomicU64,
    pub bytes_fetched_prefetch: AtomicU64,
    /// Chunk lookups of FUSE reads served from the cache / that had to wait for a fetch.
    pub cache_hits: AtomicU64,
    pub cache_misses: AtomicU64,
    /// Readers that joined a fetch already in flight (instead of starting another).
    pub fetch_joins: AtomicU64,
    pub fetch_failures: AtomicU64,
    /// A fetch attempt failed and the next candidate was tried.
    pub failovers: AtomicU64,
    pub digest_mismatches: AtomicU64,
    pub read_errors: AtomicU64,
    pub fuse_reads: AtomicU64,
    pub fuse_read_bytes: AtomicU64,
    pub evictions: AtomicU64,
    pub verify_failures: AtomicU64,
    pub gc_chunks_removed: AtomicU64,
    pub gc_images_removed: AtomicU64,
    pub traces_uploaded: AtomicU64,
    pub trace_upload_failures: AtomicU64,
    /// Prefetch accounting over finished starts.
    pub prefetched: AtomicU64,
    pub prefetched_used: AtomicU64,
    pub needed: AtomicU64,
    pub needed_prefetched: AtomicU64,
    pub prefetch_cancelled: AtomicU64,
    pub starts: AtomicU64,
    pub fetch_latency: Histogram,
    /// Time from an image's mount request to the first byte served, of the last start (ns).
    pub ttfb_last_ns: AtomicU64,
    pub ttfb: Histogram,
    /// Gauges, set by the cache.
    pub cache_bytes: AtomicU64,
    pub cache_chunks: AtomicU64,
    pub cache_max_bytes: AtomicU64,
    pub images_mounted: AtomicU64,
    /// Last start's prefetch accuracy and coverage (‰, so they fit an integer).
    pub last_accuracy_permille: AtomicU64,
    pub last_coverage_permille: AtomicU64,
    /// Last error text, for /status.
    pub last_error: Mutex<String>,
}

fn get(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

fn ratio(num: u64, den: u64) -> f64 {
    if den == 0 {
        0.0
    } else {
        num as f64 / den as f64
    }
}

impl Metrics {
    pub fn add(a: &AtomicU64, v: u64) {
        a.fetch_add(v, Ordering::Relaxed);
    }

    pub fn set_error(&self, e: String) {
        *self.last_error.lock().expect("lock") = e;
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut o = String::new();
        let mut family = |name: &str, kind: &str, help: &str, samples: &[(&str, f64)]| {
            let _ = writeln!(o, "# HELP {name} {help}");
            let _ = writeln!(o, "# TYPE {name} {kind}");
            for (labels, v) in samples {
                let _ = writeln!(o, "{name}{labels} {v}");
            }
        };
        let f = |a: &AtomicU64| get(a) as f64;
        family(
            "imgagent_chunks_fetched_total",
            "counter",
            "Chunks fetched from the object store, by why (demand: a read waited for it; prefetch: the start trace).",
            &[
                ("{reason=\"demand\"}", f(&self.chunks_fetched_demand)),
                ("{reason=\"prefetch\"}", f(&self.chunks_fetched_prefetch)),
            ],
        );
        family(
            "imgagent_bytes_fetched_total",
            "counter",
            "Bytes of chunks fetched from the object store, by why.",
            &[
                ("{reason=\"demand\"}", f(&self.bytes_fetched_demand)),
                ("{reason=\"prefetch\"}", f(&self.bytes_fetched_prefetch)),
            ],
        );
        family(
            "imgagent_cache_hits_total",
            "counter",
            "Chunks a FUSE read found in the local cache.",
            &[("", f(&self.cache_hits))],
        );
        family(
            "imgagent_cache_misses_total",
            "counter",
            "Chunks a FUSE read had to wait for.",
            &[("", f(&self.cache_misses))],
        );
        let (h, m) = (get(&self.cache_hits), get(&self.cache_misses));
        family(
            "imgagent_cache_hit_ratio",
            "gauge",
            "cache hits / (hits + misses) since the agent started.",
            &[("", ratio(h, h + m))],
        );
        family(
            "imgagent_fetch_joins_total",
            "counter",
            "Readers of a missing chunk that waited for a fetch already in flight.",
            &[("", f(&self.fetch_joins))],
        );
        family(
            "imgagent_fetch_failures_total",
            "counter",
            "Chunk fetches that failed on every replica (the reads waiting got EIO).",
            &[("", f(&self.fetch_failures))],
        );
        family(
            "imgagent_failovers_total",
            "counter",
            "Fetch attempts that failed and moved on to the next candidate or replica.",
            &[("", f(&self.failovers))],
        );
        family(
            "imgagent_digest_mismatches_total",
            "counter",
            "Chunks received whose SHA-256 was not the manifest's (discarded).",
            &[("", f(&self.digest_mismatches))],
        );
        family(
            "imgagent_read_errors_total",
            "counter",
            "FUSE reads answered with an error.",
            &[("", f(&self.read_errors))],
        );
        family("imgagent_fuse_reads_total", "counter", "FUSE read requests.", &[("", f(&self.fuse_reads))]);
        family(
            "imgagent_fuse_read_bytes_total",
            "counter",
            "Bytes returned by FUSE reads.",
            &[("", f(&self.fuse_read_bytes))],
        );
        family(
            "imgagent_cache_evictions_total",
            "counter",
            "Chunks evicted to keep the cache under its size limit.",
            &[("", f(&self.evictions))],
        );
        family(
            "imgagent_cache_verify_failures_total",
            "counter",
            "Cached chunks whose digest failed the check on first reuse (removed, fetched again).",
            &[("", f(&self.verify_failures))],
        );
        family(
            "imgagent_gc_chunks_removed_total",
            "counter",
            "Chunks removed by garbage collection of unused images.",
            &[("", f(&self.gc_chunks_removed))],
        );
        family(
            "imgagent_gc_images_removed_total",
            "counter",
            "Images forgotten by garbage collection.",
            &[("", f(&self.gc_images_removed))],
        );
        family(
            "imgagent_traces_uploaded_total",
            "counter",
            "Start traces stored at the metadata service.",
            &[("", f(&self.traces_uploaded))],
        );
        family(
            "imgagent_trace_upload_failures_total",
            "counter",
            "Start traces that could not be stored.",
            &[("", f(&self.trace_upload_failures))],
        );
        family(
            "imgagent_starts_total",
            "counter",
            "Starts (cold mounts of an image) whose trace window ended.",
            &[("", f(&self.starts))],
        );
        family(
            "imgagent_prefetched_chunks_total",
            "counter",
            "Chunks prefetched during finished starts.",
            &[("", f(&self.prefetched))],
        );
        family(
            "imgagent_prefetched_used_chunks_total",
            "counter",
            "Prefetched chunks that their start then read.",
            &[("", f(&self.prefetched_used))],
        );
        family(
            "imgagent_needed_chunks_total",
            "counter",
            "Chunks finished starts read that were not cached when they began.",
            &[("", f(&self.needed))],
        );
        family(
            "imgagent_needed_prefetched_chunks_total",
            "counter",
            "Needed chunks that had been prefetched.",
            &[("", f(&self.needed_prefetched))],
        );
        family(
            "imgagent_prefetch_cancelled_total",
            "counter",
            "Queued prefetches dropped because the start ended or went another way.",
            &[("", f(&self.prefetch_cancelled))],
        );
        family(
            "imgagent_prefetch_accuracy",
            "gauge",
            "Prefetched and used / prefetched, over finished starts.",
            &[("", ratio(get(&self.prefetched_used), get(&self.prefetched)))],
        );
        family(
            "imgagent_prefetch_coverage",
            "gauge",
            "Needed and prefetched / needed, over finished starts.",
            &[("", ratio(get(&self.needed_prefetched), get(&self.needed)))],
        );
        family(
            "imgagent_last_start_prefetch_accuracy",
            "gauge",
            "Prefetch accuracy of the last finished start.",
            &[("", get(&self.last_accuracy_permille) as f64 / 1000.0)],
        );
        family(
            "imgagent_last_start_prefetch_coverage",
            "gauge",
            "Prefetch coverage of the last finished start.",
            &[("", get(&self.last_coverage_permille) as f64 / 1000.0)],
        );
        family("imgagent_cache_bytes", "gauge", "Bytes of chunks in the local cache.", &[("", f(&self.cache_bytes))]);
        family("imgagent_cache_chunks", "gauge", "Chunks in the local cache.", &[("", f(&self.cache_chunks))]);
        family(
            "imgagent_cache_max_bytes",
            "gauge",
            "Size limit of the local cache.",
            &[("", f(&self.cache_max_bytes))],
        );
        family("imgagent_images_mounted", "gauge", "Images mounted now.", &[("", f(&self.images_mounted))]);
        family(
            "imgagent_time_to_first_byte_last_seconds",
            "gauge",
            "Last start: time from the mount request to the first byte served.",
            &[("", get(&self.ttfb_last_ns) as f64 / 1e9)],
        );
        for (name, help, h) in [
            (
                "imgagent_fetch_latency_seconds",
                "Time to fetch one chunk (all replicas tried), successful or not.",
                &self.fetch_latency,
            ),
            (
                "imgagent_time_to_first_byte_seconds",
                "Time from an image's mount request to the first byte served.",
                &self.ttfb,
            ),
        ] {
            let _ = writeln!(o, "# HELP {name} {help}");
            let _ = writeln!(o, "# TYPE {name} histogram");
            let mut cum = 0;
            for (i, b) in FETCH_BUCKETS_S.iter().enumerate() {
                cum += get(&h.counts[i]);
                let _ = writeln!(o, "{name}_bucket{{le=\"{b}\"}} {cum}");
            }
            let _ = writeln!(o, "{name}_bucket{{le=\"+Inf\"}} {}", h.count());
            let _ = writeln!(o, "{name}_sum {}", get(&h.sum_ns) as f64 / 1e9);
            let _ = writeln!(o, "{name}_count {}", h.count());
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_help_type_and_cumulative_buckets() {
        let m = Metrics::default();
        Metrics::add(&m.cache_hits, 3);
        Metrics::add(&m.cache_misses, 1);
        m.fetch_latency.observe(Duration::from_micros(700));
        m.fetch_latency.observe(Duration::from_secs(9));
        let t = m.render();
        assert!(t.contains("imgagent_cache_hit_ratio 0.75\n"), "{t}");
        assert!(t.contains("imgagent_fetch_latency_seconds_bucket{le=\"0.001\"} 1\n"));
        assert!(t.contains("imgagent_fetch_latency_seconds_bucket{le=\"5\"} 1\n"));
        assert!(t.contains("imgagent_fetch_latency_seconds_bucket{le=\"+Inf\"} 2\n"));
        if let Err(p) = promtext::lint(&t) {
            panic!("{}\n{t}", p.join("\n"));
        }
        for line in t.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap();
            let base = name.trim_end_matches("_bucket").trim_end_matches("_sum").trim_end_matches("_count");
            assert!(
                t.contains(&format!("# TYPE {base} ")) || t.contains(&format!("# TYPE {name} ")),
                "{name} has a TYPE"
            );
        }
    }

    #[test]
    fn docs_describe_every_metric() {
        let docs = include_str!("../../docs/metrics.md");
        let start = docs.find("\n## imgagent\n").expect("docs/metrics.md has ## imgagent");
        let section = &docs[start + 1..];
        let section = &section[..section[3..].find("\n## ").map_or(section.len(), |e| e + 3)];
        let t = Metrics::default().render();
        for name in t.lines().filter_map(|l| l.strip_prefix("# TYPE ")).filter_map(|l| l.split(' ').next()) {
            assert!(section.contains(&format!("`{name}`")), "{name} is missing from docs/metrics.md (## imgagent)");
        }
    }
}
