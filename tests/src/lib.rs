//! The end-to-end test harness: real etcd, real PostgreSQL and the real
//! runway binaries, started as processes and killed when a test ends.
//!
//! # Layout
//!
//! - [`process`]: finding binaries, spawning with logs, kill-on-drop.
//! - [`etcd`], [`postgres`]: throwaway servers on free ports.
//! - [`netns`]: hosts as network namespaces on a private bridge; link cuts.
//! - [`pki`]: a runway CA for a test and the certificates it issues.
//! - [`cluster`]: coordinators, a DB agent and app agents with sample apps.
//! - [`fixtures`]: migration folders used by the tests.
//! - [`watch`]: a CLI run whose events a test reacts to as they arrive.
//! - [`checks`]: what failover tests assert: complete events, exactly once.
//! - [`moto`]: an S3-compatible server for backups in object storage.
//! - [`webhook`]: a webhook receiver that records what it gets.
//! - [`otlp`]: an OTLP/gRPC receiver (plain or TLS) that keeps the spans it gets.
//! - [`prometheus`]: a real Prometheus scraping the sample apps, and a bounded load generator.
//! - [`bench`]: what the benchmarks in `benches/` share.
//! - [`fleet`]: a simulated fleet of N agents in one process, for benchmarks.
//! - [`manual`]: man pages rendered by `man -l`, and their exit-code table.
//! - [`book`]: the book in `docs/` built with mdbook, and its internal links checked.
//! - [`nemesis`]: a soak of rollouts under faults, and the invariants checked after.
//! - [`fuzz`]: the fuzz targets (proptest strategies), their saved cases and campaign.

pub mod bench;
pub mod book;
pub mod checks;
pub mod cluster;
pub mod etcd;
pub mod fixtures;
pub mod fleet;
pub mod fuzz;
pub mod manual;
pub mod moto;
pub mod nemesis;
pub mod netns;
pub mod otlp;
pub mod pki;
pub mod postgres;
pub mod process;
pub mod prometheus;
pub mod watch;
pub mod webhook;
