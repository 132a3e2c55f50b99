//! `ALTER COLUMN … TYPE` checks: the conversion PostgreSQL will do, tried
//! on the live rows. A fast path converts every row with an explicit cast in
//! one scan; when a row raises a data error, a temporary PL/pgSQL function
//! assigns each row's value to a variable of the new type inside an
//! exception block (the ALTER's own assignment rules, lengths included).

use super::sql::ident;

/// A length that an assignment enforces where an explicit cast truncates
/// silently (`'abcdef'::varchar(3)` is `abc`; `ALTER … TYPE varchar(3)` fails).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Length {
    /// `varchar(n)`, `char(n)`: at most n characters once trailing spaces go.
    Chars(i64),
    /// `bit(n)`: exactly n bits.
    BitsExactly(i64),
    /// `varbit(n)`: at most n bits.
    BitsAtMost(i64),
}

/// `ALTER COLUMN … TYPE` over live rows.
#[derive(Debug, Clone)]
pub(super) struct Cast {
    pub column: String,
    /// The USING expression; `None` converts the column itself.
    pub using: Option<String>,
    /// The new type as SQL.
    pub new_type: String,
    pub length: Option<Length>,
    /// The column's live type (`format_type`).
    pub old_type: String,
    /// The column is NOT NULL: a value converted to NULL fails too.
    pub not_null: bool,
}

/// `int8` as `format_type` names it (`bigint`); other names as they are.
fn canonical(type_sql: &str) -> String {
    let lower = type_sql.trim().trim_matches('"').to_lowercase();
    let name = match lower.as_str() {
        "int2" => "smallint",
        "int" | "int4" => "integer",
        "int8" => "bigint",
        "float4" => "real",
        "float8" | "float" => "double precision",
        "varchar" => "character varying",
        "timestamptz" => "timestamp with time zone",
        "pg_catalog.int8" => "bigint",
        "pg_catalog.int4" => "integer",
        "pg_catalog.int2" => "smallint",
        other => other,
    };
    name.to_owned()
}

impl Cast {
    /// A widening conversion no value can fail (`integer` to `bigint`,
    /// `varchar(n)` to `text`, …): nothing to read. Only without USING and
    /// without a length to enforce.
    pub fn cannot_fail(&self) -> bool {
        if self.using.is_some() || self.length.is_some() {
            return false;
        }
        let (old, new) = (canonical(&self.old_type), canonical(&self.new_type));
        let text_like =
            |t: &str| t == "text" || t == "character varying" || t.starts_with("character varying(");
        old == new
            || matches!(
                (old.as_str(), new.as_str()),
                ("smallint", "integer" | "bigint" | "numeric" | "real" | "double precision")
                    | ("integer", "bigint" | "numeric" | "real" | "double precision")
                    | ("bigint", "numeric" | "real" | "double precision")
                    | ("real", "double precision")
                    | ("timestamp without time zone", "timestamp with time zone")
            )
            || (text_like(&old) || old.starts_with("character("))
                && (new == "text" || new == "character varying")
    }

    /// The offending-rows condition over the rows when the
    /// whole-table conversion succeeded (lengths and NULLs only).
    pub fn fast_predicate(&self) -> String {
        let value = self.value();
        let mut parts = Vec::new();
        if let Some(length) = self.length {
            parts.push(self.length_fails(length, &value));
        }
        if self.not_null {
            parts.push(format!("({value})::{} IS NULL", self.new_type));
        }
        if parts.is_empty() { "false".into() } else { parts.join(" OR ") }
    }

    /// The value converted: the USING expression or the column.
    pub fn value(&self) -> String {
        self.using.clone().unwrap_or_else(|| ident(&self.column))
    }

    /// Rows whose converted value breaks `length` under assignment rules.
    pub fn length_fails(&self, length: Length, value: &str) -> String {
        match length {
            Length::Chars(n) => format!("char_length(rtrim(({value})::text, ' ')) > {n}"),
            Length::BitsExactly(n) => format!("length(({value})::varbit) <> {n}"),
            Length::BitsAtMost(n) => format!("length(({value})::varbit) > {n}"),
        }
    }

    /// One scan converting every row with an explicit cast: `[rows,
    /// converted to non-NULL, too long]`. It errors when any row does not
    /// convert (then the slow path counts them).
    pub fn fast_sql(&self, from: &str) -> String {
        let value = self.value();
        let length = match self.length {
            Some(length) => format!("count(*) FILTER (WHERE {})", self.length_fails(length, &value)),
            None => "0::bigint".into(),
        };
        format!("SELECT count(*), count(({value})::{}), {length} FROM {from}", self.new_type)
    }

    /// Failing rows from [`Self::fast_sql`]'s answer.
    pub fn fast_failures(&self, rows: i64, converted: i64, too_long: i64) -> i64 {
        let nulls = if self.not_null { rows - converted } else { 0 };
        nulls + too_long
    }

    /// `CREATE FUNCTION name(…)`: true when a row converts by the rules the
    /// ALTER uses (an assignment to a variable of the new type, length and
    /// NOT NULL included), false when the conversion raises a data error.
    /// `live`/`alias` name the table for a USING expression's row.
    pub fn function_sql(&self, name: &str, live: &str, alias: &str) -> String {
        let (param, assign) = match &self.using {
            None => (format!("runway_predict_value {}", self.old_type), "runway_predict_value".to_owned()),
            Some(using) => (
                format!("runway_predict_row {live}"),
                format!("(SELECT ({using}) FROM (SELECT (runway_predict_row).*) AS {alias})"),
            ),
        };
        let result = if self.not_null { "runway_predict_new IS NOT NULL" } else { "true" };
        format!(
            "CREATE FUNCTION {name}({param}) RETURNS boolean LANGUAGE plpgsql AS $runway_predict$\n\
             DECLARE runway_predict_new {new};\n\
             BEGIN\n  runway_predict_new := {assign};\n  RETURN {result};\n\
             EXCEPTION WHEN data_exception OR integrity_constraint_violation THEN\n  RETURN false;\n\
             END\n$runway_predict$",
            new = self.new_type
        )
    }

    /// The call of [`Self::function_sql`]'s function for the row of `alias`.
    pub fn call(&self, name: &str, alias: &str) -> String {
        match &self.using {
            None => format!("{name}({})", ident(&self.column)),
            Some(_) => format!("{name}({alias})"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_cast_failures_count_nulls_only_for_not_null_columns() {
        let mut cast = Cast {
            column: "v".into(),
            using: None,
            new_type: "varchar(3)".into(),
            length: Some(Length::Chars(3)),
            old_type: "text".into(),
            not_null: false,
        };
        assert_eq!(cast.fast_failures(10, 8, 1), 1);
        cast.not_null = true;
        assert_eq!(cast.fast_failures(10, 8, 1), 3);
    }
}
