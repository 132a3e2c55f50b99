//! The `monitor` phase: after a rollout succeeded, its environment's
//! analysis keeps running for `monitor = "24h"` (the runbook's "monitor for
//! 24 hours after a production migration").
//!
//! The rollout is `succeeded` and holds nothing (a new rollout may start);
//! its record says `monitoring` until the phase ends. It ends `passed`
//! when the time is up, `superseded` when a newer rollout of the
//! environment exists (the leader's rollout feed tells the run at once),
//! or `degraded` when a check fails: a `monitor_degraded` event tells the
//! webhooks, and with `on_monitor_failure = "rollback"` the rollout is
//! reopened and rolled back by migration — only by migration: after traffic
//! has written to the new schema a restore would lose those writes, so
//! where the downs are not all proven it is left to a person.
//!
//! A new leader resumes a monitoring rollout like an unfinished one, and
//! its counts continue from the saved ones (see `super::analysis`).

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;

use super::analysis::{Analysed, Analysis, Phase};
use super::{Abandon, Run, RunControl};
use crate::config::{EnvironmentPolicy, OnMonitorFailure};
use crate::model::{MonitorRecord, MonitorState, RolloutRecord, RolloutState};
use crate::repo::audit::{self, Action, Outcome};
use crate::repo::events::NewEvent;
use crate::rollout::recovery::{self, Way};
use crate::rollout::restart;

/// Starts the `monitor` phase in `record` as it succeeds, when the policy
/// asks for one (saved with the `rollout_succeeded` event).
pub(super) fn begin(record: &mut RolloutRecord, policy: &EnvironmentPolicy) {
    let Some(monitor) = policy.monitor.filter(|_| !policy.analysis.is_empty()) else { return };
    if record.state != RolloutState::Succeeded || record.analysis.monitor.is_some() {
        return;
    }
    let now = runway_proto::unix_ms_now();
    record.analysis.monitor = Some(MonitorRecord {
        state: MonitorState::Monitoring,
        started_unix_ms: now,
        until_unix_ms: now.saturating_add(i64::try_from(monitor.millis()).unwrap_or(i64::MAX)),
        reason: String::new(),
    });
}

/// How the monitor's wait ended without a failed check.
enum Ended {
    TimeUp,
    Superseded(String),
}

impl Run<'_> {
    /// Runs the `monitor` phase of `record` to its end. True when the
    /// rollout was reopened to roll back (the caller runs its steps).
    pub(super) async fn monitor(
        &self,
        record: &mut RolloutRecord,
        control: &RunControl,
    ) -> Result<bool, Abandon> {
        let config = &self.runner.config;
        let hosts = restart::changed_hosts(record);
        let policy = config.environments.policy(&record.environment);
        let canaries = hosts.iter().take(policy.restart.canary as usize).cloned().collect();
        if let Some(newer) = self.newer_rollout(record).await? {
            return self.end_monitor(record, MonitorState::Superseded, newer).await.map(|()| false);
        }
        let Some(mut analysis) =
            Analysis::new(config, record, Phase::Monitor, "monitor", hosts, canaries, Vec::new())
        else {
            let why = "no analysis check applies after success".to_owned();
            return self.end_monitor(record, MonitorState::Passed, why).await.map(|()| false);
        };
        let until_ms = record.analysis.monitor.as_ref().map_or(0, |m| m.until_unix_ms);
        let left = u64::try_from(until_ms - runway_proto::unix_ms_now()).unwrap_or(0);
        let deadline = Instant::now() + Duration::from_millis(left);
        let wait = async {
            loop {
                if control.superseded.load(Ordering::SeqCst) {
                    return Ok(Ended::Superseded(
                        "a newer rollout of the environment started, or an operator rolled it back"
                            .to_owned(),
                    ));
                }
                tokio::select! {
                    _ = tokio::time::sleep_until(deadline) => return Ok(Ended::TimeUp),
                    _ = control.wake.notified() => {}
                    _ = self.term.cancel.cancelled() => return Err(Abandon::TermEnded),
                }
            }
        };
        let outcome = self.analysed(&mut analysis, wait).await?;
        record.analysis = analysis.into_counts();
        match outcome {
            Analysed::Done(Ended::TimeUp) => {
                let why = format!("every check held until {}", chrono_ms(until_ms));
                self.end_monitor(record, MonitorState::Passed, why).await.map(|()| false)
            }
            Analysed::Done(Ended::Superseded(why)) => {
                self.end_monitor(record, MonitorState::Superseded, why).await.map(|()| false)
            }
            Analysed::Failed { why, .. } => self.degraded(record, &policy, why).await,
        }
    }

    /// The id of a rollout of `record`'s environment accepted after it.
    async fn newer_rollout(&self, record: &RolloutRecord) -> Result<Option<String>, Abandon> {
        let rollouts = self.runner.store.list_rollouts().await?;
        Ok(rollouts
            .iter()
            .find(|r| {
                r.environment == record.environment
                    && r.id != record.id
                    && r.created_unix_ms > record.created_unix_ms
            })
            .map(|r| format!("rollout {} of the environment started", r.id)))
    }

    async fn end_monitor(
        &self,
        record: &mut RolloutRecord,
        state: MonitorState,
        why: String,
    ) -> Result<(), Abandon> {
        if let Some(monitor) = record.analysis.monitor.as_mut() {
            monitor.state = state;
            monitor.reason = why.clone();
        }
        let event = NewEvent {
            kind: "monitor_ended",
            step: "monitor".into(),
            message: format!("monitor {}: {why}", state.name()),
            ..NewEvent::default()
        };
        self.transition(record, event).await?;
        Ok(())
    }

    /// A check failed after success: notify, and roll back by migration
    /// when the policy says so and the downs are proven.
    async fn degraded(
        &self,
        record: &mut RolloutRecord,
        policy: &EnvironmentPolicy,
        why: String,
    ) -> Result<bool, Abandon> {
        let rollback = policy.on_monitor_failure == OnMonitorFailure::Rollback;
        let (way, way_why) = recovery::way(record, policy);
        let next = match (rollback, way) {
            (false, _) => "on_monitor_failure = \"notify\": nothing is changed; a person decides".to_owned(),
            (true, Way::Migration) => {
                format!("on_monitor_failure = \"rollback\": rolling back by migration ({way_why})")
            }
            (true, Way::Restore) => format!(
                "on_monitor_failure = \"rollback\", but NOT ROLLED BACK: only a restore could ({way_why}), and \
                 traffic has written to the new schema since; roll back by hand (`runway rollout rollback {}`)",
                record.id
            ),
        };
        let message = format!("rollout {} is degraded: {why}; {next}", record.id);
        if let Some(monitor) = record.analysis.monitor.as_mut() {
            monitor.state = MonitorState::Degraded;
            monitor.reason = message.clone();
        }
        let event =
            NewEvent { kind: "monitor_degraded", step: "monitor".into(), message, ..NewEvent::default() };
        self.transition(record, event).await?;
        if !(rollback && way == Way::Migration) {
            return Ok(false);
        }
        self.reopen(record, way_why).await
    }

    /// Reopens `record` for a rollback by migration, claiming its
    /// environment; false (nothing changed) when another change holds it.
    async fn reopen(&self, record: &mut RolloutRecord, why: String) -> Result<bool, Abandon> {
        let store = &self.runner.store;
        let mut reopened = record.clone();
        let requested_by = audit::coordinator_actor(&self.runner.config.name);
        if let Err(refused) =
            recovery::reopen_for_rollback(&mut reopened, "the monitor", (Way::Migration, why))
        {
            let event = NewEvent {
                kind: "monitor_rollback_refused",
                step: "monitor".into(),
                message: format!("the monitor cannot roll back: {refused}"),
                ..NewEvent::default()
            };
            self.events.emit(event).await?;
            return Ok(false);
        }
        reopened.updated_unix_ms = runway_proto::unix_ms_now();
        let mut entry = audit::entry(Action::Rollback, &self.runner.config.name);
        entry.actor = requested_by;
        entry.rollout_id = record.id.clone();
        entry.environment = record.environment.clone();
        let audit = store.audit().put(&entry, Outcome::Accepted, "");
        loop {
            let claim = store.claim(&record.environment).await?;
            if let Some(holder) = store.holder(&claim, self.term, Some(&record.id)).await? {
                let event = NewEvent {
                    kind: "monitor_rollback_refused",
                    step: "monitor".into(),
                    message: format!("the monitor cannot roll back: {} holds the environment", holder.what),
                    ..NewEvent::default()
                };
                self.events.emit(event).await?;
                return Ok(false);
            }
            if store
                .reopen_rollout(self.term, &reopened, audit.clone(), (&claim.marker, claim.put(&record.id)))
                .await?
            {
                break;
            }
        }
        *record = reopened;
        tracing::warn!(rollout = %record.id, "the monitor rolls the rollout back by migration");
        Ok(true)
    }
}

/// `unix_ms` as an RFC 3339 time, for people.
fn chrono_ms(unix_ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(unix_ms).map_or_else(|| unix_ms.to_string(), |t| t.to_rfc3339())
}
