//! The audit log: every operator action (start, approve, reject, cancel,
//! rollback, backup restore and verify) with who, when, what was asked and
//! how it ended, and how each rollout and backup operation ended.
//!
//! Entries are appended under `audit/<unix ms, 20 digits>-<sequence, 12
//! digits>-<random>` as [`AuditEntry`] (protobuf, the wire form `runway
//! audit` reads): time-ordered keys that need no read before a write. The
//! time never goes back within a coordinator and the sequence orders
//! entries of the same millisecond as they were made; the random part keeps
//! two coordinators' entries apart. Nothing ever rewrites an entry. Like
//! every write, they are fenced by the writer's [`Term`].
//!
//! An accepted action's entry is written in the same fenced transaction as
//! the change it makes (the rollout record, the cancel request, the
//! approval), so there is no change without its entry and no entry for a
//! change that was not saved: see [`AuditLog::put`]. Refusals are recorded
//! after the fact, best effort (a follower cannot write; the caller retries
//! against the leader, which records it).

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use runway_proto::v1::AuditEntry;

use crate::fencing::Term;
use crate::model::{RolloutRecord, RolloutState};
use crate::store::{Delete, Put, Store, StoreError};

/// Keys one pruning transaction deletes: etcd takes at most 128 operations
/// per transaction, and the fence takes one more.
const DELETES_PER_TXN: usize = 100;

/// What an entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// `runway rollout start`.
    Start,
    /// `runway rollout approve`.
    Approve,
    /// `runway rollout reject`.
    Reject,
    /// `runway rollout cancel`.
    Cancel,
    /// `runway rollout rollback`.
    Rollback,
    /// `runway backup restore --env`.
    BackupRestore,
    /// `runway backup verify --env`.
    BackupVerify,
    /// A rollout ended (recorded by the coordinator that ran it).
    RolloutEnded,
    /// A backup restore or verify ended on its DB agent.
    BackupEnded,
    /// `runway agents forget`.
    ForgetAgent,
}

impl Action {
    /// The name in the log and on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Start => "start",
            Action::Approve => "approve",
            Action::Reject => "reject",
            Action::Cancel => "cancel",
            Action::Rollback => "rollback",
            Action::BackupRestore => "backup_restore",
            Action::BackupVerify => "backup_verify",
            Action::RolloutEnded => "rollout_ended",
            Action::BackupEnded => "backup_ended",
            Action::ForgetAgent => "forget_agent",
        }
    }
}

/// How what an entry records ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The coordinator accepted and saved the operator's action.
    Accepted,
    /// The coordinator refused it (the entry's error says why); nothing changed.
    Refused,
    /// A rollout or backup operation ended well.
    Succeeded,
    /// A rollout or backup operation failed.
    Failed,
    /// A rollout was cancelled, rejected, or its approvals expired.
    Cancelled,
    /// A rollout was rolled back.
    RolledBack,
}

impl Outcome {
    /// The name in the log and on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Accepted => "accepted",
            Outcome::Refused => "refused",
            Outcome::Succeeded => "succeeded",
            Outcome::Failed => "failed",
            Outcome::Cancelled => "cancelled",
            Outcome::RolledBack => "rolled_back",
        }
    }
}

/// The actor of entries a coordinator records on its own.
pub fn coordinator_actor(name: &str) -> String {
    format!("coordinator:{name}")
}

/// An entry about `action`, recorded by coordinator `coordinator`; the
/// caller fills in actor, environment, rollout and parameters, and
/// [`AuditLog::put`] the outcome and time.
pub fn entry(action: Action, coordinator: &str) -> AuditEntry {
    AuditEntry {
        action: action.as_str().to_owned(),
        coordinator: coordinator.to_owned(),
        parameters: HashMap::new(),
        ..AuditEntry::default()
    }
}

/// The entry of a rollout's end, recorded by the coordinator that ran it
/// (with what the rollout was, who started and who approved it), and its
/// outcome: the rollout's final state.
pub fn rollout_ended(record: &RolloutRecord, coordinator: &str) -> (AuditEntry, Outcome) {
    let mut ended = entry(Action::RolloutEnded, coordinator);
    ended.actor = coordinator_actor(coordinator);
    ended.environment = record.environment.clone();
    ended.rollout_id = record.id.clone();
    let approvers = record.approval.as_ref().map(|a| a.approvers()).unwrap_or_default();
    for (key, value) in [
        ("bundle_digest", record.bundle_digest.clone()),
        ("app_version", record.app_version.clone()),
        ("started_by", record.started_by.clone()),
        ("approved_by", approvers),
        ("backup", record.backup.clone()),
    ] {
        if !value.is_empty() {
            ended.parameters.insert(key.to_owned(), value);
        }
    }
    let outcome = match record.state {
        RolloutState::Succeeded => Outcome::Succeeded,
        RolloutState::Cancelled => Outcome::Cancelled,
        RolloutState::RolledBack => Outcome::RolledBack,
        _ => Outcome::Failed,
    };
    (ended, outcome)
}

/// Longest parameter value kept, in characters.
const MAX_VALUE_CHARS: usize = 256;

/// `value` without control characters (each becomes `?`), cut at
/// [`MAX_VALUE_CHARS`] with `…`.
fn printable(value: &str) -> String {
    let mut kept: String =
        value.chars().take(MAX_VALUE_CHARS).map(|c| if c.is_control() { '?' } else { c }).collect();
    if value.chars().count() > MAX_VALUE_CHARS {
        kept.push('…');
    }
    kept
}

/// The audit log in the [`Store`]; cheap to clone.
#[derive(Clone)]
pub struct AuditLog {
    store: Store,
}

impl AuditLog {
    /// The log saved in `store`.
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    fn prefix(&self) -> String {
        self.store.key("audit/")
    }

    /// `entry` with its `outcome` (and `error`), stamped with the time now
    /// and a fresh time-ordered id, as a write for a fenced batch: put it in
    /// the same transaction as the change it records.
    pub fn put(&self, entry: &AuditEntry, outcome: Outcome, error: &str) -> Put {
        /// The latest stamp given, so that stamps never go back.
        static LAST_MS: AtomicI64 = AtomicI64::new(0);
        /// Orders the entries of one millisecond.
        static SEQUENCE: AtomicU64 = AtomicU64::new(0);
        let now = runway_proto::unix_ms_now();
        let unix_ms = LAST_MS.fetch_max(now, Ordering::SeqCst).max(now);
        let sequence = SEQUENCE.fetch_add(1, Ordering::SeqCst) % 1_000_000_000_000;
        let random = uuid::Uuid::new_v4().simple().to_string();
        let id = format!("{unix_ms:020}-{sequence:012}-{}", &random[..6]);
        let mut entry = AuditEntry {
            id: id.clone(),
            unix_ms,
            outcome: outcome.as_str().to_owned(),
            error: error.to_owned(),
            ..entry.clone()
        };
        // A refused request's values are recorded as sent, but never as
        // forged lines or megabytes.
        for value in entry.parameters.values_mut() {
            *value = printable(value);
        }
        Put::proto(format!("{}{id}", self.prefix()), &entry)
    }

    /// Appends `entry` with its `outcome` on its own.
    pub async fn append(
        &self,
        term: &Term,
        entry: &AuditEntry,
        outcome: Outcome,
        error: &str,
    ) -> Result<(), StoreError> {
        self.store.put_fenced(term, vec![self.put(entry, outcome, error)]).await
    }

    /// Deletes the oldest entries beyond the newest `keep_entries`, and
    /// every entry recorded before `before_unix_ms`, as `term`'s leader;
    /// returns how many went. Keys are time-ordered, so this reads keys
    /// only and deletes in fenced batches well under etcd's per-transaction
    /// limit.
    pub async fn prune(
        &self,
        term: &Term,
        keep_entries: usize,
        before_unix_ms: i64,
    ) -> Result<usize, StoreError> {
        let prefix = self.prefix();
        let mut keys: Vec<String> =
            self.store.scan_revisions(&prefix).await?.into_iter().map(|(key, _)| key).collect();
        keys.sort();
        let beyond_count = keys.len().saturating_sub(keep_entries);
        let cutoff = format!("{prefix}{:020}", before_unix_ms.max(0));
        let too_old = keys.partition_point(|key| *key < cutoff);
        let doomed = &keys[..beyond_count.max(too_old)];
        for batch in doomed.chunks(DELETES_PER_TXN) {
            let deletes = batch.iter().map(|key| Delete { key: key.clone(), prefix: false }).collect();
            self.store.delete_fenced(term, deletes, None).await?;
        }
        Ok(doomed.len())
    }

    /// Every entry recorded at or after `since_unix_ms`, oldest first.
    pub async fn list(&self, since_unix_ms: i64) -> Result<Vec<AuditEntry>, StoreError> {
        let prefix = self.prefix();
        let from = format!("{prefix}{:020}", since_unix_ms.max(0));
        self.store.list_proto(&prefix, &from).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::fencing::FencingToken;
    use crate::store::memory::MemoryKv;

    fn lead(kv: &MemoryKv, token: u64) -> Term {
        kv.delete_prefix("/runway/leader/");
        kv.create_with_revision(b"/runway/leader/a", b"http://c1", token);
        Term {
            token: FencingToken(token),
            key: b"/runway/leader/a".to_vec(),
            cancel: CancellationToken::new(),
        }
    }

    fn start(actor: &str, environment: &str) -> AuditEntry {
        let mut entry = entry(Action::Start, "c1");
        entry.actor = actor.into();
        entry.environment = environment.into();
        entry.rollout_id = "r1".into();
        entry.parameters.insert("app_version".into(), "2.0.0".into());
        entry
    }

    #[tokio::test]
    async fn entries_are_appended_under_time_ordered_keys_and_listed_oldest_first() {
        let kv = Arc::new(MemoryKv::new());
        let term = lead(&kv, 5);
        let log = AuditLog::new(Store::new(kv.clone(), "/runway"));
        log.append(&term, &start("alice", "production"), Outcome::Accepted, "").await.unwrap();
        log.append(&term, &start("bob", "staging"), Outcome::Refused, "permission denied: …").await.unwrap();
        // The same entry twice is two entries: nothing is overwritten.
        let mut ended = entry(Action::RolloutEnded, "c1");
        ended.actor = coordinator_actor("c1");
        log.append(&term, &ended, Outcome::Succeeded, "").await.unwrap();
        log.append(&term, &ended, Outcome::Succeeded, "").await.unwrap();

        let keys: Vec<String> = kv.keys().into_iter().filter(|k| k.starts_with("/runway/audit/")).collect();
        assert_eq!(keys.len(), 4);
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
        for key in &keys {
            let id = key.strip_prefix("/runway/audit/").unwrap();
            let parts: Vec<usize> = id.split('-').map(str::len).collect();
            assert_eq!(parts, [20, 12, 6], "{id}");
        }

        let entries = log.list(0).await.unwrap();
        let seen: Vec<(&str, &str, &str, &str)> = entries
            .iter()
            .map(|e| (e.actor.as_str(), e.action.as_str(), e.outcome.as_str(), e.error.as_str()))
            .collect();
        assert_eq!(
            seen,
            [
                ("alice", "start", "accepted", ""),
                ("bob", "start", "refused", "permission denied: …"),
                ("coordinator:c1", "rollout_ended", "succeeded", ""),
                ("coordinator:c1", "rollout_ended", "succeeded", ""),
            ]
        );
        assert_eq!(entries[0].parameters["app_version"], "2.0.0");
        assert_eq!((entries[0].environment.as_str(), entries[0].coordinator.as_str()), ("production", "c1"));
        assert!(entries.iter().all(|e| keys.iter().any(|k| k.ends_with(&e.id)) && e.unix_ms > 0));
        assert_ne!(entries[2].id, entries[3].id);
    }

    #[tokio::test]
    async fn parameter_values_are_kept_printable_and_short() {
        let kv = Arc::new(MemoryKv::new());
        let term = lead(&kv, 5);
        let log = AuditLog::new(Store::new(kv.clone(), "/runway"));
        let mut refused = start("mallory", "production");
        refused.parameters.insert("app_version".into(), "1.0\nINFO forged line".into());
        refused.parameters.insert("allow_danger".into(), "x".repeat(10_000));
        log.append(&term, &refused, Outcome::Refused, "app version … is not valid").await.unwrap();
        let saved = log.list(0).await.unwrap().remove(0);
        assert_eq!(saved.parameters["app_version"], "1.0?INFO forged line");
        assert_eq!(saved.parameters["allow_danger"].chars().count(), MAX_VALUE_CHARS + 1);
        assert!(saved.parameters["allow_danger"].ends_with('…'));
    }

    #[tokio::test]
    async fn since_skips_older_entries_and_a_stale_term_writes_nothing() {
        let kv = Arc::new(MemoryKv::new());
        let old = lead(&kv, 5);
        let log = AuditLog::new(Store::new(kv.clone(), "/runway/"));
        log.append(&old, &start("alice", "production"), Outcome::Accepted, "").await.unwrap();
        let first = log.list(0).await.unwrap().remove(0);
        assert_eq!(log.list(first.unix_ms).await.unwrap().len(), 1, "since is inclusive");
        assert!(log.list(first.unix_ms + 1).await.unwrap().is_empty());

        let _new = lead(&kv, 9);
        let refused = log.append(&old, &start("mallory", "production"), Outcome::Accepted, "").await;
        assert!(matches!(refused, Err(StoreError::Fenced(5))), "{refused:?}");
        assert_eq!(log.list(0).await.unwrap().len(), 1);
    }
}
