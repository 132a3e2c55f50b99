//! The names a backup may use: its id (a folder in the backup dir and an
//! object-key segment), its dump and the files of the dump.
//!
//! A manifest read back from object storage (or from a backup folder
//! someone else wrote) decides where files are written: `<backup dir>/<id>/
//! <dump>/<file>`. Every name in it must therefore stay inside that backup:
//! one plain path component each, never `..`, an absolute path, a separator
//! or an empty name. [`check_manifest`] runs whenever a manifest is parsed,
//! so a bad one is refused before a byte is downloaded or read.

use super::config::DumpFormat;
use super::manifest::{MANIFEST_NAME, Manifest};

/// Longest name accepted (the usual file-system limit for one component).
const MAX_NAME: usize = 255;

/// Whether `id` can name a backup: `[A-Za-z0-9._-]`, not starting with `.`
/// (so never `.`, `..` or a hidden work folder), at most 255 bytes. Every id
/// [`super::manifest::backup_id`] makes passes.
pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_NAME
        && !id.starts_with('.')
        && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// Why `name` is not one plain path component, or `None` when it is.
fn plain_name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("is empty")
    } else if name == "." || name == ".." {
        Some("refers to a folder instead of naming a file in it")
    } else if name.contains(['/', '\\']) {
        Some("holds a path separator")
    } else if name.chars().any(char::is_control) {
        Some("holds a control character")
    } else if name.len() > MAX_NAME {
        Some("is longer than 255 bytes")
    } else {
        None
    }
}

/// Checks every name in `manifest`; `Err` says which name and why, for
/// [`super::BackupError::Manifest`].
pub fn check_manifest(manifest: &Manifest) -> Result<(), String> {
    if !is_valid_id(&manifest.id) {
        return Err(format!(
            "backup id {:?} is not a plain name ([A-Za-z0-9._-], not starting with '.'); \
             refusing a manifest that could place files outside its backup",
            manifest.id
        ));
    }
    let dump_problem = plain_name_problem(&manifest.dump).or_else(|| {
        (manifest.dump == MANIFEST_NAME || manifest.dump.starts_with('.')).then_some("is reserved")
    });
    if let Some(problem) = dump_problem {
        return Err(format!(
            "dump name {:?} {problem}; it must be one plain file name inside the backup folder, e.g. \"dump\"; \
             refusing a manifest that could place files outside its backup",
            manifest.dump
        ));
    }
    match manifest.format {
        DumpFormat::Directory => {
            let mut seen = std::collections::BTreeSet::new();
            for entry in &manifest.files {
                if let Some(problem) = plain_name_problem(&entry.name) {
                    return Err(format!(
                        "file name {:?} {problem}; a directory-format dump lists plain file names only \
                         (e.g. \"toc.dat\"); refusing a manifest that could place files outside its backup",
                        entry.name
                    ));
                }
                if !seen.insert(entry.name.as_str()) {
                    return Err(format!("file {:?} is listed twice", entry.name));
                }
            }
        }
        DumpFormat::Custom | DumpFormat::Auto => {
            if let Some(entry) = manifest.files.iter().find(|e| !e.name.is_empty()) {
                return Err(format!(
                    "file name {:?} in a custom-format dump, which is one file and lists its one entry \
                     with the empty name; refusing a manifest that could place files outside its backup",
                    entry.name
                ));
            }
            if manifest.files.len() != 1 {
                return Err("a custom-format manifest must list exactly its one dump file".into());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::manifest::FileEntry;

    fn manifest(format: DumpFormat, dump: &str, files: &[&str]) -> Manifest {
        let json = serde_json::json!({
            "manifest_version": 1, "id": "app-20250301T100000123Z", "database": "app",
            "path": "/b/app/dump", "dump": dump, "format": format, "sha256": "aa", "bytes": 1,
            "files": files.iter().map(|n| FileEntry { name: (*n).to_owned(), bytes: 1, sha256: "aa".into() })
                .collect::<Vec<_>>(),
            "database_bytes": 1, "server_version": "15", "pg_dump_version": "15", "jobs": 1,
            "started_at": "2025-03-01T10:00:00Z", "finished_at": "2025-03-01T10:00:01Z",
            "rollout_id": "", "label": "", "migrations": [], "tables": [],
        });
        serde_json::from_value(json).expect("a manifest")
    }

    #[test]
    fn what_runway_writes_is_accepted() {
        check_manifest(&manifest(DumpFormat::Custom, "dump", &[""])).expect("custom");
        check_manifest(&manifest(DumpFormat::Directory, "dump", &["toc.dat", "3001.dat.gz", "blobs.toc"]))
            .expect("directory");
    }

    #[test]
    fn names_that_leave_the_backup_are_refused() {
        for name in ["../../etc/x", "/etc/x", "a/b", "..", ".", "", "a\\b", "x\n"] {
            let err =
                check_manifest(&manifest(DumpFormat::Directory, "dump", &["toc.dat", name])).expect_err(name);
            assert!(err.contains(&format!("{name:?}")), "{name:?}: {err}");
        }
        for dump in ["../../etc", "/etc", "a/dump", "..", "", "manifest.json", ".hidden"] {
            assert!(check_manifest(&manifest(DumpFormat::Custom, dump, &[""])).is_err(), "{dump:?}");
        }
        // A custom-format dump is one file: its entry has no name.
        assert!(check_manifest(&manifest(DumpFormat::Custom, "dump", &["../x"])).is_err());
        assert!(check_manifest(&manifest(DumpFormat::Custom, "dump", &["", ""])).is_err());
        assert!(check_manifest(&manifest(DumpFormat::Directory, "dump", &["a", "a"])).is_err());
        let mut bad_id = manifest(DumpFormat::Custom, "dump", &[""]);
        bad_id.id = "../escape".into();
        assert!(check_manifest(&bad_id).unwrap_err().contains("backup id"));
    }

    #[test]
    fn ids() {
        assert!(is_valid_id("app-20250301T100000123Z-before_deploy_42"));
        for bad in ["", ".", "..", ".partial-x", "a/b", "../x", "a b", "a\\b"] {
            assert!(!is_valid_id(bad), "{bad:?}");
        }
    }
}
