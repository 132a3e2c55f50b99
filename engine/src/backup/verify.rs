//! Verifying a backup: checksums re-read, `pg_restore --list`, and optionally
//! a full test restore into a scratch database whose row counts must equal
//! the manifest's.

use std::path::Path;

use serde::Serialize;

use super::check::check_files;
use super::config::BackupConfig;
use super::error::BackupError;
use super::manifest::Manifest;
use super::pgrestore::{self, RestoreInto};
use super::{snapshot, tools};
use crate::database::Database;
use crate::progress::Progress;

/// What verify checked.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub backup: String,
    pub files: usize,
    pub bytes: u64,
    /// Entries in the archive's table of contents (`pg_restore --list`).
    pub toc_entries: usize,
    /// Set when a test restore ran.
    pub test_restore: Option<TestRestoreReport>,
}

/// A test restore that matched the manifest.
#[derive(Debug, Clone, Serialize)]
pub struct TestRestoreReport {
    /// The scratch database (already dropped).
    pub scratch_database: String,
    pub tables: usize,
    pub rows: i64,
    pub seconds: f64,
}

/// Verifies the backup in `backup_dir`.
///
/// With `test_restore_url`, also restores it into a scratch database on that
/// server (named `runway_verify_<random>`), compares every table's row count
/// with the manifest and drops the scratch database, also on failure.
/// Whether to test-restore is the caller's choice; see
/// [`TestRestore::enabled_for`](super::TestRestore::enabled_for).
pub async fn verify(
    backup_dir: &Path,
    config: &BackupConfig,
    test_restore_url: Option<&str>,
    progress: &Progress,
) -> Result<VerifyReport, BackupError> {
    let manifest = Manifest::read(backup_dir)?;
    progress.emit("checksum", format!("checking {} file(s) of backup {}", manifest.files.len(), manifest.id));
    let bytes = check_files(backup_dir, &manifest, progress).await?;
    let toc_entries = tools::restore_list(config, &manifest.dump_path(backup_dir)).await?;
    progress.emit("list", format!("pg_restore --list: {toc_entries} entries"));

    let test_restore = match test_restore_url {
        Some(url) => {
            Some(test_restore(backup_dir, config, &manifest, &Database::parse(url)?, progress).await?)
        }
        None => None,
    };
    progress.emit("done", format!("backup {} verified", manifest.id));
    Ok(VerifyReport { backup: manifest.id, files: manifest.files.len(), bytes, toc_entries, test_restore })
}

async fn test_restore(
    backup_dir: &Path,
    config: &BackupConfig,
    manifest: &Manifest,
    server: &Database,
    progress: &Progress,
) -> Result<TestRestoreReport, BackupError> {
    let started = std::time::Instant::now();
    let scratch = format!("runway_verify_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let mut admin = snapshot::connect(server).await?;
    pgrestore::create_database(&mut admin, &scratch).await?;
    progress.emit("test-restore", format!("restoring into scratch database {scratch}"));
    let outcome = async {
        let target = server.with_database(&scratch);
        pgrestore::pg_restore(
            config,
            backup_dir,
            manifest,
            &target,
            RestoreInto::Empty { jobs: config.jobs },
            progress,
        )
        .await?;
        let mut db = snapshot::connect(&target).await?;
        let counts = snapshot::count_tables(&mut db, &scratch).await;
        drop(db);
        let counts = counts?;
        let diffs = snapshot::compare_counts(&manifest.tables, &counts);
        if !diffs.is_empty() {
            return Err(BackupError::RowCountMismatch {
                database: scratch.clone(),
                backup: manifest.id.clone(),
                diffs,
            });
        }
        Ok(counts)
    }
    .await;
    let dropped = pgrestore::drop_database(&mut admin, &scratch).await;
    let counts = outcome?;
    dropped?;
    let rows = counts.iter().map(|t| t.rows).sum();
    progress.emit(
        "test-restore",
        format!("{} tables, {rows} rows match the manifest; dropped {scratch}", counts.len()),
    );
    Ok(TestRestoreReport {
        scratch_database: scratch,
        tables: counts.len(),
        rows,
        seconds: started.elapsed().as_secs_f64(),
    })
}
