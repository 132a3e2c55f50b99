//! `backup::create` against a real PostgreSQL: the dump exists, its checksum
//! matches the manifest, `pg_restore --list` accepts it, and the manifest's
//! row counts and migrations describe the database.

mod backup_common;

use std::sync::{Arc, Mutex};

use backup_common::*;
use runway_engine::backup::{self, DumpFormat};
use runway_engine::progress::Progress;

fn recording() -> (Progress, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let progress =
        Progress::new(move |u| sink.lock().expect("lock").push(format!("{} {}", u.phase, u.message)));
    (progress, seen)
}

#[tokio::test]
async fn custom_format_backup_matches_its_manifest() {
    let Some(pg) = PgCluster::start() else { return };
    pg.create_database("app").await;
    seed(&pg, "app").await;
    let mut config = pg.backup_config("backups");
    config.format = DumpFormat::Custom;
    let (progress, seen) = recording();

    let manifest = backup::create(&pg.url("app"), &config, "before deploy", "rollout-1", &progress)
        .await
        .expect("backup");

    let folder = config.dir.join(&manifest.id);
    let dump = folder.join("dump");
    assert!(dump.is_file(), "dump file exists");
    assert_eq!(manifest.path, dump);
    assert_eq!(manifest.format, DumpFormat::Custom);
    assert_eq!(sha256_file(&dump), manifest.sha256, "checksum matches the manifest");
    assert_eq!(std::fs::metadata(&dump).expect("stat").len(), manifest.bytes);
    assert!(pg_restore_lists(&dump), "pg_restore --list accepts the dump");

    // The manifest on disk is the one returned.
    let on_disk = backup::Manifest::read(&folder).expect("manifest.json");
    assert_eq!(on_disk, manifest);
    assert_eq!(manifest.database, "app");
    assert_eq!(manifest.rollout_id, "rollout-1");
    assert_eq!(manifest.label, "before deploy");
    assert!(manifest.server_version.starts_with("15"), "{}", manifest.server_version);
    assert!(manifest.started_at <= manifest.finished_at);
    assert!(manifest.database_bytes > 0);

    // Row counts of every table, partitions counted once each.
    let counts: Vec<(String, i64)> = manifest.tables.iter().map(|t| (t.qualified(), t.rows)).collect();
    let expect = [
        ("billing.Invoice", 777),
        ("public._prisma_migrations", 3),
        ("public.accounts", 5000),
        ("public.empty_table", 0),
        ("public.events", 20000),
        (
            "public.measurements_2024",
            counts.iter().find(|c| c.0 == "public.measurements_2024").map_or(-1, |c| c.1),
        ),
    ];
    for (table, rows) in expect {
        assert!(counts.contains(&(table.to_owned(), rows)), "{table} = {rows} in {counts:?}");
    }
    let measured: i64 = counts.iter().filter(|c| c.0.starts_with("public.measurements_")).map(|c| c.1).sum();
    assert_eq!(measured, 3000);
    assert_eq!(manifest.rows_counted_in, "dump", "rows are read from the dump itself");
    assert_eq!(counts, counted(&pg, &manifest).await, "and equal count(*) in the database");
    assert!(!counts.iter().any(|c| c.0 == "public.measurements"), "partitioned parent not counted twice");

    // Migrations applied at that moment: finished ones only, in order.
    let names: Vec<&str> = manifest.migrations.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["20240101000000_init", "20240201000000_events"]);

    // No secret anywhere.
    let json = std::fs::read_to_string(folder.join("manifest.json")).expect("read");
    assert!(!json.contains(PASSWORD));
    let events = seen.lock().expect("lock").join("\n");
    assert!(!events.contains(PASSWORD));
    assert!(events.contains("dump "), "byte progress was reported: {events}");
    // Nothing half-written is left around.
    let leftovers: Vec<_> = std::fs::read_dir(&config.dir)
        .expect("list")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with(".partial"))
        .collect();
    assert!(leftovers.is_empty());
}

#[tokio::test]
async fn directory_format_hashes_every_file() {
    let Some(pg) = PgCluster::start() else { return };
    pg.create_database("app").await;
    seed(&pg, "app").await;
    let mut config = pg.backup_config("backups");
    config.format = DumpFormat::Directory;
    config.jobs = 2;

    let manifest =
        backup::create(&pg.url("app"), &config, "", "", &Progress::discard()).await.expect("backup");

    let dump = config.dir.join(&manifest.id).join("dump");
    assert!(dump.is_dir());
    assert_eq!(manifest.format, DumpFormat::Directory);
    assert_eq!(manifest.jobs, 2);
    let mut on_disk: Vec<String> = std::fs::read_dir(&dump)
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = manifest.files.iter().map(|f| f.name.clone()).collect();
    listed.sort();
    assert_eq!(on_disk, listed, "every file of the dump is in the manifest");
    assert!(listed.contains(&"toc.dat".to_owned()));
    for f in &manifest.files {
        assert_eq!(sha256_file(&dump.join(&f.name)), f.sha256, "{}", f.name);
    }
    assert_eq!(manifest.bytes, manifest.files.iter().map(|f| f.bytes).sum::<u64>());
    assert!(pg_restore_lists(&dump));
    assert_eq!(manifest.rows_counted_in, "dump", "rows are read from the dump files as they grow");
    let counts: Vec<(String, i64)> = manifest.tables.iter().map(|t| (t.qualified(), t.rows)).collect();
    assert_eq!(counts, counted(&pg, &manifest).await);
}

/// `count(*)` in the database of each table the manifest lists.
async fn counted(pg: &PgCluster, manifest: &backup::Manifest) -> Vec<(String, i64)> {
    let mut c = pg.connect(&manifest.database).await;
    let mut out = Vec::new();
    for t in &manifest.tables {
        let sql = format!("SELECT count(*) FROM \"{}\".\"{}\"", t.schema, t.table);
        let n: i64 = sqlx::query_scalar(&sql).fetch_one(&mut c).await.expect("count");
        out.push((t.qualified(), n));
    }
    out
}

/// The test restore streamed alongside the dump (custom format), and after
/// it (directory format): the proof is in the manifest, the scratch
/// database is gone, post-data by policy.
#[tokio::test]
async fn a_backup_is_proven_restorable_while_it_is_written() {
    let Some(pg) = PgCluster::start() else { return };
    pg.create_database("app").await;
    seed(&pg, "app").await;
    let cases = [
        (DumpFormat::Custom, backup::PostData::Skip, "overlapped", "skipped"),
        (DumpFormat::Custom, backup::PostData::Restore, "overlapped", "restored"),
        (DumpFormat::Directory, backup::PostData::Skip, "after_dump", "restored"),
    ];
    for (format, post_data, when, post) in cases {
        let mut config = pg.backup_config("backups");
        config.format = format;
        config.jobs = 2;
        config.test_restore_post_data = post_data;
        let url = pg.url("app");
        let (progress, seen) = recording();
        let manifest =
            backup::create_with(&url, &config, "", "", Some(&url), &progress).await.expect("backup");
        if format == DumpFormat::Custom {
            // The schema came from the front of the dump, not after all of it:
            // the rows were restored while pg_dump wrote them.
            let seen = seen.lock().expect("lock").join("\n");
            let front: u64 = seen
                .split("schema restored from the first ")
                .nth(1)
                .and_then(|rest| rest.split(' ').next())
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("no schema phase reported: {seen}"));
            assert!(front > 0 && front < manifest.bytes, "{front} of {} bytes", manifest.bytes);
        }
        let proof = manifest.verification.clone().expect("proven");
        assert_eq!((proof.when.as_str(), proof.post_data.as_str()), (when, post), "{format:?}");
        assert_eq!(proof.tables, manifest.tables.len());
        assert_eq!(proof.rows, manifest.tables.iter().map(|t| t.rows).sum::<i64>());
        assert_eq!(proof.sha256, manifest.sha256);
        let counted_in = if format == DumpFormat::Custom { "test_restore" } else { "dump" };
        assert_eq!(manifest.rows_counted_in, counted_in, "{format:?}");
        let counts: Vec<(String, i64)> = manifest.tables.iter().map(|t| (t.qualified(), t.rows)).collect();
        assert_eq!(counts, counted(&pg, &manifest).await, "{format:?}: exact");
        let on_disk = backup::Manifest::read(&config.dir.join(&manifest.id)).expect("manifest");
        // JSON keeps a float to about 16 digits, not always bit for bit.
        let mut recorded = on_disk.verification.expect("recorded in manifest.json");
        assert!((recorded.seconds - proof.seconds).abs() < 1e-6, "{} vs {}", recorded.seconds, proof.seconds);
        recorded.seconds = proof.seconds;
        assert_eq!(recorded, proof, "recorded in manifest.json");
    }
    let mut admin = pg.connect("postgres").await;
    let leftover: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_database WHERE datname LIKE 'runway_verify_%'")
            .fetch_one(&mut admin)
            .await
            .expect("query");
    assert_eq!(leftover, 0, "scratch databases are dropped");
}
