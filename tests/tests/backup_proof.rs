//! A rollout's backup is proven restorable before its migration runs, at
//! about the cost of the dump: the test restore streams alongside pg_dump,
//! its proof lands in the manifest, and a byte that differs on disk from
//! what was hashed stops the rollout before the migration. With
//! `test_restore = "background"` the proof runs after the window and the
//! rollout ends only once it is in.

use std::path::Path;
use std::time::{Duration, Instant};

use runway_tests::cluster::{Cluster, ENV, Options};
use runway_tests::fixtures::{SHOP, write_migrations};
use runway_tests::watch::{json_lines, milestones};

const ADD_NOTE: (&str, &str) = ("20240111000000_note", "ALTER TABLE \"Order\" ADD COLUMN \"note\" TEXT;\n");

/// `rollout start --watch --output json`: exit code and events.
fn roll_out(
    cluster: &Cluster,
    name: &str,
    history: &[(&str, &str)],
) -> (Option<i32>, Vec<serde_json::Value>, String) {
    let (out, events) = cluster.roll_out(name, history, &[]);
    (out.status.code(), events, String::from_utf8_lossy(&out.stderr).into_owned())
}

/// The newest backup's manifest in the DB agent's backup dir.
fn newest_manifest(dir: &Path) -> serde_json::Value {
    let mut found: Vec<_> = std::fs::read_dir(dir)
        .expect("backup dir")
        .flatten()
        .filter(|e| e.path().join("manifest.json").is_file())
        .map(|e| e.path())
        .collect();
    found.sort();
    let newest = found.last().expect("a backup");
    serde_json::from_slice(&std::fs::read(newest.join("manifest.json")).expect("read")).expect("json")
}

/// Restarts the DB agent with `env` and `backup_keys` added to its
/// `[backup]` table, and waits until it is registered again.
fn restart_db_agent(cluster: &mut Cluster, env: &[(&str, &str)], backup_keys: &str) {
    let db = cluster.db.as_mut().expect("a DB host");
    db.env = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    let config = std::fs::read_to_string(&db.config).expect("read config");
    let base = config.split("\n# test keys\n").next().unwrap_or_default().to_owned();
    let config = match backup_keys {
        "" => base,
        keys => base.replacen("[backup]\n", &format!("[backup]\n# test keys\n{keys}\n# test keys\n"), 1),
    };
    std::fs::write(&db.config, config).expect("write config");
    cluster.restart_db_agent();
    // Registered again: connected after the restart.
    let restarted = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = cluster.runway(&["agents", "--env", ENV, "--output", "json"]);
        let back = json_lines(&out.stdout).iter().any(|a| {
            a["name"] == "db-1"
                && a["connected_unix_ms"].as_i64().unwrap_or(0) >= restarted.as_millis() as i64
        });
        if back {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "db-1 did not come back: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn backups_are_proven_before_the_migration_and_corruption_stops_it() {
    let mut cluster = Cluster::start(Options { coordinators: 1, ..Options::default() });
    let backup_dir = cluster.db.as_ref().expect("a DB host").backup_dir.clone();

    // 1. Staging is production-like: the proof runs in the window, alongside the dump.
    let (code, events, stderr) = roll_out(&cluster, "v1", SHOP);
    assert_eq!(code, Some(0), "the first rollout failed: {stderr}\n{events:#?}");
    let manifest = newest_manifest(&backup_dir);
    let proof = &manifest["verification"];
    assert_eq!(proof["when"], "overlapped", "{manifest:#}");
    assert_eq!(proof["post_data"], "skipped", "{manifest:#}");
    assert_eq!(proof["sha256"], manifest["sha256"]);
    // The scratch database read every row: its counts are the manifest's.
    assert_eq!(manifest["rows_counted_in"], "test_restore", "{manifest:#}");
    let rows: i64 =
        manifest["tables"].as_array().expect("tables").iter().map(|t| t["rows"].as_i64().unwrap()).sum();
    assert_eq!(proof["rows"].as_i64(), Some(rows));
    assert!(!milestones(&events).iter().any(|m| m.contains("verify_backup")), "no proof after the window");
    let backup_result = events
        .iter()
        .find(|e| e["kind"] == "command_succeeded" && e["step"] == "backup")
        .expect("the backup's result");
    let detail = &backup_result["detail"];
    assert_eq!(detail["proof"], "in_window");
    assert_eq!(detail["verify"]["test_restore"]["when"], "overlapped");

    // 2. A byte on disk differs from what was hashed: the backup step
    //    fails as an integrity failure, the migration never runs.
    let state_before = cluster.database_state();
    restart_db_agent(&mut cluster, &[("RUNWAY_FAILPOINT_FLIP_DUMP_BYTE", "300")], "");
    let mut next = SHOP.to_vec();
    next.push(ADD_NOTE);
    let (code, events, stderr) = roll_out(&cluster, "v2", &next);
    assert_eq!(code, Some(1), "a corrupt backup must fail the rollout: {stderr}\n{events:#?}");
    let steps = milestones(&events);
    assert!(steps.contains(&"step_failed backup".to_owned()), "{steps:?}");
    assert!(!steps.iter().any(|m| m.ends_with(" migrate")), "the migration must not start: {steps:?}");
    let failed =
        events.iter().find(|e| e["kind"] == "command_failed" && e["step"] == "backup").expect("failure");
    assert!(failed["message"].as_str().unwrap_or("").contains("checksum mismatch"), "{failed:#}");
    assert_eq!(cluster.database_state(), state_before, "the database is untouched");
    for app in &cluster.apps {
        assert!(!app.in_maintenance(), "{} left in maintenance", app.name);
    }

    // 3. Proof after the window: the plan says so, the migration runs once
    //    the backup is written, and the rollout ends after the proof.
    restart_db_agent(&mut cluster, &[], "test_restore = \"background\"");
    let migrations = cluster.path().join("v3");
    write_migrations(&migrations, &next);
    let plan =
        cluster.runway(&["rollout", "plan", "--env", ENV, "--migrations", migrations.to_str().unwrap()]);
    let plan_text = String::from_utf8_lossy(&plan.stdout);
    assert!(plan_text.contains("backup       test restore after the window"), "{plan_text}");
    assert!(plan_text.contains("expected dump"), "{plan_text}");
    let (code, events, stderr) = roll_out(&cluster, "v3", &next);
    assert_eq!(code, Some(0), "the background-proof rollout failed: {stderr}\n{events:#?}");
    let steps = milestones(&events);
    let at = |m: &str| steps.iter().position(|s| s == m).unwrap_or_else(|| panic!("{m} missing: {steps:?}"));
    assert!(at("step_succeeded backup") < at("step_started migrate"), "{steps:?}");
    assert!(at("step_succeeded maintenance_off") < at("step_started verify_backup"), "{steps:?}");
    assert_eq!(steps.last().map(String::as_str), Some("step_succeeded verify_backup"), "{steps:?}");
    let manifest = newest_manifest(&backup_dir);
    assert_eq!(manifest["verification"]["when"], "background", "{manifest:#}");
    assert_eq!(manifest["verification"]["post_data"], "restored", "{manifest:#}");
    assert_eq!(manifest["rows_counted_in"], "dump", "no test restore in the window: rows read from the dump");
}
