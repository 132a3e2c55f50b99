//! The default plan: the runbook as an ordered list of typed steps.

use crate::model::{StepKind, StepRecord, StepState};
use crate::registry::AgentSnapshot;

/// Why no plan can be made.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    /// The environment has no DB agent connected; connect one and retry.
    #[error("no agent with the db role is connected in environment {environment:?}{connected}")]
    NoDbHost { environment: String, connected: String },
    /// The environment has several DB agents connected; runway needs one.
    #[error(
        "{count} agents with the db role are connected in environment {environment:?} ({names}); runway migrates one database per environment"
    )]
    SeveralDbHosts { environment: String, count: usize, names: String },
}

/// Builds the default plan for the agents of one environment; with
/// `approval` (the environment requires approvals), an `approval` step
/// right after preflight, before anything changes.
pub fn default_plan(
    environment: &str,
    agents: &[AgentSnapshot],
    approval: bool,
) -> Result<Vec<StepRecord>, PlanError> {
    let db = db_host(environment, agents)?;
    let apps: Vec<String> = agents.iter().filter(|a| a.has_role("app")).map(|a| a.name.clone()).collect();
    let mut all = vec![db.clone()];
    all.extend(apps.iter().cloned());
    let step = |kind, hosts: Vec<String>, recovery| StepRecord {
        kind,
        hosts,
        state: StepState::Pending,
        attempt: 0,
        error: String::new(),
        recovery,
    };
    let mut steps = vec![step(StepKind::Preflight, all, false)];
    if approval {
        steps.push(step(StepKind::Approval, Vec::new(), false));
    }
    if !apps.is_empty() {
        steps.push(step(StepKind::MaintenanceOn, apps.clone(), false));
    }
    steps.push(step(StepKind::Backup, vec![db.clone()], false));
    steps.push(step(StepKind::Migrate, vec![db], false));
    if !apps.is_empty() {
        steps.push(step(StepKind::Restart, apps.clone(), false));
        steps.push(step(StepKind::MaintenanceOff, apps, false));
    }
    Ok(steps)
}

/// The one agent with the db role among an environment's connected agents.
pub fn db_host(environment: &str, agents: &[AgentSnapshot]) -> Result<String, PlanError> {
    let db: Vec<&AgentSnapshot> = agents.iter().filter(|a| a.has_role("db")).collect();
    match db.as_slice() {
        [one] => Ok(one.name.clone()),
        [] => {
            let connected = if agents.is_empty() {
                "; no agents are connected there at all (check `runway agents` and the agents' `environment`)"
                    .to_owned()
            } else {
                format!(
                    "; connected: {}",
                    agents.iter().map(|a| a.name.as_str()).collect::<Vec<_>>().join(", ")
                )
            };
            Err(PlanError::NoDbHost { environment: environment.to_owned(), connected })
        }
        many => Err(PlanError::SeveralDbHosts {
            environment: environment.to_owned(),
            count: many.len(),
            names: many.iter().map(|a| a.name.as_str()).collect::<Vec<_>>().join(", "),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(name: &str, roles: &[&str]) -> AgentSnapshot {
        AgentSnapshot {
            name: name.into(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            app_version: "v1".into(),
            labels: Default::default(),
        }
    }

    #[test]
    fn runbook_order() {
        let agents = [agent("app-1", &["app"]), agent("db", &["db"]), agent("app-2", &["app"])];
        let plan = default_plan("staging", &agents, false).unwrap();
        let kinds: Vec<_> = plan.iter().map(|s| s.kind.name()).collect();
        assert_eq!(kinds, ["preflight", "maintenance_on", "backup", "migrate", "restart", "maintenance_off"]);
        assert_eq!(plan[0].hosts, ["db", "app-1", "app-2"]);
        assert_eq!(plan[3].hosts, ["db"]);
        // Approvals come after preflight, before anything changes; no host runs them.
        let plan = default_plan("staging", &agents, true).unwrap();
        let kinds: Vec<_> = plan.iter().map(|s| s.kind.name()).collect();
        assert_eq!(kinds[..3], ["preflight", "approval", "maintenance_on"]);
        assert!(plan[1].hosts.is_empty());
        let plan = default_plan("staging", &[agent("db", &["db"])], true).unwrap();
        let kinds: Vec<_> = plan.iter().map(|s| s.kind.name()).collect();
        assert_eq!(kinds, ["preflight", "approval", "backup", "migrate"]);
    }

    #[test]
    fn needs_exactly_one_db_host() {
        let err = default_plan("staging", &[agent("app-1", &["app"])], false).unwrap_err();
        assert!(err.to_string().contains("no agent with the db role"), "{err}");
        let err = default_plan("staging", &[agent("a", &["db"]), agent("b", &["db"])], false).unwrap_err();
        assert!(matches!(err, PlanError::SeveralDbHosts { count: 2, .. }));
    }
}
