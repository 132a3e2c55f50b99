//! Rollout state in etcd.
//!
//! Layout under the configured prefix (default `/runway`):
//!
//! | key | value |
//! |---|---|
//! | `leader/…` | election keys (see [`crate::leadership`]) |
//! | `rollouts/<id>` | [`RolloutRecord`] as JSON |
//! | `bundles/<digest>` | the bundle, protobuf-encoded |
//! | `events/<id>/<seq, 20 digits>` | [`RolloutEvent`], protobuf-encoded |
//!
//! Every write goes through [`Store::put_fenced`]: an etcd transaction that
//! only applies while the leader key still has the writer's create
//! revision. A deposed leader's write fails with [`StoreError::Fenced`].

use etcd_client::{Client, Compare, CompareOp, GetOptions, SortOrder, SortTarget, Txn, TxnOp};
use prost::Message;
use runway_proto::v1::{Bundle, RolloutEvent};

use crate::leadership::Term;
use crate::rollout::record::RolloutRecord;

/// How long one etcd call may take. (Not a client-wide timeout: that would
/// also cut the election's long-running campaign and keep-alive streams.)
const CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Bounds an etcd call by [`CALL_TIMEOUT`].
async fn timed<T>(
    call: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, StoreError> {
    tokio::time::timeout(CALL_TIMEOUT, call).await.map_err(|_| StoreError::Timeout)?.map_err(StoreError::from)
}

/// A store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// etcd is unreachable or erred; retrying is safe.
    #[error("etcd: {0}")]
    Etcd(#[from] etcd_client::Error),
    /// etcd did not answer in time; retrying is safe.
    #[error("etcd did not answer within {} s", CALL_TIMEOUT.as_secs())]
    Timeout,
    /// This coordinator is no longer the leader; it must stop acting.
    #[error("write refused: this coordinator is no longer the leader (fencing token {0} is stale)")]
    Fenced(u64),
    /// A stored value cannot be decoded; a person must look.
    #[error("stored value {key} is corrupt: {message}")]
    Corrupt { key: String, message: String },
}

/// Handle to the store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    client: Client,
    prefix: String,
}

impl Store {
    pub fn new(client: Client, prefix: &str) -> Self {
        Self { client, prefix: prefix.trim_end_matches('/').to_owned() }
    }

    /// The election name coordinators campaign under.
    pub fn election_name(&self) -> String {
        format!("{}/leader", self.prefix)
    }

    fn rollout_key(&self, id: &str) -> String {
        format!("{}/rollouts/{id}", self.prefix)
    }

    fn bundle_key(&self, digest: &str) -> String {
        format!("{}/bundles/{digest}", self.prefix)
    }

    fn events_prefix(&self, id: &str) -> String {
        format!("{}/events/{id}/", self.prefix)
    }

    fn event_key(&self, id: &str, seq: u64) -> String {
        format!("{}{seq:020}", self.events_prefix(id))
    }

    /// Applies `puts` atomically if `term` still leads.
    async fn put_fenced(&self, term: &Term, puts: Vec<(String, Vec<u8>)>) -> Result<(), StoreError> {
        let txn = Txn::new()
            .when(vec![Compare::create_revision(term.key.clone(), CompareOp::Equal, term.token.0 as i64)])
            .and_then(puts.into_iter().map(|(k, v)| TxnOp::put(k, v, None)).collect::<Vec<_>>());
        let response = timed(self.client.kv_client().txn(txn)).await?;
        if response.succeeded() {
            Ok(())
        } else {
            // Someone else leads: stop acting now, not at the next renewal.
            tracing::warn!(token = %term.token, "a fenced write was refused; stepping down");
            term.cancel.cancel();
            Err(StoreError::Fenced(term.token.0))
        }
    }

    /// Records a new rollout together with its bundle.
    pub async fn create_rollout(
        &self,
        term: &Term,
        record: &RolloutRecord,
        bundle: &Bundle,
    ) -> Result<(), StoreError> {
        self.put_fenced(
            term,
            vec![
                (self.bundle_key(&bundle.digest), bundle.encode_to_vec()),
                (self.rollout_key(&record.id), record.to_json()),
            ],
        )
        .await
    }

    /// Saves a rollout's new state.
    pub async fn put_rollout(&self, term: &Term, record: &RolloutRecord) -> Result<(), StoreError> {
        self.put_fenced(term, vec![(self.rollout_key(&record.id), record.to_json())]).await
    }

    /// Appends one event to a rollout's log, together with the rollout's
    /// new state when the event reports a transition: one transaction, so
    /// a new leader never finds a transition without its event.
    pub async fn append_event(
        &self,
        term: &Term,
        event: &RolloutEvent,
        record: Option<&RolloutRecord>,
    ) -> Result<(), StoreError> {
        let mut puts = vec![(self.event_key(&event.rollout_id, event.seq), event.encode_to_vec())];
        if let Some(record) = record {
            puts.push((self.rollout_key(&record.id), record.to_json()));
        }
        self.put_fenced(term, puts).await
    }

    pub async fn get_rollout(&self, id: &str) -> Result<Option<RolloutRecord>, StoreError> {
        let key = self.rollout_key(id);
        let response = timed(self.client.kv_client().get(key.clone(), None)).await?;
        response.kvs().first().map(|kv| RolloutRecord::from_json(&key, kv.value())).transpose()
    }

    /// Every rollout, oldest first.
    pub async fn list_rollouts(&self) -> Result<Vec<RolloutRecord>, StoreError> {
        let prefix = format!("{}/rollouts/", self.prefix);
        let response =
            timed(self.client.kv_client().get(prefix.clone(), Some(GetOptions::new().with_prefix()))).await?;
        let mut records = response
            .kvs()
            .iter()
            .map(|kv| RolloutRecord::from_json(&String::from_utf8_lossy(kv.key()), kv.value()))
            .collect::<Result<Vec<_>, _>>()?;
        records.sort_by_key(|r| r.created_unix_ms);
        Ok(records)
    }

    pub async fn get_bundle(&self, digest: &str) -> Result<Option<Bundle>, StoreError> {
        let key = self.bundle_key(digest);
        let response = timed(self.client.kv_client().get(key.clone(), None)).await?;
        response
            .kvs()
            .first()
            .map(|kv| {
                Bundle::decode(kv.value()).map_err(|e| StoreError::Corrupt { key, message: e.to_string() })
            })
            .transpose()
    }

    /// Events of rollout `id` with `seq >= from_seq`, in order.
    pub async fn events(&self, id: &str, from_seq: u64) -> Result<Vec<RolloutEvent>, StoreError> {
        let start = self.event_key(id, from_seq.max(1));
        let end = prefix_end(&self.events_prefix(id));
        let response =
            timed(self.client.kv_client().get(start, Some(GetOptions::new().with_range(end)))).await?;
        response
            .kvs()
            .iter()
            .map(|kv| {
                RolloutEvent::decode(kv.value()).map_err(|e| StoreError::Corrupt {
                    key: String::from_utf8_lossy(kv.key()).into_owned(),
                    message: e.to_string(),
                })
            })
            .collect()
    }

    /// The highest event sequence number of rollout `id` (0 if none).
    pub async fn last_event_seq(&self, id: &str) -> Result<u64, StoreError> {
        let options = GetOptions::new()
            .with_prefix()
            .with_sort(SortTarget::Key, SortOrder::Descend)
            .with_limit(1)
            .with_keys_only();
        let prefix = self.events_prefix(id);
        let response = timed(self.client.kv_client().get(prefix.clone(), Some(options))).await?;
        Ok(response
            .kvs()
            .first()
            .and_then(|kv| {
                String::from_utf8_lossy(kv.key()).strip_prefix(&prefix).and_then(|s| s.parse().ok())
            })
            .unwrap_or(0))
    }
}

/// The first key after every key starting with `prefix`.
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}
