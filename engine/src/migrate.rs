//! The migrations engine: Prisma-compatible bookkeeping in `_prisma_migrations`.
//!
//! A team can switch between `prisma migrate deploy` and runway in either
//! direction: runway reads the same folder, takes the same advisory lock and
//! writes the same rows. What it adds: statements that cannot run in a
//! transaction are handled, a lint that knows which statements are
//! dangerous and how big the tables they touch are, and a plan.
//!
//! INTERFACE CONTRACT (the rest of the agent and the CLI call only these):
//! - [`MigrateConfig`]: the `[migrate]` table of the agent config.
//! - [`deploy`]: apply pending migrations of a bundle ([`deploy_accepted`]:
//!   only when their Danger statements were accepted).
//! - [`status`]: compare a bundle with the database.
//! - [`resolve`]: Prisma's `migrate resolve --applied/--rolled-back`.
//! - [`lint`] and [`plan`]: what the pending SQL will do, before it runs,
//!   and whether each pending migration's `down.sql` is proven.
//! - [`down::undo`]: roll back applied migrations by their proven downs.
//! - [`source::read_folder`]: a migrations folder on disk as a bundle.
//!
//! # Layout
//!
//! - `source`: reading a folder from disk.
//! - `connect`: URLs (with Prisma's `?schema=`) and sessions.
//! - `table`: `_prisma_migrations` rows, written as Prisma writes them.
//! - `checksum`: SHA-256 checksums, line-ending tolerant.
//! - `lock`: Prisma's advisory lock with a timeout.
//! - `parse` / `script`: statements via PostgreSQL's grammar; cutting files
//!   around statements that cannot run in a transaction.
//! - `deploy`, `status`, `resolve`: the commands.
//! - `lint` (rules, table sizes, downtime class) and `plan`.
//! - `schema`: `pg_dump --schema-only`, normalised and compared by object.
//! - `prove`: downs tried on a scratch schema-only copy; `down`: running them.
//! - `gate`: Danger findings a rollout needs an operator to accept.

use std::time::Duration;

use serde::{Deserialize, Serialize};

pub mod checksum;
mod connect;
mod deploy;
pub mod down;
mod error;
pub mod gate;
pub mod lint;
mod lock;
pub mod parse;
pub mod plan;
pub mod predict;
pub mod prove;
pub mod resolve;
pub mod schema;
pub mod script;
pub mod source;
pub mod status;
pub mod table;
mod wire;

pub use deploy::{deploy, deploy_accepted};
pub use error::MigrateError;
pub use lint::{LintReport, lint};
pub use lock::PRISMA_LOCK_KEY;
pub use plan::{PlanOptions, PlanReport, plan};
pub use predict::{DataReport, PredictConfig};
pub use prove::{DownProof, DownState, DownsReport};
pub use resolve::{ResolveAction, resolve};
pub use status::{StatusReport, status};

/// `[migrate]` in the agent config; also the CLI's local-mode flags.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct MigrateConfig {
    /// How long to wait for Prisma's advisory lock (`"0s"`: try once).
    #[serde(with = "humantime_serde")]
    #[schemars(schema_with = "runway_daemon::config_check::duration_schema")]
    pub advisory_lock_timeout: Duration,
    /// PostgreSQL's `lock_timeout` for migration statements, whole
    /// milliseconds (`"0s"`: the server's default).
    #[serde(with = "humantime_serde")]
    #[schemars(schema_with = "runway_daemon::config_check::duration_schema")]
    pub lock_timeout: Duration,
    /// PostgreSQL's `statement_timeout` for migration statements, whole
    /// milliseconds (`"0s"`: the server's default).
    #[serde(with = "humantime_serde")]
    #[schemars(schema_with = "runway_daemon::config_check::duration_schema")]
    pub statement_timeout: Duration,
    /// How long each read-only check of the live data may take in a plan
    /// (at least 1ms); a check that takes longer is reported unknown.
    #[serde(with = "humantime_serde")]
    #[schemars(schema_with = "runway_daemon::config_check::duration_schema")]
    pub data_check_timeout: Duration,
}

impl Default for MigrateConfig {
    fn default() -> Self {
        Self {
            advisory_lock_timeout: Duration::from_secs(10),
            lock_timeout: Duration::ZERO,
            statement_timeout: Duration::ZERO,
            data_check_timeout: Duration::from_secs(10),
        }
    }
}

impl MigrateConfig {
    /// How the plan's data checks run.
    pub fn predict(&self) -> PredictConfig {
        PredictConfig { statement_timeout: self.data_check_timeout.max(Duration::from_millis(1)) }
    }
}

/// What a deploy did.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DeployReport {
    /// Names applied by this run, in order.
    pub applied: Vec<String>,
    /// How many of the bundle's migrations were already applied.
    pub already_applied: usize,
    /// How long each of `applied` took, in milliseconds.
    #[serde(default)]
    pub durations_ms: Vec<u64>,
    /// Things worth telling a person that did not stop the deploy (e.g. an
    /// applied migration whose file changed since).
    #[serde(default)]
    pub warnings: Vec<String>,
}
