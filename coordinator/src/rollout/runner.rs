//! The rollout runner: runs a rollout's steps as a saved state machine.
//!
//! Each transition is written to etcd before it is acted on, so a new
//! leader can pick a rollout up where the old one stopped: a step saved as
//! running is dispatched again with the same command ids, and the agents'
//! journals make that a re-attach, not a second execution.
//!
//! When a step fails, the remaining steps are skipped and recovery steps
//! chosen by what the failure changed are appended (see [`super::recovery`]):
//! lift maintenance mode, or restore this rollout's backup first.
//!
//! Steps are decided by facts, not timers: an agent that goes away does
//! not fail its step. The command stays pending in the dispatcher, which
//! re-sends it with the same id when the agent registers again, and the
//! agent's journal answers with the real result (or `interrupted` if the
//! agent restarted). Only when the step deadline (`step_deadline`) has
//! passed with an agent still away is the outcome unknown; the rollout then
//! holds (see [`super::recovery::Failure::OutcomeUnknown`]). A connected
//! agent that still works is waited for past the deadline: it is a fact
//! that the command runs.
//!
//! In environments that require approvals, the plan has an `approval` step
//! after preflight: the rollout waits there in `awaiting_approval`, saved,
//! until enough operators approved, one rejected, or the wait expired (see
//! `gate`). No host is touched before it ends.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use runway_proto::v1::{self, CommandOutcome, RolloutState as WireState};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::outcome::StepResult;
use super::recovery::{self, Recovery};
use super::restart::Batching;
use super::target;
use super::{command, databases, restart, trace};
use crate::config::Config;
use crate::dispatch::Dispatcher;
use crate::failpoint;
use crate::fencing::Term;
use crate::leadership::{Election, Leadership};
use crate::metrics;
use crate::model::{RolloutRecord, RolloutState, StepKind, StepRecord, StepState};
use crate::registry::{AgentKey, Registry};
use crate::repo::events::{EventBus, EventWriter, NewEvent};
use crate::repo::{RolloutStore, audit, feed, retention};
use crate::store::StoreError;

/// How long a finished rollout waits for its DB host to release the backup.
const RELEASE_WAIT: Duration = Duration::from_secs(30);

/// How long a run that stopped on an etcd error waits before it resumes.
const RESUME_AFTER: Duration = Duration::from_secs(5);

/// Why a run stopped before the rollout ended. The rollout stays
/// unfinished in etcd and is resumed shortly (an etcd error) or by the
/// next leader.
#[derive(Debug, thiserror::Error)]
enum Abandon {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("leadership ended")]
    TermEnded,
}

struct RunControl {
    cancel_requested: AtomicBool,
    /// Wakes a run that waits at the approval gate: a decision or a
    /// cancel request was saved. (Also a run in its `monitor` phase, when
    /// it was superseded.)
    wake: tokio::sync::Notify,
    /// The rollout's environment.
    environment: String,
    /// A newer rollout of the environment exists: a `monitor` phase ends.
    superseded: AtomicBool,
}

/// Runs rollouts while this coordinator leads. Cheap to clone.
#[derive(Clone)]
pub struct Runner {
    config: Arc<Config>,
    store: RolloutStore,
    bus: EventBus,
    dispatcher: Dispatcher,
    registry: Registry,
    running: Arc<Mutex<HashMap<String, Arc<RunControl>>>>,
    tracker: TaskTracker,
}

impl Runner {
    /// A runner that saves to `store`, publishes on `bus` and reaches
    /// agents through `dispatcher` and `registry`. Its runs are tasks on
    /// `tracker`.
    pub fn new(
        config: Arc<Config>,
        store: RolloutStore,
        bus: EventBus,
        dispatcher: Dispatcher,
        registry: Registry,
        tracker: TaskTracker,
    ) -> Self {
        Self { config, store, bus, dispatcher, registry, running: Arc::default(), tracker }
    }

    /// Starts the runner each time this coordinator becomes leader; drops
    /// agent sessions when it stops being leader. Returns at `shutdown` or
    /// when the election goes away.
    pub async fn follow_leadership(self, election: Arc<dyn Election>, shutdown: CancellationToken) {
        let mut changes = election.subscribe();
        let mut leading = false;
        loop {
            let state = changes.borrow_and_update().clone();
            metrics::get().leadership(matches!(state, Leadership::Leader(_)), state.token().map(|t| t.0));
            match state {
                Leadership::Leader(term) if !leading => {
                    leading = true;
                    self.lead(term);
                }
                Leadership::Follower { .. } if leading => {
                    leading = false;
                    self.registry.clear();
                }
                _ => {}
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                changed = changes.changed() => if changed.is_err() { return },
            }
        }
    }

    /// Starts every unfinished rollout it learns of from the rollout feed
    /// (see [`feed`]: a listing now, then an etcd watch) and prunes
    /// finished ones (see [`retention`]) every `[retention] every`,
    /// until the term ends.
    pub fn lead(&self, term: Term) {
        let runner = self.clone();
        let watching = term.clone();
        self.tracker.spawn(async move {
            feed::follow(&runner.store.clone(), &watching, |records, _| {
                let (runner, term) = (runner.clone(), watching.clone());
                async move { runner.resume_unfinished(&term, records).await }
            })
            .await
        });
        let runner = self.clone();
        self.tracker.spawn(async move {
            let every = runner.config.retention.every;
            let mut pruner = retention::Pruner::default();
            loop {
                match pruner.prune(&runner.store, &term, &runner.config).await {
                    Ok(pruned) if pruned.rollouts + pruned.bundles + pruned.audit_entries > 0 => {
                        tracing::info!(
                            rollouts = pruned.rollouts,
                            bundles = pruned.bundles,
                            audit_entries = pruned.audit_entries,
                            compacted_to = pruned.compacted_to,
                            "retention pruned"
                        )
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "retention could not prune; it tries again later"),
                }
                tokio::select! {
                    _ = term.cancel.cancelled() => return,
                    _ = tokio::time::sleep(every) => {}
                }
            }
        });
    }

    /// Starts each of `records` that is unfinished and not running here.
    /// The record is read again first: a watch event may be older than a
    /// run that just ended, and a stale record must never be run.
    async fn resume_unfinished(&self, term: &Term, records: Vec<RolloutRecord>) {
        for record in records.iter().filter(|r| !r.state.is_terminal()) {
            self.supersede(record);
        }
        for record in records {
            if (record.state.is_terminal() && !record.analysis.monitoring()) || self.is_running(&record.id) {
                continue;
            }
            if let Err(e) = self.resume(term, &record.id).await {
                tracing::warn!(rollout = %record.id, error = %e, "cannot resume the rollout now; the feed offers it again");
            }
        }
    }

    /// Starts rollout `id` as saved now, if it is unfinished.
    async fn resume(&self, term: &Term, id: &str) -> Result<(), StoreError> {
        let Some(record) = self.store.get_rollout(id).await? else { return Ok(()) };
        if (record.state.is_terminal() && !record.analysis.monitoring()) || self.is_running(id) {
            return Ok(());
        }
        let bundle = match self.store.get_bundle(&record.bundle_digest).await {
            Ok(Some(bundle)) => bundle,
            Ok(None) => {
                tracing::error!(rollout = %record.id, digest = %record.bundle_digest, "bundle of unfinished rollout is missing");
                return Ok(());
            }
            // A damaged bundle holds up only its own rollout.
            Err(e @ StoreError::Corrupt { .. }) => {
                tracing::error!(rollout = %record.id, error = %e, "bundle of unfinished rollout is damaged; a person must look");
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        tracing::info!(rollout = %record.id, "resuming unfinished rollout");
        self.start(term.clone(), record, bundle);
        Ok(())
    }

    fn is_running(&self, id: &str) -> bool {
        self.running.lock().expect("runner lock").contains_key(id)
    }

    /// Ends the `monitor` phase of rollout `id` if this coordinator runs
    /// one, and waits (up to `RELEASE_WAIT`) until that run has stopped: an
    /// operator's rollback reopens the record only once nothing else
    /// writes it.
    pub async fn end_monitor(&self, id: &str) {
        let control = self.running.lock().expect("runner lock").get(id).cloned();
        let Some(control) = control else { return };
        control.superseded.store(true, Ordering::SeqCst);
        control.wake.notify_one();
        let gone = async {
            while self.is_running(id) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        if tokio::time::timeout(RELEASE_WAIT, gone).await.is_err() {
            tracing::warn!(rollout = %id, "the run did not stop in time for the rollback");
        }
    }

    /// Tells the runs of other rollouts of `newer`'s environment that it
    /// exists: one in its `monitor` phase ends it (superseded).
    fn supersede(&self, newer: &RolloutRecord) {
        for (id, control) in self.running.lock().expect("runner lock").iter() {
            if *id != newer.id && control.environment == newer.environment {
                control.superseded.store(true, Ordering::SeqCst);
                control.wake.notify_one();
            }
        }
    }

    /// Runs `record` in the background unless it runs already.
    pub fn start(&self, term: Term, record: RolloutRecord, bundle: v1::Bundle) {
        let control = Arc::new(RunControl {
            cancel_requested: AtomicBool::new(record.cancel_requested),
            wake: tokio::sync::Notify::new(),
            environment: record.environment.clone(),
            superseded: AtomicBool::new(false),
        });
        {
            let mut running = self.running.lock().expect("runner lock");
            if running.contains_key(&record.id) {
                return;
            }
            running.insert(record.id.clone(), Arc::clone(&control));
        }
        let runner = self.clone();
        // Every line logged while the rollout runs carries its ids.
        let span = trace::run_span(&record, &self.config.name);
        let run = async move {
            let id = record.id.clone();
            let stopped = runner.run(term.clone(), record, bundle, control).await;
            runner.running.lock().expect("runner lock").remove(&id);
            metrics::get().rollout_stopped(&id);
            match stopped {
                Ok(()) | Err(Abandon::TermEnded) => {}
                Err(e) => {
                    // Nothing may write the record again, so the feed may not
                    // offer it soon: resume it from here.
                    tracing::warn!(rollout = %id, error = %e, "rollout run stopped; it resumes shortly");
                    tokio::select! {
                        _ = term.cancel.cancelled() => return,
                        _ = tokio::time::sleep(RESUME_AFTER) => {}
                    }
                    if let Err(e) = runner.resume(&term, &id).await {
                        tracing::warn!(rollout = %id, error = %e, "cannot resume the rollout now; the feed's safety listing will");
                    }
                }
            }
        };
        self.tracker.spawn(run.instrument(span));
    }

    /// Asks a running rollout to stop after its current step. False when
    /// this coordinator does not run it.
    pub fn request_cancel(&self, id: &str) -> bool {
        match self.running.lock().expect("runner lock").get(id) {
            Some(control) => {
                control.cancel_requested.store(true, Ordering::SeqCst);
                control.wake.notify_one();
                true
            }
            None => false,
        }
    }

    /// Tells a rollout waiting at its approval gate that a decision was
    /// saved. False when this coordinator does not run it (a run that starts
    /// later reads the saved decisions first).
    pub fn wake(&self, id: &str) -> bool {
        match self.running.lock().expect("runner lock").get(id) {
            Some(control) => {
                control.wake.notify_one();
                true
            }
            None => false,
        }
    }

    /// Records how step `index` ended in `record` (saved with its event by
    /// the caller): its state; what later steps need from it (the plan from
    /// preflight, the backup's name); and, on the first failure, the
    /// recovery chosen by what the failure changed.
    fn settle(&self, record: &mut RolloutRecord, index: usize, result: &StepResult) {
        let kind = record.steps[index].kind;
        databases::observe(record, kind, record.steps[index].recovery, result);
        // Kept also when preflight refused: `rollout show` lists why (the
        // Danger findings, what the data says).
        if let Some(plan) = result.plan().filter(|_| kind == StepKind::Preflight) {
            record.plan = Some(plan);
        }
        if result.succeeded() {
            self.settle_success(record, index, result);
            return;
        }
        let error = result.error();
        let step = &mut record.steps[index];
        step.state = StepState::Failed;
        step.error = error.clone();
        if record.error.is_empty() && kind == StepKind::VerifyBackup {
            // Nothing to undo: the migration ran and maintenance is off. Loud.
            record.error = format!(
                "verify_backup failed: BACKUP {} IS NOT PROVEN RESTORABLE: the test restore after the \
                 maintenance window failed ({error}); the migration ran and the app is up, but this \
                 backup cannot be trusted for a rollback: take and verify a new backup now \
                 (`runway backup verify NAME --env {} --test-restore`)",
                record.backup, record.environment
            );
        } else if record.error.is_empty() {
            self.settle_first_failure(record, index, result, &error);
        } else {
            self.settle_failed_recovery(record, index, result, &error);
        }
    }

    /// A step that succeeded (a restart or migrate maybe with tolerated
    /// failures): what later steps need from it.
    fn settle_success(&self, record: &mut RolloutRecord, index: usize, result: &StepResult) {
        let kind = record.steps[index].kind;
        record.steps[index].state = StepState::Succeeded;
        match kind {
            StepKind::Restart if result.tolerated > 0 => {
                let failed = result.failed_hosts();
                record.steps[index].error = format!("tolerated: {}", result.error());
                restart::drop_failed(record, &failed);
            }
            // Within `databases.max_failures`: the rollout goes on, and each
            // failed database that changed is restored right away.
            StepKind::Migrate if result.tolerated > 0 => {
                record.steps[index].error = format!("tolerated: {}", result.error());
                let (restore, _) = databases::to_restore(result, false);
                if !restore.is_empty() {
                    record.steps.insert(index + 1, recovery::recovery_step(StepKind::Restore, restore));
                }
            }
            StepKind::Preflight => {
                let policy = self.config.environments.policy(&record.environment);
                if let Some(why) = recovery::refused_by_rollback_policy(record, &policy) {
                    let step = &mut record.steps[index];
                    step.state = StepState::Failed;
                    step.error = why.clone();
                    record.error = format!("preflight refused: {why}");
                    record.refused = true;
                }
            }
            StepKind::Backup => {
                if let Some(id) = result.detail("manifest").and_then(|m| m.get("id")).and_then(|i| i.as_str())
                {
                    record.backup = id.to_owned();
                }
                // Proven after the window: the rollout ends only once it is.
                if result.detail("proof").and_then(|p| p.as_str()) == Some("background") {
                    let hosts = record.steps[index].hosts.clone();
                    record.steps.push(StepRecord {
                        kind: StepKind::VerifyBackup,
                        hosts,
                        state: StepState::Pending,
                        attempt: 0,
                        error: String::new(),
                        recovery: false,
                    });
                }
            }
            _ => {}
        }
    }

    /// The rollout's first failure: its error, and the way back chosen by
    /// what the failure changed.
    fn settle_first_failure(
        &self,
        record: &mut RolloutRecord,
        index: usize,
        result: &StepResult,
        error: &str,
    ) {
        let kind = record.steps[index].kind;
        record.error = format!("{} failed: {error}", kind.name());
        record.refused = kind == StepKind::Preflight && result.refused();
        let policy = self.config.environments.policy(&record.environment);
        let mut failure = result.failure(kind);
        // Several databases: restore the failed ones that changed, and
        // the migrated ones too when the set must stay uniform.
        let mut restore = Vec::new();
        if kind == StepKind::Migrate && failure != recovery::Failure::OutcomeUnknown {
            let stay = databases::may_stay_migrated(policy.databases.uniform, record.plan.as_ref());
            let (to_restore, left_migrated) = databases::to_restore(result, !stay);
            if !policy.databases.uniform && !stay {
                record.error.push_str(
                    "; the databases already migrated are restored too although databases.uniform = false: \
                     the plan is not backward compatible, and the app hosts keep their old version",
                );
            }
            if !left_migrated.is_empty() {
                record.error.push_str(&format!(
                    "; databases already migrated stay migrated (databases.uniform = false): {}",
                    left_migrated.join(", ")
                ));
            }
            failure = recovery::Failure::Reported { database_changed: !to_restore.is_empty() };
            restore = to_restore;
        }
        let way_back = recovery::choose(record, kind, failure, &policy);
        if way_back == Recovery::Hold {
            let hosts = record.steps[index].hosts.clone();
            let note = recovery::hold_note(record, kind, &hosts, failure);
            record.error.push_str(&note);
        }
        // The hosts the failed step changed: a restart's batches stop
        // after a failure; a smoke or watch failure rolls back every
        // host the restart step changed.
        let reached = match kind {
            StepKind::Smoke | StepKind::Watch => restart::changed_hosts(record),
            StepKind::Migrate => restore,
            _ => result.reached(),
        };
        recovery::plan(record, way_back, &reached);
    }

    /// A step of the way back failed (the rollout had failed already): what a
    /// person must do now, or the fallback (a restore after failed downs).
    fn settle_failed_recovery(
        &self,
        record: &mut RolloutRecord,
        index: usize,
        result: &StepResult,
        error: &str,
    ) {
        let kind = record.steps[index].kind;
        if kind == StepKind::MigrateDown && result.failure(kind) == recovery::Failure::OutcomeUnknown {
            // A down may still be running: no restore over it.
            record.error.push_str(&format!(
                "; THE OUTCOME OF ROLLING BACK BY MIGRATION IS UNKNOWN ({error}): runway does not guess: \
                 maintenance mode stays on; check `runway migrate status` on the DB host, then finish the downs \
                 or restore backup {} by hand",
                record.backup
            ));
        } else if kind == StepKind::MigrateDown {
            let policy = self.config.environments.policy(&record.environment);
            match recovery::fall_back_to_restore(record, result.failed_hosts(), &policy) {
                Some(restore) => {
                    record.error.push_str(&format!(
                        "; rolling back by migration failed ({error}): restoring this rollout's backup instead, \
                         still in maintenance mode (on_down_failure = \"restore\")"
                    ));
                    record.steps.insert(index + 1, restore);
                }
                None => record.error.push_str(&format!(
                    "; ROLLING BACK BY MIGRATION FAILED ({error}): on_down_failure = \"hold\" keeps maintenance \
                     mode on; restore backup {} or finish the downs by hand",
                    record.backup
                )),
            }
        } else if kind == StepKind::Restore {
            record.error.push_str(&format!(
                "; RESTORING BACKUP {} FAILED ({error}): maintenance mode stays on and the database needs a person",
                record.backup
            ));
        } else if kind == StepKind::Restart {
            record.error.push_str(&format!(
                "; BRINGING BACK THE PREVIOUS APP VERSION FAILED ({error}): maintenance mode stays on and the app \
                 hosts need a person"
            ));
        }
    }

    async fn run(
        &self,
        term: Term,
        mut record: RolloutRecord,
        bundle: v1::Bundle,
        control: Arc<RunControl>,
    ) -> Result<(), Abandon> {
        let events = Arc::new(
            EventWriter::resume(&record.id, term.clone(), self.store.clone(), self.bus.clone()).await?,
        );
        let environment = record.environment.clone();
        let run = Run {
            runner: self,
            environment: &environment,
            term: &term,
            events: &events,
            bundle: &bundle,
            commands: trace::CommandSpans::default(),
        };
        metrics::get().rollout_resumed(&record);
        if self.store.cancel_requested(&record.id).await? {
            control.cancel_requested.store(true, Ordering::SeqCst);
        }
        if record.coordinator != self.config.name {
            // `rollout show` names who runs it now, not a dead leader.
            record.coordinator = self.config.name.clone();
            run.save(&mut record).await?;
        }
        loop {
            if !record.state.is_terminal() {
                self.run_steps(&run, &mut record, &control).await?;
            }
            // Released (the rollout ended, for the DB agents) once its
            // monitor is over too: until then its own signature covers the
            // way back a failed analysis takes (see `agent/src/exec/signed.rs`).
            if !record.analysis.monitoring() {
                self.release_backup(&term, &record).await;
                return Ok(());
            }
            if !run.monitor(&mut record, &control).await? {
                self.release_backup(&term, &record).await;
                return Ok(());
            }
        }
    }

    /// Runs `record`'s steps from where it stands to its end, and ends it.
    async fn run_steps(
        &self,
        run: &Run<'_>,
        record: &mut RolloutRecord,
        control: &RunControl,
    ) -> Result<(), Abandon> {
        if record.state == RolloutState::Pending {
            record.state = RolloutState::Running;
            let message = format!(
                "rollout {} of bundle {} to {} started by {} (trace {})",
                record.id,
                short(&record.bundle_digest),
                record.environment,
                self.config.name,
                record.trace.trace_id(),
            );
            run.transition(record, NewEvent { kind: "rollout_started", message, ..NewEvent::default() })
                .await?;
        }

        while let Some(index) =
            record.steps.iter().position(|s| matches!(s.state, StepState::Pending | StepState::Running))
        {
            let failing = !record.error.is_empty();
            if !failing && control.cancel_requested.load(Ordering::SeqCst) && !record.cancel_requested {
                let policy = self.config.environments.policy(&record.environment);
                let (way_back, why) = recovery::on_cancel(record, &policy);
                record.cancel_requested = true;
                record.state = RolloutState::Running;
                record.error = format!("cancelled by an operator{why}");
                let restarted = recovery::restarted_hosts(record);
                recovery::plan(record, way_back, &restarted);
                let event = NewEvent {
                    kind: "cancel_honoured",
                    message: record.error.clone(),
                    ..NewEvent::default()
                };
                run.transition(record, event).await?;
                continue;
            }
            if recovery::skips(record, &record.steps[index]) {
                record.steps[index].state = StepState::Skipped;
                run.save(record).await?;
                continue;
            }
            if record.steps[index].kind == StepKind::Approval {
                run.gate(record, index, control).await?;
                continue;
            }
            let step = &record.steps[index];
            if step.kind == StepKind::MaintenanceOn
                && !step.recovery
                && step.state == StepState::Pending
                && !run.maintenance_policy(record, index).await?
            {
                continue;
            }
            let started = Instant::now();
            let resumed = record.steps[index].state == StepState::Running;
            run.commands.clear();
            let span = trace::step_span(record, index);
            let result = run.step(record, index).instrument(span).await?;
            self.settle(record, index, &result);
            metrics::get().step_ended(record, index, started.elapsed());
            // Sent before the end is saved: no leader ends the step again.
            trace::end_step(record, index, &run.commands, resumed).await;
            let step = &record.steps[index];
            let (kind, message) = match step.state {
                StepState::Succeeded => ("step_succeeded", format!("{} succeeded", step.kind.name())),
                _ => ("step_failed", format!("{} failed: {}", step.kind.name(), step.error)),
            };
            let event = NewEvent { kind, step: step.kind.name().into(), message, ..NewEvent::default() };
            run.transition(record, event).await?;
        }

        self.finish_rollout(run, record).await
    }

    /// Ends `record` once no step is left: its terminal state, saved with
    /// the event and audit entry that report it.
    async fn finish_rollout(&self, run: &Run<'_>, record: &mut RolloutRecord) -> Result<(), Abandon> {
        databases::finish(record);
        record.state = recovery::terminal_state(record);
        monitor::begin(record, &self.config.environments.policy(&record.environment));
        let (kind, terminal, message) = match record.state {
            RolloutState::Succeeded => match &record.analysis.monitor {
                Some(m) if record.analysis.monitoring() => (
                    "rollout_succeeded",
                    WireState::Succeeded,
                    format!(
                        "rollout succeeded; monitoring its analysis for {} s",
                        (m.until_unix_ms - m.started_unix_ms) / 1000
                    ),
                ),
                _ => ("rollout_succeeded", WireState::Succeeded, "rollout succeeded".to_owned()),
            },
            RolloutState::Cancelled => {
                ("rollout_cancelled", WireState::Cancelled, format!("rollout cancelled: {}", record.error))
            }
            RolloutState::RolledBack => (
                "rollout_rolled_back",
                WireState::RolledBack,
                format!("rollout rolled back: {}; {}", record.error, recovery::rolled_back_summary(record)),
            ),
            _ => ("rollout_failed", WireState::Failed, format!("rollout failed: {}", record.error)),
        };
        // A rollback that was not approved: the rollout ends as it had.
        let message = match record.approval.as_ref() {
            Some(gate) if gate.stopped() && gate.before.is_some() => format!("{message}: {}", record.error),
            _ => message,
        };
        record.updated_unix_ms = runway_proto::unix_ms_now();
        // Sent before the end is saved: no leader ends the rollout again.
        trace::end_rollout(record).await;
        let (entry, outcome) = audit::rollout_ended(record, &self.config.name);
        let audit = self.store.audit().put(&entry, outcome, &record.error);
        run.events
            .emit_audited(
                NewEvent { kind, message, terminal: Some(terminal), ..NewEvent::default() },
                record,
                audit,
            )
            .await?;
        tracing::info!(rollout = %record.id, state = ?record.state, "rollout finished");
        metrics::get().rollout_ended(record);
        Ok(())
    }

    /// Tells the DB host that the rollout ended, so retention may prune its
    /// backup once the environment's rollback window has passed. Best
    /// effort: the rollout has ended either way, and a pin nobody releases
    /// only keeps one backup longer than `keep`.
    async fn release_backup(&self, term: &Term, record: &RolloutRecord) {
        let backup_started = record.steps.iter().any(|s| {
            s.kind == StepKind::Backup && !matches!(s.state, StepState::Pending | StepState::Skipped)
        });
        if !backup_started {
            return;
        }
        let releases =
            target::hosts_of(&record.db_targets()).into_iter().map(|db| self.release_on(term, record, db));
        futures::future::join_all(releases).await;
    }

    /// Releases `record`'s backups on DB agent `db` (see [`Self::release_backup`]).
    async fn release_on(&self, term: &Term, record: &RolloutRecord, db: String) {
        let db = db.as_str();
        let window = self.config.environments.policy(&record.environment).rollback_window.as_secs();
        let release = command::release_backup(record, db, window, term.token, &self.config.name);
        let mut in_flight = self.dispatcher.dispatch(&AgentKey::new(&record.environment, db), release).await;
        match tokio::time::timeout(RELEASE_WAIT, &mut in_flight.result).await {
            Ok(Ok(result)) if result.outcome == CommandOutcome::Succeeded as i32 => {
                tracing::info!(rollout = %record.id, host = %db, window_secs = window, "backup released");
            }
            Ok(Ok(result)) => {
                tracing::warn!(rollout = %record.id, host = %db, error = %result.error, "backup not released")
            }
            _ => {
                tracing::warn!(rollout = %record.id, host = %db, "no answer to the backup release; it stays pinned")
            }
        }
    }
}

/// One run of one rollout on one leadership term.
struct Run<'a> {
    runner: &'a Runner,
    /// The rollout's environment.
    environment: &'a str,
    term: &'a Term,
    events: &'a Arc<EventWriter>,
    bundle: &'a v1::Bundle,
    /// The current step's commands, for their spans.
    commands: trace::CommandSpans,
}

impl Run<'_> {
    async fn save(&self, record: &mut RolloutRecord) -> Result<(), StoreError> {
        record.updated_unix_ms = runway_proto::unix_ms_now();
        self.runner.store.put_rollout(self.term, record).await?;
        metrics::get().rollout_saved(record);
        Ok(())
    }

    /// Saves `record` together with the event that reports the change.
    async fn transition(&self, record: &mut RolloutRecord, event: NewEvent) -> Result<(), StoreError> {
        record.updated_unix_ms = runway_proto::unix_ms_now();
        self.events.emit_with(event, record).await?;
        metrics::get().rollout_saved(record);
        Ok(())
    }

    /// Saves step `index` as running (a new attempt, with its event and
    /// span), or re-attaches to it when a previous leader had.
    async fn begin_step(&self, record: &mut RolloutRecord, index: usize) -> Result<(), StoreError> {
        let step = &mut record.steps[index];
        if step.state == StepState::Pending {
            step.state = StepState::Running;
            step.attempt += 1;
            let event = NewEvent {
                kind: "step_started",
                step: step.kind.name().into(),
                message: format!(
                    "{}{} on {}",
                    step.kind.name(),
                    if step.recovery { " (recovery)" } else { "" },
                    host_list(&step.hosts)
                ),
                ..NewEvent::default()
            };
            // Its span is saved with it, before anything is dispatched.
            trace::start_step(record, index);
            self.transition(record, event).await?;
            if let Some(pause) = failpoint::pause_before_dispatch() {
                // Deliberately blind to the term: this stands for a leader
                // that stalls between saving a step and dispatching it.
                tracing::warn!(ms = pause.as_millis() as u64, "failpoint: pausing before dispatch");
                tokio::time::sleep(pause).await;
            }
        } else {
            tracing::info!(rollout = %record.id, step = step.kind.name(), "re-attaching to a step that was running");
            // Started by a leader that saved no span for it.
            if trace::start_step(record, index) {
                self.save(record).await?;
            }
        }
        Ok(())
    }

    /// Runs step `index`: saved as running first, then its commands.
    async fn step(&self, record: &mut RolloutRecord, index: usize) -> Result<StepResult, Abandon> {
        self.begin_step(record, index).await?;
        let step = record.steps[index].clone();
        // Counted from this dispatch: a new leader that resumes the step
        // counts afresh, so it waits longer, never less. `None`: too far
        // away to represent, so never.
        let deadline = Instant::now().checked_add(self.runner.config.step_deadline);
        let policy = self.runner.config.environments.policy(&record.environment);
        let make = |host: &str| {
            let config = &self.runner.config;
            let mut command =
                command::for_host(record, &step, host, self.bundle, self.term.token, &config.name);
            if let Some(action) = command.action.as_mut() {
                restart::complete(action, &policy, step.recovery);
            }
            command
        };
        if step.kind == StepKind::Restart && !step.recovery {
            let batching = Batching::of_restart(&policy.restart);
            let mut analysis = analysis::Analysis::for_canary(&self.runner.config, record, &step, &batching);
            let result = self.in_batches(&step, &batching, make, deadline, analysis.as_mut()).await;
            if let Some(analysis) = analysis {
                record.analysis = analysis.into_counts();
            }
            return result;
        }
        // Several databases: backups `parallel` at a time; migrations canary first, then batches.
        if !step.recovery && step.hosts.len() > 1 {
            match step.kind {
                StepKind::Backup => {
                    let batching = databases::backup_batching(&policy.databases);
                    return self.in_batches(&step, &batching, make, deadline, None).await;
                }
                StepKind::Migrate => {
                    let batching = databases::migrate_batching(&policy.databases);
                    return self.in_batches(&step, &batching, make, deadline, None).await;
                }
                _ => {}
            }
        }
        if step.kind == StepKind::Watch {
            let changed = restart::changed_hosts(record);
            let mut analysis = analysis::Analysis::new(
                &self.runner.config,
                record,
                analysis::Phase::Watch,
                step.kind.name(),
                step.hosts.clone(),
                changed
                    .iter()
                    .filter(|h| step.hosts.contains(h))
                    .take(policy.restart.canary as usize)
                    .cloned()
                    .collect(),
                Vec::new(),
            );
            let result = self.until_first_failure(&step, make, deadline, analysis.as_mut()).await;
            if let Some(analysis) = analysis {
                record.analysis = analysis.into_counts();
            }
            return result;
        }
        if !step.kind.one_host_at_a_time() {
            let ends = self.start_commands(&step, &step.hosts, make, deadline).all().await?;
            return Ok(StepResult { ends, tolerated: 0 });
        }
        let mut ends = Vec::with_capacity(step.hosts.len());
        for host in &step.hosts {
            let end = self.command_on(&step, host, make(host), deadline).await?;
            let failed = end.error.is_some();
            ends.push(end);
            if failed {
                break;
            }
        }
        Ok(StepResult { ends, tolerated: 0 })
    }
}

/// Hosts named in an event, for people: ten at most (a step on ten
/// thousand hosts would otherwise save a 150 KB line, and print it).
fn host_list(hosts: &[String]) -> String {
    const SHOWN: usize = 10;
    let named = hosts[..hosts.len().min(SHOWN)].join(", ");
    match hosts.len().saturating_sub(SHOWN) {
        0 => named,
        more => format!("{named} and {more} more ({} hosts)", hosts.len()),
    }
}

fn short(digest: &str) -> &str {
    &digest[..digest.len().min(12)]
}

mod analysis;
mod batches;
mod follow;
mod gate;
mod maintenance;
mod monitor;

#[cfg(test)]
mod tests;
