//! The gRPC services: the operator API and the agent channel.

pub mod agents;
pub mod approvals;
pub mod audit;
pub mod auth;
pub mod backups;
pub mod error;
pub mod operator;
pub mod plan;
pub mod policy;
pub mod refusals;
mod signed;
pub mod status;

use std::sync::Arc;
use std::time::{Duration, Instant};

use runway_proto::v1::{self, CommandEvent, CommandResult};

use runway_identity::tls::Security;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::Status;

use crate::config::Config;
use crate::dispatch::{Dispatcher, InFlight};
use crate::fencing::Term;
use crate::leadership::{Election, Leadership};
use crate::model::RolloutRecord;
use crate::registry::{AgentKey, Registry};
use crate::repo::RolloutStore;
use crate::repo::events::EventBus;
use crate::repo::exclusive::Claim;
use crate::rollout::runner::Runner;
use error::ApiError;

/// How following a command outside any rollout ended.
pub(crate) enum Waited {
    /// The agent answered.
    Done(CommandResult),
    /// The agent stayed away too long (the message says how long).
    Away(String),
    /// Whoever followed it went away; the agent finishes on its own.
    CallerLeft,
}

/// Everything the services share.
pub struct Shared {
    /// This coordinator's config.
    pub config: Arc<Config>,
    /// mTLS or insecure mode, loaded from `config.tls`.
    pub security: Security,
    /// Whether this coordinator leads, and with which term.
    pub election: Arc<dyn Election>,
    /// The agents connected to this coordinator.
    pub registry: Registry,
    /// Commands to agents, their events and results back.
    pub dispatcher: Dispatcher,
    /// Saved rollouts, bundles and events.
    pub store: RolloutStore,
    /// Runs rollouts while this coordinator leads.
    pub runner: Runner,
    /// Live rollout events, for watchers.
    pub bus: EventBus,
    /// Tells webhooks about rollouts; `rollout show` reads its records.
    pub webhooks: crate::webhooks::Webhooks,
    /// Which refused calls are written to the audit log.
    pub refusals: refusals::RefusalLimiter,
    /// Fires when the coordinator stops: every stream relay ends then.
    pub shutdown: CancellationToken,
    /// The tasks the coordinator waits for when it stops; the stream
    /// relays run on it.
    pub tasks: TaskTracker,
}

impl Shared {
    /// The current term if this coordinator leads, else where the leader is.
    pub fn leader_term(&self) -> Result<Term, ApiError> {
        match self.election.current() {
            Leadership::Leader(term) if !term.cancel.is_cancelled() => Ok(term),
            Leadership::Leader(_) => Err(ApiError::NotLeader { leader: None }),
            Leadership::Follower { leader, .. } => Err(ApiError::NotLeader { leader }),
        }
    }

    /// Runs `relay`, which feeds one response stream through `tx`, on the
    /// tasks the coordinator waits for when it stops. At shutdown the relay
    /// stops where it is and the stream ends with `unavailable`, as when a
    /// leader dies: the caller goes to the next leader. What the relay would
    /// have done after its stream (releasing an environment) is left to that
    /// leader, too.
    pub(crate) fn spawn_relay<T: Send + 'static>(
        &self,
        tx: mpsc::Sender<Result<T, Status>>,
        relay: impl Future<Output = ()> + Send + 'static,
    ) {
        let stopping = self.shutdown.clone();
        self.tasks.spawn(async move {
            tokio::select! {
                () = relay => {}
                () = stopping.cancelled() => {
                    // Not `send`: a caller that stopped reading must not hold up shutdown.
                    let _ = tx.try_send(Err(Status::unavailable("coordinator is stopping")));
                }
            }
        });
    }

    /// A claim on `environment` for one change, once no other change holds
    /// it (refused with the holder otherwise); `except` is a rollout being
    /// reopened. The caller writes its change with the claim, and asks
    /// again when that write finds the claim moved (another change won).
    pub(crate) async fn free_claim(
        &self,
        term: &Term,
        environment: &str,
        except: Option<&str>,
    ) -> Result<Claim, ApiError> {
        let claim = self.store.claim(environment).await?;
        match self.store.holder(&claim, term, except).await? {
            Some(holder) => Err(ApiError::EnvironmentBusy { environment: environment.to_owned(), holder }),
            None => Ok(claim),
        }
    }

    /// Sends one command outside any rollout and waits for its result.
    /// `Ok(Err(why))` when the agent stayed away longer than
    /// `agent_grace`; `Err` only when leadership ends.
    pub(crate) async fn ask(
        &self,
        term: &Term,
        host: &AgentKey,
        command: v1::Command,
    ) -> Result<Result<CommandResult, String>, ApiError> {
        let mut in_flight = self.dispatcher.dispatch(host, command).await;
        match self.follow(term, host, &mut in_flight, |_| std::future::ready(true)).await? {
            Waited::Done(result) => Ok(Ok(result)),
            Waited::Away(why) => Ok(Err(why)),
            Waited::CallerLeft => unreachable!("every event is taken, so the caller never leaves"),
        }
    }

    /// Follows a command outside any rollout to its result, handing each
    /// progress event to `on_event` (which answers false once its caller has
    /// gone). Gives up when the agent stays away longer than
    /// `agent_grace`; `Err` only when leadership ends.
    pub(crate) async fn follow<F, Fut>(
        &self,
        term: &Term,
        host: &AgentKey,
        in_flight: &mut InFlight,
        mut on_event: F,
    ) -> Result<Waited, ApiError>
    where
        F: FnMut(CommandEvent) -> Fut,
        Fut: Future<Output = bool>,
    {
        let grace = self.config.agent_grace;
        let mut away_since: Option<Instant> = None;
        let mut check = tokio::time::interval(Duration::from_millis(500));
        let result = loop {
            tokio::select! {
                _ = term.cancel.cancelled() => return Err(ApiError::NotLeader { leader: None }),
                Some(event) = in_flight.events.recv() => if !on_event(event).await {
                    return Ok(Waited::CallerLeft);
                },
                result = &mut in_flight.result => match result {
                    Ok(result) => break result,
                    Err(_) => return Err(ApiError::NotLeader { leader: None }),
                },
                _ = check.tick() => {
                    if self.registry.is_connected(host) {
                        away_since = None;
                    } else if away_since.get_or_insert_with(Instant::now).elapsed() > grace {
                        return Ok(Waited::Away(format!(
                            "agent {host} has been disconnected for more than {} s",
                            grace.as_secs()
                        )));
                    }
                }
            }
        };
        while let Ok(event) = in_flight.events.try_recv() {
            on_event(event).await;
        }
        Ok(Waited::Done(result))
    }

    /// The saved rollout `id`.
    pub async fn rollout(&self, id: &str) -> Result<RolloutRecord, ApiError> {
        self.store.get_rollout(id).await?.ok_or_else(|| {
            ApiError::NotFound(format!("no rollout with id {id:?}; `runway rollout list` shows them"))
        })
    }

    /// Refuses an environment this coordinator is not configured for.
    pub fn known_environment(&self, environment: &str) -> Result<(), ApiError> {
        if self.config.environments.contains(environment) {
            return Ok(());
        }
        Err(ApiError::InvalidArgument(format!(
            "unknown environment {environment:?}; this coordinator knows: {}",
            self.config.environments.list()
        )))
    }
}
