//! Backups: `pg_dump` streamed through SHA-256 into the backup dir, with a manifest.
//!
//! INTERFACE CONTRACT (the rest of the agent and the CLI call only these):
//! - [`BackupConfig`]: the `[backup]` table of the agent config.
//! - [`create`]: take a backup, returning its manifest.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::progress::Progress;

/// `[backup]` in the agent config.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BackupConfig {
    /// Where backups are written; one folder per backup.
    pub dir: PathBuf,
    /// Folder holding pg_dump / pg_restore; empty searches PATH.
    #[serde(default)]
    pub pg_bin_dir: Option<PathBuf>,
}

/// Written next to every dump as `manifest.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub database: String,
    pub path: PathBuf,
    pub sha256: String,
    pub bytes: u64,
}

/// Why a backup failed.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{0}")]
    Other(String),
}

/// Takes a backup of `database_url` into a new folder under `config.dir`.
pub async fn create(
    database_url: &str,
    config: &BackupConfig,
    label: &str,
    rollout_id: &str,
    progress: &Progress,
) -> Result<Manifest, BackupError> {
    let _ = (database_url, config, label, rollout_id, progress);
    Err(BackupError::Other("backups are being written".into()))
}
