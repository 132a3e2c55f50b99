//! runway's engine: the database work of a rollout, usable without any
//! coordinator. The agent runs it for the coordinator's typed commands; the
//! `runway` CLI runs it locally against a `DATABASE_URL`.
//!
//! # Layout
//!
//! - [`database`]: one database target (a `postgres://` URL with Prisma's
//!   parameters) for sqlx sessions and for `pg_dump`/`pg_restore`.
//! - [`migrate`]: the Prisma-compatible migrations engine (folder and bundle
//!   reading, `_prisma_migrations` bookkeeping, deploy/status/resolve, lint,
//!   plan).
//! - [`backup`]: `pg_dump` backups hashed as written, manifests, verification,
//!   restore, retention and off-host copies in object storage.
//! - [`progress`]: the handle long work reports through.
//! - [`redact`]: keeping secrets out of what leaves the process.
//! - [`errors`]: printing an error with its causes.
//! - [`agent_config`]: the agent's config file and its start-up checks (the
//!   agent and `runway config check` both load it from here).

pub mod agent_config;
pub mod backup;
pub mod database;
pub mod errors;
pub mod failpoint;
pub mod migrate;
pub mod progress;
pub mod redact;
