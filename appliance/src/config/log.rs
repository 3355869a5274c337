//! `log:` — the program's own log (tracing), not DPDK's (`eal.log_level`).

use serde::{Deserialize, Serialize};

use super::{ConfigError, Res};

/// The levels a single word may name.
const LOG_LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];

/// `log:` as the file writes it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct LogYaml {
    level: String,
    format: LogFormat,
}

impl Default for LogYaml {
    fn default() -> Self {
        LogYaml { level: "info".to_string(), format: LogFormat::Text }
    }
}

/// The program's own logging (`log:`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Log {
    /// A level (`trace debug info warn error off`) or an EnvFilter directive
    /// string (`info,appliance::neigh=debug`).
    pub level: String,
    /// Output format.
    pub format: LogFormat,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

pub(super) fn validate(r: &LogYaml) -> Res<Log> {
    let l = r.level.as_str();
    let bad = l.is_empty()
        || l.len() > 1024
        || l.chars().any(char::is_control)
        // a single bare word is meant as a level ("warning" would silently
        // become a target name in an EnvFilter)
        || (!l.contains(['=', ',', ':', '[']) && !LOG_LEVELS.contains(&l.to_ascii_lowercase().as_str()));
    if bad {
        return Err(ConfigError::invalid(
            "log.level",
            format!(
                "{l:?} must be one of {} or an EnvFilter directive (e.g. info,appliance=debug)",
                LOG_LEVELS.join(" ")
            ),
        ));
    }
    Ok(Log { level: r.level.clone(), format: r.format })
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::LogFormat;

    #[test]
    fn log_settings() {
        assert_err_starts(
            &format!("{BASE}log:\n  level: warning\n"),
            "log.level: \"warning\" must be one of trace debug info warn error off",
        );
        assert_err_starts(&format!("{BASE}log:\n  level: \"\"\n"), "log.level: ");
        let c = ok(&format!("{BASE}log:\n  level: \"info,appliance::neigh=debug\"\n  format: json\n"));
        assert_eq!(c.log.level, "info,appliance::neigh=debug");
        assert_eq!(c.log.format, LogFormat::Json);
    }
}
