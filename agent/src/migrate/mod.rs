//! The migrations engine: Prisma-compatible bookkeeping in `_prisma_migrations`.
//!
//! INTERFACE CONTRACT (the rest of the agent and the CLI call only these):
//! - [`MigrateConfig`]: the `[migrate]` table of the agent config.
//! - [`deploy`]: apply pending migrations of a bundle.
//! - [`status`]: compare a bundle with the database.

use std::time::Duration;

use runway_proto::bundle::MigrationFile;
use serde::{Deserialize, Serialize};

use crate::progress::Progress;

/// `[migrate]` in the agent config; also the CLI's local-mode flags.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct MigrateConfig {
    /// How long to wait for Prisma's advisory lock, in seconds.
    pub advisory_lock_timeout_secs: u64,
    /// `lock_timeout` for migration statements, in milliseconds (0 = server default).
    pub lock_timeout_ms: u64,
    /// `statement_timeout` for migration statements, in milliseconds (0 = server default).
    pub statement_timeout_ms: u64,
}

impl Default for MigrateConfig {
    fn default() -> Self {
        Self { advisory_lock_timeout_secs: 10, lock_timeout_ms: 0, statement_timeout_ms: 0 }
    }
}

impl MigrateConfig {
    pub fn advisory_lock_timeout(&self) -> Duration {
        Duration::from_secs(self.advisory_lock_timeout_secs)
    }
}

/// What a deploy did.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DeployReport {
    /// Names applied by this run, in order.
    pub applied: Vec<String>,
    /// How many of the bundle's migrations were already applied.
    pub already_applied: usize,
}

/// Why migrating failed.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("cannot connect to the database: {0}")]
    Connect(String),
    #[error("migration {name} failed: {error}")]
    Failed { name: String, error: String },
    #[error("{0}")]
    Other(String),
}

/// Applies the pending migrations of `migrations` (already in apply order).
pub async fn deploy(
    database_url: &str,
    migrations: &[MigrationFile],
    config: &MigrateConfig,
    progress: &Progress,
) -> Result<DeployReport, MigrateError> {
    let _ = (database_url, migrations, config, progress);
    Err(MigrateError::Other("the migrations engine is being written".into()))
}
