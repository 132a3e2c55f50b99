//! The way back after a failed step, chosen by what the failure changed.
//!
//! | failed in | database changed? | recovery |
//! |---|---|---|
//! | preflight, maintenance on, backup | no | lift maintenance mode (if it was turned on) |
//! | migrate, nothing changed (a first migration failed in its own transaction) | no | lift maintenance mode |
//! | migrate, after a change (or unknown) | yes | policy `restore`: put the database back (below), then lift maintenance mode; policy `hold`: stay in maintenance mode and stop |
//! | restart (a host does not become healthy) | yes, backward compatible | policy `revert`: restart the hosts already changed with their previous version, then lift maintenance mode; `hold`: stop |
//! | restart | yes, not backward compatible (the plan found destructive or breaking changes) | policy `revert`: put the database back first, then as above |
//! | smoke (after maintenance off) | as restart | as restart: the hosts the restart step changed get their previous version |
//! | watch window | yes | as restart; traffic ran against the migrated database, so it is put back by migration (the writes stay) when the downs are proven, and restored only when they are not and `watch.restore` is set |
//! | the way back by migration | yes | policy `on_down_failure = "restore"`: restore the backup, still in maintenance mode; `hold`: stop |
//! | the recovery restore or revert itself | unknown | stop; maintenance mode stays on |
//!
//! **Putting the database back** follows the runbook's order ([`Way`]):
//! by migration first — the proven downs of the migrations the rollout
//! applied, which keep every row written since and take as long as the
//! DDL — and by restoring the rollout's backup only when a down is not
//! proven (or the environment says `rollback = "restore"`).
//! | any step whose agent is still away at the step deadline | unknown | hold: stop; maintenance mode stays on (if it was turned on); a person decides |
//!
//! An agent that is away does not fail its step by itself: the step waits,
//! and the agent's real result decides when it comes back. Only past the
//! step deadline, with the agent still away, is the outcome unknown; then
//! nothing is guessed: no restore (the migration may still be running), no
//! lifting maintenance mode over a database in an unknown state.
//!
//! Recovery steps are ordinary saved steps (marked `recovery`), so a new
//! leader resumes a rollback like any other step, with the same command ids.

use crate::config::{EnvironmentPolicy, OnMigrateFailure, OnRestartFailure, Rollback};
use crate::model::{
    ApprovalGate, DatabaseState, MonitorState, RolloutRecord, RolloutState, StepKind, StepRecord, StepState,
    TraceRecord,
};

/// How a changed database is put back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Way {
    /// The proven downs of the migrations the rollout applied: every write
    /// made since is kept.
    Migration,
    /// The rollout's backup: every write made since the backup is lost.
    Restore,
}

impl Way {
    /// `migration` or `restore`, as events, audit and the API name it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Migration => "migration",
            Self::Restore => "restore",
        }
    }
}

/// What a recovery does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovery {
    /// Turn maintenance mode off again where it was turned on.
    LiftMaintenance,
    /// Put the database back, then lift maintenance mode.
    PutBack(Way),
    /// Restart the app hosts already changed with their previous version,
    /// putting the database back first when `put_back`; then lift
    /// maintenance mode.
    Revert { put_back: Option<Way> },
    /// Keep maintenance mode on and stop: a person decides.
    Hold,
}

/// What is known about how a step failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Every agent of the step answered. `database_changed` is what the DB
    /// agent reported for a failed migration (unknown counts as changed:
    /// never guess in favour of lifting maintenance mode over a database in
    /// an unknown state); `false` for other steps.
    Reported { database_changed: bool },
    /// An agent was still away at the step deadline: its command may have
    /// finished, failed, or still be running on the host.
    OutcomeUnknown,
}

/// The recovery for a failure of a `kind` step of `record`.
pub fn choose(
    record: &RolloutRecord,
    kind: StepKind,
    failure: Failure,
    policy: &EnvironmentPolicy,
) -> Recovery {
    match (kind, failure) {
        (_, Failure::OutcomeUnknown) => Recovery::Hold,
        (StepKind::Migrate, Failure::Reported { database_changed: true }) => {
            match policy.on_migrate_failure {
                OnMigrateFailure::Restore => Recovery::PutBack(way(record, policy).0),
                OnMigrateFailure::Hold => Recovery::Hold,
            }
        }
        (StepKind::Restart | StepKind::Smoke, Failure::Reported { .. }) => match policy.on_restart_failure {
            OnRestartFailure::Revert => {
                Recovery::Revert { put_back: (!backward_compatible(record)).then(|| way(record, policy).0) }
            }
            OnRestartFailure::Hold => Recovery::Hold,
        },
        // Traffic ran against the migrated database in the window: by
        // migration its writes stay; a restore would lose them, so it runs
        // only when the policy says so.
        (StepKind::Watch, Failure::Reported { .. }) => match policy.on_restart_failure {
            OnRestartFailure::Revert => Recovery::Revert {
                put_back: match way(record, policy).0 {
                    _ if backward_compatible(record) => None,
                    Way::Migration => Some(Way::Migration),
                    Way::Restore => policy.watch.is_some_and(|w| w.restore).then_some(Way::Restore),
                },
            },
            OnRestartFailure::Hold => Recovery::Hold,
        },
        _ => Recovery::LiftMaintenance,
    }
}

/// How `record`'s database is put back under `policy`, and why: by
/// migration when every migration it applies has a proven down (the plan
/// saved at preflight), else by restoring its backup.
pub fn way(record: &RolloutRecord, policy: &EnvironmentPolicy) -> (Way, String) {
    if policy.rollback == Rollback::Restore {
        return (Way::Restore, "rollback = \"restore\" in this environment".into());
    }
    match &record.plan {
        Some(plan) if plan.pending.is_empty() => {
            (Way::Restore, "the plan had no pending migration to roll back".into())
        }
        Some(plan) if plan.downs_proven() => {
            (Way::Migration, format!("each of its {} migration(s) has a proven down", plan.pending.len()))
        }
        Some(plan) => (
            Way::Restore,
            format!("not every migration has a proven down: {}", plan.unproven_downs().join(", ")),
        ),
        None => (Way::Restore, "there is no preflight plan with proven downs".into()),
    }
}

/// What an operator's cancel does to `record`, honoured between steps, and
/// why (appended to the rollout's message; empty before the database
/// changed): before the database changed, lift
/// maintenance mode and stop; after, put it back (by migration when
/// proven, else by restore) and bring back the previous app version on the
/// hosts already restarted: never the old app over a new schema.
pub fn on_cancel(record: &RolloutRecord, policy: &EnvironmentPolicy) -> (Recovery, String) {
    let migrated = record
        .steps
        .iter()
        .any(|s| s.kind == StepKind::Migrate && !s.recovery && s.state == StepState::Succeeded);
    if !migrated {
        return (Recovery::LiftMaintenance, String::new());
    }
    let (way, why) = way(record, policy);
    let recovery = if restarted_hosts(record).is_empty() {
        Recovery::PutBack(way)
    } else {
        Recovery::Revert { put_back: Some(way) }
    };
    (recovery, format!(" after the database changed: rolling it back by {} ({why})", way.name()))
}

/// The app hosts the rollout's restart step reached so far (none before it ran).
pub fn restarted_hosts(record: &RolloutRecord) -> Vec<String> {
    record
        .steps
        .iter()
        .find(|s| {
            s.kind == StepKind::Restart
                && !s.recovery
                && !matches!(s.state, StepState::Pending | StepState::Skipped)
        })
        .map(|s| s.hosts.clone())
        .unwrap_or_default()
}

/// How an operator's rollback of `record` puts the database back, and why:
/// by restore when `restore` (`--restore`) asks for it, else as [`way`].
pub fn rollback_way(record: &RolloutRecord, policy: &EnvironmentPolicy, restore: bool) -> (Way, String) {
    if restore { (Way::Restore, "--restore asked for it".to_owned()) } else { way(record, policy) }
}

/// Why `rollback = "migration"` refuses `record` before anything changes:
/// a pending migration whose down is not proven. `None` when it does not.
pub fn refused_by_rollback_policy(record: &RolloutRecord, policy: &EnvironmentPolicy) -> Option<String> {
    rollback_policy_refusal(&record.environment, record.plan.as_ref(), policy)
}

/// [`refused_by_rollback_policy`] for a `plan` of `environment` (also
/// before any rollout exists: `rollout plan`).
pub fn rollback_policy_refusal(
    environment: &str,
    plan: Option<&runway_proto::v1::MigrationPlan>,
    policy: &EnvironmentPolicy,
) -> Option<String> {
    if policy.rollback != Rollback::Migration {
        return None;
    }
    let unproven = match plan {
        Some(plan) if plan.downs_proven() => return None,
        Some(plan) => plan.unproven_downs().join(", "),
        None => "the DB agent sent no plan".to_owned(),
    };
    Some(format!(
        "rollback = \"migration\" in {environment} requires a proven down for every pending migration; not \
         proven: {unproven}. Nothing was changed; add or fix the down.sql files (`runway migrate plan` proves them)"
    ))
}

/// Whether the old app version can run against the migrated database: the
/// preflight plan found nothing destructive or breaking (no Danger finding,
/// no `drop-*` or `rename-*`). Without a saved plan, assume it cannot.
pub fn backward_compatible(record: &RolloutRecord) -> bool {
    record.plan.as_ref().is_some_and(runway_proto::v1::MigrationPlan::backward_compatible)
}

/// What the rollout's error adds when it holds after a failure of a
/// `kind` step on `hosts`: that maintenance mode stays on, and what a
/// person should check and do next.
pub fn hold_note(record: &RolloutRecord, kind: StepKind, hosts: &[String], failure: Failure) -> String {
    let backup = &record.backup;
    let restore = if record.databases.len() > 1 {
        let each: Vec<String> = record
            .databases
            .iter()
            .filter(|d| !d.backup.is_empty())
            .map(|d| format!("{} from {}", d.target, d.backup))
            .collect();
        format!("restore each changed database from this rollout's backup of it ({})", each.join(", "))
    } else {
        format!(
            "restore backup {backup} (`runway backup restore {backup} --env {} --yes`)",
            record.environment
        )
    };
    match (kind, failure) {
        (StepKind::Restart | StepKind::Smoke | StepKind::Watch, Failure::Reported { .. }) => format!(
            "; policy on_restart_failure = \"hold\" keeps maintenance mode on: {} may run the new version; \
             restart them with the previous one by hand (and {restore} if the old version cannot run \
             against the migrated database)",
            hosts.join(", ")
        ),
        (_, Failure::Reported { .. }) => format!(
            "; the database changed, and policy on_migrate_failure = \"hold\" keeps maintenance mode on: \
             {restore} or finish the migration by hand"
        ),
        (StepKind::Migrate, Failure::OutcomeUnknown) => format!(
            "; runway does not guess: maintenance mode stays on and nothing more runs; a person must \
             decide. On the DB host {}, run `runway migrate status` (with its DATABASE_URL) to see whether \
             the migration finished, failed or still runs; once it has ended, {restore} or finish the \
             migration by hand, then turn maintenance mode off",
            hosts.join(", ")
        ),
        (_, Failure::OutcomeUnknown) => {
            let maintenance = if maintenance_hosts(record).is_some() {
                "maintenance mode stays on"
            } else {
                "maintenance mode was never turned on"
            };
            format!(
                "; runway does not guess: {maintenance} and nothing more runs; a person must decide. \
                 Check {} on {} (the agent's log and journal), then finish by hand",
                kind.name(),
                hosts.join(", ")
            )
        }
    }
}

/// Appends the steps of `recovery` to `record`; `changed_hosts` are the
/// hosts the failed step reached (for a restart: the ones restarted or
/// tried; for a migrate: the DB targets to restore, see
/// `databases::to_restore`, empty for all). The caller saves it.
pub fn plan(record: &mut RolloutRecord, recovery: Recovery, changed_hosts: &[String]) {
    match recovery {
        Recovery::Hold => {}
        Recovery::LiftMaintenance => lift_maintenance(record),
        Recovery::PutBack(way) => {
            put_back(record, way, changed_hosts.to_vec());
            lift_maintenance(record);
        }
        Recovery::Revert { put_back: database } => {
            let unknown = unknown_versions(record, changed_hosts);
            if !unknown.is_empty() {
                // Reverting would restart what they run now: hold instead.
                let note = format!(
                    "; CANNOT REVERT {}: {}; maintenance mode stays on: restart them with their previous \
                     version by hand (and restore backup {} if it cannot run against the migrated database)",
                    unknown.join(", "),
                    UNKNOWN_VERSION,
                    record.backup
                );
                record.error.push_str(&note);
                return;
            }
            if let Some(way) = database {
                put_back(record, way, Vec::new());
            }
            record.steps.push(recovery_step(StepKind::Restart, changed_hosts.to_vec()));
            lift_maintenance(record);
        }
    }
}

/// Why a host with no recorded previous version is not reverted.
const UNKNOWN_VERSION: &str = "the app version they ran before this rollout is unknown (their agents \
    reported none when it started: no `version` under [app] in their config, and runway had not deployed \
    to them), and restarting them without one would start the version this rollout deployed";

/// The hosts of `hosts` whose version before `record` is not known: a
/// revert has nothing to bring back on them.
fn unknown_versions(record: &RolloutRecord, hosts: &[String]) -> Vec<String> {
    hosts.iter().filter(|h| record.previous_versions.get(*h).is_none_or(String::is_empty)).cloned().collect()
}

/// Puts the database of each of `targets` back `way` (empty: every
/// database the rollout changed).
fn put_back(record: &mut RolloutRecord, way: Way, targets: Vec<String>) {
    match way {
        Way::Restore => restore(record, targets),
        Way::Migration => {
            let targets = if targets.is_empty() { migrated(record) } else { targets };
            push_again(record, StepKind::MigrateDown, targets);
        }
    }
}

/// The DB targets this rollout migrated (every DB target, for records
/// saved before databases had names).
pub fn migrated(record: &RolloutRecord) -> Vec<String> {
    if record.databases.is_empty() {
        return record.db_host().map(str::to_owned).into_iter().collect();
    }
    record
        .databases
        .iter()
        .filter(|d| matches!(d.state, DatabaseState::Migrated | DatabaseState::Failed))
        .map(|d| d.target.clone())
        .collect()
}

/// After a failed `migrate_down` step of `record` (its targets `failed`
/// failed; the others were rolled back by migration and keep their
/// writes): the restore of those that takes its place, per
/// `on_down_failure`, to insert right after it so it runs before the app
/// hosts come back; `None` to hold.
pub fn fall_back_to_restore(
    record: &RolloutRecord,
    failed: Vec<String>,
    policy: &EnvironmentPolicy,
) -> Option<StepRecord> {
    match policy.on_down_failure {
        crate::config::OnDownFailure::Hold => None,
        crate::config::OnDownFailure::Restore => {
            let attempt = record
                .steps
                .iter()
                .filter(|s| s.kind == StepKind::Restore && s.recovery)
                .map(|s| s.attempt)
                .max()
                .unwrap_or(0);
            Some(StepRecord { attempt, ..recovery_step(StepKind::Restore, failed) })
        }
    }
}

/// Whether step `index` of `record` is a failed `migrate_down` that a
/// restore took over (see [`fall_back_to_restore`]).
fn fallen_back(record: &RolloutRecord, index: usize) -> bool {
    let step = &record.steps[index];
    step.kind == StepKind::MigrateDown
        && step.state == StepState::Failed
        && record.steps[index + 1..].iter().any(|s| s.recovery && s.kind == StepKind::Restore)
}

/// Why an ended rollout cannot be rolled back on demand.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RollbackRefused {
    #[error("rollout {id} is still {state}; cancel it or wait for it to end first")]
    NotEnded { id: String, state: &'static str },
    #[error("rollout {id} was already rolled back")]
    AlreadyRolledBack { id: String },
    #[error("rollout {id} was refused before anything changed; there is nothing to roll back")]
    NothingChanged { id: String },
    #[error("rollout {id} took no backup; there is nothing to restore, and {why}")]
    NoBackup { id: String, why: String },
    #[error(
        "rollout {id} ended with its own way back failed or on hold ({error}); a person has to finish it by hand"
    )]
    Held { id: String, error: String },
    #[error("rollout {id} cannot be rolled back on {hosts}: {UNKNOWN_VERSION}; nothing was changed")]
    UnknownVersion { id: String, hosts: String },
}

/// Reopens an ended rollout for an operator's rollback: maintenance on,
/// the database put back `way` (see [`way`]), the app hosts' previous
/// version, maintenance off; each a recovery step of the same saved state
/// machine. The caller saves the record before it runs it.
pub fn reopen_for_rollback(
    record: &mut RolloutRecord,
    requested_by: &str,
    (way, why): (Way, String),
) -> Result<(), RollbackRefused> {
    let id = record.id.clone();
    match record.state {
        RolloutState::Succeeded | RolloutState::Failed | RolloutState::Cancelled => {}
        RolloutState::RolledBack => return Err(RollbackRefused::AlreadyRolledBack { id }),
        RolloutState::Pending => return Err(RollbackRefused::NotEnded { id, state: "pending" }),
        RolloutState::Running => return Err(RollbackRefused::NotEnded { id, state: "running" }),
        RolloutState::AwaitingApproval => {
            return Err(RollbackRefused::NotEnded { id, state: "awaiting approval" });
        }
    }
    if record.refused {
        return Err(RollbackRefused::NothingChanged { id });
    }
    if way == Way::Restore && record.backup.is_empty() {
        return Err(RollbackRefused::NoBackup { id, why });
    }
    // A way back that did not finish holds; a rollback that was not
    // approved (its gate failed, the rest skipped) changed nothing.
    let unfinished = |s: &StepRecord| {
        s.recovery
            && s.kind != StepKind::Approval
            && !matches!(s.state, StepState::Succeeded | StepState::Skipped)
    };
    if record.steps.iter().any(unfinished) {
        return Err(RollbackRefused::Held { id, error: record.error.clone() });
    }
    let apps: Vec<String> = record
        .steps
        .iter()
        .find(|s| s.kind == StepKind::Restart)
        .map(|s| s.hosts.clone())
        .unwrap_or_default();
    let unknown = unknown_versions(record, &apps);
    if !unknown.is_empty() {
        return Err(RollbackRefused::UnknownVersion { id, hosts: unknown.join(", ") });
    }
    // The rollback is a span of its own under the rollout's, on its trace.
    record.trace = TraceRecord::start(record.trace.span());
    if !apps.is_empty() {
        push_again(record, StepKind::MaintenanceOn, apps.clone());
    }
    // Only the databases this rollout changed: a database it never
    // migrated keeps its writes (a restore would lose them for nothing).
    let changed = migrated(record);
    if !changed.is_empty() {
        put_back(record, way, changed);
    }
    if !apps.is_empty() {
        push_again(record, StepKind::Restart, apps.clone());
        push_again(record, StepKind::MaintenanceOff, apps);
    }
    let before =
        if record.error.is_empty() { String::new() } else { format!(" (it had ended: {})", record.error) };
    record.error = format!("rollback by {} requested by {requested_by} ({why}){before}", way.name());
    // A rollback ends the `monitor` phase: the run rolls back, then stops.
    if let Some(monitor) = record.analysis.monitor.as_mut().filter(|m| m.state == MonitorState::Monitoring) {
        monitor.state = MonitorState::Superseded;
        monitor.reason = format!("rolled back by {requested_by}");
    }
    record.state = RolloutState::Running;
    record.cancel_requested = false;
    Ok(())
}

/// Holds an operator's rollback (the steps from `first` on, just added by
/// [`reopen_for_rollback`]) at an approval gate of its own, before it
/// touches anything: `approvals.rollback` in the environment's policy.
/// `before` is the state the rollout had ended in, which it ends in again
/// if the rollback is rejected or expires.
pub fn gate_rollback(record: &mut RolloutRecord, first: usize, before: RolloutState, asked_by: &str) {
    let round = record.approval.as_ref().map_or(0, |gate| gate.round) + 1;
    let attempt =
        record.steps.iter().filter(|s| s.kind == StepKind::Approval && s.recovery).map(|s| s.attempt).max();
    let step = StepRecord { attempt: attempt.unwrap_or(0), ..recovery_step(StepKind::Approval, Vec::new()) };
    record.steps.insert(first.min(record.steps.len()), step);
    record.approval = Some(ApprovalGate {
        round,
        asked_by: asked_by.to_owned(),
        before: Some(before),
        ..ApprovalGate::default()
    });
}

/// A recovery step of `kind` whose attempt continues after any earlier
/// recovery step of that kind, so its command ids are new: a journal must
/// not answer it with an earlier step's result.
fn push_again(record: &mut RolloutRecord, kind: StepKind, hosts: Vec<String>) {
    let attempt =
        record.steps.iter().filter(|s| s.kind == kind && s.recovery).map(|s| s.attempt).max().unwrap_or(0);
    record.steps.push(StepRecord { attempt, ..recovery_step(kind, hosts) });
}

/// A restore of the rollout's backup of each of `targets` (empty: of every
/// database it backed up).
fn restore(record: &mut RolloutRecord, targets: Vec<String>) {
    let targets = if targets.is_empty() { backed_up(record) } else { targets };
    push_again(record, StepKind::Restore, targets);
}

/// The DB targets this rollout took a backup of (every one, for records
/// saved before databases had names).
fn backed_up(record: &RolloutRecord) -> Vec<String> {
    if record.databases.is_empty() {
        return record.db_host().map(str::to_owned).into_iter().collect();
    }
    record.databases.iter().filter(|d| !d.backup.is_empty()).map(|d| d.target.clone()).collect()
}

/// The hosts maintenance mode may be on: those of a maintenance-on step
/// that was started. `None` when it never was.
fn maintenance_hosts(record: &RolloutRecord) -> Option<Vec<String>> {
    record
        .steps
        .iter()
        .find(|s| {
            s.kind == StepKind::MaintenanceOn
                && s.state != StepState::Pending
                && s.state != StepState::Skipped
        })
        .map(|s| s.hosts.clone())
}

/// After a failure: if maintenance mode may be on, turn it off again.
fn lift_maintenance(record: &mut RolloutRecord) {
    let maintenance_hosts = maintenance_hosts(record);
    let already_off = record.steps.iter().any(|s| {
        s.kind == StepKind::MaintenanceOff && matches!(s.state, StepState::Succeeded | StepState::Running)
    });
    if let Some(hosts) = maintenance_hosts
        && !already_off
    {
        record.steps.push(recovery_step(StepKind::MaintenanceOff, hosts));
    }
}

/// A pending recovery step of `kind` on `hosts`.
pub fn recovery_step(kind: StepKind, hosts: Vec<String>) -> StepRecord {
    StepRecord { kind, hosts, state: StepState::Pending, attempt: 0, error: String::new(), recovery: true }
}

/// Whether `step` is skipped rather than run: after a failure only recovery
/// steps run, and after a failed recovery restore or revert nothing does
/// (maintenance mode stays on over a state nobody checked).
pub fn skips(record: &RolloutRecord, step: &StepRecord) -> bool {
    let failing = !record.error.is_empty();
    let way_back_failed = (0..record.steps.len()).any(|i| {
        rolls_back(&record.steps[i]) && record.steps[i].state == StepState::Failed && !fallen_back(record, i)
    });
    (failing && !step.recovery) || way_back_failed
}

/// A recovery step that undoes the rollout (rather than only lifting maintenance).
fn rolls_back(step: &StepRecord) -> bool {
    step.recovery && matches!(step.kind, StepKind::Restore | StepKind::Restart | StepKind::MigrateDown)
}

/// What the way back did, for the message of a rolled-back rollout:
/// `backup B was restored, the app hosts run their previous version again,
/// maintenance mode lifted` (the parts that ran).
pub fn rolled_back_summary(record: &RolloutRecord) -> String {
    let done = |kind: StepKind| {
        record.steps.iter().any(|s| s.recovery && s.kind == kind && s.state == StepState::Succeeded)
    };
    let mut parts = Vec::new();
    if done(StepKind::MigrateDown) {
        parts.push(
            "rolled back by migration (the proven downs of its migrations ran; rows written since are kept)"
                .to_owned(),
        );
    } else if record.steps.iter().any(|s| s.recovery && s.kind == StepKind::MigrateDown) {
        parts.push("rolling back by migration failed".to_owned());
    }
    let restored: Vec<&str> = record
        .databases
        .iter()
        .filter(|d| d.state == crate::model::DatabaseState::Restored)
        .map(|d| d.target.as_str())
        .collect();
    if done(StepKind::Restore) && record.databases.len() > 1 {
        parts.push(format!("restored from this rollout's backups: {}", restored.join(", ")));
    } else if done(StepKind::Restore) {
        parts.push(format!("backup {} was restored", record.backup));
    }
    if done(StepKind::Restart) {
        parts.push("the app hosts run their previous version again".to_owned());
    }
    if done(StepKind::MaintenanceOff) {
        parts.push("maintenance mode lifted".to_owned());
    }
    parts.join(", ")
}

/// The state a rollout ends in once no step is left: `cancelled` also when
/// its approval gate stopped it (rejected, or expired).
pub fn terminal_state(record: &RolloutRecord) -> RolloutState {
    // An operator's rollback that was not approved changed nothing.
    if let Some(before) = record.approval.as_ref().filter(|gate| gate.stopped()).and_then(|gate| gate.before)
    {
        return before;
    }
    let restored = record.steps.iter().any(|s| rolls_back(s) && s.state == StepState::Succeeded);
    // A rollback gate and the steps it skipped belong to a rollback that
    // was not approved: it changed nothing (a stopped gate of the current
    // rollback ended the rollout above).
    let unfinished_recovery = (0..record.steps.len()).any(|i| {
        let step = &record.steps[i];
        step.recovery
            && step.kind != StepKind::Approval
            && !matches!(step.state, StepState::Succeeded | StepState::Skipped)
            && !fallen_back(record, i)
    });
    let gate_stopped = record.approval.as_ref().is_some_and(|gate| gate.stopped());
    if record.error.is_empty() {
        RolloutState::Succeeded
    } else if (record.cancel_requested || gate_stopped) && !unfinished_recovery {
        // Also after a cancel that rolled the database back: the operator
        // stopped it, and the way back finished.
        RolloutState::Cancelled
    } else if restored && !unfinished_recovery {
        RolloutState::RolledBack
    } else {
        RolloutState::Failed
    }
}

#[cfg(test)]
mod tests {
    use runway_proto::v1;

    use super::*;

    fn step(kind: StepKind, state: StepState) -> StepRecord {
        StepRecord {
            kind,
            hosts: vec![if kind == StepKind::Migrate { "db-1" } else { "app-1" }.into()],
            state,
            attempt: 1,
            error: String::new(),
            recovery: false,
        }
    }

    fn record_failed_in_migrate() -> RolloutRecord {
        let json = serde_json::json!({
            "id": "r1", "environment": "production", "bundle_digest": "d", "app_version": "v2",
            "state": "running", "error": "migrate failed: boom", "created_unix_ms": 0, "updated_unix_ms": 0,
            "coordinator": "c1", "cancel_requested": false, "steps": [], "backup": "b1",
            "previous_versions": { "app-1": "v1", "app-2": "v1" },
        });
        let mut record: RolloutRecord = serde_json::from_value(json).expect("a record");
        record.steps = vec![
            step(StepKind::Preflight, StepState::Succeeded),
            step(StepKind::MaintenanceOn, StepState::Succeeded),
            step(StepKind::Backup, StepState::Succeeded),
            step(StepKind::Migrate, StepState::Failed),
            step(StepKind::Restart, StepState::Pending),
            step(StepKind::MaintenanceOff, StepState::Pending),
        ];
        record
    }

    const CHANGED: Failure = Failure::Reported { database_changed: true };
    const UNCHANGED: Failure = Failure::Reported { database_changed: false };

    #[test]
    fn a_change_to_the_database_is_restored_unless_the_policy_holds() {
        let restore = EnvironmentPolicy::default();
        let hold =
            EnvironmentPolicy { on_migrate_failure: OnMigrateFailure::Hold, ..EnvironmentPolicy::default() };
        let record = record_failed_in_migrate();
        assert_eq!(choose(&record, StepKind::Migrate, CHANGED, &restore), Recovery::PutBack(Way::Restore));
        assert_eq!(choose(&record, StepKind::Migrate, CHANGED, &hold), Recovery::Hold);
        assert_eq!(choose(&record, StepKind::Migrate, UNCHANGED, &restore), Recovery::LiftMaintenance);
        assert_eq!(choose(&record, StepKind::Backup, CHANGED, &restore), Recovery::LiftMaintenance);
    }

    #[test]
    fn an_unknown_outcome_holds_whatever_the_step_and_policy() {
        let restore = EnvironmentPolicy::default();
        for kind in [
            StepKind::Preflight,
            StepKind::MaintenanceOn,
            StepKind::Backup,
            StepKind::Migrate,
            StepKind::Restart,
        ] {
            let record = record_failed_in_migrate();
            assert_eq!(choose(&record, kind, Failure::OutcomeUnknown, &restore), Recovery::Hold, "{kind:?}");
        }
    }

    #[test]
    fn a_hold_over_an_unknown_migration_says_what_a_person_checks() {
        let record = record_failed_in_migrate();
        let note = hold_note(&record, StepKind::Migrate, &["db-1".into()], Failure::OutcomeUnknown);
        for needle in [
            "maintenance mode stays on",
            "a person must decide",
            "db-1",
            "`runway migrate status`",
            "restore backup b1",
        ] {
            assert!(note.contains(needle), "{needle:?} missing from {note:?}");
        }
        let mut before_maintenance = record.clone();
        before_maintenance.steps[1].state = StepState::Pending;
        let note =
            hold_note(&before_maintenance, StepKind::Preflight, &["app-1".into()], Failure::OutcomeUnknown);
        assert!(note.contains("maintenance mode was never turned on"), "{note}");
    }

    #[test]
    fn restore_runs_on_the_db_host_before_maintenance_is_lifted() {
        let mut record = record_failed_in_migrate();
        plan(&mut record, Recovery::PutBack(Way::Restore), &[]);
        let added: Vec<(StepKind, &str)> =
            record.steps[6..].iter().map(|s| (s.kind, s.hosts[0].as_str())).collect();
        assert_eq!(added, [(StepKind::Restore, "db-1"), (StepKind::MaintenanceOff, "app-1")]);
        assert!(record.steps[6..].iter().all(|s| s.recovery && s.state == StepState::Pending));
    }

    #[test]
    fn hold_adds_nothing_so_maintenance_stays_on() {
        let mut record = record_failed_in_migrate();
        plan(&mut record, Recovery::Hold, &[]);
        assert_eq!(record.steps.len(), 6);
        assert!(skips(&record, &record.steps[5].clone()), "the plan's maintenance_off must not run");
        assert_eq!(terminal_state(&record), RolloutState::Failed);
    }

    #[test]
    fn a_failed_restore_keeps_maintenance_on_and_ends_failed() {
        let mut record = record_failed_in_migrate();
        plan(&mut record, Recovery::PutBack(Way::Restore), &[]);
        record.steps[6].state = StepState::Failed;
        let lift = record.steps[7].clone();
        assert!(skips(&record, &lift), "maintenance_off must be skipped after a failed restore");
        record.steps[7].state = StepState::Skipped;
        assert_eq!(terminal_state(&record), RolloutState::Failed);
    }

    #[test]
    fn a_restored_rollout_ends_rolled_back() {
        let mut record = record_failed_in_migrate();
        plan(&mut record, Recovery::PutBack(Way::Restore), &[]);
        record.steps[6].state = StepState::Succeeded;
        assert!(!skips(&record, &record.steps[7].clone()));
        record.steps[7].state = StepState::Succeeded;
        assert_eq!(terminal_state(&record), RolloutState::RolledBack);
    }

    fn with_plan(findings: serde_json::Value) -> RolloutRecord {
        let mut record = record_failed_in_migrate();
        let finding = |f: &serde_json::Value| v1::LintFinding {
            rule: f["rule"].as_str().unwrap_or_default().to_owned(),
            severity: if f["severity"] == "danger" { v1::Severity::Danger } else { v1::Severity::Info }
                as i32,
            ..v1::LintFinding::default()
        };
        record.plan = Some(v1::MigrationPlan {
            findings: findings.as_array().map(|a| a.iter().map(finding).collect()).unwrap_or_default(),
            ..v1::MigrationPlan::default()
        });
        record
    }

    #[test]
    fn a_failed_restart_reverts_and_restores_only_when_the_migrations_break_the_old_version() {
        let policy = EnvironmentPolicy::default();
        let additive = with_plan(serde_json::json!([{ "rule": "add-column-default", "severity": "info" }]));
        assert_eq!(
            choose(&additive, StepKind::Restart, CHANGED, &policy),
            Recovery::Revert { put_back: None }
        );
        let destructive = with_plan(serde_json::json!([{ "rule": "drop-column", "severity": "danger" }]));
        assert_eq!(
            choose(&destructive, StepKind::Restart, CHANGED, &policy),
            Recovery::Revert { put_back: Some(Way::Restore) }
        );
        let unknown = record_failed_in_migrate();
        assert_eq!(
            choose(&unknown, StepKind::Restart, CHANGED, &policy),
            Recovery::Revert { put_back: Some(Way::Restore) }
        );
        let hold =
            EnvironmentPolicy { on_restart_failure: OnRestartFailure::Hold, ..EnvironmentPolicy::default() };
        assert_eq!(choose(&additive, StepKind::Restart, CHANGED, &hold), Recovery::Hold);
    }

    #[test]
    fn a_watch_failure_restores_only_when_the_policy_says_so() {
        let destructive = with_plan(serde_json::json!([{ "rule": "drop-column", "severity": "danger" }]));
        let additive = with_plan(serde_json::json!([]));
        let mut policy = EnvironmentPolicy::default();
        assert_eq!(
            choose(&destructive, StepKind::Watch, UNCHANGED, &policy),
            Recovery::Revert { put_back: None }
        );
        assert_eq!(
            choose(&destructive, StepKind::Smoke, UNCHANGED, &policy),
            Recovery::Revert { put_back: Some(Way::Restore) }
        );
        policy.watch = Some(crate::config::WatchPolicy {
            duration: crate::config::Span::secs(60),
            interval: crate::config::Span::secs(5),
            restore: true,
        });
        assert_eq!(
            choose(&destructive, StepKind::Watch, UNCHANGED, &policy),
            Recovery::Revert { put_back: Some(Way::Restore) }
        );
        assert_eq!(
            choose(&additive, StepKind::Watch, UNCHANGED, &policy),
            Recovery::Revert { put_back: None }
        );
    }

    #[test]
    fn revert_restarts_the_changed_hosts_before_maintenance_is_lifted() {
        let mut record = record_failed_in_migrate();
        plan(
            &mut record,
            Recovery::Revert { put_back: Some(Way::Restore) },
            &["app-1".into(), "app-2".into()],
        );
        let added: Vec<(StepKind, Vec<String>)> =
            record.steps[6..].iter().map(|s| (s.kind, s.hosts.clone())).collect();
        assert_eq!(
            added,
            [
                (StepKind::Restore, vec!["db-1".to_owned()]),
                (StepKind::Restart, vec!["app-1".to_owned(), "app-2".to_owned()]),
                (StepKind::MaintenanceOff, vec!["app-1".to_owned()]),
            ]
        );
        for step in 6..9 {
            record.steps[step].state = StepState::Succeeded;
        }
        assert_eq!(terminal_state(&record), RolloutState::RolledBack);
        assert_eq!(
            rolled_back_summary(&record),
            "backup b1 was restored, the app hosts run their previous version again, maintenance mode lifted"
        );
    }

    #[test]
    fn an_ended_rollout_reopens_with_fresh_recovery_steps() {
        let mut record = record_failed_in_migrate();
        // It failed before, and maintenance was lifted by a recovery step.
        plan(&mut record, Recovery::LiftMaintenance, &[]);
        record.steps[6].state = StepState::Succeeded;
        record.steps[6].attempt = 1;
        record.state = RolloutState::Failed;
        reopen_for_rollback(&mut record, "ada@ops", (Way::Restore, "test".into())).expect("reopens");
        let added: Vec<(StepKind, u32)> = record.steps[7..].iter().map(|s| (s.kind, s.attempt)).collect();
        // maintenance_off continues after the earlier recovery's attempt 1.
        assert_eq!(
            added,
            [
                (StepKind::MaintenanceOn, 0),
                (StepKind::Restore, 0),
                (StepKind::Restart, 0),
                (StepKind::MaintenanceOff, 1)
            ]
        );
        assert!(record.steps[7..].iter().all(|s| s.recovery && s.state == StepState::Pending));
        assert_eq!(record.state, RolloutState::Running);
        assert!(record.error.starts_with("rollback by restore requested by ada@ops"), "{}", record.error);
        for step in 7..11 {
            record.steps[step].state = StepState::Succeeded;
        }
        assert_eq!(terminal_state(&record), RolloutState::RolledBack);
    }

    #[test]
    fn a_rollback_is_refused_when_there_is_nothing_safe_to_do() {
        let mut running = record_failed_in_migrate();
        assert!(matches!(
            reopen_for_rollback(&mut running, "x", (Way::Restore, "test".into())),
            Err(RollbackRefused::NotEnded { .. })
        ));
        let mut no_backup = record_failed_in_migrate();
        no_backup.state = RolloutState::Succeeded;
        no_backup.backup.clear();
        assert!(matches!(
            reopen_for_rollback(&mut no_backup, "x", (Way::Restore, "test".into())),
            Err(RollbackRefused::NoBackup { .. })
        ));
        let mut held = record_failed_in_migrate();
        held.state = RolloutState::Failed;
        plan(&mut held, Recovery::PutBack(Way::Restore), &[]);
        held.steps[6].state = StepState::Failed;
        assert!(matches!(
            reopen_for_rollback(&mut held, "x", (Way::Restore, "test".into())),
            Err(RollbackRefused::Held { .. })
        ));
    }

    #[test]
    fn a_host_whose_previous_version_is_unknown_is_never_reverted() {
        // app-2 registered with no version when the rollout started.
        let mut record = record_failed_in_migrate();
        record.previous_versions.insert("app-2".into(), String::new());
        assert!(record.previous_versions.get("app-1").is_some_and(|v| v == "v1"));
        let steps = record.steps.len();
        plan(
            &mut record,
            Recovery::Revert { put_back: Some(Way::Restore) },
            &["app-1".into(), "app-2".into()],
        );
        assert_eq!(record.steps.len(), steps, "a revert was planned: {:?}", &record.steps[steps..]);
        for needle in ["CANNOT REVERT app-2", "unknown", "maintenance mode stays on", "restore backup b1"] {
            assert!(record.error.contains(needle), "{needle:?} missing from {:?}", record.error);
        }
        assert!(!record.error.contains("app-1,"), "{}", record.error);

        // An operator's rollback: refused before anything is planned.
        let mut ended = record_failed_in_migrate();
        ended.state = RolloutState::Succeeded;
        ended.previous_versions.clear();
        let before = ended.steps.len();
        let refused = reopen_for_rollback(&mut ended, "x", (Way::Restore, "test".into())).unwrap_err();
        assert!(matches!(&refused, RollbackRefused::UnknownVersion { hosts, .. } if hosts == "app-1"));
        let text = refused.to_string();
        assert!(text.contains("app-1") && text.contains("nothing was changed"), "{text}");
        assert_eq!((ended.steps.len(), ended.state), (before, RolloutState::Succeeded));
    }

    fn with_downs(states: &[v1::DownState]) -> RolloutRecord {
        let mut record = record_failed_in_migrate();
        let names: Vec<String> = (0..states.len()).map(|i| format!("{i}_m")).collect();
        record.plan = Some(v1::MigrationPlan {
            pending: names.clone(),
            downs: names
                .iter()
                .zip(states)
                .map(|(n, s)| v1::DownProof { migration: n.clone(), state: *s as i32, detail: String::new() })
                .collect(),
            ..v1::MigrationPlan::default()
        });
        record
    }

    #[test]
    fn a_changed_database_is_put_back_by_migration_when_every_down_is_proven() {
        use crate::config::Rollback;
        let policy = EnvironmentPolicy::default();
        let proven = with_downs(&[v1::DownState::Proven, v1::DownState::Proven]);
        assert_eq!(choose(&proven, StepKind::Migrate, CHANGED, &policy), Recovery::PutBack(Way::Migration));
        let one_missing = with_downs(&[v1::DownState::Proven, v1::DownState::Missing]);
        assert_eq!(
            choose(&one_missing, StepKind::Migrate, CHANGED, &policy),
            Recovery::PutBack(Way::Restore)
        );
        assert!(way(&one_missing, &policy).1.contains("1_m (missing)"), "{}", way(&one_missing, &policy).1);
        let restore = EnvironmentPolicy { rollback: Rollback::Restore, ..EnvironmentPolicy::default() };
        assert_eq!(choose(&proven, StepKind::Migrate, CHANGED, &restore), Recovery::PutBack(Way::Restore));
        // In the watch window writes happened: by migration even without `watch.restore`.
        let mut watched = proven.clone();
        watched.plan.as_mut().unwrap().findings.push(v1::LintFinding {
            rule: "drop-column".into(),
            severity: v1::Severity::Danger as i32,
            ..v1::LintFinding::default()
        });
        assert_eq!(
            choose(&watched, StepKind::Watch, UNCHANGED, &policy),
            Recovery::Revert { put_back: Some(Way::Migration) }
        );
    }

    #[test]
    fn rollback_migration_refuses_a_plan_with_an_unproven_down() {
        use crate::config::Rollback;
        let strict = EnvironmentPolicy { rollback: Rollback::Migration, ..EnvironmentPolicy::default() };
        let proven = with_downs(&[v1::DownState::Proven]);
        assert_eq!(refused_by_rollback_policy(&proven, &strict), None);
        let differs = with_downs(&[v1::DownState::Differs]);
        let why = refused_by_rollback_policy(&differs, &strict).expect("refused");
        assert!(why.contains("0_m (differs)") && why.contains("Nothing was changed"), "{why}");
        assert_eq!(refused_by_rollback_policy(&differs, &EnvironmentPolicy::default()), None);
    }

    #[test]
    fn a_failed_down_falls_back_to_the_restore_before_maintenance_is_lifted() {
        let mut record = with_downs(&[v1::DownState::Proven]);
        plan(&mut record, Recovery::PutBack(Way::Migration), &["db-1".into()]);
        let added: Vec<StepKind> = record.steps[6..].iter().map(|s| s.kind).collect();
        assert_eq!(added, [StepKind::MigrateDown, StepKind::MaintenanceOff]);
        record.steps[6].state = StepState::Failed;
        // Without a fallback, the failed down holds everything.
        assert!(skips(&record, &record.steps[7].clone()));
        let fallback =
            fall_back_to_restore(&record, record.steps[6].hosts.clone(), &EnvironmentPolicy::default())
                .expect("restore");
        record.steps.insert(7, fallback);
        assert_eq!(record.steps[7].kind, StepKind::Restore);
        assert!(!skips(&record, &record.steps[8].clone()), "maintenance off runs after the restore");
        record.steps[7].state = StepState::Succeeded;
        record.steps[8].state = StepState::Succeeded;
        assert_eq!(terminal_state(&record), RolloutState::RolledBack);
        assert!(
            rolled_back_summary(&record)
                .starts_with("rolling back by migration failed, backup b1 was restored")
        );
        let hold = EnvironmentPolicy {
            on_down_failure: crate::config::OnDownFailure::Hold,
            ..EnvironmentPolicy::default()
        };
        assert_eq!(fall_back_to_restore(&record, record.steps[6].hosts.clone(), &hold), None);
    }

    #[test]
    fn a_cancel_after_the_migration_rolls_the_database_back_before_lifting_maintenance() {
        let mut record = with_downs(&[v1::DownState::Proven]);
        record.error.clear();
        record.steps[3].state = StepState::Succeeded; // migrate
        let (recovery, why) = on_cancel(&record, &EnvironmentPolicy::default());
        assert_eq!(recovery, Recovery::PutBack(Way::Migration), "{why}");
        assert!(why.starts_with(" after the database changed: rolling it back by migration"), "{why}");
        let mut before_migrate = record.clone();
        before_migrate.steps[3].state = StepState::Pending;
        assert_eq!(on_cancel(&before_migrate, &EnvironmentPolicy::default()).0, Recovery::LiftMaintenance);
        // Once hosts restarted, they get their previous version back too.
        record.steps[4].state = StepState::Succeeded;
        assert_eq!(
            on_cancel(&record, &EnvironmentPolicy::default()).0,
            Recovery::Revert { put_back: Some(Way::Migration) }
        );
        // A cancel whose way back failed is a failure, not a cancel.
        record.error = "cancelled by an operator".into();
        record.cancel_requested = true;
        plan(&mut record, Recovery::PutBack(Way::Restore), &[]);
        record.steps[6].state = StepState::Failed;
        assert_eq!(terminal_state(&record), RolloutState::Failed);
        record.steps[6].state = StepState::Succeeded;
        record.steps[7].state = StepState::Succeeded;
        assert_eq!(terminal_state(&record), RolloutState::Cancelled);
    }

    #[test]
    fn an_on_demand_rollback_by_migration_needs_no_backup() {
        let mut record = with_downs(&[v1::DownState::Proven]);
        record.state = RolloutState::Succeeded;
        record.backup.clear();
        reopen_for_rollback(&mut record, "ada", (Way::Migration, "proven".into())).expect("reopens");
        let added: Vec<StepKind> = record.steps[6..].iter().map(|s| s.kind).collect();
        assert_eq!(
            added,
            [StepKind::MaintenanceOn, StepKind::MigrateDown, StepKind::Restart, StepKind::MaintenanceOff]
        );
        for step in 6..10 {
            record.steps[step].state = StepState::Succeeded;
        }
        assert_eq!(terminal_state(&record), RolloutState::RolledBack);
        assert!(rolled_back_summary(&record).starts_with("rolled back by migration"));
    }

    /// Two databases, only one of them migrated: the rollback restores that
    /// one; the other keeps every write since.
    #[test]
    fn an_on_demand_rollback_puts_back_only_the_databases_the_rollout_changed() {
        let mut record = record_failed_in_migrate();
        record.state = RolloutState::Succeeded;
        record.steps.iter_mut().for_each(|s| s.state = StepState::Succeeded);
        let database = |target: &str, state: DatabaseState| crate::model::DatabaseRecord {
            target: target.into(),
            state,
            backup: format!("{target}-backup"),
            ..crate::model::DatabaseRecord::default()
        };
        record.databases = vec![
            database("db-1/orders", DatabaseState::Migrated),
            database("db-1/billing", DatabaseState::Skipped),
        ];
        assert_eq!(migrated(&record), ["db-1/orders"]);
        reopen_for_rollback(&mut record, "ada", (Way::Restore, "test".into())).expect("reopens");
        let restore =
            record.steps.iter().find(|s| s.recovery && s.kind == StepKind::Restore).expect("a restore");
        assert_eq!(restore.hosts, ["db-1/orders"]);
    }
}
