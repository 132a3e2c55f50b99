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
    pub const EXCLUSIVE: &str = "EXCLUSIVE";
    pub const DATABASE: &str = "exclusive use of the database";
    /// No table lock: the statement fails before taking one, or the finding
    /// is about the file or a new table (printed as "no lock").
    pub const NONE: &str = "no";

    /// The name of lock mode `mode` as numbered in PostgreSQL's `lockdefs.h`
    /// (the parse tree of `LOCK TABLE` carries the number).
    pub fn by_number(mode: i32) -> &'static str {
        match mode {
            1 => "ACCESS SHARE",
            2 => "ROW SHARE",
            3 => ROW_EXCLUSIVE,
            4 => SHARE_UPDATE_EXCLUSIVE,
            5 => SHARE,
            6 => SHARE_ROW_EXCLUSIVE,
            7 => EXCLUSIVE,
            _ => ACCESS_EXCLUSIVE,
        }
    }
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

/// Whether a statement's `(option, …)` list holds `name` (`full`, `concurrently`).
fn has_option(options: &[pg_query::Node], name: &str) -> bool {
    options.iter().any(|o| matches!(&o.node, Some(NodeEnum::DefElem(d)) if d.defname == name))
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
    crate::migrate::parse::names_inside(node, "FuncCall", "funcname")
        .iter()
        .map(|n| n.to_lowercase())
        .collect()
}

/// Findings for one statement. `is_new` says whether a table was created
/// earlier in the same migration set (empty, nobody uses it yet): locking
/// and rewrite rules stay quiet for those.
pub fn check(node: &NodeEnum, is_new: &dyn Fn(&str) -> bool) -> Vec<Hit> {
    use Severity::*;
    use locks::*;
    let mut out = Vec::new();
    match node {
        NodeEnum::DropStmt(s) => drop_objects(s, &mut out),
        NodeEnum::DropdbStmt(s) => out.push(hit(
            "drop-database",
            Danger,
            DATABASE,
            Some(s.dbname.clone()),
            Work::Instant,
            format!("DROP DATABASE {} deletes the whole database", s.dbname),
        )),
        NodeEnum::TruncateStmt(s) => truncate(s, &mut out),
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
        NodeEnum::CreateStmt(s) => {
            let table = s.relation.as_ref().map(range_var_name).unwrap_or_default();
            let columns = s.table_elts.iter().filter_map(|e| match &e.node {
                Some(NodeEnum::ColumnDef(c)) => Some((c.colname.as_str(), c.type_name.as_ref()?)),
                _ => None,
            });
            column_types(&table, columns.collect(), NONE, &mut out);
        }
        NodeEnum::AlterTableStmt(s) => alter_table(s, is_new, &mut out),
        NodeEnum::AlterDomainStmt(s) if s.subtype == "C" => {
            let domain = s.type_name.iter().map(object_name).collect::<Vec<_>>().join(".");
            if let Some(NodeEnum::Constraint(c)) = s.def.as_deref().and_then(|d| d.node.as_ref())
                && !c.skip_validation
            {
                out.push(hit("alter-domain-add-constraint", Warning, SHARE, None, Work::Scan,
                    format!("ALTER DOMAIN {domain} ADD CONSTRAINT checks every value of every column of type {domain}, in every table, holding a {SHARE} lock (no writes) on each table until it is done; add it NOT VALID, then ALTER DOMAIN {domain} VALIDATE CONSTRAINT, which does not block writes")));
            }
        }
        NodeEnum::VacuumStmt(s) if has_option(&s.options, "full") => vacuum_full(s, &mut out),
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

/// DROP TABLE, SCHEMA, or INDEX without CONCURRENTLY.
fn drop_objects(s: &protobuf::DropStmt, out: &mut Vec<Hit>) {
    use Severity::*;
    use locks::*;
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

/// TRUNCATE, and what CASCADE empties besides.
fn truncate(s: &protobuf::TruncateStmt, out: &mut Vec<Hit>) {
    use Severity::*;
    use locks::*;
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
    if s.behavior == protobuf::DropBehavior::DropCascade as i32 {
        let names: Vec<String> = s.relations.iter().map(object_name).collect();
        out.push(hit("truncate-cascade", Danger, ACCESS_EXCLUSIVE, names.first().cloned(), Work::Instant,
            format!("TRUNCATE {} CASCADE also empties every table with a foreign key to it, and the tables referencing those, none of which the statement names; truncate the tables you mean by name and drop CASCADE", names.join(", "))));
    }
}

/// Each command of an ALTER TABLE, and the types of the columns it adds or changes.
fn alter_table(s: &protobuf::AlterTableStmt, is_new: &dyn Fn(&str) -> bool, out: &mut Vec<Hit>) {
    use locks::*;
    let table = s.relation.as_ref().map(range_var_name).unwrap_or_default();
    let new = is_new(&table);
    let mut columns = Vec::new();
    for cmd in &s.cmds {
        let Some(NodeEnum::AlterTableCmd(cmd)) = &cmd.node else { continue };
        alter_table_cmd(&table, new, cmd, out);
        if let Some(NodeEnum::ColumnDef(c)) = cmd.def.as_deref().and_then(|d| d.node.as_ref())
            && let Some(type_name) = &c.type_name
        {
            // ADD COLUMN names the column in the definition, ALTER COLUMN … TYPE in the command.
            columns
                .push((if c.colname.is_empty() { cmd.name.as_str() } else { c.colname.as_str() }, type_name));
        }
    }
    column_types(&table, columns, if new { NONE } else { ACCESS_EXCLUSIVE }, out);
}

/// VACUUM FULL rewrites each table it names.
fn vacuum_full(s: &protobuf::VacuumStmt, out: &mut Vec<Hit>) {
    use Severity::*;
    use locks::*;
    for rel in &s.rels {
        let name = match &rel.node {
            Some(NodeEnum::VacuumRelation(v)) => v.relation.as_ref().map(range_var_name).unwrap_or_default(),
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
        AlterTableType::AtDropNotNull => out.push(hit("not-null-dropped", Warning, ACCESS_EXCLUSIVE, t, Work::Instant,
            format!("DROP NOT NULL on {table}.{}: app code (and reports, other services) written when the column could not be NULL may fail on the first NULL the new code writes; make sure every reader handles NULL before anything writes one", cmd.name))),
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
        Ok(ConstrType::ConstrPrimary | ConstrType::ConstrUnique) if c.indexname.is_empty() => {
            out.push(hit("constraint-builds-index", Warning, ACCESS_EXCLUSIVE, t, Work::IndexBuild,
                format!("adding constraint{named} on {table} builds its index under an ACCESS EXCLUSIVE lock: no reads or writes until the build ends; CREATE UNIQUE INDEX CONCURRENTLY first, then ADD CONSTRAINT … USING INDEX")))
        }
        Ok(ConstrType::ConstrExclusion) => {
            out.push(hit("constraint-builds-index", Warning, ACCESS_EXCLUSIVE, t, Work::IndexBuild,
                format!("adding exclusion constraint{named} on {table} builds its index under an ACCESS EXCLUSIVE lock: no reads or writes until the build ends, and there is no concurrent way to add one; run it in a maintenance window")))
        }
        _ => {}
    }
}

/// Whether `type_name` is the built-in type `name` (as the grammar spells
/// it: `timestamp(3)` is `pg_catalog.timestamp`, `char(2)` is `bpchar`).
fn type_is(type_name: &protobuf::TypeName, name: &str) -> bool {
    type_name.names.last().is_some_and(|n| object_name(n) == name)
}

/// Type choices that are legal but regretted: `timestamp` without time
/// zone and `char(n)`. One finding per statement, naming the columns.
fn column_types(
    table: &str,
    columns: Vec<(&str, &protobuf::TypeName)>,
    lock: &'static str,
    out: &mut Vec<Hit>,
) {
    use Severity::*;
    let of_type = |ty: &str| {
        columns.iter().filter(|(_, t)| type_is(t, ty)).map(|(c, _)| *c).collect::<Vec<_>>().join(", ")
    };
    let naive = of_type("timestamp");
    if !naive.is_empty() {
        out.push(hit("prefer-timestamptz", Info, lock, Some(table.to_owned()), Work::Instant,
            format!("{table}.({naive}): timestamp without time zone stores no zone, so a value means whatever zone its writer assumed and shifts when a server or client TimeZone changes; prefer timestamptz (Prisma: @db.Timestamptz(3))")));
    }
    let padded = of_type("bpchar");
    if !padded.is_empty() {
        out.push(hit("char-field", Info, lock, Some(table.to_owned()), Work::Instant,
            format!("{table}.({padded}): char(n) pads every value with blanks to n characters and ignores trailing blanks in comparisons, and n can only grow by a table rewrite; prefer text (or varchar(n))")));
    }
}

/// CONCURRENTLY and the other statements PostgreSQL refuses inside a
/// transaction block, every time: `(rule, what)`. Statements that refuse
/// only sometimes (`ALTER TYPE … ADD VALUE` before PostgreSQL 12, `CALL`,
/// subscriptions with a slot) are left out.
pub fn refused_in_block(node: &NodeEnum) -> Option<(&'static str, &'static str)> {
    let what = crate::migrate::script::must_run_alone(node)?;
    let concurrently = match node {
        NodeEnum::IndexStmt(_) | NodeEnum::DropStmt(_) | NodeEnum::AlterTableStmt(_) => true,
        NodeEnum::ReindexStmt(s) => has_option(&s.params, "concurrently"),
        NodeEnum::AlterEnumStmt(_)
        | NodeEnum::CallStmt(_)
        | NodeEnum::CreateSubscriptionStmt(_)
        | NodeEnum::DropSubscriptionStmt(_) => return None,
        _ => false,
    };
    Some((if concurrently { "concurrently-in-transaction" } else { "in-transaction-block" }, what))
}

/// The table a statement refused in a transaction block works on, if it names one.
pub fn statement_table(node: &NodeEnum) -> Option<String> {
    match node {
        NodeEnum::IndexStmt(s) => s.relation.as_ref().map(range_var_name),
        NodeEnum::AlterTableStmt(s) => s.relation.as_ref().map(range_var_name),
        NodeEnum::ReindexStmt(s) => s.relation.as_ref().map(range_var_name),
        NodeEnum::DropStmt(s) => s.objects.first().map(object_name),
        _ => None,
    }
}

/// The first existing table `node` locks in a mode that blocks writes
/// (SHARE or stronger), with that mode: while such a lock request waits
/// behind another transaction, every later query on the table waits
/// behind it. `is_new`: the table was created by this migration set.
pub fn write_blocking_lock(node: &NodeEnum, is_new: &dyn Fn(&str) -> bool) -> Option<(&'static str, String)> {
    use locks::*;
    let existing = |rv: Option<&protobuf::RangeVar>| rv.map(range_var_name).filter(|t| !is_new(t));
    let first_existing = |names: &[pg_query::Node]| names.iter().map(object_name).find(|t| !is_new(t));
    let referenced = |c: &protobuf::Constraint| {
        (c.contype == ConstrType::ConstrForeign as i32).then(|| existing(c.pktable.as_ref())).flatten()
    };
    match node {
        NodeEnum::AlterTableStmt(s) if s.objtype == ObjectType::ObjectTable as i32 => {
            let own = existing(s.relation.as_ref());
            let mut referenced_hit: Option<(&'static str, String)> = None;
            for cmd in &s.cmds {
                let Some(NodeEnum::AlterTableCmd(cmd)) = &cmd.node else { continue };
                let constraints = cmd_constraints(cmd);
                if let (Some(lock), Some(table)) = (alter_table_cmd_lock(cmd, &constraints), &own) {
                    return Some((lock, table.clone()));
                }
                if referenced_hit.is_none()
                    && let Some(target) = constraints.iter().find_map(|c| referenced(c))
                {
                    referenced_hit = Some((SHARE_ROW_EXCLUSIVE, target));
                }
            }
            referenced_hit
        }
        NodeEnum::CreateStmt(s) => s
            .table_elts
            .iter()
            .find_map(|e| match &e.node {
                Some(NodeEnum::Constraint(c)) => referenced(c),
                Some(NodeEnum::ColumnDef(col)) => col.constraints.iter().find_map(|n| match &n.node {
                    Some(NodeEnum::Constraint(c)) => referenced(c),
                    _ => None,
                }),
                _ => None,
            })
            .map(|t| (SHARE_ROW_EXCLUSIVE, t))
            .or_else(|| {
                // CREATE TABLE … PARTITION OF locks the parent.
                s.partbound.as_ref()?;
                s.inh_relations
                    .iter()
                    .find_map(|n| match &n.node {
                        Some(NodeEnum::RangeVar(rv)) => existing(Some(rv)),
                        _ => None,
                    })
                    .map(|t| (ACCESS_EXCLUSIVE, t))
            }),
        NodeEnum::RenameStmt(s)
            if matches!(
                ObjectType::try_from(s.rename_type),
                Ok(ObjectType::ObjectTable | ObjectType::ObjectColumn | ObjectType::ObjectTabconstraint)
            ) =>
        {
            existing(s.relation.as_ref()).map(|t| (ACCESS_EXCLUSIVE, t))
        }
        NodeEnum::DropStmt(s)
            if s.remove_type == ObjectType::ObjectTable as i32
                || (s.remove_type == ObjectType::ObjectIndex as i32 && !s.concurrent) =>
        {
            first_existing(&s.objects).map(|t| (ACCESS_EXCLUSIVE, t))
        }
        NodeEnum::IndexStmt(s) if !s.concurrent => existing(s.relation.as_ref()).map(|t| (SHARE, t)),
        NodeEnum::ReindexStmt(s) if !has_option(&s.params, "concurrently") => {
            existing(s.relation.as_ref()).map(|t| (SHARE, t))
        }
        NodeEnum::TruncateStmt(s) => first_existing(&s.relations).map(|t| (ACCESS_EXCLUSIVE, t)),
        NodeEnum::VacuumStmt(s) if has_option(&s.options, "full") => s
            .rels
            .iter()
            .find_map(|r| match &r.node {
                Some(NodeEnum::VacuumRelation(v)) => existing(v.relation.as_ref()),
                _ => None,
            })
            .map(|t| (ACCESS_EXCLUSIVE, t)),
        NodeEnum::ClusterStmt(s) => existing(s.relation.as_ref()).map(|t| (ACCESS_EXCLUSIVE, t)),
        NodeEnum::RefreshMatViewStmt(s) if !s.concurrent => {
            existing(s.relation.as_ref()).map(|t| (ACCESS_EXCLUSIVE, t))
        }
        NodeEnum::CreateTrigStmt(s) => existing(s.relation.as_ref()).map(|t| (SHARE_ROW_EXCLUSIVE, t)),
        NodeEnum::LockStmt(s) if s.mode >= 5 => first_existing(&s.relations).map(|t| (by_number(s.mode), t)),
        _ => None,
    }
}

/// The constraints one ALTER TABLE command adds: its own, or its new
/// column's.
fn cmd_constraints(cmd: &protobuf::AlterTableCmd) -> Vec<&protobuf::Constraint> {
    match cmd.def.as_deref().and_then(|d| d.node.as_ref()) {
        Some(NodeEnum::Constraint(c)) => vec![c.as_ref()],
        Some(NodeEnum::ColumnDef(c)) => c
            .constraints
            .iter()
            .filter_map(|n| match &n.node {
                Some(NodeEnum::Constraint(c)) => Some(c.as_ref()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// The lock one ALTER TABLE command takes on its own table when that lock
/// blocks writes; `None` when reads and writes go on.
fn alter_table_cmd_lock(
    cmd: &protobuf::AlterTableCmd,
    constraints: &[&protobuf::Constraint],
) -> Option<&'static str> {
    use locks::*;
    match AlterTableType::try_from(cmd.subtype).unwrap_or(AlterTableType::Undefined) {
        // SHARE UPDATE EXCLUSIVE or weaker: reads and writes go on.
        AlterTableType::AtValidateConstraint
        | AlterTableType::AtSetStatistics
        | AlterTableType::AtSetOptions
        | AlterTableType::AtResetOptions
        | AlterTableType::AtClusterOn
        | AlterTableType::AtDropCluster
        | AlterTableType::AtAttachPartition
        | AlterTableType::AtDetachPartition => None,
        AlterTableType::AtAddConstraint
            if constraints.iter().all(|c| c.contype == ConstrType::ConstrForeign as i32) =>
        {
            Some(SHARE_ROW_EXCLUSIVE)
        }
        _ => Some(ACCESS_EXCLUSIVE),
    }
}
