//! `plan`: what a deploy would do, before it does it.

use std::path::Path;

use runway_proto::bundle::MigrationFile;
use serde::Serialize;

use super::lint::{self, DowntimeClass, LintReport, Severity};
use super::predict::{self, DataReport, PredictConfig};
use super::prove::{self, Direction, DownsReport};
use super::{MigrateError, StatusReport, status};

/// Pending migrations, lint, downtime, and whether maintenance mode is needed.
#[derive(Debug, Clone, Serialize)]
pub struct PlanReport {
    /// Where the database stands.
    pub status: StatusReport,
    /// What would be applied, in order.
    pub pending: Vec<String>,
    /// Lint of the pending migrations, with sizes and the downtime class.
    pub lint: LintReport,
    /// True when the set can run while the app serves traffic: nothing
    /// destructive, nothing that breaks running code, nothing holding a
    /// blocking lock for a noticeable time, and a small downtime class.
    pub safe_without_maintenance: bool,
    /// Why not (empty when safe).
    pub reasons: Vec<String>,
    /// Whether deploy would refuse to run (failed migrations, missing baseline).
    pub blocked: Option<String>,
    /// Each pending migration's down, proven on a schema-only copy of the
    /// database: whether a rollback by migration is possible.
    pub downs: DownsReport,
    /// What the live data says about the pending statements that can fail
    /// on existing rows; a `will_fail` finding blocks the deploy.
    pub data: DataReport,
}

/// What [`plan`] needs besides the database and the bundle.
#[derive(Debug, Clone, Copy)]
pub struct PlanOptions<'a> {
    /// `pg_dump`, to prove the downs.
    pub pg_dump: &'a Path,
    /// How the data checks run.
    pub data: &'a PredictConfig,
}

impl PlanReport {
    /// Whether deploy may run as is, needs maintenance mode, or would refuse.
    pub fn verdict(&self) -> Verdict {
        if self.blocked.is_some() {
            Verdict::WouldRefuse
        } else if self.safe_without_maintenance {
            Verdict::Safe
        } else {
            Verdict::NeedsMaintenance
        }
    }
}

/// What a [`PlanReport`] means for the deploy. Callers decide what to make
/// of it (the CLI maps it to its exit code).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Safe to deploy while the app serves traffic.
    Safe,
    /// Deploy needs maintenance mode; [`PlanReport::reasons`] says why.
    NeedsMaintenance,
    /// Deploy would refuse to run; [`PlanReport::blocked`] says why.
    WouldRefuse,
}

/// Seconds of lock time from which a blocking statement needs maintenance mode.
const NOTICEABLE_SECS: f64 = 1.0;

/// Builds the plan for deploying `migrations` to `database_url`: the
/// lint, the pending statements checked against the live data, and the
/// pending migrations' downs proven.
pub async fn plan(
    database_url: &str,
    migrations: &[MigrationFile],
    options: PlanOptions<'_>,
) -> Result<PlanReport, MigrateError> {
    let status = status(database_url, migrations).await?;
    let mut lint = lint::lint(Some(database_url), migrations).await?;
    let pending: Vec<&MigrationFile> =
        migrations.iter().filter(|m| status.pending.iter().any(|p| p == &m.name)).collect();
    let (data, downs) = if status.failed.is_empty() && !status.needs_baseline {
        let data = predict::predict(database_url, &pending, options.data).await?;
        let downs = prove::prove(database_url, &pending, Direction::Forward, options.pg_dump).await;
        (data, downs)
    } else {
        (DataReport::default(), DownsReport::default())
    };
    lint.findings.extend(downs.findings());
    Ok(build(status, lint, downs, data))
}

/// The decision, separated from I/O.
pub fn build(status: StatusReport, lint: LintReport, downs: DownsReport, data: DataReport) -> PlanReport {
    let mut reasons = Vec::new();
    for f in &lint.findings {
        let breaks_code = f.rule.starts_with("rename-") || f.rule.starts_with("drop-");
        let long_lock =
            f.estimated_seconds.is_none_or(|s| s >= NOTICEABLE_SECS) && f.work != lint::Work::Instant;
        if f.severity == Severity::Danger || breaks_code || long_lock {
            reasons.push(format!("{} line {}: {} ({})", f.migration, f.line, f.rule, f.message));
        }
    }
    for p in &lint.parse_errors {
        reasons.push(format!("{} line {}: does not parse: {}", p.migration, p.line, p.message));
    }
    match lint.downtime.class {
        DowntimeClass::Small => {}
        other => reasons.push(format!("downtime class {other:?}: {}", lint.downtime.reason)),
    }
    let blocked = if !status.failed.is_empty() {
        Some(format!(
            "failed migration(s) {} must be resolved first",
            status.failed.iter().map(|f| f.name.as_str()).collect::<Vec<_>>().join(", ")
        ))
    } else if status.needs_baseline {
        Some("the schema is not empty but has no _prisma_migrations: baseline with resolve --applied".into())
    } else if data.will_fail() {
        Some(will_fail(&data))
    } else {
        None
    };
    PlanReport {
        pending: status.pending.clone(),
        safe_without_maintenance: reasons.is_empty() && blocked.is_none(),
        status,
        lint,
        reasons,
        blocked,
        downs,
        data,
    }
}

/// Why deploy would refuse because of the data: each statement that will
/// fail, with its count and where to find the rows. There is no flag to
/// accept it: the fix is the data or the migration.
pub fn will_fail(data: &DataReport) -> String {
    let mut text =
        String::from("the live data makes these statements fail; fix the rows or the migration first:");
    for f in data.findings.iter().filter(|f| f.certainty == predict::Certainty::WillFail) {
        text.push_str(&format!("\n  {} line {}: {}", f.migration, f.line, f.message));
        if !f.examples.is_empty() {
            text.push_str(&format!(" (e.g. {})", f.examples.join(", ")));
        }
        if !f.query.is_empty() {
            text.push_str(&format!("\n    find them: {}", f.query));
        }
    }
    text
}
