//! The approval gate in the runner: a rollout in an environment that
//! requires approvals waits after preflight, saved, touching no host, until
//! operators decide; on paused time like the rest of the runner's tests.
//!
//! Decisions are saved and the run woken exactly as `api::approvals` does.

use super::*;
use crate::model::{Decision, GateOutcome, Verdict};
use crate::repo::audit::{self, Action, Outcome};

/// The DB agent's preflight plan: nothing Danger, small downtime.
fn ordinary() -> v1::MigrationPlan {
    v1::MigrationPlan {
        downtime: Some(v1::Downtime {
            class: v1::DowntimeClass::Small as i32,
            estimated_seconds: None,
            reason: "under a minute".into(),
        }),
        ..v1::MigrationPlan::default()
    }
}

/// With a Danger finding the operator accepted (`--allow-danger drop-column`).
fn dangerous() -> v1::MigrationPlan {
    let finding = v1::LintFinding {
        rule: "drop-column".into(),
        severity: v1::Severity::Danger as i32,
        ..Default::default()
    };
    v1::MigrationPlan { findings: vec![finding], ..ordinary() }
}

fn ordinary_preflight(agent: &str, command: &v1::Command) -> Answer {
    match (agent, step_of(command)) {
        ("db", "preflight") => Answer::Plan(ordinary),
        _ => Answer::Succeed,
    }
}

fn dangerous_preflight(agent: &str, command: &v1::Command) -> Answer {
    match (agent, step_of(command)) {
        ("db", "preflight") => Answer::Plan(dangerous),
        _ => Answer::Succeed,
    }
}

/// A coordinator config whose test environment has these policy keys.
fn staging(policy: &str) -> Config {
    toml::from_str(&format!("[environments.{ENVIRONMENT}]\n{policy}\n")).expect("a valid policy")
}

/// A leader (token 7) over `kv` with `policy`, its usual agents answering
/// by `script`, that started rollout `r1` (by alice) and now waits for its
/// approvals. Returns it with its term and its event bus.
async fn awaiting(
    kv: &Arc<MemoryKv>,
    policy: &str,
    script: Script,
) -> (Coordinator, Term, broadcast::Receiver<RolloutEvent>) {
    let leader = Coordinator::configured(kv, "coordinator-a", staging(policy));
    leader.connect_all(script).await;
    let term = leader.election.grant(FencingToken(7));
    let mut bus = leader.bus.subscribe();
    leader.start_rollout(&term).await;
    next_event(&mut bus, |e| e.kind == "step_started" && e.step == "approval").await;
    (leader, term, bus)
}

/// Waits for the next event of `r1` that matches `wanted`.
async fn next_event(
    bus: &mut broadcast::Receiver<RolloutEvent>,
    wanted: impl Fn(&RolloutEvent) -> bool,
) -> RolloutEvent {
    tokio::time::timeout(Duration::from_secs(24 * 3600), async {
        loop {
            let event = bus.recv().await.expect("bus open");
            if event.rollout_id == "r1" && wanted(&event) {
                return event;
            }
        }
    })
    .await
    .expect("the event came in time")
}

/// Saves `operator`'s decision about `r1` and wakes the run, as
/// `api::approvals` does.
async fn decide(coordinator: &Coordinator, term: &Term, operator: &str, verdict: Verdict, comment: &str) {
    let decision = Decision {
        operator: operator.into(),
        unix_ms: runway_proto::unix_ms_now(),
        verdict,
        comment: comment.into(),
        round: 0,
    };
    let entry = audit::entry(Action::Approve, coordinator.name);
    let audit = coordinator.store.audit().put(&entry, Outcome::Accepted, "");
    coordinator.store.save_decision(term, "r1", &decision, audit).await.unwrap();
    coordinator.runner.wake("r1");
}

/// The steps the fake agents received commands for, in order.
fn sent_steps(coordinator: &Coordinator) -> Vec<String> {
    coordinator.received.borrow().iter().map(|(_, c)| step_of(c).to_owned()).collect()
}

async fn saved(coordinator: &Coordinator) -> RolloutRecord {
    coordinator.store.get_rollout("r1").await.unwrap().unwrap()
}

/// Nothing but preflight reached a host: no maintenance mode, no backup.
fn assert_only_preflight_ran(coordinator: &Coordinator) {
    let sent = sent_steps(coordinator);
    assert!(sent.iter().all(|s| s == "preflight"), "only preflight may run before approval: {sent:?}");
}

#[tokio::test(start_paused = true)]
async fn a_rollout_waits_after_preflight_and_runs_once_approved() {
    let kv = Arc::new(MemoryKv::new());
    let policy = "approvals = { default = 1, danger = 2 }\n\
                  roles = { alice = [\"deploy\", \"approve\"], bob = [\"approve\"], carol = [\"approve\"] }";
    let (leader, term, mut bus) = awaiting(&kv, policy, ordinary_preflight).await;

    // Waiting, saved, with its plan; an hour passes and nothing else runs.
    tokio::time::sleep(Duration::from_secs(3600)).await;
    let record = saved(&leader).await;
    assert_eq!(record.state, RolloutState::AwaitingApproval);
    assert!(record.plan.is_some(), "the plan is saved with the waiting rollout");
    let gate = record.approval.clone().expect("the gate is saved");
    assert_eq!(
        (gate.needed, gate.rule.as_str(), gate.outcome),
        (1, "approvals.default", GateOutcome::Waiting)
    );
    assert_eq!(record.steps[1].kind, StepKind::Approval);
    assert_eq!(record.steps[1].state, StepState::Running);
    assert_only_preflight_ran(&leader);
    let events = leader.store.events("r1", 1).await.unwrap();
    let waiting = events.iter().find(|e| e.kind == "step_started" && e.step == "approval").unwrap();
    for needle in ["awaiting 1 approval(s) (approvals.default) by bob, carol,", "runway rollout approve r1"] {
        assert!(waiting.message.contains(needle), "{needle:?} missing from {:?}", waiting.message);
    }

    // The starter's own approval never counts.
    decide(&leader, &term, "alice", Verdict::Approve, "").await;
    decide(&leader, &term, "bob", Verdict::Approve, "looks fine").await;
    let approved = next_event(&mut bus, |e| e.kind == "approved").await;
    assert_eq!(approved.message, "approved by bob (1 of 1): looks fine");
    let last = finished(&mut bus, "r1").await;
    assert_eq!(last.kind, "rollout_succeeded");

    let record = saved(&leader).await;
    let gate = record.approval.clone().expect("kept");
    assert_eq!(gate.outcome, GateOutcome::Approved);
    assert_eq!(gate.approvers(), "bob");
    assert_eq!(gate.approvals[0].comment, "looks fine");
    use StepState::Succeeded;
    assert_eq!(
        steps(&record)[..3],
        [
            ("preflight", Succeeded, 1, false),
            ("approval", Succeeded, 1, false),
            ("maintenance_on", Succeeded, 1, false)
        ]
    );
    let events = leader.store.events("r1", 1).await.unwrap();
    assert_seqs_have_no_gaps(&events);
    assert_eq!(
        milestones(&events)[..6],
        [
            "rollout_started",
            "step_started preflight",
            "step_succeeded preflight",
            "step_started approval",
            "approved approval",
            "step_succeeded approval",
        ]
    );
    // The end is in the audit log, with who started and approved it.
    let log = leader.store.audit().list(0).await.unwrap();
    let ended = log.iter().find(|e| e.action == "rollout_ended").expect("the end is audited");
    assert_eq!((ended.actor.as_str(), ended.outcome.as_str()), ("coordinator:coordinator-a", "succeeded"));
    assert_eq!(ended.parameters["approved_by"], "bob");
    assert_eq!(ended.parameters["started_by"], "alice");
}

#[tokio::test(start_paused = true)]
async fn a_rejection_ends_the_rollout_cancelled_before_any_host_changed() {
    let kv = Arc::new(MemoryKv::new());
    let (leader, term, mut bus) = awaiting(&kv, "approvals = 2", ordinary_preflight).await;
    decide(&leader, &term, "bob", Verdict::Approve, "").await;
    next_event(&mut bus, |e| e.kind == "approved").await;
    decide(&leader, &term, "carol", Verdict::Reject, "not during the sale").await;

    let last = finished(&mut bus, "r1").await;
    assert_eq!(last.kind, "rollout_cancelled");
    assert_eq!(last.rollout_state, v1::RolloutState::Cancelled as i32);
    for needle in ["rejected by carol: not during the sale", "maintenance mode was never turned on"] {
        assert!(last.message.contains(needle), "{needle:?} missing from {:?}", last.message);
    }
    let record = saved(&leader).await;
    assert_eq!(record.state, RolloutState::Cancelled);
    assert!(!record.cancel_requested, "rejected, not cancelled by a request");
    let gate = record.approval.clone().expect("kept");
    assert_eq!(gate.outcome, GateOutcome::Rejected);
    assert_eq!(
        gate.rejection.map(|r| (r.operator, r.comment)),
        Some(("carol".into(), "not during the sale".into()))
    );
    use StepState::{Failed, Skipped, Succeeded};
    assert_eq!(
        steps(&record),
        [
            ("preflight", Succeeded, 1, false),
            ("approval", Failed, 1, false),
            ("maintenance_on", Skipped, 0, false),
            ("backup", Skipped, 0, false),
            ("migrate", Skipped, 0, false),
            ("restart", Skipped, 0, false),
            ("maintenance_off", Skipped, 0, false),
        ],
        "no recovery step: maintenance mode was never on"
    );
    assert_only_preflight_ran(&leader);
    let ended = leader.store.audit().list(0).await.unwrap().into_iter().find(|e| e.action == "rollout_ended");
    assert_eq!(ended.map(|e| e.outcome), Some("cancelled".to_owned()));
}

#[tokio::test(start_paused = true)]
async fn a_wait_without_enough_approvals_expires_and_ends_cancelled() {
    let kv = Arc::new(MemoryKv::new());
    let (leader, term, mut bus) =
        awaiting(&kv, "approvals = 2\napproval_timeout = \"2h\"", ordinary_preflight).await;
    let started = tokio::time::Instant::now();
    decide(&leader, &term, "bob", Verdict::Approve, "").await;

    let last = finished(&mut bus, "r1").await;
    let waited = started.elapsed();
    assert!(waited >= Duration::from_secs(7200) - Duration::from_secs(1), "expired early: {waited:?}");
    assert!(waited < Duration::from_secs(7200) + Duration::from_secs(2), "expired late: {waited:?}");
    assert_eq!(last.kind, "rollout_cancelled");
    assert!(
        last.message
            .contains("approval expired: 2 approval(s) needed within approval_timeout = \"2h\", got 1 (bob)"),
        "{}",
        last.message
    );
    let record = saved(&leader).await;
    assert_eq!(
        (record.state, record.approval.map(|g| g.outcome)),
        (RolloutState::Cancelled, Some(GateOutcome::Expired))
    );
    assert_only_preflight_ran(&leader);
}

#[tokio::test(start_paused = true)]
async fn a_riskier_plan_needs_the_danger_count_and_one_operator_counts_once() {
    let kv = Arc::new(MemoryKv::new());
    let (leader, term, mut bus) =
        awaiting(&kv, "approvals = { default = 1, danger = 2 }", dangerous_preflight).await;
    let gate = saved(&leader).await.approval.expect("saved");
    assert_eq!(gate.needed, 2);
    assert_eq!(gate.rule, "approvals.danger: it accepts Danger finding(s) drop-column (--allow-danger)");

    decide(&leader, &term, "bob", Verdict::Approve, "").await;
    assert_eq!(next_event(&mut bus, |e| e.kind == "approved").await.message, "approved by bob (1 of 2)");
    decide(&leader, &term, "bob", Verdict::Approve, "really").await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    let record = saved(&leader).await;
    assert_eq!(record.state, RolloutState::AwaitingApproval, "bob's second approval counts once");
    assert_eq!(record.approval.expect("saved").approvals.len(), 1);
    assert_only_preflight_ran(&leader);

    decide(&leader, &term, "carol", Verdict::Approve, "").await;
    assert_eq!(finished(&mut bus, "r1").await.kind, "rollout_succeeded");
    assert_eq!(saved(&leader).await.approval.expect("kept").approvers(), "bob, carol");
}

/// The leader dies while the rollout waits: the new leader resumes the
/// wait without running preflight again, counts the approval saved under
/// the old leader, keeps the saved expiry, and runs on the next approval.
#[tokio::test(start_paused = true)]
async fn a_new_leader_resumes_the_wait_with_the_decisions_saved_before() {
    let kv = Arc::new(MemoryKv::new());
    let (first, first_term, mut first_bus) = awaiting(&kv, "approvals = 2", ordinary_preflight).await;
    decide(&first, &first_term, "bob", Verdict::Approve, "").await;
    next_event(&mut first_bus, |e| e.kind == "approved").await;
    let before = saved(&first).await;
    first.election.revoke();
    first.wait_stopped("r1").await;

    let second = Coordinator::configured(&kv, "coordinator-b", staging("approvals = 2"));
    second.connect_all(always_succeed).await;
    let mut bus = second.bus.subscribe();
    let term = second.election.grant(FencingToken(20));
    tokio::time::sleep(Duration::from_secs(60)).await;
    let resumed = saved(&second).await;
    assert_eq!(resumed.state, RolloutState::AwaitingApproval);
    assert_eq!(resumed.coordinator, "coordinator-b");
    assert_eq!(resumed.approval, before.approval, "same count, approvals and expiry");
    assert!(sent_steps(&second).is_empty(), "nothing is sent again while waiting: {:?}", sent_steps(&second));

    decide(&second, &term, "carol", Verdict::Approve, "").await;
    assert_eq!(finished(&mut bus, "r1").await.kind, "rollout_succeeded");
    assert!(!sent_steps(&second).iter().any(|s| s == "preflight"), "preflight is not run again");
    let events = second.store.events("r1", 1).await.unwrap();
    assert_seqs_have_no_gaps(&events);
    let approvals: Vec<&str> =
        events.iter().filter(|e| e.kind == "approved").map(|e| e.message.as_str()).collect();
    assert_eq!(approvals, ["approved by bob (1 of 2)", "approved by carol (2 of 2)"]);
}

#[tokio::test(start_paused = true)]
async fn a_cancel_ends_the_wait_at_once() {
    let kv = Arc::new(MemoryKv::new());
    let (leader, term, mut bus) = awaiting(&kv, "approvals = 1", ordinary_preflight).await;
    let entry = audit::entry(Action::Cancel, leader.name);
    let audit = leader.store.audit().put(&entry, Outcome::Accepted, "");
    leader.store.request_cancel(&term, "r1", audit).await.unwrap();
    assert!(leader.runner.request_cancel("r1"));

    let started = tokio::time::Instant::now();
    let last = finished(&mut bus, "r1").await;
    assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
    assert_eq!(last.message, "rollout cancelled: cancelled by an operator");
    let record = saved(&leader).await;
    assert_eq!(record.state, RolloutState::Cancelled);
    assert_eq!(record.steps[1].state, StepState::Skipped);
    assert_only_preflight_ran(&leader);
}

#[tokio::test(start_paused = true)]
async fn an_environment_without_approvals_has_no_approval_step() {
    let (_, _, saved) = run_to_end(always_succeed).await;
    assert!(!saved.steps.iter().any(|s| s.kind == StepKind::Approval));
    assert_eq!(saved.approval, None);
}
