//! `[server]`: how much the gRPC server lets clients hold before they have
//! made a single call (see `crate::accept`).

use std::time::Duration;

use runway_daemon::config_check::duration_schema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Problems;

/// `[server]`: connection caps and the TLS handshake deadline.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ServerLimits {
    /// How long a client may take over its TLS handshake (`"10s"`); a
    /// slower one is disconnected.
    #[serde(with = "humantime_serde")]
    #[schemars(schema_with = "duration_schema")]
    pub handshake_timeout: Duration,
    /// Connections open at once, handshaking or established; more are
    /// closed at once.
    pub max_connections: usize,
    /// Connections open at once from one IP address. Agents behind one
    /// NAT address share it: raise it for them.
    pub max_connections_per_peer: usize,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(10),
            max_connections: 4096,
            max_connections_per_peer: 512,
        }
    }
}

impl ServerLimits {
    /// Every key within its bounds.
    pub fn check(&self, problems: &mut Problems) {
        if self.handshake_timeout < Duration::from_millis(100)
            || self.handshake_timeout > Duration::from_secs(300)
        {
            problems.add(
                "[server] handshake_timeout",
                format_args!(
                    "is {:?}; it must be between 100ms and 5m (default 10s)",
                    self.handshake_timeout
                ),
            );
        }
        if self.max_connections == 0 {
            problems.add("[server] max_connections", "must be at least 1 (default 4096)");
        }
        if self.max_connections_per_peer == 0 || self.max_connections_per_peer > self.max_connections {
            problems.add(
                "[server] max_connections_per_peer",
                format_args!(
                    "is {}; it must be between 1 and max_connections ({}); default 512",
                    self.max_connections_per_peer, self.max_connections
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn limits_are_read_and_checked() {
        #[derive(Deserialize, Serialize, JsonSchema)]
        struct File {
            server: ServerLimits,
        }
        let file: File = toml::from_str(
            "[server]\nhandshake_timeout = \"2s\"\nmax_connections = 10\nmax_connections_per_peer = 20\n",
        )
        .unwrap();
        assert_eq!(file.server.handshake_timeout, Duration::from_secs(2));
        let mut problems = Problems::new(Path::new("c.toml"));
        file.server.check(&mut problems);
        let error = problems.into_result().unwrap_err().to_string();
        assert!(error.contains("[server] max_connections_per_peer: is 20"), "{error}");
        let bad =
            toml::from_str::<File>("[server]\nhandshake_timeout = \"soon\"\n").err().unwrap().to_string();
        assert!(bad.contains("invalid value: string \"soon\", expected a duration"), "{bad}");
        let mut problems = Problems::new(Path::new("c.toml"));
        ServerLimits::default().check(&mut problems);
        assert!(problems.is_empty());
    }
}
