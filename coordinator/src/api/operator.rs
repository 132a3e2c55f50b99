//! The operator API the `runway` CLI calls.
//!
//! Reads (get, list) are served by any coordinator from etcd; everything
//! else only by the leader, followers answer with the leader's address.
//! Backup operations live in [`super::backups`], plans in [`super::plan`],
//! approvals in [`super::approvals`], the audit log in [`super::audit`],
//! the on-call view in [`super::status`].
//!
//! Every call checks the caller's role in the environment it touches
//! (`Shared::authorize`) before doing anything; for a call by rollout id,
//! the rollout is loaded first to learn its environment. Lists show only
//! environments where the caller holds `view`:
//!
//! | call | role |
//! |---|---|
//! | `StartRollout`, `CancelRollout` | `deploy` |
//! | `RollbackRollout`, backup `restore` and `verify` | `restore` |
//! | `ApproveRollout`, `RejectRollout` | `approve` |
//! | `GetRollout`, `ListRollouts`, `WatchRollout`, `ListAgents`, backup `list` and `show`, `PlanRollout`, `ListAudit`, `GetStatus` | `view` |
//!
//! Start, cancel, rollback, approve, reject, backup restore and verify are
//! recorded in the audit log, accepted or refused (see [`super::audit`]).

use std::pin::Pin;
use std::sync::Arc;

use runway_proto::v1::operator_server::Operator;
use runway_proto::v1::{self, CommandOutcome, command};
use runway_proto::v1::{
    AgentInfo, ApproveRolloutRequest, AuditEntry, BackupCommandRequest, Bundle, CancelRolloutRequest,
    ClusterStatus, ForgetAgentRequest, ForgetAgentResponse, GetRolloutRequest, GetStatusRequest,
    ListAgentsRequest, ListAgentsResponse, ListAuditRequest, ListAuditResponse, ListRolloutsRequest,
    ListRolloutsResponse, PlanRolloutRequest, RejectRolloutRequest, RollbackRolloutRequest,
    RollbackRolloutResponse, Rollout, RolloutEvent, RolloutPlan, ShowBackup, StartRolloutRequest,
    WatchRolloutRequest,
};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::Shared;
use super::auth::Operator as Caller;
use super::error::ApiError;
use crate::config::Role;
use crate::fencing::Term;
use crate::model::{RolloutRecord, RolloutState, SignatureRecord, TraceRecord};
use crate::registry::{AgentKey, AgentSnapshot};
use crate::repo::audit::{self, Action, Outcome};
use crate::rollout::recovery::Way;
use crate::rollout::steps::default_steps;
use runway_identity::signature::Operation;
use runway_telemetry::TraceParent;

pub struct OperatorService {
    shared: Arc<Shared>,
}

impl OperatorService {
    pub fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// `StartRollout`: the `deploy` role; `started_by` is the caller's
    /// recorded name (see [`super::audit`]).
    async fn start(&self, request: Request<StartRolloutRequest>) -> Result<Rollout, ApiError> {
        let r = request.get_ref();
        let mut entry = audit::entry(Action::Start, &self.shared.config.name);
        entry.actor = self.shared.actor(&request, &r.started_by);
        entry.environment = r.environment.clone();
        let digest = r.bundle.as_ref().map(|b| b.digest.clone()).unwrap_or_default();
        parameters(
            &mut entry,
            [
                ("bundle_digest", digest),
                ("app_version", r.app_version.clone()),
                ("allow_danger", r.allow_danger.join(",")),
                ("skip_hosts", r.skip_hosts.join(",")),
            ],
        );
        if r.override_requires {
            entry.parameters.insert("override_requires".into(), "true".into());
        }
        let result = match self.shared.leader_term().and_then(|term| {
            let environment = &request.get_ref().environment;
            let operator = self.shared.authorize(&request, environment, Role::Deploy)?;
            if request.get_ref().override_requires {
                // Overriding staging first is an approver's call.
                self.shared.authorize(&request, environment, Role::Approve).map_err(|e| match e {
                    ApiError::PermissionDenied(why) => ApiError::PermissionDenied(format!(
                        "--override-requires needs the approve role: {why}"
                    )),
                    other => other,
                })?;
            }
            Ok((term, operator))
        }) {
            Ok((term, operator)) => {
                self.accept_start(term, &operator, request.into_inner(), &mut entry).await
            }
            Err(error) => Err(error),
        };
        self.shared.audited(&entry, result).await
    }

    async fn accept_start(
        &self,
        term: Term,
        operator: &Caller,
        request: StartRolloutRequest,
        entry: &mut AuditEntry,
    ) -> Result<Rollout, ApiError> {
        crate::rollout::validate::start_request(&request).map_err(|e| ApiError::InvalidArgument(e.into()))?;
        let config = &self.shared.config;
        let bundle = request
            .bundle
            .ok_or_else(|| ApiError::InvalidArgument("the request carries no migration bundle".into()))?;
        let (bundle, migrations) = crate::rollout::validate::bundle(bundle, config.max_bundle_bytes).await?;
        let id = self.unused_rollout_id(&request.rollout_id).await?;
        let signature = self.shared.deploy_signature(
            operator,
            &request.environment,
            &bundle,
            (&request.allow_danger, &id),
            request.signature.as_ref(),
        )?;
        let requires = super::policy::staging_first(
            &self.shared,
            &request.environment,
            &bundle.digest,
            request.override_requires,
            entry,
        )
        .await?;
        let mut bundle = bundle;
        crate::failpoint::tamper_bundle(&mut bundle);
        let agents = self.present_agents(&request.environment, &request.skip_hosts).await?;
        let policy = config.environments.policy(&request.environment);
        let mut steps = default_steps(&request.environment, &agents, policy.approvals.required())?;
        crate::rollout::restart::apply(&request.environment, &mut steps, &policy, &agents)
            .map_err(|e| ApiError::FailedPrecondition(e.to_string()))?;
        let databases = crate::rollout::steps::database_records(&request.environment, &agents)?;
        let previous_versions = agents
            .iter()
            .filter(|a| a.has_role("app"))
            .map(|a| (a.name.clone(), a.app_version.clone()))
            .collect();
        let now = runway_proto::unix_ms_now();
        let record = RolloutRecord {
            id,
            environment: request.environment,
            bundle_digest: bundle.digest.clone(),
            app_version: request.app_version,
            state: RolloutState::Pending,
            steps,
            error: String::new(),
            created_unix_ms: now,
            updated_unix_ms: now,
            coordinator: config.name.clone(),
            cancel_requested: false,
            allow_danger: request.allow_danger,
            started_by: self.shared.recorded_name(operator, &request.started_by),
            plan: None,
            backup: String::new(),
            refused: false,
            previous_versions,
            approval: None,
            signature,
            trace: TraceRecord::start(TraceParent::parse(&request.traceparent)),
            notify: policy.webhooks.iter().map(|w| w.name.clone()).collect(),
            databases,
            skipped_hosts: request.skip_hosts,
            rollback_signature: None,
            analysis: Default::default(),
        };
        entry.rollout_id = record.id.clone();
        self.create_claimed(&term, &record, &bundle, entry).await?;
        tracing::info!(rollout = %record.id, environment = %record.environment, started_by = %record.started_by, migrations = migrations.len(), requires = requires.as_deref().unwrap_or("none"), "rollout accepted");
        let wire = record.to_proto();
        self.shared.runner.start(term, record, bundle);
        Ok(wire)
    }

    /// The id the new rollout gets: the one the CLI chose (and signed), or,
    /// in insecure mode from an older CLI, a new one. An id that was used
    /// is refused.
    async fn unused_rollout_id(&self, requested: &str) -> Result<String, ApiError> {
        let id = match requested {
            "" if self.shared.security.credentials().is_some() => {
                return Err(ApiError::InvalidArgument(
                    "the request names no rollout id; with TLS the CLI chooses it and signs it with the bundle \
                     (update runway)"
                        .into(),
                ));
            }
            "" => runway_proto::new_rollout_id(),
            id => id.to_owned(),
        };
        // One signature starts one rollout: an id that was used is refused
        // here, and a DB agent refuses a second migrate under it.
        if self.shared.store.get_rollout(&id).await?.is_some() {
            return Err(ApiError::FailedPrecondition(format!(
                "rollout {id} exists already; a signed start is good for one rollout: start a new one"
            )));
        }
        Ok(id)
    }

    /// Saves the new rollout with its bundle and audit entry, in one write
    /// that claims its environment (refused while another change holds it).
    async fn create_claimed(
        &self,
        term: &Term,
        record: &RolloutRecord,
        bundle: &Bundle,
        entry: &AuditEntry,
    ) -> Result<(), ApiError> {
        let audit = self.shared.store.audit().put(entry, Outcome::Accepted, "");
        // Another change that claimed the environment meanwhile is found by
        // the next claim, which refuses.
        loop {
            let claim = self.shared.free_claim(term, &record.environment, None).await?;
            if self
                .shared
                .store
                .create_rollout(
                    term,
                    record,
                    bundle,
                    Some(audit.clone()),
                    (&claim.marker, claim.put(&record.id)),
                )
                .await?
            {
                return Ok(());
            }
        }
    }

    /// The connected agents of `environment` a rollout runs on: refused
    /// while an agent its inventory knows is away, unless `skip` names it;
    /// the agents `skip` names are left out even when connected.
    async fn present_agents(
        &self,
        environment: &str,
        skip: &[String],
    ) -> Result<Vec<AgentSnapshot>, ApiError> {
        let connected = self.shared.registry.snapshot(environment);
        let known = self.shared.store.known_agents(environment).await?;
        if let Some(unknown) = skip
            .iter()
            .find(|s| !known.iter().any(|k| k.name == **s) && !connected.iter().any(|a| a.name == **s))
        {
            return Err(ApiError::InvalidArgument(format!(
                "--skip-host {unknown}: {environment} has no agent of that name"
            )));
        }
        let away: Vec<String> = known
            .iter()
            .filter(|k| !skip.contains(&k.name) && !connected.iter().any(|a| a.name == k.name))
            .map(|k| format!("{} ({})", k.name, k.roles.join(", ")))
            .collect();
        if !away.is_empty() {
            return Err(ApiError::AgentsAway { environment: environment.to_owned(), away });
        }
        Ok(connected.into_iter().filter(|a| !skip.contains(&a.name)).collect())
    }

    /// `ForgetAgent`: the `deploy` role; refused while the agent is connected.
    async fn forget(&self, request: Request<ForgetAgentRequest>) -> Result<ForgetAgentResponse, ApiError> {
        let r = request.get_ref();
        let mut entry = audit::entry(Action::ForgetAgent, &self.shared.config.name);
        entry.actor = self.shared.actor(&request, &r.requested_by);
        entry.environment = r.environment.clone();
        entry.parameters.insert("agent".into(), r.name.clone());
        let result = async {
            let term = self.shared.leader_term()?;
            self.shared.authorize(&request, &r.environment, Role::Deploy)?;
            if self.shared.registry.is_connected(&AgentKey::new(&r.environment, &r.name)) {
                return Err(ApiError::FailedPrecondition(format!(
                    "agent {} is connected to {}; stop it before forgetting it",
                    r.name, r.environment
                )));
            }
            let audit = self.shared.store.audit().put(&entry, Outcome::Accepted, "");
            match self.shared.store.forget_agent(&term, &r.environment, &r.name, audit).await? {
                Some(known) => {
                    tracing::info!(environment = %r.environment, agent = %r.name, "agent forgotten");
                    Ok(ForgetAgentResponse { agent: Some(known.to_info()) })
                }
                None => Err(ApiError::NotFound(format!("{} knows no agent {}", r.environment, r.name))),
            }
        }
        .await;
        // A removal is recorded with the removal itself; a refusal here.
        self.shared.audited(&entry, result).await
    }

    /// `RollbackRollout`: the `restore` role.
    async fn rollback(
        &self,
        request: Request<RollbackRolloutRequest>,
    ) -> Result<RollbackRolloutResponse, ApiError> {
        let r = request.get_ref();
        if r.preview {
            return self.preview_rollback(&request).await;
        }
        let mut entry = audit::entry(Action::Rollback, &self.shared.config.name);
        entry.actor = self.shared.actor(&request, &r.requested_by);
        entry.rollout_id = r.rollout_id.clone();
        let result = self.accept_rollback(&request, &mut entry).await;
        self.shared.audited(&entry, result).await
    }

    /// `RollbackRollout` with `preview`: which way it would roll back, and
    /// what each way would lose on each database of the rollout, as its DB
    /// agents count it now. Changes nothing and records nothing.
    async fn preview_rollback(
        &self,
        request: &Request<RollbackRolloutRequest>,
    ) -> Result<RollbackRolloutResponse, ApiError> {
        let term = self.shared.leader_term()?;
        self.shared.operator(request)?;
        let r = request.get_ref();
        let record = self.shared.rollout(&r.rollout_id).await?;
        self.shared.authorize(request, &record.environment, Role::Restore)?;
        let policy = self.shared.config.environments.policy(&record.environment);
        let (way, why) = crate::rollout::recovery::rollback_way(&record, &policy, r.restore);
        let bundle = self.shared.store.get_bundle(&record.bundle_digest).await?.ok_or_else(|| {
            ApiError::FailedPrecondition(format!("the bundle of rollout {} is no longer stored", record.id))
        })?;
        let mut losses = Vec::new();
        for db in record.db_targets() {
            let target = crate::rollout::target::Target::parse(&db);
            let ask = v1::Command {
                command_id: format!("rollback-preview/{}", uuid::Uuid::new_v4()),
                fencing_token: term.token.0,
                rollout_id: record.id.clone(),
                issued_by: self.shared.config.name.clone(),
                traceparent: String::new(),
                database: target.database,
                action: Some(command::Action::PreviewRollback(v1::PreviewRollback {
                    bundle: Some(bundle.clone()),
                    backup: record.backup_of(&db).to_owned(),
                })),
            };
            let mut loss = v1::RollbackLoss { database: db.clone(), ..v1::RollbackLoss::default() };
            match self.shared.ask(&term, &AgentKey::new(&record.environment, &target.host), ask).await? {
                Ok(result) if result.outcome == CommandOutcome::Succeeded as i32 => {
                    let detail: serde_json::Value =
                        serde_json::from_str(&result.detail_json).unwrap_or_default();
                    let lines = |key: &str| -> Vec<String> {
                        detail[key]
                            .as_array()
                            .map(|a| a.iter().filter_map(|l| l.as_str().map(str::to_owned)).collect())
                            .unwrap_or_default()
                    };
                    loss.by_migration = lines("by_migration");
                    loss.by_restore = lines("by_restore");
                    loss.errors = lines("errors");
                }
                Ok(result) => loss.errors.push(format!("{db} could not tell: {}", result.error)),
                Err(away) => loss.errors.push(away.to_string()),
            }
            losses.push(loss);
        }
        Ok(RollbackRolloutResponse {
            rollout: Some(record.to_proto()),
            first_seq: 0,
            way: way.name().to_owned(),
            why,
            losses,
        })
    }

    /// Reopens an ended rollout for an operator's rollback, after checking
    /// on the DB host that its backup is still kept: nothing is touched
    /// (not even maintenance mode) when it is not.
    async fn accept_rollback(
        &self,
        request: &Request<RollbackRolloutRequest>,
        entry: &mut AuditEntry,
    ) -> Result<RollbackRolloutResponse, ApiError> {
        let term = self.shared.leader_term()?;
        self.shared.operator(request)?;
        let RollbackRolloutRequest {
            rollout_id: id,
            confirmed,
            requested_by,
            restore,
            preview: _,
            signature,
        } = request.get_ref().clone();
        let mut record = self.shared.rollout(&id).await?;
        if record.analysis.monitoring() && confirmed {
            // Its monitor writes the record: end it first, then read again.
            self.shared.authorize(request, &record.environment, Role::Restore)?;
            self.shared.runner.end_monitor(&id).await;
            record = self.shared.rollout(&id).await?;
        }
        entry.environment = record.environment.clone();
        let policy = self.shared.config.environments.policy(&record.environment);
        let (way, why) = crate::rollout::recovery::rollback_way(&record, &policy, restore);
        parameters(
            entry,
            [("backup", record.backup.clone()), ("way", way.name().to_owned()), ("why", why.clone())],
        );
        let operator = self.shared.authorize(request, &record.environment, Role::Restore)?;
        if !confirmed {
            let loses = match way {
                Way::Migration => "runs the downs of its migrations (the objects they created are dropped)",
                Way::Restore => "replaces the database's contents with its backup",
            };
            return Err(ApiError::InvalidArgument(format!("rolling back {id} {loses}; confirm with --yes")));
        }
        let signature = self.shared.operation_signature(
            &operator,
            (Operation::Rollback, &record.environment, &id),
            signature.as_ref(),
        )?;
        let mut reopened = record.clone();
        reopened.rollback_signature = signature.as_ref().map(SignatureRecord::from_operation);
        let requested_by = self.shared.recorded_name(&operator, &requested_by);
        let first = reopened.steps.len();
        crate::rollout::recovery::reopen_for_rollback(&mut reopened, &requested_by, (way, why.clone()))?;
        if policy.approvals.rollback > 0 {
            crate::rollout::recovery::gate_rollback(&mut reopened, first, record.state, &operator.name);
        }
        if way == Way::Restore {
            self.backup_still_kept(&term, &record).await?;
        }
        let bundle = self.shared.store.get_bundle(&record.bundle_digest).await?.ok_or_else(|| {
            ApiError::FailedPrecondition(format!("the bundle of rollout {id} is no longer stored"))
        })?;
        let first_seq = self.shared.store.last_event_seq(&id).await? + 1;
        record = reopened;
        record.updated_unix_ms = runway_proto::unix_ms_now();
        // Saved before it is acted on: a new leader resumes the rollback.
        let audit = self.shared.store.audit().put(entry, Outcome::Accepted, "");
        loop {
            let claim = self.shared.free_claim(&term, &record.environment, Some(&id)).await?;
            if self
                .shared
                .store
                .reopen_rollout(&term, &record, audit.clone(), (&claim.marker, claim.put(&id)))
                .await?
            {
                break;
            }
        }
        tracing::info!(rollout = %id, %requested_by, way = way.name(), %why, "rollback requested");
        let rollout = record.to_proto();
        self.shared.runner.start(term, record, bundle);
        Ok(RollbackRolloutResponse {
            rollout: Some(rollout),
            first_seq,
            way: way.name().to_owned(),
            why,
            losses: Vec::new(),
        })
    }

    /// Asks the DB host whether the backup `record` took is still kept:
    /// a rollback by restore touches nothing (not even maintenance mode)
    /// when it is not.
    async fn backup_still_kept(&self, term: &Term, record: &RolloutRecord) -> Result<(), ApiError> {
        // Every database the rollback restores, before anything changes.
        for db in crate::rollout::recovery::migrated(record) {
            self.backup_of_kept(term, record, &db).await?;
        }
        Ok(())
    }

    /// Asks `db`'s agent whether `record`'s backup of it is still kept.
    async fn backup_of_kept(&self, term: &Term, record: &RolloutRecord, db: &str) -> Result<(), ApiError> {
        let id = &record.id;
        let target = crate::rollout::target::Target::parse(db);
        let backup = record.backup_of(db).to_owned();
        let show = v1::Command {
            command_id: format!("rollback-check/{}", uuid::Uuid::new_v4()),
            fencing_token: term.token.0,
            rollout_id: String::new(),
            issued_by: self.shared.config.name.clone(),
            traceparent: String::new(),
            database: target.database,
            action: Some(command::Action::ShowBackup(ShowBackup { name: backup.clone() })),
        };
        match self.shared.ask(term, &AgentKey::new(&record.environment, &target.host), show).await? {
            Ok(result) if result.outcome == CommandOutcome::Succeeded as i32 => {}
            Ok(result) => {
                return Err(ApiError::FailedPrecondition(format!(
                    "backup {backup} of rollout {id} is not available on {db} ({}); nothing was changed",
                    result.error
                )));
            }
            Err(away) => {
                return Err(ApiError::FailedPrecondition(format!("{away}; nothing was changed")));
            }
        }
        Ok(())
    }

    /// `CancelRollout`: the `deploy` role.
    async fn cancel(&self, request: Request<CancelRolloutRequest>) -> Result<Rollout, ApiError> {
        let r = request.get_ref();
        let mut entry = audit::entry(Action::Cancel, &self.shared.config.name);
        entry.actor = self.shared.actor(&request, &r.requested_by);
        entry.rollout_id = r.rollout_id.clone();
        let result = self.accept_cancel(&request, &mut entry).await;
        self.shared.audited(&entry, result).await
    }

    async fn accept_cancel(
        &self,
        request: &Request<CancelRolloutRequest>,
        entry: &mut AuditEntry,
    ) -> Result<Rollout, ApiError> {
        let id = &request.get_ref().rollout_id;
        let term = self.shared.leader_term()?;
        self.shared.operator(request)?;
        let record = self.shared.rollout(id).await?;
        entry.environment = record.environment.clone();
        self.shared.authorize(request, &record.environment, Role::Deploy)?;
        if record.state.is_terminal() {
            return Err(ApiError::FailedPrecondition(format!(
                "rollout {id} already ended ({}); nothing to cancel",
                record.state.name()
            )));
        }
        // Saved before it is acknowledged: a leader that takes over after
        // this answer still honours it.
        let audit = self.shared.store.audit().put(entry, Outcome::Accepted, "");
        self.shared.store.request_cancel(&term, id, audit).await?;
        self.shared.runner.request_cancel(id);
        tracing::info!(rollout = %id, "cancel requested and saved");
        Ok(record.to_proto())
    }

    /// The rollout `id`, if the caller holds `role` in its environment.
    /// The caller's identity is checked first: a caller nobody knows learns
    /// nothing, not even whether the rollout exists.
    async fn authorized_rollout<T>(
        &self,
        request: &Request<T>,
        id: &str,
        role: Role,
    ) -> Result<RolloutRecord, ApiError> {
        self.shared.operator(request)?;
        let record = self.shared.rollout(id).await?;
        self.shared.authorize(request, &record.environment, role)?;
        Ok(record)
    }

    /// The operator behind a list call, after checking they may view
    /// `environment` when one is named (empty: filtered per item later).
    fn list_caller<T>(&self, request: &Request<T>, environment: &str) -> Result<Caller, ApiError> {
        if environment.is_empty() {
            self.shared.operator(request)
        } else {
            self.shared.authorize(request, environment, Role::View)
        }
    }
}

/// Adds the non-empty `values` to `entry`'s parameters.
fn parameters<const N: usize>(entry: &mut AuditEntry, values: [(&str, String); N]) {
    for (key, value) in values {
        if !value.is_empty() {
            entry.parameters.insert(key.to_owned(), value);
        }
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<RolloutEvent, Status>> + Send>>;

#[tonic::async_trait]
impl Operator for OperatorService {
    async fn start_rollout(
        &self,
        request: Request<StartRolloutRequest>,
    ) -> Result<Response<Rollout>, Status> {
        Ok(Response::new(self.start(request).await?))
    }

    async fn get_rollout(&self, request: Request<GetRolloutRequest>) -> Result<Response<Rollout>, Status> {
        let id = &request.get_ref().rollout_id;
        let mut rollout = self.authorized_rollout(&request, id, Role::View).await?.to_proto();
        rollout.notifications = self.shared.webhooks.deliveries(id).await.map_err(ApiError::from)?;
        Ok(Response::new(rollout))
    }

    async fn list_rollouts(
        &self,
        request: Request<ListRolloutsRequest>,
    ) -> Result<Response<ListRolloutsResponse>, Status> {
        let environment = &request.get_ref().environment;
        let caller = self.list_caller(&request, environment)?;
        let rollouts = self
            .shared
            .store
            .list_rollouts()
            .await
            .map_err(ApiError::from)?
            .into_iter()
            .filter(|r| environment.is_empty() || r.environment == *environment)
            .filter(|r| self.shared.allows(&caller, &r.environment, Role::View))
            .map(|r| r.to_proto())
            .collect();
        Ok(Response::new(ListRolloutsResponse { rollouts }))
    }

    type WatchRolloutStream = EventStream;

    async fn watch_rollout(
        &self,
        request: Request<WatchRolloutRequest>,
    ) -> Result<Response<Self::WatchRolloutStream>, Status> {
        self.shared.leader_term()?;
        self.authorized_rollout(&request, &request.get_ref().rollout_id, Role::View).await?;
        let request = request.into_inner();
        // Subscribe before reading what is saved, so nothing falls between.
        let live = self.shared.bus.subscribe();
        let (tx, rx) = mpsc::channel(256);
        let shared = Arc::clone(&self.shared);
        self.shared.spawn_relay(tx.clone(), async move {
            if let Err(status) =
                follow(&shared, &request.rollout_id, request.from_seq.max(1), live, &tx).await
            {
                let _ = tx.send(Err(status)).await;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn cancel_rollout(
        &self,
        request: Request<CancelRolloutRequest>,
    ) -> Result<Response<Rollout>, Status> {
        Ok(Response::new(self.cancel(request).await?))
    }

    async fn rollback_rollout(
        &self,
        request: Request<RollbackRolloutRequest>,
    ) -> Result<Response<RollbackRolloutResponse>, Status> {
        Ok(Response::new(self.rollback(request).await?))
    }

    async fn list_agents(
        &self,
        request: Request<ListAgentsRequest>,
    ) -> Result<Response<ListAgentsResponse>, Status> {
        self.shared.leader_term()?;
        let environment = &request.get_ref().environment;
        let caller = self.list_caller(&request, environment)?;
        let agents: Vec<AgentInfo> = self
            .shared
            .registry
            .list((!environment.is_empty()).then_some(environment.as_str()))
            .into_iter()
            .filter(|a| self.shared.allows(&caller, &a.environment, Role::View))
            .collect();
        let environments: Vec<String> = if environment.is_empty() {
            self.shared.config.environments.iter().map(|(name, _)| name.to_owned()).collect()
        } else {
            vec![environment.clone()]
        };
        let mut away = Vec::new();
        for environment in environments.iter().filter(|e| self.shared.allows(&caller, e, Role::View)) {
            let known = self.shared.store.known_agents(environment).await.map_err(ApiError::from)?;
            away.extend(
                known
                    .iter()
                    .filter(|k| !agents.iter().any(|a| a.environment == k.environment && a.name == k.name))
                    .map(|k| k.to_info()),
            );
        }
        Ok(Response::new(ListAgentsResponse { agents, away }))
    }

    async fn forget_agent(
        &self,
        request: Request<ForgetAgentRequest>,
    ) -> Result<Response<ForgetAgentResponse>, Status> {
        Ok(Response::new(self.forget(request).await?))
    }

    type RunBackupCommandStream = super::backups::UpdateStream;

    async fn run_backup_command(
        &self,
        request: Request<BackupCommandRequest>,
    ) -> Result<Response<Self::RunBackupCommandStream>, Status> {
        let stream = super::backups::run(Arc::clone(&self.shared), request).await?;
        Ok(Response::new(stream))
    }

    async fn plan_rollout(
        &self,
        request: Request<PlanRolloutRequest>,
    ) -> Result<Response<RolloutPlan>, Status> {
        Ok(Response::new(super::plan::run(Arc::clone(&self.shared), request).await?))
    }

    async fn approve_rollout(
        &self,
        request: Request<ApproveRolloutRequest>,
    ) -> Result<Response<Rollout>, Status> {
        Ok(Response::new(super::approvals::approve(&self.shared, request).await?))
    }

    async fn reject_rollout(
        &self,
        request: Request<RejectRolloutRequest>,
    ) -> Result<Response<Rollout>, Status> {
        Ok(Response::new(super::approvals::reject(&self.shared, request).await?))
    }

    async fn list_audit(
        &self,
        request: Request<ListAuditRequest>,
    ) -> Result<Response<ListAuditResponse>, Status> {
        Ok(Response::new(super::audit::list(&self.shared, request).await?))
    }

    async fn get_status(
        &self,
        request: Request<GetStatusRequest>,
    ) -> Result<Response<ClusterStatus>, Status> {
        Ok(Response::new(super::status::get(&self.shared, request).await?))
    }
}

/// Sends saved events from `from_seq`, then live ones, until the terminal one.
async fn follow(
    shared: &Shared,
    id: &str,
    mut next: u64,
    mut live: broadcast::Receiver<RolloutEvent>,
    tx: &mpsc::Sender<Result<RolloutEvent, Status>>,
) -> Result<(), Status> {
    let mut catch_up = true;
    loop {
        if catch_up {
            for event in shared.store.events(id, next).await.map_err(ApiError::from)? {
                next = event.seq + 1;
                let terminal = event.terminal;
                if tx.send(Ok(event)).await.is_err() || terminal {
                    return Ok(());
                }
            }
            catch_up = false;
        }
        let term = shared.leader_term()?;
        let event = tokio::select! {
            _ = term.cancel.cancelled() => return Err(ApiError::NotLeader { leader: None }.into()),
            _ = tx.closed() => return Ok(()),
            event = live.recv() => event,
        };
        match event {
            Ok(event) if event.rollout_id == id && event.seq >= next => {
                if event.seq > next {
                    // Missed some (should not happen): read them from etcd.
                    catch_up = true;
                    continue;
                }
                next = event.seq + 1;
                let terminal = event.terminal;
                if tx.send(Ok(event)).await.is_err() || terminal {
                    return Ok(());
                }
            }
            Ok(_) => {}
            Err(broadcast::error::RecvError::Lagged(_)) => catch_up = true,
            Err(broadcast::error::RecvError::Closed) => {
                return Err(Status::unavailable("coordinator is stopping"));
            }
        }
    }
}
