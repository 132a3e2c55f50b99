//! Each environment's known agents: a rollout's hosts are the agents the
//! environment is known to have, not whoever happens to be connected.
//!
//! An agent's first registration adds it (`inventory/<env>/<name>`, JSON);
//! a later one updates its roles and databases when they changed. Only an
//! operator removes one (`runway agents forget`, audited). A rollout
//! refuses to start while a known agent is away, unless the operator
//! leaves it out by name (`--skip-host`).

use runway_proto::v1::AgentInfo;
use serde::{Deserialize, Serialize};

use super::RolloutStore;
use crate::fencing::Term;
use crate::store::{Delete, Put, StoreError};

/// One known agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Known {
    pub environment: String,
    pub name: String,
    pub roles: Vec<String>,
    #[serde(default)]
    pub databases: Vec<String>,
    /// When it first registered.
    pub added_unix_ms: i64,
}

impl Known {
    /// As an [`AgentInfo`] for `runway agents` (not connected: no times).
    pub fn to_info(&self) -> AgentInfo {
        AgentInfo {
            name: self.name.clone(),
            environment: self.environment.clone(),
            roles: self.roles.clone(),
            databases: self.databases.clone(),
            ..AgentInfo::default()
        }
    }
}

impl RolloutStore {
    fn known_prefix(&self, environment: &str) -> String {
        self.store.key(&format!("inventory/{environment}/"))
    }

    fn known_key(&self, environment: &str, name: &str) -> String {
        format!("{}{name}", self.known_prefix(environment))
    }

    /// Adds a registering agent, or updates its roles and databases; writes
    /// nothing when it is known as it is.
    pub async fn record_agent(&self, term: &Term, info: &AgentInfo) -> Result<(), StoreError> {
        let key = self.known_key(&info.environment, &info.name);
        let known: Option<Known> = self.store.get_json(&key).await?;
        if known.as_ref().is_some_and(|k| k.roles == info.roles && k.databases == info.databases) {
            return Ok(());
        }
        let entry = Known {
            environment: info.environment.clone(),
            name: info.name.clone(),
            roles: info.roles.clone(),
            databases: info.databases.clone(),
            added_unix_ms: known.map_or_else(runway_proto::unix_ms_now, |k| k.added_unix_ms),
        };
        self.store.put_fenced(term, vec![Put::json(key, &entry)]).await
    }

    /// The agents `environment` is known to have, by name.
    pub async fn known_agents(&self, environment: &str) -> Result<Vec<Known>, StoreError> {
        self.store.list_json(&self.known_prefix(environment)).await
    }

    /// Removes `name` from `environment`'s inventory with the operator's
    /// `audit` entry; `None` when it was not known.
    pub async fn forget_agent(
        &self,
        term: &Term,
        environment: &str,
        name: &str,
        audit: Put,
    ) -> Result<Option<Known>, StoreError> {
        let key = self.known_key(environment, name);
        let Some(known) = self.store.get_json::<Known>(&key).await? else {
            return Ok(None);
        };
        self.store.delete_fenced(term, vec![Delete { key, prefix: false }], None).await?;
        self.store.put_fenced(term, vec![audit]).await?;
        Ok(Some(known))
    }
}
