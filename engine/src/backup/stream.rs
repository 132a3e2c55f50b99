//! Hashing bytes on their way to disk, and throttled byte progress.
//!
//! - Custom format: pg_dump writes to a pipe; [`pipe_to_file`] reads the pipe,
//!   feeds SHA-256 and writes the file, so every byte is hashed exactly once,
//!   on its way in.
//! - Directory format: pg_dump's parallel workers write the files themselves;
//!   [`DirFollower`] follows each file as it grows and hashes the new bytes
//!   while they are still in the page cache (no second pass after the dump).
//!
//! These are blocking loops; callers run them on `spawn_blocking`.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::error::{BackupError, human};
use super::manifest::FileEntry;
use crate::progress::Progress;

/// Read size of the hashing loops.
const CHUNK: usize = 1 << 20;
/// At most one byte-progress event per this interval.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// Byte counter that reports progress at most once a second, with the rate.
pub struct ByteMeter {
    progress: Progress,
    phase: &'static str,
    verb: &'static str,
    total: u64,
    done: u64,
    started: Instant,
    last: Instant,
}

impl ByteMeter {
    /// `verb` completes "<n> bytes <verb>", e.g. `written`, `checked`.
    pub fn new(progress: &Progress, phase: &'static str, verb: &'static str, total: u64) -> Self {
        let now = Instant::now();
        Self { progress: progress.clone(), phase, verb, total, done: 0, started: now, last: now }
    }

    /// Counts `n` more bytes; reports when a second has passed since the last report.
    pub fn add(&mut self, n: u64) {
        self.done += n;
        if self.last.elapsed() >= PROGRESS_EVERY {
            self.report();
        }
    }

    /// Reports now (used once at the end).
    pub fn finish(&mut self) {
        self.report();
    }

    pub fn done(&self) -> u64 {
        self.done
    }

    fn report(&mut self) {
        self.last = Instant::now();
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        let rate = (self.done as f64 / secs) as u64;
        let of = if self.total > 0 { format!(" of {}", human(self.total)) } else { String::new() };
        self.progress.emit_counted(
            self.phase,
            format!("{}{of} {} ({}/s)", human(self.done), self.verb, human(rate)),
            self.done,
            self.total,
            "bytes",
        );
    }
}

/// SHA-256 and size of bytes seen so far.
#[derive(Default)]
pub struct Hashed {
    hasher: Sha256,
    bytes: u64,
}

impl Hashed {
    pub fn update(&mut self, data: &[u8]) {
        self.hasher.update(data);
        self.bytes += data.len() as u64;
    }

    /// `(bytes, sha256 hex)`.
    pub fn finish(self) -> (u64, String) {
        (self.bytes, hex::encode(self.hasher.finalize()))
    }
}

/// Copies `pipe` into a new file at `dest` until EOF, hashing on the way;
/// fsyncs the file. Returns `(bytes, sha256 hex)`.
pub fn pipe_to_file(
    mut pipe: File,
    dest: &Path,
    meter: &mut ByteMeter,
) -> Result<(u64, String), BackupError> {
    // A bigger pipe means fewer wake-ups for pg_dump and for us; best effort.
    let _ = rustix::pipe::fcntl_setpipe_size(&pipe, CHUNK);
    let mut file = File::create_new(dest).map_err(|e| BackupError::io("creating", dest, e))?;
    let mut hashed = Hashed::default();
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match pipe.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(BackupError::io("reading pg_dump output for", dest, e)),
        };
        hashed.update(&buf[..n]);
        file.write_all(&buf[..n]).map_err(|e| BackupError::io("writing", dest, e))?;
        meter.add(n as u64);
    }
    file.sync_all().map_err(|e| BackupError::io("syncing", dest, e))?;
    Ok(hashed.finish())
}

/// Re-reads a file and returns `(bytes, sha256 hex)` (verify, restore).
pub fn hash_file(path: &Path, meter: &mut ByteMeter) -> Result<(u64, String), BackupError> {
    let mut file = File::open(path).map_err(|e| BackupError::io("opening", path, e))?;
    let mut hashed = Hashed::default();
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(BackupError::io("reading", path, e)),
        };
        hashed.update(&buf[..n]);
        meter.add(n as u64);
    }
    Ok(hashed.finish())
}

/// Follows every file of a directory-format dump while pg_dump writes it.
///
/// pg_dump writes each file of a directory archive once, front to back (one
/// per table plus `toc.dat` at the end), so reading each file up to its
/// current end, again and again, sees every byte once. [`DirFollower::run`]
/// ends after the stop flag is set (pg_dump exited) and a last pass has read
/// every file to its end; it then checks that each file's size on disk
/// equals the bytes hashed, so a file rewritten behind our back is an error,
/// not a wrong checksum.
pub struct DirFollower {
    dir: PathBuf,
    stop: Arc<AtomicBool>,
    files: BTreeMap<String, (File, Hashed)>,
}

impl DirFollower {
    /// Follows `dir` (which pg_dump creates) until `stop` is set.
    pub fn new(dir: PathBuf, stop: Arc<AtomicBool>) -> Self {
        Self { dir, stop, files: BTreeMap::new() }
    }

    /// Runs until stopped; returns every file with its size and hash.
    pub fn run(mut self, meter: &mut ByteMeter) -> Result<Vec<FileEntry>, BackupError> {
        let mut buf = vec![0u8; CHUNK];
        loop {
            // Read the flag before the pass: once set, this pass is the last
            // and sees everything pg_dump wrote.
            let last = self.stop.load(Ordering::Acquire);
            self.pass(&mut buf, meter)?;
            if last {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut entries = Vec::with_capacity(self.files.len());
        for (name, (file, hashed)) in self.files {
            let path = self.dir.join(&name);
            let on_disk =
                file.metadata().map_err(|e| BackupError::io("reading metadata of", &path, e))?.len();
            let (bytes, sha256) = hashed.finish();
            if on_disk != bytes {
                return Err(BackupError::Incomplete {
                    dir: self.dir.clone(),
                    problem: format!(
                        "{name} changed while it was hashed ({bytes} bytes hashed, {on_disk} on disk)"
                    ),
                });
            }
            entries.push(FileEntry { name, bytes, sha256 });
        }
        Ok(entries)
    }

    fn pass(&mut self, buf: &mut [u8], meter: &mut ByteMeter) -> Result<(), BackupError> {
        match std::fs::read_dir(&self.dir) {
            Ok(entries) => {
                for entry in entries {
                    let entry = entry.map_err(|e| BackupError::io("listing", &self.dir, e))?;
                    let name = entry.file_name().to_string_lossy().into_owned();
                    if self.files.contains_key(&name) || !entry.file_type().is_ok_and(|t| t.is_file()) {
                        continue;
                    }
                    let path = entry.path();
                    let file = File::open(&path).map_err(|e| BackupError::io("opening", &path, e))?;
                    self.files.insert(name, (file, Hashed::default()));
                }
            }
            // pg_dump has not created the folder yet.
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(BackupError::io("listing", &self.dir, e)),
        }
        for (name, (file, hashed)) in &mut self.files {
            loop {
                let n = match file.read(buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(e) => return Err(BackupError::io("reading", self.dir.join(name.as_str()), e)),
                };
                hashed.update(&buf[..n]);
                meter.add(n as u64);
            }
        }
        Ok(())
    }
}

/// Fsyncs every file in `dir` and the folder itself.
pub fn sync_dir_tree(dir: &Path) -> Result<(), BackupError> {
    for entry in std::fs::read_dir(dir).map_err(|e| BackupError::io("listing", dir, e))? {
        let entry = entry.map_err(|e| BackupError::io("listing", dir, e))?;
        if entry.file_type().is_ok_and(|t| t.is_file()) {
            let path = entry.path();
            File::open(&path).and_then(|f| f.sync_all()).map_err(|e| BackupError::io("syncing", &path, e))?;
        }
    }
    File::open(dir).and_then(|f| f.sync_all()).map_err(|e| BackupError::io("syncing", dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follower_hashes_growing_files_once() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("dump");
        let stop = Arc::new(AtomicBool::new(false));
        let follower = DirFollower::new(dir.clone(), stop.clone());
        let handle = std::thread::spawn(move || {
            let mut meter = ByteMeter::new(&Progress::discard(), "dump", "written", 0);
            follower.run(&mut meter)
        });
        std::fs::create_dir(&dir).expect("mkdir");
        let mut a = File::create(dir.join("a.dat")).expect("create");
        let mut expected = Vec::new();
        for i in 0..20u8 {
            let chunk = vec![i; 10_000];
            a.write_all(&chunk).expect("write");
            expected.extend_from_slice(&chunk);
            std::thread::sleep(Duration::from_millis(7));
        }
        std::fs::write(dir.join("toc.dat"), b"toc").expect("write toc");
        stop.store(true, Ordering::Release);
        let entries = handle.join().expect("thread").expect("follow");
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].name, "a.dat");
        assert_eq!(entries[0].bytes, expected.len() as u64);
        assert_eq!(entries[0].sha256, hex::encode(Sha256::digest(&expected)));
        assert_eq!(entries[1].sha256, hex::encode(Sha256::digest(b"toc")));
    }
}
