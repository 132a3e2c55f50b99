//! runway's wire contract.
//!
//! # Layout
//!
//! - [`v1`]: the generated `runway.v1` messages and the tonic clients and
//!   servers of the `AgentChannel` and `Operator` services.
//! - [`bundle`]: the migration bundle: how its digest is computed and which
//!   bundles are valid. The CLI packs bundles, the coordinator and the agents
//!   check them with the same rules.
//! - [`codec`]: the prost codec the services use, with small first buffers.
//! - [`LEADER_METADATA_KEY`]: how a follower tells a caller where the leader is.

pub mod bundle;
pub mod codec;

/// The generated `runway.v1` package.
#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("runway.v1");
}

/// Metadata key on an `UNAVAILABLE` status from a follower coordinator: the
/// gRPC address (`http://host:port`) of the current leader, when known.
pub const LEADER_METADATA_KEY: &str = "runway-leader";

/// Reads the leader hint a follower put on its refusal, if any.
pub fn leader_hint(status: &tonic::Status) -> Option<String> {
    status
        .metadata()
        .get(LEADER_METADATA_KEY)
        .and_then(|v| v.to_str().ok())
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// Current time as milliseconds since the Unix epoch, as carried on the wire.
pub fn unix_ms_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
