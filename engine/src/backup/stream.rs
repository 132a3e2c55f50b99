//! Hashing bytes on their way to disk, and throttled byte progress.
//!
//! - Custom format: pg_dump writes to a pipe; [`pipe_to_file`] reads the pipe,
//!   feeds SHA-256 and writes the file, so every byte is hashed exactly once,
//!   on its way in.
//! - Directory format: pg_dump's parallel workers write the files themselves;
//!   [`DirFollower`] follows each file as it grows and hashes the new bytes
//!   while they are still in the page cache (no second pass after the dump).
//!
//! - While the custom-format file grows, [`follow`] reads it back (from the
//!   page cache) for whoever else needs the bytes: a second SHA-256 that
//!   proves the file holds what was hashed, the row counter, and the test
//!   restore's `pg_restore` reading its stdin. [`Written`] tells followers how
//!   far the file is written, so none of them can slow the pipe pg_dump
//!   writes into.
//!
//! These are blocking loops; callers run them on `spawn_blocking`, or with
//! [`low_priority`] on a thread of their own.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::archive::{ArchiveCounter, ArchiveCounts, Compression, DataCounter};
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

/// How far a file is written; followers wait on it.
#[derive(Default)]
pub struct Written {
    /// (bytes written, writer finished)
    state: Mutex<(u64, bool)>,
    changed: Condvar,
}

impl Written {
    fn publish(&self, len: u64) {
        self.state.lock().expect("written lock").0 = len;
        self.changed.notify_all();
    }

    /// The writer is done (also when it failed): followers read to the end and stop.
    pub fn finish(&self) {
        self.state.lock().expect("written lock").1 = true;
        self.changed.notify_all();
    }

    /// Waits until more than `have` bytes are written or the writer is done.
    fn wait_beyond(&self, have: u64) -> (u64, bool) {
        let mut state = self.state.lock().expect("written lock");
        while state.0 <= have && !state.1 {
            state = self.changed.wait(state).expect("written lock");
        }
        *state
    }
}

/// Marks the writer done when dropped, so followers never wait forever.
struct FinishOnDrop<'a>(Option<&'a Written>);

impl Drop for FinishOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(written) = self.0 {
            written.finish();
        }
    }
}

/// Copies `pipe` into `file` (new, at `dest`) until EOF, hashing on the
/// way; fsyncs the file. Each chunk is published to `written` once it is in
/// the file. Returns `(bytes, sha256 hex)`.
pub fn pipe_to_file(
    mut pipe: File,
    mut file: File,
    dest: &Path,
    meter: &mut ByteMeter,
    written: Option<&Written>,
) -> Result<(u64, String), BackupError> {
    let _finish = FinishOnDrop(written);
    // A bigger pipe means fewer wake-ups for pg_dump and for us; best effort.
    let _ = rustix::pipe::fcntl_setpipe_size(&pipe, CHUNK);
    let flip = crate::failpoint::flip_dump_byte();
    let mut hashed = Hashed::default();
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match pipe.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(BackupError::io("reading pg_dump output for", dest, e)),
        };
        let at = hashed.bytes;
        hashed.update(&buf[..n]);
        file.write_all(&buf[..n]).map_err(|e| BackupError::io("writing", dest, e))?;
        if let Some(offset) = flip.filter(|o| (at..at + n as u64).contains(o)) {
            // Failpoint: the disk returns other bytes than were hashed.
            use std::os::unix::fs::FileExt;
            let byte = buf[(offset - at) as usize] ^ 0x01;
            file.write_at(&[byte], offset).map_err(|e| BackupError::io("writing", dest, e))?;
        }
        meter.add(n as u64);
        if let Some(written) = written {
            written.publish(hashed.bytes);
        }
    }
    file.sync_all().map_err(|e| BackupError::io("syncing", dest, e))?;
    Ok(hashed.finish())
}

/// What a follower of a growing file does with its bytes.
#[derive(Default)]
pub struct Follow {
    /// Counts the rows of the archive.
    pub counter: Option<ArchiveCounter>,
    /// Writes every byte here (a test restore's `pg_restore` stdin); closed at the end.
    pub feed: Option<File>,
}

/// What a follower saw.
pub struct Followed {
    pub bytes: u64,
    /// SHA-256 (hex) of the bytes read back.
    pub sha256: String,
    /// Row counts; `Err` says why the archive could not be counted.
    pub counts: Option<Result<ArchiveCounts, String>>,
}

/// Reads the file at `path` while it is written (see [`Written`]) and to
/// its end; hashes every byte and hands it to the counter and the feed.
pub fn follow(path: &Path, written: &Written, mut what: Follow) -> Result<Followed, BackupError> {
    let mut file = File::open(path).map_err(|e| BackupError::io("opening", path, e))?;
    let mut hashed = Hashed::default();
    let mut buf = vec![0u8; CHUNK];
    loop {
        let (len, done) = written.wait_beyond(hashed.bytes);
        while hashed.bytes < len {
            let want = (len - hashed.bytes).min(CHUNK as u64) as usize;
            let n = match file.read(&mut buf[..want]) {
                Ok(0) => {
                    return Err(BackupError::Incomplete {
                        dir: path.to_owned(),
                        problem: format!("the file ends at {} bytes, {len} were written", hashed.bytes),
                    });
                }
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(BackupError::io("reading back", path, e)),
            };
            let data = &buf[..n];
            hashed.update(data);
            if let Some(counter) = &mut what.counter {
                counter.push(data);
            }
            // A reader that went away (pg_restore failed) is judged by
            // its exit status; the bytes are still read back and hashed.
            if let Some(feed) = &mut what.feed
                && feed.write_all(data).is_err()
            {
                what.feed = None;
            }
        }
        if done {
            break;
        }
    }
    drop(what.feed);
    let counts = what.counter.map(ArchiveCounter::finish);
    let (bytes, sha256) = hashed.finish();
    Ok(Followed { bytes, sha256, counts })
}

/// Feeds `feed` the front of the growing custom-format archive at `path`:
/// its header and table of contents, all a schema-only (pre-data)
/// pg_restore needs; then closes it. An archive runway cannot parse is fed
/// whole. Returns the bytes fed.
pub fn feed_toc(path: &Path, written: &Written, mut feed: File) -> Result<u64, BackupError> {
    let mut file = File::open(path).map_err(|e| BackupError::io("opening", path, e))?;
    let mut counter = ArchiveCounter::new();
    let mut pos = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let (len, done) = written.wait_beyond(pos);
        while pos < len {
            let want = (len - pos).min(buf.len() as u64) as usize;
            let n = match file.read(&mut buf[..want]) {
                Ok(0) => return Ok(pos),
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(BackupError::io("reading back", path, e)),
            };
            counter.push(&buf[..n]);
            let upto = counter.toc_end().map_or(n, |end| (end.saturating_sub(pos) as usize).min(n));
            if feed.write_all(&buf[..upto]).is_err() {
                return Ok(pos);
            }
            pos += upto as u64;
            if counter.toc_end().is_some_and(|end| pos >= end) {
                return Ok(pos);
            }
        }
        if done {
            return Ok(pos);
        }
    }
}

/// Runs `work` on a thread of its own at the lowest CPU priority (nice 19),
/// so it uses only what pg_dump and the server leave idle. Not a pooled
/// thread: the priority cannot be raised again once lowered.
pub async fn low_priority<T: Send + 'static>(
    name: &str,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, BackupError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            let _ = rustix::process::setpriority_process(Some(rustix::thread::gettid()), 19);
            let _ = tx.send(work());
        })
        .map_err(|e| BackupError::Internal(format!("starting {name}: {e}")))?;
    rx.await.map_err(|_| BackupError::Internal(format!("{name} ended without an answer")))
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
    files: BTreeMap<String, Followed1>,
}

/// One file of a directory archive being followed.
struct Followed1 {
    file: File,
    hashed: Hashed,
    /// Table data files (`<dump id>.dat[.gz]`): its rows, or why not.
    counter: Option<(i64, Result<DataCounter, String>)>,
}

/// Rows per dump id of a directory archive's data files; `Err` when a
/// file could not be counted.
pub type DirCounts = Vec<(i64, Result<u64, String>)>;

impl DirFollower {
    /// Follows `dir` (which pg_dump creates) until `stop` is set.
    pub fn new(dir: PathBuf, stop: Arc<AtomicBool>) -> Self {
        Self { dir, stop, files: BTreeMap::new() }
    }

    /// Runs until stopped; returns every file with its size and hash, and
    /// the rows of each table data file.
    pub fn run(mut self, meter: &mut ByteMeter) -> Result<(Vec<FileEntry>, DirCounts), BackupError> {
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
        let mut counts = Vec::new();
        for (name, Followed1 { file, hashed, counter }) in self.files {
            if let Some((id, counter)) = counter {
                counts.push((id, counter.and_then(DataCounter::finish)));
            }
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
        Ok((entries, counts))
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
                    let counter = super::archive::data_file(&name).map(|(id, compression)| {
                        (id, Ok(DataCounter::new(compression, compression == Compression::Zlib)))
                    });
                    self.files.insert(name, Followed1 { file, hashed: Hashed::default(), counter });
                }
            }
            // pg_dump has not created the folder yet.
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(BackupError::io("listing", &self.dir, e)),
        }
        for (name, Followed1 { file, hashed, counter }) in &mut self.files {
            loop {
                let n = match file.read(buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(e) => return Err(BackupError::io("reading", self.dir.join(name.as_str()), e)),
                };
                hashed.update(&buf[..n]);
                if let Some((_, Ok(rows))) = counter
                    && let Err(why) = rows.push(&buf[..n])
                {
                    counter.as_mut().expect("counting").1 = Err(why);
                }
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
        let (entries, counts) = handle.join().expect("thread").expect("follow");
        assert!(counts.is_empty(), "no table data files");
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].name, "a.dat");
        assert_eq!(entries[0].bytes, expected.len() as u64);
        assert_eq!(entries[0].sha256, hex::encode(Sha256::digest(&expected)));
        assert_eq!(entries[1].sha256, hex::encode(Sha256::digest(b"toc")));
    }
}
