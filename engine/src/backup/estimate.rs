//! What a rollout's backup step is expected to cost, from the last
//! backup's figures: shown by the preflight and `runway rollout plan`.

use serde::Serialize;

use super::config::{BackupConfig, Proof};
use super::error::BackupError;
use super::retention;

/// The backup step a rollout would run now.
#[derive(Debug, Clone, Serialize)]
pub struct Estimate {
    /// When the backup would be proven restorable (policy `test_restore`).
    pub proof: Proof,
    pub database_bytes: u64,
    /// The backup the figures come from (the newest of this database);
    /// `None` when there is none yet.
    pub based_on: Option<String>,
    /// Expected pg_dump time: the last backup's, scaled by database size.
    pub backup_secs: Option<f64>,
    /// Expected test restore time (from the last test restore of this
    /// database, scaled likewise); for a proof in the window, counted from
    /// pg_dump's start, since it runs alongside.
    pub verify_secs: Option<f64>,
    /// What the step keeps the maintenance window busy for: the larger of
    /// the two with a proof in the window, the dump otherwise.
    pub window_secs: Option<f64>,
}

/// The estimate for a backup of `database` (`database_bytes` now) in `environment`.
pub fn estimate(
    config: &BackupConfig,
    environment: &str,
    database: &str,
    database_bytes: u64,
) -> Result<Estimate, BackupError> {
    let proof = config.proof_for(environment, database_bytes);
    let backups = retention::list_local(config)?;
    let newest = backups.iter().rev().find(|b| b.manifest.database == database);
    let scale = |secs: f64, at_bytes: u64| secs * (database_bytes.max(1) as f64 / at_bytes.max(1) as f64);
    let backup_secs = newest.map(|b| {
        let m = &b.manifest;
        scale((m.finished_at - m.started_at).num_milliseconds() as f64 / 1000.0, m.database_bytes)
    });
    let verify_secs =
        backups.iter().rev().filter(|b| b.manifest.database == database).find_map(|b| {
            b.manifest.verification.as_ref().map(|v| scale(v.seconds, b.manifest.database_bytes))
        });
    let window_secs = match proof {
        Proof::InWindow => match (backup_secs, verify_secs) {
            (Some(b), Some(v)) => Some(b.max(v)),
            _ => None,
        },
        _ => backup_secs,
    };
    Ok(Estimate {
        proof,
        database_bytes,
        based_on: newest.map(|b| b.manifest.id.clone()),
        backup_secs,
        verify_secs,
        window_secs,
    })
}
