//! What mTLS costs a rollout: two identical local installations (real
//! etcd, PostgreSQL, two coordinators, a DB agent, two app agents with
//! sample apps), one with mTLS on every hop (etcd included), one in
//! insecure mode, run the same rollouts in alternation (each round adds one
//! migration, as a release would). Prints each mode's median wall time of
//! `runway rollout start --watch` and their ratio.
//!
//! `cargo build --release --workspace --bins && cargo bench -p runway-tests --bench tls -- --rounds 10`

use runway_tests::bench::{rounds_arg, side_by_side};
use runway_tests::cluster::{Cluster, Options};

fn main() {
    let rounds = rounds_arg(10, "cargo bench -p runway-tests --bench tls --");
    let mtls = Cluster::start(Options::default());
    let insecure = Cluster::start(Options { tls: false, ..Options::default() });
    let [tls, plain] = side_by_side([("mtls", &mtls, &[]), ("insecure", &insecure, &[])], rounds);
    println!("rollout wall time over {rounds} rounds (median): mtls {tls:.0} ms, insecure {plain:.0} ms");
    println!("ratio mtls / insecure: {:.3}", tls / plain);
}
