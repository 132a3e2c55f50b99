//! Several databases in the runner, on paused time with fake agents: `db-2`
//! serves `a`, `b` and `c`, migrated canary first then one at a time
//! (`parallel = 1`); `b`'s migration fails after changing it. What is
//! restored, left migrated or untouched follows `uniform` and `max_failures`.

use super::*;
use crate::model::DatabaseState;

/// Runs `r1` under `databases = { … }` with `db-2` serving three databases
/// and one app agent; the saved record and the commands received, as
/// `(step, database)`.
async fn run_with(policy: &str) -> (RolloutRecord, Vec<(String, String)>) {
    run_scripted(policy, b_fails).await
}

/// As [`run_with`], with the agents answering by `script`.
async fn run_scripted(policy: &str, script: Script) -> (RolloutRecord, Vec<(String, String)>) {
    let kv = Arc::new(MemoryKv::new());
    let config: Config = toml::from_str(&format!("[environments.{ENVIRONMENT}]\ndatabases = {policy}\n"))
        .expect("a valid policy");
    let leader = Coordinator::configured(&kv, "coordinator-a", config);
    leader.connect_serving("db-2", "db", &["a", "b", "c"], script).await;
    leader.connect("app-1", "app", script).await;
    let (_, saved) = leader.lead_r1_to_end().await;
    let received = leader
        .received
        .borrow()
        .iter()
        .filter(|(agent, _)| agent == "db-2")
        .map(|(_, c)| (step_of(c).to_owned(), c.database.clone()))
        .collect();
    (saved, received)
}

/// `b` fails; preflight's plan is one the old app version can serve.
fn b_fails(agent: &str, command: &v1::Command) -> Answer {
    match step_of(command) {
        "preflight" if agent == "db-2" => Answer::Plan(v1::MigrationPlan::default),
        _ => b_fails_with_any_plan(agent, command),
    }
}

/// As [`b_fails`], with a plan that drops a column the old version reads.
fn b_fails_breaking(agent: &str, command: &v1::Command) -> Answer {
    fn breaking() -> v1::MigrationPlan {
        v1::MigrationPlan {
            findings: vec![v1::LintFinding {
                rule: "drop-column".into(),
                severity: v1::Severity::Warning as i32,
                ..Default::default()
            }],
            ..Default::default()
        }
    }
    match step_of(command) {
        "preflight" if agent == "db-2" => Answer::Plan(breaking),
        _ => b_fails_with_any_plan(agent, command),
    }
}

fn b_fails_with_any_plan(_: &str, command: &v1::Command) -> Answer {
    match (step_of(command), command.database.as_str()) {
        ("migrate", "b") => Answer::Fail("b: relation \"x\" already exists", r#"{"database_changed":true}"#),
        ("backup", _) => Answer::SucceedWith(r#"{"manifest":{"id":"backup-of-one"}}"#),
        _ => Answer::Succeed,
    }
}

fn of_step<'a>(received: &'a [(String, String)], step: &str) -> Vec<&'a str> {
    received.iter().filter(|(s, _)| s == step).map(|(_, d)| d.as_str()).collect()
}

fn states(record: &RolloutRecord) -> Vec<(&str, DatabaseState)> {
    record.databases.iter().map(|d| (d.database.as_str(), d.state)).collect()
}

#[tokio::test(start_paused = true)]
async fn not_uniform_restores_only_the_failed_database_and_reports_the_migrated_one() {
    let (saved, received) = run_with("{ canary = 1, parallel = 1, max_failures = 0, uniform = false }").await;
    assert_eq!(saved.state, RolloutState::RolledBack, "{}", saved.error);
    assert_eq!(of_step(&received, "backup"), ["a", "b", "c"]);
    assert_eq!(of_step(&received, "migrate"), ["a", "b"], "c is never started");
    assert_eq!(of_step(&received, "restore-recovery"), ["b"]);
    use DatabaseState::*;
    assert_eq!(states(&saved), [("a", Migrated), ("b", Restored), ("c", Skipped)]);
    assert!(saved.error.contains("stay migrated") && saved.error.contains("db-2/a"), "{}", saved.error);
    // Maintenance is lifted after the restore, the app never restarted.
    let kinds: Vec<(&str, bool)> = saved.steps.iter().map(|s| (s.kind.name(), s.recovery)).collect();
    assert_eq!(kinds[kinds.len() - 2..], [("restore", true), ("maintenance_off", true)]);
    assert!(saved.steps.iter().any(|s| s.kind == StepKind::Restart && s.state == StepState::Skipped));
}

/// Not uniform, but the old app version cannot serve the migrated
/// schema (the app hosts are not restarted when migrate fails): the
/// migrated databases are restored too, and the error says why.
#[tokio::test(start_paused = true)]
async fn not_uniform_still_restores_what_the_old_version_cannot_serve() {
    let (saved, received) =
        run_scripted("{ canary = 1, parallel = 1, max_failures = 0, uniform = false }", b_fails_breaking)
            .await;
    assert_eq!(saved.state, RolloutState::RolledBack, "{}", saved.error);
    assert_eq!(of_step(&received, "restore-recovery"), ["b", "a"]);
    assert!(saved.error.contains("not backward compatible"), "{}", saved.error);
}

#[tokio::test(start_paused = true)]
async fn uniform_restores_the_migrated_databases_too() {
    let (saved, received) = run_with("{ canary = 1, parallel = 1 }").await;
    assert_eq!(saved.state, RolloutState::RolledBack, "{}", saved.error);
    assert_eq!(of_step(&received, "restore-recovery"), ["b", "a"]);
    use DatabaseState::*;
    assert_eq!(states(&saved), [("a", Restored), ("b", Restored), ("c", Skipped)]);
}

#[tokio::test(start_paused = true)]
async fn a_tolerated_failure_restores_that_database_and_the_rest_go_on() {
    let (saved, received) = run_with("{ canary = 1, parallel = 1, max_failures = 1 }").await;
    assert_eq!(saved.state, RolloutState::Succeeded, "{}", saved.error);
    assert_eq!(of_step(&received, "migrate"), ["a", "b", "c"]);
    assert_eq!(of_step(&received, "restore-recovery"), ["b"]);
    use DatabaseState::*;
    assert_eq!(states(&saved), [("a", Migrated), ("b", Restored), ("c", Migrated)]);
    // The restore comes right after the migrate step, before the app restarts.
    let kinds: Vec<&str> = saved.steps.iter().map(|s| s.kind.name()).collect();
    let migrate = kinds.iter().position(|k| *k == "migrate").unwrap();
    assert_eq!(kinds[migrate + 1..migrate + 3], ["restore", "restart"]);
}
