//! What every runway binary tells about its work: log lines for a person
//! or a log shipper, and, when an OTLP endpoint is configured,
//! OpenTelemetry traces that follow a rollout from the CLI through the
//! coordinator to every agent (see [`context`] for how a trace crosses
//! processes).
//!
//! # Layout
//!
//! - `context`: W3C trace context between processes, derived span ids;
//! - `ids`: span ids chosen ahead of time (saved, then emitted by whoever ends the span);
//! - `logs`: log lines, text or JSON;
//! - `otlp`: the exporter, [`emit`] and [`flush`];
//! - `tls`: TLS (and mTLS) to an `https://` receiver.

pub mod context;
mod ids;
mod logs;
mod otlp;
pub mod tls;

use std::path::PathBuf;

pub use context::TraceParent;
pub use logs::LogFormat;
pub use otlp::{Ended, Error, Export, Telemetry, emit, exporting, flush};
pub use tls::{FileSetting, TlsFiles};

/// How the target of a span that only gives log lines their fields ends
/// (e.g. `runway_coordinator::log_only`, which `RUST_LOG` directives for
/// the crate still reach): such spans are never exported (their place in
/// the trace is an [`emit`]ted span with saved ids, which no killed process
/// can lose half of).
pub const LOG_ONLY: &str = "::log_only";

/// What a binary sets up at start-up.
pub struct Setup<'a> {
    pub format: LogFormat,
    /// Used when `RUST_LOG` is not set.
    pub default_filter: &'a str,
    /// `service.name`, unless `OTEL_SERVICE_NAME` says otherwise.
    pub service: &'a str,
    /// `host.name` (and `service.instance.id`): the runway name of this process's host.
    pub host: &'a str,
    /// Where spans go, if anywhere.
    pub export: Export,
}

/// Sets up logs (and traces when `setup.export` names an endpoint) for
/// the whole process. Keep the returned value alive until exit: dropping
/// it sends the spans still queued.
pub fn init(setup: Setup<'_>) -> Result<Telemetry, Error> {
    otlp::init(setup)
}

/// `[telemetry]` in a daemon's config.
#[derive(Debug, Clone, Default, serde::Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Serve Prometheus metrics over plain HTTP at `http://ADDR/metrics`
    /// (e.g. `"127.0.0.1:9400"`). Off when unset.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Send trace spans over OTLP/gRPC to this endpoint (e.g.
    /// `"http://127.0.0.1:4317"`, a collector on the host). Unset: the
    /// standard `OTEL_EXPORTER_OTLP_ENDPOINT` applies; neither: no export.
    pub otlp_endpoint: Option<String>,
    /// For an `https://` endpoint: the CA certificates (PEM) the receiver's
    /// certificate must chain to. Unset: `OTEL_EXPORTER_OTLP_CERTIFICATE`,
    /// else the system's roots.
    pub otlp_ca_file: Option<PathBuf>,
    /// For a receiver that asks for a client certificate (mTLS): this
    /// process's certificate (PEM), with `otlp_client_key_file`. Unset:
    /// `OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE`.
    pub otlp_client_cert_file: Option<PathBuf>,
    /// The client certificate's private key (PEM). Unset:
    /// `OTEL_EXPORTER_OTLP_CLIENT_KEY`.
    pub otlp_client_key_file: Option<PathBuf>,
}

impl Config {
    /// Where spans go: `otlp_endpoint`, else the standard variables; over
    /// TLS with the `otlp_*_file` settings for an `https://` endpoint.
    pub fn export(&self) -> Export {
        let tls = TlsFiles {
            ca: FileSetting::named("[telemetry] otlp_ca_file", self.otlp_ca_file.as_deref()),
            client_cert: FileSetting::named(
                "[telemetry] otlp_client_cert_file",
                self.otlp_client_cert_file.as_deref(),
            ),
            client_key: FileSetting::named(
                "[telemetry] otlp_client_key_file",
                self.otlp_client_key_file.as_deref(),
            ),
        };
        Export::choose(self.otlp_endpoint.as_deref(), tls)
    }

    /// Whether the `otlp_*_file` settings are usable with `otlp_endpoint`
    /// (files readable and PEM, an `https://` endpoint, a client key with
    /// the client certificate); the error names the key to fix. Nothing to
    /// check when the endpoint comes from the environment.
    pub fn check_tls(&self) -> Result<(), Error> {
        match self.export() {
            Export::Otlp { endpoint, tls } if self.otlp_endpoint.is_some() => {
                tls.client_config(&endpoint).map(|_| ())
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_tls_errors_name_the_config_key() {
        let config = Config {
            otlp_endpoint: Some("https://collector:4317".into()),
            otlp_ca_file: Some("/nonexistent/runway-ca.pem".into()),
            ..Config::default()
        };
        let error = config.check_tls().unwrap_err().to_string();
        assert!(
            error.starts_with("[telemetry] otlp_ca_file: cannot read /nonexistent/runway-ca.pem"),
            "{error}"
        );
        let half = Config {
            otlp_endpoint: Some("https://collector:4317".into()),
            otlp_client_key_file: Some("/k.pem".into()),
            ..Config::default()
        };
        let error = half.check_tls().unwrap_err().to_string();
        assert!(
            error.contains("[telemetry] otlp_client_key_file is set but no client certificate is"),
            "{error}"
        );
        assert!(Config::default().check_tls().is_ok());
    }
}
