//! The one place where a [`PlanReport`] becomes the wire's
//! [`v1::MigrationPlan`]: the DB agent decides the plan with the engine,
//! and everyone after it (coordinator policies, approvals, recovery, the
//! CLI) reads the typed message.

use runway_proto::v1;

use super::lint::{DowntimeClass, Finding, Severity};
use super::plan::PlanReport;
use super::predict::{Certainty, DataFinding};
use super::prove::DownState;

impl From<&PlanReport> for v1::MigrationPlan {
    fn from(plan: &PlanReport) -> Self {
        let lint = &plan.lint;
        Self {
            pending: plan.pending.clone(),
            findings: lint.findings.iter().map(finding).collect(),
            parse_errors: lint
                .parse_errors
                .iter()
                .map(|p| v1::SqlParseFailure {
                    migration: p.migration.clone(),
                    line: p.line as u32,
                    message: p.message.clone(),
                })
                .collect(),
            tables: lint
                .tables
                .iter()
                .map(|t| v1::TableSize {
                    table: t.table.clone(),
                    exists: t.exists,
                    heap_bytes: t.heap_bytes,
                    total_bytes: t.total_bytes,
                    estimated_rows: t.estimated_rows,
                })
                .collect(),
            downtime: Some(v1::Downtime {
                class: downtime_class(lint.downtime.class) as i32,
                estimated_seconds: lint.downtime.estimated_seconds,
                reason: lint.downtime.reason.clone(),
            }),
            safe_without_maintenance: plan.safe_without_maintenance,
            reasons: plan.reasons.clone(),
            blocked: plan.blocked.clone().unwrap_or_default(),
            downs: plan
                .downs
                .downs
                .iter()
                .map(|d| v1::DownProof {
                    migration: d.migration.clone(),
                    state: down_state(d.state) as i32,
                    detail: d.detail.clone(),
                })
                .collect(),
            downs_ms: plan.downs.ms,
            applied: plan.status.applied.len() as u32,
            failed: plan.status.failed.iter().map(|f| f.name.clone()).collect(),
            modified: plan.status.modified.clone(),
            missing_locally: plan.status.missing_locally.clone(),
            data: plan.data.findings.iter().map(data_finding).collect(),
            data_checks: plan.data.checks as u32,
            data_ms: plan.data.ms,
        }
    }
}

fn data_finding(f: &DataFinding) -> v1::DataFinding {
    v1::DataFinding {
        certainty: match f.certainty {
            Certainty::WillFail => v1::Certainty::WillFail,
            Certainty::MayFail => v1::Certainty::MayFail,
            Certainty::Unknown => v1::Certainty::Unknown,
        } as i32,
        kind: f.kind.clone(),
        migration: f.migration.clone(),
        line: f.line as u32,
        table: f.table.clone(),
        columns: f.columns.clone(),
        count: f.count,
        examples: f.examples.clone(),
        query: f.query.clone(),
        message: f.message.clone(),
    }
}

fn finding(f: &Finding) -> v1::LintFinding {
    v1::LintFinding {
        migration: f.migration.clone(),
        line: f.line as u32,
        statement: f.statement.clone(),
        rule: f.rule.to_owned(),
        severity: severity(f.severity) as i32,
        lock: f.lock.to_owned(),
        table: f.table.clone().unwrap_or_default(),
        work: serde_json::to_value(f.work)
            .ok()
            .and_then(|w| w.as_str().map(str::to_owned))
            .unwrap_or_default(),
        message: f.message.clone(),
        estimated_seconds: f.estimated_seconds,
    }
}

fn severity(s: Severity) -> v1::Severity {
    match s {
        Severity::Info => v1::Severity::Info,
        Severity::Warning => v1::Severity::Warning,
        Severity::Danger => v1::Severity::Danger,
    }
}

fn downtime_class(c: DowntimeClass) -> v1::DowntimeClass {
    match c {
        DowntimeClass::Small => v1::DowntimeClass::Small,
        DowntimeClass::Medium => v1::DowntimeClass::Medium,
        DowntimeClass::Large => v1::DowntimeClass::Large,
        DowntimeClass::Unknown => v1::DowntimeClass::Unknown,
    }
}

/// The wire form of a down's state.
pub fn down_state(s: DownState) -> v1::DownState {
    match s {
        DownState::Proven => v1::DownState::Proven,
        DownState::Missing => v1::DownState::Missing,
        DownState::Fails => v1::DownState::Fails,
        DownState::Differs => v1::DownState::Differs,
        DownState::Unproven => v1::DownState::Unproven,
    }
}
