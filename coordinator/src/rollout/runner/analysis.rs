//! The environment's Prometheus analysis beside a phase of a rollout: the
//! canaries' batch (while they stay healthy for `min_healthy`, before any
//! other host restarts), the watch window, and `monitor` after success.
//!
//! Each check is measured every `interval`, and once more at the end of a
//! phase that ended before its first measurement, so every phase has its
//! say. Each measurement is an `analysis_measured` event saved together
//! with the count it changed (the rollout record's `analysis`), in one
//! etcd transaction: a new leader continues counting where the old one
//! stopped, and no measurement is counted twice or lost once saved. A
//! check that fails ends the phase: `analysis_failed` names the query, the
//! value and the limit, and the step fails like a failed smoke check.
//!
//! In a phase, `{{hosts}}` is the hosts running the new version then: the
//! canaries during the canary batch, every restarted host later. A
//! `compare = "baseline"` check runs only during the canary batch, for the
//! canaries and for the hosts not yet restarted.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use super::{Abandon, Run};
use crate::analysis::{Bindings, Prometheus, QueryError, template, verdict};
use crate::config::{AnalysisCheck, Compare, Config};
use crate::metrics;
use crate::model::{AnalysisRecord, RolloutRecord, StepRecord};
use crate::repo::events::NewEvent;
use crate::rollout::restart::{self, Batching};

/// Where in a rollout an analysis runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    Canary,
    Watch,
    Monitor,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Self::Canary => "canary",
            Self::Watch => "watch",
            Self::Monitor => "monitor",
        }
    }
}

/// How a phase with analysis beside it ended.
pub(super) enum Analysed<T> {
    /// The phase's work ended and every check held.
    Done(T),
    /// A check failed (`why` names query, value and limit); `done` holds
    /// the work's output when it had ended first.
    Failed { why: String, done: Option<T> },
}

/// One phase's analysis: its checks, where to ask, and the rollout record
/// as saved when the phase began, carrying the counts.
pub(super) struct Analysis {
    phase: Phase,
    step: &'static str,
    environment: String,
    checks: Vec<AnalysisCheck>,
    prometheus: Result<Prometheus, String>,
    bindings: Bindings,
    /// Saved with each measurement; nothing else writes the record while
    /// the phase runs.
    record: RolloutRecord,
    /// When each check is measured next.
    next: Vec<Instant>,
}

impl Analysis {
    /// The analysis of `phase` for `record` (at step `step`), measuring
    /// `hosts`; `None` when the environment has no check for it.
    pub fn new(
        config: &Config,
        record: &RolloutRecord,
        phase: Phase,
        step: &'static str,
        hosts: Vec<String>,
        canary_hosts: Vec<String>,
        baseline_hosts: Vec<String>,
    ) -> Option<Self> {
        let policy = config.environments.policy(&record.environment);
        let prometheus = config.prometheus.as_ref()?;
        let checks: Vec<AnalysisCheck> = policy
            .analysis
            .into_iter()
            .filter(|c| {
                c.compare != Some(Compare::Baseline) || (phase == Phase::Canary && !baseline_hosts.is_empty())
            })
            .collect();
        if checks.is_empty() || hosts.is_empty() {
            return None;
        }
        let previous_version = hosts
            .iter()
            .chain(&baseline_hosts)
            .find_map(|h| record.previous_versions.get(h).filter(|v| !v.is_empty()))
            .cloned()
            .unwrap_or_default();
        let bindings = Bindings {
            environment: record.environment.clone(),
            hosts,
            canary_hosts,
            baseline_hosts,
            version: record.app_version.clone(),
            previous_version,
        };
        let now_ms = runway_proto::unix_ms_now();
        let now = Instant::now();
        let mut record = record.clone();
        // A resumed phase keeps each check's rhythm from its last saved measurement.
        let next = checks
            .iter()
            .map(|c| {
                let interval = c.interval.0;
                let tally = record.analysis.tally(phase.name(), &c.name);
                let since = u64::try_from(now_ms - tally.last_unix_ms).unwrap_or(0);
                let wait = if tally.measurements == 0 {
                    c.initial_delay.map_or(interval, |d| d.0)
                } else {
                    interval.saturating_sub(Duration::from_millis(since))
                };
                now + wait
            })
            .collect();
        Some(Self {
            phase,
            step,
            environment: record.environment.clone(),
            checks,
            prometheus: Prometheus::new(prometheus).map_err(|e| e.to_string()),
            bindings,
            record,
            next,
        })
    }

    /// The analysis of a rollout's restart `step` while its canaries stay
    /// healthy; `None` without canaries or checks.
    pub fn for_canary(
        config: &Config,
        record: &RolloutRecord,
        step: &StepRecord,
        batching: &Batching,
    ) -> Option<Self> {
        let batches = restart::batches(&step.hosts, batching);
        let canaries = batches.first().filter(|b| b.canary)?.hosts.clone();
        let baseline: Vec<String> = step.hosts.iter().filter(|h| !canaries.contains(h)).cloned().collect();
        Self::new(config, record, Phase::Canary, step.kind.name(), canaries.clone(), canaries, baseline)
    }

    /// The counts, to carry into the rollout's record when the phase ends.
    pub fn into_counts(self) -> AnalysisRecord {
        self.record.analysis
    }

    /// The check measured next, and when.
    fn next_due(&self) -> (usize, Instant) {
        self.next.iter().copied().enumerate().min_by_key(|(_, at)| *at).expect("an analysis has a check")
    }

    async fn ask(&self, query: &str) -> Result<f64, QueryError> {
        match &self.prometheus {
            Ok(prometheus) => prometheus.query(query).await,
            Err(setup) => Err(QueryError::Unreachable(setup.clone())),
        }
    }
}

impl Run<'_> {
    /// Runs `work` with `analysis` measuring beside it, until the work ends
    /// (then each check not yet measured in this phase is measured once) or
    /// a check fails.
    pub(super) async fn analysed<T>(
        &self,
        analysis: &mut Analysis,
        work: impl Future<Output = Result<T, Abandon>>,
    ) -> Result<Analysed<T>, Abandon> {
        let mut work = std::pin::pin!(work);
        loop {
            let (check, due) = analysis.next_due();
            tokio::select! {
                done = &mut work => {
                    let done = done?;
                    for check in 0..analysis.checks.len() {
                        let name = analysis.checks[check].name.clone();
                        if analysis.record.analysis.tally(analysis.phase.name(), &name).measurements > 0 {
                            continue;
                        }
                        if let Some(why) = self.measure(analysis, check).await? {
                            return Ok(Analysed::Failed { why, done: Some(done) });
                        }
                    }
                    return Ok(Analysed::Done(done));
                }
                _ = tokio::time::sleep_until(due) => {
                    if let Some(why) = self.measure(analysis, check).await? {
                        return Ok(Analysed::Failed { why, done: None });
                    }
                }
            }
        }
    }

    /// Takes one measurement of check `index` and saves it with its count;
    /// `Some(why)` when the check failed by it.
    pub(super) async fn measure(
        &self,
        analysis: &mut Analysis,
        index: usize,
    ) -> Result<Option<String>, Abandon> {
        let check = analysis.checks[index].clone();
        let phase = analysis.phase.name();
        let query = template::render(&check.query, &analysis.bindings);
        let started = Instant::now();
        let value = analysis.ask(&query).await;
        let baseline = match check.compare {
            Some(Compare::Baseline) => {
                let bindings =
                    Bindings { hosts: analysis.bindings.baseline_hosts.clone(), ..analysis.bindings.clone() };
                Some(analysis.ask(&template::render(&check.query, &bindings)).await)
            }
            None => None,
        };
        let query_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let measurement = verdict::judge(&check, value, baseline);
        let now_ms = runway_proto::unix_ms_now();
        let tally = analysis.record.analysis.tally(phase, &check.name);
        let failed = verdict::count(&check, tally, &measurement);
        tally.last_unix_ms = now_ms;
        let tally = tally.clone();
        let message = verdict::describe(&check, &query, &measurement, &tally);
        let detail = serde_json::json!({
            "check": check.name,
            "phase": phase,
            "query": query,
            "value": measurement.value,
            "baseline": measurement.baseline,
            "limit": measurement.limit,
            "outcome": measurement.outcome.name(),
            "error": measurement.error,
            "query_ms": query_ms,
            "measurements": tally.measurements,
            "failed": tally.failed,
            "inconclusive": tally.inconclusive,
            "failure_limit": check.failure_limit,
        });
        let event = NewEvent {
            kind: "analysis_measured",
            step: analysis.step.into(),
            message: format!("{phase}: {message}"),
            detail_json: detail.to_string(),
            ..NewEvent::default()
        };
        analysis.record.updated_unix_ms = now_ms;
        self.events.emit_with(event, &analysis.record).await?;
        // An event on the step's span, so the trace shows every measurement.
        tracing::info!(
            check = %check.name,
            phase,
            value = ?measurement.value,
            outcome = measurement.outcome.name(),
            failed = tally.failed,
            query_ms,
            "analysis measured"
        );
        metrics::get().analysis_measured(
            &analysis.environment,
            &check.name,
            phase,
            measurement.outcome.name(),
            measurement.value,
        );
        analysis.next[index] = Instant::now() + check.interval.0;
        let Some(why) = failed else { return Ok(None) };
        let value = match (measurement.value, &measurement.error) {
            (_, Some(error)) => {
                format!("no value ({error}; inconclusive = \"{}\")", check.inconclusive.as_str())
            }
            (Some(v), None) => verdict::round(v),
            (None, None) => "no value".into(),
        };
        let why = format!(
            "analysis {} failed during the {phase}: {why}; last value {value}, limit {}; query: {query}",
            check.name, measurement.limit
        );
        let event = NewEvent {
            kind: "analysis_failed",
            step: analysis.step.into(),
            message: why.clone(),
            detail_json: detail.to_string(),
            ..NewEvent::default()
        };
        self.events.emit(event).await?;
        Ok(Some(why))
    }
}
