//! `.partial-<id>` folders: a backup being written (or downloaded) before
//! it is renamed into place under its id.
//!
//! The process writing one holds an exclusive `flock` on the folder for as
//! long as it exists under that name. The kernel drops the lock when the
//! process dies, also by SIGKILL, so [`remove_abandoned`] can tell a folder
//! nobody writes any more from one another process (the CLI, a second
//! agent on the same dir) is writing right now.

use std::fs::File;
use std::path::{Path, PathBuf};

use rustix::fs::{FlockOperation, flock};

use super::error::BackupError;

/// Prefix of a backup folder still being written; never listed as a backup.
pub const PARTIAL_PREFIX: &str = ".partial-";

/// A `.partial-<id>` folder this process writes: locked while it lives,
/// removed on drop unless [`PartialDir::keep`] was called (after the rename).
pub struct PartialDir {
    path: Option<PathBuf>,
    /// Holds the folder's `flock`; closing it releases the lock.
    _lock: File,
}

impl PartialDir {
    /// Creates `<dir>/.partial-<id>` and locks it. A folder of that name
    /// left by a process that died is removed first; one that another
    /// process holds is an error.
    pub fn create(dir: &Path, id: &str) -> Result<Self, BackupError> {
        let path = dir.join(format!("{PARTIAL_PREFIX}{id}"));
        if path.exists() {
            match lock(&path) {
                Ok(Some(_abandoned)) => {
                    std::fs::remove_dir_all(&path).map_err(|e| BackupError::io("removing", &path, e))?;
                }
                Ok(None) => {
                    return Err(BackupError::Io {
                        op: "creating",
                        path,
                        error: "another process is writing this backup right now; wait for it to finish"
                            .into(),
                    });
                }
                Err(e) => return Err(e),
            }
        }
        std::fs::create_dir(&path).map_err(|e| BackupError::io("creating", &path, e))?;
        match lock(&path)? {
            Some(lock) => Ok(Self { path: Some(path), _lock: lock }),
            None => Err(BackupError::Io {
                op: "locking",
                path,
                error: "another process locked the folder this one just created".into(),
            }),
        }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        self.path.as_deref().expect("a PartialDir has its path until dropped")
    }

    /// The folder was renamed into place: nothing to remove any more.
    pub fn keep(mut self) {
        self.path = None;
    }
}

impl Drop for PartialDir {
    fn drop(&mut self) {
        if let Some(dir) = self.path.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// The folder's exclusive lock, or `None` when another process holds it.
fn lock(path: &Path) -> Result<Option<File>, BackupError> {
    let file = File::open(path).map_err(|e| BackupError::io("opening", path, e))?;
    match flock(&file, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(Some(file)),
        Err(rustix::io::Errno::WOULDBLOCK) => Ok(None),
        Err(e) => Err(BackupError::io("locking", path, e.into())),
    }
}

/// Removes every `.partial-*` folder directly under `dir` whose writer is
/// gone (no process holds its lock); returns the folders removed. Blocking:
/// run it off the async threads.
pub fn remove_abandoned(dir: &Path) -> Result<Vec<PathBuf>, BackupError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(BackupError::io("listing", dir, e)),
    };
    let mut removed = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| BackupError::io("listing", dir, e))?;
        let is_partial = entry.file_name().to_string_lossy().starts_with(PARTIAL_PREFIX);
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if !(is_partial && is_dir) {
            continue;
        }
        let path = entry.path();
        // Held until the folder is gone, so no writer can start in it meanwhile.
        let Some(_lock) = lock(&path)? else {
            tracing::info!(folder = %path.display(), "kept a partial backup folder another process is writing");
            continue;
        };
        std::fs::remove_dir_all(&path).map_err(|e| BackupError::io("removing", &path, e))?;
        tracing::info!(folder = %path.display(), "removed a partial backup folder left by a backup that did not finish");
        removed.push(path);
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_abandoned_folder_goes_a_locked_one_stays() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let abandoned = tmp.path().join(".partial-app-1");
        std::fs::create_dir_all(abandoned.join("dump")).expect("mkdir");
        std::fs::write(abandoned.join("dump/toc.dat"), b"x").expect("write");
        let writing = PartialDir::create(tmp.path(), "app-2").expect("create");
        std::fs::create_dir(tmp.path().join("app-3")).expect("a backup");

        let removed = remove_abandoned(tmp.path()).expect("sweep");
        assert_eq!(removed, std::slice::from_ref(&abandoned));
        assert!(!abandoned.exists());
        assert!(writing.path().exists(), "a folder being written stays");
        assert!(tmp.path().join("app-3").exists(), "backups stay");
        // A second writer of the same id is refused while the first holds it.
        assert!(PartialDir::create(tmp.path(), "app-2").is_err());

        let path = writing.path().to_owned();
        drop(writing);
        assert!(!path.exists(), "removed on drop");
        let kept = PartialDir::create(tmp.path(), "app-4").expect("create");
        let path = kept.path().to_owned();
        kept.keep();
        assert!(path.exists(), "kept after keep()");
    }

    #[test]
    fn a_missing_dir_has_nothing_to_sweep() {
        assert!(remove_abandoned(Path::new("/nonexistent/runway")).expect("sweep").is_empty());
    }
}
