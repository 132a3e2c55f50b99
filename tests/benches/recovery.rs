//! Benchmark: recovering from a failed rollout by migration (the rollout's
//! proven downs) against by restore (the rollout's backup), in the same
//! run, at two database sizes. Not run in CI (the larger size is ≈ 1 GB).
//!
//! ```text
//! cargo bench -p runway-tests --bench recovery -- --scales 10,70 --rounds 3
//! cargo bench -p runway-tests --bench recovery -- \
//!     --database-url postgres://postgres@127.0.0.1:PORT/pgbench --rounds 3
//! ```
//!
//! Without `--database-url` it starts the test harness's throwaway cluster
//! and, for each scale, fills a database with `pgbench -i -s SCALE` (scale
//! 70 ≈ 1 GB, a minute or two to fill). With it, only that database is
//! measured (`--scales` is ignored): it must hold pgbench's tables, and it
//! gets a `_prisma_migrations` table and is replaced by every restore, so
//! give it a scratch copy, never a database that matters.
//!
//! Each database is baselined first (`migrate resolve --applied
//! 0_baseline`, so pgbench's tables count as pre-existing). Each round is
//! then one rollout that fails, recovered from both ways:
//!
//! 1. the rollout's backup, taken as the DB agent's backup step takes it
//!    ([`backup::run_step`], test restore in the window as in a
//!    production environment); timed for context;
//! 2. the schema dumped, then a deploy of three migrations: two a team
//!    would write with exact downs (a column plus an audit table with an
//!    index; an enum plus a column with a default), and a third that fails
//!    (`SET NOT NULL` without the backfill): [`MigrateError::Failed`] with
//!    `database_changed`;
//! 3. recovery by migration: [`down::undo`] of the three, expecting the
//!    schema from step 2 (it proves the downs on a schema-only scratch copy
//!    first, then runs them and compares the schema);
//! 4. the same deploy again (the rows are rolled back, so it applies and
//!    fails again), then recovery by restore: the backup of step 1 restored
//!    as a rollout's rollback does (`RestoreBackup { replace: true }`, which
//!    the agent runs as [`backup::restore_named`] in
//!    [`RestoreMode::Replace`]: a new database restored, its row counts
//!    checked, swapped in).
//!
//! The two recoveries swap order every round (each after its own failed
//! deploy). Before each, the server checkpoints and the OS flushes its
//! dirty pages (not timed), so neither pays for the writeback of the step
//! before it. After each, the schema must equal the one from before the
//! deploy, so both figures are of a recovery that worked.
//!
//! Prints every round, then per size the medians and the ratio restore ÷
//! migration. By migration should stay flat across sizes (DDL on the live
//! database, proofs on a schema-only copy); by restore grows with the data.
//! `BENCH_VERBOSE=1` prints every progress update with its time.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{Context, bail, ensure};
use clap::Parser;
use runway_engine::backup::{self, BackupConfig, RestoreMode, RestoreOptions};
use runway_engine::database::Database;
use runway_engine::migrate::down::{self, Target};
use runway_engine::migrate::schema::{self, Schema};
use runway_engine::migrate::{self, MigrateConfig, MigrateError, ResolveAction};
use runway_engine::progress::Progress;
use runway_proto::bundle::MigrationFile;
use runway_tests::bench::{median, pgbench_database, size};
use runway_tests::postgres::Postgres;

/// Time to recover from a failed rollout: by migration against by restore.
#[derive(Parser)]
struct Args {
    /// An existing pgbench database to measure instead of throwaway ones
    /// (it is baselined and replaced by restores: a scratch copy only).
    #[arg(long, env = "DATABASE_URL")]
    database_url: Option<String>,
    /// pgbench scales of the throwaway databases, one size each (70 ≈ 1 GB).
    #[arg(long, value_delimiter = ',', default_value = "10,70")]
    scales: Vec<u32>,
    /// Rounds per size; each recovers both ways, in turn. Medians are reported.
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// Folder with pgbench, pg_dump and pg_restore.
    #[arg(long, default_value = "/usr/lib/postgresql/15/bin")]
    pg_bin_dir: PathBuf,
}

/// The environment the backup step believes it runs in: production-like,
/// so the backup is proven by a test restore in the window.
const ENVIRONMENT: &str = "production";

/// The baseline: pgbench's tables, there before runway.
const BASELINE: &str = "0_baseline";

/// The rollout's migrations, in apply order: name, up, down (none for the
/// one that fails: it never applies).
const ROLLOUT: [(&str, &str, Option<&str>); 3] = [
    (
        "20250301000000_account_notes_and_audit_log",
        "ALTER TABLE pgbench_accounts ADD COLUMN note text;\n\
         \n\
         CREATE TABLE audit_log (\n\
         \x20   id bigserial PRIMARY KEY,\n\
         \x20   aid integer NOT NULL REFERENCES pgbench_accounts (aid),\n\
         \x20   action text NOT NULL,\n\
         \x20   at timestamptz NOT NULL DEFAULT now()\n\
         );\n\
         \n\
         CREATE INDEX audit_log_aid_at_idx ON audit_log (aid, at);\n",
        Some("DROP TABLE audit_log;\n\nALTER TABLE pgbench_accounts DROP COLUMN note;\n"),
    ),
    (
        "20250302000000_account_status",
        "CREATE TYPE account_status AS ENUM ('active', 'frozen', 'closed');\n\
         \n\
         ALTER TABLE pgbench_accounts ADD COLUMN status account_status NOT NULL DEFAULT 'active';\n",
        Some("ALTER TABLE pgbench_accounts DROP COLUMN status;\n\nDROP TYPE account_status;\n"),
    ),
    (
        // Fails at the first row: nobody backfilled `note`.
        "20250303000000_note_required",
        "ALTER TABLE pgbench_accounts ALTER COLUMN note SET NOT NULL;\n",
        None,
    ),
];

/// The baseline and the rollout, as a bundle lists them.
fn migrations() -> Vec<MigrationFile> {
    let baseline = MigrationFile {
        name: BASELINE.into(),
        sql: "-- pgbench's tables (pgbench -i), there before runway.\n".into(),
        down: None,
    };
    let rollout = ROLLOUT.iter().map(|(name, sql, down)| MigrationFile {
        name: (*name).into(),
        sql: (*sql).into(),
        down: down.map(str::to_owned),
    });
    std::iter::once(baseline).chain(rollout).collect()
}

/// One database measured: its label in the output and its URL.
struct Subject {
    label: String,
    url: String,
}

/// What one recovery took, in seconds, and where the time went.
struct Recovery {
    secs: f64,
    parts: Vec<(&'static str, f64)>,
}

/// The figures of one round.
struct Round {
    database_bytes: u64,
    backup_secs: f64,
    /// One `pg_dump --schema-only` of the live database (the proof makes
    /// several, on the live database and on its scratch copy).
    schema_dump_secs: f64,
    by_migration: Recovery,
    by_restore: Recovery,
}

impl Round {
    fn ratio(&self) -> f64 {
        self.by_restore.secs / self.by_migration.secs
    }
}

/// Everything a round needs about the database it runs on.
struct Bench<'a> {
    subject: &'a Subject,
    database: Database,
    migrations: Vec<MigrationFile>,
    backup: BackupConfig,
    pg_dump: PathBuf,
    migrate: MigrateConfig,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse_from(runway_tests::bench::args());
    ensure!(args.rounds > 0, "--rounds must be at least 1");
    let scratch = tempfile::Builder::new().prefix("runway-recovery-bench-").tempdir()?;
    let mut summary: Vec<(String, Vec<Round>)> = Vec::new();
    if let Some(url) = &args.database_url {
        let subject = Subject { label: "given".into(), url: url.clone() };
        let rounds = measure(&args, &subject, scratch.path()).await?;
        summary.push((subject.label, rounds));
    } else {
        let pg = Postgres::start_temp();
        for scale in &args.scales {
            let subject = fill(&pg, &args.pg_bin_dir, *scale)?;
            let rounds = measure(&args, &subject, scratch.path()).await?;
            pg.psql("postgres", &format!("DROP DATABASE \"bench_s{scale}\""));
            summary.push((subject.label, rounds));
        }
    }
    print_summary(&summary);
    Ok(())
}

/// A database of the throwaway cluster filled by `pgbench -i -s scale`.
fn fill(pg: &Postgres, pg_bin_dir: &Path, scale: u32) -> anyhow::Result<Subject> {
    let url =
        pgbench_database(pg, &format!("bench_s{scale}"), pg_bin_dir, scale).map_err(anyhow::Error::msg)?;
    Ok(Subject { label: format!("scale {scale}"), url })
}

/// Baselines the subject's database and runs every round on it.
async fn measure(args: &Args, subject: &Subject, scratch: &Path) -> anyhow::Result<Vec<Round>> {
    let mut backup = BackupConfig::new(scratch.join("backups"));
    backup.pg_bin_dir = Some(args.pg_bin_dir.clone());
    let bench = Bench {
        subject,
        database: Database::parse(&subject.url)?,
        migrations: migrations(),
        pg_dump: backup.tool("pg_dump"),
        backup,
        migrate: MigrateConfig::default(),
    };
    let baseline = ResolveAction::Applied(BASELINE.into());
    match migrate::resolve(&subject.url, &bench.migrations, &baseline, &bench.migrate).await {
        Ok(_) | Err(MigrateError::AlreadyApplied { .. }) => {}
        Err(e) => return Err(e).context("baselining the pgbench database"),
    }
    println!("\n{}:", subject.label);
    let mut rounds = Vec::new();
    for n in 1..=args.rounds {
        rounds.push(bench.round(n).await.with_context(|| format!("{}, round {n}", subject.label))?);
    }
    Ok(rounds)
}

impl Bench<'_> {
    /// One failed rollout, recovered from both ways; odd rounds by
    /// migration first, even rounds by restore first.
    async fn round(&self, n: u32) -> anyhow::Result<Round> {
        let url = self.subject.url.as_str();
        let database_bytes = backup::space::database_size(url).await?;
        let started = Instant::now();
        let step = backup::run_step(
            url,
            &self.backup,
            ENVIRONMENT,
            &format!("rollout-bench-{n}"),
            &format!("bench-{n}"),
            &Timeline::start().progress(),
        )
        .await
        .context("the backup step")?;
        let backup_secs = started.elapsed().as_secs_f64();
        let started = Instant::now();
        let before = schema::dump(&self.database, &self.pg_dump).await?;
        let schema_dump_secs = started.elapsed().as_secs_f64();

        let migration_first = n % 2 == 1;
        let mut deploys = Vec::new();
        let (by_migration, by_restore) = if migration_first {
            deploys.push(self.deploy_failing().await?);
            let a = self.by_migration(&before).await?;
            deploys.push(self.deploy_failing().await?);
            (a, self.by_restore(&step.manifest.id, &before).await?)
        } else {
            deploys.push(self.deploy_failing().await?);
            let b = self.by_restore(&step.manifest.id, &before).await?;
            deploys.push(self.deploy_failing().await?);
            (self.by_migration(&before).await?, b)
        };
        std::fs::remove_dir_all(self.backup.backup_dir(&step.manifest.id))?;

        let round = Round { database_bytes, backup_secs, schema_dump_secs, by_migration, by_restore };
        println!(
            "  round {n} ({} first): database {}, backup step {:.2} s ({} bytes, proof {:?}), schema dump {:.2} s, failed deploys {}",
            if migration_first { "migration" } else { "restore" },
            size(database_bytes),
            backup_secs,
            step.manifest.bytes,
            step.proof,
            schema_dump_secs,
            deploys.iter().map(|s| format!("{s:.2} s")).collect::<Vec<_>>().join(", "),
        );
        for (name, r) in [("by migration", &round.by_migration), ("by restore", &round.by_restore)] {
            println!("    {name:<13} {:>8.2} s  ({})", r.secs, parts(&r.parts));
        }
        println!("    restore ÷ migration {:.1}", round.ratio());
        Ok(round)
    }

    /// Deploys the rollout, which must fail at its third migration after
    /// the first two were applied; returns how long it took.
    async fn deploy_failing(&self) -> anyhow::Result<f64> {
        let started = Instant::now();
        let outcome =
            migrate::deploy(&self.subject.url, &self.migrations, &self.migrate, &Progress::discard()).await;
        let secs = started.elapsed().as_secs_f64();
        match outcome {
            Err(MigrateError::Failed { name, database_changed: true, .. }) if name == ROLLOUT[2].0 => {
                Ok(secs)
            }
            Err(e) => bail!("expected {} to fail after the first two applied, got: {e}", ROLLOUT[2].0),
            Ok(report) => bail!("the deploy that must fail succeeded: applied {:?}", report.applied),
        }
    }

    /// Recovery A: the rollout's migrations undone by their proven downs.
    async fn by_migration(&self, before: &Schema) -> anyhow::Result<Recovery> {
        let names = ROLLOUT.iter().map(|(name, _, _)| (*name).to_owned()).collect();
        self.settle().await;
        let timeline = Timeline::start();
        let report = down::undo(
            &self.subject.url,
            &self.migrations,
            &Target::Names(names),
            Some(before),
            &self.pg_dump,
            &self.migrate,
            &timeline.progress(),
        )
        .await
        .context("recovery by migration")?;
        let secs = timeline.elapsed();
        ensure!(
            report.undone == [ROLLOUT[1].0, ROLLOUT[0].0] && report.resolved_failed == [ROLLOUT[2].0],
            "undo did other than expected: undone {:?}, resolved {:?}",
            report.undone,
            report.resolved_failed
        );
        self.check_schema(before, "by migration").await?;
        let proof = report.proof.ms as f64 / 1000.0;
        let downs = report.durations_ms.iter().sum::<u64>() as f64 / 1000.0;
        let until_proof = timeline.first(|phase, _| phase == "prove").unwrap_or(0.0);
        let check =
            match (timeline.last(|phase, _| phase == "down"), timeline.first(|phase, _| phase == "verify")) {
                (Some(down), Some(verify)) => verify - down,
                _ => f64::NAN,
            };
        let rest = secs - until_proof - proof - downs - check;
        Ok(Recovery {
            secs,
            parts: vec![
                ("lock", until_proof),
                ("proof", proof),
                ("downs", downs),
                ("schema check", check),
                ("rest", rest),
            ],
        })
    }

    /// Recovery B: the rollout's backup restored as a rollback restores it.
    async fn by_restore(&self, backup_id: &str, before: &Schema) -> anyhow::Result<Recovery> {
        // What the agent's `backup_ops::restore` runs for `RestoreBackup { replace: true }`.
        let options = RestoreOptions {
            target_url: self.subject.url.clone(),
            confirmed: true,
            rollback_of: None,
            mode: RestoreMode::Replace,
        };
        self.settle().await;
        let timeline = Timeline::start();
        let report = backup::restore_named(backup_id, &self.backup, &options, &timeline.progress())
            .await
            .context("recovery by restore")?;
        let secs = timeline.elapsed();
        ensure!(report.tables > 0 && report.rows > 0, "the restore restored nothing: {report:?}");
        self.check_schema(before, "by restore").await?;
        let restoring = timeline.first(|phase, _| phase == "restore").unwrap_or(0.0);
        let swapping = timeline.first(|_, message| message.starts_with("swapping")).unwrap_or(secs);
        Ok(Recovery {
            secs,
            parts: vec![
                ("checksums", restoring),
                ("pg_restore + counts", swapping - restoring),
                ("swap + checks", secs - swapping),
            ],
        })
    }

    /// Lets the writes of the step before settle (a `CHECKPOINT`, then the
    /// OS's `sync`), so a recovery does not pay for the writeback of the
    /// backup's test restore or of the other recovery's restore. Best
    /// effort: `CHECKPOINT` needs a superuser.
    async fn settle(&self) {
        if let Ok(mut db) = self.database.connect().await {
            let _ = sqlx::raw_sql("CHECKPOINT").execute(&mut db).await;
            let _ = sqlx::Connection::close(db).await;
        }
        let _ = tokio::process::Command::new("sync").status().await;
    }

    /// The schema must be the one from before the deploy again.
    async fn check_schema(&self, before: &Schema, how: &str) -> anyhow::Result<()> {
        let diff = schema::dump(&self.database, &self.pg_dump).await?.diff(before);
        ensure!(diff.is_empty(), "after recovery {how} the schema differs: {}", schema::summary(&diff, 8));
        Ok(())
    }
}

/// The progress updates of one run, with the time each arrived.
struct Timeline {
    started: Instant,
    events: Arc<Mutex<Vec<(f64, String, String)>>>,
}

impl Timeline {
    fn start() -> Self {
        Self { started: Instant::now(), events: Arc::default() }
    }

    /// A handle that records every update (and prints it with `BENCH_VERBOSE`).
    fn progress(&self) -> Progress {
        let (started, events) = (self.started, Arc::clone(&self.events));
        let verbose = std::env::var_os("BENCH_VERBOSE").is_some();
        Progress::new(move |u| {
            let at = started.elapsed().as_secs_f64();
            if verbose {
                eprintln!("      {at:>7.3} s [{}] {}", u.phase, u.message);
            }
            events.lock().expect("no panic while holding the lock").push((at, u.phase, u.message));
        })
    }

    fn elapsed(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// When the first update matching `(phase, message)` arrived.
    fn first(&self, matches: impl Fn(&str, &str) -> bool) -> Option<f64> {
        let events = self.events.lock().expect("no panic while holding the lock");
        events.iter().find(|(_, phase, message)| matches(phase, message)).map(|(at, _, _)| *at)
    }

    /// When the last update matching `(phase, message)` arrived.
    fn last(&self, matches: impl Fn(&str, &str) -> bool) -> Option<f64> {
        let events = self.events.lock().expect("no panic while holding the lock");
        events.iter().rev().find(|(_, phase, message)| matches(phase, message)).map(|(at, _, _)| *at)
    }
}

fn print_summary(summary: &[(String, Vec<Round>)]) {
    println!("\nmedians over rounds (ratio: median of each round's restore ÷ migration):");
    println!(
        "  {:<10} {:>10} {:>12} {:>14} {:>10} {:>13} {:>12} {:>8}",
        "size", "database", "backup step", "by migration", "(proof)", "(schema dump)", "by restore", "ratio"
    );
    let med = |rounds: &[Round], f: &dyn Fn(&Round) -> f64| median(&rounds.iter().map(f).collect::<Vec<_>>());
    for (label, rounds) in summary {
        println!(
            "  {label:<10} {:>10} {:>10.2} s {:>12.2} s {:>8.2} s {:>11.2} s {:>10.2} s {:>7.1}×",
            size(med(rounds, &|r| r.database_bytes as f64) as u64),
            med(rounds, &|r| r.backup_secs),
            med(rounds, &|r| r.by_migration.secs),
            med(rounds, &|r| part(&r.by_migration, "proof")),
            med(rounds, &|r| r.schema_dump_secs),
            med(rounds, &|r| r.by_restore.secs),
            med(rounds, &Round::ratio),
        );
    }
    if let [(small, first), .., (large, last)] = summary {
        let grow = |f: &dyn Fn(&Round) -> f64| med(last, f) / med(first, f);
        println!(
            "\nfrom {small} to {large} (database ×{:.1}): by migration ×{:.2}, by restore ×{:.2}",
            grow(&|r| r.database_bytes as f64),
            grow(&|r| r.by_migration.secs),
            grow(&|r| r.by_restore.secs),
        );
        println!(
            "expected: by migration stays flat across sizes (DDL and a proof on a schema-only copy), \
             by restore grows with the data"
        );
    }
}

fn part(recovery: &Recovery, name: &str) -> f64 {
    recovery.parts.iter().find(|(n, _)| *n == name).map_or(f64::NAN, |(_, secs)| *secs)
}

fn parts(parts: &[(&str, f64)]) -> String {
    parts.iter().map(|(name, secs)| format!("{name} {secs:.2} s")).collect::<Vec<_>>().join(", ")
}
