//! The leader's feed of rollout changes: one listing, then an etcd watch.
//!
//! The runner (to start or resume unfinished rollouts) and the webhooks
//! (to send what a transition makes a notification) both follow the
//! rollout records through [`follow`], instead of listing every rollout
//! every few seconds: the listing is read at a revision, and the watch
//! starts at the next one, so no write is missed and none seen twice.
//! When the watch breaks (an error, etcd compacted the revision it needs,
//! etcd restarted), one full listing and a new watch take over.
//!
//! A slow safety listing every [`SAFETY_RESCAN`] remains: a run that
//! stopped on an etcd error, or a notification task that stopped, is
//! picked up again even if its rollout is never written again. It costs
//! one range read every few minutes, not every five seconds.

use std::future::Future;
use std::time::Duration;

use futures::StreamExt;

use super::RolloutStore;
use crate::fencing::Term;
use crate::model::RolloutRecord;
use crate::store::{StoreError, decode_json};

/// How often the feed lists every rollout even though the watch runs.
pub const SAFETY_RESCAN: Duration = Duration::from_secs(180);

/// How long to wait before listing again after etcd could not be read.
const RETRY_AFTER: Duration = Duration::from_secs(2);

/// What one call of a feed's callback holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Batch {
    /// Every rollout saved (a listing): one missing from it was deleted.
    Every,
    /// Rollouts written since the last call.
    Changed,
}

/// Calls `changed` with every rollout (a listing, [`Batch::Every`]), then
/// with each rollout record as it is written ([`Batch::Changed`]), until
/// `term` ends. Deleted records are not reported, but are missing from the
/// next listing. `changed` runs in line: the feed waits for it.
pub async fn follow<F, Fut>(store: &RolloutStore, term: &Term, mut changed: F)
where
    F: FnMut(Vec<RolloutRecord>, Batch) -> Fut,
    Fut: Future<Output = ()>,
{
    loop {
        let listed = tokio::select! {
            _ = term.cancel.cancelled() => return,
            listed = store.list_rollouts_at() => listed,
        };
        let ended = match listed {
            Ok((records, revision)) => {
                changed(records, Batch::Every).await;
                watch(store, term, revision + 1, &mut changed).await
            }
            Err(e) => Err(e),
        };
        match ended {
            Ok(()) => {}
            Err(e) => {
                tracing::warn!(error = %e, "the rollout feed lists every rollout again");
                tokio::select! {
                    _ = term.cancel.cancelled() => return,
                    _ = tokio::time::sleep(RETRY_AFTER) => {}
                }
            }
        }
        if term.cancel.is_cancelled() {
            return;
        }
    }
}

/// Follows rollout writes from revision `from` until the term ends (`Ok`),
/// the safety listing is due (`Ok`), or the watch breaks (`Err`).
async fn watch<F, Fut>(
    store: &RolloutStore,
    term: &Term,
    from: i64,
    changed: &mut F,
) -> Result<(), StoreError>
where
    F: FnMut(Vec<RolloutRecord>, Batch) -> Fut,
    Fut: Future<Output = ()>,
{
    let mut changes = store.watch_rollouts(from).await?;
    let rescan = tokio::time::sleep(SAFETY_RESCAN);
    tokio::pin!(rescan);
    loop {
        let batch = tokio::select! {
            _ = term.cancel.cancelled() => return Ok(()),
            _ = &mut rescan => return Ok(()),
            batch = changes.next() => batch,
        };
        let batch = match batch {
            Some(batch) => batch?,
            None => return Err(StoreError::WatchEnded("the watch stream ended".into())),
        };
        let records: Vec<RolloutRecord> = batch
            .iter()
            .filter_map(|change| {
                let value = change.value.as_ref()?;
                decode_json(&change.key, value)
                    .inspect_err(
                        |e| tracing::error!(error = %e, "skipping a rollout record that cannot be read"),
                    )
                    .ok()
            })
            .collect();
        if !records.is_empty() {
            changed(records, Batch::Changed).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio::sync::mpsc;
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::fencing::FencingToken;
    use crate::store::Store;
    use crate::store::memory::MemoryKv;

    fn ids(ids: &[&str]) -> Vec<String> {
        ids.iter().map(|id| (*id).to_owned()).collect()
    }

    fn record(id: &str) -> RolloutRecord {
        RolloutRecord { id: id.into(), ..Default::default() }
    }

    #[tokio::test(start_paused = true)]
    async fn the_feed_lists_once_then_follows_writes_and_recovers_from_a_broken_watch() {
        let kv = Arc::new(MemoryKv::new());
        kv.create_with_revision(b"/runway/leader/a", b"http://c1", 3);
        let term = Term {
            token: FencingToken(3),
            key: b"/runway/leader/a".to_vec(),
            cancel: CancellationToken::new(),
        };
        let store = RolloutStore::new(Store::new(kv.clone(), "/runway"));
        store.put_rollout(&term, &record("r1")).await.unwrap();

        let (tx, mut seen) = mpsc::unbounded_channel::<(Vec<String>, Batch)>();
        let feed = {
            let (store, term) = (store.clone(), term.clone());
            tokio::spawn(async move {
                follow(&store, &term, |records, batch| {
                    let _ = tx.send((records.into_iter().map(|r| r.id).collect(), batch));
                    async {}
                })
                .await
            })
        };
        assert_eq!(seen.recv().await.unwrap(), (ids(&["r1"]), Batch::Every), "the listing");
        store.put_rollout(&term, &record("r2")).await.unwrap();
        assert_eq!(
            seen.recv().await.unwrap(),
            (ids(&["r2"]), Batch::Changed),
            "a new rollout, from the watch"
        );
        store.put_rollout(&term, &record("r1")).await.unwrap();
        assert_eq!(seen.recv().await.unwrap(), (ids(&["r1"]), Batch::Changed), "a changed rollout");
        let revision =
            store.rollout_revisions().await.unwrap().into_iter().find(|(id, _)| id == "r2").unwrap().1;
        assert!(store.delete_rollout(&term, "r2", revision).await.unwrap());

        // A broken watch: one full listing, then the watch again.
        kv.break_watches();
        assert_eq!(
            seen.recv().await.unwrap(),
            (ids(&["r1"]), Batch::Every),
            "listed again after the watch broke"
        );
        store.put_rollout(&term, &record("r3")).await.unwrap();
        assert_eq!(seen.recv().await.unwrap(), (ids(&["r3"]), Batch::Changed));

        // Nothing else in between: no periodic listing before SAFETY_RESCAN.
        tokio::time::sleep(SAFETY_RESCAN - Duration::from_secs(10)).await;
        assert!(seen.try_recv().is_err(), "no listing before the safety rescan is due");
        tokio::time::sleep(Duration::from_secs(20)).await;
        assert_eq!(seen.recv().await.unwrap(), (ids(&["r1", "r3"]), Batch::Every), "the safety rescan");

        term.cancel.cancel();
        feed.await.unwrap();
    }
}
