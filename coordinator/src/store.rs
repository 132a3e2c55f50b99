//! A fenced key/value store: etcd in production, memory in tests.
//!
//! The store knows keys, bytes and how to (de)serialise a value as JSON or
//! protobuf; it does not know what a rollout is. The key layout lives with
//! the types saved under it (see `rollout::repo`).
//!
//! Every write goes through [`Store::put_fenced`] and from there through
//! [`Kv::put_fenced`]: an atomic batch that only applies while the leader
//! key still has the writer's create revision (its [`FencingToken`]). A
//! deposed leader's write fails with [`StoreError::Fenced`] and ends its
//! term at once.
//!
//! - [`etcd`]: the etcd backend.
//! - [`memory`]: an in-memory backend with the same fencing, for tests.
//!
//! [`FencingToken`]: crate::fencing::FencingToken

pub mod etcd;
pub mod memory;

use std::sync::Arc;

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::fencing::Term;

/// A store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// etcd is unreachable or erred; retrying is safe.
    #[error("etcd: {0}")]
    Etcd(etcd_client::Error),
    /// etcd did not answer in time; retrying is safe.
    #[error("etcd did not answer within {} s", etcd::CALL_TIMEOUT.as_secs())]
    Timeout,
    /// This coordinator is no longer the leader; it must stop acting.
    #[error("write refused: this coordinator is no longer the leader (fencing token {0} is stale)")]
    Fenced(u64),
    /// `0` kept moving while it was written (a concurrent prune or save);
    /// nothing is half-done that matters, and retrying is safe.
    #[error("{0} kept changing while it was written; retry")]
    Contended(String),
    /// The batched write that also carried this caller's data failed
    /// (the batch writer saw the error, here as text); nothing of the
    /// caller's was saved. Retrying is safe.
    #[error("the batched write failed: {0}")]
    Batch(String),
    /// A watch can no longer follow: it fell behind etcd's compaction (at
    /// this revision), was cancelled, or its stream broke. A full listing
    /// and a new watch recover; retrying is safe.
    #[error("the etcd watch ended: {0}")]
    WatchEnded(String),
    /// A stored value cannot be decoded; a person must look.
    #[error("stored value {key} is corrupt: {message}")]
    Corrupt {
        /// The key whose value cannot be decoded.
        key: String,
        /// What the decoder said.
        message: String,
    },
}

/// By hand, not `#[from]`: the message already holds etcd's error, so it
/// is not also the `source()` a reporter would print a second time.
impl From<etcd_client::Error> for StoreError {
    fn from(error: etcd_client::Error) -> Self {
        StoreError::Etcd(error)
    }
}

/// What every [`Kv`] call returns: a boxed future, so that the store can
/// be an `Arc<dyn Kv>` and nothing above it needs a type parameter.
pub type KvFuture<'a, T> = BoxFuture<'a, Result<T, StoreError>>;

/// One key and the bytes to write there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Put {
    /// Full key, prefix included.
    pub key: String,
    /// The encoded value.
    pub value: Vec<u8>,
}

impl Put {
    /// `value` as JSON under `key`.
    pub fn json<T: Serialize>(key: String, value: &T) -> Self {
        Self { key, value: serde_json::to_vec(value).expect("a saved value serializes to JSON") }
    }

    /// `value` protobuf-encoded under `key`.
    pub fn proto<M: prost::Message>(key: String, value: &M) -> Self {
        Self { key, value: value.encode_to_vec() }
    }

    /// Bytes of key and value: what counts against etcd's request limit.
    pub fn size(&self) -> usize {
        self.key.len() + self.value.len()
    }
}

/// A key every writer of some set of changes bumps, and the revision it
/// had when read: a write conditioned on [`Marker::unchanged`] applies only
/// if no other such write came in between (optimistic concurrency).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marker {
    /// Full key, prefix included.
    pub key: String,
    /// Its mod revision when read (0: absent).
    pub revision: i64,
}

impl Marker {
    /// The marker's new value, `value` as JSON, written with the change.
    pub fn put<T: Serialize>(&self, value: &T) -> Put {
        Put::json(self.key.clone(), value)
    }

    /// The write's condition: the marker did not move since it was read.
    pub fn unchanged(&self) -> (String, i64) {
        (self.key.clone(), self.revision)
    }
}

/// What to delete: one key, or every key under a prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delete {
    /// Full key (or prefix), store prefix included.
    pub key: String,
    /// Every key starting with `key`.
    pub prefix: bool,
}

/// One write under a watched prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Full key, prefix included.
    pub key: String,
    /// The value written; `None` when the key was deleted.
    pub value: Option<Vec<u8>>,
    /// The store revision of the write.
    pub revision: i64,
}

/// Every key under a prefix with its value, in key order, and the store
/// revision they were read at.
pub type Listing = (Vec<(String, Vec<u8>)>, i64);

/// Changes in revision order, as they happen. An `Err` item
/// ([`StoreError::WatchEnded`] and the like) ends the stream.
pub type ChangeStream = BoxStream<'static, Result<Vec<Change>, StoreError>>;

/// A key/value backend. Reads are plain; writes are fenced.
///
/// Implemented by [`etcd::EtcdKv`] and [`memory::MemoryKv`]; both refuse
/// a stale term's write with [`StoreError::Fenced`] and write nothing.
pub trait Kv: Send + Sync {
    /// The value at `key`.
    fn get<'a>(&'a self, key: &'a str) -> KvFuture<'a, Option<Vec<u8>>>;

    /// Every key starting with `prefix` that sorts at or after `from`, in
    /// key order, with its value.
    fn scan<'a>(&'a self, prefix: &'a str, from: &'a str) -> KvFuture<'a, Vec<(String, Vec<u8>)>>;

    /// The greatest key starting with `prefix`, if any.
    fn last_key<'a>(&'a self, prefix: &'a str) -> KvFuture<'a, Option<String>>;

    /// Applies every put atomically if `term.key` still has create
    /// revision `term.token`; otherwise writes nothing and fails with
    /// [`StoreError::Fenced`]. Callers go through [`Store::put_fenced`].
    fn put_fenced<'a>(&'a self, term: &'a Term, puts: Vec<Put>) -> KvFuture<'a, ()>;

    /// Every key starting with `prefix` with its value, in key order, and
    /// the store revision the listing was read at (a watch from the next
    /// revision on misses nothing and repeats nothing).
    fn scan_at<'a>(&'a self, prefix: &'a str) -> KvFuture<'a, Listing>;

    /// Every write under `prefix` from revision `from` on (inclusive).
    fn watch<'a>(&'a self, prefix: &'a str, from: i64) -> KvFuture<'a, ChangeStream>;

    /// Every key starting with `prefix`, in key order, with its mod
    /// revision (the revision of its last write); no values.
    fn scan_revisions<'a>(&'a self, prefix: &'a str) -> KvFuture<'a, Vec<(String, i64)>>;

    /// Applies every delete atomically if `term` still leads, and, when
    /// `unchanged` names a key and its mod revision, only if that key was
    /// not written since. `Ok(false)`: `unchanged` was written since, and
    /// nothing was deleted. A stale term fails with [`StoreError::Fenced`].
    fn delete_fenced<'a>(
        &'a self,
        term: &'a Term,
        deletes: Vec<Delete>,
        unchanged: Option<(String, i64)>,
    ) -> KvFuture<'a, bool>;

    /// Applies every put atomically if `term` still leads and every key of
    /// `unchanged` still has the given mod revision (0: the key is absent).
    /// `Ok(false)`: one of them moved, and nothing was written. A stale
    /// term fails with [`StoreError::Fenced`]. Callers go through
    /// [`Store::put_fenced_if`].
    fn put_fenced_if<'a>(
        &'a self,
        term: &'a Term,
        puts: Vec<Put>,
        unchanged: Vec<(String, i64)>,
    ) -> KvFuture<'a, bool>;

    /// The store's current revision (etcd's header revision).
    fn revision(&self) -> KvFuture<'_, i64>;

    /// Drops the history of every key before `revision` (etcd's compaction;
    /// see `[retention] compact`). Compacting to a revision that is already
    /// compacted is not an error.
    fn compact(&self, revision: i64) -> KvFuture<'_, ()>;
}

/// Handle to the store under one prefix; cheap to clone.
#[derive(Clone)]
pub struct Store {
    kv: Arc<dyn Kv>,
    prefix: String,
}

impl Store {
    /// Keys live under `prefix` (a trailing `/` is ignored).
    pub fn new(kv: Arc<dyn Kv>, prefix: &str) -> Self {
        Self { kv, prefix: prefix.trim_end_matches('/').to_owned() }
    }

    /// The full key of `path` (`<prefix>/<path>`).
    pub fn key(&self, path: &str) -> String {
        format!("{}/{path}", self.prefix)
    }

    /// The election name coordinators campaign under.
    pub fn election_name(&self) -> String {
        self.key("leader")
    }

    /// Applies `puts` atomically if `term` still leads. When it does not,
    /// the term is ended here, before the error is returned: someone else
    /// leads, so stop acting now, not at the next lease renewal.
    pub async fn put_fenced(&self, term: &Term, puts: Vec<Put>) -> Result<(), StoreError> {
        step_down_if_fenced(term, "write", self.kv.put_fenced(term, puts).await)
    }

    /// Deletes atomically if `term` still leads (see [`Kv::delete_fenced`]).
    pub async fn delete_fenced(
        &self,
        term: &Term,
        deletes: Vec<Delete>,
        unchanged: Option<(String, i64)>,
    ) -> Result<bool, StoreError> {
        step_down_if_fenced(term, "delete", self.kv.delete_fenced(term, deletes, unchanged).await)
    }

    /// Applies `puts` atomically if `term` still leads and nothing in
    /// `unchanged` moved (see [`Kv::put_fenced_if`]); a refused term is
    /// ended here, as in [`Self::put_fenced`].
    pub async fn put_fenced_if(
        &self,
        term: &Term,
        puts: Vec<Put>,
        unchanged: Vec<(String, i64)>,
    ) -> Result<bool, StoreError> {
        step_down_if_fenced(term, "write", self.kv.put_fenced_if(term, puts, unchanged).await)
    }

    /// `key` as a [`Marker`], with its current mod revision.
    pub async fn marker(&self, key: String) -> Result<Marker, StoreError> {
        let revision =
            self.kv.scan_revisions(&key).await?.into_iter().find(|(k, _)| *k == key).map_or(0, |(_, r)| r);
        Ok(Marker { key, revision })
    }

    /// The raw value at `key`.
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.kv.get(key).await
    }

    /// The store's current revision.
    pub async fn revision(&self) -> Result<i64, StoreError> {
        self.kv.revision().await
    }

    /// Drops history before `revision` (see [`Kv::compact`]).
    pub async fn compact(&self, revision: i64) -> Result<(), StoreError> {
        self.kv.compact(revision).await
    }

    /// Every value under `prefix` and the revision the listing was read at.
    pub async fn scan_at(&self, prefix: &str) -> Result<Listing, StoreError> {
        self.kv.scan_at(prefix).await
    }

    /// Every write under `prefix` from revision `from` on.
    pub async fn watch(&self, prefix: &str, from: i64) -> Result<ChangeStream, StoreError> {
        self.kv.watch(prefix, from).await
    }

    /// Every key under `prefix` with its mod revision.
    pub async fn scan_revisions(&self, prefix: &str) -> Result<Vec<(String, i64)>, StoreError> {
        self.kv.scan_revisions(prefix).await
    }

    /// The JSON value at `key`, decoded.
    pub async fn get_json<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StoreError> {
        self.kv.get(key).await?.map(|bytes| decode_json(key, &bytes)).transpose()
    }

    /// The protobuf value at `key`, decoded.
    pub async fn get_proto<M: prost::Message + Default>(&self, key: &str) -> Result<Option<M>, StoreError> {
        self.kv.get(key).await?.map(|bytes| decode_proto(key, &bytes)).transpose()
    }

    /// Every JSON value under `prefix`, in key order.
    pub async fn list_json<T: DeserializeOwned>(&self, prefix: &str) -> Result<Vec<T>, StoreError> {
        let entries = self.kv.scan(prefix, prefix).await?;
        entries.iter().map(|(key, bytes)| decode_json(key, bytes)).collect()
    }

    /// Every protobuf value under `prefix` from key `from` on, in key order.
    pub async fn list_proto<M: prost::Message + Default>(
        &self,
        prefix: &str,
        from: &str,
    ) -> Result<Vec<M>, StoreError> {
        let entries = self.kv.scan(prefix, from).await?;
        entries.iter().map(|(key, bytes)| decode_proto(key, bytes)).collect()
    }

    /// The greatest key under `prefix`, if any.
    pub async fn last_key(&self, prefix: &str) -> Result<Option<String>, StoreError> {
        self.kv.last_key(prefix).await
    }
}

/// Decodes a JSON value read at `key`.
pub fn decode_json<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes)
        .map_err(|e| StoreError::Corrupt { key: key.to_owned(), message: e.to_string() })
}

fn decode_proto<M: prost::Message + Default>(key: &str, bytes: &[u8]) -> Result<M, StoreError> {
    M::decode(bytes).map_err(|e| StoreError::Corrupt { key: key.to_owned(), message: e.to_string() })
}

/// A fenced operation refused because `term` no longer leads ends the
/// term here, whichever operation it was (`what`: write or delete).
fn step_down_if_fenced<T>(term: &Term, what: &str, result: Result<T, StoreError>) -> Result<T, StoreError> {
    if let Err(StoreError::Fenced(_)) = &result {
        tracing::warn!(token = %term.token, "a fenced {what} was refused; stepping down");
        term.cancel.cancel();
    }
    result
}
