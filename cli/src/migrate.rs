//! `runway migrate …`: the migrations engine straight against a database,
//! without a coordinator. The same code the agent runs.
//!
//! `status`, `lint` and `plan` end with the verdict's exit code (see
//! [`crate::exit::Exit`]); the report goes to stdout, progress to stderr.
//! `down` rolls applied migrations back by their `down.sql`, once each is
//! proven on a schema-only copy of the database.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Subcommand};
use runway_engine::migrate::down::{self, UndoReport};
use runway_engine::migrate::lint::LintReport;
use runway_engine::migrate::source::read_folder;
use runway_engine::migrate::status::StatusReport;
use runway_engine::migrate::{self, DeployReport, DownsReport, MigrateConfig, PlanReport, ResolveAction};
use runway_proto::bundle::{self, MigrationFile};

use crate::exit::Exit;
use crate::output::{self, Failure, Output, Reporter, Table};

/// Where the migrations and the database are.
#[derive(Debug, Clone, Args)]
pub struct Target {
    /// The Prisma migrations folder (`<name>/migration.sql` + `migration_lock.toml`).
    #[arg(long, value_name = "DIR", default_value = "prisma/migrations")]
    pub migrations: PathBuf,
    /// PostgreSQL URL, as Prisma takes it (`?schema=` included).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, value_name = "URL")]
    pub database_url: String,
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
            advisory_lock_timeout: Duration::from_secs(self.advisory_lock_timeout),
            lock_timeout: Duration::from_millis(self.lock_timeout),
            statement_timeout: Duration::from_millis(self.statement_timeout),
            ..MigrateConfig::default()
        }
    }
}

/// Where the PostgreSQL tools are, for the commands that prove downs.
#[derive(Debug, Clone, Args)]
pub struct PgBin {
    /// Folder with pg_dump (default: PATH).
    #[arg(long, env = "RUNWAY_PG_BIN_DIR", value_name = "DIR")]
    pub pg_bin_dir: Option<PathBuf>,
}

impl PgBin {
    /// `pg_dump` in `--pg-bin-dir`, else as found on PATH.
    fn pg_dump(&self) -> PathBuf {
        self.pg_bin_dir.as_ref().map_or_else(|| PathBuf::from("pg_dump"), |dir| dir.join("pg_dump"))
    }
}

/// `runway migrate down`: which migrations to roll back, and the consent.
#[derive(Debug, Clone, Args)]
#[group(id = "which", required = true, multiple = false)]
pub struct DownArgs {
    #[command(flatten)]
    pub target: Target,
    /// Roll back every migration applied after NAME (NAME stays applied).
    #[arg(long, value_name = "NAME", group = "which")]
    pub to: Option<String>,
    /// Roll back the last N applied migrations of the folder.
    #[arg(long, value_name = "N", group = "which", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
    /// Confirm that the downs may run against the database.
    #[arg(long)]
    pub yes: bool,
    #[command(flatten)]
    pub timeouts: Timeouts,
    #[command(flatten)]
    pub pg: PgBin,
}

/// `runway migrate`: Prisma-compatible migrations against one database.
#[derive(Debug, Clone, Subcommand)]
pub enum MigrateCommand {
    /// Compare the folder with `_prisma_migrations`: applied, pending, failed,
    /// modified, missing locally. Exit 0 up to date, 7 pending, 8 a failed
    /// migration waits for resolve, 9 diverged.
    Status {
        #[command(flatten)]
        target: Target,
    },
    /// Apply pending migrations (like `prisma migrate deploy`), holding
    /// Prisma's advisory lock. Exit 0 done, 1 a migration failed, 5 lock
    /// held, 8 refused: a failed migration awaits resolve, or the schema
    /// needs a baseline.
    Deploy {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        timeouts: Timeouts,
    },
    /// Record a failed migration as rolled back or a migration as applied
    /// (like `prisma migrate resolve`). Exit 0 done, 2 refused, 5 lock held.
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
    /// with a database, add table sizes, the downtime class and the checks
    /// of its rows (statements the data makes fail). Exit 0 clean, 7
    /// warnings, 8 dangerous statements, SQL that does not parse, or a
    /// statement the data makes fail.
    Lint {
        /// The Prisma migrations folder.
        #[arg(long, value_name = "DIR", default_value = "prisma/migrations")]
        migrations: PathBuf,
        /// PostgreSQL URL; without it every migration is linted and sizes are unknown.
        #[arg(long, env = "DATABASE_URL", hide_env_values = true, value_name = "URL")]
        database_url: Option<String>,
    },
    /// Show what deploy would do: pending migrations, lint findings, downtime
    /// class, and whether it is safe without maintenance mode. Exit 0 safe,
    /// 7 needs maintenance mode, 8 deploy would refuse (a failed migration
    /// to resolve, or a statement the live data makes fail).
    ///
    /// The pending statements that can fail on existing rows are checked
    /// against them with read-only queries (NULLs under SET NOT NULL,
    /// duplicates under a unique index, orphans under a foreign key, rows a
    /// CHECK or a type change rejects): each finding names the migration,
    /// line, table, columns, the count, up to five primary keys and the
    /// query that lists the rows.
    ///
    /// Each pending migration's `down.sql` is proven on a scratch
    /// schema-only copy of the database (created on the same server and
    /// dropped after): proven, missing, fails, differs or unproven.
    Plan {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        pg: PgBin,
        /// How long each read-only check of the live data may take, in
        /// milliseconds; a check that takes longer is reported unknown.
        #[arg(long, value_name = "MS", default_value_t = 10_000)]
        data_check_timeout: u64,
    },
    /// Roll back applied migrations by their `down.sql`, newest first,
    /// keeping every row written since. Exit 0 done, 1 a down failed or
    /// the schema differs after, 2 refused (no --yes, a down missing or
    /// not proven), 5 lock held.
    ///
    /// The downs are proven first on a scratch schema-only copy of the
    /// database; nothing runs unless each is proven. Each migration rolled
    /// back is marked so in `_prisma_migrations` (deploy applies it again),
    /// and the schema is then compared with the one the downs gave on the copy.
    Down(DownArgs),
}

/// Runs one `runway migrate` command: the report on stdout, the verdict
/// as the exit code.
pub async fn run(output: Output, cmd: MigrateCommand) -> Result<Exit, Failure> {
    match cmd {
        MigrateCommand::Status { target } => {
            let migrations = load(&target.migrations)?;
            let report = migrate::status(&target.database_url, &migrations).await?;
            output.result(status_text(&report, &migrations), &report);
            Ok(report.verdict().into())
        }
        MigrateCommand::Deploy { target, timeouts } => {
            let migrations = load(&target.migrations)?;
            let progress = Reporter::stderr();
            let report =
                migrate::deploy(&target.database_url, &migrations, &timeouts.config(), &progress.engine())
                    .await?;
            progress.finish();
            for w in &report.warnings {
                output.note(format!("warning: {w}"));
            }
            output.result(deploy_text(&report), &report);
            Ok(Exit::Success)
        }
        MigrateCommand::Resolve { target, applied, rolled_back, advisory_lock_timeout } => {
            let migrations = load(&target.migrations)?;
            let action = match (applied, rolled_back) {
                (Some(name), None) => ResolveAction::Applied(name),
                (None, Some(name)) => ResolveAction::RolledBack(name),
                _ => {
                    return Err(Failure::invalid("give exactly one of --applied NAME or --rolled-back NAME"));
                }
            };
            let config = MigrateConfig {
                advisory_lock_timeout: Duration::from_secs(advisory_lock_timeout),
                ..Default::default()
            };
            let report = migrate::resolve(&target.database_url, &migrations, &action, &config).await?;
            let text = match &action {
                ResolveAction::Applied(name) => format!("Migration {name} marked as applied."),
                ResolveAction::RolledBack(name) => format!("Migration {name} marked as rolled back."),
            };
            output.result(text, &report);
            Ok(Exit::Success)
        }
        MigrateCommand::Lint { migrations, database_url: Some(url) } => {
            // With the database, the pending statements are also checked
            // against its rows: a certain failure is blocked (exit 8).
            let files = load(&migrations)?;
            let report = migrate::lint(Some(&url), &files).await?;
            // With a database, the lint covered exactly the pending migrations.
            let pending: Vec<&MigrationFile> =
                files.iter().filter(|m| report.migrations.contains(&m.name)).collect();
            let data = migrate::predict::predict(&url, &pending, &MigrateConfig::default().predict()).await?;
            let text = format!("{}{}", lint_text(&report), data_text(&data));
            let mut json = serde_json::to_value(&report).expect("a lint report serializes");
            json["data"] = serde_json::to_value(&data).expect("a data report serializes");
            output.result(text, &json);
            if data.will_fail() { Ok(Exit::Blocked) } else { Ok(report.verdict().into()) }
        }
        MigrateCommand::Lint { migrations, database_url: None } => {
            let files = load(&migrations)?;
            let report = migrate::lint(None, &files).await?;
            output.result(lint_text(&report), &report);
            Ok(report.verdict().into())
        }
        MigrateCommand::Plan { target, pg, data_check_timeout } => {
            let migrations = load(&target.migrations)?;
            let data = MigrateConfig {
                data_check_timeout: Duration::from_millis(data_check_timeout),
                ..MigrateConfig::default()
            };
            let options = migrate::PlanOptions { pg_dump: &pg.pg_dump(), data: &data.predict() };
            let report = migrate::plan(&target.database_url, &migrations, options).await?;
            output.result(plan_text(&report), &report);
            Ok(report.verdict().into())
        }
        MigrateCommand::Down(args) => undo(output, args).await,
    }
}

/// `runway migrate down`: refused without `--yes`, then the engine's
/// proven undo, its progress on stderr.
async fn undo(output: Output, args: DownArgs) -> Result<Exit, Failure> {
    let DownArgs { target, to, count, yes, timeouts, pg } = args;
    if !yes {
        return Err(Failure::invalid(
            "rolling back by migration runs each down.sql against the database; add --yes to confirm \
             (nothing was changed)",
        ));
    }
    let undo_target = match (to, count) {
        (Some(name), None) => down::Target::To(name),
        (None, Some(n)) => down::Target::Count(usize::try_from(n).unwrap_or(usize::MAX)),
        _ => {
            return Err(Failure::invalid("give exactly one of --to NAME or --count N (nothing was changed)"));
        }
    };
    let migrations = load(&target.migrations)?;
    let progress = Reporter::stderr();
    let report = down::undo(
        &target.database_url,
        &migrations,
        &undo_target,
        None,
        &pg.pg_dump(),
        &timeouts.config(),
        &progress.engine(),
    )
    .await;
    progress.finish();
    let report = report?;
    output.result(undo_text(&report), &report);
    Ok(Exit::Success)
}

/// The folder as migrations; a folder that cannot be read is bad input.
fn load(dir: &Path) -> Result<Vec<MigrationFile>, Failure> {
    let bundle = read_folder(dir).map_err(|e| Failure::invalid(e.to_string()))?;
    bundle::migrations(&bundle).map_err(|e| Failure::invalid(e.to_string()))
}

/// Appends a line to `text`.
macro_rules! push_line {
    ($text:expr, $($arg:tt)*) => {{
        $text.push_str(&format!($($arg)*));
        $text.push('\n');
    }};
}

fn status_text(r: &StatusReport, migrations: &[MigrationFile]) -> String {
    let mut text = String::new();
    push_line!(text, "{} migration(s) in the folder, {} applied.", migrations.len(), r.applied.len());
    if !migrations.is_empty() {
        push_line!(text, "{}", folder_table(r, migrations));
    }
    if !r.table_exists {
        push_line!(text, "_prisma_migrations does not exist yet.");
    }
    if r.needs_baseline {
        push_line!(
            text,
            "The schema is not empty: baseline it with `runway migrate resolve --applied NAME` before deploying."
        );
    }
    let list = |text: &mut String, title: &str, names: &[String]| {
        if !names.is_empty() {
            push_line!(text, "{title}:");
            names.iter().for_each(|n| push_line!(text, "  {n}"));
        }
    };
    list(&mut text, "Pending", &r.pending);
    if !r.failed.is_empty() {
        push_line!(text, "Failed (resolve with --rolled-back or --applied):");
        for f in &r.failed {
            push_line!(text, "  {} (started {})", f.name, f.started_at);
        }
    }
    list(&mut text, "Modified after being applied", &r.modified);
    list(&mut text, "Applied but missing from the folder", &r.missing_locally);
    if r.is_up_to_date() {
        push_line!(text, "Database schema is up to date.");
    }
    text
}

/// Each migration of the folder: where it stands, and whether it has a
/// `down.sql` (what `runway migrate down` needs).
fn folder_table(r: &StatusReport, migrations: &[MigrationFile]) -> Table {
    let has = |names: &[String], name: &str| names.iter().any(|n| n == name);
    let mut table = Table::new(["migration", "state", "down"]);
    for m in migrations {
        let state = if has(&r.modified, &m.name) {
            "modified"
        } else if has(&r.applied, &m.name) {
            "applied"
        } else if r.failed.iter().any(|f| f.name == m.name) {
            "failed"
        } else {
            "pending"
        };
        let down = if has(&r.has_down, &m.name) { "yes" } else { "no" };
        table.row([m.name.as_str(), state, down]);
    }
    table
}

fn deploy_text(r: &DeployReport) -> String {
    if r.applied.is_empty() {
        return format!("No pending migrations to apply ({} already applied).", r.already_applied);
    }
    let mut applied = Table::new(["migration", "took"]).right(&[1]);
    for (name, ms) in r.applied.iter().zip(&r.durations_ms) {
        applied.row([name.clone(), format!("{ms} ms")]);
    }
    format!("Applied {} migration(s):\n{applied}", r.applied.len())
}

/// Findings as `file:line:` diagnostics (editors jump to them), then the
/// sizes of the tables they touch.
fn lint_text(r: &LintReport) -> String {
    let mut text = String::new();
    for p in &r.parse_errors {
        push_line!(text, "{}/migration.sql:{}: does not parse: {}", p.migration, p.line, p.message);
    }
    for f in &r.findings {
        let secs = f.estimated_seconds.map(|s| format!(", ~{s:.0}s")).unwrap_or_default();
        push_line!(
            text,
            "{}/migration.sql:{}: {:?} {} [{} lock{secs}]\n    {}\n    {}",
            f.migration,
            f.line,
            f.severity,
            f.rule,
            f.lock,
            f.statement,
            f.message
        );
    }
    if !r.tables.is_empty() {
        let mut tables = Table::new(["table", "size", "rows"]).right(&[1, 2]);
        for t in &r.tables {
            let size = if t.exists { output::bytes(t.total_bytes.max(0) as u64) } else { "new".into() };
            let rows = t.estimated_rows.map_or_else(|| "unknown".into(), |r| format!("~{r}"));
            tables.row([t.table.clone(), size, rows]);
        }
        push_line!(text, "{tables}");
    }
    push_line!(
        text,
        "{} migration(s), {} statement(s), {} finding(s). Downtime: {:?} ({})",
        r.migrations.len(),
        r.statements,
        r.findings.len(),
        r.downtime.class,
        r.downtime.reason
    );
    text
}

fn plan_text(r: &PlanReport) -> String {
    let mut text = String::new();
    if r.pending.is_empty() {
        push_line!(text, "Nothing to apply.");
    } else {
        push_line!(text, "Would apply {} migration(s):", r.pending.len());
        r.pending.iter().for_each(|n| push_line!(text, "  {n}"));
    }
    text.push_str(&lint_text(&r.lint));
    text.push_str(&data_text(&r.data));
    if !r.downs.downs.is_empty() {
        text.push_str(&downs_text(&r.downs));
    }
    if let Some(blocked) = &r.blocked {
        push_line!(text, "Deploy would refuse: {blocked}");
    } else if r.safe_without_maintenance {
        push_line!(text, "Safe to run without maintenance mode.");
    } else {
        push_line!(text, "Needs maintenance mode:");
        r.reasons.iter().for_each(|why| push_line!(text, "  - {why}"));
    }
    text
}

/// What the live data says about the pending statements: each finding
/// with its certainty, count, example keys and the query that finds the rows.
fn data_text(r: &migrate::DataReport) -> String {
    let mut text = String::new();
    let failing = r.findings.iter().filter(|f| f.certainty == migrate::predict::Certainty::WillFail).count();
    push_line!(
        text,
        "Live data: {} check(s) in {} ms{}",
        r.checks,
        r.ms,
        match failing {
            0 if r.findings.is_empty() => ", nothing will fail".to_owned(),
            0 => String::new(),
            n => format!(", {n} statement(s) WILL FAIL"),
        }
    );
    for f in &r.findings {
        let certainty = match f.certainty {
            migrate::predict::Certainty::WillFail => "will fail",
            migrate::predict::Certainty::MayFail => "may fail",
            migrate::predict::Certainty::Unknown => "unknown",
        };
        push_line!(text, "  {certainty}: {} line {}: {}", f.migration, f.line, f.message);
        if !f.examples.is_empty() {
            push_line!(text, "    e.g. {}", f.examples.join(", "));
        }
        if !f.query.is_empty() {
            push_line!(text, "    find them: {}", f.query);
        }
    }
    text
}

/// Each down's state and detail, and how long proving took.
fn downs_text(r: &DownsReport) -> String {
    let mut downs = Table::new(["migration", "state", "detail"]);
    for d in &r.downs {
        downs.row([d.migration.as_str(), d.state.name(), d.detail.as_str()]);
    }
    let mut text = String::new();
    push_line!(text, "Downs, proven on a schema-only copy of the database in {} ms:\n{downs}", r.ms);
    text
}

/// The proof, each down that ran, then the schema check.
fn undo_text(r: &UndoReport) -> String {
    if r.undone.is_empty() && r.resolved_failed.is_empty() {
        return "Nothing to roll back: no applied migration matches.".into();
    }
    let mut text = downs_text(&r.proof);
    let mut undone = Table::new(["migration", "took"]).right(&[1]);
    for (name, ms) in r.undone.iter().zip(&r.durations_ms) {
        undone.row([name.clone(), format!("{ms} ms")]);
    }
    push_line!(text, "Rolled back {} migration(s), newest first:\n{undone}", r.undone.len());
    for name in &r.resolved_failed {
        push_line!(text, "Marked failed migration {name} as rolled back.");
    }
    if r.schema_checked.is_empty() {
        push_line!(text, "Schema: not compared (no schema to compare with).");
    } else {
        push_line!(text, "Schema: {}.", r.schema_checked);
    }
    text
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use runway_engine::migrate::{DownProof, DownState};

    use super::*;
    use crate::output::Format;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        cmd: MigrateCommand,
    }

    fn parse(args: &[&str]) -> Result<MigrateCommand, clap::Error> {
        let mut argv = vec!["runway", args[0], "--database-url", "postgres://x@127.0.0.1:1/db"];
        argv.extend_from_slice(&args[1..]);
        Cli::try_parse_from(argv).map(|cli| cli.cmd)
    }

    #[test]
    fn down_takes_exactly_one_of_to_and_count() {
        let Ok(MigrateCommand::Down(args)) = parse(&["down", "--to", "1_a", "--yes"]) else { panic!("--to") };
        assert_eq!((args.to.as_deref(), args.count, args.yes), (Some("1_a"), None, true));
        let Ok(MigrateCommand::Down(args)) = parse(&["down", "--count", "2"]) else { panic!("--count") };
        assert_eq!((args.to, args.count, args.yes), (None, Some(2), false));
        assert!(parse(&["down", "--yes"]).is_err(), "neither");
        assert!(parse(&["down", "--to", "1_a", "--count", "1", "--yes"]).is_err(), "both");
        assert!(parse(&["down", "--count", "0", "--yes"]).is_err(), "nothing to roll back");
    }

    #[test]
    fn pg_dump_comes_from_the_bin_dir_else_from_path() {
        let Ok(MigrateCommand::Plan { pg, .. }) = parse(&["plan", "--pg-bin-dir", "/opt/pg/bin"]) else {
            panic!("plan")
        };
        assert_eq!(pg.pg_dump(), Path::new("/opt/pg/bin/pg_dump"));
        assert_eq!(PgBin { pg_bin_dir: None }.pg_dump(), Path::new("pg_dump"));
    }

    #[tokio::test]
    async fn down_without_yes_is_refused_before_anything_is_read() {
        // Neither the folder nor the database exists: the refusal comes first.
        let cmd = parse(&["down", "--migrations", "/nonexistent", "--count", "1"]).expect("parses");
        let failure = run(Output::new(Format::Text), cmd).await.expect_err("refused");
        assert_eq!(failure.exit, Exit::Invalid);
        assert!(failure.message.contains("--yes") && failure.message.contains("nothing was changed"));
    }

    #[test]
    fn the_downs_table_shows_each_state_and_detail() {
        let proof = |migration: &str, state, detail: &str| DownProof {
            migration: migration.into(),
            state,
            detail: detail.into(),
        };
        let report = DownsReport {
            downs: vec![
                proof("1_a", DownState::Proven, ""),
                proof("2_b", DownState::Differs, "extra INDEX public.b_idx"),
            ],
            ms: 42,
            ..DownsReport::default()
        };
        assert_eq!(
            downs_text(&report),
            "Downs, proven on a schema-only copy of the database in 42 ms:\n\
             MIGRATION  STATE    DETAIL\n\
             1_a        proven\n\
             2_b        differs  extra INDEX public.b_idx\n"
        );
    }

    #[test]
    fn status_marks_each_migration_with_or_without_a_down() {
        let file = |name: &str, down: bool| MigrationFile {
            name: name.into(),
            sql: "SELECT 1;".into(),
            down: down.then(|| "SELECT 2;".into()),
        };
        let folder = [file("1_a", true), file("2_b", false)];
        let report = StatusReport {
            table_exists: true,
            applied: vec!["1_a".into()],
            pending: vec!["2_b".into()],
            has_down: vec!["1_a".into()],
            ..StatusReport::default()
        };
        let text = status_text(&report, &folder);
        assert!(text.contains("1_a        applied  yes\n2_b        pending  no"), "{text}");
    }
}
