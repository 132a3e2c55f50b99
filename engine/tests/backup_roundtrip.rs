//! Backup → verify (with a test restore) → upload to a real S3 API server →
//! delete the local copy → restore from object storage → every table's row
//! count and the contents of a few tables equal what they were before.

mod backup_common;

use backup_common::*;
use runway_engine::backup::{self, DumpFormat, RestoreMode, RestoreOptions, remote};
use runway_engine::progress::Progress;

const CHECKED_TABLES: [&str; 3] = ["accounts", "events", "billing.\"Invoice\""];

async fn fingerprint(pg: &PgCluster, database: &str) -> (Vec<(String, i64)>, Vec<String>) {
    let counts = table_counts(pg, database).await;
    let mut sums = Vec::new();
    for t in CHECKED_TABLES {
        sums.push(content_checksum(pg, database, t).await);
    }
    (counts, sums)
}

async fn round_trip(format: DumpFormat, mode: RestoreMode) {
    let Some(pg) = PgCluster::start() else { return };
    let Some(s3) = Moto::start() else { return };
    s3.create_bucket("backups");
    pg.create_database("app").await;
    seed(&pg, "app").await;
    let before = fingerprint(&pg, "app").await;
    assert!(before.0.len() >= 7, "{:?}", before.0);

    let mut config = pg.backup_config("backups");
    config.format = format;
    config.jobs = 2;
    config.object_store = Some(s3.store_config("backups", "team/app"));
    let progress = Progress::discard();

    // Backup and verify with a full test restore.
    let manifest = backup::create(&pg.url("app"), &config, "nightly", "", &progress).await.expect("backup");
    let folder = config.dir.join(&manifest.id);
    let report = backup::verify(&folder, &config, Some(&pg.url("app")), &progress).await.expect("verify");
    let test_restore = report.test_restore.expect("test restore ran");
    assert_eq!(test_restore.tables, manifest.tables.len());
    assert!(test_restore.scratch_database.starts_with("runway_verify_"));
    let mut admin = pg.connect("postgres").await;
    let leftover: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_database WHERE datname LIKE 'runway_verify_%'")
            .fetch_one(&mut admin)
            .await
            .expect("query");
    assert_eq!(leftover, 0, "the scratch database was dropped");

    // Off-host copy, verified after upload; then the local copy goes away.
    let uploaded = remote::upload(&folder, &config, &progress).await.expect("upload");
    assert_eq!(uploaded.bytes, manifest.bytes);
    let listed = remote::list(&config).await.expect("list");
    assert_eq!(listed.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(), [manifest.id.as_str()]);
    std::fs::remove_dir_all(&folder).expect("delete local copy");

    // The database changes after the backup.
    let mut app = pg.connect("app").await;
    sqlx::raw_sql(
        "DELETE FROM events WHERE id % 3 = 0; UPDATE accounts SET balance = 0; CREATE TABLE later (x int);",
    )
    .execute(&mut app)
    .await
    .expect("change");
    drop(app);

    // Restore from object storage into a new database, and over the original.
    pg.create_database("restored").await;
    for target in ["restored", "app"] {
        if target == "app" {
            std::fs::remove_dir_all(&folder).expect("delete the download again");
        }
        let options = RestoreOptions { target_url: pg.url(target), confirmed: true, rollback_of: None, mode };
        let restored =
            backup::restore_named(&manifest.id, &config, &options, &progress).await.expect("restore");
        assert_eq!(restored.tables, manifest.tables.len() + restored.extra_tables.len());
        let (mut counts, sums) = fingerprint(&pg, target).await;
        if mode == RestoreMode::Clean {
            counts.retain(|(t, _)| t != "public.later");
        }
        assert_eq!(counts, before.0, "row counts in {target}");
        assert_eq!(sums, before.1, "contents of {CHECKED_TABLES:?} in {target}");
    }
}

#[tokio::test]
async fn custom_format_round_trip_through_object_storage() {
    round_trip(DumpFormat::Custom, RestoreMode::Clean).await;
}

#[tokio::test]
async fn directory_format_round_trip_replacing_the_database() {
    round_trip(DumpFormat::Directory, RestoreMode::Replace).await;
}
