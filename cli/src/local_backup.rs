//! `runway backup create|verify|restore`: the agent's backup engine run
//! straight from the CLI against a database URL, without a coordinator.
//!
//! Progress goes to stderr as plain lines; the result goes to stdout (text,
//! or one JSON object with `--output json`).
//!
//! The same subcommands, plus `list` and `show`, with `--env ENV` run on an
//! environment's DB agent through the coordinator instead; main hands those
//! to [`crate::remote_backup`].

use std::path::PathBuf;

use anyhow::Context;
use runway_engine::backup::{self, BackupConfig, BackupError, DumpFormat, RestoreMode, RestoreOptions};
use runway_engine::progress::Progress;
use serde_json::json;

use crate::remote::Coordinators;

/// Everything went as asked.
pub const EXIT_OK: i32 = 0;
/// The operation failed on the way (database, tool, disk, network); retrying may help.
pub const EXIT_FAILED: i32 = 1;
/// The backup is corrupt or does not match its manifest (checksum, files, row counts).
pub const EXIT_INTEGRITY: i32 = 3;
/// Refused before starting: not enough free space, restore without `--yes`, bad settings.
pub const EXIT_REFUSED: i32 = 4;

/// Back up, verify and restore a database without a coordinator, or with
/// `--env ENV` list, show, verify and restore the backups of an
/// environment's DB agent through the coordinator.
///
/// Each backup is one folder (the dump plus manifest.json) under the backup
/// dir. Exit codes without --env: 0 success; 1 failed on the way (database,
/// pg_dump, disk; retrying may help); 2 usage error; 3 the backup is corrupt
/// or does not match its manifest (checksum, missing files, row counts; do
/// not retry, use another backup); 4 refused before starting (not enough
/// free space, restore without --yes, bad settings). With --env: 0 success;
/// 1 the operation failed on the agent (including a corrupt backup); 2 bad
/// input, unknown environment or backup, no DB agent connected, restore
/// without --yes; 3 no coordinator reachable.
#[derive(Debug, clap::Subcommand)]
pub enum BackupCommand {
    /// List the backups of ENV's DB agent: its backup dir and, when
    /// configured, object storage (through the coordinator).
    List {
        /// Environment whose DB agent holds the backups.
        #[arg(long = "env", value_name = "ENV")]
        environment: String,
        #[command(flatten)]
        coordinators: Coordinators,
        /// Result format on stdout.
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Print the manifest of backup NAME on ENV's DB agent (through the coordinator).
    Show {
        /// The backup's name, as `runway backup list` shows it.
        name: String,
        /// Environment whose DB agent holds the backup.
        #[arg(long = "env", value_name = "ENV")]
        environment: String,
        #[command(flatten)]
        coordinators: Coordinators,
        /// Result format on stdout.
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Take a backup into a new folder under DIR (pg_dump, SHA-256 while
    /// writing, manifest with row counts from the dump's own snapshot).
    Create {
        /// Folder holding the backups; the new backup is a new folder in it.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// Database to back up.
        #[arg(long, env = "DATABASE_URL", hide_env_values = true, value_name = "URL")]
        database_url: String,
        /// Free text stored in the manifest and folder name.
        #[arg(long, default_value = "")]
        label: String,
        /// custom (one file), directory (parallel jobs), or auto (directory from 1 GiB).
        #[arg(long, value_enum, default_value_t = FormatArg::Auto)]
        format: FormatArg,
        /// Parallel pg_dump jobs for directory format (default: CPUs, 2–8).
        #[arg(long)]
        jobs: Option<u32>,
        /// pg_dump compression level 0–9.
        #[arg(long, value_parser = clap::value_parser!(u8).range(0..=9))]
        compress: Option<u8>,
        /// Treat DIR as having at most this many bytes for backups.
        #[arg(long, value_name = "BYTES")]
        max_bytes: Option<u64>,
        /// Keep only the newest N backups of this database in DIR.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
        keep: Option<u64>,
        /// Verify right after, including a test restore into a scratch database.
        #[arg(long)]
        verify: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Check a backup folder: every checksum re-read, `pg_restore --list`,
    /// and with --test-restore a full restore into a scratch database whose
    /// row counts must match the manifest.
    ///
    /// With --env, verifies backup NAME on ENV's DB agent through the
    /// coordinator (a copy only in object storage is downloaded first).
    Verify {
        /// The backup folder (holding manifest.json); with --env, the backup's name.
        #[arg(value_name = "PATH|NAME")]
        path: PathBuf,
        /// Also restore into a scratch database on the server of --database-url
        /// (with --env: on the DB agent's server).
        #[arg(long)]
        test_restore: bool,
        /// Server for the test restore (a scratch database is created there and dropped).
        #[arg(long, env = "DATABASE_URL", hide_env_values = true, value_name = "URL")]
        database_url: Option<String>,
        /// Run on this environment's DB agent, through the coordinator.
        #[arg(long = "env", value_name = "ENV")]
        environment: Option<String>,
        #[command(flatten)]
        coordinators: Coordinators,
        #[command(flatten)]
        common: Common,
    },
    /// Restore a backup folder into a database. Checks every checksum first
    /// and refuses a backup that does not match; compares row counts after.
    ///
    /// With --env, restores backup NAME into the database of ENV's DB agent
    /// through the coordinator (from its backup dir, else from object storage).
    Restore {
        /// The backup folder (holding manifest.json); with --env, the backup's name.
        #[arg(value_name = "PATH|NAME")]
        path: PathBuf,
        /// The database to restore into. Its contents are replaced.
        #[arg(long, value_name = "URL", required_unless_present = "environment")]
        target_url: Option<String>,
        /// Restore into the database of this environment's DB agent, through the coordinator.
        #[arg(long = "env", value_name = "ENV", conflicts_with_all = ["target_url", "mode", "jobs"])]
        environment: Option<String>,
        #[command(flatten)]
        coordinators: Coordinators,
        /// Confirm that the target's contents may be replaced.
        #[arg(long)]
        yes: bool,
        /// clean: drop and restore the backup's objects in one transaction
        /// (objects not in the backup stay). replace: restore into a new
        /// database and swap it in (exactly the backup; ends the target's sessions).
        #[arg(long, value_enum, default_value_t = ModeArg::Clean)]
        mode: ModeArg,
        /// Parallel pg_restore jobs (replace mode, directory format).
        #[arg(long)]
        jobs: Option<u32>,
        #[command(flatten)]
        common: Common,
    },
}

/// Flags every backup command takes.
#[derive(Debug, clap::Args)]
pub struct Common {
    /// Folder with pg_dump and pg_restore (default: PATH).
    #[arg(long, env = "RUNWAY_PG_BIN_DIR", value_name = "DIR")]
    pg_bin_dir: Option<PathBuf>,
    /// Result format on stdout.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FormatArg {
    Custom,
    Directory,
    Auto,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ModeArg {
    Clean,
    Replace,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Text,
    Json,
}

/// The exit code for a failed backup operation.
pub fn exit_code(error: &BackupError) -> i32 {
    match error {
        e if e.is_integrity_failure() => EXIT_INTEGRITY,
        BackupError::NotEnoughSpace { .. }
        | BackupError::NotConfirmed { .. }
        | BackupError::Config { .. }
        | BackupError::Url(_)
        | BackupError::NotFound { .. } => EXIT_REFUSED,
        _ => EXIT_FAILED,
    }
}

/// Progress as plain lines on stderr.
fn stderr_progress() -> Progress {
    Progress::new(|u| eprintln!("[{}] {}", u.phase, u.message))
}

/// Runs a backup command; returns the process exit code.
pub async fn run(cmd: BackupCommand) -> anyhow::Result<i32> {
    let progress = stderr_progress();
    let (output, result) = match cmd {
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
            let result = async {
                let manifest = backup::create(&database_url, &config, &label, "", &progress).await?;
                let verified = if verify {
                    let folder = config.dir.join(&manifest.id);
                    Some(backup::verify(&folder, &config, Some(&database_url), &progress).await?)
                } else {
                    None
                };
                let text = format!(
                    "backup {} of {} in {}\n{} bytes, sha256 {}, {} tables{}",
                    manifest.id,
                    manifest.database,
                    config.dir.join(&manifest.id).display(),
                    manifest.bytes,
                    manifest.sha256,
                    manifest.tables.len(),
                    if verified.is_some() { ", verified by a test restore" } else { "" }
                );
                Ok((text, json!({ "manifest": manifest, "verify": verified })))
            }
            .await;
            (common.output, result)
        }
        BackupCommand::List { .. } | BackupCommand::Show { .. } => {
            anyhow::bail!("`runway backup list` and `show` run through the coordinator and need --env")
        }
        BackupCommand::Verify { path, test_restore, database_url, common, .. } => {
            if test_restore && database_url.is_none() {
                eprintln!(
                    "error: --test-restore needs --database-url (the server to restore into), or --env ENV"
                );
                return Ok(crate::exit::INVALID);
            }
            let config = config(parent_dir(&path), &common);
            let url = if test_restore { database_url.as_deref() } else { None };
            let result = backup::verify(&path, &config, url, &progress).await.map(|report| {
                let text = format!(
                    "backup {} is intact: {} file(s), {} bytes, {} archive entries{}",
                    report.backup,
                    report.files,
                    report.bytes,
                    report.toc_entries,
                    report.test_restore.as_ref().map_or(String::new(), |t| format!(
                        "; test restore: {} tables, {} rows match the manifest",
                        t.tables, t.rows
                    ))
                );
                (text, json!({ "verify": report }))
            });
            (common.output, result)
        }
        BackupCommand::Restore { path, target_url, yes, mode, jobs, common, .. } => {
            let target_url = target_url.context("--target-url is required without --env")?;
            let mut config = config(parent_dir(&path), &common);
            config.jobs = jobs.unwrap_or(config.jobs);
            let options = RestoreOptions {
                target_url,
                confirmed: yes,
                rollback_of: None,
                mode: match mode {
                    ModeArg::Clean => RestoreMode::Clean,
                    ModeArg::Replace => RestoreMode::Replace,
                },
            };
            let result = backup::restore(&path, &config, &options, &progress).await.map(|report| {
                let text = format!(
                    "restored backup {} into {}: {} tables, {} rows match the manifest",
                    report.backup, report.database, report.tables, report.rows
                );
                (text, json!({ "restore": report }))
            });
            (common.output, result)
        }
    };
    match result {
        Ok((text, value)) => {
            match output {
                Output::Text => println!("{text}"),
                Output::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(&merge(json!({ "ok": true }), value))
                        .context("encoding the result")?
                ),
            }
            Ok(EXIT_OK)
        }
        Err(error) => {
            let code = exit_code(&error);
            eprintln!("error: {error}");
            if output == Output::Json {
                let value = json!({
                    "ok": false,
                    "error": error.to_string(),
                    "retry_safe": error.retry_safe(),
                    "exit_code": code,
                });
                println!("{}", serde_json::to_string_pretty(&value).context("encoding the result")?);
            }
            Ok(code)
        }
    }
}

fn config(dir: PathBuf, common: &Common) -> BackupConfig {
    let mut config = BackupConfig::new(dir);
    config.pg_bin_dir = common.pg_bin_dir.clone();
    config
}

fn parent_dir(path: &std::path::Path) -> PathBuf {
    path.parent().map_or_else(|| PathBuf::from("."), std::path::Path::to_path_buf)
}

fn merge(mut base: serde_json::Value, extra: serde_json::Value) -> serde_json::Value {
    if let (Some(base), serde_json::Value::Object(extra)) = (base.as_object_mut(), extra) {
        base.extend(extra);
    }
    base
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        cmd: BackupCommand,
    }

    #[test]
    fn parses_the_documented_forms() {
        let cli =
            Cli::try_parse_from(["runway", "create", "--dir", "/b", "--database-url", "postgres://x@y/z"])
                .expect("create");
        assert!(matches!(cli.cmd, BackupCommand::Create { ref dir, .. } if dir == &PathBuf::from("/b")));
        let cli = Cli::try_parse_from(["runway", "verify", "/b/app-1"]).expect("verify");
        assert!(matches!(cli.cmd, BackupCommand::Verify { test_restore: false, .. }));
        let cli = Cli::try_parse_from([
            "runway",
            "restore",
            "/b/app-1",
            "--target-url",
            "postgres://x@y/z",
            "--yes",
        ])
        .expect("restore");
        assert!(matches!(cli.cmd, BackupCommand::Restore { yes: true, mode: ModeArg::Clean, .. }));
        assert!(Cli::try_parse_from(["runway", "restore", "/b/app-1"]).is_err(), "--target-url is required");
    }

    #[test]
    fn exit_codes_tell_integrity_from_refusal() {
        let corrupt = BackupError::ChecksumMismatch {
            file: "/b/x/dump".into(),
            expected: "a".into(),
            actual: "b".into(),
            expected_bytes: 1,
            actual_bytes: 1,
        };
        assert_eq!(exit_code(&corrupt), EXIT_INTEGRITY);
        let refused = BackupError::NotConfirmed { backup: "x".into(), database: "app".into() };
        assert_eq!(exit_code(&refused), EXIT_REFUSED);
        assert_eq!(exit_code(&BackupError::Internal("x".into())), EXIT_FAILED);
    }
}
