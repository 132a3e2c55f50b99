//! Log lines: text for a person, or one JSON object per line for a log
//! shipper, with the fields of every span a line belongs to (rollout id,
//! command id, trace id).
//!
//! Text is coloured only when stderr is a terminal and `NO_COLOR` is not
//! set (<https://no-color.org>): a daemon under systemd, or with its output
//! redirected to a file, writes plain text that `grep` and the journal read.

use std::ffi::OsStr;
use std::io::IsTerminal;

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
    let colour = colour(std::io::stderr().is_terminal(), std::env::var_os("NO_COLOR").as_deref());
    let lines = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(colour);
    match format {
        LogFormat::Text => lines.boxed(),
        LogFormat::Json => lines.json().with_current_span(true).with_span_list(true).boxed(),
    }
}

/// Whether log lines get ANSI colours: only on a terminal, and never when
/// `NO_COLOR` is set to anything but the empty string.
fn colour(stderr_is_terminal: bool, no_color: Option<&OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(OsStr::is_empty)
}

/// `RUST_LOG`, or `default_filter` when it is not set.
pub(crate) fn filter(default_filter: &str) -> tracing_subscriber::EnvFilter {
    tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| default_filter.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(colour(true, None));
        assert!(colour(true, Some(OsStr::new(""))), "an empty NO_COLOR does not count");
        assert!(!colour(true, Some(OsStr::new("1"))));
        assert!(!colour(false, None), "a file or a pipe gets plain text");
        assert!(!colour(false, Some(OsStr::new("1"))));
    }
}
