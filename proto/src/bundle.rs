//! The migration bundle: a Prisma migrations folder packed as paths and bytes.
//!
//! A bundle holds `<migration>/migration.sql` files, optionally a
//! `<migration>/down.sql` beside each (the script that undoes it, as
//! Prisma's documented recipe writes it) and a top-level
//! `migration_lock.toml`. The digest covers every file, so an operator's
//! signature over it covers the downs too. Migrations are ordered by the byte order
//! of their folder names, the way Prisma orders them. The same checks run in
//! the CLI (when packing), the coordinator (when a rollout starts) and the
//! agent (before it touches a database).

use sha2::{Digest, Sha256};

use crate::v1::{Bundle, BundleFile};

/// Largest single file a bundle may carry.
pub const MAX_FILE_BYTES: usize = 4 * 1024 * 1024;
/// Largest bundle, protobuf-encoded (see [`size`]): what the CLI packs,
/// what every gRPC hop that carries a bundle accepts (see
/// [`MAX_MESSAGE_BYTES`]). A coordinator may accept less
/// (`max_bundle_bytes`). The coordinator keeps bundles in etcd in chunks
/// below etcd's request limit, so this is not bounded by it.
pub const MAX_BUNDLE_BYTES: usize = 64 * 1024 * 1024;
/// Largest gRPC message any runway server or client encodes or decodes: a
/// bundle of [`MAX_BUNDLE_BYTES`] plus the request or command around it.
/// Set explicitly on every channel that carries a bundle (operator API,
/// agent stream, CLI) so no hop falls back to tonic's 4 MiB default.
pub const MAX_MESSAGE_BYTES: usize = MAX_BUNDLE_BYTES + 4 * 1024 * 1024;

/// The file Prisma writes next to the migration folders.
pub const LOCK_FILE: &str = "migration_lock.toml";
/// The one file every migration folder must hold.
pub const MIGRATION_FILE: &str = "migration.sql";
/// The optional file that undoes a migration (`prisma migrate diff
/// --from-migrations … --to-schema-datamodel … --script` writes one).
pub const DOWN_FILE: &str = "down.sql";

/// Why a bundle was rejected. Never worth retrying: the input must change.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BundleError {
    #[error("bundle holds no migrations")]
    Empty,
    #[error("bundle entry {path:?}: {reason}")]
    BadPath { path: String, reason: &'static str },
    #[error("bundle entry {path:?} is {size} bytes; the limit is {limit} bytes")]
    TooLarge { path: String, size: usize, limit: usize },
    #[error(
        "bundle is {size} bytes in total; the limit is {limit} bytes (split the migrations across rollouts, or squash old ones)"
    )]
    BundleTooLarge { size: usize, limit: usize },
    #[error("bundle entry {path:?} is not valid UTF-8 (at byte {offset})")]
    NotUtf8 { path: String, offset: usize },
    #[error("migration folder {folder:?} has no migration.sql")]
    MissingMigrationSql { folder: String },
    #[error("bundle lists {path:?} twice")]
    Duplicate { path: String },
    #[error(
        "migration_lock.toml names provider {provider:?}; runway only migrates PostgreSQL (provider = \"postgresql\")"
    )]
    WrongProvider { provider: String },
    #[error(
        "bundle digest is {actual} but the bundle says {claimed}; it was changed or corrupted in transit"
    )]
    DigestMismatch { claimed: String, actual: String },
}

/// One migration of a bundle, in apply order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationFile {
    /// The folder name, which is the migration's name in `_prisma_migrations`.
    pub name: String,
    /// The file's exact bytes (checksums are computed over these).
    pub sql: String,
    /// `down.sql` of the same folder: the SQL that undoes `sql`, if any.
    pub down: Option<String>,
}

/// Digest naming a bundle: lowercase hex SHA-256 over every file sorted by
/// path, each as path, a NUL byte, the content length (u64 LE), the content.
pub fn digest(files: &[BundleFile]) -> String {
    let mut sorted: Vec<&BundleFile> = files.iter().collect();
    sorted.sort_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
    let mut hasher = Sha256::new();
    for file in sorted {
        hasher.update(file.path.as_bytes());
        hasher.update([0u8]);
        hasher.update((file.content.len() as u64).to_le_bytes());
        hasher.update(&file.content);
    }
    hex::encode(hasher.finalize())
}

/// A bundle's size as it travels and is stored: its protobuf encoding's
/// length (file bytes plus paths and framing).
pub fn size(bundle: &Bundle) -> usize {
    prost::Message::encoded_len(bundle)
}

/// Refuses a bundle over `limit` bytes (see [`size`]).
pub fn check_size(bundle: &Bundle, limit: usize) -> Result<(), BundleError> {
    let size = size(bundle);
    if size > limit {
        return Err(BundleError::BundleTooLarge { size, limit });
    }
    Ok(())
}

/// Builds a bundle from files and stamps its digest, after checking it.
pub fn pack(files: Vec<BundleFile>) -> Result<Bundle, BundleError> {
    let digest = digest(&files);
    let bundle = Bundle { files, digest };
    migrations(&bundle)?;
    Ok(bundle)
}

/// Checks a bundle (digest, paths, sizes, encoding, layout) and returns its
/// migrations in apply order.
pub fn migrations(bundle: &Bundle) -> Result<Vec<MigrationFile>, BundleError> {
    let actual = digest(&bundle.files);
    if actual != bundle.digest {
        return Err(BundleError::DigestMismatch { claimed: bundle.digest.clone(), actual });
    }
    check_size(bundle, MAX_BUNDLE_BYTES)?;

    let mut migrations = Vec::new();
    let mut downs = std::collections::BTreeMap::new();
    let mut seen = std::collections::BTreeSet::new();
    let mut folders = std::collections::BTreeSet::new();
    for file in &bundle.files {
        let path = file.path.as_str();
        check_path(path)?;
        if !seen.insert(path) {
            return Err(BundleError::Duplicate { path: path.to_owned() });
        }
        if file.content.len() > MAX_FILE_BYTES {
            return Err(BundleError::TooLarge {
                path: path.to_owned(),
                size: file.content.len(),
                limit: MAX_FILE_BYTES,
            });
        }
        let text = std::str::from_utf8(&file.content)
            .map_err(|e| BundleError::NotUtf8 { path: path.to_owned(), offset: e.valid_up_to() })?;
        let parts: Vec<&str> = path.split('/').collect();
        match parts.as_slice() {
            [LOCK_FILE] => check_lock_file(text)?,
            [folder, MIGRATION_FILE] => {
                folders.insert(*folder);
                migrations.push(MigrationFile {
                    name: (*folder).to_owned(),
                    sql: text.to_owned(),
                    down: None,
                });
            }
            [folder, DOWN_FILE] => {
                folders.insert(*folder);
                downs.insert(*folder, text.to_owned());
            }
            [folder, ..] if parts.len() >= 2 => {
                // Other files inside a migration folder (READMEs, down
                // scripts) travel along but are not applied.
                folders.insert(*folder);
            }
            _ => {}
        }
    }
    let with_sql: std::collections::BTreeSet<&str> = migrations.iter().map(|m| m.name.as_str()).collect();
    if let Some(folder) = folders.iter().find(|folder| !with_sql.contains(*folder)) {
        return Err(BundleError::MissingMigrationSql { folder: (*folder).to_owned() });
    }
    if migrations.is_empty() {
        return Err(BundleError::Empty);
    }
    for m in &mut migrations {
        m.down = downs.remove(m.name.as_str());
    }
    migrations.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
    Ok(migrations)
}

fn check_path(path: &str) -> Result<(), BundleError> {
    let bad = |reason| Err(BundleError::BadPath { path: path.to_owned(), reason });
    if path.is_empty() {
        return bad("empty path");
    }
    if path.starts_with('/') {
        return bad("absolute paths are not allowed");
    }
    if path.contains('\\') || path.contains('\0') {
        return bad("paths use '/' separators and no NUL bytes");
    }
    if path.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
        return bad("path escapes the migrations folder or has empty, '.' or '..' parts");
    }
    Ok(())
}

/// `migration_lock.toml` as Prisma writes it: `provider = "postgresql"`.
fn check_lock_file(text: &str) -> Result<(), BundleError> {
    for line in text.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("provider") {
            let value = rest.trim_start().trim_start_matches('=').trim().trim_matches('"');
            if value != "postgresql" && value != "postgres" {
                return Err(BundleError::WrongProvider { provider: value.to_owned() });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, content: &str) -> BundleFile {
        BundleFile { path: path.into(), content: content.as_bytes().to_vec() }
    }

    #[test]
    fn orders_by_byte_order_of_folder_names() {
        let bundle = pack(vec![
            file("20240102_b/migration.sql", "select 2;"),
            file("2024 01 01 init/migration.sql", "select 1;"),
            file("1_first/migration.sql", "select 0;"),
            file(LOCK_FILE, "provider = \"postgresql\"\n"),
        ])
        .unwrap();
        let names: Vec<_> = migrations(&bundle).unwrap().into_iter().map(|m| m.name).collect();
        assert_eq!(names, ["1_first", "2024 01 01 init", "20240102_b"]);
    }

    #[test]
    fn digest_ignores_file_order_but_not_content() {
        let a = vec![file("a/migration.sql", "x"), file("b/migration.sql", "y")];
        let b = vec![file("b/migration.sql", "y"), file("a/migration.sql", "x")];
        let c = vec![file("a/migration.sql", "x"), file("b/migration.sql", "z")];
        assert_eq!(digest(&a), digest(&b));
        assert_ne!(digest(&a), digest(&c));
    }

    #[test]
    fn rejects_bad_bundles_naming_the_entry() {
        let escape = pack(vec![file("../etc/migration.sql", "x")]).unwrap_err();
        assert!(matches!(escape, BundleError::BadPath { ref path, .. } if path == "../etc/migration.sql"));
        let missing = pack(vec![file("a/migration.sql", "x"), file("b/notes.md", "y")]).unwrap_err();
        assert_eq!(missing, BundleError::MissingMigrationSql { folder: "b".into() });
        let provider =
            pack(vec![file("a/migration.sql", "x"), file(LOCK_FILE, "provider = \"mysql\"")]).unwrap_err();
        assert_eq!(provider, BundleError::WrongProvider { provider: "mysql".into() });
        let binary =
            pack(vec![BundleFile { path: "a/migration.sql".into(), content: vec![0x66, 0xff] }]).unwrap_err();
        assert_eq!(binary, BundleError::NotUtf8 { path: "a/migration.sql".into(), offset: 1 });
        assert_eq!(pack(vec![]).unwrap_err(), BundleError::Empty);
    }

    #[test]
    fn a_bundle_over_the_limit_is_refused_naming_its_size_and_the_limit() {
        let bundle = pack(vec![file("a/migration.sql", &"x".repeat(1000))]).unwrap();
        let size = size(&bundle);
        assert!(size > 1000, "paths and framing count: {size}");
        check_size(&bundle, size).unwrap();
        let error = check_size(&bundle, size - 1).unwrap_err();
        assert_eq!(error, BundleError::BundleTooLarge { size, limit: size - 1 });
        assert!(error.to_string().contains(&format!("{size} bytes")), "{error}");
    }

    #[test]
    fn detects_tampering() {
        let mut bundle = pack(vec![file("a/migration.sql", "select 1;")]).unwrap();
        bundle.files[0].content = b"drop table users;".to_vec();
        assert!(matches!(migrations(&bundle), Err(BundleError::DigestMismatch { .. })));
    }
}
