//! runway's agent: runs typed commands on one host and streams progress back.
//!
//! # Layout
//!
//! - [`config`]: the agent's TOML config: who it is and what it may do.
//! - [`connection`]: dials the coordinator, registers, keeps the stream alive.
//! - [`exec`]: turns a `Command` into work on this host.
//! - [`journal`]: on-disk record of fencing tokens and command results.
//! - [`migrate`]: the Prisma-compatible migrations engine.
//! - [`backup`]: `pg_dump` backups with checksums and manifests.
//! - [`service`]: the maintenance and restart hooks.
//! - [`health`]: polling a health URL.
//! - [`progress`]: the progress handle every command reports through.
//! - [`redact`]: keeping secrets out of what leaves the process.

pub mod backup;
pub mod migrate;
pub mod progress;
pub mod redact;
