//! Backups clean up after themselves on real PostgreSQL, also when the
//! server closed the connection runway had opened before a long restore:
//! the test restore's scratch database (`runway_verify_…`) and a
//! replace-mode restore's copy are dropped on every path, and a swap that
//! fails leaves no copy behind.
//!
//! These use only the backup API that existed before scratch databases
//! were marked and dropped on fresh connections, so they also run (and
//! fail) against that code.

mod backup_common;

use std::time::{Duration, Instant};

use backup_common::*;
use runway_engine::backup::{self, DumpFormat, RestoreMode, RestoreOptions};
use runway_engine::progress::Progress;
use sqlx::PgConnection;

/// Every database on the server a restore or test restore may leave
/// behind: today's names and the names used before.
const LEFTOVERS_SQL: &str = "SELECT coalesce(string_agg(datname, ', ' ORDER BY datname), '') FROM pg_database
    WHERE datname LIKE 'runway\\_verify\\_%' OR datname LIKE 'runway\\_restore\\_%'
       OR datname LIKE 'runway\\_old\\_%' OR datname LIKE '%\\_runway\\_restore' OR datname LIKE '%\\_runway\\_old'";

async fn leftovers(pg: &PgCluster) -> String {
    let mut admin = pg.connect("postgres").await;
    sqlx::query_scalar(LEFTOVERS_SQL).fetch_one(&mut admin).await.expect("list databases")
}

/// `seed` plus one table large enough that a restore of it takes a while
/// (so the test can act while it runs).
async fn seed_large(pg: &PgCluster) {
    pg.create_database("app").await;
    seed(pg, "app").await;
    let mut c = pg.connect("app").await;
    sqlx::raw_sql(
        "CREATE TABLE big AS SELECT g AS id, md5(g::text) AS a, md5((g * 7)::text) AS b FROM generate_series(1, 600000) g",
    )
    .execute(&mut c)
    .await
    .expect("big table");
}

/// What the server did to the sessions runway had open: the idle client
/// sessions on `database` (a connection runway opened and keeps for later,
/// e.g. to drop the scratch database) are terminated, as a server restart,
/// `idle_session_timeout` or a middlebox would, once a restore is writing
/// into a scratch database. Returns how many were terminated; `None` when
/// no restore was seen before `within`.
async fn close_idle_sessions_mid_restore(pg: &PgCluster, database: &str, within: Duration) -> Option<i64> {
    let mut watcher: PgConnection = pg.connect("postgres").await;
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        let restoring: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname LIKE 'runway\\_verify\\_%' OR datname LIKE 'runway\\_restore\\_%' OR datname LIKE '%\\_runway\\_restore'",
        )
        .fetch_one(&mut watcher)
        .await
        .expect("watch");
        if restoring > 0 {
            let closed: i64 = sqlx::query_scalar(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity
                 WHERE datname = $1 AND state = 'idle' AND backend_type = 'client backend' AND pid <> pg_backend_pid()",
            )
            .bind(database)
            .fetch_one(&mut watcher)
            .await
            .expect("terminate");
            return Some(closed);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    None
}

#[tokio::test]
async fn a_test_restore_drops_its_scratch_database_after_the_server_closed_runways_sessions() {
    let Some(pg) = PgCluster::start() else { return };
    seed_large(&pg).await;
    let progress = Progress::discard();

    // On demand (`runway backup verify --test-restore`): restored after the dump.
    let mut config = pg.backup_config("backups");
    config.format = DumpFormat::Custom;
    let manifest = backup::create(&pg.url("app"), &config, "", "", &progress).await.expect("backup");
    let folder = config.dir.join(&manifest.id);
    let url = pg.url("app");
    let (verified, closed) = tokio::join!(
        backup::verify(&folder, &config, Some(&url), &progress),
        close_idle_sessions_mid_restore(&pg, "app", Duration::from_secs(60)),
    );
    assert!(closed.is_some(), "the test restore was never seen running");
    let report = verified.expect("the test restore succeeds whatever happened to older sessions");
    assert!(report.test_restore.is_some());
    assert_eq!(leftovers(&pg).await, "", "the scratch database is dropped");

    // In the window: the test restore streamed alongside the dump.
    let (created, closed) = tokio::join!(
        backup::create_with(&url, &config, "", "", Some(&url), &progress),
        close_idle_sessions_mid_restore(&pg, "app", Duration::from_secs(60)),
    );
    assert!(closed.is_some(), "the streamed test restore was never seen running");
    let manifest = created.expect("the proven backup succeeds whatever happened to older sessions");
    assert!(manifest.verification.is_some(), "proven");
    assert_eq!(leftovers(&pg).await, "", "the scratch database is dropped");
}

#[tokio::test]
async fn a_replace_restore_swaps_in_after_the_server_closed_runways_sessions() {
    let Some(pg) = PgCluster::start() else { return };
    seed_large(&pg).await;
    let progress = Progress::discard();
    let mut config = pg.backup_config("backups");
    config.format = DumpFormat::Custom;
    let manifest = backup::create(&pg.url("app"), &config, "", "", &progress).await.expect("backup");
    let folder = config.dir.join(&manifest.id);
    let before = table_counts(&pg, "app").await;
    let mut app = pg.connect("app").await;
    sqlx::raw_sql("DELETE FROM big WHERE id % 2 = 0").execute(&mut app).await.expect("change");
    drop(app);

    let options = RestoreOptions {
        target_url: pg.url("app"),
        confirmed: true,
        rollback_of: None,
        mode: RestoreMode::Replace,
    };
    // The restore's admin sessions are on the maintenance database.
    let (restored, closed) = tokio::join!(
        backup::restore(&folder, &config, &options, &progress),
        close_idle_sessions_mid_restore(&pg, "postgres", Duration::from_secs(60)),
    );
    assert!(closed.is_some(), "the restore was never seen running");
    restored.expect("the swap runs on a connection of its own");
    assert_eq!(table_counts(&pg, "app").await, before, "the backup is in place");
    assert_eq!(leftovers(&pg).await, "", "neither the copy nor the replaced database is left");
}

#[tokio::test]
async fn a_failed_swap_leaves_no_restored_copy() {
    let Some(pg) = PgCluster::start() else { return };
    // A restore user that may create databases but does not own the
    // target: the restore into the copy works, renaming the target fails.
    let mut admin = pg.connect("postgres").await;
    for statement in [
        "CREATE ROLE restorer LOGIN CREATEDB PASSWORD 'restorer-pw'",
        "CREATE DATABASE src OWNER restorer",
        "CREATE DATABASE app",
    ] {
        sqlx::raw_sql(statement).execute(&mut admin).await.expect(statement);
    }
    drop(admin);
    let as_restorer = |database: &str| {
        pg.url(database).replacen(&format!("postgres:{PASSWORD}@"), "restorer:restorer-pw@", 1)
    };
    let mut src =
        <PgConnection as sqlx::Connection>::connect(&as_restorer("src")).await.expect("connect as restorer");
    sqlx::raw_sql(
        "CREATE TABLE items (id int PRIMARY KEY, name text);
         INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 1000) g;",
    )
    .execute(&mut src)
    .await
    .expect("seed src");
    drop(src);
    let mut app = pg.connect("app").await;
    sqlx::raw_sql("CREATE TABLE live (id int); INSERT INTO live VALUES (1), (2), (3);")
        .execute(&mut app)
        .await
        .expect("seed app");
    drop(app);
    let before = table_counts(&pg, "app").await;

    let progress = Progress::discard();
    let mut config = pg.backup_config("backups");
    config.format = DumpFormat::Custom;
    let manifest = backup::create(&as_restorer("src"), &config, "", "", &progress).await.expect("backup");
    // The test's own sessions on app are gone (the swap ends the target's
    // sessions, which the restore user may not do to a superuser's).
    no_sessions_on(&pg, "app").await;
    let folder = config.dir.join(&manifest.id);
    let options = RestoreOptions {
        target_url: as_restorer("app"),
        confirmed: true,
        rollback_of: None,
        mode: RestoreMode::Replace,
    };
    let error = backup::restore(&folder, &config, &options, &progress).await.expect_err("the swap fails");
    let text = error.to_string();
    assert!(
        text.contains("renaming the old database away") && text.contains("must be owner of database app"),
        "{text}"
    );
    assert!(!text.contains("restorer-pw"), "{text}");

    assert_eq!(table_counts(&pg, "app").await, before, "the target is as it was");
    assert_eq!(leftovers(&pg).await, "", "no restored copy is left behind");
}

/// Waits until no session is connected to `database`.
async fn no_sessions_on(pg: &PgCluster, database: &str) {
    let mut watcher = pg.connect("postgres").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let sessions: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE datname = $1")
            .bind(database)
            .fetch_one(&mut watcher)
            .await
            .expect("sessions");
        if sessions == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "sessions on {database} did not end");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
