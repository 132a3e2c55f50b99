//! A rollout's databases as text and JSON: one line per database with its
//! host, name, state and the migrations applied (`rollout show`).

use runway_proto::v1::Rollout;
use serde_json::{Value, json};

use crate::output::Table;

/// `databases` in `rollout show --output json`.
pub fn json(r: &Rollout) -> Value {
    r.databases
        .iter()
        .map(|d| {
            json!({
                "host": d.host, "database": d.database, "state": d.state,
                "migrations_applied": d.migrations_applied, "backup": d.backup, "undone": d.undone,
            })
        })
        .collect()
}

/// The databases section of `rollout show`; empty for a rollout saved
/// before databases had names.
pub fn text(r: &Rollout) -> String {
    table(r).map(|t| format!("\n\ndatabases:\n{}", t.render())).unwrap_or_default()
}

/// One row per database; `None` for a rollout saved before databases had names.
pub fn table(r: &Rollout) -> Option<Table> {
    if r.databases.is_empty() {
        return None;
    }
    let mut table = Table::new(["host", "database", "state", "migrations applied", "backup"]).right(&[3]);
    for d in &r.databases {
        table.row([
            d.host.clone(),
            d.database.clone(),
            d.state.clone(),
            d.migrations_applied.to_string(),
            d.backup.clone(),
        ]);
    }
    Some(table)
}

/// `rolled back by migration: db-1/app: 2_b, 1_a` lines for `rollout show`.
pub fn undone_text(r: &Rollout) -> String {
    r.databases
        .iter()
        .filter(|d| !d.undone.is_empty())
        .map(|d| format!("\nrolled back by migration on {}/{}: {}", d.host, d.database, d.undone.join(", ")))
        .collect()
}

#[cfg(test)]
mod tests {
    use runway_proto::v1::RolloutDatabase;

    use super::*;

    #[test]
    fn one_line_per_database() {
        let db = |host: &str, database: &str, state: &str, applied| RolloutDatabase {
            host: host.into(),
            database: database.into(),
            state: state.into(),
            migrations_applied: applied,
            backup: String::new(),
            undone: Vec::new(),
        };
        let r = Rollout {
            databases: vec![db("db-1", "app", "restored", 0), db("db-2", "orders", "migrated", 2)],
            ..Rollout::default()
        };
        let shown = text(&r);
        let lines: Vec<&str> = shown.lines().filter(|l| l.contains("db-")).collect();
        assert_eq!(lines.len(), 2, "{shown}");
        assert!(
            lines[1].contains("orders") && lines[1].contains("migrated") && lines[1].contains('2'),
            "{shown}"
        );
        assert_eq!(json(&r)[1]["state"], "migrated");
        assert_eq!(text(&Rollout::default()), "");
    }
}
