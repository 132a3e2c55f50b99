//! Running `pg_restore` into a database with per-table progress, and the
//! database-level moves around it (scratch databases, swapping a restored
//! copy into place).

use std::path::Path;
use std::process::Stdio;

use sqlx::PgConnection;
use tokio::io::{AsyncBufReadExt, BufReader};

use super::config::{BackupConfig, DumpFormat};
use super::error::BackupError;
use super::manifest::Manifest;
use super::{scratch, snapshot, tools};
use crate::database::Database;
use crate::progress::Progress;

/// How `pg_restore` writes into the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestoreInto {
    /// An empty database: parallel jobs allowed.
    Empty { jobs: u32 },
    /// An existing database: `--clean --if-exists` in one transaction, so a
    /// failure leaves it as it was.
    CleanInOneTransaction,
}

/// Restores the dump of `manifest` from `backup_dir` into `target`.
pub async fn pg_restore(
    config: &BackupConfig,
    backup_dir: &Path,
    manifest: &Manifest,
    target: &Database,
    into: RestoreInto,
    progress: &Progress,
) -> Result<(), BackupError> {
    let mut cmd = tools::command(config, "pg_restore", Some(target));
    cmd.args(["--verbose", "--exit-on-error", "--no-password"]);
    cmd.arg(format!("--dbname={}", target.name()));
    match into {
        RestoreInto::Empty { jobs } if manifest.format == DumpFormat::Directory && jobs > 1 => {
            cmd.arg(format!("--jobs={jobs}"));
        }
        RestoreInto::Empty { .. } => {}
        RestoreInto::CleanInOneTransaction => {
            cmd.args(["--clean", "--if-exists", "--single-transaction"]);
        }
    }
    cmd.arg(manifest.dump_path(backup_dir)).stdout(Stdio::null());
    let child = tools::spawn(config, "pg_restore", &mut cmd)?;
    let hint = match into {
        RestoreInto::CleanInOneTransaction => "; it ran in one transaction, so the database is as it was",
        RestoreInto::Empty { .. } => "",
    };
    wait(child, target, manifest.tables.len() as u64, progress, hint).await
}

/// Which parts of the archive a streamed test restore runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sections {
    /// Schema only: tables, types, functions (no indexes or constraints).
    PreData,
    /// Rows only (and sequence values, large objects).
    Data,
    /// Indexes, constraints and triggers only.
    PostData,
}

/// Starts pg_restore into the empty database `target`, reading the archive
/// from its stdin (a test restore fed while pg_dump writes); returns the
/// child and its stdin.
pub fn spawn_from_stdin(
    config: &BackupConfig,
    target: &Database,
    sections: Sections,
) -> Result<(tokio::process::Child, std::fs::File), BackupError> {
    let mut cmd = tools::command(config, "pg_restore", Some(target));
    cmd.args(["--verbose", "--exit-on-error", "--no-password"]);
    cmd.arg(format!("--dbname={}", target.name()));
    section_args(&mut cmd, sections);
    cmd.stdin(Stdio::piped()).stdout(Stdio::null());
    let mut child = tools::spawn(config, "pg_restore", &mut cmd)?;
    let stdin = child.stdin.take().expect("stdin is piped");
    let stdin = stdin.into_owned_fd().map_err(|e| BackupError::Internal(format!("pg_restore stdin: {e}")))?;
    Ok((child, std::fs::File::from(stdin)))
}

/// Runs pg_restore's post-data section (indexes, constraints, triggers) of
/// the archive `dump` into `target`, with `jobs` parallel jobs.
pub async fn post_data(
    config: &BackupConfig,
    dump: &Path,
    target: &Database,
    jobs: u32,
    progress: &Progress,
) -> Result<(), BackupError> {
    let mut cmd = tools::command(config, "pg_restore", Some(target));
    cmd.args(["--verbose", "--exit-on-error", "--no-password"]);
    cmd.arg(format!("--dbname={}", target.name()));
    section_args(&mut cmd, Sections::PostData);
    if jobs > 1 {
        cmd.arg(format!("--jobs={jobs}"));
    }
    cmd.arg(dump).stdout(Stdio::null());
    let child = tools::spawn(config, "pg_restore", &mut cmd)?;
    wait(child, target, 0, progress, "").await
}

fn section_args(cmd: &mut tokio::process::Command, sections: Sections) {
    match sections {
        Sections::PreData => {
            cmd.arg("--section=pre-data");
        }
        Sections::Data => {
            cmd.arg("--section=data");
        }
        Sections::PostData => {
            cmd.arg("--section=post-data");
        }
    }
}

/// Follows a running pg_restore to its end: `--verbose` prints one line per
/// item; table data lines become progress (of `total` tables), the other
/// lines (errors, warnings) are kept for the error message.
pub async fn wait(
    mut child: tokio::process::Child,
    target: &Database,
    total: u64,
    progress: &Progress,
    hint: &'static str,
) -> Result<(), BackupError> {
    let stderr = child.stderr.take().expect("stderr is piped");
    let mut lines = BufReader::new(stderr).lines();
    let mut kept: Vec<String> = Vec::new();
    let mut tables_done = 0;
    let mut last = std::time::Instant::now();
    while let Ok(Some(line)) = lines.next_line().await {
        if line.contains("processing data for table") {
            tables_done += 1;
            if last.elapsed().as_secs() >= 1 || tables_done == total {
                last = std::time::Instant::now();
                progress.emit_counted(
                    "restore",
                    format!("{tables_done} of {total} tables restored"),
                    tables_done,
                    total,
                    "tables",
                );
            }
        } else if !line.starts_with("pg_restore: creating")
            && !line.starts_with("pg_restore: processing")
            && !line.starts_with("pg_restore: dropping")
            && !line.starts_with("pg_restore: connecting")
            && !line.starts_with("pg_restore: executing")
            && !line.starts_with("pg_restore: launching")
            && !line.starts_with("pg_restore: finished")
        {
            kept.push(line);
            if kept.len() > 40 {
                kept.remove(0);
            }
        }
    }
    let status =
        child.wait().await.map_err(|e| BackupError::Internal(format!("waiting for pg_restore: {e}")))?;
    tools::check_status(
        &format!("pg_restore into {}", target.name()),
        status,
        &kept.join("\n"),
        Some(target),
        hint,
    )
}

/// Makes every ordinary table of the scratch database `target` unlogged
/// before its rows arrive: a copy that is dropped afterwards needs no WAL.
/// Best effort per table (a table this user does not own stays logged).
pub async fn unlogged(target: &Database, name: &str) -> Result<(), BackupError> {
    let mut db = snapshot::connect(target).await?;
    let statements: Vec<String> = sqlx::query_scalar(
        "SELECT format('ALTER TABLE %I.%I SET UNLOGGED', n.nspname, c.relname)
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relkind = 'r' AND c.relpersistence = 'p'
           AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_toast%'",
    )
    .fetch_all(&mut db)
    .await
    .map_err(|e| BackupError::db(name, "listing the scratch tables", e))?;
    for statement in statements {
        let _ = sqlx::Executor::execute(&mut db, sqlx::raw_sql(&statement)).await;
    }
    Ok(())
}

/// Quotes an identifier for SQL.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The maintenance database (`postgres`) of `target`'s server: where a
/// restore creates, renames and drops databases.
pub fn maintenance(target: &Database) -> Database {
    target.with_database("postgres")
}

/// `CREATE DATABASE name TEMPLATE template0`.
pub async fn create_database(admin: &mut PgConnection, name: &str) -> Result<(), BackupError> {
    sqlx::Executor::execute(
        &mut *admin,
        sqlx::raw_sql(&format!("CREATE DATABASE {} TEMPLATE template0", ident(name))),
    )
    .await
    .map_err(|e| BackupError::db(name, "creating the database", e))?;
    Ok(())
}

/// `DROP DATABASE IF EXISTS name WITH (FORCE)`.
pub async fn drop_database(admin: &mut PgConnection, name: &str) -> Result<(), BackupError> {
    sqlx::Executor::execute(
        &mut *admin,
        sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", ident(name))),
    )
    .await
    .map_err(|e| BackupError::db(name, "dropping the database", e))?;
    Ok(())
}

/// Why [`swap_in`] failed, and so what the caller must do with the copy.
#[derive(Debug)]
pub enum SwapFailed {
    /// The target is as it was, under its name; the restored copy is still
    /// there under its own: drop it.
    Untouched(BackupError),
    /// The target was renamed away and neither the copy nor the original
    /// could be renamed to its name: both are kept for the operator.
    Stranded(BackupError),
}

/// Swaps the restored copy `restored` in as `target`, on a connection
/// opened now from `admin` (the restore before it may have taken hours):
/// the copy takes over the target's comment (from here on it is the user's
/// database, never a sweep's), the target's sessions end (the application
/// is expected to be in maintenance), the target is renamed away
/// (`runway_old_…`), the copy renamed into place, and the old database
/// marked as runway's scratch and dropped. A failure to drop it is a
/// warning: the restore is done, and the sweep at the agent's next start
/// drops it.
pub async fn swap_in(
    admin: &Database,
    restored: &str,
    target: &str,
    owner: &str,
    progress: &Progress,
) -> Result<(), SwapFailed> {
    use SwapFailed::{Stranded, Untouched};
    let mut conn = scratch::connect(admin).await.map_err(Untouched)?;
    let comment = scratch::comment(&mut conn, target).await.map_err(Untouched)?;
    scratch::set_comment(&mut conn, restored, comment.as_deref()).await.map_err(Untouched)?;
    let old = scratch::new_name(scratch::Kind::Old);
    let terminate = "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()";
    sqlx::query(terminate)
        .bind(target)
        .execute(&mut conn)
        .await
        .map_err(|e| Untouched(BackupError::db(target, "ending sessions", e)))?;
    rename(&mut conn, target, &old)
        .await
        .map_err(|e| Untouched(BackupError::db(target, "renaming the old database away", e)))?;
    if let Err(e) = rename(&mut conn, restored, target).await {
        let error = BackupError::db(target, "renaming the restored database into place", e);
        return match rename(&mut conn, &old, target).await {
            Ok(()) => Err(Untouched(error)),
            Err(back) => Err(Stranded(BackupError::Stranded {
                target: target.to_owned(),
                old,
                restored: restored.to_owned(),
                error: format!(
                    "{error}; renaming the original back: {}",
                    crate::redact::redact_urls(&back.to_string())
                ),
            })),
        };
    }
    // Marked first: if the drop below does not happen, the sweep finds it.
    let marker = scratch::marker(scratch::Kind::Old, owner, chrono::Utc::now());
    let _ = scratch::set_comment(&mut conn, &old, Some(&marker)).await;
    let _ = sqlx::Connection::close(conn).await;
    if let Err(e) = scratch::drop_fresh(admin, &old).await {
        progress.emit("restore", format!("warning: the replaced database was kept: {e}"));
    }
    Ok(())
}

/// `ALTER DATABASE from RENAME TO to`.
async fn rename(conn: &mut PgConnection, from: &str, to: &str) -> Result<(), sqlx::Error> {
    sqlx::Executor::execute(
        &mut *conn,
        sqlx::raw_sql(&format!("ALTER DATABASE {} RENAME TO {}", ident(from), ident(to))),
    )
    .await
    .map(|_| ())
}
