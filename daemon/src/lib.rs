//! What every runway daemon (coordinator, agent) does for its host, apart
//! from its own job:
//!
//! - [`notify`]: the sd_notify protocol, for `Type=notify` units with a
//!   watchdog.
//! - [`metrics_endpoint`]: an opt-in HTTP listener answering `GET /metrics`.

pub mod metrics_endpoint;
pub mod notify;
