//! Rollouts, their events and agents as text and JSON. The JSON field names
//! are a contract with scripts: add fields, never rename them.

use runway_proto::v1::{AgentInfo, Rollout, RolloutEvent, RolloutState, StepState};
use serde_json::{Value, json};

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
        _ => "unknown",
    }
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
        "started_by": r.started_by,
        "allow_danger": r.allow_danger,
        "backup": r.backup,
        "refused": r.refused,
        "plan": serde_json::from_str::<Value>(&r.plan_json).unwrap_or(Value::Null),
        "steps": r.steps.iter().map(|s| json!({
            "name": s.name, "state": step_state_name(s.state), "hosts": s.hosts, "error": s.error, "attempt": s.attempt,
        })).collect::<Vec<_>>(),
    })
}

/// `rollout show`: the rollout, then its steps as a table.
pub fn rollout_text(r: &Rollout) -> String {
    let mut text =
        format!("rollout      {}\nenvironment  {}\nbundle       {}\n", r.id, r.environment, r.bundle_digest);
    if !r.app_version.is_empty() {
        text.push_str(&format!("app version  {}\n", r.app_version));
    }
    text.push_str(&format!("state        {}\n", state_name(r.state)));
    if !r.error.is_empty() {
        text.push_str(&format!("error        {}\n", r.error));
    }
    if !r.started_by.is_empty() {
        text.push_str(&format!("started by   {}\n", r.started_by));
    }
    if !r.allow_danger.is_empty() {
        text.push_str(&format!("accepted     {} (--allow-danger)\n", r.allow_danger.join(", ")));
    }
    text.push_str(&format!("coordinator  {}\n", r.coordinator));
    if !r.backup.is_empty() {
        text.push_str(&format!("backup       {}\n", r.backup));
    }
    if let Ok(plan) = serde_json::from_str::<Value>(&r.plan_json) {
        text.push_str(&plan_text(&plan));
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
    text
}

/// The preflight plan saved with a rollout: pending migrations, findings,
/// downtime class, and whether maintenance mode is needed.
fn plan_text(plan: &Value) -> String {
    let list = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_owned)).collect())
            .unwrap_or_default()
    };
    let pending = list(&plan["pending"]);
    let mut text = format!(
        "plan         {} pending migration(s){}\n",
        pending.len(),
        if pending.is_empty() { String::new() } else { format!(": {}", pending.join(", ")) }
    );
    let lint = &plan["lint"];
    if let Some(class) = lint["downtime"]["class"].as_str() {
        text.push_str(&format!(
            "downtime     {class}: {}\n",
            lint["downtime"]["reason"].as_str().unwrap_or("")
        ));
    }
    let maintenance =
        if plan["safe_without_maintenance"].as_bool() == Some(true) { "not needed" } else { "needed" };
    text.push_str(&format!("maintenance  {maintenance}\n"));
    let findings = lint["findings"].as_array().cloned().unwrap_or_default();
    if !findings.is_empty() {
        let mut table = Table::new(["migration", "line", "severity", "rule", "table", "finding"]).right(&[1]);
        for f in &findings {
            let cell = |k: &str| match &f[k] {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                other => other.to_string(),
            };
            table.row([
                cell("migration"),
                cell("line"),
                cell("severity"),
                cell("rule"),
                cell("table"),
                cell("message"),
            ]);
        }
        text.push_str("findings:\n");
        text.push_str(&table.render());
        text.push('\n');
    }
    text
}

/// `rollout list`: one row per rollout.
pub fn rollouts_table(rollouts: &[Rollout]) -> Table {
    let mut table = Table::new(["id", "environment", "state", "bundle", "app version", "error"]);
    for r in rollouts {
        table.row([
            r.id.as_str(),
            r.environment.as_str(),
            state_name(r.state),
            short(&r.bundle_digest),
            r.app_version.as_str(),
            r.error.as_str(),
        ]);
    }
    table
}

/// `rollout start`: what was started.
pub fn started_line(r: &Rollout) -> String {
    format!("rollout {} started: bundle {} to {}", r.id, short(&r.bundle_digest), r.environment)
}

pub fn agent_json(a: &AgentInfo) -> Value {
    json!({
        "name": a.name, "environment": a.environment, "roles": a.roles, "labels": a.labels,
        "runway_version": a.runway_version, "app_version": a.app_version,
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
