//! Taking a backup: space check → snapshot → pg_dump (hashed as written) with
//! row counts in the same snapshot → manifest → atomic rename into place.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use chrono::Utc;

use super::config::{BackupConfig, DumpFormat};
use super::error::{BackupError, human};
use super::manifest::{DUMP_NAME, FileEntry, MANIFEST_VERSION, Manifest, backup_id, files_digest};
use super::snapshot::{self, SnapshotSession};
use super::stream::{ByteMeter, DirFollower, pipe_to_file, sync_dir_tree};
use super::{retention, space, tools};
use crate::database::Database;
use crate::progress::Progress;

/// Prefix of a backup folder still being written; never listed as a backup.
pub const PARTIAL_PREFIX: &str = ".partial-";

/// Removes a half-written backup folder unless disarmed.
struct RemoveOnDrop(Option<PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(dir) = self.0.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Takes a backup of `database_url` into a new folder under `config.dir`.
///
/// Refuses before pg_dump starts when the free space is below
/// `free_space_factor × pg_database_size`. The folder appears under its
/// final name only once the dump, its checksums and the manifest are on
/// disk; a failed backup leaves nothing behind. When `rollout_id` is not
/// empty the backup is pinned for that rollout (see [`retention::unpin`]).
/// Afterwards, older backups beyond `keep` are pruned.
pub async fn create(
    database_url: &str,
    config: &BackupConfig,
    label: &str,
    rollout_id: &str,
    progress: &Progress,
) -> Result<Manifest, BackupError> {
    config.validate()?;
    let conn = Database::parse(database_url)?;
    let database = conn.name().to_owned();
    std::fs::create_dir_all(&config.dir)
        .map_err(|e| BackupError::io("creating backup dir", &config.dir, e))?;

    progress
        .emit("check", format!("checking database {database} and free space in {}", config.dir.display()));
    let mut db = snapshot::connect(&conn).await?;
    let facts = snapshot::facts(&mut db, &database).await?;
    let free = space::check(config, &database, facts.database_bytes)?;
    let format = config.format_for(facts.database_bytes);
    let pg_dump_version = tools::version(config, "pg_dump").await?;
    progress.emit(
        "check",
        format!(
            "database {database} is {}, {} free; PostgreSQL {}; {} format",
            human(facts.database_bytes),
            human(free),
            facts.server_version,
            format_name(format)
        ),
    );

    let started_at = Utc::now();
    let id = backup_id(&database, started_at, label);
    let final_dir = config.backup_dir(&id);
    let work_dir = config.dir.join(format!("{PARTIAL_PREFIX}{id}"));
    std::fs::create_dir(&work_dir).map_err(|e| BackupError::io("creating", &work_dir, e))?;
    let mut cleanup = RemoveOnDrop(Some(work_dir.clone()));

    let mut session = SnapshotSession::open(db, &database).await?;
    let snapshot_id = session.snapshot_id.clone();
    let migrations = session.applied_migrations(conn.schema_param()).await?;
    progress.emit("dump", format!("pg_dump of {database} started in snapshot {snapshot_id}"));

    let dump_path = work_dir.join(DUMP_NAME);
    let dumped =
        tokio::try_join!(run_pg_dump(config, &conn, format, &snapshot_id, &dump_path, progress), async {
            let counts = session.row_counts().await;
            if let Ok(counts) = &counts {
                let rows: i64 = counts.iter().map(|t| t.rows).sum();
                progress
                    .emit("count", format!("{} tables, {rows} rows counted in the snapshot", counts.len()));
            }
            counts
        });
    session.close().await;
    let (files, tables) = dumped?;

    let (sha256, bytes) = match format {
        DumpFormat::Directory => (files_digest(&files), files.iter().map(|f| f.bytes).sum()),
        _ => (files[0].sha256.clone(), files[0].bytes),
    };
    let manifest = Manifest {
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
        finished_at: Utc::now(),
        rollout_id: rollout_id.to_owned(),
        label: label.to_owned(),
        migrations,
        tables,
    };
    manifest.write(&work_dir)?;
    std::fs::rename(&work_dir, &final_dir)
        .map_err(|e| BackupError::io("moving backup into place at", &final_dir, e))?;
    cleanup.0 = None;
    sync_path(&config.dir)?;

    if !rollout_id.is_empty() {
        retention::pin(config, rollout_id, &id)?;
    }
    let secs = (manifest.finished_at - manifest.started_at).num_milliseconds() as f64 / 1000.0;
    progress.emit(
        "done",
        format!("backup {id}: {} in {secs:.1}s, sha256 {}", human(manifest.bytes), &manifest.sha256[..16]),
    );
    retention::prune_local(config, &database, progress)?;
    Ok(manifest)
}

fn format_name(format: DumpFormat) -> &'static str {
    match format {
        DumpFormat::Directory => "directory",
        _ => "custom",
    }
}

/// Runs pg_dump in `snapshot_id`, hashing its output as it is written.
async fn run_pg_dump(
    config: &BackupConfig,
    conn: &Database,
    format: DumpFormat,
    snapshot_id: &str,
    dump_path: &Path,
    progress: &Progress,
) -> Result<Vec<FileEntry>, BackupError> {
    let mut cmd = tools::command(config, "pg_dump", Some(conn));
    cmd.arg(format.pg_dump_flag()).arg(format!("--snapshot={snapshot_id}"));
    if let Some(level) = config.compress_level {
        cmd.arg(format!("--compress={level}"));
    }
    let mut meter = ByteMeter::new(progress, "dump", "written", 0);
    let hint = "; the partial backup was removed";
    if format == DumpFormat::Directory {
        cmd.arg(format!("--jobs={}", config.jobs)).arg("--file").arg(dump_path).stdout(Stdio::null());
        let mut child = tools::spawn(config, "pg_dump", &mut cmd)?;
        let stop = Arc::new(AtomicBool::new(false));
        let follower = DirFollower::new(dump_path.to_owned(), stop.clone());
        let follow = tokio::task::spawn_blocking(move || {
            let files = follower.run(&mut meter);
            meter.finish();
            files
        });
        let stderr = tools::collect_stderr(child.stderr.take()).await;
        let status = child.wait().await;
        stop.store(true, Ordering::Release);
        let files = follow.await.map_err(|e| BackupError::Internal(format!("hashing task: {e}")))?;
        let status = status.map_err(|e| BackupError::Internal(format!("waiting for pg_dump: {e}")))?;
        tools::check_status("pg_dump", status, &stderr, Some(conn), hint)?;
        let files = files?;
        let dir = dump_path.to_owned();
        tokio::task::spawn_blocking(move || sync_dir_tree(&dir))
            .await
            .map_err(|e| BackupError::Internal(format!("sync task: {e}")))??;
        Ok(files)
    } else {
        cmd.stdout(Stdio::piped());
        let mut child = tools::spawn(config, "pg_dump", &mut cmd)?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let pipe = std::fs::File::from(
            stdout.into_owned_fd().map_err(|e| BackupError::Internal(format!("pg_dump stdout: {e}")))?,
        );
        let dest = dump_path.to_owned();
        let copy = tokio::task::spawn_blocking(move || {
            let hashed = pipe_to_file(pipe, &dest, &mut meter);
            meter.finish();
            hashed
        });
        let stderr = tools::collect_stderr(child.stderr.take()).await;
        let copied = copy.await.map_err(|e| BackupError::Internal(format!("hashing task: {e}")))?;
        let status =
            child.wait().await.map_err(|e| BackupError::Internal(format!("waiting for pg_dump: {e}")))?;
        tools::check_status("pg_dump", status, &stderr, Some(conn), hint)?;
        let (bytes, sha256) = copied?;
        Ok(vec![FileEntry { name: String::new(), bytes, sha256 }])
    }
}

/// Fsyncs a folder so a rename in it is durable.
fn sync_path(dir: &Path) -> Result<(), BackupError> {
    std::fs::File::open(dir).and_then(|f| f.sync_all()).map_err(|e| BackupError::io("syncing", dir, e))
}
