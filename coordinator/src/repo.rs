//! Rollouts, bundles and events as saved in the [`Store`]: the key layout,
//! and which encoding each value has.
//!
//! - [`bundles`]: bundles stored once by digest, in chunks below etcd's
//!   value limit.
//! - [`events`]: the numbered event log watchers follow.
//! - [`feed`]: how the leader learns of new and changed rollouts (an etcd
//!   watch, not a rescan).
//! - [`exclusive`]: one change per environment at a time (who holds it).
//! - [`inventory`]: each environment's known agents.
//! - [`audit`]: the audit log of operator actions and how rollouts and
//!   backup operations ended.
//! - [`retention`]: which finished rollouts and bundles etcd keeps.
//!
//! Layout under the configured prefix (default `/runway`):
//!
//! | key | value |
//! |---|---|
//! | `leader/…` | election keys (see [`crate::leadership`]) |
//! | `rollouts/<id>` | [`RolloutRecord`] as JSON |
//! | `bundles/<digest>/…` | the bundle in chunks, committed by a meta record (see [`bundles`]) |
//! | `events/<id>/<seq, 20 digits>` | [`RolloutEvent`], protobuf-encoded |
//! | `cancels/<id>` | an operator's cancel request (JSON: when), saved before it is acknowledged |
//! | `decisions/<id>/<operator>` | an operator's approval or rejection ([`Decision`] as JSON), saved before it is acknowledged |
//! | `audit/…` | the audit log (see [`audit`]) |
//! | `inventory/<env>/<name>` | a known agent (see [`inventory`]) |
//! | `envs/<env>/changes` | bumped by every claim of the environment (see [`exclusive`]) |
//! | `envs/<env>/operation` | the backup operation holding the environment while it runs |
//! | `notify/<id>/<webhook>` | where a webhook stands with a rollout's notifications (see [`crate::webhooks`]) |
//!
//! Every write is fenced by the writer's [`Term`] (see [`Store::put_fenced`]).
//! Writes that an operator's action makes take that action's audit entry
//! (an [`AuditLog::put`]) into the same transaction.

pub mod audit;
pub mod bundles;
pub mod events;
pub mod exclusive;
pub mod feed;
pub mod inventory;
pub mod retention;

use runway_proto::v1::{Bundle, RolloutEvent};

use self::audit::AuditLog;
use self::bundles::{Bundles, StoredBundle};
use crate::fencing::Term;
use crate::model::{Decision, RolloutRecord};
use crate::store::{Delete, Marker, Put, Store, StoreError};

/// Typed access to saved rollouts; cheap to clone.
#[derive(Clone)]
pub struct RolloutStore {
    pub(super) store: Store,
}

impl RolloutStore {
    /// Rollouts saved in `store`.
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    fn rollout_key(&self, id: &str) -> String {
        self.store.key(&format!("rollouts/{id}"))
    }

    fn bundles(&self) -> Bundles {
        Bundles::new(self.store.clone())
    }

    fn cancel_key(&self, id: &str) -> String {
        self.store.key(&format!("cancels/{id}"))
    }

    fn decisions_prefix(&self, id: &str) -> String {
        self.store.key(&format!("decisions/{id}/"))
    }

    /// The audit log kept in the same store.
    pub fn audit(&self) -> AuditLog {
        AuditLog::new(self.store.clone())
    }

    fn events_prefix(&self, id: &str) -> String {
        self.store.key(&format!("events/{id}/"))
    }

    fn event_key(&self, id: &str, seq: u64) -> String {
        format!("{}{seq:020}", self.events_prefix(id))
    }

    /// Records a new rollout together with its bundle (and the operator's
    /// `audit` entry): the bundle's chunks first unless stored already,
    /// then the rollout in the transaction that commits the bundle.
    /// `claim` is the environment's marker with its new value (see
    /// [`exclusive`]): `false` when the marker moved (another
    /// change claimed the environment first), and nothing of the rollout
    /// was saved.
    pub async fn create_rollout(
        &self,
        term: &Term,
        record: &RolloutRecord,
        bundle: &Bundle,
        audit: Option<Put>,
        claim: (&Marker, Put),
    ) -> Result<bool, StoreError> {
        let (marker, bump) = claim;
        let mut puts = vec![Put::json(self.rollout_key(&record.id), record), bump];
        puts.extend(audit);
        self.bundles().save_with(term, bundle, puts, marker.unchanged()).await
    }

    /// Saves a rollout's new state.
    pub async fn put_rollout(&self, term: &Term, record: &RolloutRecord) -> Result<(), StoreError> {
        self.store.put_fenced(term, vec![Put::json(self.rollout_key(&record.id), record)]).await
    }

    /// Saves a rollout an operator reopened (for a rollback) with that
    /// operator's `audit` entry, if the environment's marker of `claim` did
    /// not move (`false`: nothing was saved).
    pub async fn reopen_rollout(
        &self,
        term: &Term,
        record: &RolloutRecord,
        audit: Put,
        claim: (&Marker, Put),
    ) -> Result<bool, StoreError> {
        let (marker, bump) = claim;
        let puts = vec![Put::json(self.rollout_key(&record.id), record), audit, bump];
        self.store.put_fenced_if(term, puts, vec![marker.unchanged()]).await
    }

    /// Appends one event to a rollout's log, together with the rollout's
    /// new state when the event reports a transition: one transaction, so
    /// a new leader never finds a transition without its event.
    /// An `audit` entry (the rollout's end) goes into the same transaction.
    pub async fn append_event(
        &self,
        term: &Term,
        event: &RolloutEvent,
        record: Option<&RolloutRecord>,
        audit: Option<Put>,
    ) -> Result<(), StoreError> {
        let mut puts = vec![Put::proto(self.event_key(&event.rollout_id, event.seq), event)];
        if let Some(record) = record {
            puts.push(Put::json(self.rollout_key(&record.id), record));
        }
        puts.extend(audit);
        self.store.put_fenced(term, puts).await
    }

    /// The put that saves `event`, for a writer that batches several
    /// writes into one transaction (see [`super::events`]).
    pub fn event_put(&self, event: &RolloutEvent) -> Put {
        Put::proto(self.event_key(&event.rollout_id, event.seq), event)
    }

    /// The put that saves `record`'s state, for a batching writer.
    pub fn rollout_put(&self, record: &RolloutRecord) -> Put {
        Put::json(self.rollout_key(&record.id), record)
    }

    /// Applies `puts` (made by [`Self::event_put`], [`Self::rollout_put`]
    /// and audit entries) in one fenced transaction.
    pub async fn put_batch(&self, term: &Term, puts: Vec<Put>) -> Result<(), StoreError> {
        self.store.put_fenced(term, puts).await
    }

    /// Records that an operator asked to cancel rollout `id`, with their
    /// `audit` entry. Its own key, so it never races the runner's writes of
    /// the rollout record.
    pub async fn request_cancel(&self, term: &Term, id: &str, audit: Put) -> Result<(), StoreError> {
        let request = serde_json::json!({ "requested_unix_ms": runway_proto::unix_ms_now() });
        self.store.put_fenced(term, vec![Put::json(self.cancel_key(id), &request), audit]).await
    }

    /// Records an operator's approval or rejection of rollout `id`, with
    /// their `audit` entry. One key per operator (a second decision by the
    /// same operator replaces the first), apart from the rollout record, so
    /// it never races the runner's writes; the runner copies decisions into
    /// the record.
    pub async fn save_decision(
        &self,
        term: &Term,
        id: &str,
        decision: &Decision,
        audit: Put,
    ) -> Result<(), StoreError> {
        let key = format!("{}{}", self.decisions_prefix(id), decision.operator);
        self.store.put_fenced(term, vec![Put::json(key, decision), audit]).await
    }

    /// Every operator's decision about rollout `id`, in key order.
    pub async fn decisions(&self, id: &str) -> Result<Vec<Decision>, StoreError> {
        self.store.list_json(&self.decisions_prefix(id)).await
    }

    /// Whether an operator asked to cancel rollout `id`.
    pub async fn cancel_requested(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self.store.get_json::<serde_json::Value>(&self.cancel_key(id)).await?.is_some())
    }

    /// The rollout with id `id`, if saved.
    pub async fn get_rollout(&self, id: &str) -> Result<Option<RolloutRecord>, StoreError> {
        self.store.get_json(&self.rollout_key(id)).await
    }

    /// Every rollout, oldest first. A record that cannot be decoded is
    /// left out, loudly (see [`decodable`]).
    pub async fn list_rollouts(&self) -> Result<Vec<RolloutRecord>, StoreError> {
        let (mut records, _) = self.list_rollouts_at().await?;
        records.sort_by_key(|r| r.created_unix_ms);
        Ok(records)
    }

    /// Every rollout (in key order) and the store revision the listing
    /// was read at, for a watch from the next revision on. A record that
    /// cannot be decoded is left out, loudly.
    pub async fn list_rollouts_at(&self) -> Result<(Vec<RolloutRecord>, i64), StoreError> {
        let prefix = self.store.key("rollouts/");
        let (entries, revision) = self.store.scan_at(&prefix).await?;
        Ok((decodable(&entries), revision))
    }

    /// Each rollout's id and the mod revision of its record: a prune
    /// deletes a rollout only if its record was not written since.
    pub async fn rollout_revisions(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let prefix = self.store.key("rollouts/");
        Ok(self
            .store
            .scan_revisions(&prefix)
            .await?
            .into_iter()
            .filter_map(|(key, revision)| Some((key.strip_prefix(&prefix)?.to_owned(), revision)))
            .collect())
    }

    /// Every write of a rollout record from revision `from` on.
    pub async fn watch_rollouts(&self, from: i64) -> Result<crate::store::ChangeStream, StoreError> {
        self.store.watch(&self.store.key("rollouts/"), from).await
    }

    /// The bundle with digest `digest`, if saved; its chunks are checked
    /// against the digest (see [`Bundles::load`]).
    pub async fn get_bundle(&self, digest: &str) -> Result<Option<Bundle>, StoreError> {
        self.bundles().load(digest).await
    }

    /// Events of rollout `id` with `seq >= from_seq`, in order.
    pub async fn events(&self, id: &str, from_seq: u64) -> Result<Vec<RolloutEvent>, StoreError> {
        self.store.list_proto(&self.events_prefix(id), &self.event_key(id, from_seq.max(1))).await
    }

    /// Deletes rollout `id` with its events, cancel request, decisions and
    /// notification cursors (its audit entries stay), if `term` still leads.
    /// `revision` is the record's mod revision when the caller decided:
    /// `false` when it was written since (a rollback reopened it), and
    /// nothing was deleted.
    pub async fn delete_rollout(&self, term: &Term, id: &str, revision: i64) -> Result<bool, StoreError> {
        let deletes = vec![
            Delete { key: self.rollout_key(id), prefix: false },
            Delete { key: self.events_prefix(id), prefix: true },
            Delete { key: self.cancel_key(id), prefix: false },
            Delete { key: self.decisions_prefix(id), prefix: true },
            Delete { key: self.store.key(&format!("notify/{id}/")), prefix: true },
        ];
        self.store.delete_fenced(term, deletes, Some((self.rollout_key(id), revision))).await
    }

    /// Every stored bundle (committed or not) with the revisions that
    /// guard its deletion.
    pub async fn stored_bundles(&self) -> Result<Vec<StoredBundle>, StoreError> {
        self.bundles().list().await
    }

    /// Deletes every key of `bundle` unless it was written after it was
    /// listed (a new rollout of it saves its meta again); false when it was
    /// kept for that.
    pub async fn delete_bundle(&self, term: &Term, bundle: &StoredBundle) -> Result<bool, StoreError> {
        self.bundles().delete(term, bundle).await
    }

    /// The store's current revision (where a later compaction may go).
    pub async fn revision(&self) -> Result<i64, StoreError> {
        self.store.revision().await
    }

    /// Drops etcd's history before `revision` (see [`super::retention`]).
    pub async fn compact(&self, revision: i64) -> Result<(), StoreError> {
        self.store.compact(revision).await
    }

    /// The highest event sequence number of rollout `id` (0 if none).
    pub async fn last_event_seq(&self, id: &str) -> Result<u64, StoreError> {
        let prefix = self.events_prefix(id);
        Ok(self
            .store
            .last_key(&prefix)
            .await?
            .and_then(|key| key.strip_prefix(&prefix).and_then(|s| s.parse().ok()))
            .unwrap_or(0))
    }
}

/// The records of `entries` that decode. One that does not is logged as
/// an error and skipped: a single corrupt record must not stall every
/// resume, listing and prune (a person must look at it; `rollout show`
/// of its id still reports the error).
fn decodable(entries: &[(String, Vec<u8>)]) -> Vec<RolloutRecord> {
    entries
        .iter()
        .filter_map(|(key, bytes)| match crate::store::decode_json(key, bytes) {
            Ok(record) => Some(record),
            Err(e) => {
                tracing::error!(%key, error = %e, "skipping a rollout record that cannot be decoded");
                None
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use runway_proto::v1::BundleFile;
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::fencing::FencingToken;
    use crate::model::{RolloutState, Verdict};
    use crate::repo::audit::{Action, Outcome};
    use crate::store::memory::MemoryKv;

    fn record(id: &str, created_unix_ms: i64) -> RolloutRecord {
        RolloutRecord {
            id: id.into(),
            environment: "staging".into(),
            bundle_digest: "abc".into(),
            app_version: String::new(),
            state: RolloutState::Pending,
            steps: Vec::new(),
            error: String::new(),
            created_unix_ms,
            updated_unix_ms: created_unix_ms,
            coordinator: "c1".into(),
            cancel_requested: false,
            ..Default::default()
        }
    }

    fn event(rollout_id: &str, seq: u64) -> RolloutEvent {
        RolloutEvent {
            rollout_id: rollout_id.into(),
            seq,
            kind: "progress".into(),
            ..RolloutEvent::default()
        }
    }

    /// Coordinators of different versions share etcd, and the end-to-end
    /// tests read it: the layout must not move.
    #[tokio::test]
    async fn keys_keep_their_layout_and_reads_find_what_was_written() {
        let kv = Arc::new(MemoryKv::new());
        kv.create_with_revision(b"/runway/leader/694d", b"http://c1", 5);
        let term = Term {
            token: FencingToken(5),
            key: b"/runway/leader/694d".to_vec(),
            cancel: CancellationToken::new(),
        };
        let store = RolloutStore::new(Store::new(kv.clone(), "/runway/"));
        let files = vec![BundleFile::default()];
        let bundle = Bundle { digest: runway_proto::bundle::digest(&files), files };
        let claim = store.claim("staging").await.unwrap();
        store
            .create_rollout(&term, &record("r2", 20), &bundle, None, (&claim.marker, claim.put("r2")))
            .await
            .unwrap();
        store.put_rollout(&term, &record("r1", 10)).await.unwrap();
        for seq in [1, 2, 10] {
            store.append_event(&term, &event("r1", seq), None, None).await.unwrap();
        }
        store.append_event(&term, &event("r10", 1), Some(&record("r10", 30)), None).await.unwrap();
        let decision = |operator: &str, verdict| Decision {
            operator: operator.into(),
            unix_ms: 1,
            verdict,
            comment: String::new(),
            round: 0,
        };
        let audit =
            || store.audit().put(&crate::repo::audit::entry(Action::Approve, "c1"), Outcome::Accepted, "");
        store.save_decision(&term, "r1", &decision("bob", Verdict::Approve), audit()).await.unwrap();
        store.save_decision(&term, "r1", &decision("alice", Verdict::Approve), audit()).await.unwrap();
        store.save_decision(&term, "r1", &decision("bob", Verdict::Reject), audit()).await.unwrap();
        store.save_decision(&term, "r10", &decision("carol", Verdict::Approve), audit()).await.unwrap();

        let bundle_keys = |digest: &str| {
            [format!("/runway/bundles/{digest}/chunks/00000"), format!("/runway/bundles/{digest}/meta")]
        };
        let (audit, keys): (Vec<String>, Vec<String>) =
            kv.keys().into_iter().partition(|k| k.starts_with("/runway/audit/"));
        assert_eq!(audit.len(), 4, "one audit entry with each decision");
        assert_eq!(
            keys,
            [
                bundle_keys(&bundle.digest)[0].as_str(),
                bundle_keys(&bundle.digest)[1].as_str(),
                "/runway/decisions/r1/alice",
                "/runway/decisions/r1/bob",
                "/runway/decisions/r10/carol",
                "/runway/envs/staging/changes",
                "/runway/events/r1/00000000000000000001",
                "/runway/events/r1/00000000000000000002",
                "/runway/events/r1/00000000000000000010",
                "/runway/events/r10/00000000000000000001",
                "/runway/leader/694d",
                "/runway/rollouts/r1",
                "/runway/rollouts/r10",
                "/runway/rollouts/r2",
            ]
        );
        let ids: Vec<String> = store.list_rollouts().await.unwrap().into_iter().map(|r| r.id).collect();
        assert_eq!(ids, ["r1", "r2", "r10"], "oldest first");
        assert_eq!(store.get_rollout("r2").await.unwrap(), Some(record("r2", 20)));
        assert_eq!(store.get_rollout("r3").await.unwrap(), None);
        assert_eq!(store.get_bundle(&bundle.digest).await.unwrap(), Some(bundle.clone()));
        assert_eq!(store.last_event_seq("r1").await.unwrap(), 10);
        assert_eq!(store.last_event_seq("r3").await.unwrap(), 0);
        let seqs: Vec<u64> = store.events("r1", 2).await.unwrap().iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [2, 10], "from seq 2, and not r10's events");
        assert_eq!(store.events("r1", 0).await.unwrap().len(), 3);
        let decided: Vec<(String, Verdict)> =
            store.decisions("r1").await.unwrap().into_iter().map(|d| (d.operator, d.verdict)).collect();
        assert_eq!(
            decided,
            [("alice".into(), Verdict::Approve), ("bob".into(), Verdict::Reject)],
            "one decision per operator, the latest, and not r10's"
        );
    }

    #[tokio::test]
    async fn a_corrupt_record_names_its_key() {
        let kv = Arc::new(MemoryKv::new());
        kv.create_with_revision(b"/runway/rollouts/r1", b"{not json", 1);
        kv.create_with_revision(b"/runway/rollouts/r2", &serde_json::to_vec(&record("r2", 20)).unwrap(), 2);
        let store = RolloutStore::new(Store::new(kv, "/runway"));
        let error = store.get_rollout("r1").await.unwrap_err();
        assert!(matches!(&error, StoreError::Corrupt { key, .. } if key == "/runway/rollouts/r1"), "{error}");
        // The listing skips it (loudly) and goes on with the others.
        let listed: Vec<String> = store.list_rollouts().await.unwrap().into_iter().map(|r| r.id).collect();
        assert_eq!(listed, ["r2"]);
    }

    /// A prune decided on a record's revision: a write since (a rollback
    /// reopened it) keeps the rollout.
    #[tokio::test]
    async fn a_rollout_written_since_its_listing_is_not_deleted() {
        let kv = Arc::new(MemoryKv::new());
        let term = kv.lead(1);
        let store = RolloutStore::new(Store::new(kv.clone(), "/runway/"));
        store.put_rollout(&term, &record("r1", 10)).await.unwrap();
        let listed = store.rollout_revisions().await.unwrap();
        assert_eq!(listed.len(), 1);
        let reopened = RolloutRecord { state: RolloutState::Running, ..record("r1", 10) };
        store.put_rollout(&term, &reopened).await.unwrap();
        assert!(!store.delete_rollout(&term, "r1", listed[0].1).await.unwrap());
        assert!(store.get_rollout("r1").await.unwrap().is_some());
        let now = store.rollout_revisions().await.unwrap();
        assert!(store.delete_rollout(&term, "r1", now[0].1).await.unwrap());
        assert!(store.get_rollout("r1").await.unwrap().is_none());
    }
}
