//! Reading a Prisma migrations folder from disk into a [`Bundle`].
//!
//! The CLI uses this for local mode and for `rollout start`; the rules match
//! what [`runway_proto::bundle`] checks on the receiving side, plus the ones
//! only a filesystem can break (symlinks, special files, huge files).

use std::fs;
use std::path::{Path, PathBuf};

use runway_proto::bundle::{self, BundleError, DOWN_FILE, LOCK_FILE, MAX_FILE_BYTES, MIGRATION_FILE};
use runway_proto::v1::{Bundle, BundleFile};

/// Why a migrations folder could not be read. Never worth retrying as is:
/// the folder must change.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("migrations folder {0} does not exist")]
    NotFound(PathBuf),
    #[error("{0} is not a directory; point --migrations at the folder holding the migration folders")]
    NotADirectory(PathBuf),
    #[error("cannot read {path}: {error}")]
    Io { path: PathBuf, error: std::io::Error },
    #[error("migration folder {0:?} has no migration.sql")]
    MissingMigrationSql(String),
    #[error("{path} is a symlink to {target}, which is outside the migrations folder")]
    SymlinkEscapes { path: PathBuf, target: PathBuf },
    #[error("{0} is not a regular file or directory")]
    NotRegular(PathBuf),
    #[error("{path} is {size} bytes; the limit is {limit} bytes")]
    TooLarge { path: PathBuf, size: u64, limit: usize },
    #[error("{0:?} is not a valid UTF-8 name")]
    BadName(PathBuf),
    #[error("migrations folder {0} holds no migrations")]
    Empty(PathBuf),
    #[error(transparent)]
    Bundle(#[from] BundleError),
}

/// Reads `dir` (e.g. `prisma/migrations`) and returns it as a checked,
/// digest-stamped bundle.
///
/// Takes `migration_lock.toml`, every `<folder>/migration.sql` and its
/// `down.sql` when there is one; other
/// files and names starting with `.` are left out. Symlinks are followed
/// only while they stay inside `dir`.
pub fn read_folder(dir: &Path) -> Result<Bundle, SourceError> {
    let root = match fs::canonicalize(dir) {
        Ok(root) => root,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(SourceError::NotFound(dir.into())),
        Err(error) => return Err(SourceError::Io { path: dir.into(), error }),
    };
    if !root.is_dir() {
        return Err(SourceError::NotADirectory(dir.into()));
    }

    let mut files = Vec::new();
    let mut entries = read_dir_sorted(dir)?;
    entries.retain(|(name, _)| !name.starts_with('.'));
    for (name, path) in entries {
        let kind = resolve(&root, &path)?;
        match kind {
            Kind::File if name == LOCK_FILE => {
                files.push(BundleFile { path: name, content: read_limited(&path)? });
            }
            Kind::File => {}
            Kind::Dir => {
                let sql = path.join(MIGRATION_FILE);
                match fs::symlink_metadata(&sql) {
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        return Err(SourceError::MissingMigrationSql(name));
                    }
                    Err(error) => return Err(SourceError::Io { path: sql, error }),
                    Ok(_) => {}
                }
                if resolve(&root, &sql)? != Kind::File {
                    return Err(SourceError::NotRegular(sql));
                }
                files.push(BundleFile {
                    path: format!("{name}/{MIGRATION_FILE}"),
                    content: read_limited(&sql)?,
                });
                let down = path.join(DOWN_FILE);
                if fs::symlink_metadata(&down).is_ok() {
                    if resolve(&root, &down)? != Kind::File {
                        return Err(SourceError::NotRegular(down));
                    }
                    files.push(BundleFile {
                        path: format!("{name}/{DOWN_FILE}"),
                        content: read_limited(&down)?,
                    });
                }
            }
        }
    }
    if !files.iter().any(|f| f.path.ends_with(&format!("/{MIGRATION_FILE}"))) {
        return Err(SourceError::Empty(dir.into()));
    }
    Ok(bundle::pack(files)?)
}

#[derive(Debug, PartialEq, Eq)]
enum Kind {
    File,
    Dir,
}

fn read_dir_sorted(dir: &Path) -> Result<Vec<(String, PathBuf)>, SourceError> {
    let io = |error| SourceError::Io { path: dir.into(), error };
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let path = entry.path();
        let name = entry.file_name().into_string().map_err(|_| SourceError::BadName(path.clone()))?;
        out.push((name, path));
    }
    out.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    Ok(out)
}

/// What `path` is once symlinks are followed; errors when a symlink leads
/// outside `root` or to something that is neither a file nor a directory.
fn resolve(root: &Path, path: &Path) -> Result<Kind, SourceError> {
    let io = |error| SourceError::Io { path: path.into(), error };
    let meta = fs::symlink_metadata(path).map_err(io)?;
    let meta = if meta.file_type().is_symlink() {
        let target = fs::canonicalize(path).map_err(io)?;
        if !target.starts_with(root) {
            return Err(SourceError::SymlinkEscapes { path: path.into(), target });
        }
        fs::metadata(&target).map_err(io)?
    } else {
        meta
    };
    if meta.is_file() {
        Ok(Kind::File)
    } else if meta.is_dir() {
        Ok(Kind::Dir)
    } else {
        Err(SourceError::NotRegular(path.into()))
    }
}

fn read_limited(path: &Path) -> Result<Vec<u8>, SourceError> {
    let io = |error| SourceError::Io { path: path.into(), error };
    let size = fs::metadata(path).map_err(io)?.len();
    if size > MAX_FILE_BYTES as u64 {
        return Err(SourceError::TooLarge { path: path.into(), size, limit: MAX_FILE_BYTES });
    }
    fs::read(path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, rel: &str, content: &[u8]) {
        let path = dir.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, content).unwrap();
    }

    #[test]
    fn reads_a_folder_in_byte_order_with_odd_names() {
        let tmp = tempfile::tempdir().unwrap();
        write(tmp.path(), "20240101000000_init/migration.sql", b"create table a (id int);");
        write(tmp.path(), "2024 02 add things/migration.sql", b"select 1;");
        write(tmp.path(), "0_baseline/migration.sql", b"select 0;");
        write(tmp.path(), "0_baseline/README.md", b"notes");
        write(tmp.path(), LOCK_FILE, b"provider = \"postgresql\"\n");
        write(tmp.path(), ".DS_Store", b"junk");
        let bundle = read_folder(tmp.path()).unwrap();
        let names: Vec<_> = bundle::migrations(&bundle).unwrap().into_iter().map(|m| m.name).collect();
        assert_eq!(names, ["0_baseline", "2024 02 add things", "20240101000000_init"]);
    }

    #[test]
    fn rejects_bad_folders_naming_the_entry() {
        let tmp = tempfile::tempdir().unwrap();
        let missing = tmp.path().join("nope");
        assert!(matches!(read_folder(&missing), Err(SourceError::NotFound(_))));

        write(tmp.path(), "a/migration.sql", b"select 1;");
        fs::create_dir(tmp.path().join("b_empty")).unwrap();
        let err = read_folder(tmp.path()).unwrap_err();
        assert!(matches!(&err, SourceError::MissingMigrationSql(name) if name == "b_empty"), "{err}");
        assert!(err.to_string().contains("b_empty"));
        fs::remove_dir(tmp.path().join("b_empty")).unwrap();

        write(tmp.path(), "c/migration.sql", &[0x66, 0xff]);
        let err = read_folder(tmp.path()).unwrap_err();
        assert!(err.to_string().contains("c/migration.sql") && err.to_string().contains("UTF-8"), "{err}");
        fs::remove_dir_all(tmp.path().join("c")).unwrap();

        let outside = tempfile::tempdir().unwrap();
        write(outside.path(), "evil.sql", b"drop table users;");
        fs::create_dir(tmp.path().join("d")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("evil.sql"), tmp.path().join("d/migration.sql"))
            .unwrap();
        let err = read_folder(tmp.path()).unwrap_err();
        assert!(matches!(err, SourceError::SymlinkEscapes { .. }), "{err}");
        fs::remove_dir_all(tmp.path().join("d")).unwrap();

        // A symlink that stays inside is fine.
        fs::create_dir(tmp.path().join("e")).unwrap();
        std::os::unix::fs::symlink(tmp.path().join("a/migration.sql"), tmp.path().join("e/migration.sql"))
            .unwrap();
        read_folder(tmp.path()).unwrap();

        write(tmp.path(), "f/migration.sql", &vec![b' '; MAX_FILE_BYTES + 1]);
        assert!(matches!(read_folder(tmp.path()), Err(SourceError::TooLarge { .. })));
        fs::remove_dir_all(tmp.path().join("f")).unwrap();

        write(tmp.path(), LOCK_FILE, b"provider = \"mysql\"");
        assert!(matches!(
            read_folder(tmp.path()),
            Err(SourceError::Bundle(BundleError::WrongProvider { .. }))
        ));
    }

    #[test]
    fn rejects_a_file_instead_of_a_folder() {
        let tmp = tempfile::tempdir().unwrap();
        write(tmp.path(), "x.sql", b"select 1;");
        assert!(matches!(read_folder(&tmp.path().join("x.sql")), Err(SourceError::NotADirectory(_))));
        assert!(matches!(read_folder(tmp.path()), Err(SourceError::Empty(_))));
    }
}
