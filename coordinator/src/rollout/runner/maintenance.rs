//! The `maintenance` policy as the runner applies it: just before the
//! plan's maintenance-on step would run (after preflight and any approval,
//! so the saved preflight plan is there, and a resumed rollout decides the
//! same way), see [`crate::policy::maintenance`].

use super::{Abandon, Run};
use crate::model::{RolloutRecord, StepKind, StepState};
use crate::policy::maintenance::{Decision, decide};
use crate::repo::events::NewEvent;
use crate::rollout::recovery::{self, Recovery};

impl Run<'_> {
    /// Applies the environment's `maintenance` policy to pending
    /// maintenance-on step `index` of `record`. True when the step runs;
    /// false when it and maintenance off were skipped, or the rollout was
    /// refused (the step failed, nothing changed).
    pub(super) async fn maintenance_policy(
        &self,
        record: &mut RolloutRecord,
        index: usize,
    ) -> Result<bool, Abandon> {
        let policy = self.runner.config.environments.policy(&record.environment).maintenance;
        let step = StepKind::MaintenanceOn.name().to_owned();
        match decide(policy, record.plan.as_ref()) {
            Decision::TurnOn(why) => {
                if policy != crate::config::Maintenance::Always {
                    let event =
                        NewEvent { kind: "maintenance_needed", step, message: why, ..NewEvent::default() };
                    self.events.emit(event).await?;
                }
                Ok(true)
            }
            Decision::Skip(why) => {
                for s in record.steps.iter_mut().filter(|s| {
                    !s.recovery
                        && s.state == StepState::Pending
                        && matches!(s.kind, StepKind::MaintenanceOn | StepKind::MaintenanceOff)
                }) {
                    s.state = StepState::Skipped;
                }
                let event =
                    NewEvent { kind: "maintenance_skipped", step, message: why, ..NewEvent::default() };
                self.transition(record, event).await?;
                Ok(false)
            }
            Decision::Refuse(why) => {
                // Planned while the step is still pending, so it adds
                // nothing: maintenance mode was never turned on.
                recovery::plan(record, Recovery::LiftMaintenance, &[]);
                let failed = &mut record.steps[index];
                failed.state = StepState::Failed;
                failed.error = why.clone();
                record.error = format!("maintenance_on failed: {why}");
                record.refused = true;
                let message = format!("maintenance_on failed: {why}");
                let event = NewEvent { kind: "step_failed", step, message, ..NewEvent::default() };
                self.transition(record, event).await?;
                Ok(false)
            }
        }
    }
}
