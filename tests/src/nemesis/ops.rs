//! The operations side of the soak: small rollouts (each adds a column to
//! the environment's own table, with its `down.sql`), rollbacks of
//! succeeded rollouts, backup verifies, and two starts at once in one
//! environment. A refusal (the environment busy, an agent away, no leader
//! yet) is correct behaviour: it is counted by reason, never a violation.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Output;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::cli::Cli;
use super::rng::Rng;

const START_TIMEOUT: Duration = Duration::from_secs(90);
/// A rollout or rollback followed to its end; long enough for a failover
/// and an agent away for a while, short enough that a stuck run shows.
const FOLLOW_TIMEOUT: Duration = Duration::from_secs(240);

/// What the operations did, for the report and the checks.
#[derive(Debug, Default)]
pub struct OpsLog {
    /// Operations attempted, by kind.
    pub runs: BTreeMap<String, u64>,
    /// How accepted operations ended, by kind and state.
    pub outcomes: BTreeMap<String, u64>,
    /// Refused operations, by reason.
    pub refusals: BTreeMap<String, u64>,
    /// A few refusal messages of the "other" kind, to read.
    pub refusal_samples: Vec<String>,
    /// Every rollout whose start was accepted: (id, environment).
    pub started: Vec<(String, String)>,
    /// Rollouts whose rollback the coordinator accepted.
    pub rolled_back: Vec<String>,
    /// Backup verifies that ran on the agent (succeeded or failed there).
    pub verifies_ran: u64,
    /// Conflicting starts where both were accepted (the overlap check says
    /// whether they then ran at once).
    pub both_accepted: Vec<String>,
}

/// One environment's history of migrations, written afresh for each rollout.
struct History {
    environment: String,
    /// `s` or `p`: which environment a migration or column belongs to,
    /// readable in the other environment's database if it ever crossed.
    tag: char,
    migrations: Vec<(String, String, String)>,
    /// Succeeded rollouts not yet rolled back, newest last.
    succeeded: Vec<String>,
}

impl History {
    fn table(&self) -> String {
        format!("Soak_{}", self.tag)
    }

    /// Adds one migration and writes the whole history to a new folder.
    fn next(&mut self, root: &std::path::Path) -> (PathBuf, String) {
        let k = self.migrations.len() + 1;
        let name = format!("{}_{}{k}", 20_250_101_000_000u64 + k as u64, self.tag);
        let table = self.table();
        let (up, down) = if k == 1 {
            (
                format!(
                    "CREATE TABLE \"{table}\" (\"id\" SERIAL NOT NULL, CONSTRAINT \"{table}_pkey\" PRIMARY KEY (\"id\"));\n"
                ),
                format!("DROP TABLE \"{table}\";\n"),
            )
        } else {
            (
                format!("ALTER TABLE \"{table}\" ADD COLUMN \"{}{k}\" INTEGER;\n", self.tag),
                format!("ALTER TABLE \"{table}\" DROP COLUMN \"{}{k}\";\n", self.tag),
            )
        };
        self.migrations.push((name, up, down));
        let dir = root.join(format!("{}-{k}", self.environment));
        let ups: Vec<(&str, &str)> =
            self.migrations.iter().map(|(n, u, _)| (n.as_str(), u.as_str())).collect();
        crate::fixtures::write_migrations(&dir, &ups);
        for (name, _, down) in &self.migrations {
            std::fs::write(dir.join(name).join("down.sql"), down).expect("write down.sql");
        }
        (dir, format!("v{k}"))
    }
}

/// The operations loop: runs until `stop` is set or `deadline` passes.
pub struct Ops {
    cli: Cli,
    rng: Rng,
    root: PathBuf,
    histories: Vec<History>,
    pub log: OpsLog,
}

impl Ops {
    /// Operations over `environments` (the first is the one with app hosts).
    pub fn new(cli: Cli, seed: u64, root: PathBuf, environments: &[&str]) -> Ops {
        let histories = environments
            .iter()
            .map(|e| History {
                environment: (*e).to_owned(),
                tag: e.chars().next().expect("environment names are not empty"),
                migrations: Vec::new(),
                succeeded: Vec::new(),
            })
            .collect();
        std::fs::create_dir_all(&root).expect("create ops dir");
        Ops { cli, rng: Rng::new(seed), root, histories, log: OpsLog::default() }
    }

    pub fn run(mut self, stop: &AtomicBool, deadline: Instant) -> OpsLog {
        while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
            // The first environment (with the app hosts) gets most of the work.
            let env = if self.histories.len() > 1 && self.rng.chance(25) { 1 } else { 0 };
            match self.rng.below(100) {
                0..=49 => self.rollout(env),
                50..=64 => self.rollback(env),
                65..=79 => self.verify(env),
                _ => self.conflicting_starts(env),
            }
            std::thread::sleep(self.rng.millis(200, 1500));
        }
        self.log
    }

    fn count(map: &mut BTreeMap<String, u64>, key: impl Into<String>) {
        *map.entry(key.into()).or_default() += 1;
    }

    /// Counts a run that did not get its operation accepted (or lost it).
    fn refused(&mut self, what: &str, out: &Output) {
        let said = Cli::said(out);
        let reason = match out.status.code() {
            Some(2) if said.contains("busy") => "environment busy (exit 2)".to_owned(),
            Some(3) if said.contains("away") => "agent away (exit 3)".to_owned(),
            Some(3) => "no leader answered (exit 3)".to_owned(),
            Some(10) => "denied (exit 10)".to_owned(),
            None => "CLI timed out".to_owned(),
            Some(code) => {
                if self.log.refusal_samples.len() < 8 {
                    let line = said.lines().next().unwrap_or_default().chars().take(200).collect::<String>();
                    self.log.refusal_samples.push(format!("{what} exit {code}: {line}"));
                }
                format!("other (exit {code})")
            }
        };
        Self::count(&mut self.log.refusals, format!("{what}: {reason}"));
    }

    fn start(&self, env: usize, dir: &std::path::Path, version: &str) -> Output {
        let h = &self.histories[env];
        let args = [
            "rollout",
            "start",
            "--env",
            &h.environment,
            "--migrations",
            dir.to_str().expect("temp paths are UTF-8"),
            "--app-version",
            version,
            "--output",
            "json",
        ];
        self.cli.run(&args, START_TIMEOUT)
    }

    /// The accepted rollout's id, if `out` is an accepted start.
    fn accepted(out: &Output) -> Option<String> {
        if out.status.code() != Some(0) {
            return None;
        }
        Cli::json(out).first().and_then(|v| v["id"].as_str()).map(str::to_owned)
    }

    fn rollout(&mut self, env: usize) {
        Self::count(&mut self.log.runs, "rollout");
        let (dir, version) = self.histories[env].next(&self.root);
        let out = self.start(env, &dir, &version);
        match Self::accepted(&out) {
            Some(id) => self.follow(env, id),
            None => self.refused("rollout start", &out),
        }
    }

    /// Watches an accepted rollout to its end and notes how it ended.
    fn follow(&mut self, env: usize, id: String) {
        self.log.started.push((id.clone(), self.histories[env].environment.clone()));
        let out = self.cli.run(&["rollout", "watch", &id, "--output", "json"], FOLLOW_TIMEOUT);
        let state = Cli::json(&out)
            .last()
            .filter(|e| e["terminal"] == true)
            .and_then(|e| e["rollout_state"].as_str().map(str::to_owned))
            .unwrap_or_else(|| "not ended when the watch gave up".to_owned());
        if state == "succeeded" {
            self.histories[env].succeeded.push(id);
        }
        Self::count(&mut self.log.outcomes, format!("rollout {state}"));
    }

    fn rollback(&mut self, env: usize) {
        let Some(id) = self.histories[env].succeeded.pop() else { return self.rollout(env) };
        Self::count(&mut self.log.runs, "rollback");
        let mut args = vec!["rollout", "rollback", id.as_str(), "--yes", "--watch", "--output", "json"];
        if self.rng.chance(30) {
            args.push("--restore");
        }
        let out = self.cli.run(&args, FOLLOW_TIMEOUT);
        let lines = Cli::json(&out);
        // Refused before anything changed: no event was streamed.
        if matches!(out.status.code(), Some(2 | 3 | 10)) && !lines.iter().any(|l| l["seq"].is_u64()) {
            self.refused("rollback", &out);
            self.histories[env].succeeded.push(id);
            return;
        }
        self.log.rolled_back.push(id.clone());
        let show = self.cli.run(&["rollout", "show", &id, "--output", "json"], START_TIMEOUT);
        let state = Cli::json(&show).first().and_then(|r| r["state"].as_str().map(str::to_owned));
        Self::count(&mut self.log.outcomes, format!("rollback → {}", state.as_deref().unwrap_or("unknown")));
    }

    fn verify(&mut self, env: usize) {
        Self::count(&mut self.log.runs, "backup verify");
        let environment = self.histories[env].environment.clone();
        let list =
            self.cli.run(&["backup", "list", "--env", &environment, "--output", "json"], START_TIMEOUT);
        let names: Vec<String> = Cli::json(&list)
            .iter()
            .flat_map(|l| {
                let result = &l["result"];
                let items = result["backups"].as_array().or(result.as_array()).cloned().unwrap_or_default();
                items.into_iter().filter_map(|b| b["id"].as_str().map(str::to_owned)).collect::<Vec<_>>()
            })
            .collect();
        if names.is_empty() {
            if list.status.code() == Some(0) {
                Self::count(&mut self.log.outcomes, "backup verify: no backup yet");
            } else {
                self.refused("backup list", &list);
            }
            return;
        }
        let name = self.rng.pick(&names).clone();
        let out = self.cli.run(
            &["backup", "verify", &name, "--env", &environment, "--output", "json"],
            Duration::from_secs(180),
        );
        match out.status.code() {
            Some(0) => {
                self.log.verifies_ran += 1;
                Self::count(&mut self.log.outcomes, "backup verify ok");
            }
            Some(1) | Some(6) => {
                self.log.verifies_ran += 1;
                let code = out.status.code().unwrap_or_default();
                Self::count(&mut self.log.outcomes, format!("backup verify failed (exit {code})"));
                if self.log.refusal_samples.len() < 8 {
                    let line = Cli::said(&out).lines().next().unwrap_or_default().chars().take(200).collect();
                    self.log.refusal_samples.push(line);
                }
            }
            _ => self.refused("backup verify", &out),
        }
    }

    /// Two `rollout start` of the same new history at once: one should be
    /// refused (the environment is busy), the other run.
    fn conflicting_starts(&mut self, env: usize) {
        Self::count(&mut self.log.runs, "two starts at once");
        let (dir, version) = self.histories[env].next(&self.root);
        let this = &*self;
        let (a, b) = std::thread::scope(|s| {
            let a = s.spawn(|| this.start(env, &dir, &version));
            let b = s.spawn(|| this.start(env, &dir, &version));
            (a.join().expect("start thread"), b.join().expect("start thread"))
        });
        let ids: Vec<String> = [&a, &b].into_iter().filter_map(Self::accepted).collect();
        if ids.len() == 2 {
            self.log.both_accepted.push(format!("{} and {}", ids[0], ids[1]));
        }
        for out in [&a, &b] {
            if Self::accepted(out).is_none() {
                self.refused("conflicting start", out);
            }
        }
        for id in ids {
            self.follow(env, id);
        }
    }
}
