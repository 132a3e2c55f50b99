//! Downs on a real PostgreSQL: `plan` proves each pending migration's
//! `down.sql` on a scratch schema-only copy, and `down::undo` rolls
//! applied migrations back by them, keeping the rows written since.
//!
//! Each test starts a cluster of its own, so that the check for leftover
//! `runway_prove_*` databases cannot see another test's proof.

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use runway_engine::database::Database;
use runway_engine::migrate::down::{self, Target};
use runway_engine::migrate::prove::DROPS_EXISTING;
use runway_engine::migrate::schema::{self, Schema};
use runway_engine::migrate::source::read_folder;
use runway_engine::migrate::{self, DownState, MigrateConfig, MigrateError, lint::Severity};
use runway_engine::progress::{Progress, Update};
use runway_proto::bundle::{self, MigrationFile};

/// A Prisma history: an enum, `User` with a unique index, `Post` with an
/// index and a foreign key to `User`, a column added with its index, a
/// second enum used by a new column. Each with the down a person writes.
const INIT: &str = r#"-- CreateEnum
CREATE TYPE "Role" AS ENUM ('USER', 'ADMIN');

-- CreateTable
CREATE TABLE "User" (
    "id" SERIAL NOT NULL,
    "email" TEXT NOT NULL,
    "role" "Role" NOT NULL DEFAULT 'USER',
    "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "User_pkey" PRIMARY KEY ("id")
);

-- CreateIndex
CREATE UNIQUE INDEX "User_email_key" ON "User"("email");
"#;

const INIT_DOWN: &str = "-- DropTable\nDROP TABLE \"User\";\n\n-- DropEnum\nDROP TYPE \"Role\";\n";

const POSTS: &str = r#"-- CreateTable
CREATE TABLE "Post" (
    "id" SERIAL NOT NULL,
    "title" TEXT NOT NULL,
    "published" BOOLEAN NOT NULL DEFAULT false,
    "authorId" INTEGER NOT NULL,

    CONSTRAINT "Post_pkey" PRIMARY KEY ("id")
);

-- CreateIndex
CREATE INDEX "Post_authorId_idx" ON "Post"("authorId");

-- AddForeignKey
ALTER TABLE "Post" ADD CONSTRAINT "Post_authorId_fkey" FOREIGN KEY ("authorId") REFERENCES "User"("id") ON DELETE RESTRICT ON UPDATE CASCADE;
"#;

const POSTS_DOWN: &str = "-- DropForeignKey\nALTER TABLE \"Post\" DROP CONSTRAINT \"Post_authorId_fkey\";\n\n\
    -- DropTable\nDROP TABLE \"Post\";\n";

const USER_NAME: &str = "-- AlterTable\nALTER TABLE \"User\" ADD COLUMN \"name\" TEXT;\n\n\
    -- CreateIndex\nCREATE INDEX \"User_name_idx\" ON \"User\"(\"name\");\n";

const USER_NAME_DOWN: &str = "-- DropIndex\nDROP INDEX \"User_name_idx\";\n\n-- AlterTable\nALTER TABLE \"User\" DROP COLUMN \"name\";\n";

const POST_STATUS: &str = "-- CreateEnum\nCREATE TYPE \"Status\" AS ENUM ('DRAFT', 'LIVE');\n\n\
    -- AlterTable\nALTER TABLE \"Post\" ADD COLUMN \"status\" \"Status\" NOT NULL DEFAULT 'DRAFT';\n";

const POST_STATUS_DOWN: &str =
    "-- AlterTable\nALTER TABLE \"Post\" DROP COLUMN \"status\";\n\n-- DropEnum\nDROP TYPE \"Status\";\n";

/// The realistic history, every migration with its down.
const HISTORY: &[(&str, &str, Option<&str>)] = &[
    ("20240101000000_init", INIT, Some(INIT_DOWN)),
    ("20240102000000_posts", POSTS, Some(POSTS_DOWN)),
    ("20240103000000_user_name", USER_NAME, Some(USER_NAME_DOWN)),
    ("20240104000000_post_status", POST_STATUS, Some(POST_STATUS_DOWN)),
];

fn pg_dump() -> PathBuf {
    runway_tests::postgres::pg_bin().join("pg_dump")
}

/// Writes `(name, migration.sql, down.sql)` as a Prisma folder and reads it
/// back as the CLI does.
fn plan_options(pg_dump: &Path) -> migrate::PlanOptions<'_> {
    static DATA: std::sync::LazyLock<migrate::PredictConfig> = std::sync::LazyLock::new(Default::default);
    migrate::PlanOptions { pg_dump, data: &DATA }
}

fn migrations(history: &[(&str, &str, Option<&str>)]) -> Vec<MigrationFile> {
    let mut files: Vec<(String, Vec<u8>)> =
        vec![("migration_lock.toml".into(), b"provider = \"postgresql\"\n".to_vec())];
    for (name, sql, down) in history {
        files.push((format!("{name}/migration.sql"), sql.as_bytes().to_vec()));
        if let Some(down) = down {
            files.push((format!("{name}/down.sql"), down.as_bytes().to_vec()));
        }
    }
    let files: Vec<(&str, &[u8])> = files.iter().map(|(p, c)| (p.as_str(), c.as_slice())).collect();
    let dir = common::folder(&files);
    load(dir.path())
}

fn load(dir: &Path) -> Vec<MigrationFile> {
    bundle::migrations(&read_folder(dir).expect("folder reads")).expect("bundle is valid")
}

/// `(migration, state, detail)` of each proven down.
fn states(downs: &migrate::DownsReport) -> Vec<(&str, DownState, &str)> {
    downs.downs.iter().map(|d| (d.migration.as_str(), d.state, d.detail.as_str())).collect()
}

async fn deploy(url: &str, migrations: &[MigrationFile]) {
    migrate::deploy(url, migrations, &MigrateConfig::default(), &Progress::discard()).await.expect("deploy");
}

async fn dump(url: &str) -> Schema {
    let database = Database::parse(url).expect("url parses");
    schema::dump(&database, &pg_dump()).await.expect("pg_dump")
}

/// The proofs' scratch databases still on the server.
fn scratch_databases(pg: &common::Cluster) -> String {
    pg.psql(
        "postgres",
        "SELECT string_agg(datname, ',') FROM pg_database WHERE datname LIKE 'runway_prove_%'",
    )
}

/// `migration_name:finished:rolled_back` per row of `_prisma_migrations`.
fn bookkeeping(pg: &common::Cluster, database: &str) -> Vec<String> {
    pg.psql(
        database,
        "SELECT migration_name || ':' || (finished_at IS NOT NULL) || ':' || (rolled_back_at IS NOT NULL) \
         FROM _prisma_migrations ORDER BY started_at, migration_name",
    )
    .lines()
    .map(str::to_owned)
    .collect()
}

fn recorder() -> (Progress, Arc<Mutex<Vec<Update>>>) {
    let updates = Arc::new(Mutex::new(Vec::<Update>::new()));
    let sink = updates.clone();
    (Progress::new(move |u| sink.lock().expect("not poisoned").push(u)), updates)
}

#[tokio::test]
async fn plan_proves_every_down_of_a_realistic_history() {
    let pg = common::Cluster::start_temp();
    let url = pg.create_database("app");
    let history = migrations(HISTORY);

    // Everything pending on an empty database.
    let plan = migrate::plan(&url, &history, plan_options(&pg_dump())).await.expect("plan");
    assert_eq!(plan.pending.len(), 4);
    let names: Vec<&str> = HISTORY.iter().map(|(n, ..)| *n).collect();
    assert_eq!(
        states(&plan.downs),
        names.iter().map(|n| (*n, DownState::Proven, "")).collect::<Vec<_>>(),
        "{:#?}",
        plan.downs
    );
    assert!(plan.downs.all_proven());
    assert!(plan.downs.ms > 0, "proving took no time at all: {:?}", plan.downs.ms);
    assert!(plan.downs.dangers.is_empty(), "{:?}", plan.downs.dangers);
    assert!(!plan.lint.findings.iter().any(|f| f.rule == DROPS_EXISTING), "{:?}", plan.lint.findings);
    assert_eq!(scratch_databases(&pg), "", "the proof's scratch database is left behind");
    // Proving touched neither the schema nor the bookkeeping of the live database.
    assert_eq!(
        pg.psql(
            "app",
            "SELECT count(*) FROM pg_class WHERE relname IN ('User', 'Post', '_prisma_migrations')"
        ),
        "0"
    );

    // Part applied: the copy holds the live schema, the rest is proven on it.
    deploy(&url, &history[..2]).await;
    pg.psql("app", "INSERT INTO \"User\" (email) VALUES ('ada@example.com')");
    let plan = migrate::plan(&url, &history, plan_options(&pg_dump())).await.expect("plan");
    assert_eq!(plan.pending, names[2..]);
    assert_eq!(
        states(&plan.downs),
        [(names[2], DownState::Proven, ""), (names[3], DownState::Proven, "")],
        "{:#?}",
        plan.downs
    );
    assert_eq!(scratch_databases(&pg), "");
    // The serde form the CLI prints with --output json.
    let json = serde_json::to_value(&plan).expect("serialises");
    assert_eq!(json["downs"]["downs"][0]["migration"], names[2]);
    assert_eq!(json["downs"]["downs"][0]["state"], "proven");
}

#[tokio::test]
async fn a_down_that_forgets_an_object_differs_and_names_it() {
    let pg = common::Cluster::start_temp();
    let url = pg.create_database("app");
    let history = migrations(&[
        ("1_init", INIT, Some(INIT_DOWN)),
        (
            "2_forgets_index",
            "ALTER TABLE \"User\" ADD COLUMN \"nickname\" TEXT;\nCREATE INDEX \"User_createdAt_idx\" ON \"User\"(\"createdAt\");\n",
            Some("ALTER TABLE \"User\" DROP COLUMN \"nickname\";\n"),
        ),
        (
            "3_forgets_column",
            "ALTER TABLE \"User\" ADD COLUMN \"bio\" TEXT;\nCREATE INDEX \"User_role_idx\" ON \"User\"(\"role\");\n",
            Some("DROP INDEX \"User_role_idx\";\n"),
        ),
        // Proven on its own, from where the two before it left the copy.
        ("4_user_name", USER_NAME, Some(USER_NAME_DOWN)),
    ]);
    let plan = migrate::plan(&url, &history, plan_options(&pg_dump())).await.expect("plan");
    assert_eq!(
        states(&plan.downs),
        [
            ("1_init", DownState::Proven, ""),
            ("2_forgets_index", DownState::Differs, "extra INDEX public.User_createdAt_idx"),
            ("3_forgets_column", DownState::Differs, "changed TABLE public.User"),
            ("4_user_name", DownState::Proven, ""),
        ],
        "{:#?}",
        plan.downs
    );
    assert!(!plan.downs.all_proven());
    assert_eq!(scratch_databases(&pg), "");
}

#[tokio::test]
async fn a_down_with_an_sql_error_fails_and_the_next_is_still_proven() {
    let pg = common::Cluster::start_temp();
    let url = pg.create_database("app");
    let typo = "-- DropTable\nDROP TABLE \"Posts\";\n";
    let history = migrations(&[
        ("1_init", INIT, Some(INIT_DOWN)),
        ("2_posts", POSTS, Some(typo)),
        ("3_user_name", USER_NAME, Some(USER_NAME_DOWN)),
    ]);
    let plan = migrate::plan(&url, &history, plan_options(&pg_dump())).await.expect("plan");
    let got = states(&plan.downs);
    assert_eq!(got.len(), 3, "{got:?}");
    assert_eq!(got[0], ("1_init", DownState::Proven, ""));
    let (name, state, detail) = got[1];
    assert_eq!((name, state), ("2_posts", DownState::Fails), "{detail}");
    // The database's own error (the server gives no position for it, so no line).
    assert!(detail.contains("table \"Posts\" does not exist (SQLSTATE 42P01)"), "{detail}");
    // The copy was rebuilt from the dump before the failed down.
    assert_eq!(got[2], ("3_user_name", DownState::Proven, ""));
    assert_eq!(scratch_databases(&pg), "");
}

#[tokio::test]
async fn a_migration_without_a_down_is_missing() {
    let pg = common::Cluster::start_temp();
    let url = pg.create_database("app");
    let history = migrations(&[
        ("1_init", INIT, Some(INIT_DOWN)),
        ("2_posts", POSTS, None),
        ("3_user_name", USER_NAME, Some(USER_NAME_DOWN)),
    ]);
    let plan = migrate::plan(&url, &history, plan_options(&pg_dump())).await.expect("plan");
    assert_eq!(
        states(&plan.downs),
        [
            ("1_init", DownState::Proven, ""),
            ("2_posts", DownState::Missing, "no down.sql"),
            // Proven on the schema 2_posts left: it ran up only.
            ("3_user_name", DownState::Proven, ""),
        ],
        "{:#?}",
        plan.downs
    );

    // No down at all: nothing to prove, no scratch database.
    let bare = migrations(&[("1_init", INIT, None), ("2_posts", POSTS, None)]);
    let plan = migrate::plan(&url, &bare, plan_options(&pg_dump())).await.expect("plan");
    assert_eq!(
        states(&plan.downs),
        [("1_init", DownState::Missing, "no down.sql"), ("2_posts", DownState::Missing, "no down.sql")]
    );
    assert_eq!(plan.downs.ms, 0);
    assert_eq!(scratch_databases(&pg), "");
}

#[tokio::test]
async fn a_down_that_drops_an_existing_column_is_a_danger() {
    let pg = common::Cluster::start_temp();
    let url = pg.create_database("app");
    // The lazy way back from a type change: drop the column and add it as
    // it was. The schema comes back, the column's data does not.
    let lazy = "-- recreate the column as it was\n\
        ALTER TABLE \"User\" DROP COLUMN \"createdAt\";\n\
        ALTER TABLE \"User\" ADD COLUMN \"createdAt\" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP;\n";
    let history = migrations(&[
        ("1_init", INIT, Some(INIT_DOWN)),
        (
            "2_created_tz",
            "ALTER TABLE \"User\" ALTER COLUMN \"createdAt\" TYPE TIMESTAMPTZ(3);\n",
            Some(lazy),
        ),
        ("3_user_name", USER_NAME, Some(USER_NAME_DOWN)),
    ]);
    let plan = migrate::plan(&url, &history, plan_options(&pg_dump())).await.expect("plan");
    assert!(plan.downs.all_proven(), "{:#?}", plan.downs);
    // Only the lazy down: 1_init's DROP TABLE and 3_user_name's DROP
    // COLUMN drop what their own migration created.
    let dangers: Vec<_> = plan.lint.findings.iter().filter(|f| f.rule == DROPS_EXISTING).collect();
    assert_eq!(dangers.len(), 1, "{dangers:#?}");
    let danger = dangers[0];
    assert_eq!((danger.migration.as_str(), danger.line), ("2_created_tz", 2));
    assert_eq!(danger.severity, Severity::Danger);
    assert_eq!(danger.table.as_deref(), Some("User"));
    assert!(danger.message.contains("column User.createdAt"), "{}", danger.message);
    assert_eq!(plan.downs.dangers.len(), 1);
    assert_eq!(plan.downs.dangers[0].column.as_deref(), Some("createdAt"));
    assert!(!plan.safe_without_maintenance);
    assert!(plan.reasons.iter().any(|r| r.contains(DROPS_EXISTING)), "{:?}", plan.reasons);
    assert_eq!(scratch_databases(&pg), "");
}

#[tokio::test]
async fn undo_keeps_rows_written_since_and_restores_the_schema() {
    let pg = common::Cluster::start_temp();
    let url = pg.create_database("app");
    let history = migrations(HISTORY);
    let names: Vec<&str> = HISTORY.iter().map(|(n, ..)| *n).collect();
    deploy(&url, &history[..1]).await;
    pg.psql("app", "INSERT INTO \"User\" (email) VALUES ('ada@example.com'), ('bob@example.com')");
    let before = dump(&url).await;

    // The rollout, and the app writing with the new schema.
    deploy(&url, &history).await;
    pg.psql("app", "INSERT INTO \"User\" (email, name) VALUES ('grace@example.com', 'Grace')");
    pg.psql(
        "app",
        "UPDATE \"User\" SET email = 'bob@example.org', name = 'Bob' WHERE email = 'bob@example.com'",
    );
    pg.psql(
        "app",
        "INSERT INTO \"Post\" (title, \"authorId\", status) SELECT 'hello', id, 'LIVE' FROM \"User\"",
    );
    assert_ne!(dump(&url).await, before);

    let (progress, updates) = recorder();
    let report = down::undo(
        &url,
        &history,
        &Target::Count(3),
        Some(&before),
        &pg_dump(),
        &MigrateConfig::default(),
        &progress,
    )
    .await
    .expect("undo");
    assert_eq!(report.undone, [names[3], names[2], names[1]]);
    assert_eq!(report.durations_ms.len(), 3);
    assert!(report.proof.all_proven(), "{:#?}", report.proof);
    assert_eq!(report.proof.downs.len(), 3);
    assert_eq!(report.schema_checked, "equal to the schema before the migrations ran");

    // The schema is the one before the deploy, byte for byte.
    assert_eq!(dump(&url).await, before);
    // The rows written since into a table that existed before are kept.
    assert_eq!(
        pg.psql("app", "SELECT string_agg(email, ',' ORDER BY id) FROM \"User\""),
        "ada@example.com,bob@example.org,grace@example.com"
    );
    // Prisma's bookkeeping: the undone rows are rolled back, the rest stays applied.
    assert_eq!(
        bookkeeping(&pg, "app"),
        [
            format!("{}:true:false", names[0]),
            format!("{}:true:true", names[1]),
            format!("{}:true:true", names[2]),
            format!("{}:true:true", names[3]),
        ]
    );
    let status = migrate::status(&url, &history).await.expect("status");
    assert_eq!(status.applied, [names[0]]);
    assert_eq!(status.pending, names[1..]);
    assert!(status.failed.is_empty() && status.modified.is_empty(), "{status:?}");
    assert_eq!(scratch_databases(&pg), "", "the proof's scratch database is left behind");
    let phases: Vec<String> = updates.lock().unwrap().iter().map(|u| u.phase.clone()).collect();
    for phase in ["lock", "prove", "down", "verify"] {
        assert!(phases.iter().any(|p| p == phase), "no {phase} progress in {phases:?}");
    }

    // Deploy applies the rolled-back migrations again, as Prisma does; an
    // undo without a saved schema checks against the folder's history
    // replayed (the live schema is exactly that history).
    deploy(&url, &history).await;
    let report = down::undo(
        &url,
        &history,
        &Target::To(names[2].into()),
        None,
        &pg_dump(),
        &MigrateConfig::default(),
        &Progress::discard(),
    )
    .await
    .expect("undo to");
    assert_eq!(report.undone, [names[3]]);
    assert_eq!(report.schema_checked, "equal to the folder's history replayed up to what stays applied");
    assert_eq!(pg.psql("app", "SELECT count(*) FROM pg_type WHERE typname = 'Status'"), "0");
    assert_eq!(
        pg.psql(
            "app",
            "SELECT count(*) FROM information_schema.columns WHERE table_name = 'Post' AND column_name = 'status'"
        ),
        "0"
    );
    let status = migrate::status(&url, &history).await.expect("status");
    assert_eq!(status.pending, [names[3]]);
    assert_eq!(scratch_databases(&pg), "");
}

#[tokio::test]
async fn undo_refuses_and_changes_nothing_when_a_down_is_not_proven() {
    let pg = common::Cluster::start_temp();
    let url = pg.create_database("app");
    let names = ["1_init", "2_posts", "3_user_name"];
    let deployed =
        migrations(&[(names[0], INIT, None), (names[1], POSTS, None), (names[2], USER_NAME, None)]);
    deploy(&url, &deployed).await;
    pg.psql("app", "INSERT INTO \"User\" (email, name) VALUES ('ada@example.com', 'Ada')");
    let before = dump(&url).await;
    let rows = bookkeeping(&pg, "app");

    // Each a folder with the same migrations (same checksums) and a down
    // for 3_user_name that cannot be trusted.
    let cases: &[(&str, Option<&str>, &[&str])] = &[
        ("no down", None, &["3_user_name has no down.sql"]),
        ("an SQL error", Some("DROP INDEX \"User_nmae_idx\";\n"), &["3_user_name: fails", "User_nmae_idx"]),
        // Drops more than its migration made: the migration does not give it back.
        (
            "drops too much",
            Some(
                "DROP INDEX \"User_name_idx\";\nDROP INDEX \"User_email_key\";\nALTER TABLE \"User\" DROP COLUMN \"name\";\n",
            ),
            &["3_user_name: differs", "missing INDEX public.User_email_key"],
        ),
        // Keeps the index (on the renamed column): the migration cannot run again after it.
        (
            "renames instead of dropping",
            Some("ALTER TABLE \"User\" RENAME COLUMN \"name\" TO \"old_name\";\n"),
            &["3_user_name: unproven", "does not apply again"],
        ),
    ];
    for (case, down, expected) in cases {
        let folder = migrations(&[
            (names[0], INIT, Some(INIT_DOWN)),
            (names[1], POSTS, Some(POSTS_DOWN)),
            (names[2], USER_NAME, *down),
        ]);
        for target in [Target::Count(2), Target::To(names[0].into())] {
            let err = down::undo(
                &url,
                &folder,
                &target,
                None,
                &pg_dump(),
                &MigrateConfig::default(),
                &Progress::discard(),
            )
            .await
            .expect_err(case);
            let MigrateError::CannotUndo(message) = &err else { panic!("{case}: {err:?}") };
            for part in *expected {
                assert!(message.contains(part), "{case}: {message:?} lacks {part:?}");
            }
            assert_eq!(err.database_changed(), Some(false));
            assert_eq!(dump(&url).await, before, "{case}: the schema changed");
            assert_eq!(bookkeeping(&pg, "app"), rows, "{case}: _prisma_migrations changed");
            assert_eq!(pg.psql("app", "SELECT email || ':' || name FROM \"User\""), "ada@example.com:Ada");
            assert_eq!(scratch_databases(&pg), "", "{case}: a scratch database is left behind");
        }
    }
}

#[tokio::test]
async fn a_down_that_fails_on_live_rows_leaves_the_migration_applied() {
    let pg = common::Cluster::start_temp();
    let url = pg.create_database("app");
    let history = migrations(&[
        ("1_init", "CREATE TABLE \"User\" (id SERIAL PRIMARY KEY, name TEXT NOT NULL);\n", None),
        (
            "2_name_optional",
            "ALTER TABLE \"User\" ALTER COLUMN name DROP NOT NULL;\n",
            Some("ALTER TABLE \"User\" ALTER COLUMN name SET NOT NULL;\n"),
        ),
    ]);
    deploy(&url, &history).await;
    // Proven on the (empty) copy, but a row written since breaks it.
    pg.psql("app", "INSERT INTO \"User\" (name) VALUES (NULL)");
    let before = dump(&url).await;
    let err = down::undo(
        &url,
        &history,
        &Target::Count(1),
        None,
        &pg_dump(),
        &MigrateConfig::default(),
        &Progress::discard(),
    )
    .await
    .expect_err("the down cannot set NOT NULL over a NULL");
    match &err {
        MigrateError::DownFailed { name, error, database_changed, .. } => {
            assert_eq!(name, "2_name_optional");
            assert!(error.contains("null values"), "{error}");
            assert!(!database_changed, "the down ran alone in its transaction");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(dump(&url).await, before);
    assert_eq!(bookkeeping(&pg, "app"), ["1_init:true:false", "2_name_optional:true:false"]);
    assert_eq!(scratch_databases(&pg), "");
}

#[tokio::test]
async fn the_quickstart_downs_are_proven_and_undo_the_sample_rollout() {
    let pg = common::Cluster::start_temp();
    let url = pg.create_database("app");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/quickstart/migrations");
    let sample = load(&dir);
    assert_eq!(sample.len(), 3);
    assert!(sample.iter().all(|m| m.down.is_some()), "every sample migration has a down.sql");
    let plan = migrate::plan(&url, &sample, plan_options(&pg_dump())).await.expect("plan");
    let proven: Vec<(&str, DownState, &str)> =
        sample.iter().map(|m| (m.name.as_str(), DownState::Proven, "")).collect();
    assert_eq!(states(&plan.downs), proven, "{:#?}", plan.downs);
    assert!(plan.downs.dangers.is_empty(), "{:?}", plan.downs.dangers);

    deploy(&url, &sample[..1]).await;
    let before = dump(&url).await;
    deploy(&url, &sample).await;
    let report = down::undo(
        &url,
        &sample,
        &Target::To(sample[0].name.clone()),
        Some(&before),
        &pg_dump(),
        &MigrateConfig::default(),
        &Progress::discard(),
    )
    .await
    .expect("undo");
    assert_eq!(report.undone, [sample[2].name.as_str(), sample[1].name.as_str()]);
    assert_eq!(dump(&url).await, before);
    // The seeded users are data: they stay.
    assert_eq!(pg.psql("app", "SELECT count(*) FROM \"User\""), "2");
    assert_eq!(scratch_databases(&pg), "");
}

#[tokio::test]
async fn a_seeding_migration_leaves_the_next_downs_proven() {
    let pg = common::Cluster::start_temp();
    let url = pg.create_database("app");
    let history = migrations(&[
        ("1_init", INIT, Some(INIT_DOWN)),
        // The rows are data: the down leaves them, like the quickstart's seed.
        ("2_seed", "INSERT INTO \"User\" (email) VALUES ('ada@example.com');\n", Some("SELECT 1;\n")),
        ("3_user_name", USER_NAME, Some(USER_NAME_DOWN)),
    ]);
    let plan = migrate::plan(&url, &history, plan_options(&pg_dump())).await.expect("plan");
    assert_eq!(
        states(&plan.downs),
        [
            ("1_init", DownState::Proven, ""),
            ("2_seed", DownState::Proven, ""),
            ("3_user_name", DownState::Proven, "")
        ],
        "{:#?}",
        plan.downs
    );
}

#[tokio::test]
async fn undo_never_reports_success_with_the_schema_not_restored() {
    let pg = common::Cluster::start_temp();
    let url = pg.create_database("app");
    let history = migrations(&[
        ("1_init", INIT, Some(INIT_DOWN)),
        // The down forgets to set the default back (a forward proof says differs).
        ("2_no_default", "ALTER TABLE \"User\" ALTER COLUMN \"role\" DROP DEFAULT;\n", Some("SELECT 1;\n")),
    ]);
    deploy(&url, &history).await;
    let deployed = (dump(&url).await, bookkeeping(&pg, "app"));
    let undone = down::undo(
        &url,
        &history,
        &Target::Count(1),
        None,
        &pg_dump(),
        &MigrateConfig::default(),
        &Progress::discard(),
    )
    .await;
    // Refused on the copy, before the live database is touched.
    let error = undone.expect_err("a down that forgets part of its migration must not run");
    assert!(matches!(error, migrate::MigrateError::CannotUndo(_)), "{error}");
    assert!(error.to_string().contains("changed TABLE public.User"), "{error}");
    assert_eq!(
        (dump(&url).await, bookkeeping(&pg, "app")),
        deployed,
        "the refused undo changed the database"
    );
}
