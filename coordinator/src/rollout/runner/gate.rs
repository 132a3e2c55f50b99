//! The approval gate as the runner runs it: after preflight the rollout
//! waits in `awaiting_approval`, saved, until enough operators approved
//! (it runs on), one rejected or the wait expired (it ends `cancelled`,
//! nothing changed), or an operator cancelled it.
//!
//! Decisions are saved by the operator API under keys of their own (see
//! [`RolloutStore::save_decision`](crate::repo::RolloutStore::save_decision))
//! and the run is woken; the run reads them back, copies what is new into
//! the record and saves it with an event. A leader that takes over reads
//! them the same way and waits only what is left until the saved expiry,
//! so a failover neither restarts nor forgets the wait.
//!
//! The expiry is saved as wall-clock time (it must survive a failover);
//! the wait itself is a Tokio timer, so tests drive it on paused time.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;

use super::{Abandon, Run, RunControl};
use crate::config::format_duration;
use crate::model::{ApprovalGate, GateOutcome, RolloutRecord, RolloutState, StepState};
use crate::repo::events::NewEvent;
use crate::rollout::approval::{self, Change};
use crate::rollout::recovery::{self, Recovery};

/// The name of the gate's step in events.
const STEP: &str = "approval";

impl Run<'_> {
    /// Runs approval step `index` of `record` until the gate opens (the step
    /// succeeds) or stops the rollout (the step fails, the rollout is set to
    /// end `cancelled`). Returns with the step still running when a cancel
    /// request comes first: the runner's loop honours it.
    pub(super) async fn gate(
        &self,
        record: &mut RolloutRecord,
        index: usize,
        control: &RunControl,
    ) -> Result<(), Abandon> {
        if record.steps[index].state == StepState::Pending && !self.open_gate(record, index).await? {
            return Ok(());
        }
        let expires = record.approval.as_ref().map_or(0, |g| g.expires_unix_ms);
        let left = Duration::from_millis(u64::try_from(expires - runway_proto::unix_ms_now()).unwrap_or(0));
        // `None`: too far away to represent, so never.
        let deadline = Instant::now().checked_add(left);
        let asker = record.approval.as_ref().map(|g| g.asker(record).to_owned()).unwrap_or_default();
        let mut expired = false;
        loop {
            let decisions = self.runner.store.decisions(&record.id).await?;
            let gate = record.approval.as_mut().expect("saved when the approval step started");
            let changes = approval::merge(gate, &decisions, &asker);
            let (needed, given) = (gate.needed, gate.approvals.clone());
            for change in changes {
                let (kind, message) = match change {
                    Change::Approved(d) => {
                        let nth = given.iter().position(|a| a.operator == d.operator).map_or(0, |i| i + 1);
                        let comment =
                            if d.comment.is_empty() { String::new() } else { format!(": {}", d.comment) };
                        ("approved", format!("approved by {} ({nth} of {needed}){comment}", d.operator))
                    }
                    Change::Rejected(d) => ("rejected", format!("rejected by {}: {}", d.operator, d.comment)),
                };
                self.transition(record, NewEvent { kind, step: STEP.into(), message, ..NewEvent::default() })
                    .await?;
            }
            let gate = record.approval.as_ref().expect("saved when the approval step started");
            if let Some(rejection) = &gate.rejection {
                let why = format!("rejected by {}: {}", rejection.operator, rejection.comment);
                return self.stop(record, index, GateOutcome::Rejected, why).await;
            }
            if gate.approvals.len() >= needed as usize {
                let message =
                    format!("approval succeeded: approved by {} ({needed} needed)", gate.approvers());
                let step = &mut record.steps[index];
                step.state = StepState::Succeeded;
                record.state = RolloutState::Running;
                record.approval.as_mut().expect("just read").outcome = GateOutcome::Approved;
                let event =
                    NewEvent { kind: "step_succeeded", step: STEP.into(), message, ..NewEvent::default() };
                return Ok(self.transition(record, event).await?);
            }
            if expired {
                let timeout = format_duration(
                    self.runner.config.environments.policy(&record.environment).approval_timeout,
                );
                let had = if gate.approvals.is_empty() {
                    "none".to_owned()
                } else {
                    format!("{} ({})", gate.approvals.len(), gate.approvers())
                };
                let why = format!(
                    "approval expired: {needed} approval(s) needed within approval_timeout = {timeout:?}, got {had}"
                );
                return self.stop(record, index, GateOutcome::Expired, why).await;
            }
            if control.cancel_requested.load(Ordering::SeqCst) {
                return Ok(());
            }
            let timer = async {
                match deadline {
                    Some(deadline) => tokio::time::sleep_until(deadline).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = self.term.cancel.cancelled() => return Err(Abandon::TermEnded),
                _ = control.wake.notified() => {}
                _ = timer => expired = true,
            }
        }
    }

    /// Starts approval step `index`: decides how many approvals `record`
    /// needs and saves it waiting for them (or, when its plan needs none,
    /// the step succeeded). True when the rollout now waits.
    async fn open_gate(&self, record: &mut RolloutRecord, index: usize) -> Result<bool, Abandon> {
        let config = &self.runner.config;
        let policy = config.environments.policy(&record.environment);
        // A recovery approval step is an operator's rollback's gate: the
        // API saved its round, asker and the state to go back to.
        let rollback = record.steps[index].recovery;
        let (needed, rule) = approval::needed(&policy, record, rollback);
        let (round, asked_by, before) = match record.approval.as_ref() {
            Some(gate) if rollback => (gate.round, gate.asked_by.clone(), gate.before),
            _ => (0, String::new(), None),
        };
        let now = runway_proto::unix_ms_now();
        let timeout_ms = i64::try_from(policy.approval_timeout.as_millis()).unwrap_or(i64::MAX);
        let mut gate = ApprovalGate {
            needed,
            rule,
            requested_unix_ms: now,
            expires_unix_ms: now.saturating_add(timeout_ms),
            round,
            asked_by,
            before,
            ..ApprovalGate::default()
        };
        let step = &mut record.steps[index];
        step.attempt += 1;
        if needed == 0 {
            step.state = StepState::Succeeded;
            gate.outcome = GateOutcome::NotNeeded;
            record.approval = Some(gate);
            let message = "approval not needed: an ordinary plan, and approvals.default = 0".to_owned();
            let event =
                NewEvent { kind: "step_succeeded", step: STEP.into(), message, ..NewEvent::default() };
            self.transition(record, event).await?;
            return Ok(false);
        }
        step.state = StepState::Running;
        record.state = RolloutState::AwaitingApproval;
        let message = format!(
            "awaiting {needed} approval(s) ({}{}) by {}, within {}: `runway rollout approve {}` \
             (or `runway rollout reject {} --reason …`)",
            gate.rule,
            if rollback { " before the rollback touches anything" } else { "" },
            approval::who_may_approve(&policy, gate.asker(record), config.tls.insecure),
            format_duration(policy.approval_timeout),
            record.id,
            record.id,
        );
        record.approval = Some(gate);
        let event = NewEvent { kind: "step_started", step: STEP.into(), message, ..NewEvent::default() };
        self.transition(record, event).await?;
        Ok(true)
    }

    /// Ends the wait without approval: the step fails with `why`, nothing
    /// more runs, and the rollout ends `cancelled` (see
    /// [`recovery::terminal_state`]). Maintenance mode was never turned on:
    /// the gate comes before it.
    async fn stop(
        &self,
        record: &mut RolloutRecord,
        index: usize,
        outcome: GateOutcome,
        why: String,
    ) -> Result<(), Abandon> {
        record.approval.as_mut().expect("saved when the approval step started").outcome = outcome;
        let step = &mut record.steps[index];
        step.state = StepState::Failed;
        step.error = why.clone();
        record.state = RolloutState::Running;
        if record.steps[index].recovery {
            // A rollback nobody approved: none of it runs, and the rollout
            // ends as it had (see `recovery::terminal_state`).
            for step in &mut record.steps[index + 1..] {
                step.state = StepState::Skipped;
            }
            record.error = format!("the rollback was not approved ({why}); nothing was changed");
            let message = format!("approval failed: {why}");
            let event = NewEvent { kind: "step_failed", step: STEP.into(), message, ..NewEvent::default() };
            return Ok(self.transition(record, event).await?);
        }
        record.error = format!("{why}; nothing was changed (maintenance mode was never turned on)");
        // Adds nothing before maintenance mode; keeps the rule in one place.
        recovery::plan(record, Recovery::LiftMaintenance, &[]);
        let message = format!("approval failed: {why}");
        let event = NewEvent { kind: "step_failed", step: STEP.into(), message, ..NewEvent::default() };
        Ok(self.transition(record, event).await?)
    }
}
