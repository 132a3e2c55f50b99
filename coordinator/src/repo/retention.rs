//! Retention: etcd keeps what running rollouts, rollbacks and operators
//! need, not every rollout ever. The leader deletes finished rollouts
//! (record, events, cancel request, decisions) beyond the newest
//! `keep_rollouts` or older than `keep_for`, but never one still inside
//! its environment's rollback window, then every bundle no kept rollout
//! refers to. The audit log, the record of who did what, is kept longer:
//! entries go beyond the newest `keep_audit_entries` or after
//! `keep_audit_for` (a year by default).
//!
//! A bundle is deleted only if nobody wrote it since it was listed: a new
//! rollout of the same digest saves the bundle's meta again in its own
//! transaction, so it never loses its bundle to a prune that ran at the
//! same time. Chunks without a meta (a save that stopped half-way) are
//! deleted once two prunes in a row found them untouched, so a save still
//! writing them is left alone (see [`super::bundles`]).
//!
//! Deleting keys does not shrink etcd: every revision of every key stays in
//! its history until etcd compacts it. With `[retention] compact` (the
//! default) the leader compacts after each prune, to the revision the
//! previous prune started at: history younger than one prune interval
//! stays for watchers, everything older goes. etcd reuses the freed pages;
//! its file only shrinks with `etcdctl defrag`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::RolloutStore;
use crate::config::{Config, Retention};
use crate::fencing::Term;
use crate::model::RolloutRecord;
use crate::store::StoreError;

/// `duration` in milliseconds, for arithmetic on unix-ms timestamps.
fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// What one prune removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    pub rollouts: usize,
    pub bundles: usize,
    pub audit_entries: usize,
    /// The revision etcd's history was compacted to, if it was.
    pub compacted_to: Option<i64>,
}

/// The finished rollouts `policy` lets go at `now_ms`. `window` gives an
/// environment's rollback window: a rollout that ended inside it stays.
pub fn expired(
    records: &[RolloutRecord],
    policy: &Retention,
    now_ms: i64,
    window: impl Fn(&str) -> Duration,
) -> Vec<String> {
    let mut finished: Vec<&RolloutRecord> = records.iter().filter(|r| r.state.is_terminal()).collect();
    finished.sort_by_key(|r| std::cmp::Reverse((r.created_unix_ms, r.id.clone())));
    let max_age_ms = millis(policy.keep_for);
    finished
        .into_iter()
        .enumerate()
        .filter(|(newest, r)| *newest >= policy.keep_rollouts || now_ms - r.updated_unix_ms > max_age_ms)
        .filter(|(_, r)| now_ms - r.updated_unix_ms >= millis(window(&r.environment)))
        .map(|(_, r)| r.id.clone())
        .collect()
}

/// Deletes what `config.retention` lets go, once, as `term`'s leader
/// (without a previous prune to compare with: uncommitted chunks stay and
/// nothing is compacted). The leader uses a [`Pruner`].
pub async fn prune(store: &RolloutStore, term: &Term, config: &Config) -> Result<Pruned, StoreError> {
    Pruner::default().prune(store, term, config).await
}

/// Prunes over one leader term, remembering what the previous prune saw:
/// the revision it started at (where the next compaction goes) and the
/// uncommitted bundles it found.
#[derive(Debug, Default)]
pub struct Pruner {
    /// The store's revision when the previous prune started.
    started_at: Option<i64>,
    /// Uncommitted bundles the previous prune found, with their newest
    /// revision.
    uncommitted: BTreeMap<String, i64>,
}

impl Pruner {
    /// Deletes what `config.retention` lets go, as `term`'s leader, then
    /// compacts etcd's history if `[retention] compact`.
    pub async fn prune(
        &mut self,
        store: &RolloutStore,
        term: &Term,
        config: &Config,
    ) -> Result<Pruned, StoreError> {
        let started_at = store.revision().await?;
        // Bundles are listed before rollouts: a rollout created after the
        // rollouts were listed saved its bundle's meta after this listing,
        // so the bundle's guarded delete below fails; one created before is
        // in `records` and keeps its bundle.
        let bundles = store.stored_bundles().await?;
        let revisions: BTreeMap<String, i64> = store.rollout_revisions().await?.into_iter().collect();
        let records = store.list_rollouts().await?;
        let window = |environment: &str| config.environments.policy(environment).rollback_window;
        let now_ms = runway_proto::unix_ms_now();
        let doomed = expired(&records, &config.retention, now_ms, window);
        let mut pruned = Pruned::default();
        let mut gone = BTreeSet::new();
        for id in &doomed {
            // Listed before the records: a record written since (a rollback
            // reopened it) has a newer revision, and is kept.
            let Some(&revision) = revisions.get(id) else { continue };
            if store.delete_rollout(term, id, revision).await? {
                pruned.rollouts += 1;
                gone.insert(id);
            }
        }
        let referenced: BTreeSet<&str> =
            records.iter().filter(|r| !gone.contains(&r.id)).map(|r| r.bundle_digest.as_str()).collect();
        let mut uncommitted = BTreeMap::new();
        for bundle in bundles {
            if referenced.contains(bundle.digest.as_str()) {
                continue;
            }
            if bundle.is_uncommitted() {
                uncommitted.insert(bundle.digest.clone(), bundle.newest);
                if self.uncommitted.get(&bundle.digest) != Some(&bundle.newest) {
                    continue;
                }
            }
            if store.delete_bundle(term, &bundle).await? {
                pruned.bundles += 1;
            }
        }
        self.uncommitted = uncommitted;
        let policy = &config.retention;
        let audit_before_ms = now_ms.saturating_sub(millis(policy.keep_audit_for));
        pruned.audit_entries = store.audit().prune(term, policy.keep_audit_entries, audit_before_ms).await?;
        if config.retention.compact
            && let Some(revision) = self.started_at
        {
            store.compact(revision).await?;
            pruned.compacted_to = Some(revision);
        }
        self.started_at = Some(started_at);
        Ok(pruned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::RolloutState;

    const DAY_MS: i64 = 24 * 3600 * 1000;

    fn record(id: &str, created: i64, state: RolloutState, environment: &str) -> RolloutRecord {
        RolloutRecord {
            id: id.into(),
            environment: environment.into(),
            state,
            created_unix_ms: created,
            updated_unix_ms: created + 10,
            ..Default::default()
        }
    }

    #[test]
    fn keeps_the_newest_the_recent_the_unfinished_and_those_inside_a_rollback_window() {
        let now = 400 * DAY_MS;
        let records = vec![
            record("old-ok", 1, RolloutState::Succeeded, "staging"),
            record("old-running", 2, RolloutState::Running, "staging"),
            record("old-prod", now - 20 * DAY_MS, RolloutState::Failed, "production"),
            record("mid", now - 5 * DAY_MS, RolloutState::Succeeded, "staging"),
            record("new-1", now - 3 * DAY_MS, RolloutState::RolledBack, "staging"),
            record("new-2", now - 2 * DAY_MS, RolloutState::Succeeded, "staging"),
            record("waiting", now - DAY_MS, RolloutState::AwaitingApproval, "staging"),
        ];
        let window = |environment: &str| {
            Duration::from_secs(if environment == "production" { 30 * 86_400 } else { 0 })
        };
        let policy = Retention {
            keep_rollouts: 2,
            keep_for: Duration::from_secs(90 * 86_400),
            ..Retention::default()
        };
        let mut gone = expired(&records, &policy, now, window);
        gone.sort();
        // Beyond the newest two finished: mid; older than 90 days: old-ok.
        // old-prod is beyond the newest two but inside production's window.
        assert_eq!(gone, ["mid", "old-ok"]);
        let generous = Retention {
            keep_rollouts: 1000,
            keep_for: Duration::from_secs(365 * 86_400),
            ..Retention::default()
        };
        assert_eq!(expired(&records, &generous, now, window), ["old-ok"]);
    }
}

#[cfg(test)]
mod store_tests {
    use std::sync::Arc;

    use runway_proto::v1::{Bundle, BundleFile, RolloutEvent};

    use super::*;
    use crate::model::RolloutState;
    use crate::store::Store;
    use crate::store::memory::MemoryKv;

    /// 30 finished rollouts over 3 bundles, retention 10: exactly the
    /// newest 10 remain with their events, the bundles only they use, and
    /// the audit log (until it passes its own bound); a bundle saved again
    /// after the listing is kept.
    #[tokio::test]
    async fn prune_deletes_rollouts_their_events_and_unused_bundles_and_keeps_the_audit() {
        let kv = Arc::new(MemoryKv::new());
        let term = kv.lead(1);
        let store = RolloutStore::new(Store::new(kv.clone(), "/runway/"));
        // Named by made-up digests: the store checks a bundle against the
        // digest it was saved under, not its content.
        let bundle = |d: &str| Bundle { files: vec![BundleFile::default()], digest: d.into() };
        let now = runway_proto::unix_ms_now();
        for i in 0..30i64 {
            let digest = ["old", "mid", "new"][(i / 10) as usize];
            let record = RolloutRecord {
                id: format!("r{i:02}"),
                environment: "staging".into(),
                bundle_digest: digest.into(),
                state: RolloutState::Succeeded,
                created_unix_ms: now - 1000 + i,
                updated_unix_ms: now - 1000 + i,
                ..Default::default()
            };
            let audit = store.audit().put(
                &crate::repo::audit::entry(crate::repo::audit::Action::Start, "c1"),
                crate::repo::audit::Outcome::Accepted,
                "",
            );
            let claim = store.claim(&record.environment).await.unwrap();
            store
                .create_rollout(
                    &term,
                    &record,
                    &bundle(digest),
                    Some(audit),
                    (&claim.marker, claim.put(&record.id)),
                )
                .await
                .unwrap();
            let event = RolloutEvent { rollout_id: record.id.clone(), seq: 1, ..Default::default() };
            store.append_event(&term, &event, None, None).await.unwrap();
        }
        let audit_keys = |kv: &MemoryKv| kv.keys().iter().filter(|k| k.starts_with("/runway/audit/")).count();
        let audits_before = audit_keys(&kv);

        let mut config = Config::default();
        config.retention.keep_rollouts = 10;
        let pruned = prune(&store, &term, &config).await.unwrap();
        assert_eq!(pruned, Pruned { rollouts: 20, bundles: 2, ..Pruned::default() });
        let left: Vec<String> = store.list_rollouts().await.unwrap().into_iter().map(|r| r.id).collect();
        assert_eq!(left, (20..30).map(|i| format!("r{i}")).collect::<Vec<_>>());
        let keys = kv.keys();
        assert!(
            !keys.iter().any(|k| k.starts_with("/runway/events/r0") || k.starts_with("/runway/events/r1"))
        );
        assert_eq!(keys.iter().filter(|k| k.starts_with("/runway/events/")).count(), 10);
        assert_eq!(store.stored_bundles().await.unwrap().len(), 1);
        assert_eq!(audit_keys(&kv), audits_before, "the audit log has bounds of its own");
        assert_eq!(prune(&store, &term, &config).await.unwrap(), Pruned::default());

        // The audit log beyond its own bound: the oldest entries go first,
        // in several transactions.
        let verify = crate::repo::audit::entry(crate::repo::audit::Action::BackupVerify, "c1");
        for _ in 0..200 {
            store.audit().append(&term, &verify, crate::repo::audit::Outcome::Accepted, "").await.unwrap();
        }
        let all = audits_before + 200;
        let newest = store.audit().list(0).await.unwrap().split_off(all - 5);
        config.retention.keep_audit_entries = 5;
        let pruned = prune(&store, &term, &config).await.unwrap();
        assert_eq!(pruned, Pruned { audit_entries: all - 5, ..Pruned::default() });
        assert_eq!(store.audit().list(0).await.unwrap(), newest);

        // A bundle written again after it was listed is not deleted.
        let listed = store.stored_bundles().await.unwrap().remove(0);
        let digest = listed.digest.clone();
        store
            .create_rollout(
                &term,
                &RolloutRecord { id: "again".into(), bundle_digest: digest.clone(), ..Default::default() },
                &bundle(&digest),
                None,
                (
                    &store.claim("").await.unwrap().marker,
                    crate::store::Put::json("/runway/envs//changes".into(), &1),
                ),
            )
            .await
            .unwrap();
        assert!(!store.delete_bundle(&term, &listed).await.unwrap());
        assert!(store.get_bundle(&digest).await.unwrap().is_some());
    }

    /// Chunks without a meta go only when a second prune finds them
    /// untouched; compaction follows one prune behind, to where the
    /// previous prune started.
    #[tokio::test]
    async fn a_pruner_deletes_uncommitted_chunks_on_the_second_sighting_and_compacts_one_prune_behind() {
        let kv = Arc::new(MemoryKv::new());
        let term = kv.lead(1);
        let store = RolloutStore::new(Store::new(kv.clone(), "/runway/"));
        let orphan = crate::store::Put { key: "/runway/bundles/half/chunks/00000".into(), value: vec![1] };
        crate::store::Kv::put_fenced(kv.as_ref(), &term, vec![orphan]).await.unwrap();
        let config = Config::default();
        let mut pruner = Pruner::default();

        let first = pruner.prune(&store, &term, &config).await.unwrap();
        assert_eq!(first, Pruned::default(), "first sighting: kept, nothing to compact to yet");
        let started_second = store.revision().await.unwrap();
        let second = pruner.prune(&store, &term, &config).await.unwrap();
        assert_eq!(second.bundles, 1, "untouched since the first prune: deleted");
        assert!(store.stored_bundles().await.unwrap().is_empty());
        let compacted = second.compacted_to.expect("compacted after the second prune");
        assert!(compacted <= started_second, "never past where this prune started");
        assert_eq!(kv.compacted(), compacted as u64);

        let mut off = Config::default();
        off.retention.compact = false;
        assert_eq!(pruner.prune(&store, &term, &off).await.unwrap().compacted_to, None);
    }
}
