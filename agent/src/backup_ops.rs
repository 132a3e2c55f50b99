//! Backup operations an operator asks for through the coordinator
//! (`runway backup list|show|verify|restore --env ENV`), outside a rollout.
//!
//! Each returns what becomes the command result's `detail_json`: the list,
//! a manifest, a verify report, a restore report. Backups are looked up in
//! the backup dir first, then in object storage when it is configured.
//!
//! Backup names arrive over the network, so a name that could leave the
//! backup dir (`..`, `/`) is treated as unknown before any path is built.
//!
//! [`sweep_at_start`] removes what backups that did not finish left behind
//! (the agent killed mid-backup), before the agent takes commands.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use runway_engine::backup::{
    self, BackupConfig, BackupError, DumpFormat, Manifest, RestoreMode, RestoreOptions, RestoreReport,
    VerifyReport, remote, retention,
};
use runway_engine::progress::Progress;
use runway_proto::v1::command::Action;

/// `runway backup list`: every backup this DB agent can restore.
#[derive(Debug, Clone, Serialize)]
pub struct BackupList {
    /// The backup dir on the agent's host.
    pub dir: String,
    /// The bucket, when object storage is configured.
    pub bucket: Option<String>,
    /// Oldest first.
    pub backups: Vec<BackupSummary>,
}

/// One backup in a [`BackupList`].
#[derive(Debug, Clone, Serialize)]
pub struct BackupSummary {
    pub id: String,
    pub database: String,
    pub format: DumpFormat,
    pub bytes: u64,
    pub sha256: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    /// The rollout that took it; empty for a backup taken by hand.
    pub rollout_id: String,
    pub label: String,
    pub tables: usize,
    pub rows: i64,
    /// A complete copy is in the backup dir.
    pub local: bool,
    /// A complete copy is in object storage.
    pub remote: bool,
}

impl BackupSummary {
    fn new(manifest: &Manifest) -> Self {
        Self {
            id: manifest.id.clone(),
            database: manifest.database.clone(),
            format: manifest.format,
            bytes: manifest.bytes,
            sha256: manifest.sha256.clone(),
            started_at: manifest.started_at,
            finished_at: manifest.finished_at,
            rollout_id: manifest.rollout_id.clone(),
            label: manifest.label.clone(),
            tables: manifest.tables.len(),
            rows: manifest.tables.iter().map(|t| t.rows).sum(),
            local: false,
            remote: false,
        }
    }
}

/// Longest a start-up sweep of one database may take (a server that does
/// not answer must not keep the agent from its coordinator for long).
const SWEEP_DEADLINE: std::time::Duration = std::time::Duration::from_secs(60);

/// At DB agent start, before any command runs: for every database served,
/// removes abandoned `.partial-*` folders from its backup dir and drops the
/// scratch databases this agent made and did not get to drop (see
/// [`backup::sweep()`], which logs each removal). Failures are logged and
/// do not stop the agent: the next start tries again.
pub async fn sweep_at_start(config: &crate::config::Config, shutdown: &tokio_util::sync::CancellationToken) {
    for served in crate::databases::served(config) {
        let Some(backup) = crate::databases::backup_config(config, &served.name) else { continue };
        let swept = tokio::select! {
            swept = tokio::time::timeout(SWEEP_DEADLINE, backup::sweep(&backup, &served.url)) => swept,
            () = shutdown.cancelled() => return,
        };
        match swept {
            Ok(Ok(report)) => {
                if !(report.folders.is_empty() && report.databases.is_empty()) {
                    tracing::info!(
                        database = %served.name,
                        folders = report.folders.len(),
                        scratch_databases = report.databases.len(),
                        "removed what backups that did not finish left behind"
                    );
                }
            }
            Ok(Err(e)) => {
                tracing::warn!(database = %served.name, error = %e, "sweeping backup leftovers failed")
            }
            Err(_) => tracing::warn!(
                database = %served.name,
                "sweeping backup leftovers took longer than {}s; going on, the next start tries again",
                SWEEP_DEADLINE.as_secs()
            ),
        }
    }
}

/// Runs one of the operator's backup actions; the value is the result detail.
/// `rollout_id` is set when a rollout asks (its proof after the window).
pub async fn run(
    action: &Action,
    config: &BackupConfig,
    database_url: &str,
    rollout_id: &str,
    progress: &Progress,
) -> Result<serde_json::Value, BackupError> {
    let value = match action {
        Action::ListBackups(_) => serde_json::to_value(list(config).await?),
        Action::ShowBackup(show_) => serde_json::to_value(show(config, &show_.name).await?),
        Action::VerifyBackup(v) => {
            let test_restore = v.test_restore.then_some(database_url);
            let when = if rollout_id.is_empty() { "on_demand" } else { "background" };
            serde_json::to_value(verify(config, &v.name, test_restore, when, progress).await?)
        }
        Action::RestoreBackup(r) => {
            let mode = if r.replace { RestoreMode::Replace } else { RestoreMode::Clean };
            serde_json::to_value(restore(config, database_url, &r.name, r.confirmed, mode, progress).await?)
        }
        _ => return Err(BackupError::Internal("not a backup operation".into())),
    };
    value.map_err(|e| BackupError::Internal(format!("encoding the result: {e}")))
}

/// Lists local backups and, when configured, the copies in object storage.
pub async fn list(config: &BackupConfig) -> Result<BackupList, BackupError> {
    let mut by_id: BTreeMap<String, BackupSummary> = BTreeMap::new();
    for local in retention::list_local(config)? {
        by_id.entry(local.manifest.id.clone()).or_insert_with(|| BackupSummary::new(&local.manifest)).local =
            true;
    }
    if config.object_store.is_some() {
        for manifest in remote::list(config).await? {
            by_id.entry(manifest.id.clone()).or_insert_with(|| BackupSummary::new(&manifest)).remote = true;
        }
    }
    let mut backups: Vec<BackupSummary> = by_id.into_values().collect();
    backups.sort_by(|a, b| (a.started_at, &a.id).cmp(&(b.started_at, &b.id)));
    Ok(BackupList {
        dir: config.dir.display().to_string(),
        bucket: config.object_store.as_ref().map(|s| s.bucket.clone()),
        backups,
    })
}

/// The manifest of backup `name`: from the backup dir, else object storage.
pub async fn show(config: &BackupConfig, name: &str) -> Result<Manifest, BackupError> {
    check_name(config, name)?;
    let local = config.backup_dir(name);
    if local.join(backup::manifest::MANIFEST_NAME).is_file() {
        return Manifest::read(&local);
    }
    if config.object_store.is_some()
        && let Some(manifest) = remote::list(config).await?.into_iter().find(|m| m.id == name)
    {
        return Ok(manifest);
    }
    Err(not_found(config, name))
}

/// Verifies backup `name`; a copy only in object storage is downloaded into
/// the backup dir first (checksums checked while downloading). With
/// `test_restore_url`, also restores it into a scratch database there and
/// records the proof in its manifest as `when` (`on_demand`, `background`).
pub async fn verify(
    config: &BackupConfig,
    name: &str,
    test_restore_url: Option<&str>,
    when: &str,
    progress: &Progress,
) -> Result<VerifyReport, BackupError> {
    check_name(config, name)?;
    let local = config.backup_dir(name);
    let dir = if local.join(backup::manifest::MANIFEST_NAME).is_file() {
        local
    } else if config.object_store.is_some() {
        remote::download(config, name, progress).await?
    } else {
        return Err(not_found(config, name));
    };
    backup::verify_as(&dir, config, test_restore_url, when, progress).await
}

/// Restores backup `name` into `database_url`, replacing its contents
/// (`Replace`: exactly the backup, what a rollout's rollback uses).
///
/// Refuses without `confirmed` before looking at anything. Otherwise the
/// backup library checks every checksum before the database is touched and
/// compares row counts with the manifest afterwards.
pub async fn restore(
    config: &BackupConfig,
    database_url: &str,
    name: &str,
    confirmed: bool,
    mode: RestoreMode,
    progress: &Progress,
) -> Result<RestoreReport, BackupError> {
    if !confirmed {
        return Err(BackupError::NotConfirmed {
            backup: name.to_owned(),
            database: database_name(database_url),
        });
    }
    check_name(config, name)?;
    let options = RestoreOptions { target_url: database_url.to_owned(), confirmed, rollback_of: None, mode };
    backup::restore_named(name, config, &options, progress).await
}

/// Backup ids are `[A-Za-z0-9._-]` (see [`backup::manifest::backup_id`]);
/// anything else cannot name a backup and must not become a path.
fn check_name(config: &BackupConfig, name: &str) -> Result<(), BackupError> {
    if backup::names::is_valid_id(name) { Ok(()) } else { Err(not_found(config, name)) }
}

fn not_found(config: &BackupConfig, name: &str) -> BackupError {
    let where_ = match &config.object_store {
        Some(store) => format!("{} or bucket {}", config.dir.display(), store.bucket),
        None => config.dir.display().to_string(),
    };
    BackupError::NotFound { backup: name.to_owned(), where_ }
}

/// The database named in `url`, for messages (never the URL itself).
fn database_name(url: &str) -> String {
    url::Url::parse(url)
        .ok()
        .map(|u| u.path().trim_start_matches('/').to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "of this agent".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_could_leave_the_backup_dir_are_unknown() {
        let config = BackupConfig::new("/backups");
        for bad in ["", "..", "../etc", "a/b", ".pins", "x\0y"] {
            assert!(
                matches!(check_name(&config, bad), Err(BackupError::NotFound { .. })),
                "{bad:?} was accepted"
            );
        }
        assert!(check_name(&config, "app-20250301T100000123Z-before_deploy").is_ok());
    }

    #[tokio::test]
    async fn restore_without_confirmation_is_refused_before_anything_is_read() {
        let config = BackupConfig::new("/nonexistent/backups");
        let error = restore(
            &config,
            "postgres://u:secret@db/app",
            "app-1",
            false,
            RestoreMode::Clean,
            &Progress::discard(),
        )
        .await
        .expect_err("must refuse");
        let text = error.to_string();
        assert!(matches!(error, BackupError::NotConfirmed { .. }), "{text}");
        assert!(text.contains("app-1") && text.contains("database app"), "{text}");
        assert!(!text.contains("secret"), "{text}");
    }

    #[tokio::test]
    async fn list_of_an_empty_dir_is_empty() {
        let dir = tempfile::tempdir().expect("temp dir");
        let list = list(&BackupConfig::new(dir.path())).await.expect("list");
        assert!(list.backups.is_empty());
        assert_eq!(list.bucket, None);
    }
}
