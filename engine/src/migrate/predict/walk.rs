//! Walking the pending migrations in order, keeping what earlier statements
//! of the bundle do to each table (created or emptied, written, renamed,
//! new columns with their defaults, new enums), and turning every statement
//! that can fail on existing rows into a [`Check`]. The statements that
//! build checks from constraints and type changes are in `statements`.

use std::collections::HashMap;

use pg_query::NodeEnum;
use pg_query::protobuf::{self, ObjectType};
use runway_proto::bundle::MigrationFile;

use super::check::{Check, Extra, Target, Test};
use super::run::{Failure, Probe};
use super::sql::{self, ident};
use super::{Certainty, DataFinding};
use crate::migrate::lint::rules::range_var_name;
use crate::migrate::parse;

/// A table: `(schema, name)`, the schema filled in for unqualified names.
pub(super) type Key = (String, String);

/// What the bundle did to a table so far.
#[derive(Debug, Clone)]
pub(super) struct TableState {
    /// The live table's name as SQL; `None` once the bundle created,
    /// truncated, renamed away or dropped it.
    pub live: Option<String>,
    pub extras: Vec<Extra>,
    /// The first statement that writes it.
    pub written: Option<String>,
    /// Columns converted by `ALTER COLUMN … TYPE`, with the statement.
    pub converted: Vec<(String, String)>,
}

/// A type the bundle created or renamed.
#[derive(Debug, Clone)]
pub(super) enum BundleType {
    /// A new enum and its labels.
    Enum(Vec<String>),
    /// A new type of another kind (domain, composite, range).
    Other,
    /// A live type under a new name: its live name as SQL.
    Renamed(String),
}

/// The walk's state and what it found.
pub(super) struct Walk<'p> {
    pub(super) probe: &'p mut Probe,
    schema: String,
    tables: HashMap<Key, TableState>,
    pub(super) types: HashMap<String, BundleType>,
    /// Labels `ALTER TYPE … ADD VALUE` adds to live enums.
    pub(super) added_labels: HashMap<String, Vec<String>>,
    /// Constraints added `NOT VALID`, for a later `VALIDATE CONSTRAINT`,
    /// with the column they were declared on (inline in `ADD COLUMN`).
    pub(super) not_valid: HashMap<(Key, String), (protobuf::Constraint, Option<String>)>,
    /// A statement that may write any table (a DO block, a CALL).
    opaque: Option<String>,
    pub(super) checks: Vec<Check>,
    pub(super) findings: Vec<(usize, DataFinding)>,
    seq: usize,
    pub(super) migration: String,
    pub(super) line: usize,
}

impl<'p> Walk<'p> {
    pub fn new(probe: &'p mut Probe) -> Self {
        let schema = probe.schema().to_owned();
        Self {
            probe,
            schema,
            tables: HashMap::new(),
            types: HashMap::new(),
            added_labels: HashMap::new(),
            not_valid: HashMap::new(),
            opaque: None,
            checks: Vec::new(),
            findings: Vec::new(),
            seq: 0,
            migration: String::new(),
            line: 0,
        }
    }

    /// The checks to run and the findings already made.
    pub fn finish(self) -> (Vec<Check>, Vec<(usize, DataFinding)>) {
        (self.checks, self.findings)
    }

    /// Walks one migration's statements.
    pub async fn migration(&mut self, m: &MigrationFile) {
        self.migration = m.name.clone();
        let stmts = match parse::parse(&m.sql) {
            Ok(stmts) => stmts,
            Err(e) => {
                self.line = e.line;
                let message = format!(
                    "the SQL does not parse, so the migration fails before it changes anything: {}",
                    e.message
                );
                self.finding(Certainty::WillFail, "does-not-parse", String::new(), Vec::new(), message);
                return;
            }
        };
        for stmt in &stmts {
            self.line = stmt.line;
            self.statement(&stmt.node).await;
            self.note_writes(&stmt.node);
        }
    }

    async fn statement(&mut self, node: &NodeEnum) {
        match node {
            NodeEnum::CreateStmt(c) => {
                let Some(rv) = &c.relation else { return };
                // IF NOT EXISTS over a live table does nothing.
                if c.if_not_exists && self.live_exists(rv).await {
                    return;
                }
                self.set_empty(self.key(rv));
            }
            NodeEnum::CreateTableAsStmt(c) => {
                if let Some(rv) = c.into.as_ref().and_then(|i| i.rel.as_ref()) {
                    self.set_empty(self.key(rv));
                }
            }
            NodeEnum::TruncateStmt(t) => {
                for rel in &t.relations {
                    if let Some(NodeEnum::RangeVar(rv)) = &rel.node {
                        self.set_empty(self.key(rv));
                    }
                }
            }
            NodeEnum::DropStmt(d) => self.drop(d),
            NodeEnum::RenameStmt(r) => self.rename(r),
            NodeEnum::IndexStmt(i) if i.unique => {
                // IF NOT EXISTS over an existing index does nothing.
                if i.if_not_exists
                    && let Some(rv) = &i.relation
                {
                    let index = protobuf::RangeVar { relname: i.idxname.clone(), ..rv.clone() };
                    if self.live_exists(&index).await {
                        return;
                    }
                }
                self.unique_index(i)
            }
            NodeEnum::AlterTableStmt(a) if a.objtype == ObjectType::ObjectTable as i32 => {
                let Some(rv) = &a.relation else { return };
                for cmd in &a.cmds {
                    if let Some(NodeEnum::AlterTableCmd(cmd)) = &cmd.node {
                        self.alter_table_cmd(rv, cmd).await;
                    }
                }
            }
            NodeEnum::CreateEnumStmt(e) => {
                let labels = e.vals.iter().map(sql::name_of).collect();
                self.types.insert(last_name(&e.type_name), BundleType::Enum(labels));
            }
            NodeEnum::AlterEnumStmt(e) if e.old_val.is_empty() => {
                let name = last_name(&e.type_name);
                match self.types.get_mut(&name) {
                    Some(BundleType::Enum(labels)) => labels.push(e.new_val.clone()),
                    _ => self.added_labels.entry(name).or_default().push(e.new_val.clone()),
                }
            }
            NodeEnum::CreateDomainStmt(d) => {
                self.types.insert(last_name(&d.domainname), BundleType::Other);
            }
            NodeEnum::CompositeTypeStmt(c) => {
                if let Some(rv) = &c.typevar {
                    self.types.insert(rv.relname.clone(), BundleType::Other);
                }
            }
            NodeEnum::CreateRangeStmt(r) => {
                self.types.insert(last_name(&r.type_name), BundleType::Other);
            }
            NodeEnum::DoStmt(_) => self.opaque("runs a DO block"),
            NodeEnum::CallStmt(_) => self.opaque("calls a procedure"),
            _ => {}
        }
    }

    async fn alter_table_cmd(&mut self, rv: &protobuf::RangeVar, cmd: &protobuf::AlterTableCmd) {
        use protobuf::AlterTableType as T;
        let def = cmd.def.as_deref().and_then(|d| d.node.as_ref());
        match (protobuf::AlterTableType::try_from(cmd.subtype).unwrap_or(T::Undefined), def) {
            (T::AtSetNotNull, _) => self.set_not_null(rv, &cmd.name),
            (T::AtAddColumn, Some(NodeEnum::ColumnDef(col))) => {
                self.add_column(rv, col, cmd.missing_ok).await
            }
            (T::AtAddConstraint, Some(NodeEnum::Constraint(c))) => self.constraint(rv, c, None, None).await,
            (T::AtValidateConstraint, _) => self.validate(rv, &cmd.name).await,
            (T::AtAlterColumnType, Some(NodeEnum::ColumnDef(col))) => {
                self.alter_type(rv, &cmd.name, col).await;
                let reason = self.reason(&format!("converts {}.{}", range_var_name(rv), cmd.name));
                let state = self.state_mut(self.key(rv));
                if state.live.is_some() {
                    state.converted.push((cmd.name.clone(), reason));
                }
            }
            (T::AtDropColumn, _) => {
                if let Some(state) = self.tables.get_mut(&self.key(rv)) {
                    state.extras.retain(|e| e.name != cmd.name);
                }
            }
            _ => {}
        }
    }

    /// Whether `rv` names a live relation, as the bundle left it so far (a
    /// failed lookup counts as absent).
    async fn live_exists(&mut self, rv: &protobuf::RangeVar) -> bool {
        let key = self.key(rv);
        if let Some(state) = self.tables.get(&key) {
            return state.live.is_some();
        }
        let name = self.live_name(&key);
        self.probe.exists(&name).await.unwrap_or(false)
    }

    /// The table a relation names.
    pub(super) fn key(&self, rv: &protobuf::RangeVar) -> Key {
        let schema = if rv.schemaname.is_empty() { self.schema.clone() } else { rv.schemaname.clone() };
        (schema, rv.relname.clone())
    }

    /// A live table's name as SQL (unqualified in the session's schema).
    fn live_name(&self, key: &Key) -> String {
        if key.0 == self.schema { ident(&key.1) } else { format!("{}.{}", ident(&key.0), ident(&key.1)) }
    }

    fn state(&self, key: &Key) -> TableState {
        self.tables.get(key).cloned().unwrap_or_else(|| TableState {
            live: Some(self.live_name(key)),
            extras: Vec::new(),
            written: None,
            converted: Vec::new(),
        })
    }

    fn state_mut(&mut self, key: Key) -> &mut TableState {
        let fresh = self.state(&key);
        self.tables.entry(key).or_insert(fresh)
    }

    /// The rows a statement on `rv` reads, as the bundle left them.
    pub(super) fn target(&self, rv: &protobuf::RangeVar) -> Target {
        let state = self.state(&self.key(rv));
        Target {
            named: range_var_name(rv),
            live: state.live,
            relname: rv.relname.clone(),
            extras: state.extras,
            written: state.written.or_else(|| self.opaque.clone()),
            converted: state.converted,
        }
    }

    /// The table has no rows from here on (created, truncated, dropped).
    fn set_empty(&mut self, key: Key) {
        self.tables
            .insert(key, TableState { live: None, extras: Vec::new(), written: None, converted: Vec::new() });
    }

    fn write(&mut self, key: Key, reason: String) {
        let state = self.state_mut(key);
        if state.live.is_some() && state.written.is_none() {
            state.written = Some(reason);
        }
    }

    /// `line N of MIGRATION <what>`.
    pub(super) fn reason(&self, what: &str) -> String {
        format!("line {} of {} {what}", self.line, self.migration)
    }

    fn opaque(&mut self, what: &str) {
        if self.opaque.is_none() {
            self.opaque = Some(self.reason(&format!("{what}, which may write any table")));
        }
    }

    /// Tables written by the statement's DML, nested ones included
    /// (`WITH … UPDATE`), and `COPY … FROM`.
    fn note_writes(&mut self, node: &NodeEnum) {
        fn walk(v: &serde_json::Value, out: &mut Vec<(String, String, &'static str)>) {
            match v {
                serde_json::Value::Object(map) => {
                    for (key, verb) in [
                        ("InsertStmt", "inserts into"),
                        ("UpdateStmt", "updates"),
                        ("DeleteStmt", "deletes from"),
                        ("MergeStmt", "merges into"),
                    ] {
                        if let Some(rel) = map.get(key).and_then(|s| s.get("relation")) {
                            let text =
                                |k: &str| rel.get(k).and_then(|v| v.as_str()).unwrap_or_default().to_owned();
                            out.push((text("schemaname"), text("relname"), verb));
                        }
                    }
                    map.values().for_each(|v| walk(v, out));
                }
                serde_json::Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
                _ => {}
            }
        }
        let mut writes = Vec::new();
        if let NodeEnum::CopyStmt(c) = node
            && c.is_from
            && let Some(rv) = &c.relation
        {
            writes.push((rv.schemaname.clone(), rv.relname.clone(), "copies into"));
        }
        if let Ok(value) = serde_json::to_value(node) {
            walk(&value, &mut writes);
        }
        for (schema, relname, verb) in writes {
            let rv = protobuf::RangeVar { schemaname: schema, relname, ..Default::default() };
            let reason = self.reason(&format!("{verb} {}", range_var_name(&rv)));
            self.write(self.key(&rv), reason);
        }
    }

    fn drop(&mut self, d: &protobuf::DropStmt) {
        let kind = ObjectType::try_from(d.remove_type).unwrap_or(ObjectType::Undefined);
        for object in &d.objects {
            let names: Vec<String> = match &object.node {
                Some(NodeEnum::List(l)) => l.items.iter().map(sql::name_of).collect(),
                Some(NodeEnum::TypeName(t)) => t.names.iter().map(sql::name_of).collect(),
                _ => continue,
            };
            let Some(name) = names.last().cloned() else { continue };
            match kind {
                ObjectType::ObjectTable => {
                    let schema = if names.len() > 1 { names[names.len() - 2].clone() } else { String::new() };
                    let rv = protobuf::RangeVar { schemaname: schema, relname: name, ..Default::default() };
                    self.set_empty(self.key(&rv));
                }
                ObjectType::ObjectType | ObjectType::ObjectDomain => {
                    self.types.remove(&name);
                }
                _ => {}
            }
        }
    }

    fn rename(&mut self, r: &protobuf::RenameStmt) {
        match ObjectType::try_from(r.rename_type) {
            Ok(ObjectType::ObjectTable) => {
                let Some(rv) = &r.relation else { return };
                let old = self.key(rv);
                let state = self.state(&old);
                self.set_empty(old.clone());
                self.tables.insert((old.0, r.newname.clone()), state);
            }
            Ok(ObjectType::ObjectColumn) => {
                let Some(rv) = &r.relation else { return };
                let state = self.state_mut(self.key(rv));
                match state.extras.iter_mut().rev().find(|e| e.name == r.subname) {
                    Some(extra) => extra.name = r.newname.clone(),
                    None if state.live.is_some() => state.extras.push(Extra {
                        name: r.newname.clone(),
                        value: ident(&r.subname),
                        null: false,
                        known: true,
                    }),
                    None => {}
                }
            }
            Ok(ObjectType::ObjectType | ObjectType::ObjectDomain) => {
                let names: Vec<String> = match r.object.as_deref().and_then(|o| o.node.as_ref()) {
                    Some(NodeEnum::List(l)) => l.items.iter().map(sql::name_of).collect(),
                    _ => return,
                };
                let Some(old) = names.last().cloned() else { return };
                let moved = self.types.remove(&old).unwrap_or_else(|| {
                    BundleType::Renamed(names.iter().map(|n| ident(n)).collect::<Vec<_>>().join("."))
                });
                self.types.insert(r.newname.clone(), moved);
            }
            _ => {}
        }
    }

    /// A column the bundle adds to `rv`, with the value existing rows get.
    pub(super) fn add_extra(&mut self, rv: &protobuf::RangeVar, extra: Extra) {
        let key = self.key(rv);
        self.state_mut(key).extras.push(extra);
    }

    /// Records a check on live rows (none when the bundle emptied the table).
    pub(super) fn push(
        &mut self,
        kind: &'static str,
        mut target: Target,
        columns: Vec<String>,
        what: String,
        test: Test,
    ) {
        if target.live.is_none() {
            return;
        }
        target.note_converted(&columns);
        self.seq += 1;
        self.checks.push(Check {
            seq: self.seq,
            kind,
            migration: self.migration.clone(),
            line: self.line,
            target,
            columns,
            what,
            test,
        });
    }

    /// Records a finding made without running a check.
    pub(super) fn finding(
        &mut self,
        certainty: Certainty,
        kind: &str,
        table: String,
        columns: Vec<String>,
        message: String,
    ) {
        self.seq += 1;
        self.findings.push((
            self.seq,
            DataFinding {
                certainty,
                kind: kind.to_owned(),
                migration: self.migration.clone(),
                line: self.line,
                table,
                columns,
                count: None,
                examples: Vec::new(),
                query: String::new(),
                message,
            },
        ));
    }

    /// An `Unknown` finding: the check could not be made.
    pub(super) fn unknown(
        &mut self,
        kind: &str,
        target: &Target,
        columns: Vec<String>,
        what: &str,
        reason: &str,
    ) {
        let message = format!("{what} could not be checked: {reason}");
        self.finding(Certainty::Unknown, kind, target.named.clone(), columns, message);
    }

    /// The reason for a failed catalog lookup.
    pub(super) fn failure_reason(&self, failure: &Failure) -> String {
        failure.reason(self.probe.timeout())
    }
}

/// The last name of a qualified name list.
fn last_name(names: &[protobuf::Node]) -> String {
    names.last().map(sql::name_of).unwrap_or_default()
}
