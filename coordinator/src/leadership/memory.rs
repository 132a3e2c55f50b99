//! Leadership a test hands out: no campaign, no lease.
//!
//! [`MemoryElection::grant`] makes one coordinator leader with the fencing
//! token the test chooses. Like a won etcd campaign, it puts the
//! coordinator's leader key into the shared [`MemoryKv`] with that token as
//! its create revision, after deleting the keys of earlier leaders (as their
//! leases expiring would). A coordinator deposed that way keeps believing
//! it leads until its next write is fenced, exactly as on etcd;
//! [`MemoryElection::revoke`] is the other path, a leader that notices it
//! lost its lease and steps down. Either way, once the term's `cancel`
//! fires the coordinator becomes a follower, as the etcd election makes it.

use std::sync::Arc;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{Election, Leadership};
use crate::fencing::{FencingToken, Term};
use crate::store::memory::MemoryKv;

/// One coordinator's view of an election held in memory; cheap to clone.
#[derive(Clone)]
pub struct MemoryElection {
    kv: Arc<MemoryKv>,
    /// The election name (keys live under `<name>/`).
    name: String,
    /// This coordinator's name: its key is `<name>/<member>`.
    member: String,
    tx: Arc<watch::Sender<Leadership>>,
}

impl MemoryElection {
    /// A follower of election `name` in `kv`, known as `member`.
    pub fn new(kv: Arc<MemoryKv>, name: &str, member: &str) -> Self {
        let (tx, _) = watch::channel(Leadership::Follower { leader: None, token: None });
        Self { kv, name: name.to_owned(), member: member.to_owned(), tx: Arc::new(tx) }
    }

    /// Makes this coordinator leader with `token`, deposing whoever led
    /// (their keys are deleted; their terms are not told). Returns the term.
    ///
    /// Needs a Tokio runtime: a task turns this coordinator into a follower
    /// when the term ends (e.g. because a write of it was fenced).
    pub fn grant(&self, token: FencingToken) -> Term {
        self.kv.delete_prefix(&format!("{}/", self.name));
        let key = format!("{}/{}", self.name, self.member).into_bytes();
        self.kv.create_with_revision(&key, self.member.as_bytes(), token.0);
        let term = Term { token, key, cancel: CancellationToken::new() };
        tracing::info!(member = %self.member, %token, "granted leadership");
        self.tx.send_replace(Leadership::Leader(term.clone()));
        let (tx, ended) = (Arc::clone(&self.tx), term.cancel.clone());
        tokio::spawn(async move {
            ended.cancelled().await;
            step_down(&tx, token);
        });
        term
    }

    /// Steps down as a leader that lost its lease does: the term ends, the
    /// leader key is deleted, and this coordinator becomes a follower.
    pub fn revoke(&self) {
        if let Leadership::Leader(term) = self.current() {
            term.cancel.cancel();
            self.kv.delete_prefix(&String::from_utf8_lossy(&term.key));
            step_down(&self.tx, term.token);
        }
    }
}

/// Makes the coordinator a follower if it still leads with `token`.
fn step_down(tx: &watch::Sender<Leadership>, token: FencingToken) {
    tx.send_if_modified(|state| {
        let ours = matches!(state, Leadership::Leader(term) if term.token == token);
        if ours {
            *state = Leadership::Follower { leader: None, token: None };
        }
        ours
    });
}

impl Election for MemoryElection {
    fn current(&self) -> Leadership {
        self.tx.borrow().clone()
    }

    fn subscribe(&self) -> watch::Receiver<Leadership> {
        self.tx.subscribe()
    }

    fn resign(&self) {
        self.revoke();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Put, Store, StoreError};

    #[tokio::test]
    async fn a_deposed_leader_is_fenced_by_the_store_and_a_revoked_one_steps_down() {
        let kv = Arc::new(MemoryKv::new());
        let store = Store::new(kv.clone(), "/runway");
        let a = MemoryElection::new(kv.clone(), &store.election_name(), "a");
        let b = MemoryElection::new(kv.clone(), &store.election_name(), "b");
        let mut changes = a.subscribe();

        let first = a.grant(FencingToken(10));
        assert!(
            matches!(&*changes.borrow_and_update(), Leadership::Leader(t) if t.token == FencingToken(10))
        );
        store.put_fenced(&first, vec![Put::json(store.key("k"), &1)]).await.unwrap();

        // b wins while a still believes it leads: a's next write is fenced.
        let second = b.grant(FencingToken(20));
        assert_eq!(a.term().map(|t| t.token), Some(FencingToken(10)), "a was not told");
        let refused = store.put_fenced(&first, vec![Put::json(store.key("k"), &2)]).await;
        assert!(matches!(refused, Err(StoreError::Fenced(10))), "{refused:?}");
        assert!(a.term().is_none(), "the refused write ended a's term");
        changes.changed().await.unwrap();
        assert!(matches!(&*changes.borrow_and_update(), Leadership::Follower { .. }), "a stepped down");
        store.put_fenced(&second, vec![Put::json(store.key("k"), &3)]).await.unwrap();

        b.resign();
        assert!(second.cancel.is_cancelled());
        assert!(matches!(b.current(), Leadership::Follower { .. }));
        let refused = store.put_fenced(&second, vec![Put::json(store.key("k"), &4)]).await;
        assert!(matches!(refused, Err(StoreError::Fenced(20))), "{refused:?}");
        assert_eq!(store.get_json::<i32>("/runway/k").await.unwrap(), Some(3));
    }
}
