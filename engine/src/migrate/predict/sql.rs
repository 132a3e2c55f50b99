//! SQL text for the checks, built from the migration's parse tree:
//! expressions and type names deparsed by PostgreSQL's own deparser,
//! identifiers and literals quoted, type names inside casts rewritten.

use pg_query::NodeEnum;
use pg_query::protobuf::{self, KeywordKind, Node, Token};

pub(super) use crate::migrate::connect::quote_ident as ident;

/// A string literal: `'it''s'` (standard-conforming strings, the default
/// since PostgreSQL 9.1).
pub(super) fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// Deparses `SELECT <template>` after `edit` put a node into it, and
/// returns the text after `prefix`.
fn deparse_in(
    template: &str,
    prefix: &str,
    edit: impl FnOnce(&mut protobuf::ResTarget),
) -> Result<String, String> {
    let mut parsed = pg_query::parse(template).map_err(|e| e.to_string())?;
    let Some(NodeEnum::SelectStmt(select)) =
        parsed.protobuf.stmts.first_mut().and_then(|s| s.stmt.as_mut()).and_then(|s| s.node.as_mut())
    else {
        return Err(format!("cannot deparse: {template} is not a SELECT"));
    };
    let Some(NodeEnum::ResTarget(target)) = select.target_list.first_mut().and_then(|t| t.node.as_mut())
    else {
        return Err(format!("cannot deparse: {template} has no target"));
    };
    edit(target);
    let text = parsed.protobuf.deparse().map_err(|e| e.to_string())?;
    text.strip_prefix(prefix).map(str::to_owned).ok_or_else(|| format!("unexpected deparser output: {text}"))
}

/// An expression as SQL text (parenthesised by the caller where needed).
pub(super) fn expr(node: &Node) -> Result<String, String> {
    deparse_in("SELECT 1", "SELECT ", |target| target.val = Some(Box::new(node.clone())))
}

/// A type name as SQL text, e.g. `varchar(100)`, `"Role"[]`.
pub(super) fn type_name(tn: &protobuf::TypeName) -> Result<String, String> {
    deparse_in("SELECT NULL::int", "SELECT NULL::", |target| {
        if let Some(NodeEnum::TypeCast(cast)) = target.val.as_mut().and_then(|v| v.node.as_mut()) {
            cast.type_name = Some(tn.clone());
        }
    })
}

/// The last part of a type's name as written (`"Role"` → `Role`,
/// `pg_catalog.varchar` → `varchar`).
pub(super) fn type_base(tn: &protobuf::TypeName) -> String {
    tn.names.last().map(name_of).unwrap_or_default()
}

/// A `String` node's text (names in lists), `?` otherwise.
pub(super) fn name_of(node: &Node) -> String {
    match &node.node {
        Some(NodeEnum::String(s)) => s.sval.clone(),
        _ => "?".into(),
    }
}

/// The integer type modifiers of a type name, e.g. `[100]` for `varchar(100)`.
pub(super) fn typmods(tn: &protobuf::TypeName) -> Vec<i64> {
    tn.typmods
        .iter()
        .filter_map(|m| match &m.node {
            Some(NodeEnum::AConst(c)) => match &c.val {
                Some(protobuf::a_const::Val::Ival(i)) => Some(i64::from(i.ival)),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

/// Whether `node` is the constant `NULL`.
pub(super) fn is_null_const(node: &Node) -> bool {
    matches!(&node.node, Some(NodeEnum::AConst(c)) if c.isnull)
}

/// Column names referenced anywhere inside `node` (the last part of each
/// reference), in order of first appearance.
pub(super) fn column_refs(node: &Node) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for name in crate::migrate::parse::names_inside(node, "ColumnRef", "fields") {
        if !out.contains(&name) {
            out.push(name);
        }
    }
    out
}

/// An identifier token's name: quoted as written, unquoted folded to lower case.
fn token_name(text: &str) -> String {
    match text.strip_prefix('"').and_then(|t| t.strip_suffix('"')) {
        Some(quoted) => quoted.replace("\"\"", "\""),
        None => text.to_lowercase(),
    }
}

/// Rewrites the type names of casts (`x::T` and `CAST(x AS T)`) in `sql`:
/// where `replace` returns text for a type's (last) name, the whole
/// (possibly schema-qualified) name is replaced by it. Used to point casts
/// at a bundle's new enum as `text`, or at a renamed type's live name.
pub(super) fn rewrite_casts(sql: &str, replace: &dyn Fn(&str) -> Option<String>) -> String {
    let Ok(scan) = pg_query::scan(sql) else { return sql.to_owned() };
    let tokens = &scan.tokens;
    let is_name = |t: &protobuf::ScanToken| {
        t.token == Token::Ident as i32 || t.keyword_kind != KeywordKind::NoKeyword as i32
    };
    let span = |t: &protobuf::ScanToken| (t.start.max(0) as usize, t.end.max(0) as usize);
    let mut out = String::with_capacity(sql.len());
    let mut copied = 0usize;
    let mut i = 0usize;
    while i < tokens.len() {
        let starts_type = tokens[i].token == Token::Typecast as i32 || tokens[i].token == Token::As as i32;
        i += 1;
        if !starts_type || i >= tokens.len() || !is_name(&tokens[i]) {
            continue;
        }
        // name [. name]*
        let first = i;
        let mut last = i;
        while last + 2 < tokens.len()
            && tokens[last + 1].token == Token::Ascii46 as i32
            && is_name(&tokens[last + 2])
        {
            last += 2;
        }
        let (start, _) = span(&tokens[first]);
        let (_, end) = span(&tokens[last]);
        let (name_start, name_end) = span(&tokens[last]);
        if let Some(with) = sql.get(name_start..name_end).map(token_name).and_then(|n| replace(&n))
            && start >= copied
        {
            out.push_str(&sql[copied..start]);
            out.push_str(&with);
            copied = end;
        }
        i = last + 1;
    }
    out.push_str(&sql[copied..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn first_expr(sql: &str) -> Node {
        let parsed = pg_query::parse(sql).expect("parses");
        let Some(NodeEnum::SelectStmt(s)) =
            parsed.protobuf.stmts[0].stmt.as_ref().and_then(|s| s.node.clone())
        else {
            panic!("not a select")
        };
        let Some(NodeEnum::ResTarget(t)) = s.target_list[0].node.clone() else { panic!("no target") };
        *t.val.expect("value")
    }

    #[test]
    fn deparses_expressions_and_types() {
        assert_eq!(expr(&first_expr("SELECT lower(\"Email\") || 'x'")).unwrap(), "lower(\"Email\") || 'x'");
        assert_eq!(
            expr(&first_expr("SELECT total > 0 AND code IS NOT NULL")).unwrap(),
            "total > 0 AND code IS NOT NULL"
        );
        let Some(NodeEnum::TypeCast(cast)) = first_expr("SELECT x::VARCHAR(100)").node else { panic!() };
        let tn = cast.type_name.unwrap();
        assert_eq!(type_name(&tn).unwrap(), "varchar(100)");
        assert_eq!(type_base(&tn), "varchar");
        assert_eq!(typmods(&tn), vec![100]);
        let Some(NodeEnum::TypeCast(cast)) = first_expr("SELECT x::\"Role\"[]").node else { panic!() };
        assert_eq!(type_name(&cast.type_name.unwrap()).unwrap(), "\"Role\"[]");
    }

    #[test]
    fn collects_column_references() {
        assert_eq!(column_refs(&first_expr("SELECT a + t.b > coalesce(a, c)")), vec!["a", "b", "c"]);
    }

    #[test]
    fn rewrites_casts_to_a_type() {
        let to_text = |n: &str| (n == "Role").then(|| "text".to_owned());
        assert_eq!(rewrite_casts("(\"role\"::text)::\"Role\"", &to_text), "(\"role\"::text)::text");
        assert_eq!(rewrite_casts("CAST(x AS public.\"Role\")", &to_text), "CAST(x AS text)");
        assert_eq!(rewrite_casts("\"Role\" || x::role", &to_text), "\"Role\" || x::role");
        assert_eq!(rewrite_casts("x::\"Role\"[]", &to_text), "x::text[]");
    }

    #[test]
    fn quotes() {
        assert_eq!(literal("it's"), "'it''s'");
        assert_eq!(ident("a\"b"), "\"a\"\"b\"");
    }
}
