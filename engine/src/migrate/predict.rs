//! `predict`: which pending statements WILL FAIL on the live data, found
//! before any downtime by reading the live database with plain SELECTs.
//!
//! `SET NOT NULL` over rows with NULL, a unique index over duplicates, a
//! foreign key over orphans, a CHECK, a type change or an enum change over
//! values that do not fit: each fails at deploy time, mid-migration, while
//! the app is down. Each becomes a query counting the offending rows, run
//! before the deploy under a statement timeout. The walk keeps what earlier
//! statements of the bundle do: a table the bundle creates has no rows to
//! check; a table an earlier statement writes (an `UPDATE` fixing the
//! NULLs, a `DELETE` of orphans) makes the finding [`Certainty::MayFail`]
//! instead of [`Certainty::WillFail`]; a column the bundle adds holds its
//! default. A check that times out or errors is [`Certainty::Unknown`],
//! never a pass.
//!
//! Offending rows are named by their primary key only (`ctid` when the
//! table has none): personal data in other columns never reaches a report,
//! a log or an event. The `query` of a finding, for the operator to run
//! themselves, may select more.
//!
//! # Layout
//!
//! - `walk`: the bundle, statement by statement, and what it did so far.
//! - `statements`: the statements that can fail on rows, as checks.
//! - `check`: a check's SQL (counts, examples, the operator's query);
//!   `cast`: the conversion checks.
//! - `run`: the session, the timeouts, merged scans, the cast slow path.
//! - `sql`: deparsing, quoting, rewriting type names in casts.

use std::time::{Duration, Instant};

use runway_proto::bundle::MigrationFile;
use serde::{Deserialize, Serialize};

use super::MigrateError;

mod cast;
mod check;
mod run;
mod sql;
mod statements;
mod walk;

/// How `predict` runs its checks.
#[derive(Debug, Clone)]
pub struct PredictConfig {
    /// `statement_timeout` of each check query; a check that takes longer
    /// is reported [`Certainty::Unknown`]. Default 10 s.
    pub statement_timeout: Duration,
}

impl Default for PredictConfig {
    fn default() -> Self {
        Self { statement_timeout: Duration::from_secs(10) }
    }
}

/// How sure a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Certainty {
    /// The live rows make the statement fail, and nothing earlier in the
    /// bundle changes them.
    WillFail,
    /// The live rows would make it fail, but an earlier statement of the
    /// bundle writes the table (it may fix them): worth a look, not a refusal.
    MayFail,
    /// The check timed out or errored: nothing is known.
    Unknown,
}

/// One statement that will (or may) fail on the live data.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DataFinding {
    pub certainty: Certainty,
    /// `not-null`, `add-column-not-null`, `unique`, `primary-key`,
    /// `foreign-key`, `check`, `cast`, `enum-value` or `does-not-parse`.
    pub kind: String,
    /// The migration (folder) name.
    pub migration: String,
    /// 1-based line of the statement in `migration.sql`.
    pub line: usize,
    /// The table, as the statement names it.
    pub table: String,
    /// The columns (or index expressions) concerned.
    pub columns: Vec<String>,
    /// Offending rows (duplicate groups for `unique` and `primary-key`
    /// duplicates); `None` when unknown.
    pub count: Option<i64>,
    /// Up to five offending rows by primary key, e.g. `id=3` or
    /// `(tenant, id)=(1, 7)` (`ctid=(0,3)` without a primary key). Never any
    /// other column value.
    pub examples: Vec<String>,
    /// A query listing every offending row, for the operator to run.
    pub query: String,
    /// One line: what will fail and why, with counts only.
    pub message: String,
}

/// What `predict` found.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DataReport {
    /// In bundle order.
    pub findings: Vec<DataFinding>,
    /// Queries run (checks, examples and catalog lookups).
    pub checks: usize,
    /// Total time, in milliseconds.
    pub ms: u64,
}

impl DataReport {
    /// Whether a pending statement will certainly fail on the live data.
    pub fn will_fail(&self) -> bool {
        self.findings.iter().any(|f| f.certainty == Certainty::WillFail)
    }
}

/// Reads the live database behind `database_url` and reports which
/// statements of `pending` (in order) will fail on its rows. Only plain
/// SELECTs touch the tables (temporary functions in `pg_temp` aside), each
/// under `config.statement_timeout`. Errors only when the database cannot
/// be reached or the session breaks; retry is then safe.
pub async fn predict(
    database_url: &str,
    pending: &[&MigrationFile],
    config: &PredictConfig,
) -> Result<DataReport, MigrateError> {
    let started = Instant::now();
    let mut probe = run::Probe::open(database_url, config.statement_timeout).await?;
    let mut walk = walk::Walk::new(&mut probe);
    for m in pending {
        walk.migration(m).await;
    }
    let (checks, mut findings) = walk.finish();
    let outcomes = run::run(&mut probe, &checks).await;
    for (check, outcome) in checks.iter().zip(outcomes) {
        if let Some(finding) = finding(check, outcome, config.statement_timeout) {
            findings.push((check.seq, finding));
        }
    }
    findings.sort_by_key(|(seq, _)| *seq);
    let queries = probe.queries;
    let lost = probe.lost.take();
    probe.close().await;
    if let Some(error) = lost {
        return Err(error);
    }
    Ok(DataReport {
        findings: findings.into_iter().map(|(_, f)| f).collect(),
        checks: queries,
        ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    })
}

/// The finding a check's outcome makes, if any.
fn finding(check: &check::Check, outcome: run::Outcome, timeout: Duration) -> Option<DataFinding> {
    let (certainty, count, message) = match outcome.count {
        Ok(0) => return None,
        Ok(n) => match &check.target.written {
            None => (Certainty::WillFail, Some(n), format!("{} will fail: {}", check.what, check.problem(n))),
            Some(reason) => (
                Certainty::MayFail,
                Some(n),
                format!("{} may fail: {} now, but {reason} first", check.what, check.problem(n)),
            ),
        },
        Err(failure) => (
            Certainty::Unknown,
            None,
            format!("{} could not be checked: {}", check.what, failure.reason(timeout)),
        ),
    };
    Some(DataFinding {
        certainty,
        kind: check.kind.to_owned(),
        migration: check.migration.clone(),
        line: check.line,
        table: check.target.named.clone(),
        columns: check.columns.clone(),
        count,
        examples: outcome.examples,
        query: outcome.query,
        message,
    })
}
