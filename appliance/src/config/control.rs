//! `control:` — where the control socket (the operator CLI's and other
//! programs' way in: `aplctl`, docs/cli.md) listens.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{ConfigError, Res};

/// `control:` as the file writes it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct ControlYaml {
    socket: Option<String>,
}

/// The control socket (`control:`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Control {
    /// The Unix socket's path (default `/run/appliance/<eal.file_prefix>.sock`).
    pub socket: PathBuf,
}

/// Longest path a Unix socket address holds (`sun_path` less its NUL).
const SOCKET_PATH_MAX: usize = 107;

/// Validates `control:`; the default path follows the EAL file prefix, so
/// appliances with distinct prefixes get distinct sockets.
pub(super) fn validate(r: &mut ControlYaml, file_prefix: &str) -> Res<Control> {
    let path = r.socket.clone().unwrap_or_else(|| format!("/run/appliance/{file_prefix}.sock"));
    if !path.starts_with('/') {
        return Err(ConfigError::invalid("control.socket", format!("{path:?} is not an absolute path")));
    }
    if path.len() > SOCKET_PATH_MAX {
        return Err(ConfigError::invalid(
            "control.socket",
            format!("{} bytes, a Unix socket path has at most {SOCKET_PATH_MAX}", path.len()),
        ));
    }
    r.socket = Some(path.clone());
    Ok(Control { socket: PathBuf::from(path) })
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;

    #[test]
    fn control_socket() {
        assert_eq!(ok(BASE).control.socket.to_str(), Some("/run/appliance/appliance.sock"));
        assert_err_starts(
            &format!("{BASE}control:\n  socket: run/x.sock\n"),
            "control.socket: \"run/x.sock\" is not an absolute path",
        );
        let long = format!("/{}", "a".repeat(120));
        assert_err_starts(&format!("{BASE}control:\n  socket: {long}\n"), "control.socket: 121 bytes");
        assert_eq!(
            ok(&format!("{BASE}control:\n  socket: /tmp/a.sock\n")).control.socket.to_str(),
            Some("/tmp/a.sock")
        );
    }
}
