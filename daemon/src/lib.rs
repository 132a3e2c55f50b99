//! What every runway daemon (coordinator, agent) does for its host, apart
//! from its own job:
//!
//! - [`config_check`]: the start-up checks of a config (also run by
//!   `runway config check`): every problem, each naming its key.
//! - [`notify`]: the sd_notify protocol, for `Type=notify` units with a
//!   watchdog.
//! - [`metrics`]: the registry that refuses a metric without HELP text, and
//!   its text in the OpenMetrics and the Prometheus 0.0.4 formats.
//! - [`metrics_endpoint`]: an opt-in HTTP listener answering `GET /metrics`.
//! - [`reload`]: `SIGHUP` and changed files trigger reading certificates again.
//! - [`limits`]: process limits (open files) a daemon raises for itself.
//! - [`shutdown`]: `SIGTERM` and `SIGINT`, the signals that stop a daemon.

pub mod config_check;
pub mod limits;
pub mod metrics;
pub mod metrics_endpoint;
pub mod notify;
pub mod reload;
pub mod shutdown;
