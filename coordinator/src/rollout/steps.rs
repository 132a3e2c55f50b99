//! The default steps: the runbook as an ordered list of typed steps.
//!
//! Every database of the environment is a DB target (see
//! [`super::target`]): a DB agent serving one database is one target named
//! after the agent; one serving several gives a `host/database` target
//! each. Preflight, backup and migrate run on every target; the runner
//! batches backup and migrate by the environment's `databases` policy.

use super::target::Target;
use crate::model::{DatabaseRecord, DatabaseState, StepKind, StepRecord, StepState};
use crate::registry::AgentSnapshot;

/// Why no plan can be made.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HostsError {
    /// The environment has no DB agent connected; connect one and retry.
    #[error("no agent with the db role is connected in environment {environment:?}{connected}")]
    NoDbHost { environment: String, connected: String },
    /// The environment has several DB agents connected; an operation that
    /// needs one (`runway backup … --env`) cannot choose.
    #[error(
        "{count} agents with the db role are connected in environment {environment:?} ({names}); this operation needs exactly one"
    )]
    SeveralDbHosts { environment: String, count: usize, names: String },
    /// No connected DB agent serves the database an operation names.
    #[error(
        "no connected DB agent in environment {environment:?} serves database {database:?}; databases: {served}"
    )]
    UnknownDatabase { environment: String, database: String, served: String },
    /// Several DB agents serve a database of that name.
    #[error(
        "database {database:?} is served by several DB agents in environment {environment:?} ({hosts}); name it HOST/{database}"
    )]
    AmbiguousDatabase { environment: String, database: String, hosts: String },
}

/// Builds the default plan for the agents of one environment; with
/// `approval` (the environment requires approvals), an `approval` step
/// right after preflight, before anything changes.
pub fn default_steps(
    environment: &str,
    agents: &[AgentSnapshot],
    approval: bool,
) -> Result<Vec<StepRecord>, HostsError> {
    let db: Vec<String> = db_targets(environment, agents)?.iter().map(|(t, _)| t.to_string()).collect();
    let apps: Vec<String> = agents.iter().filter(|a| a.has_role("app")).map(|a| a.name.clone()).collect();
    let mut all = db.clone();
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
    steps.push(step(StepKind::Backup, db.clone(), false));
    steps.push(step(StepKind::Migrate, db, false));
    if !apps.is_empty() {
        steps.push(step(StepKind::Restart, apps.clone(), false));
        steps.push(step(StepKind::MaintenanceOff, apps, false));
    }
    Ok(steps)
}

/// Every database of the environment's connected DB agents, in agent
/// order: its target, and its name as the agent registered it (empty from
/// an agent too old to name its database).
pub fn db_targets(environment: &str, agents: &[AgentSnapshot]) -> Result<Vec<(Target, String)>, HostsError> {
    let db: Vec<&AgentSnapshot> = agents.iter().filter(|a| a.has_role("db")).collect();
    if db.is_empty() {
        db_host(environment, agents)?;
    }
    Ok(db
        .iter()
        .flat_map(|agent| match agent.databases.as_slice() {
            [] => vec![(Target::host(&agent.name), String::new())],
            [one] => vec![(Target::host(&agent.name), one.clone())],
            several => several.iter().map(|d| (Target::database(&agent.name, d), d.clone())).collect(),
        })
        .collect())
}

/// The rollout's databases, all pending, in plan order.
pub fn database_records(
    environment: &str,
    agents: &[AgentSnapshot],
) -> Result<Vec<DatabaseRecord>, HostsError> {
    Ok(db_targets(environment, agents)?
        .into_iter()
        .map(|(target, name)| DatabaseRecord {
            target: target.to_string(),
            database: if name.is_empty() { target.database.clone() } else { name },
            host: target.host,
            state: DatabaseState::Pending,
            migrations_applied: 0,
            backup: String::new(),
            undone: Vec::new(),
        })
        .collect())
}

/// Where an operation on one database goes (`runway backup … --database`):
/// `database` is `NAME` (served by one DB agent) or `HOST/NAME`; empty, the
/// environment's only DB agent and its only database.
pub fn database_target(
    environment: &str,
    agents: &[AgentSnapshot],
    database: &str,
) -> Result<Target, HostsError> {
    if database.is_empty() {
        return db_host(environment, agents).map(|host| Target::host(&host));
    }
    let (host, name) = match database.split_once('/') {
        Some((host, name)) => (Some(host), name),
        None => (None, database),
    };
    let all = db_targets(environment, agents)?;
    let serving: Vec<&str> = all
        .iter()
        .filter(|(target, served)| served == name && host.is_none_or(|h| target.host == h))
        .map(|(target, _)| target.host.as_str())
        .collect();
    match serving.as_slice() {
        [host] => Ok(Target::database(host, name)),
        [] => Err(HostsError::UnknownDatabase {
            environment: environment.to_owned(),
            database: database.to_owned(),
            served: all.iter().map(|(t, n)| format!("{}/{n}", t.host)).collect::<Vec<_>>().join(", "),
        }),
        several => Err(HostsError::AmbiguousDatabase {
            environment: environment.to_owned(),
            database: database.to_owned(),
            hosts: several.join(", "),
        }),
    }
}

/// The one agent with the db role among an environment's connected agents.
pub fn db_host(environment: &str, agents: &[AgentSnapshot]) -> Result<String, HostsError> {
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
            Err(HostsError::NoDbHost { environment: environment.to_owned(), connected })
        }
        many => Err(HostsError::SeveralDbHosts {
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
            databases: Vec::new(),
        }
    }

    fn db_agent(name: &str, databases: &[&str]) -> AgentSnapshot {
        AgentSnapshot { databases: databases.iter().map(|d| d.to_string()).collect(), ..agent(name, &["db"]) }
    }

    #[test]
    fn runbook_order() {
        let agents = [agent("app-1", &["app"]), agent("db", &["db"]), agent("app-2", &["app"])];
        let plan = default_steps("staging", &agents, false).unwrap();
        let kinds: Vec<_> = plan.iter().map(|s| s.kind.name()).collect();
        assert_eq!(kinds, ["preflight", "maintenance_on", "backup", "migrate", "restart", "maintenance_off"]);
        assert_eq!(plan[0].hosts, ["db", "app-1", "app-2"]);
        assert_eq!(plan[3].hosts, ["db"]);
        // Approvals come after preflight, before anything changes; no host runs them.
        let plan = default_steps("staging", &agents, true).unwrap();
        let kinds: Vec<_> = plan.iter().map(|s| s.kind.name()).collect();
        assert_eq!(kinds[..3], ["preflight", "approval", "maintenance_on"]);
        assert!(plan[1].hosts.is_empty());
        let plan = default_steps("staging", &[agent("db", &["db"])], true).unwrap();
        let kinds: Vec<_> = plan.iter().map(|s| s.kind.name()).collect();
        assert_eq!(kinds, ["preflight", "approval", "backup", "migrate"]);
    }

    #[test]
    fn needs_a_db_host() {
        let err = default_steps("staging", &[agent("app-1", &["app"])], false).unwrap_err();
        assert!(err.to_string().contains("no agent with the db role"), "{err}");
        let err = db_host("staging", &[agent("a", &["db"]), agent("b", &["db"])]).unwrap_err();
        assert!(matches!(err, HostsError::SeveralDbHosts { count: 2, .. }));
    }

    #[test]
    fn an_operation_on_one_database_finds_its_agent() {
        let agents = [db_agent("db-1", &["app"]), db_agent("db-2", &["app", "orders"])];
        assert_eq!(database_target("s", &agents, "orders").unwrap(), Target::database("db-2", "orders"));
        assert_eq!(database_target("s", &agents, "db-1/app").unwrap(), Target::database("db-1", "app"));
        let err = database_target("s", &agents, "app").unwrap_err().to_string();
        assert!(err.contains("db-1, db-2") && err.contains("HOST/app"), "{err}");
        let err = database_target("s", &agents, "users").unwrap_err().to_string();
        assert!(err.contains("\"users\"") && err.contains("db-2/orders"), "{err}");
        assert!(matches!(database_target("s", &agents, ""), Err(HostsError::SeveralDbHosts { .. })));
        assert_eq!(database_target("s", &agents[..1], "").unwrap(), Target::host("db-1"));
    }

    #[test]
    fn every_database_of_every_db_agent_is_a_target() {
        let agents =
            [db_agent("db-1", &["app"]), db_agent("db-2", &["billing", "orders"]), agent("app-1", &["app"])];
        let plan = default_steps("staging", &agents, false).unwrap();
        let targets = ["db-1", "db-2/billing", "db-2/orders"];
        assert_eq!(plan[0].hosts, ["db-1", "db-2/billing", "db-2/orders", "app-1"]);
        assert_eq!(plan.iter().find(|s| s.kind == StepKind::Backup).unwrap().hosts, targets);
        assert_eq!(plan.iter().find(|s| s.kind == StepKind::Migrate).unwrap().hosts, targets);
        let records = database_records("staging", &agents).unwrap();
        let shown: Vec<(&str, &str, &str)> =
            records.iter().map(|d| (d.target.as_str(), d.host.as_str(), d.database.as_str())).collect();
        assert_eq!(
            shown,
            [("db-1", "db-1", "app"), ("db-2/billing", "db-2", "billing"), ("db-2/orders", "db-2", "orders")]
        );
        assert!(records.iter().all(|d| d.state == DatabaseState::Pending));
    }
}
