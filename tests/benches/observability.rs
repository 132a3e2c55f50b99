//! What watching a rollout costs it: two identical local installations
//! like the quick start's (real etcd, PostgreSQL, two coordinators, a DB
//! agent, two app agents with sample apps, mTLS), one with the
//! coordinators and the DB agent serving Prometheus `/metrics` (scraped
//! every second, as a busy Prometheus would) and every process sending
//! trace spans over
//! OTLP/gRPC to a real receiver, with the CLI sending its span too; the
//! other with both off. They run the same rollouts in alternation. Prints
//! each one's median wall time of `runway rollout start --watch`, their
//! ratio, and how many spans the receiver got.
//!
//! `cargo build --release --workspace --bins && cargo bench -p runway-tests --bench observability -- --rounds 10`

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use runway_tests::bench::{rounds_arg, side_by_side};
use runway_tests::cluster::{Cluster, Options, http_get};
use runway_tests::otlp::OtlpReceiver;

fn main() {
    let rounds = rounds_arg(10, "cargo bench -p runway-tests --bench observability --");
    let receiver = OtlpReceiver::start();
    let otlp = vec![("OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(), receiver.endpoint.clone())];
    let on = Cluster::start(Options {
        metrics: true,
        coordinator_env: otlp.clone(),
        agent_env: otlp,
        ..Options::default()
    });
    let off = Cluster::start(Options::default());

    let stop = Arc::new(AtomicBool::new(false));
    let scrape = scraper(&on, Arc::clone(&stop));
    let cli = ["--otlp-endpoint", receiver.endpoint.as_str()];
    let [watched, plain] = side_by_side([("metrics+traces", &on, &cli), ("off", &off, &[])], rounds);
    stop.store(true, Ordering::Relaxed);
    let scrapes = scrape.join().expect("scraper");
    println!(
        "rollout wall time over {rounds} rounds (median): metrics+traces {watched:.0} ms, off {plain:.0} ms"
    );
    println!("ratio metrics+traces / off: {:.3}", watched / plain);
    println!("spans received: {}, /metrics scrapes: {scrapes}", receiver.spans().len());
}

/// Scrapes every `/metrics` endpoint of `cluster` once a second until
/// `stop`; returns how many scrapes answered.
fn scraper(cluster: &Cluster, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<usize> {
    let mut targets: Vec<(String, u16)> = Vec::new();
    for c in &cluster.coordinators {
        targets.extend(c.metrics.map(|port| (c.host.ip.clone(), port)));
    }
    if let Some(db) = &cluster.db {
        targets.extend(db.metrics.map(|port| (db.host.ip.clone(), port)));
    }
    std::thread::spawn(move || {
        let mut answered = 0;
        while !stop.load(Ordering::Relaxed) {
            for (ip, port) in &targets {
                answered +=
                    usize::from(http_get(ip, *port, "/metrics").is_some_and(|(status, _)| status == 200));
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        answered
    })
}
