//! A rollout's spans. One trace per rollout: the rollout's own span, under
//! it each step's span and each leader's run, under each step its
//! commands' spans, and under those the agents' spans (see
//! `runway_telemetry::context`).
//!
//! One mechanism for the rollout's, each step's and each command's span,
//! because one leader may start what another ends: its id and start are
//! chosen and saved with the rollout before anything under it is
//! dispatched (the rollout's when it is accepted, a step's in the save
//! that marks it running, a command's id follows from its step's span and
//! its host), and the leader that ends it emits it with those ids and
//! waits until it is sent before saving the end. A leader SIGKILLed at any
//! point leaves no span without its parent: what it had ended is sent, what
//! it had not is ended and emitted by the leader that resumes. At least
//! once: a leader killed after it sent a step's spans and before it saved
//! the step's end leaves the step running, and its successor sends them
//! again under the same ids and parents (a trace backend keys spans by id).
//! The `step` and `command` tracing spans only give log lines their fields
//! (their target ends in `runway_telemetry::LOG_ONLY`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use opentelemetry::KeyValue;
use runway_proto::v1;
use runway_telemetry::{Ended, TraceParent};

use crate::model::{RolloutRecord, SpanRecord, StepRecord, StepState, unix_ms_time};

/// How long ending a span waits for it to be sent before the end is
/// saved: a receiver that is down costs a step this much, no more.
const SEND_WAIT: Duration = Duration::from_secs(3);

/// Command spans emitted between two waits for them to be sent: half the
/// exporter's default queue, so none is dropped for want of room.
const SEND_IN_PARTS_OF: usize = 1024;

/// This leader's run of `record`, under the rollout's span; its fields
/// are on every line logged while it runs.
pub fn run_span(record: &RolloutRecord, coordinator: &str) -> tracing::Span {
    let span = tracing::info_span!(
        "rollout.run",
        rollout_id = %record.id,
        trace_id = %record.trace.trace_id(),
        coordinator = %coordinator,
    );
    adopt(record, &span);
    span
}

/// The fields of every line logged while step `index` runs (its trace
/// span is [`end_step`]'s).
pub fn step_span(record: &RolloutRecord, index: usize) -> tracing::Span {
    let step = &record.steps[index];
    tracing::info_span!(
        target: "runway_coordinator::log_only",
        "step",
        step = step.kind.name(),
        recovery = step.recovery,
        attempt = step.attempt,
        rollout_id = %record.id,
        trace_id = %record.trace.trace_id(),
    )
}

/// The key step spans are saved under: kind, recovery and attempt, as in
/// the step's command ids.
fn step_key(step: &StepRecord) -> String {
    format!("{}{}/{}", step.kind.name(), if step.recovery { "-recovery" } else { "" }, step.attempt)
}

/// Chooses the span of step `index` (started now, under the rollout's),
/// for the caller to save before the step's commands go out. False when
/// it has a readable one already, or the rollout has no trace.
pub fn start_step(record: &mut RolloutRecord, index: usize) -> bool {
    let Some(rollout) = record.trace.span() else { return false };
    let key = step_key(&record.steps[index]);
    if record.trace.steps.get(&key).and_then(SpanRecord::context).is_some() {
        return false;
    }
    let span = SpanRecord { span: rollout.child().to_string(), started_unix_ms: runway_proto::unix_ms_now() };
    record.trace.steps.insert(key, span);
    true
}

/// Step `step`'s saved span and start, if saved.
fn saved_step(record: &RolloutRecord, step: &StepRecord) -> Option<(TraceParent, SystemTime)> {
    let saved = record.trace.steps.get(&step_key(step))?;
    Some((saved.context()?, saved.started()))
}

/// The trace context a command of `step` to `host` carries: its own span,
/// which follows from the step's saved span and the host, so whichever
/// leader ends the step names the same span, and the agent's spans hang
/// under it. The rollout's span for steps without a saved span.
pub fn command_context(record: &RolloutRecord, step: &StepRecord, host: &str) -> String {
    match saved_step(record, step) {
        Some((step, _)) => step.derived(host).to_string(),
        None => record.trace.span.clone(),
    }
}

/// The fields of every line logged while `command` runs on `host`.
pub fn command_span(command: &v1::Command, host: &str) -> tracing::Span {
    tracing::info_span!(
        target: "runway_coordinator::log_only",
        "command",
        command_id = %command.command_id,
        "host.name" = %host,
    )
}

/// When each command of the current step was dispatched and how it
/// ended, for the commands' spans.
#[derive(Clone, Default)]
pub struct CommandSpans(Arc<Mutex<HashMap<String, CommandTimes>>>);

struct CommandTimes {
    host: String,
    own: Option<TraceParent>,
    dispatched: SystemTime,
    /// `None` while followed, and for a command whose step stopped
    /// following it (it still ran on its host).
    ended: Option<SystemTime>,
    error: Option<String>,
}

impl CommandSpans {
    /// `command` goes out to `host` now.
    pub fn dispatched(&self, command: &v1::Command, host: &str) {
        let times = CommandTimes {
            host: host.to_owned(),
            own: TraceParent::parse(&command.traceparent),
            dispatched: SystemTime::now(),
            ended: None,
            error: None,
        };
        self.0.lock().expect("command spans lock").insert(command.command_id.clone(), times);
    }

    /// Command `command_id` ended now, with `error` if it failed.
    pub fn ended(&self, command_id: &str, error: Option<&str>) {
        if let Some(times) = self.0.lock().expect("command spans lock").get_mut(command_id) {
            times.ended = Some(SystemTime::now());
            times.error = error.map(str::to_owned);
        }
    }

    /// Forgets every command seen so far.
    pub fn clear(&self) {
        self.0.lock().expect("command spans lock").clear();
    }

    fn take(&self) -> Vec<(String, CommandTimes)> {
        self.0.lock().expect("command spans lock").drain().collect()
    }
}

/// Emits the span of step `index` (ended now, its state set) and its
/// commands' (each of `commands`), and waits until they are sent: called
/// before the step's end is saved. `resumed`: this leader took the step
/// over running, so its commands may have run since the step started.
pub async fn end_step(record: &RolloutRecord, index: usize, commands: &CommandSpans, resumed: bool) {
    let step = &record.steps[index];
    let Some((own, started)) = saved_step(record, step).filter(|_| runway_telemetry::exporting()) else {
        commands.clear();
        return;
    };
    let now = SystemTime::now();
    for (sent_before, (command_id, times)) in commands.take().into_iter().enumerate() {
        // The exporter's queue holds 2048 spans unless configured otherwise:
        // a step on thousands of hosts sends its spans in parts.
        if sent_before > 0 && sent_before % SEND_IN_PARTS_OF == 0 {
            sent().await;
        }
        // Not ours: a command that went out without the step's span.
        let Some(command) = times.own.filter(|c| *c == own.derived(&times.host)) else { continue };
        runway_telemetry::emit(Ended {
            name: "command",
            own: command,
            parent: Some(own),
            start: if resumed { started } else { times.dispatched },
            end: times.ended.unwrap_or(now),
            attributes: vec![
                KeyValue::new("command_id", command_id),
                KeyValue::new("host.name", times.host),
                KeyValue::new("rollout_id", record.id.clone()),
            ],
            error: times.error,
        });
    }
    let failed = step.state == StepState::Failed;
    runway_telemetry::emit(Ended {
        name: "step",
        own,
        parent: record.trace.span(),
        start: started,
        end: now,
        attributes: vec![
            KeyValue::new("step", step.kind.name()),
            KeyValue::new("recovery", step.recovery),
            KeyValue::new("attempt", i64::from(step.attempt)),
            KeyValue::new("rollout_id", record.id.clone()),
            KeyValue::new("trace_id", record.trace.trace_id()),
        ],
        error: failed.then(|| step.error.clone()),
    });
    sent().await;
}

/// Emits the rollout's own span, from when it was accepted until now,
/// under the id saved with it, and waits until it is sent: called before
/// the rollout's end is saved, by whichever leader ends it.
pub async fn end_rollout(record: &RolloutRecord) {
    let Some(own) = record.trace.span() else { return };
    let state = format!("{:?}", record.state.to_proto());
    let mut attributes = vec![
        KeyValue::new("runway.rollout.id", record.id.clone()),
        KeyValue::new("deployment.environment.name", record.environment.clone()),
        KeyValue::new("runway.bundle.digest", record.bundle_digest.clone()),
        KeyValue::new("runway.rollout.state", state),
        KeyValue::new("runway.started_by", record.started_by.clone()),
    ];
    if !record.error.is_empty() {
        attributes.push(KeyValue::new("error.message", record.error.clone()));
    }
    runway_telemetry::emit(Ended {
        name: "rollout",
        own,
        parent: record.trace.parent(),
        start: unix_ms_time(record.trace.started_unix_ms),
        end: SystemTime::now(),
        attributes,
        error: None,
    });
    sent().await;
}

/// Waits (at most [`SEND_WAIT`]) until every span ended so far is sent.
async fn sent() {
    if !runway_telemetry::exporting() {
        return;
    }
    let flush = tokio::task::spawn_blocking(runway_telemetry::flush);
    match tokio::time::timeout(SEND_WAIT, flush).await {
        Ok(Ok(true)) => {}
        _ => tracing::warn!(
            wait_secs = SEND_WAIT.as_secs(),
            "trace spans not sent yet; a leader killed now would lose them"
        ),
    }
}

fn adopt(record: &RolloutRecord, span: &tracing::Span) {
    if let Some(rollout) = record.trace.span() {
        rollout.adopt(span);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{StepKind, TraceRecord};

    fn record() -> RolloutRecord {
        let step = |kind, recovery| StepRecord {
            kind,
            hosts: vec!["db-1".into()],
            state: StepState::Running,
            attempt: 1,
            error: String::new(),
            recovery,
        };
        RolloutRecord {
            id: "r1".into(),
            steps: vec![step(StepKind::Migrate, false), step(StepKind::MaintenanceOff, true)],
            trace: TraceRecord::start(None),
            ..RolloutRecord::default()
        }
    }

    #[test]
    fn a_step_span_is_chosen_once_and_its_commands_follow_from_it() {
        let mut record = record();
        assert!(start_step(&mut record, 0));
        assert!(!start_step(&mut record, 0), "a saved span is kept: the resuming leader uses it");
        assert!(start_step(&mut record, 1));
        let saved = &record.trace.steps;
        assert_eq!(saved.keys().collect::<Vec<_>>(), ["maintenance_off-recovery/1", "migrate/1"]);
        let step = saved["migrate/1"].context().expect("a traceparent");
        assert_eq!(step.trace_id, record.trace.span().unwrap().trace_id);
        // The same for any leader that reads the record back.
        let read: RolloutRecord = serde_json::from_str(&serde_json::to_string(&record).unwrap()).unwrap();
        let command = command_context(&read, &read.steps[0], "db-1");
        assert_eq!(command, step.derived("db-1").to_string());
        assert_eq!(command, command_context(&record, &record.steps[0], "db-1"));
    }

    #[test]
    fn a_hand_edited_span_is_replaced_and_a_record_without_trace_gets_none() {
        let mut record = record();
        record
            .trace
            .steps
            .insert("migrate/1".into(), SpanRecord { span: "garbage".into(), started_unix_ms: -5 });
        assert_eq!(record.trace.steps["migrate/1"].started(), std::time::UNIX_EPOCH);
        assert_eq!(command_context(&record, &record.steps[0], "db-1"), record.trace.span);
        assert!(start_step(&mut record, 0));
        assert!(record.trace.steps["migrate/1"].context().is_some());

        let mut old = record.clone();
        old.trace = TraceRecord::default();
        assert!(!start_step(&mut old, 0));
        assert!(old.trace.steps.is_empty());
    }
}
