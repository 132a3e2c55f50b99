//! The agent's link to the coordinators.
//!
//! The agent dials out (so it works through NAT and firewalls and holds no
//! etcd credentials), registers, then keeps one bidirectional stream open:
//! commands come down, events and results go up. Heartbeats flow both ways
//! (each side sends one only when it sent nothing else for half an
//! interval: any message proves it alive); a coordinator silent for three
//! intervals is treated as dead. When the
//! stream ends the agent redials with backoff, trying the leader a follower
//! named first, then the configured addresses in turn.
//!
//! While attached, the agent asks the other coordinators now and then who
//! leads. If one names a leader with a higher fencing token, the coordinator
//! the agent is attached to was deposed without noticing; the agent raises
//! its highest token (refusing the old leader from then on) and moves.
//!
//! Sessions and probes share one connection per coordinator (see
//! [`crate::channels`]): after a failover the agent reattaches over the
//! connection its probes already hold to the new leader.

use std::sync::Arc;
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder};
use runway_proto::v1::agent_channel_client::AgentChannelClient;
use runway_proto::v1::{
    AgentMessage, CoordinatorMessage, Heartbeat, LeaderInfo, LeaderRequest, Register, agent_message,
    coordinator_message,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use runway_identity::tls::Security;

use crate::channels::{self, Channels};
use crate::config::Config;
use crate::exec::Executor;

const MIN_BACKOFF: Duration = Duration::from_millis(200);
/// Short: during a failover the agent should find the new leader within a
/// second of its election.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// How long a stopping agent waits for the coordinator to close the stream.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(3);

/// How long a probe waits for a coordinator to say who leads.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// How a session ended.
#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("cannot reach coordinator {addr}: {message}")]
    Unreachable { addr: String, message: String },
    #[error("coordinator {addr} refused the agent: {message}")]
    Refused { addr: String, message: String, leader: Option<String> },
    #[error("coordinator {addr} went silent for {secs} s")]
    Silent { addr: String, secs: u64 },
    #[error("coordinator {addr} closed the stream")]
    Closed { addr: String },
    #[error("not attaching to coordinator {addr}: {reason}")]
    NotAccepted { addr: String, reason: String },
    #[error(
        "coordinator {peer} reports a newer leader {leader} (fencing token {newer} > {token}); \
         leaving {addr}, which was deposed without noticing"
    )]
    Superseded { addr: String, token: u64, peer: String, leader: String, newer: u64 },
}

/// Keeps the agent connected until `shutdown` fires.
pub async fn run(
    config: Arc<Config>,
    security: Security,
    executor: Executor,
    mut outbox: mpsc::UnboundedReceiver<AgentMessage>,
    shutdown: CancellationToken,
) {
    let redial =
        ExponentialBuilder::new().with_min_delay(MIN_BACKOFF).with_max_delay(MAX_BACKOFF).without_max_times();
    let mut delays = redial.build();
    let mut next = 0usize;
    let mut hint: Option<String> = None;
    // Whether the last dial followed a hint without waiting.
    let mut hopped = false;
    let channels = Channels::new(security);
    while !shutdown.is_cancelled() {
        let addr = hint.take().unwrap_or_else(|| {
            let addr = config.coordinators[next % config.coordinators.len()].clone();
            next += 1;
            addr
        });
        let started = Instant::now();
        let ended = session(&addr, &config, &channels, &executor, &mut outbox, &shutdown).await;
        if let Err(e) = &ended {
            crate::systemd::reconnecting(e);
        }
        match ended {
            Ok(()) => return,
            Err(SessionError::Refused { leader: Some(leader), .. }) => {
                tracing::info!(%addr, %leader, "coordinator is a follower; dialing the leader");
                hint = Some(leader);
            }
            Err(e @ SessionError::Superseded { .. }) => {
                tracing::warn!(error = %e, "dialing the newer leader");
                if let SessionError::Superseded { leader, .. } = e {
                    hint = Some(leader).filter(|l| !l.is_empty());
                }
            }
            Err(e) => tracing::warn!(error = %e, "coordinator session ended"),
        }
        // A named leader is dialled at once, but only once in a row: every
        // other way back to dialling waits here, so a follower that names
        // itself (a stale election key) is not redialled in a tight loop.
        if hint.is_some() && !hopped {
            hopped = true;
            continue;
        }
        hopped = false;
        if started.elapsed() > Duration::from_secs(10) {
            delays = redial.build();
        }
        let delay = delays.next().unwrap_or(MAX_BACKOFF);
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// One stream to one coordinator. `Ok(())` only on shutdown.
async fn session(
    addr: &str,
    config: &Config,
    channels: &Channels,
    executor: &Executor,
    outbox: &mut mpsc::UnboundedReceiver<AgentMessage>,
    shutdown: &CancellationToken,
) -> Result<(), SessionError> {
    let (tx, mut inbound) = attach(addr, config, channels, executor).await?;
    // The config's interval until the coordinator says which it uses.
    let mut interval = config.heartbeat.max(Duration::from_secs(1));
    let mut ticker = tokio::time::interval(interval);
    let mut last_heard = Instant::now();
    // Any message tells the coordinator we are alive (`heartbeat_due`).
    let mut last_sent = Instant::now();
    // Set once registered: the leader's token, and the other coordinators
    // asking who leads now (stopped when the session ends).
    let mut token = 0u64;
    let (newer_tx, mut newer) = mpsc::channel::<(String, LeaderInfo)>(1);
    let probing = shutdown.child_token();
    let _stop_probing = probing.clone().drop_guard();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => {
                leave(addr, tx, outbox, &mut inbound).await;
                return Ok(());
            }
            Some((peer, info)) = newer.recv() => {
                // Raise the highest token first: the deposed leader is refused from now on.
                let _ = executor.accept_leader(info.fencing_token).await;
                return Err(SessionError::Superseded {
                    addr: addr.to_owned(),
                    token,
                    peer,
                    leader: info.address,
                    newer: info.fencing_token,
                });
            }
            message = inbound.message() => match message {
                Ok(Some(message)) => {
                    last_heard = Instant::now();
                    match message.kind {
                        Some(coordinator_message::Kind::Registered(r)) => {
                            if let Err(reason) = executor.accept_leader(r.fencing_token).await {
                                return Err(SessionError::NotAccepted { addr: addr.to_owned(), reason });
                            }
                            tracing::info!(coordinator = %r.coordinator, %addr, token = r.fencing_token, "registered");
                            crate::systemd::attached(addr);
                            token = r.fencing_token;
                            if r.heartbeat_interval_secs > 0 {
                                interval = Duration::from_secs(u64::from(r.heartbeat_interval_secs));
                                ticker = tokio::time::interval(interval);
                            }
                            let peers = config.coordinators.iter().filter(|a| *a != addr).cloned().collect();
                            tokio::spawn(watch_for_newer_leader(channels.clone(), peers, token, interval * 3, newer_tx.clone(), probing.clone()));
                        }
                        Some(coordinator_message::Kind::Command(cmd)) => executor.submit(cmd).await,
                        Some(coordinator_message::Kind::Heartbeat(_)) | None => {}
                    }
                }
                Ok(None) => return Err(SessionError::Closed { addr: addr.to_owned() }),
                Err(status) => return Err(status_error(addr, status)),
            },
            Some(message) = outbox.recv() => {
                if tx.send(message).await.is_err() {
                    return Err(SessionError::Closed { addr: addr.to_owned() });
                }
                last_sent = Instant::now();
            }
            _ = ticker.tick() => {
                if last_heard.elapsed() > interval * 3 {
                    return Err(SessionError::Silent { addr: addr.to_owned(), secs: last_heard.elapsed().as_secs() });
                }
                if !runway_proto::heartbeat_due(last_sent.elapsed(), interval) {
                    continue;
                }
                last_sent = Instant::now();
                let beat = AgentMessage { kind: Some(agent_message::Kind::Heartbeat(Heartbeat { unix_ms: runway_proto::unix_ms_now() })) };
                if tx.send(beat).await.is_err() {
                    return Err(SessionError::Closed { addr: addr.to_owned() });
                }
            }
        }
    }
}

/// Dials `addr` and registers: the stream to send on, and the one the
/// coordinator's messages come down.
async fn attach(
    addr: &str,
    config: &Config,
    channels: &Channels,
    executor: &Executor,
) -> Result<(mpsc::Sender<AgentMessage>, tonic::Streaming<CoordinatorMessage>), SessionError> {
    let channel = channels
        .get(addr)
        .map_err(|e| SessionError::Unreachable { addr: addr.to_owned(), message: e.to_string() })?;
    // Commands carry whole migration bundles: accept what the coordinator
    // may send (tonic's default would refuse anything over 4 MiB).
    let limit = runway_proto::bundle::MAX_MESSAGE_BYTES;
    let mut client =
        AgentChannelClient::new(channel).max_decoding_message_size(limit).max_encoding_message_size(limit);
    let (tx, rx) = mpsc::channel::<AgentMessage>(256);
    tx.send(AgentMessage { kind: Some(agent_message::Kind::Register(register(config, executor))) })
        .await
        .expect("fresh channel has room");
    let inbound = client
        .attach(ReceiverStream::new(rx))
        .await
        .map_err(|status| status_error(addr, status))?
        .into_inner();
    Ok((tx, inbound))
}

/// What the agent tells a coordinator about itself when it attaches.
fn register(config: &Config, executor: &Executor) -> Register {
    Register {
        name: config.name.clone(),
        environment: config.environment.clone(),
        roles: config.roles.iter().map(|r| r.as_str().to_owned()).collect(),
        labels: config.labels.clone().into_iter().collect(),
        runway_version: env!("CARGO_PKG_VERSION").to_owned(),
        app_version: executor.app_version(),
        databases: if config.has_role(crate::config::Role::Db) {
            crate::databases::names(config)
        } else {
            Vec::new()
        },
    }
}

/// How a status from `addr` ends a session: one that never came from a
/// coordinator means the connection failed; any other is the
/// coordinator's refusal (a follower's names the leader).
fn status_error(addr: &str, status: tonic::Status) -> SessionError {
    if channels::unreachable(&status) {
        SessionError::Unreachable { addr: addr.to_owned(), message: runway_engine::errors::chain(&status) }
    } else {
        SessionError::Refused {
            addr: addr.to_owned(),
            message: status.message().to_owned(),
            leader: runway_proto::leader_hint(&status),
        }
    }
}

/// Leaves a coordinator politely: what the outbox still holds (the results
/// of commands that finished while the agent was stopping) is sent, the
/// stream is closed from this side, and the coordinator gets a moment to
/// see the end before the connection goes.
async fn leave(
    addr: &str,
    tx: mpsc::Sender<AgentMessage>,
    outbox: &mut mpsc::UnboundedReceiver<AgentMessage>,
    inbound: &mut tonic::Streaming<CoordinatorMessage>,
) {
    let mut sent = 0usize;
    while let Ok(message) = outbox.try_recv() {
        if tx.send(message).await.is_err() {
            break;
        }
        sent += 1;
    }
    drop(tx);
    let closed =
        tokio::time::timeout(LEAVE_TIMEOUT, async { while let Ok(Some(_)) = inbound.message().await {} });
    if closed.await.is_err() {
        tracing::warn!(%addr, "coordinator did not close the stream in time; leaving anyway");
    }
    tracing::info!(%addr, sent, "left the coordinator");
}

/// Asks the other coordinators every `every` who leads, and reports the
/// first answer naming a leader with a token above `token`: the coordinator
/// this agent is attached to was deposed without noticing (a paused
/// process), and only the agents can tell it from outside. Returns when
/// `stop` fires. (The benchmarks' simulated agents probe with it too.)
pub async fn watch_for_newer_leader(
    channels: Channels,
    peers: Vec<String>,
    token: u64,
    every: Duration,
    found: mpsc::Sender<(String, LeaderInfo)>,
    stop: CancellationToken,
) {
    // The agent's channel to each peer (kept open for the next failover);
    // a peer that does not answer within a second is skipped this round.
    let mut clients: Vec<(String, AgentChannelClient<tonic::transport::Channel>)> = peers
        .into_iter()
        .filter_map(|peer| {
            let channel = channels
                .get(&peer)
                .inspect_err(|e| tracing::warn!(error = %e, "not asking this coordinator who leads"))
                .ok()?;
            Some((peer, AgentChannelClient::new(channel)))
        })
        .collect();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        for (peer, client) in &mut clients {
            let asked = tokio::select! {
                _ = stop.cancelled() => return,
                answer = tokio::time::timeout(PROBE_TIMEOUT, client.leader(LeaderRequest {})) => answer,
            };
            if let Ok(Ok(info)) = asked.map(|answer| answer.map(tonic::Response::into_inner))
                && info.fencing_token > token
            {
                let _ = found.send((peer.clone(), info)).await;
                return;
            }
        }
    }
}
