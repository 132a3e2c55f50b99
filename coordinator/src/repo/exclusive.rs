//! One change per environment at a time.
//!
//! A rollout, an operator's rollback, a backup restore and a backup verify
//! each change (or load) an environment's database; two at once can
//! interleave their steps (one's `maintenance_off` while the other
//! migrates, a restore's swap ending a migration's sessions). So each
//! claims its environment before it starts, and a second one is refused
//! with the holder's id.
//!
//! What holds an environment is what is saved, so a new leader sees the
//! same holders: every rollout of it that has not ended (its record), and
//! the backup operation in `envs/<env>/operation` while it runs. Claiming
//! is optimistic: read the environment's marker key's revision, look for
//! a holder, then write the claim (the new record, the reopened record or
//! the operation) together with the marker, only if the marker did not
//! move. Two claims that raced both read the same revision; one write
//! wins, the other finds the winner when it tries again.
//!
//! `rollout plan` claims nothing: it reads.

use serde::{Deserialize, Serialize};

use super::RolloutStore;
use crate::fencing::Term;
use crate::store::{Delete, Marker, Put, StoreError};

/// An environment's marker as a claim read it, before it looked for holders.
#[derive(Debug, Clone)]
pub struct Claim {
    pub marker: Marker,
    pub environment: String,
}

impl Claim {
    /// The marker's new value, naming the change that claims.
    pub fn put(&self, holder: &str) -> Put {
        self.marker.put(&serde_json::json!({ "holder": holder, "unix_ms": runway_proto::unix_ms_now() }))
    }
}

/// A backup operation that holds its environment while it runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operation {
    /// The command's id on the DB agent.
    pub id: String,
    /// `restore` or `verify`.
    pub kind: String,
    pub backup: String,
    pub host: String,
    pub requested_by: String,
    pub started_unix_ms: i64,
    /// The fencing token of the leader that runs it: an operation follows
    /// its caller's request, which ends with that leader's term.
    pub token: u64,
}

/// Who holds an environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// The rollout's id, or the backup operation's command id.
    pub id: String,
    /// In words, e.g. `rollout r-… (running, started by alice)`.
    pub what: String,
}

impl RolloutStore {
    fn marker_key(&self, environment: &str) -> String {
        self.store.key(&format!("envs/{environment}/changes"))
    }

    fn operation_key(&self, environment: &str) -> String {
        self.store.key(&format!("envs/{environment}/operation"))
    }

    /// Reads the environment's marker: the claim to write with.
    pub async fn claim(&self, environment: &str) -> Result<Claim, StoreError> {
        Ok(Claim {
            marker: self.store.marker(self.marker_key(environment)).await?,
            environment: environment.to_owned(),
        })
    }

    /// Who holds `claim`'s environment now, leaving out rollout `except`
    /// (the one being reopened). `term` tells a running operation from one
    /// whose leader is gone (it is not a holder any more).
    pub async fn holder(
        &self,
        claim: &Claim,
        term: &Term,
        except: Option<&str>,
    ) -> Result<Option<Holder>, StoreError> {
        let environment = &claim.environment;
        let running = self.list_rollouts().await?.into_iter().find(|r| {
            r.environment == *environment && !r.state.is_terminal() && Some(r.id.as_str()) != except
        });
        if let Some(r) = running {
            return Ok(Some(Holder {
                what: format!("rollout {} ({}, started by {})", r.id, r.state.name(), r.started_by),
                id: r.id,
            }));
        }
        let Some(operation) = self.store.get_json::<Operation>(&self.operation_key(environment)).await?
        else {
            return Ok(None);
        };
        if operation.token != term.token.0 {
            tracing::warn!(
                environment = %environment,
                operation = %operation.id,
                "a backup {} started under an earlier leader no longer holds the environment",
                operation.kind
            );
            return Ok(None);
        }
        Ok(Some(Holder {
            what: format!(
                "backup {} of {} on {} (requested by {})",
                operation.kind, operation.backup, operation.host, operation.requested_by
            ),
            id: operation.id,
        }))
    }

    /// Saves `operation` as its environment's holder, if `claim` still stands.
    pub async fn begin_operation(
        &self,
        term: &Term,
        claim: &Claim,
        operation: &Operation,
    ) -> Result<bool, StoreError> {
        let puts =
            vec![Put::json(self.operation_key(&claim.environment), operation), claim.put(&operation.id)];
        self.store.put_fenced_if(term, puts, vec![claim.marker.unchanged()]).await
    }

    /// Releases the environment `operation` holds (when it still does).
    pub async fn end_operation(
        &self,
        term: &Term,
        environment: &str,
        operation: &Operation,
    ) -> Result<(), StoreError> {
        let key = self.operation_key(environment);
        let Some((_, revision)) = self.store.scan_revisions(&key).await?.into_iter().find(|(k, _)| *k == key)
        else {
            return Ok(());
        };
        if self.store.get_json::<Operation>(&key).await?.as_ref() != Some(operation) {
            return Ok(());
        }
        self.store
            .delete_fenced(term, vec![Delete { key: key.clone(), prefix: false }], Some((key, revision)))
            .await?;
        Ok(())
    }
}
