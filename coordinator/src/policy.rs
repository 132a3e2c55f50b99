//! The runbook's policies as decisions over saved facts; the operator API
//! and the runner apply them.
//!
//! - [`staging_first`]: may this bundle roll out here yet (`requires`)?
//! - [`maintenance`]: does this rollout turn maintenance mode on (`maintenance`)?

pub mod maintenance;
pub mod staging_first;
