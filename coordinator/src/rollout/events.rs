//! The rollout event log: numbered, saved in etcd, broadcast to watchers.
//!
//! Sequence numbers start at 1 per rollout and have no gaps: an event is
//! numbered, written to etcd (fenced), and only then broadcast. Watchers
//! read what is saved and then follow the broadcast, so a watcher that
//! reconnects with its last sequence number misses nothing and sees
//! nothing twice.

use runway_proto::v1::{Counters, RolloutEvent, RolloutState};
use tokio::sync::{Mutex, broadcast};

use super::repo::RolloutStore;
use crate::fencing::Term;
use crate::model::RolloutRecord;
use crate::store::{Put, StoreError};

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
    /// Next sequence number; the lock also keeps appends in order.
    next_seq: Mutex<u64>,
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
        Ok(Self { rollout_id: rollout_id.to_owned(), term, store, bus, next_seq: Mutex::new(last + 1) })
    }

    /// Numbers, saves and broadcasts `event`.
    pub async fn emit(&self, event: NewEvent) -> Result<(), StoreError> {
        self.append(event, None, None).await
    }

    /// Numbers, saves (in one transaction: one etcd write rather than one
    /// per event) and broadcasts `events`, in order.
    pub async fn emit_all(&self, events: Vec<NewEvent>) -> Result<(), StoreError> {
        if events.len() == 1 {
            return self.emit(events.into_iter().next().expect("one event")).await;
        }
        let mut next = self.next_seq.lock().await;
        // etcd limits the operations of one transaction (128 by default).
        for chunk in events.chunks(64) {
            let numbered: Vec<RolloutEvent> =
                chunk.iter().enumerate().map(|(i, e)| self.number(e.clone(), *next + i as u64)).collect();
            self.store.append_events(&self.term, &numbered).await?;
            *next += numbered.len() as u64;
            for event in numbered {
                let _ = self.bus.send(event);
            }
        }
        Ok(())
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

    /// Saves `record` and appends `event` in one transaction.
    pub async fn emit_with(&self, event: NewEvent, record: &RolloutRecord) -> Result<(), StoreError> {
        self.append(event, Some(record), None).await
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
        self.append(event, Some(record), Some(audit)).await
    }

    async fn append(
        &self,
        event: NewEvent,
        record: Option<&RolloutRecord>,
        audit: Option<Put>,
    ) -> Result<(), StoreError> {
        let mut next = self.next_seq.lock().await;
        let event = self.number(event, *next);
        self.store.append_event(&self.term, &event, record, audit).await?;
        *next += 1;
        let _ = self.bus.send(event);
        Ok(())
    }
}
