//! Errors of the gRPC services, and their one conversion to `tonic::Status`.

use runway_proto::LEADER_METADATA_KEY;

use crate::rollout::steps::HostsError;
use crate::store::StoreError;

/// What an operator or agent call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Retry against the leader (its address travels in the metadata).
    #[error("this coordinator is not the leader{}", leader.as_ref().map(|l| format!("; the leader is {l}")).unwrap_or_else(|| "; no leader is elected yet, retry shortly".into()))]
    NotLeader { leader: Option<String> },
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    NotFound(String),
    /// The caller is identified but lacks a role.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// The caller is not identified as anyone runway knows.
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    #[error(transparent)]
    Bundle(#[from] runway_proto::bundle::BundleError),
    #[error(transparent)]
    Hosts(#[from] HostsError),
    #[error(transparent)]
    Rollback(#[from] crate::rollout::recovery::RollbackRefused),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Another change holds the environment (see [`crate::repo::exclusive`]).
    #[error(
        "environment {environment} is busy: {} holds it (one change per environment at a time); \
         wait for it to end, or pass --queue to wait for it",
        holder.what
    )]
    EnvironmentBusy { environment: String, holder: crate::repo::exclusive::Holder },
    /// Agents the environment's inventory knows are not connected.
    #[error(
        "{environment}: known agent(s) away: {}; start them, leave them out of this rollout with \
         --skip-host NAME, or remove one for good with `runway agents forget NAME --env {environment}`",
        away.join(", ")
    )]
    AgentsAway { environment: String, away: Vec<String> },
}

/// `status` with its reason word in the metadata.
fn refusal(mut status: tonic::Status, reason: &'static str) -> tonic::Status {
    status
        .metadata_mut()
        .insert(runway_proto::REASON_METADATA_KEY, tonic::metadata::MetadataValue::from_static(reason));
    status
}

impl From<ApiError> for tonic::Status {
    fn from(error: ApiError) -> Self {
        let message = error.to_string();
        match error {
            ApiError::NotLeader { leader } => {
                let mut status = tonic::Status::unavailable(message);
                if let Some(value) = leader.and_then(|l| l.parse().ok()) {
                    status.metadata_mut().insert(LEADER_METADATA_KEY, value);
                }
                status
            }
            ApiError::InvalidArgument(_) | ApiError::Bundle(_) => tonic::Status::invalid_argument(message),
            ApiError::FailedPrecondition(_) | ApiError::Hosts(_) | ApiError::Rollback(_) => {
                tonic::Status::failed_precondition(message)
            }
            ApiError::EnvironmentBusy { .. } => {
                refusal(tonic::Status::failed_precondition(message), runway_proto::REASON_ENVIRONMENT_BUSY)
            }
            ApiError::AgentsAway { .. } => {
                refusal(tonic::Status::failed_precondition(message), runway_proto::REASON_AGENTS_AWAY)
            }
            ApiError::NotFound(_) => tonic::Status::not_found(message),
            ApiError::PermissionDenied(_) => tonic::Status::permission_denied(message),
            ApiError::Unauthenticated(_) => tonic::Status::unauthenticated(message),
            ApiError::Store(StoreError::Fenced(_)) => tonic::Status::unavailable(
                "this coordinator just lost leadership; retry against the new leader",
            ),
            ApiError::Store(StoreError::Contended(_)) => tonic::Status::unavailable(message),
            ApiError::Store(
                StoreError::Etcd(_) | StoreError::Timeout | StoreError::Batch(_) | StoreError::WatchEnded(_),
            ) => {
                tracing::error!(error = %message, "etcd call failed");
                tonic::Status::unavailable("the coordinator cannot reach etcd right now; retry shortly")
            }
            ApiError::Store(StoreError::Corrupt { .. }) => {
                tracing::error!(error = %message, "corrupt state in etcd");
                tonic::Status::internal("stored rollout state is corrupt; see the coordinator's log")
            }
        }
    }
}
