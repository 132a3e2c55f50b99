//! [`Manifest`]: `manifest.json`, written next to every dump.
//!
//! A backup is one folder: `<dir>/<id>/manifest.json` plus the dump, named
//! [`DUMP_NAME`] (a file for custom format, a folder for directory format).

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::config::DumpFormat;
use super::error::BackupError;

/// File name of the manifest inside a backup folder.
pub const MANIFEST_NAME: &str = "manifest.json";
/// Name of the dump (file or folder) inside a backup folder.
pub const DUMP_NAME: &str = "dump";
/// Bumped when the manifest changes incompatibly.
pub const MANIFEST_VERSION: u32 = 1;

/// Written next to every dump as `manifest.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`MANIFEST_VERSION`] of the writer.
    pub manifest_version: u32,
    /// Backup name, also its folder name and object-store key prefix.
    pub id: String,
    /// Database name.
    pub database: String,
    /// Where the dump was written on the host that made it (file or folder).
    /// Readers use the backup folder + [`Manifest::dump`] instead, since
    /// backups move (downloads, copies).
    pub path: PathBuf,
    /// Dump name relative to the backup folder ([`DUMP_NAME`]).
    pub dump: String,
    /// `custom` or `directory`.
    pub format: DumpFormat,
    /// Custom format: SHA-256 (hex) of the dump file. Directory format:
    /// SHA-256 of the file list (see [`files_digest`]).
    pub sha256: String,
    /// Total bytes of the dump.
    pub bytes: u64,
    /// Every file of the dump with its size and SHA-256 (one entry for custom format).
    pub files: Vec<FileEntry>,
    /// `pg_database_size` when the backup started.
    pub database_bytes: u64,
    /// `server_version` of the database server.
    pub server_version: String,
    /// `pg_dump --version`.
    pub pg_dump_version: String,
    /// Parallel jobs pg_dump used.
    pub jobs: u32,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    /// The rollout that took this backup; empty for manual backups.
    pub rollout_id: String,
    pub label: String,
    /// Migrations applied at the snapshot (`_prisma_migrations`, finished and
    /// not rolled back), in the order they finished.
    pub migrations: Vec<AppliedMigration>,
    /// Row count of every table, in the dump's own snapshot.
    pub tables: Vec<TableRows>,
    /// How `tables` was counted: `dump` (the rows of the dump itself, read
    /// while it was written) or `snapshot` (`count(*)` in the dump's
    /// snapshot). Empty in manifests written before runway recorded it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub rows_counted_in: String,
    /// The proof that this backup restores: set once a test restore of it
    /// matched the manifest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<Verification>,
}

/// A test restore that proved a backup restorable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verification {
    /// `overlapped`: restored while pg_dump wrote it, before the backup was
    /// final; `after_dump`: restored once the dump was complete, in the
    /// same step; `background`: after the rollout's maintenance window;
    /// `on_demand`: `runway backup verify --test-restore`.
    pub when: String,
    /// Whether pg_restore's post-data section (indexes, constraints,
    /// triggers) ran in the scratch database: `restored` or `skipped`
    /// (policy `test_restore_post_data`).
    pub post_data: String,
    /// The scratch database (dropped afterwards).
    pub scratch_database: String,
    /// Tables and rows found in the scratch database, equal to the manifest's.
    pub tables: usize,
    pub rows: i64,
    /// SHA-256 of the bytes pg_restore read: the manifest's own.
    pub sha256: String,
    pub verified_at: DateTime<Utc>,
    /// Wall time of the test restore (for `overlapped`, from pg_dump's start).
    pub seconds: f64,
}

/// One file of a dump.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Path relative to the dump (`dump` itself for custom format is `""`).
    pub name: String,
    pub bytes: u64,
    pub sha256: String,
}

/// A migration already applied when the backup was taken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedMigration {
    pub name: String,
    /// Prisma's checksum column.
    pub checksum: String,
    pub finished_at: Option<DateTime<Utc>>,
}

/// Rows of one table in the backup's snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableRows {
    pub schema: String,
    pub table: String,
    pub rows: i64,
}

impl TableRows {
    /// `schema.table`, for messages.
    pub fn qualified(&self) -> String {
        format!("{}.{}", self.schema, self.table)
    }
}

impl Manifest {
    /// Reads `<backup_dir>/manifest.json`.
    pub fn read(backup_dir: &Path) -> Result<Self, BackupError> {
        let path = backup_dir.join(MANIFEST_NAME);
        let bytes = std::fs::read(&path)
            .map_err(|e| BackupError::Manifest { path: path.clone(), error: format!("cannot read: {e}") })?;
        Self::from_slice(&bytes, &path)
    }

    /// Parses a manifest and checks its names (see [`super::names`]); `path`
    /// is only for messages.
    pub fn from_slice(bytes: &[u8], path: &Path) -> Result<Self, BackupError> {
        let manifest: Self = serde_json::from_slice(bytes).map_err(|e| BackupError::Manifest {
            path: path.to_owned(),
            error: format!("not a runway manifest: {e}"),
        })?;
        if manifest.manifest_version > MANIFEST_VERSION {
            return Err(BackupError::Manifest {
                path: path.to_owned(),
                error: format!(
                    "manifest version {} is newer than this runway understands ({MANIFEST_VERSION})",
                    manifest.manifest_version
                ),
            });
        }
        // The names decide where files are read and written: checked here,
        // where every manifest (local or from a bucket) is parsed.
        super::names::check_manifest(&manifest)
            .map_err(|error| BackupError::Manifest { path: path.to_owned(), error })?;
        Ok(manifest)
    }

    /// Writes `<backup_dir>/manifest.json` (write to a temp name, fsync, rename).
    pub fn write(&self, backup_dir: &Path) -> Result<(), BackupError> {
        let path = backup_dir.join(MANIFEST_NAME);
        let tmp = backup_dir.join(format!(".{MANIFEST_NAME}.tmp"));
        let json = self.to_json();
        let write = || -> std::io::Result<()> {
            use std::io::Write;
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(json.as_bytes())?;
            file.sync_all()?;
            std::fs::rename(&tmp, &path)
        };
        write().map_err(|e| BackupError::io("writing manifest", &path, e))
    }

    /// Records `verification` in the manifest of `backup_dir` (rewritten in place).
    pub fn record_verification(backup_dir: &Path, verification: Verification) -> Result<Self, BackupError> {
        let mut manifest = Self::read(backup_dir)?;
        manifest.verification = Some(verification);
        manifest.write(backup_dir)?;
        Ok(manifest)
    }

    /// Pretty JSON with a trailing newline.
    pub fn to_json(&self) -> String {
        let mut json = serde_json::to_string_pretty(self).expect("a manifest always serializes");
        json.push('\n');
        json
    }

    /// The dump inside `backup_dir`.
    pub fn dump_path(&self, backup_dir: &Path) -> PathBuf {
        backup_dir.join(&self.dump)
    }

    /// The file of `entry` inside `backup_dir`.
    pub fn file_path(&self, backup_dir: &Path, entry: &FileEntry) -> PathBuf {
        let dump = self.dump_path(backup_dir);
        if entry.name.is_empty() { dump } else { dump.join(&entry.name) }
    }
}

/// Digest naming a directory-format dump: SHA-256 over `"<sha256>  <name>\n"`
/// lines sorted by name (the `sha256sum` output format, so an operator can
/// recompute it with `sha256sum * | sort -k2 | sha256sum`).
pub fn files_digest(files: &[FileEntry]) -> String {
    let mut sorted: Vec<&FileEntry> = files.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    let mut hasher = Sha256::new();
    for f in sorted {
        hasher.update(format!("{}  {}\n", f.sha256, f.name));
    }
    hex::encode(hasher.finalize())
}

/// A backup id: `<database>-<UTC time>[-<label>]`, limited to `[A-Za-z0-9._-]`
/// so it is safe as a folder name and an object key. Sorting ids of one
/// database sorts them by time.
pub fn backup_id(database: &str, at: DateTime<Utc>, label: &str) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '_' { c } else { '_' })
            .take(64)
            .collect()
    };
    let time = at.format("%Y%m%dT%H%M%S%.3fZ").to_string().replace('.', "");
    let label = clean(label);
    if label.is_empty() {
        format!("{}-{time}", clean(database))
    } else {
        format!("{}-{time}-{label}", clean(database))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_safe_and_sort_by_time() {
        let t1 = DateTime::parse_from_rfc3339("2025-03-01T10:00:00.123Z").expect("time").to_utc();
        let t2 = DateTime::parse_from_rfc3339("2025-03-01T10:00:01.000Z").expect("time").to_utc();
        let a = backup_id("app", t1, "before deploy/42");
        let b = backup_id("app", t2, "");
        assert_eq!(a, "app-20250301T100000123Z-before_deploy_42");
        assert!(a < b);
    }

    #[test]
    fn files_digest_is_order_independent() {
        let a = FileEntry { name: "toc.dat".into(), bytes: 1, sha256: "aa".into() };
        let b = FileEntry { name: "3001.dat.gz".into(), bytes: 2, sha256: "bb".into() };
        assert_eq!(files_digest(&[a.clone(), b.clone()]), files_digest(&[b, a]));
    }
}
