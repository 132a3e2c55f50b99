//! Benchmark: runway's backup against plain `pg_dump` / `pg_restore`, in
//! the same run, on the same database. Not run in CI (needs a ≥ 1 GB database).
//!
//! ```text
//! cargo bench -p runway-tests --bench backup -- --scale 70 --rounds 5
//! cargo bench -p runway-tests --bench backup -- \
//!     --database-url postgres://postgres@127.0.0.1:PORT/bench --dir /tmp/bench-out --rounds 5
//! ```
//!
//! Without `--database-url` it starts the test harness's throwaway cluster
//! and fills it with `pgbench -i -s SCALE` (scale 70 ≈ 1 GB, about a minute).
//!
//! Each round runs, one after the other (so the variants alternate):
//!
//! - `pg_dump -Fc -f FILE`, then `pg_restore` of that file into an empty
//!   database (the manual runbook's dump and test restore);
//! - runway's backup without a test restore, as `runway backup create`
//!   takes it by default (`format = "auto"`, default `jobs`; row counts
//!   read from the dump);
//! - runway's verified backup: the test restore streamed alongside the dump
//!   (post-data skipped, the default), and with `--post-data` also a run
//!   that restores indexes and constraints in the scratch database.
//!
//! Prints every run, then the median over rounds of each round's ratios:
//! runway backup ÷ plain dump (goal ≤ 1.05) and runway verified ÷ (plain
//! dump + plain restore) (goal ≤ 0.7). `--directory` and `--custom` add
//! runway's directory format (`--jobs`) and custom format, forced;
//! `--dump-only` leaves out the restores (plain and proven).

use std::path::PathBuf;
use std::time::Instant;

use clap::Parser;
use runway_engine::backup::{self, BackupConfig, DumpFormat, Manifest, PostData};
use runway_engine::database::Database;
use runway_engine::progress::Progress;
use runway_tests::bench::{median, pgbench_database};
use runway_tests::postgres::Postgres;

/// Compare runway backups with plain pg_dump and pg_restore.
#[derive(Parser)]
struct Args {
    /// Database to dump (≥ 1 GB for meaningful figures). Without it, a
    /// throwaway cluster is filled with `pgbench -i -s SCALE`.
    #[arg(long, env = "DATABASE_URL")]
    database_url: Option<String>,
    /// pgbench scale of the throwaway database (70 ≈ 1 GB).
    #[arg(long, default_value_t = 70)]
    scale: u32,
    /// Scratch folder for the dumps (emptied between runs); a temp dir by default.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Folder with pg_dump.
    #[arg(long, default_value = "/usr/lib/postgresql/15/bin")]
    pg_bin_dir: PathBuf,
    /// Parallel jobs for directory format and post-data (default: the
    /// backup config's, as `runway backup create` takes them).
    #[arg(long)]
    jobs: Option<u32>,
    /// Rounds; each runs every variant once, in turn. Medians are reported.
    #[arg(long, default_value_t = 5)]
    rounds: u32,
    /// Also a verified backup with post-data restored in the scratch database.
    #[arg(long)]
    post_data: bool,
    /// Also runway's directory format.
    #[arg(long)]
    directory: bool,
    /// Also runway's custom format, forced.
    #[arg(long)]
    custom: bool,
    /// Dumps only: no plain restore, no proven backups.
    #[arg(long)]
    dump_only: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Variant {
    PlainDump,
    PlainRestore,
    Runway,
    RunwayVerified,
    RunwayVerifiedPostData,
    RunwayDirectory,
    RunwayCustom,
}

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Self::PlainDump => "pg_dump -Fc -f FILE",
            Self::PlainRestore => "pg_restore -d EMPTY FILE",
            Self::Runway => "runway backup (default)",
            Self::RunwayVerified => "runway backup, test restore",
            Self::RunwayVerifiedPostData => "… with post-data",
            Self::RunwayDirectory => "runway backup -Fd",
            Self::RunwayCustom => "runway backup -Fc",
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse_from(runway_tests::bench::args());
    let (_cluster, database_url) = match &args.database_url {
        Some(url) => (None, url.clone()),
        None => {
            let pg = Postgres::start_temp();
            let url =
                pgbench_database(&pg, "bench", &args.pg_bin_dir, args.scale).map_err(anyhow::Error::msg)?;
            (Some(pg), url)
        }
    };
    let scratch = tempfile::Builder::new().prefix("runway-backup-bench-").tempdir()?;
    let dir = args.dir.clone().unwrap_or_else(|| scratch.path().join("out"));
    let database = Database::parse(&database_url)?;
    let mut variants = if args.dump_only {
        vec![Variant::PlainDump, Variant::Runway]
    } else {
        vec![Variant::PlainDump, Variant::PlainRestore, Variant::Runway, Variant::RunwayVerified]
    };
    if args.post_data && !args.dump_only {
        variants.push(Variant::RunwayVerifiedPostData);
    }
    if args.directory {
        variants.push(Variant::RunwayDirectory);
    }
    if args.custom {
        variants.push(Variant::RunwayCustom);
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("{cores} core(s) available; the default format is chosen by `format = \"auto\"`");
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    let mut last_manifest: Option<Manifest> = None;

    // Warm the OS cache so the first run is not penalised.
    warm(&database).await?;

    for round in 1..=args.rounds {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        for (i, variant) in variants.iter().enumerate() {
            let started = Instant::now();
            let note = match variant {
                Variant::PlainDump => {
                    let mut cmd = tokio::process::Command::new(args.pg_bin_dir.join("pg_dump"));
                    database.apply_env(&mut cmd);
                    cmd.arg("-Fc").arg("-f").arg(dir.join("plain.dump"));
                    let status = cmd.status().await?;
                    anyhow::ensure!(status.success(), "pg_dump failed: {status}");
                    format!("{} bytes", std::fs::metadata(dir.join("plain.dump"))?.len())
                }
                Variant::PlainRestore => {
                    let target = database.with_database("bench_plain_restore");
                    admin(&database, "DROP DATABASE IF EXISTS bench_plain_restore").await?;
                    admin(&database, "CREATE DATABASE bench_plain_restore").await?;
                    let started = Instant::now();
                    let mut cmd = tokio::process::Command::new(args.pg_bin_dir.join("pg_restore"));
                    target.apply_env(&mut cmd);
                    cmd.arg("-d").arg("bench_plain_restore").arg(dir.join("plain.dump"));
                    let status = cmd.status().await?;
                    anyhow::ensure!(status.success(), "pg_restore failed: {status}");
                    let secs = started.elapsed().as_secs_f64();
                    admin(&database, "DROP DATABASE bench_plain_restore").await?;
                    times[i].push(secs);
                    println!("round {round}: {:<30} {secs:>8.2} s", variant.name());
                    continue;
                }
                _ => {
                    let mut config = BackupConfig::new(dir.join("runway"));
                    config.pg_bin_dir = Some(args.pg_bin_dir.clone());
                    config.jobs = args.jobs.unwrap_or(config.jobs);
                    config.format = match variant {
                        Variant::RunwayDirectory => DumpFormat::Directory,
                        Variant::RunwayCustom => DumpFormat::Custom,
                        // `runway backup create`'s default; the proven
                        // variants take it too (it streams: custom).
                        _ => DumpFormat::Auto,
                    };
                    config.test_restore_post_data = if *variant == Variant::RunwayVerifiedPostData {
                        PostData::Restore
                    } else {
                        PostData::Skip
                    };
                    let test_restore =
                        matches!(variant, Variant::RunwayVerified | Variant::RunwayVerifiedPostData)
                            .then_some(database_url.as_str());
                    let t0 = Instant::now();
                    let progress = Progress::new(move |u| {
                        if args_verbose() && u.counters.is_none() {
                            eprintln!(
                                "    {:>6.2} s [{}] {}",
                                t0.elapsed().as_secs_f64(),
                                u.phase,
                                u.message
                            );
                        }
                    });
                    let manifest =
                        backup::create_with(&database_url, &config, "bench", "", test_restore, &progress)
                            .await?;
                    let note = format!(
                        "{:?} format, {} bytes, {} rows counted in the {}{}",
                        manifest.format,
                        manifest.bytes,
                        manifest.tables.iter().map(|t| t.rows).sum::<i64>(),
                        manifest.rows_counted_in,
                        manifest.verification.as_ref().map_or(String::new(), |v| format!(
                            ", proven ({}, post-data {})",
                            v.when, v.post_data
                        ))
                    );
                    last_manifest = Some(manifest);
                    note
                }
            };
            let secs = started.elapsed().as_secs_f64();
            times[i].push(secs);
            println!("round {round}: {:<30} {secs:>8.2} s  {note}", variant.name());
        }
    }
    let _ = std::fs::remove_dir_all(&dir);

    let t = |v: Variant| variants.iter().position(|x| *x == v).map(|i| times[i].clone());
    println!("\nmedian of {} round(s):", args.rounds);
    for (i, variant) in variants.iter().enumerate() {
        println!("  {:<30} {:>8.2} s", variant.name(), median(&times[i]));
    }
    let dump = t(Variant::PlainDump).expect("plain dump");
    let restore = t(Variant::PlainRestore).unwrap_or_default();
    let ratios = |runs: &[f64], base: &dyn Fn(usize) -> f64| -> Vec<f64> {
        runs.iter().enumerate().map(|(r, secs)| secs / base(r)).collect()
    };
    let runway = ratios(&t(Variant::Runway).expect("runway"), &|r| dump[r]);
    let show = |v: &[f64]| v.iter().map(|x| format!("{x:.3}")).collect::<Vec<_>>().join(" ");
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    println!("ratios per round, then their median:");
    println!(
        "  runway backup (default) / pg_dump -Fc               {}  median {:.3} (goal ≤ 1.05: {})",
        show(&runway),
        median(&runway),
        verdict(median(&runway) <= 1.05)
    );
    if let Some(runs) = t(Variant::RunwayVerified) {
        let verified = ratios(&runs, &|r| dump[r] + restore[r]);
        println!(
            "  runway verified / (pg_dump -Fc + pg_restore)        {}  median {:.3} (goal ≤ 0.7: {})",
            show(&verified),
            median(&verified),
            verdict(median(&verified) <= 0.7)
        );
    }
    if let Some(runs) = t(Variant::RunwayCustom) {
        let custom = ratios(&runs, &|r| dump[r]);
        println!(
            "  runway -Fc / pg_dump -Fc                            {}  median {:.3}",
            show(&custom),
            median(&custom)
        );
    }
    if let Some(runs) = t(Variant::RunwayVerifiedPostData) {
        let with_post = ratios(&runs, &|r| dump[r] + restore[r]);
        println!(
            "  … with post-data / (pg_dump -Fc + pg_restore)       {}  median {:.3}",
            show(&with_post),
            median(&with_post)
        );
    }
    if let Some(runs) = t(Variant::RunwayDirectory) {
        let dir_ratio = ratios(&runs, &|r| dump[r]);
        println!(
            "  runway -Fd -j{} / pg_dump -Fc                       {}  median {:.3}",
            args.jobs.unwrap_or(BackupConfig::new("/").jobs),
            show(&dir_ratio),
            median(&dir_ratio)
        );
    }
    if let Some(m) = last_manifest {
        println!("\nlast manifest: {} tables, rows counted in the {}", m.tables.len(), m.rows_counted_in);
    }
    Ok(())
}

/// Runs one statement in the `postgres` database of `database`'s server.
async fn admin(database: &Database, sql: &str) -> anyhow::Result<()> {
    let mut db = database.with_database("postgres").connect().await?;
    sqlx::raw_sql(sql).execute(&mut db).await?;
    Ok(())
}

/// `BENCH_VERBOSE=1` prints the phases of runway's runs with timestamps.
fn args_verbose() -> bool {
    std::env::var_os("BENCH_VERBOSE").is_some()
}

/// Reads every table once so the OS cache holds the database.
async fn warm(database: &Database) -> anyhow::Result<()> {
    use sqlx::Row;
    let mut db = database.connect().await?;
    let tables = sqlx::query(
        "SELECT format('%I.%I', schemaname, relname) AS t FROM pg_stat_user_tables ORDER BY pg_relation_size(relid) DESC",
    )
    .fetch_all(&mut db)
    .await?;
    for t in tables {
        let name: String = t.get("t");
        let _: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {name}")).fetch_one(&mut db).await?;
    }
    Ok(())
}
