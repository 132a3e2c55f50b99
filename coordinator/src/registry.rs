//! The agents connected to this (leader) coordinator.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use runway_proto::v1::{AgentInfo, CoordinatorMessage};
use tokio::sync::mpsc;

/// Messages to one agent's stream.
pub type AgentSender = mpsc::Sender<Result<CoordinatorMessage, tonic::Status>>;

/// Name and roles of a connected agent: what planning needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentSnapshot {
    pub name: String,
    pub roles: Vec<String>,
    /// The app version the agent registered with (what runs there now).
    pub app_version: String,
}

impl AgentSnapshot {
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }
}

struct Connected {
    info: AgentInfo,
    tx: AgentSender,
    session: u64,
}

/// Shared registry; cheap to clone.
#[derive(Clone, Default)]
pub struct Registry {
    agents: Arc<Mutex<HashMap<String, Connected>>>,
    next_session: Arc<AtomicU64>,
}

impl Registry {
    /// Adds an agent's session, or replaces the session of the same agent
    /// (same name and environment: it reconnected before its old stream was
    /// noticed gone); returns the session id. Another agent with a name
    /// that is attached is refused (`Err` says who holds it).
    pub fn register(&self, info: AgentInfo, tx: AgentSender) -> Result<u64, String> {
        let mut agents = self.agents.lock().expect("registry lock");
        if let Some(attached) = agents.get(&info.name) {
            if attached.info.environment != info.environment {
                return Err(format!(
                    "agent name {} is taken: agent {} ({}) is attached; refusing agent {} ({})",
                    info.name, info.name, attached.info.environment, info.name, info.environment
                ));
            }
            tracing::info!(agent = %info.name, "agent reconnected; replacing its old session");
        }
        let session = self.next_session.fetch_add(1, Ordering::SeqCst) + 1;
        agents.insert(info.name.clone(), Connected { info, tx, session });
        publish(&agents);
        Ok(session)
    }

    /// Removes the agent if `session` is still its current one.
    pub fn unregister(&self, name: &str, session: u64) {
        let mut agents = self.agents.lock().expect("registry lock");
        if agents.get(name).is_some_and(|c| c.session == session) {
            agents.remove(name);
            publish(&agents);
        }
    }

    pub fn touch(&self, name: &str, session: u64) {
        let mut agents = self.agents.lock().expect("registry lock");
        if let Some(c) = agents.get_mut(name).filter(|c| c.session == session) {
            c.info.last_seen_unix_ms = runway_proto::unix_ms_now();
        }
    }

    /// Records that `name` now runs app version `version` (after a restart
    /// it reported as done), so the next rollout knows what to bring back.
    pub fn set_app_version(&self, name: &str, version: &str) {
        if let Some(c) = self.agents.lock().expect("registry lock").get_mut(name) {
            c.info.app_version = version.to_owned();
        }
    }

    /// Connected agents, optionally of one environment, sorted by name.
    pub fn list(&self, environment: Option<&str>) -> Vec<AgentInfo> {
        let agents = self.agents.lock().expect("registry lock");
        let mut list: Vec<AgentInfo> = agents
            .values()
            .filter(|c| environment.is_none_or(|e| c.info.environment == e))
            .map(|c| c.info.clone())
            .collect();
        list.sort_by(|a, b| a.name.cmp(&b.name));
        list
    }

    pub fn snapshot(&self, environment: &str) -> Vec<AgentSnapshot> {
        self.list(Some(environment))
            .into_iter()
            .map(|a| AgentSnapshot { name: a.name, roles: a.roles, app_version: a.app_version })
            .collect()
    }

    pub fn sender(&self, name: &str) -> Option<AgentSender> {
        self.agents.lock().expect("registry lock").get(name).map(|c| c.tx.clone())
    }

    pub fn is_connected(&self, name: &str) -> bool {
        self.agents.lock().expect("registry lock").contains_key(name)
    }

    /// Drops every session (the leader stepped down).
    pub fn clear(&self) {
        let mut agents = self.agents.lock().expect("registry lock");
        agents.clear();
        publish(&agents);
    }
}

/// Tells the metrics who is connected now.
fn publish(agents: &HashMap<String, Connected>) {
    let connected =
        agents.values().map(|c| (c.info.environment.as_str(), c.info.name.as_str(), &c.info.roles[..]));
    crate::metrics::get().agents(connected);
}
