//! `runway migrate …`: the migrations engine straight against a database,
//! without a coordinator. The same code the agent runs.
//!
//! Exit codes (stable, for scripts):
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success: up to date / applied / nothing found / safe |
//! | 1 | error before anything changed: bad folder, bad URL, cannot connect, … |
//! | 2 | `status`: migrations pending · `lint`: warnings · `plan`: needs maintenance mode |
//! | 3 | `status`/`deploy`: a migration failed or waits for `resolve` · `lint`: dangerous statements or SQL that does not parse · `plan`: deploy would refuse |
//! | 4 | `status`: history diverged (an applied migration was modified or is missing locally) |
//! | 5 | `deploy`/`resolve`: another runner holds the migrations advisory lock; retry later |

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand, ValueEnum};
use runway_engine::migrate::lint::LintReport;
use runway_engine::migrate::source::read_folder;
use runway_engine::migrate::status::{StatusReport, exit};
use runway_engine::migrate::{self, MigrateConfig, MigrateError, PlanReport, ResolveAction};
use runway_engine::progress::Progress;
use runway_proto::bundle::{self, MigrationFile};
use serde::Serialize;

/// Exit code when the migrations advisory lock is held by someone else.
pub const EXIT_LOCKED: i32 = 5;

/// How to print results.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Lines for a person.
    #[default]
    Text,
    /// One JSON document on stdout (errors too: `{"error": …}`).
    Json,
}

/// Where the migrations and the database are.
#[derive(Debug, Clone, Args)]
pub struct Target {
    /// The Prisma migrations folder (`<name>/migration.sql` + `migration_lock.toml`).
    #[arg(long, value_name = "DIR", default_value = "prisma/migrations")]
    pub migrations: PathBuf,
    /// PostgreSQL URL, as Prisma takes it (`?schema=` included).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, value_name = "URL")]
    pub database_url: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub output: Output,
}

/// Timeouts for commands that change the database.
#[derive(Debug, Clone, Args)]
pub struct Timeouts {
    /// Seconds to wait for Prisma's migrations advisory lock (0 = do not wait).
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    pub advisory_lock_timeout: u64,
    /// `lock_timeout` for migration statements, in milliseconds (0 = server default).
    #[arg(long, value_name = "MS", default_value_t = 0)]
    pub lock_timeout: u64,
    /// `statement_timeout` for migration statements, in milliseconds (0 = server default).
    #[arg(long, value_name = "MS", default_value_t = 0)]
    pub statement_timeout: u64,
}

impl Timeouts {
    fn config(&self) -> MigrateConfig {
        MigrateConfig {
            advisory_lock_timeout_secs: self.advisory_lock_timeout,
            lock_timeout_ms: self.lock_timeout,
            statement_timeout_ms: self.statement_timeout,
        }
    }
}

/// `runway migrate`: Prisma-compatible migrations against one database.
///
/// Exit codes: 0 success; 1 error before anything changed; 2 pending (status) /
/// warnings (lint) / needs maintenance mode (plan); 3 failed migration or one
/// awaiting resolve (status, deploy) / dangerous SQL (lint) / deploy would
/// refuse (plan); 4 history diverged (status); 5 advisory lock held by
/// another runner (deploy, resolve).
#[derive(Debug, Clone, Subcommand)]
pub enum MigrateCommand {
    /// Compare the folder with `_prisma_migrations`: applied, pending, failed,
    /// modified, missing locally. Exit 0 up to date, 2 pending, 3 failed,
    /// 4 diverged, 1 error.
    Status {
        #[command(flatten)]
        target: Target,
    },
    /// Apply pending migrations (like `prisma migrate deploy`), holding
    /// Prisma's advisory lock. Exit 0 done, 3 a migration failed or a failed
    /// one awaits resolve, 5 lock held, 1 other error.
    Deploy {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        timeouts: Timeouts,
    },
    /// Record a failed migration as rolled back or a migration as applied
    /// (like `prisma migrate resolve`). Exit 0 done, 5 lock held, 1 error.
    Resolve {
        #[command(flatten)]
        target: Target,
        /// Mark this migration applied (baseline, or finished by hand).
        #[arg(
            long,
            value_name = "NAME",
            conflicts_with = "rolled_back",
            required_unless_present = "rolled_back"
        )]
        applied: Option<String>,
        /// Mark this failed migration rolled back, so that deploy runs it again.
        #[arg(long, value_name = "NAME")]
        rolled_back: Option<String>,
        /// Seconds to wait for the migrations advisory lock.
        #[arg(long, value_name = "SECS", default_value_t = 10)]
        advisory_lock_timeout: u64,
    },
    /// Check pending SQL for dangerous statements with PostgreSQL's grammar;
    /// with a database, add table sizes and the downtime class. Exit 0 clean,
    /// 2 warnings, 3 dangerous statements or SQL that does not parse, 1 error.
    Lint {
        /// The Prisma migrations folder.
        #[arg(long, value_name = "DIR", default_value = "prisma/migrations")]
        migrations: PathBuf,
        /// PostgreSQL URL; without it every migration is linted and sizes are unknown.
        #[arg(long, env = "DATABASE_URL", hide_env_values = true, value_name = "URL")]
        database_url: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// Show what deploy would do: pending migrations, lint findings, downtime
    /// class, and whether it is safe without maintenance mode. Exit 0 safe,
    /// 2 needs maintenance mode, 3 deploy would refuse, 1 error.
    Plan {
        #[command(flatten)]
        target: Target,
    },
}

/// Runs one `runway migrate` command; returns the process exit code.
/// Failures the engine reports are printed here and mapped to exit codes;
/// `Err` means printing itself failed.
pub async fn run(cmd: MigrateCommand) -> anyhow::Result<i32> {
    let output = match &cmd {
        MigrateCommand::Status { target } | MigrateCommand::Deploy { target, .. } => target.output,
        MigrateCommand::Resolve { target, .. } | MigrateCommand::Plan { target } => target.output,
        MigrateCommand::Lint { output, .. } => *output,
    };
    match execute(cmd).await {
        Ok(code) => Ok(code),
        Err(failure) => {
            let code = failure.exit_code();
            match output {
                Output::Json => print_json(&ErrorOutput {
                    error: failure.to_string(),
                    retry_is_safe: failure.retry_is_safe(),
                    exit_code: code,
                })?,
                Output::Text => eprintln!("error: {failure}"),
            }
            Ok(code)
        }
    }
}

#[derive(Serialize)]
struct ErrorOutput {
    error: String,
    retry_is_safe: bool,
    exit_code: i32,
}

/// Anything that stops a command.
#[derive(Debug)]
enum Failure {
    /// The folder could not be read (or the command line was incomplete).
    Source(String),
    /// The engine failed.
    Migrate(MigrateError),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Source(e) => f.write_str(e),
            Failure::Migrate(e) => write!(f, "{e}"),
        }
    }
}

impl Failure {
    fn exit_code(&self) -> i32 {
        match self {
            Failure::Source(_) => exit::ERROR,
            Failure::Migrate(MigrateError::LockTimeout { .. }) => EXIT_LOCKED,
            Failure::Migrate(MigrateError::Failed { .. } | MigrateError::FailedMigrationsPresent { .. }) => {
                exit::FAILED
            }
            Failure::Migrate(_) => exit::ERROR,
        }
    }

    fn retry_is_safe(&self) -> bool {
        matches!(self, Failure::Migrate(e) if e.retry_is_safe())
    }
}

impl From<MigrateError> for Failure {
    fn from(e: MigrateError) -> Self {
        Failure::Migrate(e)
    }
}

fn load(dir: &Path) -> Result<Vec<MigrationFile>, Failure> {
    let bundle = read_folder(dir).map_err(|e| Failure::Source(e.to_string()))?;
    bundle::migrations(&bundle).map_err(|e| Failure::Source(e.to_string()))
}

fn print_json(value: &impl Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

async fn execute(cmd: MigrateCommand) -> Result<i32, Failure> {
    match cmd {
        MigrateCommand::Status { target } => {
            let migrations = load(&target.migrations)?;
            let report = migrate::status(&target.database_url, &migrations).await?;
            match target.output {
                Output::Json => print_json(&report).map_err(|e| Failure::Source(e.to_string()))?,
                Output::Text => print_status(&report, migrations.len()),
            }
            Ok(report.exit_code())
        }
        MigrateCommand::Deploy { target, timeouts } => {
            let migrations = load(&target.migrations)?;
            // Progress goes to stderr so that stdout stays clean for --output json.
            let progress = Progress::new(|u| eprintln!("[{}] {}", u.phase, u.message));
            let report =
                migrate::deploy(&target.database_url, &migrations, &timeouts.config(), &progress).await?;
            match target.output {
                Output::Json => print_json(&report).map_err(|e| Failure::Source(e.to_string()))?,
                Output::Text => {
                    for w in &report.warnings {
                        eprintln!("warning: {w}");
                    }
                    if report.applied.is_empty() {
                        println!(
                            "No pending migrations to apply ({} already applied).",
                            report.already_applied
                        );
                    } else {
                        println!("Applied {} migration(s):", report.applied.len());
                        for (name, ms) in report.applied.iter().zip(&report.durations_ms) {
                            println!("  {name}  ({ms} ms)");
                        }
                    }
                }
            }
            Ok(0)
        }
        MigrateCommand::Resolve { target, applied, rolled_back, advisory_lock_timeout } => {
            let migrations = load(&target.migrations)?;
            let action = match (applied, rolled_back) {
                (Some(name), None) => ResolveAction::Applied(name),
                (None, Some(name)) => ResolveAction::RolledBack(name),
                _ => {
                    return Err(Failure::Source(
                        "give exactly one of --applied NAME or --rolled-back NAME".into(),
                    ));
                }
            };
            let config =
                MigrateConfig { advisory_lock_timeout_secs: advisory_lock_timeout, ..Default::default() };
            let report = migrate::resolve(&target.database_url, &migrations, &action, &config).await?;
            match target.output {
                Output::Json => print_json(&report).map_err(|e| Failure::Source(e.to_string()))?,
                Output::Text => match &action {
                    ResolveAction::Applied(name) => println!("Migration {name} marked as applied."),
                    ResolveAction::RolledBack(name) => println!("Migration {name} marked as rolled back."),
                },
            }
            Ok(0)
        }
        MigrateCommand::Lint { migrations, database_url, output } => {
            let files = load(&migrations)?;
            let report = migrate::lint(database_url.as_deref(), &files).await?;
            match output {
                Output::Json => print_json(&report).map_err(|e| Failure::Source(e.to_string()))?,
                Output::Text => print_lint(&report),
            }
            Ok(report.exit_code())
        }
        MigrateCommand::Plan { target } => {
            let migrations = load(&target.migrations)?;
            let report = migrate::plan(&target.database_url, &migrations).await?;
            match target.output {
                Output::Json => print_json(&report).map_err(|e| Failure::Source(e.to_string()))?,
                Output::Text => print_plan(&report),
            }
            Ok(if report.blocked.is_some() {
                3
            } else if report.safe_without_maintenance {
                0
            } else {
                2
            })
        }
    }
}

fn print_status(r: &StatusReport, total: usize) {
    println!("{total} migration(s) in the folder, {} applied.", r.applied.len());
    if !r.table_exists {
        println!("_prisma_migrations does not exist yet.");
    }
    if r.needs_baseline {
        println!(
            "The schema is not empty: baseline it with `runway migrate resolve --applied NAME` before deploying."
        );
    }
    let list = |title: &str, names: &[String]| {
        if !names.is_empty() {
            println!("{title}:");
            names.iter().for_each(|n| println!("  {n}"));
        }
    };
    list("Pending", &r.pending);
    if !r.failed.is_empty() {
        println!("Failed (resolve with --rolled-back or --applied):");
        for f in &r.failed {
            println!("  {} (started {})", f.name, f.started_at);
        }
    }
    list("Modified after being applied", &r.modified);
    list("Applied but missing from the folder", &r.missing_locally);
    if r.is_up_to_date() {
        println!("Database schema is up to date.");
    }
}

fn print_lint(r: &LintReport) {
    for p in &r.parse_errors {
        println!("{}/migration.sql:{}: does not parse: {}", p.migration, p.line, p.message);
    }
    for f in &r.findings {
        let secs = f.estimated_seconds.map(|s| format!(", ~{s:.0}s")).unwrap_or_default();
        println!(
            "{}/migration.sql:{}: {:?} {} [{} lock{secs}]\n    {}\n    {}",
            f.migration, f.line, f.severity, f.rule, f.lock, f.statement, f.message
        );
    }
    for t in &r.tables {
        let rows = t.estimated_rows.map(|r| format!("~{r} rows")).unwrap_or_else(|| "rows unknown".into());
        println!("table {}: {} bytes, {rows}", t.table, t.total_bytes);
    }
    println!(
        "{} migration(s), {} statement(s), {} finding(s). Downtime: {:?} ({})",
        r.migrations.len(),
        r.statements,
        r.findings.len(),
        r.downtime.class,
        r.downtime.reason
    );
}

fn print_plan(r: &PlanReport) {
    if r.pending.is_empty() {
        println!("Nothing to apply.");
    } else {
        println!("Would apply {} migration(s):", r.pending.len());
        r.pending.iter().for_each(|n| println!("  {n}"));
    }
    print_lint(&r.lint);
    if let Some(blocked) = &r.blocked {
        println!("Deploy would refuse: {blocked}");
    } else if r.safe_without_maintenance {
        println!("Safe to run without maintenance mode.");
    } else {
        println!("Needs maintenance mode:");
        r.reasons.iter().for_each(|why| println!("  - {why}"));
    }
}
