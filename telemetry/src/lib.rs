//! What every runway binary tells about its work: log lines for a person
//! or a log shipper, and, when an OTLP endpoint is configured,
//! OpenTelemetry traces that follow a rollout from the CLI through the
//! coordinator to every agent (see [`context`] for how a trace crosses
//! processes).

pub mod context;
mod ids;
mod logs;
mod otlp;

pub use context::TraceParent;
pub use logs::LogFormat;
pub use otlp::{Export, Telemetry, emit_span};

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
pub fn init(setup: Setup<'_>) -> Result<Telemetry, otlp::Error> {
    otlp::init(setup)
}

/// `[telemetry]` in a daemon's config.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Serve Prometheus metrics over plain HTTP at `http://ADDR/metrics`
    /// (e.g. `"127.0.0.1:9400"`). Off when unset.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Send trace spans over OTLP/gRPC to this endpoint (e.g.
    /// `"http://127.0.0.1:4317"`, a collector on the host). Unset: the
    /// standard `OTEL_EXPORTER_OTLP_ENDPOINT` applies; neither: no export.
    pub otlp_endpoint: Option<String>,
}

impl Config {
    /// Where spans go: `otlp_endpoint`, else the standard variables.
    pub fn export(&self) -> Export {
        Export::choose(self.otlp_endpoint.as_deref())
    }
}
