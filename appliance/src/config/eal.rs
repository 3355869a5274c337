//! `eal:` — DPDK EAL options. The argument vector they become is
//! [`Config::eal_args`](super::Config::eal_args); whether `pci: true` has a
//! PCI port to allow is checked with the ports; `huge_unlink` and
//! `capture.pdump` decide each other's default (`capture.rs`).

use serde::{Deserialize, Serialize};

use super::{range, ConfigError, Res};

/// `eal:` as the file writes it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct EalYaml {
    file_prefix: String,
    memory_mb: i64,
    huge_unlink: Option<bool>,
    pci: bool,
    log_level: EalLogLevel,
    extra_args: Vec<String>,
}

impl Default for EalYaml {
    fn default() -> Self {
        EalYaml {
            file_prefix: "appliance".to_string(),
            memory_mb: 256,
            huge_unlink: None,
            pci: false,
            log_level: EalLogLevel::Notice,
            extra_args: Vec::new(),
        }
    }
}

/// DPDK EAL options (`eal:`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Eal {
    /// `--file-prefix`; `[A-Za-z0-9_-]{1,32}`, one per DPDK process on the machine.
    pub file_prefix: String,
    /// `-m`: hugepage memory in MiB, 64..=65536.
    pub memory_mb: u32,
    /// `--huge-unlink`: the hugepage files are unlinked once mapped, so none is
    /// left behind even by a crash; but no secondary process (`dpdk-dumpcap`)
    /// can attach. Default: `!capture.pdump`. Without it the appliance
    /// removes its files when it stops cleanly.
    pub huge_unlink: bool,
    /// false: `--no-pci`. true: `-a <addr>` for every PCI port (at least one).
    pub pci: bool,
    /// `--log-level=<level>`.
    pub log_level: EalLogLevel,
    /// Appended to the EAL arguments verbatim.
    pub extra_args: Vec<String>,
}

/// DPDK log levels, as `--log-level` spells them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EalLogLevel {
    /// RTE_LOG_EMERG
    Emergency,
    /// RTE_LOG_ALERT
    Alert,
    /// RTE_LOG_CRIT
    Critical,
    /// RTE_LOG_ERR
    Error,
    /// RTE_LOG_WARNING
    Warning,
    /// RTE_LOG_NOTICE
    Notice,
    /// RTE_LOG_INFO
    Info,
    /// RTE_LOG_DEBUG
    Debug,
}

impl EalLogLevel {
    /// The name `--log-level` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            EalLogLevel::Emergency => "emergency",
            EalLogLevel::Alert => "alert",
            EalLogLevel::Critical => "critical",
            EalLogLevel::Error => "error",
            EalLogLevel::Warning => "warning",
            EalLogLevel::Notice => "notice",
            EalLogLevel::Info => "info",
            EalLogLevel::Debug => "debug",
        }
    }
}

/// Validates `eal:`. `pdump` is `capture.pdump` as written: `huge_unlink`
/// defaults to true only when capture is turned off.
pub(super) fn validate(r: &mut EalYaml, pdump: Option<bool>) -> Res<Eal> {
    let ok = (1..=32).contains(&r.file_prefix.len())
        && r.file_prefix.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !ok {
        return Err(ConfigError::invalid(
            "eal.file_prefix",
            format!("{:?} must match [A-Za-z0-9_-]{{1,32}}", r.file_prefix),
        ));
    }
    let memory_mb = range("eal.memory_mb", r.memory_mb, 64, 65536)?;
    for (i, a) in r.extra_args.iter().enumerate() {
        if a.is_empty() || a.contains('\0') {
            return Err(ConfigError::invalid(
                format!("eal.extra_args[{i}]"),
                "must be a non-empty argument without NUL bytes",
            ));
        }
    }
    let huge_unlink = r.huge_unlink.unwrap_or(pdump == Some(false));
    r.huge_unlink = Some(huge_unlink);
    Ok(Eal {
        file_prefix: r.file_prefix.clone(),
        memory_mb,
        huge_unlink,
        pci: r.pci,
        log_level: r.log_level,
        extra_args: r.extra_args.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;

    #[test]
    fn eal_file_prefix() {
        assert_err_starts(&format!("{BASE}eal:\n  file_prefix: \"a b\"\n"), "eal.file_prefix: \"a b\" must match");
        assert_err_starts(&format!("{BASE}eal:\n  file_prefix: \"\"\n"), "eal.file_prefix: ");
        assert_err_starts(&format!("{BASE}eal:\n  file_prefix: {}\n", "x".repeat(33)), "eal.file_prefix: ");
    }

    #[test]
    fn eal_memory() {
        assert_err(&format!("{BASE}eal:\n  memory_mb: 32\n"), "eal.memory_mb: must be 64..=65536");
        assert_err(&format!("{BASE}eal:\n  memory_mb: -1\n"), "eal.memory_mb: must be 64..=65536");
    }

    #[test]
    fn eal_extra_args_non_empty() {
        assert_err_starts(&format!("{BASE}eal:\n  extra_args: [\"--x\", \"\"]\n"), "eal.extra_args[1]: ");
    }

    #[test]
    fn eal_pci_needs_pci_port() {
        assert_err_starts(&format!("{BASE}eal:\n  pci: true\n"), "eal.pci: true, but no port is a PCI device");
    }
}
