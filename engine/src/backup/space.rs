//! Free-space checks: where backups go, before pg_dump starts, and on the
//! database server, before a scratch database (a test restore, a
//! replace-mode restore) fills its disk.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

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

/// Free space where the database server keeps a new database, as far as
/// this host can tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerFree {
    /// The server's data directory is on this host: its file system's free bytes.
    Known { dir: PathBuf, free: u64 },
    /// Why it cannot be known from here.
    Unknown(String),
}

/// The free space of `server`'s data directory (where `CREATE DATABASE …
/// TEMPLATE template0` puts a database), when the server runs on this
/// host (a socket directory or a loopback address) and this user may read
/// `data_directory` (superuser or `pg_read_all_settings`).
pub async fn server_free(server: &Database) -> ServerFree {
    if !is_local(server) {
        return ServerFree::Unknown(format!("the server {} is not on this host", server.server()));
    }
    let dir = async {
        let mut conn = super::scratch::connect(server).await?;
        let dir: String = sqlx::query_scalar("SELECT current_setting('data_directory')")
            .fetch_one(&mut conn)
            .await
            .map_err(|e| BackupError::db(server.name(), "reading data_directory", e))?;
        Ok::<_, BackupError>(PathBuf::from(dir))
    };
    let dir = match dir.await {
        Ok(dir) => dir,
        Err(e) => {
            return ServerFree::Unknown(format!(
                "{e}; reading data_directory needs superuser or pg_read_all_settings"
            ));
        }
    };
    // statvfs needs search permission on the parents only, not on the
    // (postgres-owned, 0700) data directory itself.
    match rustix::fs::statvfs(&dir) {
        Ok(stat) => ServerFree::Known { free: stat.f_bavail.saturating_mul(stat.f_frsize), dir },
        Err(e) => ServerFree::Unknown(format!("cannot read the free space of {}: {e}", dir.display())),
    }
}

/// Whether `server` is reached over a Unix socket or a loopback address.
fn is_local(server: &Database) -> bool {
    let options = server.options();
    if options.get_socket().is_some() {
        return true;
    }
    let host = options.get_host().trim_start_matches('[').trim_end_matches(']');
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Refuses with [`BackupError::ServerSpace`] unless the server's data
/// directory has room for a restored copy of `database` (`database_bytes`
/// × `scratch_free_space_factor`), plus `also_needed` when the backup dir
/// is on the same file system (a backup written while its test restore
/// runs). Where the free space cannot be known, says why and goes on.
pub async fn check_server(
    config: &BackupConfig,
    server: &Database,
    database: &str,
    database_bytes: u64,
    also_needed: u64,
    progress: &crate::progress::Progress,
) -> Result<(), BackupError> {
    if config.scratch_free_space_factor == 0.0 {
        return Ok(());
    }
    let (dir, free) = match server_free(server).await {
        ServerFree::Known { dir, free } => (dir, free),
        ServerFree::Unknown(why) => {
            progress.emit("check", format!("free space on the database server not checked: {why}"));
            return Ok(());
        }
    };
    let factor = config.scratch_free_space_factor;
    let same_fs = |a: &Path, b: &Path| match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev(),
        _ => false,
    };
    let also_needed = if same_fs(&dir, &config.dir) { also_needed } else { 0 };
    let needed = ((database_bytes as f64 * factor).ceil() as u64).saturating_add(also_needed);
    if free < needed {
        return Err(BackupError::ServerSpace {
            database: database.to_owned(),
            dir,
            free,
            database_bytes,
            factor,
            also_needed,
            needed,
        });
    }
    progress.emit(
        "check",
        format!(
            "database server: {} free in {}, a restored copy needs about {}",
            super::error::human(free),
            dir.display(),
            super::error::human(needed)
        ),
    );
    Ok(())
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
