//! `runway status`: the on-call view. Who leads and what each coordinator
//! thinks about it; per environment the agents (versions, last heartbeat,
//! connected or for how long missing), the running and recent rollouts
//! (current step, how long maintenance mode has been on) and the last
//! failure with its error.
//!
//! Text is a few tables for a person; `--output json` is one JSON object.
//! Exit codes: 0 all is well; 7 (needs attention) when the leader answered
//! but a coordinator is unreachable or disagrees about who leads, an agent
//! is missing, or maintenance mode stays on after its rollout ended; 3
//! (unreachable) when no leader answered: each coordinator's view is still
//! shown, and the error says why.
//!
//! Durations are measured against the leader's clock (`unix_ms` in its
//! answer), so a CLI on a machine whose clock is off reads them right.

use runway_proto::v1::{
    AgentStatus, ClusterStatus, EnvironmentStatus, GetStatusRequest, LeaderInfo, RolloutStatus,
};
use serde_json::{Value, json};

use crate::exit::Exit;
use crate::output::{Failure, Output, Table};
use crate::remote::{CallError, Remote};
use crate::rollout::{databases, view};

/// One coordinator's answer to "who leads?", or why there was none.
type View = (String, Result<LeaderInfo, String>);

/// Runs `runway status` against the coordinators.
pub async fn run(remote: &Remote, output: Output, environment: Option<String>) -> Result<Exit, Failure> {
    let request = GetStatusRequest { environment: environment.unwrap_or_default() };
    let (views, status) = tokio::join!(
        remote.views(),
        remote.call(|mut c| {
            let r = request.clone();
            async move { c.get_status(r).await.map(|r| r.into_inner()) }
        })
    );
    let (status, leader_error) = match status {
        Ok(status) => (Some(status), None),
        Err(error @ CallError::Unreachable(_)) => (None, Some(error.to_string())),
        // Refused (a role missing, an unknown environment) or TLS: as any command.
        Err(error) => return Err(error.into()),
    };
    let attention = attention(status.as_ref(), &views);
    let exit = match (&status, attention.is_empty()) {
        (None, _) => Exit::Unreachable,
        (Some(_), false) => Exit::Attention,
        (Some(_), true) => Exit::Success,
    };
    if output.is_json() {
        output.json_line(&status_json(status.as_ref(), leader_error.as_deref(), &views, &attention, exit));
    } else {
        output.text(status_text(status.as_ref(), &views, &attention));
        if let Some(error) = leader_error {
            eprintln!("error: {error}");
        }
    }
    Ok(exit)
}

/// What needs a person's attention, one line each; empty when all is well.
/// Without a leader's answer only the coordinators are judged (the caller
/// exits 3 anyway).
pub fn attention(status: Option<&ClusterStatus>, views: &[View]) -> Vec<String> {
    let mut lines = Vec::new();
    for (addr, answer) in views {
        match (answer, status) {
            (Err(error), _) => lines.push(format!("coordinator {addr} does not answer: {error}")),
            (Ok(info), Some(s)) if info.fencing_token != s.fencing_token && info.fencing_token != 0 => lines
                .push(format!(
                    "coordinator {} ({addr}) sees fencing token {}, the leader {} has {}",
                    info.responder, info.fencing_token, s.leader_name, s.fencing_token
                )),
            (Ok(info), _) if info.address.is_empty() => {
                lines.push(format!("coordinator {} ({addr}) knows no leader", info.responder))
            }
            _ => {}
        }
    }
    let Some(status) = status else { return lines };
    for env in &status.environments {
        for a in env.agents.iter().filter(|a| !a.connected) {
            let name = a.agent.as_ref().map_or("", |i| i.name.as_str());
            let missing = span(status.unix_ms - a.disconnected_unix_ms);
            lines.push(format!("agent {name} in {} missing for {missing}", env.name));
        }
        for r in &env.rollouts {
            let Some(rollout) = &r.rollout else { continue };
            if r.maintenance_on_unix_ms > 0 && r.maintenance_off_unix_ms == 0 && ended(rollout.state) {
                lines.push(format!(
                    "maintenance mode in {} on for {} after rollout {} ended ({})",
                    env.name,
                    span(status.unix_ms - r.maintenance_on_unix_ms),
                    rollout.id,
                    view::state_name(rollout.state)
                ));
            }
        }
    }
    lines
}

fn ended(state: i32) -> bool {
    use runway_proto::v1::RolloutState as S;
    matches!(
        S::try_from(state).unwrap_or(S::Unspecified),
        S::Succeeded | S::Failed | S::Cancelled | S::RolledBack
    )
}

/// `45s`, `3m 12s`, `2h 5m`, `3d 4h`: a duration in ms for a person.
pub fn span(ms: i64) -> String {
    let secs = ms.max(0) / 1000;
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

/// Seconds from `then` to `now` (both Unix ms); `None` when `then` is unset.
fn secs_since(now: i64, then: i64) -> Option<i64> {
    (then > 0).then(|| (now - then).max(0) / 1000)
}

/// The whole view as one JSON object; the field names are a contract with
/// scripts: add fields, never rename them.
pub fn status_json(
    status: Option<&ClusterStatus>,
    leader_error: Option<&str>,
    views: &[View],
    attention: &[String],
    exit: Exit,
) -> Value {
    let coordinators: Vec<Value> = views.iter().map(view_json).collect();
    let (leader, environments, unix_ms) = match status {
        Some(s) => (
            json!({ "name": s.leader_name, "address": s.leader_address, "fencing_token": s.fencing_token }),
            s.environments.iter().map(|e| environment_json(e, s.unix_ms)).collect(),
            s.unix_ms,
        ),
        None => (Value::Null, Vec::new(), 0),
    };
    json!({
        "ok": exit == Exit::Success,
        "exit_code": exit.code(),
        "unix_ms": unix_ms,
        "leader": leader,
        "leader_error": leader_error,
        "coordinators": coordinators,
        "environments": environments,
        "attention": attention,
    })
}

fn view_json((addr, answer): &View) -> Value {
    match answer {
        Ok(info) => json!({
            "address": addr, "reachable": true, "name": info.responder, "leads": info.responder_leads,
            "leader_address": info.address, "fencing_token": info.fencing_token,
        }),
        Err(error) => json!({ "address": addr, "reachable": false, "error": error }),
    }
}

fn environment_json(e: &EnvironmentStatus, now: i64) -> Value {
    json!({
        "name": e.name,
        "agents": e.agents.iter().map(|a| agent_json(a, now)).collect::<Vec<_>>(),
        "rollouts": e.rollouts.iter().map(|r| rollout_json(r, now)).collect::<Vec<_>>(),
        "last_failure": e.last_failure.as_ref().map(|r| rollout_json(r, now)),
    })
}

fn agent_json(a: &AgentStatus, now: i64) -> Value {
    let mut value = a.agent.as_ref().map(view::agent_json).unwrap_or_else(|| json!({}));
    let info = a.agent.clone().unwrap_or_default();
    value["connected"] = a.connected.into();
    value["last_heartbeat_secs_ago"] = secs_since(now, info.last_seen_unix_ms).into();
    value["disconnected_unix_ms"] = a.disconnected_unix_ms.into();
    value["missing_for_secs"] =
        if a.connected { Value::Null } else { secs_since(now, a.disconnected_unix_ms).into() };
    value
}

fn rollout_json(r: &RolloutStatus, now: i64) -> Value {
    let mut value = r.rollout.as_ref().map(view::rollout_json).unwrap_or_else(|| json!({}));
    value["current_step"] = r.current_step.clone().into();
    value["maintenance_on_unix_ms"] = r.maintenance_on_unix_ms.into();
    value["maintenance_off_unix_ms"] = r.maintenance_off_unix_ms.into();
    let until = if r.maintenance_off_unix_ms > 0 { r.maintenance_off_unix_ms } else { now };
    value["maintenance_on"] = (r.maintenance_on_unix_ms > 0 && r.maintenance_off_unix_ms == 0).into();
    value["maintenance_secs"] = if r.maintenance_on_unix_ms > 0 {
        secs_since(until, r.maintenance_on_unix_ms).into()
    } else {
        Value::Null
    };
    value
}

/// The view for a person: the leader, the coordinators, then each
/// environment's agents and rollouts, then what needs attention.
pub fn status_text(status: Option<&ClusterStatus>, views: &[View], attention: &[String]) -> String {
    let mut text = String::new();
    match status {
        Some(s) => text.push_str(&format!(
            "leader: {} at {}, fencing token {}\n",
            s.leader_name, s.leader_address, s.fencing_token
        )),
        None => text.push_str("leader: none answered\n"),
    }
    let mut coordinators =
        Table::new(["coordinator", "address", "role", "leader it sees", "token"]).right(&[4]);
    for (addr, answer) in views {
        match answer {
            Ok(info) => coordinators.row([
                info.responder.clone(),
                addr.clone(),
                (if info.responder_leads { "leader" } else { "follower" }).to_owned(),
                if info.address.is_empty() { "none".to_owned() } else { info.address.clone() },
                info.fencing_token.to_string(),
            ]),
            Err(error) => coordinators.row(["?".to_owned(), addr.clone(), format!("unreachable: {error}")]),
        };
    }
    text.push('\n');
    text.push_str(&coordinators.render());
    text.push('\n');
    for env in status.map(|s| s.environments.as_slice()).unwrap_or_default() {
        let now = status.map_or(0, |s| s.unix_ms);
        text.push_str(&format!("\nenvironment {}\n", env.name));
        text.push_str(&agents_table(&env.agents, now).render());
        text.push('\n');
        if env.rollouts.is_empty() {
            text.push_str("no rollouts\n");
        } else {
            text.push('\n');
            text.push_str(&rollouts_table(&env.rollouts, now).render());
            text.push('\n');
            // The newest rollout's databases, one line each, when it has several.
            let newest = env.rollouts.first().and_then(|r| r.rollout.as_ref());
            if let Some((r, table)) =
                newest.filter(|r| r.databases.len() > 1).and_then(|r| Some((r, databases::table(r)?)))
            {
                text.push_str(&format!("\ndatabases of rollout {}:\n{}\n", r.id, table.render()));
            }
        }
        if let Some(failure) = env.last_failure.as_ref().and_then(|f| f.rollout.as_ref()) {
            let when = chrono::DateTime::from_timestamp_millis(failure.updated_unix_ms)
                .map(|t| t.with_timezone(&chrono::Local).format("%Y-%m-%d %H:%M:%S").to_string())
                .unwrap_or_default();
            text.push_str(&format!(
                "last failure: rollout {} ({}) at {when}: {}\n",
                failure.id,
                view::state_name(failure.state),
                failure.error
            ));
        }
    }
    if !attention.is_empty() {
        text.push_str("\nneeds attention:\n");
        for line in attention {
            text.push_str(&format!("  - {line}\n"));
        }
    }
    text
}

fn agents_table(agents: &[AgentStatus], now: i64) -> Table {
    let mut table =
        Table::new(["agent", "roles", "app version", "runway version", "last heartbeat", "state"]);
    if agents.is_empty() {
        table.row(["(no agents)"]);
    }
    for a in agents {
        let info = a.agent.clone().unwrap_or_default();
        let heartbeat =
            secs_since(now, info.last_seen_unix_ms).map_or("-".to_owned(), |s| format!("{}s ago", s));
        let state = if a.connected {
            "connected".to_owned()
        } else {
            format!("MISSING for {}", span(now - a.disconnected_unix_ms))
        };
        let app = if info.app_version.is_empty() { "-".to_owned() } else { info.app_version.clone() };
        table.row([
            info.name.clone(),
            info.roles.join(","),
            app,
            info.runway_version.clone(),
            heartbeat,
            state,
        ]);
    }
    table
}

fn rollouts_table(rollouts: &[RolloutStatus], now: i64) -> Table {
    let mut table = Table::new(["rollout", "state", "step", "maintenance", "started by", "error"]);
    for r in rollouts {
        let rollout = r.rollout.clone().unwrap_or_default();
        let maintenance = match (r.maintenance_on_unix_ms, r.maintenance_off_unix_ms) {
            (0, _) => "-".to_owned(),
            (on, 0) => format!("ON for {}", span(now - on)),
            (on, off) => format!("was on {}", span(off - on)),
        };
        let step = if r.current_step.is_empty() { "-".to_owned() } else { r.current_step.clone() };
        table.row([
            rollout.id.clone(),
            view::shown_state(&rollout).to_owned(),
            step,
            maintenance,
            rollout.started_by.clone(),
            rollout.error.clone(),
        ]);
    }
    table
}

#[cfg(test)]
mod tests {
    use runway_proto::v1::{AgentInfo, Rollout, RolloutState};

    use super::*;

    fn cluster() -> ClusterStatus {
        let agent = |name: &str, connected: bool| AgentStatus {
            agent: Some(AgentInfo {
                name: name.into(),
                environment: "staging".into(),
                roles: vec!["db".into()],
                runway_version: "0.1.0".into(),
                last_seen_unix_ms: 95_000,
                ..AgentInfo::default()
            }),
            connected,
            disconnected_unix_ms: if connected { 0 } else { 40_000 },
        };
        let rollout = RolloutStatus {
            rollout: Some(Rollout {
                id: "r1".into(),
                state: RolloutState::Failed as i32,
                error: "migrate failed: boom".into(),
                ..Rollout::default()
            }),
            current_step: "migrate".into(),
            maintenance_on_unix_ms: 10_000,
            maintenance_off_unix_ms: 0,
        };
        ClusterStatus {
            leader_name: "coord-1".into(),
            leader_address: "https://a:1".into(),
            fencing_token: 7,
            unix_ms: 100_000,
            environments: vec![EnvironmentStatus {
                name: "staging".into(),
                agents: vec![agent("app-1", true), agent("db-1", false)],
                rollouts: vec![rollout.clone()],
                last_failure: Some(rollout),
            }],
        }
    }

    fn views() -> Vec<View> {
        vec![
            (
                "https://a:1".into(),
                Ok(LeaderInfo {
                    address: "https://a:1".into(),
                    fencing_token: 7,
                    responder: "coord-1".into(),
                    responder_leads: true,
                }),
            ),
            ("https://b:2".into(), Err("connection refused".into())),
        ]
    }

    #[test]
    fn spans_read_as_a_person_says_them() {
        assert_eq!(span(-5), "0s");
        assert_eq!(span(45_999), "45s");
        assert_eq!(span(192_000), "3m 12s");
        assert_eq!(span((2 * 3600 + 5 * 60) * 1000), "2h 5m");
        assert_eq!(span((3 * 86_400 + 4 * 3600) * 1000), "3d 4h");
    }

    #[test]
    fn missing_agents_unreachable_coordinators_and_maintenance_left_on_need_attention() {
        let status = cluster();
        let lines = attention(Some(&status), &views());
        assert_eq!(
            lines,
            [
                "coordinator https://b:2 does not answer: connection refused",
                "agent db-1 in staging missing for 1m 0s",
                "maintenance mode in staging on for 1m 30s after rollout r1 ended (failed)",
            ]
        );
        assert!(attention(Some(&status), &views()[..1]).len() == 2);
    }

    #[test]
    fn the_json_names_the_leader_views_agents_and_rollouts() {
        let status = cluster();
        let json = status_json(Some(&status), None, &views(), &["x".into()], Exit::Attention);
        assert_eq!(json["ok"], false);
        assert_eq!(json["exit_code"], 7);
        assert_eq!(json["leader"]["name"], "coord-1");
        assert_eq!(json["leader"]["fencing_token"], 7);
        assert_eq!(json["coordinators"][0]["leads"], true);
        assert_eq!(json["coordinators"][1]["reachable"], false);
        let env = &json["environments"][0];
        assert_eq!(env["agents"][0]["connected"], true);
        assert_eq!(env["agents"][0]["last_heartbeat_secs_ago"], 5);
        assert_eq!(env["agents"][1]["missing_for_secs"], 60);
        assert_eq!(env["rollouts"][0]["current_step"], "migrate");
        assert_eq!(env["rollouts"][0]["maintenance_secs"], 90);
        assert_eq!(env["last_failure"]["error"], "migrate failed: boom");
        let nobody = status_json(None, Some("no leader"), &views(), &[], Exit::Unreachable);
        assert_eq!(nobody["leader"], Value::Null);
        assert_eq!(nobody["leader_error"], "no leader");
        assert_eq!(nobody["exit_code"], 3);
    }

    #[test]
    fn the_text_shows_each_part() {
        let status = cluster();
        let text = status_text(Some(&status), &views(), &attention(Some(&status), &views()));
        for needle in [
            "leader: coord-1 at https://a:1, fencing token 7",
            "unreachable: connection refused",
            "environment staging",
            "MISSING for 1m 0s",
            "ON for 1m 30s",
            "last failure: rollout r1 (failed)",
            "needs attention:",
        ] {
            assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
        }
    }
}
