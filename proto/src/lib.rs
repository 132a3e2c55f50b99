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
//! - [`plan`]: what a DB agent's typed `MigrationPlan` says (downs proven,
//!   backward compatible, dangers), answered once for every reader.
//! - [`LEADER_METADATA_KEY`]: how a follower tells a caller where the leader is.

pub mod bundle;
pub mod codec;
pub mod plan;

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

/// Metadata key on a refusal that names why in a word scripts and the CLI
/// can act on (the message says it for people): [`REASON_ENVIRONMENT_BUSY`]
/// or [`REASON_AGENTS_AWAY`].
pub const REASON_METADATA_KEY: &str = "runway-reason";
/// Another change holds the environment (exit 2; `--queue` waits for it).
pub const REASON_ENVIRONMENT_BUSY: &str = "environment-busy";
/// A known agent of the environment is away (exit 3).
pub const REASON_AGENTS_AWAY: &str = "agents-away";

/// The reason word a refusal carries, if any.
pub fn refusal_reason(status: &tonic::Status) -> Option<&str> {
    status.metadata().get(REASON_METADATA_KEY).and_then(|v| v.to_str().ok())
}

/// Whether a side of an agent stream that sent nothing for `quiet` owes
/// the other a heartbeat, at `interval`: any message proves the sender
/// alive, so a heartbeat goes only after half an interval without one. The
/// gap between messages stays under 1.5 intervals, well inside the three
/// silent intervals after which either side ends the session.
pub fn heartbeat_due(quiet: std::time::Duration, interval: std::time::Duration) -> bool {
    quiet >= interval / 2
}

/// Current time as milliseconds since the Unix epoch, as carried on the wire.
pub fn unix_ms_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A new rollout id: short, unique, roughly time-ordered (seconds since
/// the epoch in hex, then six random hex digits). The CLI chooses it so the
/// operator's signature binds it; the coordinator only when nobody signs.
pub fn new_rollout_id() -> String {
    let secs =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("{secs:x}-{}", &random[..6])
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[test]
    fn a_heartbeat_is_due_after_half_an_interval_without_a_message() {
        let interval = Duration::from_secs(5);
        assert!(!super::heartbeat_due(Duration::from_millis(2_499), interval));
        assert!(super::heartbeat_due(Duration::from_millis(2_500), interval));
        assert!(super::heartbeat_due(Duration::from_secs(60), interval));
    }
}
