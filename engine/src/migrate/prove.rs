//! `prove`: whether each migration's `down.sql` returns the schema exactly
//! to where it was, tried before production is touched.
//!
//! The proof runs on a scratch database (`runway_prove_<random>`) on the
//! same server, holding a schema-only copy of the live database (never its
//! data), and is dropped afterwards whatever happens:
//!
//! - [`Direction::Forward`] (pending migrations, before a deploy): apply
//!   every migration in order, dumping the schema before each; then run
//!   the downs newest first: after each, the schema must equal the dump
//!   from before its migration, byte for byte.
//! - [`Direction::Backward`] (applied migrations, newest first, before a
//!   rollback): run every down, dumping the schema before each; then apply
//!   the migrations again oldest first: after each, the schema must equal
//!   the dump from before its down.
//!
//! A down that fails or does not come back is reported with the database's
//! error or the objects that differ; the scratch database is then loaded
//! again from the dump the next check starts from, so every down is judged
//! on its own. One scratch database and two schema dumps per migration,
//! whatever the size of the data. Proving never fails the caller: what
//! could not be tried is [`DownState::Unproven`], with the reason.

use std::collections::HashSet;
use std::path::Path;
use std::time::Instant;

use pg_query::NodeEnum;
use pg_query::protobuf::{AlterTableType, ObjectType};
use runway_proto::bundle::MigrationFile;
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;

use super::lint::{Finding, Severity, Work, rules};
use super::schema::{self, Schema};
use super::{MigrateError, connect, deploy, parse};
use crate::database::Database;

/// What proving found about one migration's down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DownState {
    /// The schema came back exactly.
    Proven,
    /// The migration has no `down.sql`.
    Missing,
    /// The down failed with an error (in `detail`).
    Fails,
    /// The down ran but the schema did not come back (`detail` names the objects).
    Differs,
    /// Not tried, or not decidable (`detail` says why): never counts as proven.
    Unproven,
}

impl DownState {
    /// The name used in output and on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Self::Proven => "proven",
            Self::Missing => "missing",
            Self::Fails => "fails",
            Self::Differs => "differs",
            Self::Unproven => "unproven",
        }
    }
}

/// One migration's down and what proving found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DownProof {
    /// The migration (folder) name.
    pub migration: String,
    pub state: DownState,
    /// The error, the objects that differ, or why it was not tried.
    pub detail: String,
}

/// Every down of a set of migrations, proven together.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DownsReport {
    /// In the order the migrations were given.
    pub downs: Vec<DownProof>,
    /// Downs that drop tables or columns which existed before their
    /// migration: rolling back would delete data (Danger findings, rule
    /// [`DROPS_EXISTING`]).
    #[serde(default)]
    pub dangers: Vec<DownDanger>,
    /// How long proving took, in milliseconds (0 when nothing needed a scratch database).
    pub ms: u64,
    /// [`Direction::Backward`] with every down proven: the schema the
    /// copy had after all the downs, which the live database must have
    /// after them too.
    #[serde(skip)]
    pub after: Option<Schema>,
    /// The live schema the copy was made from.
    #[serde(skip)]
    pub live: Option<Schema>,
}

/// A down that drops an object which existed before its migration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DownDanger {
    pub migration: String,
    /// 1-based line in `down.sql`.
    pub line: usize,
    pub table: String,
    /// The column, for a dropped column.
    pub column: Option<String>,
}

/// The lint rule of a down that drops what existed before its migration.
pub const DROPS_EXISTING: &str = "down-drops-existing";

impl DownsReport {
    /// Whether every down is [`DownState::Proven`] (true for no migrations).
    pub fn all_proven(&self) -> bool {
        self.downs.iter().all(|d| d.state == DownState::Proven)
    }

    /// The dangers as lint findings, so the danger gate treats them like any other.
    pub fn findings(&self) -> Vec<Finding> {
        self.dangers
            .iter()
            .map(|d| {
                let what = match &d.column {
                    Some(column) => format!("column {}.{column}", d.table),
                    None => format!("table {}", d.table),
                };
                Finding {
                    migration: d.migration.clone(),
                    line: d.line,
                    statement: format!("down.sql line {}", d.line),
                    rule: DROPS_EXISTING,
                    severity: Severity::Danger,
                    lock: "ACCESS EXCLUSIVE",
                    table: Some(d.table.clone()),
                    work: Work::Instant,
                    message: format!(
                        "the down of {} drops {what}, which existed before the migration: rolling back by \
                         migration would delete its data",
                        d.migration
                    ),
                    estimated_seconds: None,
                }
            })
            .collect()
    }

    fn push(&mut self, migration: &MigrationFile, state: DownState, detail: impl Into<String>) {
        self.downs.push(DownProof { migration: migration.name.clone(), state, detail: detail.into() });
    }

    /// Marks every migration from `rest` on unproven, for `why`.
    fn give_up(&mut self, rest: &[&MigrationFile], why: &str) {
        for m in rest {
            self.push(m, DownState::Unproven, format!("not tried: {why}"));
        }
    }
}

/// Which way the migrations are proven (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Pending migrations, in apply order: up, down, compare.
    Forward,
    /// Applied migrations, newest first: down, up, compare.
    Backward,
}

/// Proves the downs of `migrations` against a schema-only copy of the
/// database at `database_url`; `pg_dump` is the tool's path.
pub async fn prove(
    database_url: &str,
    migrations: &[&MigrationFile],
    direction: Direction,
    pg_dump: &Path,
) -> DownsReport {
    match connect::parse(database_url) {
        Ok(database) => prove_on(&database, migrations, direction, pg_dump).await,
        Err(e) => {
            let mut report = DownsReport::default();
            report.give_up(migrations, &format!("the scratch database failed: {e}"));
            report
        }
    }
}

/// [`prove`] for a parsed database.
pub async fn prove_on(
    database: &Database,
    migrations: &[&MigrationFile],
    direction: Direction,
    pg_dump: &Path,
) -> DownsReport {
    let mut report = DownsReport::default();
    if migrations.iter().all(|m| m.down.is_none()) {
        for m in migrations {
            report.push(m, DownState::Missing, "no down.sql");
        }
        return report;
    }
    let started = Instant::now();
    let outcome = async {
        let live = schema::dump(database, pg_dump).await?;
        let mut scratch = Scratch::create(database).await?;
        let proven = async {
            scratch.load(&live).await?;
            run(&mut scratch, migrations, direction, pg_dump, &mut report).await
        }
        .await;
        scratch.drop().await;
        report.live = Some(live);
        proven
    }
    .await;
    if let Err(e) = outcome {
        let done = report.downs.len();
        report.give_up(&migrations[done..], &format!("the scratch database failed: {e}"));
    }
    report.ms = started.elapsed().as_millis() as u64;
    report
}

async fn run(
    scratch: &mut Scratch,
    migrations: &[&MigrationFile],
    direction: Direction,
    pg_dump: &Path,
    report: &mut DownsReport,
) -> Result<(), MigrateError> {
    let mut found: Vec<Option<(DownState, String)>> = vec![None; migrations.len()];
    match direction {
        Direction::Forward => forward(scratch, migrations, pg_dump, &mut found, report).await?,
        Direction::Backward => backward(scratch, migrations, pg_dump, &mut found, report).await?,
    }
    for (m, found) in migrations.iter().zip(found) {
        match found {
            Some((state, detail)) => report.push(m, state, detail),
            None => {
                report.push(m, DownState::Unproven, "not tried: a migration before it could not be tried")
            }
        }
    }
    Ok(())
}

/// Every migration up, in order, dumping the schema before each; then
/// every down, newest first, each compared with the dump from before its
/// migration. A down that fails or differs is followed by that dump
/// loaded again, so each down is judged on its own.
async fn forward(
    scratch: &mut Scratch,
    migrations: &[&MigrationFile],
    pg_dump: &Path,
    found: &mut [Option<(DownState, String)>],
    report: &mut DownsReport,
) -> Result<(), MigrateError> {
    let mut before = Vec::with_capacity(migrations.len());
    for (i, m) in migrations.iter().enumerate() {
        let schema = schema::dump(&scratch.database, pg_dump).await?;
        let existing = if m.down.is_some() { columns(&scratch.database).await? } else { HashSet::new() };
        if let Err(e) = run_sql(&scratch.database, &m.name, &m.sql).await {
            found[i] = Some(match m.down {
                Some(_) => {
                    (DownState::Unproven, format!("the migration itself fails on a schema-only copy: {e}"))
                }
                None => (DownState::Missing, "no down.sql".to_owned()),
            });
            break;
        }
        if let Some(down) = m.down.as_deref() {
            report.dangers.extend(drops_existing(m, down, &existing));
        }
        before.push(schema);
    }
    back_again(scratch, migrations, &before, Direction::Forward, pg_dump, found).await
}

/// Every down, newest first, dumping the schema before each; then every
/// migration again, oldest first, each compared with the dump from before
/// its down. What the copy holds after all the downs is what the live
/// database must hold after them ([`DownsReport::after`]).
async fn backward(
    scratch: &mut Scratch,
    migrations: &[&MigrationFile],
    pg_dump: &Path,
    found: &mut [Option<(DownState, String)>],
    report: &mut DownsReport,
) -> Result<(), MigrateError> {
    let mut before = Vec::with_capacity(migrations.len());
    for (i, m) in migrations.iter().enumerate() {
        let schema = schema::dump(&scratch.database, pg_dump).await?;
        let Some(down) = m.down.as_deref() else {
            found[i] = Some((DownState::Missing, "no down.sql: nothing before it can be undone".to_owned()));
            break;
        };
        if let Err(e) = run_sql(&scratch.database, &m.name, down).await {
            found[i] = Some((DownState::Fails, e));
            break;
        }
        before.push(schema);
    }
    let after = schema::dump(&scratch.database, pg_dump).await?;
    back_again(scratch, migrations, &before, Direction::Backward, pg_dump, found).await?;
    if found.iter().all(|f| f.as_ref().is_some_and(|(state, _)| *state == DownState::Proven)) {
        report.after = Some(after);
    }
    Ok(())
}

/// The second half of a proof, the last step first: for each migration
/// `before` has a dump for, the step back (forward: its down; backward:
/// the migration again), judged against that dump. After a step that
/// fails or differs, the dump is loaded again so the next is judged on
/// its own.
async fn back_again(
    scratch: &mut Scratch,
    migrations: &[&MigrationFile],
    before: &[Schema],
    direction: Direction,
    pg_dump: &Path,
    found: &mut [Option<(DownState, String)>],
) -> Result<(), MigrateError> {
    for i in (0..before.len()).rev() {
        let m = migrations[i];
        let step = match direction {
            Direction::Forward => m.down.as_deref(),
            Direction::Backward => Some(m.sql.as_str()),
        };
        let judged = match step {
            None => (DownState::Missing, "no down.sql".to_owned()),
            Some(sql) => match run_sql(&scratch.database, &m.name, sql).await {
                Err(e) if direction == Direction::Forward => (DownState::Fails, e),
                Err(e) => {
                    (DownState::Unproven, format!("the migration does not apply again after its down: {e}"))
                }
                Ok(()) => judge(&schema::dump(&scratch.database, pg_dump).await?, &before[i]),
            },
        };
        if judged.0 != DownState::Proven {
            scratch.reset(&before[i]).await?;
        }
        found[i] = Some(judged);
    }
    Ok(())
}

/// `proven` when `now` is `expected`, else `differs` naming the objects.
fn judge(now: &Schema, expected: &Schema) -> (DownState, String) {
    let diff = now.diff(expected);
    if diff.is_empty() {
        (DownState::Proven, String::new())
    } else {
        (DownState::Differs, schema::summary(&diff, 5))
    }
}

/// The folder's history replayed on an empty scratch database, with
/// Prisma's table: the schema after `history[..keep]` and after all of
/// `history`. `None` when a migration of it fails on an empty database.
/// What `migrate down` compares with when nobody saved the schema from
/// before: exact whenever replaying everything gives the live schema.
pub async fn replay(
    live: &Database,
    history: &[&MigrationFile],
    keep: usize,
    pg_dump: &Path,
) -> Result<Option<(Schema, Schema)>, MigrateError> {
    let scratch = Scratch::create(live).await?;
    let replayed = async {
        let mut session = connect::open(&scratch.database).await?;
        let ready = super::deploy::ensure_schema(&mut session).await;
        session.close().await;
        ready?;
        let mut kept = None;
        for (i, m) in history.iter().enumerate() {
            if i == keep {
                kept = Some(schema::dump(&scratch.database, pg_dump).await?);
            }
            if run_sql(&scratch.database, &m.name, &m.sql).await.is_err() {
                return Ok(None);
            }
        }
        let all = schema::dump(&scratch.database, pg_dump).await?;
        Ok(Some((kept.unwrap_or_else(|| all.clone()), all)))
    }
    .await;
    scratch.drop().await;
    replayed
}

/// `(schema, table, column)` of every column of every table now.
async fn columns(database: &Database) -> Result<HashSet<(String, String, String)>, MigrateError> {
    let mut conn = database.connect().await.map_err(|e| MigrateError::Connect(e.to_string()))?;
    let rows: Result<Vec<(String, String, Option<String>)>, _> = sqlx::query_as(
        "SELECT n.nspname::text, c.relname::text, a.attname::text FROM pg_class c \
         JOIN pg_namespace n ON n.oid = c.relnamespace \
         LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
         WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')",
    )
    .fetch_all(&mut conn)
    .await
    .map_err(|e| MigrateError::db("listing the scratch schema's columns", e));
    // Closed, not dropped: a session still open would keep the copy from
    // serving as a template.
    let _ = sqlx::Connection::close(conn).await;
    Ok(rows?.into_iter().map(|(s, t, c)| (s, t, c.unwrap_or_default())).collect())
}

/// The tables and columns `down` drops that are in `existing` (the schema
/// before `m` ran).
fn drops_existing(
    m: &MigrationFile,
    down: &str,
    existing: &HashSet<(String, String, String)>,
) -> Vec<DownDanger> {
    let has = |table: &str, column: Option<&str>| {
        let (schema, name) = table.split_once('.').map_or((None, table), |(s, n)| (Some(s), n));
        existing.iter().any(|(s, t, c)| {
            schema.is_none_or(|schema| schema == s) && t == name && column.is_none_or(|column| column == c)
        })
    };
    dropped_objects(down)
        .into_iter()
        .filter(|d| has(&d.table, d.column.as_deref()))
        .map(|d| DownDanger { migration: m.name.clone(), line: d.line, table: d.table, column: d.column })
        .collect()
}

/// A table or column a script drops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    /// 1-based line of the statement.
    pub line: usize,
    /// As written: `schema.name` or `name`.
    pub table: String,
    /// The column, for a dropped column.
    pub column: Option<String>,
}

/// The tables (`DROP TABLE`) and columns (`ALTER TABLE … DROP COLUMN`)
/// `sql` drops, from PostgreSQL's parse tree; none when it does not parse.
pub fn dropped_objects(sql: &str) -> Vec<Dropped> {
    let Ok(stmts) = parse::parse(sql) else { return Vec::new() };
    let mut out = Vec::new();
    for stmt in &stmts {
        match &stmt.node {
            NodeEnum::DropStmt(s) if s.remove_type == ObjectType::ObjectTable as i32 => {
                out.extend(s.objects.iter().map(|o| Dropped {
                    line: stmt.line,
                    table: rules::object_name(o),
                    column: None,
                }));
            }
            NodeEnum::AlterTableStmt(s) => {
                let table = s.relation.as_ref().map(rules::range_var_name).unwrap_or_default();
                for cmd in &s.cmds {
                    if let Some(NodeEnum::AlterTableCmd(cmd)) = &cmd.node
                        && cmd.subtype == AlterTableType::AtDropColumn as i32
                    {
                        out.push(Dropped {
                            line: stmt.line,
                            table: table.clone(),
                            column: Some(cmd.name.clone()),
                        });
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// Runs one migration file's SQL (`name` for messages) on `database` as
/// deploy runs it; the error names the line.
async fn run_sql(database: &Database, name: &str, sql: &str) -> Result<(), String> {
    let file = MigrationFile { name: name.to_owned(), sql: sql.to_owned(), down: None };
    let plan = deploy::plan_file(&file).map_err(|e| e.to_string())?;
    let mut session = connect::open(database).await.map_err(|e| e.to_string())?;
    let outcome = deploy::run_segments(&mut session.conn, sql, &plan.segments).await;
    session.close().await;
    outcome.map_err(|failure| match failure.line(sql) {
        Some(line) => format!("line {line}: {}", failure.error_text()),
        None => failure.error_text(),
    })
}

/// The scratch database of one proof.
struct Scratch {
    /// A session on the server's `postgres` database, to create and drop them.
    admin: PgConnection,
    name: String,
    /// The scratch database, with the live URL's settings (`?schema=`).
    database: Database,
}

impl Scratch {
    async fn create(live: &Database) -> Result<Self, MigrateError> {
        let admin = live
            .with_database("postgres")
            .connect()
            .await
            .map_err(|e| MigrateError::Connect(e.to_string()))?;
        let name = format!("runway_prove_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let mut scratch = Self { admin, database: live.with_database(&name), name };
        let sql = format!("CREATE DATABASE {} TEMPLATE template0", connect::quote_ident(&scratch.name));
        scratch.admin_sql(&sql, "creating scratch database").await?;
        Ok(scratch)
    }

    async fn admin_sql(&mut self, sql: &str, what: &str) -> Result<(), MigrateError> {
        sqlx::Executor::execute(&mut self.admin, sqlx::raw_sql(sql))
            .await
            .map_err(|e| MigrateError::db(format!("{what} (scratch database {})", self.name), e))?;
        Ok(())
    }

    /// Loads a schema-only dump into the (empty) scratch database.
    async fn load(&mut self, schema: &Schema) -> Result<(), MigrateError> {
        let mut conn = self.database.connect().await.map_err(|e| MigrateError::Connect(e.to_string()))?;
        let loaded = sqlx::Executor::execute(&mut conn, sqlx::raw_sql(schema.text())).await.map_err(|e| {
            MigrateError::db(format!("copying the schema into scratch database {}", self.name), e)
        });
        let _ = sqlx::Connection::close(conn).await;
        loaded.map(|_| ())
    }

    /// Empties the scratch database and loads `schema` again: the state
    /// before a down that failed or differed, so the next one is judged on
    /// its own.
    async fn reset(&mut self, schema: &Schema) -> Result<(), MigrateError> {
        let name = connect::quote_ident(&self.name);
        self.admin_sql(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"), "emptying").await?;
        self.admin_sql(&format!("CREATE DATABASE {name} TEMPLATE template0"), "creating again").await?;
        self.load(schema).await
    }

    /// Drops the scratch database; a failure is logged (it is named
    /// `runway_prove_*`, so it cannot be mistaken for a user's database).
    async fn drop(mut self) {
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", connect::quote_ident(&self.name));
        if let Err(e) = self.admin_sql(&sql, "dropping").await {
            tracing::warn!(scratch = %self.name, error = %e, "cannot drop the proof's scratch database");
        }
        let _ = sqlx::Connection::close(self.admin).await;
    }
}
