//! A nemesis soak: many small rollouts, rollbacks and backup verifies
//! against a real cluster while a seeded nemesis kills, stops and cuts off
//! its parts; afterwards the invariants are checked from what etcd, the
//! journals, the hooks' logs and the databases recorded.
//!
//! # Layout
//!
//! - [`rng`]: the seeded generator both loops draw from.
//! - [`cli`]: the `runway` CLI, bounded in time, usable while the nemesis
//!   holds the cluster.
//! - [`ops`]: the operations loop; refusals are counted, not violations.
//! - [`faults`]: the nemesis, fault by kind, each undone before the next.
//! - [`invariants`]: the checks after the run.
//!
//! `benches/nemesis.rs` runs it for minutes with `--seed`; the CI test
//! `tests/nemesis.rs` runs a small cluster for about 90 s on a fixed seed.
//! A violation is printed with its seed: `cargo bench --bench nemesis --
//! --seed N` replays the same choices (timing still varies).

pub mod cli;
pub mod faults;
pub mod invariants;
pub mod ops;
pub mod rng;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::cluster::{Cluster, DB, ENV, Options};
use cli::Cli;
pub use faults::Fault;

/// The second environment, with a DB agent of its own and no app hosts.
const PRODUCTION: &str = "production";
const PRODUCTION_DB: &str = "production_app";

/// One soak: the cluster's shape, how long, which faults, and the seed.
#[derive(Debug, Clone)]
pub struct Soak {
    pub seed: u64,
    /// How long operations and faults go on (checks come after).
    pub duration: Duration,
    pub faults: Vec<Fault>,
    /// The time between two faults, a random ms in this range.
    pub fault_pause: (u64, u64),
    pub coordinators: usize,
    pub app_hosts: usize,
    pub etcd_members: usize,
    /// Every process in a network namespace of its own (needed for link
    /// cuts and for several etcd members).
    pub netns: bool,
    /// A second environment with a DB agent of its own, for crossings.
    pub production: bool,
}

impl Soak {
    /// The CI shape: one etcd member on loopback, 2 coordinators, 1 DB
    /// agent, 2 app agents; leader kills, agent stops, DB agent restarts.
    pub fn ci(seed: u64, duration: Duration) -> Soak {
        Soak {
            seed,
            duration,
            faults: vec![Fault::KillLeader, Fault::StopAgent, Fault::RestartDbAgent],
            fault_pause: faults::CI_PAUSE,
            coordinators: 2,
            app_hosts: 2,
            etcd_members: 1,
            netns: false,
            production: true,
        }
    }

    /// Every fault: three etcd members, three coordinators, three app
    /// hosts, all in namespaces.
    pub fn full(seed: u64, duration: Duration) -> Soak {
        Soak {
            seed,
            duration,
            faults: vec![
                Fault::KillLeader,
                Fault::StopAgent,
                Fault::RestartDbAgent,
                Fault::RestartEtcdMember,
                Fault::LoseEtcdQuorum,
                Fault::CutLink,
            ],
            fault_pause: (3000, 8000),
            coordinators: 3,
            app_hosts: 3,
            etcd_members: 3,
            netns: true,
            production: true,
        }
    }

    /// Starts the cluster, runs operations and faults for the duration,
    /// lets the cluster settle and checks the invariants.
    pub fn run(&self) -> Report {
        let started = Instant::now();
        let mut cluster = Cluster::start(Options {
            coordinators: self.coordinators,
            app_hosts: self.app_hosts,
            etcd_members: self.etcd_members,
            netns: self.netns,
            lease_ttl_secs: 3,
            // Every rollout turns maintenance on, so the maintenance
            // invariant covers every change.
            environment_policy: "maintenance = \"always\"".into(),
            log_hooks: true,
            ..Options::default()
        });
        let mut journals: invariants::Journals = Vec::new();
        if let Some(db) = &cluster.db {
            journals.push(("db-1".into(), ENV.into(), db.state_dir.clone()));
        }
        for app in &cluster.apps {
            journals.push((app.name.clone(), ENV.into(), app.state_dir.clone()));
        }
        let mut environments = vec![ENV];
        let mut databases = vec![(ENV, DB)];
        let _production_agent = self.production.then(|| {
            let agent = cluster.start_extra_db_agent("db-1", PRODUCTION, PRODUCTION_DB, "");
            journals.push((
                "db-1".into(),
                PRODUCTION.into(),
                cluster.path().join(format!("{PRODUCTION}-db-1-state")),
            ));
            environments.push(PRODUCTION);
            databases.push((PRODUCTION, PRODUCTION_DB));
            agent
        });
        let cli = Cli::new(&cluster);
        let stop = AtomicBool::new(false);
        let deadline = Instant::now() + self.duration;
        let ops =
            ops::Ops::new(cli.clone(), self.seed ^ 0x006f_7073, cluster.path().join("ops"), &environments);
        let (ops_log, fault_log) = std::thread::scope(|s| {
            let ops = s.spawn(|| ops.run(&stop, deadline));
            let faults = faults::run(&mut cluster, &self.faults, self.seed, self.fault_pause, deadline);
            stop.store(true, Ordering::Relaxed);
            (ops.join().expect("the operations loop panicked"), faults)
        });
        let operations_ended = started.elapsed();
        settle(&cli);
        let evidence = invariants::Evidence::gather(&cluster, &cli, &journals, &databases, &ops_log);
        let mut violations: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
        violations.insert("every command ran at most once", invariants::at_most_once(&evidence));
        violations.insert("no two environments' commands crossed", invariants::environments_apart(&evidence));
        let (unended, holding) = invariants::terminal_or_holding(&evidence);
        violations.insert("every rollout terminal or holding with a reason", unended);
        violations.insert("event sequences without gaps", invariants::event_sequences(&evidence));
        violations
            .insert("the audit log has every operation", invariants::audit_complete(&evidence, &ops_log));
        violations
            .insert("one change per environment at a time", invariants::one_change_at_a_time(&evidence));
        violations.insert(
            "maintenance on while the database is changed",
            invariants::maintenance_covers_changes(&evidence, "db-1"),
        );
        let commands = evidence.commands.len();
        let rollouts = evidence.rollouts.len();
        Report {
            seed: self.seed,
            operations_ended,
            elapsed: started.elapsed(),
            ops: ops_log,
            faults: fault_log,
            holding,
            violations,
            rollouts,
            commands,
        }
    }
}

/// Waits (up to 3 minutes) until no rollout is pending or running without
/// an error saying why it holds.
fn settle(cli: &Cli) {
    let quiet = || {
        let out = cli.run(&["rollout", "list", "--output", "json"], Duration::from_secs(60));
        (out.status.code() == Some(0)
            && Cli::json(&out).iter().all(|r| {
                !matches!(r["state"].as_str(), Some("pending" | "running"))
                    || !r["error"].as_str().unwrap_or("").is_empty()
            }))
        .then_some(())
    };
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(180) {
        if quiet().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    // Not quiet: the terminal check reports the rollouts that still run.
}

/// What a soak did and found.
pub struct Report {
    pub seed: u64,
    pub operations_ended: Duration,
    pub elapsed: Duration,
    pub ops: ops::OpsLog,
    pub faults: faults::FaultLog,
    /// Rollouts that hold, with their reason (not violations).
    pub holding: Vec<String>,
    /// Violations by invariant (every invariant listed, most with none).
    pub violations: BTreeMap<&'static str, Vec<String>>,
    /// Rollout records checked.
    pub rollouts: usize,
    /// Journaled commands checked.
    pub commands: usize,
}

impl Report {
    pub fn violation_count(&self) -> usize {
        self.violations.values().map(Vec::len).sum()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "nemesis soak, seed {}: operations for {:.0?}, {:.0?} in all",
            self.seed, self.operations_ended, self.elapsed
        )?;
        let section = |f: &mut fmt::Formatter<'_>, title: &str, map: &BTreeMap<String, u64>| -> fmt::Result {
            writeln!(f, "{title}:")?;
            if map.is_empty() {
                writeln!(f, "  (none)")?;
            }
            map.iter().try_for_each(|(k, v)| writeln!(f, "  {v:>5}  {k}"))
        };
        section(f, "runs by kind", &self.ops.runs)?;
        section(f, "outcomes", &self.ops.outcomes)?;
        let faults: BTreeMap<String, u64> =
            self.faults.injected.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect();
        section(f, "faults injected by kind", &faults)?;
        if !self.faults.skipped.is_empty() {
            section(f, "faults skipped", &self.faults.skipped)?;
        }
        section(f, "refusals by reason (correct behaviour)", &self.ops.refusals)?;
        for sample in &self.ops.refusal_samples {
            writeln!(f, "  e.g. {sample}")?;
        }
        if !self.ops.both_accepted.is_empty() {
            writeln!(f, "conflicting starts both accepted: {:?}", self.ops.both_accepted)?;
        }
        writeln!(f, "checked {} rollout records, {} journaled commands", self.rollouts, self.commands)?;
        writeln!(f, "holding with a reason: {}", self.holding.len())?;
        for h in &self.holding {
            writeln!(f, "  {h}")?;
        }
        writeln!(f, "invariants:")?;
        for (invariant, violations) in &self.violations {
            writeln!(f, "  {:>4} violations  {invariant}", violations.len())?;
            for v in violations {
                writeln!(f, "        VIOLATION (seed {}): {v}", self.seed)?;
            }
        }
        writeln!(f, "violations: {} (seed {})", self.violation_count(), self.seed)
    }
}
