//! The coordinator's Prometheus metrics and the `/metrics` endpoint.
//!
//! One process-wide set of typed handles ([`get`]), like neon's metric
//! statics: recording is a one-line call where the event happens, and
//! costs a few atomics whether or not `[telemetry] metrics_listen` serves
//! them. Names follow Prometheus conventions (`runway_` prefix, `_seconds`,
//! `_total`); the text is OpenMetrics, which Prometheus scrapes as is.
//!
//! This module uses only [`crate::model`], so the store, the registry and
//! the runner can all record into it.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use runway_daemon::metrics::{Registry, Unit};

use crate::model::{RolloutRecord, RolloutState, StepKind, StepState};

/// Buckets for steps, commands and maintenance: 50 ms to about 28 h.
fn long_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.05, 2.0, 22))
}

/// Buckets for etcd calls: 1 ms to about 8 s.
fn short_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 14))
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EnvRole {
    environment: String,
    role: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EnvAgent {
    environment: String,
    agent: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EnvState {
    environment: String,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindOutcome {
    kind: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Op {
    op: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Env {
    environment: String,
}

/// Why a connection was closed before it carried a call.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Reason {
    reason: &'static str,
}

/// One analysis check in one phase.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Analysis {
    environment: String,
    check: String,
    phase: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AnalysisOutcome {
    environment: String,
    check: String,
    phase: &'static str,
    outcome: &'static str,
}

/// One rollout in maintenance mode now.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Maintenance {
    environment: String,
    rollout: String,
    downtime_class: String,
}

/// The coordinator's metrics; see [`get`].
pub struct Metrics {
    pub registry: Registry,
    leader: Gauge,
    fencing_token: Gauge,
    agents_connected: Family<EnvRole, Gauge>,
    agent_connected: Family<EnvAgent, Gauge>,
    rollouts: Family<EnvState, Gauge>,
    rollouts_ended: Family<EnvState, Counter>,
    step_duration: HistogramFamily<KindOutcome>,
    command_duration: HistogramFamily<KindOutcome>,
    etcd_duration: HistogramFamily<Op>,
    etcd_errors: Family<Op, Counter>,
    maintenance_duration: HistogramFamily<Env>,
    maintenance_started: Family<Maintenance, Gauge>,
    maintenance_allowed: Family<Maintenance, Gauge>,
    connections_open: Gauge,
    connections_refused: Family<Reason, Counter>,
    analysis_measurements: Family<AnalysisOutcome, Counter>,
    analysis_value: Family<Analysis, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// Rollouts this leader runs: id → labels of their `runway_rollouts` series.
    running: Mutex<HashMap<String, EnvState>>,
    /// Rollouts in maintenance mode: id → labels and when it went on.
    in_maintenance: Mutex<HashMap<String, (Maintenance, tokio::time::Instant)>>,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process's metrics.
pub fn get() -> &'static Metrics {
    &METRICS
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("runway");
        let m = Self {
            leader: Gauge::default(),
            fencing_token: Gauge::default(),
            agents_connected: Family::default(),
            agent_connected: Family::default(),
            rollouts: Family::default(),
            rollouts_ended: Family::default(),
            step_duration: Family::new_with_constructor(long_buckets),
            command_duration: Family::new_with_constructor(long_buckets),
            etcd_duration: Family::new_with_constructor(short_buckets),
            etcd_errors: Family::default(),
            maintenance_duration: Family::new_with_constructor(long_buckets),
            maintenance_started: Family::default(),
            maintenance_allowed: Family::default(),
            connections_open: Gauge::default(),
            connections_refused: Family::default(),
            analysis_measurements: Family::default(),
            analysis_value: Family::default(),
            running: Mutex::default(),
            in_maintenance: Mutex::default(),
            registry: Registry::default(),
        };
        m.register(&mut registry);
        Self { registry, ..m }
    }

    /// Registers every metric in `r`, each with its HELP text.
    fn register(&self, r: &mut Registry) {
        r.register("leader", "1 while this coordinator leads, else 0", self.leader.clone());
        r.register(
            "fencing_token",
            "The fencing token of this coordinator's term, or of the leader it follows",
            self.fencing_token.clone(),
        );
        r.register(
            "agents_connected",
            "Agents connected to this leader, by environment and role",
            self.agents_connected.clone(),
        );
        r.register(
            "agent_connected",
            "1 while the agent is connected to this leader, 0 once it left",
            self.agent_connected.clone(),
        );
        r.register(
            "connections_open",
            "Client connections open now, handshaking or established",
            self.connections_open.clone(),
        );
        r.register(
            "connections_refused",
            "Connections closed before their first call: over a connection cap, or a TLS handshake that \
             timed out or failed",
            self.connections_refused.clone(),
        );
        r.register(
            "rollouts",
            "Rollouts this leader runs now, by environment and state",
            self.rollouts.clone(),
        );
        r.register(
            "rollouts_ended",
            "Rollouts this leader ended, by environment and final state",
            self.rollouts_ended.clone(),
        );
        r.register_with_unit(
            "step_duration",
            "How long rollout steps took, by kind and outcome",
            Unit::Seconds,
            self.step_duration.clone(),
        );
        r.register_with_unit(
            "command_duration",
            "Dispatch to result of agent commands, by kind and outcome",
            Unit::Seconds,
            self.command_duration.clone(),
        );
        r.register_with_unit(
            "etcd_request_duration",
            "Latency of etcd requests, by operation",
            Unit::Seconds,
            self.etcd_duration.clone(),
        );
        r.register("etcd_request_errors", "Failed etcd requests, by operation", self.etcd_errors.clone());
        r.register_with_unit(
            "maintenance_duration",
            "How long maintenance mode was on, one observation per rollout that lifted it",
            Unit::Seconds,
            self.maintenance_duration.clone(),
        );
        r.register(
            "maintenance_started_timestamp_seconds",
            "When maintenance mode went on (unix seconds), for rollouts in maintenance now",
            self.maintenance_started.clone(),
        );
        r.register(
            "maintenance_allowed_seconds",
            "How long the rollout's downtime class allows maintenance mode to stay on",
            self.maintenance_allowed.clone(),
        );
        r.register(
            "analysis_measurements",
            "Prometheus analysis measurements this leader saved, by check, phase and outcome",
            self.analysis_measurements.clone(),
        );
        r.register(
            "analysis_value",
            "The last value an analysis check measured, by check and phase",
            self.analysis_value.clone(),
        );
    }

    /// An analysis measurement of `check` in `phase` was saved.
    pub fn analysis_measured(
        &self,
        environment: &str,
        check: &str,
        phase: &'static str,
        outcome: &'static str,
        value: Option<f64>,
    ) {
        let labels = AnalysisOutcome { environment: environment.into(), check: check.into(), phase, outcome };
        self.analysis_measurements.get_or_create(&labels).inc();
        if let Some(value) = value {
            let labels = Analysis { environment: environment.into(), check: check.into(), phase };
            self.analysis_value.get_or_create(&labels).set(value);
        }
    }

    /// This coordinator leads (with `token`) or follows (the leader's
    /// token, if known).
    pub fn leadership(&self, leading: bool, token: Option<u64>) {
        self.leader.set(i64::from(leading));
        if let Some(token) = token {
            self.fencing_token.set(i64::try_from(token).unwrap_or(i64::MAX));
        }
    }

    /// Agent `name` of `environment` with `roles` attached to this leader.
    /// Constant time: with ten thousand agents, recounting everyone at
    /// each attach would cost more than the attach itself.
    /// A client connection opened (`+1`) or closed (`-1`).
    pub fn connections_open(&self, delta: i64) {
        self.connections_open.inc_by(delta);
    }

    /// A connection was closed for `reason` before it carried a call.
    pub fn connection_refused(&self, reason: &'static str) {
        self.connections_refused.get_or_create(&Reason { reason }).inc();
    }

    pub fn agent_attached(&self, environment: &str, name: &str, roles: &[String]) {
        self.agent_connected
            .get_or_create(&EnvAgent { environment: environment.into(), agent: name.into() })
            .set(1);
        for role in roles {
            self.agents_connected
                .get_or_create(&EnvRole { environment: environment.into(), role: role.clone() })
                .inc();
        }
    }

    /// Agent `name` left this leader (or the leader stepped down). Its
    /// series stay, at 0, so the alerts see who left.
    pub fn agent_left(&self, environment: &str, name: &str, roles: &[String]) {
        self.agent_connected
            .get_or_create(&EnvAgent { environment: environment.into(), agent: name.into() })
            .set(0);
        for role in roles {
            self.agents_connected
                .get_or_create(&EnvRole { environment: environment.into(), role: role.clone() })
                .dec();
        }
    }

    /// `record` was saved by this leader in its current state.
    pub fn rollout_saved(&self, record: &RolloutRecord) {
        let labels = EnvState { environment: record.environment.clone(), state: record.state.name() };
        let mut running = self.running.lock().expect("metrics lock");
        if let Some(old) = running.insert(record.id.clone(), labels.clone()) {
            self.rollouts.get_or_create(&old).dec();
        }
        self.rollouts.get_or_create(&labels).inc();
    }

    /// This leader stopped running rollout `id` (it ended, or the run was
    /// abandoned for the next leader).
    pub fn rollout_stopped(&self, id: &str) {
        if let Some(old) = self.running.lock().expect("metrics lock").remove(id) {
            self.rollouts.get_or_create(&old).dec();
        }
    }

    /// `record` ended in its (terminal) state.
    pub fn rollout_ended(&self, record: &RolloutRecord) {
        self.rollout_stopped(&record.id);
        let labels = EnvState { environment: record.environment.clone(), state: record.state.name() };
        self.rollouts_ended.get_or_create(&labels).inc();
    }

    /// Step `index` of `record` ended (settled) after `took`; maintenance
    /// mode is timed from its `maintenance_on` to its `maintenance_off`.
    pub fn step_ended(&self, record: &RolloutRecord, index: usize, took: Duration) {
        let step = &record.steps[index];
        let outcome = if step.state == StepState::Succeeded { "succeeded" } else { "failed" };
        let labels = KindOutcome { kind: step.kind.name(), outcome };
        self.step_duration.get_or_create(&labels).observe(took.as_secs_f64());
        match (step.kind, step.state) {
            (StepKind::MaintenanceOn, StepState::Succeeded) => self.maintenance_on(record),
            (StepKind::MaintenanceOff, StepState::Succeeded) => self.maintenance_off(&record.id),
            _ => {}
        }
    }

    /// A rollout this leader resumes may already be in maintenance mode
    /// (an earlier leader turned it on): timed from now.
    pub fn rollout_resumed(&self, record: &RolloutRecord) {
        let done = |kind| record.steps.iter().any(|s| s.kind == kind && s.state == StepState::Succeeded);
        if record.state == RolloutState::Running
            && done(StepKind::MaintenanceOn)
            && !done(StepKind::MaintenanceOff)
        {
            self.maintenance_on(record);
        }
    }

    fn maintenance_on(&self, record: &RolloutRecord) {
        let (class, allowed) = allowed_maintenance(record.plan.as_ref());
        let labels = Maintenance {
            environment: record.environment.clone(),
            rollout: record.id.clone(),
            downtime_class: class,
        };
        self.maintenance_started.get_or_create(&labels).set(runway_proto::unix_ms_now() / 1000);
        self.maintenance_allowed.get_or_create(&labels).set(allowed.as_secs() as i64);
        self.in_maintenance
            .lock()
            .expect("metrics lock")
            .insert(record.id.clone(), (labels, tokio::time::Instant::now()));
    }

    fn maintenance_off(&self, id: &str) {
        let Some((labels, since)) = self.in_maintenance.lock().expect("metrics lock").remove(id) else {
            return;
        };
        self.maintenance_started.remove(&labels);
        self.maintenance_allowed.remove(&labels);
        let env = Env { environment: labels.environment };
        self.maintenance_duration.get_or_create(&env).observe(since.elapsed().as_secs_f64());
    }

    /// A command of step kind `kind` ended with `outcome` (`succeeded`,
    /// `failed`, `refused`, `interrupted`, `unknown`) `took` after its dispatch.
    pub fn command_ended(&self, kind: StepKind, outcome: &'static str, took: Duration) {
        let labels = KindOutcome { kind: kind.name(), outcome };
        self.command_duration.get_or_create(&labels).observe(took.as_secs_f64());
    }

    /// An etcd request `op` took `took`; `ok` false when it failed or timed out.
    pub fn etcd_request(&self, op: &'static str, took: Duration, ok: bool) {
        self.etcd_duration.get_or_create(&Op { op }).observe(took.as_secs_f64());
        if !ok {
            self.etcd_errors.get_or_create(&Op { op }).inc();
        }
    }

    /// The metrics in the Prometheus text format 0.0.4 (what
    /// `promtool check metrics` reads).
    pub fn render(&self) -> String {
        self.registry.prometheus_text()
    }
}

/// The `outcome` label of a command result.
pub fn outcome_name<E>(outcome: Result<runway_proto::v1::CommandOutcome, E>) -> &'static str {
    use runway_proto::v1::CommandOutcome;
    match outcome {
        Ok(CommandOutcome::Succeeded) => "succeeded",
        Ok(CommandOutcome::Refused) => "refused",
        Ok(CommandOutcome::Interrupted) => "interrupted",
        _ => "failed",
    }
}

/// The downtime class of the preflight plan and how long maintenance mode
/// may stay on for it: twice the class's upper bound (`small` < 1 min:
/// 2 min; `medium` ≤ 5 min: 10 min); `large` and `unknown` have no upper
/// bound: twice the lint's estimate, at least 30 min (30 min when there is
/// no estimate).
pub fn allowed_maintenance(plan: Option<&runway_proto::v1::MigrationPlan>) -> (String, Duration) {
    use runway_proto::v1::{self, DowntimeClass};
    let class = plan.map_or(DowntimeClass::Unknown, v1::MigrationPlan::downtime_class);
    let estimate = plan.and_then(|p| p.downtime.as_ref()).and_then(|d| d.estimated_seconds).unwrap_or(0.0);
    let secs = match class {
        DowntimeClass::Small => 120.0,
        DowntimeClass::Medium => 600.0,
        _ => (estimate * 2.0).max(1800.0),
    };
    (runway_proto::plan::downtime_class_name(class).to_owned(), Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maintenance_allowance_follows_the_downtime_class() {
        use runway_proto::v1;
        let plan = |class: v1::DowntimeClass, est: f64| v1::MigrationPlan {
            downtime: Some(v1::Downtime {
                class: class as i32,
                estimated_seconds: Some(est),
                reason: String::new(),
            }),
            ..v1::MigrationPlan::default()
        };
        let small = plan(v1::DowntimeClass::Small, 1.0);
        assert_eq!(allowed_maintenance(Some(&small)), ("small".into(), Duration::from_secs(120)));
        assert_eq!(
            allowed_maintenance(Some(&plan(v1::DowntimeClass::Medium, 100.0))).1,
            Duration::from_secs(600)
        );
        assert_eq!(
            allowed_maintenance(Some(&plan(v1::DowntimeClass::Large, 3600.0))).1,
            Duration::from_secs(7200)
        );
        assert_eq!(allowed_maintenance(None), ("unknown".into(), Duration::from_secs(1800)));
    }

    #[test]
    fn names_follow_prometheus_conventions() {
        get().etcd_request("get", Duration::from_millis(3), false);
        let text = get().render();
        for name in [
            "runway_leader ",
            "runway_etcd_request_duration_seconds_bucket",
            "runway_etcd_request_errors_total{op=\"get\"} ",
        ] {
            assert!(text.contains(name), "{name} missing in\n{text}");
        }
    }
}
