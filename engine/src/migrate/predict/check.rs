//! The checks: which rows of which table would make a statement fail,
//! written as SQL over the live tables. `walk` builds them from the bundle,
//! `run` sends them.
//!
//! Every query here is a plain SELECT. Offending rows are identified by
//! their primary key (or `ctid` when the table has none); other column
//! values appear only in the query handed to the operator, never in what
//! runway itself reads back.

use super::cast::Cast;
use super::sql::{ident, literal};

/// How many offending rows' keys a finding lists.
pub(super) const EXAMPLES: usize = 5;

/// A column added earlier in the bundle, as the existing rows will hold it.
#[derive(Debug, Clone)]
pub(super) struct Extra {
    /// The column's name.
    pub name: String,
    /// SQL for the value every existing row gets (its default, cast to its type).
    pub value: String,
    /// The value is NULL in every row (no default).
    pub null: bool,
    /// False when the value cannot be written here (identity, serial):
    /// checks that read the column are skipped.
    pub known: bool,
}

/// The rows a check reads: a live table, as the bundle left it just before
/// the statement.
#[derive(Debug, Clone)]
pub(super) struct Target {
    /// The table as the statement names it (for the report).
    pub named: String,
    /// The live table's name as SQL; `None` when the bundle created,
    /// truncated or dropped it (no live rows to check).
    pub live: Option<String>,
    /// The name rows are qualified by in the statement (its relname).
    pub relname: String,
    /// Columns added earlier in the bundle.
    pub extras: Vec<Extra>,
    /// An earlier statement of the bundle that writes the table (or may
    /// write any table): the live rows may not be the ones the statement
    /// will see.
    pub written: Option<String>,
    /// Columns an earlier `ALTER COLUMN … TYPE` converted, with that
    /// statement: a check reading one of them may see other values.
    pub converted: Vec<(String, String)>,
}

impl Target {
    /// Marks the rows as possibly different when the check reads a
    /// converted column.
    pub fn note_converted(&mut self, columns: &[String]) {
        if self.written.is_none()
            && let Some((_, reason)) = self.converted.iter().find(|(c, _)| columns.contains(c))
        {
            self.written = Some(reason.clone());
        }
    }

    /// The rows as a FROM item called `alias`: the live table, or a derived
    /// table that adds the bundle's new columns with their defaults.
    pub fn from(&self, alias: &str) -> String {
        let live = self.live.as_deref().unwrap_or("(SELECT WHERE false)");
        if self.extras.is_empty() {
            if live == alias || live.ends_with(&format!(".{alias}")) {
                return live.to_owned();
            }
            return format!("{live} AS {alias}");
        }
        let extras: Vec<String> =
            self.extras.iter().map(|e| format!("{} AS {}", e.value, ident(&e.name))).collect();
        format!(
            "(SELECT {alias}.ctid AS ctid, {alias}.*, {} FROM {live} AS {alias}) AS {alias}",
            extras.join(", ")
        )
    }

    /// Keeps only the new columns a check reads: the plain table scans
    /// faster and shares its scan with more checks.
    pub fn keep_extras(&mut self, refs: &[String]) {
        self.extras.retain(|e| refs.contains(&e.name));
    }

    /// The alias row tests qualify by: the statement's own table name.
    pub fn alias(&self) -> String {
        ident(&self.relname)
    }

    /// The bundle's new column `name`, if it is one.
    pub fn extra(&self, name: &str) -> Option<&Extra> {
        self.extras.iter().rev().find(|e| e.name == name)
    }
}

/// How offending rows are named in `examples`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Keys {
    /// Primary key column names, or `["ctid"]`.
    pub names: Vec<String>,
}

impl Keys {
    /// Keys for a table without a primary key: the physical row address.
    pub fn ctid() -> Self {
        Self { names: vec!["ctid".into()] }
    }

    fn is_ctid(&self) -> bool {
        self.names.len() == 1 && self.names[0] == "ctid"
    }

    /// The key columns as SQL, qualified by `alias` when given.
    pub fn sql(&self, alias: Option<&str>) -> Vec<String> {
        let q = |n: &str| if self.is_ctid() { n.to_owned() } else { ident(n) };
        self.names.iter().map(|n| alias.map_or_else(|| q(n), |a| format!("{a}.{}", q(n)))).collect()
    }

    /// `k1::text, k2::text` for reading examples back.
    fn as_text(&self, alias: Option<&str>) -> String {
        self.sql(alias).iter().map(|k| format!("{k}::text")).collect::<Vec<_>>().join(", ")
    }

    /// One example as the report shows it: `id=3`, `(tenant, id)=(1, 7)`,
    /// `ctid=(0,3)`.
    pub fn render(&self, values: &[Option<String>]) -> String {
        let value = |v: &Option<String>| match v {
            None => "NULL".to_owned(),
            Some(v) if self.is_ctid() || v.parse::<f64>().is_ok() => v.clone(),
            Some(v) => literal(v),
        };
        if self.names.len() == 1 {
            format!("{}={}", self.names[0], values.first().map(value).unwrap_or_default())
        } else {
            format!(
                "({})=({})",
                self.names.join(", "),
                values.iter().map(value).collect::<Vec<_>>().join(", ")
            )
        }
    }
}

/// What makes the statement fail, over the target's rows.
#[derive(Debug, Clone)]
pub(super) enum Test {
    /// `SET NOT NULL`: rows with NULL.
    NotNull { column: String },
    /// `ADD COLUMN … NOT NULL` without a default: every row.
    AddColumnNotNull,
    /// A primary key's columns: rows with NULL in any of them.
    KeyNulls { columns: Vec<String> },
    /// `CHECK (expr)`: rows where it is false.
    Check { expr: String },
    /// A column converted to an enum: rows whose value is not a label.
    EnumValue { value: String, type_name: String, labels: Vec<String>, array: bool },
    /// Unique index or constraint: groups of rows with the same key.
    Unique { exprs: Vec<String>, predicate: Option<String>, nulls_not_distinct: bool },
    /// Foreign key: child rows without a parent. `parent` is `None` when the
    /// bundle creates the parent table (it has no rows).
    ForeignKey { columns: Vec<String>, parent: Option<(Target, Vec<String>)>, full: bool },
    /// `ALTER COLUMN … TYPE`: rows whose value does not convert.
    Cast(Cast),
}

/// One check: a statement, the rows it reads and what would make it fail.
#[derive(Debug, Clone)]
pub(super) struct Check {
    /// Position in the bundle (findings keep this order).
    pub seq: usize,
    /// The finding kind, e.g. `not-null`.
    pub kind: &'static str,
    pub migration: String,
    pub line: usize,
    pub target: Target,
    /// The columns (or index expressions) concerned.
    pub columns: Vec<String>,
    /// The statement in a few words, e.g. `SET NOT NULL on User.email`.
    pub what: String,
    pub test: Test,
}

impl Check {
    /// For tests that are a condition on one row: that condition (rows
    /// qualified by [`Target::alias`]).
    pub fn row_predicate(&self) -> Option<String> {
        match &self.test {
            Test::NotNull { column } => Some(format!("{} IS NULL", ident(column))),
            Test::AddColumnNotNull => Some("true".into()),
            Test::KeyNulls { columns } => {
                Some(columns.iter().map(|c| format!("{} IS NULL", ident(c))).collect::<Vec<_>>().join(" OR "))
            }
            Test::Check { expr } => Some(format!("NOT ({expr})")),
            Test::EnumValue { value, labels, array, .. } => {
                let labels: Vec<String> = labels.iter().map(|l| literal(l)).collect();
                Some(match (array, labels.is_empty()) {
                    (false, false) => format!("({value})::text NOT IN ({})", labels.join(", ")),
                    (false, true) => format!("({value}) IS NOT NULL"),
                    (true, _) => format!(
                        "NOT (array_remove(({value})::text[], NULL) <@ ARRAY[{}]::text[])",
                        labels.join(", ")
                    ),
                })
            }
            Test::Unique { .. } | Test::ForeignKey { .. } | Test::Cast(_) => None,
        }
    }

    /// What a merged scan of the target's rows tests for this check, as
    /// `(join, test)`: a row test, or a foreign key's (its parent's
    /// distinct keys joined as `runway_parent_{n}`: a child row without a
    /// match is an orphan). Such checks on the same rows share one scan,
    /// which the server can run in parallel (a subquery per row could not
    /// be). `None` for unique and cast checks.
    pub fn scan_test(&self, n: usize) -> Option<(Option<String>, String)> {
        let Test::ForeignKey { columns, parent, full } = &self.test else {
            return self.row_predicate().map(|test| (None, test));
        };
        let alias = self.target.alias();
        let cols: Vec<String> = columns.iter().map(|c| format!("{alias}.{}", ident(c))).collect();
        let Some((parent, keys)) = parent else {
            return Some((None, self.orphan_condition(&alias)));
        };
        let joined = format!("runway_parent_{n}");
        let names: Vec<String> = (1..=keys.len()).map(|i| format!("runway_key_{i}")).collect();
        let select: Vec<String> =
            keys.iter().zip(&names).map(|(k, name)| format!("p.{} AS {name}", ident(k))).collect();
        let on: Vec<String> =
            names.iter().zip(&cols).map(|(name, c)| format!("{joined}.{name} = {c}")).collect();
        // DISTINCT: a parent whose keys are not unique yet must not repeat
        // child rows (the other tests of the scan count them).
        let join = format!(
            "LEFT JOIN (SELECT DISTINCT {} FROM {}) AS {joined} ON {}",
            select.join(", "),
            parent.from("p"),
            on.join(" AND ")
        );
        let missing = format!("{joined}.{} IS NULL", names[0]);
        let all_set = cols.iter().map(|c| format!("{c} IS NOT NULL")).collect::<Vec<_>>().join(" AND ");
        let test = if *full {
            let any_set = cols.iter().map(|c| format!("{c} IS NOT NULL")).collect::<Vec<_>>().join(" OR ");
            let any_null = cols.iter().map(|c| format!("{c} IS NULL")).collect::<Vec<_>>().join(" OR ");
            format!("({any_set}) AND ({any_null} OR {missing})")
        } else {
            format!("{all_set} AND {missing}")
        };
        Some((Some(join), test))
    }

    /// The FROM item row tests, unique and cast checks read.
    pub fn from(&self) -> String {
        self.target.from(&self.target.alias())
    }

    /// The count query of a test that is not a row test or a cast.
    pub fn count_sql(&self) -> Option<String> {
        match &self.test {
            Test::Unique { exprs, .. } => Some(format!(
                "SELECT count(*) FROM (SELECT 1 FROM {}{} GROUP BY {} HAVING count(*) > 1) AS runway_duplicates",
                self.from(),
                self.unique_filter(),
                exprs.join(", ")
            )),
            Test::ForeignKey { .. } => Some(format!(
                "SELECT count(*) FROM {} WHERE {}",
                self.target.from("c"),
                self.orphan_condition("c")
            )),
            _ => None,
        }
    }

    /// ` WHERE …` over the rows a unique index covers: its predicate, and
    /// no NULL in the key unless NULLs are not distinct.
    fn unique_filter(&self) -> String {
        let Test::Unique { exprs, predicate, nulls_not_distinct } = &self.test else { return String::new() };
        let mut parts: Vec<String> = predicate.iter().map(|p| format!("({p})")).collect();
        if !nulls_not_distinct {
            parts.extend(exprs.iter().map(|e| format!("{e} IS NOT NULL")));
        }
        if parts.is_empty() { String::new() } else { format!(" WHERE {}", parts.join(" AND ")) }
    }

    /// Child rows (alias `child`) that break a foreign key.
    fn orphan_condition(&self, child: &str) -> String {
        let Test::ForeignKey { columns, parent, full } = &self.test else { return "false".into() };
        let cols: Vec<String> = columns.iter().map(|c| format!("{child}.{}", ident(c))).collect();
        let all_set = cols.iter().map(|c| format!("{c} IS NOT NULL")).collect::<Vec<_>>().join(" AND ");
        let any_set = cols.iter().map(|c| format!("{c} IS NOT NULL")).collect::<Vec<_>>().join(" OR ");
        let any_null = cols.iter().map(|c| format!("{c} IS NULL")).collect::<Vec<_>>().join(" OR ");
        let missing = parent.as_ref().map(|(parent, keys)| {
            let join: Vec<String> =
                keys.iter().zip(&cols).map(|(k, c)| format!("p.{} = {c}", ident(k))).collect();
            format!("NOT EXISTS (SELECT 1 FROM {} WHERE {})", parent.from("p"), join.join(" AND "))
        });
        match (full, missing) {
            (false, Some(missing)) => format!("{all_set} AND {missing}"),
            (false, None) => all_set,
            (true, Some(missing)) => format!("({any_set}) AND ({any_null} OR {missing})"),
            (true, None) => format!("({any_set})"),
        }
    }

    /// A query listing the first [`EXAMPLES`] offending rows' keys as text,
    /// in key order.
    /// For casts, `call` is the temporary function's call when the slow
    /// path ran.
    pub fn examples_sql(&self, keys: &Keys, call: Option<&str>) -> String {
        let order = format!("ORDER BY {} LIMIT {EXAMPLES}", keys.sql(None).join(", "));
        match &self.test {
            Test::Unique { exprs, .. } => {
                let inner = keys.sql(None).join(", ");
                format!(
                    "SELECT {} FROM (SELECT {inner}, count(*) OVER (PARTITION BY {}) AS runway_rows FROM {}{}) AS runway_duplicates \
                     WHERE runway_rows > 1 {order}",
                    keys.as_text(None),
                    exprs.join(", "),
                    self.from(),
                    self.unique_filter()
                )
            }
            Test::ForeignKey { .. } => format!(
                "SELECT {} FROM {} WHERE {} ORDER BY {} LIMIT {EXAMPLES}",
                keys.as_text(Some("c")),
                self.target.from("c"),
                self.orphan_condition("c"),
                keys.sql(Some("c")).join(", ")
            ),
            Test::Cast(cast) => {
                let condition = match call {
                    Some(call) => format!("NOT {call}"),
                    None => cast.fast_predicate(),
                };
                format!("SELECT {} FROM {} WHERE {condition} {order}", keys.as_text(None), self.from())
            }
            _ => format!(
                "SELECT {} FROM {} WHERE {} {order}",
                keys.as_text(None),
                self.from(),
                self.row_predicate().unwrap_or_else(|| "false".into())
            ),
        }
    }

    /// The query printed for the operator: every offending row, with its
    /// key and the checked columns. For a cast that needed the slow path,
    /// `function` is the temporary function (created first, in the same
    /// psql session).
    pub fn operator_query(&self, keys: &Keys, function: Option<(&str, &str)>) -> String {
        let mut select = keys.sql(None);
        match &self.test {
            Test::Unique { exprs, .. } => {
                let key =
                    if select.len() == 1 { select[0].clone() } else { format!("ROW({})", select.join(", ")) };
                format!(
                    "SELECT {}, count(*) AS rows, array_agg({key}) AS keys FROM {}{} GROUP BY {} HAVING count(*) > 1",
                    exprs.join(", "),
                    self.from(),
                    self.unique_filter(),
                    exprs.join(", ")
                )
            }
            Test::ForeignKey { columns, .. } => {
                let mut select = keys.sql(Some("c"));
                for c in columns {
                    push_unique(&mut select, format!("c.{}", ident(c)));
                }
                format!(
                    "SELECT {} FROM {} WHERE {}",
                    select.join(", "),
                    self.target.from("c"),
                    self.orphan_condition("c")
                )
            }
            Test::Cast(cast) => {
                push_unique(&mut select, ident(&cast.column));
                match function {
                    Some((create, call)) => {
                        format!(
                            "{create};\nSELECT {} FROM {} WHERE NOT {call}",
                            select.join(", "),
                            self.from()
                        )
                    }
                    None => format!(
                        "SELECT {} FROM {} WHERE {}",
                        select.join(", "),
                        self.from(),
                        cast.fast_predicate()
                    ),
                }
            }
            Test::AddColumnNotNull => format!("SELECT {} FROM {}", select.join(", "), self.from()),
            _ => {
                for c in &self.columns {
                    push_unique(&mut select, ident(c));
                }
                format!(
                    "SELECT {} FROM {} WHERE {}",
                    select.join(", "),
                    self.from(),
                    self.row_predicate().unwrap_or_else(|| "false".into())
                )
            }
        }
    }

    /// What is wrong with `count` offending rows (groups for unique), in words.
    pub fn problem(&self, count: i64) -> String {
        match &self.test {
            Test::NotNull { .. } => format!("{count} row(s) have NULL"),
            Test::AddColumnNotNull => format!("the table has {count} row(s), which would hold NULL"),
            Test::KeyNulls { columns } => format!("{count} row(s) have NULL in {}", columns.join(", ")),
            Test::Check { .. } => format!("{count} row(s) violate it"),
            Test::EnumValue { type_name, labels, .. } => format!(
                "{count} row(s) hold a value that is not a label of {type_name} ({})",
                labels.iter().map(|l| literal(l)).collect::<Vec<_>>().join(", ")
            ),
            Test::Unique { .. } => format!("{count} group(s) of rows share the same key"),
            Test::ForeignKey { parent: Some((parent, _)), .. } => {
                format!("{count} row(s) have no matching row in {}", parent.named)
            }
            Test::ForeignKey { parent: None, .. } => {
                format!("{count} row(s) reference a table this bundle creates (empty)")
            }
            Test::Cast(cast) => format!("{count} row(s) do not convert to {}", cast.new_type),
        }
    }
}

fn push_unique(list: &mut Vec<String>, item: String) {
    if !list.contains(&item) {
        list.push(item);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(extras: Vec<Extra>) -> Target {
        Target {
            named: "User".into(),
            live: Some("\"User\"".into()),
            relname: "User".into(),
            extras,
            written: None,
            converted: Vec::new(),
        }
    }

    fn check(test: Test, columns: &[&str]) -> Check {
        Check {
            seq: 0,
            kind: "not-null",
            migration: "m".into(),
            line: 1,
            target: target(Vec::new()),
            columns: columns.iter().map(|c| c.to_string()).collect(),
            what: "w".into(),
            test,
        }
    }

    #[test]
    fn renders_keys_without_other_values() {
        let keys = Keys { names: vec!["id".into()] };
        assert_eq!(keys.render(&[Some("3".into())]), "id=3");
        assert_eq!(keys.render(&[Some("ab'c".into())]), "id='ab''c'");
        let keys = Keys { names: vec!["tenant".into(), "id".into()] };
        assert_eq!(keys.render(&[Some("1".into()), Some("7".into())]), "(tenant, id)=(1, 7)");
        assert_eq!(Keys::ctid().render(&[Some("(0,3)".into())]), "ctid=(0,3)");
    }

    #[test]
    fn operator_queries_list_keys_and_checked_columns() {
        let keys = Keys { names: vec!["id".into()] };
        let c = check(Test::NotNull { column: "email".into() }, &["email"]);
        assert_eq!(
            c.operator_query(&keys, None),
            "SELECT \"id\", \"email\" FROM \"User\" WHERE \"email\" IS NULL"
        );
        assert_eq!(
            c.examples_sql(&keys, None),
            "SELECT \"id\"::text FROM \"User\" WHERE \"email\" IS NULL ORDER BY \"id\" LIMIT 5"
        );
    }

    #[test]
    fn derived_tables_add_the_bundles_columns() {
        let t =
            target(vec![Extra { name: "slug".into(), value: "NULL::text".into(), null: true, known: true }]);
        assert_eq!(
            t.from("\"User\""),
            "(SELECT \"User\".ctid AS ctid, \"User\".*, NULL::text AS \"slug\" FROM \"User\" AS \"User\") AS \"User\""
        );
        assert_eq!(target(Vec::new()).from("c"), "\"User\" AS c");
    }

    #[test]
    fn foreign_keys_follow_match_simple_and_full() {
        let parent = (target(Vec::new()), vec!["id".to_string()]);
        let simple = check(
            Test::ForeignKey { columns: vec!["a".into()], parent: Some(parent.clone()), full: false },
            &["a"],
        );
        assert_eq!(
            simple.count_sql().unwrap(),
            "SELECT count(*) FROM \"User\" AS c WHERE c.\"a\" IS NOT NULL AND NOT EXISTS (SELECT 1 FROM \"User\" AS p WHERE p.\"id\" = c.\"a\")"
        );
        let full = check(
            Test::ForeignKey { columns: vec!["a".into(), "b".into()], parent: None, full: true },
            &["a", "b"],
        );
        assert_eq!(
            full.count_sql().unwrap(),
            "SELECT count(*) FROM \"User\" AS c WHERE (c.\"a\" IS NOT NULL OR c.\"b\" IS NOT NULL)"
        );
    }
}
