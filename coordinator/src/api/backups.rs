//! `RunBackupCommand`: an operator's backup operation (list, show, verify,
//! restore) run on an environment's DB agent, outside any rollout.
//!
//! The leader picks the environment's one connected `db` agent, dispatches
//! a typed command through the [`Dispatcher`](crate::dispatch::Dispatcher)
//! with its term's fencing token, and relays the agent's progress events
//! and final result to the caller as they arrive. Nothing is saved in etcd:
//! the agent's journal holds the command and its result.
//!
//! If the caller goes away, the command is no longer followed here, but the
//! agent finishes it (a restore is never abandoned half-way).
//!
//! `list` and `show` need the `view` role in the environment, `verify` and
//! `restore` the `restore` role and, with TLS, the operator's signature
//! over the operation (checked here, and again by the DB agent). A verify or restore is recorded in the
//! audit log before it is dispatched (accepted, or refused with why), and
//! again with the agent's result when it ends (`backup_ended`).

use std::pin::Pin;
use std::sync::Arc;

use runway_proto::v1::{
    self, AuditEntry, BackupCommandRequest, BackupCommandStarted, BackupCommandUpdate, CommandOutcome,
    backup_command_request, backup_command_update, command,
};
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Status};

use super::error::ApiError;
use super::{Shared, Waited};
use crate::config::Role;
use crate::dispatch::InFlight;
use crate::fencing::Term;
use crate::registry::AgentKey;
use crate::repo::audit::{self, Action, Outcome};
use crate::repo::exclusive::Operation;
use crate::rollout::steps::database_target;
use runway_identity::signature::Operation as Signed;

/// The stream of updates one backup command sends back.
pub type UpdateStream = Pin<Box<dyn Stream<Item = Result<BackupCommandUpdate, Status>> + Send>>;

/// Checks the caller's role and the request, dispatches it to the
/// environment's DB agent and returns the stream of its updates.
pub async fn run(
    shared: Arc<Shared>,
    request: Request<BackupCommandRequest>,
) -> Result<UpdateStream, ApiError> {
    use backup_command_request::Action as Requested;
    let r = request.get_ref();
    let (role, audited) = match &r.action {
        Some(Requested::Restore(restore)) => {
            let mut entry = entry(&shared, &request, Action::BackupRestore, &restore.name);
            entry.parameters.insert("confirmed".into(), restore.confirmed.to_string());
            (Role::Restore, Some(entry))
        }
        Some(Requested::Verify(verify)) => {
            let mut entry = entry(&shared, &request, Action::BackupVerify, &verify.name);
            entry.parameters.insert("test_restore".into(), verify.test_restore.to_string());
            (Role::Restore, Some(entry))
        }
        _ => (Role::View, None),
    };
    match audited {
        Some(mut entry) => {
            let result = start(shared.clone(), request, role, Some(&mut entry)).await;
            shared.audited(&entry, result).await
        }
        None => start(shared, request, role, None).await,
    }
}

/// The audit entry of a backup operation on backup `name`.
fn entry(shared: &Shared, request: &Request<BackupCommandRequest>, action: Action, name: &str) -> AuditEntry {
    let mut entry = audit::entry(action, &shared.config.name);
    entry.actor = shared.actor(request, &request.get_ref().requested_by);
    entry.environment = request.get_ref().environment.clone();
    entry.parameters.insert("backup".into(), name.to_owned());
    entry
}

async fn start(
    shared: Arc<Shared>,
    request: Request<BackupCommandRequest>,
    role: Role,
    mut audited: Option<&mut AuditEntry>,
) -> Result<UpdateStream, ApiError> {
    let term = shared.leader_term()?;
    let operator = shared.authorize(&request, &request.get_ref().environment, role)?;
    let request = request.into_inner();
    let action = agent_action(request.action)?;
    // A verify or restore goes to the DB agent with the operator's
    // signature over it, checked here first.
    let signed = match &action {
        command::Action::VerifyBackup(v) => Some((Signed::Verify, &v.name, v.signature.as_ref())),
        command::Action::RestoreBackup(r) => Some((Signed::Restore, &r.name, r.signature.as_ref())),
        _ => None,
    };
    if let Some((operation, name, signature)) = signed {
        shared.operation_signature(&operator, (operation, &request.environment, name), signature)?;
    }
    let target = database_target(
        &request.environment,
        &shared.registry.snapshot(&request.environment),
        &request.database,
    )?;
    let host = target.host;
    let agent = AgentKey::new(&request.environment, &host);
    let command = v1::Command {
        command_id: format!("backup-op/{}", uuid::Uuid::new_v4()),
        fencing_token: term.token.0,
        rollout_id: String::new(),
        issued_by: shared.config.name.clone(),
        traceparent: String::new(),
        // Empty: the agent's only database (an agent serving several refuses it).
        database: target.database,
        action: Some(action),
    };
    let mut operation = None;
    let ended = match audited.as_mut() {
        Some(entry) => {
            entry.parameters.insert("command_id".into(), command.command_id.clone());
            entry.parameters.insert("host".into(), host.clone());
            // A restore or verify holds the environment while it runs.
            let held = Operation {
                id: command.command_id.clone(),
                kind: action_name(&command).to_owned(),
                backup: entry.parameters.get("backup").cloned().unwrap_or_default(),
                host: host.clone(),
                requested_by: entry.actor.clone(),
                started_unix_ms: runway_proto::unix_ms_now(),
                token: term.token.0,
            };
            loop {
                let claim = shared.free_claim(&term, &request.environment, None).await?;
                if shared.store.begin_operation(&term, &claim, &held).await? {
                    break;
                }
            }
            operation = Some(held);
            // Recorded before the agent is asked: no restore without its entry.
            shared.store.audit().append(&term, entry, Outcome::Accepted, "").await?;
            let mut ended = audit::entry(Action::BackupEnded, &shared.config.name);
            ended.actor = audit::coordinator_actor(&shared.config.name);
            ended.environment = entry.environment.clone();
            ended.parameters = entry.parameters.clone();
            ended.parameters.insert("operation".into(), entry.action.clone());
            ended.parameters.insert("requested_by".into(), entry.actor.clone());
            Some(ended)
        }
        None => None,
    };
    tracing::info!(
        environment = %request.environment,
        %host,
        command_id = %command.command_id,
        action = action_name(&command),
        "backup command requested by an operator"
    );
    let in_flight = shared.dispatcher.dispatch(&agent, command).await;
    let (tx, rx) = mpsc::channel(256);
    let environment = request.environment;
    Arc::clone(&shared).spawn_relay(tx.clone(), async move {
        if let Err(status) = relay(&shared, &term, &agent, in_flight, ended, &tx).await {
            let _ = tx.send(Err(status)).await;
        }
        if let Some(operation) = operation
            && let Err(e) = shared.store.end_operation(&term, &environment, &operation).await
        {
            tracing::warn!(operation = %operation.id, error = %e, "cannot release the environment after a backup operation");
        }
    });
    Ok(Box::pin(ReceiverStream::new(rx)))
}

/// The agent command for an operator request; refuses what is incomplete.
fn agent_action(action: Option<backup_command_request::Action>) -> Result<command::Action, ApiError> {
    use backup_command_request::Action;
    let named = |name: &str| {
        if name.trim().is_empty() {
            Err(ApiError::InvalidArgument(
                "name the backup; `runway backup list --env ENV` shows them".into(),
            ))
        } else {
            Ok(())
        }
    };
    match action {
        None => Err(ApiError::InvalidArgument("the request names no backup operation".into())),
        Some(Action::List(list)) => Ok(command::Action::ListBackups(list)),
        Some(Action::Show(show)) => named(&show.name).map(|()| command::Action::ShowBackup(show)),
        Some(Action::Verify(verify)) => named(&verify.name).map(|()| command::Action::VerifyBackup(verify)),
        Some(Action::Restore(restore)) => {
            named(&restore.name)?;
            if !restore.confirmed {
                return Err(ApiError::InvalidArgument(format!(
                    "restoring backup {} replaces the database's contents and needs an explicit confirmation \
                     (--yes); nothing was sent to the agent",
                    restore.name
                )));
            }
            Ok(command::Action::RestoreBackup(restore))
        }
    }
}

fn action_name(command: &v1::Command) -> &'static str {
    match &command.action {
        Some(command::Action::ListBackups(_)) => "list",
        Some(command::Action::ShowBackup(_)) => "show",
        Some(command::Action::VerifyBackup(_)) => "verify",
        Some(command::Action::RestoreBackup(_)) => "restore",
        _ => "other",
    }
}

/// Sends `started`, every progress event, then the result. Ends early when
/// the caller leaves, leadership ends, or the agent stays away too long.
/// With `ended`, records the result in the audit log.
async fn relay(
    shared: &Shared,
    term: &Term,
    agent: &AgentKey,
    mut in_flight: InFlight,
    ended: Option<AuditEntry>,
    tx: &mpsc::Sender<Result<BackupCommandUpdate, Status>>,
) -> Result<(), Status> {
    let host = agent.name.as_str();
    let update = |kind| Ok(BackupCommandUpdate { kind: Some(kind) });
    let started = BackupCommandStarted { command_id: in_flight.command_id.clone(), host: host.to_owned() };
    if tx.send(update(backup_command_update::Kind::Started(started))).await.is_err() {
        return Ok(());
    }
    let forward = |event| {
        let tx = tx.clone();
        async move { tx.send(update(backup_command_update::Kind::Event(event))).await.is_ok() }
    };
    let mut waited = shared.follow(term, agent, &mut in_flight, forward).await?;
    if let Waited::CallerLeft = waited {
        // The agent goes on; so does following it, for the audit log and
        // for the environment it holds until it ends.
        tracing::info!(command_id = %in_flight.command_id, %host, "caller left; the agent finishes the backup command on its own");
        waited = shared.follow(term, agent, &mut in_flight, |_| std::future::ready(true)).await?;
    }
    let result = match waited {
        Waited::Done(result) => result,
        Waited::Away(why) => {
            return Err(Status::unavailable(format!(
                "{why}; its journal keeps the outcome of command {}",
                in_flight.command_id
            )));
        }
        Waited::CallerLeft => unreachable!("every event is taken"),
    };
    let succeeded = result.outcome == CommandOutcome::Succeeded as i32;
    if !succeeded {
        tracing::info!(command_id = %result.command_id, %host, error = %result.error, "backup command did not succeed");
    }
    if let Some(ended) = ended {
        let outcome = if succeeded { Outcome::Succeeded } else { Outcome::Failed };
        if let Err(e) = shared.store.audit().append(term, &ended, outcome, &result.error).await {
            tracing::warn!(command_id = %result.command_id, error = %e, "cannot record the end of a backup operation in the audit log");
        }
    }
    let _ = tx.send(update(backup_command_update::Kind::Result(result))).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use runway_proto::v1::{ListBackups, RestoreBackup, ShowBackup};

    use super::*;

    #[test]
    fn restore_needs_confirmation_and_a_name() {
        use backup_command_request::Action;
        let unconfirmed = agent_action(Some(Action::Restore(RestoreBackup {
            name: "app-1".into(),
            confirmed: false,
            ..RestoreBackup::default()
        })));
        assert!(
            matches!(&unconfirmed, Err(ApiError::InvalidArgument(m)) if m.contains("--yes")),
            "{unconfirmed:?}"
        );
        let confirmed = agent_action(Some(Action::Restore(RestoreBackup {
            name: "app-1".into(),
            confirmed: true,
            ..RestoreBackup::default()
        })));
        assert!(
            matches!(confirmed, Ok(command::Action::RestoreBackup(r)) if r.name == "app-1" && r.confirmed)
        );
        assert!(agent_action(Some(Action::Show(ShowBackup { name: " ".into() }))).is_err());
        assert!(agent_action(None).is_err());
        assert!(matches!(
            agent_action(Some(Action::List(ListBackups {}))),
            Ok(command::Action::ListBackups(_))
        ));
    }
}
