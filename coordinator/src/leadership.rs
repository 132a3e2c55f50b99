//! Leader election: who leads, and the [`Term`] the leader holds.
//!
//! Coordinators watch an [`Election`] for [`Leadership`] changes. The etcd
//! implementation ([`etcd::EtcdElection`]) campaigns for real; the
//! in-memory one ([`memory::MemoryElection`]) lets a test grant and revoke
//! leadership with the fencing token it chooses, over a
//! [`MemoryKv`](crate::store::memory::MemoryKv) whose fenced writes compare
//! the same leader key.
//!
//! - [`etcd`]: campaigning in etcd, lease renewal with a deadline.
//! - [`memory`]: leadership a test hands out.

pub mod etcd;
pub mod memory;

use tokio::sync::watch;

use crate::fencing::{FencingToken, Term};

/// What this coordinator knows about leadership right now.
#[derive(Debug, Clone)]
pub enum Leadership {
    /// This coordinator leads.
    Leader(Term),
    /// Another coordinator leads (its address and token, if known), or
    /// nobody yet.
    Follower {
        /// The leader's advertised address.
        leader: Option<String>,
        /// The leader's fencing token.
        token: Option<FencingToken>,
    },
}

impl Leadership {
    /// This coordinator's token when it leads, else the leader's if known.
    pub fn token(&self) -> Option<FencingToken> {
        match self {
            Self::Leader(term) => Some(term.token),
            Self::Follower { token, .. } => *token,
        }
    }
}

/// A source of leadership for one coordinator.
///
/// Whoever holds [`Leadership::Leader`] must stop acting the moment its
/// term's `cancel` fires; the election sends [`Leadership::Follower`] right
/// after.
pub trait Election: Send + Sync {
    /// Leadership right now.
    fn current(&self) -> Leadership;

    /// Leadership now and at every change.
    fn subscribe(&self) -> watch::Receiver<Leadership>;

    /// Steps down if this coordinator leads: the term ends at once. The
    /// coordinator may be elected again later.
    fn resign(&self);

    /// The current term, if this coordinator leads and the term has not
    /// ended yet.
    fn term(&self) -> Option<Term> {
        match self.current() {
            Leadership::Leader(term) if !term.cancel.is_cancelled() => Some(term),
            _ => None,
        }
    }
}
