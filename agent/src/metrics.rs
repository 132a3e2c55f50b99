//! The agent's Prometheus metrics and the `/metrics` endpoint.
//!
//! One process-wide set of typed handles ([`get`]), like neon's metric
//! statics: recording is a one-line call where the event happens, and
//! costs a few atomics whether or not `[telemetry] metrics_listen` serves
//! them. Names follow Prometheus conventions (`runway_` prefix, `_seconds`,
//! `_bytes`, `_total`); the text is OpenMetrics, which Prometheus scrapes.
//!
//! Migrations are timed in one histogram without their names (a label per
//! migration name would grow without bound) and counted in
//! `runway_migrations_applied_total`.

use std::sync::LazyLock;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use runway_daemon::metrics::{Registry, Unit};

/// Buckets for commands, backups and migrations: 10 ms to about 11 h.
fn buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.01, 2.0, 22))
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindOutcome {
    kind: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Database {
    database: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Rule {
    rule: &'static str,
}

/// The agent's metrics; see [`get`].
pub struct Metrics {
    pub registry: Registry,
    command_duration: HistogramFamily<KindOutcome>,
    backup_bytes: Family<Database, Gauge>,
    backup_duration: HistogramFamily<Database>,
    backup_last_success: Family<Database, Gauge>,
    migration_duration: Histogram,
    migrations_applied: Counter,
    lint_findings: Family<Rule, Counter>,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process's metrics.
pub fn get() -> &'static Metrics {
    &METRICS
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("runway");
        let m = Self {
            command_duration: Family::new_with_constructor(buckets),
            backup_bytes: Family::default(),
            backup_duration: Family::new_with_constructor(buckets),
            backup_last_success: Family::default(),
            migration_duration: buckets(),
            migrations_applied: Counter::default(),
            lint_findings: Family::default(),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register_with_unit(
            "agent_command_duration",
            "How long commands ran on this agent, by kind and outcome",
            Unit::Seconds,
            m.command_duration.clone(),
        );
        r.register_with_unit(
            "backup_size",
            "Size of the last successful backup, by database",
            Unit::Bytes,
            m.backup_bytes.clone(),
        );
        r.register_with_unit(
            "backup_duration",
            "How long successful backups took (dump, verify, upload), by database",
            Unit::Seconds,
            m.backup_duration.clone(),
        );
        r.register(
            "backup_last_success_timestamp_seconds",
            "When the last backup succeeded (unix seconds), by database",
            m.backup_last_success.clone(),
        );
        r.register_with_unit(
            "migration_duration",
            "How long each applied migration took",
            Unit::Seconds,
            m.migration_duration.clone(),
        );
        r.register("migrations_applied", "Migrations this agent applied", m.migrations_applied.clone());
        r.register(
            "lint_findings",
            "Lint findings in pending SQL seen at preflight, by rule",
            m.lint_findings.clone(),
        );
        Self { registry, ..m }
    }

    /// A command of `kind` (see [`crate::exec::action_name`]) ended with
    /// `outcome` after `took`.
    pub fn command_ended(&self, kind: &'static str, outcome: &'static str, took: Duration) {
        self.command_duration.get_or_create(&KindOutcome { kind, outcome }).observe(took.as_secs_f64());
    }

    /// A backup of `database` of `bytes` succeeded after `took`.
    pub fn backup_succeeded(&self, database: &str, bytes: u64, took: Duration) {
        let labels = Database { database: database.to_owned() };
        self.backup_bytes.get_or_create(&labels).set(i64::try_from(bytes).unwrap_or(i64::MAX));
        self.backup_duration.get_or_create(&labels).observe(took.as_secs_f64());
        self.backup_last_success.get_or_create(&labels).set(runway_proto::unix_ms_now() / 1000);
    }

    /// Migrations were applied, each taking `durations_ms`.
    pub fn migrations_applied(&self, durations_ms: &[u64]) {
        for ms in durations_ms {
            self.migration_duration.observe(*ms as f64 / 1000.0);
            self.migrations_applied.inc();
        }
    }

    /// Preflight found these lint `rules` in the pending SQL (one per finding).
    pub fn lint_findings<'a>(&self, rules: impl Iterator<Item = &'a &'static str>) {
        for rule in rules {
            self.lint_findings.get_or_create(&Rule { rule }).inc();
        }
    }

    /// The metrics in the Prometheus text format 0.0.4 (what
    /// `promtool check metrics` reads).
    pub fn render(&self) -> String {
        self.registry.prometheus_text()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_prometheus_conventions() {
        get().migrations_applied(&[1200, 30]);
        get().backup_succeeded("app", 4096, Duration::from_secs(2));
        let text = get().render();
        for name in [
            "runway_migrations_applied_total 2",
            "runway_migration_duration_seconds_count 2",
            "runway_backup_size_bytes{database=\"app\"} 4096",
            "runway_backup_last_success_timestamp_seconds{database=\"app\"} ",
        ] {
            assert!(text.contains(name), "{name} missing in\n{text}");
        }
    }
}
