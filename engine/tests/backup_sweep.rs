//! `backup::sweep` against a real PostgreSQL: it drops only scratch
//! databases marked as this owner's and not in use, removes abandoned
//! `.partial-*` folders, and never touches a user's database named like a
//! scratch one. And a test restore refuses, before creating anything, when
//! the server's disk has no room for the copy.

mod backup_common;

use backup_common::*;
use runway_engine::backup::scratch::{self, Kind};
use runway_engine::backup::{self, BackupError, DumpFormat};
use runway_engine::progress::Progress;

async fn databases(pg: &PgCluster) -> Vec<String> {
    let mut admin = pg.connect("postgres").await;
    sqlx::query_scalar("SELECT datname::text FROM pg_database WHERE datname LIKE 'runway%' ORDER BY 1")
        .fetch_all(&mut admin)
        .await
        .expect("list")
}

#[tokio::test]
async fn the_sweep_takes_only_what_is_certainly_runways_and_abandoned() {
    let Some(pg) = PgCluster::start() else { return };
    pg.create_database("app").await;
    let config = pg.backup_config("backups");
    let owner = scratch::owner(&config);
    let now = chrono::Utc::now();
    let mut admin = pg.connect("postgres").await;
    let make = |name: &str, comment: Option<String>| {
        let comment = comment.map_or("NULL".to_owned(), |c| format!("'{}'", c.replace('\'', "''")));
        [format!("CREATE DATABASE {name}"), format!("COMMENT ON DATABASE {name} IS {comment}")]
    };
    let sql = [
        make("runway_verify_0123456789ab", Some(scratch::marker(Kind::Verify, &owner, now))),
        make("runway_restore_0123456789ab", Some(scratch::marker(Kind::Restore, &owner, now))),
        make("runway_old_0123456789ab", Some(scratch::marker(Kind::Old, &owner, now))),
        // A user's databases that only look like leftovers.
        make("runway_verify_x", None),
        make("runway_restore_mine", Some("our restore drill".into())),
        // Another agent's (another backup dir), and one marked with the wrong kind.
        make(
            "runway_verify_other",
            Some(scratch::marker(Kind::Verify, "elsewhere:/var/backups/runway", now)),
        ),
        make("runway_verify_wrongkind", Some(scratch::marker(Kind::Old, &owner, now))),
        // Ours, but something is connected to it.
        make("runway_verify_busy", Some(scratch::marker(Kind::Verify, &owner, now))),
    ];
    for statement in sql.iter().flatten() {
        sqlx::raw_sql(statement).execute(&mut admin).await.expect(statement);
    }
    let busy = pg.connect("runway_verify_busy").await;
    std::fs::create_dir_all(config.dir.join(".partial-app-20250301T100000123Z/dump")).expect("partial");
    std::fs::write(config.dir.join(".partial-app-20250301T100000123Z/dump/toc.dat"), b"half").expect("write");
    std::fs::create_dir_all(config.dir.join("app-20250301T090000123Z")).expect("a backup");

    let report = backup::sweep(&config, &pg.url("app")).await.expect("sweep");
    assert_eq!(
        report.databases,
        ["runway_old_0123456789ab", "runway_restore_0123456789ab", "runway_verify_0123456789ab"]
    );
    assert_eq!(report.folders, [config.dir.join(".partial-app-20250301T100000123Z")]);
    assert_eq!(
        databases(&pg).await,
        [
            "runway_restore_mine",
            "runway_verify_busy",
            "runway_verify_other",
            "runway_verify_wrongkind",
            "runway_verify_x"
        ]
    );
    assert!(config.dir.join("app-20250301T090000123Z").is_dir(), "backups stay");
    assert_eq!(report.kept.len(), 5, "{:?}", report.kept);
    assert!(report.kept.iter().any(|k| k.starts_with("runway_verify_busy: in use")), "{:?}", report.kept);
    drop(busy);
}

#[tokio::test]
async fn a_test_restore_refuses_before_filling_the_servers_disk() {
    let Some(pg) = PgCluster::start() else { return };
    pg.create_database("app").await;
    seed(&pg, "app").await;
    let mut config = pg.backup_config("backups");
    config.format = DumpFormat::Custom;
    let progress = Progress::discard();
    let manifest = backup::create(&pg.url("app"), &config, "", "", &progress).await.expect("backup");
    let folder = config.dir.join(&manifest.id);

    // The server runs here and the test connects as a superuser: its data
    // directory's free space is known. No disk has a million times the database.
    config.scratch_free_space_factor = 1e6;
    let err = backup::verify(&folder, &config, Some(&pg.url("app")), &progress).await.expect_err("refused");
    assert!(matches!(err, BackupError::ServerSpace { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains("data directory") && text.contains("scratch_free_space_factor"), "{text}");
    assert!(err.retry_safe());
    let err = backup::create_with(&pg.url("app"), &config, "", "", Some(&pg.url("app")), &progress)
        .await
        .expect_err("refused before pg_dump");
    assert!(matches!(err, BackupError::ServerSpace { .. }), "{err}");
    assert_eq!(databases(&pg).await, Vec::<String>::new(), "no scratch database was created");

    config.scratch_free_space_factor = 1.2;
    backup::verify(&folder, &config, Some(&pg.url("app")), &progress).await.expect("fits");
}
