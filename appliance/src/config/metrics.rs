//! `metrics:` — where the Prometheus endpoint listens.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::{ConfigError, Res};

/// `metrics:` as the file writes it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct MetricsYaml {
    listen: Option<String>,
}

impl Default for MetricsYaml {
    fn default() -> Self {
        MetricsYaml { listen: Some("127.0.0.1:9100".to_string()) }
    }
}

/// Metrics endpoint (`metrics:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metrics {
    /// Where `GET /metrics` is served; `None`: disabled.
    pub listen: Option<SocketAddr>,
}

/// Validates `metrics:`; prints the address canonically.
pub(super) fn validate(r: &mut MetricsYaml) -> Res<Metrics> {
    let listen = match &r.listen {
        None => None,
        Some(s) => {
            let a: SocketAddr = s.parse().map_err(|_| {
                ConfigError::invalid(
                    "metrics.listen",
                    format!("{s:?} is not a socket address (ip:port or [ipv6]:port), or null to disable"),
                )
            })?;
            if a.port() == 0 {
                return Err(ConfigError::invalid("metrics.listen", format!("{s}: port 0 is not allowed")));
            }
            Some(a)
        }
    };
    r.listen = listen.map(|a| a.to_string());
    Ok(Metrics { listen })
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;

    #[test]
    fn metrics_listen() {
        assert_err_starts(
            &format!("{BASE}metrics:\n  listen: localhost:9100\n"),
            "metrics.listen: \"localhost:9100\" is not a socket address",
        );
        assert_err(
            &format!("{BASE}metrics:\n  listen: \"127.0.0.1:0\"\n"),
            "metrics.listen: 127.0.0.1:0: port 0 is not allowed",
        );
        assert_eq!(
            ok(&format!("{BASE}metrics:\n  listen: \"[::1]:9100\"\n")).metrics.listen,
            Some("[::1]:9100".parse().unwrap())
        );
    }
}
