//! The restart phase as policy: which app hosts take part (`select`), the
//! order they restart in (canaries, then batches), how many may fail, the
//! smoke and watch steps after maintenance off, and what each command
//! carries from the environment's policy.
//!
//! Pure functions: the runner runs them (see `runner::batches`).

use runway_proto::v1::{self, command};

use crate::config::{Count, EnvironmentPolicy, RestartPolicy, SmokeAfter, SmokeCheck};
use crate::model::{RolloutRecord, StepKind, StepRecord, StepState};
use crate::registry::AgentSnapshot;

/// The app agents selected by labels matched none of the connected ones.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "no connected app agent in environment {environment:?} has the labels of restart.select ({select}); \
     connected app agents: {connected}"
)]
pub struct NothingSelected {
    pub environment: String,
    pub select: String,
    pub connected: String,
}

/// How a batched step goes through its hosts: canaries first, then
/// batches, and how many may fail. The restart step takes it from
/// `restart`, backup and migrate from `databases` (see `rollout::databases`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batching {
    /// Hosts run first, together; one failing stops the step.
    pub canary: u32,
    /// Hosts run together after the canaries.
    pub batch: Count,
    /// Failures tolerated; one more stops later batches.
    pub max_failures: Count,
}

impl Batching {
    /// The restart step's batching.
    pub fn of_restart(policy: &RestartPolicy) -> Self {
        Self { canary: policy.canary, batch: policy.batch, max_failures: policy.max_failures }
    }
}

/// One batch of a batched step: run together; the next starts when all ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub hosts: Vec<String>,
    /// The canaries: a failure stops the rollout whatever `max_failures` says.
    pub canary: bool,
}

/// The order of `hosts`: the first `canary` hosts together, then
/// batches of `batch` hosts (a percentage counts of all `hosts`).
pub fn batches(hosts: &[String], policy: &Batching) -> Vec<Batch> {
    let canaries = (policy.canary as usize).min(hosts.len());
    let mut batches = Vec::new();
    if canaries > 0 {
        batches.push(Batch { hosts: hosts[..canaries].to_vec(), canary: true });
    }
    let size = policy.batch.batch_of(hosts.len());
    for chunk in hosts[canaries..].chunks(size) {
        batches.push(Batch { hosts: chunk.to_vec(), canary: false });
    }
    batches
}

/// How many of `total` hosts may fail before the rollout stops.
pub fn tolerated(policy: &Batching, total: usize) -> usize {
    policy.max_failures.failures_of(total)
}

/// Fits the default plan `steps` to the environment's policy: only the app
/// agents `restart.select` picks take part; a `smoke` step after maintenance
/// off when some smoke check runs then; a `watch` step last when `watch` is
/// set.
pub fn apply(
    environment: &str,
    steps: &mut Vec<StepRecord>,
    policy: &EnvironmentPolicy,
    agents: &[AgentSnapshot],
) -> Result<(), NothingSelected> {
    let select = &policy.restart.select;
    let apps: Vec<&AgentSnapshot> = agents.iter().filter(|a| a.has_role("app")).collect();
    if apps.is_empty() {
        return Ok(());
    }
    if !select.is_empty() {
        let left_out: Vec<&str> = apps
            .iter()
            .filter(|a| !a.has_role("db") && !select.iter().all(|(k, v)| a.labels.get(k) == Some(v)))
            .map(|a| a.name.as_str())
            .collect();
        if left_out.len() == apps.len() {
            return Err(NothingSelected {
                environment: environment.to_owned(),
                select: select.iter().map(|(k, v)| format!("{k} = {v:?}")).collect::<Vec<_>>().join(", "),
                connected: apps.iter().map(|a| a.name.as_str()).collect::<Vec<_>>().join(", "),
            });
        }
        for step in steps.iter_mut() {
            step.hosts.retain(|h| !left_out.contains(&h.as_str()));
        }
    }
    let Some(off) = steps.iter().position(|s| s.kind == StepKind::MaintenanceOff) else { return Ok(()) };
    let restarted =
        steps.iter().find(|s| s.kind == StepKind::Restart).map(|s| s.hosts.clone()).unwrap_or_default();
    let step = |kind| StepRecord {
        kind,
        hosts: restarted.clone(),
        state: StepState::Pending,
        attempt: 0,
        error: String::new(),
        recovery: false,
    };
    let mut at = off + 1;
    if policy.smoke.iter().any(|c| c.after != SmokeAfter::Restart) {
        steps.insert(at, step(StepKind::Smoke));
        at += 1;
    }
    if policy.watch.is_some() {
        steps.insert(at, step(StepKind::Watch));
    }
    Ok(())
}

/// The hosts the restart phase changed: those of the rollout's restart
/// step (what a smoke or watch failure rolls back).
pub fn changed_hosts(record: &RolloutRecord) -> Vec<String> {
    record
        .steps
        .iter()
        .find(|s| s.kind == StepKind::Restart && !s.recovery)
        .map(|s| s.hosts.clone())
        .unwrap_or_default()
}

/// After a restart step that succeeded with tolerated failures: the failed
/// hosts leave the smoke and watch steps (they do not run the new version).
pub fn drop_failed(record: &mut RolloutRecord, failed: &[String]) {
    for step in record.steps.iter_mut().filter(|s| matches!(s.kind, StepKind::Smoke | StepKind::Watch)) {
        step.hosts.retain(|h| !failed.contains(h));
    }
}

/// The wire form of a smoke check.
pub fn smoke_to_proto(check: &SmokeCheck) -> v1::SmokeCheck {
    let kind = match (&check.path, &check.command) {
        (Some(path), _) => v1::smoke_check::Check::Http(v1::HttpCheck {
            path: path.clone(),
            status: u32::from(check.status),
            body_contains: check.body_contains.clone(),
            json_field: check.json_field.clone(),
            json_equals: check.json_equals.clone(),
        }),
        (None, command) => v1::smoke_check::Check::Command(command.clone().unwrap_or_default()),
    };
    v1::SmokeCheck {
        name: check.name.clone(),
        check: Some(kind),
        timeout_ms: check.timeout.millis(),
        retries: check.retries,
    }
}

fn checks(policy: &EnvironmentPolicy, skip: SmokeAfter) -> Vec<v1::SmokeCheck> {
    policy.smoke.iter().filter(|c| c.after != skip).map(smoke_to_proto).collect()
}

/// Adds what the environment's policy says to a step's command: deadlines
/// and smoke checks to a rollout's restart (not to a recovery restart,
/// which brings back what ran before under the agent's own deadline), the
/// checks to a smoke step, the window to a watch step.
pub fn complete(action: &mut command::Action, policy: &EnvironmentPolicy, recovery: bool) {
    match action {
        command::Action::Restart(restart) if !recovery => {
            restart.healthy_deadline_ms = policy.restart.healthy_deadline.map_or(0, |d| d.millis());
            restart.min_healthy_ms = policy.restart.min_healthy.millis();
            restart.smoke = checks(policy, SmokeAfter::MaintenanceOff);
        }
        command::Action::Smoke(smoke) => smoke.checks = checks(policy, SmokeAfter::Restart),
        command::Action::Watch(watch) => {
            if let Some(window) = &policy.watch {
                watch.duration_ms = window.duration.millis();
                watch.interval_ms = window.interval.millis();
            }
            watch.checks = checks(policy, SmokeAfter::Restart);
        }
        _ => {}
    }
}

/// The restart-phase policy as it applies to `restarted` hosts, one line
/// each, for `runway rollout plan`.
pub fn describe(policy: &EnvironmentPolicy, restarted: &[String]) -> Vec<String> {
    let restart = &policy.restart;
    let mut lines = Vec::new();
    if !restart.select.is_empty() {
        let labels = restart.select.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", ");
        lines.push(format!("select: app hosts labelled {labels}: {}", restarted.join(", ")));
    }
    let order = batches(restarted, &Batching::of_restart(restart))
        .iter()
        .map(|b| format!("{}[{}]", if b.canary { "canary " } else { "" }, b.hosts.join(", ")))
        .collect::<Vec<_>>()
        .join(" → ");
    if !order.is_empty() {
        lines.push(format!("restart order: {order}"));
    }
    let deadline = restart
        .healthy_deadline
        .map_or_else(|| "the agent's [app] health_timeout".to_owned(), |d| d.to_string());
    let failures = match restart.max_failures {
        Count::Percent(p) => format!("{p}% = {}", tolerated(&Batching::of_restart(restart), restarted.len())),
        Count::Hosts(n) => n.to_string(),
    };
    lines.push(format!(
        "each host healthy within {deadline}, staying healthy for {}; failures tolerated: {failures} \
         (one more rolls the restart phase back; a failed canary always does)",
        restart.min_healthy
    ));
    if !policy.smoke.is_empty() {
        let describe = |after: SmokeAfter| {
            policy.smoke.iter().filter(|c| c.after != after).map(|c| c.name.as_str()).collect::<Vec<_>>()
        };
        let (on_restart, after_off) = (describe(SmokeAfter::MaintenanceOff), describe(SmokeAfter::Restart));
        lines.push(format!(
            "smoke: after each restart [{}]; after maintenance off [{}]",
            on_restart.join(", "),
            after_off.join(", ")
        ));
    }
    if let Some(watch) = &policy.watch {
        lines.push(format!(
            "watch: {} after maintenance off, checks every {}; a failure reverts the app hosts{}",
            watch.duration,
            watch.interval,
            if watch.restore {
                " (and restores the backup when the migrations are not backward compatible)"
            } else {
                ""
            }
        ));
    }
    lines.extend(describe_analysis(policy));
    lines
}

/// The analysis checks and where they run, one line each.
fn describe_analysis(policy: &EnvironmentPolicy) -> Vec<String> {
    if policy.analysis.is_empty() {
        return Vec::new();
    }
    let mut phases = Vec::new();
    if policy.restart.canary > 0 {
        phases.push(format!("the canaries' min_healthy ({})", policy.restart.min_healthy));
    }
    if let Some(watch) = &policy.watch {
        phases.push(format!("the watch window ({})", watch.duration));
    }
    if let Some(monitor) = policy.monitor {
        phases.push(format!(
            "monitor for {monitor} after success (on failure: {})",
            policy.on_monitor_failure.as_str()
        ));
    }
    let phases = if phases.is_empty() {
        "never: no canary, watch or monitor is configured".to_owned()
    } else {
        phases.join(", ")
    };
    std::iter::once(format!("analysis runs during {phases}; a failure rolls back like a failed smoke check"))
        .chain(policy.analysis.iter().map(|c| c.describe()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Span;

    fn hosts(n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("app-{i}")).collect()
    }

    fn names(batches: &[Batch]) -> Vec<(bool, Vec<&str>)> {
        batches.iter().map(|b| (b.canary, b.hosts.iter().map(String::as_str).collect())).collect()
    }

    #[test]
    fn canaries_first_then_batches_in_order() {
        let batches =
            |hosts: &[String], policy: &RestartPolicy| batches(hosts, &Batching::of_restart(policy));
        let policy = RestartPolicy { batch: Count::Hosts(2), canary: 1, ..RestartPolicy::default() };
        assert_eq!(
            names(&batches(&hosts(5), &policy)),
            [(true, vec!["app-1"]), (false, vec!["app-2", "app-3"]), (false, vec!["app-4", "app-5"])]
        );
        let percent = RestartPolicy { batch: Count::Percent(25), canary: 0, ..RestartPolicy::default() };
        assert_eq!(
            names(&batches(&hosts(5), &percent)),
            [(false, vec!["app-1", "app-2"]), (false, vec!["app-3", "app-4"]), (false, vec!["app-5"])]
        );
        let default = batches(&hosts(2), &RestartPolicy::default());
        assert_eq!(names(&default), [(false, vec!["app-1"]), (false, vec!["app-2"])], "one at a time");
        let all_canaries = RestartPolicy { canary: 9, ..RestartPolicy::default() };
        assert_eq!(names(&batches(&hosts(2), &all_canaries)), [(true, vec!["app-1", "app-2"])]);
    }

    fn agent(name: &str, roles: &[&str], region: &str) -> AgentSnapshot {
        AgentSnapshot {
            name: name.into(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            app_version: "v1".into(),
            labels: [("region".to_owned(), region.to_owned())].into(),
            databases: Vec::new(),
        }
    }

    #[test]
    fn select_smoke_and_watch_shape_the_plan() {
        let agents =
            [agent("app-1", &["app"], "eu"), agent("app-2", &["app"], "us"), agent("db", &["db"], "us")];
        let mut steps = crate::rollout::steps::default_steps("prod", &agents, false).unwrap();
        let mut policy = EnvironmentPolicy::default();
        policy.restart.select = [("region".to_owned(), "eu".to_owned())].into();
        policy.smoke = toml::from_str::<toml::Table>("s = [{ name = \"home\", path = \"/\" }]").unwrap()["s"]
            .clone()
            .try_into()
            .unwrap();
        policy.watch = Some(crate::config::WatchPolicy {
            duration: Span::secs(60),
            interval: Span::secs(5),
            restore: false,
        });
        apply("prod", &mut steps, &policy, &agents).unwrap();
        let shape: Vec<(&str, Vec<&str>)> =
            steps.iter().map(|s| (s.kind.name(), s.hosts.iter().map(String::as_str).collect())).collect();
        assert_eq!(
            shape,
            [
                ("preflight", vec!["db", "app-1"]),
                ("maintenance_on", vec!["app-1"]),
                ("backup", vec!["db"]),
                ("migrate", vec!["db"]),
                ("restart", vec!["app-1"]),
                ("maintenance_off", vec!["app-1"]),
                ("smoke", vec!["app-1"]),
                ("watch", vec!["app-1"]),
            ]
        );
        policy.restart.select = [("region".to_owned(), "mars".to_owned())].into();
        let mut steps = crate::rollout::steps::default_steps("prod", &agents, false).unwrap();
        let error = apply("prod", &mut steps, &policy, &agents).unwrap_err().to_string();
        assert!(error.contains("region = \"mars\"") && error.contains("app-1, app-2"), "{error}");
    }

    #[test]
    fn commands_carry_the_policy() {
        let mut policy = EnvironmentPolicy::default();
        policy.restart.healthy_deadline = Some(Span::secs(300));
        policy.restart.min_healthy = Span::secs(30);
        policy.smoke = toml::from_str::<toml::Table>(
            "s = [{ name = \"a\", path = \"/\", after = \"restart\" }, { name = \"b\", command = \"q\", after = \"maintenance_off\" }]",
        )
        .unwrap()["s"]
            .clone()
            .try_into()
            .unwrap();
        let mut restart = command::Action::Restart(v1::Restart::default());
        complete(&mut restart, &policy, false);
        let command::Action::Restart(r) = &restart else { unreachable!("a restart") };
        assert_eq!((r.healthy_deadline_ms, r.min_healthy_ms), (300_000, 30_000));
        assert_eq!(r.smoke.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), ["a"]);
        let mut recovery = command::Action::Restart(v1::Restart::default());
        complete(&mut recovery, &policy, true);
        assert_eq!(recovery, command::Action::Restart(v1::Restart::default()));
        let mut smoke = command::Action::Smoke(v1::Smoke::default());
        complete(&mut smoke, &policy, false);
        let command::Action::Smoke(s) = &smoke else { unreachable!("a smoke") };
        assert_eq!(s.checks.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), ["b"]);
    }
}
