//! The end-to-end test harness: real etcd, real PostgreSQL and the real
//! runway binaries, started as processes and killed when a test ends.
//!
//! # Layout
//!
//! - [`process`]: finding binaries, spawning with logs, kill-on-drop.
//! - [`etcd`], [`postgres`]: throwaway servers on free ports.
//! - [`cluster`]: coordinators, a DB agent and app agents with sample apps.
//! - [`fixtures`]: migration folders used by the tests.
//! - [`moto`]: an S3-compatible server for backups in object storage.

pub mod cluster;
pub mod etcd;
pub mod fixtures;
pub mod moto;
pub mod postgres;
pub mod process;
