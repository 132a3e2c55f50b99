//! `_prisma_migrations`: Prisma's bookkeeping table, created and written
//! exactly as `prisma migrate deploy` / `resolve` do (see prisma-engines'
//! `sql_migration_persistence.rs` and the PostgreSQL flavour's DDL).
//!
//! Every write is its own autocommitted statement, so a row survives the
//! failure of the migration it describes.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgConnection;

use super::MigrateError;
use super::connect::quote_ident;

/// Prisma's DDL for PostgreSQL, verbatim.
pub const CREATE_TABLE: &str = "CREATE TABLE _prisma_migrations (
    id                      VARCHAR(36) PRIMARY KEY NOT NULL,
    checksum                VARCHAR(64) NOT NULL,
    finished_at             TIMESTAMPTZ,
    migration_name          VARCHAR(255) NOT NULL,
    logs                    TEXT,
    rolled_back_at          TIMESTAMPTZ,
    started_at              TIMESTAMPTZ NOT NULL DEFAULT now(),
    applied_steps_count     INTEGER NOT NULL DEFAULT 0
);
";

/// `"schema"._prisma_migrations`: bookkeeping is always schema-qualified, so
/// a migration that changes `search_path` cannot redirect it.
fn qualified(schema: &str) -> String {
    format!("{}._prisma_migrations", quote_ident(schema))
}

/// Tables Prisma does not count when deciding whether a schema is empty.
const IGNORED_TABLES: &[&str] = &["spatial_ref_sys", "_prisma_migrations"];

/// One row of `_prisma_migrations`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct MigrationRow {
    pub id: String,
    pub checksum: String,
    pub finished_at: Option<DateTime<Utc>>,
    pub migration_name: String,
    pub logs: Option<String>,
    pub rolled_back_at: Option<DateTime<Utc>>,
    pub started_at: DateTime<Utc>,
    pub applied_steps_count: i32,
}

impl MigrationRow {
    /// Started, never finished, never rolled back: Prisma's "failed".
    pub fn is_failed(&self) -> bool {
        self.finished_at.is_none() && self.rolled_back_at.is_none()
    }

    /// Finished and not rolled back.
    pub fn is_applied(&self) -> bool {
        self.finished_at.is_some() && self.rolled_back_at.is_none()
    }
}

/// Whether `_prisma_migrations` exists in `schema`.
pub async fn exists(conn: &mut PgConnection, schema: &str) -> Result<bool, MigrateError> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE n.nspname = $1 AND c.relname = '_prisma_migrations' AND c.relkind IN ('r', 'p'))",
    )
    .bind(schema)
    .fetch_one(conn)
    .await
    .map_err(|e| MigrateError::db("looking for _prisma_migrations", e))
}

/// Tables in `schema` that make it "not empty" for Prisma.
pub async fn user_tables(conn: &mut PgConnection, schema: &str) -> Result<Vec<String>, MigrateError> {
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE n.nspname = $1 AND c.relkind = 'r' ORDER BY 1",
    )
    .bind(schema)
    .fetch_all(conn)
    .await
    .map_err(|e| MigrateError::db("listing tables", e))?;
    Ok(names.into_iter().filter(|n| !IGNORED_TABLES.contains(&n.as_str())).collect())
}

/// Creates the table with Prisma's DDL.
pub async fn create(conn: &mut PgConnection, schema: &str) -> Result<(), MigrateError> {
    let ddl = CREATE_TABLE.replacen("_prisma_migrations", &qualified(schema), 1);
    sqlx::Executor::execute(&mut *conn, sqlx::raw_sql(&ddl))
        .await
        .map_err(|e| MigrateError::db("creating _prisma_migrations", e))?;
    Ok(())
}

/// All rows, oldest first (as Prisma lists them).
pub async fn load(conn: &mut PgConnection, schema: &str) -> Result<Vec<MigrationRow>, MigrateError> {
    sqlx::query_as(&format!(
        "SELECT id, checksum, finished_at, migration_name, logs, rolled_back_at, started_at, applied_steps_count
           FROM {} ORDER BY started_at ASC",
        qualified(schema)
    ))
    .fetch_all(conn)
    .await
    .map_err(|e| MigrateError::db("reading _prisma_migrations", e))
}

/// `record_migration_started`: a new row with a random id, the checksum and
/// `started_at`; returns the id.
pub async fn insert_started(
    conn: &mut PgConnection,
    schema: &str,
    name: &str,
    checksum: &str,
) -> Result<String, MigrateError> {
    let id = uuid::Uuid::new_v4().to_string();
    sqlx::query(&format!(
        "INSERT INTO {} (id, checksum, started_at, migration_name) VALUES ($1, $2, $3, $4)",
        qualified(schema)
    ))
    .bind(&id)
    .bind(checksum)
    .bind(Utc::now())
    .bind(name)
    .execute(conn)
    .await
    .map_err(|e| MigrateError::db(format!("recording the start of migration {name}"), e))?;
    Ok(id)
}

/// `record_successful_step` + `record_migration_finished` in one statement:
/// `applied_steps_count + 1` and `finished_at`.
pub async fn mark_finished(
    conn: &mut PgConnection,
    schema: &str,
    id: &str,
    name: &str,
) -> Result<(), MigrateError> {
    sqlx::query(&format!(
        "UPDATE {} SET applied_steps_count = applied_steps_count + 1, finished_at = $2 WHERE id = $1",
        qualified(schema)
    ))
    .bind(id)
    .bind(Utc::now())
    .execute(conn)
    .await
    .map_err(|e| MigrateError::db(format!("recording migration {name} as finished (it was applied)"), e))?;
    Ok(())
}

/// `record_failed_step`: the error goes into `logs`; `finished_at` stays null.
pub async fn mark_failed(
    conn: &mut PgConnection,
    schema: &str,
    id: &str,
    logs: &str,
) -> Result<(), MigrateError> {
    sqlx::query(&format!("UPDATE {} SET logs = $2 WHERE id = $1", qualified(schema)))
        .bind(id)
        .bind(logs)
        .execute(conn)
        .await
        .map_err(|e| MigrateError::db("recording a failed migration", e))?;
    Ok(())
}

/// `mark_migration_rolled_back_by_id`.
pub async fn mark_rolled_back(conn: &mut PgConnection, schema: &str, id: &str) -> Result<(), MigrateError> {
    sqlx::query(&format!("UPDATE {} SET rolled_back_at = $2 WHERE id = $1", qualified(schema)))
        .bind(id)
        .bind(Utc::now())
        .execute(conn)
        .await
        .map_err(|e| MigrateError::db("marking a migration rolled back", e))?;
    Ok(())
}

/// `mark_migration_applied`: a row with empty logs, `started_at` =
/// `finished_at` = now and `applied_steps_count` left at 0.
pub async fn insert_applied(
    conn: &mut PgConnection,
    schema: &str,
    name: &str,
    checksum: &str,
) -> Result<String, MigrateError> {
    let id = uuid::Uuid::new_v4().to_string();
    let now = Utc::now();
    sqlx::query(&format!(
        "INSERT INTO {} (id, checksum, logs, started_at, finished_at, migration_name)
         VALUES ($1, $2, '', $3, $3, $4)",
        qualified(schema)
    ))
    .bind(&id)
    .bind(checksum)
    .bind(now)
    .bind(name)
    .execute(conn)
    .await
    .map_err(|e| MigrateError::db(format!("marking migration {name} applied"), e))?;
    Ok(id)
}
