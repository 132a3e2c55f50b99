//! The statements that can fail on existing rows, as checks: `SET NOT
//! NULL`, `ADD COLUMN`, constraints (`ADD CONSTRAINT`, `VALIDATE
//! CONSTRAINT`), unique indexes and `ALTER COLUMN … TYPE`.

use pg_query::NodeEnum;
use pg_query::protobuf::{self, ConstrType};

use super::Certainty;
use super::cast::{Cast, Length};
use super::check::{Extra, Target, Test};
use super::sql::{self, ident};
use super::walk::{BundleType, Walk};

/// Column types whose new column is filled from a sequence.
const SERIAL: &[&str] = &["serial", "bigserial", "smallserial", "serial2", "serial4", "serial8"];

impl Walk<'_> {
    pub(super) fn set_not_null(&mut self, rv: &protobuf::RangeVar, column: &str) {
        let mut target = self.target(rv);
        if target.extra(column).is_some_and(|e| !e.known) {
            return;
        }
        target.keep_extras(&[column.to_owned()]);
        let what = format!("SET NOT NULL on {}.{column}", target.named);
        self.push(
            "not-null",
            target,
            vec![column.to_owned()],
            what,
            Test::NotNull { column: column.to_owned() },
        );
    }

    /// `ADD COLUMN` (`if_not_exists` for `ADD COLUMN IF NOT EXISTS`).
    pub(super) async fn add_column(
        &mut self,
        rv: &protobuf::RangeVar,
        col: &protobuf::ColumnDef,
        if_not_exists: bool,
    ) {
        let target = self.target(rv);
        let name = col.colname.clone();
        if if_not_exists
            && let Some(live) = &target.live
            && target.extra(&name).is_none()
            && let Ok(Some(_)) = self.probe.column(live, &name).await
        {
            // The column exists: the statement does nothing.
            return;
        }
        let Some(type_name) = &col.type_name else { return };
        let base = sql::type_base(type_name);
        // The value existing rows get, as SQL of the column's type (a type
        // the bundle creates does not exist yet: text stands in for it).
        let type_sql = match self.types.get(&base) {
            Some(_) => Ok("text".to_owned()),
            None => sql::type_name(type_name),
        };
        let mut not_null = col.is_not_null;
        let mut filled = SERIAL.contains(&base.as_str());
        let mut default = col.raw_default.as_deref().filter(|d| !sql::is_null_const(d));
        let mut generated = None;
        let mut inline = Vec::new();
        for c in &col.constraints {
            let Some(NodeEnum::Constraint(c)) = &c.node else { continue };
            match ConstrType::try_from(c.contype) {
                Ok(ConstrType::ConstrNotnull) => not_null = true,
                Ok(ConstrType::ConstrDefault) => {
                    default = c.raw_expr.as_deref().filter(|d| !sql::is_null_const(d));
                }
                Ok(ConstrType::ConstrIdentity) => filled = true,
                Ok(ConstrType::ConstrGenerated) => generated = c.raw_expr.as_deref(),
                Ok(ConstrType::ConstrPrimary) => {
                    not_null = true;
                    inline.push(c.clone());
                }
                Ok(ConstrType::ConstrUnique | ConstrType::ConstrCheck | ConstrType::ConstrForeign) => {
                    inline.push(c.clone())
                }
                _ => {}
            }
        }
        if not_null && default.is_none() && generated.is_none() && !filled {
            let what = format!("ADD COLUMN {}.{name} NOT NULL without DEFAULT", target.named);
            let mut rows = target.clone();
            rows.keep_extras(&[]);
            self.push("add-column-not-null", rows, vec![name.clone()], what, Test::AddColumnNotNull);
        }
        if target.live.is_none() {
            return;
        }
        let value = match (default.or(generated), &type_sql) {
            _ if filled => None,
            // A sequence's next values cannot be read without taking them.
            (Some(expr), Ok(ty)) => sql::expr(expr)
                .ok()
                .filter(|e| !e.contains("nextval("))
                .map(|e| (format!("({e})::{ty}"), false)),
            (None, Ok(ty)) => Some((format!("NULL::{ty}"), true)),
            (_, Err(_)) => None,
        };
        let extra = match value {
            Some((value, null)) => Extra { name: name.clone(), value, null, known: true },
            None => Extra { name: name.clone(), value: "NULL".into(), null: false, known: false },
        };
        self.add_extra(rv, extra);
        for c in inline {
            self.constraint(rv, &c, Some(&name), None).await;
        }
    }

    /// `ADD CONSTRAINT` (or a constraint declared on a new column, or one
    /// being validated: `validate` is its name then).
    pub(super) async fn constraint(
        &mut self,
        rv: &protobuf::RangeVar,
        c: &protobuf::Constraint,
        column: Option<&str>,
        validate: Option<&str>,
    ) {
        let target = self.target(rv);
        if target.live.is_none() {
            return;
        }
        let contype = ConstrType::try_from(c.contype);
        let deferred_validation = matches!(contype, Ok(ConstrType::ConstrCheck | ConstrType::ConstrForeign))
            && c.skip_validation
            && validate.is_none();
        if deferred_validation {
            // NOT VALID: nothing is checked now; remember it for VALIDATE.
            if !c.conname.is_empty() {
                self.not_valid
                    .insert((self.key(rv), c.conname.clone()), (c.clone(), column.map(str::to_owned)));
            }
            return;
        }
        let columns: Vec<String> = match contype {
            Ok(ConstrType::ConstrForeign) => c.fk_attrs.iter().map(sql::name_of).collect(),
            _ => c.keys.iter().map(sql::name_of).collect(),
        };
        let columns =
            if columns.is_empty() { column.map(|c| vec![c.to_owned()]).unwrap_or_default() } else { columns };
        let table = target.named.clone();
        let named = |label: &str| match (validate, c.conname.as_str()) {
            (Some(name), _) => format!("VALIDATE CONSTRAINT {name} ({label}) on {table}"),
            (None, "") => format!("ADD {label} on {table}"),
            (None, name) => format!("ADD CONSTRAINT {name} {label} on {table}"),
        };
        match contype {
            Ok(kind @ (ConstrType::ConstrPrimary | ConstrType::ConstrUnique)) if c.indexname.is_empty() => {
                let primary = kind == ConstrType::ConstrPrimary;
                let label =
                    format!("{} ({})", if primary { "PRIMARY KEY" } else { "UNIQUE" }, columns.join(", "));
                let what = named(&label);
                self.unique(target, columns, what, primary, c.nulls_not_distinct, column.is_some());
            }
            Ok(ConstrType::ConstrCheck) => {
                let Some(expr) = c.raw_expr.as_deref() else { return };
                let refs = sql::column_refs(expr);
                if refs.iter().any(|r| target.extra(r).is_some_and(|e| !e.known)) {
                    return;
                }
                match sql::expr(expr) {
                    Ok(expr) => {
                        let what = named(&format!("CHECK ({expr})"));
                        let mut target = target;
                        target.keep_extras(&refs);
                        self.push("check", target, refs, what, Test::Check { expr });
                    }
                    Err(e) => self.unknown("check", &target, refs, &named("CHECK"), &e),
                }
            }
            Ok(ConstrType::ConstrForeign) => self.foreign_key(target, c, columns, named).await,
            _ => {}
        }
    }

    fn unique(
        &mut self,
        mut target: Target,
        columns: Vec<String>,
        what: String,
        primary: bool,
        nulls_not_distinct: bool,
        inline: bool,
    ) {
        let kind = if primary { "primary-key" } else { "unique" };
        if columns.iter().any(|c| target.extra(c).is_some_and(|e| !e.known)) {
            return;
        }
        target.keep_extras(&columns);
        if primary && !inline {
            // An inline key on a new column: ADD COLUMN's own NOT NULL check covers it.
            let test = Test::KeyNulls { columns: columns.clone() };
            self.push(kind, target.clone(), columns.clone(), what.clone(), test);
        }
        // NULLs are distinct: a key with a new, all-NULL column has no duplicates.
        let all_null = columns.iter().any(|c| target.extra(c).is_some_and(|e| e.null));
        if all_null && (primary || !nulls_not_distinct) {
            return;
        }
        let exprs = columns.iter().map(|c| ident(c)).collect();
        let test =
            Test::Unique { exprs, predicate: None, nulls_not_distinct: nulls_not_distinct && !primary };
        self.push(kind, target, columns, what, test);
    }

    async fn foreign_key(
        &mut self,
        mut target: Target,
        c: &protobuf::Constraint,
        columns: Vec<String>,
        named: impl Fn(&str) -> String,
    ) {
        let Some(pk_rv) = &c.pktable else { return };
        let mut parent = self.target(pk_rv);
        let mut parent_columns: Vec<String> = c.pk_attrs.iter().map(sql::name_of).collect();
        let full = c.fk_matchtype == "f";
        let label = |parent_columns: &[String]| {
            let refs = if parent_columns.is_empty() {
                String::new()
            } else {
                format!(" ({})", parent_columns.join(", "))
            };
            format!("FOREIGN KEY ({}) → {}{refs}", columns.join(", "), parent.named)
        };
        let extra = |name: &String| target.extra(name);
        if columns.iter().any(|c| extra(c).is_some_and(|e| !e.known)) {
            return;
        }
        let nulls = columns.iter().filter(|c| extra(c).is_some_and(|e| e.null)).count();
        // MATCH SIMPLE passes a row with any NULL; MATCH FULL one with all NULL.
        if (!full && nulls > 0) || (full && nulls == columns.len()) {
            return;
        }
        if parent_columns.is_empty()
            && let Some(live) = &parent.live
        {
            match self.probe.primary_key(live).await {
                Ok(Some(pk)) => parent_columns = pk,
                Ok(None) => return,
                Err(failure) => {
                    let reason = self.failure_reason(&failure);
                    let what = named(&label(&[]));
                    return self.unknown("foreign-key", &target, columns.clone(), &what, &reason);
                }
            }
        }
        let what = named(&label(&parent_columns));
        parent.note_converted(&parent_columns);
        parent.keep_extras(&parent_columns);
        target.note_converted(&columns);
        target.keep_extras(&columns);
        target.written = target.written.or_else(|| parent.written.clone());
        let parent = parent.live.is_some().then_some((parent, parent_columns));
        self.push("foreign-key", target, columns.clone(), what, Test::ForeignKey { columns, parent, full });
    }

    /// `VALIDATE CONSTRAINT`: the definition from an earlier statement of
    /// the bundle, or from the catalog.
    pub(super) async fn validate(&mut self, rv: &protobuf::RangeVar, name: &str) {
        if let Some((c, column)) = self.not_valid.remove(&(self.key(rv), name.to_owned())) {
            return self.constraint(rv, &c, column.as_deref(), Some(name)).await;
        }
        let target = self.target(rv);
        let Some(live) = &target.live else { return };
        let what = format!("VALIDATE CONSTRAINT {name} on {}", target.named);
        let definition = match self.probe.constraint(live, name).await {
            Ok(Some((_, true)) | None) => return,
            Ok(Some((definition, false))) => definition,
            Err(failure) => {
                let reason = self.failure_reason(&failure);
                return self.unknown("check", &target, Vec::new(), &what, &reason);
            }
        };
        match parse_constraint(name, &definition) {
            Some(c) => self.constraint(rv, &c, None, Some(name)).await,
            None => {
                let reason = format!("its definition `{definition}` does not parse");
                self.unknown("check", &target, Vec::new(), &what, &reason)
            }
        }
    }

    /// `CREATE UNIQUE INDEX`, with its expressions, collations and predicate.
    pub(super) fn unique_index(&mut self, index: &protobuf::IndexStmt) {
        let Some(rv) = &index.relation else { return };
        let target = self.target(rv);
        let mut exprs = Vec::new();
        let mut labels = Vec::new();
        let mut refs = Vec::new();
        let what = |labels: &[String]| {
            format!("CREATE UNIQUE INDEX {} on {} ({})", index.idxname, target.named, labels.join(", "))
        };
        for param in &index.index_params {
            let Some(NodeEnum::IndexElem(elem)) = &param.node else { continue };
            let (mut sql_expr, label) = if !elem.name.is_empty() {
                refs.push(elem.name.clone());
                (ident(&elem.name), elem.name.clone())
            } else if let Some(expr) = elem.expr.as_deref() {
                refs.extend(sql::column_refs(expr));
                match sql::expr(expr) {
                    Ok(text) => (format!("({text})"), text),
                    Err(e) => return self.unknown("unique", &target, labels.clone(), &what(&labels), &e),
                }
            } else {
                continue;
            };
            if !elem.collation.is_empty() {
                let collation: Vec<String> = elem.collation.iter().map(|n| ident(&sql::name_of(n))).collect();
                sql_expr = format!("{sql_expr} COLLATE {}", collation.join("."));
            }
            exprs.push(sql_expr);
            labels.push(label);
        }
        let predicate = match index.where_clause.as_deref().map(|w| (sql::expr(w), sql::column_refs(w))) {
            None => None,
            Some((Ok(text), more)) => {
                refs.extend(more);
                Some(text)
            }
            Some((Err(e), _)) => return self.unknown("unique", &target, labels.clone(), &what(&labels), &e),
        };
        if refs.iter().any(|r| target.extra(r).is_some_and(|e| !e.known)) {
            return;
        }
        let all_null = index.index_params.iter().any(|p| {
            matches!(&p.node, Some(NodeEnum::IndexElem(e)) if target.extra(&e.name).is_some_and(|x| x.null))
        });
        if all_null && !index.nulls_not_distinct {
            return;
        }
        let what = what(&labels);
        let mut target = target;
        target.note_converted(&refs);
        target.keep_extras(&refs);
        let test = Test::Unique { exprs, predicate, nulls_not_distinct: index.nulls_not_distinct };
        self.push("unique", target, labels, what, test);
    }

    /// `ALTER COLUMN … TYPE t [USING e]`: enum membership when `t` is an
    /// enum (one the bundle creates, or a live one), a conversion otherwise.
    pub(super) async fn alter_type(
        &mut self,
        rv: &protobuf::RangeVar,
        column: &str,
        def: &protobuf::ColumnDef,
    ) {
        let mut target = self.target(rv);
        let Some(type_name) = &def.type_name else { return };
        if target.live.is_none() {
            return;
        }
        let base = sql::type_base(type_name);
        let renamed =
            |types: &std::collections::HashMap<String, BundleType>, name: &str| match types.get(name) {
                Some(BundleType::Renamed(live)) => Some(live.clone()),
                _ => None,
            };
        let new_type = match sql::type_name(type_name) {
            Ok(text) => sql::rewrite_casts(&format!("NULL::{text}"), &|n| renamed(&self.types, n))
                .trim_start_matches("NULL::")
                .to_owned(),
            Err(e) => return self.unknown("cast", &target, vec![column.into()], "ALTER COLUMN … TYPE", &e),
        };
        let what = format!("ALTER COLUMN {}.{column} TYPE {new_type}", target.named);
        let columns = vec![column.to_owned()];
        let using = def.raw_default.as_deref();
        let refs = using.map(sql::column_refs).unwrap_or_else(|| columns.clone());
        if refs.iter().chain(&columns).any(|r| target.extra(r).is_some()) {
            let reason = "it reads a column this bundle adds";
            return self.unknown("cast", &target, columns, &what, reason);
        }
        target.extras.clear();
        let labels = match self.types.get(&base).cloned() {
            Some(BundleType::Enum(labels)) => Some(labels),
            Some(BundleType::Other) => {
                let reason = format!("type {base} is created by this bundle");
                return self.unknown("cast", &target, columns, &what, &reason);
            }
            _ => {
                let mut plain = type_name.clone();
                plain.array_bounds.clear();
                plain.typmods.clear();
                let plain = sql::type_name(&plain).unwrap_or_else(|_| ident(&base));
                let plain = sql::rewrite_casts(&format!("NULL::{plain}"), &|n| renamed(&self.types, n))
                    .trim_start_matches("NULL::")
                    .to_owned();
                match self.probe.enum_labels(&plain).await {
                    Ok(Some(mut labels)) => {
                        labels.extend(self.added_labels.get(&base).cloned().unwrap_or_default());
                        Some(labels)
                    }
                    Ok(None) => None,
                    Err(failure) => {
                        let reason = self.failure_reason(&failure);
                        return self.unknown("cast", &target, columns, &what, &reason);
                    }
                }
            }
        };
        let using = match using.map(sql::expr).transpose() {
            Ok(using) => using,
            Err(e) => return self.unknown("cast", &target, columns, &what, &e),
        };
        if let Some(labels) = labels {
            // The new enum may not exist yet: compare the value as text.
            let as_text = |n: &str| if n == base { Some("text".to_owned()) } else { renamed(&self.types, n) };
            let value = match &using {
                Some(using) => sql::rewrite_casts(using, &as_text),
                None => ident(column),
            };
            let array = !type_name.array_bounds.is_empty();
            let test = Test::EnumValue { value, type_name: base.clone(), labels, array };
            return self.push("enum-value", target, columns, what, test);
        }
        let using = using.map(|u| sql::rewrite_casts(&u, &|n| renamed(&self.types, n)));
        self.cast(target, column, using, (new_type, type_name), what).await;
    }

    /// A conversion to a type that is not an enum: `new` is the type as SQL
    /// and as parsed.
    async fn cast(
        &mut self,
        target: Target,
        column: &str,
        using: Option<String>,
        (new_type, type_name): (String, &protobuf::TypeName),
        what: String,
    ) {
        let columns = vec![column.to_owned()];
        let live = target.live.clone().unwrap_or_default();
        let (old_type, not_null) = match self.probe.column(&live, column).await {
            Ok(Some(found)) => found,
            // No such column: the statement fails, but not because of data.
            Ok(None) => return,
            Err(failure) => {
                let reason = self.failure_reason(&failure);
                return self.unknown("cast", &target, columns, &what, &reason);
            }
        };
        if using.is_none() {
            match self.probe.assignable(&old_type, &new_type).await {
                Ok(true) => {}
                Ok(false) => {
                    let message = format!(
                        "{what} will fail whatever the data: {old_type} has no assignment cast to {new_type}; \
                         add USING ({}::{new_type})",
                        ident(column)
                    );
                    return self.finding(Certainty::WillFail, "cast", target.named.clone(), columns, message);
                }
                Err(failure) => {
                    let reason = self.failure_reason(&failure);
                    return self.unknown("cast", &target, columns, &what, &reason);
                }
            }
        }
        let length = match (sql::type_base(type_name).as_str(), sql::typmods(type_name).as_slice()) {
            _ if !type_name.array_bounds.is_empty() => None,
            ("varchar" | "bpchar", [n]) => Some(Length::Chars(*n)),
            ("bit", [n]) => Some(Length::BitsExactly(*n)),
            ("varbit", [n]) => Some(Length::BitsAtMost(*n)),
            _ => None,
        };
        let cast = Cast { column: column.to_owned(), using, new_type, length, old_type, not_null };
        self.push("cast", target, columns, what, Test::Cast(cast));
    }
}

/// A catalog constraint definition (`pg_get_constraintdef`) as a parsed
/// constraint.
fn parse_constraint(name: &str, definition: &str) -> Option<protobuf::Constraint> {
    let sql = format!("ALTER TABLE runway_predict ADD CONSTRAINT {} {definition}", ident(name));
    let parsed = pg_query::parse(&sql).ok()?;
    let Some(NodeEnum::AlterTableStmt(stmt)) = parsed.protobuf.stmts.first()?.stmt.as_ref()?.node.as_ref()
    else {
        return None;
    };
    let Some(NodeEnum::AlterTableCmd(cmd)) = stmt.cmds.first()?.node.as_ref() else { return None };
    match cmd.def.as_deref()?.node.as_ref()? {
        NodeEnum::Constraint(c) => Some((**c).clone()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_catalog_definitions() {
        let c = parse_constraint("orders_user_fk", "FOREIGN KEY (user_id) REFERENCES users(id) NOT VALID")
            .unwrap();
        assert_eq!(c.contype, ConstrType::ConstrForeign as i32);
        assert!(c.skip_validation);
        assert_eq!(c.pktable.unwrap().relname, "users");
        let c = parse_constraint("positive", "CHECK ((total > 0)) NOT VALID").unwrap();
        assert_eq!(c.contype, ConstrType::ConstrCheck as i32);
    }
}
