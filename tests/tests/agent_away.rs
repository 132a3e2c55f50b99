//! An agent that goes away mid-migration does not decide the rollout by a
//! timer (real coordinator, etcd, PostgreSQL and agents as processes).
//!
//! The DB agent is frozen with SIGSTOP while its migration runs: its stream
//! goes silent, the coordinator sees it disconnected, and the migration
//! carries on inside PostgreSQL. While it is away maintenance mode stays on.
//! When it comes back (SIGCONT) its real result decides; if it is still
//! away at the step deadline, the rollout holds in maintenance mode and asks
//! for a person instead of guessing.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use runway_tests::checks::{assert_complete_stream, assert_exactly_once};
use runway_tests::cluster::{Cluster, Options};
use runway_tests::fixtures::{SHOP, rollout_start_args, write_migrations};
use runway_tests::process::wait_until;
use runway_tests::watch::Watch;

const SLOW: &str = "20240104000000_slow";

/// The coordinators' `agent_grace` (in seconds): before, a step whose agent was
/// away this long failed, and maintenance mode was lifted over a migration
/// that might still run.
const OLD_GRACE_SECS: u64 = 2;

/// `SHOP` and a last migration, `slow_sql`, that sleeps inside PostgreSQL.
fn history(slow_sql: &'static str) -> Vec<(&'static str, &'static str)> {
    let mut history = SHOP.to_vec();
    history.push((SLOW, slow_sql));
    history
}

/// A one-coordinator cluster with `history(slow_sql)` written; returns it
/// and the migrations folder.
fn cluster_with_slow_migration(
    slow_sql: &'static str,
    step_deadline_secs: Option<u64>,
) -> (Cluster, PathBuf) {
    let cluster = Cluster::start(Options {
        coordinators: 1,
        agent_grace_secs: OLD_GRACE_SECS,
        step_deadline_secs,
        ..Options::default()
    });
    let migrations = cluster.path().join("migrations");
    write_migrations(&migrations, &history(slow_sql));
    (cluster, migrations)
}

fn all_in_maintenance(cluster: &Cluster) -> bool {
    cluster.apps.iter().all(|a| a.in_maintenance())
}

/// Reads events until one of `kind` for the migrate step arrives.
fn wait_for_event(watch: &mut Watch, kind: &str, timeout: Duration) -> serde_json::Value {
    let deadline = Instant::now() + timeout;
    while let Some(event) = watch.next(deadline.saturating_duration_since(Instant::now())) {
        if event["kind"] == kind && event["step"] == "migrate" {
            return event;
        }
        assert_ne!(event["terminal"], true, "the rollout ended while waiting for {kind}: {event}");
    }
    panic!("no {kind} event for migrate within {timeout:?}; events: {:#?}", watch.events);
}

/// The DB agent is frozen for longer than the old grace while its
/// migration runs in PostgreSQL. Maintenance mode stays on the whole time;
/// when the agent thaws, its real result (the migration finished) decides,
/// and the rollout succeeds with every migration applied once.
#[test]
fn a_migration_outlives_its_frozen_agent_and_the_agents_result_decides() {
    const SLOW_SQL: &str = "CREATE TABLE \"SlowMarker\" (id int);\nSELECT pg_sleep(6);\n";
    /// How long the agent stays frozen, from the start of the slow migration.
    const FROZEN: Duration = Duration::from_secs(9);
    let (mut cluster, migrations) = cluster_with_slow_migration(SLOW_SQL, None);
    let mut watch = Watch::start(&cluster, &rollout_start_args(&migrations, "v2"));
    let applying = format!("applying {SLOW}");

    let mut samples = 0;
    while let Some(event) = watch.next(Duration::from_secs(90)) {
        if event["message"].as_str().is_some_and(|m| m.starts_with(&applying)) {
            eprintln!("SIGSTOP the DB agent while {SLOW} sleeps in PostgreSQL");
            let frozen_at = Instant::now();
            let db = cluster.db.as_mut().expect("a DB host");
            db.agent.signal("STOP");
            wait_for_event(&mut watch, "agent_away", Duration::from_secs(15));
            // Away for longer than the old grace: maintenance mode must
            // stay on, sampled all along.
            while frozen_at.elapsed() < FROZEN {
                assert!(all_in_maintenance(&cluster), "maintenance mode was lifted while the agent was away");
                samples += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            eprintln!("SIGCONT the DB agent after {:?}", frozen_at.elapsed());
            cluster.db.as_mut().expect("a DB host").agent.signal("CONT");
        }
        if event["terminal"] == true {
            break;
        }
    }
    let (status, events, stderr) = watch.finish(Duration::from_secs(60));
    assert!(samples > 0, "the slow migration never started: {events:#?}");
    assert_eq!(status.code(), Some(0), "the rollout should succeed: {stderr}\n{events:#?}");
    assert_complete_stream(&events);

    // The coordinator saw it away longer than the old grace, then back.
    let at = |kind: &str| {
        let event =
            events.iter().find(|e| e["kind"] == kind).unwrap_or_else(|| panic!("no {kind}: {events:#?}"));
        assert_eq!((event["step"].as_str(), event["host"].as_str()), (Some("migrate"), Some("db-1")));
        event["unix_ms"].as_i64().expect("unix_ms")
    };
    let away_ms = at("agent_back") - at("agent_away");
    assert!(
        away_ms > (OLD_GRACE_SECS * 1000) as i64 + 1000,
        "the agent was away only {away_ms} ms, not longer than the old {OLD_GRACE_SECS} s grace"
    );
    assert!(!events.iter().any(|e| e["kind"] == "step_failed"), "{events:#?}");

    // Its journal answered with the real result: the one migrate run
    // succeeded, and every migration is applied exactly once.
    let migrate = events
        .iter()
        .find(|e| e["kind"] == "command_succeeded" && e["step"] == "migrate")
        .expect("the migrate result reached the coordinator");
    assert_eq!(migrate["host"], "db-1");
    assert_exactly_once(&cluster, &history(SLOW_SQL));
    assert!(cluster.apps.iter().all(|a| !a.in_maintenance()), "maintenance mode was not lifted at the end");
}

/// The DB agent is still frozen when the step deadline passes: the outcome
/// of its migration is unknown, so the rollout holds. It ends failed,
/// maintenance mode stays on, no restore or maintenance-off is attempted,
/// and the message says a person must check `runway migrate status` and
/// restore the backup or finish by hand. When the agent thaws, its
/// migration finishes on its own; maintenance mode is still on.
#[test]
fn an_agent_frozen_past_the_step_deadline_holds_maintenance_on_for_a_person() {
    const SLEEP_SECS: u64 = 10;
    const SLOW_SQL: &str = "CREATE TABLE \"SlowMarker\" (id int);\nSELECT pg_sleep(10);\n";
    const DEADLINE_SECS: u64 = 7;
    let (mut cluster, migrations) = cluster_with_slow_migration(SLOW_SQL, Some(DEADLINE_SECS));
    let mut watch = Watch::start(&cluster, &rollout_start_args(&migrations, "v2"));
    let applying = format!("applying {SLOW}");

    let mut frozen_at = None;
    while let Some(event) = watch.next(Duration::from_secs(90)) {
        if frozen_at.is_none() && event["message"].as_str().is_some_and(|m| m.starts_with(&applying)) {
            eprintln!("SIGSTOP the DB agent while {SLOW} sleeps in PostgreSQL; keep it frozen");
            cluster.db.as_mut().expect("a DB host").agent.signal("STOP");
            frozen_at = Some(Instant::now());
        }
        if frozen_at.is_some() && event["terminal"] != true {
            assert!(all_in_maintenance(&cluster), "maintenance mode was lifted while the agent was away");
        }
        if event["terminal"] == true {
            break;
        }
    }
    let (status, events, stderr) = watch.finish(Duration::from_secs(30));
    let frozen_at = frozen_at.expect("the slow migration never started");
    assert_eq!(status.code(), Some(1), "the rollout should end failed: {stderr}\n{events:#?}");
    assert!(frozen_at.elapsed() < Duration::from_secs(SLEEP_SECS), "held while the migration still ran");

    let failed = events.iter().find(|e| e["kind"] == "step_failed").expect("a failed step");
    assert_eq!(failed["step"], "migrate");
    let message = failed["message"].as_str().unwrap_or_default();
    assert!(message.contains("agent is away and the outcome is unknown"), "{failed}");
    let last = events.last().expect("events");
    assert_eq!(last["kind"], "rollout_failed", "{events:#?}");
    let message = last["message"].as_str().unwrap_or_default();
    for needle in
        ["maintenance mode stays on", "a person must decide", "`runway migrate status`", "restore backup"]
    {
        assert!(message.contains(needle), "{needle:?} missing from the terminal message: {message}");
    }
    let started: Vec<&str> =
        events.iter().filter(|e| e["kind"] == "step_started").filter_map(|e| e["step"].as_str()).collect();
    assert_eq!(started, ["preflight", "maintenance_on", "backup", "migrate"], "hold: nothing more may run");
    assert!(all_in_maintenance(&cluster), "maintenance mode must stay on after the hold");

    // Thawed, the agent finishes the migration on its own: the fact a person
    // finds with `runway migrate status`. Nobody lifts maintenance mode.
    cluster.db.as_mut().expect("a DB host").agent.signal("CONT");
    wait_until("the thawed agent to finish the migration", Duration::from_secs(30), || {
        let sql = format!(
            "SELECT count(*) FROM _prisma_migrations WHERE migration_name = '{SLOW}' AND finished_at IS NOT NULL"
        );
        (cluster.sql(&sql) == "1").then_some(())
    });
    let status = cluster
        .runway_command()
        .args(["migrate", "status", "--migrations"])
        .arg(&migrations)
        .env("DATABASE_URL", cluster.pg.url(runway_tests::cluster::DB))
        .output()
        .expect("run runway migrate status");
    assert_eq!(status.status.code(), Some(0), "{}", String::from_utf8_lossy(&status.stdout));
    std::thread::sleep(Duration::from_secs(1));
    assert!(all_in_maintenance(&cluster), "maintenance mode must stay on until a person lifts it");
}
