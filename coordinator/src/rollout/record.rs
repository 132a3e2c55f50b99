//! The saved state of a rollout, and its wire form.
//!
//! This is the one place where rollout domain types and `runway.v1`
//! messages are converted into each other.

use runway_proto::v1;
use serde::{Deserialize, Serialize};

use super::plan::StepKind;
use crate::store::StoreError;

/// A rollout as saved in etcd. Written before each transition is acted on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutRecord {
    pub id: String,
    pub environment: String,
    pub bundle_digest: String,
    pub app_version: String,
    pub state: RolloutState,
    pub steps: Vec<StepRecord>,
    pub error: String,
    pub created_unix_ms: i64,
    pub updated_unix_ms: i64,
    /// Coordinator that last ran it.
    pub coordinator: String,
    /// An operator asked to cancel; honoured between steps.
    pub cancel_requested: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RolloutState {
    Pending,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl RolloutState {
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }
}

/// One step of the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepRecord {
    pub kind: StepKind,
    /// Agents the step runs on.
    pub hosts: Vec<String>,
    pub state: StepState,
    /// Bumped each time the step is started afresh; part of the command id.
    pub attempt: u32,
    pub error: String,
    /// Runs only to recover from a failure (e.g. maintenance off after a
    /// failed migration), never on the happy path.
    pub recovery: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepState {
    Pending,
    Running,
    Succeeded,
    Failed,
    Skipped,
}

impl RolloutRecord {
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("rollout record serializes")
    }

    pub fn from_json(key: &str, bytes: &[u8]) -> Result<Self, StoreError> {
        serde_json::from_slice(bytes)
            .map_err(|e| StoreError::Corrupt { key: key.to_owned(), message: e.to_string() })
    }

    pub fn to_proto(&self) -> v1::Rollout {
        v1::Rollout {
            id: self.id.clone(),
            environment: self.environment.clone(),
            bundle_digest: self.bundle_digest.clone(),
            app_version: self.app_version.clone(),
            state: self.state.to_proto() as i32,
            steps: self
                .steps
                .iter()
                .map(|s| v1::Step {
                    name: s.kind.name().to_owned(),
                    state: s.state.to_proto() as i32,
                    hosts: s.hosts.clone(),
                    error: s.error.clone(),
                    attempt: s.attempt,
                })
                .collect(),
            error: self.error.clone(),
            created_unix_ms: self.created_unix_ms,
            updated_unix_ms: self.updated_unix_ms,
            coordinator: self.coordinator.clone(),
        }
    }
}

impl RolloutState {
    pub fn to_proto(self) -> v1::RolloutState {
        match self {
            Self::Pending => v1::RolloutState::Pending,
            Self::Running => v1::RolloutState::Running,
            Self::Succeeded => v1::RolloutState::Succeeded,
            Self::Failed => v1::RolloutState::Failed,
            Self::Cancelled => v1::RolloutState::Cancelled,
        }
    }
}

impl StepState {
    pub fn to_proto(self) -> v1::StepState {
        match self {
            Self::Pending => v1::StepState::Pending,
            Self::Running => v1::StepState::Running,
            Self::Succeeded => v1::StepState::Succeeded,
            Self::Failed => v1::StepState::Failed,
            Self::Skipped => v1::StepState::Skipped,
        }
    }
}
