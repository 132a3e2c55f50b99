//! A leader stopped with SIGTERM (systemd's stop) while an operator
//! watches a rollout and agents are attached: its stream relays end at
//! shutdown instead of holding it up, so it exits promptly; the watch
//! moves to the new leader, as after a crash, and follows the rollout to
//! its end.

use std::time::Duration;

use runway_tests::cluster::{Cluster, ENV, Options};
use runway_tests::fixtures::{SHOP, write_migrations};
use runway_tests::process::{Proc, wait_until};
use runway_tests::watch::json_lines;
use serde_json::Value;

#[test]
fn a_leader_stopped_with_sigterm_ends_its_streams_and_the_watch_follows_the_next_leader() {
    let mut cluster = Cluster::start(Options {
        app_hosts: 1,
        environment_policy: "approvals = 1".into(),
        ..Options::default()
    });
    let migrations = cluster.path().join("shop");
    write_migrations(&migrations, SHOP);
    let folder = migrations.to_str().unwrap();
    let out = cluster.runway(&["rollout", "start", "--env", ENV, "--migrations", folder, "--output", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let id = json_lines(&out.stdout)[0]["id"].as_str().unwrap().to_owned();
    // Waiting for an approval, the rollout keeps its watch stream open.
    wait_until("the rollout to await approval", Duration::from_secs(60), || {
        cluster.try_show_rollout(&id).filter(|r| r["state"] == "awaiting_approval")
    });
    let mut watch = cluster.runway_command();
    watch.args(["rollout", "watch", &id, "--output", "json"]);
    let mut watch = Proc::spawn("watch", &mut watch, cluster.path());
    wait_until("the watch to show the approval gate", Duration::from_secs(30), || {
        watch.log_text().contains("\"step\":\"approval\"").then_some(())
    });

    let leader = cluster.leader().expect("a leader");
    let stopped = cluster.coordinators[leader].proc.signal_and_wait("TERM", Duration::from_secs(15));
    assert!(stopped.is_some(), "the leader did not exit within 15 s of SIGTERM");
    assert!(watch.running(), "the watch goes on without the leader:\n{}", watch.log_text());
    wait_until("a new leader", Duration::from_secs(30), || cluster.leader().filter(|l| *l != leader));

    let out = cluster.runway_as("approver", &["rollout", "approve", &id]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let exit = watch.wait_for_exit(Duration::from_secs(120));
    let text = watch.log_text();
    assert_eq!(exit.and_then(|s| s.code()), Some(0), "the watch ends with the rollout:\n{text}");
    let events: Vec<Value> = text.lines().filter_map(|line| serde_json::from_str(line).ok()).collect();
    assert_eq!(events.last().map(|e| e["kind"].clone()), Some("rollout_succeeded".into()), "{text}");
}
