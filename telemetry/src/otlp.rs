//! Span export over OTLP/gRPC, when an endpoint is configured.

use std::time::{Duration, SystemTime};

use opentelemetry::KeyValue;
use opentelemetry::trace::{Span as _, SpanBuilder, TracerProvider as _};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::{Setup, TraceParent, ids, logs};

pub type Error = opentelemetry_otlp::ExporterBuildError;

/// How often queued spans are sent, unless `OTEL_BSP_SCHEDULE_DELAY` says
/// otherwise: short, so a leader that is killed loses little of its trace.
const SEND_EVERY: Duration = Duration::from_millis(500);

/// How long exit waits for the last spans to be sent.
const FLUSH_AT_EXIT: Duration = Duration::from_secs(5);

/// Whether and where spans are exported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Export {
    Off,
    /// OTLP/gRPC to this endpoint (e.g. `http://127.0.0.1:4317`).
    Otlp(String),
}

impl Export {
    /// `configured` (a config key or flag) when set, else the standard
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` / `OTEL_EXPORTER_OTLP_ENDPOINT`;
    /// off when none is set.
    pub fn choose(configured: Option<&str>) -> Self {
        let from_env = || {
            ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"]
                .into_iter()
                .find_map(|name| std::env::var(name).ok())
        };
        match configured.map(str::to_owned).or_else(from_env) {
            Some(endpoint) if !endpoint.trim().is_empty() => Export::Otlp(endpoint.trim().to_owned()),
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
        Export::Otlp(endpoint) => Some(provider(&setup, endpoint)?),
    };
    let spans =
        provider.as_ref().map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer("runway")).boxed());
    tracing_subscriber::registry()
        .with(logs::filter(setup.default_filter))
        .with(logs::layer(setup.format))
        .with(spans)
        .init();
    if let Some(provider) = &provider {
        opentelemetry::global::set_tracer_provider(provider.clone());
        tracing::info!(endpoint = %endpoint_of(&setup.export), "exporting trace spans over OTLP");
    }
    Ok(Telemetry { provider })
}

fn endpoint_of(export: &Export) -> &str {
    match export {
        Export::Off => "",
        Export::Otlp(endpoint) => endpoint,
    }
}

/// Must run inside the tokio runtime: the gRPC exporter lives on it.
fn provider(setup: &Setup<'_>, endpoint: &str) -> Result<SdkTracerProvider, Error> {
    let exporter =
        opentelemetry_otlp::SpanExporter::builder().with_tonic().with_endpoint(endpoint).build()?;
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

/// Emits a finished span named `name` with the ids of `own`, under
/// `parent` (or as the root of `own`'s trace), from `start` until now: a
/// span whose start and end may be seen by different processes, like a
/// rollout's across a leader failover. Does nothing when spans are not
/// exported.
pub fn emit_span(
    name: &'static str,
    own: TraceParent,
    parent: Option<TraceParent>,
    start: SystemTime,
    attributes: Vec<KeyValue>,
) {
    let tracer = opentelemetry::global::tracer("runway");
    let parent = parent.map(|p| p.context()).unwrap_or_default();
    let mut span = ids::with_preset(own, || {
        SpanBuilder::from_name(name)
            .with_start_time(start)
            .with_attributes(attributes)
            .start_with_context(&tracer, &parent)
    });
    span.end();
}
