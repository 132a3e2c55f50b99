//! Batched steps (restart; backup and migrate over several databases), and
//! the watch step that ends at the first failure.
//!
//! Backup and migrate over several databases go through the same batches
//! with the environment's `databases` policy (see `rollout::databases`).
//!
//! A rollout's restart runs the canaries first, then batch after batch
//! (see [`restart::batches`]): the hosts of one batch restart together,
//! the next batch starts when every host of the previous one has ended.
//! Each host's command carries the policy's healthy deadline, how long the
//! app must stay healthy, and the smoke checks to run after it; the agent
//! reports failure when any of that does not hold. After a batch, more
//! failures than `max_failures` — or a failed canary, or an agent whose
//! outcome is unknown — stop the step: later batches are never started, and
//! the runner rolls back the hosts the step reached.
//!
//! A `batch_started` event opens each batch (its detail names the hosts),
//! so a watcher sees the order; each host's `command_succeeded` /
//! `command_failed` closes its part.
//!
//! On a failover the step is resumed from its first batch with the same
//! command ids: hosts that ended answer from their journals at once.

use runway_proto::v1;
use tokio::time::Instant;

use super::analysis::{Analysed, Analysis};
use super::{Abandon, Run};
use crate::model::StepRecord;
use crate::repo::events::NewEvent;
use crate::rollout::outcome::{CommandEnd, StepResult};
use crate::rollout::restart::{self, Batching};

impl Run<'_> {
    /// Runs `step` batch by batch under `policy`.
    pub(super) async fn in_batches(
        &self,
        step: &StepRecord,
        policy: &Batching,
        make: impl Fn(&str) -> v1::Command,
        deadline: Option<Instant>,
        mut analysis: Option<&mut Analysis>,
    ) -> Result<StepResult, Abandon> {
        let batches = restart::batches(&step.hosts, policy);
        let tolerated = restart::tolerated(policy, step.hosts.len());
        let mut ends: Vec<CommandEnd> = Vec::with_capacity(step.hosts.len());
        let mut stopped = false;
        for (i, batch) in batches.iter().enumerate() {
            let message = format!(
                "{} batch {} of {}{}: {}",
                step.kind.name(),
                i + 1,
                batches.len(),
                if batch.canary { " (canary)" } else { "" },
                batch.hosts.join(", ")
            );
            let detail = serde_json::json!({
                "batch": i + 1, "of": batches.len(), "canary": batch.canary, "hosts": batch.hosts,
            });
            let event = NewEvent {
                kind: "batch_started",
                step: step.kind.name().into(),
                message,
                detail_json: detail.to_string(),
                ..NewEvent::default()
            };
            self.events.emit(event).await?;
            let results = match analysis.as_deref_mut().filter(|_| batch.canary) {
                Some(analysis) => self.canary_analysed(step, &batch.hosts, &make, deadline, analysis).await?,
                None => self.start_commands(step, &batch.hosts, &make, deadline).all().await?,
            };
            let mut canary_failed = false;
            for end in results {
                canary_failed |= batch.canary && end.error.is_some();
                stopped |= end.outcome_unknown;
                ends.push(end);
            }
            let failures = ends.iter().filter(|e| e.error.is_some()).count();
            let why = if canary_failed {
                Some("a canary failed".to_owned())
            } else if failures > tolerated {
                Some(format!(
                    "{failures} host(s) failed, more than max_failures = {} ({tolerated})",
                    policy.max_failures
                ))
            } else if stopped {
                Some("an agent's outcome is unknown".to_owned())
            } else {
                None
            };
            if let Some(why) = why {
                let left = batches.len() - i - 1;
                let kind = step.kind.name();
                let message = if left == 0 {
                    format!("{kind} stops: {why}")
                } else {
                    format!("{kind} stops: {why}; {left} later batch(es) not started")
                };
                let event = NewEvent {
                    kind: "batches_stopped",
                    step: step.kind.name().into(),
                    message,
                    ..NewEvent::default()
                };
                self.events.emit(event).await?;
                stopped = true;
                break;
            }
        }
        let tolerated = if stopped { 0 } else { tolerated };
        Ok(StepResult { ends, tolerated })
    }

    /// Runs `step` on all its hosts together and ends at the first failure
    /// (the watch window: one host failing is enough to roll back, no need
    /// to wait out the others' windows). Commands still running are left to
    /// their agents; their results are not waited for.
    ///
    /// With `analysis`, a failed check also ends it (see `super::analysis`).
    pub(super) async fn until_first_failure(
        &self,
        step: &StepRecord,
        make: impl Fn(&str) -> v1::Command,
        deadline: Option<Instant>,
        analysis: Option<&mut Analysis>,
    ) -> Result<StepResult, Abandon> {
        let mut running = self.start_commands(step, &step.hosts, make, deadline);
        let mut ends = Vec::with_capacity(step.hosts.len());
        let watch = async {
            while let Some(end) = running.next().await? {
                let failed = end.error.is_some();
                ends.push(end);
                if failed {
                    break;
                }
            }
            Ok(())
        };
        let failed = match analysis {
            Some(analysis) => match self.analysed(analysis, watch).await? {
                Analysed::Done(()) => None,
                Analysed::Failed { why, .. } => Some(why),
            },
            None => {
                watch.await?;
                None
            }
        };
        if let Some(why) = failed {
            let host = step.hosts.first().cloned().unwrap_or_default();
            ends.push(CommandEnd { error: Some(why), ..CommandEnd::reached(&host) });
        }
        running.stop().await;
        Ok(StepResult { ends, tolerated: 0 })
    }

    /// Runs the canary batch on `hosts` with `analysis` beside it. A failed
    /// check ends the batch at once: the canaries' commands are left to
    /// their agents, and the canaries count as reached (they are rolled
    /// back), the first one carrying the analysis's error.
    async fn canary_analysed(
        &self,
        step: &StepRecord,
        hosts: &[String],
        make: impl Fn(&str) -> v1::Command,
        deadline: Option<Instant>,
        analysis: &mut Analysis,
    ) -> Result<Vec<CommandEnd>, Abandon> {
        let mut running = self.start_commands(step, hosts, make, deadline);
        let collect = async {
            let mut ends = Vec::with_capacity(hosts.len());
            while let Some(end) = running.next().await? {
                ends.push(end);
            }
            Ok(ends)
        };
        let (why, done) = match self.analysed(analysis, collect).await? {
            Analysed::Done(ends) => return Ok(ends),
            Analysed::Failed { why, done } => (why, done),
        };
        running.stop().await;
        let mut ends = done.unwrap_or_else(|| hosts.iter().map(|h| CommandEnd::reached(h)).collect());
        if let Some(first) = ends.first_mut() {
            first.error = Some(match first.error.take() {
                Some(error) => format!("{error}; {why}"),
                None => why,
            });
        }
        Ok(ends)
    }
}
