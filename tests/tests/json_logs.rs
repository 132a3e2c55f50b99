//! `--log-format json` (here through `RUNWAY_LOG_FORMAT`): the coordinator
//! and the agents log one JSON object per line, and lines logged while a
//! rollout or a command runs carry its rollout id, command id and trace id,
//! so a log shipper can pick one rollout's lines out of every host's log
//! and jump to its trace.

use runway_tests::cluster::{Cluster, Options};
use runway_tests::fixtures::{SHOP, rollout_start_args, write_migrations};
use runway_tests::watch::json_lines;
use serde_json::Value;

/// The log's JSON lines; any other line (a child process's output) is skipped.
fn json_log(text: &str) -> Vec<Value> {
    text.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).collect()
}

#[test]
fn json_logs_carry_the_rollout_id_the_command_id_and_the_trace_id() {
    let json = vec![("RUNWAY_LOG_FORMAT".to_owned(), "json".to_owned())];
    let cluster = Cluster::start(Options {
        coordinators: 1,
        app_hosts: 1,
        coordinator_env: json.clone(),
        agent_env: json,
        ..Options::default()
    });
    let migrations = cluster.path().join("migrations");
    write_migrations(&migrations, SHOP);
    let out = cluster.runway(&rollout_start_args(&migrations, "v2"));
    let events = json_lines(&out.stdout);
    assert!(out.status.success(), "rollout failed: {}\n{events:#?}", String::from_utf8_lossy(&out.stderr));
    let id = events[0]["rollout_id"].as_str().expect("a rollout id");
    let started = events.iter().find(|e| e["kind"] == "rollout_started").expect("rollout_started");
    let trace = started["message"].as_str().and_then(|m| m.split("(trace ").nth(1)).map(|t| &t[..32]);
    let trace = trace.expect("the rollout's trace id is printed");

    let coordinator = json_log(&cluster.coordinators[0].proc.log_text());
    assert!(
        coordinator.iter().all(|l| l["timestamp"].is_string() && l["level"].is_string()),
        "{coordinator:#?}"
    );
    assert!(
        coordinator.iter().any(|l| l["span"]["rollout_id"] == id),
        "no coordinator line carries rollout {id}: {coordinator:#?}"
    );
    let db = json_log(&cluster.db.as_ref().expect("a DB host").agent.log_text());
    let migrate = db
        .iter()
        .find(|l| l["span"]["command_id"].as_str().is_some_and(|c| c.starts_with(&format!("{id}/migrate/"))))
        .unwrap_or_else(|| panic!("no DB agent line carries the migrate command's id: {db:#?}"));
    assert_eq!(migrate["span"]["rollout_id"], id);
    assert_eq!(migrate["span"]["trace_id"], trace);
    // Lines of nested spans (each migration) carry every enclosing span's ids.
    let applied = db
        .iter()
        .find(|l| l["span"]["name"] == "migration")
        .unwrap_or_else(|| panic!("no line logged inside a migration's span: {db:#?}"));
    let spans = applied["spans"].as_array().expect("the span list");
    assert!(spans.iter().any(|s| s["trace_id"] == trace && s["rollout_id"] == id), "{applied:#?}");
    assert!(
        coordinator.iter().any(|l| l["span"]["rollout_id"] == id && l["span"]["trace_id"] == trace),
        "no coordinator line carries trace {trace}: {coordinator:#?}"
    );
}
