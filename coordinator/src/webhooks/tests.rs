//! The webhooks sender against the in-memory store and a receiver on 127.0.0.1.
use runway_proto::v1::RolloutEvent;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use super::*;
use crate::config::{NotifyEvent, Secret, WebhookFormat};
use crate::fencing::FencingToken;
use crate::model::{RolloutRecord, RolloutState};
use crate::store::memory::MemoryKv;

/// A receiver on 127.0.0.1 answering 200: the `X-Runway-Event` of each
/// request, in order.
async fn receiver() -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let got: Arc<Mutex<Vec<String>>> = Arc::default();
    let log = Arc::clone(&got);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let mut reader = BufReader::new(stream);
            let (mut event, mut length, mut line) = (String::new(), 0, String::new());
            while reader.read_line(&mut line).await.unwrap_or(0) > 0 && line.trim() != "" {
                let lower = line.to_ascii_lowercase();
                if let Some(v) = lower.strip_prefix("x-runway-event:") {
                    event = v.trim().to_owned();
                }
                if let Some(v) = lower.strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
                line.clear();
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body).await;
            log.lock().unwrap().push(event);
            let _ = reader
                .get_mut()
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                .await;
        }
    });
    (url, got)
}

fn webhook(url: &str, events: Vec<NotifyEvent>) -> Webhook {
    Webhook {
        name: "w".into(),
        format: WebhookFormat::Json,
        url: Secret::from(url),
        events,
        link: None,
        method: None,
        headers: Default::default(),
        body: None,
        content_type: None,
        status: Default::default(),
    }
}

/// A store holding rollout `r1` (ended `succeeded`) and its events:
/// started, maintenance on, progress, succeeded; with a term to write.
async fn setup() -> (Webhooks, Term) {
    let kv = Arc::new(MemoryKv::new());
    kv.create_with_revision(b"/runway/leader/x", b"c1", 5);
    let term =
        Term { token: FencingToken(5), key: b"/runway/leader/x".to_vec(), cancel: CancellationToken::new() };
    let store = Store::new(kv, "/runway");
    let rollouts = RolloutStore::new(store.clone());
    let record = RolloutRecord {
        id: "r1".into(),
        environment: "staging".into(),
        bundle_digest: "d".into(),
        state: RolloutState::Succeeded,
        updated_unix_ms: 42,
        notify: vec!["w".into()],
        ..RolloutRecord::default()
    };
    let kinds = [
        ("rollout_started", ""),
        ("step_succeeded", "maintenance_on"),
        ("progress", "migrate"),
        ("rollout_succeeded", ""),
    ];
    for (i, (kind, step)) in kinds.into_iter().enumerate() {
        let event = RolloutEvent {
            rollout_id: "r1".into(),
            seq: i as u64 + 1,
            kind: kind.into(),
            step: step.into(),
            ..RolloutEvent::default()
        };
        rollouts.append_event(&term, &event, Some(&record), None).await.unwrap();
    }
    let webhooks = Webhooks::new(Arc::new(Config::default()), rollouts, store, TaskTracker::new()).unwrap();
    (webhooks, term)
}

fn pair() -> Pair {
    ("r1".into(), "w".into())
}

#[tokio::test]
async fn sends_each_notification_once_in_order_and_records_it() {
    let (webhooks, term) = setup().await;
    let (url, got) = receiver().await;
    let hook = webhook(&url, Vec::new());
    assert_eq!(
        webhooks.deliver(&term, &pair(), Some(&hook)).await.unwrap(),
        Some(42),
        "caught up on an ended rollout"
    );
    assert_eq!(*got.lock().unwrap(), ["started", "maintenance_on", "succeeded"]);
    // Run again (a rescan, a new leader): nothing is sent twice.
    webhooks.deliver(&term, &pair(), Some(&hook)).await.unwrap();
    assert_eq!(got.lock().unwrap().len(), 3);
    let cursor: Cursor = webhooks.store.get_json("/runway/notify/r1/w").await.unwrap().unwrap();
    let outcomes: Vec<(u64, Outcome)> = cursor.deliveries.iter().map(|d| (d.seq, d.outcome)).collect();
    assert_eq!(outcomes, [(1, Outcome::Delivered), (2, Outcome::Delivered), (4, Outcome::Delivered)]);
    assert_eq!((cursor.done_seq, cursor.sending), (4, None));
}

#[tokio::test]
async fn a_notification_a_dead_leader_was_sending_is_not_sent_again() {
    let (webhooks, term) = setup().await;
    // The last leader saved "sending maintenance_on" and died.
    let cursor = Cursor { done_seq: 1, sending: Some(2), attempts: 1, ..Cursor::default() };
    webhooks.save(&term, "/runway/notify/r1/w", &cursor).await.unwrap();
    let (url, got) = receiver().await;
    // Only `succeeded` is wanted besides, and is sent.
    let hook = webhook(&url, Vec::new());
    webhooks.deliver(&term, &pair(), Some(&hook)).await.unwrap();
    assert_eq!(*got.lock().unwrap(), ["succeeded"], "at most once: maintenance_on may have gone out");
    let cursor: Cursor = webhooks.store.get_json("/runway/notify/r1/w").await.unwrap().unwrap();
    let outcomes: Vec<(u64, Outcome)> = cursor.deliveries.iter().map(|d| (d.seq, d.outcome)).collect();
    assert_eq!(outcomes, [(2, Outcome::Unknown), (4, Outcome::Delivered)]);
}

#[tokio::test]
async fn a_webhook_gets_only_its_events_and_a_deposed_leader_sends_nothing() {
    let (webhooks, term) = setup().await;
    let (url, got) = receiver().await;
    let hook = webhook(&url, vec![NotifyEvent::Succeeded]);
    let stale = Term { token: FencingToken(4), key: term.key.clone(), cancel: CancellationToken::new() };
    assert!(webhooks.deliver(&stale, &pair(), Some(&hook)).await.is_err(), "the claim is a fenced write");
    assert!(got.lock().unwrap().is_empty(), "nothing is sent without the claim");
    webhooks.deliver(&term, &pair(), Some(&hook)).await.unwrap();
    assert_eq!(*got.lock().unwrap(), ["succeeded"]);
}

/// A prune deleted the rollout (and its cursors) while its notifications
/// were on their way: the cursor is not written back as an orphan.
#[tokio::test]
async fn a_pruned_rollout_gets_no_orphan_cursor() {
    let (webhooks, term) = setup().await;
    let cursor = Cursor { done_seq: 1, ..Cursor::default() };
    webhooks.save(&term, "/runway/notify/r1/w", &cursor).await.unwrap();
    assert!(webhooks.store.get("/runway/notify/r1/w").await.unwrap().is_some(), "saved while r1 exists");
    let revision = webhooks.rollouts.rollout_revisions().await.unwrap()[0].1;
    assert!(webhooks.rollouts.delete_rollout(&term, "r1", revision).await.unwrap());
    webhooks.save(&term, "/runway/notify/r1/w", &cursor).await.unwrap();
    assert!(webhooks.store.get("/runway/notify/r1/w").await.unwrap().is_none(), "no orphan");
}

#[test]
fn settled_pairs_of_deleted_rollouts_are_forgotten_at_the_next_listing() {
    let mut progress = Progress::default();
    progress.settled.insert(("r1".into(), "w".into()), 1);
    progress.settled.insert(("r1".into(), "chat".into()), 1);
    progress.settled.insert(("r2".into(), "w".into()), 2);
    progress.forget_deleted(&HashSet::from(["r2", "r3"]));
    let left: Vec<&Pair> = progress.settled.keys().collect();
    assert_eq!(left, [&("r2".to_owned(), "w".to_owned())], "r1 was pruned from etcd");
}
