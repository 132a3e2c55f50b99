//! `runway`: plan, start, watch and cancel database rollouts through the
//! coordinator, or run migrations and backups locally.

mod exit;
mod local_backup;
mod local_migrate;
mod remote;
mod remote_backup;
mod render;
mod rollout;

use clap::{Args, Parser, Subcommand};

/// runway: database migrations as a program, not a 2 a.m. runbook.
#[derive(Parser, Debug)]
#[command(
    version,
    after_help = "Exit codes of `agents` and `rollout`: 0 success; 1 the rollout or command failed; \
                  2 bad input (nothing was changed); 3 no coordinator reachable; 4 the rollout was cancelled. \
                  `migrate` and `backup` document theirs in their own --help."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// How to reach the coordinators, and how to print.
#[derive(Args, Debug)]
struct RemoteArgs {
    #[command(flatten)]
    coordinators: remote::Coordinators,
    /// Output format.
    #[arg(long, global = true, value_enum, default_value = "text")]
    output: render::Format,
}

impl RemoteArgs {
    fn remote(&self) -> remote::Remote {
        self.coordinators.remote()
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// List the agents connected to the leader.
    Agents {
        /// Only this environment.
        #[arg(long = "env")]
        environment: Option<String>,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Start, watch, list, show and cancel rollouts through the coordinator.
    Rollout {
        #[command(subcommand)]
        command: rollout::RolloutCommand,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Run migrations locally against DATABASE_URL (no coordinator needed).
    Migrate {
        #[command(subcommand)]
        command: local_migrate::MigrateCommand,
    },
    /// Create, verify and restore backups locally against DATABASE_URL (no coordinator
    /// needed), or with --env list, show, verify and restore an environment's backups.
    Backup {
        #[command(subcommand)]
        command: local_backup::BackupCommand,
    },
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Agents { environment, remote } => {
            rollout::agents(&remote.remote(), remote.output, environment).await
        }
        Command::Rollout { command, remote } => rollout::run(&remote.remote(), remote.output, command).await,
        Command::Migrate { command } => local(local_migrate::run(command).await),
        Command::Backup { command } => match remote_backup::Route::of(command) {
            remote_backup::Route::Local(command) => local(local_backup::run(command).await),
            remote_backup::Route::Remote(command) => remote_backup::run(*command).await,
        },
    };
    std::process::exit(code);
}

/// Exit code of a local command; an unexpected error is a failure.
fn local(result: anyhow::Result<i32>) -> i32 {
    result.unwrap_or_else(|e| {
        eprintln!("error: {e:#}");
        exit::FAILED
    })
}
