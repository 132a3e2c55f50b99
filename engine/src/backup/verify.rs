//! Verifying a backup: checksums re-read, `pg_restore --list`, and optionally
//! a full test restore into a scratch database whose row counts must equal
//! the manifest's.

use std::path::Path;

use serde::Serialize;

use super::check::check_files;
use super::config::BackupConfig;
use super::error::BackupError;
use super::manifest::{Manifest, Verification};
use super::pgrestore::{self, RestoreInto};
use super::scratch::{Kind, ScratchDb};
use super::{snapshot, space, tools};
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
    /// `overlapped`, `after_dump`, `background` or `on_demand` (see [`Verification`]).
    pub when: String,
    /// `restored` or `skipped`.
    pub post_data: String,
}

/// Verifies the backup in `backup_dir`.
///
/// With `test_restore_url`, also restores it into a scratch database on that
/// server (named `runway_verify_<random>`, marked as runway's: see
/// [`super::scratch`]), compares every table's row count with the manifest
/// and drops the scratch database on a connection opened for that, also on
/// failure. Refuses before creating it when the server's disk has no room
/// for the copy ([`super::space::check_server`]). A
/// test restore that matched is recorded in the manifest (`when` =
/// `on_demand`). Whether to test-restore is the caller's choice; see
/// [`BackupConfig::proof_for`].
pub async fn verify(
    backup_dir: &Path,
    config: &BackupConfig,
    test_restore_url: Option<&str>,
    progress: &Progress,
) -> Result<VerifyReport, BackupError> {
    verify_as(backup_dir, config, test_restore_url, "on_demand", progress).await
}

/// [`verify`], recording a test restore as `when` (`on_demand`, `background`).
pub async fn verify_as(
    backup_dir: &Path,
    config: &BackupConfig,
    test_restore_url: Option<&str>,
    when: &str,
    progress: &Progress,
) -> Result<VerifyReport, BackupError> {
    let manifest = Manifest::read(backup_dir)?;
    progress.emit("checksum", format!("checking {} file(s) of backup {}", manifest.files.len(), manifest.id));
    let bytes = check_files(backup_dir, &manifest, progress).await?;
    let toc_entries = tools::restore_list(config, &manifest.dump_path(backup_dir)).await?;
    progress.emit("list", format!("pg_restore --list: {toc_entries} entries"));

    let test_restore = match test_restore_url {
        Some(url) => {
            let server = Database::parse(url)?;
            let verification = test_restore(backup_dir, config, &manifest, &server, when, progress).await?;
            Manifest::record_verification(backup_dir, verification.clone())?;
            Some(TestRestoreReport::from(&verification))
        }
        None => None,
    };
    progress.emit("done", format!("backup {} verified", manifest.id));
    Ok(VerifyReport { backup: manifest.id, files: manifest.files.len(), bytes, toc_entries, test_restore })
}

/// The check right after [`super::create_with`] in a rollout's backup step:
/// the archive's table of contents (`pg_restore --list`), and for directory
/// format every checksum re-read (custom format was read back while it was
/// written). A test restore that ran is taken from the manifest.
pub async fn written(
    backup_dir: &Path,
    config: &BackupConfig,
    manifest: &Manifest,
    progress: &Progress,
) -> Result<VerifyReport, BackupError> {
    let bytes = match manifest.format {
        super::DumpFormat::Directory => check_files(backup_dir, manifest, progress).await?,
        _ => manifest.bytes,
    };
    let toc_entries = tools::restore_list(config, &manifest.dump_path(backup_dir)).await?;
    progress.emit("list", format!("pg_restore --list: {toc_entries} entries"));
    Ok(VerifyReport {
        backup: manifest.id.clone(),
        files: manifest.files.len(),
        bytes,
        toc_entries,
        test_restore: manifest.verification.as_ref().map(TestRestoreReport::from),
    })
}

impl From<&Verification> for TestRestoreReport {
    fn from(v: &Verification) -> Self {
        Self {
            scratch_database: v.scratch_database.clone(),
            tables: v.tables,
            rows: v.rows,
            seconds: v.seconds,
            when: v.when.clone(),
            post_data: v.post_data.clone(),
        }
    }
}

/// Restores the complete backup in `backup_dir` into a new scratch database
/// on `server` (everything, post-data included; parallel jobs for
/// directory format), compares row counts, drops it.
pub(super) async fn test_restore(
    backup_dir: &Path,
    config: &BackupConfig,
    manifest: &Manifest,
    server: &Database,
    when: &str,
    progress: &Progress,
) -> Result<Verification, BackupError> {
    let started = std::time::Instant::now();
    space::check_server(config, server, &manifest.database, manifest.database_bytes, 0, progress).await?;
    let scratch = ScratchDb::create(server, Kind::Verify, config).await?;
    progress.emit("test-restore", format!("restoring into scratch database {}", scratch.name));
    let outcome = async {
        pgrestore::pg_restore(
            config,
            backup_dir,
            manifest,
            &scratch.target,
            RestoreInto::Empty { jobs: config.jobs },
            progress,
        )
        .await?;
        let mut db = snapshot::connect(&scratch.target).await?;
        let counts = snapshot::count_tables(&mut db, &scratch.name).await;
        drop(db);
        let counts = counts?;
        let diffs = snapshot::compare_counts(&manifest.tables, &counts);
        if !diffs.is_empty() {
            return Err(BackupError::RowCountMismatch {
                database: scratch.name.clone(),
                backup: manifest.id.clone(),
                diffs,
            });
        }
        Ok(counts)
    }
    .await;
    let scratch_name = scratch.name.clone();
    // On a connection opened now: the restore may have taken hours.
    let dropped = scratch.drop_it().await;
    let counts = match (outcome, dropped) {
        (Ok(counts), Ok(())) => counts,
        (Ok(_), Err(e)) => return Err(e),
        (Err(e), dropped) => {
            if let Err(left) = dropped {
                progress.emit("test-restore", format!("warning: {left}"));
            }
            return Err(e);
        }
    };
    let scratch = scratch_name;
    let rows = counts.iter().map(|t| t.rows).sum();
    progress.emit(
        "test-restore",
        format!("{} tables, {rows} rows match the manifest; dropped {scratch}", counts.len()),
    );
    Ok(Verification {
        when: when.to_owned(),
        post_data: "restored".into(),
        scratch_database: scratch,
        tables: counts.len(),
        rows,
        sha256: manifest.sha256.clone(),
        verified_at: chrono::Utc::now(),
        seconds: started.elapsed().as_secs_f64(),
    })
}
