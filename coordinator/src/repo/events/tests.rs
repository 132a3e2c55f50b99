//! Batched event writes over the in-memory store, counting transactions.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::*;
use crate::fencing::FencingToken;
use crate::store::memory::MemoryKv;
use crate::store::{Delete, Kv, KvFuture, Listing, Store};

/// The in-memory store, counting fenced transactions and their sizes; each
/// write takes a little (paused) time, as an etcd round trip does, so
/// callers queue up behind it.
#[derive(Default)]
struct CountingKv {
    inner: MemoryKv,
    txns: AtomicUsize,
    max_ops: AtomicUsize,
    max_bytes: AtomicUsize,
    /// Commit before the round trip's delay instead of after: a caller
    /// dropped during the delay has been saved without knowing it.
    commit_first: std::sync::atomic::AtomicBool,
}

impl Kv for CountingKv {
    fn get<'a>(&'a self, key: &'a str) -> KvFuture<'a, Option<Vec<u8>>> {
        self.inner.get(key)
    }
    fn scan<'a>(&'a self, prefix: &'a str, from: &'a str) -> KvFuture<'a, Vec<(String, Vec<u8>)>> {
        self.inner.scan(prefix, from)
    }
    fn last_key<'a>(&'a self, prefix: &'a str) -> KvFuture<'a, Option<String>> {
        self.inner.last_key(prefix)
    }
    fn scan_revisions<'a>(&'a self, prefix: &'a str) -> KvFuture<'a, Vec<(String, i64)>> {
        self.inner.scan_revisions(prefix)
    }
    fn scan_at<'a>(&'a self, prefix: &'a str) -> KvFuture<'a, Listing> {
        self.inner.scan_at(prefix)
    }
    fn watch<'a>(&'a self, prefix: &'a str, from: i64) -> KvFuture<'a, crate::store::ChangeStream> {
        self.inner.watch(prefix, from)
    }
    fn delete_fenced<'a>(
        &'a self,
        term: &'a Term,
        deletes: Vec<Delete>,
        unchanged: Option<(String, i64)>,
    ) -> KvFuture<'a, bool> {
        self.inner.delete_fenced(term, deletes, unchanged)
    }
    fn put_fenced<'a>(&'a self, term: &'a Term, puts: Vec<Put>) -> KvFuture<'a, ()> {
        Box::pin(async move {
            self.txns.fetch_add(1, Ordering::SeqCst);
            self.max_ops.fetch_max(puts.len(), Ordering::SeqCst);
            self.max_bytes.fetch_max(puts.iter().map(Put::size).sum(), Ordering::SeqCst);
            if self.commit_first.load(Ordering::SeqCst) {
                self.inner.put_fenced(term, puts).await?;
                tokio::time::sleep(Duration::from_millis(2)).await;
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
            self.inner.put_fenced(term, puts).await
        })
    }
    fn put_fenced_if<'a>(
        &'a self,
        term: &'a Term,
        puts: Vec<Put>,
        unchanged: Vec<(String, i64)>,
    ) -> KvFuture<'a, bool> {
        self.inner.put_fenced_if(term, puts, unchanged)
    }
    fn revision(&self) -> KvFuture<'_, i64> {
        self.inner.revision()
    }
    fn compact(&self, revision: i64) -> KvFuture<'_, ()> {
        self.inner.compact(revision)
    }
}

struct Setup {
    kv: Arc<CountingKv>,
    term: Term,
    store: RolloutStore,
    bus: EventBus,
}

fn setup() -> Setup {
    let kv = Arc::new(CountingKv::default());
    kv.inner.create_with_revision(b"/runway/leader/a", b"http://c1", 5);
    let term =
        Term { token: FencingToken(5), key: b"/runway/leader/a".to_vec(), cancel: CancellationToken::new() };
    let store = RolloutStore::new(Store::new(kv.clone(), "/runway"));
    let (bus, _) = broadcast::channel(100_000);
    Setup { kv, term, store, bus }
}

fn progress(host: usize) -> NewEvent {
    NewEvent {
        kind: "progress",
        host: format!("app-{host}"),
        message: "working".into(),
        ..NewEvent::default()
    }
}

fn result(host: usize) -> NewEvent {
    NewEvent {
        kind: "command_succeeded",
        host: format!("app-{host}"),
        message: "done".into(),
        ..NewEvent::default()
    }
}

#[tokio::test(start_paused = true)]
async fn results_arriving_together_are_saved_in_few_transactions_each_before_its_call_returns() {
    let s = setup();
    let writer =
        Arc::new(EventWriter::resume("r1", s.term.clone(), s.store.clone(), s.bus.clone()).await.unwrap());
    let mut watcher = s.bus.subscribe();
    let hosts = 1000;
    let calls: Vec<_> = (0..hosts)
        .map(|host| {
            let (writer, store) = (Arc::clone(&writer), s.store.clone());
            tokio::spawn(async move {
                writer.emit_all(vec![progress(host), result(host)]).await.unwrap();
                // What was saved when the call returned.
                store.last_event_seq("r1").await.unwrap()
            })
        })
        .collect();
    let mut saved_at_return = Vec::new();
    for call in calls {
        saved_at_return.push(call.await.unwrap());
    }
    let txns = s.kv.txns.load(Ordering::SeqCst);
    // One write for the first caller, then everything queued behind it in
    // transactions of at most MAX_TXN_OPS operations.
    let least = (2 * hosts).div_ceil(MAX_TXN_OPS);
    assert!(txns <= least + 2, "{txns} transactions for {hosts} results (at least {least} needed)");
    assert!(s.kv.max_ops.load(Ordering::SeqCst) <= MAX_TXN_OPS);

    let saved: Vec<u64> = s.store.events("r1", 1).await.unwrap().iter().map(|e| e.seq).collect();
    assert_eq!(saved, (1..=2 * hosts as u64).collect::<Vec<_>>(), "numbered without gaps");
    let mut heard = Vec::new();
    while let Ok(event) = watcher.try_recv() {
        heard.push(event.seq);
    }
    assert_eq!(heard, saved, "each event broadcast once, in order, after it was saved");
    // Each host's progress comes before its result, and both were saved
    // before its call returned.
    let events = s.store.events("r1", 1).await.unwrap();
    let mut of_host: Vec<Vec<(&str, u64)>> = vec![Vec::new(); hosts];
    for e in &events {
        let host: usize = e.host.trim_start_matches("app-").parse().unwrap();
        of_host[host].push((e.kind.as_str(), e.seq));
    }
    for (host, saved) in of_host.iter().enumerate() {
        let kinds: Vec<&str> = saved.iter().map(|(kind, _)| *kind).collect();
        assert_eq!(kinds, ["progress", "command_succeeded"]);
        assert!(saved[1].1 <= saved_at_return[host], "app-{host}'s result was saved after its call returned");
    }
}

#[tokio::test(start_paused = true)]
async fn a_part_over_the_limits_is_saved_in_pieces_and_a_record_stays_with_its_event() {
    let s = setup();
    let writer = EventWriter::resume("r1", s.term.clone(), s.store.clone(), s.bus.clone()).await.unwrap();
    writer.emit_all((0..300).map(progress).collect()).await.unwrap();
    assert_eq!(s.kv.txns.load(Ordering::SeqCst), 3, "300 events: 128 + 128 + 44");

    let big = |i: usize| NewEvent { detail_json: "x".repeat(200 * 1024), ..result(i) };
    writer.emit_all((0..20).map(big).collect()).await.unwrap();
    let txns = s.kv.txns.load(Ordering::SeqCst) - 3;
    assert!(txns >= 4, "4 MB of events need at least 4 transactions under the byte limit, got {txns}");
    assert!(s.kv.max_bytes.load(Ordering::SeqCst) <= MAX_TXN_BYTES);

    let record = crate::model::RolloutRecord { id: "r1".into(), ..Default::default() };
    let before = s.kv.txns.load(Ordering::SeqCst);
    writer.emit_with(NewEvent { kind: "step_started", ..NewEvent::default() }, &record).await.unwrap();
    assert_eq!(s.kv.txns.load(Ordering::SeqCst), before + 1, "the record and its event: one transaction");
    assert_eq!(s.store.get_rollout("r1").await.unwrap().map(|r| r.id), Some("r1".into()));
    assert_eq!(s.store.last_event_seq("r1").await.unwrap(), 321);
}

#[tokio::test(start_paused = true)]
async fn a_refused_write_fails_every_waiter_and_broadcasts_nothing() {
    let s = setup();
    let writer =
        Arc::new(EventWriter::resume("r1", s.term.clone(), s.store.clone(), s.bus.clone()).await.unwrap());
    let mut watcher = s.bus.subscribe();
    // Another coordinator leads now.
    s.kv.inner.delete_prefix("/runway/leader/");
    s.kv.inner.create_with_revision(b"/runway/leader/b", b"http://c2", 9);
    let calls: Vec<_> = (0..50)
        .map(|host| {
            let writer = Arc::clone(&writer);
            tokio::spawn(async move { writer.emit_all(vec![progress(host), result(host)]).await })
        })
        .collect();
    for call in calls {
        let refused = call.await.unwrap();
        assert!(matches!(refused, Err(StoreError::Fenced(5))), "{refused:?}");
    }
    assert!(watcher.try_recv().is_err(), "nothing unsaved is broadcast");
    assert!(s.store.events("r1", 1).await.unwrap().is_empty());
    assert!(s.term.cancel.is_cancelled(), "the refused write ended the term");
}

#[tokio::test(start_paused = true)]
async fn a_write_cut_off_after_etcd_saved_it_is_not_overwritten_by_the_next() {
    let s = setup();
    let writer = EventWriter::resume("r1", s.term.clone(), s.store.clone(), s.bus.clone()).await.unwrap();
    s.kv.commit_first.store(true, Ordering::SeqCst);
    // The caller goes away while the saved transaction's answer is on its way.
    let cut = tokio::time::timeout(Duration::from_millis(1), writer.emit(progress(1))).await;
    assert!(cut.is_err(), "the write was cut off");
    assert_eq!(s.store.last_event_seq("r1").await.unwrap(), 1, "etcd saved it anyway");

    writer.emit(result(1)).await.unwrap();
    let saved: Vec<(u64, String)> =
        s.store.events("r1", 1).await.unwrap().into_iter().map(|e| (e.seq, e.kind)).collect();
    assert_eq!(
        saved,
        [(1, "progress".to_owned()), (2, "command_succeeded".to_owned())],
        "numbered after what etcd holds"
    );
}
