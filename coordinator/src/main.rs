use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use runway_coordinator::config::{Config, ConfigError, Files};
use runway_daemon::config_check::refuse;
use tokio_util::sync::CancellationToken;

/// With ten thousand agents the coordinator makes and frees millions of
/// small buffers; glibc's allocator spent a tenth of a busy leader's CPU
/// on it (see the fleet benchmark).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// runway's coordinator: holds the leader lock in etcd, runs rollouts and
/// dispatches their commands to the agents. Run two or more for failover.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Config file (TOML). See deploy/coordinator.toml. Without it, defaults
    /// apply (listen 127.0.0.1:7400, etcd at 127.0.0.1:2379).
    #[arg(short, long, env = "RUNWAY_COORDINATOR_CONFIG")]
    config: Option<PathBuf>,
    /// Overrides `listen` from the config.
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    /// Overrides `name` from the config.
    #[arg(long)]
    name: Option<String>,
    /// Log lines as text for a person, or as one JSON object per line for
    /// a log shipper, with the rollout id and trace id of the span a line
    /// belongs to.
    #[arg(long, value_enum, env = "RUNWAY_LOG_FORMAT", default_value = "text")]
    log_format: runway_telemetry::LogFormat,
    /// Check the config (with the overrides above) as at start-up: every
    /// key, address and file, as this user. Print the result and exit
    /// without starting: 0 when the coordinator would start with it, 2
    /// when not (each problem named by file, table and key). The systemd
    /// unit runs it as `ExecStartPre=`.
    #[arg(long)]
    check_config: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let config = match config(&args) {
        Ok(config) => config,
        Err(error) => {
            let file = args.config.as_ref().map_or("FILE".into(), |path| path.display().to_string());
            return refuse("runway-coordinator", &error, &format!("--coordinator {file}"));
        }
    };
    runway_daemon::config_check::warn(&config.warnings);
    if args.check_config {
        let file =
            args.config.as_ref().map_or("(no file: defaults)".into(), |path| path.display().to_string());
        println!("{file}: OK (coordinator config)");
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

/// The config file with the command line's overrides, every key, address
/// and file checked: before binding or connecting anywhere.
fn config(args: &Args) -> Result<Config, ConfigError> {
    let mut config = Config::read(args.config.as_deref())?;
    if let Some(listen) = args.listen {
        config.listen = listen;
        config.advertise.clear();
    }
    if let Some(name) = &args.name {
        config.name = name.clone();
    }
    config.check(args.config.as_deref(), Files::Check)?;
    Ok(config)
}

async fn serve(args: &Args, config: Config) -> anyhow::Result<()> {
    let _telemetry = runway_telemetry::init(runway_telemetry::Setup {
        format: args.log_format,
        default_filter: "info",
        service: "runway-coordinator",
        host: &config.name,
        export: config.telemetry.export(),
    })
    .context("cannot set up trace export (`[telemetry] otlp_endpoint`)")?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let shutdown = CancellationToken::new();
    let signal = shutdown.clone();
    tokio::spawn(async move {
        runway_daemon::shutdown::terminated().await;
        tracing::info!("stopping");
        runway_daemon::notify::stopping();
        signal.cancel();
    });
    runway_coordinator::run(config, listener, shutdown).await?;
    Ok(())
}
