//! The rollout model: the saved record of a rollout, its steps, their
//! kinds and states, and their wire form.
//!
//! This module depends on nothing else in the crate (only serde,
//! `runway_proto` and `runway_telemetry`'s trace context): the store saves these types as JSON without knowing
//! them, and the rollout runner moves them from state to state. It is the
//! one place where rollout domain types and `runway.v1` messages are
//! converted into each other.

use std::collections::BTreeMap;

use runway_proto::v1;
use runway_telemetry::TraceParent;
use serde::{Deserialize, Serialize};

mod analysis;
mod record_wire;

pub use analysis::{AnalysisRecord, AnalysisTally, MonitorRecord, MonitorState};

/// A rollout as saved in etcd. Written before each transition is acted on.
/// Its JSON names every host once (see [`record_wire`], which also says
/// which fields may be absent from what is read).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RolloutRecord {
    /// Short, unique, roughly time-ordered id.
    pub id: String,
    /// The environment rolled out to.
    pub environment: String,
    /// Names the migration bundle (saved separately under its digest).
    pub bundle_digest: String,
    /// App version the restart step deploys; may be empty.
    pub app_version: String,
    /// Where the rollout as a whole stands.
    pub state: RolloutState,
    /// The plan, in order; recovery steps are appended on failure.
    pub steps: Vec<StepRecord>,
    /// Why the rollout failed or was cancelled; empty while all is well.
    pub error: String,
    /// When it was accepted.
    pub created_unix_ms: i64,
    /// When it was last saved.
    pub updated_unix_ms: i64,
    /// Coordinator that last ran it.
    pub coordinator: String,
    /// An operator asked to cancel; honoured between steps.
    pub cancel_requested: bool,
    /// Danger lint rules the operator accepted for this rollout.
    pub allow_danger: Vec<String>,
    /// Who started it.
    pub started_by: String,
    /// The DB agent's preflight plan, saved when preflight answers with one.
    pub plan: Option<v1::MigrationPlan>,
    /// The backup this rollout took (its name): what a rollback restores.
    pub backup: String,
    /// Ended before anything changed because a check refused it.
    pub refused: bool,
    /// The app version each app host ran when the rollout started: what a
    /// restart-phase rollback brings back.
    pub previous_versions: BTreeMap<String, String>,
    /// The approval gate, once the rollout reached its `approval` step:
    /// how many approvals it needs and why, who approved or rejected, and
    /// how it ended. `None` before, and where no approvals are configured.
    pub approval: Option<ApprovalGate>,
    /// The operator's signature over the bundle, carried to the DB agent
    /// (absent in insecure mode).
    pub signature: Option<SignatureRecord>,
    /// The environment's webhooks (by name) when the rollout was accepted:
    /// the leader tells each about this rollout (see `crate::webhooks`).
    pub notify: Vec<String>,
    /// Where the rollout sits in its trace.
    pub trace: TraceRecord,
    /// Every database the rollout migrates, in plan order, and where each
    /// stands (empty for rollouts saved before databases had names).
    pub databases: Vec<DatabaseRecord>,
    /// Known agents the operator left out of this rollout (`--skip-host`):
    /// they were away, or were excluded on purpose.
    pub skipped_hosts: Vec<String>,
    /// An operator's signed rollback of this rollout (`runway rollout
    /// rollback`), carried to the DB agents with the rollback's commands
    /// (absent in insecure mode and before any rollback was asked for).
    pub rollback_signature: Option<SignatureRecord>,
    /// What the Prometheus analysis counted, and the `monitor` phase.
    pub analysis: AnalysisRecord,
}

/// One database of a rollout: the DB step target that reaches it
/// (`rollout::target`), and how far it got.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatabaseRecord {
    /// The step host entry: `host` or `host/database`.
    pub target: String,
    /// The DB agent serving it.
    pub host: String,
    /// Its name as the agent registered it.
    pub database: String,
    pub state: DatabaseState,
    /// Migrations this rollout applied to it.
    #[serde(default)]
    pub migrations_applied: u32,
    /// The backup this rollout took of it: what a rollback restores.
    #[serde(default)]
    pub backup: String,
    /// The migrations its rollback by migration undid, in the order the
    /// downs ran.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub undone: Vec<String>,
}

/// How far one database of a rollout got.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DatabaseState {
    /// Nothing done yet.
    #[default]
    Pending,
    /// This rollout's backup of it was taken.
    BackedUp,
    /// Its migrations ran.
    Migrated,
    /// Its migration (or its restore) failed.
    Failed,
    /// This rollout's backup of it was restored.
    Restored,
    /// This rollout's migrations of it were rolled back by their downs.
    RolledBack,
    /// The rollout ended before its migration started: untouched.
    Skipped,
}

impl DatabaseState {
    /// The name in `rollout show` and the wire form.
    pub fn name(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::BackedUp => "backed_up",
            Self::Migrated => "migrated",
            Self::Failed => "failed",
            Self::Restored => "restored",
            Self::RolledBack => "rolled_back",
            Self::Skipped => "skipped",
        }
    }
}

impl DatabaseRecord {
    /// The wire form.
    pub fn to_proto(&self) -> v1::RolloutDatabase {
        v1::RolloutDatabase {
            host: self.host.clone(),
            database: self.database.clone(),
            state: self.state.name().to_owned(),
            migrations_applied: self.migrations_applied,
            backup: self.backup.clone(),
            undone: self.undone.clone(),
        }
    }
}

/// A rollout's trace: one trace per rollout, whichever coordinator runs it.
/// The rollout's own span is emitted by the coordinator that ends it, with
/// the id chosen when it was accepted; each step's span likewise, with the
/// id and start saved when the step started; each command's span id follows
/// from its step's (see `rollout::trace` and `runway_telemetry::context`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceRecord {
    /// The rollout span's W3C `traceparent`; empty for rollouts accepted
    /// before traces existed.
    pub span: String,
    /// The CLI's span the rollout continues, if the CLI sent one.
    #[serde(default)]
    pub parent: String,
    /// When the rollout span started.
    #[serde(default)]
    pub started_unix_ms: i64,
    /// Each started step's span, by the step's key (`migrate/1`,
    /// `maintenance_off-recovery/2`: kind, recovery and attempt, as in its
    /// command ids); saved before the step's commands are dispatched.
    /// Absent from records saved before step spans were.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub steps: BTreeMap<String, SpanRecord>,
}

/// A span started by one leader that any leader may end: its context and
/// its start, saved before anything under it is dispatched.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpanRecord {
    /// Its W3C `traceparent`.
    pub span: String,
    pub started_unix_ms: i64,
}

impl SpanRecord {
    /// Its context; `None` when what was read is not a `traceparent`.
    pub fn context(&self) -> Option<TraceParent> {
        TraceParent::parse(&self.span)
    }

    /// When it started; the epoch for a negative or unrepresentable time.
    pub fn started(&self) -> std::time::SystemTime {
        unix_ms_time(self.started_unix_ms)
    }
}

/// `ms` since the epoch as a time; the epoch itself when `ms` is negative
/// or too far away to represent (a hand-edited record).
pub fn unix_ms_time(ms: i64) -> std::time::SystemTime {
    let since = std::time::Duration::from_millis(ms.max(0) as u64);
    std::time::UNIX_EPOCH.checked_add(since).unwrap_or(std::time::UNIX_EPOCH)
}

impl TraceRecord {
    /// A rollout span under `parent` (the CLI's), or at the root of a new trace.
    pub fn start(parent: Option<TraceParent>) -> Self {
        let span = parent.map_or_else(TraceParent::new_trace, |p| p.child());
        Self {
            span: span.to_string(),
            parent: parent.map(|p| p.to_string()).unwrap_or_default(),
            started_unix_ms: runway_proto::unix_ms_now(),
            steps: BTreeMap::new(),
        }
    }

    /// The rollout span's context, when recorded.
    pub fn span(&self) -> Option<TraceParent> {
        TraceParent::parse(&self.span)
    }

    /// The CLI's span, if any.
    pub fn parent(&self) -> Option<TraceParent> {
        TraceParent::parse(&self.parent)
    }

    /// The trace id in hex; empty when none was recorded.
    pub fn trace_id(&self) -> String {
        self.span().map(|s| s.trace_id_hex()).unwrap_or_default()
    }
}

/// The approval gate of one rollout, saved with it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalGate {
    /// Approvals needed (0: none, the plan did not call for any).
    pub needed: u32,
    /// Why this count: the environment's default, or what made the plan
    /// riskier (for people).
    pub rule: String,
    /// When the rollout started waiting.
    pub requested_unix_ms: i64,
    /// When the wait ends without enough approvals.
    pub expires_unix_ms: i64,
    /// Approvals given, in the order the runner saw them; one per operator.
    pub approvals: Vec<Decision>,
    /// The rejection that ended the wait, if any.
    pub rejection: Option<Decision>,
    /// How the wait ended, or that it goes on.
    pub outcome: GateOutcome,
    /// 0: the rollout's own gate; 1 and up: the gate of an operator's
    /// rollback of it (`approvals.rollback`). Decisions count for the
    /// round they were given in.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub round: u32,
    /// Who asked for a rollback gate's rollback: they cannot approve it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub asked_by: String,
    /// A rollback gate: the state the rollout had ended in, which it ends
    /// in again when the rollback is rejected or expires (nothing changed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<RolloutState>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// One operator's approval or rejection of a rollout.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// Who decided: the certificate's operator name (`insecure:…` in
    /// insecure mode, where nobody is identified).
    pub operator: String,
    /// When the decision was saved.
    pub unix_ms: i64,
    /// Approve or reject.
    pub verdict: Verdict,
    /// The approver's comment, or the reason for a rejection.
    pub comment: String,
    /// The gate's round it was given in (see [`ApprovalGate::round`]).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub round: u32,
}

/// What an operator decided about a rollout awaiting approval.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    #[default]
    Approve,
    Reject,
}

/// How a rollout's wait for approvals stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GateOutcome {
    /// Still waiting.
    #[default]
    Waiting,
    /// The plan needed none.
    NotNeeded,
    /// Enough operators approved.
    Approved,
    /// An operator rejected it: the rollout ends `cancelled`.
    Rejected,
    /// `approval_timeout` passed first: the rollout ends `cancelled`.
    Expired,
}

impl ApprovalGate {
    /// Whether the gate stopped the rollout (rejected or expired).
    pub fn stopped(&self) -> bool {
        matches!(self.outcome, GateOutcome::Rejected | GateOutcome::Expired)
    }

    /// Who may not decide: the operator who asked for what the gate holds
    /// (the rollout's starter, or the rollback's requester).
    pub fn asker<'a>(&'a self, record: &'a RolloutRecord) -> &'a str {
        if self.asked_by.is_empty() { &record.started_by } else { &self.asked_by }
    }

    /// Who approved, `alice, bob`.
    pub fn approvers(&self) -> String {
        self.approvals.iter().map(|d| d.operator.as_str()).collect::<Vec<_>>().join(", ")
    }
}

/// An operator's signature as saved (hex): a deploy signature (see
/// `v1::DeploySignature`) or, with a nonce, an operation signature (see
/// `v1::OperationSignature`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignatureRecord {
    pub certificate: String,
    pub signature: String,
    pub signed_at: i64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub nonce: String,
}

impl SignatureRecord {
    pub fn from_proto(signature: &v1::DeploySignature) -> Self {
        Self {
            certificate: hex::encode(&signature.certificate),
            signature: hex::encode(&signature.signature),
            signed_at: signature.signed_at,
            nonce: String::new(),
        }
    }

    pub fn from_operation(signature: &v1::OperationSignature) -> Self {
        Self {
            certificate: hex::encode(&signature.certificate),
            signature: hex::encode(&signature.signature),
            signed_at: signature.signed_at,
            nonce: signature.nonce.clone(),
        }
    }

    /// The wire form; a record that is not hex (hand-edited) yields empty
    /// fields, which the DB agent refuses as a missing signature.
    pub fn to_proto(&self) -> v1::DeploySignature {
        v1::DeploySignature {
            certificate: hex::decode(&self.certificate).unwrap_or_default(),
            signature: hex::decode(&self.signature).unwrap_or_default(),
            signed_at: self.signed_at,
        }
    }

    /// The wire form of an operation signature (as [`Self::to_proto`]).
    pub fn to_operation(&self) -> v1::OperationSignature {
        v1::OperationSignature {
            certificate: hex::decode(&self.certificate).unwrap_or_default(),
            signature: hex::decode(&self.signature).unwrap_or_default(),
            signed_at: self.signed_at,
            nonce: self.nonce.clone(),
        }
    }
}

/// Where a rollout stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RolloutState {
    /// Accepted, not started by any leader yet.
    #[default]
    Pending,
    /// A leader runs (or will resume) it.
    Running,
    /// Every step succeeded.
    Succeeded,
    /// A step failed; recovery steps ran.
    Failed,
    /// An operator cancelled it; recovery steps ran.
    Cancelled,
    /// A step failed after the database changed; the backup was restored
    /// and the apps brought back.
    RolledBack,
    /// Preflight passed; the rollout waits for operators to approve it
    /// before anything changes (its `approval` step runs).
    AwaitingApproval,
}

impl RolloutState {
    /// The name people read (as the CLI prints it).
    pub fn name(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::RolledBack => "rolled_back",
            Self::AwaitingApproval => "awaiting_approval",
        }
    }

    /// Whether the rollout has ended and no leader will touch it again.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled | Self::RolledBack)
    }
}

/// One step of the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepRecord {
    /// What the step does.
    pub kind: StepKind,
    /// Agents the step runs on.
    pub hosts: Vec<String>,
    /// Where the step stands.
    pub state: StepState,
    /// Bumped each time the step is started afresh; part of the command id.
    pub attempt: u32,
    /// Why the step failed; empty otherwise.
    pub error: String,
    /// Runs only to recover from a failure (e.g. maintenance off after a
    /// failed migration), never on the happy path.
    pub recovery: bool,
}

/// Where a step stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepState {
    /// Not started.
    Pending,
    /// Saved as started; its commands are out (or go out again on resume).
    Running,
    /// Every command succeeded.
    Succeeded,
    /// A command failed, or its agent was still away at the step deadline
    /// (outcome unknown).
    Failed,
    /// Not run because an earlier step failed or the rollout was cancelled.
    Skipped,
}

/// One kind of step. Each maps to one typed agent command (see
/// `rollout::command`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepKind {
    /// All hosts, in parallel: DB reachable, bundle valid, backup dir writable, apps healthy.
    Preflight,
    /// App hosts, in parallel.
    MaintenanceOn,
    /// The DB host.
    Backup,
    /// The DB host.
    Migrate,
    /// App hosts, one at a time, each waiting for health.
    Restart,
    /// App hosts, in parallel.
    MaintenanceOff,
    /// The DB host, recovery only: restore this rollout's backup exactly
    /// (a new database swapped in), checked against its manifest.
    Restore,
    /// The DB host, recovery only: roll back by migration what this
    /// rollout applied (its proven downs, newest first), then check the
    /// schema is the one from before: the way back that keeps every write.
    MigrateDown,
    /// No host: wait for operators to approve (after preflight, before
    /// maintenance mode). Only in environments that configure `approvals`.
    Approval,
    /// The restarted app hosts, in parallel, after maintenance off: the
    /// environment's `smoke` checks. Only where `smoke` is configured.
    Smoke,
    /// The restarted app hosts, in parallel, after maintenance off (and
    /// smoke): health and smoke checks for the `watch` window. Only where
    /// `watch` is configured.
    Watch,
    /// The DB host, after the maintenance window: prove the rollout's backup
    /// restorable by a test restore. Added when the backup step reports that
    /// its proof runs after the window (`test_restore = "background"`).
    VerifyBackup,
}

impl StepKind {
    /// The name used in events, command ids and the wire form.
    pub fn name(self) -> &'static str {
        match self {
            Self::Preflight => "preflight",
            Self::MaintenanceOn => "maintenance_on",
            Self::Backup => "backup",
            Self::Migrate => "migrate",
            Self::Restart => "restart",
            Self::MaintenanceOff => "maintenance_off",
            Self::Restore => "restore",
            Self::MigrateDown => "migrate_down",
            Self::Approval => "approval",
            Self::Smoke => "smoke",
            Self::Watch => "watch",
            Self::VerifyBackup => "verify_backup",
        }
    }

    /// Whether hosts run the step one after another rather than together.
    pub fn one_host_at_a_time(self) -> bool {
        matches!(self, Self::Restart)
    }
}

impl RolloutRecord {
    /// The first DB target of the plan: where the migrations run (and the
    /// backup is taken, and a restore goes) when there is one database.
    pub fn db_host(&self) -> Option<&str> {
        self.steps
            .iter()
            .find(|s| s.kind == StepKind::Migrate)
            .and_then(|s| s.hosts.first())
            .map(String::as_str)
    }

    /// Every DB target of the plan (`host` or `host/database`, see
    /// `rollout::target`), in order.
    pub fn db_targets(&self) -> Vec<String> {
        self.steps.iter().find(|s| s.kind == StepKind::Migrate).map(|s| s.hosts.clone()).unwrap_or_default()
    }

    /// Whether `host` is one of the rollout's DB targets.
    pub fn is_db_target(&self, host: &str) -> bool {
        self.steps
            .iter()
            .find(|s| s.kind == StepKind::Migrate)
            .is_some_and(|s| s.hosts.iter().any(|h| h == host))
    }

    /// The backup this rollout took of `target`'s database (the rollout's
    /// one backup for records saved before databases had names); empty
    /// when it took none.
    pub fn backup_of(&self, target: &str) -> &str {
        if self.databases.is_empty() {
            return &self.backup;
        }
        self.databases.iter().find(|d| d.target == target).map_or("", |d| d.backup.as_str())
    }

    /// The rollout as the operator API shows it.
    pub fn to_proto(&self) -> v1::Rollout {
        v1::Rollout {
            id: self.id.clone(),
            environment: self.environment.clone(),
            bundle_digest: self.bundle_digest.clone(),
            app_version: self.app_version.clone(),
            state: self.state.to_proto() as i32,
            steps: self.steps.iter().map(StepRecord::to_proto).collect(),
            error: self.error.clone(),
            created_unix_ms: self.created_unix_ms,
            updated_unix_ms: self.updated_unix_ms,
            coordinator: self.coordinator.clone(),
            allow_danger: self.allow_danger.clone(),
            started_by: self.started_by.clone(),
            plan: self.plan.clone(),
            backup: self.backup.clone(),
            refused: self.refused,
            approvals_needed: self.approval.as_ref().map_or(0, |a| a.needed),
            approvals: self
                .approval
                .iter()
                .flat_map(|a| a.approvals.iter().map(Decision::to_proto))
                .collect(),
            rejection: self.approval.as_ref().and_then(|a| a.rejection.as_ref()).map(Decision::to_proto),
            approval_expires_unix_ms: self.approval.as_ref().map_or(0, |a| a.expires_unix_ms),
            approval_rule: self.approval.as_ref().map(|a| a.rule.clone()).unwrap_or_default(),
            trace_id: self.trace.trace_id(),
            // Kept apart from the record (see `crate::webhooks`); GetRollout adds them.
            notifications: Vec::new(),
            databases: self.databases.iter().map(DatabaseRecord::to_proto).collect(),
            skipped_hosts: self.skipped_hosts.clone(),
            monitor: self.analysis.monitor.as_ref().map(|m| m.state.name().to_owned()).unwrap_or_default(),
            monitor_until_unix_ms: self.analysis.monitor.as_ref().map_or(0, |m| m.until_unix_ms),
            monitor_reason: self.analysis.monitor.as_ref().map(|m| m.reason.clone()).unwrap_or_default(),
        }
    }
}

impl Decision {
    /// The wire form.
    pub fn to_proto(&self) -> v1::ApprovalDecision {
        v1::ApprovalDecision {
            operator: self.operator.clone(),
            unix_ms: self.unix_ms,
            comment: self.comment.clone(),
        }
    }
}

impl StepRecord {
    /// The step as the operator API shows it.
    pub fn to_proto(&self) -> v1::Step {
        v1::Step {
            name: self.kind.name().to_owned(),
            state: self.state.to_proto() as i32,
            hosts: self.hosts.clone(),
            error: self.error.clone(),
            attempt: self.attempt,
        }
    }
}

impl RolloutState {
    /// The wire form.
    pub fn to_proto(self) -> v1::RolloutState {
        match self {
            Self::Pending => v1::RolloutState::Pending,
            Self::Running => v1::RolloutState::Running,
            Self::Succeeded => v1::RolloutState::Succeeded,
            Self::Failed => v1::RolloutState::Failed,
            Self::Cancelled => v1::RolloutState::Cancelled,
            Self::RolledBack => v1::RolloutState::RolledBack,
            Self::AwaitingApproval => v1::RolloutState::AwaitingApproval,
        }
    }
}

impl StepState {
    /// The wire form.
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The JSON saved in etcd keeps its shape, and every earlier shape
    /// still loads: running rollouts are resumed by coordinators of a
    /// later version. (Since hosts are named once, through the record's
    /// host table, a coordinator older than that cannot read what a newer
    /// one wrote: upgrade every coordinator before starting rollouts.)
    #[test]
    fn saved_json_keeps_its_shape() {
        let record = RolloutRecord {
            id: "r1".into(),
            environment: "staging".into(),
            bundle_digest: "d".into(),
            app_version: String::new(),
            state: RolloutState::Running,
            steps: vec![StepRecord {
                kind: StepKind::MaintenanceOff,
                hosts: vec!["app-1".into()],
                state: StepState::Skipped,
                attempt: 2,
                error: String::new(),
                recovery: true,
            }],
            error: String::new(),
            created_unix_ms: 1,
            updated_unix_ms: 2,
            coordinator: "c1".into(),
            cancel_requested: false,
            ..Default::default()
        };
        let json = serde_json::to_string(&record).unwrap();
        assert_eq!(
            json,
            r#"{"id":"r1","environment":"staging","bundle_digest":"d","app_version":"","state":"running","hosts":["app-1"],"steps":[{"kind":"maintenance_off","host_ids":"0","state":"skipped","attempt":2,"error":"","recovery":true}],"error":"","created_unix_ms":1,"updated_unix_ms":2,"coordinator":"c1","cancel_requested":false,"allow_danger":[],"started_by":"","backup":"","refused":false,"signature":null,"trace":{"span":"","parent":"","started_unix_ms":0}}"#
        );
        // As written before the host table.
        let untabled = r#"{"id":"r1","environment":"staging","bundle_digest":"d","app_version":"","state":"running","steps":[{"kind":"maintenance_off","hosts":["app-1"],"state":"skipped","attempt":2,"error":"","recovery":true}],"error":"","created_unix_ms":1,"updated_unix_ms":2,"coordinator":"c1","cancel_requested":false,"allow_danger":[],"started_by":"","plan_json":"","backup":"","refused":false,"previous_versions":{},"signature":null,"trace":{"span":"","parent":"","started_unix_ms":0}}"#;
        assert_eq!(serde_json::from_str::<RolloutRecord>(untabled).unwrap(), record);
        assert_eq!(serde_json::from_str::<RolloutRecord>(&json).unwrap(), record);
        // A record saved before the safe-failure fields existed still loads.
        let older = r#"{"id":"r1","environment":"staging","bundle_digest":"d","app_version":"","state":"running","steps":[{"kind":"maintenance_off","hosts":["app-1"],"state":"skipped","attempt":2,"error":"","recovery":true}],"error":"","created_unix_ms":1,"updated_unix_ms":2,"coordinator":"c1","cancel_requested":false}"#;
        assert_eq!(serde_json::from_str::<RolloutRecord>(older).unwrap(), record);
        // A rollout at its approval gate keeps the gate.
        let gate = ApprovalGate {
            needed: 2,
            rule: "approvals.danger: …".into(),
            requested_unix_ms: 1,
            expires_unix_ms: 2,
            approvals: vec![Decision {
                operator: "bob".into(),
                unix_ms: 1,
                verdict: Verdict::Approve,
                comment: "ok".into(),
                round: 0,
            }],
            rejection: None,
            outcome: GateOutcome::Waiting,
            ..ApprovalGate::default()
        };
        let waiting = RolloutRecord { state: RolloutState::AwaitingApproval, approval: Some(gate), ..record };
        let json = serde_json::to_string(&waiting).unwrap();
        assert!(json.contains(r#""state":"awaiting_approval""#), "{json}");
        assert!(
            json.contains(
                r#""approvals":[{"operator":"bob","unix_ms":1,"verdict":"approve","comment":"ok"}]"#
            ),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<RolloutRecord>(&json).unwrap(), waiting);
    }
}
