//! Sending the checks over one session: every query under the configured
//! `statement_timeout`, in read-only transactions (only the temporary
//! functions of the cast checks are created in a read-write one, in
//! `pg_temp`), row checks on the same rows merged into one scan.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::time::Duration;

use sqlx::postgres::PgRow;
use sqlx::{Executor, Row};

use super::cast::Cast;
use super::check::{Check, EXAMPLES, Keys, Test};
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
    let mut found: Vec<Option<Found>> = vec![None; checks.len()];
    scan_rows(probe, checks, &mut found).await;
    let mut functions: Vec<Option<String>> = vec![None; checks.len()];
    for (i, check) in checks.iter().enumerate() {
        if found[i].is_some() {
            continue;
        }
        let count = match &check.test {
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
        };
        found[i] = Some(Found { count, examples: None });
    }
    let mut out = Vec::with_capacity(checks.len());
    for ((check, found), function) in checks.iter().zip(found).zip(functions) {
        let Found { count, examples } =
            found.unwrap_or_else(|| Found { count: Err(Failure::Other("not run".into())), examples: None });
        let live = check.target.live.clone().unwrap_or_default();
        let keys = probe.keys(&live).await;
        let call = function.as_deref().map(|f| match &check.test {
            Test::Cast(cast) => cast.call(f, &check.target.alias()),
            _ => String::new(),
        });
        let examples = match (&count, examples) {
            (Ok(n), Some(examples)) if *n > 0 => examples,
            (Ok(n), None) if *n > 0 => {
                probe.examples(&keys, &check.examples_sql(&keys, call.as_deref())).await
            }
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

/// One check's answer.
#[derive(Debug, Clone)]
struct Found {
    count: Result<i64, Failure>,
    /// Examples the same scan read (`None`: ask for them separately).
    examples: Option<Vec<String>>,
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

/// Offending rows a merged scan lists before it gives up listing them and
/// counts instead.
const LISTED_ROWS: usize = 10_000;

/// Every row test and foreign key, one scan per set of rows: the scan
/// lists the keys of the rows that fail any test (`WHERE t1 OR t2 …`), so
/// the count and the examples come from one pass. Past [`LISTED_ROWS`]
/// rows it stops (the `LIMIT`) and counts with `count(*) FILTER (WHERE …)`
/// per test instead. When a merged scan fails for another reason than its
/// timeout, its checks run one by one (one bad expression does not hide
/// the others).
async fn scan_rows(probe: &mut Probe, checks: &[Check], found: &mut [Option<Found>]) {
    let mut groups: Vec<(String, Vec<usize>)> = Vec::new();
    for (i, check) in checks.iter().enumerate() {
        if check.scan_test(0).is_none() {
            continue;
        }
        let from = check.from();
        match groups.iter_mut().find(|(f, _)| *f == from) {
            Some((_, members)) => members.push(i),
            None => groups.push((from, vec![i])),
        }
    }
    for (from, members) in groups {
        let live = checks[members[0]].target.live.clone().unwrap_or_default();
        let keys = probe.keys(&live).await;
        match scan(probe, &keys, &from, &members, checks).await {
            Ok(answers) => {
                for (&i, answer) in members.iter().zip(answers) {
                    found[i] = Some(answer);
                }
            }
            Err(failure) if members.len() == 1 || matches!(failure, Failure::Timeout) => {
                for &i in &members {
                    found[i] = Some(Found { count: Err(failure.clone()), examples: None });
                }
            }
            Err(_) => {
                for &i in &members {
                    found[i] = Some(match scan(probe, &keys, &from, &[i], checks).await {
                        Ok(mut answers) => answers.remove(0),
                        Err(failure) => Found { count: Err(failure), examples: None },
                    });
                }
            }
        }
    }
}

/// One merged scan of `from` (with the parents its foreign keys join) for
/// the checks `members`.
async fn scan(
    probe: &mut Probe,
    keys: &Keys,
    from: &str,
    members: &[usize],
    checks: &[Check],
) -> Result<Vec<Found>, Failure> {
    let mut joins = Vec::new();
    let mut tests = Vec::new();
    for (n, &i) in members.iter().enumerate() {
        let (join, test) = checks[i].scan_test(n).unwrap_or_else(|| (None, "false".into()));
        joins.extend(join);
        tests.push(format!("({test})"));
    }
    let from = std::iter::once(from.to_owned()).chain(joins).collect::<Vec<_>>().join(" ");
    let key_sql = keys.sql(None);
    let select: Vec<String> = key_sql
        .iter()
        .map(|k| format!("{k}::text"))
        .chain(tests.iter().map(|t| format!("{t} IS TRUE")))
        .collect();
    let sql = format!(
        "SELECT {} FROM {from} WHERE {} LIMIT {}",
        select.join(", "),
        tests.join(" OR "),
        LISTED_ROWS + 1
    );
    let rows = probe.fetch(&sql, &[]).await?;
    let width = key_sql.len();
    let mut failing: Vec<Vec<Vec<Option<String>>>> = vec![Vec::new(); members.len()];
    for row in &rows {
        let key: Vec<Option<String>> =
            (0..width).map(|c| row.try_get::<Option<String>, _>(c).ok().flatten()).collect();
        for (t, list) in failing.iter_mut().enumerate() {
            if row.try_get::<bool, _>(width + t).unwrap_or(false) {
                list.push(key.clone());
            }
        }
    }
    let counts: Vec<Result<i64, Failure>> = if rows.len() > LISTED_ROWS {
        let columns: Vec<String> = tests.iter().map(|t| format!("count(*) FILTER (WHERE {t})")).collect();
        let row = probe.fetch(&format!("SELECT {} FROM {from}", columns.join(", ")), &[]).await?;
        (0..members.len())
            .map(|t| {
                row.first()
                    .and_then(|r| r.try_get::<i64, _>(t).ok())
                    .ok_or_else(|| Failure::Other("no count returned".into()))
            })
            .collect()
    } else {
        failing.iter().map(|list| Ok(list.len() as i64)).collect()
    };
    Ok(counts
        .into_iter()
        .zip(failing)
        .map(|(count, mut list)| {
            list.sort_by(|a, b| key_order(a, b));
            // Past the listing, a test may have fewer examples listed than
            // it has rows: its examples are asked for on their own.
            let enough = matches!(count, Ok(n) if list.len() as i64 >= n.min(EXAMPLES as i64));
            let examples =
                enough.then(|| list.iter().take(EXAMPLES).map(|values| keys.render(values)).collect());
            Found { count, examples }
        })
        .collect())
}

/// Key order for keys read back as text: numbers as numbers, `ctid`s as
/// (block, row), NULL last, anything else as text.
fn key_order(a: &[Option<String>], b: &[Option<String>]) -> Ordering {
    a.iter().zip(b).map(|(x, y)| key_part_order(x, y)).find(|o| o.is_ne()).unwrap_or(Ordering::Equal)
}

fn key_part_order(a: &Option<String>, b: &Option<String>) -> Ordering {
    let (Some(a), Some(b)) = (a, b) else {
        return a.is_none().cmp(&b.is_none());
    };
    if let (Ok(x), Ok(y)) = (a.parse::<i128>(), b.parse::<i128>()) {
        return x.cmp(&y);
    }
    let ctid = |s: &str| {
        let (block, row) = s.strip_prefix('(')?.strip_suffix(')')?.split_once(',')?;
        Some((block.parse::<u64>().ok()?, row.parse::<u64>().ok()?))
    };
    if let (Some(x), Some(y)) = (ctid(a), ctid(b)) {
        return x.cmp(&y);
    }
    if let (Ok(x), Ok(y)) = (a.parse::<f64>(), b.parse::<f64>()) {
        return x.partial_cmp(&y).unwrap_or(Ordering::Equal);
    }
    a.cmp(b)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn examples_sort_in_key_order() {
        let key = |v: &[Option<&str>]| v.iter().map(|s| s.map(str::to_owned)).collect::<Vec<_>>();
        let mut keys = vec![key(&[Some("10")]), key(&[None]), key(&[Some("9")]), key(&[Some("-3")])];
        keys.sort_by(|a, b| key_order(a, b));
        assert_eq!(keys, vec![key(&[Some("-3")]), key(&[Some("9")]), key(&[Some("10")]), key(&[None])]);
        let mut ctids = vec![key(&[Some("(0,10)")]), key(&[Some("(0,9)")]), key(&[Some("(1,1)")])];
        ctids.sort_by(|a, b| key_order(a, b));
        assert_eq!(ctids, vec![key(&[Some("(0,9)")]), key(&[Some("(0,10)")]), key(&[Some("(1,1)")])]);
        let mut pairs =
            [key(&[Some("b"), Some("2")]), key(&[Some("a"), Some("10")]), key(&[Some("a"), Some("2")])];
        pairs.sort_by(|a, b| key_order(a, b));
        assert_eq!(pairs[0], key(&[Some("a"), Some("2")]));
        assert_eq!(pairs[2], key(&[Some("b"), Some("2")]));
    }
}
