//! The database side of a backup: one `REPEATABLE READ` transaction exports
//! the snapshot pg_dump uses (`pg_dump --snapshot`), and the row counts and
//! applied migrations are read in that same snapshot, so the manifest
//! describes exactly what the dump holds.

use sqlx::{Connection, PgConnection, Row};

use super::error::{BackupError, TableDiff};
use super::manifest::{AppliedMigration, TableRows};
use crate::database::Database;

/// Tables whose data pg_dump dumps: ordinary tables (partitions count as
/// their own tables, partitioned parents are skipped so no row counts twice),
/// not temporary, outside system schemas, not owned by an extension.
const TABLES_SQL: &str = "
SELECT n.nspname AS schema, c.relname AS table,
       format('SELECT count(*) FROM %I.%I', n.nspname, c.relname) AS count_sql
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND c.relpersistence <> 't'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp\\_%'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d
                  WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY 1, 2";

/// An open connection inside a transaction whose snapshot is exported.
pub struct SnapshotSession {
    conn: PgConnection,
    database: String,
    /// Passed to `pg_dump --snapshot`.
    pub snapshot_id: String,
}

/// Facts about a database read before a backup starts.
#[derive(Debug, Clone)]
pub struct DatabaseFacts {
    pub database_bytes: u64,
    pub server_version: String,
}

/// Connects to `conn`'s database; errors name it.
pub async fn connect(conn: &Database) -> Result<PgConnection, BackupError> {
    let database = conn.name();
    PgConnection::connect_with(conn.options()).await.map_err(|e| BackupError::db(database, "connecting", e))
}

/// The largest table's share of all table data (table and TOAST bytes,
/// indexes left out: pg_dump writes rows, not indexes) in the connected
/// database; `None` when it holds no table data.
pub async fn largest_table_share(db: &mut PgConnection, database: &str) -> Result<Option<f64>, BackupError> {
    let row = sqlx::query(
        "SELECT coalesce(max(pg_table_size(c.oid)), 0)::int8 AS largest,
                coalesce(sum(pg_table_size(c.oid)), 0)::int8 AS total
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relkind IN ('r', 'm') AND c.relpersistence <> 't'
           AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_toast%'",
    )
    .fetch_one(&mut *db)
    .await
    .map_err(|e| BackupError::db(database, "reading table sizes", e))?;
    let (largest, total): (i64, i64) = (row.get("largest"), row.get("total"));
    Ok((total > 0).then(|| largest as f64 / total as f64))
}

/// `pg_database_size` and `server_version` of the connected database.
pub async fn facts(db: &mut PgConnection, database: &str) -> Result<DatabaseFacts, BackupError> {
    let row = sqlx::query(
        "SELECT pg_database_size(current_database())::int8 AS size, current_setting('server_version') AS version",
    )
    .fetch_one(&mut *db)
    .await
    .map_err(|e| BackupError::db(database, "reading database size and server version", e))?;
    Ok(DatabaseFacts {
        database_bytes: row.get::<i64, _>("size").max(0) as u64,
        server_version: row.get("version"),
    })
}

impl SnapshotSession {
    /// Opens the transaction and exports its snapshot.
    pub async fn open(mut conn: PgConnection, database: &str) -> Result<Self, BackupError> {
        sqlx::query("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut conn)
            .await
            .map_err(|e| BackupError::db(database, "starting the snapshot transaction", e))?;
        let snapshot_id: String = sqlx::query_scalar("SELECT pg_export_snapshot()")
            .fetch_one(&mut conn)
            .await
            .map_err(|e| BackupError::db(database, "exporting a snapshot", e))?;
        Ok(Self { conn, database: database.to_owned(), snapshot_id })
    }

    /// The tables whose rows the manifest lists (catalog only; no rows read).
    pub async fn list_tables(&mut self) -> Result<Vec<(String, String)>, BackupError> {
        let tables = sqlx::query(TABLES_SQL)
            .fetch_all(&mut self.conn)
            .await
            .map_err(|e| BackupError::db(&self.database, "listing tables", e))?;
        Ok(tables.into_iter().map(|t| (t.get("schema"), t.get("table"))).collect())
    }

    /// Row counts of `tables` in the snapshot (those the dump could not
    /// be counted for).
    pub async fn count(&mut self, tables: &[(String, String)]) -> Result<Vec<TableRows>, BackupError> {
        let mut counts = Vec::with_capacity(tables.len());
        for (schema, table) in tables {
            let sql = format!(
                "SELECT count(*) FROM {}.{}",
                super::pgrestore::ident(schema),
                super::pgrestore::ident(table)
            );
            let rows: i64 = sqlx::query_scalar(&sql).fetch_one(&mut self.conn).await.map_err(|e| {
                BackupError::db(&self.database, format!("counting rows of {schema}.{table}"), e)
            })?;
            counts.push(TableRows { schema: schema.clone(), table: table.clone(), rows });
        }
        Ok(counts)
    }

    /// Migrations applied in the snapshot (see [`applied_migrations`]).
    pub async fn applied_migrations(
        &mut self,
        schema: Option<&str>,
    ) -> Result<Vec<AppliedMigration>, BackupError> {
        applied_migrations(&mut self.conn, &self.database, schema).await
    }

    /// Ends the transaction (after pg_dump has finished with the snapshot).
    pub async fn close(mut self) {
        let _ = sqlx::query("COMMIT").execute(&mut self.conn).await;
        let _ = self.conn.close().await;
    }
}

/// Counts the rows of every table of the connected database.
pub async fn count_tables(db: &mut PgConnection, database: &str) -> Result<Vec<TableRows>, BackupError> {
    let tables = sqlx::query(TABLES_SQL)
        .fetch_all(&mut *db)
        .await
        .map_err(|e| BackupError::db(database, "listing tables", e))?;
    let mut counts = Vec::with_capacity(tables.len());
    for t in tables {
        let (schema, table): (String, String) = (t.get("schema"), t.get("table"));
        let rows: i64 = sqlx::query_scalar(t.get::<&str, _>("count_sql"))
            .fetch_one(&mut *db)
            .await
            .map_err(|e| BackupError::db(database, format!("counting rows of {schema}.{table}"), e))?;
        counts.push(TableRows { schema, table, rows });
    }
    Ok(counts)
}

/// Rows inserted into every table of a database nothing but one finished
/// restore has written to (a scratch database): the server's own count of
/// the rows COPY loaded, so no second scan of them. `None` where that count
/// is not exact: before PostgreSQL 15 (statistics went over UDP and could be
/// lost) or with `track_counts` off; the caller then counts with `count(*)`.
/// Waits until the restore's sessions have ended, which flushes their
/// counts.
pub async fn restored_counts(
    db: &mut PgConnection,
    database: &str,
) -> Result<Option<Vec<TableRows>>, BackupError> {
    let (version, track): (i32, String) =
        sqlx::query_as("SELECT current_setting('server_version_num')::int, current_setting('track_counts')")
            .fetch_one(&mut *db)
            .await
            .map_err(|e| BackupError::db(database, "reading server settings", e))?;
    if version < 150000 || track != "on" {
        return Ok(None);
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let others: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        .fetch_one(&mut *db)
        .await
        .map_err(|e| BackupError::db(database, "waiting for the restore's sessions to end", e))?;
        if others == 0 {
            break;
        }
        if std::time::Instant::now() > deadline {
            return Ok(None);
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // A fresh snapshot of the statistics, after the sessions flushed theirs.
    let sql = format!(
        "SELECT schema, \"table\", pg_stat_get_tuples_inserted(oid) AS rows FROM ({}) t",
        TABLES_SQL.replace(
            "SELECT n.nspname AS schema, c.relname AS table,",
            "SELECT c.oid, n.nspname AS schema, c.relname AS table,"
        )
    );
    sqlx::Executor::execute(&mut *db, "SELECT pg_stat_clear_snapshot()")
        .await
        .map_err(|e| BackupError::db(database, "reading statistics", e))?;
    let rows = sqlx::query(&sql)
        .fetch_all(&mut *db)
        .await
        .map_err(|e| BackupError::db(database, "reading rows inserted", e))?;
    Ok(Some(
        rows.into_iter()
            .map(|r| TableRows { schema: r.get("schema"), table: r.get("table"), rows: r.get("rows") })
            .collect(),
    ))
}

/// Tables whose counts differ between the manifest and a database. Tables the
/// database has beyond the manifest count as differences too (expected: none).
pub fn compare_counts(expected: &[TableRows], actual: &[TableRows]) -> Vec<TableDiff> {
    let mut diffs = Vec::new();
    for e in expected {
        let found = actual.iter().find(|a| a.schema == e.schema && a.table == e.table).map(|a| a.rows);
        if found != Some(e.rows) {
            diffs.push(TableDiff { table: e.qualified(), expected: Some(e.rows), actual: found });
        }
    }
    for a in actual {
        if !expected.iter().any(|e| e.schema == a.schema && e.table == a.table) {
            diffs.push(TableDiff { table: a.qualified(), expected: None, actual: Some(a.rows) });
        }
    }
    diffs
}

/// Migrations applied in `database` (finished, not rolled back), if it has a
/// `_prisma_migrations` table (in `schema`, or on the search path).
pub async fn applied_migrations(
    conn: &mut PgConnection,
    database: &str,
    schema: Option<&str>,
) -> Result<Vec<AppliedMigration>, BackupError> {
    let table: Option<String> = sqlx::query_scalar(
        "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE c.oid = to_regclass(CASE WHEN $1::text IS NULL THEN '_prisma_migrations'
                                        ELSE format('%I._prisma_migrations', $1::text) END)",
    )
    .bind(schema)
    .fetch_optional(&mut *conn)
    .await
    .map_err(|e| BackupError::db( database, "looking for _prisma_migrations", e))?;
    let Some(table) = table else { return Ok(Vec::new()) };
    let rows = sqlx::query(&format!(
        "SELECT migration_name, checksum, finished_at FROM {table}
         WHERE finished_at IS NOT NULL AND rolled_back_at IS NULL
         ORDER BY finished_at, migration_name"
    ))
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| BackupError::db(database, format!("reading {table}"), e))?;
    Ok(rows
        .into_iter()
        .map(|r| AppliedMigration {
            name: r.get("migration_name"),
            checksum: r.get("checksum"),
            finished_at: r.get("finished_at"),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(table: &str, rows: i64) -> TableRows {
        TableRows { schema: "public".into(), table: table.into(), rows }
    }

    #[test]
    fn compare_names_every_difference() {
        let diffs = compare_counts(&[t("a", 1), t("b", 2), t("c", 3)], &[t("a", 1), t("b", 5), t("d", 0)]);
        let names: Vec<_> = diffs.iter().map(|d| d.to_string()).collect();
        assert_eq!(
            names,
            [
                "public.b (manifest 2, found 5)",
                "public.c (manifest 3, found missing)",
                "public.d (manifest missing, found 0)"
            ]
        );
    }
}
