//! Leader failover with real processes: the leader is SIGKILLed at every
//! step of the default plan, before, during and after the step; an agent is
//! SIGKILLed in the middle of a migration. As root (CI) every etcd,
//! coordinator, agent and PostgreSQL runs in a network namespace of its own.

use std::path::Path;
use std::time::{Duration, Instant};

use runway_tests::checks::{PLAN, assert_complete_stream, assert_exactly_once};
use runway_tests::cluster::{Cluster, Options};
use runway_tests::fixtures::{SHOP, rollout_start_args, write_migrations};
use runway_tests::watch::Watch;

#[derive(Debug, Clone, Copy, PartialEq)]
enum KillPoint {
    /// The step is saved as running; its commands are not sent yet.
    BeforeDispatch,
    /// The agents run the step's commands.
    WhileRunning,
    /// The step's success is saved.
    AfterFinish,
}

/// The rollout every test here starts; the CLI keeps looking for a leader
/// for 60 s, longer than any failover.
fn start_args(migrations: &Path) -> Vec<&str> {
    let mut args = rollout_start_args(migrations, "v2");
    args.extend(["--leader-timeout", "60"]);
    args
}

/// One rollout; the leader is killed once in each step at `point` and
/// started again at once (so two coordinators stay up).
fn kill_the_leader_in_every_step(point: KillPoint) {
    let env = |name: &str, ms: &str| vec![(name.to_owned(), ms.to_owned())];
    let mut cluster = Cluster::start(Options {
        netns: runway_tests::netns::usable(),
        lease_ttl_secs: 2,
        coordinator_env: match point {
            KillPoint::BeforeDispatch => env("RUNWAY_FAILPOINT_PAUSE_BEFORE_DISPATCH_MS", "1500"),
            _ => Vec::new(),
        },
        agent_env: match point {
            KillPoint::WhileRunning => env("RUNWAY_FAILPOINT_HOLD_MS", "1500"),
            _ => Vec::new(),
        },
        ..Options::default()
    });
    let migrations = cluster.path().join("migrations");
    write_migrations(&migrations, SHOP);
    let mut watch = Watch::start(&cluster, &start_args(&migrations));

    let mut killed: Vec<String> = Vec::new();
    while let Some(event) = watch.next(Duration::from_secs(90)) {
        let step = event["step"].as_str().unwrap_or_default().to_owned();
        let trigger = match point {
            KillPoint::BeforeDispatch => event["kind"] == "step_started",
            KillPoint::WhileRunning => event["kind"] == "progress",
            KillPoint::AfterFinish => event["kind"] == "step_succeeded",
        };
        if trigger && !step.is_empty() && !killed.contains(&step) {
            let leader = cluster.kill_and_restart_leader();
            eprintln!("[{point:?}] step {step}: SIGKILLed {leader}");
            killed.push(step);
        }
        if event["terminal"] == true {
            break;
        }
    }
    let (status, events, stderr) = watch.finish(Duration::from_secs(30));
    assert!(status.success(), "rollout did not succeed ({status}): {stderr}\n{events:#?}");
    assert_eq!(killed, PLAN, "the leader was not killed in every step");
    assert_complete_stream(&events);
    assert_exactly_once(&cluster, SHOP);
    // The kills moved the rollout from coordinator to coordinator: the
    // agents saw more than one fencing token.
    let tokens: std::collections::BTreeSet<u64> =
        cluster.journals().iter().filter_map(|(_, e)| e["token"].as_u64()).collect();
    assert!(tokens.len() >= 3, "expected commands from several leaders, saw tokens {tokens:?}");
}

#[test]
fn leader_killed_before_each_step_is_dispatched() {
    kill_the_leader_in_every_step(KillPoint::BeforeDispatch);
}

#[test]
fn leader_killed_while_each_step_runs() {
    kill_the_leader_in_every_step(KillPoint::WhileRunning);
}

#[test]
fn leader_killed_just_after_each_step_finished() {
    kill_the_leader_in_every_step(KillPoint::AfterFinish);
}

/// A migration cut off by an agent restart is reported as interrupted,
/// never as succeeded; since earlier migrations of the rollout had changed
/// the database, the rollout restores its backup before maintenance mode
/// is lifted, and nothing of it stays.
#[test]
fn an_agent_killed_mid_migration_stops_the_rollout_safely() {
    const SLOW: &str = "20240104000000_slow";
    let mut history = SHOP.to_vec();
    history.push((SLOW, "CREATE TABLE \"SlowMarker\" (id int);\nSELECT pg_sleep(4);\n"));

    let mut cluster = Cluster::start(Options {
        coordinators: 1,
        netns: runway_tests::netns::usable(),
        ..Options::default()
    });
    let migrations = cluster.path().join("migrations");
    write_migrations(&migrations, &history);
    let mut watch = Watch::start(&cluster, &start_args(&migrations));
    let applying = format!("applying {SLOW}");
    let mut killed = false;
    while let Some(event) = watch.next(Duration::from_secs(90)) {
        if !killed && event["message"].as_str().is_some_and(|m| m.starts_with(&applying)) {
            std::thread::sleep(Duration::from_millis(800));
            eprintln!("SIGKILL the DB agent while {SLOW} runs");
            cluster.restart_db_agent();
            killed = true;
        }
        if event["terminal"] == true {
            break;
        }
    }
    let (status, events, stderr) = watch.finish(Duration::from_secs(30));
    assert!(killed, "the slow migration never started: {events:#?}");
    assert_eq!(status.code(), Some(1), "the rollout should fail: {stderr}\n{events:#?}");
    let failed = events.iter().find(|e| e["kind"] == "step_failed").expect("a failed step");
    assert_eq!(failed["step"], "migrate");
    assert!(failed["message"].as_str().unwrap().contains("interrupted"), "{failed}");
    assert_eq!(events.last().unwrap()["kind"], "rollout_rolled_back", "{events:#?}");

    // Only one migrate ever ran, and it is journaled as interrupted.
    let migrate: Vec<serde_json::Value> =
        cluster.journals().into_iter().filter(|(_, e)| e["action"] == "migrate").map(|(_, e)| e).collect();
    assert_eq!(migrate.len(), 1, "{migrate:#?}");
    assert_eq!(migrate[0]["outcome"].as_i64(), Some(4), "not journaled as interrupted: {}", migrate[0]);

    // The database is back where the backup found it (empty: the rollout's
    // first migrations and the cut-off one are gone), so every migration is
    // pending again (`runway migrate status` exit 7), none failed.
    assert_eq!(cluster.sql("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"), "0");
    let status = cluster
        .runway_command()
        .args(["migrate", "status", "--migrations", migrations.to_str().unwrap()])
        .env("DATABASE_URL", cluster.pg.url(runway_tests::cluster::DB))
        .output()
        .unwrap();
    assert_eq!(status.status.code(), Some(7), "{}", String::from_utf8_lossy(&status.stdout));

    // Maintenance mode was lifted again.
    let deadline = Instant::now() + Duration::from_secs(5);
    while cluster.apps.iter().any(|a| a.in_maintenance()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(cluster.apps.iter().all(|a| !a.in_maintenance()), "an app was left in maintenance mode");
}
