//! runway's agent: runs typed commands on one host and streams progress back.
//!
//! The database work itself (migrations, backups) is `runway_engine`; this
//! crate is about being an agent: identity and config, the link to the
//! coordinators, the command journal, and the host's own hooks and checks.
//!
//! # Layout
//!
//! - [`config`]: the agent's TOML config: who it is and what it may do.
//! - [`channels`]: how the agent reaches its coordinators (addresses, TLS).
//! - [`connection`]: dials the coordinator, registers, keeps the stream alive.
//! - [`databases`]: the databases a DB agent serves, by name, and their backup dirs.
//! - [`deployed`]: the app version this host last deployed, kept across restarts.
//! - [`exec`]: turns a `Command` into work on this host.
//! - [`failpoint`]: faults the fault-injection tests switch on (test builds only: the `failpoints` feature).
//! - [`journal`]: on-disk record of fencing tokens and command results.
//! - [`signed_uses`]: what was done under each operator signature (one use each).
//! - [`metrics`]: Prometheus metrics and the opt-in `/metrics` endpoint.
//! - [`backup_ops`]: list, show, verify and restore backups for an operator.
//! - [`hooks`]: the maintenance and restart hooks.
//! - [`health`]: polling a health URL.
//! - [`systemd`]: readiness, link status and watchdog pings for systemd.

pub mod backup_ops;
pub mod channels;
pub use runway_engine::agent_config as config;
pub mod connection;
pub use runway_engine::agent_config::databases;
pub mod deployed;
pub mod exec;
pub mod failpoint;
pub mod health;
pub mod hooks;
pub mod journal;
pub mod metrics;
pub mod signed_uses;
pub mod systemd;

use std::sync::Arc;

use runway_identity::tls::Security;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Journal(#[from] journal::JournalError),
    #[error("agent TLS: {0}")]
    Tls(String),
    /// `[telemetry] metrics_listen` cannot be bound.
    #[error("cannot serve metrics at `[telemetry] metrics_listen`: {0}")]
    Metrics(std::io::Error),
    /// `SIGHUP` cannot be listened for.
    #[error("cannot listen for SIGHUP (certificate reloads): {0}")]
    Signal(std::io::Error),
}

/// Reads `[tls]` again on `SIGHUP` and when one of its files changes: the
/// connections the agent opens from then on use the new certificate, key,
/// CA and revocation list (a coordinator whose certificate is revoked is
/// refused). A failed reload keeps the old files; the CA that checks
/// deploy signatures stays the one loaded at start.
fn watch_certificates(
    config: &Arc<config::Config>,
    security: &Security,
    tracker: &TaskTracker,
    shutdown: CancellationToken,
) -> Result<(), StartError> {
    if security.credentials().is_none() {
        return Ok(());
    }
    let tls = &config.tls;
    let files = [&tls.ca, &tls.cert, &tls.key, &tls.crl].into_iter().flatten().cloned().collect();
    let trigger = runway_daemon::reload::Trigger::new(files, runway_daemon::reload::POLL_EVERY)
        .map_err(StartError::Signal)?;
    let (config, security) = (Arc::clone(config), security.clone());
    runway_daemon::reload::spawn(tracker, shutdown, trigger, "certificates", move || {
        let reloaded = load_security(&config).map_err(|e| e.to_string()).and_then(|fresh| {
            security.adopt(&fresh)?;
            Ok("connections opened from now on use them".to_owned())
        });
        std::future::ready(reloaded)
    });
    Ok(())
}

/// Loads `[tls]` and checks the certificate names this agent (see
/// [`config::names_this_agent`]); [`config::Config::load`] has checked
/// the same already.
pub fn load_security(config: &config::Config) -> Result<Security, StartError> {
    let security = config
        .tls
        .load("`[tls] ca, cert and key` in the agent config")
        .map_err(|e| StartError::Tls(e.to_string()))?;
    match security.credentials() {
        None => tracing::warn!(
            "INSECURE MODE: [tls] insecure = true; this agent takes commands from anyone who answers at its coordinator addresses"
        ),
        Some(credentials) => config::names_this_agent(config, credentials.identity())
            .map_err(|e| StartError::Tls(format!("[tls] cert: {e}")))?,
    }
    // An http:// coordinator with TLS on (or the reverse) would only fail
    // on every dial; say so now.
    for addr in &config.coordinators {
        security.address(addr).map_err(|e| StartError::Tls(format!("`coordinators`: {e}")))?;
    }
    Ok(security)
}

/// Runs the agent until `shutdown` fires. Stopping is a drain: commands
/// already running finish and their results reach the coordinator over the
/// still-open link before the link closes; new commands are not started.
pub async fn run(config: config::Config, shutdown: CancellationToken) -> Result<(), StartError> {
    if failpoint::BUILT_IN {
        tracing::warn!(
            "this is a test build: it has failpoints (the `failpoints` feature); never run it in production"
        );
    }
    let security = load_security(&config)?;
    let config = Arc::new(config);
    let journal = journal::Journal::open(&config.state_dir).await?;
    let (outbox_tx, outbox_rx) = tokio::sync::mpsc::unbounded_channel();
    let tracker = TaskTracker::new();
    // Apart from `tracker`: the drain waits for commands, not for scrapes.
    let metrics = TaskTracker::new();
    runway_daemon::metrics_endpoint::start(
        config.telemetry.metrics_listen,
        &metrics,
        shutdown.clone(),
        &metrics::get().registry,
    )
    .await
    .map_err(StartError::Metrics)?;
    watch_certificates(&config, &security, &metrics, shutdown.clone())?;
    let app_version = deployed::at_start(&config).await;
    let executor = exec::Executor::new(
        Arc::clone(&config),
        security.clone(),
        journal,
        outbox_tx,
        tracker.clone(),
        app_version,
    );
    tracing::info!(name = %config.name, environment = %config.environment, "agent starting");
    let link = CancellationToken::new();
    let drain = async {
        shutdown.cancelled().await;
        executor.stop_accepting();
        tracker.close();
        systemd::stopping(tracker.len());
        if !tracker.is_empty() {
            tracing::info!(
                running = tracker.len(),
                "stopping: finishing running commands before leaving the coordinator"
            );
        }
        tracker.wait().await;
        link.cancel();
        metrics.close();
        metrics.wait().await;
    };
    systemd::report_while(async {
        // Leftovers of backups killed mid-way, before any command can start a new one.
        if config.has_role(config::Role::Db) {
            backup_ops::sweep_at_start(&config, &shutdown).await;
        }
        tokio::join!(connection::run(config, security, executor.clone(), outbox_rx, link.clone()), drain)
    })
    .await;
    Ok(())
}
