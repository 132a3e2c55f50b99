//! The rollout event log: numbered, saved in etcd, broadcast to watchers.
//!
//! Sequence numbers start at 1 per rollout and have no gaps: an event is
//! numbered, written to etcd (fenced), and only then broadcast. Watchers
//! read what is saved and then follow the broadcast, so a watcher that
//! reconnects with its last sequence number misses nothing and sees
//! nothing twice.
//!
//! # Batched writes
//!
//! A step on ten thousand hosts sends ten thousand results at once; one
//! transaction each would queue them behind each other for seconds. So
//! writes of one rollout are group-committed: every call queues its
//! events (and the record and audit entry that must go with them) and
//! waits for the write lock; whoever gets it writes everything queued by
//! then, in as few fenced transactions as etcd's limits allow
//! ([`MAX_TXN_OPS`] operations, [`MAX_TXN_BYTES`] bytes), and tells each
//! waiter how its own part went. A caller's part is never split between
//! transactions unless it alone is over a limit, so a record and the event
//! that reports its change stay in one transaction.
//!
//! Saved before acted on still holds: a call returns `Ok` only after the
//! transaction holding the last of its events succeeded; an event is
//! broadcast (to watchers and the webhooks) only after its transaction
//! succeeded; and the runner decides a step, or sends the next command,
//! only after the call that records what it acts on returned `Ok`. When a
//! transaction fails, every caller whose part was not yet saved gets an
//! error, nothing of theirs is broadcast, and the sequence numbers they
//! were given are reused by the next write (nothing was saved under them).

use std::sync::Mutex as SyncMutex;

use runway_proto::v1::{Counters, RolloutEvent, RolloutState};
use tokio::sync::{Mutex, broadcast, oneshot};

use super::RolloutStore;
use crate::fencing::Term;
use crate::model::RolloutRecord;
use crate::store::{Put, StoreError};

/// Operations one etcd transaction may hold (etcd's `--max-txn-ops`
/// default).
pub const MAX_TXN_OPS: usize = 128;

/// Bytes of keys and values one batched transaction may hold: under
/// etcd's default request limit of 1.5 MiB, with room for the envelope.
pub const MAX_TXN_BYTES: usize = 1024 * 1024;

/// Live events of every rollout this coordinator runs.
pub type EventBus = broadcast::Sender<RolloutEvent>;

/// What an event is about; the writer fills in rollout, number and time.
#[derive(Debug, Default, Clone)]
pub struct NewEvent {
    /// What happened, e.g. `step_started`, `command_failed`, `progress`.
    pub kind: &'static str,
    /// The step's name, if the event is about a step.
    pub step: String,
    /// The agent, if the event is about one command.
    pub host: String,
    /// The command, if the event is about one.
    pub command_id: String,
    /// The agent's phase, on progress events.
    pub phase: String,
    /// For people.
    pub message: String,
    /// Bytes and migrations done, on progress events.
    pub counters: Option<Counters>,
    /// A finished command's result as JSON.
    pub detail_json: String,
    /// Set on the rollout's last event.
    pub terminal: Option<RolloutState>,
    /// On a command's result: the agent's own work time.
    pub work_ms: u64,
}

/// Appends events of one rollout.
pub struct EventWriter {
    rollout_id: String,
    term: Term,
    store: RolloutStore,
    bus: EventBus,
    /// Parts waiting to be written, in the order they were queued.
    queue: SyncMutex<Vec<Queued>>,
    /// The write lock, and the next sequence number: `None` after a write
    /// was cut off half-way (its caller's future dropped during the
    /// transaction), when only etcd knows whether it was saved.
    next_seq: Mutex<Option<u64>>,
}

/// One caller's part of a batched write.
struct Queued {
    events: Vec<NewEvent>,
    /// Written in the same transaction as `events` (the rollout record, an
    /// audit entry).
    with: Vec<Put>,
    done: oneshot::Sender<Result<(), StoreError>>,
}

impl EventWriter {
    /// Continues the log of `rollout_id` after what etcd already holds.
    pub async fn resume(
        rollout_id: &str,
        term: Term,
        store: RolloutStore,
        bus: EventBus,
    ) -> Result<Self, StoreError> {
        let last = store.last_event_seq(rollout_id).await?;
        Ok(Self {
            rollout_id: rollout_id.to_owned(),
            term,
            store,
            bus,
            queue: SyncMutex::default(),
            next_seq: Mutex::new(Some(last + 1)),
        })
    }

    /// Numbers, saves and broadcasts `event`.
    pub async fn emit(&self, event: NewEvent) -> Result<(), StoreError> {
        self.write(vec![event], Vec::new()).await
    }

    /// Numbers, saves and broadcasts `events`, in order, with consecutive
    /// numbers (in one transaction unless they are over its limits).
    pub async fn emit_all(&self, events: Vec<NewEvent>) -> Result<(), StoreError> {
        self.write(events, Vec::new()).await
    }

    /// Saves `record` and appends `event` in one transaction.
    pub async fn emit_with(&self, event: NewEvent, record: &RolloutRecord) -> Result<(), StoreError> {
        self.write(vec![event], vec![self.store.rollout_put(record)]).await
    }

    /// Saves `record`, appends `event` and writes `audit` (an audit log
    /// entry) in one transaction: how a rollout ended is never saved
    /// without its audit entry.
    pub async fn emit_audited(
        &self,
        event: NewEvent,
        record: &RolloutRecord,
        audit: Put,
    ) -> Result<(), StoreError> {
        self.write(vec![event], vec![self.store.rollout_put(record), audit]).await
    }

    /// Queues a part and returns once it is saved (or its write failed);
    /// writes what is queued when this call gets the write lock first.
    async fn write(&self, events: Vec<NewEvent>, with: Vec<Put>) -> Result<(), StoreError> {
        if events.is_empty() && with.is_empty() {
            return Ok(());
        }
        let (done, mut outcome) = oneshot::channel();
        self.queue.lock().expect("event queue lock").push(Queued { events, with, done });
        // A writer before us may take our part along: then we are done
        // without ever holding the lock (with thousands of callers, taking
        // it in turn only to find their part written would be a long queue).
        let mut next = tokio::select! {
            biased;
            result = &mut outcome => return result.unwrap_or_else(|_| Err(writer_gone())),
            next = self.next_seq.lock() => next,
        };
        if let Ok(result) = outcome.try_recv() {
            return result;
        }
        let parts = std::mem::take(&mut *self.queue.lock().expect("event queue lock"));
        let known = match *next {
            Some(seq) => Ok(seq),
            None => self.store.last_event_seq(&self.rollout_id).await.map(|last| last + 1),
        };
        match known {
            Ok(mut seq) => {
                // Unknown until this write ends; a caller dropped half-way leaves it so.
                *next = None;
                self.write_parts(&mut seq, parts).await;
                *next = Some(seq);
            }
            Err(e) => fail(e, parts.into_iter().map(|p| p.done)),
        }
        outcome.await.unwrap_or_else(|_| Err(writer_gone()))
    }

    /// Writes `parts` in order, in as few transactions as the limits
    /// allow, and completes each part once all of it is saved.
    async fn write_parts(&self, next: &mut u64, parts: Vec<Queued>) {
        let mut batch = Batch::default();
        let mut parts = parts.into_iter();
        // Numbers given so far; `next` moves on only with each saved transaction.
        let mut seq = *next;
        while let Some(part) = parts.next() {
            let numbered: Vec<RolloutEvent> = part
                .events
                .into_iter()
                .map(|e| {
                    seq += 1;
                    self.number(e, seq - 1)
                })
                .collect();
            let puts: Vec<Put> = numbered.iter().map(|e| self.store.event_put(e)).chain(part.with).collect();
            let ops = puts.len();
            let bytes: usize = puts.iter().map(Put::size).sum();
            if !batch.is_empty()
                && !batch.fits(ops, bytes)
                && let Err(e) = self.flush(next, &mut batch).await
            {
                return fail(e, std::iter::once(part.done).chain(parts.map(|p| p.done)));
            }
            if batch.fits(ops, bytes) {
                batch.add(numbered, puts, Some(part.done));
                continue;
            }
            // Over a limit on its own (many events, none tied to a record):
            // saved in pieces, completed with the last.
            let mut numbered = numbered.into_iter().peekable();
            let mut puts = puts.into_iter();
            let mut done = Some(part.done);
            while let Some(event) = numbered.next() {
                let put = puts.next().expect("one put per event");
                if !batch.is_empty()
                    && !batch.fits(1, put.size())
                    && let Err(e) = self.flush(next, &mut batch).await
                {
                    return fail(e, done.into_iter().chain(parts.map(|p| p.done)));
                }
                let last = numbered.peek().is_none();
                batch.add(vec![event], vec![put], if last { done.take() } else { None });
            }
        }
        if !batch.is_empty()
            && let Err(e) = self.flush(next, &mut batch).await
        {
            fail(e, std::iter::empty());
        }
    }

    /// One fenced transaction of `batch`; on success its events are
    /// numbered for good, broadcast, and its finished parts told. On
    /// failure the parts in it are told, and the error returned for the rest.
    async fn flush(&self, next: &mut u64, batch: &mut Batch) -> Result<(), StoreError> {
        let Batch { events, puts, done, .. } = std::mem::take(batch);
        match self.store.put_batch(&self.term, puts).await {
            Ok(()) => {
                *next += events.len() as u64;
                for event in events {
                    let _ = self.bus.send(event);
                }
                for done in done {
                    let _ = done.send(Ok(()));
                }
                Ok(())
            }
            Err(e) => {
                let shared = shared_error(&e);
                let mut done = done.into_iter();
                if let Some(first) = done.next() {
                    let _ = first.send(Err(e));
                }
                for other in done {
                    let _ = other.send(Err(shared_error(&shared)));
                }
                Err(shared)
            }
        }
    }

    fn number(&self, event: NewEvent, seq: u64) -> RolloutEvent {
        RolloutEvent {
            rollout_id: self.rollout_id.clone(),
            seq,
            unix_ms: runway_proto::unix_ms_now(),
            step: event.step,
            host: event.host,
            command_id: event.command_id,
            kind: event.kind.to_owned(),
            phase: event.phase,
            message: event.message,
            counters: event.counters,
            terminal: event.terminal.is_some(),
            rollout_state: event.terminal.unwrap_or(RolloutState::Running) as i32,
            detail_json: event.detail_json,
            work_ms: event.work_ms,
        }
    }
}

/// What one transaction will hold.
#[derive(Default)]
struct Batch {
    events: Vec<RolloutEvent>,
    puts: Vec<Put>,
    bytes: usize,
    /// Parts whose last piece is in this transaction.
    done: Vec<oneshot::Sender<Result<(), StoreError>>>,
}

impl Batch {
    fn is_empty(&self) -> bool {
        self.puts.is_empty()
    }

    fn fits(&self, ops: usize, bytes: usize) -> bool {
        self.puts.len() + ops <= MAX_TXN_OPS && self.bytes + bytes <= MAX_TXN_BYTES
    }

    fn add(
        &mut self,
        events: Vec<RolloutEvent>,
        puts: Vec<Put>,
        done: Option<oneshot::Sender<Result<(), StoreError>>>,
    ) {
        self.bytes += puts.iter().map(Put::size).sum::<usize>();
        self.events.extend(events);
        self.puts.extend(puts);
        self.done.extend(done);
    }
}

/// The error every other waiter of a failed batch gets: a stale term stays
/// [`StoreError::Fenced`] (so each run stops as the term ended); anything
/// else is told as text.
fn shared_error(e: &StoreError) -> StoreError {
    match e {
        StoreError::Fenced(token) => StoreError::Fenced(*token),
        StoreError::Batch(text) => StoreError::Batch(text.clone()),
        other => StoreError::Batch(other.to_string()),
    }
}

fn writer_gone() -> StoreError {
    StoreError::Batch("the batch writer went away".into())
}

/// Tells every part in `rest` that the batch failed with `e`.
fn fail(e: StoreError, rest: impl Iterator<Item = oneshot::Sender<Result<(), StoreError>>>) {
    for done in rest {
        let _ = done.send(Err(shared_error(&e)));
    }
}

#[cfg(test)]
mod tests;
