//! Everything `runway` prints, in one place.
//!
//! - stdout holds results only: text for a person, or with `--output json`
//!   one JSON object per line, so that `runway … | jq` always works.
//! - stderr holds progress ([`progress`]), notes for a person, and errors.
//! - A failure is printed once, by [`Output::fail`]: `error: …` on stderr,
//!   or with `--output json` the envelope
//!   `{"ok":false,"error":…,"exit_code":N,…}` on stdout.
//!
//! Tables go through [`table`], byte sizes through [`bytes`].

pub mod progress;
pub mod table;

use std::fmt::Display;
use std::io::Write;

use serde::Serialize;
use serde_json::{Map, Value};

pub use progress::Reporter;
pub use table::Table;

use crate::exit::Exit;

/// `--output`: how results and errors are printed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// For a person; progress on stderr as a bar on a terminal, else as lines.
    #[default]
    Text,
    /// One JSON object per line on stdout (errors too); progress stays on stderr.
    Json,
}

/// Prints results and failures in the chosen [`Format`].
#[derive(Debug, Clone, Copy)]
pub struct Output {
    format: Format,
}

impl Output {
    /// Prints in `format`.
    pub fn new(format: Format) -> Self {
        Self { format }
    }

    /// Whether stdout is for JSON lines only.
    pub fn is_json(self) -> bool {
        self.format == Format::Json
    }

    /// Prints a result: `text` (when not empty) or `json` as one line.
    pub fn result(self, text: impl Display, json: &impl Serialize) {
        match self.format {
            Format::Text => {
                let text = text.to_string();
                if !text.is_empty() {
                    println!("{}", text.trim_end_matches('\n'));
                }
            }
            Format::Json => self.json_line(json),
        }
    }

    /// Prints a result that has no JSON form of its own (text mode only).
    pub fn text(self, text: impl Display) {
        if !self.is_json() {
            self.result(text, &());
        }
    }

    /// Prints one JSON object on its own line (JSON mode only).
    pub fn json_line(self, value: &impl Serialize) {
        if self.is_json() {
            let line = serde_json::to_string(value).expect("JSON values always encode");
            println!("{line}");
            let _ = std::io::stdout().flush();
        }
    }

    /// A remark for a person on stderr (text mode only): what was started,
    /// why a list is empty.
    pub fn note(self, message: impl Display) {
        if !self.is_json() {
            eprintln!("{message}");
        }
    }

    /// Prints `failure` and returns its exit code.
    pub fn fail(self, failure: &Failure) -> Exit {
        match self.format {
            Format::Text => eprintln!("error: {}", failure.message),
            Format::Json => self.json_line(&failure.envelope()),
        }
        failure.exit
    }
}

/// A command that did not do what it was asked, with its exit code.
///
/// Built from the engine's and the coordinator's errors (so the exit code
/// comes from [`Exit`]'s conversions), or from a message.
#[derive(Debug)]
pub struct Failure {
    /// The code the process exits with.
    pub exit: Exit,
    /// What went wrong and what to do next, for a person.
    pub message: String,
    /// More fields for the JSON envelope, e.g. whether a retry is safe.
    fields: Map<String, Value>,
}

impl Failure {
    /// A failure with this exit code and message. A password in the message
    /// (a URL's, a `password=` parameter's) is masked: whatever an error
    /// quotes, the terminal and the JSON envelope never show it.
    pub fn new(exit: Exit, message: impl Into<String>) -> Self {
        Self { exit, message: runway_engine::redact::redact_urls(&message.into()), fields: Map::new() }
    }

    /// Bad input, refused before anything was changed.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(Exit::Invalid, message)
    }

    /// Adds a field to the JSON envelope.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.fields.insert(key.to_owned(), value.into());
        self
    }

    /// `{"ok":false,"error":…,"exit_code":N, …fields}`.
    fn envelope(&self) -> Value {
        let mut object = Map::new();
        object.insert("ok".into(), false.into());
        object.insert("error".into(), self.message.clone().into());
        object.insert("exit_code".into(), self.exit.code().into());
        object.extend(self.fields.clone());
        Value::Object(object)
    }
}

impl From<runway_engine::migrate::MigrateError> for Failure {
    /// `retry_is_safe` is the field name `runway migrate` always used.
    fn from(error: runway_engine::migrate::MigrateError) -> Self {
        Failure::new(Exit::from(&error), error.to_string()).with("retry_is_safe", error.retry_is_safe())
    }
}

impl From<runway_engine::backup::BackupError> for Failure {
    /// `retry_safe` is the field name `runway backup` always used.
    fn from(error: runway_engine::backup::BackupError) -> Self {
        Failure::new(Exit::from(&error), error.to_string()).with("retry_safe", error.retry_safe())
    }
}

impl From<crate::remote::CallError> for Failure {
    fn from(error: crate::remote::CallError) -> Self {
        Failure::new(Exit::from(&error), error.to_string())
    }
}

/// `12345678` → `11.8 MiB`: the engine's formatter, so that sizes read the
/// same in errors, tables and progress.
pub fn bytes(n: u64) -> String {
    runway_engine::backup::error::human(n)
}

/// ` [done/total unit]` (or ` [done unit]`), empty when nothing was
/// counted; byte counts as sizes.
pub fn counters(done: u64, total: u64, unit: &str) -> String {
    if total == 0 && done == 0 {
        return String::new();
    }
    let count = |n: u64| if unit == "bytes" { bytes(n) } else { n.to_string() };
    let unit = if unit == "bytes" { String::new() } else { format!(" {unit}") };
    if total > 0 {
        format!(" [{}/{}{unit}]", count(done), count(total))
    } else {
        format!(" [{}{unit}]", count(done))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_envelope_keeps_the_field_names_scripts_read() {
        let failure = Failure::new(Exit::Busy, "lock held").with("retry_is_safe", true);
        assert_eq!(
            failure.envelope(),
            serde_json::json!({"ok": false, "error": "lock held", "exit_code": 5, "retry_is_safe": true})
        );
    }

    #[test]
    fn a_failure_never_shows_a_password() {
        let failure = Failure::invalid("cannot reach postgres://app:hunter2@db/app?password=hunter2");
        assert!(!failure.message.contains("hunter2"), "{}", failure.message);
        assert!(!failure.envelope().to_string().contains("hunter2"));
    }

    #[test]
    fn counters_read_as_sizes_for_bytes() {
        assert_eq!(counters(0, 0, "tables"), "");
        assert_eq!(counters(1, 2, "migrations"), " [1/2 migrations]");
        assert_eq!(counters(3, 0, "checks"), " [3 checks]");
        assert_eq!(counters(1536, 3 * 1024 * 1024, "bytes"), " [1.5 KiB/3.0 MiB]");
    }
}
