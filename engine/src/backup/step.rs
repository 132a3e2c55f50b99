//! The rollout's backup step: take the backup, prove it restorable, copy it
//! off the host. The migration runs only after all three succeeded.

use serde::Serialize;
use tracing::Instrument;

use super::config::BackupConfig;
use super::config::Proof;
use super::error::BackupError;
use super::manifest::Manifest;
use super::remote::{self, UploadReport};
use super::verify::{VerifyReport, written};
use crate::progress::Progress;

/// What the backup step did; the command's result detail.
#[derive(Debug, Serialize)]
pub struct StepReport {
    pub manifest: Manifest,
    pub verify: VerifyReport,
    /// Present when `[backup.object_store]` is configured.
    pub upload: Option<UploadReport>,
    /// When the backup is proven restorable: `in_window` (done: see the
    /// manifest's `verification`), `background` (the rollout proves it
    /// after the window) or `none`.
    pub proof: Proof,
}

/// create (with the test restore streamed alongside when the backup is to
/// be proven in the window) → the archive's table of contents → upload and
/// prune remote copies when object storage is configured.
pub async fn run_step(
    database_url: &str,
    config: &BackupConfig,
    environment: &str,
    label: &str,
    rollout_id: &str,
    progress: &Progress,
) -> Result<StepReport, BackupError> {
    let database_bytes = super::space::database_size(database_url).await.unwrap_or(0);
    let proof = config.proof_for(environment, database_bytes);
    progress.emit(
        "proof",
        match proof {
            Proof::InWindow => "test restore in the window, alongside the dump (test_restore)",
            Proof::Background => "test restore after the window (test_restore); the rollout waits for it",
            Proof::None => "no test restore (test_restore)",
        },
    );
    let test_restore = (proof == Proof::InWindow).then_some(database_url);
    let manifest = super::create_with(database_url, config, label, rollout_id, test_restore, progress)
        .instrument(db_span("pg_dump", database_url))
        .await?;
    let dir = config.backup_dir(&manifest.id);
    let verify =
        written(&dir, config, &manifest, progress).instrument(db_span("verify", database_url)).await?;
    let upload = match &config.object_store {
        Some(_) => {
            let upload = async {
                let report = remote::upload(&dir, config, progress).await?;
                remote::prune(config, &manifest.database, progress).await?;
                Ok::<_, BackupError>(report)
            };
            Some(upload.instrument(tracing::info_span!("upload")).await?)
        }
        None => None,
    };
    Ok(StepReport { manifest, verify, upload, proof })
}

/// A span for work on the database of `database_url` (no credentials: the
/// database's name only).
fn db_span(name: &'static str, database_url: &str) -> tracing::Span {
    let database =
        crate::database::Database::parse(database_url).map(|d| d.name().to_owned()).unwrap_or_default();
    tracing::info_span!("backup", otel.name = name, "db.system" = "postgresql", "db.namespace" = %database)
}
