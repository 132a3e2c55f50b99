//! Progress reporting shared by every command.
//!
//! Long work (a backup, a migration run) reports what it is doing through a
//! [`Progress`] handle. In the agent the handle turns updates into
//! `CommandEvent`s on the coordinator stream; in the CLI's local mode it
//! prints them. The work itself does not know which.

use std::sync::Arc;

/// One progress update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    /// Short machine-friendly phase, e.g. `dump`, `apply`, `health`.
    pub phase: String,
    /// One line for a person.
    pub message: String,
    /// How far along, when the work is countable.
    pub counters: Option<Counters>,
}

/// How much of a countable piece of work is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    pub done: u64,
    /// 0 when the total is unknown.
    pub total: u64,
    /// What is counted: `bytes`, `migrations`, `checks`, `tables`.
    pub unit: &'static str,
}

/// Cheap, clonable handle to report progress through.
#[derive(Clone)]
pub struct Progress {
    sink: Arc<dyn Fn(Update) + Send + Sync>,
}

impl Progress {
    /// Reports every update to `sink`.
    pub fn new(sink: impl Fn(Update) + Send + Sync + 'static) -> Self {
        Self { sink: Arc::new(sink) }
    }

    /// A handle that drops every update (tests, benchmarks).
    pub fn discard() -> Self {
        Self::new(|_| {})
    }

    /// Reports a step without counters.
    pub fn emit(&self, phase: &str, message: impl Into<String>) {
        (self.sink)(Update { phase: phase.to_owned(), message: message.into(), counters: None });
    }

    /// Reports a step with counters.
    pub fn emit_counted(
        &self,
        phase: &str,
        message: impl Into<String>,
        done: u64,
        total: u64,
        unit: &'static str,
    ) {
        (self.sink)(Update {
            phase: phase.to_owned(),
            message: message.into(),
            counters: Some(Counters { done, total, unit }),
        });
    }
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Progress")
    }
}
