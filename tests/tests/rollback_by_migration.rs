//! Rolling back by migration, the runbook's preferred way back: the downs
//! of a rollout's migrations are proven on a schema-only copy before
//! anything changes, and a rollback runs them instead of restoring the
//! backup, so every row written since the rollout stays. The restore is
//! the fallback when a down fails.
//!
//! Real etcd, PostgreSQL, coordinators, agents and sample apps as processes.

use std::path::Path;
use std::time::Duration;

use runway_tests::cluster::{Cluster, DB, ENV, Options};
use runway_tests::fixtures::{ORDER_STATUS, PROFILE, SHOP, WithDown, rollout_start_args, write_with_downs};
use runway_tests::watch::{Watch, json_lines, milestones, rollout_id};

/// `Order.total` may be NULL; its down makes it NOT NULL again, which
/// fails once a NULL total was written (on an empty copy it is proven).
const TOTAL_OPTIONAL: WithDown = (
    "20240203000000_total_optional",
    "-- AlterTable\nALTER TABLE \"Order\" ALTER COLUMN \"total\" DROP NOT NULL;\n",
    "-- AlterTable\nALTER TABLE \"Order\" ALTER COLUMN \"total\" SET NOT NULL;\n",
);

/// A data assertion a team writes before a cleanup: on the schema-only
/// copy it (and its down) run fine, and no read-only check can predict a
/// `DO` block; on the live data it fails when a user has no name.
const NAMES_GUARD: WithDown = (
    "20240204000000_names_guard",
    "DO $$\nBEGIN\n  IF (SELECT count(*) FROM \"User\" WHERE \"name\" IS NULL) > 0 THEN\n    RAISE EXCEPTION 'users without a name: fix them first';\n  END IF;\nEND $$;\n",
    "SELECT 1;\n",
);

fn folder(cluster: &Cluster, name: &str, history: &[WithDown]) -> std::path::PathBuf {
    let dir = cluster.path().join(name);
    write_with_downs(&dir, runway_tests::fixtures::SHOP, history);
    dir
}

fn json(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn start(cluster: &Cluster, dir: &Path, version: &str) -> (std::process::Output, Vec<serde_json::Value>) {
    let out = cluster.runway(&rollout_start_args(dir, version));
    let events = json_lines(&out.stdout);
    (out, events)
}

/// The failed steps' and commands' events, for assertion messages.
fn failures(events: &[serde_json::Value]) -> Vec<&serde_json::Value> {
    events.iter().filter(|e| e["kind"].as_str().is_some_and(|k| k.ends_with("failed"))).collect()
}

fn rolled_back_rows(cluster: &Cluster) -> String {
    cluster.sql("SELECT migration_name FROM _prisma_migrations WHERE rolled_back_at IS NOT NULL ORDER BY 1")
}

fn apps_run(cluster: &Cluster, version: &str) {
    for app in &cluster.apps {
        let health = app.health().unwrap_or_default();
        assert!(health.contains(&format!("version={version}")), "{}: {health}", app.name);
        assert!(!app.in_maintenance(), "{} was left in maintenance mode", app.name);
    }
}

#[test]
fn downs_are_proven_before_anything_changes_and_a_rollback_by_migration_keeps_every_write() {
    let cluster = Cluster::start(Options { coordinators: 1, ..Options::default() });
    let (out, _) = cluster.roll_out("v1", SHOP, &[]);
    assert!(out.status.success(), "the first rollout failed: {}", String::from_utf8_lossy(&out.stderr));
    let before = cluster.database_state();

    // 1. The plan proves each down on a schema-only copy; nothing changes.
    let good = folder(&cluster, "v2", &[PROFILE, ORDER_STATUS]);
    let plan = cluster.runway(&[
        "rollout",
        "plan",
        "--env",
        ENV,
        "--migrations",
        good.to_str().unwrap(),
        "--output",
        "json",
    ]);
    let plan = json(&plan);
    let downs = plan["downs"].as_array().unwrap_or_else(|| panic!("no downs: {plan:#}"));
    let states: Vec<(&str, &str)> =
        downs.iter().map(|d| (d["migration"].as_str().unwrap(), d["state"].as_str().unwrap())).collect();
    assert_eq!(states, [(PROFILE.0, "proven"), (ORDER_STATUS.0, "proven")], "{plan:#}");
    // A down that forgets an object: `differs`, naming it.
    let forgetful: WithDown =
        (ORDER_STATUS.0, ORDER_STATUS.1, "ALTER TABLE \"Order\" DROP COLUMN \"status\";\n");
    let bad = folder(&cluster, "v2-forgetful", &[PROFILE, forgetful]);
    let text = cluster.runway(&["rollout", "plan", "--env", ENV, "--migrations", bad.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&text.stdout).into_owned();
    assert!(text.contains("differs") && text.contains("extra TYPE public.OrderStatus"), "{text}");
    assert!(text.contains("by restore only: not proven"), "{text}");
    assert_eq!(cluster.database_state(), before, "planning changed the database");
    let leftovers =
        cluster.pg.psql("postgres", "SELECT count(*) FROM pg_database WHERE datname LIKE 'runway_prove_%'");
    assert_eq!(leftovers, "0", "a proof's scratch database was left behind");

    // 2. The rollout succeeds; then customers write to tables that existed before it.
    let (out, events) = start(&cluster, &good, "v2");
    assert!(out.status.success(), "rollout v2 failed: {}\n{events:#?}", String::from_utf8_lossy(&out.stderr));
    let id = rollout_id(&events);
    cluster.sql("INSERT INTO \"User\" (email, name) VALUES ('signup@example.com', 'New Customer')");
    cluster.sql("UPDATE \"Order\" SET total = 4242 WHERE id = 1");
    cluster.sql("INSERT INTO \"Profile\" (\"userId\", avatar) VALUES (1, 'a.png')");
    let writes = cluster.sql("SELECT email, name FROM \"User\" ORDER BY id");

    // 3. Without --yes nothing changes: it says which way, and what each
    //    way would lose, with counts. With --yes, the rollback runs the downs.
    let unconfirmed = cluster.runway(&["rollout", "rollback", &id]);
    assert_eq!(unconfirmed.status.code(), Some(2), "{}", String::from_utf8_lossy(&unconfirmed.stderr));
    let preview = String::from_utf8_lossy(&unconfirmed.stdout);
    for needle in [
        "would be rolled back by migration (each of its 2 migration(s) has a proven down)",
        &format!("table Profile with 1 row(s) (dropped by the down of {})", PROFILE.0),
        "column User.bio with 0 value(s)",
        "column Order.status with 2 value(s)",
        "public.User: 1 row(s) more than in the backup (3 now, 2 then) would be lost",
        "public.Profile: created since the backup, dropped with its 1 row(s)",
    ] {
        assert!(preview.contains(needle), "the preview does not say {needle:?}:\n{preview}");
    }
    assert_eq!(cluster.sql("SELECT count(*) FROM \"Profile\""), "1", "the preview changed data");
    let back = cluster.runway(&["rollout", "rollback", &id, "--yes", "--watch", "--output", "json"]);
    let back_events = json_lines(&back.stdout);
    assert_eq!(back.status.code(), Some(1), "{}\n{back_events:#?}", String::from_utf8_lossy(&back.stderr));
    assert_eq!(back_events.last().expect("events")["kind"], "rollout_rolled_back", "{back_events:#?}");
    assert_eq!(
        milestones(&back_events),
        [
            "step_started maintenance_on",
            "step_succeeded maintenance_on",
            "step_started migrate_down",
            "step_succeeded migrate_down",
            "step_started restart",
            "step_succeeded restart",
            "step_started maintenance_off",
            "step_succeeded maintenance_off",
        ],
        "a rollback by migration has no restore step: {:#?}",
        failures(&back_events)
    );
    let downs_ran: Vec<&str> = back_events
        .iter()
        .filter_map(|e| e["message"].as_str())
        .filter(|m| m.starts_with("rolled back 2024"))
        .collect();
    assert_eq!(downs_ran.len(), 2, "each down runs once: {downs_ran:?}");
    // The schema is the pre-rollout one byte for byte; the writes are there.
    assert_eq!(cluster.database_state().0, before.0, "the schema did not come back");
    assert_eq!(cluster.sql("SELECT email, name FROM \"User\" ORDER BY id"), writes, "writes were lost");
    assert_eq!(cluster.sql("SELECT total FROM \"Order\" WHERE id = 1"), "4242");
    assert_eq!(rolled_back_rows(&cluster), format!("{}\n{}", PROFILE.0, ORDER_STATUS.0));
    let status = cluster.runway(&[
        "migrate",
        "status",
        "--migrations",
        good.to_str().unwrap(),
        "--database-url",
        &cluster.pg.url(DB),
        "--output",
        "json",
    ]);
    let status = json(&status);
    assert_eq!(status["pending"], serde_json::json!([PROFILE.0, ORDER_STATUS.0]), "{status:#}");
    apps_run(&cluster, "v1");
    let show = json(&cluster.runway(&["rollout", "show", &id, "--output", "json"]));
    assert_eq!(show["state"], "rolled_back");
    assert!(show["error"].as_str().unwrap_or_default().contains("rollback by migration"), "{show:#}");
    assert_eq!(show["databases"][0]["undone"], serde_json::json!([ORDER_STATUS.0, PROFILE.0]), "{show:#}");
    let audit = cluster.runway(&["audit", "--output", "json"]);
    let audit = String::from_utf8_lossy(&audit.stdout);
    assert!(
        audit.lines().any(|l| l.contains("\"rollback\"") && l.contains("\"way\":\"migration\"")),
        "the audit log does not say the rollback went by migration:\n{audit}"
    );

    // 4. The fixed history deploys again; then a down that fails on the
    //    data at rollback time falls back to the restore, in maintenance.
    let before_v3 = cluster.database_state();
    let v3 = folder(&cluster, "v3", &[PROFILE, ORDER_STATUS, TOTAL_OPTIONAL]);
    let (out, events) = start(&cluster, &v3, "v3");
    assert!(out.status.success(), "rollout v3 failed: {}\n{events:#?}", String::from_utf8_lossy(&out.stderr));
    let id = rollout_id(&events);
    cluster.sql("INSERT INTO \"Order\" (\"userId\", total) VALUES (1, NULL)");
    let back = cluster.runway(&["rollout", "rollback", &id, "--yes", "--watch", "--output", "json"]);
    let back_events = json_lines(&back.stdout);
    assert_eq!(back.status.code(), Some(1), "{}\n{back_events:#?}", String::from_utf8_lossy(&back.stderr));
    assert_eq!(back_events.last().expect("events")["kind"], "rollout_rolled_back", "{back_events:#?}");
    assert_eq!(
        milestones(&back_events),
        [
            "step_started maintenance_on",
            "step_succeeded maintenance_on",
            "step_started migrate_down",
            "step_failed migrate_down",
            "step_started restore",
            "step_succeeded restore",
            "step_started restart",
            "step_succeeded restart",
            "step_started maintenance_off",
            "step_succeeded maintenance_off",
        ],
        "the failed down falls back to the restore before maintenance is lifted"
    );
    assert_eq!(cluster.database_state(), before_v3, "the restore did not return the database to before v3");
    apps_run(&cluster, "v1");
}

/// The last migration of a bundle fails on the live data after the others
/// applied: they are rolled back by their downs, no restore; the leader is
/// SIGKILLed while the downs run, and each down still runs exactly once.
#[test]
fn a_failed_migration_is_rolled_back_by_the_downs_exactly_once_across_a_leader_kill() {
    let mut cluster = Cluster::start(Options {
        lease_ttl_secs: 2,
        agent_env: vec![("RUNWAY_FAILPOINT_HOLD_MS".into(), "1500".into())],
        ..Options::default()
    });
    let (out, _) = cluster.roll_out("v1", SHOP, &[]);
    assert!(out.status.success(), "the first rollout failed: {}", String::from_utf8_lossy(&out.stderr));
    // A customer without a name: NAMES_GUARD fails on it.
    cluster.sql("INSERT INTO \"User\" (email) VALUES ('anonymous@example.com')");
    let before = cluster.database_state();
    let dir = folder(&cluster, "v2", &[PROFILE, ORDER_STATUS, NAMES_GUARD]);
    let mut args = rollout_start_args(&dir, "v2");
    args.extend(["--leader-timeout", "60"]);
    let mut watch = Watch::start(&cluster, &args);
    let mut killed = None;
    while let Some(event) = watch.next(Duration::from_secs(120)) {
        if killed.is_none() && event["kind"] == "step_started" && event["step"] == "migrate_down" {
            std::thread::sleep(Duration::from_millis(300));
            killed = Some(cluster.kill_and_restart_leader());
            eprintln!("SIGKILLed the leader {killed:?} while the downs run");
        }
        if event["terminal"] == true {
            break;
        }
    }
    let (status, events, stderr) = watch.finish(Duration::from_secs(60));
    assert!(killed.is_some(), "the rollout never rolled back by migration: {events:#?}");
    assert_eq!(status.code(), Some(1), "a rolled-back rollout exits 1: {stderr}\n{events:#?}");
    let last = events.last().expect("events");
    assert_eq!(last["kind"], "rollout_rolled_back", "{events:#?}");
    let steps = milestones(&events);
    assert!(!steps.iter().any(|s| s.contains("restore")), "no restore may run: {steps:#?}");
    assert!(steps.contains(&"step_succeeded migrate_down".to_owned()), "{steps:#?}");
    // The agent ran one migrate_down command, whatever the leaders re-sent.
    let downs: Vec<String> = cluster
        .journals()
        .into_iter()
        .filter(|(_, e)| e["action"] == "migrate_down")
        .map(|(_, e)| e["command_id"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(downs.len(), 1, "one migrate_down command: {downs:?}");
    let log = cluster.db.as_ref().expect("a DB host").agent.log_text();
    for name in [PROFILE.0, ORDER_STATUS.0] {
        let ran = log.lines().filter(|l| l.contains("rolled back by its down") && l.contains(name)).count();
        assert_eq!(ran, 1, "the down of {name} ran {ran} times");
    }
    assert_eq!(cluster.database_state().0, before.0, "the schema did not come back");
    assert_eq!(cluster.sql("SELECT count(*) FROM \"User\" WHERE name IS NULL"), "1", "the data stays");
    assert_eq!(
        rolled_back_rows(&cluster),
        format!("{}\n{}\n{}", PROFILE.0, ORDER_STATUS.0, NAMES_GUARD.0),
        "the downs and the failed migration are marked rolled back, so a fixed bundle deploys"
    );
    apps_run(&cluster, "v1");
}
