//! `lcores:` — the main, worker and NAT mapping lcores and the CPUs they
//! are pinned to — and `mempool:`, the one mbuf pool they share. Whether
//! the pool covers the rings and fits the hugepage memory is checked across
//! sections (`super::check_mbufs`, `super::check_hugepages`); whether the
//! CPUs exist, by [`Config::check_host`](super::Config::check_host).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::{count, range, ConfigError, Res};

/// Most worker lcores (`lcores.workers`).
const MAX_WORKERS: usize = 64;
/// Lcore ids are below this (DPDK's default `RTE_MAX_LCORE`).
const MAX_LCORE: u32 = 128;
/// CPU ids are below this.
const MAX_CPU: u32 = 1024;
/// DPDK's `RTE_PKTMBUF_HEADROOM`: bytes of an mbuf's data room kept in front of the frame.
pub(super) const MBUF_HEADROOM: u32 = 128;
/// `sizeof(struct rte_mbuf)`: the header in front of every data room.
const MBUF_HEADER_BYTES: u32 = 128;
/// What the mempool adds to each object: its header, rounded up to a cache line.
const MEMPOOL_OBJECT_OVERHEAD_BYTES: u32 = 64;

/// `lcores:` as the file writes it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct LcoresYaml {
    main: LcoreYaml,
    workers: Vec<LcoreYaml>,
    mapper: Option<LcoreYaml>,
}

impl Default for LcoresYaml {
    fn default() -> Self {
        LcoresYaml {
            main: LcoreYaml { lcore: 0, cpu: Some(0) },
            workers: vec![LcoreYaml { lcore: 1, cpu: Some(1) }],
            mapper: None,
        }
    }
}

/// `{lcore, cpu}`; `cpu` defaults to the lcore id (and is printed so).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct LcoreYaml {
    lcore: i64,
    #[serde(default)]
    cpu: Option<i64>,
}

/// `mempool:` as the file writes it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct MempoolYaml {
    mbufs: i64,
    cache_size: i64,
    data_room_bytes: i64,
}

impl Default for MempoolYaml {
    fn default() -> Self {
        MempoolYaml { mbufs: 8191, cache_size: 256, data_room_bytes: 2176 }
    }
}

/// The lcores (`lcores:`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lcores {
    /// The main lcore: control plane, metrics, slow path.
    pub main: Lcore,
    /// Poll-mode workers, 1..=64. Worker `w` is `workers[w]`.
    pub workers: Vec<Lcore>,
    /// The NAT mapping server's lcore: required with `nat:`, refused without.
    pub mapper: Option<Lcore>,
}

impl Lcores {
    /// Every lcore with its field path: main, the workers, the mapper.
    pub(super) fn with_paths(&self) -> Vec<(String, Lcore)> {
        let mut out = vec![("lcores.main".to_string(), self.main)];
        for (i, w) in self.workers.iter().enumerate() {
            out.push((format!("lcores.workers[{i}]"), *w));
        }
        if let Some(m) = self.mapper {
            out.push(("lcores.mapper".to_string(), m));
        }
        out
    }
}

/// An EAL lcore pinned to a CPU (`--lcores lcore@cpu`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Lcore {
    /// EAL lcore id, < 128, unique.
    pub lcore: u32,
    /// CPU the lcore's thread runs on, < 1024; lcores may share a CPU.
    pub cpu: u32,
}

/// The mbuf pool (`mempool:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mempool {
    /// Number of mbufs, 1023..=1048575 (best: a power of two minus one).
    pub mbufs: u32,
    /// Per-lcore cache, 0..=512 and `cache_size * 3 / 2 <= mbufs`.
    pub cache_size: u32,
    /// Data room of an mbuf including the 128-byte headroom, 1152..=65535.
    pub data_room_bytes: u16,
}

impl Mempool {
    /// Bytes of one mbuf: the `rte_mbuf` header and the data room (which
    /// includes the headroom).
    pub fn mbuf_bytes(&self) -> u64 {
        u64::from(MBUF_HEADER_BYTES) + u64::from(self.data_room_bytes)
    }

    /// Bytes one mbuf takes in the pool: the mbuf rounded up to a cache
    /// line, as `rte_mempool` lays objects out, and the mempool's own
    /// overhead.
    pub fn object_bytes(&self) -> u64 {
        self.mbuf_bytes().next_multiple_of(64) + u64::from(MEMPOOL_OBJECT_OVERHEAD_BYTES)
    }
}

/// Validates the lcores, and prints every `cpu` (the lcore id when absent).
pub(super) fn validate_lcores(r: &mut LcoresYaml) -> Res<Lcores> {
    let main = validate_lcore("lcores.main", &mut r.main)?;
    count("lcores.workers", r.workers.len(), 1, MAX_WORKERS)?;
    let mut seen: HashMap<u32, String> = HashMap::new();
    seen.insert(main.lcore, "lcores.main".to_string());
    let mut workers = Vec::with_capacity(r.workers.len());
    for (i, w) in r.workers.iter_mut().enumerate() {
        let path = format!("lcores.workers[{i}]");
        let l = validate_lcore(&path, w)?;
        if let Some(other) = seen.get(&l.lcore) {
            return Err(ConfigError::invalid(
                format!("{path}.lcore"),
                format!("lcore {} is already used by {other}", l.lcore),
            ));
        }
        seen.insert(l.lcore, path);
        workers.push(l);
    }
    let mapper = match &mut r.mapper {
        None => None,
        Some(m) => {
            let l = validate_lcore("lcores.mapper", m)?;
            if let Some(other) = seen.get(&l.lcore) {
                return Err(ConfigError::invalid(
                    "lcores.mapper.lcore",
                    format!("lcore {} is already used by {other}", l.lcore),
                ));
            }
            Some(l)
        }
    };
    Ok(Lcores { main, workers, mapper })
}

fn validate_lcore(path: &str, l: &mut LcoreYaml) -> Res<Lcore> {
    let lcore = range(&format!("{path}.lcore"), l.lcore, 0, i64::from(MAX_LCORE) - 1)?;
    let cpu = range(&format!("{path}.cpu"), l.cpu.unwrap_or(l.lcore), 0, i64::from(MAX_CPU) - 1)?;
    l.cpu = Some(i64::from(cpu));
    Ok(Lcore { lcore, cpu })
}

/// DPDK's `rte_mempool_create` refuses `cache_size * 3 / 2 > n`.
fn max_cache_size(mbufs: u32) -> u32 {
    (2 * mbufs + 1) / 3
}

pub(super) fn validate_mempool(r: &MempoolYaml) -> Res<Mempool> {
    let mbufs: u32 = range("mempool.mbufs", r.mbufs, 1023, 1_048_575)?;
    let cache_size: u32 = range("mempool.cache_size", r.cache_size, 0, 512)?;
    if cache_size > max_cache_size(mbufs) {
        return Err(ConfigError::invalid(
            "mempool.cache_size",
            format!("must be <= mbufs / 1.5 ({} for {mbufs} mbufs)", max_cache_size(mbufs)),
        ));
    }
    let data_room_bytes = range("mempool.data_room_bytes", r.data_room_bytes, 1152, 65535)?;
    Ok(Mempool { mbufs, cache_size, data_room_bytes })
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    #[test]
    fn lcores_rules() {
        assert_err(&format!("{BASE}lcores:\n  workers: []\n"), "lcores.workers: must have 1..=64 entries, has 0");
        let many: Vec<String> = (1..=65).map(|i| format!("{{lcore: {i}, cpu: 1}}")).collect();
        assert_err(
            &format!("{BASE}lcores:\n  workers: [{}]\n", many.join(", ")),
            "lcores.workers: must have 1..=64 entries, has 65",
        );
        assert_err(
            &format!("{BASE}lcores:\n  workers: [{{lcore: 128, cpu: 1}}]\n"),
            "lcores.workers[0].lcore: must be 0..=127",
        );
        assert_err(
            &format!("{BASE}lcores:\n  workers: [{{lcore: 1, cpu: 1024}}]\n"),
            "lcores.workers[0].cpu: must be 0..=1023",
        );
        assert_err(&format!("{BASE}lcores:\n  main: {{lcore: -1, cpu: 0}}\n"), "lcores.main.lcore: must be 0..=127");
        assert_err(
            &format!("{BASE}lcores:\n  workers: [{{lcore: 1, cpu: 1}}, {{lcore: 1, cpu: 0}}]\n"),
            "lcores.workers[1].lcore: lcore 1 is already used by lcores.workers[0]",
        );
        assert_err(
            &format!("{BASE}lcores:\n  workers: [{{lcore: 0, cpu: 1}}]\n"),
            "lcores.workers[0].lcore: lcore 0 is already used by lcores.main",
        );
        // several lcores on one cpu is fine
        ok(&format!("{BASE}lcores:\n  main: {{lcore: 0, cpu: 1}}\n  workers: [{{lcore: 1, cpu: 1}}]\n"));
    }

    #[test]
    fn worker_cpu_defaults_to_lcore_id() {
        let c = ok(&format!("{BASE}lcores:\n  workers: [{{lcore: 3}}]\n"));
        assert_eq!(c.lcores.workers, vec![Lcore { lcore: 3, cpu: 3 }]);
    }

    #[test]
    fn mempool_ranges() {
        assert_err(&format!("{BASE}mempool:\n  mbufs: 1000\n"), "mempool.mbufs: must be 1023..=1048575");
        assert_err(&format!("{BASE}mempool:\n  cache_size: 513\n"), "mempool.cache_size: must be 0..=512");
        assert_err(
            &format!("{BASE}mempool:\n  data_room_bytes: 1000\n"),
            "mempool.data_room_bytes: must be 1152..=65535",
        );
        assert_err(
            &format!("{BASE}mempool:\n  data_room_bytes: 65536\n"),
            "mempool.data_room_bytes: must be 1152..=65535",
        );
    }

    #[test]
    fn cache_size_rule() {
        // DPDK: cache_size * 3 / 2 <= n. With mbufs >= 1023 and cache <= 512 it always
        // holds, so check the formula itself.
        assert_eq!(max_cache_size(8191), 5461);
        assert_eq!(max_cache_size(1023), 682);
        for n in [1023u32, 1024, 1025, 4095, 8191, 1_048_575] {
            let c = max_cache_size(n);
            assert!(c * 3 / 2 <= n && (c + 1) * 3 / 2 > n, "{n}: {c}");
        }
    }

    #[test]
    fn mbuf_sizes() {
        let m = ok(BASE).mempool;
        assert_eq!((m.mbuf_bytes(), m.object_bytes()), (2304, 2368));
        let odd = Mempool { data_room_bytes: 9146, ..m };
        assert_eq!((odd.mbuf_bytes(), odd.object_bytes()), (9274, 9344));
    }
}
