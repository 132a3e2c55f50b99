//! [`BackupError`]: why a backup, verify, upload or restore failed.
//!
//! Every message names the thing that failed (file, table, database, object
//! key, numbers) and ends by saying whether retrying is safe. Messages never
//! hold a password: tool output and driver errors go through
//! [`crate::redact::redact_urls`] before they are stored here.

use std::fmt;
use std::path::PathBuf;

/// One table whose row count differs from the manifest.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TableDiff {
    /// `schema.table`.
    pub table: String,
    /// Rows in the manifest; `None` when the manifest does not list the table.
    pub expected: Option<i64>,
    /// Rows found; `None` when the table is missing.
    pub actual: Option<i64>,
}

impl fmt::Display for TableDiff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |v: Option<i64>| v.map_or_else(|| "missing".to_owned(), |n| n.to_string());
        write!(f, "{} (manifest {}, found {})", self.table, show(self.expected), show(self.actual))
    }
}

fn list(diffs: &[TableDiff]) -> String {
    diffs.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

/// Why a backup operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The backup config is unusable; fix the named key.
    #[error("backup config: `{key}` {problem}; fix the agent config (retry will fail the same way)")]
    Config { key: &'static str, problem: String },

    /// The database URL could not be understood (the URL itself is not repeated).
    #[error("database URL is not valid: {0}; fix the URL (retry will fail the same way)")]
    Url(String),

    /// Not enough room where the backup goes; refused before `pg_dump` started.
    #[error(
        "not enough free space for a backup of database {database} in {}: {free} bytes free ({}), \
         need {factor} × database size {database_bytes} bytes ({}) = {needed} bytes ({}); \
         free some space or lower the retention count, then retry (safe to retry)",
        dir.display(), human(*free), human(*database_bytes), human(*needed)
    )]
    NotEnoughSpace {
        database: String,
        dir: PathBuf,
        free: u64,
        database_bytes: u64,
        factor: f64,
        needed: u64,
    },

    /// Not enough room on the database server for a test restore's scratch
    /// database; refused before it was created.
    #[error(
        "not enough free space on the database server for a restored copy of database {database}: \
         {} (its data directory) has {free} bytes free ({}), need {factor} × database size {database_bytes} \
         bytes{} = {needed} bytes ({}); free space on the server, lower `backup.scratch_free_space_factor`, \
         or verify on another server; no scratch database was created (safe to retry)",
        dir.display(), human(*free), if *also_needed > 0 {
            format!(" + {} for the backup on the same file system", human(*also_needed))
        } else { String::new() }, human(*needed)
    )]
    ServerSpace {
        database: String,
        dir: PathBuf,
        free: u64,
        database_bytes: u64,
        factor: f64,
        /// Bytes the backup itself needs on the same file system (else 0).
        also_needed: u64,
        needed: u64,
    },

    /// A scratch database could not be dropped after its work ended (or failed).
    #[error(
        "scratch database {database} could not be dropped: {error}; the DB agent drops it when it next starts \
         (or drop it by hand: DROP DATABASE \"{database}\") (safe to retry)"
    )]
    ScratchLeft { database: String, error: String },

    /// A replace-mode restore's swap failed half-way: the original is under
    /// another name and so is the restored copy; both are kept.
    #[error(
        "restore into database {target} stopped half-way: the original database is now named {old} and the \
         restored copy {restored}; {error}; rename one of them to {target} by hand (ALTER DATABASE … RENAME TO …) \
         before anything else (retry is not safe until then)"
    )]
    Stranded { target: String, old: String, restored: String, error: String },

    /// Connecting to or querying PostgreSQL failed.
    #[error("database {database}: {what} failed: {error} (safe to retry)")]
    Database { database: String, what: String, error: String },

    /// A PostgreSQL tool could not be started.
    #[error("cannot run {}: {error}; check `pg_bin_dir` in the backup config (safe to retry once fixed)", tool.display())]
    Spawn { tool: PathBuf, error: String },

    /// A PostgreSQL tool exited with an error; `stderr` is its last output, redacted.
    #[error("{tool} failed ({status}): {stderr} (safe to retry{hint})")]
    Tool { tool: String, status: String, stderr: String, hint: &'static str },

    /// Reading or writing a local file failed.
    #[error("{op} {}: {error} (safe to retry once the cause is fixed)", path.display())]
    Io { op: &'static str, path: PathBuf, error: String },

    /// A backup file's bytes are not what the manifest says: the backup is corrupt.
    #[error(
        "checksum mismatch in {}: manifest says sha256 {expected} ({expected_bytes} bytes), \
         file has sha256 {actual} ({actual_bytes} bytes); the backup is corrupt, \
         use another backup (retry will fail the same way)",
        file.display()
    )]
    ChecksumMismatch {
        file: PathBuf,
        expected: String,
        actual: String,
        expected_bytes: u64,
        actual_bytes: u64,
    },

    /// A backup folder does not hold the files its manifest lists (or holds others).
    #[error("backup {} is incomplete: {problem}; use another backup (retry will fail the same way)", dir.display())]
    Incomplete { dir: PathBuf, problem: String },

    /// `manifest.json` is missing or unreadable.
    #[error("manifest {}: {error}; use another backup (retry will fail the same way)", path.display())]
    Manifest { path: PathBuf, error: String },

    /// After a (test) restore, row counts differ from the manifest.
    #[error(
        "row counts in database {database} differ from the manifest of backup {backup} in {} table(s): {}; \
         the backup or the restore is not faithful (retry will fail the same way)",
        diffs.len(), list(diffs)
    )]
    RowCountMismatch { database: String, backup: String, diffs: Vec<TableDiff> },

    /// After a restore, `_prisma_migrations` does not hold what the backup's
    /// snapshot held: the database is not back where the backup was taken.
    #[error(
        "after restoring backup {backup}, database {database} lists applied migrations [{found}] but the backup \
         was taken with [{expected}]; the restore is not faithful (retry will fail the same way)"
    )]
    MigrationsMismatch { database: String, backup: String, expected: String, found: String },

    /// A restore outside a rollout's rollback needs an explicit confirmation.
    #[error(
        "restore of backup {backup} into database {database} replaces its contents and needs an explicit \
         confirmation (--yes); nothing was changed"
    )]
    NotConfirmed { backup: String, database: String },

    /// A backup with that name is not in the backup dir or the object store.
    #[error("backup {backup} not found in {where_}; list the backups and pick an existing one")]
    NotFound { backup: String, where_: String },

    /// Talking to the object store failed.
    #[error("object store: {op} {key} failed: {error} (safe to retry)")]
    ObjectStore { op: &'static str, key: String, error: String },

    /// A blocking helper task died (a bug, or the process is shutting down).
    #[error("internal error: {0} (safe to retry)")]
    Internal(String),
}

impl BackupError {
    /// Whether running the same operation again may succeed without changing
    /// anything else first. `false` means the backup itself is bad or the
    /// config must change.
    pub fn retry_safe(&self) -> bool {
        !matches!(
            self,
            Self::Config { .. }
                | Self::Url(_)
                | Self::ChecksumMismatch { .. }
                | Self::Incomplete { .. }
                | Self::Manifest { .. }
                | Self::RowCountMismatch { .. }
                | Self::MigrationsMismatch { .. }
                | Self::NotConfirmed { .. }
                | Self::NotFound { .. }
                | Self::Stranded { .. }
        )
    }

    /// Whether the backup itself is corrupt or does not match its manifest.
    pub fn is_integrity_failure(&self) -> bool {
        matches!(
            self,
            Self::ChecksumMismatch { .. }
                | Self::Incomplete { .. }
                | Self::Manifest { .. }
                | Self::RowCountMismatch { .. }
        )
    }

    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, error: std::io::Error) -> Self {
        Self::Io { op, path: path.into(), error: error.to_string() }
    }

    pub(crate) fn db(database: &str, what: impl Into<String>, error: impl fmt::Display) -> Self {
        Self::Database {
            database: database.to_owned(),
            what: what.into(),
            error: crate::redact::redact_urls(&error.to_string()),
        }
    }
}

impl From<crate::database::UrlError> for BackupError {
    fn from(e: crate::database::UrlError) -> Self {
        Self::Url(e.to_string())
    }
}

/// `12345678` → `11.8 MiB`.
pub fn human(bytes: u64) -> String {
    bytesize::ByteSize::b(bytes).display().iec().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn space_error_names_both_numbers() {
        let e = BackupError::NotEnoughSpace {
            database: "app".into(),
            dir: "/backups".into(),
            free: 1000,
            database_bytes: 800,
            factor: 2.0,
            needed: 1600,
        };
        let text = e.to_string();
        assert!(text.contains("1000 bytes free") && text.contains("800 bytes"), "{text}");
        assert!(text.contains("safe to retry"));
        assert!(e.retry_safe());
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human(10), "10 B");
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(human(3 * 1024 * 1024 * 1024), "3.0 GiB");
    }
}
