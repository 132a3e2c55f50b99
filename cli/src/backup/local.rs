//! `runway backup create|verify|restore` without `--env`: the backup engine
//! run straight from the CLI against a database URL, without a coordinator.

use std::path::{Path, PathBuf};

use runway_engine::backup::{self, BackupConfig, DumpFormat, RestoreMode, RestoreOptions};
use runway_engine::progress::Progress;
use serde_json::{Value, json};

use super::{BackupCommand, Common, FormatArg, ModeArg};
use crate::exit::Exit;
use crate::output::{self, Failure, Output, Reporter};

/// Runs a local backup command: progress on stderr, the result on stdout
/// (JSON: `{"ok":true, …}`).
pub async fn run(output: Output, cmd: BackupCommand) -> Result<Exit, Failure> {
    let progress = Reporter::stderr();
    let engine = progress.engine();
    let (text, value) = match cmd {
        BackupCommand::Create {
            dir,
            database_url,
            label,
            format,
            jobs,
            compress,
            max_bytes,
            keep,
            verify,
            common,
        } => {
            let mut config = config(dir, &common);
            config.format = match format {
                FormatArg::Custom => DumpFormat::Custom,
                FormatArg::Directory => DumpFormat::Directory,
                FormatArg::Auto => DumpFormat::Auto,
            };
            config.jobs = jobs.unwrap_or(config.jobs);
            config.compress_level = compress;
            config.max_bytes = max_bytes;
            config.keep = keep.map(|k| k as usize);
            // --verify: the test restore streams alongside the dump.
            let test_restore = verify.then_some(database_url.as_str());
            let manifest =
                backup::create_with(&database_url, &config, &label, "", test_restore, &engine).await?;
            let verified = if verify {
                let folder = config.dir.join(&manifest.id);
                Some(backup::verify::written(&folder, &config, &manifest, &engine).await?)
            } else {
                None
            };
            let text = format!(
                "backup {} of {} in {}\n{} ({} bytes), sha256 {}, {} tables{}",
                manifest.id,
                manifest.database,
                config.dir.join(&manifest.id).display(),
                output::bytes(manifest.bytes),
                manifest.bytes,
                manifest.sha256,
                manifest.tables.len(),
                if verified.is_some() { ", verified by a test restore" } else { "" }
            );
            (text, json!({ "manifest": manifest, "verify": verified }))
        }
        BackupCommand::List { .. } | BackupCommand::Show { .. } => {
            // `Route::of` sends them to the coordinator; kept as bad input, not a panic.
            return Err(Failure::invalid(
                "`runway backup list` and `show` run through the coordinator and need --env",
            ));
        }
        BackupCommand::Verify { path, test_restore, database_url, common, .. } => {
            let url = match (test_restore, database_url) {
                (false, _) => None,
                (true, Some(url)) => Some(url),
                (true, None) => {
                    return Err(Failure::invalid(
                        "--test-restore needs --database-url (the server to restore into), or --env ENV",
                    ));
                }
            };
            verify(&path, url.as_deref(), &common, &engine).await?
        }
        BackupCommand::Restore { path, target_url, yes, mode, jobs, common, .. } => {
            let target_url =
                target_url.ok_or_else(|| Failure::invalid("--target-url is required without --env"))?;
            let options = RestoreOptions {
                target_url,
                confirmed: yes,
                rollback_of: None,
                mode: match mode {
                    ModeArg::Clean => RestoreMode::Clean,
                    ModeArg::Replace => RestoreMode::Replace,
                },
            };
            restore(&path, &options, jobs, &common, &engine).await?
        }
    };
    progress.finish();
    output.result(text, &merge(json!({ "ok": true }), value));
    Ok(Exit::Success)
}

/// `backup verify PATH`: the files against their checksums and the archive,
/// and with `test_restore_url` a test restore on that server.
async fn verify(
    path: &Path,
    test_restore_url: Option<&str>,
    common: &Common,
    engine: &Progress,
) -> Result<(String, Value), Failure> {
    let config = config(parent_dir(path), common);
    let report = backup::verify(path, &config, test_restore_url, engine).await?;
    let text = format!(
        "backup {} is intact: {} file(s), {} ({} bytes), {} archive entries{}",
        report.backup,
        report.files,
        output::bytes(report.bytes),
        report.bytes,
        report.toc_entries,
        report.test_restore.as_ref().map_or(String::new(), |t| format!(
            "; test restore: {} tables, {} rows match the manifest",
            t.tables, t.rows
        ))
    );
    Ok((text, json!({ "verify": report })))
}

/// `backup restore PATH --target-url URL`.
async fn restore(
    path: &Path,
    options: &RestoreOptions,
    jobs: Option<u32>,
    common: &Common,
    engine: &Progress,
) -> Result<(String, Value), Failure> {
    let mut config = config(parent_dir(path), common);
    config.jobs = jobs.unwrap_or(config.jobs);
    let report = backup::restore(path, &config, options, engine).await?;
    let text = format!(
        "restored backup {} into {}: {} tables, {} rows match the manifest",
        report.backup, report.database, report.tables, report.rows
    );
    Ok((text, json!({ "restore": report })))
}

fn config(dir: PathBuf, common: &Common) -> BackupConfig {
    let mut config = BackupConfig::new(dir);
    config.pg_bin_dir = common.pg_bin_dir.clone();
    config
}

fn parent_dir(path: &Path) -> PathBuf {
    path.parent().map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

fn merge(mut base: Value, extra: Value) -> Value {
    if let (Some(base), Value::Object(extra)) = (base.as_object_mut(), extra) {
        base.extend(extra);
    }
    base
}
