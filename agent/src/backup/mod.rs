//! Backups: `pg_dump` streamed through SHA-256 into the backup dir, with a manifest.
//!
//! INTERFACE CONTRACT (the rest of the agent and the CLI call only these):
//! - [`BackupConfig`]: the `[backup]` table of the agent config.
//! - [`create`]: take a backup, returning its manifest.
//!
//! # Layout
//!
//! - [`config`]: `[backup]` and `[backup.object_store]`.
//! - [`create`](mod@create): space check, snapshot, pg_dump hashed as written, manifest.
//! - [`manifest`]: `manifest.json` and backup ids.
//! - [`error`]: [`BackupError`], which says whether a retry is safe.
//! - `conn`: a database URL split into `PG*` variables (no password in argv).
//! - `snapshot`: the exported snapshot, row counts and applied migrations.
//! - `stream`: hashing on the way to disk, throttled byte progress.
//! - `space`: the free-space check.
//! - `tools`: running pg_dump / pg_restore.
//! - [`retention`]: listing, pins, keeping the newest N.
//!
//! A backup is one folder `<dir>/<id>/` holding `manifest.json` and `dump`
//! (a file in custom format, a folder in directory format).

pub mod config;
mod conn;
pub mod create;
pub mod error;
pub mod manifest;
pub mod retention;
mod snapshot;
mod space;
mod stream;
mod tools;

pub use config::{BackupConfig, DumpFormat, ObjectStoreConfig, TestRestore};
pub use create::create;
pub use error::{BackupError, TableDiff};
pub use manifest::{AppliedMigration, FileEntry, Manifest, TableRows};
