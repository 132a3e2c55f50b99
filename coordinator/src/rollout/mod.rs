//! Rollouts: the runbook as a saved state machine.
//!
//! - [`plan`]: the default plan for an environment's agents.
//! - [`target`]: a DB step's target, `host` or `host/database`, parsed in one place.
//! - [`databases`]: many databases in one rollout: their order, states and restores.
//! - [`command`]: the typed command a step sends each host, and its id.
//! - [`repo`]: rollouts, bundles and events in the store (the key layout).
//! - [`bundles`]: bundles stored once by digest, in chunks below etcd's
//!   value limit.
//! - [`events`]: the numbered event log watchers follow.
//! - [`exclusive`]: one change per environment at a time (who holds it).
//! - [`inventory`]: each environment's known agents.
//! - [`feed`]: how the leader learns of new and changed rollouts (an etcd
//!   watch, not a rescan).
//! - [`retention`]: which finished rollouts and bundles etcd keeps.
//! - [`recovery`]: the way back after a failed step, by what it changed.
//! - [`approval`]: the approval gate's rules: how many approvals, who, what
//!   the saved decisions add up to.
//! - [`audit`]: the audit log of operator actions and how rollouts and
//!   backup operations ended (here because the engine records each
//!   rollout's end; the operator API records the rest).
//! - [`restart`]: the restart phase as policy: hosts by label, canaries
//!   and batches, failures tolerated, the smoke and watch steps.
//! - [`validate`]: the operator strings a rollout request may carry.
//! - `outcome`: how a step's commands ended, as the engine reads it.
//! - `trace`: a rollout's spans, one trace per rollout across leaders.
//! - [`engine`]: runs and resumes rollouts while this coordinator leads.
//!
//! The records themselves (rollout, step, kinds, states) are in
//! [`crate::model`].

pub mod approval;
pub mod audit;
pub mod bundles;
pub mod command;
pub mod databases;
pub mod engine;
pub mod events;
pub mod exclusive;
pub mod feed;
pub mod inventory;
mod outcome;
pub mod plan;
pub mod recovery;
pub mod repo;
pub mod restart;
pub mod retention;
pub mod target;
mod trace;
pub mod validate;
