//! W3C trace context (`traceparent`) as it travels between runway's
//! processes, so that one rollout is one trace across every host:
//!
//! - the CLI sends its span's context with `StartRollout`;
//! - the coordinator gives the rollout a span of its own under it and saves
//!   that span's context with the rollout in etcd, so a new leader hangs its
//!   step spans under the same rollout span;
//! - each step's span id is chosen when the step starts and saved with
//!   the rollout; each command's span id follows from its step's and its
//!   host ([`TraceParent::derived`]), so any leader knows it;
//! - each `Command` carries the context of the coordinator's command span,
//!   under which the agent's spans hang.
//!
//! The context exists whether or not spans are exported, so log lines and
//! the CLI can name the trace id either way.

use std::fmt;

use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Where a span sits in a trace: `00-<trace id>-<span id>-<flags>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: TraceId,
    pub span_id: SpanId,
}

impl TraceParent {
    /// Reads a W3C `traceparent` (version 00); `None` for anything else,
    /// including the all-zero ids the standard calls invalid.
    pub fn parse(text: &str) -> Option<Self> {
        let mut parts = text.trim().split('-');
        let (version, trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some()
            || version != "00"
            || trace.len() != 32
            || span.len() != 16
            || flags.len() != 2
        {
            return None;
        }
        u8::from_str_radix(flags, 16).ok()?;
        let parent = Self { trace_id: TraceId::from_hex(trace).ok()?, span_id: SpanId::from_hex(span).ok()? };
        (parent.trace_id != TraceId::INVALID && parent.span_id != SpanId::INVALID).then_some(parent)
    }

    /// The first span of a new trace.
    pub fn new_trace() -> Self {
        let ids = RandomIdGenerator::default();
        Self { trace_id: ids.new_trace_id(), span_id: ids.new_span_id() }
    }

    /// A new span on the same trace.
    pub fn child(&self) -> Self {
        Self { trace_id: self.trace_id, span_id: RandomIdGenerator::default().new_span_id() }
    }

    /// A span on the same trace whose id follows from this span's id and
    /// `name` alone: every process that knows this span names the same
    /// child, without saving its id (a step's commands, one per host).
    pub fn derived(&self, name: &str) -> Self {
        use sha2::Digest as _;
        let digest = sha2::Sha256::new()
            .chain_update(b"runway derived span\0")
            .chain_update(self.span_id.to_bytes())
            .chain_update(name.as_bytes())
            .finalize();
        let mut id = [0; 8];
        id.copy_from_slice(&digest[..8]);
        // The all-zero id is invalid; one digest in 2^64 would give it.
        let span_id =
            if id == [0; 8] { SpanId::from_bytes([0, 0, 0, 0, 0, 0, 0, 1]) } else { SpanId::from_bytes(id) };
        Self { trace_id: self.trace_id, span_id }
    }

    /// `span`'s place in its trace; `None` when spans are not exported
    /// (then `span` has no trace context).
    pub fn of(span: &tracing::Span) -> Option<Self> {
        let context = span.context();
        let span_context = context.span().span_context().clone();
        span_context
            .is_valid()
            .then(|| Self { trace_id: span_context.trace_id(), span_id: span_context.span_id() })
    }

    /// Makes `span` a child of this span (a no-op when spans are not exported).
    pub fn adopt(&self, span: &tracing::Span) {
        // Fails only when `span` is disabled: then there is nothing to parent.
        let _ = span.set_parent(self.context());
    }

    /// As an OpenTelemetry parent context.
    pub fn context(&self) -> opentelemetry::Context {
        opentelemetry::Context::new().with_remote_span_context(SpanContext::new(
            self.trace_id,
            self.span_id,
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        ))
    }

    /// The trace id as 32 hex digits, as trace viewers show it.
    pub fn trace_id_hex(&self) -> String {
        format!("{:032x}", self.trace_id)
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "00-{:032x}-{:016x}-01", self.trace_id, self.span_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_it_writes_and_refuses_the_rest() {
        let parent = TraceParent::new_trace();
        assert_eq!(TraceParent::parse(&parent.to_string()), Some(parent));
        let child = parent.child();
        assert_eq!(child.trace_id, parent.trace_id);
        assert_ne!(child.span_id, parent.span_id);
        let w3c = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let read = TraceParent::parse(w3c).expect("the W3C example");
        assert_eq!(read.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(read.to_string(), w3c);
        for bad in [
            "",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-zz",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_derived_span_is_the_same_for_everyone_and_differs_by_name() {
        let step = TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        let db = step.derived("db-1");
        assert_eq!(db.trace_id, step.trace_id);
        assert_eq!(db, step.derived("db-1"), "any process derives the same id");
        assert_ne!(db.span_id, step.derived("app-1").span_id);
        assert_ne!(db.span_id, step.child().derived("db-1").span_id, "another step, other ids");
        // Pinned: coordinators of different builds must agree on it.
        assert_eq!(db.to_string(), DERIVED_DB_1);
    }

    const DERIVED_DB_1: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-350c3e185316362b-01";
}
