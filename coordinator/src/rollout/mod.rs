//! Rollouts: the runbook as a saved state machine.
//!
//! - [`plan`]: the default plan, step kinds and the command each sends.
//! - [`record`]: the saved state and its wire form.
//! - [`events`]: the numbered event log watchers follow.
//! - [`engine`]: runs and resumes rollouts while this coordinator leads.

pub mod engine;
pub mod events;
pub mod plan;
pub mod record;
