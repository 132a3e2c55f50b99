//! Must-show 1: a folder full of real-history quirks deployed against a real
//! PostgreSQL, `_prisma_migrations` checked field by field against what
//! Prisma writes, then modified / failed / resolved histories.

mod common;

use std::path::Path;

use runway_engine::migrate::source::read_folder;
use runway_engine::migrate::{self, MigrateConfig, MigrateError, ResolveAction, checksum, status::Verdict};
use runway_engine::progress::{Progress, Update};
use runway_proto::bundle::{self, MigrationFile};
use sha2::{Digest, Sha256};

fn load(dir: &Path) -> Vec<MigrationFile> {
    bundle::migrations(&read_folder(dir).expect("folder reads")).expect("bundle is valid")
}

use common::fixtures::{INIT, crlf, quirks};

#[derive(sqlx::FromRow, Debug)]
struct Row {
    id: String,
    checksum: String,
    finished_at: Option<chrono::DateTime<chrono::Utc>>,
    migration_name: String,
    logs: Option<String>,
    rolled_back_at: Option<chrono::DateTime<chrono::Utc>>,
    started_at: chrono::DateTime<chrono::Utc>,
    applied_steps_count: i32,
}

async fn table_rows(url: &str) -> Vec<Row> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    sqlx::query_as("SELECT * FROM _prisma_migrations ORDER BY started_at, migration_name")
        .fetch_all(&mut conn)
        .await
        .unwrap()
}

fn is_uuid_v4(id: &str) -> bool {
    uuid::Uuid::parse_str(id)
        .map(|u| u.get_version_num() == 4 && u.hyphenated().to_string() == id)
        .unwrap_or(false)
}

#[tokio::test]
async fn deploys_prisma_quirks_and_writes_rows_like_prisma() {
    let pg = common::Cluster::start_temp();
    let url = pg.create_database("roundtrip");
    let dir = quirks();
    let migrations = load(dir.path());
    let names: Vec<_> = migrations.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names[1], "20240102 add functions");
    assert_eq!(names[8], "v2-no-digits");

    let updates = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Update>::new()));
    let sink = updates.clone();
    let progress = Progress::new(move |u| sink.lock().unwrap().push(u));
    let report =
        migrate::deploy(&url, &migrations, &MigrateConfig::default(), &progress).await.expect("deploy");
    assert_eq!(report.applied, names);
    assert_eq!(report.already_applied, 0);
    // One "applied" event per migration, with index / total.
    let applied_events: Vec<_> = updates
        .lock()
        .unwrap()
        .iter()
        .filter(|u| u.message.starts_with("applied "))
        .map(|u| (u.message.clone(), u.counters.unwrap()))
        .collect();
    assert_eq!(applied_events.len(), names.len());
    for (i, (message, counters)) in applied_events.iter().enumerate() {
        assert!(message.contains(names[i]) && message.contains(" ms"), "{message}");
        assert_eq!(
            (counters.done, counters.total, counters.unit),
            (i as u64 + 1, names.len() as u64, "migrations")
        );
    }

    // The table is Prisma's.
    let columns = pg.psql(
        "roundtrip",
        "SELECT string_agg(column_name || ':' || data_type || ':' || coalesce(character_maximum_length::text, '') || ':' || \
         is_nullable || ':' || coalesce(column_default, ''), ',' ORDER BY ordinal_position) \
         FROM information_schema.columns WHERE table_name = '_prisma_migrations'",
    );
    assert_eq!(
        columns.trim(),
        "id:character varying:36:NO:,checksum:character varying:64:NO:,finished_at:timestamp with time zone::YES:,\
         migration_name:character varying:255:NO:,logs:text::YES:,rolled_back_at:timestamp with time zone::YES:,\
         started_at:timestamp with time zone::NO:now(),applied_steps_count:integer::NO:0"
    );
    assert_eq!(
        pg.psql("roundtrip", "SELECT conname || ':' || contype::text FROM pg_constraint WHERE conrelid = '_prisma_migrations'::regclass").trim(),
        "_prisma_migrations_pkey:p"
    );

    // Rows, field by field.
    let rows = table_rows(&url).await;
    assert_eq!(rows.len(), migrations.len());
    for (row, m) in rows.iter().zip(&migrations) {
        assert_eq!(row.migration_name, m.name);
        assert!(is_uuid_v4(&row.id), "{}", row.id);
        assert_eq!(row.checksum, hex::encode(Sha256::digest(m.sql.as_bytes())), "{}", m.name);
        assert_eq!(row.checksum, checksum::checksum(&m.sql));
        assert!(row.finished_at.unwrap() >= row.started_at);
        assert_eq!(row.logs, None);
        assert_eq!(row.rolled_back_at, None);
        assert_eq!(row.applied_steps_count, 1);
    }
    // Started in order, one after the other.
    assert!(rows.windows(2).all(|w| w[0].finished_at.unwrap() <= w[1].started_at));

    // The SQL really ran, quirks included.
    assert_eq!(pg.psql("roundtrip", "SELECT email FROM \"User\"").trim(), "semi;colon@example.com");
    // The trigger from the dollar-quoted function fired on the later UPDATE.
    assert!(pg.psql("roundtrip", "SELECT note FROM \"User\"").starts_with("touched; at "));
    assert_eq!(pg.psql("roundtrip", "SELECT mood FROM \"User\"").trim(), "meh");
    assert_eq!(pg.psql("roundtrip", "SELECT count(*) FROM pg_type WHERE typname = 'Role'").trim(), "1");
    assert_eq!(
        pg.psql("roundtrip", "SELECT indexrelid::regclass::text || ':' || indisvalid FROM pg_index WHERE indrelid = '\"Post\"'::regclass AND NOT indisprimary").trim(),
        "\"Post_author_idx\":true"
    );
    assert_eq!(
        pg.psql("roundtrip", "SELECT count(*) FROM pg_class WHERE relname = 'User_note_idx'").trim(),
        "0"
    );
    assert_eq!(pg.psql("roundtrip", "SELECT post_count()").trim(), "1");
    assert_eq!(pg.psql("roundtrip", "SELECT count(*) FROM \"Tag\"").trim(), "1");
    assert_eq!(
        pg.psql("roundtrip", "SELECT count(*) FROM information_schema.columns WHERE table_name = 'odd'")
            .trim(),
        "2"
    );

    // Nothing left to do; status agrees.
    let again =
        migrate::deploy(&url, &migrations, &MigrateConfig::default(), &Progress::discard()).await.unwrap();
    assert!(again.applied.is_empty());
    assert_eq!(again.already_applied, migrations.len());
    let status = migrate::status(&url, &migrations).await.unwrap();
    assert!(status.is_up_to_date(), "{status:?}");
    assert_eq!(status.applied.len(), migrations.len());

    // Line endings flipped (git autocrlf) is not a modification...
    std::fs::write(dir.path().join("20240101000000_init/migration.sql"), crlf(INIT)).unwrap();
    std::fs::write(dir.path().join("20240106_crlf/migration.sql"), crlf("-- written on Windows\nCREATE TABLE \"Crlf\" (\n  id INT\n);\nCOMMENT ON TABLE \"Crlf\" IS 'line\nbreak';\n").replace("\r\n", "\n")).unwrap();
    let status = migrate::status(&url, &load(dir.path())).await.unwrap();
    assert!(status.is_up_to_date(), "{status:?}");

    // ...but a changed statement is.
    std::fs::write(dir.path().join("3_odd_prefix/migration.sql"), "CREATE TABLE odd (id bigint);").unwrap();
    let status = migrate::status(&url, &load(dir.path())).await.unwrap();
    assert_eq!(status.modified, ["3_odd_prefix"]);
    assert_eq!(status.verdict(), Verdict::Diverged);
    std::fs::write(dir.path().join("3_odd_prefix/migration.sql"), "CREATE TABLE odd (id int);").unwrap();

    // Applied but missing locally.
    std::fs::remove_dir_all(dir.path().join("v2-no-digits")).unwrap();
    let status = migrate::status(&url, &load(dir.path())).await.unwrap();
    assert_eq!(status.missing_locally, ["v2-no-digits"]);
}

#[tokio::test]
async fn a_failed_migration_blocks_deploy_until_resolved() {
    let pg = common::Cluster::start_temp();
    let url = pg.create_database("failing");
    let dir = common::folder(&[
        ("1_ok/migration.sql", b"CREATE TABLE a (id int);"),
        ("2_broken/migration.sql", b"CREATE TABLE b (id int);\n\nINSERT INTO missing_table VALUES (1);\n"),
        ("3_after/migration.sql", b"CREATE TABLE c (id int);"),
    ]);
    let config = MigrateConfig::default();
    let err = migrate::deploy(&url, &load(dir.path()), &config, &Progress::discard()).await.unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(&err, MigrateError::Failed { name, line: Some(3), code, database_changed: true, .. } if name == "2_broken" && code == "42P01"),
        "{err:?}"
    );
    assert!(
        text.contains("2_broken") && text.contains("relation \"missing_table\" does not exist"),
        "{text}"
    );
    assert!(!err.retry_is_safe());

    let rows = table_rows(&url).await;
    assert_eq!(rows.len(), 2);
    let broken = &rows[1];
    assert_eq!(broken.migration_name, "2_broken");
    assert_eq!(broken.finished_at, None);
    assert_eq!(broken.rolled_back_at, None);
    assert_eq!(broken.applied_steps_count, 0);
    let logs = broken.logs.as_deref().unwrap();
    assert!(
        logs.contains("Migration name: 2_broken") && logs.contains("Database error code: 42P01"),
        "{logs}"
    );
    assert!(logs.contains("relation \"missing_table\" does not exist"), "{logs}");
    // The implicit transaction rolled back the CREATE TABLE before the error.
    assert_eq!(pg.psql("failing", "SELECT count(*) FROM pg_class WHERE relname = 'b'").trim(), "0");

    let status = migrate::status(&url, &load(dir.path())).await.unwrap();
    assert_eq!(status.failed.len(), 1);
    assert_eq!(status.verdict(), Verdict::Failed);

    // Prisma's behaviour: refuse while the failure is unresolved.
    let err = migrate::deploy(&url, &load(dir.path()), &config, &Progress::discard()).await.unwrap_err();
    assert!(
        matches!(&err, MigrateError::FailedMigrationsPresent { names, .. } if names == &["2_broken"]),
        "{err:?}"
    );
    assert!(err.to_string().contains("2_broken"));

    // resolve --rolled-back on a migration that is fine is refused.
    let err = migrate::resolve(&url, &load(dir.path()), &ResolveAction::RolledBack("1_ok".into()), &config)
        .await
        .unwrap_err();
    assert!(matches!(err, MigrateError::NotFailed { .. }), "{err:?}");

    migrate::resolve(&url, &load(dir.path()), &ResolveAction::RolledBack("2_broken".into()), &config)
        .await
        .unwrap();
    let rows_now = table_rows(&url).await;
    assert!(rows_now[1].rolled_back_at.is_some());

    std::fs::write(dir.path().join("2_broken/migration.sql"), "CREATE TABLE b (id int);\n").unwrap();
    let report = migrate::deploy(&url, &load(dir.path()), &config, &Progress::discard()).await.unwrap();
    assert_eq!(report.applied, ["2_broken", "3_after"]);
    let rows = table_rows(&url).await;
    assert_eq!(rows.len(), 4);
    let fixed = rows.iter().find(|r| r.migration_name == "2_broken" && r.finished_at.is_some()).unwrap();
    assert_eq!((fixed.applied_steps_count, fixed.logs.as_deref()), (1, None));
    assert!(migrate::status(&url, &load(dir.path())).await.unwrap().is_up_to_date());
}

#[tokio::test]
async fn resolve_applied_baselines_like_prisma() {
    let pg = common::Cluster::start_temp();
    let url = pg.create_database("baseline");
    pg.psql("baseline", "CREATE TABLE legacy (id int)");
    let dir = common::folder(&[
        ("0_init/migration.sql", b"CREATE TABLE legacy (id int);"),
        ("1_next/migration.sql", b"ALTER TABLE legacy ADD COLUMN name text;"),
    ]);
    let config = MigrateConfig::default();
    let err = migrate::deploy(&url, &load(dir.path()), &config, &Progress::discard()).await.unwrap_err();
    assert!(matches!(err, MigrateError::SchemaNotEmpty { .. }), "{err:?}");
    assert!(err.to_string().contains("legacy"));

    migrate::resolve(&url, &load(dir.path()), &ResolveAction::Applied("0_init".into()), &config)
        .await
        .unwrap();
    let rows = table_rows(&url).await;
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert_eq!(row.logs.as_deref(), Some(""));
    assert_eq!(row.finished_at, Some(row.started_at));
    assert_eq!(row.applied_steps_count, 0);
    assert!(is_uuid_v4(&row.id));

    let err = migrate::resolve(&url, &load(dir.path()), &ResolveAction::Applied("0_init".into()), &config)
        .await
        .unwrap_err();
    assert!(matches!(err, MigrateError::AlreadyApplied { .. }));
    let err = migrate::resolve(&url, &load(dir.path()), &ResolveAction::Applied("nope".into()), &config)
        .await
        .unwrap_err();
    assert!(matches!(err, MigrateError::NotFound { .. }));

    let report = migrate::deploy(&url, &load(dir.path()), &config, &Progress::discard()).await.unwrap();
    assert_eq!(report.applied, ["1_next"]);
}

#[tokio::test]
async fn lock_timeout_and_statement_timeout_apply_to_migrations() {
    use sqlx::Connection;
    let pg = common::Cluster::start_temp();
    let url = pg.create_database("timeouts");
    let dir = common::folder(&[("1_a/migration.sql", b"CREATE TABLE a (id int);")]);
    migrate::deploy(&url, &load(dir.path()), &MigrateConfig::default(), &Progress::discard()).await.unwrap();

    // Another session holds a lock the migration needs.
    let mut other = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::raw_sql("BEGIN; LOCK TABLE a IN ACCESS SHARE MODE;").execute(&mut other).await.unwrap();
    let dir = common::folder(&[
        ("1_a/migration.sql", b"CREATE TABLE a (id int);"),
        ("2_b/migration.sql", b"ALTER TABLE a ADD COLUMN b int;"),
    ]);
    let config = MigrateConfig { lock_timeout: std::time::Duration::from_millis(300), ..Default::default() };
    let started = std::time::Instant::now();
    let err = migrate::deploy(&url, &load(dir.path()), &config, &Progress::discard()).await.unwrap_err();
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    assert!(
        matches!(&err, MigrateError::Failed { name, code, .. } if name == "2_b" && code == "55P03"),
        "{err:?}"
    );
    assert!(err.to_string().contains("lock timeout"), "{err}");
    sqlx::raw_sql("ROLLBACK").execute(&mut other).await.unwrap();
    migrate::resolve(&url, &load(dir.path()), &ResolveAction::RolledBack("2_b".into()), &config)
        .await
        .unwrap();
    migrate::deploy(&url, &load(dir.path()), &config, &Progress::discard()).await.unwrap();

    let dir = common::folder(&[
        ("1_a/migration.sql", b"CREATE TABLE a (id int);"),
        ("2_b/migration.sql", b"ALTER TABLE a ADD COLUMN b int;"),
        ("3_slow/migration.sql", b"SELECT pg_sleep(10);"),
    ]);
    let config =
        MigrateConfig { statement_timeout: std::time::Duration::from_millis(300), ..Default::default() };
    let err = migrate::deploy(&url, &load(dir.path()), &config, &Progress::discard()).await.unwrap_err();
    assert!(
        matches!(&err, MigrateError::Failed { name, code, .. } if name == "3_slow" && code == "57014"),
        "{err:?}"
    );
}

#[tokio::test]
async fn honours_prismas_schema_parameter_even_when_a_migration_moves_search_path() {
    let pg = common::Cluster::start_temp();
    let url = format!("{}?schema=tenant_1&connection_limit=5", pg.create_database("schemas"));
    let dir = common::folder(&[
        ("1_a/migration.sql", b"CREATE TABLE a (id int);"),
        (
            "2_switch/migration.sql",
            b"CREATE SCHEMA elsewhere;\nSET search_path TO elsewhere;\nCREATE TABLE b (id int);\n",
        ),
        ("3_c/migration.sql", b"CREATE TABLE tenant_1.c (id int);"),
    ]);
    let report = migrate::deploy(&url, &load(dir.path()), &MigrateConfig::default(), &Progress::discard())
        .await
        .unwrap();
    assert_eq!(report.applied.len(), 3);
    assert_eq!(
        pg.psql("schemas", "SELECT count(*) FROM tenant_1._prisma_migrations WHERE finished_at IS NOT NULL")
            .trim(),
        "3"
    );
    assert_eq!(
        pg.psql("schemas", "SELECT count(*) FROM pg_tables WHERE tablename = '_prisma_migrations'").trim(),
        "1"
    );
    assert_eq!(
        pg.psql("schemas", "SELECT string_agg(schemaname || '.' || tablename, ',' ORDER BY tablename) FROM pg_tables WHERE tablename IN ('a', 'b', 'c')").trim(),
        "tenant_1.a,elsewhere.b,tenant_1.c"
    );
    assert!(migrate::status(&url, &load(dir.path())).await.unwrap().is_up_to_date());
}

/// What a rollback needs to know: whether the failed deploy changed the
/// database. A failing first migration run in one transaction did not; one
/// sent in parts did, once an earlier part was committed.
#[tokio::test]
async fn a_failed_deploy_says_whether_it_changed_the_database() {
    let pg = common::Cluster::start_temp();
    let config = MigrateConfig::default();

    let url = pg.create_database("atomic");
    let dir = common::folder(&[(
        "1_broken/migration.sql",
        b"CREATE TABLE a (id int);
INSERT INTO nope VALUES (1);
",
    )]);
    let err = migrate::deploy(&url, &load(dir.path()), &config, &Progress::discard()).await.unwrap_err();
    assert!(matches!(err, MigrateError::Failed { database_changed: false, .. }), "{err:?}");
    assert_eq!(pg.psql("atomic", "SELECT count(*) FROM pg_class WHERE relname = 'a'").trim(), "0");

    let url = pg.create_database("in_parts");
    let dir = common::folder(&[(
        "1_parts/migration.sql",
        b"CREATE TABLE a (id int);
CREATE INDEX CONCURRENTLY a_id ON a (id);
INSERT INTO nope VALUES (1);
",
    )]);
    let err = migrate::deploy(&url, &load(dir.path()), &config, &Progress::discard()).await.unwrap_err();
    assert!(matches!(err, MigrateError::Failed { database_changed: true, .. }), "{err:?}");
    assert_eq!(pg.psql("in_parts", "SELECT count(*) FROM pg_class WHERE relname = 'a'").trim(), "1");
}
