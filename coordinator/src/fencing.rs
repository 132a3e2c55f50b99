//! What a leader holds while it leads: its [`Term`] and the term's
//! [`FencingToken`].
//!
//! This module depends on nothing else in the crate: the election hands
//! terms out, the store compares them on every write, and the rollout
//! runner stamps their token on every command.

use tokio_util::sync::CancellationToken;

/// The create revision of the leader's election key.
///
/// Leases alone cannot keep a paused or partitioned old leader from acting
/// after its lease expired (it does not know yet). The token can: etcd
/// rejects a write that compares an old token, and agents refuse commands
/// whose token is lower than one they have seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FencingToken(pub u64);

impl std::fmt::Display for FencingToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// A leadership term: valid until `cancel` fires.
#[derive(Debug, Clone)]
pub struct Term {
    /// The create revision of [`Term::key`]; compared by every write.
    pub token: FencingToken,
    /// The election key this term holds (what the store compares).
    pub key: Vec<u8>,
    /// Cancelled when the term ends; everything the leader runs hangs off it.
    pub cancel: CancellationToken,
}
