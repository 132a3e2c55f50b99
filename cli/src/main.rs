//! `runway`: plan, start, watch and cancel database rollouts through the
//! coordinator, or run migrations and backups locally.

mod exit;
mod remote;
mod render;
mod rollout;

use clap::{Parser, Subcommand};

/// runway: database migrations as a program, not a 2 a.m. runbook.
#[derive(Parser, Debug)]
#[command(
    version,
    after_help = "Exit codes: 0 success; 1 the rollout or command failed; 2 bad input (nothing was changed); \
                  3 no coordinator reachable; 4 the rollout was cancelled."
)]
struct Cli {
    /// Coordinator addresses, comma-separated; the leader is found among them.
    #[arg(long, global = true, env = "RUNWAY_COORDINATOR", default_value = "http://127.0.0.1:7400")]
    coordinator: String,
    /// Seconds to keep looking for a leader (covers a failover) before giving up.
    #[arg(long, global = true, env = "RUNWAY_LEADER_TIMEOUT", default_value_t = 20)]
    leader_timeout: u64,
    /// Output format.
    #[arg(long, global = true, value_enum, default_value = "text")]
    output: render::Format,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// List the agents connected to the leader.
    Agents {
        /// Only this environment.
        #[arg(long = "env")]
        environment: Option<String>,
    },
    /// Start, watch, list, show and cancel rollouts.
    Rollout {
        #[command(subcommand)]
        command: rollout::RolloutCommand,
    },
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let remote = remote::Remote::new(&cli.coordinator, std::time::Duration::from_secs(cli.leader_timeout));
    let code = match cli.command {
        Command::Agents { environment } => rollout::agents(&remote, cli.output, environment).await,
        Command::Rollout { command } => rollout::run(&remote, cli.output, command).await,
    };
    std::process::exit(code);
}
