//! The `maintenance` policy in the runner: decided from the saved
//! preflight plan just before maintenance mode would go on.

use super::*;

fn safe() -> v1::MigrationPlan {
    v1::MigrationPlan { safe_without_maintenance: true, ..v1::MigrationPlan::default() }
}

fn rewrite() -> v1::MigrationPlan {
    v1::MigrationPlan {
        safe_without_maintenance: false,
        reasons: vec!["m line 1: alter-column-type (rewrites Order)".into()],
        ..v1::MigrationPlan::default()
    }
}

fn safe_preflight(agent: &str, command: &v1::Command) -> Answer {
    match (agent, step_of(command)) {
        ("db", "preflight") => Answer::Plan(safe),
        _ => Answer::Succeed,
    }
}

fn rewrite_preflight(agent: &str, command: &v1::Command) -> Answer {
    match (agent, step_of(command)) {
        ("db", "preflight") => Answer::Plan(rewrite),
        _ => Answer::Succeed,
    }
}

/// Runs `r1` to its end under `maintenance = POLICY` with the DB agent's
/// preflight answering by `script`.
async fn run(policy: &str, script: Script) -> (Coordinator, RolloutEvent, RolloutRecord, Vec<RolloutEvent>) {
    let kv = Arc::new(MemoryKv::new());
    let config: Config =
        toml::from_str(&format!("[environments.{ENVIRONMENT}]\nmaintenance = \"{policy}\"\n"))
            .expect("a policy");
    let leader = Coordinator::configured(&kv, "coordinator-a", config);
    leader.connect_all(script).await;
    let (last, saved) = leader.lead_r1_to_end().await;
    let events = leader.store.events("r1", 1).await.unwrap();
    (leader, last, saved, events)
}

fn sent_steps(coordinator: &Coordinator) -> Vec<String> {
    coordinator.received.borrow().iter().map(|(_, c)| step_of(c).to_owned()).collect()
}

#[tokio::test(start_paused = true)]
async fn auto_skips_maintenance_for_a_safe_plan_and_keeps_it_otherwise() {
    let (leader, last, saved, events) = run("auto", safe_preflight).await;
    assert_eq!(last.kind, "rollout_succeeded");
    let sent = sent_steps(&leader);
    assert!(!sent.iter().any(|s| s.starts_with("maintenance")), "{sent:?}");
    assert!(sent.iter().any(|s| s == "restart"), "the apps still restart: {sent:?}");
    let skipped: Vec<&str> =
        saved.steps.iter().filter(|s| s.state == StepState::Skipped).map(|s| s.kind.name()).collect();
    assert_eq!(skipped, ["maintenance_on", "maintenance_off"]);
    assert!(milestones(&events).contains(&"maintenance_skipped maintenance_on".to_owned()));

    let (leader, last, _, events) = run("auto", rewrite_preflight).await;
    assert_eq!(last.kind, "rollout_succeeded");
    assert!(sent_steps(&leader).iter().any(|s| s == "maintenance_on"));
    let needed = events.iter().find(|e| e.kind == "maintenance_needed").expect("says why");
    assert!(needed.message.contains("rewrites Order"), "{}", needed.message);

    // "always" (the default) says nothing and turns it on even when safe.
    let (leader, _, _, events) = run("always", safe_preflight).await;
    assert!(sent_steps(&leader).iter().any(|s| s == "maintenance_on"));
    assert!(!events.iter().any(|e| e.kind.starts_with("maintenance_")));
}

#[tokio::test(start_paused = true)]
async fn never_refuses_a_plan_that_needs_maintenance_before_anything_changes() {
    let (leader, last, saved, _) = run("never", rewrite_preflight).await;
    assert_eq!(last.kind, "rollout_failed");
    assert!(saved.refused, "refused, not failed: nothing changed");
    assert!(saved.error.contains("refused by maintenance = \"never\""), "{}", saved.error);
    let sent = sent_steps(&leader);
    assert!(sent.iter().all(|s| s == "preflight"), "only preflight may run: {sent:?}");
    let (leader, last, _, _) = run("never", safe_preflight).await;
    assert_eq!(last.kind, "rollout_succeeded");
    assert!(!sent_steps(&leader).iter().any(|s| s.starts_with("maintenance")));
}
