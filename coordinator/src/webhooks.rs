//! Notifications: the leader tells each environment's webhooks about its
//! rollouts (started, awaiting approval, maintenance on and off, and how
//! it ended), in order, at most once per event across failovers, and
//! never in the rollout's way.
//!
//! - [`payload`]: which saved events are notifications, and the request
//!   each webhook format makes of one.
//!
//! # How
//!
//! Notifications are read off each rollout's saved event log, so one
//! exists exactly when its transition was saved (fenced, once). A rollout
//! carries the names of its environment's webhooks from when it was
//! accepted ([`RolloutRecord::notify`](crate::model::RolloutRecord::notify)). For each (rollout, webhook) the
//! leader keeps a cursor in etcd, `notify/<rollout>/<webhook>`: the last
//! event dealt with, and every delivery's outcome. One task per pair
//! sends the notifications after the cursor one at a time, in log order.
//! The leader learns of transitions from the rollout feed
//! ([`crate::repo::feed`]: an etcd watch of the rollout records, each
//! transition being saved with its record), not from a periodic rescan.
//!
//! Before each attempt the cursor is saved with `sending = SEQ` (a fenced
//! write: only the leader sends); after it, with the outcome. A failed
//! attempt (an error, a timeout, a non-2xx answer) is retried with
//! exponential backoff up to [`MAX_ATTEMPTS`] times, then given up (the
//! next notification follows). A new leader that finds `sending` set
//! knows the old one may have sent it and does not send it again: it is
//! recorded as `unknown`. So a notification is never sent twice by two
//! leaders; it can be lost only when a leader dies during the very HTTP
//! request, and the `Idempotency-Key` header (`ROLLOUT/SEQ`, the same on
//! every retry) lets a receiver drop a retry it already has.
//!
//! Webhook URLs and template headers are secrets: logs and saved errors
//! name the webhook, never its URL.

pub mod payload;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use self::payload::{Notification, notification_of};
use crate::config::{Config, Webhook};
use crate::failpoint;
use crate::fencing::Term;
use crate::leadership::{Election, Leadership};
use crate::model::RolloutRecord;
use crate::repo::RolloutStore;
use crate::repo::feed::{self, Batch};
use crate::store::{Put, Store, StoreError};

/// Attempts per notification and webhook before it is given up.
pub const MAX_ATTEMPTS: u32 = 8;

/// How long one request may take, connecting included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// How one notification ended for one webhook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The webhook answered 2xx.
    Delivered,
    /// Every attempt failed.
    GaveUp,
    /// A leader died while sending it; not sent again (at most once).
    Unknown,
    /// The webhook is no longer configured; not sent.
    Unconfigured,
}

/// One delivery, as recorded in the cursor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    pub seq: u64,
    pub event: String,
    pub outcome: Outcome,
    pub attempts: u32,
    /// The last attempt's error (no URL in it).
    #[serde(default)]
    pub error: String,
    pub unix_ms: i64,
}

/// Where one webhook stands with one rollout, saved at
/// `notify/<rollout>/<webhook>`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// The webhook's name.
    #[serde(default)]
    pub webhook: String,
    /// Every event up to this sequence number is dealt with.
    pub done_seq: u64,
    /// Saved before each attempt: a request for this event may be on its way.
    #[serde(default)]
    pub sending: Option<u64>,
    /// Attempts so far at the next notification.
    #[serde(default)]
    pub attempts: u32,
    /// The last failed attempt's error.
    #[serde(default)]
    pub last_error: String,
    /// How each notification ended, in order.
    #[serde(default)]
    pub deliveries: Vec<Delivery>,
}

/// Why a task stopped sending before it caught up; the next scan (or
/// the next leader) resumes from the saved cursor.
#[derive(Debug, thiserror::Error)]
enum Stop {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("leadership ended")]
    TermEnded,
}

/// A (rollout, webhook) pair.
type Pair = (String, String);

#[derive(Default)]
struct Progress {
    /// Pairs a task works on now.
    active: HashSet<Pair>,
    /// Active pairs whose rollout changed since their task started.
    again: HashSet<Pair>,
    /// Pairs of ended rollouts with nothing left to send, by the record's
    /// `updated_unix_ms` then: skipped until the rollout changes again (a
    /// rollback reopens it).
    settled: HashMap<Pair, i64>,
}

impl Progress {
    /// Forgets the settled pairs of rollouts no longer saved (retention
    /// pruned them), `kept` being every rollout that is: the memory of
    /// settled pairs stays as small as what etcd keeps.
    fn forget_deleted(&mut self, kept: &HashSet<&str>) {
        self.settled.retain(|(rollout, _), _| kept.contains(rollout.as_str()));
    }
}

/// Sends notifications while this coordinator leads. Cheap to clone.
#[derive(Clone)]
pub struct Webhooks {
    config: Arc<Config>,
    rollouts: RolloutStore,
    store: Store,
    client: reqwest::Client,
    tracker: TaskTracker,
}

/// The HTTP client cannot be set up (TLS roots).
#[derive(Debug, thiserror::Error)]
#[error("cannot set up the webhook HTTP client: {0}")]
pub struct ClientError(String);

impl Webhooks {
    /// Webhooks reading rollouts from `rollouts`, keeping cursors in
    /// `store`; its tasks run on `tracker`.
    pub fn new(
        config: Arc<Config>,
        rollouts: RolloutStore,
        store: Store,
        tracker: TaskTracker,
    ) -> Result<Self, ClientError> {
        let client = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(REQUEST_TIMEOUT / 2)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("runway-coordinator/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ClientError(e.without_url().to_string()))?;
        Ok(Self { config, rollouts, store, client, tracker })
    }

    /// Sends while this coordinator leads, from each new term on. Returns
    /// at `shutdown` or when the election goes away.
    pub async fn follow_leadership(self, election: Arc<dyn Election>, shutdown: CancellationToken) {
        let mut changes = election.subscribe();
        let mut leading = false;
        loop {
            match changes.borrow_and_update().clone() {
                Leadership::Leader(term) if !leading => {
                    leading = true;
                    self.tracker.spawn(self.clone().lead(term));
                }
                Leadership::Follower { .. } => leading = false,
                _ => {}
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                changed = changes.changed() => if changed.is_err() { return },
            }
        }
    }

    /// Looks for notifications to send whenever a rollout record is
    /// written (every transition that may be a notification is saved with
    /// its record), from the rollout feed, until `term` ends.
    async fn lead(self, term: Term) {
        let progress = Arc::new(Mutex::new(Progress::default()));
        feed::follow(&self.rollouts, &term, |records, batch| {
            if batch == Batch::Every {
                let kept: HashSet<&str> = records.iter().map(|r| r.id.as_str()).collect();
                progress.lock().expect("notify lock").forget_deleted(&kept);
            }
            self.scan(&term, &progress, records);
            async {}
        })
        .await;
    }

    /// Starts a task for every (rollout, webhook) pair of `records` that
    /// may have something to send and has none yet; a pair whose task runs
    /// is marked, so the task looks again before it ends.
    fn scan(&self, term: &Term, progress: &Arc<Mutex<Progress>>, records: Vec<RolloutRecord>) {
        for record in records {
            for name in &record.notify {
                let pair = (record.id.clone(), name.clone());
                {
                    let mut progress = progress.lock().expect("notify lock");
                    let settled = progress.settled.get(&pair) == Some(&record.updated_unix_ms);
                    if record.state.is_terminal() && settled {
                        continue;
                    }
                    if progress.active.contains(&pair) {
                        progress.again.insert(pair);
                        continue;
                    }
                    progress.active.insert(pair.clone());
                }
                let webhook = self
                    .config
                    .environments
                    .policy(&record.environment)
                    .webhooks
                    .into_iter()
                    .find(|w| w.name == *name);
                let (webhooks, term, progress) = (self.clone(), term.clone(), Arc::clone(progress));
                let span = tracing::info_span!("notify", rollout_id = %record.id, webhook = %name);
                self.tracker.spawn(tracing::Instrument::instrument(
                    async move {
                        loop {
                            let caught_up = webhooks.deliver(&term, &pair, webhook.as_ref()).await;
                            let mut progress = progress.lock().expect("notify lock");
                            // The rollout changed while this task sent: look again.
                            if caught_up.is_ok() && progress.again.remove(&pair) {
                                continue;
                            }
                            progress.active.remove(&pair);
                            progress.again.remove(&pair);
                            match caught_up {
                                Ok(Some(updated)) => {
                                    progress.settled.insert(pair, updated);
                                }
                                Ok(None) => {}
                                Err(e) => tracing::warn!(error = %e, "notifications stopped; the next change or the feed's safety listing resumes them"),
                            }
                            return;
                        }
                    },
                    span,
                ));
            }
        }
    }

    /// How every webhook was told about rollout `id` so far, for `rollout show`.
    pub async fn deliveries(
        &self,
        id: &str,
    ) -> Result<Vec<runway_proto::v1::NotificationDelivery>, StoreError> {
        let cursors: Vec<Cursor> = self.store.list_json(&self.store.key(&format!("notify/{id}/"))).await?;
        let mut out = Vec::new();
        for cursor in cursors {
            let wire = |event: &str, outcome: &str, attempts: u32, error: &str, unix_ms: i64| {
                runway_proto::v1::NotificationDelivery {
                    webhook: cursor.webhook.clone(),
                    event: event.to_owned(),
                    outcome: outcome.to_owned(),
                    attempts,
                    error: error.to_owned(),
                    unix_ms,
                }
            };
            for d in &cursor.deliveries {
                let outcome = serde_json::to_value(d.outcome).ok();
                let outcome = outcome.as_ref().and_then(|o| o.as_str()).unwrap_or("unknown");
                out.push(wire(&d.event, outcome, d.attempts, &d.error, d.unix_ms));
            }
            if cursor.sending.is_some() {
                out.push(wire("", "sending", cursor.attempts, &cursor.last_error, 0));
            } else if cursor.attempts > 0 {
                out.push(wire("", "retrying", cursor.attempts, &cursor.last_error, 0));
            }
        }
        Ok(out)
    }

    fn cursor_key(&self, (rollout, webhook): &Pair) -> String {
        self.store.key(&format!("notify/{rollout}/{webhook}"))
    }

    /// Saves `cursor` at `key` (`notify/<rollout>/<webhook>`) while its
    /// rollout's record exists: the write is conditioned on the record's
    /// revision, so a prune that deleted the rollout (and its cursors)
    /// meanwhile is not undone by an orphan cursor. A record written in
    /// between (the runner moved on) only makes it read the revision again.
    async fn save(&self, term: &Term, key: &str, cursor: &Cursor) -> Result<(), StoreError> {
        let rollout = key
            .strip_prefix(&self.store.key("notify/"))
            .and_then(|rest| rest.split_once('/'))
            .map(|(rollout, _)| self.store.key(&format!("rollouts/{rollout}")));
        let Some(rollout) = rollout else {
            return self.store.put_fenced(term, vec![Put::json(key.to_owned(), cursor)]).await;
        };
        loop {
            let record = self.store.marker(rollout.clone()).await?;
            if record.revision == 0 {
                tracing::info!(%key, "the rollout was pruned; its notification cursor is not saved");
                return Ok(());
            }
            let put = Put::json(key.to_owned(), cursor);
            if self.store.put_fenced_if(term, vec![put], vec![record.unchanged()]).await? {
                return Ok(());
            }
        }
    }

    /// Sends `pair`'s notifications after its cursor, in order, until none
    /// is left. `Some(updated_unix_ms)` of the rollout record when it has
    /// ended and everything is dealt with.
    async fn deliver(
        &self,
        term: &Term,
        pair: &Pair,
        webhook: Option<&Webhook>,
    ) -> Result<Option<i64>, Stop> {
        let key = self.cursor_key(pair);
        let mut cursor: Cursor = self.store.get_json(&key).await?.unwrap_or_default();
        cursor.webhook = pair.1.clone();
        if let Some(seq) = cursor.sending.take() {
            // A leader died with a request for `seq` perhaps on its way:
            // never send it twice.
            tracing::warn!(
                seq,
                "a notification was being sent when the last leader stopped; not sending it again"
            );
            cursor.deliveries.push(Delivery {
                seq,
                event: String::new(),
                outcome: Outcome::Unknown,
                attempts: cursor.attempts,
                error: std::mem::take(&mut cursor.last_error),
                unix_ms: runway_proto::unix_ms_now(),
            });
            cursor.done_seq = cursor.done_seq.max(seq);
            cursor.attempts = 0;
            self.save(term, &key, &cursor).await?;
        }
        loop {
            let Some(record) = self.rollouts.get_rollout(&pair.0).await? else { return Ok(None) };
            let events = self.rollouts.events(&pair.0, cursor.done_seq + 1).await?;
            let next = events.iter().find_map(|event| {
                notification_of(&record, event).filter(|n| webhook.is_none_or(|w| w.wants(n.event)))
            });
            let Some(notification) = next else {
                return Ok(record.state.is_terminal().then_some(record.updated_unix_ms));
            };
            let outcome = match webhook {
                Some(webhook) => {
                    self.send_with_retries(term, &key, &mut cursor, webhook, &notification).await?
                }
                None => {
                    tracing::warn!(
                        "webhook is no longer configured for this environment; skipping its notifications"
                    );
                    Outcome::Unconfigured
                }
            };
            cursor.deliveries.push(Delivery {
                seq: notification.seq,
                event: notification.event.as_str().to_owned(),
                outcome,
                attempts: cursor.attempts,
                error: std::mem::take(&mut cursor.last_error),
                unix_ms: runway_proto::unix_ms_now(),
            });
            cursor.done_seq = notification.seq;
            cursor.attempts = 0;
            self.save(term, &key, &cursor).await?;
            if let Some(pause) = failpoint::pause_after_notification() {
                tracing::warn!(ms = pause.as_millis() as u64, "failpoint: pausing after a notification");
                tokio::time::sleep(pause).await;
            }
        }
    }

    /// Tries `notification` until the webhook takes it or [`MAX_ATTEMPTS`]
    /// failed, saving `cursor` before and after each attempt.
    async fn send_with_retries(
        &self,
        term: &Term,
        key: &str,
        cursor: &mut Cursor,
        webhook: &Webhook,
        notification: &Notification,
    ) -> Result<Outcome, Stop> {
        let mut delays = ExponentialBuilder::default()
            .with_min_delay(Duration::from_secs(1))
            .with_max_delay(Duration::from_secs(60))
            .without_max_times()
            .build();
        loop {
            cursor.sending = Some(notification.seq);
            cursor.attempts += 1;
            self.save(term, key, cursor).await?;
            let sent = tokio::select! {
                _ = term.cancel.cancelled() => return Err(Stop::TermEnded),
                sent = self.send(webhook, notification) => sent,
            };
            cursor.sending = None;
            match sent {
                Ok(status) => {
                    tracing::info!(
                        event = notification.event.as_str(),
                        seq = notification.seq,
                        status,
                        attempts = cursor.attempts,
                        "notification delivered"
                    );
                    return Ok(Outcome::Delivered);
                }
                Err(error) => {
                    tracing::warn!(event = notification.event.as_str(), seq = notification.seq, attempt = cursor.attempts, %error, "notification not delivered");
                    cursor.last_error = error;
                    if cursor.attempts >= MAX_ATTEMPTS {
                        return Ok(Outcome::GaveUp);
                    }
                    self.save(term, key, cursor).await?;
                    let delay = delays.next().unwrap_or(Duration::from_secs(60));
                    tokio::select! {
                        _ = term.cancel.cancelled() => return Err(Stop::TermEnded),
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }

    /// One attempt: the HTTP status on 2xx, else why not (no URL in it).
    async fn send(&self, webhook: &Webhook, notification: &Notification) -> Result<u16, String> {
        let request = notification.request(webhook);
        let url = webhook.url.expose();
        let redact = |text: String| if url.is_empty() { text } else { text.replace(url, "***") };
        let method = reqwest::Method::from_bytes(request.method.as_bytes())
            .map_err(|_| format!("method {:?} is not an HTTP method", request.method))?;
        let mut builder = self
            .client
            .request(method, url)
            .header(reqwest::header::CONTENT_TYPE, request.content_type)
            .header("Idempotency-Key", &notification.id)
            .header("X-Runway-Event", notification.event.as_str())
            .body(request.body);
        for (name, value) in request.headers {
            builder = builder.header(name, value);
        }
        match builder.send().await {
            Ok(response) if response.status().is_success() => Ok(response.status().as_u16()),
            Ok(response) => Err(format!("webhook answered HTTP {}", response.status())),
            Err(e) => Err(redact(error_chain(&e.without_url()))),
        }
    }
}

/// An error and its sources, `a: b: c`.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(&format!(": {e}"));
        source = e.source();
    }
    text
}

#[cfg(test)]
mod tests;
