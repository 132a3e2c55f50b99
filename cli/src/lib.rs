//! `runway`: plan, start, watch and cancel database rollouts through the
//! coordinator, or run migrations and backups locally.
//!
//! `main.rs` only parses, runs and exits; everything else lives here so
//! that tests drive the same code.
//!
//! # Layout
//!
//! - [`exit`]: the exit codes of every subcommand, and the one place where
//!   engine verdicts and errors become exit codes.
//! - [`output`]: everything printed: `--output text|json`, results on
//!   stdout, the error envelope, progress on stderr
//!   ([`output::progress`]), tables ([`output::table`]).
//! - [`remote`]: finding the leader coordinator (retries with `backon`).
//! - [`rollout`]: `runway rollout …` and `runway agents`.
//! - [`migrate`]: `runway migrate …` against a database, no coordinator.
//! - [`backup`]: `runway backup …`, locally or on an environment's DB agent.
//! - [`certs`]: `runway certs …`, a small CA for the quick start.
//! - [`etcd_auth`]: `runway etcd init-auth`, etcd for coordinators only.
//! - [`config_check`]: `runway config check`, the daemons' start-up checks
//!   of their config files, alone.
//! - [`config_reference`]: `runway config reference`, the configuration
//!   reference generated from the config types.
//! - [`audit`]: `runway audit`, the coordinators' audit log.
//! - [`status`]: `runway status`, the on-call view.
//! - [`manual`]: `runway completions` and the man pages, from the clap
//!   definitions.

pub mod audit;
pub mod backup;
pub mod certs;
pub mod config_check;
pub mod config_reference;
pub mod etcd_auth;
pub mod exit;
pub mod manual;
pub mod migrate;
pub mod output;
pub mod remote;
pub mod rollout;
pub mod signing;
pub mod status;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::exit::Exit;
use crate::output::{Format, Output};

/// runway: database migrations as a program, not a 2 a.m. runbook.
#[derive(Parser, Debug)]
#[command(name = "runway", version)]
pub struct Cli {
    /// Output format: text for a person, or one JSON object per line on
    /// stdout (errors too).
    #[arg(long, global = true, value_enum, default_value_t)]
    pub output: Format,
    /// Send this command's trace span over OTLP/gRPC to this endpoint
    /// (e.g. http://127.0.0.1:4317); `rollout start` then starts the
    /// rollout's trace here. Default: OTEL_EXPORTER_OTLP_ENDPOINT. Without
    /// either nothing is sent, and the coordinator starts the trace (its
    /// id is printed either way).
    #[arg(long, global = true, value_name = "URL")]
    pub otlp_endpoint: Option<String>,
    /// For an https:// OTLP endpoint: the CA certificates (PEM) the
    /// receiver's certificate must chain to. Default:
    /// OTEL_EXPORTER_OTLP_CERTIFICATE, else the system's roots.
    #[arg(long, global = true, value_name = "FILE")]
    pub otlp_ca_file: Option<std::path::PathBuf>,
    /// A client certificate (PEM) for a receiver that asks for one (mTLS),
    /// with --otlp-client-key-file. Default: OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE.
    #[arg(long, global = true, value_name = "FILE")]
    pub otlp_client_cert_file: Option<std::path::PathBuf>,
    /// The client certificate's private key (PEM). Default:
    /// OTEL_EXPORTER_OTLP_CLIENT_KEY.
    #[arg(long, global = true, value_name = "FILE")]
    pub otlp_client_key_file: Option<std::path::PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// List the agents connected to the leader, and the known agents that
    /// are away (each environment's inventory: every agent that ever
    /// registered, until `runway agents forget` removes it).
    Agents {
        #[command(subcommand)]
        command: Option<rollout::AgentsCommand>,
        /// Only this environment.
        #[arg(long = "env")]
        environment: Option<String>,
        #[command(flatten)]
        coordinators: remote::Coordinators,
    },
    /// Plan, start, watch, list, show, approve, reject, cancel and roll back
    /// rollouts through the coordinator.
    Rollout {
        #[command(subcommand)]
        command: rollout::RolloutCommand,
        #[command(flatten)]
        coordinators: remote::Coordinators,
    },
    /// Run migrations locally against DATABASE_URL (no coordinator needed).
    Migrate {
        #[command(subcommand)]
        command: migrate::MigrateCommand,
    },
    /// Create, verify and restore backups locally against DATABASE_URL (no coordinator
    /// needed), or with --env list, show, verify and restore an environment's backups.
    Backup {
        #[command(subcommand)]
        command: backup::BackupCommand,
    },
    /// The audit log: who started, approved, rejected, cancelled or rolled
    /// back rollouts and restored or verified backups, when, with what and
    /// how it ended; and how each rollout ended. Oldest first, only
    /// environments you may view.
    Audit {
        /// Only this environment.
        #[arg(long = "env")]
        environment: Option<String>,
        /// Only entries since then: a duration ago (30m, 12h, 7d) or an
        /// RFC 3339 time (2024-05-01T00:00:00Z).
        #[arg(long, value_parser = audit::since)]
        since: Option<i64>,
        #[command(flatten)]
        coordinators: remote::Coordinators,
    },
    /// The on-call view: the leader and what each coordinator thinks of
    /// it; per environment the agents (versions, last heartbeat, connected
    /// or missing for how long), running and recent rollouts (current step,
    /// how long maintenance mode has been on) and the last failure. Exits 0
    /// when all is well, 7 when something needs attention (listed last), 3
    /// when no leader answered (each coordinator's view is still shown).
    Status {
        /// Only this environment.
        #[arg(long = "env")]
        environment: Option<String>,
        #[command(flatten)]
        coordinators: remote::Coordinators,
    },
    /// Create a runway CA and issue coordinator, agent, operator and server
    /// (etcd) certificates, for the quick start and small installations.
    Certs {
        #[command(subcommand)]
        command: certs::CertsCommand,
    },
    /// Set up etcd for runway: its own authentication, so that only
    /// coordinators can read and write runway's keys.
    Etcd {
        #[command(subcommand)]
        command: etcd_auth::EtcdCommand,
    },
    /// Check agent and coordinator config files as the daemons check them
    /// at start-up (every key, URL, file and hook), without starting anything.
    Config {
        #[command(subcommand)]
        command: config_check::ConfigCommand,
    },
    #[command(flatten)]
    Manual(manual::ManualCommand),
}

/// The command line, with the exit-code table at the end of every
/// `--help`, the top level's and each subcommand's.
pub fn command() -> clap::Command {
    with_exit_codes(Cli::command(), &exit::help())
}

fn with_exit_codes(command: clap::Command, help: &str) -> clap::Command {
    let command = command.after_help(help.to_owned());
    let names: Vec<String> = command.get_subcommands().map(|s| s.get_name().to_owned()).collect();
    names.iter().fold(command, |command, name| command.mut_subcommand(name, |sub| with_exit_codes(sub, help)))
}

/// Parses the process's arguments; prints help or a usage error (exit 2)
/// and exits when they ask for it.
pub fn parse() -> Cli {
    let matches = command().get_matches();
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

/// This host's name, for `host.name` on the CLI's spans.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_default()
}

/// Runs one command to its end; the exit code says how it ended.
pub async fn run(cli: Cli) -> Exit {
    let output = Output::new(cli.output);
    // Kept until the command ends: dropping it sends the spans.
    let tls = runway_telemetry::TlsFiles {
        ca: runway_telemetry::FileSetting::named("--otlp-ca-file", cli.otlp_ca_file.as_deref()),
        client_cert: runway_telemetry::FileSetting::named(
            "--otlp-client-cert-file",
            cli.otlp_client_cert_file.as_deref(),
        ),
        client_key: runway_telemetry::FileSetting::named(
            "--otlp-client-key-file",
            cli.otlp_client_key_file.as_deref(),
        ),
    };
    let _telemetry = match runway_telemetry::Export::choose(cli.otlp_endpoint.as_deref(), tls) {
        runway_telemetry::Export::Off => None,
        export => match runway_telemetry::init(runway_telemetry::Setup {
            format: runway_telemetry::LogFormat::Text,
            default_filter: "warn,runway_cli=info",
            service: "runway-cli",
            host: &hostname(),
            export,
        }) {
            Ok(telemetry) => Some(telemetry),
            Err(e) => return output.fail(&output::Failure::invalid(format!("cannot send trace spans: {e}"))),
        },
    };
    let result = match cli.command {
        Command::Agents { command: None, environment, coordinators } => {
            async { rollout::agents(&coordinators.remote()?, output, environment).await }.await
        }
        Command::Agents { command: Some(command), coordinators, .. } => {
            async { rollout::agents_command(&coordinators.remote()?, output, command).await }.await
        }
        Command::Rollout { command, coordinators } => {
            async { rollout::run(&coordinators.remote()?, output, command).await }.await
        }
        Command::Migrate { command } => migrate::run(output, command).await,
        Command::Backup { command } => backup::run(output, command).await,
        Command::Certs { command } => certs::run(output, command),
        Command::Config { command } => config_check::run(output, command),
        Command::Manual(command) => manual::run(output, command),
        Command::Etcd { command } => etcd_auth::run(output, command).await,
        Command::Status { environment, coordinators } => {
            async { status::run(&coordinators.remote()?, output, environment).await }.await
        }
        Command::Audit { environment, since, coordinators } => {
            async { audit::run(&coordinators.remote()?, output, environment, since).await }.await
        }
    };
    result.unwrap_or_else(|failure| output.fail(&failure))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn help_of(path: &[&str]) -> String {
        let mut command = command();
        command.build();
        let mut found = &mut command;
        for name in path {
            found = found.find_subcommand_mut(name).unwrap_or_else(|| panic!("no subcommand {name}"));
        }
        found.render_long_help().to_string()
    }

    #[test]
    fn every_help_lists_every_exit_code() {
        let paths: &[&[&str]] = &[
            &[],
            &["agents"],
            &["rollout"],
            &["rollout", "watch"],
            &["rollout", "plan"],
            &["rollout", "approve"],
            &["rollout", "reject"],
            &["audit"],
            &["status"],
            &["migrate"],
            &["migrate", "status"],
            &["migrate", "lint"],
            &["migrate", "plan"],
            &["backup"],
            &["backup", "restore"],
            &["config"],
            &["config", "check"],
        ];
        for path in paths {
            let help = help_of(path);
            for exit in Exit::ALL {
                let line = format!("  {}  {}", exit.code(), exit.meaning());
                assert!(help.contains(&line), "`runway {} --help` lacks {exit:?}:\n{help}", path.join(" "));
            }
        }
    }

    #[test]
    fn output_is_one_flag_for_every_subcommand() {
        for args in [
            &["runway", "agents", "--output", "json"][..],
            &["runway", "--output", "json", "rollout", "list"],
            &["runway", "migrate", "status", "--database-url", "postgres://x@y/z", "--output", "json"],
            &["runway", "migrate", "lint", "--output", "json"],
            &["runway", "backup", "list", "--env", "staging", "--output", "json"],
            &["runway", "backup", "verify", "/b/app-1", "--output", "json"],
            &["runway", "audit", "--env", "production", "--since", "1h", "--output", "json"],
            &["runway", "status", "--env", "staging", "--output", "json"],
        ] {
            let matches = command().try_get_matches_from(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
            let cli = Cli::from_arg_matches(&matches).expect("matches the derive");
            assert_eq!(cli.output, Format::Json, "{args:?}");
        }
    }

    #[test]
    fn the_command_line_is_consistent() {
        command().debug_assert();
    }
}
