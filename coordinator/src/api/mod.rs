//! The gRPC services: the operator API and the agent channel.

pub mod agents;
pub mod backups;
pub mod error;
pub mod operator;

use std::sync::Arc;

use crate::config::Config;
use crate::dispatch::Dispatcher;
use crate::leadership::{Election, Leadership, Term};
use crate::registry::Registry;
use crate::rollout::engine::Engine;
use crate::rollout::events::EventBus;
use crate::store::Store;
use error::ApiError;

/// Everything the services share.
pub struct Shared {
    pub config: Arc<Config>,
    pub election: Election,
    pub registry: Registry,
    pub dispatcher: Dispatcher,
    pub store: Store,
    pub engine: Engine,
    pub bus: EventBus,
}

impl Shared {
    /// The current term if this coordinator leads, else where the leader is.
    pub fn leader_term(&self) -> Result<Term, ApiError> {
        match self.election.current() {
            Leadership::Leader(term) if !term.cancel.is_cancelled() => Ok(term),
            Leadership::Leader(_) => Err(ApiError::NotLeader { leader: None }),
            Leadership::Follower { leader, .. } => Err(ApiError::NotLeader { leader }),
        }
    }

    /// Refuses an environment this coordinator is not configured for.
    pub fn known_environment(&self, environment: &str) -> Result<(), ApiError> {
        if self.config.environments.iter().any(|e| e == environment) {
            return Ok(());
        }
        Err(ApiError::InvalidArgument(format!(
            "unknown environment {environment:?}; this coordinator knows: {}",
            self.config.environments.join(", ")
        )))
    }
}
