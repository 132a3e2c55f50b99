//! `PlanRollout`: what a rollout would do, without doing it.
//!
//! The leader builds the default plan for the environment's connected
//! agents ([`default_steps`]) and sends every host of its `preflight` step
//! the very `Preflight` command a rollout sends
//! ([`command::preflight`]), through the
//! [`Dispatcher`](crate::dispatch::Dispatcher) with its term's fencing
//! token and ids of its own (`plan-<uuid>/preflight/<host>/1`). Preflight
//! changes nothing on a host (the DB agent writes and removes a probe file
//! in its backup dir; every agent journals the command). Nothing is saved
//! in etcd: no rollout record, no events.
//!
//! The answers are judged here ([`judge`]), so that every client gets the
//! same verdict: the history blocks the rollout, a host's preflight fails,
//! the danger gate refuses, or it runs, with or without maintenance mode.

use std::sync::Arc;

use runway_proto::v1::{self, CommandOutcome, HostPreflight, PlanRolloutRequest, PlanVerdict, RolloutPlan};
use serde_json::Value;

use tonic::Request;

use super::Shared;
use super::error::ApiError;
use crate::config::Role;
use crate::model::{StepKind, StepRecord};
use crate::registry::AgentKey;
use crate::rollout::command;
use crate::rollout::steps::default_steps;
use crate::rollout::target::Target;

/// Asks the environment's agents for their preflight answers and judges
/// them; the caller needs the `view` role there.
pub async fn run(shared: Arc<Shared>, request: Request<PlanRolloutRequest>) -> Result<RolloutPlan, ApiError> {
    let term = shared.leader_term()?;
    shared.authorize(&request, &request.get_ref().environment, Role::View)?;
    let request = request.into_inner();
    let bundle = request
        .bundle
        .ok_or_else(|| ApiError::InvalidArgument("the request carries no migration bundle".into()))?;
    let (bundle, migrations) =
        crate::rollout::validate::bundle(bundle, shared.config.max_bundle_bytes).await?;
    let agents = shared.registry.snapshot(&request.environment);
    let policy = shared.config.environments.policy(&request.environment);
    let mut steps = default_steps(&request.environment, &agents, policy.approvals.required())?;
    crate::rollout::restart::apply(&request.environment, &mut steps, &policy, &agents)
        .map_err(|e| ApiError::FailedPrecondition(e.to_string()))?;
    let restarted: Vec<String> =
        steps.iter().find(|s| s.kind == StepKind::Restart).map(|s| s.hosts.clone()).unwrap_or_default();
    let restart_policy = crate::rollout::restart::describe(&policy, &restarted);
    let targets: Vec<String> =
        steps.iter().find(|s| s.kind == StepKind::Migrate).map(|s| s.hosts.clone()).unwrap_or_default();
    let database_policy = crate::rollout::databases::describe(&policy.databases, &targets);
    // The first database's plan stands for the verdict; every host's answer is judged.
    let db = targets.first().cloned().ok_or_else(|| ApiError::FailedPrecondition("no DB target".into()))?;
    let mut preflight: StepRecord = steps
        .iter()
        .find(|s| s.kind == StepKind::Preflight)
        .cloned()
        .expect("every plan starts with preflight");
    preflight.attempt = 1;
    let plan_id = format!("plan-{}", uuid::Uuid::new_v4());
    tracing::info!(
        %plan_id,
        environment = %request.environment,
        migrations = migrations.len(),
        hosts = preflight.hosts.len(),
        "rollout plan requested by an operator"
    );
    let asks = preflight.hosts.iter().map(|host| {
        let action = command::preflight(targets.contains(host).then_some((
            &bundle,
            request.allow_danger.as_slice(),
            None,
        )));
        let Target { host: agent, database } = Target::parse(host);
        let agent = AgentKey::new(&request.environment, &agent);
        let command = v1::Command {
            command_id: command::command_id(&plan_id, &preflight, host),
            fencing_token: term.token.0,
            rollout_id: String::new(),
            issued_by: shared.config.name.clone(),
            traceparent: String::new(),
            database,
            action: Some(action),
        };
        let shared = &shared;
        let term = &term;
        async move {
            let answer = shared.ask(term, &agent, command).await?;
            let (result, error) = match answer {
                Ok(result) => (Some(result), String::new()),
                Err(away) => (None, format!("{away} and did not answer the preflight")),
            };
            Ok::<_, ApiError>(HostPreflight { host: host.clone(), result, error })
        }
    });
    let hosts = futures::future::join_all(asks).await.into_iter().collect::<Result<Vec<_>, _>>()?;
    let (mut verdict, mut reasons) = judge(&db, &hosts);
    let plan = db_plan(&db, &hosts).cloned();
    let policies = super::policy::plan_lines(
        &shared,
        &request.environment,
        &bundle.digest,
        plan.as_ref(),
        &mut steps,
        &mut verdict,
        &mut reasons,
    )
    .await?;
    tracing::info!(%plan_id, verdict = verdict.as_str_name(), "rollout plan answered");
    Ok(RolloutPlan {
        plan_id,
        environment: request.environment,
        bundle_digest: bundle.digest,
        allow_danger: request.allow_danger,
        steps: steps.iter().map(StepRecord::to_proto).collect(),
        hosts,
        plan,
        verdict: verdict as i32,
        reasons,
        restart_policy,
        policies,
        database_policy,
    })
}

/// The DB host's typed plan, when it answered with one.
fn db_plan<'a>(db: &str, hosts: &'a [HostPreflight]) -> Option<&'a v1::MigrationPlan> {
    hosts.iter().find(|h| h.host == db)?.result.as_ref()?.plan.as_deref()
}

/// The danger gate refused this answer: the DB agent refused the preflight
/// and names the Danger findings nobody accepted.
fn gate_refused(db: &str, host: &HostPreflight) -> bool {
    let Some(result) = &host.result else { return false };
    host.host == db
        && result.outcome == CommandOutcome::Refused as i32
        && serde_json::from_str::<Value>(&result.detail_json)
            .ok()
            .and_then(|d| d["unaccepted_dangers"].as_array().map(|a| !a.is_empty()))
            .unwrap_or(false)
}

/// What the answers add up to, the most serious first, and why. The order
/// follows what `StartRollout` would end with: a blocked history or a
/// failing host fail the rollout in preflight; the gate alone refuses it
/// before anything changes; otherwise it runs.
pub fn judge(db: &str, hosts: &[HostPreflight]) -> (PlanVerdict, Vec<String>) {
    let plan = db_plan(db, hosts);
    if let Some(plan) = plan.filter(|p| !p.blocked.is_empty()) {
        return (PlanVerdict::Blocked, vec![plan.blocked.clone()]);
    }
    let failed: Vec<String> = hosts
        .iter()
        .filter(|h| !gate_refused(db, h))
        .filter_map(|h| match &h.result {
            None => Some(format!("{}: {}", h.host, h.error)),
            Some(r) if r.outcome == CommandOutcome::Succeeded as i32 => None,
            Some(r) if r.outcome == CommandOutcome::Refused as i32 => {
                Some(format!("{}: refused: {}", h.host, r.error))
            }
            Some(r) => Some(format!("{}: {}", h.host, r.error)),
        })
        .collect();
    if !failed.is_empty() {
        return (PlanVerdict::PreflightFailed, failed);
    }
    if let Some(refused) = hosts.iter().find(|h| gate_refused(db, h)).and_then(|h| h.result.as_ref()) {
        return (PlanVerdict::DangerRefused, vec![refused.error.clone()]);
    }
    match plan {
        Some(plan) if plan.safe_without_maintenance => (PlanVerdict::Safe, Vec::new()),
        Some(plan) => (PlanVerdict::NeedsMaintenance, plan.reasons.clone()),
        None => (
            PlanVerdict::PreflightFailed,
            vec![format!(
                "{db}: the DB agent's preflight returned no plan; is the agent older than the coordinator?"
            )],
        ),
    }
}

#[cfg(test)]
mod tests {
    use runway_proto::v1::CommandResult;
    use serde_json::json;

    use super::*;

    fn answered(host: &str, outcome: CommandOutcome, error: &str, detail: Value) -> HostPreflight {
        HostPreflight {
            host: host.into(),
            result: Some(CommandResult {
                command_id: format!("plan-x/preflight/{host}/1"),
                outcome: outcome as i32,
                error: error.into(),
                detail_json: if detail.is_null() { String::new() } else { detail.to_string() },
                plan: None,
                work_ms: 0,
            }),
            error: String::new(),
        }
    }

    fn db(
        outcome: CommandOutcome,
        error: &str,
        plan: Option<v1::MigrationPlan>,
        dangers: Value,
    ) -> HostPreflight {
        let mut host = answered("db", outcome, error, json!({ "unaccepted_dangers": dangers }));
        host.result.as_mut().expect("answered").plan = plan.map(Box::new);
        host
    }

    fn app_ok() -> HostPreflight {
        answered("app-1", CommandOutcome::Succeeded, "", json!({ "health": "ok" }))
    }

    fn plan(safe: bool) -> Option<v1::MigrationPlan> {
        Some(v1::MigrationPlan {
            safe_without_maintenance: safe,
            reasons: if safe { Vec::new() } else { vec!["m line 2: drop-column (x)".into()] },
            ..v1::MigrationPlan::default()
        })
    }

    #[test]
    fn safe_and_needs_maintenance_come_from_the_plan() {
        let hosts = [db(CommandOutcome::Succeeded, "", plan(true), json!([])), app_ok()];
        assert_eq!(judge("db", &hosts), (PlanVerdict::Safe, vec![]));
        let hosts = [db(CommandOutcome::Succeeded, "", plan(false), json!([])), app_ok()];
        assert_eq!(
            judge("db", &hosts),
            (PlanVerdict::NeedsMaintenance, vec!["m line 2: drop-column (x)".into()])
        );
    }

    #[test]
    fn the_gate_refuses_only_with_unaccepted_dangers() {
        let dangers = json!([{ "rule": "drop-column" }]);
        let hosts =
            [db(CommandOutcome::Refused, "1 dangerous statement(s) …", plan(false), dangers), app_ok()];
        assert_eq!(
            judge("db", &hosts),
            (PlanVerdict::DangerRefused, vec!["1 dangerous statement(s) …".into()])
        );
        // Refused for another reason (e.g. a stale token): the preflight failed.
        let hosts = [db(CommandOutcome::Refused, "fencing token 1 is lower than 2", None, json!([]))];
        assert_eq!(judge("db", &hosts).0, PlanVerdict::PreflightFailed);
    }

    #[test]
    fn a_failing_or_silent_host_outranks_the_gate_and_a_blocked_history_outranks_both() {
        let dangers = json!([{ "rule": "drop-column" }]);
        let unhealthy = answered("app-1", CommandOutcome::Failed, "app is not healthy", Value::Null);
        let hosts = [db(CommandOutcome::Refused, "dangerous", plan(false), dangers.clone()), unhealthy];
        assert_eq!(
            judge("db", &hosts),
            (PlanVerdict::PreflightFailed, vec!["app-1: app is not healthy".into()])
        );
        let silent = HostPreflight { host: "app-1".into(), result: None, error: "disconnected".into() };
        let hosts = [db(CommandOutcome::Succeeded, "", plan(true), json!([])), silent];
        assert_eq!(judge("db", &hosts), (PlanVerdict::PreflightFailed, vec!["app-1: disconnected".into()]));
        let blocked = Some(v1::MigrationPlan {
            blocked: "failed migration(s) 2_x must be resolved first".into(),
            ..v1::MigrationPlan::default()
        });
        let hosts = [db(CommandOutcome::Failed, "migration 2_x failed earlier", blocked, dangers), app_ok()];
        assert_eq!(
            judge("db", &hosts),
            (PlanVerdict::Blocked, vec!["failed migration(s) 2_x must be resolved first".into()])
        );
    }

    #[test]
    fn no_plan_is_a_failed_preflight() {
        let hosts = [answered("db", CommandOutcome::Succeeded, "", json!({}))];
        assert_eq!(judge("db", &hosts).0, PlanVerdict::PreflightFailed);
    }
}
