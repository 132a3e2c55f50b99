//! `GetStatus`: the on-call view the leader answers (`runway status`).
//!
//! Per environment the caller may `view`: its agents (connected, and those
//! that went away while this leader led, from the [`crate::registry`]),
//! the rollouts that have not ended and the most recent ended ones, each
//! with its current step and maintenance window (from its saved events),
//! and the last rollout that failed. Each coordinator's own view of who
//! leads comes from `AgentChannel.Leader`, asked by the CLI of each.

use runway_proto::v1::{
    AgentStatus, ClusterStatus, EnvironmentStatus, GetStatusRequest, RolloutEvent, RolloutStatus,
};
use tonic::Request;

use super::Shared;
use super::error::ApiError;
use crate::config::Role;
use crate::model::{RolloutRecord, RolloutState, StepKind, StepState};

/// Ended rollouts listed per environment, besides those still going.
const RECENT_ENDED: usize = 5;

/// Answers `GetStatus` (leader only; `view` in each environment shown).
pub(crate) async fn get(
    shared: &Shared,
    request: Request<GetStatusRequest>,
) -> Result<ClusterStatus, ApiError> {
    let term = shared.leader_term()?;
    let wanted = request.get_ref().environment.clone();
    let caller = if wanted.is_empty() {
        shared.operator(&request)?
    } else {
        shared.authorize(&request, &wanted, Role::View)?
    };
    let rollouts = shared.store.list_rollouts().await?;
    let mut environments = Vec::new();
    for (name, _) in shared.config.environments.iter() {
        if (!wanted.is_empty() && name != wanted) || !shared.allows(&caller, name, Role::View) {
            continue;
        }
        let mine: Vec<&RolloutRecord> = rollouts.iter().filter(|r| r.environment == name).collect();
        environments.push(environment(shared, name, &mine).await?);
    }
    Ok(ClusterStatus {
        leader_name: shared.config.name.clone(),
        leader_address: shared.config.advertise.clone(),
        fencing_token: term.token.0,
        unix_ms: runway_proto::unix_ms_now(),
        environments,
    })
}

/// One environment; `rollouts` oldest first.
async fn environment(
    shared: &Shared,
    name: &str,
    rollouts: &[&RolloutRecord],
) -> Result<EnvironmentStatus, ApiError> {
    let mut agents: Vec<AgentStatus> = shared
        .registry
        .list(Some(name))
        .into_iter()
        .map(|agent| AgentStatus { agent: Some(agent), connected: true, disconnected_unix_ms: 0 })
        .collect();
    agents.extend(shared.registry.departed(Some(name)).into_iter().map(|gone| AgentStatus {
        agent: Some(gone.info),
        connected: false,
        disconnected_unix_ms: gone.left_unix_ms,
    }));

    let going = rollouts.iter().rev().filter(|r| !r.state.is_terminal());
    let ended = rollouts.iter().rev().filter(|r| r.state.is_terminal()).take(RECENT_ENDED);
    let mut shown = Vec::new();
    for record in going.chain(ended) {
        shown.push(rollout(shared, record).await?);
    }
    let last_failure = match rollouts.iter().rev().find(|r| failed(r)) {
        Some(record) => Some(rollout(shared, record).await?),
        None => None,
    };
    Ok(EnvironmentStatus { name: name.to_owned(), agents, rollouts: shown, last_failure })
}

/// Failed, or rolled back after a failure: what on-call wants to see.
fn failed(record: &RolloutRecord) -> bool {
    matches!(record.state, RolloutState::Failed | RolloutState::RolledBack)
}

async fn rollout(shared: &Shared, record: &RolloutRecord) -> Result<RolloutStatus, ApiError> {
    let events = shared.store.events(&record.id, 1).await?;
    let (on, off) = maintenance_window(&events);
    Ok(RolloutStatus {
        rollout: Some(record.to_proto()),
        current_step: current_step(record).unwrap_or_default(),
        maintenance_on_unix_ms: on,
        maintenance_off_unix_ms: off,
    })
}

/// The step running now; once ended, the step that failed.
fn current_step(record: &RolloutRecord) -> Option<String> {
    let wanted = if record.state.is_terminal() { StepState::Failed } else { StepState::Running };
    record.steps.iter().find(|s| s.state == wanted).map(|s| s.kind.name().to_owned())
}

/// When maintenance mode last went on (its step started) and when it went
/// off again after that (0: still on, or never on), from a rollout's events
/// in order. A rollback reopened later counts from its own maintenance_on.
fn maintenance_window(events: &[RolloutEvent]) -> (i64, i64) {
    let (on_step, off_step) = (StepKind::MaintenanceOn.name(), StepKind::MaintenanceOff.name());
    let mut window = (0, 0);
    for event in events {
        if event.step == on_step && event.kind == "step_started" {
            window = (event.unix_ms, 0);
        } else if event.step == off_step && event.kind == "step_succeeded" && window.0 > 0 {
            window.1 = event.unix_ms;
        }
    }
    window
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::StepRecord;

    fn event(step: &str, kind: &str, unix_ms: i64) -> RolloutEvent {
        RolloutEvent { step: step.into(), kind: kind.into(), unix_ms, ..RolloutEvent::default() }
    }

    #[test]
    fn the_maintenance_window_runs_from_its_start_to_maintenance_off() {
        let mut events = vec![
            event("preflight", "step_started", 1),
            event("maintenance_on", "step_started", 10),
            event("maintenance_on", "step_succeeded", 12),
            event("migrate", "step_failed", 20),
        ];
        assert_eq!(maintenance_window(&events), (10, 0), "still on after a failed migration");
        events.push(event("maintenance_off", "step_started", 30));
        assert_eq!(maintenance_window(&events), (10, 0), "on until maintenance_off succeeded");
        events.push(event("maintenance_off", "step_succeeded", 31));
        assert_eq!(maintenance_window(&events), (10, 31));
        // A rollback later turns it on again.
        events.push(event("maintenance_on", "step_started", 100));
        assert_eq!(maintenance_window(&events), (100, 0));
        assert_eq!(maintenance_window(&[event("preflight", "step_started", 1)]), (0, 0));
    }

    #[test]
    fn the_current_step_is_the_running_one_or_the_one_that_failed() {
        let step = |kind, state| StepRecord {
            kind,
            hosts: vec![],
            state,
            attempt: 1,
            error: String::new(),
            recovery: false,
        };
        let mut record = RolloutRecord {
            state: RolloutState::Running,
            steps: vec![
                step(StepKind::Preflight, StepState::Succeeded),
                step(StepKind::Migrate, StepState::Running),
            ],
            ..RolloutRecord::default()
        };
        assert_eq!(current_step(&record).as_deref(), Some("migrate"));
        record.state = RolloutState::Failed;
        record.steps[1].state = StepState::Failed;
        assert_eq!(current_step(&record).as_deref(), Some("migrate"));
        record.state = RolloutState::Succeeded;
        record.steps[1].state = StepState::Succeeded;
        assert_eq!(current_step(&record), None);
    }
}
