//! Restarts in batches in the runner, on paused time with fake agents:
//! failures within `max_failures` are tolerated (the failed host leaves the
//! smoke and watch steps), a failed canary stops the rollout whatever
//! `max_failures` says, and only the hosts reached are reverted.

use super::*;

/// A leader over a fresh store with `policy` for the test environment,
/// one DB agent and four app agents answering by `script`; runs `r1` to its
/// end and returns the saved record and the commands the agents received.
async fn run_with(policy: &str, script: Script) -> (RolloutRecord, Vec<(String, String)>) {
    let kv = Arc::new(MemoryKv::new());
    let config: Config =
        toml::from_str(&format!("[environments.{ENVIRONMENT}]\n{policy}\n")).expect("a valid policy");
    let leader = Coordinator::configured(&kv, "coordinator-a", config);
    leader.connect("db", "db", script).await;
    for app in ["app-1", "app-2", "app-3", "app-4"] {
        leader.connect(app, "app", script).await;
    }
    let (_, saved) = leader.lead_r1_to_end().await;
    let received = leader.received.borrow().iter().map(|(a, c)| (a.clone(), c.command_id.clone())).collect();
    (saved, received)
}

fn app_3_never_healthy(agent: &str, command: &v1::Command) -> Answer {
    match (agent, step_of(command)) {
        ("app-3", "restart") => Answer::Fail("app-3 did not answer healthy within 5 s", ""),
        _ => Answer::Succeed,
    }
}

fn canary_never_healthy(agent: &str, command: &v1::Command) -> Answer {
    match (agent, step_of(command)) {
        ("app-1", "restart") => Answer::Fail("app-1 did not answer healthy within 5 s", ""),
        _ => Answer::Succeed,
    }
}

/// The hosts that received a command of `step` (`restart`, `watch`, …).
fn hosts_of(received: &[(String, String)], step: &str) -> Vec<String> {
    received.iter().filter(|(_, id)| id.split('/').nth(1) == Some(step)).map(|(a, _)| a.clone()).collect()
}

#[tokio::test(start_paused = true)]
async fn a_tolerated_failure_lets_the_rollout_go_on_without_that_host() {
    let policy = "restart = { batch = 2, canary = 1, max_failures = 1 }\n\
                  smoke = [{ name = \"home\", path = \"/\" }]\n\
                  watch = { duration = \"1m\", interval = \"5s\" }";
    let (saved, received) = run_with(policy, app_3_never_healthy).await;
    assert_eq!(saved.state, RolloutState::Succeeded, "{}", saved.error);
    let restart = saved.steps.iter().find(|s| s.kind == StepKind::Restart).unwrap();
    assert_eq!(restart.state, StepState::Succeeded);
    assert!(restart.error.contains("tolerated") && restart.error.contains("app-3"), "{}", restart.error);
    assert_eq!(hosts_of(&received, "restart"), ["app-1", "app-2", "app-3", "app-4"]);
    assert_eq!(hosts_of(&received, "smoke").len(), 3);
    assert!(!hosts_of(&received, "smoke").contains(&"app-3".to_owned()));
    assert!(!hosts_of(&received, "watch").contains(&"app-3".to_owned()));
    let kinds: Vec<&str> = saved.steps.iter().map(|s| s.kind.name()).collect();
    assert_eq!(kinds[kinds.len() - 3..], ["maintenance_off", "smoke", "watch"]);
}

#[tokio::test(start_paused = true)]
async fn a_failed_canary_stops_the_rollout_whatever_max_failures_says() {
    let (saved, received) =
        run_with("restart = { batch = 2, canary = 1, max_failures = 3 }", canary_never_healthy).await;
    assert_eq!(saved.state, RolloutState::RolledBack, "{}", saved.error);
    // Only the canary restarted (and then reverted); no batch after it ran.
    assert_eq!(hosts_of(&received, "restart"), ["app-1"]);
    assert_eq!(hosts_of(&received, "restart-recovery"), ["app-1"]);
}

#[tokio::test(start_paused = true)]
async fn one_failure_too_many_stops_after_its_batch_and_reverts_the_hosts_reached() {
    // 25% of four hosts: one host per batch.
    let (saved, received) =
        run_with("restart = { batch = \"25%\", max_failures = 0 }", app_3_never_healthy).await;
    assert_eq!(saved.state, RolloutState::RolledBack, "{}", saved.error);
    assert_eq!(hosts_of(&received, "restart"), ["app-1", "app-2", "app-3"], "app-4's batch must not start");
    let mut reverted = hosts_of(&received, "restart-recovery");
    reverted.sort();
    assert_eq!(reverted, ["app-1", "app-2", "app-3"]);
    assert!(saved.error.contains("app-3"), "{}", saved.error);
}

#[tokio::test(start_paused = true)]
async fn a_new_leader_resumes_the_batches_with_the_same_command_ids() {
    fn app_3_holds(agent: &str, command: &v1::Command) -> Answer {
        match (agent, step_of(command)) {
            ("app-3", "restart") => Answer::Hold,
            _ => Answer::Succeed,
        }
    }
    let policy = "restart = { batch = 2, canary = 1 }";
    let config = |policy: &str| -> Config {
        toml::from_str(&format!("[environments.{ENVIRONMENT}]\n{policy}\n")).expect("a valid policy")
    };
    let kv = Arc::new(MemoryKv::new());
    let first = Coordinator::configured(&kv, "coordinator-a", config(policy));
    let apps = ["app-1", "app-2", "app-3", "app-4"];
    first.connect("db", "db", app_3_holds).await;
    for app in apps {
        first.connect(app, "app", app_3_holds).await;
    }
    let term = first.election.grant(FencingToken(10));
    first.start_rollout(&term).await;
    // The canary ended; the second batch (app-2, app-3) is out, app-3 holds.
    first.wait_for_commands(|log| log.iter().any(|(a, c)| a == "app-3" && step_of(c) == "restart")).await;
    first.election.revoke();
    first.wait_stopped("r1").await;
    let restarted_first =
        hosts_of(&first.commands().into_iter().map(|(a, id, _)| (a, id)).collect::<Vec<_>>(), "restart");
    assert_eq!(restarted_first, ["app-1", "app-2", "app-3"], "app-4's batch had not started");

    let second = Coordinator::configured(&kv, "coordinator-b", config(policy));
    second.connect("db", "db", always_succeed).await;
    for app in apps {
        second.connect(app, "app", always_succeed).await;
    }
    let mut bus = second.bus.subscribe();
    second.election.grant(FencingToken(20));
    assert_eq!(finished(&mut bus, "r1").await.kind, "rollout_succeeded");
    let restarts: Vec<(String, String)> = second
        .commands()
        .into_iter()
        .filter(|(_, id, _)| id.split('/').nth(1) == Some("restart"))
        .map(|(a, id, _)| (a, id))
        .collect();
    // From the first batch again, in order, with the ids of attempt 1: the
    // agents' journals answer for the hosts that ended.
    let order: Vec<&str> = restarts.iter().map(|(a, _)| a.as_str()).collect();
    assert_eq!(order[0], "app-1");
    assert_eq!(order[3], "app-4");
    assert!(restarts.iter().all(|(a, id)| id == &format!("r1/restart/{a}/1")), "{restarts:?}");
}
