//! The runner's state machine over the in-memory store and election, with
//! its real registry and dispatcher. Fake agents sit where the agent
//! channel would: they take commands off the registry's stream and answer
//! through the dispatcher, as `api::agents` relays a real agent's answers.
//!
//! Every test runs on paused Tokio time: step deadlines and rescans pass in
//! virtual time, never in real sleeps.

use std::collections::BTreeSet;
use std::time::Duration;

use runway_proto::v1::{
    AgentInfo, BundleFile, CommandEvent, CommandResult, RolloutEvent, command, coordinator_message,
};
use tokio::sync::{broadcast, mpsc, watch};

use super::*;
use crate::fencing::FencingToken;
use crate::leadership::memory::MemoryElection;
use crate::registry::{AgentKey, AgentSender};
use crate::rollout::steps::default_steps;
use crate::store::Store;
use crate::store::memory::MemoryKv;

const ENVIRONMENT: &str = "staging";

/// A fake agent's key in [`ENVIRONMENT`].
fn key(agent: &str) -> AgentKey {
    AgentKey::new(ENVIRONMENT, agent)
}

/// The coordinators' `step_deadline`: one hour.
const STEP_DEADLINE: Duration = Duration::from_secs(3600);

/// What agents used to be granted before their step failed (the old
/// `agent_grace` default): being away longer no longer fails a step.
const OLD_GRACE: Duration = Duration::from_secs(60);

/// How a fake agent answers a command.
#[derive(Debug, Clone, Copy)]
enum Answer {
    /// One progress event, then success.
    Succeed,
    /// Success with this result detail (JSON).
    #[allow(dead_code)]
    SucceedWith(&'static str),
    /// A DB agent's preflight: success with this plan.
    Plan(fn() -> v1::MigrationPlan),
    /// Failure with this error, and the agent's facts about it (JSON).
    Fail(&'static str, &'static str),
    /// Refused before anything ran, with this error.
    Refuse(&'static str),
    /// No answer; the test answers (or never does).
    Hold,
}

/// Decides each fake agent's answer from the command.
type Script = fn(&str, &v1::Command) -> Answer;

fn always_succeed(_: &str, _: &v1::Command) -> Answer {
    Answer::Succeed
}

/// The step name in a command id (`<rollout>/<step>/<host>/<attempt>`).
fn step_of(command: &v1::Command) -> &str {
    command.command_id.split('/').nth(1).unwrap_or_default()
}

/// One coordinator over the shared in-memory store.
struct Coordinator {
    name: &'static str,
    election: MemoryElection,
    registry: Registry,
    dispatcher: Dispatcher,
    runner: Runner,
    store: RolloutStore,
    bus: EventBus,
    shutdown: CancellationToken,
    /// Every command its fake agents received, in order: (agent, command).
    received: Arc<watch::Sender<Vec<(String, v1::Command)>>>,
}

impl Coordinator {
    /// A follower named `name`, following leadership like `crate::run` does.
    /// Leads with token 7 and runs rollout `r1` to its end: the terminal
    /// event and the saved record.
    async fn lead_r1_to_end(&self) -> (RolloutEvent, RolloutRecord) {
        let term = self.election.grant(FencingToken(7));
        let mut bus = self.bus.subscribe();
        self.start_rollout(&term).await;
        let last = finished(&mut bus, "r1").await;
        (last, self.store.get_rollout("r1").await.unwrap().unwrap())
    }

    fn new(kv: &Arc<MemoryKv>, name: &'static str) -> Self {
        Self::configured(kv, name, Config::default())
    }

    /// As [`Coordinator::new`], with `config` (its name and step deadline
    /// are set here).
    fn configured(kv: &Arc<MemoryKv>, name: &'static str, config: Config) -> Self {
        let config = Arc::new(Config { name: name.into(), step_deadline: STEP_DEADLINE, ..config });
        let store = Store::new(Arc::clone(kv) as Arc<dyn crate::store::Kv>, "/runway");
        let election = MemoryElection::new(Arc::clone(kv), &store.election_name(), name);
        let store = RolloutStore::new(store);
        let registry = Registry::default();
        let dispatcher = Dispatcher::new(registry.clone());
        let (bus, _) = broadcast::channel(1024);
        let runner = Runner::new(
            config,
            store.clone(),
            bus.clone(),
            dispatcher.clone(),
            registry.clone(),
            TaskTracker::new(),
        );
        let shutdown = CancellationToken::new();
        tokio::spawn(runner.clone().follow_leadership(Arc::new(election.clone()), shutdown.clone()));
        let received = Arc::new(watch::Sender::new(Vec::new()));
        Self { name, election, registry, dispatcher, runner, store, bus, shutdown, received }
    }

    /// Connects a fake agent that answers as `script` says.
    async fn connect(&self, agent: &'static str, role: &str, script: Script) {
        self.connect_serving(agent, role, &[], script).await;
    }

    /// As [`Coordinator::connect`], for an agent that registers `databases`.
    async fn connect_serving(&self, agent: &'static str, role: &str, databases: &[&str], script: Script) {
        let (tx, mut rx) = mpsc::channel(256);
        let info = AgentInfo {
            name: agent.into(),
            environment: ENVIRONMENT.into(),
            roles: vec![role.into()],
            databases: databases.iter().map(|d| d.to_string()).collect(),
            ..AgentInfo::default()
        };
        self.registry.register(info, AgentSender::new(tx), "test");
        let (dispatcher, received) = (self.dispatcher.clone(), Arc::clone(&self.received));
        let agent_key = key(agent);
        tokio::spawn(async move {
            while let Some(Ok(message)) = rx.recv().await {
                let Some(coordinator_message::Kind::Command(command)) = message.kind else { continue };
                received.send_modify(|log| log.push((agent.to_owned(), command.clone())));
                match script(agent, &command) {
                    Answer::Succeed => {
                        let event = CommandEvent {
                            command_id: command.command_id.clone(),
                            seq: 1,
                            phase: "working".into(),
                            ..CommandEvent::default()
                        };
                        dispatcher.on_event(&agent_key, event);
                        dispatcher.on_result(&agent_key, result(&command.command_id, Ok(())));
                    }
                    Answer::SucceedWith(detail) => {
                        let mut succeeded = result(&command.command_id, Ok(()));
                        succeeded.detail_json = detail.into();
                        dispatcher.on_result(&agent_key, succeeded)
                    }
                    Answer::Plan(plan) => {
                        let mut succeeded = result(&command.command_id, Ok(()));
                        succeeded.plan = Some(Box::new(plan()));
                        dispatcher.on_result(&agent_key, succeeded)
                    }
                    Answer::Fail(error, detail) => {
                        let mut failed = result(&command.command_id, Err(error));
                        failed.detail_json = detail.into();
                        dispatcher.on_result(&agent_key, failed)
                    }
                    Answer::Refuse(error) => {
                        let mut refused = result(&command.command_id, Err(error));
                        refused.outcome = CommandOutcome::Refused as i32;
                        dispatcher.on_result(&agent_key, refused)
                    }
                    Answer::Hold => {}
                }
            }
        });
        // As `api::agents` does for an agent that (re)registers.
        self.dispatcher.resend_for(&key(agent)).await;
    }

    /// The usual staging environment: one DB host, two app hosts.
    async fn connect_all(&self, script: Script) {
        self.connect("db", "db", script).await;
        self.connect("app-1", "app", script).await;
        self.connect("app-2", "app", script).await;
    }

    /// Whether the test environment requires approvals (the plan then has
    /// an approval step).
    fn approvals_required(&self) -> bool {
        self.runner.config.environments.policy(ENVIRONMENT).approvals.required()
    }

    /// Accepts a rollout and starts it, as the operator API's start does.
    async fn start_rollout(&self, term: &Term) -> RolloutRecord {
        let files = vec![BundleFile {
            path: "20240101000000_init/migration.sql".into(),
            content: b"CREATE TABLE users (id bigint PRIMARY KEY);\n".to_vec(),
        }];
        let bundle = v1::Bundle { digest: runway_proto::bundle::digest(&files), files };
        let now = runway_proto::unix_ms_now();
        let agents = self.registry.snapshot(ENVIRONMENT);
        let mut steps = default_steps(ENVIRONMENT, &agents, self.approvals_required()).unwrap();
        let policy = self.runner.config.environments.policy(ENVIRONMENT);
        crate::rollout::restart::apply(ENVIRONMENT, &mut steps, &policy, &agents).unwrap();
        let record = RolloutRecord {
            id: "r1".into(),
            environment: ENVIRONMENT.into(),
            bundle_digest: bundle.digest.clone(),
            app_version: "2.0.0".into(),
            state: RolloutState::Pending,
            steps,
            error: String::new(),
            created_unix_ms: now,
            updated_unix_ms: now,
            coordinator: self.name.into(),
            cancel_requested: false,
            // As the operator API records them: each app agent's version.
            previous_versions: agents
                .iter()
                .filter(|a| a.has_role("app"))
                .map(|a| (a.name.clone(), "1.0.0".to_owned()))
                .collect(),
            started_by: "alice".into(),
            databases: crate::rollout::steps::database_records(ENVIRONMENT, &agents).unwrap(),
            ..Default::default()
        };
        let claim = self.store.claim(&record.environment).await.unwrap();
        assert!(
            self.store
                .create_rollout(term, &record, &bundle, None, (&claim.marker, claim.put(&record.id)))
                .await
                .unwrap()
        );
        self.runner.start(term.clone(), record.clone(), bundle);
        record
    }

    /// Waits until the fake agents have received commands matching `done`.
    async fn wait_for_commands(&self, done: impl Fn(&[(String, v1::Command)]) -> bool) {
        let mut log = self.received.subscribe();
        tokio::time::timeout(Duration::from_secs(600), log.wait_for(|log| done(log)))
            .await
            .expect("the agents got the commands in time")
            .expect("log open");
    }

    /// Every command received, as `(agent, command id, token)`.
    fn commands(&self) -> Vec<(String, String, u64)> {
        let log = self.received.borrow();
        log.iter().map(|(agent, c)| (agent.clone(), c.command_id.clone(), c.fencing_token)).collect()
    }

    /// Waits until this coordinator no longer runs rollout `id`.
    async fn wait_stopped(&self, id: &str) {
        tokio::time::timeout(Duration::from_secs(600), async {
            while self.runner.is_running(id) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("the run stopped in time");
    }
}

impl Drop for Coordinator {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn result(command_id: &str, outcome: Result<(), &str>) -> CommandResult {
    CommandResult {
        command_id: command_id.into(),
        outcome: match outcome {
            Ok(()) => CommandOutcome::Succeeded,
            Err(_) => CommandOutcome::Failed,
        } as i32,
        error: outcome.err().unwrap_or_default().into(),
        // A backup's result names the backup, as the real agent's does.
        detail_json: match outcome {
            Ok(()) if command_id.contains("/backup/") => r#"{"manifest":{"id":"backup-r1"}}"#.into(),
            Ok(()) => "{}".into(),
            Err(_) => String::new(),
        },
        plan: None,
        work_ms: 0,
    }
}

/// One leader (`coordinator-a`, token 7) whose usual agents answer by
/// `script`, running rollout `r1` to its end: the coordinator, the
/// terminal event and the saved record.
async fn run_to_end(script: Script) -> (Coordinator, RolloutEvent, RolloutRecord) {
    let kv = Arc::new(MemoryKv::new());
    let leader = Coordinator::new(&kv, "coordinator-a");
    leader.connect_all(script).await;
    let (last, saved) = leader.lead_r1_to_end().await;
    (leader, last, saved)
}

/// Waits for the terminal event of rollout `id` on `bus` (a virtual day at
/// most: longer than any step deadline of these tests).
async fn finished(bus: &mut broadcast::Receiver<RolloutEvent>, id: &str) -> RolloutEvent {
    tokio::time::timeout(Duration::from_secs(24 * 3600), async {
        loop {
            let event = bus.recv().await.expect("bus open");
            if event.rollout_id == id && event.terminal {
                return event;
            }
        }
    })
    .await
    .expect("the rollout ended in time")
}

/// The saved events about the rollout and its steps (not about single
/// commands): `kind` or `kind step`.
fn milestones(events: &[RolloutEvent]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e.host.is_empty())
        .map(|e| if e.step.is_empty() { e.kind.clone() } else { format!("{} {}", e.kind, e.step) })
        .collect()
}

/// The saved events about single commands: `(kind, command id)`.
fn command_events(events: &[RolloutEvent]) -> BTreeSet<(String, String)> {
    events.iter().filter(|e| !e.host.is_empty()).map(|e| (e.kind.clone(), e.command_id.clone())).collect()
}

/// `(step, state, attempt, recovery)` of each saved step.
fn steps(record: &RolloutRecord) -> Vec<(&'static str, StepState, u32, bool)> {
    record.steps.iter().map(|s| (s.kind.name(), s.state, s.attempt, s.recovery)).collect()
}

fn ids(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| n.to_string()).collect()
}

/// The ids of the commands received for `step`, in order.
fn received_for(coordinator: &Coordinator, step: &str) -> Vec<String> {
    let log = coordinator.received.borrow();
    log.iter().filter(|(_, c)| step_of(c) == step).map(|(_, c)| c.command_id.clone()).collect()
}

fn assert_seqs_have_no_gaps(events: &[RolloutEvent]) {
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=events.len() as u64).collect::<Vec<_>>());
}

#[tokio::test(start_paused = true)]
async fn every_step_succeeds_in_runbook_order() {
    let (leader, last, saved) = run_to_end(always_succeed).await;
    assert_eq!(last.kind, "rollout_succeeded");
    assert_eq!(saved.state, RolloutState::Succeeded);
    assert_eq!(saved.error, "");
    use StepState::Succeeded;
    assert_eq!(
        steps(&saved),
        [
            ("preflight", Succeeded, 1, false),
            ("maintenance_on", Succeeded, 1, false),
            ("backup", Succeeded, 1, false),
            ("migrate", Succeeded, 1, false),
            ("restart", Succeeded, 1, false),
            ("maintenance_off", Succeeded, 1, false),
        ]
    );

    let events = leader.store.events("r1", 1).await.unwrap();
    assert_seqs_have_no_gaps(&events);
    let mut expected = vec!["rollout_started".to_owned()];
    for step in ["preflight", "maintenance_on", "backup", "migrate", "restart", "maintenance_off"] {
        expected.push(format!("step_started {step}"));
        if step == "restart" {
            // Without a restart policy: one host per batch, in order.
            expected.extend(["batch_started restart".to_owned(), "batch_started restart".to_owned()]);
        }
        expected.push(format!("step_succeeded {step}"));
    }
    expected.push("rollout_succeeded".into());
    assert_eq!(milestones(&events), expected);

    // Steps in order; hosts of a step together, restarts one at a time.
    let commands = leader.commands();
    let order: Vec<String> = leader.received.borrow().iter().map(|(_, c)| step_of(c).to_owned()).collect();
    assert_eq!(
        order,
        [
            "preflight",
            "preflight",
            "preflight",
            "maintenance_on",
            "maintenance_on",
            "backup",
            "migrate",
            "restart",
            "restart",
            "maintenance_off",
            "maintenance_off",
            // After the end: the backup may be pruned now (no rollback window).
            "release_backup"
        ]
    );
    assert_eq!(received_for(&leader, "restart"), ["r1/restart/app-1/1", "r1/restart/app-2/1"]);
    assert_eq!(
        received_for(&leader, "preflight").into_iter().collect::<BTreeSet<_>>(),
        ids(&["r1/preflight/db/1", "r1/preflight/app-1/1", "r1/preflight/app-2/1"])
    );
    assert!(commands.iter().all(|(_, _, token)| *token == 7), "{commands:?}");
    // Each step's command: one progress event and its success, saved. (The
    // backup's release comes after the rollout's last event.)
    let commands: Vec<_> =
        commands.into_iter().filter(|(_, id, _)| !id.contains("/release_backup/")).collect();
    let per_command = command_events(&events);
    for (_, id, _) in &commands {
        assert!(per_command.contains(&("progress".into(), id.clone())), "{id}");
        assert!(per_command.contains(&("command_succeeded".into(), id.clone())), "{id}");
    }
    assert_eq!(per_command.len(), 2 * commands.len());

    // The commands carry what the runbook says.
    let log = leader.received.borrow();
    let release = log.iter().find(|(_, c)| step_of(c) == "release_backup").expect("the backup is released");
    assert!(
        matches!(&release.1.action, Some(command::Action::ReleaseBackup(r)) if r.rollout_id == "r1" && r.keep_pinned_secs == 0),
        "{release:?}"
    );
    let restart = log.iter().find(|(_, c)| step_of(c) == "restart").unwrap();
    assert!(matches!(&restart.1.action, Some(command::Action::Restart(r)) if r.app_version == "2.0.0"));
    assert!(log.iter().all(|(_, c)| c.issued_by == "coordinator-a" && c.rollout_id == "r1"));
}

#[tokio::test(start_paused = true)]
async fn a_failed_step_skips_the_rest_and_turns_maintenance_off_again() {
    fn migrate_fails(_: &str, command: &v1::Command) -> Answer {
        match step_of(command) {
            // Failed in its own transaction: the database did not change.
            "migrate" => Answer::Fail("relation \"users\" already exists", r#"{"database_changed":false}"#),
            _ => Answer::Succeed,
        }
    }
    let (leader, last, saved) = run_to_end(migrate_fails).await;
    assert_eq!(last.kind, "rollout_failed");
    assert_eq!(last.rollout_state, v1::RolloutState::Failed as i32);
    assert_eq!(saved.state, RolloutState::Failed);
    assert_eq!(saved.error, "migrate failed: db: relation \"users\" already exists");
    use StepState::{Failed, Skipped, Succeeded};
    assert_eq!(
        steps(&saved),
        [
            ("preflight", Succeeded, 1, false),
            ("maintenance_on", Succeeded, 1, false),
            ("backup", Succeeded, 1, false),
            ("migrate", Failed, 1, false),
            ("restart", Skipped, 0, false),
            ("maintenance_off", Skipped, 0, false),
            ("maintenance_off", Succeeded, 1, true),
        ]
    );
    assert_eq!(saved.steps[3].error, "db: relation \"users\" already exists");

    let events = leader.store.events("r1", 1).await.unwrap();
    assert_seqs_have_no_gaps(&events);
    assert_eq!(
        milestones(&events),
        [
            "rollout_started",
            "step_started preflight",
            "step_succeeded preflight",
            "step_started maintenance_on",
            "step_succeeded maintenance_on",
            "step_started backup",
            "step_succeeded backup",
            "step_started migrate",
            "step_failed migrate",
            "step_started maintenance_off",
            "step_succeeded maintenance_off",
            "rollout_failed",
        ]
    );
    assert!(command_events(&events).contains(&("command_failed".into(), "r1/migrate/db/1".into())));
    let recovery = events.iter().find(|e| e.kind == "step_started" && e.step == "maintenance_off").unwrap();
    assert_eq!(recovery.message, "maintenance_off (recovery) on app-1, app-2");

    // Nothing was restarted; maintenance went off through the recovery step only.
    assert_eq!(received_for(&leader, "restart"), Vec::<String>::new());
    assert_eq!(
        received_for(&leader, "maintenance_off-recovery").into_iter().collect::<BTreeSet<_>>(),
        ids(&["r1/maintenance_off-recovery/app-1/1", "r1/maintenance_off-recovery/app-2/1"])
    );
    assert_eq!(received_for(&leader, "maintenance_off"), Vec::<String>::new());
}

#[tokio::test(start_paused = true)]
async fn a_cancel_is_honoured_between_steps() {
    fn backup_waits(_: &str, command: &v1::Command) -> Answer {
        if step_of(command) == "backup" { Answer::Hold } else { Answer::Succeed }
    }
    let kv = Arc::new(MemoryKv::new());
    let leader = Coordinator::new(&kv, "coordinator-a");
    leader.connect_all(backup_waits).await;
    let term = leader.election.grant(FencingToken(7));
    let mut bus = leader.bus.subscribe();
    leader.start_rollout(&term).await;

    // Cancel while the backup runs: the backup finishes, nothing after it starts.
    leader.wait_for_commands(|log| log.iter().any(|(_, c)| step_of(c) == "backup")).await;
    assert!(leader.runner.request_cancel("r1"));
    assert!(!leader.runner.request_cancel("no-such-rollout"));
    leader.dispatcher.on_result(&key("db"), result("r1/backup/db/1", Ok(())));

    let last = finished(&mut bus, "r1").await;
    assert_eq!(last.kind, "rollout_cancelled");
    assert_eq!(last.message, "rollout cancelled: cancelled by an operator");
    let saved = leader.store.get_rollout("r1").await.unwrap().unwrap();
    assert_eq!(saved.state, RolloutState::Cancelled);
    assert!(saved.cancel_requested);
    use StepState::{Skipped, Succeeded};
    assert_eq!(
        steps(&saved),
        [
            ("preflight", Succeeded, 1, false),
            ("maintenance_on", Succeeded, 1, false),
            ("backup", Succeeded, 1, false),
            ("migrate", Skipped, 0, false),
            ("restart", Skipped, 0, false),
            ("maintenance_off", Skipped, 0, false),
            ("maintenance_off", Succeeded, 1, true),
        ]
    );
    let events = leader.store.events("r1", 1).await.unwrap();
    assert_eq!(
        milestones(&events)[5..],
        [
            "step_started backup",
            "step_succeeded backup",
            "cancel_honoured",
            "step_started maintenance_off",
            "step_succeeded maintenance_off",
            "rollout_cancelled",
        ]
    );
    assert_eq!(received_for(&leader, "migrate"), Vec::<String>::new());
}

#[tokio::test(start_paused = true)]
async fn a_new_term_resumes_the_running_step_with_the_same_command_ids() {
    fn preflight_waits(_: &str, command: &v1::Command) -> Answer {
        if step_of(command) == "preflight" { Answer::Hold } else { Answer::Succeed }
    }
    let kv = Arc::new(MemoryKv::new());
    let first = Coordinator::new(&kv, "coordinator-a");
    first.connect_all(preflight_waits).await;
    let term = first.election.grant(FencingToken(10));
    first.start_rollout(&term).await;
    first.wait_for_commands(|log| log.len() == 3).await;
    // One agent reports progress, saved by the first leader.
    let mut bus = first.bus.subscribe();
    let progress = CommandEvent { command_id: "r1/preflight/db/1".into(), seq: 1, ..CommandEvent::default() };
    first.dispatcher.on_event(&key("db"), progress);
    while bus.recv().await.unwrap().kind != "progress" {}

    // The first leader loses its lease and steps down mid-step.
    first.election.revoke();
    first.wait_stopped("r1").await;
    assert!(first.registry.list(None).is_empty(), "stepping down drops agent sessions");
    let saved = first.store.get_rollout("r1").await.unwrap().unwrap();
    assert_eq!(saved.state, RolloutState::Running);
    assert_eq!((saved.steps[0].state, saved.steps[0].attempt), (StepState::Running, 1));
    let before = first.store.events("r1", 1).await.unwrap();
    assert_eq!(before.last().map(|e| e.kind.as_str()), Some("progress"));

    // A second coordinator wins with a higher token, reloads and resumes.
    let second = Coordinator::new(&kv, "coordinator-b");
    second.connect_all(always_succeed).await;
    let mut bus = second.bus.subscribe();
    second.election.grant(FencingToken(20));
    let last = finished(&mut bus, "r1").await;
    assert_eq!(last.kind, "rollout_succeeded");

    let sent_first: BTreeSet<String> = first.commands().into_iter().map(|(_, id, _)| id).collect();
    assert_eq!(sent_first, ids(&["r1/preflight/db/1", "r1/preflight/app-1/1", "r1/preflight/app-2/1"]));
    assert!(first.commands().iter().all(|(_, _, token)| *token == 10));
    let resent: BTreeSet<String> = received_for(&second, "preflight").into_iter().collect();
    assert_eq!(resent, sent_first, "the same command ids, so agents re-attach");
    assert!(second.commands().iter().all(|(_, _, token)| *token == 20));
    assert!(second.received.borrow().iter().all(|(_, c)| c.issued_by == "coordinator-b"));

    let saved = second.store.get_rollout("r1").await.unwrap().unwrap();
    assert_eq!(saved.state, RolloutState::Succeeded);
    assert_eq!(saved.coordinator, "coordinator-b");
    assert_eq!((saved.steps[0].state, saved.steps[0].attempt), (StepState::Succeeded, 1));
    let events = second.store.events("r1", 1).await.unwrap();
    assert_seqs_have_no_gaps(&events);
    assert_eq!(events[..before.len()], before[..], "the log continues after what the first leader saved");
    let milestones = milestones(&events);
    assert_eq!(milestones.iter().filter(|m| *m == "rollout_started").count(), 1);
    assert_eq!(milestones.iter().filter(|m| *m == "step_started preflight").count(), 1);
    assert_eq!(milestones.last().map(String::as_str), Some("rollout_succeeded"));
}

#[tokio::test(start_paused = true)]
async fn a_deposed_leader_that_has_not_noticed_cannot_write() {
    fn preflight_waits(_: &str, command: &v1::Command) -> Answer {
        if step_of(command) == "preflight" { Answer::Hold } else { Answer::Succeed }
    }
    let kv = Arc::new(MemoryKv::new());
    let first = Coordinator::new(&kv, "coordinator-a");
    first.connect_all(preflight_waits).await;
    let old_term = first.election.grant(FencingToken(10));
    first.start_rollout(&old_term).await;
    first.wait_for_commands(|log| log.len() == 3).await;

    // Another coordinator wins without the first one hearing of it.
    let second = Coordinator::new(&kv, "coordinator-b");
    second.connect_all(always_succeed).await;
    let mut bus = second.bus.subscribe();
    second.election.grant(FencingToken(20));
    finished(&mut bus, "r1").await;
    let events = second.store.events("r1", 1).await.unwrap();
    assert!(!old_term.cancel.is_cancelled(), "nobody told the first leader");

    // Its agent answers late; the first leader's write of it is fenced.
    first.dispatcher.on_result(&key("db"), result("r1/preflight/db/1", Ok(())));
    first.wait_stopped("r1").await;
    assert!(old_term.cancel.is_cancelled(), "the fenced write ended the term");
    assert!(matches!(first.election.current(), Leadership::Follower { .. }));
    assert_eq!(second.store.events("r1", 1).await.unwrap(), events, "nothing written");
    let saved = second.store.get_rollout("r1").await.unwrap().unwrap();
    assert_eq!((saved.state, saved.coordinator.as_str()), (RolloutState::Succeeded, "coordinator-b"));
}

/// The DB agent goes away while the migration runs, for longer than the old
/// grace: the step waits. When the agent registers again the dispatcher
/// re-sends the command with the same id, the agent's journal answers with
/// the real result, and that result decides: the rollout carries on.
#[tokio::test(start_paused = true)]
async fn an_agent_away_longer_than_the_old_grace_is_waited_for_and_its_result_decides() {
    fn migrate_waits(_: &str, command: &v1::Command) -> Answer {
        if step_of(command) == "migrate" { Answer::Hold } else { Answer::Succeed }
    }
    let kv = Arc::new(MemoryKv::new());
    let leader = Coordinator::new(&kv, "coordinator-a");
    leader.connect_all(migrate_waits).await;
    let term = leader.election.grant(FencingToken(7));
    let mut bus = leader.bus.subscribe();
    leader.start_rollout(&term).await;
    leader.wait_for_commands(|log| log.iter().any(|(_, c)| step_of(c) == "migrate")).await;
    let session = 1; // db registered first
    leader.registry.unregister(&key("db"), session);

    // Away for ten times the old grace: nothing is decided, nothing lifted.
    tokio::time::sleep(OLD_GRACE * 10).await;
    let saved = leader.store.get_rollout("r1").await.unwrap().unwrap();
    assert_eq!(saved.state, RolloutState::Running);
    assert_eq!((saved.steps[3].kind, saved.steps[3].state), (StepKind::Migrate, StepState::Running));
    assert_eq!(saved.error, "");
    assert!(
        !leader.received.borrow().iter().any(|(_, c)| step_of(c).starts_with("maintenance_off")),
        "maintenance mode must stay on while the migration's outcome is open"
    );
    let events = leader.store.events("r1", 1).await.unwrap();
    let away =
        events.iter().find(|e| e.kind == "agent_away").expect("the operator is told the agent is away");
    assert_eq!((away.step.as_str(), away.host.as_str()), ("migrate", "db"));
    assert_eq!(away.command_id, "r1/migrate/db/1");

    // The agent comes back; its journal answers with the real result.
    leader.connect("db", "db", always_succeed).await;
    let last = finished(&mut bus, "r1").await;
    assert_eq!(last.kind, "rollout_succeeded");
    let saved = leader.store.get_rollout("r1").await.unwrap().unwrap();
    assert_eq!(saved.state, RolloutState::Succeeded);
    assert!(
        saved.steps.iter().all(|s| s.state == StepState::Succeeded && !s.recovery),
        "{:?}",
        steps(&saved)
    );
    assert_eq!(
        received_for(&leader, "migrate"),
        ["r1/migrate/db/1", "r1/migrate/db/1"],
        "re-sent with the same id, so the agent's journal answers instead of running it again"
    );
    let events = leader.store.events("r1", 1).await.unwrap();
    assert_seqs_have_no_gaps(&events);
    let link: Vec<&str> =
        events.iter().filter(|e| e.kind.starts_with("agent_")).map(|e| e.kind.as_str()).collect();
    assert_eq!(link, ["agent_away", "agent_back"]);
    assert!(command_events(&events).contains(&("command_succeeded".into(), "r1/migrate/db/1".into())));
}

/// The DB agent is still away when the step deadline passes: the outcome
/// of the migration is unknown, so the rollout does not guess. It holds in
/// maintenance mode (no restore, no maintenance off, nothing more runs) and
/// ends failed, saying a person must decide and what to check.
#[tokio::test(start_paused = true)]
async fn an_agent_away_past_the_step_deadline_holds_maintenance_on_for_a_person() {
    fn migrate_waits(_: &str, command: &v1::Command) -> Answer {
        if step_of(command) == "migrate" { Answer::Hold } else { Answer::Succeed }
    }
    let kv = Arc::new(MemoryKv::new());
    let leader = Coordinator::new(&kv, "coordinator-a");
    leader.connect_all(migrate_waits).await;
    let term = leader.election.grant(FencingToken(7));
    let mut bus = leader.bus.subscribe();
    leader.start_rollout(&term).await;
    leader.wait_for_commands(|log| log.iter().any(|(_, c)| step_of(c) == "migrate")).await;
    let dispatched = tokio::time::Instant::now();
    leader.registry.unregister(&key("db"), 1);

    let last = finished(&mut bus, "r1").await;
    assert!(
        dispatched.elapsed() >= STEP_DEADLINE,
        "held only at the deadline, after {:?}",
        dispatched.elapsed()
    );
    assert!(dispatched.elapsed() < STEP_DEADLINE + Duration::from_secs(2), "{:?}", dispatched.elapsed());
    assert_eq!(last.kind, "rollout_failed");
    assert_eq!(last.rollout_state, v1::RolloutState::Failed as i32);
    let saved = leader.store.get_rollout("r1").await.unwrap().unwrap();
    assert_eq!(saved.state, RolloutState::Failed);
    assert!(
        saved.steps[3].error.starts_with("db: agent is away and the outcome is unknown"),
        "{}",
        saved.steps[3].error
    );
    for needle in [
        "migrate failed: db: agent is away and the outcome is unknown",
        "maintenance mode stays on",
        "a person must decide",
        "`runway migrate status`",
        "restore backup backup-r1",
    ] {
        assert!(saved.error.contains(needle), "{needle:?} missing from: {}", saved.error);
        assert!(last.message.contains(needle), "{needle:?} missing from: {}", last.message);
    }
    use StepState::{Failed, Skipped, Succeeded};
    assert_eq!(
        steps(&saved),
        [
            ("preflight", Succeeded, 1, false),
            ("maintenance_on", Succeeded, 1, false),
            ("backup", Succeeded, 1, false),
            ("migrate", Failed, 1, false),
            ("restart", Skipped, 0, false),
            ("maintenance_off", Skipped, 0, false),
        ],
        "hold: no recovery step, nothing more runs"
    );
    let sent: Vec<String> = leader.received.borrow().iter().map(|(_, c)| step_of(c).to_owned()).collect();
    assert!(
        !sent.iter().any(|s| s.starts_with("maintenance_off")),
        "maintenance mode must stay on: {sent:?}"
    );
    assert!(
        !sent.iter().any(|s| s.starts_with("restore")),
        "no restore under a migration that may run: {sent:?}"
    );
    assert!(!sent.iter().any(|s| s == "restart"), "{sent:?}");
    let events = leader.store.events("r1", 1).await.unwrap();
    assert!(command_events(&events).contains(&("command_failed".into(), "r1/migrate/db/1".into())));
}

/// A deadline that passes while the agent is connected and its command still
/// runs is no reason to stop: that the command runs is a fact. The step waits
/// on, and the agent's result decides.
#[tokio::test(start_paused = true)]
async fn a_connected_agent_still_working_at_the_deadline_is_waited_for() {
    fn migrate_waits(_: &str, command: &v1::Command) -> Answer {
        if step_of(command) == "migrate" { Answer::Hold } else { Answer::Succeed }
    }
    let kv = Arc::new(MemoryKv::new());
    let leader = Coordinator::new(&kv, "coordinator-a");
    leader.connect_all(migrate_waits).await;
    let term = leader.election.grant(FencingToken(7));
    let mut bus = leader.bus.subscribe();
    leader.start_rollout(&term).await;
    leader.wait_for_commands(|log| log.iter().any(|(_, c)| step_of(c) == "migrate")).await;

    tokio::time::sleep(STEP_DEADLINE * 2).await;
    let saved = leader.store.get_rollout("r1").await.unwrap().unwrap();
    assert_eq!((saved.state, saved.steps[3].state), (RolloutState::Running, StepState::Running));

    leader.dispatcher.on_result(&key("db"), result("r1/migrate/db/1", Ok(())));
    assert_eq!(finished(&mut bus, "r1").await.kind, "rollout_succeeded");
}

/// The migration failed after the database changed: maintenance stays on,
/// this rollout's backup is restored exactly on the DB host, and only then
/// is maintenance lifted; the rollout ends rolled back.
#[tokio::test(start_paused = true)]
async fn a_migration_that_changed_the_database_is_restored_before_maintenance_is_lifted() {
    fn migrate_fails_after_a_change(_: &str, command: &v1::Command) -> Answer {
        match step_of(command) {
            "migrate" => Answer::Fail("2_second failed", r#"{"database_changed":true}"#),
            _ => Answer::Succeed,
        }
    }
    let (leader, last, saved) = run_to_end(migrate_fails_after_a_change).await;
    assert_eq!(last.kind, "rollout_rolled_back");
    assert_eq!(last.rollout_state, v1::RolloutState::RolledBack as i32);
    assert_eq!(saved.state, RolloutState::RolledBack);
    assert_eq!(saved.backup, "backup-r1");
    use StepState::{Failed, Skipped, Succeeded};
    assert_eq!(
        steps(&saved),
        [
            ("preflight", Succeeded, 1, false),
            ("maintenance_on", Succeeded, 1, false),
            ("backup", Succeeded, 1, false),
            ("migrate", Failed, 1, false),
            ("restart", Skipped, 0, false),
            ("maintenance_off", Skipped, 0, false),
            ("restore", Succeeded, 1, true),
            ("maintenance_off", Succeeded, 1, true),
        ]
    );
    // The restore went to the DB host, for this rollout's backup, replacing
    // the database; maintenance was lifted only after it.
    let log = leader.received.borrow();
    let order: Vec<&str> = log.iter().map(|(_, c)| step_of(c)).collect();
    let restore_at = order.iter().position(|s| *s == "restore-recovery").expect("a restore was sent");
    let lifted_at = order.iter().position(|s| *s == "maintenance_off-recovery").expect("maintenance lifted");
    assert!(restore_at < lifted_at, "{order:?}");
    let (host, restore) = &log[restore_at];
    assert_eq!(host, "db");
    assert!(
        matches!(&restore.action, Some(command::Action::RestoreBackup(r)) if r.name == "backup-r1" && r.confirmed && r.replace),
        "{restore:?}"
    );
}

/// When the restore itself fails, nothing more runs: maintenance mode stays
/// on over a database in an unknown state, and the rollout says so.
#[tokio::test(start_paused = true)]
async fn a_failed_restore_keeps_maintenance_on() {
    fn restore_fails(_: &str, command: &v1::Command) -> Answer {
        match step_of(command) {
            "migrate" => Answer::Fail("2_second failed", r#"{"database_changed":null}"#),
            "restore-recovery" => Answer::Fail("checksum mismatch", ""),
            _ => Answer::Succeed,
        }
    }
    let (leader, last, saved) = run_to_end(restore_fails).await;
    assert_eq!(last.kind, "rollout_failed");
    assert_eq!(saved.state, RolloutState::Failed);
    assert!(saved.error.contains("RESTORING BACKUP backup-r1 FAILED"), "{}", saved.error);
    assert_eq!(
        saved.steps.last().map(|s| (s.kind, s.state)),
        Some((StepKind::MaintenanceOff, StepState::Skipped))
    );
    assert!(
        !leader.received.borrow().iter().any(|(_, c)| step_of(c).starts_with("maintenance_off")),
        "maintenance mode must stay on"
    );
}

/// A preflight the DB agent refused (e.g. a Danger finding nobody accepted)
/// ends the rollout before anything changed, marked refused.
#[tokio::test(start_paused = true)]
async fn a_refused_preflight_changes_nothing_and_is_marked_refused() {
    fn danger(agent: &str, command: &v1::Command) -> Answer {
        match (agent, step_of(command)) {
            ("db", "preflight") => Answer::Refuse("1 dangerous statement(s) need an explicit decision"),
            _ => Answer::Succeed,
        }
    }
    let (leader, last, saved) = run_to_end(danger).await;
    assert_eq!(last.kind, "rollout_failed");
    assert!(saved.refused);
    let sent: Vec<String> = leader.received.borrow().iter().map(|(_, c)| step_of(c).to_owned()).collect();
    assert!(sent.iter().all(|s| *s == "preflight"), "only preflight may run: {sent:?}");
}

/// The second app host never becomes healthy: both hosts get the version
/// they ran before, the database is left alone when the plan found nothing
/// that breaks the old version, and the rollout ends rolled back.
#[tokio::test(start_paused = true)]
async fn a_host_that_never_becomes_healthy_brings_back_the_previous_version() {
    fn second_restart_fails(agent: &str, command: &v1::Command) -> Answer {
        match (agent, step_of(command)) {
            ("app-2", "restart") => Answer::Fail("http://app-2/health did not answer healthy within 5 s", ""),
            _ => Answer::Succeed,
        }
    }
    let (leader, last, record) = run_to_end(second_restart_fails).await;
    assert_eq!(last.kind, "rollout_rolled_back");
    use StepState::{Failed, Skipped, Succeeded};
    // Without a saved plan the old version's compatibility is unknown: restore first.
    assert_eq!(
        steps(&record)[4..],
        [
            ("restart", Failed, 1, false),
            ("maintenance_off", Skipped, 0, false),
            ("restore", Succeeded, 1, true),
            ("restart", Succeeded, 1, true),
            ("maintenance_off", Succeeded, 1, true),
        ]
    );
    let log = leader.received.borrow();
    let reverted: Vec<(String, String)> = log
        .iter()
        .filter(|(_, c)| step_of(c) == "restart-recovery")
        .map(|(host, c)| match &c.action {
            Some(command::Action::Restart(r)) => (host.clone(), r.app_version.clone()),
            other => panic!("not a restart: {other:?}"),
        })
        .collect();
    assert_eq!(
        reverted,
        [("app-1".to_owned(), "1.0.0".to_owned()), ("app-2".to_owned(), "1.0.0".to_owned())]
    );
}

mod analysis;
mod approval;
mod batches;
mod databases;
mod maintenance;

#[test]
fn a_step_event_names_ten_hosts_at_most() {
    let hosts = |n: usize| (1..=n).map(|i| format!("app-{i}")).collect::<Vec<_>>();
    assert_eq!(host_list(&hosts(2)), "app-1, app-2");
    assert_eq!(host_list(&hosts(10)).matches(", ").count(), 9);
    let many = host_list(&hosts(10_000));
    assert!(many.starts_with("app-1, app-2, "), "{many}");
    assert!(many.ends_with("app-10 and 9990 more (10000 hosts)"), "{many}");
}
