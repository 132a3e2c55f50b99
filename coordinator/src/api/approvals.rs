//! `ApproveRollout` and `RejectRollout`: an operator's decision about a
//! rollout waiting at its approval gate.
//!
//! The caller needs the `approve` role in the rollout's environment and must
//! not be the operator who started it. The decision is saved under a key of
//! its own together with the caller's audit entry, in one fenced
//! transaction, before it is acknowledged; then the runner is woken and
//! takes it into the rollout record (`rollout/runner/gate.rs`), or a new
//! leader reads it when it resumes the wait. A second approval by the same
//! operator counts once; a rejection after one's own approval replaces it.

use runway_proto::v1::{ApproveRolloutRequest, AuditEntry, RejectRolloutRequest, Rollout};
use tonic::Request;

use super::Shared;
use super::error::ApiError;
use crate::config::Role;
use crate::model::{Decision, RolloutState, Verdict};
use crate::repo::audit::{self, Action, Outcome};
use crate::rollout::approval;

/// Longest comment or reason taken, in characters.
const MAX_COMMENT_CHARS: usize = 1000;

/// `ApproveRollout`.
pub async fn approve(shared: &Shared, request: Request<ApproveRolloutRequest>) -> Result<Rollout, ApiError> {
    let ApproveRolloutRequest { rollout_id, comment, operator } = request.get_ref().clone();
    decide(shared, &request, &rollout_id, Verdict::Approve, comment, &operator).await
}

/// `RejectRollout`.
pub async fn reject(shared: &Shared, request: Request<RejectRolloutRequest>) -> Result<Rollout, ApiError> {
    let RejectRolloutRequest { rollout_id, reason, operator } = request.get_ref().clone();
    decide(shared, &request, &rollout_id, Verdict::Reject, reason, &operator).await
}

async fn decide<T>(
    shared: &Shared,
    request: &Request<T>,
    id: &str,
    verdict: Verdict,
    comment: String,
    claimed: &str,
) -> Result<Rollout, ApiError> {
    let (action, comment_key) = match verdict {
        Verdict::Approve => (Action::Approve, "comment"),
        Verdict::Reject => (Action::Reject, "reason"),
    };
    let mut entry = audit::entry(action, &shared.config.name);
    entry.actor = shared.actor(request, claimed);
    entry.rollout_id = id.to_owned();
    if !comment.is_empty() {
        entry.parameters.insert(comment_key.to_owned(), comment.chars().take(MAX_COMMENT_CHARS).collect());
    }
    let result = accept(shared, request, id, verdict, comment, claimed, &mut entry).await;
    shared.audited(&entry, result).await
}

async fn accept<T>(
    shared: &Shared,
    request: &Request<T>,
    id: &str,
    verdict: Verdict,
    comment: String,
    claimed: &str,
    entry: &mut AuditEntry,
) -> Result<Rollout, ApiError> {
    let verb = match verdict {
        Verdict::Approve => "approve",
        Verdict::Reject => "reject",
    };
    let term = shared.leader_term()?;
    shared.operator(request)?;
    let mut record = shared.rollout(id).await?;
    entry.environment = record.environment.clone();
    let operator = shared.authorize(request, &record.environment, Role::Approve)?;
    let name = shared.recorded_name(&operator, claimed);
    if verdict == Verdict::Reject && comment.trim().is_empty() {
        return Err(ApiError::InvalidArgument(
            "say why with --reason: the operator who started the rollout and the audit log read it".into(),
        ));
    }
    if comment.chars().count() > MAX_COMMENT_CHARS || comment.chars().any(char::is_control) {
        return Err(ApiError::InvalidArgument(format!(
            "the comment or reason must be at most {MAX_COMMENT_CHARS} printable characters on one line"
        )));
    }
    let round = record.approval.as_ref().map_or(0, |gate| gate.round);
    let asker = record.approval.as_ref().map_or(record.started_by.as_str(), |gate| gate.asker(&record));
    if name == asker {
        let asked = if round == 0 { "started rollout" } else { "asked for the rollback of" };
        return Err(ApiError::PermissionDenied(format!(
            "operator {name} {asked} {id} and cannot {verb} it; another operator with the approve role \
             in {} must",
            record.environment
        )));
    }
    if record.state != RolloutState::AwaitingApproval {
        return Err(ApiError::FailedPrecondition(format!(
            "rollout {id} is {}, not awaiting approval; there is nothing to {verb}",
            record.state.name()
        )));
    }
    let earlier =
        shared.store.decisions(id).await?.into_iter().find(|d| d.operator == name && d.round == round);
    if verdict == Verdict::Approve && earlier.is_some_and(|d| d.verdict == Verdict::Reject) {
        return Err(ApiError::FailedPrecondition(format!(
            "operator {name} already rejected rollout {id}; it ends cancelled"
        )));
    }
    let decision = Decision { operator: name, unix_ms: runway_proto::unix_ms_now(), verdict, comment, round };
    let audit = shared.store.audit().put(entry, Outcome::Accepted, "");
    // Saved before it is acknowledged: a leader that takes over counts it.
    shared.store.save_decision(&term, id, &decision, audit).await?;
    shared.runner.wake(id);
    tracing::info!(rollout = %id, operator = %decision.operator, verdict = verb, "approval decision saved");
    // The answer shows the decision as the runner counts it.
    let asker = record.approval.as_ref().map(|gate| gate.asker(&record).to_owned()).unwrap_or_default();
    if let Some(gate) = record.approval.as_mut() {
        approval::merge(gate, &[decision], &asker);
    }
    Ok(record.to_proto())
}
