//! One command, from its dispatch to its saved result.
//!
//! A step on ten thousand hosts follows ten thousand commands at once.
//! Each runs as a task of its own ([`Commands`]): they spread over every
//! core instead of taking turns inside the step's task, where ten thousand
//! futures polled together also exhaust tokio's cooperative budget over and
//! over. Dropping [`Commands`] (a step that ends at its first failure, a run
//! whose term ended) aborts the tasks still running, which drops their
//! pending dispatch, as dropping their futures did.

use std::sync::Arc;
use std::time::Duration;

use runway_proto::v1::{self, CommandOutcome};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::Instrument;

use super::{Abandon, Run, Runner};
use crate::fencing::Term;
use crate::metrics;
use crate::model::{StepKind, StepRecord};
use crate::registry::AgentKey;
use crate::repo::events::{EventWriter, NewEvent};
use crate::rollout::outcome::CommandEnd;
use crate::rollout::target::Target;
use crate::rollout::trace;
use crate::store::StoreError;

/// How often a followed command looks whether its agent is still connected.
const CHECK_EVERY: Duration = Duration::from_millis(500);

/// What following a command needs, owned, so it can run as its own task.
#[derive(Clone)]
pub(super) struct Follower {
    runner: Runner,
    /// The rollout's environment: agent names are unique only within it.
    environment: String,
    term: Term,
    events: Arc<EventWriter>,
}

/// The commands of one step, each on its own task; aborted when dropped.
pub(super) struct Commands {
    tasks: JoinSet<(usize, Result<CommandEnd, Abandon>)>,
}

impl Commands {
    /// Every command's end, in the order the commands were started; the
    /// first error stops the wait (and aborts the rest).
    pub(super) async fn all(mut self) -> Result<Vec<CommandEnd>, Abandon> {
        // Fresh from `start_commands`: none has been joined yet.
        let mut ends: Vec<Option<CommandEnd>> = (0..self.tasks.len()).map(|_| None).collect();
        while let Some((index, end)) = self.next_indexed().await? {
            ends[index] = Some(end);
        }
        Ok(ends.into_iter().map(|end| end.expect("every command's task ended")).collect())
    }

    /// The next command to end, in the order they end; `None` when all have.
    pub(super) async fn next(&mut self) -> Result<Option<CommandEnd>, Abandon> {
        Ok(self.next_indexed().await?.map(|(_, end)| end))
    }

    /// Aborts the commands still followed and waits until their tasks are
    /// gone, so none of them is still writing events (and taking along the
    /// caller's next ones) when the step moves on.
    pub(super) async fn stop(mut self) {
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
    }

    async fn next_indexed(&mut self) -> Result<Option<(usize, CommandEnd)>, Abandon> {
        match self.tasks.join_next().await {
            None => Ok(None),
            Some(Ok((index, end))) => Ok(Some((index, end?))),
            Some(Err(e)) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            // Tasks are aborted only when the runtime shuts down.
            Some(Err(_)) => Err(Abandon::TermEnded),
        }
    }
}

impl Run<'_> {
    fn follower(&self) -> Follower {
        Follower {
            runner: self.runner.clone(),
            environment: self.environment.to_owned(),
            term: self.term.clone(),
            events: Arc::clone(self.events),
        }
    }

    /// Starts `make(host)` on each of `hosts`, each followed on its own
    /// task, its span under the current (the step's) span.
    pub(super) fn start_commands<'h>(
        &self,
        step: &StepRecord,
        hosts: impl IntoIterator<Item = &'h String>,
        make: impl Fn(&str) -> v1::Command,
        deadline: Option<Instant>,
    ) -> Commands {
        let mut tasks = JoinSet::new();
        for (index, host) in hosts.into_iter().enumerate() {
            let command = make(host);
            let span = trace::command_span(&command, host);
            self.commands.dispatched(&command, host);
            let (follower, kind, host) = (self.follower(), step.kind, host.clone());
            let spans = self.commands.clone();
            let follow = async move {
                let command_id = command.command_id.clone();
                let end = follower.follow(kind, &host, command, deadline).await;
                if let Ok(end) = &end {
                    spans.ended(&command_id, end.error.as_deref());
                }
                (index, end)
            };
            tasks.spawn(follow.instrument(span));
        }
        Commands { tasks }
    }

    /// Follows one command on this task (steps that run one host at a time).
    pub(super) async fn command_on(
        &self,
        step: &StepRecord,
        host: &str,
        command: v1::Command,
        deadline: Option<Instant>,
    ) -> Result<CommandEnd, Abandon> {
        let span = trace::command_span(&command, host);
        self.commands.dispatched(&command, host);
        let command_id = command.command_id.clone();
        let end = self.follower().follow(step.kind, host, command, deadline).instrument(span).await?;
        self.commands.ended(&command_id, end.error.as_deref());
        Ok(end)
    }
}

impl Follower {
    /// Dispatches one command and follows it to its result.
    ///
    /// While the agent is away the command waits for it (the dispatcher
    /// re-sends it when the agent registers again; the agent's journal
    /// answers). The operator sees `agent_away` and `agent_back` events.
    /// Only once `deadline` has passed *and* the agent is away does the
    /// command end without a result, its outcome unknown.
    ///
    /// In the trace, the command is a span under the step's (emitted when
    /// the step ends, see `rollout::trace`), and the agent's spans for it
    /// hang under that span (its context travels in the command).
    async fn follow(
        &self,
        kind: StepKind,
        host: &str,
        command: v1::Command,
        deadline: Option<Instant>,
    ) -> Result<CommandEnd, Abandon> {
        let step_name = kind.name().to_owned();
        let command_id = command.command_id.clone();
        let restarted_to = restart_version(&command);
        // Only a DB target's preflight carries the bundle.
        if crate::failpoint::skip_db_preflight()
            && matches!(&command.action, Some(v1::command::Action::Preflight(p)) if p.bundle.is_some())
        {
            tracing::warn!(%host, "FAILPOINT: counting the DB preflight as passed without sending it");
            return Ok(CommandEnd::reached(host));
        }
        let dispatched = Instant::now();
        // `host` may be a DB target: the command goes to its agent.
        let agent = AgentKey::new(&self.environment, &Target::parse(host).host);
        let mut in_flight = self.runner.dispatcher.dispatch(&agent, command).await;
        // Away is reported only after this run saw the agent connected, so
        // agents still reconnecting to a new leader are not called away.
        let (mut seen, mut reported_away) = (in_flight.sent, false);
        // The first look is one period after the dispatch, not at once: ten
        // thousand commands dispatched together would otherwise each take
        // the registry's lock again before any result could arrive.
        let mut check = tokio::time::interval_at(Instant::now() + CHECK_EVERY, CHECK_EVERY);
        let progress = |event| progress_event(&step_name, host, &command_id, event);
        let result = loop {
            tokio::select! {
                _ = self.term.cancel.cancelled() => return Err(Abandon::TermEnded),
                Some(event) = in_flight.events.recv() => {
                    // What queued up while the last write ran goes in one write.
                    let mut batch = vec![progress(event)];
                    while let Ok(event) = in_flight.events.try_recv() {
                        batch.push(progress(event));
                    }
                    self.events.emit_all(batch).await?
                }
                result = &mut in_flight.result => match result {
                    Ok(result) => break result,
                    Err(_) => return Err(Abandon::TermEnded),
                },
                _ = check.tick() => {
                    if self.runner.registry.is_connected(&agent) {
                        seen = true;
                        if reported_away {
                            reported_away = false;
                            self.emit_link(kind, host, &command_id, true).await?;
                        }
                    } else {
                        if seen && !reported_away {
                            reported_away = true;
                            self.emit_link(kind, host, &command_id, false).await?;
                        }
                        if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
                            return self.outcome_unknown(kind, host, &command_id, dispatched).await;
                        }
                    }
                }
            }
        };
        let mut batch: Vec<NewEvent> =
            std::iter::from_fn(|| in_flight.events.try_recv().ok()).map(progress).collect();
        if reported_away {
            // Its result is the proof it is back, even before the next check.
            self.emit_link(kind, host, &command_id, true).await?;
        }
        let outcome = CommandOutcome::try_from(result.outcome);
        let error = command_error(host, outcome.ok(), &result.error);
        let emitted = match &error {
            None => Ok(result.detail_json.as_str()),
            Some(error) => Err((error.as_str(), result.detail_json.as_str())),
        };
        // The last progress and the result: one write.
        batch.push(result_event(kind, host, &command_id, emitted, result.work_ms));
        self.events.emit_all(batch).await?;
        metrics::get().command_ended(kind, metrics::outcome_name(outcome), dispatched.elapsed());
        let detail = serde_json::from_str(&result.detail_json).unwrap_or(serde_json::Value::Null);
        if let Some(version) = restarted_to.filter(|_| error.is_none()) {
            self.restarted(host, &version, &detail);
        }
        Ok(CommandEnd {
            host: host.to_owned(),
            error,
            refused: outcome == Ok(CommandOutcome::Refused),
            detail,
            plan: result.plan.map(|p| *p),
            outcome_unknown: false,
        })
    }

    /// Ends a command whose agent stayed away past the step's deadline: no
    /// result, its outcome unknown (it may still run on the host).
    async fn outcome_unknown(
        &self,
        kind: StepKind,
        host: &str,
        command_id: &str,
        dispatched: Instant,
    ) -> Result<CommandEnd, Abandon> {
        let error = format!(
            "{host}: agent is away and the outcome is unknown: no result within \
             step_deadline = {:?} of the step's dispatch; the command may still run on the host",
            crate::config::format_duration(self.runner.config.step_deadline)
        );
        self.events.emit(result_event(kind, host, command_id, Err((&error, "")), 0)).await?;
        metrics::get().command_ended(kind, "unknown", dispatched.elapsed());
        Ok(CommandEnd {
            host: host.to_owned(),
            error: Some(error),
            refused: false,
            detail: serde_json::Value::Null,
            plan: None,
            outcome_unknown: true,
        })
    }

    /// Records the app version a restart on `host` started: what the agent
    /// says it started (an empty request restarts its current version), else
    /// `requested`; never an empty version over a known one.
    fn restarted(&self, host: &str, requested: &str, detail: &serde_json::Value) {
        let reported = detail.get("app_version").and_then(serde_json::Value::as_str);
        let version = reported.filter(|v| !v.is_empty()).unwrap_or(requested);
        if !version.is_empty() {
            self.runner.registry.set_app_version(&AgentKey::new(&self.environment, host), version);
        }
    }

    /// Tells the operator that `host` went away while its command runs
    /// (`connected` false) or came back (true).
    async fn emit_link(
        &self,
        kind: StepKind,
        host: &str,
        command_id: &str,
        connected: bool,
    ) -> Result<(), StoreError> {
        let (event_kind, message) = if connected {
            ("agent_back", format!("agent {host} is back; its journal answers for {command_id}"))
        } else {
            (
                "agent_away",
                format!(
                    "agent {host} is away; the step waits for its result (the command may still run on the host; \
                     at most {} after the step's dispatch)",
                    crate::config::format_duration(self.runner.config.step_deadline)
                ),
            )
        };
        let event = NewEvent {
            kind: event_kind,
            step: kind.name().into(),
            host: host.to_owned(),
            command_id: command_id.to_owned(),
            message,
            ..NewEvent::default()
        };
        self.events.emit(event).await
    }
}

/// How one command ended: its result JSON on success, the reason and the
/// agent's facts about the failure (JSON, may be empty) on failure; the
/// agent's own work time.
fn result_event(
    kind: StepKind,
    host: &str,
    command_id: &str,
    outcome: Result<&str, (&str, &str)>,
    work_ms: u64,
) -> NewEvent {
    let (event_kind, message, detail_json) = match outcome {
        Ok(detail) => ("command_succeeded", format!("{} done", kind.name()), detail.to_owned()),
        Err((error, detail)) => ("command_failed", error.to_owned(), detail.to_owned()),
    };
    NewEvent {
        kind: event_kind,
        step: kind.name().into(),
        host: host.to_owned(),
        command_id: command_id.to_owned(),
        message,
        detail_json,
        work_ms,
        ..NewEvent::default()
    }
}

/// A command's progress, as a rollout event.
fn progress_event(step: &str, host: &str, command_id: &str, event: v1::CommandEvent) -> NewEvent {
    NewEvent {
        kind: "progress",
        step: step.to_owned(),
        host: host.to_owned(),
        command_id: command_id.to_owned(),
        phase: event.phase,
        message: event.message,
        counters: event.counters,
        ..NewEvent::default()
    }
}

/// The app version a restart command asks for (empty: the current one).
fn restart_version(command: &v1::Command) -> Option<String> {
    match &command.action {
        Some(v1::command::Action::Restart(r)) => Some(r.app_version.clone()),
        _ => None,
    }
}

/// The error of a command that did not succeed, naming its host.
fn command_error(host: &str, outcome: Option<CommandOutcome>, error: &str) -> Option<String> {
    match outcome {
        Some(CommandOutcome::Succeeded) => None,
        Some(CommandOutcome::Interrupted) => Some(format!("{host}: interrupted: {error}")),
        Some(CommandOutcome::Refused) => Some(format!("{host}: refused: {error}")),
        _ => Some(format!("{host}: {error}")),
    }
}
