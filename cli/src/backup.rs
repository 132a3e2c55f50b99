//! `runway backup …`: the flags, and where each command runs.
//!
//! - `local`: create, verify and restore on this machine against a URL.
//! - `remote`: list, show, verify and restore on an environment's DB agent,
//!   through the leader coordinator (`--env`).
//!
//! Either way progress goes to stderr and the result to stdout.

mod local;
mod remote;

use std::path::PathBuf;

use runway_proto::v1::{
    ListBackups, RestoreBackup, ShowBackup, VerifyBackup, backup_command_request::Action,
};

use crate::exit::Exit;
use crate::output::{Failure, Output};
use crate::remote::Coordinators;

/// Back up, verify and restore a database without a coordinator, or with
/// `--env ENV` list, show, verify and restore the backups of an
/// environment's DB agent through the coordinator.
///
/// Each backup is one folder (the dump plus manifest.json) under the backup
/// dir. A corrupt backup exits 6 locally; through the coordinator the agent
/// reports it as a failed command (1).
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
        /// With several databases: which one, `NAME` or `HOST/NAME` (default: the only one).
        #[arg(long, value_name = "NAME|HOST/NAME")]
        database: Option<String>,
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
        /// With several databases: which one, `NAME` or `HOST/NAME` (default: the only one).
        #[arg(long, value_name = "NAME|HOST/NAME")]
        database: Option<String>,
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
        /// custom (one file), directory (parallel jobs), or auto: directory only
        /// from 1 GiB with 4+ cores here and no table holding half the data, else custom.
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
        /// Prove it restorable: a test restore into a scratch database on the
        /// same server, streamed alongside the dump (custom format).
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
        /// With several databases: which one, `NAME` or `HOST/NAME` (default: the only one).
        #[arg(long, value_name = "NAME|HOST/NAME", requires = "environment")]
        database: Option<String>,
        /// With --env: when a rollout, rollback or another restore or
        /// verify holds the environment, wait for it instead of being
        /// refused (exit 2).
        #[arg(long, requires = "environment")]
        queue: bool,
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
        /// With several databases: which one, `NAME` or `HOST/NAME` (default: the only one).
        #[arg(long, value_name = "NAME|HOST/NAME", requires = "environment")]
        database: Option<String>,
        #[command(flatten)]
        coordinators: Coordinators,
        /// Confirm that the target's contents may be replaced.
        #[arg(long)]
        yes: bool,
        /// With --env: when a rollout, rollback or another restore or
        /// verify holds the environment, wait for it instead of being
        /// refused (exit 2).
        #[arg(long, requires = "environment")]
        queue: bool,

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

/// Flags every local backup command takes.
#[derive(Debug, clap::Args)]
pub struct Common {
    /// Folder with pg_dump and pg_restore (default: PATH).
    #[arg(long, env = "RUNWAY_PG_BIN_DIR", value_name = "DIR")]
    pg_bin_dir: Option<PathBuf>,
}

/// `backup create --format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FormatArg {
    Custom,
    Directory,
    Auto,
}

/// `backup restore --mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ModeArg {
    Clean,
    Replace,
}

/// Runs a backup command where it belongs.
pub async fn run(output: Output, command: BackupCommand) -> Result<Exit, Failure> {
    match Route::of(command) {
        Route::Local(command) => local::run(output, *command).await,
        Route::Remote(command) => remote::run(output, *command).await,
    }
}

/// A backup command bound for the coordinator.
#[derive(Debug)]
struct RemoteBackup {
    coordinators: Coordinators,
    environment: String,
    /// `--database`: empty for the environment's only database.
    database: String,
    action: Action,
    /// Restore only: the operator passed `--yes`.
    confirmed: bool,
    /// `--queue`: wait while another change holds the environment.
    queue: bool,
}

/// Where a `runway backup …` command runs.
#[derive(Debug)]
enum Route {
    /// On this machine, against a database URL.
    Local(Box<BackupCommand>),
    /// On the environment's DB agent, through the coordinator.
    Remote(Box<RemoteBackup>),
}

impl Route {
    /// `list` and `show` always go through the coordinator, `verify` and
    /// `restore` when `--env` is given, `create` never.
    fn of(command: BackupCommand) -> Route {
        let remote = |coordinators, environment, database: Option<String>, action, confirmed, queue| {
            let database = database.unwrap_or_default();
            Route::Remote(Box::new(RemoteBackup {
                coordinators,
                environment,
                database,
                action,
                confirmed,
                queue,
            }))
        };
        match command {
            BackupCommand::List { environment, database, coordinators } => {
                remote(coordinators, environment, database, Action::List(ListBackups {}), false, false)
            }
            BackupCommand::Show { name, environment, database, coordinators } => {
                remote(coordinators, environment, database, Action::Show(ShowBackup { name }), false, false)
            }
            BackupCommand::Verify {
                path,
                test_restore,
                environment: Some(environment),
                database,
                queue,
                coordinators,
                ..
            } => {
                let name = path.to_string_lossy().into_owned();
                let action = Action::Verify(VerifyBackup { name, test_restore, ..VerifyBackup::default() });
                remote(coordinators, environment, database, action, false, queue)
            }
            BackupCommand::Restore {
                path,
                yes,
                environment: Some(environment),
                database,
                queue,
                coordinators,
                ..
            } => {
                let name = path.to_string_lossy().into_owned();
                remote(
                    coordinators,
                    environment,
                    database,
                    Action::Restore(RestoreBackup { name, confirmed: yes, ..RestoreBackup::default() }),
                    yes,
                    queue,
                )
            }
            local => Route::Local(Box::new(local)),
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::output::Format;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        cmd: BackupCommand,
    }

    fn parse(args: &[&str]) -> Result<BackupCommand, clap::Error> {
        let mut argv = vec!["runway"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).map(|cli| cli.cmd)
    }

    fn route(args: &[&str]) -> Route {
        Route::of(parse(args).expect("parses"))
    }

    #[test]
    fn parses_the_documented_forms() {
        let cmd = parse(&["create", "--dir", "/b", "--database-url", "postgres://x@y/z"]).expect("create");
        assert!(matches!(cmd, BackupCommand::Create { ref dir, .. } if dir == &PathBuf::from("/b")));
        let cmd = parse(&["verify", "/b/app-1"]).expect("verify");
        assert!(matches!(cmd, BackupCommand::Verify { test_restore: false, .. }));
        let cmd =
            parse(&["restore", "/b/app-1", "--target-url", "postgres://x@y/z", "--yes"]).expect("restore");
        assert!(matches!(cmd, BackupCommand::Restore { yes: true, mode: ModeArg::Clean, .. }));
        assert!(parse(&["restore", "/b/app-1"]).is_err(), "--target-url is required");
    }

    #[test]
    fn env_sends_verify_and_restore_through_the_coordinator() {
        match route(&["restore", "app-1", "--env", "staging", "--yes"]) {
            Route::Remote(r) => {
                assert_eq!(r.environment, "staging");
                assert!(r.confirmed);
                assert!(matches!(&r.action, Action::Restore(x) if x.name == "app-1" && x.confirmed));
            }
            other => panic!("expected remote, got {other:?}"),
        }
        assert!(matches!(route(&["verify", "/b/app-1"]), Route::Local(_)));
        assert!(matches!(route(&["list", "--env", "staging"]), Route::Remote(_)));
        assert!(matches!(
            route(&["restore", "/b/app-1", "--target-url", "postgres://x@y/z"]),
            Route::Local(_)
        ));
    }

    #[test]
    fn remote_and_local_targets_do_not_mix() {
        assert!(
            parse(&["restore", "app-1", "--env", "staging", "--target-url", "postgres://x@y/z"]).is_err()
        );
        assert!(parse(&["restore", "app-1"]).is_err(), "needs --env or --target-url");
        assert!(parse(&["list"]).is_err(), "list needs --env");
    }

    #[tokio::test]
    async fn restore_without_yes_is_refused_before_anything_is_sent() {
        let command = parse(&["restore", "app-1", "--env", "staging", "--coordinator", "http://127.0.0.1:1"])
            .expect("parses");
        let failure = run(Output::new(Format::Text), command).await.expect_err("refused");
        assert_eq!(failure.exit, Exit::Invalid);
        assert!(failure.message.contains("--yes"), "{}", failure.message);
    }
}
