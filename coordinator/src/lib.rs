//! runway's coordinator: leader election in etcd, the rollout engine, the
//! agent registry and the operator API.
//!
//! # Layout
//!
//! - [`config`]: the coordinator's config.
//! - [`leadership`]: campaigning in etcd; the [`leadership::FencingToken`].
//! - [`store`]: rollout state in etcd, every write fenced.
//! - [`registry`]: the agents connected to the leader.
//! - [`dispatch`]: commands to agents, events and results back.
//! - [`failpoint`]: faults the fault-injection tests switch on.
//! - [`rollout`]: the plan, the saved state machine, the event log.
//! - [`api`]: the gRPC services and the one error-to-status conversion.

pub mod api;
pub mod config;
pub mod dispatch;
pub mod failpoint;
pub mod leadership;
pub mod registry;
pub mod rollout;
pub mod store;

use std::sync::Arc;
use std::time::Duration;

use runway_proto::v1::agent_channel_server::AgentChannelServer;
use runway_proto::v1::operator_server::OperatorServer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::leadership::{Election, Leadership};

/// The coordinator could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot connect to etcd at {endpoints}: {source}")]
    Etcd { endpoints: String, source: etcd_client::Error },
    #[error("gRPC server: {0}")]
    Serve(#[from] tonic::transport::Error),
}

/// Runs a coordinator on `listener` until `shutdown` fires.
pub async fn run(
    config: config::Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), StartError> {
    let config = Arc::new(config);
    let options = etcd_client::ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(3))
        .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2));
    let client = etcd_client::Client::connect(&config.etcd_endpoints, Some(options))
        .await
        .map_err(|source| StartError::Etcd { endpoints: config.etcd_endpoints.join(","), source })?;

    let tracker = TaskTracker::new();
    let store = store::Store::new(client.clone(), &config.etcd_prefix);
    let election = Election::start(
        client,
        store.election_name(),
        config.advertise.clone(),
        config.lease_ttl(),
        shutdown.clone(),
        &tracker,
    );
    let registry = registry::Registry::default();
    let dispatcher = dispatch::Dispatcher::new(registry.clone());
    let (bus, _) = tokio::sync::broadcast::channel(1024);
    let engine = rollout::engine::Engine::new(
        Arc::clone(&config),
        store.clone(),
        bus.clone(),
        dispatcher.clone(),
        registry.clone(),
        tracker.clone(),
    );
    tracker.spawn(follow_leadership(election.clone(), engine.clone(), registry.clone(), shutdown.clone()));

    let shared = Arc::new(api::Shared {
        config: Arc::clone(&config),
        election,
        registry,
        dispatcher,
        store,
        engine,
        bus,
    });
    tracing::info!(name = %config.name, addr = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "coordinator serving");
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let served = tonic::transport::Server::builder()
        .add_service(OperatorServer::new(api::operator::OperatorService::new(Arc::clone(&shared))))
        .add_service(AgentChannelServer::new(api::agents::AgentService::new(shared)))
        .serve_with_incoming_shutdown(incoming, shutdown.clone().cancelled_owned())
        .await;
    shutdown.cancel();
    tracker.close();
    tracker.wait().await;
    served.map_err(StartError::from)
}

/// Starts the engine each time this coordinator becomes leader; drops
/// agent sessions when it stops being leader.
async fn follow_leadership(
    election: Election,
    engine: rollout::engine::Engine,
    registry: registry::Registry,
    shutdown: CancellationToken,
) {
    let mut changes = election.subscribe();
    let mut leading = false;
    loop {
        let state = changes.borrow_and_update().clone();
        match state {
            Leadership::Leader(term) if !leading => {
                leading = true;
                engine.lead(term);
            }
            Leadership::Follower { .. } if leading => {
                leading = false;
                registry.clear();
            }
            _ => {}
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = changes.changed() => if changed.is_err() { return },
        }
    }
}
