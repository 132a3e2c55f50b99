//! Test harness for the backup tests: a throwaway PostgreSQL 15 cluster and
//! a moto S3 server, each started on a free 127.0.0.1 port and killed by its
//! own PID when the guard drops (also when the test fails).
//!
//! Set `RUNWAY_PG_BIN` to another PostgreSQL bin dir. When `CI` is set a
//! missing tool fails the test instead of skipping it.

#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Stdio};

use runway_engine::backup::{BackupConfig, ObjectStoreConfig};
pub use runway_tests::postgres::{Postgres, pg_bin};
use sqlx::{Connection, PgConnection, Row};

pub const PASSWORD: &str = "s3cr3t-pw";

pub use runway_tests::process::in_ci;

/// Skips (outside CI) or fails (in CI) when a tool is missing.
pub fn require(what: &str, present: bool) -> bool {
    if !present {
        assert!(!in_ci(), "{what} is required in CI but missing");
        eprintln!("SKIPPED: {what} is missing (set CI=1 to make this an error)");
    }
    present
}

/// The shared throwaway PostgreSQL cluster, with password auth over TCP so
/// the tests see how the engine handles the secret.
pub struct PgCluster {
    pub pg: Postgres,
}

impl PgCluster {
    /// initdb + start; `None` (outside CI) when PostgreSQL is not installed.
    pub fn start() -> Option<Self> {
        if !require("PostgreSQL binaries (RUNWAY_PG_BIN)", pg_bin().join("initdb").exists()) {
            return None;
        }
        Some(Self { pg: Postgres::start_temp_with_password(PASSWORD) })
    }

    pub fn log(&self) -> String {
        self.pg.log()
    }

    /// The cluster's own dir, free for a test's files.
    pub fn dir(&self) -> &Path {
        &self.pg.root
    }

    /// URL of `database` with the password in it.
    pub fn url(&self, database: &str) -> String {
        self.pg.url(database)
    }

    pub async fn connect(&self, database: &str) -> PgConnection {
        PgConnection::connect(&self.url(database)).await.expect("connect")
    }

    pub async fn create_database(&self, name: &str) {
        self.pg.create_database(name);
    }

    /// A backup config writing under this cluster's dir, tools from [`pg_bin`].
    pub fn backup_config(&self, sub: &str) -> BackupConfig {
        let mut config = BackupConfig::new(self.dir().join(sub));
        config.pg_bin_dir = Some(pg_bin());
        config
    }
}

/// Fills `database` with a small, varied schema: several schemas, types,
/// an empty table, a partitioned table and a `_prisma_migrations` history.
pub async fn seed(cluster: &PgCluster, database: &str) {
    let mut c = cluster.connect(database).await;
    sqlx::raw_sql(
        r#"
        CREATE TABLE accounts (id bigserial PRIMARY KEY, name text NOT NULL, balance numeric(12,2), created timestamptz DEFAULT now());
        INSERT INTO accounts (name, balance) SELECT 'user ' || g, g * 1.5 FROM generate_series(1, 5000) g;
        CREATE TABLE events (id int PRIMARY KEY, account_id bigint REFERENCES accounts(id), payload jsonb, blob bytea);
        INSERT INTO events SELECT g, (g % 5000) + 1, jsonb_build_object('n', g, 'tags', ARRAY['a','b']), sha256(g::text::bytea) FROM generate_series(1, 20000) g;
        CREATE SCHEMA billing;
        CREATE TABLE billing."Invoice" (id int PRIMARY KEY, amount_cents int, note text);
        INSERT INTO billing."Invoice" SELECT g, g * 100, repeat('x', g % 50) FROM generate_series(1, 777) g;
        CREATE TABLE empty_table (id int);
        CREATE TABLE measurements (id int, at date NOT NULL, v float8) PARTITION BY RANGE (at);
        CREATE TABLE measurements_2024 PARTITION OF measurements FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
        CREATE TABLE measurements_2025 PARTITION OF measurements FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
        INSERT INTO measurements SELECT g, date '2024-06-01' + (g % 400), random() FROM generate_series(1, 3000) g;
        CREATE TABLE _prisma_migrations (
            id varchar(36) PRIMARY KEY, checksum varchar(64) NOT NULL, finished_at timestamptz,
            migration_name varchar(255) NOT NULL, logs text, rolled_back_at timestamptz,
            started_at timestamptz NOT NULL DEFAULT now(), applied_steps_count int NOT NULL DEFAULT 0);
        INSERT INTO _prisma_migrations (id, checksum, finished_at, migration_name, applied_steps_count) VALUES
            ('1', 'aaaa', now() - interval '2 days', '20240101000000_init', 1),
            ('2', 'bbbb', now() - interval '1 day', '20240201000000_events', 1),
            ('3', 'cccc', NULL, '20240301000000_failed', 0);
        "#,
    )
    .execute(&mut c)
    .await
    .expect("seed");
}

/// Row count of every user table, `schema.table` → rows.
pub async fn table_counts(cluster: &PgCluster, database: &str) -> Vec<(String, i64)> {
    let mut c = cluster.connect(database).await;
    let tables = sqlx::query(
        "SELECT format('%I.%I', schemaname, relname) AS t FROM pg_stat_user_tables ORDER BY schemaname, relname",
    )
    .fetch_all(&mut c)
    .await
    .expect("list tables");
    let mut counts = Vec::new();
    for t in tables {
        let name: String = t.get("t");
        let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {name}"))
            .fetch_one(&mut c)
            .await
            .expect("count");
        counts.push((name, n));
    }
    counts
}

/// md5 of a table's rows in primary-key order: a checksum of its contents.
pub async fn content_checksum(cluster: &PgCluster, database: &str, table: &str) -> String {
    let mut c = cluster.connect(database).await;
    sqlx::query_scalar(&format!(
        "SELECT coalesce(md5(string_agg(t::text, '|' ORDER BY t.id)), '') FROM {table} t"
    ))
    .fetch_one(&mut c)
    .await
    .expect("checksum")
}

/// A moto S3 server (the shared harness in `runway_tests::moto`) with its
/// log in a temp dir of its own.
pub struct Moto {
    server: runway_tests::moto::Moto,
    pub endpoint: String,
    _logs: tempfile::TempDir,
}

impl Moto {
    /// `None` (outside CI) when `moto_server` is not installed.
    pub fn start() -> Option<Self> {
        if !require("moto_server (python3 -m pip install 'moto[server]')", runway_tests::moto::installed()) {
            return None;
        }
        let logs = tempfile::tempdir().expect("temp dir");
        let server = runway_tests::moto::Moto::start(logs.path());
        Some(Self { endpoint: server.endpoint.clone(), server, _logs: logs })
    }

    pub fn create_bucket(&self, bucket: &str) {
        self.server.create_bucket(bucket);
    }

    /// An object-store config for `bucket` on this server, with small parts
    /// so uploads are multipart with many parts.
    pub fn store_config(&self, bucket: &str, prefix: &str) -> ObjectStoreConfig {
        ObjectStoreConfig {
            bucket: bucket.into(),
            prefix: prefix.into(),
            endpoint: Some(self.endpoint.clone()),
            region: Some("us-east-1".into()),
            access_key_id: Some(runway_tests::moto::ACCESS_KEY_ID.into()),
            secret_access_key: Some(runway_tests::moto::SECRET_ACCESS_KEY.into()),
            session_token: None,
            allow_http: true,
            part_bytes: 64 * 1024,
        }
    }
}

/// Flips one byte of `path` at `offset`.
pub fn flip_byte(path: &Path, offset: usize) {
    let mut bytes = std::fs::read(path).expect("read");
    bytes[offset] ^= 0x01;
    std::fs::write(path, bytes).expect("write");
}

/// SHA-256 hex of a file, computed independently of the code under test.
pub fn sha256_file(path: &Path) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(std::fs::read(path).expect("read")))
}

/// Runs `pg_restore --list` on a dump, returning whether it succeeded.
pub fn pg_restore_lists(dump: &Path) -> bool {
    Command::new(pg_bin().join("pg_restore"))
        .arg("--list")
        .arg(dump)
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
