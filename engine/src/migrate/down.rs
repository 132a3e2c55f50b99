//! `down`: roll back applied migrations with their `down.sql`, the
//! runbook's preferred way back: it keeps every row written since, and
//! takes as long as the DDL, not as long as the database is big.
//!
//! [`undo`] does it safely: the downs are proven first on a schema-only
//! copy of the live database ([`super::prove`], backward), then run on the
//! live database newest first under Prisma's advisory lock, each marked
//! `rolled_back_at` in `_prisma_migrations` as soon as it ran (Prisma then
//! treats it as not applied, so a later deploy applies the fixed
//! migration), and finally the live schema is compared with the schema
//! the downs must give.

use std::path::Path;
use std::time::Instant;

use runway_proto::bundle::MigrationFile;
use serde::{Deserialize, Serialize};

use super::connect::{self, Session};
use super::prove::{self, Direction, DownsReport};
use super::schema::{self, Schema};
use super::table::{self, MigrationRow};
use super::{MigrateConfig, MigrateError, deploy, lock};
use crate::database::Database;
use crate::progress::Progress;

/// Which applied migrations to roll back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The last `n` applied migrations of the folder.
    Count(usize),
    /// Every applied migration after this one (it stays applied).
    To(String),
    /// These migrations, where applied (a rollout's own: what it applied).
    Names(Vec<String>),
}

/// What to roll back, chosen from the folder and `_prisma_migrations`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection<'a> {
    /// Applied migrations whose downs run, newest first.
    pub undo: Vec<&'a MigrationFile>,
    /// Failed migrations of the target (a rollout's migration that failed
    /// in its own transaction): nothing of them is left to undo, their
    /// rows are marked rolled back, as `migrate resolve --rolled-back` does.
    pub failed: Vec<String>,
}

/// What [`undo`] did.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct UndoReport {
    /// The proof made just before, against the live schema.
    pub proof: DownsReport,
    /// Migrations rolled back, in the order their downs ran (newest first).
    pub undone: Vec<String>,
    /// How long each down of `undone` took, in milliseconds.
    pub durations_ms: Vec<u64>,
    /// Failed rows marked rolled back.
    pub resolved_failed: Vec<String>,
    /// Whether the live schema was compared after the downs, and with what.
    pub schema_checked: String,
}

/// The migrations of `migrations` (the folder, in apply order) to roll
/// back for `target`, given the rows of `_prisma_migrations`.
pub fn select<'a>(
    migrations: &'a [MigrationFile],
    rows: &[MigrationRow],
    target: &Target,
) -> Result<Selection<'a>, MigrateError> {
    let applied = deploy::applied_by_name(rows);
    let failed: Vec<&str> =
        rows.iter().filter(|r| r.is_failed()).map(|r| r.migration_name.as_str()).collect();
    let in_folder: Vec<&MigrationFile> =
        migrations.iter().filter(|m| applied.contains_key(m.name.as_str())).collect();
    let mut selection = Selection::default();
    match target {
        Target::Count(n) => {
            if !failed.is_empty() {
                return Err(MigrateError::CannotUndo(format!(
                    "failed migration(s) {} must be resolved first",
                    failed.join(", ")
                )));
            }
            selection.undo = in_folder.iter().rev().take(*n).copied().collect();
        }
        Target::To(name) => {
            let Some(at) = in_folder.iter().position(|m| &m.name == name) else {
                return Err(MigrateError::CannotUndo(format!(
                    "migration {name} is not applied (or not in the folder)"
                )));
            };
            if !failed.is_empty() {
                return Err(MigrateError::CannotUndo(format!(
                    "failed migration(s) {} must be resolved first",
                    failed.join(", ")
                )));
            }
            selection.undo = in_folder[at + 1..].iter().rev().copied().collect();
        }
        Target::Names(names) => {
            selection.undo = in_folder.iter().rev().filter(|m| names.contains(&m.name)).copied().collect();
            selection.failed =
                failed.iter().filter(|f| names.iter().any(|n| n == *f)).map(|f| (*f).to_owned()).collect();
            for name in &selection.failed {
                let file = migrations.iter().find(|m| &m.name == name);
                if !file.is_some_and(|m| deploy::plan_file(m).is_ok_and(|plan| plan.atomic)) {
                    return Err(MigrateError::CannotUndo(format!(
                        "migration {name} failed part-way (it ran in parts or has its own COMMIT): \
                         what it left is unknown, so its down cannot be trusted"
                    )));
                }
            }
        }
    }
    if let Some(m) = selection.undo.iter().find(|m| m.down.is_none()) {
        return Err(MigrateError::CannotUndo(format!("migration {} has no down.sql", m.name)));
    }
    Ok(selection)
}

/// Rolls back `target` on `database_url` by migration: proves the downs on
/// a schema-only copy, runs them, marks them rolled back, and compares the
/// schema with `expected` (the schema before the migrations ran, when the
/// caller kept it) or else with what the downs gave on the copy.
/// Nothing runs on the live database unless every down is proven.
pub async fn undo(
    database_url: &str,
    migrations: &[MigrationFile],
    target: &Target,
    expected: Option<&Schema>,
    pg_dump: &Path,
    config: &MigrateConfig,
    progress: &Progress,
) -> Result<UndoReport, MigrateError> {
    let database = connect::parse(database_url)?;
    progress.emit("lock", "waiting for the migrations advisory lock");
    let mut session = lock::locked(&database, config.advisory_lock_timeout).await?;
    let undo = Undo { database: &database, migrations, pg_dump, config, progress };
    let result = undo.locked(&mut session, target, expected).await;
    if result.is_ok() {
        lock::release(&mut session.conn).await?;
    }
    session.close().await;
    result
}

/// What an undo works with, besides the locked session.
struct Undo<'a> {
    database: &'a Database,
    migrations: &'a [MigrationFile],
    pg_dump: &'a Path,
    config: &'a MigrateConfig,
    progress: &'a Progress,
}

impl Undo<'_> {
    /// The undo once the lock is held: select, prove, check the proof's
    /// result against the schema from before, run, check the live schema.
    async fn locked(
        &self,
        session: &mut Session,
        target: &Target,
        expected: Option<&Schema>,
    ) -> Result<UndoReport, MigrateError> {
        let rows = table::load(&mut session.conn, &session.schema).await?;
        let selection = select(self.migrations, &rows, target)?;
        let proof = self.prove(&selection).await?;
        let (want, checked) = match expected {
            Some(schema) => (Some(schema.clone()), "equal to the schema before the migrations ran"),
            None => self.reference(&rows, &proof, selection.undo.len()).await?,
        };
        // Tried on the copy first: downs that do not give back the schema
        // from before are refused before the live database is touched.
        if let (Some(want), Some(after)) = (&want, &proof.after) {
            let diff = after.diff(want);
            if !diff.is_empty() {
                return Err(MigrateError::CannotUndo(format!(
                    "the downs, run on a schema-only copy, do not give back the schema from before: {}",
                    schema::summary(&diff, 8)
                )));
            }
        }
        let mut report = UndoReport { proof, ..UndoReport::default() };
        deploy::set_timeouts(&mut session.conn, self.config).await?;
        run_downs(session, &selection, &rows, self.progress, &mut report).await?;
        for name in &selection.failed {
            for row in rows.iter().filter(|r| &r.migration_name == name && r.is_failed()) {
                table::mark_rolled_back(&mut session.conn, &session.schema, &row.id).await?;
            }
            report.resolved_failed.push(name.clone());
        }
        if let Some(want) = want {
            let diff = schema::dump(self.database, self.pg_dump).await?.diff(&want);
            if !diff.is_empty() {
                return Err(MigrateError::SchemaDiffers { diff: schema::summary(&diff, 8) });
            }
            report.schema_checked = checked.into();
            self.progress.emit("verify", format!("schema {}", report.schema_checked));
        }
        Ok(report)
    }

    /// The selection's downs proven backward on a schema-only copy; an
    /// error naming each one that is not.
    async fn prove(&self, selection: &Selection<'_>) -> Result<DownsReport, MigrateError> {
        let total = selection.undo.len();
        self.progress.emit("prove", format!("proving {total} down(s) on a schema-only copy of the database"));
        let proof = prove::prove_on(self.database, &selection.undo, Direction::Backward, self.pg_dump).await;
        if !proof.all_proven() {
            let why: Vec<String> = proof
                .downs
                .iter()
                .filter(|d| d.state != prove::DownState::Proven)
                .map(|d| format!("{}: {} ({})", d.migration, d.state.name(), d.detail))
                .collect();
            return Err(MigrateError::CannotUndo(format!("not every down is proven: {}", why.join("; "))));
        }
        self.progress.emit("prove", format!("{total} down(s) proven in {} ms", proof.ms));
        Ok(proof)
    }

    /// Nobody saved the schema from before: the schema the database must
    /// have once its newest `undone` applied migrations are rolled back is
    /// the folder's applied history replayed up to them, when replaying all
    /// of it gives the live schema (the proof's copy of it) exactly. Else
    /// only the proof's result, and the report says so.
    async fn reference(
        &self,
        rows: &[MigrationRow],
        proof: &DownsReport,
        undone: usize,
    ) -> Result<(Option<Schema>, &'static str), MigrateError> {
        let applied = deploy::applied_by_name(rows);
        let history: Vec<&MigrationFile> =
            self.migrations.iter().filter(|m| applied.contains_key(m.name.as_str())).collect();
        let keep = history.len().saturating_sub(undone);
        let replayed = prove::replay(self.database, &history, keep, self.pg_dump).await?;
        match (replayed, &proof.live) {
            (Some((kept, all)), Some(live)) if live.diff(&all).is_empty() => {
                Ok((Some(kept), "equal to the folder's history replayed up to what stays applied"))
            }
            _ => Ok((
                proof.after.clone(),
                "equal to the proof's only: the live schema is not the folder's history replayed, so there is \
                 no exact reference for it",
            )),
        }
    }
}

/// Runs each down of `selection`, newest first, marking its rows rolled
/// back as soon as it ran.
async fn run_downs(
    session: &mut Session,
    selection: &Selection<'_>,
    rows: &[MigrationRow],
    progress: &Progress,
    report: &mut UndoReport,
) -> Result<(), MigrateError> {
    let total = selection.undo.len() as u64;
    for (done, m) in selection.undo.iter().enumerate() {
        let done = done as u64;
        let down = m.down.as_deref().expect("select keeps only migrations with a down");
        progress.emit_counted(
            "down",
            format!("rolling back {} ({}/{total})", m.name, done + 1),
            done,
            total,
            "migrations",
        );
        let started = Instant::now();
        let file = MigrationFile { name: m.name.clone(), sql: down.to_owned(), down: None };
        let plan = deploy::plan_file(&file)?;
        if let Err(failure) = deploy::run_segments(&mut session.conn, down, &plan.segments).await {
            let _ = sqlx::Executor::execute(&mut session.conn, sqlx::raw_sql("ROLLBACK")).await;
            return Err(MigrateError::DownFailed {
                name: m.name.clone(),
                line: failure.line(down),
                error: failure.error_text(),
                database_changed: done > 0 || failure.committed_before > 0 || !plan.atomic,
            });
        }
        for row in rows.iter().filter(|r| r.migration_name == m.name && r.is_applied()) {
            table::mark_rolled_back(&mut session.conn, &session.schema, &row.id).await?;
        }
        let ms = started.elapsed().as_millis() as u64;
        tracing::info!(migration = %m.name, ms, "migration rolled back by its down");
        progress.emit_counted(
            "down",
            format!("rolled back {} ({}/{total}) in {ms} ms", m.name, done + 1),
            done + 1,
            total,
            "migrations",
        );
        report.undone.push(m.name.clone());
        report.durations_ms.push(ms);
    }
    Ok(())
}

/// What rolling back by migration would drop that holds data now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Loss {
    /// The migration whose down drops it.
    pub migration: String,
    pub table: String,
    /// The column, for a dropped column.
    pub column: Option<String>,
    /// Rows of the table, or values (non-NULL) of the column, now.
    pub rows: i64,
}

/// What the downs of `target` would drop, with the rows (or non-NULL
/// values) each object holds now: the data a rollback by migration loses,
/// which the rollout itself created.
pub async fn losses(
    database_url: &str,
    migrations: &[MigrationFile],
    target: &Target,
) -> Result<Vec<Loss>, MigrateError> {
    let database = connect::parse(database_url)?;
    let mut session = connect::open(&database).await?;
    let result = async {
        let rows = table::load(&mut session.conn, &session.schema).await?;
        let selection = select(migrations, &rows, target)?;
        let mut out = Vec::new();
        for m in &selection.undo {
            for dropped in prove::dropped_objects(m.down.as_deref().unwrap_or_default()) {
                let name = dropped.table.split('.').map(connect::quote_ident).collect::<Vec<_>>().join(".");
                let sql = match &dropped.column {
                    Some(column) => format!("SELECT count({}) FROM {name}", connect::quote_ident(column)),
                    None => format!("SELECT count(*) FROM {name}"),
                };
                // An object that is not there (an earlier down drops it, or
                // it never was) loses nothing.
                if let Ok(count) = sqlx::query_scalar::<_, i64>(&sql).fetch_one(&mut session.conn).await {
                    out.push(Loss {
                        migration: m.name.clone(),
                        table: dropped.table,
                        column: dropped.column,
                        rows: count,
                    });
                }
            }
        }
        Ok(out)
    }
    .await;
    session.close().await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, down: bool) -> MigrationFile {
        MigrationFile { name: name.into(), sql: "SELECT 1;".into(), down: down.then(|| "SELECT 2;".into()) }
    }

    fn row(name: &str, finished: bool) -> MigrationRow {
        MigrationRow {
            id: name.into(),
            checksum: String::new(),
            finished_at: finished.then(chrono::Utc::now),
            migration_name: name.into(),
            logs: None,
            rolled_back_at: None,
            started_at: chrono::Utc::now(),
            applied_steps_count: 1,
        }
    }

    #[test]
    fn selects_the_newest_applied_first() {
        let folder = [file("1_a", true), file("2_b", true), file("3_c", true)];
        let rows = [row("1_a", true), row("2_b", true), row("3_c", true)];
        let names = |s: Selection<'_>| s.undo.iter().map(|m| m.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(select(&folder, &rows, &Target::Count(2)).unwrap()), ["3_c", "2_b"]);
        assert_eq!(names(select(&folder, &rows, &Target::To("1_a".into())).unwrap()), ["3_c", "2_b"]);
        let own = Target::Names(vec!["2_b".into(), "3_c".into()]);
        assert_eq!(names(select(&folder, &rows[..2], &own).unwrap()), ["2_b"]);
    }

    #[test]
    fn refuses_what_cannot_be_undone() {
        let folder = [file("1_a", true), file("2_b", false)];
        let rows = [row("1_a", true), row("2_b", true)];
        let err = select(&folder, &rows, &Target::Count(1)).unwrap_err();
        assert!(err.to_string().contains("2_b has no down.sql"), "{err}");
        let err = select(&folder, &rows, &Target::To("9_z".into())).unwrap_err();
        assert!(err.to_string().contains("9_z is not applied"), "{err}");
        let failed = [row("1_a", true), row("2_b", false)];
        let own = select(&folder, &failed, &Target::Names(vec!["2_b".into()])).unwrap();
        assert_eq!(own.failed, ["2_b"], "a failed atomic migration is only marked rolled back");
        assert!(select(&folder, &failed, &Target::Count(1)).is_err());
    }
}
