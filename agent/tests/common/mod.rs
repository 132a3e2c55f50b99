//! A throwaway PostgreSQL cluster for integration tests: `initdb` in a temp
//! dir, started on a free 127.0.0.1 port with its own socket dir, stopped
//! by PID when the guard drops (also when the test fails).
#![allow(dead_code)]

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where Debian puts the server binaries; `PG_BIN` overrides.
pub fn pg_bin(tool: &str) -> PathBuf {
    let dir = std::env::var("PG_BIN").unwrap_or_else(|_| "/usr/lib/postgresql/15/bin".into());
    Path::new(&dir).join(tool)
}

/// A running cluster; dropping it stops the server.
pub struct Cluster {
    pub port: u16,
    pub socket_dir: PathBuf,
    child: Child,
    // Dropped last: removes the data dir.
    _dir: tempfile::TempDir,
}

fn id_of(flag: &str) -> Option<u32> {
    let out = Command::new("id").args([flag, "postgres"]).output().ok()?;
    String::from_utf8(out.stdout).ok()?.trim().parse().ok()
}

fn running_as_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| o.stdout.trim_ascii() == b"0").unwrap_or(false)
}

/// Runs `cmd` as the `postgres` user when we are root (initdb refuses root).
fn as_postgres(cmd: &mut Command) -> &mut Command {
    if running_as_root() {
        let uid = id_of("-u").expect("a `postgres` user must exist to run PostgreSQL as root");
        let gid = id_of("-g").expect("the `postgres` user has a group");
        cmd.uid(uid).gid(gid);
    }
    cmd
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind a free port").local_addr().unwrap().port()
}

impl Cluster {
    /// initdb + start; panics with the server log when it does not come up.
    pub fn start() -> Cluster {
        let dir = tempfile::Builder::new().prefix("runway-pg-").tempdir().expect("temp dir");
        let data = dir.path().join("data");
        let socket_dir = dir.path().join("sock");
        std::fs::create_dir(&socket_dir).unwrap();
        if running_as_root() {
            let (uid, gid) = (id_of("-u").unwrap(), id_of("-g").unwrap());
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).unwrap();
            std::os::unix::fs::chown(&socket_dir, Some(uid), Some(gid)).unwrap();
        }
        let out = as_postgres(
            Command::new(pg_bin("initdb"))
                .args(["--no-sync", "-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C", "-D"])
                .arg(&data)
                .current_dir(dir.path()),
        )
        .output()
        .expect("run initdb");
        assert!(out.status.success(), "initdb failed: {}", String::from_utf8_lossy(&out.stderr));

        let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
        let port = free_port();
        let child = as_postgres(
            Command::new(pg_bin("postgres"))
                .arg("-D")
                .arg(&data)
                .args(["-p", &port.to_string(), "-k"])
                .arg(&socket_dir)
                .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "synchronous_commit=off"])
                .args(["-c", "full_page_writes=off", "-c", "max_connections=50"])
                .current_dir(dir.path())
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log),
        )
        .spawn()
        .expect("start postgres");
        let mut cluster = Cluster { port, socket_dir, child, _dir: dir };
        cluster.wait_ready();
        cluster
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ok = Command::new(pg_bin("pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-q"])
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ok {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("postgres exited with {status}: {}", self.log());
            }
            assert!(Instant::now() < deadline, "postgres did not come up in 30s: {}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The server log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("server.log")).unwrap_or_default()
    }

    /// URL of database `db` as the superuser `postgres` (trust auth).
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Creates an empty database and returns its URL.
    pub fn create_db(&self, name: &str) -> String {
        self.psql("postgres", &format!("CREATE DATABASE \"{name}\""));
        self.url(name)
    }

    /// Runs SQL with psql (ON_ERROR_STOP) and returns its stdout; panics on error.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = Command::new(pg_bin("psql"))
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", &self.url(db), "-c", sql])
            .output()
            .expect("run psql");
        assert!(out.status.success(), "psql {sql:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Fast shutdown by PID, then make sure.
        let _ = Command::new("kill").args(["-INT", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes `files` (relative path → content) under a new temp dir.
pub fn folder(files: &[(&str, &[u8])]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (path, content) in files {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
    dir
}

/// Migration folders shared by the tests.
pub mod fixtures {
    pub const INIT: &str = "-- CreateEnum\nCREATE TYPE \"Mood\" AS ENUM ('happy', 'sad');\n\n-- CreateTable\n\
    CREATE TABLE \"User\" (\n    \"id\" SERIAL NOT NULL,\n    \"email\" TEXT NOT NULL,\n    \"mood\" \"Mood\" NOT NULL DEFAULT 'happy',\n\
        CONSTRAINT \"User_pkey\" PRIMARY KEY (\"id\")\n);\n\n-- CreateIndex\nCREATE UNIQUE INDEX \"User_email_key\" ON \"User\"(\"email\");\n";

    pub const FUNCTIONS: &str = r#"-- a function whose body has semicolons; and a comment with one too
    CREATE FUNCTION touch_updated() RETURNS trigger AS $$
    BEGIN
      NEW.note := 'touched; at ' || now()::text; -- not the end
      RETURN NEW;
    END;
    $$ LANGUAGE plpgsql;

    ALTER TABLE "User" ADD COLUMN "note" TEXT;

    CREATE TRIGGER user_touch BEFORE UPDATE ON "User" FOR EACH ROW EXECUTE FUNCTION touch_updated();

    /* block comment; with ; inside */
    DO $do$
    DECLARE s text := 'a;b';
    BEGIN
      IF NOT EXISTS (SELECT 1 FROM pg_type WHERE typname = 'Role') THEN
        CREATE TYPE "Role" AS ENUM ('admin', 'member');
      END IF;
    END
    $do$;
    INSERT INTO "User" (email, note) VALUES ('semi;colon@example.com', E'it''s; fine');
    "#;

    pub const CONCURRENT_ALONE: &str =
        "CREATE INDEX CONCURRENTLY \"User_note_idx\" ON \"User\" (\"note\");\n";

    pub const CONCURRENT_MIXED: &str = "CREATE TABLE \"Post\" (id SERIAL PRIMARY KEY, author_id INT NOT NULL, body TEXT);\n\
    INSERT INTO \"Post\" (author_id, body) VALUES (1, 'CREATE INDEX CONCURRENTLY inside a string; ok');\n\
    CREATE INDEX CONCURRENTLY \"Post_author_idx\" ON \"Post\" (author_id);\n\
    CREATE FUNCTION post_count() RETURNS bigint AS $$ SELECT count(*) FROM \"Post\"; $$ LANGUAGE sql;\n\
    DROP INDEX CONCURRENTLY \"User_note_idx\";\n\
    VACUUM \"Post\";\n\
    ALTER TABLE \"Post\" ADD COLUMN title TEXT;\n";

    pub const EXPLICIT_TX: &str = "BEGIN;\nCREATE TABLE \"Tag\" (id INT PRIMARY KEY, name TEXT);\nINSERT INTO \"Tag\" VALUES (1, 'a');\nCOMMIT;\n";

    pub const ENUM_VALUE: &str =
        "ALTER TYPE \"Mood\" ADD VALUE 'meh';\nUPDATE \"User\" SET mood = 'meh' WHERE email LIKE 'semi%';\n";

    pub fn crlf(s: &str) -> String {
        s.replace('\n', "\r\n")
    }

    pub fn quirks() -> tempfile::TempDir {
        let crlf_sql = crlf(
            "-- written on Windows\nCREATE TABLE \"Crlf\" (\n  id INT\n);\nCOMMENT ON TABLE \"Crlf\" IS 'line\nbreak';\n",
        );
        super::folder(&[
            ("migration_lock.toml", b"# Please do not edit this file manually\nprovider = \"postgresql\"\n"),
            ("20240101000000_init/migration.sql", INIT.as_bytes()),
            ("20240102 add functions/migration.sql", FUNCTIONS.as_bytes()),
            ("20240103000000_concurrent_alone/migration.sql", CONCURRENT_ALONE.as_bytes()),
            ("20240104_mixed/migration.sql", CONCURRENT_MIXED.as_bytes()),
            ("20240105_explicit_tx/migration.sql", EXPLICIT_TX.as_bytes()),
            ("20240106_crlf/migration.sql", crlf_sql.as_bytes()),
            ("20240107_enum_value/migration.sql", ENUM_VALUE.as_bytes()),
            ("3_odd_prefix/migration.sql", b"CREATE TABLE odd (id int);"),
            ("v2-no-digits/migration.sql", b"ALTER TABLE odd ADD COLUMN x int;\n"),
        ])
    }

    /// Existing tables the dangerous statements act on.
    pub const DANGER_SETUP: &str = "CREATE SCHEMA old; CREATE TABLE legacy (id int); \
        CREATE TABLE users (id int PRIMARY KEY, nickname text, age int, email text, active bool); \
        CREATE TABLE orders (id int, user_id int, total int, code text); CREATE INDEX orders_idx ON orders (id); \
        CREATE TABLE audit (id int); CREATE TABLE sessions (id int, expires_at timestamptz); \
        INSERT INTO orders SELECT g, g % 100, g, 'c' || g FROM generate_series(1, 20000) g; ANALYZE orders;";

    /// One statement per entry and the exact rules it must yield.
    pub const DANGEROUS: &[(&str, &[&str])] = &[
        ("DROP TABLE legacy;", &["drop-table"]),
        ("ALTER TABLE users DROP COLUMN nickname;", &["drop-column"]),
        ("DROP SCHEMA old CASCADE;", &["drop-schema"]),
        ("DROP DATABASE other;", &["drop-database"]),
        ("TRUNCATE audit;", &["truncate"]),
        ("DELETE FROM sessions;", &["delete-without-where"]),
        ("update users set active = true;", &["update-without-where"]),
        ("ALTER TABLE users ALTER COLUMN age TYPE bigint;", &["alter-column-type"]),
        ("ALTER TABLE users ALTER COLUMN email SET NOT NULL;", &["set-not-null"]),
        ("ALTER TABLE users ADD COLUMN tenant_id int NOT NULL;", &["add-column-not-null-without-default"]),
        (
            "ALTER TABLE users ADD COLUMN token uuid DEFAULT gen_random_uuid();",
            &["add-column-volatile-default"],
        ),
        ("ALTER TABLE users ADD COLUMN seq bigserial;", &["add-column-volatile-default"]),
        ("CREATE INDEX users_email_idx ON users (email);", &["create-index-non-concurrent"]),
        (
            "ALTER TABLE orders ADD CONSTRAINT orders_user_fk FOREIGN KEY (user_id) REFERENCES users (id);",
            &["foreign-key-without-not-valid"],
        ),
        (
            "ALTER TABLE orders ADD CONSTRAINT orders_total_positive CHECK (total > 0);",
            &["check-without-not-valid"],
        ),
        ("ALTER TABLE orders ADD CONSTRAINT orders_code_key UNIQUE (code);", &["constraint-builds-index"]),
        ("ALTER TABLE \"orders\" RENAME COLUMN total TO amount;", &["rename-column"]),
        ("DROP INDEX orders_idx;", &["drop-index-non-concurrent"]),
        ("VACUUM FULL orders;", &["table-rewrite"]),
        ("ALTER TABLE users RENAME TO customers;", &["rename-table"]),
        // Several problems in one statement: each is reported.
        (
            "ALTER TABLE audit ADD COLUMN k int NOT NULL, DROP COLUMN id;",
            &["add-column-not-null-without-default", "drop-column"],
        ),
        // Safe forms: nothing to report.
        ("CREATE INDEX CONCURRENTLY orders_code_idx ON orders (code);", &[]),
        (
            "ALTER TABLE orders ADD CONSTRAINT orders_user_fk2 FOREIGN KEY (user_id) REFERENCES customers (id) NOT VALID;",
            &[],
        ),
        ("ALTER TABLE orders VALIDATE CONSTRAINT orders_user_fk2;", &[]),
        ("ALTER TABLE orders ADD COLUMN note text;", &[]),
        ("ALTER TABLE orders ADD COLUMN created_at timestamptz NOT NULL DEFAULT now();", &[]),
        ("DELETE FROM sessions WHERE expires_at < now();", &[]),
        ("SELECT 'DROP TABLE customers; TRUNCATE orders';", &[]),
        ("CREATE FUNCTION purge() RETURNS void AS $$ DELETE FROM sessions; $$ LANGUAGE sql;", &[]),
        ("CREATE TABLE fresh (id int);", &[]),
        ("CREATE INDEX fresh_idx ON fresh (id);", &[]),
        ("ALTER TABLE fresh ADD COLUMN x int NOT NULL;", &[]),
    ];
}
