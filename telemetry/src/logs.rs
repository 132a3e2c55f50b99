//! Log lines: text for a person, or one JSON object per line for a log
//! shipper, with the fields of every span a line belongs to (rollout id,
//! command id, trace id).

use tracing_subscriber::Layer;

/// `--log-format`.
#[derive(Debug, Clone, Copy, Default, clap::ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// The layer that writes log lines to stderr in `format`.
pub(crate) fn layer<S>(format: LogFormat) -> Box<dyn Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    let lines = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    match format {
        LogFormat::Text => lines.boxed(),
        LogFormat::Json => lines.json().with_current_span(true).with_span_list(true).boxed(),
    }
}

/// `RUST_LOG`, or `default_filter` when it is not set.
pub(crate) fn filter(default_filter: &str) -> tracing_subscriber::EnvFilter {
    tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| default_filter.into())
}
