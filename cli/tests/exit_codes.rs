//! One exit code of each kind, from the real `runway` binary: local migrate
//! and backup against a throwaway PostgreSQL, and closed ports for
//! "unreachable". Code 4 (cancelled) needs a cluster; `tests/tests/rollout.rs`
//! (`a_cancelled_rollout_stops_after_its_current_step_and_lifts_maintenance`)
//! asserts it.

use std::path::Path;
use std::process::{Command, Stdio};

use runway_tests::fixtures::folder;
use runway_tests::postgres::{PG_BIN, Postgres};
use runway_tests::process::{bin, free_port};
use sqlx::Connection;

const SUCCESS: i32 = 0;
const FAILED: i32 = 1;
const INVALID: i32 = 2;
const UNREACHABLE: i32 = 3;
const BUSY: i32 = 5;
const INTEGRITY: i32 = 6;
const ATTENTION: i32 = 7;
const BLOCKED: i32 = 8;
const DIVERGED: i32 = 9;

/// Exit code, stdout and stderr of one `runway` run.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit {}\n--- stdout\n{}\n--- stderr\n{}", self.code, self.stdout, self.stderr)
    }
}

impl Run {
    /// The single JSON line on stdout.
    fn json(&self) -> serde_json::Value {
        let lines: Vec<&str> = self.stdout.lines().collect();
        assert_eq!(lines.len(), 1, "expected one JSON line: {self:?}");
        serde_json::from_str(lines[0]).unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"))
    }
}

/// Runs `runway ARGS`, with `DATABASE_URL` set when `database_url` is given.
fn runway(args: &[&str], database_url: Option<&str>) -> Run {
    let mut command = Command::new(bin("runway"));
    command.args(args).env_remove("DATABASE_URL").stdin(Stdio::null());
    if let Some(url) = database_url {
        command.env("DATABASE_URL", url);
    }
    let out = command.output().expect("run runway");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn write(dir: &Path, migration: &str, sql: &str) {
    std::fs::create_dir_all(dir.join(migration)).unwrap();
    std::fs::write(dir.join(migration).join("migration.sql"), sql).unwrap();
}

#[tokio::test]
async fn migrate_ends_with_the_code_of_its_verdict() {
    let pg = Postgres::start_temp();
    let url = pg.create_database("codes");
    let db = Some(url.as_str());
    let dir = folder(&[("1_a/migration.sql", b"CREATE TABLE a (id int, name text);\n")]);
    let migrations = dir.path().to_str().unwrap();
    let migrate = |command: &str, extra: &[&str]| {
        let mut args = vec!["migrate", command, "--migrations", migrations];
        args.extend_from_slice(extra);
        runway(&args, db)
    };

    // 7: pending; 0: applied and up to date.
    let run = migrate("status", &[]);
    assert_eq!(run.code, ATTENTION, "a pending migration needs attention: {run:?}");
    let run = migrate("deploy", &[]);
    assert_eq!(run.code, SUCCESS, "{run:?}");
    let run = migrate("status", &[]);
    assert_eq!(run.code, SUCCESS, "up to date: {run:?}");

    // 7 and 8 from lint (no database: every migration is linted).
    let warn = folder(&[("1_index/migration.sql", b"CREATE INDEX a_id ON a (id);\n")]);
    let run = runway(&["migrate", "lint", "--migrations", warn.path().to_str().unwrap()], None);
    assert_eq!(run.code, ATTENTION, "a non-concurrent index is a warning: {run:?}");
    let danger = folder(&[("1_drop/migration.sql", b"ALTER TABLE a DROP COLUMN name;\n")]);
    let run = runway(&["migrate", "lint", "--migrations", danger.path().to_str().unwrap()], None);
    assert_eq!(run.code, BLOCKED, "dropping a column is dangerous: {run:?}");

    // 1: a migration ran and failed; then 8: status is blocked until resolve.
    write(dir.path(), "2_bad", "INSERT INTO nope VALUES (1);\n");
    let run = migrate("deploy", &[]);
    assert_eq!(run.code, FAILED, "{run:?}");
    assert!(run.stderr.contains("error: migration 2_bad failed"), "{run:?}");
    let run = migrate("status", &[]);
    assert_eq!(run.code, BLOCKED, "a failed migration waits for resolve: {run:?}");
    let run = migrate("resolve", &["--rolled-back", "2_bad"]);
    assert_eq!(run.code, SUCCESS, "{run:?}");
    write(dir.path(), "2_bad", "CREATE TABLE b (id int);\n");

    // 5: another runner holds the advisory lock.
    let mut holder = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::query("SELECT pg_advisory_lock(72707369)").execute(&mut holder).await.unwrap();
    let run = migrate("deploy", &["--advisory-lock-timeout", "0", "--output", "json"]);
    assert_eq!(run.code, BUSY, "{run:?}");
    let envelope = run.json();
    assert_eq!(envelope["ok"], false, "{run:?}");
    assert_eq!(envelope["exit_code"], BUSY, "{run:?}");
    assert_eq!(envelope["retry_is_safe"], true, "{run:?}");
    assert!(envelope["error"].as_str().unwrap().contains("advisory lock"), "{run:?}");
    sqlx::query("SELECT pg_advisory_unlock(72707369)").execute(&mut holder).await.unwrap();
    let run = migrate("deploy", &[]);
    assert_eq!(run.code, SUCCESS, "{run:?}");

    // 9: an applied migration was changed afterwards.
    write(dir.path(), "1_a", "CREATE TABLE a (id bigint);\n");
    let run = migrate("status", &[]);
    assert_eq!(run.code, DIVERGED, "{run:?}");

    // 2: a folder that cannot be read; in JSON, the envelope on stdout.
    let run =
        runway(&["migrate", "status", "--migrations", "/nonexistent/migrations", "--output", "json"], db);
    assert_eq!(run.code, INVALID, "{run:?}");
    assert_eq!(run.json()["exit_code"], INVALID, "{run:?}");
    assert!(run.stderr.is_empty(), "JSON errors go to stdout only: {run:?}");
}

#[test]
fn backup_tells_integrity_from_refusal() {
    let pg = Postgres::start_temp();
    let url = pg.create_database("shop");
    pg.psql("shop", "CREATE TABLE items (id int); INSERT INTO items SELECT generate_series(1, 100);");
    let backups = tempfile::tempdir().unwrap();
    let dir = backups.path().to_str().unwrap();

    // 0: a backup is taken.
    let run =
        runway(&["backup", "create", "--dir", dir, "--pg-bin-dir", PG_BIN, "--output", "json"], Some(&url));
    assert_eq!(run.code, SUCCESS, "{run:?}");
    let manifest = run.json()["manifest"].clone();
    let folder = backups.path().join(manifest["id"].as_str().unwrap());
    let folder = folder.to_str().unwrap();

    // 2: refused before anything changed.
    let run = runway(&["backup", "restore", folder, "--target-url", &url, "--pg-bin-dir", PG_BIN], None);
    assert_eq!(run.code, INVALID, "restore without --yes: {run:?}");
    assert!(run.stderr.contains("--yes"), "{run:?}");

    // 6: one flipped bit.
    let dump = Path::new(folder).join(manifest["dump"].as_str().unwrap());
    let mut bytes = std::fs::read(&dump).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&dump, bytes).unwrap();
    let run = runway(&["backup", "verify", folder, "--pg-bin-dir", PG_BIN], None);
    assert_eq!(run.code, INTEGRITY, "{run:?}");
    assert!(run.stderr.contains("error: checksum mismatch"), "{run:?}");
    let run = runway(&["backup", "verify", folder, "--pg-bin-dir", PG_BIN, "--output", "json"], None);
    assert_eq!(run.code, INTEGRITY, "{run:?}");
    let envelope = run.json();
    assert_eq!((envelope["ok"].clone(), envelope["exit_code"].clone()), (false.into(), INTEGRITY.into()));
    assert_eq!(envelope["retry_safe"], false, "{run:?}");
}

#[test]
fn nothing_to_talk_to_is_unreachable() {
    let closed = format!("127.0.0.1:{}", free_port());

    let run = runway(
        &["agents", "--insecure", "--coordinator", &format!("http://{closed}"), "--leader-timeout", "1"],
        None,
    );
    assert_eq!(run.code, UNREACHABLE, "{run:?}");
    assert!(run.stderr.contains("no leader coordinator answered"), "{run:?}");

    // TLS is the default: without certificates nothing is sent, and the
    // error says what is missing.
    let run = runway(&["agents", "--coordinator", &closed, "--leader-timeout", "1"], None);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("TLS is on by default and needs --ca, --cert and --key"), "{run:?}");

    let url = format!("postgres://postgres@{closed}/app");
    let migrations = folder(&[("1_a/migration.sql", b"CREATE TABLE a (id int);\n")]);
    let run = runway(&["migrate", "status", "--migrations", migrations.path().to_str().unwrap()], Some(&url));
    assert_eq!(run.code, UNREACHABLE, "{run:?}");
    assert!(run.stderr.contains("cannot connect to the database"), "{run:?}");

    let backups = tempfile::tempdir().unwrap();
    let run = runway(
        &["backup", "create", "--dir", backups.path().to_str().unwrap(), "--pg-bin-dir", PG_BIN],
        Some(&url),
    );
    assert_eq!(run.code, UNREACHABLE, "{run:?}");
}
