//! Listing local backups, pins, and keeping the newest `keep` per database.
//!
//! A running rollout pins the backup it depends on (its rollback target):
//! `<dir>/.pins/<rollout id>` holds the backup id (and, once the rollout
//! ended, on a second line the time in Unix milliseconds until which the pin
//! still holds: the rollback window). Pins live on disk so they survive
//! agent restarts; [`release`] is called when the rollout ends. Pruning
//! never deletes a pinned backup.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::config::BackupConfig;
use super::error::BackupError;
use super::manifest::Manifest;
use crate::progress::Progress;

const PINS: &str = ".pins";

/// A complete backup found in the backup dir.
#[derive(Debug, Clone)]
pub struct LocalBackup {
    pub dir: PathBuf,
    pub manifest: Manifest,
}

/// Every complete backup in `config.dir` (folders with a readable manifest;
/// partial folders and others are skipped), oldest first.
pub fn list_local(config: &BackupConfig) -> Result<Vec<LocalBackup>, BackupError> {
    let entries = match std::fs::read_dir(&config.dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(BackupError::io("listing", &config.dir, e)),
    };
    let mut backups = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| BackupError::io("listing", &config.dir, e))?;
        if entry.file_name().to_string_lossy().starts_with('.')
            || !entry.file_type().is_ok_and(|t| t.is_dir())
        {
            continue;
        }
        if let Ok(manifest) = Manifest::read(&entry.path()) {
            backups.push(LocalBackup { dir: entry.path(), manifest });
        }
    }
    backups.sort_by(|a, b| {
        (a.manifest.started_at, &a.manifest.id).cmp(&(b.manifest.started_at, &b.manifest.id))
    });
    Ok(backups)
}

fn pin_path(config: &BackupConfig, rollout_id: &str) -> PathBuf {
    let safe: String = rollout_id
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' })
        .collect();
    config.dir.join(PINS).join(safe)
}

/// Marks `backup_id` as needed by `rollout_id` until [`unpin`].
pub fn pin(config: &BackupConfig, rollout_id: &str, backup_id: &str) -> Result<(), BackupError> {
    let path = pin_path(config, rollout_id);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| BackupError::io("creating", parent, e))?;
    }
    std::fs::write(&path, backup_id).map_err(|e| BackupError::io("writing pin", &path, e))
}

/// Releases the pin of `rollout_id` (the rollout finished); a missing pin is fine.
pub fn unpin(config: &BackupConfig, rollout_id: &str) -> Result<(), BackupError> {
    let path = pin_path(config, rollout_id);
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(BackupError::io("removing pin", &path, e)),
        _ => Ok(()),
    }
}

/// The rollout `rollout_id` ended: its pin holds `keep_for` more (a
/// rollback window), or is removed now when `keep_for` is zero. A missing
/// pin is fine (nothing to release).
pub fn release(
    config: &BackupConfig,
    rollout_id: &str,
    keep_for: std::time::Duration,
) -> Result<(), BackupError> {
    let path = pin_path(config, rollout_id);
    if keep_for.is_zero() {
        return unpin(config, rollout_id);
    }
    let backup_id = match std::fs::read_to_string(&path) {
        Ok(text) => text.lines().next().unwrap_or_default().trim().to_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(BackupError::io("reading pin", &path, e)),
    };
    let until = chrono::Utc::now().timestamp_millis().saturating_add(keep_for.as_millis() as i64);
    std::fs::write(&path, format!("{backup_id}\n{until}\n"))
        .map_err(|e| BackupError::io("writing pin", &path, e))
}

/// Ids of all pinned backups.
pub fn pinned(config: &BackupConfig) -> Result<HashSet<String>, BackupError> {
    let dir = config.dir.join(PINS);
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HashSet::new()),
        Err(e) => return Err(BackupError::io("listing", &dir, e)),
    };
    let mut ids = HashSet::new();
    for entry in entries {
        let entry = entry.map_err(|e| BackupError::io("listing", &dir, e))?;
        let text = std::fs::read_to_string(entry.path())
            .map_err(|e| BackupError::io("reading pin", entry.path(), e))?;
        let mut lines = text.lines();
        let id = lines.next().unwrap_or_default().trim();
        let expired = lines
            .next()
            .and_then(|until| until.trim().parse::<i64>().ok())
            .is_some_and(|until| until <= chrono::Utc::now().timestamp_millis());
        if !id.is_empty() && !expired {
            ids.insert(id.to_owned());
        }
    }
    Ok(ids)
}

/// Which of `ids` (oldest first) to delete to keep the newest `keep`, never a pinned one.
pub fn to_delete<'a>(ids: &[&'a str], keep: usize, pinned: &HashSet<String>) -> Vec<&'a str> {
    let excess = ids.len().saturating_sub(keep);
    ids[..excess].iter().copied().filter(|id| !pinned.contains(*id)).collect()
}

/// Deletes local backups of `database` beyond the newest `config.keep`.
/// Returns the ids deleted.
pub fn prune_local(
    config: &BackupConfig,
    database: &str,
    progress: &Progress,
) -> Result<Vec<String>, BackupError> {
    let Some(keep) = config.keep else { return Ok(Vec::new()) };
    let backups: Vec<LocalBackup> =
        list_local(config)?.into_iter().filter(|b| b.manifest.database == database).collect();
    let ids: Vec<&str> = backups.iter().map(|b| b.manifest.id.as_str()).collect();
    let pins = pinned(config)?;
    let doomed: Vec<String> = to_delete(&ids, keep, &pins).into_iter().map(str::to_owned).collect();
    for id in &doomed {
        let dir = config.backup_dir(id);
        remove_backup_dir(&dir)?;
        progress.emit(
            "retention",
            format!("deleted local backup {id} (keeping the newest {keep} of {database})"),
        );
    }
    Ok(doomed)
}

/// Deletes one backup folder: manifest first, so a crash halfway leaves a
/// folder that is no longer listed as a backup.
pub fn remove_backup_dir(dir: &Path) -> Result<(), BackupError> {
    let manifest = dir.join(super::manifest::MANIFEST_NAME);
    match std::fs::remove_file(&manifest) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(BackupError::io("deleting", &manifest, e));
        }
        _ => {}
    }
    std::fs::remove_dir_all(dir).map_err(|e| BackupError::io("deleting", dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_newest_and_pinned() {
        let pins: HashSet<String> = ["a".to_owned()].into();
        assert_eq!(to_delete(&["a", "b", "c", "d"], 2, &pins), ["b"]);
        assert!(to_delete(&["a", "b"], 5, &pins).is_empty());
    }

    #[test]
    fn pins_round_trip() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let config = BackupConfig::new(tmp.path());
        pin(&config, "rollout/7", "app-1").expect("pin");
        assert!(pinned(&config).expect("pins").contains("app-1"));
        unpin(&config, "rollout/7").expect("unpin");
        unpin(&config, "rollout/7").expect("unpin twice");
        assert!(pinned(&config).expect("pins").is_empty());
    }

    #[test]
    fn a_released_pin_holds_for_its_window_then_lapses() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let config = BackupConfig::new(tmp.path());
        pin(&config, "r1", "app-1").expect("pin");
        release(&config, "r1", std::time::Duration::from_secs(3600)).expect("release with a window");
        assert!(pinned(&config).expect("pins").contains("app-1"), "still inside the rollback window");
        // A window that has passed: written as already expired.
        std::fs::write(pin_path(&config, "r1"), "app-1\n1\n").expect("expire");
        assert!(pinned(&config).expect("pins").is_empty(), "an expired pin must not hold");
        pin(&config, "r2", "app-2").expect("pin");
        release(&config, "r2", std::time::Duration::ZERO).expect("release now");
        assert!(!pin_path(&config, "r2").exists());
        release(&config, "r3", std::time::Duration::from_secs(1)).expect("no pin is fine");
    }
}
