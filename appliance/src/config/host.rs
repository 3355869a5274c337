//! What the configuration needs of the machine it runs on, checked apart
//! from parsing ([`Config::check_host`]) so that parsing gives the same
//! answer on every machine: the CPUs the lcores are pinned to must exist
//! and be usable by this process, and the mbuf pools (one per NUMA node
//! the lcores sit on) must fit `eal.memory_mb`.

use std::fmt;

use super::{Config, ConfigError, Res};

/// The machine's CPUs as this process sees them. [`Host::current`] reads
/// them; tests describe a machine with [`Host::with_cpus`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// Online CPUs (`/sys/devices/system/cpu/online`); `None`: unknown.
    online: Option<CpuList>,
    /// CPUs this process may run on (`Cpus_allowed_list` of
    /// `/proc/self/status`, its `sched_getaffinity` mask); `None`: unknown.
    allowed: Option<CpuList>,
    /// (cpu, NUMA node) where `/sys` says; a CPU missing here is on node 0.
    nodes: Vec<(u32, u32)>,
}

impl Host {
    /// This machine, read from `/sys` and `/proc`. What cannot be read is
    /// not checked.
    pub fn current() -> Host {
        let online =
            std::fs::read_to_string("/sys/devices/system/cpu/online").ok().and_then(|t| CpuList::parse(t.trim()));
        let allowed = std::fs::read_to_string("/proc/self/status").ok().and_then(|t| {
            t.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:")).and_then(|v| CpuList::parse(v.trim()))
        });
        let nodes = (0..1024u32)
            .map_while(|cpu| std::fs::read_dir(format!("/sys/devices/system/cpu/cpu{cpu}")).ok().map(|d| (cpu, d)))
            .filter_map(|(cpu, dir)| {
                dir.flatten().find_map(|e| e.file_name().to_str()?.strip_prefix("node")?.parse().ok()).map(|n| (cpu, n))
            })
            .collect();
        Host { online, allowed, nodes }
    }

    /// A machine with the `online` CPUs, of which this process may use
    /// `allowed`; both in the kernel's list format (`0-3,6`).
    pub fn with_cpus(online: &str, allowed: &str) -> Option<Host> {
        Some(Host { online: Some(CpuList::parse(online)?), allowed: Some(CpuList::parse(allowed)?), nodes: Vec::new() })
    }

    /// The same machine with CPUs on NUMA nodes: `(cpu, node)` pairs.
    pub fn with_nodes(mut self, nodes: &[(u32, u32)]) -> Host {
        self.nodes = nodes.to_vec();
        self
    }

    /// The NUMA node of `cpu` (0 where unknown).
    fn node(&self, cpu: u32) -> u32 {
        self.nodes.iter().find(|(c, _)| *c == cpu).map_or(0, |(_, n)| *n)
    }

    /// Why `cpu` cannot run an lcore here, if it cannot.
    fn refuses(&self, cpu: u32) -> Option<String> {
        if let Some(online) = self.online.as_ref().filter(|l| !l.contains(cpu)) {
            return Some(format!("CPU {cpu} does not exist (this machine has CPUs {online})"));
        }
        if let Some(allowed) = self.allowed.as_ref().filter(|l| !l.contains(cpu)) {
            return Some(format!("CPU {cpu} is not available to this process (it may run on CPUs {allowed})"));
        }
        None
    }
}

impl Config {
    /// Checks what the configuration needs of `host`: every lcore's CPU
    /// exists and this process may run on it. `check-config` and `run` ask
    /// this after parsing; [`Config::from_yaml_str`] does not, so that a
    /// configuration parses the same everywhere.
    pub fn check_host(&self, host: &Host) -> Res<()> {
        for (path, l) in self.lcores.with_paths() {
            if let Some(why) = host.refuses(l.cpu) {
                return Err(ConfigError::invalid(format!("{path}.cpu"), why));
            }
        }
        // One mbuf pool per NUMA node in use (appliance::app::pools).
        let mut nodes: Vec<u32> = self.lcores.with_paths().iter().map(|(_, l)| host.node(l.cpu)).collect();
        nodes.sort_unstable();
        nodes.dedup();
        super::check_hugepages(self, nodes.len().max(1) as u64)
    }
}

/// A set of CPU numbers in the kernel's list format: `0-3,6,8-9`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct CpuList(Vec<(u32, u32)>);

impl CpuList {
    fn parse(text: &str) -> Option<CpuList> {
        let mut ranges = Vec::new();
        for part in text.split(',').filter(|p| !p.is_empty()) {
            let (lo, hi) = match part.split_once('-') {
                Some((lo, hi)) => (lo.parse().ok()?, hi.parse().ok()?),
                None => {
                    let n = part.parse().ok()?;
                    (n, n)
                }
            };
            if lo > hi {
                return None;
            }
            ranges.push((lo, hi));
        }
        (!ranges.is_empty()).then_some(CpuList(ranges))
    }

    fn contains(&self, cpu: u32) -> bool {
        self.0.iter().any(|&(lo, hi)| (lo..=hi).contains(&cpu))
    }
}

impl fmt::Display for CpuList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, &(lo, hi)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            if lo == hi {
                write!(f, "{lo}")?;
            } else {
                write!(f, "{lo}-{hi}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    fn two_workers(cpus: &str) -> Config {
        ok(&format!("{BASE}lcores:\n  main: {{lcore: 0, cpu: 0}}\n  workers: [{cpus}]\n")
            .replace("qpairs=1", "qpairs=2"))
    }

    #[test]
    fn every_numa_node_in_use_gets_a_pool_that_must_fit() {
        // 100000 mbufs of 2304 bytes (~225 MiB) fit 256 MiB once, not twice.
        let c = ok(&format!(
            "{BASE}eal:\n  memory_mb: 256\nmempool:\n  mbufs: 100000\n  cache_size: 256\n  data_room_bytes: 2176\n"
        ));
        let one = Host::with_cpus("0-3", "0-3").unwrap().with_nodes(&[(0, 0), (1, 0), (2, 1), (3, 1)]);
        c.check_host(&one).expect("lcores on CPUs 0 and 1: node 0 only, one pool");
        let c2 = ok(&format!(
            "{BASE}eal:\n  memory_mb: 256\nmempool:\n  mbufs: 100000\n  cache_size: 256\n  data_room_bytes: 2176\n\
             lcores:\n  main: {{lcore: 0, cpu: 0}}\n  workers: [{{lcore: 1, cpu: 2}}]\n"
        ));
        let e = c2.check_host(&one).unwrap_err().to_string();
        assert!(e.starts_with("mempool.mbufs: 2 pools (one per NUMA node in use) of 100000 mbufs"), "{e}");
    }

    #[test]
    fn cpu_lists() {
        let l = CpuList::parse("0-3,6,8-9").unwrap();
        assert!(l.contains(0) && l.contains(3) && l.contains(6) && l.contains(9));
        assert!(!l.contains(4) && !l.contains(7) && !l.contains(10));
        assert_eq!(l.to_string(), "0-3,6,8-9");
        assert_eq!(CpuList::parse("0").unwrap().to_string(), "0");
        for bad in ["", "x", "3-1", "0-", "1,,a"] {
            assert_eq!(CpuList::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn cpus_the_machine_lacks_are_refused() {
        let host = Host::with_cpus("0-1", "0-1").unwrap();
        let c = two_workers("{lcore: 1, cpu: 1}, {lcore: 2, cpu: 7}");
        assert_eq!(
            c.check_host(&host).unwrap_err().to_string(),
            "lcores.workers[1].cpu: CPU 7 does not exist (this machine has CPUs 0-1)"
        );
        let c = two_workers("{lcore: 1, cpu: 1}, {lcore: 2, cpu: 0}");
        assert!(c.check_host(&host).is_ok());
        // the main and the mapping lcore are checked too
        let c = ok(&format!("{BASE}lcores:\n  main: {{lcore: 0, cpu: 2}}\n"));
        assert_eq!(
            c.check_host(&host).unwrap_err().to_string(),
            "lcores.main.cpu: CPU 2 does not exist (this machine has CPUs 0-1)"
        );
        let c = ok(&format!(
            "{BASE}lcores:\n  mapper: {{lcore: 2, cpu: 5}}\n\
             nat: {{inside: [inside], outside: [outside], pool: [\"203.0.113.1\"]}}\n"
        ));
        assert_eq!(
            c.check_host(&host).unwrap_err().to_string(),
            "lcores.mapper.cpu: CPU 5 does not exist (this machine has CPUs 0-1)"
        );
    }

    #[test]
    fn cpus_outside_the_affinity_are_refused() {
        let host = Host::with_cpus("0-7", "0-1,4").unwrap();
        assert!(ok(BASE).check_host(&host).is_ok());
        let c = two_workers("{lcore: 1, cpu: 4}, {lcore: 2, cpu: 3}");
        assert_eq!(
            c.check_host(&host).unwrap_err().to_string(),
            "lcores.workers[1].cpu: CPU 3 is not available to this process (it may run on CPUs 0-1,4)"
        );
    }

    /// The real machine: CPU 1023, the largest id the file allows, is one
    /// no test machine has; CPU 0 is one every machine has.
    #[test]
    fn this_machine() {
        let host = Host::current();
        let online = host.online.as_ref().expect("cannot read /sys/devices/system/cpu/online");
        if online.contains(1023) {
            return; // a machine with 1024 CPUs: nothing to refuse
        }
        let c = ok(&format!("{BASE}lcores:\n  main: {{lcore: 0, cpu: 1023}}\n  workers: [{{lcore: 1, cpu: 0}}]\n"));
        let e = c.check_host(&host).unwrap_err().to_string();
        assert!(e.starts_with("lcores.main.cpu: CPU 1023 does not exist (this machine has CPUs "), "{e}");
        let c = ok(&format!("{BASE}lcores:\n  main: {{lcore: 0, cpu: 0}}\n  workers: [{{lcore: 1, cpu: 0}}]\n"));
        // CPU 0 may be outside a restricted affinity, but it exists
        if let Err(e) = c.check_host(&host) {
            assert!(e.to_string().contains("is not available to this process"), "{e}");
        }
    }
}
