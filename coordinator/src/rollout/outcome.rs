//! How a step's commands ended, and what that tells the runner: success,
//! the operator-facing error, a refusal before anything ran, whether the
//! database changed, and the facts later steps need (the plan, the backup).

use super::recovery;
use crate::model::StepKind;

/// How one command ended.
pub(super) struct CommandEnd {
    /// The host it ran on.
    pub host: String,
    /// The operator-facing reason it failed (`host: …`); `None` on success.
    pub error: Option<String>,
    /// It was refused before anything ran.
    pub refused: bool,
    /// The agent's result detail (JSON; `null` when there is none).
    pub detail: serde_json::Value,
    /// A DB agent's preflight plan.
    pub plan: Option<runway_proto::v1::MigrationPlan>,
    /// No result: the agent was still away at the step deadline, and the
    /// command may have finished, failed, or still run on the host.
    pub outcome_unknown: bool,
}

impl CommandEnd {
    /// A command on `host` that was sent and not (or not yet) failed: a
    /// phase that ended early still counts its host as reached.
    pub fn reached(host: &str) -> Self {
        Self {
            host: host.to_owned(),
            error: None,
            refused: false,
            detail: serde_json::Value::Null,
            plan: None,
            outcome_unknown: false,
        }
    }
}

/// How a step's commands ended.
pub(super) struct StepResult {
    pub ends: Vec<CommandEnd>,
    /// Failed commands the step still succeeds with: a batched restart
    /// that stayed within `restart.max_failures` (0 otherwise).
    pub tolerated: usize,
}

impl StepResult {
    pub fn succeeded(&self) -> bool {
        self.failed_hosts().len() <= self.tolerated
    }

    /// The hosts whose command failed.
    pub fn failed_hosts(&self) -> Vec<String> {
        self.ends.iter().filter(|e| e.error.is_some()).map(|e| e.host.clone()).collect()
    }

    /// The hosts the step's commands went to (a batched restart stops
    /// dispatching after a failure).
    pub fn reached(&self) -> Vec<String> {
        self.ends.iter().map(|e| e.host.clone()).collect()
    }

    /// `host: reason; host: reason` of the failed commands.
    pub fn error(&self) -> String {
        self.ends.iter().filter_map(|e| e.error.clone()).collect::<Vec<_>>().join("; ")
    }

    /// Every failed command was refused before it ran: nothing changed.
    pub fn refused(&self) -> bool {
        self.ends.iter().filter(|e| e.error.is_some()).all(|e| e.refused)
    }

    /// Whether a failed command may have changed the database: only a
    /// `false` from the agent counts as "no" (an interrupted command, an
    /// agent that stayed away or an unknown answer count as "yes").
    pub fn database_changed(&self) -> bool {
        self.ends
            .iter()
            .filter(|e| e.error.is_some() && !e.refused)
            .any(|e| e.detail.get("database_changed").and_then(serde_json::Value::as_bool) != Some(false))
    }

    /// What is known about the failure of a `kind` step.
    pub fn failure(&self, kind: StepKind) -> recovery::Failure {
        if self.ends.iter().any(|e| e.outcome_unknown) {
            recovery::Failure::OutcomeUnknown
        } else {
            recovery::Failure::Reported {
                database_changed: kind == StepKind::Migrate && self.database_changed(),
            }
        }
    }

    /// The detail of the first command whose detail has `key`.
    pub fn detail(&self, key: &str) -> Option<&serde_json::Value> {
        self.ends.iter().find_map(|e| e.detail.get(key))
    }

    /// The DB agents' preflight plans as one: every target's findings,
    /// proofs and downtime (see [`runway_proto::v1::MigrationPlan::merge`]).
    pub fn plan(&self) -> Option<runway_proto::v1::MigrationPlan> {
        runway_proto::v1::MigrationPlan::merge(
            self.ends.iter().filter_map(|e| e.plan.as_ref().map(|p| (e.host.as_str(), p))),
        )
    }
}
