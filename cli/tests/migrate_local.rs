//! Must-show 2 and the CLI's local mode: `runway migrate …` run as separate
//! processes (the real `runway` binary) against a real PostgreSQL.

use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use runway_tests::fixtures::folder;
use runway_tests::postgres::Postgres;
use sqlx::Connection;

/// `runway` exit code when the advisory lock is held (busy).
const EXIT_LOCKED: i32 = 5;

fn runway(args: &[&str], database_url: &str) -> Command {
    let mut cmd = Command::new(runway_tests::process::bin("runway"));
    cmd.arg("migrate")
        .args(args)
        .env("DATABASE_URL", database_url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

fn run(args: &[&str], database_url: &str) -> (i32, String, String) {
    let out: Output = runway(args, database_url).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The JSON document in a child's stdout (the test harness adds a line of its own).
fn json(stdout: &str) -> serde_json::Value {
    let start = stdout
        .find("\n{")
        .map(|i| i + 1)
        .or_else(|| stdout.starts_with('{').then_some(0))
        .expect("JSON output");
    let end = stdout.rfind('}').expect("JSON output") + 1;
    serde_json::from_str(&stdout[start..end]).unwrap()
}

/// Kills a child on drop (by its PID) if the test fails half way.
struct Kill(Option<Child>);
impl Drop for Kill {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

async fn advisory_lock_state(url: &str) -> (i64, i64) {
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    sqlx::query_as(
        "SELECT count(*) FILTER (WHERE granted), count(*) FILTER (WHERE NOT granted) FROM pg_locks
          WHERE locktype = 'advisory' AND objid = 72707369",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap()
}

async fn wait_for(url: &str, what: &str, pred: impl Fn((i64, i64)) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !pred(advisory_lock_state(url).await) {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_second_runner_waits_for_the_lock_then_finds_nothing_to_do() {
    let pg = Postgres::start_temp();
    let url = pg.create_database("lockwait");
    let dir = folder(&[
        ("1_slow/migration.sql", b"CREATE TABLE slow (id int);\nSELECT pg_sleep(2);\n"),
        ("2_more/migration.sql", b"CREATE TABLE more (id int);\n"),
    ]);
    let folder = dir.path().to_str().unwrap();

    let first = Kill(Some(runway(&["deploy", "--migrations", folder], &url).spawn().unwrap()));
    wait_for(&url, "the first runner to hold the lock", |(granted, _)| granted == 1).await;
    let second = Kill(Some(
        runway(&["deploy", "--migrations", folder, "--advisory-lock-timeout", "30"], &url).spawn().unwrap(),
    ));
    // The second runner is queued on the same advisory lock, inside PostgreSQL.
    wait_for(&url, "the second runner to wait", |(granted, waiting)| granted == 1 && waiting == 1).await;

    let mut first = first;
    let out = first.0.take().unwrap().wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("Applied 2 migration(s)") && stdout.contains("1_slow"), "{stdout}");

    let mut second = second;
    let out = second.0.take().unwrap().wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("No pending migrations to apply (2 already applied)"), "{stdout}");
    assert_eq!(pg.psql("lockwait", "SELECT count(*) FROM _prisma_migrations").trim(), "2");
}

#[tokio::test]
async fn a_short_lock_timeout_fails_naming_the_holder() {
    let pg = Postgres::start_temp();
    let url = pg.create_database("locked");
    let dir = folder(&[("1_a/migration.sql", b"CREATE TABLE a (id int);\n")]);
    let folder = dir.path().to_str().unwrap();

    // Someone else (here: a session posing as Prisma) holds Prisma's lock.
    let mut holder =
        sqlx::PgConnection::connect(&format!("{url}?application_name=prisma-migrate")).await.unwrap();
    sqlx::query("SELECT pg_advisory_lock(72707369)").execute(&mut holder).await.unwrap();

    let started = Instant::now();
    let (code, _, stderr) = run(&["deploy", "--migrations", folder, "--advisory-lock-timeout", "1"], &url);
    assert_eq!(code, EXIT_LOCKED, "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(15));
    assert!(
        stderr.contains("holds the migrations advisory lock") && stderr.contains("prisma-migrate"),
        "{stderr}"
    );
    assert!(stderr.contains("waited 1s"), "{stderr}");

    let (code, stdout, _) =
        run(&["deploy", "--migrations", folder, "--advisory-lock-timeout", "0", "--output", "json"], &url);
    assert_eq!(code, EXIT_LOCKED);
    let json: serde_json::Value = json(&stdout);
    assert_eq!(json["retry_is_safe"], true);

    // Released: the same command goes through.
    sqlx::query("SELECT pg_advisory_unlock(72707369)").execute(&mut holder).await.unwrap();
    let (code, stdout, stderr) = run(&["deploy", "--migrations", folder], &url);
    assert_eq!(code, 0, "{stdout}{stderr}");
}

#[tokio::test]
async fn exit_codes_and_output_for_scripts() {
    let pg = Postgres::start_temp();
    let url = pg.create_database("cli");
    let dir = folder(&[
        ("migration_lock.toml", b"provider = \"postgresql\"\n"),
        ("1_a/migration.sql", b"CREATE TABLE a (id int, name text);\n"),
        ("2_b/migration.sql", b"ALTER TABLE a ADD COLUMN b int;\n"),
    ]);
    let folder = dir.path().to_str().unwrap();

    let (code, stdout, _) = run(&["status", "--migrations", folder], &url);
    assert_eq!(code, 7, "pending: {stdout}");
    assert!(stdout.contains("Pending:") && stdout.contains("1_a"), "{stdout}");

    let (code, stdout, _) = run(&["plan", "--migrations", folder, "--output", "json"], &url);
    assert_eq!(code, 0, "{stdout}");
    let plan: serde_json::Value = json(&stdout);
    assert_eq!(plan["pending"], serde_json::json!(["1_a", "2_b"]));
    assert_eq!(plan["safe_without_maintenance"], true);

    let (code, stdout, stderr) = run(&["deploy", "--migrations", folder], &url);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stderr.contains("[migrate] applied 1_a (1/2)"), "{stderr}");
    let (code, stdout, _) = run(&["status", "--migrations", folder, "--output", "json"], &url);
    assert_eq!(code, 0, "{stdout}");
    let status: serde_json::Value = json(&stdout);
    assert_eq!(status["applied"], serde_json::json!(["1_a", "2_b"]));

    // A failing migration: the CLI names it and prints the database's error.
    std::fs::create_dir(dir.path().join("3_c")).unwrap();
    std::fs::write(
        dir.path().join("3_c/migration.sql"),
        "ALTER TABLE a DROP COLUMN name;\nINSERT INTO nope VALUES (1);\n",
    )
    .unwrap();
    let (code, _, stdout_err) = run(&["lint", "--migrations", folder], &url);
    assert_eq!(code, 8, "dangerous SQL: {stdout_err}");
    let (code, stdout, _) = run(&["lint", "--migrations", folder], &url);
    assert!(stdout.contains("3_c/migration.sql:1: Danger drop-column [ACCESS EXCLUSIVE lock"), "{stdout}");
    assert_eq!(code, 8);
    let (code, _, stderr) = run(&["deploy", "--migrations", folder], &url);
    assert_eq!(code, 1, "a migration failed: {stderr}");
    assert!(stderr.contains("3_c") && stderr.contains("relation \"nope\" does not exist"), "{stderr}");
    assert!(stderr.contains("migration 3_c failed at line 2"), "{stderr}");
    let (code, _, _) = run(&["status", "--migrations", folder], &url);
    assert_eq!(code, 8, "a failed migration waits for resolve");
    let (code, stdout, _) = run(&["plan", "--migrations", folder], &url);
    assert_eq!(code, 8, "deploy would refuse: {stdout}");
    let (code, _, stderr) = run(&["deploy", "--migrations", folder], &url);
    assert_eq!(code, 8, "deploy refuses, blocked like status says");
    assert!(stderr.contains("found failed migrations") && stderr.contains("3_c"), "{stderr}");

    let (code, stdout, stderr) = run(&["resolve", "--migrations", folder, "--rolled-back", "3_c"], &url);
    assert_eq!(code, 0, "{stdout}{stderr}");
    std::fs::write(dir.path().join("3_c/migration.sql"), "ALTER TABLE a ADD COLUMN c int;\n").unwrap();
    let (code, _, stderr) = run(&["deploy", "--migrations", folder], &url);
    assert_eq!(code, 0, "{stderr}");

    // A modified applied migration: diverged.
    std::fs::write(dir.path().join("1_a/migration.sql"), "CREATE TABLE a (id bigint);\n").unwrap();
    let (code, stdout, _) = run(&["status", "--migrations", folder], &url);
    assert_eq!(code, 9, "diverged: {stdout}");
    assert!(stdout.contains("Modified after being applied:\n  1_a"), "{stdout}");

    // Folder problems are bad input that names the entry, exit 2.
    std::fs::create_dir(dir.path().join("4_empty")).unwrap();
    let (code, _, stderr) = run(&["status", "--migrations", folder], &url);
    assert_eq!(code, 2);
    assert!(stderr.contains("\"4_empty\" has no migration.sql"), "{stderr}");
    let (code, _, stderr) = run(&["status", "--migrations", "/nonexistent/migrations"], &url);
    assert_eq!(code, 2);
    assert!(stderr.contains("/nonexistent/migrations does not exist"), "{stderr}");

    // Passwords never show up in errors: with the folder fixed, the
    // connection error is reached (a database that cannot be reached: exit 3).
    std::fs::remove_dir(dir.path().join("4_empty")).unwrap();
    let (code, _, stderr) = run(
        &["status", "--migrations", folder],
        &format!("postgres://postgres:s3cret@127.0.0.1:{}/nope", pg.port),
    );
    assert_eq!(code, 3);
    assert!(!stderr.contains("s3cret"), "{stderr}");
}

/// `migrate plan` and `migrate lint --database-url` read the rows a pending
/// statement would trip over: NULLs under `SET NOT NULL` block the deploy
/// (exit 8) naming the migration, line, table, column, count and keys; the
/// statement really fails; once the rows are fixed the same bundle passes.
#[tokio::test]
async fn plan_and_lint_refuse_what_the_data_makes_fail() {
    let pg = Postgres::start_temp();
    let url = pg.create_database("nulls");
    let dir =
        folder(&[("1_init/migration.sql", b"CREATE TABLE \"User\" (id SERIAL PRIMARY KEY, name TEXT);\n")]);
    let (code, _, stderr) = run(&["deploy", "--migrations", dir.path().to_str().unwrap()], &url);
    assert_eq!(code, 0, "{stderr}");
    pg.psql("nulls", "INSERT INTO \"User\" (name) VALUES ('Ada'), (NULL), (NULL)");
    std::fs::create_dir_all(dir.path().join("2_required")).unwrap();
    std::fs::write(
        dir.path().join("2_required/migration.sql"),
        "-- AlterTable\nALTER TABLE \"User\" ALTER COLUMN \"name\" SET NOT NULL;\n",
    )
    .unwrap();
    let folder = dir.path().to_str().unwrap();
    for args in [vec!["plan", "--migrations", folder], vec!["lint", "--migrations", folder]] {
        let (code, stdout, stderr) = run(&args, &url);
        assert_eq!(code, 8, "{args:?}: {stdout}{stderr}");
        for needle in [
            "will fail: 2_required line 2: SET NOT NULL on User.name will fail: 2 row(s) have NULL",
            "e.g. id=2, id=3",
            "find them: SELECT",
        ] {
            assert!(stdout.contains(needle), "{args:?} does not say {needle:?}:\n{stdout}");
        }
    }
    let failed = pg.try_psql("nulls", "ALTER TABLE \"User\" ALTER COLUMN \"name\" SET NOT NULL");
    assert!(failed.is_err(), "the statement the plan refuses must really fail");
    pg.psql("nulls", "UPDATE \"User\" SET name = 'Anonymous' WHERE name IS NULL");
    let (code, stdout, stderr) = run(&["plan", "--migrations", folder], &url);
    assert_ne!(code, 8, "clean data is not refused: {stdout}{stderr}");
    assert!(stdout.contains("nothing will fail"), "{stdout}");
}
