//! `lint`: what the pending SQL will do to a live database, statement by
//! statement, parsed with PostgreSQL's own grammar.
//!
//! - `rules`: the rules over one parse tree (rule name, severity, lock).
//! - `size`: table sizes and the downtime class.
//! - here, `Sequence`: the rules over a file's order of statements
//!   (transaction blocks as deploy sends them, `lock_timeout` in force).

use std::collections::BTreeMap;

use runway_proto::bundle::MigrationFile;
use serde::Serialize;

use super::connect;
use super::{MigrateError, deploy, parse, script, table};

pub mod rules;
pub mod size;

use rules::{Hit, locks};
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
        for (stmt, hits) in stmts.iter().zip(file_hits(&m.sql, &stmts, &mut created)) {
            for hit in hits {
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

/// Each statement's hits, in file order: its own rules, then those that
/// depend on the statements before it. `created` collects the tables the
/// set creates (empty, unused yet: the locking rules stay quiet for them).
fn file_hits(sql: &str, stmts: &[parse::Statement], created: &mut Vec<String>) -> Vec<Vec<Hit>> {
    let mut sequence = Sequence::new(sql, stmts);
    let mut hits = Vec::with_capacity(stmts.len());
    for (index, stmt) in stmts.iter().enumerate() {
        let is_new = |t: &str| created.iter().any(|c| c == normalize(t));
        let mut own = rules::check(&stmt.node, &is_new);
        own.extend(sequence.statement(index, stmt, &is_new));
        hits.push(own);
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
    sequence.finish(&mut hits);
    hits
}

/// The rules over a file's order of statements: explicit transaction
/// blocks, tracked the way `script` tracks them to decide how deploy sends
/// the file, and whether a `lock_timeout` is in force.
struct Sequence {
    /// How many statements the file has.
    len: usize,
    /// The file goes in parts: statements refusing transactions run alone.
    split: bool,
    /// The explicit block in progress: index and line of its BEGIN.
    block: Option<(usize, usize)>,
    /// Something other than transaction control ran since the current
    /// transaction began (a COMMIT or ROLLBACK now keeps or undoes it).
    work: bool,
    /// A bounded `lock_timeout` set for the session, and one set with `SET
    /// LOCAL` for the current transaction (which wins while it lasts).
    timeout_session: bool,
    timeout_local: Option<bool>,
    /// The first statement taking a write-blocking lock with no timeout
    /// (index, lock, table), and how many do.
    unguarded: Option<(usize, &'static str, String)>,
    unguarded_count: usize,
}

fn file_hit(
    rule: &'static str,
    severity: Severity,
    lock: &'static str,
    table: Option<String>,
    message: String,
) -> Hit {
    Hit { rule, severity, lock, table, work: Work::Instant, message }
}

impl Sequence {
    fn new(sql: &str, stmts: &[parse::Statement]) -> Self {
        Sequence {
            len: stmts.len(),
            split: script::segments(sql, stmts).len() > 1,
            block: None,
            work: false,
            timeout_session: false,
            timeout_local: None,
            unguarded: None,
            unguarded_count: 0,
        }
    }

    /// The transaction ends: what `SET LOCAL` set is gone.
    fn end_transaction(&mut self) {
        self.work = false;
        self.timeout_local = None;
    }

    /// Hits for statement `index`, then its effect on the state.
    fn statement(
        &mut self,
        index: usize,
        stmt: &parse::Statement,
        is_new: &dyn Fn(&str) -> bool,
    ) -> Vec<Hit> {
        use pg_query::NodeEnum;
        use pg_query::protobuf::TransactionStmtKind as Kind;
        let mut out = Vec::new();
        let node = &stmt.node;
        // Deploy sends it on its own, in a transaction of its own.
        let alone = self.split && self.block.is_none() && script::must_run_alone(node).is_some();
        if alone {
            self.end_transaction();
        }
        if let (Some((_, begun)), Some((rule, what))) = (self.block, rules::refused_in_block(node)) {
            out.push(file_hit(rule, Severity::Danger, locks::NONE, rules::statement_table(node),
                format!("{what} cannot run inside a transaction block, and this one is inside the block opened by BEGIN on line {begun}: PostgreSQL rejects it and the migration fails; move it out of BEGIN … COMMIT (runway then sends it on its own, outside any transaction) or into a migration of its own")));
        }
        if let Some((lock, table)) = rules::write_blocking_lock(node, is_new)
            && !self.timeout_local.unwrap_or(self.timeout_session)
        {
            self.unguarded_count += 1;
            self.unguarded.get_or_insert((index, lock, table));
        }
        if let Some(change) = lock_timeout_change(node) {
            if change.local {
                self.timeout_local = Some(change.bounded);
            } else {
                self.timeout_session = change.bounded;
                self.timeout_local = None;
            }
        }
        let NodeEnum::TransactionStmt(t) = node else {
            self.work = !alone;
            return out;
        };
        match Kind::try_from(t.kind) {
            Ok(Kind::TransStmtBegin | Kind::TransStmtStart) => match self.block {
                Some((_, begun)) => out.push(file_hit("transaction-nesting", Severity::Warning, locks::NONE, None,
                    format!("BEGIN inside the transaction block opened on line {begun}: PostgreSQL ignores it with a warning, and the first COMMIT ends the outer block, so what follows is no longer atomic with what came before; remove the inner BEGIN and COMMIT (runway runs a file in one transaction already)"))),
                None => self.block = Some((index, stmt.line)),
            },
            Ok(kind @ (Kind::TransStmtCommit | Kind::TransStmtRollback)) => {
                if self.work && kind == Kind::TransStmtRollback {
                    out.push(file_hit("rollback-in-migration", Severity::Warning, locks::NONE, None,
                        "ROLLBACK undoes what the file did since its transaction began, yet runway then records the migration as applied, so the schema and _prisma_migrations disagree; remove the ROLLBACK".into()));
                } else if self.work && index + 1 < self.len {
                    out.push(file_hit("commit-mid-file", Severity::Info, locks::NONE, None,
                        "COMMIT before the end of the file: if a later statement fails, what came before stays committed while runway records the migration as failed, and undoing it is by hand; drop the COMMIT (runway runs a file in one transaction) or split the file into two migrations".into()));
                }
                self.block = if t.chain { self.block.or(Some((index, stmt.line))) } else { None };
                self.end_transaction();
            }
            Ok(Kind::TransStmtPrepare) => {
                self.block = None;
                self.end_transaction();
            }
            _ => {}
        }
        out
    }

    /// Hits known only at the end of the file, placed at their statement.
    fn finish(self, hits: &mut [Vec<Hit>]) {
        if let Some((index, _)) = self.block {
            hits[index].push(file_hit("uncommitted-transaction", Severity::Danger, locks::NONE, None,
                "this BEGIN is never committed: runway refuses the file, and the whole deploy stops before applying anything; add COMMIT at the end, or drop the BEGIN (runway runs a file in one transaction already)".into()));
        }
        if let Some((index, lock, table)) = self.unguarded {
            let more = match self.unguarded_count - 1 {
                0 => String::new(),
                n => format!(" (as do {n} later statement(s))"),
            };
            hits[index].push(file_hit("missing-lock-timeout", Severity::Info, lock, Some(table.clone()),
                format!("this statement takes {lock} on {table}{more} with no lock_timeout set before it in the file: while a long transaction holds any lock on {table}, the statement waits, and every query on {table} queues behind it, so the app stalls until that transaction ends. Start the file with SET lock_timeout = '5s' and retry if it times out; runway sets it for every migration when lock_timeout is set under [migrate] in the agent config (--lock-timeout for runway migrate deploy), and then this is covered")));
        }
    }
}

/// What a `SET`/`RESET` of `lock_timeout` does to it, if `node` is one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct LockTimeoutChange {
    /// `SET LOCAL`: lasts until the transaction ends.
    local: bool,
    /// A timeout other than 0 (0, `DEFAULT` and `RESET` mean wait forever,
    /// unless the server or role sets one).
    bounded: bool,
}

/// `SET [LOCAL] lock_timeout = …`, `RESET lock_timeout`, `RESET ALL`.
fn lock_timeout_change(node: &pg_query::NodeEnum) -> Option<LockTimeoutChange> {
    use pg_query::protobuf::{VariableSetKind as Kind, a_const::Val};
    let pg_query::NodeEnum::VariableSetStmt(s) = node else { return None };
    let kind = Kind::try_from(s.kind).ok()?;
    if kind == Kind::VarResetAll {
        return Some(LockTimeoutChange { local: false, bounded: false });
    }
    if !s.name.eq_ignore_ascii_case("lock_timeout") {
        return None;
    }
    let bounded = match kind {
        Kind::VarSetValue => s.args.first().is_some_and(|a| match &a.node {
            Some(pg_query::NodeEnum::AConst(c)) => match &c.val {
                Some(Val::Ival(i)) => i.ival != 0,
                Some(Val::Fval(f)) => nonzero(&f.fval),
                Some(Val::Sval(v)) => nonzero(&v.sval),
                _ => true,
            },
            _ => true,
        }),
        Kind::VarSetDefault | Kind::VarReset => false,
        _ => return None,
    };
    Some(LockTimeoutChange { local: s.is_local, bounded })
}

/// Whether a duration setting such as `'5s'` or `'0ms'` is not zero.
fn nonzero(value: &str) -> bool {
    let number: String = value.trim().chars().take_while(|c| c.is_ascii_digit() || *c == '.').collect();
    number.parse::<f64>() != Ok(0.0)
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
