//! `status`: how a migrations folder compares with `_prisma_migrations`.

use chrono::{DateTime, Utc};
use runway_proto::bundle::MigrationFile;
use serde::Serialize;

use super::connect;
use super::table::{self, MigrationRow};
use super::{MigrateError, checksum, deploy};

/// What a [`StatusReport`] means for the next deploy, the most serious
/// condition first. Callers decide what to make of it (the CLI maps it to
/// its exit code).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Everything in the folder is applied; nothing failed or diverged.
    UpToDate,
    /// Some migrations are pending; nothing is wrong otherwise.
    Pending,
    /// A failed migration waits for `resolve`; deploy refuses until then.
    Failed,
    /// History diverged: an applied migration was modified or is missing locally.
    Diverged,
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
    /// In the folder with a `down.sql` beside `migration.sql`, in folder
    /// order: the migrations `runway migrate down` may roll back.
    pub has_down: Vec<String>,
}

impl StatusReport {
    /// Whether nothing is pending, failed, modified or missing.
    pub fn is_up_to_date(&self) -> bool {
        self.verdict() == Verdict::UpToDate
    }

    /// See [`Verdict`]: the most serious condition wins.
    pub fn verdict(&self) -> Verdict {
        if !self.modified.is_empty() || !self.missing_locally.is_empty() {
            Verdict::Diverged
        } else if !self.failed.is_empty() {
            Verdict::Failed
        } else if !self.pending.is_empty() {
            Verdict::Pending
        } else {
            Verdict::UpToDate
        }
    }

    /// Compares a folder with the table's rows.
    pub fn compute(migrations: &[MigrationFile], rows: &[MigrationRow]) -> Self {
        let mut report =
            StatusReport { table_exists: true, has_down: with_down(migrations), ..Default::default() };
        report.pending = deploy::pending(migrations, rows).into_iter().map(|m| m.name.clone()).collect();
        let applied_rows = deploy::applied_by_name(rows);
        for m in migrations {
            let Some(applied) = applied_rows.get(m.name.as_str()) else {
                continue;
            };
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
        let local: std::collections::HashSet<&str> = migrations.iter().map(|m| m.name.as_str()).collect();
        let mut missing = std::collections::HashSet::new();
        for row in rows.iter().filter(|r| r.is_applied()) {
            let name = row.migration_name.as_str();
            if !local.contains(name) && missing.insert(name) {
                report.missing_locally.push(row.migration_name.clone());
            }
        }
        report
    }
}

/// The names of the migrations that have a `down.sql`.
fn with_down(migrations: &[MigrationFile]) -> Vec<String> {
    migrations.iter().filter(|m| m.down.is_some()).map(|m| m.name.clone()).collect()
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
                has_down: with_down(migrations),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, down: Option<&str>) -> MigrationFile {
        MigrationFile { name: name.into(), sql: "SELECT 1;".into(), down: down.map(str::to_owned) }
    }

    #[test]
    fn lists_the_migrations_that_have_a_down_in_folder_order() {
        let folder = [file("1_a", Some("SELECT 2;")), file("2_b", None), file("3_c", Some(""))];
        let report = StatusReport::compute(&folder, &[]);
        assert_eq!(report.has_down, ["1_a", "3_c"]);
        assert_eq!(report.pending, ["1_a", "2_b", "3_c"]);
    }
}
