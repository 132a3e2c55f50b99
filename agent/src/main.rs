use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use runway_agent::config::{Config, Files};
use runway_daemon::config_check::refuse;
use tokio_util::sync::CancellationToken;

/// runway's agent: runs backups, migrations, maintenance and restarts on
/// this host when the runway coordinator asks, and streams progress back.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Agent config file (TOML). See deploy/agent-db.toml and deploy/agent-app.toml.
    #[arg(short, long, env = "RUNWAY_AGENT_CONFIG", default_value = "/etc/runway/agent.toml")]
    config: PathBuf,
    /// Log lines as text for a person, or as one JSON object per line for
    /// a log shipper, with the command id and rollout id of the span a
    /// line belongs to, and the trace id of its rollout.
    #[arg(long, value_enum, env = "RUNWAY_LOG_FORMAT", default_value = "text")]
    log_format: runway_telemetry::LogFormat,
    /// Check the config as at start-up (every key, URL, file and hook, as
    /// this user), print the result and exit without starting: 0 when the
    /// agent would start with it, 2 when not (each problem named by file,
    /// table and key). The systemd unit runs it as `ExecStartPre=`.
    #[arg(long)]
    check_config: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    // Every key, file and hook, before connecting anywhere.
    let config = match Config::load(&args.config, Files::Check) {
        Ok(config) => config,
        Err(error) => {
            return refuse("runway-agent", &error, &format!("--agent {}", args.config.display()));
        }
    };
    runway_daemon::config_check::warn(&config.warnings);
    if args.check_config {
        println!("{}: OK (agent config)", args.config.display());
        return ExitCode::SUCCESS;
    }
    match serve(&args, config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("Error: {error:?}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: &Args, config: Config) -> anyhow::Result<()> {
    let _telemetry = runway_telemetry::init(runway_telemetry::Setup {
        format: args.log_format,
        default_filter: "info,sqlx=warn",
        service: "runway-agent",
        host: &config.name,
        export: config.telemetry.export(),
    })
    .context("cannot set up trace export (`[telemetry] otlp_endpoint`)")?;
    let shutdown = CancellationToken::new();
    let signal = shutdown.clone();
    tokio::spawn(async move {
        runway_daemon::shutdown::terminated().await;
        tracing::info!("stopping: finishing running commands");
        signal.cancel();
    });
    runway_agent::run(config, shutdown).await.context("agent stopped with an error")
}
