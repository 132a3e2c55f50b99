//! A failed rollout never leaves production worse than the manual runbook:
//! dangerous SQL is gated before anything changes, and a migration that
//! fails after the database changed is rolled back by restoring the
//! rollout's own backup before maintenance mode is lifted.
//!
//! One cluster (real etcd, PostgreSQL, coordinator, agents and sample apps
//! as processes) carries the whole story, rollout after rollout.

use runway_tests::cluster::{Cluster, Options};
use runway_tests::fixtures::{DROP_NAME, SHOP, rollout_start_args, write_migrations};
use runway_tests::watch::{json_lines, milestones, rollout_id};

const BROKEN: (&str, &str) = (
    "20240111000000_broken",
    "ALTER TABLE \"Order\" ADD COLUMN \"note\" TEXT;\nALTER TABLE \"Nope\" ADD COLUMN \"x\" INTEGER;\n",
);

fn backups(cluster: &Cluster) -> usize {
    let dir = &cluster.db.as_ref().expect("a DB host").backup_dir;
    std::fs::read_dir(dir)
        .map(|d| d.flatten().filter(|e| e.path().join("manifest.json").is_file()).count())
        .unwrap_or(0)
}

#[test]
fn dangerous_sql_is_gated_and_a_half_applied_rollout_is_restored() {
    let cluster = Cluster::start(Options { coordinators: 1, ..Options::default() });

    // An applied history with data.
    let (out, _) = cluster.roll_out("v1", SHOP, &[]);
    assert!(out.status.success(), "the first rollout failed: {}", String::from_utf8_lossy(&out.stderr));
    let before = cluster.database_state();
    let data_before = cluster.sql("SELECT id, email, name FROM \"User\" ORDER BY id");
    assert_eq!(data_before.lines().count(), 2);
    let backups_before = backups(&cluster);

    // 1. A Danger finding nobody accepted: refused in preflight, exit 2, nothing touched.
    let mut dangerous = SHOP.to_vec();
    dangerous.push(DROP_NAME);
    let (out, events) = cluster.roll_out("v2", &dangerous, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "a Danger finding must refuse the rollout (exit 2): {stderr}\n{events:#?}"
    );
    let refused_id = rollout_id(&events);
    let all = format!("{}{stderr}", String::from_utf8_lossy(&out.stdout));
    for needle in ["20240110000000_drop_name line 2", "drop-column on User (", "--allow-danger drop-column"] {
        assert!(all.contains(needle), "the refusal does not name {needle:?}:\n{all}");
    }
    assert_eq!(milestones(&events), ["step_started preflight", "step_failed preflight"]);
    let touched: Vec<String> = cluster
        .journals()
        .into_iter()
        .filter(|(_, e)| e["rollout_id"] == refused_id.as_str() && e["action"] != "preflight")
        .map(|(host, e)| format!("{host}: {}", e["action"]))
        .collect();
    assert!(touched.is_empty(), "only preflight may run for a refused rollout: {touched:?}");
    assert!(cluster.apps.iter().all(|a| !a.in_maintenance()));
    assert_eq!(backups(&cluster), backups_before, "a refused rollout took a backup");
    assert_eq!(cluster.database_state(), before, "a refused rollout changed the database");

    // 2. Accepted, but the next migration fails after the column was dropped:
    //    the backup is restored while maintenance stays on; exit 1, rolled_back.
    let mut half = dangerous.clone();
    half.push(BROKEN);
    let pids_before: Vec<u32> = cluster.apps.iter().map(|a| a.pid()).collect();
    let (out, events) = cluster.roll_out("v3", &half, &["--allow-danger", "drop-column"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "a rolled-back rollout exits 1: {stderr}\n{events:#?}");
    let last = events.last().expect("events");
    assert_eq!(last["kind"], "rollout_rolled_back", "{events:#?}");
    assert_eq!(last["rollout_state"], "rolled_back");
    let message = last["message"].as_str().unwrap_or_default();
    assert!(message.contains("20240111000000_broken") && message.contains("restored"), "{message}");
    // Maintenance was on from before the first migration until after the restore.
    assert_eq!(
        milestones(&events),
        [
            "step_started preflight",
            "step_succeeded preflight",
            "step_started maintenance_on",
            "step_succeeded maintenance_on",
            "step_started backup",
            "step_succeeded backup",
            "step_started migrate",
            "step_failed migrate",
            "step_started restore",
            "step_succeeded restore",
            "step_started maintenance_off",
            "step_succeeded maintenance_off",
        ]
    );
    let applied_drop = events.iter().any(|e| {
        e["step"] == "migrate"
            && e["message"].as_str().is_some_and(|m| m.starts_with("applied 20240110000000_drop_name"))
    });
    assert!(
        applied_drop,
        "the column was not dropped before the failure, so nothing was proven: {events:#?}"
    );
    // Schema and _prisma_migrations byte for byte as before (the failed
    // row goes too: the restore returns the database exactly), data intact.
    assert_eq!(
        cluster.database_state(),
        before,
        "the rollback did not return the database to its pre-rollout state"
    );
    assert_eq!(cluster.sql("SELECT id, email, name FROM \"User\" ORDER BY id"), data_before);
    // The old app version still runs (it was never restarted), out of maintenance.
    for (app, pid) in cluster.apps.iter().zip(&pids_before) {
        assert_eq!(app.pid(), *pid, "{} was restarted", app.name);
        let health = app.health().unwrap_or_default();
        assert!(health.contains("version=v1"), "{}: {health}", app.name);
        assert!(!app.in_maintenance(), "{} was left in maintenance mode", app.name);
    }
    let show = cluster.runway(&["rollout", "show", &rollout_id(&events), "--output", "json"]);
    let rollout: serde_json::Value = serde_json::from_slice(&show.stdout).expect("rollout JSON");
    assert_eq!(rollout["state"], "rolled_back");
    assert!(rollout["backup"].as_str().is_some_and(|b| !b.is_empty()));

    // 3. The same bundle as in 1, with the rule accepted: it runs, and
    //    `rollout show` lists the accepted rule and the saved plan.
    let (out, events) = cluster.roll_out("v4", &dangerous, &["--allow-danger", "drop-column"]);
    assert!(out.status.success(), "the accepted rollout failed: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(cluster.sql("SELECT count(*) FROM information_schema.columns WHERE table_name = 'User' AND column_name = 'name'"), "0");
    let show = cluster.runway(&["rollout", "show", &rollout_id(&events)]);
    let text = String::from_utf8_lossy(&show.stdout);
    assert!(
        text.contains("drop-column (--allow-danger)"),
        "rollout show does not list the accepted rule:\n{text}"
    );
    assert!(text.contains("20240110000000_drop_name"), "rollout show does not show the plan:\n{text}");

    // 4. On demand: `runway rollout rollback` of that succeeded rollout brings
    //    back its pre-rollout database and the app version from before it.
    let accepted = rollout_id(&events);
    let unconfirmed = cluster.runway(&["rollout", "rollback", &accepted]);
    assert_eq!(unconfirmed.status.code(), Some(2), "{}", String::from_utf8_lossy(&unconfirmed.stderr));
    assert!(String::from_utf8_lossy(&unconfirmed.stderr).contains("--yes"));
    let back = cluster.runway(&["rollout", "rollback", &accepted, "--yes", "--watch", "--output", "json"]);
    let back_events = json_lines(&back.stdout);
    assert_eq!(back.status.code(), Some(1), "{}\n{back_events:#?}", String::from_utf8_lossy(&back.stderr));
    assert_eq!(back_events.last().expect("events")["kind"], "rollout_rolled_back", "{back_events:#?}");
    assert_eq!(
        milestones(&back_events),
        [
            "step_started maintenance_on",
            "step_succeeded maintenance_on",
            "step_started restore",
            "step_succeeded restore",
            "step_started restart",
            "step_succeeded restart",
            "step_started maintenance_off",
            "step_succeeded maintenance_off",
        ]
    );
    assert_eq!(
        cluster.database_state(),
        before,
        "the rollback did not bring back the database from before it"
    );
    for app in &cluster.apps {
        let health = app.health().unwrap_or_default();
        assert!(health.contains("version=v1"), "{}: {health}", app.name);
        assert!(!app.in_maintenance(), "{} was left in maintenance mode", app.name);
    }
    let again = cluster.runway(&["rollout", "rollback", &accepted, "--yes"]);
    assert_eq!(
        again.status.code(),
        Some(2),
        "a second rollback must be refused: {}",
        String::from_utf8_lossy(&again.stderr)
    );
}

/// A migration that fails inside its own transaction as the first of its
/// rollout changed nothing: maintenance is lifted, the rollout fails, and
/// the message says how to resolve Prisma's failed row.
#[test]
fn a_first_migration_failing_in_its_transaction_lifts_maintenance() {
    let cluster = Cluster::start(Options { coordinators: 1, ..Options::default() });
    let broken = "CREATE TABLE \"Thing\" (id int);\nALTER TABLE \"Nope\" ADD COLUMN \"x\" INTEGER;\n";
    let (out, events) = cluster.roll_out("v2", &[("20240105000000_broken", broken)], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "expected exit 1 (rollout failed): {stderr}\n{events:#?}");
    let all = format!("{}{stderr}", String::from_utf8_lossy(&out.stdout));
    assert!(
        all.contains("relation \\\"Nope\\\" does not exist")
            || all.contains("relation \"Nope\" does not exist"),
        "{all}"
    );
    assert!(all.contains("resolve --rolled-back"), "the message does not say how to resolve:\n{all}");
    assert_eq!(events.last().expect("events")["kind"], "rollout_failed");
    for app in &cluster.apps {
        assert!(!app.in_maintenance(), "{} was left in maintenance mode", app.name);
    }
    // Prisma's bookkeeping: the failed row with its error; nothing else changed.
    let rows = cluster
        .sql("SELECT migration_name, finished_at IS NOT NULL, logs IS NOT NULL FROM _prisma_migrations");
    assert_eq!(rows, "20240105000000_broken|f|t");
    assert_eq!(
        milestones(&events)[6..],
        [
            "step_started migrate",
            "step_failed migrate",
            "step_started maintenance_off",
            "step_succeeded maintenance_off"
        ]
    );
}

/// The leader is SIGKILLed in the middle of the rollback's restore: the new
/// leader resumes the restore step with the same command id, the DB agent's
/// journal turns the re-send into a re-attach, and the restore runs once.
#[test]
fn a_leader_killed_during_the_restore_finishes_the_rollback_once() {
    let mut cluster = Cluster::start(Options {
        lease_ttl_secs: 2,
        // Results are held back 1.5 s, so the kill lands while the restore runs.
        agent_env: vec![("RUNWAY_FAILPOINT_HOLD_MS".into(), "1500".into())],
        ..Options::default()
    });
    let mut history = SHOP.to_vec();
    history.push(BROKEN);
    let migrations = cluster.path().join("migrations");
    write_migrations(&migrations, &history);
    let mut args = rollout_start_args(&migrations, "v2");
    args.extend(["--leader-timeout", "60"]);
    let mut watch = runway_tests::watch::Watch::start(&cluster, &args);
    let mut killed = None;
    while let Some(event) = watch.next(std::time::Duration::from_secs(120)) {
        if killed.is_none() && event["kind"] == "step_started" && event["step"] == "restore" {
            killed = Some(cluster.kill_and_restart_leader());
            eprintln!("SIGKILLed the leader {killed:?} while the restore runs");
        }
        if event["terminal"] == true {
            break;
        }
    }
    let (status, events, stderr) = watch.finish(std::time::Duration::from_secs(30));
    assert!(killed.is_some(), "the restore never started: {events:#?}");
    assert_eq!(status.code(), Some(1), "{stderr}\n{events:#?}");
    assert_eq!(events.last().expect("events")["kind"], "rollout_rolled_back", "{events:#?}");
    let seqs: Vec<u64> = events.iter().filter_map(|e| e["seq"].as_u64()).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "event sequence has gaps or repeats");

    // One restore, journaled as succeeded, and the database is empty again
    // (the backup was taken before any migration of this rollout).
    let restores: Vec<serde_json::Value> = cluster
        .journals()
        .into_iter()
        .filter(|(host, e)| host == "db-1" && e["action"] == "restore_backup")
        .map(|(_, e)| e)
        .collect();
    assert_eq!(restores.len(), 1, "the restore ran more than once: {restores:#?}");
    assert_eq!(restores[0]["outcome"].as_i64(), Some(1), "{}", restores[0]);
    let tokens: std::collections::BTreeSet<u64> =
        cluster.journals().iter().filter_map(|(_, e)| e["token"].as_u64()).collect();
    assert!(tokens.len() >= 2, "the rollout never moved to a new leader: {tokens:?}");
    assert_eq!(cluster.sql("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"), "0");
    assert!(cluster.apps.iter().all(|a| !a.in_maintenance()), "an app was left in maintenance mode");
}

/// A restart that never becomes healthy on the second app host: the hosts
/// already changed get the previous version back and are healthy, and the
/// rollout ends rolled back. The database is restored only when the
/// migrations were not backward compatible (the plan found a dropped column).
#[test]
fn an_unhealthy_restart_brings_back_the_previous_version() {
    let cluster = Cluster::start(Options { coordinators: 1, ..Options::default() });
    let (out, _) = cluster.roll_out("v1", SHOP, &[]);
    assert!(out.status.success(), "the first rollout failed: {}", String::from_utf8_lossy(&out.stderr));
    let revert = |version: &str, history: &[(&str, &str)], extra: &[&str]| {
        std::fs::write(cluster.apps[1].dir.join("unhealthy-version"), version)
            .expect("mark the version broken");
        let (out, events) = cluster.roll_out(version, history, extra);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(1), "{stderr}\n{events:#?}");
        assert_eq!(events.last().expect("events")["kind"], "rollout_rolled_back", "{events:#?}");
        for app in &cluster.apps {
            let health = app.health().unwrap_or_else(|| panic!("{} is not healthy", app.name));
            assert!(health.contains("version=v1"), "{} runs {health}, not the previous version", app.name);
            assert!(!app.in_maintenance(), "{} was left in maintenance mode", app.name);
        }
        milestones(&events)
    };

    // Backward compatible (a new nullable column): apps back, database kept.
    let mut additive = SHOP.to_vec();
    additive.push(("20240112000000_nickname", "ALTER TABLE \"User\" ADD COLUMN \"nickname\" TEXT;\n"));
    let steps = revert("v2", &additive, &[]);
    assert!(!steps.iter().any(|s| s.contains("restore")), "a compatible rollout was restored: {steps:?}");
    assert!(steps.contains(&"step_succeeded restart".to_owned()), "{steps:?}");
    assert_eq!(
        cluster.sql("SELECT count(*) FROM information_schema.columns WHERE table_name = 'User' AND column_name = 'nickname'"),
        "1"
    );

    // Not backward compatible (the old version reads the dropped column): restore too.
    let mut breaking = additive.clone();
    breaking.push(DROP_NAME);
    let steps = revert("v3", &breaking, &["--allow-danger", "drop-column"]);
    let restore_at =
        steps.iter().position(|s| s == "step_succeeded restore").expect("the database was restored");
    let reverted_at =
        steps.iter().rposition(|s| s == "step_succeeded restart").expect("the apps were reverted");
    assert!(restore_at < reverted_at, "{steps:?}");
    assert_eq!(
        cluster.sql("SELECT count(*) FROM information_schema.columns WHERE table_name = 'User' AND column_name = 'name'"),
        "1",
        "the dropped column is not back"
    );
}
