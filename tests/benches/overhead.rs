//! runway's own overhead in the maintenance window: the time app hosts
//! spend in maintenance minus the time of the steps' own work.
//!
//! One local installation (real etcd, PostgreSQL, two coordinators, a DB
//! agent, two app agents with sample apps, mTLS) runs a rollout per round,
//! each adding one migration. From the rollout's saved events it takes the
//! window (maintenance on started → maintenance off done, as the leader
//! saw it) and each command's own work time as its agent measured it
//! (hooks, dump and test restore, migrations, restarts with their health
//! probes); steps on several hosts at once count their longest command,
//! restarts (one host after another) their sum. What is left is runway's:
//! printed per round with where it goes, then the median (goal ≤ 1 s).
//!
//! `cargo build --release --workspace --bins && cargo bench -p runway-tests --bench overhead -- --rounds 5`

use runway_tests::cluster::{Cluster, Options};
use runway_tests::fixtures::{SHOP, rollout_start_args, write_migrations};
use runway_tests::watch::json_lines;
use serde_json::Value;

const WINDOW_STEPS: [&str; 5] = ["maintenance_on", "backup", "migrate", "restart", "maintenance_off"];

/// Where one rollout's window went, in milliseconds.
#[derive(Debug, Default)]
struct Window {
    window: i64,
    work: i64,
    /// Per step: (name, wall, work).
    steps: Vec<(String, i64, i64)>,
    /// From one step's end to the next one's start.
    between: i64,
    /// Events saved (one fenced etcd write each) inside the window.
    events: usize,
    /// Of the restarts' work: waiting for the health URL after the hook.
    health_wait: i64,
}

fn at(events: &[Value], kind: &str, step: &str) -> i64 {
    events
        .iter()
        .find(|e| e["kind"] == kind && e["step"] == step)
        .and_then(|e| e["unix_ms"].as_i64())
        .unwrap_or_else(|| panic!("no {kind} {step} event"))
}

fn window(events: &[Value]) -> Window {
    let start = at(events, "step_started", "maintenance_on");
    let end = at(events, "step_succeeded", "maintenance_off");
    let mut w = Window { window: end - start, ..Window::default() };
    let mut previous_end = None;
    for step in WINDOW_STEPS {
        let (started, ended) = (at(events, "step_started", step), at(events, "step_succeeded", step));
        let results: Vec<&Value> =
            events.iter().filter(|e| e["kind"] == "command_succeeded" && e["step"] == step).collect();
        let works = results.iter().map(|e| e["work_ms"].as_i64().unwrap_or(0));
        let work = if step == "restart" { works.sum() } else { works.max().unwrap_or(0) };
        if step == "restart" {
            w.health_wait = results.iter().map(|e| e["detail"]["health_ms"].as_i64().unwrap_or(0)).sum();
        }
        w.steps.push((step.to_owned(), ended - started, work));
        w.work += work;
        if let Some(previous) = previous_end {
            w.between += started - previous;
        }
        previous_end = Some(ended);
    }
    w.events =
        events.iter().filter(|e| e["unix_ms"].as_i64().is_some_and(|t| (start..=end).contains(&t))).count();
    w
}

fn median(values: &mut [i64]) -> i64 {
    values.sort_unstable();
    values[values.len() / 2]
}

fn main() {
    let mut rounds = 5usize;
    let mut args = runway_tests::bench::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--rounds" => {
                rounds = args.next().and_then(|v| v.parse().ok()).filter(|n| *n > 0).expect("--rounds N")
            }
            _ => {
                eprintln!(
                    "usage: cargo bench -p runway-tests --bench overhead -- [--rounds N]   (default 5)"
                );
                std::process::exit(2);
            }
        }
    }
    let cluster = Cluster::start(Options::default());
    let mut history: Vec<(String, String)> =
        SHOP.iter().map(|(n, s)| (n.to_string(), s.to_string())).collect();
    let mut overheads = Vec::new();
    for round in 0..=rounds {
        if round > 0 {
            history.push((
                format!("20250101{round:06}_round"),
                format!("CREATE TABLE \"Round{round}\" (\"id\" SERIAL PRIMARY KEY, \"note\" TEXT);\n"),
            ));
        }
        let refs: Vec<(&str, &str)> = history.iter().map(|(n, s)| (n.as_str(), s.as_str())).collect();
        let migrations = cluster.path().join(format!("round-{round}"));
        write_migrations(&migrations, &refs);
        let out = cluster.runway(&rollout_start_args(&migrations, &format!("v{}", round + 2)));
        assert!(out.status.success(), "round {round}: {}", String::from_utf8_lossy(&out.stderr));
        // Round 0 applies the whole history and warms everything up: not counted.
        if round == 0 {
            continue;
        }
        let w = window(&json_lines(&out.stdout));
        let overhead = w.window - w.work;
        overheads.push(overhead);
        let steps: Vec<String> =
            w.steps.iter().map(|(name, wall, work)| format!("{name} {work}+{}", wall - work)).collect();
        println!(
            "round {round}: window {} ms = work {} ms + runway {overhead} ms \
             [step work+dispatch/results: {}; between steps {} ms; {} events saved; restart health waits {} ms]",
            w.window,
            w.work,
            steps.join(", "),
            w.between,
            w.events,
            w.health_wait
        );
    }
    let median = median(&mut overheads);
    println!(
        "\nrunway's overhead in the maintenance window, median of {rounds}: {median} ms (goal ≤ 1000 ms: {})",
        if median <= 1000 { "met" } else { "MISSED" }
    );
}
