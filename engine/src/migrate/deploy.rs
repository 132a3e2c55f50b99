//! `deploy`: apply pending migrations the way `prisma migrate deploy` does,
//! plus what Prisma leaves out (statements that refuse transactions,
//! timeouts, a clear lock error, progress per migration).

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use runway_proto::bundle::MigrationFile;
use sqlx::PgConnection;
use sqlx::postgres::{PgDatabaseError, PgErrorPosition};
use tracing::Instrument;

use super::connect::{self, Session, quote_ident};
use super::parse::{self, line_of};
use super::script::{self, Segment};
use super::table::{self, MigrationRow};
use super::{DeployReport, MigrateConfig, MigrateError, checksum, gate, lint, lock};
use crate::progress::Progress;
use crate::redact::redact_urls;

/// Applies the pending migrations of `migrations` (already in apply order).
///
/// Takes Prisma's advisory lock for the whole run; creates
/// `_prisma_migrations` when missing (refusing a non-empty schema without it,
/// like Prisma); refuses to run while a failed migration is unresolved.
pub async fn deploy(
    database_url: &str,
    migrations: &[MigrationFile],
    config: &MigrateConfig,
    progress: &Progress,
) -> Result<DeployReport, MigrateError> {
    deploy_gated(database_url, migrations, None, config, progress).await
}

/// [`deploy`] that applies only what an operator accepted: once the lock is
/// held and before anything is written (`_prisma_migrations` included),
/// the pending migrations — exactly those about to run — are linted, and
/// any Danger statement whose rule is not in `accepted` refuses the whole
/// deploy ([`MigrateError::Dangerous`]). The same gate as a preflight's
/// (see [`super::gate`]), over what the database says is pending now
/// rather than what it said then.
pub async fn deploy_accepted(
    database_url: &str,
    migrations: &[MigrationFile],
    accepted: &[String],
    config: &MigrateConfig,
    progress: &Progress,
) -> Result<DeployReport, MigrateError> {
    deploy_gated(database_url, migrations, Some(accepted), config, progress).await
}

/// [`deploy`], gated by `accepted` when there is one.
async fn deploy_gated(
    database_url: &str,
    migrations: &[MigrationFile],
    accepted: Option<&[String]>,
    config: &MigrateConfig,
    progress: &Progress,
) -> Result<DeployReport, MigrateError> {
    let database = connect::parse(database_url)?;
    progress.emit("lock", "waiting for the migrations advisory lock");
    let mut session = lock::locked(&database, config.advisory_lock_timeout).await?;
    let result = deploy_locked(&mut session, migrations, accepted, config, progress).await;
    if result.is_ok() {
        lock::release(&mut session.conn).await?;
    }
    session.close().await;
    result
}

/// Makes sure `_prisma_migrations` exists, as Prisma's `initialize` does.
pub(crate) async fn ensure_table(session: &mut Session) -> Result<(), MigrateError> {
    if table::exists(&mut session.conn, &session.schema).await? {
        return Ok(());
    }
    let tables = table::user_tables(&mut session.conn, &session.schema).await?;
    if !tables.is_empty() {
        let mut list = tables.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
        if tables.len() > 5 {
            list.push_str(&format!(" and {} more", tables.len() - 5));
        }
        return Err(MigrateError::SchemaNotEmpty { tables: list });
    }
    table::create(&mut session.conn, &session.schema).await
}

/// Errors out listing failed migrations, like Prisma's P3009.
pub(crate) fn refuse_failed(rows: &[MigrationRow]) -> Result<(), MigrateError> {
    let failed: Vec<&MigrationRow> = rows.iter().filter(|r| r.is_failed()).collect();
    if failed.is_empty() {
        return Ok(());
    }
    let mut details = String::new();
    for row in &failed {
        details.push_str(&format!(
            "The `{}` migration started at {} failed",
            row.migration_name, row.started_at
        ));
        if let Some(logs) = row.logs.as_deref().map(str::trim).filter(|l| !l.is_empty()) {
            details.push_str(" with the following logs:\n");
            details.push_str(logs);
        }
        details.push('\n');
    }
    Err(MigrateError::FailedMigrationsPresent {
        names: failed.iter().map(|r| r.migration_name.clone()).collect(),
        details,
    })
}

/// Refuses `pending` when the lint finds a Danger statement in it whose
/// rule is not in `accepted`.
fn refuse_unaccepted(
    pending: &[&MigrationFile],
    accepted: &[String],
    progress: &Progress,
) -> Result<(), MigrateError> {
    let findings = gate::unaccepted(&lint::lint_files(pending), accepted);
    if findings.is_empty() {
        progress.emit(
            "danger",
            format!(
                "no Danger statement in the {} pending migration(s) beyond those accepted",
                pending.len()
            ),
        );
        return Ok(());
    }
    Err(MigrateError::Dangerous { findings })
}

/// The migrations of `migrations` that have no row other than rolled-back ones.
pub(crate) fn pending<'a>(migrations: &'a [MigrationFile], rows: &[MigrationRow]) -> Vec<&'a MigrationFile> {
    // A set, not a scan per migration: histories run to thousands.
    let recorded: HashSet<&str> =
        rows.iter().filter(|r| r.rolled_back_at.is_none()).map(|r| r.migration_name.as_str()).collect();
    migrations.iter().filter(|m| !recorded.contains(m.name.as_str())).collect()
}

/// The applied rows of `rows` by migration name.
pub(crate) fn applied_by_name(rows: &[MigrationRow]) -> HashMap<&str, Vec<&MigrationRow>> {
    let mut applied: HashMap<&str, Vec<&MigrationRow>> = HashMap::new();
    for row in rows.iter().filter(|r| r.is_applied()) {
        applied.entry(row.migration_name.as_str()).or_default().push(row);
    }
    applied
}

/// The URL's schema (`?schema=`) and `_prisma_migrations` in it, created
/// when missing, as `prisma migrate deploy` does.
pub(crate) async fn ensure_schema(session: &mut Session) -> Result<(), MigrateError> {
    if session.schema != "public" {
        sqlx::Executor::execute(
            &mut session.conn,
            sqlx::raw_sql(&format!("CREATE SCHEMA IF NOT EXISTS {}", quote_ident(&session.schema))),
        )
        .await
        .map_err(|e| MigrateError::db(format!("creating schema {}", session.schema), e))?;
    }
    ensure_table(session).await
}

async fn deploy_locked(
    session: &mut Session,
    migrations: &[MigrationFile],
    accepted: Option<&[String]>,
    config: &MigrateConfig,
    progress: &Progress,
) -> Result<DeployReport, MigrateError> {
    let rows = match accepted {
        None => {
            ensure_schema(session).await?;
            table::load(&mut session.conn, &session.schema).await?
        }
        Some(accepted) => {
            // Read first, so that a refusal writes nothing at all.
            let exists = table::exists(&mut session.conn, &session.schema).await?;
            let rows =
                if exists { table::load(&mut session.conn, &session.schema).await? } else { Vec::new() };
            refuse_unaccepted(&pending(migrations, &rows), accepted, progress)?;
            if !exists {
                ensure_schema(session).await?;
            }
            rows
        }
    };
    refuse_failed(&rows)?;

    let mut report = DeployReport { already_applied: migrations.len(), ..Default::default() };
    let applied = applied_by_name(&rows);
    for m in migrations {
        let modified = applied
            .get(m.name.as_str())
            .is_some_and(|rows| !rows.iter().any(|r| checksum::matches(&m.sql, &r.checksum)));
        if modified {
            report.warnings.push(format!(
                "migration {} was modified after it was applied (its checksum differs from _prisma_migrations)",
                m.name
            ));
        }
    }
    let pending = pending(migrations, &rows);
    report.already_applied -= pending.len();

    // Plan every file before touching anything.
    let mut plans = Vec::with_capacity(pending.len());
    for m in &pending {
        plans.push(plan_file(m)?);
    }

    set_timeouts(&mut session.conn, config).await?;
    let total = pending.len() as u64;
    progress.emit_counted("migrate", format!("{total} pending migration(s)"), 0, total, "migrations");
    let database_name = session.database.clone();
    for (index, (m, plan)) in pending.iter().zip(plans).enumerate() {
        let span = tracing::info_span!(
            "migration",
            "db.system" = "postgresql",
            "db.namespace" = %database_name,
            "runway.migration" = %m.name,
            otel.status_code = tracing::field::Empty,
        );
        let at = Counted { done: index as u64, total };
        let ms = apply(session, m, plan, at, !report.applied.is_empty(), progress).instrument(span).await?;
        report.applied.push(m.name.clone());
        report.durations_ms.push(ms);
    }
    Ok(report)
}

/// Where a migration stands in the run, for progress.
#[derive(Clone, Copy)]
struct Counted {
    done: u64,
    total: u64,
}

/// Applies one pending migration and records it in `_prisma_migrations`;
/// returns how long it took (ms). `changed_before`: earlier migrations of
/// this run were applied (the database changed whatever happens now).
async fn apply(
    session: &mut Session,
    m: &MigrationFile,
    FilePlan { segments, atomic }: FilePlan,
    Counted { done, total }: Counted,
    changed_before: bool,
    progress: &Progress,
) -> Result<u64, MigrateError> {
    progress.emit_counted(
        "migrate",
        format!("applying {} ({}/{total})", m.name, done + 1),
        done,
        total,
        "migrations",
    );
    let started = Instant::now();
    let id = table::insert_started(&mut session.conn, &session.schema, &m.name, &checksum::checksum(&m.sql))
        .await?;
    if let Err(failure) = run_segments(&mut session.conn, &m.sql, &segments).await {
        // Leave no aborted transaction block behind for the bookkeeping.
        let _ = sqlx::Executor::execute(&mut session.conn, sqlx::raw_sql("ROLLBACK")).await;
        let logs = failure.logs(&m.name, &m.sql);
        let recorded = table::mark_failed(&mut session.conn, &session.schema, &id, &logs).await;
        let mut error = failure.error_text();
        if let Err(e) = recorded {
            error.push_str(&format!(" (and recording the failure in _prisma_migrations failed too: {e})"));
        }
        progress.emit_counted("migrate", format!("{} failed", m.name), done, total, "migrations");
        tracing::Span::current().record("otel.status_code", "ERROR");
        return Err(MigrateError::Failed {
            name: m.name.clone(),
            line: failure.line(&m.sql),
            code: failure.code.clone(),
            error,
            database_changed: changed_before || failure.committed_before > 0 || !atomic,
        });
    }
    table::mark_finished(&mut session.conn, &session.schema, &id, &m.name).await?;
    let ms = started.elapsed().as_millis() as u64;
    tracing::info!(migration = %m.name, ms, "migration applied");
    progress.emit_counted(
        "migrate",
        format!("applied {} ({}/{total}) in {ms} ms", m.name, done + 1),
        done + 1,
        total,
        "migrations",
    );
    Ok(ms)
}

/// How one pending file will be sent.
pub(crate) struct FilePlan {
    pub(crate) segments: Vec<Segment>,
    /// The whole file runs in one transaction: when it fails, nothing of
    /// it stays. False when it is sent in parts or has its own
    /// transaction control (a COMMIT inside the file keeps what came before).
    pub(crate) atomic: bool,
}

/// Splits a file into what to send, refusing files that leave a
/// transaction open. Files the grammar cannot parse go as one script, the
/// way Prisma sends them; the server then reports the error (before running
/// any of it: the server parses the whole script first).
pub(crate) fn plan_file(m: &MigrationFile) -> Result<FilePlan, MigrateError> {
    let Ok(stmts) = parse::parse(&m.sql) else {
        return Ok(FilePlan { segments: vec![Segment { range: 0..m.sql.len(), alone: None }], atomic: true });
    };
    if let Some(line) = script::unclosed_block(&stmts) {
        return Err(MigrateError::Failed {
            name: m.name.clone(),
            line: Some(line),
            code: "none".into(),
            error: "the BEGIN on this line is never committed; nothing was applied. Add COMMIT at the end"
                .into(),
            database_changed: false,
        });
    }
    let segments = script::segments(&m.sql, &stmts);
    let atomic = segments.len() == 1 && !script::controls_transactions(&stmts);
    Ok(FilePlan { segments, atomic })
}

pub(crate) async fn set_timeouts(
    conn: &mut PgConnection,
    config: &MigrateConfig,
) -> Result<(), MigrateError> {
    let mut sql = String::new();
    if !config.lock_timeout.is_zero() {
        sql.push_str(&format!("SET lock_timeout = {};", config.lock_timeout.as_millis()));
    }
    if !config.statement_timeout.is_zero() {
        sql.push_str(&format!("SET statement_timeout = {};", config.statement_timeout.as_millis()));
    }
    if !sql.is_empty() {
        sqlx::Executor::execute(&mut *conn, sqlx::raw_sql(&sql))
            .await
            .map_err(|e| MigrateError::db("setting timeouts", e))?;
    }
    Ok(())
}

/// A failed script, with enough to point at the statement.
pub(crate) struct ScriptFailure {
    code: String,
    /// Severity, message, detail, hint.
    text: String,
    /// Byte offset in the file of the error position, if the server gave one.
    offset: Option<usize>,
    /// Byte offset where the failing segment starts.
    segment_start: usize,
    /// Segments that committed before the failing one.
    pub(crate) committed_before: usize,
    /// Why the file was split, when it was.
    split_reason: Option<&'static str>,
}

impl ScriptFailure {
    pub(crate) fn line(&self, sql: &str) -> Option<usize> {
        self.offset
            .map(|o| line_of(sql, o))
            .or((self.committed_before > 0).then(|| line_of(sql, self.segment_start)))
    }

    pub(crate) fn error_text(&self) -> String {
        format!("{} (SQLSTATE {})", self.text, self.code)
    }

    /// What goes into `_prisma_migrations.logs`, shaped like Prisma's P3018.
    fn logs(&self, name: &str, sql: &str) -> String {
        let mut logs = format!(
            "A migration failed to apply. New migrations cannot be applied before the error is recovered from. \
             Read more about how to resolve migration issues in a production database: \
             https://pris.ly/d/migrate-resolve\n\nMigration name: {name}\n\nDatabase error code: {}\n\nDatabase error:\n{}",
            self.code, self.text
        );
        if let Some(offset) = self.offset {
            let line = line_of(sql, offset);
            logs.push_str("\n\nPosition:\n");
            for (i, text) in sql.lines().enumerate().skip(line.saturating_sub(6)).take(line.min(6)) {
                logs.push_str(&format!("{:>3} {}\n", i + 1, text.trim_end_matches('\r')));
            }
        }
        if self.committed_before > 0 {
            logs.push_str(&format!(
                "\n\nThe file was run in parts because it contains {}; the statements before line {} were \
                 committed and are NOT rolled back.",
                self.split_reason.unwrap_or("statements that cannot run in a transaction"),
                line_of(sql, self.segment_start)
            ));
        }
        redact_urls(&logs)
    }
}

pub(crate) async fn run_segments(
    conn: &mut PgConnection,
    sql: &str,
    segments: &[Segment],
) -> Result<(), ScriptFailure> {
    let split_reason = segments.iter().find_map(|s| s.alone);
    for (i, segment) in segments.iter().enumerate() {
        let text = &sql[segment.range.clone()];
        if let Err(e) = sqlx::Executor::execute(&mut *conn, sqlx::raw_sql(text)).await {
            let mut failure = ScriptFailure {
                code: "none".into(),
                text: redact_urls(&e.to_string()),
                offset: None,
                segment_start: segment.range.start,
                committed_before: i,
                split_reason,
            };
            if let Some(db) = e.as_database_error().and_then(|d| d.try_downcast_ref::<PgDatabaseError>()) {
                failure.code = db.code().to_owned();
                let severity = format!("{:?}", db.severity()).to_uppercase();
                let mut text = format!("{severity}: {}", db.message());
                if let Some(detail) = db.detail() {
                    text.push_str(&format!("\nDETAIL: {detail}"));
                }
                if let Some(hint) = db.hint() {
                    text.push_str(&format!("\nHINT: {hint}"));
                }
                if let Some(context) = db.r#where() {
                    text.push_str(&format!("\nCONTEXT: {context}"));
                }
                failure.text = redact_urls(&text);
                if let Some(PgErrorPosition::Original(chars)) = db.position() {
                    // 1-based character position within the text we sent.
                    let byte = text_char_to_byte(text_of(sql, segment), chars.saturating_sub(1));
                    failure.offset = Some(segment.range.start + byte);
                }
            }
            return Err(failure);
        }
    }
    Ok(())
}

fn text_of<'a>(sql: &'a str, segment: &Segment) -> &'a str {
    &sql[segment.range.clone()]
}

fn text_char_to_byte(text: &str, chars: usize) -> usize {
    text.char_indices().nth(chars).map(|(b, _)| b).unwrap_or(text.len())
}
