//! The runbook policies at the operator API: staging first refuses a
//! `StartRollout` before anything is saved, and `PlanRollout` shows what
//! every policy of the environment says about the bundle.

use runway_proto::v1::{AuditEntry, PlanVerdict};

use super::Shared;
use super::error::ApiError;
use crate::model::{StepKind, StepRecord, StepState};
use crate::policy::maintenance::{Decision, decide};
use crate::policy::staging_first;

/// Staging first for a rollout of `digest` to `environment`: `Ok` with a
/// line for the log when the environment's `requires` is met (or there is
/// none, `None`), or overridden (`override_requires`, whose `approve` role
/// the caller checked); refused otherwise, naming the rule. What decided
/// goes into the audit `entry`.
pub async fn staging_first(
    shared: &Shared,
    environment: &str,
    digest: &str,
    override_requires: bool,
    entry: &mut AuditEntry,
) -> Result<Option<String>, ApiError> {
    let policy = shared.config.environments.policy(environment);
    let Some(requires) = &policy.requires else { return Ok(None) };
    let rollouts = shared.store.list_rollouts().await?;
    match staging_first::check(requires, digest, &rollouts, runway_proto::unix_ms_now()) {
        Ok(met) => {
            entry.parameters.insert("requires_met_by".into(), met.rollout_id.clone());
            Ok(Some(met.describe(requires)))
        }
        Err(unmet) if override_requires => {
            entry.parameters.insert("override_requires".into(), "true".into());
            Ok(Some(format!(
                "requires: OVERRIDDEN with --override-requires: {}",
                unmet.message(environment, requires, digest)
            )))
        }
        Err(unmet) => Err(ApiError::FailedPrecondition(unmet.message(environment, requires, digest))),
    }
}

/// What the environment's policies say about a plan of `digest`, one line
/// each; refusals change `verdict` and lead `reasons`, and maintenance
/// steps `maintenance = "auto"` would skip are shown skipped in `steps`.
pub async fn plan_lines(
    shared: &Shared,
    environment: &str,
    digest: &str,
    plan: Option<&runway_proto::v1::MigrationPlan>,
    steps: &mut [StepRecord],
    verdict: &mut PlanVerdict,
    reasons: &mut Vec<String>,
) -> Result<Vec<String>, ApiError> {
    let policy = shared.config.environments.policy(environment);
    let mut lines = Vec::new();
    if let Some(requires) = &policy.requires {
        let rollouts = shared.store.list_rollouts().await?;
        match staging_first::check(requires, digest, &rollouts, runway_proto::unix_ms_now()) {
            Ok(met) => lines.push(met.describe(requires)),
            Err(unmet) => {
                let refusal = unmet.message(environment, requires, digest);
                lines.push(format!("requires: NOT met: {refusal}"));
                // `rollout start` refuses this before anything else.
                *verdict = PlanVerdict::PolicyRefused;
                reasons.insert(0, refusal);
            }
        }
    }
    let has_maintenance = steps.iter().any(|s| s.kind == StepKind::MaintenanceOn);
    let judged = matches!(*verdict, PlanVerdict::Safe | PlanVerdict::NeedsMaintenance);
    if has_maintenance && judged {
        match decide(policy.maintenance, plan) {
            Decision::TurnOn(why) => lines.push(format!("maintenance: {why}")),
            Decision::Skip(why) => {
                for step in steps
                    .iter_mut()
                    .filter(|s| matches!(s.kind, StepKind::MaintenanceOn | StepKind::MaintenanceOff))
                {
                    step.state = StepState::Skipped;
                }
                lines.push(format!("maintenance: {why}"));
            }
            Decision::Refuse(why) => {
                lines.push(format!("maintenance: {why}"));
                *verdict = PlanVerdict::PolicyRefused;
                *reasons = vec![why];
            }
        }
    } else if !has_maintenance {
        lines.push(format!(
            "maintenance: maintenance = \"{}\"; no app hosts, so no maintenance mode",
            policy.maintenance.as_str()
        ));
    }
    match crate::rollout::recovery::rollback_policy_refusal(environment, plan, &policy) {
        Some(refusal) => {
            lines.push(format!("rollback: NOT met: {refusal}"));
            if judged {
                *verdict = PlanVerdict::PolicyRefused;
                reasons.insert(0, refusal);
            }
        }
        None => lines.push(format!(
            "rollback: rollback = \"{}\": {}",
            policy.rollback.as_str(),
            match (policy.rollback, plan.is_some_and(runway_proto::v1::MigrationPlan::downs_proven)) {
                (crate::config::Rollback::Restore, _) => "by restoring the rollout's backup",
                (_, true) => "by migration (every pending down is proven); the backup only if a down fails",
                (_, false) => "by restoring the rollout's backup (not every pending down is proven)",
            }
        )),
    }
    if !policy.webhooks.is_empty() {
        let hooks: Vec<String> = policy
            .webhooks
            .iter()
            .map(|w| {
                let events = if w.events.is_empty() {
                    "every event".to_owned()
                } else {
                    w.events.iter().map(|e| e.as_str()).collect::<Vec<_>>().join(", ")
                };
                format!("{} ({}: {events})", w.name, w.format.as_str())
            })
            .collect();
        lines.push(format!("webhooks: {}", hooks.join("; ")));
    }
    Ok(lines)
}
