//! Rollouts, their events and agents as text and JSON. The JSON field names
//! are a contract with scripts: add fields, never rename them.

use runway_proto::v1::{
    AgentInfo, ApprovalDecision, CommandOutcome, HostPreflight, PlanVerdict, RollbackRolloutResponse,
    Rollout, RolloutEvent, RolloutPlan, RolloutState, StepState,
};
use serde_json::{Value, json};

use super::{databases, plan_view};
use crate::output::Table;
use crate::output::progress::Step;

/// The first 12 characters of a bundle digest.
fn short(digest: &str) -> &str {
    &digest[..12.min(digest.len())]
}

/// An event as the progress reporter takes it.
pub fn event_step(e: &RolloutEvent) -> Step<'_> {
    Step {
        phase: &e.step,
        message: &e.message,
        counters: e.counters.as_ref().map(|c| (c.done, c.total, c.unit.as_str())),
        tick: e.kind == "progress" && e.counters.is_some(),
    }
}

/// `HH:MM:SS #seq step host: message [counters]`.
pub fn event_line(e: &RolloutEvent) -> String {
    let time = chrono::DateTime::from_timestamp_millis(e.unix_ms)
        .map(|t| t.with_timezone(&chrono::Local).format("%H:%M:%S").to_string())
        .unwrap_or_default();
    let place = match (e.step.as_str(), e.host.as_str()) {
        ("", _) => String::new(),
        (step, "") => format!("{step}: "),
        (step, host) => format!("{step} {host}: "),
    };
    let counters =
        e.counters.as_ref().map(|c| crate::output::counters(c.done, c.total, &c.unit)).unwrap_or_default();
    format!("{time} #{:<4} {place}{}{counters}", e.seq, e.message)
}

pub fn event_json(e: &RolloutEvent) -> Value {
    json!({
        "rollout_id": e.rollout_id,
        "seq": e.seq,
        "unix_ms": e.unix_ms,
        "kind": e.kind,
        "step": e.step,
        "host": e.host,
        "command_id": e.command_id,
        "phase": e.phase,
        "message": e.message,
        "counters": e.counters.as_ref().map(|c| json!({"done": c.done, "total": c.total, "unit": c.unit})),
        "terminal": e.terminal,
        "detail": serde_json::from_str::<Value>(&e.detail_json).unwrap_or(Value::Null),
        "work_ms": e.work_ms,
        "rollout_state": state_name(e.rollout_state),
    })
}

pub fn state_name(state: i32) -> &'static str {
    match RolloutState::try_from(state) {
        Ok(RolloutState::Pending) => "pending",
        Ok(RolloutState::Running) => "running",
        Ok(RolloutState::Succeeded) => "succeeded",
        Ok(RolloutState::Failed) => "failed",
        Ok(RolloutState::Cancelled) => "cancelled",
        Ok(RolloutState::RolledBack) => "rolled_back",
        Ok(RolloutState::AwaitingApproval) => "awaiting_approval",
        _ => "unknown",
    }
}

/// `2024-05-01 14:03:00` in local time.
fn local_time(unix_ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(unix_ms)
        .map(|t| t.with_timezone(&chrono::Local).format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default()
}

fn decision_json(d: &ApprovalDecision) -> Value {
    json!({ "operator": d.operator, "unix_ms": d.unix_ms, "comment": d.comment })
}

/// The approval gate as JSON: `null` where the rollout has none.
fn approval_json(r: &Rollout) -> Value {
    if r.approvals_needed == 0 && r.approvals.is_empty() && r.rejection.is_none() {
        return Value::Null;
    }
    json!({
        "needed": r.approvals_needed,
        "given": r.approvals.len(),
        "rule": r.approval_rule,
        "expires_unix_ms": r.approval_expires_unix_ms,
        "approvals": r.approvals.iter().map(decision_json).collect::<Vec<_>>(),
        "rejection": r.rejection.as_ref().map(decision_json),
    })
}

/// `rollout show`: the approval lines (none where the rollout has no gate).
fn approval_text(r: &Rollout) -> String {
    if approval_json(r).is_null() {
        return String::new();
    }
    let mut text =
        format!("approvals    {} of {} ({})\n", r.approvals.len(), r.approvals_needed, r.approval_rule);
    for a in &r.approvals {
        let comment = if a.comment.is_empty() { String::new() } else { format!(": {}", a.comment) };
        text.push_str(&format!("  approved   by {} at {}{comment}\n", a.operator, local_time(a.unix_ms)));
    }
    if let Some(rejection) = &r.rejection {
        text.push_str(&format!(
            "  rejected   by {} at {}: {}\n",
            rejection.operator,
            local_time(rejection.unix_ms),
            rejection.comment
        ));
    }
    if r.state == RolloutState::AwaitingApproval as i32 {
        text.push_str(&format!(
            "  waiting    for {} more until {}: `runway rollout approve {}` by another operator with the approve role\n",
            (r.approvals_needed as usize).saturating_sub(r.approvals.len()),
            local_time(r.approval_expires_unix_ms),
            r.id
        ));
    }
    text
}

fn step_state_name(state: i32) -> &'static str {
    match StepState::try_from(state) {
        Ok(StepState::Pending) => "pending",
        Ok(StepState::Running) => "running",
        Ok(StepState::Succeeded) => "succeeded",
        Ok(StepState::Failed) => "failed",
        Ok(StepState::Skipped) => "skipped",
        _ => "unknown",
    }
}

/// The state people read: `succeeded` becomes `monitoring` while the
/// analysis' `monitor` phase runs after success.
pub fn shown_state(r: &Rollout) -> &'static str {
    if r.monitor == "monitoring" && r.state == RolloutState::Succeeded as i32 {
        return "monitoring";
    }
    state_name(r.state)
}

pub fn rollout_json(r: &Rollout) -> Value {
    json!({
        "id": r.id,
        "environment": r.environment,
        "bundle_digest": r.bundle_digest,
        "app_version": r.app_version,
        "state": state_name(r.state),
        "error": r.error,
        "created_unix_ms": r.created_unix_ms,
        "updated_unix_ms": r.updated_unix_ms,
        "coordinator": r.coordinator,
        "trace_id": r.trace_id,
        "started_by": r.started_by,
        "allow_danger": r.allow_danger,
        "skipped_hosts": r.skipped_hosts,
        "backup": r.backup,
        "refused": r.refused,
        "plan": r.plan.as_ref().map(plan_view::json),
        "approval": approval_json(r),
        "steps": r.steps.iter().map(|s| json!({
            "name": s.name, "state": step_state_name(s.state), "hosts": s.hosts, "error": s.error, "attempt": s.attempt,
        })).collect::<Vec<_>>(),
        "notifications": r.notifications.iter().map(|n| json!({
            "webhook": n.webhook, "event": n.event, "outcome": n.outcome, "attempts": n.attempts,
            "error": n.error, "unix_ms": n.unix_ms,
        })).collect::<Vec<_>>(),
        "databases": databases::json(r),
        "monitor": (!r.monitor.is_empty()).then(|| json!({
            "state": r.monitor, "until_unix_ms": r.monitor_until_unix_ms, "reason": r.monitor_reason,
        })),
    })
}

/// `rollout show`: the rollout, then its steps as a table.
pub fn rollout_text(r: &Rollout) -> String {
    let mut text =
        format!("rollout      {}\nenvironment  {}\nbundle       {}\n", r.id, r.environment, r.bundle_digest);
    if !r.app_version.is_empty() {
        text.push_str(&format!("app version  {}\n", r.app_version));
    }
    text.push_str(&format!("state        {}\n", shown_state(r)));
    if !r.monitor.is_empty() {
        let until = chrono::DateTime::from_timestamp_millis(r.monitor_until_unix_ms)
            .map_or_else(String::new, |t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string());
        let reason =
            if r.monitor_reason.is_empty() { String::new() } else { format!(": {}", r.monitor_reason) };
        text.push_str(&format!("monitor      {} (until {until}){reason}\n", r.monitor));
    }
    if !r.error.is_empty() {
        text.push_str(&format!("error        {}\n", r.error));
    }
    if !r.started_by.is_empty() {
        text.push_str(&format!("started by   {}\n", r.started_by));
    }
    text.push_str(&approval_text(r));
    if !r.allow_danger.is_empty() {
        text.push_str(&format!("accepted     {} (--allow-danger)\n", r.allow_danger.join(", ")));
    }
    if !r.skipped_hosts.is_empty() {
        text.push_str(&format!("skipped      {} (--skip-host)\n", r.skipped_hosts.join(", ")));
    }
    text.push_str(&format!("coordinator  {}\n", r.coordinator));
    if !r.backup.is_empty() {
        text.push_str(&format!("backup       {}\n", r.backup));
    }
    if let Some(plan) = &r.plan {
        text.push_str(&plan_view::text(plan));
    }
    let mut steps = Table::new(["step", "state", "attempt", "hosts", "error"]).right(&[2]);
    for s in &r.steps {
        steps.row([
            s.name.clone(),
            step_state_name(s.state).to_owned(),
            s.attempt.to_string(),
            s.hosts.join(","),
            s.error.clone(),
        ]);
    }
    text.push('\n');
    text.push_str(&steps.render());
    text.push_str(&databases::text(r));
    text.push_str(&databases::undone_text(r));
    if !r.notifications.is_empty() {
        let mut table = Table::new(["webhook", "event", "outcome", "attempts", "error"]);
        for n in &r.notifications {
            table.row([
                n.webhook.clone(),
                n.event.clone(),
                n.outcome.clone(),
                n.attempts.to_string(),
                n.error.clone(),
            ]);
        }
        text.push_str(&format!("\n\nnotifications:\n{}", table.render()));
    }
    text
}

fn verdict_name(verdict: PlanVerdict) -> &'static str {
    match verdict {
        PlanVerdict::Safe => "safe",
        PlanVerdict::NeedsMaintenance => "needs_maintenance",
        PlanVerdict::DangerRefused => "danger_refused",
        PlanVerdict::Blocked => "blocked",
        PlanVerdict::PreflightFailed => "preflight_failed",
        PlanVerdict::PolicyRefused => "policy_refused",
        PlanVerdict::Unspecified => "unknown",
    }
}

/// `ok`, `refused`, `failed`, `interrupted`, or `no answer`.
fn answer_name(h: &HostPreflight) -> &'static str {
    match h.result.as_ref().map(|r| CommandOutcome::try_from(r.outcome)) {
        None => "no answer",
        Some(Ok(CommandOutcome::Succeeded)) => "ok",
        Some(Ok(CommandOutcome::Refused)) => "refused",
        Some(Ok(CommandOutcome::Interrupted)) => "interrupted",
        Some(_) => "failed",
    }
}

/// A host's result detail as JSON (`null` without one).
fn host_detail(h: &HostPreflight) -> Value {
    h.result.as_ref().and_then(|r| serde_json::from_str(&r.detail_json).ok()).unwrap_or(Value::Null)
}

/// The DB agent's detail: the first with a plan.
fn db_detail(p: &RolloutPlan) -> Value {
    let db = p.hosts.iter().find(|h| h.result.as_ref().is_some_and(|r| r.plan.is_some()));
    db.map(host_detail).unwrap_or(Value::Null)
}

/// `rollout plan`: steps and hosts, each host's answer, the DB agent's
/// plan ([`plan_text`]), the disk check and the verdict with its reasons.
pub fn rollout_plan_text(p: &RolloutPlan) -> String {
    let mut text = format!("environment  {}\nbundle       {}\n", p.environment, p.bundle_digest);
    if !p.allow_danger.is_empty() {
        text.push_str(&format!("accepted     {} (--allow-danger)\n", p.allow_danger.join(", ")));
    }
    let mut steps = Table::new(["step", "hosts"]);
    for s in &p.steps {
        let name = if s.state == runway_proto::v1::StepState::Skipped as i32 {
            format!("{} (skipped)", s.name)
        } else {
            s.name.clone()
        };
        steps.row([name, s.hosts.join(",")]);
    }
    text.push_str(&format!("\nsteps a rollout would run now:\n{}\n", steps.render()));
    for line in p.restart_policy.iter().chain(&p.database_policy) {
        text.push_str(&format!("policy       {line}\n"));
    }
    text.push('\n');
    let mut hosts = Table::new(["host", "preflight", "answer"]);
    for h in &p.hosts {
        let detail = host_detail(h);
        let answer = match &h.result {
            None => h.error.clone(),
            Some(r) if !r.error.is_empty() => r.error.lines().next().unwrap_or_default().to_owned(),
            Some(_) => match (detail["server_version"].as_str(), detail["health"].as_str()) {
                (Some(version), _) => format!("database reachable: {version}"),
                (None, Some(health)) => format!("healthy: {health}"),
                _ => String::new(),
            },
        };
        hosts.row([h.host.clone(), answer_name(h).to_owned(), answer]);
    }
    text.push_str(&format!("{}\n\n", hosts.render()));
    let detail = db_detail(p);
    if let Some(plan) = &p.plan {
        text.push_str(&plan_view::text(plan));
    } else {
        text.push_str("plan         none: the DB agent's preflight stopped before it had one\n");
    }
    let space = &detail["space"];
    match (space["free_bytes"].as_u64(), space["needed_bytes"].as_u64()) {
        (Some(free), Some(needed)) => text.push_str(&format!(
            "disk         {} free for backups; a backup of this {} database needs {}\n",
            crate::output::bytes(free),
            crate::output::bytes(space["database_bytes"].as_u64().unwrap_or(0)),
            crate::output::bytes(needed)
        )),
        _ => text.push_str("disk         not checked: preflight stopped before the disk check\n"),
    }
    for line in &p.policies {
        text.push_str(&format!("policy       {line}\n"));
    }
    let backup = &detail["backup"];
    if !backup.is_null() {
        let secs = |v: &Value| v.as_f64().map_or_else(|| "unknown".to_owned(), |s| format!("{s:.1} s"));
        let proof = match backup["proof"].as_str() {
            Some("in_window") => "test restore in the window, alongside the dump",
            Some("background") => "test restore after the window (the rollout waits for it)",
            _ => "no test restore",
        };
        let based = backup["based_on"]
            .as_str()
            .map_or_else(|| "no earlier backup".to_owned(), |b| format!("last backup {b}"));
        text.push_str(&format!(
            "backup       {proof}; expected dump {}, test restore {}, in the window {} ({based})\n",
            secs(&backup["backup_secs"]),
            secs(&backup["verify_secs"]),
            secs(&backup["window_secs"])
        ));
    }
    let verdict = PlanVerdict::try_from(p.verdict).unwrap_or(PlanVerdict::Unspecified);
    let headline = match verdict {
        PlanVerdict::Safe => "safe: runs without maintenance mode, nothing refused",
        PlanVerdict::NeedsMaintenance => "runs, and needs maintenance mode:",
        PlanVerdict::DangerRefused => "the danger gate would refuse the rollout:",
        PlanVerdict::Blocked => "deploy would refuse:",
        PlanVerdict::PreflightFailed => "the rollout would fail in preflight:",
        PlanVerdict::PolicyRefused => "an environment policy would refuse the rollout:",
        PlanVerdict::Unspecified => "unknown (the coordinator is newer than this CLI)",
    };
    text.push_str(&format!("verdict      {headline}\n"));
    for reason in &p.reasons {
        for line in reason.lines() {
            text.push_str(&format!("  {}\n", line.trim_start()));
        }
    }
    text
}

/// `rollout plan --output json`: one object.
pub fn rollout_plan_json(p: &RolloutPlan, exit: crate::exit::Exit) -> Value {
    let detail = db_detail(p);
    let plan = p.plan.as_ref();
    json!({
        "plan_id": p.plan_id,
        "environment": p.environment,
        "bundle_digest": p.bundle_digest,
        "allow_danger": p.allow_danger,
        "steps": p.steps.iter().map(|s| json!({
            "name": s.name,
            "hosts": s.hosts,
            "skipped": s.state == runway_proto::v1::StepState::Skipped as i32,
        })).collect::<Vec<_>>(),
        "hosts": p.hosts.iter().map(|h| json!({
            "host": h.host,
            "answer": answer_name(h),
            "command_id": h.result.as_ref().map(|r| r.command_id.as_str()),
            "error": h.result.as_ref().map(|r| r.error.as_str()).unwrap_or(&h.error),
            "detail": host_detail(h),
        })).collect::<Vec<_>>(),
        "pending": plan.map(|p| p.pending.clone()),
        "maintenance_needed": plan.map(|p| !p.safe_without_maintenance),
        "downs": plan.map(plan_view::downs_json),
        "plan": plan.map(plan_view::json),
        "space": detail["space"],
        "backup": detail["backup"],
        "unaccepted_dangers": detail["unaccepted_dangers"],
        "verdict": verdict_name(PlanVerdict::try_from(p.verdict).unwrap_or(PlanVerdict::Unspecified)),
        "reasons": p.reasons,
        "restart_policy": p.restart_policy,
        "database_policy": p.database_policy,
        "policies": p.policies,
        "exit_code": exit.code(),
    })
}

/// `rollout rollback` without `--yes`: which way it would roll back, and
/// what each way would lose on each database.
pub fn rollback_preview_text(id: &str, p: &RollbackRolloutResponse) -> String {
    let mut text = format!("rollout {id} would be rolled back by {} ({}).\n", p.way, p.why);
    for loss in &p.losses {
        text.push_str(&format!("\n{}:\n", loss.database));
        text.push_str("  by migration, the rows written since stay; what the rollout created goes:\n");
        if loss.by_migration.is_empty() {
            text.push_str("    nothing that holds data\n");
        }
        for line in &loss.by_migration {
            text.push_str(&format!("    {line}\n"));
        }
        text.push_str("  by restore, every write since the backup is lost (updates too):\n");
        if loss.by_restore.is_empty() {
            text.push_str("    no table's row count changed since the backup\n");
        }
        for line in &loss.by_restore {
            text.push_str(&format!("    {line}\n"));
        }
        for line in &loss.errors {
            text.push_str(&format!("  unknown: {line}\n"));
        }
    }
    text
}

/// `rollout rollback --output json` without `--yes`.
pub fn rollback_preview_json(p: &RollbackRolloutResponse) -> Value {
    json!({
        "way": p.way,
        "why": p.why,
        "losses": p.losses.iter().map(|l| json!({
            "database": l.database,
            "by_migration": l.by_migration,
            "by_restore": l.by_restore,
            "errors": l.errors,
        })).collect::<Vec<_>>(),
    })
}

/// `rollout list`: one row per rollout.
pub fn rollouts_table(rollouts: &[Rollout]) -> Table {
    let mut table = Table::new(["id", "environment", "state", "bundle", "app version", "error"]);
    for r in rollouts {
        table.row([
            r.id.as_str(),
            r.environment.as_str(),
            shown_state(r),
            short(&r.bundle_digest),
            r.app_version.as_str(),
            r.error.as_str(),
        ]);
    }
    table
}

/// `rollout approve` and `reject`: where the gate stands now.
pub fn decided_line(r: &Rollout, rejected: bool) -> String {
    if rejected {
        return format!("rollout {} rejected: it ends cancelled; nothing was changed", r.id);
    }
    let (given, needed) = (r.approvals.len(), r.approvals_needed as usize);
    if given >= needed {
        format!("rollout {} approved ({given} of {needed}): it runs on", r.id)
    } else {
        format!("rollout {} approved ({given} of {needed}): it waits for {} more", r.id, needed - given)
    }
}

/// `rollout start`: what was started.
pub fn started_line(r: &Rollout) -> String {
    let trace = if r.trace_id.is_empty() { String::new() } else { format!(" (trace {})", r.trace_id) };
    format!("rollout {} started: bundle {} to {}{trace}", r.id, short(&r.bundle_digest), r.environment)
}

pub fn agent_json(a: &AgentInfo) -> Value {
    json!({
        "name": a.name, "environment": a.environment, "roles": a.roles, "labels": a.labels,
        "runway_version": a.runway_version, "app_version": a.app_version, "databases": a.databases,
        "connected_unix_ms": a.connected_unix_ms, "last_seen_unix_ms": a.last_seen_unix_ms,
    })
}

/// `agents`: one row per agent.
pub fn agents_table(agents: &[AgentInfo]) -> Table {
    let mut table = Table::new(["name", "environment", "roles", "app version", "runway version"]);
    for a in agents {
        let app = if a.app_version.is_empty() { "-" } else { &a.app_version };
        table.row([
            a.name.as_str(),
            a.environment.as_str(),
            &a.roles.join(","),
            app,
            a.runway_version.as_str(),
        ]);
    }
    table
}

#[cfg(test)]
mod tests {
    use runway_proto::v1::{CommandResult, Step};

    use super::*;
    use crate::exit::Exit;

    fn refused_plan() -> RolloutPlan {
        use runway_proto::v1;
        let plan = v1::MigrationPlan {
            pending: vec!["2_drop".into()],
            safe_without_maintenance: false,
            findings: vec![v1::LintFinding {
                migration: "2_drop".into(),
                line: 2,
                severity: v1::Severity::Danger as i32,
                rule: "drop-column".into(),
                table: "User".into(),
                message: "drops data".into(),
                ..v1::LintFinding::default()
            }],
            tables: vec![v1::TableSize {
                table: "User".into(),
                exists: true,
                total_bytes: 3 * 1024 * 1024,
                ..v1::TableSize::default()
            }],
            downtime: Some(v1::Downtime {
                class: v1::DowntimeClass::Small as i32,
                estimated_seconds: None,
                reason: "under a minute".into(),
            }),
            downs: vec![v1::DownProof {
                migration: "2_drop".into(),
                state: v1::DownState::Differs as i32,
                detail: "missing COLUMN".into(),
            }],
            ..v1::MigrationPlan::default()
        };
        let detail = json!({ "unaccepted_dangers": [{ "rule": "drop-column" }] });
        RolloutPlan {
            plan_id: "plan-1".into(),
            environment: "staging".into(),
            bundle_digest: "abc".into(),
            allow_danger: vec![],
            steps: vec![Step { name: "preflight".into(), hosts: vec!["db-1".into()], ..Step::default() }],
            hosts: vec![HostPreflight {
                host: "db-1".into(),
                result: Some(CommandResult {
                    command_id: "plan-1/preflight/db-1/1".into(),
                    outcome: CommandOutcome::Refused as i32,
                    error: "1 dangerous statement(s) need an explicit decision before anything changes:\n  2_drop line 2: drop-column on User (3 MiB): drops data".into(),
                    detail_json: detail.to_string(),
                    plan: Some(Box::new(plan.clone())),
                    work_ms: 0,
                }),
                error: String::new(),
            }],
            plan: Some(plan),
            verdict: PlanVerdict::DangerRefused as i32,
            reasons: vec!["1 dangerous statement(s) …\n  2_drop line 2: drop-column on User".into()],
            restart_policy: vec!["restart order: canary [app-1] → [app-2, app-3]".into()],
            database_policy: Vec::new(),
            policies: vec!["maintenance: maintenance = \"always\": maintenance mode goes on".into()],
        }
    }

    fn awaiting() -> Rollout {
        Rollout {
            id: "r1".into(),
            environment: "production".into(),
            state: RolloutState::AwaitingApproval as i32,
            started_by: "alice".into(),
            approvals_needed: 2,
            approvals: vec![ApprovalDecision { operator: "bob".into(), unix_ms: 1, comment: "ok".into() }],
            approval_expires_unix_ms: 86_400_000,
            approval_rule: "approvals.danger: it accepts Danger finding(s) drop-column (--allow-danger)"
                .into(),
            ..Rollout::default()
        }
    }

    #[test]
    fn a_rollout_awaiting_approval_shows_who_approved_and_what_is_missing() {
        let text = rollout_text(&awaiting());
        for needle in [
            "state        awaiting_approval",
            "approvals    1 of 2 (approvals.danger: it accepts Danger finding(s) drop-column (--allow-danger))",
            "  approved   by bob at ",
            ": ok",
            "  waiting    for 1 more until ",
            "`runway rollout approve r1`",
        ] {
            assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
        }
        let json = rollout_json(&awaiting());
        assert_eq!(json["state"], "awaiting_approval");
        assert_eq!(json["approval"]["needed"], 2);
        assert_eq!(json["approval"]["given"], 1);
        assert_eq!(json["approval"]["approvals"][0]["operator"], "bob");
        assert_eq!(json["approval"]["rejection"], Value::Null);
        assert_eq!(decided_line(&awaiting(), false), "rollout r1 approved (1 of 2): it waits for 1 more");
        // No gate: nothing shown, `null` in JSON.
        let plain = Rollout { id: "r2".into(), ..Rollout::default() };
        assert!(!rollout_text(&plain).contains("approvals"));
        assert_eq!(rollout_json(&plain)["approval"], Value::Null);
        let rejected = Rollout {
            state: RolloutState::Cancelled as i32,
            rejection: Some(ApprovalDecision {
                operator: "carol".into(),
                unix_ms: 2,
                comment: "not today".into(),
            }),
            ..awaiting()
        };
        let text = rollout_text(&rejected);
        assert!(text.contains("  rejected   by carol at ") && text.contains(": not today"), "{text}");
        assert!(!text.contains("waiting"), "{text}");
    }

    #[test]
    fn a_refused_plan_names_findings_sizes_disk_and_verdict() {
        let text = rollout_plan_text(&refused_plan());
        for needle in [
            "preflight  db-1",
            "db-1  refused",
            "2_drop",
            "drop-column",
            &crate::output::bytes(3 * 1024 * 1024),
            "maintenance  needed",
            "rollback     by restore only: not proven: 2_drop (differs)",
            "disk         not checked",
            "verdict      the danger gate would refuse the rollout:",
            "  2_drop line 2: drop-column on User",
            "policy       restart order: canary [app-1] → [app-2, app-3]",
        ] {
            assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
        }
        let json = rollout_plan_json(&refused_plan(), Exit::Invalid);
        assert_eq!(json["verdict"], "danger_refused");
        assert_eq!(json["exit_code"], 2);
        assert_eq!(json["pending"], json!(["2_drop"]));
        assert_eq!(json["maintenance_needed"], true);
        assert_eq!(
            json["downs"],
            json!([{ "migration": "2_drop", "state": "differs", "detail": "missing COLUMN" }])
        );
        assert_eq!(json["hosts"][0]["answer"], "refused");
        assert_eq!(json["unaccepted_dangers"][0]["rule"], "drop-column");
        assert_eq!(json["restart_policy"][0], "restart order: canary [app-1] → [app-2, app-3]");
    }
}
