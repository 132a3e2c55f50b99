//! What mTLS costs a rollout: two identical local installations (real
//! etcd, PostgreSQL, two coordinators, a DB agent, two app agents with
//! sample apps), one with mTLS on every hop (etcd included), one in
//! insecure mode, run the same rollouts in alternation (each round adds one
//! migration, as a release would). Prints each mode's median wall time of
//! `runway rollout start --watch` and their ratio.
//!
//! `cargo build --release --workspace --bins && cargo bench -p runway-tests --bench tls -- --rounds 10`

use std::time::Instant;

use runway_tests::cluster::{Cluster, Options};
use runway_tests::fixtures::{SHOP, rollout_start_args, write_migrations};

fn main() {
    let mut rounds = 10usize;
    let mut args = runway_tests::bench::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--rounds" => {
                rounds = args.next().and_then(|v| v.parse().ok()).filter(|n| *n > 0).expect("--rounds N")
            }
            _ => {
                eprintln!(
                    "usage: cargo bench -p runway-tests --bench tls -- [--rounds N]   (N ≥ 1, default 10)"
                );
                std::process::exit(2);
            }
        }
    }
    let clusters = [
        ("mtls", Cluster::start(Options::default())),
        ("insecure", Cluster::start(Options { tls: false, ..Options::default() })),
    ];
    let mut times: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    let mut history: Vec<(String, String)> =
        SHOP.iter().map(|(n, s)| (n.to_string(), s.to_string())).collect();
    for round in 0..=rounds {
        if round > 0 {
            history.push((
                format!("20250101{round:06}_round"),
                format!("CREATE TABLE \"Round{round}\" (\"id\" SERIAL PRIMARY KEY, \"note\" TEXT);\n"),
            ));
        }
        let refs: Vec<(&str, &str)> = history.iter().map(|(n, s)| (n.as_str(), s.as_str())).collect();
        // Alternate which mode goes first, so neither always runs on a warmer machine.
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for i in order {
            let (mode, cluster) = &clusters[i];
            let migrations = cluster.path().join(format!("round-{round}"));
            write_migrations(&migrations, &refs);
            let started = Instant::now();
            let out = cluster.runway(&rollout_start_args(&migrations, &format!("v{}", round + 2)));
            let took = started.elapsed().as_secs_f64() * 1000.0;
            assert!(out.status.success(), "{mode} round {round}: {}", String::from_utf8_lossy(&out.stderr));
            // Round 0 applies the whole history and warms both up: not counted.
            if round > 0 {
                times[i].push(took);
                eprintln!("round {round:>2} {mode:>8}: {took:>7.0} ms");
            }
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (tls, plain) = (median(&mut times[0]), median(&mut times[1]));
    println!("rollout wall time over {rounds} rounds (median): mtls {tls:.0} ms, insecure {plain:.0} ms");
    println!("ratio mtls / insecure: {:.3}", tls / plain);
}
