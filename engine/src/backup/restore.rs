//! Restoring a backup into a target database: confirmation, checksums before
//! anything touches the database, pg_restore, then row counts compared with
//! the manifest.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::check::check_files;
use super::config::BackupConfig;
use super::error::BackupError;
use super::manifest::Manifest;
use super::pgrestore::{self, RestoreInto, SwapFailed};
use super::scratch::{self, Kind, ScratchDb};
use super::{remote, snapshot, space, tools};
use crate::database::Database;
use crate::progress::Progress;

/// How the target database is replaced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RestoreMode {
    /// `pg_restore --clean --if-exists` into the existing database, in one
    /// transaction: a failure leaves the database as it was. Objects that are
    /// not in the backup (e.g. tables created later) stay.
    #[default]
    Clean,
    /// Restore into a new database next to the target (`runway_restore_…`),
    /// check its row counts, then end the target's sessions and swap the
    /// new database in by renaming (the old one is dropped). The result is
    /// exactly the backup; needs CREATEDB and ownership of the target, and
    /// room on the server for the copy (`scratch_free_space_factor`).
    /// A failure before the swap completes drops the copy. Parallel jobs
    /// for directory format.
    Replace,
}

/// What to restore where.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// The database to restore into (its password never leaves this process).
    pub target_url: String,
    /// The operator confirmed (`--yes`). Not needed for a rollback.
    pub confirmed: bool,
    /// Set when a rollout's rollback restores its own backup: no confirmation needed.
    pub rollback_of: Option<String>,
    pub mode: RestoreMode,
}

/// What a restore did.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    pub backup: String,
    pub database: String,
    pub mode: RestoreMode,
    pub tables: usize,
    pub rows: i64,
    /// Applied migrations in `_prisma_migrations` after the restore: the
    /// backup's, by name and checksum.
    pub migrations: usize,
    /// Tables in the database that the backup does not have (only with `clean`).
    pub extra_tables: Vec<String>,
    pub seconds: f64,
}

/// Restores a backup named `id` from the local dir or, when it is not there,
/// from the object store (downloaded into the backup dir first, checksums
/// checked while downloading).
pub async fn restore_named(
    id: &str,
    config: &BackupConfig,
    options: &RestoreOptions,
    progress: &Progress,
) -> Result<RestoreReport, BackupError> {
    let local = config.backup_dir(id);
    let dir = if local.join(super::manifest::MANIFEST_NAME).is_file() {
        local
    } else if config.object_store.is_some() {
        confirm(options, id)?;
        remote::download(config, id, progress).await?
    } else {
        return Err(BackupError::NotFound {
            backup: id.to_owned(),
            where_: config.dir.display().to_string(),
        });
    };
    restore(&dir, config, options, progress).await
}

/// Restores the backup in `backup_dir` into `options.target_url`.
///
/// Refuses without confirmation (outside a rollback) and when any checksum
/// differs from the manifest; neither touches the target database.
pub async fn restore(
    backup_dir: &Path,
    config: &BackupConfig,
    options: &RestoreOptions,
    progress: &Progress,
) -> Result<RestoreReport, BackupError> {
    let started = std::time::Instant::now();
    let manifest = Manifest::read(backup_dir)?;
    let target = Database::parse(&options.target_url)?;
    let database = target.name().to_owned();
    confirm(options, &manifest.id)
        .map_err(|_| BackupError::NotConfirmed { backup: manifest.id.clone(), database: database.clone() })?;

    progress.emit("checksum", format!("checking backup {} before touching database {database}", manifest.id));
    check_files(backup_dir, &manifest, progress).await?;
    tools::restore_list(config, &manifest.dump_path(backup_dir)).await?;

    progress
        .emit("restore", format!("restoring backup {} into {database} ({:?})", manifest.id, options.mode));
    let counts = match options.mode {
        RestoreMode::Clean => {
            pgrestore::pg_restore(
                config,
                backup_dir,
                &manifest,
                &target,
                RestoreInto::CleanInOneTransaction,
                progress,
            )
            .await?;
            let mut db = snapshot::connect(&target).await?;
            snapshot::count_tables(&mut db, &database).await?
        }
        RestoreMode::Replace => replace(backup_dir, config, &manifest, &target, progress).await?,
    };

    let diffs: Vec<_> = snapshot::compare_counts(&manifest.tables, &counts)
        .into_iter()
        .filter(|d| d.expected.is_some())
        .collect();
    if !diffs.is_empty() {
        return Err(BackupError::RowCountMismatch { database, backup: manifest.id, diffs });
    }
    let migrations = check_migrations(&target, &manifest).await?;
    let extra_tables: Vec<String> = counts
        .iter()
        .filter(|c| !manifest.tables.iter().any(|t| t.schema == c.schema && t.table == c.table))
        .map(|c| c.qualified())
        .collect();
    if !extra_tables.is_empty() {
        progress.emit(
            "restore",
            format!("note: {database} also has tables the backup does not: {}", extra_tables.join(", ")),
        );
    }
    let rows = counts.iter().map(|t| t.rows).sum();
    progress.emit(
        "done",
        format!(
            "restored backup {} into {database}: {} tables, {rows} rows match",
            manifest.id,
            counts.len()
        ),
    );
    Ok(RestoreReport {
        backup: manifest.id,
        database,
        mode: options.mode,
        tables: counts.len(),
        rows,
        migrations,
        extra_tables,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Checks that `_prisma_migrations` lists what the backup's snapshot did
/// (names and checksums, in order); returns how many.
async fn check_migrations(target: &Database, manifest: &Manifest) -> Result<usize, BackupError> {
    let mut db = snapshot::connect(target).await?;
    let applied = snapshot::applied_migrations(&mut db, target.name(), target.schema_param()).await?;
    let names = |list: &mut dyn Iterator<Item = (&str, &str)>| {
        list.map(|(name, checksum)| format!("{name}:{}", &checksum[..checksum.len().min(8)]))
            .collect::<Vec<_>>()
    };
    let found = names(&mut applied.iter().map(|m| (m.name.as_str(), m.checksum.as_str())));
    let expected = names(&mut manifest.migrations.iter().map(|m| (m.name.as_str(), m.checksum.as_str())));
    if found != expected {
        return Err(BackupError::MigrationsMismatch {
            database: target.name().to_owned(),
            backup: manifest.id.clone(),
            expected: expected.join(", "),
            found: found.join(", "),
        });
    }
    Ok(applied.len())
}

fn confirm(options: &RestoreOptions, backup: &str) -> Result<(), BackupError> {
    if options.confirmed || options.rollback_of.is_some() {
        Ok(())
    } else {
        Err(BackupError::NotConfirmed { backup: backup.to_owned(), database: String::new() })
    }
}

/// Restores into a scratch database (`runway_restore_…`, marked as
/// runway's), checks counts there, swaps it in. Every failure before the
/// swap completes drops the copy, on a connection opened for that.
async fn replace(
    backup_dir: &Path,
    config: &BackupConfig,
    manifest: &Manifest,
    target: &Database,
    progress: &Progress,
) -> Result<Vec<super::manifest::TableRows>, BackupError> {
    let database = target.name().to_owned();
    let admin = pgrestore::maintenance(target);
    space::check_server(config, &admin, &manifest.database, manifest.database_bytes, 0, progress).await?;
    let side = ScratchDb::create(&admin, Kind::Restore, config).await?;
    progress.emit("restore", format!("restoring into {}, to be swapped in as {database}", side.name));
    let restored = async {
        pgrestore::pg_restore(
            config,
            backup_dir,
            manifest,
            &side.target,
            RestoreInto::Empty { jobs: config.jobs },
            progress,
        )
        .await?;
        let mut db = snapshot::connect(&side.target).await?;
        let counts = snapshot::count_tables(&mut db, &side.name).await?;
        let diffs = snapshot::compare_counts(&manifest.tables, &counts);
        if !diffs.is_empty() {
            return Err(BackupError::RowCountMismatch {
                database: side.name.clone(),
                backup: manifest.id.clone(),
                diffs,
            });
        }
        Ok(counts)
    }
    .await;
    let counts = match restored {
        Ok(counts) => counts,
        Err(e) => return Err(drop_after(side, e, progress).await),
    };
    progress.emit("restore", format!("swapping the restored copy into place as {database}"));
    match pgrestore::swap_in(&admin, &side.name, &database, &scratch::owner(config), progress).await {
        Ok(()) => Ok(counts),
        Err(SwapFailed::Untouched(e)) => Err(drop_after(side, e, progress).await),
        Err(SwapFailed::Stranded(e)) => Err(e),
    }
}

/// Drops the restore's copy after `error`; returns `error` (a copy that
/// cannot be dropped is reported, and its error named in the progress).
async fn drop_after(side: ScratchDb, error: BackupError, progress: &Progress) -> BackupError {
    let name = side.name.clone();
    match side.drop_it().await {
        Ok(()) => progress.emit("restore", format!("dropped {name}; the target database is as it was")),
        Err(e) => progress.emit("restore", format!("warning: {e}")),
    }
    error
}

/// Where a backup named on the command line lives: a folder path, or an id
/// in the backup dir.
pub fn resolve(path_or_id: &str, config: &BackupConfig) -> PathBuf {
    let path = PathBuf::from(path_or_id);
    if path.join(super::manifest::MANIFEST_NAME).is_file() { path } else { config.backup_dir(path_or_id) }
}
