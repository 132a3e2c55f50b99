//! The lint rules: one parsed statement in, findings out.
//!
//! Every rule reads PostgreSQL's own parse tree (never the SQL text), so a
//! `DROP TABLE` inside a string or a function body is not reported, and a
//! lower-case, quoted or oddly spaced statement is.

use pg_query::NodeEnum;
use pg_query::protobuf::{self, AlterTableType, ConstrType, ObjectType};
use serde::Serialize;

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth knowing; harmless on its own.
    Info,
    /// Blocks traffic or breaks running code on a large or busy table.
    Warning,
    /// Destroys data, or rewrites / blocks a table for as long as it takes.
    Danger,
}

/// PostgreSQL table-level lock modes, as named in the docs.
pub mod locks {
    pub const ACCESS_EXCLUSIVE: &str = "ACCESS EXCLUSIVE";
    pub const SHARE: &str = "SHARE";
    pub const SHARE_ROW_EXCLUSIVE: &str = "SHARE ROW EXCLUSIVE";
    pub const SHARE_UPDATE_EXCLUSIVE: &str = "SHARE UPDATE EXCLUSIVE";
    pub const ROW_EXCLUSIVE: &str = "ROW EXCLUSIVE";
    pub const DATABASE: &str = "exclusive use of the database";
}

/// What the statement makes the server do to the table, for the downtime estimate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Work {
    /// Catalog change only; done as soon as the lock is granted.
    Instant,
    /// Reads the whole table while holding the lock (validation).
    Scan,
    /// Builds an index over the table.
    IndexBuild,
    /// Writes a new copy of the table and its indexes.
    Rewrite,
    /// Touches every row (DML without WHERE).
    EveryRow,
}

/// One rule hit, before file and line are attached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Hit {
    /// Stable rule name, e.g. `drop-column`.
    pub rule: &'static str,
    pub severity: Severity,
    /// The lock the statement takes on `table`.
    pub lock: &'static str,
    /// The table (or schema / database) concerned, as written.
    pub table: Option<String>,
    pub work: Work,
    /// One line for a person: what happens and what to do instead.
    pub message: String,
}

fn hit(
    rule: &'static str,
    severity: Severity,
    lock: &'static str,
    table: Option<String>,
    work: Work,
    message: String,
) -> Hit {
    Hit { rule, severity, lock, table, work, message }
}

/// `schema.name` or `name`.
pub fn range_var_name(rv: &protobuf::RangeVar) -> String {
    if rv.schemaname.is_empty() { rv.relname.clone() } else { format!("{}.{}", rv.schemaname, rv.relname) }
}

/// A dropped object's name as written: `schema.name` or `name`.
pub fn object_name(node: &pg_query::Node) -> String {
    match &node.node {
        Some(NodeEnum::List(l)) => l.items.iter().map(object_name).collect::<Vec<_>>().join("."),
        Some(NodeEnum::String(s)) => s.sval.clone(),
        Some(NodeEnum::RangeVar(rv)) => range_var_name(rv),
        _ => "?".into(),
    }
}

/// Functions whose value differs per row: a column default calling one
/// makes `ADD COLUMN` rewrite the table.
const VOLATILE: &[&str] = &[
    "random",
    "gen_random_uuid",
    "uuid_generate_v1",
    "uuid_generate_v1mc",
    "uuid_generate_v4",
    "clock_timestamp",
    "timeofday",
    "nextval",
    "txid_current",
    "setseed",
];
/// Functions known to be stable or immutable (no rewrite).
const NOT_VOLATILE: &[&str] = &[
    "now",
    "current_timestamp",
    "transaction_timestamp",
    "statement_timestamp",
    "current_date",
    "lower",
    "upper",
];

/// Function names called anywhere inside `node`.
fn called_functions(node: &pg_query::Node) -> Vec<String> {
    fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(map) => {
                if let Some(names) =
                    map.get("FuncCall").and_then(|c| c.get("funcname")).and_then(|n| n.as_array())
                    && let Some(last) = names.iter().rev().find_map(|n| n.pointer("/node/String/sval"))
                {
                    out.push(last.as_str().unwrap_or_default().to_lowercase());
                }
                map.values().for_each(|v| walk(v, out));
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    if let Ok(value) = serde_json::to_value(node) {
        walk(&value, &mut out);
    }
    out
}

/// Findings for one statement. `is_new` says whether a table was created
/// earlier in the same migration set (empty, nobody uses it yet): locking
/// and rewrite rules stay quiet for those.
pub fn check(node: &NodeEnum, is_new: &dyn Fn(&str) -> bool) -> Vec<Hit> {
    use Severity::*;
    use locks::*;
    let mut out = Vec::new();
    match node {
        NodeEnum::DropStmt(s) => {
            let kind = ObjectType::try_from(s.remove_type).unwrap_or(ObjectType::Undefined);
            for object in &s.objects {
                let name = object_name(object);
                match kind {
                    ObjectType::ObjectTable => out.push(hit("drop-table", Danger, ACCESS_EXCLUSIVE, Some(name.clone()), Work::Instant,
                        format!("DROP TABLE {name} deletes the table and its data; running app versions that use it will fail"))),
                    ObjectType::ObjectSchema => out.push(hit("drop-schema", Danger, ACCESS_EXCLUSIVE, Some(name.clone()), Work::Instant,
                        format!("DROP SCHEMA {name} deletes the schema{}", if s.behavior == protobuf::DropBehavior::DropCascade as i32 { " and everything in it (CASCADE)" } else { "" }))),
                    ObjectType::ObjectIndex if !s.concurrent => out.push(hit("drop-index-non-concurrent", Warning, ACCESS_EXCLUSIVE, Some(name.clone()), Work::Instant,
                        format!("DROP INDEX {name} locks its table against reads and writes while it waits; use DROP INDEX CONCURRENTLY"))),
                    _ => {}
                }
            }
        }
        NodeEnum::DropdbStmt(s) => out.push(hit(
            "drop-database",
            Danger,
            DATABASE,
            Some(s.dbname.clone()),
            Work::Instant,
            format!("DROP DATABASE {} deletes the whole database", s.dbname),
        )),
        NodeEnum::TruncateStmt(s) => {
            for rel in &s.relations {
                let name = object_name(rel);
                out.push(hit(
                    "truncate",
                    Danger,
                    ACCESS_EXCLUSIVE,
                    Some(name.clone()),
                    Work::Instant,
                    format!("TRUNCATE {name} deletes every row"),
                ));
            }
        }
        NodeEnum::DeleteStmt(s) if s.where_clause.is_none() => {
            let name = s.relation.as_ref().map(range_var_name);
            out.push(hit(
                "delete-without-where",
                Danger,
                ROW_EXCLUSIVE,
                name.clone(),
                Work::EveryRow,
                format!("DELETE FROM {} without WHERE deletes every row", name.unwrap_or_default()),
            ));
        }
        NodeEnum::UpdateStmt(s) if s.where_clause.is_none() => {
            let name = s.relation.as_ref().map(range_var_name);
            let new = name.as_deref().is_some_and(is_new);
            if !new {
                out.push(hit("update-without-where", Danger, ROW_EXCLUSIVE, name.clone(), Work::EveryRow,
                    format!("UPDATE {} without WHERE rewrites every row and holds row locks on all of them until commit; batch it", name.unwrap_or_default())));
            }
        }
        NodeEnum::IndexStmt(s) if !s.concurrent => {
            let name = s.relation.as_ref().map(range_var_name).unwrap_or_default();
            if !is_new(&name) {
                out.push(hit("create-index-non-concurrent", Warning, SHARE, Some(name.clone()), Work::IndexBuild,
                    format!("CREATE INDEX on {name} blocks writes to the table while the index builds; use CREATE INDEX CONCURRENTLY (in a migration of its own)")));
            }
        }
        NodeEnum::RenameStmt(s) => {
            let table = s.relation.as_ref().map(range_var_name);
            match ObjectType::try_from(s.rename_type) {
                Ok(ObjectType::ObjectTable) => out.push(hit("rename-table", Warning, ACCESS_EXCLUSIVE, table.clone(), Work::Instant,
                    format!("renaming table {} to {} breaks app code still using the old name; add the new name first (e.g. a view), deploy the app, then rename", table.unwrap_or_default(), s.newname))),
                Ok(ObjectType::ObjectColumn) if !table.as_deref().is_some_and(is_new) => out.push(hit("rename-column", Warning, ACCESS_EXCLUSIVE, table.clone(), Work::Instant,
                    format!("renaming column {}.{} to {} breaks app code still using the old name; expand (add + backfill), deploy the app, then contract", table.unwrap_or_default(), s.subname, s.newname))),
                _ => {}
            }
        }
        NodeEnum::AlterTableStmt(s) => {
            let table = s.relation.as_ref().map(range_var_name).unwrap_or_default();
            let new = is_new(&table);
            for cmd in &s.cmds {
                let Some(NodeEnum::AlterTableCmd(cmd)) = &cmd.node else { continue };
                alter_table_cmd(&table, new, cmd, &mut out);
            }
        }
        NodeEnum::VacuumStmt(s)
            if s.options
                .iter()
                .any(|o| matches!(&o.node, Some(NodeEnum::DefElem(d)) if d.defname == "full")) =>
        {
            for rel in &s.rels {
                let name = match &rel.node {
                    Some(NodeEnum::VacuumRelation(v)) => {
                        v.relation.as_ref().map(range_var_name).unwrap_or_default()
                    }
                    _ => String::new(),
                };
                out.push(hit(
                    "table-rewrite",
                    Danger,
                    ACCESS_EXCLUSIVE,
                    Some(name.clone()),
                    Work::Rewrite,
                    format!("VACUUM FULL {name} rewrites the table under an ACCESS EXCLUSIVE lock"),
                ));
            }
        }
        NodeEnum::ClusterStmt(s) => {
            let name = s.relation.as_ref().map(range_var_name);
            out.push(hit(
                "table-rewrite",
                Danger,
                ACCESS_EXCLUSIVE,
                name.clone(),
                Work::Rewrite,
                format!(
                    "CLUSTER {} rewrites the table under an ACCESS EXCLUSIVE lock",
                    name.unwrap_or_default()
                ),
            ));
        }
        _ => {}
    }
    out
}

fn alter_table_cmd(table: &str, new: bool, cmd: &protobuf::AlterTableCmd, out: &mut Vec<Hit>) {
    use Severity::*;
    use locks::*;
    let t = Some(table.to_owned());
    let subtype = AlterTableType::try_from(cmd.subtype).unwrap_or(AlterTableType::Undefined);
    match subtype {
        AlterTableType::AtDropColumn => out.push(hit("drop-column", Danger, ACCESS_EXCLUSIVE, t, Work::Instant,
            format!("dropping column {table}.{} deletes its data; app versions still reading it will fail", cmd.name))),
        _ if new => {}
        AlterTableType::AtAlterColumnType => out.push(hit("alter-column-type", Danger, ACCESS_EXCLUSIVE, t, Work::Rewrite,
            format!("changing the type of {table}.{} rewrites the table and its indexes under an ACCESS EXCLUSIVE lock (unless the change is binary-compatible, e.g. varchar(n) to text or a longer varchar)", cmd.name))),
        AlterTableType::AtSetNotNull => out.push(hit("set-not-null", Warning, ACCESS_EXCLUSIVE, t, Work::Scan,
            format!("SET NOT NULL on {table}.{} scans the whole table under an ACCESS EXCLUSIVE lock; add CHECK ({} IS NOT NULL) NOT VALID, VALIDATE it, then SET NOT NULL", cmd.name, cmd.name))),
        AlterTableType::AtAddColumn => {
            if let Some(NodeEnum::ColumnDef(col)) = cmd.def.as_deref().and_then(|d| d.node.as_ref()) {
                add_column(table, col, out);
            }
        }
        AlterTableType::AtAddConstraint => {
            if let Some(NodeEnum::Constraint(c)) = cmd.def.as_deref().and_then(|d| d.node.as_ref()) {
                constraint(table, c, out);
            }
        }
        AlterTableType::AtSetTableSpace | AlterTableType::AtSetLogged | AlterTableType::AtSetUnLogged | AlterTableType::AtSetAccessMethod => {
            out.push(hit("table-rewrite", Danger, ACCESS_EXCLUSIVE, t, Work::Rewrite, format!("this ALTER TABLE rewrites {table} under an ACCESS EXCLUSIVE lock")))
        }
        _ => {}
    }
}

fn add_column(table: &str, col: &protobuf::ColumnDef, out: &mut Vec<Hit>) {
    use Severity::*;
    use locks::*;
    let t = Some(table.to_owned());
    let name = &col.colname;
    let type_name =
        col.type_name.as_ref().and_then(|tn| tn.names.last()).map(object_name).unwrap_or_default();
    let mut not_null = col.is_not_null;
    let mut default = None;
    let mut rewrite_reason = None;
    if matches!(
        type_name.as_str(),
        "serial" | "bigserial" | "smallserial" | "serial4" | "serial8" | "serial2"
    ) {
        rewrite_reason = Some(format!("its type {type_name} fills every existing row from a sequence"));
    }
    for c in &col.constraints {
        let Some(NodeEnum::Constraint(c)) = &c.node else { continue };
        match ConstrType::try_from(c.contype) {
            Ok(ConstrType::ConstrNotnull) => not_null = true,
            Ok(ConstrType::ConstrDefault) => default = c.raw_expr.as_deref(),
            Ok(ConstrType::ConstrIdentity) => {
                rewrite_reason = Some("an identity column is filled for every existing row".into())
            }
            Ok(ConstrType::ConstrGenerated) => {
                rewrite_reason = Some("a stored generated column is computed for every existing row".into())
            }
            _ => constraint(table, c, out),
        }
    }
    if let Some(expr) = default {
        let calls = called_functions(expr);
        if let Some(f) = calls.iter().find(|f| VOLATILE.contains(&f.as_str())) {
            rewrite_reason = Some(format!("its default calls the volatile function {f}()"));
        } else if let Some(f) = calls.iter().find(|f| !NOT_VOLATILE.contains(&f.as_str())) {
            out.push(hit("add-column-volatile-default", Warning, ACCESS_EXCLUSIVE, t.clone(), Work::Rewrite,
                format!("column {table}.{name}'s default calls {f}(); if that function is volatile, adding the column rewrites the table")));
        }
    }
    if let Some(reason) = rewrite_reason {
        out.push(hit("add-column-volatile-default", Danger, ACCESS_EXCLUSIVE, t, Work::Rewrite,
            format!("adding column {table}.{name} rewrites the table under an ACCESS EXCLUSIVE lock: {reason}; add it nullable without the default, backfill in batches, then set the default")));
    } else if not_null && default.is_none() {
        out.push(hit("add-column-not-null-without-default", Danger, ACCESS_EXCLUSIVE, t, Work::Instant,
            format!("adding NOT NULL column {table}.{name} without a DEFAULT fails on a table that has rows; add a default or add it nullable and backfill")));
    }
}

fn constraint(table: &str, c: &protobuf::Constraint, out: &mut Vec<Hit>) {
    use Severity::*;
    use locks::*;
    let t = Some(table.to_owned());
    let named = if c.conname.is_empty() { String::new() } else { format!(" {}", c.conname) };
    match ConstrType::try_from(c.contype) {
        Ok(ConstrType::ConstrForeign) if !c.skip_validation => {
            let target = c.pktable.as_ref().map(range_var_name).unwrap_or_default();
            out.push(hit("foreign-key-without-not-valid", Warning, SHARE_ROW_EXCLUSIVE, t, Work::Scan,
                format!("foreign key{named} on {table} → {target} is validated at once, scanning {table} while writes to both tables are blocked; add it NOT VALID, then VALIDATE CONSTRAINT in a later statement")));
        }
        Ok(ConstrType::ConstrCheck) if !c.skip_validation => out.push(hit("check-without-not-valid", Warning, ACCESS_EXCLUSIVE, t, Work::Scan,
            format!("CHECK constraint{named} on {table} is validated at once, scanning the table under an ACCESS EXCLUSIVE lock; add it NOT VALID, then VALIDATE CONSTRAINT (which only takes {SHARE_UPDATE_EXCLUSIVE})"))),
        Ok(ConstrType::ConstrPrimary | ConstrType::ConstrUnique | ConstrType::ConstrExclusion) if c.indexname.is_empty() => {
            out.push(hit("constraint-builds-index", Warning, ACCESS_EXCLUSIVE, t, Work::IndexBuild,
                format!("adding constraint{named} on {table} builds its index under an ACCESS EXCLUSIVE lock; CREATE UNIQUE INDEX CONCURRENTLY first, then ADD CONSTRAINT … USING INDEX")))
        }
        _ => {}
    }
}
