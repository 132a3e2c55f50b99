//! How big the touched tables are, and what that means for downtime.
//!
//! The estimate is deliberately rough and conservative: it multiplies each
//! finding's kind of work (rewrite, index build, scan, every-row DML) by the
//! size of its table at a fixed throughput, and classes the sum the way the
//! runbook does: small < 1 min, medium 1–5 min, large > 5 min.

use serde::Serialize;
use sqlx::PgConnection;

use super::rules::Work;
use crate::migrate::MigrateError;
use crate::migrate::connect::quote_ident;

/// Assumed throughput per kind of work, in bytes per second. Conservative
/// numbers for a busy server on ordinary SSDs.
const REWRITE_BPS: f64 = 30e6;
const INDEX_BUILD_BPS: f64 = 50e6;
const SCAN_BPS: f64 = 150e6;
const EVERY_ROW_BPS: f64 = 20e6;

/// Size of one touched table.
#[derive(Debug, Clone, Serialize)]
pub struct TableStats {
    /// As written in the migration.
    pub table: String,
    /// False when the table does not exist yet (created by this set).
    pub exists: bool,
    /// Heap only (`pg_relation_size`).
    pub heap_bytes: i64,
    /// Heap, indexes and TOAST (`pg_total_relation_size`).
    pub total_bytes: i64,
    /// `pg_class.reltuples`; `None` when the table was never analyzed.
    pub estimated_rows: Option<i64>,
}

/// The runbook's downtime classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DowntimeClass {
    /// Under a minute.
    Small,
    /// One to five minutes.
    Medium,
    /// Over five minutes.
    Large,
    /// Table sizes are unknown (no database connection).
    Unknown,
}

/// The downtime class and why.
#[derive(Debug, Clone, Serialize)]
pub struct Downtime {
    pub class: DowntimeClass,
    /// Sum of the per-statement estimates, when sizes are known.
    pub estimated_seconds: Option<f64>,
    pub reason: String,
}

/// Seconds `work` takes on `stats`.
pub fn estimate(work: Work, stats: &TableStats) -> f64 {
    let heap = stats.heap_bytes.max(0) as f64;
    match work {
        Work::Instant => 0.0,
        Work::Scan => heap / SCAN_BPS,
        Work::IndexBuild => heap / INDEX_BUILD_BPS,
        Work::Rewrite => stats.total_bytes.max(0) as f64 / REWRITE_BPS,
        Work::EveryRow => heap / EVERY_ROW_BPS,
    }
}

/// Classes a total estimate.
pub fn class_of(seconds: f64) -> DowntimeClass {
    if seconds < 60.0 {
        DowntimeClass::Small
    } else if seconds <= 300.0 {
        DowntimeClass::Medium
    } else {
        DowntimeClass::Large
    }
}

/// Looks `table` (as written, optionally `schema.name`) up through the
/// session's search path.
pub async fn table_stats(conn: &mut PgConnection, table: &str) -> Result<TableStats, MigrateError> {
    let qualified = match table.split_once('.') {
        Some((schema, name)) => format!("{}.{}", quote_ident(schema), quote_ident(name)),
        None => quote_ident(table),
    };
    let row: Option<(f64, i64, i64)> = sqlx::query_as(
        "SELECT c.reltuples::float8, pg_relation_size(c.oid), pg_total_relation_size(c.oid)
           FROM pg_class c WHERE c.oid = to_regclass($1)",
    )
    .bind(&qualified)
    .fetch_optional(conn)
    .await
    .map_err(|e| MigrateError::db(format!("measuring table {table}"), e))?;
    Ok(match row {
        Some((tuples, heap, total)) => TableStats {
            table: table.to_owned(),
            exists: true,
            heap_bytes: heap,
            total_bytes: total,
            estimated_rows: (tuples >= 0.0).then_some(tuples as i64),
        },
        None => TableStats {
            table: table.to_owned(),
            exists: false,
            heap_bytes: 0,
            total_bytes: 0,
            estimated_rows: None,
        },
    })
}

/// `11.8 MiB`-style sizes for messages, as everywhere else in runway.
pub fn human_bytes(bytes: i64) -> String {
    crate::backup::error::human(bytes.max(0).unsigned_abs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_follow_the_runbook() {
        assert_eq!(class_of(0.0), DowntimeClass::Small);
        assert_eq!(class_of(59.9), DowntimeClass::Small);
        assert_eq!(class_of(60.0), DowntimeClass::Medium);
        assert_eq!(class_of(300.0), DowntimeClass::Medium);
        assert_eq!(class_of(301.0), DowntimeClass::Large);
        let big = TableStats {
            table: "t".into(),
            exists: true,
            heap_bytes: 6_000_000_000,
            total_bytes: 9_000_000_000,
            estimated_rows: Some(1),
        };
        assert_eq!(estimate(Work::Rewrite, &big), 300.0);
        assert_eq!(estimate(Work::Instant, &big), 0.0);
    }
}
