//! A rollout's spans. One trace per rollout: the rollout's own span (id
//! saved with the rollout, emitted by whoever ends it), and under it each
//! leader's run, each step and each command, whichever leader runs them;
//! the agents' spans hang under the command spans (see
//! `runway_telemetry::context`).

use std::time::Duration;

use opentelemetry::KeyValue;
use runway_proto::v1;
use runway_telemetry::TraceParent;

use crate::model::RolloutRecord;

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

/// The span of step `index` (and of its commands): a child of the
/// rollout's span, whichever leader runs it.
pub fn step_span(record: &RolloutRecord, index: usize) -> tracing::Span {
    let step = &record.steps[index];
    let span = tracing::info_span!(
        "step",
        step = step.kind.name(),
        recovery = step.recovery,
        attempt = step.attempt,
        rollout_id = %record.id,
        trace_id = %record.trace.trace_id(),
        otel.status_code = tracing::field::Empty,
        error = tracing::field::Empty,
    );
    adopt(record, &span);
    span
}

/// Emits the rollout's own span, from when it was accepted until now,
/// under the id saved with it: ended here, whoever started it.
pub fn emit_rollout_span(record: &RolloutRecord) {
    let Some(own) = record.trace.span() else { return };
    let started = std::time::UNIX_EPOCH + Duration::from_millis(record.trace.started_unix_ms.max(0) as u64);
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
    runway_telemetry::emit_span("rollout", own, record.trace.parent(), started, attributes);
}

/// The coordinator's span for `command` (under the current step's span);
/// the command carries its context to the agent.
pub fn command_span(command: &mut v1::Command, host: &str) -> tracing::Span {
    let span = tracing::info_span!("command", command_id = %command.command_id, "host.name" = %host);
    if let Some(context) = TraceParent::of(&span) {
        command.traceparent = context.to_string();
    }
    span
}

fn adopt(record: &RolloutRecord, span: &tracing::Span) {
    if let Some(rollout) = record.trace.span() {
        rollout.adopt(span);
    }
}
