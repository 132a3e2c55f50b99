//! Checking a backup folder against its manifest: the file set and every
//! file's SHA-256 re-read from disk. Shared by verify and restore (which
//! checks before it touches a database).

use std::path::Path;

use super::config::DumpFormat;
use super::error::BackupError;
use super::manifest::{Manifest, files_digest};
use super::stream::{ByteMeter, hash_file};
use crate::progress::Progress;

/// Re-reads every file of the dump in `backup_dir` and compares names, sizes
/// and SHA-256 with the manifest. Returns the bytes checked.
pub async fn check_files(
    backup_dir: &Path,
    manifest: &Manifest,
    progress: &Progress,
) -> Result<u64, BackupError> {
    let dir = backup_dir.to_owned();
    let manifest = manifest.clone();
    let progress = progress.clone();
    tokio::task::spawn_blocking(move || check_files_blocking(&dir, &manifest, &progress))
        .await
        .map_err(|e| BackupError::Internal(format!("checksum task: {e}")))?
}

fn check_files_blocking(
    backup_dir: &Path,
    manifest: &Manifest,
    progress: &Progress,
) -> Result<u64, BackupError> {
    let dump = manifest.dump_path(backup_dir);
    let incomplete = |problem: String| BackupError::Incomplete { dir: backup_dir.to_owned(), problem };
    match manifest.format {
        DumpFormat::Directory => {
            if !dump.is_dir() {
                return Err(incomplete(format!("{} is not a directory", dump.display())));
            }
            let mut on_disk: Vec<String> = std::fs::read_dir(&dump)
                .map_err(|e| BackupError::io("listing", &dump, e))?
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            on_disk.sort();
            let mut listed: Vec<String> = manifest.files.iter().map(|f| f.name.clone()).collect();
            listed.sort();
            let missing: Vec<&String> = listed.iter().filter(|n| !on_disk.contains(n)).collect();
            let extra: Vec<&String> = on_disk.iter().filter(|n| !listed.contains(n)).collect();
            if !missing.is_empty() || !extra.is_empty() {
                return Err(incomplete(format!(
                    "files missing: {missing:?}, files not in the manifest: {extra:?}"
                )));
            }
            if files_digest(&manifest.files) != manifest.sha256 {
                return Err(BackupError::Manifest {
                    path: backup_dir.join(super::manifest::MANIFEST_NAME),
                    error: "the file list does not match the manifest's sha256".into(),
                });
            }
        }
        _ => {
            if !dump.is_file() {
                return Err(incomplete(format!("{} is missing", dump.display())));
            }
            if manifest.files.len() != 1 || manifest.files[0].sha256 != manifest.sha256 {
                return Err(BackupError::Manifest {
                    path: backup_dir.join(super::manifest::MANIFEST_NAME),
                    error: "a custom-format manifest must list exactly its one dump file".into(),
                });
            }
        }
    }
    let mut meter = ByteMeter::new(progress, "checksum", "checked", manifest.bytes);
    for entry in &manifest.files {
        let path = manifest.file_path(backup_dir, entry);
        let (bytes, sha256) = hash_file(&path, &mut meter)?;
        if bytes != entry.bytes || sha256 != entry.sha256 {
            return Err(BackupError::ChecksumMismatch {
                file: path,
                expected: entry.sha256.clone(),
                actual: sha256,
                expected_bytes: entry.bytes,
                actual_bytes: bytes,
            });
        }
    }
    meter.finish();
    Ok(meter.done())
}
