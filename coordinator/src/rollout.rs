//! Rollouts: the runbook as a saved state machine.
//!
//! - [`steps`]: the default steps for an environment's agents.
//! - [`target`]: a DB step's target, `host` or `host/database`, parsed in one place.
//! - [`databases`]: many databases in one rollout: their order, states and restores.
//! - [`command`]: the typed command a step sends each host, and its id.
//! - [`recovery`]: the way back after a failed step, by what it changed.
//! - [`approval`]: the approval gate's rules: how many approvals, who, what
//!   the saved decisions add up to.
//! - [`restart`]: the restart phase as policy: hosts by label, canaries
//!   and batches, failures tolerated, the smoke and watch steps.
//! - [`validate`]: the operator strings a rollout request may carry.
//! - `outcome`: how a step's commands ended, as the runner reads it.
//! - `trace`: a rollout's spans, one trace per rollout across leaders.
//! - [`runner`]: runs and resumes rollouts while this coordinator leads.
//!
//! The records themselves (rollout, step, kinds, states) are in
//! [`crate::model`]; how they are saved (keys, events, bundles, claims,
//! the audit log) is in [`crate::repo`].

pub mod approval;
pub mod command;
pub mod databases;
mod outcome;
pub mod recovery;
pub mod restart;
pub mod runner;
pub mod steps;
pub mod target;
mod trace;
pub mod validate;
