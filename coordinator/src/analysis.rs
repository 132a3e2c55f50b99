//! Prometheus analysis: the numbers the runbook watches, asked of
//! Prometheus while a rollout's canaries stay healthy, through the watch
//! window and in the `monitor` phase after success.
//!
//! Pure parts and one client; the runner decides when to measure and
//! saves every measurement with its count (see `rollout::runner::analysis`).
//!
//! # Layout
//!
//! - [`template`]: a check's query with this rollout's hosts and versions filled in.
//! - [`query`]: the Prometheus HTTP API client (`GET /api/v1/query`), with
//!   a timeout on every query and credentials never logged.
//! - [`verdict`]: one measurement's verdict, and the count (Argo's
//!   `failureLimit` and `consecutiveErrorLimit`) that fails an analysis.

pub mod query;
pub mod template;
pub mod verdict;

pub use query::{Prometheus, QueryError};
pub use template::Bindings;
pub use verdict::{Measurement, Outcome};
