//! The checks after a soak, from what the system wrote down: the rollout
//! records and events (through the CLI, from etcd), the audit log, the
//! agents' command journals, the hooks' log on each app host and the
//! databases themselves. Each check returns its violations as sentences.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use super::cli::Cli;
use super::ops::OpsLog;
use crate::cluster::{AppHost, Cluster};

/// `CommandOutcome` values as journaled.
const SUCCEEDED: i64 = 1;
const FAILED: i64 = 2;
const REFUSED: i64 = 3;

const TERMINAL: [&str; 4] = ["succeeded", "failed", "cancelled", "rolled_back"];

/// One journaled command and the agent that holds it.
#[derive(Debug, Clone)]
pub struct Command {
    pub agent: String,
    pub environment: String,
    /// The key it is filed under in the journal.
    pub key: String,
    pub entry: Value,
}

impl Command {
    fn text(&self, field: &str) -> &str {
        self.entry[field].as_str().unwrap_or_default()
    }
    fn outcome(&self) -> Option<i64> {
        self.entry["outcome"].as_i64()
    }
    fn started(&self) -> i64 {
        self.entry["started_unix_ms"].as_i64().unwrap_or(0)
    }
    fn finished(&self) -> Option<i64> {
        self.entry["finished_unix_ms"].as_i64()
    }
    fn label(&self) -> String {
        format!("{} {} of {} on {}", self.text("action"), self.key, self.text("rollout_id"), self.agent)
    }
}

/// An app host's hook calls: `(unix ms, "start" | "end", action)`.
pub type HookLog = Vec<(i64, String, String)>;

/// Everything the checks read, gathered once the cluster is quiet.
pub struct Evidence {
    pub rollouts: Vec<Value>,
    /// Each rollout's events, in the order streamed.
    pub events: BTreeMap<String, Vec<Value>>,
    pub audit: Vec<Value>,
    pub commands: Vec<Command>,
    /// Per app host (all in the first environment): its name and hook log.
    pub apps: Vec<(String, HookLog)>,
    /// Per database: (environment, migration names finished and not rolled back, with their count).
    pub migrations: Vec<(String, Vec<(String, u64)>)>,
    /// The environment of the app hosts (the first one).
    pub first_environment: String,
}

/// Journals to read: (agent name, environment, state dir).
pub type Journals = Vec<(String, String, PathBuf)>;

impl Evidence {
    pub fn gather(
        cluster: &Cluster,
        cli: &Cli,
        journals: &Journals,
        databases: &[(&str, &str)],
        ops: &OpsLog,
    ) -> Evidence {
        let rollouts = Cli::json(&cli.run(&["rollout", "list", "--output", "json"], Duration::from_secs(60)));
        let rolled_back: BTreeSet<&str> = ops.rolled_back.iter().map(String::as_str).collect();
        let events = rollouts
            .iter()
            .filter_map(|r| r["id"].as_str())
            .map(|id| {
                let more = rolled_back.contains(id);
                (id.to_owned(), events_of(cli, id, more))
            })
            .collect();
        let audit = Cli::json(&cli.run(&["audit", "--output", "json"], Duration::from_secs(60)));
        let mut commands = Vec::new();
        for (agent, environment, dir) in journals {
            let Ok(bytes) = std::fs::read(dir.join("journal.json")) else { continue };
            let journal: Value = serde_json::from_slice(&bytes).expect("journal is JSON");
            for (key, entry) in journal["commands"].as_object().into_iter().flatten() {
                commands.push(Command {
                    agent: agent.clone(),
                    environment: environment.clone(),
                    key: key.clone(),
                    entry: entry.clone(),
                });
            }
        }
        let apps = cluster.apps.iter().map(|a: &AppHost| (a.name.clone(), a.hook_log())).collect();
        let migrations = databases
            .iter()
            .map(|(environment, database)| {
                let rows = cluster.pg.try_psql(
                    database,
                    "SELECT migration_name || '|' || count(*) FROM _prisma_migrations \
                     WHERE finished_at IS NOT NULL AND rolled_back_at IS NULL GROUP BY 1 ORDER BY 1",
                );
                let rows = rows
                    .unwrap_or_default()
                    .lines()
                    .filter_map(|l| l.split_once('|'))
                    .map(|(name, n)| (name.to_owned(), n.parse().unwrap_or(0)))
                    .collect();
                ((*environment).to_owned(), rows)
            })
            .collect();
        let first_environment = databases.first().map(|(e, _)| (*e).to_owned()).unwrap_or_default();
        Evidence { rollouts, events, audit, commands, apps, migrations, first_environment }
    }

    fn environment_of(&self) -> BTreeMap<&str, &str> {
        self.rollouts.iter().filter_map(|r| Some((r["id"].as_str()?, r["environment"].as_str()?))).collect()
    }

    /// The journaled commands of `agent` in `environment`.
    fn of_agent<'a>(&'a self, agent: &'a str, environment: &'a str) -> impl Iterator<Item = &'a Command> {
        self.commands.iter().filter(move |c| c.agent == agent && c.environment == environment)
    }
}

/// A rollout's events from seq 1: one watch up to its first terminal
/// event; with `more` (it was rolled back), watches again after each
/// terminal event until nothing more comes.
fn events_of(cli: &Cli, id: &str, more: bool) -> Vec<Value> {
    let mut all: Vec<Value> = Vec::new();
    loop {
        let from = all.last().and_then(|e| e["seq"].as_u64()).map_or(1, |s| s + 1).to_string();
        let timeout = Duration::from_secs(if all.is_empty() { 20 } else { 4 });
        let out = cli.run(&["rollout", "watch", id, "--from-seq", &from, "--output", "json"], timeout);
        let events: Vec<Value> = Cli::json(&out).into_iter().filter(|e| e["seq"].is_u64()).collect();
        if events.is_empty() {
            return all;
        }
        all.extend(events);
        if !more {
            return all;
        }
    }
}

/// Every command ran at most once: filed under its own id, on one agent
/// only; per rollout at most one successful backup and one successful
/// migrate; in every database each migration applied (and not rolled
/// back) once.
pub fn at_most_once(ev: &Evidence) -> Vec<String> {
    let mut violations = Vec::new();
    let mut holders: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for c in &ev.commands {
        if c.text("command_id") != c.key {
            violations.push(format!(
                "{} is filed under another id than its own ({})",
                c.label(),
                c.text("command_id")
            ));
        }
        holders.entry(c.key.as_str()).or_default().push(c.agent.as_str());
    }
    for (id, agents) in holders.iter().filter(|(_, a)| a.len() > 1) {
        violations.push(format!("command {id} is in the journals of {agents:?}"));
    }
    let mut succeeded: BTreeMap<(&str, &str, &str), Vec<&str>> = BTreeMap::new();
    for c in ev.commands.iter().filter(|c| c.outcome() == Some(SUCCEEDED) && !c.text("rollout_id").is_empty())
    {
        let action = c.text("action");
        if action == "migrate" || action == "backup" {
            succeeded.entry((c.text("rollout_id"), c.agent.as_str(), action)).or_default().push(&c.key);
        }
    }
    for ((rollout, agent, action), ids) in succeeded.iter().filter(|(_, ids)| ids.len() > 1) {
        violations
            .push(format!("rollout {rollout}: {action} succeeded {} times on {agent}: {ids:?}", ids.len()));
    }
    for (environment, rows) in &ev.migrations {
        for (name, n) in rows.iter().filter(|(_, n)| *n > 1) {
            violations.push(format!("{environment}'s database has migration {name} applied {n} times"));
        }
    }
    violations
}

/// No two environments' commands crossed: every command of a rollout is
/// in the journal of an agent of that rollout's environment, and each
/// database holds only migrations of its own environment (their names
/// carry the environment's initial).
pub fn environments_apart(ev: &Evidence) -> Vec<String> {
    let mut violations = Vec::new();
    let env_of = ev.environment_of();
    for c in ev.commands.iter().filter(|c| !c.text("rollout_id").is_empty()) {
        match env_of.get(c.text("rollout_id")) {
            Some(env) if *env == c.environment => {}
            Some(env) => {
                violations.push(format!("{} ran in {} but the rollout is {env}'s", c.label(), c.environment))
            }
            None => violations.push(format!("{} belongs to no known rollout", c.label())),
        }
    }
    for (environment, rows) in &ev.migrations {
        let tag = environment.chars().next().unwrap_or_default();
        for (name, _) in rows {
            let own = name.rsplit_once('_').is_some_and(|(_, suffix)| suffix.starts_with(tag));
            if !own {
                violations
                    .push(format!("{environment}'s database has another environment's migration {name}"));
            }
        }
    }
    violations
}

/// Every rollout ended in a terminal state, or holds with an error saying
/// why (returned second, not a violation).
pub fn terminal_or_holding(ev: &Evidence) -> (Vec<String>, Vec<String>) {
    let mut violations = Vec::new();
    let mut holding = Vec::new();
    for r in &ev.rollouts {
        let (id, state, error) = (
            r["id"].as_str().unwrap_or(""),
            r["state"].as_str().unwrap_or(""),
            r["error"].as_str().unwrap_or(""),
        );
        if TERMINAL.contains(&state) {
            continue;
        }
        if error.is_empty() {
            violations
                .push(format!("rollout {id} is {state} with no error saying why, after the soak settled"));
        } else {
            holding.push(format!("{id} {state}: {error}"));
        }
    }
    (violations, holding)
}

/// Each rollout's events are numbered 1..n without a gap or a repeat, and
/// a rollout in a terminal state has a terminal last event.
pub fn event_sequences(ev: &Evidence) -> Vec<String> {
    let mut violations = Vec::new();
    for r in &ev.rollouts {
        let id = r["id"].as_str().unwrap_or("");
        let events = ev.events.get(id).map(Vec::as_slice).unwrap_or_default();
        let seqs: Vec<u64> = events.iter().filter_map(|e| e["seq"].as_u64()).collect();
        if let Some(i) = seqs.iter().enumerate().position(|(i, s)| *s != i as u64 + 1) {
            violations.push(format!("rollout {id}: event #{} has seq {} ({seqs:?})", i + 1, seqs[i]));
        }
        let state = r["state"].as_str().unwrap_or("");
        if TERMINAL.contains(&state) && events.last().is_none_or(|e| e["terminal"] != true) {
            violations
                .push(format!("rollout {id} is {state} but its event stream has no terminal event last"));
        }
    }
    violations
}

/// The audit log has every operation: an accepted `start` for each
/// rollout (and no accepted start without a rollout), a `rollout_ended`
/// for each terminal one, an accepted `rollback` for each rollout rolled
/// back, and an accepted `backup_verify` for each verify that ran.
pub fn audit_complete(ev: &Evidence, ops: &OpsLog) -> Vec<String> {
    let mut violations = Vec::new();
    let entries = |action: &str, outcome: Option<&str>| -> BTreeMap<String, usize> {
        let mut by_rollout = BTreeMap::new();
        for e in ev.audit.iter().filter(|e| e["action"] == action) {
            if outcome.is_none_or(|o| e["outcome"] == o) {
                *by_rollout.entry(e["rollout_id"].as_str().unwrap_or("").to_owned()).or_insert(0) += 1;
            }
        }
        by_rollout
    };
    let starts = entries("start", Some("accepted"));
    let ended = entries("rollout_ended", None);
    let rollbacks = entries("rollback", Some("accepted"));
    let ids: BTreeSet<&str> = ev.rollouts.iter().filter_map(|r| r["id"].as_str()).collect();
    for r in &ev.rollouts {
        let id = r["id"].as_str().unwrap_or("");
        if starts.get(id) != Some(&1) {
            violations.push(format!(
                "rollout {id}: {} accepted start entries in the audit log",
                starts.get(id).unwrap_or(&0)
            ));
        }
        if TERMINAL.contains(&r["state"].as_str().unwrap_or("")) && !ended.contains_key(id) {
            violations
                .push(format!("rollout {id} ended ({}) without a rollout_ended audit entry", r["state"]));
        }
        let terminals = ev.events.get(id).map_or(0, |es| es.iter().filter(|e| e["terminal"] == true).count());
        if (terminals > 1 || r["state"] == "rolled_back") && !rollbacks.contains_key(id) {
            violations.push(format!("rollout {id} was rolled back without an accepted rollback audit entry"));
        }
    }
    for id in starts.keys().filter(|id| !ids.contains(id.as_str())) {
        violations.push(format!("the audit log has an accepted start of {id}, which no rollout record has"));
    }
    for id in ops.rolled_back.iter().filter(|id| !rollbacks.contains_key(id.as_str())) {
        violations.push(format!(
            "the CLI saw the rollback of {id} accepted; the audit log has no accepted rollback"
        ));
    }
    let verifies =
        ev.audit.iter().filter(|e| e["action"] == "backup_verify" && e["outcome"] == "accepted").count();
    if (verifies as u64) < ops.verifies_ran {
        violations.push(format!(
            "{} backup verifies ran but the audit log has {verifies} accepted",
            ops.verifies_ran
        ));
    }
    violations
}

/// One change per environment at a time: the agents' commands of each
/// rollout (split at its terminal events, so a later rollback is a change
/// of its own; without the backup release sent after the end) and each
/// backup restore or verify outside a rollout span windows [first start,
/// last finish]; no two windows of one environment overlap.
pub fn one_change_at_a_time(ev: &Evidence) -> Vec<String> {
    let mut windows: BTreeMap<(&str, String), (i64, i64)> = BTreeMap::new();
    let now = crate::process::now_ms();
    // `release_backup` unpins a rollout's backup once it ended (sent after
    // its terminal event; it changes no database), reads change nothing.
    let changes = ev.commands.iter().filter(|c| {
        c.outcome() != Some(REFUSED)
            && !matches!(c.text("action"), "release_backup" | "list_backups" | "show_backup")
    });
    for c in changes {
        let rollout = c.text("rollout_id");
        let change = if rollout.is_empty() {
            if !matches!(c.text("action"), "verify_backup" | "restore_backup") {
                continue;
            }
            format!("{} {}", c.text("action"), c.key)
        } else {
            let ends = ev.events.get(rollout).map(Vec::as_slice).unwrap_or_default();
            let segment = ends
                .iter()
                .filter(|e| e["terminal"] == true && e["unix_ms"].as_i64().unwrap_or(0) < c.started())
                .count();
            if segment == 0 {
                format!("rollout {rollout}")
            } else {
                format!("rollout {rollout} (change #{})", segment + 1)
            }
        };
        let window = windows.entry((c.environment.as_str(), change)).or_insert((i64::MAX, i64::MIN));
        window.0 = window.0.min(c.started());
        window.1 = window.1.max(c.finished().unwrap_or(now));
    }
    let mut violations = Vec::new();
    let mut by_env: BTreeMap<&str, Vec<(i64, i64, &str)>> = BTreeMap::new();
    for ((env, change), (start, end)) in &windows {
        by_env.entry(env).or_default().push((*start, *end, change.as_str()));
    }
    for (env, mut list) in by_env {
        list.sort();
        for (i, a) in list.iter().enumerate() {
            for b in list[i + 1..].iter().take_while(|b| b.0 < a.1) {
                violations.push(format!(
                    "{env}: {} [{}..{}] and {} [{}..{}] ran at the same time",
                    a.2, a.0, a.1, b.2, b.0, b.1
                ));
            }
        }
    }
    violations
}

/// Maintenance was never off while the database was changed and not yet
/// put back: on each app host, replaying in time order the DB agent's
/// changes (migrate, migrate_down, restore_backup; a failed migrate that
/// says `database_changed: false` changed nothing), what settles them (a
/// successful migrate_down or restore finished; a successful restart of
/// that host started after the change finished: the app runs the matching
/// version) and the host's hook log, no `maintenance-off` hook starts
/// while a change is unsettled, and no change starts while the host is
/// out of maintenance.
pub fn maintenance_covers_changes(ev: &Evidence, db_agent: &str) -> Vec<String> {
    #[derive(Debug)]
    enum Ev {
        Settled,
        Restarted { started: i64 },
        Change { label: String, settles_after: i64 },
        On,
        Off,
    }
    let rank = |e: &Ev| match e {
        Ev::Settled | Ev::Restarted { .. } => 0,
        Ev::Change { .. } | Ev::On => 1,
        Ev::Off => 2,
    };
    let mut violations = Vec::new();
    for (app, hooks) in &ev.apps {
        let mut timeline: Vec<(i64, Ev)> = Vec::new();
        for c in ev.of_agent(db_agent, &ev.first_environment) {
            let action = c.text("action");
            if !matches!(action, "migrate" | "migrate_down" | "restore_backup")
                || c.outcome() == Some(REFUSED)
            {
                continue;
            }
            let detail: Value = serde_json::from_str(c.text("detail_json")).unwrap_or(Value::Null);
            let unchanged = c.outcome() == Some(FAILED) && detail["database_changed"] == false;
            if !unchanged {
                let settles_after = c.finished().unwrap_or(c.started());
                timeline.push((c.started(), Ev::Change { label: c.label(), settles_after }));
            }
            if action != "migrate" && c.outcome() == Some(SUCCEEDED) {
                timeline.push((c.finished().unwrap_or(c.started()), Ev::Settled));
            }
        }
        for c in ev.of_agent(app, &ev.first_environment) {
            if c.text("action") == "restart" && c.outcome() == Some(SUCCEEDED) {
                timeline.push((c.finished().unwrap_or(c.started()), Ev::Restarted { started: c.started() }));
            }
        }
        for (ms, phase, action) in hooks {
            match (phase.as_str(), action.as_str()) {
                ("end", "maintenance-on") => timeline.push((*ms, Ev::On)),
                ("start", "maintenance-off") => timeline.push((*ms, Ev::Off)),
                _ => {}
            }
        }
        timeline.sort_by_key(|(ms, e)| (*ms, rank(e)));
        let mut maintenance = false;
        let mut unsettled: Option<(String, i64, i64)> = None;
        for (ms, e) in timeline {
            match e {
                Ev::Settled => unsettled = None,
                Ev::Restarted { started } => {
                    if unsettled.as_ref().is_some_and(|(_, _, after)| started >= *after) {
                        unsettled = None;
                    }
                }
                Ev::Change { label, settles_after } => {
                    if !maintenance {
                        violations.push(format!(
                            "{label} changed the database at {ms} while {app} was not in maintenance"
                        ));
                    }
                    unsettled = Some((label, ms, settles_after));
                }
                Ev::On => maintenance = true,
                Ev::Off => {
                    if let Some((label, since, _)) = &unsettled {
                        violations.push(format!(
                            "maintenance-off on {app} at {ms} while the database was changed by {label} (since {since}) and not put back"
                        ));
                    }
                    maintenance = false;
                }
            }
        }
    }
    violations
}
