//! `capture:` — whether DPDK's capture tools can attach to the running
//! appliance (`dpdk-dumpcap`, `dpdk-pdump`; docs/capture.md).
//!
//! Those tools are DPDK secondary processes: they map the appliance's
//! hugepage files, which `eal.huge_unlink: true` removes right after mapping.
//! So the two settings are tied: each one's default is the opposite of the
//! other, and both `true` is refused.

use serde::{Deserialize, Serialize};

use super::{ConfigError, Eal, Res};

/// `capture:` as the file writes it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct CaptureYaml {
    pdump: Option<bool>,
}

impl CaptureYaml {
    /// `capture.pdump` as written (`None`: not in the file).
    pub(super) fn pdump_written(&self) -> Option<bool> {
        self.pdump
    }
}

/// Packet capture by DPDK's tools (`capture:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capture {
    /// `rte_pdump_init` at start (and `rte_pdump_uninit` at shutdown):
    /// `dpdk-dumpcap --file-prefix=<eal.file_prefix> -i <port>` can capture
    /// what the appliance receives and sends.
    pub pdump: bool,
}

/// Validates `capture:` once `eal:` is known: `pdump` defaults to
/// `!eal.huge_unlink`, and `true` with `eal.huge_unlink: true` is refused.
pub(super) fn validate(r: &mut CaptureYaml, eal: &Eal) -> Res<Capture> {
    let pdump = match r.pdump {
        Some(true) if eal.huge_unlink => {
            return Err(ConfigError::invalid(
                "capture.pdump",
                "true, but eal.huge_unlink is true: dpdk-dumpcap maps the hugepage files that --huge-unlink \
                 removes; set eal.huge_unlink: false (the appliance removes its hugepage files when it stops \
                 cleanly) or capture.pdump: false",
            ))
        }
        Some(p) => p,
        None => !eal.huge_unlink,
    };
    r.pdump = Some(pdump);
    Ok(Capture { pdump })
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;

    /// (eal.huge_unlink, capture.pdump) as written → as resolved.
    #[test]
    fn pdump_and_huge_unlink_defaults_follow_each_other() {
        let cases: [(Option<bool>, Option<bool>, bool, bool); 7] = [
            (None, None, false, true),
            (None, Some(true), false, true),
            (None, Some(false), true, false),
            (Some(false), None, false, true),
            (Some(true), None, true, false),
            (Some(false), Some(false), false, false),
            (Some(false), Some(true), false, true),
        ];
        for (unlink, pdump, want_unlink, want_pdump) in cases {
            let mut y = BASE.to_string();
            if let Some(u) = unlink {
                y.push_str(&format!("eal:\n  huge_unlink: {u}\n"));
            }
            if let Some(p) = pdump {
                y.push_str(&format!("capture:\n  pdump: {p}\n"));
            }
            let c = ok(&y);
            assert_eq!((c.eal.huge_unlink, c.capture.pdump), (want_unlink, want_pdump), "{unlink:?} {pdump:?}");
            let has_unlink = c.eal_args("appliance").iter().any(|a| a == "--huge-unlink");
            assert_eq!(has_unlink, want_unlink);
            // The effective config states both, and parses back to the same.
            assert_eq!(ok(&c.to_yaml()), c);
        }
    }

    #[test]
    fn pdump_refused_with_huge_unlink() {
        assert_err_starts(
            &format!("{BASE}eal:\n  huge_unlink: true\ncapture:\n  pdump: true\n"),
            "capture.pdump: true, but eal.huge_unlink is true",
        );
        assert_err_starts(&format!("{BASE}capture:\n  pdump: 1\n"), "capture.pdump: invalid type");
        assert_err_starts(
            &format!("{BASE}capture:\n  pcap: true\n"),
            "capture.pcap: unknown field `pcap`, expected `pdump`",
        );
    }
}
