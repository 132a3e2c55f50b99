//! Backups: `pg_dump` streamed through SHA-256 into the backup dir, with a manifest.
//!
//! INTERFACE CONTRACT (the rest of the agent and the CLI call only these):
//! - [`BackupConfig`]: the `[backup]` table of the agent config.
//! - [`create`]: take a backup, returning its manifest.
//! - [`verify`]: check a backup folder (optionally by a test restore).
//! - [`restore`] / [`restore_named`]: restore a backup into a database.
//! - [`remote::upload`], [`remote::download`], [`remote::prune`]: object storage.
//! - [`retention::pin`] / [`retention::unpin`]: keep a rollout's backup.
//! - [`run_step`]: the rollout's backup step (create, verify, upload).
//! - [`sweep()`]: at the DB agent's start, what backups that did not finish left.
//!
//! # Layout
//!
//! - [`config`]: `[backup]` and `[backup.object_store]`.
//! - [`create`](mod@create): space check, snapshot, pg_dump hashed as written, manifest.
//! - [`manifest`]: `manifest.json` and backup ids.
//! - [`names`]: the names a manifest may hold: none that leave its backup.
//! - [`error`]: [`BackupError`], which says whether a retry is safe.
//! - `snapshot`: the exported snapshot, row counts and applied migrations.
//! - `stream`: hashing on the way to disk, throttled byte progress.
//! - [`space`]: free-space checks: the backup dir (also the rollout's
//!   preflight disk check) and the database server before a scratch copy.
//! - `tools`: running pg_dump / pg_restore.
//! - [`verify`](mod@verify): checksums re-read, `pg_restore --list`, test restore.
//! - [`restore`](mod@restore): checksums first, then pg_restore, then row counts.
//! - [`remote`]: off-host copies in S3-compatible storage.
//! - [`retention`]: listing, pins, keeping the newest N.
//! - `check`: a backup folder against its manifest.
//! - `step`: the rollout's backup step.
//! - `pgrestore`: running pg_restore; swapping a restored copy in.
//! - [`scratch`]: scratch databases: names, the marker, cleanup on a fresh connection.
//! - [`partial`]: `.partial-*` folders, locked while written.
//! - [`sweep`](mod@sweep): abandoned partial folders and scratch databases, removed.
//!
//! A backup is one folder `<dir>/<id>/` holding `manifest.json` and `dump`
//! (a file in custom format, a folder in directory format).

pub mod archive;
mod check;
pub mod config;
pub mod create;
pub mod error;
pub mod estimate;
pub mod loss;
pub mod manifest;
pub mod names;
pub mod partial;
mod pgrestore;
pub mod remote;
pub mod restore;
pub mod retention;
pub mod scratch;
mod snapshot;
pub mod space;
mod step;
mod stream;
pub mod sweep;
mod tools;
pub mod verify;

pub use config::{
    BackupConfig, DumpFormat, FormatChoice, FormatInputs, ObjectStoreConfig, PostData, Proof, TestRestore,
};
pub use create::{create, create_with};
pub use error::{BackupError, TableDiff};
pub use manifest::{AppliedMigration, FileEntry, Manifest, TableRows, Verification};
pub use restore::{RestoreMode, RestoreOptions, RestoreReport, restore, restore_named};
pub use step::{StepReport, run_step};
pub use sweep::{SweepReport, sweep};
pub use verify::{VerifyReport, verify, verify_as};
