//! Span ids chosen ahead of time. A rollout's, step's or command's span is
//! started by one leader and may be ended by another; its id is chosen
//! before anything under it is dispatched and saved with the rollout, and
//! whoever ends it emits the span under that id (see [`crate::emit`]). The SDK takes ids from
//! its id generator only, so this generator hands out a preset pair when
//! one is set on the current thread, and random ids otherwise.

use std::cell::Cell;

use opentelemetry::trace::{SpanId, TraceId};
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator};

use crate::TraceParent;

thread_local! {
    static PRESET: Cell<Option<TraceParent>> = const { Cell::new(None) };
}

#[derive(Debug, Default)]
pub(crate) struct PresetIds(RandomIdGenerator);

impl IdGenerator for PresetIds {
    fn new_trace_id(&self) -> TraceId {
        PRESET.get().map_or_else(|| self.0.new_trace_id(), |p| p.trace_id)
    }

    fn new_span_id(&self) -> SpanId {
        PRESET.get().map_or_else(|| self.0.new_span_id(), |p| p.span_id)
    }
}

/// Runs `start` (which must start exactly one span, synchronously) with
/// `ids` as the ids the generator hands out.
pub(crate) fn with_preset<R>(ids: TraceParent, start: impl FnOnce() -> R) -> R {
    PRESET.set(Some(ids));
    let started = start();
    PRESET.set(None);
    started
}
