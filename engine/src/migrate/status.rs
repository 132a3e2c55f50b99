//! `status`: how a migrations folder compares with `_prisma_migrations`.

use chrono::{DateTime, Utc};
use runway_proto::bundle::MigrationFile;
use serde::Serialize;

use super::connect;
use super::table::{self, MigrationRow};
use super::{MigrateError, checksum, deploy};

/// Exit codes of `runway migrate status` (and what [`StatusReport::exit_code`] returns).
pub mod exit {
    /// Everything in the folder is applied; nothing failed or diverged.
    pub const UP_TO_DATE: i32 = 0;
    /// Could not check (connection, folder, …).
    pub const ERROR: i32 = 1;
    /// Some migrations are pending; nothing is wrong otherwise.
    pub const PENDING: i32 = 2;
    /// A failed migration waits for `resolve`.
    pub const FAILED: i32 = 3;
    /// History diverged: an applied migration was modified or is missing locally.
    pub const DIVERGED: i32 = 4;
}

/// A migration that started and neither finished nor was rolled back.
#[derive(Debug, Clone, Serialize)]
pub struct FailedMigration {
    pub name: String,
    pub started_at: DateTime<Utc>,
    /// The error Prisma or runway recorded.
    pub logs: Option<String>,
}

/// The folder against the database.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StatusReport {
    /// Whether `_prisma_migrations` exists.
    pub table_exists: bool,
    /// True when the table is missing but the schema holds tables: deploy
    /// will refuse until the history is baselined with `resolve --applied`.
    pub needs_baseline: bool,
    /// Applied and present locally (modified ones included), in folder order.
    pub applied: Vec<String>,
    /// In the folder, not applied (rolled-back ones included), in apply order.
    pub pending: Vec<String>,
    /// Started but neither finished nor rolled back.
    pub failed: Vec<FailedMigration>,
    /// Applied, but the local file's checksum differs from the recorded one.
    pub modified: Vec<String>,
    /// Recorded as applied in the database, not in the folder.
    pub missing_locally: Vec<String>,
}

impl StatusReport {
    /// Whether nothing is pending, failed, modified or missing.
    pub fn is_up_to_date(&self) -> bool {
        self.exit_code() == exit::UP_TO_DATE
    }

    /// See [`exit`]: the most serious condition wins.
    pub fn exit_code(&self) -> i32 {
        if !self.modified.is_empty() || !self.missing_locally.is_empty() {
            exit::DIVERGED
        } else if !self.failed.is_empty() {
            exit::FAILED
        } else if !self.pending.is_empty() {
            exit::PENDING
        } else {
            exit::UP_TO_DATE
        }
    }

    /// Compares a folder with the table's rows.
    pub fn compute(migrations: &[MigrationFile], rows: &[MigrationRow]) -> Self {
        let mut report = StatusReport { table_exists: true, ..Default::default() };
        report.pending = deploy::pending(migrations, rows).into_iter().map(|m| m.name.clone()).collect();
        for m in migrations {
            let applied: Vec<&MigrationRow> =
                rows.iter().filter(|r| r.is_applied() && r.migration_name == m.name).collect();
            if applied.is_empty() {
                continue;
            }
            report.applied.push(m.name.clone());
            if !applied.iter().any(|r| checksum::matches(&m.sql, &r.checksum)) {
                report.modified.push(m.name.clone());
            }
        }
        report.failed = rows
            .iter()
            .filter(|r| r.is_failed())
            .map(|r| FailedMigration {
                name: r.migration_name.clone(),
                started_at: r.started_at,
                logs: r.logs.clone(),
            })
            .collect();
        for row in rows.iter().filter(|r| r.is_applied()) {
            if !migrations.iter().any(|m| m.name == row.migration_name)
                && !report.missing_locally.contains(&row.migration_name)
            {
                report.missing_locally.push(row.migration_name.clone());
            }
        }
        report
    }
}

/// Reads `_prisma_migrations` (without taking the advisory lock, like
/// `prisma migrate status`) and compares it with `migrations`.
pub async fn status(database_url: &str, migrations: &[MigrationFile]) -> Result<StatusReport, MigrateError> {
    let database = connect::parse(database_url)?;
    let mut session = connect::open(&database).await?;
    let result = async {
        if !table::exists(&mut session.conn, &session.schema).await? {
            let tables = table::user_tables(&mut session.conn, &session.schema).await?;
            return Ok(StatusReport {
                table_exists: false,
                needs_baseline: !tables.is_empty(),
                pending: migrations.iter().map(|m| m.name.clone()).collect(),
                ..Default::default()
            });
        }
        let rows = table::load(&mut session.conn, &session.schema).await?;
        Ok(StatusReport::compute(migrations, &rows))
    }
    .await;
    session.close().await;
    result
}
