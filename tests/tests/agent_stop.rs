//! Stopping an agent is a drain: a command that runs when the agent gets
//! SIGTERM finishes, and its result reaches the coordinator before the agent
//! exits (real coordinator, etcd, PostgreSQL and agents as processes).

use std::time::Duration;

use runway_tests::cluster::{Cluster, Options};
use runway_tests::fixtures::{SHOP, rollout_start_args, write_migrations};
use runway_tests::watch::Watch;

#[test]
fn a_stopping_agent_finishes_its_migration_and_reports_it_before_it_exits() {
    const SLOW: &str = "20240104000000_slow";
    let mut history = SHOP.to_vec();
    history.push((SLOW, "CREATE TABLE \"SlowMarker\" (id int);\nSELECT pg_sleep(3);\n"));
    let mut cluster = Cluster::start(Options { coordinators: 1, ..Options::default() });
    let migrations = cluster.path().join("migrations");
    write_migrations(&migrations, &history);

    let args = rollout_start_args(&migrations, "v2");
    let mut watch = Watch::start(&cluster, &args);
    let applying = format!("applying {SLOW}");
    let mut stopped = None;
    while let Some(event) = watch.next(Duration::from_secs(90)) {
        if stopped.is_none() && event["message"].as_str().is_some_and(|m| m.starts_with(&applying)) {
            eprintln!("SIGTERM the DB agent while {SLOW} runs");
            let db = cluster.db.as_mut().expect("a DB host");
            // Blocks until the agent exits: it must wait for the migration.
            stopped = Some(db.agent.signal_and_wait("TERM", Duration::from_secs(30)));
        }
        if event["terminal"] == true {
            break;
        }
    }
    let (status, events, stderr) = watch.finish(Duration::from_secs(30));
    let exit = stopped.expect("the slow migration never started");
    assert!(
        exit.is_some_and(|s| s.success()),
        "the agent did not exit cleanly within 30 s of SIGTERM: {exit:?}"
    );

    // The result arrived from the agent itself, before it left: the step
    // succeeded and so did the rollout (the later steps need only app hosts).
    let migrate_result = events
        .iter()
        .find(|e| e["kind"] == "command_succeeded" && e["step"] == "migrate")
        .unwrap_or_else(|| panic!("no migrate result reached the coordinator: {events:#?}"));
    assert_eq!(migrate_result["host"], "db-1");
    assert_eq!(status.code(), Some(0), "the rollout should succeed: {stderr}\n{events:#?}");
    assert_eq!(events.last().expect("events")["kind"], "rollout_succeeded");

    // The migration ran once, to the end, and is journaled as succeeded.
    let migrate: Vec<serde_json::Value> =
        cluster.journals().into_iter().filter(|(_, e)| e["action"] == "migrate").map(|(_, e)| e).collect();
    assert_eq!(migrate.len(), 1, "{migrate:#?}");
    assert_eq!(migrate[0]["outcome"].as_i64(), Some(1), "not journaled as succeeded: {}", migrate[0]);
    assert_eq!(
        cluster.sql(&format!(
            "SELECT count(*) FROM _prisma_migrations WHERE migration_name = '{SLOW}' AND finished_at IS NOT NULL"
        )),
        "1"
    );
    let log = cluster.db.as_ref().expect("a DB host").agent.log_text();
    assert!(log.contains("left the coordinator"), "the agent did not leave politely:\n{log}");
}
