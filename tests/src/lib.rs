//! Test harness for the appliance: a three-namespace testbed with real kernel hosts
//! (`scripts/testbed.sh`), the real appliance binary started inside the router namespace,
//! and helpers to drive traffic and read its Prometheus metrics.
//!
//! ```text
//!   [h1] eth0 ==veth== apl-in [rtr: appliance] apl-out ==veth== eth0 [h2]
//!   192.0.2.2/24, 2001:db8:1::2/64           198.51.100.2/24, 2001:db8:2::2/64
//! ```
//!
//! The integration tests (tests/*.rs) must run as root and serially
//! (`cargo test -- --test-threads=1`; `scripts/test.sh` does both). Everything a test creates
//! (namespaces, processes, hugepage files) is removed when its handle drops, also on panic.

pub mod appliance;
pub mod capture;
pub mod dumpcap;
pub mod hostile;
pub mod images;
pub mod metrics;
pub mod natcluster;
pub mod proc;
pub mod steering;
pub mod storage;
pub mod testbed;
pub mod tools;

pub use appliance::{appliance_bin, config_with, demo_config, edit_yaml, hugepage_files, Appliance};
pub use metrics::{family_present, metric_sum, parse_samples, Sample};
pub use proc::{output_text, run_timeout};
pub use testbed::{require_root, workspace_root, ScriptTopology, Testbed, Transfer};

/// A testbed with the appliance running in it. Fields drop in order: the appliance is
/// stopped before the namespaces are deleted.
pub struct Rig {
    pub app: Appliance,
    pub tb: Testbed,
}

impl Rig {
    /// A fresh testbed (namespaces tagged with `tag`) and the appliance with the demo config
    /// (configs/demo.yaml with a unique file prefix and metrics port).
    pub fn demo(tag: &str) -> Rig {
        let tb = Testbed::up(tag);
        let app = Appliance::start_demo(&tb);
        Rig { app, tb }
    }

    /// A fresh testbed and the appliance started with `config_yaml` (file prefix and metrics
    /// listen address are overridden). The veths get as many queues as the config's ports.
    pub fn with_config(tag: &str, config_yaml: &str) -> Rig {
        let tb = Testbed::up_queues(tag, appliance::config_queues(config_yaml));
        let app = Appliance::start(&tb, config_yaml);
        Rig { app, tb }
    }

    /// Text to append to an assertion message: the appliance's log (last lines).
    pub fn ctx(&self) -> String {
        format!("\n---- appliance log (last 60 lines) ----\n{}", self.app.log_tail(60))
    }
}
