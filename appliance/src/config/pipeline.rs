//! `pipeline:` — the workers' poll loops: burst size, idle back-off, the
//! rings between the workers and the main lcore, and the limits of the
//! input checks (IPv6 extension header chains, RFC 8883).

use serde::{Deserialize, Serialize};

use netwire::ipv6opt::ExtLimits;

use super::{pow2_range, range, Res};

/// `pipeline:` as the file writes it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct PipelineYaml {
    burst_size: i64,
    idle_backoff: IdleBackoffYaml,
    punt_ring_size: i64,
    inject_ring_size: i64,
    ipv6_extension_headers: ExtLimitsYaml,
}

impl Default for PipelineYaml {
    fn default() -> Self {
        PipelineYaml {
            burst_size: 32,
            idle_backoff: IdleBackoffYaml::default(),
            punt_ring_size: 1024,
            inject_ring_size: 1024,
            ipv6_extension_headers: ExtLimitsYaml::default(),
        }
    }
}

/// `pipeline.ipv6_extension_headers:` as the file writes it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
struct ExtLimitsYaml {
    headers_max: i64,
    chain_bytes_max: i64,
    header_bytes_max: i64,
    options_max: i64,
    option_bytes_max: i64,
}

impl Default for ExtLimitsYaml {
    fn default() -> Self {
        let d = ExtLimits::default();
        ExtLimitsYaml {
            headers_max: d.headers_max as i64,
            chain_bytes_max: d.chain_bytes_max as i64,
            header_bytes_max: d.header_bytes_max as i64,
            options_max: d.options_max as i64,
            option_bytes_max: d.option_bytes_max as i64,
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
    /// Limits of an IPv6 extension header chain (RFC 8883); what exceeds
    /// them is a counted drop with an ICMPv6 parameter problem.
    pub ipv6_ext_limits: ExtLimits,
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
        ipv6_ext_limits: validate_ext_limits(&r.ipv6_extension_headers)?,
    })
}

fn validate_ext_limits(r: &ExtLimitsYaml) -> Res<ExtLimits> {
    let p = |f: &str| format!("pipeline.ipv6_extension_headers.{f}");
    Ok(ExtLimits {
        headers_max: range(&p("headers_max"), r.headers_max, 1, 64)?,
        chain_bytes_max: range(&p("chain_bytes_max"), r.chain_bytes_max, 8, 65535)?,
        header_bytes_max: range(&p("header_bytes_max"), r.header_bytes_max, 8, 2048)?,
        options_max: range(&p("options_max"), r.options_max, 1, 255)?,
        option_bytes_max: range(&p("option_bytes_max"), r.option_bytes_max, 0, 255)?,
    })
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;

    #[test]
    fn ext_limits_default_and_set() {
        let c = ok(BASE);
        assert_eq!(c.pipeline.ipv6_ext_limits, netwire::ipv6opt::ExtLimits::default());
        let c = ok(&format!("{BASE}pipeline:\n  ipv6_extension_headers: {{headers_max: 4, option_bytes_max: 16}}\n"));
        assert_eq!(c.pipeline.ipv6_ext_limits.headers_max, 4);
        assert_eq!(c.pipeline.ipv6_ext_limits.option_bytes_max, 16);
        assert_eq!(c.pipeline.ipv6_ext_limits.chain_bytes_max, 1024);
        assert_eq!(ok(&c.to_yaml()), c, "round trip");
    }

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
            &format!("{BASE}pipeline:\n  ipv6_extension_headers: {{headers_max: 0}}\n"),
            "pipeline.ipv6_extension_headers.headers_max: must be 1..=64",
        );
        assert_err(
            &format!("{BASE}pipeline:\n  ipv6_extension_headers: {{header_bytes_max: 4096}}\n"),
            "pipeline.ipv6_extension_headers.header_bytes_max: must be 8..=2048",
        );
        assert_err(
            &format!("{BASE}pipeline:\n  inject_ring_size: 1000\n"),
            "pipeline.inject_ring_size: 1000 is not a power of two (must be a power of two in 64..=65536)",
        );
    }
}
