//! A rollout end to end: CLI → leader coordinator → agents → PostgreSQL and
//! sample apps, all real processes.

use std::collections::BTreeMap;
use std::process::Command;

use runway_tests::checks::walk;
use runway_tests::cluster::{Cluster, Options};
use runway_tests::fixtures::{SHOP, write_migrations};
use runway_tests::postgres::PG_BIN;
use runway_tests::watch::{json_lines, step_states};
use sha2::{Digest, Sha256};

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[test]
fn a_rollout_backs_up_migrates_and_restarts_every_host() {
    let cluster = Cluster::start(Options::default());
    let migrations = cluster.path().join("migrations");
    write_migrations(&migrations, SHOP);
    let pids_before: Vec<u32> = cluster.apps.iter().map(|a| a.pid()).collect();

    let out = cluster.runway(&[
        "rollout",
        "start",
        "--env",
        "staging",
        "--migrations",
        migrations.to_str().unwrap(),
        "--app-version",
        "v2",
        "--watch",
        "--output",
        "json",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let events = json_lines(&out.stdout);
    assert!(out.status.success(), "rollout failed: {stderr}\n{events:#?}");

    // Events arrived in order, numbered from 1 without gaps, ending in success.
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "sequence numbers have gaps or repeats");
    let last = events.last().unwrap();
    assert_eq!(last["kind"], "rollout_succeeded");
    assert_eq!(last["terminal"], true);
    let steps: Vec<&str> = events
        .iter()
        .filter(|e| e["kind"] == "step_succeeded")
        .map(|e| e["step"].as_str().unwrap())
        .collect();
    assert_eq!(steps, ["preflight", "maintenance_on", "backup", "migrate", "restart", "maintenance_off"]);
    assert!(
        events.iter().any(|e| e["kind"] == "progress" && e["step"] == "migrate"),
        "no migrate progress streamed"
    );

    // The tables exist and hold the seeded rows.
    assert_eq!(cluster.sql("SELECT count(*) FROM \"User\""), "2");
    assert_eq!(cluster.sql("SELECT count(*) FROM \"Order\""), "2");

    // _prisma_migrations: one finished row per migration, checksum = SHA-256 of the file.
    let rows = cluster.sql(
        "SELECT migration_name, checksum, finished_at IS NOT NULL, applied_steps_count, rolled_back_at IS NULL, logs IS NULL \
         FROM _prisma_migrations ORDER BY migration_name",
    );
    let expected: Vec<String> =
        SHOP.iter().map(|(name, sql)| format!("{name}|{}|t|1|t|t", sha256_hex(sql.as_bytes()))).collect();
    assert_eq!(rows.lines().collect::<Vec<_>>(), expected);

    // A backup exists, its checksum matches its manifest, pg_restore --list accepts it.
    let backup_dir = &cluster.db.as_ref().unwrap().backup_dir;
    let manifests: Vec<_> = walk(backup_dir).into_iter().filter(|p| p.ends_with("manifest.json")).collect();
    assert_eq!(manifests.len(), 1, "expected exactly one backup, found {manifests:?}");
    let manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(&manifests[0]).unwrap()).unwrap();
    let dump =
        manifests[0].parent().unwrap().join(manifest["dump"].as_str().expect("manifest names its dump"));
    let manifest_sha = manifest["sha256"].as_str().expect("manifest records a sha256");
    assert_eq!(manifest["format"], "custom");
    assert!(
        manifest["rollout_id"].as_str().is_some_and(|id| !id.is_empty()),
        "manifest lacks the rollout id"
    );
    assert_eq!(
        sha256_hex(&std::fs::read(&dump).unwrap()),
        manifest_sha,
        "dump checksum differs from manifest"
    );
    let list = Command::new(format!("{PG_BIN}/pg_restore")).arg("--list").arg(&dump).output().unwrap();
    assert!(
        list.status.success(),
        "pg_restore --list rejected the dump: {}",
        String::from_utf8_lossy(&list.stderr)
    );

    // Both apps were restarted with the new version and are healthy.
    for (app, before) in cluster.apps.iter().zip(pids_before) {
        let after = app.pid();
        assert_ne!(after, before, "{} was not restarted", app.name);
        let health = app.health().unwrap_or_else(|| {
            let log = std::fs::read_to_string(app.dir.join("app.log")).unwrap_or_default();
            panic!("{} (pid {after}) is not healthy; its log:\n{log}", app.name)
        });
        assert!(health.contains("version=v2"), "{}: {health}", app.name);
        assert!(!app.in_maintenance(), "{} was left in maintenance mode", app.name);
    }

    // Only the leader dispatched: every command every agent ran was issued by
    // the coordinator that ran the rollout, with one fencing token.
    let rollout_id = events[0]["rollout_id"].as_str().unwrap();
    let show = cluster.runway(&["rollout", "show", rollout_id, "--output", "json"]);
    let rollout: serde_json::Value = serde_json::from_slice(&show.stdout).unwrap();
    assert_eq!(rollout["state"], "succeeded");
    let leader = rollout["coordinator"].as_str().unwrap();
    let mut issuers = BTreeMap::new();
    for (_, entry) in cluster.journals() {
        *issuers
            .entry((entry["issued_by"].as_str().unwrap().to_owned(), entry["token"].as_u64().unwrap()))
            .or_insert(0) += 1;
    }
    assert_eq!(issuers.len(), 1, "commands came from more than one coordinator/token: {issuers:?}");
    assert_eq!(issuers.keys().next().unwrap().0, leader);
    // preflight ×3, maintenance on ×2, backup, migrate, restart ×2, maintenance off ×2,
    // and the backup's release after the end
    assert_eq!(issuers.values().sum::<i32>(), 12);
    let follower = cluster.coordinators.iter().find(|c| c.name != leader).unwrap();
    assert!(!follower.proc.log_text().contains("became leader"), "the follower also led");
}

/// A cancel is honoured between steps. Asked while the migration runs, the
/// migration finishes, and since the database changed the cancel puts it
/// back (here by the proven downs) before lifting maintenance mode: the old
/// app version never runs on the new schema.
#[test]
fn a_cancel_during_migrate_puts_the_database_back_before_lifting_maintenance() {
    let cluster = Cluster::start(Options { coordinators: 1, app_hosts: 1, ..Options::default() });
    let migrations = cluster.path().join("migrations");
    write_migrations(
        &migrations,
        &[SHOP[0], ("20240104000000_slow", "SELECT pg_sleep(3);\nCREATE TABLE \"Slow\" (id int);\n")],
    );
    std::fs::write(migrations.join(SHOP[0].0).join("down.sql"), "DROP TABLE \"User\";\n").unwrap();
    std::fs::write(migrations.join("20240104000000_slow/down.sql"), "DROP TABLE \"Slow\";\n").unwrap();
    let started = cluster.runway(&[
        "rollout",
        "start",
        "--env",
        "staging",
        "--migrations",
        migrations.to_str().unwrap(),
        "--output",
        "json",
    ]);
    assert!(started.status.success(), "{}", String::from_utf8_lossy(&started.stderr));
    let id = json_lines(&started.stdout)[0]["id"].as_str().unwrap().to_owned();

    runway_tests::process::wait_until("the migrate step to run", std::time::Duration::from_secs(30), || {
        let show = cluster.runway(&["rollout", "show", &id, "--output", "json"]);
        let rollout: serde_json::Value = serde_json::from_slice(&show.stdout).ok()?;
        rollout["steps"]
            .as_array()?
            .iter()
            .any(|s| s["name"] == "migrate" && s["state"] == "running")
            .then_some(())
    });
    let cancel = cluster.runway(&["rollout", "cancel", &id]);
    assert!(cancel.status.success(), "{}", String::from_utf8_lossy(&cancel.stderr));

    let watch = cluster.runway(&["rollout", "watch", &id]);
    assert_eq!(
        watch.status.code(),
        Some(4),
        "expected exit 4 (cancelled): {}",
        String::from_utf8_lossy(&watch.stderr)
    );
    let show = cluster.runway(&["rollout", "show", &id, "--output", "json"]);
    let rollout: serde_json::Value = serde_json::from_slice(&show.stdout).unwrap();
    assert_eq!(rollout["state"], "cancelled");
    let states = step_states(&rollout);
    // The running migration was not cut off; what follows it was skipped,
    // and the database was rolled back by migration before maintenance off.
    assert_eq!(
        states,
        [
            ("preflight", "succeeded"),
            ("maintenance_on", "succeeded"),
            ("backup", "succeeded"),
            ("migrate", "succeeded"),
            ("restart", "skipped"),
            ("maintenance_off", "skipped"),
            ("migrate_down", "succeeded"),
            ("maintenance_off", "succeeded"),
        ],
        "{rollout:#}"
    );
    assert!(
        rollout["error"]
            .as_str()
            .unwrap_or_default()
            .contains("after the database changed: rolling it back by migration"),
        "{rollout:#}"
    );
    let tables = cluster.sql("SELECT count(*) FROM pg_tables WHERE tablename IN ('User', 'Slow')");
    assert_eq!(tables, "0", "the cancelled rollout's tables are still there");
    assert!(!cluster.apps[0].in_maintenance());
    // Cancelling a finished rollout is refused as bad input.
    assert_eq!(cluster.runway(&["rollout", "cancel", &id]).status.code(), Some(2));
}
