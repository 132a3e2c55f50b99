//! What backups refuse to do: verify and restore a backup with one flipped
//! byte (the target stays untouched), restore without confirmation, and
//! start a backup without enough free space (pg_dump never starts).

mod backup_common;

use std::os::unix::fs::PermissionsExt;

use backup_common::*;
use runway_engine::backup::{self, BackupError, DumpFormat, RestoreMode, RestoreOptions};
use runway_engine::progress::Progress;

async fn state(pg: &PgCluster) -> (Vec<(String, i64)>, String, String) {
    (
        table_counts(pg, "app").await,
        content_checksum(pg, "app", "accounts").await,
        content_checksum(pg, "app", "events").await,
    )
}

#[tokio::test]
async fn flipped_byte_is_refused_by_verify_and_restore() {
    let Some(pg) = PgCluster::start() else { return };
    pg.create_database("app").await;
    seed(&pg, "app").await;
    let progress = Progress::discard();

    for format in [DumpFormat::Custom, DumpFormat::Directory] {
        let mut config = pg.backup_config(&format!("backups-{format:?}"));
        config.format = format;
        let manifest = backup::create(&pg.url("app"), &config, "", "", &progress).await.expect("backup");
        let folder = config.dir.join(&manifest.id);

        // A change after the backup that a restore would undo.
        let mut app = pg.connect("app").await;
        sqlx::raw_sql("INSERT INTO accounts (name) VALUES ('after the backup')")
            .execute(&mut app)
            .await
            .expect("insert");
        drop(app);
        let before = state(&pg).await;

        // Flip one byte in the middle of the biggest file.
        let biggest = manifest.files.iter().max_by_key(|f| f.bytes).expect("files");
        let file = manifest.file_path(&folder, biggest);
        flip_byte(&file, (biggest.bytes / 2) as usize);

        let err = backup::verify(&folder, &config, Some(&pg.url("app")), &progress)
            .await
            .expect_err("verify refuses");
        assert!(matches!(err, BackupError::ChecksumMismatch { .. }), "{err}");
        let text = err.to_string();
        assert!(text.contains(&file.display().to_string()) && text.contains(&biggest.sha256), "{text}");
        assert!(text.contains("corrupt") && !err.retry_safe(), "{text}");

        let options = RestoreOptions {
            target_url: pg.url("app"),
            confirmed: true,
            rollback_of: None,
            mode: RestoreMode::Clean,
        };
        let err = backup::restore(&folder, &config, &options, &progress).await.expect_err("restore refuses");
        assert!(matches!(err, BackupError::ChecksumMismatch { .. }), "{err}");
        let options = RestoreOptions { mode: RestoreMode::Replace, ..options };
        let err = backup::restore(&folder, &config, &options, &progress).await.expect_err("restore refuses");
        assert!(matches!(err, BackupError::ChecksumMismatch { .. }), "{err}");

        assert_eq!(state(&pg).await, before, "the target database is untouched ({format:?})");
    }
}

#[tokio::test]
async fn restore_needs_confirmation_outside_a_rollback() {
    let Some(pg) = PgCluster::start() else { return };
    pg.create_database("app").await;
    seed(&pg, "app").await;
    let config = pg.backup_config("backups");
    let progress = Progress::discard();
    let manifest = backup::create(&pg.url("app"), &config, "", "r1", &progress).await.expect("backup");
    let folder = config.dir.join(&manifest.id);
    let mut app = pg.connect("app").await;
    sqlx::raw_sql("DELETE FROM events").execute(&mut app).await.expect("delete");
    drop(app);

    let mut options = RestoreOptions {
        target_url: pg.url("app"),
        confirmed: false,
        rollback_of: None,
        mode: RestoreMode::Clean,
    };
    let err = backup::restore(&folder, &config, &options, &progress).await.expect_err("needs --yes");
    assert!(matches!(err, BackupError::NotConfirmed { .. }), "{err}");
    assert!(err.to_string().contains("--yes") && err.to_string().contains("app"), "{err}");
    assert_eq!(content_checksum(&pg, "app", "events").await, "", "nothing restored");

    // A rollout's rollback needs no confirmation.
    options.rollback_of = Some("r1".into());
    let report = backup::restore(&folder, &config, &options, &progress).await.expect("rollback restore");
    assert_eq!(report.rows, manifest.tables.iter().map(|t| t.rows).sum::<i64>());
}

#[tokio::test]
async fn not_enough_space_is_refused_before_pg_dump_starts() {
    let Some(pg) = PgCluster::start() else { return };
    pg.create_database("app").await;
    seed(&pg, "app").await;

    // A pg_dump that records that it ran, then runs the real one.
    let bin = pg.dir().join("bin");
    std::fs::create_dir(&bin).expect("mkdir");
    let marker = pg.dir().join("pg_dump-started");
    let script = format!(
        "#!/bin/sh\ntouch '{}'\nexec '{}' \"$@\"\n",
        marker.display(),
        pg_bin().join("pg_dump").display()
    );
    std::fs::write(bin.join("pg_dump"), script).expect("write");
    std::fs::set_permissions(bin.join("pg_dump"), std::fs::Permissions::from_mode(0o755)).expect("chmod");

    let mut config = pg.backup_config("backups");
    config.pg_bin_dir = Some(bin);
    config.max_bytes = Some(64 * 1024); // far below 2 × the database size
    let err =
        backup::create(&pg.url("app"), &config, "", "", &Progress::discard()).await.expect_err("refused");
    let BackupError::NotEnoughSpace { free, database_bytes, needed, .. } = &err else { panic!("{err}") };
    assert_eq!(*free, 64 * 1024);
    assert_eq!(*needed, 2 * database_bytes);
    let text = err.to_string();
    assert!(
        text.contains(&format!("{free} bytes free")) && text.contains(&format!("{database_bytes} bytes")),
        "{text}"
    );
    assert!(!marker.exists(), "pg_dump never started");
    let entries = std::fs::read_dir(&config.dir).map(|d| d.count()).unwrap_or(0);
    assert_eq!(entries, 0, "no backup folder was created");

    // Same config with room: the wrapper runs, so the check above meant something.
    config.max_bytes = None;
    backup::create(&pg.url("app"), &config, "", "", &Progress::discard()).await.expect("backup with room");
    assert!(marker.exists());
}

#[tokio::test]
async fn retention_keeps_newest_and_pinned_backups() {
    let Some(pg) = PgCluster::start() else { return };
    let Some(s3) = Moto::start() else { return };
    s3.create_bucket("keep");
    pg.create_database("app").await;
    seed(&pg, "app").await;
    let mut config = pg.backup_config("backups");
    config.keep = Some(2);
    config.object_store = Some(s3.store_config("keep", ""));
    let progress = Progress::discard();

    let mut ids = Vec::new();
    for rollout in ["rollout-a", "", "", ""] {
        let m = backup::create(&pg.url("app"), &config, "", rollout, &progress).await.expect("backup");
        backup::remote::upload(&config.dir.join(&m.id), &config, &progress).await.expect("upload");
        backup::remote::prune(&config, "app", &progress).await.expect("prune remote");
        ids.push(m.id);
    }
    let local: Vec<String> =
        backup::retention::list_local(&config).expect("list").into_iter().map(|b| b.manifest.id).collect();
    let remote: Vec<String> =
        backup::remote::list(&config).await.expect("list").into_iter().map(|m| m.id).collect();
    let expected = vec![ids[0].clone(), ids[2].clone(), ids[3].clone()];
    assert_eq!(local, expected, "pinned backup of a running rollout survives");
    assert_eq!(remote, expected);

    // Once the rollout ends, its backup is an ordinary old one.
    backup::retention::unpin(&config, "rollout-a").expect("unpin");
    backup::retention::prune_local(&config, "app", &progress).expect("prune");
    backup::remote::prune(&config, "app", &progress).await.expect("prune remote");
    let local: Vec<String> =
        backup::retention::list_local(&config).expect("list").into_iter().map(|b| b.manifest.id).collect();
    assert_eq!(local, ids[2..]);
    assert_eq!(backup::remote::list(&config).await.expect("list").len(), 2);
}
