//! The free-space check that runs before pg_dump starts.

use std::path::Path;

use serde::Serialize;

use super::config::BackupConfig;
use super::error::BackupError;
use super::snapshot;
use crate::database::Database;

/// The runbook's disk check before a rollout: room for a backup of the database.
#[derive(Debug, Clone, Serialize)]
pub struct SpaceReport {
    pub database_bytes: u64,
    pub free_bytes: u64,
    /// `free_space_factor × database_bytes`.
    pub needed_bytes: u64,
}

/// Checks that a backup of `database_url` fits where backups go; refuses
/// with [`BackupError::NotEnoughSpace`] otherwise. Reads the database size.
pub async fn preflight(database_url: &str, config: &BackupConfig) -> Result<SpaceReport, BackupError> {
    let database = Database::parse(database_url)?;
    let mut conn = snapshot::connect(&database).await?;
    let facts = snapshot::facts(&mut conn, database.name()).await?;
    let free_bytes = check(config, database.name(), facts.database_bytes)?;
    let needed_bytes = (facts.database_bytes as f64 * config.free_space_factor).ceil() as u64;
    Ok(SpaceReport { database_bytes: facts.database_bytes, free_bytes, needed_bytes })
}

/// `pg_database_size` of the database of `database_url`.
pub async fn database_size(database_url: &str) -> Result<u64, BackupError> {
    let database = Database::parse(database_url)?;
    let mut conn = snapshot::connect(&database).await?;
    Ok(snapshot::facts(&mut conn, database.name()).await?.database_bytes)
}

/// Bytes available to backups in `config.dir`: the filesystem's free space
/// for unprivileged users, capped by `max_bytes` minus what the dir already holds.
pub fn available_bytes(config: &BackupConfig) -> Result<u64, BackupError> {
    let stat = rustix::fs::statvfs(&config.dir)
        .map_err(|e| BackupError::io("reading free space of", &config.dir, e.into()))?;
    let disk_free = stat.f_bavail.saturating_mul(stat.f_frsize);
    Ok(match config.max_bytes {
        Some(max) => disk_free.min(max.saturating_sub(dir_size(&config.dir)?)),
        None => disk_free,
    })
}

/// Refuses unless `free_space_factor × database_bytes` fit in `config.dir`.
pub fn check(config: &BackupConfig, database: &str, database_bytes: u64) -> Result<u64, BackupError> {
    let free = available_bytes(config)?;
    let needed = (database_bytes as f64 * config.free_space_factor).ceil() as u64;
    if free < needed {
        return Err(BackupError::NotEnoughSpace {
            database: database.to_owned(),
            dir: config.dir.clone(),
            free,
            database_bytes,
            factor: config.free_space_factor,
            needed,
        });
    }
    Ok(free)
}

/// Total size of the files under `dir`.
pub fn dir_size(dir: &Path) -> Result<u64, BackupError> {
    let mut total = 0;
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(BackupError::io("listing", dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| BackupError::io("listing", dir, e))?;
        let kind = entry.file_type().map_err(|e| BackupError::io("reading", entry.path(), e))?;
        if kind.is_dir() {
            total += dir_size(&entry.path())?;
        } else if kind.is_file() {
            total += entry.metadata().map_err(|e| BackupError::io("reading", entry.path(), e))?.len();
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_limits_free_space() {
        let tmp = tempfile::tempdir().expect("tempdir");
        std::fs::write(tmp.path().join("old"), vec![0u8; 1000]).expect("write");
        let mut config = BackupConfig::new(tmp.path());
        config.max_bytes = Some(5000);
        assert_eq!(available_bytes(&config).expect("free"), 4000);
        let err = check(&config, "app", 2001).expect_err("too small");
        assert!(err.to_string().contains("4000 bytes free"), "{err}");
        check(&config, "app", 2000).expect("fits");
    }
}
