//! `runway status`, the on-call view, on a real cluster (two coordinators,
//! etcd, PostgreSQL, a DB agent and two app agents, mTLS, the CLI as
//! operator `ops`): after a rollout it shows the leader, both coordinators'
//! own views, the agents with their versions and the finished rollout; with
//! the DB agent stopped it shows db-1 missing, and for how long; an
//! operator without the `view` role sees no environment.

use std::time::Duration;

use runway_tests::cluster::{Cluster, ENV, Options};
use runway_tests::fixtures::{SHOP, rollout_start_args, write_migrations};
use runway_tests::process::wait_until;
use runway_tests::watch::json_lines;
use serde_json::Value;

/// `runway status --output json`: its exit code and its one JSON object.
fn status(cluster: &Cluster) -> (Option<i32>, Value) {
    let out = cluster.runway(&["status", "--env", ENV, "--output", "json"]);
    let lines = json_lines(&out.stdout);
    assert_eq!(lines.len(), 1, "one JSON object: {lines:#?}\n{}", String::from_utf8_lossy(&out.stderr));
    (out.status.code(), lines.into_iter().next().expect("one line"))
}

fn agent<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["environments"][0]["agents"]
        .as_array()
        .expect("agents")
        .iter()
        .find(|a| a["name"] == name)
        .unwrap_or_else(|| panic!("no agent {name} in {status:#}"))
}

#[test]
fn status_shows_the_cluster_after_a_rollout_and_a_stopped_db_agent_as_missing() {
    let mut cluster = Cluster::start(Options::default());
    let migrations = cluster.path().join("migrations");
    write_migrations(&migrations, SHOP);
    let out = cluster.runway(&rollout_start_args(&migrations, "v2"));
    let events = json_lines(&out.stdout);
    assert!(out.status.success(), "rollout failed: {}\n{events:#?}", String::from_utf8_lossy(&out.stderr));
    let rollout_id = events[0]["rollout_id"].as_str().expect("a rollout id").to_owned();

    let (code, all_well) = status(&cluster);
    assert_eq!(code, Some(0), "all is well after a rollout: {all_well:#}");
    assert_eq!(all_well["ok"], true);

    // The leader, as it says itself and as etcd says.
    let leader = &cluster.coordinators[cluster.leader().expect("a leader")];
    assert_eq!(all_well["leader"]["name"], leader.name.as_str(), "{all_well:#}");
    let token = all_well["leader"]["fencing_token"].as_u64().expect("a fencing token");
    assert!(token > 0);

    // Each coordinator's own view: both answer, one leads, both agree on
    // the leader and its token.
    let views = all_well["coordinators"].as_array().expect("coordinators");
    assert_eq!(views.len(), 2, "{all_well:#}");
    for view in views {
        assert_eq!(view["reachable"], true, "{view}");
        assert_eq!(view["fencing_token"].as_u64(), Some(token), "{view}");
        assert_eq!(view["leader_address"], all_well["leader"]["address"], "{view}");
        assert_eq!(view["leads"], view["name"] == leader.name.as_str(), "{view}");
    }

    // The agents, connected, with versions and a recent heartbeat.
    let env = &all_well["environments"][0];
    assert_eq!(env["name"], ENV);
    assert_eq!(env["agents"].as_array().map(Vec::len), Some(3), "{env:#}");
    for name in ["db-1", "app-1", "app-2"] {
        let a = agent(&all_well, name);
        assert_eq!(a["connected"], true, "{a}");
        assert!(!a["runway_version"].as_str().unwrap_or_default().is_empty(), "{a}");
        assert!(a["last_heartbeat_secs_ago"].as_i64().is_some_and(|s| s < 30), "{a}");
    }
    for name in ["app-1", "app-2"] {
        assert_eq!(agent(&all_well, name)["app_version"], "v2", "the rollout's app version");
    }

    // The finished rollout, maintenance mode on for a while and off again.
    let rollout = &env["rollouts"][0];
    assert_eq!(rollout["id"], rollout_id.as_str(), "{env:#}");
    assert_eq!(rollout["state"], "succeeded");
    assert_eq!(rollout["current_step"], "");
    assert_eq!(rollout["maintenance_on"], false);
    assert!(rollout["maintenance_secs"].as_i64().is_some(), "{rollout:#}");
    assert!(rollout["maintenance_off_unix_ms"].as_i64() >= rollout["maintenance_on_unix_ms"].as_i64());
    assert_eq!(env["last_failure"], Value::Null);

    // Stop the DB agent: status shows it missing, and for how long.
    let db = cluster.db.as_mut().expect("a DB host");
    let stopped = db.agent.signal_and_wait("TERM", Duration::from_secs(30));
    assert!(stopped.is_some(), "the DB agent did not stop within 30 s");
    // Polled until it has been missing for a second, so "for how long" is
    // seen to count.
    let (code, missing) = wait_until("status to show db-1 missing for 1 s", Duration::from_secs(30), || {
        let (code, status) = status(&cluster);
        let db = agent(&status, "db-1");
        (db["connected"] == false && db["missing_for_secs"].as_i64() >= Some(1)).then_some((code, status))
    });
    assert_eq!(code, Some(7), "a missing agent needs attention: {missing:#}");
    let db = agent(&missing, "db-1");
    let missing_for = db["missing_for_secs"].as_i64().expect("for how long");
    assert!((1..60).contains(&missing_for), "{db}");
    assert_eq!(db["runway_version"], agent(&all_well, "db-1")["runway_version"], "still named as registered");
    assert!(
        missing["attention"]
            .as_array()
            .expect("attention")
            .iter()
            .any(|l| l.as_str().is_some_and(|l| l.starts_with("agent db-1 in staging missing for"))),
        "{missing:#}"
    );
    for name in ["app-1", "app-2"] {
        assert_eq!(agent(&missing, name)["connected"], true);
    }

    // Without the view role nothing is shown: a named environment is
    // refused, and no environment is listed otherwise.
    let denied = cluster.runway_as("stranger", &["status", "--env", ENV, "--output", "json"]);
    assert_eq!(denied.status.code(), Some(10), "{}", String::from_utf8_lossy(&denied.stdout));
    let out = cluster.runway_as("stranger", &["status", "--output", "json"]);
    let stranger = json_lines(&out.stdout);
    assert_eq!(stranger[0]["environments"], serde_json::json!([]), "{stranger:#?}");
    assert_eq!(stranger[0]["leader"]["name"], leader.name.as_str());

    // The same for a person.
    let out = cluster.runway(&["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(7), "{text}");
    for needle in ["leader: ", "environment staging", "db-1", "MISSING for", "needs attention:", &rollout_id]
    {
        assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
    }
}
