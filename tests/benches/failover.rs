//! Failover time: leader SIGKILL → the new leader's next command starting
//! on an agent. Runs rollouts on a local cluster (real etcd, PostgreSQL,
//! coordinators and agents) with the coordinators' default lease TTL and
//! kills the leader at every step, just before it dispatches (a failpoint
//! stalls it there), then reads from the agents' journals when the step's
//! command started under the new leader.
//!
//! `cargo build --release --workspace --bins && cargo bench -p runway-tests --bench failover -- --kills 12`
//! (the bench starts the binaries next to it: `target/release`)

use std::time::Duration;

use runway_tests::cluster::{Cluster, Options};
use runway_tests::fixtures::{SHOP, write_migrations};
use runway_tests::process::now_ms;
use runway_tests::watch::Watch;

/// The coordinator's default lease TTL (see `coordinator/src/config.rs`).
const DEFAULT_TTL_SECS: u64 = 5;

fn main() {
    let mut kills = 12usize;
    let mut args = runway_tests::bench::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--kills" => kills = args.next().and_then(|v| v.parse().ok()).expect("--kills N"),
            _ => {
                eprintln!(
                    "usage: cargo bench -p runway-tests --bench failover -- [--kills N]   (N ≥ 1, default 12)"
                );
                std::process::exit(2);
            }
        }
    }
    let mut cluster = Cluster::start(Options {
        lease_ttl_secs: DEFAULT_TTL_SECS,
        coordinator_env: vec![("RUNWAY_FAILPOINT_PAUSE_BEFORE_DISPATCH_MS".into(), "3000".into())],
        ..Options::default()
    });
    let migrations = cluster.path().join("migrations");
    write_migrations(&migrations, SHOP);

    let mut samples: Vec<u64> = Vec::new();
    let mut round = 0;
    while samples.len() < kills {
        round += 1;
        let mut watch = Watch::start(
            &cluster,
            &["rollout", "start", "--env", "staging", "--migrations", migrations.to_str().unwrap()]
                .into_iter()
                .chain(["--watch", "--output", "json", "--leader-timeout", "60"])
                .collect::<Vec<_>>(),
        );
        let mut killed: Vec<(String, i64)> = Vec::new();
        while let Some(event) = watch.next(Duration::from_secs(120)) {
            if event["kind"] == "step_started" && samples.len() + killed.len() < kills {
                let at = now_ms();
                cluster.kill_and_restart_leader();
                killed.push((event["step"].as_str().unwrap_or_default().to_owned(), at));
            }
            if event["terminal"] == true {
                break;
            }
        }
        let (status, _, stderr) = watch.finish(Duration::from_secs(30));
        assert!(status.success(), "rollout {round} failed: {stderr}");
        let journals = cluster.journals();
        for (step, at) in killed {
            let started = journals
                .iter()
                .filter(|(_, e)| e["command_id"].as_str().is_some_and(|id| id.contains(&format!("/{step}/"))))
                .filter_map(|(_, e)| e["started_unix_ms"].as_i64())
                .filter(|t| *t >= at)
                .min()
                .unwrap_or_else(|| panic!("no {step} command started after the kill"));
            let ms = (started - at) as u64;
            eprintln!("round {round}: {step:<16} failover {ms} ms");
            samples.push(ms);
        }
    }
    samples.sort_unstable();
    let median = if samples.len() % 2 == 1 {
        samples[samples.len() / 2]
    } else {
        (samples[samples.len() / 2 - 1] + samples[samples.len() / 2]) / 2
    };
    println!(
        "failover over {} kills (lease TTL {DEFAULT_TTL_SECS} s): min {} ms, median {median} ms, max {} ms; \
         target median ≤ {} ms → {}",
        samples.len(),
        samples[0],
        samples[samples.len() - 1],
        DEFAULT_TTL_SECS * 1000 + 1000,
        if median <= DEFAULT_TTL_SECS * 1000 + 1000 { "met" } else { "MISSED" }
    );
}
