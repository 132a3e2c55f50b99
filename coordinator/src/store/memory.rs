//! An in-memory backend of the [`Store`](super::Store), for tests.
//!
//! It keeps what fencing needs from etcd: every key has a create revision,
//! and [`Kv::put_fenced`] applies only while the writer's leader key
//! exists with the writer's token as its create revision. So a stale
//! term's write fails exactly as it does on etcd: [`StoreError::Fenced`],
//! nothing written.
//!
//! The in-memory election (`leadership::memory`) creates and deletes leader
//! keys through [`MemoryKv::create_with_revision`] and
//! [`MemoryKv::delete_prefix`], as etcd's election API does on the server.

use std::collections::BTreeMap;
use std::sync::Mutex;

use futures::future::FutureExt;
use futures::stream::StreamExt;
use tokio::sync::broadcast;

use super::{Change, ChangeStream, Delete, Kv, KvFuture, Listing, Put, StoreError};
use crate::fencing::Term;

#[derive(Debug, Clone)]
struct Entry {
    value: Vec<u8>,
    create_revision: u64,
    mod_revision: u64,
}

#[derive(Debug)]
struct State {
    entries: BTreeMap<String, Entry>,
    /// The store's revision: bumped once per write, like etcd's.
    revision: u64,
    /// The revision history was last compacted to (0: never).
    compacted: u64,
    /// Every write, for watches that start in the past.
    history: Vec<Change>,
    /// Writes as they happen, for watches that caught up. Sent under the
    /// state lock, so a watch that reads `history` and subscribes under it
    /// misses nothing.
    live: broadcast::Sender<Change>,
}

/// Keys and values in memory, with etcd's create revisions and a watch.
#[derive(Debug)]
pub struct MemoryKv {
    state: Mutex<State>,
}

impl Default for MemoryKv {
    fn default() -> Self {
        let (live, _) = broadcast::channel(4096);
        Self {
            state: Mutex::new(State {
                entries: BTreeMap::new(),
                revision: 0,
                compacted: 0,
                history: Vec::new(),
                live,
            }),
        }
    }
}

impl State {
    fn record(&mut self, key: &str, value: Option<&[u8]>) {
        let change =
            Change { key: key.to_owned(), value: value.map(<[u8]>::to_vec), revision: self.revision as i64 };
        let _ = self.live.send(change.clone());
        self.history.push(change);
    }
}

impl MemoryKv {
    /// An empty store at revision 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// Ends every watch open now, as a broken etcd stream does (tests of
    /// the recovery: a full listing and a new watch).
    pub fn break_watches(&self) {
        let (live, _) = broadcast::channel(4096);
        self.state.lock().expect("memory kv lock").live = live;
    }

    /// Creates `key` with create revision `revision`, unfenced: what etcd
    /// does when a campaign wins. Later writes get higher revisions.
    pub fn create_with_revision(&self, key: &[u8], value: &[u8], revision: u64) {
        let mut state = self.state.lock().expect("memory kv lock");
        state.revision = state.revision.max(revision);
        let entry = Entry { value: value.to_vec(), create_revision: revision, mod_revision: revision };
        let key = String::from_utf8_lossy(key).into_owned();
        state.record(&key, Some(value));
        state.entries.insert(key, entry);
    }

    /// Makes `/runway/leader/<token>` the leader key, created at revision
    /// `token`, and returns the term it gives: a store to write to as
    /// leader in tests.
    pub fn lead(&self, token: u64) -> Term {
        let key = format!("/runway/leader/{token}");
        self.create_with_revision(key.as_bytes(), b"c1", token);
        Term {
            token: crate::fencing::FencingToken(token),
            key: key.into_bytes(),
            cancel: tokio_util::sync::CancellationToken::new(),
        }
    }

    /// Deletes every key under `prefix`, unfenced: what etcd does when the
    /// leases holding them expire or are revoked.
    pub fn delete_prefix(&self, prefix: &str) {
        let mut state = self.state.lock().expect("memory kv lock");
        state.revision += 1;
        let gone: Vec<String> = state.entries.keys().filter(|key| key.starts_with(prefix)).cloned().collect();
        for key in gone {
            state.entries.remove(&key);
            state.record(&key, None);
        }
    }

    /// The revision [`Kv::compact`] last compacted to (0: never).
    pub fn compacted(&self) -> u64 {
        self.locked(|state| state.compacted)
    }

    /// Every key, in order (for test assertions on the key layout).
    pub fn keys(&self) -> Vec<String> {
        self.state.lock().expect("memory kv lock").entries.keys().cloned().collect()
    }

    fn locked<T>(&self, read: impl FnOnce(&mut State) -> T) -> T {
        read(&mut self.state.lock().expect("memory kv lock"))
    }
}

impl Kv for MemoryKv {
    fn get<'a>(&'a self, key: &'a str) -> KvFuture<'a, Option<Vec<u8>>> {
        let value = self.locked(|state| state.entries.get(key).map(|e| e.value.clone()));
        futures::future::ready(Ok(value)).boxed()
    }

    fn scan<'a>(&'a self, prefix: &'a str, from: &'a str) -> KvFuture<'a, Vec<(String, Vec<u8>)>> {
        let from = if from < prefix { prefix } else { from };
        let entries = self.locked(|state| {
            state
                .entries
                .range(from.to_owned()..)
                .take_while(|(key, _)| key.starts_with(prefix))
                .map(|(key, entry)| (key.clone(), entry.value.clone()))
                .collect()
        });
        futures::future::ready(Ok(entries)).boxed()
    }

    fn last_key<'a>(&'a self, prefix: &'a str) -> KvFuture<'a, Option<String>> {
        let last = self.locked(|state| {
            state
                .entries
                .range(prefix.to_owned()..)
                .take_while(|(key, _)| key.starts_with(prefix))
                .last()
                .map(|(key, _)| key.clone())
        });
        futures::future::ready(Ok(last)).boxed()
    }

    fn scan_at<'a>(&'a self, prefix: &'a str) -> KvFuture<'a, Listing> {
        let listed = self.locked(|state| {
            let entries = state
                .entries
                .range(prefix.to_owned()..)
                .take_while(|(key, _)| key.starts_with(prefix))
                .map(|(key, entry)| (key.clone(), entry.value.clone()))
                .collect();
            (entries, state.revision as i64)
        });
        futures::future::ready(Ok(listed)).boxed()
    }

    fn watch<'a>(&'a self, prefix: &'a str, from: i64) -> KvFuture<'a, ChangeStream> {
        let (past, live) = self.locked(|state| {
            let past: Vec<Change> = state
                .history
                .iter()
                .filter(|c| c.revision >= from && c.key.starts_with(prefix))
                .cloned()
                .collect();
            (past, state.live.subscribe())
        });
        let prefix = prefix.to_owned();
        // Each write's changes in one item, as etcd sends them.
        let past = futures::stream::iter(group_by_revision(past).into_iter().map(Ok));
        let live = futures::stream::unfold(Some(live), move |live| {
            let prefix = prefix.clone();
            async move {
                let mut live = live?;
                loop {
                    match live.recv().await {
                        Ok(change) if change.key.starts_with(&prefix) => {
                            return Some((Ok(vec![change]), Some(live)));
                        }
                        Ok(_) => continue,
                        Err(e) => return Some((Err(StoreError::WatchEnded(e.to_string())), None)),
                    }
                }
            }
        });
        futures::future::ready(Ok(past.chain(live).boxed())).boxed()
    }

    fn scan_revisions<'a>(&'a self, prefix: &'a str) -> KvFuture<'a, Vec<(String, i64)>> {
        let entries = self.locked(|state| {
            state
                .entries
                .range(prefix.to_owned()..)
                .take_while(|(key, _)| key.starts_with(prefix))
                .map(|(key, entry)| (key.clone(), entry.mod_revision as i64))
                .collect()
        });
        futures::future::ready(Ok(entries)).boxed()
    }

    fn delete_fenced<'a>(
        &'a self,
        term: &'a Term,
        deletes: Vec<Delete>,
        unchanged: Option<(String, i64)>,
    ) -> KvFuture<'a, bool> {
        let leader_key = String::from_utf8_lossy(&term.key);
        let result = self.locked(|state| {
            if state.entries.get(leader_key.as_ref()).map(|e| e.create_revision) != Some(term.token.0) {
                return Err(StoreError::Fenced(term.token.0));
            }
            if let Some((key, revision)) = &unchanged
                && state.mod_revision(key) != *revision
            {
                return Ok(false);
            }
            state.revision += 1;
            for delete in deletes {
                let gone: Vec<String> = if delete.prefix {
                    state.entries.keys().filter(|key| key.starts_with(&delete.key)).cloned().collect()
                } else {
                    state.entries.contains_key(&delete.key).then(|| delete.key.clone()).into_iter().collect()
                };
                for key in gone {
                    state.entries.remove(&key);
                    state.record(&key, None);
                }
            }
            Ok(true)
        });
        futures::future::ready(result).boxed()
    }

    fn put_fenced<'a>(&'a self, term: &'a Term, puts: Vec<Put>) -> KvFuture<'a, ()> {
        let result = self.put_fenced_if(term, puts, Vec::new());
        result.map(|written| written.map(drop)).boxed()
    }

    fn put_fenced_if<'a>(
        &'a self,
        term: &'a Term,
        puts: Vec<Put>,
        unchanged: Vec<(String, i64)>,
    ) -> KvFuture<'a, bool> {
        let leader_key = String::from_utf8_lossy(&term.key);
        let result = self.locked(|state| {
            let leads =
                state.entries.get(leader_key.as_ref()).map(|e| e.create_revision) == Some(term.token.0);
            if !leads {
                return Err(StoreError::Fenced(term.token.0));
            }
            if unchanged.iter().any(|(key, revision)| state.mod_revision(key) != *revision) {
                return Ok(false);
            }
            state.revision += 1;
            let revision = state.revision;
            for put in puts {
                let create_revision =
                    state.entries.get(&put.key).map_or(revision, |existing| existing.create_revision);
                state.record(&put.key, Some(&put.value));
                state
                    .entries
                    .insert(put.key, Entry { value: put.value, create_revision, mod_revision: revision });
            }
            Ok(true)
        });
        futures::future::ready(result).boxed()
    }

    fn revision(&self) -> KvFuture<'_, i64> {
        let revision = self.locked(|state| state.revision as i64);
        futures::future::ready(Ok(revision)).boxed()
    }

    fn compact(&self, revision: i64) -> KvFuture<'_, ()> {
        self.locked(|state| state.compacted = state.compacted.max(revision.max(0) as u64));
        futures::future::ready(Ok(())).boxed()
    }
}

impl State {
    /// `key`'s mod revision, 0 when it is absent (as etcd compares it).
    fn mod_revision(&self, key: &str) -> i64 {
        self.entries.get(key).map_or(0, |e| e.mod_revision as i64)
    }
}

/// `changes` (in revision order) grouped by revision.
fn group_by_revision(changes: Vec<Change>) -> Vec<Vec<Change>> {
    let mut groups: Vec<Vec<Change>> = Vec::new();
    for change in changes {
        match groups.last_mut() {
            Some(group) if group[0].revision == change.revision => group.push(change),
            _ => groups.push(vec![change]),
        }
    }
    groups
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::fencing::FencingToken;
    use crate::store::Store;

    fn lead(kv: &MemoryKv, key: &str, token: u64) -> Term {
        kv.delete_prefix("/runway/leader/");
        kv.create_with_revision(key.as_bytes(), b"http://c", token);
        Term { token: FencingToken(token), key: key.as_bytes().to_vec(), cancel: CancellationToken::new() }
    }

    #[tokio::test]
    async fn a_stale_terms_write_is_refused_ends_the_term_and_writes_nothing() {
        let kv = Arc::new(MemoryKv::new());
        let store = Store::new(kv.clone(), "/runway/");
        let first = lead(&kv, "/runway/leader/a", 7);
        store.put_fenced(&first, vec![Put::json(store.key("x"), &1)]).await.unwrap();
        assert_eq!(store.get_json::<i32>("/runway/x").await.unwrap(), Some(1));

        let second = lead(&kv, "/runway/leader/b", 9);
        let refused = store
            .put_fenced(&first, vec![Put::json(store.key("x"), &2), Put::json(store.key("y"), &2)])
            .await;
        assert!(matches!(refused, Err(StoreError::Fenced(7))), "{refused:?}");
        assert!(first.cancel.is_cancelled(), "a refused write ends the term");
        assert_eq!(store.get_json::<i32>("/runway/x").await.unwrap(), Some(1));
        assert_eq!(store.get_json::<i32>("/runway/y").await.unwrap(), None);

        store.put_fenced(&second, vec![Put::json(store.key("x"), &3)]).await.unwrap();
        assert_eq!(store.get_json::<i32>("/runway/x").await.unwrap(), Some(3));
        assert!(!second.cancel.is_cancelled());
    }

    #[tokio::test]
    async fn a_term_whose_token_is_not_the_keys_create_revision_is_refused() {
        let kv = Arc::new(MemoryKv::new());
        let store = Store::new(kv.clone(), "/runway");
        let mut term = lead(&kv, "/runway/leader/a", 7);
        term.token = FencingToken(6);
        let refused = store.put_fenced(&term, vec![Put::json(store.key("x"), &1)]).await;
        assert!(matches!(refused, Err(StoreError::Fenced(6))), "{refused:?}");
    }

    #[tokio::test]
    async fn scans_stay_inside_their_prefix_and_start_where_asked() {
        let kv = Arc::new(MemoryKv::new());
        let store = Store::new(kv.clone(), "/runway");
        let term = lead(&kv, "/runway/leader/a", 1);
        let puts = ["e/a/1", "e/a/2", "e/a/3", "e/ab/1", "e/b/1"]
            .map(|k| Put::json(store.key(k), &k.to_owned()))
            .to_vec();
        store.put_fenced(&term, puts).await.unwrap();
        let all: Vec<String> = store.list_json("/runway/e/a/").await.unwrap();
        assert_eq!(all, ["e/a/1", "e/a/2", "e/a/3"]);
        let from: Vec<(String, Vec<u8>)> = kv.scan("/runway/e/a/", "/runway/e/a/2").await.unwrap();
        assert_eq!(from.len(), 2);
        assert_eq!(store.last_key("/runway/e/a/").await.unwrap().as_deref(), Some("/runway/e/a/3"));
        assert_eq!(store.last_key("/runway/e/c/").await.unwrap(), None);
    }
}
