//! `pipeline:` — the workers' poll loops: burst size, idle back-off, and
//! the rings between the workers and the main lcore.

use serde::{Deserialize, Serialize};

use super::{pow2_range, range, Res};

/// `pipeline:` as the file writes it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct PipelineYaml {
    burst_size: i64,
    idle_backoff: IdleBackoffYaml,
    punt_ring_size: i64,
    inject_ring_size: i64,
}

impl Default for PipelineYaml {
    fn default() -> Self {
        PipelineYaml {
            burst_size: 32,
            idle_backoff: IdleBackoffYaml::default(),
            punt_ring_size: 1024,
            inject_ring_size: 1024,
        }
    }
}

/// `pipeline.idle_backoff:` as the file writes it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
struct IdleBackoffYaml {
    enabled: bool,
    empty_polls: i64,
    sleep_us: i64,
}

impl Default for IdleBackoffYaml {
    fn default() -> Self {
        IdleBackoffYaml { enabled: true, empty_polls: 256, sleep_us: 50 }
    }
}

/// Worker poll loop settings (`pipeline:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pipeline {
    /// Packets per rx/tx burst, 1..=64.
    pub burst_size: u16,
    /// Pausing an idle poll loop.
    pub idle_backoff: IdleBackoff,
    /// Worker -> control ring size, power of two, 64..=65536.
    pub punt_ring_size: u32,
    /// Control -> worker ring size, power of two, 64..=65536.
    pub inject_ring_size: u32,
}

/// Idle back-off of poll loops (`pipeline.idle_backoff:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdleBackoff {
    /// false: workers spin (bare metal).
    pub enabled: bool,
    /// Consecutive empty polls before a pause, 1..=1000000.
    pub empty_polls: u32,
    /// Pause length, 1..=100000 µs.
    pub sleep_us: u32,
}

pub(super) fn validate(r: &PipelineYaml) -> Res<Pipeline> {
    Ok(Pipeline {
        burst_size: range("pipeline.burst_size", r.burst_size, 1, 64)?,
        idle_backoff: IdleBackoff {
            enabled: r.idle_backoff.enabled,
            empty_polls: range("pipeline.idle_backoff.empty_polls", r.idle_backoff.empty_polls, 1, 1_000_000)?,
            sleep_us: range("pipeline.idle_backoff.sleep_us", r.idle_backoff.sleep_us, 1, 100_000)?,
        },
        punt_ring_size: pow2_range("pipeline.punt_ring_size", r.punt_ring_size, 64, 65536)?,
        inject_ring_size: pow2_range("pipeline.inject_ring_size", r.inject_ring_size, 64, 65536)?,
    })
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;

    #[test]
    fn pipeline_ranges() {
        assert_err(&format!("{BASE}pipeline:\n  burst_size: 65\n"), "pipeline.burst_size: must be 1..=64");
        assert_err(
            &format!("{BASE}pipeline:\n  idle_backoff: {{empty_polls: 0}}\n"),
            "pipeline.idle_backoff.empty_polls: must be 1..=1000000",
        );
        assert_err(
            &format!("{BASE}pipeline:\n  idle_backoff: {{sleep_us: 100001}}\n"),
            "pipeline.idle_backoff.sleep_us: must be 1..=100000",
        );
        assert_err(&format!("{BASE}pipeline:\n  punt_ring_size: 32\n"), "pipeline.punt_ring_size: must be 64..=65536");
        assert_err(
            &format!("{BASE}pipeline:\n  inject_ring_size: 1000\n"),
            "pipeline.inject_ring_size: 1000 is not a power of two (must be a power of two in 64..=65536)",
        );
    }
}
