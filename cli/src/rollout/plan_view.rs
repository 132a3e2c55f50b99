//! The DB agent's typed preflight plan (saved with a rollout, or answered
//! to `rollout plan`) as text and as JSON: pending migrations, findings
//! with table sizes, downtime class, maintenance, and each down's proof.

use runway_proto::plan::{certainty_name, down_state_name, downtime_class_name, severity_name};
use runway_proto::v1::MigrationPlan;
use serde_json::{Value, json};

use crate::output::table::Table;

/// The plan's lines for `rollout show` and `rollout plan`.
pub fn text(plan: &MigrationPlan) -> String {
    let mut text = format!(
        "plan         {} pending migration(s){}\n",
        plan.pending.len(),
        if plan.pending.is_empty() { String::new() } else { format!(": {}", plan.pending.join(", ")) }
    );
    if let Some(downtime) = &plan.downtime {
        text.push_str(&format!(
            "downtime     {}: {}\n",
            downtime_class_name(plan.downtime_class()),
            downtime.reason
        ));
    }
    let maintenance = if plan.safe_without_maintenance { "not needed" } else { "needed" };
    text.push_str(&format!("maintenance  {maintenance}\n"));
    for name in &plan.modified {
        text.push_str(&format!("warning      applied migration {name} was modified since it was applied\n"));
    }
    for name in &plan.missing_locally {
        text.push_str(&format!("warning      applied migration {name} is missing from the bundle\n"));
    }
    text.push_str(&data_text(plan));
    text.push_str(&downs_text(plan));
    if !plan.findings.is_empty() {
        // As `migrate lint` shows them: total size, or `new` for a table
        // the bundle creates.
        let size_of = |table: &str| match plan.tables.iter().find(|t| t.table == table) {
            Some(t) if t.exists => crate::output::bytes(u64::try_from(t.total_bytes).unwrap_or(0)),
            Some(_) => "new".to_owned(),
            None => String::new(),
        };
        let mut table =
            Table::new(["migration", "line", "severity", "rule", "table", "size", "finding"]).right(&[1, 5]);
        for f in &plan.findings {
            table.row([
                f.migration.clone(),
                f.line.to_string(),
                severity_name(f.severity).to_owned(),
                f.rule.clone(),
                f.table.clone(),
                size_of(&f.table),
                f.message.clone(),
            ]);
        }
        text.push_str("findings:\n");
        text.push_str(&table.render());
        text.push('\n');
    }
    text
}

/// `data`: what the live data says about the pending statements, then
/// each finding with its count, example keys and the query that lists the rows.
fn data_text(plan: &MigrationPlan) -> String {
    if plan.pending.is_empty() && plan.data.is_empty() {
        return String::new();
    }
    let failing = plan.will_fail().count();
    let mut text = format!(
        "data         {} check(s) on the live data in {} ms: {}\n",
        plan.data_checks,
        plan.data_ms,
        match failing {
            0 if plan.data.is_empty() => "nothing will fail".to_owned(),
            0 => "nothing will fail for certain".to_owned(),
            n => format!("{n} statement(s) WILL FAIL"),
        }
    );
    for f in &plan.data {
        let count = f.count.map(|c| format!(", {c} row(s)")).unwrap_or_default();
        text.push_str(&format!(
            "  {}: {} line {}: {} on {}{}{count}: {}\n",
            certainty_name(f.certainty),
            f.migration,
            f.line,
            f.kind,
            f.table,
            if f.columns.is_empty() { String::new() } else { format!(" ({})", f.columns.join(", ")) },
            f.message
        ));
        if !f.examples.is_empty() {
            text.push_str(&format!("    e.g. {}\n", f.examples.join(", ")));
        }
        if !f.query.is_empty() {
            text.push_str(&format!("    find them: {}\n", f.query));
        }
    }
    text
}

/// `rollback`: whether a rollback by migration is possible, then a table
/// of each pending migration's down.
fn downs_text(plan: &MigrationPlan) -> String {
    if plan.pending.is_empty() {
        return String::new();
    }
    let way = if plan.downs_proven() {
        format!("by migration: every down proven on a schema-only copy in {} ms", plan.downs_ms)
    } else {
        format!("by restore only: not proven: {}", plan.unproven_downs().join(", "))
    };
    let mut text = format!("rollback     {way}\n");
    if plan.downs.is_empty() {
        return text;
    }
    let mut table = Table::new(["migration", "down", "detail"]);
    for d in &plan.downs {
        table.row([d.migration.clone(), down_state_name(d.state).to_owned(), d.detail.clone()]);
    }
    text.push_str("downs:\n");
    text.push_str(&table.render());
    text.push('\n');
    text
}

/// The plan as `--output json` shows it.
pub fn json(plan: &MigrationPlan) -> Value {
    json!({
        "pending": plan.pending,
        "applied": plan.applied,
        "failed": plan.failed,
        "modified": plan.modified,
        "missing_locally": plan.missing_locally,
        "safe_without_maintenance": plan.safe_without_maintenance,
        "reasons": plan.reasons,
        "blocked": if plan.blocked.is_empty() { Value::Null } else { plan.blocked.clone().into() },
        "downtime": plan.downtime.as_ref().map(|d| json!({
            "class": downtime_class_name(plan.downtime_class()),
            "estimated_seconds": d.estimated_seconds,
            "reason": d.reason,
        })),
        "findings": plan.findings.iter().map(|f| json!({
            "migration": f.migration,
            "line": f.line,
            "statement": f.statement,
            "rule": f.rule,
            "severity": severity_name(f.severity),
            "lock": f.lock,
            "table": if f.table.is_empty() { Value::Null } else { f.table.clone().into() },
            "work": f.work,
            "message": f.message,
            "estimated_seconds": f.estimated_seconds,
        })).collect::<Vec<_>>(),
        "tables": plan.tables.iter().map(|t| json!({
            "table": t.table,
            "exists": t.exists,
            "heap_bytes": t.heap_bytes,
            "total_bytes": t.total_bytes,
            "estimated_rows": t.estimated_rows,
        })).collect::<Vec<_>>(),
        "data": plan.data.iter().map(|f| json!({
            "certainty": certainty_name(f.certainty).replace(' ', "_"),
            "kind": f.kind,
            "migration": f.migration,
            "line": f.line,
            "table": f.table,
            "columns": f.columns,
            "count": f.count,
            "examples": f.examples,
            "query": f.query,
            "message": f.message,
        })).collect::<Vec<_>>(),
        "data_checks": plan.data_checks,
        "data_ms": plan.data_ms,
        "downs": downs_json(plan),
        "downs_ms": plan.downs_ms,
        "rollback_by_migration": plan.downs_proven(),
    })
}

/// `[{"migration": NAME, "state": STATE, "detail": …}]`.
pub fn downs_json(plan: &MigrationPlan) -> Value {
    plan.downs
        .iter()
        .map(|d| json!({ "migration": d.migration, "state": down_state_name(d.state), "detail": d.detail }))
        .collect()
}
