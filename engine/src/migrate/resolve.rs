//! `resolve`: Prisma's `migrate resolve --applied NAME` / `--rolled-back NAME`.

use runway_proto::bundle::MigrationFile;
use serde::{Deserialize, Serialize};

use super::connect;
use super::{MigrateConfig, MigrateError, checksum, lock, table};

/// What to record about a migration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResolveAction {
    /// The migration's changes are in the database (applied by hand, or a
    /// baseline): mark failed attempts rolled back and add a finished row.
    Applied(String),
    /// A failed migration was undone by hand: set `rolled_back_at` on its
    /// failed rows so that deploy runs it again.
    RolledBack(String),
}

/// What `resolve` changed.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ResolveReport {
    /// Ids of rows marked rolled back.
    pub rolled_back_ids: Vec<String>,
    /// Id of the row added by `--applied`.
    pub applied_id: Option<String>,
}

/// Records `action` in `_prisma_migrations`, holding Prisma's advisory lock.
pub async fn resolve(
    database_url: &str,
    migrations: &[MigrationFile],
    action: &ResolveAction,
    config: &MigrateConfig,
) -> Result<ResolveReport, MigrateError> {
    let database = connect::parse(database_url)?;
    let mut session = lock::locked(&database, config.advisory_lock_timeout).await?;
    let conn = &mut session.conn;
    let result = async {
        let mut report = ResolveReport::default();
        match action {
            ResolveAction::Applied(name) => {
                let migration = migrations
                    .iter()
                    .find(|m| &m.name == name)
                    .ok_or_else(|| MigrateError::NotFound { name: name.clone() })?;
                // Prisma's baseline: create the table without the emptiness check.
                if !table::exists(conn, &session.schema).await? {
                    table::create(conn, &session.schema).await?;
                }
                let rows: Vec<_> = table::load(conn, &session.schema)
                    .await?
                    .into_iter()
                    .filter(|r| &r.migration_name == name)
                    .collect();
                if rows.iter().any(|r| r.finished_at.is_some()) {
                    return Err(MigrateError::AlreadyApplied { name: name.clone() });
                }
                for row in rows.iter().filter(|r| r.is_failed()) {
                    table::mark_rolled_back(conn, &session.schema, &row.id).await?;
                    report.rolled_back_ids.push(row.id.clone());
                }
                report.applied_id = Some(
                    table::insert_applied(conn, &session.schema, name, &checksum::checksum(&migration.sql))
                        .await?,
                );
            }
            ResolveAction::RolledBack(name) => {
                let never = MigrateError::NotFailed {
                    name: name.clone(),
                    reason: "it was never applied to the database",
                };
                if !table::exists(conn, &session.schema).await? {
                    return Err(never);
                }
                let rows: Vec<_> = table::load(conn, &session.schema)
                    .await?
                    .into_iter()
                    .filter(|r| &r.migration_name == name)
                    .collect();
                if rows.is_empty() {
                    return Err(never);
                }
                let failed: Vec<_> = rows.iter().filter(|r| r.is_failed()).collect();
                if failed.is_empty() {
                    return Err(MigrateError::NotFailed {
                        name: name.clone(),
                        reason: "it is not in a failed state",
                    });
                }
                for row in failed {
                    table::mark_rolled_back(conn, &session.schema, &row.id).await?;
                    report.rolled_back_ids.push(row.id.clone());
                }
            }
        }
        Ok(report)
    }
    .await;
    session.close().await;
    result
}
