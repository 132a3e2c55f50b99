//! How a migration file is sent to the server.
//!
//! Like Prisma, a file normally goes as one simple-query script: PostgreSQL
//! runs its statements in one implicit transaction, and files with their own
//! `BEGIN`/`COMMIT` keep working. Some statements refuse to run inside any
//! transaction block, implicit ones included (`CREATE INDEX CONCURRENTLY`,
//! `VACUUM`, …). When a file holds such a statement outside an explicit
//! `BEGIN … COMMIT`, the file is cut at statement boundaries found by the
//! real grammar: the statements before it go as one script, it goes alone,
//! then the rest; dollar-quoted bodies, strings and comments are never cut.

use std::ops::Range;

use pg_query::NodeEnum;
use pg_query::protobuf::{AlterTableType, ReindexObjectType, TransactionStmtKind};

use super::parse::Statement;

/// One piece of a file to send as a single simple query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// Byte range of the file.
    pub range: Range<usize>,
    /// Why this statement is sent on its own, if it is.
    pub alone: Option<&'static str>,
}

/// Cuts a parsed file into segments. One segment covering the whole file
/// when nothing needs to run outside a transaction block.
pub fn segments(sql: &str, stmts: &[Statement]) -> Vec<Segment> {
    let mut in_block = false;
    let mut needs_cut = false;
    for stmt in stmts {
        if !in_block && must_run_alone(&stmt.node).is_some() {
            needs_cut = true;
        }
        in_block = block_state_after(&stmt.node, in_block);
    }
    if !needs_cut {
        return vec![Segment { range: 0..sql.len(), alone: None }];
    }

    let mut out = Vec::new();
    let mut batch: Option<Range<usize>> = None;
    let mut in_block = false;
    for stmt in stmts {
        let reason = if in_block { None } else { must_run_alone(&stmt.node) };
        if let Some(reason) = reason {
            if let Some(range) = batch.take() {
                out.push(Segment { range, alone: None });
            }
            out.push(Segment { range: stmt.start..stmt.end, alone: Some(reason) });
        } else {
            match &mut batch {
                Some(range) => range.end = stmt.end,
                None => batch = Some(stmt.start..stmt.end),
            }
        }
        in_block = block_state_after(&stmt.node, in_block);
    }
    if let Some(range) = batch {
        out.push(Segment { range, alone: None });
    }
    out
}

/// Whether the file leaves an explicit transaction open at its end; returns
/// the line of the unmatched `BEGIN`.
pub fn unclosed_block(stmts: &[Statement]) -> Option<usize> {
    let mut open_at = None;
    for stmt in stmts {
        let before = open_at.is_some();
        let after = block_state_after(&stmt.node, before);
        if !before && after {
            open_at = Some(stmt.line);
        } else if !after {
            open_at = None;
        }
    }
    open_at
}

/// Whether the file has its own transaction control (`BEGIN`, `COMMIT`, …):
/// then a failure part-way can leave what an earlier `COMMIT` committed.
pub fn controls_transactions(stmts: &[Statement]) -> bool {
    stmts.iter().any(|s| matches!(s.node, NodeEnum::TransactionStmt(_)))
}

/// Whether an explicit transaction block is open after `node`.
fn block_state_after(node: &NodeEnum, in_block: bool) -> bool {
    let NodeEnum::TransactionStmt(t) = node else { return in_block };
    match TransactionStmtKind::try_from(t.kind) {
        Ok(TransactionStmtKind::TransStmtBegin | TransactionStmtKind::TransStmtStart) => true,
        Ok(TransactionStmtKind::TransStmtCommit | TransactionStmtKind::TransStmtRollback) => t.chain,
        Ok(TransactionStmtKind::TransStmtPrepare) => false,
        _ => in_block,
    }
}

fn has_option(options: &[pg_query::Node], name: &str) -> bool {
    options.iter().any(|o| matches!(&o.node, Some(NodeEnum::DefElem(d)) if d.defname == name))
}

/// Why `node` cannot run inside a transaction block (implicit or not), if
/// it cannot.
pub fn must_run_alone(node: &NodeEnum) -> Option<&'static str> {
    match node {
        NodeEnum::IndexStmt(s) if s.concurrent => Some("CREATE INDEX CONCURRENTLY"),
        NodeEnum::DropStmt(s) if s.concurrent => Some("DROP INDEX CONCURRENTLY"),
        NodeEnum::ReindexStmt(s) if has_option(&s.params, "concurrently") => Some("REINDEX CONCURRENTLY"),
        NodeEnum::ReindexStmt(s)
            if matches!(
                ReindexObjectType::try_from(s.kind),
                Ok(ReindexObjectType::ReindexObjectSystem | ReindexObjectType::ReindexObjectDatabase)
            ) =>
        {
            Some("REINDEX SYSTEM/DATABASE")
        }
        NodeEnum::VacuumStmt(s) if s.is_vacuumcmd => Some("VACUUM"),
        NodeEnum::CreatedbStmt(_) => Some("CREATE DATABASE"),
        NodeEnum::DropdbStmt(_) => Some("DROP DATABASE"),
        NodeEnum::CreateTableSpaceStmt(_) => Some("CREATE TABLESPACE"),
        NodeEnum::DropTableSpaceStmt(_) => Some("DROP TABLESPACE"),
        NodeEnum::AlterSystemStmt(_) => Some("ALTER SYSTEM"),
        NodeEnum::ClusterStmt(s) if s.relation.is_none() => Some("CLUSTER without a table"),
        NodeEnum::CreateSubscriptionStmt(_) | NodeEnum::DropSubscriptionStmt(_) => {
            Some("subscription commands")
        }
        // Before PostgreSQL 12 it fails in a transaction block; from 12 on the
        // new value cannot be used until committed. Alone works everywhere.
        NodeEnum::AlterEnumStmt(s) if s.old_val.is_empty() && !s.new_val.is_empty() => {
            Some("ALTER TYPE … ADD VALUE")
        }
        // Procedures may COMMIT, which needs a non-atomic context.
        NodeEnum::CallStmt(_) => Some("CALL"),
        NodeEnum::AlterTableStmt(s) => s
            .cmds
            .iter()
            .any(|c| match &c.node {
                Some(NodeEnum::AlterTableCmd(cmd)) => {
                    cmd.subtype == AlterTableType::AtDetachPartition as i32
                        && matches!(cmd.def.as_deref().and_then(|d| d.node.as_ref()),
                            Some(NodeEnum::PartitionCmd(p)) if p.concurrent)
                }
                _ => false,
            })
            .then_some("DETACH PARTITION CONCURRENTLY"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::migrate::parse::parse;

    fn texts(sql: &str) -> Vec<(&str, bool)> {
        let stmts = parse(sql).unwrap();
        segments(sql, &stmts).into_iter().map(|s| (sql[s.range].trim(), s.alone.is_some())).collect()
    }

    #[test]
    fn a_plain_file_is_one_script() {
        let sql = "CREATE TABLE a (id int);\nCREATE INDEX a_id ON a (id);\n";
        assert_eq!(texts(sql), [(sql.trim(), false)]);
    }

    #[test]
    fn concurrently_runs_alone_between_batches() {
        let sql = "CREATE TABLE a (id int);\nINSERT INTO a VALUES (1);\nCREATE INDEX CONCURRENTLY a_id ON a (id);\n\
                   CREATE FUNCTION f() RETURNS int AS $$ SELECT 1; $$ LANGUAGE sql;\nVACUUM a;\n";
        assert_eq!(
            texts(sql),
            [
                ("CREATE TABLE a (id int);\nINSERT INTO a VALUES (1)", false),
                ("CREATE INDEX CONCURRENTLY a_id ON a (id)", true),
                ("CREATE FUNCTION f() RETURNS int AS $$ SELECT 1; $$ LANGUAGE sql", false),
                ("VACUUM a", true),
            ]
        );
    }

    #[test]
    fn explicit_blocks_are_left_alone() {
        let sql = "BEGIN;\nALTER TYPE mood ADD VALUE 'meh';\nCOMMIT;\n";
        assert_eq!(texts(sql).len(), 1);
        let stmts = parse("BEGIN;\nCREATE TABLE a (id int);\n").unwrap();
        assert_eq!(unclosed_block(&stmts), Some(1));
        let stmts = parse("BEGIN;\nCREATE TABLE a (id int);\nCOMMIT;\n").unwrap();
        assert_eq!(unclosed_block(&stmts), None);
    }

    #[test]
    fn recognises_statements_that_refuse_transactions() {
        for sql in [
            "DROP INDEX CONCURRENTLY i",
            "REINDEX INDEX CONCURRENTLY i",
            "ALTER TYPE mood ADD VALUE IF NOT EXISTS 'x' BEFORE 'y'",
            "VACUUM (ANALYZE) t",
            "ALTER TABLE p DETACH PARTITION c CONCURRENTLY",
            "CREATE DATABASE x",
        ] {
            let stmts = parse(sql).unwrap();
            assert!(must_run_alone(&stmts[0].node).is_some(), "{sql}");
        }
        for sql in ["ANALYZE t", "ALTER TYPE mood RENAME VALUE 'a' TO 'b'", "CREATE INDEX i ON t (a)"] {
            let stmts = parse(sql).unwrap();
            assert!(must_run_alone(&stmts[0].node).is_none(), "{sql}");
        }
    }
}
