//! The agent channel: one bidirectional stream per connected agent.
//!
//! Only the leader accepts agents; a follower refuses with the leader's
//! address. When the leader's term ends every agent stream is closed, so
//! agents move to the new leader.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use runway_identity::Identity;
use runway_proto::v1::agent_channel_server::AgentChannel;
use runway_proto::v1::{
    AgentInfo, AgentMessage, CoordinatorMessage, Heartbeat, LeaderInfo, LeaderRequest, Register, Registered,
    agent_message, coordinator_message,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use super::Shared;
use super::error::ApiError;
use crate::fencing::Term;
use crate::leadership::Leadership;
use crate::registry::{AgentKey, AgentSender, Session};

pub struct AgentService {
    shared: Arc<Shared>,
}

impl AgentService {
    pub fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }
}

type Outbound = Pin<Box<dyn Stream<Item = Result<CoordinatorMessage, Status>> + Send>>;

#[tonic::async_trait]
impl AgentChannel for AgentService {
    type AttachStream = Outbound;

    async fn leader(&self, _: Request<LeaderRequest>) -> Result<Response<LeaderInfo>, Status> {
        let responder = self.shared.config.name.clone();
        let info = match self.shared.election.current() {
            Leadership::Leader(term) => LeaderInfo {
                address: self.shared.config.advertise.clone(),
                fencing_token: term.token.0,
                responder,
                responder_leads: !term.cancel.is_cancelled(),
            },
            Leadership::Follower { leader, token } => LeaderInfo {
                address: leader.unwrap_or_default(),
                fencing_token: token.map_or(0, |t| t.0),
                responder,
                responder_leads: false,
            },
        };
        Ok(Response::new(info))
    }

    async fn attach(&self, request: Request<Streaming<AgentMessage>>) -> Result<Response<Outbound>, Status> {
        let term = self.shared.leader_term()?;
        let certified = super::auth::peer_identity(&self.shared.security, &request)?;
        let peer = request.remote_addr().map_or_else(|| "an unknown address".to_owned(), |a| a.to_string());
        let mut inbound = request.into_inner();
        let register = match tokio::time::timeout(Duration::from_secs(10), inbound.message()).await {
            Ok(Ok(Some(AgentMessage { kind: Some(agent_message::Kind::Register(r)) }))) => r,
            Ok(Err(status)) => return Err(status),
            Err(_) => return Err(Status::deadline_exceeded("no register message within 10 s")),
            Ok(_) => {
                return Err(Status::invalid_argument(
                    "the first message on the agent channel must be register",
                ));
            }
        };
        validate(&self.shared, &register)?;
        match certified {
            None => {}
            Some(Identity::Agent { environment, name })
                if environment == register.environment && name == register.name => {}
            Some(other) => {
                tracing::warn!(claimed = %register.name, environment = %register.environment, certificate = %other, "refused an agent registration that does not match its certificate");
                return Err(Status::permission_denied(format!(
                    "registration as agent {} in {} refused: the client certificate names {other}",
                    register.name, register.environment
                )));
            }
        }

        let (outgoing, rx) = mpsc::channel(256);
        let tx = AgentSender::new(outgoing.clone());
        let now = runway_proto::unix_ms_now();
        let key = AgentKey::new(&register.environment, &register.name);
        let info = AgentInfo {
            name: register.name,
            environment: register.environment,
            roles: register.roles,
            labels: register.labels,
            runway_version: register.runway_version,
            app_version: register.app_version,
            databases: register.databases,
            connected_unix_ms: now,
            last_seen_unix_ms: now,
        };
        tracing::info!(agent = %key, roles = ?info.roles, %peer, "agent registered");
        if let Err(e) = self.shared.store.record_agent(&term, &info).await {
            tracing::warn!(agent = %key, error = %e, "cannot record the agent in the environment's inventory");
        }
        let session = self.shared.registry.register(info, tx.clone(), &peer);
        match &session.replaced {
            Some(old) if old.flapping => tracing::error!(
                agent = %key,
                peers = %format!("{} and {peer}", old.peer),
                "two processes hold this agent's identity and keep replacing each other's session \
                 ({} and {peer}): a cloned host or a unit started twice? Stop one of them",
                old.peer
            ),
            Some(old) => tracing::warn!(agent = %key, old_peer = %old.peer, new_peer = %peer,
                "agent registered again; closing its older session"),
            None => {}
        }
        let heartbeat = self.shared.config.heartbeat.max(Duration::from_secs(1));
        let registered = Registered {
            coordinator: self.shared.config.name.clone(),
            heartbeat_interval_secs: heartbeat.as_secs() as u32,
            fencing_token: term.token.0,
        };
        tx.send(Ok(Box::new(CoordinatorMessage {
            kind: Some(coordinator_message::Kind::Registered(registered)),
        })))
        .await
        .map_err(|_| Status::unavailable("agent stream closed during registration"))?;
        self.shared.dispatcher.resend_for(&key).await;

        let shared = Arc::clone(&self.shared);
        self.shared.spawn_relay(outgoing, async move {
            let end = serve_session(&shared, &key, &session, term, heartbeat, inbound, &tx).await;
            tracing::info!(agent = %key, reason = %end, "agent session ended");
            shared.registry.unregister(&key, session.id);
            let status = match end {
                SessionEnd::LeadershipEnded => Some(ApiError::NotLeader { leader: None }.into()),
                SessionEnd::Replaced => Some(Status::aborted(format!(
                    "another process registered as agent {key}: this session is closed"
                ))),
                _ => None,
            };
            if let Some(status) = status {
                let _ = tx.send(Err(status)).await;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx).map(|message| message.map(|m| *m)))))
    }
}

fn validate(shared: &Shared, register: &Register) -> Result<(), Status> {
    if register.name.trim().is_empty() {
        return Err(Status::invalid_argument("agent name must not be empty"));
    }
    if !shared.config.environments.contains(&register.environment) {
        return Err(Status::invalid_argument(format!(
            "agent {} belongs to unknown environment {:?}; the coordinator knows: {}",
            register.name,
            register.environment,
            shared.config.environments.list()
        )));
    }
    if let Some(role) = register.roles.iter().find(|r| *r != "db" && *r != "app") {
        return Err(Status::invalid_argument(format!("agent {} has unknown role {role:?}", register.name)));
    }
    crate::rollout::target::check_names(&register.name, &register.databases)
        .map_err(Status::invalid_argument)?;
    Ok(())
}

/// Why an agent's session ended.
enum SessionEnd {
    LeadershipEnded,
    /// A newer session of the same agent replaced it.
    Replaced,
    /// The agent closed its stream, or it broke.
    Closed(String),
    /// Nothing heard for three heartbeat intervals.
    Silent(Duration),
    RegisteredTwice,
}

impl std::fmt::Display for SessionEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::LeadershipEnded => write!(f, "leadership ended"),
            Self::Replaced => write!(f, "replaced by a newer session of the same agent"),
            Self::Closed(why) => write!(f, "{why}"),
            Self::Silent(for_) => write!(f, "agent silent for {} s", for_.as_secs()),
            Self::RegisteredTwice => write!(f, "agent registered twice on one stream"),
        }
    }
}

/// Relays one agent's messages until the stream ends, the agent goes
/// silent, a newer session replaces it, or leadership ends.
async fn serve_session(
    shared: &Shared,
    key: &AgentKey,
    session: &Session,
    term: Term,
    heartbeat: Duration,
    mut inbound: Streaming<AgentMessage>,
    tx: &AgentSender,
) -> SessionEnd {
    let mut ticker = tokio::time::interval(heartbeat);
    let mut last_heard = Instant::now();
    loop {
        tokio::select! {
            _ = term.cancel.cancelled() => return SessionEnd::LeadershipEnded,
            _ = session.closed.cancelled() => return SessionEnd::Replaced,
            message = inbound.message() => match message {
                Ok(Some(message)) => {
                    last_heard = Instant::now();
                    session.heard();
                    match message.kind {
                        Some(agent_message::Kind::Event(event)) => shared.dispatcher.on_event(key, event),
                        Some(agent_message::Kind::Result(result)) => shared.dispatcher.on_result(key, result),
                        Some(agent_message::Kind::Heartbeat(_)) | None => {}
                        Some(agent_message::Kind::Register(_)) => return SessionEnd::RegisteredTwice,
                    }
                }
                Ok(None) => return SessionEnd::Closed("agent closed the stream".into()),
                Err(status) => return SessionEnd::Closed(format!("stream error: {}", status.message())),
            },
            _ = ticker.tick() => {
                if last_heard.elapsed() > heartbeat * 3 {
                    return SessionEnd::Silent(last_heard.elapsed());
                }
                // Whatever else went down tells the agent we are alive.
                if !runway_proto::heartbeat_due(tx.quiet_for(), heartbeat) {
                    continue;
                }
                let beat = CoordinatorMessage { kind: Some(coordinator_message::Kind::Heartbeat(Heartbeat { unix_ms: runway_proto::unix_ms_now() })) };
                if tx.send(Ok(Box::new(beat))).await.is_err() {
                    return SessionEnd::Closed("agent stream closed".into());
                }
            }
        }
    }
}
