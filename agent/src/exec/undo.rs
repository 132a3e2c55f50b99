//! Rolling a rollout back by migration on this DB host.
//!
//! Before a rollout's migrate step changes a database, the agent saves
//! what it is about to do next to its journal: the migrations pending then
//! and the schema (`pg_dump --schema-only`). The rollout's `migrate_down`
//! reads it back: it rolls back exactly those of them that are applied
//! now (or failed inside their own transaction), with the bundle's downs,
//! and requires the schema to equal the saved one afterwards. The file is
//! written once per rollout and database, so a second migrate attempt or
//! a re-sent command never overwrites the schema from before the first.

use std::path::{Path, PathBuf};

use runway_engine::migrate::{self, down, schema};
use runway_engine::progress::Progress;
use serde::{Deserialize, Serialize};

use super::ExecError;

/// What a rollout's migrate step found before it changed the database.
#[derive(Debug, Serialize, Deserialize)]
pub struct BeforeMigrate {
    /// The migrations pending when the step began, in apply order.
    pub pending: Vec<String>,
    /// The normalised schema-only dump from before.
    pub schema: String,
}

/// One rollout's database on this host: where its saved state lives and
/// how to reach it.
pub struct RolloutDatabase<'a> {
    /// The agent's state dir (beside the journal).
    pub state_dir: &'a Path,
    pub rollout_id: &'a str,
    /// The database's name in the agent config.
    pub database: &'a str,
    pub url: &'a str,
    /// The `pg_dump` to compare schemas with.
    pub pg_dump: &'a Path,
}

impl RolloutDatabase<'_> {
    /// `<state_dir>/rollouts/<rollout>/<database>.json`.
    fn path(&self) -> PathBuf {
        let safe = |s: &str| s.replace(['/', '\\'], "_");
        self.state_dir
            .join("rollouts")
            .join(safe(self.rollout_id))
            .join(format!("{}.json", safe(self.database)))
    }
}

/// Saves the state before `rollout_id` migrates `database` (at `url`),
/// unless an earlier attempt saved it already.
pub async fn save_before(
    at: &RolloutDatabase<'_>,
    migrations: &[runway_proto::bundle::MigrationFile],
    progress: &Progress,
) -> Result<(), ExecError> {
    let file = at.path();
    if at.rollout_id.is_empty() || file.exists() {
        return Ok(());
    }
    let status = migrate::status(at.url, migrations).await?;
    let database_info = runway_engine::database::Database::parse(at.url)
        .map_err(|e| ExecError::Preflight(format!("invalid database URL: {e}")))?;
    let schema = schema::dump(&database_info, at.pg_dump).await?;
    let before = BeforeMigrate { pending: status.pending, schema: schema.text().to_owned() };
    let text = serde_json::to_vec(&before).expect("the state serializes");
    let io = |e: std::io::Error| {
        ExecError::Preflight(format!("cannot save the schema before migrating in {}: {e}", file.display()))
    };
    let dir = file.parent().expect("the path has a folder");
    tokio::fs::create_dir_all(dir).await.map_err(io)?;
    let tmp = file.with_extension("json.partial");
    tokio::fs::write(&tmp, text).await.map_err(io)?;
    tokio::fs::rename(&tmp, &file).await.map_err(io)?;
    progress.emit("schema", format!("saved the schema before migrating ({} pending)", before.pending.len()));
    Ok(())
}

/// The saved state before the rollout migrated the database.
async fn load_before(at: &RolloutDatabase<'_>) -> Result<BeforeMigrate, ExecError> {
    let file = at.path();
    let text = tokio::fs::read(&file).await.map_err(|e| {
        ExecError::Migrate(migrate::MigrateError::CannotUndo(format!(
            "this agent has no record of what rollout {} applied to {} ({}: {e})",
            at.rollout_id,
            at.database,
            file.display()
        )))
    })?;
    serde_json::from_slice(&text).map_err(|e| {
        ExecError::Migrate(migrate::MigrateError::CannotUndo(format!("{} is damaged: {e}", file.display())))
    })
}

/// What rolling back `rollout_id` on `database` would lose each way, as
/// lines for a person: by migration, what the downs drop with its rows
/// now; by restore (when the rollout took `backup`), per table, rows now
/// against the backup's. Reads only.
pub async fn preview(
    at: &RolloutDatabase<'_>,
    migrations: &[runway_proto::bundle::MigrationFile],
    backup: Option<&runway_engine::backup::Manifest>,
) -> serde_json::Value {
    let mut errors = Vec::new();
    let mut by_migration = Vec::new();
    match load_before(at).await {
        Ok(before) => match down::losses(at.url, migrations, &down::Target::Names(before.pending)).await {
            Ok(losses) => by_migration.extend(losses.iter().map(|l| match &l.column {
                Some(column) => format!(
                    "column {}.{column} with {} value(s) (dropped by the down of {})",
                    l.table, l.rows, l.migration
                ),
                None => format!(
                    "table {} with {} row(s) (dropped by the down of {})",
                    l.table, l.rows, l.migration
                ),
            })),
            Err(e) => errors.push(format!("by migration: {e}")),
        },
        Err(e) => errors.push(format!("by migration: {e}")),
    }
    let mut by_restore = Vec::new();
    match backup {
        None => errors.push("by restore: the rollout took no backup of this database".into()),
        Some(manifest) => match runway_engine::backup::loss::restore_loss(manifest, at.url).await {
            // Prisma's bookkeeping goes back with the schema; say what users lose.
            Ok(diffs) => by_restore
                .extend(diffs.iter().filter(|d| !d.table.ends_with("._prisma_migrations")).map(restore_line)),
            Err(e) => errors.push(format!("by restore: {e}")),
        },
    }
    serde_json::json!({ "by_migration": by_migration, "by_restore": by_restore, "errors": errors })
}

/// `public.User: 1 row more than in the backup (3 now, 2 then)`.
fn restore_line(d: &runway_engine::backup::TableDiff) -> String {
    match (d.expected, d.actual) {
        (Some(then), Some(now)) if now > then => {
            format!(
                "{}: {} row(s) more than in the backup ({now} now, {then} then) would be lost",
                d.table,
                now - then
            )
        }
        (Some(then), Some(now)) => {
            format!(
                "{}: {} row(s) fewer than in the backup ({now} now, {then} then) would come back",
                d.table,
                then - now
            )
        }
        (None, Some(now)) => format!("{}: created since the backup, dropped with its {now} row(s)", d.table),
        (Some(then), None) => {
            format!("{}: gone since the backup, would come back with {then} row(s)", d.table)
        }
        (None, None) => d.table.clone(),
    }
}

/// Rolls back by migration what `rollout_id` applied to `database`.
pub async fn undo(
    at: &RolloutDatabase<'_>,
    migrations: &[runway_proto::bundle::MigrationFile],
    config: &migrate::MigrateConfig,
    progress: &Progress,
) -> Result<down::UndoReport, ExecError> {
    let before = load_before(at).await?;
    let expected = schema::Schema::from_dump(&before.schema);
    let target = down::Target::Names(before.pending);
    Ok(down::undo(at.url, migrations, &target, Some(&expected), at.pg_dump, config, progress).await?)
}
