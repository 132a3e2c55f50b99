//! Benchmark: the plan's data checks ([`predict`]) against one sequential
//! scan of the tables they read, in the same run, on the same database.
//! Not run in CI (the meaningful size is ≈ 1 GB).
//!
//! ```text
//! cargo bench -p runway-tests --bench predict -- --scale 70 --rounds 3
//! cargo bench -p runway-tests --bench predict -- \
//!     --database-url postgres://postgres@127.0.0.1:PORT/pgbench --rounds 3
//! ```
//!
//! Without `--database-url` it starts the test harness's throwaway cluster
//! and fills it with `pgbench -i -s SCALE` (scale 70 ≈ 1 GB, a minute or
//! two). With it, that database must hold pgbench's tables; the failing
//! half of each round inserts a few rows with negative `aid`s and deletes
//! them again, so give it a scratch copy.
//!
//! The bundle is two migrations of five statements on `pgbench_accounts`
//! that a team could write ([`STATEMENTS`]): `SET NOT NULL`, a CHECK, a
//! foreign key to `pgbench_branches`, a unique index and `ALTER COLUMN …
//! TYPE bigint`. Every table is read once before round 1, so the baseline
//! and the checks both read from a warm cache (PostgreSQL's shared buffers
//! and the OS page cache). Each round, for clean data and then for data
//! that makes three of the statements fail (three rows each: NULL
//! `filler`, a `bid` without a branch, an `abalance` the CHECK refuses):
//!
//! 1. the baseline: `SELECT count(*)` of every table the checks read, on a
//!    fresh connection, each query timed on its own;
//! 2. `predict` on the whole bundle (the findings must be exactly the
//!    expected ones, with example keys when failing);
//! 3. `predict` on a bundle with no data check (session and parse only),
//!    then on each statement alone: where the time goes.
//!
//! Around every run the table and database statistics are read (after the
//! run's backends flushed them): heap blocks of the tables read, shown as
//! a multiple of the baseline's (how many full scans the checks made),
//! index blocks and temporary file bytes.
//!
//! Prints every run, then the medians over rounds and the ratio predict ÷
//! seq scan per bundle (the target: ≤ 2×). `--data-check-timeout-ms` is
//! the checks' `statement_timeout` (the config key of the same name); a
//! check that runs longer is unknown, which the output flags.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use clap::Parser;
use runway_engine::database::Database;
use runway_engine::migrate::predict::{self, Certainty, DataReport, PredictConfig};
use runway_proto::bundle::MigrationFile;
use runway_tests::bench::{median, pgbench_database, size};
use runway_tests::postgres::Postgres;
use sqlx::{Connection, PgConnection};

/// Time the plan's data checks against a sequential scan of what they read.
#[derive(Parser)]
struct Args {
    /// An existing pgbench database to measure instead of a throwaway one
    /// (rows are inserted and deleted in it: a scratch copy only).
    #[arg(long, env = "DATABASE_URL")]
    database_url: Option<String>,
    /// pgbench scale of the throwaway database (70 ≈ 1 GB).
    #[arg(long, default_value_t = 70)]
    scale: u32,
    /// Rounds; each measures clean and failing data in turn. Medians are reported.
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// `statement_timeout` of each check query, as `[migrate] data_check_timeout`
    /// in the migrate config (default 10 s there too).
    #[arg(long, default_value_t = 10_000)]
    data_check_timeout_ms: u64,
    /// Folder with pgbench.
    #[arg(long, default_value = "/usr/lib/postgresql/15/bin")]
    pg_bin_dir: PathBuf,
}

/// The tables the checks read: the baseline scans each once.
const TABLES: [&str; 2] = ["pgbench_accounts", "pgbench_branches"];

/// The baseline's session: a sequential scan, never the primary key's
/// index (`count(*)` over a vacuumed table would read the index only).
/// Parallel workers stay as the server sets them, for both sides.
const SEQ_SCAN_ONLY: &str =
    "SET enable_indexscan = off; SET enable_indexonlyscan = off; SET enable_bitmapscan = off";

/// One statement of the bundle.
struct Statement {
    /// A few words for the output.
    label: &'static str,
    sql: &'static str,
    /// The kind of finding it makes when the data breaks it.
    kind: &'static str,
    /// Whether the failing rows ([`BREAK_DATA`]) make it fail.
    fails: bool,
}

/// The bundle, in apply order; the first three are one migration, the
/// last two another.
const STATEMENTS: [Statement; 5] = [
    Statement {
        label: "SET NOT NULL (filler)",
        sql: "ALTER TABLE pgbench_accounts ALTER COLUMN filler SET NOT NULL;",
        kind: "not-null",
        fails: true,
    },
    Statement {
        label: "CHECK (abalance > -1e9)",
        sql: "ALTER TABLE pgbench_accounts ADD CONSTRAINT pgbench_accounts_abalance_check \
              CHECK (abalance > -1000000000);",
        kind: "check",
        fails: true,
    },
    Statement {
        label: "FOREIGN KEY (bid) → branches",
        sql: "ALTER TABLE pgbench_accounts ADD CONSTRAINT pgbench_accounts_bid_fkey \
              FOREIGN KEY (bid) REFERENCES pgbench_branches (bid);",
        kind: "foreign-key",
        fails: true,
    },
    Statement {
        label: "UNIQUE INDEX (aid, bid)",
        sql: "CREATE UNIQUE INDEX pgbench_accounts_aid_bid_key ON pgbench_accounts (aid, bid);",
        kind: "unique",
        fails: false,
    },
    Statement {
        label: "abalance TYPE bigint",
        sql: "ALTER TABLE pgbench_accounts ALTER COLUMN abalance TYPE bigint;",
        kind: "cast",
        fails: false,
    },
];

/// Rows each failing statement trips over (negative `aid`s: easy to
/// delete, and the first examples in key order).
const BAD_ROWS: i64 = 3;

/// Makes [`BAD_ROWS`] rows break each statement marked `fails`.
const BREAK_DATA: &str = "INSERT INTO pgbench_accounts (aid, bid, abalance, filler) \
     SELECT -g, 1, 0, NULL FROM generate_series(1, 3) AS g \
     UNION ALL SELECT -3 - g, 1000000, 0, '' FROM generate_series(1, 3) AS g \
     UNION ALL SELECT -6 - g, 1, -2000000000, '' FROM generate_series(1, 3) AS g";

/// Removes what [`BREAK_DATA`] inserted.
const MEND_DATA: &str = "DELETE FROM pgbench_accounts WHERE aid < 0";

/// A bundle whose only statement reads no rows: what `predict` costs
/// before any check (session, parse, close).
const NO_CHECKS: &str = "CREATE TABLE bench_predict_no_checks (id integer);";

fn bundle() -> Vec<MigrationFile> {
    let sql = |range: std::ops::Range<usize>| {
        STATEMENTS[range].iter().map(|s| format!("{}\n", s.sql)).collect::<Vec<_>>().join("\n")
    };
    vec![
        migration("20250401000000_account_constraints", sql(0..3)),
        migration("20250402000000_account_branch_key_and_bigint_balance", sql(3..5)),
    ]
}

fn migration(name: &str, sql: String) -> MigrationFile {
    MigrationFile { name: name.into(), sql, down: None }
}

/// Block and byte counters of the server's statistics.
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
struct Io {
    /// Heap blocks of [`TABLES`] read or found in shared buffers.
    heap_blocks: i64,
    /// Index blocks of [`TABLES`] read or found in shared buffers.
    index_blocks: i64,
    /// Temporary file bytes written in the database (sorts, hashes spilled).
    temp_bytes: i64,
}

impl Io {
    fn minus(self, before: Io) -> Io {
        Io {
            heap_blocks: self.heap_blocks - before.heap_blocks,
            index_blocks: self.index_blocks - before.index_blocks,
            temp_bytes: self.temp_bytes - before.temp_bytes,
        }
    }
}

/// Reads the statistics over a connection of its own; each delta waits
/// until the backends measured have flushed theirs.
struct Meter {
    db: PgConnection,
    last: Io,
}

impl Meter {
    async fn open(database: &Database) -> anyhow::Result<Self> {
        let mut meter = Self { db: database.connect().await?, last: Io::default() };
        meter.last = meter.read().await?;
        Ok(meter)
    }

    async fn read(&mut self) -> anyhow::Result<Io> {
        let (heap_blocks, index_blocks, temp_bytes): (i64, i64, i64) = sqlx::query_as(
            "SELECT coalesce(sum(heap_blks_read + heap_blks_hit), 0)::bigint, \
                    coalesce(sum(coalesce(idx_blks_read, 0) + coalesce(idx_blks_hit, 0)), 0)::bigint, \
                    (SELECT temp_bytes FROM pg_stat_database WHERE datname = current_database()) \
               FROM pg_statio_user_tables WHERE relname = ANY ($1)",
        )
        .bind(TABLES)
        .fetch_one(&mut self.db)
        .await?;
        Ok(Io { heap_blocks, index_blocks, temp_bytes })
    }

    /// What was counted since the last call, once the counters stopped
    /// moving (a backend flushes its statistics when it exits or idles).
    async fn delta(&mut self) -> anyhow::Result<Io> {
        let mut now = self.read().await?;
        for _ in 0..20 {
            tokio::time::sleep(Duration::from_millis(150)).await;
            let again = self.read().await?;
            if again == now {
                break;
            }
            now = again;
        }
        let delta = now.minus(self.last);
        self.last = now;
        Ok(delta)
    }
}

/// One baseline: `count(*)` of each of [`TABLES`].
struct Scan {
    /// Per table, in [`TABLES`] order.
    secs: Vec<f64>,
    io: Io,
}

impl Scan {
    fn total(&self) -> f64 {
        self.secs.iter().sum()
    }
}

/// One `predict` run.
struct Run {
    secs: f64,
    /// Queries `predict` sent ([`DataReport::checks`]).
    checks: usize,
    /// Certain failures found.
    failing: usize,
    /// Checks that gave no answer (timed out or errored).
    unknown: usize,
    io: Io,
}

/// Everything measured on one state of the data in one round.
struct Phase {
    scan: Scan,
    bundle: Run,
    no_checks: Run,
    /// One per statement, in [`STATEMENTS`] order.
    singles: Vec<Run>,
}

/// One round: clean data, then failing data.
struct Round {
    clean: Phase,
    failing: Phase,
}

/// What the bench needs about the database it runs on.
struct Bench {
    url: String,
    database: Database,
    config: PredictConfig,
    meter: Meter,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse_from(runway_tests::bench::args());
    ensure!(args.rounds > 0, "--rounds must be at least 1");
    let (_cluster, url) = match &args.database_url {
        Some(url) => (None, url.clone()),
        None => {
            let pg = Postgres::start_temp();
            let url = fill(&pg, &args)?;
            (Some(pg), url)
        }
    };
    let database = Database::parse(&url)?;
    let meter = Meter::open(&database).await?;
    let config = PredictConfig { statement_timeout: Duration::from_millis(args.data_check_timeout_ms) };
    let mut bench = Bench { url, database, config, meter };
    bench.admin(MEND_DATA).await.context("removing rows left by an earlier run")?;
    let setting = bench.describe().await?;
    println!("{setting}");
    bench.warm().await?;

    let mut rounds = Vec::new();
    for n in 1..=args.rounds {
        println!("\nround {n}, clean data:");
        let clean = bench.phase(false).await.with_context(|| format!("round {n}, clean data"))?;
        bench.admin(BREAK_DATA).await.context("inserting the failing rows")?;
        println!("round {n}, failing data ({BAD_ROWS} rows break each of three statements):");
        let failing = bench.phase(true).await.with_context(|| format!("round {n}, failing data"));
        bench.admin(MEND_DATA).await.context("deleting the failing rows")?;
        rounds.push(Round { clean, failing: failing? });
    }
    print_summary(&setting, &rounds, args.data_check_timeout_ms);
    Ok(())
}

/// A database of the throwaway cluster filled by `pgbench -i -s scale`.
fn fill(pg: &Postgres, args: &Args) -> anyhow::Result<String> {
    pgbench_database(pg, "bench", &args.pg_bin_dir, args.scale).map_err(anyhow::Error::msg)
}

impl Bench {
    /// Runs `sql` on a connection of its own, then lets the statistics settle.
    async fn admin(&mut self, sql: &str) -> anyhow::Result<()> {
        let mut db = self.database.connect().await?;
        sqlx::raw_sql(sql).execute(&mut db).await?;
        db.close().await?;
        self.meter.delta().await?;
        Ok(())
    }

    /// The database's size and the settings that decide the cache state, in words.
    async fn describe(&mut self) -> anyhow::Result<String> {
        let db = &mut self.meter.db;
        let (database, accounts): (i64, i64) = sqlx::query_as(
            "SELECT pg_database_size(current_database()), pg_total_relation_size('pgbench_accounts')",
        )
        .fetch_one(&mut *db)
        .await?;
        let (buffers, workers): (String, String) = sqlx::query_as(
            "SELECT current_setting('shared_buffers'), current_setting('max_parallel_workers_per_gather')",
        )
        .fetch_one(&mut *db)
        .await?;
        Ok(format!(
            "database {} (pgbench_accounts {} with its index); cache: warm, every table read once \
             before round 1 (shared_buffers {buffers}, the rest from the OS page cache); \
             max_parallel_workers_per_gather {workers}; baseline plan: {}",
            size(u64::try_from(database).unwrap_or(0)),
            size(u64::try_from(accounts).unwrap_or(0)),
            self.baseline_plan().await?
        ))
    }

    /// The scan nodes of the baseline's plan on `pgbench_accounts`, in a few words.
    async fn baseline_plan(&mut self) -> anyhow::Result<String> {
        let mut db = self.database.connect().await?;
        sqlx::raw_sql(SEQ_SCAN_ONLY).execute(&mut db).await?;
        let lines: Vec<String> =
            sqlx::query_scalar("EXPLAIN SELECT count(*) FROM pgbench_accounts").fetch_all(&mut db).await?;
        db.close().await?;
        let nodes: Vec<&str> = lines
            .iter()
            .map(|l| l.trim().trim_start_matches("-> ").trim())
            .filter(|l| l.contains("Scan") || l.starts_with("Workers Planned"))
            .map(|l| l.split("  (").next().unwrap_or(l))
            .collect();
        Ok(nodes.join(", "))
    }

    /// Reads every table once so both sides start from the same warm cache.
    async fn warm(&mut self) -> anyhow::Result<()> {
        let scan = self.scan().await?;
        println!("warm-up read: {:.3} s (every figure below reads from the warm cache)", scan.total());
        Ok(())
    }

    /// The baseline: `count(*)` of each table the checks read.
    async fn scan(&mut self) -> anyhow::Result<Scan> {
        let mut db = self.database.connect().await?;
        sqlx::raw_sql(SEQ_SCAN_ONLY).execute(&mut db).await?;
        let mut secs = Vec::new();
        for table in TABLES {
            let started = Instant::now();
            let _: i64 =
                sqlx::query_scalar(&format!("SELECT count(*) FROM {table}")).fetch_one(&mut db).await?;
            secs.push(started.elapsed().as_secs_f64());
        }
        db.close().await?;
        Ok(Scan { secs, io: self.meter.delta().await? })
    }

    /// The baseline, the whole bundle, no checks, then each statement alone.
    async fn phase(&mut self, failing: bool) -> anyhow::Result<Phase> {
        let scan = self.scan().await?;
        let parts: Vec<String> =
            TABLES.iter().zip(&scan.secs).map(|(t, s)| format!("{t} {s:.3} s")).collect();
        println!("  {:<38} {:>7.3} s  ({})", "seq scan, count(*)", scan.total(), parts.join(", "));
        let bundle = self.predict("whole bundle", &bundle(), &expected(&STATEMENTS, failing), &scan).await?;
        let no_checks = migration("20250400000000_no_checks", NO_CHECKS.into());
        let no_checks = self.predict("no data checks", &[no_checks], &[], &scan).await?;
        let mut singles = Vec::new();
        for (i, statement) in STATEMENTS.iter().enumerate() {
            let file = migration(&format!("2025040{}000000_single", i + 3), format!("{}\n", statement.sql));
            let expect = expected(std::slice::from_ref(statement), failing);
            singles.push(self.predict(statement.label, &[file], &expect, &scan).await?);
        }
        Ok(Phase { scan, bundle, no_checks, singles })
    }

    /// Times `predict` on `files` and checks its findings against `expect`
    /// (the finding kinds that must fail; a check that gave no answer is
    /// counted, not an error).
    async fn predict(
        &mut self,
        label: &str,
        files: &[MigrationFile],
        expect: &[&str],
        scan: &Scan,
    ) -> anyhow::Result<Run> {
        let pending: Vec<&MigrationFile> = files.iter().collect();
        let started = Instant::now();
        let report = predict::predict(&self.url, &pending, &self.config).await?;
        let secs = started.elapsed().as_secs_f64();
        let io = self.meter.delta().await?;
        let unknown = check_findings(&report, expect).with_context(|| format!("predict on {label}"))?;
        let certain = report.findings.iter().filter(|f| f.certainty == Certainty::WillFail).count();
        let run = Run { secs, checks: report.checks, failing: certain, unknown: unknown.len(), io };
        println!(
            "  predict, {label:<29} {secs:>7.3} s  {:>5.2}× scan  checks {:>2}, failing {}, unknown {}, {}",
            secs / scan.total(),
            run.checks,
            run.failing,
            run.unknown,
            io_words(run.io, scan.io)
        );
        for finding in unknown {
            println!("      unknown: {finding}");
        }
        Ok(run)
    }
}

/// The finding kinds `statements` must report on the given data.
fn expected(statements: &[Statement], failing: bool) -> Vec<&'static str> {
    statements.iter().filter(|s| failing && s.fails).map(|s| s.kind).collect()
}

/// Checks `report` against the expected failures: each one certain, with
/// [`BAD_ROWS`] rows and as many example keys, nothing else failing.
/// Returns the messages of the checks that gave no answer (a timeout): an
/// expected failure among them is not an error, but the figures are then
/// not of a complete check.
fn check_findings(report: &DataReport, expect: &[&str]) -> anyhow::Result<Vec<String>> {
    let mut unknown = Vec::new();
    let mut found = Vec::new();
    for f in &report.findings {
        match f.certainty {
            Certainty::Unknown => unknown.push(f.message.clone()),
            Certainty::MayFail => bail!("unexpected finding: {}", f.message),
            Certainty::WillFail => {
                ensure!(expect.contains(&f.kind.as_str()), "unexpected finding: {}", f.message);
                ensure!(
                    f.count == Some(BAD_ROWS) && f.examples.len() == BAD_ROWS as usize,
                    "expected {BAD_ROWS} rows and example keys: {} (examples {:?})",
                    f.message,
                    f.examples
                );
                found.push(f.kind.as_str());
            }
        }
    }
    let missing: Vec<&&str> = expect.iter().filter(|k| !found.contains(k)).collect();
    ensure!(
        missing.len() <= unknown.len(),
        "expected failures not found: {missing:?} (findings: {:?})",
        report.findings.iter().map(|f| &f.message).collect::<Vec<_>>()
    );
    Ok(unknown)
}

/// What a run read, next to the baseline's reads of the same tables.
fn io_words(io: Io, baseline: Io) -> String {
    format!(
        "heap {:.2}× the scan's, index {} MiB, temp {} MiB",
        io.heap_blocks as f64 / baseline.heap_blocks.max(1) as f64,
        (io.index_blocks * 8192) >> 20,
        io.temp_bytes >> 20
    )
}

fn print_summary(setting: &str, rounds: &[Round], timeout_ms: u64) {
    println!("\nmedians over {} round(s); {setting}", rounds.len());
    println!(
        "  {:<8} {:>10} {:>10} {:>8} {:>9} {:>7} {:>8} {:>11} {:>9} {:>8}",
        "data", "seq scan", "predict", "ratio", "≤ 2×?", "checks", "failing", "heap reads", "index", "temp"
    );
    for failing in [false, true] {
        let med = |f: &dyn Fn(&Phase) -> f64| median_of(rounds, failing, f);
        let ratio = med(&|p| p.bundle.secs / p.scan.total());
        let unknown = med(&|p| p.bundle.unknown as f64);
        let verdict = match () {
            _ if unknown > 0.0 => format!("{unknown} unknown (>{timeout_ms} ms)"),
            _ if ratio <= 2.0 => "met".into(),
            _ => "MISSED".into(),
        };
        println!(
            "  {:<8} {:>8.3} s {:>8.3} s {:>7.2}× {:>9} {:>7} {:>8} {:>10.2}× {:>5} MiB {:>4} MiB",
            if failing { "failing" } else { "clean" },
            med(&|p| p.scan.total()),
            med(&|p| p.bundle.secs),
            ratio,
            verdict,
            med(&|p| p.bundle.checks as f64),
            med(&|p| p.bundle.failing as f64),
            med(&|p| p.bundle.io.heap_blocks as f64 / p.scan.io.heap_blocks.max(1) as f64),
            med(&|p| ((p.bundle.io.index_blocks * 8192) >> 20) as f64),
            med(&|p| (p.bundle.io.temp_bytes >> 20) as f64),
        );
    }
    print_breakdown(rounds);
}

/// Where the time goes: each statement alone, per data state.
fn print_breakdown(rounds: &[Round]) {
    println!(
        "\nwhere the time goes: each statement alone (median; × the same round's seq scan; heap reads as"
    );
    println!("multiples of the scan's; q = queries sent):");
    println!("  {:<30} {:>34} {:>34}", "statement", "clean data", "failing data");
    let cell = |pick: &dyn Fn(&Phase) -> &Run, failing: bool| {
        let med = |f: &dyn Fn(&Phase) -> f64| median_of(rounds, failing, f);
        format!(
            "{:>7.3} s {:>6.2}× {:>5.2} reads {:>3} q",
            med(&|p| pick(p).secs),
            med(&|p| pick(p).secs / p.scan.total()),
            med(&|p| pick(p).io.heap_blocks as f64 / p.scan.io.heap_blocks.max(1) as f64),
            med(&|p| pick(p).checks as f64),
        )
    };
    let row = |label: &str, pick: &dyn Fn(&Phase) -> &Run| {
        println!("  {label:<30} {:>34} {:>34}", cell(pick, false), cell(pick, true));
    };
    row("(no data checks)", &|p| &p.no_checks);
    for (i, statement) in STATEMENTS.iter().enumerate() {
        row(statement.label, &|p| &p.singles[i]);
    }
    let sum = |failing| median_of(rounds, failing, &|p| p.singles.iter().map(|s| s.secs).sum());
    let whole = |failing| median_of(rounds, failing, &|p| p.bundle.secs);
    println!(
        "  {:<30} {:>9.3} s (whole bundle {:.3} s) {:>9.3} s (whole bundle {:.3} s)",
        "sum of the five alone",
        sum(false),
        whole(false),
        sum(true),
        whole(true)
    );
}

/// The median over rounds of `f` of the clean or the failing phase.
fn median_of(rounds: &[Round], failing: bool, f: &dyn Fn(&Phase) -> f64) -> f64 {
    median(&rounds.iter().map(|r| f(if failing { &r.failing } else { &r.clean })).collect::<Vec<_>>())
}
