//! Sending the checks over one session: every query under the configured
//! `statement_timeout`, in read-only transactions (only the temporary
//! functions of the cast checks are created in a read-write one, in
//! `pg_temp`), row checks on the same rows merged into one scan.

use std::collections::HashMap;
use std::time::Duration;

use sqlx::postgres::PgRow;
use sqlx::{Executor, Row};

use super::cast::Cast;
use super::check::{Check, Keys, Test};
use crate::migrate::MigrateError;
use crate::migrate::connect::{self, Session};

/// Why a query gave no answer.
#[derive(Debug, Clone)]
pub(super) enum Failure {
    /// It ran longer than `statement_timeout`.
    Timeout,
    /// A row's value raised a data error. The server's message may quote
    /// the value, so only the SQLSTATE is kept.
    Data { code: String },
    /// Anything else, with the server's message.
    Other(String),
}

impl Failure {
    /// The reason, for a finding's message.
    pub fn reason(&self, timeout: Duration) -> String {
        match self {
            Self::Timeout => {
                format!("the check ran longer than its statement_timeout ({} ms)", timeout.as_millis())
            }
            Self::Data { code } => format!("reading the rows raised a data error (SQLSTATE {code})"),
            Self::Other(message) => message.clone(),
        }
    }
}

/// What running one check found.
#[derive(Debug)]
pub(super) struct Outcome {
    /// Offending rows (groups for unique), or why that is unknown.
    pub count: Result<i64, Failure>,
    /// Up to five offending rows' keys.
    pub examples: Vec<String>,
    /// The query for the operator.
    pub query: String,
}

/// The session checks run over, with a cache of the catalog lookups.
pub(super) struct Probe {
    session: Session,
    timeout: Duration,
    /// Queries sent (checks, examples and catalog lookups).
    pub queries: usize,
    /// Set when the connection itself failed: nothing more can be checked.
    pub lost: Option<MigrateError>,
    keys: HashMap<String, Keys>,
    functions: usize,
}

impl Probe {
    /// Connects and sets the session up: a statement timeout per query,
    /// read-only transactions by default.
    pub async fn open(database_url: &str, timeout: Duration) -> Result<Self, MigrateError> {
        let database = connect::parse(database_url)?;
        let mut session = connect::open(&database).await?;
        // 0 would mean no timeout at all; a duration under 1 ms is 1 ms.
        let ms = timeout.as_millis().clamp(1, i32::MAX as u128);
        let setup = format!(
            "SET statement_timeout = {ms}; SET default_transaction_read_only = on; SET idle_in_transaction_session_timeout = 0"
        );
        if let Err(e) = session.conn.execute(sqlx::raw_sql(&setup)).await {
            session.close().await;
            return Err(MigrateError::db("setting up the prediction session", e));
        }
        Ok(Self { session, timeout, queries: 0, lost: None, keys: HashMap::new(), functions: 0 })
    }

    /// The schema unqualified names live in (`?schema=` or `public`).
    pub fn schema(&self) -> &str {
        &self.session.schema
    }

    /// Each query's `statement_timeout`.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Closes the session (dropping its temporary functions).
    pub async fn close(self) {
        self.session.close().await;
    }

    fn classify(&mut self, error: sqlx::Error) -> Failure {
        match &error {
            sqlx::Error::Database(db) => {
                let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
                if code == "57014" {
                    Failure::Timeout
                } else if code.starts_with("22") || code.starts_with("23") {
                    Failure::Data { code }
                } else {
                    Failure::Other(db.message().to_owned())
                }
            }
            _ => {
                let failure = Failure::Other(format!(
                    "the connection failed: {}",
                    crate::redact::redact_urls(&error.to_string())
                ));
                self.lost
                    .get_or_insert_with(|| MigrateError::db("predicting failures on the live data", error));
                failure
            }
        }
    }

    /// Runs one query with text parameters.
    pub async fn fetch(&mut self, sql: &str, binds: &[&str]) -> Result<Vec<PgRow>, Failure> {
        if self.lost.is_some() {
            return Err(Failure::Other("the connection was lost".into()));
        }
        self.queries += 1;
        let mut query = sqlx::query(sql).persistent(false);
        for b in binds {
            query = query.bind(*b);
        }
        match query.fetch_all(&mut self.session.conn).await {
            Ok(rows) => Ok(rows),
            Err(e) => Err(self.classify(e)),
        }
    }

    /// Runs `sql` in a read-write transaction, committed when `keep`,
    /// rolled back otherwise. Only used for `pg_temp` functions.
    async fn read_write(&mut self, sql: &str, keep: bool) -> Result<(), Failure> {
        if self.lost.is_some() {
            return Err(Failure::Other("the connection was lost".into()));
        }
        self.queries += 1;
        let end = if keep { "COMMIT" } else { "ROLLBACK" };
        let result =
            self.session.conn.execute(sqlx::raw_sql(&format!("BEGIN READ WRITE; {sql}; {end}"))).await;
        if let Err(e) = result {
            let failure = self.classify(e);
            // The transaction is aborted; end it (a warning when there is none).
            let _ = self.session.conn.execute(sqlx::raw_sql("ROLLBACK")).await;
            return Err(failure);
        }
        Ok(())
    }

    /// The primary key columns of `live`, in key order (`None` without one).
    pub async fn primary_key(&mut self, live: &str) -> Result<Option<Vec<String>>, Failure> {
        let rows = self
            .fetch(
                "SELECT a.attname::text FROM pg_index i \
                   JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey) \
                  WHERE i.indrelid = to_regclass($1) AND i.indisprimary \
                  ORDER BY array_position(i.indkey::int2[], a.attnum)",
                &[live],
            )
            .await?;
        let names: Vec<String> = rows.iter().filter_map(|r| r.try_get::<String, _>(0).ok()).collect();
        Ok((!names.is_empty()).then_some(names))
    }

    /// The columns of each unique index of `live` over plain columns (no
    /// expression, no predicate), and whether they are all NOT NULL.
    pub async fn unique_keys(&mut self, live: &str) -> Result<Vec<(Vec<String>, bool)>, Failure> {
        let rows = self
            .fetch(
                "SELECT array_agg(a.attname::text), bool_and(a.attnotnull) FROM pg_index i \
                   JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey) \
                  WHERE i.indrelid = to_regclass($1) AND i.indisunique AND i.indisvalid \
                    AND i.indpred IS NULL AND i.indexprs IS NULL \
                  GROUP BY i.indexrelid",
                &[live],
            )
            .await?;
        Ok(rows
            .iter()
            .filter_map(|r| Some((r.try_get::<Vec<String>, _>(0).ok()?, r.try_get(1).ok()?)))
            .collect())
    }

    /// Whether a relation (table or index) of that name exists.
    pub async fn exists(&mut self, name: &str) -> Result<bool, Failure> {
        let rows = self.fetch("SELECT to_regclass($1) IS NOT NULL", &[name]).await?;
        Ok(rows.first().and_then(|r| r.try_get::<bool, _>(0).ok()).unwrap_or(false))
    }

    /// How offending rows of `live` are named: its primary key, else `ctid`.
    pub async fn keys(&mut self, live: &str) -> Keys {
        if let Some(keys) = self.keys.get(live) {
            return keys.clone();
        }
        let keys = match self.primary_key(live).await {
            Ok(Some(names)) => Keys { names },
            _ => Keys::ctid(),
        };
        self.keys.insert(live.to_owned(), keys.clone());
        keys
    }

    /// A live column's type (`format_type`) and whether it is NOT NULL.
    pub async fn column(&mut self, live: &str, column: &str) -> Result<Option<(String, bool)>, Failure> {
        let rows = self
            .fetch(
                "SELECT format_type(a.atttypid, a.atttypmod), a.attnotnull FROM pg_attribute a \
                  WHERE a.attrelid = to_regclass($1) AND a.attname = $2 AND a.attnum > 0 AND NOT a.attisdropped",
                &[live, column],
            )
            .await?;
        Ok(rows.first().and_then(|r| Some((r.try_get(0).ok()?, r.try_get(1).ok()?))))
    }

    /// A live type's labels when it is an enum: `Some(labels)` for an enum,
    /// `None` for another type; an error when it does not exist.
    pub async fn enum_labels(&mut self, type_sql: &str) -> Result<Option<Vec<String>>, Failure> {
        let rows = self
            .fetch(
                "SELECT t.typtype::text, ARRAY(SELECT e.enumlabel::text FROM pg_enum e WHERE e.enumtypid = t.oid \
                         ORDER BY e.enumsortorder) \
                   FROM pg_type t WHERE t.oid = to_regtype($1)",
                &[type_sql],
            )
            .await?;
        let Some(row) = rows.first() else {
            return Err(Failure::Other(format!("type {type_sql} does not exist")));
        };
        let kind: String = row.try_get(0).unwrap_or_default();
        Ok((kind == "e").then(|| row.try_get(1).unwrap_or_default()))
    }

    /// A live constraint's definition and whether it is validated.
    pub async fn constraint(&mut self, live: &str, name: &str) -> Result<Option<(String, bool)>, Failure> {
        let rows = self
            .fetch(
                "SELECT pg_get_constraintdef(c.oid), c.convalidated FROM pg_constraint c \
                  WHERE c.conrelid = to_regclass($1) AND c.conname = $2",
                &[live, name],
            )
            .await?;
        Ok(rows.first().and_then(|r| Some((r.try_get(0).ok()?, r.try_get(1).ok()?))))
    }

    /// Whether a value of `old` can be assigned to `new` without USING: the
    /// same assignment coercion PostgreSQL looks for in ALTER COLUMN TYPE,
    /// tried on a throwaway SQL function whose body returns its argument.
    pub async fn assignable(&mut self, old: &str, new: &str) -> Result<bool, Failure> {
        let sql = format!(
            "CREATE FUNCTION pg_temp.runway_predict_assignable(runway_predict_value {old}) RETURNS {new} \
             LANGUAGE sql AS $runway_predict$SELECT runway_predict_value$runway_predict$"
        );
        match self.read_write(&sql, false).await {
            Ok(()) => Ok(true),
            // "return type mismatch in function declared to return …"
            Err(Failure::Other(message)) if message.contains("return type mismatch") => Ok(false),
            Err(other) => Err(other),
        }
    }

    /// Creates a temporary function for a cast check; returns its name.
    async fn cast_function(&mut self, cast: &Cast, live: &str, alias: &str) -> Result<String, Failure> {
        self.functions += 1;
        let name = format!("pg_temp.runway_predict_cast_{}", self.functions);
        self.read_write(&cast.function_sql(&name, live, alias), true).await?;
        Ok(name)
    }

    async fn count(&mut self, sql: &str) -> Result<i64, Failure> {
        let rows = self.fetch(sql, &[]).await?;
        rows.first()
            .and_then(|r| r.try_get::<i64, _>(0).ok())
            .ok_or_else(|| Failure::Other(format!("no count from {sql}")))
    }

    /// Up to five offending rows' keys, rendered.
    async fn examples(&mut self, keys: &Keys, sql: &str) -> Vec<String> {
        let Ok(rows) = self.fetch(sql, &[]).await else { return Vec::new() };
        rows.iter()
            .map(|row| {
                let values: Vec<Option<String>> = (0..keys.names.len())
                    .map(|i| row.try_get::<Option<String>, _>(i).ok().flatten())
                    .collect();
                keys.render(&values)
            })
            .collect()
    }
}

/// Runs `checks`; one outcome per check, in order.
pub(super) async fn run(probe: &mut Probe, checks: &[Check]) -> Vec<Outcome> {
    let mut counts: Vec<Option<Result<i64, Failure>>> = vec![None; checks.len()];
    row_counts(probe, checks, &mut counts).await;
    let mut functions: Vec<Option<String>> = vec![None; checks.len()];
    for (i, check) in checks.iter().enumerate() {
        if counts[i].is_some() {
            continue;
        }
        counts[i] = Some(match &check.test {
            // Nothing to read: no row can fail.
            Test::Cast(cast) if cast.cannot_fail() => Ok(0),
            Test::Unique { exprs, nulls_not_distinct, .. }
                if implied(probe, check, exprs, *nulls_not_distinct).await =>
            {
                Ok(0)
            }
            Test::Cast(cast) => {
                let (count, function) = cast_count(probe, check, cast).await;
                functions[i] = function;
                count
            }
            _ => match check.count_sql() {
                Some(sql) => probe.count(&sql).await,
                None => Err(Failure::Other("no query for this check".into())),
            },
        });
    }
    let mut out = Vec::with_capacity(checks.len());
    for ((check, count), function) in checks.iter().zip(counts).zip(functions) {
        let count = count.unwrap_or_else(|| Err(Failure::Other("not run".into())));
        let live = check.target.live.clone().unwrap_or_default();
        let keys = probe.keys(&live).await;
        let call = function.as_deref().map(|f| match &check.test {
            Test::Cast(cast) => cast.call(f, &check.target.alias()),
            _ => String::new(),
        });
        let examples = match count {
            Ok(n) if n > 0 => probe.examples(&keys, &check.examples_sql(&keys, call.as_deref())).await,
            _ => Vec::new(),
        };
        let query = match (&check.test, &function) {
            (Test::Cast(cast), Some(_)) => {
                let name = "pg_temp.runway_converts";
                let create = cast.function_sql(name, &live, &check.target.alias());
                check.operator_query(&keys, Some((&create, &cast.call(name, &check.target.alias()))))
            }
            _ => check.operator_query(&keys, None),
        };
        out.push(Outcome { count, examples, query });
    }
    out
}

/// Whether a new unique key over `exprs` is unique already: its columns
/// include every column of a live unique index whose rows cannot collide
/// (NULLs distinct, or the index's columns all NOT NULL). The check's scan
/// (a group-by over the whole table) is then skipped.
async fn implied(probe: &mut Probe, check: &Check, exprs: &[String], nulls_not_distinct: bool) -> bool {
    let Some(live) = check.target.live.as_deref() else { return false };
    let Ok(keys) = probe.unique_keys(live).await else { return false };
    keys.iter().any(|(columns, not_null)| {
        (!nulls_not_distinct || *not_null) && columns.iter().all(|c| exprs.contains(&super::sql::ident(c)))
    })
}

/// Counts every row test, one scan per set of rows: `count(*) FILTER
/// (WHERE …)` per check. When a merged scan fails for another reason than
/// its timeout, its checks run one by one (so one bad expression does not
/// hide the others).
async fn row_counts(probe: &mut Probe, checks: &[Check], counts: &mut [Option<Result<i64, Failure>>]) {
    let mut groups: Vec<(String, Vec<usize>)> = Vec::new();
    for (i, check) in checks.iter().enumerate() {
        if check.row_predicate().is_none() {
            continue;
        }
        let from = check.from();
        match groups.iter_mut().find(|(f, _)| *f == from) {
            Some((_, members)) => members.push(i),
            None => groups.push((from, vec![i])),
        }
    }
    for (from, members) in groups {
        let sql = merged_sql(&from, members.iter().map(|&i| &checks[i]));
        match probe.fetch(&sql, &[]).await {
            Ok(rows) => {
                for (column, &i) in members.iter().enumerate() {
                    counts[i] = Some(
                        rows.first()
                            .and_then(|r| r.try_get::<i64, _>(column).ok())
                            .ok_or_else(|| Failure::Other("no count returned".into())),
                    );
                }
            }
            Err(failure) if members.len() == 1 || matches!(failure, Failure::Timeout) => {
                for &i in &members {
                    counts[i] = Some(Err(failure.clone()));
                }
            }
            Err(_) => {
                for &i in &members {
                    let sql = merged_sql(&from, std::iter::once(&checks[i]));
                    counts[i] = Some(probe.count(&sql).await);
                }
            }
        }
    }
}

fn merged_sql<'a>(from: &str, checks: impl Iterator<Item = &'a Check>) -> String {
    let columns: Vec<String> = checks
        .map(|c| format!("count(*) FILTER (WHERE {})", c.row_predicate().unwrap_or_else(|| "false".into())))
        .collect();
    format!("SELECT {} FROM {from}", columns.join(", "))
}

/// A cast's failing rows: one whole-table scan with an explicit cast (it
/// succeeds when every row converts; then only lengths and NULLs in a NOT
/// NULL column can fail); when a row raises a data error, a temporary
/// PL/pgSQL function tries each row inside an exception block (PostgreSQL
/// 15 has no `pg_input_is_valid`). Returns the function's name when used.
async fn cast_count(probe: &mut Probe, check: &Check, cast: &Cast) -> (Result<i64, Failure>, Option<String>) {
    let from = check.from();
    match probe.fetch(&cast.fast_sql(&from), &[]).await {
        Ok(rows) => {
            let get = |i: usize| rows.first().and_then(|r| r.try_get::<i64, _>(i).ok()).unwrap_or(0);
            (Ok(cast.fast_failures(get(0), get(1), get(2))), None)
        }
        Err(Failure::Data { .. }) => {
            let live = check.target.live.clone().unwrap_or_default();
            let alias = check.target.alias();
            let name = match probe.cast_function(cast, &live, &alias).await {
                Ok(name) => name,
                Err(failure) => return (Err(failure), None),
            };
            let sql = format!("SELECT count(*) FILTER (WHERE NOT {}) FROM {from}", cast.call(&name, &alias));
            (probe.count(&sql).await, Some(name))
        }
        Err(failure) => (Err(failure), None),
    }
}
