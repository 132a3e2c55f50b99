//! Benchmark: apply a generated history of realistic Prisma-style migrations
//! to fresh databases with runway and with `psql -v ON_ERROR_STOP=1 -f` per
//! file, in the same run, and print the ratio. Target: runway ≤ 0.5 × psql.
//!
//! ```text
//! cargo bench -p runway-tests --bench migrate -- [--migrations 400] [--rounds 3]
//!     [--server-url postgres://user@127.0.0.1:5432] [--pg-bin /usr/lib/postgresql/15/bin]
//! ```
//!
//! Without `--server-url` it starts the test harness's throwaway cluster
//! ([`runway_tests::postgres::Postgres`]) and stops it at the end.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use runway_engine::migrate::{self, MigrateConfig, source};
use runway_engine::progress::Progress;
use runway_tests::postgres::Postgres;

#[derive(Parser)]
#[command(about = "Compare runway's deploy with psql -f per file on a generated history")]
struct Args {
    /// How many migrations to generate.
    #[arg(long, default_value_t = 400)]
    migrations: usize,
    /// Fresh databases per runner; the median is reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// An existing server to create scratch databases on (superuser URL, no database part).
    #[arg(long)]
    server_url: Option<String>,
    /// Where initdb, postgres and psql live.
    #[arg(long, default_value = "/usr/lib/postgresql/15/bin")]
    pg_bin: PathBuf,
    /// Seed for the generator.
    #[arg(long, default_value_t = 7)]
    seed: u64,
}

/// A small deterministic PRNG (xorshift64*), so every run sees the same history.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
}

struct Table {
    name: String,
    columns: Vec<String>,
}

/// Generates `n` migrations shaped like a real Prisma history: tables with
/// keys, indexes and foreign keys, added columns, enums, functions and
/// triggers with dollar-quoted bodies, backfills, renames, concurrent indexes.
fn generate(n: usize, seed: u64) -> Vec<(String, String)> {
    let mut rng = Rng(seed.max(1));
    let mut tables: Vec<Table> = Vec::new();
    let mut enums: Vec<(String, usize)> = Vec::new();
    let mut out = Vec::with_capacity(n);
    let types =
        ["TEXT", "INTEGER", "BOOLEAN NOT NULL DEFAULT false", "TIMESTAMP(3)", "DOUBLE PRECISION", "JSONB"];
    for i in 0..n {
        let stamp = 20230101000000u64 + i as u64 * 37;
        let roll = if tables.len() < 3 { 0 } else { rng.below(100) };
        let (slug, sql) = match roll {
            0..=29 => {
                let t = format!("Model{i}");
                let mut cols = vec!["id".to_owned(), "createdAt".to_owned()];
                let mut sql = format!(
                    "-- CreateTable\nCREATE TABLE \"{t}\" (\n    \"id\" SERIAL NOT NULL,\n    \"createdAt\" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,\n"
                );
                for c in 0..2 + rng.below(5) {
                    let col = format!("field{c}");
                    sql.push_str(&format!("    \"{col}\" {},\n", types[rng.below(types.len())]));
                    cols.push(col);
                }
                let parent = (!tables.is_empty() && rng.chance(60))
                    .then(|| tables[rng.below(tables.len())].name.clone());
                if parent.is_some() {
                    sql.push_str("    \"parentId\" INTEGER,\n");
                    cols.push("parentId".into());
                }
                sql.push_str(&format!("\n    CONSTRAINT \"{t}_pkey\" PRIMARY KEY (\"id\")\n);\n\n"));
                sql.push_str(&format!(
                    "-- CreateIndex\nCREATE INDEX \"{t}_createdAt_idx\" ON \"{t}\"(\"createdAt\");\n\n"
                ));
                if let Some(p) = parent {
                    sql.push_str(&format!(
                        "-- AddForeignKey\nALTER TABLE \"{t}\" ADD CONSTRAINT \"{t}_parentId_fkey\" FOREIGN KEY (\"parentId\") REFERENCES \"{p}\"(\"id\") ON DELETE SET NULL ON UPDATE CASCADE;\n"
                    ));
                }
                tables.push(Table { name: t.clone(), columns: cols });
                (format!("create_{}", t.to_lowercase()), sql)
            }
            30..=49 => {
                let k = rng.below(tables.len());
                let t = &mut tables[k];
                let mut sql = format!("-- AlterTable\nALTER TABLE \"{}\"", t.name);
                let k = 1 + rng.below(3);
                for c in 0..k {
                    let col = format!("extra{i}_{c}");
                    let sep = if c == 0 { " " } else { ",\n" };
                    sql.push_str(&format!("{sep}ADD COLUMN     \"{col}\" {}", types[rng.below(types.len())]));
                    t.columns.push(col);
                }
                sql.push_str(";\n");
                (format!("add_fields_{}", t.name.to_lowercase()), sql)
            }
            50..=59 => {
                if enums.is_empty() || rng.chance(50) {
                    let e = format!("Status{i}");
                    enums.push((e.clone(), 3));
                    let k = rng.below(tables.len());
                    let t = &mut tables[k];
                    let col = format!("status{i}");
                    t.columns.push(col.clone());
                    (
                        format!("enum_{}", e.to_lowercase()),
                        format!(
                            "-- CreateEnum\nCREATE TYPE \"{e}\" AS ENUM ('ACTIVE', 'PAUSED', 'DELETED');\n\n-- AlterTable\nALTER TABLE \"{}\" ADD COLUMN     \"{col}\" \"{e}\" NOT NULL DEFAULT 'ACTIVE';\n",
                            t.name
                        ),
                    )
                } else {
                    let k = rng.below(enums.len());
                    let (e, count) = &mut enums[k];
                    *count += 1;
                    (
                        format!("enum_value_{i}"),
                        format!("-- AlterEnum\nALTER TYPE \"{e}\" ADD VALUE 'V{count}';\n"),
                    )
                }
            }
            60..=69 => {
                let t = &tables[rng.below(tables.len())];
                let col = &t.columns[rng.below(t.columns.len())];
                (
                    format!("index_{i}"),
                    format!(
                        "-- CreateIndex\nCREATE INDEX \"{}_{col}_{i}_idx\" ON \"{}\"(\"{col}\");\n",
                        t.name, t.name
                    ),
                )
            }
            70..=79 => {
                let t = &tables[rng.below(tables.len())];
                (
                    format!("trigger_{i}"),
                    format!(
                        "-- touch trigger; the body has semicolons\nCREATE OR REPLACE FUNCTION touch_{i}() RETURNS trigger AS $$\nBEGIN\n  NEW.\"createdAt\" := COALESCE(NEW.\"createdAt\", now()); -- keep; it\n  RETURN NEW;\nEND;\n$$ LANGUAGE plpgsql;\n\nCREATE TRIGGER \"{t}_touch_{i}\" BEFORE INSERT ON \"{t}\" FOR EACH ROW EXECUTE FUNCTION touch_{i}();\n",
                        t = t.name
                    ),
                )
            }
            80..=89 => {
                let t = &tables[rng.below(tables.len())];
                (
                    format!("backfill_{i}"),
                    format!(
                        "INSERT INTO \"{t}\" (\"createdAt\") SELECT now() - g * interval '1 minute' FROM generate_series(1, 20) g;\nUPDATE \"{t}\" SET \"createdAt\" = \"createdAt\" WHERE \"id\" % 2 = 0;\nDO $do$ BEGIN IF (SELECT count(*) FROM \"{t}\") < 0 THEN RAISE EXCEPTION 'impossible; really'; END IF; END $do$;\n",
                        t = t.name
                    ),
                )
            }
            90..=94 => {
                let k = rng.below(tables.len());
                let t = &mut tables[k];
                let col = format!("renamed{i}");
                let from = format!("extra_r{i}");
                t.columns.push(col.clone());
                (
                    format!("rename_{i}"),
                    format!(
                        "ALTER TABLE \"{t}\" ADD COLUMN \"{from}\" VARCHAR(50);\nALTER TABLE \"{t}\" ALTER COLUMN \"{from}\" SET DATA TYPE TEXT;\nALTER TABLE \"{t}\" RENAME COLUMN \"{from}\" TO \"{col}\";\n",
                        t = t.name
                    ),
                )
            }
            _ => {
                let t = &tables[rng.below(tables.len())];
                (
                    format!("concurrent_index_{i}"),
                    format!(
                        "CREATE INDEX CONCURRENTLY \"{}_c{i}_idx\" ON \"{}\" (\"id\", \"createdAt\");\n",
                        t.name, t.name
                    ),
                )
            }
        };
        out.push((format!("{stamp}_{slug}"), sql));
    }
    out
}

fn psql(bin: &Path, url: &str, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(bin.join("psql"))
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url])
        .args(args)
        .output()?;
    if !out.status.success() {
        bail!("psql {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse_from(runway_tests::bench::args());
    if args.migrations == 0 || args.rounds == 0 {
        bail!("--migrations and --rounds must be at least 1");
    }
    let cluster = args.server_url.is_none().then(Postgres::start_temp);
    let server = match (&args.server_url, &cluster) {
        (Some(url), _) => url.trim_end_matches('/').to_owned(),
        (None, Some(pg)) => pg.url("").trim_end_matches('/').to_owned(),
        (None, None) => unreachable!("a cluster is started when no --server-url is given"),
    };

    let history = generate(args.migrations, args.seed);
    let folder = tempfile::tempdir()?;
    std::fs::write(folder.path().join("migration_lock.toml"), "provider = \"postgresql\"\n")?;
    for (name, sql) in &history {
        std::fs::create_dir(folder.path().join(name))?;
        std::fs::write(folder.path().join(name).join("migration.sql"), sql)?;
    }
    let statements: usize =
        history.iter().map(|(_, sql)| migrate::parse::parse(sql).map(|s| s.len()).unwrap_or(0)).sum();
    let bytes: usize = history.iter().map(|(_, sql)| sql.len()).sum();
    println!("history: {} migrations, {statements} statements, {bytes} bytes", history.len());

    let lint_started = Instant::now();
    let files = runway_proto::bundle::migrations(&source::read_folder(folder.path())?)?;
    let report = migrate::lint::lint_files(&files.iter().collect::<Vec<_>>());
    if !report.parse_errors.is_empty() {
        bail!("the generated history does not parse: {:?}", report.parse_errors[0]);
    }
    println!("lint (offline, all files): {:?}, {} findings", lint_started.elapsed(), report.findings.len());

    let mut runway_times = Vec::new();
    let mut psql_times = Vec::new();
    for round in 0..args.rounds {
        // runway: read the folder and deploy it, bookkeeping included.
        let db = format!("bench_runway_{round}");
        psql(&args.pg_bin, &format!("{server}/postgres"), &["-c", &format!("CREATE DATABASE {db}")])?;
        let url = format!("{server}/{db}");
        let started = Instant::now();
        let files = runway_proto::bundle::migrations(&source::read_folder(folder.path())?)?;
        let deployed = migrate::deploy(&url, &files, &MigrateConfig::default(), &Progress::discard()).await?;
        let took = started.elapsed();
        if deployed.applied.len() != history.len() {
            bail!("runway applied {} of {}", deployed.applied.len(), history.len());
        }
        runway_times.push(took);

        // psql: one `psql -v ON_ERROR_STOP=1 -f` per file, in order.
        let db = format!("bench_psql_{round}");
        psql(&args.pg_bin, &format!("{server}/postgres"), &["-c", &format!("CREATE DATABASE {db}")])?;
        let url = format!("{server}/{db}");
        let started = Instant::now();
        for (name, _) in &history {
            let file = folder.path().join(name).join("migration.sql");
            psql(&args.pg_bin, &url, &["-f", file.to_str().context("temp paths are UTF-8")?])?;
        }
        let psql_took = started.elapsed();
        psql_times.push(psql_took);
        println!("round {}: runway {took:.2?}, psql {psql_took:.2?}", round + 1);
    }
    let (r, p) = (median(runway_times), median(psql_times));
    let ratio = r.as_secs_f64() / p.as_secs_f64();
    println!(
        "median of {} rounds: runway {r:.2?} ({:.2} ms/migration), psql -f per file {p:.2?} ({:.2} ms/migration)",
        args.rounds,
        r.as_secs_f64() * 1e3 / history.len() as f64,
        p.as_secs_f64() * 1e3 / history.len() as f64
    );
    println!(
        "ratio runway/psql = {ratio:.3} (target <= 0.5): {}",
        if ratio <= 0.5 { "PASS" } else { "FAIL" }
    );
    drop(cluster);
    if ratio > 0.5 {
        std::process::exit(2);
    }
    Ok(())
}
