//! The danger gate: lint findings of severity Danger stop a rollout before
//! anything changes, unless the operator accepted their rule for it.

use serde::Serialize;

use super::lint::{Finding, LintReport, Severity, TableStats};

/// A Danger finding nobody accepted, as the refusal names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unaccepted {
    pub migration: String,
    pub line: usize,
    /// The statement's first line, shortened (see [`Finding::statement`]).
    pub statement: String,
    pub rule: String,
    pub table: Option<String>,
    /// `11.8 MiB`, when the table exists and its size is known.
    pub table_size: Option<String>,
    pub message: String,
}

/// The Danger findings of `lint` whose rule is not in `accepted`.
pub fn unaccepted(lint: &LintReport, accepted: &[String]) -> Vec<Unaccepted> {
    lint.findings
        .iter()
        .filter(|f| f.severity == Severity::Danger && !accepted.iter().any(|a| a == f.rule))
        .map(|f| Unaccepted {
            migration: f.migration.clone(),
            line: f.line,
            statement: f.statement.clone(),
            rule: f.rule.to_owned(),
            table: f.table.clone(),
            table_size: size_of(f, &lint.tables),
            message: f.message.clone(),
        })
        .collect()
}

fn size_of(finding: &Finding, tables: &[TableStats]) -> Option<String> {
    let table = finding.table.as_deref()?;
    tables
        .iter()
        .find(|t| t.table == table && t.exists)
        .map(|t| super::lint::size::human_bytes(t.total_bytes))
}

/// One line per finding, then the flags that accept them.
pub fn refusal(findings: &[Unaccepted]) -> String {
    let mut text = format!(
        "{} dangerous statement(s) need an explicit decision before anything changes:",
        findings.len()
    );
    for f in findings {
        let table = match (&f.table, &f.table_size) {
            (Some(t), Some(size)) => format!(" on {t} ({size})"),
            (Some(t), None) => format!(" on {t}"),
            _ => String::new(),
        };
        text.push_str(&format!("\n  {} line {}: {}{table}: {}", f.migration, f.line, f.rule, f.message));
        if !f.statement.is_empty() {
            text.push_str(&format!("\n    {}", f.statement));
        }
    }
    let mut rules: Vec<&str> = findings.iter().map(|f| f.rule.as_str()).collect();
    rules.sort_unstable();
    rules.dedup();
    let flags: Vec<String> = rules.iter().map(|r| format!("--allow-danger {r}")).collect();
    text.push_str(&format!("\nTo accept, start the rollout again with {}", flags.join(" ")));
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::migrate::lint;
    use runway_proto::bundle::MigrationFile;

    fn report(sql: &str) -> LintReport {
        let file = MigrationFile { name: "2_drop".into(), sql: sql.into(), down: None };
        lint::lint_files(&[&file])
    }

    #[test]
    fn names_each_unaccepted_finding_and_the_flag_that_accepts_it() {
        let lint = report("ALTER TABLE \"Post\" DROP COLUMN \"title\";\n");
        let open = unaccepted(&lint, &[]);
        assert_eq!(open.len(), 1, "{open:?}");
        assert_eq!(open[0].rule, "drop-column");
        assert_eq!(open[0].line, 1);
        let text = refusal(&open);
        assert!(text.contains("2_drop line 1: drop-column on"), "{text}");
        assert!(text.contains("\n    ALTER TABLE \"Post\" DROP COLUMN \"title\"\n"), "{text}");
        assert!(text.contains("--allow-danger drop-column"), "{text}");
        assert!(unaccepted(&lint, &["drop-column".into()]).is_empty());
    }

    #[test]
    fn warnings_pass_the_gate() {
        let lint = report("CREATE INDEX i ON \"Post\" (id);\n");
        assert!(unaccepted(&lint, &[]).is_empty());
    }
}
