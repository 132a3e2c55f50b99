//! Taking a backup: space check → snapshot → pg_dump (hashed as written,
//! rows counted from its bytes, optionally restored into a scratch database
//! while it is written) → manifest → atomic rename into place.

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use chrono::Utc;

use super::archive::{self, ArchiveCounter};
use super::config::{BackupConfig, DumpFormat, FormatInputs, PostData};
use super::error::{BackupError, TableDiff, human};
use super::manifest::{
    DUMP_NAME, FileEntry, MANIFEST_VERSION, Manifest, TableRows, Verification, backup_id, files_digest,
};
use super::partial::PartialDir;
use super::scratch::{Kind, ScratchDb};
use super::snapshot::{self, SnapshotSession};
use super::stream::{
    ByteMeter, DirFollower, Follow, Followed, Written, feed_toc, follow, low_priority, pipe_to_file,
    sync_dir_tree,
};
use super::{pgrestore, retention, space, tools};
use crate::database::Database;
use crate::progress::Progress;

/// Takes a backup of `database_url` into a new folder under `config.dir`.
/// The same as [`create_with`] without a test restore.
pub async fn create(
    database_url: &str,
    config: &BackupConfig,
    label: &str,
    rollout_id: &str,
    progress: &Progress,
) -> Result<Manifest, BackupError> {
    create_with(database_url, config, label, rollout_id, None, progress).await
}

/// Takes a backup of `database_url` into a new folder under `config.dir`,
/// and with `test_restore_url` proves it restorable on that server.
///
/// Refuses before pg_dump starts when the free space is below
/// `free_space_factor × pg_database_size`. The folder appears under its
/// final name only once the dump, its checksums and the manifest are on
/// disk; a failed backup leaves nothing behind. When `rollout_id` is not
/// empty the backup is pinned for that rollout (see [`retention::unpin`]).
/// Afterwards, older backups beyond `keep` are pruned.
///
/// Row counts are those of the dump itself, read from its bytes while they
/// are written (on a low-priority thread, so pg_dump keeps the cores); a
/// table the dump could not be counted for is counted in the dump's
/// snapshot afterwards. Either way they are exact.
///
/// The test restore (custom format) runs while pg_dump writes: the file is
/// read back as it grows, hashed a second time and fed to pg_restore in a
/// scratch database, so a verified backup takes about as long as the longer
/// of the two. Directory format restores once the dump is complete. Either
/// way the row counts of the scratch database must equal the manifest's;
/// the proof is recorded in the manifest (`verification`). When the proof
/// fails the backup is still put in place (without it) and the error
/// returned; when the bytes read back differ from those hashed, the backup
/// is corrupt and removed.
pub async fn create_with(
    database_url: &str,
    config: &BackupConfig,
    label: &str,
    rollout_id: &str,
    test_restore_url: Option<&str>,
    progress: &Progress,
) -> Result<Manifest, BackupError> {
    config.validate()?;
    let conn = Database::parse(database_url)?;
    let scratch_server = test_restore_url.map(Database::parse).transpose()?;
    let database = conn.name().to_owned();
    let Checked { db, facts, format, pg_dump_version } =
        check(config, &conn, &database, scratch_server.as_ref(), progress).await?;

    let started_at = Utc::now();
    let clock = Instant::now();
    let id = backup_id(&database, started_at, label);
    let final_dir = config.backup_dir(&id);
    let partial = PartialDir::create(&config.dir, &id)?;
    let work_dir = partial.path().to_owned();

    let mut session = SnapshotSession::open(db, &database).await?;
    let snapshot_id = session.snapshot_id.clone();
    let migrations = session.applied_migrations(conn.schema_param()).await?;
    let listed = session.list_tables().await?;
    progress.emit("dump", format!("pg_dump of {database} started in snapshot {snapshot_id}"));

    let dump_path = work_dir.join(DUMP_NAME);
    let job =
        DumpJob { config, conn: &conn, format, snapshot_id: &snapshot_id, dump_path: &dump_path, progress };
    // Custom format proves while it dumps; directory format after.
    let streamed = match (&scratch_server, format) {
        (Some(server), DumpFormat::Custom) => Some(streamed_scratch(server, config, progress).await?),
        _ => None,
    };
    let dumped = match format {
        DumpFormat::Directory => run_dir_dump(&job).await.map(|(files, counts)| (files, counts, None)),
        _ => run_custom_dump(&job, streamed.as_ref(), listed.len() as u64).await,
    };
    let (files, counts, restored) = match dumped {
        Ok(dumped) => dumped,
        Err(e) => {
            session.close().await;
            drop_scratch(streamed, progress).await;
            return Err(e);
        }
    };
    let dump_finished_at = Utc::now();
    let dump_secs = clock.elapsed().as_secs_f64();
    let (sha256, bytes) = dump_digest(format, &files);
    progress.emit(
        "dump",
        format!("backup {id}: {} written in {dump_secs:.1}s, sha256 {}", human(bytes), &sha256[..16]),
    );

    let counted = count_rows(&job, streamed.as_ref(), &mut session, &listed, counts, restored, clock).await;
    session.close().await;
    drop_scratch(streamed, progress).await;
    let ((tables, rows_counted_in), streamed_proof) = counted?;

    let mut manifest = Manifest {
        manifest_version: MANIFEST_VERSION,
        id: id.clone(),
        database: database.clone(),
        path: final_dir.join(DUMP_NAME),
        dump: DUMP_NAME.to_owned(),
        format,
        sha256,
        bytes,
        files,
        database_bytes: facts.database_bytes,
        server_version: facts.server_version,
        pg_dump_version,
        jobs: if format == DumpFormat::Directory { config.jobs } else { 1 },
        started_at,
        finished_at: dump_finished_at,
        rollout_id: rollout_id.to_owned(),
        label: label.to_owned(),
        migrations,
        tables,
        rows_counted_in: rows_counted_in.to_owned(),
        verification: None,
    };
    let proof_error =
        record_proof(&job, &mut manifest, streamed_proof, scratch_server.as_ref(), &work_dir, dump_secs)
            .await?;

    put_in_place(config, &manifest, &work_dir, &final_dir, partial)?;
    if !rollout_id.is_empty() {
        retention::pin(config, rollout_id, &id)?;
    }
    progress.emit("done", format!("backup {id} in place"));
    retention::prune_local(config, &database, progress)?;
    match proof_error {
        Some(e) => Err(e),
        None => Ok(manifest),
    }
}

/// What the checks before a backup found out, for the dump.
struct Checked {
    /// The connection the snapshot is taken on.
    db: sqlx::PgConnection,
    facts: snapshot::DatabaseFacts,
    format: DumpFormat,
    pg_dump_version: String,
}

/// The checks before anything is written: the database answers, the free
/// space suffices (on the test restore's server too), which format, which
/// pg_dump. Creates `config.dir` first.
async fn check(
    config: &BackupConfig,
    conn: &Database,
    database: &str,
    scratch_server: Option<&Database>,
    progress: &Progress,
) -> Result<Checked, BackupError> {
    std::fs::create_dir_all(&config.dir)
        .map_err(|e| BackupError::io("creating backup dir", &config.dir, e))?;
    progress
        .emit("check", format!("checking database {database} and free space in {}", config.dir.display()));
    let mut db = snapshot::connect(conn).await?;
    let facts = snapshot::facts(&mut db, database).await?;
    let free = space::check(config, database, facts.database_bytes)?;
    if let Some(server) = scratch_server {
        // The dump and its test restore at once: both must fit.
        let backup_bytes = (facts.database_bytes as f64 * config.free_space_factor).ceil() as u64;
        space::check_server(config, server, database, facts.database_bytes, backup_bytes, progress).await?;
    }
    let choice = choose_format(config, &mut db, &facts, database, scratch_server.is_some()).await;
    let format = choice.format;
    let pg_dump_version = tools::version(config, "pg_dump").await?;
    progress.emit(
        "check",
        format!(
            "database {database} is {}, {} free; PostgreSQL {}; {} format ({})",
            human(facts.database_bytes),
            human(free),
            facts.server_version,
            format_name(format),
            choice.why
        ),
    );
    Ok(Checked { db, facts, format, pg_dump_version })
}

/// The scratch database a custom-format dump is restored into while it is
/// written.
async fn streamed_scratch(
    server: &Database,
    config: &BackupConfig,
    progress: &Progress,
) -> Result<ScratchDb, BackupError> {
    let scratch = ScratchDb::create(server, Kind::Verify, config).await?;
    progress.emit("test-restore", format!("scratch database {} created for the test restore", scratch.name));
    Ok(scratch)
}

/// The dump's sha256 and size: of its one file, or of a directory
/// format's files together.
fn dump_digest(format: DumpFormat, files: &[FileEntry]) -> (String, u64) {
    match format {
        DumpFormat::Directory => (files_digest(files), files.iter().map(|f| f.bytes).sum()),
        _ => (files[0].sha256.clone(), files[0].bytes),
    }
}

/// Drops the streamed test restore's scratch database, if there is one; a
/// scratch database left behind is a warning, not a failed backup.
async fn drop_scratch(scratch: Option<ScratchDb>, progress: &Progress) {
    if let Some(scratch) = scratch
        && let Err(e) = scratch.drop_it().await
    {
        progress.emit("test-restore", format!("warning: {e}"));
    }
}

/// Rows counted, and where (`rows_counted_in`); with a streamed test
/// restore, also its proof (or why it failed).
type Counted = ((Vec<TableRows>, &'static str), Option<Result<Verification, BackupError>>);

/// Rows: with a streamed test restore, counted in the scratch database
/// (which read every row of the dump anyway); otherwise from the dump's
/// bytes. The snapshot stays open until then, for what neither counted.
async fn count_rows(
    job: &DumpJob<'_>,
    streamed: Option<&ScratchDb>,
    session: &mut SnapshotSession,
    listed: &[(String, String)],
    counts: StreamCounts,
    restored: Option<Restored>,
    clock: Instant,
) -> Result<Counted, BackupError> {
    match (streamed, restored) {
        (Some(scratch), Some(restored)) => {
            match prove_streamed(job, scratch, session, listed, restored, clock).await {
                Ok((tables, verification)) => Ok(((tables, "test_restore"), Some(Ok(verification)))),
                Err(e) => {
                    let why = Err("the test restore failed".to_owned());
                    settle_counts(session, listed, why, job.progress).await.map(|t| (t, Some(Err(e))))
                }
            }
        }
        _ => settle_counts(session, listed, counts, job.progress).await.map(|t| (t, None)),
    }
}

/// Records the test restore's proof in `manifest`: the streamed one, or one
/// run now on the finished dump. A failed proof is returned as `Ok(Some)`:
/// the backup is still put in place, without it. Bytes read back that
/// differ from those hashed are `Err`: the backup is corrupt.
async fn record_proof(
    job: &DumpJob<'_>,
    manifest: &mut Manifest,
    streamed_proof: Option<Result<Verification, BackupError>>,
    scratch_server: Option<&Database>,
    work_dir: &Path,
    dump_secs: f64,
) -> Result<Option<BackupError>, BackupError> {
    let (config, progress) = (job.config, job.progress);
    let proof = match (streamed_proof, scratch_server) {
        (Some(proof), _) => Some(proof.map(|v| Verification { sha256: manifest.sha256.clone(), ..v })),
        (None, Some(server)) => {
            let when = "after_dump";
            Some(super::verify::test_restore(work_dir, config, manifest, server, when, progress).await)
        }
        (None, None) => None,
    };
    match proof {
        Some(Ok(verification)) => {
            progress.emit(
                "test-restore",
                format!(
                    "backup {} proven restorable: {} tables, {} rows match ({}, post-data {}); \
                     dump {dump_secs:.1} s, verified {:.1} s from the start",
                    manifest.id,
                    verification.tables,
                    verification.rows,
                    verification.when,
                    verification.post_data,
                    verification.seconds
                ),
            );
            manifest.verification = Some(verification);
            Ok(None)
        }
        Some(Err(e)) if e.is_integrity_failure() && matches!(e, BackupError::ChecksumMismatch { .. }) => {
            Err(e)
        }
        Some(Err(e)) => Ok(Some(e)),
        None => Ok(None),
    }
}

/// Writes the manifest and renames the finished folder to its final name:
/// the backup appears complete or not at all.
fn put_in_place(
    config: &BackupConfig,
    manifest: &Manifest,
    work_dir: &Path,
    final_dir: &Path,
    partial: PartialDir,
) -> Result<(), BackupError> {
    manifest.write(work_dir)?;
    std::fs::rename(work_dir, final_dir)
        .map_err(|e| BackupError::io("moving backup into place at", final_dir, e))?;
    partial.keep();
    sync_path(&config.dir)
}

/// The format of this backup (see [`BackupConfig::choose_format`]): the
/// largest table's share is read only when it can still decide.
async fn choose_format(
    config: &BackupConfig,
    db: &mut sqlx::PgConnection,
    facts: &snapshot::DatabaseFacts,
    database: &str,
    streamed_proof: bool,
) -> super::config::FormatChoice {
    let mut inputs = FormatInputs {
        database_bytes: facts.database_bytes,
        largest_table_share: None,
        cores: FormatInputs::cores_here(),
        streamed_proof,
    };
    let undecided =
        config.choose_format(&inputs).format == DumpFormat::Directory && config.format == DumpFormat::Auto;
    if undecided {
        inputs.largest_table_share = snapshot::largest_table_share(db, database).await.ok().flatten();
    }
    config.choose_format(&inputs)
}

fn format_name(format: DumpFormat) -> &'static str {
    match format {
        DumpFormat::Directory => "directory",
        _ => "custom",
    }
}

/// What every pg_dump run needs.
struct DumpJob<'a> {
    config: &'a BackupConfig,
    conn: &'a Database,
    format: DumpFormat,
    snapshot_id: &'a str,
    dump_path: &'a Path,
    progress: &'a Progress,
}

/// Row counts from the dump, or why there are none.
type StreamCounts = Result<Vec<TableRows>, String>;

/// A streamed test restore's pg_restore outcome and when it ended.
type Restored = Result<Instant, BackupError>;

/// The manifest's row counts: from the dump for every listed table it had;
/// the rest counted in the snapshot (still open). Returns the counts and
/// where they came from (`dump`, `snapshot`, or `dump+snapshot`).
async fn settle_counts(
    session: &mut SnapshotSession,
    listed: &[(String, String)],
    counts: StreamCounts,
    progress: &Progress,
) -> Result<(Vec<TableRows>, &'static str), BackupError> {
    let from_dump = match counts {
        Ok(counts) => counts,
        Err(why) => {
            progress
                .emit("count", format!("rows not countable from the dump ({why}); counting in the snapshot"));
            Vec::new()
        }
    };
    let mut tables = Vec::with_capacity(listed.len());
    let mut missing = Vec::new();
    for (schema, table) in listed {
        match from_dump.iter().find(|t| &t.schema == schema && &t.table == table) {
            Some(t) => tables.push(t.clone()),
            None => missing.push((schema.clone(), table.clone())),
        }
    }
    let from = match (tables.is_empty() && !listed.is_empty(), missing.is_empty()) {
        (_, true) => "dump",
        (true, false) => "snapshot",
        (false, false) => "dump+snapshot",
    };
    tables.extend(session.count(&missing).await?);
    tables.sort_by(|a, b| (&a.schema, &a.table).cmp(&(&b.schema, &b.table)));
    let rows: i64 = tables.iter().map(|t| t.rows).sum();
    progress
        .emit("count", format!("{} tables, {rows} rows in the dump (counted in the {from})", tables.len()));
    Ok((tables, from))
}

/// Runs pg_dump in directory format, each file hashed and its rows counted
/// as it grows.
async fn run_dir_dump(job: &DumpJob<'_>) -> Result<(Vec<FileEntry>, StreamCounts), BackupError> {
    let (config, conn, dump_path) = (job.config, job.conn, job.dump_path);
    let mut cmd = dump_command(job);
    cmd.arg(format!("--jobs={}", config.jobs)).arg("--file").arg(dump_path).stdout(Stdio::null());
    let mut meter = ByteMeter::new(job.progress, "dump", "written", 0);
    let mut child = tools::spawn(config, "pg_dump", &mut cmd)?;
    let stop = Arc::new(AtomicBool::new(false));
    let follower = DirFollower::new(dump_path.to_owned(), stop.clone());
    let follow = low_priority("runway-dump-follow", move || {
        let files = follower.run(&mut meter);
        meter.finish();
        files
    });
    let stderr = tools::collect_stderr(child.stderr.take()).await;
    let status = child.wait().await;
    stop.store(true, Ordering::Release);
    let followed = follow.await?;
    let status = status.map_err(|e| BackupError::Internal(format!("waiting for pg_dump: {e}")))?;
    tools::check_status("pg_dump", status, &stderr, Some(conn), HINT)?;
    let (files, per_file) = followed?;
    let dir = dump_path.to_owned();
    tokio::task::spawn_blocking(move || sync_dir_tree(&dir))
        .await
        .map_err(|e| BackupError::Internal(format!("sync task: {e}")))??;
    let counts = std::fs::read(dump_path.join("toc.dat"))
        .map_err(|e| format!("reading toc.dat: {e}"))
        .and_then(|toc| archive::directory_tables(&toc))
        .and_then(|by_id| {
            let mut tables = Vec::new();
            for (id, rows) in per_file {
                let rows = rows?;
                if let Some(t) = by_id.get(&id) {
                    tables.push(TableRows { rows: rows as i64, ..t.clone() });
                }
            }
            Ok(tables)
        });
    Ok((files, counts))
}

const HINT: &str = "; the partial backup was removed";

fn dump_command(job: &DumpJob<'_>) -> tokio::process::Command {
    let mut cmd = tools::command(job.config, "pg_dump", Some(job.conn));
    cmd.arg(job.format.pg_dump_flag()).arg(format!("--snapshot={}", job.snapshot_id));
    if let Some(level) = job.config.compress_level {
        cmd.arg(format!("--compress={level}"));
    }
    cmd
}

/// Runs pg_dump in custom format into a pipe; the file is hashed as it is
/// written, read back (second hash, row counts) as it grows, and with
/// `scratch` fed to pg_restore there at the same time.
async fn run_custom_dump(
    job: &DumpJob<'_>,
    scratch: Option<&ScratchDb>,
    tables: u64,
) -> Result<(Vec<FileEntry>, StreamCounts, Option<Restored>), BackupError> {
    let (config, conn, dump_path, progress) = (job.config, job.conn, job.dump_path, job.progress);
    let mut cmd = dump_command(job);
    cmd.stdout(Stdio::piped());
    let file = std::fs::File::create_new(dump_path).map_err(|e| BackupError::io("creating", dump_path, e))?;
    let mut child = tools::spawn(config, "pg_dump", &mut cmd)?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let pipe = std::fs::File::from(
        stdout.into_owned_fd().map_err(|e| BackupError::Internal(format!("pg_dump stdout: {e}")))?,
    );
    let written = Arc::new(Written::default());
    let mut meter = ByteMeter::new(progress, "dump", "written", 0);
    let (dest, w) = (dump_path.to_owned(), written.clone());
    let copy = tokio::task::spawn_blocking(move || {
        let hashed = pipe_to_file(pipe, file, &dest, &mut meter, Some(&w));
        meter.finish();
        hashed
    });

    // With a test restore: its feeder (normal priority: the restore is the
    // long pole), which also reads the file back; rows are counted in the
    // scratch database afterwards. Without: the row counter reads it back
    // (lowest priority: it must not slow pg_dump).
    let follower = match scratch {
        Some(scratch) => {
            let (pre_data, stdin) =
                pgrestore::spawn_from_stdin(config, &scratch.target, pgrestore::Sections::PreData)?;
            let (next_tx, next_rx) = std::sync::mpsc::channel();
            let (path, w) = (dump_path.to_owned(), written.clone());
            let report = progress.clone();
            let feed =
                tokio::task::spawn_blocking(move || feed_in_two_phases(&path, &w, stdin, &next_rx, &report));
            progress.emit(
                "test-restore",
                format!("pg_restore into {} reads the dump as it is written", scratch.name),
            );
            let feed = async { feed.await.map_err(|e| BackupError::Internal(format!("feeding task: {e}")))? };
            let restore = stream_restore(config, scratch, pre_data, next_tx, tables, progress);
            Follower::Restore(Box::pin(async move {
                let (restored, fed) = tokio::join!(restore, feed);
                (restored.map(|()| Instant::now()), fed)
            }))
        }
        None => {
            let (path, w) = (dump_path.to_owned(), written.clone());
            Follower::Count(Box::pin(async move {
                low_priority("runway-row-count", move || {
                    follow(&path, &w, Follow { counter: Some(ArchiveCounter::new()), ..Follow::default() })
                })
                .await?
            }))
        }
    };

    let dumped = async {
        let stderr = tools::collect_stderr(child.stderr.take()).await;
        let copied = copy.await.map_err(|e| BackupError::Internal(format!("hashing task: {e}")));
        let status =
            child.wait().await.map_err(|e| BackupError::Internal(format!("waiting for pg_dump: {e}")));
        (stderr, copied, status)
    };
    let (counted, restored) = match follower {
        Follower::Count(count) => {
            let ((stderr, copied, status), counted) = tokio::join!(dumped, count);
            tools::check_status("pg_dump", status?, &stderr, Some(conn), HINT)?;
            (check_reread(dump_path, copied??, counted?)?, None)
        }
        Follower::Restore(restore) => {
            let ((stderr, copied, status), (restored, fed)) = tokio::join!(dumped, restore);
            tools::check_status("pg_dump", status?, &stderr, Some(conn), HINT)?;
            (check_reread(dump_path, copied??, fed?)?, Some(restored))
        }
    };
    let (bytes, sha256) = (counted.bytes, counted.sha256.clone());
    let counts = match counted.counts {
        Some(counts) => counts.map(|c| c.tables),
        None => Err("counted in the test restore".to_owned()),
    };
    Ok((vec![FileEntry { name: String::new(), bytes, sha256 }], counts, restored))
}

/// A future on this task.
type Boxed<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// What reads the custom-format file back while it is written.
enum Follower<'a> {
    Count(Boxed<'a, Result<Followed, BackupError>>),
    Restore(Boxed<'a, (Restored, Result<Followed, BackupError>)>),
}

/// The bytes read back (and restored) are the bytes hashed on the way in;
/// otherwise the disk holds other bytes than pg_dump wrote: corrupt.
fn check_reread(dump_path: &Path, written: (u64, String), read: Followed) -> Result<Followed, BackupError> {
    let (bytes, sha256) = written;
    if read.sha256 != sha256 || read.bytes != bytes {
        return Err(BackupError::ChecksumMismatch {
            file: dump_path.to_owned(),
            expected: sha256,
            actual: read.sha256,
            expected_bytes: bytes,
            actual_bytes: read.bytes,
        });
    }
    Ok(read)
}

/// Feeds the growing file to the pre-data pg_restore (schema; it stops
/// reading once it has the table of contents at the front), then, once
/// the scratch tables are ready, all of it from the start to the data
/// pg_restore sent over `next` (none: read back and hashed only).
fn feed_in_two_phases(
    path: &Path,
    written: &Written,
    pre_data: std::fs::File,
    next: &std::sync::mpsc::Receiver<std::fs::File>,
    progress: &Progress,
) -> Result<Followed, BackupError> {
    // Phase 1 needs only the front of the file (header and table of contents).
    let front = feed_toc(path, written, pre_data)?;
    progress.emit(
        "test-restore",
        format!("schema restored from the first {front} bytes of the dump (its table of contents)"),
    );
    let feed = next.recv().ok();
    follow(path, written, Follow { feed, ..Follow::default() })
}

/// The streamed test restore: the schema (pre-data), the scratch tables
/// made unlogged (a scratch copy needs no WAL: the same rows, parsed and
/// checked the same way, for less work), then the data read as it is written.
async fn stream_restore(
    config: &BackupConfig,
    scratch: &ScratchDb,
    pre_data: tokio::process::Child,
    next: std::sync::mpsc::Sender<std::fs::File>,
    tables: u64,
    progress: &Progress,
) -> Result<(), BackupError> {
    pgrestore::wait(pre_data, &scratch.target, 0, progress, "").await?;
    pgrestore::unlogged(&scratch.target, &scratch.name).await?;
    let (data, stdin) = pgrestore::spawn_from_stdin(config, &scratch.target, pgrestore::Sections::Data)?;
    // A feeder that is gone (failed) leaves pg_restore with an empty input: it fails.
    let _ = next.send(stdin);
    pgrestore::wait(data, &scratch.target, tables, progress, "").await
}

/// After a streamed test restore of schema and data: the scratch
/// database's rows (the server's count of the rows loaded; `count(*)` where
/// that is not exact), then post-data by policy (from the complete file,
/// parallel jobs); every table of the snapshot must be there. Returns the
/// counts (the manifest's) and the proof (its `sha256` filled in by the
/// caller).
async fn prove_streamed(
    job: &DumpJob<'_>,
    scratch: &ScratchDb,
    session: &mut SnapshotSession,
    listed: &[(String, String)],
    restored: Restored,
    started: Instant,
) -> Result<(Vec<TableRows>, Verification), BackupError> {
    let (config, progress) = (job.config, job.progress);
    let restored_at = restored?;
    progress.emit(
        "test-restore",
        format!(
            "schema and data restored into {} {:.1} s after pg_dump started",
            scratch.name,
            (restored_at - started).as_secs_f64()
        ),
    );
    let post = config.test_restore_post_data == PostData::Restore;
    let counting = async {
        let mut db = snapshot::connect(&scratch.target).await?;
        match snapshot::restored_counts(&mut db, &scratch.name).await? {
            Some(counts) => Ok(counts),
            None => snapshot::count_tables(&mut db, &scratch.name).await,
        }
    };
    // Counted before post-data: the server's counts of the rows loaded are
    // read once the loading sessions have ended.
    let counts = counting.await?;
    if post {
        pgrestore::post_data(config, job.dump_path, &scratch.target, config.jobs, progress).await?;
    }
    let mut tables = Vec::with_capacity(listed.len());
    let mut missing = Vec::new();
    for (schema, table) in listed {
        match counts.iter().find(|t| &t.schema == schema && &t.table == table) {
            Some(t) => tables.push(t.clone()),
            None => missing.push((schema.clone(), table.clone())),
        }
    }
    if !missing.is_empty() {
        // Exact figures for the message: the snapshot is still open.
        let expected = session.count(&missing).await?;
        let diffs = expected
            .into_iter()
            .map(|t| TableDiff { table: t.qualified(), expected: Some(t.rows), actual: None })
            .collect();
        return Err(BackupError::RowCountMismatch {
            database: scratch.name.clone(),
            backup: "being written".into(),
            diffs,
        });
    }
    let rows: i64 = tables.iter().map(|t| t.rows).sum();
    progress.emit(
        "count",
        format!("{} tables, {rows} rows in the dump (counted in the test restore)", tables.len()),
    );
    let verification = Verification {
        when: "overlapped".into(),
        post_data: if post { "restored" } else { "skipped" }.into(),
        scratch_database: scratch.name.clone(),
        tables: tables.len(),
        rows,
        sha256: String::new(),
        verified_at: Utc::now(),
        seconds: started.elapsed().as_secs_f64(),
    };
    Ok((tables, verification))
}

/// Fsyncs a folder so a rename in it is durable.
fn sync_path(dir: &Path) -> Result<(), BackupError> {
    std::fs::File::open(dir).and_then(|f| f.sync_all()).map_err(|e| BackupError::io("syncing", dir, e))
}
