//! A DB agent killed mid-backup leaves a `.partial-*` folder in its backup
//! dir and a scratch database on the server; the agent removes both when
//! it starts again, before it takes commands, and logs each. A user's
//! database that only looks like a scratch database survives.

use std::time::{Duration, Instant};

use runway_tests::cluster::{Cluster, ENV, Options};
use runway_tests::watch::json_lines;

/// The marker a scratch database of the DB agent `db-1` carries (its
/// host and backup dir): `runway scratch: <kind> <created> owner=<host>:<dir>`.
fn marker(backup_dir: &std::path::Path) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").expect("hostname");
    format!("runway scratch: verify 2026-01-01T00:00:00Z owner={}:{}", host.trim(), backup_dir.display())
}

#[test]
fn leftovers_of_a_killed_backup_are_removed_when_the_db_agent_starts() {
    let mut cluster = Cluster::start(Options { coordinators: 1, app_hosts: 0, ..Options::default() });
    let backup_dir = cluster.db.as_ref().expect("a DB host").backup_dir.clone();

    // What a SIGKILL mid-backup leaves: a half-written dump and a marked
    // scratch database with rows in it.
    let partial = backup_dir.join(".partial-app-20260101T000000000Z-rollout");
    std::fs::create_dir_all(partial.join("dump")).expect("partial folder");
    std::fs::write(partial.join("dump").join("toc.dat"), b"half a dump").expect("write");
    let pg = &cluster.pg;
    pg.psql("postgres", "CREATE DATABASE runway_verify_0123456789ab");
    pg.psql(
        "postgres",
        &format!("COMMENT ON DATABASE runway_verify_0123456789ab IS '{}'", marker(&backup_dir)),
    );
    pg.psql("runway_verify_0123456789ab", "CREATE TABLE copy AS SELECT generate_series(1, 1000) AS id");
    // A user's database named like one, without the marker.
    pg.psql("postgres", "CREATE DATABASE runway_verify_x");
    pg.psql("runway_verify_x", "CREATE TABLE mine AS SELECT generate_series(1, 5) AS id");

    let restarted_ms = runway_tests::process::now_ms();
    cluster.restart_db_agent();
    wait_registered(&cluster, restarted_ms);

    let pg = &cluster.pg;
    let scratch = pg.psql(
        "postgres",
        "SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_database WHERE datname LIKE 'runway%'",
    );
    assert_eq!(scratch, "runway_verify_x", "the marked scratch database is dropped, the user's stays");
    assert_eq!(pg.psql("runway_verify_x", "SELECT count(*) FROM mine"), "5", "the user's data is intact");
    assert!(!partial.exists(), "the partial folder is removed");
    assert!(backup_dir.is_dir(), "the backup dir stays");

    let log = cluster.db.as_ref().expect("a DB host").agent.log_text();
    assert!(log.contains("runway_verify_0123456789ab"), "the drop is logged:\n{log}");
    assert!(log.contains(".partial-app-20260101T000000000Z-rollout"), "the removal is logged:\n{log}");
}

/// Waits until `db-1` registered again after `since_ms`.
fn wait_registered(cluster: &Cluster, since_ms: i64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = cluster.runway(&["agents", "--env", ENV, "--output", "json"]);
        let back = json_lines(&out.stdout)
            .iter()
            .any(|a| a["name"] == "db-1" && a["connected_unix_ms"].as_i64().unwrap_or(0) >= since_ms);
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
