//! Span export over OTLP/gRPC (over TLS for `https://`), when an
//! endpoint is configured; spans emitted with ids chosen ahead of time
//! ([`emit`]); and a flush that waits until what ended was sent.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use opentelemetry::KeyValue;
use opentelemetry::trace::{Span as _, SpanBuilder, Status, TracerProvider as _};
use opentelemetry_otlp::{WithExportConfig, WithTonicConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::tls::TlsFiles;
use crate::{LOG_ONLY, Setup, TraceParent, ids, logs};

/// Why spans cannot be exported as configured. Each names the setting to fix.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{key}: cannot read {}: {reason}", path.display())]
    Unreadable { key: String, path: std::path::PathBuf, reason: String },
    #[error("{key}: {} holds no PEM block labelled {label}", path.display())]
    NotPem { key: String, path: std::path::PathBuf, label: &'static str },
    #[error("{set} is set but no {missing} is: a client certificate and its key go together")]
    HalfIdentity { set: String, missing: &'static str },
    #[error(
        "{key} is set, but the OTLP endpoint {endpoint:?} is not https://: use https:// (or unset {key})"
    )]
    NotHttps { key: String, endpoint: String },
    #[error(transparent)]
    Build(#[from] opentelemetry_otlp::ExporterBuildError),
}

/// How often queued spans are sent, unless `OTEL_BSP_SCHEDULE_DELAY` says
/// otherwise: short, so a leader that is killed loses little of its trace.
const SEND_EVERY: Duration = Duration::from_millis(500);

/// How long exit waits for the last spans to be sent.
const FLUSH_AT_EXIT: Duration = Duration::from_secs(5);

/// The process's exporter, for [`flush`].
static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// Whether and where spans are exported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Export {
    Off,
    /// OTLP/gRPC to this endpoint (e.g. `http://127.0.0.1:4317`; over
    /// TLS with these files for `https://`).
    Otlp {
        endpoint: String,
        tls: TlsFiles,
    },
}

impl Export {
    /// `configured` (a config key or flag) when set, else the standard
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` / `OTEL_EXPORTER_OTLP_ENDPOINT`;
    /// off when none is set. Each TLS file of `tls` not set falls back on
    /// its standard variable (see [`crate::tls`]).
    pub fn choose(configured: Option<&str>, tls: TlsFiles) -> Self {
        let from_env = || {
            ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"]
                .into_iter()
                .find_map(|name| std::env::var(name).ok())
        };
        match configured.map(str::to_owned).or_else(from_env) {
            Some(endpoint) if !endpoint.trim().is_empty() => {
                Export::Otlp { endpoint: endpoint.trim().to_owned(), tls: tls.or_env() }
            }
            _ => Export::Off,
        }
    }
}

/// Keeps the span exporter of the process. Dropping it sends what is
/// still queued (waiting at most a few seconds).
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether spans are exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(e) = provider.shutdown_with_timeout(FLUSH_AT_EXIT)
        {
            eprintln!("warning: not every trace span was sent: {e}");
        }
    }
}

pub(crate) fn init(setup: Setup<'_>) -> Result<Telemetry, Error> {
    let provider = match &setup.export {
        Export::Off => None,
        Export::Otlp { endpoint, tls } => Some(provider(&setup, endpoint, tls)?),
    };
    // Spans that only carry fields for log lines stay out of the trace
    // (their trace spans are emitted by `emit`, with saved ids).
    let spans = provider.as_ref().map(|p| {
        let exported = tracing_subscriber::filter::filter_fn(|meta| !meta.target().ends_with(LOG_ONLY));
        tracing_opentelemetry::layer().with_tracer(p.tracer("runway")).with_filter(exported).boxed()
    });
    tracing_subscriber::registry()
        .with(logs::filter(setup.default_filter))
        .with(logs::layer(setup.format))
        .with(spans)
        .init();
    if let Some(provider) = &provider {
        opentelemetry::global::set_tracer_provider(provider.clone());
        let _ = PROVIDER.set(provider.clone());
        tracing::info!(endpoint = %endpoint_of(&setup.export), "exporting trace spans over OTLP");
    }
    Ok(Telemetry { provider })
}

fn endpoint_of(export: &Export) -> &str {
    match export {
        Export::Off => "",
        Export::Otlp { endpoint, .. } => endpoint,
    }
}

/// Must run inside the tokio runtime: the gRPC exporter lives on it.
fn provider(setup: &Setup<'_>, endpoint: &str, tls: &TlsFiles) -> Result<SdkTracerProvider, Error> {
    let mut exporter = opentelemetry_otlp::SpanExporter::builder().with_tonic().with_endpoint(endpoint);
    if let Some(tls) = tls.client_config(endpoint)? {
        exporter = exporter.with_tls_config(tls);
    }
    let exporter = exporter.build()?;
    let mut batch = BatchConfigBuilder::default();
    if std::env::var_os("OTEL_BSP_SCHEDULE_DELAY").is_none() {
        batch = batch.with_scheduled_delay(SEND_EVERY);
    }
    let processor = BatchSpanProcessor::builder(exporter).with_batch_config(batch.build()).build();
    let mut resource = Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(setup.service.to_owned());
    }
    let resource = resource
        .with_attributes([
            KeyValue::new("host.name", setup.host.to_owned()),
            KeyValue::new("service.instance.id", setup.host.to_owned()),
            KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
        ])
        .build();
    Ok(SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_id_generator(ids::PresetIds::default())
        .with_resource(resource)
        .build())
}

/// A span that has ended, with ids chosen ahead of time (see `ids`):
/// one whose start and end may be seen by different processes, like a
/// rollout's, a step's or a command's across a leader failover.
pub struct Ended {
    pub name: &'static str,
    /// Its own ids (the trace id is the parent's when there is a parent).
    pub own: TraceParent,
    /// `None`: the root of `own`'s trace.
    pub parent: Option<TraceParent>,
    pub start: SystemTime,
    pub end: SystemTime,
    pub attributes: Vec<KeyValue>,
    /// Why it failed, if it did (the span's status).
    pub error: Option<String>,
}

/// Emits `ended`. Does nothing when spans are not exported.
pub fn emit(ended: Ended) {
    let tracer = opentelemetry::global::tracer("runway");
    let parent = ended.parent.map(|p| p.context()).unwrap_or_default();
    let mut span = ids::with_preset(ended.own, || {
        SpanBuilder::from_name(ended.name)
            .with_start_time(ended.start)
            .with_attributes(ended.attributes)
            .start_with_context(&tracer, &parent)
    });
    if let Some(error) = ended.error {
        span.set_status(Status::error(error));
    }
    span.end_with_timestamp(ended.end.max(ended.start));
}

/// Sends every span ended so far and waits for the receiver to take them
/// (at most a few seconds); true when nothing is left unsent. A state
/// saved after a flush cannot outlive the spans that ended before it. It
/// blocks the thread: call it from `spawn_blocking`. Returns at once when
/// spans are not exported.
pub fn flush() -> bool {
    PROVIDER.get().is_none_or(|provider| provider.force_flush().is_ok())
}

/// Whether this process exports spans.
pub fn exporting() -> bool {
    PROVIDER.get().is_some()
}
