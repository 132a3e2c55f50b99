//! `lint`: what the pending SQL will do to a live database, statement by
//! statement, parsed with PostgreSQL's own grammar.
//!
//! - `rules`: the rules over one parse tree (rule name, severity, lock).
//! - `size`: table sizes and the downtime class.

use std::collections::BTreeMap;

use runway_proto::bundle::MigrationFile;
use serde::Serialize;

use super::connect;
use super::{MigrateError, deploy, parse, table};

pub mod rules;
pub mod size;

pub use rules::{Severity, Work};
pub use size::{Downtime, DowntimeClass, TableStats};

/// One rule hit in one statement.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// The migration (folder) name.
    pub migration: String,
    /// 1-based line of the statement in `migration.sql`.
    pub line: usize,
    /// The statement's first line, shortened.
    pub statement: String,
    /// Stable rule name, e.g. `alter-column-type`.
    pub rule: &'static str,
    pub severity: Severity,
    /// The lock it takes, e.g. `ACCESS EXCLUSIVE`.
    pub lock: &'static str,
    /// The table (or schema, database) it concerns.
    pub table: Option<String>,
    /// What the server does to the table.
    pub work: Work,
    pub message: String,
    /// Seconds this statement is expected to hold its lock, when sizes are known.
    pub estimated_seconds: Option<f64>,
}

/// A statement the grammar rejects.
#[derive(Debug, Clone, Serialize)]
pub struct ParseFailure {
    pub migration: String,
    pub line: usize,
    pub message: String,
}

/// Everything `lint` found.
#[derive(Debug, Clone, Serialize)]
pub struct LintReport {
    /// The migrations linted (the pending ones when a database was given).
    pub migrations: Vec<String>,
    /// How many statements were parsed.
    pub statements: usize,
    /// Statements the grammar rejected (the deploy would send them anyway;
    /// the server decides).
    pub parse_errors: Vec<ParseFailure>,
    pub findings: Vec<Finding>,
    /// Sizes of the existing tables findings touch (empty without a database).
    pub tables: Vec<TableStats>,
    pub downtime: Downtime,
}

impl LintReport {
    /// The worst severity found, if anything was.
    pub fn max_severity(&self) -> Option<Severity> {
        self.findings.iter().map(|f| f.severity).max()
    }

    /// What the findings add up to, the most serious first.
    pub fn verdict(&self) -> Verdict {
        if !self.parse_errors.is_empty() {
            return Verdict::Dangerous;
        }
        match self.max_severity() {
            Some(Severity::Danger) => Verdict::Dangerous,
            Some(Severity::Warning) => Verdict::Warnings,
            _ => Verdict::Clean,
        }
    }
}

/// What a [`LintReport`] means for the migrations it looked at. Callers
/// decide what to make of it (the CLI maps it to its exit code).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Nothing found, or information only.
    Clean,
    /// Warnings, nothing dangerous.
    Warnings,
    /// Dangerous statements, or SQL that PostgreSQL's grammar rejects.
    Dangerous,
}

fn normalize(table: &str) -> &str {
    table.strip_prefix("public.").unwrap_or(table)
}

/// Lints `migrations` without a database: rules only, no sizes.
pub fn lint_files(migrations: &[&MigrationFile]) -> LintReport {
    let mut report = LintReport {
        migrations: migrations.iter().map(|m| m.name.clone()).collect(),
        statements: 0,
        parse_errors: Vec::new(),
        findings: Vec::new(),
        tables: Vec::new(),
        downtime: Downtime { class: DowntimeClass::Unknown, estimated_seconds: None, reason: String::new() },
    };
    let mut created: Vec<String> = Vec::new();
    for m in migrations {
        let stmts = match parse::parse(&m.sql) {
            Ok(stmts) => stmts,
            Err(e) => {
                report.parse_errors.push(ParseFailure {
                    migration: m.name.clone(),
                    line: e.line,
                    message: e.message,
                });
                continue;
            }
        };
        report.statements += stmts.len();
        for stmt in &stmts {
            let is_new = |t: &str| created.iter().any(|c| c == normalize(t));
            for hit in rules::check(&stmt.node, &is_new) {
                let first_line = stmt.text(&m.sql).lines().next().unwrap_or_default();
                let mut statement: String = first_line.chars().take(120).collect();
                if statement.len() < stmt.text(&m.sql).len() {
                    statement.push('…');
                }
                report.findings.push(Finding {
                    migration: m.name.clone(),
                    line: stmt.line,
                    statement,
                    rule: hit.rule,
                    severity: hit.severity,
                    lock: hit.lock,
                    table: hit.table,
                    work: hit.work,
                    message: hit.message,
                    estimated_seconds: None,
                });
            }
            match &stmt.node {
                pg_query::NodeEnum::CreateStmt(c) => {
                    if let Some(rv) = &c.relation {
                        created.push(normalize(&rules::range_var_name(rv)).to_owned());
                    }
                }
                pg_query::NodeEnum::CreateTableAsStmt(c) => {
                    if let Some(rv) = c.into.as_ref().and_then(|i| i.rel.as_ref()) {
                        created.push(normalize(&rules::range_var_name(rv)).to_owned());
                    }
                }
                _ => {}
            }
        }
    }
    let heavy = report.findings.iter().filter(|f| f.work != Work::Instant).count();
    report.downtime = if heavy == 0 {
        Downtime {
            class: DowntimeClass::Small,
            estimated_seconds: None,
            reason: "no statement rewrites, scans or indexes an existing table".into(),
        }
    } else {
        Downtime {
            class: DowntimeClass::Unknown,
            estimated_seconds: None,
            reason: format!(
                "{heavy} statement(s) rewrite, scan or index existing tables; their sizes are unknown without a database connection"
            ),
        }
    };
    report
}

/// Adds table sizes, per-statement estimates and the downtime class.
async fn measure(report: &mut LintReport, conn: &mut sqlx::PgConnection) -> Result<(), MigrateError> {
    let mut stats: BTreeMap<String, TableStats> = BTreeMap::new();
    for f in &report.findings {
        if let Some(t) = &f.table
            && f.rule != "drop-database"
            && f.rule != "drop-schema"
            && !stats.contains_key(t)
        {
            stats.insert(t.clone(), size::table_stats(conn, t).await?);
        }
    }
    let mut total = 0.0;
    let mut worst: Option<(f64, &Finding)> = None;
    for f in &mut report.findings {
        if let Some(s) = f.table.as_ref().and_then(|t| stats.get(t)) {
            f.estimated_seconds = Some(size::estimate(f.work, s));
        }
    }
    for f in &report.findings {
        let secs = f.estimated_seconds.unwrap_or(0.0);
        total += secs;
        if worst.is_none_or(|(w, _)| secs > w) {
            worst = Some((secs, f));
        }
    }
    let class = size::class_of(total);
    let reason = match worst {
        Some((secs, f)) if secs > 0.0 => {
            let s = f.table.as_ref().and_then(|t| stats.get(t));
            let size = s.map(|s| size::human_bytes(s.total_bytes)).unwrap_or_default();
            let rows = s.and_then(|s| s.estimated_rows).map(|r| format!(", ~{r} rows")).unwrap_or_default();
            format!(
                "about {total:.0}s in total; the longest is {} in {} line {} on {} ({size}{rows}): ~{secs:.0}s of {:?} work",
                f.rule,
                f.migration,
                f.line,
                f.table.as_deref().unwrap_or("?"),
                f.work
            )
        }
        _ if report.findings.is_empty() => "no risky statements".into(),
        _ => "no statement rewrites, scans or indexes a table with data; locks are held only briefly".into(),
    };
    report.downtime = Downtime { class, estimated_seconds: Some(total), reason };
    report.tables = stats.into_values().filter(|s| s.exists).collect();
    Ok(())
}

/// Lints the pending migrations (all of them when `_prisma_migrations` does
/// not exist yet). With a database, adds each touched table's size and
/// estimated rows and classes the set by expected downtime.
pub async fn lint(
    database_url: Option<&str>,
    migrations: &[MigrationFile],
) -> Result<LintReport, MigrateError> {
    let Some(url) = database_url else {
        return Ok(lint_files(&migrations.iter().collect::<Vec<_>>()));
    };
    let database = connect::parse(url)?;
    let mut session = connect::open(&database).await?;
    let result = async {
        let pending: Vec<&MigrationFile> = if table::exists(&mut session.conn, &session.schema).await? {
            let rows = table::load(&mut session.conn, &session.schema).await?;
            deploy::pending(migrations, &rows)
        } else {
            migrations.iter().collect()
        };
        let mut report = lint_files(&pending);
        measure(&mut report, &mut session.conn).await?;
        Ok(report)
    }
    .await;
    session.close().await;
    result
}
