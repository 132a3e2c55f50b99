//! Benchmark: runway's backup against plain `pg_dump` of the same format, in
//! the same run, on the same database. Not run in CI (needs a ≥ 1 GB database).
//!
//! ```text
//! cargo bench -p runway-tests --bench backup -- --scale 70 --jobs 2 --rounds 2
//! cargo bench -p runway-tests --bench backup -- \
//!     --database-url postgres://postgres@127.0.0.1:PORT/bench --dir /tmp/bench-out --jobs 2 --rounds 2
//! ```
//!
//! Without `--database-url` it starts the test harness's throwaway cluster
//! and fills it with `pgbench -i -s SCALE` (scale 70 ≈ 1 GB, about a minute).
//!
//! Prints each run's wall time and size, then the ratios the backup issue
//! targets: runway custom ÷ plain `pg_dump -Fc > file` (goal ≤ 1.05) and
//! runway directory ÷ plain custom (goal < 1).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Instant;

use clap::Parser;
use runway_engine::backup::{self, BackupConfig, DumpFormat};
use runway_engine::database::Database;
use runway_engine::progress::Progress;
use runway_tests::postgres::Postgres;

/// Compare runway backups with plain pg_dump.
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
    /// Parallel jobs for directory format.
    #[arg(long, default_value_t = 2)]
    jobs: u32,
    /// Each variant runs this many times, interleaved; the best time counts.
    #[arg(long, default_value_t = 2)]
    rounds: u32,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Variant {
    PlainCustom,
    RunwayCustom,
    PlainDirectory,
    RunwayDirectory,
}

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Self::PlainCustom => "pg_dump -Fc > file",
            Self::RunwayCustom => "runway backup (custom)",
            Self::PlainDirectory => "pg_dump -Fd -j N",
            Self::RunwayDirectory => "runway backup (directory)",
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
            let url = pg.create_database("bench");
            eprintln!("filling a throwaway database with pgbench -i -s {} …", args.scale);
            let status = std::process::Command::new(args.pg_bin_dir.join("pgbench"))
                .args(["-i", "-q", "-s", &args.scale.to_string(), &url])
                .status()?;
            anyhow::ensure!(status.success(), "pgbench -i failed: {status}");
            (Some(pg), url)
        }
    };
    let scratch = tempfile::Builder::new().prefix("runway-backup-bench-").tempdir()?;
    let dir = args.dir.clone().unwrap_or_else(|| scratch.path().join("out"));
    let database = Database::parse(&database_url)?;
    let pg_dump = args.pg_bin_dir.join("pg_dump");
    let variants =
        [Variant::PlainCustom, Variant::RunwayCustom, Variant::PlainDirectory, Variant::RunwayDirectory];
    let mut best: Vec<(Variant, f64, u64)> = variants.iter().map(|v| (*v, f64::MAX, 0)).collect();

    // Warm the OS cache so the first run is not penalised.
    warm(&database).await?;

    for round in 1..=args.rounds {
        for (i, variant) in variants.iter().enumerate() {
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir)?;
            let started = Instant::now();
            let bytes = match variant {
                Variant::PlainCustom | Variant::PlainDirectory => {
                    let mut cmd = tokio::process::Command::new(&pg_dump);
                    database.apply_env(&mut cmd);
                    if *variant == Variant::PlainCustom {
                        let out = std::fs::File::create(dir.join("plain.dump"))?;
                        cmd.arg("-Fc").stdout(Stdio::from(out));
                    } else {
                        cmd.args(["-Fd", &format!("-j{}", args.jobs), "-f"]).arg(dir.join("plain.dir"));
                    }
                    let status = cmd.status().await?;
                    anyhow::ensure!(status.success(), "pg_dump failed: {status}");
                    dir_bytes(&dir)
                }
                Variant::RunwayCustom | Variant::RunwayDirectory => {
                    let mut config = BackupConfig::new(&dir);
                    config.pg_bin_dir = Some(args.pg_bin_dir.clone());
                    config.jobs = args.jobs;
                    config.format = if *variant == Variant::RunwayCustom {
                        DumpFormat::Custom
                    } else {
                        DumpFormat::Directory
                    };
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
                    let manifest = backup::create(&database_url, &config, "bench", "", &progress).await?;
                    manifest.bytes
                }
            };
            let secs = started.elapsed().as_secs_f64();
            println!("round {round}: {:<28} {secs:>8.2} s {:>14} bytes", variant.name(), bytes);
            if secs < best[i].1 {
                best[i] = (*variant, secs, bytes);
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);

    println!("\nbest of {} round(s):", args.rounds);
    for (variant, secs, bytes) in &best {
        println!("  {:<28} {secs:>8.2} s {:>14} bytes", variant.name(), bytes);
    }
    let t = |v: Variant| best.iter().find(|b| b.0 == v).map_or(f64::NAN, |b| b.1);
    let custom_ratio = t(Variant::RunwayCustom) / t(Variant::PlainCustom);
    let dir_ratio = t(Variant::RunwayDirectory) / t(Variant::PlainCustom);
    let dir_vs_plain_dir = t(Variant::RunwayDirectory) / t(Variant::PlainDirectory);
    println!(
        "ratio runway custom / plain custom     = {custom_ratio:.3} (goal ≤ 1.05: {})",
        if custom_ratio <= 1.05 { "met" } else { "MISSED" }
    );
    println!(
        "ratio runway directory / plain custom  = {dir_ratio:.3} (goal < 1: {})",
        if dir_ratio < 1.0 { "met" } else { "MISSED" }
    );
    println!("ratio runway directory / plain dir     = {dir_vs_plain_dir:.3}");
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

fn dir_bytes(dir: &std::path::Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let meta = entry.metadata().ok();
        if meta.as_ref().is_some_and(|m| m.is_dir()) {
            total += dir_bytes(&entry.path());
        } else {
            total += meta.map_or(0, |m| m.len());
        }
    }
    total
}
