//! runway's coordinator: leader election in etcd, the rollout runner, the
//! agent registry and the operator API.
//!
//! # Layout
//!
//! Listed from the bottom up: each module uses only modules above it in
//! this list (a unit test, `module_graph`, checks that there is no cycle).
//!
//! - [`placeholders`]: `{{name}}` in webhook bodies and analysis queries.
//! - [`config`]: the coordinator's config.
//! - [`failpoint`]: faults the fault-injection tests switch on (test builds only: the `failpoints` feature).
//! - [`fencing`]: a leader's [`fencing::Term`] and its [`fencing::FencingToken`].
//! - [`model`]: the saved rollout record, step kinds and states, their wire form.
//! - [`analysis`]: Prometheus queries and their verdicts (canary, watch, monitor).
//! - [`metrics`]: Prometheus metrics and the opt-in `/metrics` endpoint.
//! - [`store`]: a fenced key/value store ([`store::Kv`]): etcd, or memory for tests.
//! - [`leadership`]: the [`leadership::Election`] trait; campaigning in etcd, or
//!   leadership a test hands out.
//! - [`repo`]: what the coordinator saves in the store and under which keys:
//!   rollouts, bundles, the event log and its feed, claims, the inventory,
//!   the audit log, and retention.
//! - [`registry`]: the agents connected to the leader.
//! - [`accept`]: connections before gRPC: caps, TLS handshakes with a
//!   deadline, closing those of revoked certificates after a reload.
//! - [`systemd`]: readiness, leadership status and watchdog pings for systemd.
//! - [`dispatch`]: commands to agents, events and results back.
//! - [`policy`]: the runbook's policies (staging first, maintenance) as
//!   decisions over saved facts.
//! - [`rollout`]: the rollout's logic: its steps, commands, recovery,
//!   approvals, restarts, and the runner that drives it.
//! - [`webhooks`]: webhooks told about rollouts, from the saved event log.
//! - [`api`]: the gRPC services and the one error-to-status conversion.

pub mod accept;
pub mod analysis;
pub mod api;
pub mod config;
pub mod dispatch;
pub mod failpoint;
pub mod fencing;
pub mod leadership;
pub mod metrics;
pub mod model;
pub mod placeholders;
pub mod policy;
pub mod registry;
pub mod repo;
pub mod rollout;
pub mod store;
pub mod systemd;
pub mod webhooks;

#[cfg(test)]
mod module_graph;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use runway_proto::v1::agent_channel_server::AgentChannelServer;
use runway_proto::v1::operator_server::OperatorServer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::leadership::Election;
use crate::leadership::etcd::EtcdElection;
use crate::repo::RolloutStore;
use crate::store::etcd::EtcdKv;

/// The coordinator could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// etcd cannot be reached; check `etcd_endpoints`.
    #[error("cannot connect to etcd at {endpoints}: {error}")]
    Etcd { endpoints: String, error: etcd_client::Error },
    /// The gRPC server failed.
    #[error("gRPC server: {0}")]
    Serve(tonic::transport::Error),
    /// `[tls]` cannot be used.
    #[error("coordinator TLS: {0}")]
    Tls(String),
    /// The webhook client cannot be set up.
    #[error(transparent)]
    Notify(#[from] webhooks::ClientError),
    /// `SIGHUP` cannot be listened for.
    #[error("cannot listen for SIGHUP (certificate reloads): {0}")]
    Signal(std::io::Error),
    /// `[telemetry] metrics_listen` cannot be bound.
    #[error("cannot serve metrics at `[telemetry] metrics_listen`: {0}")]
    Metrics(std::io::Error),
}

/// By hand, not `#[from]`: the message already holds the server's error,
/// so it is not also the `source()` a reporter would print a second time.
impl From<tonic::transport::Error> for StartError {
    fn from(error: tonic::transport::Error) -> Self {
        StartError::Serve(error)
    }
}

/// Loads `[tls]`: a coordinator's certificate must name a coordinator
/// identity, or agents would refuse it ([`config::names_a_coordinator`];
/// [`config::Config::check`] has checked the same already).
fn load_security(config: &config::Config) -> Result<runway_identity::tls::Security, StartError> {
    use runway_identity::tls::Security;
    let security = config
        .tls
        .load("`[tls] ca, cert and key` in the coordinator config")
        .map_err(|e| StartError::Tls(e.to_string()))?;
    match &security {
        Security::Insecure => tracing::warn!(
            "INSECURE MODE: [tls] insecure = true; anyone who reaches this port can drive rollouts. Use only for throwaway test setups"
        ),
        Security::Mutual(credentials) => {
            config::names_a_coordinator(credentials.identity())
                .map_err(|e| StartError::Tls(format!("[tls] cert: {e}")))?;
            tracing::info!(identity = %credentials.identity(), "mTLS on");
        }
    }
    if !matches!(security, Security::Insecure)
        && config.etcd_endpoints.iter().any(|e| !e.starts_with("https://"))
    {
        tracing::warn!(endpoints = %config.etcd_endpoints.join(","), "TLS is on but some etcd endpoints are plain http://");
    }
    Ok(security)
}

/// Calls one client connection may have open at once (an agent holds one
/// or two; a CLI a few).
const MAX_STREAMS_PER_CONNECTION: u32 = 256;

/// Reads `[tls]` again on `SIGHUP` and when one of its files changes: new
/// handshakes use the new files, and connections whose certificate the
/// new CA or revocation list refuses are closed. A failed reload keeps
/// the old config. (etcd's client keeps the certificate it started with.)
fn watch_certificates(
    config: &Arc<config::Config>,
    acceptor: &accept::Acceptor,
    tracker: &TaskTracker,
    shutdown: CancellationToken,
) -> Result<(), StartError> {
    let tls = &config.tls;
    let files = [&tls.ca, &tls.cert, &tls.key, &tls.crl].into_iter().flatten().cloned().collect();
    let trigger = runway_daemon::reload::Trigger::new(files, runway_daemon::reload::POLL_EVERY)
        .map_err(StartError::Signal)?;
    let (config, acceptor) = (Arc::clone(config), acceptor.clone());
    runway_daemon::reload::spawn(tracker, shutdown, trigger, "certificates", move || {
        let reloaded = reload_certificates(&config, &acceptor);
        std::future::ready(reloaded)
    });
    Ok(())
}

fn reload_certificates(config: &config::Config, acceptor: &accept::Acceptor) -> Result<String, String> {
    let security = config.tls.load("`[tls] ca, cert and key`").map_err(|e| e.to_string())?;
    let credentials = security.credentials().ok_or("[tls] insecure cannot change without a restart")?;
    config::names_a_coordinator(credentials.identity()).map_err(|e| format!("[tls] cert: {e}"))?;
    let tls = credentials.server_tls().map_err(|e| e.to_string())?;
    let closed = acceptor.reload(tls);
    Ok(format!(
        "new connections use them; closed {closed} connection(s) whose certificate is no longer accepted"
    ))
}

/// Runs a coordinator on `listener` until `shutdown` fires.
pub async fn run(
    config: config::Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), StartError> {
    let config = Arc::new(config);
    if failpoint::BUILT_IN {
        tracing::warn!(
            "this is a test build: it has failpoints (the `failpoints` feature); never run it in production"
        );
    }
    let security = load_security(&config)?;
    // Every connection is a file; the caps mean nothing under a lower limit.
    let files = runway_daemon::limits::raise_open_files(config.server.max_connections as u64 + 1024);
    if files < config.server.max_connections as u64 {
        tracing::warn!(
            open_files = files,
            max_connections = config.server.max_connections,
            "the open-files limit is below `[server] max_connections`; raise LimitNOFILE"
        );
    }
    let server_tls = match security.credentials() {
        Some(credentials) => Some(credentials.server_tls().map_err(|e| StartError::Tls(e.to_string()))?),
        None => None,
    };
    let acceptor = accept::Acceptor::new(config.server, server_tls);
    let mut options = etcd_client::ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(3))
        .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2));
    if let Some(tls) = security.client_by_host_name() {
        options = options.with_tls(tls);
    }
    let client = etcd_client::Client::connect(&config.etcd_endpoints, Some(options))
        .await
        .map_err(|error| StartError::Etcd { endpoints: config.etcd_endpoints.join(","), error })?;

    let tracker = TaskTracker::new();
    runway_daemon::metrics_endpoint::start(
        config.telemetry.metrics_listen,
        &tracker,
        shutdown.clone(),
        &metrics::get().registry,
    )
    .await
    .map_err(StartError::Metrics)?;
    let store =
        store::Store::new(Arc::new(EtcdKv::new(client.clone(), &config.etcd_prefix)), &config.etcd_prefix);
    let election: Arc<dyn Election> = Arc::new(EtcdElection::start(
        client,
        store.election_name(),
        config.advertise.clone(),
        config.lease_ttl,
        shutdown.clone(),
        &tracker,
    ));
    let kv = store.clone();
    let store = RolloutStore::new(store);
    let registry = registry::Registry::default();
    let dispatcher = dispatch::Dispatcher::new(registry.clone());
    let (bus, _) = tokio::sync::broadcast::channel(1024);
    let runner = rollout::runner::Runner::new(
        Arc::clone(&config),
        store.clone(),
        bus.clone(),
        dispatcher.clone(),
        registry.clone(),
        tracker.clone(),
    );
    tracker.spawn(runner.clone().follow_leadership(Arc::clone(&election), shutdown.clone()));
    let webhooks = webhooks::Webhooks::new(Arc::clone(&config), store.clone(), kv, tracker.clone())?;
    tracker.spawn(webhooks.clone().follow_leadership(Arc::clone(&election), shutdown.clone()));

    if !config.tls.insecure {
        watch_certificates(&config, &acceptor, &tracker, shutdown.clone())?;
    }
    let shared = Arc::new(api::Shared {
        config: Arc::clone(&config),
        security,
        election: Arc::clone(&election),
        registry,
        dispatcher,
        store,
        runner,
        bus,
        webhooks,
        refusals: api::refusals::RefusalLimiter::default(),
        shutdown: shutdown.clone(),
        tasks: tracker.clone(),
    });
    tracing::info!(name = %config.name, addr = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "coordinator serving");
    // TLS runs in `accept`, one task per handshake, before tonic sees a connection.
    let mut server = tonic::transport::Server::builder()
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)));
    // Bundles travel in operator requests and agent commands: both services
    // take messages up to the size every runway hop is built for (a
    // coordinator's smaller `max_bundle_bytes` is refused by the handler,
    // with a clear error rather than tonic's).
    let limit = runway_proto::bundle::MAX_MESSAGE_BYTES;
    let operator = OperatorServer::new(api::operator::OperatorService::new(Arc::clone(&shared)))
        .max_decoding_message_size(limit)
        .max_encoding_message_size(limit);
    let agents = AgentChannelServer::new(api::agents::AgentService::new(shared))
        .max_decoding_message_size(limit)
        .max_encoding_message_size(limit);
    let router = server.add_service(operator).add_service(agents);
    let stop = shutdown.clone().cancelled_owned();
    let serve: Pin<Box<dyn Future<Output = Result<(), tonic::transport::Error>> + Send>> =
        if config.tls.insecure {
            let incoming = acceptor.serve_plain(listener, &tracker, shutdown.clone());
            Box::pin(router.serve_with_incoming_shutdown(systemd::ready_when_accepting(incoming), stop))
        } else {
            let incoming = acceptor.serve_tls(listener, &tracker, shutdown.clone());
            Box::pin(router.serve_with_incoming_shutdown(systemd::ready_when_accepting(incoming), stop))
        };
    let served = systemd::report_while(election, serve).await;
    shutdown.cancel();
    tracker.close();
    tracker.wait().await;
    served.map_err(StartError::from)
}
