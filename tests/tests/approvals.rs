//! Roles, approvals and the audit log end to end: real etcd, coordinators,
//! agents and PostgreSQL, operators with their own certificates (see
//! `runway_tests::pki::OPERATORS`: `ops` holds every role, `viewer`,
//! `deployer` and `approver` one thing each).
//!
//! 1. An approval-gated rollout: refused for an operator without the role,
//!    waits after preflight with nothing changed, cannot be approved by the
//!    operator who started it, survives a SIGKILL of the leader while it
//!    waits, and runs once another operator approves; `runway audit` shows
//!    every refusal, the start, the approval and the end with identities.
//! 2. In insecure mode, the audit log records the start (under the name
//!    the CLI claims, marked `insecure:`) and the end.
//! 3. With `approvals = { rollback = 1 }` an operator's rollback waits at
//!    a gate of its own before it touches anything; its asker cannot
//!    approve it; rejected, it changes nothing and the rollout stays
//!    `succeeded`; asked again and approved by another operator, it runs.

use std::time::Duration;

use runway_tests::cluster::{Cluster, ENV, Options};
use runway_tests::fixtures::{SHOP, write_migrations};
use runway_tests::process::wait_until;
use runway_tests::watch::{json_lines, step_states};
use serde_json::Value;

/// What the CLI said: its stderr, and its stdout (where `--output json`
/// puts errors too).
fn stderr(out: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stderr), String::from_utf8_lossy(&out.stdout))
}

/// `rollout show ID --output json` (any coordinator answers from etcd).
/// `runway audit --env staging --since 1h --output json`, as
/// `(actor, action, outcome)` and the entries.
fn audit(cluster: &Cluster, operator: &str) -> (Vec<(String, String, String)>, Vec<Value>) {
    let out = cluster.runway_as(operator, &["audit", "--env", ENV, "--since", "1h", "--output", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let entries = json_lines(&out.stdout);
    let brief = entries
        .iter()
        .map(|e| {
            let field = |k: &str| e[k].as_str().unwrap_or_default().to_owned();
            (field("actor"), field("action"), field("outcome"))
        })
        .collect();
    (brief, entries)
}

fn entry(actor: &str, action: &str, outcome: &str) -> (String, String, String) {
    (actor.to_owned(), action.to_owned(), outcome.to_owned())
}

#[test]
fn an_approval_gated_rollout_waits_survives_a_leader_kill_and_runs_once_another_operator_approves() {
    let mut cluster = Cluster::start(Options {
        app_hosts: 1,
        environment_policy: "approvals = 1".into(),
        ..Options::default()
    });
    let migrations = cluster.path().join("shop");
    write_migrations(&migrations, SHOP);
    let folder = migrations.to_str().unwrap();
    let start =
        ["rollout", "start", "--env", ENV, "--migrations", folder, "--app-version", "v2", "--output", "json"];

    // Refused for lack of a role, each with the role it lacks; nothing changed.
    let out = cluster.runway_as("viewer", &start);
    assert_eq!(out.status.code(), Some(10), "{}", stderr(&out));
    assert!(stderr(&out).contains("operator viewer lacks the deploy role in staging"), "{}", stderr(&out));
    let out = cluster.runway_as("deployer", &["backup", "restore", "any-backup", "--env", ENV, "--yes"]);
    assert_eq!(out.status.code(), Some(10), "{}", stderr(&out));
    assert!(stderr(&out).contains("operator deployer lacks the restore role in staging"), "{}", stderr(&out));
    let list = cluster.runway(&["rollout", "list", "--output", "json"]);
    assert_eq!(String::from_utf8_lossy(&list.stdout).trim(), "", "no rollout was started");

    // `ops` starts it: it waits after preflight, nothing else ran.
    let app = &cluster.apps[0];
    let pid_before = app.pid();
    let out = cluster.runway(&start);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let id = json_lines(&out.stdout)[0]["id"].as_str().unwrap().to_owned();
    let waiting = wait_until("the rollout to await approval", Duration::from_secs(60), || {
        cluster.try_show_rollout(&id).filter(|r| r["state"] == "awaiting_approval")
    });
    assert_eq!(waiting["started_by"], "ops");
    assert_eq!(waiting["approval"]["needed"], 1);
    assert_eq!(waiting["approval"]["given"], 0);
    let states = step_states(&waiting);
    assert_eq!(
        states[..3],
        [("preflight", "succeeded"), ("approval", "running"), ("maintenance_on", "pending")]
    );
    assert!(!app.in_maintenance(), "maintenance mode is not turned on before approval");
    assert_eq!(app.pid(), pid_before, "the app was not restarted");
    let text = cluster.runway(&["rollout", "show", &id]);
    assert!(String::from_utf8_lossy(&text.stdout).contains("approvals    0 of 1"), "{}", stderr(&text));

    // Not by the operator who started it, nor by one without the approve role.
    let out = cluster.runway(&["rollout", "approve", &id]);
    assert_eq!(out.status.code(), Some(10), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("operator ops started rollout {id} and cannot approve it")),
        "{}",
        stderr(&out)
    );
    let out = cluster.runway_as("deployer", &["rollout", "approve", &id]);
    assert_eq!(out.status.code(), Some(10), "{}", stderr(&out));
    assert!(stderr(&out).contains("lacks the approve role"), "{}", stderr(&out));

    // The leader dies while the rollout waits; the new leader keeps waiting.
    let killed = cluster.kill_and_restart_leader();
    eprintln!("killed leader {killed}");
    wait_until("a new leader", Duration::from_secs(30), || {
        cluster.leader().filter(|l| cluster.coordinators[*l].name != killed)
    });
    let after = cluster.try_show_rollout(&id).expect("the rollout is still saved");
    assert_eq!(after["state"], "awaiting_approval");
    assert_eq!(after["approval"], waiting["approval"], "the same gate, expiry included");
    assert!(!cluster.apps[0].in_maintenance());

    // Another operator with the approve role: it runs to the end.
    let out = cluster.runway_as("approver", &["rollout", "approve", &id, "--comment", "checked the plan"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("approved (1 of 1): it runs on"), "{}", stderr(&out));
    let watch = cluster.runway(&["rollout", "watch", &id, "--output", "json"]);
    assert_eq!(watch.status.code(), Some(0), "{}", stderr(&watch));
    let events = json_lines(&watch.stdout);
    assert_eq!(events.last().unwrap()["kind"], "rollout_succeeded");
    assert!(events.iter().any(
        |e| e["kind"] == "approved" && e["message"] == "approved by approver (1 of 1): checked the plan"
    ));
    let done = cluster.try_show_rollout(&id).unwrap();
    assert_eq!(done["approval"]["approvals"][0]["operator"], "approver");
    assert_eq!(cluster.sql("SELECT count(*) FROM _prisma_migrations"), "3");
    assert!(cluster.apps[0].health().is_some_and(|h| h.contains("version=v2")));

    // The audit log: every refusal, the start, the approval and the end.
    let (brief, entries) = audit(&cluster, "viewer");
    let expected = [
        entry("viewer", "start", "refused"),
        entry("deployer", "backup_restore", "refused"),
        entry("ops", "start", "accepted"),
        entry("ops", "approve", "refused"),
        entry("deployer", "approve", "refused"),
        entry("approver", "approve", "accepted"),
    ];
    assert_eq!(brief[..expected.len()], expected, "{entries:#?}");
    let ended = entries.iter().find(|e| e["action"] == "rollout_ended").expect("the end is recorded");
    assert!(ended["actor"].as_str().unwrap().starts_with("coordinator:coord-"), "{ended}");
    assert_eq!(ended["outcome"], "succeeded");
    assert_eq!(ended["rollout_id"], id.as_str());
    assert_eq!(ended["parameters"]["started_by"], "ops");
    assert_eq!(ended["parameters"]["approved_by"], "approver");
    let started = &entries[2];
    assert_eq!(started["rollout_id"], id.as_str());
    assert_eq!(started["parameters"]["app_version"], "v2");
    assert!(started["parameters"]["bundle_digest"].as_str().is_some_and(|d| d.len() == 64), "{started}");
    assert!(entries[3]["error"].as_str().unwrap().contains("cannot approve it"), "{}", entries[3]);
    assert_eq!(entries[5]["parameters"]["comment"], "checked the plan");
}

#[test]
fn in_insecure_mode_the_audit_log_records_the_start_and_the_end() {
    let cluster = Cluster::start(Options { coordinators: 1, app_hosts: 1, tls: false, ..Options::default() });
    let migrations = cluster.path().join("shop");
    write_migrations(&migrations, SHOP);
    let out = cluster
        .runway_command()
        .env("USER", "alice")
        .args(["rollout", "start", "--env", ENV, "--migrations", migrations.to_str().unwrap(), "--watch"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    let out = cluster.runway(&["audit", "--output", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let entries = json_lines(&out.stdout);
    let actions: Vec<&str> = entries.iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["start", "rollout_ended"], "{entries:#?}");
    assert!(entries[0]["actor"].as_str().unwrap().starts_with("insecure:alice"), "{}", entries[0]);
    assert_eq!(entries[0]["outcome"], "accepted");
    assert_eq!(entries[1]["outcome"], "succeeded");
    assert_eq!(entries[1]["rollout_id"], entries[0]["rollout_id"]);
    let table = cluster.runway(&["audit", "--env", ENV]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.starts_with("TIME") && text.contains("rollout_ended"), "{text}");
    let bad = cluster.runway(&["audit", "--since", "yesterday"]);
    assert_eq!(bad.status.code(), Some(2), "{}", stderr(&bad));
}

/// The state `rollout show` gives, once it is not `running`.
fn settled(cluster: &Cluster, id: &str) -> String {
    wait_until("the rollout to settle", Duration::from_secs(60), || {
        let state = cluster.try_show_rollout(id)?["state"].as_str()?.to_owned();
        (state != "running" && state != "pending").then_some(state)
    })
}

#[test]
fn a_rollback_waits_for_its_own_approval_and_a_rejected_one_changes_nothing() {
    let cluster = Cluster::start(Options {
        coordinators: 1,
        app_hosts: 1,
        environment_policy: "approvals = { rollback = 1 }".into(),
        ..Options::default()
    });
    // Rollouts here need no approval; their rollbacks need one.
    let (out, events) = cluster.roll_out("v2", SHOP, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let id = events[0]["rollout_id"].as_str().expect("a rollout id").to_owned();
    let migrated = cluster.database_state();

    let rollback = ["rollout", "rollback", id.as_str(), "--yes", "--output", "json"];
    let out = cluster.runway(&rollback);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(settled(&cluster, &id), "awaiting_approval");
    assert_eq!(cluster.database_state(), migrated, "the rollback touched the database before its approval");
    assert!(!cluster.apps[0].in_maintenance(), "the rollback turned maintenance on before its approval");
    let own = cluster.runway(&["rollout", "approve", &id]);
    assert_eq!(own.status.code(), Some(10), "{}", stderr(&own));
    assert!(stderr(&own).contains("asked for the rollback of"), "{}", stderr(&own));

    // Rejected: nothing changed, and the rollout is as it was.
    let no = cluster.runway_as("approver", &["rollout", "reject", &id, "--reason", "the bug is in the app"]);
    assert!(no.status.success(), "{}", stderr(&no));
    assert_eq!(settled(&cluster, &id), "succeeded");
    assert_eq!(cluster.database_state(), migrated, "a rejected rollback changed the database");

    // Asked again, approved by another operator: it runs.
    let out = cluster.runway(&rollback);
    assert!(out.status.success(), "a rejected rollback can be asked for again: {}", stderr(&out));
    assert_eq!(settled(&cluster, &id), "awaiting_approval");
    let yes = cluster.runway_as("approver", &["rollout", "approve", &id]);
    assert!(yes.status.success(), "{}", stderr(&yes));
    assert_eq!(
        settled(&cluster, &id),
        "rolled_back",
        "{:#}",
        cluster.try_show_rollout(&id).unwrap_or_default()
    );
    let tables = cluster.sql("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'");
    assert_eq!(tables, "0", "the approved rollback restored the backup, taken before anything migrated");
}
